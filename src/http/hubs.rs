//! `POST {hub}/negotiate` and the WebSocket upgrade at `{hub}`.

use axum::extract::ws::{rejection::WebSocketUpgradeRejection, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::error::ApiError;
use super::AppState;
use crate::hub::Caller;
use crate::ids::ConnectionId;
use crate::node::AttachError;
use crate::protocol::negotiate::{NegotiateResponse, VersionRequest};
use crate::session::{self, SessionStart};

/// Query parameters, matched case-insensitively as ASP.NET does; unknown ones are
/// ignored (clients add their own).
type RawQuery = Query<Vec<(String, String)>>;

fn param<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The credential a client presented: `access_token` in the query (browsers cannot set
/// headers on WebSockets) or `Authorization: Bearer`.
pub fn credential(query: &[(String, String)], headers: &HeaderMap) -> Option<String> {
    if let Some(t) = param(query, "access_token").filter(|t| !t.is_empty()) {
        return Some(t.to_owned());
    }
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty())
        .then(|| token.trim().to_owned())
}

/// `POST {hub}/negotiate`.
pub async fn negotiate(
    State(state): State<AppState>,
    _hub: usize,
    query: Result<RawQuery, axum::extract::rejection::QueryRejection>,
) -> Response {
    if state.node.is_draining() {
        return ApiError::Draining.into_response();
    }
    let query = query.map(|q| q.0).unwrap_or_default();
    match VersionRequest::from_query(param(&query, "negotiateVersion")).select() {
        Ok(version) => {
            let (id, token) = state.node.negotiate(version);
            Json(NegotiateResponse::new(version, id.to_string(), token)).into_response()
        }
        // ASP.NET answers version problems with 200 and an `error` the clients surface.
        Err(text) => Json(serde_json::json!({ "error": text })).into_response(),
    }
}

/// `GET {hub}` with `Upgrade: websocket`: `?id=` from negotiate, or none
/// (skipNegotiation).
pub async fn connect(
    State(state): State<AppState>,
    hub: usize,
    query: Result<RawQuery, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(_) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(serde_json::json!({ "error": "this endpoint accepts WebSocket connections only (the only transport served)" })),
            )
                .into_response()
        }
    };
    if state.node.is_draining() {
        return ApiError::Draining.into_response();
    }
    let query = query.map(|q| q.0).unwrap_or_default();
    let (connection_id, token) = match param(&query, "id") {
        None | Some("") => (ConnectionId::random(), None),
        Some(token) => match state.node.attach(token) {
            Ok(id) => (id, Some(token.to_owned())),
            Err(AttachError::NotFound) => {
                return (
                    StatusCode::NOT_FOUND,
                    Json(serde_json::json!({ "error": "No Connection with that ID" })),
                )
                    .into_response()
            }
            Err(AttachError::Active) => {
                return (
                    StatusCode::CONFLICT,
                    Json(serde_json::json!({ "error": "Connection ID is already in use" })),
                )
                    .into_response()
            }
        },
    };
    // The credential is carried to the session; its checks belong to the hub's auth mode.
    let _credential = credential(&query, &headers);
    let caller = Caller {
        connection_id,
        user: None,
        virtual_key: None,
    };
    let node = state.node.clone();
    let sessions = state.sessions.clone();
    let max_record = node.limits().max_record_bytes;
    ws
        // Records are bounded by the record reader; the WebSocket limits only stop a
        // single huge frame from being buffered before that check can run.
        .max_message_size(max_record + 64 * 1024)
        .max_frame_size(max_record + 64 * 1024)
        .on_upgrade(move |socket| {
            sessions.track_future(session::run(
                socket,
                node,
                SessionStart { hub, caller, token },
            ))
        })
}
