//! Issue 18, the pre-merge segment: each commit's pull request (or direct push) read through
//! the real GitHub source from the simulator, compared with the simulator's model, and what
//! reading it costs.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use deploy_journey::app::origin_candidates;
use deploy_journey::core::journey::{Fact, Facts};
use deploy_journey::core::premerge::{JobConclusion, JobState, Origin};
use deploy_journey::sim::Sim;
use deploy_journey::sim::clock::{ClockMode, SimClock};
use deploy_journey::sim::github_api::{job_id, job_name, workflow_runs};
use deploy_journey::sim::workload::Scenario;
use deploy_journey::sources::github::{GithubSource, ORIGIN_REQUESTS, origin_requests};
use deploy_journey::sources::telemetry::SourceTelemetry;

use crate::journeys::{example_config, run_scenario};
use crate::support::{START, init_crypto};

#[tokio::test]
async fn a_hotfix_prs_moments_and_labels_are_read_and_a_direct_push_is_direct() {
    let r = run_scenario("hotfix-pr.yaml", "lana").await;
    let a = r.journey("a");
    let h = r.journey("h");
    assert_eq!(a.origin, Some(Origin::Direct), "a was pushed straight to main");
    let Some(Origin::Pull(p)) = &h.origin else { panic!("h came from PR 4301: {:?}", h.origin) };
    let model = r.sim.with_world(|w| {
        let repo = w.github.values().find(|rp| rp.pull(4301).is_some()).expect("the hotfix PR");
        repo.pull(4301).cloned().unwrap()
    });
    assert_eq!(p.number, 4301);
    assert_eq!(p.opened_at, model.created_at);
    assert_eq!(Some(p.merged_at), model.merged_at);
    assert_eq!(p.labels, model.labels);
    assert_eq!(p.title, model.title);
    assert_eq!(p.reviews.len(), model.reviews.len());
    // The merge phase ends at the merge; nothing before the merge ends after it.
    let times = p.stage_times();
    assert_eq!(times.last().map(|(n, _, e)| (*n, *e)), Some(("merge", p.merged_at)));
    assert!(times.iter().all(|(_, s, e)| s <= e && *e <= p.merged_at), "{times:?}");
}

/// A direct push costs one request, a pull request `ORIGIN_REQUESTS` (5) plus one per Actions
/// run of its final head (the simulator's count, not the reading's; the hotfix PR here has none,
/// `a_pull_requests_phases_equal_the_simulators_model` reads one that has); once every commit's
/// origin is known, a poll of an unchanged branch is the one conditional request it always was.
#[tokio::test]
async fn requests_per_commit_and_an_idle_poll_asks_nothing_more() {
    init_crypto();
    let path = format!("{}/tests/scenarios/hotfix-pr.yaml", env!("CARGO_MANIFEST_DIR"));
    let sc = Scenario::load(&path).unwrap();
    let (mut world, _) = sc.build_world(START);
    world.advance_to(START + sc.run_for);
    let sim = Sim::new(world, SimClock::new(START + sc.run_for, ClockMode::Stepped));
    let (listener, url) = deploy_journey::sim::server::bind(sim.clone(), "127.0.0.1:0").await.unwrap();
    let s2 = sim.clone();
    let _task = tokio::spawn(async move {
        let _ = deploy_journey::sim::server::serve(s2, listener).await;
    });
    let cfg = example_config("lana", &url);
    let mut gh = GithubSource::new(cfg.github(), Arc::new(SourceTelemetry::new())).unwrap();
    let now = sim.now();
    let mut facts = Facts::default();
    let new = gh.poll(now).await.unwrap();
    let mut wanted = origin_candidates(&facts, &new, &HashMap::new(), 300, now, usize::MAX);
    for f in new {
        facts.apply(f);
    }
    assert_eq!(wanted.len(), facts.commits.len(), "every new commit is asked for");
    let (mut direct, mut pulls) = (0, 0);
    wanted.truncate(40);
    for sha in wanted {
        let before = sim.stats.total("github");
        let origin = gh.origin(&sha).await.unwrap();
        let cost = sim.stats.total("github") - before;
        match &origin {
            Origin::Direct => {
                direct += 1;
                assert_eq!(cost, 1, "a direct push: commits/{{sha}}/pulls only");
            }
            Origin::Pull(p) => {
                pulls += 1;
                let runs: BTreeSet<u64> = sim.with_world(|w| {
                    let repo = w.github.values().find(|rp| rp.pull(p.number).is_some()).expect("the PR's repository");
                    workflow_runs(repo, now).iter().filter(|r| r.head_sha == p.head_sha).map(|r| r.id).collect()
                });
                assert_eq!(cost, ORIGIN_REQUESTS + runs.len() as u64, "a pull request: 5 + its final head's runs");
                assert_eq!(cost, origin_requests(runs.len()));
            }
        }
        facts.apply(Fact::Origin { sha, origin });
    }
    assert!(direct >= 1 && pulls >= 1, "the scenario has both: {direct} direct, {pulls} PRs");
    // Idle: nothing is missing, so nothing is asked beyond the branch's conditional list.
    let now = now + 600;
    assert!(origin_candidates(&facts, &[], &HashMap::new(), 300, now, usize::MAX).is_empty());
    let before = sim.stats.total("github");
    assert!(gh.poll(now).await.unwrap().is_empty());
    assert_eq!(sim.stats.total("github") - before, 1, "an idle poll is one request");
}

/// A draft PR marked ready, a change request, a follow-up push, an approval and a merge by
/// hand (pr-draft-review-rerun.yaml): every moment and phase the exporter reads equals the
/// simulator's model of the pull request and of its Actions runs on the final head; the merge
/// commit reaches staging, and `lead_time_from: pr_opened` counts from the opening.
#[tokio::test]
async fn a_pull_requests_phases_equal_the_simulators_model() {
    use deploy_journey::core::journey::{LeadTimeFrom, derive};
    let r = run_scenario("pr-draft-review-rerun.yaml", "lana").await;
    let m = r.journey("m");
    let Some(Origin::Pull(p)) = &m.origin else { panic!("m came from PR 4400: {:?}", m.origin) };
    let now = r.sim.now();
    let (model, first_commit, runs, repo_name) = r.sim.with_world(|w| {
        let repo = w.github.values().find(|rp| rp.pull(4400).is_some()).expect("PR 4400");
        let pr = repo.pull(4400).cloned().unwrap();
        // The head branch's commits, oldest first: the first one's author date.
        let branch = &repo.branches[&pr.head_ref];
        let first = repo.commits[&branch[1]].author_date;
        let head = branch.last().unwrap().clone();
        let runs: Vec<_> = deploy_journey::sim::github_api::workflow_runs(repo, now)
            .into_iter()
            .filter(|run| run.head_sha == head)
            .collect();
        (pr, first, runs, repo.full_name())
    });
    let start = crate::support::START;
    assert_eq!(p.opened_at, model.created_at);
    assert_eq!(p.opened_at, start);
    assert_eq!(p.first_commit_at, Some(first_commit));
    assert_eq!(first_commit, start - 3 * 3600, "authored 3 h before opening");
    assert_eq!(p.ready_at, model.ready_at);
    assert_eq!(p.ready_at, Some(start + 3600));
    assert_eq!(Some(p.merged_at), model.merged_at);
    assert_eq!(p.merged_at, start + 4 * 3600);
    assert_eq!(p.reviews.len(), 2);
    assert_eq!(p.first_review(), Some(start + 2 * 3600));
    assert_eq!(p.approval(), Some(start + 3 * 3600 + 1800));
    // Checks: the runs of the final head only (the first push's runs were superseded).
    assert!(!runs.is_empty(), "the final head has Actions runs");
    // From the first run's creation (queued counts: the author waits for it) to the last end.
    let run_start = runs.iter().filter(|r| r.attempt == 1).map(|r| r.created_at).min();
    let run_end = runs.iter().map(|r| r.completed_at).max();
    assert_eq!(p.checks_span(), run_start.zip(run_end));
    assert_eq!(p.reruns(), runs.iter().filter(|r| r.attempt > 1).count() as u32);
    // Each run's jobs are its latest attempt's, as the simulator has them: name, conclusion,
    // start and end, page; a job of an earlier attempt is not among them.
    let latest: BTreeSet<(u64, u32)> = runs
        .iter()
        .filter(|r| !runs.iter().any(|o| o.id == r.id && o.attempt > r.attempt))
        .map(|r| (r.id, r.attempt))
        .collect();
    let read: BTreeSet<(u64, u32)> = p.checks.iter().map(|c| (c.run_id as u64, c.attempt)).collect();
    assert_eq!(read, latest, "the final head's runs at their latest attempt");
    for c in &p.checks {
        let run = runs.iter().find(|r| (r.id as i64, r.attempt) == (c.run_id, c.attempt)).unwrap();
        assert_eq!(run.status(now), "completed", "the scenario runs long enough");
        let conclusion = if run.success { JobConclusion::Success } else { JobConclusion::Failure };
        let want = vec![(
            job_id(run) as i64,
            job_name(run.workflow).to_string(),
            run.attempt,
            JobState::Completed(conclusion),
            Some(run.started_at),
            Some(run.completed_at),
            format!("https://github.com/{repo_name}/actions/runs/{}/job/{}", run.id, job_id(run)),
        )];
        let got: Vec<_> = c
            .jobs
            .iter()
            .map(|j| {
                (j.job_id, j.name.clone(), j.attempt, j.state.clone(), j.started_at, j.completed_at, j.url.clone())
            })
            .collect();
        assert_eq!(got, want, "the jobs of run {} ({})", run.id, run.workflow);
    }
    // Reading it again costs 5 + the final head's runs, though the PR's first head had runs of
    // its own (superseded): the formula counts the final head's only.
    let all_runs: BTreeSet<u64> = r.sim.with_world(|w| {
        let repo = w.github.values().find(|rp| rp.pull(4400).is_some()).unwrap();
        workflow_runs(repo, now).iter().filter(|run| run.pr == 4400).map(|run| run.id).collect()
    });
    assert!(all_runs.len() > latest.len(), "earlier heads' runs: {all_runs:?}");
    let gh = GithubSource::new(r.cfg.github(), Arc::new(SourceTelemetry::new())).unwrap();
    let before = r.sim.stats.total("github");
    let again = gh.origin(&m.sha).await.unwrap();
    assert_eq!(r.sim.stats.total("github") - before, origin_requests(latest.len()));
    assert_eq!(again.pull(), Some(&**p), "the same reading");
    let phases = p.stages();
    assert_eq!(phases.coding, Some(3 * 3600));
    assert_eq!(phases.pickup, Some(3600), "ready at 1h, first review at 2h");
    assert_eq!(phases.review, Some(5400), "changes requested at 2h, approved at 3h30m");
    assert_eq!(phases.checks, run_start.zip(run_end).map(|(s, e)| e - s));
    let gate = run_end.unwrap().max(start + 3 * 3600 + 1800);
    assert_eq!(phases.merge, Some(p.merged_at - gate));
    // The histogram observes each phase once, at the merge, under the commit's change type.
    let builds = deploy_journey::core::journey::stage_builds(&r.facts, &r.cfg.core(), &r.derived);
    let observed: Vec<(String, f64)> = deploy_journey::sinks::metrics::events(
        r.derived.journeys.iter().map(|j| &**j),
        &builds,
        &r.derived,
        &r.cfg.core(),
    )
    .into_iter()
    .filter(|e| e.metric == deploy_journey::sinks::metrics::Metric::PreMergeStageDuration)
    .filter(|e| e.exemplar.as_ref().is_some_and(|x| x.iter().any(|(k, v)| k == "sha" && m.sha.starts_with(v.as_str()))))
    .map(|e| {
        assert_eq!(e.at, p.merged_at);
        assert!(e.labels.contains(&("change_type".to_string(), "backend".to_string())), "{:?}", e.labels);
        let phase = e.labels.iter().find(|(k, _)| k == "phase").unwrap().1.clone();
        (phase, e.value.unwrap())
    })
    .collect();
    let want: Vec<(String, f64)> =
        phases.named().iter().filter_map(|(n, d)| d.map(|d| (n.to_string(), d as f64))).collect();
    assert_eq!(observed, want);
    // To staging, and lead time from the opening.
    let staging = *m.deployed_at.get("staging").expect("m reached staging");
    assert_eq!(m.lead_time("staging"), Some(staging - m.commit_time));
    let mut core = r.cfg.core();
    core.lead_time_from = LeadTimeFrom::PrOpened;
    let d = derive(&r.facts, &core, now);
    let m2 = d.journeys.iter().find(|j| j.sha == m.sha).unwrap();
    assert_eq!(m2.lead_time("staging"), Some(staging - start));
    core.lead_time_from = LeadTimeFrom::FirstCommit;
    let d = derive(&r.facts, &core, now);
    let m3 = d.journeys.iter().find(|j| j.sha == m.sha).unwrap();
    assert_eq!(m3.lead_time("staging"), Some(staging - first_commit));
}

/// A run deleted between the listing of the final head's runs and the reading of its jobs
/// (its `jobs` answer 404, as on GitHub): the pull request's reading stands, that run with no
/// jobs, the other runs with theirs, instead of the whole origin failing and being retried.
#[tokio::test]
async fn a_run_gone_before_its_jobs_are_read_has_no_jobs() {
    use deploy_journey::sim::faults::FaultRule;
    let r = run_scenario("pr-draft-review-rerun.yaml", "lana").await;
    let m = r.journey("m");
    let Some(Origin::Pull(p)) = &m.origin else { panic!("m came from PR 4400: {:?}", m.origin) };
    assert!(p.checks.len() >= 2, "two runs on the final head: {:?}", p.checks);
    assert!(p.checks.iter().all(|c| !c.jobs.is_empty()), "each with its jobs");
    let gone = p.checks[0].run_id;
    let rule = serde_json::json!({
        "kind": "server_error", "status": 404, "service": "github",
        "path_contains": format!("/actions/runs/{gone}/jobs"),
    });
    r.sim.faults.add(FaultRule::parse(rule.to_string().as_bytes()).expect("fault rule"));
    let gh = GithubSource::new(r.cfg.github(), Arc::new(SourceTelemetry::new())).unwrap();
    let before = r.sim.stats.total("github");
    let again = gh.origin(&m.sha).await.expect("a 404 for one run's jobs does not fail the reading");
    r.sim.faults.clear();
    assert_eq!(r.sim.stats.total("github") - before, origin_requests(p.checks.len()), "no retry of the 404");
    let again = again.pull().expect("still the pull request").clone();
    for (c, was) in again.checks.iter().zip(&p.checks) {
        assert_eq!(
            (c.run_id, c.attempt, c.started_at, c.completed_at),
            (was.run_id, was.attempt, was.started_at, was.completed_at)
        );
        if c.run_id == gone {
            assert!(c.jobs.is_empty(), "the gone run has no jobs: {:?}", c.jobs);
        } else {
            assert_eq!(c.jobs, was.jobs, "run {}'s jobs as before", c.run_id);
        }
    }
    assert_eq!(again.checks.len(), p.checks.len());
    assert_eq!((again.number, again.merged_at, &again.reviews), (p.number, p.merged_at, &p.reviews));
}
