//! The HTTP surface: health, readiness and the JSON API over the latest derived journeys.
//! Handlers read a snapshot; none of them calls a CI API.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::core::journey::{Derived, Journey};
pub use crate::snapshot::{MetricsContext, Shared, Snapshot, WebhookContext};
use crate::store::EndedFilter;

pub fn routes(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(landing))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/webhooks/github", axum::routing::post(github_webhook))
        .route("/api/v1/journeys", get(list))
        .route("/api/v1/journeys/{sha}", get(one))
        .route("/journeys/{sha}", get(journey_page))
        .route("/api/v1/status", get(status))
        .route("/api/v1/deployments", get(deployments))
        .route("/api/v1/environments", get(environments))
        .with_state(shared)
}

/// The exporter's clock and poll interval, so `watch --from` and `report --from` measure time
/// as the exporter does (simulated time against the demo) and poll at its pace.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusJson {
    /// Unix seconds on the exporter's clock.
    pub now: i64,
    /// `system`, or `simulated` when the clock is measurably not the wall clock.
    pub clock: String,
    /// Clock seconds per real second, when simulated and measured over at least a second.
    pub speed: Option<f64>,
    /// Real seconds between polls.
    pub poll_interval_seconds: Option<f64>,
    pub ready: bool,
    pub version: String,
    /// Journeys derived in memory, and journeys held in the store (an environment lacks them;
    /// what the gauges count of them stays in memory): how the memory window works out.
    #[serde(default)]
    pub journeys_in_memory: usize,
    #[serde(default)]
    pub journeys_held: usize,
}

async fn status(State(s): State<Arc<Shared>>) -> Json<StatusJson> {
    let now = s.now();
    let snap = s.snapshot();
    let wall = crate::clock::unix_now();
    // Measured, not declared: the clock is whatever `serve` was given. Seconds are whole, so
    // the speed is known to ±1/elapsed.
    let speed = s.clock_origin.get().and_then(|(at, t0)| {
        let elapsed = at.elapsed().as_secs_f64();
        (elapsed >= 1.0).then(|| ((now - t0) as f64 / elapsed * 10.0).round() / 10.0)
    });
    let simulated = (now - wall).abs() > 2 || speed.is_some_and(|v| (v - 1.0).abs() > 0.5);
    Json(StatusJson {
        now,
        clock: if simulated { "simulated" } else { "system" }.to_string(),
        speed: speed.filter(|_| simulated),
        poll_interval_seconds: s.poll_interval.get().map(|d| d.as_secs_f64()),
        ready: s.is_ready(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        journeys_in_memory: snap.derived.journeys.len(),
        journeys_held: snap.derived.held.len(),
    })
}

async fn readyz(State(s): State<Arc<Shared>>) -> Response {
    // A store that cannot be written loses what is polled: not ready, whatever the sources say.
    if let Some(e) = s.store_error() {
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n")).into_response()
    } else if s.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: waiting for every source to answer once\n").into_response()
    }
}

/// A GitHub push webhook: verified with `X-Hub-Signature-256` (HMAC-SHA256 of the body, compared
/// in constant time); a push to the tracked branch wakes the poll loop. Nothing else is done
/// with the payload: the poll reads the branch through the API as usual.
async fn github_webhook(
    State(s): State<Arc<Shared>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    use hmac::Mac;
    let Some(ctx) = s.webhook.get() else {
        return (StatusCode::NOT_FOUND, "webhooks are not configured (repository.webhook_secret_file or _env)\n")
            .into_response();
    };
    let sig = headers.get("x-hub-signature-256").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("sha256="));
    let Some(sig) = sig.and_then(|h| hex::decode(h).ok()) else {
        return (StatusCode::UNAUTHORIZED, "missing or malformed X-Hub-Signature-256\n").into_response();
    };
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(ctx.secret.expose().as_bytes()) else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "webhook secret unusable\n").into_response();
    };
    mac.update(&body);
    if mac.verify_slice(&sig).is_err() {
        return (StatusCode::UNAUTHORIZED, "signature does not match\n").into_response();
    }
    // A verified delivery seen before is a replay (or GitHub's retry of one already handled):
    // by its id, and by its signature since the id header is not signed.
    let mut keys = vec![format!("sig:{}", hex::encode(&sig))];
    if let Some(id) = headers.get("x-github-delivery").and_then(|v| v.to_str().ok()) {
        keys.push(format!("id:{}", id.chars().take(128).collect::<String>()));
    }
    let fresh = s.deliveries.lock().unwrap_or_else(|e| e.into_inner()).first_time(&keys, std::time::Instant::now());
    if !fresh {
        return (StatusCode::OK, "delivery already handled; ignored\n").into_response();
    }
    let event = headers.get("x-github-event").and_then(|v| v.to_str().ok()).unwrap_or("");
    match event {
        "ping" => (StatusCode::OK, "pong\n").into_response(),
        "push" => {
            let r#ref = push_payload(&headers, &body).and_then(|v| v["ref"].as_str().map(str::to_string));
            if r#ref.as_deref() == Some(&format!("refs/heads/{}", ctx.branch)) {
                s.poll_now.notify_one();
                (StatusCode::ACCEPTED, "polling now\n").into_response()
            } else {
                (StatusCode::ACCEPTED, "not the tracked branch; ignored\n").into_response()
            }
        }
        _ => (StatusCode::ACCEPTED, "event ignored\n").into_response(),
    }
}

/// The JSON of a webhook delivery: the body itself, or its `payload=` field when the hook's
/// content type is "form" (`application/x-www-form-urlencoded`; the signature covers the raw body).
fn push_payload(headers: &axum::http::HeaderMap, body: &[u8]) -> Option<serde_json::Value> {
    let content_type = headers.get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if content_type.trim_start().to_ascii_lowercase().starts_with("application/x-www-form-urlencoded") {
        let payload = form_urlencoded::parse(body).find(|(k, _)| k == "payload")?.1;
        serde_json::from_str(&payload).ok()
    } else {
        serde_json::from_slice(body).ok()
    }
}

/// Classic text by default; OpenMetrics (with exemplars) when the scraper asks for it.
async fn metrics(State(s): State<Arc<Shared>>, headers: axum::http::HeaderMap) -> Response {
    if s.metrics.get().is_none() {
        return (StatusCode::SERVICE_UNAVAILABLE, "metrics not configured\n").into_response();
    }
    let accept = headers.get(axum::http::header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let om = accept.contains("application/openmetrics-text");
    let now = s.now();
    // Concurrent scrapes within the same second share one rendering (ages are in seconds).
    let lookup = || {
        let c = s.rendered.lock().unwrap_or_else(|e| e.into_inner());
        c.iter()
            // A Weak keeps its allocation: a replaced snapshot's address is never a new one's.
            .find(|(t, f, snap, _)| *t == now && *f == om && std::ptr::eq(snap.as_ptr(), Arc::as_ptr(&s.snapshot())))
            .map(|(_, _, _, b)| b.clone())
    };
    let mut cached = lookup();
    let _flight = if cached.is_none() {
        let g = s.render_flight.lock().await;
        // Another scrape may have rendered it while this one waited.
        cached = lookup();
        Some(g)
    } else {
        None
    };
    let body = match cached {
        Some(b) => b,
        None => {
            let shared = s.clone();
            // Rendering a long history takes milliseconds of CPU: keep it off the async workers.
            let rendered = tokio::task::spawn_blocking(move || {
                crate::memory::lean_thread();
                let ctx = shared.metrics.get()?;
                let snap = shared.snapshot();
                let sources = ctx.telemetry.snapshots();
                let input = crate::sinks::metrics::MetricsInput {
                    totals: snap.journey_totals.as_deref(),
                    baseline: &snap.baseline,
                    derived: &snap.derived,
                    stage_builds: &snap.stage_builds,
                    core: &ctx.core,
                    sources: &sources,
                    now,
                    poll_interval_secs: ctx.poll_interval_secs,
                    version: env!("CARGO_PKG_VERSION"),
                    spans: ctx.spans.as_ref().map(|s| s.counts()),
                    store_errors: shared.store_errors(),
                    auth_rejections: shared.basic_auth.get().map(|a| a.rejections()),
                };
                let body = if om {
                    crate::sinks::metrics::render_openmetrics(&input)
                } else {
                    crate::sinks::metrics::render_text(&input)
                };
                Some((snap, Arc::new(body)))
            })
            .await;
            let Ok(Some((snap, body))) = rendered else {
                return (StatusCode::INTERNAL_SERVER_ERROR, "rendering metrics failed\n").into_response();
            };
            let mut c = s.rendered.lock().unwrap_or_else(|e| e.into_inner());
            c.retain(|(t, f, _, _)| *t == now && *f != om);
            c.push((now, om, Arc::downgrade(&snap), body.clone()));
            body
        }
    };
    let ct = if om {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        "text/plain; version=0.0.4; charset=utf-8"
    };
    ([(axum::http::header::CONTENT_TYPE, ct)], body.as_str().to_owned()).into_response()
}

#[derive(Deserialize)]
struct ListQuery {
    state: Option<String>,
    limit: Option<usize>,
}

async fn list(State(s): State<Arc<Shared>>, Query(q): Query<ListQuery>) -> Response {
    let snap = s.snapshot();
    let (filter, settled): (fn(&Journey) -> bool, _) = match q.state.as_deref() {
        None | Some("all") => (|_| true, EndedFilter::All),
        Some("in_flight") => (|j| !j.ended, EndedFilter::NotEnded),
        Some("finished") => (|j| j.ended, EndedFilter::Ended),
        Some(other) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(serde_json::json!({"error": format!("state must be in_flight, finished or all, not {other:?}")})),
            )
                .into_response();
        }
    };
    let limit = q.limit.unwrap_or(100).min(10_000);
    // Newest first.
    let live: Vec<JourneyJson> = snap
        .derived
        .journeys
        .iter()
        .rev()
        .filter(|j| filter(j))
        .take(limit)
        .map(|j| JourneyJson::from(j, &snap))
        .collect();
    // With the settled ones, which left memory (some older journeys stay in memory beside them:
    // those a kept build refers to).
    let rows = match s.read_settled(move |st| st.settled_journeys(settled, limit)).await {
        Ok(rows) => rows,
        Err(e) => return store_unreadable(&e).into_response(),
    };
    let mut stored = vec![];
    for (sha, json) in rows.iter().filter(|(sha, _)| !snap.derived.journeys.iter().any(|j| j.sha == *sha)) {
        match settled_view::<JourneyJson>(sha, json) {
            Ok(v) => stored.push(v),
            Err(e) => return e.into_response(),
        }
    }
    let items = newest_first(live, stored, limit, |j| j.commit_time);
    // Each stage's running builds, whatever they carry (what a pending commit may wait for).
    let stages = stages_now_json(&snap.derived, snap.now);
    Json(serde_json::json!({ "now": snap.now, "journeys": items, "stages": stages })).into_response()
}

#[derive(Deserialize)]
struct DeploymentsQuery {
    environment: Option<String>,
    limit: Option<usize>,
}

/// The DORA environment (`dora.environment`); without the configuration, the last environment.
fn dora_environment(s: &Shared, snap: &Snapshot) -> String {
    s.metrics
        .get()
        .map(|m| m.core.dora.environment.clone())
        .or_else(|| snap.environments.last().cloned())
        .unwrap_or_default()
}

/// `GET /api/v1/deployments?environment=production&limit=100`: an environment's deployments,
/// newest first (default: the DORA environment).
async fn deployments(State(s): State<Arc<Shared>>, Query(q): Query<DeploymentsQuery>) -> Response {
    let snap = s.snapshot();
    let env = q.environment.unwrap_or_else(|| dora_environment(&s, &snap));
    if !snap.environments.contains(&env) {
        let known = snap.environments.join(", ");
        return (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"error": format!("unknown environment {env:?} (environments: {known})")})),
        )
            .into_response();
    }
    let limit = q.limit.unwrap_or(100).min(10_000);
    let all = &snap.derived.deployments;
    let live: Vec<crate::view::DeploymentView> = all
        .iter()
        .rev()
        .filter(|d| d.environment == env)
        .take(limit)
        .map(|d| crate::view::DeploymentView::new(d, all))
        .collect();
    // With the settled ones, which left memory (a kept deployment's predecessor stays beside
    // them, for what ran before it).
    let e = env.clone();
    let rows = match s.read_settled(move |st| st.settled_deployments(&e, limit)).await {
        Ok(rows) => rows,
        Err(e) => return store_unreadable(&e).into_response(),
    };
    let mut stored = vec![];
    for (id, json) in rows.iter().filter(|(id, _)| !all.iter().any(|d| d.build_id == *id)) {
        match settled_view::<crate::view::DeploymentView>(&format!("build {id}"), json) {
            Ok(v) => stored.push(v),
            Err(e) => return e.into_response(),
        }
    }
    let items = newest_first(live, stored, limit, |d| (d.end, d.build.id));
    Json(serde_json::json!({ "now": snap.now, "environment": env, "deployments": items })).into_response()
}

/// `GET /api/v1/environments`: every environment now, in stage order.
async fn environments(State(s): State<Arc<Shared>>) -> Response {
    let snap = s.snapshot();
    let dora = dora_environment(&s, &snap);
    let items: Vec<crate::view::EnvironmentView> = snap
        .derived
        .environments
        .iter()
        .map(|e| crate::view::EnvironmentView::new(e, &snap.derived.deployments, &dora, snap.now))
        .collect();
    Json(serde_json::json!({ "now": snap.now, "dora_environment": dora, "environments": items })).into_response()
}

async fn one(State(s): State<Arc<Shared>>, Path(sha): Path<String>) -> Response {
    let snap = s.snapshot();
    match find_any(&s, &snap, &sha).await {
        Ok(Found::Live(j)) => Json(JourneyJson::from(j, &snap)).into_response(),
        Ok(Found::Settled { view, .. }) => Json(view).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Two newest-first lists merged into one, at most `limit` long: each keeps its own order (the
/// journeys in memory are in branch order), the larger `key` goes first, the live one on a tie.
fn newest_first<T, K: Ord>(live: Vec<T>, stored: Vec<T>, limit: usize, key: impl Fn(&T) -> K) -> Vec<T> {
    let mut out = Vec::with_capacity(limit.min(live.len() + stored.len()));
    let (mut a, mut b) = (live.into_iter().peekable(), stored.into_iter().peekable());
    while out.len() < limit {
        let take_live = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => key(x) >= key(y),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        out.extend(if take_live { a.next() } else { b.next() });
    }
    out
}

type ApiError = (StatusCode, Json<serde_json::Value>);

fn api_error(code: StatusCode, msg: String) -> ApiError {
    (code, Json(serde_json::json!({ "error": msg })))
}

fn store_unreadable(e: &str) -> ApiError {
    api_error(StatusCode::SERVICE_UNAVAILABLE, format!("the settled journeys are unreadable: {e}"))
}

/// A stored document, read back: one written by another version that no longer reads is an
/// error that names it, not a panic.
fn settled_view<T: serde::de::DeserializeOwned>(what: &str, json: &str) -> Result<T, ApiError> {
    serde_json::from_str(json).map_err(|e| {
        api_error(StatusCode::INTERNAL_SERVER_ERROR, format!("the stored view of {what} is unreadable: {e}"))
    })
}

/// A journey in memory, or one that settled and is read from the store.
pub enum Found<'a> {
    Live(&'a Journey),
    Settled { view: Box<JourneyJson>, carried: Vec<(String, String)> },
}

/// [`find`] over the journeys in memory and the settled ones in the store together: a prefix
/// is ambiguous when it matches two commits in either.
pub async fn find_any<'a>(s: &Shared, snap: &'a Snapshot, sha: &str) -> Result<Found<'a>, ApiError> {
    let live = match find(&snap.derived, sha) {
        Ok(j) => Some(j),
        Err((StatusCode::NOT_FOUND, _)) => None,
        Err(e) => return Err(e),
    };
    let prefix = sha.to_ascii_lowercase();
    let stored = s
        .read_settled(move |st| st.settled_journeys_by_prefix(&prefix, 100))
        .await
        .map_err(|e| store_unreadable(&e))?;
    let mut stored: Vec<_> = stored.into_iter().filter(|(x, _, _)| live.is_none_or(|j| j.sha != *x)).collect();
    match (live, stored.len()) {
        (Some(j), 0) => Ok(Found::Live(j)),
        (None, 1) => {
            let (sha, view, carried) = stored.remove(0);
            Ok(Found::Settled { view: Box::new(settled_view(&sha, &view)?), carried: settled_view(&sha, &carried)? })
        }
        (None, 0) => Err(api_error(StatusCode::NOT_FOUND, format!("no commit {sha} on the tracked branch"))),
        (live, n) => {
            let n = n + usize::from(live.is_some());
            Err(api_error(StatusCode::CONFLICT, format!("{sha} is ambiguous: {n} commits start with it")))
        }
    }
}

/// A full sha or a unique prefix of at least 4 hex digits.
pub fn find<'a>(d: &'a Derived, sha: &str) -> Result<&'a Journey, (StatusCode, Json<serde_json::Value>)> {
    let err = |code, msg: String| (code, Json(serde_json::json!({ "error": msg })));
    if sha.len() < 4 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(err(
            StatusCode::BAD_REQUEST,
            format!("{sha:?} is not a commit sha or a prefix of at least 4 hex digits"),
        ));
    }
    let sha = sha.to_ascii_lowercase();
    let hits: Vec<&Journey> = d.journeys.iter().filter(|j| j.sha.starts_with(&sha)).map(|j| &**j).collect();
    match hits.len() {
        0 => Err(err(StatusCode::NOT_FOUND, format!("no commit {sha} on the tracked branch"))),
        1 => Ok(hits[0]),
        n => Err(err(StatusCode::CONFLICT, format!("{sha} is ambiguous: {n} commits start with it"))),
    }
}

// The journey JSON is the typed view (`crate::view`), serialised as is; these names stay for
// the API's users and tests.
pub type JourneyJson = crate::view::JourneyView;
pub type StageJson = crate::view::StageView;
pub type AttemptJson = crate::view::AttemptView;
pub type WaitsForJson = crate::view::WaitsForView;
pub type RunningBuildJson = crate::view::RunningBuildView;
pub use crate::view::trace_id;

/// A stage as its builds show it now.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct StageNowJson {
    pub name: String,
    pub running_builds: Vec<RunningBuildJson>,
    /// Seconds since the oldest started build started (0 when none).
    pub oldest_running_build_seconds: i64,
    pub stuck_after_seconds: Option<i64>,
    pub stuck: bool,
}

/// The stages' running builds, with ages measured at `now`.
pub fn stages_now_json(d: &Derived, now: i64) -> Vec<StageNowJson> {
    d.stages
        .iter()
        .map(|sn| StageNowJson {
            name: sn.name.clone(),
            running_builds: sn.running.iter().map(RunningBuildJson::new).collect(),
            oldest_running_build_seconds: sn.oldest_age(now),
            stuck_after_seconds: sn.stuck_after,
            stuck: sn.stuck_at(now),
        })
        .collect()
}

impl crate::view::JourneyView {
    /// The view of a journey in a published snapshot.
    pub fn from(j: &Journey, snap: &Snapshot) -> JourneyJson {
        let links = crate::view::Links {
            repository: &snap.repository,
            repository_url: &snap.repository_url,
            environments: &snap.environments,
        };
        let mut v = JourneyJson::new(j, &links);
        v.eta = snap.etas.get(&j.sha).cloned().unwrap_or_default();
        for a in v.stages.iter_mut().flat_map(|s| s.attempts.iter_mut()) {
            a.log_excerpt = snap.log_excerpts.get(&a.build_id).cloned();
        }
        v
    }
}

use crate::pages::{age, esc};

/// `/journeys/{sha}`: the commit's timeline as a page (the JSON stays at `/api/v1/journeys/{sha}`).
async fn journey_page(State(s): State<Arc<Shared>>, Path(sha): Path<String>) -> Response {
    let snap = s.snapshot();
    let html = |code: StatusCode, body: String| {
        (code, [(axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
    };
    match find_any(&s, &snap, &sha).await {
        Ok(Found::Settled { view, carried }) => {
            let trace = s.links.get().and_then(|l| l.trace_url(&view.trace_id));
            html(StatusCode::OK, crate::pages::journey_page(&view, s.now(), &carried, trace.as_deref()))
        }
        Ok(Found::Live(j)) => {
            let view = JourneyJson::from(j, &snap);
            // The commits this one's builds took along: those whose journey names it as carrier.
            let carried: Vec<(String, String)> = snap
                .derived
                .journeys
                .iter()
                .filter(|o| o.carried_by.as_deref() == Some(j.sha.as_str()))
                .map(|o| (o.sha.clone(), o.subject.clone()))
                .collect();
            let trace = s.links.get().and_then(|l| l.trace_url(&view.trace_id));
            html(StatusCode::OK, crate::pages::journey_page(&view, s.now(), &carried, trace.as_deref()))
        }
        Err((code, Json(e))) => {
            let msg = e["error"].as_str().unwrap_or("not found").to_string();
            html(
                code,
                crate::pages::page(
                    "not found — deploy-journey",
                    &format!("<h1>{}</h1><p><a href=\"/\">back to the overview</a></p>", esc(&msg)),
                ),
            )
        }
    }
}

/// The landing page: what is in flight, the last deployments, the sources' health, and links.
/// Plain server-rendered HTML from the snapshot; every value is escaped; no credentials exist here.
async fn landing(State(s): State<Arc<Shared>>) -> Response {
    let snap = s.snapshot();
    let now = s.now();
    let links = s.links.get();
    let trace = |sha: &str| {
        links
            .and_then(|l| l.trace_url(&trace_id(sha)))
            .map(|u| format!(" <a class=\"trace\" href=\"{}\">trace</a>", esc(&u)))
            .unwrap_or_default()
    };
    let mut h = String::from(
        "<h1>deploy-journey</h1><p>Every commit on the tracked branch, followed to its environment. \
         <a href=\"/metrics\">/metrics</a> · <a href=\"/api/v1/journeys?state=in_flight\">/api/v1/journeys</a> · \
         <a href=\"/healthz\">/healthz</a> · <a href=\"/readyz\">/readyz</a></p>",
    );
    h.push_str(&format!("<p>Repository <b>{}</b>; ready: {}</p>", esc(&snap.repository), s.is_ready()));
    // What runs where now: the running version's newest commit (after a rollback, the older
    // one it went back to), what it lacks, and what waits at its gate.
    let by_sha: std::collections::HashMap<&str, &Journey> =
        snap.derived.journeys.iter().map(|j| (j.sha.as_str(), &**j)).collect();
    h.push_str(
        "<h2>Environments</h2><table id=\"environments\"><tr><th>environment</th><th>runs</th><th>subject</th>\
         <th>since</th><th>lead time</th><th>behind</th><th>at the gate</th></tr>",
    );
    // A deploy that failed after what runs now: the environment stays behind until someone
    // reruns it (cepler offers the same version again; Concourse does not rebuild it).
    let failed_since = |name: &str, since: Option<i64>| -> String {
        snap.derived
            .deployments
            .iter()
            .filter(|d| d.environment == name)
            .max_by_key(|d| (d.end, d.build_id))
            .filter(|d| !d.succeeded && since.is_none_or(|t| d.end >= t))
            .map(|d| {
                format!(
                    " <span class=\"failed\">last deploy failed:</span> <a href=\"{}\">{} #{}</a>",
                    esc(&d.url),
                    esc(&d.job),
                    esc(&d.name)
                )
            })
            .unwrap_or_default()
    };
    for env in snap.derived.environments.iter() {
        let Some(sha) = env.running_commit.as_deref() else {
            h.push_str(&format!(
                "<tr id=\"env-{e}\"><td><b>{e}</b></td><td colspan=\"6\"><span class=\"muted\">nothing deployed in the history kept</span>{f}</td></tr>",
                e = esc(&env.name),
                f = failed_since(&env.name, None),
            ));
            continue;
        };
        let j = by_sha.get(sha);
        let rolled_back = env
            .running_build
            .and_then(|id| snap.derived.deployments.iter().find(|d| d.build_id == id))
            .is_some_and(|d| d.kind == crate::core::deployments::DeployKind::Rollback);
        h.push_str(&format!(
            "<tr id=\"env-{e}\"><td><b>{e}</b></td><td><a href=\"/journeys/{sha}\"><code>{short}</code></a>{trace}{rb}{failed}</td>\
             <td>{subj}</td><td>{since}</td><td>{lead}</td><td>{behind}</td><td>{gate}</td></tr>",
            e = esc(&env.name),
            sha = esc(sha),
            short = esc(sha.get(..7).unwrap_or(sha)),
            trace = trace(sha),
            rb = if rolled_back { " <span class=\"failed\">rolled back</span>" } else { "" },
            failed = failed_since(&env.name, env.since),
            subj = j.map(|j| esc(&j.subject)).unwrap_or_default(),
            since = env.since.map(|t| format!("{} ({} ago)", crate::pages::utc(t), age(now - t))).unwrap_or_default(),
            lead = j.and_then(|j| j.lead_time(&env.name)).map(age).unwrap_or_default(),
            behind = match (env.behind, env.oldest_behind) {
                (0, _) => "up to date".to_string(),
                (n, Some(t)) => format!("{n} commit(s), oldest {} old", age(now - t)),
                (n, None) => format!("{n} commit(s)"),
            },
            gate = match (env.awaiting_approval, env.awaiting_since) {
                (0, _) => "-".to_string(),
                (n, Some(t)) => format!("{n} waiting {}", age(now - t)),
                (n, None) => format!("{n} waiting"),
            },
        ));
    }
    h.push_str("</table>");
    // Each stage's running builds, whatever commits they carry: a stage can be busy (or stuck)
    // with no commit in flight attached to it.
    h.push_str(
        "<h2>Stages</h2><table><tr><th>stage</th><th>running builds</th><th>oldest</th><th>stuck after</th></tr>",
    );
    for st in stages_now_json(&snap.derived, now) {
        let builds: Vec<String> = st
            .running_builds
            .iter()
            .map(|b| {
                let carrying = b.head.as_deref().map(|x| x.get(..7).unwrap_or(x)).unwrap_or("?");
                format!(
                    "<a href=\"{}\">{} #{}</a> {} (carrying <code>{}</code>)",
                    esc(&b.url),
                    esc(&b.job),
                    esc(&b.name),
                    esc(b.status.as_str()),
                    esc(carrying)
                )
            })
            .collect();
        h.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td{}>{}</td><td>{}</td></tr>",
            esc(&st.name),
            if builds.is_empty() { "-".to_string() } else { builds.join("<br>") },
            if st.stuck { " class=\"stuck\"" } else { "" },
            if st.running_builds.iter().any(|b| b.start.is_some()) {
                format!("{}{}", age(st.oldest_running_build_seconds), if st.stuck { " (stuck)" } else { "" })
            } else {
                "-".into()
            },
            st.stuck_after_seconds.map(age).unwrap_or_else(|| "-".into()),
        ));
    }
    h.push_str("</table>");
    h.push_str("<h2>In flight</h2><table><tr><th>commit</th><th>subject</th><th>stage</th><th>state</th><th>age</th><th class=\"hide-narrow\">timeline</th><th>waits for</th><th>expected</th><th>builds</th></tr>");
    let mut n = 0;
    let incomplete = snap.derived.quality.incomplete;
    let incomplete_one = |j: &&Journey| j.outcome == crate::core::journey::Outcome::Incomplete;
    for j in
        snap.derived.journeys.iter().rev().filter(|j| !j.ended && !j.vanished && !incomplete_one(&j.as_ref())).take(50)
    {
        let cur =
            j.stages.iter().find(|st| st.state.in_flight() || st.state == crate::core::journey::StageState::Failed);
        let (stage, state, since, builds, waits) = match cur {
            Some(st) => {
                let since = st.start.or(st.ready_at).unwrap_or(j.commit_time);
                let links: Vec<String> = st
                    .attempts
                    .iter()
                    .map(|a| format!("<a href=\"{}\">{} #{}</a>", esc(&a.url), esc(&a.job), esc(&a.name)))
                    .collect();
                let waits = st.waits_for.as_ref().map(|w| w.describe()).unwrap_or_default();
                (st.name.as_str(), st.state.as_str(), since, links.join(" "), waits)
            }
            None => ("-", j.outcome.as_str(), j.commit_time, String::new(), String::new()),
        };
        n += 1;
        let mini = crate::pages::mini_timeline(&JourneyJson::from(j, &snap), now);
        // The predicted arrival in each environment still ahead (`core::eta`).
        // In the order the commit reaches them, not by name.
        let etas = snap.etas.get(&j.sha);
        let expected: Vec<String> = snap
            .environments
            .iter()
            .filter_map(|env| etas.and_then(|e| e.get(env)).map(|t| (env, t)))
            .map(|(env, t)| {
                format!(
                    "<span class=\"eta\">{} in {}</span>",
                    esc(env),
                    if *t > now { age(t - now) } else { "due".into() }
                )
            })
            .collect();
        h.push_str(&format!(
            "<tr><td><a href=\"/journeys/{sha}\"><code>{short}</code></a>{trace}</td><td>{subj}</td><td>{stage}</td><td class=\"{state}\">{state}</td><td>{age}</td><td class=\"hide-narrow\">{mini}</td><td>{waits}</td><td>{expected}</td><td>{builds}</td></tr>",
            expected = if expected.is_empty() { "-".to_string() } else { expected.join("<br>") },
            trace = trace(&j.sha),
            sha = esc(&j.sha),
            short = esc(j.short()),
            subj = esc(&j.subject),
            stage = esc(stage),
            state = esc(state),
            age = age(now - since),
            waits = esc(&waits),
        ));
    }
    // Older ones an environment still lacks are held in the state file (`core::held`).
    let held = snap.derived.held.iter().filter(|h| h.in_flight.is_some()).count();
    if n == 0 && held == 0 {
        h.push_str("<tr><td colspan=\"9\">nothing in flight</td></tr>");
    }
    if held > 0 {
        h.push_str(&format!(
            "<tr id=\"held\"><td colspan=\"9\">and {held} older commit(s) in flight, waiting for an environment \
             (<a href=\"/api/v1/journeys?state=in_flight&amp;limit=1000\">all in flight</a>)</td></tr>"
        ));
    }
    h.push_str(
        "</table><p><i>riding</i>: a <code>[ci skip]</code> or untracked commit; no stage builds it on its own, \
         it rides with the next triggering commit's builds.</p>",
    );
    if incomplete > 0 {
        h.push_str(&format!(
            "<p class=\"incomplete\">{incomplete} older commit(s) are <i>incomplete</i>: their builds lie before the \
             Concourse history read at the first start (see <code>deploy-journey backfill</code>).</p>"
        ));
    }
    // Deployments, not commits: a rollback, a redeploy and a failed deploy are deployments too.
    h.push_str(
        "<h2>Last deployments</h2><table id=\"deployments\"><tr><th>environment</th><th>build</th><th>kind</th>\
         <th>result</th><th>delivers</th><th>lead time</th><th>ended</th></tr>",
    );
    let mut last: Vec<&crate::core::deployments::Deployment> = snap.derived.deployments.iter().collect();
    last.sort_by_key(|d| std::cmp::Reverse((d.end, d.build_id)));
    for d in last.into_iter().take(15) {
        let result = match (&d.failed, d.succeeded) {
            (Some(f), _) => format!("<span class=\"failed\">failed: {}</span>", esc(f.reason.as_str())),
            (None, true) => "succeeded".to_string(),
            (None, false) => "<span class=\"failed\">failed</span>".to_string(),
        };
        let delivers = match d.newest_commit.as_deref() {
            Some(sha) => format!(
                "<a href=\"/journeys/{}\"><code>{}</code></a>{}{}",
                esc(sha),
                esc(sha.get(..7).unwrap_or(sha)),
                trace(sha),
                if d.commits.len() > 1 { format!(" and {} more", d.commits.len() - 1) } else { String::new() }
            ),
            None => "-".to_string(),
        };
        // Each commit it delivered first has its own lead time: the range.
        let lead = match (d.lead_times.values().min(), d.lead_times.values().max()) {
            (Some(a), Some(b)) if a == b => age(*a),
            (Some(a), Some(b)) => format!("{}–{}", age(*a), age(*b)),
            _ => "-".to_string(),
        };
        h.push_str(&format!(
            "<tr><td>{}</td><td><a href=\"{}\">{} #{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} ago</td></tr>",
            esc(&d.environment),
            esc(&d.url),
            esc(&d.job),
            esc(&d.name),
            d.kind.as_str(),
            result,
            delivers,
            lead,
            age(now - d.end)
        ));
    }
    h.push_str("</table><h2>Sources</h2><table><tr><th>source</th><th>up</th><th>last success</th><th>requests</th><th>errors</th></tr>");
    if let Some(ctx) = s.metrics.get() {
        for (name, snap) in ctx.telemetry.snapshots() {
            let errors: u64 = snap.errors.values().sum();
            h.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(name),
                if snap.up { "yes" } else { "no" },
                snap.last_success.map(|t| format!("{} ago", age(now - t))).unwrap_or_else(|| "never".into()),
                snap.requests(),
                errors
            ));
        }
    }
    h.push_str("</table>");
    ([(axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8")], crate::pages::page("deploy-journey", &h))
        .into_response()
}
