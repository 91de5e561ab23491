//! Journeys older than the memory window (`keep_in_memory`) settle: they leave memory and the
//! state file's facts, what they counted folds into the baseline, and the pages and the JSON API
//! read them back as stored documents. So a `serve` with a two-day window answers what one with
//! the whole history in memory answers, and so does it after a restart.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deploy_journey::http::JourneyJson;
use deploy_journey::sim::Sim;
use deploy_journey::sim::clock::{ClockMode, SimClock};
use deploy_journey::sim::engine::World;
use deploy_journey::sim::topology::Topology;
use deploy_journey::sim::workload::LanaWorkload;

use crate::journeys::example_config;
use crate::support::{START, client, init_crypto};

const DAYS: i64 = 12;
/// Half a day after the last commit: every build has finished, and nothing more happens while
/// the clock runs (pull requests are read once per GitHub poll, which takes a moving clock).
const NOW: i64 = START + DAYS * 86_400 + 12 * 3600;

/// Twelve simulated lana days, then quiet, served by the simulator at 60x.
async fn lana_sim() -> (Arc<Sim>, String, tokio::task::JoinHandle<()>) {
    let topo = Topology::builtin("lana").unwrap();
    let mut w = World::new(topo, START, 3);
    for (at, a) in LanaWorkload::new(3).generate(START, START + DAYS * 86_400) {
        w.schedule_action(at, a);
    }
    w.advance_to(NOW);
    let sim = Sim::new(w, SimClock::new(NOW, ClockMode::Running { speed: 60.0 }));
    let (listener, url) = deploy_journey::sim::server::bind(sim.clone(), "127.0.0.1:0").await.unwrap();
    let s = sim.clone();
    let task = tokio::spawn(async move {
        let _ = deploy_journey::sim::server::serve(s, listener).await;
    });
    (sim, url, task)
}

struct Serve {
    base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    app: tokio::task::JoinHandle<Result<(), deploy_journey::app::AppError>>,
}

impl Serve {
    /// `all_environments`: QA and production too; else staging is the last environment.
    async fn start(
        sim: &Arc<Sim>,
        url: &str,
        state: &std::path::Path,
        keep_in_memory_days: u64,
        all_environments: bool,
    ) -> Serve {
        let mut cfg = example_config("lana", url);
        cfg.poll_interval = Duration::from_secs(1);
        cfg.state_path = state.to_path_buf();
        cfg.retention = Duration::from_secs(30 * 86_400);
        cfg.keep_in_memory = Duration::from_secs(keep_in_memory_days * 86_400);
        // Staging as the last environment deploys several times a day, so journeys settle once
        // it runs what they carried. With QA and production, whose simulated gates open rarely,
        // most journeys are held instead (the store keeps what an environment lacks).
        if all_environments {
            // Journeys go on to production: those held are in flight, at QA's or production's
            // door, and count in the in-flight gauges too.
            cfg.journey_ends_at = None;
        } else {
            cfg.stages.retain(|s| !["qa", "production"].contains(&&*s.name));
            cfg.dora.environment = "staging".into();
        }
        let (addr, stop_tx, app) = crate::support::serve_on_sim(cfg, sim).await;
        let base = format!("http://{addr}");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = client().get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status().is_success());
            if ok {
                break;
            }
            assert!(Instant::now() < deadline, "serve never became ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Serve { base, stop: Some(stop_tx), app }
    }

    /// The journeys once every commit's pull request has been read (a few per cycle).
    async fn journeys_read(&self) -> BTreeMap<String, serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let js = self.journeys().await;
            if js.values().all(|j| j.get("origin").is_some()) {
                return js;
            }
            assert!(Instant::now() < deadline, "pull requests never all read");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.app.await.unwrap().unwrap();
    }

    async fn json(&self, path: &str) -> serde_json::Value {
        let r = client().get(format!("{}{path}", self.base)).send().await.unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().await.unwrap()
    }

    /// Every journey by sha, without what depends on this process' history rather than on the
    /// journey: ETAs (learnt from the runs in memory) and log excerpts (read a few per cycle).
    async fn journeys(&self) -> BTreeMap<String, serde_json::Value> {
        let v = self.json("/api/v1/journeys?limit=10000").await;
        let list: Vec<JourneyJson> = serde_json::from_value(v["journeys"].clone()).unwrap();
        list.into_iter().map(|j| (j.sha.clone(), comparable(j))).collect()
    }

    async fn deployments(&self) -> Vec<serde_json::Value> {
        self.deployments_of("staging").await
    }

    async fn deployments_of(&self, env: &str) -> Vec<serde_json::Value> {
        let v = self.json(&format!("/api/v1/deployments?environment={env}&limit=10000")).await;
        v["deployments"].as_array().unwrap().clone()
    }

    /// Every environment now, with the ages turned into the times they are counted from (the
    /// two processes answer at different moments).
    async fn environments(&self) -> Vec<serde_json::Value> {
        let v = self.json("/api/v1/environments").await;
        let now = v["now"].as_i64().unwrap();
        let mut envs = v["environments"].as_array().unwrap().clone();
        for e in &mut envs {
            let o = e.as_object_mut().unwrap();
            let age = o.remove("oldest_undeployed_age_seconds").unwrap();
            o.insert("oldest_undeployed_since".into(), age.as_i64().map(|a| now - a).into());
            o.remove("awaiting_approval_age_seconds");
        }
        envs
    }

    /// The gauges of now that do not age with the clock: commits behind, in flight, waiting.
    async fn gauges(&self) -> BTreeMap<String, f64> {
        let text = client().get(format!("{}/metrics", self.base)).send().await.unwrap().text().await.unwrap();
        let names = [
            "deploy_journey_commits_behind",
            "deploy_journey_stage_in_flight",
            "deploy_journey_commits_not_picked_up",
            "deploy_journey_environment_awaiting_approval",
            "deploy_journey_environment_running_commit_timestamp_seconds",
            "deploy_journey_last_deployment_timestamp_seconds",
        ];
        text.lines()
            .filter(|l| names.contains(&l.split([' ', '{']).next().unwrap_or("")))
            .filter_map(|l| l.rsplit_once(' ').map(|(k, v)| (k.to_string(), v.parse().unwrap())))
            .collect()
    }

    async fn status(&self) -> serde_json::Value {
        self.json("/api/v1/status").await
    }

    /// Journey counter and histogram samples (gauges describe "now"; source counters count
    /// this process' requests).
    async fn samples(&self) -> BTreeMap<String, f64> {
        let text = client().get(format!("{}/metrics", self.base)).send().await.unwrap().text().await.unwrap();
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.starts_with("deploy_journey_source_"))
            .filter(|l| {
                let name = l.split([' ', '{']).next().unwrap_or("");
                ["_total", "_bucket", "_sum", "_count"].iter().any(|s| name.ends_with(s))
            })
            .filter_map(|l| l.rsplit_once(' ').map(|(k, v)| (k.to_string(), v.parse().unwrap())))
            .collect()
    }
}

fn comparable(mut j: JourneyJson) -> serde_json::Value {
    j.eta = Default::default();
    for a in j.stages.iter_mut().flat_map(|s| s.attempts.iter_mut()) {
        a.log_excerpt = None;
    }
    serde_json::to_value(j).unwrap()
}

fn assert_same_deployments(want: &[serde_json::Value], got: &[serde_json::Value], when: &str) {
    let ids = |v: &[serde_json::Value]| v.iter().map(|d| d["build"]["id"].as_i64().unwrap()).collect::<Vec<_>>();
    assert_eq!(ids(want), ids(got), "{when}: staging's deployments");
    for (i, (w, g)) in want.iter().zip(got).enumerate() {
        assert!(w == g, "{when}: staging's deployment #{i} differs:\n want {w}\n  got {g}");
    }
    assert_eq!(want.len(), got.len(), "{when}: staging's deployments");
}

fn stats(state: &std::path::Path) -> deploy_journey::store::StoreStats {
    deploy_journey::store::Store::open(state).unwrap().stats().unwrap()
}

fn assert_same_samples(want: &BTreeMap<String, f64>, got: &BTreeMap<String, f64>, when: &str) {
    assert!(want.len() > 100, "{} samples", want.len());
    let moved: Vec<String> = want
        .iter()
        .filter(|(k, v)| got.get(*k).is_none_or(|g| (g - *v).abs() > 1e-6 * v.abs().max(1.0)))
        .map(|(k, v)| format!("{k}: {v} -> {:?}", got.get(k)))
        .collect();
    assert!(moved.is_empty(), "{when}: {} samples moved:\n{}", moved.len(), moved.join("\n"));
    assert_eq!(want.len(), got.len(), "{when}: same series");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settled_journeys_answer_as_they_did_in_memory_and_after_a_restart() {
    init_crypto();
    let (sim, url, sim_task) = lana_sim().await;
    let dir = tempfile::tempdir().unwrap();

    // The whole history in memory.
    let whole = Serve::start(&sim, &url, &dir.path().join("whole.db"), 30, false).await;
    let (want, want_deps, want_samples) =
        (whole.journeys_read().await, whole.deployments().await, whole.samples().await);
    whole.stop().await;
    let whole_stats = stats(&dir.path().join("whole.db"));
    assert_eq!(whole_stats.settled_journeys, 0);

    // Two days in memory (a one-day window is raised to the failure window plus a day).
    let state = dir.path().join("settled.db");
    let short = Serve::start(&sim, &url, &state, 1, false).await;
    short.journeys_read().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let settled = loop {
        // Settling waits for each journey's pull request, read a few per cycle, then settles
        // them at the next cycle.
        let s = stats(&state);
        if s.settled_journeys as usize > want.len() / 2 {
            break s;
        }
        assert!(Instant::now() < deadline, "nothing settled");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        settled.settled_journeys as usize > want.len() / 2 && settled.settled_deployments > 5,
        "{settled:?} of {} journeys",
        want.len()
    );
    assert!(settled.commits < whole_stats.commits && settled.builds < whole_stats.builds, "{settled:?}");
    println!(
        "{} journeys, {} settled ({} deployments); the state file keeps {} of {} commits and {} of {} builds",
        want.len(),
        settled.settled_journeys,
        settled.settled_deployments,
        settled.commits,
        whole_stats.commits,
        settled.builds,
        whole_stats.builds
    );

    let check = |got: BTreeMap<String, serde_json::Value>, when: &str| {
        assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "{when}: the same commits");
        for (sha, j) in &want {
            assert!(got[sha] == *j, "{when}: journey {sha} differs:\n want {j}\n  got {}", got[sha]);
        }
    };
    check(short.journeys().await, "settled");
    assert_same_deployments(&want_deps, &short.deployments().await, "settled");
    assert_same_samples(&want_samples, &short.samples().await, "settled");

    // One settled journey by a prefix, as JSON and as a page.
    let mut docs = deploy_journey::store::Store::open(&state).unwrap().settled_journeys_by_prefix("", 1).unwrap();
    let (sha, _, _) = docs.remove(0);
    let one: JourneyJson =
        serde_json::from_value(short.json(&format!("/api/v1/journeys/{}", &sha[..8])).await).unwrap();
    assert_eq!(comparable(one), want[&sha], "settled journey {sha} by prefix");
    let page = client().get(format!("{}/journeys/{sha}", short.base)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains(&sha[..7]), "the page of settled {sha} names it");
    short.stop().await;

    // A restart loads only what stayed in memory, and answers the same.
    let again = Serve::start(&sim, &url, &state, 1, false).await;
    check(again.journeys().await, "restarted");
    assert_same_deployments(&want_deps, &again.deployments().await, "restarted");
    assert_same_samples(&want_samples, &again.samples().await, "restarted");
    again.stop().await;
    sim_task.abort();
}

/// Compare two serves' answers until they agree (both follow the same simulator, and each
/// catches up with it at its own pace), then assert on the last answers.
async fn assert_agree(want: &Serve, got: &Serve, envs: &[&str], when: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (wj, gj) = (want.journeys().await, got.journeys().await);
        let (we, ge) = (want.environments().await, got.environments().await);
        let (wg, gg) = (want.gauges().await, got.gauges().await);
        let (ws, gs) = (want.samples().await, got.samples().await);
        let mut wd = vec![];
        let mut gd = vec![];
        for e in envs {
            wd.push(want.deployments_of(e).await);
            gd.push(got.deployments_of(e).await);
        }
        if (wj == gj && we == ge && wg == gg && ws == gs && wd == gd) || Instant::now() > deadline {
            assert_eq!(wj.keys().collect::<Vec<_>>(), gj.keys().collect::<Vec<_>>(), "{when}: the same commits");
            for (sha, j) in &wj {
                assert!(gj[sha] == *j, "{when}: journey {sha} differs:\n want {j}\n  got {}", gj[sha]);
            }
            assert_eq!(we, ge, "{when}: the environments now");
            assert!(wg.keys().any(|k| k.starts_with("deploy_journey_commits_behind")), "{when}: {wg:?}");
            let differ: Vec<String> = wg
                .keys()
                .chain(gg.keys())
                .filter(|k| wg.get(*k) != gg.get(*k))
                .map(|k| format!("{k}: {:?} -> {:?}", wg.get(k), gg.get(k)))
                .collect();
            assert!(differ.is_empty(), "{when}: the gauges of now differ:\n{}", differ.join("\n"));
            assert_same_samples(&ws, &gs, when);
            for ((w, g), e) in wd.iter().zip(&gd).zip(envs) {
                assert_same_deployments(w, g, &format!("{when}, {e}"));
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journeys_an_environment_lacks_are_held_in_the_store_and_counted_as_in_memory() {
    init_crypto();
    let (sim, url, sim_task) = lana_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let envs = ["staging", "qa", "production"];

    // Side by side on the same simulator: the whole history in memory, and two days.
    let whole = Serve::start(&sim, &url, &dir.path().join("whole.db"), 30, true).await;
    let state = dir.path().join("held.db");
    let short = Serve::start(&sim, &url, &state, 1, true).await;
    let all = whole.journeys_read().await;
    short.journeys_read().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = short.status().await;
        if s["journeys_held"].as_u64().unwrap() as usize > all.len() / 2 {
            println!("{} journeys: {s}", all.len());
            break;
        }
        assert!(Instant::now() < deadline, "nothing held: {s}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let behind = whole.environments().await;

    assert!(behind.iter().any(|e| e["behind"].as_u64().unwrap() as usize > all.len() / 2), "{behind:?}");
    assert_agree(&whole, &short, &envs, "held").await;
    // The landing page says that older commits in flight are held, and where to list them.
    let page = |s: &Serve| {
        let url = format!("{}/", s.base);
        async move { client().get(url).send().await.unwrap().text().await.unwrap() }
    };
    assert!(page(&short).await.contains("id=\"held\""), "the landing page names the held commits in flight");
    assert!(!page(&whole).await.contains("id=\"held\""));

    // A person deploys QA by hand: the build can change held journeys (QA is where they wait),
    // so they come back and are derived with it as in memory; then held or settled again.
    let deploys = whole.deployments_of("qa").await.len();
    sim.with_world(|w| {
        let at = w.now + 60;
        let by = "carol".to_string();
        let (pipeline, job) = ("galoy-qa".to_string(), "galoy-qa-lana-bank".to_string());
        w.schedule_action(at, deploy_journey::sim::engine::Action::Trigger { pipeline, job, by })
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    while whole.deployments_of("qa").await.len() == deploys {
        assert!(Instant::now() < deadline, "QA never deployed");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // It delivered commits older than the two days in memory: held ones.
    let qa = whole.deployments_of("qa").await;
    let delivered: Vec<&str> = qa[0]["commits"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    let now = short.status().await["now"].as_i64().unwrap();
    let old = delivered.iter().filter(|c| all[**c]["commit_time"].as_i64().unwrap() < now - 3 * 86_400).count();
    assert!(old > 0, "QA's deployment delivered {} commits, none held: {}", delivered.len(), qa[0]);
    assert_agree(&whole, &short, &envs, "after QA deployed").await;
    whole.stop().await;

    // A restart loads the held facts with the rest, holds them again, and answers the same.
    short.stop().await;
    let again = Serve::start(&sim, &url, &state, 1, true).await;
    let whole = Serve::start(&sim, &url, &dir.path().join("whole.db"), 30, true).await;
    assert_agree(&whole, &again, &envs, "restarted").await;
    whole.stop().await;
    again.stop().await;
    sim_task.abort();
}
