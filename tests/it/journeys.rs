//! End to end: a scenario runs in the simulator; the real source clients poll it over HTTP every
//! 30 virtual seconds; the core derives journeys; every attribution, outcome, stage time and
//! lead time is compared with the simulator's ground truth.

use std::collections::BTreeMap;
use std::sync::Arc;

use deploy_journey::config::Config;
use deploy_journey::core::journey::{Derived, Facts, Journey, Outcome, StageState, derive};
use deploy_journey::sim::Sim;
use deploy_journey::sim::clock::{ClockMode, SimClock};
use deploy_journey::sim::model::BuildStatus as SimStatus;
use deploy_journey::sim::workload::Scenario;
use deploy_journey::sources::concourse::ConcourseSource;
use deploy_journey::sources::github::GithubSource;
use deploy_journey::sources::telemetry::SourceTelemetry;

use crate::support::{START, init_crypto};

pub const POLL: i64 = 30;

pub fn example_config(name: &str, url: &str) -> Config {
    let path = format!("{}/examples/{name}.yaml", env!("CARGO_MANIFEST_DIR"));
    let env = |k: &str| match k {
        "GITHUB_TOKEN" => Some("ghp_test_token".to_string()),
        "CONCOURSE_PASSWORD" => Some("viewer-password".to_string()),
        "CONCOURSE_TOKEN" => None,
        _ => None,
    };
    let mut cfg = deploy_journey::config::load(std::path::Path::new(&path), &env).unwrap_or_else(|e| panic!("{e}"));
    cfg.repository.api_url = url.to_string();
    cfg.concourse.url = url.to_string();
    cfg
}

pub struct Run {
    pub sim: Arc<Sim>,
    /// Everything the sources reported, for checks that need more than the journeys.
    pub facts: Facts,
    pub derived: Derived,
    pub shas: BTreeMap<String, String>,
    pub cfg: Config,
    _task: tokio::task::JoinHandle<()>,
}

impl Drop for Run {
    fn drop(&mut self) {
        self._task.abort();
    }
}

impl Run {
    pub fn journey(&self, id: &str) -> &Journey {
        let sha = &self.shas[id];
        self.derived.journeys.iter().find(|j| &j.sha == sha).unwrap_or_else(|| panic!("no journey for {id}"))
    }
}

/// Run a scenario file against the exporter's sources and core.
pub async fn run_scenario(file: &str, config: &str) -> Run {
    run_scenario_each(file, config, |_, _, _| {}).await
}

/// `run_scenario`, calling `each(facts, core, now)` after every poll.
pub async fn run_scenario_each(
    file: &str,
    config: &str,
    mut each: impl FnMut(&Facts, &deploy_journey::core::journey::CoreConfig, i64),
) -> Run {
    init_crypto();
    let path = if file.starts_with('/') {
        file.to_string()
    } else {
        format!("{}/tests/scenarios/{file}", env!("CARGO_MANIFEST_DIR"))
    };
    let sc = Scenario::load(&path).unwrap();
    let (world, run) = sc.build_world(START);
    let sim = Sim::new(world, SimClock::new(START, ClockMode::Stepped));
    let (listener, url) = deploy_journey::sim::server::bind(sim.clone(), "127.0.0.1:0").await.unwrap();
    let s2 = sim.clone();
    let task = tokio::spawn(async move {
        let _ = deploy_journey::sim::server::serve(s2, listener).await;
    });
    let cfg = example_config(config, &url);
    let telemetry = Arc::new(SourceTelemetry::new());
    let mut gh = GithubSource::new(cfg.github(), telemetry.clone()).unwrap();
    let mut cc = ConcourseSource::new(cfg.concourse(), telemetry).unwrap();
    let mut facts = Facts::default();
    let end = START + sc.run_for;
    let core = cfg.core();
    while sim.now() < end {
        sim.clock.step(POLL);
        let now = sim.now();
        // As `serve` does: the branch, then the pull requests of commits not read yet.
        let new = gh.poll(now).await.unwrap();
        let tries = std::collections::HashMap::new();
        let wanted = deploy_journey::app::origin_candidates(&facts, &new, &tries, 300, now, gh.origin_budget());
        for f in new {
            facts.apply(f);
        }
        for sha in wanted {
            let origin = gh.origin(&sha).await.unwrap();
            facts.apply(deploy_journey::core::journey::Fact::Origin { sha, origin });
        }
        for f in cc.poll(now).await.unwrap() {
            facts.apply(f);
        }
        each(&facts, &core, now);
    }
    let derived = derive(&facts, &cfg.core(), sim.now());
    let shas = sim.with_world(|w| run.shas(w));
    Run { sim, facts, derived, shas, cfg, _task: task }
}

/// The stages before production, whose cepler gate the simulator holds shut unless a scenario
/// opens it; production itself has no build for the commit.
pub fn before_the_gate(j: &Journey) -> impl Iterator<Item = &deploy_journey::core::journey::StageJourney> {
    let prod = j.stages.iter().find(|s| &*s.name == "production");
    assert!(prod.is_none_or(|p| p.attempts.is_empty()), "nothing deployed to production: {prod:?}");
    j.stages.iter().filter(|s| s.name != "production")
}

/// Attributions equal ground truth; every ended journey's lead time equals the truth's first
/// successful deployment carrying it minus the commit time; stage times are build times.
pub fn check_against_truth(r: &Run) {
    let core = r.cfg.core();
    r.sim.with_world(|w| {
        let bad = crate::core_truth::mismatches(w, &core, &r.derived);
        assert!(bad.is_empty(), "attribution differs from ground truth:\n{}", bad.join("\n"));
        let env_stage = core.stages.iter().find(|s| s.environment.is_some()).unwrap();
        for j in &r.derived.journeys {
            if j.commit_time < START {
                continue;
            }
            let deployed = w
                .builds_containing(&j.sha)
                .into_iter()
                .filter(|(p, jj, _)| {
                    w.concourse.pipelines[*p].name == env_stage.pipeline
                        && env_stage.jobs.iter().any(|x| x.name == w.concourse.pipelines[*p].jobs[*jj].name)
                })
                .filter_map(|(_, _, id)| w.concourse.build(id))
                .find(|b| b.status == SimStatus::Succeeded)
                .and_then(|b| b.end_time);
            let env = env_stage.environment.as_deref().unwrap();
            assert_eq!(j.deployed_at.get(env).copied(), deployed, "{} {:?}: deployment time", j.short(), j.subject);
            // Stage start/end are the carrying builds' times.
            for s in &j.stages {
                if s.state == StageState::Succeeded {
                    let first_start = s.attempts.iter().filter_map(|a| a.start).min();
                    assert_eq!(s.start, first_start, "{} {}", j.short(), s.name);
                    assert!(s.end >= s.start);
                }
            }
        }
    });
}

fn stage<'a>(j: &'a Journey, name: &str) -> &'a deploy_journey::core::journey::StageJourney {
    j.stages.iter().find(|s| s.name == name).unwrap()
}

fn lead(j: &Journey) -> i64 {
    j.lead_time("staging").unwrap_or_else(|| panic!("{} did not reach staging: {:?}", j.short(), j.outcome))
}

#[tokio::test]
async fn backend_commit_to_staging() {
    let r = run_scenario("backend-to-staging.yaml", "lana").await;
    check_against_truth(&r);
    let j = r.journey(r.shas.keys().next().unwrap());
    assert_eq!(j.outcome, Outcome::Deployed);
    assert!(
        before_the_gate(j).all(|s| matches!(s.state, StageState::Succeeded | StageState::NotApplicable)),
        "{:?}",
        j.stages
    );
    assert_eq!(stage(j, "testflight").method(), Some(deploy_journey::core::journey::Method::Bridge));
    assert!(lead(j) > 0);
}

#[tokio::test]
async fn three_commits_while_tests_run_share_one_build() {
    let r = run_scenario("three-while-tests-run.yaml", "lana").await;
    check_against_truth(&r);
    let ids: Vec<i64> = ["a", "b", "c"].iter().map(|k| stage(r.journey(k), "tests").attempts[0].build_id).collect();
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "one test build carries a, b and c: {ids:?}");
    assert_eq!(r.journey("c").outcome, Outcome::Deployed);
    assert_eq!(r.journey("a").outcome, Outcome::Superseded);
    assert_eq!(r.journey("b").outcome, Outcome::Superseded);
    assert_eq!(r.journey("a").carried_by.as_deref(), Some(r.shas["c"].as_str()));
    // Three lead times, one deployment: they differ by the commit times.
    let (la, lc) = (lead(r.journey("a")), lead(r.journey("c")));
    assert_eq!(la - lc, r.journey("c").commit_time - r.journey("a").commit_time);
}

#[tokio::test]
async fn frontend_only_commit_ships_with_the_next_release_candidate() {
    let r = run_scenario("frontend-only.yaml", "lana").await;
    check_against_truth(&r);
    let ui = r.journey("ui");
    assert_eq!(stage(ui, "tests").state, StageState::NotApplicable);
    assert_eq!(stage(ui, "edge-images").attempts.len(), 1);
    // The release candidate that the later backend commit triggered carries the frontend change.
    let rc = stage(ui, "build-rc").attempts[0].build_id;
    assert_eq!(rc, stage(r.journey("later"), "build-rc").attempts[0].build_id);
    assert!(ui.ended);
    assert_eq!(ui.deployed_at, r.journey("later").deployed_at);
}

#[tokio::test]
async fn dagster_only_commit_gets_two_release_candidates() {
    let r = run_scenario("dagster-only.yaml", "lana").await;
    check_against_truth(&r);
    let id = r.shas.keys().next().unwrap().clone();
    let j = r.journey(&id);
    assert_eq!(j.classification.change_type, deploy_journey::core::classify::ChangeType::Dagster);
    assert!(j.ended);
    // The dagster edge image triggers an RC on the previous tested repo first; that RC does not
    // carry the commit (its repo is older), the second does.
    let rcs: usize = r.sim.with_world(|w| {
        let (p, jj) = w.job_index("lana-bank", "build-rc").unwrap();
        w.concourse.pipelines[p].jobs[jj]
            .builds
            .iter()
            .filter(|b| w.concourse.build(**b).unwrap().create_time >= START)
            .count()
    });
    assert!(rcs >= 2, "two release candidates, got {rcs}");
    assert_eq!(stage(j, "build-rc").attempts.len(), 1);
}

#[tokio::test]
async fn ci_only_commit_triggers_nothing_and_rides_along() {
    let r = run_scenario("ci-only-untracked.yaml", "lana").await;
    check_against_truth(&r);
    let untracked: Vec<&Journey> = r
        .derived
        .journeys
        .iter()
        .filter(|j| j.classification.change_type == deploy_journey::core::classify::ChangeType::Untracked)
        .map(|j| &**j)
        .collect();
    assert!(!untracked.is_empty());
    for j in untracked {
        assert!(j.classification.resources.is_empty());
        assert_eq!(j.outcome, Outcome::Untracked);
        assert!(!j.not_picked_up, "nothing should trigger, so it is not 'not picked up'");
    }
}

#[tokio::test]
async fn ci_skip_commit_is_skipped() {
    let r = run_scenario("ci-skip.yaml", "lana").await;
    check_against_truth(&r);
    assert!(
        r.derived
            .journeys
            .iter()
            .any(|j| j.classification.change_type == deploy_journey::core::classify::ChangeType::Skipped)
    );
}

#[tokio::test]
async fn bats_failure_then_rerun_green() {
    let r = run_scenario("bats-flaky-rerun.yaml", "lana").await;
    check_against_truth(&r);
    let a = r.journey("a");
    let bats: Vec<_> = stage(a, "tests").attempts.iter().filter(|x| &*x.job == "test-bats").collect();
    assert_eq!(bats.len(), 2, "the failed build and its rerun");
    assert_eq!(bats[1].rerun_of, Some(bats[0].build_id));
    assert!(bats[1].name.ends_with(".1"));
    assert_eq!(a.outcome, Outcome::Deployed, "a rerun of its own build is its own");
}

#[tokio::test]
async fn failed_testflight_then_fixing_commit() {
    let r = run_scenario("testflight-fails-then-fix.yaml", "lana").await;
    check_against_truth(&r);
    let failed: Vec<&Journey> =
        r.derived.journeys.iter().filter(|j| j.outcome == Outcome::Failed).map(|j| &**j).collect();
    assert!(!failed.is_empty(), "{:?}", r.derived.journeys.iter().map(|j| (j.short(), j.outcome)).collect::<Vec<_>>());
    assert!(failed.iter().all(|j| j.failed_stage.as_deref() == Some("testflight") && j.carried_on && j.ended));
}

#[tokio::test]
async fn a_27_minute_testflight() {
    let r = run_scenario("testflight-27m.yaml", "lana").await;
    check_against_truth(&r);
    let tf: Vec<i64> = r.derived.journeys.iter().filter_map(|j| stage(j, "testflight").duration()).collect();
    assert!(tf.contains(&(27 * 60)), "{tf:?}");
}

#[tokio::test]
async fn staging_deploys_a_descendant() {
    let r = run_scenario("staging-deploys-descendant.yaml", "lana").await;
    check_against_truth(&r);
    let a = r.journey("a");
    let st = &stage(a, "staging").attempts[0];
    assert_eq!(st.head.as_deref(), Some(r.shas["b"].as_str()));
    assert!(!st.own);
}

#[tokio::test]
async fn the_same_scenarios_on_the_two_repo_layout() {
    let all = [
        "backend-to-staging.yaml",
        "three-while-tests-run.yaml",
        "frontend-only.yaml",
        "dagster-only.yaml",
        "ci-only-untracked.yaml",
        "ci-skip.yaml",
        "bats-flaky-rerun.yaml",
        "testflight-fails-then-fix.yaml",
        "testflight-27m.yaml",
        "staging-deploys-descendant.yaml",
        "staging-fails-then-rerun.yaml",
        "testflight-aborted.yaml",
        "ci-skip-then-trigger.yaml",
        "testflight-two-builds-one-aborted.yaml",
        "staging-job-paused.yaml",
    ];
    for f in all {
        let text = std::fs::read_to_string(format!("{}/tests/scenarios/{f}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        let two = text
            .replace("topology: lana\n", "topology: lana-two-repos\n")
            .replace("private-charts/lana-bank-testflight", "lana-bank/testflight");
        let path = std::env::temp_dir().join(format!("two-repos-{}-{f}", std::process::id()));
        std::fs::write(&path, two).unwrap();
        let r = run_scenario(path.to_str().unwrap(), "lana-two-repos").await;
        check_against_truth(&r);
        // Commits that trigger something reach staging; a passive one only with a later commit.
        let open: Vec<_> = r
            .derived
            .journeys
            .iter()
            .filter(|j| j.commit_time >= START && !j.ended && !j.classification.change_type.is_passive())
            .map(|j| (j.short().to_string(), j.outcome))
            .collect();
        assert!(open.is_empty(), "{f}: every triggering commit reaches staging: {open:?}");
        println!("two-repo layout: {f}: {} journeys agree with ground truth", r.derived.journeys.len());
    }
}

/// `/metrics` of a run as the exporter renders it (no source counters): sample line → value.
fn metric_lines(r: &Run) -> BTreeMap<String, f64> {
    metric_lines_of(r, &r.facts, &r.derived, r.sim.now())
}

/// `metric_lines` of facts and journeys derived from them at `now`.
fn metric_lines_of(r: &Run, facts: &Facts, derived: &Derived, now: i64) -> BTreeMap<String, f64> {
    let core = r.cfg.core();
    let builds = deploy_journey::core::journey::stage_builds(facts, &core, derived);
    let sources = SourceTelemetry::new().snapshots();
    let baseline = deploy_journey::sinks::metrics::Baseline::default();
    let text = deploy_journey::sinks::metrics::render_text(&deploy_journey::sinks::metrics::MetricsInput {
        totals: None,
        derived,
        stage_builds: &builds,
        core: &core,
        sources: &sources,
        now,
        poll_interval_secs: 30,
        version: "0.0.0-test",
        baseline: &baseline,
        spans: None,
        store_errors: 0,
        auth_rejections: None,
    });
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.rsplit_once(' ').map(|(k, v)| (k.to_string(), v.parse().unwrap())))
        .collect()
}

/// The exporter's HTTP surface over a run's journeys: (JSON of `sha`, the list, the landing page).
async fn served(r: &Run, sha: &str) -> (serde_json::Value, serde_json::Value, String) {
    use deploy_journey::http::{Shared, Snapshot, routes};
    let shared = Arc::new(Shared::default());
    shared.set_clock(Arc::new({
        let sim = r.sim.clone();
        move || sim.now()
    }));
    shared.publish(Snapshot {
        etas: Default::default(),
        derived: r.derived.clone(),
        now: r.sim.now(),
        environments: r.cfg.environments(),
        repository: "GaloyMoney/lana-bank".into(),
        repository_url: String::new(),
        stage_builds: vec![],
        baseline: Default::default(),
        log_excerpts: Default::default(),
        journey_totals: None,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, routes(shared)).await;
    });
    let c = crate::support::client();
    let one = c.get(format!("{url}/api/v1/journeys/{sha}")).send().await.unwrap().json().await.unwrap();
    let list = c.get(format!("{url}/api/v1/journeys?state=all")).send().await.unwrap().json().await.unwrap();
    let page = c.get(format!("{url}/")).send().await.unwrap().text().await.unwrap();
    server.abort();
    (one, list, page)
}

/// A `[ci skip]` commit is never built on its own: it is not "pending" at tests (where it would
/// count as a commit waiting for a build that never comes) but "riding" with the next triggering
/// commit, in the journey, the metrics, the JSON and the landing page; never "not picked up".
#[tokio::test]
async fn a_skipped_commit_rides_and_is_never_pending() {
    let r = run_scenario("ci-skip.yaml", "lana").await;
    check_against_truth(&r);
    let j = r.journey("skip");
    assert_eq!(stage(j, "tests").state, StageState::Riding, "{:?}", stage(j, "tests"));
    assert!(j.stages.iter().all(|s| s.state != StageState::Pending), "{:?}", j.stages);
    assert!(!j.not_picked_up && !j.ended);
    assert_eq!(stage(j, "tests").waits_for, Some(deploy_journey::core::journey::WaitsFor::TriggeringCommit));

    let m = metric_lines(&r);
    assert_eq!(m["deploy_journey_stage_in_flight{stage=\"tests\",state=\"riding\"}"], 1.0);
    assert_eq!(m["deploy_journey_stage_in_flight{stage=\"tests\",state=\"pending\"}"], 0.0, "not counted as pending");
    assert_eq!(m["deploy_journey_commits_not_picked_up"], 0.0);
    let age = m["deploy_journey_stage_oldest_in_flight_seconds{stage=\"tests\",state=\"riding\"}"];
    assert_eq!(age as i64, r.sim.now() - j.commit_time);

    let (one, _, page) = served(&r, &j.sha).await;
    let tests = &one["stages"][0];
    assert_eq!(tests["name"], "tests");
    assert_eq!(tests["state"], "riding", "{tests}");
    assert_eq!(tests["waits_for"]["kind"], "triggering_commit", "{tests}");
    assert_eq!(tests["waits_for"]["text"], "rides with the next triggering commit");
    assert!(page.contains("class=\"riding\">riding<"), "{page}");
    assert!(page.contains("rides with the next triggering commit"), "{page}");
}

/// A rerun of testflight on commit a, already deployed, hangs: no journey is in flight at
/// testflight, yet the stage runs a build for over 20 minutes. The stage-level signal says so
/// (running builds, the oldest one's age, stuck), the JSON lists the build and what it carries.
#[tokio::test]
async fn a_testflight_rerun_on_a_deployed_commit_makes_the_stage_stuck() {
    let r = run_scenario("testflight-rerun-hangs.yaml", "lana").await;
    check_against_truth(&r);
    let a = r.journey("a");
    assert!(a.ended && a.outcome == Outcome::Deployed, "{:?}", a.outcome);
    let core = r.cfg.core();
    let tf = core.stages.iter().position(|s| &*s.name == "testflight").unwrap();
    let now = r.sim.now();
    let sn = &r.derived.stages[tf];
    assert_eq!(sn.running.len(), 1, "{sn:?}");
    let b = &sn.running[0];
    assert_eq!(b.head.as_deref(), Some(a.sha.as_str()), "the rerun carries a");
    assert!(b.rerun_of.is_some() && b.name.contains('.'), "{b:?}");
    let age = now - b.start.expect("started");
    assert!(age > 20 * 60, "the rerun runs for {age} s");
    assert!(sn.stuck && sn.oldest_running_age == age, "{sn:?}");
    for j in &r.derived.journeys {
        assert!(!j.stages[tf].state.in_flight() || j.ended, "{} is in flight at testflight", j.short());
    }

    let m = metric_lines(&r);
    assert_eq!(m["deploy_journey_stage_stuck{stage=\"testflight\"}"], 1.0);
    assert_eq!(m["deploy_journey_stage_oldest_running_build_seconds{stage=\"testflight\"}"], age as f64);
    assert_eq!(m["deploy_journey_stage_running_builds{stage=\"testflight\",status=\"started\"}"], 1.0);
    assert_eq!(m["deploy_journey_stage_running_builds{stage=\"testflight\",status=\"pending\"}"], 0.0);
    // What the per-commit gauges (and the alerts before this change) see: nothing running.
    assert_eq!(m["deploy_journey_stage_in_flight{stage=\"testflight\",state=\"running\"}"], 0.0);
    assert_eq!(m["deploy_journey_stage_oldest_in_flight_seconds{stage=\"testflight\",state=\"running\"}"], 0.0);
    assert_eq!(m["deploy_journey_stage_stuck{stage=\"tests\"}"], 0.0);

    let (_, list, page) = served(&r, &a.sha).await;
    let st = list["stages"].as_array().unwrap().iter().find(|s| s["name"] == "testflight").unwrap().clone();
    assert_eq!(st["stuck"], true, "{st}");
    assert_eq!(st["stuck_after_seconds"], 20 * 60);
    assert_eq!(st["running_builds"][0]["build_id"], b.build_id, "{st}");
    assert_eq!(st["running_builds"][0]["head"], a.sha.as_str(), "{st}");
    assert!(st["running_builds"][0]["url"].as_str().unwrap().ends_with(&format!("/builds/{}", b.name)), "{st}");
    assert!(
        page.contains(&format!("lana-bank-testflight #{}</a> started (carrying <code>{}</code>)", b.name, a.short())),
        "{page}"
    );
    assert!(page.contains("(stuck)"), "{page}");
}

/// A commit that lands while the tests run on an older one waits for the stage, and says so:
/// busy with the running build and what that carries.
#[tokio::test]
async fn a_commit_behind_a_busy_stage_says_what_it_waits_for() {
    let r = run_scenario("three-while-tests-run.yaml", "lana").await;
    // At the end everything is deployed; derive again at the moment c landed, while the
    // tests ran on the previous commit.
    let c_landed = r.journey("c").commit_time;
    let first = r.journey("first").sha.clone();
    let t = c_landed + 60;
    let d = derive(&facts_at(&r.facts, t), &r.cfg.core(), t);
    let c = d.journeys.iter().find(|j| j.sha == r.shas["c"]).unwrap();
    let tests = stage(c, "tests");
    assert_eq!(tests.state, StageState::Pending, "{tests:?}");
    match &tests.waits_for {
        Some(deploy_journey::core::journey::WaitsFor::Busy(b)) => {
            assert_eq!(b.head.as_deref(), Some(first.as_str()), "busy with first's tests: {b:?}");
            assert!(tests.expected_jobs.iter().any(|j| **j == *b.job));
        }
        other => panic!("c waits for {other:?}"),
    }
    let w = tests.waits_for.as_ref().unwrap().describe();
    assert!(
        w.starts_with("the stage is busy with build ") && w.ends_with(&format!("carrying {})", &first[..7])),
        "{w}"
    );
}

/// The facts as a poll at `t` would have seen them: commits landed by then, builds started by
/// then, those that ended later still running.
fn facts_at(all: &Facts, t: i64) -> Facts {
    use deploy_journey::core::journey::{BuildStatus, Fact};
    let mut f = Facts::default();
    for c in all.commits.values().filter(|c| c.committer_date <= t) {
        f.apply(Fact::Commit(c.clone()));
    }
    for b in all.builds.values().filter(|b| b.start.is_some_and(|s| s <= t)) {
        let mut b = b.clone();
        if b.end.is_some_and(|e| e > t) {
            b.status = BuildStatus::Started;
            b.end = None;
            b.outputs.clear();
        }
        f.apply(Fact::Build(b));
    }
    f
}

/// The first example, polled every 30 s: an RC with the dagster image of commit d but the
/// previous `repo` carries the previous commit, not d; its testflight build hangs for an hour. The
/// stage is stuck from the first poll after 20 minutes of that build to its end, including the
/// long stretch when no commit in flight is running at testflight (d's own testflight has ended
/// and d is deployed): the per-commit view would have said nothing.
#[tokio::test]
async fn an_older_rc_hanging_at_testflight_is_stuck_whatever_it_carries() {
    // (now, the oldest running testflight build: id, start, head; stuck; a commit in flight
    // running at testflight)
    type Seen = (i64, Option<(i64, i64, Option<String>)>, bool, bool);
    let mut seen: Vec<Seen> = vec![];
    let r = run_scenario_each("testflight-older-rc-hangs.yaml", "lana", |facts, core, now| {
        let d = derive(facts, core, now);
        let tf = core.stages.iter().position(|s| &*s.name == "testflight").unwrap();
        let sn = &d.stages[tf];
        let oldest = sn.running.first().and_then(|b| Some((b.build_id, b.start?, b.head.clone())));
        let commit_running = d.journeys.iter().any(|j| !j.ended && j.stages[tf].state == StageState::Running);
        seen.push((now, oldest, sn.stuck, commit_running));
    })
    .await;
    check_against_truth(&r);
    let d = r.journey("d");
    assert_eq!(d.outcome, Outcome::Deployed);
    let prev = r.derived.journeys.iter().rev().find(|j| j.commit_time < d.commit_time).unwrap().sha.clone();
    let d_tf = stage(d, "testflight").attempts[0].build_id;
    // The slow build: the first testflight build seen running that is not d's.
    let (slow, start) = seen
        .iter()
        .find_map(|(_, o, _, _)| o.as_ref().filter(|(id, _, _)| *id != d_tf).map(|(id, s, _)| (*id, *s)))
        .expect("the older RC's testflight was seen running");
    for (now, o, stuck, _) in &seen {
        if let Some((id, s, head)) = o
            && *id == slow
        {
            assert_eq!(head.as_deref(), Some(prev.as_str()), "the older RC carries the previous commit, not d");
            assert_eq!(*stuck, now - s > 20 * 60, "at +{} s of the slow build", now - s);
        }
    }
    let stuck_alone = seen
        .iter()
        .filter(|(_, o, stuck, running)| *stuck && !*running && o.as_ref().is_some_and(|(id, _, _)| *id == slow));
    let n = stuck_alone.count();
    assert!(n * POLL as usize >= 15 * 60, "stuck with no commit running at testflight for {} s", n as i64 * POLL);
    println!(
        "older RC's testflight build {slow} started at +{} s; stuck with no commit in flight running at testflight for {} s",
        start - START,
        n as i64 * POLL
    );
}

/// Staging fails for commit a; a rerun of that build succeeds three hours later. a is deployed
/// once, at the rerun's end (the lead time runs to it); the failed build stays an attempt, the
/// deployment is counted once, and no staging build is left running.
#[tokio::test]
async fn a_staging_rerun_after_a_failure_deploys_once_at_its_end() {
    let r = run_scenario("staging-fails-then-rerun.yaml", "lana").await;
    check_against_truth(&r);
    let a = r.journey("a");
    let st = stage(a, "staging");
    assert_eq!(st.attempts.len(), 2, "{:?}", st.attempts);
    assert_eq!(st.attempts[0].status, deploy_journey::core::journey::BuildStatus::Failed);
    assert_eq!(st.attempts[1].rerun_of, Some(st.attempts[0].build_id));
    assert_eq!(st.state, StageState::Succeeded);
    assert_eq!((a.outcome, a.failed_stage.as_deref()), (Outcome::Deployed, None), "a rerun of its own build");
    assert_eq!(a.deployed_at.get("staging").copied(), st.attempts[1].end);
    assert_eq!(lead(a), st.attempts[1].end.unwrap() - a.commit_time);
    assert!(lead(a) > 3 * 3600, "{}", lead(a));
    // The history before the run has deployments of its own; the run adds one.
    let before = r
        .facts
        .builds
        .values()
        .filter(|b| {
            &*b.job == "galoy-staging-lana-bank" && b.status == deploy_journey::core::journey::BuildStatus::Succeeded
        })
        .filter(|b| b.end.is_some_and(|e| e < a.commit_time))
        .count() as f64;
    let m = metric_lines(&r);
    assert_eq!(m["deploy_journey_deployments_total{environment=\"staging\"}"], before + 1.0, "one deployment");
    assert_eq!(m["deploy_journey_stage_running_builds{stage=\"staging\",status=\"started\"}"], 0.0);
}

/// a's testflight build is aborted ten minutes in. Concourse starts no other build of the job
/// until a new version arrives, so until b lands a's journey stops at testflight: failed there
/// (aborted), not running, not pending behind a build, and the stage is not stuck (nothing
/// runs). b then carries a to staging: a is superseded, not failed on its own (a person
/// stopped the build; it is not a's failure).
#[tokio::test]
async fn an_aborted_testflight_build_while_a_commit_waits() {
    let mut mid: Option<Derived> = None;
    let r = run_scenario_each("testflight-aborted.yaml", "lana", |facts, core, now| {
        if now == START + 3 * 3600 {
            mid = Some(derive(facts, core, now));
        }
    })
    .await;
    check_against_truth(&r);
    let mid = mid.unwrap();
    let a_mid = mid.journeys.iter().find(|j| j.sha == r.shas["a"]).unwrap();
    let tf = stage(a_mid, "testflight");
    assert_eq!(tf.attempts.len(), 1, "{tf:?}");
    assert_eq!(tf.attempts[0].status, deploy_journey::core::journey::BuildStatus::Aborted);
    assert_eq!(tf.state, StageState::Failed, "{tf:?}");
    assert_eq!(a_mid.outcome, Outcome::Failed);
    assert_eq!(a_mid.failed_stage.as_deref(), Some("testflight"));
    let core = r.cfg.core();
    let ti = core.stages.iter().position(|s| &*s.name == "testflight").unwrap();
    assert!(mid.stages[ti].running.is_empty() && !mid.stages[ti].stuck, "{:?}", mid.stages[ti]);

    let a = r.journey("a");
    assert!(a.ended, "{:?}", a.stages);
    assert_eq!(a.outcome, Outcome::Superseded, "an aborted build is no failure of a's: {:?}", a.failed_stage);
    assert_eq!(a.carried_by.as_deref(), Some(r.shas["b"].as_str()));
    assert_eq!(a.deployed_at, r.journey("b").deployed_at);
}

/// A `[ci skip]` commit followed an hour later by a triggering one: the skipped commit rides at
/// tests (never pending, never "not picked up") until the triggering commit's builds carry it,
/// then it is credited with them and reaches staging with that deploy.
#[tokio::test]
async fn a_skipped_commit_rides_then_ships_with_the_triggering_commit() {
    let mut before: Option<Derived> = None;
    let r = run_scenario_each("ci-skip-then-trigger.yaml", "lana", |facts, core, now| {
        if now == START + 55 * 60 {
            before = Some(derive(facts, core, now));
        }
    })
    .await;
    check_against_truth(&r);
    let before = before.unwrap();
    let s = before.journeys.iter().find(|j| j.sha == r.shas["skip"]).unwrap();
    assert_eq!(stage(s, "tests").state, StageState::Riding);
    assert!(!s.not_picked_up && !s.ended);

    let s = r.journey("skip");
    let n = r.journey("next");
    assert_eq!(n.outcome, Outcome::Deployed);
    assert!(s.ended && !s.not_picked_up, "{:?}", s.stages);
    assert_eq!(s.outcome, Outcome::Skipped);
    assert_eq!(s.deployed_at, n.deployed_at);
    let ids = |j: &Journey| stage(j, "tests").attempts.iter().map(|a| a.build_id).collect::<Vec<_>>();
    assert_eq!(ids(s), ids(n), "the triggering commit's test builds carry the skipped one");
    assert!(before_the_gate(s).all(|x| matches!(x.state, StageState::Succeeded | StageState::NotApplicable)));
}

/// A frontend-only commit and no backend commit after it: it waits at build-rc (no build
/// carries it, none is running) until someone triggers build-rc by hand; the manual RC carries
/// it (the newest admin-panel-src that passed its edge job) and it reaches staging with it.
#[tokio::test]
async fn a_frontend_only_commit_ships_with_a_manually_triggered_rc() {
    let mut before: Option<Derived> = None;
    let r = run_scenario_each("frontend-only-manual-rc.yaml", "lana", |facts, core, now| {
        if now == START + 55 * 60 {
            before = Some(derive(facts, core, now));
        }
    })
    .await;
    check_against_truth(&r);
    let before = before.unwrap();
    let ui = before.journeys.iter().find(|j| j.sha == r.shas["ui"]).unwrap();
    assert_eq!(stage(ui, "edge-images").state, StageState::Succeeded);
    let rc = stage(ui, "build-rc");
    assert_eq!(rc.state, StageState::Pending, "{rc:?}");
    assert_eq!(rc.waits_for, Some(deploy_journey::core::journey::WaitsFor::NoBuild));
    assert!(!ui.not_picked_up, "its edge image was built");

    let ui = r.journey("ui");
    assert!(ui.ended && ui.outcome == Outcome::Deployed, "{:?} {:?}", ui.outcome, ui.stages);
    let rc = &stage(ui, "build-rc").attempts;
    assert_eq!(rc.len(), 1, "{rc:?}");
    assert!(rc[0].start.unwrap() >= START + 3600, "the manual build: {:?}", rc[0]);
    assert!(lead(ui) > 3600);
}

/// Once the triggering commit's builds carry a `[ci skip]` commit, the two travel together: at
/// every poll after that, the skipped commit's state and what it waits for at each stage are the
/// triggering commit's (it no longer "rides with the next triggering commit": that commit came).
#[tokio::test]
async fn a_carried_skipped_commit_travels_with_the_triggering_commit() {
    let mut diffs: Vec<String> = vec![];
    let mut compared = 0;
    let mut shas: Option<(String, String)> = None;
    let r = run_scenario_each("ci-skip-then-trigger.yaml", "lana", |facts, core, now| {
        let d = derive(facts, core, now);
        let order: Vec<&Journey> = d.journeys.iter().filter(|j| j.commit_time >= START).map(|j| &**j).collect();
        let (Some(s), Some(n)) = (order.first(), order.get(1)) else { return };
        shas.get_or_insert_with(|| (s.sha.clone(), n.sha.clone()));
        if stage(s, "tests").attempts.is_empty() {
            return;
        }
        compared += 1;
        for (a, b) in s.stages.iter().zip(&n.stages) {
            if (a.state, &a.waits_for) != (b.state, &b.waits_for) {
                diffs.push(format!(
                    "+{} s {}: skipped {:?} {:?}, triggering {:?} {:?}",
                    now - START,
                    a.name,
                    a.state,
                    a.waits_for,
                    b.state,
                    b.waits_for
                ));
            }
        }
    })
    .await;
    check_against_truth(&r);
    assert_eq!(shas, Some((r.shas["skip"].clone(), r.shas["next"].clone())));
    assert!(compared > 100, "{compared} polls compared");
    assert!(diffs.is_empty(), "{} polls differ:\n{}", diffs.len(), diffs.join("\n"));
}

/// a's testflight build hangs for two hours and is then aborted; b lands 20 minutes after a.
/// testflight is not serial, so b's build runs beside a's, carries a too and succeeds: both are
/// done at testflight while a's own build still hangs, and the stage is stuck on that build
/// alone until the abort. a is superseded (an abort is not a's failure), its aborted build an
/// attempt, and b is deployed.
#[tokio::test]
async fn two_testflight_builds_at_once_one_hangs_and_is_aborted() {
    use deploy_journey::core::journey::{BuildStatus, WaitsFor};
    // (now, a's testflight state, b's testflight state and waits_for, running statuses, oldest age, stuck)
    type Seen = (i64, StageState, StageState, Option<WaitsFor>, Vec<BuildStatus>, i64, bool);
    let mut seen: Vec<Seen> = vec![];
    let r = run_scenario_each("testflight-two-builds-one-aborted.yaml", "lana", |facts, core, now| {
        let d = derive(facts, core, now);
        let tf = core.stages.iter().position(|s| &*s.name == "testflight").unwrap();
        let js: Vec<&Journey> = d.journeys.iter().filter(|j| j.commit_time >= START).map(|j| &**j).collect();
        let (Some(a), Some(b)) = (js.first(), js.get(1)) else { return };
        let sn = &d.stages[tf];
        seen.push((
            now,
            a.stages[tf].state,
            b.stages[tf].state,
            b.stages[tf].waits_for.clone(),
            sn.running.iter().map(|x| x.status).collect(),
            sn.oldest_running_age,
            sn.stuck,
        ));
    })
    .await;
    check_against_truth(&r);
    let a = r.journey("a");
    let b = r.journey("b");
    let tf = stage(a, "testflight");
    assert_eq!(tf.attempts.len(), 2, "{:?}", tf.attempts);
    assert_eq!(tf.attempts[0].status, deploy_journey::core::journey::BuildStatus::Aborted);
    assert!(tf.attempts[0].own && tf.attempts[0].end.unwrap() - tf.attempts[0].start.unwrap() == 2 * 3600);
    assert_eq!(tf.attempts[1].build_id, stage(b, "testflight").attempts[0].build_id);
    assert_eq!((a.outcome, b.outcome), (Outcome::Superseded, Outcome::Deployed), "{:?}", a.failed_stage);
    assert_eq!(a.deployed_at, b.deployed_at);

    // testflight is not serial (lana-pipeline.md §2.2): b's build starts beside a's hanging one.
    let both = seen.iter().filter(|s| s.1 == StageState::Running && s.2 == StageState::Running).count();
    assert!(both > 0 && seen.iter().any(|s| s.4 == vec![BuildStatus::Started, BuildStatus::Started]));
    // Then b's build carried a through: both are done at testflight while a's own build still
    // hangs, and the stage is stuck on it with no commit in flight there.
    let alone = seen
        .iter()
        .filter(|s| s.1 == StageState::Succeeded && s.2 == StageState::Succeeded && s.4 == vec![BuildStatus::Started])
        .filter(|s| s.6)
        .count();
    assert!(alone as i64 * POLL > 30 * 60, "stuck on a's aborted-to-be build alone for {} polls", alone);
    for (now, _, _, _, running, age, stuck) in &seen {
        assert_eq!(*stuck, *age > 20 * 60, "+{}", now - START);
        if running.is_empty() {
            assert_eq!(*age, 0);
        }
    }
    let end = tf.attempts[0].end.unwrap();
    assert!(seen.iter().filter(|s| s.0 > end + POLL).all(|s| !s.6), "not stuck after the abort");
    assert!(seen.iter().any(|s| s.6), "stuck while a's build hung");
}

/// The staging job is paused while commit a reaches it, and unpaused after four hours. What the
/// exporter says meanwhile: a is pending at staging with no build, the stage runs no build and is
/// not stuck (nothing runs), and the signal is the pending commit's age since it became ready
/// (`stage_oldest_in_flight_seconds{state="pending"}`). Unpaused, the job deploys a; the lead
/// time includes the pause.
#[tokio::test]
async fn a_paused_staging_job_leaves_the_commit_pending_with_no_build() {
    let at = START + 3 * 3600;
    let mut mid: Option<(Facts, Derived)> = None;
    let r = run_scenario_each("staging-job-paused.yaml", "lana", |facts, core, now| {
        if now == at {
            mid = Some((facts.clone(), derive(facts, core, now)));
        }
    })
    .await;
    check_against_truth(&r);
    let (facts, d) = mid.unwrap();
    let a = d.journeys.iter().find(|j| j.sha == r.shas["a"]).unwrap();
    let st = stage(a, "staging");
    assert_eq!(st.state, StageState::Pending, "{st:?}");
    assert_eq!(st.waits_for, Some(deploy_journey::core::journey::WaitsFor::NoBuild));
    let ready = st.ready_at.unwrap();
    assert!(at - ready > 3600, "ready {} s before", at - ready);
    assert!(!a.not_picked_up);
    let m = metric_lines_of(&r, &facts, &d, at);
    assert_eq!(m["deploy_journey_stage_in_flight{stage=\"staging\",state=\"pending\"}"], 1.0);
    assert_eq!(
        m["deploy_journey_stage_oldest_in_flight_seconds{stage=\"staging\",state=\"pending\"}"],
        (at - ready) as f64
    );
    assert_eq!(m["deploy_journey_stage_running_builds{stage=\"staging\",status=\"pending\"}"], 0.0);
    assert_eq!(m["deploy_journey_stage_running_builds{stage=\"staging\",status=\"started\"}"], 0.0);
    assert_eq!(m["deploy_journey_stage_stuck{stage=\"staging\"}"], 0.0);

    let a = r.journey("a");
    assert_eq!(a.outcome, Outcome::Deployed);
    let st = stage(a, "staging");
    assert!(st.start.unwrap() >= START + 4 * 3600, "{st:?}");
    assert_eq!(lead(a), st.end.unwrap() - a.commit_time);
}

/// Issue #21 item 3: a fresh `serve` (empty state) on a Concourse whose jobs have more than
/// `INITIAL_BUILDS` builds used to report commits whose own builds lay before its first read as
/// `superseded` by the next known build, with another lead time. Now the first read reaches back
/// to the oldest commit GitHub reports, and whatever a job's known history still does not cover
/// is `incomplete`. Both runs poll one simulator (the uninterrupted one from the world's start,
/// the fresh one only at the end) and are derived at the same moment: for every commit the fresh
/// run reports exactly what the uninterrupted one does, or `incomplete`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_start_on_a_long_history_reports_what_an_uninterrupted_run_does_or_incomplete() {
    use std::time::Duration;
    init_crypto();
    const DAYS: i64 = 10;
    // Coarser than `serve`'s 30 s, to keep ten days quick; every build is still read started
    // or finished, which is all the facts need.
    const EVERY: i64 = 300;
    let (world, _) = deploy_journey::demo::lana_world("lana", 21, Duration::ZERO, 0.0, START).expect("lana world");
    let sim = Sim::new(world, SimClock::new(START, ClockMode::Stepped));
    let (listener, url) = deploy_journey::sim::server::bind(sim.clone(), "127.0.0.1:0").await.unwrap();
    let s2 = sim.clone();
    let server = tokio::spawn(async move {
        let _ = deploy_journey::sim::server::serve(s2, listener).await;
    });
    let cfg = example_config("lana", &url);
    let sources = || {
        let t = Arc::new(SourceTelemetry::new());
        let cc = ConcourseSource::new(cfg.concourse(), t.clone()).unwrap();
        (GithubSource::new(cfg.github(), t.clone()).unwrap(), cc, t)
    };
    let (mut gh, mut cc, _) = sources();
    let mut calm = Facts::default();
    for _ in 0..DAYS * 86_400 / EVERY {
        sim.clock.step(EVERY);
        let now = sim.now();
        for f in gh.poll(now).await.unwrap().into_iter().chain(cc.poll(now).await.unwrap()) {
            calm.apply(f);
        }
    }
    // The case at hand: jobs with more builds than a first read used to keep.
    let mut per_job: BTreeMap<&str, usize> = BTreeMap::new();
    for b in calm.builds.values() {
        *per_job.entry(&*b.job).or_default() += 1;
    }
    let most = per_job.values().max().copied().unwrap_or(0);
    assert!(most > deploy_journey::sources::concourse::INITIAL_BUILDS, "builds per job: {per_job:?}");

    // A fresh start, as `serve` does it: GitHub first, then Concourse back to its oldest commit
    // (`read_back`), or without it, as when GitHub does not answer the first cycle. Its facts go
    // through a real state file and are read back, as a restart would.
    let now = sim.now();
    let dir = tempfile::tempdir().unwrap();
    let fresh_start = async |read_back: bool| {
        let (mut gh2, mut cc2, t) = sources();
        let mut new = gh2.poll(now).await.unwrap();
        let oldest = new
            .iter()
            .filter_map(|f| match f {
                deploy_journey::core::journey::Fact::Commit(c) => Some(c.committer_date),
                _ => None,
            })
            .min();
        cc2.set_first_read_since(oldest.filter(|_| read_back));
        for _ in 0..5 {
            new.extend(cc2.poll(now).await.unwrap());
        }
        let mut store = deploy_journey::store::Store::open(&dir.path().join(format!("{read_back}.db"))).unwrap();
        store.apply(&new).unwrap();
        let requests = t.snapshots().into_iter().find(|(s, _)| *s == "concourse").map(|(_, s)| s.requests());
        (store.load().unwrap(), requests.unwrap_or(0))
    };
    let (without, short_requests) = fresh_start(false).await;
    let (fresh, long_requests) = fresh_start(true).await;
    // A backfill into the short state reads the rest, and its history replaces the horizons.
    let backfilled = {
        let (_, mut cc3, _) = sources();
        cc3.set_history_since(Some(START - 86_400));
        let mut store = deploy_journey::store::Store::open(&dir.path().join("false.db")).unwrap();
        for _ in 0..20 {
            let new = cc3.poll(now).await.unwrap();
            store.apply(&new).unwrap();
            if cc3.caught_up() && new.is_empty() {
                break;
            }
        }
        store.load().unwrap()
    };
    server.abort();

    let core = cfg.core();
    let a = derive(&calm, &core, now);
    let calm_by_sha: BTreeMap<&str, &Journey> = a.journeys.iter().map(|j| (j.sha.as_str(), &**j)).collect();
    let compare = |facts: &Facts| {
        let b = derive(facts, &core, now);
        assert_eq!(b.journeys.len(), a.journeys.len(), "the fresh start reports every commit");
        let mut incomplete = 0;
        for j in &b.journeys {
            let u = calm_by_sha[j.sha.as_str()];
            if j.outcome.as_str() == "incomplete" {
                incomplete += 1;
                // As the JSON API shows it: no lead time, nothing in flight, the unknown stage named.
                let js = deploy_journey::http::JourneyJson::from(j, &deploy_journey::http::Snapshot::default());
                assert!(js.lead_time_seconds.is_empty() && !js.ended, "{}: {js:?}", j.short());
                assert!(js.stages.iter().any(|s| s.state.as_str() == "incomplete"), "{}: {js:?}", j.short());
                assert!(!js.stages.iter().any(|s| matches!(s.state.as_str(), "waiting" | "pending" | "running")));
                continue;
            }
            let view = |j: &Journey| {
                let states: Vec<&str> = j.stages.iter().map(|s| s.state.as_str()).collect();
                (j.outcome.as_str(), j.carried_by.clone(), j.deployed_at.clone(), j.failed_stage.clone(), states)
            };
            assert_eq!(view(j), view(u), "{}: the fresh start reports another journey", j.short());
        }
        assert_eq!(b.quality.incomplete, incomplete);
        incomplete
    };
    let (short, long, after_backfill) = (compare(&without), compare(&fresh), compare(&backfilled));
    println!(
        "{} commits, {} builds (at most {most} per job); fresh start: {short} incomplete with the newest \
         {} builds per job ({short_requests} Concourse requests), {long} reading back to the oldest commit \
         ({long_requests} requests)",
        a.journeys.len(),
        calm.builds.len(),
        deploy_journey::sources::concourse::INITIAL_BUILDS,
    );
    assert!(short > 0, "the newest builds alone do not cover the oldest commits here");
    assert_eq!(long, 0, "reading back to the oldest commit covers them all");
    assert_eq!(after_backfill, 0, "a backfill completes the short history");
}
