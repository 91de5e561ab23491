//! How long `backfill` takes for a simulated year of lana history, against the 10 s target
//! (issue #19). A program that prints figures, not a timed test:
//!
//! ```sh
//! cargo run --release --example bench_backfill                # 365 days, default 5-minute step
//! cargo run --release --example bench_backfill -- 90 3600     # 90 days, --step 1h
//! ```
//!
//! The simulator generates the history at once (calibrated `LanaWorkload`, seed 1, ending at
//! wall-clock now) and serves the real GitHub and Concourse APIs on a loopback port, with its
//! clock standing still. `backfill::run` then reads it back over HTTP, fills a fresh store in a
//! temporary directory and writes OpenMetrics to a file there (removed at the end), as the
//! `backfill` command does (`BENCH_KEEP=FILE` writes it to `FILE` and keeps it; `BENCH_PLAIN=1`
//! writes it through a plain buffered file instead of the command's write-behind). It prints the
//! time of each phase (read, store, derive, write), the requests made, the size of the output,
//! and the whole against the 10 s target.

use std::time::Instant;

// The allocator and options the `backfill` command runs with, so the figures are its.
deploy_journey::serve_allocator!();

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
    let step: i64 = std::env::args().nth(2).and_then(|a| a.parse().ok()).unwrap_or(300);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = deploy_journey::config::load(std::path::Path::new(&config), &env).expect("config");
    cfg.repository.api_url = url.clone();
    cfg.concourse.url = url.clone();
    cfg.state_path = dir.path().join("state.db");
    let mut opts = Options::new(start, now);
    opts.step = step;
    // BENCH_KEEP=FILE writes the output there and keeps it, to look at or import.
    let path =
        std::env::var_os("BENCH_KEEP").map(std::path::PathBuf::from).unwrap_or_else(|| dir.path().join("backfill.om"));
    let t = Instant::now();
    let report = {
        // BENCH_PLAIN=1: a plain buffered file instead of `backfill`'s write-behind, to compare.
        let mut f: Box<dyn std::io::Write> = if std::env::var_os("BENCH_PLAIN").is_some() {
            Box::new(std::io::BufWriter::new(std::fs::File::create(&path).expect("create")))
        } else {
            Box::new(deploy_journey::write_behind::WriteBehind::create(&path).expect("create"))
        };
        let r = run(&cfg, &opts, &mut f, &Progress::hidden()).await.expect("backfill");
        std::io::Write::flush(&mut f).expect("flush");
        r
    };
    let total = t.elapsed().as_secs_f64();
    let on_disk = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let requests = report.github_requests + report.concourse_requests;
    println!(
        "{days} days at --step {step}s: {} commits, {} builds, {} journeys ({} deployed)",
        report.commits, report.builds, report.journeys, report.deployed
    );
    println!(
        "  read    {:>6.2} s  ({} GitHub + {} Concourse requests, {:.0} requests/s)",
        report.collect.as_secs_f64(),
        report.github_requests,
        report.concourse_requests,
        requests as f64 / report.collect.as_secs_f64().max(1e-9)
    );
    println!("  store   {:>6.2} s", report.store.as_secs_f64());
    println!("  derive  {:>6.2} s", report.derive.as_secs_f64());
    println!(
        "  write   {:>6.2} s  ({} series, {} samples, {:.1} MB on disk, {:.0} bytes a sample)",
        report.write.as_secs_f64(),
        report.series,
        report.samples,
        on_disk as f64 / 1e6,
        on_disk as f64 / report.samples.max(1) as f64
    );
    println!("  total   {total:>6.2} s  = {:.2} × the 10 s target", total / 10.0);
    task.abort();
}
