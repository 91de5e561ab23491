//! `watch` and `report`: follow one commit to an environment from a terminal, with the same
//! engine and configuration as the exporter, and print its timeline.
//!
//! - `target` parses what to follow (sha, PR, head) and GitHub's approval rule.
//! - `plan` says which path the commit takes and where following ends.
//! - `monitor` turns successive journey views into display events, warnings and a verdict.
//! - `report` renders the timeline (text, JSON).
//! - `display` shows it live: in place on a terminal (indicatif), plain lines otherwise.
//! - `run` is the loop: a clock, a journey feed (standalone sources + engine, or an exporter's
//!   JSON API), merging a PR, log tails of failed builds.

pub mod display;
pub mod monitor;
pub mod plan;
pub mod report;
pub mod run;
pub mod target;

/// Exit codes of `watch` and `report` (also in `--help` and the README).
pub mod exit {
    /// Deployed / reached the target stage (`report`: printed).
    pub const REACHED: u8 = 0;
    /// A stage failed (a build carrying the commit failed and nothing carrying it runs).
    pub const FAILED: u8 = 1;
    /// Bad input: arguments, configuration, unknown commit or PR, a stage that does not apply.
    pub const BAD_INPUT: u8 = 2;
    /// `--timeout` passed first.
    pub const TIMED_OUT: u8 = 3;
    /// `--merge`: the pull request is not approved or not mergeable; nothing was merged.
    pub const NOT_MERGED: u8 = 4;
    /// GitHub, Concourse or the exporter could not be reached or answered wrongly.
    pub const UNAVAILABLE: u8 = 5;
}

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("target {target:?}: {why}")]
    BadTarget { target: String, why: String },
    #[error("--until {until:?}: no such stage or environment (stages: {known})")]
    BadUntil { until: String, known: String },
    #[error("commit {0}: not found on the tracked branch")]
    UnknownCommit(String),
    #[error("pull request #{number}: {why}")]
    Pull { number: u64, why: String },
    #[error("{0}")]
    Source(#[from] crate::sources::SourceError),
    #[error("exporter {url}: {why}")]
    Exporter { url: String, why: String },
    #[error("simulator clock {url}: {why}")]
    Clock { url: String, why: String },
    #[error("stage {stage} does not apply to this commit; choose another --until")]
    NotApplicable { stage: String },
    #[error(
        "{sha}: its journey is incomplete: the commit is older than the build history the exporter read; run `deploy-journey backfill` to read further back"
    )]
    Incomplete { sha: String },
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
}

impl WatchError {
    /// The exit code this error ends the command with.
    pub fn exit_code(&self) -> u8 {
        match self {
            WatchError::BadTarget { .. }
            | WatchError::BadUntil { .. }
            | WatchError::UnknownCommit(_)
            | WatchError::Pull { .. }
            | WatchError::NotApplicable { .. }
            | WatchError::Incomplete { .. } => exit::BAD_INPUT,
            WatchError::Source(_) | WatchError::Exporter { .. } | WatchError::Clock { .. } => exit::UNAVAILABLE,
            WatchError::Output(_) => exit::FAILED,
        }
    }
}

/// `42s`, `12m 34s`, `2h 3m 4s`; negative durations (clock skew) show as 0s.
pub fn fmt_secs(secs: i64) -> String {
    let s = secs.max(0);
    if s >= 3600 {
        format!("{}h {}m {}s", s / 3600, s % 3600 / 60, s % 60)
    } else if s >= 60 {
        format!("{}m {}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations() {
        for (s, want) in [(0, "0s"), (59, "59s"), (60, "1m 0s"), (754, "12m 34s"), (7384, "2h 3m 4s"), (-5, "0s")] {
            assert_eq!(super::fmt_secs(s), want);
        }
    }
}
