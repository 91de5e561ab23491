//! Resident memory and start-up time of `serve` with a year of lana history in its store, beside
//! Debian's `prometheus-node-exporter` sampled the same way.
//!
//! ```sh
//! cargo build --release && cargo run --release --example bench_footprint [HISTORY_DAYS] [RETENTION] [LIVE_DAYS] [SPEED]
//! ```
//! (defaults: 365 days of history, `90d` — the configuration's default —, 2 live days at 2880×,
//! a simulated minute every real 20 ms). The simulator runs in this process. The history is
//! simulated up to the start (calibrated `LanaWorkload`, seed 3), and what the real APIs show of
//! it (`sim::observe::facts_from_world`) is written to a state file, as months of `serve` would
//! have left it. Then the real `serve` binary (`target/release/deploy-journey`, next to this
//! example) starts on that file, polling the simulator every second on the simulator's clock
//! (`--sim-clock`), so retention prunes in simulated time; the simulator then runs live at
//! `SPEED`. It prints:
//!
//! - how long `serve` took from its start to `/readyz` answering 200 (a year loaded, the first
//!   poll of both sources answered);
//! - every 5 s: the resident memory (VmRSS) of `serve` and of `prometheus-node-exporter`
//!   (`/usr/bin/prometheus-node-exporter`, default collectors, its own port), both scraped
//!   once a second on `/metrics` meanwhile, as Prometheus would, and their ratio;
//! - at the end: the highest and the last figures, and what of each process' resident memory
//!   is file-backed (binary and libraries) and what anonymous (heap and stacks).
//!
//! `BENCH_LOG` sets `serve`'s `RUST_LOG` (default `warn`). `serve` is stopped with SIGTERM, so
//! `_RJEM_MALLOC_CONF=stats_print:true` prints jemalloc's statistics (allocated against
//! resident) as it exits. The environment (`MALLOC_ARENA_MAX`, `_RJEM_MALLOC_CONF`, ...) is passed
//! to both processes unchanged.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deploy_journey::core::journey::Fact;
use deploy_journey::sim::Sim;
use deploy_journey::sim::clock::{ClockMode, SimClock};
use deploy_journey::sim::engine::World;
use deploy_journey::sim::topology::Topology;
use deploy_journey::sim::workload::LanaWorkload;

const NODE_EXPORTER: &str = "/usr/bin/prometheus-node-exporter";

/// A `Name:   123 kB` field of a `/proc` file, in KiB.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn rss_kib(pid: u32) -> Option<u64> {
    kib_field(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?, "VmRSS:")
}

fn mib(kib: Option<u64>) -> String {
    kib.map(|k| format!("{:.1}", k as f64 / 1024.0)).unwrap_or_else(|| "-".into())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// What of a process' resident memory is file-backed (its binary's and libraries' pages) and
/// what anonymous (heap, stacks), in KiB, from `/proc/PID/smaps_rollup`.
fn rss_split(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let (rss, anon) = (kib_field(&text, "Rss:")?, kib_field(&text, "Anonymous:")?);
    Some((rss.saturating_sub(anon), anon))
}

/// Stops the child and its process group (spawned with `process_group(0)`, so a `BENCH_WRAP`
/// profiler's `serve` stops with it) when the benchmark ends, however it ends: SIGTERM first,
/// so `serve` shuts down as it would in production (and jemalloc can print its statistics at
/// exit when `_RJEM_MALLOC_CONF=stats_print:true` is set), then SIGKILL after 5 s.
struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let group = -(self.0.id() as libc::pid_t);
        // SAFETY: kill(2) on the process group our own unreaped child leads.
        unsafe {
            libc::kill(group, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: as above.
        unsafe {
            libc::kill(group, libc::SIGKILL);
        }
        let _ = self.0.wait();
    }
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut args = std::env::args().skip(1);
    let history_days: i64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(365);
    let retention = args.next().unwrap_or_else(|| "90d".into());
    let live_days: f64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(2.0);
    let speed: f64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(2880.0);
    let bin = std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().join("deploy-journey");
    assert!(bin.exists(), "{} missing: run `cargo build --release` first", bin.display());

    // Monday 2026-03-02 08:00 UTC, the calibrated workload for the whole run.
    let start = 1_772_438_400;
    let now = start + history_days * 86_400;
    let end = now + (live_days * 86_400.0) as i64;
    let mut world = World::new(Topology::load("lana").unwrap(), start, 3);
    for (at, action) in LanaWorkload::new(3).generate(start, end + 86_400) {
        world.schedule_action(at, action);
    }
    let t = Instant::now();
    world.advance_to(now);
    let facts = deploy_journey::sim::observe::facts_from_world(&world);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    let mut batch: Vec<Fact> = facts.commits.values().cloned().map(Fact::Commit).collect();
    batch.extend(facts.builds.values().cloned().map(Fact::Build));
    deploy_journey::store::Store::open(&state).unwrap().apply(&batch).unwrap();
    let db_mb = std::fs::metadata(&state).map(|m| m.len() as f64 / 1e6).unwrap_or(0.0);
    println!(
        "history: {history_days} simulated lana days, {} commits and {} builds stored ({db_mb:.1} MB state file, {:.1} s to simulate)",
        facts.commits.len(),
        facts.builds.len(),
        t.elapsed().as_secs_f64()
    );
    let shas: Vec<(String, i64)> = facts.commits.values().map(|c| (c.sha.clone(), c.committer_date)).collect();
    drop(facts);
    drop(batch);

    let sim = Sim::new(world, SimClock::new(now, ClockMode::Stepped));
    let (listener, url) = deploy_journey::sim::server::bind(sim.clone(), "127.0.0.1:0").await.unwrap();
    let s2 = sim.clone();
    tokio::spawn(async move {
        let _ = deploy_journey::sim::server::serve(s2, listener).await;
    });

    let port = free_port();
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/lana.yaml"))
        .unwrap()
        .replace("https://api.github.com", &url)
        .replace("https://ci.galoy.io", &url)
        .replace("/var/lib/deploy-journey/state.db", state.to_str().unwrap())
        .replace("0.0.0.0:9853", &format!("127.0.0.1:{port}"))
        .replace("poll_interval: 30s", "poll_interval: 1s ")
        .replace("retention: 90d", &format!("retention: {retention}"));
    // Pull requests: the simulator answers a year's in minutes, not seconds (each answer lists
    // every Actions run of the year), so by default `serve` runs without reading them here;
    // BENCH_PULLS=1 reads those within retention first, as months of `serve` would have.
    let pulls = std::env::var("BENCH_PULLS").is_ok_and(|v| v == "1");
    let text = if pulls {
        text
    } else {
        text.replace("  token_env: GITHUB_TOKEN\n", "  token_env: GITHUB_TOKEN\n  pull_requests: false\n")
    };
    assert!(pulls || text.contains("pull_requests: false"), "examples/lana.yaml changed shape");
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, text).unwrap();

    // The pull requests a running `serve` would have read (those within retention), through the
    // real GitHub source: journeys settle only with theirs read.
    let t = Instant::now();
    let env = |k: &str| (k == "GITHUB_TOKEN" || k == "CONCOURSE_PASSWORD").then(|| "bench".to_string());
    let cfg = deploy_journey::config::load(&config, &env).unwrap();
    let github = deploy_journey::sources::github::GithubSource::new(
        cfg.github(),
        Arc::new(deploy_journey::sources::telemetry::SourceTelemetry::new()),
    )
    .unwrap();
    let kept_from = now - cfg.retention.as_secs() as i64;
    // Months of polling spread these reads over many rate-limit hours; here they come at once.
    deploy_journey::sim::github_api::set_rate_limit(&sim, Some(u32::MAX));
    let mut origins = vec![];
    for (sha, _) in shas.iter().filter(|(_, at)| pulls && *at >= kept_from) {
        origins.push(Fact::Origin { sha: sha.clone(), origin: github.origin(sha).await.unwrap() });
    }
    deploy_journey::sim::github_api::set_rate_limit(&sim, None);
    deploy_journey::sim::github_api::reset_rate_limits(&sim);
    deploy_journey::store::Store::open(&state).unwrap().apply(&origins).unwrap();
    println!("{} pull requests read and stored in {:.1} s", origins.len(), t.elapsed().as_secs_f64());
    drop(origins);

    let node_port = free_port();
    let node = std::path::Path::new(NODE_EXPORTER).exists().then(|| {
        Kill(
            Command::new(NODE_EXPORTER)
                .process_group(0)
                .arg(format!("--web.listen-address=127.0.0.1:{node_port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start prometheus-node-exporter"),
        )
    });
    if node.is_none() {
        println!("{NODE_EXPORTER} missing (apt-get install -y prometheus-node-exporter): no comparison");
    }

    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    // BENCH_WRAP runs serve under a profiler, e.g. `BENCH_WRAP="heaptrack -o /tmp/serve"`
    // (the RSS figures are then the wrapper's).
    let wrap: Vec<String> =
        std::env::var("BENCH_WRAP").unwrap_or_default().split_whitespace().map(String::from).collect();
    let spawn_serve = || {
        let mut cmd = match wrap.split_first() {
            Some((w, rest)) => {
                let mut c = Command::new(w);
                c.args(rest).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        Kill(
            cmd.process_group(0)
                .args(["serve", "--config"])
                .arg(&config)
                .args(["--sim-clock", &url])
                .env("GITHUB_TOKEN", "ghp_bench")
                .env("CONCOURSE_PASSWORD", "viewer-password")
                .env("RUST_LOG", std::env::var("BENCH_LOG").unwrap_or_else(|_| "warn".into()))
                .stdout(Stdio::null())
                .spawn()
                .expect("start serve"),
        )
    };
    let ready_after = |started: Instant| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            while started.elapsed() < Duration::from_secs(60) {
                if http.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
                    return started.elapsed();
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            panic!("serve not ready within 60 s");
        }
    };
    let serve = spawn_serve();
    let ready = ready_after(started).await;
    println!(
        "ready: /readyz answered 200 {:.0} ms after start (RSS then {} MiB)",
        ready.as_secs_f64() * 1000.0,
        mib(rss_kib(serve.0.id()))
    );

    // Live from here.
    sim.clock.set_mode(ClockMode::Running { speed });
    println!(
        "live: {live_days} simulated days at {speed}x, retention {retention}; both exporters scraped every second"
    );
    // The journeys API is not read meanwhile: serialising every journey would be the largest
    // allocation in the process (the heap profile says so), and no Prometheus reads it.
    println!("| real s | simulated day | serve RSS MiB | node_exporter RSS MiB | serve ÷ node_exporter |");
    println!("|---:|---:|---:|---:|---:|");
    let live = Instant::now();
    let mut next_report = Duration::ZERO;
    let (mut peak, mut peak_node, mut last, mut last_node) = (0u64, 0u64, None, None);
    let mut failed_scrapes = 0;
    while sim.now() < end {
        for u in [format!("{base}/metrics"), format!("http://127.0.0.1:{node_port}/metrics")] {
            if node.is_none() && u.contains(&node_port.to_string()) {
                continue;
            }
            match http.get(&u).send().await {
                Ok(r) if r.status().is_success() => {
                    let _ = r.bytes().await;
                }
                _ => failed_scrapes += 1,
            }
        }
        let (s, n) = (rss_kib(serve.0.id()), node.as_ref().and_then(|n| rss_kib(n.0.id())));
        peak = peak.max(s.unwrap_or(0));
        peak_node = peak_node.max(n.unwrap_or(0));
        (last, last_node) = (s, n);
        if live.elapsed() >= next_report {
            next_report += Duration::from_secs(5);
            let ratio = match (s, n) {
                (Some(s), Some(n)) if n > 0 => format!("{:.2}", s as f64 / n as f64),
                _ => "-".into(),
            };
            println!(
                "| {} | {:.1} | {} | {} | {ratio} |",
                live.elapsed().as_secs(),
                (sim.now() - start) as f64 / 86_400.0,
                mib(s),
                mib(n)
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    println!(
        "serve: highest {} MiB, last {} MiB; node_exporter: highest {} MiB, last {} MiB; last ratio {}; failed scrapes {failed_scrapes}",
        mib(Some(peak)),
        mib(last),
        mib(Some(peak_node)),
        mib(last_node),
        match (last, last_node) {
            (Some(s), Some(n)) if n > 0 => format!("{:.2}", s as f64 / n as f64),
            _ => "-".into(),
        }
    );
    let split = |pid: Option<u32>| match pid.and_then(rss_split) {
        Some((file, anon)) => format!("{} MiB file-backed, {} MiB anonymous", mib(Some(file)), mib(Some(anon))),
        None => "-".into(),
    };
    println!(
        "resident at the end: serve {}; node_exporter {}",
        split(Some(serve.0.id())),
        split(node.as_ref().map(|n| n.0.id()))
    );
    drop(serve);

    // A restart on the state file the run left: a year of history, most of it settled.
    let started = Instant::now();
    let serve = spawn_serve();
    let ready = ready_after(started).await;
    let at_ready = rss_kib(serve.0.id());
    let mut samples = vec![];
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let _ = http.get(format!("{base}/metrics")).send().await.map(|r| r.bytes());
        samples.extend(rss_kib(serve.0.id()));
    }
    println!(
        "restart: ready after {:.0} ms (RSS then {} MiB); RSS over the next 10 s {}–{} MiB; resident then: serve {}",
        ready.as_secs_f64() * 1000.0,
        mib(at_ready),
        mib(samples.iter().min().copied()),
        mib(samples.iter().max().copied()),
        split(Some(serve.0.id())),
    );
    drop(serve);
    drop(node);
}
