//! The typed view of a journey, as the JSON API serves it and as `watch`/`report` consume it.
//!
//! States, outcomes, build statuses, change types, attribution methods and what a commit waits
//! for are the core's enums, not strings: a typo in a state name does not compile. The same
//! types are serialised by `GET /api/v1/journeys` (`http.rs`) and decoded by `watch --from`,
//! so both sides agree by construction. Each enum is written as its `as_str()` name; a name this
//! version does not know is a decoding error that says which value and which field.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::core::classify::ChangeType;
pub use crate::core::deployments::{DeployKind, FailReason};
use crate::core::deployments::{Deployment, EnvironmentNow};
use crate::core::facts::BuildStatus;
use crate::core::journey::{Attempt, Journey, Outcome, RunningBuild, StageJourney, StageState, WaitsFor};
use crate::core::lineage::Method;
use crate::core::premerge::{Origin, PullFact};

/// Serde for a core enum through its `as_str()` name; `$all` lists every variant.
macro_rules! named_enum {
    ($t:ty, $what:literal, $all:expr) => {
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                let all: &[$t] = &$all;
                all.iter().copied().find(|v| v.as_str() == s).ok_or_else(|| {
                    let known = all.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", ");
                    serde::de::Error::custom(format!(concat!("unknown ", $what, " {:?} (known: {})"), s, known))
                })
            }
        }
    };
}

pub(crate) const STAGE_STATES: [StageState; 9] = [
    StageState::Waiting,
    StageState::Pending,
    StageState::Riding,
    StageState::Running,
    StageState::Succeeded,
    StageState::Failed,
    StageState::NotApplicable,
    StageState::Incomplete,
    StageState::AwaitingApproval,
];
pub(crate) const BUILD_STATUSES: [BuildStatus; 6] = [
    BuildStatus::Pending,
    BuildStatus::Started,
    BuildStatus::Succeeded,
    BuildStatus::Failed,
    BuildStatus::Errored,
    BuildStatus::Aborted,
];

named_enum!(StageState, "stage state", STAGE_STATES);
named_enum!(BuildStatus, "build status", BUILD_STATUSES);
named_enum!(Outcome, "outcome", Outcome::ALL);
named_enum!(ChangeType, "change type", ChangeType::ALL);
named_enum!(Method, "attribution", Method::ALL);

/// A commit's journey.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct JourneyView {
    pub sha: String,
    pub short_sha: String,
    pub subject: String,
    pub author: String,
    pub commit_url: String,
    pub commit_time: i64,
    pub change_type: ChangeType,
    pub resources: Vec<String>,
    pub outcome: Outcome,
    pub ended: bool,
    pub failed_stage: Option<String>,
    pub carried_on: bool,
    pub carried_by: Option<String>,
    pub not_picked_up: bool,
    pub vanished: bool,
    /// Environment → deployment end time.
    pub deployed_at: BTreeMap<String, i64>,
    /// Environment → seconds from commit time to the end of that deployment.
    pub lead_time_seconds: BTreeMap<String, i64>,
    pub trace_id: String,
    pub stages: Vec<StageView>,
    /// For a journey in flight: environment → predicted arrival (Unix time), for the
    /// environments it has not reached and a prediction can be made for (`core::eta`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub eta: BTreeMap<String, i64>,
    /// Where lead time starts (`lead_time_from`; before the merge for `pr_opened` and
    /// `first_commit`). Older exporters did not send it.
    #[serde(default)]
    pub lead_time_start: Option<i64>,
    /// How the commit reached the branch: `pull_request` or `direct`; absent until read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<OriginKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<PullRequestView>,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OriginKind {
    PullRequest,
    Direct,
}

/// The pull request that landed a commit and its moments (Unix times).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct PullRequestView {
    pub number: u64,
    pub title: String,
    pub url: String,
    pub labels: Vec<String>,
    pub head_sha: String,
    pub first_commit_at: Option<i64>,
    pub opened_at: i64,
    pub ready_at: Option<i64>,
    pub first_review_at: Option<i64>,
    pub approved_at: Option<i64>,
    pub merged_at: i64,
    /// coding, pickup, review, checks, merge: the ones that happened.
    pub stages: Vec<PreMergeStageView>,
    /// GitHub Actions runs of the final head (their latest attempt).
    pub checks: Vec<CheckRunView>,
    pub reruns: u32,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct PreMergeStageView {
    pub name: String,
    pub start: i64,
    pub end: i64,
    pub duration_seconds: i64,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct CheckRunView {
    pub id: i64,
    pub name: String,
    pub url: String,
    pub attempt: u32,
    pub started_at: i64,
    pub completed_at: Option<i64>,
    /// `success`, `failure`, or `running`.
    pub result: String,
    /// The jobs of this attempt (absent from older exporters' JSON, and before they were read).
    #[serde(default)]
    pub jobs: Vec<CheckJobView>,
}

/// One job of a GitHub Actions run's latest attempt.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct CheckJobView {
    pub id: i64,
    pub name: String,
    pub url: String,
    pub attempt: u32,
    /// `queued`, `in_progress` or `completed`.
    pub status: String,
    /// GitHub's conclusion once completed: `success`, `failure`, `cancelled`, `skipped`,
    /// `timed_out`, `neutral`, `action_required` (or a newer one, as GitHub wrote it).
    pub conclusion: Option<String>,
    pub started_at: Option<i64>,
    pub completed_at: Option<i64>,
}

impl PullRequestView {
    pub fn new(p: &PullFact) -> PullRequestView {
        PullRequestView {
            number: p.number,
            title: p.title.clone(),
            url: p.url.clone(),
            labels: p.labels.clone(),
            head_sha: p.head_sha.clone(),
            first_commit_at: p.first_commit_at,
            opened_at: p.opened_at,
            ready_at: p.ready_at,
            first_review_at: p.first_review(),
            approved_at: p.approval(),
            merged_at: p.merged_at,
            stages: p
                .stage_times()
                .into_iter()
                .map(|(name, start, end)| PreMergeStageView {
                    name: name.to_string(),
                    start,
                    end,
                    duration_seconds: end - start,
                })
                .collect(),
            checks: p
                .checks
                .iter()
                .map(|c| CheckRunView {
                    id: c.run_id,
                    name: c.name.clone(),
                    url: c.url.clone(),
                    attempt: c.attempt,
                    started_at: c.started_at,
                    completed_at: c.completed_at,
                    result: match (c.completed_at, c.success) {
                        (None, _) => "running",
                        (Some(_), true) => "success",
                        (Some(_), false) => "failure",
                    }
                    .to_string(),
                    jobs: c
                        .jobs
                        .iter()
                        .map(|j| CheckJobView {
                            id: j.job_id,
                            name: j.name.clone(),
                            url: j.url.clone(),
                            attempt: j.attempt,
                            status: j.state.status().to_string(),
                            conclusion: j.state.conclusion().map(|c| c.as_str().to_string()),
                            started_at: j.started_at,
                            completed_at: j.completed_at,
                        })
                        .collect(),
                })
                .collect(),
            reruns: p.reruns(),
        }
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct StageView {
    pub name: String,
    pub state: StageState,
    pub ready_at: Option<i64>,
    pub start: Option<i64>,
    pub end: Option<i64>,
    pub wait_seconds: Option<i64>,
    pub duration_seconds: Option<i64>,
    /// How the stage's builds were tied to the commit (the weakest among its attempts).
    pub attribution: Option<Method>,
    pub expected_jobs: Vec<String>,
    pub attempts: Vec<AttemptView>,
    /// For a commit in flight that is not running here: what it waits for. Absent from the
    /// JSON of older exporters, hence the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waits_for: Option<WaitsForView>,
}

/// The kind of thing a commit waits for at a stage (see [`WaitsFor`]).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum WaitsKind {
    NoBuild,
    Busy,
    Queued,
    Upstream,
    TriggeringCommit,
}

/// What a commit waits for at a stage.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct WaitsForView {
    pub kind: WaitsKind,
    /// One phrase for a person, e.g. "the stage is busy with build lana-bank-testflight #41
    /// (started, carrying 3f2a1bc)".
    pub text: String,
    /// For `busy` and `queued`: the build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<RunningBuildView>,
    /// For `upstream`: the stage and its state for this commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_state: Option<StageState>,
}

/// A running build of a stage's job, whatever commit it carries.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct RunningBuildView {
    pub build_id: i64,
    pub pipeline: String,
    pub job: String,
    pub name: String,
    /// `pending` (not started) or `started`.
    pub status: BuildStatus,
    pub start: Option<i64>,
    pub url: String,
    pub rerun_of: Option<i64>,
    /// The newest commit it carries, when known.
    pub head: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct AttemptView {
    pub build_id: i64,
    pub pipeline: String,
    pub job: String,
    pub name: String,
    pub status: BuildStatus,
    pub start: Option<i64>,
    pub end: Option<i64>,
    pub url: String,
    pub rerun_of: Option<i64>,
    pub attribution: Method,
    /// The build was for this commit itself, not a later one that carried it along.
    pub own: bool,
    pub head: Option<String>,
    /// A failed or errored build: the end of its log, once read (absent until then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_excerpt: Option<String>,
}

/// Where commit links point and which environments have lead times.
pub struct Links<'a> {
    /// GitHub `owner/name`.
    pub repository: &'a str,
    /// The repository's web address; empty = on github.com.
    pub repository_url: &'a str,
    /// Environment names, in stage order.
    pub environments: &'a [String],
}

impl JourneyView {
    pub fn new(j: &Journey, links: &Links) -> JourneyView {
        JourneyView {
            sha: j.sha.clone(),
            short_sha: j.short().to_string(),
            subject: j.subject.clone(),
            author: j.author.clone(),
            commit_url: match links.repository_url {
                "" => format!("https://github.com/{}/commit/{}", links.repository, j.sha),
                base => format!("{base}/commit/{}", j.sha),
            },
            commit_time: j.commit_time,
            change_type: j.classification.change_type,
            resources: j.classification.resources.clone(),
            outcome: j.outcome,
            ended: j.ended,
            failed_stage: j.failed_stage.clone(),
            carried_on: j.carried_on,
            carried_by: j.carried_by.clone(),
            not_picked_up: j.not_picked_up,
            vanished: j.vanished,
            deployed_at: j.deployed_at.clone(),
            lead_time_seconds: links
                .environments
                .iter()
                .filter_map(|e| j.lead_time(e).map(|l| (e.clone(), l)))
                .collect(),
            trace_id: trace_id(&j.sha),
            stages: j.stages.iter().map(StageView::new).collect(),
            eta: BTreeMap::new(),
            lead_time_start: Some(j.lead_start),
            origin: j.origin.as_ref().map(|o| match o {
                Origin::Direct => OriginKind::Direct,
                Origin::Pull(_) => OriginKind::PullRequest,
            }),
            pull_request: j.origin.as_ref().and_then(|o| o.pull()).map(PullRequestView::new),
        }
    }
}

impl StageView {
    pub fn new(s: &StageJourney) -> StageView {
        StageView {
            name: s.name.clone(),
            state: s.state,
            ready_at: s.ready_at,
            start: s.start,
            end: s.end,
            wait_seconds: s.wait(),
            duration_seconds: s.duration(),
            attribution: s.method(),
            expected_jobs: s.expected_jobs.clone(),
            attempts: s.attempts.iter().map(AttemptView::new).collect(),
            waits_for: s.waits_for.as_ref().map(WaitsForView::new),
        }
    }
}

impl AttemptView {
    pub fn new(a: &Attempt) -> AttemptView {
        AttemptView {
            build_id: a.build_id,
            pipeline: a.pipeline.to_string(),
            job: a.job.to_string(),
            name: a.name.to_string(),
            status: a.status,
            start: a.start,
            end: a.end,
            url: a.url.to_string(),
            rerun_of: a.rerun_of,
            attribution: a.method,
            own: a.own,
            head: a.head.clone(),
            log_excerpt: None,
        }
    }
}

impl RunningBuildView {
    pub fn new(r: &RunningBuild) -> RunningBuildView {
        RunningBuildView {
            build_id: r.build_id,
            pipeline: r.pipeline.to_string(),
            job: r.job.to_string(),
            name: r.name.to_string(),
            status: r.status,
            start: r.start,
            url: r.url.to_string(),
            rerun_of: r.rerun_of,
            head: r.head.clone(),
        }
    }
}

impl WaitsForView {
    pub fn new(w: &WaitsFor) -> WaitsForView {
        let (kind, build, upstream, upstream_state) = match w {
            WaitsFor::NoBuild => (WaitsKind::NoBuild, None, None, None),
            WaitsFor::Busy(b) => (WaitsKind::Busy, Some(RunningBuildView::new(b)), None, None),
            WaitsFor::Queued(b) => (WaitsKind::Queued, Some(RunningBuildView::new(b)), None, None),
            WaitsFor::Upstream { stage, state } => (WaitsKind::Upstream, None, Some(stage.clone()), Some(*state)),
            WaitsFor::TriggeringCommit => (WaitsKind::TriggeringCommit, None, None, None),
        };
        WaitsForView { kind, text: w.describe(), build, upstream, upstream_state }
    }
}

named_enum!(DeployKind, "deployment kind", DeployKind::ALL);
named_enum!(FailReason, "failure reason", FailReason::ALL);

/// A deploy build's result.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DeployResult {
    Success,
    Failure,
}

/// A build, as the deployment API names it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct BuildRef {
    pub pipeline: String,
    pub job: String,
    pub id: i64,
    pub name: String,
    pub url: String,
}

impl BuildRef {
    pub fn of(d: &Deployment) -> BuildRef {
        BuildRef {
            pipeline: d.pipeline.to_string(),
            job: d.job.to_string(),
            id: d.build_id,
            name: d.name.to_string(),
            url: d.url.to_string(),
        }
    }
}

/// `GET /api/v1/deployments`: one deploy build of an environment.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct DeploymentView {
    pub environment: String,
    pub build: BuildRef,
    pub start: Option<i64>,
    pub end: i64,
    pub result: DeployResult,
    pub kind: DeployKind,
    /// Commits it delivered that the version running before it lacked (a failed build: what
    /// it would have delivered), oldest first.
    pub commits: Vec<String>,
    /// The newest commit of its version.
    pub newest_commit: Option<String>,
    pub failed: Option<FailureView>,
    /// Its new commits are all hotfixes or reverts.
    pub rework: bool,
    pub recovered_by: Option<RecoveryView>,
    /// Commit → lead time (seconds), for the commits this deployment delivered first.
    pub lead_times: BTreeMap<String, i64>,
    /// At an approval gate: seconds from the upstream deployment to this build's start.
    pub gate_wait_seconds: Option<i64>,
}

/// Why a deployment counts as failed, and what showed it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct FailureView {
    pub reason: FailReason,
    /// When the failure became known (the end of the build that showed it).
    pub known_at: i64,
    pub by: FailedByView,
}

/// The deployment that showed the failure (the failed build itself, the rollback, the revert
/// or hotfix deployment) and the commits it is credited to (what the failed build carried, what
/// the rollback took out, the revert or hotfix commits).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct FailedByView {
    pub build: BuildRef,
    pub commits: Vec<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct RecoveryView {
    pub build: BuildRef,
    /// End of the deployment that restored service.
    pub at: i64,
    /// From the failed deployment's end to `at`.
    pub seconds: i64,
}

impl DeploymentView {
    /// `all` holds the deployments the failure and recovery refer to.
    pub fn new(d: &Deployment, all: &[Deployment]) -> DeploymentView {
        let build = |id: i64| {
            all.iter().find(|x| x.build_id == id).map(BuildRef::of).unwrap_or_else(|| BuildRef {
                pipeline: d.pipeline.to_string(),
                job: d.job.to_string(),
                id,
                name: String::new(),
                url: String::new(),
            })
        };
        DeploymentView {
            environment: d.environment.clone(),
            build: BuildRef::of(d),
            start: d.start,
            end: d.end,
            result: if d.succeeded { DeployResult::Success } else { DeployResult::Failure },
            kind: d.kind,
            commits: d.commits.clone(),
            newest_commit: d.newest_commit.clone(),
            failed: d.failed.as_ref().map(|f| FailureView {
                reason: f.reason,
                known_at: f.known_at,
                by: FailedByView { build: build(f.by_build), commits: f.by_commits.clone() },
            }),
            rework: d.rework,
            recovered_by: d.recovered_by.map(|(id, at)| RecoveryView { build: build(id), at, seconds: at - d.end }),
            lead_times: d.lead_times.clone(),
            gate_wait_seconds: d.gate_wait,
        }
    }
}

/// `GET /api/v1/environments`: an environment now.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct EnvironmentView {
    pub name: String,
    /// The environment DORA figures are about (`dora.environment`).
    pub dora: bool,
    /// The version running now: the deployment that put it there.
    pub running: Option<RunningVersionView>,
    /// Commits on the branch the running version lacks.
    pub behind: u64,
    /// Age of the oldest of them, at `now`.
    pub oldest_undeployed_age_seconds: Option<i64>,
    /// A newer version waits at the environment's approval gate.
    pub awaiting_approval: bool,
    /// How many commits wait there.
    pub awaiting_approval_commits: u64,
    /// Since the upstream deployment the oldest waiting version is ready from.
    pub awaiting_approval_since: Option<i64>,
    pub awaiting_approval_age_seconds: Option<i64>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct RunningVersionView {
    pub build: BuildRef,
    pub newest_commit: String,
    pub commit_time: Option<i64>,
    /// End of the deployment that put it there.
    pub since: i64,
}

impl EnvironmentView {
    pub fn new(e: &EnvironmentNow, deployments: &[Deployment], dora_environment: &str, now: i64) -> EnvironmentView {
        let running = match (e.running_build, &e.running_commit, e.since) {
            (Some(id), Some(c), Some(since)) => {
                deployments.iter().find(|d| d.build_id == id).map(|d| RunningVersionView {
                    build: BuildRef::of(d),
                    newest_commit: c.clone(),
                    commit_time: e.running_commit_time,
                    since,
                })
            }
            _ => None,
        };
        EnvironmentView {
            name: e.name.clone(),
            dora: e.name == dora_environment,
            running,
            behind: e.behind,
            oldest_undeployed_age_seconds: e.oldest_behind.map(|t| (now - t).max(0)),
            awaiting_approval: e.awaiting_approval > 0,
            awaiting_approval_commits: e.awaiting_approval,
            awaiting_approval_since: e.awaiting_since,
            awaiting_approval_age_seconds: e.awaiting_since.map(|t| (now - t).max(0)),
        }
    }
}

/// The journey's trace id: the first 32 hex digits of the commit sha.
pub fn trace_id(sha: &str) -> String {
    sha.chars().take(32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every name the core gives round-trips through the view's serde, and an unknown name is
    /// refused naming the value and the known ones.
    #[test]
    fn names_round_trip_and_unknown_ones_are_named() {
        fn check<T: Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug>(v: T, name: &str) {
            assert_eq!(serde_json::to_value(&v).unwrap(), serde_json::json!(name));
            assert_eq!(serde_json::from_value::<T>(serde_json::json!(name)).unwrap(), v);
        }
        for s in STAGE_STATES {
            check(s, s.as_str());
        }
        for s in BUILD_STATUSES {
            check(s, s.as_str());
            assert_eq!(BuildStatus::parse(s.as_str()), Some(s));
        }
        Outcome::ALL.into_iter().for_each(|o| check(o, o.as_str()));
        ChangeType::ALL.into_iter().for_each(|c| check(c, c.as_str()));
        Method::ALL.into_iter().for_each(|m| check(m, m.as_str()));
        let kinds = [
            (WaitsFor::NoBuild, WaitsKind::NoBuild),
            (WaitsFor::TriggeringCommit, WaitsKind::TriggeringCommit),
            (WaitsFor::Upstream { stage: "tests".into(), state: StageState::Running }, WaitsKind::Upstream),
        ];
        for (w, k) in kinds {
            assert_eq!(WaitsForView::new(&w).kind, k);
            check(k, w.kind());
        }
        let e = serde_json::from_value::<StageState>(serde_json::json!("runnin")).unwrap_err().to_string();
        assert!(e.contains("unknown stage state \"runnin\"") && e.contains("not_applicable"), "{e}");
    }
}
