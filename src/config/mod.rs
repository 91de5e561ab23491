//! The configuration file: which repository and branch to follow, where Concourse is, and the
//! stages a commit goes through (so the same file also documents the pipeline).
//!
//! Loading happens in two phases:
//! 1. **Decode** (`raw.rs`). The YAML is read into raw structs with `deny_unknown_fields`. A
//!    syntax error or an unknown key stops here, as one problem with its path (that is what serde
//!    reports). Before that, keys that would hold a secret in the file body (`token:`,
//!    `password:`) are taken out and reported, without their values.
//! 2. **Validate** (`validate.rs`). Every semantic problem (missing or empty fields, bad
//!    durations, pathspecs git would reject, unknown resources and stages, auth that is neither a
//!    token nor a user and password, unreadable secret files, ...) is collected, each with its
//!    path, and all of them are reported at once.
//!
//! `summary.rs` is what `check-config` prints, including the drift from the live pipelines.
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
/// `keep_in_memory`: a week of journeys is derived live; older settled ones are read from the store.
pub const DEFAULT_KEEP_IN_MEMORY: Duration = Duration::from_secs(7 * 86_400);
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
    /// Read each new commit's pull request, reviews and Actions runs (`pull_requests`).
    pub pull_requests: bool,
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
    /// `keep_in_memory`: how long settled journeys stay in memory, derived every cycle, before
    /// they are stored as documents ([`Config::memory_window`]).
    pub keep_in_memory: Duration,
    pub lead_time_from: LeadTimeFrom,
    /// `journey_ends_at`: the environment a journey ends at (default: the last one).
    pub journey_ends_at: Option<String>,
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
    /// `dora:` which environment DORA is about, the failure window, the SLO, hotfix rules.
    pub dora: crate::core::deployments::DoraConfig,
    /// `links:` where the pages link a journey's trace (Grafana Explore on Tempo).
    pub links: crate::pages::Links,
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
            dora: self.dora.clone(),
            journey_ends_at: self.journey_ends_at.clone(),
        }
    }

    /// How far back journeys stay in memory, derived every cycle: `keep_in_memory`, but never
    /// longer than `retention` (what is older is gone anyway) and never shorter than
    /// `dora.failure_window` plus a day, so a deployment's failure (a revert or hotfix within the
    /// window) and a late rerun are known before its journeys settle.
    pub fn memory_window(&self) -> Duration {
        let floor = Duration::from_secs(self.dora.failure_window.max(0) as u64) + DAY;
        self.keep_in_memory.max(floor).min(self.retention)
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

    /// The tracked repository as `owner/name`.
    pub fn repository_slug(&self) -> String {
        format!("{}/{}", self.repository.owner, self.repository.name)
    }

    /// The repository's web address, for commit links (github.com, GitHub Enterprise or the
    /// simulator: the host the API is on).
    pub fn repository_web_url(&self) -> String {
        crate::sinks::traces::repository_web_url(
            &self.repository.api_url,
            &self.repository.owner,
            &self.repository.name,
        )
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

mod raw;
mod summary;
#[cfg(test)]
mod tests;
mod validate;

use raw::decode;
pub use summary::{job_differences, resource_differences, summary};
use validate::Validator;
pub use validate::format_duration;
