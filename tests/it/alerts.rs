//! The shipped Prometheus rules (`alerts/`) checked from outside: `promtool check rules`, the
//! promtool unit tests (every alert firing and not firing, the 20-minute boundary included, and
//! a broken expectation that must fail), the metric names in every expression against the
//! exporter's own catalogue, and an end-to-end run: a real Prometheus with the shipped rules
//! scrapes `serve` running against the accelerated simulator while testflight hangs, and
//! `DeployJourneyTestflightTooSlow` goes pending, then firing; the lead-time recording rule
//! returns the scenario's lead time.
//!
//! `prometheus` and `promtool` come from the Debian package that `./scripts/test` installs; a
//! test that misses one fails and says so.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deploy_journey::core::journey::Derived;
use deploy_journey::sim::Sim;
use deploy_journey::sim::clock::{ClockMode, SimClock};
use deploy_journey::sim::workload::{Scenario, truth};
use deploy_journey::sinks::metrics::{Baseline, MetricsInput, render_text};
use deploy_journey::sources::telemetry::SourceTelemetry;

use crate::journeys::example_config;
use crate::support::{KillOnDrop, free_port, tool};
use crate::support::{START, init_crypto};

pub const MANIFEST: &str = env!("CARGO_MANIFEST_DIR");
const RULES: &str = "alerts/deploy-journey.rules.yml";

// ------------------------------------------------------------------ shared helpers

/// Run a command; (exit code, stdout + stderr).
pub fn run(cmd: &mut Command) -> (i32, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

/// The metric catalogue as the exporter renders it (examples/lana.yaml, no facts yet: every
/// family and label set exists from the first scrape): series name → label names.
pub fn catalogue() -> BTreeMap<String, BTreeSet<String>> {
    let cfg = example_config("lana", "http://127.0.0.1:9");
    let core = cfg.core();
    let derived = Derived::default();
    let sources = SourceTelemetry::new().snapshots();
    let baseline = Baseline::default();
    let text = render_text(&MetricsInput {
        totals: None,
        derived: &derived,
        stage_builds: &[],
        core: &core,
        sources: &sources,
        now: START,
        poll_interval_secs: 30,
        version: "0.0.0-test",
        baseline: &baseline,
        spans: None,
        store_errors: 0,
        auth_rejections: None,
    });
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let series = line.rsplit_once(' ').map(|(s, _)| s).unwrap_or(line);
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        let e = out.entry(name.to_string()).or_default();
        for kv in labels.trim_end_matches('}').split("\",").filter(|p| !p.is_empty()) {
            e.insert(kv.split_once('=').map(|(k, _)| k).unwrap_or(kv).to_string());
        }
    }
    out
}

/// The recording rules of the shipped rule file: name → the label names it keeps.
pub fn recording_rules() -> BTreeMap<String, BTreeSet<String>> {
    let mut out = BTreeMap::new();
    for rule in rule_list() {
        if let Some(name) = rule["record"].as_str() {
            // `level:metric:operations`: the level names the labels kept by the aggregation.
            let level = name.split(':').next().unwrap_or("");
            let mut labels: BTreeSet<String> = level.split('_').map(str::to_string).collect();
            if labels.remove("change") && labels.remove("type") {
                labels.insert("change_type".into());
            }
            out.insert(name.to_string(), labels);
        }
    }
    out
}

fn rule_list() -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(Path::new(MANIFEST).join(RULES)).expect("rules file");
    let v: serde_json::Value = serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{RULES}: {e}"));
    v["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// Every vector selector of a PromQL expression: (metric name, label names matched).
pub fn selectors(expr: &str) -> Result<Vec<(String, Vec<String>)>, String> {
    use promql_parser::parser::Expr;
    fn walk(e: &Expr, out: &mut Vec<(String, Vec<String>)>) {
        let vs = |v: &promql_parser::parser::VectorSelector, out: &mut Vec<(String, Vec<String>)>| {
            let by_matcher = v.matchers.matchers.iter().find(|m| &*m.name == "__name__").map(|m| m.value.clone());
            let name = v.name.clone().or(by_matcher).unwrap_or_default();
            let labels = v.matchers.matchers.iter().filter(|m| m.name != "__name__").map(|m| m.name.clone()).collect();
            out.push((name, labels));
        };
        match e {
            Expr::Aggregate(a) => {
                walk(&a.expr, out);
                if let Some(p) = &a.param {
                    walk(p, out);
                }
            }
            Expr::Unary(u) => walk(&u.expr, out),
            Expr::Binary(b) => {
                walk(&b.lhs, out);
                walk(&b.rhs, out);
            }
            Expr::Paren(p) => walk(&p.expr, out),
            Expr::Subquery(s) => walk(&s.expr, out),
            Expr::VectorSelector(v) => vs(v, out),
            Expr::MatrixSelector(m) => vs(&m.vs, out),
            Expr::Call(c) => c.args.args.iter().for_each(|a| walk(a, out)),
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
        }
    }
    let e = promql_parser::parser::parse(expr)?;
    let mut out = vec![];
    walk(&e, &mut out);
    Ok(out)
}

/// Problems with the metric names and label names `expr` uses: each must be in the exporter's
/// catalogue or be a shipped recording rule, and match only labels that series has.
pub fn catalogue_problems(
    expr: &str,
    where_: &str,
    catalogue: &BTreeMap<String, BTreeSet<String>>,
    recorded: &BTreeMap<String, BTreeSet<String>>,
) -> Vec<String> {
    let sel = match selectors(expr) {
        Ok(s) => s,
        Err(e) => return vec![format!("{where_}: does not parse: {e}: {expr}")],
    };
    let mut bad = vec![];
    if sel.is_empty() && !expr.contains("time()") && !expr.contains("vector(") {
        bad.push(format!("{where_}: selects no metric: {expr}"));
    }
    for (name, labels) in sel {
        let known = catalogue.get(&name).or_else(|| recorded.get(&name));
        match known {
            None => bad.push(format!("{where_}: `{name}` is neither in the metric catalogue nor a recording rule")),
            Some(have) => {
                for l in labels.iter().filter(|l| !have.contains(*l)) {
                    bad.push(format!("{where_}: `{name}` has no label `{l}` (it has {have:?})"));
                }
            }
        }
    }
    bad
}

// ------------------------------------------------------------------ the rule file

/// `promtool check rules` accepts the file; every alert has the labels and annotations the
/// runbooks and routing need, a runbook section, and a `for`; every expression parses and names
/// only catalogue metrics with their own labels.
#[test]
fn alerts_rule_file_is_valid_and_complete() {
    let (code, out) = run(Command::new(tool("promtool")).args(["check", "rules", RULES]).current_dir(MANIFEST));
    assert_eq!(code, 0, "promtool check rules:\n{out}");
    assert!(out.contains("SUCCESS"), "{out}");

    let runbooks = std::fs::read_to_string(Path::new(MANIFEST).join("docs/runbooks.md")).expect("docs/runbooks.md");
    let catalogue = catalogue();
    let recorded = recording_rules();
    assert!(catalogue.contains_key("deploy_journey_stage_stuck_threshold_seconds"), "{:?}", catalogue.keys());
    let mut problems = vec![];
    let mut alerts = vec![];
    for rule in rule_list() {
        let expr = rule["expr"].as_str().expect("expr");
        let what = rule["alert"].as_str().or(rule["record"].as_str()).unwrap_or("?").to_string();
        problems.extend(catalogue_problems(expr, &what, &catalogue, &recorded));
        let Some(name) = rule["alert"].as_str() else { continue };
        alerts.push(name.to_string());
        assert!(name.starts_with("DeployJourney") && name.chars().all(|c| c.is_ascii_alphanumeric()), "{name}");
        assert!(rule["for"].as_str().is_some_and(|f| !f.is_empty()), "{name}: no `for`");
        let sev = rule["labels"]["severity"].as_str().unwrap_or("");
        assert!(["critical", "warning", "info"].contains(&sev), "{name}: severity {sev:?}");
        for a in ["summary", "description", "runbook_url"] {
            assert!(rule["annotations"][a].as_str().is_some_and(|s| !s.is_empty()), "{name}: no {a}");
        }
        let url = rule["annotations"]["runbook_url"].as_str().unwrap();
        let anchor = url.rsplit_once("docs/runbooks.md#").map(|(_, a)| a).unwrap_or("");
        assert_eq!(anchor, name.to_lowercase(), "{name}: runbook_url {url}");
        assert!(runbooks.contains(&format!("\n## {name}\n")), "{name}: no section in docs/runbooks.md");
        // Thresholds of the "too slow" alerts come from the exporter's configuration.
        if name.ends_with("TooSlow") {
            assert!(expr.contains("deploy_journey_stage_stuck_threshold_seconds"), "{name}: {expr}");
        }
        // Target labels never reach an alert: every selection is aggregated `by` named labels.
        assert!(!expr.contains("job") && !expr.contains("instance"), "{name}: {expr}");
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let want = [
        "DeployJourneyTestflightTooSlow",
        "DeployJourneyTestsTooSlow",
        "DeployJourneyStagingDeployTooSlow",
        "DeployJourneyCommitNotPickedUp",
        "DeployJourneyStageFailing",
        "DeployJourneyLeadTimeHigh",
        "DeployJourneyStagingBehindMain",
        "DeployJourneySourceDown",
        "DeployJourneySourceStale",
    ];
    for w in want {
        assert!(alerts.iter().any(|a| a == w), "{w} missing from {RULES}");
    }
    // The checker is not vacuous: a misspelt metric and a label the metric lacks are caught.
    let typo = "max by (stage) (deploy_journey_stage_oldest_inflight_seconds{state=\"running\"})";
    assert_eq!(catalogue_problems(typo, "typo", &catalogue, &recorded).len(), 1);
    let label = "max(deploy_journey_stage_stuck_threshold_seconds{state=\"running\"})";
    assert_eq!(catalogue_problems(label, "label", &catalogue, &recorded).len(), 1);
    assert_eq!(catalogue_problems("max(", "syntax", &catalogue, &recorded).len(), 1);
    println!("{} rules ({} alerts), {} catalogue series names", rule_list().len(), alerts.len(), catalogue.len());
}

fn test_files() -> Vec<PathBuf> {
    let dir = Path::new(MANIFEST).join("alerts/tests");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("alerts/tests")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    v.sort();
    v
}

/// `promtool test rules alerts/tests/*.yaml` passes, and between them the tests expect every
/// alert both firing and not firing.
#[test]
fn alerts_promtool_unit_tests_pass_and_cover_every_alert() {
    let files = test_files();
    assert!(files.len() >= 4, "{files:?}");
    let (code, out) = run(Command::new(tool("promtool")).args(["test", "rules"]).args(&files));
    assert_eq!(code, 0, "promtool test rules:\n{out}");
    assert_eq!(out.matches("SUCCESS").count(), files.len(), "{out}");

    let mut firing: BTreeSet<String> = BTreeSet::new();
    let mut quiet: BTreeSet<String> = BTreeSet::new();
    let mut recorded: BTreeSet<String> = BTreeSet::new();
    // promtool evaluates rule groups in no fixed order unless told: an alert reading a recording
    // rule could see the previous step's value and fire a step late, one run in six.
    let groups: Vec<String> = rule_groups();
    for f in &files {
        let v: serde_json::Value = serde_norway::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
        let order: Vec<String> = v["group_eval_order"]
            .as_array()
            .unwrap_or_else(|| panic!("{}: no group_eval_order", f.display()))
            .iter()
            .map(|g| g.as_str().unwrap().to_string())
            .collect();
        assert_eq!(order, groups, "{}: group_eval_order must list every group, recording rules first", f.display());
        for t in v["tests"].as_array().unwrap() {
            // A "firing" expectation comes after a "not yet" of the same alert in the same case.
            let mut quiet_at: BTreeMap<String, u64> = BTreeMap::new();
            for a in t["alert_rule_test"].as_array().into_iter().flatten() {
                let at = minutes(a["eval_time"].as_str().unwrap());
                let name = a["alertname"].as_str().unwrap().to_string();
                if a["exp_alerts"].as_array().is_some_and(|x| !x.is_empty()) {
                    let before = quiet_at.get(&name).copied();
                    assert!(
                        before.is_some_and(|q| q < at),
                        "{}: case {:?} expects {name} firing at {at}m with no \"not yet\" before it",
                        f.display(),
                        t["name"]
                    );
                } else {
                    quiet_at.entry(name).or_insert(at);
                }
            }
            for a in t["alert_rule_test"].as_array().into_iter().flatten() {
                let name = a["alertname"].as_str().unwrap().to_string();
                if a["exp_alerts"].as_array().is_some_and(|x| !x.is_empty()) {
                    firing.insert(name);
                } else {
                    quiet.insert(name);
                }
            }
            for p in t["promql_expr_test"].as_array().into_iter().flatten() {
                recorded.insert(p["expr"].as_str().unwrap().to_string());
            }
        }
    }
    for rule in rule_list() {
        if let Some(name) = rule["alert"].as_str() {
            assert!(firing.contains(name), "no unit test expects {name} firing");
            assert!(quiet.contains(name), "no unit test expects {name} not firing");
        }
        if let Some(name) = rule["record"].as_str() {
            assert!(recorded.contains(name), "no unit test checks the value of {name}");
        }
    }
    println!("{} test files: {} alerts tested firing and not firing", files.len(), firing.len());
}

/// The rule groups of the shipped rules file, in file order (recording rules first).
fn rule_groups() -> Vec<String> {
    let v: serde_json::Value =
        serde_norway::from_str(&std::fs::read_to_string(Path::new(MANIFEST).join(RULES)).unwrap()).unwrap();
    let groups: Vec<String> =
        v["groups"].as_array().unwrap().iter().map(|g| g["name"].as_str().unwrap().to_string()).collect();
    assert_eq!(groups.first().map(String::as_str), Some("deploy-journey-recording"), "{groups:?}");
    groups
}

/// Minutes of a promtool duration such as `41m` or `1h12m`.
fn minutes(d: &str) -> u64 {
    let (mut total, mut n) = (0u64, 0u64);
    for c in d.chars() {
        match c {
            '0'..='9' => n = n * 10 + u64::from(c as u8 - b'0'),
            'h' => (total, n) = (total + 60 * n, 0),
            'm' => (total, n) = (total + n, 0),
            _ => panic!("unexpected eval_time {d:?}"),
        }
    }
    assert_eq!(n, 0, "eval_time {d:?} ends without a unit");
    total
}

/// The unit tests can fail: a copy that expects testflight firing one minute early (at 21m,
/// when it is only pending), or rules whose `for` is dropped, make promtool fail.
#[test]
fn alerts_a_broken_expectation_fails() {
    let dir = tempfile::tempdir().unwrap();
    let rules_abs = Path::new(MANIFEST).join(RULES);
    let original = std::fs::read_to_string(Path::new(MANIFEST).join("alerts/tests/stage-too-slow.yaml")).unwrap();
    let with_abs_rules = original
        .replace("rule_files: [../deploy-journey.rules.yml]", &format!("rule_files: [{}]", rules_abs.display()));
    assert_ne!(with_abs_rules, original);

    // The copy as it is passes (so a failure below is the mutation's).
    let ok = dir.path().join("ok.yaml");
    std::fs::write(&ok, &with_abs_rules).unwrap();
    let (code, out) = run(Command::new(tool("promtool")).args(["test", "rules"]).arg(&ok));
    assert_eq!(code, 0, "{out}");

    let firing_at_23 = "      - eval_time: 23m\n        alertname: DeployJourneyTestflightTooSlow\n";
    assert!(with_abs_rules.contains(firing_at_23));
    let early = with_abs_rules
        .replace("      - {eval_time: 21m, alertname: DeployJourneyTestflightTooSlow, exp_alerts: []}\n", "")
        .replacen(firing_at_23, &firing_at_23.replace("23m", "21m"), 1);
    let broken = dir.path().join("broken.yaml");
    std::fs::write(&broken, early).unwrap();
    let (code, out) = run(Command::new(tool("promtool")).args(["test", "rules"]).arg(&broken));
    assert_ne!(code, 0, "a test expecting the alert at 21m passed:\n{out}");
    assert!(out.contains("FAILED") && out.contains("DeployJourneyTestflightTooSlow"), "{out}");

    // Rules without the testflight alert's `for` fire at 21m, which the shipped tests forbid.
    let rules = std::fs::read_to_string(&rules_abs).unwrap();
    let no_for = rewrite_for(&rules, "DeployJourneyTestflightTooSlow", "0s");
    let rules_copy = dir.path().join("rules.yml");
    std::fs::write(&rules_copy, no_for).unwrap();
    let tests = with_abs_rules.replace(&rules_abs.display().to_string(), &rules_copy.display().to_string());
    let t = dir.path().join("no-for.yaml");
    std::fs::write(&t, tests).unwrap();
    let (code, out) = run(Command::new(tool("promtool")).args(["test", "rules"]).arg(&t));
    assert_ne!(code, 0, "the shipped tests pass on rules without `for`:\n{out}");
    assert!(out.contains("time: 21m"), "{out}");
}

/// `rules` with the `for:` of alert `name` (and nothing else) replaced by `value`.
fn rewrite_for(rules: &str, name: &str, value: &str) -> String {
    let at = rules.find(&format!("- alert: {name}\n")).unwrap_or_else(|| panic!("no alert {name}"));
    let rel = rules[at..].find("        for: ").expect("for");
    let start = at + rel;
    let end = start + rules[start..].find('\n').unwrap();
    let out = format!("{}        for: {value}{}", &rules[..start], &rules[end..]);
    let changed: Vec<(&str, &str)> = rules.lines().zip(out.lines()).filter(|(a, b)| a != b).collect();
    assert_eq!(changed.len(), 1, "{changed:?}");
    out
}

// ------------------------------------------------------------------ end to end

async fn get_json(client: &reqwest::Client, url: &str) -> Option<serde_json::Value> {
    let r = client.get(url).timeout(Duration::from_secs(5)).send().await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json().await.ok()
}

/// The single value of an instant query, if it has exactly one series.
async fn query_one(client: &reqwest::Client, prom: &str, q: &str) -> Option<(serde_json::Value, f64)> {
    let u = reqwest::Url::parse_with_params(&format!("{prom}/api/v1/query"), &[("query", q)]).unwrap();
    let v = get_json(client, u.as_str()).await?;
    let r = v["data"]["result"].as_array()?;
    if r.len() != 1 {
        return None;
    }
    let x: f64 = r[0]["value"][1].as_str()?.parse().ok()?;
    Some((r[0]["metric"].clone(), x))
}

fn prom_log_tail(log: &Path) -> String {
    let t = std::fs::read_to_string(log).unwrap_or_default();
    t.lines().rev().take(20).collect::<Vec<_>>().join("\n")
}

/// How far virtual time runs per real second in the end-to-end test: the scenario's first
/// 105 simulated minutes take about 11 s.
const SPEED: f64 = 240.0;
/// The `for:` the end-to-end test gives DeployJourneyTestflightTooSlow in its copy of the rules
/// (real seconds; the shipped 1m would only make the test a minute longer). Nothing else in the
/// copy changes: the expressions are the shipped ones.
const E2E_FOR_SECS: u64 = 8;

/// The end-to-end setup: the simulator running a scenario (advanced to `live_at` and standing
/// still until the test lets it run), `serve_with_clock` on the simulator's clock, and a real
/// Prometheus loading the shipped rules (only the testflight alert's `for` shortened) and
/// scraping the exporter every second. Ready once Prometheus has scraped the exporter.
struct E2e {
    sim: Arc<Sim>,
    scenario_run: deploy_journey::sim::workload::ScenarioRun,
    exporter: String,
    prom: String,
    client: reqwest::Client,
    log: PathBuf,
    threshold: i64,
    t_all: Instant,
    deadline: Instant,
    stop_tx: Option<tokio::sync::oneshot::Sender<()>>,
    app: Option<tokio::task::JoinHandle<Result<(), deploy_journey::app::AppError>>>,
    sim_task: tokio::task::JoinHandle<()>,
    _prometheus: KillOnDrop,
    _dir: tempfile::TempDir,
}

impl E2e {
    async fn start(scenario: &str, live_at: i64) -> E2e {
        let prometheus = tool("prometheus");
        init_crypto();
        let t_all = Instant::now();
        let deadline = t_all + Duration::from_secs(110);
        let sc = Scenario::load(Path::new(MANIFEST).join("tests/scenarios").join(scenario)).unwrap();
        let (mut world, scenario_run) = sc.build_world(START);
        let live = START + live_at;
        world.advance_to(live);
        // The clock stands still until the test lets it run, so the scrape that sets the
        // baseline comes first however slowly the processes start.
        let sim = Sim::new(world, SimClock::new(live, ClockMode::Stepped));
        let (listener, sim_url) = deploy_journey::sim::server::bind(sim.clone(), "127.0.0.1:0").await.unwrap();
        let s2 = sim.clone();
        let sim_task = tokio::spawn(async move {
            let _ = deploy_journey::sim::server::serve(s2, listener).await;
        });

        // The exporter, in process, on the simulator's clock.
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = example_config("lana", &sim_url);
        cfg.poll_interval = Duration::from_secs(1);
        cfg.state_path = dir.path().join("state.db");
        let threshold = cfg
            .stages
            .iter()
            .find(|s| &*s.name == "testflight")
            .and_then(|s| s.stuck_after)
            .expect("testflight stuck_after");
        let (addr, stop_tx, app) = crate::support::serve_on_sim(cfg, &sim).await;
        let exporter = format!("http://{addr}");
        let client = crate::support::client();

        // The shipped rules, with only the testflight alert's `for` shortened.
        let shipped = std::fs::read_to_string(Path::new(MANIFEST).join(RULES)).unwrap();
        let rules = rewrite_for(&shipped, "DeployJourneyTestflightTooSlow", &format!("{E2E_FOR_SECS}s"));
        let rules_path = dir.path().join("rules.yml");
        std::fs::write(&rules_path, &rules).unwrap();
        let port = free_port();
        let prom = format!("http://127.0.0.1:{port}");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nrule_files: ['{}']\nscrape_configs:\n  - job_name: deploy-journey\n    static_configs:\n      - targets: ['{addr}']\n",
            rules_path.display()
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, &config).unwrap();
        let (code, out) = run(Command::new(tool("promtool")).args(["check", "config"]).arg(&config_path));
        assert_eq!(code, 0, "{out}");
        let log = dir.path().join("prometheus.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new(&prometheus)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .expect("start prometheus");
        println!(
            "{scenario}: simulator at {sim_url} ({SPEED}x from +{}m), exporter at {exporter}, prometheus at {prom}",
            live_at / 60
        );
        let e = E2e {
            sim,
            scenario_run,
            exporter,
            prom,
            client,
            log,
            threshold,
            t_all,
            deadline,
            stop_tx: Some(stop_tx),
            app: Some(app),
            sim_task,
            _prometheus: KillOnDrop(child),
            _dir: dir,
        };
        while query_one(&e.client, &e.prom, "deploy_journey_build_info").await.is_none() {
            assert!(Instant::now() < e.deadline, "Prometheus never scraped the exporter:\n{}", prom_log_tail(&e.log));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        println!("  first scrape after {:.1} s", e.t_all.elapsed().as_secs_f64());
        e
    }

    /// Let the simulator's clock run at `SPEED`.
    fn go_live(&self) -> Instant {
        self.sim.clock.set_mode(ClockMode::Running { speed: SPEED });
        Instant::now()
    }

    fn sim_minutes(&self) -> i64 {
        (self.sim.now() - START) / 60
    }

    /// Watch `alert` until it fires. Alerts are read first, then `age_q`, the age the alert
    /// compares: it only grows while the build runs, so an age ≤ the threshold means the alert
    /// was evaluated on ages ≤ the threshold and must be absent. Also runs `each` on every
    /// round. Returns (when and how it was first seen pending, when and how it fired, rounds
    /// quiet below the threshold).
    async fn until_firing(
        &self,
        alert: &str,
        age_q: &str,
        t_live: Instant,
    ) -> ((Instant, serde_json::Value), (Instant, serde_json::Value), usize) {
        let mut quiet_below = 0;
        let mut pending: Option<(Instant, serde_json::Value)> = None;
        let firing = loop {
            assert!(
                Instant::now() < self.deadline,
                "{alert} did not fire in time (pending: {pending:?}):\n{}",
                prom_log_tail(&self.log)
            );
            let v = get_json(&self.client, &format!("{}/api/v1/alerts", self.prom)).await.expect("alerts API");
            let mine: Vec<serde_json::Value> = v["data"]["alerts"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|a| a["labels"]["alertname"] == alert)
                .cloned()
                .collect();
            let age = query_one(&self.client, &self.prom, age_q).await.map(|(_, x)| x).unwrap_or(0.0);
            if age > 0.0 && age <= self.threshold as f64 {
                assert!(mine.is_empty(), "{alert} active while testflight had run {age} s: {mine:?}");
                quiet_below += 1;
            }
            assert!(mine.len() <= 1, "{mine:?}");
            if let Some(a) = mine.into_iter().next() {
                match a["state"].as_str() {
                    Some("pending") if pending.is_none() => {
                        println!(
                            "  pending {:.1} s after going live (sim +{}m): {a}",
                            t_live.elapsed().as_secs_f64(),
                            self.sim_minutes()
                        );
                        pending = Some((Instant::now(), a));
                    }
                    Some("firing") => break (Instant::now(), a),
                    _ => {}
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        println!(
            "  firing {:.1} s after going live (sim +{}m): {}",
            t_live.elapsed().as_secs_f64(),
            self.sim_minutes(),
            firing.1
        );
        assert!(quiet_below > 0, "the build was never seen running under the threshold");
        // How long it was pending comes from Prometheus's own `activeAt` (when the evaluation
        // first found it true), not from when this loop happened to look: a slow round on a
        // busy machine must not shorten the measured `for`.
        let active_at = humantime::parse_rfc3339_weak(firing.1["activeAt"].as_str().expect("activeAt"))
            .unwrap_or_else(|e| panic!("activeAt of {}: {e}", firing.1));
        let pending_for = std::time::SystemTime::now().duration_since(active_at).unwrap_or_default();
        assert!(
            pending_for >= Duration::from_secs(E2E_FOR_SECS),
            "firing {pending_for:?} after it became active, `for` is {E2E_FOR_SECS}s: {}",
            firing.1
        );
        // Seen pending only if a round fell inside the `for` window; it usually does.
        let pending = pending.unwrap_or_else(|| (firing.0, firing.1.clone()));
        for a in [&pending.1, &firing.1] {
            let labels: BTreeMap<String, String> = serde_json::from_value(a["labels"].clone()).unwrap();
            let want: BTreeMap<String, String> =
                [("alertname", alert), ("severity", "warning"), ("stage", "testflight")]
                    .map(|(k, v)| (k.into(), v.into()))
                    .into();
            assert_eq!(labels, want, "no job/instance/sha label reaches the alert");
            let value: f64 = a["value"].as_str().unwrap().parse().unwrap();
            assert!(value > self.threshold as f64, "{a}");
            assert!(
                a["annotations"]["summary"].as_str().unwrap().starts_with("testflight has been running for "),
                "{a}"
            );
            assert!(a["annotations"]["runbook_url"].as_str().unwrap().ends_with("#deployjourneytestflighttooslow"));
        }
        (pending, firing, quiet_below)
    }

    /// Alerts active now, by name.
    async fn active(&self) -> BTreeSet<String> {
        let v = get_json(&self.client, &format!("{}/api/v1/alerts", self.prom)).await.unwrap();
        v["data"]["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["labels"]["alertname"].as_str().unwrap().to_string())
            .collect()
    }

    /// Every shipped rule is loaded and healthy.
    async fn rules_healthy(&self) {
        let rules_api = get_json(&self.client, &format!("{}/api/v1/rules", self.prom)).await.unwrap();
        let mut n_rules = 0;
        for g in rules_api["data"]["groups"].as_array().unwrap() {
            for r in g["rules"].as_array().unwrap() {
                n_rules += 1;
                assert_eq!(r["health"], "ok", "{r}");
            }
        }
        assert_eq!(n_rules, rule_list().len(), "Prometheus loaded every shipped rule");
    }

    async fn stop(mut self) {
        println!("  whole test {:.1} s", self.t_all.elapsed().as_secs_f64());
        if let Some(tx) = self.stop_tx.take() {
            let _ = tx.send(());
        }
        if let Some(app) = self.app.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), app).await;
        }
        self.sim_task.abort();
    }
}

/// The age the "too slow" alerts compare: the oldest started testflight build's.
const TESTFLIGHT_AGE: &str = "max(deploy_journey_stage_oldest_running_build_seconds{stage=\"testflight\"})";

/// testflight-hangs.yaml from +60m at 240×: commit a reaches staging; b's testflight build
/// hangs. The alert is absent while b's testflight has run ≤ 20 simulated minutes, then
/// pending, then firing once its `for` has passed; the other "too slow" alerts stay quiet; the
/// lead-time recording rules return a's lead time as histogram_quantile places it in its bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_testflight_too_slow_goes_pending_then_firing_in_a_real_prometheus() {
    // At +60m a is in testflight; nothing is deployed yet.
    let e = E2e::start("testflight-hangs.yaml", 60 * 60).await;
    let (client, prom, sim) = (&e.client, e.prom.as_str(), &e.sim);
    // Before the clock moves, the lead-time count Prometheus sees is the baseline.
    let q = "sum(deploy_journey_lead_time_seconds_count{change_type=\"backend\"})";
    let (_, first_count) = query_one(client, prom, q).await.expect("the lead-time count was scraped");
    let t_live = e.go_live();
    let alert = "DeployJourneyTestflightTooSlow";
    e.until_firing(alert, TESTFLIGHT_AGE, t_live).await;

    // The commit in testflight is b, and the simulator says its build is still running.
    let shas = sim.with_world(|w| e.scenario_run.shas(w));
    let b = sim.with_world(|w| truth(w, &shas["b"]));
    let b_tf = b.first_build("private-charts/lana-bank-testflight").expect("b's testflight").clone();
    assert_eq!(b_tf.status, "started", "{b_tf:?}");
    let j = get_json(client, &format!("{}/api/v1/journeys/{}", e.exporter, shas["b"])).await.expect("b's journey");
    let tf = j["stages"].as_array().unwrap().iter().find(|s| s["name"] == "testflight").unwrap().clone();
    assert_eq!(tf["state"], "running", "{tf}");

    // The other stages are within their thresholds: their alerts stay quiet. Every rule is healthy.
    let active = e.active().await;
    for quiet in [
        "DeployJourneyTestsTooSlow",
        "DeployJourneyStagingDeployTooSlow",
        "DeployJourneyStageTooSlow",
        "DeployJourneyStageFailing",
        "DeployJourneyCommitNotPickedUp",
    ] {
        assert!(!active.contains(quiet), "{quiet} is active: {active:?}");
    }
    e.rules_healthy().await;

    // a's lead time, as the exporter and the simulator's ground truth say.
    let a = sim.with_world(|w| truth(w, &shas["a"]));
    let staged = a.first_success("galoy-staging/galoy-staging-lana-bank").and_then(|x| x.end).expect("a staged");
    let ja = get_json(client, &format!("{}/api/v1/journeys/{}", e.exporter, shas["a"])).await.expect("a's journey");
    let commit_time = sim.with_world(|w| w.tracked_repo().commits[&shas["a"]].committer_date);
    let lead = (staged - commit_time) as f64;
    assert_eq!(ja["deployed_at"]["staging"].as_i64(), Some(staged), "{ja}");
    // The seed history's commits (other change types) were counted before; a is the first
    // backend lead time, so its series' buckets all rose from 0 and the quantile is exact.
    assert_eq!(first_count, 0.0, "the backend histogram was empty when Prometheus first scraped it");
    let bounds = deploy_journey::sinks::metrics::LEAD_BUCKETS;
    let hi_i = bounds.iter().position(|b| lead <= *b).expect("within the buckets");
    let (lo, hi) = (if hi_i == 0 { 0.0 } else { bounds[hi_i - 1] }, bounds[hi_i]);
    for (rule, sel, q) in [
        // Staging's: qa and production have no lead time yet (their quantile is NaN).
        (
            "environment_change_type:deploy_journey_lead_time_seconds:p50_1d",
            "{environment=\"staging\",change_type=\"backend\"}",
            0.5,
        ),
        (
            "environment_change_type:deploy_journey_lead_time_seconds:p90_1d",
            "{environment=\"staging\",change_type=\"backend\"}",
            0.9,
        ),
        ("environment:deploy_journey_lead_time_seconds:p50_1d", "{environment=\"staging\"}", 0.5),
        ("environment:deploy_journey_lead_time_seconds:p90_1d", "{environment=\"staging\"}", 0.9),
    ] {
        let (labels, got) = loop {
            if let Some(x) = query_one(client, prom, &format!("{rule}{sel}")).await.filter(|(_, x)| !x.is_nan()) {
                break x;
            }
            assert!(Instant::now() < e.deadline, "{rule} has no value:\n{}", prom_log_tail(&e.log));
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        // One observation: histogram_quantile interpolates linearly inside its bucket.
        let want = lo + (hi - lo) * q;
        assert!((got - want).abs() < 1e-6 * want, "{rule}: {got}, want {want} (lead time {lead} s in ({lo}, {hi}])");
        assert!(lo < got && got <= hi);
        assert_eq!(labels["environment"], "staging", "{labels}");
        println!("  {rule}{sel} = {got} (a's lead time {lead} s, bucket ({lo}, {hi}])");
    }
    e.stop().await;
}

/// The case, end to end: testflight-rerun-hangs.yaml from +2h55m at 240×. Commit a is
/// deployed; at +3h a's testflight build is rerun and hangs. That build carries no commit in
/// flight, so the per-commit gauges say nothing runs at testflight; the alert fires anyway,
/// from the running build's age. The expression the rules had before (the oldest running
/// commit's age against the threshold) returns nothing in the same Prometheus at that moment:
/// it would never have fired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_testflight_too_slow_fires_on_a_build_carrying_no_commit_in_flight() {
    let e = E2e::start("testflight-rerun-hangs.yaml", 3 * 3600 - 5 * 60).await;
    let (client, prom) = (&e.client, e.prom.as_str());
    let t_live = e.go_live();
    let alert = "DeployJourneyTestflightTooSlow";
    let (_, firing, _) = e.until_firing(alert, TESTFLIGHT_AGE, t_live).await;
    let value: f64 = firing.1["value"].as_str().unwrap().parse().unwrap();

    // Nothing in flight at testflight: the per-commit view is empty...
    let running_commits = "max(deploy_journey_stage_in_flight{stage=\"testflight\",state=\"running\"})";
    assert_eq!(query_one(client, prom, running_commits).await.map(|x| x.1), Some(0.0));
    let old_age = "max(deploy_journey_stage_oldest_in_flight_seconds{stage=\"testflight\",state=\"running\"})";
    assert_eq!(query_one(client, prom, old_age).await.map(|x| x.1), Some(0.0));
    // ... and the rules' previous expression selects nothing: the old alert stays silent.
    let old_expr = "max by (stage) (deploy_journey_stage_oldest_in_flight_seconds{stage=\"testflight\", state=\"running\"}) > on (stage) max by (stage) (deploy_journey_stage_stuck_threshold_seconds{stage=\"testflight\"})";
    let u = reqwest::Url::parse_with_params(&format!("{prom}/api/v1/query"), &[("query", old_expr)]).unwrap();
    let v = get_json(client, u.as_str()).await.expect("query");
    assert_eq!(v["data"]["result"], serde_json::json!([]), "the old expression fires: {v}");
    // The stage-level gauges: one started build, stuck.
    let stuck = "max(deploy_journey_stage_stuck{stage=\"testflight\"})";
    assert_eq!(query_one(client, prom, stuck).await.map(|x| x.1), Some(1.0));
    let started = "max(deploy_journey_stage_running_builds{stage=\"testflight\",status=\"started\"})";
    assert_eq!(query_one(client, prom, started).await.map(|x| x.1), Some(1.0));

    // The exporter names the build and what it carries: a, deployed, per the simulator too.
    let shas = e.sim.with_world(|w| e.scenario_run.shas(w));
    let a = e.sim.with_world(|w| truth(w, &shas["a"]));
    let rerun = a.job("private-charts/lana-bank-testflight").unwrap().builds.last().unwrap().clone();
    assert!(rerun.rerun_of.is_some() && rerun.status == "started", "{rerun:?}");
    assert!(a.first_success("galoy-staging/galoy-staging-lana-bank").is_some(), "a is deployed");
    let list = get_json(client, &format!("{}/api/v1/journeys?state=in_flight", e.exporter)).await.unwrap();
    let tf = list["stages"].as_array().unwrap().iter().find(|s| s["name"] == "testflight").unwrap().clone();
    assert_eq!(tf["running_builds"][0]["build_id"], rerun.id, "{tf}");
    assert_eq!(tf["running_builds"][0]["head"], shas["a"].as_str(), "{tf}");
    assert_eq!(tf["stuck"], true, "{tf}");
    assert!(value > e.threshold as f64);
    for j in list["journeys"].as_array().unwrap() {
        let st = j["stages"].as_array().unwrap().iter().find(|s| s["name"] == "testflight").unwrap();
        assert_ne!(st["state"], "running", "{} is running at testflight: {j}", j["short_sha"]);
    }
    let active = e.active().await;
    for quiet in ["DeployJourneyTestsTooSlow", "DeployJourneyStagingDeployTooSlow", "DeployJourneyStageTooSlow"] {
        assert!(!active.contains(quiet), "{quiet} is active: {active:?}");
    }
    e.rules_healthy().await;
    e.stop().await;
}
