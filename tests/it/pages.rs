//! The pages a person reads, in a real browser: a commit's timeline (`/journeys/{sha}`) and the
//! landing overview, served over a simulated run with a failed build and its rerun and a commit
//! that rode in another's batch. Screenshots are kept under `target/artefacts/`.

use std::sync::Arc;

use deploy_journey::http::{Shared, Snapshot, routes};
use deploy_journey::pages::{Links, age};

use crate::journeys::run_scenario;
use crate::support::{chromium_dom, chromium_screenshot, hrefs};

/// The log excerpt of every failed build, read through the real Concourse source as `serve`
/// reads them.
async fn excerpts(r: &crate::journeys::Run) -> std::collections::HashMap<i64, String> {
    use deploy_journey::core::journey::BuildStatus;
    let telemetry = Arc::new(deploy_journey::sources::telemetry::SourceTelemetry::new());
    let mut cc = deploy_journey::sources::concourse::ConcourseSource::new(r.cfg.concourse(), telemetry).unwrap();
    let mut out = std::collections::HashMap::new();
    for b in r.facts.builds.values().filter(|b| matches!(b.status, BuildStatus::Failed | BuildStatus::Errored)) {
        out.insert(b.id, cc.failure_excerpt(b.id).await.unwrap());
    }
    out
}

async fn serve(r: &crate::journeys::Run, links: Links) -> String {
    serve_with_etas(r, links, Default::default()).await
}

async fn serve_with_etas(
    r: &crate::journeys::Run,
    links: Links,
    etas: std::collections::HashMap<String, std::collections::BTreeMap<String, i64>>,
) -> String {
    serve_derived(r, links, etas, r.derived.clone()).await
}

async fn serve_derived(
    r: &crate::journeys::Run,
    links: Links,
    etas: std::collections::HashMap<String, std::collections::BTreeMap<String, i64>>,
    derived: deploy_journey::core::journey::Derived,
) -> String {
    let log_excerpts = Arc::new(excerpts(r).await);
    let shared = Arc::new(Shared::default());
    shared.set_clock(Arc::new({
        let sim = r.sim.clone();
        move || sim.now()
    }));
    shared.set_links(links);
    shared.publish(Snapshot {
        etas,
        derived,
        now: r.sim.now(),
        environments: r.cfg.environments(),
        repository: "GaloyMoney/lana-bank".into(),
        repository_url: String::new(),
        stage_builds: vec![],
        baseline: Default::default(),
        log_excerpts,
        journey_totals: None,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, routes(shared)).await;
    });
    url
}

/// Every `src=` and `href=` of a DOM: relative, or on one of `allowed` hosts.
fn only_links_to(dom: &str, allowed: &[&str]) {
    assert!(!dom.to_ascii_lowercase().contains("<script"), "a script in the page:\n{dom}");
    let srcs: Vec<&str> = dom.split(" src=\"").skip(1).filter_map(|s| s.split('"').next()).collect();
    assert!(srcs.is_empty(), "external assets {srcs:?}");
    for h in hrefs(dom) {
        assert!(h.starts_with('/') || allowed.iter().any(|a| h.starts_with(a)), "a link to another host: {h}\n{dom}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeline_page_shows_waits_work_reruns_and_batches_in_a_browser() {
    let r = run_scenario("pages-rerun-batch.yaml", "lana").await;
    let links =
        Links { grafana_url: Some("https://grafana.example".into()), tempo_datasource_uid: Some("tempo".into()) };
    let url = serve(&r, links).await;
    let ci = r.cfg.concourse.url.clone();
    // CI, GitHub (the commit) and Grafana: the only hosts a page may point at.
    let allowed = [ci.as_str(), "https://github.com/GaloyMoney/lana-bank/commit/", "https://grafana.example/"];
    let c = crate::support::client();
    let (a, skip, next) = (&r.shas["a"], &r.shas["skip"], &r.shas["next"]);

    // a: test-bats failed, then its rerun passed.
    let json: serde_json::Value =
        c.get(format!("{url}/api/v1/journeys/{a}")).send().await.unwrap().json().await.unwrap();
    let dom = chromium_dom(&format!("{url}/journeys/{a}"));
    only_links_to(&dom, &allowed);
    // The stages in the JSON's order.
    let names: Vec<String> =
        json["stages"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap().to_string()).collect();
    let rows: Vec<&str> = dom.split("data-stage=\"").skip(1).filter_map(|s| s.split('"').next()).collect();
    assert_eq!(rows, names, "stage rows out of order");
    // Each stage's wait and work as the JSON has them.
    for s in json["stages"].as_array().unwrap() {
        if let (Some(w), Some(d)) = (s["wait_seconds"].as_i64(), s["duration_seconds"].as_i64()) {
            let text = format!("waited {} · built {}", age(w), age(d));
            assert!(dom.contains(&text), "{}: {text} not shown", s["name"]);
        }
    }
    // Every attempt linked to the simulator's build page; the rerun and the failure shown.
    let attempts: Vec<&serde_json::Value> =
        json["stages"].as_array().unwrap().iter().flat_map(|s| s["attempts"].as_array().unwrap()).collect();
    let bats: Vec<&&serde_json::Value> = attempts.iter().filter(|x| x["job"] == "test-bats").collect();
    assert_eq!(bats.len(), 2, "the failed build and its rerun: {json}");
    for x in &attempts {
        let u = x["url"].as_str().unwrap();
        assert!(u.starts_with(&ci), "{u} not on the simulator");
        assert!(dom.contains(&format!("<a class=\"build\" href=\"{u}\">")), "attempt {u} not linked");
    }
    assert_eq!(bats[0]["status"], "failed");
    assert!(dom.contains(&format!("rerun of build {}", bats[0]["build_id"])), "rerun not shown");
    assert!(dom.contains("work attempt succeeded rerun"), "rerun bar not drawn");
    let failed_url = bats[0]["url"].as_str().unwrap();
    assert!(dom.contains(&format!("the log is on <a href=\"{failed_url}\">the build page</a>")), "failure not shown");
    // Under the failed attempt, the end of its log (the JSON's excerpt, escaped).
    let text = bats[0]["log_excerpt"].as_str().expect("the failed build's log excerpt");
    assert!(text.contains("--- FAIL") || text.contains("failed"), "{text}");
    let pre = format!("<pre class=\"log\" data-build=\"{}\">", bats[0]["build_id"]);
    let shown = dom.split(&pre).nth(1).expect("the excerpt under the failed attempt").split("</pre>").next().unwrap();
    assert_eq!(
        shown,
        deploy_journey::pages::esc(text).replace("&#39;", "'").replace("&quot;", "\""),
        "the excerpt as the JSON has it"
    );
    assert!(dom.contains("class=\"bar wait\"") && dom.contains("class=\"bar work"), "no wait/work bars");
    assert!(dom.contains("<table id=\"stages\">"), "no table fallback");
    // The trace in Grafana: Explore on Tempo for the first 32 hex digits.
    assert!(hrefs(&dom).iter().any(|h| h.starts_with("https://grafana.example/explore?") && h.contains(&a[..32])));
    let shot = chromium_screenshot(&format!("{url}/journeys/{a}"), "journey-rerun", 1280, 1800);
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000, "{} is empty", shot.display());

    // The skipped commit rode in next's batch; its hostile subject is text, not markup.
    let dom = chromium_dom(&format!("{url}/journeys/{skip}"));
    only_links_to(&dom, &allowed);
    assert!(dom.contains(&format!("rode in the batch of <a href=\"/journeys/{next}\">")), "carrier not linked:\n{dom}");
    assert!(
        dom.contains("chore: &lt;script&gt;alert('x')&lt;/script&gt; &amp; \"tidy\""),
        "subject not escaped:\n{dom}"
    );
    let dom = chromium_dom(&format!("{url}/journeys/{next}"));
    assert!(
        dom.contains(&format!("its builds carried along <a href=\"/journeys/{skip}\"")),
        "batch not listed:\n{dom}"
    );
    chromium_screenshot(&format!("{url}/journeys/{skip}"), "journey-batched", 1280, 1800);
    // Narrow screens still get the page (the notes column folds away).
    chromium_screenshot(&format!("{url}/journeys/{a}"), "journey-narrow", 400, 1400);

    // The landing page: what runs where, links to the commit pages.
    let dom = chromium_dom(&format!("{url}/"));
    only_links_to(&dom, &allowed);
    assert!(dom.contains("<h2>Environments</h2>"), "{dom}");
    let staging = dom.split("<td><b>staging</b></td>").nth(1).expect("a staging row");
    assert!(
        staging.starts_with(&format!("<td><a href=\"/journeys/{next}\"><code>{}</code></a>", &next[..7])),
        "{staging}"
    );
    for sha in [a, next] {
        assert!(hrefs(&dom).contains(&format!("/journeys/{sha}")), "no link to {sha}");
    }
    chromium_screenshot(&format!("{url}/"), "landing", 1280, 1800);

    // A sha that is not one is a page that says so.
    let r404 = c.get(format!("{url}/journeys/zz")).send().await.unwrap();
    assert_eq!(r404.status(), 400);
    assert!(r404.text().await.unwrap().contains("is not a commit sha"));
}

/// A commit from a pull request shows "Before the merge": the PR linked, each phase on its own
/// axis with the JSON's durations, each Actions run linked to GitHub; a direct push says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeline_page_shows_the_pull_request_before_the_merge_in_a_browser() {
    let r = run_scenario("hotfix-pr.yaml", "lana").await;
    let url = serve(&r, Links::default()).await;
    let ci = r.cfg.concourse.url.clone();
    let allowed = [ci.as_str(), "https://github.com/GaloyMoney/lana-bank/"];
    let (a, h) = (&r.shas["a"], &r.shas["h"]);
    let json: serde_json::Value =
        crate::support::client().get(format!("{url}/api/v1/journeys/{h}")).send().await.unwrap().json().await.unwrap();
    assert_eq!(json["origin"], "pull_request", "{json}");
    let pr = &json["pull_request"];
    assert_eq!(pr["number"], 4301);
    let dom = chromium_dom(&format!("{url}/journeys/{h}"));
    only_links_to(&dom, &allowed);
    let pr_url = pr["url"].as_str().unwrap();
    assert!(dom.contains(&format!("<a href=\"{pr_url}\">pull request #4301</a>")), "PR not linked:\n{dom}");
    assert!(dom.contains("<span class=\"badge\">hotfix</span>"), "label not shown");
    let table = dom.split("<table id=\"premerge-timeline\">").nth(1).expect("the pre-merge table");
    let table = table.split("</table>").next().unwrap();
    let phases = pr["stages"].as_array().unwrap();
    assert!(!phases.is_empty());
    for s in phases {
        let row = format!("<td><b>{}</b></td>", s["name"].as_str().unwrap());
        assert!(table.contains(&row), "{row} missing");
        assert!(table.contains(&age(s["duration_seconds"].as_i64().unwrap())), "{}'s duration missing", s["name"]);
    }
    for run in pr["checks"].as_array().unwrap() {
        let u = run["url"].as_str().unwrap();
        assert!(table.contains(&format!("<a class=\"build\" href=\"{u}\">")), "run {u} not linked");
    }
    let dom = chromium_dom(&format!("{url}/journeys/{a}"));
    assert!(dom.contains("Pushed directly to the branch: no pull request."), "{dom}");

    // A draft, a change request, a follow-up push and Actions runs on the final head.
    let r = run_scenario("pr-draft-review-rerun.yaml", "lana").await;
    let url = serve(&r, Links::default()).await;
    let m = &r.shas["m"];
    let json: serde_json::Value =
        crate::support::client().get(format!("{url}/api/v1/journeys/{m}")).send().await.unwrap().json().await.unwrap();
    let pr = &json["pull_request"];
    let names: Vec<&str> = pr["stages"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["coding", "pickup", "review", "checks", "merge"], "{pr}");
    let runs = pr["checks"].as_array().unwrap();
    assert!(!runs.is_empty(), "the final head's Actions runs: {pr}");
    let dom = chromium_dom(&format!("{url}/journeys/{m}"));
    let ci = r.cfg.concourse.url.clone();
    only_links_to(&dom, &[ci.as_str(), "https://github.com/GaloyMoney/lana-bank/"]);
    let table = dom.split("<table id=\"premerge-timeline\">").nth(1).expect("the pre-merge table");
    let table = table.split("</table>").next().unwrap();
    let mut jobs_shown = 0;
    for run in runs {
        let u = run["url"].as_str().unwrap();
        assert!(u.starts_with("https://github.com/GaloyMoney/lana-bank/actions/runs/"), "{u}");
        assert!(table.contains(&format!("<a class=\"build\" href=\"{u}\">")), "run {u} not linked");
        // Its jobs, each linked to its page on GitHub, with its conclusion and duration.
        let jobs = run["jobs"].as_array().expect("the run's jobs in the JSON");
        assert!(!jobs.is_empty(), "run {u} has jobs: {run}");
        for jb in jobs {
            let ju = jb["url"].as_str().unwrap();
            assert!(ju.starts_with(&format!("{u}/job/")), "{ju}");
            let row = table
                .split("<tr class=\"job-row\">")
                .find(|r| r.contains(&format!("<a class=\"job\" href=\"{ju}\">{}</a>", jb["name"].as_str().unwrap())))
                .unwrap_or_else(|| panic!("job {ju} not linked:\n{table}"));
            let row = row.split("</tr>").next().unwrap();
            let conclusion = jb["conclusion"].as_str().expect("completed");
            assert!(row.contains(&format!("\">{conclusion}</span>")), "{conclusion} not shown: {row}");
            let took = jb["completed_at"].as_i64().unwrap() - jb["started_at"].as_i64().unwrap();
            assert!(row.contains(&format!("<td>{}</td>", age(took))), "duration {took} s not shown: {row}");
            jobs_shown += 1;
        }
    }
    assert!(jobs_shown >= 2, "both workflows' jobs");
    chromium_screenshot(&format!("{url}/journeys/{m}"), "journey-pull-request", 1280, 1800);
}

/// The landing page after production was rolled back: the environments table names what runs
/// there now (the older commit, marked), which is the simulator's running version; the
/// deployments table lists the rollback and the deployment it failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_landing_page_says_what_runs_after_a_rollback_and_lists_deployments() {
    let r = run_scenario("prod-rollback.yaml", "lana").await;
    let url = serve(&r, Links::default()).await;
    let (a, b) = (&r.shas["a"], &r.shas["b"]);
    let truth = r
        .sim
        .with_world(|w| w.environment_truth(86_400))
        .into_iter()
        .find(|e| e.environment == crate::sim_cepler::PRODUCTION)
        .and_then(|e| e.running)
        .and_then(|x| x.newest_commit);
    assert_eq!(truth.as_deref(), Some(a.as_str()), "the scenario rolls production back to a");
    let dom = chromium_dom(&format!("{url}/"));
    only_links_to(&dom, &[r.cfg.concourse.url.as_str(), "https://github.com/GaloyMoney/lana-bank/commit/"]);
    let row = dom.split("<tr id=\"env-production\">").nth(1).expect("a production row").split("</tr>").next().unwrap();
    assert!(row.contains(&format!("<a href=\"/journeys/{a}\"><code>{}</code></a>", &a[..7])), "{row}");
    assert!(row.contains("rolled back"), "the rollback not marked: {row}");
    assert!(row.contains("1 commit(s)"), "b is behind again: {row}");
    assert!(row.contains("1 waiting"), "b waits at the gate again: {row}");
    let staging = dom.split("<tr id=\"env-staging\">").nth(1).unwrap().split("</tr>").next().unwrap();
    assert!(staging.contains(&format!("/journeys/{b}")) && staging.contains("up to date"), "{staging}");
    // Deployments, newest first: production's rollback, and b's deployment it failed.
    let table = dom.split("<table id=\"deployments\">").nth(1).unwrap().split("</table>").next().unwrap();
    let rows: Vec<&str> = table.split("<tr>").skip(2).collect();
    assert!(rows[0].starts_with("<td>production</td>") && rows[0].contains("<td>rollback</td>"), "{table}");
    assert!(
        rows.iter().any(|x| x.starts_with("<td>production</td>")
            && x.contains("failed: rolled_back")
            && x.contains(&format!("/journeys/{b}"))),
        "{table}"
    );
    chromium_screenshot(&format!("{url}/"), "landing-rollback", 1280, 1400);

    // A staging deploy that failed after what runs there: the row says so and links the build.
    let mut derived = r.derived.clone();
    let running = derived.environments.iter().find(|e| &*e.name == "staging").unwrap().clone();
    let mut failed = derived.deployments.iter().find(|d| Some(d.build_id) == running.running_build).unwrap().clone();
    (failed.build_id, failed.name, failed.succeeded) = (9_999, "99".into(), false);
    failed.end = running.since.unwrap() + 60;
    failed.url =
        format!("{}/teams/dev/pipelines/galoy-staging/jobs/galoy-staging-lana-bank/builds/99", r.cfg.concourse.url)
            .into();
    derived.deployments.push(failed.clone());
    let url = serve_derived(&r, Links::default(), Default::default(), derived).await;
    let dom = chromium_dom(&format!("{url}/"));
    let staging = dom.split("<tr id=\"env-staging\">").nth(1).unwrap().split("</tr>").next().unwrap();
    assert!(
        staging.contains(&format!("last deploy failed:</span> <a href=\"{}\">{} #99</a>", failed.url, failed.job)),
        "{staging}"
    );
    let production = dom.split("<tr id=\"env-production\">").nth(1).unwrap().split("</tr>").next().unwrap();
    assert!(!production.contains("last deploy failed"), "{production}");
}

/// Commits in flight show when they are expected in each environment still ahead: the
/// arrival `serve` predicts (`core::eta`), as the JSON API gives it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_landing_page_shows_each_commit_in_flights_expected_arrival() {
    let r = run_scenario("testflight-hangs.yaml", "lana").await;
    let now = r.sim.now();
    let etas = deploy_journey::core::eta::predict_all(&r.derived, &r.cfg.core(), now);
    let b = &r.shas["b"];
    let eta = etas.get(b).and_then(|e| e.get("staging")).copied().expect("b, in flight, has an arrival in staging");
    let url = serve_with_etas(&r, Links::default(), etas).await;
    let dom = chromium_dom(&format!("{url}/"));
    let row = dom
        .split(&format!("<a href=\"/journeys/{b}\">"))
        .find(|x| x.contains("class=\"eta\""))
        .expect("b's in-flight row with its arrival");
    let want = if eta > now { format!("staging in {}", age(eta - now)) } else { "staging in due".into() };
    assert!(row.split("</tr>").next().unwrap().contains(&want), "{want} not in {row}");
}
