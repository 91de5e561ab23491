//! Traces end to end: `serve` follows a scenario in the simulator and exports its journeys over
//! OTLP (HTTP/protobuf and gRPC); test receivers decode what arrives with the official protobuf
//! definitions (opentelemetry-proto, tonic for gRPC). Checked: one trace per commit, the ids,
//! parent/child, timestamps equal to the simulator's build times, attributes, rerun and batch
//! links, exactly the spans the journeys have (no duplicates), a collector outage, and a
//! SIGKILLed real binary.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use deploy_journey::core::journey::Derived;
use deploy_journey::sim::Sim;
use deploy_journey::sim::clock::{ClockMode, SimClock};
use deploy_journey::sim::workload::Scenario;
use deploy_journey::sinks::traces::{
    attempt_index, attempt_span_id, checks_run_span_id, finished_stage_spans, job_result, job_span_id, journey_spans,
    repository_web_url, root_span_id, stage_span_id, trace_id,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;

use crate::journeys::{example_config, run_scenario};
use crate::support::START;

/// Requests a receiver got: (headers or gRPC metadata, decoded body).
pub(crate) type Received = Arc<Mutex<Vec<(HeaderMap, ExportTraceServiceRequest)>>>;
pub(crate) async fn receive(State(got): State<Received>, headers: HeaderMap, body: Bytes) -> impl IntoResponse {
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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let got: Received = Arc::default();
    let (url, task) = http_receiver_on(listener, got.clone());
    (url, got, task)
}

fn http_receiver_on(listener: tokio::net::TcpListener, got: Received) -> (String, tokio::task::JoinHandle<()>) {
    let app = axum::Router::new().route("/v1/traces", post(receive)).with_state(got);
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, task)
}

/// An OTLP/gRPC receiver: the generated `TraceService` server of opentelemetry-proto.
struct GrpcReceiver(Received);

#[tonic::async_trait]
impl TraceService for GrpcReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let headers = request.metadata().clone().into_headers();
        self.0.lock().unwrap().push((headers, request.into_inner()));
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

async fn spawn_grpc_receiver() -> (String, Received, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let got: Received = Arc::default();
    let svc = TraceServiceServer::new(GrpcReceiver(got.clone()));
    let task = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await;
    });
    (url, got, task)
}

pub(crate) fn attr<'a>(kvs: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    kvs.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()).and_then(|v| v.value.as_ref())
}

pub(crate) fn str_attr<'a>(kvs: &'a [KeyValue], key: &str) -> &'a str {
    match attr(kvs, key) {
        Some(AnyValue::StringValue(s)) => s,
        other => panic!("{key}: {other:?}"),
    }
}

pub(crate) fn id16(v: &[u8]) -> [u8; 16] {
    v.try_into().unwrap_or_else(|_| panic!("trace id of {} bytes", v.len()))
}
pub(crate) fn id8(v: &[u8]) -> [u8; 8] {
    v.try_into().unwrap_or_else(|_| panic!("span id of {} bytes", v.len()))
}

pub(crate) type Key = ([u8; 16], [u8; 8]);

/// The journey spans (scope `deploy-journey`) a receiver got, by (trace id, span id), and how
/// many arrived more than once.
fn received_spans(got: &Received) -> (HashMap<Key, Span>, usize) {
    let mut spans = HashMap::new();
    let mut dups = 0;
    for (_, req) in got.lock().unwrap().iter() {
        for rs in &req.resource_spans {
            for ss in &rs.scope_spans {
                if ss.scope.as_ref().map(|s| s.name.as_str()) != Some("deploy-journey") {
                    continue;
                }
                for s in &ss.spans {
                    if spans.insert((id16(&s.trace_id), id8(&s.span_id)), s.clone()).is_some() {
                        dups += 1;
                    }
                }
            }
        }
    }
    (spans, dups)
}

/// What the journeys say must be exported: every ended journey whole, and the succeeded
/// stages of the others.
fn expected(derived: &Derived) -> BTreeSet<Key> {
    derived
        .journeys
        .iter()
        .flat_map(|j| if j.ended { journey_spans(j, "u", "main", &[]) } else { finished_stage_spans(j, &[]) })
        .map(|s| (s.trace_id, s.span_id))
        .collect()
}

/// Wait until every expected span arrived, then a little longer so that extra or duplicate
/// spans would show.
async fn wait_for(got: &Received, want: &BTreeSet<Key>, within: Duration) -> HashMap<Key, Span> {
    let deadline = Instant::now() + within;
    loop {
        let (spans, _) = received_spans(got);
        if want.iter().all(|k| spans.contains_key(k)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} expected spans arrived in {within:?}",
            want.iter().filter(|k| spans.contains_key(*k)).count(),
            want.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (spans, dups) = received_spans(got);
    assert_eq!(dups, 0, "spans arrived twice");
    let extra: Vec<String> = spans
        .iter()
        .filter(|(k, _)| !want.contains(k))
        .map(|(k, s)| format!("{} {} (parent {})", hex::encode(k.0), s.name, hex::encode(&s.parent_span_id)))
        .collect();
    assert!(extra.is_empty(), "spans the final journeys do not have: {extra:?}");
    assert_eq!(spans.len(), want.len(), "exactly the journeys' spans");
    spans
}

/// `serve` following a scenario in a simulator with a stepped clock.
struct Served {
    sim: Arc<Sim>,
    listen: std::net::SocketAddr,
    end: i64,
    repo_url: String,
    ci_url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    sim_task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
        self.sim_task.abort();
    }
}

impl Served {
    async fn start(file: &str, traces: deploy_journey::config::Traces) -> Served {
        crate::support::init_crypto();
        let sc = Scenario::load(format!("{}/tests/scenarios/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        let (world, _) = sc.build_world(START);
        let sim = Sim::new(world, SimClock::new(START, ClockMode::Stepped));
        let (listener, url) = deploy_journey::sim::server::bind(sim.clone(), "127.0.0.1:0").await.unwrap();
        let s = sim.clone();
        let sim_task = tokio::spawn(async move {
            let _ = deploy_journey::sim::server::serve(s, listener).await;
        });
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = example_config("lana", &url);
        let url = url.trim_end_matches('/').to_string();
        cfg.poll_interval = Duration::from_millis(50);
        cfg.state_path = dir.path().join("state.db");
        cfg.traces = traces;
        let repo_url = repository_web_url(&url, &cfg.repository.owner, &cfg.repository.name);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready) = tokio::sync::oneshot::channel();
        let clock_sim = sim.clone();
        let task = tokio::spawn(async move {
            let clock: deploy_journey::clock::Clock = Arc::new(move || clock_sim.now());
            let shutdown = async move {
                let _ = stopped.await;
            };
            let r = deploy_journey::app::serve_with_clock(
                cfg,
                "127.0.0.1:0".parse().unwrap(),
                clock,
                shutdown,
                Some(ready_tx),
            )
            .await;
            if let Err(e) = r {
                panic!("serve: {e}");
            }
        });
        let listen = ready.await.expect("serve listens");
        Served {
            sim,
            listen,
            end: START + sc.run_for,
            repo_url,
            ci_url: url,
            stop: Some(stop),
            task,
            sim_task,
            _dir: dir,
        }
    }

    /// Run the scenario to its end, a virtual minute per step, giving `serve` time to poll.
    async fn drive(&self) {
        while self.sim.now() < self.end {
            self.sim.clock.step(60);
            drop(self.sim.world());
            tokio::time::sleep(Duration::from_millis(110)).await;
        }
    }

    async fn metric(&self, name: &str) -> f64 {
        let text = crate::support::client()
            .get(format!("http://{}/metrics", self.listen))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("{name} not in /metrics"))
            .trim()
            .parse()
            .unwrap()
    }

    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.task).await;
    }
}

fn traces_to(endpoint: &str, protocol: &str) -> deploy_journey::config::Traces {
    deploy_journey::config::Traces {
        endpoint: Some(endpoint.to_string()),
        protocol: Some(protocol.to_string()),
        headers: Some(deploy_journey::sources::Secret::new("x-tenant=lana%20bank")),
        resource_attributes: vec![("service.namespace".into(), "lana".into())],
        ..Default::default()
    }
}

/// Link counts seen while checking, so a scenario can insist on the kind it exists for.
#[derive(Debug, Default)]
struct Seen {
    rerun_links: usize,
    batch_links: usize,
    roots: usize,
    fix_links: usize,
    /// Ended journeys whose trace has its pull request's span.
    pull_requests: usize,
    /// GitHub Actions jobs with a task-run span under their run's span.
    jobs: usize,
}

/// The shape of every journey's trace in `spans` (which holds exactly the expected spans).
fn check_spans(
    derived: &Derived,
    sim: &Sim,
    ci_url: &str,
    repo_url: &str,
    branch: &str,
    spans: &HashMap<Key, Span>,
) -> Seen {
    let mut seen = Seen::default();
    let fixes = deploy_journey::sinks::traces::spans::fix_links(derived);
    let fix_attempts = deploy_journey::sinks::traces::spans::fix_attempt_links(derived);
    let builds: BTreeMap<i64, (Option<i64>, Option<i64>)> =
        sim.with_world(|w| w.concourse.builds.iter().map(|b| (b.id, (b.start_time, b.end_time))).collect());
    let ns = |t: i64| u64::try_from(t).unwrap() * 1_000_000_000;
    // One trace per commit, its id the sha's first 32 hex digits.
    let traces: BTreeSet<[u8; 16]> = spans.keys().map(|k| k.0).collect();
    let commits: BTreeSet<[u8; 16]> = derived.journeys.iter().map(|j| trace_id(&j.sha)).collect();
    assert!(traces.is_subset(&commits), "a trace that is no commit's");
    for j in &derived.journeys {
        let tid = trace_id(&j.sha);
        assert_eq!(hex::encode(tid), j.sha[..32]);
        let mine: Vec<&Span> = spans.iter().filter(|(k, _)| k.0 == tid).map(|(_, s)| s).collect();
        let roots: Vec<&&Span> = mine.iter().filter(|s| s.parent_span_id.is_empty()).collect();
        if j.ended {
            // Exactly one root: `deliver <short>`, commit time → first deployment.
            assert_eq!(roots.len(), 1, "{}: roots", j.short());
            seen.roots += 1;
            let root = roots[0];
            assert_eq!(id8(&root.span_id), root_span_id(&j.sha));
            assert_eq!(root.name, format!("deliver {}", j.short()));
            let deployed = j.deployed_at["staging"];
            // A commit from a pull request: its trace starts at the PR's first commit (or opening).
            let pr = j.origin.as_ref().and_then(|o| o.pull());
            let start = pr.map_or(j.commit_time, |p| {
                p.first_commit_at.unwrap_or(p.opened_at).min(p.opened_at).min(j.commit_time)
            });
            assert_eq!((root.start_time_unix_nano, root.end_time_unix_nano), (ns(start), ns(deployed)));
            if let Some(p) = pr {
                let pr_span = mine
                    .iter()
                    .find(|s| s.name == format!("pull_request #{}", p.number))
                    .unwrap_or_else(|| panic!("{}: no span of its pull request #{}", j.short(), p.number));
                assert_eq!(id8(&pr_span.parent_span_id), root_span_id(&j.sha));
                assert_eq!((pr_span.start_time_unix_nano, pr_span.end_time_unix_nano), (ns(start), ns(p.merged_at)));
                assert_eq!(str_attr(&pr_span.attributes, "vcs.change.id"), p.number.to_string());
                seen.pull_requests += 1;
                // Under each finished Actions run's span, a task-run span per job of its attempt.
                for c in p.checks.iter().filter(|c| c.completed_at.is_some()) {
                    let run_id = checks_run_span_id(&j.sha, c.run_id, c.attempt);
                    let run = spans
                        .get(&(tid, run_id))
                        .unwrap_or_else(|| panic!("{}: no span of run {}", j.short(), c.run_id));
                    assert_eq!(run.name, format!("RUN {}", c.name));
                    for jb in c.jobs.iter().filter(|jb| jb.attempt == c.attempt) {
                        let s = spans.get(&(tid, job_span_id(&j.sha, jb.job_id, jb.attempt))).unwrap_or_else(|| {
                            panic!("{}: no span of job {} of run {}", j.short(), jb.job_id, c.run_id)
                        });
                        assert_eq!(id8(&s.parent_span_id), run_id);
                        assert_eq!(s.kind, SpanKind::Internal as i32);
                        assert_eq!(s.name, jb.name);
                        assert_eq!(str_attr(&s.attributes, "cicd.pipeline.task.name"), jb.name);
                        assert_eq!(str_attr(&s.attributes, "cicd.pipeline.task.run.id"), jb.job_id.to_string());
                        assert_eq!(str_attr(&s.attributes, "cicd.pipeline.task.run.url.full"), jb.url);
                        assert_eq!(
                            Some(str_attr(&s.attributes, "cicd.pipeline.task.run.result")),
                            job_result(&jb.state)
                        );
                        assert_eq!(
                            (Some(s.start_time_unix_nano), Some(s.end_time_unix_nano)),
                            (jb.started_at.map(ns), jb.completed_at.map(ns))
                        );
                        seen.jobs += 1;
                    }
                }
            }
            assert_eq!(str_attr(&root.attributes, "vcs.ref.head.revision"), j.sha);
            assert_eq!(str_attr(&root.attributes, "vcs.ref.head.name"), branch);
            assert_eq!(str_attr(&root.attributes, "vcs.repository.url.full"), repo_url);
            assert_eq!(str_attr(&root.attributes, "deployment.environment.name"), "staging");
            assert_eq!(str_attr(&root.attributes, "deploy_journey.outcome"), j.outcome.as_str());
            assert_eq!(str_attr(&root.attributes, "deploy_journey.change_type"), j.classification.change_type.as_str());
            assert_eq!(str_attr(&root.attributes, "deploy_journey.commit.subject"), j.subject);
            assert_eq!(
                attr(&root.attributes, "deploy_journey.lead_time_seconds"),
                Some(&AnyValue::IntValue(deployed - j.commit_time))
            );
            // Its links: to its carrier when superseded, then to the deployments it failed when
            // it is a revert or hotfix (issue #17).
            let mut want: Vec<Key> = vec![];
            if let Some(h) = j.carried_by.as_deref().filter(|h| *h != j.sha) {
                want.push((trace_id(h), root_span_id(h)));
            }
            want.extend(fixes.get(&j.sha).into_iter().flatten().copied());
            let l: Vec<Key> = root.links.iter().map(|l| (id16(&l.trace_id), id8(&l.span_id))).collect();
            assert_eq!(l, want, "{}: root links (carrier, failed deployments)", j.short());
            seen.fix_links += fixes.get(&j.sha).map_or(0, Vec::len);
        } else {
            assert!(roots.is_empty(), "{}: a root before the journey ended", j.short());
        }
        for st in j.stages.iter().filter(|s| !s.attempts.is_empty() && s.end.is_some()) {
            let sid = stage_span_id(&j.sha, &st.name);
            let Some(ss) = spans.get(&(tid, sid)) else {
                // Only a failed stage waits (it may be retried): of a journey in flight, or after
                // the environment the journey ended in.
                assert!(st.state == deploy_journey::core::journey::StageState::Failed, "{} {}", j.short(), st.name);
                continue;
            };
            assert_eq!(ss.name, format!("RUN {}", st.attempts[0].pipeline));
            assert_eq!(str_attr(&ss.attributes, "deploy_journey.stage"), st.name);
            assert_eq!(id8(&ss.parent_span_id), root_span_id(&j.sha));
            let first_start = st.start.unwrap();
            assert_eq!(ss.start_time_unix_nano, ns(st.ready_at.unwrap_or(first_start).min(first_start)));
            assert_eq!(ss.end_time_unix_nano, ns(st.end.unwrap()));
            assert_eq!(ss.events[0].name, "build.started");
            assert_eq!(ss.events[0].time_unix_nano, ns(first_start));
            for a in &st.attempts {
                let idx = attempt_index(&st.attempts, a.build_id);
                let aid = attempt_span_id(&j.sha, &st.name, a.build_id, idx);
                let s = spans
                    .get(&(tid, aid))
                    .unwrap_or_else(|| panic!("{} {}: no span for build {}", j.short(), st.name, a.build_id));
                assert_eq!(id8(&s.parent_span_id), sid);
                // The build's own times, as the simulator (the CI) has them.
                let (start, end) = builds[&a.build_id];
                assert_eq!(Some(s.start_time_unix_nano), start.map(ns), "{} build {}", j.short(), a.build_id);
                assert_eq!(Some(s.end_time_unix_nano), end.map(ns), "{} build {}", j.short(), a.build_id);
                assert_eq!(str_attr(&s.attributes, "cicd.pipeline.task.run.id"), a.build_id.to_string());
                assert_eq!(str_attr(&s.attributes, "cicd.pipeline.task.name"), &*a.job);
                assert_eq!(str_attr(&s.attributes, "cicd.pipeline.name"), &*a.pipeline);
                // The absolute build page on the Concourse that `serve` polled.
                let page = a.url.split_once("/teams/").map(|(_, p)| p).expect("a build page URL");
                assert_eq!(
                    str_attr(&s.attributes, "cicd.pipeline.task.run.url.full"),
                    format!("{ci_url}/teams/{page}")
                );
                let failed = matches!(
                    a.status,
                    deploy_journey::core::journey::BuildStatus::Failed
                        | deploy_journey::core::journey::BuildStatus::Errored
                );
                assert_eq!(
                    s.status.as_ref().map(|st| st.code),
                    Some(if failed { 2 } else { 0 }),
                    "status of {}",
                    s.name
                );
                let links: Vec<Key> = s.links.iter().map(|l| (id16(&l.trace_id), id8(&l.span_id))).collect();
                // A revert's or hotfix's deployment links to the deployment it failed, exported
                // in that deployment's trace, even when the fix's root went out before.
                for (_, target) in fix_attempts.get(&j.sha).into_iter().flatten().filter(|(on, _)| *on == aid) {
                    assert!(
                        links.contains(target),
                        "{}: build {} links to the deployment it failed",
                        j.short(),
                        a.name
                    );
                    let failed = spans.get(target).expect("the failed deployment's span exported");
                    assert_eq!(
                        str_attr(&failed.attributes, "cicd.pipeline.task.name"),
                        &*a.job,
                        "the same environment's job"
                    );
                    seen.fix_links += 1;
                }
                if let Some(prev) = a.rerun_of {
                    // A rerun links to the attempt it re-ran, a sibling in the same stage.
                    let target = (tid, attempt_span_id(&j.sha, &st.name, prev, attempt_index(&st.attempts, prev)));
                    assert!(links.contains(&target), "{}: rerun {} links to {prev}", j.short(), a.name);
                    assert_eq!(id8(&spans[&target].parent_span_id), sid);
                    seen.rerun_links += 1;
                }
                if !a.own {
                    // Carried by a later commit's build: the link lands on that build's span in
                    // the head commit's trace, which carries the same build id.
                    let head = a.head.as_deref().unwrap();
                    let l = links.iter().find(|l| l.0 == trace_id(head)).expect("link to head trace");
                    if j.ended {
                        let target = spans.get(l).expect("linked span exported");
                        assert_eq!(str_attr(&target.attributes, "cicd.pipeline.task.run.id"), a.build_id.to_string());
                    }
                    seen.batch_links += 1;
                }
            }
        }
    }
    seen
}

/// Serve a scenario with traces to `endpoint`; the receiver gets exactly the spans of the
/// journeys an independent run of the sources derives, in the expected shape.
async fn scenario_through_serve(file: &str, protocol: &str, url: &str, got: &Received) -> Seen {
    let truth = run_scenario(file, "lana").await;
    let served = Served::start(file, traces_to(url, protocol)).await;
    served.drive().await;
    let want = expected(&truth.derived);
    let spans = wait_for(got, &want, Duration::from_secs(60)).await;
    assert_eq!(served.metric("deploy_journey_span_export_queue").await, 0.0);
    assert_eq!(served.metric("deploy_journey_spans_exported_total").await, want.len() as f64);
    let branch = truth.cfg.repository.branch.clone();
    let seen = check_spans(&truth.derived, &served.sim, &served.ci_url, &served.repo_url, &branch, &spans);
    let all: Vec<&Span> = spans.values().collect();
    let problems = crate::semconv::conformance(&all);
    assert!(problems.is_empty(), "{file}: spans that break the CI/CD conventions:\n{}", problems.join("\n"));
    for (headers, req) in got.lock().unwrap().iter() {
        assert_eq!(headers.get("x-tenant").and_then(|v| v.to_str().ok()), Some("lana bank"));
        for rs in &req.resource_spans {
            let res = rs.resource.as_ref().expect("resource");
            assert_eq!(str_attr(&res.attributes, "service.name"), "deploy-journey");
            assert_eq!(str_attr(&res.attributes, "service.namespace"), "lana");
        }
    }
    served.stop().await;
    println!("{file} over {protocol}: {} spans, {seen:?}", want.len());
    seen
}

fn check_seen(file: &str, seen: &Seen) {
    assert!(seen.roots > 0, "{file}: no journey ended");
    if file == "bats-flaky-rerun.yaml" {
        assert!(seen.rerun_links > 0, "{file}: no rerun link");
    }
    if file == "three-while-tests-run.yaml" {
        assert!(seen.batch_links > 0, "{file}: no batch link");
    }
    if file.starts_with("hotfix-") {
        assert!(seen.pull_requests > 0, "{file}: no pull request span");
        assert!(seen.fix_links > 0, "{file}: the hotfix does not link to the deployment it failed");
    }
    if file == "pr-draft-review-rerun.yaml" {
        assert!(seen.jobs > 0, "{file}: no GitHub Actions job span");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_exports_every_scenario_over_http() {
    let only = std::env::var("TRACES_SCENARIO").ok();
    let files: Vec<String> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scenarios"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".yaml") && only.as_ref().is_none_or(|o| f == o))
        // `serve` is driven at 60 virtual seconds per 110 ms: the day-long scenarios (a revert a
        // day later, a gate held over a weekend) would take minutes here; environments.rs and
        // sim_cepler.rs check them. TRACES_SCENARIO=<file> still runs any one of them.
        .filter(|f| {
            only.is_some()
                || deploy_journey::sim::workload::Scenario::load(format!(
                    "{}/tests/scenarios/{f}",
                    env!("CARGO_MANIFEST_DIR")
                ))
                .is_ok_and(|sc| sc.run_for <= 12 * 3600)
        })
        .collect();
    assert!(files.len() >= if only.is_some() { 1 } else { 10 });
    let runs = files.iter().map(|f| async move {
        let (url, got, task) = spawn_receiver().await;
        let seen = scenario_through_serve(f, "http/protobuf", &url, &got).await;
        task.abort();
        (f.clone(), seen)
    });
    for (f, seen) in futures_util::future::join_all(runs).await {
        if !matches!(f.as_str(), "ci-skip.yaml" | "ci-only-untracked.yaml") {
            check_seen(&f, &seen);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_exports_over_grpc() {
    let runs = ["three-while-tests-run.yaml", "bats-flaky-rerun.yaml"].map(|f| async move {
        let (url, got, task) = spawn_grpc_receiver().await;
        let seen = scenario_through_serve(f, "grpc", &url, &got).await;
        task.abort();
        check_seen(f, &seen);
    });
    futures_util::future::join_all(runs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_outage_loses_no_span() {
    let file = "three-while-tests-run.yaml";
    let truth = run_scenario(file, "lana").await;
    let want = expected(&truth.derived);
    // The collector's address, with nothing listening on it yet.
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let served = Served::start(file, traces_to(&format!("http://{addr}"), "http/protobuf")).await;
    served.drive().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let errors = served.metric("deploy_journey_span_export_errors_total").await;
    let queued = served.metric("deploy_journey_span_export_queue").await;
    assert!(errors > 0.0, "exports failed while the collector was down");
    assert!(queued > 0.0, "spans wait for the collector");
    assert_eq!(served.metric("deploy_journey_spans_exported_total").await, 0.0);
    // The collector comes up on the same address.
    let got: Received = Arc::default();
    let (_, task) = http_receiver_on(tokio::net::TcpListener::bind(addr).await.unwrap(), got.clone());
    let spans = wait_for(&got, &want, Duration::from_secs(60)).await;
    assert_eq!(served.metric("deploy_journey_span_export_queue").await, 0.0);
    assert_eq!(served.metric("deploy_journey_spans_exported_total").await, want.len() as f64);
    check_spans(&truth.derived, &served.sim, &served.ci_url, &served.repo_url, &truth.cfg.repository.branch, &spans);
    println!(
        "collector down: {errors} failed exports, {queued} spans waiting; then all {} spans arrived once",
        want.len()
    );
    task.abort();
    served.stop().await;
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
