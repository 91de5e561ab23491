//! The journey core against the simulator's omniscient ground truth: the facts the APIs would
//! expose are derived from a simulated world, and every attribution the core makes must equal
//! the builds that really carried each commit.

use std::collections::{BTreeMap, BTreeSet};

use deploy_journey::core::classify::{Classifier, SourceKind, TrackedResource};
use deploy_journey::core::journey::*;
use deploy_journey::core::pathspec::GitPathFilter;
use deploy_journey::sim::engine::World;
use deploy_journey::sim::model::BuildStatus as SimStatus;
pub use deploy_journey::sim::observe::facts_from_world;
use deploy_journey::sim::topology::{ResourceSpec, Topology};

/// The lana stages, as examples/lana.yaml describes them.
pub fn lana_core(topology: &Topology) -> CoreConfig {
    let mut resources = vec![];
    let lana = &topology.pipelines[0];
    for (name, kind) in [
        ("repo", SourceKind::Backend),
        ("admin-panel-src", SourceKind::Frontend),
        ("customer-portal-src", SourceKind::Frontend),
        ("dagster-src", SourceKind::Dagster),
    ] {
        let ResourceSpec::Git { paths, ignore_paths, disable_ci_skip, .. } = &lana.resources[name] else { panic!() };
        resources.push(TrackedResource {
            name: name.into(),
            filter: GitPathFilter::new(paths, ignore_paths).unwrap(),
            disable_ci_skip: *disable_ci_skip,
            kind,
        });
    }
    let all: Vec<String> = resources.iter().map(|r| r.name.clone()).collect();
    let job = |n: &str, git: &[String]| JobDef { name: n.into(), git: git.to_vec() };
    let stage = |name: &str, pipeline: &str, jobs: Vec<JobDef>, after: Vec<usize>| StageDef {
        name: name.into(),
        pipeline: pipeline.into(),
        jobs,
        after,
        inputs: None,
        bridges: vec![],
        fallback_git_input: None,
        environment: None,
        stuck_after: None,
        carries_passive: true,
        approval: false,
    };
    let repo = vec!["repo".to_string()];
    let mut tests = stage(
        "tests",
        "lana-bank",
        vec![job("test-integration", &repo), job("test-bats", &repo), job("flake-check", &repo)],
        vec![],
    );
    tests.stuck_after = Some(1800);
    let mut edge = stage(
        "edge-images",
        "lana-bank",
        vec![
            job("build-admin-panel-edge-image", &["admin-panel-src".into()]),
            job("build-customer-portal-edge-image", &["customer-portal-src".into()]),
            job("build-dagster-edge-image", &["dagster-src".into()]),
        ],
        vec![],
    );
    edge.carries_passive = false;
    let mut rc = stage("build-rc", "lana-bank", vec![job("build-rc", &all)], vec![0, 1]);
    rc.inputs =
        Some(vec!["repo".into(), "dagster-edge-image".into(), "admin-panel-src".into(), "customer-portal-src".into()]);
    let mut chart = stage("chart-bump", "lana-bank", vec![job("bump-image-in-chart-rc", &all)], vec![2]);
    chart.inputs = Some(vec!["repo".into(), "latest-image".into(), "dagster-edge-image".into()]);
    let mut tf = stage("testflight", "private-charts", vec![job("lana-bank-testflight", &all)], vec![3]);
    tf.bridges = vec![Bridge::MessageContains {
        input: "lana-bank-chart".into(),
        output: "latest-image".into(),
        key: "digest".into(),
    }];
    tf.stuck_after = Some(1200);
    let dep = stage("deployments-bump", "private-charts", vec![job("bump-lana-bank-in-deployments", &all)], vec![4]);
    let mut staging = stage("staging", "galoy-staging", vec![job("galoy-staging-lana-bank", &all)], vec![5]);
    staging.inputs = Some(vec!["lana-bank-staging".into()]);
    staging.bridges = vec![Bridge::Equals {
        input: "lana-bank-staging".into(),
        input_key: "trigger".into(),
        output: "galoy-deployments".into(),
        key: "ref".into(),
    }];
    staging.fallback_git_input = Some("lana-repo".into());
    staging.environment = Some("staging".into());
    staging.stuck_after = Some(1500);
    // QA and production: cepler's get names the bump commit each deploy carries (issue 17).
    let env_stage = |name: &str, pipeline: &str, job_name: &str, input: &str, after: usize| {
        let mut s = stage(name, pipeline, vec![job(job_name, &all)], vec![after]);
        s.inputs = Some(vec![input.into()]);
        s.bridges = vec![Bridge::MessageContains {
            input: input.into(),
            output: "galoy-deployments".into(),
            key: "ref".into(),
        }];
        s.environment = Some(name.into());
        s.stuck_after = Some(1500);
        s
    };
    let qa = env_stage("qa", "galoy-qa", "galoy-qa-lana-bank", "lana-bank-qa", 6);
    let mut production =
        env_stage("production", "galoy-production", "galoy-production-lana-bank", "lana-bank-production", 7);
    // A human gate (cepler-gates) releases production.
    production.approval = true;
    CoreConfig {
        classifier: Classifier::new(resources),
        stages: vec![tests, edge, rc, chart, tf, dep, staging, qa, production],
        lead_time_from: LeadTimeFrom::CommitterDate,
        not_picked_up_after: 300,
        step_resources: BTreeMap::new(),
        dora: Default::default(),
        journey_ends_at: None,
    }
}

/// For each commit and each expected job of each stage: the builds the core attributes must be
/// the builds that carried the commit, up to the first success (ground truth).
pub fn mismatches(w: &World, cfg: &CoreConfig, derived: &Derived) -> Vec<String> {
    let mut out = vec![];
    for j in &derived.journeys {
        let truth = w.builds_containing(&j.sha);
        for (st, sj) in cfg.stages.iter().zip(&j.stages) {
            for job in &sj.expected_jobs {
                let mut want: Vec<i64> = vec![];
                for (p, jj, id) in &truth {
                    let pl = &w.concourse.pipelines[*p];
                    if pl.name != st.pipeline || &pl.jobs[*jj].name != job {
                        continue;
                    }
                    want.push(*id);
                    if w.concourse.build(*id).unwrap().status == SimStatus::Succeeded {
                        break;
                    }
                }
                let got: Vec<i64> = sj.attempts.iter().filter(|a| *a.job == **job).map(|a| a.build_id).collect();
                let (g, t): (BTreeSet<_>, BTreeSet<_>) = (got.iter().collect(), want.iter().collect());
                if g != t {
                    out.push(format!(
                        "{} {:?} {}/{}: core {got:?} truth {want:?}",
                        &j.sha[..7],
                        j.classification.change_type,
                        st.name,
                        job
                    ));
                }
            }
        }
    }
    out
}

#[test]
fn core_attribution_equals_ground_truth_on_random_lana_weeks() {
    for seed in [11, 12, 13] {
        check_week("lana", seed);
    }
}

#[test]
fn core_attribution_equals_ground_truth_on_the_two_repo_layout() {
    check_week("lana-two-repos", 21);
}

fn check_week(topology: &str, seed: u64) {
    use deploy_journey::sim::workload::LanaWorkload;
    let start = crate::support::START;
    let topo = Topology::builtin(topology).unwrap();
    let mut w = World::new(topo.clone(), start, seed);
    for (at, a) in LanaWorkload::new(seed).generate(start, start + 7 * 86_400) {
        w.schedule_action(at, a);
    }
    w.advance_to(start + 7 * 86_400 + 6 * 3600);
    let facts = facts_from_world(&w);
    let cfg = if topology == "lana" { lana_core(&topo) } else { lana_two_repos_core(&topo) };
    let d = derive(&facts, &cfg, w.now);
    let bad = mismatches(&w, &cfg, &d);
    let n = d.journeys.len();
    let deployed = d.journeys.iter().filter(|j| j.deployed_at.contains_key("staging")).count();
    println!(
        "{topology} seed {seed}: {n} journeys, {deployed} ended, attributions {:?}, gaps {:?}",
        d.quality.attributions, d.quality.gaps
    );
    assert!(
        bad.is_empty(),
        "{} mismatches of {n} journeys:\n{}",
        bad.len(),
        bad.iter().take(40).cloned().collect::<Vec<_>>().join("\n")
    );
    assert!(deployed * 10 > n * 7, "most commits of a week reach staging: {deployed}/{n}");
}

/// The lana-two-repos stages: testflight inside lana-bank, deployments bumped by digest.
pub fn lana_two_repos_core(topology: &Topology) -> CoreConfig {
    let mut cfg = lana_core(topology);
    let all: Vec<String> = cfg.classifier.resources().iter().map(|r| r.name.clone()).collect();
    let mut stages: Vec<StageDef> = cfg.stages.drain(..3).collect();
    let mk = |name: &str, pipeline: &str, job: &str, after: usize| StageDef {
        name: name.into(),
        pipeline: pipeline.into(),
        jobs: vec![JobDef { name: job.into(), git: all.clone() }],
        after: vec![after],
        inputs: None,
        bridges: vec![],
        fallback_git_input: None,
        environment: None,
        stuck_after: None,
        carries_passive: true,
        approval: false,
    };
    let mut tf = mk("testflight", "lana-bank", "testflight", 2);
    tf.inputs = Some(vec!["repo".into(), "latest-image".into()]);
    let mut dep = mk("deployments-bump", "lana-bank", "bump-deployments", 3);
    dep.inputs = Some(vec!["repo".into(), "latest-image".into()]);
    let mut staging = mk("staging", "galoy-staging", "galoy-staging-lana-bank", 4);
    staging.inputs = Some(vec!["lana-bank-staging".into()]);
    staging.bridges = vec![Bridge::Equals {
        input: "lana-bank-staging".into(),
        input_key: "trigger".into(),
        output: "deployments".into(),
        key: "ref".into(),
    }];
    staging.fallback_git_input = Some("lana-repo".into());
    staging.environment = Some("staging".into());
    stages.extend([tf, dep, staging]);
    cfg.stages = stages;
    cfg
}

/// The same facts in any order, applied twice, with stale intermediate states of builds mixed
/// in, derive the same journeys.
#[test]
fn derivation_is_order_independent_and_idempotent() {
    use deploy_journey::sim::workload::LanaWorkload;
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};
    let start = crate::support::START;
    let topo = Topology::builtin("lana").unwrap();
    let mut w = World::new(topo.clone(), start, 5);
    for (at, a) in LanaWorkload::new(5).generate(start, start + 3 * 86_400) {
        w.schedule_action(at, a);
    }
    w.advance_to(start + 3 * 86_400 + 3600);
    let cfg = lana_core(&topo);
    let facts = facts_from_world(&w);
    let reference = derive(&facts, &cfg, w.now);
    let mut all: Vec<Fact> = facts.commits.values().cloned().map(Fact::Commit).collect();
    for b in facts.builds.values() {
        all.push(Fact::Build(b.clone()));
        // What an earlier poll saw: the same build pending without resources, or started.
        all.push(Fact::Build(BuildFact {
            status: BuildStatus::Pending,
            start: None,
            end: None,
            inputs: vec![],
            outputs: vec![],
            resources_known: false,
            ..b.clone()
        }));
        if b.status.is_finished() {
            all.push(Fact::Build(BuildFact { status: BuildStatus::Started, end: None, outputs: vec![], ..b.clone() }));
        }
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    for round in 0..4 {
        let mut shuffled = all.clone();
        shuffled.shuffle(&mut rng);
        let dup = rng.random_range(0..shuffled.len());
        shuffled.extend(shuffled[..dup].to_vec());
        let mut f = Facts::default();
        for x in shuffled {
            f.apply(x);
        }
        let d = derive(&f, &cfg, w.now);
        assert_eq!(d.journeys.len(), reference.journeys.len(), "round {round}");
        for (a, b) in d.journeys.iter().zip(&reference.journeys) {
            assert!(a == b, "round {round}: journey {} differs:\n got  {a:?}\n want {b:?}", a.short());
        }
        assert_eq!(d.quality, reference.quality, "round {round}");
    }
}
