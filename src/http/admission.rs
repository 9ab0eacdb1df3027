//! What every transport of a hub must pass before its session starts (origin, drain,
//! capacity, credential, handshake admission, the connection token, the user's limit),
//! shared by the WebSocket upgrade and the HTTP transports, and the refusals they answer
//! with (counted by reason, logged at debug: a flood of refusals must not become a flood
//! of log lines).

use std::net::SocketAddr;

use axum::extract::Query;
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
use crate::session::SessionStart;

/// Query parameters, matched case-insensitively as ASP.NET does; unknown ones are
/// ignored (clients add their own).
pub(super) type RawQuery = Query<Vec<(String, String)>>;
pub(super) type QueryResult = Result<RawQuery, axum::extract::rejection::QueryRejection>;

pub(super) fn param<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

pub(super) fn refused(
    state: &AppState,
    hub: usize,
    stage: &'static str,
    e: &AuthError,
) -> Response {
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

pub(super) fn refuse(
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
pub(super) fn cors(mut resp: Response, headers: &HeaderMap) -> Response {
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

/// Everything a new transport of a hub must pass (origin, drain, capacity, credential,
/// handshake admission, the connection token, the user's limit), and what its session
/// starts from. `resumable`: a stateful connection's token may resume it (WebSockets).
pub(super) async fn admit(
    state: &AppState,
    hub: usize,
    query: &[(String, String)],
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
    resumable: bool,
) -> Result<SessionStart, Response> {
    let state = state.clone();
    let (query, headers) = (query.to_vec(), headers.clone());
    if !state.gate.origin_allowed(&headers) {
        return Err(refuse(
            &state,
            hub,
            "origin",
            StatusCode::FORBIDDEN,
            "this origin is not allowed",
        ));
    }
    if state.node.is_draining() {
        return Err(ApiError::Draining.into_response());
    }
    let node = state.node.clone();
    if node.registry().connection_count() >= node.limits().max_connections_per_node {
        return Err(refuse(
            &state,
            hub,
            "node_full",
            StatusCode::SERVICE_UNAVAILABLE,
            "this node holds the most connections allowed",
        ));
    }
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
        Err(e) => return Err(refused(&state, hub, "upgrade", &e)),
    };
    // On an anonymous hub the credential proves nothing: anyone could vary it.
    let counted = (hub_def.spec.auth != AuthMode::None)
        .then_some(presented.as_deref())
        .flatten();
    let source = state.gate.source(peer, &headers);
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
            return Err(refuse(
                &state,
                hub,
                reason,
                StatusCode::SERVICE_UNAVAILABLE,
                text,
            ));
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
                if resumable
                    && verified.stateful
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
                    Err(refusal) => return Err(refusal),
                }
            }
            Err(TokenError::Expired) if resumable => {
                match state.gate.tokens.verify_resumable(token, binding) {
                    Ok(id) => match take_over(&state, hub, &id).await {
                        Ok(resumed) => {
                            stateful = true;
                            resume = Some(resumed);
                            id
                        }
                        Err(refusal) => return Err(refusal),
                    },
                    Err(_) => {
                        return Err(refuse(
                            &state,
                            hub,
                            "connection_token",
                            StatusCode::NOT_FOUND,
                            "No Connection with that ID",
                        ))
                    }
                }
            }
            Ok(verified) => {
                stateful = verified.stateful;
                if node
                    .has_connection(hub, &verified.id)
                    .await
                    .unwrap_or(false)
                {
                    return Err((
                        StatusCode::CONFLICT,
                        Json(serde_json::json!({ "error": "Connection ID is already in use" })),
                    )
                        .into_response());
                }
                if !first_use(&state, &verified).await {
                    return Err(refuse(
                        &state,
                        hub,
                        m::REFUSED_CONNECTION_TOKEN_REUSED,
                        StatusCode::NOT_FOUND,
                        "No Connection with that ID",
                    ));
                }
                verified.id
            }
            Err(TokenError::Mismatch) => {
                return Err(refuse(
                    &state,
                    hub,
                    m::REFUSED_CONNECTION_TOKEN_MISMATCH,
                    StatusCode::NOT_FOUND,
                    "No Connection with that ID",
                ));
            }
            Err(TokenError::Forged | TokenError::Expired) => {
                return Err(refuse(
                    &state,
                    hub,
                    "connection_token",
                    StatusCode::NOT_FOUND,
                    "No Connection with that ID",
                ));
            }
        },
    };
    let user_slot = match &identity.user {
        Some(u) => match state.gate.user_slot(u.as_str()) {
            Some(slot) => Some(slot),
            None => {
                return Err(refuse(
                    &state,
                    hub,
                    "user_full",
                    StatusCode::TOO_MANY_REQUESTS,
                    "this user holds the most connections allowed",
                ));
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
    Ok(start)
}
