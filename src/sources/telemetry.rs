//! What the sources report about themselves: requests by outcome, errors by kind, whether the
//! last poll worked, when one last did, how long it took, and GitHub's remaining quota.
//!
//! [`SourceTelemetry`] is shared (`Arc`) between the sources, which write, and a metrics sink,
//! which reads plain [`SourceSnapshot`]s; nothing here knows Prometheus. The request plumbing
//! both sources share (retries, status and transport classification, `Link` headers, URLs) is
//! in [`client`](super::client).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use super::ErrorKind;

/// The sources, in a fixed order (a bounded metric label).
pub const SOURCES: [&str; 2] = ["github", "concourse"];

/// How one HTTP request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestOutcome {
    Ok,
    /// 304: the cached answer still holds (GitHub does not charge these).
    NotModified,
    Error(ErrorKind),
}

impl RequestOutcome {
    pub const LABELS: [&'static str; 3] = ["ok", "not_modified", "error"];
    pub fn as_str(self) -> &'static str {
        match self {
            RequestOutcome::Ok => "ok",
            RequestOutcome::NotModified => "not_modified",
            RequestOutcome::Error(_) => "error",
        }
    }
}

/// One source's numbers at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSnapshot {
    pub requests_ok: u64,
    pub requests_not_modified: u64,
    pub requests_error: u64,
    /// Failed requests by kind; every kind is present (0 until it happens) so series never gap.
    pub errors: BTreeMap<ErrorKind, u64>,
    /// Polls that returned `Ok` / `Err`.
    pub polls_ok: u64,
    pub polls_failed: u64,
    /// The last poll returned `Ok`. False before the first poll.
    pub up: bool,
    /// Wall-clock Unix seconds of the last successful poll (as passed in by the caller).
    pub last_success: Option<i64>,
    pub last_poll_duration: Option<Duration>,
    /// GitHub's `x-ratelimit-remaining` from the newest response that carried it.
    pub rate_limit_remaining: Option<u64>,
    /// GitHub's `x-ratelimit-reset` (Unix seconds) from the same response.
    pub rate_limit_reset: Option<i64>,
}

impl Default for SourceSnapshot {
    fn default() -> Self {
        SourceSnapshot {
            requests_ok: 0,
            requests_not_modified: 0,
            requests_error: 0,
            errors: ErrorKind::ALL.iter().map(|k| (*k, 0)).collect(),
            polls_ok: 0,
            polls_failed: 0,
            up: false,
            last_success: None,
            last_poll_duration: None,
            rate_limit_remaining: None,
            rate_limit_reset: None,
        }
    }
}

impl SourceSnapshot {
    pub fn requests(&self) -> u64 {
        self.requests_ok + self.requests_not_modified + self.requests_error
    }
    pub fn errors_of(&self, kind: ErrorKind) -> u64 {
        self.errors.get(&kind).copied().unwrap_or(0)
    }
}

/// Counters for every source, behind one lock (updates are a few integer writes).
#[derive(Debug)]
pub struct SourceTelemetry {
    inner: Mutex<BTreeMap<&'static str, SourceSnapshot>>,
}

impl Default for SourceTelemetry {
    fn default() -> Self {
        SourceTelemetry::new()
    }
}

impl SourceTelemetry {
    pub fn new() -> SourceTelemetry {
        SourceTelemetry { inner: Mutex::new(SOURCES.iter().map(|s| (*s, SourceSnapshot::default())).collect()) }
    }

    fn with<R>(&self, source: &'static str, f: impl FnOnce(&mut SourceSnapshot) -> R) -> R {
        // Plain counters: a panic elsewhere while holding the lock leaves them usable.
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(g.entry(source).or_default())
    }

    pub fn record_request(&self, source: &'static str, outcome: RequestOutcome) {
        self.with(source, |s| match outcome {
            RequestOutcome::Ok => s.requests_ok += 1,
            RequestOutcome::NotModified => s.requests_not_modified += 1,
            RequestOutcome::Error(kind) => {
                s.requests_error += 1;
                *s.errors.entry(kind).or_insert(0) += 1;
            }
        });
    }

    /// The end of one poll; `now` is wall-clock Unix seconds.
    pub fn record_poll(&self, source: &'static str, ok: bool, now: i64, duration: Duration) {
        self.with(source, |s| {
            s.up = ok;
            s.last_poll_duration = Some(duration);
            if ok {
                s.polls_ok += 1;
                s.last_success = Some(now);
            } else {
                s.polls_failed += 1;
            }
        });
    }

    pub fn set_rate_limit(&self, source: &'static str, remaining: u64, reset: Option<i64>) {
        self.with(source, |s| {
            s.rate_limit_remaining = Some(remaining);
            if reset.is_some() {
                s.rate_limit_reset = reset;
            }
        });
    }

    pub fn snapshot(&self, source: &str) -> SourceSnapshot {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.get(source).cloned().unwrap_or_default()
    }

    /// Every source's snapshot, in [`SOURCES`] order (then any other name).
    pub fn snapshots(&self) -> Vec<(&'static str, SourceSnapshot)> {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<(&'static str, SourceSnapshot)> = g.iter().map(|(k, s)| (*k, s.clone())).collect();
        v.sort_by_key(|(k, _)| SOURCES.iter().position(|s| s == k).unwrap_or(usize::MAX));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_start_at_zero_for_every_source_and_kind() {
        let t = SourceTelemetry::new();
        let all = t.snapshots();
        assert_eq!(all.iter().map(|(s, _)| *s).collect::<Vec<_>>(), SOURCES);
        for (_, s) in all {
            assert_eq!(s.errors.len(), ErrorKind::ALL.len());
            assert!(!s.up);
        }
    }

    #[test]
    fn requests_errors_and_polls_are_counted() {
        let t = SourceTelemetry::new();
        t.record_request("github", RequestOutcome::Ok);
        t.record_request("github", RequestOutcome::NotModified);
        t.record_request("github", RequestOutcome::Error(ErrorKind::RateLimited));
        t.record_poll("github", true, 100, Duration::from_millis(5));
        t.record_poll("github", false, 130, Duration::from_millis(7));
        t.set_rate_limit("github", 4999, Some(200));
        let s = t.snapshot("github");
        assert_eq!((s.requests_ok, s.requests_not_modified, s.requests_error), (1, 1, 1));
        assert_eq!(s.errors_of(ErrorKind::RateLimited), 1);
        assert_eq!((s.up, s.last_success, s.polls_ok, s.polls_failed), (false, Some(100), 1, 1));
        assert_eq!(s.rate_limit_remaining, Some(4999));
        assert_eq!(t.snapshot("concourse").requests(), 0);
    }
}
