//! The publish API: Azure SignalR's data-plane REST API, its v1 paths here and the
//! versioned ones (`/api/hubs/{hub}/…`, api-version 2022-06-01 to 2024-12-01) in
//! `azure.rs`; the README lists every route and its answers.
//!
//! | method | path | does |
//! |---|---|---|
//! | POST | `/api/v1/hubs/{hub}` | broadcast (only hubs with `allow_broadcast`), except `excluded` |
//! | POST | `/api/v1/hubs/{hub}/groups/{group}` | send to a group, except `excluded` |
//! | GET / HEAD | `/api/v1/hubs/{hub}/groups/{group}` | member count; 404 when none |
//! | PUT / DELETE | `/api/v1/hubs/{hub}/groups/{group}/connections/{id}` | add / remove a connection |
//! | POST | `/api/v1/hubs/{hub}/users/{user}` | send to a user's connections |
//! | GET / HEAD | `/api/v1/hubs/{hub}/users/{user}` | is the user connected? |
//! | PUT / DELETE | `/api/v1/hubs/{hub}/groups/{group}/users/{user}` | add (with `ttl`: for its future connections too) / remove the user |
//! | GET / HEAD | `/api/v1/hubs/{hub}/groups/{group}/users/{user}` | is the user in the group? |
//! | DELETE | `/api/v1/hubs/{hub}/users/{user}/groups` | the user leaves every group |
//! | POST | `/api/v1/hubs/{hub}/connections/{id}` | send to one connection |
//! | GET / DELETE | `/api/v1/hubs/{hub}/connections/{id}` | exists? / close it |
//!
//! Sends take `{"target": "...", "arguments": [...]}` and answer 202 once the backplane
//! took the message, with its reach and correlation id.

mod azure;
mod listing;
mod members;
mod query;
mod send;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::Request;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, head, post, put};
use axum::{Json, Router};
use serde::de::DeserializeOwned;

use self::members::{
    add_to_group, close_connection, connection_exists, group_info, remove_from_group,
};
pub use self::query::API_VERSIONS;
use self::send::{broadcast, to_connection, to_group, to_user};
pub(crate) use self::send::{count_unavailable, replayed};
pub use self::send::{PublishBody, SendPath, SendRequest, MAX_TARGET_BYTES};
use super::error::ApiError;
use super::gate::PublisherScope;
use super::log_every::LogEvery;
use super::AppState;
use crate::ids::{ConnectionId, CorrelationId, GroupName, UserId};
use crate::metrics as m;
use crate::node::IdempotencyKey;

/// The API routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .without_v07_checks()
        .route("/api/v1/hubs/{hub}", post(broadcast))
        .route(
            "/api/v1/hubs/{hub}/groups/{group}",
            post(to_group).get(group_info),
        )
        .route(
            "/api/v1/hubs/{hub}/groups/{group}/connections/{connection}",
            put(add_to_group).delete(remove_from_group),
        )
        .route("/api/v1/hubs/{hub}/groups/", any(empty_name))
        .route("/api/v1/hubs/{hub}/users/", any(empty_name))
        .route(
            "/api/v1/hubs/{hub}/users/{user}",
            post(to_user).get(azure::user_exists),
        )
        .route(
            "/api/v1/hubs/{hub}/groups/{group}/users/{user}",
            put(azure::v1_add_user_to_group)
                .delete(azure::v1_remove_user_from_group)
                .get(azure::v1_user_in_group_exists),
        )
        .route(
            "/api/v1/hubs/{hub}/users/{user}/groups",
            delete(azure::v1_remove_user_from_all_groups),
        )
        .route(
            "/api/v1/hubs/{hub}/connections/{connection}",
            post(to_connection)
                .get(connection_exists)
                .delete(close_connection),
        )
        .merge(versioned_routes())
}

/// The `/api/hubs/…` routes (api-version 2022-06-01 and later); their operation names
/// (`:send`, `:closeConnections`) are literal segments starting with a colon.
fn versioned_routes() -> Router<AppState> {
    Router::new()
        .without_v07_checks()
        .route("/api/hubs/{hub}/:send", post(broadcast))
        .route("/api/hubs/{hub}/:closeConnections", post(azure::close_hub))
        .route(
            "/api/hubs/{hub}/:generateToken",
            post(azure::generate_token),
        )
        .route("/api/hubs/{hub}/groups/{group}", head(azure::group_exists))
        .route("/api/hubs/{hub}/groups/{group}/:send", post(to_group))
        .route(
            "/api/hubs/{hub}/groups/{group}/connections",
            get(listing::list_group_connections),
        )
        .route(
            "/api/hubs/{hub}/groups/{group}/:closeConnections",
            post(azure::close_group),
        )
        .route(
            "/api/hubs/{hub}/groups/{group}/connections/{connection}",
            put(add_to_group).delete(remove_from_group),
        )
        .route("/api/hubs/{hub}/users/{user}", head(azure::user_exists))
        .route("/api/hubs/{hub}/users/{user}/:send", post(to_user))
        .route(
            "/api/hubs/{hub}/users/{user}/:closeConnections",
            post(azure::close_user),
        )
        .route(
            "/api/hubs/{hub}/users/{user}/groups",
            delete(azure::remove_user_from_all_groups),
        )
        .route(
            "/api/hubs/{hub}/users/{user}/groups/{group}",
            put(azure::add_user_to_group)
                .delete(azure::remove_user_from_group)
                .head(azure::user_in_group_exists),
        )
        .route(
            "/api/hubs/{hub}/connections/{connection}",
            head(azure::connection_exists).delete(azure::close_connection),
        )
        .route(
            "/api/hubs/{hub}/connections/{connection}/:send",
            post(to_connection),
        )
        .route(
            "/api/hubs/{hub}/connections/{connection}/groups",
            delete(azure::remove_from_all_groups),
        )
        .layer(axum::middleware::from_fn(query::check_api_version))
}

/// Refusals a caller can cause by the thousand: each is counted, one a second is logged.
static UNAUTHORIZED_LOG: LogEvery = LogEvery::new(std::time::Duration::from_secs(1));
static RATE_LIMITED_LOG: LogEvery = LogEvery::new(std::time::Duration::from_secs(1));

/// Every API request needs a publisher credential; every send also takes one unit of
/// that publisher's rate limit. Refusals are 401 or 429 (with `Retry-After`), counted and
/// logged, and nothing happens.
pub async fn authorize(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let publisher = match state.gate.authenticate_publisher(req.headers(), req.uri()) {
        Ok(p) => p,
        Err(e) => {
            metrics::counter!(m::PUBLISHES_REFUSED, "reason" => "unauthorized").increment(1);
            if let Some(skipped) = UNAUTHORIZED_LOG.ready() {
                tracing::info!(path = %req.uri().path(), error = %e, skipped, "publish API request refused");
            }
            let mut resp = (
                StatusCode::UNAUTHORIZED,
                Json(serde_json::json!({ "error": e.to_string() })),
            )
                .into_response();
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return resp;
        }
    };
    let scope = state.gate.publisher_scope(publisher);
    let mut req = req;
    req.extensions_mut().insert(scope);
    if req.method() == Method::POST {
        if let Err(wait) = state.gate.take_publish(publisher) {
            metrics::counter!(m::PUBLISHES_REFUSED, "reason" => "rate_limited").increment(1);
            if let Some(skipped) = RATE_LIMITED_LOG.ready() {
                tracing::info!(path = %req.uri().path(), skipped, "publish rate limit reached");
            }
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            let mut resp = (
                StatusCode::TOO_MANY_REQUESTS,
                Json(serde_json::json!({ "error": "publish rate limit reached for this key; retry later" })),
            )
                .into_response();
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return resp;
        }
    }
    next.run(req).await
}

/// Path parameters, with a JSON 400 instead of axum's text rejection.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(t)| Self(t))
            .map_err(|e| ApiError::BadRequest(format!("invalid path: {}", e.body_text())))
    }
}

fn hub_index(state: &AppState, name: &str) -> Result<usize, ApiError> {
    state
        .node
        .hub_index(name)
        .ok_or_else(|| ApiError::UnknownHub(name.to_owned()))
}

fn group(raw: &str) -> Result<GroupName, ApiError> {
    GroupName::parse(raw).map_err(|source| ApiError::InvalidName {
        what: "group name",
        source,
    })
}

fn user(raw: &str) -> Result<UserId, ApiError> {
    UserId::parse(raw).map_err(|source| ApiError::InvalidName {
        what: "user id",
        source,
    })
}

fn connection(raw: &str) -> Result<ConnectionId, ApiError> {
    ConnectionId::parse(raw)
        .ok_or_else(|| ApiError::UnknownConnection(raw.chars().take(64).collect()))
}

/// The request's correlation id: `X-Correlation-Id`, else the trace id of a W3C
/// `traceparent`, else a new one.
pub(crate) fn correlation(headers: &HeaderMap) -> Result<CorrelationId, ApiError> {
    match headers.get("x-correlation-id") {
        None => Ok(headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(|t| t.split('-').nth(1))
            .filter(|id| {
                id.len() == 32
                    && id.bytes().all(|b| b.is_ascii_hexdigit())
                    && id.bytes().any(|b| b != b'0')
            })
            .and_then(CorrelationId::parse)
            .unwrap_or_else(CorrelationId::generate)),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(CorrelationId::parse)
            .ok_or_else(|| {
                ApiError::BadRequest(
                    "invalid X-Correlation-Id: 1 to 128 visible ASCII characters expected".into(),
                )
            }),
    }
}

/// What every send route takes from the request besides path and body.
pub(crate) struct Req {
    /// The request's headers.
    pub headers: HeaderMap,
    /// The publisher's idempotency scope.
    pub scope: PublisherScope,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Req {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self {
            headers: parts.headers.clone(),
            scope: parts
                .extensions
                .get::<PublisherScope>()
                .cloned()
                .unwrap_or_else(|| PublisherScope("open".to_owned())),
        })
    }
}

/// Longest `Idempotency-Key` accepted, in bytes.
const MAX_IDEMPOTENCY_KEY: usize = 255;

/// The request's `Idempotency-Key` (IETF httpapi draft), scoped to its publisher: 1 to
/// 255 visible ASCII characters.
pub(crate) fn idempotency(
    headers: &HeaderMap,
    scope: &PublisherScope,
) -> Result<Option<IdempotencyKey>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = v
        .to_str()
        .ok()
        .filter(|k| {
            (1..=MAX_IDEMPOTENCY_KEY).contains(&k.len())
                && k.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
        })
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "invalid Idempotency-Key: 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters expected"
            ))
        })?;
    Ok(Some(IdempotencyKey {
        scope: scope.0.clone(),
        key: key.to_owned(),
        exact: true,
    }))
}

/// Reads a request body, mapping the size limit to 413 and other failures to 400.
pub(crate) fn read_body(
    body: Result<Bytes, BytesRejection>,
    state: &AppState,
) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(state.node.limits().max_body_bytes)
        } else {
            ApiError::BadRequest(format!(
                "could not read the request body: {}",
                e.body_text()
            ))
        }
    })
}

/// A trailing slash where a name belongs: the name is empty.
async fn empty_name(uri: axum::http::Uri) -> ApiError {
    let what = if uri.path().ends_with("/users/") {
        "user id"
    } else {
        "group name"
    };
    ApiError::InvalidName {
        what,
        source: crate::ids::NameError::Empty { what },
    }
}
