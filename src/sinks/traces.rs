//! Commit journeys as OpenTelemetry traces: one trace per commit, rebuilt from CI facts.
//!
//! Span building is pure ([`journey_spans`], [`finished_stage_spans`]): ids are functions of
//! the commit and the builds, so re-exporting a journey after a restart gives the same spans.
//! - trace id: the first 32 hex digits of the commit sha;
//! - span id: 64-bit FNV-1a of `sha`, `stage`, build id and attempt index (never 0).
//!
//! Shape of a commit's trace:
//! ```text
//! deliver <short sha>            commit time → journey end (only once the journey ended)
//! └─ <stage>                     ready_at → stage end, event `build.started`
//!    └─ <job> #<build name>      build start → build end, one per attempt
//! ```
//! A rerun links to the attempt it re-ran; an attempt carried by a later commit's build links
//! to that build's span in the head commit's trace.
//!
//! [`TraceSink`] turns [`SpanRecord`]s into `opentelemetry_sdk` `SpanData` and pushes them into
//! a standalone `BatchSpanProcessor` on an OTLP HTTP/protobuf exporter (blocking reqwest
//! client). Build, export through and drop it off the async runtime (`spawn_blocking` or a
//! dedicated thread): the blocking client owns a runtime of its own.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{Event, Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue, Value};
use opentelemetry_otlp::tonic_types::metadata::MetadataMap;
use opentelemetry_otlp::{Protocol, RetryPolicy, WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanEvents, SpanExporter, SpanLinks};
use tokio::sync::mpsc;

use crate::core::journey::{Attempt, BuildId, BuildStatus, Journey, Outcome, StageJourney, StageState};

// ------------------------------------------------------------------ records

#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    Str(String),
    Int(i64),
    F64(f64),
    Bool(bool),
}

impl From<&str> for AttrValue {
    fn from(s: &str) -> Self {
        AttrValue::Str(s.to_string())
    }
}
impl From<String> for AttrValue {
    fn from(s: String) -> Self {
        AttrValue::Str(s)
    }
}
impl From<i64> for AttrValue {
    fn from(v: i64) -> Self {
        AttrValue::Int(v)
    }
}
impl From<bool> for AttrValue {
    fn from(v: bool) -> Self {
        AttrValue::Bool(v)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SpanEventRecord {
    pub name: String,
    pub time_unix_nano: u64,
    pub attributes: Vec<(String, AttrValue)>,
}

/// A span as plain data; see the module docs for ids and shape.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanRecord {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent: Option<[u8; 8]>,
    pub name: String,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub attributes: Vec<(String, AttrValue)>,
    pub events: Vec<SpanEventRecord>,
    /// (trace id, span id) of linked spans.
    pub links: Vec<([u8; 16], [u8; 8])>,
    /// Span status is Error.
    pub error: bool,
}

impl SpanRecord {
    pub fn attr(&self, key: &str) -> Option<&AttrValue> {
        self.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

// ------------------------------------------------------------------ ids

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// 64-bit FNV-1a: fixed across Rust releases and platforms (unlike `DefaultHasher`).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET, |h, b| (h ^ u64::from(*b)).wrapping_mul(FNV_PRIME))
}

/// Trace id of a commit: the first 32 hex digits of its sha. A sha that is not (at least 32
/// digits of) hex gets a FNV-1a-derived id instead; never all zeros.
pub fn trace_id(sha: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    if sha.len() >= 32 && hex::decode_to_slice(&sha[..32], &mut out).is_ok() && out != [0u8; 16] {
        return out;
    }
    let a = fnv1a64(sha.as_bytes());
    let b = fnv1a64(format!("{sha}/trace").as_bytes());
    out[..8].copy_from_slice(&a.to_be_bytes());
    out[8..].copy_from_slice(&b.to_be_bytes());
    if out == [0u8; 16] {
        out[15] = 1;
    }
    out
}

/// Span id of (sha, stage, build id, attempt index): FNV-1a over `sha/stage/build/attempt`,
/// 0 mapped to 1. The root is `(sha, "", None, None)`, a stage `(sha, stage, None, None)`.
pub fn span_id(sha: &str, stage: &str, build: Option<BuildId>, attempt: Option<usize>) -> [u8; 8] {
    let key = format!(
        "{sha}/{stage}/{}/{}",
        build.map(|b| b.to_string()).unwrap_or_default(),
        attempt.map(|a| a.to_string()).unwrap_or_default()
    );
    let h = fnv1a64(key.as_bytes());
    (if h == 0 { 1 } else { h }).to_be_bytes()
}

pub fn root_span_id(sha: &str) -> [u8; 8] {
    span_id(sha, "", None, None)
}

pub fn stage_span_id(sha: &str, stage: &str) -> [u8; 8] {
    span_id(sha, stage, None, None)
}

/// Attempt index of a build: 0 for an original build, 1 + the index of the build it re-ran for
/// a rerun (following `rerun_of` among `attempts`; a rerun of an unknown build is 1). It is a
/// property of the build, so the same build has the same index in every commit's journey.
pub fn attempt_index(attempts: &[Attempt], build: BuildId) -> usize {
    let mut idx = 0;
    let mut cur = attempts.iter().find(|a| a.build_id == build).and_then(|a| a.rerun_of);
    while let Some(prev) = cur {
        idx += 1;
        if idx > attempts.len() {
            break;
        }
        cur = attempts.iter().find(|a| a.build_id == prev).and_then(|a| a.rerun_of);
    }
    idx
}

/// Span id of an attempt span (build `build` of stage `stage` in commit `sha`'s trace).
pub fn attempt_span_id(sha: &str, stage: &str, build: BuildId, attempt: usize) -> [u8; 8] {
    span_id(sha, stage, Some(build), Some(attempt))
}

// ------------------------------------------------------------------ span building

fn nanos(secs: i64) -> u64 {
    u64::try_from(secs).unwrap_or(0).saturating_mul(1_000_000_000)
}

/// `cicd.pipeline.result` of a finished build (semantic conventions values).
pub fn build_result(s: BuildStatus) -> Option<&'static str> {
    match s {
        BuildStatus::Succeeded => Some("success"),
        BuildStatus::Failed => Some("failure"),
        BuildStatus::Errored => Some("error"),
        BuildStatus::Aborted => Some("cancellation"),
        BuildStatus::Pending | BuildStatus::Started => None,
    }
}

/// The environment a journey reached first, and when.
fn first_deployment(j: &Journey) -> Option<(&str, i64)> {
    j.deployed_at.iter().map(|(e, t)| (e.as_str(), *t)).min_by_key(|(e, t)| (*t, *e))
}

fn selected<'a>(j: &'a Journey, stage_names: &'a [&str]) -> impl Iterator<Item = &'a StageJourney> + 'a {
    j.stages
        .iter()
        .filter(move |s| !s.attempts.is_empty() && (stage_names.is_empty() || stage_names.contains(&s.name.as_str())))
}

/// The stage span and its attempt spans, when the stage has ended (succeeded or failed).
fn stage_spans(j: &Journey, s: &StageJourney) -> Vec<SpanRecord> {
    let Some(end) = s.end else { return vec![] };
    if !matches!(s.state, StageState::Succeeded | StageState::Failed) {
        return vec![];
    }
    let tid = trace_id(&j.sha);
    let sid = stage_span_id(&j.sha, &s.name);
    let first_start = s.attempts.iter().filter_map(|a| a.start).min();
    let start = s.ready_at.or(first_start).unwrap_or(j.commit_time).min(first_start.unwrap_or(i64::MAX));
    let mut attributes: Vec<(String, AttrValue)> = vec![
        ("deploy_journey.stage".into(), s.name.as_str().into()),
        ("deploy_journey.stage.state".into(), s.state.as_str().into()),
        ("cicd.pipeline.result".into(), (if s.state == StageState::Succeeded { "success" } else { "failure" }).into()),
    ];
    if let Some(p) = s.attempts.first() {
        attributes.push(("cicd.pipeline.name".into(), p.pipeline.as_str().into()));
    }
    if let Some(m) = s.method() {
        attributes.push(("deploy_journey.attribution".into(), m.as_str().into()));
    }
    if let Some(w) = s.wait() {
        attributes.push(("deploy_journey.wait_seconds".into(), w.into()));
    }
    let events = first_start
        .map(|t| SpanEventRecord { name: "build.started".into(), time_unix_nano: nanos(t), attributes: vec![] })
        .into_iter()
        .collect();
    let mut out = vec![SpanRecord {
        trace_id: tid,
        span_id: sid,
        parent: Some(root_span_id(&j.sha)),
        name: s.name.clone(),
        start_unix_nano: nanos(start),
        end_unix_nano: nanos(end.max(start)),
        attributes,
        events,
        links: vec![],
        error: s.state == StageState::Failed,
    }];
    for a in &s.attempts {
        let (Some(a_start), Some(a_end)) = (a.start, a.end) else { continue };
        let idx = attempt_index(&s.attempts, a.build_id);
        let mut links = vec![];
        if let Some(prev) = a.rerun_of {
            let prev_idx = if s.attempts.iter().any(|x| x.build_id == prev) {
                attempt_index(&s.attempts, prev)
            } else {
                idx.saturating_sub(1)
            };
            links.push((tid, attempt_span_id(&j.sha, &s.name, prev, prev_idx)));
        }
        if !a.own
            && let Some(head) = a.head.as_deref()
            && head != j.sha
        {
            links.push((trace_id(head), attempt_span_id(head, &s.name, a.build_id, idx)));
        }
        let mut attributes: Vec<(String, AttrValue)> = vec![
            ("cicd.pipeline.name".into(), a.pipeline.as_str().into()),
            ("cicd.pipeline.run.id".into(), a.build_id.to_string().into()),
            ("cicd.pipeline.run.url.full".into(), a.url.as_str().into()),
            ("cicd.pipeline.task.name".into(), a.job.as_str().into()),
            ("deploy_journey.build.name".into(), a.name.as_str().into()),
            ("deploy_journey.attribution".into(), a.method.as_str().into()),
            ("deploy_journey.own_build".into(), a.own.into()),
        ];
        if let Some(r) = build_result(a.status) {
            attributes.push(("cicd.pipeline.result".into(), r.into()));
        }
        if let Some(h) = &a.head {
            attributes.push(("deploy_journey.build.head_revision".into(), h.as_str().into()));
        }
        out.push(SpanRecord {
            trace_id: tid,
            span_id: attempt_span_id(&j.sha, &s.name, a.build_id, idx),
            parent: Some(sid),
            name: format!("{} #{}", a.job, a.name),
            start_unix_nano: nanos(a_start),
            end_unix_nano: nanos(a_end.max(a_start)),
            attributes,
            events: vec![],
            links,
            error: matches!(a.status, BuildStatus::Failed | BuildStatus::Errored),
        });
    }
    out
}

/// Spans that are final before the journey ends: every *succeeded* stage (and its attempts)
/// among `stage_names` (empty: all stages) whose builds are all the commit's own. A failed stage can still be retried (its end and
/// attempts change), so it is only exported with the whole journey; the root only exists once
/// the journey ended. Children point at the root's id, which is computable up front.
pub fn finished_stage_spans(j: &Journey, stage_names: &[&str]) -> Vec<SpanRecord> {
    // A stage that succeeded through a later commit's build can still be re-derived when the
    // commit's own, slower build ends (staging-deploys-descendant): it waits for the journey.
    selected(j, stage_names)
        .filter(|s| s.state == StageState::Succeeded && s.attempts.iter().all(|a| a.own))
        .flat_map(|s| stage_spans(j, s))
        .collect()
}

/// Every span of a journey that can be built now: the root `deliver <short sha>` (only when
/// the journey ended), and for each stage among `stage_names` (empty: all) that has attempts
/// and has ended, its span and one span per finished attempt. Root first, then stages in
/// configuration order. A superset of [`finished_stage_spans`].
pub fn journey_spans(j: &Journey, repo_url: &str, branch: &str, stage_names: &[&str]) -> Vec<SpanRecord> {
    let mut out = vec![];
    if j.ended
        && let Some((env, end)) = first_deployment(j)
    {
        let result = if j.outcome == Outcome::Failed { "failure" } else { "success" };
        let attributes: Vec<(String, AttrValue)> = vec![
            ("vcs.repository.url.full".into(), repo_url.into()),
            ("vcs.ref.head.name".into(), branch.into()),
            ("vcs.ref.head.revision".into(), j.sha.as_str().into()),
            ("deployment.environment.name".into(), env.into()),
            ("cicd.pipeline.result".into(), result.into()),
            ("deploy_journey.change_type".into(), j.classification.change_type.as_str().into()),
            ("deploy_journey.outcome".into(), j.outcome.as_str().into()),
            ("deploy_journey.lead_time_seconds".into(), (end - j.commit_time).into()),
            ("deploy_journey.commit.subject".into(), j.subject.as_str().into()),
        ];
        let links = match &j.carried_by {
            Some(h) if h != &j.sha => vec![(trace_id(h), root_span_id(h))],
            _ => vec![],
        };
        out.push(SpanRecord {
            trace_id: trace_id(&j.sha),
            span_id: root_span_id(&j.sha),
            parent: None,
            name: format!("deliver {}", j.short()),
            start_unix_nano: nanos(j.commit_time),
            end_unix_nano: nanos(end.max(j.commit_time)),
            attributes,
            events: vec![],
            links,
            error: j.outcome == Outcome::Failed,
        });
    }
    out.extend(selected(j, stage_names).flat_map(|s| stage_spans(j, s)));
    out
}

// ------------------------------------------------------------------ conversion

fn to_value(v: &AttrValue) -> Value {
    match v {
        AttrValue::Str(s) => Value::from(s.clone()),
        AttrValue::Int(i) => Value::I64(*i),
        AttrValue::F64(f) => Value::F64(*f),
        AttrValue::Bool(b) => Value::Bool(*b),
    }
}

fn kvs(attrs: &[(String, AttrValue)]) -> Vec<KeyValue> {
    attrs.iter().map(|(k, v)| KeyValue::new(k.clone(), to_value(v))).collect()
}

fn time(ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns)
}

fn ctx(trace: [u8; 16], span: [u8; 8]) -> SpanContext {
    SpanContext::new(
        TraceId::from_bytes(trace),
        SpanId::from_bytes(span),
        TraceFlags::SAMPLED,
        false,
        TraceState::default(),
    )
}

/// A [`SpanRecord`] as the SDK's exportable span.
pub fn to_span_data(r: &SpanRecord, scope: &InstrumentationScope) -> SpanData {
    let mut events = SpanEvents::default();
    for e in &r.events {
        events.events.push(Event::new(e.name.clone(), time(e.time_unix_nano), kvs(&e.attributes), 0));
    }
    let mut links = SpanLinks::default();
    for (t, s) in &r.links {
        links.links.push(Link::new(ctx(*t, *s), vec![], 0));
    }
    SpanData {
        span_context: ctx(r.trace_id, r.span_id),
        parent_span_id: r.parent.map(SpanId::from_bytes).unwrap_or(SpanId::INVALID),
        parent_span_is_remote: false,
        span_kind: SpanKind::Internal,
        name: Cow::Owned(r.name.clone()),
        start_time: time(r.start_unix_nano),
        end_time: time(r.end_unix_nano),
        attributes: kvs(&r.attributes),
        dropped_attributes_count: 0,
        events,
        links,
        status: if r.error { Status::error("") } else { Status::Unset },
        instrumentation_scope: scope.clone(),
    }
}

// ------------------------------------------------------------------ exporter

/// OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// OTLP/HTTP with protobuf bodies (default, port 4318).
    HttpProtobuf,
    /// OTLP/gRPC (port 4317).
    Grpc,
}

impl OtlpProtocol {
    pub fn parse(s: &str) -> Option<OtlpProtocol> {
        match s.trim() {
            "http/protobuf" => Some(OtlpProtocol::HttpProtobuf),
            "grpc" => Some(OtlpProtocol::Grpc),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            OtlpProtocol::HttpProtobuf => "http/protobuf",
            OtlpProtocol::Grpc => "grpc",
        }
    }
}

/// Where and how spans are exported. `Debug` shows header names only: values are secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct TraceSinkConfig {
    pub protocol: OtlpProtocol,
    /// For HTTP the full URL spans are POSTed to; for gRPC the collector's URL.
    pub endpoint: String,
    /// Secret values (API keys): never logged.
    pub headers: Vec<(String, String)>,
    pub service_name: String,
    /// From the config and `OTEL_RESOURCE_ATTRIBUTES`, without `service.name`.
    pub resource_attributes: Vec<(String, String)>,
    /// Also export the exporter's own work (poll cycles) as traces.
    pub self_instrumentation: bool,
}

impl std::fmt::Debug for TraceSinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceSinkConfig")
            .field("protocol", &self.protocol)
            .field("endpoint", &self.endpoint)
            .field("headers", &self.headers.iter().map(|(k, _)| format!("{k}=***")).collect::<Vec<_>>())
            .field("service_name", &self.service_name)
            .field("resource_attributes", &self.resource_attributes)
            .field("self_instrumentation", &self.self_instrumentation)
            .finish()
    }
}

pub const DEFAULT_SERVICE_NAME: &str = "deploy-journey";
/// Instrumentation scope of journey spans.
pub const JOURNEY_SCOPE: &str = "deploy-journey";
/// Instrumentation scope of the exporter's own spans (self-instrumentation).
pub const SELF_SCOPE: &str = "deploy-journey.self";

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(h) = std::str::from_utf8(&b[i + 1..i + 3])
            && let Ok(v) = u8::from_str_radix(h, 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `k=v,k2=v2` with percent-encoded values (W3C baggage style, as the OTel spec says).
pub fn parse_key_values(s: &str) -> Vec<(String, String)> {
    s.split(',')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            let k = percent_decode(k.trim());
            (!k.is_empty()).then(|| (k, percent_decode(v.trim())))
        })
        .collect()
}

/// Setting `k` to `v` in a list of pairs, replacing an earlier value.
fn upsert(list: &mut Vec<(String, String)>, k: String, v: String) {
    match list.iter_mut().find(|(x, _)| *x == k) {
        Some(e) => e.1 = v,
        None => list.push((k, v)),
    }
}

impl TraceSinkConfig {
    /// The effective settings from the config file's `traces:` section and the environment
    /// (`env`; `std::env::var` in production). **The standard `OTEL_*` variables win over the
    /// file**, setting by setting: that is how every OpenTelemetry SDK treats them, and what an
    /// operator injecting `OTEL_*` into the pod expects. `None`: traces are off (no endpoint).
    ///
    /// - endpoint: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` verbatim, else
    ///   `OTEL_EXPORTER_OTLP_ENDPOINT`, else `traces.endpoint`; for HTTP a base URL gets
    ///   `/v1/traces` appended;
    /// - protocol: `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, `OTEL_EXPORTER_OTLP_PROTOCOL`,
    ///   `traces.protocol`, default `http/protobuf`;
    /// - headers: `OTEL_EXPORTER_OTLP_TRACES_HEADERS`/`OTEL_EXPORTER_OTLP_HEADERS`, else the file's;
    /// - `service.name`: `OTEL_SERVICE_NAME`, `service.name` in `OTEL_RESOURCE_ATTRIBUTES`,
    ///   `traces.service_name`, default `deploy-journey`;
    /// - resource attributes: the file's, overridden key by key by `OTEL_RESOURCE_ATTRIBUTES`;
    /// - self-instrumentation: `DEPLOY_JOURNEY_SELF_TRACES=true|false`, else the file's.
    pub fn resolve(
        file: &crate::config::Traces,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<TraceSinkConfig>, TraceSinkError> {
        let get = |k: &str| env(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let (protocol, origin) = match get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .map(|p| (p, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"))
            .or_else(|| get("OTEL_EXPORTER_OTLP_PROTOCOL").map(|p| (p, "OTEL_EXPORTER_OTLP_PROTOCOL")))
            .or_else(|| file.protocol.clone().map(|p| (p, "traces.protocol")))
        {
            Some((p, origin)) => (
                OtlpProtocol::parse(&p).ok_or_else(|| TraceSinkError::Config {
                    setting: origin.to_string(),
                    problem: format!("{p:?} is not one of http/protobuf, grpc"),
                })?,
                origin,
            ),
            None => (OtlpProtocol::HttpProtobuf, "default"),
        };
        let _ = origin;
        let base = |b: String| match protocol {
            OtlpProtocol::HttpProtobuf => format!("{}/v1/traces", b.trim_end_matches('/')),
            OtlpProtocol::Grpc => b,
        };
        let endpoint = match (
            get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            get("OTEL_EXPORTER_OTLP_ENDPOINT"),
            file.endpoint.clone().filter(|e| !e.trim().is_empty()),
        ) {
            (Some(e), _, _) => e,
            (None, Some(b), _) => base(b),
            (None, None, Some(b)) => base(b),
            (None, None, None) => return Ok(None),
        };
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(TraceSinkError::Config {
                setting: "OTLP endpoint".into(),
                problem: format!("{endpoint:?} is not an http(s) URL"),
            });
        }
        let headers = get("OTEL_EXPORTER_OTLP_TRACES_HEADERS")
            .or_else(|| get("OTEL_EXPORTER_OTLP_HEADERS"))
            .or_else(|| file.headers.as_ref().map(|h| h.expose().to_string()))
            .map(|h| parse_key_values(&h))
            .unwrap_or_default();
        let mut resource_attributes = file.resource_attributes.clone();
        for (k, v) in get("OTEL_RESOURCE_ATTRIBUTES").map(|h| parse_key_values(&h)).unwrap_or_default() {
            upsert(&mut resource_attributes, k, v);
        }
        let from_attrs = resource_attributes.iter().find(|(k, _)| k == "service.name").map(|(_, v)| v.clone());
        resource_attributes.retain(|(k, _)| k != "service.name");
        let service_name = get("OTEL_SERVICE_NAME")
            .or(from_attrs)
            .or_else(|| file.service_name.clone())
            .unwrap_or_else(|| DEFAULT_SERVICE_NAME.into());
        let self_instrumentation = match get("DEPLOY_JOURNEY_SELF_TRACES").as_deref() {
            Some("true" | "1") => true,
            Some("false" | "0") => false,
            Some(other) => {
                return Err(TraceSinkError::Config {
                    setting: "DEPLOY_JOURNEY_SELF_TRACES".into(),
                    problem: format!("{other:?} is not true or false"),
                });
            }
            None => file.self_instrumentation,
        };
        Ok(Some(TraceSinkConfig {
            protocol,
            endpoint,
            headers,
            service_name,
            resource_attributes,
            self_instrumentation,
        }))
    }

    /// [`TraceSinkConfig::resolve`] with no config file.
    pub fn from_lookup(env: impl Fn(&str) -> Option<String>) -> Result<Option<TraceSinkConfig>, TraceSinkError> {
        Self::resolve(&crate::config::Traces::default(), env)
    }

    pub fn resource(&self) -> Resource {
        Resource::builder_empty()
            .with_service_name(self.service_name.clone())
            .with_attributes(self.resource_attributes.iter().map(|(k, v)| KeyValue::new(k.clone(), v.clone())))
            .build()
    }

    /// An OTLP span exporter for these settings, carrying [`TraceSinkConfig::resource`]. Build
    /// it inside a tokio runtime (both transports are async). Its own retries are off: the
    /// caller retries with backoff and decides what is acknowledged.
    pub fn exporter(&self) -> Result<opentelemetry_otlp::SpanExporter, TraceSinkError> {
        let build_err = |e: opentelemetry_otlp::ExporterBuildError| TraceSinkError::Build(e.to_string());
        let mut exporter = match self.protocol {
            OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(self.endpoint.clone())
                .with_timeout(EXPORT_TIMEOUT)
                .with_retry_policy(RetryPolicy::disabled())
                .with_headers(self.headers.iter().cloned().collect::<HashMap<_, _>>())
                .build()
                .map_err(build_err)?,
            OtlpProtocol::Grpc => {
                let mut headers = http::HeaderMap::new();
                for (k, v) in &self.headers {
                    // The value is a secret: errors name the header only.
                    let bad = |problem: &str| TraceSinkError::Config {
                        setting: format!("OTLP header {k:?}"),
                        problem: problem.to_string(),
                    };
                    let name =
                        http::HeaderName::from_bytes(k.as_bytes()).map_err(|_| bad("not a valid header name"))?;
                    let value = http::HeaderValue::from_str(v).map_err(|_| bad("value is not valid in a header"))?;
                    headers.insert(name, value);
                }
                let md = MetadataMap::from_headers(headers);
                opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_protocol(Protocol::Grpc)
                    .with_endpoint(self.endpoint.clone())
                    .with_timeout(EXPORT_TIMEOUT)
                    .with_retry_policy(RetryPolicy::disabled())
                    .with_metadata(md)
                    .build()
                    .map_err(build_err)?
            }
        };
        exporter.set_resource(&self.resource());
        Ok(exporter)
    }
}

const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TraceSinkError {
    #[error("building the OTLP span exporter: {0}")]
    Build(String),
    #[error("trace export setting {setting}: {problem}")]
    Config { setting: String, problem: String },
}

/// The repository's web URL (`vcs.repository.url.full`) from the API URL the exporter polls:
/// `api.github.com` → `github.com`, GitHub Enterprise `https://host/api/v3` → `https://host`.
pub fn repository_web_url(api_url: &str, owner: &str, name: &str) -> String {
    let base = api_url.trim_end_matches('/');
    let base = base.strip_suffix("/api/v3").unwrap_or(base);
    let base = base.replacen("://api.github.com", "://github.com", 1);
    format!("{base}/{owner}/{name}")
}

// ------------------------------------------------------------------ export with acknowledgement

/// Mark kind of exported spans in the store; keys are `<sha>/<span id hex>` so that retention
/// forgets them with their commit.
pub const MARK_KIND: &str = "span";
/// Spans per export request.
pub const BATCH_SPANS: usize = 256;
/// Batches waiting for the exporter task; beyond that, spans wait in the store (they are
/// recomputed at the next publish).
pub const QUEUE_BATCHES: usize = 64;
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

pub fn mark_key(sha: &str, span: [u8; 8]) -> String {
    format!("{sha}/{}", hex::encode(span))
}

/// Counters of span export, shared with `/metrics`.
#[derive(Debug, Default)]
pub struct SpanExportStats {
    exported: AtomicU64,
    errors: AtomicU64,
    queued: AtomicU64,
}

/// A reading of [`SpanExportStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpanExportCounts {
    /// Spans the collector acknowledged.
    pub exported: u64,
    /// Export requests that failed (each is retried).
    pub errors: u64,
    /// Spans handed to the exporter task and not yet acknowledged and marked.
    pub queued: u64,
}

impl SpanExportStats {
    pub fn counts(&self) -> SpanExportCounts {
        SpanExportCounts {
            exported: self.exported.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            queued: self.queued.load(Ordering::Relaxed),
        }
    }
}

struct Batch {
    spans: Vec<SpanRecord>,
    keys: Vec<String>,
}

/// Exactly-once (per store) export of journey spans. [`SpanExport::offer`] runs on the poll
/// loop after each publish and never waits: it hands the spans that became exportable and
/// are neither marked nor queued to a task that exports them, retrying with backoff until the
/// collector acknowledges, and only then marks them in the store. When the bounded queue is
/// full the rest stays unqueued and is offered again at the next publish; after a restart,
/// whatever is not marked is recomputed from the stored facts.
///
/// At-least-once at the edges: a kill between the collector's acknowledgement and the mark's
/// commit resends those spans after the restart, with the same ids (backends deduplicate or
/// show the same span twice).
pub struct SpanExport {
    tx: Option<mpsc::Sender<Batch>>,
    /// Marked or queued keys.
    known: HashSet<String>,
    stats: Arc<SpanExportStats>,
    repo_url: String,
    branch: String,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for SpanExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpanExport").field("known", &self.known.len()).field("stats", &self.stats).finish()
    }
}

/// Store access for marks, off the async workers.
pub type MarkStore = Arc<Mutex<crate::store::Store>>;

impl SpanExport {
    /// Start the exporter task (inside a tokio runtime). `marked` are the keys already in the
    /// store under [`MARK_KIND`]; `clock` gives the marks' time.
    pub fn start(
        cfg: &TraceSinkConfig,
        store: MarkStore,
        marked: HashSet<String>,
        repo_url: String,
        branch: String,
        clock: Arc<dyn Fn() -> i64 + Send + Sync>,
    ) -> Result<SpanExport, TraceSinkError> {
        let exporter = cfg.exporter()?;
        let (tx, rx) = mpsc::channel(QUEUE_BATCHES);
        let stats = Arc::new(SpanExportStats::default());
        let task = tokio::spawn(export_task(exporter, rx, store, stats.clone(), clock));
        Ok(SpanExport { tx: Some(tx), known: marked, stats, repo_url, branch, task })
    }

    pub fn stats(&self) -> Arc<SpanExportStats> {
        self.stats.clone()
    }

    /// Queue what became exportable in `derived`: the spans of every succeeded stage, and
    /// once a journey ended its root and the rest. Returns how many spans were queued.
    pub fn offer(&mut self, derived: &crate::core::journey::Derived) -> usize {
        let Some(tx) = &self.tx else { return 0 };
        let mut pending: Vec<(String, SpanRecord)> = vec![];
        for j in &derived.journeys {
            let spans = if j.ended {
                journey_spans(j, &self.repo_url, &self.branch, &[])
            } else {
                finished_stage_spans(j, &[])
            };
            for s in spans {
                let key = mark_key(&j.sha, s.span_id);
                if !self.known.contains(&key) {
                    pending.push((key, s));
                }
            }
        }
        let mut queued = 0;
        for chunk in pending.chunks(BATCH_SPANS) {
            let (keys, spans): (Vec<String>, Vec<SpanRecord>) = chunk.iter().cloned().unzip();
            let n = spans.len();
            let keys_again = keys.clone();
            match tx.try_send(Batch { spans, keys }) {
                Ok(()) => {
                    self.known.extend(keys_again);
                    self.stats.queued.fetch_add(n as u64, Ordering::Relaxed);
                    queued += n;
                }
                // Full: the rest is offered again at the next publish. Closed: the task ended.
                Err(_) => break,
            }
        }
        queued
    }

    /// After retention: forget the keys of commits no longer kept (their marks went with them).
    pub fn retain_commits(&mut self, keep: impl Fn(&str) -> bool) {
        self.known.retain(|k| keep(k.split('/').next().unwrap_or("")));
    }

    /// Stop: let the task finish the batch in hand for up to `grace`; anything not marked by
    /// then is exported again after the next start.
    pub async fn shutdown(mut self, grace: Duration) {
        self.tx = None;
        let abort = self.task.abort_handle();
        if tokio::time::timeout(grace, &mut self.task).await.is_err() {
            abort.abort();
        }
    }
}

async fn export_task(
    exporter: opentelemetry_otlp::SpanExporter,
    mut rx: mpsc::Receiver<Batch>,
    store: MarkStore,
    stats: Arc<SpanExportStats>,
    clock: Arc<dyn Fn() -> i64 + Send + Sync>,
) {
    use backon::BackoffBuilder;
    let scope = InstrumentationScope::builder(JOURNEY_SCOPE).with_version(env!("CARGO_PKG_VERSION")).build();
    let backoff = || {
        backon::ExponentialBuilder::default()
            .with_min_delay(BACKOFF_MIN)
            .with_max_delay(BACKOFF_MAX)
            .with_jitter()
            .without_max_times()
            .build()
    };
    while let Some(batch) = rx.recv().await {
        let n = batch.spans.len() as u64;
        let mut delays = backoff();
        loop {
            let data: Vec<SpanData> = batch.spans.iter().map(|s| to_span_data(s, &scope)).collect();
            match exporter.export(data).await {
                Ok(()) => break,
                Err(e) => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    let wait = delays.next().unwrap_or(BACKOFF_MAX);
                    tracing::warn!(error = %e, spans = n, retry_in_ms = wait.as_millis() as u64, "span export failed; retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
        stats.exported.fetch_add(n, Ordering::Relaxed);
        // Marked only after the acknowledgement. A store error is retried too: until the mark
        // is written, a restart would send these spans again.
        let mut delays = backoff();
        loop {
            let (store, keys, at) = (store.clone(), batch.keys.clone(), clock());
            let marked = tokio::task::spawn_blocking(move || {
                let mut s = store.lock().unwrap_or_else(|e| e.into_inner());
                s.mark(MARK_KIND, &keys, at)
            })
            .await;
            match marked {
                Ok(Ok(_)) => break,
                Ok(Err(e)) => tracing::error!(error = %e, "cannot mark exported spans; retrying"),
                Err(e) => tracing::error!(error = %e, "marking exported spans failed; retrying"),
            }
            tokio::time::sleep(delays.next().unwrap_or(BACKOFF_MAX)).await;
        }
        stats.queued.fetch_sub(n, Ordering::Relaxed);
    }
}

// ------------------------------------------------------------------ self-instrumentation

static SELF_TRACE_HANDLE: std::sync::OnceLock<SelfTraceHandle> = std::sync::OnceLock::new();

/// Called once by `main` with the reload handle of its subscriber; without it (tests, other
/// embedders) self-instrumentation is unavailable and `serve` says so.
pub fn register_self_trace_handle(handle: SelfTraceHandle) {
    let _ = SELF_TRACE_HANDLE.set(handle);
}

/// Install self-instrumentation into the registered handle; `None` when `main` registered none.
pub fn install_self_traces(cfg: &TraceSinkConfig) -> Option<Result<SdkTracerProvider, TraceSinkError>> {
    SELF_TRACE_HANDLE.get().map(|h| install_self_traces_into(cfg, h))
}

/// The slot in the global `tracing` subscriber where `main` lets `serve` add the
/// self-instrumentation layer once the configuration is known.
pub type SelfTraceLayer = Option<Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync>>;
pub type SelfTraceHandle = tracing_subscriber::reload::Handle<SelfTraceLayer, tracing_subscriber::Registry>;

/// A tracer provider for the exporter's own spans (inside a tokio runtime): same endpoint and
/// `service.name`, its own `service.instance.id` (`<service>-self`) and scope
/// ([`SELF_SCOPE`]), so it never mixes with journey traces.
pub fn self_tracer_provider(cfg: &TraceSinkConfig) -> Result<SdkTracerProvider, TraceSinkError> {
    let exporter = cfg.exporter()?;
    let processor = opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
        exporter,
        opentelemetry_sdk::runtime::Tokio,
    )
    .build();
    let resource = Resource::builder_empty()
        .with_service_name(cfg.service_name.clone())
        .with_attributes(cfg.resource_attributes.iter().map(|(k, v)| KeyValue::new(k.clone(), v.clone())))
        .with_attribute(KeyValue::new("service.instance.id", format!("{}-self", cfg.service_name)))
        .build();
    Ok(SdkTracerProvider::builder().with_span_processor(processor).with_resource(resource).build())
}

/// Install self-instrumentation into `handle` (see [`SelfTraceHandle`]); keep the provider
/// and shut it down at exit to flush.
pub fn install_self_traces_into(
    cfg: &TraceSinkConfig,
    handle: &SelfTraceHandle,
) -> Result<SdkTracerProvider, TraceSinkError> {
    use opentelemetry::trace::TracerProvider as _;
    let provider = self_tracer_provider(cfg)?;
    let tracer = provider
        .tracer_with_scope(InstrumentationScope::builder(SELF_SCOPE).with_version(env!("CARGO_PKG_VERSION")).build());
    let layer: Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync> =
        Box::new(tracing_opentelemetry::layer().with_tracer(tracer));
    handle.reload(Some(layer)).map_err(|e| TraceSinkError::Build(format!("installing self-instrumentation: {e}")))?;
    Ok(provider)
}

// ------------------------------------------------------------------ tests

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::core::classify::{ChangeType, Classification};
    use crate::core::journey::Method;

    const HEAD: &str = "c0ffee00112233445566778899aabbccddeeff00";
    const MINE: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678";

    fn att(id: BuildId, job: &str, status: BuildStatus, start: i64, end: i64) -> Attempt {
        Attempt {
            build_id: id,
            pipeline: "lana-bank".into(),
            job: job.into(),
            name: id.to_string(),
            status,
            start: Some(start),
            end: Some(end),
            url: format!("https://ci.example/builds/{id}"),
            rerun_of: None,
            method: Method::Exact,
            own: true,
            head: Some(MINE.into()),
        }
    }

    fn stage(name: &str, state: StageState, ready: i64, attempts: Vec<Attempt>) -> StageJourney {
        let start = attempts.iter().filter_map(|a| a.start).min();
        let end = attempts.iter().filter_map(|a| a.end).max();
        StageJourney {
            name: name.into(),
            state,
            ready_at: Some(ready),
            start,
            end: if state.in_flight() { None } else { end },
            attempts,
            expected_jobs: vec![],
            waits_for: None,
        }
    }

    fn journey(stages: Vec<StageJourney>, deployed: Option<i64>) -> Journey {
        Journey {
            sha: MINE.into(),
            subject: "fix: a".into(),
            author: "dev".into(),
            commit_time: 1_000,
            classification: Classification { resources: vec!["lana".into()], change_type: ChangeType::Backend },
            stages,
            outcome: if deployed.is_some() { Outcome::Deployed } else { Outcome::InFlight },
            failed_stage: None,
            carried_on: false,
            ended: deployed.is_some(),
            deployed_at: deployed.map(|t| BTreeMap::from([("staging".to_string(), t)])).unwrap_or_default(),
            carried_by: None,
            not_picked_up: false,
            vanished: false,
        }
    }

    fn str_attr<'a>(s: &'a SpanRecord, k: &str) -> &'a str {
        match s.attr(k) {
            Some(AttrValue::Str(v)) => v,
            other => panic!("{k}: {other:?} on {}", s.name),
        }
    }

    #[test]
    fn fnv_is_the_reference_function() {
        // Reference vectors of 64-bit FNV-1a.
        for (input, want) in [("", 0xcbf29ce484222325u64), ("a", 0xaf63dc4c8601ec8c), ("foobar", 0x85944171f73967e8)] {
            assert_eq!(fnv1a64(input.as_bytes()), want, "{input:?}");
        }
    }

    #[test]
    fn ids_are_deterministic_sha_prefixed_and_distinct() {
        assert_eq!(hex::encode(trace_id(MINE)), &MINE[..32]);
        assert_eq!(trace_id("not-hex"), trace_id("not-hex"));
        assert_ne!(trace_id("not-hex"), [0; 16]);
        let ids = [
            root_span_id(MINE),
            stage_span_id(MINE, "test"),
            stage_span_id(MINE, "deploy"),
            attempt_span_id(MINE, "test", 7, 0),
            attempt_span_id(MINE, "test", 7, 1),
            attempt_span_id(MINE, "test", 8, 0),
            attempt_span_id(HEAD, "test", 7, 0),
        ];
        for (i, a) in ids.iter().enumerate() {
            assert_ne!(*a, [0; 8]);
            for b in &ids[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(attempt_span_id(MINE, "test", 7, 0), attempt_span_id(MINE, "test", 7, 0));
        // Pinned: ids must never change across releases (they are stored in other systems).
        assert_eq!(
            span_id(MINE, "test", Some(7), Some(0)),
            fnv1a64(format!("{MINE}/test/7/0").as_bytes()).to_be_bytes()
        );
    }

    #[test]
    fn tree_timestamps_and_attributes() {
        let j = journey(
            vec![
                stage(
                    "test",
                    StageState::Succeeded,
                    1_000,
                    vec![att(10, "test-unit", BuildStatus::Succeeded, 1_060, 1_500)],
                ),
                stage(
                    "deploy",
                    StageState::Succeeded,
                    1_500,
                    vec![att(20, "deploy", BuildStatus::Succeeded, 1_600, 1_900)],
                ),
                stage("never", StageState::NotApplicable, 0, vec![]),
            ],
            Some(1_900),
        );
        let spans = journey_spans(&j, "https://github.com/o/r", "main", &[]);
        assert_eq!(spans.len(), 5);
        assert!(spans.iter().all(|s| s.trace_id == trace_id(MINE)));
        let root = &spans[0];
        assert_eq!(root.name, format!("deliver {}", &MINE[..7]));
        assert_eq!((root.parent, root.start_unix_nano, root.end_unix_nano), (None, nanos(1_000), nanos(1_900)));
        for (k, v) in [
            ("vcs.repository.url.full", "https://github.com/o/r"),
            ("vcs.ref.head.name", "main"),
            ("vcs.ref.head.revision", MINE),
            ("deployment.environment.name", "staging"),
            ("cicd.pipeline.result", "success"),
            ("deploy_journey.change_type", "backend"),
            ("deploy_journey.outcome", "deployed"),
            ("deploy_journey.commit.subject", "fix: a"),
        ] {
            assert_eq!(str_attr(root, k), v, "{k}");
        }
        assert_eq!(root.attr("deploy_journey.lead_time_seconds"), Some(&AttrValue::Int(900)));
        let test = spans.iter().find(|s| s.name == "test").unwrap();
        assert_eq!(test.parent, Some(root.span_id));
        assert_eq!((test.start_unix_nano, test.end_unix_nano), (nanos(1_000), nanos(1_500)));
        assert_eq!(test.events[0].name, "build.started");
        assert_eq!(test.events[0].time_unix_nano, nanos(1_060));
        let build = spans.iter().find(|s| s.name == "test-unit #10").unwrap();
        assert_eq!(build.parent, Some(test.span_id));
        assert_eq!((build.start_unix_nano, build.end_unix_nano), (nanos(1_060), nanos(1_500)));
        for (k, v) in [
            ("cicd.pipeline.name", "lana-bank"),
            ("cicd.pipeline.run.id", "10"),
            ("cicd.pipeline.run.url.full", "https://ci.example/builds/10"),
            ("cicd.pipeline.task.name", "test-unit"),
            ("cicd.pipeline.result", "success"),
        ] {
            assert_eq!(str_attr(build, k), v, "{k}");
        }
        assert!(!build.error && build.links.is_empty());
        // Filtered by stage name.
        let only = journey_spans(&j, "u", "main", &["deploy"]);
        assert_eq!(
            only.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            ["deliver a1b2c3d", "deploy", "deploy #20"]
        );
    }

    #[test]
    fn rerun_links_to_the_attempt_it_reran_and_failure_is_error() {
        let mut rerun = att(11, "test-unit", BuildStatus::Succeeded, 1_600, 1_900);
        rerun.rerun_of = Some(10);
        rerun.name = "10.1".into();
        let j = journey(
            vec![stage(
                "test",
                StageState::Succeeded,
                1_000,
                vec![att(10, "test-unit", BuildStatus::Failed, 1_100, 1_500), rerun],
            )],
            Some(2_000),
        );
        let spans = journey_spans(&j, "u", "main", &[]);
        let first = spans.iter().find(|s| s.name == "test-unit #10").unwrap();
        let second = spans.iter().find(|s| s.name == "test-unit #10.1").unwrap();
        assert!(first.error && !second.error);
        assert_eq!(str_attr(first, "cicd.pipeline.result"), "failure");
        assert_eq!(first.span_id, attempt_span_id(MINE, "test", 10, 0));
        assert_eq!(second.span_id, attempt_span_id(MINE, "test", 11, 1));
        assert_eq!(second.links, vec![(trace_id(MINE), first.span_id)]);
    }

    #[test]
    fn batched_commit_links_into_the_head_commits_trace() {
        let mut carried = att(30, "test-unit", BuildStatus::Succeeded, 1_300, 1_700);
        carried.own = false;
        carried.head = Some(HEAD.into());
        let mut j = journey(vec![stage("test", StageState::Succeeded, 1_000, vec![carried.clone()])], Some(1_800));
        j.carried_by = Some(HEAD.into());
        j.outcome = Outcome::Superseded;
        let spans = journey_spans(&j, "u", "main", &[]);
        let b = spans.iter().find(|s| s.name == "test-unit #30").unwrap();
        assert_eq!(b.trace_id, trace_id(MINE));
        assert_eq!(b.links, vec![(trace_id(HEAD), attempt_span_id(HEAD, "test", 30, 0))]);
        assert_eq!(spans[0].links, vec![(trace_id(HEAD), root_span_id(HEAD))]);
        // The head commit's own journey gives that span exactly that id.
        let mut own = carried;
        own.own = true;
        let mut h = journey(vec![stage("test", StageState::Succeeded, 1_200, vec![own])], Some(1_800));
        h.sha = HEAD.into();
        let hs = journey_spans(&h, "u", "main", &[]);
        assert!(hs.iter().any(|s| s.span_id == b.links[0].1 && s.trace_id == b.links[0].0));
    }

    #[test]
    fn finished_vs_end_of_journey() {
        let j = journey(
            vec![
                stage(
                    "test",
                    StageState::Succeeded,
                    1_000,
                    vec![att(10, "test-unit", BuildStatus::Succeeded, 1_060, 1_500)],
                ),
                stage("rc", StageState::Failed, 1_500, vec![att(15, "build-rc", BuildStatus::Failed, 1_550, 1_600)]),
                stage(
                    "deploy",
                    StageState::Running,
                    1_600,
                    vec![{
                        let mut a = att(20, "deploy", BuildStatus::Started, 1_700, 0);
                        a.end = None;
                        a
                    }],
                ),
            ],
            None,
        );
        let names = |v: Vec<SpanRecord>| v.into_iter().map(|s| s.name).collect::<Vec<_>>();
        // Not ended: no root; a failed stage may still be retried, so only succeeded stages are final.
        assert_eq!(names(finished_stage_spans(&j, &[])), ["test", "test-unit #10"]);
        assert_eq!(names(journey_spans(&j, "u", "main", &[])), ["test", "test-unit #10", "rc", "build-rc #15"]);
    }

    fn env(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k: &str| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    #[test]
    fn config_from_env() {
        assert_eq!(TraceSinkConfig::from_lookup(env(&[])).unwrap(), None, "no endpoint: traces off");
        let c = TraceSinkConfig::from_lookup(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Basic%20abc,x-tenant=lana"),
            ("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attrs,deployment.environment.name=prod"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!((c.protocol, c.endpoint.as_str()), (OtlpProtocol::HttpProtobuf, "http://collector:4318/v1/traces"));
        assert_eq!(
            c.headers,
            [("authorization".to_string(), "Basic abc".to_string()), ("x-tenant".into(), "lana".into())]
        );
        assert_eq!(c.service_name, "from-attrs");
        assert_eq!(c.resource_attributes, [("deployment.environment.name".to_string(), "prod".to_string())]);
        assert!(!c.self_instrumentation);
        // Header values never show in Debug output.
        let dbg = format!("{c:?}");
        assert!(dbg.contains("authorization=***") && !dbg.contains("Basic"), "{dbg}");
        let c = TraceSinkConfig::from_lookup(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://tempo:4318/otlp/v1/traces"),
            ("OTEL_SERVICE_NAME", "dj"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!((c.endpoint.as_str(), c.service_name.as_str()), ("http://tempo:4318/otlp/v1/traces", "dj"));
        // gRPC: the base URL is used as is.
        let c = TraceSinkConfig::from_lookup(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("DEPLOY_JOURNEY_SELF_TRACES", "true"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!((c.protocol, c.endpoint.as_str()), (OtlpProtocol::Grpc, "http://collector:4317"));
        assert!(c.self_instrumentation);
        // Bad values name the variable.
        for (vars, what) in [
            (
                &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"), ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")][..],
                "OTEL_EXPORTER_OTLP_PROTOCOL",
            ),
            (&[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")][..], "endpoint"),
            (
                &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"), ("DEPLOY_JOURNEY_SELF_TRACES", "yes")][..],
                "DEPLOY_JOURNEY_SELF_TRACES",
            ),
        ] {
            let vars: &'static [(&'static str, &'static str)] = vars;
            let e = TraceSinkConfig::from_lookup(env(vars)).unwrap_err().to_string();
            assert!(e.contains(what), "{e}");
        }
    }

    #[test]
    fn environment_wins_over_the_config_file() {
        let file = crate::config::Traces {
            endpoint: Some("http://file-collector:4317".into()),
            protocol: Some("grpc".into()),
            headers: Some(crate::sources::Secret::new("x-api-key=from-file")),
            service_name: Some("from-file".into()),
            resource_attributes: vec![("service.namespace".into(), "lana".into()), ("team".into(), "file".into())],
            self_instrumentation: true,
        };
        let c = TraceSinkConfig::resolve(&file, env(&[])).unwrap().unwrap();
        assert_eq!((c.protocol, c.endpoint.as_str()), (OtlpProtocol::Grpc, "http://file-collector:4317"));
        assert_eq!(c.headers, [("x-api-key".to_string(), "from-file".to_string())]);
        assert_eq!(c.service_name, "from-file");
        assert!(c.self_instrumentation);
        let c = TraceSinkConfig::resolve(
            &file,
            env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env-collector:4318"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=from-env"),
                ("OTEL_RESOURCE_ATTRIBUTES", "team=env"),
                ("DEPLOY_JOURNEY_SELF_TRACES", "false"),
            ]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (c.protocol, c.endpoint.as_str()),
            (OtlpProtocol::HttpProtobuf, "http://env-collector:4318/v1/traces")
        );
        assert_eq!(c.headers, [("x-api-key".to_string(), "from-env".to_string())]);
        assert_eq!(
            c.resource_attributes,
            [("service.namespace".to_string(), "lana".to_string()), ("team".into(), "env".into())]
        );
        assert!(!c.self_instrumentation);
    }

    #[test]
    fn repository_web_urls() {
        for (api, want) in [
            ("https://api.github.com", "https://github.com/o/r"),
            ("https://api.github.com/", "https://github.com/o/r"),
            ("https://ghe.example/api/v3", "https://ghe.example/o/r"),
            ("http://127.0.0.1:8090", "http://127.0.0.1:8090/o/r"),
        ] {
            assert_eq!(repository_web_url(api, "o", "r"), want, "{api}");
        }
    }

    #[test]
    fn converts_to_span_data() {
        let j = journey(
            vec![stage(
                "test",
                StageState::Failed,
                1_000,
                vec![att(10, "test-unit", BuildStatus::Failed, 1_060, 1_500)],
            )],
            None,
        );
        let spans = journey_spans(&j, "u", "main", &[]);
        let scope = InstrumentationScope::builder("t").build();
        let d = to_span_data(&spans[1], &scope);
        assert_eq!(d.span_context.trace_id(), TraceId::from_bytes(trace_id(MINE)));
        assert_eq!(d.span_context.span_id(), SpanId::from_bytes(spans[1].span_id));
        assert_eq!(d.parent_span_id, SpanId::from_bytes(stage_span_id(MINE, "test")));
        assert_eq!(d.start_time, UNIX_EPOCH + Duration::from_secs(1_060));
        assert_eq!(d.end_time, UNIX_EPOCH + Duration::from_secs(1_500));
        assert!(matches!(d.status, Status::Error { .. }));
        assert_eq!(d.events.len(), 0);
        let stage_data = to_span_data(&spans[0], &scope);
        assert_eq!(stage_data.events.events[0].name, "build.started");
    }
}
