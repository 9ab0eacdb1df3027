//! The publish API, in the shape of Azure SignalR's data-plane REST API (v1 paths):
//!
//! | method | path | does |
//! |---|---|---|
//! | POST | `/api/v1/hubs/{hub}` | broadcast (only hubs with `allow_broadcast`) |
//! | POST | `/api/v1/hubs/{hub}/groups/{group}` | send to a group |
//! | GET | `/api/v1/hubs/{hub}/groups/{group}` | member count |
//! | PUT / DELETE | `/api/v1/hubs/{hub}/groups/{group}/connections/{id}` | add / remove a connection |
//! | POST | `/api/v1/hubs/{hub}/users/{user}` | send to a user's connections |
//! | POST | `/api/v1/hubs/{hub}/connections/{id}` | send to one connection |
//! | GET / DELETE | `/api/v1/hubs/{hub}/connections/{id}` | exists? / close it |
//!
//! Sends take `{"target": "...", "arguments": [...]}` and answer 202 once the backplane
//! took the message, with its reach and correlation id.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::Request;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::error::ApiError;
use super::AppState;
use crate::hub::SchemaCheck;
use crate::ids::{ConnectionId, CorrelationId, GroupName, UserId};
use crate::metrics as m;
use crate::node::{Audience, Reach};

/// The API routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/hubs/{hub}", post(broadcast))
        .route(
            "/api/v1/hubs/{hub}/groups/{group}",
            post(to_group).get(group_info),
        )
        .route(
            "/api/v1/hubs/{hub}/groups/{group}/connections/{connection}",
            axum::routing::put(add_to_group).delete(remove_from_group),
        )
        .route("/api/v1/hubs/{hub}/groups/", axum::routing::any(empty_name))
        .route("/api/v1/hubs/{hub}/users/", axum::routing::any(empty_name))
        .route("/api/v1/hubs/{hub}/users/{user}", post(to_user))
        .route(
            "/api/v1/hubs/{hub}/connections/{connection}",
            post(to_connection)
                .get(connection_exists)
                .delete(close_connection),
        )
}

/// Every API request needs a publisher credential; every send also takes one unit of
/// that publisher's rate limit. Refusals are 401 or 429 (with `Retry-After`), counted and
/// logged, and nothing happens.
pub async fn authorize(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let publisher = match state.gate.authenticate_publisher(req.headers(), req.uri()) {
        Ok(p) => p,
        Err(e) => {
            metrics::counter!(m::PUBLISHES_REFUSED, "reason" => "unauthorized").increment(1);
            tracing::info!(path = %req.uri().path(), error = %e, "publish API request refused");
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
    if req.method() == Method::POST {
        if let Err(wait) = state.gate.take_publish(publisher) {
            metrics::counter!(m::PUBLISHES_REFUSED, "reason" => "rate_limited").increment(1);
            tracing::info!(path = %req.uri().path(), "publish rate limit reached");
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

#[derive(Deserialize)]
struct RawPublish<'a> {
    #[serde(default, alias = "Target")]
    target: Option<Value>,
    #[serde(default, borrow, alias = "Arguments")]
    arguments: Option<&'a RawValue>,
}

/// A validated publish body: the target, and the arguments as the JSON text of an array.
#[derive(Debug, PartialEq, Eq)]
pub struct PublishBody {
    /// Event name sent to clients.
    pub target: String,
    /// The arguments array, as received.
    pub arguments_json: String,
}

/// Longest target name accepted, in bytes.
pub const MAX_TARGET_BYTES: usize = 256;

impl PublishBody {
    /// Parses and checks a publish body.
    ///
    /// # Errors
    /// A message naming what is wrong.
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| format!("request body is not valid JSON: {e}"))?;
        if !value.is_object() {
            return Err("request body must be a JSON object with 'target' and 'arguments'".into());
        }
        let raw: RawPublish<'_> =
            serde_json::from_slice(body).map_err(|e| format!("invalid request body: {e}"))?;
        let target = match raw.target {
            Some(Value::String(t)) if t.is_empty() => {
                return Err("'target' must not be empty".into())
            }
            Some(Value::String(t)) if t.len() > MAX_TARGET_BYTES => {
                return Err(format!("'target' is longer than {MAX_TARGET_BYTES} bytes"))
            }
            Some(Value::String(t)) if t.chars().any(char::is_control) => {
                return Err("'target' must not contain control characters".into())
            }
            Some(Value::String(t)) => t,
            Some(_) => return Err("'target' must be a string".into()),
            None => return Err("missing 'target'".into()),
        };
        let arguments_json = match raw.arguments {
            None => "[]".to_owned(),
            Some(a) if a.get() == "null" => "[]".to_owned(),
            Some(a) if a.get().starts_with('[') => a.get().to_owned(),
            Some(_) => return Err("'arguments' must be an array".into()),
        };
        Ok(Self {
            target,
            arguments_json,
        })
    }
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

fn body(body: Result<Bytes, BytesRejection>, state: &AppState) -> Result<PublishBody, ApiError> {
    PublishBody::parse(&read_body(body, state)?).map_err(ApiError::BadRequest)
}

/// Checks a publish against its event contract, per the hub's `schema_check`.
fn check_contract(state: &AppState, hub: usize, body: &PublishBody) -> Result<(), ApiError> {
    let hub_def = &state.node.hubs()[hub];
    if hub_def.spec.schema_check == SchemaCheck::Off {
        return Ok(());
    }
    let Some(contract) = crate::events::contract(hub_def.name(), &body.target) else {
        return Ok(());
    };
    let args: Vec<Value> = serde_json::from_str(&body.arguments_json).unwrap_or_default();
    let Err(problem) = contract.check(&args) else {
        return Ok(());
    };
    let text = format!(
        "arguments do not match the {} contract: {problem}",
        body.target
    );
    metrics::counter!(m::SCHEMA_MISMATCHES, "hub" => hub_def.name().to_owned(), "target" => body.target.clone()).increment(1);
    if hub_def.spec.schema_check == SchemaCheck::Reject {
        tracing::info!(hub = %hub_def.name(), target = %body.target, problem = %problem, "publish refused: contract mismatch");
        return Err(ApiError::BadRequest(text));
    }
    tracing::warn!(hub = %hub_def.name(), target = %body.target, problem = %problem, "publish does not match its contract (sent anyway)");
    Ok(())
}

/// Sends to `audience`, which is parsed from the path only once the hub is known: an
/// unknown hub answers 404 whatever the name.
async fn publish(
    state: &AppState,
    hub: &str,
    audience: impl FnOnce() -> Result<Audience, ApiError>,
    headers: &HeaderMap,
    raw_body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let hub_index = hub_index(state, hub)?;
    let audience = audience()?;
    let hub_name = state.node.hubs()[hub_index].name().to_owned();
    let body = body(raw_body, state)?;
    let correlation = correlation(headers)?;
    if matches!(audience, Audience::Hub) && !state.node.hubs()[hub_index].spec.allow_broadcast {
        return Err(ApiError::BroadcastNotAllowed(hub_name));
    }
    check_contract(state, hub_index, &body)?;
    let result = state
        .node
        .publish(
            hub_index,
            &audience,
            &body.target,
            &body.arguments_json,
            &correlation,
        )
        .await;
    let outcome = if result.is_ok() {
        "accepted"
    } else {
        "refused"
    };
    metrics::histogram!(m::PUBLISH_DURATION, "hub" => hub_name.clone(), "outcome" => outcome)
        .record(started.elapsed().as_secs_f64());
    let reach: Reach = result?;
    metrics::counter!(m::EVENTS_PUBLISHED, "hub" => hub_name.clone(), "target" => body.target.clone())
        .increment(u64::from(!reach.suppressed));
    let to = match &audience {
        Audience::Group(g) => g.to_string(),
        Audience::User(u) => format!("user:{u}"),
        Audience::Connection(c) => format!("connection:{c}"),
        Audience::Hub => "*".to_owned(),
    };
    if !reach.suppressed {
        crate::flows::log_send(
            &body.target,
            &hub_name,
            &to,
            "",
            correlation.as_str(),
            reach.nodes,
        );
    }
    let mut json = serde_json::json!({
        "correlationId": correlation.as_str(),
        "nodes": reach.nodes,
        "localConnections": reach.local_connections,
        "suppressed": usize::from(reach.suppressed),
    });
    if let Some(members) = reach.members {
        json["members"] = members.into();
    }
    let mut resp = (StatusCode::ACCEPTED, Json(json)).into_response();
    if let Ok(v) = HeaderValue::from_str(correlation.as_str()) {
        resp.headers_mut().insert("x-correlation-id", v);
    }
    Ok(resp)
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

async fn broadcast(
    State(state): State<AppState>,
    ApiPath(hub): ApiPath<String>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    publish(&state, &hub, || Ok(Audience::Hub), &headers, raw).await
}

async fn to_group(
    State(state): State<AppState>,
    ApiPath((hub, g)): ApiPath<(String, String)>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let audience = || group(&g).map(Audience::Group);
    publish(&state, &hub, audience, &headers, raw).await
}

async fn to_user(
    State(state): State<AppState>,
    ApiPath((hub, user_id)): ApiPath<(String, String)>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let audience = || user(&user_id).map(Audience::User);
    publish(&state, &hub, audience, &headers, raw).await
}

async fn to_connection(
    State(state): State<AppState>,
    ApiPath((hub, id)): ApiPath<(String, String)>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let audience = || connection(&id).map(Audience::Connection);
    publish(&state, &hub, audience, &headers, raw).await
}

async fn group_info(
    State(state): State<AppState>,
    ApiPath((hub, g)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    let index = hub_index(&state, &hub)?;
    let g = group(&g)?;
    let members = state.node.group_size(index, &g).await?;
    Ok(
        Json(serde_json::json!({ "hub": hub, "group": g.as_str(), "members": members }))
            .into_response(),
    )
}

async fn add_to_group(
    State(state): State<AppState>,
    ApiPath((hub, g, id)): ApiPath<(String, String, String)>,
) -> Result<Response, ApiError> {
    let index = hub_index(&state, &hub)?;
    let g = group(&g)?;
    let id = connection(&id)?;
    state.node.add_to_group(index, &id, &g).await?;
    Ok(Json(serde_json::json!({ "hub": hub, "group": g.as_str(), "connectionId": id.as_str(), "member": true })).into_response())
}

async fn remove_from_group(
    State(state): State<AppState>,
    ApiPath((hub, g, id)): ApiPath<(String, String, String)>,
) -> Result<Response, ApiError> {
    let index = hub_index(&state, &hub)?;
    let g = group(&g)?;
    let id = connection(&id)?;
    let was_member = state.node.remove_from_group(index, &id, &g).await?;
    Ok(Json(serde_json::json!({ "hub": hub, "group": g.as_str(), "connectionId": id.as_str(), "member": false, "wasMember": was_member })).into_response())
}

async fn connection_exists(
    State(state): State<AppState>,
    ApiPath((hub, id)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    let index = hub_index(&state, &hub)?;
    let id = connection(&id)?;
    if state.node.has_connection(index, &id).await? {
        Ok(
            Json(serde_json::json!({ "hub": hub, "connectionId": id.as_str(), "connected": true }))
                .into_response(),
        )
    } else {
        Err(ApiError::UnknownConnection(id.to_string()))
    }
}

async fn close_connection(
    State(state): State<AppState>,
    ApiPath((hub, id)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    let index = hub_index(&state, &hub)?;
    let id = connection(&id)?;
    state.node.close_connection(index, &id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "hub": hub, "connectionId": id.as_str(), "closing": true })),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publish_body_keeps_arguments_verbatim() {
        let b =
            PublishBody::parse(br#"{"target":"SpendUpdate","arguments":[{"a":1},"x"]}"#).unwrap();
        assert_eq!(b.target, "SpendUpdate");
        assert_eq!(b.arguments_json, r#"[{"a":1},"x"]"#);
    }

    #[test]
    fn azure_casing_and_missing_arguments_are_accepted() {
        let b = PublishBody::parse(br#"{"Target":"X"}"#).unwrap();
        assert_eq!(b.arguments_json, "[]");
        let b = PublishBody::parse(br#"{"Target":"X","Arguments":[1]}"#).unwrap();
        assert_eq!(b.arguments_json, "[1]");
    }

    #[test]
    fn bad_bodies_are_refused_with_a_reason() {
        let cases: [(&[u8], &str); 7] = [
            (b"{", "not valid JSON"),
            (b"[1]", "JSON object"),
            (br#"{"arguments":[]}"#, "missing 'target'"),
            (
                br#"{"target":5,"arguments":[]}"#,
                "'target' must be a string",
            ),
            (br#"{"target":"","arguments":[]}"#, "must not be empty"),
            (
                br#"{"target":"X","arguments":{"a":1}}"#,
                "'arguments' must be an array",
            ),
            (
                br#"{"target":"X","arguments":"[1]"}"#,
                "'arguments' must be an array",
            ),
        ];
        for (body, want) in cases {
            let e = PublishBody::parse(body).unwrap_err();
            assert!(e.contains(want), "{} -> {e}", String::from_utf8_lossy(body));
        }
    }
}
