//! How long `backfill` takes for a simulated year of lana history. A program that prints
//! figures, not a timed test:
//!
//! ```sh
//! cargo run --release --example bench_backfill            # 365 days
//! cargo run --release --example bench_backfill -- 90      # 90 days
//! ```
//!
//! The simulator generates the history at once (calibrated `LanaWorkload`, seed 1, ending at
//! wall-clock now) and serves the real GitHub and Concourse APIs on a loopback port, with its
//! clock standing still. `backfill::run` then reads it back over HTTP, fills a fresh store in a
//! temporary directory and writes OpenMetrics, once at the default 5-minute step (to a byte
//! counter: a year at 5 minutes is several GB) and once at 1 hour (to a file). It prints the time
//! of each phase, the requests made and the size of the output.

use std::time::Instant;

use deploy_journey::backfill::{Options, Progress, run};
use deploy_journey::sim::Sim;
use deploy_journey::sim::clock::{ClockMode, SimClock};
use deploy_journey::sim::engine::World;
use deploy_journey::sim::topology::Topology;
use deploy_journey::sim::workload::LanaWorkload;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let days: i64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(365);
    let now = deploy_journey::clock::unix_now();
    let start = now - days * 86_400;

    let t = Instant::now();
    let mut world = World::new(Topology::builtin("lana").expect("lana topology"), start, 1);
    for (at, a) in LanaWorkload::new(1).generate(start, now + 86_400) {
        world.schedule_action(at, a);
    }
    world.advance_to(now);
    let (commits, builds) = (
        world.tracked_repo().branches.get(&world.topology.tracked_branch).map(|b| b.len()).unwrap_or(0),
        world.concourse.builds.len(),
    );
    println!("simulated {days} days of lana in {:.1} s: {commits} commits, {builds} builds", t.elapsed().as_secs_f64());
    let sim = Sim::new(world, SimClock::new(now, ClockMode::Stepped));
    let (listener, url) = deploy_journey::sim::server::bind(sim.clone(), "127.0.0.1:0").await.expect("bind");
    let served = sim.clone();
    let task = tokio::spawn(async move {
        let _ = deploy_journey::sim::server::serve(served, listener).await;
    });

    let config = format!("{}/examples/lana.yaml", env!("CARGO_MANIFEST_DIR"));
    let env = |k: &str| match k {
        "GITHUB_TOKEN" => Some("ghp_bench".to_string()),
        "CONCOURSE_PASSWORD" => Some("viewer-password".to_string()),
        _ => None,
    };
    for (step, to_file) in [(300, false), (3600, true)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = deploy_journey::config::load(std::path::Path::new(&config), &env).expect("config");
        cfg.repository.api_url = url.clone();
        cfg.concourse.url = url.clone();
        cfg.state_path = dir.path().join("state.db");
        let mut opts = Options::new(start, now);
        opts.step = step;
        // The simulator keeps GitHub's 5000 requests an hour: a year takes ~2 750, so a second
        // run within the hour would wait for the window (as backfill does against GitHub).
        deploy_journey::sim::github_api::reset_rate_limits(&sim);
        let t = Instant::now();
        let report = if to_file {
            let path = dir.path().join("backfill.om");
            let mut f = std::io::BufWriter::new(std::fs::File::create(&path).expect("create"));
            run(&cfg, &opts, &mut f, &Progress::hidden()).await.expect("backfill")
        } else {
            run(&cfg, &opts, &mut std::io::sink(), &Progress::hidden()).await.expect("backfill")
        };
        let total = t.elapsed().as_secs_f64();
        println!(
            "step {step:>4} s: {total:.1} s in all — reading {:.1} s ({} GitHub + {} Concourse requests, {:.0} requests/s), \
             storing {:.2} s, deriving + writing {:.1} s; {} commits, {} builds, {} journeys ({} deployed); \
             {} series, {} samples, {:.1} MB{}",
            report.collect.as_secs_f64(),
            report.github_requests,
            report.concourse_requests,
            (report.github_requests + report.concourse_requests) as f64 / report.collect.as_secs_f64().max(1e-9),
            report.store.as_secs_f64(),
            report.write.as_secs_f64(),
            report.commits,
            report.builds,
            report.journeys,
            report.deployed,
            report.series,
            report.samples,
            report.bytes as f64 / 1e6,
            if to_file { " (to a file)" } else { " (counted, not stored)" },
        );
    }
    task.abort();
}
