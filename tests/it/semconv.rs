//! Conformance of the exported spans to OpenTelemetry's CI/CD and VCS semantic conventions,
//! v1.44.0 (release candidate), checked on spans as a collector decodes them. The rules are
//! written from the convention's text (`model/cicd/spans.yaml`, the `cicd`, `vcs`,
//! `deployment` and `error` attribute registries; summarised in
//! `shared/reference/dora-and-otel-semconv.md`), not from what the exporter emits:
//!
//! - every attribute in those namespaces is a registered name with a string value, and enum
//!   attributes hold one of their members; no deprecated name is used;
//! - a pipeline-run span (`span.cicd.pipeline.run.server`) is kind SERVER, named
//!   `{cicd.pipeline.action.name} {cicd.pipeline.name}`, requires `cicd.pipeline.result`, and
//!   `error.type` when that result is `failure` or `error`;
//! - a task-run span (`span.cicd.pipeline.task.internal`) is kind INTERNAL and requires
//!   `cicd.pipeline.task.name`, `cicd.pipeline.task.run.id`, `cicd.pipeline.task.run.url.full`
//!   and `cicd.pipeline.task.run.result`, and `error.type` when that result is `failure` or
//!   `error`;
//! - an Error status comes with `error.type`, as the error-recording conventions ask.
//!
//! `traces.rs` runs [`conformance`] over every span of every scenario, over HTTP and gRPC.

use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{Span, Status};

const RESULTS: &[&str] = &["success", "failure", "error", "timeout", "cancellation", "skip"];

/// The registered attributes of the namespaces we use: name → allowed values (`None`: any string).
const REGISTRY: &[(&str, Option<&[&str]>)] = &[
    ("cicd.pipeline.name", None),
    ("cicd.pipeline.run.id", None),
    ("cicd.pipeline.run.url.full", None),
    ("cicd.pipeline.run.state", Some(&["pending", "executing", "finalizing"])),
    ("cicd.pipeline.result", Some(RESULTS)),
    ("cicd.pipeline.action.name", Some(&["BUILD", "RUN", "SYNC"])),
    ("cicd.pipeline.task.name", None),
    ("cicd.pipeline.task.run.id", None),
    ("cicd.pipeline.task.run.url.full", None),
    ("cicd.pipeline.task.run.result", Some(RESULTS)),
    ("cicd.pipeline.task.type", Some(&["build", "test", "deploy"])),
    ("cicd.worker.id", None),
    ("cicd.worker.name", None),
    ("cicd.worker.url.full", None),
    ("cicd.worker.state", Some(&["available", "busy", "offline"])),
    ("cicd.system.component", None),
    ("vcs.repository.url.full", None),
    ("vcs.repository.name", None),
    ("vcs.owner.name", None),
    // An open enum: other providers may be named, but the ones the registry lists are spelt so.
    ("vcs.provider.name", Some(&["github", "gitlab", "gitea", "bitbucket"])),
    ("vcs.ref.head.name", None),
    ("vcs.ref.head.type", Some(&["branch", "tag"])),
    ("vcs.ref.head.revision", None),
    ("vcs.ref.base.name", None),
    ("vcs.ref.base.type", Some(&["branch", "tag"])),
    ("vcs.ref.base.revision", None),
    ("vcs.change.id", None),
    ("vcs.change.title", None),
    ("vcs.change.state", Some(&["open", "wip", "closed", "merged"])),
    ("deployment.environment.name", None),
    ("deployment.name", None),
    ("deployment.id", None),
    ("deployment.status", Some(&["failed", "succeeded"])),
    ("error.type", None),
];

/// Deprecated names (exact) and prefixes that must not appear.
const DEPRECATED: &[&str] = &["deployment.environment", "vcs.repository.ref.", "vcs.repository.change."];

const NAMESPACES: &[&str] = &["cicd.", "vcs.", "deployment.", "error."];

fn string(s: &Span, key: &str) -> Option<String> {
    s.attributes.iter().find(|kv| kv.key == key).map(|kv| match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(v)) => v.clone(),
        other => format!("<not a string: {other:?}>"),
    })
}

/// Every way `spans` break the conventions, one line each (empty: they conform).
pub(crate) fn conformance(spans: &[&Span]) -> Vec<String> {
    let mut out = vec![];
    for s in spans {
        let mut bad = |why: String| out.push(format!("span {:?}: {why}", s.name));
        for kv in &s.attributes {
            let k = kv.key.as_str();
            if DEPRECATED.iter().any(|d| if d.ends_with('.') { k.starts_with(d) } else { k == *d }) {
                bad(format!("deprecated attribute {k}"));
                continue;
            }
            if !NAMESPACES.iter().any(|n| k.starts_with(n)) {
                continue;
            }
            let Some((_, values)) = REGISTRY.iter().find(|(name, _)| *name == k) else {
                bad(format!("{k} is not in the registry"));
                continue;
            };
            match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(AnyValue::StringValue(v)) => {
                    if let Some(allowed) = values
                        && !allowed.contains(&v.as_str())
                    {
                        bad(format!("{k}={v:?} is not one of {allowed:?}"));
                    }
                    if v.is_empty() {
                        bad(format!("{k} is empty"));
                    }
                }
                other => bad(format!("{k} is not a string: {other:?}")),
            }
        }
        let kind = SpanKind::try_from(s.kind).unwrap_or(SpanKind::Unspecified);
        let is_task = s.attributes.iter().any(|kv| kv.key.starts_with("cicd.pipeline.task."));
        let error_type = string(s, "error.type");
        let needs_error_type = |result: &Option<String>| matches!(result.as_deref(), Some("failure" | "error"));
        if kind == SpanKind::Server {
            let result = string(s, "cicd.pipeline.result");
            if result.is_none() {
                bad("a pipeline run without cicd.pipeline.result".into());
            }
            if needs_error_type(&result) != error_type.is_some() {
                bad(format!("error.type {error_type:?} with cicd.pipeline.result {result:?}"));
            }
            let action = string(s, "cicd.pipeline.action.name");
            let want = match (&action, string(s, "cicd.pipeline.name")) {
                (Some(a), Some(p)) => Some(format!("{a} {p}")),
                (Some(a), None) => Some(a.clone()),
                (None, _) => None,
            };
            if want.as_deref().is_some_and(|w| w != s.name) {
                bad(format!("a pipeline run named {:?}, not {want:?}", s.name));
            }
            if is_task {
                bad("a pipeline run with task attributes".into());
            }
        } else if string(s, "cicd.pipeline.result").is_some() {
            bad("cicd.pipeline.result on a span that is no pipeline run (kind SERVER)".into());
        }
        if is_task {
            if kind != SpanKind::Internal {
                bad(format!("a task run of kind {kind:?}, not INTERNAL"));
            }
            for k in [
                "cicd.pipeline.task.name",
                "cicd.pipeline.task.run.id",
                "cicd.pipeline.task.run.url.full",
                "cicd.pipeline.task.run.result",
            ] {
                if string(s, k).is_none() {
                    bad(format!("a task run without {k}"));
                }
            }
            let result = string(s, "cicd.pipeline.task.run.result");
            if needs_error_type(&result) != error_type.is_some() {
                bad(format!("error.type {error_type:?} with cicd.pipeline.task.run.result {result:?}"));
            }
        }
        let status_error = s.status.as_ref().is_some_and(|st| st.code == StatusCode::Error as i32);
        if status_error && error_type.is_none() {
            bad("an Error status without error.type".into());
        }
        if let Some(rev) = string(s, "vcs.ref.head.revision")
            && !(rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            bad(format!("vcs.ref.head.revision {rev:?} is no full commit id"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::{AnyValue as Any, KeyValue};

    use super::*;

    fn span(name: &str, kind: SpanKind, attrs: &[(&str, &str)], error: bool) -> Span {
        Span {
            name: name.into(),
            kind: kind as i32,
            attributes: attrs
                .iter()
                .map(|(k, v)| KeyValue {
                    key: (*k).into(),
                    value: Some(Any { value: Some(AnyValue::StringValue((*v).into())) }),
                    ..Default::default()
                })
                .collect(),
            status: error.then(|| Status { code: StatusCode::Error as i32, message: String::new() }),
            ..Default::default()
        }
    }

    const RUN: &[(&str, &str)] =
        &[("cicd.pipeline.name", "p"), ("cicd.pipeline.action.name", "RUN"), ("cicd.pipeline.result", "success")];
    const TASK: &[(&str, &str)] = &[
        ("cicd.pipeline.task.name", "j"),
        ("cicd.pipeline.task.run.id", "1"),
        ("cicd.pipeline.task.run.url.full", "https://ci/builds/1"),
        ("cicd.pipeline.task.run.result", "success"),
    ];

    fn with(
        base: &[(&'static str, &'static str)],
        k: &'static str,
        v: &'static str,
    ) -> Vec<(&'static str, &'static str)> {
        let mut out: Vec<_> = base.iter().copied().filter(|(key, _)| *key != k).collect();
        if !v.is_empty() {
            out.push((k, v));
        }
        out
    }

    /// Each rule, broken once: the checker must say so (and accept the well-formed spans).
    #[test]
    fn the_checker_catches_each_rule() {
        let ok = [span("RUN p", SpanKind::Server, RUN, false), span("j #1", SpanKind::Internal, TASK, false)];
        assert_eq!(conformance(&ok.iter().collect::<Vec<_>>()), Vec::<String>::new());
        let cases: Vec<(Span, &str)> = vec![
            (
                span("RUN p", SpanKind::Server, &with(RUN, "cicd.pipeline.result", ""), false),
                "without cicd.pipeline.result",
            ),
            (span("RUN p", SpanKind::Server, &with(RUN, "cicd.pipeline.result", "failed"), false), "is not one of"),
            (span("RUN p", SpanKind::Server, &with(RUN, "cicd.pipeline.result", "failure"), true), "error.type None"),
            (span("p", SpanKind::Server, RUN, false), "named \"p\""),
            (span("RUN p", SpanKind::Server, &with(RUN, "cicd.pipeline.action.name", "run"), false), "is not one of"),
            (span("j #1", SpanKind::Server, &with(TASK, "cicd.pipeline.result", "success"), false), "task attributes"),
            (
                span("j #1", SpanKind::Internal, &with(TASK, "cicd.pipeline.task.run.id", ""), false),
                "without cicd.pipeline.task.run.id",
            ),
            (
                span("j #1", SpanKind::Internal, &with(TASK, "cicd.pipeline.task.run.url.full", ""), false),
                "without cicd.pipeline.task.run.url.full",
            ),
            (
                span("j #1", SpanKind::Internal, &with(TASK, "cicd.pipeline.task.run.result", "error"), true),
                "error.type None",
            ),
            (span("j #1", SpanKind::Client, TASK, false), "not INTERNAL"),
            (
                span("j #1", SpanKind::Internal, &with(TASK, "cicd.pipeline.result", "success"), false),
                "no pipeline run",
            ),
            (span("d", SpanKind::Internal, &[("deployment.environment", "staging")], false), "deprecated"),
            (span("d", SpanKind::Internal, &[("vcs.repository.ref.revision", "x")], false), "deprecated"),
            (span("d", SpanKind::Internal, &[("vcs.change.state", "approved")], false), "is not one of"),
            (span("d", SpanKind::Internal, &[("cicd.pipeline.run.result", "success")], false), "not in the registry"),
            (span("d", SpanKind::Internal, &[("vcs.ref.head.revision", "abc123")], false), "no full commit id"),
            (span("d", SpanKind::Internal, &[], true), "Error status without error.type"),
        ];
        for (s, want) in cases {
            let got = conformance(&[&s]);
            assert!(
                got.iter().any(|p| p.contains(want)),
                "{:?} {:?}: want a problem with {want:?}, got {got:?}",
                s.name,
                s.attributes
            );
        }
    }
}
