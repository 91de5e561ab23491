//! GitHub's REST API (v3, version 2022-11-28) over the simulated world: the endpoints the exporter
//! uses, in GitHub's JSON shapes, with its headers, pagination (`Link`), conditional requests
//! (`ETag` / `If-None-Match`), authentication, per-caller rate limits; and a `push` webhook sender.
//!
//! Layout: pure functions turn model structs into JSON (`*_json`, `push_payload`) and do the git
//! arithmetic (`resolve`, `first_parent`, `merge_base`), so they are unit-testable; handlers only
//! resolve, filter and paginate; `run` wraps every handler with what GitHub does around any
//! endpoint (version check, auth, rate accounting, ETag/304, common headers).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, put};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::Sim;
use super::engine::{PushEvent, World, fnv, rfc3339};
use super::model::{Commit, FileChange, Person, PullRequest, Repo, Review, ReviewState, WorkflowRun};

const HTML: &str = "https://github.com";
const DOCS: &str = "https://docs.github.com/rest";
/// Versions GitHub accepts in `X-GitHub-Api-Version`; the shapes served are 2022-11-28's.
const API_VERSIONS: [&str; 2] = ["2022-11-28", "2026-03-10"];
const AUTH_LIMIT: u32 = 5000;
const ANON_LIMIT: u32 = 60;
/// Rate windows last an hour of wall-clock time from the first request in them.
const WINDOW_SECS: u64 = 3600;
/// "Get a commit" pages files 300 at a time and lists at most 3000.
const COMMIT_FILES_PAGE: usize = 300;
const COMMIT_FILES_MAX: usize = 3000;
/// "Compare two commits" lists 250 commits when not paginated, and at most 300 files.
const COMPARE_COMMITS: usize = 250;
const COMPARE_FILES_MAX: usize = 300;
/// GitHub's `web-flow` account, which commits (and signs) squash merges made on github.com.
const WEB_FLOW_ID: u64 = 19_864_447;

pub fn routes() -> Router<Arc<Sim>> {
    let mut r = Router::new().route("/rate_limit", get(rate_limit));
    // GitHub's `Link` headers point at `/repositories/{id}/...` and clients follow them verbatim,
    // so every repository route is served under both forms.
    for p in ["/repos/{owner}/{repo}", "/repositories/{repository_id}"] {
        r = r
            .route(p, get(get_repo))
            .route(&format!("{p}/branches/{{*branch}}"), get(get_branch))
            .route(&format!("{p}/commits"), get(list_commits))
            .route(&format!("{p}/commits/{{*ref}}"), get(get_commit))
            .route(&format!("{p}/compare/{{*basehead}}"), get(compare))
            .route(&format!("{p}/pulls"), get(list_pulls))
            .route(&format!("{p}/pulls/{{number}}"), get(get_pull))
            .route(&format!("{p}/pulls/{{number}}/reviews"), get(list_reviews))
            .route(&format!("{p}/pulls/{{number}}/commits"), get(list_pull_commits))
            .route(&format!("{p}/issues/{{number}}/events"), get(list_issue_events))
            .route(&format!("{p}/actions/runs"), get(list_runs))
            .route(&format!("{p}/actions/runs/{{run_id}}/jobs"), get(list_run_jobs))
            .route(&format!("{p}/pulls/{{number}}/merge"), put(merge_pull));
    }
    r
}

// ============================================================================ rate limits

/// Per-caller rate-limit windows of one simulator (a field of [`Sim`], so a new simulator
/// starts with fresh counters).
#[derive(Debug, Default)]
pub struct RateBook {
    /// Overrides both GitHub limits (5000/h with a token, 60/h anonymous); for tests.
    limit: Option<u32>,
    buckets: HashMap<String, Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    used: u32,
    /// Wall-clock epoch seconds at which the window resets.
    reset: u64,
}

/// What the `x-ratelimit-*` headers say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RateSnap {
    limit: u32,
    used: u32,
    reset: u64,
}

impl RateSnap {
    fn remaining(&self) -> u32 {
        self.limit.saturating_sub(self.used)
    }
}

fn with_book<R>(sim: &Arc<Sim>, f: impl FnOnce(&mut RateBook) -> R) -> R {
    // Counters are plain numbers; a poisoned lock still holds usable ones.
    f(&mut sim.github_rate.lock().unwrap_or_else(|e| e.into_inner()))
}

fn wall_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Override the hourly limit of every caller of `sim` (`None` restores GitHub's 5000 / 60).
pub fn set_rate_limit(sim: &Arc<Sim>, limit: Option<u32>) {
    with_book(sim, |b| b.limit = limit);
}

/// Forget every caller's usage (new windows start at the next request).
pub fn reset_rate_limits(sim: &Arc<Sim>) {
    with_book(sim, |b| b.buckets.clear());
}

impl RateBook {
    fn limit_for(&self, caller: &Caller) -> u32 {
        self.limit.unwrap_or(if caller.token { AUTH_LIMIT } else { ANON_LIMIT })
    }
    fn bucket(&mut self, key: &str, now: u64) -> &mut Bucket {
        let b = self.buckets.entry(key.to_string()).or_insert(Bucket { used: 0, reset: now + WINDOW_SECS });
        if now >= b.reset {
            *b = Bucket { used: 0, reset: now + WINDOW_SECS };
        }
        b
    }
}

/// Count one request; `Err` when the caller's window is exhausted (nothing is counted then).
fn rate_take(sim: &Arc<Sim>, caller: &Caller) -> Result<RateSnap, RateSnap> {
    let now = wall_now();
    with_book(sim, |book| {
        let limit = book.limit_for(caller);
        let b = book.bucket(&caller.key, now);
        if b.used >= limit {
            return Err(RateSnap { limit, used: b.used, reset: b.reset });
        }
        b.used += 1;
        Ok(RateSnap { limit, used: b.used, reset: b.reset })
    })
}

/// Un-count a request that turned out to be a 304 (GitHub does not charge those).
fn rate_refund(sim: &Arc<Sim>, caller: &Caller) -> RateSnap {
    let now = wall_now();
    with_book(sim, |book| {
        let limit = book.limit_for(caller);
        let b = book.bucket(&caller.key, now);
        b.used = b.used.saturating_sub(1);
        RateSnap { limit, used: b.used, reset: b.reset }
    })
}

fn rate_peek(sim: &Arc<Sim>, caller: &Caller) -> RateSnap {
    let now = wall_now();
    with_book(sim, |book| {
        let limit = book.limit_for(caller);
        let b = *book.bucket(&caller.key, now);
        RateSnap { limit, used: b.used, reset: b.reset }
    })
}

// ============================================================================ request plumbing

/// Who is calling: a token (hashed, never kept in clear) or an anonymous address.
#[derive(Debug, Clone)]
struct Caller {
    key: String,
    token: bool,
    /// The "user ID" GitHub names in rate-limit messages.
    user_id: u64,
    ip: String,
}

/// A handler's answer before `run` adds GitHub's envelope.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    body: Value,
    link: Option<String>,
}

type R = Result<Reply, Reply>;

impl Reply {
    fn ok(body: Value) -> Reply {
        Reply { status: StatusCode::OK, body, link: None }
    }
    fn with_link(mut self, link: Option<String>) -> Reply {
        self.link = link;
        self
    }
}

/// GitHub's error shape: `{"message", "documentation_url", "status"}` (status is a string).
fn err(status: StatusCode, message: impl Into<String>, doc: &str) -> Reply {
    let message: String = message.into();
    let doc_url = if doc.is_empty() { DOCS.to_string() } else { format!("{DOCS}/{doc}") };
    Reply {
        status,
        body: json!({"message": message, "documentation_url": doc_url, "status": status.as_u16().to_string()}),
        link: None,
    }
}

fn not_found(doc: &str) -> Reply {
    err(StatusCode::NOT_FOUND, "Not Found", doc)
}

fn validation_failed(resource: &str, field: &str, doc: &str) -> Reply {
    let mut r = err(StatusCode::UNPROCESSABLE_ENTITY, "Validation Failed", doc);
    r.body["errors"] = json!([{"resource": resource, "field": field, "code": "invalid"}]);
    r
}

/// Decoded query pairs, plus the raw `k=v` segments (still encoded) to rebuild `Link` URLs with.
#[derive(Debug, Default)]
struct Query {
    raw: Vec<String>,
    pairs: Vec<(String, String)>,
}

impl Query {
    fn get(&self, k: &str) -> Option<&str> {
        self.pairs.iter().rev().find(|(key, _)| key == k).map(|(_, v)| v.as_str())
    }
    fn has(&self, k: &str) -> bool {
        self.get(k).is_some_and(|v| !v.is_empty())
    }
}

fn parse_query(raw: Option<&str>) -> Option<Query> {
    let mut q = Query::default();
    for seg in raw.unwrap_or("").split('&').filter(|s| !s.is_empty()) {
        let (k, v) = seg.split_once('=').unwrap_or((seg, ""));
        q.pairs.push((percent_decode(k)?, percent_decode(v)?));
        q.raw.push(seg.to_string());
    }
    Some(q)
}

/// `application/x-www-form-urlencoded` decoding; `None` on bad escapes or non-UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Percent-encode a path (keeping `/`), as GitHub does in `blob_url` and friends.
fn encode_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `per_page` and `page`: absent, empty or 0 → the default; above `max` → `max` (as GitHub);
/// not a number → 422.
fn paging(q: &Query, default: usize, max: usize, resource: &str, doc: &str) -> Result<(usize, usize), Reply> {
    let num = |k: &str| match q.get(k) {
        None | Some("") => Ok(None),
        Some(v) => v.trim().parse::<usize>().map(Some).map_err(|_| validation_failed(resource, k, doc)),
    };
    let per_page = num("per_page")?.filter(|n| *n > 0).unwrap_or(default).min(max);
    let page = num("page")?.filter(|n| *n > 0).unwrap_or(1);
    Ok((per_page, page))
}

/// The slice of `len` items on `page`, and the number of the last page (at least 1).
fn page_range(len: usize, per_page: usize, page: usize) -> (std::ops::Range<usize>, usize) {
    let last = len.div_ceil(per_page).max(1);
    let start = page.saturating_sub(1).saturating_mul(per_page).min(len);
    (start..start.saturating_add(per_page).min(len), last)
}

/// GitHub's `Link` header: prev, next, last, first — each present only where it makes sense.
fn link_header(url: &str, raw_query: &[String], page: usize, last: usize) -> Option<String> {
    let with_page = |n: usize| {
        let mut parts: Vec<&str> =
            raw_query.iter().map(|s| s.as_str()).filter(|s| !s.starts_with("page=") && *s != "page").collect();
        let p = format!("page={n}");
        parts.push(&p);
        format!("<{url}?{}>", parts.join("&"))
    };
    let mut links = vec![];
    if page > 1 {
        links.push(format!("{}; rel=\"prev\"", with_page((page - 1).min(last))));
    }
    if page < last {
        links.push(format!("{}; rel=\"next\"", with_page(page + 1)));
        links.push(format!("{}; rel=\"last\"", with_page(last)));
    }
    if page > 1 {
        links.push(format!("{}; rel=\"first\"", with_page(1)));
    }
    (!links.is_empty()).then(|| links.join(", "))
}

/// Strong ETag: a quoted SHA-256 of the body, like GitHub's 64-hex-digit tags.
fn etag_of(body: &[u8]) -> String {
    format!("\"{}\"", hex::encode(Sha256::digest(body)))
}

/// `If-None-Match` matching with weak comparison (RFC 9110 §13.1.2), lists and `*`.
fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    let bare = |t: &str| t.trim().trim_start_matches("W/").to_string();
    if_none_match.split(',').any(|t| t.trim() == "*" || bare(t) == bare(etag))
}

fn request_id() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(1);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let h = fnv(&format!("{n}:{nanos}"));
    format!(
        "{:04X}:{:05X}:{:07X}:{:07X}:{:08X}",
        h & 0xFFFF,
        (h >> 16) & 0xF_FFFF,
        n & 0xFFF_FFFF,
        (h >> 36) & 0xFFF_FFFF,
        wall_now() as u32
    )
}

fn bad_credentials() -> Reply {
    err(StatusCode::UNAUTHORIZED, "Bad credentials", "")
}

fn anonymous(headers: &HeaderMap) -> Caller {
    // No ConnectInfo on this server: a proxy's X-Forwarded-For, else loopback.
    let ip = headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "127.0.0.1".into());
    Caller { key: format!("ip:{ip}"), token: false, user_id: 0, ip }
}

/// `Authorization: Bearer|token <t>` (or Basic with the token as password). When the simulator
/// has a token list, anything else is "Bad credentials", as GitHub answers for a revoked token.
fn authenticate(sim: &Sim, headers: &HeaderMap) -> Result<Caller, Reply> {
    let anon = anonymous(headers);
    let Some(h) = headers.get(header::AUTHORIZATION) else { return Ok(anon) };
    let h = h.to_str().map_err(|_| bad_credentials())?.trim();
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    let token = match scheme.to_ascii_lowercase().as_str() {
        "bearer" | "token" => rest.trim().to_string(),
        "basic" => {
            let raw = base64::engine::general_purpose::STANDARD.decode(rest.trim()).map_err(|_| bad_credentials())?;
            let s = String::from_utf8(raw).map_err(|_| bad_credentials())?;
            let (user, pass) = s.split_once(':').unwrap_or((&s, ""));
            if pass.is_empty() { user.to_string() } else { pass.to_string() }
        }
        _ => return Err(bad_credentials()),
    };
    if token.is_empty() {
        return Err(bad_credentials());
    }
    let known = sim.github_tokens.read().unwrap_or_else(|e| e.into_inner());
    if !known.is_empty() && !known.contains(&token) {
        return Err(bad_credentials());
    }
    let digest = hex::encode(Sha256::digest(token.as_bytes()));
    let user_id = u64::from_str_radix(&digest[..12], 16).unwrap_or(0) % 90_000_000 + 10_000_000;
    Ok(Caller { key: format!("token:{}", &digest[..24]), token: true, user_id, ip: anon.ip })
}

fn rate_limited(caller: &Caller) -> Reply {
    let message = if caller.token {
        format!("API rate limit exceeded for user ID {}.", caller.user_id)
    } else {
        format!(
            "API rate limit exceeded for {}. (But here's the good news: Authenticated requests get a higher rate limit. Check out the documentation for more details.)",
            caller.ip
        )
    };
    Reply {
        status: StatusCode::FORBIDDEN,
        body: json!({"message": message, "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api"}),
        link: None,
    }
}

/// How `run` treats an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Counted; `If-None-Match` can answer 304 (uncounted).
    Read,
    /// `GET /rate_limit`: never counted.
    Meta,
    /// Counted, never conditional.
    Write,
}

/// What a handler sees besides the world.
struct Cx {
    base: String,
    caller: Caller,
    query: Query,
    rate: RateSnap,
}

/// Everything GitHub does around an endpoint: API version, credentials, rate limit, then the
/// handler on the world at the current virtual time, then ETag / 304 and the common headers.
fn run(
    sim: &Arc<Sim>,
    headers: &HeaderMap,
    raw_query: Option<String>,
    kind: Kind,
    f: impl FnOnce(&Cx, &mut World) -> R,
) -> Response {
    let rid = request_id();
    let version = match headers.get("x-github-api-version").map(|v| v.to_str().unwrap_or("")) {
        None => API_VERSIONS[0].to_string(),
        Some(v) if API_VERSIONS.contains(&v) => v.to_string(),
        Some(v) => {
            let r = err(
                StatusCode::BAD_REQUEST,
                format!("API Version '{v}' is not supported."),
                "about-the-rest-api/api-versions",
            );
            let anon = anonymous(headers);
            return render(r, &rate_peek(sim, &anon), API_VERSIONS[0], &rid, false, None);
        }
    };
    let caller = match authenticate(sim, headers) {
        Ok(c) => c,
        Err(r) => return render(r, &rate_peek(sim, &anonymous(headers)), &version, &rid, false, None),
    };
    let rate = if kind == Kind::Meta {
        rate_peek(sim, &caller)
    } else {
        match rate_take(sim, &caller) {
            Ok(s) => s,
            Err(s) => return render(rate_limited(&caller), &s, &version, &rid, caller.token, None),
        }
    };
    let Some(query) = parse_query(raw_query.as_deref()) else {
        return render(err(StatusCode::BAD_REQUEST, "Bad Request", ""), &rate, &version, &rid, caller.token, None);
    };
    let cx = Cx { base: sim.base_url(), caller, query, rate };
    let reply = {
        let mut w = sim.world();
        f(&cx, &mut w).unwrap_or_else(|e| e)
    };
    let token = cx.caller.token;
    if reply.status == StatusCode::OK && kind != Kind::Write {
        let body = serde_json::to_vec(&reply.body).unwrap_or_default();
        let etag = etag_of(&body);
        let inm = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok());
        if inm.is_some_and(|inm| etag_matches(inm, &etag)) {
            let rate = if kind == Kind::Read { rate_refund(sim, &cx.caller) } else { cx.rate };
            let mut resp = render(
                Reply { status: StatusCode::NOT_MODIFIED, body: Value::Null, link: None },
                &rate,
                &version,
                &rid,
                token,
                Some(&etag),
            );
            *resp.body_mut() = Body::empty();
            resp.headers_mut().remove(header::CONTENT_TYPE);
            return resp;
        }
        return render_body(reply.status, reply.link, body, &cx.rate, &version, &rid, token, Some(&etag));
    }
    render(reply, &cx.rate, &version, &rid, token, None)
}

fn render(reply: Reply, rate: &RateSnap, version: &str, rid: &str, token: bool, etag: Option<&str>) -> Response {
    let body = if reply.status == StatusCode::NOT_MODIFIED {
        vec![]
    } else {
        serde_json::to_vec(&reply.body).unwrap_or_default()
    };
    render_body(reply.status, reply.link, body, rate, version, rid, token, etag)
}

/// [`render`] with the body already serialized (once, for its ETag too).
#[allow(clippy::too_many_arguments)]
fn render_body(
    status: StatusCode,
    link: Option<String>,
    body: Vec<u8>,
    rate: &RateSnap,
    version: &str,
    rid: &str,
    token: bool,
    etag: Option<&str>,
) -> Response {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    let mut set = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(HeaderName::from_static(name), v);
        }
    };
    set("content-type", "application/json; charset=utf-8".into());
    set("x-github-media-type", "github.v3; format=json".into());
    set("x-github-api-version-selected", version.into());
    set("x-github-request-id", rid.into());
    set("x-ratelimit-limit", rate.limit.to_string());
    set("x-ratelimit-remaining", rate.remaining().to_string());
    set("x-ratelimit-used", rate.used.to_string());
    set("x-ratelimit-reset", rate.reset.to_string());
    set("x-ratelimit-resource", "core".into());
    set("server", "github.com".into());
    if let Some(e) = etag {
        set("etag", e.into());
        set(
            "cache-control",
            if token { "private, max-age=60, s-maxage=60" } else { "public, max-age=60, s-maxage=60" }.into(),
        );
        set("vary", "Accept, Authorization, Cookie, X-GitHub-OTP,Accept-Encoding, Accept, X-Requested-With".into());
    }
    if let Some(l) = link {
        set("link", l);
    }
    resp
}

// ============================================================================ ids and users

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// GitHub's legacy global node id: base64 of `0<len>:<Type><id>`, e.g. `MDQ6VXNlcjE=` for user 1.
fn node_id(kind: &str, id: impl std::fmt::Display) -> String {
    b64(&format!("0{}:{kind}{id}", kind.len()))
}

pub fn repo_id(full_name: &str) -> i64 {
    (fnv(&full_name.to_ascii_lowercase()) % 900_000_000 + 100_000_000) as i64
}

fn user_id(login: &str) -> u64 {
    if login == "web-flow" {
        WEB_FLOW_ID
    } else {
        fnv(&format!("user:{}", login.to_ascii_lowercase())) % 90_000_000 + 10_000_000
    }
}

fn pull_id(repo: &Repo, number: u64) -> u64 {
    fnv(&format!("{}#{number}", repo.full_name())) % 2_000_000_000 + 1_000_000_000
}

fn sha1_hex(s: &str) -> String {
    hex::encode(sha1::Sha1::digest(s.as_bytes()))
}

fn tree_sha(commit: &str) -> String {
    sha1_hex(&format!("tree\0{commit}"))
}

fn blob_sha(commit: &str, path: &str) -> String {
    sha1_hex(&format!("blob\0{commit}\0{path}"))
}

/// A GitHub user object. `kind` is `User`, `Organization` or `Bot`.
pub fn user_json(base: &str, login: &str, kind: &str) -> Value {
    let id = user_id(login);
    let u = format!("{base}/users/{login}");
    let html = match login.strip_suffix("[bot]") {
        Some(app) => format!("{HTML}/apps/{app}"),
        None => format!("{HTML}/{login}"),
    };
    json!({
        "login": login,
        "id": id,
        "node_id": node_id(kind, id),
        "avatar_url": format!("https://avatars.githubusercontent.com/u/{id}?v=4"),
        "gravatar_id": "",
        "url": u,
        "html_url": html,
        "followers_url": format!("{u}/followers"),
        "following_url": format!("{u}/following{{/other_user}}"),
        "gists_url": format!("{u}/gists{{/gist_id}}"),
        "starred_url": format!("{u}/starred{{/owner}}{{/repo}}"),
        "subscriptions_url": format!("{u}/subscriptions"),
        "organizations_url": format!("{u}/orgs"),
        "repos_url": format!("{u}/repos"),
        "events_url": format!("{u}/events{{/privacy}}"),
        "received_events_url": format!("{u}/received_events"),
        "type": kind,
        "user_view_type": "public",
        "site_admin": false,
    })
}

fn login_kind(login: &str) -> &'static str {
    if login.ends_with("[bot]") { "Bot" } else { "User" }
}

/// The GitHub account a git identity maps to, or `null` (GitHub links commits by email).
fn person_user(base: &str, p: &Person) -> Value {
    match &p.login {
        Some(l) => user_json(base, l, login_kind(l)),
        None => Value::Null,
    }
}

fn org_json(base: &str, repo: &Repo) -> Value {
    user_json(base, &repo.owner, "Organization")
}

// ============================================================================ git arithmetic

/// First-parent history from `sha`, newest first.
fn first_parent<'a>(repo: &'a Repo, sha: &str) -> impl Iterator<Item = &'a Commit> + 'a {
    let mut next = repo.commits.get(sha);
    // Parents are always older, so a cycle would be a model bug; never loop forever on one.
    let mut left = repo.commits.len();
    std::iter::from_fn(move || {
        let c = next.take()?;
        left = left.checked_sub(1)?;
        next = c.parent.as_ref().and_then(|p| repo.commits.get(p));
        Some(c)
    })
}

/// A ref as GitHub resolves it: full sha, branch, tag (optionally `refs/heads/…`, `heads/…`,
/// `refs/tags/…`, `tags/…`), `HEAD`, or an unambiguous hex prefix of at least 4 digits; each
/// optionally followed by git's `~N` / `^` / `^1` / `^0` ancestry suffixes (`^2` has no commit:
/// the model's commits have one parent).
pub fn resolve<'a>(repo: &'a Repo, r: &str) -> Option<&'a Commit> {
    let Some(cut) = r.find(['~', '^']) else { return resolve_name(repo, r) };
    let mut c = resolve_name(repo, &r[..cut])?;
    let mut rest = &r[cut..];
    while !rest.is_empty() {
        let op = rest.as_bytes()[0];
        let digits = rest[1..].bytes().take_while(u8::is_ascii_digit).count();
        let n: Option<usize> = if digits == 0 { None } else { Some(rest[1..1 + digits].parse().ok()?) };
        rest = &rest[1 + digits..];
        let steps = match (op, n) {
            (b'~', n) => n.unwrap_or(1),
            (b'^', None | Some(1)) => 1,
            (b'^', Some(0)) => 0,
            _ => return None,
        };
        for _ in 0..steps {
            c = c.parent.as_ref().and_then(|p| repo.commits.get(p))?;
        }
    }
    Some(c)
}

fn resolve_name<'a>(repo: &'a Repo, r: &str) -> Option<&'a Commit> {
    if let Some(c) = repo.commits.get(r).or_else(|| repo.commits.get(&r.to_ascii_lowercase())) {
        return Some(c);
    }
    let r = r.strip_prefix("refs/").unwrap_or(r);
    let by_ref = if r == "HEAD" {
        repo.head(&repo.default_branch)
    } else {
        repo.head(r.strip_prefix("heads/").unwrap_or(r)).or_else(|| repo.tags.get(r.strip_prefix("tags/").unwrap_or(r)))
    };
    if let Some(s) = by_ref {
        return repo.commits.get(s);
    }
    let lower = r.to_ascii_lowercase();
    if (4..40).contains(&lower.len()) && lower.bytes().all(|b| b.is_ascii_hexdigit()) {
        let mut hits = repo.commits.values().filter(|c| c.sha.starts_with(&lower));
        let first = hits.next()?;
        if hits.next().is_none() {
            return Some(first);
        }
    }
    None
}

/// The newest common first-parent ancestor of `a` and `b`.
pub fn merge_base<'a>(repo: &'a Repo, a: &str, b: &str) -> Option<&'a Commit> {
    // Fast path: both on one branch's first-parent line, where positions are O(1).
    for branch in repo.branches.keys() {
        if let (Some(pa), Some(pb)) = (repo.position(branch, a), repo.position(branch, b)) {
            return repo.commits.get(if pa <= pb { a } else { b });
        }
    }
    let seen: HashSet<&str> = first_parent(repo, a).map(|c| c.sha.as_str()).collect();
    first_parent(repo, b).find(|c| seen.contains(c.sha.as_str()))
}

/// Commits reachable from `head` but not from `stop`, newest first.
fn commits_until<'a>(repo: &'a Repo, head: &str, stop: &str) -> Vec<&'a Commit> {
    first_parent(repo, head).take_while(|c| c.sha != stop).collect()
}

// ============================================================================ JSON renderings

/// The signature GitHub shows for commits it made (squash merges by `web-flow`); others are unsigned.
fn verification(c: &Commit, tree: &str) -> Value {
    if c.committer.login.as_deref() != Some("web-flow") {
        return json!({"verified": false, "reason": "unsigned", "signature": null, "payload": null, "verified_at": null});
    }
    let parent = c.parent.as_ref().map(|p| format!("parent {p}\n")).unwrap_or_default();
    let payload = format!(
        "tree {tree}\n{parent}author {} <{}> {} +0000\ncommitter {} <{}> {} +0000\n\n{}",
        c.author.name, c.author.email, c.author_date, c.committer.name, c.committer.email, c.committer_date, c.message
    );
    let sig = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(payload.as_bytes()));
    json!({
        "verified": true,
        "reason": "valid",
        "signature": format!("-----BEGIN PGP SIGNATURE-----\n\nwsBcBAABCAAQBQJ{sig}\n-----END PGP SIGNATURE-----\n"),
        "payload": payload,
        "verified_at": rfc3339(c.committer_date),
    })
}

/// A commit as "List commits" shows it (no `stats` / `files`).
pub fn commit_json(base: &str, repo: &Repo, c: &Commit) -> Value {
    let full = repo.full_name();
    let api = format!("{base}/repos/{full}");
    let tree = tree_sha(&c.sha);
    let parents: Vec<Value> = c
        .parent
        .iter()
        .map(
            |p| json!({"sha": p, "url": format!("{api}/commits/{p}"), "html_url": format!("{HTML}/{full}/commit/{p}")}),
        )
        .collect();
    json!({
        "sha": c.sha,
        "node_id": node_id("Commit", format!("{}:{}", repo_id(&full), c.sha)),
        "commit": {
            "author": {"name": c.author.name, "email": c.author.email, "date": rfc3339(c.author_date)},
            "committer": {"name": c.committer.name, "email": c.committer.email, "date": rfc3339(c.committer_date)},
            "message": c.message,
            "tree": {"sha": tree, "url": format!("{api}/git/trees/{tree}")},
            "url": format!("{api}/git/commits/{}", c.sha),
            "comment_count": 0,
            "verification": verification(c, &tree),
        },
        "url": format!("{api}/commits/{}", c.sha),
        "html_url": format!("{HTML}/{full}/commit/{}", c.sha),
        "comments_url": format!("{api}/commits/{}/comments", c.sha),
        "author": person_user(base, &c.author),
        "committer": person_user(base, &c.committer),
        "parents": parents,
    })
}

/// A unified diff with as many lines as the change counts (the content is made up).
fn synthetic_patch(f: &FileChange) -> Option<String> {
    if f.additions == 0 && f.deletions == 0 {
        return None;
    }
    let old = if f.status == "added" { "-0,0".to_string() } else { format!("-1,{}", f.deletions) };
    let new = if f.status == "removed" { "+0,0".to_string() } else { format!("+1,{}", f.additions) };
    let mut p = format!("@@ {old} {new} @@");
    for i in 1..=f.deletions {
        p.push_str(&format!("\n-line {i}"));
    }
    for i in 1..=f.additions {
        p.push_str(&format!("\n+line {i} changed"));
    }
    Some(p)
}

/// A diff entry as in "Get a commit" / "Compare" `files[]`; `at` is the commit that has this version.
pub fn file_json(base: &str, repo: &Repo, at: &str, f: &FileChange) -> Value {
    let full = repo.full_name();
    let path = encode_path(&f.filename);
    let mut v = json!({
        "sha": blob_sha(at, &f.filename),
        "filename": f.filename,
        "status": f.status,
        "additions": f.additions,
        "deletions": f.deletions,
        "changes": f.additions + f.deletions,
        "blob_url": format!("{HTML}/{full}/blob/{at}/{path}"),
        "raw_url": format!("{HTML}/{full}/raw/{at}/{path}"),
        "contents_url": format!("{base}/repos/{full}/contents/{path}?ref={at}"),
    });
    if let Some(p) = synthetic_patch(f) {
        v["patch"] = json!(p);
    }
    v
}

/// "Get a commit": the commit with `stats` over all its files and `files` of one page.
pub fn commit_with_files_json(base: &str, repo: &Repo, c: &Commit, files: &[FileChange]) -> Value {
    let mut v = commit_json(base, repo, c);
    let (a, d) = c.files.iter().fold((0u64, 0u64), |(a, d), f| (a + f.additions as u64, d + f.deletions as u64));
    v["stats"] = json!({"total": a + d, "additions": a, "deletions": d});
    v["files"] = Value::Array(files.iter().map(|f| file_json(base, repo, &c.sha, f)).collect());
    v
}

/// Label colours are stable per name.
fn label_json(base: &str, repo: &Repo, name: &str) -> Value {
    let id = fnv(&format!("label:{}:{name}", repo.full_name())) % 9_000_000_000 + 1_000_000_000;
    json!({
        "id": id,
        "node_id": node_id("Label", id),
        "url": format!("{base}/repos/{}/labels/{}", repo.full_name(), encode_path(name)),
        "name": name,
        "color": format!("{:06x}", fnv(name) & 0xFF_FFFF),
        "default": false,
        "description": null,
    })
}

/// A repository object (what "Get a repository" and `head.repo` / `base.repo` show).
pub fn repo_json(base: &str, repo: &Repo) -> Value {
    let full = repo.full_name();
    let id = repo_id(&full);
    let api = format!("{base}/repos/{full}");
    let root = repo.branches.get(&repo.default_branch).and_then(|b| b.first()).and_then(|s| repo.commits.get(s));
    let created = root.map(|c| c.committer_date).unwrap_or(0);
    let pushed = repo
        .branches
        .values()
        .filter_map(|b| b.last())
        .filter_map(|s| repo.commits.get(s))
        .map(|c| c.committer_date)
        .max()
        .unwrap_or(created);
    let open = repo.pulls.iter().filter(|p| p.is_open()).count();
    let mut v = json!({
        "id": id,
        "node_id": node_id("Repository", id),
        "name": repo.name,
        "full_name": full,
        "private": repo.private,
        "owner": org_json(base, repo),
        "html_url": format!("{HTML}/{full}"),
        "description": null,
        "fork": false,
        "url": api,
    });
    // The hypermedia URL templates (split out: one `json!` this large exceeds the macro recursion limit).
    for (k, t) in [
        ("archive_url", "/{archive_format}{/ref}"),
        ("branches_url", "/branches{/branch}"),
        ("commits_url", "/commits{/sha}"),
        ("compare_url", "/compare/{base}...{head}"),
        ("contents_url", "/contents/{+path}"),
        ("git_commits_url", "/git/commits{/sha}"),
        ("git_refs_url", "/git/refs{/sha}"),
        ("git_tags_url", "/git/tags{/sha}"),
        ("hooks_url", "/hooks"),
        ("issues_url", "/issues{/number}"),
        ("labels_url", "/labels{/name}"),
        ("merges_url", "/merges"),
        ("pulls_url", "/pulls{/number}"),
        ("releases_url", "/releases{/id}"),
        ("statuses_url", "/statuses/{sha}"),
        ("tags_url", "/tags"),
        ("trees_url", "/git/trees{/sha}"),
    ] {
        v[k] = json!(format!("{api}{t}"));
    }
    let rest = json!({
        "git_url": format!("git://github.com/{full}.git"),
        "ssh_url": format!("git@github.com:{full}.git"),
        "clone_url": format!("{HTML}/{full}.git"),
        "svn_url": format!("{HTML}/{full}"),
        "homepage": null,
        "size": repo.commits.len(),
        "stargazers_count": 0,
        "watchers_count": 0,
        "language": null,
        "has_issues": true,
        "has_projects": true,
        "has_downloads": true,
        "has_wiki": false,
        "has_pages": false,
        "has_discussions": false,
        "forks_count": 0,
        "mirror_url": null,
        "archived": false,
        "disabled": false,
        "open_issues_count": open,
        "license": null,
        "allow_forking": !repo.private,
        "is_template": false,
        "web_commit_signoff_required": false,
        "topics": [],
        "visibility": if repo.private { "private" } else { "public" },
        "forks": 0,
        "open_issues": open,
        "watchers": 0,
        "default_branch": repo.default_branch,
        "created_at": rfc3339(created),
        "updated_at": rfc3339(pushed),
        "pushed_at": rfc3339(pushed),
    });
    if let (Some(v), Value::Object(rest)) = (v.as_object_mut(), rest) {
        v.extend(rest);
    }
    v
}

fn pr_head_sha(repo: &Repo, pr: &PullRequest) -> String {
    match pr.closed_head.as_ref().or_else(|| repo.head(&pr.head_ref)) {
        Some(s) => s.clone(),
        // A PR opened without a commit on its head branch (`Action::OpenPull`): GitHub always has
        // one, so stand in a stable made-up sha.
        None => sha1_hex(&format!("pull-head\0{}#{}\0{}", repo.full_name(), pr.number, pr.head_ref)),
    }
}

fn pr_base_sha(repo: &Repo, pr: &PullRequest) -> String {
    // A merged PR's base is frozen where it was merged: the merge commit's parent.
    let merged_onto = pr.merge_commit_sha.as_ref().and_then(|m| repo.commits.get(m)).and_then(|c| c.parent.clone());
    merged_onto.or_else(|| repo.head(&pr.base_ref).cloned()).unwrap_or_default()
}

/// Who has reviewed, latest review per reviewer (comments do not count), as GitHub decides.
fn latest_reviews(pr: &PullRequest) -> HashMap<&str, &ReviewState> {
    let mut last = HashMap::new();
    for r in pr.reviews.iter().filter(|r| r.state != ReviewState::Commented) {
        last.insert(r.user.as_str(), &r.state);
    }
    last
}

/// A pull request: `full` adds what only "Get a pull request" shows (merged, mergeable, counts).
pub fn pull_json(base: &str, repo: &Repo, pr: &PullRequest, full: bool) -> Value {
    pull_json_in(base, repo, &repo_json(base, repo), pr, full)
}

/// [`pull_json`] with the repository's JSON (`repo_json`, the same for every pull request of
/// a list, and not cheap: it looks at every branch) made once by the caller.
fn pull_json_in(base: &str, repo: &Repo, repo_v: &Value, pr: &PullRequest, full: bool) -> Value {
    let name = repo.full_name();
    let api = format!("{base}/repos/{name}");
    let n = pr.number;
    let id = pull_id(repo, n);
    let head_sha = pr_head_sha(repo, pr);
    let base_sha = pr_base_sha(repo, pr);
    let html = format!("{HTML}/{name}/pull/{n}");
    let side = |r: &str, sha: &str| json!({"label": format!("{}:{r}", repo.owner), "ref": r, "sha": sha, "user": org_json(base, repo), "repo": repo_v.clone()});
    let auto_merge = match pr.automerge_after {
        Some(_) if pr.is_open() => json!({
            "enabled_by": user_json(base, &pr.user, login_kind(&pr.user)),
            "merge_method": "squash",
            "commit_title": format!("{} (#{n})", pr.title),
            "commit_message": "",
        }),
        _ => Value::Null,
    };
    let mut v = json!({
        "url": format!("{api}/pulls/{n}"),
        "id": id,
        "node_id": node_id("PullRequest", id),
        "html_url": html,
        "diff_url": format!("{html}.diff"),
        "patch_url": format!("{html}.patch"),
        "issue_url": format!("{api}/issues/{n}"),
        "number": n,
        "state": if pr.is_open() { "open" } else { "closed" },
        "locked": false,
        "title": pr.title,
        "user": user_json(base, &pr.user, login_kind(&pr.user)),
        "body": if pr.body.is_empty() { Value::Null } else { json!(pr.body) },
        "created_at": rfc3339(pr.created_at),
        "updated_at": rfc3339(pr.updated_at),
        "closed_at": pr.closed_at.map(rfc3339),
        "merged_at": pr.merged_at.map(rfc3339),
        "merge_commit_sha": pr.merge_commit_sha,
        "assignee": null,
        "assignees": [],
        "requested_reviewers": [],
        "requested_teams": [],
        "labels": pr.labels.iter().map(|l| label_json(base, repo, l)).collect::<Vec<_>>(),
        "milestone": null,
        "draft": pr.draft,
        "commits_url": format!("{api}/pulls/{n}/commits"),
        "review_comments_url": format!("{api}/pulls/{n}/comments"),
        "review_comment_url": format!("{api}/pulls/comments{{/number}}"),
        "comments_url": format!("{api}/issues/{n}/comments"),
        "statuses_url": format!("{api}/statuses/{head_sha}"),
        "head": side(&pr.head_ref, &head_sha),
        "base": side(&pr.base_ref, &base_sha),
        "author_association": "MEMBER",
        "auto_merge": auto_merge,
        "active_lock_reason": null,
    });
    // Separate from the `json!` above, which would otherwise exceed the macro recursion limit.
    v["_links"] = json!({
        "self": {"href": format!("{api}/pulls/{n}")},
        "html": {"href": html},
        "issue": {"href": format!("{api}/issues/{n}")},
        "comments": {"href": format!("{api}/issues/{n}/comments")},
        "review_comments": {"href": format!("{api}/pulls/{n}/comments")},
        "review_comment": {"href": format!("{api}/pulls/comments{{/number}}")},
        "commits": {"href": format!("{api}/pulls/{n}/commits")},
        "statuses": {"href": format!("{api}/statuses/{head_sha}")},
    });
    if full {
        let open = pr.is_open();
        // GitHub computes mergeability only for open PRs; closed ones say null / "unknown".
        let state = if !open {
            "unknown"
        } else if pr.draft {
            "draft"
        } else if pr.approved() {
            "clean"
        } else {
            "blocked"
        };
        let head = pr.closed_head.as_ref().or_else(|| repo.head(&pr.head_ref));
        let base_sha = pr_base_sha(repo, pr);
        let commits = match head.zip(Some(&base_sha).filter(|b| !b.is_empty())) {
            Some((h, b)) => merge_base(repo, b, h).map(|mb| commits_until(repo, h, &mb.sha).len()).unwrap_or(1),
            None => 1,
        };
        let mergeable = if open { json!(true) } else { Value::Null };
        v["merged"] = json!(pr.merged());
        v["mergeable"] = mergeable.clone();
        v["rebaseable"] = mergeable;
        v["mergeable_state"] = json!(state);
        v["merged_by"] = if pr.merged() { user_json(base, &pr.user, login_kind(&pr.user)) } else { Value::Null };
        v["comments"] = json!(0);
        v["review_comments"] = json!(0);
        v["maintainer_can_modify"] = json!(false);
        v["commits"] = json!(commits);
        v["additions"] = json!(pr.files.iter().map(|f| f.additions as u64).sum::<u64>());
        v["deletions"] = json!(pr.files.iter().map(|f| f.deletions as u64).sum::<u64>());
        v["changed_files"] = json!(pr.files.len());
    }
    v
}

pub fn review_json(base: &str, repo: &Repo, pr: &PullRequest, r: &Review) -> Value {
    let name = repo.full_name();
    let html = format!("{HTML}/{name}/pull/{}#pullrequestreview-{}", pr.number, r.id);
    let pr_url = format!("{base}/repos/{name}/pulls/{}", pr.number);
    let state = match r.state {
        ReviewState::Approved => "APPROVED",
        ReviewState::ChangesRequested => "CHANGES_REQUESTED",
        ReviewState::Commented => "COMMENTED",
    };
    json!({
        "id": r.id,
        "node_id": node_id("PullRequestReview", r.id),
        "user": user_json(base, &r.user, login_kind(&r.user)),
        "body": "",
        "state": state,
        "html_url": html,
        "pull_request_url": pr_url,
        "author_association": "MEMBER",
        "_links": {"html": {"href": html}, "pull_request": {"href": pr_url}},
        "submitted_at": rfc3339(r.submitted_at),
        "commit_id": pr_head_sha(repo, pr),
    })
}

/// The default branch is the protected one (reviews required), as on lana's repositories.
pub fn branch_json(base: &str, repo: &Repo, name: &str, head: &Commit) -> Value {
    let full = repo.full_name();
    let api = format!("{base}/repos/{full}");
    let protected = name == repo.default_branch;
    let path = encode_path(name);
    json!({
        "name": name,
        "commit": commit_json(base, repo, head),
        "_links": {"self": format!("{api}/branches/{path}"), "html": format!("{HTML}/{full}/tree/{path}")},
        "protected": protected,
        "protection": {
            "enabled": protected,
            "required_status_checks": {"enforcement_level": if protected { "non_admins" } else { "off" }, "contexts": [], "checks": []},
        },
        "protection_url": format!("{api}/branches/{path}/protection"),
    })
}

/// A `push` webhook payload for one pushed commit.
pub fn push_payload(base: &str, repo: &Repo, ev: &PushEvent, c: &Commit) -> Value {
    let full = repo.full_name();
    let zero = "0".repeat(40);
    let before = ev.before.clone().unwrap_or_else(|| zero.clone());
    let files =
        |status: &str| c.files.iter().filter(|f| f.status == status).map(|f| f.filename.clone()).collect::<Vec<_>>();
    let mut modified = files("modified");
    modified.extend(files("renamed"));
    let ident = |p: &Person| {
        let mut v = json!({"name": p.name, "email": p.email});
        if let Some(l) = &p.login {
            v["username"] = json!(l);
        }
        v
    };
    let commit = json!({
        "id": c.sha,
        "tree_id": tree_sha(&c.sha),
        "distinct": true,
        "message": c.message,
        "timestamp": rfc3339(c.author_date),
        "url": format!("{HTML}/{full}/commit/{}", c.sha),
        "author": ident(&c.author),
        "committer": ident(&c.committer),
        "added": files("added"),
        "removed": files("removed"),
        "modified": modified,
    });
    // The push payload's repository differs from the API's: epoch integer times, owner with name/email.
    let mut repository = repo_json(base, repo);
    let created = repository["created_at"].as_str().and_then(parse_time).unwrap_or(0);
    repository["created_at"] = json!(created);
    repository["pushed_at"] = json!(ev.time);
    repository["owner"]["name"] = json!(repo.owner);
    repository["owner"]["email"] = Value::Null;
    repository["stargazers"] = json!(0);
    repository["master_branch"] = json!(repo.default_branch);
    repository["organization"] = json!(repo.owner);
    let pusher = c.author.login.clone().unwrap_or_else(|| c.author.name.clone());
    let compare = if ev.before.is_some() {
        format!("{HTML}/{full}/compare/{}...{}", &before[..12.min(before.len())], &c.sha[..12.min(c.sha.len())])
    } else {
        format!("{HTML}/{full}/commit/{}", c.sha)
    };
    json!({
        "ref": format!("refs/heads/{}", ev.branch),
        "before": before,
        "after": ev.after,
        "repository": repository,
        "pusher": {"name": pusher, "email": c.author.email},
        "organization": {"login": repo.owner, "id": user_id(&repo.owner), "node_id": node_id("Organization", user_id(&repo.owner)), "url": format!("{base}/orgs/{}", repo.owner)},
        "sender": user_json(base, &pusher, login_kind(&pusher)),
        "created": ev.before.is_none(),
        "deleted": false,
        "forced": false,
        "base_ref": null,
        "compare": compare,
        "commits": [commit.clone()],
        "head_commit": commit,
    })
}

fn parse_time(s: &str) -> Option<i64> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok().map(|t| t.unix_timestamp())
}

/// `GET /rate_limit`: only `core` is tracked; the other resources show a fresh window.
fn rate_limit_json(core: &RateSnap, token: bool) -> Value {
    let c = json!({"limit": core.limit, "used": core.used, "remaining": core.limit.saturating_sub(core.used), "reset": core.reset});
    let fresh = |limit: u32| json!({"limit": limit, "used": 0, "remaining": limit, "reset": core.reset});
    json!({
        "resources": {
            "core": c,
            "search": fresh(if token { 30 } else { 10 }),
            "graphql": fresh(if token { 5000 } else { 0 }),
            "code_search": fresh(if token { 10 } else { 0 }),
            "integration_manifest": fresh(5000),
        },
        "rate": c,
    })
}

// ============================================================================ handlers

type P = Path<HashMap<String, String>>;

/// The repository a path names (`{owner}/{repo}`, case-insensitively like GitHub, or
/// `{repository_id}`); private repositories are invisible to anonymous callers.
fn find_repo<'a>(w: &'a World, p: &HashMap<String, String>, caller: &Caller) -> Option<&'a Repo> {
    let repo = match p.get("repository_id") {
        Some(id) => {
            let id: i64 = id.parse().ok()?;
            w.github.values().find(|r| repo_id(&r.full_name()) == id)
        }
        None => {
            let name = format!("{}/{}", p.get("owner")?, p.get("repo")?);
            w.github.get(&name).or_else(|| w.github.values().find(|r| r.full_name().eq_ignore_ascii_case(&name)))
        }
    }?;
    (!repo.private || caller.token).then_some(repo)
}

fn repo_link(cx: &Cx, repo: &Repo, rest: &str) -> String {
    format!("{}/repositories/{}{rest}", cx.base, repo_id(&repo.full_name()))
}

async fn rate_limit(State(sim): State<Arc<Sim>>, RawQuery(q): RawQuery, headers: HeaderMap) -> Response {
    run(&sim, &headers, q, Kind::Meta, |cx, _| Ok(Reply::ok(rate_limit_json(&cx.rate, cx.caller.token))))
}

async fn get_repo(State(sim): State<Arc<Sim>>, Path(p): P, RawQuery(q): RawQuery, headers: HeaderMap) -> Response {
    run(&sim, &headers, q, Kind::Read, |cx, w| {
        let repo = find_repo(w, &p, &cx.caller).ok_or_else(|| not_found("repos/repos#get-a-repository"))?;
        let mut v = repo_json(&cx.base, repo);
        v["organization"] = org_json(&cx.base, repo);
        v["network_count"] = json!(0);
        v["subscribers_count"] = json!(0);
        // lana's repositories squash-merge only.
        v["allow_squash_merge"] = json!(true);
        v["allow_merge_commit"] = json!(false);
        v["allow_rebase_merge"] = json!(false);
        v["allow_auto_merge"] = json!(true);
        v["delete_branch_on_merge"] = json!(false);
        v["allow_update_branch"] = json!(false);
        v["squash_merge_commit_title"] = json!("PR_TITLE");
        v["squash_merge_commit_message"] = json!("COMMIT_MESSAGES");
        if cx.caller.token {
            v["permissions"] = json!({"admin": false, "maintain": false, "push": true, "triage": true, "pull": true});
        }
        Ok(Reply::ok(v))
    })
}

async fn get_branch(State(sim): State<Arc<Sim>>, Path(p): P, RawQuery(q): RawQuery, headers: HeaderMap) -> Response {
    run(&sim, &headers, q, Kind::Read, |cx, w| {
        let doc = "branches/branches#get-a-branch";
        let repo = find_repo(w, &p, &cx.caller).ok_or_else(|| not_found(doc))?;
        let name = p.get("branch").map(String::as_str).unwrap_or("");
        let head = repo
            .head(name)
            .and_then(|s| repo.commits.get(s))
            .ok_or_else(|| err(StatusCode::NOT_FOUND, "Branch not found", doc))?;
        Ok(Reply::ok(branch_json(&cx.base, repo, name, head)))
    })
}

async fn list_commits(State(sim): State<Arc<Sim>>, Path(p): P, RawQuery(q): RawQuery, headers: HeaderMap) -> Response {
    run(&sim, &headers, q, Kind::Read, |cx, w| {
        let doc = "commits/commits#list-commits";
        let repo = find_repo(w, &p, &cx.caller).ok_or_else(|| not_found(doc))?;
        let (per_page, page) = paging(&cx.query, 30, 100, "Commit", doc)?;
        let start = match cx.query.get("sha").filter(|s| !s.is_empty()) {
            Some(s) => resolve(repo, s)
                .ok_or_else(|| err(StatusCode::NOT_FOUND, format!("No commit found for SHA: {s}"), doc))?,
            None => repo
                .head(&repo.default_branch)
                .and_then(|s| repo.commits.get(s))
                .ok_or_else(|| err(StatusCode::CONFLICT, "Git Repository is empty.", doc))?,
        };
        let time_param = |k: &str| match cx.query.get(k).filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(s) => parse_time(s).map(Some).ok_or_else(|| validation_failed("Commit", k, doc)),
        };
        let (since, until) = (time_param("since")?, time_param("until")?);
        let path = cx.query.get("path").map(|s| s.trim_matches('/')).filter(|s| !s.is_empty());
        let author = cx.query.get("author").filter(|s| !s.is_empty());
        let touches = |c: &Commit, path: &str| {
            c.files
                .iter()
                .any(|f| f.filename == path || f.filename.strip_prefix(path).is_some_and(|r| r.starts_with('/')))
        };
        let by = |c: &Commit, a: &str| {
            c.author.login.as_deref().is_some_and(|l| l.eq_ignore_ascii_case(a))
                || c.author.email.eq_ignore_ascii_case(a)
        };
        let all: Vec<&Commit> = first_parent(repo, &start.sha)
            .filter(|c| since.is_none_or(|t| c.committer_date >= t) && until.is_none_or(|t| c.committer_date <= t))
            .filter(|c| path.is_none_or(|p| touches(c, p)) && author.is_none_or(|a| by(c, a)))
            .collect();
        let (range, last) = page_range(all.len(), per_page, page);
        let body: Vec<Value> = all[range].iter().map(|c| commit_json(&cx.base, repo, c)).collect();
        let link = link_header(&repo_link(cx, repo, "/commits"), &cx.query.raw, page, last);
        Ok(Reply::ok(Value::Array(body)).with_link(link))
    })
}

async fn get_commit(State(sim): State<Arc<Sim>>, Path(p): P, RawQuery(q): RawQuery, headers: HeaderMap) -> Response {
    run(&sim, &headers, q, Kind::Read, |cx, w| {
        let doc = "commits/commits#get-a-commit";
        let repo = find_repo(w, &p, &cx.caller).ok_or_else(|| not_found(doc))?;
        let r = p.get("ref").map(String::as_str).unwrap_or("");
        // `commits/{sha}/pulls` is its own endpoint on GitHub, matched before a ref with slashes;
        // the router's wildcard takes both, so it is told apart here.
        if let Some(sha) = r.strip_suffix("/pulls") {
            return commit_pulls(cx, repo, sha);
        }
        let c = resolve(repo, r)
            .ok_or_else(|| err(StatusCode::UNPROCESSABLE_ENTITY, format!("No commit found for SHA: {r}"), doc))?;
        let (per_page, page) = paging(&cx.query, COMMIT_FILES_PAGE, COMMIT_FILES_PAGE, "Commit", doc)?;
        let files = &c.files[..c.files.len().min(COMMIT_FILES_MAX)];
        let (range, last) = page_range(files.len(), per_page, page);
        let link = link_header(&repo_link(cx, repo, &format!("/commits/{}", c.sha)), &cx.query.raw, page, last);
        Ok(Reply::ok(commit_with_files_json(&cx.base, repo, c, &files[range])).with_link(link))
    })
}

/// Files changed between the merge base and head: each path once, counts summed over `commits`
/// (oldest first), pointing at the newest commit that touched it.
fn diff_files<'a>(commits: &[&'a Commit]) -> Vec<(&'a str, FileChange)> {
    let mut order: Vec<String> = vec![];
    let mut by_name: HashMap<String, (&'a str, FileChange)> = HashMap::new();
    for c in commits {
        for f in &c.files {
            match by_name.get_mut(&f.filename) {
                Some((at, acc)) => {
                    *at = &c.sha;
                    acc.additions += f.additions;
                    acc.deletions += f.deletions;
                    if acc.status != "added" || f.status == "removed" {
                        acc.status = f.status.clone();
                    }
                }
                None => {
                    order.push(f.filename.clone());
                    by_name.insert(f.filename.clone(), (&c.sha, f.clone()));
                }
            }
        }
    }
    order.into_iter().filter_map(|n| by_name.remove(&n)).collect()
}

async fn compare(State(sim): State<Arc<Sim>>, Path(p): P, RawQuery(q): RawQuery, headers: HeaderMap) -> Response {
    run(&sim, &headers, q, Kind::Read, |cx, w| {
        let doc = "commits/commits#compare-two-commits";
        let repo = find_repo(w, &p, &cx.caller).ok_or_else(|| not_found(doc))?;
        let spec = p.get("basehead").map(String::as_str).unwrap_or("");
        let (b, h) = spec.split_once("...").or_else(|| spec.split_once("..")).ok_or_else(|| not_found(doc))?;
        // `owner:ref` names a fork; only the repository's own owner is modelled.
        let own = |r: &'_ str| -> Option<String> {
            match r.split_once(':') {
                Some((o, rest)) if o.eq_ignore_ascii_case(&repo.owner) => Some(rest.to_string()),
                Some(_) => None,
                None => Some(r.to_string()),
            }
        };
        let base_c = own(b).and_then(|r| resolve(repo, &r)).ok_or_else(|| not_found(doc))?;
        let head_c = own(h).and_then(|r| resolve(repo, &r)).ok_or_else(|| not_found(doc))?;
        let mb = merge_base(repo, &base_c.sha, &head_c.sha)
            .ok_or_else(|| err(StatusCode::NOT_FOUND, format!("No common ancestor between {b} and {h}."), doc))?;
        let mut ahead = commits_until(repo, &head_c.sha, &mb.sha);
        ahead.reverse();
        let behind = commits_until(repo, &base_c.sha, &mb.sha).len();
        let status = match (ahead.len(), behind) {
            (0, 0) => "identical",
            (_, 0) => "ahead",
            (0, _) => "behind",
            _ => "diverged",
        };
        let paginated = cx.query.has("page") || cx.query.has("per_page");
        let (per_page, page) =
            if paginated { paging(&cx.query, 30, 100, "Commit", doc)? } else { (COMPARE_COMMITS, 1) };
        let (range, last) = page_range(ahead.len(), per_page, page);
        let files: Vec<Value> = if page == 1 {
            diff_files(&ahead).iter().take(COMPARE_FILES_MAX).map(|(at, f)| file_json(&cx.base, repo, at, f)).collect()
        } else {
            vec![]
        };
        let full = repo.full_name();
        let short = |s: &str| s.chars().take(7).collect::<String>();
        let v = json!({
            "url": format!("{}/repos/{full}/compare/{spec}", cx.base),
            "html_url": format!("{HTML}/{full}/compare/{spec}"),
            "permalink_url": format!("{HTML}/{full}/compare/{}:{}...{}:{}", repo.owner, short(&base_c.sha), repo.owner, short(&head_c.sha)),
            "diff_url": format!("{HTML}/{full}/compare/{spec}.diff"),
            "patch_url": format!("{HTML}/{full}/compare/{spec}.patch"),
            "base_commit": commit_json(&cx.base, repo, base_c),
            "merge_base_commit": commit_json(&cx.base, repo, mb),
            "status": status,
            "ahead_by": ahead.len(),
            "behind_by": behind,
            "total_commits": ahead.len(),
            "commits": ahead[range].iter().map(|c| commit_json(&cx.base, repo, c)).collect::<Vec<_>>(),
            "files": files,
        });
        let link = if paginated {
            link_header(&repo_link(cx, repo, &format!("/compare/{}", encode_path(spec))), &cx.query.raw, page, last)
        } else {
            None
        };
        Ok(Reply::ok(v).with_link(link))
    })
}

fn find_pull<'a>(repo: &'a Repo, p: &HashMap<String, String>) -> Option<&'a PullRequest> {
    p.get("number").and_then(|n| n.parse::<u64>().ok()).and_then(|n| repo.pull(n))
}

/// The commits a pull request adds over its base, oldest first, as "List commits on a pull request".
fn pull_commits<'a>(repo: &'a Repo, pr: &PullRequest) -> Vec<&'a Commit> {
    let head = pr_head_sha(repo, pr);
    let base = pr_base_sha(repo, pr);
    // A merged PR's base is its head branch's fork point: found at once on that branch, not
    // by trying every branch (thousands, with a year of pull requests).
    let stop = match repo.position(&pr.head_ref, &base) {
        Some(_) => base.clone(),
        None => merge_base(repo, &base, &head).map(|c| c.sha.clone()).unwrap_or_default(),
    };
    let mut v = commits_until(repo, &head, &stop);
    v.reverse();
    v.truncate(PULL_COMMITS_MAX);
    v
}

/// GitHub lists at most this many commits of a pull request.
const PULL_COMMITS_MAX: usize = 250;

/// "List pull requests associated with a commit": on the default branch, the merged PR that
/// introduced it (its merge commit); elsewhere only open PRs whose commits include it.
fn commit_pulls(cx: &Cx, repo: &Repo, sha: &str) -> R {
    let doc = "commits/commits#list-pull-requests-associated-with-a-commit";
    let c = resolve(repo, sha)
        .ok_or_else(|| err(StatusCode::UNPROCESSABLE_ENTITY, format!("No commit found for SHA: {sha}"), doc))?;
    let (per_page, page) = paging(&cx.query, 30, 100, "PullRequest", doc)?;
    let on_default = repo.position(&repo.default_branch, &c.sha).is_some();
    let pulls: Vec<&PullRequest> = repo
        .pulls
        .iter()
        .filter(|pr| {
            if on_default {
                pr.merge_commit_sha.as_deref() == Some(c.sha.as_str())
            } else {
                pr.is_open() && pull_commits(repo, pr).iter().any(|pc| pc.sha == c.sha)
            }
        })
        .collect();
    let (range, last) = page_range(pulls.len(), per_page, page);
    let repo_v = repo_json(&cx.base, repo);
    let body: Vec<Value> = pulls[range].iter().map(|pr| pull_json_in(&cx.base, repo, &repo_v, pr, false)).collect();
    let link = link_header(&repo_link(cx, repo, &format!("/commits/{}/pulls", c.sha)), &cx.query.raw, page, last);
    Ok(Reply::ok(Value::Array(body)).with_link(link))
}

async fn list_pull_commits(
    State(sim): State<Arc<Sim>>,
    Path(p): P,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    run(&sim, &headers, q, Kind::Read, |cx, w| {
        let doc = "pulls/pulls#list-commits-on-a-pull-request";
        let repo = find_repo(w, &p, &cx.caller).ok_or_else(|| not_found(doc))?;
        let pr = find_pull(repo, &p).ok_or_else(|| not_found(doc))?;
        let (per_page, page) = paging(&cx.query, 30, 100, "Commit", doc)?;
        let all = pull_commits(repo, pr);
        let (range, last) = page_range(all.len(), per_page, page);
        let body: Vec<Value> = all[range].iter().map(|c| commit_json(&cx.base, repo, c)).collect();
        let link =
            link_header(&repo_link(cx, repo, &format!("/pulls/{}/commits", pr.number)), &cx.query.raw, page, last);
        Ok(Reply::ok(Value::Array(body)).with_link(link))
    })
}

/// A pull request's issue events ("List issue events", `issue-event`), oldest first: its labels
/// (`labeled`, when it was opened), `ready_for_review` for a draft marked ready, and `merged`
/// then `closed`, or `closed`.
pub fn issue_events(base: &str, repo: &Repo, pr: &PullRequest) -> Vec<Value> {
    let name = repo.full_name();
    let api = format!("{base}/repos/{name}");
    let mut rows: Vec<(i64, &str, Option<&str>, Option<&str>)> =
        pr.labels.iter().map(|l| (pr.created_at, "labeled", Some(l.as_str()), None)).collect();
    if let Some(t) = pr.ready_at {
        rows.push((t, "ready_for_review", None, None));
    }
    if let Some(m) = pr.merged_at {
        rows.push((m, "merged", None, pr.merge_commit_sha.as_deref()));
    }
    if let Some(c) = pr.closed_at.or(pr.merged_at) {
        rows.push((c, "closed", None, pr.merge_commit_sha.as_deref()));
    }
    rows.iter()
        .enumerate()
        .map(|(i, (at, event, label, commit))| {
            let id = fnv(&format!("event\0{name}\0{}\0{i}\0{event}", pr.number)) % 9_000_000_000 + 1_000_000_000;
            let mut v = json!({
                "id": id,
                "node_id": node_id(if *event == "labeled" { "LabeledEvent" } else { "IssueEvent" }, id),
                "url": format!("{api}/issues/events/{id}"),
                "actor": user_json(base, &pr.user, login_kind(&pr.user)),
                "event": event,
                "commit_id": commit,
                "commit_url": commit.map(|c| format!("{api}/commits/{c}")),
                "created_at": rfc3339(*at),
                "performed_via_github_app": null,
            });
            if let Some(l) = label {
                let full = label_json(base, repo, l);
                v["label"] = json!({"name": full["name"], "color": full["color"]});
            }
            v
        })
        .collect()
}

/// "List issue events" of a pull request's issue.
async fn list_issue_events(
    State(sim): State<Arc<Sim>>,
    Path(p): P,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    run(&sim, &headers, q, Kind::Read, |cx, w| {
        let doc = "issues/events#list-issue-events";
        let repo = find_repo(w, &p, &cx.caller).ok_or_else(|| not_found(doc))?;
        let pr = find_pull(repo, &p).ok_or_else(|| not_found(doc))?;
        let (per_page, page) = paging(&cx.query, 30, 100, "IssueEvent", doc)?;
        let all = issue_events(&cx.base, repo, pr);
        let (range, last) = page_range(all.len(), per_page, page);
        let link =
            link_header(&repo_link(cx, repo, &format!("/issues/{}/events", pr.number)), &cx.query.raw, page, last);
        Ok(Reply::ok(Value::Array(all[range].to_vec())).with_link(link))
    })
}

// ============================================================================ GitHub Actions

/// lana-bank's `pull_request` workflows the model runs: (name, path, typical minutes).
const PR_WORKFLOWS: [(&str, &str, i64); 2] =
    [("Nextest Tests", ".github/workflows/nextest.yml", 14), ("Check Code", ".github/workflows/check-code.yml", 6)];

/// The Actions runs of every pull request, as GitHub would have recorded them by `now`.
/// A workflow runs when a PR is opened (on its head then) and on each later push to its branch;
/// commits pushed together trigger one run, on the newest. About one run in six fails and is
/// re-run by hand a few minutes later (attempt 2, which passes). Deterministic in the shas.
pub fn workflow_runs(repo: &Repo, now: i64) -> Vec<WorkflowRun> {
    let mut out = vec![];
    for pr in &repo.pulls {
        let commits = pull_commits(repo, pr);
        let end = pr.closed_at.unwrap_or(i64::MAX);
        for (i, c) in commits.iter().enumerate() {
            let trigger = c.committer_date.max(pr.created_at);
            let superseded = commits.get(i + 1).is_some_and(|n| n.committer_date.max(pr.created_at) <= trigger);
            if superseded || trigger > end {
                continue;
            }
            for (w, path, minutes) in PR_WORKFLOWS {
                let h = fnv(&format!("run\0{}\0{}\0{w}", repo.full_name(), c.sha));
                let id = h % 9_000_000_000 + 10_000_000_000;
                let queued = 5 + (h >> 8) as i64 % 40;
                let took = minutes * 60 + (h >> 16) as i64 % (minutes * 30);
                let fails = (h >> 32).is_multiple_of(6);
                let first = WorkflowRun {
                    id,
                    workflow: w,
                    path,
                    pr: pr.number,
                    head_sha: c.sha.clone(),
                    head_branch: pr.head_ref.clone(),
                    attempt: 1,
                    created_at: trigger,
                    started_at: trigger + queued,
                    completed_at: trigger + queued + took,
                    success: !fails,
                };
                let rerun = fails.then(|| {
                    let at = first.completed_at + 120 + (h >> 40) as i64 % 600;
                    WorkflowRun {
                        attempt: 2,
                        created_at: at,
                        started_at: at + queued,
                        completed_at: at + queued + took,
                        success: true,
                        ..first.clone()
                    }
                });
                out.extend(std::iter::once(first).chain(rerun).filter(|r| r.created_at <= now));
            }
        }
    }
    out
}

/// Run numbers count a workflow's runs in creation order.
fn run_number(all: &[WorkflowRun], run: &WorkflowRun) -> usize {
    all.iter()
        .filter(|r| r.attempt == 1 && r.workflow == run.workflow && (r.created_at, r.id) <= (run.created_at, run.id))
        .count()
}

fn workflow_id(path: &str) -> u64 {
    fnv(&format!("workflow\0{path}")) % 90_000_000 + 10_000_000
}

fn run_json(base: &str, repo: &Repo, repo_v: &Value, all: &[WorkflowRun], r: &WorkflowRun, now: i64) -> Value {
    let name = repo.full_name();
    let api = format!("{base}/repos/{name}");
    let url = format!("{api}/actions/runs/{}", r.id);
    let status = r.status(now);
    let conclusion = match status {
        "completed" if r.success => json!("success"),
        "completed" => json!("failure"),
        _ => Value::Null,
    };
    let updated = if status == "completed" {
        r.completed_at
    } else if status == "in_progress" {
        r.started_at
    } else {
        r.created_at
    };
    let commit = repo.commits.get(&r.head_sha);
    let head_commit = commit.map_or(Value::Null, |c| {
        json!({
            "id": c.sha, "tree_id": tree_sha(&c.sha), "message": c.message, "timestamp": rfc3339(c.committer_date),
            "author": {"name": c.author.name, "email": c.author.email},
            "committer": {"name": c.committer.name, "email": c.committer.email},
        })
    });
    let pr = repo.pull(r.pr);
    let actor = pr.map_or(Value::Null, |p| user_json(base, &p.user, login_kind(&p.user)));
    let minimal_repo = json!({"id": repo_id(&name), "url": api, "name": repo.name});
    let pulls = pr.filter(|p| p.is_open() || p.merged()).map(|p| {
        json!([{
            "id": pull_id(repo, p.number), "number": p.number, "url": format!("{api}/pulls/{}", p.number),
            "head": {"ref": p.head_ref, "sha": r.head_sha, "repo": minimal_repo},
            "base": {"ref": p.base_ref, "sha": pr_base_sha(repo, p), "repo": minimal_repo},
        }])
    });
    let suite = fnv(&format!("suite\0{}\0{}", r.id, r.attempt)) % 9_000_000_000 + 10_000_000_000;
    let wid = workflow_id(r.path);
    let mut v = json!({
        "id": r.id,
        "name": r.workflow,
        "node_id": node_id("WorkflowRun", r.id),
        "check_suite_id": suite,
        "check_suite_node_id": node_id("CheckSuite", suite),
        "head_branch": r.head_branch,
        "head_sha": r.head_sha,
        "path": r.path,
        "display_title": pr.map_or(r.workflow.to_string(), |p| p.title.clone()),
        "run_number": run_number(all, r),
        "event": "pull_request",
        "status": status,
        "conclusion": conclusion,
        "workflow_id": wid,
        "url": url,
        "html_url": format!("{HTML}/{name}/actions/runs/{}", r.id),
        "pull_requests": pulls.unwrap_or_else(|| json!([])),
        // A re-run is an attempt of the same run: `created_at` stays the run's (its first
        // attempt's), `run_started_at` and `run_attempt` move on.
        "created_at": rfc3339(all.iter().filter(|o| o.id == r.id).map(|o| o.created_at).min().unwrap_or(r.created_at)),
        "updated_at": rfc3339(updated),
        "actor": actor,
        "run_attempt": r.attempt,
        "referenced_workflows": [],
        "run_started_at": rfc3339(r.started_at),
        "triggering_actor": actor,
    });
    v["jobs_url"] = json!(format!("{url}/jobs"));
    v["logs_url"] = json!(format!("{url}/logs"));
    v["check_suite_url"] = json!(format!("{api}/check-suites/{suite}"));
    v["artifacts_url"] = json!(format!("{url}/artifacts"));
    v["cancel_url"] = json!(format!("{url}/cancel"));
    v["rerun_url"] = json!(format!("{url}/rerun"));
    v["previous_attempt_url"] =
        if r.attempt > 1 { json!(format!("{url}/attempts/{}", r.attempt - 1)) } else { Value::Null };
    v["workflow_url"] = json!(format!("{api}/actions/workflows/{wid}"));
    v["head_commit"] = head_commit;
    v["repository"] = repo_v.clone();
    v["head_repository"] = repo_v.clone();
    v
}

/// The id GitHub gives the (one) job of attempt `r` of a workflow run.
pub fn job_id(r: &WorkflowRun) -> u64 {
    fnv(&format!("job\0{}\0{}", r.id, r.attempt)) % 90_000_000_000 + 10_000_000_000
}

/// The name of the one job each modelled workflow runs.
pub fn job_name(workflow: &str) -> &'static str {
    if workflow == "Nextest Tests" { "Cargo Nextest Tests" } else { "check-code" }
}

/// One job per workflow (`job` in GitHub's OpenAPI description), for the given attempt.
fn job_json(base: &str, repo: &Repo, r: &WorkflowRun, now: i64) -> Value {
    let name = repo.full_name();
    let api = format!("{base}/repos/{name}");
    let id = job_id(r);
    let status = r.status(now);
    let done = status == "completed";
    let conclusion = match (done, r.success) {
        (true, true) => json!("success"),
        (true, false) => json!("failure"),
        _ => Value::Null,
    };
    let job_name = job_name(r.workflow);
    json!({
        "id": id,
        "run_id": r.id,
        "run_url": format!("{api}/actions/runs/{}", r.id),
        "run_attempt": r.attempt,
        "node_id": node_id("CheckRun", id),
        "head_sha": r.head_sha,
        "url": format!("{api}/actions/jobs/{id}"),
        "html_url": format!("{HTML}/{name}/actions/runs/{}/job/{id}", r.id),
        "status": status,
        "conclusion": conclusion,
        "created_at": rfc3339(r.created_at),
        "started_at": rfc3339(r.started_at),
        "completed_at": if done { json!(rfc3339(r.completed_at)) } else { Value::Null },
        "name": job_name,
        "steps": [],
        "check_run_url": format!("{api}/check-runs/{id}"),
        "labels": ["ubuntu-latest"],
        "runner_id": if status == "queued" { Value::Null } else { json!(fnv(&format!("runner\0{id}")) % 1000 + 1) },
        "runner_name": if status == "queued" { Value::Null } else { json!("GitHub Actions") },
        "runner_group_id": if status == "queued" { Value::Null } else { json!(0) },
        "runner_group_name": if status == "queued" { Value::Null } else { json!("GitHub Actions") },
        "workflow_name": r.workflow,
        "head_branch": r.head_branch,
    })
}

/// "List workflow runs for a repository": newest first, each run at its latest attempt, filtered
/// by `head_sha`, `branch`, `event` and `status` (a status or a conclusion).
async fn list_runs(State(sim): State<Arc<Sim>>, Path(p): P, RawQuery(q): RawQuery, headers: HeaderMap) -> Response {
    run(&sim, &headers, q, Kind::Read, |cx, w| {
        let doc = "actions/workflow-runs#list-workflow-runs-for-a-repository";
        let now = w.now;
        let repo = find_repo(w, &p, &cx.caller).ok_or_else(|| not_found(doc))?;
        let (per_page, page) = paging(&cx.query, 30, 100, "WorkflowRun", doc)?;
        let all = workflow_runs(repo, now);
        // Each run's latest attempt, by id (a year of runs made a pairwise scan quadratic).
        let mut newest: std::collections::HashMap<_, _> = std::collections::HashMap::new();
        for o in &all {
            let e = newest.entry(o.id).or_insert(o.attempt);
            *e = (*e).max(o.attempt);
        }
        let latest = |r: &&WorkflowRun| newest.get(&r.id).is_none_or(|a| *a <= r.attempt);
        let q = |k: &str| cx.query.get(k).filter(|s| !s.is_empty());
        let status_ok = |r: &WorkflowRun| {
            q("status").is_none_or(|s| {
                let st = r.status(now);
                s == st || (st == "completed" && s == if r.success { "success" } else { "failure" })
            })
        };
        let mut runs: Vec<&WorkflowRun> = all
            .iter()
            .filter(latest)
            .filter(|r| q("head_sha").is_none_or(|s| s.eq_ignore_ascii_case(&r.head_sha)))
            .filter(|r| q("branch").is_none_or(|b| b == r.head_branch))
            .filter(|_| q("event").is_none_or(|e| e == "pull_request"))
            .filter(|r| status_ok(r))
            .collect();
        runs.sort_by_key(|r| std::cmp::Reverse((r.created_at, r.id)));
        let (range, last) = page_range(runs.len(), per_page, page);
        let repo_v = repo_json(&cx.base, repo);
        let body: Vec<Value> = runs[range].iter().map(|r| run_json(&cx.base, repo, &repo_v, &all, r, now)).collect();
        let link = link_header(&repo_link(cx, repo, "/actions/runs"), &cx.query.raw, page, last);
        Ok(Reply::ok(json!({"total_count": runs.len(), "workflow_runs": body})).with_link(link))
    })
}

/// "List jobs for a workflow run": the latest attempt's jobs, or every attempt's with `filter=all`.
async fn list_run_jobs(State(sim): State<Arc<Sim>>, Path(p): P, RawQuery(q): RawQuery, headers: HeaderMap) -> Response {
    run(&sim, &headers, q, Kind::Read, |cx, w| {
        let doc = "actions/workflow-jobs#list-jobs-for-a-workflow-run";
        let now = w.now;
        let repo = find_repo(w, &p, &cx.caller).ok_or_else(|| not_found(doc))?;
        let id: u64 = p.get("run_id").and_then(|s| s.parse().ok()).ok_or_else(|| not_found(doc))?;
        let (per_page, page) = paging(&cx.query, 30, 100, "Job", doc)?;
        let mut attempts: Vec<WorkflowRun> = workflow_runs(repo, now).into_iter().filter(|r| r.id == id).collect();
        let max = attempts.iter().map(|r| r.attempt).max().ok_or_else(|| not_found(doc))?;
        match cx.query.get("filter").filter(|s| !s.is_empty()).unwrap_or("latest") {
            "latest" => attempts.retain(|r| r.attempt == max),
            "all" => {}
            _ => return Err(validation_failed("Job", "filter", doc)),
        }
        attempts.sort_by_key(|r| std::cmp::Reverse(r.attempt));
        let (range, last) = page_range(attempts.len(), per_page, page);
        let body: Vec<Value> = attempts[range].iter().map(|r| job_json(&cx.base, repo, r, now)).collect();
        let link = link_header(&repo_link(cx, repo, &format!("/actions/runs/{id}/jobs")), &cx.query.raw, page, last);
        Ok(Reply::ok(json!({"total_count": attempts.len(), "jobs": body})).with_link(link))
    })
}

async fn list_pulls(State(sim): State<Arc<Sim>>, Path(p): P, RawQuery(q): RawQuery, headers: HeaderMap) -> Response {
    run(&sim, &headers, q, Kind::Read, |cx, w| {
        let doc = "pulls/pulls#list-pull-requests";
        let repo = find_repo(w, &p, &cx.caller).ok_or_else(|| not_found(doc))?;
        let (per_page, page) = paging(&cx.query, 30, 100, "PullRequest", doc)?;
        let state = cx.query.get("state").filter(|s| !s.is_empty()).unwrap_or("open");
        if !["open", "closed", "all"].contains(&state) {
            return Err(validation_failed("PullRequest", "state", doc));
        }
        let sort = cx.query.get("sort").filter(|s| !s.is_empty()).unwrap_or("created");
        if !["created", "updated", "popularity", "long-running"].contains(&sort) {
            return Err(validation_failed("PullRequest", "sort", doc));
        }
        let direction = match cx.query.get("direction").filter(|s| !s.is_empty()) {
            None => "desc",
            Some(d @ ("asc" | "desc")) => d,
            Some(_) => return Err(validation_failed("PullRequest", "direction", doc)),
        };
        // `head` is `owner:branch`; a bare branch is matched on the branch alone.
        let head = cx.query.get("head").filter(|s| !s.is_empty()).map(|h| match h.split_once(':') {
            Some((o, b)) => (Some(o), b),
            None => (None, h),
        });
        let base = cx.query.get("base").filter(|s| !s.is_empty());
        let mut pulls: Vec<&PullRequest> = repo
            .pulls
            .iter()
            .filter(|pr| match state {
                "open" => pr.is_open(),
                "closed" => !pr.is_open(),
                _ => true,
            })
            .filter(|pr| {
                head.is_none_or(|(o, b)| pr.head_ref == b && o.is_none_or(|o| o.eq_ignore_ascii_case(&repo.owner)))
            })
            .filter(|pr| base.is_none_or(|b| pr.base_ref == b))
            .collect();
        match sort {
            "updated" => pulls.sort_by_key(|pr| (pr.updated_at, pr.number)),
            "long-running" => {
                pulls.sort_by_key(|pr| (pr.closed_at.unwrap_or(i64::MAX).saturating_sub(pr.created_at), pr.number))
            }
            _ => pulls.sort_by_key(|pr| (pr.created_at, pr.number)),
        }
        if direction == "desc" {
            pulls.reverse();
        }
        let (range, last) = page_range(pulls.len(), per_page, page);
        let repo_v = repo_json(&cx.base, repo);
        let body: Vec<Value> = pulls[range].iter().map(|pr| pull_json_in(&cx.base, repo, &repo_v, pr, false)).collect();
        let link = link_header(&repo_link(cx, repo, "/pulls"), &cx.query.raw, page, last);
        Ok(Reply::ok(Value::Array(body)).with_link(link))
    })
}

async fn get_pull(State(sim): State<Arc<Sim>>, Path(p): P, RawQuery(q): RawQuery, headers: HeaderMap) -> Response {
    run(&sim, &headers, q, Kind::Read, |cx, w| {
        let doc = "pulls/pulls#get-a-pull-request";
        let repo = find_repo(w, &p, &cx.caller).ok_or_else(|| not_found(doc))?;
        let pr = find_pull(repo, &p).ok_or_else(|| not_found(doc))?;
        Ok(Reply::ok(pull_json(&cx.base, repo, pr, true)))
    })
}

async fn list_reviews(State(sim): State<Arc<Sim>>, Path(p): P, RawQuery(q): RawQuery, headers: HeaderMap) -> Response {
    run(&sim, &headers, q, Kind::Read, |cx, w| {
        let doc = "pulls/reviews#list-reviews-for-a-pull-request";
        let repo = find_repo(w, &p, &cx.caller).ok_or_else(|| not_found(doc))?;
        let pr = find_pull(repo, &p).ok_or_else(|| not_found(doc))?;
        let (per_page, page) = paging(&cx.query, 30, 100, "PullRequestReview", doc)?;
        let (range, last) = page_range(pr.reviews.len(), per_page, page);
        let body: Vec<Value> = pr.reviews[range].iter().map(|r| review_json(&cx.base, repo, pr, r)).collect();
        let link =
            link_header(&repo_link(cx, repo, &format!("/pulls/{}/reviews", pr.number)), &cx.query.raw, page, last);
        Ok(Reply::ok(Value::Array(body)).with_link(link))
    })
}

async fn merge_pull(
    State(sim): State<Arc<Sim>>,
    Path(p): P,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    run(&sim, &headers, q, Kind::Write, |cx, w| merge_reply(cx, w, &p, &body))
}

fn merge_reply(cx: &Cx, w: &mut World, p: &HashMap<String, String>, body: &[u8]) -> R {
    let doc = "pulls/pulls#merge-a-pull-request";
    if !cx.caller.token {
        return Err(err(StatusCode::UNAUTHORIZED, "Requires authentication", doc));
    }
    let args: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(body).map_err(|_| err(StatusCode::BAD_REQUEST, "Problems parsing JSON", doc))?
    };
    if !args.is_object() {
        return Err(err(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("Invalid request.\n\n{args} is not an object."),
            doc,
        ));
    }
    let text = |k: &str| -> Result<Option<String>, Reply> {
        match args.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(err(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("Invalid request.\n\nFor 'properties/{k}', {v} is not a string."),
                doc,
            )),
        }
    };
    let (title, message, sha) = (text("commit_title")?, text("commit_message")?, text("sha")?);
    let method = text("merge_method")?.unwrap_or_else(|| "merge".into());
    if !["merge", "squash", "rebase"].contains(&method.as_str()) {
        return Err(err(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "Invalid request.\n\nFor 'properties/merge_method', \"{method}\" is not a member of [\"merge\", \"squash\", \"rebase\"]."
            ),
            doc,
        ));
    }
    let repo = find_repo(w, p, &cx.caller).ok_or_else(|| not_found(doc))?;
    let pr = find_pull(repo, p).ok_or_else(|| not_found(doc))?;
    let not_mergeable = |m: &str| err(StatusCode::METHOD_NOT_ALLOWED, m, doc);
    if !pr.is_open() {
        return Err(not_mergeable("Pull Request is not mergeable"));
    }
    if sha.as_ref().is_some_and(|s| *s != pr_head_sha(repo, pr)) {
        return Err(err(StatusCode::CONFLICT, "Head branch was modified. Review and try the merge again.", doc));
    }
    // The repositories squash-merge only (see `get_repo`), which GitHub enforces here.
    match method.as_str() {
        "merge" => return Err(not_mergeable("Merge commits are not allowed on this repository.")),
        "rebase" => return Err(not_mergeable("Rebase merges are not allowed on this repository.")),
        _ => {}
    }
    // Branch protection on the base: GitHub's messages for each reason.
    if pr.draft {
        return Err(not_mergeable("Pull Request is still a draft"));
    }
    if latest_reviews(pr).values().any(|s| **s == ReviewState::ChangesRequested) {
        return Err(not_mergeable("Changes requested by a reviewer with write access."));
    }
    if !pr.approved() {
        return Err(not_mergeable("At least 1 approving review is required by reviewers with write access."));
    }
    let title = title.filter(|t| !t.is_empty()).unwrap_or_else(|| format!("{} (#{})", pr.title, pr.number));
    let full_message = match message.filter(|m| !m.is_empty()) {
        Some(m) => format!("{title}\n\n{m}"),
        None => title,
    };
    let (name, number) = (repo.full_name(), pr.number);
    let merged = w.merge_pull(&name, number, Some(full_message), false).map_err(|e| {
        use super::engine::WorldError as E;
        match e {
            E::NoRepo(_) | E::NoPull(_) | E::NoJob(..) => not_found(doc),
            E::NotOpen(_) => not_mergeable("Pull Request is not mergeable"),
            E::NotMergeable(_, why) => not_mergeable(&format!("Pull Request is not mergeable: {why}")),
        }
    })?;
    Ok(Reply::ok(json!({"sha": merged, "merged": true, "message": "Pull Request successfully merged"})))
}

// ============================================================================ webhooks

/// `sha256=<hex HMAC-SHA256 of body>` as in `X-Hub-Signature-256`.
pub fn signature_256(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The legacy `X-Hub-Signature` (HMAC-SHA1), still sent by GitHub alongside the SHA-256 one.
fn signature_1(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha1={}", hex::encode(mac.finalize().into_bytes()))
}

fn delivery_id() -> String {
    // A random (v4) UUID, as GitHub's X-GitHub-Delivery.
    let b: [u8; 16] = rand::random();
    let h = hex::encode(b);
    format!("{}-{}-4{}-{:x}{}-{}", &h[0..8], &h[8..12], &h[13..16], (b[8] & 0x3) | 0x8, &h[17..20], &h[20..32])
}

/// Deliver GitHub `push` events for pushes to each repository's default branch to `url`, signed
/// with `secret`, every 500 ms of real time, until the task is dropped. Drains `World::outbox`
/// (pushes to other branches are dropped). Failures are logged and not retried, as GitHub does
/// not redeliver push events on its own.
pub async fn deliver_webhooks(sim: Arc<Sim>, url: String, secret: String) {
    let client = match reqwest::Client::builder().timeout(Duration::from_secs(10)).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "github webhooks: cannot build an HTTP client; no deliveries");
            return;
        }
    };
    let hook_id = fnv(&url) % 900_000_000 + 100_000_000;
    let agent = format!("GitHub-Hookshot/{:07x}", fnv(&url) & 0xFFF_FFFF);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let base = sim.base_url();
        let deliveries: Vec<(i64, Value)> = {
            let mut w = sim.world();
            let events = std::mem::take(&mut w.outbox);
            events
                .iter()
                .filter_map(|ev| {
                    let repo = w.github.get(&ev.repo).filter(|r| r.default_branch == ev.branch)?;
                    let c = repo.commits.get(&ev.after)?;
                    Some((repo_id(&repo.full_name()), push_payload(&base, repo, ev, c)))
                })
                .collect()
        };
        for (rid, payload) in deliveries {
            let body = serde_json::to_vec(&payload).unwrap_or_default();
            let delivery = delivery_id();
            let sent = client
                .post(&url)
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::USER_AGENT, &agent)
                .header("X-GitHub-Event", "push")
                .header("X-GitHub-Delivery", &delivery)
                .header("X-GitHub-Hook-ID", hook_id.to_string())
                .header("X-GitHub-Hook-Installation-Target-Type", "repository")
                .header("X-GitHub-Hook-Installation-Target-ID", rid.to_string())
                .header("X-Hub-Signature", signature_1(&secret, &body))
                .header("X-Hub-Signature-256", signature_256(&secret, &body))
                .body(body)
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => tracing::warn!(%delivery, status = %r.status(), "github webhook delivery refused"),
                Err(e) => tracing::warn!(%delivery, error = %e, "github webhook delivery failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person(login: Option<&str>) -> Person {
        Person { name: "N".into(), email: "n@example.com".into(), login: login.map(Into::into) }
    }

    fn commit(sha: &str, parent: Option<&str>, t: i64) -> Commit {
        Commit {
            sha: sha.into(),
            parent: parent.map(Into::into),
            author: person(Some("alice")),
            committer: person(None),
            author_date: t,
            committer_date: t,
            message: format!("commit {sha}"),
            files: vec![FileChange {
                filename: "a b/c.rs".into(),
                status: "modified".into(),
                additions: 2,
                deletions: 1,
            }],
        }
    }

    /// main: r - a - b ; feature: a - f
    fn repo() -> Repo {
        let mut r = Repo { owner: "O".into(), name: "n".into(), default_branch: "main".into(), ..Default::default() };
        for (s, p) in [("r000", None), ("a111", Some("r000")), ("b222", Some("a111")), ("f333", Some("a111"))] {
            r.commits.insert(s.into(), commit(s, p, 100));
        }
        r.branches.insert("main".into(), vec!["r000".into(), "a111".into(), "b222".into()]);
        r.branches.insert("feature".into(), vec!["a111".into(), "f333".into()]);
        for (b, list) in r.branches.clone() {
            r.positions.insert(b, list.iter().enumerate().map(|(i, s)| (s.clone(), i)).collect());
        }
        r
    }

    #[test]
    fn refs_resolve_like_github() {
        let r = repo();
        assert_eq!(resolve(&r, "main").map(|c| c.sha.as_str()), Some("b222"));
        assert_eq!(resolve(&r, "refs/heads/feature").map(|c| c.sha.as_str()), Some("f333"));
        assert_eq!(resolve(&r, "HEAD").map(|c| c.sha.as_str()), Some("b222"));
        assert_eq!(resolve(&r, "a111").map(|c| c.sha.as_str()), Some("a111"));
        assert!(resolve(&r, "a11").is_none(), "prefixes need 4 digits");
        assert!(resolve(&r, "nope").is_none());
        assert_eq!(resolve(&r, "main~1").map(|c| c.sha.as_str()), Some("a111"));
        assert_eq!(resolve(&r, "main^^").map(|c| c.sha.as_str()), Some("r000"));
        assert_eq!(resolve(&r, "f333~1^0").map(|c| c.sha.as_str()), Some("a111"));
        assert!(resolve(&r, "main~3").is_none(), "past the root");
        assert!(resolve(&r, "main^2").is_none(), "no second parents");
    }

    #[test]
    fn merge_base_on_and_off_branch_lines() {
        let r = repo();
        assert_eq!(merge_base(&r, "r000", "b222").map(|c| c.sha.as_str()), Some("r000"));
        assert_eq!(merge_base(&r, "b222", "f333").map(|c| c.sha.as_str()), Some("a111"));
        assert_eq!(commits_until(&r, "b222", "r000").len(), 2);
    }

    #[test]
    fn link_header_has_github_rels_and_keeps_the_query() {
        let raw = vec!["sha=main".to_string(), "per_page=2".into(), "page=2".into()];
        let l = link_header("http://h/repositories/1/commits", &raw, 2, 3).expect("links");
        assert_eq!(
            l,
            "<http://h/repositories/1/commits?sha=main&per_page=2&page=1>; rel=\"prev\", \
             <http://h/repositories/1/commits?sha=main&per_page=2&page=3>; rel=\"next\", \
             <http://h/repositories/1/commits?sha=main&per_page=2&page=3>; rel=\"last\", \
             <http://h/repositories/1/commits?sha=main&per_page=2&page=1>; rel=\"first\""
        );
        assert_eq!(link_header("u", &[], 1, 1), None);
    }

    #[test]
    fn pages_and_bad_numbers() {
        let q = parse_query(Some("per_page=1000&page=0")).expect("query");
        assert_eq!(paging(&q, 30, 100, "Commit", "").expect("paging"), (100, 1));
        let q = parse_query(Some("per_page=abc")).expect("query");
        assert_eq!(
            paging(&q, 30, 100, "Commit", "").map_err(|r| r.status).err(),
            Some(StatusCode::UNPROCESSABLE_ENTITY)
        );
        assert_eq!(page_range(5, 2, 3), (4..5, 3));
        assert_eq!(page_range(5, 2, 9), (5..5, 3));
        assert_eq!(parse_query(Some("a=%2Fx+y")).expect("query").get("a"), Some("/x y"));
        assert!(parse_query(Some("a=%zz")).is_none());
    }

    #[test]
    fn etags_match_weakly_and_in_lists() {
        let e = etag_of(b"{}");
        assert!(etag_matches(&e, &e));
        assert!(etag_matches(&format!("\"x\", W/{e}"), &e));
        assert!(etag_matches("*", &e));
        assert!(!etag_matches("\"x\"", &e));
    }

    #[test]
    fn commit_json_has_github_fields() {
        let r = repo();
        let v = commit_json("http://h", &r, &r.commits["b222"]);
        assert_eq!(v["parents"][0]["sha"], "a111");
        assert_eq!(v["commit"]["author"]["date"], "1970-01-01T00:01:40Z");
        assert_eq!(v["author"]["login"], "alice");
        assert!(v["committer"].is_null());
        assert_eq!(v["html_url"], "https://github.com/O/n/commit/b222");
        let f = file_json("http://h", &r, "b222", &r.commits["b222"].files[0]);
        assert_eq!(f["blob_url"], "https://github.com/O/n/blob/b222/a%20b/c.rs");
        assert_eq!(f["changes"], 3);
        assert_eq!(f["patch"], "@@ -1,1 +1,2 @@\n-line 1\n+line 1 changed\n+line 2 changed");
    }

    #[test]
    fn node_ids_use_the_legacy_format() {
        assert_eq!(node_id("User", 1), "MDQ6VXNlcjE=");
        assert_eq!(node_id("Repository", 1296269), "MDEwOlJlcG9zaXRvcnkxMjk2MjY5");
    }

    #[test]
    fn signature_matches_githubs_documented_example() {
        // docs.github.com "Validating webhook deliveries" test values.
        assert_eq!(
            signature_256("It's a Secret to Everybody", b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }
}
