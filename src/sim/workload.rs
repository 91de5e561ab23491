//! What happens in the simulated world, as [`Action`]s at times:
//!
//! - [`Scenario`]: a small readable YAML script for tests ("three commits land while tests run",
//!   "testflight fails, then a fix lands"), with commit ids a test can resolve to shas afterwards
//!   and [`truth`] to read the engine's ground truth for a commit;
//! - [`LanaWorkload`]: seeded random traffic calibrated on lana-bank's `main`
//!   (`shared/reference/lana-pipeline.md` §4), with real file lists sampled from
//!   `tests/data/lana-bank-main.jsonl` through the derived table `scenarios/lana-files.json`.
//!
//! Both only *produce* actions; the engine decides everything that follows from them.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Gamma, LogNormal, Poisson};
use serde::{Deserialize, Serialize};

use super::engine::cepler::GatePin;
use super::engine::{Action, BuildOverride, CommitSpec, PullHistory, World, fnv};
use super::model::{BuildStatus, Person, ReviewState, Sha};
use super::topology::{ResourceSpec, Topology, TopologyError};

#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// YAML that does not fit the format; serde_norway's message starts with the path
    /// (`events[3].commit.files: invalid type ...`).
    #[error("scenario {origin}: {source}")]
    Parse { origin: String, source: serde_norway::Error },
    #[error("scenario {origin}: {path}: {msg}")]
    Invalid { origin: String, path: String, msg: String },
    #[error("scenario {origin}: {source}")]
    Io { origin: String, source: std::io::Error },
    #[error("scenario {origin}: topology: {source}")]
    Topology { origin: String, source: TopologyError },
}

// ================================================================ scenarios

/// How long jobs take in a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durations {
    /// Every build takes its job's median, so timings in a test are exact.
    #[default]
    Fixed,
    /// The topology's log-normal durations.
    Random,
}

/// Whether builds fail on their own in a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Failures {
    /// No random failures, errors or flaky attempts: only `next_build` overrides fail builds.
    #[default]
    None,
    /// The topology's failure, error and flake rates.
    Random,
}

/// The topology's scheduled humans (e.g. merging the promote PR every ~4 days).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Humans {
    /// Left out: a scenario lists everything that happens.
    #[default]
    Off,
    On,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    topology: String,
    #[serde(default)]
    seed: u64,
    #[serde(default)]
    durations: Durations,
    #[serde(default)]
    failures: Failures,
    #[serde(default)]
    humans: Humans,
    #[serde(default)]
    events: Vec<RawEvent>,
    #[serde(default = "default_run_for", with = "humantime_serde")]
    run_for: Duration,
}

fn default_run_for() -> Duration {
    Duration::from_secs(6 * 3600)
}

/// One event: `at` plus exactly one of `commit`, `job` + `next_build`, `rerun`, `trigger`,
/// `pause`, `unpause`, `pull_request`, `review`, `gate`, `pin_version`, `unpin_version`,
/// `revert`, `hotfix`, `ready_for_review`, `push`, `merge`. (A struct of options rather than an enum: `deny_unknown_fields` does not work with
/// `#[serde(flatten)]`, and an enum tag would make the YAML less readable.)
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvent {
    #[serde(with = "humantime_serde")]
    at: Duration,
    #[serde(default)]
    commit: Option<RawCommit>,
    #[serde(default)]
    job: Option<String>,
    #[serde(default)]
    next_build: Option<RawNextBuild>,
    #[serde(default)]
    rerun: Option<String>,
    /// With `rerun`: the build name to rerun (default: the job's latest non-rerun build).
    #[serde(default)]
    build: Option<String>,
    /// With `rerun` or `trigger`: who does it.
    #[serde(default)]
    by: Option<String>,
    /// Trigger a new build of `pipeline/job` by hand (`fly trigger-job`).
    #[serde(default)]
    trigger: Option<String>,
    /// `fly pause-job` / `fly unpause-job` on `pipeline/job`.
    #[serde(default)]
    pause: Option<String>,
    #[serde(default)]
    unpause: Option<String>,
    #[serde(default)]
    pull_request: Option<RawPull>,
    #[serde(default)]
    review: Option<RawReview>,
    /// A human pushes the cepler gates file.
    #[serde(default)]
    gate: Option<RawGate>,
    /// `fly pin-resource` of `pipeline/resource` to the version of its environment's gate.
    #[serde(default)]
    pin_version: Option<String>,
    #[serde(default)]
    unpin_version: Option<String>,
    /// `git revert` of a scenario commit, pushed to the tracked branch.
    #[serde(default)]
    revert: Option<RawRevert>,
    /// A pull request labelled `hotfix`, squash-merged after `merge_after`.
    #[serde(default)]
    hotfix: Option<RawHotfix>,
    /// A draft pull request marked ready for review.
    #[serde(default)]
    ready_for_review: Option<RawPullRef>,
    /// A commit pushed to an open pull request.
    #[serde(default)]
    push: Option<RawPush>,
    /// A human squash-merges an approved pull request; `id` names the merge commit.
    #[serde(default)]
    merge: Option<RawMerge>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPullRef {
    number: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPush {
    number: u64,
    files: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMerge {
    number: u64,
    #[serde(default)]
    id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGate {
    environment: String,
    pin: RawPin,
    #[serde(default)]
    by: Option<String>,
}

/// `head`, `{ recorded: <environment>, back: N }` or `{ sha: <hex> }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawPin {
    Word(String),
    Recorded {
        recorded: String,
        #[serde(default)]
        back: usize,
    },
    Sha {
        sha: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRevert {
    #[serde(default)]
    id: Option<String>,
    /// The id of the reverted commit.
    of: String,
    #[serde(default)]
    author: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHotfix {
    #[serde(default)]
    id: Option<String>,
    number: u64,
    title: String,
    files: Vec<String>,
    #[serde(default = "default_author")]
    author: String,
    #[serde(default = "default_merge_after", with = "humantime_serde")]
    merge_after: Duration,
}

fn default_merge_after() -> Duration {
    Duration::from_secs(600)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommit {
    #[serde(default)]
    id: Option<String>,
    files: Vec<String>,
    #[serde(default)]
    message: Option<String>,
    /// GitHub login of the author.
    #[serde(default)]
    author: Option<String>,
    /// Default: the topology's tracked repo and branch.
    #[serde(default)]
    repo: Option<String>,
    #[serde(default)]
    branch: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNextBuild {
    #[serde(default, with = "humantime_serde")]
    duration: Option<Duration>,
    #[serde(default)]
    result: Option<BuildResult>,
    #[serde(default)]
    fail_first_attempt: bool,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum BuildResult {
    Succeeded,
    Failed,
    Errored,
    Aborted,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPull {
    number: u64,
    title: String,
    files: Vec<String>,
    #[serde(default = "default_author")]
    author: String,
    #[serde(default)]
    head: Option<String>,
    #[serde(default)]
    repo: Option<String>,
    /// Opened as a draft (`ready_for_review` marks it ready).
    #[serde(default)]
    draft: bool,
    /// The head branch's first commit was authored this long before the PR opened (the
    /// `coding` phase); without it the PR has no commit of its own.
    #[serde(default, with = "humantime_serde")]
    coded_for: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReview {
    number: u64,
    user: String,
    state: RawReviewState,
    #[serde(default)]
    repo: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RawReviewState {
    Approved,
    ChangesRequested,
    Commented,
}

fn default_author() -> String {
    "alice".into()
}

/// A parsed, validated scenario. Build a world from it with [`Scenario::build_world`] or
/// [`Scenario::run`]. The format (unknown keys are errors; `at` is relative to the start):
///
/// ```yaml
/// topology: lana          # a built-in name, or a path (relative to the scenario file)
/// seed: 1                 # default 0
/// durations: fixed        # default; every build takes its median. Or `random`
/// failures: none          # default; nothing fails unless told to. Or `random`
/// humans: off             # default; `on` keeps the topology's scheduled humans
/// events:
///   - at: 0m
///     commit: { id: a, files: [core/x.rs], message: "feat: a", author: bob }  # repo, branch optional
///   - at: 1m
///     job: lana-bank/test-bats
///     next_build: { fail_first_attempt: true }   # and/or result: failed, duration: 27m
///   - at: 40m
///     rerun: lana-bank/test-bats                 # optional build: "3", by: carol
///   - at: 45m
///     trigger: lana-bank/build-rc                # fly trigger-job; optional by: carol
///   - at: 46m
///     pause: galoy-staging/galoy-staging-lana-bank   # fly pause-job; later unpause: the same
///   - at: 50m
///     pull_request: { number: 4242, title: "feat: z", files: [core/z.rs], author: bob }
///                         # draft: true; coded_for: 3h (a head commit authored 3 h before)
///   - at: 51m
///     review: { number: 4242, user: carol, state: approved }   # changes_requested, commented
///   - at: 52m
///     ready_for_review: { number: 4242 }   # a draft marked ready
///   - at: 53m
///     push: { number: 4242, files: [core/z2.rs] }   # a commit on the PR's head (new Actions runs)
///   - at: 54m
///     merge: { number: 4242, id: z }   # squash-merged by a human (needs an approval); id: the merge
///   - at: 2h
///     gate: { environment: gcp-volcano-production, pin: head, by: carol }  # cepler-gates push;
///                         # pin: { recorded: <environment>, back: 1 } or { sha: <hex> }
///   - at: 2h1m
///     pin_version: galoy-production/lana-bank-production   # to the gate's version; unpin_version
///   - at: 20h
///     revert: { id: r, of: a, author: bob }       # `Revert "<subject>"` + `This reverts commit <sha>.`
///   - at: 21h
///     hotfix: { id: h, number: 4301, title: "fix: x", files: [core/x.rs] }  # labelled, merged after 10m
/// run_for: 3h             # default 6h
/// ```
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Where it came from (a path, or a name given to [`Scenario::parse`]), for messages.
    pub origin: String,
    /// The `topology:` value as written.
    pub topology_name: String,
    /// The topology as loaded, before `durations`/`failures`/`humans` are applied.
    pub topology: Topology,
    pub seed: u64,
    pub durations: Durations,
    pub failures: Failures,
    pub humans: Humans,
    /// In file order; scheduled stably by `at`.
    pub events: Vec<ScenarioEvent>,
    /// Seconds after the start that [`Scenario::run`] advances to.
    pub run_for: i64,
    /// Revert id → the id of the commit it reverts.
    pub reverts: BTreeMap<String, String>,
    /// Hotfix id → (seconds after the start it merges, its squash message).
    pub merged: BTreeMap<String, (i64, String)>,
}

#[derive(Debug, Clone)]
pub struct ScenarioEvent {
    /// Seconds after the scenario start.
    pub at: i64,
    /// The commit id, for `commit` events that name one.
    pub id: Option<String>,
    pub action: Action,
}

/// What a built scenario needs to resolve its commit ids once they have landed.
#[derive(Debug, Clone)]
pub struct ScenarioRun {
    pub start: i64,
    pub end: i64,
    /// Commit id → where and when it lands, to find its sha afterwards.
    pub ids: BTreeMap<String, CommitRef>,
    /// Revert id → the id of the commit it reverts (its sha is known only once that landed).
    pub reverts: BTreeMap<String, String>,
}

/// A scheduled commit, identified by what it will look like on its branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitRef {
    pub repo: String,
    pub branch: String,
    /// Absolute landing time (the commit's committer date).
    pub at: i64,
    pub message: String,
    /// Among scheduled commits with the same repo, branch, time and message, this is the n-th.
    pub ordinal: usize,
}

impl Scenario {
    pub fn load(path: impl AsRef<Path>) -> Result<Scenario, WorkloadError> {
        let path = path.as_ref();
        let origin = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|source| WorkloadError::Io { origin: origin.clone(), source })?;
        Scenario::parse_in(&text, &origin, path.parent())
    }

    /// Parse a scenario; a `topology:` path is taken relative to the working directory.
    pub fn parse(text: &str, origin: &str) -> Result<Scenario, WorkloadError> {
        Scenario::parse_in(text, origin, None)
    }

    fn parse_in(text: &str, origin: &str, dir: Option<&Path>) -> Result<Scenario, WorkloadError> {
        let raw: RawScenario =
            serde_norway::from_str(text).map_err(|source| WorkloadError::Parse { origin: origin.into(), source })?;
        let bad = |path: String, msg: String| WorkloadError::Invalid { origin: origin.into(), path, msg };
        let topology = match Topology::builtin(&raw.topology) {
            Some(t) => t,
            None => {
                // A path in a scenario file is relative to that file.
                let p = match dir {
                    Some(d) if Path::new(&raw.topology).is_relative() => d.join(&raw.topology),
                    _ => Path::new(&raw.topology).to_path_buf(),
                };
                if !p.exists() {
                    return Err(bad(
                        "topology".into(),
                        format!("{:?} is neither a built-in topology (lana, lana-two-repos) nor a file", raw.topology),
                    ));
                }
                Topology::load(&p.to_string_lossy())
                    .map_err(|source| WorkloadError::Topology { origin: origin.into(), source })?
            }
        };
        let tracked = (topology.tracked_repo.clone(), topology.tracked_branch.clone());
        let known_repo = |r: &str| topology.repos.iter().any(|x| x.name == r);
        let job_of = |path: String, s: &str| -> Result<(String, String), WorkloadError> {
            let (p, j) = s.split_once('/').ok_or_else(|| bad(path.clone(), format!("{s:?}: expected pipeline/job")))?;
            let ok = topology.pipelines.iter().any(|ps| ps.name == p && ps.jobs.iter().any(|js| js.name == j));
            if !ok {
                return Err(bad(path, format!("no job {j:?} in pipeline {p:?} of topology {}", raw.topology)));
            }
            Ok((p.to_string(), j.to_string()))
        };
        let mut events = vec![];
        let mut seen_ids: BTreeMap<String, usize> = BTreeMap::new();
        // Commit id → (time after start, message, branch) of tracked-repo commits, for reverts.
        let mut commit_times: BTreeMap<String, (i64, String, String)> = BTreeMap::new();
        // Revert id → the id of the commit it reverts; hotfix id → (merge time, squash message).
        let mut reverts: BTreeMap<String, String> = BTreeMap::new();
        let mut merged_ids: BTreeMap<String, (i64, String)> = BTreeMap::new();
        // Pull request number → title, for the squash message of a `merge`.
        let mut pull_titles: BTreeMap<u64, String> = BTreeMap::new();
        let mut n_commits = 0;
        for (k, e) in raw.events.into_iter().enumerate() {
            let path = format!("events[{k}]");
            let at = e.at.as_secs() as i64;
            let kinds = [
                e.commit.is_some(),
                e.job.is_some() || e.next_build.is_some(),
                e.rerun.is_some(),
                e.trigger.is_some(),
                e.pause.is_some(),
                e.unpause.is_some(),
                e.pull_request.is_some(),
                e.review.is_some(),
                e.gate.is_some(),
                e.pin_version.is_some(),
                e.unpin_version.is_some(),
                e.revert.is_some(),
                e.hotfix.is_some(),
                e.ready_for_review.is_some(),
                e.push.is_some(),
                e.merge.is_some(),
            ];
            if kinds.iter().filter(|x| **x).count() != 1 {
                return Err(bad(
                    path,
                    "needs exactly one of commit, job + next_build, rerun, trigger, pause, unpause, pull_request, \
                     review, gate, pin_version, unpin_version, revert, hotfix, ready_for_review, push, merge"
                        .into(),
                ));
            }
            if e.build.is_some() && e.rerun.is_none() {
                return Err(bad(path, "build goes with rerun".into()));
            }
            if e.by.is_some() && e.rerun.is_none() && e.trigger.is_none() {
                return Err(bad(path, "by goes with rerun or trigger".into()));
            }
            let (id, action) = if let Some(g) = e.gate {
                let gated = topology.pipelines.iter().flat_map(|p| p.resources.values()).find_map(|r| match r {
                    ResourceSpec::Cepler { repo, environment, gates_branch: Some(gb), .. }
                        if *environment == g.environment =>
                    {
                        Some((repo.clone(), gb.clone()))
                    }
                    _ => None,
                });
                let Some((repo, branch)) = gated else {
                    return Err(bad(
                        format!("{path}.gate.environment"),
                        format!("no cepler resource with a gates_branch deploys {:?}", g.environment),
                    ));
                };
                let pin = match g.pin {
                    RawPin::Word(w) if w.eq_ignore_ascii_case("head") => GatePin::Head,
                    RawPin::Word(w) => {
                        return Err(bad(
                            format!("{path}.gate.pin"),
                            format!("{w:?}: expected head, {{ recorded: <environment>, back: N }} or {{ sha: <hex> }}"),
                        ));
                    }
                    RawPin::Recorded { recorded, back } => GatePin::Recorded { environment: recorded, back },
                    RawPin::Sha { sha } => GatePin::Sha(sha),
                };
                let by = g.by.unwrap_or_else(|| "admin".into());
                (None, Action::Gate { repo, branch, environment: g.environment, pin, by })
            } else if let Some((t, pin)) = e.pin_version.map(|t| (t, true)).or(e.unpin_version.map(|t| (t, false))) {
                let key = if pin { "pin_version" } else { "unpin_version" };
                let (pipeline, resource) = t
                    .split_once('/')
                    .ok_or_else(|| bad(format!("{path}.{key}"), format!("{t:?}: expected pipeline/resource")))?;
                let ok = topology.pipelines.iter().any(|ps| ps.name == pipeline && ps.resources.contains_key(resource));
                if !ok {
                    return Err(bad(
                        format!("{path}.{key}"),
                        format!("no resource {resource:?} in pipeline {pipeline:?}"),
                    ));
                }
                (None, Action::PinResource { pipeline: pipeline.into(), resource: resource.into(), pin })
            } else if let Some(rv) = e.revert {
                let Some(&(target_at, ref target_message, ref branch)) = commit_times.get(&rv.of) else {
                    return Err(bad(
                        format!("{path}.revert.of"),
                        format!("{:?} is not the id of an earlier commit", rv.of),
                    ));
                };
                if let Some(id) = &rv.id {
                    if let Some(prev) = seen_ids.insert(id.clone(), k) {
                        return Err(bad(
                            format!("{path}.revert.id"),
                            format!("{id:?} is already the id of events[{prev}]"),
                        ));
                    }
                    reverts.insert(id.clone(), rv.of.clone());
                }
                let action = Action::Revert {
                    repo: tracked.0.clone(),
                    branch: branch.clone(),
                    target_message: target_message.clone(),
                    target_at,
                    author: person(rv.author.as_deref().unwrap_or("alice")),
                };
                (None, action)
            } else if let Some(h) = e.hotfix {
                if h.files.is_empty() {
                    return Err(bad(format!("{path}.hotfix.files"), "a hotfix needs at least one file".into()));
                }
                let merge_after = h.merge_after.as_secs() as i64;
                if let Some(id) = &h.id {
                    if let Some(prev) = seen_ids.insert(id.clone(), k) {
                        return Err(bad(
                            format!("{path}.hotfix.id"),
                            format!("{id:?} is already the id of events[{prev}]"),
                        ));
                    }
                    // The squash merge: the PR title with its number, at merge time.
                    let message = format!("{} (#{})", h.title, h.number);
                    commit_times.insert(id.clone(), (at + merge_after, message.clone(), tracked.1.clone()));
                    merged_ids.insert(id.clone(), (at + merge_after, message));
                }
                let action = Action::LabelledPull {
                    repo: tracked.0.clone(),
                    number: h.number,
                    title: h.title,
                    files: h.files,
                    author: h.author,
                    labels: vec!["hotfix".into()],
                    merge_after,
                };
                (None, action)
            } else if let Some(c) = e.commit {
                n_commits += 1;
                if c.files.is_empty() {
                    return Err(bad(format!("{path}.commit.files"), "a commit needs at least one file".into()));
                }
                if let Some(id) = &c.id
                    && let Some(prev) = seen_ids.insert(id.clone(), k)
                {
                    return Err(bad(
                        format!("{path}.commit.id"),
                        format!("{id:?} is already the id of events[{prev}]"),
                    ));
                }
                let repo = c.repo.unwrap_or_else(|| tracked.0.clone());
                if !known_repo(&repo) {
                    return Err(bad(format!("{path}.commit.repo"), format!("unknown repo {repo:?}")));
                }
                let branch =
                    c.branch.unwrap_or_else(|| if repo == tracked.0 { tracked.1.clone() } else { "main".into() });
                let message = c.message.unwrap_or_else(|| match &c.id {
                    Some(id) => format!("chore: {id}"),
                    None => format!("chore: change {n_commits}"),
                });
                let author = person(c.author.as_deref().unwrap_or("alice"));
                if let Some(id) = &c.id
                    && repo == tracked.0
                {
                    commit_times.insert(id.clone(), (at, message.clone(), branch.clone()));
                }
                (
                    c.id,
                    Action::Commit {
                        repo,
                        branch,
                        spec: CommitSpec { message, files: c.files, author, author_date: None },
                    },
                )
            } else if let Some(nb) = e.next_build {
                let Some(job) = e.job else {
                    return Err(bad(format!("{path}.job"), "next_build needs job: pipeline/job".into()));
                };
                let (pipeline, job) = job_of(format!("{path}.job"), &job)?;
                let ov = BuildOverride {
                    duration: nb.duration.map(|d| d.as_secs() as i64),
                    result: nb.result.map(|r| match r {
                        BuildResult::Succeeded => BuildStatus::Succeeded,
                        BuildResult::Failed => BuildStatus::Failed,
                        BuildResult::Errored => BuildStatus::Errored,
                        BuildResult::Aborted => BuildStatus::Aborted,
                    }),
                    fail_first_attempt: nb.fail_first_attempt,
                };
                (None, Action::Override { pipeline, job, ov })
            } else if e.job.is_some() {
                return Err(bad(format!("{path}.next_build"), "job needs next_build: what its next build does".into()));
            } else if let Some(r) = e.rerun {
                let (pipeline, job) = job_of(format!("{path}.rerun"), &r)?;
                (None, Action::Rerun { pipeline, job, build_name: e.build, by: e.by.unwrap_or_else(|| "admin".into()) })
            } else if let Some(t) = e.trigger {
                let (pipeline, job) = job_of(format!("{path}.trigger"), &t)?;
                (None, Action::Trigger { pipeline, job, by: e.by.unwrap_or_else(|| "admin".into()) })
            } else if let Some((t, paused)) = e.pause.map(|t| (t, true)).or(e.unpause.map(|t| (t, false))) {
                let key = if paused { "pause" } else { "unpause" };
                let (pipeline, job) = job_of(format!("{path}.{key}"), &t)?;
                (None, Action::Pause { pipeline, job, paused })
            } else if let Some(pr) = e.pull_request {
                let repo = pr.repo.unwrap_or_else(|| tracked.0.clone());
                if !known_repo(&repo) {
                    return Err(bad(format!("{path}.pull_request.repo"), format!("unknown repo {repo:?}")));
                }
                let head = pr.head.unwrap_or_else(|| format!("{}/pr-{}", pr.author, pr.number));
                pull_titles.insert(pr.number, pr.title.clone());
                (
                    None,
                    Action::OpenPull {
                        repo,
                        number_hint: Some(pr.number),
                        title: pr.title,
                        head,
                        files: pr.files,
                        author: pr.author,
                        draft: pr.draft,
                        coded_for: pr.coded_for.map(|d| d.as_secs() as i64),
                    },
                )
            } else if let Some(r) = e.ready_for_review {
                (None, Action::ReadyForReview { repo: tracked.0.clone(), number: r.number })
            } else if let Some(p) = e.push {
                if p.files.is_empty() {
                    return Err(bad(format!("{path}.push.files"), "a push needs at least one file".into()));
                }
                (None, Action::PushToPull { repo: tracked.0.clone(), number: p.number, files: p.files })
            } else if let Some(m) = e.merge {
                let Some(title) = pull_titles.get(&m.number) else {
                    return Err(bad(
                        format!("{path}.merge.number"),
                        format!("no pull_request event before it opens #{}", m.number),
                    ));
                };
                if let Some(id) = &m.id {
                    if let Some(prev) = seen_ids.insert(id.clone(), k) {
                        return Err(bad(
                            format!("{path}.merge.id"),
                            format!("{id:?} is already the id of events[{prev}]"),
                        ));
                    }
                    // GitHub's squash message: the title (the single commit's subject) and number.
                    let message = format!("{title} (#{})", m.number);
                    commit_times.insert(id.clone(), (at, message.clone(), tracked.1.clone()));
                    merged_ids.insert(id.clone(), (at, message));
                }
                (None, Action::MergePull { repo: tracked.0.clone(), number: m.number })
            } else if let Some(rv) = e.review {
                let repo = rv.repo.unwrap_or_else(|| tracked.0.clone());
                if !known_repo(&repo) {
                    return Err(bad(format!("{path}.review.repo"), format!("unknown repo {repo:?}")));
                }
                let state = match rv.state {
                    RawReviewState::Approved => ReviewState::Approved,
                    RawReviewState::ChangesRequested => ReviewState::ChangesRequested,
                    RawReviewState::Commented => ReviewState::Commented,
                };
                (None, Action::Review { repo, number: rv.number, user: rv.user, state })
            } else {
                unreachable!("exactly one kind was checked above")
            };
            events.push(ScenarioEvent { at, id, action });
        }
        Ok(Scenario {
            origin: origin.into(),
            topology_name: raw.topology,
            topology,
            seed: raw.seed,
            durations: raw.durations,
            failures: raw.failures,
            humans: raw.humans,
            events,
            run_for: raw.run_for.as_secs() as i64,
            reverts,
            merged: merged_ids,
        })
    }

    /// The topology the world is built from: with `durations: fixed` every job's p90 is its
    /// median (the engine's log-normal collapses to the median), with `failures: none` every
    /// failure, error and flake rate is 0, with `humans: off` no scheduled humans.
    pub fn prepared_topology(&self) -> Topology {
        let mut t = self.topology.clone();
        for p in &mut t.pipelines {
            for j in &mut p.jobs {
                if self.durations == Durations::Fixed {
                    j.duration.p90 = Some(j.duration.median);
                }
                if self.failures == Failures::None {
                    j.failure_rate = 0.0;
                    j.error_rate = 0.0;
                    j.task.flaky_rate = 0.0;
                }
            }
        }
        if self.humans == Humans::Off {
            t.humans.clear();
        }
        t
    }

    /// A world that is quiet at `start` with every event scheduled (nothing has run yet).
    pub fn build_world(&self, start: i64) -> (World, ScenarioRun) {
        let mut world = World::new(self.prepared_topology(), start, self.seed);
        let mut order: Vec<&ScenarioEvent> = self.events.iter().collect();
        // Stable: events at the same time run in file order (the engine's queue is FIFO per time).
        order.sort_by_key(|e| e.at);
        let mut ids = BTreeMap::new();
        let mut ordinals: HashMap<(String, String, i64, String), usize> = HashMap::new();
        for e in order {
            let at = start + e.at;
            if let Action::Commit { repo, branch, spec } = &e.action {
                let n = ordinals.entry((repo.clone(), branch.clone(), at, spec.message.clone())).or_default();
                if let Some(id) = &e.id {
                    ids.insert(
                        id.clone(),
                        CommitRef {
                            repo: repo.clone(),
                            branch: branch.clone(),
                            at,
                            message: spec.message.clone(),
                            ordinal: *n,
                        },
                    );
                }
                *n += 1;
            }
            let mut action = e.action.clone();
            if let Action::Revert { target_at, .. } = &mut action {
                *target_at += start;
            }
            world.schedule_action(at, action);
        }
        for (id, (at, message)) in &self.merged {
            let (repo, branch) = (self.topology.tracked_repo.clone(), self.topology.tracked_branch.clone());
            let at = start + at;
            let n = ordinals.entry((repo.clone(), branch.clone(), at, message.clone())).or_default();
            ids.insert(id.clone(), CommitRef { repo, branch, at, message: message.clone(), ordinal: *n });
            *n += 1;
        }
        (world, ScenarioRun { start, end: start + self.run_for, ids, reverts: self.reverts.clone() })
    }

    /// [`Scenario::build_world`], then advance to `start + run_for`.
    pub fn run(&self, start: i64) -> (World, ScenarioRun) {
        let (mut world, run) = self.build_world(start);
        world.advance_to(run.end);
        (world, run)
    }
}

impl ScenarioRun {
    /// The sha of commit `id`, once it has landed.
    pub fn sha_of(&self, world: &World, id: &str) -> Option<Sha> {
        if let Some(of) = self.reverts.get(id) {
            let target = self.sha_of(world, of)?;
            return world.reverts.iter().filter(|(_, t)| **t == target).map(|(r, _)| r.clone()).min_by_key(|r| {
                world.repo(&world.topology.tracked_repo).and_then(|rp| rp.commits.get(r)).map(|c| c.committer_date)
            });
        }
        let c = self.ids.get(id)?;
        let repo = world.repo(&c.repo)?;
        repo.branches
            .get(&c.branch)?
            .iter()
            .filter(|s| repo.commits.get(*s).is_some_and(|x| x.committer_date == c.at && x.message == c.message))
            .nth(c.ordinal)
            .cloned()
    }

    /// Every id that has landed, with its sha.
    pub fn shas(&self, world: &World) -> BTreeMap<String, Sha> {
        self.ids
            .keys()
            .chain(self.reverts.keys())
            .filter_map(|id| self.sha_of(world, id).map(|s| (id.clone(), s)))
            .collect()
    }
}

/// The shas of the commits that `actions` landed, in the same order as the actions (`None` for
/// other actions and for commits that have not landed). A commit is found by branch, landing
/// time and message, so commits the engine lands itself (bot pushes, release merges) do not
/// shift the mapping.
pub fn landed_shas(world: &World, actions: &[(i64, Action)]) -> Vec<Option<Sha>> {
    let mut buckets: HashMap<(&str, &str, i64, &str), std::collections::VecDeque<&Sha>> = HashMap::new();
    let mut wanted: Vec<(&str, &str)> = actions
        .iter()
        .filter_map(|(_, a)| match a {
            Action::Commit { repo, branch, .. } | Action::MergedPull { repo, branch, .. } => {
                Some((repo.as_str(), branch.as_str()))
            }
            _ => None,
        })
        .collect();
    wanted.sort();
    wanted.dedup();
    for (repo, branch) in wanted {
        let Some(r) = world.repo(repo) else { continue };
        for sha in r.branches.get(branch).into_iter().flatten() {
            if let Some(c) = r.commits.get(sha) {
                buckets.entry((repo, branch, c.committer_date, c.message.as_str())).or_default().push_back(sha);
            }
        }
    }
    actions
        .iter()
        .map(|(at, a)| match a {
            Action::Commit { repo, branch, spec } | Action::MergedPull { repo, branch, spec, .. } => buckets
                .get_mut(&(repo.as_str(), branch.as_str(), *at, spec.message.as_str()))
                .and_then(|q| q.pop_front())
                .cloned(),
            _ => None,
        })
        .collect()
}

/// When the release person acts: working days from this hour (UTC)...
const RELEASE_HOUR: i64 = 15;
/// ...plus up to this many seconds, seeded per day.
const RELEASE_SPREAD: i64 = 3 * 3_600;

/// A release habit for the gated environments (an assumption: lana's real one is not known, and
/// the calibrated workload has none, so without it production never moves). Each working day in
/// `[from, to)`, at 15:00 UTC plus a seeded 0–3 h, a person pushes the gates file with every
/// gated environment pinned to the commit that recorded its upstream's current state (so it
/// may take every state the upstream recorded until then, cepler's `passed:` queue), and
/// reruns each cepler deploy job whose latest build failed (cepler offers the same version
/// again and Concourse does not rebuild it, so without a rerun one failed deploy blocks the
/// environment for good).
pub fn release_habit(topology: &Topology, seed: u64, from: i64, to: i64) -> Vec<(i64, Action)> {
    let mut gated: Vec<(String, String, String, String)> = vec![];
    for r in topology.pipelines.iter().flat_map(|p| p.resources.values()) {
        if let ResourceSpec::Cepler { repo, environment, passed: Some(up), gates_branch: Some(gb), .. } = r
            && !gated.iter().any(|g| &g.2 == environment)
        {
            gated.push((repo.clone(), gb.clone(), environment.clone(), up.clone()));
        }
    }
    // Every job that gets a cepler resource deploys an environment.
    let deploy_jobs: Vec<(String, String)> = topology
        .pipelines
        .iter()
        .flat_map(|p| {
            p.jobs
                .iter()
                .filter(|j| {
                    j.inputs.iter().any(|i| {
                        let name = i.resource.as_deref().unwrap_or(&i.get);
                        matches!(p.resources.get(name), Some(ResourceSpec::Cepler { .. }))
                    })
                })
                .map(|j| (p.name.clone(), j.name.clone()))
        })
        .collect();
    let mut out = vec![];
    let first_day = from.div_euclid(86_400);
    for day in first_day.. {
        let midnight = day * 86_400;
        let at =
            midnight + RELEASE_HOUR * 3_600 + (fnv(&format!("release {seed} {day}")) % RELEASE_SPREAD as u64) as i64;
        if at >= to {
            break;
        }
        // 1970-01-01 was a Thursday: day 0 is weekday 3 (Monday = 0).
        if (day + 3).rem_euclid(7) >= 5 || at < from {
            continue;
        }
        for (repo, branch, environment, upstream) in &gated {
            let pin = GatePin::RecordedAt { environment: upstream.clone() };
            let (repo, branch, environment) = (repo.clone(), branch.clone(), environment.clone());
            out.push((at, Action::Gate { repo, branch, environment, pin, by: "release".into() }));
        }
        for (pipeline, job) in &deploy_jobs {
            let (pipeline, job) = (pipeline.clone(), job.clone());
            out.push((at, Action::RerunFailed { pipeline, job, by: "release".into() }));
        }
    }
    out
}

/// Schedule every action (times before the world's now run at once).
pub fn schedule_all(world: &mut World, actions: &[(i64, Action)]) {
    for (at, a) in actions {
        world.schedule_action(*at, a.clone());
    }
}

fn person(login: &str) -> Person {
    Person {
        name: login.to_string(),
        email: format!("{login}@users.noreply.github.com"),
        login: Some(login.to_string()),
    }
}

// ================================================================ ground truth

/// The engine's omniscient view of one tracked commit: which resources emit it and which builds
/// carried it, per job. Plain data, serialisable for `GET /_sim/truth`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CommitTruth {
    pub sha: Sha,
    pub subject: String,
    /// Committer date: when it landed on the tracked branch (`None` if unknown there).
    pub landed_at: Option<i64>,
    /// `pipeline/resource` of the tracked git resources that emit it as a version. Empty for
    /// `[ci skip]` commits and for changes no (non-loose) resource watches.
    pub emitting_resources: Vec<String>,
    /// Jobs with at least one build that carried it, in topology order.
    pub jobs: Vec<JobTruth>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobTruth {
    pub pipeline: String,
    pub job: String,
    /// Builds that carried the commit (its own, or a descendant's that includes it), oldest first.
    pub builds: Vec<BuildTruth>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BuildTruth {
    pub id: i64,
    pub name: String,
    pub status: String,
    pub start: Option<i64>,
    pub end: Option<i64>,
    pub rerun_of: Option<i64>,
    /// Attempts of the retried task (2 when the first one failed).
    pub attempts: usize,
}

impl CommitTruth {
    /// `key` is `pipeline/job`.
    pub fn job(&self, key: &str) -> Option<&JobTruth> {
        let (p, j) = key.split_once('/')?;
        self.jobs.iter().find(|x| x.pipeline == p && x.job == j)
    }

    /// The first succeeded build of `pipeline/job` that carried the commit.
    pub fn first_success(&self, key: &str) -> Option<&BuildTruth> {
        self.job(key)?.builds.iter().find(|b| b.status == "succeeded")
    }

    /// The first build of `pipeline/job` that carried the commit, whatever its outcome.
    pub fn first_build(&self, key: &str) -> Option<&BuildTruth> {
        self.job(key)?.builds.first()
    }
}

/// Ground truth for tracked commit `sha`, from [`World::builds_containing`].
pub fn truth(world: &World, sha: &str) -> CommitTruth {
    let repo = world.tracked_repo();
    let commit = repo.commits.get(sha);
    let pipelines = &world.concourse.pipelines;
    let emitting_resources = world
        .emitting_resources(sha)
        .into_iter()
        .map(|(p, r)| format!("{}/{}", pipelines[p].name, pipelines[p].resources[r].name))
        .collect();
    let mut per_job: BTreeMap<(usize, usize), Vec<BuildTruth>> = BTreeMap::new();
    for (p, j, id) in world.builds_containing(sha) {
        let Some(b) = world.concourse.build(id) else { continue };
        per_job.entry((p, j)).or_default().push(BuildTruth {
            id,
            name: b.name.clone(),
            status: b.status.as_str().to_string(),
            start: b.start_time,
            end: b.end_time,
            rerun_of: b.rerun_of,
            attempts: b.plan.as_ref().map(|pl| pl.attempts.len()).unwrap_or(0),
        });
    }
    CommitTruth {
        sha: sha.to_string(),
        subject: commit.map(|c| c.subject().to_string()).unwrap_or_default(),
        landed_at: commit.map(|c| c.committer_date),
        emitting_resources,
        jobs: per_job
            .into_iter()
            .map(|((p, j), builds)| JobTruth {
                pipeline: pipelines[p].name.clone(),
                job: pipelines[p].jobs[j].name.clone(),
                builds,
            })
            .collect(),
    }
}

// ================================================================ calibrated lana traffic

/// Share of each kind of change on lana-bank's `main` (lana-pipeline.md §4, 673 commits in 90 days).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChangeMix {
    /// Outside `apps/` (triggers `repo`).
    pub backend: f64,
    /// Backend plus `apps/` (triggers `repo` and app sources).
    pub mixed: f64,
    /// Only `apps/` (an edge-image build; ships with the next RC).
    pub frontend: f64,
    /// Only `docs-site/` or `*.md` (triggers `repo`, the whole chain).
    pub docs: f64,
    /// Only `ci/`.
    pub ci: f64,
    /// Of `ci`, the share that triggers `repo` (`ci/flake.*`, `ci/**/*.md`); the rest trigger nothing.
    pub ci_triggering_repo: f64,
    /// Only `.github/` or `.claude/` (triggers `repo`).
    pub meta: f64,
    /// Only `dagster/` (triggers `repo` and `dagster-src`).
    pub dagster: f64,
    /// `[ci skip]` commits (invisible to every git resource). On real `main` these are the
    /// release squash-merges; the lana topology's `humans` land those in the engine too (about
    /// one per 4.4 days), so a world gets both unless this is set to 0.
    pub ci_skip: f64,
}

impl Default for ChangeMix {
    fn default() -> Self {
        ChangeMix {
            backend: 0.522,
            mixed: 0.238,
            frontend: 0.064,
            docs: 0.056,
            ci: 0.037,
            ci_triggering_repo: 0.28,
            meta: 0.033,
            dagster: 0.030,
            ci_skip: 0.021,
        }
    }
}

/// The category a generated commit was drawn from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeCategory {
    Backend,
    Mixed,
    Frontend,
    Docs,
    CiRepo,
    CiNone,
    Meta,
    Dagster,
    CiSkip,
}

impl ChangeCategory {
    pub const ALL: [ChangeCategory; 9] = [
        ChangeCategory::Backend,
        ChangeCategory::Mixed,
        ChangeCategory::Frontend,
        ChangeCategory::Docs,
        ChangeCategory::CiRepo,
        ChangeCategory::CiNone,
        ChangeCategory::Meta,
        ChangeCategory::Dagster,
        ChangeCategory::CiSkip,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ChangeCategory::Backend => "backend",
            ChangeCategory::Mixed => "mixed",
            ChangeCategory::Frontend => "frontend",
            ChangeCategory::Docs => "docs",
            ChangeCategory::CiRepo => "ci_repo",
            ChangeCategory::CiNone => "ci_none",
            ChangeCategory::Meta => "meta",
            ChangeCategory::Dagster => "dagster",
            ChangeCategory::CiSkip => "ci_skip",
        }
    }
}

/// Conventional-commit types of lana's subjects (§4: chore 190, fix 162, refactor 128, feat 101,
/// ci 63, test 14, docs 11, other 4 of 673).
const TYPES: [(&str, f64); 8] = [
    ("chore", 28.0),
    ("fix", 24.0),
    ("refactor", 19.0),
    ("feat", 15.0),
    ("ci", 9.0),
    ("test", 2.0),
    ("docs", 2.0),
    ("other", 1.0),
];

/// Commits per UTC hour over 90 days (§4).
const HOURLY: [f64; 24] =
    [4., 7., 8., 3., 6., 12., 15., 22., 33., 20., 32., 27., 44., 55., 36., 42., 49., 44., 42., 43., 36., 33., 42., 18.];

/// The shape of a day, fitted (with a throwaway simulation) to §4's per-day and gap figures:
/// per-day median 6 / p90 16 / ~11 % empty days, gaps p10 5 / p25 20 / p50 64 / p75 177 min.
/// A day is off with `DAY_OFF` (holidays, quiet weekends); otherwise its count is negative
/// binomial (a Poisson with a Gamma-distributed rate of shape `DAY_SHAPE`).
const DAY_OFF: f64 = 0.07;
const DAY_SHAPE: f64 = 4.0;
/// A commit follows an earlier one of the same day (a burst of merges after a review round) with
/// this probability, `FOLLOW_MEDIAN_MIN` minutes later (log-normal, `FOLLOW_SIGMA`); otherwise
/// its hour is drawn from [`HOURLY`].
const FOLLOW: f64 = 0.25;
const FOLLOW_MEDIAN_MIN: f64 = 15.0;
const FOLLOW_SIGMA: f64 = 1.2;
/// In the data, 95 % of squash merges have author date = committer date; the rest were authored
/// seconds to days before landing.
const AUTHORED_EARLIER: f64 = 0.05;

/// The 17 human authors are made up; the bots are the real ones.
const HUMANS: [&str; 17] = [
    "Ana Ruiz",
    "Ben Okafor",
    "Chen Wei",
    "Dara Novak",
    "Eli Sato",
    "Farah Haddad",
    "Gus Lindqvist",
    "Hana Ito",
    "Ivan Petrov",
    "Jo Mensah",
    "Kai Muller",
    "Lena Costa",
    "Milo Grant",
    "Nia Adeyemi",
    "Omar Aziz",
    "Priya Nair",
    "Quinn Brody",
];

/// Seeded random commits on lana-bank `main`, calibrated on its history (lana-pipeline.md §4).
/// Pure: it produces actions and never looks at a [`World`]; job durations and failures are the
/// topology's business. Each UTC day is drawn from its own ChaCha8 stream, so a day's commits
/// (times, files, subjects) do not depend on the window asked for; PR numbers count up from
/// `first_pr` within one output.
#[derive(Debug, Clone)]
pub struct LanaWorkload {
    pub seed: u64,
    /// Mean commits per UTC weekday / weekend day.
    pub weekday_commits: f64,
    pub weekend_commits: f64,
    pub mix: ChangeMix,
    /// Share of backend and mixed commits that touch flake.nix, flake.lock or pnpm-lock.yaml
    /// (and so also trigger both app sources): 0.158 × 76 % ≈ §4's 12 % of all commits.
    pub flake_share: f64,
    /// PR number of the first generated commit.
    pub first_pr: u64,
    pub repo: String,
    pub branch: String,
}

/// One generated commit, before it becomes an [`Action::Commit`].
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedCommit {
    pub at: i64,
    pub category: ChangeCategory,
    pub pr: u64,
    pub message: String,
    pub files: Vec<String>,
    pub author: Person,
    pub author_date: i64,
}

impl LanaWorkload {
    pub fn new(seed: u64) -> LanaWorkload {
        LanaWorkload {
            seed,
            weekday_commits: 8.7,
            weekend_commits: 4.0,
            mix: ChangeMix::default(),
            flake_share: 0.158,
            first_pr: 4300,
            repo: "GaloyMoney/lana-bank".into(),
            branch: "main".into(),
        }
    }

    /// Commit actions landing in `[from, to)` (Unix seconds), in time order. Each commit but
    /// the bots' `[ci skip]` pushes is the squash merge of a pull request
    /// ([`Action::MergedPull`], see [`LanaWorkload::pull_history`]); the commits themselves are
    /// the same either way.
    pub fn generate(&self, from: i64, to: i64) -> Vec<(i64, Action)> {
        self.commits(from, to)
            .into_iter()
            .map(|c| {
                let pull = (c.category != ChangeCategory::CiSkip).then(|| Box::new(self.pull_history(&c)));
                let spec = CommitSpec {
                    message: c.message,
                    files: c.files,
                    author: c.author,
                    author_date: Some(c.author_date),
                };
                let (repo, branch) = (self.repo.clone(), self.branch.clone());
                let action = match pull {
                    Some(pull) => Action::MergedPull { repo, branch, spec, pull },
                    None => Action::Commit { repo, branch, spec },
                };
                (c.at, action)
            })
            .collect()
    }

    /// The pull request a generated commit was merged from, drawn from its own seeded stream
    /// (so the commits' own draws are untouched), with spreads like LinearB's and Swarmia's
    /// published cycle-time breakdowns: coding 10 min – 3 days (log-uniform), ~15 % opened as
    /// drafts and marked ready later, pickup 5 min – 1 day, ~25 % with a change request and a
    /// follow-up push, ~5 % merged by an admin without review, 1–3 commits before opening, and
    /// one `fix:` in five labelled `hotfix`. Times count back from the merge, and the last push
    /// leaves the Actions runs (and a re-run of a failed one) time to finish before it.
    pub fn pull_history(&self, c: &GeneratedCommit) -> PullHistory {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ c.pr.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5052);
        let rng = &mut rng;
        let lu = |rng: &mut ChaCha8Rng, lo: f64, hi: f64| rng.random_range(lo.ln()..hi.ln()).exp().round() as i64;
        let share = |rng: &mut ChaCha8Rng, p: f64| rng.random::<f64>() < p;
        // Forward from the first commit (t = 0), then shifted so the merge is at 0 "before".
        let coding = lu(rng, 600.0, 259_200.0);
        let draft = share(rng, 0.15);
        let ready = coding + if draft { lu(rng, 1800.0, 86_400.0) } else { 0 };
        let admin = share(rng, 0.05);
        let first_review = ready + lu(rng, 300.0, 86_400.0);
        let changes = !admin && share(rng, 0.25);
        let reviewer = format!("reviewer-{}", rng.random_range(1..=5));
        let mut reviews = vec![];
        let mut pushes = vec![0];
        if share(rng, 0.5) {
            pushes.push(coding / 2);
        }
        let approval = if admin {
            None
        } else if changes {
            reviews.push((first_review, reviewer.clone(), ReviewState::ChangesRequested));
            let push = first_review + lu(rng, 900.0, 21_600.0);
            pushes.push(push);
            let ok = push + 1500 + lu(rng, 600.0, 14_400.0);
            reviews.push((ok, reviewer.clone(), ReviewState::Approved));
            Some(ok)
        } else {
            reviews.push((first_review, reviewer.clone(), ReviewState::Approved));
            Some(first_review)
        };
        // Actions runs start at the last push (or the opening) and take ~15–25 min; one in six
        // fails and is re-run by hand: branch protection holds the merge until they are green.
        let last_trigger = pushes.last().copied().unwrap_or(0).max(coding);
        let merged = approval.unwrap_or(ready).max(last_trigger + 3600) + lu(rng, 120.0, 7200.0);
        let before = |t: i64| merged - t;
        let subject = c.message.lines().next().unwrap_or("");
        let title = subject.strip_suffix(&format!(" (#{})", c.pr)).unwrap_or(subject).to_string();
        let hotfix = title.starts_with("fix") && fnv(&format!("hotfix:{}:{}", self.seed, c.pr)).is_multiple_of(5);
        PullHistory {
            number: c.pr,
            title,
            author: c.author.login.clone().unwrap_or_else(|| c.author.name.clone()),
            labels: if hotfix { vec!["hotfix".into()] } else { vec![] },
            commits_before: pushes.into_iter().map(before).collect(),
            opened_before: before(coding),
            ready_before: draft.then(|| before(ready)),
            reviews: reviews.into_iter().map(|(t, u, s)| (before(t), u, s)).collect(),
        }
    }

    /// Actions for `[now − history, now + future)`. Build the world at `now − history` (a world
    /// clamps actions scheduled before its start to the start), e.g.
    /// `World::new(topology, now - history, seed)`, schedule them, then `advance_to(now)`.
    pub fn history_then_live(&self, now: i64, history: Duration, future: Duration) -> Vec<(i64, Action)> {
        self.generate(now - history.as_secs() as i64, now + future.as_secs() as i64)
    }

    /// The generated commits of `[from, to)` with their categories, in time order.
    pub fn commits(&self, from: i64, to: i64) -> Vec<GeneratedCommit> {
        let table = lana_files();
        let mut out = vec![];
        if to <= from {
            return out;
        }
        for day in from.div_euclid(86_400)..=(to - 1).div_euclid(86_400) {
            let mut drawn = self.day(table, day);
            drawn.retain(|c| c.at >= from && c.at < to);
            out.extend(drawn);
        }
        // Followers may spill into the next day; keep time order across days (stable on ties).
        out.sort_by_key(|c| c.at);
        let mut pr = self.first_pr;
        for c in &mut out {
            c.pr = pr;
            c.message = format!("{} (#{pr})", c.message);
            // Real PR numbers skip the ones that were closed or were issues.
            pr += 1 + fnv(&format!("{}:{}", self.seed, c.at)) % 3;
        }
        out
    }

    /// The commits of UTC day `day` (days since 1970-01-01), without PR numbers.
    fn day(&self, table: &FileTable, day: i64) -> Vec<GeneratedCommit> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(day as u64);
        let start = day * 86_400;
        // 1970-01-01 was a Thursday: (day + 3) mod 7 is 0 on Mondays.
        let weekend = (day + 3).rem_euclid(7) >= 5;
        let mean = if weekend { self.weekend_commits } else { self.weekday_commits };
        let n = if rng.random::<f64>() < DAY_OFF || mean <= 0.0 {
            0
        } else {
            let rate =
                Gamma::new(DAY_SHAPE, mean / (1.0 - DAY_OFF) / DAY_SHAPE).map(|g| g.sample(&mut rng)).unwrap_or(0.0);
            Poisson::new(rate.max(1e-9)).map(|p| p.sample(&mut rng)).unwrap_or(0.0) as usize
        };
        let follow = LogNormal::new((FOLLOW_MEDIAN_MIN * 60.0).ln(), FOLLOW_SIGMA).expect("finite parameters");
        let mut times: Vec<i64> = Vec::with_capacity(n);
        for _ in 0..n {
            let t = if !times.is_empty() && rng.random::<f64>() < FOLLOW {
                let base = times[rng.random_range(0..times.len())];
                base + follow.sample(&mut rng).round().max(1.0) as i64
            } else {
                let h = pick(&mut rng, &HOURLY) as i64;
                start + h * 3600 + rng.random_range(0..3600)
            };
            times.push(t);
        }
        times.sort();
        times.into_iter().map(|at| self.draw_commit(&mut rng, table, at)).collect()
    }

    fn draw_commit(&self, rng: &mut ChaCha8Rng, table: &FileTable, at: i64) -> GeneratedCommit {
        let m = &self.mix;
        let cats = [m.backend, m.mixed, m.frontend, m.docs, m.ci, m.meta, m.dagster, m.ci_skip];
        let category = match pick(rng, &cats) {
            0 => ChangeCategory::Backend,
            1 => ChangeCategory::Mixed,
            2 => ChangeCategory::Frontend,
            3 => ChangeCategory::Docs,
            4 if rng.random::<f64>() < m.ci_triggering_repo => ChangeCategory::CiRepo,
            4 => ChangeCategory::CiNone,
            5 => ChangeCategory::Meta,
            6 => ChangeCategory::Dagster,
            _ => ChangeCategory::CiSkip,
        };
        let pool_name = match category {
            ChangeCategory::Backend | ChangeCategory::Mixed if rng.random::<f64>() < self.flake_share => {
                format!("{}_flake", category.as_str())
            }
            c => c.as_str().to_string(),
        };
        let pool = table.pool(&pool_name);
        let weights: Vec<f64> = TYPES.iter().map(|(_, w)| *w).collect();
        let ty = TYPES[pick(rng, &weights)].0;
        // A real commit of this category with the drawn type if there is one, so subject and
        // files belong together; otherwise any, re-typed.
        let typed: Vec<&Entry> = pool.iter().filter(|e| e.ty == ty).collect();
        let entry = if typed.is_empty() {
            &pool[rng.random_range(0..pool.len())]
        } else {
            typed[rng.random_range(0..typed.len())]
        };
        let files = entry.files.iter().map(|i| table.paths[*i].clone()).collect();
        let (message, author) = if category == ChangeCategory::CiSkip {
            // The real ones are release squash-merges, which the topology's humans make in the
            // engine; these only borrow their files and must not pose as releases.
            ("ci: update changelog and docs [ci skip]".to_string(), bot_person("galoybot-app[bot]", 176_540_232))
        } else {
            let message = if entry.ty == ty { entry.subject.clone() } else { retype(ty, &entry.subject) };
            let author = if message.starts_with("chore(deps") {
                bot_person("dependabot[bot]", 49_699_333)
            } else {
                let w: Vec<f64> = (1..=HUMANS.len()).map(|k| 1.0 / (k as f64).powf(0.9)).collect();
                let name = HUMANS[pick(rng, &w)];
                let login = name.to_lowercase().replace(' ', "-");
                Person { name: name.into(), email: format!("{login}@example.com"), login: Some(login) }
            };
            (message, author)
        };
        let author_date = if rng.random::<f64>() < AUTHORED_EARLIER {
            at - rng.random_range(2f64.ln()..172_800f64.ln()).exp().round() as i64
        } else {
            at
        };
        GeneratedCommit { at, category, pr: 0, message, files, author, author_date }
    }
}

fn bot_person(login: &str, id: u64) -> Person {
    Person { name: login.into(), email: format!("{id}+{login}@users.noreply.github.com"), login: Some(login.into()) }
}

/// `fix(core): x` as type `ty`: `ty: x`; type `other` keeps no prefix (like `Revert "..."`).
fn retype(ty: &str, subject: &str) -> String {
    let desc = match subject.split_once(": ") {
        Some((head, rest)) if !head.contains(' ') => rest,
        _ => subject,
    };
    if ty == "other" {
        let mut c = desc.chars();
        c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
    } else {
        format!("{ty}: {desc}")
    }
}

/// Index drawn with probability proportional to `weights`.
fn pick(rng: &mut ChaCha8Rng, weights: &[f64]) -> usize {
    let total: f64 = weights.iter().sum();
    let mut x = rng.random::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        if x < *w {
            return i;
        }
        x -= w;
    }
    weights.len() - 1
}

// ---------------------------------------------------------------- the file table

/// `scenarios/lana-files.json`, generated by `scenarios/gen_lana_files.py` from
/// `tests/data/lana-bank-main.jsonl`: per category, real commits (subject, ≤ 20 files).
const LANA_FILES: &str = include_str!("scenarios/lana-files.json");

#[derive(Debug)]
pub struct FileTable {
    pub paths: Vec<String>,
    pub categories: BTreeMap<String, Vec<Entry>>,
}

/// One real commit of the table.
#[derive(Debug)]
pub struct Entry {
    /// Conventional type (`chore`, `fix`, ... or `other`).
    pub ty: String,
    /// Subject without the `(#PR)` suffix.
    pub subject: String,
    pub files: Vec<usize>,
}

impl FileTable {
    fn pool(&self, name: &str) -> &[Entry] {
        // The table is generated with every pool non-empty; a test checks it.
        self.categories
            .get(name)
            .map(|v| v.as_slice())
            .filter(|v| !v.is_empty())
            .expect("lana-files.json has every category")
    }

    /// File lists of a table category (`backend`, `backend_flake`, `mixed`, `mixed_flake`,
    /// `frontend`, `docs`, `ci_repo`, `ci_none`, `meta`, `dagster`, `ci_skip`).
    pub fn file_lists(&self, category: &str) -> Vec<Vec<&str>> {
        self.categories
            .get(category)
            .map(|es| es.iter().map(|e| e.files.iter().map(|i| self.paths[*i].as_str()).collect()).collect())
            .unwrap_or_default()
    }
}

/// The embedded table, parsed once.
pub fn lana_files() -> &'static FileTable {
    static TABLE: OnceLock<FileTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        #[derive(Deserialize)]
        struct Raw {
            paths: Vec<String>,
            categories: BTreeMap<String, Vec<(String, String, Vec<usize>)>>,
        }
        // Embedded at build time and covered by tests: failing here is a build defect.
        let raw: Raw = serde_json::from_str(LANA_FILES).expect("lana-files.json parses");
        let mut paths = Vec::with_capacity(raw.paths.len());
        let mut prev = String::new();
        for p in raw.paths {
            // Front-coded: "<chars shared with the previous path> <rest>".
            let (k, rest) = p.split_once(' ').expect("front-coded path");
            let k: usize = k.parse().expect("front-coded prefix length");
            // Counted in characters, as the generator (Python) counts them.
            let full: String = prev.chars().take(k).chain(rest.chars()).collect();
            paths.push(full.clone());
            prev = full;
        }
        let categories = raw
            .categories
            .into_iter()
            .map(|(c, es)| (c, es.into_iter().map(|(ty, subject, files)| Entry { ty, subject, files }).collect()))
            .collect();
        FileTable { paths, categories }
    })
}
