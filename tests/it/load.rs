//! Scrapes under load: 200 concurrent `/metrics` clients for 60 seconds against the real
//! `serve` binary while it polls a simulated lana CI with a week of history. Every scrape
//! answers 200, and the exporter's resident memory stays flat.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use deploy_journey::sim::Sim;
use deploy_journey::sim::clock::{ClockMode, SimClock};

use crate::support::{KillOnDrop, client, init_crypto};

const CLIENTS: usize = 200;
const LOAD: Duration = Duration::from_secs(60);

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_scrapers_for_a_minute_while_polling() {
    init_crypto();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    // A week of history, then live at real speed: the exporter polls every second throughout.
    let (world, _) =
        deploy_journey::demo::lana_world("lana", 5, Duration::from_secs(7 * 86_400), 1.0, now).expect("lana world");
    let sim = Sim::new(world, SimClock::new(now, ClockMode::Running { speed: 1.0 }));
    let (listener, sim_url) = deploy_journey::sim::server::bind(sim.clone(), "127.0.0.1:0").await.unwrap();
    let s2 = sim.clone();
    let _sim_task = tokio::spawn(async move {
        let _ = deploy_journey::sim::server::serve(s2, listener).await;
    });
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/lana.yaml"))
        .unwrap()
        .replace("https://api.github.com", &sim_url)
        .replace("https://ci.galoy.io", &sim_url)
        .replace("/var/lib/deploy-journey/state.db", dir.path().join("state.db").to_str().unwrap())
        .replace("0.0.0.0:9853", &format!("127.0.0.1:{port}"))
        .replace("poll_interval: 30s", "poll_interval: 1s ");
    assert!(text.contains("poll_interval: 1s"), "examples/lana.yaml changed shape");
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, text).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_deploy-journey"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("GITHUB_TOKEN", "ghp_load_test")
        .env("CONCOURSE_PASSWORD", "viewer-password")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn serve");
    let pid = child.id();
    let _child = KillOnDrop(child);
    let base = format!("http://127.0.0.1:{port}");
    let c = client();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = c.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
        {
            break;
        }
        assert!(Instant::now() < deadline, "serve not ready within a minute");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let polls_before = sim.stats.total("concourse") + sim.stats.total("github");

    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = vec![];
    for i in 0..CLIENTS {
        let (ok, failed, url) = (ok.clone(), failed.clone(), format!("{base}/metrics"));
        tasks.push(tokio::spawn(async move {
            // One client (one connection) per scraper, as 200 Prometheus servers would be.
            let c = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
            // Half ask for OpenMetrics (with exemplars), as Prometheus does; half for text.
            let accept = if i % 2 == 0 { "application/openmetrics-text; version=1.0.0" } else { "text/plain" };
            while started.elapsed() < LOAD {
                match c.get(&url).header("accept", accept).send().await {
                    Ok(r) if r.status().is_success() => match r.text().await {
                        Ok(body) if body.contains("deploy_journey_lead_time_seconds") => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    },
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    // Resident memory every 5 s while the load runs.
    let mut rss = vec![];
    while started.elapsed() < LOAD {
        tokio::time::sleep(Duration::from_secs(5)).await;
        rss.push(rss_kib(pid));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    let polled = sim.stats.total("concourse") + sim.stats.total("github") - polls_before;
    eprintln!(
        "load: {CLIENTS} clients, {:.0} s: {ok} scrapes ({:.0}/s), {failed} failed; simulator answered {polled} requests; RSS KiB every 5 s: {rss:?}",
        started.elapsed().as_secs_f64(),
        ok as f64 / started.elapsed().as_secs_f64()
    );
    assert_eq!(failed, 0, "scrapes failed under load");
    assert!(ok >= CLIENTS as u64 * 10, "only {ok} scrapes answered in a minute");
    // Still polling under load: about one Concourse and one GitHub request per second.
    assert!(polled >= 60, "the exporter stopped polling under load ({polled} requests)");
    // Flat: after the first samples (connections and caches warm), memory does not keep growing.
    let warm = rss[1];
    let peak = *rss[1..].iter().max().unwrap();
    assert!(peak <= warm + warm / 4 + 8 * 1024, "resident memory grew from {warm} KiB to {peak} KiB under load");
}
