//! Span building: a commit's journey as a tree of plain [`SpanRecord`]s, and their conversion to
//! the SDK's `SpanData`. Pure: ids are functions of the commit and the builds, so re-exporting a
//! journey after a restart gives the same spans.
//! - trace id: the first 32 hex digits of the commit sha;
//! - span id: 64-bit FNV-1a of `sha`, `stage`, build id and attempt index (never 0).
//!
//! Shape of a commit's trace, in OpenTelemetry's CI/CD and VCS conventions (v1.44, release
//! candidate; `tests/it/semconv.rs` checks every exported span against them):
//! ```text
//! deliver <short sha>            INTERNAL  commit time → journey end (only once it ended); vcs.*
//! └─ RUN <pipeline>              SERVER    a stage: the pipeline run of the commit there,
//!    │                                     ready_at → stage end, event `build.started`
//!    └─ <job> #<build name>      INTERNAL  a task run: one per build attempt
//! ```
//! Before the pipeline, a commit from a pull request has `pull_request #N` (INTERNAL) with a span
//! per pre-merge stage; under `checks`, `RUN <workflow>` (SERVER) per GitHub Actions run of the
//! final head (its latest attempt), and under each run one task-run span (INTERNAL, named after
//! the job) per job of that attempt, its id from (sha, job id, attempt).
//! A stage is the commit's run through (some jobs of) one Concourse pipeline, so it is the
//! pipeline-run span, named `{cicd.pipeline.action.name} {cicd.pipeline.name}` as the
//! convention asks; the stage's own name is `deploy_journey.stage`. A Concourse build of a job
//! is a task run. The journey root is no pipeline run (it crosses pipelines and repositories),
//! so it carries the VCS attributes and no `cicd.pipeline.result`.
//! A rerun links to the attempt it re-ran; an attempt carried by a later commit's build links
//! to that build's span in the head commit's trace.

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{Event, Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue, Value};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

use crate::core::journey::{Attempt, BuildId, BuildStatus, Journey, Outcome, StageJourney, StageState};
use crate::core::premerge::{ChecksJobFact, ChecksRunFact, JobConclusion, JobState, PullFact};

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

/// The span kinds the journey uses (OpenTelemetry's `SpanKind` is not `PartialEq`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A pipeline run (`span.cicd.pipeline.run.server`).
    Server,
    /// The journey root and task runs (`span.cicd.pipeline.task.internal`).
    Internal,
}

/// `cicd.pipeline.action.name` of every pipeline run the journey shows: Concourse runs the jobs
/// of a pipeline (BUILD and SYNC name narrower actions that a stage does not promise).
pub const PIPELINE_ACTION: &str = "RUN";

/// A span as plain data; see the module docs for ids and shape.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanRecord {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent: Option<[u8; 8]>,
    pub kind: Kind,
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

/// `cicd.pipeline.task.run.result` of a finished GitHub Actions job, from its conclusion;
/// `None` while it has not completed. `neutral`, `action_required` and any conclusion GitHub
/// adds later are `error`: the convention has no member for them.
pub fn job_result(state: &JobState) -> Option<&'static str> {
    Some(match state.conclusion()? {
        JobConclusion::Success => "success",
        JobConclusion::Failure => "failure",
        JobConclusion::Cancelled => "cancellation",
        JobConclusion::Skipped => "skip",
        JobConclusion::TimedOut => "timeout",
        JobConclusion::Neutral | JobConclusion::ActionRequired | JobConclusion::Other(_) => "error",
    })
}

/// Span id of a GitHub Actions job's task-run span in commit `sha`'s trace: GitHub gives each
/// job of each attempt its own id.
pub fn job_span_id(sha: &str, job_id: i64, attempt: u32) -> [u8; 8] {
    span_id(sha, "premerge/checks/job", Some(job_id), Some(attempt as usize))
}

/// Span id of a GitHub Actions run's pipeline-run span (its latest attempt as read).
pub fn checks_run_span_id(sha: &str, run_id: i64, attempt: u32) -> [u8; 8] {
    span_id(sha, "premerge/checks", Some(run_id), Some(attempt as usize))
}

/// A link to a span: (trace id, span id).
pub type SpanLink = ([u8; 16], [u8; 8]);

/// `error.type` is conditionally required on pipeline and task runs whose result is `failure`
/// or `error`; the result itself is the lowest-cardinality class of error there is.
fn push_error_type(attributes: &mut Vec<(String, AttrValue)>, result: &str) {
    if matches!(result, "failure" | "error") {
        attributes.push(("error.type".into(), result.into()));
    }
}

/// The environment a journey ended in, and when (the last it reached when that is not known).
fn first_deployment(j: &Journey) -> Option<(&str, i64)> {
    if let Some(e) = &j.ended_in
        && let Some(t) = j.deployed_at.get(e)
    {
        return Some((e.as_str(), *t));
    }
    j.deployed_at.iter().map(|(e, t)| (e.as_str(), *t)).max_by_key(|(e, t)| (*t, *e))
}

/// Links from a fix's journey to the deployment it failed: per revert or hotfix commit that
/// failed a deployment, the span of that deployment's build in the trace of the deployment's
/// newest commit. They go on the fix's root span.
pub fn fix_links(derived: &crate::core::journey::Derived) -> std::collections::HashMap<String, Vec<SpanLink>> {
    use crate::core::deployments::FailReason;
    let mut out: std::collections::HashMap<String, Vec<SpanLink>> = Default::default();
    for d in &derived.deployments {
        let Some(f) = d.failed.as_ref().filter(|f| matches!(f.reason, FailReason::Reverted | FailReason::Hotfixed))
        else {
            continue;
        };
        let Some(head) = &d.newest_commit else { continue };
        let Some(stage) = derived.journeys.iter().find(|j| &j.sha == head).and_then(|j| j.stages.get(d.stage)) else {
            continue;
        };
        if !stage.attempts.iter().any(|a| a.build_id == d.build_id) {
            continue;
        }
        let span = attempt_span_id(head, &stage.name, d.build_id, attempt_index(&stage.attempts, d.build_id));
        for fix in &f.by_commits {
            // A root span is sent once, when its journey ends: only failures known by then are
            // linked, so the span is the same whenever it is built.
            let fix_end = derived
                .journeys
                .iter()
                .find(|j| &j.sha == fix)
                .and_then(|j| j.ended_in.as_ref().and_then(|e| j.deployed_at.get(e)));
            if fix_end.is_some_and(|end| f.known_at > *end) {
                continue;
            }
            let v = out.entry(fix.clone()).or_default();
            if !v.contains(&(trace_id(head), span)) {
                v.push((trace_id(head), span));
            }
        }
    }
    out
}

/// The same links from the fix's side, on the span that reveals the failure: the fix's
/// attempt span of the deployment that shipped it (`Failure::by_build`). That span is built
/// when that build ends, which is when the failure becomes known, so it carries the link even
/// when the fix's journey (and its root) ended earlier, at an environment before the failed
/// one (`journey_ends_at: staging`, a production failure). Per fix commit: (the fix's attempt
/// span id, the link).
pub fn fix_attempt_links(
    derived: &crate::core::journey::Derived,
) -> std::collections::HashMap<String, Vec<([u8; 8], SpanLink)>> {
    use crate::core::deployments::FailReason;
    let by_sha: std::collections::HashMap<&str, &Journey> =
        derived.journeys.iter().map(|j| (j.sha.as_str(), &**j)).collect();
    let mut out: std::collections::HashMap<String, Vec<([u8; 8], SpanLink)>> = Default::default();
    for d in &derived.deployments {
        let Some(f) = d.failed.as_ref().filter(|f| matches!(f.reason, FailReason::Reverted | FailReason::Hotfixed))
        else {
            continue;
        };
        let Some(head) = &d.newest_commit else { continue };
        let Some(stage) = by_sha.get(head.as_str()).and_then(|j| j.stages.get(d.stage)) else { continue };
        if !stage.attempts.iter().any(|a| a.build_id == d.build_id) {
            continue;
        }
        let target = (
            trace_id(head),
            attempt_span_id(head, &stage.name, d.build_id, attempt_index(&stage.attempts, d.build_id)),
        );
        for fix in &f.by_commits {
            let Some(fs) = by_sha.get(fix.as_str()).and_then(|j| j.stages.get(d.stage)) else { continue };
            if !fs.attempts.iter().any(|a| a.build_id == f.by_build) {
                continue;
            }
            let on = attempt_span_id(fix, &fs.name, f.by_build, attempt_index(&fs.attempts, f.by_build));
            let v = out.entry(fix.clone()).or_default();
            if !v.contains(&(on, target)) {
                v.push((on, target));
            }
        }
    }
    out
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
    // The run's result is its last attempt's (a failed stage may have ended errored or aborted).
    let result = if s.state == StageState::Succeeded {
        "success"
    } else {
        s.attempts
            .iter()
            .filter(|a| a.end.is_some())
            .max_by_key(|a| a.end)
            .and_then(|a| build_result(a.status))
            .unwrap_or("failure")
    };
    let pipeline = s.attempts.first().map(|p| &*p.pipeline).unwrap_or(s.name.as_str());
    let mut attributes: Vec<(String, AttrValue)> = vec![
        ("cicd.pipeline.name".into(), pipeline.into()),
        ("cicd.pipeline.action.name".into(), PIPELINE_ACTION.into()),
        ("cicd.pipeline.result".into(), result.into()),
        ("deploy_journey.stage".into(), s.name.as_str().into()),
        ("deploy_journey.stage.state".into(), s.state.as_str().into()),
    ];
    push_error_type(&mut attributes, result);
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
        kind: Kind::Server,
        name: format!("{PIPELINE_ACTION} {pipeline}"),
        start_unix_nano: nanos(start),
        end_unix_nano: nanos(end.max(start)),
        attributes,
        events,
        links: vec![],
        error: s.state == StageState::Failed,
    }];
    out.extend(s.attempts.iter().filter_map(|a| attempt_span(j, s, a)));
    out
}

/// The span of one finished attempt of stage `s`, under the stage span; `None` while it runs.
/// A rerun links to the attempt it re-ran, a build carried by a later commit to its span in
/// that commit's trace.
fn attempt_span(j: &Journey, s: &StageJourney, a: &Attempt) -> Option<SpanRecord> {
    let (Some(a_start), Some(a_end)) = (a.start, a.end) else { return None };
    let tid = trace_id(&j.sha);
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
    let result = build_result(a.status)?;
    let mut attributes: Vec<(String, AttrValue)> = vec![
        ("cicd.pipeline.name".into(), a.pipeline.as_ref().into()),
        ("cicd.pipeline.task.name".into(), a.job.as_ref().into()),
        ("cicd.pipeline.task.run.id".into(), a.build_id.to_string().into()),
        ("cicd.pipeline.task.run.url.full".into(), a.url.as_ref().into()),
        ("cicd.pipeline.task.run.result".into(), result.into()),
        ("deploy_journey.build.name".into(), a.name.as_ref().into()),
        ("deploy_journey.attribution".into(), a.method.as_str().into()),
        ("deploy_journey.own_build".into(), a.own.into()),
    ];
    push_error_type(&mut attributes, result);
    if let Some(h) = &a.head {
        attributes.push(("deploy_journey.build.head_revision".into(), h.as_str().into()));
    }
    Some(SpanRecord {
        trace_id: tid,
        span_id: attempt_span_id(&j.sha, &s.name, a.build_id, idx),
        parent: Some(stage_span_id(&j.sha, &s.name)),
        kind: Kind::Internal,
        name: format!("{} #{}", a.job, a.name),
        start_unix_nano: nanos(a_start),
        end_unix_nano: nanos(a_end.max(a_start)),
        attributes,
        events: vec![],
        links,
        error: matches!(a.status, BuildStatus::Failed | BuildStatus::Errored),
    })
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
        let mut attributes: Vec<(String, AttrValue)> =
            vec![("vcs.provider.name".into(), "github".into()), ("vcs.repository.url.full".into(), repo_url.into())];
        // `https://host/owner/name`: the last two segments are the owner and the repository.
        let mut segments = repo_url.trim_end_matches('/').rsplit('/');
        if let (Some(name), Some(owner)) = (segments.next(), segments.next())
            && !name.is_empty()
            && !owner.is_empty()
            && !owner.contains(':')
        {
            attributes.push(("vcs.owner.name".into(), owner.into()));
            attributes.push(("vcs.repository.name".into(), name.into()));
        }
        attributes.extend([
            ("vcs.ref.head.name".into(), branch.into()),
            ("vcs.ref.head.type".into(), "branch".into()),
            ("vcs.ref.head.revision".into(), j.sha.as_str().into()),
            ("deployment.environment.name".into(), env.into()),
            ("deploy_journey.change_type".into(), j.classification.change_type.as_str().into()),
            ("deploy_journey.outcome".into(), j.outcome.as_str().into()),
            ("deploy_journey.lead_time_seconds".into(), (end - j.lead_start).into()),
            ("deploy_journey.commit.subject".into(), j.subject.as_str().into()),
        ]);
        if let Some(p) = j.origin.as_ref().and_then(|o| o.pull()) {
            attributes.extend(change_attributes(p));
        }
        if j.outcome == Outcome::Failed {
            push_error_type(&mut attributes, "failure");
        }
        let start = premerge_start(j);
        let links = match &j.carried_by {
            Some(h) if h != &j.sha => vec![(trace_id(h), root_span_id(h))],
            _ => vec![],
        };
        out.push(SpanRecord {
            trace_id: trace_id(&j.sha),
            span_id: root_span_id(&j.sha),
            parent: None,
            kind: Kind::Internal,
            name: format!("deliver {}", j.short()),
            start_unix_nano: nanos(start),
            end_unix_nano: nanos(end.max(start)),
            attributes,
            events: vec![],
            links,
            error: j.outcome == Outcome::Failed,
        });
        if let Some(p) = j.origin.as_ref().and_then(|o| o.pull()) {
            out.extend(premerge_spans(j, p, branch));
        }
    }
    // A failed stage after the environment the journey ended in (a production deploy that
    // failed, say) can still be retried, which moves its end: it waits until it succeeds.
    let after_end = |s: &&StageJourney| {
        j.ended && s.state == StageState::Failed && j.failed_stage.as_deref() != Some(s.name.as_str())
    };
    out.extend(selected(j, stage_names).filter(|s| !after_end(s)).flat_map(|s| stage_spans(j, s)));
    out
}

/// Where the trace starts: the commit, or before it its pull request's first commit or opening.
fn premerge_start(j: &Journey) -> i64 {
    let pr =
        j.origin.as_ref().and_then(|o| o.pull()).map(|p| p.first_commit_at.unwrap_or(p.opened_at).min(p.opened_at));
    pr.into_iter().chain([j.commit_time, j.lead_start]).min().unwrap_or(j.commit_time)
}

/// The VCS change (pull request) attributes: it is merged, since its commit is on the branch.
fn change_attributes(p: &PullFact) -> Vec<(String, AttrValue)> {
    vec![
        ("vcs.change.id".into(), p.number.to_string().into()),
        ("vcs.change.title".into(), p.title.as_str().into()),
        ("vcs.change.state".into(), "merged".into()),
    ]
}

/// The pull request's span (`pull_request #N`, from its first commit or opening to the merge)
/// under the root, a span per pre-merge stage under it, and under `checks` one pipeline-run
/// span per GitHub Actions run of the final head (its latest attempt).
fn premerge_spans(j: &Journey, p: &PullFact, branch: &str) -> Vec<SpanRecord> {
    let tid = trace_id(&j.sha);
    let pr_id = span_id(&j.sha, "premerge", None, None);
    let start = p.first_commit_at.unwrap_or(p.opened_at).min(p.opened_at);
    let mut attributes = change_attributes(p);
    attributes.extend([
        ("vcs.provider.name".into(), "github".into()),
        ("vcs.ref.base.name".into(), branch.into()),
        ("vcs.ref.base.type".into(), "branch".into()),
        ("deploy_journey.pull_request.url".into(), p.url.as_str().into()),
    ]);
    if p.head_sha.len() == 40 {
        attributes.push(("vcs.ref.head.revision".into(), p.head_sha.as_str().into()));
    }
    let mut out = vec![SpanRecord {
        trace_id: tid,
        span_id: pr_id,
        parent: Some(root_span_id(&j.sha)),
        kind: Kind::Internal,
        name: format!("pull_request #{}", p.number),
        start_unix_nano: nanos(start),
        end_unix_nano: nanos(p.merged_at.max(start)),
        attributes,
        events: vec![],
        links: vec![],
        error: false,
    }];
    for (name, from, to) in p.stage_times() {
        let sid = span_id(&j.sha, &format!("premerge/{name}"), None, None);
        out.push(SpanRecord {
            trace_id: tid,
            span_id: sid,
            parent: Some(pr_id),
            kind: Kind::Internal,
            name: name.to_string(),
            start_unix_nano: nanos(from),
            end_unix_nano: nanos(to),
            attributes: vec![("deploy_journey.premerge.stage".into(), name.into())],
            events: vec![],
            links: vec![],
            error: false,
        });
        if name != "checks" {
            continue;
        }
        for run in &p.checks {
            let Some(end) = run.completed_at else { continue };
            let result = if run.success { "success" } else { "failure" };
            let workflow = if run.name.is_empty() { "workflow" } else { run.name.as_str() };
            let mut attributes: Vec<(String, AttrValue)> = vec![
                ("cicd.pipeline.name".into(), workflow.into()),
                ("cicd.pipeline.action.name".into(), PIPELINE_ACTION.into()),
                ("cicd.pipeline.run.id".into(), run.run_id.to_string().into()),
                ("cicd.pipeline.result".into(), result.into()),
                ("deploy_journey.run_attempt".into(), i64::from(run.attempt).into()),
            ];
            if !run.url.is_empty() {
                attributes.push(("cicd.pipeline.run.url.full".into(), run.url.as_str().into()));
            }
            push_error_type(&mut attributes, result);
            let run_span = checks_run_span_id(&j.sha, run.run_id, run.attempt);
            out.push(SpanRecord {
                trace_id: tid,
                span_id: run_span,
                parent: Some(sid),
                kind: Kind::Server,
                name: format!("{PIPELINE_ACTION} {workflow}"),
                start_unix_nano: nanos(run.started_at),
                end_unix_nano: nanos(end.max(run.started_at)),
                attributes,
                events: vec![],
                links: vec![],
                error: !run.success,
            });
            // The run's jobs: those of the attempt read (a re-run that began between the two
            // requests leaves the reading unsettled; it is read again).
            out.extend(
                run.jobs
                    .iter()
                    // The run's latest attempt lists the jobs it re-ran and, with their own
                    // earlier attempt, those it did not: all of them decided the run.
                    .filter(|jb| jb.attempt <= run.attempt)
                    .filter_map(|jb| job_span(tid, &j.sha, run, workflow, jb, run_span)),
            );
        }
    }
    out
}

/// The task-run span of one completed GitHub Actions job under its run's span; `None` while it
/// has not completed, or without a page to link to.
fn job_span(
    tid: [u8; 16],
    sha: &str,
    run: &ChecksRunFact,
    workflow: &str,
    jb: &ChecksJobFact,
    parent: [u8; 8],
) -> Option<SpanRecord> {
    let result = job_result(&jb.state)?;
    let end = jb.completed_at?;
    let start = jb.started_at.unwrap_or(end).min(end);
    let url = [jb.url.as_str(), run.url.as_str()].into_iter().find(|u| !u.is_empty())?;
    let name = if jb.name.is_empty() { format!("job {}", jb.job_id) } else { jb.name.clone() };
    let mut attributes: Vec<(String, AttrValue)> = vec![
        ("cicd.pipeline.name".into(), workflow.into()),
        ("cicd.pipeline.task.name".into(), name.as_str().into()),
        ("cicd.pipeline.task.run.id".into(), jb.job_id.to_string().into()),
        ("cicd.pipeline.task.run.url.full".into(), url.into()),
        ("cicd.pipeline.task.run.result".into(), result.into()),
        ("deploy_journey.run_attempt".into(), i64::from(jb.attempt).into()),
    ];
    push_error_type(&mut attributes, result);
    Some(SpanRecord {
        trace_id: tid,
        span_id: job_span_id(sha, jb.job_id, jb.attempt),
        parent: Some(parent),
        kind: Kind::Internal,
        name,
        start_unix_nano: nanos(start),
        end_unix_nano: nanos(end),
        attributes,
        events: vec![],
        links: vec![],
        error: matches!(result, "failure" | "error"),
    })
}

/// The repository's web URL (`vcs.repository.url.full`) from the API URL the exporter polls:
/// `api.github.com` → `github.com`, GitHub Enterprise `https://host/api/v3` → `https://host`.
pub fn repository_web_url(api_url: &str, owner: &str, name: &str) -> String {
    let base = api_url.trim_end_matches('/');
    let base = base.strip_suffix("/api/v3").unwrap_or(base);
    let base = base.replacen("://api.github.com", "://github.com", 1);
    format!("{base}/{owner}/{name}")
}

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
        span_kind: match r.kind {
            Kind::Server => SpanKind::Server,
            Kind::Internal => SpanKind::Internal,
        },
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
            name: id.to_string().into(),
            status,
            start: Some(start),
            end: Some(end),
            url: format!("https://ci.example/builds/{id}").into(),
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
            lead_start: 1_000,
            origin: None,
            classification: Classification { resources: vec!["lana".into()], change_type: ChangeType::Backend },
            stages,
            outcome: if deployed.is_some() { Outcome::Deployed } else { Outcome::InFlight },
            failed_stage: None,
            carried_on: false,
            ended: deployed.is_some(),
            ended_in: deployed.map(|_| "staging".to_string()),
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
            ("vcs.provider.name", "github"),
            ("vcs.owner.name", "o"),
            ("vcs.repository.name", "r"),
            ("vcs.ref.head.type", "branch"),
            ("deploy_journey.change_type", "backend"),
            ("deploy_journey.outcome", "deployed"),
            ("deploy_journey.commit.subject", "fix: a"),
        ] {
            assert_eq!(str_attr(root, k), v, "{k}");
        }
        assert_eq!(root.attr("deploy_journey.lead_time_seconds"), Some(&AttrValue::Int(900)));
        // The root is no pipeline run.
        assert_eq!((root.kind, root.attr("cicd.pipeline.result")), (Kind::Internal, None));
        let test = spans.iter().find(|s| s.span_id == stage_span_id(MINE, "test")).unwrap();
        assert_eq!((test.kind, test.name.as_str()), (Kind::Server, "RUN lana-bank"));
        for (k, v) in [
            ("cicd.pipeline.name", "lana-bank"),
            ("cicd.pipeline.action.name", "RUN"),
            ("cicd.pipeline.result", "success"),
            ("deploy_journey.stage", "test"),
        ] {
            assert_eq!(str_attr(test, k), v, "{k}");
        }
        assert_eq!(test.attr("error.type"), None);
        assert_eq!(test.parent, Some(root.span_id));
        assert_eq!((test.start_unix_nano, test.end_unix_nano), (nanos(1_000), nanos(1_500)));
        assert_eq!(test.events[0].name, "build.started");
        assert_eq!(test.events[0].time_unix_nano, nanos(1_060));
        let build = spans.iter().find(|s| s.name == "test-unit #10").unwrap();
        assert_eq!(build.parent, Some(test.span_id));
        assert_eq!((build.start_unix_nano, build.end_unix_nano), (nanos(1_060), nanos(1_500)));
        for (k, v) in [
            ("cicd.pipeline.name", "lana-bank"),
            ("cicd.pipeline.task.name", "test-unit"),
            ("cicd.pipeline.task.run.id", "10"),
            ("cicd.pipeline.task.run.url.full", "https://ci.example/builds/10"),
            ("cicd.pipeline.task.run.result", "success"),
        ] {
            assert_eq!(str_attr(build, k), v, "{k}");
        }
        assert_eq!(build.kind, Kind::Internal);
        assert_eq!((build.attr("cicd.pipeline.result"), build.attr("cicd.pipeline.run.id")), (None, None));
        assert!(!build.error && build.links.is_empty());
        // Filtered by stage name.
        let only = journey_spans(&j, "u", "main", &["deploy"]);
        assert_eq!(
            only.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            ["deliver a1b2c3d", "RUN lana-bank", "deploy #20"]
        );
    }

    /// A commit from a pull request: the root starts at the PR's first commit and carries the
    /// change; under it the PR span, its stages, and a pipeline-run span per Actions run.
    #[test]
    fn a_pull_requests_spans_come_before_the_pipeline() {
        use crate::core::premerge::{ChecksRunFact, Origin, ReviewFact};
        let job = |id: i64, name: &str, state: JobState, end: Option<i64>| ChecksJobFact {
            job_id: id,
            name: name.into(),
            url: format!("https://github.com/o/r/actions/runs/77/job/{id}"),
            attempt: 2,
            state,
            started_at: Some(450),
            completed_at: end,
        };
        let done = |c: JobConclusion| JobState::Completed(c);
        let mut j = journey(
            vec![stage(
                "test",
                StageState::Succeeded,
                1_000,
                vec![att(10, "test-unit", BuildStatus::Succeeded, 1_060, 1_500)],
            )],
            Some(1_500),
        );
        let run = |attempt, success| ChecksRunFact {
            run_id: 77,
            name: "Nextest Tests".into(),
            url: "https://github.com/o/r/actions/runs/77".into(),
            attempt,
            started_at: 400,
            completed_at: Some(700),
            success,
            jobs: vec![
                job(901, "Cargo Nextest Tests", done(JobConclusion::Success), Some(690)),
                job(902, "lint", done(JobConclusion::Failure), Some(600)),
                job(903, "docs", done(JobConclusion::Cancelled), Some(500)),
                job(904, "bench", done(JobConclusion::Skipped), Some(450)),
                job(905, "e2e", done(JobConclusion::TimedOut), Some(680)),
                job(906, "audit", done(JobConclusion::Other("stale".into())), Some(470)),
                job(907, "flaky", done(JobConclusion::Neutral), Some(470)),
                job(908, "still going", JobState::InProgress, None),
                // Of a later attempt than the run's as read (a re-run began between the two
                // requests): not under this run's span.
                ChecksJobFact { attempt: 3, ..job(909, "newer", done(JobConclusion::Failure), Some(420)) },
                // Not re-run: listed with its own earlier attempt, and it decided the run too.
                ChecksJobFact { attempt: 1, ..job(910, "kept", done(JobConclusion::Success), Some(430)) },
            ],
        };
        j.origin = Some(Origin::Pull(std::sync::Arc::new(PullFact {
            number: 12,
            title: "feat: terms".into(),
            url: "https://github.com/o/r/pull/12".into(),
            labels: vec![],
            head_sha: "b".repeat(40),
            first_commit_at: Some(100),
            opened_at: 300,
            ready_at: None,
            reviews: vec![ReviewFact { submitted_at: 800, approved: true }],
            checks: vec![run(2, true)],
            merged_at: 990,
            detailed: true,
        })));
        let spans = journey_spans(&j, "https://github.com/o/r", "main", &[]);
        let root = &spans[0];
        assert_eq!(root.start_unix_nano, nanos(100), "the trace starts at the PR's first commit");
        assert_eq!(str_attr(root, "vcs.change.id"), "12");
        assert_eq!(str_attr(root, "vcs.change.state"), "merged");
        let pr_id = span_id(MINE, "premerge", None, None);
        let pr = spans.iter().find(|s| s.span_id == pr_id).expect("the PR span");
        assert_eq!(
            (pr.name.as_str(), pr.parent, pr.start_unix_nano, pr.end_unix_nano),
            ("pull_request #12", Some(root_span_id(MINE)), nanos(100), nanos(990))
        );
        let named: Vec<(&str, u64, u64)> = spans
            .iter()
            .filter(|s| s.parent == Some(pr_id))
            .map(|s| (s.name.as_str(), s.start_unix_nano / 1_000_000_000, s.end_unix_nano / 1_000_000_000))
            .collect();
        assert_eq!(
            named,
            vec![
                ("coding", 100, 300),
                ("pickup", 300, 800),
                ("review", 800, 800),
                ("checks", 400, 700),
                ("merge", 800, 990)
            ]
        );
        let checks_id = span_id(MINE, "premerge/checks", None, None);
        let runs: Vec<&SpanRecord> = spans.iter().filter(|s| s.parent == Some(checks_id)).collect();
        assert_eq!(runs.len(), 1);
        assert_eq!((runs[0].kind, runs[0].name.as_str()), (Kind::Server, "RUN Nextest Tests"));
        assert_eq!(str_attr(runs[0], "cicd.pipeline.result"), "success");
        assert_eq!(str_attr(runs[0], "cicd.pipeline.run.id"), "77");
        // One task-run span per completed job of the attempt, its result mapped from GitHub's
        // conclusion, error.type and an Error status exactly on failure and error.
        let tasks: Vec<&SpanRecord> = spans.iter().filter(|s| s.parent == Some(runs[0].span_id)).collect();
        let got: Vec<(&str, &str, &str, bool, bool)> = tasks
            .iter()
            .map(|s| {
                assert_eq!(s.kind, Kind::Internal);
                assert_eq!(str_attr(s, "cicd.pipeline.task.name"), s.name);
                assert_eq!(str_attr(s, "cicd.pipeline.name"), "Nextest Tests");
                let id = str_attr(s, "cicd.pipeline.task.run.id");
                assert_eq!(
                    str_attr(s, "cicd.pipeline.task.run.url.full"),
                    format!("https://github.com/o/r/actions/runs/77/job/{id}")
                );
                assert_eq!(s.span_id, job_span_id(MINE, id.parse().unwrap(), if id == "910" { 1 } else { 2 }));
                (
                    s.name.as_str(),
                    id,
                    str_attr(s, "cicd.pipeline.task.run.result"),
                    s.attr("error.type").is_some(),
                    s.error,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("Cargo Nextest Tests", "901", "success", false, false),
                ("lint", "902", "failure", true, true),
                ("docs", "903", "cancellation", false, false),
                ("bench", "904", "skip", false, false),
                ("e2e", "905", "timeout", false, false),
                ("audit", "906", "error", true, true),
                ("flaky", "907", "error", true, true),
                ("kept", "910", "success", false, false),
            ]
        );
        let lint = tasks[1];
        assert_eq!((lint.start_unix_nano, lint.end_unix_nano), (nanos(450), nanos(600)));
        assert_eq!(job_result(&JobState::InProgress), None);
        // Distinct from every other span of the trace.
        let ids: std::collections::BTreeSet<[u8; 8]> = spans.iter().map(|s| s.span_id).collect();
        assert_eq!(ids.len(), spans.len());
        // Exactly once: the same journey gives the same ids.
        let again: Vec<[u8; 8]> =
            journey_spans(&j, "https://github.com/o/r", "main", &[]).iter().map(|s| s.span_id).collect();
        assert_eq!(again, spans.iter().map(|s| s.span_id).collect::<Vec<_>>());
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
        assert_eq!(str_attr(first, "cicd.pipeline.task.run.result"), "failure");
        assert_eq!(str_attr(first, "error.type"), "failure");
        assert_eq!(second.attr("error.type"), None);
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
        assert_eq!(names(finished_stage_spans(&j, &[])), ["RUN lana-bank", "test-unit #10"]);
        let all = journey_spans(&j, "u", "main", &[]);
        assert_eq!(names(all.clone()), ["RUN lana-bank", "test-unit #10", "RUN lana-bank", "build-rc #15"]);
        // The failed run says so, and why in the convention's terms.
        assert_eq!(str_attr(&all[2], "cicd.pipeline.result"), "failure");
        assert_eq!(str_attr(&all[2], "error.type"), "failure");
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

    /// Issue #17: a revert's journey links to the span of the deployment it failed (in the
    /// trace of that deployment's newest commit); a revert shipped after the window fails
    /// nothing and links nowhere.
    #[test]
    fn a_revert_links_to_the_deployment_it_failed() {
        use crate::core::journey::{BuildFact, CommitFact, Fact, Facts, VersionFact, derive};
        let core = crate::config::parse(
            "
repository: { github: o/r }
concourse: { url: 'http://ci/', team: dev }
resources: { repo: {} }
stages:
  - { name: production, pipeline: p, jobs: [d], environment: production }
",
            "t.yaml",
            &|_| None,
        )
        .unwrap()
        .core();
        let sha = |i: usize| format!("{i:02x}{}", "f".repeat(38));
        let revert = format!("Revert \"feat: b\"\n\nThis reverts commit {}.", sha(1));
        let run = |revert_end: i64| {
            let mut f = Facts::default();
            for (i, m) in ["feat: a", "feat: b", revert.as_str()].iter().enumerate() {
                f.apply(Fact::Commit(CommitFact {
                    sha: sha(i),
                    parent: (i > 0).then(|| sha(i - 1)),
                    author: "dev".into(),
                    author_date: 100,
                    committer_date: 100,
                    message: m.to_string(),
                    files: vec!["a.rs".into()],
                    first_seen: 100,
                }));
            }
            for (id, c, end) in [(1, 0, 1_000), (2, 1, 2_000), (3, 2, revert_end)] {
                f.apply(Fact::Build(BuildFact {
                    id,
                    pipeline: "p".into(),
                    job: "d".into(),
                    name: id.to_string().into(),
                    status: BuildStatus::Succeeded,
                    start: Some(end - 60),
                    end: Some(end),
                    rerun_of: None,
                    url: String::new().into(),
                    inputs: vec![VersionFact {
                        step: "repo".into(),
                        resource: "repo".into(),
                        version: [("ref", sha(c))].into_iter().collect(),
                        message: None,
                    }],
                    outputs: vec![],
                    resources_known: true,
                }));
            }
            fix_links(&derive(&f, &core, 1_000_000))
        };
        let links = run(5_000);
        assert_eq!(links.len(), 1);
        assert_eq!(links[&sha(2)], vec![(trace_id(&sha(1)), attempt_span_id(&sha(1), "production", 2, 0))]);
        assert!(run(2_000 + 86_401).is_empty());
    }
}
