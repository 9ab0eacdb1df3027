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
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::api::{correlation, count_unavailable, idempotency, read_body, replayed, ApiPath, Req};
use super::error::{ApiError, Outcome};
use super::AppState;
use crate::flows::{self, FlowError, FlowReport, TaskAction};
use crate::metrics as m;
use crate::node::IdempotencyKey;

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

fn accepted(report: &FlowReport) -> Response {
    (StatusCode::ACCEPTED, Json(report)).into_response()
}

/// Runs a flow once per `Idempotency-Key`: a retry of a request that was answered is
/// answered the same (marked as a replay) without running the flow again, and a retry of
/// one whose outcome was unknown runs it again with the same per-event keys, so no event
/// the first attempt sent goes out twice.
async fn once<Fut>(
    state: &AppState,
    req: &Req,
    route: &str,
    body: &[u8],
    run: impl FnOnce(Option<IdempotencyKey>) -> Fut,
) -> Result<Response, ApiError>
where
    Fut: std::future::Future<Output = Result<FlowReport, FlowError>>,
{
    let count = |e: &FlowError| {
        if let FlowError::Node(n) = e {
            count_unavailable(n);
        }
    };
    let Some(key) = idempotency(&req.headers, &req.scope)? else {
        return Ok(accepted(&run(None).await.inspect_err(count)?));
    };
    let fingerprint = {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        h.update(route.as_bytes());
        h.update([0]);
        h.update(body);
        let d = h.finalize();
        d[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    if let Some(stored) = state.node.recall(&key).await? {
        let Some((first, answer)) = stored.split_once('|') else {
            return Err(ApiError::Unavailable(Outcome::NotSent));
        };
        if first != fingerprint {
            return Err(ApiError::IdempotencyConflict);
        }
        metrics::counter!(m::PUBLISHES_REPEATED).increment(1);
        let body: serde_json::Value = serde_json::from_str(answer).unwrap_or_default();
        return Ok(replayed((StatusCode::ACCEPTED, Json(body)).into_response()));
    }
    let report = run(Some(key.clone())).await.inspect_err(|e| {
        if let FlowError::Node(n) = e {
            count_unavailable(n);
        }
    })?;
    let answer = serde_json::to_string(&report).unwrap_or_default();
    if let Err(e) = state
        .node
        .remember(&key, &format!("{fingerprint}|{answer}"))
        .await
    {
        // The events went out; a retry runs the flow again and its per-event keys keep
        // each event from going out twice.
        tracing::warn!(error = %e, "could not record a flow request's idempotency key");
    }
    Ok(accepted(&report))
}

async fn spend(
    State(state): State<AppState>,
    ApiPath(vkey): ApiPath<String>,
    req: Req,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = read_body(body, &state)?;
    let corr = correlation(&req.headers)?;
    let fact = flows::parse_body(&body)?;
    let route = format!("spend/{vkey}");
    let node = state.node.clone();
    once(&state, &req, &route, &body, |key| async move {
        flows::spend(&node, &vkey, fact, &corr, key.as_ref()).await
    })
    .await
}

async fn health(
    State(state): State<AppState>,
    ApiPath(provider): ApiPath<String>,
    req: Req,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = read_body(body, &state)?;
    let corr = correlation(&req.headers)?;
    let fact = flows::parse_body(&body)?;
    let route = format!("health/{provider}");
    let node = state.node.clone();
    once(&state, &req, &route, &body, |key| async move {
        flows::provider_health(&node, &provider, fact, &corr, key.as_ref()).await
    })
    .await
}

async fn task(
    State(state): State<AppState>,
    ApiPath((kind, id, action)): ApiPath<(String, String, String)>,
    req: Req,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = read_body(body, &state)?;
    let corr = correlation(&req.headers)?;
    let route = format!("tasks/{kind}/{id}/{action}");
    let action = TaskAction::parse(&action).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "action '{action}' is not started, progress, completed, failed, cancelled or timedout"
        ))
    })?;
    let fact = if body.iter().all(u8::is_ascii_whitespace) {
        flows::TaskFact::default()
    } else {
        flows::parse_body(&body)?
    };
    let node = state.node.clone();
    once(&state, &req, &route, &body, |key| async move {
        flows::task(&node, &kind, &id, action, fact, &corr, key.as_ref()).await
    })
    .await
}

async fn webhook(
    State(state): State<AppState>,
    req: Req,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = read_body(body, &state)?;
    let corr = correlation(&req.headers)?;
    let fact = flows::parse_body(&body)?;
    let node = state.node.clone();
    once(&state, &req, "webhooks", &body, |key| async move {
        flows::webhook_delivery(&node, fact, &corr, key.as_ref()).await
    })
    .await
}

async fn schemas() -> Response {
    Json(crate::events::schemas()).into_response()
}
