//! Sources: the only code that knows Concourse's and GitHub's JSON. Each turns API answers into
//! core [`Fact`](crate::core::journey::Fact)s.

pub mod client;
pub mod concourse;
pub mod github;
pub mod redact;
pub mod telemetry;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Backfill: of the reads a history walk knows it has to make (a commit's files, a build's
/// resources), how many are made, for a progress display with an ETA.
#[derive(Debug, Default)]
pub struct HistoryTally {
    done: AtomicU64,
    total: AtomicU64,
}

impl HistoryTally {
    pub fn add_total(&self, n: u64) {
        self.total.fetch_add(n, Ordering::Relaxed);
    }
    pub fn add_done(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }
    /// (done, total)
    pub fn get(&self) -> (u64, u64) {
        (self.done.load(Ordering::Relaxed), self.total.load(Ordering::Relaxed))
    }
}

/// A credential read from the environment or a file. Never printed: `Debug` and `Display` are
/// redacted, and the value is reachable only through [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The fixed set of error kinds sources report (a bounded metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorKind {
    /// No answer in time.
    Timeout,
    /// Connection refused, reset, DNS, TLS.
    Connect,
    /// 5xx.
    Server,
    /// 401/403 (not rate limiting): bad or expired credentials.
    Auth,
    /// GitHub 403/429 rate limiting.
    RateLimited,
    /// A pipeline, job or repository that is not there (404).
    NotFound,
    /// Other 4xx.
    Client,
    /// A body that is not the JSON we expect (malformed, truncated, wrong shape).
    Decode,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 8] = [
        ErrorKind::Timeout,
        ErrorKind::Connect,
        ErrorKind::Server,
        ErrorKind::Auth,
        ErrorKind::RateLimited,
        ErrorKind::NotFound,
        ErrorKind::Client,
        ErrorKind::Decode,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::Connect => "connect",
            ErrorKind::Server => "server",
            ErrorKind::Auth => "auth",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Client => "client",
            ErrorKind::Decode => "decode",
        }
    }
}

/// A failed request or poll. The message never contains a credential.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{source_name} {what}: {kind:?}: {detail}")]
pub struct SourceError {
    pub source_name: &'static str,
    pub kind: ErrorKind,
    /// What was being done, e.g. `GET /api/v1/builds/42/resources`.
    pub what: String,
    pub detail: String,
    /// When the server said how long to wait (Retry-After, rate-limit reset).
    pub retry_after: Option<Duration>,
}

/// GitHub: the tracked repository and branch.
#[derive(Debug, Clone)]
pub struct GithubConfig {
    /// API base, e.g. `https://api.github.com`.
    pub api_url: String,
    pub owner: String,
    pub repo: String,
    pub branch: String,
    pub token: Option<Secret>,
    pub timeout: Duration,
    /// How many commits of history to read when nothing is known yet.
    pub initial_commits: usize,
}

#[derive(Debug, Clone)]
pub enum ConcourseAuth {
    /// Public pipelines only.
    None,
    Bearer(Secret),
    /// A local user (viewer role), password grant, re-login before expiry and on 401.
    Password {
        username: String,
        password: Secret,
    },
}

/// A pipeline and the jobs of it to follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchedPipeline {
    pub name: String,
    pub jobs: Vec<String>,
    /// Input steps whose version's commit message a bridge needs (read from version metadata).
    pub message_inputs: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ConcourseConfig {
    pub url: String,
    pub team: String,
    pub auth: ConcourseAuth,
    pub pipelines: Vec<WatchedPipeline>,
    pub timeout: Duration,
}
