//! The metric catalogue as data: one row per metric family, with its kind, name, unit, HELP,
//! label dimensions and buckets. Rendering, the retention baseline and `backfill` all read this
//! table, so adding a metric is one row here plus its computation.

use crate::core::classify::ChangeType;
use crate::core::deployments::FailReason;
use crate::core::journey::{BuildStatus, CoreConfig, Method, Outcome, StageState};
use crate::core::premerge::PreMergeStages;
use crate::sources::ErrorKind;

use super::Labels;

/// The prefix of every family name.
pub const PREFIX: &str = "deploy_journey";

/// CI-scale buckets: 30 s … 4 h.
pub const STAGE_BUCKETS: [f64; 14] =
    [30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1200.0, 1500.0, 1800.0, 2700.0, 3600.0, 5400.0, 7200.0, 14400.0];
/// Recovery and gate waits: 1 min … 7 days (a gate held over a weekend).
pub const LONG_BUCKETS: [f64; 16] = [
    60.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 10800.0, 21600.0, 43200.0, 86400.0, 129600.0, 172800.0, 259200.0,
    345600.0, 432000.0, 604800.0,
];
/// Pre-merge stages: 5 min … 7 days (a PR can wait for review over a weekend and more).
pub const PREMERGE_BUCKETS: [f64; 11] =
    [300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 86400.0, 172800.0, 345600.0, 604800.0];
/// Lead time: 5 min … 3 days.
pub const LEAD_BUCKETS: [f64; 14] =
    [300.0, 600.0, 900.0, 1200.0, 1800.0, 2700.0, 3600.0, 5400.0, 7200.0, 10800.0, 21600.0, 43200.0, 86400.0, 259200.0];

/// Every metric family, in the order of [`CATALOGUE`] (which is the exposition order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Metric {
    StageDuration,
    StageWait,
    PreMergeStageDuration,
    LeadTime,
    Commits,
    CommitOrigins,
    PreMergeCheckReruns,
    CommitOutcomes,
    StageAttempts,
    StageFailures,
    Deployments,
    DeploymentAttempts,
    Redeployments,
    Rollbacks,
    FailedDeployments,
    ReworkDeployments,
    FailedDeploymentRecovery,
    GateWait,
    LastDeploymentTimestamp,
    StageInFlight,
    StageOldestInFlight,
    StageRunningBuilds,
    StageOldestRunningBuild,
    StageStuck,
    StageStuckThreshold,
    CommitsNotPickedUp,
    CommitsBehind,
    OldestUndeployedCommitAge,
    EnvironmentRunningCommitTimestamp,
    EnvironmentAwaitingApproval,
    EnvironmentAwaitingApprovalAge,
    ChangeFailRateSlo,
    Attributions,
    LineageGaps,
    SourceUp,
    SourceLastSuccessTimestamp,
    SourceRequests,
    SourceErrors,
    SourcePollDuration,
    GithubRateLimitRemaining,
    SpansExported,
    SpanExportErrors,
    SpanExportQueue,
    StoreErrors,
    BasicAuthRejected,
    BuildInfo,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    /// An integer gauge.
    Gauge,
    /// A floating-point gauge (timestamps, durations measured in fractions).
    FloatGauge,
    Histogram,
}

/// A label dimension: its name and, when it is closed, the values it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dim {
    Stage,
    /// A finished build's result.
    Result,
    Environment,
    ChangeType,
    /// A journey's end (never `in_flight`).
    Outcome,
    Method,
    /// A commit's in-flight state at its current stage.
    State,
    /// Concourse's running statuses.
    Status,
    Source,
    /// An HTTP request's outcome.
    RequestOutcome,
    ErrorKind,
    /// Why basic auth refused a request.
    AuthReason,
    Version,
    /// A deploy build's result: success or failure.
    DeployResult,
    /// Why a deployment failed.
    FailReason,
    /// A phase before the merge: coding, pickup, review, checks, merge (its own label, not
    /// `stage`, which names the configured stages).
    PreMergeStage,
    /// How a commit reached the branch: pull_request or direct.
    Origin,
}

const RESULTS: [&str; 4] = ["succeeded", "failed", "errored", "aborted"];
const IN_FLIGHT_STATES: [StageState; 5] =
    [StageState::Waiting, StageState::Pending, StageState::Riding, StageState::Running, StageState::AwaitingApproval];
const RUNNING_STATUSES: [BuildStatus; 2] = [BuildStatus::Pending, BuildStatus::Started];

impl Dim {
    pub fn key(self) -> &'static str {
        match self {
            Dim::Stage => "stage",
            Dim::Result => "result",
            Dim::Environment => "environment",
            Dim::ChangeType => "change_type",
            Dim::Outcome | Dim::RequestOutcome => "outcome",
            Dim::Method => "method",
            Dim::State => "state",
            Dim::Status => "status",
            Dim::Source => "source",
            Dim::ErrorKind => "kind",
            Dim::AuthReason => "reason",
            Dim::Version => "version",
            Dim::DeployResult => "result",
            Dim::FailReason => "reason",
            Dim::PreMergeStage => "phase",
            Dim::Origin => "origin",
        }
    }

    /// Every value of a closed dimension for this configuration; `None` for one whose values
    /// only the snapshot knows (sources, versions).
    pub fn domain(self, core: &CoreConfig) -> Option<Vec<String>> {
        let own = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        Some(match self {
            Dim::Stage => core.stages.iter().map(|s| s.name.clone()).collect(),
            Dim::Environment => core.environments(),
            Dim::Result => own(&RESULTS),
            Dim::ChangeType => ChangeType::ALL.iter().map(|c| c.as_str().to_string()).collect(),
            Dim::Outcome => {
                Outcome::ALL.iter().filter(|o| **o != Outcome::InFlight).map(|o| o.as_str().to_string()).collect()
            }
            Dim::Method => Method::ALL.iter().map(|m| m.as_str().to_string()).collect(),
            Dim::State => IN_FLIGHT_STATES.iter().map(|s| s.as_str().to_string()).collect(),
            Dim::Status => RUNNING_STATUSES.iter().map(|s| s.as_str().to_string()).collect(),
            Dim::RequestOutcome => own(&["ok", "not_modified", "error"]),
            Dim::ErrorKind => ErrorKind::ALL.iter().map(|k| k.as_str().to_string()).collect(),
            Dim::AuthReason => own(&["unauthorized", "rate_limited"]),
            Dim::DeployResult => own(&["success", "failure"]),
            Dim::FailReason => FailReason::ALL.iter().map(|r| r.as_str().to_string()).collect(),
            Dim::PreMergeStage => PreMergeStages::default().named().iter().map(|(n, _)| n.to_string()).collect(),
            Dim::Origin => own(&["pull_request", "direct"]),
            Dim::Source | Dim::Version => return None,
        })
    }
}

/// How `backfill` reconstructs a family's history, if it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backfill {
    /// Not reconstructed: a gauge about "now" or about the process.
    No,
    /// Stepped from the journey [`Event`](super::Event)s of this metric.
    Events,
    /// The end time of the newest event of another metric (a "last … timestamp" gauge).
    LatestOf(Metric),
    /// A level stepped from events of this metric: each sample is the newest event's value
    /// (an environment's commits behind, its running commit's time).
    Level,
    /// An age stepped from events of this metric: each event's value is a time (negative:
    /// none), each sample the time since it (0 when none).
    Age,
}

/// One row of the catalogue.
#[derive(Debug)]
pub struct Def {
    pub metric: Metric,
    /// Short name, without prefix, unit and `_total`: `lead_time`.
    pub name: &'static str,
    pub kind: Kind,
    /// In seconds (the name gets `_seconds`, the exposition a `# UNIT`).
    pub seconds: bool,
    pub help: &'static str,
    /// Computed from polled facts: the HELP says how often they refresh.
    pub polled: bool,
    /// Label names in exposition order.
    pub dims: &'static [Dim],
    /// Histogram bucket bounds (empty for other kinds).
    pub buckets: &'static [f64],
    /// Every label set of the closed dimensions exists from the first scrape (at 0).
    pub preset: bool,
    /// Only exposed while span export is on.
    pub traces_only: bool,
    /// Only exposed when basic auth is configured.
    pub basic_auth_only: bool,
    pub backfill: Backfill,
}

const fn row(metric: Metric, name: &'static str, kind: Kind, dims: &'static [Dim], help: &'static str) -> Def {
    Def {
        metric,
        name,
        kind,
        seconds: false,
        help,
        polled: false,
        dims,
        buckets: &[],
        preset: false,
        traces_only: false,
        basic_auth_only: false,
        backfill: Backfill::No,
    }
}

impl Def {
    const fn seconds(mut self) -> Def {
        self.seconds = true;
        self
    }
    const fn polled(mut self) -> Def {
        self.polled = true;
        self
    }
    const fn preset(mut self) -> Def {
        self.preset = true;
        self
    }
    const fn buckets(mut self, b: &'static [f64]) -> Def {
        self.buckets = b;
        self
    }
    const fn traces_only(mut self) -> Def {
        self.traces_only = true;
        self
    }
    const fn basic_auth_only(mut self) -> Def {
        self.basic_auth_only = true;
        self
    }
    const fn backfill(mut self, b: Backfill) -> Def {
        self.backfill = b;
        self
    }
}

use Dim as D;
use Kind::{Counter, FloatGauge, Gauge, Histogram};
use Metric as M;

/// The catalogue, in exposition order (the order of [`Metric`]).
pub const CATALOGUE: &[Def] = &[
    row(M::StageDuration, "stage_duration", Histogram, &[D::Stage, D::Result], "Duration of each finished build of a stage's jobs, start to end")
        .seconds().polled().preset().buckets(&STAGE_BUCKETS).backfill(Backfill::Events),
    row(M::StageWait, "stage_wait", Histogram, &[D::Stage], "Time from a commit being ready for a stage (upstream done; commit time for the first) to the start of the build that carried it")
        .seconds().polled().preset().buckets(&STAGE_BUCKETS).backfill(Backfill::Events),
    row(M::PreMergeStageDuration, "premerge_duration", Histogram, &[D::PreMergeStage, D::ChangeType], "Time a commit's pull request spent in each phase before the merge, observed at the merge: coding (first commit to opened), pickup (ready for review to first review), review (first review to approval), checks (GitHub Actions on the final head, first run created to last attempt end, re-runs included), merge (approval and green checks to merged); a phase that did not happen is not observed")
        .seconds().polled().preset().buckets(&PREMERGE_BUCKETS).backfill(Backfill::Events),
    row(M::LeadTime, "lead_time", Histogram, &[D::Environment, D::ChangeType], "Commit time to the end of the deployment that delivered it, one observation per commit (batches credited)")
        .seconds().polled().preset().buckets(&LEAD_BUCKETS).backfill(Backfill::Events),
    row(M::Commits, "commits", Counter, &[D::ChangeType], "Commits seen on the tracked branch")
        .polled().preset().backfill(Backfill::Events),
    row(M::CommitOrigins, "commit_origins", Counter, &[D::Origin], "Commits whose origin was read from GitHub, by how they reached the branch: through a pull request or pushed directly")
        .polled().preset().backfill(Backfill::Events),
    row(M::PreMergeCheckReruns, "premerge_check_reruns", Counter, &[], "Re-run attempts of GitHub Actions workflow runs on the final head commit of merged pull requests")
        .polled().preset().backfill(Backfill::Events),
    row(M::CommitOutcomes, "commit_outcomes", Counter, &[D::Outcome], "Commit journeys ended, by outcome")
        .polled().preset().backfill(Backfill::Events),
    row(M::StageAttempts, "stage_attempts", Counter, &[D::Stage], "Finished builds of each stage's jobs")
        .polled().preset().backfill(Backfill::Events),
    row(M::StageFailures, "stage_failures", Counter, &[D::Stage], "Failed or errored builds of each stage's jobs")
        .polled().preset().backfill(Backfill::Events),
    row(M::Deployments, "deployments", Counter, &[D::Environment], "Successful deployments to each environment that changed what runs there (forward deployments and rollbacks; a redeploy of the running version is not counted)")
        .polled().preset().backfill(Backfill::Events),
    row(M::DeploymentAttempts, "deployment_attempts", Counter, &[D::Environment, D::DeployResult], "Finished deploy builds of each environment, by result")
        .polled().preset().backfill(Backfill::Events),
    row(M::Redeployments, "redeployments", Counter, &[D::Environment], "Successful deployments of the version already running (not a change)")
        .polled().preset().backfill(Backfill::Events),
    row(M::Rollbacks, "rollbacks", Counter, &[D::Environment], "Successful deployments of a version older than the one running")
        .polled().preset().backfill(Backfill::Events),
    row(M::FailedDeployments, "failed_deployments", Counter, &[D::Environment, D::FailReason], "Failed deployments, counted once when the first reason becomes known: its build failed, it was rolled back, or a revert or hotfix of it shipped within the failure window (exemplar: the deployment's build id and newest commit)")
        .polled().preset().backfill(Backfill::Events),
    row(M::ReworkDeployments, "rework_deployments", Counter, &[D::Environment], "Successful deployments whose new commits are all hotfixes or reverts")
        .polled().preset().backfill(Backfill::Events),
    row(M::FailedDeploymentRecovery, "failed_deployment_recovery", Histogram, &[D::Environment], "Failed deployment recovery time: from the end of a failed deployment to the end of the deployment that restored service (the first later successful forward or rollback deployment, from the one that showed the failure on, that does not itself fail)")
        .seconds().polled().preset().buckets(&LONG_BUCKETS).backfill(Backfill::Events),
    row(M::GateWait, "gate_wait", Histogram, &[D::Environment], "Time a version waited at an approval gate: from the upstream environment's deployment of its newest commit to the start of the gated deployment, one observation per forward deployment")
        .seconds().polled().preset().buckets(&LONG_BUCKETS).backfill(Backfill::Events),
    row(M::LastDeploymentTimestamp, "last_deployment_timestamp", FloatGauge, &[D::Environment], "End of the last successful deployment, Unix time")
        .seconds().polled().preset().backfill(Backfill::LatestOf(M::Deployments)),
    row(M::StageInFlight, "stage_in_flight", Gauge, &[D::Stage, D::State], "Commits in flight at their current stage, by state (riding: a passive commit waiting for a triggering one)")
        .polled().preset(),
    row(M::StageOldestInFlight, "stage_oldest_in_flight", Gauge, &[D::Stage, D::State], "Age of the oldest commit at each stage and state (0 when none)")
        .seconds().polled().preset(),
    row(M::StageRunningBuilds, "stage_running_builds", Gauge, &[D::Stage, D::Status], "Running builds of each stage's jobs by Concourse status, whatever commits they carry")
        .polled().preset(),
    row(M::StageOldestRunningBuild, "stage_oldest_running_build", Gauge, &[D::Stage], "Time since the oldest started build of each stage's jobs started, whatever it carries (0 when none; a pending build has no start)")
        .seconds().polled().preset(),
    row(M::StageStuck, "stage_stuck", Gauge, &[D::Stage], "1 while the oldest started build of a stage has run longer than its stuck_after")
        .polled().preset(),
    // Only the stages that have a stuck_after.
    row(M::StageStuckThreshold, "stage_stuck_threshold", Gauge, &[D::Stage], "The configured stuck_after of each stage")
        .seconds(),
    row(M::CommitsNotPickedUp, "commits_not_picked_up", Gauge, &[], "Commits that should have triggered a pipeline and have no build after not_picked_up_after")
        .polled().preset(),
    row(M::CommitsBehind, "commits_behind", Gauge, &[D::Environment], "Commits on the branch not yet in the environment")
        .polled().preset().backfill(Backfill::Level),
    row(M::OldestUndeployedCommitAge, "oldest_undeployed_commit_age", Gauge, &[D::Environment], "Age of the oldest commit not yet in the environment")
        .seconds().polled().preset().backfill(Backfill::Age),
    row(M::EnvironmentRunningCommitTimestamp, "environment_running_commit_timestamp", FloatGauge, &[D::Environment], "Commit time of the newest commit of the version running in each environment, Unix time (0 when none is known)")
        .seconds().polled().preset().backfill(Backfill::Level),
    row(M::EnvironmentAwaitingApproval, "environment_awaiting_approval", Gauge, &[D::Environment], "1 while a newer version waits at the environment's approval gate")
        .polled().preset(),
    row(M::EnvironmentAwaitingApprovalAge, "environment_awaiting_approval_age", Gauge, &[D::Environment], "Time since the upstream deployment the oldest version waiting at the environment's gate is ready from (0 when none waits)")
        .seconds().polled().preset(),
    // Only the DORA environment.
    row(M::ChangeFailRateSlo, "change_fail_rate_slo", FloatGauge, &[D::Environment], "The configured change fail rate SLO (dora.change_fail_rate_slo) of the DORA environment"),
    row(M::Attributions, "attributions", Counter, &[D::Method], "Stage builds tied to commits, by method (exact, bridge, inferred)")
        .polled().preset().backfill(Backfill::Events),
    row(M::LineageGaps, "lineage_gaps", Counter, &[D::Stage], "Finished stage builds no commit could be tied to")
        .polled().preset().backfill(Backfill::Events),
    row(M::SourceUp, "source_up", Gauge, &[D::Source], "1 if the last poll of the source succeeded"),
    row(M::SourceLastSuccessTimestamp, "source_last_success_timestamp", Gauge, &[D::Source], "Unix time of the last successful poll of the source")
        .seconds(),
    row(M::SourceRequests, "source_requests", Counter, &[D::Source, D::RequestOutcome], "HTTP requests made to the source, by outcome"),
    row(M::SourceErrors, "source_errors", Counter, &[D::Source, D::ErrorKind], "Failed requests to the source, by error kind"),
    row(M::SourcePollDuration, "source_poll_duration", FloatGauge, &[D::Source], "Duration of the last poll cycle of the source")
        .seconds(),
    row(M::GithubRateLimitRemaining, "github_rate_limit_remaining", Gauge, &[], "GitHub API requests left in the current rate-limit window")
        .preset(),
    row(M::SpansExported, "spans_exported", Counter, &[], "Journey spans the OTLP collector acknowledged since start")
        .preset().traces_only(),
    row(M::SpanExportErrors, "span_export_errors", Counter, &[], "Failed OTLP export requests since start (each is retried)")
        .preset().traces_only(),
    row(M::SpanExportQueue, "span_export_queue", Gauge, &[], "Journey spans waiting for the collector's acknowledgement")
        .preset().traces_only(),
    row(M::StoreErrors, "store_errors", Counter, &[], "Writes to the state file that failed since start (each is retried)")
        .preset(),
    row(M::BasicAuthRejected, "basic_auth_rejected", Counter, &[D::AuthReason], "Requests refused by basic auth since start: wrong or no credentials (401), too many failures from the client (429)")
        .preset().basic_auth_only(),
    row(M::BuildInfo, "build_info", Gauge, &[D::Version], "Build information; always 1"),
];

impl Metric {
    /// This metric's row.
    pub fn def(self) -> &'static Def {
        // The table is in enum order (checked by a test).
        &CATALOGUE[self as usize]
    }

    /// The short catalogue name (`lead_time`).
    pub fn name(self) -> &'static str {
        self.def().name
    }

    pub fn from_name(name: &str) -> Option<Metric> {
        CATALOGUE.iter().find(|d| d.name == name).map(|d| d.metric)
    }

    /// A label set from values given in the row's dimension order.
    pub fn labels(self, values: &[&str]) -> Labels {
        let dims = self.def().dims;
        debug_assert_eq!(dims.len(), values.len(), "{:?} takes {} labels", self, dims.len());
        dims.iter().zip(values).map(|(d, v)| (d.key().to_string(), v.to_string())).collect()
    }
}

impl Def {
    /// The exposed family name: `deploy_journey_lead_time_seconds`, `deploy_journey_commits`.
    pub fn family_name(&self) -> String {
        if self.seconds { format!("{PREFIX}_{}_seconds", self.name) } else { format!("{PREFIX}_{}", self.name) }
    }

    /// The HELP text without its final period (the encoder adds it).
    pub fn help_text(&self, poll_interval_secs: u64) -> String {
        if self.polled {
            format!("{}. Refreshed by polling the CI APIs every {poll_interval_secs}s, not at scrape time", self.help)
        } else {
            self.help.to_string()
        }
    }

    /// The OpenMetrics type name.
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            Kind::Counter => "counter",
            Kind::Gauge | Kind::FloatGauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }

    /// `# HELP`, `# TYPE` and `# UNIT` lines as the OpenMetrics exposition writes them.
    pub fn headers(&self, poll_interval_secs: u64) -> Vec<String> {
        let name = self.family_name();
        let mut h = vec![
            format!("# HELP {name} {}.", self.help_text(poll_interval_secs)),
            format!("# TYPE {name} {}", self.type_name()),
        ];
        if self.seconds {
            h.push(format!("# UNIT {name} seconds"));
        }
        h
    }

    /// The label sets present from the first scrape: every combination of the closed
    /// dimensions (one empty set for an unlabelled metric), none if the row is not preset.
    pub fn preset_label_sets(&self, core: &CoreConfig) -> Vec<Labels> {
        if !self.preset {
            return vec![];
        }
        let mut sets: Vec<Labels> = vec![vec![]];
        for d in self.dims {
            let Some(values) = d.domain(core) else { return vec![] };
            sets = sets
                .into_iter()
                .flat_map(|s| {
                    values.iter().map(move |v| {
                        let mut s = s.clone();
                        s.push((d.key().to_string(), v.clone()));
                        s
                    })
                })
                .collect();
        }
        sets
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_in_enum_order_with_unique_names() {
        for (i, d) in CATALOGUE.iter().enumerate() {
            assert_eq!(d.metric as usize, i, "{:?} is out of place", d.metric);
            assert_eq!(Metric::from_name(d.name), Some(d.metric));
            assert_eq!(d.kind == Kind::Histogram, !d.buckets.is_empty(), "{}: buckets iff histogram", d.name);
            let keys: Vec<&str> = d.dims.iter().map(|d| d.key()).collect();
            assert!(!keys.iter().any(|k| ["job", "instance", "le"].contains(k)), "{}: reserved label", d.name);
        }
    }

    #[test]
    fn family_names_and_headers() {
        let check = |m: Metric, expect: &[&str]| assert_eq!(m.def().headers(30), expect);
        check(
            Metric::Commits,
            &[
                "# HELP deploy_journey_commits Commits seen on the tracked branch. Refreshed by polling the CI APIs every 30s, not at scrape time.",
                "# TYPE deploy_journey_commits counter",
            ],
        );
        check(
            Metric::StageStuckThreshold,
            &[
                "# HELP deploy_journey_stage_stuck_threshold_seconds The configured stuck_after of each stage.",
                "# TYPE deploy_journey_stage_stuck_threshold_seconds gauge",
                "# UNIT deploy_journey_stage_stuck_threshold_seconds seconds",
            ],
        );
    }
}
