//! CI misbehaving: for each fault the simulator offers, an accelerated lana day is polled with
//! the fault switched on for a few hours. The exporter's final journeys, counter values and set
//! of span ids equal those of the fault-free day; nothing panics; and while the fault lasts the
//! source telemetry (what `deploy_journey_source_*` exports) shows it.
//!
//! The day runs on a stepped clock through the real source clients over HTTP, polled every 30
//! simulated seconds, so the two runs see the same world at the same virtual times.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::{Value, json};

use deploy_journey::core::journey::{Facts, Journey, derive, stage_builds};
use deploy_journey::sim::Sim;
use deploy_journey::sim::clock::{ClockMode, SimClock};
use deploy_journey::sim::faults::FaultRule;
use deploy_journey::sinks::metrics::{Baseline, MetricsInput, render_text};
use deploy_journey::sinks::traces::journey_spans;
use deploy_journey::sources::ErrorKind;
use deploy_journey::sources::concourse::ConcourseSource;
use deploy_journey::sources::github::GithubSource;
use deploy_journey::sources::telemetry::{SourceSnapshot, SourceTelemetry};

use crate::journeys::example_config;
use crate::support::{START, init_crypto};

const POLL: i64 = 30;
const SEED: u64 = 11;
const DAY: i64 = 86_400;
/// The fault is on from 06:00 to 09:00 of the day (08:00 UTC start: the working morning).
const FAULT_FROM: i64 = 6 * 3600;
const FAULT_TO: i64 = 9 * 3600;

/// What a day leaves behind, for comparison.
struct DayResult {
    /// Each journey's pretty debug dump, with the simulator's URL (a random port) replaced.
    journeys: Vec<(String, String)>,
    /// Counter and histogram lines of `/metrics` (source health excluded: it is meant to differ).
    counters: BTreeSet<String>,
    spans: BTreeSet<(String, String)>,
    /// Telemetry in the middle of the fault window, and at the end.
    during: BTreeMap<&'static str, SourceSnapshot>,
    after: BTreeMap<&'static str, SourceSnapshot>,
}

/// A fault: rules added at FAULT_FROM and removed at FAULT_TO, and/or token expiries.
#[derive(Clone, Default)]
struct Fault {
    rules: Vec<Value>,
    /// Expire every Concourse token at these offsets into the day.
    expire_tokens_at: Vec<i64>,
}

fn lana_day(fault: Fault) -> DayResult {
    // Each day gets its own runtime (the fault-free day is shared between tests).
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(run_day(fault))
    })
    .join()
    .expect("day thread")
}

async fn run_day(fault: Fault) -> DayResult {
    init_crypto();
    // Six hours of history before START, then the day polled live.
    let (world, _) =
        deploy_journey::demo::lana_world("lana", SEED, Duration::from_secs(6 * 3600), 0.0, START).expect("lana world");
    let sim = Sim::new(world, SimClock::new(START, ClockMode::Stepped));
    let (listener, url) = deploy_journey::sim::server::bind(sim.clone(), "127.0.0.1:0").await.unwrap();
    let s2 = sim.clone();
    let server = tokio::spawn(async move {
        let _ = deploy_journey::sim::server::serve(s2, listener).await;
    });
    let mut cfg = example_config("lana", &url);
    // Timeouts cost real time: keep them short so the day stays quick.
    cfg.concourse.timeout = Duration::from_millis(400);
    cfg.repository.timeout = Duration::from_millis(400);
    let telemetry = Arc::new(SourceTelemetry::new());
    let mut gh = GithubSource::new(cfg.github(), telemetry.clone()).unwrap();
    let mut cc = ConcourseSource::new(cfg.concourse(), telemetry.clone()).unwrap();
    gh.set_retry_base_delay(Duration::from_millis(5));
    cc.set_retry_base_delay(Duration::from_millis(5));
    let mut facts = Facts::default();
    let mut during = BTreeMap::new();
    let mut expiries = fault.expire_tokens_at.clone();
    let mut t = 0;
    while t < DAY {
        sim.clock.step(POLL);
        t += POLL;
        if t == FAULT_FROM {
            for r in &fault.rules {
                sim.faults.add(FaultRule::parse(r.to_string().as_bytes()).expect("fault rule"));
            }
        }
        if t == FAULT_TO {
            sim.faults.clear();
        }
        if expiries.first().is_some_and(|&e| t >= e) {
            expiries.remove(0);
            let now = sim.now();
            sim.with_world(|w| w.concourse.tokens.values_mut().for_each(|(_, exp)| *exp = now));
        }
        let now = sim.now();
        // A failed poll is the fault doing its work; what matters is what is left at the end.
        if let Ok(new) = gh.poll(now).await {
            new.into_iter().for_each(|f| {
                facts.apply(f);
            });
        }
        if let Ok(new) = cc.poll(now).await {
            new.into_iter().for_each(|f| {
                facts.apply(f);
            });
        }
        if t == (FAULT_FROM + FAULT_TO) / 2 {
            during = telemetry.snapshots().into_iter().collect();
        }
    }
    // A rate limit blocks the GitHub client for real seconds, while this loop runs a simulated
    // day in a few: poll at the day's end until both sources answer (bounded) before comparing.
    for _ in 0..100 {
        let now = sim.now();
        let (g, c) = (gh.poll(now).await, cc.poll(now).await);
        let ok = g.is_ok() && c.is_ok();
        for f in g.into_iter().chain(c).flatten() {
            facts.apply(f);
        }
        if ok {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let now = sim.now();
    let core = cfg.core();
    let derived = derive(&facts, &core, now);
    let sb = stage_builds(&facts, &core, &derived);
    let baseline = Baseline::default();
    let text = render_text(&MetricsInput {
        totals: None,
        derived: &derived,
        stage_builds: &sb,
        core: &core,
        sources: &[],
        now,
        poll_interval_secs: POLL as u64,
        version: "test",
        baseline: &baseline,
        spans: None,
        store_errors: 0,
        auth_rejections: None,
    });
    let counters = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            let name = l.split(['{', ' ']).next().unwrap_or("");
            name.ends_with("_total") || name.ends_with("_bucket") || name.ends_with("_count") || name.ends_with("_sum")
        })
        .filter(|l| !l.starts_with("deploy_journey_source_"))
        .map(str::to_string)
        .collect();
    let stage_names: Vec<&str> = core.stages.iter().map(|s| s.name.as_str()).collect();
    let spans = derived
        .journeys
        .iter()
        .flat_map(|j| journey_spans(j, "https://github.com/GaloyMoney/lana-bank", "main", &stage_names))
        .map(|s| (hex::encode(s.trace_id), hex::encode(s.span_id)))
        .collect();
    server.abort();
    let journeys = derived.journeys.iter().map(|j| (j.short().to_string(), dump(j, &url))).collect();
    DayResult { journeys, counters, spans, during, after: telemetry.snapshots().into_iter().collect() }
}

fn dump(j: &Journey, sim_url: &str) -> String {
    format!("{j:#?}").replace(sim_url, "http://sim")
}

fn fault_free() -> &'static DayResult {
    static DAY_RESULT: OnceLock<DayResult> = OnceLock::new();
    DAY_RESULT.get_or_init(|| lana_day(Fault::default()))
}

/// The faulted day ends exactly where the fault-free day does.
fn assert_same_end(name: &str, got: &DayResult) {
    let want = fault_free();
    assert!(want.journeys.len() >= 5, "the day should hold commits, has {}", want.journeys.len());
    assert!(want.spans.len() > 30, "the day should produce spans, has {}", want.spans.len());
    let diff: Vec<String> = want
        .journeys
        .iter()
        .zip(&got.journeys)
        .filter(|(a, b)| a != b)
        .map(|((sha, da), (_, db))| {
            // The first differing lines of the two journeys' dumps say what differs.
            let lines: Vec<String> = da
                .lines()
                .zip(db.lines())
                .filter(|(x, y)| x != y)
                .take(6)
                .map(|(x, y)| format!("    fault-free {} / with {name} {}", x.trim(), y.trim()))
                .collect();
            format!("{sha}:\n{}", lines.join("\n"))
        })
        .collect();
    assert_eq!(want.journeys.len(), got.journeys.len(), "{name}: number of journeys");
    assert!(diff.is_empty(), "{name}: journeys differ:\n{}", diff.join("\n"));
    let missing: Vec<_> = want.counters.difference(&got.counters).collect();
    let extra: Vec<_> = got.counters.difference(&want.counters).collect();
    assert!(missing.is_empty() && extra.is_empty(), "{name}: counters differ\nmissing {missing:#?}\nextra {extra:#?}");
    assert_eq!(want.spans, got.spans, "{name}: span ids differ");
}

fn errors(s: &SourceSnapshot, kind: ErrorKind) -> u64 {
    s.errors.get(&kind).copied().unwrap_or(0)
}

/// A fault that makes every request of `service` fail shows as that source down, with errors of
/// `kind`, while it lasts; the source is up again at the end.
fn check_windowed(name: &str, rule: Value, service: &'static str, kind: ErrorKind) {
    let got = lana_day(Fault { rules: vec![rule], ..Fault::default() });
    assert_same_end(name, &got);
    let during = &got.during[service];
    assert!(!during.up, "{name}: {service} reported up during the fault");
    assert!(errors(during, kind) > 0, "{name}: no {kind:?} errors during the fault: {:?}", during.errors);
    assert_eq!(errors(&fault_free().after[service], kind), 0, "{name}: the fault-free day had {kind:?} errors");
    assert!(got.after[service].up, "{name}: {service} not up again after the fault");
}

#[test]
fn concourse_5xx_burst() {
    check_windowed(
        "concourse 503",
        json!({"kind": "server_error", "service": "concourse"}),
        "concourse",
        ErrorKind::Server,
    );
}

#[test]
fn github_5xx_burst() {
    check_windowed(
        "github 502",
        json!({"kind": "server_error", "status": 502, "service": "github"}),
        "github",
        ErrorKind::Server,
    );
}

#[test]
fn connection_resets() {
    check_windowed(
        "concourse resets",
        json!({"kind": "reset", "service": "concourse"}),
        "concourse",
        ErrorKind::Connect,
    );
}

#[test]
fn malformed_json() {
    check_windowed("github malformed", json!({"kind": "malformed", "service": "github"}), "github", ErrorKind::Decode);
    check_windowed(
        "concourse malformed",
        json!({"kind": "malformed", "service": "concourse"}),
        "concourse",
        ErrorKind::Decode,
    );
}

#[test]
fn truncated_json() {
    check_windowed(
        "concourse truncated",
        json!({"kind": "truncated", "service": "concourse"}),
        "concourse",
        ErrorKind::Decode,
    );
}

#[test]
fn github_rate_limits() {
    // 403 with x-ratelimit-remaining: 0 and a reset time; 429 with Retry-After.
    check_windowed(
        "github 403 rate limit",
        json!({"kind": "rate_limit", "status": 403, "retry_after_secs": 1, "service": "github"}),
        "github",
        ErrorKind::RateLimited,
    );
    check_windowed(
        "github 429",
        json!({"kind": "rate_limit", "status": 429, "retry_after_secs": 1, "service": "github"}),
        "github",
        ErrorKind::RateLimited,
    );
}

#[test]
fn concourse_timeouts() {
    // Each timeout costs real time (the client's 400 ms), so a bounded number of them.
    let got = lana_day(Fault {
        rules: vec![json!({"kind": "timeout", "ms": 3000, "service": "concourse", "count": 12})],
        ..Fault::default()
    });
    assert_same_end("concourse timeouts", &got);
    assert!(errors(&got.after["concourse"], ErrorKind::Timeout) > 0, "no timeouts counted");
}

#[test]
fn a_pipeline_disappears_for_a_while() {
    let got = lana_day(Fault {
        rules: vec![json!({"kind": "pipeline_gone", "pipeline": "galoy-staging"})],
        ..Fault::default()
    });
    assert_same_end("galoy-staging gone", &got);
    assert!(errors(&got.during["concourse"], ErrorKind::NotFound) > 0, "the 404s were not counted");
}

#[test]
fn expired_tokens() {
    // Expired every two hours through the day: each time the next request gets the real 401 and
    // the source logs in again.
    let got = lana_day(Fault { expire_tokens_at: (1..12).map(|h| h * 2 * 3600).collect(), ..Fault::default() });
    assert_same_end("expired tokens", &got);
    let want = &fault_free().after["concourse"];
    let have = &got.after["concourse"];
    assert!(
        have.requests_ok > want.requests_ok,
        "re-logins should have cost extra requests ({} vs {})",
        have.requests_ok,
        want.requests_ok
    );
}
