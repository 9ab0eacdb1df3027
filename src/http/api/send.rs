//! The send routes: a publish body's parsing, its contract check, and the publish that
//! answers 202 with the message's reach.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::query::ApiQuery;
use super::{
    connection, correlation, group, hub_index, idempotency, read_body, user, ApiPath, Req,
};
use crate::backplane::BackplaneError;
use crate::events::target_label;
use crate::http::error::ApiError;
use crate::http::gate::PublisherScope;
use crate::http::AppState;
use crate::hub::SchemaCheck;
use crate::ids::{ConnectionId, CorrelationId};
use crate::metrics as m;
use crate::node::{Audience, IdempotencyKey, NodeError, Reach};

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

/// Deepest nesting of arrays and objects accepted in a publish body.
const MAX_NESTING: usize = 128;

/// How deeply arrays and objects nest in a JSON text (strings skipped).
fn nesting(json: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for b in json.bytes() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Longest target name accepted, in bytes.
pub const MAX_TARGET_BYTES: usize = 256;

impl PublishBody {
    /// Parses and checks a publish body.
    ///
    /// # Errors
    /// A message naming what is wrong.
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        // One pass over the body: the arguments stay raw text, only the target is built.
        let raw: Result<RawPublish<'_>, _> = serde_json::from_slice(body);
        let is_object = body
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|&b| b == b'{');
        let raw = match raw {
            Err(e) if !matches!(e.classify(), serde_json::error::Category::Data) => {
                return Err(format!("request body is not valid JSON: {e}"))
            }
            _ if !is_object => {
                return Err(
                    "request body must be a JSON object with 'target' and 'arguments'".into(),
                )
            }
            Err(e) => return Err(format!("invalid request body: {e}")),
            Ok(raw) => raw,
        };
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
        // The arguments stay text, so their depth is checked here: clients parse the
        // record with a nesting limit of 128 (serde_json's, the body's own before), and
        // the record nests its arguments as deep as the body does.
        if raw
            .arguments
            .is_some_and(|a| 1 + nesting(a.get()) > MAX_NESTING)
        {
            return Err(format!(
                "request body is nested more than {MAX_NESTING} levels deep"
            ));
        }
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

/// Where a send goes, as the route's path names it, before any check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendPath<'a> {
    /// `POST /api/v1/hubs/{hub}`: every connection of the hub.
    Hub,
    /// `POST /api/v1/hubs/{hub}/groups/{group}`.
    Group(&'a str),
    /// `POST /api/v1/hubs/{hub}/users/{user}`.
    User(&'a str),
    /// `POST /api/v1/hubs/{hub}/connections/{id}`.
    Connection(&'a str),
}

/// Everything a send route takes from the request's path, headers and body, checked.
#[derive(Debug)]
pub struct SendRequest {
    /// Who it goes to.
    pub audience: Audience,
    /// The target and arguments.
    pub body: PublishBody,
    /// From `X-Correlation-Id`, else `traceparent`, else new.
    pub correlation: CorrelationId,
    /// From `Idempotency-Key`, scoped to the publisher.
    pub idempotency: Option<IdempotencyKey>,
}

impl SendRequest {
    /// Checks a send request as the send routes do, and in their order: the name in the
    /// path, the body (`Err` when it could not be read), the correlation id, the
    /// idempotency key. Pure, so the fuzz target and the property tests run exactly what
    /// the routes run. The hub is looked up before (an unknown hub answers 404 whatever
    /// the rest).
    ///
    /// # Errors
    /// The first check that fails.
    pub fn parse(
        path: SendPath<'_>,
        headers: &HeaderMap,
        scope: &PublisherScope,
        body: Result<Bytes, ApiError>,
    ) -> Result<Self, ApiError> {
        let audience = match path {
            SendPath::Hub => Audience::Hub,
            SendPath::Group(g) => Audience::Group(group(g)?),
            SendPath::User(u) => Audience::User(user(u)?),
            SendPath::Connection(c) => Audience::Connection(connection(c)?),
        };
        let body = PublishBody::parse(&body?).map_err(ApiError::BadRequest)?;
        let correlation = correlation(headers)?;
        let idempotency = idempotency(headers, scope)?;
        Ok(Self {
            audience,
            body,
            correlation,
            idempotency,
        })
    }
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
    metrics::counter!(m::SCHEMA_MISMATCHES, "hub" => hub_def.name().to_owned(), "target" => target_label(hub_def, &body.target)).increment(1);
    if hub_def.spec.schema_check == SchemaCheck::Reject {
        tracing::info!(hub = %hub_def.name(), target = %body.target, problem = %problem, "publish refused: contract mismatch");
        return Err(ApiError::BadRequest(text));
    }
    tracing::warn!(hub = %hub_def.name(), target = %body.target, problem = %problem, "publish does not match its contract (sent anyway)");
    Ok(())
}

/// Sends to the audience `path` names, which is parsed only once the hub is known: an
/// unknown hub answers 404 whatever the name.
pub(super) async fn publish(
    state: &AppState,
    hub: &str,
    path: SendPath<'_>,
    req: Req,
    raw_body: Result<Bytes, BytesRejection>,
    excluded: &[ConnectionId],
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let hub_index = hub_index(state, hub)?;
    let hub_name = state.node.hubs()[hub_index].name();
    let SendRequest {
        audience,
        body,
        correlation,
        idempotency: key,
    } = SendRequest::parse(path, &req.headers, &req.scope, read_body(raw_body, state))?;
    if matches!(audience, Audience::Hub) && !state.node.hubs()[hub_index].spec.allow_broadcast {
        return Err(ApiError::BroadcastNotAllowed(hub_name.to_owned()));
    }
    check_contract(state, hub_index, &body)?;
    let result = state
        .node
        .publish_excluding(
            hub_index,
            &audience,
            &body.target,
            &body.arguments_json,
            &correlation,
            key.as_ref(),
            excluded,
        )
        .await;
    let meters = state.node.meters(hub_index);
    if result.is_ok() {
        &meters.publish_accepted
    } else {
        &meters.publish_refused
    }
    .record(started.elapsed().as_secs_f64());
    let reach: Reach = result.inspect_err(count_unavailable)?;
    if let Some(first) = &reach.repeat_of {
        metrics::counter!(m::PUBLISHES_REPEATED).increment(1);
        return Ok(replay(first, &reach));
    }
    // The publisher names the target: as a label, only one its hub declares.
    let label = target_label(&state.node.hubs()[hub_index], &body.target);
    meters
        .events_published(&label)
        .increment(u64::from(!reach.suppressed));
    // Per publish, so at debug: at INFO the line cost a fifth of the node's CPU in the
    // closed-loop benchmark. The flows' events keep the gateway's INFO lines.
    if !reach.suppressed && tracing::enabled!(target: "hubcast::publish", tracing::Level::DEBUG) {
        let to = match &audience {
            Audience::Group(g) => g.to_string(),
            Audience::User(u) => format!("user:{u}"),
            Audience::Connection(c) => format!("connection:{c}"),
            Audience::Hub => "*".to_owned(),
        };
        tracing::debug!(
            target: "hubcast::publish",
            hub = hub_name,
            groups = %to,
            correlation_id = correlation.as_str(),
            nodes = reach.nodes,
            "[SignalR:{}] Sent notification - Groups: [{to}]",
            body.target
        );
    }
    Ok(accepted(correlation.as_str(), &reach))
}

/// The 202: the message's reach and correlation id (also as `X-Correlation-Id`).
fn accepted(correlation: &str, reach: &Reach) -> Response {
    let mut json = serde_json::json!({
        "correlationId": correlation,
        "nodes": reach.nodes,
        "localConnections": reach.local_connections,
        "suppressed": usize::from(reach.suppressed),
    });
    if let Some(members) = reach.members {
        json["members"] = members.into();
    }
    let mut resp = (StatusCode::ACCEPTED, Json(json)).into_response();
    if let Ok(v) = HeaderValue::from_str(correlation) {
        resp.headers_mut().insert("x-correlation-id", v);
    }
    resp
}

/// A retry with a known `Idempotency-Key`: the first publish's answer again, marked as
/// a replay; nothing was sent now.
fn replay(first_correlation: &str, reach: &Reach) -> Response {
    replayed(accepted(first_correlation, reach))
}

/// Marks an answer as a replay of an earlier one.
pub(crate) fn replayed(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    resp
}

/// Counts a publish the backplane could not take, by outcome.
pub(crate) fn count_unavailable(e: &NodeError) {
    if let NodeError::Backplane(b) = e {
        let outcome = match b {
            BackplaneError::Unknown(_) => "unknown",
            _ => "not_sent",
        };
        metrics::counter!(m::PUBLISHES_UNAVAILABLE, "outcome" => outcome).increment(1);
    }
}

pub(super) async fn broadcast(
    State(state): State<AppState>,
    ApiPath(hub): ApiPath<String>,
    query: ApiQuery,
    req: Req,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    publish(&state, &hub, SendPath::Hub, req, raw, &query.excluded()?).await
}

pub(super) async fn to_group(
    State(state): State<AppState>,
    ApiPath((hub, g)): ApiPath<(String, String)>,
    query: ApiQuery,
    req: Req,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let excluded = query.excluded()?;
    publish(&state, &hub, SendPath::Group(&g), req, raw, &excluded).await
}

pub(super) async fn to_user(
    State(state): State<AppState>,
    ApiPath((hub, user_id)): ApiPath<(String, String)>,
    req: Req,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    publish(&state, &hub, SendPath::User(&user_id), req, raw, &[]).await
}

pub(super) async fn to_connection(
    State(state): State<AppState>,
    ApiPath((hub, id)): ApiPath<(String, String)>,
    req: Req,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    publish(&state, &hub, SendPath::Connection(&id), req, raw, &[]).await
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
