//! Fault injection, switchable per service and route: 5xx bursts, delays, timeouts, connection
//! resets, malformed or truncated JSON, GitHub rate limiting, and a pipeline that disappears.
//! Expired tokens are not faked here: `control` expires the real tokens, so the real 401 path runs.

use std::sync::Mutex;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultKind {
    /// Answer with this status (default 503) and a short error body.
    ServerError {
        #[serde(default = "default_5xx")]
        status: u16,
    },
    /// Answer normally after a delay.
    Delay { ms: u64 },
    /// Never answer within any sane client timeout (hangs for `ms`, default 120 s).
    Timeout {
        #[serde(default = "default_timeout")]
        ms: u64,
    },
    /// Drop the connection before a complete response.
    Reset,
    /// 200 with a body that is not JSON.
    Malformed,
    /// 200 with the real body cut in half.
    Truncated,
    /// 200 with the real body, one byte in its middle replaced by a NUL (damaged in transit or
    /// by a proxy): whole-length but undecodable, everything around the damage intact.
    Corrupted,
    /// GitHub's rate limiting: 403 with `x-ratelimit-remaining: 0` and a reset time, or 429 with
    /// `Retry-After` (secondary limit).
    RateLimit {
        #[serde(default = "default_429")]
        status: u16,
        #[serde(default = "default_retry")]
        retry_after_secs: u64,
    },
    /// A pipeline that disappears: its routes answer 404.
    PipelineGone { pipeline: String },
}

fn default_5xx() -> u16 {
    503
}
fn default_timeout() -> u64 {
    120_000
}
fn default_429() -> u16 {
    429
}
fn default_retry() -> u64 {
    60
}

// `deny_unknown_fields` does not work with `flatten`; `FaultRule::parse` checks keys instead.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FaultRule {
    #[serde(flatten)]
    pub kind: FaultKind,
    /// `github`, `concourse` or `any`.
    #[serde(default = "any")]
    pub service: String,
    /// Only requests whose path contains this string.
    #[serde(default)]
    pub path_contains: Option<String>,
    /// Fraction of matching requests affected (1.0 = all).
    #[serde(default = "all")]
    pub probability: f64,
    /// Affect at most this many requests, then expire.
    #[serde(default)]
    pub count: Option<u64>,
    /// Expire at this virtual time (Unix seconds).
    #[serde(default)]
    pub until: Option<i64>,
}

fn any() -> String {
    "any".into()
}
fn all() -> f64 {
    1.0
}

impl FaultRule {
    /// Parse a rule from JSON, rejecting unknown keys by name.
    pub fn parse(json: &[u8]) -> Result<FaultRule, String> {
        const KNOWN: &[&str] = &[
            "kind",
            "service",
            "path_contains",
            "probability",
            "count",
            "until",
            "status",
            "ms",
            "retry_after_secs",
            "pipeline",
        ];
        let v: serde_json::Value = serde_json::from_slice(json).map_err(|e| e.to_string())?;
        if let Some(o) = v.as_object()
            && let Some(k) = o.keys().find(|k| !KNOWN.contains(&k.as_str()))
        {
            return Err(format!("unknown field `{k}`, expected one of {KNOWN:?}"));
        }
        serde_json::from_value(v).map_err(|e| e.to_string())
    }
}

#[derive(Debug, Default)]
pub struct Faults {
    rules: Mutex<Vec<FaultRule>>,
    counter: Mutex<u64>,
}

impl Faults {
    pub fn add(&self, rule: FaultRule) {
        self.rules.lock().unwrap_or_else(|e| e.into_inner()).push(rule);
    }

    pub fn clear(&self) {
        self.rules.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    pub fn list(&self) -> Vec<FaultRule> {
        self.rules.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The fault to apply to a request, if any; consumes one use of a counted rule.
    pub fn pick(&self, service: &str, path: &str, now: i64) -> Option<FaultKind> {
        let mut rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        rules.retain(|r| r.until.is_none_or(|u| now < u) && r.count != Some(0));
        let n = {
            let mut c = self.counter.lock().unwrap_or_else(|e| e.into_inner());
            *c += 1;
            *c
        };
        for r in rules.iter_mut() {
            if r.service != "any" && r.service != service {
                continue;
            }
            if let FaultKind::PipelineGone { pipeline } = &r.kind
                && !path.contains(&format!("/pipelines/{pipeline}"))
            {
                continue;
            }
            if r.path_contains.as_deref().is_some_and(|p| !path.contains(p)) {
                continue;
            }
            // Deterministic thinning: a low-discrepancy sequence instead of an RNG.
            let frac = ((n as f64) * 0.618_033_988_75).fract();
            if frac >= r.probability {
                continue;
            }
            if let Some(c) = r.count.as_mut() {
                *c -= 1;
            }
            return Some(r.kind.clone());
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(json: &str) -> FaultRule {
        FaultRule::parse(json.as_bytes()).unwrap()
    }

    #[test]
    fn rules_parse_from_json_and_match_by_service_and_path() {
        let f = Faults::default();
        f.add(rule(r#"{"kind":"server_error","service":"concourse","path_contains":"/jobs"}"#));
        assert_eq!(
            f.pick("concourse", "/api/v1/teams/dev/pipelines/p/jobs", 0),
            Some(FaultKind::ServerError { status: 503 })
        );
        assert_eq!(f.pick("github", "/repos/a/b/commits", 0), None);
        assert_eq!(f.pick("concourse", "/api/v1/builds/1", 0), None);
    }

    #[test]
    fn counted_and_timed_rules_expire() {
        let f = Faults::default();
        f.add(rule(r#"{"kind":"malformed","count":2}"#));
        f.add(rule(r#"{"kind":"reset","until":100}"#));
        assert_eq!(f.pick("github", "/x", 0), Some(FaultKind::Malformed));
        assert_eq!(f.pick("github", "/x", 0), Some(FaultKind::Malformed));
        assert_eq!(f.pick("github", "/x", 0), Some(FaultKind::Reset));
        assert_eq!(f.pick("github", "/x", 100), None);
    }

    #[test]
    fn pipeline_gone_only_hits_that_pipeline() {
        let f = Faults::default();
        f.add(rule(r#"{"kind":"pipeline_gone","pipeline":"galoy-staging"}"#));
        assert!(f.pick("concourse", "/api/v1/teams/dev/pipelines/galoy-staging/jobs", 0).is_some());
        assert!(f.pick("concourse", "/api/v1/teams/dev/pipelines/lana-bank/jobs", 0).is_none());
    }

    #[test]
    fn unknown_fault_kind_is_rejected_with_its_name() {
        let e = FaultRule::parse(br#"{"kind":"meteor"}"#).unwrap_err();
        assert!(e.contains("meteor"), "{e}");
        let e = FaultRule::parse(br#"{"kind":"reset","servce":"github"}"#).unwrap_err();
        assert!(e.contains("servce"), "{e}");
    }
}
