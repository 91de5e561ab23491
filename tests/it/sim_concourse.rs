//! The simulated Concourse API over HTTP, checked against the recorded fixtures and quirks of
//! shared/reference/concourse-api.md, and walked the way `curl` (or the exporter) would.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use deploy_journey::sim::engine::{Action, BuildOverride};
use deploy_journey::sim::model::BuildStatus;
use serde_json::{Map, Value, json};

use crate::support::*;

const TEAM: &str = "dev";
const LANA: &str = "/api/v1/teams/dev/pipelines/lana-bank";
const GO_ZERO_TIME: i64 = -62_135_596_800;

// ------------------------------------------------------------ fixtures (concourse-api.md)

/// atc/api/builds_test.go "returns the build with the given build_id".
const BUILD_FIXTURE: &str = r#"{"id":1,"name":"1","status":"succeeded","job_name":"job1","pipeline_id":123,"pipeline_name":"pipeline1",
 "team_name":"some-team","api_url":"/api/v1/builds/1","start_time":1,"end_time":100,"reap_time":200}"#;

/// atc/api/jobs_test.go "returns the job's name, if it's paused, and any running and finished builds".
const JOB_FIXTURE: &str = r#"{"id":1,"name":"some-job","pipeline_id":1,"pipeline_name":"some-pipeline","team_name":"some-team",
 "paused":true,"first_logged_build_id":99,
 "next_build":{"id":3,"name":"2","job_name":"some-job","status":"started","api_url":"/api/v1/builds/3",
               "pipeline_id":1,"pipeline_name":"some-pipeline","team_name":"some-team"},
 "finished_build":{"id":1,"name":"1","job_name":"some-job","status":"succeeded","api_url":"/api/v1/builds/1",
               "pipeline_id":1,"pipeline_name":"some-pipeline","team_name":"some-team","start_time":1,"end_time":100},
 "inputs":[{"name":"some-input","resource":"some-input","trigger":false},
           {"name":"some-name","resource":"some-other-input","passed":["a","b"],"trigger":true}],
 "outputs":[{"name":"some-output","resource":"some-output"}],"groups":["group-1","group-2"]}"#;

/// atc/api/jobs_test.go, GET .../jobs "returns each job's name and any running and finished builds".
const JOB_SUMMARY_FIXTURE: &str = r#"[{"id":1,"name":"job-1","pipeline_id":2,"pipeline_name":"another-pipeline",
  "pipeline_instance_vars":{"branch":"master"},"team_name":"some-team","paused":true,
  "next_build":{"id":3,"name":"2","job_name":"job-1","status":"started","pipeline_id":2,
                "pipeline_name":"another-pipeline","pipeline_instance_vars":{"branch":"master"},"team_name":"some-team"},
  "finished_build":{"id":1,"name":"1","job_name":"job-1","status":"succeeded","pipeline_id":2,"pipeline_name":"another-pipeline",
                "pipeline_instance_vars":{"branch":"master"},"team_name":"some-team","start_time":1,"end_time":100},
  "transition_build":{"id":5,"name":"five","job_name":"job-1","status":"failed", "...":"...","start_time":101,"end_time":200},
  "inputs":[{"name":"input-1","resource":"input-1"}],"groups":["group-1","group-2"]}]"#;

/// atc/api/builds_test.go "returns the build with it's input and output versioned resources".
const RESOURCES_FIXTURE: &str = r#"{"inputs":[{"name":"input1","version":{"version":"value1"},"pipeline_id":42,"first_occurrence":true},
           {"name":"input2","version":{"version":"value2"},"pipeline_id":42,"first_occurrence":false}],
 "outputs":[{"name":"myresource3","version":{"version":"value3"}},{"name":"myresource4","version":{"version":"value4"}}]}"#;

/// atc/api/versions_test.go "returns the json" (authorized).
const VERSIONS_FIXTURE: &str = r#"[{"id":4,"enabled":true,"version":{"some":"version","ref":"foo"},"metadata":[{"name":"some","value":"metadata"}]},
 {"id":2,"enabled":false,"version":{"some":"version","ref":"blah"},"metadata":[{"name":"some","value":"metadata"}]}]"#;

fn fixture(s: &str) -> Value {
    serde_json::from_str(s).expect("fixture JSON")
}

// ------------------------------------------------------------ shape comparison

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// An allowed entry matches a difference at `path` when it is the whole path, a dotted suffix
/// of it (a bare key name matches that key anywhere), or `prefix.*` for anything below `prefix`.
fn is_allowed(path: &str, allowed: &[&str]) -> bool {
    allowed.iter().any(|e| match e.strip_suffix(".*") {
        Some(prefix) => path.starts_with(&format!("{prefix}.")) || path.contains(&format!(".{prefix}.")),
        None => path == *e || path.ends_with(&format!(".{e}")),
    })
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_string() } else { format!("{path}.{key}") }
}

/// Compare an object with one or more fixture objects (the elements of a fixture array): keys
/// in every fixture element are required, keys in some are optional.
fn walk_object(
    path: &str,
    ours: &Map<String, Value>,
    fixtures: &[&Map<String, Value>],
    allowed: &[&str],
    diffs: &mut Vec<String>,
) {
    let known: BTreeSet<&String> = fixtures.iter().flat_map(|f| f.keys()).collect();
    for k in &known {
        let p = child(path, k);
        let required = fixtures.iter().all(|f| f.contains_key(*k));
        match ours.get(*k) {
            None if required && !is_allowed(&p, allowed) => diffs.push(format!("{p}: missing")),
            None => {}
            Some(v) => {
                if let Some(fv) = fixtures.iter().find_map(|f| f.get(*k)) {
                    walk(&p, v, fv, allowed, diffs);
                }
            }
        }
    }
    for (k, v) in ours {
        let p = child(path, k);
        if !known.contains(k) && !is_allowed(&p, allowed) {
            diffs.push(format!("{p}: extra ({})", type_name(v)));
        }
    }
}

fn walk(path: &str, ours: &Value, fix: &Value, allowed: &[&str], diffs: &mut Vec<String>) {
    match (ours, fix) {
        (Value::Object(o), Value::Object(f)) => walk_object(path, o, &[f], allowed, diffs),
        (Value::Array(o), Value::Array(f)) => {
            let p = format!("{path}[]");
            let objects: Vec<&Map<String, Value>> = f.iter().filter_map(Value::as_object).collect();
            for v in o {
                match v {
                    Value::Object(obj) if !objects.is_empty() => walk_object(&p, obj, &objects, allowed, diffs),
                    _ => {
                        if let Some(first) = f.first() {
                            walk(&p, v, first, allowed, diffs);
                        }
                    }
                }
            }
        }
        (a, b) if type_name(a) != type_name(b) && !is_allowed(path, allowed) => {
            diffs.push(format!("{path}: {} where the fixture has {}", type_name(a), type_name(b)));
        }
        _ => {}
    }
}

/// Every difference in keys and JSON types between `ours` and `fixture`, recursively.
fn same_shape(ours: &Value, fixture: &Value, allowed_extra_or_missing: &[&str]) -> Vec<String> {
    let mut diffs = vec![];
    walk("", ours, fixture, allowed_extra_or_missing, &mut diffs);
    diffs
}

#[track_caller]
fn assert_shape(what: &str, ours: &Value, fixture: &Value, allowed: &[&str]) {
    let diffs = same_shape(ours, fixture, allowed);
    assert!(diffs.is_empty(), "{what} differs from the fixture:\n  {}\nours: {ours:#}", diffs.join("\n  "));
}

#[test]
fn same_shape_reports_every_difference() {
    let f = json!({"a": 1, "b": {"c": "x"}, "l": [{"n": 1, "o": 2}, {"n": 3}]});
    let ours = json!({"a": "1", "b": {"d": 1}, "l": [{"p": true}], "e": null});
    let diffs = same_shape(&ours, &f, &[]);
    assert_eq!(
        diffs,
        vec![
            "a: string where the fixture has number",
            "b.c: missing",
            "b.d: extra (number)",
            "l[].n: missing",
            "l[].p: extra (bool)",
            "e: extra (null)"
        ]
    );
    assert!(same_shape(&ours, &f, &["a", "b.*", "l[].n", "p", "e"]).is_empty());
}

// ------------------------------------------------------------ HTTP helpers

const SCOPES: &str = "openid+profile+email+federated%3Aid+groups";

async fn login(s: &TestSim, client: (&str, &str), user: &str, password: &str) -> reqwest::Response {
    s.client
        .post(format!("{}/sky/issuer/token", s.url))
        .basic_auth(client.0, Some(client.1))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("grant_type=password&username={user}&password={password}&scope={SCOPES}"))
        .send()
        .await
        .expect("token request")
}

async fn token(s: &TestSim) -> String {
    let r = login(s, ("fly", "Zmx5"), "deploy-journey", "viewer-password").await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.expect("token json");
    body["access_token"].as_str().expect("access_token").to_string()
}

async fn get_as(s: &TestSim, path: &str, token: Option<&str>) -> reqwest::Response {
    let url = if path.starts_with("http") { path.to_string() } else { format!("{}{}", s.url, path) };
    let mut req = s.client.get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.expect("request")
}

async fn json_as(s: &TestSim, path: &str, token: &str) -> Value {
    let r = get_as(s, path, Some(token)).await;
    assert_eq!(r.status(), 200, "GET {path}");
    r.json().await.expect("json")
}

/// `rel` → URL of every Link header value.
fn links(r: &reqwest::Response) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for v in r.headers().get_all("link") {
        for part in v.to_str().unwrap_or("").split(", ") {
            if let (Some(a), Some(b)) = (part.find('<'), part.find('>')) {
                let rel = part.split("rel=\"").nth(1).and_then(|s| s.strip_suffix('"')).unwrap_or("").to_string();
                out.insert(rel, part[a + 1..b].to_string());
            }
        }
    }
    out
}

fn ids(list: &Value) -> Vec<i64> {
    list.as_array().expect("array").iter().map(|b| b["id"].as_i64().expect("id")).collect()
}

/// Make the next build of `job` that starts end with `result`.
fn force(s: &TestSim, job: &str, result: BuildStatus) {
    s.sim.with_world(|w| {
        let now = w.now;
        w.schedule_action(
            now,
            Action::Override {
                pipeline: "lana-bank".into(),
                job: job.into(),
                ov: BuildOverride { result: Some(result), ..Default::default() },
            },
        );
    });
    s.step(0);
}

/// Build ids of a lana-bank job, from the world itself.
fn world_builds(s: &TestSim, job: &str) -> Vec<i64> {
    s.sim.with_world(|w| {
        let (p, j) = w.job_index("lana-bank", job).expect("job");
        w.concourse.pipelines[p].jobs[j].builds.clone()
    })
}

fn summary<'a>(jobs: &'a Value, name: &str) -> &'a Value {
    jobs.as_array().and_then(|a| a.iter().find(|j| j["name"] == name)).expect("job in summary")
}

// ------------------------------------------------------------ golden shapes and quirks

#[tokio::test]
async fn responses_have_the_fixture_shapes_and_quirks() {
    let s = spawn_sim("lana", 1).await;
    let t = token(&s).await;
    let sha = s.commit(&["core/lib.rs"], "feat: ledger rounding");
    s.step(5);

    // JobSummary of a pending next build: both times are Go's zero time.
    let jobs = json_as(&s, &format!("{LANA}/jobs"), &t).await;
    let ti = summary(&jobs, "test-integration");
    assert_eq!(ti["next_build"]["status"], "pending", "{ti:#}");
    assert_eq!(ti["next_build"]["start_time"], GO_ZERO_TIME);
    assert_eq!(ti["next_build"]["end_time"], GO_ZERO_TIME);

    s.step(60);
    let jobs = json_as(&s, &format!("{LANA}/jobs"), &t).await;
    for j in jobs.as_array().unwrap() {
        for k in ["next_build", "finished_build", "transition_build"] {
            assert!(j.get(k).is_none_or(|b| b.get("api_url").is_none()), "no api_url in summaries: {j}");
            assert_ne!(j.get(k), Some(&Value::Null), "summary builds are omitted, never null");
        }
    }
    let ti = summary(&jobs, "test-integration");
    assert_eq!(ti["next_build"]["status"], "started");
    assert_eq!(ti["next_build"]["end_time"], GO_ZERO_TIME);
    assert!(ti["next_build"]["start_time"].as_i64().unwrap() > START);
    assert!(
        ti["inputs"].as_array().unwrap().iter().all(|i| i.get("trigger").is_none_or(|t| t == true)),
        "trigger omitempty"
    );
    assert_shape(
        "JobSummary",
        ti,
        &fixture(JOB_SUMMARY_FIXTURE)[0],
        // The fixture is shortened: its transition_build elides fields as "...", and its one
        // input has no `trigger` (omitempty, false).
        &[
            "pipeline_instance_vars",
            "paused",
            "groups",
            "outputs",
            "inputs[].trigger",
            "next_build.start_time",
            "next_build.end_time",
            "transition_build....",
            "transition_build.pipeline_id",
            "transition_build.pipeline_name",
            "transition_build.team_name",
        ],
    );

    // atc.Job: next and finished builds are full atc.Build objects.
    let job = json_as(&s, &format!("{LANA}/jobs/test-integration"), &t).await;
    assert!(job.get("transition_build").is_none());
    assert_shape("Job", &job, &fixture(JOB_FIXTURE), &["paused", "groups", "outputs", "next_build.start_time"]);

    // atc.Build of a finished build, with a relative api_url.
    let finished = job["finished_build"]["id"].as_i64().unwrap();
    let build = json_as(&s, &format!("/api/v1/builds/{finished}"), &t).await;
    assert_eq!(build["api_url"], format!("/api/v1/builds/{finished}"));
    assert_shape("Build", &build, &fixture(BUILD_FIXTURE), &["reap_time"]);

    // The running build has adopted its inputs, including the new commit.
    let running = job["next_build"]["id"].as_i64().unwrap();
    let res = json_as(&s, &format!("/api/v1/builds/{running}/resources"), &t).await;
    assert_shape("BuildInputsOutputs", &res, &fixture(RESOURCES_FIXTURE), &["version.*"]);
    let repo = res["inputs"].as_array().unwrap().iter().find(|i| i["name"] == "repo").expect("repo input");
    assert_eq!(repo["version"]["ref"], sha.as_str());
    assert_eq!(repo["first_occurrence"], true);

    let versions = json_as(&s, &format!("{LANA}/resources/repo/versions?filter=ref:{sha}"), &t).await;
    assert_eq!(versions.as_array().unwrap().len(), 1);
    assert_shape("ResourceVersion", &versions, &fixture(VERSIONS_FIXTURE), &["version.*"]);
    let md: BTreeMap<&str, &str> = versions[0]["metadata"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["name"].as_str().unwrap(), m["value"].as_str().unwrap()))
        .collect();
    assert_eq!(md["commit"], sha.as_str());
    assert_eq!(md["message"], "feat: ledger rounding");
}

#[tokio::test]
async fn pending_builds_have_no_resources_or_plan_yet() {
    let s = spawn_sim("lana", 2).await;
    let t = token(&s).await;
    s.commit(&["core/lib.rs"], "fix: thing");
    s.step(5);
    let job = json_as(&s, &format!("{LANA}/jobs/test-integration"), &t).await;
    assert_eq!(job["next_build"]["status"], "pending");
    let id = job["next_build"]["id"].as_i64().unwrap();
    assert!(job["next_build"].get("start_time").is_none(), "atc.Build omits unset times");
    assert_eq!(json_as(&s, &format!("/api/v1/builds/{id}/resources"), &t).await, json!({"inputs": [], "outputs": []}));
    assert_eq!(get_as(&s, &format!("/api/v1/builds/{id}/plan"), Some(&t)).await.status(), 404);
    s.step(60);
    let plan = json_as(&s, &format!("/api/v1/builds/{id}/plan"), &t).await;
    assert_eq!(plan["schema"], "exec.v2");
    let gets = &plan["plan"]["do"][0]["in_parallel"]["steps"];
    assert_eq!(gets[0]["get"]["name"], "repo");
    assert_eq!(gets[0]["get"]["type"], "git");
}

// ------------------------------------------------------------ auth

#[tokio::test]
async fn tokens_are_issued_checked_and_expire() {
    let s = spawn_sim("lana", 3).await;
    let jobs = format!("{LANA}/jobs");

    let wrong = login(&s, ("fly", "Zmx5"), "deploy-journey", "nope").await;
    assert_eq!(wrong.status(), 401);
    assert_eq!(wrong.json::<Value>().await.unwrap()["error"], "access_denied");
    let bad_client = login(&s, ("web", "secret"), "deploy-journey", "viewer-password").await;
    assert_eq!(bad_client.status(), 401);
    assert_eq!(bad_client.json::<Value>().await.unwrap()["error"], "invalid_client");

    let ok = login(&s, ("fly", "Zmx5"), "deploy-journey", "viewer-password").await;
    assert_eq!(ok.status(), 200);
    let body: Value = ok.json().await.unwrap();
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 86_400);
    assert_eq!(body["id_token"].as_str().unwrap().split('.').count(), 3);
    let t = body["access_token"].as_str().unwrap().to_string();
    assert_eq!(t.len(), 38, "opaque skymarshal token");

    let anon = get_as(&s, &jobs, None).await;
    assert_eq!(anon.status(), 401, "private pipeline without a token");
    assert_eq!(anon.headers()["x-concourse-version"], "8.2.5");
    assert_eq!(get_as(&s, &jobs, Some(&t)).await.status(), 200);
    assert_eq!(get_as(&s, &format!("{LANA}/config"), None).await.status(), 401);
    let config = get_as(&s, &format!("{LANA}/config"), Some(&t)).await;
    assert_eq!(config.status(), 200);
    assert!(config.headers().contains_key("x-concourse-config-version"));
    assert!(config.json::<Value>().await.unwrap()["config"]["jobs"].is_array());
    // Optional-auth lists filter for anonymous callers.
    assert_eq!(json_as(&s, "/api/v1/pipelines", &t).await.as_array().unwrap().len(), 5);
    let anon_pipelines: Value = get_as(&s, "/api/v1/pipelines", None).await.json().await.unwrap();
    assert_eq!(anon_pipelines, json!([]));

    let expired = s.client.post(format!("{}/_sim/expire-tokens", s.url)).send().await.unwrap();
    assert!(expired.status().is_success());
    assert_eq!(get_as(&s, &jobs, Some(&t)).await.status(), 401);
    assert_eq!(get_as(&s, "/api/v1/pipelines", Some(&t)).await.status(), 401, "O routes reject a bad token");
}

#[tokio::test]
async fn public_pipelines_serve_a_silent_public_view_to_bad_tokens() {
    let s = spawn_sim("lana", 4).await;
    let t = token(&s).await;
    let sha = s.commit(&["core/lib.rs"], "fix: public");
    s.step(120);
    s.sim.with_world(|w| {
        w.concourse.pipelines[0].public = true;
        let j = w.concourse.pipelines[0].job_by_name("flake-check").unwrap();
        w.concourse.pipelines[0].jobs[j].public = false;
    });
    let versions = format!("{LANA}/resources/repo/versions?filter=ref:{sha}");
    assert!(json_as(&s, &versions, &t).await[0].get("metadata").is_some());
    for bad in [None, Some("not-a-token")] {
        let r = get_as(&s, &versions, bad).await;
        assert_eq!(r.status(), 200, "public pipeline, token {bad:?}");
        let v: Value = r.json().await.unwrap();
        assert!(v[0].get("metadata").is_none(), "metadata hidden for the public view: {v}");
    }
    assert_eq!(get_as(&s, "/api/v1/pipelines", Some("not-a-token")).await.status(), 401);
    let anon: Value = get_as(&s, "/api/v1/pipelines", None).await.json().await.unwrap();
    assert_eq!(anon.as_array().unwrap().len(), 1);
    // Events need the job public as well; the build itself only the pipeline.
    let flake = world_builds(&s, "flake-check").last().copied().unwrap();
    let ti = world_builds(&s, "test-integration").last().copied().unwrap();
    assert_eq!(get_as(&s, &format!("/api/v1/builds/{flake}"), None).await.status(), 200);
    assert_eq!(get_as(&s, &format!("/api/v1/builds/{flake}/events"), None).await.status(), 401);
    assert_eq!(get_as(&s, &format!("/api/v1/builds/{flake}/plan"), None).await.status(), 401);
    assert_eq!(get_as(&s, &format!("/api/v1/builds/{ti}/plan"), None).await.status(), 200);
    assert_eq!(get_as(&s, &format!("/api/v1/teams/{TEAM}/pipelines/nope/jobs"), None).await.status(), 404);
}

// ------------------------------------------------------------ walking the world

#[tokio::test]
async fn walk_lana_as_curl_would() {
    let s = spawn_sim("lana", 5).await;
    let t = token(&s).await;
    for job in ["test-integration", "test-bats", "flake-check"] {
        force(&s, job, BuildStatus::Succeeded);
    }
    let sha = s.commit(&["core/lib.rs"], "feat: walk");
    s.step(3600);

    let pipelines = json_as(&s, "/api/v1/pipelines", &t).await;
    let names: Vec<&str> = pipelines.as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["lana-bank", "private-charts", "galoy-staging", "galoy-qa", "galoy-production"]);
    let jobs = json_as(&s, &format!("{LANA}/jobs"), &t).await;
    assert!(jobs.as_array().unwrap().len() > 5);

    // Page through test-integration's builds two at a time, following rel="next".
    let mut seen = vec![];
    let mut next = Some(format!("{LANA}/jobs/test-integration/builds?limit=2"));
    while let Some(url) = next.take() {
        let r = get_as(&s, &url, Some(&t)).await;
        assert_eq!(r.status(), 200);
        let l = links(&r);
        let page: Value = r.json().await.unwrap();
        assert!(ids(&page).len() <= 2);
        seen.extend(ids(&page));
        if let Some(n) = l.get("next") {
            assert!(
                n.starts_with(&format!(
                    "{}/api/v1/teams/dev/pipelines/lana-bank/jobs/test-integration/builds?to=",
                    s.url
                )),
                "{n}"
            );
            assert!(n.ends_with("&limit=2"), "{n}");
        }
        next = l.get("next").cloned();
    }
    let unique: BTreeSet<i64> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "no duplicates across pages: {seen:?}");
    let expected: BTreeSet<i64> = world_builds(&s, "test-integration").into_iter().collect();
    assert_eq!(unique, expected);
    assert!(seen.len() >= 2);
    // Ids are global build ids: /api/v1/builds/:id finds each one.
    for id in &seen {
        let b = json_as(&s, &format!("/api/v1/builds/{id}"), &t).await;
        assert_eq!(b["job_name"], "test-integration");
    }

    let latest = json_as(&s, &format!("{LANA}/jobs/test-integration/builds/latest"), &t).await;
    assert_eq!(latest["id"].as_i64(), seen.iter().max().copied());
    assert_eq!(latest["status"], "succeeded");
    let res = json_as(&s, &format!("/api/v1/builds/{}/resources", latest["id"]), &t).await;
    let repo = res["inputs"].as_array().unwrap().iter().find(|i| i["name"] == "repo").unwrap();
    assert_eq!(repo["version"]["ref"], sha.as_str());
    assert!(repo["pipeline_id"].is_i64());

    let versions = json_as(&s, &format!("{LANA}/resources/repo/versions?filter=ref:{sha}"), &t).await;
    let vid = versions[0]["id"].as_i64().unwrap();
    let one = json_as(&s, &format!("{LANA}/resources/repo/versions/{vid}"), &t).await;
    assert_eq!(one["version"]["ref"], sha.as_str());
    let input_to = json_as(&s, &format!("{LANA}/resources/repo/versions/{vid}/input_to"), &t).await;
    let jobs_used: BTreeSet<&str> =
        input_to.as_array().unwrap().iter().map(|b| b["job_name"].as_str().unwrap()).collect();
    for job in ["test-integration", "test-bats", "flake-check"] {
        assert!(jobs_used.contains(job), "{job} in {jobs_used:?}");
    }
    assert!(input_to.as_array().unwrap().iter().all(|b| b.get("comment").is_none()));
    assert_eq!(json_as(&s, &format!("{LANA}/resources/repo/versions?filter=ref:0000"), &t).await, json!([]));
    assert_eq!(get_as(&s, &format!("{LANA}/resources/nope/versions"), Some(&t)).await.status(), 404);
}

#[tokio::test]
async fn build_rc_hides_the_repo_input_it_also_put() {
    let s = spawn_sim("lana", 6).await;
    let t = token(&s).await;
    for job in ["test-integration", "test-bats", "flake-check", "build-rc"] {
        force(&s, job, BuildStatus::Succeeded);
    }
    let before = world_builds(&s, "build-rc");
    let sha = s.commit(&["core/lib.rs"], "feat: release me");
    s.step(3600);
    let rc = json_as(&s, &format!("{LANA}/jobs/build-rc/builds/latest"), &t).await;
    assert!(!before.contains(&rc["id"].as_i64().unwrap()), "a new build-rc build ran");
    assert_eq!(rc["status"], "succeeded");
    let res = json_as(&s, &format!("/api/v1/builds/{}/resources", rc["id"]), &t).await;
    let inputs: Vec<&str> = res["inputs"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert!(!inputs.contains(&"repo"), "repo input dropped: {inputs:?}");
    let out = res["outputs"].as_array().unwrap().iter().find(|o| o["name"] == "repo").expect("repo output");
    assert_eq!(out["version"]["ref"], sha.as_str());
    // The adopted input is still there for input_to.
    let versions = json_as(&s, &format!("{LANA}/resources/repo/versions?filter=ref:{sha}"), &t).await;
    let input_to = json_as(&s, &format!("{LANA}/resources/repo/versions/{}/input_to", versions[0]["id"]), &t).await;
    assert!(ids(&input_to).contains(&rc["id"].as_i64().unwrap()));
    let output_of = json_as(&s, &format!("{LANA}/resources/repo/versions/{}/output_of", versions[0]["id"]), &t).await;
    assert_eq!(ids(&output_of), vec![rc["id"].as_i64().unwrap()]);
}

#[tokio::test]
async fn reruns_sort_beside_their_original() {
    let s = spawn_sim("lana", 7).await;
    let t = token(&s).await;
    force(&s, "test-bats", BuildStatus::Failed);
    s.commit(&["core/lib.rs"], "feat: flaky");
    // Past test-bats' p90 (36 min), whatever the seed draws.
    s.step(3600);
    let failed = json_as(&s, &format!("{LANA}/jobs/test-bats/builds/latest"), &t).await;
    assert_eq!(failed["status"], "failed");
    let name = failed["name"].as_str().unwrap().to_string();

    s.commit(&["core/lib.rs"], "feat: next");
    s.step(60);
    s.schedule_now(Action::Rerun {
        pipeline: "lana-bank".into(),
        job: "test-bats".into(),
        build_name: Some(name.clone()),
        by: "alice".into(),
    });
    s.step(30);

    let list = json_as(&s, &format!("{LANA}/jobs/test-bats/builds"), &t).await;
    let arr = list.as_array().unwrap();
    let pos = |n: &str| arr.iter().position(|b| b["name"] == n).unwrap_or_else(|| panic!("{n} in {list}"));
    let (rerun, orig) = (pos(&format!("{name}.1")), pos(&name));
    assert_eq!(rerun + 1, orig, "rerun right before its original");
    let r = &arr[rerun];
    assert_eq!(r["rerun_of"], json!({"id": failed["id"], "name": name}));
    assert_eq!(r["rerun_number"], 1);
    assert_eq!(r["created_by"], "alice");
    let max = ids(&list).into_iter().max().unwrap();
    assert_eq!(r["id"], max, "the rerun is the newest build");
    assert_ne!(arr[0]["id"], max, "so the first element is not the highest id");
    assert!(arr[0].get("created_by").is_none(), "scheduler builds have no created_by");
}

#[tokio::test]
async fn from_polls_only_newer_builds() {
    let s = spawn_sim("lana", 8).await;
    let t = token(&s).await;
    let path = format!("{LANA}/jobs/test-integration/builds");
    let max = ids(&json_as(&s, &path, &t).await).into_iter().max().unwrap();
    assert!(ids(&json_as(&s, &format!("{path}?from={}&limit=100", max + 1), &t).await).is_empty());
    for k in 0..3 {
        s.commit(&["core/lib.rs"], &format!("feat: poll {k}"));
        s.step(20 * 60);
    }
    let r = get_as(&s, &format!("{path}?from={}&limit=100", max + 1), Some(&t)).await;
    assert!(!links(&r).contains_key("previous"), "nothing newer");
    assert_eq!(links(&r).get("next"), Some(&format!("{}{path}?to={max}&limit=100", s.url)));
    let newer = ids(&r.json().await.unwrap());
    let expected: Vec<i64> = world_builds(&s, "test-integration").into_iter().filter(|id| *id > max).rev().collect();
    assert_eq!(newer, expected, "newest first, only ids above the bound");
    assert!(!newer.is_empty());
    // With only `from`, the page is the *oldest* builds at or above it.
    let two = ids(&json_as(&s, &format!("{path}?from={}&limit=2", max + 1), &t).await);
    assert_eq!(two, expected[expected.len() - 2..].to_vec());
    assert_eq!(get_as(&s, &format!("{path}?from=5&to=2"), Some(&t)).await.status(), 404);
    assert_eq!(get_as(&s, "/api/v1/builds?from=5&to=2", Some(&t)).await.status(), 500);
    let dated = get_as(&s, &format!("{path}?timestamps=true&from={START}"), Some(&t)).await;
    assert!(links(&dated).is_empty(), "no Link headers in timestamps mode");
    assert_eq!(ids(&dated.json().await.unwrap()), expected);
}

/// `/api/v1/teams/:team/builds`: every job's builds of the team in one list, paginated and
/// ordered like the job lists, with its own Link path; authentication required.
#[tokio::test]
async fn team_builds_list_every_job_with_the_same_pagination() {
    let s = spawn_sim("lana", 9).await;
    let t = token(&s).await;
    let path = "/api/v1/teams/dev/builds";
    assert_eq!(get_as(&s, path, None).await.status(), 401, "authentication required");
    assert_eq!(get_as(&s, path, Some("not-a-token")).await.status(), 401);
    assert_eq!(get_as(&s, "/api/v1/teams/nobody/builds", Some(&t)).await.status(), 404);
    assert_eq!(get_as(&s, &format!("{path}?from=5&to=2"), Some(&t)).await.status(), 404);

    let max = ids(&json_as(&s, path, &t).await).into_iter().max().expect("warm-up builds");
    for k in 0..3 {
        s.commit(&["core/lib.rs"], &format!("feat: team {k}"));
        s.step(30 * 60);
    }
    // Ground truth: every build above the bound, of any pipeline and job, oldest first.
    let expected: Vec<i64> = s.sim.with_world(|w| {
        let mut v: Vec<i64> = w.concourse.builds.iter().map(|b| b.id).filter(|id| *id > max).collect();
        v.sort();
        v
    });
    let pipelines: std::collections::BTreeSet<String> = s.sim.with_world(|w| {
        w.concourse
            .builds
            .iter()
            .filter(|b| b.id > max)
            .map(|b| w.concourse.pipelines[b.pipeline].name.clone())
            .collect()
    });
    assert!(expected.len() > 4 && pipelines.len() > 1, "{expected:?} {pipelines:?}");

    let r = get_as(&s, &format!("{path}?from={}&limit=100", max + 1), Some(&t)).await;
    assert!(!links(&r).contains_key("previous"), "nothing newer");
    assert_eq!(links(&r).get("next"), Some(&format!("{}{path}?to={max}&limit=100", s.url)));
    let all = r.json::<Value>().await.unwrap();
    let mut got = ids(&all);
    got.reverse();
    assert_eq!(got, expected, "newest first, every job");
    let names: std::collections::BTreeSet<String> =
        all.as_array().unwrap().iter().map(|b| b["pipeline_name"].as_str().unwrap().to_string()).collect();
    assert_eq!(names, pipelines);
    assert!(all.as_array().unwrap().iter().all(|b| b["team_name"] == "dev" && b["job_name"].is_string()));

    // A lone `from` gives the oldest builds at or above it; "previous" leads to the newer ones.
    let r = get_as(&s, &format!("{path}?from={}&limit=2", max + 1), Some(&t)).await;
    let prev = links(&r).get("previous").cloned().expect("newer page");
    assert_eq!(prev, format!("{}{path}?from={}&limit=2", s.url, expected[2]));
    assert_eq!(ids(&r.json().await.unwrap()), vec![expected[1], expected[0]]);
    assert_eq!(ids(&json_as(&s, &prev, &t).await), vec![expected[3], expected[2]]);
}

// ------------------------------------------------------------ events

/// (id, event name, data) of each server-sent event in `text`.
fn sse(text: &str) -> Vec<(String, String, Value)> {
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let mut id = String::new();
            let mut name = String::new();
            let mut data = Value::Null;
            for line in e.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = v.to_string();
                } else if let Some(v) = line.strip_prefix("event: ") {
                    name = v.to_string();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(v).expect("event data");
                }
            }
            (id, name, data)
        })
        .collect()
}

#[tokio::test]
async fn failed_build_events_end_with_its_errors() {
    let s = spawn_sim("lana", 9).await;
    let t = token(&s).await;
    force(&s, "test-integration", BuildStatus::Failed);
    s.commit(&["core/lib.rs"], "feat: breaks things");
    s.step(3600);
    let b = json_as(&s, &format!("{LANA}/jobs/test-integration/builds/latest"), &t).await;
    assert_eq!(b["status"], "failed");
    let url = format!("/api/v1/builds/{}/events", b["id"]);
    let r = get_as(&s, &url, Some(&t)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream; charset=utf-8");
    let events = sse(&r.text().await.unwrap());
    let (last_id, last_name, _) = events.last().unwrap().clone();
    assert_eq!(last_name, "end");
    assert_eq!(last_id, (events.len() - 1).to_string(), "ids count from 0 and end takes the next");
    let body: Vec<&Value> = events.iter().filter(|e| e.1 == "event").map(|e| &e.2).collect();
    assert_eq!(body[0]["event"], "status");
    assert_eq!(body[0]["data"]["status"], "started");
    assert!(body.iter().any(|e| e["event"] == "finish-get" && e["data"]["version"]["ref"].is_string()));
    let logs: Vec<&str> =
        body.iter().filter(|e| e["event"] == "log").map(|e| e["data"]["payload"].as_str().unwrap()).collect();
    assert!(logs.last().unwrap().contains("exited with status 1"), "{logs:?}");
    assert!(logs.iter().any(|l| l.contains("got:      status 503")));
    let tail: Vec<&str> = body.iter().rev().take(2).map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(tail, vec!["status", "finish-task"]);
    assert_eq!(body.last().unwrap()["data"]["status"], "failed");
    assert_eq!(body.last().unwrap()["version"], "1.0");

    // Last-Event-ID resumes after the given event.
    let resumed =
        s.client.get(format!("{}{url}", s.url)).bearer_auth(&t).header("Last-Event-ID", "2").send().await.unwrap();
    let rest = sse(&resumed.text().await.unwrap());
    assert_eq!(rest[0].0, "3");
    assert_eq!(rest.len(), events.len() - 3);
    let bad =
        s.client.get(format!("{}{url}", s.url)).bearer_auth(&t).header("Last-Event-ID", "x").send().await.unwrap();
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn running_build_events_stream_until_it_finishes() {
    let s = spawn_sim("lana", 10).await;
    let t = token(&s).await;
    force(&s, "flake-check", BuildStatus::Succeeded);
    s.commit(&["core/lib.rs"], "feat: stream me");
    s.step(60);
    let b = json_as(&s, &format!("{LANA}/jobs/flake-check/builds/latest"), &t).await;
    assert_eq!(b["status"], "started");
    let mut r = get_as(&s, &format!("/api/v1/builds/{}/events", b["id"]), Some(&t)).await;
    let first = tokio::time::timeout(Duration::from_secs(10), r.chunk()).await.expect("first chunk").unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("\"started\""));
    s.step(3600);
    let rest = tokio::time::timeout(Duration::from_secs(10), r.text())
        .await
        .expect("stream ends once the build finishes")
        .unwrap();
    let events = sse(&rest);
    assert_eq!(events.last().unwrap().1, "end");
    assert!(events.iter().any(|e| e.2["event"] == "status" && e.2["data"]["status"] == "succeeded"));
}

/// Follow `rel` links from `path` (`limit` a page); the ids listed.
async fn link_walk(s: &TestSim, path: &str, rel: &str, token: &str) -> BTreeSet<i64> {
    let mut url = format!("{}{path}", s.url);
    let mut out = BTreeSet::new();
    for _ in 0..500 {
        let r = get_as(s, &url, Some(token)).await;
        assert_eq!(r.status(), 200, "GET {url}");
        let next = links(&r).get(rel).cloned();
        out.extend(ids(&r.json().await.unwrap()));
        match next {
            Some(n) => url = n,
            None => return out,
        }
    }
    panic!("{path}: no end to the {rel} links");
}

/// atc/db/build_factory.go `getBuildsWithPagination`, shared by all four builds lists: ordered
/// by COALESCE(rerun_of, id) but cut by id. A rerun made several builds after its original is
/// on no page of a `rel="next"` walk once a page boundary falls between them; a `from=` query
/// at or below its id lists it; `rel="previous"` from a page holding such a rerun jumps to the
/// rerun's id over the builds between. Query errors are 404 (500 on `/api/v1/builds`).
#[tokio::test]
async fn every_builds_list_pages_by_id_but_orders_reruns_beside_their_original() {
    let s = spawn_sim("lana", 9).await;
    let t = token(&s).await;
    force(&s, "test-bats", BuildStatus::Failed);
    s.commit(&["core/lib.rs"], "feat: flaky");
    // Past test-bats' p90 (36 min), whatever the seed draws.
    s.step(3600);
    let orig = json_as(&s, &format!("{LANA}/jobs/test-bats/builds/latest"), &t).await;
    let (orig_id, name) = (orig["id"].as_i64().unwrap(), orig["name"].as_str().unwrap().to_string());
    for k in 0..6 {
        s.commit(&["core/lib.rs"], &format!("feat: more {k}"));
        s.step(40 * 60);
    }
    s.schedule_now(Action::Rerun {
        pipeline: "lana-bank".into(),
        job: "test-bats".into(),
        build_name: Some(name.clone()),
        by: "alice".into(),
    });
    s.step(60);
    s.commit(&["core/lib.rs"], "feat: after");
    s.step(40 * 60);
    let job_list = json_as(&s, &format!("{LANA}/jobs/test-bats/builds"), &t).await;
    let rerun_id = job_list.as_array().unwrap().iter().find(|b| b["rerun_of"]["id"] == orig_id).expect("rerun")["id"]
        .as_i64()
        .unwrap();

    for (path, err) in [
        (format!("{LANA}/jobs/test-bats/builds"), 404),
        (format!("{LANA}/builds"), 404),
        (format!("/api/v1/teams/{TEAM}/builds"), 404),
        ("/api/v1/builds".to_string(), 500),
    ] {
        let everything = ids(&json_as(&s, &format!("{path}?limit=1000"), &t).await);
        assert!(everything.contains(&rerun_id) && everything.contains(&orig_id), "{path}: one page has both");
        // Pages of 2 (the job list) or 5: more than a page of builds lies between the two.
        let limit = if path.contains("/jobs/") { 2 } else { 5 };
        let back = link_walk(&s, &format!("{path}?limit={limit}"), "next", &t).await;
        assert!(back.contains(&orig_id), "{path}: the walk back lists the original");
        assert!(!back.contains(&rerun_id), "{path}: the walk back never lists rerun {rerun_id}");
        assert_eq!(back.len() + 1, everything.len(), "{path}: it misses nothing else");
        // `from` at the original's id: ascending in COALESCE order, so the rerun comes right
        // after its original; the page's newest build is older than the rerun, and its
        // rel="previous" jumps to the rerun's id, over the builds between.
        let r = get_as(&s, &format!("{path}?from={orig_id}&limit={}", limit + 1), Some(&t)).await;
        let prev = links(&r).get("previous").cloned().expect("newer builds");
        let page = ids(&r.json().await.unwrap());
        assert_eq!(page[page.len() - 2..], [rerun_id, orig_id], "{path}: newest first, the rerun beside its original");
        assert!(prev.contains(&format!("from={rerun_id}&")), "{path}: rel=previous jumps to the rerun: {prev}");
        for bad in ["from=-1", "to=-1", "limit=-1", "from=5&to=4", "from=-3&to=4"] {
            let r = get_as(&s, &format!("{path}?{bad}"), Some(&t)).await;
            assert_eq!(r.status().as_u16(), err, "{path}?{bad}");
        }
        let r = get_as(&s, &format!("{path}?from=99999999999999999999"), Some(&t)).await;
        assert_eq!(ids(&r.json().await.unwrap()), Vec::<i64>::new(), "{path}: Atoi clamps to the max int64");
    }
}
