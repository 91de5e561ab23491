//! Journeys: which builds carried which commit through which stage, and when.
//!
//! The core keeps *facts* (commits seen on the branch, builds seen in Concourse) and derives
//! journeys from them as a pure function of the facts, the configuration and `now`. Applying a
//! fact twice, or facts in another order, gives the same journeys: facts merge monotonically
//! (a build's status only moves forward, fields only fill in) and derivation does not look at
//! arrival order.
//!
//! Facts live in [`crate::core::facts`], the carry relation (which builds a build inherits
//! what it delivers from) in [`crate::core::lineage`]; this module derives journeys from both.
//!
//! A build *contains* commit C when every tracked resource it carries that would emit C is at or
//! after C; a commit no resource emits (untracked, `[ci skip]`) rides along with any carried
//! descendant. So a batch is credited to every commit in it, and a frontend-only commit is
//! contained in the build-rc that takes its `admin-panel-src` version.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// A map hashed with foldhash's fixed seed: fast, and the same in every run.
/// A map built over every build or journey every cycle: foldhash, as no attacker picks its keys.
pub type FastMap<K, V> = HashMap<K, V, foldhash::fast::FixedState>;

use crate::core::classify::{ChangeType, Classification, Classifier};
use crate::core::lineage::{Carry, Lineage, compute_carries};
use crate::core::premerge::{self, Origin, PreMergeStages, PreMergeStart};

pub use crate::core::facts::{
    BuildFact, BuildId, BuildStatus, CommitFact, Fact, Facts, HorizonFact, Sha, Version, VersionFact,
};
pub use crate::core::lineage::Method;

// ------------------------------------------------------------------ configuration

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeadTimeFrom {
    CommitterDate,
    AuthorDate,
    FirstSeen,
    /// When its pull request was opened (a direct push: the committer date).
    PrOpened,
    /// The author date of its pull request's first commit (a direct push: the committer date).
    FirstCommit,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bridge {
    /// The commit message of input `input` contains `key` of output `output` of some build.
    MessageContains { input: String, output: String, key: String },
    /// `input_key` of input `input` equals `key` of output `output` of some build.
    Equals { input: String, input_key: String, output: String, key: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobDef {
    pub name: String,
    /// Tracked git resources this job's builds deliver; decides for which commits it is expected.
    pub git: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageDef {
    pub name: String,
    pub pipeline: String,
    pub jobs: Vec<JobDef>,
    /// Indices of the stages this one waits for (empty: ready at commit time).
    pub after: Vec<usize>,
    /// Input steps that carry commits; `None` = every input.
    pub inputs: Option<Vec<String>>,
    pub bridges: Vec<Bridge>,
    /// Plain git input (of the tracked repo, unfiltered) for the inferred fallback.
    pub fallback_git_input: Option<String>,
    /// Success of this stage means "deployed to" this environment.
    pub environment: Option<String>,
    pub stuck_after: Option<i64>,
    /// Whether commits no resource emits (untracked, skipped) pass through this stage.
    pub carries_passive: bool,
    /// A human gate releases this stage (cepler's gate branch): a ready commit no build took
    /// yet is `awaiting_approval`, not pending.
    pub approval: bool,
}

#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub classifier: Classifier,
    pub stages: Vec<StageDef>,
    pub lead_time_from: LeadTimeFrom,
    pub not_picked_up_after: i64,
    /// git input step name → tracked resource name, when they differ (default: same name).
    pub step_resources: BTreeMap<String, String>,
    /// DORA: which environment, the failure window, hotfix rules.
    pub dora: crate::core::deployments::DoraConfig,
    /// The environment a journey ends at (`journey_ends_at`); `None`: the last one that applies.
    /// Environments after it are still followed (deployments, lead times, DORA); a commit
    /// waiting for them is no longer "in flight".
    pub journey_ends_at: Option<String>,
}

impl CoreConfig {
    pub fn resource_of_step<'a>(&'a self, step: &'a str) -> Option<&'a str> {
        let name = self.step_resources.get(step).map(|s| s.as_str()).unwrap_or(step);
        self.classifier.resources().iter().any(|r| r.name == name).then_some(name)
    }
    pub fn environments(&self) -> Vec<String> {
        let mut v: Vec<String> = self.stages.iter().filter_map(|s| s.environment.clone()).collect();
        v.dedup();
        v
    }
    pub fn stage_of_job(&self, pipeline: &str, job: &str) -> Option<usize> {
        self.stages.iter().position(|s| s.pipeline == pipeline && s.jobs.iter().any(|j| j.name == job))
    }
}

// ------------------------------------------------------------------ derived

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StageState {
    /// Upstream not done yet.
    Waiting,
    /// Ready, but no build carrying the commit has started.
    Pending,
    /// A passive commit (untracked, `[ci skip]`) that no build of the stage carried yet: the
    /// stage never builds it on its own; it rides with the next triggering commit's build.
    Riding,
    Running,
    Succeeded,
    Failed,
    /// The stage does not apply to this commit (e.g. tests for a frontend-only commit).
    NotApplicable,
    /// The commit is older than how far back a job of this stage's builds were read: what
    /// happened there is not known, and is not guessed.
    Incomplete,
    /// Ready at a stage with `approval: true` (the upstream environment has it), and no build
    /// of the stage took it or is queued for it: a human gate holds it.
    AwaitingApproval,
}

impl StageState {
    pub fn as_str(self) -> &'static str {
        match self {
            StageState::Waiting => "waiting",
            StageState::Pending => "pending",
            StageState::Riding => "riding",
            StageState::Running => "running",
            StageState::Succeeded => "succeeded",
            StageState::Failed => "failed",
            StageState::NotApplicable => "not_applicable",
            StageState::Incomplete => "incomplete",
            StageState::AwaitingApproval => "awaiting_approval",
        }
    }
    pub fn in_flight(self) -> bool {
        matches!(
            self,
            StageState::Waiting
                | StageState::Pending
                | StageState::Riding
                | StageState::Running
                | StageState::AwaitingApproval
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub build_id: BuildId,
    pub pipeline: Arc<str>,
    pub job: Arc<str>,
    pub name: Arc<str>,
    pub status: BuildStatus,
    pub start: Option<i64>,
    pub end: Option<i64>,
    pub url: Arc<str>,
    pub rerun_of: Option<BuildId>,
    pub method: Method,
    /// The build's newest commit is this one (not a later commit that carried it along).
    pub own: bool,
    /// The newest tracked commit the build delivered.
    pub head: Option<Sha>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageJourney {
    pub name: String,
    pub state: StageState,
    pub ready_at: Option<i64>,
    pub start: Option<i64>,
    pub end: Option<i64>,
    pub attempts: Vec<Attempt>,
    /// Jobs expected to carry this commit.
    pub expected_jobs: Vec<String>,
    /// For a commit in flight whose stage is waiting, pending or riding: what it waits for.
    pub waits_for: Option<WaitsFor>,
}

/// What a commit that is not running at a stage waits for there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitsFor {
    /// No build of the stage's jobs (expected for this commit) is running: the next one the
    /// scheduler starts will take it.
    NoBuild,
    /// The stage's jobs are busy with a build that does not carry this commit (the oldest
    /// such); Concourse takes the newest version once it is done.
    Busy(RunningBuild),
    /// A build carrying it was created and waits to start (Concourse `pending`: a serial
    /// job's queue, a paused job, no worker).
    Queued(RunningBuild),
    /// An upstream stage has not succeeded for this commit; its state there.
    Upstream { stage: String, state: StageState },
    /// A passive commit: it rides with the next triggering commit's build.
    TriggeringCommit,
}

impl WaitsFor {
    pub fn kind(&self) -> &'static str {
        match self {
            WaitsFor::NoBuild => "no_build",
            WaitsFor::Busy(_) => "busy",
            WaitsFor::Queued(_) => "queued",
            WaitsFor::Upstream { .. } => "upstream",
            WaitsFor::TriggeringCommit => "triggering_commit",
        }
    }

    /// One phrase for a person.
    pub fn describe(&self) -> String {
        match self {
            WaitsFor::NoBuild => "no build yet".into(),
            WaitsFor::Busy(b) => format!(
                "the stage is busy with build {} #{} ({}, carrying {})",
                b.job,
                b.name,
                b.status.as_str(),
                b.head.as_deref().map(|h| h.get(..7).unwrap_or(h)).unwrap_or("no known commit")
            ),
            WaitsFor::Queued(b) => format!("its build {} #{} is queued (pending, not started)", b.job, b.name),
            WaitsFor::Upstream { stage, state } => format!("waiting for upstream {stage} ({})", state.as_str()),
            WaitsFor::TriggeringCommit => "rides with the next triggering commit".into(),
        }
    }
}

/// A build of a stage's job that runs now (Concourse's "running": `pending` or `started`),
/// whatever commit it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningBuild {
    pub build_id: BuildId,
    pub pipeline: Arc<str>,
    pub job: Arc<str>,
    pub name: Arc<str>,
    /// `Pending` (created, not started: no start time yet) or `Started`.
    pub status: BuildStatus,
    pub start: Option<i64>,
    pub url: Arc<str>,
    pub rerun_of: Option<BuildId>,
    /// The newest commit it carries (over all tracked resources), when its lineage is known.
    pub head: Option<Sha>,
}

impl RunningBuild {
    /// Seconds since it started; `None` while pending. The API gives a queued build no
    /// creation time (`atc.Build` has none), so a queue wait is not measurable.
    pub fn age(&self, now: i64) -> Option<i64> {
        self.start.map(|s| (now - s).max(0))
    }
}

/// A stage as its builds show it now, whatever commits they carry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StageNow {
    pub name: String,
    pub stuck_after: Option<i64>,
    /// Running builds of the stage's jobs (every job, reruns included): started ones oldest
    /// first, then pending ones by id.
    pub running: Vec<RunningBuild>,
    /// Age of the oldest started build at `now` (0 when none has started).
    pub oldest_running_age: i64,
    /// `oldest_running_age` exceeds the stage's `stuck_after`.
    pub stuck: bool,
}

impl StageNow {
    /// A created build that is not a rerun takes the newest versions when it starts: the gate
    /// was opened for it.
    pub fn gate_opened(&self) -> bool {
        self.running.iter().any(|r| r.status == BuildStatus::Pending && r.rerun_of.is_none() && r.head.is_none())
    }
}

impl StageJourney {
    pub fn wait(&self) -> Option<i64> {
        Some(self.start? - self.ready_at?)
    }
    pub fn duration(&self) -> Option<i64> {
        Some(self.end? - self.start?)
    }
    /// The weakest attribution among its attempts.
    pub fn method(&self) -> Option<Method> {
        self.attempts.iter().map(|a| a.method).max()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    Deployed,
    Superseded,
    Failed,
    InFlight,
    Untracked,
    Skipped,
    /// A stage's builds for this commit lie before the history that was read (see
    /// [`HorizonFact`]): no outcome, no lead time.
    Incomplete,
}

impl Outcome {
    pub const ALL: [Outcome; 7] = [
        Outcome::Deployed,
        Outcome::Superseded,
        Outcome::Failed,
        Outcome::InFlight,
        Outcome::Untracked,
        Outcome::Skipped,
        Outcome::Incomplete,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Deployed => "deployed",
            Outcome::Superseded => "superseded",
            Outcome::Failed => "failed",
            Outcome::InFlight => "in_flight",
            Outcome::Untracked => "untracked",
            Outcome::Skipped => "skipped",
            Outcome::Incomplete => "incomplete",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Journey {
    pub sha: Sha,
    pub subject: String,
    pub author: String,
    /// The commit time lead time is measured from (per `lead_time_from`).
    pub commit_time: i64,
    /// Where lead time starts: `commit_time`, or before the merge for `lead_time_from:
    /// pr_opened | first_commit` once the commit's pull request is known.
    pub lead_start: i64,
    /// Its pull request or a direct push; `None` until the GitHub source has read it.
    pub origin: Option<Origin>,
    pub classification: Classification,
    pub stages: Vec<StageJourney>,
    pub outcome: Outcome,
    /// For `failed`: the stage; with `carried_on` when a later build delivered it anyway.
    pub failed_stage: Option<String>,
    pub carried_on: bool,
    /// The journey reached the environment it ends at (`ended_in`): it has ended.
    pub ended: bool,
    /// Where it ended: the last environment that applies to it, or `journey_ends_at`.
    pub ended_in: Option<String>,
    /// Environment → time of the end of the deployment that delivered it.
    pub deployed_at: BTreeMap<String, i64>,
    /// The commit whose build carried this one where it had no build of its own.
    pub carried_by: Option<Sha>,
    /// Should have triggered a pipeline, and no build has carried it after `not_picked_up_after`.
    pub not_picked_up: bool,
    pub vanished: bool,
}

impl Journey {
    pub fn lead_time(&self, env: &str) -> Option<i64> {
        self.deployed_at.get(env).map(|t| t - self.lead_start)
    }
    /// The pre-merge stage durations, when the commit came through a pull request.
    pub fn premerge(&self) -> Option<PreMergeStages> {
        self.origin.as_ref().and_then(premerge::stages)
    }
    /// Where a commit in flight sits: its first stage that is neither done nor not applicable,
    /// that stage's state, and since when it has been in that state (for the in-flight ages).
    pub fn in_flight_at(&self) -> Option<(usize, StageState, i64)> {
        let (i, st) = self.stages.iter().enumerate().find(|(_, st)| st.state.in_flight())?;
        let since = match st.state {
            StageState::Running => st.start.unwrap_or(self.commit_time),
            StageState::Pending | StageState::Riding | StageState::AwaitingApproval => {
                st.ready_at.unwrap_or(self.commit_time)
            }
            _ => self.commit_time,
        };
        Some((i, st.state, since))
    }
    pub fn short(&self) -> &str {
        self.sha.get(..7).unwrap_or(&self.sha)
    }
}

/// Attribution quality, for the data-quality metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Quality {
    /// Stage builds by how they were tied to commits.
    pub attributions: BTreeMap<Method, u64>,
    /// Per stage: finished builds no commit could be tied to.
    pub gaps: BTreeMap<String, u64>,
    /// Commits whose author date is after their committer date by more than 5 minutes.
    pub clock_skew: u64,
    /// Journeys with a stage before the known build history (outcome `incomplete`).
    pub incomplete: u64,
}

#[derive(Debug, Clone, Default)]
pub struct Derived {
    /// Oldest first (branch order). Shared: a settled journey is the same allocation in every
    /// derivation that reuses it (`core::incremental`), so consecutive snapshots hold it once.
    pub journeys: Vec<Arc<Journey>>,
    pub quality: Quality,
    /// Per stage build: how it was tied to commits (the weakest method among its attempts).
    pub build_methods: FastMap<BuildId, Method>,
    /// Finished stage builds no lineage could be established for.
    pub gap_builds: std::collections::BTreeSet<BuildId>,
    /// Per configured stage (in order): its running builds now, from the builds themselves.
    pub stages: Vec<StageNow>,
    /// Every finished deploy build, per environment in stage order, each oldest first (by end).
    pub deployments: Vec<crate::core::deployments::Deployment>,
    /// Every environment now, in stage order.
    pub environments: Vec<crate::core::deployments::EnvironmentNow>,
    /// The journeys held in the store (`Facts::held`), which the gauges of now count too.
    pub held: Arc<Vec<crate::core::held::Held>>,
}

/// Per (pipeline, job): its builds in id order, with a running max of carried positions (plus
/// one; 0 while none carries), so the first build that can contain a commit is found by binary
/// search. `core::incremental` keeps it from one cycle to the next: below the lowest changed
/// build, neither a job's builds nor their carries change.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct JobIndex {
    by_pipeline: HashMap<Arc<str>, HashMap<Arc<str>, JobBuilds>>,
}

#[derive(Debug, Clone, Default, PartialEq)]
struct JobBuilds {
    ids: Vec<BuildId>,
    prefix: Vec<usize>,
}

impl JobIndex {
    pub(crate) fn of(facts: &Facts, carries: &HashMap<BuildId, Carry>) -> JobIndex {
        let mut j = JobIndex::default();
        j.extend(facts, carries, BuildId::MIN);
        j
    }

    /// Forget the builds from id `from` on.
    pub(crate) fn truncate(&mut self, from: BuildId) {
        for jobs in self.by_pipeline.values_mut() {
            for jb in jobs.values_mut() {
                let keep = jb.ids.partition_point(|id| *id < from);
                jb.ids.truncate(keep);
                jb.prefix.truncate(keep);
            }
            jobs.retain(|_, jb| !jb.ids.is_empty());
        }
        self.by_pipeline.retain(|_, jobs| !jobs.is_empty());
    }

    /// Add the builds from id `from` on (newer than every build held), with their carries.
    pub(crate) fn extend(&mut self, facts: &Facts, carries: &HashMap<BuildId, Carry>, from: BuildId) {
        for b in facts.builds.range(from..).map(|(_, b)| b) {
            let jobs = self.by_pipeline.entry(b.pipeline.clone()).or_default();
            let jb = jobs.entry(b.job.clone()).or_default();
            let before = jb.prefix.last().copied().unwrap_or(0);
            let here = carries.get(&b.id).and_then(|c| c.values().map(|(p, _)| *p + 1).max()).unwrap_or(0);
            jb.ids.push(b.id);
            jb.prefix.push(before.max(here));
        }
    }

    /// A job's builds and their running maxima.
    pub(crate) fn get(&self, pipeline: &str, job: &str) -> (&[BuildId], &[usize]) {
        match self.by_pipeline.get(pipeline).and_then(|j| j.get(job)) {
            Some(jb) => (&jb.ids, &jb.prefix),
            None => (&[], &[]),
        }
    }
}

/// Derive every journey from the facts at `now`.
pub fn derive(facts: &Facts, cfg: &CoreConfig, now: i64) -> Derived {
    let order = branch_order(facts);
    let pos: HashMap<&str, usize> = order.iter().enumerate().map(|(i, s)| (s.as_str(), i)).collect();
    let class: Vec<Classification> =
        order.iter().map(|s| cfg.classifier.classify(&facts.commits[s].message, &facts.commits[s].files)).collect();
    let carries = compute_carries(facts, cfg, &Lineage::of(facts, cfg), &pos);
    let jobs = JobIndex::of(facts, &carries);
    let history = History { order: &order, class: &class, carries: &carries, jobs: &jobs };
    derive_with(facts, cfg, now, history, |_, _| None)
}

/// The history-wide parts of a derivation, computed beforehand: the branch order, each commit's
/// classification (in that order), every build's carry and the builds per job.
/// `core::incremental` keeps them from one poll cycle to the next.
#[derive(Clone, Copy)]
pub(crate) struct History<'a> {
    pub order: &'a [Sha],
    pub class: &'a [Classification],
    pub carries: &'a HashMap<BuildId, Carry>,
    pub jobs: &'a JobIndex,
}

/// [`derive`] from its [`History`].
pub(crate) fn derive_with(
    facts: &Facts,
    cfg: &CoreConfig,
    now: i64,
    history: History<'_>,
    // A journey known to be what this derivation would make of it (by sha, with the stages'
    // running builds now).
    reuse: impl Fn(&Sha, &[StageNow]) -> Option<Arc<Journey>>,
) -> Derived {
    let History { order, class, carries, jobs } = history;
    let pos: HashMap<&str, usize> = order.iter().enumerate().map(|(i, s)| (s.as_str(), i)).collect();
    let stages_now = stages_now(facts, cfg, carries, order, class, now);

    // Per (pipeline, job): when its newest finished build ended. A commit that lands while a
    // serial job runs is taken only after that build ends, so "not picked up" counts from then.
    let mut last_end: FastMap<(&str, &str), i64> = FastMap::default();
    for b in facts.builds.values() {
        if let (true, Some(end)) = (b.status.is_finished(), b.end) {
            let e = last_end.entry((&*b.pipeline, &*b.job)).or_insert(end);
            *e = (*e).max(end);
        }
    }

    let mut quality = Quality::default();
    let mut attributed: FastMap<BuildId, Method> = FastMap::default();
    let mut journeys = Vec::with_capacity(order.len());
    for (i, sha) in order.iter().enumerate() {
        let c = &facts.commits[sha];
        let cl = &class[i];
        let commit_time = commit_time_of(c, cfg);
        if c.author_date > c.committer_date + 300 {
            quality.clock_skew += 1;
        }
        if let Some(j) = reuse(sha, &stages_now) {
            for a in j.stages.iter().flat_map(|s| &s.attempts) {
                let m = attributed.entry(a.build_id).or_insert(a.method);
                *m = (*m).max(a.method);
            }
            journeys.push(j);
            continue;
        }
        let origin = facts.origins.get(sha);
        let lead_start = match (cfg.lead_time_from, origin) {
            (LeadTimeFrom::PrOpened, Some(o)) => premerge::lead_time_start(PreMergeStart::PrOpened, o, commit_time),
            (LeadTimeFrom::FirstCommit, Some(o)) => {
                premerge::lead_time_start(PreMergeStart::FirstCommit, o, commit_time)
            }
            _ => commit_time,
        };
        let passive = cl.change_type.is_passive();
        let mut stages: Vec<StageJourney> = Vec::with_capacity(cfg.stages.len());
        for (si, st) in cfg.stages.iter().enumerate() {
            let expected: Vec<&JobDef> = st
                .jobs
                .iter()
                .filter(|j| if passive { st.carries_passive } else { j.git.iter().any(|g| cl.resources.contains(g)) })
                .collect();
            if expected.is_empty() {
                stages.push(StageJourney {
                    name: st.name.clone(),
                    state: StageState::NotApplicable,
                    ready_at: None,
                    start: None,
                    end: None,
                    attempts: vec![],
                    expected_jobs: vec![],
                    waits_for: None,
                });
                continue;
            }
            // Ready when every applicable upstream stage succeeded; an upstream that has not
            // succeeded keeps this one waiting.
            let mut ready_at = Some(commit_time);
            for a in &st.after {
                let up = &stages[*a];
                match up.state {
                    StageState::NotApplicable => {}
                    StageState::Succeeded => ready_at = ready_at.max(up.end),
                    _ => ready_at = None,
                }
            }
            let carried = stages.iter().any(|s| !s.attempts.is_empty());
            let mut attempts = vec![];
            let mut job_states = vec![];
            for j in &expected {
                let (ids, pre) = jobs.get(&st.pipeline, &j.name);
                let from = pre.partition_point(|m| *m < i + 1);
                let mut job_att: Vec<Attempt> = vec![];
                let mut succeeded = false;
                for id in &ids[from..] {
                    let b = &facts.builds[id];
                    let Some(carry) = carries.get(id) else { continue };
                    if !contains(carry, cl, i, passive) {
                        continue;
                    }
                    let method = carry_method(carry, cl);
                    let head = carry_head(carry, cl).and_then(|p| order.get(p).cloned());
                    let own = head.as_deref() == Some(sha.as_str());
                    job_att.push(attempt(b, method, own, head));
                    if b.status == BuildStatus::Succeeded {
                        succeeded = true;
                        // Later builds of the job also contain this commit, but the stage is done.
                        break;
                    }
                }
                // Inferred fallback: no build of this job could be tied exactly; take the first
                // unattributed one that started after the commit became ready and whose plain
                // git input is this commit or a descendant.
                if job_att.is_empty()
                    && !succeeded
                    && let (Some(step), Some(ready)) = (&st.fallback_git_input, ready_at)
                {
                    for id in ids {
                        let b = &facts.builds[id];
                        if carries.get(id).is_some_and(|c| !c.is_empty()) || b.start.is_none_or(|s| s < ready) {
                            continue;
                        }
                        let r = b.inputs.iter().find(|v| &v.step == step).and_then(|v| v.version.get("ref"));
                        let Some(rp) = r.and_then(|r| pos.get(r)) else { continue };
                        if *rp >= i {
                            let head = order.get(*rp).cloned();
                            job_att.push(attempt(b, Method::Inferred, *rp == i, head));
                            // Reruns of it are attempts too.
                            for (rid, rb) in facts.builds.range(id + 1..) {
                                if rb.rerun_of == Some(*id) {
                                    job_att.push(attempt(rb, Method::Inferred, *rp == i, order.get(*rp).cloned()));
                                    let _ = rid;
                                }
                            }
                            break;
                        }
                    }
                }
                // Before the job's known history: its builds for this commit were never read,
                // and a later build carrying it would only look like a superseding one.
                let hidden = facts
                    .horizons
                    .get(&(st.pipeline.clone(), j.name.clone()))
                    .is_some_and(|h| h.hides(c.committer_date));
                job_states.push(if hidden { StageState::Incomplete } else { job_state(&job_att) });
                attempts.extend(job_att);
            }
            for a in &attempts {
                let m = attributed.entry(a.build_id).or_insert(a.method);
                *m = (*m).max(a.method);
            }
            attempts.sort_by_key(|a| (a.start.unwrap_or(i64::MAX), a.build_id));
            let start = attempts.iter().filter_map(|a| a.start).min();
            let state = if job_states.contains(&StageState::Incomplete) {
                StageState::Incomplete
            } else if job_states.iter().all(|s| *s == StageState::Succeeded) {
                StageState::Succeeded
            } else if job_states.contains(&StageState::Running) {
                StageState::Running
            } else if job_states.contains(&StageState::Failed) {
                StageState::Failed
            } else if ready_at.is_some() && passive && attempts.is_empty() && !carried && !st.approval {
                // No stage builds a passive commit on its own: until a triggering commit's
                // build carries it, it is not pending, it rides. Once one did, it travels
                // with that commit and waits where that commit waits.
                StageState::Riding
            } else if ready_at.is_some() && st.approval && attempts.is_empty() && !stages_now[si].gate_opened() {
                StageState::AwaitingApproval
            } else if ready_at.is_some() {
                StageState::Pending
            } else {
                StageState::Waiting
            };
            let end = if state == StageState::Succeeded {
                // The stage ends when its last job's first success ends.
                expected
                    .iter()
                    .filter_map(|j| {
                        attempts
                            .iter()
                            .filter(|a| *a.job == *j.name && a.status == BuildStatus::Succeeded)
                            .filter_map(|a| a.end)
                            .min()
                    })
                    .max()
            } else if state == StageState::Failed {
                attempts.iter().filter_map(|a| a.end).max()
            } else {
                None
            };
            // Journeys outlive their derivation (shared by the next ones): no growth slack.
            attempts.shrink_to_fit();
            stages.push(StageJourney {
                name: st.name.clone(),
                state,
                ready_at,
                start,
                end,
                attempts,
                expected_jobs: expected.iter().map(|j| j.name.clone()).collect(),
                waits_for: None,
            });
        }

        let incomplete = stages.iter().any(|s| s.state == StageState::Incomplete);
        if incomplete {
            quality.incomplete += 1;
            // What waits behind an unknown stage is not known either: not in flight.
            for s in stages.iter_mut().filter(|s| s.state.in_flight()) {
                s.state = StageState::Incomplete;
            }
        }
        let mut deployed_at = BTreeMap::new();
        for (st, sj) in cfg.stages.iter().zip(&stages).filter(|_| !incomplete) {
            if let (Some(env), StageState::Succeeded, Some(end)) = (&st.environment, sj.state, sj.end) {
                deployed_at.entry(env.clone()).or_insert(end);
            }
        }
        // The journey goes on to the last environment that applies to it (or `journey_ends_at`,
        // when that comes first): it ends there.
        let end_at = cfg
            .journey_ends_at
            .as_ref()
            .and_then(|e| cfg.stages.iter().position(|st| st.environment.as_ref() == Some(e)));
        let last_env = cfg
            .stages
            .iter()
            .zip(&stages)
            .enumerate()
            .filter(|(i, _)| end_at.is_none_or(|e| *i <= e))
            .map(|(_, x)| x)
            .rfind(|(st, sj)| st.environment.is_some() && sj.state != StageState::NotApplicable)
            .and_then(|(st, _)| st.environment.as_ref());
        let ended = last_env.is_some_and(|e| deployed_at.contains_key(e));
        if !ended && !incomplete {
            for si in 0..stages.len() {
                let w = waits_for(&cfg.stages[si], &stages, si, &stages_now[si]);
                stages[si].waits_for = w;
            }
        }
        let own_failure = stages.iter().find(|s| {
            s.attempts.iter().any(|a| a.own && matches!(a.status, BuildStatus::Failed | BuildStatus::Errored))
        });
        let not_own = stages.iter().find(|s| {
            s.state != StageState::NotApplicable && !s.attempts.is_empty() && !s.attempts.iter().any(|a| a.own)
        });
        let carried_by = not_own
            .filter(|_| !incomplete)
            .and_then(|s| s.attempts.iter().find(|a| !a.own).and_then(|a| a.head.clone()));
        let failed_now = stages.iter().find(|s| s.state == StageState::Failed);
        let (outcome, failed_stage, carried_on) = if incomplete {
            (Outcome::Incomplete, None, false)
        } else if ended {
            match (cl.change_type, own_failure, not_own) {
                (ChangeType::Skipped, ..) => (Outcome::Skipped, None, false),
                (ChangeType::Untracked, ..) => (Outcome::Untracked, None, false),
                // Failed on its own build, delivered only by a later one.
                (_, Some(f), Some(_)) if f.attempts.iter().any(|a| !a.own && a.status == BuildStatus::Succeeded) => {
                    (Outcome::Failed, Some(f.name.clone()), true)
                }
                (_, _, Some(_)) => (Outcome::Superseded, None, false),
                _ => (Outcome::Deployed, None, false),
            }
        } else if let Some(f) = failed_now {
            (Outcome::Failed, Some(f.name.clone()), false)
        } else {
            (Outcome::InFlight, None, false)
        };
        // Not picked up: the first stage that applies has no build for it, none of its jobs is busy
        // or has a build queued (Concourse would take the commit next), and it has been free to
        // take it for longer than `not_picked_up_after`: since the commit, or since the last build
        // of those jobs ended, whichever is later.
        let first = cfg.stages.iter().zip(&stages).find(|(_, s)| s.state != StageState::NotApplicable);
        let not_picked_up = !passive
            && !incomplete
            && first.is_some_and(|(st, s)| {
                let free_since = s
                    .expected_jobs
                    .iter()
                    .filter_map(|j| last_end.get(&(st.pipeline.as_str(), j.as_str())))
                    .copied()
                    .fold(commit_time, i64::max);
                s.attempts.is_empty()
                    && matches!(s.state, StageState::Pending | StageState::Waiting)
                    && !matches!(s.waits_for, Some(WaitsFor::Busy(_) | WaitsFor::Queued(_)))
                    && now - free_since > cfg.not_picked_up_after
            });
        journeys.push(Arc::new(Journey {
            sha: sha.clone(),
            subject: c.subject().to_string(),
            author: c.author.clone(),
            commit_time,
            lead_start,
            origin: origin.cloned(),
            classification: cl.clone(),
            stages,
            outcome,
            failed_stage,
            carried_on,
            ended,
            ended_in: if ended { last_env.cloned() } else { None },
            deployed_at,
            carried_by,
            not_picked_up,
            vanished: facts.vanished.contains_key(sha),
        }));
    }

    // Data quality: how each stage build was tied, and finished stage builds tied to nothing.
    let mut gap_builds = std::collections::BTreeSet::new();
    for b in facts.builds.values() {
        let Some(si) = cfg.stage_of_job(&b.pipeline, &b.job) else { continue };
        if !attributed.contains_key(&b.id)
            && b.status.is_finished()
            && b.resources_known
            && carries.get(&b.id).is_none_or(|c| c.is_empty())
        {
            gap_builds.insert(b.id);
        }
        match attributed.get(&b.id) {
            Some(m) => *quality.attributions.entry(*m).or_insert(0) += 1,
            // Re-delivering already delivered commits is not a gap; having no lineage at all is.
            None if b.status.is_finished() && b.resources_known && carries.get(&b.id).is_none_or(|c| c.is_empty()) => {
                *quality.gaps.entry(cfg.stages[si].name.clone()).or_insert(0) += 1
            }
            None => {}
        }
    }
    // Attempts are only ever made of builds of a stage's jobs (above, or in the derivation a
    // reused journey came from, whose attempts' builds are all still known), so every
    // attributed build is a known stage build; a forgotten one is left out all the same.
    let mut build_methods = attributed;
    build_methods.retain(|id, _| facts.builds.contains_key(id));
    let (deployments, environments) = crate::core::deployments::compute(&crate::core::deployments::Input {
        facts,
        cfg,
        carries,
        order,
        class,
        journeys: &journeys,
        now,
    });
    Derived {
        journeys,
        quality,
        build_methods,
        gap_builds,
        stages: stages_now,
        deployments,
        environments,
        held: facts.held.clone(),
    }
}

/// The time a commit's stages wait from: the commit's own time (only lead time may start
/// before the merge).
pub(crate) fn commit_time_of(c: &crate::core::facts::CommitFact, cfg: &CoreConfig) -> i64 {
    match cfg.lead_time_from {
        LeadTimeFrom::AuthorDate => c.author_date,
        LeadTimeFrom::FirstSeen => c.first_seen,
        LeadTimeFrom::CommitterDate | LeadTimeFrom::PrOpened | LeadTimeFrom::FirstCommit => c.committer_date,
    }
}

/// The running builds of every stage's jobs and the age of the oldest, from the builds
/// themselves: a build runs for as long as it runs, whatever commit it was tied to.
fn stages_now(
    facts: &Facts,
    cfg: &CoreConfig,
    carries: &HashMap<BuildId, Carry>,
    order: &[Sha],
    class: &[Classification],
    now: i64,
) -> Vec<StageNow> {
    let mut out: Vec<StageNow> = cfg
        .stages
        .iter()
        .map(|s| StageNow { name: s.name.clone(), stuck_after: s.stuck_after, ..StageNow::default() })
        .collect();
    for b in facts.builds.values().filter(|b| !b.status.is_finished()) {
        let Some(si) = cfg.stage_of_job(&b.pipeline, &b.job) else { continue };
        let head = carries.get(&b.id).and_then(|c| running_head(c, class)).and_then(|p| order.get(p));
        out[si].running.push(RunningBuild {
            build_id: b.id,
            pipeline: b.pipeline.clone(),
            job: b.job.clone(),
            name: b.name.clone(),
            // A started build has a start time; a sighting with one but an older status is started.
            status: if b.start.is_some() { BuildStatus::Started } else { b.status },
            start: b.start,
            url: b.url.clone(),
            rerun_of: b.rerun_of,
            head: head.cloned(),
        });
    }
    for sn in out.iter_mut() {
        sn.running.sort_by_key(|r| (r.start.is_none(), r.start, r.build_id));
        sn.oldest_running_age = sn.oldest_age(now);
        sn.stuck = sn.stuck_at(now);
    }
    out
}

/// The newest commit a build delivers whole: every tracked resource that emits it is carried at
/// or after it (an RC with a newer commit's dagster image but the previous `repo` carries the
/// previous commit, not the newer one). Passive commits ride along with anything, so they count
/// only when nothing else does.
fn running_head(carry: &Carry, class: &[Classification]) -> Option<usize> {
    let max = carry.values().map(|(p, _)| *p).max()?;
    (0..=max.min(class.len().saturating_sub(1)))
        .rev()
        .find(|i| !class[*i].change_type.is_passive() && contains(carry, &class[*i], *i, false))
        .or(Some(max))
}

impl StageNow {
    /// Age of the oldest started build at `now` (0 when none has started).
    pub fn oldest_age(&self, now: i64) -> i64 {
        self.running.iter().filter_map(|r| r.age(now)).max().unwrap_or(0)
    }
    /// The oldest started build has run longer than `stuck_after` at `now`.
    pub fn stuck_at(&self, now: i64) -> bool {
        self.stuck_after.is_some_and(|t| self.oldest_age(now) > t)
    }
}

/// What a commit at stage `si` waits for, when it is there and not running.
fn waits_for(st: &StageDef, stages: &[StageJourney], si: usize, now: &StageNow) -> Option<WaitsFor> {
    let sj = &stages[si];
    match sj.state {
        StageState::Riding => Some(WaitsFor::TriggeringCommit),
        StageState::Waiting => st
            .after
            .iter()
            .map(|a| &stages[*a])
            .find(|u| !matches!(u.state, StageState::Succeeded | StageState::NotApplicable))
            .map(|u| WaitsFor::Upstream { stage: u.name.clone(), state: u.state }),
        StageState::Pending => {
            let queued = now.running.iter().find(|r| sj.attempts.iter().any(|a| a.build_id == r.build_id));
            if let Some(q) = queued {
                return Some(WaitsFor::Queued(q.clone()));
            }
            // Started builds sort first: a pending one behind them waits too.
            let busy = now.running.iter().find(|r| {
                sj.expected_jobs.iter().any(|j| **j == *r.job) && !sj.attempts.iter().any(|a| a.build_id == r.build_id)
            });
            Some(match busy {
                // A pending build (not a rerun) has no inputs yet: Concourse gives it the
                // newest versions when it starts, so nothing ahead of it, it is this commit's.
                Some(b) if b.status == BuildStatus::Pending && b.rerun_of.is_none() && b.head.is_none() => {
                    WaitsFor::Queued(b.clone())
                }
                Some(b) => WaitsFor::Busy(b.clone()),
                None => WaitsFor::NoBuild,
            })
        }
        _ => None,
    }
}

fn attempt(b: &BuildFact, method: Method, own: bool, head: Option<Sha>) -> Attempt {
    Attempt {
        build_id: b.id,
        pipeline: b.pipeline.clone(),
        job: b.job.clone(),
        name: b.name.clone(),
        status: b.status,
        start: b.start,
        end: b.end,
        url: b.url.clone(),
        rerun_of: b.rerun_of,
        method,
        own,
        head,
    }
}

fn job_state(att: &[Attempt]) -> StageState {
    if att.iter().any(|a| a.status == BuildStatus::Succeeded) {
        StageState::Succeeded
    } else if att.iter().any(|a| a.status == BuildStatus::Started) {
        StageState::Running
    } else if att.iter().any(|a| a.status == BuildStatus::Pending) {
        StageState::Pending
    } else if !att.is_empty() {
        StageState::Failed
    } else {
        StageState::Pending
    }
}

/// The tracked branch's first-parent order, oldest first, following parent links; commits that
/// vanished (force-push) are left out.
pub fn branch_order(facts: &Facts) -> Vec<Sha> {
    let mut children: HashMap<&str, Vec<&CommitFact>> = HashMap::new();
    let mut roots: Vec<&CommitFact> = vec![];
    for c in facts.commits.values() {
        if facts.vanished.contains_key(&c.sha) {
            continue;
        }
        match c.parent.as_deref() {
            Some(p) if facts.commits.contains_key(p) && !facts.vanished.contains_key(p) => {
                children.entry(p).or_default().push(c)
            }
            _ => roots.push(c),
        }
    }
    // With a gap in history there can be several roots: oldest first.
    roots.sort_by(|a, b| (a.committer_date, &a.sha).cmp(&(b.committer_date, &b.sha)));
    let mut out = vec![];
    for r in roots {
        let mut cur = Some(r);
        while let Some(c) = cur {
            out.push(c.sha.clone());
            cur = children
                .get(c.sha.as_str())
                .and_then(|v| v.iter().max_by_key(|x| (x.first_seen, x.committer_date, &x.sha)).copied());
        }
    }
    out
}

/// Does a build with this carry deliver commit `i`?
fn contains(carry: &Carry, cl: &Classification, i: usize, passive: bool) -> bool {
    if carry.is_empty() {
        return false;
    }
    let relevant: Vec<usize> = cl.resources.iter().filter_map(|r| carry.get(r).map(|(p, _)| *p)).collect();
    if !relevant.is_empty() {
        return relevant.iter().all(|p| *p >= i);
    }
    passive && carry.values().any(|(p, _)| *p >= i)
}

fn carry_method(carry: &Carry, cl: &Classification) -> Method {
    let rel: Vec<Method> = cl.resources.iter().filter_map(|r| carry.get(r).map(|(_, m)| *m)).collect();
    if rel.is_empty() {
        carry.values().map(|(_, m)| *m).min().unwrap_or(Method::Exact)
    } else {
        rel.into_iter().max().unwrap_or(Method::Exact)
    }
}

/// The newest commit the build delivered, among the resources that matter for this commit.
fn carry_head(carry: &Carry, cl: &Classification) -> Option<usize> {
    let rel: Vec<usize> = cl.resources.iter().filter_map(|r| carry.get(r).map(|(p, _)| *p)).collect();
    if rel.is_empty() { carry.values().map(|(p, _)| *p).max() } else { rel.into_iter().min() }
}

/// One finished build of a stage's job, for per-build metrics (durations, attempts, failures).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StageBuild {
    pub stage: usize,
    pub build_id: BuildId,
    pub status: BuildStatus,
    pub start: i64,
    pub end: i64,
    /// The newest commit it delivered, when it could be tied to one.
    pub head: Option<Sha>,
}

/// Every finished build of every stage's jobs, oldest first, with the commit it was tied to.
pub fn stage_builds(facts: &Facts, cfg: &CoreConfig, derived: &Derived) -> Vec<StageBuild> {
    let mut heads: FastMap<BuildId, &Sha> = FastMap::default();
    for j in &derived.journeys {
        for s in &j.stages {
            for a in &s.attempts {
                if let Some(h) = &a.head {
                    heads.entry(a.build_id).or_insert(h);
                }
            }
        }
    }
    facts
        .builds
        .values()
        .filter(|b| b.status.is_finished())
        .filter_map(|b| {
            let stage = cfg.stage_of_job(&b.pipeline, &b.job)?;
            let (start, end) = (b.start?, b.end?);
            Some(StageBuild {
                stage,
                build_id: b.id,
                status: b.status,
                start,
                end,
                head: heads.get(&b.id).map(|h| (*h).clone()),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "
repository: { github: o/r }
concourse: { url: 'http://ci/', team: dev }
resources: { repo: { ignore_paths: ['ci/*'] } }
stages:
  - { name: tests, pipeline: p, jobs: [t1, t2], stuck_after: 30m }
  - { name: testflight, pipeline: p, jobs: [tf], stuck_after: 20m, environment: staging }
";
    const NOW: i64 = 100_000;

    fn cfg() -> CoreConfig {
        crate::config::parse(CONFIG, "t.yaml", &|_| None).unwrap().core()
    }

    /// c0 and c1 change code, c2 is `[ci skip]`, c3 touches only ignored paths.
    fn commits() -> Vec<Fact> {
        let mk = |i: usize, msg: &str, file: &str| {
            crate::core::fixtures::commit(sha(i), (i > 0).then(|| sha(i - 1)), 1_000 * (i as i64 + 1), msg, file)
        };
        vec![
            mk(0, "feat: a", "src/a.rs"),
            mk(1, "feat: b", "src/b.rs"),
            mk(2, "chore: notes [ci skip]", "src/c.rs"),
            mk(3, "ci: tweak", "ci/x.sh"),
        ]
    }

    fn sha(i: usize) -> String {
        format!("c{i}{}", "0".repeat(39))
    }

    /// A build of job `job` taking commit `c` of `repo`; `start`/`end` `None` as the status says.
    fn build(id: i64, job: &str, status: BuildStatus, start: Option<i64>, end: Option<i64>, c: usize) -> Fact {
        crate::core::fixtures::build(id, job, status, start, end, Some(sha(c)))
    }

    fn derived(builds: Vec<Fact>) -> Derived {
        let mut f = Facts::default();
        for x in commits().into_iter().chain(builds) {
            f.apply(x);
        }
        derive(&f, &cfg(), NOW)
    }

    use BuildStatus::{Pending as Queued, Started, Succeeded as Done};

    /// c0 went the whole way (tests and testflight succeeded); builds after that are the case.
    fn c0_deployed() -> Vec<Fact> {
        vec![
            build(1, "t1", Done, Some(1_100), Some(1_500), 0),
            build(2, "t2", Done, Some(1_100), Some(1_600), 0),
            build(3, "tf", Done, Some(1_700), Some(2_000), 0),
        ]
    }

    /// Issue #21: when a job's builds were read only from a horizon on, a commit older than it
    /// is `incomplete` there (no outcome, no lead time, counted), instead of looking superseded
    /// by the first build that is known; a commit after it derives as if all were known. The
    /// horizon that reaches further back wins, in any order.
    #[test]
    fn a_commit_before_a_jobs_known_history_is_incomplete_not_superseded() {
        let horizon = |id: i64, time: i64| {
            Fact::Horizon(HorizonFact { pipeline: "p".into(), job: "t1".into(), since_id: id, since_time: time })
        };
        // c0's own builds (1..3) were not read; c1's were: they carry c0 along.
        let c1_deployed = || {
            vec![
                build(4, "t1", Done, Some(2_100), Some(2_500), 1),
                build(5, "t2", Done, Some(2_100), Some(2_600), 1),
                build(6, "tf", Done, Some(2_700), Some(3_000), 1),
            ]
        };
        let check = |facts: Vec<Fact>, want: [(&str, &str, Option<i64>); 2], incomplete: u64| {
            let d = derived(facts);
            let got: Vec<(&str, &str, Option<i64>)> = d.journeys[..2]
                .iter()
                .map(|j| (j.outcome.as_str(), j.stages[0].state.as_str(), j.lead_time("staging")))
                .collect();
            assert_eq!(got, want, "{:?}", d.journeys);
            assert_eq!(d.quality.incomplete, incomplete);
            d
        };
        // Without a horizon the core can only conclude that c1's builds superseded c0.
        check(
            c1_deployed(),
            [("superseded", "succeeded", Some(3_000 - 1_000)), ("deployed", "succeeded", Some(3_000 - 2_000))],
            0,
        );
        // t1's builds are known from build 4 on, older ones started at or before 1_900: c0
        // (made at 1_000) is not known there; c1 (2_000) is.
        let d = check(
            c1_deployed().into_iter().chain([horizon(4, 1_900)]).collect(),
            [("incomplete", "incomplete", None), ("deployed", "succeeded", Some(3_000 - 2_000))],
            1,
        );
        let c0 = &d.journeys[0];
        assert!(!c0.ended && c0.carried_by.is_none() && !c0.not_picked_up && c0.deployed_at.is_empty());
        assert!(c0.stages.iter().all(|s| !s.state.in_flight()), "nothing of it is in flight: {:?}", c0.stages);
        // A read that reached further back (a backfill) wins, whichever came first.
        for order in [vec![horizon(4, 1_900), horizon(1, 900)], vec![horizon(1, 900), horizon(4, 1_900)]] {
            let all = c0_deployed().into_iter().chain(c1_deployed()).chain(order).collect();
            check(all, [("deployed", "succeeded", Some(1_000)), ("deployed", "succeeded", Some(1_000))], 0);
        }
    }

    /// The stage-level signal comes from the stage's running builds, whatever they carry: a
    /// rerun of testflight on the already deployed c0 carries no commit in flight and still
    /// makes testflight stuck after 20 minutes; a queued build counts but has no age.
    #[test]
    fn stage_running_builds_and_stuck_come_from_the_builds() {
        let check = |extra: Vec<Fact>, want: [(usize, i64, bool); 2]| {
            let d = derived(c0_deployed().into_iter().chain(extra).collect());
            let got: Vec<(usize, i64, bool)> =
                d.stages.iter().map(|s| (s.running.len(), s.oldest_running_age, s.stuck)).collect();
            assert_eq!(got, want, "{:?}", d.stages);
            d
        };
        // Nothing runs.
        check(vec![], [(0, 0, false), (0, 0, false)]);
        // A testflight build on c0 started 25 minutes ago, and a queued one: stuck (20m).
        let d = check(
            vec![build(10, "tf", Started, Some(NOW - 1_500), None, 0), build(11, "tf", Queued, None, None, 0)],
            [(0, 0, false), (2, 1_500, true)],
        );
        assert_eq!(d.stages[1].running[0].build_id, 10, "started first, then queued");
        assert_eq!(d.stages[1].running[0].head.as_deref(), Some(sha(0).as_str()));
        assert_eq!(d.stages[1].running[1].age(NOW), None);
        let c0 = &d.journeys[0];
        assert!(c0.ended && c0.stages.iter().all(|s| !s.state.in_flight()), "no commit in flight carries it");
        // Exactly 20 minutes is not over 20 minutes.
        check(vec![build(10, "tf", Started, Some(NOW - 1_200), None, 0)], [(0, 0, false), (1, 1_200, false)]);
        // Three parallel test jobs: the oldest running build counts (31 minutes > 30).
        check(
            vec![
                build(10, "t1", Started, Some(NOW - 600), None, 1),
                build(11, "t2", Started, Some(NOW - 1_860), None, 1),
            ],
            [(2, 1_860, true), (0, 0, false)],
        );
        // A rerun runs on its own clock: the original's start does not count.
        let mut rerun = build(12, "tf", Started, Some(NOW - 60), None, 0);
        if let Fact::Build(b) = &mut rerun {
            b.rerun_of = Some(3);
            b.name = "3.1".into();
        }
        check(vec![rerun], [(0, 0, false), (1, 60, false)]);
    }

    /// "Not picked up" is about Concourse not taking a commit, not about a busy serial job: a
    /// commit that lands while the tests run on an older one is not flagged while they run, nor
    /// within `not_picked_up_after` of their end; after that, with nothing started, it is.
    #[test]
    fn not_picked_up_counts_from_when_the_stage_was_free() {
        let c1 = |builds: Vec<Fact>| derived(builds).journeys[1].not_picked_up;
        let c0_tests = |end: Option<i64>| {
            let status = if end.is_some() { Done } else { Started };
            vec![build(1, "t1", status, Some(1_100), end, 0), build(2, "t2", status, Some(1_100), end, 0)]
        };
        // c1 landed at 2_000; NOW is 98_000 s later. The tests on c0 still run: busy, not flagged.
        assert!(!c1(c0_tests(None)));
        // They ended 2 minutes ago: Concourse is about to take c1.
        assert!(!c1(c0_tests(Some(NOW - 120))));
        // They ended an hour ago and nothing took c1: flagged.
        assert!(c1(c0_tests(Some(NOW - 3_600))));
        // A queued build of the stage will take it: not flagged.
        let mut queued = c0_tests(Some(NOW - 3_600));
        queued.push(build(3, "t1", Queued, None, None, 0));
        assert!(!c1(queued));
    }

    /// What a commit that is not running at a stage waits for, and the passive commits' own
    /// state: they ride with the next triggering commit, are never pending, never "not picked up".
    #[test]
    fn what_a_commit_waits_for() {
        let check = |builds: Vec<Fact>, c: usize, want: Vec<(&str, Option<&str>)>| {
            let d = derived(builds);
            let j = d.journeys.iter().find(|j| j.sha == sha(c)).unwrap();
            let got: Vec<(&str, Option<String>)> =
                j.stages.iter().map(|s| (s.state.as_str(), s.waits_for.as_ref().map(|w| w.describe()))).collect();
            let want: Vec<(&str, Option<String>)> = want.into_iter().map(|(a, b)| (a, b.map(String::from))).collect();
            assert_eq!(got, want, "c{c}");
            j.clone()
        };
        let none = vec![];
        check(
            none.clone(),
            1,
            vec![("pending", Some("no build yet")), ("waiting", Some("waiting for upstream tests (pending)"))],
        );
        // t1 runs on c0 (older than c1): busy.
        check(
            vec![build(1, "t1", Started, Some(1_100), None, 0)],
            1,
            vec![
                ("pending", Some("the stage is busy with build t1 #1 (started, carrying c000000)")),
                ("waiting", Some("waiting for upstream tests (pending)")),
            ],
        );
        // A build carrying c1 was created and has not started.
        check(
            vec![build(4, "t1", Queued, None, None, 1)],
            1,
            vec![
                ("pending", Some("its build t1 #4 is queued (pending, not started)")),
                ("waiting", Some("waiting for upstream tests (pending)")),
            ],
        );
        // What Concourse shows of a build that has not started: no inputs yet (it takes the
        // newest versions when it starts, so a created one that is not a rerun is c1's).
        let no_inputs = |id: i64, job: &str, rerun_of: Option<i64>| {
            let Fact::Build(mut b) = build(id, job, Queued, None, None, 0) else { unreachable!() };
            b.inputs.clear();
            b.resources_known = false;
            b.rerun_of = rerun_of;
            Fact::Build(b)
        };
        check(
            vec![no_inputs(4, "t1", None)],
            1,
            vec![
                ("pending", Some("its build t1 #4 is queued (pending, not started)")),
                ("waiting", Some("waiting for upstream tests (pending)")),
            ],
        );
        // Behind a started build, it waits for that one; a queued rerun takes an old build's
        // inputs, so it is not c1's.
        check(
            vec![build(1, "t1", Started, Some(1_100), None, 0), no_inputs(4, "t1", None)],
            1,
            vec![
                ("pending", Some("the stage is busy with build t1 #1 (started, carrying c000000)")),
                ("waiting", Some("waiting for upstream tests (pending)")),
            ],
        );
        check(
            vec![no_inputs(4, "t1", Some(1))],
            1,
            vec![
                ("pending", Some("the stage is busy with build t1 #4 (pending, carrying no known commit)")),
                ("waiting", Some("waiting for upstream tests (pending)")),
            ],
        );
        // c1's tests failed: testflight waits for them.
        check(
            vec![
                build(4, "t1", BuildStatus::Failed, Some(2_100), Some(2_200), 1),
                build(5, "t2", Done, Some(2_100), Some(2_200), 1),
            ],
            1,
            vec![("failed", None), ("waiting", Some("waiting for upstream tests (failed)"))],
        );
        // Passive commits ride; after any time, they are not "not picked up".
        for c in [2, 3] {
            let j = check(
                none.clone(),
                c,
                vec![
                    ("riding", Some("rides with the next triggering commit")),
                    ("waiting", Some("waiting for upstream tests (riding)")),
                ],
            );
            assert!(!j.not_picked_up);
        }
        // A later build carries the passive commits: they run with it.
        let j = check(
            vec![build(6, "t1", Started, Some(5_000), None, 3)],
            2,
            vec![("running", None), ("waiting", Some("waiting for upstream tests (running)"))],
        );
        assert!(j.stages[0].attempts.iter().all(|a| !a.own));
        // Once a triggering commit's builds carried it, it no longer rides: it waits where that
        // build's commit waits (here for a testflight build, like c3 itself).
        let tests_on_c3 = || {
            vec![build(6, "t1", Done, Some(5_000), Some(5_500), 3), build(7, "t2", Done, Some(5_000), Some(5_600), 3)]
        };
        check(tests_on_c3(), 2, vec![("succeeded", None), ("pending", Some("no build yet"))]);
        check(tests_on_c3(), 3, vec![("succeeded", None), ("pending", Some("no build yet"))]);
        // A deployed journey waits for nothing.
        let j = check(c0_deployed(), 0, vec![("succeeded", None), ("succeeded", None)]);
        assert!(j.ended);
    }

    /// Issue #17: the journey goes on through every environment, in order, and ends at the last
    /// one; a gated environment (`approval: true`) holds a ready commit in `awaiting_approval`
    /// until a build takes it (or one is created that will), and lead time is kept per
    /// environment.
    #[test]
    fn the_journey_goes_through_every_environment_and_waits_at_a_gate() {
        let config = format!(
            "{CONFIG}  - {{ name: qa, pipeline: p, jobs: [qa], environment: qa }}\n  - {{ name: production, pipeline: p, jobs: [prod], environment: production, approval: true }}\n"
        );
        let core = crate::config::parse(&config, "t.yaml", &|_| None).unwrap().core();
        let check = |extra: Vec<Fact>, want_states: [&str; 4], ended: bool, lead: [Option<i64>; 3]| {
            let mut f = Facts::default();
            for x in commits().into_iter().chain(c0_deployed()).chain(extra) {
                f.apply(x);
            }
            let d = derive(&f, &core, NOW);
            let j = &d.journeys[0];
            let states: Vec<&str> = j.stages.iter().map(|s| s.state.as_str()).collect();
            assert_eq!(states, want_states, "{:?}", j.stages);
            assert_eq!(j.ended, ended);
            let got = [j.lead_time("staging"), j.lead_time("qa"), j.lead_time("production")];
            assert_eq!(got, lead);
            d
        };
        // Staging only: QA is next (pending, no gate), production waits for it.
        let d = check(vec![], ["succeeded", "succeeded", "pending", "waiting"], false, [Some(1_000), None, None]);
        assert_eq!(d.journeys[0].outcome, Outcome::InFlight);
        // In QA: production's gate holds it.
        let qa = || build(20, "qa", Done, Some(2_500), Some(3_000), 0);
        let d = check(
            vec![qa()],
            ["succeeded", "succeeded", "succeeded", "awaiting_approval"],
            false,
            [Some(1_000), Some(2_000), None],
        );
        assert!(StageState::AwaitingApproval.in_flight() && !d.journeys[0].not_picked_up);
        // A created production build (no inputs yet) takes the newest version: the gate opened.
        let Fact::Build(mut created) = build(21, "prod", Queued, None, None, 0) else { unreachable!() };
        created.inputs.clear();
        created.resources_known = false;
        check(
            vec![qa(), Fact::Build(created)],
            ["succeeded", "succeeded", "succeeded", "pending"],
            false,
            [Some(1_000), Some(2_000), None],
        );
        // Production deployed it: the journey ends there.
        let d = check(
            vec![qa(), build(21, "prod", Done, Some(9_000), Some(9_500), 0)],
            ["succeeded", "succeeded", "succeeded", "succeeded"],
            true,
            [Some(1_000), Some(2_000), Some(8_500)],
        );
        assert_eq!(d.journeys[0].outcome, Outcome::Deployed);
    }

    /// A running build "carries" the newest commit it delivers whole: an RC with the dagster
    /// image of a newer commit but the previous `repo` carries the previous commit. Passive
    /// commits in between do not count; when nothing else is delivered, the newest one does.
    #[test]
    fn a_running_build_carries_the_newest_commit_it_delivers_whole() {
        let config = CONFIG.replace(
            "resources: { repo: { ignore_paths: ['ci/*'] } }",
            "resources: { repo: { ignore_paths: ['ci/*'] }, dagster-src: { paths: ['dagster/*'] } }",
        );
        let core = crate::config::parse(&config, "t.yaml", &|_| None).unwrap().core();
        let mut facts = Facts::default();
        for c in commits() {
            facts.apply(c);
        }
        // c4 changes dagster/: both repo and dagster-src emit it.
        facts.apply(Fact::Commit(CommitFact {
            sha: sha(4),
            parent: Some(sha(3)),
            author: "dev".into(),
            author_date: 5_000,
            committer_date: 5_000,
            message: "feat(dagster): d".into(),
            files: vec!["dagster/d.py".into()],
            first_seen: 5_000,
        }));
        let with_dagster = |id: i64, repo: usize, dagster: Option<usize>| {
            let Fact::Build(mut b) = build(id, "tf", Started, Some(NOW - 60), None, repo) else { unreachable!() };
            if let Some(d) = dagster {
                b.inputs.push(VersionFact {
                    step: "dagster-src".into(),
                    resource: "dagster-src".into(),
                    version: Version::from([("ref", sha(d).as_str())]),
                    message: None,
                });
            }
            Fact::Build(b)
        };
        let check = |b: Fact, want: usize| {
            let mut f = facts.clone();
            f.apply(b);
            let d = derive(&f, &core, NOW);
            assert_eq!(d.stages[1].running[0].head, Some(sha(want)), "{:?}", d.stages[1].running[0]);
        };
        check(with_dagster(10, 1, Some(4)), 1);
        check(with_dagster(10, 4, Some(4)), 4);
        check(with_dagster(10, 0, None), 0);
        // repo at the untracked c3: c1 is the newest commit it delivers whole.
        check(with_dagster(10, 3, None), 1);
    }
}
