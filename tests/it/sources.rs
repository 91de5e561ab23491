//! The GitHub and Concourse sources against the simulator over HTTP, on a stepped clock:
//! what they turn into facts, what each poll costs (`/_sim/stats` deltas), and how they behave
//! under faults, expired tokens and bad credentials.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deploy_journey::core::journey::{BuildFact, BuildStatus, CommitFact, Fact, Facts};
use deploy_journey::sim::engine::{Action, BuildOverride};
use deploy_journey::sim::model::BuildStatus as SimStatus;
use deploy_journey::sources::concourse::{ConcourseSource, JOBS_REFRESH};
use deploy_journey::sources::github::GithubSource;
use deploy_journey::sources::telemetry::SourceTelemetry;
use deploy_journey::sources::{
    ConcourseAuth, ConcourseConfig, ErrorKind, GithubConfig, Secret, SourceError, WatchedPipeline,
};
use serde_json::{Value, json};

use crate::support::*;

const REPO: &str = "GaloyMoney/lana-bank";
const LIST_ROUTE: &str = "/repos/{owner}/{repo}/commits";
const COMMIT_ROUTE: &str = "/repos/{owner}/{repo}/commits/{*ref}";
const JOBS_ROUTE: &str = "/api/v1/teams/{team}/pipelines/{pipeline}/jobs";
const BUILDS_ROUTE: &str = "/api/v1/teams/{team}/builds";
const TOKEN_ROUTE: &str = "/sky/issuer/token";

// ------------------------------------------------------------------ helpers

fn github_cfg(sim: &TestSim, token: &str) -> GithubConfig {
    GithubConfig {
        api_url: sim.url.clone(),
        owner: "GaloyMoney".into(),
        repo: "lana-bank".into(),
        branch: "main".into(),
        token: Some(Secret::new(token)),
        timeout: Duration::from_secs(5),
        initial_commits: 20,
    }
}

fn github(sim: &TestSim, tel: &Arc<SourceTelemetry>) -> GithubSource {
    init_crypto();
    let mut g = GithubSource::new(github_cfg(sim, "ghp_sim-test-token"), tel.clone()).expect("github source");
    g.set_retry_base_delay(Duration::from_millis(20));
    g
}

fn lana_pipelines() -> Vec<WatchedPipeline> {
    let jobs = |js: &[&str]| js.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    vec![
        WatchedPipeline {
            name: "lana-bank".into(),
            jobs: jobs(&[
                "test-integration",
                "test-bats",
                "flake-check",
                "build-admin-panel-edge-image",
                "build-customer-portal-edge-image",
                "build-dagster-edge-image",
                "build-rc",
                "bump-image-in-chart-rc",
                "release",
                "bump-image-in-chart",
            ]),
            message_inputs: vec![],
        },
        WatchedPipeline {
            name: "private-charts".into(),
            jobs: jobs(&["lana-bank-testflight", "bump-lana-bank-in-deployments"]),
            message_inputs: vec!["lana-bank-chart".into()],
        },
        WatchedPipeline {
            name: "galoy-staging".into(),
            jobs: jobs(&["galoy-staging-lana-bank"]),
            message_inputs: vec![],
        },
    ]
}

fn concourse_cfg(sim: &TestSim, auth: ConcourseAuth) -> ConcourseConfig {
    ConcourseConfig {
        url: sim.url.clone(),
        team: "dev".into(),
        auth,
        pipelines: lana_pipelines(),
        timeout: Duration::from_secs(5),
    }
}

fn viewer() -> ConcourseAuth {
    ConcourseAuth::Password { username: "deploy-journey".into(), password: Secret::new("viewer-password") }
}

fn concourse_with(sim: &TestSim, tel: &Arc<SourceTelemetry>, auth: ConcourseAuth) -> ConcourseSource {
    init_crypto();
    let mut c = ConcourseSource::new(concourse_cfg(sim, auth), tel.clone()).expect("concourse source");
    c.set_retry_base_delay(Duration::from_millis(20));
    c
}

fn concourse(sim: &TestSim, tel: &Arc<SourceTelemetry>) -> ConcourseSource {
    concourse_with(sim, tel, viewer())
}

/// `/_sim/stats` as (service, method, route, status) → count.
#[derive(Debug, Clone, Default)]
struct Stats(BTreeMap<(String, String, String, u16), u64>);

impl Stats {
    async fn read(sim: &TestSim) -> Stats {
        let v = sim.get_json("/_sim/stats").await;
        let mut m = BTreeMap::new();
        for r in v["requests"].as_array().expect("rows") {
            let key = (
                r["service"].as_str().unwrap_or("").to_string(),
                r["method"].as_str().unwrap_or("").to_string(),
                r["route"].as_str().unwrap_or("").to_string(),
                r["status"].as_u64().unwrap_or(0) as u16,
            );
            m.insert(key, r["count"].as_u64().unwrap_or(0));
        }
        Stats(m)
    }
    fn since(&self, before: &Stats) -> Stats {
        let mut m = BTreeMap::new();
        for (k, n) in &self.0 {
            let d = n - before.0.get(k).copied().unwrap_or(0);
            if d > 0 {
                m.insert(k.clone(), d);
            }
        }
        Stats(m)
    }
    fn count(&self, service: &str, method: &str, route: &str, status: Option<u16>) -> u64 {
        self.0
            .iter()
            .filter(|((s, m, r, st), _)| s == service && m == method && r == route && status.is_none_or(|x| x == *st))
            .map(|(_, n)| n)
            .sum()
    }
    fn total(&self, service: &str) -> u64 {
        self.0.iter().filter(|((s, ..), _)| s == service).map(|(_, n)| n).sum()
    }
    fn describe(&self, service: &str) -> String {
        let mut by_route: BTreeMap<String, u64> = BTreeMap::new();
        for ((s, m, r, st), n) in &self.0 {
            if s == service {
                *by_route.entry(format!("{m} {r} {st}")).or_insert(0) += n;
            }
        }
        by_route.iter().map(|(k, n)| format!("    {n:>6}  {k}")).collect::<Vec<_>>().join("\n")
    }
}

async fn add_fault(sim: &TestSim, rule: Value) {
    let r = sim.client.post(format!("{}/_sim/faults", sim.url)).json(&rule).send().await.expect("fault");
    assert_eq!(r.status().as_u16(), 201, "fault rule {rule} rejected");
}

async fn clear_faults(sim: &TestSim) {
    sim.client.delete(format!("{}/_sim/faults", sim.url)).send().await.expect("clear faults");
}

fn commits(facts: &[Fact]) -> Vec<&CommitFact> {
    facts
        .iter()
        .filter_map(|f| match f {
            Fact::Commit(c) => Some(c),
            _ => None,
        })
        .collect()
}

fn builds<'a>(facts: &'a Facts, pipeline: &str, job: &str) -> Vec<&'a BuildFact> {
    facts.builds.values().filter(|b| &*b.pipeline == pipeline && &*b.job == job).collect()
}

fn input_ref<'a>(b: &'a BuildFact, step: &str) -> Option<&'a str> {
    b.inputs.iter().find(|i| i.step == step).and_then(|i| i.version.get("ref"))
}

/// Poll Concourse every `every` seconds for `secs` of simulated time, merging the facts.
async fn run_concourse(sim: &TestSim, c: &mut ConcourseSource, facts: &mut Facts, secs: i64, every: i64) {
    let mut t = 0;
    while t < secs {
        sim.step(every);
        t += every;
        for f in c.poll(sim.sim.now()).await.expect("concourse poll") {
            facts.apply(f);
        }
    }
}

fn assert_no_secret(e: &SourceError, secret: &str) {
    let shown = format!("{e}");
    let debug = format!("{e:?}");
    assert!(!shown.contains(secret), "secret in Display: {shown}");
    assert!(!debug.contains(secret), "secret in Debug: {debug}");
}

// ------------------------------------------------------------------ GitHub

#[tokio::test]
async fn github_commits_become_facts_and_an_idle_poll_is_one_free_304() {
    let sim = spawn_sim("lana", 1).await;
    let tel = Arc::new(SourceTelemetry::new());
    let mut g = github(&sim, &tel);
    let sha = sim.commit(&["core/lib.rs", "core/deposit/mod.rs"], "feat: deposits (#1)");

    let now = sim.sim.now();
    let facts = g.poll(now).await.expect("first poll");
    let cs = commits(&facts);
    let c = cs.iter().find(|c| c.sha == sha).expect("the new commit is a fact");
    assert_eq!(c.files, vec!["core/lib.rs", "core/deposit/mod.rs"]);
    assert_eq!((c.author.as_str(), c.first_seen, c.author_date), ("alice", now, now));
    assert_eq!(c.subject(), "feat: deposits (#1)");
    let parent = c.parent.as_deref().expect("a parent");
    assert!(cs.iter().any(|p| p.sha == parent), "history up to the root comes along");
    assert!(matches!(facts.last(), Some(Fact::Commit(last)) if last.sha == sha), "oldest first");
    assert_eq!(g.cursor().0.as_deref(), Some(sha.as_str()));

    // Nothing new: one conditional request, answered 304, no facts.
    let before = Stats::read(&sim).await;
    assert!(g.poll(sim.sim.now()).await.expect("idle poll").is_empty());
    let d = Stats::read(&sim).await.since(&before);
    assert_eq!(d.total("github"), 1, "{}", d.describe("github"));
    assert_eq!(d.count("github", "GET", LIST_ROUTE, Some(304)), 1);
    assert_eq!(tel.snapshot("github").requests_not_modified, 1);

    // Three commits, one poll: one list request and one request per commit.
    let mut shas = vec![];
    for (i, f) in ["core/a.rs", "dagster/definitions.py", "apps/admin-panel/page.tsx"].iter().enumerate() {
        sim.step(120);
        shas.push(sim.commit(&[f], &format!("change {i}")));
    }
    let before = Stats::read(&sim).await;
    let facts = g.poll(sim.sim.now()).await.expect("poll");
    let d = Stats::read(&sim).await.since(&before);
    assert_eq!(commits(&facts).iter().map(|c| c.sha.clone()).collect::<Vec<_>>(), shas);
    assert_eq!(commits(&facts)[0].parent.as_deref(), Some(sha.as_str()));
    assert_eq!(d.count("github", "GET", LIST_ROUTE, Some(200)), 1, "{}", d.describe("github"));
    assert_eq!(d.count("github", "GET", COMMIT_ROUTE, Some(200)), 3, "{}", d.describe("github"));
    assert_eq!(d.total("github"), 4);
    let s = tel.snapshot("github");
    assert!(s.up && s.rate_limit_remaining.is_some_and(|r| r > 4000), "{s:?}");
    assert_eq!(s.last_success, Some(sim.sim.now()));
}

#[tokio::test]
async fn github_force_push_vanishes_the_rewritten_commits() {
    let sim = spawn_sim("lana", 2).await;
    let tel = Arc::new(SourceTelemetry::new());
    let mut g = github(&sim, &tel);
    let keep = sim.commit(&["core/a.rs"], "keep");
    sim.step(60);
    let gone1 = sim.commit(&["core/b.rs"], "rewritten 1");
    sim.step(60);
    let gone2 = sim.commit(&["core/c.rs"], "rewritten 2");
    g.poll(sim.sim.now()).await.expect("poll");
    assert_eq!(g.known().last(), Some(&gone2));

    // Force-push main back to `keep`, then land a different commit on it.
    sim.sim.with_world(|w| {
        let r = w.github.get_mut(REPO).expect("repo");
        let b = r.branches.get_mut("main").expect("main");
        let at = b.iter().position(|s| *s == keep).expect("keep on main");
        b.truncate(at + 1);
        if let Some(p) = r.positions.get_mut("main") {
            p.retain(|_, i| *i <= at);
        }
    });
    sim.step(60);
    let new = sim.commit(&["core/d.rs"], "replacement");

    let before = Stats::read(&sim).await;
    let now = sim.sim.now();
    let facts = g.poll(now).await.expect("poll after force-push");
    let d = Stats::read(&sim).await.since(&before);
    let vanished: Vec<&str> = facts
        .iter()
        .filter_map(|f| match f {
            Fact::Vanished { sha, at } if *at == now => Some(sha.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(vanished, vec![gone1.as_str(), gone2.as_str()]);
    let cs = commits(&facts);
    assert_eq!(cs.len(), 1);
    assert_eq!((cs[0].sha.as_str(), cs[0].parent.as_deref()), (new.as_str(), Some(keep.as_str())));
    assert_eq!(d.count("github", "GET", "/repos/{owner}/{repo}/compare/{*basehead}", Some(200)), 1);
    assert_eq!(g.known().last(), Some(&new));
    assert!(!g.known().contains(&gone1));
}

#[tokio::test]
async fn github_rate_limits_give_retry_after_and_no_request_until_then() {
    let sim = spawn_sim("lana", 3).await;
    let tel = Arc::new(SourceTelemetry::new());
    let mut g = github(&sim, &tel);
    add_fault(
        &sim,
        json!({"kind": "rate_limit", "service": "github", "status": 429, "retry_after_secs": 1, "count": 1}),
    )
    .await;
    let e = g.poll(sim.sim.now()).await.expect_err("rate limited");
    assert_eq!(e.kind, ErrorKind::RateLimited, "{e}");
    assert_eq!(e.retry_after, Some(Duration::from_secs(1)));
    assert_eq!(tel.snapshot("github").errors_of(ErrorKind::RateLimited), 1);
    assert!(!tel.snapshot("github").up);

    // Within the wait: refused without asking GitHub.
    let before = Stats::read(&sim).await;
    let e = g.poll(sim.sim.now()).await.expect_err("still waiting");
    assert_eq!(e.kind, ErrorKind::RateLimited);
    assert_eq!(Stats::read(&sim).await.since(&before).total("github"), 0);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(!g.poll(sim.sim.now()).await.expect("after the wait").is_empty());

    // The primary limit: 403 with `x-ratelimit-remaining: 0`, waiting until the reset.
    let mut g2 = github(&sim, &tel);
    add_fault(
        &sim,
        json!({"kind": "rate_limit", "service": "github", "status": 403, "retry_after_secs": 120, "count": 1}),
    )
    .await;
    let e = g2.poll(sim.sim.now()).await.expect_err("primary limit");
    assert_eq!(e.kind, ErrorKind::RateLimited, "{e}");
    assert!(e.retry_after.is_some_and(|d| d > Duration::from_secs(100) && d <= Duration::from_secs(121)), "{e:?}");
    assert_eq!(tel.snapshot("github").rate_limit_remaining, Some(0));
}

// ------------------------------------------------------------------ Concourse

#[tokio::test]
async fn concourse_builds_carry_commit_refs_tag_outputs_and_chart_messages() {
    let sim = spawn_sim("lana", 4).await;
    let tel = Arc::new(SourceTelemetry::new());
    let mut c = concourse(&sim, &tel);
    let mut facts = Facts::default();
    // Whatever the warm-up left running settles first.
    run_concourse(&sim, &mut c, &mut facts, 3600, 60).await;

    // Random failures would end the chain early: the builds of this commit succeed.
    let succeed = BuildOverride { duration: None, result: Some(SimStatus::Succeeded), fail_first_attempt: false };
    for (pipeline, job) in [
        ("lana-bank", "test-integration"),
        ("lana-bank", "test-bats"),
        ("lana-bank", "flake-check"),
        ("lana-bank", "build-rc"),
        ("lana-bank", "bump-image-in-chart-rc"),
        ("private-charts", "lana-bank-testflight"),
    ] {
        let now = sim.sim.now();
        let ov = Action::Override { pipeline: pipeline.into(), job: job.into(), ov: succeed.clone() };
        sim.sim.with_world(|w| w.schedule_action(now, ov));
    }
    let sha = sim.commit(&["core/lib.rs"], "feat: something (#42)");
    run_concourse(&sim, &mut c, &mut facts, 90 * 60, 30).await;

    for job in ["test-integration", "test-bats", "flake-check"] {
        let b = builds(&facts, "lana-bank", job)
            .into_iter()
            .find(|b| input_ref(b, "repo") == Some(sha.as_str()))
            .unwrap_or_else(|| panic!("no {job} build took {sha}: {:#?}", builds(&facts, "lana-bank", job)));
        assert!(b.status.is_finished() && b.resources_known, "{b:?}");
        assert!(b.start.is_some() && b.end >= b.start, "{b:?}");
        let url = format!("{}/teams/dev/pipelines/lana-bank/jobs/{job}/builds/{}", sim.url, b.name);
        assert_eq!(b.url, url.into());
        assert_eq!(b.inputs.iter().find(|i| i.step == "repo").map(|i| i.resource.as_str()), Some("repo"));
    }

    // build-rc tags `repo`: Concourse drops that input, the ref is in the output.
    let rc = builds(&facts, "lana-bank", "build-rc")
        .into_iter()
        .find(|b| b.outputs.iter().any(|o| o.step == "repo" && o.version.get("ref") == Some(&sha)))
        .unwrap_or_else(|| panic!("no build-rc put repo {sha}: {:#?}", builds(&facts, "lana-bank", "build-rc")));
    assert_eq!(rc.status, BuildStatus::Succeeded);
    assert!(input_ref(rc, "repo").is_none(), "the tagged input is dropped: {rc:?}");
    let digest =
        rc.outputs.iter().find(|o| o.step == "latest-image").and_then(|o| o.version.get("digest")).expect("digest");

    // The chart commit that bumped this image reaches testflight with its message.
    let tf = builds(&facts, "private-charts", "lana-bank-testflight")
        .into_iter()
        .find(|b| b.inputs.iter().any(|i| i.message.as_deref().is_some_and(|m| m.contains(digest))))
        .unwrap_or_else(|| {
            panic!("no testflight with {digest}: {:#?}", builds(&facts, "private-charts", "lana-bank-testflight"))
        });
    let chart = tf.inputs.iter().find(|i| i.step == "lana-bank-chart").expect("chart input");
    assert!(chart.message.as_deref().is_some_and(|m| m.contains("bump lana-bank image")), "{chart:?}");
    assert!(c.last_errors().is_empty(), "{:?}", c.last_errors());

    // Only GETs and the token POST ever reach Concourse.
    let all = Stats::read(&sim).await;
    for ((service, method, route, _), n) in &all.0 {
        if service == "concourse" {
            assert!(method == "GET" || (method == "POST" && route == TOKEN_ROUTE), "{n} × {method} {route}");
        }
    }
    assert_eq!(all.count("concourse", "POST", TOKEN_ROUTE, None), 1, "one login");

    // Let everything finish. A cycle once the jobs lists are due reads them again (one per
    // pipeline) besides the team's builds; an idle cycle is the builds list alone.
    run_concourse(&sim, &mut c, &mut facts, 4 * 3600, 120).await;
    let before = Stats::read(&sim).await;
    sim.step(JOBS_REFRESH);
    assert!(c.poll(sim.sim.now()).await.expect("refresh poll").is_empty());
    let d = Stats::read(&sim).await.since(&before);
    assert_eq!(d.total("concourse"), 4, "{}", d.describe("concourse"));
    assert_eq!(d.count("concourse", "GET", JOBS_ROUTE, Some(200)), 3);
    assert_eq!(d.count("concourse", "GET", BUILDS_ROUTE, Some(200)), 1);
    let before = Stats::read(&sim).await;
    sim.step(30);
    assert!(c.poll(sim.sim.now()).await.expect("idle poll").is_empty());
    let d = Stats::read(&sim).await.since(&before);
    println!("idle Concourse cycle ({} requests):\n{}", d.total("concourse"), d.describe("concourse"));
    assert_eq!(d.total("concourse"), 1, "{}", d.describe("concourse"));
    assert_eq!(d.count("concourse", "GET", BUILDS_ROUTE, Some(200)), 1);
}

#[tokio::test]
async fn concourse_logs_in_again_after_tokens_expire_without_an_error() {
    let sim = spawn_sim("lana", 5).await;
    let tel = Arc::new(SourceTelemetry::new());
    let mut c = concourse(&sim, &tel);
    c.poll(sim.sim.now()).await.expect("first poll");
    let before = Stats::read(&sim).await;
    let r = sim.client.post(format!("{}/_sim/expire-tokens", sim.url)).send().await.expect("expire");
    assert_eq!(r.status().as_u16(), 204);
    sim.step(30);
    c.poll(sim.sim.now()).await.expect("poll after expiry");
    assert!(c.last_errors().is_empty(), "{:?}", c.last_errors());
    let d = Stats::read(&sim).await.since(&before);
    assert_eq!(d.count("concourse", "POST", TOKEN_ROUTE, Some(200)), 1, "{}", d.describe("concourse"));
    assert_eq!(d.count("concourse", "GET", BUILDS_ROUTE, Some(401)), 1, "{}", d.describe("concourse"));

    // And before expiry runs out (24 h), without a 401.
    let before = Stats::read(&sim).await;
    sim.step(86_400 - 200);
    c.poll(sim.sim.now()).await.expect("poll near expiry");
    let d = Stats::read(&sim).await.since(&before);
    assert_eq!(d.count("concourse", "POST", TOKEN_ROUTE, Some(200)), 1, "{}", d.describe("concourse"));
    assert_eq!(d.count("concourse", "GET", JOBS_ROUTE, Some(401)), 0);
    assert_eq!(d.count("concourse", "GET", BUILDS_ROUTE, Some(401)), 0);
}

#[tokio::test]
async fn concourse_retries_a_5xx_burst_within_the_poll() {
    let sim = spawn_sim("lana", 6).await;
    let tel = Arc::new(SourceTelemetry::new());
    let mut c = concourse(&sim, &tel);
    c.poll(sim.sim.now()).await.expect("first poll");
    add_fault(&sim, json!({"kind": "server_error", "service": "concourse", "count": 2})).await;
    sim.step(30);
    c.poll(sim.sim.now()).await.expect("the burst is retried");
    assert!(c.last_errors().is_empty(), "{:?}", c.last_errors());
    let s = tel.snapshot("concourse");
    assert_eq!(s.errors_of(ErrorKind::Server), 2, "{s:?}");
    assert!(s.up);
}

#[tokio::test]
async fn concourse_malformed_resources_is_a_decode_error_and_the_next_poll_recovers() {
    let sim = spawn_sim("lana", 7).await;
    let tel = Arc::new(SourceTelemetry::new());
    let mut c = concourse(&sim, &tel);
    let mut facts = Facts::default();
    run_concourse(&sim, &mut c, &mut facts, 3600, 120).await;
    let sha = sim.commit(&["core/lib.rs"], "feat: x");
    sim.step(180);
    add_fault(&sim, json!({"kind": "malformed", "service": "concourse", "path_contains": "/api/v1/builds/"})).await;
    for f in c.poll(sim.sim.now()).await.expect("poll with garbled resources") {
        facts.apply(f);
    }
    let decode: Vec<&SourceError> = c.last_errors().iter().filter(|e| e.kind == ErrorKind::Decode).collect();
    assert!(!decode.is_empty(), "{:?}", c.last_errors());
    assert!(decode[0].what.contains("/resources"), "{}", decode[0]);
    assert!(tel.snapshot("concourse").errors_of(ErrorKind::Decode) >= 3, "three tries");
    let started = |facts: &Facts| {
        builds(facts, "lana-bank", "test-integration").into_iter().any(|b| input_ref(b, "repo") == Some(sha.as_str()))
    };
    assert!(!started(&facts));

    clear_faults(&sim).await;
    sim.step(30);
    for f in c.poll(sim.sim.now()).await.expect("poll after the fault") {
        facts.apply(f);
    }
    assert!(c.last_errors().is_empty(), "{:?}", c.last_errors());
    assert!(started(&facts), "{:#?}", builds(&facts, "lana-bank", "test-integration"));
}

#[tokio::test]
async fn concourse_gone_pipeline_is_not_found_and_the_others_are_polled() {
    let sim = spawn_sim("lana", 8).await;
    let tel = Arc::new(SourceTelemetry::new());
    let mut c = concourse(&sim, &tel);
    let mut facts = Facts::default();
    run_concourse(&sim, &mut c, &mut facts, 3600, 300).await;
    let staging_builds = builds(&facts, "galoy-staging", "galoy-staging-lana-bank").len();

    add_fault(&sim, json!({"kind": "pipeline_gone", "pipeline": "galoy-staging"})).await;
    let before = Stats::read(&sim).await;
    // The jobs lists, which notice a missing pipeline, are read again every JOBS_REFRESH.
    sim.step(JOBS_REFRESH);
    c.poll(sim.sim.now()).await.expect("the other pipelines still count");
    let d = Stats::read(&sim).await.since(&before);
    assert_eq!(c.last_errors().len(), 1, "{:?}", c.last_errors());
    assert_eq!(c.last_errors()[0].kind, ErrorKind::NotFound);
    assert!(c.last_errors()[0].what.contains("galoy-staging"));
    assert_eq!(tel.snapshot("concourse").errors_of(ErrorKind::NotFound), 1, "404 is not retried");
    assert_eq!(d.count("concourse", "GET", JOBS_ROUTE, Some(200)), 2, "{}", d.describe("concourse"));

    // It comes back: its jobs list (and only that one) is read again the next cycle, its builds
    // were kept.
    clear_faults(&sim).await;
    let before = Stats::read(&sim).await;
    sim.step(30);
    c.poll(sim.sim.now()).await.expect("poll");
    assert!(c.last_errors().is_empty());
    let d = Stats::read(&sim).await.since(&before);
    assert_eq!(d.count("concourse", "GET", JOBS_ROUTE, Some(200)), 1, "{}", d.describe("concourse"));
    assert_eq!(builds(&facts, "galoy-staging", "galoy-staging-lana-bank").len(), staging_builds);
}

#[tokio::test]
async fn credentials_never_appear_in_errors() {
    let sim = spawn_sim("lana", 9).await;
    let tel = Arc::new(SourceTelemetry::new());

    let password = "SECRET-pw-4f9a1c";
    let mut c = concourse_with(
        &sim,
        &tel,
        ConcourseAuth::Password { username: "deploy-journey".into(), password: Secret::new(password) },
    );
    let e = c.poll(sim.sim.now()).await.expect_err("wrong password");
    assert_eq!(e.kind, ErrorKind::Auth, "{e}");
    assert_no_secret(&e, password);
    assert!(format!("{c:?}").find(password).is_none());

    let bearer = "SECRET-bearer-77e0d2";
    let mut c = concourse_with(&sim, &tel, ConcourseAuth::Bearer(Secret::new(bearer)));
    let e = c.poll(sim.sim.now()).await.expect_err("unknown bearer token");
    assert_eq!(e.kind, ErrorKind::Auth, "{e}");
    assert_no_secret(&e, bearer);
    for e in c.last_errors() {
        assert_no_secret(e, bearer);
    }

    let token = "ghp_SECRET_token_5b7c";
    *sim.sim.github_tokens.write().unwrap() = vec!["ghp_the-only-valid-one".into()];
    init_crypto();
    let g = GithubSource::new(github_cfg(&sim, token), tel.clone()).expect("source");
    let mut g = g;
    let e = g.poll(sim.sim.now()).await.expect_err("bad credentials");
    assert_eq!(e.kind, ErrorKind::Auth, "{e}");
    assert_no_secret(&e, token);
    assert!(format!("{g:?}").find(token).is_none());
}

/// One simulated lana day (calibrated random commits), both sources polled every 30 s: the
/// request bill, and every watched build of the simulator seen with its resources.
#[tokio::test]
async fn one_simulated_lana_day_polled_every_30s() {
    use deploy_journey::sim::workload::{LanaWorkload, schedule_all};
    let sim = spawn_sim("lana", 10).await;
    let tel = Arc::new(SourceTelemetry::new());
    let mut g = github(&sim, &tel);
    let mut c = concourse(&sim, &tel);
    let day = 86_400;
    let actions = LanaWorkload::new(10).generate(START, START + day);
    let n_commits = actions.len();
    sim.sim.with_world(|w| schedule_all(w, &actions));

    let mut facts = Facts::default();
    let wall = Instant::now();
    let before = Stats::read(&sim).await;
    let cycles = day / 30;
    let mut first_cycle = Stats::default();
    for cycle in 0..cycles {
        if cycle == 1 {
            first_cycle = Stats::read(&sim).await.since(&before);
        }
        sim.step(30);
        let now = sim.sim.now();
        for f in g.poll(now).await.expect("github poll") {
            facts.apply(f);
        }
        for f in c.poll(now).await.expect("concourse poll") {
            facts.apply(f);
        }
    }
    let d = Stats::read(&sim).await.since(&before);
    println!(
        "first cycle (nothing known; newest {} builds per job): github {}, concourse {} requests:\n{}",
        deploy_journey::sources::concourse::INITIAL_BUILDS,
        first_cycle.total("github"),
        first_cycle.total("concourse"),
        first_cycle.describe("concourse")
    );
    println!(
        "one lana day, {cycles} cycles of 30 s, {n_commits} commits, {} builds seen, in {:.1} s:\n  github {} requests ({:.2}/cycle):\n{}\n  concourse {} requests ({:.2}/cycle):\n{}",
        facts.builds.len(),
        wall.elapsed().as_secs_f64(),
        d.total("github"),
        d.total("github") as f64 / cycles as f64,
        d.describe("github"),
        d.total("concourse"),
        d.total("concourse") as f64 / cycles as f64,
        d.describe("concourse"),
    );

    // The bill: one team builds list per cycle (the jobs lists every JOBS_REFRESH, resources and
    // messages only where something changed) — about one request per cycle in all. The first
    // read lists the warm-up's history twice: walking back, then forward (reruns).
    let first_pages = first_cycle.count("concourse", "GET", BUILDS_ROUTE, Some(200));
    assert_eq!(first_pages, 2, "one page back, one forward: {}", first_cycle.describe("concourse"));
    assert_eq!(
        d.count("concourse", "GET", BUILDS_ROUTE, Some(200)),
        cycles as u64 - 1 + first_pages,
        "{}",
        d.describe("concourse")
    );
    assert_eq!(d.count("concourse", "GET", JOBS_ROUTE, Some(200)), 3 * (day / JOBS_REFRESH) as u64);
    assert!(d.total("concourse") * 10 <= cycles as u64 * 12, "{}", d.describe("concourse"));

    // Completeness: every build of a watched job the simulator ran is a fact with its status,
    // and every finished one has its resources.
    let watched = lana_pipelines();
    let expected: Vec<(i64, String)> = sim.sim.with_world(|w| {
        w.concourse
            .builds
            .iter()
            .filter(|b| b.create_time >= START)
            .filter_map(|b| {
                let p = &w.concourse.pipelines[b.pipeline];
                let j = &p.jobs[b.job];
                watched
                    .iter()
                    .any(|wp| wp.name == p.name && wp.jobs.contains(&j.name))
                    .then(|| (b.id, b.status.as_str().to_string()))
            })
            .collect()
    });
    assert!(expected.len() > 20, "a day runs builds: {}", expected.len());
    for (id, status) in &expected {
        let b = facts.builds.get(id).unwrap_or_else(|| panic!("build {id} never seen"));
        assert_eq!(b.status.as_str(), status, "{b:?}");
        if b.status.is_finished() {
            assert!(b.resources_known, "{b:?}");
        }
    }
    let landed = facts.commits.values().filter(|c| c.first_seen >= START).count();
    assert!(landed >= n_commits, "{landed} commits seen of {n_commits} landed");
    assert!(tel.snapshot("github").up && tel.snapshot("concourse").up);
}

#[tokio::test]
async fn github_pull_request_calls_for_watch() {
    use deploy_journey::sim::engine::CommitSpec;
    use deploy_journey::sim::model::ReviewState;
    let sim = spawn_sim("lana", 11).await;
    let tel = Arc::new(SourceTelemetry::new());
    let g = github(&sim, &tel);
    let now = sim.sim.now();
    sim.sim.with_world(|w| {
        let spec = CommitSpec {
            message: "feat: x".into(),
            files: vec!["core/x.rs".into()],
            author: alice(),
            author_date: None,
        };
        w.schedule_action(now, Action::Commit { repo: REPO.into(), branch: "feature-x".into(), spec });
        let open = Action::OpenPull {
            repo: REPO.into(),
            number_hint: Some(4321),
            title: "Add x".into(),
            head: "feature-x".into(),
            files: vec!["core/x.rs".into()],
            author: "alice".into(),
            draft: false,
            coded_for: None,
        };
        w.schedule_action(now, open);
        let review =
            Action::Review { repo: REPO.into(), number: 4321, user: "bob".into(), state: ReviewState::Approved };
        w.schedule_action(now, review);
    });
    sim.step(1);

    let pr = g.pull_request(4321).await.expect("pull request");
    assert_eq!((pr.number, pr.state.as_str(), pr.merged, pr.draft), (4321, "open", false, false));
    assert_eq!(
        (pr.head_ref.as_str(), pr.base_ref.as_str(), pr.author.as_deref()),
        ("feature-x", "main", Some("alice"))
    );
    let reviews = g.reviews(4321).await.expect("reviews");
    assert_eq!(reviews.len(), 1);
    assert_eq!((reviews[0].user.as_deref(), reviews[0].state.as_str()), (Some("bob"), "APPROVED"));

    let e = g.merge_squash(4321, &"0".repeat(40)).await.expect_err("stale head");
    assert_eq!(e.kind, ErrorKind::Client, "{e}");
    let merged = g.merge_squash(4321, &pr.head_sha).await.expect("merge");
    let c = g.commit(&merged[..8]).await.expect("commit by prefix");
    assert_eq!(c.sha, merged);
    assert_eq!(c.files, vec!["core/x.rs"]);
    assert!(g.pull_request(4321).await.expect("merged PR").merged);
    assert_eq!(g.pull_request(999_999).await.expect_err("no such PR").kind, ErrorKind::NotFound);
}

#[tokio::test]
async fn concourse_pipeline_config_and_build_log_tails_for_watch() {
    let sim = spawn_sim("lana", 12).await;
    let tel = Arc::new(SourceTelemetry::new());
    let mut c = concourse(&sim, &tel);
    let mut facts = Facts::default();
    run_concourse(&sim, &mut c, &mut facts, 3600, 300).await;

    let config = c.pipeline_config("lana-bank").await.expect("config");
    assert!(config["jobs"].as_array().is_some_and(|j| j.iter().any(|j| j["name"] == "build-rc")), "{config}");
    assert_eq!(c.pipeline_config("no-such-pipeline").await.expect_err("404").kind, ErrorKind::NotFound);

    let done =
        facts.builds.values().find(|b| b.status.is_finished() && &*b.job == "test-bats").expect("a finished build");
    let tail = c.build_log_tail(done.id, 3).await.expect("log tail");
    assert!(!tail.is_empty() && tail.len() <= 3, "{tail:?}");
    let all = c.build_log_tail(done.id, 1000).await.expect("whole log");
    assert!(all.iter().any(|l| l.starts_with("fetched repo")), "{all:?}");
    assert_eq!(all[all.len() - tail.len()..], tail[..]);

    // A running build's stream does not end: the tail so far, after a bounded wait.
    sim.commit(&["core/lib.rs"], "feat: y");
    sim.step(300);
    run_concourse(&sim, &mut c, &mut facts, 60, 60).await;
    let running = facts.builds.values().find(|b| b.status == BuildStatus::Started).expect("a running build");
    let mut quick = ConcourseSource::new(
        ConcourseConfig { timeout: Duration::from_secs(1), ..concourse_cfg(&sim, viewer()) },
        tel.clone(),
    )
    .expect("source");
    let t = Instant::now();
    let tail = quick.build_log_tail(running.id, 10).await.expect("running tail");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert!(tail.iter().any(|l| l.starts_with("fetched")), "{tail:?}");
}

/// On a public pipeline a token that died server-side gets Concourse's public view (200s,
/// metadata hidden) instead of a 401: a finished build's hidden metadata triggers a re-login.
#[tokio::test]
async fn concourse_notices_a_dead_token_on_public_pipelines_by_vanished_metadata() {
    let sim = spawn_sim("lana", 13).await;
    sim.sim.with_world(|w| w.concourse.pipelines.iter_mut().for_each(|p| p.public = true));
    let tel = Arc::new(SourceTelemetry::new());
    let mut c = concourse(&sim, &tel);
    let mut facts = Facts::default();
    run_concourse(&sim, &mut c, &mut facts, 3600, 300).await;
    sim.client.post(format!("{}/_sim/expire-tokens", sim.url)).send().await.expect("expire");

    let before = Stats::read(&sim).await;
    let succeed = BuildOverride { duration: None, result: Some(SimStatus::Succeeded), fail_first_attempt: false };
    for (pipeline, job) in [
        ("lana-bank", "test-integration"),
        ("lana-bank", "test-bats"),
        ("lana-bank", "flake-check"),
        ("lana-bank", "build-rc"),
        ("lana-bank", "bump-image-in-chart-rc"),
        ("private-charts", "lana-bank-testflight"),
    ] {
        let now = sim.sim.now();
        let ov = Action::Override { pipeline: pipeline.into(), job: job.into(), ov: succeed.clone() };
        sim.sim.with_world(|w| w.schedule_action(now, ov));
    }
    sim.commit(&["core/lib.rs"], "feat: z");
    run_concourse(&sim, &mut c, &mut facts, 90 * 60, 60).await;
    let d = Stats::read(&sim).await.since(&before);
    assert_eq!(d.count("concourse", "GET", JOBS_ROUTE, Some(401)), 0, "public: no 401 to notice");
    assert_eq!(d.count("concourse", "POST", TOKEN_ROUTE, Some(200)), 1, "{}", d.describe("concourse"));
    let tf: Vec<&BuildFact> = builds(&facts, "private-charts", "lana-bank-testflight")
        .into_iter()
        .filter(|b| b.start.is_some_and(|s| s > START + 3600))
        .collect();
    assert!(!tf.is_empty());
    for b in tf {
        let chart = b.inputs.iter().find(|i| i.step == "lana-bank-chart").expect("chart input");
        assert!(chart.message.as_deref().is_some_and(|m| m.contains("bump lana-bank image")), "{b:?}");
    }
}

/// A garbled sha in GitHub's answer is a decode error, never a fact (shas become trace ids).
#[tokio::test]
async fn a_malformed_sha_from_github_is_a_decode_error() {
    crate::support::init_crypto();
    let app = axum::Router::new().route(
        "/repos/{o}/{r}/commits",
        axum::routing::get(|| async {
            axum::Json(serde_json::json!([{"sha": "zz\u{00e9}not-a-sha", "commit": {"author": {"name": "a", "email": "a@x", "date": "2026-03-02T08:00:00Z"}, "committer": {"name": "a", "email": "a@x", "date": "2026-03-02T08:00:00Z"}, "message": "x"}, "parents": []}]))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let cfg = deploy_journey::sources::GithubConfig {
        api_url: url,
        owner: "o".into(),
        repo: "r".into(),
        branch: "main".into(),
        token: None,
        timeout: std::time::Duration::from_secs(5),
        initial_commits: 10,
    };
    let telemetry = std::sync::Arc::new(deploy_journey::sources::telemetry::SourceTelemetry::new());
    let mut gh = deploy_journey::sources::github::GithubSource::new(cfg, telemetry.clone()).unwrap();
    gh.set_retry_base_delay(std::time::Duration::from_millis(1));
    let err = gh.poll(0).await.expect_err("a garbled sha must not become a fact");
    assert_eq!(err.kind, deploy_journey::sources::ErrorKind::Decode, "{err}");
    assert!(telemetry.snapshot("github").errors_of(deploy_journey::sources::ErrorKind::Decode) >= 1);
}

// ------------------------------------------------------------------ complete history reads

/// The ids a client gets walking the team's builds back from the newest through Concourse's own
/// `rel="next"` links (what the first read did alone before).
async fn link_walk_back(sim: &TestSim) -> BTreeSet<i64> {
    let r = sim
        .client
        .post(format!("{}/sky/issuer/token", sim.url))
        .basic_auth("fly", Some("Zmx5"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=password&username=deploy-journey&password=viewer-password&scope=openid")
        .send()
        .await
        .expect("token");
    let token = r.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_string();
    let mut url = format!("{}/api/v1/teams/dev/builds?limit=100", sim.url);
    let mut ids = BTreeSet::new();
    for _ in 0..100 {
        let r = sim.client.get(&url).bearer_auth(&token).send().await.expect("builds");
        let next = r.headers().get_all("link").iter().find_map(|v| {
            let v = v.to_str().ok()?;
            if !v.contains("rel=\"next\"") {
                return None;
            }
            Some(v[v.find('<')? + 1..v.find('>')?].to_string())
        });
        let page: Vec<Value> = r.json().await.unwrap();
        ids.extend(page.iter().map(|b| b["id"].as_i64().unwrap()));
        match next {
            Some(n) => url = n,
            None => break,
        }
    }
    ids
}

/// The ids of a job's builds in the simulator, and of the reruns among them (→ original).
fn sim_job_builds(sim: &TestSim, pipeline: &str, job: &str) -> (Vec<i64>, BTreeMap<i64, i64>) {
    sim.sim.with_world(|w| {
        let (p, j) = w.job_index(pipeline, job).expect("job");
        let ids = w.concourse.pipelines[p].jobs[j].builds.clone();
        let reruns =
            ids.iter().filter_map(|id| w.concourse.build(*id).and_then(|b| Some((*id, b.rerun_of?)))).collect();
        (ids, reruns)
    })
}

/// test-bats fails, and is rerun after more than a page of team builds; a few more builds
/// follow. Returns (original id, rerun id).
async fn rerun_a_page_later(sim: &TestSim) -> (i64, i64) {
    let bats = BuildOverride { result: Some(SimStatus::Failed), ..Default::default() };
    sim.schedule_now(Action::Override { pipeline: "lana-bank".into(), job: "test-bats".into(), ov: bats });
    sim.commit(&["core/lib.rs"], "feat: breaks bats");
    sim.step(45 * 60);
    let (ids, _) = sim_job_builds(sim, "lana-bank", "test-bats");
    let orig = *ids.last().expect("a test-bats build");
    let name = sim.sim.with_world(|w| {
        let b = w.concourse.build(orig).unwrap();
        assert_eq!(b.status, SimStatus::Failed, "the forced failure");
        b.name.clone()
    });
    let newer = |sim: &TestSim| sim.sim.with_world(|w| w.concourse.builds.iter().filter(|b| b.id > orig).count());
    let mut k = 0;
    while newer(sim) < 150 {
        sim.commit(&["core/lib.rs"], &format!("feat: change {k}"));
        sim.step(15 * 60);
        k += 1;
        assert!(k < 100, "the simulator makes no builds");
    }
    let rerun = Action::Rerun {
        pipeline: "lana-bank".into(),
        job: "test-bats".into(),
        build_name: Some(name),
        by: "alice".into(),
    };
    sim.schedule_now(rerun);
    sim.step(60);
    sim.commit(&["core/lib.rs"], "feat: after the rerun");
    sim.step(20 * 60);
    let (_, reruns) = sim_job_builds(sim, "lana-bank", "test-bats");
    let rerun = reruns.iter().find(|(_, o)| **o == orig).map(|(r, _)| *r).expect("the rerun");
    (orig, rerun)
}

/// Concourse orders build lists by COALESCE(rerun_of, id) but cuts `to=` pages by id, so walking
/// back through `rel="next"` never lists a rerun whose original is on a later page. The first
/// read must list it anyway, in the cycle it starts (and with the cursor past it, it would never
/// come again). Also measured: what the forward pass costs on top of the walk back.
#[tokio::test]
async fn concourse_first_read_lists_a_rerun_whose_original_is_pages_back() {
    let sim = spawn_sim("lana", 21).await;
    let (orig, rerun) = rerun_a_page_later(&sim).await;
    let walked = link_walk_back(&sim).await;
    assert!(walked.contains(&orig) && !walked.contains(&rerun), "precondition: the link walk misses rerun {rerun}");

    let tel = Arc::new(SourceTelemetry::new());
    let mut c = concourse(&sim, &tel);
    let before = Stats::read(&sim).await;
    let mut facts = Facts::default();
    for f in c.poll(sim.sim.now()).await.expect("first read") {
        facts.apply(f);
    }
    let cost = Stats::read(&sim).await.since(&before);
    let pages = cost.count("concourse", "GET", BUILDS_ROUTE, Some(200));
    println!("first read: {pages} builds-list pages; all requests:\n{}", cost.describe("concourse"));
    let b = facts.builds.get(&rerun).unwrap_or_else(|| panic!("rerun {rerun} of {orig} not read"));
    assert_eq!(b.rerun_of, Some(orig));
    assert!(pages >= 4, "a history of several pages (walked back, then forward), got {pages}");
    assert!(facts.builds.contains_key(&orig));
    // Every test-bats build the simulator has (fewer than the initial 50) was read.
    let (ids, _) = sim_job_builds(&sim, "lana-bank", "test-bats");
    let read: Vec<i64> = builds(&facts, "lana-bank", "test-bats").iter().map(|b| b.id).collect();
    assert_eq!(read, ids);

    // An idle cycle after it is still one request.
    let before = Stats::read(&sim).await;
    c.poll(sim.sim.now()).await.expect("idle poll");
    assert_eq!(Stats::read(&sim).await.since(&before).total("concourse"), 1);
}

/// Steady state: the cursor poll (`from=`) lists a rerun of a build far below the cursor (it
/// sorts early in the ascending query). After a pause longer than a page of builds, with such a
/// rerun late in it, following Concourse's `rel="previous"` link would jump from the page's newest
/// build to the rerun's id and skip the builds between; every build must be read.
#[tokio::test]
async fn concourse_cursor_polls_list_reruns_of_old_builds_and_skip_nothing_after_a_pause() {
    let sim = spawn_sim("lana", 22).await;
    let tel = Arc::new(SourceTelemetry::new());
    let mut c = concourse(&sim, &tel);
    let mut facts = Facts::default();
    run_concourse(&sim, &mut c, &mut facts, 600, 60).await;
    let (orig, rerun) = rerun_a_page_later(&sim).await;
    for f in c.poll(sim.sim.now()).await.expect("poll after the pause") {
        facts.apply(f);
    }
    run_concourse(&sim, &mut c, &mut facts, 3600, 60).await;
    assert_eq!(facts.builds.get(&rerun).and_then(|b| b.rerun_of), Some(orig), "rerun {rerun} read");
    for job in ["test-integration", "test-bats", "flake-check", "build-rc"] {
        let (ids, _) = sim_job_builds(&sim, "lana-bank", job);
        let read: BTreeSet<i64> = builds(&facts, "lana-bank", job).iter().map(|b| b.id).collect();
        let missing: Vec<i64> = ids.iter().filter(|id| !read.contains(id)).copied().collect();
        assert!(missing.is_empty(), "{job}: builds never read: {missing:?}");
    }

    // A rerun of an old build, later: the next cursor poll lists it.
    let (ids, _) = sim_job_builds(&sim, "lana-bank", "flake-check");
    let old = sim.sim.with_world(|w| w.concourse.build(ids[ids.len() / 2]).unwrap().name.clone());
    sim.schedule_now(Action::Rerun {
        pipeline: "lana-bank".into(),
        job: "flake-check".into(),
        build_name: Some(old),
        by: "bob".into(),
    });
    sim.step(30);
    let got: Vec<Fact> = c.poll(sim.sim.now()).await.expect("poll");
    let (_, reruns) = sim_job_builds(&sim, "lana-bank", "flake-check");
    let (new_rerun, _) = reruns.iter().max().expect("the rerun");
    assert!(
        got.iter().any(|f| matches!(f, Fact::Build(b) if b.id == *new_rerun)),
        "the rerun {new_rerun} of an old build is in the next poll"
    );
}

/// After a pause longer than a cycle's page budget (20 pages of 100), a poll lists what it can
/// and says it has not caught up; its cursor stays where its listing is complete, so the next
/// polls read on and no build is missed.
#[tokio::test]
async fn concourse_a_pause_longer_than_the_page_budget_is_read_over_several_polls() {
    use deploy_journey::sim::workload::{LanaWorkload, schedule_all};
    let sim = spawn_sim("lana", 23).await;
    let tel = Arc::new(SourceTelemetry::new());
    let mut c = concourse(&sim, &tel);
    let mut facts = Facts::default();
    run_concourse(&sim, &mut c, &mut facts, 60, 60).await;
    assert!(c.caught_up());
    let days = 40;
    let actions = LanaWorkload::new(23).generate(sim.sim.now(), sim.sim.now() + days * 86_400);
    sim.sim.with_world(|w| schedule_all(w, &actions));
    sim.step(days * 86_400);
    let before = sim.sim.with_world(|w| w.concourse.builds.len());
    let polls = poll_until_caught_up(&sim, &mut c, &mut facts).await;
    println!("{before} builds in all; caught up after {polls} polls");
    assert!(polls >= 2, "the pause is longer than one poll's budget");
    assert_every_build_read(
        &sim,
        &facts,
        "lana-bank",
        &["test-integration", "test-bats", "build-rc", "bump-image-in-chart-rc"],
    );
    assert_every_build_read(&sim, &facts, "galoy-staging", &["galoy-staging-lana-bank"]);
}

/// Polls until the source says it reached the newest build; the number of polls it took.
async fn poll_until_caught_up(sim: &TestSim, c: &mut ConcourseSource, facts: &mut Facts) -> usize {
    let mut polls = 0;
    loop {
        for f in c.poll(sim.sim.now()).await.expect("poll") {
            facts.apply(f);
        }
        polls += 1;
        if c.caught_up() {
            return polls;
        }
        assert!(polls < 10, "never caught up");
    }
}

/// Every build the simulator made for these jobs is among the facts.
fn assert_every_build_read(sim: &TestSim, facts: &Facts, pipeline: &str, jobs: &[&str]) {
    for job in jobs {
        let (ids, _) = sim_job_builds(sim, pipeline, job);
        let read: BTreeSet<i64> = builds(facts, pipeline, job).iter().map(|b| b.id).collect();
        let missing: Vec<i64> = ids.iter().filter(|id| !read.contains(id)).copied().collect();
        assert!(missing.is_empty(), "{job}: builds never read: {missing:?}");
    }
}

/// A watched build that stays unfinished (here: running for 80 days) while more than a cycle's
/// pages of builds pass above it: each poll still lists its status, and the new builds are read
/// too (a walk from the unfinished build alone would read the same pages every cycle).
#[tokio::test]
async fn concourse_a_long_unfinished_build_does_not_hold_back_the_new_builds() {
    use deploy_journey::sim::workload::{LanaWorkload, schedule_all};
    let sim = spawn_sim("lana", 24).await;
    let tel = Arc::new(SourceTelemetry::new());
    let mut c = concourse(&sim, &tel);
    let mut facts = Facts::default();
    run_concourse(&sim, &mut c, &mut facts, 600, 60).await;
    let long = BuildOverride { duration: Some(80 * 86_400), ..Default::default() };
    sim.schedule_now(Action::Override {
        pipeline: "lana-bank".into(),
        job: "build-dagster-edge-image".into(),
        ov: long,
    });
    sim.commit(&["dagster/definitions.py"], "feat: dagster");
    run_concourse(&sim, &mut c, &mut facts, 1200, 60).await;
    let (ids, _) = sim_job_builds(&sim, "lana-bank", "build-dagster-edge-image");
    let long_id = *ids.last().expect("the long build");
    assert_eq!(facts.builds[&long_id].status, BuildStatus::Started);

    let days = 40;
    let actions = LanaWorkload::new(24).generate(sim.sim.now(), sim.sim.now() + days * 86_400);
    sim.sim.with_world(|w| schedule_all(w, &actions));
    sim.step(days * 86_400);
    let above = sim.sim.with_world(|w| w.concourse.builds.iter().filter(|b| b.id > long_id).count());
    assert!(above > 2100, "more than a cycle's pages above the unfinished build: {above}");
    let polls = poll_until_caught_up(&sim, &mut c, &mut facts).await;
    assert_eq!(facts.builds[&long_id].status, BuildStatus::Started, "still running, still listed");
    assert_every_build_read(&sim, &facts, "lana-bank", &["test-integration", "test-bats", "build-rc"]);
    // Steady state: one cycle is the walk from the unfinished build plus one page of new builds.
    sim.step(60);
    let before = Stats::read(&sim).await;
    c.poll(sim.sim.now()).await.expect("poll");
    let pages = Stats::read(&sim).await.since(&before).count("concourse", "GET", BUILDS_ROUTE, Some(200));
    println!("{above} builds above the unfinished one; caught up after {polls} polls; then {pages} pages a cycle");
}

/// A server that answers every request with a 302 to itself, `/loop?token=…` (the query must not
/// be shown).
async fn redirecting_server() -> String {
    use axum::response::IntoResponse;
    let app = axum::Router::new().fallback(|| async {
        (axum::http::StatusCode::FOUND, [(axum::http::header::LOCATION, "/loop?token=s3cret-query")]).into_response()
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    url
}

/// A redirect names its status and Location and counts as a client error: Concourse's (not
/// followed) and GitHub's loop (followed until the limit), not `connect`.
#[tokio::test]
async fn redirect_errors_name_status_and_location_and_count_as_client_errors() {
    init_crypto();
    let url = redirecting_server().await;
    let tel = Arc::new(SourceTelemetry::new());
    let cfg = ConcourseConfig {
        url: url.clone(),
        team: "dev".into(),
        auth: viewer(),
        pipelines: lana_pipelines(),
        timeout: Duration::from_secs(5),
    };
    let mut c = ConcourseSource::new(cfg, tel.clone()).unwrap();
    c.set_retry_base_delay(Duration::from_millis(5));
    let e = c.poll(0).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Client, "{e:?}");
    assert!(e.detail.starts_with("HTTP 302: redirect to \"/loop\", not followed"), "{}", e.detail);
    assert!(!e.to_string().contains("s3cret-query"), "{e}");
    assert_eq!(tel.snapshot("concourse").errors_of(ErrorKind::Client), 1);

    let cfg = GithubConfig {
        api_url: url.clone(),
        owner: "GaloyMoney".into(),
        repo: "lana-bank".into(),
        branch: "main".into(),
        token: Some(Secret::new("ghp_redirect-test")),
        timeout: Duration::from_secs(5),
        initial_commits: 20,
    };
    let mut g = GithubSource::new(cfg, tel.clone()).unwrap();
    g.set_retry_base_delay(Duration::from_millis(5));
    let e = g.poll(0).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Client, "{e:?}");
    assert!(e.detail.contains(&format!("redirect loop: HTTP 302 to {url}/loop")), "{}", e.detail);
    assert!(!e.to_string().contains("s3cret-query"), "{e}");
    let s = tel.snapshot("github");
    assert_eq!((s.errors_of(ErrorKind::Client), s.errors_of(ErrorKind::Connect)), (1, 0), "{s:?}");
}
