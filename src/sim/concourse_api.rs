//! Concourse's HTTP API (the v8.2.5 shapes of concourse/concourse:atc/routes.go) over the
//! simulated world, plus skymarshal's `POST /sky/issuer/token`.
//!
//! Shapes, auth classes and quirks follow `shared/reference/concourse-api.md`; each handler
//! names the concourse/concourse file it mirrors. The presenters (`build_json`, `job_json`, ...)
//! are pure functions of the model so they can be tested without HTTP.
//!
//! Auth classes (atc/wrappa/api_auth_wrappa.go): **O** optional auth, filtered by visibility
//! (an invalid token is a 401); **P** pipeline public or team-authorized (an invalid token on a
//! public pipeline silently gets the public view); **B** the build's pipeline public or
//! authorized; **BJ** B plus the job public when unauthorized; **A** team-authorized. Every
//! local user of the topology holds the viewer role on every team, so any valid token is
//! authorized and 403 cannot occur in practice (the code paths exist).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::Sim;
use super::engine::{World, fnv};
use super::model::{Build, BuildId, BuildStatus, Concourse, Job, Pipeline, Resource, ResourceVersion, VersionId};

/// Go's zero `time.Time` as Unix seconds: what JobSummary shows for a NULL build time.
pub const GO_ZERO_TIME: i64 = -62_135_596_800;
/// `atc.PaginationAPIDefaultLimit`.
const DEFAULT_LIMIT: i64 = 100;
const WORKER_VERSION: &str = "2.5";
/// The OAuth client skymarshal registers for fly (atc/atccmd/command.go).
const FLY_CLIENT_ID: &str = "fly";
const FLY_CLIENT_SECRET: &str = "Zmx5";
/// `--resource-checking-interval` default.
const CHECK_INTERVAL: i64 = 60;
/// How often a streaming event response looks for new events (real time).
const EVENT_POLL: Duration = Duration::from_millis(200);

pub fn routes() -> Router<Arc<Sim>> {
    const PIPE: &str = "/api/v1/teams/{team}/pipelines/{pipeline}";
    Router::new()
        .route("/api/v1/info", get(info))
        .route("/api/v1/teams", get(list_teams))
        .route("/api/v1/pipelines", get(list_all_pipelines))
        .route("/api/v1/jobs", get(list_all_jobs))
        .route("/api/v1/builds", get(list_builds))
        .route("/api/v1/resources", get(list_all_resources))
        .route("/api/v1/builds/{build_id}", get(get_build))
        .route("/api/v1/builds/{build_id}/resources", get(build_resources))
        .route("/api/v1/builds/{build_id}/plan", get(build_plan))
        .route("/api/v1/builds/{build_id}/events", get(build_events))
        .route("/api/v1/teams/{team}/pipelines", get(list_pipelines))
        .route("/api/v1/teams/{team}/builds", get(list_team_builds))
        .route(PIPE, get(get_pipeline))
        .route(&format!("{PIPE}/config"), get(get_config))
        .route(&format!("{PIPE}/jobs"), get(list_jobs))
        .route(&format!("{PIPE}/jobs/{{job}}"), get(get_job))
        .route(&format!("{PIPE}/jobs/{{job}}/builds"), get(list_job_builds))
        .route(&format!("{PIPE}/jobs/{{job}}/builds/{{build_name}}"), get(get_job_build))
        .route(&format!("{PIPE}/builds"), get(list_pipeline_builds))
        .route(&format!("{PIPE}/resources"), get(list_resources))
        .route(&format!("{PIPE}/resources/{{resource}}"), get(get_resource))
        .route(&format!("{PIPE}/resources/{{resource}}/versions"), get(list_versions))
        .route(&format!("{PIPE}/resources/{{resource}}/versions/{{version_id}}"), get(get_version))
        .route(&format!("{PIPE}/resources/{{resource}}/versions/{{version_id}}/input_to"), get(version_input_to))
        .route(&format!("{PIPE}/resources/{{resource}}/versions/{{version_id}}/output_of"), get(version_output_of))
        .route("/sky/issuer/token", post(token).get(token_wrong_method))
}

// ================================================================ responses

/// Why a request is refused before a body is made.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Reject {
    /// A bare status with an empty body, as the Go handlers' `w.WriteHeader(code)`.
    Status(StatusCode),
    Unauthorized,
    Forbidden,
}

impl IntoResponse for Reject {
    fn into_response(self) -> Response {
        match self {
            Reject::Status(code) => code.into_response(),
            // auth.UnauthorizedRejector.
            Reject::Unauthorized => (StatusCode::UNAUTHORIZED, "not authorized").into_response(),
            Reject::Forbidden => (StatusCode::FORBIDDEN, "forbidden").into_response(),
        }
    }
}

type Res = Result<Response, Reject>;

/// `json.NewEncoder(w).Encode(v)`: compact JSON plus a newline.
fn json_ok(v: &Value) -> Response {
    let mut body = v.to_string();
    body.push('\n');
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn status(code: StatusCode) -> Reject {
    Reject::Status(code)
}

/// Lock the world, run an API handler body on it and stamp `X-Concourse-Version`
/// (atc/wrappa/versioned_handler.go) on whatever comes out, errors included.
fn api(sim: &Sim, headers: &HeaderMap, f: impl FnOnce(&World, &Access) -> Res) -> Response {
    let w = sim.world();
    let acc = Access::of(headers, &w.concourse, w.now);
    let mut resp = f(&w, &acc).unwrap_or_else(IntoResponse::into_response);
    if let Ok(v) = HeaderValue::from_str(&w.concourse.version) {
        resp.headers_mut().insert("x-concourse-version", v);
    }
    resp
}

fn add_links(resp: &mut Response, links: &[String]) {
    for l in links {
        if let Ok(v) = HeaderValue::from_str(l) {
            resp.headers_mut().append(header::LINK, v);
        }
    }
}

// ================================================================ auth

/// What atc/api/accessor makes of the `Authorization` header.
#[derive(Debug, Clone, Default)]
struct Access {
    /// Any `Authorization` header at all (accessor_factory.go: only "no header" means no token).
    has_token: bool,
    user: Option<String>,
}

impl Access {
    fn of(headers: &HeaderMap, c: &Concourse, now: i64) -> Access {
        let Some(h) = headers.get(header::AUTHORIZATION) else { return Access::default() };
        let raw = h.to_str().unwrap_or("");
        // verifier.go: exactly two space-separated parts, scheme matched case-insensitively.
        let parts: Vec<&str> = raw.split(' ').collect();
        let user = match parts.as_slice() {
            [scheme, token] if scheme.eq_ignore_ascii_case("bearer") => c.token_user(token, now).map(str::to_string),
            _ => None,
        };
        Access { has_token: true, user }
    }
    fn authenticated(&self) -> bool {
        self.user.is_some()
    }
    /// Every local user is a viewer on every team.
    fn authorized(&self, _team: &str) -> bool {
        self.authenticated()
    }
    /// `CheckAuthenticationIfProvidedHandler`: a token that does not verify is a 401.
    fn check_if_provided(&self) -> Result<(), Reject> {
        if self.has_token && !self.authenticated() { Err(Reject::Unauthorized) } else { Ok(()) }
    }
    fn reject(&self) -> Reject {
        if self.authenticated() { Reject::Forbidden } else { Reject::Unauthorized }
    }
}

/// P routes: `checkPipelineAccessHandler` looks up team and pipeline (404) before checking access.
fn pipeline_access<'a>(c: &'a Concourse, acc: &Access, team: &str, pipeline: &str) -> Result<&'a Pipeline, Reject> {
    if !c.teams.iter().any(|t| t.name == team) {
        return Err(status(StatusCode::NOT_FOUND));
    }
    let p = c
        .pipeline_by_name(team, pipeline)
        .and_then(|i| c.pipelines.get(i))
        .ok_or_else(|| status(StatusCode::NOT_FOUND))?;
    if acc.authorized(team) || p.public { Ok(p) } else { Err(acc.reject()) }
}

/// B / BJ routes: atc/api/auth/check_build_read_access_handler.go.
fn build_access<'a>(c: &'a Concourse, acc: &Access, raw_id: &str, need_public_job: bool) -> Result<&'a Build, Reject> {
    let id: i64 = raw_id.parse().map_err(|_| status(StatusCode::BAD_REQUEST))?;
    let b = c.build(id).ok_or_else(|| status(StatusCode::NOT_FOUND))?;
    // A destroyed pipeline takes its builds with it.
    let p = c.pipelines.get(b.pipeline).filter(|p| !p.removed).ok_or_else(|| status(StatusCode::NOT_FOUND))?;
    if acc.authenticated() && acc.authorized(&p.team) {
        return Ok(b);
    }
    let job_public = p.jobs.get(b.job).is_some_and(|j| j.public);
    if p.public && (!need_public_job || job_public) { Ok(b) } else { Err(acc.reject()) }
}

fn visible(acc: &Access, p: &Pipeline) -> bool {
    !p.removed && (p.public || acc.authorized(&p.team))
}

// ================================================================ query strings

/// A parsed query string, keeping repeats and order (Go's `url.Values`).
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(raw: Option<&str>) -> Query {
        Query(parse_form(raw.unwrap_or("")))
    }
    /// `r.FormValue`: the first value, "" when absent.
    fn first(&self, k: &str) -> &str {
        self.0.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str()).unwrap_or("")
    }
    fn all<'a>(&'a self, k: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0.iter().filter(move |(key, _)| key == k).map(|(_, v)| v.as_str())
    }
}

fn parse_form(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex_val(b[i + 1]), hex_val(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// `strconv.Atoi` with the error ignored, as the handlers do: garbage becomes 0, and a number
/// out of range the nearest int64 (`ParseInt` returns it with `ErrRange`).
fn atoi(s: &str) -> i64 {
    use std::num::IntErrorKind;
    match s.parse::<i64>() {
        Ok(n) => n,
        Err(e) => match e.kind() {
            IntErrorKind::PosOverflow => i64::MAX,
            IntErrorKind::NegOverflow => i64::MIN,
            _ => 0,
        },
    }
}

/// `db.Page` as the list handlers build it: `limit` 0 or garbage → 100; empty `from`/`to` absent.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Page {
    from: Option<i64>,
    to: Option<i64>,
    limit: i64,
}

impl Page {
    fn of(q: &Query) -> Page {
        let limit = match atoi(q.first("limit")) {
            0 => DEFAULT_LIMIT,
            n => n,
        };
        let opt = |k: &str| Some(q.first(k)).filter(|v| !v.is_empty()).map(atoi);
        Page { from: opt("from"), to: opt("to"), limit }
    }
    /// The row limit; a negative one is refused before it is used (an SQL error).
    fn take(&self) -> usize {
        usize::try_from(self.limit).unwrap_or(usize::MAX)
    }
}

/// Adjacent pages: `Older.To` (rel="next") and `Newer.From` (rel="previous").
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Pagination {
    older_to: Option<i64>,
    newer_from: Option<i64>,
}

/// Link headers (RFC 5988) as jobserver/list_builds.go writes them: next first, then previous.
fn link_headers(base: &str, path: &str, pg: Pagination, limit: i64) -> Vec<String> {
    let mut out = vec![];
    if let Some(to) = pg.older_to {
        out.push(format!("<{base}{path}?to={to}&limit={limit}>; rel=\"next\""));
    }
    if let Some(from) = pg.newer_from {
        out.push(format!("<{base}{path}?from={from}&limit={limit}>; rel=\"previous\""));
    }
    out
}

// ================================================================ build pagination

/// `COALESCE(b.rerun_of, b.id) DESC, b.id DESC` sorts by this key, descending.
fn build_order_key(b: &Build) -> (i64, i64) {
    (b.rerun_of.unwrap_or(b.id), b.id)
}

/// Errors of the builds queries that the handlers turn into 404 (500 on `/api/v1/builds`):
/// `from > to` ("invalid range boundaries", checked on the signed values first), then what
/// Postgres refuses. Squirrel writes `Limit(uint64(page.Limit))` into the SQL text, so a
/// negative limit becomes `LIMIT 18446744073709551615`, out of bigint range; a bound is passed
/// as `uint64(*page.From)`, which pgx cannot encode into the bigint `b.id` once it is above
/// `i64::MAX`, i.e. when it was negative.
fn builds_query_ok(page: Page, bounds_are_ids: bool) -> Result<(), ()> {
    if page.limit < 0 {
        return Err(());
    }
    if let (true, Some(f), Some(t)) = (bounds_are_ids, page.from, page.to)
        && f > t
    {
        return Err(());
    }
    if bounds_are_ids && (page.from.is_some_and(|f| f < 0) || page.to.is_some_and(|t| t < 0)) {
        return Err(());
    }
    Ok(())
}

/// db/build_factory.go `getBuildsWithPagination` (non-chronological, as every list handler
/// calls it). `Err` is a query error (see [`builds_query_ok`]).
fn paginate_builds<'a>(all: &[&'a Build], page: Page) -> Result<(Vec<&'a Build>, Pagination), ()> {
    builds_query_ok(page, true)?;
    let ge = |b: &Build, f: i64| b.id >= f;
    let le = |b: &Build, t: i64| b.id <= t;
    let mut sel: Vec<&Build> = match (page.from, page.to) {
        (None, None) => all.to_vec(),
        (Some(f), None) => all.iter().copied().filter(|b| ge(b, f)).collect(),
        (None, Some(t)) => all.iter().copied().filter(|b| le(b, t)).collect(),
        (Some(f), Some(t)) => all.iter().copied().filter(|b| ge(b, f) && le(b, t)).collect(),
    };
    let ascending = page.from.is_some();
    if ascending {
        sel.sort_by_key(|b| build_order_key(b));
    } else {
        sel.sort_by_key(|b| std::cmp::Reverse(build_order_key(b)));
    }
    sel.truncate(page.take());
    // Only a lone `from` is flipped back to newest first; `from`+`to` stays ascending.
    if page.from.is_some() && page.to.is_none() {
        sel.reverse();
    }
    let (Some(newest), Some(oldest)) = (sel.first(), sel.last()) else { return Ok((sel, Pagination::default())) };
    let older_to = all.iter().filter(|b| b.id < oldest.id).max_by_key(|b| build_order_key(b)).map(|b| b.id);
    let newer_from = all.iter().filter(|b| b.id > newest.id).min_by_key(|b| build_order_key(b)).map(|b| b.id);
    Ok((sel, Pagination { older_to, newer_from }))
}

/// db/build_factory.go `getBuildsWithDates`: `from`/`to` are Unix seconds on `start_time`
/// (`to_timestamp`, any sign, no `from > to` check); no pagination.
fn builds_by_date<'a>(all: &[&'a Build], page: Page) -> Result<Vec<&'a Build>, ()> {
    builds_query_ok(page, false)?;
    let mut sel: Vec<&Build> = all
        .iter()
        .copied()
        .filter(|b| page.from.is_none_or(|f| b.start_time.is_some_and(|s| s >= f)))
        .filter(|b| page.to.is_none_or(|t| b.start_time.is_some_and(|s| s <= t)))
        .collect();
    sel.sort_by_key(|b| std::cmp::Reverse(build_order_key(b)));
    sel.truncate(page.take());
    Ok(sel)
}

/// A build list with Link headers (or none in `timestamps` mode). `err` is the status the
/// handler answers when the DB call fails: 404 for job and pipeline lists, 500 for /builds.
fn build_list_response(c: &Concourse, all: &[&Build], q: &Query, base: &str, path: &str, err: StatusCode) -> Res {
    let page = Page::of(q);
    let (builds, links) = if q.first("timestamps").is_empty() {
        let (b, pg) = paginate_builds(all, page).map_err(|_| status(err))?;
        (b, link_headers(base, path, pg, page.limit))
    } else {
        (builds_by_date(all, page).map_err(|_| status(err))?, vec![])
    };
    let body: Vec<Value> = builds.iter().map(|b| build_json(c, b)).collect();
    let mut resp = json_ok(&Value::Array(body));
    add_links(&mut resp, &links);
    Ok(resp)
}

// ================================================================ presenters

fn pipeline_of<'a>(c: &'a Concourse, b: &Build) -> Option<&'a Pipeline> {
    c.pipelines.get(b.pipeline)
}

/// `atc.Build` as present/build.go makes it. `api_url` is relative; `comment` never appears
/// because the model has no comments.
fn build_json(c: &Concourse, b: &Build) -> Value {
    let p = pipeline_of(c, b);
    let mut o = json!({
        "id": b.id,
        "team_name": p.map(|p| p.team.as_str()).unwrap_or(""),
        "name": b.name,
        "status": b.status.as_str(),
        "api_url": format!("/api/v1/builds/{}", b.id),
    });
    if let Some(j) = p.and_then(|p| p.jobs.get(b.job)) {
        o["job_name"] = json!(j.name);
    }
    if let Some(p) = p {
        o["pipeline_id"] = json!(p.id);
        o["pipeline_name"] = json!(p.name);
    }
    if let Some(t) = b.start_time {
        o["start_time"] = json!(t);
    }
    if let Some(t) = b.end_time {
        o["end_time"] = json!(t);
    }
    if let Some(orig) = b.rerun_of {
        if let Some(n) = b.rerun_number.filter(|n| *n != 0) {
            o["rerun_number"] = json!(n);
        }
        let mut r = json!({"id": orig});
        if let Some(ob) = c.build(orig) {
            r["name"] = json!(ob.name);
        }
        o["rerun_of"] = r;
    }
    if let Some(by) = &b.created_by {
        o["created_by"] = json!(by);
    }
    o
}

/// `atc.BuildSummary` as db/job_factory.go builds it from SQL: a NULL time becomes Go's zero
/// time (`-62135596800`), which `omitempty` keeps. No `api_url`, `rerun_of` or `created_by`.
fn build_summary_json(c: &Concourse, b: &Build) -> Value {
    let p = pipeline_of(c, b);
    let mut o = json!({
        "id": b.id,
        "name": b.name,
        "status": b.status.as_str(),
        "start_time": b.start_time.unwrap_or(GO_ZERO_TIME),
        "end_time": b.end_time.unwrap_or(GO_ZERO_TIME),
        "team_name": p.map(|p| p.team.as_str()).unwrap_or(""),
        "pipeline_id": p.map(|p| p.id).unwrap_or(0),
        "pipeline_name": p.map(|p| p.name.as_str()).unwrap_or(""),
    });
    if let Some(j) = p.and_then(|p| p.jobs.get(b.job)) {
        o["job_name"] = json!(j.name);
    }
    o
}

/// The builds a job row points at (atc/db/build.go `updateNextBuildForJob`,
/// `updateLatestCompletedBuildForJob`, `updateTransitionBuildForJob`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct JobBuilds {
    finished: Option<BuildId>,
    next: Option<BuildId>,
    transition: Option<BuildId>,
}

fn job_builds(c: &Concourse, job: &Job) -> JobBuilds {
    let builds: Vec<&Build> = job.builds.iter().filter_map(|id| c.build(*id)).collect();
    let mut completed: Vec<&Build> = builds.iter().copied().filter(|b| b.status.is_finished()).collect();
    // Replay completions in finishing order: `jobs.latest_completed_build_id` is the latest
    // completed non-rerun or its latest completed rerun, and the transition build is the first
    // build of the current status streak.
    completed.sort_by_key(|b| (b.end_time.unwrap_or(i64::MAX), b.id));
    let mut latest_non_rerun: Option<&Build> = None;
    let mut latest_rerun_of: HashMap<BuildId, &Build> = HashMap::new();
    let mut latest: Option<&Build> = None;
    let mut transition = None;
    for b in completed {
        let update = match latest {
            None => true,
            Some(l) if b.id < l.id => false,
            Some(l) => l.status != b.status && (b.rerun_of.is_none() || b.rerun_of == Some(l.id)),
        };
        if update {
            transition = Some(b.id);
        }
        match b.rerun_of {
            None => {
                if latest_non_rerun.is_none_or(|n| b.id > n.id) {
                    latest_non_rerun = Some(b);
                }
            }
            Some(orig) => {
                let e = latest_rerun_of.entry(orig).or_insert(b);
                if b.id > e.id {
                    *e = b;
                }
            }
        }
        latest = latest_non_rerun.map(|n| latest_rerun_of.get(&n.id).copied().unwrap_or(n));
    }
    let finished = latest.map(|b| b.id);
    let latest_non_rerun = latest_non_rerun.map(|b| b.id);
    let next = builds
        .iter()
        .filter(|b| b.status.is_running() && (b.rerun_of.is_none() || b.rerun_of == latest_non_rerun))
        .map(|b| b.id)
        .min();
    JobBuilds { finished, next, transition }
}

fn resource_name(p: &Pipeline, r: usize) -> &str {
    p.resources.get(r).map(|r| r.name.as_str()).unwrap_or("")
}

/// `atc.Job` for GET .../jobs/:job (present/job.go): `next_build` and `finished_build` always
/// present (object or null), `transition_build` never, input `trigger` always.
fn job_json(c: &Concourse, p: &Pipeline, job: &Job) -> Value {
    let jb = job_builds(c, job);
    let full = |id: Option<BuildId>| id.and_then(|id| c.build(id)).map(|b| build_json(c, b)).unwrap_or(Value::Null);
    let mut o = json!({
        "id": job.id,
        "name": job.name,
        "team_name": p.team,
        "pipeline_id": p.id,
        "pipeline_name": p.name,
        "next_build": full(jb.next),
        "finished_build": full(jb.finished),
    });
    if !job.groups.is_empty() {
        o["groups"] = json!(job.groups);
    }
    // `paused` is omitempty in atc.Job.
    if job.paused {
        o["paused"] = json!(true);
    }
    // As if build log retention were configured and nothing reaped yet: the oldest build.
    if let Some(first) = job.builds.iter().min() {
        o["first_logged_build_id"] = json!(first);
    }
    let inputs: Vec<Value> = job
        .inputs
        .iter()
        .map(|i| {
            let mut v = json!({"name": i.name, "resource": resource_name(p, i.resource), "trigger": i.trigger});
            if !i.passed.is_empty() {
                v["passed"] =
                    json!(i.passed.iter().filter_map(|j| p.jobs.get(*j)).map(|j| j.name.as_str()).collect::<Vec<_>>());
            }
            v
        })
        .collect();
    if !inputs.is_empty() {
        o["inputs"] = Value::Array(inputs);
    }
    let outputs: Vec<Value> =
        job.outputs.iter().map(|o| json!({"name": o.name, "resource": resource_name(p, o.resource)})).collect();
    if !outputs.is_empty() {
        o["outputs"] = Value::Array(outputs);
    }
    o
}

/// `atc.JobSummary` for the job lists (db/job_factory.go `constructJobsForDashboard`): builds
/// omitted when absent, input `trigger` omitempty, inputs and outputs sorted by name.
fn job_summary_json(c: &Concourse, p: &Pipeline, job: &Job) -> Value {
    let jb = job_builds(c, job);
    let mut o = json!({
        "id": job.id,
        "name": job.name,
        "team_name": p.team,
        "pipeline_id": p.id,
        "pipeline_name": p.name,
    });
    if !job.groups.is_empty() {
        o["groups"] = json!(job.groups);
    }
    for (key, id) in [("finished_build", jb.finished), ("next_build", jb.next), ("transition_build", jb.transition)] {
        if let Some(b) = id.and_then(|id| c.build(id)) {
            o[key] = build_summary_json(c, b);
        }
    }
    let mut inputs: Vec<(&str, Value)> = job
        .inputs
        .iter()
        .map(|i| {
            let mut v = json!({"name": i.name, "resource": resource_name(p, i.resource)});
            if !i.passed.is_empty() {
                let mut passed: Vec<&Job> = i.passed.iter().filter_map(|j| p.jobs.get(*j)).collect();
                passed.sort_by_key(|j| j.id);
                v["passed"] = json!(passed.iter().map(|j| j.name.as_str()).collect::<Vec<_>>());
            }
            if i.trigger {
                v["trigger"] = json!(true);
            }
            (i.name.as_str(), v)
        })
        .collect();
    inputs.sort_by(|a, b| a.0.cmp(b.0));
    if !inputs.is_empty() {
        o["inputs"] = Value::Array(inputs.into_iter().map(|(_, v)| v).collect());
    }
    let mut outputs: Vec<(&str, Value)> = job
        .outputs
        .iter()
        .map(|o| (o.name.as_str(), json!({"name": o.name, "resource": resource_name(p, o.resource)})))
        .collect();
    outputs.sort_by(|a, b| a.0.cmp(b.0));
    if !outputs.is_empty() {
        o["outputs"] = Value::Array(outputs.into_iter().map(|(_, v)| v).collect());
    }
    o
}

/// `atc.ResourceVersion`. Metadata only when the model has made it visible (a get or put
/// stored it) and the caller may see it; empty metadata is omitted (`omitempty`).
fn version_json(v: &ResourceVersion, show_metadata: bool) -> Value {
    let mut o = json!({"id": v.id, "version": v.version, "enabled": v.enabled});
    if show_metadata && v.metadata_visible && !v.metadata.is_empty() {
        o["metadata"] = Value::Array(v.metadata.iter().map(|(k, val)| json!({"name": k, "value": val})).collect());
    }
    o
}

/// The last periodic check at or before `now` (every resource is checked every minute, at a
/// per-resource phase, as the engine does).
fn last_check_tick(p: &Pipeline, r: &Resource, now: i64) -> i64 {
    let phase = (fnv(&format!("{}/{}", p.name, r.name)) % CHECK_INTERVAL as u64) as i64;
    phase + (now - phase).div_euclid(CHECK_INTERVAL) * CHECK_INTERVAL
}

/// `atc.Resource` (present/resource.go). No `build` (the model has no check builds) and no icon.
fn resource_json(p: &Pipeline, r: &Resource, now: i64) -> Value {
    let last_checked = r.last_checked.unwrap_or(i64::MIN).max(last_check_tick(p, r, now));
    json!({
        "name": r.name,
        "pipeline_id": p.id,
        "pipeline_name": p.name,
        "team_name": p.team,
        "type": r.type_name,
        "last_checked": last_checked,
    })
}

/// `atc.Pipeline` (present/pipeline.go).
fn pipeline_json(p: &Pipeline, last_updated: i64) -> Value {
    let mut o = json!({
        "id": p.id,
        "name": p.name,
        "paused": p.paused,
        "public": p.public,
        "archived": false,
        "team_name": p.team,
        "last_updated": last_updated,
    });
    if !p.groups.is_empty() {
        let groups: Vec<Value> = p
            .groups
            .iter()
            .map(|g| {
                let jobs: Vec<&str> = p.jobs.iter().filter(|j| j.groups.contains(g)).map(|j| j.name.as_str()).collect();
                let mut v = json!({"name": g});
                if !jobs.is_empty() {
                    v["jobs"] = json!(jobs);
                }
                v
            })
            .collect();
        o["groups"] = Value::Array(groups);
    }
    o
}

/// When the pipelines were set: the world's first moment (the repositories' root commits).
fn pipelines_set_at(w: &World) -> i64 {
    w.github.values().flat_map(|r| r.commits.values()).map(|c| c.committer_date).min().unwrap_or(w.now)
}

/// `atc.BuildInputsOutputs` (buildserver/resources.go + db/build.go `Resources()`): adopted
/// inputs minus those whose exact version the build also put to the same resource.
fn build_resources_json(c: &Concourse, b: &Build) -> Value {
    let pipeline_id = pipeline_of(c, b).map(|p| p.id).unwrap_or(0);
    let version = |id| c.version(id).map(|v| json!(v.version)).unwrap_or_else(|| json!({}));
    let inputs: Vec<Value> = b
        .inputs
        .iter()
        .filter(|i| !b.outputs.iter().any(|o| o.resource == i.resource && o.version == i.version))
        .map(|i| json!({"name": i.name, "version": version(i.version), "pipeline_id": pipeline_id, "first_occurrence": i.first_occurrence}))
        .collect();
    let outputs: Vec<Value> =
        b.outputs.iter().map(|o| json!({"name": o.name, "version": version(o.version)})).collect();
    json!({"inputs": inputs, "outputs": outputs})
}

// ================================================================ plans and events

/// A build's plan with its step ids. Ids are hex like atc's plan factory (a counter seeded
/// with a Unix time); the same ids are the origins of the build's events.
struct PlanLayout {
    do_id: String,
    parallel_id: String,
    /// (step name, resource name, type, id)
    gets: Vec<(String, String, String, String)>,
    task_name: String,
    retry_id: Option<String>,
    attempts: Vec<String>,
    /// (step name, resource name, type, on_success id, put id, implicit get id)
    puts: Vec<(String, String, String, String, String, String)>,
}

/// The task step of a job in the pipeline config: (name, configured attempts).
fn task_spec(p: &Pipeline, job: &Job) -> (String, usize) {
    let plan = p.config["jobs"]
        .as_array()
        .and_then(|jobs| jobs.iter().find(|j| j["name"] == job.name.as_str()))
        .and_then(|j| j["plan"].as_array());
    let task = plan.and_then(|steps| steps.iter().find(|s| s.get("task").is_some()));
    let name = task.and_then(|t| t["task"].as_str()).unwrap_or("task").to_string();
    let attempts = task.and_then(|t| t["attempts"].as_u64()).unwrap_or(1).max(1) as usize;
    (name, attempts)
}

fn plan_layout(c: &Concourse, b: &Build) -> Option<PlanLayout> {
    let p = pipeline_of(c, b)?;
    let job = p.jobs.get(b.job)?;
    let mut next = b.start_time.unwrap_or(b.create_time);
    let mut id = || {
        next += 1;
        format!("{next:x}")
    };
    let res = |r: usize| p.resources.get(r).map(|r| (r.name.clone(), r.type_name.clone())).unwrap_or_default();
    let do_id = id();
    let parallel_id = id();
    let gets = job
        .inputs
        .iter()
        .map(|i| {
            let (rn, ty) = res(i.resource);
            (i.name.clone(), rn, ty, id())
        })
        .collect();
    let (task_name, configured) = task_spec(p, job);
    let n = configured.max(b.plan.as_ref().map(|pl| pl.attempts.len()).unwrap_or(1));
    let retry_id = (configured > 1).then(&mut id);
    let attempts = (0..n).map(|_| id()).collect();
    let puts = job
        .outputs
        .iter()
        .map(|o| {
            let (rn, ty) = res(o.resource);
            (o.name.clone(), rn, ty, id(), id(), id())
        })
        .collect();
    Some(PlanLayout { do_id, parallel_id, gets, task_name, retry_id, attempts, puts })
}

/// `{"schema":"exec.v2","plan":...}` (buildserver/plan.go, atc/public_plan.go).
fn build_plan_json(c: &Concourse, b: &Build) -> Option<Value> {
    let l = plan_layout(c, b)?;
    let mut steps = vec![];
    if !l.gets.is_empty() {
        let gets: Vec<Value> = l
            .gets
            .iter()
            .map(|(name, resource, ty, id)| {
                let mut g = json!({"name": name, "type": ty, "resource": resource});
                if let Some(v) = b.inputs.iter().find(|i| &i.name == name).and_then(|i| c.version(i.version)) {
                    g["version"] = json!(v.version);
                }
                json!({"id": id, "get": g})
            })
            .collect();
        steps.push(json!({"id": l.parallel_id, "in_parallel": {"steps": gets}}));
    }
    let task = |id: &String| json!({"id": id, "task": {"name": l.task_name, "privileged": false, "hermetic": false}});
    match &l.retry_id {
        Some(rid) => steps.push(json!({"id": rid, "retry": l.attempts.iter().map(task).collect::<Vec<_>>()})),
        None => steps.extend(l.attempts.first().map(task)),
    }
    for (name, resource, ty, os_id, put_id, get_id) in &l.puts {
        steps.push(json!({"id": os_id, "on_success": {
            "step": {"id": put_id, "put": {"name": name, "type": ty, "resource": resource}},
            "on_success": {"id": get_id, "get": {"name": name, "type": ty, "resource": resource}},
        }}));
    }
    Some(json!({"schema": "exec.v2", "plan": {"id": l.do_id, "do": steps}}))
}

fn envelope(event: &str, version: &str, data: Value) -> Value {
    json!({"data": data, "event": event, "version": version})
}

/// The shadow task config of `initialize-task` / `start-task` (atc/event/events.go).
fn task_config(b: &Build, task: &str) -> Value {
    let inputs: Vec<Value> = b.inputs.iter().map(|i| json!({"name": i.name, "path": ""})).collect();
    json!({"platform": "linux", "image": "", "run": {"path": format!("pipeline-tasks/ci/tasks/{task}.sh"), "args": [], "dir": ""}, "inputs": inputs})
}

/// The build's event stream at `now` (atc/event/events.go envelopes), and whether it is
/// complete. The list is prefix-stable: later calls only append, so event ids never change.
/// A running build shows events up to the first one later than `now`; a finished build shows
/// everything, then its last task's result, its puts and its final status.
fn build_event_list(c: &Concourse, b: &Build, now: i64) -> (Vec<Value>, bool) {
    let complete = b.status.is_finished();
    let mut ev: Vec<(i64, Value)> = vec![];
    let (Some(start), Some(l)) = (b.start_time, plan_layout(c, b)) else {
        // Never started (pending, or aborted while pending).
        if let (true, Some(end)) = (complete, b.end_time) {
            ev.push((end, envelope("status", "1.0", json!({"status": b.status.as_str(), "time": end}))));
        }
        return (ev.into_iter().map(|(_, v)| v).collect(), complete);
    };
    let origin = |id: &str| json!({"id": id});
    let log = |line: &super::model::LogLine, id: &str| {
        (
            line.time,
            envelope(
                "log",
                "5.1",
                json!({"time": line.time, "origin": {"id": id, "source": "stdout"}, "payload": line.payload}),
            ),
        )
    };
    ev.push((start, envelope("status", "1.0", json!({"status": "started", "time": start}))));
    let get_id = |name: &str| l.gets.iter().find(|g| g.0 == name).map(|g| g.3.clone()).unwrap_or_default();
    for i in &b.inputs {
        ev.push((start, envelope("initialize-get", "2.0", json!({"origin": origin(&get_id(&i.name)), "time": start}))));
        ev.push((start, envelope("start-get", "1.0", json!({"origin": origin(&get_id(&i.name)), "time": start}))));
    }
    for i in &b.inputs {
        let id = get_id(&i.name);
        let mut t = start + 1;
        for line in b.log.iter().filter(|line| line.origin == i.name) {
            t = t.max(line.time);
            ev.push(log(line, &id));
        }
        let mut data = json!({"origin": origin(&id), "time": t, "exit_status": 0, "version": {}});
        if let Some(v) = c.version(i.version) {
            data["version"] = json!(v.version);
            if v.metadata_visible && !v.metadata.is_empty() {
                data["metadata"] =
                    json!(v.metadata.iter().map(|(k, val)| json!({"name": k, "value": val})).collect::<Vec<_>>());
            }
        }
        ev.push((t, envelope("finish-get", "5.1", data)));
    }
    // Task attempts: the engine's log starts the task 2 s in and runs the attempts back to back.
    let durations: Vec<i64> = b.plan.as_ref().map(|pl| pl.attempts.clone()).unwrap_or_default();
    let durations =
        if durations.is_empty() { vec![b.end_time.unwrap_or(now).saturating_sub(start + 2).max(0)] } else { durations };
    let task_lines: Vec<&super::model::LogLine> =
        b.log.iter().filter(|line| !b.inputs.iter().any(|i| i.name == line.origin)).collect();
    let mut t = start + 2;
    let last = durations.len() - 1;
    let mut last_task_id = String::new();
    for (k, d) in durations.iter().enumerate() {
        let id = l.attempts.get(k).or(l.attempts.last()).cloned().unwrap_or_default();
        let config = task_config(b, &l.task_name);
        ev.push((t, envelope("initialize-task", "4.0", json!({"time": t, "origin": origin(&id), "config": config}))));
        ev.push((t, envelope("start-task", "5.0", json!({"time": t, "origin": origin(&id), "config": config}))));
        for line in task_lines.iter().filter(|line| line.time >= t && (k == last || line.time < t + d)) {
            ev.push(log(line, &id));
        }
        if k != last {
            ev.push((
                t + d,
                envelope("finish-task", "4.0", json!({"time": t + d, "exit_status": 1, "origin": origin(&id)})),
            ));
        }
        last_task_id = id;
        t += d;
    }
    if !complete {
        let shown = ev.iter().take_while(|(time, _)| *time <= now).count();
        ev.truncate(shown);
        return (ev.into_iter().map(|(_, v)| v).collect(), false);
    }
    let end = b.end_time.unwrap_or(now);
    match b.status {
        BuildStatus::Succeeded | BuildStatus::Failed => {
            let exit = if b.status == BuildStatus::Succeeded { 0 } else { 1 };
            ev.push((
                end,
                envelope(
                    "finish-task",
                    "4.0",
                    json!({"time": end, "exit_status": exit, "origin": origin(&last_task_id)}),
                ),
            ));
        }
        BuildStatus::Errored => {
            ev.push((end, envelope("error", "4.1", json!({"message": "task container exited unexpectedly", "origin": origin(&last_task_id), "time": end}))));
        }
        _ => {}
    }
    for o in &b.outputs {
        let Some(put) = l.puts.iter().find(|p| p.0 == o.name) else { continue };
        ev.push((end, envelope("initialize-put", "2.0", json!({"origin": origin(&put.4), "time": end}))));
        ev.push((end, envelope("start-put", "1.0", json!({"origin": origin(&put.4), "time": end}))));
        let mut data = json!({"origin": origin(&put.4), "time": end, "exit_status": 0, "version": {}});
        if let Some(v) = c.version(o.version) {
            data["version"] = json!(v.version);
            if v.metadata_visible && !v.metadata.is_empty() {
                data["metadata"] =
                    json!(v.metadata.iter().map(|(k, val)| json!({"name": k, "value": val})).collect::<Vec<_>>());
            }
        }
        ev.push((end, envelope("finish-put", "5.1", data)));
    }
    ev.push((end, envelope("status", "1.0", json!({"status": b.status.as_str(), "time": end}))));
    (ev.into_iter().map(|(_, v)| v).collect(), true)
}

/// One SSE event as vito/go-sse writes it.
fn sse_event(id: usize, data: &Value) -> String {
    format!("id: {id}\nevent: event\ndata: {data}\n\n")
}

fn sse_end(id: usize) -> String {
    format!("id: {id}\nevent: end\ndata\n\n")
}

// ================================================================ handlers: O routes

/// GET /api/v1/info (infoserver/info.go).
async fn info(State(sim): State<Arc<Sim>>, headers: HeaderMap) -> Response {
    let base = sim.base_url();
    api(&sim, &headers, |w, acc| {
        acc.check_if_provided()?;
        let c = &w.concourse;
        let mut o = json!({
            "version": c.version,
            "worker_version": WORKER_VERSION,
            "feature_flags": {"global_resources": false, "build_rerun": false, "cache_streamed_volumes": false, "resource_causality": false},
            "external_url": base,
        });
        if !c.cluster_name.is_empty() {
            o["cluster_name"] = json!(c.cluster_name);
        }
        Ok(json_ok(&o))
    })
}

/// GET /api/v1/teams (teamserver/list.go): only teams the caller is authorized on.
async fn list_teams(State(sim): State<Arc<Sim>>, headers: HeaderMap) -> Response {
    api(&sim, &headers, |w, acc| {
        acc.check_if_provided()?;
        let c = &w.concourse;
        let owners: Vec<String> = c.users.keys().filter(|u| *u == "admin").map(|u| format!("local:{u}")).collect();
        let viewers: Vec<String> = c.users.keys().filter(|u| *u != "admin").map(|u| format!("local:{u}")).collect();
        let teams: Vec<Value> = c
            .teams
            .iter()
            .filter(|t| acc.authorized(&t.name))
            .map(|t| {
                let mut auth = serde_json::Map::new();
                if !owners.is_empty() {
                    auth.insert("owner".into(), json!({"users": owners, "groups": []}));
                }
                if !viewers.is_empty() {
                    auth.insert("viewer".into(), json!({"users": viewers, "groups": []}));
                }
                json!({"id": t.id, "name": t.name, "auth": auth})
            })
            .collect();
        Ok(json_ok(&Value::Array(teams)))
    })
}

/// GET /api/v1/pipelines (pipelineserver/list_all.go): visible pipelines of all teams.
async fn list_all_pipelines(State(sim): State<Arc<Sim>>, headers: HeaderMap) -> Response {
    api(&sim, &headers, |w, acc| {
        acc.check_if_provided()?;
        let set_at = pipelines_set_at(w);
        let mut ps: Vec<&Pipeline> = w.concourse.pipelines.iter().filter(|p| visible(acc, p)).collect();
        ps.sort_by(|a, b| (a.team.as_str(), a.id).cmp(&(b.team.as_str(), b.id)));
        Ok(json_ok(&Value::Array(ps.into_iter().map(|p| pipeline_json(p, set_at)).collect())))
    })
}

/// GET /api/v1/teams/:team/pipelines (pipelineserver/list.go): all of them when authorized,
/// else the public ones.
async fn list_pipelines(State(sim): State<Arc<Sim>>, headers: HeaderMap, Path(team): Path<String>) -> Response {
    api(&sim, &headers, |w, acc| {
        acc.check_if_provided()?;
        if !w.concourse.teams.iter().any(|t| t.name == team) {
            return Err(status(StatusCode::NOT_FOUND));
        }
        let set_at = pipelines_set_at(w);
        let ps: Vec<Value> = w
            .concourse
            .pipelines
            .iter()
            .filter(|p| p.team == team && !p.removed && (p.public || acc.authorized(&team)))
            .map(|p| pipeline_json(p, set_at))
            .collect();
        Ok(json_ok(&Value::Array(ps)))
    })
}

/// GET /api/v1/jobs (jobserver/list_all.go): JobSummary of every visible job, by job id.
async fn list_all_jobs(State(sim): State<Arc<Sim>>, headers: HeaderMap) -> Response {
    api(&sim, &headers, |w, acc| {
        acc.check_if_provided()?;
        let c = &w.concourse;
        let mut jobs: Vec<(i64, Value)> = c
            .pipelines
            .iter()
            .filter(|p| visible(acc, p))
            .flat_map(|p| p.jobs.iter().map(move |j| (j.id, job_summary_json(c, p, j))))
            .collect();
        jobs.sort_by_key(|(id, _)| *id);
        Ok(json_ok(&Value::Array(jobs.into_iter().map(|(_, v)| v).collect())))
    })
}

/// GET /api/v1/builds (buildserver/list.go): visible builds, paginated; a bad range is a 500.
async fn list_builds(State(sim): State<Arc<Sim>>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    let base = sim.base_url();
    let q = Query::parse(raw.as_deref());
    api(&sim, &headers, |w, acc| {
        acc.check_if_provided()?;
        let c = &w.concourse;
        let all: Vec<&Build> =
            c.builds.iter().filter(|b| c.pipelines.get(b.pipeline).is_some_and(|p| visible(acc, p))).collect();
        build_list_response(c, &all, &q, &base, "/api/v1/builds", StatusCode::INTERNAL_SERVER_ERROR)
    })
}

/// GET /api/v1/teams/:team/builds (teamserver/list_builds.go, db/team.go `Builds`): every build
/// of the team's pipelines, every job, paginated like the other lists. Authentication only (the
/// v8.2.5 wrappa); an unknown team and a bad range are 404s.
async fn list_team_builds(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(team): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let base = sim.base_url();
    let q = Query::parse(raw.as_deref());
    api(&sim, &headers, |w, acc| {
        if !acc.authenticated() {
            return Err(Reject::Unauthorized);
        }
        let c = &w.concourse;
        if !c.teams.iter().any(|t| t.name == team) {
            return Err(status(StatusCode::NOT_FOUND));
        }
        let all: Vec<&Build> = c
            .builds
            .iter()
            .filter(|b| c.pipelines.get(b.pipeline).is_some_and(|p| p.team == team && !p.removed))
            .collect();
        build_list_response(c, &all, &q, &base, &format!("/api/v1/teams/{team}/builds"), StatusCode::NOT_FOUND)
    })
}

/// GET /api/v1/resources (resourceserver/list_all.go).
async fn list_all_resources(State(sim): State<Arc<Sim>>, headers: HeaderMap) -> Response {
    api(&sim, &headers, |w, acc| {
        acc.check_if_provided()?;
        let rs: Vec<Value> = w
            .concourse
            .pipelines
            .iter()
            .filter(|p| visible(acc, p))
            .flat_map(|p| p.resources.iter().map(move |r| resource_json(p, r, w.now)))
            .collect();
        Ok(json_ok(&Value::Array(rs)))
    })
}

// ================================================================ handlers: B routes

/// GET /api/v1/builds/:id (buildserver/get.go), B.
async fn get_build(State(sim): State<Arc<Sim>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    api(&sim, &headers, |w, acc| {
        let b = build_access(&w.concourse, acc, &id, false)?;
        Ok(json_ok(&build_json(&w.concourse, b)))
    })
}

/// GET /api/v1/builds/:id/resources (buildserver/resources.go), B. Inputs appear once adopted.
async fn build_resources(State(sim): State<Arc<Sim>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    api(&sim, &headers, |w, acc| {
        let b = build_access(&w.concourse, acc, &id, false)?;
        Ok(json_ok(&build_resources_json(&w.concourse, b)))
    })
}

/// GET /api/v1/builds/:id/plan (buildserver/plan.go), BJ: 404 until the build has a plan.
async fn build_plan(State(sim): State<Arc<Sim>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    api(&sim, &headers, |w, acc| {
        let b = build_access(&w.concourse, acc, &id, true)?;
        if b.start_time.is_none() {
            return Err(status(StatusCode::NOT_FOUND));
        }
        build_plan_json(&w.concourse, b).map(|v| json_ok(&v)).ok_or_else(|| status(StatusCode::NOT_FOUND))
    })
}

/// GET /api/v1/builds/:id/events (buildserver/eventhandler.go), BJ. Server-sent events;
/// `Last-Event-ID: n` resumes at n+1. A running build's stream stays open, polling the world,
/// until the build finishes. After `end` this handler closes the stream, where a real ATC waits
/// for the client to hang up.
async fn build_events(State(sim): State<Arc<Sim>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let sim2 = sim.clone();
    // Go's Header.Get: an absent or empty header means "from the start".
    let last_id =
        headers.get("last-event-id").map(|v| v.to_str().unwrap_or("invalid").to_string()).filter(|s| !s.is_empty());
    api(&sim, &headers, move |w, acc| {
        let b = build_access(&w.concourse, acc, &id, true)?;
        let start = match last_id {
            None => 0,
            Some(s) => usize::try_from(s.parse::<u64>().map_err(|_| status(StatusCode::BAD_REQUEST))?)
                .unwrap_or(usize::MAX)
                .saturating_add(1),
        };
        let state = EventStream { sim: sim2, build: b.id, next: start, done: false };
        let stream = futures_util::stream::unfold(state, next_events);
        let mut resp = Response::new(Body::from_stream(stream));
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream; charset=utf-8"));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache, no-store, must-revalidate"));
        h.insert("x-accel-buffering", HeaderValue::from_static("no"));
        h.insert("x-atc-stream-version", HeaderValue::from_static("2.0"));
        Ok(resp)
    })
}

struct EventStream {
    sim: Arc<Sim>,
    build: BuildId,
    next: usize,
    done: bool,
}

async fn next_events(mut st: EventStream) -> Option<(Result<Bytes, Infallible>, EventStream)> {
    if st.done {
        return None;
    }
    loop {
        let (chunk, complete) = {
            let w = st.sim.world();
            let b = w.concourse.build(st.build)?;
            let (events, complete) = build_event_list(&w.concourse, b, w.now);
            let mut out = String::new();
            for (i, e) in events.iter().enumerate().skip(st.next) {
                out.push_str(&sse_event(i, e));
            }
            st.next = st.next.max(events.len());
            if complete {
                out.push_str(&sse_end(st.next));
            }
            (out, complete)
        };
        if complete {
            st.done = true;
        }
        if !chunk.is_empty() {
            return Some((Ok(Bytes::from(chunk)), st));
        }
        tokio::time::sleep(EVENT_POLL).await;
    }
}

// ================================================================ handlers: P and A routes

/// GET /api/v1/teams/:team/pipelines/:pipeline (pipelineserver/get.go), P.
async fn get_pipeline(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path((team, pipeline)): Path<(String, String)>,
) -> Response {
    api(&sim, &headers, |w, acc| {
        let p = pipeline_access(&w.concourse, acc, &team, &pipeline)?;
        Ok(json_ok(&pipeline_json(p, pipelines_set_at(w))))
    })
}

/// GET .../config (configserver/get.go), A: authorization is checked before the lookup.
async fn get_config(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path((team, pipeline)): Path<(String, String)>,
) -> Response {
    api(&sim, &headers, |w, acc| {
        if !acc.authenticated() {
            return Err(Reject::Unauthorized);
        }
        if !acc.authorized(&team) {
            return Err(Reject::Forbidden);
        }
        let c = &w.concourse;
        if !c.teams.iter().any(|t| t.name == team) {
            return Err(status(StatusCode::NOT_FOUND));
        }
        let p = c
            .pipeline_by_name(&team, &pipeline)
            .and_then(|i| c.pipelines.get(i))
            .ok_or_else(|| status(StatusCode::NOT_FOUND))?;
        let mut resp = json_ok(&json!({"config": p.config}));
        // The pipeline was set once and never changed.
        resp.headers_mut().insert("x-concourse-config-version", HeaderValue::from_static("1"));
        Ok(resp)
    })
}

/// GET .../jobs (jobserver/list.go), P: JobSummary.
async fn list_jobs(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path((team, pipeline)): Path<(String, String)>,
) -> Response {
    api(&sim, &headers, |w, acc| {
        let c = &w.concourse;
        let p = pipeline_access(c, acc, &team, &pipeline)?;
        let mut jobs: Vec<&Job> = p.jobs.iter().collect();
        jobs.sort_by_key(|j| j.id);
        Ok(json_ok(&Value::Array(jobs.into_iter().map(|j| job_summary_json(c, p, j)).collect())))
    })
}

fn find_job<'a>(p: &'a Pipeline, job: &str) -> Result<&'a Job, Reject> {
    p.job_by_name(job).and_then(|j| p.jobs.get(j)).ok_or_else(|| status(StatusCode::NOT_FOUND))
}

/// GET .../jobs/:job (jobserver/get.go), P: atc.Job.
async fn get_job(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path((team, pipeline, job)): Path<(String, String, String)>,
) -> Response {
    api(&sim, &headers, |w, acc| {
        let c = &w.concourse;
        let p = pipeline_access(c, acc, &team, &pipeline)?;
        Ok(json_ok(&job_json(c, p, find_job(p, &job)?)))
    })
}

/// GET .../jobs/:job/builds (jobserver/list_builds.go), P.
async fn list_job_builds(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path((team, pipeline, job)): Path<(String, String, String)>,
    RawQuery(raw): RawQuery,
) -> Response {
    let base = sim.base_url();
    let q = Query::parse(raw.as_deref());
    api(&sim, &headers, |w, acc| {
        let c = &w.concourse;
        let p = pipeline_access(c, acc, &team, &pipeline)?;
        let j = find_job(p, &job)?;
        let all: Vec<&Build> = j.builds.iter().filter_map(|id| c.build(*id)).collect();
        let path = format!("/api/v1/teams/{team}/pipelines/{}/jobs/{job}/builds", p.name);
        build_list_response(c, &all, &q, &base, &path, StatusCode::NOT_FOUND)
    })
}

/// GET .../jobs/:job/builds/:build_name (jobserver/get_build.go), P; `latest` is the highest id.
async fn get_job_build(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path((team, pipeline, job, name)): Path<(String, String, String, String)>,
) -> Response {
    api(&sim, &headers, |w, acc| {
        let c = &w.concourse;
        let p = pipeline_access(c, acc, &team, &pipeline)?;
        let j = find_job(p, &job)?;
        let builds = j.builds.iter().filter_map(|id| c.build(*id));
        let mut builds = builds;
        let b = if name == "latest" { builds.max_by_key(|b| b.id) } else { builds.find(|b| b.name == name) };
        b.map(|b| json_ok(&build_json(c, b))).ok_or_else(|| status(StatusCode::NOT_FOUND))
    })
}

/// GET .../pipelines/:pipeline/builds (pipelineserver/list_builds.go), P.
async fn list_pipeline_builds(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path((team, pipeline)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Response {
    let base = sim.base_url();
    let q = Query::parse(raw.as_deref());
    api(&sim, &headers, |w, acc| {
        let c = &w.concourse;
        let p = pipeline_access(c, acc, &team, &pipeline)?;
        let all: Vec<&Build> = p.jobs.iter().flat_map(|j| j.builds.iter()).filter_map(|id| c.build(*id)).collect();
        let path = format!("/api/v1/teams/{team}/pipelines/{}/builds", p.name);
        build_list_response(c, &all, &q, &base, &path, StatusCode::NOT_FOUND)
    })
}

/// GET .../resources (resourceserver/list.go), P: by name.
async fn list_resources(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path((team, pipeline)): Path<(String, String)>,
) -> Response {
    api(&sim, &headers, |w, acc| {
        let p = pipeline_access(&w.concourse, acc, &team, &pipeline)?;
        let mut rs: Vec<&Resource> = p.resources.iter().collect();
        rs.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(json_ok(&Value::Array(rs.into_iter().map(|r| resource_json(p, r, w.now)).collect())))
    })
}

fn find_resource<'a>(p: &'a Pipeline, name: &str) -> Result<(usize, &'a Resource), Reject> {
    p.resource_by_name(name)
        .and_then(|i| p.resources.get(i).map(|r| (i, r)))
        .ok_or_else(|| status(StatusCode::NOT_FOUND))
}

/// GET .../resources/:resource (resourceserver/get.go), P.
async fn get_resource(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path((team, pipeline, resource)): Path<(String, String, String)>,
) -> Response {
    api(&sim, &headers, |w, acc| {
        let p = pipeline_access(&w.concourse, acc, &team, &pipeline)?;
        let (_, r) = find_resource(p, &resource)?;
        Ok(json_ok(&resource_json(p, r, w.now)))
    })
}

/// Each resource's versions by `(key, value)` pair, in the resource's order (oldest check order
/// first): the versions a filter can match without looking at every version (a year of lana's
/// git resource has thousands). A version's fields never change once saved and a resource's
/// list only grows, so the index catches up with what was appended since; a list that does
/// not start as indexed (another world) is indexed again.
#[derive(Default)]
pub struct VersionIndex {
    resources: HashMap<(i64, usize), ResourceIndex>,
}

#[derive(Default)]
struct ResourceIndex {
    /// The version ids indexed: a prefix of the resource's list.
    ids: Vec<VersionId>,
    by_pair: HashMap<(String, String), Vec<VersionId>>,
}

impl VersionIndex {
    /// The ids of the versions of resource `ri` of pipeline `p` (`r`) having every pair of
    /// `filter` (not empty), in the resource's order.
    fn matching(
        &mut self,
        c: &Concourse,
        p: &Pipeline,
        ri: usize,
        filter: &BTreeMap<String, String>,
    ) -> Vec<VersionId> {
        let Some(r) = p.resources.get(ri) else { return vec![] };
        let ix = self.resources.entry((p.id, ri)).or_default();
        if ix.ids.len() > r.versions.len() || r.versions[..ix.ids.len()] != ix.ids[..] {
            *ix = ResourceIndex::default();
        }
        for id in r.versions[ix.ids.len()..].iter().copied() {
            if let Some(v) = c.version(id) {
                for (k, val) in &v.version {
                    ix.by_pair.entry((k.clone(), val.clone())).or_default().push(id);
                }
            }
            ix.ids.push(id);
        }
        let mut lists = vec![];
        for (k, v) in filter {
            match ix.by_pair.get(&(k.clone(), v.clone())) {
                Some(l) => lists.push(l),
                None => return vec![],
            }
        }
        lists.sort_by_key(|l| l.len());
        let Some((first, rest)) = lists.split_first() else { return vec![] };
        let rest: Vec<HashSet<VersionId>> = rest.iter().map(|l| l.iter().copied().collect()).collect();
        first.iter().copied().filter(|id| rest.iter().all(|s| s.contains(id))).collect()
    }
}

/// db/resource.go `Versions`: `from` wins over `to`; bounds are version ids compared by
/// check order; the filter is JSONB containment; pagination ignores the filter. A negative
/// limit is a Postgres error (500). `matching`: the ids the filter matches, from the
/// [`VersionIndex`] (`None`: no filter, every version).
fn paginate_versions<'a>(
    c: &'a Concourse,
    r: &Resource,
    matching: Option<Vec<VersionId>>,
    page: Page,
) -> Result<(Vec<&'a ResourceVersion>, Pagination), StatusCode> {
    if page.limit < 0 {
        return Err(StatusCode::INTERNAL_SERVER_ERROR);
    }
    let all: Vec<&ResourceVersion> = r.versions.iter().filter_map(|id| c.version(*id)).collect();
    let matched: Vec<&ResourceVersion> = match matching {
        Some(ids) => ids.iter().filter_map(|id| c.version(*id)).collect(),
        None => all.clone(),
    };
    let matching = matched.into_iter();
    let bound = |id: i64| c.version(id).map(|v| v.check_order);
    let limit = page.take();
    let mut sel: Vec<&ResourceVersion> = if let Some(from) = page.from {
        let mut s: Vec<&ResourceVersion> = match bound(from) {
            Some(co) => matching.filter(|v| v.check_order >= co).collect(),
            None => vec![],
        };
        s.sort_by_key(|v| v.check_order);
        s.truncate(limit);
        s
    } else if let Some(to) = page.to {
        match bound(to) {
            Some(co) => matching.filter(|v| v.check_order <= co).collect(),
            None => vec![],
        }
    } else {
        matching.collect()
    };
    sel.sort_by_key(|v| std::cmp::Reverse(v.check_order));
    sel.truncate(limit);
    let (Some(newest), Some(oldest)) = (sel.first(), sel.last()) else { return Ok((sel, Pagination::default())) };
    let older_to =
        all.iter().filter(|v| v.check_order < oldest.check_order).max_by_key(|v| v.check_order).map(|v| v.id);
    let newer_from =
        all.iter().filter(|v| v.check_order > newest.check_order).min_by_key(|v| v.check_order).map(|v| v.id);
    Ok((sel, Pagination { older_to, newer_from }))
}

/// GET .../resources/:resource/versions (versionserver/list.go), P.
async fn list_versions(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path((team, pipeline, resource)): Path<(String, String, String)>,
    RawQuery(raw): RawQuery,
) -> Response {
    let base = sim.base_url();
    let q = Query::parse(raw.as_deref());
    api(&sim, &headers, |w, acc| {
        let c = &w.concourse;
        let p = pipeline_access(c, acc, &team, &pipeline)?;
        let (ri, r) = find_resource(p, &resource)?;
        let mut filter = BTreeMap::new();
        for f in q.all("filter") {
            if let Some((k, v)) = f.split_once(':') {
                filter.insert(k.to_string(), v.to_string());
            }
        }
        let page = Page::of(&q);
        let matching = (!filter.is_empty()).then(|| sim.version_index().matching(c, p, ri, &filter));
        let (versions, pg) = paginate_versions(c, r, matching, page).map_err(status)?;
        let show = r.public || acc.authorized(&team);
        let body: Vec<Value> = versions.iter().map(|v| version_json(v, show)).collect();
        let mut resp = json_ok(&Value::Array(body));
        let path = format!("/api/v1/teams/{team}/pipelines/{}/resources/{resource}/versions", p.name);
        add_links(&mut resp, &link_headers(&base, &path, pg, page.limit));
        Ok(resp)
    })
}

/// GET .../versions/:id (versionserver/get.go), P. The real handler looks the id up across
/// the whole database, ignoring the resource in the path, and never hides metadata.
async fn get_version(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path((team, pipeline, _resource, version_id)): Path<(String, String, String, String)>,
) -> Response {
    api(&sim, &headers, |w, acc| {
        let c = &w.concourse;
        pipeline_access(c, acc, &team, &pipeline)?;
        let id: i64 = version_id.parse().map_err(|_| status(StatusCode::BAD_REQUEST))?;
        let v = c.version(id).ok_or_else(|| status(StatusCode::NOT_FOUND))?;
        Ok(json_ok(&version_json(v, true)))
    })
}

/// Builds of the pipeline whose adopted inputs (or outputs) include this version of this
/// resource, by id (the SQL has no ORDER BY).
fn builds_with_version(c: &Concourse, p: &Pipeline, r: usize, version: i64, as_output: bool) -> Vec<Value> {
    let mut builds: Vec<&Build> = p
        .jobs
        .iter()
        .flat_map(|j| j.builds.iter())
        .filter_map(|id| c.build(*id))
        .filter(|b| {
            if as_output {
                b.outputs.iter().any(|o| o.resource == r && o.version == version)
            } else {
                b.inputs.iter().any(|i| i.resource == r && i.version == version)
            }
        })
        .collect();
    builds.sort_by_key(|b| b.id);
    builds.into_iter().map(|b| build_json(c, b)).collect()
}

async fn version_builds(
    sim: Arc<Sim>,
    headers: HeaderMap,
    (team, pipeline, resource, version_id): (String, String, String, String),
    as_output: bool,
) -> Response {
    api(&sim, &headers, |w, acc| {
        let c = &w.concourse;
        let p = pipeline_access(c, acc, &team, &pipeline)?;
        let (ri, _) = find_resource(p, &resource)?;
        Ok(json_ok(&Value::Array(builds_with_version(c, p, ri, atoi(&version_id), as_output))))
    })
}

/// GET .../versions/:id/input_to (versionserver/input_to.go), P.
async fn version_input_to(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(path): Path<(String, String, String, String)>,
) -> Response {
    version_builds(sim, headers, path, false).await
}

/// GET .../versions/:id/output_of (versionserver/output_of.go), P.
async fn version_output_of(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(path): Path<(String, String, String, String)>,
) -> Response {
    version_builds(sim, headers, path, true).await
}

// ================================================================ token endpoint

#[derive(Serialize)]
struct TokenResponse {
    access_token: String,
    token_type: &'static str,
    expires_in: i64,
    id_token: String,
}

/// Dex's `tokenErrHelper` body.
fn token_error(code: StatusCode, error: &str, description: &str) -> Response {
    let mut body = json!({"error": error});
    if !description.is_empty() {
        body["error_description"] = json!(description);
    }
    (code, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// Client credentials: HTTP Basic (url-unescaped, as Dex does) or the form's client_id/secret.
fn client_credentials(headers: &HeaderMap, form: &[(String, String)]) -> (String, String) {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| {
            h.split_once(' ').filter(|(s, _)| s.eq_ignore_ascii_case("basic")).map(|(_, v)| v.trim().to_string())
        })
        .and_then(|b64| STANDARD.decode(b64).ok())
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|s| s.split_once(':').map(|(i, p)| (percent_decode(i), percent_decode(p))));
    basic.unwrap_or_else(|| {
        let get = |k: &str| form.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone()).unwrap_or_default();
        (get("client_id"), get("client_secret"))
    })
}

/// Mint an opaque access token like skymarshal/token `Factory.GenerateAccessToken`: raw-std
/// base64 of 20 "random" bytes and the little-endian expiry. The bytes are a hash of a
/// counter, so a simulation is reproducible.
fn mint_access_token(c: &Concourse, user: &str, now: i64, expiry: i64) -> String {
    let mut n = c.tokens.len() as u64;
    loop {
        let digest = Sha256::digest(format!("deploy-journey-sim access token\0{n}\0{user}\0{now}").as_bytes());
        let mut raw = [0u8; 28];
        raw[..20].copy_from_slice(&digest[..20]);
        raw[20..].copy_from_slice(&(expiry as u64).to_le_bytes());
        let token = STANDARD_NO_PAD.encode(raw);
        if !c.tokens.contains_key(&token) {
            return token;
        }
        n += 1;
    }
}

/// An RS256-looking ID token with Dex's claims (not verifiable; nothing here verifies it).
fn id_token(issuer: &str, user: &str, now: i64, expiry: i64) -> String {
    let header = json!({"alg": "RS256", "kid": hex::encode(&Sha256::digest(issuer.as_bytes())[..20])});
    let claims = json!({
        "iss": format!("{issuer}/sky/issuer"),
        // Dex's subject: a protobuf of (user id, connector id).
        "sub": URL_SAFE_NO_PAD.encode([&[0x0a, user.len() as u8][..], user.as_bytes(), b"\x12\x05local"].concat()),
        "aud": FLY_CLIENT_ID,
        "exp": expiry,
        "iat": now,
        "email": user,
        "email_verified": true,
        "name": user,
        "preferred_username": user,
        "federated_claims": {"connector_id": "local", "user_id": user},
    });
    let claims_text = claims.to_string();
    let mut sig = vec![];
    for k in 0u8..8 {
        sig.extend_from_slice(&Sha256::digest([claims_text.as_bytes(), &[k][..]].concat()));
    }
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims_text),
        URL_SAFE_NO_PAD.encode(sig)
    )
}

/// Dex answers any other method on its token endpoint with a 400.
async fn token_wrong_method() -> Response {
    token_error(StatusCode::BAD_REQUEST, "invalid_request", "method not allowed")
}

/// POST /sky/issuer/token: Dex's password grant (server/handlers.go `handleToken`,
/// `withClientFromStorage`, `handlePasswordGrant`) behind skymarshal's `StoreAccessToken`,
/// which swaps Dex's access token for an opaque one stored in the database.
async fn token(State(sim): State<Arc<Sim>>, headers: HeaderMap, RawQuery(raw): RawQuery, body: Bytes) -> Response {
    let mut form = parse_form(&String::from_utf8_lossy(&body));
    let post = |k: &str| form.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone()).unwrap_or_default();
    if post("grant_type") != "password" {
        return token_error(StatusCode::BAD_REQUEST, "unsupported_grant_type", "");
    }
    // r.Form also holds the query string, after the body's values.
    form.extend(parse_form(raw.as_deref().unwrap_or("")));
    let value = |k: &str| form.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone()).unwrap_or_default();
    let (client_id, client_secret) = client_credentials(&headers, &form);
    if client_id != FLY_CLIENT_ID || client_secret != FLY_CLIENT_SECRET {
        return token_error(StatusCode::UNAUTHORIZED, "invalid_client", "Invalid client credentials.");
    }
    let scope = value("scope");
    let scopes: Vec<&str> = scope.split_whitespace().collect();
    let unrecognized: Vec<String> = scopes
        .iter()
        .filter(|s| !matches!(**s, "openid" | "offline_access" | "email" | "profile" | "groups" | "federated:id"))
        .map(|s| format!("{s:?}"))
        .collect();
    if !scopes.contains(&"openid") {
        return token_error(StatusCode::BAD_REQUEST, "invalid_request", r#"Missing required scope(s) ["openid"]."#);
    }
    if !unrecognized.is_empty() {
        return token_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!("Unrecognized scope(s) [{}]", unrecognized.join(" ")),
        );
    }
    let (username, password) = (value("username"), value("password"));
    let base = sim.base_url();
    let mut w = sim.world();
    let now = w.now;
    let c = &mut w.concourse;
    if username.is_empty() || c.users.get(&username) != Some(&password) {
        return token_error(StatusCode::UNAUTHORIZED, "access_denied", "Invalid username or password");
    }
    let expiry = now + c.token_lifetime;
    let access_token = mint_access_token(c, &username, now, expiry);
    c.tokens.insert(access_token.clone(), (username.clone(), expiry));
    let body = TokenResponse {
        access_token,
        token_type: "bearer",
        expires_in: c.token_lifetime,
        id_token: id_token(&base, &username, now, expiry),
    };
    let text = serde_json::to_string(&body).unwrap_or_default();
    (
        [(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-store"), (header::PRAGMA, "no-cache")],
        text,
    )
        .into_response()
}

// ================================================================ unit tests

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::model::{BuildInput, BuildOutput, JobInput, JobOutput, Team};

    fn build(id: i64, name: &str, status: BuildStatus, start: Option<i64>, end: Option<i64>) -> Build {
        Build {
            id,
            pipeline: 0,
            job: 0,
            name: name.into(),
            status,
            create_time: 1_000,
            start_time: start,
            end_time: end,
            rerun_of: None,
            rerun_number: None,
            created_by: None,
            inputs: vec![],
            outputs: vec![],
            log: vec![],
            plan: None,
        }
    }

    fn world(builds: Vec<Build>) -> Concourse {
        let job = Job {
            id: 7,
            name: "unit".into(),
            serial: true,
            public: true,
            inputs: vec![JobInput { name: "src".into(), resource: 0, trigger: true, passed: vec![] }],
            outputs: vec![JobOutput { name: "img".into(), resource: 1 }],
            groups: vec![],
            builds: builds.iter().map(|b| b.id).collect(),
            next_build_number: 1,
            paused: false,
        };
        let res = |n: &str, t: &str| Resource {
            name: n.into(),
            type_name: t.into(),
            public: false,
            last_checked: None,
            pinned: None,
            versions: vec![],
        };
        let p = Pipeline {
            id: 3,
            name: "app".into(),
            team: "main".into(),
            public: false,
            paused: false,
            removed: false,
            resources: vec![res("src", "git"), res("img", "registry-image")],
            jobs: vec![job],
            groups: vec![],
            config: json!({"jobs": [{"name": "unit", "plan": [{"task": "test", "attempts": 2}]}]}),
        };
        Concourse {
            version: "8.2.5".into(),
            teams: vec![Team { id: 1, name: "main".into() }],
            pipelines: vec![p],
            builds,
            ..Default::default()
        }
    }

    #[test]
    fn build_json_omits_unset_fields_and_relative_api_url() {
        let c = world(vec![build(1, "1", BuildStatus::Pending, None, None)]);
        let v = build_json(&c, &c.builds[0]);
        assert_eq!(v["api_url"], "/api/v1/builds/1");
        for k in ["start_time", "end_time", "rerun_of", "rerun_number", "created_by", "comment", "reap_time"] {
            assert!(v.get(k).is_none(), "{k} in {v}");
        }
        assert_eq!(v["job_name"], "unit");
    }

    #[test]
    fn rerun_json_names_its_original() {
        let mut r = build(2, "1.1", BuildStatus::Started, Some(50), None);
        r.rerun_of = Some(1);
        r.rerun_number = Some(1);
        r.created_by = Some("alice".into());
        let c = world(vec![build(1, "1", BuildStatus::Failed, Some(1), Some(9)), r]);
        let v = build_json(&c, &c.builds[1]);
        assert_eq!(v["rerun_of"], json!({"id": 1, "name": "1"}));
        assert_eq!(v["rerun_number"], 1);
        assert_eq!(v["created_by"], "alice");
    }

    #[test]
    fn summaries_show_go_zero_times_and_job_builds_follow_concourse() {
        let c = world(vec![
            build(1, "1", BuildStatus::Succeeded, Some(10), Some(20)),
            build(2, "2", BuildStatus::Failed, Some(30), Some(40)),
            build(3, "3", BuildStatus::Started, Some(50), None),
            build(4, "4", BuildStatus::Pending, None, None),
        ]);
        let s = job_summary_json(&c, &c.pipelines[0], &c.pipelines[0].jobs[0]);
        assert_eq!(s["next_build"]["id"], 3, "oldest running build");
        assert_eq!(s["next_build"]["end_time"], GO_ZERO_TIME);
        assert_eq!(s["finished_build"]["id"], 2);
        assert_eq!(s["transition_build"]["id"], 2);
        assert!(s["next_build"].get("api_url").is_none());
        assert_eq!(s["inputs"][0], json!({"name": "src", "resource": "src", "trigger": true}));
        let pending = build_summary_json(&c, &c.builds[3]);
        assert_eq!(pending["start_time"], GO_ZERO_TIME);
        let j = job_json(&c, &c.pipelines[0], &c.pipelines[0].jobs[0]);
        assert!(j.get("transition_build").is_none());
        assert_eq!(j["next_build"]["api_url"], "/api/v1/builds/3");
        assert_eq!(j["first_logged_build_id"], 1);
        let empty = world(vec![]);
        let j = job_json(&empty, &empty.pipelines[0], &empty.pipelines[0].jobs[0]);
        assert_eq!(j["next_build"], Value::Null);
        assert_eq!(j["finished_build"], Value::Null);
    }

    #[test]
    fn builds_sort_reruns_beside_their_original_and_link_neighbours() {
        let mut bs: Vec<Build> =
            (1..=10).map(|i| build(i, &i.to_string(), BuildStatus::Succeeded, Some(i), Some(i + 1))).collect();
        let mut r = build(11, "5.1", BuildStatus::Succeeded, Some(20), Some(21));
        r.rerun_of = Some(5);
        bs.push(r);
        let all: Vec<&Build> = bs.iter().collect();
        let ids = |p: Page| paginate_builds(&all, p).map(|(b, pg)| (b.iter().map(|b| b.id).collect::<Vec<_>>(), pg));
        let (got, _) = ids(Page { from: None, to: None, limit: 100 }).unwrap();
        assert_eq!(got, vec![10, 9, 8, 7, 6, 11, 5, 4, 3, 2, 1]);
        let (got, pg) = ids(Page { from: None, to: Some(7), limit: 2 }).unwrap();
        assert_eq!(got, vec![7, 6]);
        // The newer neighbour is the lowest id above 7 in COALESCE order: the rerun of 5 (id 11)
        // sorts before 8, so rel="previous" jumps to from=11 and skips 8..10, as Concourse does.
        assert_eq!(pg, Pagination { older_to: Some(5), newer_from: Some(11) });
        // A lone `from` gives the oldest builds at or above it (in COALESCE order), newest first.
        let (got, _) = ids(Page { from: Some(2), to: None, limit: 2 }).unwrap();
        assert_eq!(got, vec![3, 2]);
        // ...so the rerun of 5 (id 11) comes before 9 and 10, and shows first-sorted-last.
        let (got, _) = ids(Page { from: Some(8), to: None, limit: 2 }).unwrap();
        assert_eq!(got, vec![8, 11]);
        // `from` and `to` together stay in ascending order.
        let (got, _) = ids(Page { from: Some(2), to: Some(4), limit: 10 }).unwrap();
        assert_eq!(got, vec![2, 3, 4]);
        assert!(ids(Page { from: Some(5), to: Some(3), limit: 2 }).is_err());
    }

    /// The query errors of `getBuildsWithPagination` (404 or 500 in the handlers) and
    /// `strconv.Atoi`'s values, as data.
    #[test]
    fn build_queries_fail_where_concourse_s_do() {
        let bs: Vec<Build> = (1..=3).map(|i| build(i, &i.to_string(), BuildStatus::Succeeded, Some(i), None)).collect();
        let all: Vec<&Build> = bs.iter().collect();
        let check = |from: Option<i64>, to: Option<i64>, limit: i64, expect: Option<Vec<i64>>| {
            let got =
                paginate_builds(&all, Page { from, to, limit }).ok().map(|(b, _)| b.iter().map(|b| b.id).collect());
            assert_eq!(got, expect, "from={from:?} to={to:?} limit={limit}");
        };
        check(Some(1), Some(3), 100, Some(vec![1, 2, 3]));
        check(Some(3), Some(1), 100, None);
        check(Some(-1), None, 100, None);
        check(None, Some(-1), 100, None);
        check(Some(-5), Some(2), 100, None);
        check(None, None, -1, None);
        check(Some(i64::MAX), None, 100, Some(vec![]));
        assert!(builds_by_date(&all, Page { from: Some(-10), to: None, limit: 100 }).is_ok());
        assert!(builds_by_date(&all, Page { from: None, to: None, limit: -1 }).is_err());
        for (raw, n) in [("12", 12), ("+7", 7), ("-3", -3), ("x1", 0), ("", 0), ("99999999999999999999", i64::MAX)] {
            assert_eq!(atoi(raw), n, "{raw:?}");
        }
        assert_eq!(atoi("-99999999999999999999"), i64::MIN);
    }

    #[test]
    fn link_headers_match_the_fixture() {
        let l = link_headers(
            "https://ci.example.com",
            "/api/v1/teams/some-team/pipelines/some-pipeline/jobs/some-job/builds",
            Pagination { older_to: Some(2), newer_from: Some(4) },
            2,
        );
        assert_eq!(
            l[0],
            r#"<https://ci.example.com/api/v1/teams/some-team/pipelines/some-pipeline/jobs/some-job/builds?to=2&limit=2>; rel="next""#
        );
        assert_eq!(
            l[1],
            r#"<https://ci.example.com/api/v1/teams/some-team/pipelines/some-pipeline/jobs/some-job/builds?from=4&limit=2>; rel="previous""#
        );
    }

    #[test]
    fn resources_drop_inputs_that_were_also_put() {
        let mut c = world(vec![]);
        for (id, k) in [(1, "a"), (2, "b")] {
            c.versions.push(ResourceVersion {
                id,
                pipeline: 0,
                resource: 0,
                version: BTreeMap::from([("ref".to_string(), k.to_string())]),
                metadata: vec![("commit".into(), k.into())],
                metadata_visible: true,
                check_order: id,
                enabled: true,
                created_at: 0,
                carries: vec![],
            });
        }
        let mut b = build(1, "1", BuildStatus::Succeeded, Some(1), Some(2));
        b.inputs = vec![
            BuildInput { name: "src".into(), resource: 0, version: 1, first_occurrence: true },
            BuildInput { name: "other".into(), resource: 0, version: 2, first_occurrence: false },
        ];
        b.outputs = vec![BuildOutput { name: "src-tag".into(), resource: 0, version: 1 }];
        let v = build_resources_json(&c, &b);
        assert_eq!(
            v["inputs"],
            json!([{"name": "other", "version": {"ref": "b"}, "pipeline_id": 3, "first_occurrence": false}])
        );
        assert_eq!(v["outputs"], json!([{"name": "src-tag", "version": {"ref": "a"}}]));
        assert!(version_json(&c.versions[0], false).get("metadata").is_none());
        assert_eq!(version_json(&c.versions[0], true)["metadata"], json!([{"name": "commit", "value": "a"}]));
    }

    #[test]
    fn queries_decode_like_go() {
        let q = Query::parse(Some("filter=ref%3Aabc&filter=x:y+z&limit=abc&from="));
        assert_eq!(q.all("filter").collect::<Vec<_>>(), vec!["ref:abc", "x:y z"]);
        assert_eq!(Page::of(&q), Page { from: None, to: None, limit: 100 });
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn access_tokens_have_skymarshals_format() {
        let c = world(vec![]);
        let t = mint_access_token(&c, "alice", 100, 86_500);
        assert_eq!(t.len(), 38);
        let raw = STANDARD_NO_PAD.decode(&t).unwrap();
        assert_eq!(u64::from_le_bytes(raw[20..].try_into().unwrap()), 86_500);
        assert_eq!(t, mint_access_token(&c, "alice", 100, 86_500), "deterministic");
    }
}
