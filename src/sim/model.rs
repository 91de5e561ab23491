//! The simulator's world state: GitHub repositories and a Concourse installation, as plain data.
//! `engine.rs` changes it as virtual time passes; `github_api.rs` and `concourse_api.rs` render it
//! in the real JSON shapes. Nothing here knows HTTP.

use std::collections::{BTreeMap, HashMap};

pub type Sha = String;
pub type BuildId = i64;
pub type VersionId = i64;

// ---------------------------------------------------------------- GitHub

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    pub name: String,
    pub email: String,
    /// GitHub login, when the person has an account.
    pub login: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChange {
    pub filename: String,
    /// `added`, `modified`, `removed`, `renamed`.
    pub status: String,
    pub additions: u32,
    pub deletions: u32,
}

#[derive(Debug, Clone)]
pub struct Commit {
    pub sha: Sha,
    /// First parent; `None` for a root commit. Squash merges mean one parent on `main`.
    pub parent: Option<Sha>,
    pub author: Person,
    pub committer: Person,
    pub author_date: i64,
    pub committer_date: i64,
    pub message: String,
    pub files: Vec<FileChange>,
}

impl Commit {
    pub fn subject(&self) -> &str {
        self.message.lines().next().unwrap_or("")
    }
    pub fn file_names(&self) -> Vec<&str> {
        self.files.iter().map(|f| f.filename.as_str()).collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReviewState {
    Approved,
    ChangesRequested,
    Commented,
}

#[derive(Debug, Clone)]
pub struct Review {
    pub id: i64,
    pub user: String,
    pub state: ReviewState,
    pub submitted_at: i64,
}

#[derive(Debug, Clone)]
pub struct PullRequest {
    pub number: u64,
    pub title: String,
    pub body: String,
    pub user: String,
    pub head_ref: String,
    pub base_ref: String,
    pub draft: bool,
    /// When a draft was marked ready for review (`ready_for_review` issue event); `None` if it
    /// was never a draft or still is one.
    pub ready_at: Option<i64>,
    pub labels: Vec<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub closed_at: Option<i64>,
    pub merged_at: Option<i64>,
    pub merge_commit_sha: Option<Sha>,
    /// The head branch's head when the pull request was closed or merged: GitHub freezes a
    /// closed PR's `head.sha` (and its commits and Actions runs), whatever later happens to the
    /// branch (a bot force-pushing it for its next PR). `None` while open: the branch's head.
    pub closed_head: Option<Sha>,
    pub reviews: Vec<Review>,
    /// What a squash merge lands on the base branch.
    pub files: Vec<FileChange>,
    /// Merge automatically this many seconds after opening (bot PRs with auto-merge); `None` = a human merges.
    pub automerge_after: Option<i64>,
}

impl PullRequest {
    pub fn is_open(&self) -> bool {
        self.closed_at.is_none()
    }
    pub fn merged(&self) -> bool {
        self.merged_at.is_some()
    }
    pub fn approved(&self) -> bool {
        // GitHub's rule: the latest review of each reviewer counts; any approval with no later
        // change request from the same reviewer approves.
        let mut last: BTreeMap<&str, &ReviewState> = BTreeMap::new();
        for r in &self.reviews {
            if r.state != ReviewState::Commented {
                last.insert(r.user.as_str(), &r.state);
            }
        }
        last.values().any(|s| **s == ReviewState::Approved)
            && !last.values().any(|s| **s == ReviewState::ChangesRequested)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Repo {
    pub owner: String,
    pub name: String,
    pub default_branch: String,
    pub private: bool,
    pub commits: HashMap<Sha, Commit>,
    /// Each branch's first-parent history, oldest first; the last entry is the head.
    pub branches: BTreeMap<String, Vec<Sha>>,
    pub tags: BTreeMap<String, Sha>,
    pub pulls: Vec<PullRequest>,
    /// Index of each sha in its branch list, per branch, for ancestry checks in O(1).
    pub positions: HashMap<String, HashMap<Sha, usize>>,
}

impl Repo {
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }
    pub fn head(&self, branch: &str) -> Option<&Sha> {
        self.branches.get(branch).and_then(|b| b.last())
    }
    pub fn position(&self, branch: &str, sha: &str) -> Option<usize> {
        self.positions.get(branch).and_then(|p| p.get(sha)).copied()
    }
    /// Is `ancestor` on the first-parent line of `descendant` (or equal to it) on `branch`?
    pub fn is_first_parent_ancestor(&self, branch: &str, ancestor: &str, descendant: &str) -> bool {
        match (self.position(branch, ancestor), self.position(branch, descendant)) {
            (Some(a), Some(d)) => a <= d,
            _ => false,
        }
    }
    pub fn pull(&self, number: u64) -> Option<&PullRequest> {
        self.pulls.iter().find(|p| p.number == number)
    }
}

// ---------------------------------------------------------------- Concourse

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BuildStatus {
    Pending,
    Started,
    Succeeded,
    Failed,
    Errored,
    Aborted,
}

impl BuildStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BuildStatus::Pending => "pending",
            BuildStatus::Started => "started",
            BuildStatus::Succeeded => "succeeded",
            BuildStatus::Failed => "failed",
            BuildStatus::Errored => "errored",
            BuildStatus::Aborted => "aborted",
        }
    }
    pub fn is_running(self) -> bool {
        matches!(self, BuildStatus::Pending | BuildStatus::Started)
    }
    pub fn is_finished(self) -> bool {
        !self.is_running()
    }
}

/// A resource version: a row of Concourse's `resource_config_versions` as the API shows it.
#[derive(Debug, Clone)]
pub struct ResourceVersion {
    pub id: VersionId,
    pub pipeline: usize,
    pub resource: usize,
    pub version: BTreeMap<String, String>,
    /// Metadata the resource reported; served only once `metadata_visible` (after a get or put).
    pub metadata: Vec<(String, String)>,
    pub metadata_visible: bool,
    pub check_order: i64,
    pub enabled: bool,
    /// When the version was first saved (virtual Unix seconds). Not in the API; for ground truth.
    pub created_at: i64,
    /// Tracked-repo commits this version carries, as (pipeline, git resource, sha) triples.
    /// Omniscient provenance for ground truth; never served.
    pub carries: Vec<(usize, usize, Sha)>,
}

#[derive(Debug, Clone)]
pub struct BuildInput {
    /// The get step name (may differ from the resource name).
    pub name: String,
    pub resource: usize,
    pub version: VersionId,
    pub first_occurrence: bool,
}

#[derive(Debug, Clone)]
pub struct BuildOutput {
    /// The put step name.
    pub name: String,
    pub resource: usize,
    pub version: VersionId,
}

#[derive(Debug, Clone)]
pub struct LogLine {
    pub time: i64,
    /// Step origin id, e.g. the task name.
    pub origin: String,
    pub payload: String,
}

#[derive(Debug, Clone)]
pub struct Build {
    pub id: BuildId,
    pub pipeline: usize,
    pub job: usize,
    /// Per-job build number as a string; reruns are "N.M".
    pub name: String,
    pub status: BuildStatus,
    pub create_time: i64,
    pub start_time: Option<i64>,
    pub end_time: Option<i64>,
    pub rerun_of: Option<BuildId>,
    pub rerun_number: Option<u32>,
    pub created_by: Option<String>,
    pub inputs: Vec<BuildInput>,
    pub outputs: Vec<BuildOutput>,
    pub log: Vec<LogLine>,
    /// What will happen when it runs, decided when it starts (for ground truth and the log).
    pub plan: Option<BuildPlan>,
}

/// The decided course of a build: how long each attempt takes and how it ends.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildPlan {
    /// Duration in seconds of each attempt of the retried task; all but the last failed.
    pub attempts: Vec<i64>,
    pub result: BuildStatus,
}

impl BuildPlan {
    pub fn duration(&self) -> i64 {
        self.attempts.iter().sum()
    }
}

#[derive(Debug, Clone)]
pub struct JobInput {
    pub name: String,
    pub resource: usize,
    pub trigger: bool,
    pub passed: Vec<usize>,
}

#[derive(Debug, Clone)]
pub struct JobOutput {
    pub name: String,
    pub resource: usize,
}

#[derive(Debug, Clone)]
pub struct Job {
    pub id: i64,
    pub name: String,
    pub serial: bool,
    pub public: bool,
    pub inputs: Vec<JobInput>,
    pub outputs: Vec<JobOutput>,
    pub groups: Vec<String>,
    /// Builds of this job, in creation order.
    pub builds: Vec<BuildId>,
    pub next_build_number: u64,
    /// `fly pause-job`: no new builds are scheduled and pending ones do not start; checks go on.
    pub paused: bool,
}

#[derive(Debug, Clone)]
pub struct Resource {
    pub name: String,
    /// Concourse resource type name: `git`, `semver`, `registry-image`, `cepler`, ...
    pub type_name: String,
    pub public: bool,
    pub last_checked: Option<i64>,
    /// Version ids, oldest check order first.
    pub versions: Vec<VersionId>,
    /// `fly pin-resource`: every job takes this version, new versions trigger nothing.
    pub pinned: Option<VersionId>,
}

#[derive(Debug, Clone)]
pub struct Pipeline {
    pub id: i64,
    pub name: String,
    pub team: String,
    pub public: bool,
    pub paused: bool,
    /// A pipeline that was destroyed: every route answers 404.
    pub removed: bool,
    pub resources: Vec<Resource>,
    pub jobs: Vec<Job>,
    pub groups: Vec<String>,
    /// The pipeline config as `GET .../config` returns it (`{"config": ...}` body's inner value).
    pub config: serde_json::Value,
}

impl Pipeline {
    pub fn job_by_name(&self, name: &str) -> Option<usize> {
        self.jobs.iter().position(|j| j.name == name)
    }
    pub fn resource_by_name(&self, name: &str) -> Option<usize> {
        self.resources.iter().position(|r| r.name == name)
    }
}

#[derive(Debug, Clone)]
pub struct Team {
    pub id: i64,
    pub name: String,
}

#[derive(Debug, Clone, Default)]
pub struct Concourse {
    pub version: String,
    pub external_url: String,
    pub cluster_name: String,
    pub teams: Vec<Team>,
    pub pipelines: Vec<Pipeline>,
    /// All builds, `builds[id - 1]`.
    pub builds: Vec<Build>,
    /// All resource versions, `versions[id - 1]`.
    pub versions: Vec<ResourceVersion>,
    pub next_check_order: i64,
    /// Local users (username → password) for the password grant.
    pub users: BTreeMap<String, String>,
    /// Issued opaque access tokens → (username, expiry).
    pub tokens: HashMap<String, (String, i64)>,
    /// Lifetime of issued tokens, seconds (`--auth-duration`).
    pub token_lifetime: i64,
}

impl Concourse {
    pub fn build(&self, id: BuildId) -> Option<&Build> {
        usize::try_from(id - 1).ok().and_then(|i| self.builds.get(i))
    }
    pub fn build_mut(&mut self, id: BuildId) -> Option<&mut Build> {
        usize::try_from(id - 1).ok().and_then(move |i| self.builds.get_mut(i))
    }
    pub fn version(&self, id: VersionId) -> Option<&ResourceVersion> {
        usize::try_from(id - 1).ok().and_then(|i| self.versions.get(i))
    }
    pub fn version_mut(&mut self, id: VersionId) -> Option<&mut ResourceVersion> {
        usize::try_from(id - 1).ok().and_then(move |i| self.versions.get_mut(i))
    }
    pub fn pipeline_by_name(&self, team: &str, name: &str) -> Option<usize> {
        self.pipelines.iter().position(|p| p.team == team && p.name == name && !p.removed)
    }
    /// A token is valid when it was issued and has not expired at `now`.
    pub fn token_user(&self, token: &str, now: i64) -> Option<&str> {
        self.tokens.get(token).filter(|(_, exp)| *exp > now).map(|(u, _)| u.as_str())
    }
}

/// One attempt of a GitHub Actions workflow run (`workflow-run` in GitHub's OpenAPI description).
/// lana-bank's PR workflows run on `pull_request`; a failed attempt is sometimes re-run
/// (`run_attempt` 2, same run id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowRun {
    pub id: u64,
    pub workflow: &'static str,
    pub path: &'static str,
    pub pr: u64,
    pub head_sha: Sha,
    pub head_branch: String,
    pub attempt: u32,
    pub created_at: i64,
    pub started_at: i64,
    pub completed_at: i64,
    pub success: bool,
}

impl WorkflowRun {
    /// `queued`, `in_progress` or `completed` at virtual time `now`.
    pub fn status(&self, now: i64) -> &'static str {
        if now >= self.completed_at {
            "completed"
        } else if now >= self.started_at {
            "in_progress"
        } else {
            "queued"
        }
    }
}
