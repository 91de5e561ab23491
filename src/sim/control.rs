//! `/_sim/*`: the simulator's own control surface — request counts, faults, the clock, ground
//! truth. Not part of any real API; the exporter never calls it.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::Sim;
use super::clock::ClockMode;
use super::faults::FaultRule;

pub fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/_sim/stats", get(stats))
        .route("/_sim/stats/reset", post(stats_reset))
        .route("/_sim/faults", get(faults_list).post(faults_add).delete(faults_clear))
        .route("/_sim/clock", get(clock))
        .route("/_sim/advance", post(advance))
        .route("/_sim/expire-tokens", post(expire_tokens))
        .route("/_sim/truth/{sha}", get(truth))
        .route("/_sim/deployments", get(deployments))
        .route("/_sim/environments", get(environments))
}

async fn stats(State(sim): State<Arc<Sim>>) -> Response {
    let rows = sim.stats.rows();
    Json(json!({
        "github": sim.stats.total("github"),
        "concourse": sim.stats.total("concourse"),
        "requests": rows,
    }))
    .into_response()
}

async fn stats_reset(State(sim): State<Arc<Sim>>) -> StatusCode {
    sim.stats.reset();
    StatusCode::NO_CONTENT
}

async fn faults_list(State(sim): State<Arc<Sim>>) -> Response {
    Json(sim.faults.list()).into_response()
}

async fn faults_add(State(sim): State<Arc<Sim>>, body: axum::body::Bytes) -> Response {
    match FaultRule::parse(&body) {
        Ok(rule) => {
            sim.faults.add(rule);
            StatusCode::CREATED.into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, Json(json!({"error": format!("bad fault rule: {e}")}))).into_response(),
    }
}

async fn faults_clear(State(sim): State<Arc<Sim>>) -> StatusCode {
    sim.faults.clear();
    StatusCode::NO_CONTENT
}

async fn clock(State(sim): State<Arc<Sim>>) -> Response {
    let mode = match sim.clock.mode() {
        ClockMode::Running { speed } => json!({"running": speed}),
        ClockMode::Stepped => json!("stepped"),
    };
    let w = sim.world();
    Json(json!({"now": w.now, "mode": mode, "events_processed": w.events_processed, "next_event": w.next_event_time()}))
        .into_response()
}

#[derive(Deserialize)]
struct AdvanceQ {
    seconds: i64,
}

async fn advance(State(sim): State<Arc<Sim>>, Query(q): Query<AdvanceQ>) -> Response {
    sim.clock.step(q.seconds);
    let now = sim.world().now;
    Json(json!({"now": now})).into_response()
}

/// Expire every issued Concourse token now: the real 401 path then runs for their holders.
async fn expire_tokens(State(sim): State<Arc<Sim>>) -> StatusCode {
    let now = sim.now();
    sim.with_world(|w| {
        for (_, exp) in w.concourse.tokens.values_mut() {
            *exp = now;
        }
    });
    StatusCode::NO_CONTENT
}

/// Ground truth for a tracked commit: the resources that emit it and the builds that carried it.
async fn truth(State(sim): State<Arc<Sim>>, Path(sha): Path<String>) -> Response {
    let w = sim.world();
    let repo = w.tracked_repo();
    let full = repo.commits.keys().find(|k| k.starts_with(&sha)).cloned();
    let Some(full) = full else {
        return (StatusCode::NOT_FOUND, Json(json!({"error": "unknown commit"}))).into_response();
    };
    let resources: Vec<String> = w
        .emitting_resources(&full)
        .into_iter()
        .map(|(p, r)| format!("{}/{}", w.concourse.pipelines[p].name, w.concourse.pipelines[p].resources[r].name))
        .collect();
    let builds: Vec<_> = w
        .builds_containing(&full)
        .into_iter()
        .filter_map(|(p, j, id)| {
            let b = w.concourse.build(id)?;
            Some(json!({
                "pipeline": w.concourse.pipelines[p].name,
                "job": w.concourse.pipelines[p].jobs[j].name,
                "id": id,
                "name": b.name,
                "status": b.status.as_str(),
                "start_time": b.start_time,
                "end_time": b.end_time,
            }))
        })
        .collect();
    Json(json!({"sha": full, "resources": resources, "builds": builds})).into_response()
}

#[derive(Deserialize)]
struct DeploymentsQ {
    environment: Option<String>,
    failure_window: Option<String>,
}

/// Ground truth of deployments (`sim::deployments`): `?environment=<cepler environment>` (all
/// when left out), newest first like the exporter's `/api/v1/deployments`;
/// `?failure_window=24h` (the default).
async fn deployments(State(sim): State<Arc<Sim>>, Query(q): Query<DeploymentsQ>) -> Response {
    let window = match super::deployments::parse_window(q.failure_window.as_deref()) {
        Ok(w) => w,
        Err(e) => return (StatusCode::BAD_REQUEST, Json(json!({"error": e}))).into_response(),
    };
    let w = sim.world();
    let all = w.deployment_truth(window);
    if let Some(env) = &q.environment
        && !w.cepler_environments().iter().any(|e| &e.0 == env)
    {
        return (StatusCode::NOT_FOUND, Json(json!({"error": format!("unknown environment {env:?}")}))).into_response();
    }
    let mut rows: Vec<_> =
        all.into_values().flatten().filter(|d| q.environment.as_ref().is_none_or(|e| &d.environment == e)).collect();
    rows.sort_by_key(|d| std::cmp::Reverse((d.end, d.build.id)));
    Json(rows).into_response()
}

/// Per environment: what runs, what is behind, whether it waits at its gate, DORA figures.
async fn environments(State(sim): State<Arc<Sim>>, Query(q): Query<DeploymentsQ>) -> Response {
    let window = match super::deployments::parse_window(q.failure_window.as_deref()) {
        Ok(w) => w,
        Err(e) => return (StatusCode::BAD_REQUEST, Json(json!({"error": e}))).into_response(),
    };
    Json(sim.world().environment_truth(window)).into_response()
}
