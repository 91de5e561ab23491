//! `/metrics` under load: latency percentiles and scrapes per second with one simulated day and
//! one simulated year of lana history behind the snapshot. A program that prints figures, not a
//! timed test:
//!
//! ```sh
//! cargo run --release --example bench_metrics            # 10 s per case
//! cargo run --release --example bench_metrics -- 3       # 3 s per case
//! ```
//!
//! Each history is simulated (`World` + `LanaWorkload`, seed 1), turned into the facts the
//! GitHub and Concourse APIs would show, derived with `examples/lana.yaml`'s core and published
//! as the exporter publishes a snapshot. `/metrics` is served by `http::routes` on a loopback
//! port; 50 concurrent keep-alive clients (and, for reference, one) scrape it in the classic text
//! format and in OpenMetrics, and every response is read to the end and checked for status 200.

use std::sync::Arc;
use std::time::{Duration, Instant};

use deploy_journey::core::journey::{CoreConfig, derive, stage_builds};
use deploy_journey::http::{MetricsContext, Shared, Snapshot};
use deploy_journey::sim::engine::World;
use deploy_journey::sim::observe::facts_from_world;
use deploy_journey::sim::topology::Topology;
use deploy_journey::sim::workload::LanaWorkload;
use deploy_journey::sources::telemetry::SourceTelemetry;

/// Monday 2026-03-02 08:00:00 UTC, as in the tests.
const START: i64 = 1_772_438_400;
const CLIENTS: usize = 50;

fn lana_core() -> (CoreConfig, u64) {
    let path = format!("{}/examples/lana.yaml", env!("CARGO_MANIFEST_DIR"));
    let env = |k: &str| match k {
        "GITHUB_TOKEN" => Some("ghp_bench".to_string()),
        "CONCOURSE_PASSWORD" => Some("bench".to_string()),
        _ => None,
    };
    let cfg = deploy_journey::config::load(std::path::Path::new(&path), &env).unwrap_or_else(|e| panic!("{e}"));
    (cfg.core(), cfg.poll_interval.as_secs())
}

struct History {
    name: &'static str,
    snapshot: Snapshot,
    commits: usize,
    builds: usize,
    took: Duration,
}

fn history(name: &'static str, days: i64, core: &CoreConfig) -> History {
    let t0 = Instant::now();
    let seed = 1;
    let end = START + days * 86_400;
    let mut w = World::new(Topology::builtin("lana").expect("lana topology"), START, seed);
    for (at, a) in LanaWorkload::new(seed).generate(START, end) {
        w.schedule_action(at, a);
    }
    // A few hours more, so the last commits are partly deployed and partly in flight.
    let now = end + 2 * 3600;
    w.advance_to(now);
    let facts = facts_from_world(&w);
    let derived = derive(&facts, core, now);
    let builds = stage_builds(&facts, core, &derived);
    let snapshot = Snapshot {
        etas: Default::default(),
        now,
        environments: core.environments(),
        repository: "GaloyMoney/lana-bank".into(),
        repository_url: String::new(),
        stage_builds: builds,
        derived,
        baseline: Default::default(),
        log_excerpts: Default::default(),
        journey_totals: None,
    };
    History { name, commits: snapshot.derived.journeys.len(), builds: facts.builds.len(), snapshot, took: t0.elapsed() }
}

struct Row {
    history: &'static str,
    format: &'static str,
    clients: usize,
    scrapes: usize,
    secs: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
    bytes: usize,
}

/// `clients` keep-alive clients scrape `url` back to back for `secs`.
async fn load(url: &str, accept: &'static str, clients: usize, secs: f64) -> (Vec<Duration>, usize, f64) {
    let client = reqwest::Client::builder().pool_max_idle_per_host(clients).build().expect("client");
    let t0 = Instant::now();
    let until = t0 + Duration::from_secs_f64(secs);
    let mut tasks = vec![];
    for _ in 0..clients {
        let (client, url) = (client.clone(), url.to_string());
        tasks.push(tokio::spawn(async move {
            let mut lat = vec![];
            let mut bytes = 0;
            while Instant::now() < until {
                let t = Instant::now();
                let r = client.get(&url).header("accept", accept).send().await.expect("GET /metrics");
                assert_eq!(r.status(), 200);
                let body = r.bytes().await.expect("body");
                lat.push(t.elapsed());
                bytes = body.len();
            }
            (lat, bytes)
        }));
    }
    let mut all = vec![];
    let mut bytes = 0;
    for t in tasks {
        let (lat, b) = t.await.expect("client task");
        all.extend(lat);
        bytes = b;
    }
    let took = t0.elapsed().as_secs_f64();
    all.sort();
    (all, bytes, took)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let secs: f64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(10.0);
    let (core, poll) = lana_core();
    let hists = [history("1 day", 1, &core), history("1 year", 365, &core)];
    for h in &hists {
        println!(
            "{:>6} of lana: {} commits, {} builds, {} finished stage builds; simulated and derived in {:.1} s",
            h.name,
            h.commits,
            h.builds,
            h.snapshot.stage_builds.len(),
            h.took.as_secs_f64()
        );
    }
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    // The exporter's server: a multi-threaded runtime on every core, as `serve` runs it.
    let server_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(cores).enable_all().build().unwrap();
    // The clients on a runtime of their own (one thread), so they do not queue behind renders.
    let client_rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();

    let mut rows = vec![];
    for h in hists {
        let shared = Arc::new(Shared::default());
        shared.set_metrics_context(MetricsContext {
            core: core.clone(),
            telemetry: Arc::new(SourceTelemetry::new()),
            poll_interval_secs: poll,
            spans: None,
        });
        shared.publish(h.snapshot);
        let listener = server_rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind");
        let url = format!("http://{}/metrics", listener.local_addr().unwrap());
        let app = deploy_journey::http::routes(shared);
        let server = server_rt.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        for (format, accept) in [
            ("text", "text/plain;version=0.0.4"),
            ("openmetrics", "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
        ] {
            for clients in [1, CLIENTS] {
                let case_secs = if clients == 1 { (secs / 3.0).max(1.0) } else { secs };
                let (lat, bytes, took) = client_rt.block_on(load(&url, accept, clients, case_secs));
                rows.push(Row {
                    history: h.name,
                    format,
                    clients,
                    scrapes: lat.len(),
                    secs: took,
                    p50: pct(&lat, 0.50),
                    p99: pct(&lat, 0.99),
                    max: lat.last().copied().unwrap_or_default(),
                    bytes,
                });
                let r = rows.last().unwrap();
                eprintln!("  done: {} {} x{}: {} scrapes", r.history, r.format, r.clients, r.scrapes);
            }
        }
        server.abort();
    }

    println!();
    println!("| history | format | clients | scrapes | scrapes/s | p50 ms | p99 ms | max ms | body bytes |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {:.1} | {} | {} | {} | {} |",
            r.history,
            r.format,
            r.clients,
            r.scrapes,
            r.scrapes as f64 / r.secs,
            ms(r.p50),
            ms(r.p99),
            ms(r.max),
            r.bytes
        );
    }
    println!();
    println!("{cores} cores; {secs} s per 50-client case; release build: {}", !cfg!(debug_assertions));
}
