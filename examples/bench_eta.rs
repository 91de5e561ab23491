//! How good are the arrival predictions (`core::eta::predict_all`)? The real sources follow a
//! simulated lana CI (calibrated `LanaWorkload`, `lana` topology) for DAYS days; every STEP of
//! simulated time the journeys are derived and every commit gets its predicted arrival at each
//! environment the configuration follows (staging, qa, production), exactly as `serve` computes
//! them. Afterwards the simulator runs on (no new commits) until the commits have landed, and
//! each prediction is compared with the real arrival: the end of the first successful deployment
//! that brought the commit to that environment, from the simulator's own ground truth
//! (`World::deployment_truth`), not from the exporter's view of it.
//!
//! ```sh
//! cargo run --release --example bench_eta [DAYS] [SEED] [STEP_SECONDS]   # defaults 7 10 300
//! ```
//!
//! Prints, per environment, the absolute error (median, p90) and the signed bias, overall and by
//! how far ahead the prediction was made, next to a naive baseline: commit time + the median lead
//! time of the last 50 deployments to that environment known at that moment. A moment at which a
//! commit had not arrived yet (it did later) and the model said nothing is counted under "no
//! prediction", never scored. The first simulated day is a warm-up (its predictions are not
//! scored: the history is still empty). Commits no resource emits (`[ci skip]`, ci/*.sh) are left
//! out: the truth does not follow them.
//!
//! Production is released by a human gate. The calibrated workload never opens it (the simulator
//! holds it at what ran at the start), so this benchmark adds a release habit of its own, an
//! assumption (lana's real one is not known): on each working day (Monday to Friday, UTC) at
//! 15:00 plus a seeded 0–3 h, a person pins the gated environment to the state its upstream (QA)
//! recorded last, releasing everything QA runs then (`sim::workload::release_habit`, which the
//! demo shares). At the same moment the
//! same person reruns (`fly rerun-build`) each environment's deploy job whose latest build failed:
//! without that, one failed QA or production deploy holds that environment for the rest of the run
//! (cepler offers the same version again, and Concourse does not rebuild it).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use deploy_journey::core::eta::predict_all;
use deploy_journey::core::journey::{Facts, Journey, StageState, WaitsFor, derive};
use deploy_journey::sim::Sim;
use deploy_journey::sim::clock::{ClockMode, SimClock};
use deploy_journey::sim::engine::{Action, World};
use deploy_journey::sim::topology::Topology;
use deploy_journey::sim::workload::{LanaWorkload, release_habit, schedule_all, truth};
use deploy_journey::sources::concourse::ConcourseSource;
use deploy_journey::sources::github::GithubSource;
use deploy_journey::sources::telemetry::SourceTelemetry;

/// Monday 2026-03-02 08:00:00 UTC, as in the tests.
const START: i64 = 1_772_438_400;
const DRAIN: i64 = 2 * 86_400;

/// One commit at one moment, for one environment it had not reached in the exporter's view.
struct Sample {
    sha: usize,
    env: usize,
    made_at: i64,
    /// The model's predicted arrival; `None`: it made no prediction.
    eta: Option<i64>,
    baseline: Option<i64>,
    /// Why there is none: an index into `SILENT`.
    silent: usize,
}

/// Why a journey had no prediction for an environment, in the order they are checked.
const SILENT: [&str; 5] = [
    "journey ended (it reached `journey_ends_at`)",
    "a stage failed (a person decides on a rerun)",
    "rides with / waits for a triggering commit",
    "a stage incomplete",
    "a stage with no history yet",
];

fn silent_reason(j: &Journey) -> usize {
    let any = |f: &dyn Fn(&deploy_journey::core::journey::StageJourney) -> bool| j.stages.iter().any(f);
    if j.ended {
        0
    } else if any(&|s| s.state == StageState::Failed) {
        1
    } else if any(&|s| s.state == StageState::Riding || matches!(s.waits_for, Some(WaitsFor::TriggeringCommit))) {
        2
    } else if any(&|s| s.state == StageState::Incomplete) {
        3
    } else {
        4
    }
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
    let wall = std::time::Instant::now();

    let topology = Topology::builtin("lana").expect("lana topology");
    // The release habit (an assumption; see `sim::workload::release_habit`).
    let habit = release_habit(&topology, seed, START, end + DRAIN);
    let gates = habit.iter().filter(|(_, a)| matches!(a, Action::Gate { .. })).count();
    let mut world = World::new(topology, START, seed);
    schedule_all(&mut world, &LanaWorkload::new(seed).generate(START, end));
    schedule_all(&mut world, &habit);
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
    let envs = core.environments();
    let mut shas: Vec<String> = vec![];
    let mut sha_index: HashMap<String, usize> = HashMap::new();
    let mut samples: Vec<Sample> = vec![];
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
        // What `serve` publishes: predictions for the journeys in flight.
        let etas = predict_all(&derived, &core, now);
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
        // Every commit the exporter knows and has not seen in an environment yet: a prediction,
        // or none (whether it was owed one is decided against the truth afterwards).
        for j in derived.journeys.iter().filter(|j| !j.vanished && j.commit_time >= START) {
            let id = *sha_index.entry(j.sha.clone()).or_insert_with(|| {
                shas.push(j.sha.clone());
                shas.len() - 1
            });
            for (e, env) in envs.iter().enumerate() {
                if j.deployed_at.contains_key(env) {
                    continue;
                }
                let eta = etas.get(&j.sha).and_then(|p| p.get(env)).copied();
                let baseline = baseline.get(env.as_str()).map(|l| (j.commit_time + l).max(now));
                let silent = if eta.is_none() { silent_reason(j) } else { 0 };
                samples.push(Sample { sha: id, env: e, made_at: now, eta, baseline, silent });
            }
        }
    }

    // The real arrivals: the simulator's deployments (cepler environment names), mapped to the
    // configuration's environments by the deploy job; the first successful one per commit. The
    // truth follows tracked commits only: commits no resource emits (`[ci skip]`, ci/*.sh) ride
    // along with others and are left out here, predictions or not.
    let (deployment_truth, passive) = {
        let world = sim.world();
        let passive: std::collections::HashSet<usize> = shas
            .iter()
            .enumerate()
            .filter(|(_, sha)| truth(&world, sha).emitting_resources.is_empty())
            .map(|(i, _)| i)
            .collect();
        (world.deployment_truth(core.dora.failure_window), passive)
    };
    samples.retain(|s| !passive.contains(&s.sha));
    let mut arrived: HashMap<(usize, usize), i64> = HashMap::new();
    let mut deployments: BTreeMap<usize, usize> = BTreeMap::new();
    for d in deployment_truth.values().flatten().filter(|d| d.result == "success") {
        let Some(env) = core
            .stage_of_job(&d.build.pipeline, &d.build.job)
            .and_then(|s| core.stages[s].environment.as_ref())
            .and_then(|e| envs.iter().position(|x| x == e))
        else {
            continue;
        };
        if d.end > START && !d.lead_times.is_empty() {
            *deployments.entry(env).or_default() += 1;
        }
        for sha in d.lead_times.keys() {
            if let Some(&id) = sha_index.get(sha) {
                let t = arrived.entry((id, env)).or_insert(d.end);
                *t = (*t).min(d.end);
            }
        }
    }
    // Cross-check: the exporter's own arrivals at the end against the truth.
    let last = derive(&facts, &core, sim.now());
    let mut disagree = 0;
    for j in &last.journeys {
        let Some(&id) = sha_index.get(&j.sha).filter(|id| !passive.contains(id)) else { continue };
        for (e, env) in envs.iter().enumerate() {
            if j.deployed_at.get(env).copied() != arrived.get(&(id, e)).copied() {
                disagree += 1;
            }
        }
    }

    let reruns = sim.with_world(|w| {
        w.concourse.builds.iter().filter(|b| b.rerun_of.is_some() && b.created_by.as_deref() == Some("release")).count()
    });
    println!(
        "bench_eta: {days} simulated days (seed {seed}), every {step} s a prediction for every commit in flight \
         (`predict_all`, as `serve`); environments {envs:?}; release habit: {gates} gate pushes (working days from \
         15:00 UTC + 0–3 h, pinned to the commit that recorded QA's state), {reruns} reruns of a red deploy; {:.0} s of wall time",
        wall.elapsed().as_secs_f64()
    );
    println!(
        "{} commits followed, {} of them passive (no resource emits them; left out); cross-check: {disagree} \
         (commit, environment) arrivals where the exporter's view at the end differs from the simulator's truth",
        shas.len(),
        passive.len()
    );
    let buckets: [(&str, i64, i64); 8] = [
        ("all", 0, i64::MAX),
        ("< 15 min", 0, 900),
        ("15–30 min", 900, 1_800),
        ("30–60 min", 1_800, 3_600),
        ("1–2 h", 3_600, 7_200),
        ("2–8 h", 7_200, 8 * 3_600),
        ("8–24 h", 8 * 3_600, 24 * 3_600),
        ("≥ 24 h", 24 * 3_600, i64::MAX),
    ];
    for (e, env) in envs.iter().enumerate() {
        let mine: Vec<&Sample> = samples.iter().filter(|s| s.env == e).collect();
        // Owed a prediction: the commit arrived later. Scored: the model made one.
        let owed: Vec<(&Sample, i64)> = mine
            .iter()
            .filter_map(|s| arrived.get(&(s.sha, e)).filter(|a| **a > s.made_at).map(|a| (*s, *a)))
            .collect();
        let never: Vec<&&Sample> =
            mine.iter().filter(|s| s.eta.is_some() && !arrived.contains_key(&(s.sha, e))).collect();
        let commits_owed: std::collections::BTreeSet<usize> = owed.iter().map(|(s, _)| s.sha).collect();
        let commits_predicted: std::collections::BTreeSet<usize> =
            owed.iter().filter(|(s, _)| s.eta.is_some()).map(|(s, _)| s.sha).collect();
        let never_commits: std::collections::BTreeSet<usize> = never.iter().map(|s| s.sha).collect();
        println!();
        println!(
            "{env}: {} deployments brought commits; {} commits arrived after a scored moment, {} of them with at least \
             one prediction; {} moments owed a prediction, {} predicted, {} with no prediction; {} predictions for {} \
             commits that never arrived",
            deployments.get(&e).copied().unwrap_or(0),
            commits_owed.len(),
            commits_predicted.len(),
            owed.len(),
            owed.iter().filter(|(s, _)| s.eta.is_some()).count(),
            owed.iter().filter(|(s, _)| s.eta.is_none()).count(),
            never.len(),
            never_commits.len(),
        );
        println!();
        println!(
            "| made this long before arrival | predictions | no prediction | median abs error (min) | p90 abs error (min) | bias (min, + = late) | baseline median abs error (min) |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|");
        for (name, lo, hi) in buckets {
            let here: Vec<&(&Sample, i64)> =
                owed.iter().filter(|(s, a)| (a - s.made_at) >= lo && (a - s.made_at) < hi).collect();
            if here.is_empty() && name != "all" {
                continue;
            }
            let sel: Vec<(i64, i64, Option<i64>)> =
                here.iter().filter_map(|(s, a)| s.eta.map(|p| (p, *a, s.baseline))).collect();
            let mut abs: Vec<i64> = sel.iter().map(|(p, a, _)| (p - a).abs()).collect();
            let mut signed: Vec<i64> = sel.iter().map(|(p, a, _)| p - a).collect();
            let mut base: Vec<i64> = sel.iter().filter_map(|(_, a, b)| b.map(|b| (b - a).abs())).collect();
            let na = |v: &mut Vec<i64>, q: f64| if v.is_empty() { "–".to_string() } else { minutes(quantile(v, q)) };
            println!(
                "| {name} | {} | {} | {} | {} | {} | {} |",
                sel.len(),
                here.len() - sel.len(),
                na(&mut abs, 0.5),
                na(&mut abs, 0.9),
                na(&mut signed, 0.5),
                na(&mut base, 0.5),
            );
        }
        let mut why = [0usize; SILENT.len()];
        for (s, _) in owed.iter().filter(|(s, _)| s.eta.is_none()) {
            why[s.silent] += 1;
        }
        let why: Vec<String> =
            why.iter().zip(SILENT).filter(|(n, _)| **n > 0).map(|(n, r)| format!("{r}: {n}")).collect();
        if !why.is_empty() {
            println!();
            println!("no prediction, why: {}", why.join("; "));
        }
        // What a naive dashboard would have said at the moments the model was silent.
        let mut silent: Vec<i64> = owed
            .iter()
            .filter(|(s, _)| s.eta.is_none())
            .filter_map(|(s, a)| s.baseline.map(|b| (b - a).abs()))
            .collect();
        if !silent.is_empty() {
            println!();
            println!(
                "baseline at the {} moments with no prediction: median abs error {} min, p90 {} min",
                silent.len(),
                minutes(quantile(&mut silent, 0.5)),
                minutes(quantile(&mut silent, 0.9)),
            );
        }
    }
    server.abort();
}
