//! `POST {hub}/negotiate` and the WebSocket upgrade at `{hub}`.
//!
//! Both authenticate the client with the hub's auth mode and answer 401 without a valid
//! credential. Negotiate hands out a signed connection token bound to the hub and the
//! client's identity, so the WebSocket may reach any node of the cluster; the token opens
//! one connection. The upgrade takes a handshake slot only once the credential checked out.
//!
//! Refusals are counted by reason and logged at debug: a flood of them must not become a
//! flood of log lines.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::error::ApiError;
use super::gate::credential;
use super::AppState;
use crate::auth::{
    AdmissionRefusal, AuthError, AuthMode, Identity, TokenBinding, TokenError, VerifiedToken,
};
use crate::backplane::Backplane;
use crate::hub::Caller;
use crate::ids::ConnectionId;
use crate::metrics as m;
use crate::protocol::negotiate::{NegotiateResponse, VersionRequest};
use crate::session::{self, SessionStart};
use crate::ws::upgrade::{self, UpgradeError};

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
    let reason = match e {
        AuthError::TooLong => m::REFUSED_CREDENTIAL_TOO_LONG,
        AuthError::UnusableUser => m::REFUSED_UNUSABLE_USER,
        AuthError::BackendBusy => m::REFUSED_AUTH_BACKEND_BUSY,
        _ => stage,
    };
    let hub_name = state.node.hubs()[hub].name().to_owned();
    metrics::counter!(m::CONNECTIONS_REFUSED, "hub" => hub_name.clone(), "reason" => reason)
        .increment(1);
    tracing::debug!(hub = %hub_name, stage, reason, error = %e, "client refused");
    let status = match e {
        AuthError::BackendUnavailable | AuthError::BackendBusy => StatusCode::SERVICE_UNAVAILABLE,
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
    tracing::debug!(hub = %hub_name, reason, "client refused");
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

/// Takes a stateful connection over for the transport being opened; a 404 (the client
/// then starts a new connection, as ASP.NET's clients do) when no live node holds it.
async fn take_over(
    state: &AppState,
    hub: usize,
    id: &ConnectionId,
) -> Result<crate::node::Resumed, Response> {
    state.node.take_over(hub, id).await.map_err(|e| {
        tracing::info!(connection = %id, error = %e, "a stateful connection could not be resumed");
        refuse(
            state,
            hub,
            "resume",
            StatusCode::NOT_FOUND,
            "No Connection with that ID",
        )
    })
}

/// Whether this is the first use of a connection token, on this node and, on Redis, in
/// the cluster. While Redis is unreachable only this node's record is checked: clients
/// keep connecting during an outage, as everywhere else.
async fn first_use(state: &AppState, token: &VerifiedToken) -> bool {
    if !state.gate.used_tokens.first_use(&token.id, token.remaining) {
        return false;
    }
    let backplane = state.node.backplane();
    if !matches!(backplane, Backplane::Redis(_)) {
        // One process: this node's record (or the shared bus's registry) is the whole
        // cluster.
        return true;
    }
    let key = state
        .node
        .keys()
        .idempotency_record("connection-token", token.id.as_str());
    match backplane.recall(&key).await {
        Ok(Some(_)) => return false,
        Ok(None) => {}
        Err(e) => {
            tracing::debug!(error = %e, "cannot check connection-token use cluster-wide");
            return true;
        }
    }
    // Two nodes checking at once both pass; the connection id each then registers is
    // refused cluster-wide to all but one.
    let ttl = token.remaining.max(std::time::Duration::from_millis(1));
    if let Err(e) = backplane.remember(&key, "used", ttl).await {
        tracing::debug!(error = %e, "cannot record connection-token use cluster-wide");
    }
    true
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
    let (accept, on_upgrade) = match upgrade.ws {
        Ok(ws) => ws,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(serde_json::json!({ "error": format!("this endpoint accepts WebSocket connections only (the only transport served): {e}") })),
            )
                .into_response();
        }
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
    let query = query.map(|q| q.0).unwrap_or_default();
    let hub_def = &node.hubs()[hub];
    let presented = credential(&query, &headers);
    // The credential first: a handshake slot is only for a client that proved who it is,
    // so invalid credentials cannot hold slots.
    let identity: Identity = match state
        .gate
        .authenticate_client(hub_def, presented.as_deref())
        .await
    {
        Ok(i) => i,
        Err(e) => return refused(&state, hub, "upgrade", &e),
    };
    // On an anonymous hub the credential proves nothing: anyone could vary it.
    let counted = (hub_def.spec.auth != AuthMode::None)
        .then_some(presented.as_deref())
        .flatten();
    let source = state.gate.source(upgrade.peer, &headers);
    let permit = match state.gate.admit_handshake(counted, source) {
        Ok(p) => p,
        Err(refusal) => {
            let (reason, text) = match refusal {
                AdmissionRefusal::Node => (
                    "handshakes",
                    "too many connections are being opened; retry shortly",
                ),
                AdmissionRefusal::Credential => (
                    m::REFUSED_HANDSHAKES_PER_CREDENTIAL,
                    "too many connections are being opened with this credential; retry shortly",
                ),
                AdmissionRefusal::Source => (
                    m::REFUSED_HANDSHAKES_PER_SOURCE,
                    "too many connections are being opened from this address; retry shortly",
                ),
            };
            return refuse(&state, hub, reason, StatusCode::SERVICE_UNAVAILABLE, text);
        }
    };
    let binding = TokenBinding::new(hub_def.name(), &identity);
    let mut stateful = false;
    let mut resume = None;
    let connection_id = match param(&query, "id") {
        None | Some("") => ConnectionId::random(),
        Some(token) => match state.gate.tokens.verify(token, binding) {
            // The connection exists: its client is back on a new transport.
            Ok(verified)
                if verified.stateful
                    && node
                        .has_connection(hub, &verified.id)
                        .await
                        .unwrap_or(false) =>
            {
                match take_over(&state, hub, &verified.id).await {
                    Ok(resumed) => {
                        stateful = true;
                        resume = Some(resumed);
                        verified.id
                    }
                    Err(refusal) => return refusal,
                }
            }
            Err(TokenError::Expired) => match state.gate.tokens.verify_resumable(token, binding) {
                Ok(id) => match take_over(&state, hub, &id).await {
                    Ok(resumed) => {
                        stateful = true;
                        resume = Some(resumed);
                        id
                    }
                    Err(refusal) => return refusal,
                },
                Err(_) => {
                    return refuse(
                        &state,
                        hub,
                        "connection_token",
                        StatusCode::NOT_FOUND,
                        "No Connection with that ID",
                    )
                }
            },
            Ok(verified) => {
                stateful = verified.stateful;
                if node
                    .has_connection(hub, &verified.id)
                    .await
                    .unwrap_or(false)
                {
                    return (
                        StatusCode::CONFLICT,
                        Json(serde_json::json!({ "error": "Connection ID is already in use" })),
                    )
                        .into_response();
                }
                if !first_use(&state, &verified).await {
                    return refuse(
                        &state,
                        hub,
                        m::REFUSED_CONNECTION_TOKEN_REUSED,
                        StatusCode::NOT_FOUND,
                        "No Connection with that ID",
                    );
                }
                verified.id
            }
            Err(TokenError::Mismatch) => {
                return refuse(
                    &state,
                    hub,
                    m::REFUSED_CONNECTION_TOKEN_MISMATCH,
                    StatusCode::NOT_FOUND,
                    "No Connection with that ID",
                );
            }
            Err(TokenError::Forged) => {
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
    let start = SessionStart {
        hub,
        caller,
        handshake_permit: Some(permit),
        user_slot,
        stateful,
        resume,
    };
    state.sessions.spawn(start_session(on_upgrade, node, start));
    upgrade::switching(accept)
}
