//! Concourse: builds of the watched jobs, with the resource versions they took and put, as
//! [`BuildFact`]s.
//!
//! # What a poll does and costs
//! Per cycle, for the whole team:
//! 1. One `GET /api/v1/teams/{t}/builds?from=<X>&limit=100` (without credentials
//!    `/api/v1/builds`, which shows public pipelines), X = min(lowest unfinished tracked build,
//!    highest build id listed + 1). With only `from` Concourse returns the 100 *oldest* builds at
//!    or above it in `COALESCE(rerun_of, id)` order, newest first, so a rerun of an old build
//!    with a new id is in it. A full page is followed by `from=C+1`, C the COALESCE value of its
//!    last build in that order (not by its `rel="previous"` link, which can jump over builds;
//!    see `walk_forward`). From an unfinished build below the cursor the walk stops once it
//!    covers the cursor, and the builds above the cursor are a walk of their own. The list
//!    holds every pipeline and job of the team, and one-off/check builds without `job_name`:
//!    only builds of watched jobs are kept. The
//!    first read (no cursor) walks back from the newest build through `rel="next"` pages until
//!    each watched job has its newest [`INITIAL_BUILDS`] builds (at most 20 pages), then reads
//!    forward from the lowest id it reached, because walking back never lists a rerun whose
//!    original is on a later page. That costs about as many pages again, once.
//! 2. `GET /api/v1/teams/{t}/pipelines/{p}/jobs` (`JobSummary`: `inputs[]`/`outputs[]` map
//!    step names to resources; a 404 means the pipeline is gone) for a pipeline never read, when
//!    its last read failed, when a build of a job it did not list appears, when a build's
//!    `/resources` names a step it did not list, and otherwise every [`JOBS_REFRESH`] seconds.
//!    Builds of a pipeline whose jobs were never read wait for them.
//! 3. `GET /api/v1/builds/{id}/resources` once a build has started (inputs adopted) and once
//!    more when it has finished (outputs), then never again. Concourse drops an input whose
//!    exact version the build also put (build-rc tags `repo`): it is left out here too and shows
//!    as the output.
//! 4. For input steps in `message_inputs`: `GET .../resources/{r}/versions?filter=k:v` (every
//!    key of the version) once per version, for the `message` metadata. Metadata hidden from the
//!    caller (or not stored yet) leaves `message: None`; the answer is cached once the build has
//!    finished (or a message was found).
//!
//! An idle cycle (nothing running, nothing new, no jobs list due) is one request. One simulated
//! lana day polled every 30 s costs about 1.1 requests per cycle (`docs/benchmarks.md`).
//!
//! # Errors
//! A poll returns `Err` only when the cycle could not start (login failed, a connect or timeout
//! failure before the builds list) or the team's builds list failed. Anything else (one
//! pipeline gone (404), one build's resources, one version's metadata) is counted in
//! telemetry, listed in [`ConcourseSource::last_errors`], and left for the next cycle, while the
//! poll returns the facts it could gather. After a connect or timeout failure the rest of the
//! cycle is skipped. Each request is tried three times with exponential backoff and jitter when it fails with a
//! connect, timeout, 5xx or undecodable-body error (honouring `Retry-After`), never on 401/403,
//! 404 or other 4xx. A 401 with password auth logs in again once (per cycle) and repeats the
//! request once; so does a finished build's version metadata coming back hidden, because on a
//! public pipeline a dead token gets the public view instead of a 401. Only `GET`s and the
//! token `POST` are ever sent.

pub mod drift;
pub mod excerpt;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::client::{
    ERROR_BODY_LIMIT, LIST_BODY_LIMIT, TOKEN_BODY_LIMIT, backoff, base_url, body_excerpt, common_headers, config_error,
    describe_transport, form_encode, kind_of_status, link_target, next_delay, read_body, read_body_prefix, scrub,
    token_answer_error, token_decode_error, url_with,
};
use super::telemetry::{RequestOutcome, SourceTelemetry};
use super::{ConcourseAuth, ConcourseConfig, ErrorKind, Secret, SourceError, WatchedPipeline};
use crate::core::journey::{BuildFact, BuildId, BuildStatus, Fact, Facts, HorizonFact, Version, VersionFact};

const SOURCE: &str = "concourse";
/// `atc.PaginationAPIDefaultLimit`, asked for explicitly.
const PAGE_LIMIT: usize = 100;
/// Builds read of a job seen for the first time (its newest ones).
pub const INITIAL_BUILDS: usize = 50;
/// Pages of one build list followed in one cycle.
const MAX_PAGES: usize = 20;
/// Pages of the team's builds the first read walks back through for [`INITIAL_BUILDS`].
const INITIAL_PAGES: usize = 20;
/// Pages a backfill's first read walks back through at most (to its cutoff).
const BACKFILL_MAX_PAGES: usize = 1_000;
/// Backfill: `/resources` reads in flight at once. Concourse's API has no rate limit; a handful
/// keeps a loopback or LAN server busy without crowding a shared one (the web node serves
/// each on its own goroutine).
const HISTORY_CONCURRENCY: usize = 8;
/// A pipeline's jobs list is read again this often (seconds) to notice a pipeline or watched job
/// that went away. Step mappings do not wait for it: a build of a job the list did not name, or
/// a `/resources` answer with a step it did not name, has the list read again in that cycle;
/// so does a failed read. An hour costs 72 requests a day for three pipelines.
pub const JOBS_REFRESH: i64 = 3600;
/// Log in again this long before the token expires.
const RELOGIN_MARGIN: i64 = 300;
/// skymarshal's default `--auth-duration`, when the token answer has no `expires_in`.
const DEFAULT_TOKEN_LIFETIME: i64 = 86_400;
/// fly's OAuth client (atc/atccmd/command.go), as `fly login` sends it.
const FLY_CLIENT: (&str, &str) = ("fly", "Zmx5");
const SCOPE: &str = "openid profile email federated:id groups";
/// Cached version messages; beyond this the cache starts over (each entry is one request).
const MESSAGE_CACHE_CAP: usize = 10_000;
/// Longest wait for a build's event stream to end.
const LOG_WAIT: Duration = Duration::from_secs(5);

pub struct ConcourseSource {
    cfg: ConcourseConfig,
    base: Url,
    client: reqwest::Client,
    telemetry: Arc<SourceTelemetry>,
    token: Option<Token>,
    /// The clock of the current (or last) poll, in the caller's Unix seconds.
    now: i64,
    /// Per watched pipeline (same order as `cfg.pipelines`): job name → steps, from the last
    /// jobs list.
    jobs: Vec<HashMap<String, JobState>>,
    /// Per watched pipeline: when its jobs list was last read (`None`: never, or it failed).
    jobs_read_at: Vec<Option<i64>>,
    jobs_read_this_cycle: Vec<bool>,
    /// The build cursor: the highest build id listed (of any job), below any build skipped.
    max_id: Option<BuildId>,
    /// Builds that still need something: a status change, a resources read, a message.
    tracked: BTreeMap<BuildId, Tracked>,
    messages: HashMap<VersionKey, Option<String>>,
    last_errors: Vec<SourceError>,
    /// One re-login on a 401 per cycle (or per call outside a poll), so a server that keeps
    /// refusing is not asked for tokens in a loop.
    relogin_left: bool,
    /// A connect/timeout failure ends the cycle.
    cycle_broken: bool,
    warned: HashSet<(usize, String)>,
    retry_base: Duration,
    /// Backfill: a job seen for the first time is read back to builds started at this Unix
    /// time (older pages via `rel="next"`), not just its newest [`INITIAL_BUILDS`].
    history_since: Option<i64>,
    /// The last builds listing reached the newest build (it was not cut by its page budget).
    caught_up: bool,
    /// `serve`'s first read also reaches back to builds started at this Unix time (the oldest
    /// commit the GitHub source reported), within [`INITIAL_PAGES`].
    first_read_since: Option<i64>,
    /// How far back the first read knows each watched job, emitted with that poll's facts.
    horizons: Vec<HorizonFact>,
    /// Backfill: `/resources` answers read ahead, [`HISTORY_CONCURRENCY`] at a time.
    prefetched: HashMap<BuildId, BuildIo>,
    tally: Arc<super::HistoryTally>,
}

impl std::fmt::Debug for ConcourseSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConcourseSource")
            .field("url", &self.cfg.url)
            .field("team", &self.cfg.team)
            .field("tracked", &self.tracked.len())
            .finish_non_exhaustive()
    }
}

struct Token {
    value: Secret,
    expires_at: i64,
}

#[derive(Debug, Default)]
struct JobState {
    /// Get-step and put-step name → resource name, from the jobs list.
    input_resources: BTreeMap<String, String>,
    output_resources: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
struct Tracked {
    /// Index into `cfg.pipelines`.
    pi: usize,
    fact: BuildFact,
    /// `/resources` read while started / after finishing.
    read_started: bool,
    read_final: bool,
    emitted: Option<BuildFact>,
}

/// (pipeline index, resource, version pairs).
type VersionKey = (usize, String, Vec<(String, String)>);

// ------------------------------------------------------------------ wire shapes (private)

/// `null` where a list or map is expected reads as empty.
fn nullable<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Option::<T>::deserialize(d).map(Option::unwrap_or_default)
}

#[derive(Debug, Deserialize)]
struct JobSummary {
    name: String,
    #[serde(default, deserialize_with = "nullable")]
    inputs: Vec<JobStep>,
    #[serde(default, deserialize_with = "nullable")]
    outputs: Vec<JobStep>,
}

/// An input or output of a job: step name and resource.
#[derive(Debug, Deserialize)]
struct JobStep {
    name: String,
    #[serde(default)]
    resource: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ApiBuild {
    id: BuildId,
    #[serde(default)]
    team_name: Option<String>,
    /// Absent on one-off and check builds.
    #[serde(default)]
    pipeline_name: Option<String>,
    #[serde(default)]
    job_name: Option<String>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    start_time: Option<i64>,
    #[serde(default)]
    end_time: Option<i64>,
    #[serde(default)]
    rerun_of: Option<RerunOf>,
}

#[derive(Debug, Deserialize)]
struct RerunOf {
    #[serde(default)]
    id: Option<BuildId>,
}

#[derive(Debug, Deserialize)]
struct BuildIo {
    #[serde(default, deserialize_with = "nullable")]
    inputs: Vec<IoVersion>,
    #[serde(default, deserialize_with = "nullable")]
    outputs: Vec<IoVersion>,
}

#[derive(Debug, Deserialize)]
struct IoVersion {
    #[serde(default)]
    name: String,
    #[serde(default, deserialize_with = "nullable")]
    version: BTreeMap<String, Value>,
}

#[derive(Debug, Deserialize)]
struct ApiVersion {
    #[serde(default, deserialize_with = "nullable")]
    version: BTreeMap<String, Value>,
    #[serde(default)]
    metadata: Option<Vec<MetaField>>,
}

#[derive(Debug, Deserialize)]
struct MetaField {
    #[serde(default)]
    name: String,
    #[serde(default)]
    value: Option<String>,
}

#[derive(Debug, Deserialize)]
struct TokenReply {
    access_token: String,
    #[serde(default)]
    expires_in: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct ConfigReply {
    #[serde(default)]
    config: Value,
}

#[derive(Debug, Deserialize)]
struct Envelope {
    #[serde(default)]
    event: String,
    #[serde(default)]
    data: Value,
}

/// Version values are strings in `atc.Version`; anything else is kept as its JSON text.
fn version_map(v: BTreeMap<String, Value>) -> Version {
    v.into_iter()
        .map(|(k, v)| {
            let s = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            (k, s)
        })
        .collect()
}

/// Concourse's build-list order, `COALESCE(rerun_of, id), id` (lists show it descending).
fn order_key(b: &ApiBuild) -> (BuildId, BuildId) {
    (b.rerun_of.as_ref().and_then(|r| r.id).unwrap_or(b.id), b.id)
}

/// Two listings as one: each build once (the later listing's view of it wins, being fresher),
/// newest first in Concourse's order.
fn merge_listings(older: Vec<ApiBuild>, newer: Vec<ApiBuild>) -> Vec<ApiBuild> {
    let mut by_id: BTreeMap<BuildId, ApiBuild> = BTreeMap::new();
    for b in older.into_iter().chain(newer) {
        by_id.insert(b.id, b);
    }
    let mut out: Vec<ApiBuild> = by_id.into_values().collect();
    out.sort_by_key(|b| std::cmp::Reverse(order_key(b)));
    out
}

/// Concourse times: Unix seconds; ≤ 0 (Go's zero time in job summaries) means unset.
fn time_of(t: Option<i64>) -> Option<i64> {
    t.filter(|t| *t > 0)
}

/// What the versions endpoint tells about one version's metadata.
enum Metadata {
    NoVersion,
    /// No `metadata` key: not stored yet (no get ran) or hidden from this caller.
    Hidden,
    /// The `message` entry, if any.
    Visible(Option<String>),
}

/// A failed request with its HTTP status (a 401 means "log in again").
struct Failed {
    err: SourceError,
    status: Option<u16>,
}

impl From<Failed> for SourceError {
    fn from(f: Failed) -> SourceError {
        f.err
    }
}

#[derive(Clone, Copy)]
enum Auth<'a> {
    None,
    Bearer(&'a str),
    /// fly's client credentials, for the token endpoint.
    FlyClient,
}

impl ConcourseSource {
    pub fn new(cfg: ConcourseConfig, telemetry: Arc<SourceTelemetry>) -> Result<Self, SourceError> {
        let config_err = |detail: String| config_error(SOURCE, detail);
        let base = base_url(SOURCE, "url", &cfg.url)?;
        let headers = common_headers();
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            // A redirect could carry the token elsewhere; Concourse's API does not redirect.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| config_err(describe_transport(e).1))?;
        let jobs = cfg.pipelines.iter().map(|_| HashMap::new()).collect();
        let n = cfg.pipelines.len();
        Ok(ConcourseSource {
            cfg,
            base,
            client,
            telemetry,
            token: None,
            now: 0,
            jobs,
            jobs_read_at: vec![None; n],
            jobs_read_this_cycle: vec![false; n],
            max_id: None,
            tracked: BTreeMap::new(),
            messages: HashMap::new(),
            last_errors: vec![],
            relogin_left: true,
            cycle_broken: false,
            warned: HashSet::new(),
            retry_base: Duration::from_millis(250),
            history_since: None,
            prefetched: HashMap::new(),
            tally: Arc::default(),
            caught_up: false,
            first_read_since: None,
            horizons: vec![],
        })
    }

    /// The first retry waits about this long, the next twice as long (tests shorten it).
    pub fn set_retry_base_delay(&mut self, d: Duration) {
        self.retry_base = d;
    }

    /// Backfill mode: jobs seen for the first time are read back to builds started at `since`
    /// (Unix seconds); builds that started before it are left out (their commits are not
    /// read, so they would only count as lineage gaps), but they move the cursor past them.
    /// Backfill: the `/resources` reads known to be needed and those made so far.
    pub fn history_tally(&self) -> Arc<super::HistoryTally> {
        self.tally.clone()
    }

    pub fn set_history_since(&mut self, since: Option<i64>) {
        self.history_since = since;
    }

    /// Whether the next poll is a first read (nothing listed or restored yet).
    pub fn first_read_due(&self) -> bool {
        self.max_id.is_none() && self.tracked.is_empty()
    }

    /// The first read also keeps every build started at or after `since` (Unix seconds), beyond
    /// the newest [`INITIAL_BUILDS`] of each job, so every commit reported at start (the oldest
    /// from GitHub's first read) has its builds read, as far as [`INITIAL_PAGES`] reach. Where
    /// they do not, a [`HorizonFact`] per job says so and the core marks older journeys
    /// incomplete instead of guessing.
    pub fn set_first_read_since(&mut self, since: Option<i64>) {
        self.first_read_since = since;
    }

    /// Whether the last poll's builds listing reached the newest build. A listing longer than
    /// a cycle's page budget stops at a point below which it is complete, and the next poll
    /// continues from there (a backfill polls until this holds).
    pub fn caught_up(&self) -> bool {
        self.caught_up
    }

    /// Errors of the last poll that did not fail it (after retries), oldest first.
    pub fn last_errors(&self) -> &[SourceError] {
        &self.last_errors
    }

    /// Resume from stored facts: the build cursor (highest stored build id), and the builds that
    /// are unfinished, lack their resources, or lack a message (they are read again). Job steps
    /// are read again with the first poll.
    pub fn restore(&mut self, facts: &Facts) {
        for j in &mut self.jobs {
            j.clear();
        }
        self.jobs_read_at.iter_mut().for_each(|t| *t = None);
        self.tracked.clear();
        self.max_id = None;
        for b in facts.builds.values() {
            let Some(pi) = self.cfg.pipelines.iter().position(|p| *p.name == *b.pipeline) else { continue };
            if !watched(&self.cfg.pipelines[pi], &b.job) {
                continue;
            }
            self.max_id = self.max_id.max(Some(b.id));
            let wp = &self.cfg.pipelines[pi];
            let message_missing = b.inputs.iter().any(|i| i.message.is_none() && wp.message_inputs.contains(&i.step));
            let finished = b.status.is_finished();
            if !finished || !b.resources_known || message_missing {
                self.tracked.insert(
                    b.id,
                    Tracked {
                        pi,
                        fact: b.clone(),
                        read_started: b.resources_known && !finished,
                        read_final: b.resources_known && finished,
                        emitted: Some(b.clone()),
                    },
                );
            }
        }
    }

    /// One cycle over every watched pipeline; `now` is the caller's Unix seconds (token expiry
    /// and the jobs-list refresh are judged by it).
    pub async fn poll(&mut self, now: i64) -> Result<Vec<Fact>, SourceError> {
        let started = Instant::now();
        self.now = now;
        self.last_errors.clear();
        self.relogin_left = true;
        self.cycle_broken = false;
        self.jobs_read_this_cycle.iter_mut().for_each(|r| *r = false);
        let result = self.poll_inner().await;
        self.telemetry.record_poll(SOURCE, result.is_ok(), now, started.elapsed());
        result
    }

    async fn poll_inner(&mut self) -> Result<Vec<Fact>, SourceError> {
        self.ensure_token().await?;
        // Job steps first where they are missing or old: the builds list and the resources
        // reads below need them.
        for pi in 0..self.cfg.pipelines.len() {
            let due = self.jobs_read_at[pi].is_none_or(|t| self.now - t >= JOBS_REFRESH || self.now < t);
            if due && !self.cycle_broken {
                self.read_jobs(pi).await;
            }
        }
        if self.cycle_broken {
            return Err(self.last_errors.last().cloned().unwrap_or_else(|| {
                self.err(ErrorKind::Connect, "GET /api/v1/teams/{team}/pipelines/{pipeline}/jobs", "unreachable".into())
            }));
        }
        let unknown_jobs = self.read_builds().await?;
        // A build of a job whose steps were not in the last jobs list: read that list again.
        for pi in unknown_jobs {
            if !self.jobs_read_this_cycle[pi] && !self.cycle_broken {
                self.read_jobs(pi).await;
            }
        }

        if self.history_since.is_some() {
            self.prefetch_resources().await;
        }
        // Reads and messages for the builds that still need them: pipeline by pipeline, oldest
        // first. A build waits while its pipeline's jobs list has never been read (its steps'
        // resources are unknown).
        let mut facts: Vec<Fact> = std::mem::take(&mut self.horizons).into_iter().map(Fact::Horizon).collect();
        for pi in 0..self.cfg.pipelines.len() {
            let wp = self.cfg.pipelines[pi].clone();
            let ids: Vec<BuildId> = self.tracked.iter().filter(|(_, t)| t.pi == pi).map(|(id, _)| *id).collect();
            for id in ids {
                if self.cycle_broken {
                    break;
                }
                let steps_known = self.tracked.get(&id).is_some_and(|t| self.jobs[pi].contains_key(&*t.fact.job));
                if !steps_known && self.jobs_read_at[pi].is_none() {
                    continue;
                }
                self.complete_build(id, &wp, &mut facts).await;
            }
        }
        Ok(facts)
    }

    /// Remember a failure that does not fail the poll; connect/timeout ends the cycle.
    fn note(&mut self, e: SourceError) {
        if matches!(e.kind, ErrorKind::Connect | ErrorKind::Timeout) {
            self.cycle_broken = true;
        }
        if !self.last_errors.iter().any(|x| x.what == e.what && x.detail == e.detail) {
            self.last_errors.push(e);
        }
    }

    /// The pipeline's jobs list: each watched job's step → resource mapping. A failure (the
    /// pipeline gone, say) is noted and the list is read again next cycle.
    async fn read_jobs(&mut self, pi: usize) {
        self.jobs_read_this_cycle[pi] = true;
        let wp = self.cfg.pipelines[pi].clone();
        let what = format!("GET /api/v1/teams/{}/pipelines/{}/jobs", self.cfg.team, wp.name);
        let url = self.api(&["teams", &self.cfg.team, "pipelines", &wp.name, "jobs"]);
        let summaries = match self.get_json::<Vec<JobSummary>>(&url, &what).await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "concourse: pipeline jobs not read");
                self.note(e);
                self.jobs_read_at[pi] = None;
                return;
            }
        };
        self.jobs_read_at[pi] = Some(self.now);
        let by_step = |steps: &[JobStep]| -> BTreeMap<String, String> {
            steps.iter().map(|i| (i.name.clone(), i.resource.clone().unwrap_or_else(|| i.name.clone()))).collect()
        };
        let mut seen = HashSet::new();
        for s in summaries.into_iter().filter(|s| watched(&wp, &s.name)) {
            seen.insert(s.name.clone());
            let js = self.jobs[pi].entry(s.name.clone()).or_default();
            js.input_resources = by_step(&s.inputs);
            js.output_resources = by_step(&s.outputs);
        }
        // A job gone from the pipeline: its builds use Concourse's default (step = resource).
        self.jobs[pi].retain(|name, _| seen.contains(name));
        for job in wp.jobs.iter().filter(|j| !seen.contains(*j)) {
            if self.warned.insert((pi, job.clone())) {
                tracing::warn!(pipeline = %wp.name, job = %job, "concourse: watched job is not in the pipeline");
            }
        }
    }

    /// The team's builds since the cursor (or, the first time, the newest [`INITIAL_BUILDS`] of
    /// each watched job) into `tracked`. Returns the pipelines that showed a build of a job
    /// whose steps are unknown.
    async fn read_builds(&mut self) -> Result<BTreeSet<usize>, SourceError> {
        let lowest_unfinished = self.tracked.values().filter(|t| !t.fact.status.is_finished()).map(|t| t.fact.id).min();
        let from = match (self.max_id, lowest_unfinished) {
            (None, None) => None,
            (Some(m), None) => Some(m + 1),
            (None, Some(u)) => Some(u),
            (Some(m), Some(u)) => Some(u.min(m + 1)),
        };
        // A backfill's first listing walks back to its cutoff, the first read of `serve` until
        // each watched job has its initial builds.
        let since = self.history_since.filter(|_| from.is_none());
        let what = self.builds_what();
        // Whether the listing holds every build from `from` up (what the deletion check needs).
        let mut whole = true;
        // A first read that stopped before Concourse's first build (see `horizons` below).
        let mut cut_back = false;
        let (mut listed, complete, covered_to) = match from {
            Some(f) => {
                // Below the cursor (unfinished builds to look at again) the walk stops once it
                // covers the cursor; the new builds above it are a walk of their own, so a
                // build left unfinished for more than a cycle's pages cannot hold the reads back.
                let cursor = self.max_id.filter(|m| f <= *m);
                let (l, complete, covered) = self.walk_forward(f, MAX_PAGES, cursor).await?;
                match (complete, covered, cursor) {
                    (false, Some(c), Some(m)) => {
                        whole = c >= m;
                        let (l2, complete, covered) = self.walk_forward(c.max(m) + 1, MAX_PAGES, None).await?;
                        (merge_listings(l, l2), complete, covered)
                    }
                    _ => (l, complete, covered),
                }
            }
            None => {
                let max_pages = if since.is_some() { BACKFILL_MAX_PAGES } else { INITIAL_PAGES };
                let (back, reached_start) = self.walk_back(since, max_pages).await?;
                cut_back = !reached_start;
                // Walking back skips every rerun whose original is on a later page (Concourse
                // orders by COALESCE(rerun_of, id) but cuts pages by id). A forward pass over
                // the same range lists them; it ends at the newest build, so the cursor is exact.
                match back.iter().map(|b| b.id).min() {
                    None => (back, true, None),
                    Some(lowest) => {
                        let (fwd, complete, covered) = self.walk_forward(lowest, max_pages + 1, None).await?;
                        (merge_listings(back, fwd), complete, covered)
                    }
                }
            }
        };

        self.caught_up = complete;
        let max_known = self.max_id;
        let seen: HashSet<BuildId> = listed.iter().map(|b| b.id).collect();
        let mut max_seen = max_known.max(listed.iter().map(|b| b.id).max());
        if !complete {
            // An unfinished forward walk has listed every build up to `covered_to`, not
            // necessarily every one below its highest id: the next cycle continues from there.
            max_seen = max_known.max(covered_to.min(max_seen));
        }
        // A backfill's known history: from its cutoff, or, if its pages ran out first, from the
        // lowest build listed.
        let mut backfill_from: Option<(BuildId, i64)> = None;
        if let Some(t) = since {
            let reached = !cut_back || listed.iter().any(|b| time_of(b.start_time).is_some_and(|s| s < t));
            let lowest = listed.iter().min_by_key(|b| b.id).map(|b| (b.id, time_of(b.start_time).unwrap_or(t).max(t)));
            backfill_from = lowest.map(|(id, start)| (id, if reached { t } else { start }));
            // A backfill: builds before the cutoff are left out, but the cursor passes them.
            let first_kept =
                listed.iter().filter(|b| time_of(b.start_time).is_some_and(|s| s >= t)).map(|b| b.id).min();
            listed.retain(|b| match time_of(b.start_time) {
                Some(s) => s >= t,
                // Never started: still pending, or cancelled among kept builds.
                None => matches!(b.status.as_str(), "pending" | "started") || first_kept.is_some_and(|k| b.id >= k),
            });
        }
        // Only watched builds of this team, grouped by pipeline and job; the first read keeps
        // the newest INITIAL_BUILDS of each job (listed newest first), a backfill all of them.
        let mut per_job: HashMap<(usize, String), usize> = HashMap::new();
        let first_read = from.is_none() && since.is_none();
        let keep_since = self.first_read_since.filter(|_| first_read);
        // Per watched job on a first read: the newest build left out (highest id, latest start),
        // which is where the job's known history begins.
        let mut dropped: HashMap<(usize, String), (BuildId, Option<i64>)> = HashMap::new();
        // The lowest build listed: below it nothing was read (unless that is the first build).
        let listing_start = listed.iter().min_by_key(|b| b.id).map(|b| (b.id, time_of(b.start_time)));
        let mut unknown_jobs = BTreeSet::new();
        // The cursor may not pass a build that could not be read, or it would never be listed again.
        let mut first_skipped: Option<BuildId> = None;
        for b in listed {
            let (Some(pipeline), Some(job)) = (b.pipeline_name.as_deref(), b.job_name.as_deref()) else { continue };
            if b.team_name.as_deref().is_some_and(|t| t != self.cfg.team) {
                continue;
            }
            let Some(pi) = self.cfg.pipelines.iter().position(|p| p.name == pipeline) else { continue };
            if !watched(&self.cfg.pipelines[pi], job) {
                continue;
            }
            if first_read {
                let key = (pi, job.to_string());
                let n = per_job.entry(key.clone()).or_insert(0);
                *n += 1;
                // Listed newest first: past the initial count, only builds the reported commits
                // may need (started since the oldest one, or not started yet) are kept.
                let needed = keep_since.is_some_and(|t| time_of(b.start_time).is_none_or(|s| s >= t));
                if *n > INITIAL_BUILDS && !needed {
                    let e = dropped.entry(key).or_insert((b.id, None));
                    e.0 = e.0.max(b.id);
                    e.1 = e.1.max(time_of(b.start_time));
                    continue;
                }
            }
            let Some(status) = BuildStatus::parse(&b.status) else {
                // A status this version does not know: skip the build (listed again next cycle).
                let e = self.err(ErrorKind::Decode, &what, format!("build {}: unknown status {:?}", b.id, b.status));
                tracing::warn!(error = %e, "concourse: build skipped");
                self.note(e);
                first_skipped = first_skipped.min(Some(b.id)).or(Some(b.id));
                continue;
            };
            if !self.jobs[pi].contains_key(job) && !self.jobs_read_this_cycle[pi] {
                unknown_jobs.insert(pi);
            }
            let wp = &self.cfg.pipelines[pi];
            let url =
                url_with(&self.base, &["teams", &self.cfg.team, "pipelines", &wp.name, "jobs", job, "builds", &b.name]);
            let update = BuildFact {
                id: b.id,
                pipeline: wp.name.clone().into(),
                job: job.to_string().into(),
                name: b.name.into(),
                status,
                start: time_of(b.start_time),
                end: time_of(b.end_time),
                rerun_of: b.rerun_of.and_then(|r| r.id),
                url: url.to_string().into(),
                inputs: vec![],
                outputs: vec![],
                resources_known: false,
            };
            match self.tracked.get_mut(&update.id) {
                Some(t) => {
                    // Status only moves forward; what was read stays.
                    if status.is_finished() || !t.fact.status.is_finished() {
                        if status.is_finished() && !t.fact.status.is_finished() {
                            t.fact.resources_known = false;
                        }
                        t.fact.status = status;
                    }
                    t.fact.start = update.start.or(t.fact.start);
                    t.fact.end = update.end.or(t.fact.end);
                    t.fact.rerun_of = update.rerun_of.or(t.fact.rerun_of);
                    t.fact.name = update.name;
                    t.fact.url = update.url;
                }
                // Known and complete before: nothing to do.
                None if max_known.is_some_and(|m| update.id <= m) => {}
                None => {
                    self.tracked.insert(
                        update.id,
                        Tracked { pi, fact: update, read_started: false, read_final: false, emitted: None },
                    );
                }
            }
        }
        if first_read {
            self.horizons = self.first_read_horizons(cut_back, &dropped, listing_start);
        } else if let Some(at) = backfill_from {
            // Lowers a horizon an earlier first read left (the one reaching further back wins).
            self.horizons = self.first_read_horizons(true, &HashMap::new(), Some((at.0, Some(at.1))));
        }
        if let Some(skipped) = first_skipped {
            // Stay below the unreadable build so the next listing (from max + 1) includes it.
            max_seen = max_seen.min(Some(skipped - 1)).max(max_known);
        }
        self.max_id = max_seen;
        // An unfinished build a complete listing no longer shows was deleted: stop asking.
        if let (true, true, Some(f)) = (complete, whole, from) {
            let gone: Vec<BuildId> = self
                .tracked
                .iter()
                .filter(|(id, t)| **id >= f && !t.fact.status.is_finished() && !seen.contains(*id))
                .map(|(id, _)| *id)
                .collect();
            for id in gone {
                tracing::warn!(build = id, "concourse: unfinished build no longer listed; forgetting it");
                self.tracked.remove(&id);
            }
        }
        Ok(unknown_jobs)
    }

    /// With a token, the team's own list; without one only the global list shows public
    /// pipelines (the team list needs authentication).
    fn builds_path(&self) -> Vec<String> {
        if matches!(self.cfg.auth, ConcourseAuth::None) {
            vec!["builds".into()]
        } else {
            vec!["teams".into(), self.cfg.team.clone(), "builds".into()]
        }
    }

    fn builds_what(&self) -> String {
        format!("GET /api/v1/{}", self.builds_path().join("/"))
    }

    /// One page of the builds list with these query parameters (and `limit`).
    async fn builds_page(&mut self, params: &[(&str, i64)]) -> Result<(Vec<ApiBuild>, HeaderMap), SourceError> {
        let path = self.builds_path();
        let segments: Vec<&str> = path.iter().map(String::as_str).collect();
        let mut url = self.api(&segments);
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in params {
                q.append_pair(k, &v.to_string());
            }
            q.append_pair("limit", &PAGE_LIMIT.to_string());
        }
        let what = self.builds_what();
        self.get_json::<Vec<ApiBuild>>(&url, &what).await
    }

    /// Newest first through `rel="next"` (`to=`) pages, while a page is full and: a backfill's
    /// pages have not reached before its cutoff, or the first read's watched jobs lack their
    /// initial builds. This misses reruns whose original is on a later page; the caller follows
    /// it with [`Self::walk_forward`].
    /// Also returns whether it reached Concourse's first build (a page that is not full, or no
    /// older page).
    async fn walk_back(&mut self, since: Option<i64>, max_pages: usize) -> Result<(Vec<ApiBuild>, bool), SourceError> {
        let mut listed: Vec<ApiBuild> = vec![];
        let mut to: Option<i64> = None;
        let keep_since = self.first_read_since.filter(|_| since.is_none());
        for _ in 0..max_pages {
            let (page, headers) = match to {
                Some(t) => self.builds_page(&[("to", t)]).await?,
                None => self.builds_page(&[]).await?,
            };
            let n = page.len();
            // Build ids grow with time: once a page reaches before the cutoff, older ones do too.
            let reaches =
                |t: Option<i64>| t.is_some_and(|t| page.iter().filter_map(|b| time_of(b.start_time)).any(|s| s < t));
            let (reaches_back, reaches_first_since) = (reaches(since), reaches(keep_since));
            listed.extend(page);
            if n < PAGE_LIMIT {
                return Ok((listed, true));
            }
            let more = match since {
                Some(_) => !reaches_back,
                None => !self.initial_window_filled(&listed) || keep_since.is_some() && !reaches_first_since,
            };
            // Only the link's `to` is taken: the request keeps our own origin, path and token.
            let next_to = link_target(&headers, "next")
                .filter(|_| more)
                .and_then(|l| Url::parse(&l).ok().or_else(|| self.base.join(&l).ok()))
                .and_then(|u| u.query_pairs().find(|(k, _)| k == "to").and_then(|(_, v)| v.parse::<i64>().ok()));
            match next_to {
                Some(t) => to = Some(t),
                // A full page without an older one: the end of the history (checked, not assumed).
                None if more => return Ok((listed, true)),
                None => break,
            }
        }
        Ok((listed, false))
    }

    /// Per watched job after a first read: its builds from the horizon up are known, the older
    /// ones started at or before its time. That is after its newest build left out, or, when the
    /// listing stopped before Concourse's first build, after the lowest build listed. A job
    /// read back to its first build has no horizon.
    fn first_read_horizons(
        &self,
        cut_back: bool,
        dropped: &HashMap<(usize, String), (BuildId, Option<i64>)>,
        listing_start: Option<(BuildId, Option<i64>)>,
    ) -> Vec<HorizonFact> {
        let mut jobs: BTreeSet<(usize, String)> = dropped.keys().cloned().collect();
        for (pi, wp) in self.cfg.pipelines.iter().enumerate() {
            jobs.extend(wp.jobs.iter().map(|j| (pi, j.clone())));
            jobs.extend(self.jobs[pi].keys().filter(|j| watched(wp, j)).map(|j| (pi, j.clone())));
        }
        let mut out = vec![];
        for (pi, job) in jobs {
            let mut at: Option<(BuildId, i64)> = None;
            if let Some((id, start)) = dropped.get(&(pi, job.clone())) {
                // A build that never started cannot carry anything: it moves only the id.
                at = Some((id + 1, start.unwrap_or(i64::MIN)));
            }
            if let (true, Some((id, start))) = (cut_back, listing_start) {
                let start = start.unwrap_or(i64::MIN);
                at = Some(at.map_or((id, start), |(i, t)| (i.max(id), t.max(start))));
            }
            if let Some((since_id, since_time)) = at {
                out.push(HorizonFact { pipeline: self.cfg.pipelines[pi].name.clone(), job, since_id, since_time });
            }
        }
        out
    }

    /// Every build with an id at or above `from`, oldest pages first. Concourse's `rel="previous"`
    /// link is not followed: its `from` is the id of the lowest-ordered build above the page's
    /// newest *id*, so a rerun of an old build on the page makes it jump over builds (see
    /// ARCHITECTURE.md, "Complete build history"). Instead, a full `?from=F` page (the `limit`
    /// lowest builds in COALESCE(rerun_of, id) order with id ≥ F) holds every build with an id
    /// from F up to C, the COALESCE value of its last build in that order, so the next page is
    /// `from=C+1`. When C < F (a page of nothing but reruns of older builds) the id window
    /// `from=F&to=F+limit-1` is read instead: it cannot hold more than `limit` builds.
    /// With `until`, the walk also stops once it is complete up to that id.
    /// Returns the builds (deduplicated, newest first in Concourse's order), whether the walk
    /// reached the newest build, and otherwise the highest id up to which it is complete.
    async fn walk_forward(
        &mut self,
        from: BuildId,
        max_pages: usize,
        until: Option<BuildId>,
    ) -> Result<(Vec<ApiBuild>, bool, Option<BuildId>), SourceError> {
        let mut pages: Vec<ApiBuild> = vec![];
        let mut next = from;
        let window = PAGE_LIMIT as i64;
        let mut in_window = false;
        for _ in 0..max_pages {
            if until.is_some_and(|u| next > u) {
                break;
            }
            let (page, _) = if in_window {
                self.builds_page(&[("from", next), ("to", next + window - 1)]).await?
            } else {
                self.builds_page(&[("from", next)]).await?
            };
            let full = page.len() >= PAGE_LIMIT;
            let reach = page.iter().map(order_key).max().map(|(c, _)| c);
            pages.extend(page);
            if in_window {
                // The window is complete whatever it held; what is above it comes next.
                next += window;
                in_window = false;
                continue;
            }
            if !full {
                return Ok((merge_listings(vec![], pages), true, None));
            }
            match reach {
                Some(c) if c >= next => next = c + 1,
                _ => in_window = true,
            }
        }
        Ok((merge_listings(vec![], pages), false, Some(next - 1)))
    }

    /// The first read walks back until every watched job named in the configuration has its
    /// newest [`INITIAL_BUILDS`] builds (a pipeline watching all its jobs walks to the limit).
    fn initial_window_filled(&self, listed: &[ApiBuild]) -> bool {
        let mut counts: HashMap<(&str, &str), usize> = HashMap::new();
        for b in listed {
            if let (Some(p), Some(j)) = (b.pipeline_name.as_deref(), b.job_name.as_deref()) {
                *counts.entry((p, j)).or_insert(0) += 1;
            }
        }
        self.cfg.pipelines.iter().all(|wp| {
            !wp.jobs.is_empty()
                && wp
                    .jobs
                    .iter()
                    .all(|j| counts.get(&(wp.name.as_str(), j.as_str())).is_some_and(|n| *n >= INITIAL_BUILDS))
        })
    }

    /// Read what a tracked build still lacks, emit it if it changed, forget it when complete.
    async fn complete_build(&mut self, id: BuildId, wp: &WatchedPipeline, facts: &mut Vec<Fact>) {
        let Some(t) = self.tracked.get(&id).cloned() else { return };
        let status = t.fact.status;
        let need_read =
            if status.is_finished() { !t.read_final } else { status == BuildStatus::Started && !t.read_started };
        let mut t = t;
        if need_read {
            match self.build_resources(id, t.pi, &t.fact.job).await {
                Ok((inputs, outputs)) => {
                    t.fact.inputs = inputs;
                    t.fact.outputs = outputs;
                    t.fact.resources_known = true;
                    if status.is_finished() {
                        t.read_final = true;
                    } else {
                        t.read_started = true;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "concourse: build resources not read");
                    self.note(e);
                }
            }
        }
        let messages_done = self.fill_messages(&mut t, wp).await;
        if t.emitted.as_ref() != Some(&t.fact) {
            facts.push(Fact::Build(t.fact.clone()));
            t.emitted = Some(t.fact.clone());
        }
        if status.is_finished() && t.read_final && messages_done {
            self.tracked.remove(&id);
        } else {
            self.tracked.insert(id, t);
        }
    }

    /// Backfill: the `/resources` reads the loop in [`Self::poll_inner`] would make one by one
    /// (a year of lana is ~18 000, most of a backfill's time one at a time), made
    /// [`HISTORY_CONCURRENCY`] at a time first. A read that fails is dropped: the loop makes it
    /// again and handles the error (re-login, `last_errors`) as for any read.
    async fn prefetch_resources(&mut self) {
        use futures_util::stream::{self, StreamExt};
        let ids: Vec<BuildId> = self
            .tracked
            .iter()
            .filter(|(_, t)| {
                let s = t.fact.status;
                let need = if s.is_finished() { !t.read_final } else { s == BuildStatus::Started && !t.read_started };
                need && (self.jobs[t.pi].contains_key(&*t.fact.job) || self.jobs_read_at[t.pi].is_some())
            })
            .map(|(id, _)| *id)
            .collect();
        if ids.len() < 2 {
            return;
        }
        self.tally.add_total(ids.len() as u64);
        let token = self.token_value();
        let this = &*self;
        let got: Vec<(BuildId, BuildIo)> = stream::iter(ids)
            .map(|id| {
                let auth = token.as_deref().map(Auth::Bearer).unwrap_or(Auth::None);
                async move {
                    let url = this.api(&["builds", &id.to_string(), "resources"]);
                    let what = "GET /api/v1/builds/{id}/resources";
                    let r = this.with_retries::<BuildIo>(Method::GET, &url, what, auth, None).await;
                    this.tally.add_done(1);
                    r.ok().map(|(io, _)| (id, io))
                }
            })
            .buffer_unordered(HISTORY_CONCURRENCY)
            .filter_map(|x| async move { x })
            .collect()
            .await;
        self.prefetched = got.into_iter().collect();
    }

    /// `/builds/{id}/resources`, with each step's resource from the job's steps (an unknown
    /// step is taken to be named after its resource, Concourse's default).
    async fn build_resources(
        &mut self,
        id: BuildId,
        pi: usize,
        job: &str,
    ) -> Result<(Vec<VersionFact>, Vec<VersionFact>), SourceError> {
        let what = "GET /api/v1/builds/{id}/resources".to_string();
        let url = self.api(&["builds", &id.to_string(), "resources"]);
        let io = match self.prefetched.remove(&id) {
            Some(io) => io,
            None => self.get_json::<BuildIo>(&url, &what).await?.0,
        };
        // A step the last jobs list did not name: the pipeline was set again since; read it.
        let stale = self.jobs[pi].get(job).is_none_or(|js| {
            io.inputs.iter().any(|i| !js.input_resources.contains_key(&i.name))
                || io.outputs.iter().any(|o| !js.output_resources.contains_key(&o.name))
        });
        if stale && !self.jobs_read_this_cycle[pi] && !self.cycle_broken {
            self.read_jobs(pi).await;
        }
        let js = self.jobs[pi].get(job);
        let conv = |v: Vec<IoVersion>, map: Option<&BTreeMap<String, String>>| -> Vec<VersionFact> {
            v.into_iter()
                .map(|x| VersionFact {
                    resource: map.and_then(|m| m.get(&x.name)).cloned().unwrap_or_else(|| x.name.clone()),
                    step: x.name,
                    version: version_map(x.version),
                    message: None,
                })
                .collect()
        };
        Ok((conv(io.inputs, js.map(|j| &j.input_resources)), conv(io.outputs, js.map(|j| &j.output_resources))))
    }

    /// Fill `message` of the build's message inputs; whether none is left to look up.
    async fn fill_messages(&mut self, t: &mut Tracked, wp: &WatchedPipeline) -> bool {
        let finished = t.fact.status.is_finished();
        let mut done = true;
        for k in 0..t.fact.inputs.len() {
            let input = &t.fact.inputs[k];
            if input.message.is_some() || !wp.message_inputs.contains(&input.step) {
                continue;
            }
            let resource = input.resource.clone();
            let key: VersionKey =
                (t.pi, resource.clone(), input.version.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect());
            if let Some(cached) = self.messages.get(&key) {
                t.fact.inputs[k].message = cached.clone();
                continue;
            }
            if self.cycle_broken {
                done = false;
                continue;
            }
            let version = input.version.clone();
            let mut answer = self.version_message(&wp.name, &resource, &version).await;
            // A finished build's get stored the metadata, so with credentials its absence means
            // a token that died server-side: on a public pipeline Concourse then answers with
            // the public view (no metadata) instead of a 401. Log in again once and ask again.
            if finished && self.can_relogin() && matches!(answer, Ok(Metadata::Hidden)) {
                tracing::info!(resource = %resource, "concourse: version metadata hidden; logging in again");
                answer = match self.relogin().await {
                    Ok(()) => self.version_message(&wp.name, &resource, &version).await,
                    Err(e) => Err(e),
                };
            }
            match answer {
                Ok(meta) => {
                    let (message, metadata_seen) = match meta {
                        Metadata::Visible(m) => (m, true),
                        Metadata::Hidden | Metadata::NoVersion => (None, false),
                    };
                    t.fact.inputs[k].message = message.clone();
                    // Metadata appears once a get ran; until the build ends, absence may be temporary.
                    if message.is_some() || metadata_seen || finished {
                        if self.messages.len() >= MESSAGE_CACHE_CAP {
                            self.messages.clear();
                        }
                        self.messages.insert(key, message);
                    } else {
                        done = false;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "concourse: version metadata not read");
                    self.note(e);
                    done = false;
                }
            }
        }
        done
    }

    /// The `message` metadata of one version.
    async fn version_message(
        &mut self,
        pipeline: &str,
        resource: &str,
        version: &Version,
    ) -> Result<Metadata, SourceError> {
        let what = format!("GET /api/v1/teams/{}/pipelines/{pipeline}/resources/{resource}/versions", self.cfg.team);
        let mut url = self.api(&["teams", &self.cfg.team, "pipelines", pipeline, "resources", resource, "versions"]);
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in version.iter() {
                q.append_pair("filter", &format!("{k}:{v}"));
            }
        }
        let (versions, _) = self.get_json::<Vec<ApiVersion>>(&url, &what).await?;
        let exact = versions.iter().position(|v| version_map(v.version.clone()) == *version);
        let Some(v) = exact.or((!versions.is_empty()).then_some(0)).map(|i| &versions[i]) else {
            return Ok(Metadata::NoVersion);
        };
        let Some(md) = &v.metadata else { return Ok(Metadata::Hidden) };
        // cepler's get has no `message`: it names each file it changed (`{env}/path`) with
        // `[<short sha>] - <subject>` of the commit that last changed it; those lines are the text.
        let message = md.iter().find(|m| m.name == "message").and_then(|m| m.value.clone()).or_else(|| {
            let files: Vec<&str> =
                md.iter().filter(|m| m.name.starts_with('{')).filter_map(|m| m.value.as_deref()).collect();
            (!files.is_empty()).then(|| files.join("\n"))
        });
        Ok(Metadata::Visible(message))
    }

    /// The pipeline's configuration (`GET .../config`'s `config`), for check-config.
    pub async fn pipeline_config(&mut self, pipeline: &str) -> Result<Value, SourceError> {
        self.begin_call();
        self.ensure_token().await?;
        let what = format!("GET /api/v1/teams/{}/pipelines/{pipeline}/config", self.cfg.team);
        let url = self.api(&["teams", &self.cfg.team, "pipelines", pipeline, "config"]);
        let (reply, _) = self.get_json::<ConfigReply>(&url, &what).await?;
        Ok(reply.config)
    }

    /// Whether this Concourse has build `b` as the store knows it: the same pipeline, job and
    /// name under its id (`GET /api/v1/builds/:id`). `Ok(false)` when it has no such build (404)
    /// or another one under that id: another Concourse at the same URL, or its database was
    /// reset. Other failures are errors (nothing is known).
    pub async fn knows_build(&mut self, b: &crate::core::journey::BuildFact) -> Result<bool, SourceError> {
        self.begin_call();
        self.ensure_token().await?;
        let what = "GET /api/v1/builds/{id}".to_string();
        let url = self.api(&["builds", &b.id.to_string()]);
        match self.get_json::<ApiBuild>(&url, &what).await {
            Ok((a, _)) => Ok(a.id == b.id
                && a.pipeline_name.as_deref() == Some(&*b.pipeline)
                && a.job_name.as_deref() == Some(&*b.job)
                && *a.name == *b.name),
            Err(e) if e.kind == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The last `lines` log lines of a build, from its event stream: read until `end`, or for
    /// a running build until a few seconds pass (then the tail so far).
    pub async fn build_log_tail(&mut self, build_id: BuildId, lines: usize) -> Result<Vec<String>, SourceError> {
        self.begin_call();
        self.ensure_token().await?;
        let what = "GET /api/v1/builds/{id}/events".to_string();
        let url = self.api(&["builds", &build_id.to_string(), "events"]);
        let mut resp = match self.open_events(&url, &what).await {
            Err(f) if f.status == Some(401) && self.can_relogin() => {
                self.relogin().await?;
                self.open_events(&url, &what).await?
            }
            r => r?,
        };
        let deadline = tokio::time::Instant::now() + LOG_WAIT.min(self.cfg.timeout);
        let mut tail = LogTail::new(lines);
        let mut buf = String::new();
        loop {
            let chunk = match tokio::time::timeout_at(deadline, resp.chunk()).await {
                Err(_) => break,
                Ok(Ok(Some(c))) => c,
                Ok(Ok(None)) => break,
                // A running build's stream ends at our client timeout: keep what came.
                Ok(Err(e)) if e.is_timeout() => break,
                Ok(Err(e)) => {
                    let (kind, detail) = describe_transport(e);
                    return Err(self.err(kind, &what, detail));
                }
            };
            buf.push_str(&String::from_utf8_lossy(&chunk));
            if sse_drain(&mut buf, &mut tail) {
                break;
            }
        }
        Ok(tail.finish())
    }

    /// The log excerpt of a finished, failed build for pages and the JSON API
    /// ([`excerpt::excerpt`] of its last [`excerpt::EXCERPT_LINES`] log lines): one request.
    pub async fn failure_excerpt(&mut self, build_id: BuildId) -> Result<String, SourceError> {
        let lines = self.build_log_tail(build_id, excerpt::EXCERPT_LINES).await?;
        let secrets = self.secrets();
        Ok(excerpt::excerpt(&lines, &secrets))
    }

    async fn open_events(&self, url: &Url, what: &str) -> Result<reqwest::Response, Failed> {
        let token = self.token_value();
        let req = self.client.get(url.clone()).header(ACCEPT, "text/event-stream");
        let req = self.authorize(req, token.as_deref().map(Auth::Bearer).unwrap_or(Auth::None));
        let resp = req.send().await.map_err(|e| {
            let (kind, detail) = describe_transport(e);
            self.failed(kind, what, detail, None)
        });
        let resp = match resp {
            Ok(r) => r,
            Err(f) => {
                self.telemetry.record_request(SOURCE, RequestOutcome::Error(f.err.kind));
                return Err(f);
            }
        };
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            let mut resp = resp;
            let body = read_body_prefix(&mut resp, ERROR_BODY_LIMIT).await;
            let f = self.failed(
                kind_of_status(status),
                what,
                format!("HTTP {status}: {}", body_excerpt(&body, &self.secrets())),
                Some(status),
            );
            self.telemetry.record_request(SOURCE, RequestOutcome::Error(f.err.kind));
            return Err(f);
        }
        self.telemetry.record_request(SOURCE, RequestOutcome::Ok);
        Ok(resp)
    }

    // -------------------------------------------------------------- auth

    fn begin_call(&mut self) {
        self.relogin_left = true;
        self.cycle_broken = false;
        if self.now == 0 {
            self.now = crate::clock::unix_now();
        }
    }

    fn can_relogin(&self) -> bool {
        self.relogin_left && matches!(self.cfg.auth, ConcourseAuth::Password { .. })
    }

    fn token_value(&self) -> Option<String> {
        match &self.cfg.auth {
            ConcourseAuth::None => None,
            ConcourseAuth::Bearer(s) => Some(s.expose().to_string()),
            ConcourseAuth::Password { .. } => self.token.as_ref().map(|t| t.value.expose().to_string()),
        }
    }

    /// Log in when there is no token or it expires within [`RELOGIN_MARGIN`].
    async fn ensure_token(&mut self) -> Result<(), SourceError> {
        if !matches!(self.cfg.auth, ConcourseAuth::Password { .. }) {
            return Ok(());
        }
        let fresh = self.token.as_ref().is_some_and(|t| self.now < t.expires_at - RELOGIN_MARGIN);
        if fresh { Ok(()) } else { self.login().await }
    }

    async fn relogin(&mut self) -> Result<(), SourceError> {
        self.relogin_left = false;
        self.token = None;
        self.login().await
    }

    /// `fly login`'s password grant: `POST /sky/issuer/token`.
    async fn login(&mut self) -> Result<(), SourceError> {
        let ConcourseAuth::Password { username, password } = &self.cfg.auth else { return Ok(()) };
        let what = "POST /sky/issuer/token";
        let url = url_with(&self.base, &["sky", "issuer", "token"]);
        let body = form_encode(&[
            ("grant_type", "password"),
            ("username", username),
            ("password", password.expose()),
            ("scope", SCOPE),
        ]);
        let (reply, _) = self
            .with_retries::<TokenReply>(Method::POST, &url, what, Auth::FlyClient, Some(body))
            .await
            .map_err(SourceError::from)?;
        if reply.access_token.is_empty() {
            return Err(self.err(ErrorKind::Decode, what, "token answer without an access_token".into()));
        }
        // Concourse's longest sensible `--auth-duration` is far below a year; a larger answer is
        // garbage and must not overflow the expiry.
        let lifetime = reply.expires_in.filter(|s| *s > 0).unwrap_or(DEFAULT_TOKEN_LIFETIME).min(366 * 86_400);
        self.token =
            Some(Token { value: Secret::new(reply.access_token), expires_at: self.now.saturating_add(lifetime) });
        Ok(())
    }

    // -------------------------------------------------------------- HTTP

    fn api(&self, segments: &[&str]) -> Url {
        let mut all = vec!["api", "v1"];
        all.extend_from_slice(segments);
        url_with(&self.base, &all)
    }

    fn secrets(&self) -> Vec<&str> {
        let mut s = vec![];
        match &self.cfg.auth {
            ConcourseAuth::None => {}
            ConcourseAuth::Bearer(t) => s.push(t.expose()),
            ConcourseAuth::Password { password, .. } => s.push(password.expose()),
        }
        if let Some(t) = &self.token {
            s.push(t.value.expose());
        }
        s
    }

    fn err(&self, kind: ErrorKind, what: &str, detail: String) -> SourceError {
        SourceError {
            source_name: SOURCE,
            kind,
            what: what.to_string(),
            detail: scrub(detail, &self.secrets()),
            retry_after: None,
        }
    }

    fn failed(&self, kind: ErrorKind, what: &str, detail: String, status: Option<u16>) -> Failed {
        Failed { err: self.err(kind, what, detail), status }
    }

    fn authorize(&self, req: reqwest::RequestBuilder, auth: Auth<'_>) -> reqwest::RequestBuilder {
        match auth {
            Auth::None => req,
            Auth::Bearer(t) => {
                let mut v = HeaderValue::from_str(&format!("Bearer {t}")).unwrap_or(HeaderValue::from_static(""));
                v.set_sensitive(true);
                req.header(AUTHORIZATION, v)
            }
            Auth::FlyClient => req.basic_auth(FLY_CLIENT.0, Some(FLY_CLIENT.1)),
        }
    }

    /// GET with retries; on a 401 (password auth) log in again once and repeat once.
    async fn get_json<T: DeserializeOwned>(&mut self, url: &Url, what: &str) -> Result<(T, HeaderMap), SourceError> {
        let token = self.token_value();
        let auth = token.as_deref().map(Auth::Bearer).unwrap_or(Auth::None);
        match self.with_retries::<T>(Method::GET, url, what, auth, None).await {
            Err(f) if f.status == Some(401) && self.can_relogin() => {
                tracing::info!("concourse: token refused; logging in again");
                self.relogin().await?;
                let token = self.token_value();
                let auth = token.as_deref().map(Auth::Bearer).unwrap_or(Auth::None);
                Ok(self.with_retries::<T>(Method::GET, url, what, auth, None).await?)
            }
            r => Ok(r?),
        }
    }

    async fn with_retries<T: DeserializeOwned>(
        &self,
        method: Method,
        url: &Url,
        what: &str,
        auth: Auth<'_>,
        form: Option<String>,
    ) -> Result<(T, HeaderMap), Failed> {
        let mut delays = backoff(self.retry_base);
        loop {
            let result = self.attempt::<T>(method.clone(), url, what, auth, form.clone()).await;
            self.telemetry.record_request(
                SOURCE,
                match &result {
                    Ok(_) => RequestOutcome::Ok,
                    Err(f) => RequestOutcome::Error(f.err.kind),
                },
            );
            match result {
                Ok(r) => return Ok(r),
                Err(f) => match next_delay(&f.err, &mut delays) {
                    Some(d) => {
                        tracing::debug!(error = %f.err, delay_ms = d.as_millis() as u64, "concourse: retrying");
                        tokio::time::sleep(d).await;
                    }
                    None => return Err(f),
                },
            }
        }
    }

    /// One request: send, classify, decode.
    async fn attempt<T: DeserializeOwned>(
        &self,
        method: Method,
        url: &Url,
        what: &str,
        auth: Auth<'_>,
        form: Option<String>,
    ) -> Result<(T, HeaderMap), Failed> {
        // The token answer is small; lists can be long.
        let limit = if method == Method::POST { TOKEN_BODY_LIMIT } else { LIST_BODY_LIMIT };
        // A token grant's answer carries a fresh token: never excerpted, whatever went wrong.
        let token_answer = matches!(auth, Auth::FlyClient);
        let mut req = self.authorize(self.client.request(method, url.clone()), auth).header(ACCEPT, "application/json");
        if let Some(body) = form {
            req = req.header(CONTENT_TYPE, "application/x-www-form-urlencoded").body(body);
        }
        let mut resp = req.send().await.map_err(|e| {
            let (kind, detail) = describe_transport(e);
            self.failed(kind, what, detail, None)
        })?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        if !(200..300).contains(&status) {
            let body = read_body_prefix(&mut resp, ERROR_BODY_LIMIT).await;
            // Redirects are not followed (see the client): name where it pointed, since a 302's
            // body is usually empty. Typically a URL that is not the API's (a proxy's login page).
            let location = match headers.get(reqwest::header::LOCATION) {
                Some(l) if (300..400).contains(&status) => {
                    format!(
                        " redirect to {:?}, not followed (Concourse's API does not redirect; is concourse.url right?)",
                        location_shown(l.as_bytes())
                    )
                }
                _ => String::new(),
            };
            let mut f = self.failed(
                kind_of_status(status),
                what,
                if token_answer {
                    format!("HTTP {status}:{location} {}", token_answer_error(&body)).trim_end().to_string()
                } else {
                    format!("HTTP {status}:{location} {}", body_excerpt(&body, &self.secrets())).trim_end().to_string()
                },
                Some(status),
            );
            f.err.retry_after = headers
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            return Err(f);
        }
        let body = read_body(&mut resp, limit).await.map_err(|e| {
            let (kind, detail) = e.describe();
            self.failed(kind, what, detail, Some(status))
        })?;
        let parsed = serde_json::from_slice::<T>(&body).map_err(|e| {
            self.failed(
                ErrorKind::Decode,
                what,
                if token_answer {
                    token_decode_error(&e, body.len())
                } else {
                    format!("{e} (body: {})", body_excerpt(&body, &self.secrets()))
                },
                Some(status),
            )
        })?;
        Ok((parsed, headers))
    }
}

/// A `Location` as it may be shown: without userinfo or query (either can carry a credential),
/// at most 200 characters.
fn location_shown(raw: &[u8]) -> String {
    let l = String::from_utf8_lossy(raw);
    let l = match reqwest::Url::parse(&l) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.to_string()
        }
        Err(_) => l.split(['?', '#']).next().unwrap_or("").to_string(),
    };
    l.chars().take(200).collect()
}

fn watched(wp: &WatchedPipeline, job: &str) -> bool {
    wp.jobs.is_empty() || wp.jobs.iter().any(|j| j == job)
}

/// The last N lines of a stream of log payloads.
struct LogTail {
    cap: usize,
    lines: VecDeque<String>,
    partial: String,
}

impl LogTail {
    fn new(cap: usize) -> LogTail {
        LogTail { cap, lines: VecDeque::new(), partial: String::new() }
    }
    fn push(&mut self, text: &str) {
        self.partial.push_str(text);
        while let Some(i) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=i).collect();
            self.line(line.trim_end_matches(['\n', '\r']).to_string());
        }
    }
    fn line(&mut self, l: String) {
        if self.cap == 0 {
            return;
        }
        if self.lines.len() == self.cap {
            self.lines.pop_front();
        }
        self.lines.push_back(l);
    }
    fn finish(mut self) -> Vec<String> {
        if !self.partial.is_empty() {
            let p = std::mem::take(&mut self.partial);
            self.line(p);
        }
        self.lines.into()
    }
}

/// Consume complete SSE events from `buf`, feeding log payloads to `tail`; true at `end`.
fn sse_drain(buf: &mut String, tail: &mut LogTail) -> bool {
    loop {
        let normalized = buf.replace("\r\n", "\n");
        if normalized.len() != buf.len() {
            *buf = normalized;
        }
        let Some(i) = buf.find("\n\n") else { return false };
        let block: String = buf.drain(..i + 2).collect();
        let mut event = "message";
        let mut data = String::new();
        for line in block.lines() {
            let (field, value) =
                line.split_once(':').map(|(f, v)| (f, v.strip_prefix(' ').unwrap_or(v))).unwrap_or((line, ""));
            match field {
                "event" => {
                    event = if value == "end" {
                        "end"
                    } else if value == "event" {
                        "event"
                    } else {
                        "other"
                    }
                }
                "data" => {
                    if !data.is_empty() {
                        data.push('\n');
                    }
                    data.push_str(value);
                }
                _ => {}
            }
        }
        match event {
            "end" => return true,
            "event" => {
                if let Ok(env) = serde_json::from_str::<Envelope>(&data)
                    && env.event == "log"
                    && let Some(p) = env.data.get("payload").and_then(Value::as_str)
                {
                    tail.push(p);
                }
            }
            _ => {}
        }
    }
}

/// Entry point for fuzzing (`fuzz/fuzz_targets/concourse_json.rs`): `body` read as every answer
/// this client decodes, through the helpers the poll uses on them (statuses, times, versions,
/// metadata, build URLs, the token lifetime, the event stream's log tail, error excerpts).
/// Returns how many answer shapes accepted it. Whatever the bytes, it must not panic.
#[doc(hidden)]
pub fn decode_answers(body: &[u8]) -> usize {
    let mut accepted = 0;
    let base = Url::parse("https://ci.example.com").expect("a fixed, valid URL");
    if let Ok(jobs) = serde_json::from_slice::<Vec<JobSummary>>(body) {
        accepted += 1;
        for j in jobs {
            let _ = j.name;
            let _: Vec<(String, Option<String>)> =
                j.inputs.into_iter().chain(j.outputs).map(|s| (s.name, s.resource)).collect();
        }
    }
    let mut builds = serde_json::from_slice::<Vec<ApiBuild>>(body).unwrap_or_default();
    accepted += usize::from(!builds.is_empty());
    if let Ok(b) = serde_json::from_slice::<ApiBuild>(body) {
        accepted += 1;
        builds.push(b);
    }
    for b in builds {
        let _ = BuildStatus::parse(&b.status);
        let _ = (time_of(b.start_time), time_of(b.end_time), b.rerun_of.and_then(|r| r.id));
        let _ = (b.pipeline_name, b.job_name, b.team_name);
        let _ = url_with(&base, &["teams", "dev", "pipelines", "p", "jobs", "j", "builds", &b.name]);
    }
    if let Ok(io) = serde_json::from_slice::<BuildIo>(body) {
        accepted += 1;
        for v in io.inputs.into_iter().chain(io.outputs) {
            let _ = (v.name, version_map(v.version));
        }
    }
    if let Ok(versions) = serde_json::from_slice::<Vec<ApiVersion>>(body) {
        accepted += 1;
        for v in versions {
            let _ = version_map(v.version);
            let _ = v.metadata.and_then(|md| md.into_iter().find(|m| m.name == "message").and_then(|m| m.value));
        }
    }
    if let Ok(t) = serde_json::from_slice::<TokenReply>(body) {
        accepted += 1;
        let lifetime = t.expires_in.filter(|s| *s > 0).unwrap_or(DEFAULT_TOKEN_LIFETIME).min(366 * 86_400);
        let _ = i64::MAX.saturating_add(lifetime);
    }
    if serde_json::from_slice::<ConfigReply>(body).is_ok() {
        accepted += 1;
    }
    // The build event stream arrives in arbitrary chunks: feed it in two.
    let text = String::from_utf8_lossy(body);
    let mut tail = LogTail::new(20);
    let mut buf = String::new();
    let mid = text.char_indices().nth(text.chars().count() / 2).map(|(i, _)| i).unwrap_or(0);
    for chunk in [&text[..mid], &text[mid..]] {
        buf.push_str(chunk);
        if sse_drain(&mut buf, &mut tail) {
            break;
        }
    }
    accepted += tail.finish().len().min(1);
    let _ = body_excerpt(body, &["viewer-password"]);
    accepted
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The serve loop runs both polls on a multi-threaded runtime.
    #[allow(dead_code)]
    fn poll_futures_are_send(g: &mut crate::sources::github::GithubSource, c: &mut ConcourseSource) {
        fn send<T: Send>(_: T) {}
        send(g.poll(0));
        send(c.poll(0));
        send(c.build_log_tail(1, 10));
        fn shared<T: Send + Sync>() {}
        shared::<SourceTelemetry>();
    }

    #[test]
    fn job_summaries_decode_leniently() {
        let s: Vec<JobSummary> = serde_json::from_str(
            r#"[{"id":1,"name":"unit","pipeline_id":3,"next_build":{"id":3,"name":"2","status":"started",
                 "start_time":1718000000,"end_time":-62135596800},"inputs":[{"name":"src","resource":"repo"}],
                 "unknown":{"x":1}},
                {"name":"old","next_build":null,"finished_build":null,"inputs":null}]"#,
        )
        .unwrap();
        assert_eq!(s[0].name, "unit");
        assert_eq!(s[0].inputs[0].resource.as_deref(), Some("repo"));
        assert!(s[1].inputs.is_empty() && s[1].outputs.is_empty());
        assert_eq!(time_of(Some(-62_135_596_800)), None);
        assert_eq!(time_of(Some(0)), None);
        assert_eq!(time_of(Some(5)), Some(5));
    }

    #[test]
    fn builds_and_resources_decode_leniently() {
        let b: ApiBuild = serde_json::from_str(
            r#"{"id":3,"team_name":"main","name":"1.1","status":"started","api_url":"/api/v1/builds/3",
                "job_name":"unit","start_time":1718000000,"rerun_number":1,"rerun_of":{"id":2,"name":"1"},"created_by":"alice"}"#,
        )
        .unwrap();
        assert_eq!((b.rerun_of.and_then(|r| r.id), b.end_time), (Some(2), None));
        let empty: ApiBuild = serde_json::from_str(r#"{"id":4,"status":"pending","rerun_of":{}}"#).unwrap();
        assert!(empty.rerun_of.unwrap().id.is_none());
        let io: BuildIo = serde_json::from_str(
            r#"{"inputs":[{"name":"src","version":{"ref":"abc","n":5},"first_occurrence":true}],"outputs":null}"#,
        )
        .unwrap();
        let v = version_map(io.inputs.into_iter().next().unwrap().version);
        assert_eq!(v.get("ref"), Some("abc"));
        assert_eq!(v.get("n"), Some("5"));
        assert!(io.outputs.is_empty());
    }

    #[test]
    fn event_streams_yield_the_log_tail() {
        let mut tail = LogTail::new(2);
        let mut buf = String::from(concat!(
            "id: 0\nevent: event\ndata: {\"data\":{\"status\":\"started\"},\"event\":\"status\",\"version\":\"1.0\"}\n\n",
            "id: 1\nevent: event\ndata: {\"data\":{\"payload\":\"one\\ntwo\\n\",\"origin\":{}},\"event\":\"log\",\"version\":\"5.1\"}\n\n",
            "id: 2\nevent: event\ndata: {\"data\":{\"payload\":\"thr\"},\"event\":\"log\",\"version\":\"5.1\"}\n\n",
            "id: 3\nevent: event\ndata: {\"data\":{\"payload\":\"ee\\n\"},\"event\":\"log\",\"version\":\"5.1\"}\n\nid: 4\nevent: e",
        ));
        assert!(!sse_drain(&mut buf, &mut tail));
        buf.push_str("nd\ndata\n\n");
        assert!(sse_drain(&mut buf, &mut tail));
        assert_eq!(tail.finish(), vec!["two", "three"]);
    }
}
