//! `backfill`: reconstruct past journeys from the CI APIs, write their observations as
//! timestamped OpenMetrics (for `promtool tsdb create-blocks-from openmetrics`) and fill the
//! store, so a later `serve` continues from there.
//!
//! 1. **Collect.** GitHub: every commit on the branch since the cutoff (the list's `since`
//!    filter, then one request per commit for its files; rate limits are waited out, fetched
//!    commits are not fetched again). Concourse: every watched job's builds back to the cutoff
//!    (newest first, 100 a page, following `rel="next"` until a page reaches before it, then
//!    forward again from the lowest id reached, because walking back never lists a rerun whose
//!    original is on a later page; ARCHITECTURE.md, "Complete build history"), then
//!    `/resources` once per build and version metadata once per version. Requests go one at a
//!    time.
//! 2. **Store.** The facts and the GitHub cursor in one transaction, as `serve` stores them; the
//!    Concourse cursor is the facts themselves. `serve` later polls only what is newer.
//! 3. **Derive** every journey from everything the store holds, with the core `serve` uses.
//! 4. **Write.** The journey counters and histograms of the live catalogue (same names, labels,
//!    buckets, HELP) plus `last_deployment_timestamp_seconds`, as cumulative series sampled every
//!    `step` from the cutoff to now, each observation counted from the time it happened (a
//!    build at its end, a commit at its commit time, a wait at the start of the build that ended
//!    it, a lead time and an outcome at the deployment's end). Since live metrics are computed
//!    from the same stored facts, the last sample of each series equals what `serve` shows.
//!
//! Each environment's commits behind, oldest undeployed commit's age and running commit's time
//! are stepped from the deployments (what ran when) and the commits there were at each time.
//! Other gauges about "now" (in flight, stuck, awaiting approval) and source health are not
//! reconstructed: the past state of a running build is not in the APIs.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::core::journey::{Fact, derive, stage_builds};
use crate::sinks::metrics::catalogue::{self, CATALOGUE, Metric};
use crate::sinks::metrics::{Event, events};
use crate::sources::concourse::ConcourseSource;
use crate::sources::github::GithubSource;
use crate::sources::telemetry::SourceTelemetry;
use crate::sources::{ErrorKind, HistoryTally, SourceError};
use crate::store::{Store, StoreError};

/// Reads after the first one that continue a builds history longer than its page budget
/// (each lists up to 20 pages of 100 builds).
const MAX_CATCH_UP_READS: u32 = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot set up source: {0}")]
    Setup(SourceError),
    #[error("{source_name} history could not be read after {attempts} attempts: {error}")]
    Source { source_name: &'static str, attempts: u32, error: SourceError },
    #[error("writing {what}: {source}")]
    Write { what: String, source: std::io::Error },
    #[error("--step must be at least 1s (got {0}s)")]
    Step(i64),
    #[error("--since reaches before the Unix epoch or after now (cutoff {since}, now {now})")]
    Range { since: i64, now: i64 },
    #[error("target label {0:?}: {1}")]
    Label(String, &'static str),
}

/// What to reconstruct and how to sample it.
#[derive(Debug, Clone)]
pub struct Options {
    /// The cutoff, Unix seconds: commits committed and builds started from then on.
    pub since: i64,
    /// The end of the history, Unix seconds (normally the wall clock).
    pub now: i64,
    /// Seconds between samples. At most Prometheus' lookback (5m by default) keeps every
    /// instant query answered; smaller steps make bigger files.
    pub step: i64,
    /// Labels added to every series, e.g. the `job`/`instance` the live scrape will attach,
    /// so backfilled and scraped samples form one series.
    pub target_labels: Vec<(String, String)>,
    /// How many times a failed source read is tried before giving up (rate-limit waits aside).
    pub attempts: u32,
}

impl Options {
    pub fn new(since: i64, now: i64) -> Options {
        Options { since, now, step: 300, target_labels: vec![], attempts: 5 }
    }
}

/// What a backfill did, for the summary line and the benchmark.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub commits: usize,
    pub builds: usize,
    pub journeys: usize,
    pub deployed: usize,
    pub github_requests: u64,
    pub concourse_requests: u64,
    pub series: usize,
    pub samples: u64,
    pub bytes: u64,
    pub collect: Duration,
    pub store: Duration,
    /// Deriving the journeys and their observations, once for the whole range.
    pub derive: Duration,
    pub write: Duration,
    /// Errors the sources reported but retried past (or that remain for `serve` to retry).
    pub warnings: Vec<String>,
}

// ------------------------------------------------------------------ progress

/// A progress display on stderr: an indicatif bar on a terminal, plain lines (at most one
/// every few seconds) otherwise, nothing when hidden (`--quiet`, tests, benchmarks). Phases
/// with a known amount of work (reads whose number is known, series to write) show how far
/// they are and an ETA.
#[derive(Clone)]
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    plain: bool,
    state: Arc<std::sync::Mutex<Plain>>,
}

/// The plain display's memory: when it last printed, and the counted phase under way.
#[derive(Default)]
struct Plain {
    last: Option<Instant>,
    what: String,
    total: u64,
    done: u64,
    since: Option<Instant>,
}

const SPINNER: &str = "{spinner} [{elapsed_precise}] {msg}";
const BAR: &str = "{spinner} [{elapsed_precise}] {msg} [{bar:30}] {human_pos}/{human_len} ETA {eta}";

/// Seconds left for `done` of `total` after `elapsed`, at the rate so far.
pub fn eta(elapsed: Duration, done: u64, total: u64) -> Option<Duration> {
    if done == 0 || done > total {
        return None;
    }
    Some(elapsed.mul_f64((total - done) as f64 / done as f64))
}

impl Progress {
    pub fn stderr() -> Progress {
        use std::io::IsTerminal;
        if std::io::stderr().is_terminal() {
            let bar = indicatif::ProgressBar::new_spinner();
            if let Ok(style) = indicatif::ProgressStyle::with_template(SPINNER) {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(120));
            Progress { bar: Some(bar), plain: false, state: Arc::default() }
        } else {
            Progress { bar: None, plain: true, state: Arc::default() }
        }
    }

    pub fn hidden() -> Progress {
        Progress { bar: None, plain: false, state: Arc::default() }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Plain> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new phase: always shown.
    pub fn phase(&self, msg: &str) {
        if let Some(b) = &self.bar {
            if let Ok(style) = indicatif::ProgressStyle::with_template(SPINNER) {
                b.set_style(style);
            }
            b.println(msg);
            b.set_message(msg.to_string());
        } else if self.plain {
            eprintln!("{msg}");
            let mut st = self.state();
            st.last = Some(Instant::now());
            st.total = 0;
        }
    }

    /// A running update: redrawn on a terminal, printed every 5 s otherwise.
    pub fn update(&self, msg: &str) {
        if let Some(b) = &self.bar {
            b.set_message(msg.to_string());
        } else if self.plain {
            let mut st = self.state();
            if st.last.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
                eprintln!("  {msg}");
                st.last = Some(Instant::now());
            }
        }
    }

    /// A phase of `total` units of work (the total may grow as more becomes known).
    pub fn start_count(&self, what: &str, total: u64) {
        if let Some(b) = &self.bar {
            if let Ok(style) = indicatif::ProgressStyle::with_template(BAR) {
                b.set_style(style.progress_chars("=> "));
            }
            b.set_message(what.to_string());
            b.set_length(total);
            b.set_position(0);
            b.reset_eta();
        } else if self.plain {
            let mut st = self.state();
            *st = Plain { last: st.last, what: what.to_string(), total, done: 0, since: Some(Instant::now()) };
        }
    }

    /// `done` of `total` units of the counted phase are done.
    pub fn count(&self, done: u64, total: u64) {
        if let Some(b) = &self.bar {
            b.set_length(total);
            b.set_position(done);
        } else if self.plain {
            let mut st = self.state();
            st.done = done;
            st.total = total;
            self.print_count(&mut st);
        }
    }

    /// `n` more units of the counted phase are done.
    pub fn advance(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        } else if self.plain {
            let mut st = self.state();
            st.done += n;
            self.print_count(&mut st);
        }
    }

    fn print_count(&self, st: &mut Plain) {
        if st.total == 0 || st.last.is_some_and(|t| t.elapsed() < Duration::from_secs(5)) {
            return;
        }
        let left = st.since.and_then(|s| eta(s.elapsed(), st.done, st.total));
        let left = left.map(|d| format!(", ETA {}s", d.as_secs())).unwrap_or_default();
        eprintln!("  {}: {}/{}{left}", st.what, st.done, st.total);
        st.last = Some(Instant::now());
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

// ------------------------------------------------------------------ collect

/// Facts read from the APIs, and the GitHub head they end at.
#[derive(Debug, Default)]
pub struct Collected {
    pub facts: Vec<Fact>,
    pub head: Option<String>,
    pub github_requests: u64,
    pub concourse_requests: u64,
    pub warnings: Vec<String>,
}

/// Read every commit since `opts.since` and every watched build started since then. The two
/// sources are different servers: GitHub (its requests one at a time, as GitHub asks) and
/// Concourse are read at the same time, the read taking as long as the longer of the two.
pub async fn collect(cfg: &Config, opts: &Options, progress: &Progress) -> Result<Collected, BackfillError> {
    let telemetry = Arc::new(SourceTelemetry::new());
    let mut github = GithubSource::new(cfg.github(), telemetry.clone()).map_err(BackfillError::Setup)?;
    github.set_history_since(Some(opts.since));
    let mut concourse = ConcourseSource::new(cfg.concourse(), telemetry.clone()).map_err(BackfillError::Setup)?;
    concourse.set_history_since(Some(opts.since));
    // One progress line: GitHub's until it is done, then Concourse's.
    let github_done = std::sync::atomic::AtomicBool::new(false);
    progress.phase("reading commits from GitHub and builds from Concourse");
    let read_github = async {
        let r = read_github(&mut github, cfg, opts, &telemetry, progress).await;
        github_done.store(true, std::sync::atomic::Ordering::Relaxed);
        r
    };
    let read_concourse = read_concourse(&mut concourse, opts, &telemetry, progress, &github_done);
    let ((facts, head), (builds, warnings)) = tokio::try_join!(read_github, read_concourse)?;
    let mut out = Collected { facts, head, warnings, ..Collected::default() };
    out.facts.extend(builds);
    out.github_requests = telemetry.snapshot("github").requests();
    out.concourse_requests = telemetry.snapshot("concourse").requests();
    Ok(out)
}

/// The commits since the cutoff and the pull requests merged since then; the head they end at.
async fn read_github(
    github: &mut GithubSource,
    cfg: &Config,
    opts: &Options,
    telemetry: &SourceTelemetry,
    progress: &Progress,
) -> Result<(Vec<Fact>, Option<String>), BackfillError> {
    let mut retry = Retry::new("github", opts.attempts);
    let tally = github.history_tally();
    let commits = loop {
        match with_ticker(github.poll(opts.now), telemetry, "github", "commits", &tally, progress, None).await {
            Ok(f) => break f,
            Err(e) => retry.after(e, progress).await?,
        }
    };
    // A commit's history began when it landed: `first_seen` (for `lead_time_from: first_seen`)
    // is its committer date, not the moment this backfill read it.
    let mut facts: Vec<Fact> = commits
        .into_iter()
        .map(|f| match f {
            Fact::Commit(mut c) => {
                c.first_seen = c.first_seen.min(c.committer_date);
                Fact::Commit(c)
            }
            other => other,
        })
        .collect();
    let head = github.cursor().0;
    let n_commits = facts.len();
    // The pull requests merged since the cutoff, from the list of closed ones: labels (the
    // hotfix rule), opening and merge of each squash or merge commit (not the phases, which
    // would take five requests a commit).
    if cfg.repository.pull_requests {
        progress.update(&format!("{n_commits} commits since the cutoff; reading merged pull requests"));
        let shas: std::collections::HashSet<String> = facts
            .iter()
            .filter_map(|f| match f {
                Fact::Commit(c) => Some(c.sha.clone()),
                _ => None,
            })
            .collect();
        let mut retry = Retry::new("github", opts.attempts);
        let pulls = loop {
            match github.merged_pulls_since(opts.since).await {
                Ok(p) => break p,
                Err(e) => retry.after(e, progress).await?,
            }
        };
        let origins: Vec<Fact> = pulls
            .into_iter()
            .filter(|(sha, _)| shas.contains(sha))
            .map(|(sha, origin)| Fact::Origin { sha, origin })
            .collect();
        progress.update(&format!("{} of them merged through a pull request", origins.len()));
        facts.extend(origins);
    }
    progress.phase(&format!("{n_commits} commits since the cutoff read from GitHub"));
    Ok((facts, head))
}

/// Every watched build started since the cutoff, and the errors retried past.
async fn read_concourse(
    concourse: &mut ConcourseSource,
    opts: &Options,
    telemetry: &SourceTelemetry,
    progress: &Progress,
    github_done: &std::sync::atomic::AtomicBool,
) -> Result<(Vec<Fact>, Vec<String>), BackfillError> {
    let tally = concourse.history_tally();
    let mut out = vec![];
    let mut attempt = 0;
    let mut caught_up_reads = 0;
    loop {
        attempt += 1;
        let mut retry = Retry::new("concourse", opts.attempts);
        let facts = loop {
            let poll = concourse.poll(opts.now);
            match with_ticker(poll, telemetry, "concourse", "builds", &tally, progress, Some(github_done)).await {
                Ok(f) => break f,
                Err(e) => retry.after(e, progress).await?,
            }
        };
        out.extend(facts);
        // A history longer than one read's page budget: the next read continues where this
        // one is complete (no attempt is spent on it).
        if !concourse.caught_up() && caught_up_reads < MAX_CATCH_UP_READS {
            caught_up_reads += 1;
            attempt -= 1;
            progress.update("more builds than one read lists; reading on");
            continue;
        }
        // A build whose resources or metadata could not be read stays tracked: another cycle
        // reads just those.
        if concourse.last_errors().is_empty() || attempt >= opts.attempts {
            let warnings = concourse.last_errors().iter().map(|e| e.to_string()).collect();
            return Ok((out, warnings));
        }
        progress.update(&format!("{} Concourse reads failed; trying those again", concourse.last_errors().len()));
        tokio::time::sleep(Duration::from_secs(1 << attempt.min(4))).await;
    }
}

/// When a source read fails: a rate limit is waited out (as long as the server says), other
/// failures are tried `attempts` times with growing pauses.
struct Retry {
    source_name: &'static str,
    attempts: u32,
    failures: u32,
    waits: u32,
}

impl Retry {
    fn new(source_name: &'static str, attempts: u32) -> Retry {
        Retry { source_name, attempts: attempts.max(1), failures: 0, waits: 0 }
    }

    /// Wait before the next try, or give up with the error.
    async fn after(&mut self, e: SourceError, progress: &Progress) -> Result<(), BackfillError> {
        let name = self.source_name;
        // Bounded too, so a server that keeps refusing does not hold the backfill forever.
        if e.kind == ErrorKind::RateLimited && self.waits < 100 {
            self.waits += 1;
            let wait = e.retry_after.unwrap_or(Duration::from_secs(60)) + Duration::from_secs(1);
            progress.phase(&format!("{name}: rate limited; waiting {}s as the server asks", wait.as_secs()));
            tokio::time::sleep(wait).await;
            return Ok(());
        }
        self.failures += 1;
        if self.failures >= self.attempts {
            return Err(BackfillError::Source { source_name: name, attempts: self.failures, error: e });
        }
        progress.phase(&format!("{name}: {e}; trying again"));
        tokio::time::sleep(Duration::from_secs(1 << self.failures.min(5))).await;
        Ok(())
    }
}

/// Drive `fut` while showing the source's request count, and once the source knows how many
/// reads it has to make (a commit's files, a build's resources), how far it is with an ETA;
/// once `after` is set, if given (another source's reading holds the line until then).
async fn with_ticker<T>(
    fut: impl std::future::Future<Output = T>,
    telemetry: &SourceTelemetry,
    source_name: &str,
    what: &str,
    tally: &HistoryTally,
    progress: &Progress,
    after: Option<&std::sync::atomic::AtomicBool>,
) -> T {
    tokio::pin!(fut);
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut counting = false;
    // Reads of earlier calls are not this call's progress.
    let (base, _) = tally.get();
    loop {
        tokio::select! {
            r = &mut fut => return r,
            _ = tick.tick() => {
                // Another source's progress is on the line until it is done.
                if after.is_some_and(|a| !a.load(std::sync::atomic::Ordering::Relaxed)) {
                    continue;
                }
                let (done, total) = tally.get();
                let (done, total) = (done - base, total.saturating_sub(base));
                if total > done {
                    if !counting {
                        progress.start_count(&format!("{source_name}: reading {what}"), total);
                        counting = true;
                    }
                    progress.count(done, total);
                } else if !counting {
                    let n = telemetry.snapshot(source_name).requests();
                    progress.update(&format!("{source_name}: {n} requests so far (listing {what})"));
                }
            }
        }
    }
}

// ------------------------------------------------------------------ the whole run

/// Collect, store, derive and write OpenMetrics to `out`.
pub async fn run(
    cfg: &Config,
    opts: &Options,
    out: &mut dyn Write,
    progress: &Progress,
) -> Result<Report, BackfillError> {
    check_options(opts)?;
    // Not beside a running `serve` on the same state file (checked before the long collection).
    let _lock = crate::store::lock(&cfg.state_path)?;
    let t0 = Instant::now();
    let collected = collect(cfg, opts, progress).await?;
    let collect_took = t0.elapsed();

    let t1 = Instant::now();
    progress.phase(&format!("storing {} facts in {}", collected.facts.len(), cfg.state_path.display()));
    let mut store = Store::open(&cfg.state_path)?;
    store.check_identity(&crate::app::identity_of(cfg))?;
    let mut kv: Vec<(&str, &str)> = vec![];
    if let Some(h) = &collected.head {
        kv.push((crate::app::KV_GITHUB_HEAD, h));
    }
    // An ETag belongs to the plain branch list; `serve` gets its own on its first poll.
    kv.push((crate::app::KV_GITHUB_ETAG, ""));
    store.apply_with_kv(&collected.facts, &kv)?;
    let facts = store.load()?;
    let baseline = store.counters()?;
    let store_took = t1.elapsed();
    let mut warnings = collected.warnings;
    if !baseline.is_empty() {
        warnings.push(format!(
            "the store holds {} counter rows folded in by retention; the backfilled series leave them out",
            baseline.len()
        ));
    }

    let t2 = Instant::now();
    progress.phase(&format!("deriving the journeys of {} commits", facts.commits.len()));
    let core = cfg.core();
    let derived = derive(&facts, &core, opts.now);
    let sb = stage_builds(&facts, &core, &derived);
    let mut ev = events(derived.journeys.iter().map(|j| &**j), &sb, &derived, &core);
    ev.extend(crate::sinks::metrics::events::environment_levels(&derived));
    let derive_took = t2.elapsed();
    let t3 = Instant::now();
    progress.phase(&format!("writing OpenMetrics of {} observations", ev.len()));
    let catalogue = catalogue(&core, cfg.poll_interval.as_secs(), opts.now);
    let written = write_openmetrics(out, &catalogue, &ev, opts, progress)?;
    let write_took = t3.elapsed();
    progress.finish();
    Ok(Report {
        commits: facts.commits.len(),
        builds: facts.builds.len(),
        journeys: derived.journeys.len(),
        deployed: derived.journeys.iter().filter(|j| !j.deployed_at.is_empty()).count(),
        github_requests: collected.github_requests,
        concourse_requests: collected.concourse_requests,
        series: written.series,
        samples: written.samples,
        bytes: written.bytes,
        collect: collect_took,
        store: store_took,
        derive: derive_took,
        write: write_took,
        warnings,
    })
}

fn check_options(opts: &Options) -> Result<(), BackfillError> {
    if opts.step < 1 {
        return Err(BackfillError::Step(opts.step));
    }
    if opts.since < 0 || opts.since >= opts.now {
        return Err(BackfillError::Range { since: opts.since, now: opts.now });
    }
    for (k, _) in &opts.target_labels {
        check_label_name(k)?;
    }
    Ok(())
}

/// Prometheus label name rules, and no clash with the catalogue's own labels.
fn check_label_name(k: &str) -> Result<(), BackfillError> {
    let mut chars = k.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(BackfillError::Label(k.into(), "not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*)"));
    }
    if k.starts_with("__") {
        return Err(BackfillError::Label(k.into(), "names starting with __ are reserved"));
    }
    let mut own = CATALOGUE.iter().filter(|d| d.backfill != catalogue::Backfill::No).flat_map(|d| d.dims);
    if k == "le" || own.any(|d| d.key() == k) {
        return Err(BackfillError::Label(k.into(), "the metrics already use this label"));
    }
    Ok(())
}

// ------------------------------------------------------------------ OpenMetrics

/// The journey families of the live catalogue: their header lines and every label set the live
/// exposition has from its first scrape, read from the catalogue table.
#[derive(Debug, Clone)]
pub struct Catalogue {
    pub families: Vec<FamilyDef>,
}

#[derive(Debug, Clone)]
pub struct FamilyDef {
    /// Whose events the family steps through.
    pub metric: Metric,
    /// `deploy_journey_lead_time_seconds`, `deploy_journey_commits`, ...
    pub name: String,
    pub kind: Kind,
    /// `# HELP`, `# TYPE`, `# UNIT` lines as the live exposition has them.
    pub headers: Vec<String>,
    /// Label sets, rendered `k="v",k="v"` (without `le`).
    pub label_sets: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Histogram,
    /// The largest value observed so far.
    MaxGauge,
    /// The newest event's value.
    Level,
    /// The time since the newest event's value (a time; negative: none, written 0).
    Age,
}

/// The backfilled families: the histograms, then the counters (catalogue order), then the
/// gauges that follow another metric's latest event.
pub fn catalogue(core: &crate::core::journey::CoreConfig, poll_interval_secs: u64, _now: i64) -> Catalogue {
    let family = |def: &catalogue::Def, metric: Metric, kind: Kind| FamilyDef {
        metric,
        name: def.family_name(),
        kind,
        headers: def.headers(poll_interval_secs),
        label_sets: def.preset_label_sets(core).iter().map(|l| label_text(l)).collect(),
    };
    let mut families = vec![];
    for want in [catalogue::Kind::Histogram, catalogue::Kind::Counter] {
        for def in CATALOGUE.iter().filter(|d| d.kind == want && d.backfill == catalogue::Backfill::Events) {
            let kind = if want == catalogue::Kind::Histogram { Kind::Histogram } else { Kind::Counter };
            families.push(family(def, def.metric, kind));
        }
    }
    for def in CATALOGUE {
        match def.backfill {
            catalogue::Backfill::LatestOf(source) => families.push(family(def, source, Kind::MaxGauge)),
            catalogue::Backfill::Level => families.push(family(def, def.metric, Kind::Level)),
            catalogue::Backfill::Age => families.push(family(def, def.metric, Kind::Age)),
            _ => {}
        }
    }
    Catalogue { families }
}

/// `k="v",k="v"` with OpenMetrics escaping.
pub fn label_text(labels: &[(String, String)]) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")))
        .collect::<Vec<_>>()
        .join(",")
}

/// The sample times: the cutoff, every multiple of `step` after it, and `now`.
pub fn sample_times(since: i64, now: i64, step: i64) -> Vec<i64> {
    let mut ts = vec![since];
    let mut t = (since / step + 1) * step;
    while t < now {
        ts.push(t);
        t += step;
    }
    if now > since {
        ts.push(now);
    }
    ts
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Written {
    pub series: usize,
    pub samples: u64,
    pub bytes: u64,
}

/// Counts bytes on their way to the writer.
struct Counting<'a> {
    inner: &'a mut dyn Write,
    bytes: u64,
}

impl Write for Counting<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The index of a series' first sample: the last sample time before its first observation
/// (where it is still 0), or the cutoff. Before that the series has no samples at all, which
/// `sum`, `increase` and `rate` read as they read a 0 that never changes; the 0 just before
/// the first observation is what lets `increase()` count that observation (Prometheus counts
/// no increase into a series' first sample).
pub fn series_start(times: &[i64], first_event: Option<i64>) -> usize {
    match first_event {
        None => 0,
        Some(at) => times.partition_point(|t| *t < at).saturating_sub(1),
    }
}

/// A sample's value as text, kept between samples so an unchanged value is not rendered again.
#[derive(Debug, Clone, Default)]
struct Value(Vec<u8>);

impl Value {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    fn int(&mut self, n: u64) {
        self.0.clear();
        self.0.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    }
    fn float(&mut self, v: f64) {
        self.0.clear();
        // `{:?}` keeps the `.0` of whole numbers, as the live exposition writes them.
        let _ = write!(self.0, "{v:?}");
    }
    fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Write the families of `catalogue` as timestamped OpenMetrics: per series, one sample (for a
/// histogram one point: buckets, `_count`, `_sum`) at each of [`sample_times`] from
/// [`series_start`], cumulative from the cutoff. Events before the cutoff count from the first
/// sample; `# EOF` ends it.
pub fn write_openmetrics(
    out: &mut dyn Write,
    catalogue: &Catalogue,
    events: &[Event],
    opts: &Options,
    progress: &Progress,
) -> Result<Written, BackfillError> {
    let io = |source| BackfillError::Write { what: "the OpenMetrics output".into(), source };
    let mut w = std::io::BufWriter::with_capacity(1 << 20, Counting { inner: out, bytes: 0 });
    let times = sample_times(opts.since, opts.now.max(opts.since), opts.step);
    let extra = label_text(&opts.target_labels);
    let join = |a: &str, b: &str| match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ => format!("{a},{b}"),
    };
    // Per family and label set, the (time, value) of each event, oldest first.
    let mut by_series: BTreeMap<(Metric, String), Vec<(i64, f64)>> = BTreeMap::new();
    for e in events {
        by_series.entry((e.metric, label_text(&e.labels))).or_default().push((e.at, e.value.unwrap_or(1.0)));
    }
    for v in by_series.values_mut() {
        v.sort_by_key(|(t, _)| *t);
    }
    // Each sample time as the line's tail, rendered once for every series.
    let stamps: Vec<String> = times.iter().map(|t| format!(" {t}\n")).collect();
    let mut written = Written::default();
    let total: usize =
        catalogue.families.iter().map(|f| by_series.keys().filter(|(m, _)| *m == f.metric).count().max(1)).sum();
    progress.start_count("writing series", total as u64);
    for fam in &catalogue.families {
        for h in &fam.headers {
            writeln!(w, "{h}").map_err(io)?;
        }
        // Label sets nothing ever happened to are left out: zero throughout, they would only
        // make the file bigger (the live exposition shows them as 0; `sum`/`rate` read the same).
        let mut sets: Vec<String> =
            fam.label_sets.iter().filter(|l| by_series.contains_key(&(fam.metric, (*l).clone()))).cloned().collect();
        for (m, labels) in by_series.keys() {
            if *m == fam.metric && fam.kind != Kind::MaxGauge && !sets.contains(labels) {
                sets.push(labels.clone());
            }
        }
        sets.sort();
        for labels in &sets {
            // The last-deployment gauge is the end of the newest counted deployment.
            let mut evs: Vec<(i64, f64)> = by_series.get(&(fam.metric, labels.clone())).cloned().unwrap_or_default();
            if fam.kind == Kind::MaxGauge {
                evs.iter_mut().for_each(|e| e.1 = e.0 as f64);
            }
            let all = join(labels, &extra);
            written.series += 1;
            let first = series_start(&times, evs.first().map(|e| e.0));
            let braces = if all.is_empty() { String::new() } else { format!("{{{all}}}") };
            match fam.kind {
                Kind::Counter | Kind::MaxGauge | Kind::Level | Kind::Age => {
                    let suffix = if fam.kind == Kind::Counter { "_total" } else { "" };
                    let prefix = format!("{}{suffix}{braces} ", fam.name);
                    let mut i = 0;
                    let (mut n, mut max, mut last) = (0u64, 0.0f64, None::<f64>);
                    let mut value = Value::default();
                    for (t, ts) in times.iter().zip(&stamps).skip(first) {
                        let before = i;
                        while i < evs.len() && evs[i].0 <= *t {
                            n += 1;
                            max = max.max(evs[i].1);
                            last = Some(evs[i].1);
                            i += 1;
                        }
                        // An age changes every sample; the others only at their events.
                        if fam.kind == Kind::Age || i != before || value.is_empty() {
                            match (fam.kind, last) {
                                (Kind::Counter, _) => value.int(n),
                                (Kind::MaxGauge, _) => value.float(max),
                                (Kind::Level, l) => value.int(l.unwrap_or(0.0) as u64),
                                (Kind::Age, Some(at)) if at >= 0.0 => value.int((*t as f64 - at).max(0.0) as u64),
                                // An age with none behind it.
                                _ => value.int(0),
                            }
                        }
                        w.write_all(prefix.as_bytes()).map_err(io)?;
                        w.write_all(value.bytes()).map_err(io)?;
                        w.write_all(ts.as_bytes()).map_err(io)?;
                        written.samples += 1;
                    }
                }
                Kind::Histogram => {
                    let bounds = fam.metric.def().buckets;
                    let mut prefixes: Vec<String> = bounds
                        .iter()
                        .map(|b| format!("{:?}", b))
                        .chain(std::iter::once("+Inf".to_string()))
                        .map(|le| {
                            format!(
                                "{}_bucket{{le=\"{le}\"{}{}}} ",
                                fam.name,
                                if all.is_empty() { "" } else { "," },
                                all
                            )
                        })
                        .collect();
                    prefixes.push(format!("{}_count{braces} ", fam.name));
                    prefixes.push(format!("{}_sum{braces} ", fam.name));
                    // Per line (buckets, `_count`, `_sum`), its value as text: re-rendered only
                    // when an observation changes it.
                    let mut values = vec![Value::default(); prefixes.len()];
                    let mut per = vec![0u64; bounds.len() + 1];
                    let mut sum = 0.0f64;
                    let mut i = 0;
                    for (t, ts) in times.iter().zip(&stamps).skip(first) {
                        let before = i;
                        while i < evs.len() && evs[i].0 <= *t {
                            let v = evs[i].1;
                            per[bounds.iter().position(|b| v <= *b).unwrap_or(bounds.len())] += 1;
                            sum += v;
                            i += 1;
                        }
                        if i != before || values[0].is_empty() {
                            let mut cum = 0;
                            for (k, p) in per.iter().enumerate() {
                                cum += p;
                                values[k].int(cum);
                            }
                            values[per.len()].int(cum);
                            values[per.len() + 1].float(sum);
                        }
                        for (p, v) in prefixes.iter().zip(&values) {
                            w.write_all(p.as_bytes()).map_err(io)?;
                            w.write_all(v.bytes()).map_err(io)?;
                            w.write_all(ts.as_bytes()).map_err(io)?;
                        }
                        written.samples += prefixes.len() as u64;
                    }
                }
            }
            progress.advance(1);
        }
    }
    writeln!(w, "# EOF").map_err(io)?;
    w.flush().map_err(io)?;
    written.bytes = w.get_ref().bytes;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn family(metric: Metric, name: &str, kind: Kind, sets: &[&str]) -> FamilyDef {
        FamilyDef {
            metric,
            name: name.into(),
            kind,
            headers: vec![format!("# TYPE {name} {}", if kind == Kind::Counter { "counter" } else { "x" })],
            label_sets: sets.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn ev(at: i64, metric: Metric, l: &[(&str, &str)], value: Option<f64>) -> Event {
        Event { at, metric, labels: labels(l), value, exemplar: None, rank: 0 }
    }

    #[test]
    fn sample_times_are_the_cutoff_every_step_and_now() {
        let check = |since, now, step, expect: &[i64]| assert_eq!(sample_times(since, now, step), expect);
        check(100, 1000, 300, &[100, 300, 600, 900, 1000]);
        check(0, 600, 300, &[0, 300, 600]);
        check(300, 301, 300, &[300, 301]);
        check(5, 5, 300, &[5]);
    }

    #[test]
    fn series_step_at_the_time_each_observation_happened() {
        let staging_backend = "environment=\"staging\",change_type=\"backend\"";
        let cat = Catalogue {
            families: vec![
                family(
                    Metric::Commits,
                    "dj_commits",
                    Kind::Counter,
                    &["change_type=\"backend\"", "change_type=\"docs\""],
                ),
                family(Metric::LeadTime, "dj_lead_time_seconds", Kind::Histogram, &[staging_backend]),
                family(Metric::Deployments, "dj_last", Kind::MaxGauge, &["environment=\"staging\""]),
            ],
        };
        let backend = [("change_type", "backend")];
        let lead = [("environment", "staging"), ("change_type", "backend")];
        let staging = [("environment", "staging")];
        let events = vec![
            ev(700, Metric::Commits, &backend, None),
            ev(150, Metric::Commits, &backend, None),
            ev(650, Metric::LeadTime, &lead, Some(400.0)),
            ev(950, Metric::LeadTime, &lead, Some(100_000.0)),
            ev(650, Metric::Deployments, &staging, None),
            ev(950, Metric::Deployments, &staging, None),
        ];
        let mut opts = Options::new(100, 1000);
        opts.step = 300;
        opts.target_labels = labels(&[("job", "dj")]);
        let mut out = vec![];
        let w = write_openmetrics(&mut out, &cat, &events, &opts, &Progress::hidden()).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(w.bytes as usize, text.len());
        assert!(text.starts_with("# TYPE dj_commits counter\n"), "{text}");
        assert!(text.ends_with("# EOF\n"));
        // Nothing ever happened to docs commits: that series is left out.
        assert!(!text.contains("docs"), "{text}");
        assert_eq!(w.series, 3);
        // The counter at all 5 sample times; the histogram (14 buckets + +Inf + count + sum)
        // and the gauge from 600, the last sample time before their first observation at 650.
        assert_eq!(w.samples, 5 + 3 * 17 + 3);
        assert!(!text.lines().any(|l| l.starts_with("dj_lead_time") && l.ends_with(" 300")), "{text}");
        assert!(!text.lines().any(|l| l.starts_with("dj_last") && l.ends_with(" 300")), "{text}");
        let has = |line: &str| assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        for (t, n) in [(100, 0), (300, 1), (600, 1), (900, 2), (1000, 2)] {
            has(&format!("dj_commits_total{{change_type=\"backend\",job=\"dj\"}} {n} {t}"));
        }
        let bucket = |le: &str, n: u64, t: i64| {
            format!("dj_lead_time_seconds_bucket{{le=\"{le}\",{staging_backend},job=\"dj\"}} {n} {t}")
        };
        for (le, at600, at900, at1000) in
            [("300.0", 0, 0, 0), ("600.0", 0, 1, 1), ("86400.0", 0, 1, 1), ("259200.0", 0, 1, 2), ("+Inf", 0, 1, 2)]
        {
            has(&bucket(le, at600, 600));
            has(&bucket(le, at900, 900));
            has(&bucket(le, at1000, 1000));
        }
        has(&format!("dj_lead_time_seconds_count{{{staging_backend},job=\"dj\"}} 1 900"));
        has(&format!("dj_lead_time_seconds_sum{{{staging_backend},job=\"dj\"}} 100400.0 1000"));
        for (t, v) in [(600, "0.0"), (900, "650.0"), (1000, "950.0")] {
            has(&format!("dj_last{{environment=\"staging\",job=\"dj\"}} {v} {t}"));
        }
        // Within a series, time only moves forward.
        let mut last: BTreeMap<&str, i64> = BTreeMap::new();
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let (key, ts) = l.rsplit_once(' ').unwrap();
            let key = key.rsplit_once(' ').unwrap().0;
            let ts: i64 = ts.parse().unwrap();
            assert!(last.insert(key, ts).is_none_or(|prev| prev < ts), "{l}");
        }
    }

    /// A level holds its newest event's value between events; an age grows from its newest
    /// event's time until an event says there is none.
    #[test]
    fn levels_hold_their_last_value_and_ages_grow() {
        let cat = Catalogue {
            families: vec![
                family(Metric::CommitsBehind, "dj_behind", Kind::Level, &["environment=\"qa\""]),
                family(Metric::OldestUndeployedCommitAge, "dj_age", Kind::Age, &["environment=\"qa\""]),
            ],
        };
        let qa = [("environment", "qa")];
        let events = vec![
            ev(250, Metric::CommitsBehind, &qa, Some(3.0)),
            ev(640, Metric::CommitsBehind, &qa, Some(1.0)),
            ev(250, Metric::OldestUndeployedCommitAge, &qa, Some(240.0)),
            ev(640, Metric::OldestUndeployedCommitAge, &qa, Some(-1.0)),
        ];
        let mut opts = Options::new(100, 1000);
        opts.step = 300;
        let mut out = vec![];
        write_openmetrics(&mut out, &cat, &events, &opts, &Progress::hidden()).unwrap();
        let text = String::from_utf8(out).unwrap();
        let has = |line: &str| assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        for (t, behind, age) in [(100, 0, 0), (300, 3, 60), (600, 3, 360), (900, 1, 0), (1000, 1, 0)] {
            has(&format!("dj_behind{{environment=\"qa\"}} {behind} {t}"));
            has(&format!("dj_age{{environment=\"qa\"}} {age} {t}"));
        }
    }

    #[test]
    fn a_series_starts_at_the_last_sample_before_its_first_observation() {
        let times = [100, 300, 600, 900, 1000];
        let check = |first: Option<i64>, expect: usize| assert_eq!(series_start(&times, first), expect, "{first:?}");
        check(None, 0);
        check(Some(50), 0);
        check(Some(100), 0);
        check(Some(101), 0);
        check(Some(300), 0);
        check(Some(301), 1);
        check(Some(650), 2);
        check(Some(1000), 3);
    }

    #[test]
    fn eta_is_the_rate_so_far_applied_to_what_is_left() {
        let check = |secs: u64, done, total, expect: Option<u64>| {
            assert_eq!(eta(Duration::from_secs(secs), done, total).map(|d| d.as_secs()), expect, "{done}/{total}");
        };
        check(10, 0, 100, None);
        check(10, 50, 100, Some(10));
        check(10, 25, 100, Some(30));
        check(10, 100, 100, Some(0));
        check(10, 101, 100, None);
    }

    #[test]
    fn target_labels_follow_prometheus_rules() {
        let check = |name: &str, ok: bool| assert_eq!(check_label_name(name).is_ok(), ok, "{name}");
        check("job", true);
        check("instance", true);
        check("_x1", true);
        check("1x", false);
        check("a-b", false);
        check("", false);
        check("__name__", false);
        check("le", false);
        check("stage", false);
    }

    #[test]
    fn options_out_of_range_are_refused() {
        let mut o = Options::new(100, 1000);
        o.step = 0;
        assert!(matches!(check_options(&o), Err(BackfillError::Step(0))));
        let o = Options::new(1000, 1000);
        assert!(matches!(check_options(&o), Err(BackfillError::Range { .. })));
    }
}
