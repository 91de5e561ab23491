//! `serve`: the polling loop and the HTTP server, wired together.
//!
//! Each cycle: poll GitHub and Concourse → persist the new facts (and only then the source
//! cursors, so a cursor is never ahead of what the store holds) → merge them into the in-memory
//! facts → derive journeys → publish a snapshot for the HTTP handlers. A `kill -9` at any point
//! loses nothing a restart cannot re-read: facts already stored are loaded back, and whatever
//! came after the last stored cursor is polled again (facts are idempotent).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::Instrument;

use crate::clock::Clock;
use crate::config::Config;
use crate::core::incremental::Incremental;
use crate::core::journey::{BuildStatus, Fact, Facts, branch_order, stage_builds};
use crate::snapshot::{MetricsContext, Shared, Snapshot};
use crate::sources::concourse::ConcourseSource;
use crate::sources::github::GithubSource;
use crate::sources::telemetry::SourceTelemetry;
use crate::store::{Store, StoreError};
use opentelemetry_sdk::trace::SdkTracerProvider;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot set up source: {0}")]
    Source(#[from] crate::sources::SourceError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("internal task failed: {0}")]
    Join(String),
    #[error(transparent)]
    Traces(#[from] crate::sinks::traces::TraceSinkError),
    #[error(transparent)]
    WebConfig(#[from] crate::webconfig::WebConfigError),
    #[error(
        "store {path}: its newest commit {sha} is unknown to GitHub repository {repository} ({detail}): the state comes from another repository or world. Move the file away, or start with --reset-state to forget it"
    )]
    UnknownHead { path: String, sha: String, repository: String, detail: String },
    #[error(
        "store {path}: its newest build {id} ({job}) is not that build on {concourse}: the state comes from another Concourse, or its database was reset. Move the file away, or start with --reset-state to forget it"
    )]
    UnknownBuild { path: String, id: i64, job: String, concourse: String },
}

/// How `serve` treats its state file.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// Forget every stored fact, cursor, mark and counter before starting (`--reset-state`).
    pub reset_state: bool,
}

/// What the state file is recorded as being for: the configuration's repository, branch,
/// Concourse and team, and a fingerprint of the stages and tracked resources (what derivation
/// depends on besides the facts).
pub fn identity_of(cfg: &Config) -> crate::store::Identity {
    let core = cfg.core();
    // Our own types' Debug forms; the filters as written (a compiled matcher's Debug could
    // change with a library upgrade and would then look like a stage change).
    let resources: Vec<_> = cfg
        .resources
        .iter()
        .map(|r| (&r.name, r.filter.paths(), r.filter.ignore_paths(), r.disable_ci_skip, r.kind, &r.aliases))
        .collect();
    let canonical = format!("{:?}\n{:?}", core.stages, resources);
    crate::store::Identity {
        repository: cfg.repository_slug(),
        branch: cfg.repository.branch.clone(),
        concourse_url: cfg.concourse.url.clone(),
        concourse_team: cfg.concourse.team.clone(),
        stages: crate::store::stages_fingerprint(&canonical),
    }
}

/// Pushes poll at most this many extra times per `poll_interval` (a cycle polls GitHub and
/// Concourse once each when nothing changed), so a flood of webhook deliveries costs at most
/// N + 1 cycles per interval.
pub const PUSH_POLLS_PER_INTERVAL: u32 = 6;
/// The gap between push-triggered cycles is never longer than this.
pub const MAX_PUSH_GAP: Duration = Duration::from_secs(10);

pub const KV_GITHUB_HEAD: &str = "github.head";
pub const KV_GITHUB_ETAG: &str = "github.etag";

/// Run until `shutdown` resolves. `ready_tx` gets the bound address once the server listens.
pub async fn serve(
    cfg: Config,
    listen: SocketAddr,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ready_tx: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
) -> Result<(), AppError> {
    serve_with_clock(cfg, listen, crate::clock::system(), shutdown, ready_tx).await
}

/// [`serve`] with the time taken from `clock`.
pub async fn serve_with_clock(
    cfg: Config,
    listen: SocketAddr,
    clock: Clock,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ready_tx: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
) -> Result<(), AppError> {
    serve_with_options(cfg, listen, clock, ServeOptions::default(), shutdown, ready_tx).await
}

/// Why `/readyz` fails after a store write failed: a full disk said as such.
fn store_reason(e: &AppError) -> String {
    if matches!(e, AppError::Store(s) if s.is_disk_full()) {
        format!("store: disk full ({e})")
    } else {
        format!("store: cannot write the state file ({e})")
    }
}

/// [`serve_with_clock`] with [`ServeOptions`]: start-up in named steps, then the poll loop.
pub async fn serve_with_options(
    cfg: Config,
    listen: SocketAddr,
    clock: Clock,
    options: ServeOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ready_tx: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
) -> Result<(), AppError> {
    // A bad web config stops the start before anything else happens.
    let web = cfg.web_config_file.as_deref().map(crate::webconfig::load).transpose()?.unwrap_or_default();
    // One serve per state file, for the life of the process (the lock dies with it).
    let _lock = crate::store::lock(&cfg.state_path)?;
    let (store, checked) = open_store(&cfg, &options).await?;
    let (facts, head, etag, counters) =
        blocking(&store, |s| Ok((s.load()?, s.get_kv(KV_GITHUB_HEAD)?, s.get_kv(KV_GITHUB_ETAG)?, s.counters()?)))
            .await?;
    let log_excerpts = blocking(&store, |s| s.log_excerpts()).await?;
    let (spans, self_traces) = start_traces(&cfg, &store, &clock).await?;
    tracing::info!(commits = facts.commits.len(), builds = facts.builds.len(), "state loaded");

    let telemetry = Arc::new(SourceTelemetry::new());
    let mut github = GithubSource::new(cfg.github(), telemetry.clone())?;
    let mut concourse = ConcourseSource::new(cfg.concourse(), telemetry.clone())?;
    if checked != crate::store::IdentityCheck::Fresh {
        check_stored_head(&cfg, &mut github, head.as_deref()).await?;
        check_stored_build(&cfg, &mut concourse, &facts).await?;
    }
    github.restore(head, etag.filter(|e| !e.is_empty()), branch_order(&facts));
    concourse.restore(&facts);

    let shared = Arc::new(Shared::default());
    shared.set_clock(clock.clone());
    shared.set_poll_interval(cfg.poll_interval);
    shared.set_metrics_context(MetricsContext {
        core: cfg.core(),
        telemetry: telemetry.clone(),
        poll_interval_secs: cfg.poll_interval.as_secs(),
        spans: spans.as_ref().map(|s| s.stats()),
    });
    shared.set_links(cfg.links.clone());
    shared.set_store(store.clone());
    if let Some(secret) = cfg.repository.webhook_secret.clone() {
        shared.set_webhook(crate::snapshot::WebhookContext { secret, branch: cfg.repository.branch.clone() });
    }
    let baseline =
        Arc::new(crate::sinks::metrics::Baseline::from_rows(counters.into_iter().map(|c| (c.name, c.labels, c.value))));
    let mut publisher = Publisher::new(&cfg, clock.clone());
    publisher.log_excerpts = Arc::new(log_excerpts);
    let mut poller = Poller {
        publisher,
        cfg,
        clock,
        store,
        shared: shared.clone(),
        facts,
        baseline: baseline.clone(),
        spans,
        github,
        concourse,
        answered: (false, false),
        unstored: vec![],
        origin_tries: HashMap::new(),
        excerpt_tries: HashMap::new(),
        persisted: baseline.clone(),
        held: HeldOut::default(),
        prune_due: false,
    };
    // The first poll comes before the first publish, so a start derives its history once, not
    // twice (a year of it takes ~0.3 s). A source slower than FIRST_POLL_WAIT does not hold the
    // server up: the stored facts are published and served meanwhile. The port is taken first,
    // so a taken one stops the start at once.
    let listener =
        tokio::net::TcpListener::bind(listen).await.map_err(|source| AppError::Listen { addr: listen, source })?;
    let mut server_args = Some((listener, web, shutdown, ready_tx));
    let mut server = None;
    let cycle = tracing::info_span!("poll_cycle", facts = tracing::field::Empty);
    let new = {
        let Poller { github, concourse, facts, answered, publisher, shared, baseline, spans, cfg, clock, .. } =
            &mut poller;
        let poll = poll_sources(github, concourse, facts, answered, clock(), true, &cycle);
        tokio::pin!(poll);
        tokio::select! {
            new = &mut poll => Some(new),
            _ = tokio::time::sleep(FIRST_POLL_WAIT) => {
                tracing::info!(wait = ?FIRST_POLL_WAIT, "first poll still out: serving the stored facts meanwhile");
                publish_all(publisher, facts, shared, baseline, spans);
                let (listener, web, shutdown, ready_tx) = server_args.take().expect("server not started yet");
                let started =
                    start_server(listen, listener, web, cfg, shared.clone(), shutdown, ready_tx).await?;
                let mut stop = started.0.clone();
                server = Some(started);
                // Shutdown does not wait for it (its answers are read again at the next start).
                tokio::select! {
                    new = &mut poll => Some(new),
                    _ = stop.changed() => None,
                }
            }
        }
    };
    let polled = new.is_some();
    match new {
        Some(new) => {
            if !poller.store_and_publish(new, &cycle).await && server.is_none() {
                poller.publish();
            }
        }
        None => tracing::info!("shutdown: in-flight poll cancelled"),
    }
    drop(cycle);
    let (stop_rx, server) = match (server, server_args) {
        (Some(s), _) => s,
        (None, Some((listener, web, shutdown, ready_tx))) => {
            start_server(listen, listener, web, &poller.cfg, shared, shutdown, ready_tx).await?
        }
        (None, None) => unreachable!("the server starts in one of the two places"),
    };
    if polled {
        poller.run(stop_rx, true).await;
    }
    tracing::info!("shutting down");
    server.await.map_err(|e| AppError::Join(e.to_string()))?;
    if let Some(x) = poller.spans {
        // What is not acknowledged by then is not marked, so the next start sends it.
        x.shutdown(Duration::from_secs(5)).await;
    }
    if let Some(p) = self_traces {
        let _ = tokio::task::spawn_blocking(move || p.shutdown()).await;
    }
    Ok(())
}

/// Open the state file (replacing a damaged one, or forgetting everything, with
/// `--reset-state`) and check that it is of this repository and Concourse.
async fn open_store(
    cfg: &Config,
    options: &ServeOptions,
) -> Result<(Arc<Mutex<Store>>, crate::store::IdentityCheck), AppError> {
    let state_path = cfg.state_path.clone();
    let identity = identity_of(cfg);
    let reset_state = options.reset_state;
    let (store, checked) = tokio::task::spawn_blocking(move || {
        let mut store = match Store::open(&state_path) {
            // A damaged file cannot be emptied row by row: --reset-state starts a new one.
            Err(StoreError::Damaged { path, findings }) if reset_state => {
                tracing::warn!(%path, %findings, "--reset-state: damaged state file replaced by a new one");
                for suffix in ["", "-wal", "-shm"] {
                    let mut f = state_path.clone().into_os_string();
                    f.push(suffix);
                    match std::fs::remove_file(&f) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                            return Err(StoreError::Damaged { path, findings: format!("{findings}; cannot remove it: {e}") });
                        }
                        _ => {}
                    }
                }
                Store::open(&state_path)?
            }
            r => r?,
        };
        if reset_state {
            store.reset()?;
            tracing::warn!(path = %state_path.display(), "--reset-state: every stored fact, cursor and counter forgotten");
        }
        // Writes the identity too: a state file that cannot be written stops the start here.
        let checked = store.check_identity(&identity)?;
        Ok::<_, StoreError>((store, checked))
    })
    .await
    .map_err(|e| AppError::Join(e.to_string()))??;
    match checked {
        crate::store::IdentityCheck::Adopted => {
            tracing::info!("state file without an identity adopted for this repository and Concourse team")
        }
        crate::store::IdentityCheck::StagesChanged => {
            tracing::warn!(
                "stage definitions changed since the state was written; journeys are derived afresh from the stored facts"
            )
        }
        crate::store::IdentityCheck::Fresh | crate::store::IdentityCheck::Same => {}
    }
    Ok((Arc::new(Mutex::new(store)), checked))
}

/// Span export (and self-instrumentation), when an OTLP endpoint is configured (file or
/// `OTEL_*` variables); none otherwise.
async fn start_traces(
    cfg: &Config,
    store: &Arc<Mutex<Store>>,
    clock: &Clock,
) -> Result<(Option<crate::sinks::traces::SpanExport>, Option<SdkTracerProvider>), AppError> {
    let Some(tc) = crate::sinks::traces::TraceSinkConfig::resolve(&cfg.traces, |k| std::env::var(k).ok())? else {
        return Ok((None, None));
    };
    let mut self_traces = None;
    if tc.self_instrumentation {
        match crate::sinks::traces::install_self_traces(&tc) {
            Some(Ok(p)) => self_traces = Some(p),
            Some(Err(e)) => tracing::warn!(error = %e, "self-instrumentation not started"),
            None => tracing::warn!("self-instrumentation needs the binary's tracing setup; not started"),
        }
    }
    let marked = blocking(store, |s| s.marks(crate::sinks::traces::MARK_KIND)).await?;
    tracing::info!(endpoint = %tc.endpoint, protocol = tc.protocol.as_str(), already_exported = marked.len(), "exporting journey traces");
    let repo_url = cfg.repository_web_url();
    let export = crate::sinks::traces::SpanExport::start(
        &tc,
        store.clone(),
        marked,
        repo_url,
        cfg.repository.branch.clone(),
        clock.clone(),
    )?;
    Ok((Some(export), self_traces))
}

/// Same repository, branch and Concourse is not yet the same world (a state file from another
/// simulator seed, a repository recreated under the same name): the stored head must be a commit
/// GitHub knows. A force-push leaves it known (it is reported as vanished by the poll); a commit
/// GitHub has never seen is another history. When GitHub cannot answer now, the start goes on.
async fn check_stored_head(cfg: &Config, github: &mut GithubSource, head: Option<&str>) -> Result<(), AppError> {
    let Some(h) = head else { return Ok(()) };
    // Bounded: an unreachable GitHub must not hold the start back for its retries.
    match tokio::time::timeout(Duration::from_secs(10), github.commit(h)).await {
        Err(_) => tracing::warn!("cannot check the stored head with GitHub now (no answer in 10s); starting anyway"),
        Ok(Err(e)) if e.kind == crate::sources::ErrorKind::Client => {
            return Err(AppError::UnknownHead {
                path: cfg.state_path.display().to_string(),
                sha: h.chars().take(12).collect(),
                repository: cfg.repository_slug(),
                detail: e.detail,
            });
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot check the stored head with GitHub now; starting anyway"),
        Ok(Ok(_)) => {}
    }
    Ok(())
}

/// Likewise for Concourse: its build ids restart when its database does, and the source's
/// cursor would then skip every new build up to the highest stored id. The newest stored build
/// must be there, as the same job's same build.
async fn check_stored_build(cfg: &Config, concourse: &mut ConcourseSource, facts: &Facts) -> Result<(), AppError> {
    let Some(b) = facts.builds.values().next_back() else { return Ok(()) };
    match tokio::time::timeout(Duration::from_secs(10), concourse.knows_build(b)).await {
        Ok(Ok(false)) => {
            return Err(AppError::UnknownBuild {
                path: cfg.state_path.display().to_string(),
                id: b.id,
                job: format!("{}/{}", b.pipeline, b.job),
                concourse: cfg.concourse.url.clone(),
            });
        }
        Ok(Ok(true)) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot check the newest stored build with Concourse now; starting anyway")
        }
        Err(_) => {
            tracing::warn!(
                "cannot check the newest stored build with Concourse now (no answer in 10s); starting anyway"
            )
        }
    }
    Ok(())
}

/// Bind the listener and serve the routes until shutdown; says the bound address on
/// `ready_tx`. Returns the stop signal the poll loop follows, and the server task.
async fn start_server(
    listen: SocketAddr,
    listener: tokio::net::TcpListener,
    web: crate::webconfig::WebConfig,
    cfg: &Config,
    shared: Arc<Shared>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ready_tx: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
) -> Result<(tokio::sync::watch::Receiver<bool>, tokio::task::JoinHandle<()>), AppError> {
    let bound = listener.local_addr().map_err(|source| AppError::Listen { addr: listen, source })?;
    tracing::info!(%bound, tls = web.tls.is_some(), basic_auth = web.has_users(), max_connections = cfg.server.max_connections, header_read_timeout = ?cfg.server.header_read_timeout, "listening");
    let (app, basic_auth) = web.wrap(crate::http::routes(shared.clone()));
    if let Some(a) = basic_auth {
        shared.set_basic_auth(a);
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut server_stop = stop_rx.clone();
    let stopped = async move {
        let _ = server_stop.changed().await;
    };
    let server = tokio::spawn(crate::server::serve(listener, web.tls.clone(), app, cfg.server.clone(), stopped));
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    if let Some(tx) = ready_tx {
        let _ = tx.send(bound);
    }
    Ok((stop_rx, server))
}

/// Derives journeys from the facts and publishes them, with what the pages need beside them.
struct Publisher {
    core: crate::core::journey::CoreConfig,
    /// What the last derivation learned that the next can keep (`core::incremental`).
    incremental: Incremental,
    /// The journey counters and histograms per segment of history (`sinks::metrics::tally`).
    tally: crate::sinks::metrics::Tally,
    clock: Clock,
    environments: Vec<String>,
    repository: String,
    repository_url: String,
    /// Failed builds' log excerpts, published with each snapshot.
    log_excerpts: Arc<HashMap<i64, String>>,
}

impl Publisher {
    fn new(cfg: &Config, clock: Clock) -> Publisher {
        Publisher {
            core: cfg.core(),
            incremental: Incremental::default(),
            tally: crate::sinks::metrics::Tally::default(),
            clock,
            environments: cfg.environments(),
            repository: cfg.repository_slug(),
            repository_url: cfg.repository_web_url(),
            log_excerpts: Arc::default(),
        }
    }

    fn publish(&mut self, facts: &Facts, shared: &Shared, baseline: &Arc<crate::sinks::metrics::Baseline>) {
        let now = (self.clock)();
        let t = Instant::now();
        let derived = self.incremental.derive(facts, &self.core, now);
        let derive_ms = t.elapsed().as_secs_f64() * 1e3;
        let stage_builds = stage_builds(facts, &self.core, &derived);
        let stage_builds_ms = t.elapsed().as_secs_f64() * 1e3 - derive_ms;
        let etas = crate::core::eta::predict_all(&derived, &self.core, now);
        let etas_ms = t.elapsed().as_secs_f64() * 1e3 - derive_ms - stage_builds_ms;
        let totals = self.tally.update(&derived, &stage_builds, &self.core);
        tracing::debug!(
            derive_ms,
            stage_builds_ms,
            etas_ms,
            totals_ms = t.elapsed().as_secs_f64() * 1e3 - derive_ms - stage_builds_ms - etas_ms,
            segments_added_up = self.tally.recomputed,
            journeys = derived.journeys.len(),
            "derived"
        );
        shared.publish(Snapshot {
            etas,
            derived,
            now,
            environments: self.environments.clone(),
            repository: self.repository.clone(),
            repository_url: self.repository_url.clone(),
            stage_builds,
            baseline: baseline.clone(),
            log_excerpts: self.log_excerpts.clone(),
            journey_totals: Some(Arc::new(totals)),
        });
        // The previous snapshot and the derivation's scratch are freed by now.
        crate::memory::release_free();
    }
}

/// The poll loop's state: the sources, the facts in memory and what is stored of them.
struct Poller {
    cfg: Config,
    clock: Clock,
    publisher: Publisher,
    store: Arc<Mutex<Store>>,
    shared: Arc<Shared>,
    facts: Facts,
    baseline: Arc<crate::sinks::metrics::Baseline>,
    spans: Option<crate::sinks::traces::SpanExport>,
    github: GithubSource,
    concourse: ConcourseSource,
    /// Whether each source (GitHub, Concourse) has answered once: ready when both have.
    answered: (bool, bool),
    /// Facts a failed store write could not keep. The sources' cursors have already moved past
    /// them, so they are retried with the next batch instead of being read again.
    unstored: Vec<Fact>,
    /// When each commit's pull request was last asked for (a failed or unsettled read waits
    /// [`RETRY_POLLS`] poll intervals before the next).
    origin_tries: HashMap<String, i64>,
    /// When each failed build's log was last asked for (a failed read waits [`RETRY_POLLS`]
    /// poll intervals).
    excerpt_tries: HashMap<i64, i64>,
    /// The counters and histograms the store holds (`baseline` adds the held journeys' to them).
    persisted: Arc<crate::sinks::metrics::Baseline>,
    /// What memory let go of while the store keeps it (`core::held`).
    held: HeldOut,
    /// Held journeys came back: settle (or hold) again this cycle.
    prune_due: bool,
}

/// Journeys held in the store (`core::held`): their facts left memory, the store keeps them.
#[derive(Debug, Default)]
struct HeldOut {
    commits: std::collections::HashSet<String>,
    builds: std::collections::HashSet<i64>,
    /// Jobs (pipeline, job) whose builds can change a held journey.
    wakes: std::collections::BTreeSet<(String, String)>,
    /// What they counted (counters and histograms): published on top of the persisted baseline,
    /// never stored (after a restart their facts are loaded and count again).
    rows: Vec<(String, String, f64)>,
    /// When retention reaches a held journey (`HeldPlan::due`, the earliest): it brings them
    /// back to forget it.
    oldest: Option<i64>,
    /// A fact that could change them came, and they could not be brought back then.
    stale: bool,
}

impl HeldOut {
    /// A copy in fresh allocations (see `Facts::compacted`).
    fn compacted(&self) -> HeldOut {
        HeldOut {
            commits: self.commits.iter().cloned().collect(),
            builds: self.builds.iter().copied().collect(),
            wakes: self.wakes.clone(),
            rows: self.rows.clone(),
            oldest: self.oldest,
            stale: self.stale,
        }
    }

    /// Could this fact change a held journey? (Then their facts come back.)
    fn woken_by(&self, f: &Fact) -> bool {
        match f {
            Fact::Commit(c) => self.commits.contains(&c.sha),
            Fact::Build(b) => {
                self.builds.contains(&b.id) || self.wakes.contains(&(b.pipeline.to_string(), b.job.to_string()))
            }
            Fact::Vanished { sha, .. } | Fact::Origin { sha, .. } => self.commits.contains(sha),
            // How far back a job's history is known changes what is known of old commits.
            Fact::Horizon(_) => true,
        }
    }
}

/// How long a start waits for its first poll before serving the stored facts.
const FIRST_POLL_WAIT: Duration = Duration::from_secs(2);

/// Failed builds whose log excerpt is read per cycle at most (one request each).
const EXCERPTS_PER_CYCLE: usize = 3;

/// The commits whose pull request to read now, newest first, at most `budget`: those with no
/// origin yet, or an unsettled one merged less than [`ORIGIN_SETTLE`] ago, not vanished, and
/// not tried in the last `retry` seconds. `new` holds commits not applied yet.
pub fn origin_candidates(
    facts: &Facts,
    new: &[Fact],
    tries: &HashMap<String, i64>,
    retry: i64,
    now: i64,
    budget: usize,
) -> Vec<String> {
    let wanted = |sha: &str| match facts.origins.get(sha) {
        None => true,
        Some(o) => o.unsettled() && o.pull().is_some_and(|p| now - p.merged_at < ORIGIN_SETTLE),
    };
    let mut candidates: Vec<(i64, &str)> = facts
        .commits
        .values()
        .map(|c| (c.committer_date, c.sha.as_str()))
        .chain(new.iter().filter_map(|f| match f {
            Fact::Commit(c) => Some((c.committer_date, c.sha.as_str())),
            _ => None,
        }))
        .filter(|(_, sha)| !facts.vanished.contains_key(*sha) && wanted(sha))
        .filter(|(_, sha)| tries.get(*sha).is_none_or(|t| now - t >= retry))
        .collect();
    candidates.sort_unstable_by(|a, b| b.cmp(a));
    candidates.dedup();
    candidates.into_iter().take(budget).map(|(_, s)| s.to_string()).collect()
}

/// Which of a settling plan's journeys and deployments get a document (indices into the
/// snapshot's journeys and deployments): those retention keeps. A first start on a long
/// history settles a year at once, and serializing the part retention forgets at once was the
/// largest item of that start's peak (`docs/benchmarks.md`, session 15).
fn documented(snap: &Snapshot, plan: &crate::retention::Plan, forget_before: i64) -> (Vec<usize>, Vec<usize>) {
    let journeys = (snap.derived.journeys.iter().enumerate())
        .filter(|(_, j)| j.commit_time >= forget_before && plan.commits.contains(&j.sha))
        .map(|(i, _)| i)
        .collect();
    let deployments = (snap.derived.deployments.iter().enumerate())
        .filter(|(_, d)| d.end >= forget_before && plan.builds.contains(&d.build_id))
        .map(|(i, _)| i)
        .collect();
    (journeys, deployments)
}

/// The documents of what a settling plan takes out of memory (the [`documented`] indices):
/// each pruned journey's view as the API shows it (log excerpts included) with the commits it
/// took along, and each pruned deployment's view. Their facts are gone afterwards, so these are
/// what pages read. Serialized one at a time as the store writes them.
fn settled_documents<'a>(
    snap: &'a Snapshot,
    journeys: &'a [usize],
    deployments: &'a [usize],
) -> (impl Iterator<Item = crate::store::SettledJourney> + 'a, impl Iterator<Item = crate::store::SettledDeployment> + 'a)
{
    let mut carried: HashMap<&str, Vec<(&str, &str)>> = HashMap::new();
    for j in &snap.derived.journeys {
        if let Some(by) = j.carried_by.as_deref() {
            carried.entry(by).or_default().push((&j.sha, &j.subject));
        }
    }
    let journeys = journeys.iter().map(move |&i| {
        let j = &snap.derived.journeys[i];
        crate::store::SettledJourney {
            sha: j.sha.clone(),
            commit_time: j.commit_time,
            ended: j.ended,
            view_json: serde_json::to_string(&crate::view::JourneyView::from(j, snap)).unwrap_or_default(),
            carried_json: serde_json::to_string(carried.get(j.sha.as_str()).map_or(&[][..], |v| v)).unwrap_or_default(),
        }
    });
    let all = &snap.derived.deployments;
    let deployments = deployments.iter().map(move |&i| {
        let d = &all[i];
        crate::store::SettledDeployment {
            build_id: d.build_id,
            environment: d.environment.clone(),
            end: d.end,
            view_json: serde_json::to_string(&crate::view::DeploymentView::new(d, all)).unwrap_or_default(),
        }
    });
    (journeys, deployments)
}

/// A read that failed (a commit's pull request, a build's log) is tried again after this many
/// poll intervals.
const RETRY_POLLS: i64 = 10;
/// An unsettled reading (Actions runs of the final head still running) is re-read for this
/// long after the merge; a run still going after that is left as it was last seen.
const ORIGIN_SETTLE: i64 = 6 * 3600;

impl Poller {
    /// [`publish_all`] of the poller's facts.
    fn publish(&mut self) {
        publish_all(&mut self.publisher, &self.facts, &self.shared, &self.baseline, &mut self.spans);
    }

    /// Cycle until `stop` says so: poll, store, publish, prune, wait. `polled`: the first
    /// cycle's poll was made already (at the start).
    async fn run(&mut self, mut stop: tokio::sync::watch::Receiver<bool>, mut polled: bool) {
        let mut next_prune = 0i64;
        // GitHub is polled every `github_poll_interval` (clock seconds) and whenever a push
        // webhook wakes the loop; Concourse every cycle.
        let github_every = self.cfg.github_poll_interval().as_secs() as i64;
        let half_cycle = (self.cfg.poll_interval.as_secs() / 2) as i64;
        let mut next_github = i64::MIN;
        let mut pushed = false;
        let mut last_push_cycle: Option<Instant> = None;
        loop {
            let started = Instant::now();
            let now = (self.clock)();
            // Half a cycle of slack: a cycle that comes a little early still polls.
            let poll_github = std::mem::take(&mut pushed) || now.saturating_add(half_cycle) >= next_github;
            if poll_github {
                next_github = now.saturating_add(github_every);
            }
            // Self-instrumentation (when on): one trace per poll cycle.
            let cycle = tracing::info_span!("poll_cycle", facts = tracing::field::Empty);
            // Shutdown does not wait for a slow cycle: the half-polled answers are dropped
            // before anything is stored (the sources re-read them at the next start).
            if !std::mem::take(&mut polled) {
                let new = tokio::select! {
                    new = self.poll(now, poll_github, &cycle) => new,
                    _ = stop.changed() => {
                        tracing::info!("shutdown: in-flight poll cancelled");
                        break;
                    }
                };
                self.store_and_publish(new, &cycle).await;
            }
            // Retention, at most hourly, before the extra reads below: a start on a long
            // history frees what it prunes before anything else is allocated beside it (glibc
            // gives back only whole free pages, so what is allocated amid the peak pins it).
            let due = std::mem::take(&mut self.prune_due);
            if due || now >= next_prune {
                // Hourly; every cycle while old journeys wait for their pull request (a first
                // start reads them a budget at a time), and in the cycle held journeys came back.
                next_prune = if self.prune(now).await { now } else { now + 3600 };
            }
            // The large first load is over (and settled, or nothing was to settle).
            crate::memory::started();
            // After the cycle is published (and readiness decided): the extra reads of new
            // commits' pull requests and failed builds' logs never hold up either.
            if poll_github && self.answered.0 && self.cfg.repository.pull_requests {
                let origins =
                    self.read_origins(now, &[]).instrument(tracing::info_span!(parent: &cycle, "github.origins")).await;
                if !origins.is_empty() {
                    self.store_and_publish(origins, &cycle).await;
                }
            }
            if self.answered.1 {
                self.read_excerpts(now).instrument(tracing::info_span!(parent: &cycle, "concourse.logs")).await;
            }
            tracing::debug!(took_ms = started.elapsed().as_millis() as u64, "poll cycle");
            drop(cycle);
            match self.wait(started, &mut last_push_cycle, &mut stop).await {
                Wake::Interval => {}
                Wake::Push => pushed = true,
                Wake::Stop => break,
            }
        }
    }

    /// One poll of the sources: the new facts of those that answered.
    async fn poll(&mut self, now: i64, poll_github: bool, cycle: &tracing::Span) -> Vec<Fact> {
        let Poller { github, concourse, facts, answered, .. } = self;
        poll_sources(github, concourse, facts, answered, now, poll_github, cycle).await
    }

    /// The pull requests of commits whose origin is not known yet (or still settling), newest
    /// first, as many as [`GithubSource::origin_budget`] allows; on a poll where nothing is
    /// missing this makes no request.
    async fn read_origins(&mut self, now: i64, new: &[Fact]) -> Vec<Fact> {
        let budget = self.github.origin_budget();
        if budget == 0 {
            return vec![];
        }
        let retry = self.retry_after();
        let picked = origin_candidates(&self.facts, new, &self.origin_tries, retry, now, budget);
        let mut out = vec![];
        for sha in picked {
            self.origin_tries.insert(sha.clone(), now);
            match self.github.origin(&sha).await {
                Ok(origin) => out.push(Fact::Origin { sha, origin }),
                Err(e) => {
                    // Counted by the source; the commit is asked for again after `retry`.
                    tracing::warn!(error = %e, sha = %sha, "github: reading the commit's pull request failed");
                    break;
                }
            }
        }
        // Forget tries of commits no longer followed (retention).
        let facts = &self.facts;
        self.origin_tries.retain(|sha, t| now - *t < retry || facts.commits.contains_key(sha));
        out
    }

    /// Seconds before a failed read is tried again.
    fn retry_after(&self) -> i64 {
        (self.cfg.poll_interval.as_secs() as i64).max(1) * RETRY_POLLS
    }

    /// The log excerpts of finished failed or errored builds of the stages' jobs that have none
    /// yet, newest first, [`EXCERPTS_PER_CYCLE`] at most, each read once (one request, stored).
    /// They show from the next publish on.
    async fn read_excerpts(&mut self, now: i64) {
        let retry = self.retry_after();
        let core = &self.publisher.core;
        let have = &self.publisher.log_excerpts;
        let mut wanted: Vec<i64> = self
            .facts
            .builds
            .values()
            .rev()
            .filter(|b| matches!(b.status, BuildStatus::Failed | BuildStatus::Errored))
            .filter(|b| core.stage_of_job(&b.pipeline, &b.job).is_some())
            .filter(|b| !have.contains_key(&b.id))
            .filter(|b| self.excerpt_tries.get(&b.id).is_none_or(|t| now - t >= retry))
            .map(|b| b.id)
            .take(EXCERPTS_PER_CYCLE)
            .collect();
        if wanted.is_empty() {
            return;
        }
        let mut got = vec![];
        for id in wanted.drain(..) {
            self.excerpt_tries.insert(id, now);
            match self.concourse.failure_excerpt(id).await {
                Ok(text) => got.push((id, text)),
                // Gone (reaped, or its job no longer visible): nothing to show, and nothing to
                // ask again every few cycles.
                Err(e) if e.kind == crate::sources::ErrorKind::NotFound => got.push((id, String::new())),
                Err(e) => {
                    // Counted by the source; asked again after `retry`.
                    tracing::warn!(error = %e, build_id = id, "concourse: reading a failed build's log failed");
                    break;
                }
            }
        }
        if got.is_empty() {
            return;
        }
        let rows = got.clone();
        let stored = blocking(&self.store, move |s| {
            for (id, text) in &rows {
                s.put_log_excerpt(*id, text)?;
            }
            Ok(())
        })
        .await;
        if let Err(e) = stored {
            tracing::error!(error = %e, "cannot store build log excerpts; will read them again");
            self.shared.store_failed(&store_reason(&e));
            return;
        }
        let mut all = (*self.publisher.log_excerpts).clone();
        all.extend(got);
        self.publisher.log_excerpts = Arc::new(all);
        let facts = &self.facts;
        self.excerpt_tries.retain(|id, t| now - *t < retry || facts.builds.contains_key(id));
    }

    /// Store the new facts with the cursor that covers them, then apply and publish them. A
    /// batch that cannot be stored is not applied (memory and disk stay in step) and is
    /// stored again with the next cycle's (facts are idempotent). Returns whether it published.
    async fn store_and_publish(&mut self, mut new: Vec<Fact>, cycle: &tracing::Span) -> bool {
        let (head, etag) = self.github.cursor();
        if !self.unstored.is_empty() {
            let mut b = std::mem::take(&mut self.unstored);
            b.append(&mut new);
            new = b;
        }
        let batch = new.clone();
        let persisted = blocking(&self.store, move |s| {
            // Facts and the cursor that covers them in one transaction: a cursor is never
            // ahead of what is stored.
            let mut kv: Vec<(&str, &str)> = vec![];
            if let Some(h) = &head {
                kv.push((KV_GITHUB_HEAD, h));
            }
            // An ETag belongs to the head it came with; none means none (empty is ignored).
            kv.push((KV_GITHUB_ETAG, etag.as_deref().unwrap_or("")));
            s.apply_with_kv(&batch, &kv)
        })
        .instrument(tracing::info_span!(parent: cycle, "store.write", facts = new.len()))
        .await;
        match persisted {
            Ok(()) => {
                self.shared.store_ok();
                // A fact that can change a held journey brings the held facts back (with these,
                // which are stored now) instead.
                let woken = !self.held.commits.is_empty() && new.iter().any(|f| self.held.woken_by(f));
                // Brought back: loaded and published with the new facts already.
                let brought = woken && self.bring_back("a new fact can change them").await;
                self.held.stale |= woken && !brought;
                let changed = !brought && new.into_iter().fold(false, |acc, f| self.facts.apply(f) | acc);
                let publish = !brought && (changed || self.answered != (false, false));
                if publish {
                    self.publish();
                }
                if self.answered == (true, true) && !self.shared.is_ready() {
                    self.shared.set_ready();
                    tracing::info!("ready: every source answered");
                }
                brought || publish
            }
            Err(e) => {
                tracing::error!(error = %e, facts = new.len(), "cannot store facts; will retry next cycle");
                self.shared.store_failed(&store_reason(&e));
                self.unstored = new;
                false
            }
        }
    }

    /// Load every stored fact back into memory, the held journeys' with the rest, and publish:
    /// what changed them is derived as for any journey, and the next [`Poller::prune`] settles
    /// or holds them again. False (and nothing changed) when the store cannot be read.
    async fn bring_back(&mut self, why: &str) -> bool {
        let loaded = blocking(&self.store, |s| {
            let marks = s.marks(crate::sinks::traces::MARK_KIND)?;
            Ok((s.load()?, marks))
        })
        .await;
        match loaded {
            Ok((facts, marks)) => {
                tracing::info!(why, held = self.held.commits.len(), "held journeys brought back into memory");
                self.facts = facts;
                self.held = HeldOut::default();
                self.baseline = self.persisted.clone();
                if let Some(x) = self.spans.as_mut() {
                    // Their exported spans are known again, so none is exported twice.
                    let facts = &self.facts;
                    x.remember(
                        marks.into_iter().filter(|k| facts.commits.contains_key(k.split('/').next().unwrap_or(""))),
                    );
                }
                self.prune_due = true;
                self.publish();
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot bring held journeys back; will retry");
                self.shared.store_failed(&store_reason(&e));
                self.prune_due = true;
                false
            }
        }
    }

    /// Settling and retention: journeys older than the memory window (`Config::memory_window`)
    /// leave memory; what they counted folds into the persisted baseline, and their views (and
    /// their deployments') are stored as documents, in the same transaction that deletes their
    /// facts; documents older than `retention` are forgotten.
    ///
    /// A journey an environment's running version lacks (or that waits at its gate) is *held*
    /// instead (`core::held`): it leaves memory, and the store keeps its facts, while what the
    /// gauges of now count of it stays with the facts in memory. A build that can change it
    /// brings the held facts back (`HeldOut::woken_by`). So memory follows the window, not how
    /// far behind the slowest environment is.
    ///
    /// Plans on the published snapshot, which is of the same facts (every change is published
    /// before this runs). True when journeys old enough to settle wait for a read first.
    async fn prune(&mut self, now: i64) -> bool {
        // Saturating: no window, however long, wraps round into the future.
        let ago = |d: Duration| now.saturating_sub(i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let (cutoff, forget_before) = (ago(self.cfg.memory_window()), ago(self.cfg.retention));
        // Retention is due for a held journey, or one may have changed unseen: everything comes
        // back first (then a held journey near the end of retention is forgotten, not held).
        if (self.held.stale || self.held.oldest.is_some_and(|t| t < forget_before))
            && !self.bring_back("retention or a missed change").await
        {
            return false;
        }
        // A journey settles with its pull request read (unless retention forgets it first):
        // what settles is never read again.
        let pinned: std::collections::BTreeSet<String> = if self.cfg.repository.pull_requests {
            let wanted = origin_candidates(&self.facts, &[], &HashMap::new(), 0, now, usize::MAX);
            let facts = &self.facts;
            wanted
                .into_iter()
                .filter(|sha| facts.commits.get(sha).is_some_and(|c| c.committer_date >= forget_before))
                .collect()
        } else {
            Default::default()
        };
        let waiting = pinned.iter().any(|sha| self.facts.commits.get(sha).is_some_and(|c| c.committer_date < cutoff));
        let snap = self.shared.snapshot();
        let hold_from = forget_before.saturating_add(crate::retention::HOLD_MARGIN);
        let plan = crate::retention::plan_settling(
            &self.facts,
            &snap.derived,
            &snap.stage_builds,
            &self.publisher.core,
            cutoff,
            hold_from,
            &pinned,
        );
        if plan.out.is_empty() {
            return waiting;
        }
        let crate::retention::Settling { out, settled, held } = plan;
        // Every journey that leaves memory is read from its document from now on. The store
        // writes them as they are serialized; the old snapshot goes with the closure, so it is
        // gone when the smaller one is published, for its pages to be given back then.
        let (documented_journeys, documented_deployments) = documented(&snap, &out, forget_before);
        let (c, b, rows) = (settled.commits.clone(), settled.builds.clone(), settled.rows.clone());
        let deltas: Vec<crate::store::Counter> = rows
            .iter()
            .map(|(n, l, v)| crate::store::Counter { name: n.clone(), labels: l.clone(), value: *v })
            .collect();
        let pruned = blocking(&self.store, move |s| {
            let (journeys, deployments) = settled_documents(&snap, &documented_journeys, &documented_deployments);
            s.settle(
                cutoff,
                |item| match item {
                    crate::store::PruneItem::Commit(sha) => !c.contains(sha),
                    crate::store::PruneItem::Build(id) => !b.contains(&id),
                },
                &deltas,
                journeys,
                deployments,
                forget_before,
            )
        })
        .await;
        match pruned {
            Ok(p) => {
                let before = self.facts.commits.len() + self.facts.builds.len();
                crate::retention::apply(&mut self.facts, &out);
                let most_left = self.facts.commits.len() + self.facts.builds.len() < before / 2;
                let mut persisted = (*self.persisted).clone();
                persisted.add(rows);
                self.persisted = Arc::new(persisted);
                let h = &mut self.held;
                h.oldest = held.due.into_iter().chain(h.oldest).min();
                h.commits.extend(held.commits);
                h.builds.extend(held.builds);
                h.wakes.extend(held.wakes);
                h.rows.extend(held.rows);
                let mut all = (*self.facts.held).clone();
                all.extend(held.records);
                self.facts.held = Arc::new(all);
                let mut b = (*self.persisted).clone();
                b.add(h.rows.iter().cloned());
                self.baseline = Arc::new(b);
                // The smaller facts and the larger baseline are published together.
                self.publisher.publish(&self.facts, &self.shared, &self.baseline);
                if most_left {
                    // Most of memory just left (a first start on a long history), and the large
                    // snapshot with it: what stays is copied into fresh allocations and derived
                    // afresh, so the allocator can give back whole pages instead of keeping the
                    // survivors scattered over the pages of the large load.
                    self.facts = self.facts.compacted();
                    self.held = self.held.compacted();
                    self.persisted = Arc::new((*self.persisted).clone());
                    self.baseline = Arc::new((*self.baseline).clone());
                    self.origin_tries.shrink_to_fit();
                    self.excerpt_tries.shrink_to_fit();
                    self.publisher.incremental = Incremental::default();
                    self.publisher.tally = crate::sinks::metrics::Tally::default();
                    self.publisher.publish(&self.facts, &self.shared, &self.baseline);
                }
                let (facts, held) = (&self.facts, &self.held.commits);
                if let Some(x) = self.spans.as_mut() {
                    // A held commit's keys stay known: its spans handed to the exporter and not
                    // yet acknowledged (a collector outage) must not be offered again when it
                    // comes back.
                    x.retain_commits(|sha| facts.commits.contains_key(sha) || held.contains(sha));
                }
                tracing::info!(
                    commits = p.commits,
                    builds = p.builds,
                    held = self.held.commits.len(),
                    "settled journeys left memory"
                );
            }
            Err(e) => {
                tracing::error!(error = %e, "settling failed; will retry");
                self.shared.store_failed(&store_reason(&e));
            }
        }
        waiting
    }

    /// Wait for the next cycle: the poll interval, a push webhook (coalesced), or shutdown.
    async fn wait(
        &self,
        started: Instant,
        last_push_cycle: &mut Option<Instant>,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Wake {
        // Capped so that with a long poll_interval a push still shows up within seconds.
        let push_gap = (self.cfg.poll_interval / PUSH_POLLS_PER_INTERVAL).min(MAX_PUSH_GAP);
        let wait = self.cfg.poll_interval.saturating_sub(started.elapsed()).max(Duration::from_millis(100));
        tokio::select! {
            _ = tokio::time::sleep(wait) => Wake::Interval,
            _ = self.shared.poll_now.notified() => {
                // Pushes are coalesced: a cycle starts at most every poll_interval / N however
                // many arrive (the Notify keeps one wake-up for those during the wait).
                // Measured from the last push-triggered cycle, so a push after a quiet spell
                // polls at once.
                if let Some(earliest) = last_push_cycle.map(|t| t + push_gap)
                    && earliest > Instant::now()
                {
                    tracing::debug!(wait_ms = (earliest - Instant::now()).as_millis() as u64, "push webhook: polling soon");
                    tokio::select! {
                        _ = tokio::time::sleep_until(earliest.into()) => {}
                        _ = stop.changed() => return Wake::Stop,
                    }
                }
                tracing::debug!("push webhook: polling now");
                *last_push_cycle = Some(Instant::now());
                Wake::Push
            }
            _ = stop.changed() => Wake::Stop,
        }
    }
}

/// Why the poll loop woke.
enum Wake {
    Interval,
    Push,
    Stop,
}

/// Publish the journeys, and offer spans that became exportable since the last publish (after
/// a restart: all not marked).
fn publish_all(
    publisher: &mut Publisher,
    facts: &Facts,
    shared: &Shared,
    baseline: &Arc<crate::sinks::metrics::Baseline>,
    spans: &mut Option<crate::sinks::traces::SpanExport>,
) {
    publisher.publish(facts, shared, baseline);
    if let Some(x) = spans.as_mut() {
        x.offer(&shared.snapshot().derived);
    }
}

/// One poll of the sources: the new facts of those that answered (`answered` records which).
/// Its borrows are the poller's sources and facts only, so a start can publish the stored facts
/// while its first poll is still out.
async fn poll_sources(
    github: &mut GithubSource,
    concourse: &mut ConcourseSource,
    facts: &Facts,
    answered: &mut (bool, bool),
    now: i64,
    poll_github: bool,
    cycle: &tracing::Span,
) -> Vec<Fact> {
    let gh_poll = async {
        if poll_github {
            Some(github.poll(now).instrument(tracing::info_span!(parent: cycle, "github.poll")).await)
        } else {
            None
        }
    };
    let (gh, cc) = if concourse.first_read_due() && poll_github {
        // A first read of Concourse reaches back to the oldest commit GitHub reports, so
        // GitHub answers first (once).
        let gh = gh_poll.await;
        let oldest = gh
            .iter()
            .flat_map(|r| r.iter().flatten())
            .filter_map(|f| match f {
                Fact::Commit(c) => Some(c.committer_date),
                _ => None,
            })
            .chain(facts.commits.values().map(|c| c.committer_date))
            .min();
        concourse.set_first_read_since(oldest);
        (gh, concourse.poll(now).instrument(tracing::info_span!(parent: cycle, "concourse.poll")).await)
    } else {
        tokio::join!(gh_poll, concourse.poll(now).instrument(tracing::info_span!(parent: cycle, "concourse.poll")))
    };
    let mut new: Vec<Fact> = vec![];
    match gh {
        Some(Ok(f)) => {
            answered.0 = true;
            new.extend(f);
        }
        Some(Err(e)) => tracing::warn!(error = %e, "github poll failed"),
        None => {}
    }
    match cc {
        Ok(f) => {
            answered.1 = true;
            new.extend(f);
        }
        Err(e) => tracing::warn!(error = %e, "concourse poll failed"),
    }
    new
}

async fn blocking<T: Send + 'static>(
    store: &Arc<Mutex<Store>>,
    f: impl FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, AppError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || {
        crate::memory::lean_thread();
        let mut s = store.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut s)
    })
    .await
    .map_err(|e| AppError::Join(e.to_string()))?
    .map_err(AppError::from)
}
