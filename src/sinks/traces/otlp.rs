//! The OTLP exporter: settings resolved from the config file and the standard `OTEL_*`
//! environment variables ([`TraceSinkConfig::resolve`]), and the span exporter they build
//! (HTTP/protobuf or gRPC).

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry_otlp::tonic_types::metadata::MetadataMap;
use opentelemetry_otlp::{Protocol, RetryPolicy, WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SpanExporter;

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
        let protocol = resolve_protocol(&get, file)?;
        let Some(endpoint) = resolve_endpoint(&get, file, protocol)? else { return Ok(None) };
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
        let self_instrumentation = resolve_self_instrumentation(&get, file)?;
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

/// Reads a setting from the environment: trimmed, `None` when unset or blank.
type Lookup<'a> = dyn Fn(&str) -> Option<String> + 'a;

/// `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, `OTEL_EXPORTER_OTLP_PROTOCOL`, `traces.protocol`, in
/// that order; an unknown value is an error naming where it came from.
fn resolve_protocol(get: &Lookup, file: &crate::config::Traces) -> Result<OtlpProtocol, TraceSinkError> {
    let chosen = get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .map(|p| (p, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"))
        .or_else(|| get("OTEL_EXPORTER_OTLP_PROTOCOL").map(|p| (p, "OTEL_EXPORTER_OTLP_PROTOCOL")))
        .or_else(|| file.protocol.clone().map(|p| (p, "traces.protocol")));
    let Some((p, origin)) = chosen else { return Ok(OtlpProtocol::HttpProtobuf) };
    OtlpProtocol::parse(&p).ok_or_else(|| TraceSinkError::Config {
        setting: origin.to_string(),
        problem: format!("{p:?} is not one of http/protobuf, grpc"),
    })
}

/// The traces endpoint: the traces-specific variable verbatim, else a base URL (environment, then
/// file) with `/v1/traces` appended for HTTP. `None`: no endpoint anywhere, traces are off.
fn resolve_endpoint(
    get: &Lookup,
    file: &crate::config::Traces,
    protocol: OtlpProtocol,
) -> Result<Option<String>, TraceSinkError> {
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
    Ok(Some(endpoint))
}

/// `DEPLOY_JOURNEY_SELF_TRACES=true|false` (or 1/0), else the file's `self_instrumentation`.
fn resolve_self_instrumentation(get: &Lookup, file: &crate::config::Traces) -> Result<bool, TraceSinkError> {
    match get("DEPLOY_JOURNEY_SELF_TRACES").as_deref() {
        Some("true" | "1") => Ok(true),
        Some("false" | "0") => Ok(false),
        Some(other) => Err(TraceSinkError::Config {
            setting: "DEPLOY_JOURNEY_SELF_TRACES".into(),
            problem: format!("{other:?} is not true or false"),
        }),
        None => Ok(file.self_instrumentation),
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
