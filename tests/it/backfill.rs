//! `deploy-journey backfill` against 90 simulated days of lana, loaded into a real Prometheus
//! with `promtool tsdb create-blocks-from openmetrics`; then `serve` on the same state.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use deploy_journey::core::journey::derive;
use deploy_journey::sim::Sim;
use deploy_journey::sim::clock::{ClockMode, SimClock};
use deploy_journey::sim::engine::{Action, BuildOverride, World};
use deploy_journey::sim::model::BuildStatus as SimStatus;
use deploy_journey::sim::topology::Topology;
use deploy_journey::sim::workload::LanaWorkload;
use deploy_journey::store::Store;

use crate::support::{client, init_crypto};
use crate::support::{free_port, tool};

const DAY: i64 = 86_400;
const STEP: i64 = 3600;

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let _ = self.0.wait();
    }
}

/// examples/lana.yaml pointed at the simulator, with its state in `dir`.
fn write_config(dir: &Path, sim_url: &str, port: u16) -> PathBuf {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/lana.yaml")).unwrap();
    let text = text
        .replace("https://api.github.com", sim_url)
        .replace("https://ci.galoy.io", sim_url)
        .replace("/var/lib/deploy-journey/state.db", dir.join("state.db").to_str().unwrap())
        .replace("0.0.0.0:9853", &format!("127.0.0.1:{port}"))
        .replace("poll_interval: 30s", "poll_interval: 1s ");
    assert!(text.contains("poll_interval: 1s"), "examples/lana.yaml changed shape");
    let path = dir.join("config.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn binary(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_deploy-journey"));
    c.args(args)
        .env("GITHUB_TOKEN", "ghp_backfill_test")
        .env("CONCOURSE_PASSWORD", "viewer-password")
        .env("RUST_LOG", "warn");
    c
}

/// `name{labels}` → value of the samples at time `at` (or without a timestamp when `None`).
/// Label values here have no spaces; exemplars are cut off.
fn samples_at(text: &str, at: Option<i64>) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let parts: Vec<&str> = line.split(" # ").next().unwrap().split_whitespace().collect();
        let (key, value, ts) = match parts.as_slice() {
            [k, v] => (*k, *v, None),
            [k, v, ts] => (*k, *v, Some(ts.parse::<i64>().unwrap())),
            _ => panic!("unexpected sample line {line:?}"),
        };
        if ts == at {
            out.insert(normalize(key), value.parse::<f64>().unwrap());
        }
    }
    out
}

/// A series key with its labels sorted, so two label orders compare equal.
fn normalize(key: &str) -> String {
    let Some((name, rest)) = key.split_once('{') else { return key.to_string() };
    let mut labels: Vec<&str> = rest.trim_end_matches('}').split("\",").map(|l| l.trim_end_matches('"')).collect();
    labels.sort();
    format!("{name}{{{}}}", labels.join(","))
}

async fn prom_value(client: &reqwest::Client, prom: &str, query: &str, at: i64) -> Option<f64> {
    let r = client
        .get(format!("{prom}/api/v1/query"))
        .query(&[("query", query), ("time", &at.to_string())])
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .ok()?;
    let v: serde_json::Value = r.json().await.ok()?;
    assert_eq!(v["status"], "success", "{query} at {at}: {v}");
    let result = v["data"]["result"].as_array()?;
    if result.is_empty() {
        return None;
    }
    assert_eq!(result.len(), 1, "{query} at {at}: more than one series: {v}");
    result[0]["value"][1].as_str()?.parse().ok()
}

async fn wait_until<T, F, Fut>(what: &str, secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "gave up waiting for {what} after {secs} s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Backfill 90 simulated days ending now, load them into a real Prometheus, and read the
/// lead-time histogram back (at a past time and at the end) as the journey core derives it
/// from the stored facts; then `serve` on the same state shows the backfill's last values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_90_days_into_prometheus_then_serve_continues_without_double_counting() {
    let (prometheus, promtool) = (tool("prometheus"), tool("promtool"));
    init_crypto();
    let t_all = Instant::now();

    // 90 days of calibrated lana history generated at once, ending at wall-clock now; the
    // simulated clock then stands still so `serve` later sees the same world.
    let wall = deploy_journey::clock::unix_now();
    let start = wall - 90 * DAY;
    let seed = 11;
    let mut world = World::new(Topology::builtin("lana").unwrap(), start, seed);
    for (at, a) in LanaWorkload::new(seed).generate(start, wall + DAY) {
        world.schedule_action(at, a);
    }
    world.advance_to(wall);
    let sim = Sim::new(world, SimClock::new(wall, ClockMode::Stepped));
    let (listener, sim_url) = deploy_journey::sim::server::bind(sim.clone(), "127.0.0.1:0").await.unwrap();
    let s2 = sim.clone();
    let sim_task = tokio::spawn(async move {
        let _ = deploy_journey::sim::server::serve(s2, listener).await;
    });
    println!("simulator at {sim_url}: 90 days of lana history generated in {:.1} s", t_all.elapsed().as_secs_f64());

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), &sim_url, port);
    let om = dir.path().join("backfill.om");

    // The backfill, as a user runs it (its progress goes to stderr, plain since not a terminal).
    let t = Instant::now();
    let out = binary(&["backfill", "--config"])
        .arg(&config)
        .args(["--since", "90d", "--step", "1h", "--openmetrics"])
        .arg(&om)
        .output()
        .expect("run backfill");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "backfill failed: {stderr}");
    assert!(stderr.contains("reading commits from GitHub"), "no progress on stderr: {stderr}");
    println!("backfill took {:.1} s:\n{stderr}", t.elapsed().as_secs_f64());
    let text = std::fs::read_to_string(&om).unwrap();
    assert!(text.ends_with("# EOF\n"), "the OpenMetrics output must end with # EOF");
    let end: i64 = text.lines().rev().nth(1).unwrap().rsplit(' ').next().unwrap().parse().unwrap();
    assert!((wall..wall + 600).contains(&end), "the last sample ({end}) is the backfill's now (~{wall})");
    let since = end - 90 * DAY;

    let cfg = deploy_journey::config::load(&config, &|k: &str| match k {
        "GITHUB_TOKEN" => Some("x".into()),
        "CONCOURSE_PASSWORD" => Some("viewer-password".into()),
        _ => None,
    })
    .unwrap();
    // Every commit the simulator has on the branch since the cutoff was read, with no older one.
    let (sim_commits, sim_builds) = sim.with_world(|w| {
        let repo = w.tracked_repo();
        let shas = repo.branches.get(&w.topology.tracked_branch).cloned().unwrap_or_default();
        let commits = shas.iter().filter(|s| repo.commits[*s].committer_date >= since).count();
        let core = cfg.core();
        let builds = w
            .concourse
            .builds
            .iter()
            .filter(|b| b.start_time.is_some_and(|s| s >= since))
            .filter(|b| {
                let p = &w.concourse.pipelines[b.pipeline];
                core.stage_of_job(&p.name, &p.jobs[b.job].name).is_some()
            })
            .count();
        (commits, builds)
    });
    let store = Store::open(&dir.path().join("state.db")).unwrap();
    let facts = store.load().unwrap();
    drop(store);
    assert_eq!(facts.commits.len(), sim_commits, "commits since the cutoff");
    assert!(facts.commits.values().all(|c| c.committer_date >= since));
    assert!(facts.builds.values().all(|b| b.start.is_none_or(|s| s >= since)), "no build from before the cutoff");
    let started = facts.builds.values().filter(|b| b.start.is_some()).count();
    assert_eq!(started, sim_builds, "watched builds started since the cutoff");
    println!(
        "store: {} commits and {started} started builds: all the simulator has since the cutoff",
        facts.commits.len()
    );

    // What the journey core derives from the stored facts: lead times per change type, each
    // with the time of the deployment that ended it.
    let derived = derive(&facts, &cfg.core(), end);
    let leads: Vec<(String, i64, i64)> = derived
        .journeys
        .iter()
        .filter(|j| !j.vanished)
        .filter_map(|j| {
            let at = *j.deployed_at.get("staging")?;
            Some((j.classification.change_type.as_str().to_string(), at, at - j.commit_time))
        })
        .collect();
    assert!(leads.len() > 200, "a 90-day lana history deploys hundreds of commits: {}", leads.len());
    let expect = |ct: &str, at: i64, le: Option<i64>| {
        leads.iter().filter(|(c, t, lt)| c == ct && *t <= at && le.is_none_or(|le| *lt <= le)).count() as f64
    };

    // promtool turns the file into TSDB blocks; a real Prometheus serves them.
    let data = dir.path().join("data");
    let t = Instant::now();
    let p = Command::new(&promtool)
        .args(["tsdb", "create-blocks-from", "openmetrics", "--max-block-duration=720h"])
        .arg(&om)
        .arg(&data)
        .output()
        .expect("run promtool");
    assert!(
        p.status.success(),
        "promtool create-blocks-from openmetrics failed: {}{}",
        String::from_utf8_lossy(&p.stdout),
        String::from_utf8_lossy(&p.stderr)
    );
    println!("promtool made blocks from {:.1} MB in {:.1} s", text.len() as f64 / 1e6, t.elapsed().as_secs_f64());
    let prom_port = free_port();
    let prom = format!("http://127.0.0.1:{prom_port}");
    let prom_config = dir.path().join("prometheus.yml");
    std::fs::write(&prom_config, "global:\n  scrape_interval: 1m\nscrape_configs: []\n").unwrap();
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let child = Command::new(&prometheus)
        .arg(format!("--config.file={}", prom_config.display()))
        .arg(format!("--storage.tsdb.path={}", data.display()))
        .arg("--storage.tsdb.retention.time=10y")
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start prometheus");
    let prom_guard = KillOnDrop(child);
    let http = client();
    wait_until("Prometheus to be ready", 60, || {
        let (c, u) = (http.clone(), format!("{prom}/-/ready"));
        async move { c.get(u).send().await.ok().filter(|r| r.status().is_success()).map(|_| ()) }
    })
    .await;

    // The lead-time histogram at a past hour (a sample time) and at the end.
    let past = (end - 30 * DAY) / STEP * STEP;
    let mut checked = 0;
    for (at, when) in [(past, "30 days ago"), (end, "at the end")] {
        for ct in ["backend", "frontend", "mixed"] {
            let want_count = expect(ct, at, None);
            let want_hour = expect(ct, at, Some(7200));
            let sel = format!("environment=\"staging\",change_type=\"{ct}\"");
            let count = prom_value(&http, &prom, &format!("deploy_journey_lead_time_seconds_count{{{sel}}}"), at).await;
            let hour = prom_value(
                &http,
                &prom,
                &format!("deploy_journey_lead_time_seconds_bucket{{{sel},le=\"7200.0\"}}"),
                at,
            )
            .await;
            assert_eq!(count.unwrap_or(0.0), want_count, "{ct} lead-time count {when}");
            assert_eq!(hour.unwrap_or(0.0), want_hour, "{ct} lead times ≤ 2h {when}");
            checked += (want_count > 0.0) as usize;
            println!("  {when}: {ct}: {want_count} lead times, {want_hour} within 2h (Prometheus agrees)");
        }
    }
    assert!(checked >= 4, "the checks must cover non-empty histograms");
    // The median through histogram_quantile lies in the bucket that holds the core's median.
    let mut all: Vec<i64> = leads.iter().filter(|(_, t, _)| *t <= end).map(|(_, _, lt)| *lt).collect();
    all.sort();
    let median = all[all.len() / 2] as f64;
    let q = prom_value(
        &http,
        &prom,
        "histogram_quantile(0.5, sum by (le) (deploy_journey_lead_time_seconds_bucket{environment=\"staging\"}))",
        end,
    )
    .await
    .expect("histogram_quantile");
    let bounds = deploy_journey::sinks::metrics::LEAD_BUCKETS;
    let bucket = |v: f64| bounds.iter().position(|b| v <= *b).unwrap_or(bounds.len());
    assert_eq!(bucket(q), bucket(median), "median lead time: Prometheus {q} s vs the core's {median} s");
    println!("  median lead time: histogram_quantile {q:.0} s, the core's {median} s (same bucket)");
    drop(prom_guard);

    // `serve` on the same state: its journey counters and histograms equal the last samples.
    let last = samples_at(&text, Some(end));
    assert!(last.len() > 100, "{} series at the end", last.len());
    // The environment gauges are reconstructed too (and compared with the live ones below).
    for family in [
        "deploy_journey_commits_behind{",
        "deploy_journey_oldest_undeployed_commit_age_seconds{",
        "deploy_journey_environment_running_commit_timestamp_seconds{",
    ] {
        assert!(last.keys().any(|k| k.starts_with(family) && k.contains("environment=\"staging")), "no {family}");
    }
    let running = last
        .iter()
        .find(|(k, _)| {
            k.starts_with("deploy_journey_environment_running_commit_timestamp_seconds{") && k.contains("staging")
        })
        .map(|(_, v)| *v);
    assert!(
        running.is_some_and(|v| v > (end - 90 * 86_400) as f64),
        "staging runs a commit of the backfilled range: {running:?}"
    );
    let server = binary(&["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start serve");
    let _serve_guard = KillOnDrop(server);
    let exporter = format!("http://127.0.0.1:{port}");
    wait_until("serve to be ready", 60, || {
        let (c, u) = (http.clone(), format!("{exporter}/readyz"));
        async move { c.get(u).send().await.ok().filter(|r| r.status().is_success()).map(|_| ()) }
    })
    .await;
    // Two more poll cycles, so anything read twice would show.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let live_text = http.get(format!("{exporter}/metrics")).send().await.unwrap().text().await.unwrap();
    let live = samples_at(&live_text, None);
    let mut differ = vec![];
    let since_end = deploy_journey::clock::unix_now() - end;
    for (key, v) in &last {
        match live.get(key) {
            Some(l) if (l - v).abs() < 1e-6 * v.abs().max(1.0) => {}
            // An age has grown by the time passed since the backfill's last sample.
            Some(l)
                if key.starts_with("deploy_journey_oldest_undeployed_commit_age_seconds")
                    && *v > 0.0
                    && (0.0..=(since_end + 5) as f64).contains(&(l - v)) => {}
            other => differ.push(format!("{key}: backfill {v}, live {other:?}")),
        }
    }
    assert!(differ.is_empty(), "live values differ from the backfill's last values:\n{}", differ.join("\n"));
    let commits_total: f64 =
        last.iter().filter(|(k, _)| k.starts_with("deploy_journey_commits_total")).map(|(_, v)| v).sum();
    assert_eq!(commits_total as usize, sim_commits);
    println!(
        "serve on the same state: all {} backfilled series equal their live values ({} commits); whole test {:.1} s",
        last.len(),
        commits_total,
        t_all.elapsed().as_secs_f64()
    );
    sim_task.abort();
}

/// Bad arguments are refused with what is wrong, before anything is read.
#[test]
fn backfill_refuses_a_bad_target_label() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "http://127.0.0.1:9", free_port());
    let out = binary(&["backfill", "--config"])
        .arg(&config)
        .args(["--since", "1d", "--openmetrics"])
        .arg(dir.path().join("x.om"))
        .args(["--label", "le=x"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("target label \"le\"") && err.contains("already use"), "{err}");
    let out = binary(&["backfill", "--config"])
        .arg(&config)
        .args(["--since", "1d", "--openmetrics"])
        .arg(dir.path().join("x.om"))
        .args(["--label", "job"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("--label \"job\": expected NAME=VALUE"), "{err}");
}

// ------------------------------------------------------------------ complete history reads

fn next_build(sim: &crate::support::TestSim, pipeline: &str, job: &str, result: SimStatus) {
    let ov = BuildOverride { result: Some(result), ..Default::default() };
    sim.schedule_now(Action::Override { pipeline: pipeline.into(), job: job.into(), ov });
}

/// The next build of every job up to the staging deploy succeeds.
fn all_green(sim: &crate::support::TestSim) {
    for (p, j) in [
        ("lana-bank", "test-integration"),
        ("lana-bank", "test-bats"),
        ("lana-bank", "flake-check"),
        ("lana-bank", "build-rc"),
        ("lana-bank", "bump-image-in-chart-rc"),
        ("private-charts", "lana-bank-testflight"),
        ("private-charts", "bump-lana-bank-in-deployments"),
    ] {
        next_build(sim, p, j, SimStatus::Succeeded);
    }
}

/// Staging builds in the simulator: (id, rerun_of, status, end).
fn staging_builds(sim: &crate::support::TestSim) -> Vec<(i64, Option<i64>, SimStatus, Option<i64>)> {
    sim.sim.with_world(|w| {
        let (p, j) = w.job_index("galoy-staging", "galoy-staging-lana-bank").expect("staging job");
        let ids = w.concourse.pipelines[p].jobs[j].builds.clone();
        ids.iter().filter_map(|id| w.concourse.build(*id)).map(|b| (b.id, b.rerun_of, b.status, b.end_time)).collect()
    })
}

struct RerunStory {
    sim: crate::support::TestSim,
    /// The commit whose staging deploy failed, then was rerun green.
    sha: String,
    rerun_id: i64,
    rerun_end: i64,
    /// Successful staging deploys in the whole history, the rerun included.
    deployed: usize,
}

/// The CI: a commit's staging deploy fails at about START + 3.5 h; main is red for
/// hours (more than a page of team builds, nothing deployed); the failed deploy is rerun green;
/// main is fixed and deploys again 2 h later.
async fn rerun_story() -> RerunStory {
    let sim = crate::support::spawn_sim("lana", 31).await;
    sim.step(2 * 3600);
    // The commit goes all the way; its staging deploy fails.
    all_green(&sim);
    next_build(&sim, "galoy-staging", "galoy-staging-lana-bank", SimStatus::Failed);
    let sha = sim.commit(&["core/lib.rs"], "feat: fails on staging first");
    let before: Vec<i64> = staging_builds(&sim).iter().map(|b| b.0).collect();
    let mut waited = 0;
    let orig = loop {
        sim.step(300);
        waited += 300;
        assert!(waited < 6 * 3600, "the staging deploy never ran");
        let done = staging_builds(&sim).into_iter().find(|b| !before.contains(&b.0) && b.2.is_finished());
        if let Some(b) = done {
            break b;
        }
    };
    assert_eq!(orig.2, SimStatus::Failed);
    // Then main is red for hours: plenty of team builds, nothing reaches staging (one commit
    // per test run, so each forced failure meets its own build).
    let newer = |sim: &crate::support::TestSim| {
        sim.sim.with_world(|w| w.concourse.builds.iter().filter(|b| b.id > orig.0).count())
    };
    let mut k = 0;
    while newer(&sim) < 150 {
        next_build(&sim, "lana-bank", "test-integration", SimStatus::Failed);
        sim.commit(&["core/lib.rs"], &format!("wip: red main {k}"));
        sim.step(40 * 60);
        k += 1;
        assert!(k < 100, "no builds");
    }
    // The failed deploy is rerun, green.
    next_build(&sim, "galoy-staging", "galoy-staging-lana-bank", SimStatus::Succeeded);
    let name = sim.sim.with_world(|w| w.concourse.build(orig.0).unwrap().name.clone());
    sim.schedule_now(Action::Rerun {
        pipeline: "galoy-staging".into(),
        job: "galoy-staging-lana-bank".into(),
        build_name: Some(name),
        by: "alice".into(),
    });
    sim.step(40 * 60);
    let rerun = staging_builds(&sim).into_iter().find(|b| b.1 == Some(orig.0)).expect("the rerun");
    assert_eq!(rerun.2, SimStatus::Succeeded);
    let rerun_end = rerun.3.expect("rerun ended");
    // Later commits deploy normally: the next deployment is hours after the rerun.
    all_green(&sim);
    next_build(&sim, "galoy-staging", "galoy-staging-lana-bank", SimStatus::Succeeded);
    sim.commit(&["core/lib.rs"], "fix: main green again");
    sim.step(4 * 3600);
    let deployed = staging_builds(&sim).iter().filter(|b| b.2 == SimStatus::Succeeded).count();
    assert!(staging_builds(&sim).iter().any(|b| b.0 > rerun.0 && b.2 == SimStatus::Succeeded), "a later deploy");
    RerunStory { sim, sha, rerun_id: rerun.0, rerun_end, deployed }
}

/// The story: hours of CI history in which one commit's staging deploy failed and was
/// rerun green a few hours later (more than a page of team builds after the failure); the
/// exporter is then started for the first time. Walking back through the builds list never
/// shows that rerun, so the commit was credited to the next deployment and
/// `deployments_total` was one short. `serve`'s first read must see it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_first_started_on_a_long_history_counts_a_staging_deploy_rerun_green() {
    let RerunStory { sim, sha, rerun_id, rerun_end, deployed } = rerun_story().await;
    // The exporter, started now for the first time, on the simulator's clock.
    init_crypto();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = crate::journeys::example_config("lana", &sim.url);
    cfg.poll_interval = Duration::from_secs(1);
    cfg.state_path = dir.path().join("state.db");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let s = sim.sim.clone();
    let app = tokio::spawn(deploy_journey::app::serve_with_clock(
        cfg,
        "127.0.0.1:0".parse().unwrap(),
        std::sync::Arc::new(move || s.now()),
        async move {
            let _ = stop_rx.await;
        },
        Some(ready_tx),
    ));
    let addr = tokio::time::timeout(Duration::from_secs(30), ready_rx).await.expect("exporter listens").unwrap();
    let http = client();
    let base = format!("http://{addr}");
    let (h, u) = (http.clone(), format!("{base}/readyz"));
    wait_until("the first read", 60, || {
        let (h, u) = (h.clone(), u.clone());
        async move { h.get(u).send().await.ok().filter(|r| r.status().is_success()).map(|_| ()) }
    })
    .await;

    let j: serde_json::Value =
        http.get(format!("{base}/api/v1/journeys/{sha}")).send().await.unwrap().json().await.unwrap();
    assert_eq!(
        j["deployed_at"]["staging"], rerun_end,
        "deployed by the rerun (build {rerun_id}): {}",
        j["deployed_at"]
    );
    let metrics = http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    let total = samples_at(&metrics, None)
        .into_iter()
        .find(|(k, _)| k.starts_with("deploy_journey_deployments_total{") && k.contains("environment=\"staging"))
        .map(|(_, v)| v);
    assert_eq!(total, Some(deployed as f64), "every successful staging deploy, the rerun included");
    let _ = stop_tx.send(());
    let _ = app.await;
}

/// The same history through `backfill` (its first read walks back to the cutoff): the rerun is
/// read, the commit is deployed by it, and the last backfilled `deployments_total` sample counts
/// every successful staging deploy since the cutoff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_over_a_long_history_counts_a_staging_deploy_rerun_green() {
    let RerunStory { sim, sha, rerun_id, rerun_end, .. } = rerun_story().await;
    let since = crate::support::START;
    let now = sim.sim.now();
    let deployed = staging_builds(&sim)
        .iter()
        .filter(|b| b.2 == SimStatus::Succeeded)
        .filter(|b| {
            sim.sim.with_world(|w| w.concourse.build(b.0).and_then(|b| b.start_time)).is_some_and(|s| s >= since)
        })
        .count();
    init_crypto();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = crate::journeys::example_config("lana", &sim.url);
    cfg.state_path = dir.path().join("state.db");
    let mut opts = deploy_journey::backfill::Options::new(since, now);
    opts.step = 3600;
    let mut out = vec![];
    let report = deploy_journey::backfill::run(&cfg, &opts, &mut out, &deploy_journey::backfill::Progress::hidden())
        .await
        .expect("backfill");
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);

    let facts = Store::open(&cfg.state_path).unwrap().load().unwrap();
    assert!(facts.builds.contains_key(&rerun_id), "rerun {rerun_id} read");
    let derived = derive(&facts, &cfg.core(), now);
    let j = derived.journeys.iter().find(|j| j.sha == sha).expect("the journey");
    assert_eq!(j.deployed_at.get("staging"), Some(&rerun_end), "deployed by the rerun");

    let text = String::from_utf8(out).unwrap();
    let end: i64 = text.lines().rev().nth(1).unwrap().rsplit(' ').next().unwrap().parse().unwrap();
    let total = samples_at(&text, Some(end))
        .into_iter()
        .find(|(k, _)| k.starts_with("deploy_journey_deployments_total{") && k.contains("environment=\"staging"))
        .map(|(_, v)| v);
    assert_eq!(total, Some(deployed as f64), "every successful staging deploy since the cutoff, the rerun included");
}

// ------------------------------------------------------------------ the dashboards over a backfill

/// Every Prometheus query of a dashboard's panels, by panel title.
fn dashboard_queries(file: &str) -> BTreeMap<String, Vec<String>> {
    let path = format!("{}/dashboards/{file}", env!("CARGO_MANIFEST_DIR"));
    let d: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    fn walk(v: &serde_json::Value, out: &mut BTreeMap<String, Vec<String>>) {
        for p in v["panels"].as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or_default().to_string();
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(e) = t["expr"].as_str() {
                    out.entry(title.clone()).or_default().push(e.to_string());
                }
            }
            walk(p, out);
        }
    }
    walk(&d, &mut out);
    out
}

/// The result of an instant query as (labels without `__name__`, rendered `k=v,…`) → value.
async fn prom_vector(client: &reqwest::Client, prom: &str, query: &str, at: i64) -> BTreeMap<String, f64> {
    let r = client
        .get(format!("{prom}/api/v1/query"))
        .query(&[("query", query), ("time", &at.to_string())])
        .send()
        .await
        .expect("query Prometheus");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["status"], "success", "{query} at {at}: {v}");
    let mut out = BTreeMap::new();
    for s in v["data"]["result"].as_array().unwrap() {
        let labels = s["metric"].as_object().unwrap();
        let key = labels
            .iter()
            .filter(|(k, _)| *k != "__name__")
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap()))
            .collect::<Vec<_>>()
            .join(",");
        out.insert(key, s["value"][1].as_str().unwrap().parse::<f64>().unwrap());
    }
    out
}

/// Prometheus' `histogram_quantile` on classic buckets: linear within the bucket that holds the
/// rank, the lowest bucket starting at 0, the `+Inf` bucket answered with the highest bound.
fn bucket_quantile(q: f64, bounds: &[f64], values: &[f64]) -> f64 {
    let mut cum = vec![0.0; bounds.len() + 1];
    for v in values {
        cum[bounds.iter().position(|b| v <= b).unwrap_or(bounds.len())] += 1.0;
    }
    for k in 1..cum.len() {
        cum[k] += cum[k - 1];
    }
    let rank = q * cum[bounds.len()];
    let b = cum.iter().position(|c| *c >= rank).unwrap();
    if b == bounds.len() {
        return bounds[bounds.len() - 1];
    }
    let (lower, below) = if b == 0 { (0.0, 0.0) } else { (bounds[b - 1], cum[b - 1]) };
    lower + (bounds[b] - lower) * (rank - below) / (cum[b] - below)
}

/// Three simulated days backfilled at the default step, quietly, made into TSDB blocks by
/// promtool and served by a real Prometheus: the overview dashboard's queries (variables and
/// the time range substituted) answer what the journey core derives from the stored facts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboards_queries_over_a_backfill_answer_what_the_core_derives() {
    let (prometheus, promtool) = (tool("prometheus"), tool("promtool"));
    init_crypto();
    let days = 3;
    let wall = deploy_journey::clock::unix_now();
    let start = wall - days * DAY;
    let seed = 5;
    let mut world = World::new(Topology::builtin("lana").unwrap(), start - DAY, seed);
    for (at, a) in LanaWorkload::new(seed).generate(start - DAY, wall + DAY) {
        world.schedule_action(at, a);
    }
    world.advance_to(wall);
    let sim = Sim::new(world, SimClock::new(wall, ClockMode::Stepped));
    let (listener, sim_url) = deploy_journey::sim::server::bind(sim.clone(), "127.0.0.1:0").await.unwrap();
    let sim_task = tokio::spawn(async move {
        let _ = deploy_journey::sim::server::serve(sim, listener).await;
    });
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &sim_url, free_port());
    let om = dir.path().join("backfill.om");
    let out = binary(&["backfill", "--quiet", "--config"])
        .arg(&config)
        .args(["--since", &format!("{days}d"), "--openmetrics"])
        .arg(&om)
        .output()
        .expect("run backfill");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "backfill failed: {stderr}");
    // --quiet: the summary, no progress.
    assert!(stderr.contains("backfilled "), "{stderr}");
    assert!(!stderr.contains("reading commits from GitHub"), "progress despite --quiet: {stderr}");
    let text = std::fs::read_to_string(&om).unwrap();
    let end: i64 = text.lines().rev().nth(1).unwrap().rsplit(' ').next().unwrap().parse().unwrap();
    let range = days * DAY;

    // What the core derives from the stored facts, as the observations the exporter counts.
    let cfg = deploy_journey::config::load(&config, &|k: &str| match k {
        "GITHUB_TOKEN" => Some("x".into()),
        "CONCOURSE_PASSWORD" => Some("viewer-password".into()),
        _ => None,
    })
    .unwrap();
    let core = cfg.core();
    let facts = Store::open(&dir.path().join("state.db")).unwrap().load().unwrap();
    let derived = derive(&facts, &core, end);
    let sb = deploy_journey::core::journey::stage_builds(&facts, &core, &derived);
    let events = deploy_journey::sinks::metrics::events(derived.journeys.iter().map(|j| &**j), &sb, &derived, &core);
    use deploy_journey::sinks::metrics::Metric;
    let label = |e: &deploy_journey::sinks::metrics::Event, k: &str| {
        e.labels.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_default()
    };
    // (metric, label to group by) → label value → observations in (from, to].
    let count_by = |m: Metric, by: &str, from: i64, to: i64| {
        let mut out: BTreeMap<String, f64> = BTreeMap::new();
        for e in events.iter().filter(|e| e.metric == m && e.at > from && e.at <= to) {
            *out.entry(format!("{by}={}", label(e, by))).or_default() += 1.0;
        }
        out
    };
    let deployed = count_by(Metric::Deployments, "environment", end - range, end);
    assert!(deployed.get("environment=staging").is_some_and(|n| *n >= 3.0), "few deployments: {deployed:?}");

    // promtool, then Prometheus on the blocks.
    let data = dir.path().join("data");
    let p = Command::new(&promtool)
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&om)
        .arg(&data)
        .output()
        .expect("run promtool");
    assert!(
        p.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&p.stdout),
        String::from_utf8_lossy(&p.stderr)
    );
    let prom_port = free_port();
    let prom = format!("http://127.0.0.1:{prom_port}");
    let prom_config = dir.path().join("prometheus.yml");
    std::fs::write(&prom_config, "global:\n  scrape_interval: 1m\nscrape_configs: []\n").unwrap();
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let child = Command::new(&prometheus)
        .arg(format!("--config.file={}", prom_config.display()))
        .arg(format!("--storage.tsdb.path={}", data.display()))
        .arg("--storage.tsdb.retention.time=10y")
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start prometheus");
    let _prom_guard = KillOnDrop(child);
    let http = client();
    wait_until("Prometheus to be ready", 60, || {
        let (c, u) = (http.clone(), format!("{prom}/-/ready"));
        async move { c.get(u).send().await.ok().filter(|r| r.status().is_success()).map(|_| ()) }
    })
    .await;

    // The dashboard's time range is the backfilled range, ending at its last sample.
    let panels = dashboard_queries("deploy-journey-overview.json");
    let expr = |title: &str, i: usize| {
        panels
            .get(title)
            .and_then(|e| e.get(i))
            .unwrap_or_else(|| panic!("no query {i} in panel {title:?}"))
            .replace("$environment", "staging")
            .replace("$stage", ".*")
            .replace("$__range", &format!("{range}s"))
            .replace("$__rate_interval", &format!("{range}s"))
    };

    // Pie charts and bar gauges over the time range: exactly the core's counts (each series
    // starts at 0 before its first observation and ends at the range's end, so `increase`
    // has nothing to extrapolate).
    for (title, metric, by) in [
        ("Outcomes (time range)", Metric::CommitOutcomes, "outcome"),
        ("Commits by change type (time range)", Metric::Commits, "change_type"),
        ("Attribution method (time range)", Metric::Attributions, "method"),
    ] {
        let q = expr(title, 0);
        let got = prom_vector(&http, &prom, &q, end).await;
        let want = count_by(metric, by, end - range, end);
        assert!(!want.is_empty(), "{title}: the core counts nothing");
        let got_nonzero: BTreeMap<String, f64> = got.into_iter().filter(|(_, v)| *v != 0.0).collect();
        assert_eq!(got_nonzero, want, "{title}: {q}");
        println!("{title}: {want:?} (Prometheus agrees)");
    }

    // Deployments in the last 24 h: `increase` over a day estimates the edge of the window from
    // the 5-minute samples, so it is within one deployment of the core's count.
    let q = expr("Deployments to $environment (last 24 h)", 0);
    for at in [end, end - DAY / 2, end - DAY - 7 * 3600] {
        let got = prom_vector(&http, &prom, &q, at).await.into_values().next();
        let want = count_by(Metric::Deployments, "environment", at - DAY, at).get("environment=staging").copied();
        let (got, want) = (got.expect("deployments in a day"), want.unwrap_or(0.0));
        assert!((got - want).abs() <= 1.0 + 0.02 * want, "{q} at {at}: Prometheus {got}, the core {want}");
        println!("deployments to staging in the 24 h before {at}: Prometheus {got:.2}, the core {want}");
    }

    // Lead time p90 over the range: Prometheus' bucket interpolation of the core's lead times.
    let q = expr("Lead time to $environment (p50, p90 over the last day)", 2);
    let got = prom_vector(&http, &prom, &q, end).await.into_values().next().expect("a lead-time p90");
    let leads: Vec<f64> = events
        .iter()
        .filter(|e| e.metric == Metric::LeadTime && e.at > end - range && label(e, "environment") == "staging")
        .map(|e| e.value.unwrap())
        .collect();
    let want = bucket_quantile(0.9, &deploy_journey::sinks::metrics::LEAD_BUCKETS, &leads);
    assert!((got - want).abs() <= 1e-6 * want.max(1.0), "{q}: Prometheus {got}, the core's lead times {want}");
    println!("lead time p90 over {} lead times: {got:.0} s (Prometheus and the core)", leads.len());

    // Failures per hour: a one-hour window always holds enough samples to answer (a series
    // sampled hourly would leave this panel empty), and the answer is the core's count.
    let q = expr("Failed builds per stage (per hour)", 0);
    let first_failure = events.iter().filter(|e| e.metric == Metric::StageFailures).map(|e| e.at).min();
    let first_failure = first_failure.expect("three lana days have failed builds");
    let (mut answered, mut possible) = (0, 0);
    for k in 1..(range / 3600) {
        let at = end - k * 3600 - 17 * 60;
        let got = prom_vector(&http, &prom, &q, at).await;
        let want: f64 = count_by(Metric::StageFailures, "stage", at - 3600, at).values().sum();
        if at - 3600 > first_failure {
            possible += 1;
            assert!(!got.is_empty(), "{q} at {at}: no answer an hour after failures were counted");
            answered += 1;
        }
        let got: f64 = got.values().sum();
        assert!((got - want).abs() <= 1.0 + 0.2 * want, "{q} at {at}: Prometheus {got}, the core {want}");
    }
    // The simulated days end at the wall clock, so when the first failure falls depends on
    // when the test runs: every hour after it is checked, and there is at least one.
    assert!(answered == possible && answered >= 1, "only {answered} of {possible} hours checked");
    println!("failed builds per hour: answered and within one failure of the core at {answered} hours");
    sim_task.abort();
}

/// A hotfix known only by its pull request's label (hotfix-by-label.yaml): `backfill` reads the
/// merged pull requests (one list request here, not five per commit), so its history counts
/// the hotfixed production deployment and the rework, as the simulator's truth has them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_reads_pull_request_labels_for_the_hotfix_rule() {
    use deploy_journey::sim::Sim;
    use deploy_journey::sim::clock::{ClockMode, SimClock};
    use deploy_journey::sim::workload::Scenario;
    init_crypto();
    let path = format!("{}/tests/scenarios/hotfix-by-label.yaml", env!("CARGO_MANIFEST_DIR"));
    let sc = Scenario::load(&path).unwrap();
    let start = crate::support::START;
    let (mut world, run) = sc.build_world(start);
    world.advance_to(start + sc.run_for);
    let now = world.now;
    let h = run.shas(&world)["h"].clone();
    let truth = world.deployment_truth(86_400).remove(crate::sim_cepler::PRODUCTION).unwrap_or_default();
    let hotfixed = truth.iter().filter(|d| d.failed.as_ref().is_some_and(|f| f.reason == "hotfixed")).count();
    assert_eq!(hotfixed, 1, "the truth: one production deployment hotfixed");
    let sim = Sim::new(world, SimClock::new(now, ClockMode::Stepped));
    let (listener, url) = deploy_journey::sim::server::bind(sim.clone(), "127.0.0.1:0").await.unwrap();
    let s2 = sim.clone();
    let _task = tokio::spawn(async move {
        let _ = deploy_journey::sim::server::serve(s2, listener).await;
    });
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = crate::journeys::example_config("lana", &url);
    cfg.state_path = dir.path().join("state.db");
    let mut opts = deploy_journey::backfill::Options::new(start - 86_400, now);
    opts.step = 600;
    let mut out = vec![];
    let before = sim.stats.rows();
    deploy_journey::backfill::run(&cfg, &opts, &mut out, &deploy_journey::backfill::Progress::hidden())
        .await
        .expect("backfill");
    let pulls_lists = sim.stats.rows().iter().filter(|r| r.route.ends_with("/pulls")).map(|r| r.count).sum::<u64>()
        - before.iter().filter(|r| r.route.ends_with("/pulls")).map(|r| r.count).sum::<u64>();
    assert_eq!(pulls_lists, 1, "one page of closed pull requests");
    let facts = Store::open(&cfg.state_path).unwrap().load().unwrap();
    let labels = facts.origins.get(&h).and_then(|o| o.pull()).map(|p| p.labels.clone());
    assert_eq!(labels, Some(vec!["hotfix".to_string()]), "h's pull request and its label");
    let text = String::from_utf8(out).unwrap();
    let end: i64 = text.lines().rev().nth(1).unwrap().rsplit(' ').next().unwrap().parse().unwrap();
    let at_end = samples_at(&text, Some(end));
    // (`samples_at` keys drop each value's closing quote.)
    let value = |name: &str, has: &str| {
        at_end.iter().find(|(k, _)| k.starts_with(name) && k.contains(has)).map(|(_, v)| *v).unwrap_or(0.0)
    };
    assert_eq!(
        value("deploy_journey_failed_deployments_total{", "environment=\"production,reason=\"hotfixed"),
        hotfixed as f64
    );
    assert_eq!(value("deploy_journey_rework_deployments_total{", "environment=\"production}"), 1.0);
}
