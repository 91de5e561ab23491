//! A model of Concourse and GitHub with its own clock, serving their real HTTP APIs.
//!
//! - `model`: the world as plain data; `engine`: how it changes as virtual time passes
//!   (git-resource checks, Concourse scheduling, builds, PR merges);
//! - `topology`: the CI layout, from YAML (`topologies/`); `workload`: what happens (scenarios,
//!   calibrated random lana traffic);
//! - `github_api`, `concourse_api`: the HTTP APIs in their real shapes; `faults`, `stats`,
//!   `control`: fault injection, request accounting and the `/_sim` control endpoints;
//!   `web`: the HTML pages behind build and commit links; `server`: puts them together;
//! - `observe`: a world as the facts the real APIs would show (tests without HTTP);
//! - `clock`: virtual time.
//!
//! Every piece of per-simulator state is a field of [`Sim`]: two simulators in one process
//! share nothing.

pub mod clock;
pub mod concourse_api;
pub mod control;
pub mod deployments;
pub mod engine;
pub mod faults;
pub mod github_api;
pub mod model;
pub mod observe;
pub mod server;
pub mod stats;
pub mod topology;
pub mod web;
pub mod workload;

use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use clock::SimClock;
use engine::World;

/// The running simulator: a world, its clock, and the HTTP-side state.
pub struct Sim {
    pub clock: SimClock,
    world: Mutex<World>,
    pub faults: faults::Faults,
    pub stats: stats::Stats,
    base_url: RwLock<String>,
    /// GitHub API tokens that are accepted (empty = any token, and anonymous, is accepted).
    pub github_tokens: RwLock<Vec<String>>,
    /// GitHub's rate-limit windows per caller.
    github_rate: Mutex<github_api::RateBook>,
    /// Concourse's index on resource versions (what Postgres' JSONB index does for a version
    /// filter), built as versions appear.
    version_index: Mutex<concourse_api::VersionIndex>,
}

impl Sim {
    pub fn new(world: World, clock: SimClock) -> Arc<Sim> {
        Arc::new(Sim {
            clock,
            world: Mutex::new(world),
            faults: faults::Faults::default(),
            stats: stats::Stats::default(),
            base_url: RwLock::new("http://127.0.0.1".into()),
            github_tokens: RwLock::new(vec![]),
            github_rate: Mutex::new(github_api::RateBook::default()),
            version_index: Mutex::new(concourse_api::VersionIndex::default()),
        })
    }

    /// Lock the world after advancing it to the clock's now. Every API handler goes through
    /// this, so what it serves is exactly the state at the current virtual time.
    pub fn world(&self) -> MutexGuard<'_, World> {
        let now = self.clock.now();
        // A panic while holding the lock would be a simulator bug; keep serving what is there.
        let mut w = self.world.lock().unwrap_or_else(|e| e.into_inner());
        w.advance_to(now);
        w
    }

    pub(crate) fn version_index(&self) -> MutexGuard<'_, concourse_api::VersionIndex> {
        self.version_index.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn with_world<R>(&self, f: impl FnOnce(&mut World) -> R) -> R {
        f(&mut self.world())
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// The externally visible base URL (`http://host:port`), used for absolute links.
    pub fn base_url(&self) -> String {
        self.base_url.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_base_url(&self, url: &str) {
        *self.base_url.write().unwrap_or_else(|e| e.into_inner()) = url.trim_end_matches('/').to_string();
        self.with_world(|w| w.concourse.external_url = url.trim_end_matches('/').to_string());
    }
}
