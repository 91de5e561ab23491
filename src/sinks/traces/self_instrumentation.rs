//! Self-instrumentation: the exporter's own work (poll cycles) as traces, through a layer that
//! `serve` installs into the `tracing` subscriber `main` built, once the configuration is known.

use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;

use super::otlp::{SELF_SCOPE, TraceSinkConfig, TraceSinkError};

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
