//! The pre-merge segment of a journey (issue #18): a commit on `main` came from a pull request
//! (or was pushed directly), and the PR's moments split the time before the merge into the
//! stages tools like LinearB and Swarmia report: `coding` (first commit → opened), `pickup`
//! (ready for review → first review), `review` (first review → approval), `checks` (GitHub
//! Actions on the final head, re-runs included) and `merge` (approval and green checks → merged).
//! Pure: times are Unix seconds handed in by the sources.

/// One review as GitHub reports it (`pull-request-review`: `state`, `submitted_at`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ReviewFact {
    pub submitted_at: i64,
    /// `state == "APPROVED"`.
    pub approved: bool,
}

/// How a GitHub Actions job ended (`job.conclusion`: `success`, `failure`, `neutral`,
/// `cancelled`, `skipped`, `timed_out`, `action_required`); a value this version does not know
/// is kept as it was written.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum JobConclusion {
    Success,
    Failure,
    Neutral,
    Cancelled,
    Skipped,
    TimedOut,
    ActionRequired,
    Other(String),
}

impl JobConclusion {
    pub fn parse(s: &str) -> JobConclusion {
        match s {
            "success" => JobConclusion::Success,
            "failure" => JobConclusion::Failure,
            "neutral" => JobConclusion::Neutral,
            "cancelled" => JobConclusion::Cancelled,
            "skipped" => JobConclusion::Skipped,
            "timed_out" => JobConclusion::TimedOut,
            "action_required" => JobConclusion::ActionRequired,
            other => JobConclusion::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            JobConclusion::Success => "success",
            JobConclusion::Failure => "failure",
            JobConclusion::Neutral => "neutral",
            JobConclusion::Cancelled => "cancelled",
            JobConclusion::Skipped => "skipped",
            JobConclusion::TimedOut => "timed_out",
            JobConclusion::ActionRequired => "action_required",
            JobConclusion::Other(s) => s,
        }
    }
}

/// Where a GitHub Actions job is (`job.status`); `waiting`, `requested` and `pending` are
/// [`JobState::Queued`] (not started), and a completed job carries its conclusion.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum JobState {
    Queued,
    InProgress,
    Completed(JobConclusion),
}

impl JobState {
    /// `queued`, `in_progress` or `completed` (the conclusion is apart).
    pub fn status(&self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::InProgress => "in_progress",
            JobState::Completed(_) => "completed",
        }
    }

    pub fn conclusion(&self) -> Option<&JobConclusion> {
        match self {
            JobState::Completed(c) => Some(c),
            _ => None,
        }
    }
}

/// One job of a workflow run's latest attempt (`job`: `id`, `run_attempt`, `name`, `status`,
/// `conclusion`, `started_at`, `completed_at`, `html_url`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ChecksJobFact {
    /// GitHub's job id: one per job and attempt (a re-run's jobs have new ids).
    pub job_id: i64,
    pub name: String,
    /// The job's page (`html_url`).
    pub url: String,
    /// The run attempt the job belongs to (`run_attempt`).
    pub attempt: u32,
    pub state: JobState,
    pub started_at: Option<i64>,
    /// `None` until the job completed.
    pub completed_at: Option<i64>,
}

/// One attempt of a GitHub Actions workflow run on the PR's final head commit
/// (`workflow-run`: `run_attempt`, `run_started_at`, `updated_at` once completed, `conclusion`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ChecksRunFact {
    /// `started_at` is the run's creation (`created_at`, queued time included), which a re-run
    /// keeps; `attempt` its latest `run_attempt`.
    pub run_id: i64,
    /// The workflow's name (`name`), for spans and pages.
    pub name: String,
    /// The run's page (`html_url`).
    pub url: String,
    pub attempt: u32,
    pub started_at: i64,
    /// `None` while the run is queued or in progress.
    pub completed_at: Option<i64>,
    pub success: bool,
    /// The jobs of the latest attempt (`actions/runs/{run_id}/jobs`), in GitHub's order; empty
    /// when not read (a reading from before jobs were read, or `backfill`'s list reading).
    pub jobs: Vec<ChecksJobFact>,
}

/// What the sources learn about the pull request that landed a commit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PullFact {
    pub number: u64,
    pub title: String,
    /// The PR's page (`html_url`).
    pub url: String,
    /// Label names when it was read (`hotfix` and the like, see `dora.hotfix.pr_labels`).
    pub labels: Vec<String>,
    /// The final head commit, whose Actions runs are the `checks`.
    pub head_sha: String,
    /// Author date of the PR's first commit (`pulls/{n}/commits`, oldest first); `None` when unknown.
    pub first_commit_at: Option<i64>,
    pub opened_at: i64,
    /// The `ready_for_review` event; `None` when the PR was never a draft (ready when opened).
    pub ready_at: Option<i64>,
    pub reviews: Vec<ReviewFact>,
    pub checks: Vec<ChecksRunFact>,
    pub merged_at: i64,
    /// Reviews, first commit, ready-for-review and Actions runs were read (`serve`'s reading).
    /// `backfill` reads pull requests from the list of closed ones (100 a request), which has
    /// labels, opening and merge but none of those: such a reading has no phases.
    pub detailed: bool,
}

/// How a commit reached `main`. Ordered so that a more complete reading is greater: a PR beats
/// "direct" (GitHub can lag associating a fresh merge commit), and of two readings of one PR the
/// one with more completed checks, checks, reviews and known moments wins (see [`Origin::merge`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Pushed directly: no pre-merge stages, lead time counts from the commit.
    Direct,
    /// Shared: most commits of a repository may be direct pushes, a `PullFact` is large, and
    /// the facts and every snapshot's journey of the commit hold the same one.
    Pull(std::sync::Arc<PullFact>),
}

impl Origin {
    fn rank(&self) -> (u8, u64, usize, usize, usize, usize, usize, bool, bool) {
        match self {
            Origin::Direct => (0, 0, 0, 0, 0, 0, 0, false, false),
            Origin::Pull(p) => (
                1 + u8::from(p.detailed),
                // A later attempt of a run outranks an earlier one, whatever either lists.
                p.checks.iter().map(|c| u64::from(c.attempt)).sum(),
                p.checks.iter().filter(|c| c.completed_at.is_some()).count(),
                p.checks.len(),
                p.checks.iter().flat_map(|c| &c.jobs).filter(|j| j.completed_at.is_some()).count(),
                p.checks.iter().map(|c| c.jobs.len()).sum(),
                p.reviews.len(),
                p.ready_at.is_some(),
                p.first_commit_at.is_some(),
            ),
        }
    }

    /// The merge of two readings of a commit's origin: commutative, associative and
    /// idempotent (a total order's max), so facts merge in any order.
    pub fn merge(self, other: Origin) -> Origin {
        let key = |o: &Origin| o.rank();
        match key(&self).cmp(&key(&other)) {
            std::cmp::Ordering::Less => other,
            std::cmp::Ordering::Greater => self,
            std::cmp::Ordering::Equal => match (&self, &other) {
                (Origin::Pull(a), Origin::Pull(b)) if b > a => other,
                _ => self,
            },
        }
    }

    pub fn pull(&self) -> Option<&PullFact> {
        match self {
            Origin::Direct => None,
            Origin::Pull(p) => Some(p),
        }
    }

    /// Whether a later read may still learn more: Actions runs of the final head (or their
    /// jobs) still running, or jobs of a later attempt than the run's as read (a re-run began
    /// between the two requests). Jobs of an earlier attempt are normal: after "re-run failed
    /// jobs", `filter=latest` lists the jobs that were not re-run with their own attempt.
    pub fn unsettled(&self) -> bool {
        self.pull().is_some_and(|p| {
            p.checks.iter().any(|c| {
                c.completed_at.is_none() || c.jobs.iter().any(|j| j.completed_at.is_none() || j.attempt > c.attempt)
            })
        })
    }
}

/// Stage durations in seconds; `None` when the stage did not happen (no review, no checks…).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PreMergeStages {
    pub coding: Option<i64>,
    pub pickup: Option<i64>,
    pub review: Option<i64>,
    pub checks: Option<i64>,
    pub merge: Option<i64>,
    /// Workflow-run attempts beyond the first (`run_attempt` > 1).
    pub reruns: u32,
}

impl PreMergeStages {
    /// Stage names in journey order, with their durations, for metrics and the JSON API.
    pub fn named(&self) -> [(&'static str, Option<i64>); 5] {
        [
            ("coding", self.coding),
            ("pickup", self.pickup),
            ("review", self.review),
            ("checks", self.checks),
            ("merge", self.merge),
        ]
    }
}

/// A span that cannot run backwards: clocks and rewritten author dates can put an end before
/// its start, which is reported as zero rather than a negative duration.
fn span(from: i64, to: i64) -> i64 {
    (to - from).max(0)
}

impl PullFact {
    pub fn ready(&self) -> i64 {
        self.ready_at.unwrap_or(self.opened_at)
    }

    /// The first review submitted once the PR was ready; a review of a draft is early feedback,
    /// not pickup.
    pub fn first_review(&self) -> Option<i64> {
        let ready = self.ready();
        self.reviews.iter().map(|r| r.submitted_at).filter(|t| *t >= ready).min()
    }

    /// The first approval (GitHub's first `APPROVED` review).
    pub fn approval(&self) -> Option<i64> {
        self.reviews.iter().filter(|r| r.approved).map(|r| r.submitted_at).min()
    }

    /// From the first attempt's start to the last completed attempt's end, re-runs included.
    pub fn checks_span(&self) -> Option<(i64, i64)> {
        let start = self.checks.iter().map(|c| c.started_at).min()?;
        let end = self.checks.iter().filter_map(|c| c.completed_at).max()?;
        Some((start, end.max(start)))
    }

    /// Re-runs: per run, its highest attempt beyond the first (GitHub lists a run's latest
    /// attempt; a reading may also hold earlier attempts of the same run).
    pub fn reruns(&self) -> u32 {
        let mut top: std::collections::BTreeMap<i64, u32> = std::collections::BTreeMap::new();
        for c in &self.checks {
            let t = top.entry(c.run_id).or_insert(1);
            *t = (*t).max(c.attempt);
        }
        top.values().map(|a| a - 1).sum()
    }

    /// Each stage that happened as `(name, start, end)`, in journey order, with `end >= start`.
    pub fn stage_times(&self) -> Vec<(&'static str, i64, i64)> {
        if !self.detailed {
            return vec![];
        }
        let ready = self.ready();
        let first_review = self.first_review();
        let approval = self.approval();
        let checks = self.checks_span();
        // The merge waits for the later of approval and green checks; with neither, for readiness.
        let gate = approval.into_iter().chain(checks.map(|(_, e)| e)).max().unwrap_or(ready);
        let pair = |name, from: i64, to: i64| (name, from, from + span(from, to));
        [
            self.first_commit_at.map(|t| pair("coding", t, self.opened_at)),
            first_review.map(|t| pair("pickup", ready, t)),
            first_review.zip(approval).map(|(f, a)| pair("review", f, a)),
            checks.map(|(s, e)| pair("checks", s, e)),
            Some(pair("merge", gate, self.merged_at)),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    pub fn stages(&self) -> PreMergeStages {
        let mut out = PreMergeStages { reruns: self.reruns(), ..PreMergeStages::default() };
        for (name, from, to) in self.stage_times() {
            let slot = match name {
                "coding" => &mut out.coding,
                "pickup" => &mut out.pickup,
                "review" => &mut out.review,
                "checks" => &mut out.checks,
                _ => &mut out.merge,
            };
            *slot = Some(to - from);
        }
        out
    }
}

/// Where `lead_time_from: first_commit | pr_opened` starts a commit's lead time; a direct push
/// (or an unknown first commit) starts from the commit's own time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreMergeStart {
    FirstCommit,
    PrOpened,
}

pub fn lead_time_start(from: PreMergeStart, origin: &Origin, commit_time: i64) -> i64 {
    match (from, origin) {
        (_, Origin::Direct) => commit_time,
        (PreMergeStart::PrOpened, Origin::Pull(p)) => p.opened_at,
        (PreMergeStart::FirstCommit, Origin::Pull(p)) => p.first_commit_at.unwrap_or(p.opened_at).min(p.opened_at),
    }
}

pub fn stages(origin: &Origin) -> Option<PreMergeStages> {
    match origin {
        Origin::Direct => None,
        Origin::Pull(p) => Some(p.stages()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn review(t: i64, approved: bool) -> ReviewFact {
        ReviewFact { submitted_at: t, approved }
    }
    fn run(id: i64, attempt: u32, start: i64, end: Option<i64>, success: bool) -> ChecksRunFact {
        ChecksRunFact {
            run_id: id,
            name: "ci".into(),
            url: String::new(),
            attempt,
            started_at: start,
            completed_at: end,
            success,
            jobs: vec![],
        }
    }
    fn job(id: i64, attempt: u32, state: JobState, end: Option<i64>) -> ChecksJobFact {
        ChecksJobFact {
            job_id: id,
            name: "test".into(),
            url: String::new(),
            attempt,
            state,
            started_at: Some(1_700),
            completed_at: end,
        }
    }
    fn pr() -> PullFact {
        PullFact {
            number: 7,
            title: "feat: x".into(),
            url: String::new(),
            labels: vec![],
            head_sha: "h".into(),
            first_commit_at: Some(1_000),
            opened_at: 1_600,
            ready_at: None,
            reviews: vec![],
            checks: vec![],
            merged_at: 9_000,
            detailed: true,
        }
    }

    #[track_caller]
    fn check(p: PullFact, expect: [Option<i64>; 5], reruns: u32) {
        let s = p.stages();
        assert_eq!([s.coding, s.pickup, s.review, s.checks, s.merge], expect, "{p:?}");
        assert_eq!(s.reruns, reruns, "{p:?}");
    }

    #[test]
    fn stage_times() {
        // Opened ready, one approving review, one green run: every stage.
        check(
            PullFact { reviews: vec![review(4_000, true)], checks: vec![run(1, 1, 1_700, Some(2_300), true)], ..pr() },
            [Some(600), Some(2_400), Some(0), Some(600), Some(5_000)],
            0,
        );
        // A comment then a later approval: review runs from the first review to the approval.
        check(
            PullFact { reviews: vec![review(3_000, false), review(5_000, true)], ..pr() },
            [Some(600), Some(1_400), Some(2_000), None, Some(4_000)],
            0,
        );
        // Draft: pickup counts from ready_for_review; a review of the draft is not pickup.
        check(
            PullFact { ready_at: Some(3_600), reviews: vec![review(2_000, false), review(4_600, true)], ..pr() },
            [Some(600), Some(1_000), Some(0), None, Some(4_400)],
            0,
        );
        // No review at all (an admin merge): no pickup or review, merge from ready.
        check(pr(), [Some(600), None, None, None, Some(7_400)], 0);
        // A failed run re-run (attempt 2): checks span both attempts; merge waits for the green one.
        check(
            PullFact {
                reviews: vec![review(2_000, true)],
                checks: vec![run(1, 1, 1_700, Some(2_500), false), run(1, 2, 3_000, Some(3_800), true)],
                ..pr()
            },
            [Some(600), Some(400), Some(0), Some(2_100), Some(5_200)],
            1,
        );
        // Checks still running: no checks duration yet, merge from approval.
        check(
            PullFact { reviews: vec![review(2_000, true)], checks: vec![run(1, 1, 1_700, None, false)], ..pr() },
            [Some(600), Some(400), Some(0), None, Some(7_000)],
            0,
        );
        // First commit unknown, and a rewritten author date after opening: zero, never negative.
        check(PullFact { first_commit_at: None, ..pr() }, [None, None, None, None, Some(7_400)], 0);
        check(PullFact { first_commit_at: Some(2_000), ..pr() }, [Some(0), None, None, None, Some(7_400)], 0);
    }

    #[test]
    fn job_conclusions_round_trip_and_unknown_ones_are_kept() {
        for name in ["success", "failure", "neutral", "cancelled", "skipped", "timed_out", "action_required", "stale"] {
            assert_eq!(JobConclusion::parse(name).as_str(), name);
        }
        assert_eq!(JobConclusion::parse("stale"), JobConclusion::Other("stale".into()));
        assert_eq!(JobConclusion::parse("timed_out"), JobConclusion::TimedOut);
    }

    #[test]
    fn direct_push_has_no_stages_and_starts_at_the_commit() {
        assert_eq!(stages(&Origin::Direct), None);
        for from in [PreMergeStart::FirstCommit, PreMergeStart::PrOpened] {
            assert_eq!(lead_time_start(from, &Origin::Direct, 5_000), 5_000);
        }
        let p = Origin::Pull(std::sync::Arc::new(pr()));
        assert_eq!(lead_time_start(PreMergeStart::FirstCommit, &p, 9_000), 1_000);
        assert_eq!(lead_time_start(PreMergeStart::PrOpened, &p, 9_000), 1_600);
        let unknown = Origin::Pull(std::sync::Arc::new(PullFact { first_commit_at: None, ..pr() }));
        assert_eq!(lead_time_start(PreMergeStart::FirstCommit, &unknown, 9_000), 1_600);
        assert_eq!(stages(&p).map(|s| s.named()[0]), Some(("coding", Some(600))));
    }

    #[test]
    fn origin_merge_keeps_the_most_complete_reading_in_any_order() {
        let running =
            Origin::Pull(std::sync::Arc::new(PullFact { checks: vec![run(1, 1, 1_700, None, false)], ..pr() }));
        let done =
            Origin::Pull(std::sync::Arc::new(PullFact { checks: vec![run(1, 1, 1_700, Some(2_000), true)], ..pr() }));
        let reviewed = Origin::Pull(std::sync::Arc::new(PullFact { reviews: vec![review(2_000, true)], ..pr() }));
        let all = [Origin::Direct, running.clone(), done.clone(), reviewed.clone()];
        for a in &all {
            assert_eq!(a.clone().merge(a.clone()), *a);
            for b in &all {
                assert_eq!(a.clone().merge(b.clone()), b.clone().merge(a.clone()), "{a:?} {b:?}");
                for c in &all {
                    let l = a.clone().merge(b.clone()).merge(c.clone());
                    let r = a.clone().merge(b.clone().merge(c.clone()));
                    assert_eq!(l, r);
                }
            }
        }
        assert_eq!(Origin::Direct.merge(running.clone()), running);
        assert_eq!(running.clone().merge(done.clone()), done);
        assert!(running.unsettled() && !done.unsettled() && !Origin::Direct.unsettled());
        // Jobs read: a reading that knows more of them (completed) wins, in any order; a job
        // still running, or of another attempt than its run's, leaves the reading unsettled.
        let with_jobs = |jobs: Vec<ChecksJobFact>| {
            let mut r = run(1, 1, 1_700, Some(2_000), true);
            r.jobs = jobs;
            Origin::Pull(std::sync::Arc::new(PullFact { checks: vec![r], ..pr() }))
        };
        let success = JobState::Completed(JobConclusion::Success);
        let job_done = with_jobs(vec![job(9, 1, success.clone(), Some(2_000))]);
        let job_running = with_jobs(vec![job(9, 1, JobState::InProgress, None)]);
        let job_of_rerun = with_jobs(vec![job(10, 2, JobState::Queued, None)]);
        for a in [&done, &job_running, &job_of_rerun] {
            assert_eq!(job_done.clone().merge(a.clone()), job_done, "{a:?}");
            assert_eq!(a.clone().merge(job_done.clone()), job_done, "{a:?}");
        }
        assert!(!job_done.unsettled() && job_running.unsettled() && job_of_rerun.unsettled());
        let rerun_done = with_jobs(vec![job(10, 2, success, Some(2_000))]);
        assert!(rerun_done.unsettled(), "jobs of attempt 2 under a run read at attempt 1");
        // A list reading (backfill) has no phases and gives way to a detailed one.
        let listed = Origin::Pull(std::sync::Arc::new(PullFact { detailed: false, ..pr() }));
        assert_eq!(listed.pull().map(|p| p.stage_times().len()), Some(0));
        assert_eq!(listed.clone().merge(reviewed.clone()), reviewed);
        assert_eq!(reviewed.clone().merge(listed), reviewed);
    }
}
