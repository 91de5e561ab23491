//! Traces end to end: journeys from a scenario run through the real sources become spans, are
//! exported over OTLP HTTP/protobuf by `TraceSink`, and a test receiver decodes them with the
//! official protobuf definitions.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use deploy_journey::core::journey::Journey;
use deploy_journey::sinks::traces::{
    SpanRecord, TraceSink, TraceSinkConfig, attempt_index, attempt_span_id, journey_spans, root_span_id, stage_span_id,
    trace_id,
};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

use crate::journeys::run_scenario;

/// Requests a receiver got: (headers, decoded body).
type Received = Arc<Mutex<Vec<(HeaderMap, ExportTraceServiceRequest)>>>;

async fn receive(State(got): State<Received>, headers: HeaderMap, body: Bytes) -> impl IntoResponse {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if ct != "application/x-protobuf" {
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, Vec::new());
    }
    let raw = match headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()) {
        None | Some("identity") => body.to_vec(),
        Some("gzip") => {
            let mut out = vec![];
            if flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut out).is_err() {
                return (StatusCode::BAD_REQUEST, Vec::new());
            }
            out
        }
        Some(_) => return (StatusCode::UNSUPPORTED_MEDIA_TYPE, Vec::new()),
    };
    match ExportTraceServiceRequest::decode(&raw[..]) {
        Ok(req) => {
            got.lock().unwrap().push((headers, req));
            (StatusCode::OK, ExportTraceServiceResponse { partial_success: None }.encode_to_vec())
        }
        Err(_) => (StatusCode::BAD_REQUEST, Vec::new()),
    }
}

/// An OTLP/HTTP receiver on 127.0.0.1:0; returns its base URL and what it received.
async fn spawn_receiver() -> (String, Received, tokio::task::JoinHandle<()>) {
    let got: Received = Arc::default();
    let app = axum::Router::new().route("/v1/traces", post(receive)).with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, got, task)
}

fn attr<'a>(kvs: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    kvs.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()).and_then(|v| v.value.as_ref())
}

fn str_attr<'a>(kvs: &'a [KeyValue], key: &str) -> &'a str {
    match attr(kvs, key) {
        Some(AnyValue::StringValue(s)) => s,
        other => panic!("{key}: {other:?}"),
    }
}

fn id16(v: &[u8]) -> [u8; 16] {
    v.try_into().unwrap_or_else(|_| panic!("trace id of {} bytes", v.len()))
}
fn id8(v: &[u8]) -> [u8; 8] {
    v.try_into().unwrap_or_else(|_| panic!("span id of {} bytes", v.len()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journeys_arrive_as_one_trace_per_commit() {
    let r = run_scenario("three-while-tests-run.yaml", "lana").await;
    let (url, got, task) = spawn_receiver().await;
    let repo = &r.cfg.repository;
    let repo_url = format!("https://github.com/{}/{}", repo.owner, repo.name);
    let ended: Vec<&Journey> = r.derived.journeys.iter().filter(|j| j.ended).collect();
    for k in ["first", "a", "b", "c"] {
        assert!(r.journey(k).ended, "{k} should have reached staging");
    }
    let records: Vec<SpanRecord> = ended.iter().flat_map(|j| journey_spans(j, &repo_url, &repo.branch, &[])).collect();

    // The blocking exporter must be built, used and dropped off the async runtime.
    let cfg = TraceSinkConfig::from_lookup(|k| match k {
        "OTEL_EXPORTER_OTLP_ENDPOINT" => Some(url.clone()),
        "OTEL_EXPORTER_OTLP_HEADERS" => Some("x-tenant=lana%20bank".into()),
        "OTEL_RESOURCE_ATTRIBUTES" => Some("deployment.environment.name=ci".into()),
        _ => None,
    });
    assert_eq!(cfg.endpoint, format!("{url}/v1/traces"));
    let to_send = records.clone();
    let (flush, shutdown) = tokio::task::spawn_blocking(move || {
        let sink = TraceSink::new(cfg).expect("sink");
        sink.export(&to_send).expect("export");
        let flush = sink.force_flush();
        (flush, sink.shutdown())
    })
    .await
    .unwrap();
    assert!(flush.is_ok(), "force_flush: {flush:?}");
    assert!(shutdown.is_ok(), "shutdown: {shutdown:?}");
    task.abort();

    let reqs = std::mem::take(&mut *got.lock().unwrap());
    assert!(!reqs.is_empty(), "the receiver got nothing");
    let mut spans: HashMap<[u8; 8], Span> = HashMap::new();
    for (headers, req) in &reqs {
        assert_eq!(headers.get("x-tenant").and_then(|v| v.to_str().ok()), Some("lana bank"));
        for rs in &req.resource_spans {
            let res = rs.resource.as_ref().expect("resource");
            assert_eq!(str_attr(&res.attributes, "service.name"), "deploy-journey");
            assert_eq!(str_attr(&res.attributes, "deployment.environment.name"), "ci");
            for ss in &rs.scope_spans {
                assert_eq!(ss.scope.as_ref().map(|s| s.name.as_str()), Some("deploy-journey"));
                for s in &ss.spans {
                    assert!(spans.insert(id8(&s.span_id), s.clone()).is_none(), "duplicate span {}", s.name);
                }
            }
        }
    }
    assert_eq!(spans.len(), records.len(), "every span arrives exactly once");

    // One trace per commit, its id the sha's first 32 hex digits.
    let traces: BTreeSet<[u8; 16]> = spans.values().map(|s| id16(&s.trace_id)).collect();
    let want: BTreeSet<[u8; 16]> = ended.iter().map(|j| trace_id(&j.sha)).collect();
    assert_eq!(traces, want);
    for j in &ended {
        assert_eq!(hex::encode(trace_id(&j.sha)), j.sha[..32]);
    }

    let builds: BTreeMap<i64, (Option<i64>, Option<i64>)> =
        r.sim.with_world(|w| w.concourse.builds.iter().map(|b| (b.id, (b.start_time, b.end_time))).collect());
    let ns = |t: i64| u64::try_from(t).unwrap() * 1_000_000_000;
    for j in &ended {
        let tid = trace_id(&j.sha);
        let mine: Vec<&Span> = spans.values().filter(|s| id16(&s.trace_id) == tid).collect();
        // Exactly one root: `deliver <short>`, commit time → deployment.
        let roots: Vec<&&Span> = mine.iter().filter(|s| s.parent_span_id.is_empty()).collect();
        assert_eq!(roots.len(), 1, "{}: roots", j.short());
        let root = roots[0];
        assert_eq!(id8(&root.span_id), root_span_id(&j.sha));
        assert_eq!(root.name, format!("deliver {}", j.short()));
        let deployed = j.deployed_at["staging"];
        assert_eq!((root.start_time_unix_nano, root.end_time_unix_nano), (ns(j.commit_time), ns(deployed)));
        assert_eq!(str_attr(&root.attributes, "vcs.ref.head.revision"), j.sha);
        assert_eq!(str_attr(&root.attributes, "vcs.ref.head.name"), repo.branch);
        assert_eq!(str_attr(&root.attributes, "vcs.repository.url.full"), repo_url);
        assert_eq!(str_attr(&root.attributes, "deployment.environment.name"), "staging");
        assert_eq!(str_attr(&root.attributes, "deploy_journey.outcome"), j.outcome.as_str());
        assert_eq!(str_attr(&root.attributes, "deploy_journey.commit.subject"), j.subject);
        assert_eq!(
            attr(&root.attributes, "deploy_journey.lead_time_seconds"),
            Some(&AnyValue::IntValue(deployed - j.commit_time))
        );

        for st in j.stages.iter().filter(|s| !s.attempts.is_empty() && s.end.is_some()) {
            let sid = stage_span_id(&j.sha, &st.name);
            let ss = spans.get(&sid).unwrap_or_else(|| panic!("{} {}: no stage span", j.short(), st.name));
            assert_eq!(ss.name, st.name);
            assert_eq!(id16(&ss.trace_id), tid);
            assert_eq!(id8(&ss.parent_span_id), root_span_id(&j.sha));
            let first_start = st.start.unwrap();
            assert_eq!(ss.start_time_unix_nano, ns(st.ready_at.unwrap_or(first_start).min(first_start)));
            assert_eq!(ss.end_time_unix_nano, ns(st.end.unwrap()));
            assert_eq!(ss.events[0].name, "build.started");
            assert_eq!(ss.events[0].time_unix_nano, ns(st.start.unwrap()));
            for a in &st.attempts {
                let aid = attempt_span_id(&j.sha, &st.name, a.build_id, attempt_index(&st.attempts, a.build_id));
                let s = spans
                    .get(&aid)
                    .unwrap_or_else(|| panic!("{} {}: no span for build {}", j.short(), st.name, a.build_id));
                assert_eq!(id8(&s.parent_span_id), sid);
                assert_eq!(id16(&s.trace_id), tid);
                // The build's own times, as the simulator (the CI) has them.
                let (start, end) = builds[&a.build_id];
                assert_eq!(Some(s.start_time_unix_nano), start.map(ns), "{} build {}", j.short(), a.build_id);
                assert_eq!(Some(s.end_time_unix_nano), end.map(ns), "{} build {}", j.short(), a.build_id);
                assert_eq!(str_attr(&s.attributes, "cicd.pipeline.run.id"), a.build_id.to_string());
                assert_eq!(str_attr(&s.attributes, "cicd.pipeline.task.name"), a.job);
                assert_eq!(str_attr(&s.attributes, "cicd.pipeline.name"), a.pipeline);
                assert_eq!(str_attr(&s.attributes, "cicd.pipeline.run.url.full"), a.url);
                if !a.own {
                    // Carried by a later commit's build: the link lands on that build's span in
                    // the head commit's trace, which was exported too.
                    let head = a.head.as_deref().unwrap();
                    let l = s.links.iter().find(|l| id16(&l.trace_id) == trace_id(head)).expect("link to head trace");
                    let target = spans.get(&id8(&l.span_id)).expect("linked span exported");
                    assert_eq!(id16(&target.trace_id), trace_id(head));
                    assert_eq!(str_attr(&target.attributes, "cicd.pipeline.run.id"), a.build_id.to_string());
                }
            }
        }
    }

    // The batched commits: a and b have no test build of their own; theirs links into c's trace.
    let c = &r.shas["c"];
    for k in ["a", "b"] {
        let j = r.journey(k);
        let tests = j.stages.iter().find(|s| s.name == "tests").unwrap();
        let a = &tests.attempts[0];
        assert!(!a.own);
        let s = &spans[&attempt_span_id(&j.sha, "tests", a.build_id, 0)];
        assert_eq!(
            s.links.iter().map(|l| (id16(&l.trace_id), id8(&l.span_id))).collect::<Vec<_>>(),
            [(trace_id(c), attempt_span_id(c, "tests", a.build_id, 0))]
        );
    }
}

#[tokio::test]
async fn receiver_decodes_gzip_bodies() {
    use std::io::Write;
    let (url, got, task) = spawn_receiver().await;
    let req = ExportTraceServiceRequest { resource_spans: vec![Default::default()] };
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&req.encode_to_vec()).unwrap();
    let resp = crate::support::client()
        .post(format!("{url}/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "gzip")
        .body(gz.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.bytes().await.unwrap();
    assert!(ExportTraceServiceResponse::decode(&body[..]).is_ok());
    assert_eq!(got.lock().unwrap()[0].1, req);
    task.abort();
}
