//! What following lana's CI costs Concourse and GitHub: the exporter's real sources against the
//! by-hand procedure (every 30 s: the builds of each watched job, the resources of each new
//! build, each new commit resolved once on GitHub), on the same simulated lana day, in one run,
//! with the detection latency of every stage change. A program that prints a table:
//!
//! ```sh
//! cargo run --release --example bench_requests          # one day (seed 10)
//! cargo run --release --example bench_requests -- 3 7   # three days, seed 7
//! ```
//!
//! Three simulators hold identical worlds (same topology, seed and calibrated `LanaWorkload`;
//! outcomes never depend on how a world is observed), so each side's requests are counted by its
//! own simulator's `Stats`. Their clocks are stepped together by 30 s. Sides:
//! * `exporter`: `GithubSource` + `ConcourseSource` as `serve` builds them from
//!   `examples/lana.yaml`, both polled every cycle;
//! * `exporter+webhook`: the same with `repository.webhook_secret` set, so GitHub is polled every
//!   `Config::github_poll_interval()` (5 min) and right after each push to the tracked branch
//!   (the pushes the simulator's webhook outbox holds, taken at the end of each step);
//! * `by-hand`: the poller below.
//!
//! Detection latency: for each start and each finish of a watched build (ground truth: the
//! world's build times), the virtual time until that side's view shows it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deploy_journey::config::Config;
use deploy_journey::core::journey::Fact;
use deploy_journey::sim::Sim;
use deploy_journey::sim::clock::{ClockMode, SimClock};
use deploy_journey::sim::engine::World;
use deploy_journey::sim::topology::Topology;
use deploy_journey::sim::workload::{LanaWorkload, schedule_all};
use deploy_journey::sources::concourse::ConcourseSource;
use deploy_journey::sources::github::GithubSource;
use deploy_journey::sources::telemetry::SourceTelemetry;
use deploy_journey::sources::{Secret, WatchedPipeline};
use serde_json::Value;

/// Monday 2026-03-02 08:00:00 UTC, as in the tests.
const START: i64 = 1_772_438_400;
const STEP: i64 = 30;
/// The lana-bank git resources whose versions are lana-bank commits (what a person resolves).
const LANA_GIT: [&str; 4] = ["repo", "admin-panel-src", "customer-portal-src", "dagster-src"];

struct Served {
    sim: Arc<Sim>,
    url: String,
}

async fn serve_world(days: i64, seed: u64) -> Served {
    let mut w = World::new(Topology::builtin("lana").expect("lana topology"), START, seed);
    let actions = LanaWorkload::new(seed).generate(START, START + days * 86_400);
    schedule_all(&mut w, &actions);
    let sim = Sim::new(w, SimClock::new(START, ClockMode::Stepped));
    let (listener, url) = deploy_journey::sim::server::bind(sim.clone(), "127.0.0.1:0").await.expect("bind");
    let s = sim.clone();
    tokio::spawn(async move {
        let _ = deploy_journey::sim::server::serve(s, listener).await;
    });
    Served { sim, url }
}

/// Build id → (start seen, finish seen), virtual seconds.
type Seen = HashMap<i64, (Option<i64>, Option<i64>)>;

fn see(seen: &mut Seen, id: i64, started: bool, finished: bool, now: i64) {
    let e = seen.entry(id).or_default();
    if started && e.0.is_none() {
        e.0 = Some(now);
    }
    if finished && e.1.is_none() {
        e.1 = Some(now);
        e.0.get_or_insert(now);
    }
}

struct Exporter {
    name: &'static str,
    served: Served,
    github: GithubSource,
    concourse: ConcourseSource,
    github_every: i64,
    next_github: i64,
    webhook: bool,
    seen: Seen,
    github_polls: u64,
}

impl Exporter {
    async fn new(name: &'static str, served: Served, webhook: bool) -> Exporter {
        let mut cfg: Config = deploy_journey::demo::demo_config(
            &served.url,
            "127.0.0.1:0".parse().unwrap(),
            std::env::temp_dir().join("unused.db"),
            Duration::from_secs(STEP as u64),
        )
        .expect("lana config");
        if webhook {
            cfg.repository.webhook_secret = Some(Secret::new("bench-webhook-secret"));
            // BENCH_GITHUB_SAFETY_POLL=30m measures a slower safety poll than the default 5m.
            if let Some(d) =
                std::env::var("BENCH_GITHUB_SAFETY_POLL").ok().and_then(|v| humantime::parse_duration(&v).ok())
            {
                cfg.repository.poll_interval = Some(d);
            }
        }
        let tel = Arc::new(SourceTelemetry::new());
        Exporter {
            name,
            github: GithubSource::new(cfg.github(), tel.clone()).expect("github source"),
            concourse: ConcourseSource::new(cfg.concourse(), tel).expect("concourse source"),
            github_every: cfg.github_poll_interval().as_secs() as i64,
            next_github: i64::MIN,
            webhook,
            served,
            seen: Seen::new(),
            github_polls: 0,
        }
    }

    /// One cycle as `serve` runs it: GitHub when due or pushed, Concourse always.
    async fn cycle(&mut self, now: i64, tracked: (&str, &str)) {
        let pushed = self.webhook
            && self.served.sim.with_world(|w| {
                let ev = std::mem::take(&mut w.outbox);
                ev.iter().any(|e| e.repo == tracked.0 && e.branch == tracked.1)
            });
        if pushed || now >= self.next_github {
            self.next_github = now + self.github_every;
            self.github_polls += 1;
            if let Err(e) = self.github.poll(now).await {
                eprintln!("{}: github poll failed: {e}", self.name);
            }
        }
        match self.concourse.poll(now).await {
            Ok(facts) => {
                for f in facts {
                    if let Fact::Build(b) = f {
                        see(&mut self.seen, b.id, b.start.is_some(), b.status.is_finished(), now);
                    }
                }
            }
            Err(e) => eprintln!("{}: concourse poll failed: {e}", self.name),
        }
    }
}

/// The by-hand procedure (the lana-deploy-monitor skill's loop): every cycle list each watched
/// job's builds; read `/resources` of each build not seen before; resolve each new lana-bank
/// commit among its inputs once on GitHub.
struct ByHand {
    served: Served,
    client: reqwest::Client,
    token: String,
    jobs: Vec<(String, String)>,
    repo: String,
    known: HashSet<i64>,
    resolved: HashSet<String>,
    seen: Seen,
    first: bool,
}

impl ByHand {
    async fn new(served: Served, pipelines: &[WatchedPipeline], repo: String) -> ByHand {
        let client = reqwest::Client::new();
        let token = login(&client, &served.url).await;
        let jobs =
            pipelines.iter().flat_map(|p| p.jobs.iter().map(move |j| (p.name.clone(), j.clone()))).collect::<Vec<_>>();
        ByHand {
            served,
            client,
            token,
            jobs,
            repo,
            known: HashSet::new(),
            resolved: HashSet::new(),
            seen: Seen::new(),
            first: true,
        }
    }

    /// GET as a person with `fly`/`gh` would: a 401 (the day-long token ran out) is one more
    /// `fly login` and the request again.
    async fn get(&mut self, path: &str, github: bool) -> Value {
        let url = format!("{}{path}", self.served.url);
        let bearer = if github { "ghp_bench".to_string() } else { self.token.clone() };
        let mut r = self.client.get(&url).bearer_auth(&bearer).send().await.expect("GET");
        if r.status() == 401 && !github {
            self.token = login(&self.client, &self.served.url).await;
            r = self.client.get(&url).bearer_auth(&self.token).send().await.expect("GET");
        }
        assert!(r.status().is_success(), "by-hand GET {path}: {}", r.status());
        r.json().await.expect("json")
    }

    async fn cycle(&mut self, now: i64) {
        for (p, j) in self.jobs.clone() {
            let list = self.get(&format!("/api/v1/teams/dev/pipelines/{p}/jobs/{j}/builds"), false).await;
            for b in list.as_array().into_iter().flatten() {
                let id = b["id"].as_i64().unwrap_or(0);
                let status = b["status"].as_str().unwrap_or("");
                let finished = matches!(status, "succeeded" | "failed" | "errored" | "aborted");
                see(&mut self.seen, id, status == "started" || finished, finished, now);
                // Builds already there when the person starts watching are not "new".
                if !self.known.insert(id) || self.first {
                    continue;
                }
                let io = self.get(&format!("/api/v1/builds/{id}/resources"), false).await;
                for i in io["inputs"].as_array().into_iter().flatten() {
                    let name = i["name"].as_str().unwrap_or("");
                    let Some(sha) = i["version"]["ref"].as_str() else { continue };
                    if p == "lana-bank" && LANA_GIT.contains(&name) && self.resolved.insert(sha.to_string()) {
                        let path = format!("/repos/{}/commits/{sha}", self.repo);
                        self.get(&path, true).await;
                    }
                }
            }
        }
        self.first = false;
    }
}

/// `fly login`: the password grant.
async fn login(client: &reqwest::Client, url: &str) -> String {
    let r: Value = client
        .post(format!("{url}/sky/issuer/token"))
        .basic_auth("fly", Some("Zmx5"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=password&username=deploy-journey&password=viewer-password&scope=openid+profile+email+federated%3Aid+groups")
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("token json");
    r["access_token"].as_str().expect("access_token").to_string()
}

#[derive(Default)]
struct Latency {
    samples: Vec<i64>,
    missed: usize,
}

impl Latency {
    fn mean(&self) -> f64 {
        self.samples.iter().sum::<i64>() as f64 / self.samples.len().max(1) as f64
    }
    fn p95(&self) -> i64 {
        let mut s = self.samples.clone();
        s.sort();
        s.get((s.len() * 95).div_ceil(100).saturating_sub(1)).copied().unwrap_or(0)
    }
}

/// Ground truth: (id, start, end) of every watched build created during the run.
fn truth(sim: &Sim, pipelines: &[WatchedPipeline]) -> Vec<(i64, Option<i64>, Option<i64>)> {
    sim.with_world(|w| {
        w.concourse
            .builds
            .iter()
            .filter(|b| b.create_time >= START)
            .filter(|b| {
                let p = &w.concourse.pipelines[b.pipeline];
                pipelines.iter().any(|wp| wp.name == p.name && wp.jobs.contains(&p.jobs[b.job].name))
            })
            .map(|b| (b.id, b.start_time, b.end_time))
            .collect()
    })
}

fn latency(seen: &Seen, truth: &[(i64, Option<i64>, Option<i64>)], end: i64) -> Latency {
    let mut l = Latency::default();
    for (id, start, finish) in truth {
        let s = seen.get(id).copied().unwrap_or_default();
        for (at, got) in [(start, s.0), (finish, s.1)] {
            // A change in the last cycle has not had its chance to be seen.
            let Some(at) = at.filter(|t| *t <= end - STEP) else { continue };
            match got {
                Some(g) => l.samples.push(g - at),
                None => l.missed += 1,
            }
        }
    }
    l
}

fn totals(sim: &Sim) -> BTreeMap<&'static str, u64> {
    ["concourse", "github"].into_iter().map(|s| (s, sim.stats.total(s))).collect()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut args = std::env::args().skip(1);
    let days: i64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let seed: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let wall = Instant::now();

    let plain = Exporter::new("exporter", serve_world(days, seed).await, false).await;
    let hooked = Exporter::new("exporter+webhook", serve_world(days, seed).await, true).await;
    let cfg = deploy_journey::demo::demo_config(
        "http://unused",
        "127.0.0.1:0".parse().unwrap(),
        "x".into(),
        Duration::from_secs(30),
    )
    .expect("lana config");
    let pipelines = cfg.concourse().pipelines;
    let repo = format!("{}/{}", cfg.repository.owner, cfg.repository.name);
    let tracked = (repo.clone(), cfg.repository.branch.clone());
    let mut hand = ByHand::new(serve_world(days, seed).await, &pipelines, repo).await;
    let mut exporters = [plain, hooked];

    let end = START + days * 86_400;
    let mut now = START;
    while now < end {
        now += STEP;
        for e in &exporters {
            e.served.sim.clock.step(STEP);
        }
        hand.served.sim.clock.step(STEP);
        for e in &mut exporters {
            e.cycle(now, (&tracked.0, &tracked.1)).await;
        }
        hand.cycle(now).await;
    }

    let truth = truth(&exporters[0].served.sim, &pipelines);
    let same = exporters[1..].iter().all(|e| truth == self::truth(&e.served.sim, &pipelines))
        && truth == self::truth(&hand.served.sim, &pipelines);
    assert!(same, "the three simulated worlds diverged");
    let commits = exporters[0].served.sim.with_world(|w| w.tracked_repo().branches[&w.topology.tracked_branch].len());
    let cycles = days * 86_400 / STEP;
    let jobs: usize = pipelines.iter().map(|p| p.jobs.len()).sum();

    println!(
        "{days} simulated lana day(s) (seed {seed}), {cycles} cycles of {STEP} s, {jobs} watched jobs, {} watched builds, {commits} commits on the branch; {:.1} s wall",
        truth.len(),
        wall.elapsed().as_secs_f64()
    );
    println!();
    let hand_t = totals(&hand.served.sim);
    let hand_lat = latency(&hand.seen, &truth, end);
    println!(
        "| side | Concourse req/day | GitHub req/day | total req/day | ratio by-hand/side | latency mean (s) | latency p95 (s) | missed |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let hand_total = hand_t["concourse"] + hand_t["github"];
    let per_day = |n: u64| n as f64 / days as f64;
    for e in &exporters {
        let t = totals(&e.served.sim);
        let lat = latency(&e.seen, &truth, end);
        let total = t["concourse"] + t["github"];
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.1}× (Concourse {:.1}×) | {:.1} | {} | {} |",
            e.name,
            per_day(t["concourse"]),
            per_day(t["github"]),
            per_day(total),
            hand_total as f64 / total as f64,
            hand_t["concourse"] as f64 / t["concourse"] as f64,
            lat.mean(),
            lat.p95(),
            lat.missed
        );
    }
    println!(
        "| by-hand | {:.0} | {:.0} | {:.0} | 1.0× | {:.1} | {} | {} |",
        per_day(hand_t["concourse"]),
        per_day(hand_t["github"]),
        per_day(hand_total),
        hand_lat.mean(),
        hand_lat.p95(),
        hand_lat.missed
    );
    println!();
    for (name, sim) in
        exporters.iter().map(|e| (e.name, &e.served.sim)).chain(std::iter::once(("by-hand", &hand.served.sim)))
    {
        println!("{name}:");
        for r in sim.stats.rows().iter().filter(|r| r.service != "sim") {
            println!("  {:>7}  {} {} {} {}", r.count, r.service, r.method, r.route, r.status);
        }
    }
    println!("GitHub polls: exporter {}, exporter+webhook {}", exporters[0].github_polls, exporters[1].github_polls);
}
