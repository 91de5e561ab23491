//! Issue 17 end to end: the scenarios run in the simulator, the real source clients poll it, the
//! core derives journeys with `examples/lana.yaml` (staging → qa → production), and what the
//! exporter says about each environment is compared with the simulator's deployment truth
//! (`sim::deployments`, from what cepler prepared and recorded).

use deploy_journey::core::journey::StageState;
use deploy_journey::sim::deployments::DeploymentTruth;

use crate::journeys::{Run, check_against_truth, run_scenario};
use crate::sim_cepler::{PRODUCTION, QA, STAGING};
use crate::support::START;

const DAY: i64 = 86_400;
/// The exporter's environment names (examples/lana.yaml) and cepler's.
const ENVS: [(&str, &str); 3] = [("staging", STAGING), ("qa", QA), ("production", PRODUCTION)];

fn truth(r: &Run, env: &str) -> Vec<DeploymentTruth> {
    r.sim.with_world(|w| w.deployment_truth(DAY).remove(env).unwrap_or_default())
}

/// The end of the first successful deployment in `env` that brought `sha`.
fn first_deployed(r: &Run, env: &str, sha: &str) -> Option<i64> {
    truth(r, env).into_iter().find(|d| d.result == "success" && d.commits.iter().any(|c| c == sha)).map(|d| d.end)
}

/// Every commit's deployment time in every environment is the truth's, and every stage's
/// builds are the ones that carried it.
fn check_environments(r: &Run) {
    check_against_truth(r);
    for j in &r.derived.journeys {
        if j.commit_time < START {
            continue;
        }
        for (name, cepler) in ENVS {
            assert_eq!(
                j.deployed_at.get(name).copied(),
                first_deployed(r, cepler, &j.sha),
                "{} {:?}: deployed to {name}",
                j.short(),
                j.subject
            );
        }
    }
}

#[tokio::test]
async fn a_commit_reaches_production_after_a_failed_deploy_and_its_retry() {
    let r = run_scenario("prod-deploy-fails-then-retry.yaml", "lana").await;
    check_environments(&r);
    let a = r.journey("a");
    let prod = truth(&r, PRODUCTION);
    let failed: Vec<_> = prod.iter().filter(|d| d.result == "failure" && d.end > START).collect();
    assert_eq!(failed.len(), 1, "one failed production deploy");
    let ok = prod.iter().find(|d| d.result == "success" && d.commits.contains(&a.sha)).expect("a in production");
    assert!(ok.start > failed[0].end, "the retry deployed a after the failure");
    assert_eq!(a.deployed_at.get("production"), Some(&ok.end));
    let stage = a.stages.iter().find(|s| s.name == "production").unwrap();
    assert_eq!(stage.state, StageState::Succeeded);
    assert_eq!(stage.attempts.len(), 2, "the failed attempt and the retry: {:?}", stage.attempts);
}

#[tokio::test]
async fn qa_takes_stagings_states_in_order() {
    let r = run_scenario("qa-walks-staging-states.yaml", "lana").await;
    check_environments(&r);
    let order =
        |env: &str| -> Vec<i64> { ["a", "b", "c"].iter().map(|id| r.journey(id).deployed_at[env]).collect::<Vec<_>>() };
    let qa = order("qa");
    assert!(qa[0] < qa[1] && qa[1] < qa[2], "QA deployed a, b, c one by one: {qa:?}");
    let staging = order("staging");
    assert!(staging[2] < qa[0], "staging had recorded all three before QA's first deploy ended");
    // Production's gate stays shut: nothing reached it and nothing ran there.
    for id in ["a", "b", "c"] {
        assert_eq!(r.journey(id).deployed_at.get("production"), None);
    }
    assert!(truth(&r, PRODUCTION).iter().all(|d| d.end < START));
}
