//! The send routes: a publish body's parsing, its contract check, and the publish that
//! answers 202 with the message's reach.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::{
    connection, correlation, group, hub_index, idempotency, read_body, user, ApiPath, Req,
};
use crate::backplane::BackplaneError;
use crate::events::target_label;
use crate::http::error::ApiError;
use crate::http::AppState;
use crate::hub::SchemaCheck;
use crate::metrics as m;
use crate::node::{Audience, NodeError, Reach};

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
    metrics::counter!(m::SCHEMA_MISMATCHES, "hub" => hub_def.name().to_owned(), "target" => target_label(hub_def, &body.target)).increment(1);
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
    req: Req,
    raw_body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let hub_index = hub_index(state, hub)?;
    let audience = audience()?;
    let hub_name = state.node.hubs()[hub_index].name().to_owned();
    let body = body(raw_body, state)?;
    let correlation = correlation(&req.headers)?;
    let key = idempotency(&req.headers, &req.scope)?;
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
            key.as_ref(),
        )
        .await;
    let outcome = if result.is_ok() {
        "accepted"
    } else {
        "refused"
    };
    metrics::histogram!(m::PUBLISH_DURATION, "hub" => hub_name.clone(), "outcome" => outcome)
        .record(started.elapsed().as_secs_f64());
    let reach: Reach = result.inspect_err(count_unavailable)?;
    if let Some(first) = &reach.repeat_of {
        metrics::counter!(m::PUBLISHES_REPEATED).increment(1);
        return Ok(replay(first, &reach));
    }
    // The publisher names the target: as a label, only one its hub declares.
    let label = target_label(&state.node.hubs()[hub_index], &body.target);
    metrics::counter!(m::EVENTS_PUBLISHED, "hub" => hub_name.clone(), "target" => label)
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
    req: Req,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    publish(&state, &hub, || Ok(Audience::Hub), req, raw).await
}

pub(super) async fn to_group(
    State(state): State<AppState>,
    ApiPath((hub, g)): ApiPath<(String, String)>,
    req: Req,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let audience = || group(&g).map(Audience::Group);
    publish(&state, &hub, audience, req, raw).await
}

pub(super) async fn to_user(
    State(state): State<AppState>,
    ApiPath((hub, user_id)): ApiPath<(String, String)>,
    req: Req,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let audience = || user(&user_id).map(Audience::User);
    publish(&state, &hub, audience, req, raw).await
}

pub(super) async fn to_connection(
    State(state): State<AppState>,
    ApiPath((hub, id)): ApiPath<(String, String)>,
    req: Req,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let audience = || connection(&id).map(Audience::Connection);
    publish(&state, &hub, audience, req, raw).await
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
