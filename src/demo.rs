//! `demo`: the simulator with the calibrated lana workload and the exporter against it, in one
//! process, with no configuration to write.
//!
//! The exporter runs exactly as `serve` does (same config schema, same loop, same HTTP), only
//! its configuration is the shipped `examples/lana.yaml` pointed at the simulator, and its clock
//! is the simulator's: at `speed` 60 a simulated 20-minute testflight takes 20 real seconds, and
//! every duration the exporter reports is in simulated time.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::app::Clock;
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
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
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
    world.advance_to(now);
    let commits = world.tracked_repo().branches.get(&world.topology.tracked_branch).map(|b| b.len()).unwrap_or(0);
    let (builds, versions) = (world.concourse.builds.len(), world.concourse.versions.len());
    Ok((world, HistoryFigures { took: t0.elapsed(), commits, builds, versions }))
}

/// The exporter's configuration for the demo: `examples/lana.yaml` with both APIs at `sim_url`.
/// The credentials are the simulator's viewer user; they are demo values, not secrets.
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

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub listen: SocketAddr,
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

/// Generate the history, start the simulator, and prepare the exporter's configuration.
pub async fn start(opts: &DemoOptions, now: i64) -> Result<Demo, DemoError> {
    let (history, speed, seed) = (opts.history, opts.speed, opts.seed);
    let generated = tokio::task::spawn_blocking(move || lana_world("lana", seed, history, speed, now))
        .await
        .map_err(|e| DemoError::State(std::io::Error::other(e.to_string())))??;
    let (state_dir, state_path) = match &opts.state {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(DemoError::State)?;
            (None, dir.join("state.db"))
        }
        None => {
            let dir = tempfile::Builder::new().prefix("deploy-journey-demo-").tempdir().map_err(DemoError::State)?;
            let path = dir.path().join("state.db");
            (Some(dir), path)
        }
    };
    let mode = if speed > 0.0 { ClockMode::Running { speed } } else { ClockMode::Stepped };
    let (world, figures) = generated;
    let sim = Sim::new(world, SimClock::new(now, mode));
    let addr = opts.sim_listen.to_string();
    let (listener, sim_url) = crate::sim::server::bind(sim.clone(), &addr)
        .await
        .map_err(|source| DemoError::Listen { addr: addr.clone(), source })?;
    let s = sim.clone();
    let sim_task = tokio::spawn(async move {
        let _ = crate::sim::server::serve(s, listener).await;
    });
    // One poll per simulated 30 s, as the by-hand procedure polls, but at least every 200 ms.
    let poll = Duration::from_secs_f64((30.0 / speed.max(1.0)).max(0.2));
    let config = demo_config(&sim_url, opts.listen, state_path, poll)?;
    Ok(Demo { sim, sim_url, config, history: figures, _state_dir: state_dir, sim_task })
}
