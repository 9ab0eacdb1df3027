//! `POST {hub}/negotiate` and the WebSocket upgrade at `{hub}`.
//!
//! Both authenticate the client with the hub's auth mode and answer 401 without a valid
//! credential. Negotiate hands out a signed connection token, so the WebSocket may reach
//! any node of the cluster.

use axum::extract::ws::{rejection::WebSocketUpgradeRejection, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::error::ApiError;
use super::gate::credential;
use super::AppState;
use crate::auth::{AuthError, Identity, TokenError};
use crate::hub::Caller;
use crate::ids::ConnectionId;
use crate::metrics as m;
use crate::protocol::negotiate::{NegotiateResponse, VersionRequest};
use crate::session::{self, SessionStart};

/// Query parameters, matched case-insensitively as ASP.NET does; unknown ones are
/// ignored (clients add their own).
type RawQuery = Query<Vec<(String, String)>>;
type QueryResult = Result<RawQuery, axum::extract::rejection::QueryRejection>;

fn param<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn refused(state: &AppState, hub: usize, stage: &'static str, e: &AuthError) -> Response {
    let hub_name = state.node.hubs()[hub].name().to_owned();
    metrics::counter!(m::CONNECTIONS_REFUSED, "hub" => hub_name.clone(), "reason" => stage)
        .increment(1);
    tracing::info!(hub = %hub_name, stage, error = %e, "client refused");
    let status = match e {
        AuthError::BackendUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::UNAUTHORIZED,
    };
    (status, Json(serde_json::json!({ "error": e.to_string() }))).into_response()
}

fn refuse(
    state: &AppState,
    hub: usize,
    reason: &'static str,
    status: StatusCode,
    text: &str,
) -> Response {
    let hub_name = state.node.hubs()[hub].name().to_owned();
    metrics::counter!(m::CONNECTIONS_REFUSED, "hub" => hub_name.clone(), "reason" => reason)
        .increment(1);
    tracing::info!(hub = %hub_name, reason, "client refused");
    (status, Json(serde_json::json!({ "error": text }))).into_response()
}

/// Adds the CORS headers a credentialed browser request needs, for an allowed origin.
fn cors(mut resp: Response, headers: &HeaderMap) -> Response {
    if let Some(origin) = headers.get(header::ORIGIN) {
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    resp
}

/// `OPTIONS {hub}/negotiate`: the CORS preflight.
pub async fn preflight(State(state): State<AppState>, hub: usize, headers: HeaderMap) -> Response {
    if !state.gate.origin_allowed(&headers) {
        return refuse(
            &state,
            hub,
            "origin",
            StatusCode::FORBIDDEN,
            "this origin is not allowed",
        );
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("authorization, content-type, x-requested-with, x-signalr-user-agent, x-master-key, x-api-key"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    cors(resp, &headers)
}

/// `POST {hub}/negotiate`.
pub async fn negotiate(
    State(state): State<AppState>,
    hub: usize,
    query: QueryResult,
    headers: HeaderMap,
) -> Response {
    if !state.gate.origin_allowed(&headers) {
        return refuse(
            &state,
            hub,
            "origin",
            StatusCode::FORBIDDEN,
            "this origin is not allowed",
        );
    }
    if state.node.is_draining() {
        return cors(ApiError::Draining.into_response(), &headers);
    }
    let query = query.map(|q| q.0).unwrap_or_default();
    let presented = credential(&query, &headers);
    if let Err(e) = state
        .gate
        .authenticate_client(&state.node.hubs()[hub], presented.as_deref())
        .await
    {
        return cors(refused(&state, hub, "negotiate", &e), &headers);
    }
    let resp = match VersionRequest::from_query(param(&query, "negotiateVersion")).select() {
        Ok(version) => {
            let id = ConnectionId::random();
            // Version 0 clients connect with the connection id itself, so for them the id
            // is the signed token.
            let token =
                state
                    .gate
                    .tokens
                    .issue(&id, state.node.timeouts().negotiate_ttl(), version == 0);
            let public_id = if version == 0 {
                token.clone()
            } else {
                id.to_string()
            };
            Json(NegotiateResponse::new(version, public_id, token)).into_response()
        }
        // ASP.NET answers version problems with 200 and an `error` the clients surface.
        Err(text) => Json(serde_json::json!({ "error": text })).into_response(),
    };
    cors(resp, &headers)
}

/// `GET {hub}` with `Upgrade: websocket`: `?id=` from negotiate, or none
/// (skipNegotiation).
pub async fn connect(
    State(state): State<AppState>,
    hub: usize,
    query: QueryResult,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let Ok(ws) = ws else {
        return (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({ "error": "this endpoint accepts WebSocket connections only (the only transport served)" })),
        )
            .into_response();
    };
    if !state.gate.origin_allowed(&headers) {
        return refuse(
            &state,
            hub,
            "origin",
            StatusCode::FORBIDDEN,
            "this origin is not allowed",
        );
    }
    if state.node.is_draining() {
        return ApiError::Draining.into_response();
    }
    let node = state.node.clone();
    if node.registry().connection_count() >= node.limits().max_connections_per_node {
        return refuse(
            &state,
            hub,
            "node_full",
            StatusCode::SERVICE_UNAVAILABLE,
            "this node holds the most connections allowed",
        );
    }
    let Some(permit) = state.gate.handshake_permit() else {
        return refuse(
            &state,
            hub,
            "handshakes",
            StatusCode::SERVICE_UNAVAILABLE,
            "too many connections are being opened; retry shortly",
        );
    };
    let query = query.map(|q| q.0).unwrap_or_default();
    let hub_def = &node.hubs()[hub];
    let identity: Identity = match state
        .gate
        .authenticate_client(hub_def, credential(&query, &headers).as_deref())
        .await
    {
        Ok(i) => i,
        Err(e) => return refused(&state, hub, "upgrade", &e),
    };
    let connection_id = match param(&query, "id") {
        None | Some("") => ConnectionId::random(),
        Some(token) => match state.gate.tokens.verify(token) {
            Ok(id) => {
                if node.has_connection(hub, &id).await.unwrap_or(false) {
                    return (
                        StatusCode::CONFLICT,
                        Json(serde_json::json!({ "error": "Connection ID is already in use" })),
                    )
                        .into_response();
                }
                id
            }
            Err(TokenError::Forged | TokenError::Expired) => {
                return refuse(
                    &state,
                    hub,
                    "connection_token",
                    StatusCode::NOT_FOUND,
                    "No Connection with that ID",
                );
            }
        },
    };
    let user_slot = match &identity.user {
        Some(u) => match state.gate.user_slot(u.as_str()) {
            Some(slot) => Some(slot),
            None => {
                return refuse(
                    &state,
                    hub,
                    "user_full",
                    StatusCode::TOO_MANY_REQUESTS,
                    "this user holds the most connections allowed",
                );
            }
        },
        None => None,
    };
    let caller = Caller {
        connection_id,
        user: identity.user,
        virtual_key: identity.virtual_key,
        granted: identity.groups,
    };
    let sessions = state.sessions.clone();
    let max_record = node.limits().max_record_bytes;
    // Bytes a WebSocket gathers before writing them to the socket (tungstenite's default).
    let write_buffer = 128 * 1024;
    ws
        // Records are bounded by the record reader; the WebSocket limits only stop a
        // single huge frame from being buffered before that check can run.
        // tungstenite zero-fills its whole read buffer before every read attempt, and
        // keeps it per connection: the 128 KiB default cost a third of the CPU under load
        // and 128 KiB of RSS per connection. Records are small; 4 KiB reads suffice.
        .read_buffer_size(1024)
        .max_message_size(max_record + 64 * 1024)
        .max_frame_size(max_record + 64 * 1024)
        // Unbounded by default: every Ping a client sends queues a Pong, so a client
        // that pings and never reads grew the node by 90 MiB a second. The writer
        // flushes past `write_buffer`, so the buffer holds at most that plus the
        // largest frame; when Pongs have filled it, a Pong waits in one slot and the next
        // message fails the write, which closes the connection as `write_error`.
        .write_buffer_size(write_buffer)
        .max_write_buffer_size(write_buffer + node.limits().largest_frame())
        .on_upgrade(move |socket| {
            let fut = session::run(
                socket,
                node,
                SessionStart {
                    hub,
                    caller,
                    handshake_permit: Some(permit),
                    user_slot,
                },
            );

            sessions.track_future(fut)
        })
}
