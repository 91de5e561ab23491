//! `demo`: the simulator with the calibrated lana workload and the exporter against it, in one
//! process, with no configuration to write.
//!
//! The exporter runs exactly as `serve` does (same config schema, same loop, same HTTP), only
//! its configuration is the shipped `examples/lana.yaml` pointed at the simulator, and its clock
//! is the simulator's: at `speed` 60 a simulated 20-minute testflight takes 20 real seconds, and
//! every duration the exporter reports is in simulated time.
//!
//! The simulated clock starts at a moment derived from the seed alone (a weekday hour with
//! commits just landed and more to come), so the same seed gives the same history whatever the
//! wall-clock time, and builds are running within the first real minute.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::clock::Clock;
use crate::config::{Config, ConfigError};
use crate::sim::Sim;
use crate::sim::clock::{ClockMode, SimClock};
use crate::sim::engine::World;
use crate::sim::topology::{Topology, TopologyError};
use crate::sim::workload::LanaWorkload;

/// The lana example configuration, compiled in so `demo` needs no file.
pub const LANA_CONFIG: &str = include_str!("../examples/lana.yaml");

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("topology: {0}")]
    Topology(#[from] TopologyError),
    #[error("embedded configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("cannot create the state folder: {0}")]
    State(std::io::Error),
    #[error("cannot write the demo configuration {path}: {error}")]
    WriteConfig { path: PathBuf, error: std::io::Error },
    // The cause is in the message; not also a `source`, or it would be printed twice.
    #[error("cannot listen on {addr} (choose another address with --sim-listen): {error}")]
    Listen { addr: String, error: std::io::Error },
}

/// A generated lana world: `history` of calibrated traffic before `now`, and the traffic after
/// `now` scheduled ahead (30 simulated days, or a real day's worth at `speed`).
#[derive(Debug, Clone, Copy)]
pub struct HistoryFigures {
    /// Real time it took to generate the history.
    pub took: Duration,
    pub commits: usize,
    pub builds: usize,
    pub versions: usize,
}

pub fn lana_world(
    topology: &str,
    seed: u64,
    history: Duration,
    speed: f64,
    now: i64,
) -> Result<(World, HistoryFigures), DemoError> {
    let t0 = Instant::now();
    let topo = Topology::load(topology)?;
    let start = now - history.as_secs() as i64;
    let mut world = World::new(topo, start, seed);
    let ahead = (30 * 86_400).max((speed * 86_400.0) as i64);
    for (at, action) in LanaWorkload::new(seed).generate(start, now + ahead) {
        world.schedule_action(at, action);
    }
    // Someone releases to production on working-day afternoons (and reruns a red deploy), so
    // the demo's later environments and its DORA figures move.
    let habit = crate::sim::workload::release_habit(&world.topology, seed, start, now + ahead);
    crate::sim::workload::schedule_all(&mut world, &habit);
    world.advance_to(now);
    let commits = world.tracked_repo().branches.get(&world.topology.tracked_branch).map(|b| b.len()).unwrap_or(0);
    let (builds, versions) = (world.concourse.builds.len(), world.concourse.versions.len());
    Ok((world, HistoryFigures { took: t0.elapsed(), commits, builds, versions }))
}

/// `examples/lana.yaml` with both APIs at `sim_url`, in memory (benchmarks). The credentials
/// are the simulator's viewer user; they are demo values, not secrets.
pub fn demo_config(
    sim_url: &str,
    listen: SocketAddr,
    state_path: PathBuf,
    poll_interval: Duration,
) -> Result<Config, DemoError> {
    let env = |k: &str| match k {
        "GITHUB_TOKEN" => Some("demo-token".to_string()),
        "CONCOURSE_PASSWORD" => Some("viewer-password".to_string()),
        _ => None,
    };
    let mut cfg = crate::config::parse(LANA_CONFIG, "examples/lana.yaml (embedded)", &env)?;
    cfg.repository.api_url = sim_url.to_string();
    cfg.concourse.url = sim_url.to_string();
    cfg.listen = listen;
    cfg.state_path = state_path;
    cfg.poll_interval = poll_interval;
    Ok(cfg)
}

/// The exporter's configuration for the demo: `examples/lana.yaml` with both APIs at `sim_url`,
/// written to `dir/demo.yaml` so that the `watch` and `report` commands the demo prints can use
/// it too. The credentials are the simulator's viewer user, in files beside it: demo values,
/// not secrets.
pub fn write_demo_config(
    dir: &std::path::Path,
    sim_url: &str,
    listen: SocketAddr,
    state_path: &std::path::Path,
    poll_interval: Duration,
) -> Result<(PathBuf, Config), DemoError> {
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|error| DemoError::WriteConfig { path: path.clone(), error })?;
        Ok::<PathBuf, DemoError>(path)
    };
    let token = write("github-token", "demo-token\n")?;
    let password = write("concourse-password", "viewer-password\n")?;
    let mut text = format!(
        "# Written by `deploy-journey demo`: examples/lana.yaml with the simulated CI at {sim_url}.\n{LANA_CONFIG}"
    );
    for (from, to) in [
        ("api_url: https://api.github.com", format!("api_url: {sim_url}")),
        ("url: https://ci.galoy.io", format!("url: {sim_url}")),
        ("token_env: GITHUB_TOKEN", format!("token_file: '{}'", token.display())),
        ("password_env: CONCOURSE_PASSWORD", format!("password_file: '{}'", password.display())),
        ("listen: 0.0.0.0:9853", format!("listen: {listen}")),
        ("state_path: /var/lib/deploy-journey/state.db", format!("state_path: '{}'", state_path.display())),
    ] {
        // The example is compiled in: a setting that moved is a bug here, not a user's problem.
        assert!(text.contains(from), "examples/lana.yaml no longer has {from:?}");
        text = text.replacen(from, &to, 1);
    }
    let path = write("demo.yaml", &text)?;
    let mut cfg = crate::config::load(&path, &|_| None)?;
    // The file keeps lana's 30 s, which is what the demo polls in simulated time; in real time
    // that is `30 s / speed`, below the 1 s floor a real CI's configuration is held to, so it is
    // set here, after validation. `watch --from` takes the interval from the exporter anyway.
    cfg.poll_interval = poll_interval;
    Ok((path, cfg))
}

/// Where the demo's simulated clock starts: derived from the seed only. The first weekday
/// moment (from Monday 2026-03-02, 10:00–13:30 UTC, a busy stretch of lana's calibrated day, in
/// quarter hours) when the newest commit is a backend change that landed 5–20 minutes before,
/// so its tests are running, and the next one lands 3–20 minutes after: at 60× something is in
/// flight from the first second, the next commit comes within a real minute, and a `watch` of
/// the newest commit started at once follows a full pipeline.
pub fn busy_moment(seed: u64) -> i64 {
    use crate::sim::workload::ChangeCategory;
    const MONDAY: i64 = 1_772_409_600; // 2026-03-02 00:00 UTC
    let w = LanaWorkload::new(seed);
    for day in 0..56 {
        if day % 7 >= 5 {
            continue;
        }
        for quarter in 40..=54 {
            let t = MONDAY + day * 86_400 + quarter * 900;
            let before = w.commits(t - 40 * 60, t);
            let Some(last) = before.last() else { continue };
            let after = w.commits(t, t + 20 * 60);
            if matches!(last.category, ChangeCategory::Backend | ChangeCategory::Mixed)
                && last.at <= t - 5 * 60
                && last.at >= t - 20 * 60
                && after.first().is_some_and(|n| n.at >= t + 3 * 60)
            {
                return t;
            }
        }
    }
    MONDAY + 86_400 + 11 * 3600
}

#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// `None`: 127.0.0.1:9853, or a free port when that one is taken.
    pub listen: Option<SocketAddr>,
    pub sim_listen: SocketAddr,
    /// Simulated seconds per real second once live.
    pub speed: f64,
    pub seed: u64,
    pub history: Duration,
    /// Where the store lives; a temporary folder, removed at exit, when `None`.
    pub state: Option<PathBuf>,
}

/// A started demo: the simulator serving, the exporter's configuration ready for `serve`.
pub struct Demo {
    pub sim: Arc<Sim>,
    pub sim_url: String,
    pub config: Config,
    /// `config`, written for the `watch`/`report` commands the demo prints.
    pub config_path: PathBuf,
    /// Where the simulated clock started (see [`busy_moment`]).
    pub started_at: i64,
    /// Why the exporter is not on its default port, when it is not.
    pub listen_note: Option<String>,
    pub history: HistoryFigures,
    // Kept for its Drop: the temporary state folder lives as long as the demo.
    _state_dir: Option<tempfile::TempDir>,
    sim_task: tokio::task::JoinHandle<()>,
}

impl Drop for Demo {
    fn drop(&mut self) {
        self.sim_task.abort();
    }
}

impl Demo {
    /// The simulator's clock, for `serve_with_clock`.
    pub fn clock(&self) -> Clock {
        let sim = self.sim.clone();
        Arc::new(move || sim.now())
    }
}

/// The demo's default exporter address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9853";

/// The exporter's address: as asked; else the default, or any free port when the default is
/// taken (a note says so). An asked-for address that is taken fails later, naming `--listen`.
fn exporter_listen(asked: Option<SocketAddr>) -> (SocketAddr, Option<String>) {
    if let Some(a) = asked {
        return (a, None);
    }
    let default: SocketAddr = DEFAULT_LISTEN.parse().expect("a socket address");
    match std::net::TcpListener::bind(default) {
        Ok(_) => (default, None),
        Err(e) => (
            SocketAddr::from(([127, 0, 0, 1], 0)),
            Some(format!(
                "{DEFAULT_LISTEN} is not free ({e}); the exporter takes a free port (choose one with --listen)"
            )),
        ),
    }
}

/// Generate the history, start the simulator, and prepare the exporter's configuration.
pub async fn start(opts: &DemoOptions) -> Result<Demo, DemoError> {
    let (history, speed, seed) = (opts.history, opts.speed, opts.seed);
    let now = busy_moment(seed);
    let generated = tokio::task::spawn_blocking(move || lana_world("lana", seed, history, speed, now))
        .await
        .map_err(|e| DemoError::State(std::io::Error::other(e.to_string())))??;
    let (state_dir, dir) = match &opts.state {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(DemoError::State)?;
            (None, dir.clone())
        }
        None => {
            let d = tempfile::Builder::new().prefix("deploy-journey-demo-").tempdir().map_err(DemoError::State)?;
            let path = d.path().to_path_buf();
            (Some(d), path)
        }
    };
    let mode = if speed > 0.0 { ClockMode::Running { speed } } else { ClockMode::Stepped };
    let (world, figures) = generated;
    let sim = Sim::new(world, SimClock::new(now, mode));
    let addr = opts.sim_listen.to_string();
    let (listener, sim_url) = crate::sim::server::bind(sim.clone(), &addr)
        .await
        .map_err(|error| DemoError::Listen { addr: addr.clone(), error })?;
    let s = sim.clone();
    let sim_task = tokio::spawn(async move {
        let _ = crate::sim::server::serve(s, listener).await;
    });
    // One poll per simulated 30 s, as the by-hand procedure polls, but at least every 200 ms.
    let poll = Duration::from_secs_f64((30.0 / speed.max(1.0)).max(0.2));
    let (listen, listen_note) = exporter_listen(opts.listen);
    let (config_path, config) = write_demo_config(&dir, &sim_url, listen, &dir.join("state.db"), poll)?;
    Ok(Demo {
        sim,
        sim_url,
        config,
        config_path,
        started_at: now,
        listen_note,
        history: figures,
        _state_dir: state_dir,
        sim_task,
    })
}

#[cfg(test)]
mod tests {
    /// The start moment depends on the seed alone, on a weekday between 10:00 and 13:30 UTC.
    #[test]
    fn busy_moment_is_a_weekday_late_morning_fixed_by_the_seed() {
        for seed in [1, 2, 3, 42] {
            let t = super::busy_moment(seed);
            assert_eq!(t, super::busy_moment(seed));
            let day = t.div_euclid(86_400);
            assert!((day + 3).rem_euclid(7) < 5, "seed {seed}: a weekend");
            let secs = t.rem_euclid(86_400);
            assert!((10 * 3600..=13 * 3600 + 1800).contains(&secs), "seed {seed}: {secs}");
        }
    }
}
