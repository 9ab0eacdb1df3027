//! The public HTTP surface: hub endpoints (negotiate + WebSocket), the publish API and
//! the health probes, with one error type mapped to JSON, and the accept loop that
//! serves them (HTTP/1.1 only, with timeouts and a socket cap).

mod admission;
pub mod api;
mod body_deadline;
mod conn_watch;
pub mod error;
pub mod flows;
pub mod gate;
pub mod hubs;
mod log_every;
pub mod serve;
mod transports;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio_util::task::TaskTracker;

use crate::metrics as m;
use crate::node::Node;
use error::ApiError;

/// How long the readiness probe's pub/sub round trip may take.
const READY_PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The node.
    pub node: Arc<Node>,
    /// Tracks WebSocket sessions, which outlive their HTTP request, for shutdown.
    pub sessions: TaskTracker,
    /// Credentials, origins and limits.
    pub gate: Arc<gate::Gate>,
}

/// Builds the router for a node's hubs and API.
pub fn router(state: AppState) -> Router {
    // The API's `:send`-style segments are literal, not v0.7 captures.
    let mut router = Router::new().without_v07_checks();
    for (index, hub) in state.node.hubs().iter().enumerate() {
        for path in std::iter::once(&hub.spec.path).chain(&hub.spec.aliases) {
            router = router
                .route(
                    &format!("{path}/negotiate"),
                    post(move |s, q, h| hubs::negotiate(s, index, q, h))
                        .options(move |s, h| hubs::preflight(s, index, h)),
                )
                .route(
                    path,
                    get(move |s, q, h, ws| hubs::connect(s, index, q, h, ws))
                        .post(move |s, q, h, b| transports::post(s, index, q, h, b))
                        .delete(move |s, q, h| transports::delete(s, index, q, h)),
                );
        }
    }
    let body_limit = state.node.limits().max_body_bytes;
    let body_read = state.node.timeouts().body_read();
    metrics::counter!(m::HTTP_TIMEOUTS, "listener" => "public", "reason" => m::REASON_BODY_READ)
        .increment(0);
    router
        .merge(
            api::routes()
                .merge(flows::routes().without_v07_checks())
                .layer(middleware::from_fn_with_state(
                    state.clone(),
                    api::authorize,
                )),
        )
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(fallback)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(
            body_read,
            body_deadline::body_deadline,
        ))
        .layer(middleware::from_fn(count_requests))
        .with_state(state)
}

async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> Response {
    let node = &state.node;
    let status = if node.is_draining() {
        "draining"
    } else if !node.is_ready(READY_PROBE_TIMEOUT).await {
        "backplane round trip failed"
    } else {
        return Json(
            serde_json::json!({ "status": "ready", "backplane": node.backplane().describe() }),
        )
        .into_response();
    };
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(serde_json::json!({ "status": status, "backplane": node.backplane().describe() })),
    )
        .into_response()
}

async fn fallback(uri: Uri) -> ApiError {
    ApiError::NoRoute(uri.path().to_owned())
}

/// Counts requests by route template (never the raw path, which holds group names).
async fn count_requests(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let resp = next.run(req).await;
    metrics::counter!(m::HTTP_REQUESTS, "route" => route, "status" => resp.status().as_u16().to_string()).increment(1);
    resp
}
