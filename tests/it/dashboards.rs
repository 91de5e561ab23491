//! The Grafana dashboards (`dashboards/`), their provisioning and the compose quick start,
//! checked offline: every dashboard validates against a JSON Schema generated from Grafana's own
//! `Dashboard` type (@grafana/schema, pinned in tests/grafana-schema/, installed by
//! `./scripts/test` with `npm ci`); every PromQL expression parses in promtool (as a generated
//! rules file) and names only catalogue metrics and shipped recording rules, with their labels;
//! the compose stack's Prometheus config passes `promtool check config` with the shipped rules.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

use crate::alerts::{MANIFEST, catalogue, catalogue_problems, recording_rules, run};
use crate::support::tool;

fn dashboards() -> Vec<(String, Value)> {
    let dir = Path::new(MANIFEST).join("dashboards");
    let mut v: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .expect("dashboards/")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            (name, v)
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Every panel, rows' nested panels included.
fn panels(d: &Value) -> Vec<&Value> {
    let mut out = vec![];
    for p in d["panels"].as_array().into_iter().flatten() {
        out.push(p);
        out.extend(p["panels"].as_array().into_iter().flatten());
    }
    out
}

fn node_bin(name: &str) -> PathBuf {
    let p = Path::new(MANIFEST).join("tests/grafana-schema/node_modules/.bin").join(name);
    assert!(p.is_file(), "{} is missing: run ./scripts/test, which runs `npm ci` in tests/grafana-schema", p.display());
    p
}

/// The draft-07 JSON Schema of Grafana's `Dashboard` type, generated once per test run from the
/// pinned @grafana/schema's TypeScript types.
fn schema() -> &'static Path {
    static SCHEMA: OnceLock<PathBuf> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let out = std::env::temp_dir().join(format!("deploy-journey-dashboard-schema-{}.json", std::process::id()));
        let types = Path::new(MANIFEST)
            .join("tests/grafana-schema/node_modules/@grafana/schema/dist/types/raw/dashboard/x/types.gen.d.ts");
        let (code, text) = run(Command::new(node_bin("ts-json-schema-generator"))
            .arg("--path")
            .arg(&types)
            .args(["--type", "Dashboard", "--no-type-check", "-o"])
            .arg(&out));
        assert_eq!(code, 0, "generating the dashboard schema:\n{text}");
        out
    })
}

fn ajv(file: &Path) -> (i32, String) {
    run(Command::new(node_bin("ajv"))
        .args(["validate", "--spec=draft7", "--all-errors", "--errors=text", "-s"])
        .arg(schema())
        .arg("-d")
        .arg(file))
}

/// Each dashboard validates against the schema derived from @grafana/schema; a broken copy does
/// not. Uids are stable and unique, data sources are the variables, panel ids are unique.
#[test]
fn dashboards_validate_against_the_grafana_schema() {
    let all = dashboards();
    let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "deploy-journey-commit.json",
            "deploy-journey-dora.json",
            "deploy-journey-exporter-health.json",
            "deploy-journey-overview.json"
        ]
    );
    let mut uids = BTreeSet::new();
    for (name, d) in &all {
        let (code, out) = ajv(&Path::new(MANIFEST).join("dashboards").join(name));
        assert_eq!(code, 0, "{name} does not validate against @grafana/schema's Dashboard:\n{out}");
        let uid = d["uid"].as_str().unwrap_or("");
        assert!(uid.starts_with("deploy-journey-") && uid.len() <= 40, "{name}: uid {uid:?}");
        assert!(uids.insert(uid.to_string()), "{name}: uid {uid} twice");
        assert!(d["title"].as_str().is_some_and(|t| t.starts_with("Deploy journey")), "{name}");
        // Data sources are chosen through the variables, never a fixed uid.
        let vars: Vec<&Value> = d["templating"]["list"].as_array().unwrap().iter().collect();
        let ds_vars: BTreeMap<&str, &str> = vars
            .iter()
            .filter(|v| v["type"] == "datasource")
            .map(|v| (v["name"].as_str().unwrap(), v["query"].as_str().unwrap()))
            .collect();
        assert_eq!(ds_vars.get("DS_PROMETHEUS"), Some(&"prometheus"), "{name}");
        let mut ids = BTreeSet::new();
        for p in panels(d) {
            assert!(ids.insert(p["id"].as_i64().unwrap()), "{name}: panel id {} twice", p["id"]);
            let g = &p["gridPos"];
            assert!(g["x"].as_i64().unwrap() + g["w"].as_i64().unwrap() <= 24, "{name}: {} too wide", p["title"]);
            let mut refs = vec![&p["datasource"]];
            refs.extend(p["targets"].as_array().into_iter().flatten().map(|t| &t["datasource"]));
            for r in refs.into_iter().filter(|r| !r.is_null()) {
                let (kind, uid) = (r["type"].as_str().unwrap(), r["uid"].as_str().unwrap());
                let want = match kind {
                    "prometheus" => "${DS_PROMETHEUS}",
                    "tempo" => "${DS_TEMPO}",
                    other => panic!("{name}: {}: data source type {other}", p["title"]),
                };
                assert_eq!(uid, want, "{name}: {}", p["title"]);
                assert!(ds_vars.contains_key(&want[2..want.len() - 1]), "{name}: no variable for {want}");
            }
        }
    }

    // The schema is not vacuous: a dashboard without schemaVersion, with a panel without a type
    // and a width that is a string, is rejected.
    let (_, overview) = all.iter().find(|(n, _)| n.contains("overview")).unwrap();
    let mut broken = overview.clone();
    broken.as_object_mut().unwrap().remove("schemaVersion");
    let p0 = broken["panels"][1].as_object_mut().unwrap();
    p0.remove("type");
    p0.get_mut("gridPos").unwrap()["w"] = Value::from("12");
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("broken.json");
    std::fs::write(&f, serde_json::to_string(&broken).unwrap()).unwrap();
    let (code, out) = ajv(&f);
    assert_ne!(code, 0, "the broken dashboard validates:\n{out}");
    for e in ["schemaVersion", "'type'", "gridPos/w must be number"] {
        assert!(out.contains(e), "ajv does not report {e}:\n{out}");
    }
}

/// Grafana's variables in an expression replaced by values of the right kind, so promtool can
/// parse it: ranges by durations, a multi-value `=~` by a regex.
fn concrete(expr: &str) -> String {
    expr.replace("$__rate_interval", "2m")
        .replace("$__interval", "1m")
        .replace("$__range", "1d")
        .replace("$environment", "staging")
        .replace("$stage", "tests|testflight")
}

/// Every PromQL expression of the dashboards (panel targets and the variables' label_values)
/// parses in promtool and names only catalogue metrics and shipped recording rules, each with
/// labels it has. The lead-time and stage panels carry exemplars.
#[test]
fn dashboards_promql_parses_and_names_only_catalogue_metrics() {
    let catalogue = catalogue();
    let recorded = recording_rules();
    let mut exprs: Vec<(String, String)> = vec![];
    let mut problems = vec![];
    let mut exemplar_metrics = BTreeSet::new();
    for (name, d) in dashboards() {
        for p in panels(&d) {
            for t in p["targets"].as_array().into_iter().flatten() {
                if t["datasource"]["type"] != "prometheus" {
                    continue;
                }
                let expr = t["expr"].as_str().unwrap_or_else(|| panic!("{name}: {}: no expr", p["title"]));
                let where_ = format!("{name}: {}", p["title"].as_str().unwrap_or(""));
                if t["exemplar"] == true {
                    for (m, _) in crate::alerts::selectors(&concrete(expr)).unwrap_or_default() {
                        exemplar_metrics.insert(m);
                    }
                }
                exprs.push((where_, concrete(expr)));
            }
        }
        for v in d["templating"]["list"].as_array().unwrap() {
            let Some(q) = v["query"]["query"].as_str() else { continue };
            // Grafana's label_values(metric, label): the metric must exist with that label.
            let inner = q.strip_prefix("label_values(").and_then(|x| x.strip_suffix(')')).expect("label_values");
            let (metric, label) = inner.split_once(',').map(|(m, l)| (m.trim(), l.trim())).unwrap();
            match catalogue.get(metric) {
                Some(labels) if labels.contains(label) => {}
                other => {
                    problems.push(format!("{name}: variable {}: {metric} has no label {label}: {other:?}", v["name"]))
                }
            }
        }
    }
    assert!(exprs.len() >= 30, "{} expressions", exprs.len());
    for (where_, e) in &exprs {
        problems.extend(catalogue_problems(e, where_, &catalogue, &recorded));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    for m in ["deploy_journey_lead_time_seconds_bucket", "deploy_journey_stage_duration_seconds_bucket"] {
        assert!(exemplar_metrics.contains(m), "no panel queries exemplars of {m}: {exemplar_metrics:?}");
    }

    // promtool parses them all: one generated recording rule per expression.
    let mut rules = String::from("groups:\n  - name: dashboard-expressions\n    rules:\n");
    for (i, (where_, e)) in exprs.iter().enumerate() {
        rules.push_str(&format!(
            "      # {}\n      - record: dashboard:expression_{i}:check\n        expr: {}\n",
            where_.replace('\n', " "),
            serde_json::to_string(e).unwrap()
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("dashboard-expressions.yml");
    std::fs::write(&f, &rules).unwrap();
    let (code, out) = run(Command::new(tool("promtool")).args(["check", "rules"]).arg(&f));
    assert_eq!(code, 0, "promtool rejects a dashboard expression:\n{out}\n{rules}");
    assert!(out.contains(&format!("SUCCESS: {} rules found", exprs.len())), "{out}");
    // ...and would say so: a broken one fails.
    std::fs::write(&f, rules.replacen("sum by (stage)", "sum by (stage", 1)).unwrap();
    let (code, out) = run(Command::new(tool("promtool")).args(["check", "rules"]).arg(&f));
    assert_ne!(code, 0, "{out}");

    // The issue's panels are there: each of these metrics is queried somewhere.
    let used: BTreeSet<String> = exprs
        .iter()
        .flat_map(|(_, e)| crate::alerts::selectors(e).unwrap_or_default().into_iter().map(|(m, _)| m))
        .collect();
    for m in [
        "environment:deploy_journey_lead_time_seconds:p90_1d",
        "environment_change_type:deploy_journey_lead_time_seconds:p50_1d",
        "deploy_journey_deployments_total",
        "stage:deploy_journey_stage_duration_seconds:p90_1d",
        "stage:deploy_journey_stage_wait_seconds:p90_1d",
        "deploy_journey_stage_in_flight",
        "deploy_journey_stage_oldest_in_flight_seconds",
        "deploy_journey_stage_stuck",
        "deploy_journey_stage_running_builds",
        "deploy_journey_stage_oldest_running_build_seconds",
        "deploy_journey_stage_failures_total",
        "deploy_journey_commits_behind",
        "deploy_journey_oldest_undeployed_commit_age_seconds",
        "deploy_journey_commit_outcomes_total",
        "deploy_journey_attributions_total",
        "deploy_journey_source_up",
        "deploy_journey_source_errors_total",
        "deploy_journey_source_poll_duration_seconds",
        "deploy_journey_github_rate_limit_remaining",
    ] {
        assert!(used.contains(m), "no dashboard panel queries {m}");
    }
    println!("{} dashboard expressions parse in promtool and name only catalogue metrics", exprs.len());
}

/// The commit dashboard: the trace panel looks up `${trace_id}`, the timeline searches TraceQL on
/// `vcs.ref.head.revision`, and the variable's regex (run in node, as Grafana runs it in the
/// browser) turns a sha or a prefix of it into the first 32 hex digits.
#[test]
fn dashboards_commit_journey_derives_the_trace_id_from_the_sha() {
    let all = dashboards();
    let (_, d) = all.iter().find(|(n, _)| n.contains("commit")).unwrap();
    let ps = panels(d);
    let trace = ps.iter().find(|p| p["type"] == "traces").expect("a traces panel");
    assert_eq!(trace["targets"][0]["query"], "${trace_id}");
    let traceql: Vec<&str> = ps
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter_map(|t| t["query"].as_str())
        .collect();
    assert!(traceql.iter().any(|q| q.contains("span.vcs.ref.head.revision =~ \"${sha}.*\"")), "{traceql:?}");
    let var = d["templating"]["list"].as_array().unwrap().iter().find(|v| v["name"] == "trace_id").unwrap();
    assert_eq!(var["query"]["label"], "span.vcs.ref.head.revision");
    let regex = var["regex"].as_str().unwrap();

    let shas = ["3f0c1d2e4b5a69788796a5b4c3d2e1f00112233a", "ffeeddccbbaa99887766554433221100ffeeddcc"];
    // Grafana interpolates ${sha} into the regex, applies it to every value, keeps the first
    // capture group of those that match.
    let script = r#"
const [regex, sha, ...values] = process.argv.slice(1);
const src = regex.replace('${sha}', sha);
const m = src.match(/^\/(.*)\/([gimsuy]*)$/);
const re = new RegExp(m[1], m[2]);
const out = values.map(v => re.exec(v)).filter(Boolean).map(x => x[1]);
console.log(JSON.stringify(out));
"#;
    for (input, want) in [
        (shas[0], vec![&shas[0][..32]]),
        (&shas[0][..7], vec![&shas[0][..32]]),
        (&shas[1][..12], vec![&shas[1][..32]]),
        ("0000000", vec![]),
    ] {
        let (code, out) = run(Command::new("node").args(["-e", script, regex, input]).args(shas));
        assert_eq!(code, 0, "{out}");
        let got: Vec<String> = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(got, want, "sha {input}");
    }
}

/// The provisioning files name the data sources the dashboards expect, with exemplar links to
/// Tempo; the compose stack mounts files that exist and runs the exporter's demo; its Prometheus
/// config passes `promtool check config`, which loads the shipped rules.
#[test]
fn dashboards_provisioning_and_compose_example_hold_together() {
    let yaml = |p: &str| -> Value {
        let text = std::fs::read_to_string(Path::new(MANIFEST).join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
        serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{p}: {e}"))
    };
    let ds = yaml("dashboards/provisioning/datasources/deploy-journey.yaml");
    let list = ds["datasources"].as_array().unwrap();
    let by_type = |t: &str| list.iter().find(|d| d["type"] == t).unwrap_or_else(|| panic!("no {t} data source"));
    let (prom, tempo) = (by_type("prometheus"), by_type("tempo"));
    let dest = &prom["jsonData"]["exemplarTraceIdDestinations"][0];
    assert_eq!(dest["name"], "trace_id", "exemplars carry trace_id");
    assert_eq!(dest["datasourceUid"], tempo["uid"]);
    let prov = yaml("dashboards/provisioning/dashboards/deploy-journey.yaml");
    let path = prov["providers"][0]["options"]["path"].as_str().unwrap().to_string();

    let compose = yaml("examples/compose/compose.yaml");
    let services = compose["services"].as_object().unwrap();
    for s in ["deploy-journey", "prometheus", "grafana", "tempo", "otel-collector"] {
        assert!(services.contains_key(s), "compose has no {s}");
    }
    assert_eq!(services["deploy-journey"]["command"][0], "demo");
    let base = Path::new(MANIFEST).join("examples/compose");
    let mut dashboards_mounted = 0;
    for (name, s) in services {
        for v in s["volumes"].as_array().into_iter().flatten() {
            let v = v.as_str().unwrap();
            let mut parts = v.split(':');
            let (host, target) = (parts.next().unwrap(), parts.next().unwrap());
            assert!(base.join(host).exists(), "{name}: mounts {host}, which does not exist");
            if target.starts_with(&path) && host.ends_with(".json") {
                dashboards_mounted += 1;
            }
        }
    }
    assert_eq!(dashboards_mounted, dashboards().len(), "every dashboard is mounted at the provider's path");

    let (code, out) =
        run(Command::new(tool("promtool")).args(["check", "config", "prometheus.yml"]).current_dir(&base));
    assert_eq!(code, 0, "promtool check config examples/compose/prometheus.yml:\n{out}");
    let n = crate::alerts::recording_rules().len();
    assert!(out.contains("1 rule files found") && out.contains("rules found"), "{out}");
    assert!(n > 0);
}
