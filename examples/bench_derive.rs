//! Poll cost over history: what one `serve` cycle spends deriving and publishing, with a day,
//! 90 days and a year of lana facts in memory. A program that prints figures, not a timed test:
//!
//! ```sh
//! cargo run --release --example bench_derive            # 1 day, 90 days, 365 days
//! cargo run --release --example bench_derive -- 30 180  # other histories (days)
//! BENCH_KEEP=all cargo run --release --example bench_derive   # every day in memory (before settling)
//! ```
//!
//! What a cycle works on is what `serve` holds in memory: the journeys of the last
//! `keep_in_memory` (the configuration's memory window, 8 days with `examples/lana.yaml`) and what
//! they refer to; older journeys have settled into the store, or are held there while an
//! environment lacks them (`retention::plan_settling`, as `serve`'s hourly settling does). `BENCH_KEEP=all` keeps the whole history in memory, as before settling.
//!
//! Each history is simulated (`World` + `LanaWorkload`, seed 1), turned into the facts the
//! GitHub and Concourse APIs would show (`facts_from_world`), and then a cycle is repeated as
//! `serve` runs it: a full `derive` (what `serve` did before), the incremental derivation
//! (`core::incremental`, what it does now: the previous cycle's settled journeys kept), then
//! publishing: `stage_builds`, the journey totals and a `/metrics` rendering. Before, the
//! totals were added up from every event at each scrape; now `sinks::metrics::Tally` adds up
//! only the segments of history that changed. The incremental side is measured in the steady
//! state: each measured cycle follows one that derived the same facts with one build changed
//! (the newest build finished and put its outputs), as a poll that saw it.

use std::time::{Duration, Instant};

// The allocator and options `serve` runs with, so the figures are `serve`'s.
deploy_journey::serve_allocator!();

use deploy_journey::core::incremental::Incremental;
use deploy_journey::core::journey::{CoreConfig, Facts, derive, stage_builds};
use deploy_journey::core::lineage::Lineage;
use deploy_journey::sim::engine::World;
use deploy_journey::sim::observe::facts_from_world;
use deploy_journey::sim::topology::Topology;
use deploy_journey::sim::workload::LanaWorkload;
use deploy_journey::sinks::metrics::{Baseline, MetricsInput, Tally, Totals, render_text};

/// Monday 2026-03-02 08:00:00 UTC, as in the tests.
const START: i64 = 1_772_438_400;

fn lana_config() -> deploy_journey::config::Config {
    let path = format!("{}/examples/lana.yaml", env!("CARGO_MANIFEST_DIR"));
    let env = |k: &str| match k {
        "GITHUB_TOKEN" => Some("ghp_bench".to_string()),
        "CONCOURSE_PASSWORD" => Some("bench".to_string()),
        _ => None,
    };
    deploy_journey::config::load(std::path::Path::new(&path), &env).unwrap_or_else(|e| panic!("{e}"))
}

/// What `serve` keeps in memory of `facts` at `now`: the journeys of the memory window and what
/// they refer to; the rest settles, or is held in the store while an environment lacks it (its
/// gauge record stays), as `serve`'s hourly settling does (`retention::plan_settling`).
fn settle(facts: &mut Facts, core: &CoreConfig, now: i64, window: Duration, retention: Duration) {
    let derived = derive(facts, core, now);
    let sb = stage_builds(facts, core, &derived);
    let hold_from = now - retention.as_secs() as i64 + deploy_journey::retention::HOLD_MARGIN;
    let plan = deploy_journey::retention::plan_settling(
        facts,
        &derived,
        &sb,
        core,
        now - window.as_secs() as i64,
        hold_from,
        &Default::default(),
    );
    deploy_journey::retention::apply(facts, &plan.out);
    eprintln!("  held in the store: {} journeys", plan.held.records.len());
    facts.held = std::sync::Arc::new(plan.held.records);
}

fn history(days: i64) -> (Facts, i64) {
    let seed = 1;
    let end = START + days * 86_400;
    let mut w = World::new(Topology::builtin("lana").expect("lana topology"), START, seed);
    for (at, a) in LanaWorkload::new(seed).generate(START, end) {
        w.schedule_action(at, a);
    }
    // A few hours more, so the last commits are partly deployed and partly in flight.
    let now = end + 2 * 3600;
    w.advance_to(now);
    (facts_from_world(&w), now)
}

/// Median of `runs` timings of `f`.
fn median(runs: usize, mut f: impl FnMut() -> Duration) -> Duration {
    let mut v: Vec<Duration> = (0..runs).map(|_| f()).collect();
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn main() {
    // As on `serve`'s threads once it has started.
    deploy_journey::memory::lean_after_start();
    deploy_journey::memory::started();
    let days: Vec<i64> = {
        let a: Vec<i64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
        if a.is_empty() { vec![1, 90, 365] } else { a }
    };
    let cfg = lana_config();
    let core = cfg.core();
    let keep_all = std::env::var("BENCH_KEEP").is_ok_and(|v| v == "all");
    println!(
        "| history | in memory: commits | builds | lineage ms | full derive ms | incremental derive ms | publish before ms | publish now ms | cycle before ms | cycle now ms | before ÷ now |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut first_cycle: Option<(Duration, Duration)> = None;
    for d in days {
        let (mut facts, now) = history(d);
        let all = (facts.commits.len(), facts.builds.len());
        if !keep_all {
            settle(&mut facts, &core, now, cfg.memory_window(), cfg.retention);
        }
        eprintln!(
            "{d} d: {} of {} commits and {} of {} builds in memory",
            facts.commits.len(),
            all.0,
            facts.builds.len(),
            all.1
        );
        let runs = if d > 100 { 5 } else { 11 };
        let lineage = median(runs, || {
            let t = Instant::now();
            std::hint::black_box(Lineage::of(&facts, &core));
            t.elapsed()
        });
        let full = median(runs, || {
            let t = Instant::now();
            std::hint::black_box(derive(&facts, &core, now));
            t.elapsed()
        });
        // Steady state: the previous cycle saw the same facts but for the newest build.
        let mut older = facts.clone();
        if let Some(b) = older.builds.values_mut().next_back() {
            b.status = deploy_journey::core::journey::BuildStatus::Started;
            b.end = None;
            b.outputs.clear();
        }
        let inc = median(runs, || {
            let mut i = Incremental::default();
            i.derive(&older, &core, now - 30);
            let t = Instant::now();
            std::hint::black_box(i.derive(&facts, &core, now));
            t.elapsed()
        });
        let work = {
            let mut i = Incremental::default();
            i.derive(&older, &core, now - 30);
            i.derive_counted(&facts, &core, now).1
        };
        eprintln!(
            "{d} d: the incremental cycle pushed {} builds again, classified {} commits, took {} of {} journeys as they were",
            work.pushed,
            work.classified,
            work.reused,
            facts.commits.len()
        );
        let derived = derive(&facts, &core, now);
        // Publishing: the stage builds, the journey totals and a `/metrics` rendering. Before:
        // the totals added up from every event at the scrape; now: a `Tally` that saw the
        // previous cycle (the newest build still running) adds up the changed segments only.
        let render = |sb: &[deploy_journey::core::journey::StageBuild], totals: Option<&Totals>| {
            let input = MetricsInput {
                totals,
                derived: &derived,
                stage_builds: sb,
                core: &core,
                sources: &[],
                now,
                poll_interval_secs: 30,
                version: "bench",
                baseline: &Baseline::default(),
                spans: None,
                store_errors: 0,
                auth_rejections: None,
            };
            std::hint::black_box(render_text(&input));
        };
        let publish_before = median(runs, || {
            let t = Instant::now();
            let sb = stage_builds(&facts, &core, &derived);
            render(&sb, None);
            t.elapsed()
        });
        let older_derived = derive(&older, &core, now - 30);
        let older_sb = stage_builds(&older, &core, &older_derived);
        let mut segments = (0, 0);
        let publish = median(runs, || {
            let mut tally = Tally::default();
            tally.update(&older_derived, &older_sb, &core);
            let t = Instant::now();
            let sb = stage_builds(&facts, &core, &derived);
            let totals = tally.update(&derived, &sb, &core);
            render(&sb, Some(&totals));
            let took = t.elapsed();
            segments = (tally.recomputed, tally.segments());
            took
        });
        eprintln!("{d} d: the tally added up {} of {} segments again", segments.0, segments.1);
        let before = full + publish_before;
        let after = inc + publish;
        let f = *first_cycle.get_or_insert((before, after));
        println!(
            "| {d} d | {} | {} | {} | {} | {} | {} | {} | {} ({:.1}× 1st) | {} ({:.1}× 1st) | {:.1}× |",
            derived.journeys.len(),
            facts.builds.len(),
            ms(lineage),
            ms(full),
            ms(inc),
            ms(publish_before),
            ms(publish),
            ms(before),
            before.as_secs_f64() / f.0.as_secs_f64(),
            ms(after),
            after.as_secs_f64() / f.1.as_secs_f64(),
            before.as_secs_f64() / after.as_secs_f64(),
        );
    }
}
