//! `/metrics` checked from outside: a golden snapshot of both formats for a fixed scenario,
//! `promtool check metrics` on the classic text, the strict Python OpenMetrics parser on the
//! OpenMetrics text (exemplars included), a real Prometheus scraping the exporter served against
//! the simulator (and storing the exemplar of a lead-time observation), and the label values the
//! catalogue can take, whose number does not grow with the number of commits.
//!
//! The external tools are installed by `./scripts/test` (Debian `prometheus` for `prometheus` and
//! `promtool`, `.venv` with prometheus-client for the parser); a test that misses one fails and
//! says so rather than skipping.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use deploy_journey::core::classify::ChangeType;
use deploy_journey::core::journey::{CoreConfig, Derived, Facts, Method, Outcome, StageBuild, derive, stage_builds};
use deploy_journey::sim::Sim;
use deploy_journey::sim::clock::{ClockMode, SimClock};
use deploy_journey::sim::engine::World;
use deploy_journey::sim::topology::Topology;
use deploy_journey::sim::workload::LanaWorkload;
use deploy_journey::sinks::metrics::{MetricsInput, render_openmetrics, render_text};
use deploy_journey::sources::ErrorKind;
use deploy_journey::sources::telemetry::{SOURCES, SourceSnapshot, SourceTelemetry};

use crate::journeys::example_config;
use crate::support::{KillOnDrop, free_port, tool};
use crate::support::{START, init_crypto};

const MANIFEST: &str = env!("CARGO_MANIFEST_DIR");
const VERSION: &str = env!("CARGO_PKG_VERSION");

// ------------------------------------------------------------------ helpers

/// What a scenario leaves behind when polled through the real source clients, as
/// `journeys::run_scenario` does, keeping the facts (per-build metrics need them).
struct Polled {
    facts: Facts,
    core: CoreConfig,
    now: i64,
    shas: BTreeMap<String, String>,
}

async fn poll_scenario(file: &str) -> Polled {
    let r = crate::journeys::run_scenario(file, "lana").await;
    Polled { facts: r.facts.clone(), core: r.cfg.core(), now: r.sim.now(), shas: r.shas.clone() }
}

/// Source counters with fixed values (the real ones count requests, which vary with timing).
fn fixed_sources(now: i64) -> Vec<(&'static str, SourceSnapshot)> {
    let mut gh = SourceSnapshot {
        requests_ok: 372,
        requests_not_modified: 349,
        requests_error: 2,
        polls_ok: 360,
        polls_failed: 1,
        up: true,
        last_success: Some(now - 12),
        last_poll_duration: Some(Duration::from_millis(250)),
        rate_limit_remaining: Some(4321),
        rate_limit_reset: Some(now + 1800),
        ..SourceSnapshot::default()
    };
    gh.errors.insert(ErrorKind::Server, 2);
    let mut cc = SourceSnapshot {
        requests_ok: 2165,
        requests_error: 3,
        polls_ok: 359,
        polls_failed: 2,
        up: false,
        last_success: Some(now - 42),
        last_poll_duration: Some(Duration::from_millis(1500)),
        ..SourceSnapshot::default()
    };
    cc.errors.insert(ErrorKind::Timeout, 1);
    cc.errors.insert(ErrorKind::Connect, 2);
    vec![("github", gh), ("concourse", cc)]
}

struct Rendered {
    text: String,
    om: String,
}

fn render(
    derived: &Derived,
    builds: &[StageBuild],
    core: &CoreConfig,
    sources: &[(&'static str, SourceSnapshot)],
    now: i64,
    version: &str,
) -> Rendered {
    let baseline = deploy_journey::sinks::metrics::Baseline::default();
    let input = MetricsInput {
        totals: None,
        derived,
        stage_builds: builds,
        core,
        sources,
        now,
        poll_interval_secs: 30,
        version,
        baseline: &baseline,
        // Traces on, with fixed counts, so the span export families are in the catalogue.
        spans: Some(deploy_journey::sinks::traces::SpanExportCounts { exported: 42, errors: 1, queued: 3 }),
        store_errors: 0,
        auth_rejections: None,
    };
    Rendered { text: render_text(&input), om: render_openmetrics(&input) }
}

/// Run `cmd` with `input` on stdin; (exit code, stdout, stderr).
fn run_with_stdin(cmd: &mut Command, input: &str) -> (i32, String, String) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_string();
    // A writer thread: the child may fill its stdout pipe before reading all of stdin.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn venv_python() -> PathBuf {
    let p = Path::new(MANIFEST).join(".venv/bin/python");
    assert!(
        p.is_file(),
        "{} is missing: run ./scripts/test, which creates .venv with scripts/py-requirements.txt",
        p.display()
    );
    p
}

/// `promtool check metrics` must accept `text` without a finding.
fn promtool_clean(text: &str, what: &str) {
    let (code, out, err) = run_with_stdin(Command::new(tool("promtool")).args(["check", "metrics"]), text);
    assert!(code == 0 && err.trim().is_empty(), "promtool check metrics on {what}: exit {code}\n{out}{err}");
}

/// The strict OpenMetrics parser of prometheus-client (Python), summarised as JSON.
const OM_PARSE: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
families = list(text_string_to_metric_families(sys.stdin.read()))
print(json.dumps({
    "families": {f.name: f.type for f in families},
    "samples": sum(len(f.samples) for f in families),
    "exemplars": [
        {"sample": s.name, "labels": s.labels, "exemplar": s.exemplar.labels, "value": s.exemplar.value,
         "timestamp": s.exemplar.timestamp}
        for f in families for s in f.samples if s.exemplar is not None
    ],
}))
"#;

fn python_parse(om: &str) -> Result<serde_json::Value, String> {
    let (code, out, err) = run_with_stdin(Command::new(venv_python()).args(["-c", OM_PARSE]), om);
    if code != 0 {
        return Err(err);
    }
    Ok(serde_json::from_str(&out).unwrap_or_else(|e| panic!("parser output is not JSON ({e}): {out}")))
}

/// The exposition with the series of each family in a fixed order. prometheus-client keeps a
/// family's series in a `HashMap`, so their order differs from one rendering (scrape) to the
/// next; Prometheus does not care, but a golden file must. Each series' own samples (a
/// histogram's `_sum`, `_count` and buckets) stay together and in their order; series are sorted
/// by their labels (without `le`); comment lines stay where they are.
fn canonical(text: &str) -> String {
    fn key(line: &str) -> String {
        let series = line.split(' ').next().unwrap_or("");
        let labels = series.split_once('{').map(|(_, l)| l.trim_end_matches('}')).unwrap_or("");
        labels.split(',').filter(|kv| !kv.starts_with("le=")).collect::<Vec<_>>().join(",")
    }
    fn flush(blocks: &mut Vec<(String, Vec<String>)>, out: &mut String) {
        blocks.sort_by(|a, b| a.0.cmp(&b.0));
        for line in blocks.drain(..).flat_map(|(_, lines)| lines) {
            out.push_str(&line);
            out.push('\n');
        }
    }
    let mut out = String::with_capacity(text.len());
    let mut blocks: Vec<(String, Vec<String>)> = vec![];
    for line in text.lines() {
        if line.starts_with('#') {
            flush(&mut blocks, &mut out);
            out.push_str(line);
            out.push('\n');
            continue;
        }
        let k = key(line);
        match blocks.last_mut() {
            Some((last, lines)) if *last == k => lines.push(line.to_string()),
            _ => blocks.push((k, vec![line.to_string()])),
        }
    }
    flush(&mut blocks, &mut out);
    out
}

fn check_golden(path: &str, got: &str) {
    let got = canonical(got);
    let got = got.as_str();
    let full = Path::new(MANIFEST).join(path);
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(&full, got).unwrap();
        println!("UPDATE_GOLDEN=1: rewrote {path}");
        return;
    }
    let want = std::fs::read_to_string(&full)
        .unwrap_or_else(|e| panic!("{path}: {e}; create it with UPDATE_GOLDEN=1 cargo test --test it metrics"));
    if want != got {
        let diff: Vec<String> = want
            .lines()
            .zip(got.lines())
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .take(15)
            .map(|(i, (a, b))| format!("line {}:\n  want {a}\n  got  {b}", i + 1))
            .collect();
        panic!(
            "{path} differs from the rendering ({} lines wanted, {} got); if the change is intended, rerun with UPDATE_GOLDEN=1 and review the diff\n{}",
            want.lines().count(),
            got.lines().count(),
            diff.join("\n")
        );
    }
}

/// One sample line of the classic text: name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// Parse the sample lines of the classic text format (label values as rendered here: no escapes
/// are needed, and any backslash or quote inside a value fails the parse).
fn samples(text: &str) -> Vec<Sample> {
    let mut out = vec![];
    for line in text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample line {line:?}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), vec![]),
            Some((n, rest)) => {
                let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("bad labels in {line:?}"));
                let labels = body
                    .split("\",")
                    .filter(|p| !p.is_empty())
                    .map(|p| {
                        let (k, v) = p.split_once("=\"").unwrap_or_else(|| panic!("bad label {p:?} in {line:?}"));
                        let v = v.strip_suffix('"').unwrap_or(v);
                        assert!(!v.contains(['"', '\\']), "unexpected escape in {line:?}");
                        (k.to_string(), v.to_string())
                    })
                    .collect();
                (n.to_string(), labels)
            }
        };
        out.push(Sample { name, labels, value });
    }
    out
}

fn is_sha_like(v: &str) -> bool {
    v.len() >= 7 && v.bytes().all(|b| b.is_ascii_hexdigit())
}

// ------------------------------------------------------------------ golden

async fn golden_rendering() -> (Rendered, Polled, Derived) {
    let p = poll_scenario("three-while-tests-run.yaml").await;
    let derived = derive(&p.facts, &p.core, p.now);
    let builds = stage_builds(&p.facts, &p.core, &derived);
    // A fixed version too, so that a release does not change the golden files.
    let r = render(&derived, &builds, &p.core, &fixed_sources(p.now), p.now, "0.0.0-golden");
    (r, p, derived)
}

/// The fixed scenario renders exactly the golden files; promtool and the strict OpenMetrics
/// parser accept them, with exemplars (trace id = sha prefix) on the lead-time buckets.
#[tokio::test]
async fn metrics_golden_snapshot_of_a_fixed_scenario() {
    let (r, p, derived) = golden_rendering().await;
    check_golden("tests/golden/metrics.txt", &r.text);
    check_golden("tests/golden/metrics.om.txt", &r.om);
    // The classic text is the OpenMetrics text minus exemplars, # UNIT and # EOF.
    assert!(!r.text.contains(" # {") && !r.text.contains("# EOF") && !r.text.contains("# UNIT"));
    assert!(r.om.ends_with("# EOF\n"));
    // Deterministic: rendering the same facts again gives the same bytes (no timestamps).
    let again = golden_rendering().await.0;
    assert_eq!(canonical(&again.om), canonical(&r.om), "a second run of the scenario renders differently");
    assert_eq!(canonical(&r.om).len(), r.om.len());

    promtool_clean(&r.text, "the golden classic text");

    let parsed =
        python_parse(&r.om).unwrap_or_else(|e| panic!("the strict OpenMetrics parser rejects the golden:\n{e}"));
    let exemplars = parsed["exemplars"].as_array().unwrap();
    let lead: Vec<&serde_json::Value> =
        exemplars.iter().filter(|e| e["sample"] == "deploy_journey_lead_time_seconds_bucket").collect();
    assert!(!lead.is_empty(), "no exemplar on the lead-time buckets: {exemplars:?}");
    // The branch's commits (the scenario's and the topology's seed history before it).
    let shas: BTreeSet<&str> = derived.journeys.iter().map(|j| j.sha.as_str()).collect();
    for e in exemplars {
        let trace = e["exemplar"]["trace_id"].as_str().unwrap();
        let short = e["exemplar"]["sha"].as_str().unwrap();
        assert_eq!(trace.len(), 32, "{e}");
        assert!(trace.starts_with(short), "{e}");
        assert!(e["timestamp"].is_null(), "exemplars carry no timestamp: {e}");
        // OpenMetrics allows exemplars on histogram buckets and counters only.
        let sample = e["sample"].as_str().unwrap();
        assert!(sample.ends_with("_bucket") || sample.ends_with("_total"), "{e}");
        if e["sample"] == "deploy_journey_lead_time_seconds_bucket" {
            assert!(shas.iter().any(|s| s.starts_with(trace)), "lead-time exemplar {trace} is no commit on the branch");
        }
    }
    // The scenario's commits a, b and c were deployed by one build: all four lead times counted.
    let c = &p.shas["c"];
    assert!(lead.iter().any(|e| e["exemplar"]["trace_id"] == c[..32]), "c's exemplar on a lead-time bucket");
    println!(
        "golden: {} families, {} samples, {} exemplars ({} on lead-time buckets); promtool and the OpenMetrics parser accept it",
        parsed["families"].as_object().unwrap().len(),
        parsed["samples"],
        exemplars.len(),
        lead.len()
    );

    // The checkers are not vacuous: each rejects what it should.
    let no_eof = r.om.trim_end_matches("# EOF\n");
    assert!(python_parse(no_eof).is_err(), "the parser accepts an exposition without # EOF");
    let (code, _, _) = run_with_stdin(Command::new(tool("promtool")).args(["check", "metrics"]), &r.om);
    assert_ne!(code, 0, "promtool is expected to reject the OpenMetrics exemplar syntax");
}

// ------------------------------------------------------------------ cardinality

/// What the Concourse and GitHub APIs would show of a simulated world (core_truth's conversion).
fn lana_weeks(weeks: i64, seed: u64) -> (Facts, i64) {
    let topo = Topology::builtin("lana").unwrap();
    let mut w = World::new(topo, START, seed);
    let end = START + weeks * 7 * 86_400;
    for (at, a) in LanaWorkload::new(seed).generate(START, end) {
        w.schedule_action(at, a);
    }
    w.advance_to(end + 6 * 3600);
    (crate::core_truth::facts_from_world(&w), w.now)
}

/// Every label value comes from the configuration or a fixed set, no label carries a sha, and
/// the number of series is the same after 1 and after 8 simulated weeks of lana.
#[test]
fn metrics_label_values_are_bounded_and_series_do_not_grow_with_commits() {
    let cfg = example_config("lana", "http://127.0.0.1:9");
    let core = cfg.core();
    let sources = SourceTelemetry::new().snapshots();
    let stages: BTreeSet<String> = core.stages.iter().map(|s| s.name.clone()).collect();
    let envs: BTreeSet<String> = core.environments().into_iter().collect();
    let set = |v: &[&str]| -> BTreeSet<String> { v.iter().map(|s| s.to_string()).collect() };
    let mut allowed: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    allowed.insert("stage", stages.clone());
    allowed.insert("phase", set(&["coding", "pickup", "review", "checks", "merge"]));
    allowed.insert("origin", set(&["pull_request", "direct"]));
    allowed.insert("environment", envs.clone());
    allowed.insert("change_type", ChangeType::ALL.iter().map(|c| c.as_str().to_string()).collect());
    // Journey outcomes (in_flight is a gauge, not an outcome) and request outcomes.
    let mut outcomes: BTreeSet<String> =
        Outcome::ALL.iter().filter(|o| **o != Outcome::InFlight).map(|o| o.as_str().to_string()).collect();
    outcomes.extend(set(&["ok", "not_modified", "error"]));
    allowed.insert("outcome", outcomes);
    allowed.insert("method", Method::ALL.iter().map(|m| m.as_str().to_string()).collect());
    allowed.insert("state", set(&["waiting", "pending", "riding", "running", "awaiting_approval"]));
    // Concourse's running statuses, for the stages' running builds.
    allowed.insert("status", set(&["pending", "started"]));
    // Stage builds' results, and deploy builds' (success, failure).
    allowed.insert("result", set(&["succeeded", "failed", "errored", "aborted", "success", "failure"]));
    allowed.insert("reason", set(&["build_failed", "rolled_back", "reverted", "hotfixed"]));
    allowed.insert("source", SOURCES.iter().map(|s| s.to_string()).collect());
    allowed.insert("kind", ErrorKind::ALL.iter().map(|k| k.as_str().to_string()).collect());
    allowed.insert("version", set(&[VERSION]));

    let mut counts = vec![];
    for weeks in [1, 8] {
        let t0 = Instant::now();
        let (facts, now) = lana_weeks(weeks, 3);
        let derived = derive(&facts, &core, now);
        let builds = stage_builds(&facts, &core, &derived);
        let text = render(&derived, &builds, &core, &sources, now, VERSION).text;
        let all = samples(&text);
        let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for s in &all {
            for (k, v) in &s.labels {
                assert!(k != "job" && k != "instance", "{}: label {k} clashes with Prometheus target labels", s.name);
                assert!(!is_sha_like(v) || k == "le", "{}: label {k}={v} looks like a sha", s.name);
                if k == "le" {
                    assert!(v == "+Inf" || v.parse::<f64>().is_ok(), "{}: le={v}", s.name);
                    continue;
                }
                let ok = allowed.get(k.as_str()).unwrap_or_else(|| panic!("{}: unexpected label {k}", s.name));
                assert!(ok.contains(v), "{}: {k}={v} is not in {ok:?}", s.name);
                seen.entry(k.clone()).or_default().insert(v.clone());
            }
            assert!(s.value.is_finite() && s.value >= 0.0, "{} {:?} = {}", s.name, s.labels, s.value);
        }
        // Every configured stage and environment is present from the first scrape on.
        assert_eq!(seen["stage"], stages);
        assert_eq!(seen["environment"], envs);
        let commits: f64 = all.iter().filter(|s| &*s.name == "deploy_journey_commits_total").map(|s| s.value).sum();
        assert_eq!(commits as usize, derived.journeys.len());
        println!(
            "lana, {weeks} simulated week(s): {} commits, {} finished stage builds -> {} series ({} bytes of text; built and rendered in {:.1} s)",
            derived.journeys.len(),
            builds.len(),
            all.len(),
            text.len(),
            t0.elapsed().as_secs_f64()
        );
        if weeks == 8 {
            promtool_clean(&text, "8 weeks of lana");
        }
        counts.push((derived.journeys.len(), all.len()));
    }
    assert!(counts[1].0 > counts[0].0 * 4, "8 weeks hold many more commits: {counts:?}");
    assert_eq!(counts[0].1, counts[1].1, "the series count must not grow with the number of commits: {counts:?}");
    println!("series count with examples/lana.yaml: {} (independent of the number of commits)", counts[0].1);
}

// ------------------------------------------------------------------ a real Prometheus

/// `(major, minor)` of `prometheus --version`.
fn prometheus_version(bin: &Path) -> (u32, u32) {
    let out = Command::new(bin).arg("--version").output().expect("prometheus --version");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let v = text.split_whitespace().skip_while(|w| *w != "version").nth(1).unwrap_or("0.0");
    let mut it = v.split(['.', '+', '-']).map(|x| x.parse::<u32>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

async fn get_json(client: &reqwest::Client, url: &str) -> Option<serde_json::Value> {
    let r = client.get(url).timeout(Duration::from_secs(5)).send().await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json().await.ok()
}

/// Every stored exemplar of the lead-time buckets since `start`: (series labels, exemplar).
async fn lead_time_exemplars(
    client: &reqwest::Client,
    prom: &str,
    start: i64,
) -> Option<Vec<(serde_json::Value, serde_json::Value)>> {
    let end = deploy_journey::clock::unix_now() + 60;
    let u =
        format!("{prom}/api/v1/query_exemplars?query=deploy_journey_lead_time_seconds_bucket&start={start}&end={end}");
    let v = get_json(client, &u).await?;
    let mut out = vec![];
    for series in v["data"].as_array()? {
        for e in series["exemplars"].as_array()? {
            out.push((series["seriesLabels"].clone(), e.clone()));
        }
    }
    Some(out)
}

/// Poll `f` every 250 ms until it returns `Some`, or fail once `deadline` passes.
async fn wait_for<T, F, Fut>(what: &str, deadline: Instant, log: &Path, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let t0 = Instant::now();
    loop {
        if let Some(v) = f().await {
            println!("  waited {:>5.1} s for {what}", t0.elapsed().as_secs_f64());
            return v;
        }
        if Instant::now() > deadline {
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(20).collect();
            panic!(
                "gave up waiting for {what} after {:.1} s; Prometheus log (newest first):\n{}",
                t0.elapsed().as_secs_f64(),
                tail.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The exporter serves against a live simulator (three days of lana history, then 60 virtual
/// seconds per real second, ending hours before wall-clock now), a real Prometheus scrapes it
/// every second in OpenMetrics, and its exemplar API returns the trace id of a deployed commit
/// on a lead-time bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_real_prometheus_scrapes_and_stores_lead_time_exemplars() {
    let prometheus = tool("prometheus");
    init_crypto();
    let t_all = Instant::now();
    let deadline = t_all + Duration::from_secs(120);
    let wall = deploy_journey::clock::unix_now();

    // The simulator: history from 3 days before the live start, which is 3 h before wall-clock now
    // (at 60x the simulated clock reaches wall-clock now after 3 minutes, after this test).
    let live = wall - 3 * 3600;
    let history = live - 3 * 86_400;
    let seed = 7;
    let mut world = World::new(Topology::builtin("lana").unwrap(), history, seed);
    for (at, a) in LanaWorkload::new(seed).generate(history, live + 86_400) {
        world.schedule_action(at, a);
    }
    world.advance_to(live);
    let sim = Sim::new(world, SimClock::new(live, ClockMode::Running { speed: 60.0 }));
    let (listener, sim_url) = deploy_journey::sim::server::bind(sim.clone(), "127.0.0.1:0").await.unwrap();
    let s2 = sim.clone();
    let sim_task = tokio::spawn(async move {
        let _ = deploy_journey::sim::server::serve(s2, listener).await;
    });
    println!("simulator at {sim_url}: 3 days of lana history, live at 60x from {}s before now", wall - live);

    // The exporter, in process.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = example_config("lana", &sim_url);
    cfg.poll_interval = Duration::from_secs(1);
    cfg.state_path = dir.path().join("state.db");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let app = tokio::spawn(deploy_journey::app::serve(
        cfg,
        "127.0.0.1:0".parse().unwrap(),
        async move {
            let _ = stop_rx.await;
        },
        Some(ready_tx),
    ));
    let addr = tokio::time::timeout(Duration::from_secs(30), ready_rx).await.expect("exporter listens").unwrap();
    let exporter = format!("http://{addr}");
    let client = crate::support::client();
    let log = dir.path().join("prometheus.log");
    wait_for("the exporter to be ready (every source answered)", deadline, &log, || {
        let (c, u) = (client.clone(), format!("{exporter}/readyz"));
        async move { c.get(u).send().await.ok().filter(|r| r.status().is_success()).map(|_| ()) }
    })
    .await;

    // Prometheus, on a free port, scraping the exporter every second.
    let port = free_port();
    let prom = format!("http://127.0.0.1:{port}");
    let version = prometheus_version(&prometheus);
    // `scrape_protocols` exists from 2.49 on; older servers ask for OpenMetrics first anyway.
    let protocols =
        if version >= (2, 49) { "    scrape_protocols: [OpenMetricsText1.0.0, PrometheusText0.0.4]\n" } else { "" };
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: deploy-journey\n{protocols}    static_configs:\n      - targets: ['{addr}']\n"
    );
    let config_path = dir.path().join("prometheus.yml");
    std::fs::write(&config_path, &config).unwrap();
    let log_file = std::fs::File::create(&log).unwrap();
    let child = Command::new(&prometheus)
        .arg(format!("--config.file={}", config_path.display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--enable-feature=exemplar-storage")
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .expect("start prometheus");
    let _guard = KillOnDrop(child);
    println!(
        "prometheus {}.{} at {prom} (pid {}), scraping {exporter}/metrics every 1s",
        version.0,
        version.1,
        _guard.0.id()
    );
    wait_for("Prometheus to be ready", deadline, &log, || {
        let (c, u) = (client.clone(), format!("{prom}/-/ready"));
        async move { c.get(u).send().await.ok().filter(|r| r.status().is_success()).map(|_| ()) }
    })
    .await;

    let count = wait_for("deploy_journey_lead_time_seconds_count > 0 in Prometheus", deadline, &log, || {
        let (c, u) = (client.clone(), format!("{prom}/api/v1/query?query=sum(deploy_journey_lead_time_seconds_count)"));
        async move {
            let v = get_json(&c, &u).await?;
            let n: f64 = v["data"]["result"][0]["value"][1].as_str()?.parse().ok()?;
            (n > 0.0).then_some(n)
        }
    })
    .await;

    // The target is up and scraped as OpenMetrics (the exporter answers OpenMetrics only when asked).
    let targets = get_json(&client, &format!("{prom}/api/v1/targets")).await.expect("targets");
    let t = &targets["data"]["activeTargets"][0];
    assert_eq!(t["health"], "up", "{t}");
    assert_eq!(t["lastError"], "", "{t}");

    let start = wall - 300;
    let exemplars = wait_for("a lead-time exemplar from /api/v1/query_exemplars", deadline, &log, || {
        let (c, p) = (client.clone(), prom.clone());
        async move { lead_time_exemplars(&c, &p, start).await.filter(|v| !v.is_empty()) }
    })
    .await;

    // The exemplar's trace id is the first 32 hex digits of a commit the JSON API lists as deployed.
    let journeys = get_json(&client, &format!("{exporter}/api/v1/journeys?state=finished&limit=10000"))
        .await
        .expect("journeys API");
    let deployed: BTreeMap<String, String> = journeys["journeys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| !j["deployed_at"].as_object().unwrap().is_empty())
        .map(|j| (j["trace_id"].as_str().unwrap().to_string(), j["sha"].as_str().unwrap().to_string()))
        .collect();
    assert!(!deployed.is_empty(), "the JSON API lists no deployed commit: {journeys}");
    let mut matched = 0;
    for (labels, e) in &exemplars {
        let trace = e["labels"]["trace_id"].as_str().unwrap_or("");
        assert_eq!(labels["__name__"], "deploy_journey_lead_time_seconds_bucket");
        assert!(["staging", "qa", "production"].contains(&labels["environment"].as_str().unwrap()), "{labels}");
        if let Some(sha) = deployed.get(trace) {
            assert_eq!(&sha[..32], trace);
            assert!(sha.starts_with(e["labels"]["sha"].as_str().unwrap()), "{e}");
            matched += 1;
        }
    }
    assert!(matched > 0, "no exemplar trace id is a deployed commit: {exemplars:?} vs {deployed:?}");
    let (labels, e) = &exemplars[0];
    println!(
        "  lead-time count {count}; {} exemplars, {matched} of deployed commits, e.g. {{trace_id=\"{}\"}} {} on {}",
        exemplars.len(),
        e["labels"]["trace_id"].as_str().unwrap_or(""),
        e["value"],
        labels
    );

    // Every scrape renders the same exemplar again (without a timestamp): Prometheus stamps it
    // with the scrape time once and drops the repeats as duplicates, so a few more scrapes add
    // no second copy of an exemplar to the same series.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = lead_time_exemplars(&client, &prom, start).await.expect("exemplars again");
    let mut seen = BTreeSet::new();
    for (labels, e) in &later {
        let key = (labels.to_string(), e["labels"].to_string(), e["value"].to_string());
        assert!(seen.insert(key), "exemplar stored twice for one series: {e} on {labels}");
    }
    for (labels, e) in &exemplars {
        let again = later.iter().find(|(l, x)| l == labels && x["labels"] == e["labels"]);
        if let Some((_, x)) = again {
            assert_eq!(x["timestamp"], e["timestamp"], "a repeated exemplar keeps its first timestamp");
        }
    }
    println!("  3 s (3 scrapes) later: {} exemplars stored, none twice", later.len());
    println!(
        "  {} deployed commits in the JSON API; whole test {:.1} s",
        deployed.len(),
        t_all.elapsed().as_secs_f64()
    );

    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), app).await;
    sim_task.abort();
}

// ------------------------------------------------------------------ stored baseline

/// A state file written by an earlier version holds its retention baseline as rows named
/// `counter:<metric>` and `hist:<metric>:<bucket>:<count|sum>`, labels `k=v,k=v`. Read back
/// from a real SQLite file, they restore the same counters and histogram buckets.
#[test]
fn metrics_baseline_rows_of_an_existing_state_file_restore_the_same_counters() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let row = |name: &str, labels: &str, value: f64| deploy_journey::store::Counter {
        name: name.into(),
        labels: labels.into(),
        value,
    };
    // Literal rows as `metrics::fold` on main writes them.
    let rows = [
        row("counter:commits", "change_type=backend", 7.0),
        row("counter:deployments", "environment=staging", 3.0),
        row("counter:stage_attempts", "stage=testflight", 11.0),
        row("hist:lead_time:4:count", "environment=staging,change_type=backend", 2.0),
        row("hist:lead_time:4:sum", "environment=staging,change_type=backend", 3000.0),
        row("hist:lead_time:14:count", "environment=staging,change_type=backend", 1.0),
        row("hist:lead_time:14:sum", "environment=staging,change_type=backend", 300000.0),
    ];
    {
        let mut store = deploy_journey::store::Store::open(&path).unwrap();
        store.add_counters(&rows).unwrap();
    }
    let store = deploy_journey::store::Store::open(&path).unwrap();
    let baseline = deploy_journey::sinks::metrics::Baseline::from_rows(
        store.counters().unwrap().into_iter().map(|c| (c.name, c.labels, c.value)),
    );
    let core = example_config("lana", "http://127.0.0.1:1").core();
    let derived = Derived::default();
    let text = render_text(&MetricsInput {
        totals: None,
        derived: &derived,
        stage_builds: &[],
        core: &core,
        sources: &[],
        now: START,
        poll_interval_secs: 30,
        version: "0.0.0",
        baseline: &baseline,
        spans: None,
        store_errors: 0,
        auth_rejections: None,
    });
    let has = |line: &str| assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    has("deploy_journey_commits_total{change_type=\"backend\"} 7");
    has("deploy_journey_deployments_total{environment=\"staging\"} 3");
    has("deploy_journey_stage_attempts_total{stage=\"testflight\"} 11");
    let lead = "environment=\"staging\",change_type=\"backend\"";
    has(&format!("deploy_journey_lead_time_seconds_count{{{lead}}} 3"));
    has(&format!("deploy_journey_lead_time_seconds_sum{{{lead}}} 303000.0"));
    // Bucket 4 is le=1800: two observations there, the third beyond 3 days.
    has(&format!("deploy_journey_lead_time_seconds_bucket{{le=\"1200.0\",{lead}}} 0"));
    has(&format!("deploy_journey_lead_time_seconds_bucket{{le=\"1800.0\",{lead}}} 2"));
    has(&format!("deploy_journey_lead_time_seconds_bucket{{le=\"259200.0\",{lead}}} 2"));
    has(&format!("deploy_journey_lead_time_seconds_bucket{{le=\"+Inf\",{lead}}} 3"));
}
