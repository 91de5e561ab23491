//! Resident memory of `serve` over months of simulated lana history: bounded by `retention`.
//!
//! ```sh
//! cargo build --release && cargo run --release --example bench_footprint [DAYS] [RETENTION]
//! ```
//! (defaults: 180 days, `30d`). The simulator runs in this process at one simulated day per real
//! second; the real `serve` binary (`target/release/deploy-journey`, next to this example) polls
//! it every second with the simulator's clock (`--sim-clock`), so retention prunes in simulated
//! time. Every 10 simulated days it prints the exporter's resident memory and how many journeys
//! it holds.

use std::process::{Command, Stdio};
use std::time::Duration;

use deploy_journey::sim::Sim;
use deploy_journey::sim::clock::{ClockMode, SimClock};
use deploy_journey::sim::engine::World;
use deploy_journey::sim::topology::Topology;
use deploy_journey::sim::workload::LanaWorkload;

const SPEED: f64 = 86_400.0;

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut args = std::env::args().skip(1);
    let days: i64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(180);
    let retention = args.next().unwrap_or_else(|| "30d".into());
    let bin = std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().join("deploy-journey");
    assert!(bin.exists(), "{} missing: run `cargo build --release` first", bin.display());

    // Monday 2026-03-02 08:00 UTC, the calibrated workload for the whole run.
    let start = 1_772_438_400;
    let mut world = World::new(Topology::load("lana").unwrap(), start, 3);
    for (at, action) in LanaWorkload::new(3).generate(start, start + (days + 1) * 86_400) {
        world.schedule_action(at, action);
    }
    let sim = Sim::new(world, SimClock::new(start, ClockMode::Stepped));
    let (listener, url) = deploy_journey::sim::server::bind(sim.clone(), "127.0.0.1:0").await.unwrap();
    let s2 = sim.clone();
    tokio::spawn(async move {
        let _ = deploy_journey::sim::server::serve(s2, listener).await;
    });

    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/lana.yaml"))
        .unwrap()
        .replace("https://api.github.com", &url)
        .replace("https://ci.galoy.io", &url)
        .replace("/var/lib/deploy-journey/state.db", dir.path().join("state.db").to_str().unwrap())
        .replace("0.0.0.0:9853", &format!("127.0.0.1:{port}"))
        .replace("poll_interval: 30s", "poll_interval: 1s ")
        .replace("retention: 90d", &format!("retention: {retention}"));
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, text).unwrap();
    let mut child = Command::new(&bin)
        .args(["serve", "--config"])
        .arg(&config)
        .args(["--sim-clock", &url])
        .env("GITHUB_TOKEN", "ghp_bench")
        .env("CONCOURSE_PASSWORD", "viewer-password")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start serve");
    let pid = child.id();
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if http.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Live from here: a simulated day per real second.
    sim.clock.set_mode(ClockMode::Running { speed: SPEED });
    println!("serve with retention {retention}, {days} simulated lana days at {SPEED}x (a day per second)");
    println!("| simulated day | journeys held | RSS MB |");
    println!("|---:|---:|---:|");
    let mut next_report = 0;
    while sim.now() < start + days * 86_400 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let day = (sim.now() - start) / 86_400;
        if day >= next_report {
            next_report += 10;
            let held = match http.get(format!("{base}/api/v1/journeys?limit=10000")).send().await {
                Ok(r) => {
                    r.json::<serde_json::Value>().await.ok().and_then(|v| v["journeys"].as_array().map(|a| a.len()))
                }
                Err(_) => None,
            };
            let rss = rss_kib(pid).map(|k| format!("{:.1}", k as f64 / 1024.0)).unwrap_or_else(|| "-".into());
            println!("| {day} | {} | {rss} |", held.map(|h| h.to_string()).unwrap_or_else(|| "-".into()));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}
