//! What the poll loop publishes and every reader shares: the latest derived journeys
//! ([`Snapshot`]) and the process state beside them ([`Shared`]: readiness, store health, the
//! clock, the webhook's memory, rendered `/metrics`). `app` writes it; `http`, the sinks and
//! `watch` read it. It knows no HTTP framework and no source.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::core::journey::Derived;

/// What the poll loop publishes after each cycle.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub derived: Derived,
    /// Wall-clock time of the derivation.
    pub now: i64,
    /// Environment names, in stage order.
    pub environments: Vec<String>,
    /// GitHub `owner/name`.
    pub repository: String,
    /// The repository's web address (`https://github.com/owner/name`, or the GitHub Enterprise or
    /// simulator host the API is on), for commit links; empty = on github.com.
    pub repository_url: String,
    /// Predicted arrival per environment of each journey in flight (`core::eta`), by sha.
    pub etas: std::collections::HashMap<String, std::collections::BTreeMap<String, i64>>,
    /// Finished stage builds, for per-build metrics.
    pub stage_builds: Vec<crate::core::journey::StageBuild>,
    /// What retention folded away. Published with the journeys it excludes, in one swap, so a
    /// scrape never sees a pruned journey both live and in the baseline.
    pub baseline: Arc<crate::sinks::metrics::Baseline>,
    /// The log excerpt of failed builds, by build id (read once each, see `app`).
    pub log_excerpts: Arc<std::collections::HashMap<i64, String>>,
    /// The journey counters and histograms of `derived` and `stage_builds`, added up by the
    /// poll loop's `Tally`; `None`: a scrape adds them up.
    pub journey_totals: Option<Arc<crate::sinks::metrics::Totals>>,
}

/// What `/metrics` needs besides the snapshot; fixed for the process.
pub struct MetricsContext {
    pub core: crate::core::journey::CoreConfig,
    pub telemetry: Arc<crate::sources::telemetry::SourceTelemetry>,
    pub poll_interval_secs: u64,
    /// Span export counters, when traces are on.
    pub spans: Option<Arc<crate::sinks::traces::SpanExportStats>>,
}

/// Shared between the poll loop and the handlers.
#[derive(Default)]
pub struct Shared {
    pub(crate) snapshot: RwLock<Arc<Snapshot>>,
    /// Every source has answered once.
    pub(crate) ready: AtomicBool,
    /// The last store write failed: why (cleared by the next write that succeeds).
    pub(crate) store_error: Mutex<Option<String>>,
    /// Store writes that failed since start (`deploy_journey_store_errors_total`).
    pub(crate) store_errors: std::sync::atomic::AtomicU64,
    pub(crate) metrics: std::sync::OnceLock<MetricsContext>,
    pub(crate) webhook: std::sync::OnceLock<WebhookContext>,
    /// Basic auth, when users are configured: its refusals are on `/metrics`.
    pub(crate) basic_auth: std::sync::OnceLock<Arc<crate::webconfig::BasicAuth>>,
    /// Woken by a verified push webhook: poll now instead of at the next interval.
    pub poll_now: tokio::sync::Notify,
    /// The last renderings of `/metrics`: (second, OpenMetrics?, snapshot, body). The snapshot is
    /// held weakly: a rendering must not keep a replaced snapshot's journeys alive.
    pub(crate) rendered: Mutex<Vec<RenderedMetrics>>,
    /// One rendering at a time: concurrent scrapes wait for it instead of all rendering.
    pub(crate) render_flight: tokio::sync::Mutex<()>,
    /// Webhook deliveries already acted on (by `X-GitHub-Delivery` and by signature), so a
    /// replayed delivery triggers nothing.
    pub(crate) deliveries: Mutex<Deliveries>,
    /// Where ages are measured from: `serve`'s clock (the simulator's in the demo and tests, so
    /// an age on `/metrics` is in the same time as the facts). The system clock when unset.
    pub(crate) clock: std::sync::OnceLock<crate::clock::Clock>,
    /// When the clock was set, on the wall and on the clock: `/api/v1/status` measures the
    /// clock's speed from it.
    pub(crate) clock_origin: std::sync::OnceLock<(std::time::Instant, i64)>,
    /// `serve`'s poll interval (real time), for `/api/v1/status`.
    pub(crate) poll_interval: std::sync::OnceLock<std::time::Duration>,
    /// Where the pages link a journey's trace (`links:` in the config).
    pub(crate) links: std::sync::OnceLock<crate::pages::Links>,
    /// The state file, for the settled journeys and deployments that have left memory.
    pub(crate) store: std::sync::OnceLock<Arc<Mutex<crate::store::Store>>>,
}

pub(crate) type RenderedMetrics = (i64, bool, std::sync::Weak<Snapshot>, Arc<String>);

/// How many webhook deliveries are remembered, and for how long. GitHub retries a delivery
/// within minutes and a redelivery by hand keeps its id; a replay later than this costs at most
/// one coalesced poll (see `app::PUSH_POLLS_PER_INTERVAL`).
pub const DELIVERIES_KEPT: usize = 4096;
pub const DELIVERY_MEMORY: std::time::Duration = std::time::Duration::from_secs(3600);

/// A bounded set of recently seen delivery keys that forgets them after [`DELIVERY_MEMORY`] (and
/// the oldest first when full).
#[derive(Default)]
pub struct Deliveries {
    seen: std::collections::HashSet<String>,
    order: std::collections::VecDeque<(std::time::Instant, String)>,
}

impl Deliveries {
    /// Record `keys` as seen at `now`; false when any of them was seen already (a replay).
    pub fn first_time(&mut self, keys: &[String], now: std::time::Instant) -> bool {
        while let Some((t, k)) = self.order.front() {
            if now.duration_since(*t) < DELIVERY_MEMORY && self.order.len() < DELIVERIES_KEPT * 2 {
                break;
            }
            self.seen.remove(k);
            self.order.pop_front();
        }
        if keys.iter().any(|k| self.seen.contains(k)) {
            return false;
        }
        for k in keys {
            self.seen.insert(k.clone());
            self.order.push_back((now, k.clone()));
        }
        true
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

/// A GitHub push webhook's shared secret and the branch it is for.
pub struct WebhookContext {
    pub secret: crate::sources::Secret,
    pub branch: String,
}

impl Shared {
    pub fn publish(&self, s: Snapshot) {
        *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(s);
    }
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
    /// A store write failed: counted, and `/readyz` says so until one succeeds.
    pub fn store_failed(&self, why: &str) {
        self.store_errors.fetch_add(1, Ordering::Relaxed);
        *self.store_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(why.to_string());
    }
    /// A store write succeeded.
    pub fn store_ok(&self) {
        self.store_error.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
    pub fn store_errors(&self) -> u64 {
        self.store_errors.load(Ordering::Relaxed)
    }
    pub fn store_error(&self) -> Option<String> {
        self.store_error.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    pub fn set_clock(&self, c: crate::clock::Clock) {
        let _ = self.clock_origin.set((std::time::Instant::now(), c()));
        let _ = self.clock.set(c);
    }
    pub fn set_poll_interval(&self, d: std::time::Duration) {
        let _ = self.poll_interval.set(d);
    }
    /// Unix seconds on `serve`'s clock.
    pub fn now(&self) -> i64 {
        self.clock.get().map(|c| c()).unwrap_or_else(crate::clock::unix_now)
    }
    pub fn set_metrics_context(&self, m: MetricsContext) {
        let _ = self.metrics.set(m);
    }
    pub fn set_webhook(&self, w: WebhookContext) {
        let _ = self.webhook.set(w);
    }
    pub fn set_basic_auth(&self, a: Arc<crate::webconfig::BasicAuth>) {
        let _ = self.basic_auth.set(a);
    }
    pub fn set_links(&self, l: crate::pages::Links) {
        let _ = self.links.set(l);
    }
    pub fn set_store(&self, s: Arc<Mutex<crate::store::Store>>) {
        let _ = self.store.set(s);
    }
    /// A read of the settled documents, on a blocking thread (the poll loop may hold the store
    /// for a write meanwhile). Without a store (a library user publishing snapshots by hand),
    /// nothing has settled: `f` is not called and the default is returned.
    pub async fn read_settled<T: Default + Send + 'static>(
        &self,
        f: impl FnOnce(&crate::store::Store) -> Result<T, crate::store::StoreError> + Send + 'static,
    ) -> Result<T, String> {
        let Some(store) = self.store.get().cloned() else { return Ok(T::default()) };
        tokio::task::spawn_blocking(move || {
            crate::memory::lean_thread();
            f(&store.lock().unwrap_or_else(|e| e.into_inner()))
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
    }
}
