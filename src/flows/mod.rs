//! The gateway's event flows, run once for the whole cluster: services post plain facts
//! (a charge, a health check result, task progress, a webhook delivery outcome) and
//! hubcast applies the rules — budget thresholds, health hysteresis, progress coalescing,
//! circuit breakers, storm protection — with their state in the backplane, so every node
//! agrees and a restart loses nothing.

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::guard::PlannedEvent;
use crate::ids::{CorrelationId, GroupName};
use crate::metrics as m;
use crate::node::{Audience, Guard, IdempotencyKey, Node, NodeError};

mod budget;
mod health;
mod tasks;
mod webhooks;

pub use budget::{spend, SpendFact};
pub use health::{provider_health, HealthFact};
pub use tasks::{task, TaskAction, TaskFact};
pub use webhooks::{webhook_delivery, DeliveryFact};

/// Why a flow could not run.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    /// The request is malformed; the text names what is wrong.
    #[error("{0}")]
    Invalid(String),
    /// A hub the flow sends to is not configured on this node.
    #[error("hub '{0}' is not configured on this node")]
    HubMissing(&'static str),
    /// Publishing or the throttle state failed.
    #[error(transparent)]
    Node(#[from] NodeError),
}

impl From<crate::backplane::BackplaneError> for FlowError {
    fn from(e: crate::backplane::BackplaneError) -> Self {
        Self::Node(NodeError::Backplane(e))
    }
}

/// One event a flow sent (or suppressed).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SentEvent {
    /// Event name.
    pub target: String,
    /// Hub.
    pub hub: String,
    /// Group.
    pub group: String,
    /// Nodes that took it.
    pub nodes: usize,
    /// Connections on this node it is written to.
    pub local_connections: usize,
    /// Not sent: suppressed by storm protection, or progress after the task ended.
    pub suppressed: bool,
}

/// What a flow did, for the 202 body.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FlowReport {
    /// Correlation id of the request, in every event.
    pub correlation_id: String,
    /// Events in the order they were sent.
    pub events: Vec<SentEvent>,
    /// How many of them were suppressed.
    pub suppressed: usize,
    /// Flow-specific facts (thresholds crossed, announcement, breaker changes…).
    #[serde(flatten)]
    pub details: serde_json::Map<String, Value>,
    /// The request's idempotency key: each event sent gets one derived from it and from
    /// what the event is, so a retry after an unknown outcome sends none twice.
    #[serde(skip)]
    idempotency: Option<IdempotencyKey>,
}

impl FlowReport {
    fn new(correlation: &CorrelationId, idempotency: Option<&IdempotencyKey>) -> Self {
        Self {
            correlation_id: correlation.to_string(),
            events: Vec::new(),
            suppressed: 0,
            details: serde_json::Map::new(),
            idempotency: idempotency.cloned(),
        }
    }

    /// The idempotency key of an event this request sends: the request's key with the
    /// event's target, group and arguments (without their timestamps, which a retry
    /// makes anew), joined by a separator no client key can hold.
    fn event_key(&self, target: &str, group: &str, arguments: &[Value]) -> Option<IdempotencyKey> {
        self.idempotency.as_ref().map(|k| {
            use sha2::Digest as _;
            let mut h = sha2::Sha256::new();
            for a in arguments {
                h.update(without_timestamps(a).to_string().as_bytes());
                h.update([0]);
            }
            let digest: String = h.finalize()[..8]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            IdempotencyKey {
                scope: k.scope.clone(),
                key: format!("{}\u{1f}{target}\u{1f}{group}\u{1f}{digest}", k.key),
                exact: false,
            }
        })
    }
}

/// An event argument without its `timestamp` fields (at any depth).
fn without_timestamps(v: &Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| k.as_str() != "timestamp")
                .map(|(k, v)| (k.clone(), without_timestamps(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_timestamps).collect()),
        other => other.clone(),
    }
}

/// Events that are alerts are logged at Warning, everything else at Information.
fn is_alert(target: &str) -> bool {
    matches!(
        target,
        "BudgetAlert"
            | "HighSpendAlert"
            | "UnusualSpendingDetected"
            | "ProviderHealthUpdate"
            | "CircuitBreakerStateChanged"
    )
}

/// Logs a send with the gateway's `[SignalR:{Target}]` prefix, so its log queries still
/// work: `[SignalR:BudgetAlert] Sent notification - VirtualKey: 7, Threshold: 75%, Groups: [vkey-7]`.
pub fn log_send(
    target: &str,
    hub: &str,
    groups: &str,
    detail: &str,
    correlation: &str,
    nodes: usize,
) {
    let detail = if detail.is_empty() {
        String::new()
    } else {
        format!("{detail}, ")
    };
    if is_alert(target) {
        tracing::warn!(
            hub,
            groups,
            correlation_id = correlation,
            nodes,
            "[SignalR:{target}] Sent notification - {detail}Groups: [{groups}]"
        );
    } else {
        tracing::info!(
            hub,
            groups,
            correlation_id = correlation,
            nodes,
            "[SignalR:{target}] Sent notification - {detail}Groups: [{groups}]"
        );
    }
}

#[allow(clippy::too_many_arguments)]
async fn send(
    node: &Node,
    report: &mut FlowReport,
    hub: &'static str,
    group: &str,
    target: &str,
    arguments: &[Value],
    correlation: &CorrelationId,
    guard: Guard<'_>,
    detail: &str,
) -> Result<(), FlowError> {
    let index = node.hub_index(hub).ok_or(FlowError::HubMissing(hub))?;
    let g = GroupName::parse(group).map_err(|e| FlowError::Invalid(e.to_string()))?;
    let args = Value::Array(arguments.to_vec()).to_string();
    let key = report.event_key(target, group, arguments);
    let reach = node
        .publish_guarded(
            index,
            &Audience::Group(g),
            target,
            &args,
            correlation,
            guard,
            key.as_ref(),
        )
        .await?;
    let label = crate::events::target_label(&node.hubs()[index], target);
    metrics::counter!(m::EVENTS_PUBLISHED, "hub" => hub, "target" => label)
        .increment(u64::from(!reach.suppressed));
    if !reach.suppressed {
        log_send(
            target,
            hub,
            group,
            detail,
            correlation.as_str(),
            reach.nodes,
        );
    }
    report.suppressed += usize::from(reach.suppressed);
    report.events.push(SentEvent {
        target: target.to_owned(),
        hub: hub.to_owned(),
        group: group.to_owned(),
        nodes: reach.nodes,
        local_connections: reach.local_connections,
        suppressed: reach.suppressed,
    });
    Ok(())
}

/// Sends to every admin who watches `entity` (`vkey-7`, `provider-openai`): the `admin`
/// group and the entity's own `admin-{entity}` group, under storm protection.
async fn send_to_admins(
    node: &Node,
    report: &mut FlowReport,
    entity: &str,
    target: &str,
    argument: Value,
    correlation: &CorrelationId,
    detail: &str,
) -> Result<(), FlowError> {
    for group in ["admin".to_owned(), format!("admin-{entity}")] {
        send(
            node,
            report,
            "admin-notifications",
            &group,
            target,
            std::slice::from_ref(&argument),
            correlation,
            Guard::Storm,
            detail,
        )
        .await?;
    }
    Ok(())
}

fn to_value<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// Deserializes a request body, naming the field on error.
///
/// # Errors
/// The field path and what is wrong with it.
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, FlowError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        FlowError::Invalid(if path == "." {
            format!("invalid body: {inner}")
        } else {
            format!("invalid body: {path}: {inner}")
        })
    })
}

/// Checks an id taken from a path: what a group name needs, and at most 128 bytes.
fn path_id(what: &str, raw: &str) -> Result<(), FlowError> {
    if raw.is_empty() || raw.len() > 128 || raw.chars().any(char::is_control) {
        return Err(FlowError::Invalid(format!(
            "{what} must be 1 to 128 characters without control characters"
        )));
    }
    Ok(())
}

fn finite(name: &str, v: f64) -> Result<f64, FlowError> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(FlowError::Invalid(format!(
            "{name} must be a finite number"
        )))
    }
}

/// Marks the task done on every channel its events go to: each marker lives in its
/// channel's slot, beside what the guarded publish reads.
pub(super) async fn mark_done(
    node: &Node,
    kind: &str,
    id: &str,
    events: &[PlannedEvent],
    ttl: Duration,
) -> Result<(), FlowError> {
    let mut channels: Vec<String> = Vec::new();
    for (hub, group, _, _) in events {
        let index = node.hub_index(hub).ok_or(FlowError::HubMissing(hub))?;
        let channel = node.keys().group_channel(node.hubs()[index].name(), group);
        if !channels.contains(&channel) {
            channels.push(channel);
        }
    }
    for channel in &channels {
        let key = node.keys().task_done(kind, id, channel);
        node.backplane().mark_done(&key, ttl).await?;
    }
    Ok(())
}
