//! `POST {hub}/negotiate` and the WebSocket upgrade at `{hub}`.
//!
//! Both authenticate the client with the hub's auth mode and answer 401 without a valid
//! credential. Negotiate hands out a signed connection token bound to the hub and the
//! client's identity, so the WebSocket may reach any node of the cluster; the token opens
//! one connection. The upgrade takes a handshake slot only once the credential checked out.
//!
//! What both must pass, and the refusals, are in [`super::admission`].

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::admission::{admit, cors, param, refuse, refused, QueryResult};
use super::error::ApiError;
use super::gate::credential;
use super::AppState;
use crate::auth::TokenBinding;
use crate::ids::ConnectionId;
use crate::protocol::negotiate::{NegotiateResponse, VersionRequest};
use crate::session::{self, SessionStart};
use crate::ws::upgrade::{self, UpgradeError};

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
    let hub_def = &state.node.hubs()[hub];
    let identity = match state
        .gate
        .authenticate_client(hub_def, presented.as_deref())
        .await
    {
        Ok(identity) => identity,
        Err(e) => return cors(refused(&state, hub, "negotiate", &e), &headers),
    };
    let resp = match VersionRequest::from_query(param(&query, "negotiateVersion")).select() {
        Ok(version) => {
            let id = ConnectionId::random();
            // Version 0 clients connect with the connection id itself, so for them the id
            // is the signed token: harmless, since it opens one connection, for this
            // identity only.
            // Offered only to a client that asks (the JS client fails on an offer it did
            // not ask for), when the node keeps connections for a window at all.
            let stateful = version >= 1
                && param(&query, "useStatefulReconnect")
                    .is_some_and(|v| v.eq_ignore_ascii_case("true"))
                && !state.node.timeouts().reconnect_window().is_zero();
            let token = state.gate.tokens.issue_with(
                &id,
                state.node.timeouts().negotiate_ttl(),
                version == 0,
                stateful,
                TokenBinding::new(hub_def.name(), &identity),
            );
            let public_id = if version == 0 {
                token.clone()
            } else {
                id.to_string()
            };
            let reply = NegotiateResponse::new(version, public_id, token);
            let reply = if stateful {
                reply.with_stateful_reconnect()
            } else {
                reply
            };
            Json(reply).into_response()
        }
        // ASP.NET answers version problems with 200 and an `error` the clients surface.
        Err(text) => Json(serde_json::json!({ "error": text })).into_response(),
    };
    cors(resp, &headers)
}

/// The WebSocket upgrade (its accept key and hyper's handle on the connection) and the
/// address it comes from (known when the server records peer addresses).
#[derive(Debug)]
pub struct Upgrade {
    ws: Result<(HeaderValue, hyper::upgrade::OnUpgrade), UpgradeError>,
    peer: Option<SocketAddr>,
}

impl<S: Send + Sync> FromRequestParts<S> for Upgrade {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        let ws = upgrade::check(&parts.method, &parts.headers).and_then(|accept| {
            parts
                .extensions
                .remove::<hyper::upgrade::OnUpgrade>()
                .map(|on| (accept, on))
                .ok_or(UpgradeError::NotUpgrade)
        });
        Ok(Self { ws, peer })
    }
}

/// Runs a session once hyper has written the 101 and let go of the socket. An async fn,
/// not a closure, so its arguments are stored once in the connection's task.
async fn start_session(
    on_upgrade: hyper::upgrade::OnUpgrade,
    node: std::sync::Arc<crate::node::Node>,
    mut start: SessionStart,
) {
    let upgraded = match on_upgrade.await {
        Ok(u) => u,
        Err(e) => {
            tracing::debug!(error = %e, "WebSocket upgrade did not complete");
            return;
        }
    };
    match super::serve::take_socket(upgraded) {
        Some(upgraded) => session::run(upgraded, &node, &mut start).await,
        None => tracing::error!("WebSocket upgrade on a connection without a TCP socket"),
    }
}

/// `GET {hub}` with `Upgrade: websocket`: `?id=` from negotiate, or none
/// (skipNegotiation).
pub async fn connect(
    State(state): State<AppState>,
    hub: usize,
    query: QueryResult,
    headers: HeaderMap,
    upgrade: Upgrade,
) -> Response {
    let query = query.map(|q| q.0).unwrap_or_default();
    let (accept, on_upgrade) = match upgrade.ws {
        Ok(ws) => ws,
        // Server-Sent Events or a long poll of a negotiated connection.
        Err(_) if param(&query, "id").is_some_and(|id| !id.is_empty()) => {
            return super::transports::get(state, hub, query, headers, upgrade.peer).await;
        }
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(serde_json::json!({ "error": format!("a hub is reached with a WebSocket upgrade, or with ?id= from negotiate for Server-Sent Events and long polling: {e}") })),
            )
                .into_response();
        }
    };
    let node = state.node.clone();
    let start = match admit(&state, hub, &query, &headers, upgrade.peer, true).await {
        Ok(start) => start,
        Err(refusal) => return refusal,
    };
    state.sessions.spawn(start_session(on_upgrade, node, start));
    upgrade::switching(accept)
}
