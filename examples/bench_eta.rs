//! How good are the arrival predictions (`core::eta`)? The real sources follow a simulated lana
//! CI (calibrated `LanaWorkload`, `lana` topology) for DAYS days; every STEP of simulated time
//! the journeys are derived and every commit in flight gets a predicted arrival at each
//! environment, exactly as `serve` computes them. Afterwards the simulator runs on (no new
//! commits) until the commits have landed, and each prediction is compared with the real
//! arrival (the end of the deployment that delivered the commit).
//!
//! ```sh
//! cargo run --release --example bench_eta [DAYS] [SEED] [STEP_SECONDS]   # defaults 7 10 300
//! ```
//!
//! Prints the absolute error (median, p90) and the signed bias, overall and by how far ahead
//! the prediction was made, next to a naive baseline: commit time + the median lead time of the
//! last 50 deployments known at that moment. The first simulated day is a warm-up (its
//! predictions are not scored: the history is still empty).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use deploy_journey::core::eta::{History, predict};
use deploy_journey::core::journey::{Facts, derive};
use deploy_journey::sim::Sim;
use deploy_journey::sim::clock::{ClockMode, SimClock};
use deploy_journey::sim::engine::World;
use deploy_journey::sim::topology::Topology;
use deploy_journey::sim::workload::{LanaWorkload, schedule_all};
use deploy_journey::sources::concourse::ConcourseSource;
use deploy_journey::sources::github::GithubSource;
use deploy_journey::sources::telemetry::SourceTelemetry;

/// Monday 2026-03-02 08:00:00 UTC, as in the tests.
const START: i64 = 1_772_438_400;
const DRAIN: i64 = 2 * 86_400;

struct Prediction {
    sha: String,
    env: String,
    made_at: i64,
    eta: i64,
    baseline: Option<i64>,
}

fn quantile(v: &mut [i64], q: f64) -> i64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[((v.len() - 1) as f64 * q).round() as usize]
}

fn minutes(s: i64) -> String {
    format!("{:.1}", s as f64 / 60.0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut args = std::env::args().skip(1);
    let days: i64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(7);
    let seed: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let step: i64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(300);
    let end = START + days * 86_400;

    let mut world = World::new(Topology::builtin("lana").expect("lana topology"), START, seed);
    schedule_all(&mut world, &LanaWorkload::new(seed).generate(START, end));
    let sim = Sim::new(world, SimClock::new(START, ClockMode::Stepped));
    let (listener, url) = deploy_journey::sim::server::bind(sim.clone(), "127.0.0.1:0").await.expect("bind");
    let s = sim.clone();
    let server = tokio::spawn(async move {
        let _ = deploy_journey::sim::server::serve(s, listener).await;
    });
    let cfg = deploy_journey::demo::demo_config(
        &url,
        "127.0.0.1:0".parse().unwrap(),
        std::env::temp_dir().join("unused.db"),
        Duration::from_secs(30),
    )
    .expect("lana config");
    let core = cfg.core();
    let telemetry = Arc::new(SourceTelemetry::new());
    let mut gh = GithubSource::new(cfg.github(), telemetry.clone()).expect("github source");
    let mut cc = ConcourseSource::new(cfg.concourse(), telemetry).expect("concourse source");
    let mut facts = Facts::default();
    let mut predictions: Vec<Prediction> = vec![];
    let envs = core.environments();

    while sim.now() < end + DRAIN {
        sim.clock.step(step);
        let now = sim.now();
        for f in gh.poll(now).await.expect("github poll") {
            facts.apply(f);
        }
        for f in cc.poll(now).await.expect("concourse poll") {
            facts.apply(f);
        }
        if now < START + 86_400 || now > end {
            continue;
        }
        let derived = derive(&facts, &core, now);
        let history = History::learn(&derived, &core, now);
        // The baseline: the median lead time of the last 50 deployments seen so far, per environment.
        let mut lead: BTreeMap<&str, Vec<(i64, i64)>> = BTreeMap::new();
        for j in &derived.journeys {
            for (env, at) in &j.deployed_at {
                lead.entry(env.as_str()).or_default().push((*at, at - j.commit_time));
            }
        }
        let baseline: BTreeMap<&str, i64> = lead
            .into_iter()
            .map(|(env, mut v)| {
                v.sort_unstable();
                let mut recent: Vec<i64> = v[v.len().saturating_sub(50)..].iter().map(|x| x.1).collect();
                (env, quantile(&mut recent, 0.5))
            })
            .collect();
        for j in derived.journeys.iter().filter(|j| !j.ended && !j.vanished) {
            for (env, eta) in predict(j, &core, &history, now) {
                let baseline = baseline.get(env.as_str()).map(|l| (j.commit_time + l).max(now));
                predictions.push(Prediction { sha: j.sha.clone(), env, made_at: now, eta, baseline });
            }
        }
    }
    let last = derive(&facts, &core, sim.now());
    let arrived: BTreeMap<(&str, &str), i64> = last
        .journeys
        .iter()
        .flat_map(|j| j.deployed_at.iter().map(move |(e, t)| ((j.sha.as_str(), e.as_str()), *t)))
        .collect();

    let in_flight_commits: std::collections::BTreeSet<&str> = predictions.iter().map(|p| p.sha.as_str()).collect();
    let scored: Vec<(&Prediction, i64)> =
        predictions.iter().filter_map(|p| arrived.get(&(p.sha.as_str(), p.env.as_str())).map(|a| (p, *a))).collect();
    println!(
        "bench_eta: {days} simulated days (seed {seed}), a prediction every {step} s for every commit in flight; \
         environments {envs:?}"
    );
    println!(
        "{} predictions for {} commits; {} scored (the commit arrived), {} never arrived (failed, vanished)",
        predictions.len(),
        in_flight_commits.len(),
        scored.len(),
        predictions.len() - scored.len()
    );
    println!();
    println!(
        "| made this long before arrival | predictions | median abs error (min) | p90 abs error (min) | bias (min, + = late) | baseline median abs error (min) |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    let buckets: [(&str, i64, i64); 6] = [
        ("all", 0, i64::MAX),
        ("< 15 min", 0, 900),
        ("15–30 min", 900, 1_800),
        ("30–60 min", 1_800, 3_600),
        ("1–2 h", 3_600, 7_200),
        ("≥ 2 h", 7_200, i64::MAX),
    ];
    for (name, lo, hi) in buckets {
        let sel: Vec<&(&Prediction, i64)> =
            scored.iter().filter(|(p, a)| (a - p.made_at) >= lo && (a - p.made_at) < hi).collect();
        let mut abs: Vec<i64> = sel.iter().map(|(p, a)| (p.eta - a).abs()).collect();
        let mut signed: Vec<i64> = sel.iter().map(|(p, a)| p.eta - a).collect();
        let mut base: Vec<i64> = sel.iter().filter_map(|(p, a)| p.baseline.map(|b| (b - a).abs())).collect();
        println!(
            "| {name} | {} | {} | {} | {} | {} |",
            sel.len(),
            minutes(quantile(&mut abs, 0.5)),
            minutes(quantile(&mut abs, 0.9)),
            minutes(quantile(&mut signed, 0.5)),
            minutes(quantile(&mut base, 0.5)),
        );
    }
    server.abort();
}
