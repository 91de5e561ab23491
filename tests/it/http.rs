//! The exporter's own HTTP surface: webhook verification and the journeys API errors.

use std::sync::Arc;
use std::time::Duration;

use deploy_journey::http::{Shared, WebhookContext, routes};
use deploy_journey::sources::Secret;
use hmac::Mac;

async fn serve(shared: Arc<Shared>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, routes(shared)).await;
    });
    url
}

fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn woke(shared: &Shared) -> bool {
    tokio::time::timeout(Duration::from_millis(150), shared.poll_now.notified()).await.is_ok()
}

#[tokio::test]
async fn push_webhooks_need_a_valid_signature_and_wake_the_poll_loop() {
    let shared = Arc::new(Shared::default());
    shared.set_webhook(WebhookContext { secret: Secret::new("s3cr3t-hook"), branch: "main".into() });
    let url = serve(shared.clone()).await;
    let c = crate::support::client();
    let body = br#"{"ref":"refs/heads/main","after":"abc"}"#.to_vec();
    let post = |sig: Option<String>, event: &str| {
        let mut r = c.post(format!("{url}/webhooks/github")).header("x-github-event", event).body(body.clone());
        if let Some(s) = sig {
            r = r.header("x-hub-signature-256", s);
        }
        r.send()
    };
    let cases = [
        (None, 401, "missing signature"),
        (Some("sha256=zz".to_string()), 401, "malformed signature"),
        (Some(sign("wrong-secret", &body)), 401, "wrong secret"),
    ];
    for (sig, want, what) in cases {
        let r = post(sig, "push").await.unwrap();
        assert_eq!(r.status().as_u16(), want, "{what}");
        assert!(!woke(&shared).await, "{what}: nothing may be processed");
    }
    let r = post(Some(sign("s3cr3t-hook", &body)), "push").await.unwrap();
    assert_eq!(r.status().as_u16(), 202);
    assert!(woke(&shared).await, "a verified push to main polls now");
    // A push to another branch is verified but changes nothing.
    let other = br#"{"ref":"refs/heads/feature"}"#.to_vec();
    let r = c
        .post(format!("{url}/webhooks/github"))
        .header("x-github-event", "push")
        .header("x-hub-signature-256", sign("s3cr3t-hook", &other))
        .body(other)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    assert!(!woke(&shared).await);
}

#[tokio::test]
async fn webhooks_are_off_without_a_secret_and_bad_journey_queries_say_why() {
    let shared = Arc::new(Shared::default());
    let url = serve(shared).await;
    let c = crate::support::client();
    let r = c.post(format!("{url}/webhooks/github")).body("{}").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let r = c.get(format!("{url}/api/v1/journeys/zz")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.text().await.unwrap().contains("prefix of at least 4 hex digits"));
    let r = c.get(format!("{url}/api/v1/journeys/abcd")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let r = c.get(format!("{url}/api/v1/journeys?state=stuck")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let r = c.get(format!("{url}/readyz")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 503, "not ready before every source answered");
}

#[tokio::test]
async fn the_landing_page_lists_commits_in_flight_and_escapes_what_it_shows() {
    use deploy_journey::core::journey::{CommitFact, Fact, Facts, derive};
    use deploy_journey::http::Snapshot;
    let cfg = crate::journeys::example_config("lana", "http://127.0.0.1:1");
    let mut facts = Facts::default();
    let now = deploy_journey::clock::unix_now();
    facts.apply(Fact::Commit(CommitFact {
        sha: "1234567890abcdef1234567890abcdef12345678".into(),
        parent: None,
        author: "mallory".into(),
        author_date: now - 600,
        committer_date: now - 600,
        message: "fix: <script>alert(1)</script> & more".into(),
        files: vec!["core/a.rs".into()],
        first_seen: now - 600,
    }));
    let shared = Arc::new(Shared::default());
    shared.publish(Snapshot {
        etas: Default::default(),
        derived: derive(&facts, &cfg.core(), now),
        now,
        environments: cfg.environments(),
        repository: "GaloyMoney/lana-bank".into(),
        repository_url: String::new(),
        stage_builds: vec![],
        baseline: Default::default(),
        log_excerpts: Default::default(),
        journey_totals: None,
    });
    let url = serve(shared).await;
    let r = crate::support::client().get(format!("{url}/")).send().await.unwrap();
    assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    let page = r.text().await.unwrap();
    assert!(page.contains("<code>1234567</code>"), "{page}");
    assert!(page.contains("fix: &lt;script&gt;alert(1)&lt;/script&gt; &amp; more"));
    assert!(!page.contains("<script>"));
    assert!(page.contains("href=\"/metrics\"") && page.contains("/api/v1/journeys"));
    // The commit should trigger `repo` and no build has taken it for 10 minutes.
    assert!(page.contains(">tests<") && page.contains(">pending<"), "{page}");
}

/// A verified delivery replayed (same `X-GitHub-Delivery`, or the same signed body under a new
/// id, since the id is not signed) is answered 200 and wakes nothing; a new push still does.
#[tokio::test]
async fn replayed_webhook_deliveries_are_answered_but_trigger_nothing() {
    let shared = Arc::new(Shared::default());
    shared.set_webhook(WebhookContext { secret: Secret::new("s3cr3t-hook"), branch: "main".into() });
    let url = serve(shared.clone()).await;
    let c = crate::support::client();
    let push = |body: &'static [u8], delivery: &str| {
        c.post(format!("{url}/webhooks/github"))
            .header("x-github-event", "push")
            .header("x-github-delivery", delivery)
            .header("x-hub-signature-256", sign("s3cr3t-hook", body))
            .body(body)
            .send()
    };
    let first: &[u8] = br#"{"ref":"refs/heads/main","after":"aaa"}"#;
    let r = push(first, "72d3162e-cc78-11e3-81ab-4c9367dc0958").await.unwrap();
    assert_eq!(r.status().as_u16(), 202);
    assert!(woke(&shared).await, "the first delivery polls");
    for (what, body, delivery) in [
        ("the same delivery again", first, "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
        ("the same body under a new id", first, "00000000-0000-0000-0000-000000000001"),
    ] {
        let r = push(body, delivery).await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{what}");
        assert!(r.text().await.unwrap().contains("already handled"), "{what}");
        assert!(!woke(&shared).await, "{what}: a replay must not poll");
    }
    let second: &[u8] = br#"{"ref":"refs/heads/main","after":"bbb"}"#;
    let r = push(second, "72d3162e-cc78-11e3-81ab-4c9367dc0959").await.unwrap();
    assert_eq!(r.status().as_u16(), 202);
    assert!(woke(&shared).await, "a new push polls");
}

/// GitHub sends `payload=<url-encoded JSON>` when a hook's content type is "form"; the signature
/// covers that raw body.
#[tokio::test]
async fn a_form_encoded_push_webhook_to_main_wakes_the_poll_loop() {
    let shared = Arc::new(Shared::default());
    shared.set_webhook(WebhookContext { secret: Secret::new("s3cr3t-hook"), branch: "main".into() });
    let url = serve(shared.clone()).await;
    let c = crate::support::client();
    let post = |json: &str| {
        let body =
            format!("payload={}", json.replace('%', "%25").replace('"', "%22").replace('/', "%2F").replace(' ', "+"));
        c.post(format!("{url}/webhooks/github"))
            .header("x-github-event", "push")
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-hub-signature-256", sign("s3cr3t-hook", body.as_bytes()))
            .body(body)
            .send()
    };
    let r = post(r#"{"ref": "refs/heads/feature"}"#).await.unwrap();
    assert_eq!(r.status().as_u16(), 202);
    assert_eq!(r.text().await.unwrap(), "not the tracked branch; ignored\n");
    assert!(!woke(&shared).await);
    let r = post(r#"{"ref": "refs/heads/main", "after": "abc"}"#).await.unwrap();
    assert_eq!(r.status().as_u16(), 202);
    assert_eq!(r.text().await.unwrap(), "polling now\n");
    assert!(woke(&shared).await, "a verified form-encoded push to main polls now");
}

/// The JSON API's bytes for a journey that has every kind of stage and waits-for, served by the
/// real router, and `watch --from`'s decoding of them: decoding and writing again gives the same
/// bytes. The expected text was recorded from the string-typed JSON before the typed view.
#[tokio::test]
async fn journey_json_bytes_are_stable_and_round_trip() {
    use deploy_journey::core::classify::{ChangeType, Classification};
    use deploy_journey::core::facts::BuildStatus;
    use deploy_journey::core::journey::{
        Attempt, Derived, Journey, Outcome, RunningBuild, StageJourney, StageState, WaitsFor,
    };
    use deploy_journey::core::lineage::Method;
    use deploy_journey::http::{JourneyJson, Snapshot};

    let att = |id: i64, job: &str, status, method, own| Attempt {
        build_id: id,
        pipeline: "lana-bank".into(),
        job: job.into(),
        name: id.to_string().into(),
        status,
        start: Some(1000 + id),
        end: (status != BuildStatus::Started).then_some(2000 + id),
        url: format!("http://ci/builds/{id}").into(),
        rerun_of: (id == 3).then_some(2),
        method,
        own,
        head: Some("b".repeat(40)),
    };
    let stage = |name: &str, state, attempts, waits_for| StageJourney {
        name: name.into(),
        state,
        ready_at: Some(900),
        start: Some(1001),
        end: (state == StageState::Succeeded).then_some(2003),
        attempts,
        expected_jobs: vec![format!("{name}-job")],
        waits_for,
    };
    let running = RunningBuild {
        build_id: 9,
        pipeline: "lana-bank".into(),
        job: "testflight".into(),
        name: "41".into(),
        status: BuildStatus::Started,
        start: Some(1500),
        url: "http://ci/builds/9".into(),
        rerun_of: None,
        head: Some("c".repeat(40)),
    };
    let queued = RunningBuild { status: BuildStatus::Pending, start: None, build_id: 10, ..running.clone() };
    let journey = Journey {
        sha: "a".repeat(40),
        subject: "feat: \"quoted\" <x>".into(),
        author: "alice".into(),
        commit_time: 500,
        lead_start: 500,
        origin: None,
        classification: Classification { resources: vec!["repo".into()], change_type: ChangeType::Mixed },
        stages: vec![
            stage(
                "tests",
                StageState::Succeeded,
                vec![
                    att(2, "test-bats", BuildStatus::Failed, Method::Exact, true),
                    att(3, "test-bats", BuildStatus::Succeeded, Method::Bridge, false),
                ],
                None,
            ),
            stage("edge-images", StageState::NotApplicable, vec![], None),
            stage(
                "build-rc",
                StageState::Running,
                vec![att(4, "build-rc", BuildStatus::Started, Method::Inferred, true)],
                None,
            ),
            stage("testflight", StageState::Pending, vec![], Some(WaitsFor::Busy(running))),
            stage("bump", StageState::Pending, vec![], Some(WaitsFor::Queued(queued))),
            stage(
                "staging",
                StageState::Waiting,
                vec![],
                Some(WaitsFor::Upstream { stage: "testflight".into(), state: StageState::Pending }),
            ),
            stage("ride", StageState::Riding, vec![], Some(WaitsFor::TriggeringCommit)),
            stage("later", StageState::Waiting, vec![], Some(WaitsFor::NoBuild)),
        ],
        outcome: Outcome::InFlight,
        failed_stage: Some("tests".into()),
        carried_on: true,
        ended: false,
        ended_in: None,
        deployed_at: [("qa".to_string(), 2500)].into(),
        carried_by: Some("d".repeat(40)),
        not_picked_up: false,
        vanished: false,
    };
    let shared = Arc::new(Shared::default());
    shared.publish(Snapshot {
        derived: Derived { journeys: vec![Arc::new(journey)], ..Default::default() },
        now: 3000,
        environments: vec!["qa".into(), "staging".into()],
        repository: "GaloyMoney/lana-bank".into(),
        ..Default::default()
    });
    let url = serve(shared).await;
    let body =
        crate::support::client().get(format!("{url}/api/v1/journeys/aaaa")).send().await.unwrap().text().await.unwrap();
    let want = r#"{"sha":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","short_sha":"aaaaaaa","subject":"feat: \"quoted\" <x>","author":"alice","commit_url":"https://github.com/GaloyMoney/lana-bank/commit/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","commit_time":500,"change_type":"mixed","resources":["repo"],"outcome":"in_flight","ended":false,"failed_stage":"tests","carried_on":true,"carried_by":"dddddddddddddddddddddddddddddddddddddddd","not_picked_up":false,"vanished":false,"deployed_at":{"qa":2500},"lead_time_seconds":{"qa":2000},"trace_id":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","stages":[{"name":"tests","state":"succeeded","ready_at":900,"start":1001,"end":2003,"wait_seconds":101,"duration_seconds":1002,"attribution":"bridge","expected_jobs":["tests-job"],"attempts":[{"build_id":2,"pipeline":"lana-bank","job":"test-bats","name":"2","status":"failed","start":1002,"end":2002,"url":"http://ci/builds/2","rerun_of":null,"attribution":"exact","own":true,"head":"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"},{"build_id":3,"pipeline":"lana-bank","job":"test-bats","name":"3","status":"succeeded","start":1003,"end":2003,"url":"http://ci/builds/3","rerun_of":2,"attribution":"bridge","own":false,"head":"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"}]},{"name":"edge-images","state":"not_applicable","ready_at":900,"start":1001,"end":null,"wait_seconds":101,"duration_seconds":null,"attribution":null,"expected_jobs":["edge-images-job"],"attempts":[]},{"name":"build-rc","state":"running","ready_at":900,"start":1001,"end":null,"wait_seconds":101,"duration_seconds":null,"attribution":"inferred","expected_jobs":["build-rc-job"],"attempts":[{"build_id":4,"pipeline":"lana-bank","job":"build-rc","name":"4","status":"started","start":1004,"end":null,"url":"http://ci/builds/4","rerun_of":null,"attribution":"inferred","own":true,"head":"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"}]},{"name":"testflight","state":"pending","ready_at":900,"start":1001,"end":null,"wait_seconds":101,"duration_seconds":null,"attribution":null,"expected_jobs":["testflight-job"],"attempts":[],"waits_for":{"kind":"busy","text":"the stage is busy with build testflight #41 (started, carrying ccccccc)","build":{"build_id":9,"pipeline":"lana-bank","job":"testflight","name":"41","status":"started","start":1500,"url":"http://ci/builds/9","rerun_of":null,"head":"cccccccccccccccccccccccccccccccccccccccc"}}},{"name":"bump","state":"pending","ready_at":900,"start":1001,"end":null,"wait_seconds":101,"duration_seconds":null,"attribution":null,"expected_jobs":["bump-job"],"attempts":[],"waits_for":{"kind":"queued","text":"its build testflight #41 is queued (pending, not started)","build":{"build_id":10,"pipeline":"lana-bank","job":"testflight","name":"41","status":"pending","start":null,"url":"http://ci/builds/9","rerun_of":null,"head":"cccccccccccccccccccccccccccccccccccccccc"}}},{"name":"staging","state":"waiting","ready_at":900,"start":1001,"end":null,"wait_seconds":101,"duration_seconds":null,"attribution":null,"expected_jobs":["staging-job"],"attempts":[],"waits_for":{"kind":"upstream","text":"waiting for upstream testflight (pending)","upstream":"testflight","upstream_state":"pending"}},{"name":"ride","state":"riding","ready_at":900,"start":1001,"end":null,"wait_seconds":101,"duration_seconds":null,"attribution":null,"expected_jobs":["ride-job"],"attempts":[],"waits_for":{"kind":"triggering_commit","text":"rides with the next triggering commit"}},{"name":"later","state":"waiting","ready_at":900,"start":1001,"end":null,"wait_seconds":101,"duration_seconds":null,"attribution":null,"expected_jobs":["later-job"],"attempts":[],"waits_for":{"kind":"no_build","text":"no build yet"}}],"lead_time_start":500}"#;
    assert_eq!(body, want);
    let decoded: JourneyJson = serde_json::from_str(&body).unwrap();
    assert_eq!(serde_json::to_string(&decoded).unwrap(), body);
    // A state this version does not know is refused, naming it.
    let bad = body.replacen("\"running\"", "\"runnin\"", 1);
    let e = serde_json::from_str::<JourneyJson>(&bad).unwrap_err().to_string();
    assert!(e.contains("\"runnin\""), "{e}");
}

/// Issue #17: `/api/v1/deployments` lists an environment's deploy builds newest first, with
/// kind, the commits each delivered, the failure and what it is credited to, the recovery and
/// lead times; `/api/v1/environments` says what runs where, what is behind and what waits at a
/// gate. Facts: three commits through staging, then production (gated): c0, a failed c1 and its
/// retry, a rollback to c0; c2 waits at the gate.
#[tokio::test]
async fn deployments_and_environments_json() {
    use std::collections::BTreeMap;

    use deploy_journey::core::journey::{BuildFact, BuildStatus, CommitFact, Fact, Facts, VersionFact, derive};
    use deploy_journey::http::Snapshot;
    use deploy_journey::view::{DeployKind, DeployResult, DeploymentView, EnvironmentView, FailReason};

    let cfg = deploy_journey::config::parse(
        "
repository: { github: o/r }
concourse: { url: 'http://ci/', team: dev }
resources: { repo: {} }
stages:
  - { name: staging, pipeline: p, jobs: [s], environment: staging }
  - { name: production, pipeline: p, jobs: [d], environment: production, approval: true }
",
        "t.yaml",
        &|_| None,
    )
    .unwrap();
    let sha = |i: usize| format!("{i:02x}{}", "e".repeat(38));
    let mut facts = Facts::default();
    for (i, m) in ["feat: a", "feat: b", "feat: c"].iter().enumerate() {
        let t = 100 * (i as i64 + 1);
        facts.apply(Fact::Commit(CommitFact {
            sha: sha(i),
            parent: (i > 0).then(|| sha(i - 1)),
            author: "dev".into(),
            author_date: t,
            committer_date: t,
            message: m.to_string(),
            files: vec!["src/a.rs".into()],
            first_seen: t,
        }));
    }
    let build = |id: i64, job: &str, c: usize, ok: bool, end: i64| {
        Fact::Build(BuildFact {
            id,
            pipeline: "p".into(),
            job: job.into(),
            name: format!("{}", id % 100).into(),
            status: if ok { BuildStatus::Succeeded } else { BuildStatus::Failed },
            start: Some(end - 60),
            end: Some(end),
            rerun_of: None,
            url: format!("http://ci/builds/{id}").into(),
            inputs: vec![VersionFact {
                step: "repo".into(),
                resource: "repo".into(),
                version: deploy_journey::core::facts::Version::from_iter([("ref", sha(c))]),
                message: None,
            }],
            outputs: vec![],
            resources_known: true,
        })
    };
    for f in [
        build(1, "s", 0, true, 1_000),
        build(2, "s", 1, true, 2_000),
        build(3, "s", 2, true, 3_000),
        build(101, "d", 0, true, 5_000),
        build(102, "d", 1, false, 6_000),
        build(103, "d", 1, true, 7_000),
        build(104, "d", 0, true, 8_000),
    ] {
        facts.apply(f);
    }
    let now = 10_000;
    let shared = Arc::new(Shared::default());
    shared.publish(Snapshot {
        derived: derive(&facts, &cfg.core(), now),
        now,
        environments: cfg.environments(),
        repository: "o/r".into(),
        ..Default::default()
    });
    let url = serve(shared).await;
    let get = |path: &str| {
        let u = format!("{url}{path}");
        async move {
            let r = crate::support::client().get(u).send().await.unwrap();
            (r.status().as_u16(), r.json::<serde_json::Value>().await.unwrap())
        }
    };

    // Production is the DORA environment by default.
    let (code, body) = get("/api/v1/deployments").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["environment"], "production");
    let deps: Vec<DeploymentView> = serde_json::from_value(body["deployments"].clone()).unwrap();
    let row = |d: &DeploymentView| (d.build.id, d.kind, d.result, d.commits.clone(), d.newest_commit.clone());
    assert_eq!(
        deps.iter().map(row).collect::<Vec<_>>(),
        vec![
            (104, DeployKind::Rollback, DeployResult::Success, vec![], Some(sha(0))),
            (103, DeployKind::Forward, DeployResult::Success, vec![sha(1)], Some(sha(1))),
            (102, DeployKind::Forward, DeployResult::Failure, vec![sha(1)], Some(sha(1))),
            (101, DeployKind::Forward, DeployResult::Success, vec![sha(0)], Some(sha(0))),
        ]
    );
    // The retry was rolled back (credited with the commit the rollback took out): it did not
    // restore service, so both the failed build and the retry recover with the rollback.
    let f102 = deps[2].failed.as_ref().unwrap();
    assert_eq!((f102.reason, f102.by.build.id, &f102.by.commits), (FailReason::BuildFailed, 102, &vec![sha(1)]));
    let r102 = deps[2].recovered_by.as_ref().unwrap();
    assert_eq!((r102.build.id, r102.at, r102.seconds), (104, 8_000, 2_000));
    let f103 = deps[1].failed.as_ref().unwrap();
    assert_eq!((f103.reason, f103.by.build.id, &f103.by.commits), (FailReason::RolledBack, 104, &vec![sha(1)]));
    assert_eq!(deps[1].recovered_by.as_ref().map(|r| (r.build.id, r.seconds)), Some((104, 1_000)));
    assert!(deps[0].failed.is_none() && deps[3].failed.is_none() && deps.iter().all(|d| !d.rework));
    // Lead times where a deployment delivered a commit first; the gate wait from staging's
    // deployment of the newest commit to the production build's start.
    assert_eq!(deps[3].lead_times, BTreeMap::from([(sha(0), 4_900)]));
    assert_eq!(deps[1].lead_times, BTreeMap::from([(sha(1), 6_800)]));
    assert!(deps[0].lead_times.is_empty());
    assert_eq!(deps[3].gate_wait_seconds, Some(4_940 - 1_000));
    assert_eq!(deps[3].build.url, "http://ci/builds/101");
    // The exact field names of one entry.
    let keys: Vec<&str> = body["deployments"][0].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "build",
            "commits",
            "end",
            "environment",
            "failed",
            "gate_wait_seconds",
            "kind",
            "lead_times",
            "newest_commit",
            "recovered_by",
            "result",
            "rework",
            "start"
        ]
    );
    assert_eq!(body["deployments"][0]["kind"], "rollback");
    assert_eq!(body["deployments"][2]["failed"]["reason"], "build_failed");
    assert_eq!(body["deployments"][2]["result"], "failure");

    let (_, staging) = get("/api/v1/deployments?environment=staging&limit=1").await;
    assert_eq!(staging["deployments"].as_array().unwrap().len(), 1);
    assert_eq!(staging["deployments"][0]["build"]["id"], 3);
    let (code, bad) = get("/api/v1/deployments?environment=prod").await;
    assert_eq!(code, 400);
    assert_eq!(bad["error"], "unknown environment \"prod\" (environments: staging, production)");

    // Environments now: staging runs c2; production went back to c0, so c1 is behind again,
    // and c2 waits at its gate since staging deployed it.
    let (code, body) = get("/api/v1/environments").await;
    assert_eq!(code, 200);
    assert_eq!(body["dora_environment"], "production");
    let envs: Vec<EnvironmentView> = serde_json::from_value(body["environments"].clone()).unwrap();
    let view = |e: &EnvironmentView| {
        (
            e.name.clone(),
            e.dora,
            e.running.as_ref().map(|r| (r.build.id, r.newest_commit.clone(), r.since)),
            e.behind,
            e.oldest_undeployed_age_seconds,
            e.awaiting_approval,
            e.awaiting_approval_age_seconds,
        )
    };
    assert_eq!(
        envs.iter().map(view).collect::<Vec<_>>(),
        vec![
            ("staging".into(), false, Some((3, sha(2), 3_000)), 0, None, false, None),
            ("production".into(), true, Some((104, sha(0), 8_000)), 2, Some(now - 200), true, Some(now - 3_000)),
        ]
    );
}
