//! The gateway's event flows, run once for the whole cluster: services post plain facts
//! (a charge, a health check result, task progress, a webhook delivery outcome) and
//! hubcast applies the rules — budget thresholds, health hysteresis, progress coalescing,
//! circuit breakers, storm protection — with their state in the backplane, so every node
//! agrees and a restart loses nothing.

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone as _, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::backplane::throttle::BreakerSettings;
use crate::config::WebhookGroups;
use crate::events::{
    BudgetAlertNotification, GenerationCancelled, ImageGenerationCompleted, ImageGenerationFailed,
    ImageGenerationProgress, ImageGenerationStarted, ProviderHealthNotification,
    SpendUpdateNotification, VideoGenerationCompleted, VideoGenerationFailed,
    VideoGenerationProgress, VideoGenerationStarted, WebhookCircuitBreakerState,
    WebhookDeliveryFailure, WebhookDeliverySuccess, WebhookRetryInfo,
};
use crate::guard::{PlannedEvent, ProgressStep};
use crate::hub::{webhook_group, WebhookStyle};
use crate::ids::{CorrelationId, GroupName};
use crate::metrics as m;
use crate::node::{Audience, Guard, Node, NodeError};

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
}

impl FlowReport {
    fn new(correlation: &CorrelationId) -> Self {
        Self {
            correlation_id: correlation.to_string(),
            events: Vec::new(),
            suppressed: 0,
            details: serde_json::Map::new(),
        }
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
    let reach = node
        .publish_guarded(
            index,
            &Audience::Group(g),
            target,
            &args,
            correlation,
            guard,
        )
        .await?;
    metrics::counter!(m::EVENTS_PUBLISHED, "hub" => hub, "target" => target.to_owned())
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

// ---- budget alerts ----------------------------------------------------------------------

/// `POST /api/v1/spend/{virtualKeyId}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpendFact {
    /// This charge.
    pub new_spend: f64,
    /// Running total.
    pub total_spend: f64,
    /// The key's budget, if it has one.
    #[serde(default)]
    pub budget: Option<f64>,
    /// Provider of the charge.
    pub provider: String,
    /// Model of the charge.
    pub model: String,
}

fn budget_alert_text(threshold: u32) -> (String, String, Vec<String>) {
    if threshold >= 100 {
        (
            "budget_exceeded".into(),
            "You have reached your budget limit. Requests may be blocked until the budget is increased.".into(),
            vec![
                "Increase the budget of this key".into(),
                "Review recent usage for unexpected spend".into(),
                "Use a lower-cost model for non-critical requests".into(),
            ],
        )
    } else {
        let recs = match threshold {
            0..=50 => vec![
                "Review your usage patterns".into(),
                "Consider setting up more usage alerts".into(),
            ],
            51..=75 => vec![
                "Review your usage patterns".into(),
                "Consider a lower-cost model where quality allows".into(),
                "Plan a budget increase if usage is expected to grow".into(),
            ],
            _ => vec![
                "Reduce usage or increase the budget now".into(),
                "Switch non-critical requests to a lower-cost model".into(),
                "Check for unexpected or runaway usage".into(),
            ],
        };
        let message = if threshold >= 90 {
            format!("You have used {threshold}% of your budget and are approaching your limit.")
        } else {
            format!("You have used {threshold}% of your budget.")
        };
        (format!("budget_{threshold}_percent"), message, recs)
    }
}

/// Runs a spend update: thresholds crossed first (each once per key, cluster-wide), their
/// BudgetAlerts and admin HighSpendAlerts, then the SpendUpdate.
///
/// # Errors
/// See [`FlowError`].
pub async fn spend(
    node: &Node,
    vkey: &str,
    fact: SpendFact,
    correlation: &CorrelationId,
) -> Result<FlowReport, FlowError> {
    path_id("virtualKeyId", vkey)?;
    let new_spend = finite("newSpend", fact.new_spend)?;
    let total = finite("totalSpend", fact.total_spend)?;
    let budget = fact.budget.map(|b| finite("budget", b)).transpose()?;
    let flows = node.flows().clone();
    let percentage = budget.filter(|b| *b > 0.0).map(|b| total / b * 100.0);
    let mut report = FlowReport::new(correlation);
    let vgroup = format!("vkey-{vkey}");
    let mut crossed = Vec::new();
    if let (Some(pct), Some(b)) = (percentage, budget) {
        let thresholds: Vec<u32> = flows.budget_thresholds.iter().map(|t| t.percent).collect();
        crossed = node
            .backplane()
            .budget_crossed(
                &node.keys().budget(vkey),
                pct,
                &thresholds,
                flows.rearm_below_percent,
            )
            .await?;
        // The thresholds are marked before the alerts go out; if an alert cannot be
        // published, its mark (and those after it) is taken back, so a retry sends it.
        let mut sent = 0usize;
        let alerts: Result<(), FlowError> = async {
            for t in &crossed {
                let severity = flows
                    .budget_thresholds
                    .iter()
                    .find(|x| x.percent == *t)
                    .map_or("warning", |x| x.severity.as_str());
                let (alert_type, message, recommendations) = budget_alert_text(*t);
                let alert = BudgetAlertNotification {
                    timestamp: Utc::now(),
                    correlation_id: correlation.to_string(),
                    alert_type,
                    message,
                    current_spend: total,
                    budget_limit: b,
                    percentage_used: pct,
                    percentage: pct,
                    remaining: b - total,
                    severity: severity.to_owned(),
                    recommendations,
                    budget_period_end: None,
                    virtual_key_id: vkey.to_owned(),
                    threshold: *t,
                };
                metrics::counter!(m::BUDGET_ALERTS, "threshold" => t.to_string()).increment(1);
                let detail = format!("VirtualKey: {vkey}, Threshold: {t}%");
                send(
                    node,
                    &mut report,
                    "spend",
                    &vgroup,
                    "BudgetAlert",
                    &[to_value(&alert)],
                    correlation,
                    Guard::Storm,
                    &detail,
                )
                .await?;
                let high = BudgetAlertNotification {
                    alert_type: if *t >= 100 {
                        "BudgetExceeded".into()
                    } else {
                        "HighSpend".into()
                    },
                    severity: if *t >= 100 {
                        "critical".into()
                    } else {
                        "warning".into()
                    },
                    message: format!("Virtual Key {vkey} has used {pct:.1}% of its budget"),
                    recommendations: vec![
                        "Review the key's recent usage".into(),
                        "Adjust the key's budget or rate limits".into(),
                        "Contact the key's owner".into(),
                    ],
                    ..alert
                };
                for group in ["admin".to_owned(), format!("admin-vkey-{vkey}")] {
                    if node.hub_index("admin-notifications").is_some() {
                        send(
                            node,
                            &mut report,
                            "admin-notifications",
                            &group,
                            "HighSpendAlert",
                            &[to_value(&high)],
                            correlation,
                            Guard::Storm,
                            &detail,
                        )
                        .await?;
                    }
                }
                sent += 1;
            }
            Ok(())
        }
        .await;
        if let Err(e) = alerts {
            let unsent = &crossed[sent..];
            if let Err(undo) = node
                .backplane()
                .budget_unmark(&node.keys().budget(vkey), unsent)
                .await
            {
                tracing::warn!(error = %undo, thresholds = ?unsent, "could not re-arm unsent budget thresholds");
            }
            return Err(e);
        }
    }
    let update = SpendUpdateNotification {
        timestamp: Utc::now(),
        correlation_id: correlation.to_string(),
        new_spend,
        total_spend: total,
        budget,
        budget_percentage: percentage,
        budget_remaining: budget.map_or(0.0, |b| (b - total).max(0.0)),
        budget_utilization: budget.filter(|b| *b > 0.0).map_or(0.0, |b| total / b),
        provider: fact.provider,
        model: fact.model,
    };
    let detail = format!("VirtualKey: {vkey}, Amount: {new_spend}, Total: {total}");
    send(
        node,
        &mut report,
        "spend",
        &vgroup,
        "SpendUpdate",
        &[to_value(&update)],
        correlation,
        Guard::Storm,
        &detail,
    )
    .await?;
    report
        .details
        .insert("budgetPercentage".into(), json!(percentage));
    report
        .details
        .insert("thresholdsCrossed".into(), json!(crossed));
    Ok(report)
}

// ---- provider health ---------------------------------------------------------------------

/// `POST /api/v1/providers/{provider}/health`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthFact {
    /// `Healthy`, `Degraded`, `Unhealthy` (or `Online`, `Unknown`, `Offline`).
    pub status: String,
    /// Response time of the check.
    #[serde(default)]
    pub response_time_ms: Option<f64>,
    /// Details of the check.
    #[serde(default)]
    pub details: Option<String>,
}

fn health_status(raw: &str) -> Option<&'static str> {
    match raw.to_ascii_lowercase().as_str() {
        "healthy" | "online" => Some("Healthy"),
        "degraded" | "unknown" => Some("Degraded"),
        "unhealthy" | "offline" => Some("Unhealthy"),
        _ => None,
    }
}

/// Applies a health result to the provider's hysteresis and announces a change.
///
/// # Errors
/// See [`FlowError`].
pub async fn provider_health(
    node: &Node,
    provider: &str,
    fact: HealthFact,
    correlation: &CorrelationId,
) -> Result<FlowReport, FlowError> {
    path_id("provider", provider)?;
    let status = health_status(&fact.status).ok_or_else(|| {
        FlowError::Invalid(format!(
            "status '{}' is not one of Healthy, Degraded, Unhealthy (or Online, Unknown, Offline)",
            fact.status
        ))
    })?;
    let response_time_ms = fact
        .response_time_ms
        .map(|v| finite("responseTimeMs", v))
        .transpose()?;
    let needed = node.flows().health_consecutive;
    let verdict = node
        .backplane()
        .health_observed(&node.keys().health(provider), status, needed)
        .await?;
    let mut report = FlowReport::new(correlation);
    if verdict.announce {
        let note = ProviderHealthNotification {
            id: crate::ids::CorrelationId::generate().to_string(),
            timestamp: Utc::now(),
            correlation_id: correlation.to_string(),
            kind: "provider_health".into(),
            priority: if status == "Unhealthy" { 2 } else { 1 },
            provider_id: provider.parse().ok(),
            provider_name: provider.to_owned(),
            provider: provider.to_owned(),
            status: status.to_owned(),
            response_time_ms,
            details: fact.details,
        };
        let detail = format!(
            "Provider: {provider}, Status: {status}, Previous: {}",
            verdict.previous.as_deref().unwrap_or("none")
        );
        for group in ["admin".to_owned(), format!("admin-provider-{provider}")] {
            send(
                node,
                &mut report,
                "admin-notifications",
                &group,
                "ProviderHealthUpdate",
                &[to_value(&note)],
                correlation,
                Guard::Storm,
                &detail,
            )
            .await?;
        }
    }
    report
        .details
        .insert("announced".into(), json!(verdict.announce));
    report.details.insert("status".into(), json!(status));
    report
        .details
        .insert("previous".into(), json!(verdict.previous));
    Ok(report)
}

// ---- task progress -----------------------------------------------------------------------

/// What a task post reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskAction {
    /// The task started.
    Started,
    /// Progress (coalesced).
    Progress,
    /// Completed (terminal).
    Completed,
    /// Failed (terminal).
    Failed,
    /// Cancelled (terminal).
    Cancelled,
}

impl TaskAction {
    /// Parses the path segment.
    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "started" => Self::Started,
            "progress" => Self::Progress,
            "completed" => Self::Completed,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }

    fn terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

/// Fields a task post may carry; which are used depends on kind and action.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskFact {
    /// Percent done (progress).
    pub progress: Option<i64>,
    /// Progress or status text.
    pub message: Option<String>,
    /// Provider status text.
    pub status: Option<String>,
    /// Task type (tasks hub `TaskStarted`).
    pub task_type: Option<String>,
    /// Task metadata (tasks hub `TaskStarted`).
    pub metadata: Option<Value>,
    /// Result (tasks hub `TaskCompleted`).
    pub result: Option<Value>,
    /// Error text (failed).
    pub error: Option<String>,
    /// Provider error code (video failed).
    pub error_code: Option<String>,
    /// Whether a retry may succeed (failed).
    pub is_retryable: Option<bool>,
    /// Retries so far (video failed).
    pub retry_count: Option<i64>,
    /// Retries allowed (video failed).
    pub max_retries: Option<i64>,
    /// Why (cancelled).
    pub reason: Option<String>,
    /// Provider.
    pub provider: Option<String>,
    /// Model.
    pub model: Option<String>,
    /// Estimated seconds (video started).
    pub estimated_seconds: Option<f64>,
    /// Frames done / in all (video progress).
    pub frames_completed: Option<i64>,
    /// Frames in all.
    pub total_frames: Option<i64>,
    /// Video URL (video completed).
    pub video_url: Option<String>,
    /// Preview URL (video completed).
    pub preview_url: Option<String>,
    /// Length in seconds (video completed).
    pub duration: Option<f64>,
    /// Resolution (video completed).
    pub resolution: Option<String>,
    /// Bytes (video completed).
    pub file_size: Option<i64>,
    /// Cost (completed).
    pub cost: Option<f64>,
    /// Generation time in seconds (completed).
    pub generation_duration: Option<f64>,
    /// Prompt (image started).
    pub prompt: Option<String>,
    /// Images asked for (image started).
    pub number_of_images: Option<i64>,
    /// Size (image started).
    pub size: Option<String>,
    /// Style (image started).
    pub style: Option<String>,
    /// Images done (image progress).
    pub images_completed: Option<i64>,
    /// Images in all (image progress).
    pub total_images: Option<i64>,
    /// Image URLs (image completed).
    pub image_urls: Option<Vec<String>>,
}

fn plan_task(
    kind: &str,
    id: &str,
    action: TaskAction,
    f: &TaskFact,
    correlation: &CorrelationId,
) -> Result<Vec<PlannedEvent>, FlowError> {
    let now = Utc::now();
    let corr = correlation.to_string();
    let s = |o: &Option<String>| o.clone().unwrap_or_default();
    let progress = || {
        f.progress
            .ok_or_else(|| FlowError::Invalid("progress: missing field `progress`".into()))
    };
    let mut events: Vec<PlannedEvent> = Vec::new();
    match kind {
        "video" => {
            let group = format!("video-{id}");
            let (target, v) = match action {
                TaskAction::Started => (
                    "VideoGenerationStarted",
                    to_value(&VideoGenerationStarted {
                        task_id: id.into(),
                        provider: s(&f.provider),
                        started_at: now,
                        estimated_seconds: f.estimated_seconds,
                        timestamp: now,
                        correlation_id: corr.clone(),
                    }),
                ),
                TaskAction::Progress => (
                    "VideoGenerationProgress",
                    to_value(&VideoGenerationProgress {
                        task_id: id.into(),
                        status: f.status.clone().unwrap_or_else(|| "processing".into()),
                        progress: progress()?,
                        message: f.message.clone(),
                        frames_completed: f.frames_completed,
                        total_frames: f.total_frames,
                        timestamp: now,
                        correlation_id: corr.clone(),
                    }),
                ),
                TaskAction::Completed => (
                    "VideoGenerationCompleted",
                    to_value(&VideoGenerationCompleted {
                        task_id: id.into(),
                        status: "completed".into(),
                        video_url: s(&f.video_url),
                        preview_url: f.preview_url.clone(),
                        duration: f.duration.unwrap_or(0.0),
                        resolution: s(&f.resolution),
                        file_size: f.file_size.unwrap_or(0),
                        cost: f.cost.unwrap_or(0.0),
                        provider: s(&f.provider),
                        model: s(&f.model),
                        completed_at: now,
                        generation_duration: f.generation_duration.unwrap_or(0.0),
                        timestamp: now,
                        correlation_id: corr.clone(),
                    }),
                ),
                TaskAction::Failed => (
                    "VideoGenerationFailed",
                    to_value(&VideoGenerationFailed {
                        task_id: id.into(),
                        status: "failed".into(),
                        error: s(&f.error),
                        error_code: f.error_code.clone(),
                        is_retryable: f.is_retryable.unwrap_or(false),
                        retry_count: f.retry_count.unwrap_or(0),
                        max_retries: f.max_retries.unwrap_or(0),
                        next_retry_at: None,
                        failed_at: now,
                        timestamp: now,
                        correlation_id: corr.clone(),
                    }),
                ),
                TaskAction::Cancelled => (
                    "VideoGenerationCancelled",
                    to_value(&GenerationCancelled {
                        task_id: id.into(),
                        reason: f.reason.clone(),
                        cancelled_at: now,
                        timestamp: now,
                        correlation_id: corr.clone(),
                    }),
                ),
            };
            events.push(("video-generation", group, target, vec![v]));
        }
        "image" => {
            let group = format!("image-{id}");
            let (target, v) = match action {
                TaskAction::Started => (
                    "ImageGenerationStarted",
                    to_value(&ImageGenerationStarted {
                        task_id: id.into(),
                        prompt: s(&f.prompt),
                        number_of_images: f.number_of_images.unwrap_or(1),
                        size: s(&f.size),
                        style: f.style.clone(),
                        started_at: now,
                        timestamp: now,
                        correlation_id: corr.clone(),
                    }),
                ),
                TaskAction::Progress => (
                    "ImageGenerationProgress",
                    to_value(&ImageGenerationProgress {
                        task_id: id.into(),
                        progress_percentage: progress()?,
                        status: f.status.clone().unwrap_or_else(|| "processing".into()),
                        images_completed: f.images_completed.unwrap_or(0),
                        total_images: f.total_images.unwrap_or(0),
                        message: f.message.clone(),
                        timestamp: now,
                        correlation_id: corr.clone(),
                    }),
                ),
                TaskAction::Completed => (
                    "ImageGenerationCompleted",
                    to_value(&ImageGenerationCompleted {
                        task_id: id.into(),
                        image_urls: f.image_urls.clone().unwrap_or_default(),
                        duration_seconds: f.generation_duration.unwrap_or(0.0),
                        cost: f.cost.unwrap_or(0.0),
                        completed_at: now,
                        timestamp: now,
                        correlation_id: corr.clone(),
                    }),
                ),
                TaskAction::Failed => (
                    "ImageGenerationFailed",
                    to_value(&ImageGenerationFailed {
                        task_id: id.into(),
                        error: s(&f.error),
                        is_retryable: f.is_retryable.unwrap_or(false),
                        failed_at: now,
                        timestamp: now,
                        correlation_id: corr.clone(),
                    }),
                ),
                TaskAction::Cancelled => (
                    "ImageGenerationCancelled",
                    to_value(&GenerationCancelled {
                        task_id: id.into(),
                        reason: f.reason.clone(),
                        cancelled_at: now,
                        timestamp: now,
                        correlation_id: corr.clone(),
                    }),
                ),
            };
            events.push(("image-generation", group, target, vec![v]));
        }
        "task" => {}
        other => {
            return Err(FlowError::Invalid(format!(
                "task kind '{other}' is not video, image or task"
            )))
        }
    }
    let tid = Value::from(id);
    let (target, args) = match action {
        TaskAction::Started => (
            "TaskStarted",
            vec![
                tid,
                Value::from(f.task_type.clone().unwrap_or_else(|| kind.to_owned())),
                f.metadata.clone().unwrap_or_else(|| json!({})),
            ],
        ),
        TaskAction::Progress => (
            "TaskProgress",
            vec![
                tid,
                Value::from(progress()?),
                f.message.clone().map_or(Value::Null, Value::from),
            ],
        ),
        TaskAction::Completed => (
            "TaskCompleted",
            vec![tid, f.result.clone().unwrap_or(Value::Null)],
        ),
        TaskAction::Failed => (
            "TaskFailed",
            vec![
                tid,
                Value::from(s(&f.error)),
                Value::from(f.is_retryable.unwrap_or(false)),
            ],
        ),
        TaskAction::Cancelled => (
            "TaskCancelled",
            vec![tid, f.reason.clone().map_or(Value::Null, Value::from)],
        ),
    };
    events.push(("tasks", format!("task-{id}"), target, args));
    Ok(events)
}

fn count_coalesced(events: &[PlannedEvent], n: u64, rule: &'static str) {
    if n == 0 {
        return;
    }
    for (hub, _, target, _) in events {
        metrics::counter!(m::THROTTLED_EVENTS, "hub" => *hub, "target" => *target, "rule" => rule)
            .increment(n);
    }
}

/// Runs a task post: progress is coalesced per task (latest wins, at most
/// `flows.progress_per_second`); terminal events always go out, after any progress.
///
/// # Errors
/// See [`FlowError`].
pub async fn task(
    node: &Arc<Node>,
    kind: &str,
    id: &str,
    action: TaskAction,
    fact: TaskFact,
    correlation: &CorrelationId,
) -> Result<FlowReport, FlowError> {
    path_id("taskId", id)?;
    let events = plan_task(kind, id, action, &fact, correlation)?;
    for (hub, _, _, _) in &events {
        node.hub_index(hub).ok_or(FlowError::HubMissing(hub))?;
    }
    let done_key = node.keys().task_done(kind, id);
    let slot_key = format!("{kind}:{id}");
    let mut report = FlowReport::new(correlation);
    let detail = format!("Task: {id}, Kind: {kind}");
    if action.terminal() {
        // Drop what this node still holds, then mark the task done cluster-wide so no
        // node publishes progress after this terminal event.
        let dropped = node.progress.finish(&slot_key);
        count_coalesced(&events, dropped, "coalesce");
        let ttl = Duration::from_millis(node.flows().task_done_ttl_ms);
        node.backplane().mark_done(&done_key, ttl).await?;
        for (hub, group, target, args) in &events {
            send(
                node,
                &mut report,
                hub,
                group,
                target,
                args,
                correlation,
                Guard::Storm,
                &detail,
            )
            .await?;
        }
        return Ok(report);
    }
    if action == TaskAction::Started {
        for (hub, group, target, args) in &events {
            send(
                node,
                &mut report,
                hub,
                group,
                target,
                args,
                correlation,
                Guard::UnlessDone(&done_key),
                &detail,
            )
            .await?;
        }
        return Ok(report);
    }
    let interval = Duration::from_secs_f64(1.0 / f64::from(node.flows().progress_per_second));
    let (step, schedule, now) =
        node.progress
            .offer(&slot_key, events.clone(), correlation, interval);
    match step {
        ProgressStep::SendNow => {
            for (hub, group, target, args) in now.unwrap_or_default() {
                send(
                    node,
                    &mut report,
                    hub,
                    &group,
                    target,
                    &args,
                    correlation,
                    Guard::UnlessDone(&done_key),
                    &detail,
                )
                .await?;
            }
            report.details.insert("coalesced".into(), json!(false));
        }
        ProgressStep::Held => {
            if schedule {
                let node2 = node.clone();
                node.spawn_tracked(async move {
                    let node = node2;
                    if let Some(due) = node.progress.due(&slot_key, interval) {
                        tokio::time::sleep_until(due.into()).await;
                    }
                    let Some((events, corr, coalesced)) = node.progress.take(&slot_key) else {
                        return;
                    };
                    count_coalesced(&events, coalesced, "coalesce");
                    if coalesced > 0 {
                        tracing::info!(task = %slot_key, coalesced, "progress coalesced: latest sent");
                    }
                    let mut report = FlowReport::new(&corr);
                    let detail = format!("Task: {slot_key}, Coalesced: {coalesced}");
                    for (hub, group, target, args) in &events {
                        if let Err(e) = send(
                            &node,
                            &mut report,
                            hub,
                            group,
                            target,
                            args,
                            &corr,
                            Guard::UnlessDone(&done_key),
                            &detail,
                        )
                        .await
                        {
                            metrics::counter!(m::DELIVERY_FAILURES, "hub" => *hub, "reason" => m::REASON_PUBLISH_FAILED).increment(1);
                            tracing::warn!(error = %e, target = *target, "coalesced progress could not be published");
                        }
                    }
                });
            }
            report.details.insert("coalesced".into(), json!(true));
        }
    }
    Ok(report)
}

// ---- webhook delivery ----------------------------------------------------------------------

/// `POST /api/v1/webhooks/deliveries`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeliveryFact {
    /// The webhook URL.
    pub url: String,
    /// `succeeded`, `failed` or `retrying`.
    pub outcome: String,
    /// This attempt's number (1-based).
    pub attempt: i64,
    /// HTTP status the endpoint answered.
    #[serde(default)]
    pub status_code: Option<i64>,
    /// How long it took.
    #[serde(default)]
    pub response_time_ms: Option<f64>,
    /// What went wrong.
    #[serde(default)]
    pub error: Option<String>,
    /// The task the webhook reports on.
    #[serde(default)]
    pub task_id: Option<String>,
    /// The event delivered.
    #[serde(default)]
    pub event_type: Option<String>,
    /// Webhook id.
    #[serde(default)]
    pub webhook_id: Option<String>,
    /// Delivery id.
    #[serde(default)]
    pub delivery_id: Option<String>,
    /// No more attempts will be made (failed).
    #[serde(default, rename = "final")]
    pub is_final: Option<bool>,
    /// Attempts allowed in all. Default: 3.
    #[serde(default)]
    pub max_attempts: Option<i64>,
    /// Delay before the next attempt (retrying). Default: 2^attempt seconds.
    #[serde(default)]
    pub next_retry_in_seconds: Option<f64>,
}

/// Sends a delivery's lifecycle event to the URL's group and applies the outcome to the
/// URL's circuit breaker; every breaker change is announced once, cluster-wide.
///
/// # Errors
/// See [`FlowError`].
pub async fn webhook_delivery(
    node: &Node,
    fact: DeliveryFact,
    correlation: &CorrelationId,
) -> Result<FlowReport, FlowError> {
    let flows = node.flows().clone();
    let style = match flows.webhook_groups {
        WebhookGroups::Hyphen => WebhookStyle::Hyphen,
        WebhookGroups::Underscore => WebhookStyle::Underscore,
    };
    let group = webhook_group(&fact.url, style)
        .filter(|g| g.len() <= crate::ids::MAX_GROUP_BYTES)
        .ok_or_else(|| FlowError::Invalid("url: not an absolute URL with a host".into()))?;
    if !(1..=1_000_000).contains(&fact.attempt) {
        return Err(FlowError::Invalid(
            "attempt: must be between 1 and 1000000".into(),
        ));
    }
    if let Some(d) = fact.next_retry_in_seconds {
        if !d.is_finite() || !(0.0..=2_592_000.0).contains(&d) {
            return Err(FlowError::Invalid(
                "nextRetryInSeconds: must be between 0 and 2592000 (30 days)".into(),
            ));
        }
    }
    let success = match fact.outcome.as_str() {
        "succeeded" => true,
        "failed" | "retrying" => false,
        other => {
            return Err(FlowError::Invalid(format!(
                "outcome: '{other}' is not succeeded, failed or retrying"
            )))
        }
    };
    let now = Utc::now();
    let corr = correlation.to_string();
    let s = |o: &Option<String>| o.clone().unwrap_or_default();
    let max_attempts = fact.max_attempts.unwrap_or(3).max(1);
    let mut planned: Vec<(&str, Value)> = Vec::new();
    if success {
        planned.push((
            "DeliverySucceeded",
            to_value(&WebhookDeliverySuccess {
                webhook_id: s(&fact.webhook_id),
                delivery_id: s(&fact.delivery_id),
                url: fact.url.clone(),
                event_type: s(&fact.event_type),
                status_code: fact.status_code.unwrap_or(200),
                response_time_ms: fact.response_time_ms.unwrap_or(0.0),
                attempt_count: fact.attempt,
                total_attempts: fact.attempt,
                task_id: s(&fact.task_id),
                timestamp: now,
                correlation_id: corr.clone(),
            }),
        ));
    } else {
        let retrying = fact.outcome == "retrying";
        let is_final =
            !retrying && (fact.is_final.unwrap_or(false) || fact.attempt >= max_attempts);
        let error = fact
            .error
            .clone()
            .unwrap_or_else(|| "Delivery failed".into());
        planned.push((
            "DeliveryFailed",
            to_value(&WebhookDeliveryFailure {
                webhook_id: s(&fact.webhook_id),
                delivery_id: s(&fact.delivery_id),
                url: fact.url.clone(),
                event_type: s(&fact.event_type),
                error: error.clone(),
                error_message: error,
                status_code: fact.status_code,
                attempt_count: fact.attempt,
                attempt_number: fact.attempt,
                is_final,
                is_permanent_failure: is_final,
                task_id: s(&fact.task_id),
                timestamp: now,
                correlation_id: corr.clone(),
            }),
        ));
        if retrying {
            let delay = fact
                .next_retry_in_seconds
                .unwrap_or_else(|| 2f64.powi(i32::try_from(fact.attempt).unwrap_or(10).min(10)));
            planned.push((
                "RetryScheduled",
                to_value(&WebhookRetryInfo {
                    webhook_id: s(&fact.webhook_id),
                    delivery_id: format!("{}-retry-{}", s(&fact.task_id), fact.attempt),
                    url: fact.url.clone(),
                    event_type: s(&fact.event_type),
                    next_attempt_number: fact.attempt + 1,
                    scheduled_at: now + chrono::Duration::milliseconds((delay * 1000.0) as i64),
                    delay_seconds: delay,
                    reason: format!("Retry {} of {}", fact.attempt, max_attempts - 1),
                    timestamp: now,
                    correlation_id: corr.clone(),
                }),
            ));
        }
    }
    let settings = BreakerSettings {
        failures: flows.breaker_failures,
        window: Duration::from_millis(flows.breaker_window_ms),
        half_open_after: Duration::from_millis(flows.breaker_half_open_ms),
    };
    let transitions = node
        .backplane()
        .breaker_report(
            &node.keys().breaker(&group),
            &node.keys().breaker_failures(&group),
            success,
            settings,
        )
        .await?;
    let mut report = FlowReport::new(correlation);
    let detail = format!("Url: {}, Attempt: {}", fact.url, fact.attempt);
    for (target, v) in &planned {
        send(
            node,
            &mut report,
            "webhooks",
            &group,
            target,
            std::slice::from_ref(v),
            correlation,
            Guard::Storm,
            &detail,
        )
        .await?;
    }
    for t in &transitions {
        let reason = match t.to.as_str() {
            "Open" => format!("{} failures within the window", t.failures),
            "HalfOpen" => "open period elapsed; the next delivery tests the endpoint".to_owned(),
            _ => "a delivery succeeded".to_owned(),
        };
        let state = WebhookCircuitBreakerState {
            url: fact.url.clone(),
            previous_state: t.from.clone(),
            current_state: t.to.clone(),
            reason,
            failure_count: t.failures,
            success_count: i64::from(success),
            next_test_at: t.next_test_at_ms.and_then(|ms| {
                Utc.timestamp_millis_opt(i64::try_from(ms).unwrap_or(0))
                    .single()
            }),
            timestamp: now,
            correlation_id: corr.clone(),
        };
        let detail = format!("Url: {}, State: {} -> {}", fact.url, t.from, t.to);
        send(
            node,
            &mut report,
            "webhooks",
            &group,
            "CircuitBreakerStateChanged",
            &[to_value(&state)],
            correlation,
            Guard::Storm,
            &detail,
        )
        .await?;
    }
    report.details.insert("group".into(), json!(group));
    report.details.insert(
        "breaker".into(),
        json!(transitions
            .iter()
            .map(|t| json!({"from": t.from, "to": t.to}))
            .collect::<Vec<_>>()),
    );
    Ok(report)
}
