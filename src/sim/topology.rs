//! The simulated CI topology, read from a YAML file: repositories, pipelines, resources, jobs, and
//! how each job behaves (durations, failures, what its puts create). Nothing about lana is in code;
//! the shipped layouts are `src/sim/topologies/*.yaml`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    pub concourse: ConcourseSpec,
    /// The repository whose commits are followed (`owner/name`); its branch is `tracked_branch`.
    pub tracked_repo: String,
    #[serde(default = "default_branch")]
    pub tracked_branch: String,
    pub repos: Vec<RepoSpec>,
    pub pipelines: Vec<PipelineSpec>,
    /// Optional human actions, e.g. merging the promote PR every few days.
    #[serde(default)]
    pub humans: Vec<HumanSpec>,
}

fn default_branch() -> String {
    "main".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConcourseSpec {
    pub team: String,
    #[serde(default = "default_concourse_version")]
    pub version: String,
    #[serde(default)]
    pub cluster_name: Option<String>,
    /// Local users `name: password` for the password grant.
    #[serde(default)]
    pub users: BTreeMap<String, String>,
    #[serde(default = "default_token_lifetime", with = "humantime_serde")]
    pub token_lifetime: Duration,
}

fn default_concourse_version() -> String {
    "8.2.5".into()
}
fn default_token_lifetime() -> Duration {
    Duration::from_secs(86_400)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoSpec {
    /// `owner/name`
    pub name: String,
    #[serde(default = "default_branch")]
    pub default_branch: String,
    #[serde(default)]
    pub private: bool,
    /// Files of the initial commit (the root of history).
    #[serde(default)]
    pub initial_files: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    pub name: String,
    #[serde(default)]
    pub public: bool,
    #[serde(default)]
    pub groups: Vec<String>,
    pub resources: BTreeMap<String, ResourceSpec>,
    /// Jobs in display order.
    pub jobs: Vec<JobSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ResourceSpec {
    /// concourse/git-resource on a branch: versions `{ref}` by the git-resource rules.
    Git {
        repo: String,
        #[serde(default = "default_branch")]
        branch: String,
        #[serde(default)]
        paths: Vec<String>,
        #[serde(default)]
        ignore_paths: Vec<String>,
        #[serde(default)]
        disable_ci_skip: bool,
        /// A webhook triggers a check within seconds of a push; otherwise `check_every`.
        #[serde(default)]
        webhook: bool,
        #[serde(default = "default_check_every", with = "humantime_serde")]
        check_every: Duration,
        #[serde(default)]
        public: bool,
    },
    /// cepler's resource (bodymindarts/cepler `src/concourse/check.rs`): a version
    /// `{trigger, environment}` when the state the environment would deploy differs from its
    /// recorded one. `paths` are the environment's `latest:` files; with `passed:` it deploys the
    /// upstream environment's *recorded* states (its `propagated:` files), one by one, oldest
    /// first; with `gates_branch:` only history up to the gate commit for the environment counts,
    /// and with no gate for it nothing is deployable. Resources naming the same environment share
    /// one recorded state (the `-out` resource of a put is a second resource on it).
    Cepler {
        repo: String,
        #[serde(default = "default_branch")]
        branch: String,
        environment: String,
        #[serde(default)]
        paths: Vec<String>,
        #[serde(default)]
        passed: Option<String>,
        #[serde(default)]
        propagated: Vec<String>,
        #[serde(default)]
        gates_branch: Option<String>,
        #[serde(default = "default_check_every", with = "humantime_serde")]
        check_every: Duration,
    },
    /// The semver resource (git driver); versions `{number}`, created by puts.
    Semver { initial: String },
    /// A container image; versions `{digest}`, created by puts.
    RegistryImage {
        repository: String,
        #[serde(default = "default_tag")]
        tag: String,
    },
    /// github-release; versions `{tag}`, created by puts.
    GithubRelease { repo: String },
    /// github-pr-resource watching merged PRs with a label; versions `{pr, commit, committed}`.
    PullRequest {
        repo: String,
        #[serde(default)]
        label: Option<String>,
    },
}

fn default_check_every() -> Duration {
    Duration::from_secs(60)
}
fn default_tag() -> String {
    "latest".into()
}

impl ResourceSpec {
    pub fn type_name(&self) -> &'static str {
        match self {
            ResourceSpec::Git { .. } => "git",
            ResourceSpec::Cepler { .. } => "cepler",
            ResourceSpec::Semver { .. } => "semver",
            ResourceSpec::RegistryImage { .. } => "registry-image",
            ResourceSpec::GithubRelease { .. } => "github-release",
            ResourceSpec::PullRequest { .. } => "github-pr",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    pub name: String,
    #[serde(default)]
    pub serial: bool,
    #[serde(default = "yes")]
    pub public: bool,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub inputs: Vec<InputSpec>,
    /// The task that does the work, for logs and in-build retries.
    #[serde(default)]
    pub task: TaskSpec,
    #[serde(default)]
    pub outputs: Vec<OutputSpec>,
    pub duration: DurationSpec,
    /// Probability that a build fails (after its retries).
    #[serde(default)]
    pub failure_rate: f64,
    /// Probability that a build errors (infrastructure), on top of `failure_rate`.
    #[serde(default)]
    pub error_rate: f64,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// The get step name.
    pub get: String,
    /// The resource, when it differs from the step name.
    #[serde(default)]
    pub resource: Option<String>,
    #[serde(default)]
    pub trigger: bool,
    #[serde(default)]
    pub passed: Vec<String>,
    /// A loose input: it does not carry the commits the build delivers (e.g. a `lana-repo` input
    /// read at latest by a deploy job, or the semver `version` read to compute the next one).
    /// Affects only the simulator's ground truth, never what the API shows.
    #[serde(default)]
    pub loose: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    #[serde(default = "default_task")]
    pub name: String,
    /// `attempts:` on the task step.
    #[serde(default = "one")]
    pub attempts: u32,
    /// Probability that an attempt other than the last fails and is retried.
    #[serde(default)]
    pub flaky_rate: f64,
}

impl Default for TaskSpec {
    fn default() -> Self {
        TaskSpec { name: default_task(), attempts: 1, flaky_rate: 0.0 }
    }
}

fn default_task() -> String {
    "run".into()
}
fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DurationSpec {
    #[serde(with = "humantime_serde")]
    pub median: Duration,
    /// 90th percentile; a log-normal is fitted through median and p90. Defaults to 1.3 × median.
    #[serde(default, with = "humantime_serde")]
    pub p90: Option<Duration>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// The put step name.
    pub put: String,
    #[serde(default)]
    pub resource: Option<String>,
    /// `effect: image` or `effect: { semver: { bump: rc } }` (a one-key map, not a YAML tag).
    #[serde(with = "serde_norway::with::singleton_map_recursive")]
    pub effect: Effect,
}

/// What a put creates. Templates may use `{step.key}` (a key of an input or earlier output
/// version of this build, e.g. `{latest-image.digest}`, `{repo.ref}`), `{step.key:short}` (7
/// characters) and `{build}` (the build's global id).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Effect {
    /// A new image digest `{digest}`.
    Image,
    /// Bump the semver read by the input `from` (default: the put's resource): `rc` or `final`.
    Semver {
        bump: SemverBump,
        #[serde(default)]
        from: Option<String>,
    },
    /// Tag the commit of input `of` (a git input): the output is the *same* version, so Concourse
    /// drops that input from `/builds/:id/resources`.
    Tag { of: String, name: String },
    /// Commit straight onto a branch of a repository; output `{ref}` of the new commit.
    Push {
        repo: String,
        #[serde(default = "default_branch")]
        branch: String,
        message: String,
        files: Vec<String>,
    },
    /// Commit onto a bot branch and open a pull request to `base` (replacing any open PR from that
    /// branch); it is squash-merged after `automerge_after` if set.
    PullRequest {
        repo: String,
        head: String,
        #[serde(default = "default_branch")]
        base: String,
        title: String,
        message: String,
        files: Vec<String>,
        #[serde(default)]
        labels: Vec<String>,
        #[serde(default)]
        draft: bool,
        #[serde(default, with = "humantime_serde")]
        automerge_after: Option<Duration>,
    },
    /// cepler's put: records the deployed state; output `{trigger, environment}`.
    CeplerRecord { of: String },
    /// A GitHub release named by a template.
    Release { tag: String },
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SemverBump {
    Rc,
    Final,
}

/// A person who acts on a schedule: merges the newest open PR with a label.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HumanSpec {
    pub merge_pr_labelled: String,
    pub repo: String,
    /// Mean time between merges.
    #[serde(with = "humantime_serde")]
    pub every: Duration,
    /// The squash commit's message; `{title}` is the PR title.
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("topology {origin}: {source}")]
    Parse { origin: String, source: serde_norway::Error },
    #[error("topology {origin}: {path}: {msg}")]
    Invalid { origin: String, path: String, msg: String },
    #[error("topology {origin}: {source}")]
    Io { origin: String, source: std::io::Error },
}

/// The built-in lana layout of 2026-03 (three pipelines, galoy-private-charts hop).
pub const LANA: &str = include_str!("topologies/lana.yaml");
/// The newer layout: two repositories, testflight inside the lana-bank pipeline.
pub const LANA_TWO_REPOS: &str = include_str!("topologies/lana-two-repos.yaml");

impl Topology {
    pub fn builtin(name: &str) -> Option<Topology> {
        let text = match name {
            "lana" => LANA,
            "lana-two-repos" => LANA_TWO_REPOS,
            _ => return None,
        };
        // The built-ins are tested to parse; a failure here is a build defect.
        Some(Topology::parse(text, name).expect("built-in topology parses"))
    }

    /// A built-in name or a path to a YAML file.
    pub fn load(name_or_path: &str) -> Result<Topology, TopologyError> {
        if let Some(t) = Topology::builtin(name_or_path) {
            return Ok(t);
        }
        let text = std::fs::read_to_string(name_or_path)
            .map_err(|source| TopologyError::Io { origin: name_or_path.into(), source })?;
        Topology::parse(&text, name_or_path)
    }

    pub fn parse(text: &str, origin: &str) -> Result<Topology, TopologyError> {
        let t: Topology =
            serde_norway::from_str(text).map_err(|source| TopologyError::Parse { origin: origin.into(), source })?;
        t.validate(origin)?;
        Ok(t)
    }

    fn validate(&self, origin: &str) -> Result<(), TopologyError> {
        let bad = |path: String, msg: String| TopologyError::Invalid { origin: origin.into(), path, msg };
        let repos: Vec<&str> = self.repos.iter().map(|r| r.name.as_str()).collect();
        let known_repo = |r: &str| repos.contains(&r);
        if !known_repo(&self.tracked_repo) {
            return Err(bad("tracked_repo".into(), format!("unknown repo {:?}", self.tracked_repo)));
        }
        for p in &self.pipelines {
            for (rn, r) in &p.resources {
                let path = format!("pipelines.{}.resources.{rn}", p.name);
                match r {
                    ResourceSpec::Git { repo, paths, ignore_paths, .. } => {
                        if !known_repo(repo) {
                            return Err(bad(path, format!("unknown repo {repo:?}")));
                        }
                        crate::core::pathspec::GitPathFilter::new(paths, ignore_paths)
                            .map_err(|e| bad(path, e.to_string()))?;
                    }
                    ResourceSpec::Cepler { repo, .. }
                    | ResourceSpec::GithubRelease { repo }
                    | ResourceSpec::PullRequest { repo, .. }
                        if !known_repo(repo) =>
                    {
                        return Err(bad(path, format!("unknown repo {repo:?}")));
                    }
                    _ => {}
                }
            }
            for (rn, r) in &p.resources {
                if let ResourceSpec::Cepler { passed: Some(up), .. } = r {
                    let known = self
                        .pipelines
                        .iter()
                        .flat_map(|q| q.resources.values())
                        .any(|o| matches!(o, ResourceSpec::Cepler { environment, .. } if environment == up));
                    if !known {
                        let path = format!("pipelines.{}.resources.{rn}.passed", p.name);
                        return Err(bad(path, format!("no cepler resource deploys environment {up:?}")));
                    }
                }
            }
            for (ji, j) in p.jobs.iter().enumerate() {
                for (ii, i) in j.inputs.iter().enumerate() {
                    let path = format!("pipelines.{}.jobs[{ji}].inputs[{ii}]", p.name);
                    let res = i.resource.as_deref().unwrap_or(&i.get);
                    if !p.resources.contains_key(res) {
                        return Err(bad(path, format!("unknown resource {res:?}")));
                    }
                    for up in &i.passed {
                        if !p.jobs.iter().any(|o| &o.name == up) {
                            return Err(bad(path.clone(), format!("passed: unknown job {up:?}")));
                        }
                    }
                }
                for (oi, o) in j.outputs.iter().enumerate() {
                    let path = format!("pipelines.{}.jobs[{ji}].outputs[{oi}]", p.name);
                    let res = o.resource.as_deref().unwrap_or(&o.put);
                    if !p.resources.contains_key(res) {
                        return Err(bad(path, format!("unknown resource {res:?}")));
                    }
                    match &o.effect {
                        Effect::Push { repo, .. } | Effect::PullRequest { repo, .. } if !known_repo(repo) => {
                            return Err(bad(path, format!("unknown repo {repo:?}")));
                        }
                        _ => {}
                    }
                }
                if !(0.0..=1.0).contains(&j.failure_rate) || !(0.0..=1.0).contains(&j.task.flaky_rate) {
                    return Err(bad(format!("pipelines.{}.jobs[{ji}]", p.name), "rates must be within 0..=1".into()));
                }
            }
        }
        Ok(())
    }
}
