//! The configuration file: which repository and branch to follow, where Concourse is, and the
//! stages a commit goes through (so the same file also documents the pipeline).
//!
//! Loading happens in two phases:
//! 1. **Decode.** The YAML is read into raw structs with `deny_unknown_fields`. A syntax error
//!    or an unknown key stops here, as one problem with its path (that is what serde reports).
//!    Before that, keys that would hold a secret in the file body (`token:`, `password:`) are
//!    taken out and reported, without their values.
//! 2. **Validate.** Every semantic problem (missing or empty fields, bad durations, pathspecs git
//!    would reject, unknown resources and stages, auth that is neither a token nor a user and
//!    password, unreadable secret files, ...) is collected, each with its path, and all of them
//!    are reported at once.
//!
//! Secrets are never read from the file: only from environment variables (names configurable,
//! defaults `GITHUB_TOKEN`, `CONCOURSE_TOKEN`, `CONCOURSE_PASSWORD`) or files (`*_file`, trailing
//! newline trimmed). Reading the environment is injected, so tests pass a closure and `main`
//! passes `|k| std::env::var(k).ok()`.
//!
//! `examples/lana.yaml` is the reference; the README has the schema.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use crate::core::classify::{Classifier, SourceKind, TrackedResource};
use crate::core::journey::{Bridge, CoreConfig, JobDef, LeadTimeFrom, StageDef};
use crate::core::pathspec::{GitPathFilter, PathspecError};
use crate::sources::{ConcourseAuth, ConcourseConfig, GithubConfig, Secret, WatchedPipeline};

// ------------------------------------------------------------------ defaults

/// Where `/metrics` is served unless `listen` says otherwise. The Prometheus default-port
/// registry (9100–9999) is fully allocated; 9853 is ours by convention, override with `listen`.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:9853";
pub const DEFAULT_GITHUB_API: &str = "https://api.github.com";
pub const DEFAULT_BRANCH: &str = "main";
pub const DEFAULT_GITHUB_TOKEN_ENV: &str = "GITHUB_TOKEN";
pub const DEFAULT_CONCOURSE_TOKEN_ENV: &str = "CONCOURSE_TOKEN";
pub const DEFAULT_CONCOURSE_PASSWORD_ENV: &str = "CONCOURSE_PASSWORD";
pub const DEFAULT_STATE_PATH: &str = "deploy-journey.db";
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(30);
/// GitHub's branch poll when push webhooks are configured: a safety net for a lost delivery.
pub const DEFAULT_WEBHOOK_SAFETY_POLL: Duration = Duration::from_secs(300);
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(90 * 86_400);
pub const DEFAULT_NOT_PICKED_UP_AFTER: Duration = Duration::from_secs(300);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_INITIAL_COMMITS: usize = 300;
pub const MAX_INITIAL_COMMITS: usize = 2000;

const SECOND: Duration = Duration::from_secs(1);
const DAY: Duration = Duration::from_secs(86_400);
/// `poll_interval` and `repository.poll_interval`: at least a second (the APIs' rate limits),
/// at most a day.
pub const POLL_INTERVAL_RANGE: (Duration, Duration) = (SECOND, DAY);
/// HTTP timeouts.
pub const TIMEOUT_RANGE: (Duration, Duration) = (SECOND, Duration::from_secs(3600));
/// `not_picked_up_after` and `stuck_after`.
pub const THRESHOLD_RANGE: (Duration, Duration) = (SECOND, Duration::from_secs(30 * 86_400));
/// `retention`: at least a day (journeys take hours), at most ten years, far from where
/// `now - retention` in Unix seconds could wrap.
pub const RETENTION_RANGE: (Duration, Duration) = (DAY, Duration::from_secs(3650 * 86_400));

// ------------------------------------------------------------------ errors

/// One thing wrong with the file, at `path` (`stages[3].jobs`, `resources.repo.paths[2]`; empty
/// for the whole file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl Problem {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem { path: path.into(), message: message.into() }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() { f.write_str(&self.message) } else { write!(f, "{}: {}", self.path, self.message) }
    }
}

/// Everything wrong with a configuration file; displays one problem per line, each prefixed with
/// the file name. Never contains a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub origin: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}: {p}", self.origin)?;
        }
        Ok(())
    }
}

impl ConfigError {
    /// The problems as `path: message` lines, without the file name.
    pub fn lines(&self) -> Vec<String> {
        self.problems.iter().map(|p| p.to_string()).collect()
    }
}

// ------------------------------------------------------------------ the validated configuration

/// Where a secret came from (shown by `check-config`; the secret itself never is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    Env(String),
    File(PathBuf),
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Env(name) => write!(f, "env {name}"),
            SecretSource::File(p) => write!(f, "file {}", p.display()),
        }
    }
}

/// The tracked repository on GitHub.
#[derive(Debug, Clone)]
pub struct Repository {
    pub owner: String,
    pub name: String,
    pub branch: String,
    /// API base without a trailing `/`.
    pub api_url: String,
    /// `None`: anonymous (60 requests an hour).
    pub token: Option<Secret>,
    pub token_source: Option<SecretSource>,
    pub timeout: Duration,
    pub initial_commits: usize,
    /// Push webhooks are accepted only when a secret is configured.
    pub webhook_secret: Option<Secret>,
    /// `repository.poll_interval` as written; see [`Config::github_poll_interval`].
    pub poll_interval: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct Concourse {
    /// Base URL without a trailing `/`.
    pub url: String,
    pub team: String,
    pub auth: ConcourseAuth,
    pub auth_source: Option<SecretSource>,
    pub timeout: Duration,
}

/// A tracked git resource on the tracked branch.
#[derive(Debug, Clone)]
pub struct Resource {
    pub name: String,
    pub filter: GitPathFilter,
    pub disable_ci_skip: bool,
    pub kind: SourceKind,
    /// The Concourse pipeline that defines it (for `resource_differences`).
    pub pipeline: String,
    /// Other get/put step names that are versions of this resource.
    pub aliases: Vec<String>,
}

/// A loaded, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from (for messages).
    pub origin: String,
    pub repository: Repository,
    pub concourse: Concourse,
    pub listen: SocketAddr,
    /// TLS and basic auth for the HTTP endpoints (exporter-toolkit format); `--web.config.file` overrides.
    pub web_config_file: Option<PathBuf>,
    pub poll_interval: Duration,
    pub state_path: PathBuf,
    pub retention: Duration,
    pub lead_time_from: LeadTimeFrom,
    pub not_picked_up_after: Duration,
    /// In file order (classification reports resources in this order).
    pub resources: Vec<Resource>,
    /// In file order; `after` holds indices of earlier stages.
    pub stages: Vec<StageDef>,
    /// `traces:` (OTLP export of journey traces); the standard `OTEL_*` variables win over it.
    pub traces: Traces,
    /// Credentials the file names but the environment does not hold, when loaded with
    /// [`load_lazy`]: an error only for commands that call an API ([`Config::require_credentials`]).
    pub missing_secrets: Vec<Problem>,
    /// `server:` limits of the HTTP server (timeouts, connections).
    pub server: crate::server::ServerLimits,
}

/// The `traces:` section. Traces are off unless it or `OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT`
/// gives an endpoint; see `sinks::traces::TraceSinkConfig::resolve` for the precedence.
#[derive(Debug, Clone, Default)]
pub struct Traces {
    /// Base URL, like `OTEL_EXPORTER_OTLP_ENDPOINT` (`/v1/traces` is appended for HTTP).
    pub endpoint: Option<String>,
    /// `http/protobuf` or `grpc`.
    pub protocol: Option<String>,
    /// `k=v,k2=v2` (percent-encoded values), from `headers_file` or `headers_env`.
    pub headers: Option<Secret>,
    pub service_name: Option<String>,
    pub resource_attributes: Vec<(String, String)>,
    /// Export the exporter's own work (poll cycles, requests) as traces too.
    pub self_instrumentation: bool,
}

/// Read and validate a configuration file. `env` looks up environment variables.
pub fn load(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    load_with(path, env, false)
}

/// Like [`load`], but a credential whose environment variable is unset or empty is not a
/// problem: it is recorded in [`Config::missing_secrets`], so commands that call no API
/// (`classify`, `check-config` offline, `watch --from`) run on a machine without secrets.
pub fn load_lazy(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    load_with(path, env, true)
}

/// The file, read with a bound (`/dev/zero` is an error, not gigabytes), then [`parse_with`].
fn load_with(path: &Path, env: &dyn Fn(&str) -> Option<String>, lazy: bool) -> Result<Config, ConfigError> {
    let origin = path.display().to_string();
    let text = read_text_bounded(path, MAX_CONFIG_FILE, "a configuration file").map_err(|e| ConfigError {
        origin: origin.clone(),
        problems: vec![Problem::new("", format!("cannot read: {e}"))],
    })?;
    parse_with(&text, &origin, env, lazy)
}

/// Validate a configuration given as text; `origin` names it in messages.
pub fn parse(text: &str, origin: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    parse_with(text, origin, env, false)
}

fn parse_with(
    text: &str,
    origin: &str,
    env: &dyn Fn(&str) -> Option<String>,
    lazy_secrets: bool,
) -> Result<Config, ConfigError> {
    let err = |problems| ConfigError { origin: origin.to_string(), problems };
    let (raw, mut problems) = decode(text).map_err(err)?;
    let mut v = Validator { problems: vec![], env, lazy_secrets, missing: vec![] };
    let cfg = v.config(raw, origin);
    problems.append(&mut v.problems);
    match cfg {
        Some(mut cfg) if problems.is_empty() => {
            cfg.missing_secrets = v.missing;
            Ok(cfg)
        }
        _ => Err(err(problems)),
    }
}

impl Config {
    /// Fails, naming each variable, when a credential the file asks for is missing (see
    /// [`load_lazy`]). Commands call it before they call an API.
    pub fn require_credentials(&self) -> Result<(), ConfigError> {
        if self.missing_secrets.is_empty() {
            return Ok(());
        }
        Err(ConfigError { origin: self.origin.clone(), problems: self.missing_secrets.clone() })
    }

    /// The journey core's configuration.
    pub fn core(&self) -> CoreConfig {
        let classifier = Classifier::new(
            self.resources
                .iter()
                .map(|r| TrackedResource {
                    name: r.name.clone(),
                    filter: r.filter.clone(),
                    disable_ci_skip: r.disable_ci_skip,
                    kind: r.kind,
                })
                .collect(),
        );
        let step_resources =
            self.resources.iter().flat_map(|r| r.aliases.iter().map(|a| (a.clone(), r.name.clone()))).collect();
        CoreConfig {
            classifier,
            stages: self.stages.clone(),
            lead_time_from: self.lead_time_from,
            not_picked_up_after: self.not_picked_up_after.as_secs() as i64,
            step_resources,
        }
    }

    /// How often GitHub's branch is polled: `repository.poll_interval` when set; else, with a
    /// push webhook configured (pushes wake the loop at once), a slow safety poll
    /// ([`DEFAULT_WEBHOOK_SAFETY_POLL`], never faster than `poll_interval`); else `poll_interval`.
    pub fn github_poll_interval(&self) -> Duration {
        match (self.repository.poll_interval, &self.repository.webhook_secret) {
            (Some(d), _) => d,
            (None, Some(_)) => DEFAULT_WEBHOOK_SAFETY_POLL.max(self.poll_interval),
            (None, None) => self.poll_interval,
        }
    }

    pub fn github(&self) -> GithubConfig {
        let r = &self.repository;
        GithubConfig {
            api_url: r.api_url.clone(),
            owner: r.owner.clone(),
            repo: r.name.clone(),
            branch: r.branch.clone(),
            token: r.token.clone(),
            timeout: r.timeout,
            initial_commits: r.initial_commits,
        }
    }

    /// One [`WatchedPipeline`] per pipeline named in the stages (first-appearance order), with
    /// the union of their jobs and the inputs whose commit messages `message_contains` needs.
    pub fn concourse(&self) -> ConcourseConfig {
        let mut pipelines: Vec<WatchedPipeline> = vec![];
        for st in &self.stages {
            let i = match pipelines.iter().position(|p| p.name == st.pipeline) {
                Some(i) => i,
                None => {
                    pipelines.push(WatchedPipeline { name: st.pipeline.clone(), jobs: vec![], message_inputs: vec![] });
                    pipelines.len() - 1
                }
            };
            let p = &mut pipelines[i];
            for j in &st.jobs {
                push_unique(&mut p.jobs, &j.name);
            }
            for b in &st.bridges {
                if let Bridge::MessageContains { input, .. } = b {
                    push_unique(&mut p.message_inputs, input);
                }
            }
        }
        ConcourseConfig {
            url: self.concourse.url.clone(),
            team: self.concourse.team.clone(),
            auth: self.concourse.auth.clone(),
            pipelines,
            timeout: self.concourse.timeout,
        }
    }

    /// Pipelines named in the stages, in first-appearance order.
    pub fn pipelines(&self) -> Vec<String> {
        let mut v = vec![];
        for st in &self.stages {
            push_unique(&mut v, &st.pipeline);
        }
        v
    }

    /// Environments, in stage order.
    pub fn environments(&self) -> Vec<String> {
        let mut v = vec![];
        for st in &self.stages {
            if let Some(e) = &st.environment {
                push_unique(&mut v, e);
            }
        }
        v
    }
}

fn push_unique(v: &mut Vec<String>, s: &str) {
    if !v.iter().any(|x| x == s) {
        v.push(s.to_string());
    }
}

/// A secret file holds one token or password; more than this is a wrong path (a log, a device).
const MAX_SECRET_FILE: u64 = 64 * 1024;

/// Read a secret file, bounded: `/dev/zero` or a huge file must not exhaust memory.
fn read_secret_file(p: &Path) -> std::io::Result<String> {
    read_text_bounded(p, MAX_SECRET_FILE, "a secret file, which holds one token or password")
}

/// The largest configuration or web configuration file read: a real one is a few KiB; more is
/// a wrong path (a log, `/dev/zero`) that must not exhaust memory.
pub const MAX_CONFIG_FILE: u64 = 1024 * 1024;

/// Read a text file of at most `max` bytes; `what` names what it should be in the error.
pub fn read_text_bounded(p: &Path, max: u64, what: &str) -> std::io::Result<String> {
    let bytes = read_bounded(p, max, what)?;
    String::from_utf8(bytes).map_err(|_| std::io::Error::other("not UTF-8 text"))
}

/// Read a file of at most `max` bytes (PEM files, configuration files).
pub fn read_bounded(p: &Path, max: u64, what: &str) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = vec![];
    std::fs::File::open(p)?.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(std::io::Error::other(format!("larger than {} KiB, too large for {what}", max / 1024)));
    }
    Ok(bytes)
}

/// The deepest nesting (flow or block) accepted in a YAML file. serde_norway reads every event
/// of the document before its own recursion limit applies, and libyaml's scanner is quadratic in
/// flow depth: a 100k-deep `[[[…` took 83 s of CPU to be refused.
pub const MAX_YAML_NESTING: usize = 64;

/// Prepare YAML text for the parser: a UTF-8 byte order mark (which editors on Windows write) is
/// dropped, and nesting deeper than [`MAX_YAML_NESTING`] is refused, naming its line, before the
/// full parse spends seconds on it.
pub fn yaml_prelude(text: &str) -> Result<&str, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    match yaml_too_deep(text, MAX_YAML_NESTING) {
        Some(line) => Err(format!("nesting deeper than {MAX_YAML_NESTING} levels at line {line}")),
        None => Ok(text),
    }
}

/// The line where the YAML in `text` first nests deeper than `max` levels, by the event stream of libyaml,
/// the parser serde_norway itself runs: a hand-written scan of quotes and comments can be fooled
/// into skipping the brackets the parser sees. Events are pulled one at a time and the pull stops
/// at the first level too deep, so the cost is bounded by `max`. A syntax error ends the scan
/// (None): the full parse reports it with its own words.
fn yaml_too_deep(text: &str, max: usize) -> Option<u64> {
    use std::mem::MaybeUninit;
    use unsafe_libyaml_norway as unsafe_sys;
    let mut parser = MaybeUninit::<unsafe_sys::yaml_parser_t>::uninit();
    let p = parser.as_mut_ptr();
    // SAFETY: `p` points to storage that stays in place (and is not moved) until
    // `yaml_parser_delete`; the input `text` outlives the parser; each event is deleted after its
    // type and mark are copied out; this is the sequence serde_norway's own parser wrapper runs.
    unsafe {
        if unsafe_sys::yaml_parser_initialize(p).fail {
            return None;
        }
        unsafe_sys::yaml_parser_set_encoding(p, unsafe_sys::YAML_UTF8_ENCODING);
        unsafe_sys::yaml_parser_set_input_string(p, text.as_ptr(), text.len() as u64);
        let mut depth = 0usize;
        let mut found = None;
        loop {
            let mut event = MaybeUninit::<unsafe_sys::yaml_event_t>::uninit();
            let e = event.as_mut_ptr();
            if unsafe_sys::yaml_parser_parse(p, e).fail {
                break;
            }
            let (kind, mark) = ((*e).type_, (*e).start_mark);
            unsafe_sys::yaml_event_delete(e);
            match kind {
                unsafe_sys::YAML_SEQUENCE_START_EVENT | unsafe_sys::YAML_MAPPING_START_EVENT => {
                    depth += 1;
                    if depth > max {
                        found = Some(mark.line + 1);
                        break;
                    }
                }
                unsafe_sys::YAML_SEQUENCE_END_EVENT | unsafe_sys::YAML_MAPPING_END_EVENT => {
                    depth = depth.saturating_sub(1)
                }
                unsafe_sys::YAML_STREAM_END_EVENT => break,
                _ => {}
            }
        }
        unsafe_sys::yaml_parser_delete(p);
        found
    }
}

/// Why `name` is not a valid branch name, by the rules of `git check-ref-format --branch`
/// (`refs/heads/<name>` must be a valid ref name, and a branch does not start with `-`).
pub fn branch_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("is empty");
    }
    if name.starts_with('-') {
        return Some("starts with '-'");
    }
    if name == "HEAD" {
        return Some("is 'HEAD'");
    }
    if let Some(c) = name.chars().find(|c| c.is_ascii_control() || " ~^:?*[\\".contains(*c)) {
        return Some(match c {
            ' ' => "contains a space",
            '~' | '^' | ':' => "contains '~', '^' or ':'",
            '?' | '*' | '[' => "contains '?', '*' or '['",
            '\\' => "contains a backslash",
            _ => "contains a control character",
        });
    }
    if name.contains("..") {
        return Some("contains '..'");
    }
    if name.contains("@{") {
        return Some("contains '@{'");
    }
    if name.starts_with('/') || name.ends_with('/') || name.contains("//") {
        return Some("begins or ends with '/', or contains '//'");
    }
    if name.ends_with('.') {
        return Some("ends with '.'");
    }
    for component in name.split('/') {
        if component.starts_with('.') {
            return Some("has a part that begins with '.'");
        }
        if component.ends_with(".lock") {
            return Some("has a part that ends with '.lock'");
        }
    }
    None
}

// ------------------------------------------------------------------ raw file structure

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping of settings (repository, concourse, resources, stages, ...)")]
struct RawConfig {
    repository: Option<RawRepository>,
    concourse: Option<RawConcourse>,
    listen: Option<String>,
    web_config_file: Option<String>,
    poll_interval: Option<String>,
    state_path: Option<String>,
    retention: Option<String>,
    lead_time_from: Option<String>,
    not_picked_up_after: Option<String>,
    resources: Option<Ordered<RawResource>>,
    stages: Option<Vec<RawStage>>,
    traces: Option<RawTraces>,
    server: Option<RawServer>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping: header_read_timeout, request_timeout, max_connections")]
struct RawServer {
    header_read_timeout: Option<String>,
    request_timeout: Option<String>,
    max_connections: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping: endpoint, protocol, headers_file or headers_env, service_name, resource_attributes, self_instrumentation"
)]
struct RawTraces {
    endpoint: Option<String>,
    protocol: Option<String>,
    headers_file: Option<String>,
    headers_env: Option<String>,
    service_name: Option<String>,
    resource_attributes: Option<BTreeMap<String, String>>,
    self_instrumentation: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping: github, branch, api_url, token_file or token_env, poll_interval, ..."
)]
struct RawRepository {
    github: Option<String>,
    branch: Option<String>,
    api_url: Option<String>,
    token_file: Option<String>,
    token_env: Option<String>,
    timeout: Option<String>,
    initial_commits: Option<usize>,
    /// The shared secret of a GitHub push webhook (`POST /webhooks/github`).
    webhook_secret_file: Option<String>,
    webhook_secret_env: Option<String>,
    /// How often the branch is polled (GitHub only; Concourse keeps `poll_interval`).
    poll_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping: url, team, auth")]
struct RawConcourse {
    url: Option<String>,
    team: Option<String>,
    auth: Option<RawAuth>,
    timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping: token_file/token_env, or username + password_file/password_env")]
struct RawAuth {
    token_file: Option<String>,
    token_env: Option<String>,
    username: Option<String>,
    password_file: Option<String>,
    password_env: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping: paths, ignore_paths, disable_ci_skip, kind, pipeline, aliases")]
struct RawResource {
    #[serde(default)]
    paths: Vec<String>,
    #[serde(default)]
    ignore_paths: Vec<String>,
    #[serde(default)]
    disable_ci_skip: bool,
    kind: Option<String>,
    pipeline: Option<String>,
    #[serde(default)]
    aliases: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a stage: a mapping with name, pipeline, jobs, ...")]
struct RawStage {
    name: Option<String>,
    pipeline: Option<String>,
    #[serde(default)]
    jobs: Vec<RawJob>,
    git: Option<Vec<String>>,
    after: Option<Vec<String>>,
    inputs: Option<Vec<String>>,
    #[serde(default, with = "serde_norway::with::singleton_map_recursive")]
    bridges: Vec<RawBridge>,
    fallback: Option<RawFallback>,
    environment: Option<String>,
    stuck_after: Option<String>,
    carries_passive: Option<bool>,
}

/// A job: its name, or `{ name, git }`.
#[derive(Debug)]
enum RawJob {
    Name(String),
    Full(RawJobFull),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping: name, git")]
struct RawJobFull {
    name: Option<String>,
    git: Option<Vec<String>>,
}

impl<'de> Deserialize<'de> for RawJob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawJob;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a job name or { name, git }")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<RawJob, E> {
                Ok(RawJob::Name(s.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<RawJob, A::Error> {
                RawJobFull::deserialize(de::value::MapAccessDeserializer::new(m)).map(RawJob::Full)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum RawBridge {
    MessageContains { input: Option<String>, output: Option<String>, key: Option<String> },
    Equals { input: Option<String>, input_key: Option<String>, output: Option<String>, key: Option<String> },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping: git_input")]
struct RawFallback {
    git_input: Option<String>,
}

/// A YAML mapping whose order matters.
#[derive(Debug)]
struct Ordered<T>(Vec<(String, T)>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Ordered<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Ordered<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Ordered<T>, A::Error> {
                let mut v: Vec<(String, T)> = vec![];
                while let Some(k) = m.next_key::<String>()? {
                    if v.iter().any(|(x, _)| *x == k) {
                        return Err(de::Error::custom(format!("duplicate key {k:?}")));
                    }
                    let val = m.next_value()?;
                    v.push((k, val));
                }
                Ok(Ordered(v))
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

// ------------------------------------------------------------------ phase 1: decode

/// Keys that would put a secret into the file body, and what to use instead.
fn secret_key_hint(parent: &str, key: &str) -> Option<String> {
    let hint = match (parent, key) {
        ("repository", "token") => format!("use token_file or token_env (default {DEFAULT_GITHUB_TOKEN_ENV})"),
        ("concourse" | "concourse.auth", "token") => {
            format!("use concourse.auth.token_file or concourse.auth.token_env (e.g. {DEFAULT_CONCOURSE_TOKEN_ENV})")
        }
        ("concourse" | "concourse.auth", "password") => format!(
            "use concourse.auth.password_file or concourse.auth.password_env (default {DEFAULT_CONCOURSE_PASSWORD_ENV})"
        ),
        // Resource names are the user's; anything else named like a secret is one.
        ("resources", _) => return None,
        (_, "token" | "password" | "secret" | "api_key") => {
            "see repository.token_file/token_env and concourse.auth for where credentials come from".to_string()
        }
        _ => return None,
    };
    Some(format!("secrets are not read from the config file; {hint}"))
}

/// Take keys that would hold a secret out of the document, reporting each (never its value).
fn strip_secrets(v: &mut serde_norway::Value, path: &str, problems: &mut Vec<Problem>) {
    use serde_norway::Value;
    match v {
        Value::Mapping(m) => {
            let keys: Vec<Value> = m.keys().cloned().collect();
            for k in keys {
                let Some(name) = k.as_str().map(str::to_string) else { continue };
                let child = if path.is_empty() { name.clone() } else { format!("{path}.{name}") };
                if let Some(hint) = secret_key_hint(path, &name) {
                    m.remove(&k);
                    problems.push(Problem::new(child, hint));
                } else if let Some(val) = m.get_mut(&k) {
                    strip_secrets(val, &child, problems);
                }
            }
        }
        Value::Sequence(s) => {
            for (i, x) in s.iter_mut().enumerate() {
                strip_secrets(x, &format!("{path}[{i}]"), problems);
            }
        }
        Value::Tagged(t) => strip_secrets(&mut t.value, path, problems),
        _ => {}
    }
}

/// serde_norway's `path: message at line L column C` as a problem.
fn yaml_problem(e: &serde_norway::Error, with_location: bool) -> Problem {
    let mut text = e.to_string();
    // Decoding errors end with their location; syntax errors name theirs inside the message.
    let loc = e.location().filter(|l| text.ends_with(&format!(" at line {} column {}", l.line(), l.column())));
    if let Some(l) = &loc {
        text.truncate(text.len() - format!(" at line {} column {}", l.line(), l.column()).len());
    }
    let is_path = |p: &str| !p.is_empty() && p.chars().all(|c| c.is_alphanumeric() || "_-.[]?/*".contains(c));
    let (path, msg) = match text.split_once(": ") {
        Some((p, m)) if is_path(p) => (p.to_string(), m.to_string()),
        _ => (String::new(), text.clone()),
    };
    let msg = match (&loc, with_location) {
        (Some(l), true) => format!("{msg} (line {}, column {})", l.line(), l.column()),
        _ => msg,
    };
    Problem::new(path, msg)
}

/// Phase 1. Err: the file could not be decoded (syntax, wrong type); Ok carries problems found
/// on the way (secrets in the file body, unknown keys), which the validation of the rest adds
/// to, so one run reports every problem.
fn decode(text: &str) -> Result<(RawConfig, Vec<Problem>), Vec<Problem>> {
    let text = yaml_prelude(text).map_err(|e| vec![Problem::new("", e)])?;
    let mut value: serde_norway::Value = serde_norway::from_str(text).map_err(|e| vec![yaml_problem(&e, true)])?;
    if value.is_null() {
        return Ok((RawConfig::default(), vec![]));
    }
    let mut problems = vec![];
    strip_secrets(&mut value, "", &mut problems);
    // While the document is the file as written, errors carry its line numbers.
    let mut as_written = problems.is_empty();
    // An unknown key is reported and taken out, and decoding goes on, so a typo in one section
    // does not hide the problems of the others. Any other decoding error ends it.
    for _ in 0..=MAX_UNKNOWN_KEYS {
        let decoded = if as_written {
            serde_norway::from_str::<RawConfig>(text).map_err(|e| yaml_problem(&e, true))
        } else {
            serde_norway::to_string(&value)
                .map_err(|e| Problem::new("", e.to_string()))
                .and_then(|t| serde_norway::from_str::<RawConfig>(&t).map_err(|e| yaml_problem(&e, false)))
        };
        match decoded {
            Ok(raw) => return Ok((raw, problems)),
            Err(p) => {
                let removed = unknown_field(&p.message).is_some_and(|key| remove_key(&mut value, &p.path, key));
                problems.push(p);
                if !removed {
                    return Err(problems);
                }
                as_written = false;
            }
        }
    }
    problems.push(Problem::new("", format!("more than {MAX_UNKNOWN_KEYS} unknown keys; stopped here")));
    Err(problems)
}

/// Unknown keys reported in one run before giving up on the file.
const MAX_UNKNOWN_KEYS: usize = 50;

/// The key of serde's "unknown field `x`, expected …" message.
fn unknown_field(message: &str) -> Option<&str> {
    message.strip_prefix("unknown field `")?.split_once('`').map(|(k, _)| k)
}

/// Remove `key` from the mapping at `path` (`a.b[2].c`, as serde paths are written; empty for
/// the top level). False when there is no such mapping or key.
fn remove_key(v: &mut serde_norway::Value, path: &str, key: &str) -> bool {
    use serde_norway::Value;
    let mut at = v;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (name, indices) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            let Some(next) = at.as_mapping_mut().and_then(|m| m.get_mut(name)) else { return false };
            at = next;
        }
        for ix in indices.split(']').filter(|x| !x.is_empty()) {
            let Some(i) = ix.strip_prefix('[').and_then(|i| i.parse::<usize>().ok()) else { return false };
            let Some(next) = at.as_sequence_mut().and_then(|s| s.get_mut(i)) else { return false };
            at = next;
        }
        if let Value::Tagged(t) = at {
            at = &mut t.value;
        }
    }
    at.as_mapping_mut().is_some_and(|m| m.remove(key).is_some())
}

// ------------------------------------------------------------------ phase 2: validate

struct Validator<'a> {
    problems: Vec<Problem>,
    env: &'a dyn Fn(&str) -> Option<String>,
    /// Unset credential variables go to `missing` instead of `problems`.
    lazy_secrets: bool,
    missing: Vec<Problem>,
}

fn nonempty(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// Compact duration: `90d`, `30m`, `1h30m`, `45s`.
pub fn format_duration(d: Duration) -> String {
    let mut s = d.as_secs();
    if s == 0 {
        return format!("{}ms", d.as_millis());
    }
    let mut out = String::new();
    for (unit, n) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if s >= n {
            out.push_str(&format!("{}{unit}", s / n));
            s %= n;
        }
    }
    out
}

/// A conventional environment variable name; anything else might be a pasted secret, which
/// messages must not repeat.
fn looks_like_env_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

impl Validator<'_> {
    fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem::new(path, message));
    }

    /// A credential variable that is unset or empty: a problem, or with lazy secrets, missing.
    fn missing_secret(&mut self, path: String, message: String) {
        if self.lazy_secrets {
            self.missing.push(Problem::new(path, message));
        } else {
            self.problem(path, message);
        }
    }

    fn required<'s>(&mut self, path: &str, s: &'s Option<String>) -> Option<&'s str> {
        match (s, nonempty(s)) {
            (_, Some(v)) => Some(v),
            (Some(_), None) => {
                self.problem(path, "must not be empty");
                None
            }
            (None, None) => {
                self.problem(path, "is required");
                None
            }
        }
    }

    fn duration(&mut self, path: &str, s: &Option<String>, default: Duration, range: (Duration, Duration)) -> Duration {
        self.opt_duration(path, s, range).unwrap_or(default)
    }

    /// A duration within `range` (inclusive): nothing faster than a second, nothing so long that
    /// Unix-second arithmetic on it could overflow.
    fn opt_duration(&mut self, path: &str, s: &Option<String>, (min, max): (Duration, Duration)) -> Option<Duration> {
        let s = s.as_deref()?;
        match humantime::parse_duration(s.trim()) {
            Ok(d) if d.is_zero() => {
                self.problem(path, "must be greater than 0");
                None
            }
            Ok(d) if d < min => {
                self.problem(path, format!("{} is too short: at least {}", s.trim(), format_duration(min)));
                None
            }
            Ok(d) if d > max => {
                self.problem(path, format!("{} is too long: at most {}", s.trim(), format_duration(max)));
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.problem(path, format!("{s:?} is not a duration ({e}); write e.g. 30s, 5m, 90d"));
                None
            }
        }
    }

    fn url(&mut self, path: &str, s: &str) -> String {
        let u = s.trim_end_matches('/').to_string();
        let rest = u.strip_prefix("https://").or_else(|| u.strip_prefix("http://"));
        if rest.is_none_or(|r| r.is_empty() || r.contains(char::is_whitespace)) {
            self.problem(path, format!("{s:?} is not an http(s) URL"));
        } else if rest.is_some_and(|r| r.split('/').next().is_some_and(|host| host.contains('@'))) {
            // Credentials in a URL would travel into build links, the JSON API and logs.
            self.problem(path, "must not contain credentials (user:password@); use the auth settings".to_string());
            return String::new();
        }
        u
    }

    /// A secret from a file or an environment variable. `default_env` applies when neither is
    /// given; when it is unset the secret is missing (`required` makes that a problem).
    #[allow(clippy::too_many_arguments)]
    fn secret(
        &mut self,
        at: &str,
        what: &str,
        file: &Option<String>,
        env_name: &Option<String>,
        default_env: &str,
        required: bool,
    ) -> Option<(Secret, SecretSource)> {
        let path = |k: &str| if at.is_empty() { k.to_string() } else { format!("{at}.{k}") };
        let (file_key, env_key) = (format!("{what}_file"), format!("{what}_env"));
        match (file, env_name) {
            (Some(_), Some(_)) => {
                self.problem(at, format!("give {file_key} or {env_key}, not both"));
                None
            }
            (Some(f), None) => {
                let p = PathBuf::from(f.trim());
                if f.trim().is_empty() {
                    self.problem(path(&file_key), "must not be empty");
                    return None;
                }
                match read_secret_file(&p) {
                    Ok(s) => {
                        let s = s.trim_end_matches(['\n', '\r']);
                        if s.is_empty() {
                            self.missing_secret(path(&file_key), format!("{} is empty", p.display()));
                            None
                        } else {
                            Some((Secret::new(s), SecretSource::File(p)))
                        }
                    }
                    // Not there (yet) or unreadable is a missing credential, like an unset
                    // variable: secrets are often mounted only where the exporter runs.
                    Err(e)
                        if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied) =>
                    {
                        self.missing_secret(path(&file_key), format!("cannot read {}: {e}", p.display()));
                        None
                    }
                    Err(e) => {
                        self.problem(path(&file_key), format!("cannot read {}: {e}", p.display()));
                        None
                    }
                }
            }
            (None, Some(name)) => {
                let name = name.trim();
                if !looks_like_env_name(name) {
                    self.problem(
                        path(&env_key),
                        "is not an environment variable name (A-Z, 0-9, _); the value is not shown in case it is the secret itself",
                    );
                    return None;
                }
                match (self.env)(name) {
                    Some(v) if !v.is_empty() => Some((Secret::new(v), SecretSource::Env(name.to_string()))),
                    Some(_) => {
                        self.missing_secret(path(&env_key), format!("environment variable {name} is empty"));
                        None
                    }
                    None => {
                        self.missing_secret(path(&env_key), format!("environment variable {name} is not set"));
                        None
                    }
                }
            }
            (None, None) => match (self.env)(default_env) {
                Some(v) if !v.is_empty() => Some((Secret::new(v), SecretSource::Env(default_env.to_string()))),
                _ => {
                    if required {
                        self.missing_secret(
                            path(&env_key),
                            format!("environment variable {default_env} (the default) is not set; or give {file_key}"),
                        );
                    }
                    None
                }
            },
        }
    }

    fn config(&mut self, raw: RawConfig, origin: &str) -> Option<Config> {
        let repository = self.repository(raw.repository);
        let concourse = self.concourse(raw.concourse);
        let listen = match raw.listen.as_deref().map(str::trim) {
            None => DEFAULT_LISTEN.parse().ok(),
            Some(s) => match s.parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    self.problem("listen", format!("{s:?} is not an address:port such as {DEFAULT_LISTEN}"));
                    None
                }
            },
        };
        let poll_interval =
            self.duration("poll_interval", &raw.poll_interval, DEFAULT_POLL_INTERVAL, POLL_INTERVAL_RANGE);
        if let Some(gh) = repository.as_ref().and_then(|r| r.poll_interval).filter(|d| *d < poll_interval) {
            self.problem(
                "repository.poll_interval",
                format!(
                    "{} is shorter than poll_interval ({}): the loop polls at most once per poll_interval",
                    format_duration(gh),
                    format_duration(poll_interval)
                ),
            );
        }
        let retention = self.duration("retention", &raw.retention, DEFAULT_RETENTION, RETENTION_RANGE);
        let not_picked_up_after = self.duration(
            "not_picked_up_after",
            &raw.not_picked_up_after,
            DEFAULT_NOT_PICKED_UP_AFTER,
            THRESHOLD_RANGE,
        );
        let state_path = match &raw.state_path {
            None => Some(PathBuf::from(DEFAULT_STATE_PATH)),
            Some(_) => self.required("state_path", &raw.state_path).map(PathBuf::from),
        };
        let lead_time_from = match raw.lead_time_from.as_deref().map(str::trim) {
            None | Some("committer_date") => Some(LeadTimeFrom::CommitterDate),
            Some("author_date") => Some(LeadTimeFrom::AuthorDate),
            Some("first_seen") => Some(LeadTimeFrom::FirstSeen),
            Some(other) => {
                self.problem(
                    "lead_time_from",
                    format!("{other:?} is not one of committer_date (default), author_date, first_seen"),
                );
                None
            }
        };
        let stage_pipelines: Vec<String> = raw
            .stages
            .iter()
            .flatten()
            .filter_map(|s| nonempty(&s.pipeline).map(str::to_string))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let first_pipeline = raw.stages.iter().flatten().next().and_then(|s| nonempty(&s.pipeline)).unwrap_or("");
        // Stages refer to every declared resource, valid or not, so one bad filter is one problem.
        let declared: Vec<String> = raw.resources.iter().flat_map(|r| r.0.iter().map(|(n, _)| n.clone())).collect();
        let resources = self.resources(raw.resources, first_pipeline, &stage_pipelines);
        let stages = self.stages(raw.stages, &declared);
        let traces = self.traces(raw.traces.unwrap_or_default());
        let server = self.server(raw.server.unwrap_or_default());
        Some(Config {
            origin: origin.to_string(),
            repository: repository?,
            concourse: concourse?,
            listen: listen?,
            web_config_file: raw.web_config_file.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(PathBuf::from),
            poll_interval,
            state_path: state_path?,
            retention,
            lead_time_from: lead_time_from?,
            not_picked_up_after,
            resources,
            stages,
            traces,
            missing_secrets: vec![],
            server,
        })
    }

    fn server(&mut self, r: RawServer) -> crate::server::ServerLimits {
        use crate::server::{MAX_CONNECTIONS_CEILING, ServerLimits};
        let d = ServerLimits::default();
        let max_connections = match r.max_connections {
            None => d.max_connections,
            Some(n) if (1..=MAX_CONNECTIONS_CEILING as u64).contains(&n) => n as usize,
            Some(n) => {
                self.problem(
                    "server.max_connections",
                    format!("{n} is not between 1 and {MAX_CONNECTIONS_CEILING} (default {})", d.max_connections),
                );
                d.max_connections
            }
        };
        ServerLimits {
            header_read_timeout: self.duration(
                "server.header_read_timeout",
                &r.header_read_timeout,
                d.header_read_timeout,
                TIMEOUT_RANGE,
            ),
            request_timeout: self.duration(
                "server.request_timeout",
                &r.request_timeout,
                d.request_timeout,
                TIMEOUT_RANGE,
            ),
            max_connections,
        }
    }

    fn traces(&mut self, t: RawTraces) -> Traces {
        let endpoint = t.endpoint.as_deref().map(|u| self.url("traces.endpoint", u)).filter(|u| !u.is_empty());
        let protocol = t.protocol.map(|p| p.trim().to_string());
        if let Some(p) = &protocol
            && !matches!(p.as_str(), "http/protobuf" | "grpc")
        {
            self.problem("traces.protocol", format!("{p:?} is not one of http/protobuf (default), grpc"));
        }
        // Headers usually carry an API key: a secret, so only from a file or the environment.
        let headers = match (&t.headers_file, &t.headers_env) {
            (None, None) => None,
            (f, e) => self.secret("traces", "headers", f, e, "OTEL_EXPORTER_OTLP_HEADERS", false).map(|(s, _)| s),
        };
        Traces {
            endpoint,
            protocol,
            headers,
            service_name: t.service_name.map(|s| s.trim().to_string()).filter(|s| !s.is_empty()),
            resource_attributes: t.resource_attributes.unwrap_or_default().into_iter().collect(),
            self_instrumentation: t.self_instrumentation.unwrap_or(false),
        }
    }

    fn repository(&mut self, raw: Option<RawRepository>) -> Option<Repository> {
        let Some(r) = raw else {
            self.problem("repository", "is required (github: owner/name, branch, api_url, token_file or token_env)");
            return None;
        };
        let gh = self.required("repository.github", &r.github);
        let (owner, name) = match gh.map(|g| (g, g.split_once('/'))) {
            Some((_, Some((o, n)))) if !o.is_empty() && !n.is_empty() && !n.contains('/') => {
                (o.to_string(), n.to_string())
            }
            Some((g, _)) => {
                self.problem("repository.github", format!("{g:?} is not owner/name, e.g. GaloyMoney/lana-bank"));
                (String::new(), String::new())
            }
            None => (String::new(), String::new()),
        };
        let branch = match &r.branch {
            None => Some(DEFAULT_BRANCH),
            Some(_) => self.required("repository.branch", &r.branch),
        };
        // The branch goes into API paths and ref comparisons: git's own rules for a name.
        let branch = match branch.map(|b| (b, branch_name_problem(b))) {
            Some((b, Some(why))) => {
                self.problem("repository.branch", format!("{b:?} is not a valid git branch name: it {why}"));
                None
            }
            other => other.map(|(b, _)| b),
        };
        let api_url = match &r.api_url {
            None => DEFAULT_GITHUB_API.to_string(),
            Some(u) => self.url("repository.api_url", u),
        };
        let timeout = self.duration("repository.timeout", &r.timeout, DEFAULT_TIMEOUT, TIMEOUT_RANGE);
        let initial_commits = r.initial_commits.unwrap_or(DEFAULT_INITIAL_COMMITS);
        let poll_interval = self.opt_duration("repository.poll_interval", &r.poll_interval, POLL_INTERVAL_RANGE);
        if initial_commits == 0 {
            self.problem("repository.initial_commits", "must be greater than 0");
        } else if initial_commits > MAX_INITIAL_COMMITS {
            // A poll reads at most 20 pages of 100; more history is what `backfill` is for.
            self.problem(
                "repository.initial_commits",
                format!("{initial_commits} is more than a first poll reads ({MAX_INITIAL_COMMITS}); use backfill for a longer history"),
            );
        }
        let n = self.problems.len();
        let token = self.secret("repository", "token", &r.token_file, &r.token_env, DEFAULT_GITHUB_TOKEN_ENV, false);
        let token_ok = self.problems.len() == n;
        let (token, token_source) = token.map(|(s, src)| (Some(s), Some(src))).unwrap_or((None, None));
        let n = self.problems.len();
        let webhook = match (&r.webhook_secret_file, &r.webhook_secret_env) {
            (None, None) => None,
            (f, e) => self.secret("repository", "webhook_secret", f, e, "GITHUB_WEBHOOK_SECRET", true),
        };
        let webhook_ok = self.problems.len() == n;
        (gh.is_some() && !owner.is_empty() && token_ok && webhook_ok).then_some(())?;
        Some(Repository {
            owner,
            name,
            branch: branch?.to_string(),
            api_url,
            token,
            token_source,
            timeout,
            initial_commits,
            webhook_secret: webhook.map(|(s, _)| s),
            poll_interval,
        })
    }

    fn concourse(&mut self, raw: Option<RawConcourse>) -> Option<Concourse> {
        let Some(c) = raw else {
            self.problem("concourse", "is required (url, team, auth)");
            return None;
        };
        let url = self.required("concourse.url", &c.url).map(|u| u.to_string());
        let url = url.map(|u| self.url("concourse.url", &u));
        let team = self.required("concourse.team", &c.team).map(str::to_string);
        let timeout = self.duration("concourse.timeout", &c.timeout, DEFAULT_TIMEOUT, TIMEOUT_RANGE);
        let n = self.problems.len();
        let (auth, auth_source) = match c.auth {
            // No auth section: a bearer token from the default variable if it is set, else public
            // pipelines only.
            None => match self.secret("concourse.auth", "token", &None, &None, DEFAULT_CONCOURSE_TOKEN_ENV, false) {
                Some((s, src)) => (ConcourseAuth::Bearer(s), Some(src)),
                None => (ConcourseAuth::None, None),
            },
            Some(a) => {
                let token = a.token_file.is_some() || a.token_env.is_some();
                let password = a.username.is_some() || a.password_file.is_some() || a.password_env.is_some();
                if token == password {
                    self.problem(
                        "concourse.auth",
                        "give either token_file/token_env or username + password_file/password_env",
                    );
                    (ConcourseAuth::None, None)
                } else if token {
                    match self.secret(
                        "concourse.auth",
                        "token",
                        &a.token_file,
                        &a.token_env,
                        DEFAULT_CONCOURSE_TOKEN_ENV,
                        true,
                    ) {
                        Some((s, src)) => (ConcourseAuth::Bearer(s), Some(src)),
                        None => (ConcourseAuth::None, None),
                    }
                } else {
                    let user = match &a.username {
                        None => {
                            self.problem("concourse.auth.username", "is required with password_file/password_env");
                            None
                        }
                        Some(_) => self.required("concourse.auth.username", &a.username).map(str::to_string),
                    };
                    let pw = self.secret(
                        "concourse.auth",
                        "password",
                        &a.password_file,
                        &a.password_env,
                        DEFAULT_CONCOURSE_PASSWORD_ENV,
                        true,
                    );
                    match (user, pw) {
                        (Some(username), Some((password, src))) => {
                            (ConcourseAuth::Password { username, password }, Some(src))
                        }
                        _ => (ConcourseAuth::None, None),
                    }
                }
            }
        };
        (self.problems.len() == n).then_some(())?;
        Some(Concourse { url: url?, team: team?, auth, auth_source, timeout })
    }

    fn resources(
        &mut self,
        raw: Option<Ordered<RawResource>>,
        first_pipeline: &str,
        stage_pipelines: &[String],
    ) -> Vec<Resource> {
        let Some(raw) = raw else {
            self.problem("resources", "is required: the tracked git resources and their path filters");
            return vec![];
        };
        if raw.0.is_empty() {
            self.problem("resources", "must name at least one git resource");
        }
        let mut out = vec![];
        let mut step_names: BTreeMap<String, String> = BTreeMap::new();
        for (name, _) in &raw.0 {
            step_names.insert(name.clone(), name.clone());
        }
        for (name, r) in raw.0 {
            let at = format!("resources.{name}");
            let n = self.problems.len();
            if name.trim().is_empty() {
                self.problem("resources", "a resource name must not be empty");
            }
            // Each entry alone, so a problem names its index.
            for (field, list) in [("paths", &r.paths), ("ignore_paths", &r.ignore_paths)] {
                for (i, p) in list.iter().enumerate() {
                    let one = std::slice::from_ref(p);
                    let res =
                        if field == "paths" { GitPathFilter::new(one, &[]) } else { GitPathFilter::new(&[], one) };
                    if let Err(e) = res {
                        self.problem(format!("{at}.{field}[{i}]"), pathspec_message(&e));
                    }
                }
            }
            let kind = match r.kind.as_deref().map(str::trim) {
                None | Some("backend") => Some(SourceKind::Backend),
                Some("frontend") => Some(SourceKind::Frontend),
                Some("dagster") => Some(SourceKind::Dagster),
                Some(k) => {
                    self.problem(
                        format!("{at}.kind"),
                        format!("{k:?} is not one of backend (default), frontend, dagster"),
                    );
                    None
                }
            };
            let pipeline = match &r.pipeline {
                None => first_pipeline.to_string(),
                Some(_) => match self.required(&format!("{at}.pipeline"), &r.pipeline) {
                    Some(p) if !stage_pipelines.iter().any(|s| s == p) => {
                        self.problem(format!("{at}.pipeline"), format!("no stage is in pipeline {p:?}"));
                        p.to_string()
                    }
                    p => p.unwrap_or_default().to_string(),
                },
            };
            for (i, a) in r.aliases.iter().enumerate() {
                let ap = format!("{at}.aliases[{i}]");
                if a.trim().is_empty() {
                    self.problem(ap, "must not be empty");
                } else if let Some(other) = step_names.get(a) {
                    let what = if other == a {
                        "the name of a resource".to_string()
                    } else {
                        format!("already an alias of {other}")
                    };
                    self.problem(ap, format!("{a:?} is {what}"));
                } else {
                    step_names.insert(a.clone(), name.clone());
                }
            }
            if self.problems.len() != n {
                continue;
            }
            let Ok(filter) = GitPathFilter::new(&r.paths, &r.ignore_paths) else { continue };
            out.push(Resource {
                name,
                filter,
                disable_ci_skip: r.disable_ci_skip,
                kind: kind.unwrap_or(SourceKind::Backend),
                pipeline,
                aliases: r.aliases,
            });
        }
        out
    }

    fn stages(&mut self, raw: Option<Vec<RawStage>>, resources: &[String]) -> Vec<StageDef> {
        let Some(raw) = raw else {
            self.problem("stages", "is required: the stages a commit goes through, in order");
            return vec![];
        };
        if raw.is_empty() {
            self.problem("stages", "must not be empty");
            return vec![];
        }
        let names: Vec<Option<String>> = raw.iter().map(|s| nonempty(&s.name).map(str::to_string)).collect();
        let all_resources = resources.to_vec();
        let mut out = vec![];
        // (pipeline, job) → stage index, to find a job in two stages.
        let mut seen_jobs: BTreeMap<(String, String), usize> = BTreeMap::new();
        let mut environments: BTreeMap<String, usize> = BTreeMap::new();
        for (si, s) in raw.into_iter().enumerate() {
            let at = format!("stages[{si}]");
            let name = self.required(&format!("{at}.name"), &s.name).map(str::to_string);
            if let Some(n) = &name
                && let Some(first) = names[..si].iter().position(|x| x.as_deref() == Some(n))
            {
                self.problem(format!("{at}.name"), format!("{n:?} is already the name of stages[{first}]"));
            }
            let pipeline = self.required(&format!("{at}.pipeline"), &s.pipeline).unwrap_or_default().to_string();
            let stage_git = match &s.git {
                None => all_resources.clone(),
                Some(g) => self.resource_list(&format!("{at}.git"), g, resources),
            };
            if s.jobs.is_empty() {
                self.problem(format!("{at}.jobs"), "must not be empty");
            }
            let mut jobs = vec![];
            for (ji, j) in s.jobs.into_iter().enumerate() {
                let jat = format!("{at}.jobs[{ji}]");
                let (jname, git) = match j {
                    RawJob::Name(n) => (nonempty(&Some(n)).map(str::to_string), stage_git.clone()),
                    RawJob::Full(f) => {
                        let git = match &f.git {
                            None => stage_git.clone(),
                            Some(g) => self.resource_list(&format!("{jat}.git"), g, resources),
                        };
                        let n = match &f.name {
                            None => {
                                self.problem(format!("{jat}.name"), "is required");
                                continue;
                            }
                            Some(_) => nonempty(&f.name).map(str::to_string),
                        };
                        (n, git)
                    }
                };
                let Some(jname) = jname else {
                    self.problem(jat, "a job name must not be empty");
                    continue;
                };
                if !pipeline.is_empty() {
                    match seen_jobs.get(&(pipeline.clone(), jname.clone())) {
                        Some(&other) if other == si => {
                            self.problem(jat, format!("job {jname:?} is listed twice"));
                            continue;
                        }
                        Some(&other) => {
                            self.problem(
                                jat,
                                format!("job {jname:?} of pipeline {pipeline:?} is already in stages[{other}]"),
                            );
                            continue;
                        }
                        None => {
                            seen_jobs.insert((pipeline.clone(), jname.clone()), si);
                        }
                    }
                }
                jobs.push(JobDef { name: jname, git });
            }
            let after = match &s.after {
                None => {
                    if si == 0 {
                        vec![]
                    } else {
                        vec![si - 1]
                    }
                }
                Some(list) => {
                    let mut v = vec![];
                    for (ai, a) in list.iter().enumerate() {
                        let aat = format!("{at}.after[{ai}]");
                        match names.iter().position(|n| n.as_deref() == Some(a.as_str())) {
                            Some(i) if i < si => {
                                if !v.contains(&i) {
                                    v.push(i);
                                }
                            }
                            Some(_) => self.problem(aat, format!("stage {a:?} is not an earlier stage")),
                            None => self.problem(aat, format!("unknown stage {a:?}")),
                        }
                    }
                    v
                }
            };
            let inputs = match &s.inputs {
                None => None,
                Some(list) if list.is_empty() => {
                    self.problem(
                        format!("{at}.inputs"),
                        "must not be empty (leave it out to let every input carry commits)",
                    );
                    None
                }
                Some(list) => {
                    for (ii, x) in list.iter().enumerate() {
                        if x.trim().is_empty() {
                            self.problem(format!("{at}.inputs[{ii}]"), "must not be empty");
                        }
                    }
                    Some(list.clone())
                }
            };
            let mut bridges = vec![];
            for (bi, b) in s.bridges.into_iter().enumerate() {
                let bat = format!("{at}.bridges[{bi}]");
                let (kind, input) = match &b {
                    RawBridge::MessageContains { input, .. } => ("message_contains", input),
                    RawBridge::Equals { input, .. } => ("equals", input),
                };
                let bat = format!("{bat}.{kind}");
                let field = |v: &mut Self, k: &str, x: &Option<String>| {
                    v.required(&format!("{bat}.{k}"), x).map(str::to_string)
                };
                let built = match &b {
                    RawBridge::MessageContains { input, output, key } => {
                        match (field(self, "input", input), field(self, "output", output), field(self, "key", key)) {
                            (Some(input), Some(output), Some(key)) => {
                                Some(Bridge::MessageContains { input, output, key })
                            }
                            _ => None,
                        }
                    }
                    RawBridge::Equals { input, input_key, output, key } => match (
                        field(self, "input", input),
                        field(self, "input_key", input_key),
                        field(self, "output", output),
                        field(self, "key", key),
                    ) {
                        (Some(input), Some(input_key), Some(output), Some(key)) => {
                            Some(Bridge::Equals { input, input_key, output, key })
                        }
                        _ => None,
                    },
                };
                if let (Some(list), Some(inp)) = (&inputs, nonempty(input))
                    && !list.iter().any(|x| x == inp)
                {
                    self.problem(
                        format!("{bat}.input"),
                        format!("unknown input step {inp:?}: {at}.inputs lists {}", list.join(", ")),
                    );
                }
                bridges.extend(built);
            }
            let fallback_git_input = match s.fallback {
                None => None,
                Some(f) => self.required(&format!("{at}.fallback.git_input"), &f.git_input).map(str::to_string),
            };
            let environment = match &s.environment {
                None => None,
                Some(_) => {
                    let e = self.required(&format!("{at}.environment"), &s.environment).map(str::to_string);
                    if let Some(e) = &e {
                        if let Some(other) = environments.get(e) {
                            self.problem(format!("{at}.environment"), format!("{e:?} is already stages[{other}]'s"));
                        } else {
                            environments.insert(e.clone(), si);
                        }
                    }
                    e
                }
            };
            let stuck_after = self
                .opt_duration(&format!("{at}.stuck_after"), &s.stuck_after, THRESHOLD_RANGE)
                .map(|d| d.as_secs() as i64);
            out.push(StageDef {
                name: name.unwrap_or_default(),
                pipeline,
                jobs,
                after,
                inputs,
                bridges,
                fallback_git_input,
                environment,
                stuck_after,
                carries_passive: s.carries_passive.unwrap_or(true),
            });
        }
        if environments.is_empty() {
            self.problem(
                "stages",
                "no stage has an environment; mark the deploy stage with environment: <name> (lana: staging)",
            );
        }
        out
    }

    fn resource_list(&mut self, at: &str, list: &[String], resources: &[String]) -> Vec<String> {
        if list.is_empty() {
            self.problem(at, "must name at least one resource (leave it out for all of them)");
        }
        let mut out = vec![];
        for (i, g) in list.iter().enumerate() {
            if resources.contains(g) {
                push_unique(&mut out, g);
            } else {
                self.problem(
                    format!("{at}[{i}]"),
                    format!("unknown resource {g:?} (resources: {})", resources.join(", ")),
                );
            }
        }
        out
    }
}

fn pathspec_message(e: &PathspecError) -> String {
    match e {
        PathspecError::Empty { .. } => "must not be empty".to_string(),
        PathspecError::ShellSyntax { pattern, ch, .. } => {
            format!("{pattern:?} contains {ch:?}, which git-resource's shell command line would split or interpret")
        }
        PathspecError::Invalid { pattern, reason, .. } => {
            // gix's reasons can be a Debug rendering `Message { message: "...", .. }`: keep the text.
            let reason = reason
                .split_once("message: \"")
                .and_then(|(_, rest)| rest.split_once('"'))
                .map(|(m, _)| m)
                .unwrap_or(reason);
            format!("{pattern:?} is not a valid pathspec: {reason}")
        }
    }
}

// ------------------------------------------------------------------ check-config helpers

/// `owner/name` from a git URI (`git@github.com:o/n.git`, `https://github.com/o/n`, `ssh://...`).
fn repo_of_uri(uri: &str) -> Option<String> {
    let u = uri.trim().trim_end_matches('/');
    let u = u.strip_suffix(".git").unwrap_or(u);
    let path = if let Some((_, rest)) = u.split_once("://") { rest.split_once('/')?.1 } else { u.split_once(':')?.1 };
    let mut parts = path.rsplit('/');
    let name = parts.next().filter(|s| !s.is_empty())?;
    let owner = parts.next().filter(|s| !s.is_empty())?;
    Some(format!("{owner}/{name}"))
}

/// The inner pipeline config of a `GET .../pipelines/:p/config` answer (or the config itself).
fn pipeline_config(v: &serde_json::Value) -> &serde_json::Value {
    v.get("config").filter(|c| c.is_object()).unwrap_or(v)
}

fn string_list(v: Option<&serde_json::Value>) -> Option<Vec<String>> {
    match v {
        None | Some(serde_json::Value::Null) => Some(vec![]),
        Some(serde_json::Value::Array(a)) => a.iter().map(|x| x.as_str().map(str::to_string)).collect(),
        Some(_) => None,
    }
}

/// How the file's `resources` differ from the git resources of `pipeline` as Concourse has them
/// (`pipeline_config`: the answer of `GET /api/v1/teams/:t/pipelines/:p/config`). One line per
/// difference; empty when they agree. Only resources the file places in `pipeline` are compared.
/// The file wins; this is for `check-config` to show.
pub fn resource_differences(cfg: &Config, pipeline: &str, pipeline_config_answer: &serde_json::Value) -> Vec<String> {
    let conf = pipeline_config(pipeline_config_answer);
    let mut out = vec![];
    let Some(list) = conf.get("resources").and_then(|r| r.as_array()) else {
        if cfg.resources.iter().any(|r| r.pipeline == pipeline) {
            out.push(format!("pipeline {pipeline}: its config has no resources"));
        }
        return out;
    };
    let want_repo = format!("{}/{}", cfg.repository.owner, cfg.repository.name);
    for r in cfg.resources.iter().filter(|r| r.pipeline == pipeline) {
        let at = format!("resources.{}", r.name);
        let Some(res) = list.iter().find(|x| x.get("name").and_then(|n| n.as_str()) == Some(&r.name)) else {
            out.push(format!("{at}: no resource of that name in pipeline {pipeline}"));
            continue;
        };
        let ty = res.get("type").and_then(|t| t.as_str()).unwrap_or("");
        if ty != "git" {
            out.push(format!("{at}: is a {ty:?} resource in pipeline {pipeline}, not git"));
            continue;
        }
        let src = res.get("source").cloned().unwrap_or(serde_json::Value::Null);
        if let Some(uri) = src.get("uri").and_then(|u| u.as_str()) {
            match repo_of_uri(uri) {
                Some(got) if !got.eq_ignore_ascii_case(&want_repo) => {
                    out.push(format!("{at}: pipeline {pipeline} tracks {got} ({uri}), this file {want_repo}"))
                }
                _ => {}
            }
        }
        let branch = src.get("branch").and_then(|b| b.as_str()).unwrap_or("(none)");
        if branch != cfg.repository.branch {
            out.push(format!("{at}: pipeline {pipeline} tracks branch {branch}, this file {}", cfg.repository.branch));
        }
        for (field, mine) in [("paths", r.filter.paths()), ("ignore_paths", r.filter.ignore_paths())] {
            match string_list(src.get(field)) {
                None => out.push(format!("{at}: {field} in pipeline {pipeline} is not a list of strings")),
                Some(theirs) => {
                    let norm = |v: &[String]| v.iter().cloned().collect::<BTreeSet<_>>();
                    if norm(mine) != norm(&theirs) {
                        out.push(format!("{at}: {field} differ: this file {mine:?}, pipeline {pipeline} {theirs:?}"));
                    }
                }
            }
        }
        let theirs_skip = src.get("disable_ci_skip").and_then(|b| b.as_bool()).unwrap_or(false);
        if theirs_skip != r.disable_ci_skip {
            out.push(format!(
                "{at}: disable_ci_skip differs: this file {}, pipeline {pipeline} {theirs_skip}",
                r.disable_ci_skip
            ));
        }
    }
    // Git resources on the tracked branch that trigger a watched job but that the file does not
    // track: commits they emit would be misclassified.
    let known: BTreeSet<&str> =
        cfg.resources.iter().flat_map(|r| std::iter::once(&r.name).chain(&r.aliases)).map(String::as_str).collect();
    let watched: BTreeSet<&str> = cfg
        .stages
        .iter()
        .filter(|s| s.pipeline == pipeline)
        .flat_map(|s| s.jobs.iter().map(|j| j.name.as_str()))
        .collect();
    let mut untracked: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for job in conf.get("jobs").and_then(|j| j.as_array()).into_iter().flatten() {
        let Some(name) = job.get("name").and_then(|n| n.as_str()).filter(|n| watched.contains(n)) else { continue };
        let mut triggers = BTreeSet::new();
        trigger_resources(job.get("plan").unwrap_or(&serde_json::Value::Null), &mut triggers);
        for res in triggers.into_iter().filter(|r| !known.contains(r.as_str())) {
            let Some(src) = list
                .iter()
                .find(|x| x.get("name").and_then(|n| n.as_str()) == Some(&res))
                .filter(|x| x.get("type").and_then(|t| t.as_str()) == Some("git"))
                .and_then(|x| x.get("source"))
            else {
                continue;
            };
            let repo = src.get("uri").and_then(|u| u.as_str()).and_then(repo_of_uri);
            let branch = src.get("branch").and_then(|b| b.as_str());
            if repo.is_some_and(|r| r.eq_ignore_ascii_case(&want_repo)) && branch == Some(&cfg.repository.branch) {
                untracked.entry(res).or_default().push(name.to_string());
            }
        }
    }
    for (res, jobs) in untracked {
        out.push(format!(
            "resources: pipeline {pipeline}'s git resource {res} follows {want_repo} {} and triggers {}, but this file does not track it",
            cfg.repository.branch,
            jobs.join(", ")
        ));
    }
    out
}

/// Resources of the `get` steps with `trigger: true` in a job plan.
fn trigger_resources(v: &serde_json::Value, out: &mut BTreeSet<String>) {
    match v {
        serde_json::Value::Object(m) => {
            if let Some(g) = m.get("get").and_then(|g| g.as_str())
                && m.get("trigger").and_then(|t| t.as_bool()) == Some(true)
            {
                out.insert(m.get("resource").and_then(|r| r.as_str()).unwrap_or(g).to_string());
            }
            m.values().for_each(|x| trigger_resources(x, out));
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| trigger_resources(x, out)),
        _ => {}
    }
}

/// Get and put step names anywhere in a job plan (`in_parallel`, `do`, `try`, hooks, ...).
fn plan_steps(v: &serde_json::Value, gets: &mut BTreeSet<String>, puts: &mut BTreeSet<String>) {
    match v {
        serde_json::Value::Object(m) => {
            if let Some(g) = m.get("get").and_then(|g| g.as_str()) {
                gets.insert(g.to_string());
            }
            if let Some(p) = m.get("put").and_then(|p| p.as_str()) {
                puts.insert(p.to_string());
            }
            for x in m.values() {
                plan_steps(x, gets, puts);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| plan_steps(x, gets, puts)),
        _ => {}
    }
}

/// How the stages in `pipeline` differ from its jobs as Concourse has them: jobs that are not
/// there, and `inputs`, bridge inputs and fallback inputs that are no step of the stage's jobs.
/// (Bridge outputs may be in another pipeline and are not checked here.)
pub fn job_differences(cfg: &Config, pipeline: &str, pipeline_config_answer: &serde_json::Value) -> Vec<String> {
    let conf = pipeline_config(pipeline_config_answer);
    let jobs: Vec<&serde_json::Value> =
        conf.get("jobs").and_then(|j| j.as_array()).map(|a| a.iter().collect()).unwrap_or_default();
    let mut out = vec![];
    for (si, st) in cfg.stages.iter().enumerate().filter(|(_, s)| s.pipeline == pipeline) {
        let at = format!("stages[{si}]");
        let (mut gets, mut puts) = (BTreeSet::new(), BTreeSet::new());
        for (ji, j) in st.jobs.iter().enumerate() {
            match jobs.iter().find(|x| x.get("name").and_then(|n| n.as_str()) == Some(&j.name)) {
                Some(job) => plan_steps(job.get("plan").unwrap_or(&serde_json::Value::Null), &mut gets, &mut puts),
                None => out.push(format!("{at}.jobs[{ji}]: no job {:?} in pipeline {pipeline}", j.name)),
            }
        }
        if gets.is_empty() && puts.is_empty() {
            continue;
        }
        for (ii, i) in st.inputs.iter().flatten().enumerate() {
            if !gets.contains(i) && !puts.contains(i) {
                out.push(format!("{at}.inputs[{ii}]: no step {i:?} in the stage's jobs"));
            }
        }
        for (bi, b) in st.bridges.iter().enumerate() {
            let (kind, input) = match b {
                Bridge::MessageContains { input, .. } => ("message_contains", input),
                Bridge::Equals { input, .. } => ("equals", input),
            };
            if !gets.contains(input) {
                out.push(format!("{at}.bridges[{bi}].{kind}.input: no get step {input:?} in the stage's jobs"));
            }
        }
        if let Some(f) = &st.fallback_git_input
            && !gets.contains(f)
        {
            out.push(format!("{at}.fallback.git_input: no get step {f:?} in the stage's jobs"));
        }
    }
    out
}

fn lead_time_name(l: LeadTimeFrom) -> &'static str {
    match l {
        LeadTimeFrom::CommitterDate => "committer_date",
        LeadTimeFrom::AuthorDate => "author_date",
        LeadTimeFrom::FirstSeen => "first_seen",
    }
}

fn kind_name(k: SourceKind) -> &'static str {
    match k {
        SourceKind::Backend => "backend",
        SourceKind::Frontend => "frontend",
        SourceKind::Dagster => "dagster",
    }
}

/// The human-readable report `check-config` prints for a valid file. Never shows a secret.
pub fn summary(cfg: &Config) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let r = &cfg.repository;
    let _ = writeln!(s, "{}: OK", cfg.origin);
    // A credential the file names but the environment lacks (lazy loading) is said as such,
    // not as "anonymous".
    let missing = |at: &str| {
        cfg.missing_secrets.iter().find(|p| p.path.starts_with(at)).map(|p| format!("{}: {}", p.path, p.message))
    };
    let token = match (&r.token_source, missing("repository")) {
        (Some(src), _) => format!("token from {src}"),
        (None, Some(m)) => format!("credentials missing: {m}"),
        (None, None) => "anonymous: no token (GitHub allows 60 requests an hour)".to_string(),
    };
    let _ = writeln!(s, "repository: {}/{} branch {} via {} ({token})", r.owner, r.name, r.branch, r.api_url);
    let c = &cfg.concourse;
    let src = c.auth_source.as_ref().map(|s| s.to_string()).unwrap_or_default();
    let auth = match &c.auth {
        ConcourseAuth::None if let Some(m) = missing("concourse") => format!("credentials missing: {m}"),
        ConcourseAuth::None => "no auth: public pipelines only".to_string(),
        ConcourseAuth::Bearer(_) => format!("bearer token from {src}"),
        ConcourseAuth::Password { username, .. } => format!("password grant as {username}, password from {src}"),
    };
    let _ = writeln!(s, "concourse: {} team {} ({auth})", c.url, c.team);
    let _ = writeln!(
        s,
        "listen {}, poll every {} (GitHub every {}), state {}, retention {}, lead time from {}, not picked up after {}",
        cfg.listen,
        format_duration(cfg.poll_interval),
        format_duration(cfg.github_poll_interval()),
        cfg.state_path.display(),
        format_duration(cfg.retention),
        lead_time_name(cfg.lead_time_from),
        format_duration(cfg.not_picked_up_after),
    );
    let _ = writeln!(s, "resources (pipeline, kind, filters):");
    for res in &cfg.resources {
        let mut f = vec![];
        if !res.filter.paths().is_empty() {
            f.push(format!("paths {:?}", res.filter.paths()));
        }
        if !res.filter.ignore_paths().is_empty() {
            f.push(format!("ignore_paths {:?}", res.filter.ignore_paths()));
        }
        if f.is_empty() {
            f.push("every commit".into());
        }
        if res.disable_ci_skip {
            f.push("[ci skip] ignored".into());
        }
        if !res.aliases.is_empty() {
            f.push(format!("also step {}", res.aliases.join(", ")));
        }
        let _ = writeln!(s, "  {} ({}, {}): {}", res.name, res.pipeline, kind_name(res.kind), f.join("; "));
    }
    let _ = writeln!(s, "stages:");
    let all: Vec<String> = cfg.resources.iter().map(|r| r.name.clone()).collect();
    for (i, st) in cfg.stages.iter().enumerate() {
        let jobs: Vec<String> = st
            .jobs
            .iter()
            .map(|j| if j.git == all { j.name.clone() } else { format!("{} [{}]", j.name, j.git.join(", ")) })
            .collect();
        let _ = writeln!(s, "  {}. {} ({}): {}", i + 1, st.name, st.pipeline, jobs.join(", "));
        let after: Vec<&str> = st.after.iter().map(|a| cfg.stages[*a].name.as_str()).collect();
        let _ = writeln!(
            s,
            "     after: {}",
            if after.is_empty() { "- (ready when committed)".into() } else { after.join(", ") }
        );
        let carried = match &st.inputs {
            None => "every input".to_string(),
            Some(l) => l.join(", "),
        };
        let _ = writeln!(s, "     carried by: {carried}");
        for b in &st.bridges {
            let line = match b {
                Bridge::MessageContains { input, output, key } => {
                    format!("the commit message of input {input} contains {key} of output {output}")
                }
                Bridge::Equals { input, input_key, output, key } => {
                    format!("{input_key} of input {input} equals {key} of output {output}")
                }
            };
            let _ = writeln!(s, "     bridge: {line}");
        }
        if let Some(f) = &st.fallback_git_input {
            let _ = writeln!(
                s,
                "     fallback (inferred): first build after the upstream succeeded whose {f} is the commit or a descendant"
            );
        }
        if !st.carries_passive {
            let _ = writeln!(s, "     untracked and [ci skip] commits do not pass through");
        }
        if let Some(t) = st.stuck_after {
            let _ = writeln!(s, "     stuck after: {}", format_duration(Duration::from_secs(t as u64)));
        }
        if let Some(e) = &st.environment {
            let _ = writeln!(s, "     success means: deployed to {e}");
        }
    }
    let envs: Vec<String> = cfg
        .stages
        .iter()
        .filter_map(|st| st.environment.as_ref().map(|e| format!("{e} (stage {})", st.name)))
        .collect();
    let _ = writeln!(s, "environments: {}", envs.join(", "));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "
repository: { github: o/r }
concourse: { url: 'http://ci/', team: dev }
resources: { repo: {} }
stages:
  - { name: tests, pipeline: p, jobs: [t] }
  - { name: deploy, pipeline: p, jobs: [d], environment: staging }
";

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn lana_env(k: &str) -> Option<String> {
        match k {
            "GITHUB_TOKEN" => Some("gh-secret".into()),
            "CONCOURSE_PASSWORD" => Some("ci-secret".into()),
            "CONCOURSE_TOKEN" => Some("ci-token".into()),
            _ => None,
        }
    }

    fn problems(text: &str) -> Vec<String> {
        problems_env(text, &no_env)
    }

    fn problems_env(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
        match parse(text, "t.yaml", env) {
            Ok(_) => vec![],
            Err(e) => e.lines(),
        }
    }

    #[track_caller]
    fn check(text: &str, expected: &[&str]) {
        assert_eq!(problems(text), expected, "\n{text}");
    }

    #[test]
    fn minimal_config_gets_the_defaults() {
        let cfg = parse(MINIMAL, "t.yaml", &no_env).unwrap();
        assert_eq!(cfg.repository.branch, "main");
        assert_eq!(cfg.repository.api_url, "https://api.github.com");
        assert!(cfg.repository.token.is_none());
        assert_eq!(cfg.concourse.url, "http://ci");
        assert!(matches!(cfg.concourse.auth, ConcourseAuth::None));
        assert_eq!(cfg.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(cfg.poll_interval, Duration::from_secs(30));
        assert_eq!(cfg.retention, Duration::from_secs(90 * 86_400));
        assert_eq!(cfg.not_picked_up_after, Duration::from_secs(300));
        assert_eq!(cfg.lead_time_from, LeadTimeFrom::CommitterDate);
        assert_eq!(cfg.state_path, PathBuf::from(DEFAULT_STATE_PATH));
        let core = cfg.core();
        assert_eq!(core.stages[0].after, Vec::<usize>::new());
        assert_eq!(core.stages[1].after, vec![0]);
        assert_eq!(core.stages[1].jobs[0].git, vec!["repo".to_string()]);
        assert!(core.stages[0].carries_passive);
        assert_eq!(cfg.resources[0].pipeline, "p");
    }

    #[test]
    fn lana_example_builds_the_core_and_source_configs() {
        let cfg = parse(include_str!("../examples/lana.yaml"), "lana.yaml", &lana_env).unwrap();
        let core = cfg.core();
        let names: Vec<&str> = core.stages.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["tests", "edge-images", "build-rc", "chart-bump", "testflight", "deployments-bump", "staging"]
        );
        let after: Vec<Vec<usize>> = core.stages.iter().map(|s| s.after.clone()).collect();
        assert_eq!(after, [vec![], vec![], vec![0, 1], vec![2], vec![3], vec![4], vec![5]]);
        assert_eq!(core.stages[0].stuck_after, Some(1800));
        assert_eq!(core.stages[4].stuck_after, Some(1200));
        assert_eq!(core.stages[6].stuck_after, Some(1500));
        assert_eq!(core.environments(), ["staging"]);
        assert_eq!(core.not_picked_up_after, 300);
        assert_eq!(
            core.stages[4].bridges,
            [Bridge::MessageContains {
                input: "lana-bank-chart".into(),
                output: "latest-image".into(),
                key: "digest".into()
            }]
        );
        assert_eq!(core.stages[6].fallback_git_input.as_deref(), Some("lana-repo"));
        let kinds: Vec<SourceKind> = core.classifier.resources().iter().map(|r| r.kind).collect();
        assert_eq!(kinds, [SourceKind::Backend, SourceKind::Frontend, SourceKind::Frontend, SourceKind::Dagster]);

        let gh = cfg.github();
        assert_eq!((gh.owner.as_str(), gh.repo.as_str(), gh.branch.as_str()), ("GaloyMoney", "lana-bank", "main"));
        assert_eq!(gh.token.as_ref().map(|t| t.expose()), Some("gh-secret"));

        let cc = cfg.concourse();
        let ConcourseAuth::Password { username, password } = &cc.auth else { panic!("{:?}", cc.auth) };
        assert_eq!((username.as_str(), password.expose()), ("deploy-journey", "ci-secret"));
        let p: Vec<(&str, usize, &[String])> =
            cc.pipelines.iter().map(|p| (p.name.as_str(), p.jobs.len(), p.message_inputs.as_slice())).collect();
        assert_eq!(
            p,
            [
                ("lana-bank", 8, &[][..]),
                ("private-charts", 2, &["lana-bank-chart".to_string()][..]),
                ("galoy-staging", 1, &[][..])
            ]
        );
    }

    #[test]
    fn problems_are_collected_with_their_paths() {
        check(
            "
repository: { github: lana-bank, api_url: ftp://x }
concourse: { url: https://ci, team: '', auth: { username: u, token_env: T } }
poll_interval: soon
lead_time_from: merge_date
resources:
  repo: { paths: [ok, 'a b', ''], ignore_paths: ['../x'], kind: web }
stages:
  - { name: tests, pipeline: p, jobs: [t], git: [repo, nope], stuck_after: 0s }
  - { name: tests, pipeline: p, jobs: [] , after: [later, tests] }
  - { name: later, pipeline: p, jobs: [t, { name: u, git: [] }], inputs: [] }
",
            &[
                "repository.github: \"lana-bank\" is not owner/name, e.g. GaloyMoney/lana-bank",
                "repository.api_url: \"ftp://x\" is not an http(s) URL",
                "concourse.team: must not be empty",
                "concourse.auth: give either token_file/token_env or username + password_file/password_env",
                "poll_interval: \"soon\" is not a duration (expected number at 0); write e.g. 30s, 5m, 90d",
                "lead_time_from: \"merge_date\" is not one of committer_date (default), author_date, first_seen",
                "resources.repo.paths[1]: \"a b\" contains ' ', which git-resource's shell command line would split or interpret",
                "resources.repo.paths[2]: must not be empty",
                "resources.repo.ignore_paths[0]: \"../x\" is not a valid pathspec: The path leaves the repository",
                "resources.repo.kind: \"web\" is not one of backend (default), frontend, dagster",
                "stages[0].git[1]: unknown resource \"nope\" (resources: repo)",
                "stages[0].stuck_after: must be greater than 0",
                "stages[1].name: \"tests\" is already the name of stages[0]",
                "stages[1].jobs: must not be empty",
                "stages[1].after[0]: stage \"later\" is not an earlier stage",
                "stages[2].jobs[0]: job \"t\" of pipeline \"p\" is already in stages[0]",
                "stages[2].jobs[1].git: must name at least one resource (leave it out for all of them)",
                "stages[2].inputs: must not be empty (leave it out to let every input carry commits)",
                "stages: no stage has an environment; mark the deploy stage with environment: <name> (lana: staging)",
            ],
        );
    }

    #[test]
    fn missing_sections_and_fields() {
        check(
            "",
            &[
                "repository: is required (github: owner/name, branch, api_url, token_file or token_env)",
                "concourse: is required (url, team, auth)",
                "resources: is required: the tracked git resources and their path filters",
                "stages: is required: the stages a commit goes through, in order",
            ],
        );
        check(
            "
repository: {}
concourse: {}
resources: {}
stages: [{}]
",
            &[
                "repository.github: is required",
                "concourse.url: is required",
                "concourse.team: is required",
                "resources: must name at least one git resource",
                "stages[0].name: is required",
                "stages[0].pipeline: is required",
                "stages[0].jobs: must not be empty",
                "stages: no stage has an environment; mark the deploy stage with environment: <name> (lana: staging)",
            ],
        );
    }

    #[test]
    fn bridges_and_after() {
        let stages = "
  - { name: a, pipeline: p, jobs: [x] }
  - name: b
    pipeline: q
    jobs: [y]
    after: [a, nope, a]
    inputs: [chart]
    bridges:
      - message_contains: { input: chrt, output: img, key: digest }
      - equals: { input: chart, output: o }
    fallback: {}
    environment: staging
";
        let text = MINIMAL.split("stages:").next().unwrap().to_string() + "stages:" + stages;
        check(
            &text,
            &[
                "stages[1].after[1]: unknown stage \"nope\"",
                "stages[1].bridges[0].message_contains.input: unknown input step \"chrt\": stages[1].inputs lists chart",
                "stages[1].bridges[1].equals.input_key: is required",
                "stages[1].bridges[1].equals.key: is required",
                "stages[1].fallback.git_input: is required",
            ],
        );
        // An unknown bridge kind is a decode error with its path.
        let bad = text.replace("equals: { input: chart, output: o }", "same: { input: chart }");
        let p = problems(&bad);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with("stages[1].bridges[1]: unknown variant `same`, expected `message_contains` or `equals`"),
            "{p:?}"
        );
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_path() {
        let text = MINIMAL.replace("team: dev", "team: dev, tean: dev");
        assert_eq!(
            problems(&text),
            ["concourse: unknown field `tean`, expected one of `url`, `team`, `auth`, `timeout` (line 3, column 44)"]
        );
        let text = MINIMAL.replace("jobs: [t]", "jobs: [{ name: t, gti: [repo] }]");
        assert_eq!(
            problems(&text),
            ["stages[0].jobs[0]: unknown field `gti`, expected `name` or `git` (line 6, column 51)"]
        );
        let text = MINIMAL.replace("concourse: { url: 'http://ci/', team: dev }", "concourse: https://ci");
        assert_eq!(
            problems(&text),
            ["concourse: invalid type: string \"https://ci\", expected a mapping: url, team, auth (line 3, column 12)"]
        );
        let text = format!("{MINIMAL}extra: 1\n");
        let p = problems(&text);
        assert!(p[0].starts_with("unknown field `extra`, expected one of `repository`"), "{p:?}");
    }

    #[test]
    fn every_problem_is_reported_at_once_across_sections() {
        // An unknown key in one section, an unknown key deeper in another and a bad value in a
        // third: one run names all three. The first keeps its line; later ones are found after
        // the unknown keys are taken out, where lines no longer hold, so they carry paths only.
        let text = MINIMAL
            .replace("github: o/r", "github: o/r, tokn: x")
            .replace("jobs: [t]", "jobs: [{ name: t, gti: [repo] }]")
            .replace("url: 'http://ci/'", "url: 'ftp://x'");
        assert_eq!(
            problems(&text),
            [
                "repository: unknown field `tokn`, expected one of `github`, `branch`, `api_url`, `token_file`, `token_env`, `timeout`, `initial_commits`, `webhook_secret_file`, `webhook_secret_env`, `poll_interval` (line 2, column 28)",
                "stages[0].jobs[0]: unknown field `gti`, expected `name` or `git`",
                "concourse.url: \"ftp://x\" is not an http(s) URL",
            ]
        );
        // A wrong type still ends decoding (what follows would be guesses), after the unknown
        // keys found before it.
        let text = MINIMAL.replace("github: o/r", "github: o/r, tokn: x").replace("jobs: [t]", "jobs: 7");
        let p = problems(&text);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            p[0].starts_with("repository: unknown field `tokn`") && p[1].starts_with("stages[0].jobs: invalid type"),
            "{p:?}"
        );
    }

    #[test]
    fn syntax_errors_are_one_problem() {
        let p = problems("repository: { github: o/r\nconcourse: [");
        assert_eq!(p.len(), 1);
        assert!(p[0].contains("line"), "{p:?}");
    }

    #[test]
    fn literal_secrets_are_rejected_without_echoing_them() {
        let text = MINIMAL
            .replace("github: o/r", "github: o/r, token: ghp_TOPSECRET1")
            .replace("team: dev", "team: dev, auth: { username: u, password: hunter2-TOPSECRET2, password_env: PW }");
        let env = |k: &str| (k == "PW").then(|| "pw".to_string());
        let err = parse(&text, "t.yaml", &env).unwrap_err();
        let shown = format!("{err}\n{err:?}");
        assert!(!shown.contains("TOPSECRET"), "{shown}");
        assert_eq!(
            err.lines(),
            [
                "repository.token: secrets are not read from the config file; use token_file or token_env (default GITHUB_TOKEN)",
                "concourse.auth.password: secrets are not read from the config file; use concourse.auth.password_file or concourse.auth.password_env (default CONCOURSE_PASSWORD)",
            ]
        );
        // Other problems are still found alongside.
        let text = text.replace("jobs: [t]", "jobs: []");
        let p = problems_env(&text, &env);
        assert_eq!(p.len(), 3, "{p:?}");
        assert_eq!(p[2], "stages[0].jobs: must not be empty");
    }

    #[test]
    fn secrets_from_env_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "s3cret\n").unwrap();
        let auth = |a: &str| MINIMAL.replace("team: dev", &format!("team: dev, auth: {a}"));
        let with = |a: &str| parse(&auth(a), "t.yaml", &lana_env);

        let cfg = with(&format!("{{ username: u, password_file: '{}' }}", f.display())).unwrap();
        let ConcourseAuth::Password { password, .. } = &cfg.concourse.auth else { panic!() };
        assert_eq!(password.expose(), "s3cret");
        assert_eq!(cfg.concourse.auth_source, Some(SecretSource::File(f.clone())));

        // password_env defaults to CONCOURSE_PASSWORD.
        let cfg = with("{ username: u }").unwrap();
        let ConcourseAuth::Password { password, .. } = &cfg.concourse.auth else { panic!() };
        assert_eq!(password.expose(), "ci-secret");

        let cfg = with("{ token_env: CONCOURSE_TOKEN }").unwrap();
        assert!(matches!(&cfg.concourse.auth, ConcourseAuth::Bearer(t) if t.expose() == "ci-token"));

        // No auth section: the default token variable when set, else public.
        let cfg = parse(MINIMAL, "t.yaml", &lana_env).unwrap();
        assert!(matches!(&cfg.concourse.auth, ConcourseAuth::Bearer(t) if t.expose() == "ci-token"));
        assert_eq!(cfg.repository.token.as_ref().map(|t| t.expose()), Some("gh-secret"));

        let missing = dir.path().join("nope");
        let p = problems_env(&auth(&format!("{{ token_file: '{}' }}", missing.display())), &lana_env);
        assert_eq!(p.len(), 1);
        assert!(p[0].starts_with(&format!("concourse.auth.token_file: cannot read {}: ", missing.display())), "{p:?}");
        std::fs::write(&f, "\n").unwrap();
        assert_eq!(
            problems_env(&auth(&format!("{{ token_file: '{}' }}", f.display())), &lana_env),
            [format!("concourse.auth.token_file: {} is empty", f.display())]
        );

        check(&auth("{ token_env: NOPE }"), &["concourse.auth.token_env: environment variable NOPE is not set"]);
        check(
            &auth("{ username: u }"),
            &[
                "concourse.auth.password_env: environment variable CONCOURSE_PASSWORD (the default) is not set; or give password_file",
            ],
        );
        check(
            &auth("{ password_env: PW }"),
            &[
                "concourse.auth.username: is required with password_file/password_env",
                "concourse.auth.password_env: environment variable PW is not set",
            ],
        );
        check(
            &auth("{}"),
            &["concourse.auth: give either token_file/token_env or username + password_file/password_env"],
        );
        check(&auth("{ token_env: A, token_file: b }"), &["concourse.auth: give token_file or token_env, not both"]);
        // A pasted token where a variable name belongs is not repeated.
        let p = problems(&auth("{ token_env: ghp_abcdefTOPSECRET }"));
        assert_eq!(p.len(), 1);
        assert!(!p[0].contains("TOPSECRET") && p[0].starts_with("concourse.auth.token_env: is not an environment"));
        check(
            &MINIMAL.replace("github: o/r", "github: o/r, token_env: GH"),
            &["repository.token_env: environment variable GH is not set"],
        );
    }

    #[test]
    fn aliases_become_step_resources() {
        let text = MINIMAL.replace("repo: {}", "repo: { aliases: [lana-main] }, other: { aliases: [repo, lana-main] }");
        check(
            &text,
            &[
                "resources.other.aliases[0]: \"repo\" is the name of a resource",
                "resources.other.aliases[1]: \"lana-main\" is already an alias of repo",
            ],
        );
        let cfg = parse(&MINIMAL.replace("repo: {}", "repo: { aliases: [lana-main] }"), "t", &no_env).unwrap();
        assert_eq!(cfg.core().step_resources.get("lana-main").map(String::as_str), Some("repo"));
    }

    #[test]
    fn errors_display_one_line_per_problem_with_the_file_name() {
        let err = parse("repository: {}\n", "conf/x.yaml", &no_env).unwrap_err();
        let text = err.to_string();
        assert!(text.lines().count() >= 3);
        assert!(text.lines().all(|l| l.starts_with("conf/x.yaml: ")), "{text}");
    }

    #[test]
    fn durations_format_compactly() {
        for (secs, s) in [(90 * 86_400, "90d"), (1800, "30m"), (5400, "1h30m"), (45, "45s"), (86_461, "1d1m1s")] {
            assert_eq!(format_duration(Duration::from_secs(secs)), s);
        }
    }

    #[test]
    fn uris_name_their_repository() {
        for (uri, want) in [
            ("git@github.com:GaloyMoney/lana-bank.git", Some("GaloyMoney/lana-bank")),
            ("https://github.com/GaloyMoney/lana-bank", Some("GaloyMoney/lana-bank")),
            ("ssh://git@github.com/GaloyMoney/lana-bank.git/", Some("GaloyMoney/lana-bank")),
            ("lana-bank", None),
        ] {
            assert_eq!(repo_of_uri(uri).as_deref(), want, "{uri}");
        }
    }

    #[test]
    fn summary_names_everything_but_secrets() {
        let cfg = parse(include_str!("../examples/lana.yaml"), "lana.yaml", &lana_env).unwrap();
        let s = summary(&cfg);
        for needle in [
            "GaloyMoney/lana-bank branch main",
            "token from env GITHUB_TOKEN",
            "https://ci.galoy.io team dev (password grant as deploy-journey, password from env CONCOURSE_PASSWORD)",
            "7. staging (galoy-staging): galoy-staging-lana-bank",
            "stuck after: 25m",
            "success means: deployed to staging",
            "lana-bank-chart contains digest of output latest-image",
        ] {
            assert!(s.contains(needle), "{needle:?} not in\n{s}");
        }
        assert!(!s.contains("secret"), "{s}");
    }

    /// Loaded lazily, unset credential variables are not problems: they are kept for the
    /// commands that call an API, and every other problem is still found.
    #[test]
    fn lazy_secrets_defer_missing_credentials_to_the_commands_that_need_them() {
        let auth = |a: &str| MINIMAL.replace("team: dev", &format!("team: dev, auth: {a}"));
        #[track_caller]
        fn check(text: &str, problems: &[&str], missing: &[&str]) {
            match parse_with(text, "t.yaml", &no_env, true) {
                Ok(cfg) => {
                    assert!(problems.is_empty(), "want problems {problems:?}");
                    let got: Vec<String> = cfg.missing_secrets.iter().map(|p| p.to_string()).collect();
                    assert_eq!(got, missing);
                    match cfg.require_credentials() {
                        Ok(()) => assert!(missing.is_empty()),
                        Err(e) => assert_eq!(e.lines(), missing),
                    }
                }
                Err(e) => assert_eq!(e.lines(), problems),
            }
        }
        check(
            &MINIMAL.replace("github: o/r", "github: o/r, token_env: GH"),
            &[],
            &["repository.token_env: environment variable GH is not set"],
        );
        check(
            &auth("{ username: u }"),
            &[],
            &[
                "concourse.auth.password_env: environment variable CONCOURSE_PASSWORD (the default) is not set; or give password_file",
            ],
        );
        // Anonymous GitHub and public Concourse need nothing.
        check(MINIMAL, &[], &[]);
        // Real problems are still problems; a missing secret beside them is not listed twice.
        check(
            &auth("{ password_env: PW }"),
            &["concourse.auth.username: is required with password_file/password_env"],
            &[],
        );
        check(
            &auth("{ token_env: A, token_file: b }"),
            &["concourse.auth: give token_file or token_env, not both"],
            &[],
        );
        // A secret file not there (yet: secrets are often mounted only where it runs) is a
        // missing credential too, so `check-config --offline` passes without it.
        check(
            &auth("{ username: u, password_file: /nonexistent/deploy-journey/pw }")
                .replace("github: o/r", "github: o/r, token_file: /nonexistent/deploy-journey/gh"),
            &[],
            &[
                "repository.token_file: cannot read /nonexistent/deploy-journey/gh: No such file or directory (os error 2)",
                "concourse.auth.password_file: cannot read /nonexistent/deploy-journey/pw: No such file or directory (os error 2)",
            ],
        );
    }
}
