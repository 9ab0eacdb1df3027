//! The event-flow API: services post plain facts and hubcast applies the rules.
//!
//! | method | path | does |
//! |---|---|---|
//! | POST | `/api/v1/spend/{virtualKeyId}` | budget alerts (once per threshold, cluster-wide), then SpendUpdate |
//! | POST | `/api/v1/providers/{provider}/health` | health hysteresis; ProviderHealthUpdate on a confirmed change |
//! | POST | `/api/v1/tasks/{kind}/{taskId}/{action}` | task events; progress coalesced, terminal events always last |
//! | POST | `/api/v1/webhooks/deliveries` | delivery lifecycle events and circuit-breaker changes |
//! | GET | `/api/v1/schemas` | the JSON Schemas of every event contract |

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::api::{correlation, read_body, ApiPath};
use super::error::ApiError;
use super::AppState;
use crate::flows::{self, FlowError, FlowReport, TaskAction};

/// The flow routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/spend/{vkey}", post(spend))
        .route("/api/v1/providers/{provider}/health", post(health))
        .route("/api/v1/tasks/{kind}/{task}/{action}", post(task))
        .route("/api/v1/webhooks/deliveries", post(webhook))
        .route("/api/v1/schemas", get(schemas))
}

impl From<FlowError> for ApiError {
    fn from(e: FlowError) -> Self {
        match e {
            FlowError::Invalid(m) => Self::BadRequest(m),
            FlowError::HubMissing(h) => Self::UnknownHub(h.to_owned()),
            FlowError::Node(n) => n.into(),
        }
    }
}

fn accepted(report: FlowReport) -> Response {
    (StatusCode::ACCEPTED, Json(report)).into_response()
}

async fn spend(
    State(state): State<AppState>,
    ApiPath(vkey): ApiPath<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = read_body(body, &state)?;
    let corr = correlation(&headers)?;
    let fact = flows::parse_body(&body)?;
    Ok(accepted(
        flows::spend(&state.node, &vkey, fact, &corr).await?,
    ))
}

async fn health(
    State(state): State<AppState>,
    ApiPath(provider): ApiPath<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = read_body(body, &state)?;
    let corr = correlation(&headers)?;
    let fact = flows::parse_body(&body)?;
    Ok(accepted(
        flows::provider_health(&state.node, &provider, fact, &corr).await?,
    ))
}

async fn task(
    State(state): State<AppState>,
    ApiPath((kind, id, action)): ApiPath<(String, String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = read_body(body, &state)?;
    let corr = correlation(&headers)?;
    let action = TaskAction::parse(&action).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "action '{action}' is not started, progress, completed, failed or cancelled"
        ))
    })?;
    let fact = if body.iter().all(u8::is_ascii_whitespace) {
        flows::TaskFact::default()
    } else {
        flows::parse_body(&body)?
    };
    Ok(accepted(
        flows::task(&state.node, &kind, &id, action, fact, &corr).await?,
    ))
}

async fn webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = read_body(body, &state)?;
    let corr = correlation(&headers)?;
    let fact = flows::parse_body(&body)?;
    Ok(accepted(
        flows::webhook_delivery(&state.node, fact, &corr).await?,
    ))
}

async fn schemas() -> Response {
    Json(crate::events::schemas()).into_response()
}
