//! What the exporter's first read of Concourse costs on a CI that already has history: the
//! builds-list pages it reads (walking back through `rel="next"`, then forward from the lowest
//! id reached so that no rerun is missed; ARCHITECTURE.md, "Complete build history") and every
//! request of that first cycle, on calibrated lana histories of several lengths. Prints a table:
//!
//! ```sh
//! cargo run --release --example bench_first_read              # 1, 7 and 30 days (seed 10)
//! cargo run --release --example bench_first_read -- 90 3      # 90 days, seed 3
//! ```

use std::sync::Arc;
use std::time::Duration;

use deploy_journey::sim::Sim;
use deploy_journey::sim::clock::{ClockMode, SimClock};
use deploy_journey::sim::engine::World;
use deploy_journey::sim::topology::Topology;
use deploy_journey::sim::workload::{LanaWorkload, schedule_all};
use deploy_journey::sources::concourse::ConcourseSource;
use deploy_journey::sources::telemetry::SourceTelemetry;

/// Monday 2026-03-02 08:00:00 UTC, as in the tests.
const START: i64 = 1_772_438_400;
const BUILDS_ROUTE: &str = "/api/v1/teams/{team}/builds";

fn builds_pages(sim: &Sim) -> u64 {
    sim.stats.rows().iter().filter(|r| r.route == BUILDS_ROUTE && r.status == 200).map(|r| r.count).sum()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut args = std::env::args().skip(1);
    let days: Vec<i64> = match args.next().and_then(|a| a.parse().ok()) {
        Some(d) => vec![d],
        None => vec![1, 7, 30],
    };
    let seed: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let cfg = deploy_journey::demo::demo_config(
        "http://unused",
        "127.0.0.1:0".parse().unwrap(),
        std::env::temp_dir().join("unused.db"),
        Duration::from_secs(30),
    )
    .expect("lana config");

    println!(
        "| history | team builds | first cycle: builds-list pages | first cycle: Concourse requests | next idle cycle |"
    );
    println!("|---|---:|---:|---:|---:|");
    for d in days {
        let end = START + d * 86_400;
        let mut w = World::new(Topology::builtin("lana").expect("lana topology"), START, seed);
        schedule_all(&mut w, &LanaWorkload::new(seed).generate(START, end));
        w.advance_to(end);
        let n = w.concourse.builds.len();
        let sim = Sim::new(w, SimClock::new(end, ClockMode::Stepped));
        let (listener, url) = deploy_journey::sim::server::bind(sim.clone(), "127.0.0.1:0").await.expect("bind");
        let s = sim.clone();
        let task = tokio::spawn(async move {
            let _ = deploy_journey::sim::server::serve(s, listener).await;
        });
        let mut c = cfg.concourse();
        c.url = url;
        let mut source = ConcourseSource::new(c, Arc::new(SourceTelemetry::new())).expect("source");
        source.poll(end).await.expect("first read");
        let (pages, total) = (builds_pages(&sim), sim.stats.total("concourse"));
        source.poll(end).await.expect("idle cycle");
        let idle = sim.stats.total("concourse") - total;
        println!("| {d} d | {n} | {pages} | {total} | {idle} |");
        task.abort();
    }
}
