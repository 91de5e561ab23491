//! Commit journeys as OpenTelemetry traces: one trace per commit, rebuilt from CI facts.
//!
//! - [`spans`]: the span tree of a journey as plain [`SpanRecord`]s (deterministic ids, names,
//!   attributes) and their conversion to the SDK's `SpanData`; pure.
//! - [`otlp`]: [`TraceSinkConfig`] from the config file and `OTEL_*` variables, and the OTLP
//!   span exporter it builds.
//! - [`export`]: [`SpanExport`], which hands newly exportable spans to an async task that
//!   exports them with backoff and marks them in the store once acknowledged.
//! - [`self_instrumentation`]: the exporter's own poll-cycle spans, on a separate scope.

pub mod export;
pub mod otlp;
pub mod self_instrumentation;
pub mod spans;

pub use export::{
    BATCH_SPANS, MARK_KIND, MarkStore, QUEUE_BATCHES, SpanExport, SpanExportCounts, SpanExportStats, mark_key,
};
pub use otlp::{
    DEFAULT_SERVICE_NAME, JOURNEY_SCOPE, OtlpProtocol, SELF_SCOPE, TraceSinkConfig, TraceSinkError, parse_key_values,
};
pub use self_instrumentation::{
    SelfTraceHandle, SelfTraceLayer, install_self_traces, install_self_traces_into, register_self_trace_handle,
    self_tracer_provider,
};
pub use spans::{
    AttrValue, Kind as SpanKindRecord, PIPELINE_ACTION, SpanEventRecord, SpanRecord, attempt_index, attempt_span_id,
    build_result, checks_run_span_id, finished_stage_spans, fnv1a64, job_result, job_span_id, journey_spans,
    repository_web_url, root_span_id, span_id, stage_span_id, to_span_data, trace_id,
};
