//! The simulator's Concourse semantics, checked on the world directly (no HTTP).

use std::collections::{BTreeMap, BTreeSet};

use deploy_journey::sim::engine::{Action, BuildOverride, CommitSpec, World};
use deploy_journey::sim::model::{BuildStatus, Person};
use deploy_journey::sim::topology::Topology;

use crate::support::START;

const LANA: &str = "GaloyMoney/lana-bank";

fn person() -> Person {
    Person { name: "Alice Doe".into(), email: "alice@example.com".into(), login: Some("alice".into()) }
}

/// A lana world with no randomness: medians for durations, no random failures or flakes.
fn quiet_world(seed: u64) -> World {
    let mut t = Topology::builtin("lana").unwrap();
    for p in &mut t.pipelines {
        for j in &mut p.jobs {
            j.duration.p90 = Some(j.duration.median);
            j.failure_rate = 0.0;
            j.error_rate = 0.0;
            j.task.flaky_rate = 0.0;
        }
    }
    World::new(t, START, seed)
}

fn commit_at(w: &mut World, at: i64, files: &[&str], msg: &str) {
    w.schedule_action(
        at,
        Action::Commit {
            repo: LANA.into(),
            branch: "main".into(),
            spec: CommitSpec {
                message: msg.into(),
                files: files.iter().map(|s| s.to_string()).collect(),
                author: person(),
                author_date: None,
            },
        },
    );
}

fn head(w: &World) -> String {
    w.repo(LANA).unwrap().head("main").unwrap().clone()
}

/// Builds of `job` started at or after START: (name, status, input refs by step name).
fn builds(w: &World, pipeline: &str, job: &str) -> Vec<(String, BuildStatus, BTreeMap<String, String>)> {
    let (p, j) = w.job_index(pipeline, job).unwrap();
    w.concourse.pipelines[p].jobs[j]
        .builds
        .iter()
        .map(|id| w.concourse.build(*id).unwrap())
        .filter(|b| b.create_time >= START)
        .map(|b| {
            let ins = b
                .inputs
                .iter()
                .map(|i| {
                    let v = &w.concourse.version(i.version).unwrap().version;
                    (i.name.clone(), v.values().next().cloned().unwrap_or_default())
                })
                .collect();
            (b.name.clone(), b.status, ins)
        })
        .collect()
}

#[test]
fn commits_landing_while_a_serial_test_job_runs_produce_one_build_on_the_newest() {
    let mut w = quiet_world(1);
    commit_at(&mut w, START, &["core/a.rs"], "feat: a");
    w.advance_to(START + 60);
    let a = head(&w);
    // test-integration (12 min) is running on `a`; b and c land meanwhile.
    commit_at(&mut w, START + 120, &["core/b.rs"], "feat: b");
    w.advance_to(START + 120);
    let b = head(&w);
    commit_at(&mut w, START + 240, &["core/c.rs"], "feat: c");
    w.advance_to(START + 3 * 3600);
    let c = head(&w);
    let got = builds(&w, "lana-bank", "test-integration");
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].2["repo"], a);
    assert_eq!(got[1].2["repo"], c, "the second build takes the newest version, skipping b");
    // b is a version of `repo` (check walks every commit) but no build took it as input...
    let (p, _) = w.job_index("lana-bank", "test-integration").unwrap();
    let repo_r = w.concourse.pipelines[p].resource_by_name("repo").unwrap();
    let refs: BTreeSet<String> = w.concourse.pipelines[p].resources[repo_r]
        .versions
        .iter()
        .map(|v| w.concourse.version(*v).unwrap().version["ref"].clone())
        .collect();
    assert!(refs.contains(&b));
    // ...and ground truth credits it to the build that carried c.
    let (_, j) = w.job_index("lana-bank", "test-integration").unwrap();
    let carried: Vec<_> = w.builds_containing(&b).into_iter().filter(|(pp, jj, _)| *pp == p && *jj == j).collect();
    assert_eq!(carried.len(), 1);
    assert_eq!(
        w.concourse.build(carried[0].2).unwrap().inputs[0].version,
        w.concourse.pipelines[p].resources[repo_r]
            .versions
            .iter()
            .copied()
            .find(|v| w.concourse.version(*v).unwrap().version["ref"] == c)
            .unwrap()
    );
}

#[test]
fn build_rc_waits_for_a_version_that_passed_all_three_test_jobs() {
    let mut w = quiet_world(2);
    w.schedule_action(
        START,
        Action::Override {
            pipeline: "lana-bank".into(),
            job: "test-bats".into(),
            ov: BuildOverride { result: Some(BuildStatus::Failed), ..Default::default() },
        },
    );
    commit_at(&mut w, START + 10, &["core/a.rs"], "feat: a");
    w.advance_to(START + 2 * 3600);
    let a = head(&w);
    assert!(
        builds(&w, "lana-bank", "build-rc").iter().all(|b| b.2.get("repo") != Some(&a)),
        "build-rc must not run on a commit whose test-bats failed"
    );
    // A fixing commit passes all three and gets its release candidate.
    commit_at(&mut w, START + 2 * 3600, &["core/fix.rs"], "fix: a");
    w.advance_to(START + 4 * 3600);
    let fix = head(&w);
    let rc = builds(&w, "lana-bank", "build-rc");
    let last = rc.last().unwrap();
    assert_eq!(last.1, BuildStatus::Succeeded);
    // build-rc puts a tag onto `repo`: Concourse drops that input from /resources, but the
    // model's adopted inputs still hold it.
    assert_eq!(last.2["repo"], fix);
    assert!(w.tracked_repo().tags.values().any(|s| *s == fix), "build-rc tags the tested commit");
}

#[test]
fn ci_skip_and_filtered_commits_never_become_repo_versions() {
    let mut w = quiet_world(3);
    commit_at(&mut w, START, &["core/a.rs"], "chore: release 1.0 [ci skip]");
    commit_at(&mut w, START + 60, &["ci/tasks/x.sh"], "ci: tweak task");
    commit_at(&mut w, START + 120, &["apps/shared-web/x.ts"], "fix: shared web");
    w.advance_to(START + 3600);
    let (p, _) = w.job_index("lana-bank", "test-integration").unwrap();
    let repo_r = w.concourse.pipelines[p].resource_by_name("repo").unwrap();
    let created_after_start = w.concourse.pipelines[p].resources[repo_r]
        .versions
        .iter()
        .filter(|v| w.concourse.version(**v).unwrap().created_at >= START)
        .count();
    assert_eq!(created_after_start, 0);
    assert!(builds(&w, "lana-bank", "test-integration").is_empty());
}

#[test]
fn a_failed_first_attempt_is_retried_inside_the_build() {
    let mut w = quiet_world(4);
    w.schedule_action(
        START,
        Action::Override {
            pipeline: "lana-bank".into(),
            job: "test-bats".into(),
            ov: BuildOverride { fail_first_attempt: true, ..Default::default() },
        },
    );
    commit_at(&mut w, START + 10, &["core/a.rs"], "feat: a");
    w.advance_to(START + 3600);
    let (p, j) = w.job_index("lana-bank", "test-bats").unwrap();
    let b = w.concourse.build(*w.concourse.pipelines[p].jobs[j].builds.last().unwrap()).unwrap();
    assert_eq!(b.status, BuildStatus::Succeeded);
    let plan = b.plan.as_ref().unwrap();
    assert_eq!(plan.attempts.len(), 2);
    assert_eq!(b.end_time.unwrap() - b.start_time.unwrap(), plan.duration());
    assert!(b.log.iter().any(|l| l.payload.contains("attempt 1 of 2") && l.payload.contains("FAIL")));
}

#[test]
fn reruns_are_named_n_dot_m_and_copy_the_original_inputs() {
    let mut w = quiet_world(5);
    w.schedule_action(
        START,
        Action::Override {
            pipeline: "lana-bank".into(),
            job: "test-bats".into(),
            ov: BuildOverride { result: Some(BuildStatus::Failed), ..Default::default() },
        },
    );
    commit_at(&mut w, START + 10, &["core/a.rs"], "feat: a");
    w.advance_to(START + 3600);
    w.schedule_action(
        START + 3600,
        Action::Rerun { pipeline: "lana-bank".into(), job: "test-bats".into(), build_name: None, by: "alice".into() },
    );
    w.advance_to(START + 2 * 3600);
    let (p, j) = w.job_index("lana-bank", "test-bats").unwrap();
    let ids = &w.concourse.pipelines[p].jobs[j].builds;
    let rerun = w.concourse.build(*ids.last().unwrap()).unwrap();
    let orig = w.concourse.build(rerun.rerun_of.unwrap()).unwrap();
    assert_eq!(rerun.name, format!("{}.1", orig.name));
    assert_eq!(rerun.created_by.as_deref(), Some("alice"));
    assert_eq!(rerun.status, BuildStatus::Succeeded);
    assert_eq!(
        rerun.inputs.iter().map(|i| i.version).collect::<Vec<_>>(),
        orig.inputs.iter().map(|i| i.version).collect::<Vec<_>>()
    );
    assert!(rerun.inputs.iter().all(|i| !i.first_occurrence));
    // The green rerun lets the commit move on to build-rc.
    let a = w.concourse.version(orig.inputs[0].version).unwrap().version["ref"].clone();
    assert!(builds(&w, "lana-bank", "build-rc").iter().any(|b| b.2.get("repo") == Some(&a)));
}

#[test]
fn the_chart_commit_carries_the_digest_build_rc_put_and_staging_deploys_it() {
    let mut w = quiet_world(6);
    commit_at(&mut w, START, &["core/a.rs"], "feat: a");
    w.advance_to(START + 5 * 3600);
    let a = head(&w);
    let (p, j) = w.job_index("lana-bank", "build-rc").unwrap();
    let rc = w.concourse.pipelines[p].jobs[j]
        .builds
        .iter()
        .map(|id| w.concourse.build(*id).unwrap())
        .find(|b| w.build_contains(b.id, &a))
        .expect("an RC carries a");
    let img_r = w.concourse.pipelines[p].resource_by_name("latest-image").unwrap();
    let digest = rc
        .outputs
        .iter()
        .find(|o| o.resource == img_r)
        .map(|o| w.concourse.version(o.version).unwrap().version["digest"].clone())
        .unwrap();
    let (tp, tj) = w.job_index("private-charts", "lana-bank-testflight").unwrap();
    let tf = w.concourse.pipelines[tp].jobs[tj]
        .builds
        .iter()
        .map(|id| w.concourse.build(*id).unwrap())
        .find(|b| w.build_contains(b.id, &a))
        .expect("a testflight carries a");
    let chart_v = w.concourse.version(tf.inputs[0].version).unwrap();
    let msg = &chart_v.metadata.iter().find(|(k, _)| k == "message").unwrap().1;
    assert!(msg.contains(&digest), "chart commit message {msg:?} carries {digest}");
    assert!(chart_v.metadata_visible, "a get makes metadata visible");
    let (sp, sj) = w.job_index("galoy-staging", "galoy-staging-lana-bank").unwrap();
    let staged = w.concourse.pipelines[sp].jobs[sj]
        .builds
        .iter()
        .map(|id| w.concourse.build(*id).unwrap())
        .find(|b| w.build_contains(b.id, &a))
        .expect("staging carries a");
    assert_eq!(staged.status, BuildStatus::Succeeded);
    assert!(staged.start_time.unwrap() >= tf.end_time.unwrap());
}

/// Same seed and actions, advanced in different step patterns: the same world.
#[test]
fn the_world_is_deterministic_however_time_is_stepped() {
    let run = |steps: &[i64]| {
        let mut w = World::new(Topology::builtin("lana").unwrap(), START, 42);
        for k in 0..12 {
            commit_at(
                &mut w,
                START + k * 700,
                &[["core/a.rs", "apps/admin-panel/x.ts", "dagster/d.py"][k as usize % 3]],
                &format!("feat: {k}"),
            );
        }
        let mut t = START;
        for s in steps.iter().cycle() {
            t += s;
            w.advance_to(t);
            if t > START + 12 * 3600 {
                break;
            }
        }
        w.advance_to(START + 12 * 3600 + 7);
        w.concourse
            .builds
            .iter()
            .map(|b| {
                (
                    b.id,
                    b.name.clone(),
                    b.status,
                    b.start_time,
                    b.end_time,
                    b.inputs.iter().map(|i| i.version).collect::<Vec<_>>(),
                )
            })
            .collect::<Vec<_>>()
    };
    let a = run(&[1]);
    let b = run(&[3600]);
    let c = run(&[17, 900, 3]);
    assert!(a.len() > 30, "{}", a.len());
    assert_eq!(a, b);
    assert_eq!(a, c);
}

/// The 2178 real commits of lana-bank's main, replayed through the simulated git resources,
/// become exactly the versions real `git rev-list` and the git resource would create.
#[test]
fn replaying_real_lana_history_creates_the_versions_real_git_would() {
    #[derive(serde::Deserialize)]
    struct Line {
        subject: String,
        ci_skip: bool,
        files: Vec<String>,
        pathspec_match: BTreeMap<String, bool>,
    }
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/lana-bank-main.jsonl")).unwrap();
    let lines: Vec<Line> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2178);
    let mut w = quiet_world(7);
    // Several commits per minute, so checks see batches, as with a busy main.
    for (k, l) in lines.iter().enumerate() {
        commit_at(
            &mut w,
            START + (k as i64 / 3) * 60,
            &l.files.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            &l.subject,
        );
    }
    w.advance_to(START + (lines.len() as i64 / 3) * 60 + 600);
    let shas: Vec<String> =
        w.repo(LANA).unwrap().branches["main"].iter().rev().take(lines.len()).rev().cloned().collect();
    let (p, _) = w.job_index("lana-bank", "build-rc").unwrap();
    let mut mismatches = vec![];
    for res in ["repo", "admin-panel-src", "customer-portal-src", "dagster-src"] {
        let r = w.concourse.pipelines[p].resource_by_name(res).unwrap();
        let got: BTreeSet<String> = w.concourse.pipelines[p].resources[r]
            .versions
            .iter()
            .map(|v| w.concourse.version(*v).unwrap())
            .filter(|v| v.created_at >= START)
            .map(|v| v.version["ref"].clone())
            .collect();
        for (l, sha) in lines.iter().zip(&shas) {
            let want = l.pathspec_match[res] && !l.ci_skip;
            if want != got.contains(sha) {
                mismatches.push(format!("{res}: {:?} want {want}", l.subject));
            }
        }
        let want_n = lines.iter().filter(|l| l.pathspec_match[res] && !l.ci_skip).count();
        assert_eq!(got.len(), want_n, "{res}: versions created");
    }
    assert!(mismatches.is_empty(), "{} mismatches:\n{}", mismatches.len(), mismatches.join("\n"));
}
