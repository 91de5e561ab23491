//! The simulator's HTTP server: GitHub and Concourse APIs on one listener, with request
//! accounting and fault injection around every route.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};

use super::Sim;
use super::faults::FaultKind;
use super::stats::service_of;

pub fn router(sim: Arc<Sim>) -> Router {
    Router::new()
        .merge(super::github_api::routes())
        .merge(super::concourse_api::routes())
        .route_layer(middleware::from_fn_with_state(sim.clone(), faults_and_stats))
        .merge(super::control::routes())
        // Web pages for the build and commit links handed out (not API calls: not counted).
        .merge(super::web::routes())
        .fallback(not_found)
        .with_state(sim)
}

async fn not_found(State(sim): State<Arc<Sim>>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let service = service_of(&path);
    sim.stats.record(service, req.method().as_str(), "(unmatched)", 404);
    if service == "github" {
        let body = r#"{"message":"Not Found","documentation_url":"https://docs.github.com/rest","status":"404"}"#;
        return (StatusCode::NOT_FOUND, [(axum::http::header::CONTENT_TYPE, "application/json; charset=utf-8")], body)
            .into_response();
    }
    (StatusCode::NOT_FOUND, "404 page not found\n").into_response()
}

/// Bind `addr`, set the simulator's external URL to the bound address, and serve until the
/// future returned resolves (it never does unless the task is dropped or aborted).
pub async fn bind(sim: Arc<Sim>, addr: &str) -> std::io::Result<(tokio::net::TcpListener, String)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let url = format!("http://{local}");
    sim.set_base_url(&url);
    Ok((listener, url))
}

pub async fn serve(sim: Arc<Sim>, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    // Connect info gives anonymous GitHub callers per-address rate limits, as on GitHub.
    axum::serve(listener, router(sim).into_make_service_with_connect_info::<std::net::SocketAddr>()).await
}

async fn faults_and_stats(State(sim): State<Arc<Sim>>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let route = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_string()).unwrap_or_else(|| path.clone());
    let method = req.method().as_str().to_string();
    let service = service_of(&path);
    let fault = sim.faults.pick(service, &path, sim.now());
    let resp = match fault {
        None => next.run(req).await,
        Some(f) => apply(f, req, next).await,
    };
    sim.stats.record(service, &method, &route, resp.status().as_u16());
    resp
}

async fn apply(fault: FaultKind, req: Request, next: Next) -> Response {
    match fault {
        FaultKind::ServerError { status } => {
            let s = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            (s, [(header::CONTENT_TYPE, "application/json")], format!("{{\"message\":\"simulated {status}\"}}"))
                .into_response()
        }
        FaultKind::Delay { ms } => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            next.run(req).await
        }
        FaultKind::Timeout { ms } => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
        FaultKind::Reset => {
            // A body that fails makes hyper abort the connection mid-response.
            let stream = futures_util::stream::once(async {
                Err::<axum::body::Bytes, _>(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "simulated reset"))
            });
            let mut r = Response::new(Body::from_stream(stream));
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
        FaultKind::Malformed => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            "<html><body>502 Bad Gateway</body></html>{\"id\":",
        )
            .into_response(),
        // An event stream of a running build never ends; cutting it would hang the request.
        FaultKind::Truncated if req.uri().path().ends_with("/events") => next.run(req).await,
        FaultKind::Corrupted if req.uri().path().ends_with("/events") => next.run(req).await,
        FaultKind::Corrupted => {
            let resp = next.run(req).await;
            let (parts, body) = resp.into_parts();
            let mut bytes = to_bytes(body, usize::MAX).await.unwrap_or_default().to_vec();
            let mid = bytes.len() / 2;
            if let Some(b) = bytes.get_mut(mid) {
                *b = 0;
            }
            let mut r = Response::from_parts(parts, Body::from(bytes));
            r.headers_mut().remove(header::ETAG);
            r
        }
        FaultKind::Truncated => {
            let resp = next.run(req).await;
            let (parts, body) = resp.into_parts();
            let bytes = to_bytes(body, usize::MAX).await.unwrap_or_default();
            let cut = bytes.slice(..bytes.len() / 2);
            let mut r = Response::from_parts(parts, Body::from(cut));
            r.headers_mut().remove(header::CONTENT_LENGTH);
            r.headers_mut().remove(header::ETAG);
            r
        }
        FaultKind::RateLimit { status, retry_after_secs } => {
            // Reset times are wall-clock epochs: they tell a real client how long to wait.
            let reset =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
                    + retry_after_secs;
            let s = StatusCode::from_u16(status).unwrap_or(StatusCode::TOO_MANY_REQUESTS);
            let mut r = (
                s,
                [(header::CONTENT_TYPE, "application/json")],
                "{\"message\":\"API rate limit exceeded. (But here's the good news: Authenticated requests get a higher rate limit.)\",\"documentation_url\":\"https://docs.github.com/rest/overview/resources-in-the-rest-api#rate-limiting\"}",
            )
                .into_response();
            let h = r.headers_mut();
            h.insert("x-ratelimit-limit", HeaderValue::from(5000u32));
            h.insert("x-ratelimit-remaining", HeaderValue::from(0u32));
            h.insert("x-ratelimit-used", HeaderValue::from(5000u32));
            h.insert("x-ratelimit-reset", HeaderValue::from(reset));
            h.insert("x-ratelimit-resource", HeaderValue::from_static("core"));
            if status == 429 {
                h.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            }
            r
        }
        FaultKind::PipelineGone { .. } => (StatusCode::NOT_FOUND, "").into_response(),
    }
}
