//! The simulator's GitHub REST API: shapes, pagination, conditional requests, compare, the PR
//! merge flow, auth, rate limits and push webhooks, over a real port.

use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use deploy_journey::sim::engine::{Action, CommitSpec};
use deploy_journey::sim::github_api::{deliver_webhooks, set_rate_limit};
use deploy_journey::sim::model::ReviewState;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::support::*;

const REPO: &str = "GaloyMoney/lana-bank";

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
}

fn header_num(r: &reqwest::Response, name: &str) -> u64 {
    header(r, name).parse().unwrap_or_else(|_| panic!("{name} is not a number: {:?}", header(r, name)))
}

/// The URL of `rel` in a GitHub `Link` header.
fn link(r: &reqwest::Response, rel: &str) -> Option<String> {
    let l = header(r, "link");
    l.split(", ")
        .find(|p| p.ends_with(&format!("rel=\"{rel}\"")))
        .map(|p| p[1..p.find('>').expect("<url>")].to_string())
}

fn set_tokens(ts: &TestSim, tokens: &[&str]) {
    *ts.sim.github_tokens.write().expect("tokens") = tokens.iter().map(|t| t.to_string()).collect();
}

async fn get_auth(ts: &TestSim, path: &str, token: &str) -> reqwest::Response {
    ts.client.get(format!("{}{path}", ts.url)).bearer_auth(token).send().await.expect("request")
}

fn main_history(ts: &TestSim) -> Vec<String> {
    ts.sim.with_world(|w| {
        let mut h = w.repo(REPO).expect("repo").branches["main"].clone();
        h.reverse();
        h
    })
}

fn is_str(v: &Value) -> bool {
    v.is_string()
}

fn assert_user(u: &Value, login: &str) {
    assert_eq!(u["login"], login);
    assert!(u["id"].is_u64(), "{u}");
    for k in ["node_id", "avatar_url", "url", "html_url", "type"] {
        assert!(is_str(&u[k]), "user.{k}: {u}");
    }
    assert!(u["site_admin"].is_boolean());
}

/// Every field "List commits" shows, with its JSON type.
fn assert_commit_shape(c: &Value) {
    let sha = c["sha"].as_str().expect("sha");
    assert_eq!(sha.len(), 40);
    assert!(is_str(&c["node_id"]));
    let inner = &c["commit"];
    for who in ["author", "committer"] {
        assert!(is_str(&inner[who]["name"]) && is_str(&inner[who]["email"]), "{who}");
        let date = inner[who]["date"].as_str().expect("date");
        assert!(date.len() == 20 && date.ends_with('Z') && date.as_bytes()[10] == b'T', "ISO-8601 UTC: {date}");
    }
    assert!(is_str(&inner["message"]));
    assert_eq!(inner["tree"]["sha"].as_str().map(str::len), Some(40));
    assert!(is_str(&inner["tree"]["url"]));
    assert!(inner["url"].as_str().is_some_and(|u| u.ends_with(&format!("/git/commits/{sha}"))));
    assert!(inner["comment_count"].is_u64());
    assert!(inner["verification"]["verified"].is_boolean() && is_str(&inner["verification"]["reason"]));
    assert!(c["url"].as_str().is_some_and(|u| u.ends_with(&format!("/repos/{REPO}/commits/{sha}"))));
    assert_eq!(c["html_url"], format!("https://github.com/{REPO}/commit/{sha}"));
    assert!(c["comments_url"].as_str().is_some_and(|u| u.ends_with("/comments")));
    assert!(c["author"].is_object() || c["author"].is_null());
    assert!(c["committer"].is_object() || c["committer"].is_null());
    for p in c["parents"].as_array().expect("parents") {
        assert_eq!(p["sha"].as_str().map(str::len), Some(40));
        assert!(is_str(&p["url"]) && is_str(&p["html_url"]));
    }
}

#[tokio::test]
async fn list_commits_pages_first_parent_history_in_githubs_shape() {
    let ts = spawn_sim("lana", 1).await;
    let a = ts.commit(&["core/a.rs"], "feat: a");
    ts.step(60);
    let b = ts.commit(&["core/b.rs"], "feat: b");
    ts.step(60);
    let c = ts.commit(&["core/c.rs"], "feat: c\n\nwith a body");

    let r = ts.get(&format!("/repos/{REPO}/commits?sha=main&per_page=2")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), "application/json; charset=utf-8");
    assert_eq!(header(&r, "x-github-api-version-selected"), "2022-11-28");
    assert!(!header(&r, "x-github-request-id").is_empty());
    assert_eq!(header(&r, "x-ratelimit-resource"), "core");
    let next = link(&r, "next").expect("rel=next");
    let last = link(&r, "last").expect("rel=last");
    assert!(
        next.starts_with(&ts.url)
            && next.contains("sha=main")
            && next.contains("per_page=2")
            && next.ends_with("page=2"),
        "{next}"
    );
    assert!(link(&r, "prev").is_none() && link(&r, "first").is_none());
    let page1: Vec<Value> = r.json().await.expect("json");
    assert_eq!(page1.len(), 2);
    page1.iter().for_each(assert_commit_shape);
    assert_eq!(page1[0]["sha"], c.as_str());
    assert_eq!(page1[1]["sha"], b.as_str());
    assert_eq!(
        page1[0]["parents"],
        json!([{"sha": b, "url": format!("{}/repos/{REPO}/commits/{b}", ts.url), "html_url": format!("https://github.com/{REPO}/commit/{b}")}])
    );
    assert_eq!(page1[0]["commit"]["message"], "feat: c\n\nwith a body");
    assert_eq!(page1[0]["commit"]["author"]["name"], "Alice Doe");
    assert_eq!(page1[0]["commit"]["author"]["email"], "alice@example.com");
    assert_eq!(page1[0]["commit"]["author"]["date"], "2026-03-02T08:02:00Z");
    assert_user(&page1[0]["author"], "alice");
    // Commits landed on main are GitHub squash merges: committed, and signed, by web-flow.
    assert_user(&page1[0]["committer"], "web-flow");
    assert_eq!(page1[0]["commit"]["verification"]["verified"], true);

    let r = ts.client.get(&next).send().await.expect("page 2");
    assert_eq!(r.status(), 200);
    assert!(link(&r, "prev").is_some() && link(&r, "first").is_some());
    let page2: Vec<Value> = r.json().await.expect("json");
    assert_eq!(page2[0]["sha"], a.as_str());
    // Pages together are the whole first-parent history, newest first, down to the root.
    let mut all: Vec<String> =
        page1.iter().chain(&page2).map(|c| c["sha"].as_str().expect("sha").to_string()).collect();
    let mut url = link(&ts.client.get(&next).send().await.expect("again"), "next");
    while let Some(u) = url {
        let r = ts.client.get(&u).send().await.expect("page");
        url = link(&r, "next");
        let page: Vec<Value> = r.json().await.expect("json");
        all.extend(page.iter().map(|c| c["sha"].as_str().expect("sha").to_string()));
    }
    assert_eq!(all, main_history(&ts));
    let r = ts.client.get(&last).send().await.expect("last");
    let last_page: Vec<Value> = r.json().await.expect("json");
    assert_eq!(last_page.last().expect("root")["parents"], json!([]));

    // A sha starts the walk there; an unknown one is GitHub's 404.
    let from_b: Vec<Value> =
        ts.get_json(&format!("/repos/{REPO}/commits?sha={b}&per_page=1")).await.as_array().cloned().expect("array");
    assert_eq!(from_b[0]["sha"], b.as_str());
    let r = ts.get(&format!("/repos/{REPO}/commits?sha=no-such-branch")).await;
    assert_eq!(r.status(), 404);
    let r = ts.get(&format!("/repos/{REPO}/commits?per_page=lots")).await;
    assert_eq!(r.status(), 422);
    let e: Value = r.json().await.expect("json");
    assert_eq!(e["message"], "Validation Failed");
}

#[tokio::test]
async fn etag_gives_304_without_using_rate_limit_until_something_changes() {
    let ts = spawn_sim("lana", 2).await;
    let path = format!("/repos/{REPO}/commits?sha=main&per_page=5");
    let r1 = ts.get(&path).await;
    assert_eq!(r1.status(), 200);
    let etag = header(&r1, "etag");
    assert!(etag.starts_with('"') && etag.ends_with('"') && etag.len() == 66, "strong quoted hash: {etag}");
    let remaining = header_num(&r1, "x-ratelimit-remaining");
    let with_tag = || ts.client.get(format!("{}{path}", ts.url)).header("If-None-Match", &etag).send();

    let r2 = with_tag().await.expect("conditional");
    assert_eq!(r2.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header(&r2, "etag"), etag);
    assert_eq!(header_num(&r2, "x-ratelimit-remaining"), remaining, "304s are free");
    assert!(r2.bytes().await.expect("body").is_empty());
    let r3 = with_tag().await.expect("conditional");
    assert_eq!(r3.status(), 304);
    assert_eq!(header_num(&r3, "x-ratelimit-remaining"), remaining);

    let sha = ts.commit(&["core/new.rs"], "feat: new");
    let r4 = with_tag().await.expect("conditional");
    assert_eq!(r4.status(), 200);
    assert_ne!(header(&r4, "etag"), etag);
    assert_eq!(header_num(&r4, "x-ratelimit-remaining"), remaining - 1);
    let body: Vec<Value> = r4.json().await.expect("json");
    assert_eq!(body[0]["sha"], sha.as_str());
}

#[tokio::test]
async fn one_commit_has_stats_and_paginated_files() {
    let ts = spawn_sim("lana", 3).await;
    let small = ts.commit(&["core/lib.rs", "apps/admin-panel/x y.ts"], "fix: two files");
    let v = ts.get_json(&format!("/repos/{REPO}/commits/{small}")).await;
    assert_commit_shape(&v);
    assert_eq!(v["sha"], small.as_str());
    let files = v["files"].as_array().expect("files");
    assert_eq!(files.len(), 2);
    let f = &files[1];
    assert_eq!(f["filename"], "apps/admin-panel/x y.ts");
    assert_eq!(f["status"], "modified");
    assert_eq!(f["sha"].as_str().map(str::len), Some(40));
    let (add, del) = (f["additions"].as_u64().expect("additions"), f["deletions"].as_u64().expect("deletions"));
    assert_eq!(f["changes"].as_u64(), Some(add + del));
    assert_eq!(f["blob_url"], format!("https://github.com/{REPO}/blob/{small}/apps/admin-panel/x%20y.ts"));
    assert_eq!(f["raw_url"], format!("https://github.com/{REPO}/raw/{small}/apps/admin-panel/x%20y.ts"));
    assert_eq!(f["contents_url"], format!("{}/repos/{REPO}/contents/apps/admin-panel/x%20y.ts?ref={small}", ts.url));
    assert!(f["patch"].as_str().is_some_and(|p| p.starts_with("@@ ")));
    let sum = |k: &str| files.iter().map(|f| f[k].as_u64().expect("count")).sum::<u64>();
    assert_eq!(
        v["stats"],
        json!({"total": sum("additions") + sum("deletions"), "additions": sum("additions"), "deletions": sum("deletions")})
    );

    // Refs: a unique prefix, a branch name; unknown ones as GitHub answers them.
    assert_eq!(ts.get_json(&format!("/repos/{REPO}/commits/{}", &small[..7])).await["sha"], small.as_str());
    assert_eq!(ts.get_json(&format!("/repos/{REPO}/commits/main")).await["sha"], small.as_str());
    let r = ts.get(&format!("/repos/{REPO}/commits/{}", "0".repeat(40))).await;
    assert_eq!(r.status(), 422);
    assert_eq!(
        r.json::<Value>().await.expect("json")["message"],
        format!("No commit found for SHA: {}", "0".repeat(40))
    );
    let r = ts.get("/repos/GaloyMoney/no-such-repo/commits/main").await;
    assert_eq!(r.status(), 404);
    let e: Value = r.json().await.expect("json");
    assert_eq!(e["message"], "Not Found");
    assert_eq!(e["status"], "404");
    assert!(e["documentation_url"].as_str().is_some_and(|u| u.starts_with("https://docs.github.com/")));

    // 350 files: GitHub pages them 300 at a time, with Link headers; stats cover all of them.
    let names: Vec<String> = (0..350).map(|i| format!("core/generated/f{i:03}.rs")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let big = ts.commit(&refs, "chore: generate");
    let r = ts.get(&format!("/repos/{REPO}/commits/{big}")).await;
    let next = link(&r, "next").expect("next page of files");
    let p1: Value = r.json().await.expect("json");
    assert_eq!(p1["files"].as_array().map(Vec::len), Some(300));
    let r = ts.client.get(&next).send().await.expect("page 2");
    assert!(link(&r, "next").is_none());
    let p2: Value = r.json().await.expect("json");
    assert_eq!(p2["sha"], big.as_str());
    assert_eq!(p2["stats"], p1["stats"]);
    let listed: Vec<&str> = p1["files"]
        .as_array()
        .into_iter()
        .chain(p2["files"].as_array())
        .flatten()
        .map(|f| f["filename"].as_str().expect("name"))
        .collect();
    assert_eq!(listed, refs);
    // And per_page is honoured.
    let r = ts.get(&format!("/repos/{REPO}/commits/{big}?per_page=100&page=4")).await;
    assert!(link(&r, "next").is_none() && link(&r, "first").is_some());
    assert_eq!(r.json::<Value>().await.expect("json")["files"].as_array().map(Vec::len), Some(50));
}

#[tokio::test]
async fn compare_reports_ahead_behind_identical_and_diverged() {
    let ts = spawn_sim("lana", 4).await;
    let a = ts.commit(&["core/a.rs"], "feat: a");
    ts.step(30);
    let b = ts.commit(&["core/b.rs", "core/a.rs"], "feat: b");

    let v = ts.get_json(&format!("/repos/{REPO}/compare/{a}...{b}")).await;
    assert_eq!(v["status"], "ahead");
    assert_eq!(
        (v["ahead_by"].as_u64(), v["behind_by"].as_u64(), v["total_commits"].as_u64()),
        (Some(1), Some(0), Some(1))
    );
    assert_eq!(v["commits"][0]["sha"], b.as_str());
    assert_commit_shape(&v["commits"][0]);
    assert_eq!(v["base_commit"]["sha"], a.as_str());
    assert_eq!(v["merge_base_commit"]["sha"], a.as_str());
    let mut files: Vec<&str> =
        v["files"].as_array().expect("files").iter().map(|f| f["filename"].as_str().expect("name")).collect();
    files.sort();
    assert_eq!(files, ["core/a.rs", "core/b.rs"]);
    assert_eq!(v["html_url"], format!("https://github.com/{REPO}/compare/{a}...{b}"));
    assert_eq!(
        v["permalink_url"],
        format!("https://github.com/{REPO}/compare/GaloyMoney:{}...GaloyMoney:{}", &a[..7], &b[..7])
    );
    assert!(v["url"].as_str().is_some_and(|u| u.starts_with(&ts.url)));

    let v = ts.get_json(&format!("/repos/{REPO}/compare/{b}...{}", &a[..8])).await;
    assert_eq!(v["status"], "behind");
    assert_eq!((v["ahead_by"].as_u64(), v["behind_by"].as_u64()), (Some(0), Some(1)));
    assert_eq!(v["commits"], json!([]));

    let v = ts.get_json(&format!("/repos/{REPO}/compare/main...{b}")).await;
    assert_eq!(v["status"], "identical");
    assert_eq!(
        ts.get_json(&format!("/repos/{REPO}/compare/main~1...main")).await["merge_base_commit"]["sha"],
        a.as_str()
    );
    assert_eq!(v["total_commits"], 0);

    // A branch off main at b, and main moving on: diverged, with b the merge base.
    let now = ts.sim.now();
    ts.sim.with_world(|w| {
        let spec = CommitSpec {
            message: "feat: side".into(),
            files: vec!["core/side.rs".into()],
            author: alice(),
            author_date: None,
        };
        w.schedule_action(now, Action::Commit { repo: REPO.into(), branch: "side".into(), spec });
    });
    ts.step(1);
    ts.commit(&["core/c.rs"], "feat: c");
    let v = ts.get_json(&format!("/repos/{REPO}/compare/main...side")).await;
    assert_eq!(v["status"], "diverged");
    assert_eq!((v["ahead_by"].as_u64(), v["behind_by"].as_u64()), (Some(1), Some(1)));
    assert_eq!(v["merge_base_commit"]["sha"], b.as_str());
    assert_eq!(v["files"][0]["filename"], "core/side.rs");

    assert_eq!(ts.get(&format!("/repos/{REPO}/compare/main...nope")).await.status(), 404);
    assert_eq!(ts.get(&format!("/repos/{REPO}/compare/main")).await.status(), 404);
}

#[tokio::test]
async fn pull_request_merges_only_once_approved() {
    let ts = spawn_sim("lana", 5).await;
    set_tokens(&ts, &["ghp_merger"]);
    let now = ts.sim.now();
    ts.sim.with_world(|w| {
        let spec = CommitSpec {
            message: "feat: x".into(),
            files: vec!["core/x.rs".into()],
            author: alice(),
            author_date: None,
        };
        w.schedule_action(now, Action::Commit { repo: REPO.into(), branch: "feature-x".into(), spec });
        w.schedule_action(
            now,
            Action::OpenPull {
                repo: REPO.into(),
                number_hint: None,
                title: "Add x".into(),
                head: "feature-x".into(),
                files: vec!["core/x.rs".into()],
                author: "alice".into(),
                draft: false,
                coded_for: None,
            },
        );
    });
    ts.step(1);
    let head_sha =
        ts.sim.with_world(|w| w.repo(REPO).and_then(|r| r.head("feature-x").cloned())).expect("feature head");

    let r = get_auth(&ts, &format!("/repos/{REPO}/pulls?state=open&head=GaloyMoney:feature-x"), "ghp_merger").await;
    assert_eq!(r.status(), 200);
    let list: Vec<Value> = r.json().await.expect("json");
    assert_eq!(list.len(), 1);
    assert!(list[0].get("merged").is_none(), "the list omits what only the single PR shows");
    let n = list[0]["number"].as_u64().expect("number");

    let pr: Value = get_auth(&ts, &format!("/repos/{REPO}/pulls/{n}"), "ghp_merger").await.json().await.expect("json");
    assert_eq!(pr["number"], n);
    assert_eq!(pr["state"], "open");
    assert_eq!(pr["title"], "Add x");
    assert_eq!(pr["draft"], false);
    assert_eq!(pr["merged"], false);
    assert_eq!(pr["mergeable"], true);
    assert_eq!(pr["mergeable_state"], "blocked");
    assert!(pr["merged_at"].is_null() && pr["merge_commit_sha"].is_null() && pr["closed_at"].is_null());
    assert_user(&pr["user"], "alice");
    assert_eq!(pr["head"]["ref"], "feature-x");
    assert_eq!(pr["head"]["sha"], head_sha.as_str());
    assert_eq!(pr["head"]["label"], "GaloyMoney:feature-x");
    assert_eq!(pr["base"]["ref"], "main");
    assert_eq!(pr["html_url"], format!("https://github.com/{REPO}/pull/{n}"));
    assert!(pr["url"].as_str().is_some_and(|u| u == format!("{}/repos/{REPO}/pulls/{n}", ts.url)));
    assert!(pr["labels"].is_array() && pr["created_at"].is_string() && pr["updated_at"].is_string());

    let merge_url = format!("{}/repos/{REPO}/pulls/{n}/merge", ts.url);
    let merge = |body: Value| ts.client.put(&merge_url).bearer_auth("ghp_merger").json(&body).send();
    let main_before = main_history(&ts)[0].clone();

    let r = ts.client.put(&merge_url).json(&json!({"merge_method": "squash"})).send().await.expect("anonymous merge");
    assert_eq!(r.status(), 401);
    let r = merge(json!({"merge_method": "squash"})).await.expect("merge");
    assert_eq!(r.status(), 405);
    assert_eq!(
        r.json::<Value>().await.expect("json")["message"],
        "At least 1 approving review is required by reviewers with write access."
    );
    assert_eq!(main_history(&ts)[0], main_before, "nothing lands on main");

    let now = ts.sim.now();
    ts.sim.with_world(|w| {
        w.schedule_action(
            now,
            Action::Review { repo: REPO.into(), number: n, user: "bob".into(), state: ReviewState::Approved },
        )
    });
    ts.step(1);
    let reviews: Vec<Value> =
        get_auth(&ts, &format!("/repos/{REPO}/pulls/{n}/reviews"), "ghp_merger").await.json().await.expect("json");
    assert_eq!(reviews.len(), 1);
    assert_eq!(reviews[0]["state"], "APPROVED");
    assert_user(&reviews[0]["user"], "bob");
    assert!(reviews[0]["id"].is_i64() && reviews[0]["submitted_at"].is_string() && reviews[0]["body"].is_string());
    assert_eq!(reviews[0]["commit_id"], head_sha.as_str());

    let r = merge(json!({"merge_method": "squash", "sha": "0".repeat(40)})).await.expect("merge");
    assert_eq!(r.status(), 409);
    let r = merge(json!({"merge_method": "merge"})).await.expect("merge");
    assert_eq!(r.status(), 405, "squash-only repository");

    let r = merge(json!({"merge_method": "squash", "sha": head_sha})).await.expect("merge");
    assert_eq!(r.status(), 200);
    let m: Value = r.json().await.expect("json");
    assert_eq!(m["merged"], true);
    assert_eq!(m["message"], "Pull Request successfully merged");
    let sha = m["sha"].as_str().expect("sha").to_string();
    assert_eq!(main_history(&ts)[0], sha, "the squash commit is main's new head");
    assert_eq!(main_history(&ts)[1], main_before);
    let c =
        get_auth(&ts, &format!("/repos/{REPO}/commits/{sha}"), "ghp_merger").await.json::<Value>().await.expect("json");
    assert_eq!(c["commit"]["message"], format!("Add x (#{n})"));

    let pr: Value = get_auth(&ts, &format!("/repos/{REPO}/pulls/{n}"), "ghp_merger").await.json().await.expect("json");
    assert_eq!(pr["merged"], true);
    assert_eq!(pr["state"], "closed");
    assert_eq!(pr["merge_commit_sha"], sha.as_str());
    assert!(pr["merged_at"].is_string() && pr["closed_at"].is_string());
    assert_eq!(pr["base"]["sha"], main_before.as_str());
    let r = merge(json!({"merge_method": "squash"})).await.expect("merge");
    assert_eq!(r.status(), 405);
    assert_eq!(r.json::<Value>().await.expect("json")["message"], "Pull Request is not mergeable");
    assert_eq!(get_auth(&ts, &format!("/repos/{REPO}/pulls/99999"), "ghp_merger").await.status(), 404);
}

#[tokio::test]
async fn auth_rejects_bad_tokens_and_hides_private_repos() {
    let ts = spawn_sim("lana", 6).await;
    let private = "/repos/GaloyMoney/galoy-private-charts";
    // No token list: any token works, anonymous callers get GitHub's 60/h.
    let r = ts.get(&format!("/repos/{REPO}")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header_num(&r, "x-ratelimit-limit"), 60);
    let repo: Value = r.json().await.expect("json");
    assert_eq!(repo["full_name"], REPO);
    assert_eq!(repo["default_branch"], "main");
    assert_eq!(repo["private"], false);
    assert!(repo["id"].is_i64() && repo["html_url"] == format!("https://github.com/{REPO}"));
    assert_eq!(ts.get(private).await.status(), 404);
    assert_eq!(ts.get(&format!("{private}/commits")).await.status(), 404);
    let r = get_auth(&ts, private, "anything").await;
    assert_eq!(r.status(), 200);
    assert_eq!(header_num(&r, "x-ratelimit-limit"), 5000);
    assert_eq!(r.json::<Value>().await.expect("json")["private"], true);

    set_tokens(&ts, &["good"]);
    let r = get_auth(&ts, &format!("/repos/{REPO}"), "bad").await;
    assert_eq!(r.status(), 401);
    let e: Value = r.json().await.expect("json");
    assert_eq!(e["message"], "Bad credentials");
    assert_eq!(e["status"], "401");
    let r = ts
        .client
        .get(format!("{}{private}", ts.url))
        .header("Authorization", "token good")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    assert_eq!(ts.get(private).await.status(), 404);

    let b = get_auth(&ts, &format!("{private}/branches/main"), "good").await.json::<Value>().await.expect("json");
    assert_eq!(b["name"], "main");
    assert_eq!(b["protected"], true);
    assert_eq!(b["commit"]["sha"].as_str().map(str::len), Some(40));
    assert_eq!(get_auth(&ts, &format!("{private}/branches/nope"), "good").await.status(), 404);
}

#[tokio::test]
async fn exhausted_rate_limit_is_a_403_with_headers() {
    let ts = spawn_sim("lana", 7).await;
    set_rate_limit(&ts.sim, Some(3));
    let epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    for i in 0..3u64 {
        let r = ts.get(&format!("/repos/{REPO}")).await;
        assert_eq!(r.status(), 200);
        assert_eq!(header_num(&r, "x-ratelimit-limit"), 3);
        assert_eq!(header_num(&r, "x-ratelimit-used"), i + 1);
        assert_eq!(header_num(&r, "x-ratelimit-remaining"), 2 - i);
        let reset = header_num(&r, "x-ratelimit-reset");
        assert!(reset > epoch && reset <= epoch + 3601, "an hour of wall-clock time: {reset} vs {epoch}");
    }
    let r = ts.get(&format!("/repos/{REPO}/commits")).await;
    assert_eq!(r.status(), 403);
    assert_eq!(header_num(&r, "x-ratelimit-remaining"), 0);
    assert_eq!(header_num(&r, "x-ratelimit-used"), 3);
    assert_eq!(header(&r, "x-ratelimit-resource"), "core");
    let e: Value = r.json().await.expect("json");
    assert!(e["message"].as_str().is_some_and(|m| m.starts_with("API rate limit exceeded for ")), "{e}");
    // /rate_limit itself is free and says the same.
    let rl = ts.get_json("/rate_limit").await;
    assert_eq!(rl["resources"]["core"]["remaining"], 0);
    assert_eq!(rl["rate"]["limit"], 3);
    // Each token has its own window.
    let r = get_auth(&ts, &format!("/repos/{REPO}"), "someone").await;
    assert_eq!(r.status(), 200);
    assert_eq!(header_num(&r, "x-ratelimit-remaining"), 2);
    set_rate_limit(&ts.sim, None);
    assert_eq!(ts.get(&format!("/repos/{REPO}")).await.status(), 200);
}

#[tokio::test]
async fn push_webhook_is_delivered_signed() {
    let ts = spawn_sim("lana", 8).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(HeaderMap, Bytes)>();
    let receiver = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let tx = tx.clone();
            async move {
                let _ = tx.send((headers, body));
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, receiver).await;
    });
    init_crypto();
    let hooks = tokio::spawn(deliver_webhooks(ts.sim.clone(), format!("http://{addr}/hook"), "s3cret".into()));

    let before = main_history(&ts)[0].clone();
    let sha = ts.commit(&["core/hooked.rs"], "feat: hooked");
    let (headers, body) = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let (h, b) = rx.recv().await.expect("receiver alive");
            let v: Value = serde_json::from_slice(&b).expect("json body");
            if v["after"] == sha.as_str() {
                return (h, b);
            }
        }
    })
    .await
    .expect("delivery within 10 s");
    hooks.abort();
    server.abort();

    let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    assert_eq!(h("x-github-event"), "push");
    assert_eq!(h("x-github-delivery").len(), 36);
    assert_eq!(h("content-type"), "application/json");
    let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").expect("hmac");
    mac.update(&body);
    assert_eq!(h("x-hub-signature-256"), format!("sha256={}", hex::encode(mac.finalize().into_bytes())));

    let v: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["ref"], "refs/heads/main");
    assert_eq!(v["before"], before.as_str());
    assert_eq!(v["repository"]["full_name"], REPO);
    assert_eq!(v["head_commit"]["id"], sha.as_str());
    assert_eq!(v["commits"][0]["id"], sha.as_str());
    assert_eq!(v["commits"][0]["message"], "feat: hooked");
    assert_eq!(v["commits"][0]["modified"], json!(["core/hooked.rs"]));
    assert!(v["commits"][0]["timestamp"].is_string());
}

/// The pre-merge endpoints: a commit's pull requests (open ones for a branch commit, the merged
/// one for its squash commit on main, none for a direct push) and a pull request's commits.
#[tokio::test]
async fn commit_pulls_and_pull_commits_follow_githubs_rules() {
    let ts = spawn_sim("lana", 3).await;
    set_tokens(&ts, &["ghp_merger"]);
    let direct = main_history(&ts)[0].clone();
    let now = ts.sim.now();
    ts.sim.with_world(|w| {
        for (i, m) in ["feat: y part 1", "feat: y part 2"].iter().enumerate() {
            let spec = CommitSpec {
                message: (*m).into(),
                files: vec![format!("core/y{i}.rs")],
                author: alice(),
                author_date: None,
            };
            w.schedule_action(now, Action::Commit { repo: REPO.into(), branch: "feature-y".into(), spec });
        }
        w.schedule_action(
            now,
            Action::OpenPull {
                repo: REPO.into(),
                number_hint: None,
                title: "Add y".into(),
                head: "feature-y".into(),
                files: vec!["core/y0.rs".into(), "core/y1.rs".into()],
                author: "alice".into(),
                draft: false,
                coded_for: None,
            },
        );
    });
    ts.step(1);
    let head = ts.sim.with_world(|w| w.repo(REPO).and_then(|r| r.head("feature-y").cloned())).expect("feature head");
    let first = ts
        .sim
        .with_world(|w| w.repo(REPO).and_then(|r| r.commits.get(&head).and_then(|c| c.parent.clone())))
        .expect("first commit");
    let pulls_of = |sha: String| {
        let ts = &ts;
        async move {
            let r = get_auth(ts, &format!("/repos/{REPO}/commits/{sha}/pulls"), "ghp_merger").await;
            assert_eq!(r.status(), 200, "commits/{sha}/pulls");
            r.json::<Vec<Value>>().await.expect("json")
        }
    };

    let open = pulls_of(head.clone()).await;
    assert_eq!(open.len(), 1, "the open PR whose commits include the branch head");
    let n = open[0]["number"].as_u64().expect("number");
    assert_eq!(open[0]["state"], "open");
    assert_eq!(open[0]["head"]["sha"], head.as_str());
    assert!(open[0].get("merged").is_none(), "pull-request-simple, not the full pull request");
    assert_eq!(pulls_of(first.clone()).await.len(), 1, "the PR's first commit too");
    assert!(pulls_of(direct.clone()).await.is_empty(), "a commit pushed straight to main has no PR");

    let r = get_auth(&ts, &format!("/repos/{REPO}/pulls/{n}/commits"), "ghp_merger").await;
    assert_eq!(r.status(), 200);
    let commits: Vec<Value> = r.json().await.expect("json");
    let shas: Vec<&str> = commits.iter().filter_map(|c| c["sha"].as_str()).collect();
    assert_eq!(shas, [first.as_str(), head.as_str()], "oldest first, only what the PR adds");
    assert_eq!(commits[0]["commit"]["message"], "feat: y part 1");
    for c in &commits {
        assert_commit_shape(c);
    }
    let r = get_auth(&ts, &format!("/repos/{REPO}/pulls/{n}/commits?per_page=1"), "ghp_merger").await;
    assert!(link(&r, "next").is_some_and(|l| l.contains("page=2")), "paginated like every list");
    assert_eq!(get_auth(&ts, &format!("/repos/{REPO}/pulls/99999/commits"), "ghp_merger").await.status(), 404);

    let now = ts.sim.now();
    ts.sim.with_world(|w| {
        w.schedule_action(
            now,
            Action::Review { repo: REPO.into(), number: n, user: "bob".into(), state: ReviewState::Approved },
        )
    });
    ts.step(1);
    let merge_url = format!("{}/repos/{REPO}/pulls/{n}/merge", ts.url);
    let r = ts.client.put(&merge_url).bearer_auth("ghp_merger").json(&json!({"merge_method": "squash"})).send();
    let m: Value = r.await.expect("merge").json().await.expect("json");
    let squash = m["sha"].as_str().expect("sha").to_string();

    let merged = pulls_of(squash.clone()).await;
    assert_eq!(merged.len(), 1, "the merged PR that introduced the squash commit");
    assert_eq!(merged[0]["number"], n);
    assert_eq!(merged[0]["merge_commit_sha"], squash.as_str());
    assert!(merged[0]["merged_at"].is_string());
    assert!(pulls_of(head.clone()).await.is_empty(), "off main, only open PRs are listed");
    let commits: Vec<Value> =
        get_auth(&ts, &format!("/repos/{REPO}/pulls/{n}/commits"), "ghp_merger").await.json().await.expect("json");
    assert_eq!(commits.len(), 2, "a merged PR keeps its commits");
    let r = get_auth(&ts, &format!("/repos/{REPO}/commits/{}/pulls", "f".repeat(40)), "ghp_merger").await;
    assert_eq!(r.status(), 422);
}

/// GitHub Actions on pull requests: `actions/runs?head_sha=` lists each workflow's run at its
/// latest attempt in `workflow-run`'s shape, a failed run re-run by hand is `run_attempt` 2 of the
/// same run id, and `runs/{id}/jobs?filter=all` shows both attempts' jobs.
#[tokio::test]
async fn actions_runs_on_pull_request_heads_with_reruns() {
    let ts = spawn_sim("lana", 3).await;
    set_tokens(&ts, &["ghp_ci"]);
    let now = ts.sim.now();
    let branches: Vec<String> = (0..12).map(|i| format!("feature-ci-{i}")).collect();
    ts.sim.with_world(|w| {
        for (i, b) in branches.iter().enumerate() {
            let spec = CommitSpec {
                message: format!("feat: ci {i}"),
                files: vec![format!("core/ci{i}.rs")],
                author: alice(),
                author_date: None,
            };
            w.schedule_action(now, Action::Commit { repo: REPO.into(), branch: b.clone(), spec });
            w.schedule_action(
                now,
                Action::OpenPull {
                    repo: REPO.into(),
                    number_hint: None,
                    title: format!("CI {i}"),
                    head: b.clone(),
                    files: vec![format!("core/ci{i}.rs")],
                    author: "alice".into(),
                    draft: false,
                    coded_for: None,
                },
            );
        }
    });
    ts.step(1);
    let heads: Vec<String> = ts.sim.with_world(|w| {
        let r = w.repo(REPO).expect("repo");
        branches.iter().map(|b| r.head(b).cloned().expect("head")).collect()
    });
    let runs_of = |sha: String| {
        let ts = &ts;
        async move {
            let r = get_auth(ts, &format!("/repos/{REPO}/actions/runs?head_sha={sha}"), "ghp_ci").await;
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.expect("json")
        }
    };
    let early = runs_of(heads[0].clone()).await;
    assert_eq!(early["total_count"], 2, "one run per pull_request workflow: {early}");
    for run in early["workflow_runs"].as_array().expect("runs") {
        assert_eq!(run["head_sha"], heads[0].as_str());
        assert_eq!(run["event"], "pull_request");
        assert_eq!(run["run_attempt"], 1);
        assert!(run["conclusion"].is_null(), "not finished yet: {run}");
        assert!(["queued", "in_progress"].contains(&run["status"].as_str().unwrap_or("")));
    }

    ts.step(3 * 3600);
    let mut reruns = 0;
    for head in &heads {
        let body = runs_of(head.clone()).await;
        let runs = body["workflow_runs"].as_array().expect("runs");
        assert_eq!(runs.len(), 2);
        for run in runs {
            for k in ["id", "run_number", "workflow_id", "check_suite_id"] {
                assert!(run[k].is_u64(), "{k}: {run}");
            }
            for k in ["name", "node_id", "head_branch", "path", "display_title", "url", "html_url", "jobs_url"] {
                assert!(is_str(&run[k]), "{k}: {run}");
            }
            for k in ["created_at", "updated_at", "run_started_at"] {
                assert!(run[k].as_str().is_some_and(|t| t.ends_with('Z')), "{k}: {run}");
            }
            assert_eq!(run["status"], "completed");
            assert_eq!(run["conclusion"], "success", "the last attempt passes");
            assert_eq!(run["head_commit"]["id"], head.as_str());
            assert_eq!(run["repository"]["full_name"], REPO);
            assert!(run["pull_requests"][0]["number"].is_u64());
            assert_user(&run["actor"], "alice");
            let id = run["id"].as_u64().expect("id");
            let jobs: Value = get_auth(&ts, &format!("/repos/{REPO}/actions/runs/{id}/jobs?filter=all"), "ghp_ci")
                .await
                .json()
                .await
                .expect("json");
            let attempts: Vec<u64> =
                jobs["jobs"].as_array().expect("jobs").iter().filter_map(|j| j["run_attempt"].as_u64()).collect();
            if run["run_attempt"] == 2 {
                reruns += 1;
                assert!(
                    run["previous_attempt_url"].as_str().is_some_and(|u| u.ends_with(&format!("/{id}/attempts/1")))
                );
                assert_eq!(attempts, [2, 1], "newest attempt first");
                assert_eq!(jobs["jobs"][1]["conclusion"], "failure", "the attempt that was re-run failed");
                let t = |j: &Value, k: &str| j[k].as_str().map(str::to_string).expect(k);
                assert!(t(&jobs["jobs"][1], "completed_at") < t(&jobs["jobs"][0], "started_at"));
            } else {
                assert_eq!(run["run_attempt"], 1);
                assert!(run["previous_attempt_url"].is_null());
                assert_eq!(attempts, [1]);
            }
            let latest: Value = get_auth(&ts, &format!("/repos/{REPO}/actions/runs/{id}/jobs"), "ghp_ci")
                .await
                .json()
                .await
                .expect("json");
            assert_eq!(latest["total_count"], 1, "filter=latest is the default");
            assert_eq!(latest["jobs"][0]["run_attempt"], run["run_attempt"]);
            assert_eq!(latest["jobs"][0]["head_sha"], head.as_str());
        }
    }
    assert!(reruns > 0, "the workload re-runs some failed runs");
    let none = runs_of(main_history(&ts)[0].clone()).await;
    assert_eq!(none["total_count"], 0, "a direct push to main runs no pull_request workflow");
    let r = get_auth(&ts, &format!("/repos/{REPO}/actions/runs/1/jobs"), "ghp_ci").await;
    assert_eq!(r.status(), 404);
}

/// Every Actions run GitHub lists stays listed, with its jobs readable: a run is a record of
/// what ran, whatever later happens to the branch. Data-driven over a week of the lana workload,
/// whose bots force-push the same branch (`bot-promote-rc`) for each pull request they open: the
/// runs of the one merged before must not move to the next one's head.
#[tokio::test]
async fn every_listed_run_keeps_its_jobs() {
    const DAY: i64 = 86_400;
    let ts = spawn_sim("lana", 3).await;
    set_tokens(&ts, &["ghp_ci"]);
    ts.sim.with_world(|w| {
        for (at, a) in deploy_journey::sim::workload::LanaWorkload::new(3).generate(START, START + 7 * DAY) {
            w.schedule_action(at, a);
        }
    });
    let json = |r: reqwest::Response, what: String| async move {
        assert_eq!(r.status(), 200, "{what}");
        r.json::<Value>().await.expect("json")
    };
    // Run id -> (head sha, conclusion) as first listed, once completed; merged PR -> its runs.
    let mut seen: std::collections::BTreeMap<u64, (String, String)> = Default::default();
    let mut listed: std::collections::BTreeMap<u64, (String, Vec<u64>)> = Default::default();
    for _ in 0..7 {
        ts.step(DAY);
        let merged: Vec<u64> = ts.sim.with_world(|w| {
            let r = w.repo(REPO).expect("repo");
            r.pulls.iter().filter(|p| p.merged() && !listed.contains_key(&p.number)).map(|p| p.number).collect()
        });
        for n in merged {
            let pull =
                json(get_auth(&ts, &format!("/repos/{REPO}/pulls/{n}"), "ghp_ci").await, format!("pull {n}")).await;
            let head = pull["head"]["sha"].as_str().expect("head sha").to_string();
            let path = format!("/repos/{REPO}/actions/runs?head_sha={head}&per_page=100");
            let runs = json(get_auth(&ts, &path, "ghp_ci").await, path.clone()).await;
            let mut ids = vec![];
            for run in runs["workflow_runs"].as_array().expect("runs") {
                let id = run["id"].as_u64().expect("id");
                ids.push(id);
                assert_eq!(run["status"], "completed", "a merged PR's runs finished: {run}");
                seen.insert(id, (head.clone(), run["conclusion"].as_str().expect("conclusion").to_string()));
            }
            ids.sort();
            listed.insert(n, (head, ids));
        }
        for (id, (head, conclusion)) in &seen {
            let path = format!("/repos/{REPO}/actions/runs/{id}/jobs");
            let jobs = json(get_auth(&ts, &path, "ghp_ci").await, path.clone()).await;
            assert!(jobs["total_count"].as_u64().is_some_and(|n| n >= 1), "{path}: {jobs}");
            for job in jobs["jobs"].as_array().expect("jobs") {
                assert_eq!(job["run_id"].as_u64(), Some(*id), "{job}");
                assert_eq!(job["head_sha"].as_str(), Some(head.as_str()), "{job}");
                assert_eq!(job["conclusion"].as_str(), Some(conclusion.as_str()), "{job}");
            }
        }
    }
    // Still the same runs for the same heads at the end.
    for (n, (head, ids)) in &listed {
        let pull = json(get_auth(&ts, &format!("/repos/{REPO}/pulls/{n}"), "ghp_ci").await, format!("pull {n}")).await;
        assert_eq!(pull["head"]["sha"].as_str(), Some(head.as_str()), "#{n}'s head moved after it merged");
        let path = format!("/repos/{REPO}/actions/runs?head_sha={head}&per_page=100");
        let runs = json(get_auth(&ts, &path, "ghp_ci").await, path.clone()).await;
        let mut now: Vec<u64> =
            runs["workflow_runs"].as_array().expect("runs").iter().filter_map(|r| r["id"].as_u64()).collect();
        now.sort();
        assert_eq!(&now, ids, "#{n}'s runs changed after it merged");
    }
    // The case that matters: some branch carried more than one merged pull request.
    let reused = ts.sim.with_world(|w| {
        let r = w.repo(REPO).expect("repo");
        let mut by_branch: std::collections::HashMap<&str, usize> = Default::default();
        for p in r.pulls.iter().filter(|p| p.merged()) {
            *by_branch.entry(p.head_ref.as_str()).or_default() += 1;
        }
        by_branch.values().filter(|n| **n > 1).count()
    });
    assert!(reused > 0, "no branch was reused by a second merged pull request");
    assert!(seen.len() > 20, "{} runs", seen.len());
}
