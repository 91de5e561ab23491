//! Crash, restart and outage tests of the real `serve` binary (issues 5 and 9).
//!
//! Two binaries follow the same in-process simulator (one world, so their answers are the same
//! world's): "calm" runs uninterrupted, "rough" is `kill -9`ed and restarted. Each exports to
//! its own OTLP/HTTP receiver (the decoding receiver of `traces.rs`). Both take "now" from the
//! simulator (`serve --sim-clock`), so once the simulator's clock is frozen both derive at the
//! same time and their journeys, journey counters and spans must be equal.
//!
//! Delivery is at-least-once at one edge (see `SpanExport`): a kill between the collector's
//! acknowledgement and the mark's commit resends those spans. A duplicate is therefore accepted
//! only when a kill followed its first acknowledgement within [`MARK_WINDOW`]; any other
//! duplicate fails the test.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::post;
use deploy_journey::http::JourneyJson;
use deploy_journey::sim::Sim;
use deploy_journey::sim::clock::{ClockMode, SimClock};
use deploy_journey::sim::workload::Scenario;
use deploy_journey::sinks::traces::{JOURNEY_SCOPE, SELF_SCOPE};
use rand::{Rng, SeedableRng};

use crate::support::client;
use crate::traces::{Key, Received, id8, id16, receive, str_attr};

/// How long after an acknowledgement a kill may still beat the mark's commit.
const MARK_WINDOW: Duration = Duration::from_secs(2);

/// Counter families that count this process's own work (requests, exports); they restart at
/// zero with the process, as Prometheus expects of counters. Every other counter and histogram
/// is a function of the stored facts.
const PROCESS_FAMILIES: [&str; 5] = [
    "deploy_journey_source_requests",
    "deploy_journey_source_errors",
    "deploy_journey_spans_exported",
    "deploy_journey_span_export_errors",
    "deploy_journey_store_errors",
];

// ------------------------------------------------------------------ a collector that can go down

/// An OTLP/HTTP receiver that records when it acknowledged each request, and can go down
/// (connections refused) and come back on the same address.
struct Collector {
    addr: SocketAddr,
    got: Received,
    /// `acked[i]`: when request `got[i]` was acknowledged.
    acked: Arc<Mutex<Vec<Instant>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

type CollectorState = (Received, Arc<Mutex<Vec<Instant>>>);

async fn timed_receive(
    State((got, acked)): State<CollectorState>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let answer = receive(State(got.clone()), headers, body).await.into_response();
    let n = got.lock().unwrap().len();
    let mut a = acked.lock().unwrap();
    while a.len() < n {
        a.push(Instant::now());
    }
    answer
}

impl Collector {
    async fn start() -> Collector {
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let mut c = Collector { addr, got: Arc::default(), acked: Arc::default(), stop: None, task: None };
        c.up().await;
        c
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn up(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.addr).await.expect("collector address free again");
        let app = axum::Router::new()
            .route("/v1/traces", post(timed_receive))
            .with_state((self.got.clone(), self.acked.clone()));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        self.stop = Some(tx);
        self.task = Some(tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        }));
    }

    /// Stop listening and close every connection: exports fail until [`Collector::up`].
    async fn down(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            // Graceful: in-flight requests finish, idle keep-alive connections close.
            if tokio::time::timeout(Duration::from_secs(10), t).await.is_err() {
                panic!("collector did not stop");
            }
        }
    }

    fn requests(&self) -> usize {
        self.got.lock().unwrap().len()
    }

    /// Journey spans by (trace id, span id), and for each delivered more than once the time of
    /// its first acknowledgement.
    fn journey_spans(&self) -> (BTreeSet<Key>, Vec<(Key, Instant)>) {
        let got = self.got.lock().unwrap();
        let acked = self.acked.lock().unwrap();
        let mut first: HashMap<Key, Instant> = HashMap::new();
        let mut dups = vec![];
        for (i, (_, req)) in got.iter().enumerate() {
            let at = acked.get(i).copied().unwrap_or_else(Instant::now);
            for rs in &req.resource_spans {
                for ss in
                    rs.scope_spans.iter().filter(|s| s.scope.as_ref().map(|s| s.name.as_str()) == Some(JOURNEY_SCOPE))
                {
                    for s in &ss.spans {
                        let k = (id16(&s.trace_id), id8(&s.span_id));
                        match first.get(&k) {
                            Some(t) => dups.push((k, *t)),
                            None => {
                                first.insert(k, at);
                            }
                        }
                    }
                }
            }
        }
        (first.into_keys().collect(), dups)
    }
}

/// Every duplicate must have been acknowledged just before a kill (see the module docs).
fn unexplained(dups: &[(Key, Instant)], kills: &[Instant]) -> Vec<String> {
    dups.iter()
        .filter(|(_, acked)| !kills.iter().any(|k| *k >= *acked && k.duration_since(*acked) <= MARK_WINDOW))
        .map(|(k, _)| format!("{}/{}", hex::encode(k.0), hex::encode(k.1)))
        .collect()
}

// ------------------------------------------------------------------ the real binary

struct Bin {
    child: Option<Child>,
    config: std::path::PathBuf,
    log: std::path::PathBuf,
    port: u16,
    env: Vec<(&'static str, String)>,
    sim_url: String,
}

impl Drop for Bin {
    fn drop(&mut self) {
        self.signal("-KILL");
    }
}

impl Bin {
    /// `serve` with `examples/lana.yaml` pointed at `sim_url`, its store in `dir`, exporting
    /// journey spans to `otlp`.
    fn new(dir: &std::path::Path, name: &str, sim_url: &str, otlp: &str) -> Bin {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/lana.yaml")).unwrap();
        let text = text
            .replace("https://api.github.com", sim_url)
            .replace("https://ci.galoy.io", sim_url)
            .replace("/var/lib/deploy-journey/state.db", dir.join(format!("{name}.db")).to_str().unwrap())
            .replace("0.0.0.0:9853", &format!("127.0.0.1:{port}"))
            .replace("poll_interval: 30s", "poll_interval: 1s ");
        assert!(text.contains("poll_interval: 1s"), "examples/lana.yaml changed shape");
        let config = dir.join(format!("{name}.yaml"));
        std::fs::write(&config, text).unwrap();
        let env = vec![
            // A token per binary: the simulated GitHub limits the rate per caller.
            ("GITHUB_TOKEN", format!("ghp_crash_{name}")),
            ("CONCOURSE_PASSWORD", "viewer-password".into()),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.to_string()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".into()),
            ("DEPLOY_JOURNEY_SELF_TRACES", "false".into()),
            ("RUST_LOG", "info".into()),
        ];
        Bin { child: None, config, log: dir.join(format!("{name}.log")), port, env, sim_url: sim_url.to_string() }
    }

    fn set_env(&mut self, key: &'static str, value: &str) {
        self.env.retain(|(k, _)| *k != key);
        self.env.push((key, value.to_string()));
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_deploy-journey"))
            .args(["serve", "--config"])
            .arg(&self.config)
            .args(["--sim-clock", &self.sim_url])
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn deploy-journey serve");
        self.child = Some(child);
    }

    /// Send `sig` and wait for the process to end.
    fn signal(&mut self, sig: &str) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args([sig, &c.id().to_string()]).status();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Wait until the restarted process answers /healthz.
    async fn wait_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = client().get(format!("{}/healthz", self.url())).send().await;
            if r.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            assert!(Instant::now() < deadline, "serve did not come up in 30 s:\n{}", self.log_tail());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn metrics(&self) -> Result<Scrape, String> {
        let r = client().get(format!("{}/metrics", self.url())).send().await.map_err(|e| e.to_string())?;
        if !r.status().is_success() {
            return Err(format!("status {}", r.status()));
        }
        Ok(parse_metrics(&r.text().await.map_err(|e| e.to_string())?))
    }

    async fn journeys(&self) -> Option<Vec<JourneyJson>> {
        let r = client().get(format!("{}/api/v1/journeys?limit=10000", self.url())).send().await.ok()?;
        let v: serde_json::Value = r.json().await.ok()?;
        let mut list: Vec<JourneyJson> = serde_json::from_value(v["journeys"].clone()).ok()?;
        list.sort_by(|a, b| a.sha.cmp(&b.sha));
        // Build pages without the simulator's address (the same here, as both poll one world).
        for j in &mut list {
            for s in &mut j.stages {
                for a in &mut s.attempts {
                    a.url = a.url.split_once("/teams/").map(|(_, rest)| rest.to_string()).unwrap_or_default();
                }
            }
        }
        Some(list)
    }
}

/// A `/metrics` reading: journey counter and histogram series (by their line without the
/// value), the process counters, and the span export queue.
#[derive(Debug, Clone, Default, PartialEq)]
struct Scrape {
    journey: BTreeMap<String, f64>,
    process: BTreeMap<String, f64>,
    queue: Option<f64>,
}

fn parse_metrics(text: &str) -> Scrape {
    let mut kinds: HashMap<String, String> = HashMap::new();
    let mut out = Scrape::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some((name, kind)) = rest.split_once(' ') {
                kinds.insert(name.to_string(), kind.to_string());
            }
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        // Drop an exemplar (` # {...} value`): it names one build and may differ.
        let sample = line.split(" # ").next().unwrap();
        let (series, value) = sample.rsplit_once(' ').expect("sample line");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line:?}"));
        let name = series.split('{').next().unwrap();
        if name == "deploy_journey_span_export_queue" {
            out.queue = Some(value);
        }
        let family = ["_total", "_bucket", "_count", "_sum", "_created"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| kinds.contains_key(*f)))
            .unwrap_or(name);
        match kinds.get(family).map(String::as_str) {
            // Counter `# TYPE` lines name the `_total` series here.
            Some("counter" | "histogram") if PROCESS_FAMILIES.contains(&family.trim_end_matches("_total")) => {
                out.process.insert(series.to_string(), value);
            }
            Some("counter" | "histogram") => {
                out.journey.insert(series.to_string(), value);
            }
            _ => {}
        }
    }
    out
}

/// Every journey series of `now` is at least what it was in `before` (and none vanished).
fn check_monotonic(who: &str, before: &BTreeMap<String, f64>, now: &BTreeMap<String, f64>) {
    for (series, v) in before {
        let n = now.get(series).unwrap_or_else(|| panic!("{who}: {series} vanished from /metrics"));
        assert!(n >= v, "{who}: {series} went backwards from {v} to {n}");
    }
}

// ------------------------------------------------------------------ the shared world

async fn serve_sim(sim: Arc<Sim>) -> (String, tokio::task::JoinHandle<()>) {
    let (listener, url) = deploy_journey::sim::server::bind(sim.clone(), "127.0.0.1:0").await.unwrap();
    let task = tokio::spawn(async move {
        let _ = deploy_journey::sim::server::serve(sim, listener).await;
    });
    (url, task)
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// What both binaries agree on once the world stands still.
#[derive(Debug, PartialEq)]
struct Final {
    journeys: Vec<JourneyJson>,
    counters: BTreeMap<String, f64>,
    spans: BTreeSet<Key>,
}

async fn read_final(b: &Bin, c: &Collector) -> Option<Final> {
    let (spans, _) = c.journey_spans();
    let m = b.metrics().await.ok()?;
    if m.queue != Some(0.0) {
        return None;
    }
    Some(Final { journeys: b.journeys().await?, counters: m.journey, spans })
}

/// Freeze the simulator, then wait until calm and rough agree and stay so for one more
/// round, with nothing left in either export queue.
async fn converge(sim: &Sim, calm: (&Bin, &Collector), rough: (&Bin, &Collector), within: Duration) -> Final {
    sim.clock.set_mode(ClockMode::Stepped);
    let deadline = Instant::now() + within;
    let mut last: Option<(Final, Final)> = None;
    loop {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let (a, b) = (read_final(calm.0, calm.1).await, read_final(rough.0, rough.1).await);
        if let (Some(a), Some(b)) = (a, b) {
            if a == b && last.as_ref().is_some_and(|(la, lb)| *la == a && *lb == b) {
                return a;
            }
            if Instant::now() >= deadline {
                // Show the first difference, not the whole state.
                let ja: Vec<_> = a.journeys.iter().filter(|j| !b.journeys.contains(j)).map(|j| &j.short_sha).collect();
                let jb: Vec<_> = b.journeys.iter().filter(|j| !a.journeys.contains(j)).map(|j| &j.short_sha).collect();
                let ca: Vec<_> = a.counters.iter().filter(|(k, v)| b.counters.get(*k) != Some(v)).take(10).collect();
                let cb: Vec<_> = b.counters.iter().filter(|(k, v)| a.counters.get(*k) != Some(v)).take(10).collect();
                panic!(
                    "calm and rough differ after {within:?}: journeys only calm {ja:?}, only rough {jb:?}; \
                     counters calm {ca:?} rough {cb:?}; spans calm {} rough {} (calm-only {}, rough-only {})\n\
                     rough log:\n{}",
                    a.spans.len(),
                    b.spans.len(),
                    a.spans.difference(&b.spans).count(),
                    b.spans.difference(&a.spans).count(),
                    rough.0.log_tail()
                );
            }
            last = Some((a, b));
        } else {
            assert!(
                Instant::now() < deadline,
                "no settled answer within {within:?}\ncalm log:\n{}\nrough log:\n{}",
                calm.0.log_tail(),
                rough.0.log_tail()
            );
        }
    }
}

// ------------------------------------------------------------------ issue 5: kill mid-scenario

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_serve_exports_the_same_spans_as_an_uninterrupted_one() {
    crate::support::init_crypto();
    let sc =
        Scenario::load(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scenarios/three-while-tests-run.yaml")).unwrap();
    let start = unix_now();
    let (world, _) = sc.build_world(start);
    let sim = Sim::new(world, SimClock::new(start, ClockMode::Running { speed: 300.0 }));
    let (url, _sim_task) = serve_sim(sim.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let (calm_otlp, rough_otlp) = (Collector::start().await, Collector::start().await);
    let mut calm = Bin::new(dir.path(), "calm", &url, &calm_otlp.url());
    let mut rough = Bin::new(dir.path(), "rough", &url, &rough_otlp.url());
    calm.start();
    rough.start();
    let mut kills = vec![];
    // While builds run and once after some spans went out (tests end about 20 virtual minutes
    // in, 4 s here): kill -9, restart.
    for gap in [5, 4, 4].map(Duration::from_secs) {
        tokio::time::sleep_until((kills.last().copied().unwrap_or_else(Instant::now) + gap).into()).await;
        rough.wait_up().await;
        rough.signal("-KILL");
        kills.push(Instant::now());
        rough.start();
    }
    // Every commit of the scenario reaches staging within about 2.5 virtual hours (30 s).
    let deadline = Instant::now() + Duration::from_secs(120);
    while sim.now() < start + sc.run_for {
        assert!(Instant::now() < deadline, "scenario did not run out");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let fin = converge(&sim, (&calm, &calm_otlp), (&rough, &rough_otlp), Duration::from_secs(60)).await;
    assert!(fin.journeys.len() >= 5 && fin.journeys.iter().all(|j| j.ended), "every journey ended");
    // One trace per commit, each with its root.
    let traces: BTreeSet<[u8; 16]> = fin.spans.iter().map(|k| k.0).collect();
    assert_eq!(traces.len(), fin.journeys.len());
    for j in &fin.journeys {
        let root = deploy_journey::sinks::traces::root_span_id(&j.sha);
        assert!(fin.spans.contains(&(deploy_journey::sinks::traces::trace_id(&j.sha), root)), "{} root", j.short_sha);
    }
    let (_, calm_dups) = calm_otlp.journey_spans();
    assert!(calm_dups.is_empty(), "the uninterrupted run sent spans twice");
    let (_, rough_dups) = rough_otlp.journey_spans();
    let bad = unexplained(&rough_dups, &kills);
    assert!(bad.is_empty(), "spans sent twice though no kill hit between acknowledgement and mark: {bad:?}");
    println!(
        "{} kills: {} journeys, {} spans equal to the uninterrupted run's; {} resent at a kill's edge",
        kills.len(),
        fin.journeys.len(),
        fin.spans.len(),
        rough_dups.len()
    );
}

// ------------------------------------------------------------------ issue 9: a day of kills

/// Simulated seconds per real second: a lana day takes 60 s.
const DAY_SPEED: f64 = 1440.0;
const KILLS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_kills_during_a_lana_day_with_a_collector_outage_change_nothing() {
    crate::support::init_crypto();
    // A Monday 08:00 UTC: the workload follows office hours (the binaries read this clock).
    let now = crate::support::START;
    // The calibrated workload (seed 11: the fault day's), six hours of history; `speed` 1 keeps
    // the pre-scheduled future to 30 days (the clock below runs at DAY_SPEED).
    let (world, _) =
        deploy_journey::demo::lana_world("lana", 11, Duration::from_secs(6 * 3600), 1.0, now).expect("lana world");
    let sim = Sim::new(world, SimClock::new(now, ClockMode::Running { speed: DAY_SPEED }));
    let (url, _sim_task) = serve_sim(sim.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let (calm_otlp, mut rough_otlp) = (Collector::start().await, Collector::start().await);
    let mut calm = Bin::new(dir.path(), "calm", &url, &calm_otlp.url());
    let mut rough = Bin::new(dir.path(), "rough", &url, &rough_otlp.url());
    calm.start();
    rough.start();
    calm.wait_up().await;

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    let mut kills: Vec<Instant> = vec![];
    let (mut seen_rough, mut seen_calm) = (BTreeMap::new(), BTreeMap::new());
    let (mut scrapes, mut outage_errors, mut outage_requests) = (0usize, 0f64, None);
    let t0 = Instant::now();
    for i in 0..KILLS {
        // The collector is down from the 6th to the 12th kill (about 20 s, 8 simulated hours).
        if i == 6 {
            rough_otlp.down().await;
            outage_requests = Some(rough_otlp.requests());
        }
        if i == 12 {
            assert_eq!(Some(rough_otlp.requests()), outage_requests, "nothing arrives while down");
            rough_otlp.up().await;
        }
        rough.wait_up().await;
        // Scrape both every 200 ms until a random moment 0.5–3 s after coming up: every scrape
        // of the running process answers, and no journey series goes backwards, across
        // restarts included.
        let kill_at = Instant::now() + Duration::from_millis(rng.random_range(500..3000));
        while Instant::now() < kill_at {
            let m = rough.metrics().await.unwrap_or_else(|e| panic!("scrape of rough before kill {i}: {e}"));
            check_monotonic("rough", &seen_rough, &m.journey);
            seen_rough = m.journey;
            if (6..12).contains(&i) {
                let e = m.process.get("deploy_journey_span_export_errors_total").copied().unwrap_or(0.0);
                outage_errors = outage_errors.max(e);
            }
            let c = calm.metrics().await.unwrap_or_else(|e| panic!("scrape of calm: {e}"));
            check_monotonic("calm", &seen_calm, &c.journey);
            seen_calm = c.journey;
            scrapes += 2;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        rough.signal("-KILL");
        kills.push(Instant::now());
        rough.start();
    }
    let killing = t0.elapsed();
    // Run out the rest of the day.
    while sim.now() < now + 86_400 {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    rough.wait_up().await;
    let virtual_day = sim.now() - now;
    let fin = converge(&sim, (&calm, &calm_otlp), (&rough, &rough_otlp), Duration::from_secs(90)).await;
    check_monotonic("rough", &seen_rough, &fin.counters);

    assert!(outage_errors > 0.0, "exports failed while the collector was down");
    let ended = fin.journeys.iter().filter(|j| j.ended).count();
    assert!(fin.journeys.len() >= 5 && ended >= 3, "a lana day: {} journeys, {ended} ended", fin.journeys.len());
    assert!(!fin.spans.is_empty());
    let (_, calm_dups) = calm_otlp.journey_spans();
    assert!(calm_dups.is_empty(), "the uninterrupted run sent spans twice");
    let (_, rough_dups) = rough_otlp.journey_spans();
    let bad = unexplained(&rough_dups, &kills);
    assert!(bad.is_empty(), "spans sent twice though no kill hit between acknowledgement and mark: {bad:?}");
    println!(
        "{KILLS} kills in {:.0} s ({:.1} simulated h, speed {DAY_SPEED}), collector down for 6 of them: \
         {} journeys ({ended} ended), {} journey series, {} spans equal to the uninterrupted run's; \
         {scrapes} scrapes all answered; {} spans resent at a kill's edge",
        killing.as_secs_f64(),
        virtual_day as f64 / 3600.0,
        fin.journeys.len(),
        fin.counters.len(),
        fin.spans.len(),
        rough_dups.len()
    );
}

// ------------------------------------------------------------------ issue 5: self-instrumentation

/// (scope name, resource `service.instance.id`, span) of every span a collector got.
fn all_spans(c: &Collector) -> Vec<(String, Option<String>, opentelemetry_proto::tonic::trace::v1::Span)> {
    let mut out = vec![];
    for (_, req) in c.got.lock().unwrap().iter() {
        for rs in &req.resource_spans {
            let attrs = rs.resource.as_ref().map(|r| r.attributes.clone()).unwrap_or_default();
            let instance = crate::traces::attr(&attrs, "service.instance.id")
                .map(|_| str_attr(&attrs, "service.instance.id").to_string());
            assert_eq!(str_attr(&attrs, "service.name"), "deploy-journey");
            for ss in &rs.scope_spans {
                let scope = ss.scope.as_ref().map(|s| s.name.clone()).unwrap_or_default();
                out.extend(ss.spans.iter().map(|s| (scope.clone(), instance.clone(), s.clone())));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_traces_arrive_apart_from_journeys_only_when_asked_for() {
    crate::support::init_crypto();
    let sc =
        Scenario::load(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scenarios/three-while-tests-run.yaml")).unwrap();
    let start = unix_now();
    let (world, _) = sc.build_world(start);
    let sim = Sim::new(world, SimClock::new(start, ClockMode::Running { speed: 300.0 }));
    let (url, _sim_task) = serve_sim(sim.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let (on_otlp, off_otlp) = (Collector::start().await, Collector::start().await);
    let mut on = Bin::new(dir.path(), "self-on", &url, &on_otlp.url());
    on.set_env("DEPLOY_JOURNEY_SELF_TRACES", "true");
    // Log level and self-instrumentation are separate: quiet logs still send the poll spans.
    on.set_env("RUST_LOG", "warn");
    let mut off = Bin::new(dir.path(), "self-off", &url, &off_otlp.url());
    on.start();
    off.start();
    // Until both exported journey spans and the instrumented one its own (batched every 5 s).
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let self_spans = all_spans(&on_otlp).iter().filter(|(s, _, _)| s == SELF_SCOPE).count();
        if self_spans > 0 && !on_otlp.journey_spans().0.is_empty() && !off_otlp.journey_spans().0.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "no spans in 90 s:\n{}", on.log_tail());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // A clean stop flushes whatever is batched.
    on.signal("-TERM");
    off.signal("-TERM");

    let spans = all_spans(&on_otlp);
    let (mine, journeys): (Vec<_>, Vec<_>) = spans.iter().partition(|(s, _, _)| s == SELF_SCOPE);
    let self_instance = Some("deploy-journey-self".to_string());
    // Own spans: their own service instance, one trace per poll cycle with the polls inside.
    assert!(mine.iter().all(|(_, inst, _)| *inst == self_instance), "self spans under their own instance");
    let cycles: HashMap<Vec<u8>, &opentelemetry_proto::tonic::trace::v1::Span> =
        mine.iter().filter(|(_, _, s)| &*s.name == "poll_cycle").map(|(_, _, s)| (s.span_id.clone(), s)).collect();
    assert!(!cycles.is_empty(), "poll_cycle spans");
    assert!(cycles.values().all(|s| s.parent_span_id.is_empty()), "a poll cycle is a root");
    let polls: Vec<_> =
        mine.iter().filter(|(_, _, s)| &*s.name == "github.poll" || &*s.name == "concourse.poll").collect();
    assert!(!polls.is_empty(), "github.poll / concourse.poll spans");
    for (_, _, p) in &polls {
        if let Some(c) = cycles.get(&p.parent_span_id) {
            assert_eq!(c.trace_id, p.trace_id, "{} in its cycle's trace", p.name);
        }
    }
    assert!(polls.iter().any(|(_, _, p)| cycles.contains_key(&p.parent_span_id)), "polls are children of a poll cycle");
    // Journey spans: the journey scope, no self instance, and no trace shared with own spans.
    assert!(journeys.iter().all(|(s, inst, _)| s == JOURNEY_SCOPE && *inst != self_instance));
    let own_traces: BTreeSet<&Vec<u8>> = mine.iter().map(|(_, _, s)| &s.trace_id).collect();
    assert!(journeys.iter().all(|(_, _, s)| !own_traces.contains(&s.trace_id)));
    assert!(journeys.iter().all(|(_, _, s)| s.name != "poll_cycle"));

    // Without the switch: journey spans, and not one own span.
    let off_spans = all_spans(&off_otlp);
    assert!(off_spans.iter().any(|(s, _, _)| s == JOURNEY_SCOPE));
    let leaked: Vec<&String> =
        off_spans.iter().filter(|(s, _, _)| s != JOURNEY_SCOPE).map(|(_, _, s)| &s.name).collect();
    assert!(leaked.is_empty(), "spans other than journeys without DEPLOY_JOURNEY_SELF_TRACES: {leaked:?}");
    println!(
        "self traces on: {} own spans ({} poll cycles) beside {} journey spans; off: {} journey spans, 0 own",
        mine.len(),
        cycles.len(),
        journeys.len(),
        off_spans.len()
    );
}
