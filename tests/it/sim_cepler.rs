//! cepler in the simulator: staging, QA (`passed:` + `propagated:`, walking staging's recorded
//! states one by one) and production (gated by `cepler-gates`), and the deployment ground truth
//! (`World::deployment_truth`, `GET /_sim/deployments`) of the issue-17 scenarios.

use std::collections::BTreeMap;

use deploy_journey::sim::deployments::{DeploymentTruth, EnvironmentTruth};
use deploy_journey::sim::engine::World;
use deploy_journey::sim::workload::{Scenario, ScenarioRun};

use crate::support::START;

pub const STAGING: &str = "gcp-galoy-staging";
pub const QA: &str = "gcp-volcano-qa";
pub const PRODUCTION: &str = "gcp-volcano-production";
const DAY: i64 = 86_400;

pub fn scenario_path(name: &str) -> String {
    format!("{}/tests/scenarios/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn run(name: &str) -> (World, ScenarioRun) {
    Scenario::load(scenario_path(name)).unwrap().run(START)
}

fn deps(w: &World, env: &str) -> Vec<DeploymentTruth> {
    w.deployment_truth(DAY).remove(env).unwrap_or_default()
}

fn env_truth(w: &World, env: &str) -> EnvironmentTruth {
    w.environment_truth(DAY).into_iter().find(|e| e.environment == env).unwrap()
}

#[allow(dead_code)]
/// For debugging a scenario: every deployment, one line each.
pub fn dump(w: &World, shas: &BTreeMap<String, String>) {
    let name: BTreeMap<&String, &String> = shas.iter().map(|(k, v)| (v, k)).collect();
    for (env, rows) in w.deployment_truth(DAY) {
        for d in rows {
            let ids: Vec<_> = d.commits.iter().map(|s| name.get(s).map(|x| x.as_str()).unwrap_or(&s[..7])).collect();
            eprintln!(
                "{env} {}#{} {}..{} {} {} {:?} failed={:?} rec={:?} rework={}",
                d.build.job,
                d.build.name,
                d.start - START,
                d.end - START,
                d.result,
                d.kind,
                ids,
                d.failed.as_ref().map(|f| f.reason),
                d.recovered_by.as_ref().map(|r| r.at - START),
                d.rework
            );
        }
    }
}

#[test]
fn qa_walks_stagings_recorded_states_one_by_one() {
    let (w, r) = run("qa-walks-staging-states.yaml");
    let shas = r.shas(&w);
    let after = |env| deps(&w, env).into_iter().filter(|d| d.end > START).collect::<Vec<_>>();
    let staging = after(STAGING);
    let qa = after(QA);
    let brought = |ds: &[DeploymentTruth]| ds.iter().map(|d| d.commits.clone()).collect::<Vec<_>>();
    let one_each: Vec<Vec<String>> = ["a", "b", "c"].iter().map(|id| vec![shas[*id].clone()]).collect();
    assert_eq!(brought(&staging), one_each, "staging deployed a, b, c separately");
    assert_eq!(brought(&qa), one_each, "QA took staging's states one by one, none skipped");
    // QA's first deploy ran for 2 h: staging had recorded b and c before it ended.
    assert!(staging[2].end < qa[0].end);
    // QA's cepler versions are the commits that recorded staging's states, in that order.
    let record_commits: Vec<String> = w.cepler[STAGING]
        .iter()
        .filter(|s| s.recorded_at.is_some_and(|t| t > START))
        .map(|s| s.record_commit.clone().unwrap())
        .collect();
    let (p, res) = w.resource_index("galoy-qa", "lana-bank-qa").unwrap();
    let triggers: Vec<String> = w.concourse.pipelines[p].resources[res]
        .versions
        .iter()
        .filter_map(|v| w.concourse.version(*v))
        .filter(|v| v.created_at > START)
        .map(|v| v.version["trigger"].clone())
        .collect();
    assert_eq!(triggers, record_commits);
    // Production's gate is held: it deployed nothing and waits for approval with all three.
    assert!(after(PRODUCTION).is_empty());
    let prod = env_truth(&w, PRODUCTION);
    assert!(prod.awaiting_approval);
    assert_eq!(prod.behind.len(), 3);
}

#[test]
fn a_failed_deploy_records_nothing_and_later_environments_wait() {
    let sc = Scenario::load(scenario_path("staging-fails-then-rerun.yaml")).unwrap();
    let (mut w, r) = sc.build_world(START);
    // Staging's deploy of a failed at about 1h45m; the rerun starts at 3h.
    w.advance_to(START + 2 * 3600 + 50 * 60);
    let a = r.sha_of(&w, "a").unwrap();
    let failed = deps(&w, STAGING).into_iter().filter(|d| d.end > START).collect::<Vec<_>>();
    assert_eq!(failed.iter().map(|d| d.result).collect::<Vec<_>>(), ["failure"]);
    assert!(w.cepler[STAGING].iter().all(|s| s.recorded_at.is_none_or(|t| t < START)), "nothing recorded");
    assert!(deps(&w, QA).iter().all(|d| d.end < START), "QA got nothing new");
    assert_eq!(env_truth(&w, QA).behind, Vec::<String>::new(), "staging does not run a");
    w.advance_to(r.end);
    let qa: Vec<_> = deps(&w, QA).into_iter().filter(|d| d.end > START).collect();
    assert_eq!(qa.len(), 1);
    assert_eq!(qa[0].commits, vec![a.clone()]);
    let staging_ok = deps(&w, STAGING).into_iter().find(|d| d.result == "success" && d.end > START).unwrap();
    assert!(qa[0].start > staging_ok.end, "QA deployed a only after the rerun recorded it");
    // The failed attempt is credited to itself and recovered by the rerun.
    let f = &deps(&w, STAGING).into_iter().find(|d| d.result == "failure").unwrap();
    assert_eq!(f.failed.as_ref().map(|x| x.reason), Some("build_failed"));
    assert_eq!(f.recovered_by.as_ref().map(|x| x.build.id), Some(staging_ok.build.id));
}

#[test]
fn production_waits_at_its_gate_over_the_weekend() {
    let sc = Scenario::load(scenario_path("gate-held-weekend.yaml")).unwrap();
    let (mut w, r) = sc.build_world(START);
    // Monday 08:59, a week in: a has been in QA since Friday; the gate is still held.
    w.advance_to(START + 169 * 3600 - 60);
    let a = r.sha_of(&w, "a").unwrap();
    let qa_end = deps(&w, QA).into_iter().find(|d| d.commits.contains(&a)).unwrap().end;
    assert!(qa_end < START + 105 * 3600, "in QA by Friday 17:00");
    let prod = env_truth(&w, PRODUCTION);
    assert!(prod.awaiting_approval);
    assert_eq!(prod.behind, vec![a.clone()]);
    assert!(deps(&w, PRODUCTION).iter().all(|d| d.end < START));
    let (p, res) = w.resource_index("galoy-production", "lana-bank-production").unwrap();
    let new_versions = w.concourse.pipelines[p].resources[res]
        .versions
        .iter()
        .filter(|v| w.concourse.version(**v).unwrap().created_at > START);
    assert_eq!(new_versions.count(), 0, "a held gate emits no version");
    w.advance_to(r.end);
    let shipped: Vec<_> = deps(&w, PRODUCTION).into_iter().filter(|d| d.end > START).collect();
    assert_eq!(shipped.len(), 1);
    assert_eq!(shipped[0].commits, vec![a.clone()]);
    assert!(shipped[0].start >= START + 169 * 3600, "deployed once the gate opened");
    assert_eq!(shipped[0].lead_times[&a], shipped[0].end - (START + 103 * 3600));
    assert!(!env_truth(&w, PRODUCTION).awaiting_approval);
}

#[test]
fn a_rollback_pins_the_gate_and_the_version_then_triggers() {
    let (w, r) = run("prod-rollback.yaml");
    let shas = r.shas(&w);
    let prod: Vec<_> = deps(&w, PRODUCTION).into_iter().filter(|d| d.end > START).collect();
    let kinds: Vec<_> = prod.iter().map(|d| (d.result, d.kind)).collect();
    assert_eq!(kinds, [("success", "forward"), ("success", "forward"), ("success", "rollback")]);
    assert_eq!(prod[1].commits, [shas["b"].clone()]);
    assert_eq!(prod[2].removed, [shas["b"].clone()]);
    assert_eq!(prod[2].newest_commit.as_deref(), Some(shas["a"].as_str()));
    let failed = prod[1].failed.as_ref().unwrap();
    assert_eq!((failed.reason, failed.by.build.id), ("rolled_back", prod[2].build.id));
    assert_eq!(failed.by.commits, [shas["b"].clone()]);
    assert_eq!(prod[1].recovered_by.as_ref().map(|x| x.at), Some(prod[2].end));
    let e = env_truth(&w, PRODUCTION);
    assert_eq!(e.running.as_ref().and_then(|x| x.newest_commit.clone()), Some(shas["a"].clone()));
    assert_eq!(e.behind, [shas["b"].clone()], "b counts as behind again");
    assert_eq!((e.deployments, e.rollbacks, e.failed_deployments.get("rolled_back")), (3, 1, Some(&1)));
    // b's first deployment stays in the lead-time history.
    assert_eq!(e.lead_time_seconds.len(), 2);
}

#[test]
fn without_pinning_the_version_a_gate_moved_back_only_fails_the_get() {
    // The same rollback without `fly pin-resource`: cepler re-emits the old trigger, which
    // Concourse already has (it keeps its old place), the triggered build takes the newest
    // version and cepler's `in` refuses it ("Trigger is out of sync"): the build errors.
    let text = std::fs::read_to_string(scenario_path("prod-rollback.yaml")).unwrap();
    let text = text.replace("  - at: 6h2m\n    pin_version: galoy-production/lana-bank-production\n", "");
    assert!(!text.contains("pin_version"));
    let sc = Scenario::parse(&text, "rollback-without-pin").unwrap();
    let (w, r) = sc.run(START);
    let shas = r.shas(&w);
    let prod: Vec<_> = deps(&w, PRODUCTION).into_iter().filter(|d| d.end > START).collect();
    assert_eq!(prod.len(), 2, "the errored build prepared nothing: {prod:?}");
    let e = env_truth(&w, PRODUCTION);
    assert_eq!(e.running.and_then(|x| x.newest_commit), Some(shas["b"].clone()), "b still runs");
    let (p, j) = w.job_index("galoy-production", "galoy-production-lana-bank").unwrap();
    let last = *w.concourse.pipelines[p].jobs[j].builds.last().unwrap();
    assert_eq!(w.concourse.build(last).unwrap().status.as_str(), "errored");
}

#[test]
fn a_revert_fails_the_deployment_of_what_it_reverts_within_the_window() {
    let (w, r) = run("revert-a-day-later.yaml");
    let shas = r.shas(&w);
    assert!(
        w.repo("GaloyMoney/lana-bank").unwrap().commits[&shas["r"]]
            .message
            .ends_with(&format!("This reverts commit {}.", shas["a"]))
    );
    let prod: Vec<_> = deps(&w, PRODUCTION).into_iter().filter(|d| d.end > START).collect();
    assert_eq!(prod.len(), 2);
    let f = prod[0].failed.as_ref().unwrap();
    assert_eq!(
        (f.reason, f.by.build.id, f.by.commits.clone()),
        ("reverted", prod[1].build.id, vec![shas["r"].clone()])
    );
    assert!(prod[1].rework && !prod[0].rework);
    assert_eq!(prod[0].recovered_by.as_ref().map(|x| x.at - prod[0].end), Some(prod[1].end - prod[0].end));
    assert!(prod[1].end - prod[0].end < DAY);
    // With a 12 h window the revert came too late to count.
    let narrow = w.deployment_truth(12 * 3600).remove(PRODUCTION).unwrap();
    assert!(narrow.iter().all(|d| d.failed.is_none()));
}

#[test]
fn a_hotfix_fails_the_deployment_it_fixes_and_is_rework() {
    let (w, r) = run("hotfix-pr.yaml");
    let shas = r.shas(&w);
    let h = &w.repo("GaloyMoney/lana-bank").unwrap().commits[&shas["h"]];
    assert_eq!(h.subject(), "fix: credit facility rounding (#4301)");
    let prod: Vec<_> = deps(&w, PRODUCTION).into_iter().filter(|d| d.end > START).collect();
    assert_eq!(
        prod.iter().map(|d| d.commits.clone()).collect::<Vec<_>>(),
        [vec![shas["a"].clone()], vec![shas["h"].clone()]]
    );
    let f = prod[0].failed.as_ref().unwrap();
    assert_eq!((f.reason, f.by.build.id), ("hotfixed", prod[1].build.id));
    assert!(prod[1].rework);
    let e = env_truth(&w, PRODUCTION);
    assert_eq!((e.deployments, e.rework_deployments, e.attempts_failure), (2 + warmup(&w, PRODUCTION), 1, 0));
    assert_eq!(e.change_fail_rate, Some(1.0 / e.deployments as f64));
    assert_eq!(e.recovery_seconds, [prod[1].end - prod[0].end]);
}

/// Deployments the warm-up day made (before the scenario starts) that changed what runs.
fn warmup(w: &World, env: &str) -> usize {
    deps(w, env).iter().filter(|d| d.end < START && d.result == "success" && d.kind != "redeploy").count()
}

#[test]
fn failure_windows_parse() {
    use deploy_journey::sim::deployments::parse_window;
    let check = |input: Option<&str>, expect: Result<i64, ()>| {
        assert_eq!(parse_window(input).map_err(|_| ()), expect, "{input:?}");
    };
    check(None, Ok(DAY));
    check(Some("12h"), Ok(12 * 3600));
    check(Some("90"), Ok(90));
    check(Some("soon"), Err(()));
}

#[tokio::test]
async fn the_truth_endpoint_lists_deployments_newest_first() {
    use deploy_journey::sim::Sim;
    use deploy_journey::sim::clock::{ClockMode, SimClock};
    crate::support::init_crypto();
    let (w, r) = run("hotfix-pr.yaml");
    let shas = r.shas(&w);
    let want = deps(&w, PRODUCTION);
    let sim = Sim::new(w, SimClock::new(r.end, ClockMode::Stepped));
    let (listener, url) = deploy_journey::sim::server::bind(sim.clone(), "127.0.0.1:0").await.unwrap();
    let task = tokio::spawn(async move {
        let _ = deploy_journey::sim::server::serve(sim, listener).await;
    });
    let get = |q: &str| reqwest::get(format!("{url}{q}"));
    let body: serde_json::Value =
        get(&format!("/_sim/deployments?environment={PRODUCTION}")).await.unwrap().json().await.unwrap();
    let rows = body.as_array().unwrap();
    assert_eq!(rows.len(), want.len());
    let ends: Vec<i64> = rows.iter().map(|d| d["end"].as_i64().unwrap()).collect();
    assert!(ends.windows(2).all(|w| w[0] >= w[1]), "newest first: {ends:?}");
    let newest = &rows[0];
    assert_eq!(newest["commits"], serde_json::json!([shas["h"]]));
    assert_eq!((newest["kind"].as_str(), newest["rework"].as_bool()), (Some("forward"), Some(true)));
    assert_eq!(rows[1]["failed"]["reason"], "hotfixed");
    assert_eq!(rows[1]["failed"]["by"]["build"]["id"], newest["build"]["id"]);
    assert_eq!(rows[1]["recovered_by"]["at"], newest["end"]);
    assert_eq!(rows[1]["lead_times"][&shas["a"]], serde_json::json!(want[want.len() - 2].lead_times[&shas["a"]]));
    let envs: serde_json::Value = get("/_sim/environments").await.unwrap().json().await.unwrap();
    let names: Vec<&str> = envs.as_array().unwrap().iter().map(|e| e["environment"].as_str().unwrap()).collect();
    assert_eq!(names, [STAGING, QA, PRODUCTION]);
    assert_eq!(envs[2]["failed_deployments"]["hotfixed"], 1);
    assert_eq!(get("/_sim/deployments?environment=nowhere").await.unwrap().status(), 404);
    assert_eq!(get("/_sim/deployments?failure_window=soon").await.unwrap().status(), 400);
    task.abort();
}

#[test]
fn a_cepler_environment_passed_from_nowhere_is_refused() {
    use deploy_journey::sim::topology::Topology;
    let text = deploy_journey::sim::topology::LANA.replace("passed: gcp-galoy-staging", "passed: gcp-galoy-stagin");
    let err = Topology::parse(&text, "lana-typo").unwrap_err().to_string();
    assert_eq!(
        err,
        "topology lana-typo: pipelines.galoy-qa.resources.lana-bank-qa.passed: no cepler resource deploys environment \"gcp-galoy-stagin\""
    );
    assert!(Topology::parse(deploy_journey::sim::topology::LANA, "lana").is_ok());
}
