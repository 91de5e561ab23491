//! The simulator's discrete-event engine: virtual time advances through a queue of events
//! (commits landing, resource checks, builds starting and finishing, PR merges), and Concourse's
//! scheduling rules decide which builds exist. Deterministic: the same topology, seed and
//! scheduled actions give the same world, however `advance_to` calls are spaced.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, LogNormal};
use sha1::{Digest, Sha1};

use crate::core::pathspec::{GitPathFilter, emits_version};

use super::model::*;
use super::topology::{self, Effect, ResourceSpec, SemverBump, Topology};

#[path = "cepler.rs"]
pub mod cepler;

/// Seconds between a trigger and the scheduler creating or starting a build (Concourse's
/// scheduler runs about every 10 s).
const SCHEDULER_DELAY: i64 = 10;
/// Seconds from a push to a check when the resource has a webhook.
const WEBHOOK_DELAY: i64 = 3;
/// How long before `start` the pipelines exist (initial commits, first checks and builds).
pub const WARMUP: i64 = 86_400;

/// Tracked commits something carries: (pipeline, git resource, sha).
type Carries = Vec<(usize, usize, Sha)>;
/// A version a check found: its map, metadata and carries.
type NewVersion = (BTreeMap<String, String>, Vec<(String, String)>, Carries);

/// A commit to land on a branch.
#[derive(Debug, Clone)]
pub struct CommitSpec {
    pub message: String,
    pub files: Vec<String>,
    pub author: Person,
    /// Defaults to the landing time. Authors often commit well before the merge.
    pub author_date: Option<i64>,
}

/// The pull request a commit on the default branch was squash-merged from, as seconds before
/// the merge: recorded when the commit lands (the workload draws whole PR histories at once).
#[derive(Debug, Clone, PartialEq)]
pub struct PullHistory {
    pub number: u64,
    pub title: String,
    pub author: String,
    pub labels: Vec<String>,
    /// Head branch commits' times, oldest first (the first is the `coding` start).
    pub commits_before: Vec<i64>,
    pub opened_before: i64,
    /// Opened as a draft and marked ready this long before the merge.
    pub ready_before: Option<i64>,
    /// (seconds before the merge, reviewer, state), oldest first.
    pub reviews: Vec<(i64, String, ReviewState)>,
}

/// What the next build(s) of a job will do, overriding its random behaviour.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BuildOverride {
    /// Total duration in seconds.
    pub duration: Option<i64>,
    pub result: Option<BuildStatus>,
    /// The retried task fails its first attempt (the build may still succeed).
    pub fail_first_attempt: bool,
}

/// Things that happen at a time: from workloads, scenarios and tests.
#[derive(Debug, Clone)]
pub enum Action {
    Commit {
        repo: String,
        branch: String,
        spec: CommitSpec,
    },
    /// A commit landed on `branch` exactly as [`Action::Commit`] lands it (same sha), plus the
    /// merged pull request it came from, whose head commits do not touch the sha sequence.
    MergedPull {
        repo: String,
        branch: String,
        spec: CommitSpec,
        /// Boxed: most actions are small.
        pull: Box<PullHistory>,
    },
    /// The next build of `job` that starts behaves like this.
    Override {
        pipeline: String,
        job: String,
        ov: BuildOverride,
    },
    /// Rerun a build (`fly rerun-build`): the named one, or the job's latest non-rerun build.
    Rerun {
        pipeline: String,
        job: String,
        build_name: Option<String>,
        by: String,
    },
    /// [`Action::Rerun`] of the job's latest build, only if that build failed or errored: a
    /// person who looks at the job and reruns what is red.
    RerunFailed {
        pipeline: String,
        job: String,
        by: String,
    },
    /// Trigger a new build of a job by hand (`fly trigger-job`): it takes the newest inputs when
    /// it starts, whether or not they are new.
    Trigger {
        pipeline: String,
        job: String,
        by: String,
    },
    /// `fly pause-job` (`paused: true`) or `fly unpause-job`.
    Pause {
        pipeline: String,
        job: String,
        paused: bool,
    },
    /// Open a pull request with the given content (a human's PR, for `watch --merge`).
    OpenPull {
        repo: String,
        number_hint: Option<u64>,
        title: String,
        head: String,
        files: Vec<String>,
        author: String,
        /// Opened as a draft.
        draft: bool,
        /// With `Some(d)`: the head branch gets a commit authored `d` seconds before the PR
        /// opens (its first commit, for the `coding` phase), pushed when it opens.
        coded_for: Option<i64>,
    },
    /// A draft is marked ready for review.
    ReadyForReview {
        repo: String,
        number: u64,
    },
    /// A new commit pushed to an open pull request's head branch.
    PushToPull {
        repo: String,
        number: u64,
        files: Vec<String>,
    },
    /// A human squash-merges a pull request (branch protection applies: it needs an approval).
    MergePull {
        repo: String,
        number: u64,
    },
    Review {
        repo: String,
        number: u64,
        user: String,
        state: ReviewState,
    },
    /// A human pushes the cepler gates file on `branch` of `repo` with `environment` pinned.
    Gate {
        repo: String,
        branch: String,
        environment: String,
        pin: cepler::GatePin,
        by: String,
    },
    /// `fly pin-resource` (to the version of the environment's gate) or `fly unpin-resource`.
    PinResource {
        pipeline: String,
        resource: String,
        pin: bool,
    },
    /// `git revert` of the commit landed at `target_at` with `target_message` on `branch`,
    /// pushed as a new commit: `Revert "<subject>"` + `This reverts commit <sha>.`
    Revert {
        repo: String,
        branch: String,
        target_message: String,
        target_at: i64,
        author: Person,
    },
    /// A pull request labelled `labels`, squash-merged after `merge_after` seconds.
    LabelledPull {
        repo: String,
        number: u64,
        title: String,
        files: Vec<String>,
        author: String,
        labels: Vec<String>,
        merge_after: i64,
    },
}

#[derive(Debug, Clone)]
enum Event {
    Action(Action),
    Check { p: usize, r: usize },
    TryStart { build: BuildId },
    Finish { build: BuildId },
    AutoMerge { repo: String, number: u64 },
    HumanMerge { human: usize },
}

/// A push that a webhook sender may deliver (GitHub `push` event).
#[derive(Debug, Clone)]
pub struct PushEvent {
    pub repo: String,
    pub branch: String,
    pub before: Option<Sha>,
    pub after: Sha,
    pub time: i64,
}

#[derive(Debug)]
enum ResKind {
    /// `scanned`/`tip`: how far the branch list was read, and the sha there (to notice force-pushes).
    Git {
        repo: String,
        branch: String,
        filter: GitPathFilter,
        disable_ci_skip: bool,
        webhook: bool,
        every: i64,
        scanned: usize,
        tip: Option<Sha>,
    },
    Cepler {
        repo: String,
        branch: String,
        env: String,
        /// The environment's `latest:` files.
        filter: GitPathFilter,
        passed: Option<String>,
        /// The `propagated:` files, taken from the upstream environment's recorded state.
        propagated: GitPathFilter,
        gates_branch: Option<String>,
        every: i64,
    },
    Semver {
        initial: String,
    },
    Image,
    Release,
    Pr {
        repo: String,
        label: Option<String>,
    },
}

#[derive(Debug)]
struct ResRt {
    kind: ResKind,
    next_check: Option<i64>,
    /// The pipeline's check phase for this resource, so checks do not all align.
    phase: i64,
    /// version map key → version id, to upsert like Concourse.
    index: HashMap<String, VersionId>,
}

#[derive(Debug)]
struct JobRt {
    spec: topology::JobSpec,
    loose: Vec<bool>,
    used: HashSet<(usize, VersionId)>,
    /// Succeeded builds, oldest first, with every (resource, version) they used or produced.
    succeeded: Vec<(BuildId, HashSet<(usize, VersionId)>)>,
    /// resource → versions that passed this job (inputs or outputs of a succeeded build).
    passed: HashMap<usize, HashSet<VersionId>>,
}

/// The whole simulated world.
pub struct World {
    pub now: i64,
    pub topology: Topology,
    pub github: BTreeMap<String, Repo>,
    pub concourse: Concourse,
    res: Vec<Vec<ResRt>>,
    jobs: Vec<Vec<JobRt>>,
    queue: BinaryHeap<Reverse<(i64, u64)>>,
    events: HashMap<u64, Event>,
    seq: u64,
    rng: ChaCha8Rng,
    overrides: HashMap<(usize, usize), Vec<BuildOverride>>,
    commit_carries: HashMap<(String, Sha), Carries>,
    build_carries: HashMap<BuildId, Vec<(usize, usize, Sha)>>,
    dirty: BTreeSet<usize>,
    /// Pushes not yet delivered by a webhook sender.
    pub outbox: Vec<PushEvent>,
    sha_counter: u64,
    pub events_processed: u64,
    /// Versions a resource will report at its next check (github-pr-resource polls).
    pending_versions: Vec<(i64, usize, usize, BTreeMap<String, String>)>,
    /// cepler's database: environment → its recorded states, oldest first (`cepler.rs`).
    pub cepler: BTreeMap<String, Vec<cepler::CeplerState>>,
    /// The gates file at each commit of a gates branch: environment → `HEAD` or a sha.
    gates: HashMap<Sha, BTreeMap<String, String>>,
    /// What the cepler get of a build prepared: build → (environment, state). The put records it.
    pub deploys: BTreeMap<BuildId, (String, cepler::CeplerState)>,
    /// Revert commits of the tracked repo → the commit each reverts.
    pub reverts: HashMap<Sha, Sha>,
    /// Pull request numbers scheduled merges will record ([`Action::MergedPull`]): a pull
    /// request opened before then takes another (GitHub numbers each once).
    reserved_pulls: HashSet<(String, u64)>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum WorldError {
    #[error("no such repository {0}")]
    NoRepo(String),
    #[error("no such pull request #{0}")]
    NoPull(u64),
    #[error("pull request #{0} is not open")]
    NotOpen(u64),
    #[error("pull request #{0} is not mergeable: {1}")]
    NotMergeable(u64, String),
    #[error("no such pipeline or job {0}/{1}")]
    NoJob(String, String),
}

impl World {
    pub fn new(topology: Topology, start: i64, seed: u64) -> World {
        let mut w = World {
            now: start - WARMUP,
            github: BTreeMap::new(),
            concourse: Concourse {
                version: topology.concourse.version.clone(),
                external_url: "http://127.0.0.1".into(),
                cluster_name: topology.concourse.cluster_name.clone().unwrap_or_default(),
                teams: vec![Team { id: 1, name: "main".into() }],
                token_lifetime: topology.concourse.token_lifetime.as_secs() as i64,
                users: topology.concourse.users.clone(),
                next_check_order: 1,
                ..Default::default()
            },
            res: vec![],
            jobs: vec![],
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            seq: 0,
            rng: ChaCha8Rng::seed_from_u64(seed),
            overrides: HashMap::new(),
            commit_carries: HashMap::new(),
            build_carries: HashMap::new(),
            dirty: BTreeSet::new(),
            outbox: vec![],
            sha_counter: 0,
            events_processed: 0,
            pending_versions: vec![],
            cepler: BTreeMap::new(),
            gates: HashMap::new(),
            deploys: BTreeMap::new(),
            reverts: HashMap::new(),
            reserved_pulls: HashSet::new(),
            topology: topology.clone(),
        };
        if topology.concourse.team != "main" {
            w.concourse.teams.push(Team { id: 2, name: topology.concourse.team.clone() });
        }
        for r in &topology.repos {
            let (owner, name) = r.name.split_once('/').unwrap_or(("", &r.name));
            w.github.insert(
                r.name.clone(),
                Repo {
                    owner: owner.into(),
                    name: name.into(),
                    default_branch: r.default_branch.clone(),
                    private: r.private,
                    ..Default::default()
                },
            );
            // A root commit a day before the start, so every branch has history.
            let files = r.initial_files.clone();
            w.land_commit(
                &r.name,
                &r.default_branch,
                "Initial commit".into(),
                files,
                bot("initial"),
                start - WARMUP,
                start - WARMUP,
            );
        }
        w.outbox.clear();
        for (pi, ps) in topology.pipelines.iter().enumerate() {
            w.build_pipeline(pi, ps);
        }
        w.seed_cepler();
        // Gated environments were opened when the pipelines were set (so the warm-up deploys
        // reach them too), and by `start` a human has pinned each gate to what runs there: held,
        // until a scenario opens it again.
        for (env, repo, gates_branch) in w.gated_environments() {
            let gate = |pin| Action::Gate {
                repo: repo.clone(),
                branch: gates_branch.clone(),
                environment: env.clone(),
                pin,
                by: "admin".into(),
            };
            w.schedule(start - WARMUP + 1, Event::Action(gate(cepler::GatePin::Head)));
            let held = cepler::GatePin::Recorded { environment: env.clone(), back: 0 };
            w.schedule(start - 60, Event::Action(gate(held)));
        }
        for (hi, h) in topology.humans.iter().enumerate() {
            let gap = w.exp_gap(h.every.as_secs_f64());
            w.schedule(start + gap, Event::HumanMerge { human: hi });
        }
        // The pipelines were set a day before `start`: first checks take each branch head, the
        // first builds run, and by `start` the world is quiet, with some history behind it.
        for p in 0..w.res.len() {
            for r in 0..w.res[p].len() {
                if matches!(w.res[p][r].kind, ResKind::Git { .. } | ResKind::Cepler { .. } | ResKind::Semver { .. }) {
                    w.schedule(start - WARMUP + 60, Event::Check { p, r });
                }
            }
        }
        w.advance_to(start);
        w
    }

    fn build_pipeline(&mut self, pi: usize, ps: &topology::PipelineSpec) {
        let mut resources = vec![];
        let mut rts = vec![];
        for (name, spec) in &ps.resources {
            let phase = (fnv(&format!("{}/{}", ps.name, name)) % 60) as i64;
            let kind = match spec {
                ResourceSpec::Git {
                    repo, branch, paths, ignore_paths, disable_ci_skip, webhook, check_every, ..
                } => ResKind::Git {
                    repo: repo.clone(),
                    branch: branch.clone(),
                    // Validated when the topology was parsed.
                    filter: GitPathFilter::new(paths, ignore_paths).expect("validated pathspec"),
                    disable_ci_skip: *disable_ci_skip,
                    webhook: *webhook,
                    every: check_every.as_secs().max(1) as i64,
                    scanned: 0,
                    tip: None,
                },
                ResourceSpec::Cepler {
                    repo,
                    branch,
                    environment,
                    paths,
                    passed,
                    propagated,
                    gates_branch,
                    check_every,
                } => ResKind::Cepler {
                    repo: repo.clone(),
                    branch: branch.clone(),
                    env: environment.clone(),
                    filter: GitPathFilter::new(paths, &[]).expect("validated pathspec"),
                    passed: passed.clone(),
                    propagated: GitPathFilter::new(propagated, &[]).expect("validated pathspec"),
                    gates_branch: gates_branch.clone(),
                    every: check_every.as_secs().max(1) as i64,
                },
                ResourceSpec::Semver { initial } => ResKind::Semver { initial: initial.clone() },
                ResourceSpec::RegistryImage { .. } => ResKind::Image,
                ResourceSpec::GithubRelease { .. } => ResKind::Release,
                ResourceSpec::PullRequest { repo, label } => ResKind::Pr { repo: repo.clone(), label: label.clone() },
            };
            let public = matches!(spec, ResourceSpec::Git { public: true, .. });
            resources.push(Resource {
                name: name.clone(),
                type_name: spec.type_name().into(),
                public,
                last_checked: None,
                versions: vec![],
                pinned: None,
            });
            rts.push(ResRt { kind, next_check: None, phase, index: HashMap::new() });
        }
        let res_idx = |n: &str| resources.iter().position(|r: &Resource| r.name == n).expect("validated resource");
        let job_idx = |n: &str| ps.jobs.iter().position(|j| j.name == n).expect("validated job");
        let mut jobs = vec![];
        let mut jrts = vec![];
        for (ji, js) in ps.jobs.iter().enumerate() {
            let inputs: Vec<JobInput> = js
                .inputs
                .iter()
                .map(|i| JobInput {
                    name: i.get.clone(),
                    resource: res_idx(i.resource.as_deref().unwrap_or(&i.get)),
                    trigger: i.trigger,
                    passed: i.passed.iter().map(|p| job_idx(p)).collect(),
                })
                .collect();
            let outputs = js
                .outputs
                .iter()
                .map(|o| JobOutput { name: o.put.clone(), resource: res_idx(o.resource.as_deref().unwrap_or(&o.put)) })
                .collect();
            jobs.push(Job {
                id: 0,
                name: js.name.clone(),
                serial: js.serial,
                public: js.public,
                inputs,
                outputs,
                groups: js.groups.clone(),
                builds: vec![],
                next_build_number: 1,
                paused: false,
            });
            jrts.push(JobRt {
                spec: js.clone(),
                loose: js.inputs.iter().map(|i| i.loose).collect(),
                used: HashSet::new(),
                succeeded: vec![],
                passed: HashMap::new(),
            });
            let _ = ji;
        }
        let config = pipeline_config_json(ps);
        let team = self.topology.concourse.team.clone();
        let job_id_base = self.concourse.pipelines.iter().map(|p| p.jobs.len() as i64).sum::<i64>();
        for (k, j) in jobs.iter_mut().enumerate() {
            j.id = job_id_base + k as i64 + 1;
        }
        self.concourse.pipelines.push(Pipeline {
            id: pi as i64 + 1,
            name: ps.name.clone(),
            team,
            public: ps.public,
            paused: false,
            removed: false,
            resources,
            jobs,
            groups: ps.groups.clone(),
            config,
        });
        self.res.push(rts);
        self.jobs.push(jrts);
    }

    // ------------------------------------------------------------ public API

    /// Schedule an action at virtual time `at` (clamped to now).
    pub fn schedule_action(&mut self, at: i64, action: Action) {
        if let Action::MergedPull { repo, pull, .. } = &action {
            self.reserved_pulls.insert((repo.clone(), pull.number));
        }
        self.schedule(at.max(self.now), Event::Action(action));
    }

    /// Process every event up to and including `t`, then set the world's time to `t`.
    pub fn advance_to(&mut self, t: i64) {
        while let Some(Reverse((when, seq))) = self.queue.peek().copied() {
            if when > t {
                break;
            }
            self.queue.pop();
            let Some(ev) = self.events.remove(&seq) else { continue };
            self.now = self.now.max(when);
            self.handle(ev);
            self.events_processed += 1;
            // Scheduling happens at the time of the event that made it necessary.
            self.run_scheduler();
        }
        self.now = self.now.max(t);
    }

    /// Time of the next queued event, if any.
    pub fn next_event_time(&self) -> Option<i64> {
        self.queue.peek().map(|Reverse((t, _))| *t)
    }

    pub fn repo(&self, full_name: &str) -> Option<&Repo> {
        self.github.get(full_name)
    }

    pub fn tracked_repo(&self) -> &Repo {
        // Validated: the tracked repo is one of the repos.
        &self.github[&self.topology.tracked_repo]
    }

    /// Squash-merge an open pull request now (GitHub `PUT /pulls/{n}/merge`). Requires an approval
    /// unless `bypass_review` (bots with auto-merge rules).
    pub fn merge_pull(
        &mut self,
        repo: &str,
        number: u64,
        message: Option<String>,
        bypass_review: bool,
    ) -> Result<Sha, WorldError> {
        let r = self.github.get(repo).ok_or_else(|| WorldError::NoRepo(repo.into()))?;
        let pr = r.pull(number).ok_or(WorldError::NoPull(number))?;
        if !pr.is_open() {
            return Err(WorldError::NotOpen(number));
        }
        if pr.draft && !bypass_review {
            return Err(WorldError::NotMergeable(number, "pull request is a draft".into()));
        }
        if !bypass_review && !pr.approved() {
            return Err(WorldError::NotMergeable(number, "at least 1 approving review is required".into()));
        }
        let files: Vec<String> = pr.files.iter().map(|f| f.filename.clone()).collect();
        let base = pr.base_ref.clone();
        let title = pr.title.clone();
        let author = pr.user.clone();
        let head_sha = r.head(&pr.head_ref).cloned();
        // GitHub's default squash message: a single-commit PR keeps that commit's message (title
        // suffixed with the PR number); otherwise the PR title.
        // A branch list starts at its fork point, so two entries mean one commit in the PR.
        let single = head_sha
            .as_ref()
            .filter(|_| r.branches.get(&pr.head_ref).is_some_and(|b| b.len() == 2))
            .and_then(|h| r.commits.get(h));
        let msg = message.unwrap_or_else(|| match single {
            Some(c) => {
                let mut lines = c.message.splitn(2, '\n');
                let subject = lines.next().unwrap_or("");
                let body = lines.next().unwrap_or("").trim_start_matches('\n');
                if body.is_empty() {
                    format!("{subject} (#{number})")
                } else {
                    format!("{subject} (#{number})\n\n{body}")
                }
            }
            None => format!("{title} (#{number})"),
        });
        let now = self.now;
        let sha = self.land_commit(repo, &base, msg, files, bot(&author), now, now);
        if let Some(h) = head_sha.clone()
            && let Some(c) = self.commit_carries.get(&(repo.to_string(), h)).cloned()
        {
            self.commit_carries.insert((repo.to_string(), sha.clone()), c);
        }
        let r = self.github.get_mut(repo).expect("checked above");
        let pr = r.pulls.iter_mut().find(|p| p.number == number).expect("checked above");
        pr.merged_at = Some(now);
        pr.closed_at = Some(now);
        pr.updated_at = now;
        pr.merge_commit_sha = Some(sha.clone());
        pr.closed_head = head_sha;
        let labels = pr.labels.clone();
        // github-pr-resource sees the merged PR at its next check.
        for p in 0..self.res.len() {
            for ri in 0..self.res[p].len() {
                if let ResKind::Pr { repo: rr, label } = &self.res[p][ri].kind
                    && rr == repo
                    && label.as_ref().is_none_or(|l| labels.contains(l))
                {
                    let pv = BTreeMap::from([
                        ("pr".to_string(), number.to_string()),
                        ("commit".to_string(), sha.clone()),
                        ("committed".to_string(), rfc3339(now)),
                    ]);
                    let at = next_tick(now, 60, self.res[p][ri].phase);
                    self.pending_versions.push((at, p, ri, pv));
                    self.schedule(at, Event::Check { p, r: ri });
                }
            }
        }
        Ok(sha)
    }

    /// Builds that carried `sha` (of the tracked repo) to each job, by the simulator's omniscient
    /// provenance: (pipeline, job, build id), oldest first. The ground truth tests compare with.
    pub fn builds_containing(&self, sha: &str) -> Vec<(usize, usize, BuildId)> {
        let emitted_anywhere = !self.emitting_resources(sha).is_empty();
        self.concourse
            .builds
            .iter()
            .filter(|b| self.contains_with(b.id, sha, emitted_anywhere))
            .map(|b| (b.pipeline, b.job, b.id))
            .collect()
    }

    /// Does build `id` deliver tracked commit `sha`? Every tracked git resource the build carries
    /// that would emit `sha` must be at or after it; a commit no resource emits rides along with
    /// any carried descendant.
    pub fn build_contains(&self, id: BuildId, sha: &str) -> bool {
        self.contains_with(id, sha, !self.emitting_resources(sha).is_empty())
    }

    fn contains_with(&self, id: BuildId, sha: &str, emitted_anywhere: bool) -> bool {
        let Some(carries) = self.build_carries.get(&id) else { return false };
        let repo = self.tracked_repo();
        let branch = &self.topology.tracked_branch;
        let Some(pos) = repo.position(branch, sha) else { return false };
        let Some(commit) = repo.commits.get(sha) else { return false };
        let files = commit.file_names();
        let mut any_desc = false;
        let mut relevant = 0;
        let mut max_per: HashMap<(usize, usize), usize> = HashMap::new();
        for (p, r, s) in carries {
            if let Some(sp) = repo.position(branch, s) {
                let e = max_per.entry((*p, *r)).or_insert(0);
                *e = (*e).max(sp);
                any_desc |= sp >= pos;
            }
        }
        for ((p, r), maxpos) in &max_per {
            if let ResKind::Git { filter, disable_ci_skip, .. } = &self.res[*p][*r].kind
                && emits_version(filter, *disable_ci_skip, &commit.message, &files)
            {
                relevant += 1;
                if *maxpos < pos {
                    return false;
                }
            }
        }
        if relevant > 0 {
            return true;
        }
        !emitted_anywhere && any_desc
    }

    /// Tracked-repo git resources (pipeline, resource) that emit `sha` as a version.
    pub fn emitting_resources(&self, sha: &str) -> Vec<(usize, usize)> {
        let repo = self.tracked_repo();
        let Some(c) = repo.commits.get(sha) else { return vec![] };
        let files = c.file_names();
        let mut out = vec![];
        for (p, rs) in self.res.iter().enumerate() {
            for (r, rt) in rs.iter().enumerate() {
                if let ResKind::Git { repo: rr, branch, filter, disable_ci_skip, .. } = &rt.kind
                    && *rr == self.topology.tracked_repo
                    && *branch == self.topology.tracked_branch
                    && !self.is_loose_everywhere(p, r)
                    && emits_version(filter, *disable_ci_skip, &c.message, &files)
                {
                    out.push((p, r));
                }
            }
        }
        out
    }

    /// A resource that only loose inputs read (e.g. `lana-repo`) delivers nothing.
    fn is_loose_everywhere(&self, p: usize, r: usize) -> bool {
        let mut any = false;
        for (ji, j) in self.concourse.pipelines[p].jobs.iter().enumerate() {
            for (ii, i) in j.inputs.iter().enumerate() {
                if i.resource == r {
                    any = true;
                    if !self.jobs[p][ji].loose[ii] {
                        return false;
                    }
                }
            }
        }
        any
    }

    // ------------------------------------------------------------ events

    fn schedule(&mut self, at: i64, ev: Event) {
        self.seq += 1;
        self.events.insert(self.seq, ev);
        self.queue.push(Reverse((at, self.seq)));
    }

    fn handle(&mut self, ev: Event) {
        match ev {
            Event::Action(a) => self.handle_action(a),
            Event::Check { p, r } => self.check(p, r),
            Event::TryStart { build } => self.try_start(build),
            Event::Finish { build } => self.finish(build),
            Event::AutoMerge { repo, number } => {
                // A replaced PR is closed; merging it fails and nothing happens, as on GitHub.
                let _ = self.merge_pull(&repo, number, None, true);
            }
            Event::HumanMerge { human } => {
                let h = self.topology.humans[human].clone();
                let newest = self.github.get(&h.repo).and_then(|r| {
                    r.pulls
                        .iter()
                        .rev()
                        .find(|p| p.is_open() && p.labels.contains(&h.merge_pr_labelled))
                        .map(|p| (p.number, p.title.clone()))
                });
                if let Some((n, title)) = newest {
                    let _ = self.merge_pull(&h.repo, n, Some(h.message.replace("{title}", &title)), true);
                }
                let gap = self.exp_gap(h.every.as_secs_f64());
                let now = self.now;
                self.schedule(now + gap, Event::HumanMerge { human });
            }
        }
    }

    fn handle_action(&mut self, a: Action) {
        let now = self.now;
        match a {
            Action::Commit { repo, branch, spec } => {
                let ad = spec.author_date.unwrap_or(now);
                self.land_commit(&repo, &branch, spec.message, spec.files, spec.author, ad, now);
            }
            Action::MergedPull { repo, branch, spec, pull } => {
                let ad = spec.author_date.unwrap_or(now);
                let files = spec.files.clone();
                let sha = self.land_commit(&repo, &branch, spec.message, spec.files, spec.author.clone(), ad, now);
                self.record_merged_pull(&repo, &branch, &sha, files, spec.author, *pull);
            }
            Action::Override { pipeline, job, ov } => {
                if let Some((p, j)) = self.job_index(&pipeline, &job) {
                    self.overrides.entry((p, j)).or_default().push(ov);
                }
            }
            Action::Rerun { pipeline, job, build_name, by } => {
                if let Some((p, j)) = self.job_index(&pipeline, &job) {
                    self.rerun(p, j, build_name.as_deref(), &by);
                }
            }
            Action::RerunFailed { pipeline, job, by } => {
                if let Some((p, j)) = self.job_index(&pipeline, &job) {
                    let red = self.concourse.pipelines[p].jobs[j]
                        .builds
                        .last()
                        .and_then(|b| self.concourse.build(*b))
                        .is_some_and(|b| matches!(b.status, BuildStatus::Failed | BuildStatus::Errored));
                    if red {
                        self.rerun(p, j, None, &by);
                    }
                }
            }
            Action::Trigger { pipeline, job, by } => {
                if let Some((p, j)) = self.job_index(&pipeline, &job) {
                    self.trigger_job(p, j, &by);
                }
            }
            Action::Pause { pipeline, job, paused } => {
                if let Some((p, j)) = self.job_index(&pipeline, &job) {
                    self.concourse.pipelines[p].jobs[j].paused = paused;
                    // Unpaused, the scheduler looks at the job again; its pending builds start.
                    self.dirty.insert(p);
                }
            }
            Action::OpenPull { repo, number_hint, title, head, files, author, draft, coded_for } => {
                if let Some(d) = coded_for {
                    self.fork_branch(&repo, &head);
                    let who = bot(&author);
                    self.land_commit(&repo, &head, title.clone(), files.clone(), who, now - d, now);
                }
                self.open_pull(&repo, number_hint, title, head, files, author, vec![], draft, None);
            }
            Action::ReadyForReview { repo, number } => {
                if let Some(pr) =
                    self.github.get_mut(&repo).and_then(|r| r.pulls.iter_mut().find(|p| p.number == number))
                    && pr.is_open()
                    && pr.draft
                {
                    pr.draft = false;
                    pr.ready_at = Some(now);
                    pr.updated_at = now;
                }
            }
            Action::PushToPull { repo, number, files } => {
                let head = self
                    .github
                    .get(&repo)
                    .and_then(|r| r.pull(number))
                    .filter(|p| p.is_open())
                    .map(|p| (p.head_ref.clone(), p.user.clone(), p.title.clone()));
                if let Some((head, author, title)) = head {
                    self.fork_branch(&repo, &head);
                    let msg = format!("{title} (follow-up)");
                    self.land_commit(&repo, &head, msg, files.clone(), bot(&author), now, now);
                    if let Some(pr) =
                        self.github.get_mut(&repo).and_then(|r| r.pulls.iter_mut().find(|p| p.number == number))
                    {
                        for f in files {
                            if !pr.files.iter().any(|x| x.filename == f) {
                                pr.files.push(FileChange {
                                    filename: f,
                                    status: "modified".into(),
                                    additions: 3,
                                    deletions: 1,
                                });
                            }
                        }
                        pr.updated_at = now;
                    }
                }
            }
            Action::MergePull { repo, number } => {
                // Refused like GitHub refuses it (a draft, no approval): nothing lands.
                let _ = self.merge_pull(&repo, number, None, false);
            }
            Action::Gate { repo, branch, environment, pin, by } => {
                self.push_gate(&repo, &branch, &environment, &pin, &by);
            }
            Action::PinResource { pipeline, resource, pin } => {
                if let Some((p, r)) = self.resource_index(&pipeline, &resource) {
                    self.pin_resource(p, r, pin);
                }
            }
            Action::Revert { repo, branch, target_message, target_at, author } => {
                let target = self.github.get(&repo).and_then(|rp| {
                    rp.branches.get(&branch)?.iter().find(|s| {
                        rp.commits.get(*s).is_some_and(|c| c.committer_date == target_at && c.message == target_message)
                    })
                });
                if let Some(t) = target.cloned() {
                    let c = &self.github[&repo].commits[&t];
                    let msg = format!("Revert \"{}\"\n\nThis reverts commit {t}.", c.subject());
                    let files = c.file_names().iter().map(|f| f.to_string()).collect();
                    let sha = self.land_commit(&repo, &branch, msg, files, author, now, now);
                    self.reverts.insert(sha, t);
                }
            }
            Action::LabelledPull { repo, number, title, files, author, labels, merge_after } => {
                let head = format!("{author}/pr-{number}");
                self.open_pull(&repo, Some(number), title, head, files, author, labels, false, Some(merge_after));
            }
            Action::Review { repo, number, user, state } => {
                if let Some(r) = self.github.get_mut(&repo) {
                    let id = r.pulls.iter().map(|p| p.reviews.len() as i64).sum::<i64>() + 1;
                    if let Some(pr) = r.pulls.iter_mut().find(|p| p.number == number) {
                        pr.reviews.push(Review { id: number as i64 * 1000 + id, user, state, submitted_at: now });
                        pr.updated_at = now;
                    }
                }
            }
        }
    }

    pub fn job_index(&self, pipeline: &str, job: &str) -> Option<(usize, usize)> {
        let p = self.concourse.pipelines.iter().position(|p| p.name == pipeline)?;
        let j = self.concourse.pipelines[p].job_by_name(job)?;
        Some((p, j))
    }

    // ------------------------------------------------------------ GitHub side

    /// The pull request `merge` (just landed on `base`) was squash-merged from: its head branch
    /// forked from the merge's parent with `pull.commits_before` commits (their shas hashed from
    /// the PR, not drawn from the engine's sequence, so main's shas are what they were without),
    /// its reviews, draft and readiness, merged now.
    fn record_merged_pull(
        &mut self,
        repo: &str,
        base: &str,
        merge: &str,
        files: Vec<String>,
        author: Person,
        pull: PullHistory,
    ) {
        let now = self.now;
        let Some(r) = self.github.get_mut(repo) else { return };
        let Some(fork) = r.commits.get(merge).and_then(|c| c.parent.clone()) else { return };
        // A number a bot's pull request already took: GitHub numbers are unique, keep that one.
        if r.pull(pull.number).is_some() {
            return;
        }
        let head = format!("{}/pr-{}", author.login.as_deref().unwrap_or(&author.name), pull.number);
        let mut list = vec![fork.clone()];
        for (k, before) in pull.commits_before.iter().enumerate() {
            let t = now - before;
            let mut h = Sha1::new();
            h.update(format!("pr-head\0{repo}\0{}\0{k}", pull.number));
            let sha = hex::encode(h.finalize());
            let message = if k == 0 { pull.title.clone() } else { format!("{} (review follow-up {k})", pull.title) };
            let changes = files
                .iter()
                .map(|f| FileChange { filename: f.clone(), status: "modified".into(), additions: 3, deletions: 1 })
                .collect();
            let parent = list.last().cloned();
            r.commits.insert(
                sha.clone(),
                Commit {
                    sha: sha.clone(),
                    parent,
                    author: author.clone(),
                    committer: author.clone(),
                    author_date: t,
                    committer_date: t,
                    message,
                    files: changes,
                },
            );
            list.push(sha);
        }
        r.positions.insert(head.clone(), list.iter().enumerate().map(|(i, s)| (s.clone(), i)).collect());
        let closed_head = list.last().cloned();
        r.branches.insert(head.clone(), list);
        let id0 = pull.number as i64 * 1000;
        r.pulls.push(PullRequest {
            number: pull.number,
            title: pull.title,
            body: String::new(),
            user: pull.author,
            head_ref: head,
            base_ref: base.to_string(),
            draft: false,
            ready_at: pull.ready_before.map(|b| now - b),
            labels: pull.labels,
            created_at: now - pull.opened_before,
            updated_at: now,
            closed_at: Some(now),
            merged_at: Some(now),
            merge_commit_sha: Some(merge.to_string()),
            closed_head,
            reviews: pull
                .reviews
                .into_iter()
                .enumerate()
                .map(|(i, (before, user, state))| Review {
                    id: id0 + i as i64 + 1,
                    user,
                    state,
                    submitted_at: now - before,
                })
                .collect(),
            files: files
                .iter()
                .map(|f| FileChange { filename: f.clone(), status: "modified".into(), additions: 3, deletions: 1 })
                .collect(),
            automerge_after: None,
        });
    }

    /// Start `branch` at the default branch's head unless it exists (a branch list starts at
    /// its fork point).
    fn fork_branch(&mut self, repo: &str, branch: &str) {
        if let Some(rp) = self.github.get_mut(repo)
            && !rp.branches.contains_key(branch)
            && let Some(base_head) = rp.head(&rp.default_branch).cloned()
        {
            rp.branches.insert(branch.to_string(), vec![base_head.clone()]);
            rp.positions.insert(branch.to_string(), HashMap::from([(base_head, 0)]));
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn land_commit(
        &mut self,
        repo: &str,
        branch: &str,
        message: String,
        files: Vec<String>,
        author: Person,
        author_date: i64,
        committer_date: i64,
    ) -> Sha {
        self.sha_counter += 1;
        let Some(r) = self.github.get_mut(repo) else { return String::new() };
        let parent = r.head(branch).cloned().or_else(|| r.head(&r.default_branch.clone()).cloned());
        let mut h = Sha1::new();
        h.update(format!("{repo}\0{branch}\0{parent:?}\0{message}\0{}\0{committer_date}", self.sha_counter));
        let sha = hex::encode(h.finalize());
        let changes = files
            .iter()
            .map(|f| {
                let n = fnv(&format!("{sha}{f}"));
                FileChange {
                    filename: f.clone(),
                    status: "modified".into(),
                    additions: (n % 120) as u32 + 1,
                    deletions: ((n >> 8) % 40) as u32,
                }
            })
            .collect();
        let committer = if author.login.as_deref().is_some_and(|l| l.ends_with("[bot]")) || author.name == "galoybot" {
            author.clone()
        } else {
            // Squash merges are committed by GitHub's web-flow.
            Person { name: "GitHub".into(), email: "noreply@github.com".into(), login: Some("web-flow".into()) }
        };
        let c = Commit {
            sha: sha.clone(),
            parent: parent.clone(),
            author,
            committer,
            author_date,
            committer_date,
            message,
            files: changes,
        };
        r.commits.insert(sha.clone(), c);
        let list = r.branches.entry(branch.to_string()).or_insert_with(Vec::new);
        if list.is_empty()
            && let Some(p) = &parent
        {
            // A new branch starts at its parent's position on the default branch.
            list.push(p.clone());
        }
        list.push(sha.clone());
        let idx = list.len() - 1;
        let pos = r.positions.entry(branch.to_string()).or_default();
        if idx > 0 && pos.is_empty() {
            pos.insert(list[0].clone(), 0);
        }
        pos.insert(sha.clone(), idx);
        self.outbox.push(PushEvent {
            repo: repo.into(),
            branch: branch.into(),
            before: parent,
            after: sha.clone(),
            time: self.now,
        });
        if self.outbox.len() > 10_000 {
            self.outbox.drain(..5_000);
        }
        // Schedule checks of every resource watching this branch.
        for p in 0..self.res.len() {
            for ri in 0..self.res[p].len() {
                let (watch, delay) = match &self.res[p][ri].kind {
                    ResKind::Git { repo: rr, branch: b, webhook, every, .. } if rr == repo && b == branch => {
                        (true, if *webhook { Some(WEBHOOK_DELAY) } else { Some(-*every) })
                    }
                    ResKind::Cepler { repo: rr, branch: b, gates_branch, every, .. }
                        if rr == repo && (b == branch || gates_branch.as_deref() == Some(branch)) =>
                    {
                        (true, Some(-*every))
                    }
                    _ => (false, None),
                };
                if !watch {
                    continue;
                }
                let at = match delay {
                    Some(d) if d > 0 => self.now + d,
                    Some(d) => next_tick(self.now, -d, self.res[p][ri].phase),
                    None => continue,
                };
                if self.res[p][ri].next_check.is_none_or(|t| t < self.now || t > at) {
                    self.res[p][ri].next_check = Some(at);
                    self.schedule(at, Event::Check { p, r: ri });
                }
            }
        }
        sha
    }

    #[allow(clippy::too_many_arguments)]
    fn open_pull(
        &mut self,
        repo: &str,
        number_hint: Option<u64>,
        title: String,
        head: String,
        files: Vec<String>,
        author: String,
        labels: Vec<String>,
        draft: bool,
        automerge_after: Option<i64>,
    ) -> u64 {
        let now = self.now;
        let Some(r) = self.github.get_mut(repo) else { return 0 };
        // A bot replaces its previous PR from the same branch.
        if automerge_after.is_some() {
            close_pulls_from(r, &head, now);
        }
        let mut next = r.pulls.iter().map(|p| p.number).max().unwrap_or(1000) + 1;
        while self.reserved_pulls.contains(&(repo.to_string(), next)) {
            next += 1;
        }
        let number = number_hint.filter(|n| r.pull(*n).is_none()).unwrap_or(next);
        let base = r.default_branch.clone();
        r.pulls.push(PullRequest {
            number,
            title,
            body: String::new(),
            user: author,
            head_ref: head,
            base_ref: base,
            draft,
            labels,
            ready_at: None,
            created_at: now,
            updated_at: now,
            closed_at: None,
            merged_at: None,
            merge_commit_sha: None,
            closed_head: None,
            reviews: vec![],
            files: files
                .iter()
                .map(|f| FileChange { filename: f.clone(), status: "modified".into(), additions: 3, deletions: 1 })
                .collect(),
            automerge_after,
        });
        if let Some(d) = automerge_after {
            self.schedule(now + d, Event::AutoMerge { repo: repo.into(), number });
        }
        number
    }

    // ------------------------------------------------------------ resources

    fn check(&mut self, p: usize, r: usize) {
        let now = self.now;
        self.concourse.pipelines[p].resources[r].last_checked = Some(now);
        if self.res[p][r].next_check.is_some_and(|t| t <= now) {
            self.res[p][r].next_check = None;
        }
        if matches!(self.res[p][r].kind, ResKind::Cepler { .. }) {
            self.check_cepler(p, r);
            return;
        }
        let mut new_versions: Vec<NewVersion> = vec![];
        match &mut self.res[p][r].kind {
            ResKind::Git { repo, branch, filter, disable_ci_skip, scanned, tip, .. } => {
                let Some(rp) = self.github.get(repo.as_str()) else { return };
                let Some(list) = rp.branches.get(branch.as_str()) else { return };
                // A force-push rewrote what we read: start over as a first check would.
                if *scanned > 0 && (list.len() < *scanned || list.get(*scanned - 1) != tip.as_ref()) {
                    *scanned = 0;
                }
                *tip = list.last().cloned();
                let tracked = *repo == self.topology.tracked_repo && *branch == self.topology.tracked_branch;
                let emits = |sha: &Sha| {
                    let c = &rp.commits[sha];
                    emits_version(filter, *disable_ci_skip, &c.message, &c.file_names())
                };
                let picked: Vec<Sha> = if *scanned == 0 {
                    // First check: version_depth 1, the newest matching commit only.
                    list.iter().rev().find(|s| emits(s)).cloned().into_iter().collect()
                } else {
                    list[*scanned..].iter().filter(|s| emits(s)).cloned().collect()
                };
                *scanned = list.len();
                for sha in picked {
                    let c = &rp.commits[&sha];
                    let carries = if tracked {
                        vec![(p, r, sha.clone())]
                    } else {
                        self.commit_carries.get(&(repo.clone(), sha.clone())).cloned().unwrap_or_default()
                    };
                    new_versions.push((
                        BTreeMap::from([("ref".to_string(), sha.clone())]),
                        git_metadata(rp, c, branch),
                        carries,
                    ));
                }
            }
            ResKind::Semver { initial }
                // The semver resource reports its initial version until something is put.
                if self.concourse.pipelines[p].resources[r].versions.is_empty() => {
                    new_versions.push((BTreeMap::from([("number".to_string(), initial.clone())]), vec![], vec![]));
                }
            ResKind::Pr { .. } => {
                let ready: Vec<_> = self
                    .pending_versions
                    .iter()
                    .filter(|(t, pp, rr, _)| *t <= now && *pp == p && *rr == r)
                    .cloned()
                    .collect();
                self.pending_versions.retain(|(t, pp, rr, _)| !(*t <= now && *pp == p && *rr == r));
                for (_, _, _, v) in ready {
                    new_versions.push((v, vec![], vec![]));
                }
            }
            _ => {}
        }
        for (v, md, carries) in new_versions {
            self.save_version(p, r, v, md, carries, false);
        }
    }

    /// Upsert a version like Concourse: an existing one keeps its id and check order.
    fn save_version(
        &mut self,
        p: usize,
        r: usize,
        version: BTreeMap<String, String>,
        metadata: Vec<(String, String)>,
        carries: Vec<(usize, usize, Sha)>,
        visible: bool,
    ) -> VersionId {
        let key = version_key(&version);
        if let Some(id) = self.res[p][r].index.get(&key).copied() {
            let v = self.concourse.version_mut(id).expect("indexed version");
            if !metadata.is_empty() {
                v.metadata = metadata;
            }
            v.metadata_visible |= visible;
            return id;
        }
        let id = self.concourse.versions.len() as i64 + 1;
        let co = self.concourse.next_check_order;
        self.concourse.next_check_order += 1;
        self.concourse.versions.push(ResourceVersion {
            id,
            pipeline: p,
            resource: r,
            version,
            metadata,
            metadata_visible: visible,
            check_order: co,
            enabled: true,
            created_at: self.now,
            carries,
        });
        self.res[p][r].index.insert(key, id);
        self.concourse.pipelines[p].resources[r].versions.push(id);
        self.dirty.insert(p);
        id
    }

    // ------------------------------------------------------------ scheduling

    fn run_scheduler(&mut self) {
        while let Some(p) = self.dirty.pop_first() {
            for j in 0..self.concourse.pipelines[p].jobs.len() {
                self.schedule_job(p, j);
            }
        }
    }

    fn schedule_job(&mut self, p: usize, j: usize) {
        let job = &self.concourse.pipelines[p].jobs[j];
        // A paused job gets no new builds (atc/scheduler skips paused jobs).
        if job.paused || job.inputs.iter().all(|i| !i.trigger) {
            return;
        }
        let has_pending = job.builds.iter().rev().take(8).any(|b| {
            self.concourse.build(*b).is_some_and(|b| b.status == BuildStatus::Pending && b.rerun_of.is_none())
        });
        if has_pending {
            return;
        }
        let Some(chosen) = self.resolve(p, j) else { return };
        let jrt = &self.jobs[p][j];
        let new_trigger =
            job.inputs.iter().zip(&chosen).any(|(i, v)| i.trigger && !jrt.used.contains(&(i.resource, *v)));
        if !new_trigger {
            return;
        }
        self.create_pending_build(p, j, None);
    }

    /// A new numbered build, pending: its inputs are chosen when it starts (atc/db/job.go
    /// `CreateBuild` + the scheduler). `created_by` is set for a manual trigger only.
    fn create_pending_build(&mut self, p: usize, j: usize, created_by: Option<String>) {
        let now = self.now;
        let id = self.concourse.builds.len() as i64 + 1;
        let job = &mut self.concourse.pipelines[p].jobs[j];
        let name = job.next_build_number.to_string();
        job.next_build_number += 1;
        job.builds.push(id);
        self.concourse.builds.push(Build {
            id,
            pipeline: p,
            job: j,
            name,
            status: BuildStatus::Pending,
            create_time: now,
            start_time: None,
            end_time: None,
            rerun_of: None,
            rerun_number: None,
            created_by,
            inputs: vec![],
            outputs: vec![],
            log: vec![],
            plan: None,
        });
        self.schedule(now + SCHEDULER_DELAY, Event::TryStart { build: id });
    }

    /// Concourse's input resolution: each input takes the newest version that satisfies its
    /// `passed` constraints, and inputs sharing an upstream job must come from one build of it.
    fn resolve(&self, p: usize, j: usize) -> Option<Vec<VersionId>> {
        let job = &self.concourse.pipelines[p].jobs[j];
        let mut cands: Vec<Vec<VersionId>> = vec![];
        for i in &job.inputs {
            let versions = &self.concourse.pipelines[p].resources[i.resource].versions;
            if let Some(pinned) = self.concourse.pipelines[p].resources[i.resource].pinned {
                // A pinned resource gives every job that one version.
                cands.push(vec![pinned]);
            } else if i.passed.is_empty() {
                let latest =
                    versions.iter().rev().find(|v| self.concourse.version(**v).is_some_and(|v| v.enabled)).copied()?;
                cands.push(vec![latest]);
            } else {
                // Versions are listed in check order, so walking them newest first and keeping
                // those that passed every upstream job yields the candidates already sorted.
                let v: Vec<VersionId> = versions
                    .iter()
                    .rev()
                    .filter(|id| {
                        i.passed
                            .iter()
                            .all(|up| self.jobs[p][*up].passed.get(&i.resource).is_some_and(|s| s.contains(id)))
                    })
                    .take(25)
                    .copied()
                    .collect();
                if v.is_empty() {
                    return None;
                }
                cands.push(v);
            }
        }
        let mut chosen = Vec::with_capacity(cands.len());
        if self.backtrack(p, j, &cands, &mut chosen) { Some(chosen) } else { None }
    }

    fn backtrack(&self, p: usize, j: usize, cands: &[Vec<VersionId>], chosen: &mut Vec<VersionId>) -> bool {
        let k = chosen.len();
        if k == cands.len() {
            return true;
        }
        let inputs = &self.concourse.pipelines[p].jobs[j].inputs;
        for &c in &cands[k] {
            let ok = (0..k).all(|prev| {
                inputs[prev].passed.iter().filter(|up| inputs[k].passed.contains(up)).all(|up| {
                    self.jobs[p][*up].succeeded.iter().rev().any(|(_, used)| {
                        used.contains(&(inputs[prev].resource, chosen[prev])) && used.contains(&(inputs[k].resource, c))
                    })
                })
            });
            if ok {
                chosen.push(c);
                if self.backtrack(p, j, cands, chosen) {
                    return true;
                }
                chosen.pop();
            }
        }
        false
    }

    fn try_start(&mut self, id: BuildId) {
        let now = self.now;
        let Some(b) = self.concourse.build(id) else { return };
        if b.status != BuildStatus::Pending {
            return;
        }
        let (p, j) = (b.pipeline, b.job);
        let job = &self.concourse.pipelines[p].jobs[j];
        if job.paused {
            // Pending builds of a paused job wait (a manual trigger or rerun stays pending).
            self.schedule(now + 60, Event::TryStart { build: id });
            return;
        }
        if job.serial {
            let busy =
                job.builds.iter().any(|x| self.concourse.build(*x).is_some_and(|x| x.status == BuildStatus::Started));
            // Serial jobs run their oldest pending build first.
            let older_pending = job
                .builds
                .iter()
                .any(|x| *x < id && self.concourse.build(*x).is_some_and(|x| x.status == BuildStatus::Pending));
            if busy || older_pending {
                return;
            }
        }
        let rerun_of = b.rerun_of;
        let inputs: Vec<BuildInput> = if let Some(orig) = rerun_of {
            self.concourse
                .build(orig)
                .map(|o| o.inputs.iter().map(|i| BuildInput { first_occurrence: false, ..i.clone() }).collect())
                .unwrap_or_default()
        } else {
            let Some(chosen) = self.resolve(p, j) else {
                // Inputs vanished (e.g. disabled); stay pending and retry on the next change.
                self.schedule(now + 60, Event::TryStart { build: id });
                return;
            };
            let job = &self.concourse.pipelines[p].jobs[j];
            job.inputs
                .iter()
                .zip(chosen)
                .map(|(i, v)| BuildInput {
                    name: i.name.clone(),
                    resource: i.resource,
                    version: v,
                    first_occurrence: !self.jobs[p][j].used.contains(&(i.resource, v)),
                })
                .collect()
        };
        let mut carries = vec![];
        let loose = self.jobs[p][j].loose.clone();
        let job_inputs = self.concourse.pipelines[p].jobs[j].inputs.clone();
        for inp in &inputs {
            self.jobs[p][j].used.insert((inp.resource, inp.version));
            let ii = job_inputs.iter().position(|x| x.name == inp.name).unwrap_or(0);
            if let Some(v) = self.concourse.version_mut(inp.version) {
                // A get stores the version's metadata (it becomes visible in the API).
                v.metadata_visible = true;
                if !loose.get(ii).copied().unwrap_or(false) {
                    carries.extend(v.carries.iter().cloned());
                }
            }
        }
        carries.sort();
        carries.dedup();
        self.build_carries.insert(id, carries);
        let mut plan = self.decide_plan(p, j);
        if !self.prepare_cepler(id, &inputs) {
            // cepler's `in` exits 1 ("Trigger is out of sync"): the get fails and the build errors.
            plan = BuildPlan { attempts: vec![30], result: BuildStatus::Errored };
        }
        let log = self.make_log(p, j, id, now, &plan, &inputs);
        let b = self.concourse.build_mut(id).expect("exists");
        b.status = BuildStatus::Started;
        b.start_time = Some(now);
        b.inputs = inputs;
        b.log = log;
        let end = now + plan.duration();
        b.plan = Some(plan);
        self.schedule(end, Event::Finish { build: id });
    }

    fn decide_plan(&mut self, p: usize, j: usize) -> BuildPlan {
        let spec = self.jobs[p][j].spec.clone();
        let ov = self.overrides.get_mut(&(p, j)).and_then(|v| if v.is_empty() { None } else { Some(v.remove(0)) });
        let median = spec.duration.median.as_secs_f64().max(1.0);
        let p90 = spec.duration.p90.map(|d| d.as_secs_f64()).unwrap_or(median * 1.3).max(median);
        // Log-normal through (median, p90): sigma = ln(p90/median) / z(0.9).
        let sigma = ((p90 / median).ln() / 1.281_551_565_5).max(1e-6);
        let dist = LogNormal::new(median.ln(), sigma).expect("finite parameters");
        let mut total = dist.sample(&mut self.rng).round().max(5.0) as i64;
        let roll: f64 = self.rng.random();
        let mut result = if roll < spec.failure_rate {
            BuildStatus::Failed
        } else if roll < spec.failure_rate + spec.error_rate {
            BuildStatus::Errored
        } else {
            BuildStatus::Succeeded
        };
        let mut flaky_first = spec.task.attempts > 1 && self.rng.random::<f64>() < spec.task.flaky_rate;
        if let Some(ov) = &ov {
            if let Some(d) = ov.duration {
                total = d.max(1);
            }
            if let Some(r) = ov.result {
                result = r;
            }
            if ov.fail_first_attempt {
                flaky_first = true;
            }
        }
        let attempts = if flaky_first && spec.task.attempts > 1 {
            // The first attempt fails part-way; the retry runs the whole task again.
            let first = (total as f64 * self.rng.random_range(0.3..0.6)).round() as i64;
            match ov.as_ref().and_then(|o| o.duration) {
                // An overridden duration is the build's total.
                Some(_) => vec![first.max(1), (total - first).max(1)],
                None => vec![first.max(1), total],
            }
        } else {
            vec![total]
        };
        BuildPlan { attempts, result }
    }

    fn make_log(
        &self,
        p: usize,
        j: usize,
        _id: BuildId,
        start: i64,
        plan: &BuildPlan,
        inputs: &[BuildInput],
    ) -> Vec<LogLine> {
        let spec = &self.jobs[p][j].spec;
        let task = spec.task.name.clone();
        let mut log = vec![];
        for i in inputs {
            let v = self.concourse.version(i.version).map(|v| version_key(&v.version)).unwrap_or_default();
            log.push(LogLine {
                time: start + 1,
                origin: i.name.clone(),
                payload: format!("fetched {} {}\n", i.name, v),
            });
        }
        let mut t = start + 2;
        let n = plan.attempts.len();
        for (k, d) in plan.attempts.iter().enumerate() {
            log.push(LogLine {
                time: t,
                origin: task.clone(),
                payload: format!("running {task} (attempt {} of {})\n", k + 1, spec.task.attempts.max(1)),
            });
            let last = k + 1 == n;
            if !last {
                log.push(LogLine {
                    time: t + d - 1,
                    origin: task.clone(),
                    payload: format!(
                        "--- FAIL: {task}: flaky step timed out (attempt {} of {})\n",
                        k + 1,
                        spec.task.attempts
                    ),
                });
                log.push(LogLine { time: t + d - 1, origin: task.clone(), payload: "retrying...\n".into() });
            } else if plan.result == BuildStatus::Succeeded {
                log.push(LogLine {
                    time: t + d / 2,
                    origin: task.clone(),
                    payload: format!("{task}: all checks passed\n"),
                });
            } else {
                for (m, line) in [
                    format!("{task}: step 'assert deployment healthy' failed"),
                    "  expected: status 200".to_string(),
                    "  got:      status 503 (service unavailable)".to_string(),
                    format!("error: {task} exited with status 1"),
                ]
                .into_iter()
                .enumerate()
                {
                    log.push(LogLine {
                        time: t + d - 5 + m as i64,
                        origin: task.clone(),
                        payload: format!("{line}\n"),
                    });
                }
            }
            t += d;
        }
        log
    }

    fn finish(&mut self, id: BuildId) {
        let now = self.now;
        let Some(b) = self.concourse.build(id) else { return };
        if b.status != BuildStatus::Started {
            return;
        }
        let (p, j) = (b.pipeline, b.job);
        let result = b.plan.as_ref().map(|pl| pl.result).unwrap_or(BuildStatus::Succeeded);
        let mut outputs = vec![];
        if result == BuildStatus::Succeeded {
            outputs = self.apply_outputs(p, j, id);
        }
        let b = self.concourse.build_mut(id).expect("exists");
        b.status = result;
        b.end_time = Some(now);
        b.outputs = outputs.clone();
        if result == BuildStatus::Succeeded {
            let mut used: HashSet<(usize, VersionId)> = b.inputs.iter().map(|i| (i.resource, i.version)).collect();
            used.extend(outputs.iter().map(|o| (o.resource, o.version)));
            let jrt = &mut self.jobs[p][j];
            for (r, v) in &used {
                jrt.passed.entry(*r).or_default().insert(*v);
            }
            jrt.succeeded.push((id, used));
        }
        // The next pending build of a serial job can start now.
        let next: Vec<BuildId> = self.concourse.pipelines[p].jobs[j]
            .builds
            .iter()
            .copied()
            .filter(|x| self.concourse.build(*x).is_some_and(|x| x.status == BuildStatus::Pending))
            .collect();
        for x in next {
            self.schedule(now + SCHEDULER_DELAY, Event::TryStart { build: x });
        }
        self.dirty.insert(p);
    }

    fn apply_outputs(&mut self, p: usize, j: usize, id: BuildId) -> Vec<BuildOutput> {
        let specs = self.jobs[p][j].spec.outputs.clone();
        let job_outputs = self.concourse.pipelines[p].jobs[j].outputs.clone();
        let carries = self.build_carries.get(&id).cloned().unwrap_or_default();
        let mut outs: Vec<BuildOutput> = vec![];
        for (spec, jo) in specs.iter().zip(job_outputs) {
            let r = jo.resource;
            let vars = self.template_vars(id, &outs);
            let render = |s: &str| render_template(s, &vars, id);
            let vid = match &spec.effect {
                Effect::Image => {
                    let mut h = sha2::Sha256::new();
                    sha2::Digest::update(&mut h, format!("{p}/{j}/{id}/{}", jo.name));
                    let digest = format!("sha256:{}", hex::encode(sha2::Digest::finalize(h)));
                    self.save_version(p, r, BTreeMap::from([("digest".into(), digest)]), vec![], carries.clone(), true)
                }
                Effect::Semver { bump, from } => {
                    let from = from.clone().unwrap_or(jo.name.clone());
                    let current = vars.get(&format!("{from}.number")).cloned().or_else(|| {
                        self.concourse.pipelines[p].resources[r]
                            .versions
                            .last()
                            .and_then(|v| self.concourse.version(*v))
                            .and_then(|v| v.version.get("number").cloned())
                    });
                    let initial = match &self.res[p][r].kind {
                        ResKind::Semver { initial } => initial.clone(),
                        _ => "0.0.0".into(),
                    };
                    let next = bump_semver(current.as_deref().unwrap_or(&initial), *bump, current.is_none());
                    self.save_version(
                        p,
                        r,
                        BTreeMap::from([("number".into(), next.clone())]),
                        vec![("number".into(), next)],
                        carries.clone(),
                        true,
                    )
                }
                Effect::Tag { of, name } => {
                    let tag = render(name);
                    let Some(inp) =
                        self.concourse.build(id).and_then(|b| b.inputs.iter().find(|i| &i.name == of)).cloned()
                    else {
                        continue;
                    };
                    let Some(v) = self.concourse.version_mut(inp.version) else { continue };
                    v.metadata.retain(|(k, _)| k != "tags");
                    v.metadata.push(("tags".into(), tag.clone()));
                    let sha = v.version.get("ref").cloned().unwrap_or_default();
                    if let ResKind::Git { repo, .. } = &self.res[p][inp.resource].kind {
                        let repo = repo.clone();
                        if let Some(rp) = self.github.get_mut(&repo) {
                            rp.tags.insert(tag, sha);
                        }
                    }
                    inp.version
                }
                Effect::Push { repo, branch, message, files } => {
                    let msg = render(message);
                    let now = self.now;
                    let sha = self.land_commit(repo, branch, msg, files.clone(), bot("galoybot"), now, now);
                    self.commit_carries.insert((repo.clone(), sha.clone()), carries.clone());
                    let md = self
                        .github
                        .get(repo)
                        .and_then(|rp| rp.commits.get(&sha).map(|c| git_metadata(rp, c, branch)))
                        .unwrap_or_default();
                    self.save_version(p, r, BTreeMap::from([("ref".into(), sha)]), md, carries.clone(), true)
                }
                Effect::PullRequest { repo, head, base: _, title, message, files, labels, draft, automerge_after } => {
                    let msg = render(message);
                    let title = render(title);
                    let now = self.now;
                    // Bots force-push their branch from the base each time, having closed the
                    // pull request they replace (whose head stays where it was).
                    if let Some(rp) = self.github.get_mut(repo.as_str())
                        && let Some(base_head) = rp.head(&rp.default_branch).cloned()
                    {
                        if automerge_after.is_some() {
                            close_pulls_from(rp, head, now);
                        }
                        rp.branches.insert(head.clone(), vec![base_head.clone()]);
                        rp.positions.insert(head.clone(), HashMap::from([(base_head, 0)]));
                    }
                    let sha = self.land_commit(repo, head, msg, files.clone(), bot("galoybot"), now, now);
                    self.commit_carries.insert((repo.clone(), sha.clone()), carries.clone());
                    self.open_pull(
                        repo,
                        None,
                        title,
                        head.clone(),
                        files.clone(),
                        "galoybot".into(),
                        labels.clone(),
                        *draft,
                        automerge_after.map(|d| d.as_secs() as i64),
                    );
                    self.save_version(p, r, BTreeMap::from([("ref".into(), sha)]), vec![], carries.clone(), true)
                }
                Effect::CeplerRecord { of } => {
                    let trig = vars.get(&format!("{of}.trigger")).cloned().unwrap_or_default();
                    let env = vars.get(&format!("{of}.environment")).cloned().unwrap_or_default();
                    // `cepler record` commits the prepared state and pushes it.
                    self.record_cepler(id);
                    self.save_version(
                        p,
                        r,
                        BTreeMap::from([("trigger".into(), trig), ("environment".into(), env)]),
                        vec![],
                        carries.clone(),
                        true,
                    )
                }
                Effect::Release { tag } => {
                    let t = render(tag);
                    self.save_version(
                        p,
                        r,
                        BTreeMap::from([("tag".into(), t.clone())]),
                        vec![("tag".into(), t)],
                        carries.clone(),
                        true,
                    )
                }
            };
            outs.push(BuildOutput { name: jo.name.clone(), resource: r, version: vid });
        }
        outs
    }

    fn template_vars(&self, id: BuildId, outs: &[BuildOutput]) -> HashMap<String, String> {
        let mut vars = HashMap::new();
        if let Some(b) = self.concourse.build(id) {
            for i in &b.inputs {
                if let Some(v) = self.concourse.version(i.version) {
                    for (k, val) in &v.version {
                        vars.insert(format!("{}.{k}", i.name), val.clone());
                    }
                }
            }
        }
        for o in outs {
            if let Some(v) = self.concourse.version(o.version) {
                for (k, val) in &v.version {
                    vars.insert(format!("{}.{k}", o.name), val.clone());
                }
            }
        }
        vars
    }

    fn rerun(&mut self, p: usize, j: usize, name: Option<&str>, by: &str) {
        let now = self.now;
        let job = &self.concourse.pipelines[p].jobs[j];
        let orig = match name {
            Some(n) => job.builds.iter().copied().find(|b| self.concourse.build(*b).is_some_and(|b| b.name == n)),
            None => job
                .builds
                .iter()
                .rev()
                .copied()
                .find(|b| self.concourse.build(*b).is_some_and(|b| b.rerun_of.is_none() && b.status.is_finished())),
        };
        let Some(orig) = orig else { return };
        let Some(ob) = self.concourse.build(orig) else { return };
        let reruns =
            job.builds.iter().filter(|b| self.concourse.build(**b).is_some_and(|b| b.rerun_of == Some(orig))).count()
                as u32;
        let name = format!("{}.{}", ob.name, reruns + 1);
        let id = self.concourse.builds.len() as i64 + 1;
        self.concourse.pipelines[p].jobs[j].builds.push(id);
        self.concourse.builds.push(Build {
            id,
            pipeline: p,
            job: j,
            name,
            status: BuildStatus::Pending,
            create_time: now,
            start_time: None,
            end_time: None,
            rerun_of: Some(orig),
            rerun_number: Some(reruns + 1),
            created_by: Some(by.to_string()),
            inputs: vec![],
            outputs: vec![],
            log: vec![],
            plan: None,
        });
        self.schedule(now + SCHEDULER_DELAY, Event::TryStart { build: id });
    }

    /// `fly trigger-job`: a new numbered build, created pending like a scheduled one (inputs are
    /// chosen when it starts, atc/db/job.go `CreateBuild` + the scheduler), but whether or not
    /// any input is new, and alongside an already pending build: a manual build is not the one
    /// pending build the scheduler keeps per job.
    fn trigger_job(&mut self, p: usize, j: usize, by: &str) {
        self.create_pending_build(p, j, Some(by.to_string()));
    }

    fn exp_gap(&mut self, mean: f64) -> i64 {
        let u: f64 = self.rng.random_range(1e-9..1.0);
        (-u.ln() * mean).round().max(60.0) as i64
    }
}

/// A GitHub account's git identity (login as name, the noreply address): a bot's or, for pull
/// request commits, a developer's.
/// Close the open pull requests from branch `head`, their heads frozen where the branch is now.
fn close_pulls_from(r: &mut Repo, head: &str, now: i64) {
    let at = r.head(head).cloned();
    for p in r.pulls.iter_mut().filter(|p| p.is_open() && p.head_ref == head) {
        p.closed_at = Some(now);
        p.updated_at = now;
        p.closed_head = at.clone();
    }
}

fn bot(name: &str) -> Person {
    Person { name: name.into(), email: format!("{name}@users.noreply.github.com"), login: Some(name.into()) }
}

/// Next time after `t` at which a periodic check with `every` and `phase` fires.
fn next_tick(t: i64, every: i64, phase: i64) -> i64 {
    let k = (t - phase).div_euclid(every) + 1;
    phase + k * every
}

pub fn fnv(s: &str) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

pub fn version_key(v: &BTreeMap<String, String>) -> String {
    v.iter().map(|(k, v)| format!("{k}:{v}")).collect::<Vec<_>>().join(",")
}

pub fn rfc3339(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| d.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// `%ai`-style date as git-resource reports it.
fn git_date(t: i64) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] +0000");
    time::OffsetDateTime::from_unix_timestamp(t).ok().and_then(|d| d.format(&fmt).ok()).unwrap_or_default()
}

/// git-resource `in` metadata (assets/common.sh `git_metadata`), committer only when identical.
fn git_metadata(repo: &Repo, c: &Commit, branch: &str) -> Vec<(String, String)> {
    let mut md = vec![
        ("commit".to_string(), c.sha.clone()),
        ("author".to_string(), c.author.name.clone()),
        ("author_date".to_string(), git_date(c.author_date)),
    ];
    if c.author == c.committer && c.author_date == c.committer_date {
        md.push(("committer".into(), c.committer.name.clone()));
        md.push(("committer_date".into(), git_date(c.committer_date)));
    }
    if repo.head(branch) == Some(&c.sha) {
        md.push(("branch".into(), branch.into()));
    }
    let tags: Vec<&String> = repo.tags.iter().filter(|(_, s)| **s == c.sha).map(|(t, _)| t).collect();
    if !tags.is_empty() {
        md.push(("tags".into(), tags.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")));
    }
    let mut msg = c.message.clone();
    msg.truncate(10_240);
    md.push(("message".into(), msg));
    md.push(("url".into(), format!("https://github.com/{}/commit/{}", repo.full_name(), c.sha)));
    md
}

fn render_template(s: &str, vars: &HashMap<String, String>, build: BuildId) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find('}') else {
            out.push_str(&rest[start..]);
            return out;
        };
        let key = &rest[start + 1..start + end];
        let (name, short) = match key.strip_suffix(":short") {
            Some(k) => (k, true),
            None => (key, false),
        };
        let val = if name == "build" { build.to_string() } else { vars.get(name).cloned().unwrap_or_default() };
        if short {
            out.push_str(&val.chars().take(7).collect::<String>());
        } else {
            out.push_str(&val);
        }
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    out
}

/// cocogitto-style: `X.Y.Z` → rc of the next minor; `X.Y.Z-rc.N` → rc.N+1; final drops `-rc.N`.
fn bump_semver(current: &str, bump: SemverBump, is_initial: bool) -> String {
    let (base, rc) = match current.split_once("-rc.") {
        Some((b, n)) => (b.to_string(), n.parse::<u64>().ok()),
        None => (current.to_string(), None),
    };
    match bump {
        SemverBump::Final => base,
        SemverBump::Rc => match rc {
            Some(n) => format!("{base}-rc.{}", n + 1),
            None if is_initial => format!("{base}-rc.1"),
            None => {
                let parts: Vec<u64> = base.split('.').filter_map(|x| x.parse().ok()).collect();
                let (ma, mi) = (parts.first().copied().unwrap_or(0), parts.get(1).copied().unwrap_or(0));
                format!("{ma}.{}.0-rc.1", mi + 1)
            }
        },
    }
}

/// A readable rendering of the pipeline config, like `GET .../config` (`fly get-pipeline`).
fn pipeline_config_json(ps: &topology::PipelineSpec) -> serde_json::Value {
    use serde_json::json;
    let resources: Vec<_> = ps
        .resources
        .iter()
        .map(|(name, r)| {
            let source = match r {
                ResourceSpec::Git { repo, branch, paths, ignore_paths, disable_ci_skip, .. } => {
                    let mut s = json!({"uri": format!("git@github.com:{repo}.git"), "branch": branch});
                    if !paths.is_empty() {
                        s["paths"] = json!(paths);
                    }
                    if !ignore_paths.is_empty() {
                        s["ignore_paths"] = json!(ignore_paths);
                    }
                    if *disable_ci_skip {
                        s["disable_ci_skip"] = json!(true);
                    }
                    s
                }
                ResourceSpec::Cepler { repo, branch, environment, .. } => {
                    json!({"uri": format!("git@github.com:{repo}.git"), "branch": branch, "environment": environment, "config": "cepler/lana-bank.yml"})
                }
                ResourceSpec::Semver { initial } => json!({"driver": "git", "initial_version": initial, "file": "version", "branch": "version"}),
                ResourceSpec::RegistryImage { repository, tag } => json!({"repository": repository, "tag": tag}),
                ResourceSpec::GithubRelease { repo } => {
                    let (o, n) = repo.split_once('/').unwrap_or(("", repo));
                    json!({"owner": o, "repository": n})
                }
                ResourceSpec::PullRequest { repo, label } => json!({"repository": repo, "base_branch": "main", "labels": label.iter().collect::<Vec<_>>(), "states": ["MERGED"]}),
            };
            json!({"name": name, "type": r.type_name(), "source": source})
        })
        .collect();
    let jobs: Vec<_> = ps
        .jobs
        .iter()
        .map(|j| {
            let mut plan: Vec<serde_json::Value> = vec![];
            let gets: Vec<_> = j
                .inputs
                .iter()
                .map(|i| {
                    let mut g = json!({"get": i.get});
                    if let Some(r) = &i.resource {
                        g["resource"] = json!(r);
                    }
                    if i.trigger {
                        g["trigger"] = json!(true);
                    }
                    if !i.passed.is_empty() {
                        g["passed"] = json!(i.passed);
                    }
                    g
                })
                .collect();
            if !gets.is_empty() {
                plan.push(json!({"in_parallel": gets}));
            }
            let mut t = json!({"task": j.task.name, "file": format!("pipeline-tasks/ci/tasks/{}.yml", j.task.name)});
            if j.task.attempts > 1 {
                t["attempts"] = json!(j.task.attempts);
            }
            plan.push(t);
            for o in &j.outputs {
                let mut put = json!({"put": o.put});
                if let Some(r) = &o.resource {
                    put["resource"] = json!(r);
                }
                plan.push(put);
            }
            let mut job = json!({"name": j.name, "plan": plan});
            if j.serial {
                job["serial"] = json!(true);
            }
            if j.public {
                job["public"] = json!(true);
            }
            job
        })
        .collect();
    json!({"groups": [], "resources": resources, "jobs": jobs})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn semver_bumps() {
        assert_eq!(bump_semver("0.48.0", SemverBump::Rc, true), "0.48.0-rc.1");
        assert_eq!(bump_semver("0.48.0-rc.1", SemverBump::Rc, false), "0.48.0-rc.2");
        assert_eq!(bump_semver("0.48.0-rc.7", SemverBump::Final, false), "0.48.0");
        assert_eq!(bump_semver("0.48.0", SemverBump::Rc, false), "0.49.0-rc.1");
    }

    #[test]
    fn templates_render_keys_and_short_forms() {
        let vars = HashMap::from([("repo.ref".to_string(), "0123456789abcdef".to_string())]);
        assert_eq!(render_template("x-{repo.ref:short}-{build}-{missing.key}", &vars, 42), "x-0123456-42-");
    }

    #[test]
    fn ticks_are_periodic_and_strictly_after() {
        assert_eq!(next_tick(100, 60, 7), 127);
        assert_eq!(next_tick(127, 60, 7), 187);
    }
}
