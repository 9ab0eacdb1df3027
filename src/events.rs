//! Typed event contracts: the events and DTOs the gateway's clients expect, with their
//! JSON Schemas, and the check the publish API runs against them.
//!
//! Field names are the gateway's camelCase. Object events carry `timestamp` (UTC) and
//! `correlationId`; the tasks hub's events keep the gateway's positional arguments
//! (`TaskProgress(taskId, progress, message)`), since typed .NET clients bind by arity, so
//! their timestamp and correlation id travel in the logs and the 202 only.
//! `docs/events.md` is generated from this module (`cargo run --bin hubcast-event-docs`).

use chrono::{DateTime, Utc};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::Value;

/// A UTC timestamp, written as RFC 3339 with a `Z`.
pub type Timestamp = DateTime<Utc>;

/// Budget update for a virtual key (`SpendUpdate`, spend hub, group `vkey-{id}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SpendUpdateNotification {
    /// When it was sent.
    pub timestamp: Timestamp,
    /// Correlation id of the publish.
    pub correlation_id: String,
    /// This charge.
    pub new_spend: f64,
    /// Running total.
    pub total_spend: f64,
    /// The key's budget, if it has one.
    pub budget: Option<f64>,
    /// `totalSpend / budget × 100` (0–100 scale and beyond), when there is a budget.
    pub budget_percentage: Option<f64>,
    /// `budget − totalSpend`, not below 0 (0 without a budget).
    pub budget_remaining: f64,
    /// `totalSpend / budget` (0 without a budget).
    pub budget_utilization: f64,
    /// Provider of the charge.
    pub provider: String,
    /// Model of the charge.
    pub model: String,
}

/// A budget threshold was crossed (`BudgetAlert`, and `HighSpendAlert` on the admin hub).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BudgetAlertNotification {
    /// When it was sent.
    pub timestamp: Timestamp,
    /// Correlation id of the publish.
    pub correlation_id: String,
    /// `budget_50_percent`, `budget_75_percent`, `budget_90_percent`, `budget_exceeded`
    /// (admin copy: `HighSpend` or `BudgetExceeded`).
    pub alert_type: String,
    /// Human-readable text.
    pub message: String,
    /// Spend so far.
    pub current_spend: f64,
    /// The budget.
    pub budget_limit: f64,
    /// Percent of the budget used.
    pub percentage_used: f64,
    /// Same as `percentageUsed` (older clients).
    pub percentage: f64,
    /// `budgetLimit − currentSpend`.
    pub remaining: f64,
    /// `info`, `warning` or `critical`.
    pub severity: String,
    /// What to do about it.
    pub recommendations: Vec<String>,
    /// End of the budget period, when known.
    pub budget_period_end: Option<Timestamp>,
    /// The virtual key.
    pub virtual_key_id: String,
    /// The threshold crossed, in percent.
    pub threshold: u32,
}

/// Unusual spending (`UnusualSpendingDetected`, spend hub).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UnusualSpendingNotification {
    /// When it was sent.
    pub timestamp: Timestamp,
    /// Correlation id of the publish.
    pub correlation_id: String,
    /// `spend_spike` or `sustained_high_spending`.
    pub activity_type: String,
    /// Human-readable text.
    pub description: String,
    /// Current spending rate.
    pub current_rate: f64,
    /// Usual spending rate.
    pub normal_rate: f64,
    /// How far above normal, in percent.
    pub deviation_percentage: f64,
    /// Provider type (the gateway's integer enum), if known.
    pub provider_type: Option<i64>,
    /// Model, if known.
    pub model: Option<String>,
    /// What to do about it.
    pub recommendations: Vec<String>,
}

/// A provider's health changed (`ProviderHealthUpdate`, admin hub, groups `admin` and
/// `admin-provider-{provider}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderHealthNotification {
    /// Notification id.
    pub id: String,
    /// When it was sent.
    pub timestamp: Timestamp,
    /// Correlation id of the publish.
    pub correlation_id: String,
    /// Always `provider_health`.
    #[serde(rename = "type")]
    pub kind: String,
    /// 0 Low, 1 Medium, 2 High, 3 Critical (High when unhealthy).
    pub priority: u8,
    /// Numeric provider id, when the provider is named by one.
    pub provider_id: Option<i64>,
    /// Provider name as published.
    pub provider_name: String,
    /// Same as `providerName` (older clients).
    pub provider: String,
    /// `Healthy`, `Degraded` or `Unhealthy`.
    pub status: String,
    /// Response time of the last check.
    pub response_time_ms: Option<f64>,
    /// Details of the last check.
    pub details: Option<String>,
}

/// `VideoGenerationStarted` (video hub, group `video-{taskId}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VideoGenerationStarted {
    /// The task.
    pub task_id: String,
    /// Provider generating it.
    pub provider: String,
    /// When it started.
    pub started_at: Timestamp,
    /// Estimated duration, in seconds.
    pub estimated_seconds: Option<f64>,
    /// When it was sent.
    pub timestamp: Timestamp,
    /// Correlation id of the publish.
    pub correlation_id: String,
}

/// `VideoGenerationProgress`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VideoGenerationProgress {
    /// The task.
    pub task_id: String,
    /// Provider status text.
    pub status: String,
    /// Percent done, 0–100.
    pub progress: i64,
    /// Progress text.
    pub message: Option<String>,
    /// Frames done.
    pub frames_completed: Option<i64>,
    /// Frames in all.
    pub total_frames: Option<i64>,
    /// When it was sent.
    pub timestamp: Timestamp,
    /// Correlation id of the publish.
    pub correlation_id: String,
}

/// `VideoGenerationCompleted`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VideoGenerationCompleted {
    /// The task.
    pub task_id: String,
    /// Always `completed`.
    pub status: String,
    /// Where the video is.
    pub video_url: String,
    /// A preview, if any.
    pub preview_url: Option<String>,
    /// Length in seconds.
    pub duration: f64,
    /// e.g. `1280x720`.
    pub resolution: String,
    /// Bytes.
    pub file_size: i64,
    /// Cost of the generation.
    pub cost: f64,
    /// Provider.
    pub provider: String,
    /// Model.
    pub model: String,
    /// When it completed.
    pub completed_at: Timestamp,
    /// Generation time, in seconds.
    pub generation_duration: f64,
    /// When it was sent.
    pub timestamp: Timestamp,
    /// Correlation id of the publish.
    pub correlation_id: String,
}

/// `VideoGenerationFailed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VideoGenerationFailed {
    /// The task.
    pub task_id: String,
    /// Always `failed`.
    pub status: String,
    /// What went wrong.
    pub error: String,
    /// Provider error code.
    pub error_code: Option<String>,
    /// Whether a retry may succeed.
    pub is_retryable: bool,
    /// Retries so far.
    pub retry_count: i64,
    /// Retries allowed.
    pub max_retries: i64,
    /// Next retry, if one is scheduled.
    pub next_retry_at: Option<Timestamp>,
    /// When it failed.
    pub failed_at: Timestamp,
    /// When it was sent.
    pub timestamp: Timestamp,
    /// Correlation id of the publish.
    pub correlation_id: String,
}

/// `VideoGenerationCancelled` and `ImageGenerationCancelled`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GenerationCancelled {
    /// The task.
    pub task_id: String,
    /// Why.
    pub reason: Option<String>,
    /// When it was cancelled.
    pub cancelled_at: Timestamp,
    /// When it was sent.
    pub timestamp: Timestamp,
    /// Correlation id of the publish.
    pub correlation_id: String,
}

/// `ImageGenerationStarted` (image hub, group `image-{taskId}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageGenerationStarted {
    /// The task.
    pub task_id: String,
    /// The prompt.
    pub prompt: String,
    /// Images asked for.
    pub number_of_images: i64,
    /// e.g. `1024x1024`.
    pub size: String,
    /// Style, if any.
    pub style: Option<String>,
    /// When it started.
    pub started_at: Timestamp,
    /// When it was sent.
    pub timestamp: Timestamp,
    /// Correlation id of the publish.
    pub correlation_id: String,
}

/// `ImageGenerationProgress`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageGenerationProgress {
    /// The task.
    pub task_id: String,
    /// Percent done, 0–100.
    pub progress_percentage: i64,
    /// Provider status text.
    pub status: String,
    /// Images done.
    pub images_completed: i64,
    /// Images in all.
    pub total_images: i64,
    /// Progress text.
    pub message: Option<String>,
    /// When it was sent.
    pub timestamp: Timestamp,
    /// Correlation id of the publish.
    pub correlation_id: String,
}

/// `ImageGenerationCompleted`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageGenerationCompleted {
    /// The task.
    pub task_id: String,
    /// Where the images are.
    pub image_urls: Vec<String>,
    /// Generation time, in seconds.
    pub duration_seconds: f64,
    /// Cost of the generation.
    pub cost: f64,
    /// When it completed.
    pub completed_at: Timestamp,
    /// When it was sent.
    pub timestamp: Timestamp,
    /// Correlation id of the publish.
    pub correlation_id: String,
}

/// `ImageGenerationFailed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageGenerationFailed {
    /// The task.
    pub task_id: String,
    /// What went wrong.
    pub error: String,
    /// Whether a retry may succeed.
    pub is_retryable: bool,
    /// When it failed.
    pub failed_at: Timestamp,
    /// When it was sent.
    pub timestamp: Timestamp,
    /// Correlation id of the publish.
    pub correlation_id: String,
}

/// `DeliverySucceeded` (webhooks hub, the URL's group).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookDeliverySuccess {
    /// Webhook id.
    pub webhook_id: String,
    /// Delivery id.
    pub delivery_id: String,
    /// The webhook URL.
    pub url: String,
    /// The event delivered.
    pub event_type: String,
    /// HTTP status the endpoint answered.
    pub status_code: i64,
    /// How long the endpoint took.
    pub response_time_ms: f64,
    /// Attempts made (same as `totalAttempts`).
    pub attempt_count: i64,
    /// Attempts made.
    pub total_attempts: i64,
    /// The task the webhook reports on.
    pub task_id: String,
    /// When it was sent.
    pub timestamp: Timestamp,
    /// Correlation id of the publish.
    pub correlation_id: String,
}

/// `DeliveryFailed`. Both `error`/`errorMessage` and `isFinal`/`isPermanentFailure` are
/// filled, for both generations of the gateway's frontend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookDeliveryFailure {
    /// Webhook id.
    pub webhook_id: String,
    /// Delivery id.
    pub delivery_id: String,
    /// The webhook URL.
    pub url: String,
    /// The event delivered.
    pub event_type: String,
    /// What went wrong.
    pub error: String,
    /// Same as `error`.
    pub error_message: String,
    /// HTTP status the endpoint answered, if it answered.
    pub status_code: Option<i64>,
    /// This attempt's number (same as `attemptNumber`).
    pub attempt_count: i64,
    /// This attempt's number.
    pub attempt_number: i64,
    /// No more attempts will be made.
    pub is_final: bool,
    /// Same as `isFinal`.
    pub is_permanent_failure: bool,
    /// The task the webhook reports on.
    pub task_id: String,
    /// When it was sent.
    pub timestamp: Timestamp,
    /// Correlation id of the publish.
    pub correlation_id: String,
}

/// `RetryScheduled`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookRetryInfo {
    /// Webhook id.
    pub webhook_id: String,
    /// Delivery id.
    pub delivery_id: String,
    /// The webhook URL.
    pub url: String,
    /// The event delivered.
    pub event_type: String,
    /// Number of the next attempt.
    pub next_attempt_number: i64,
    /// When it will be made.
    pub scheduled_at: Timestamp,
    /// Delay until then, in seconds.
    pub delay_seconds: f64,
    /// e.g. `Retry 1 of 3`.
    pub reason: String,
    /// When it was sent.
    pub timestamp: Timestamp,
    /// Correlation id of the publish.
    pub correlation_id: String,
}

/// `CircuitBreakerStateChanged`: a webhook URL's breaker changed state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookCircuitBreakerState {
    /// The webhook URL.
    pub url: String,
    /// `Closed`, `Open` or `HalfOpen`.
    pub previous_state: String,
    /// `Closed`, `Open` or `HalfOpen`.
    pub current_state: String,
    /// Why it changed.
    pub reason: String,
    /// Failures in the window.
    pub failure_count: i64,
    /// Successes since the last state change.
    pub success_count: i64,
    /// When a half-open test is allowed, while open.
    pub next_test_at: Option<Timestamp>,
    /// When it was sent.
    pub timestamp: Timestamp,
    /// Correlation id of the publish.
    pub correlation_id: String,
}

/// How an event's arguments are laid out.
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    /// One object argument of this type.
    Object(
        fn(&mut SchemaGenerator) -> Schema,
        fn(&Value) -> Result<(), String>,
    ),
    /// Positional arguments: name, schema, checker, required.
    Positional(&'static [Positional]),
}

/// One positional argument.
#[derive(Debug, Clone, Copy)]
pub struct Positional {
    /// Its name in the gateway's signature.
    pub name: &'static str,
    /// Its schema.
    pub schema: fn(&mut SchemaGenerator) -> Schema,
    /// Checks a value.
    pub check: fn(&Value) -> Result<(), String>,
    /// Whether clients need it (trailing optional arguments may be left out).
    pub required: bool,
}

/// An event a hub's clients listen for.
#[derive(Debug, Clone, Copy)]
pub struct Contract {
    /// The event (SignalR target) name.
    pub target: &'static str,
    /// Hubs it is sent on.
    pub hubs: &'static [&'static str],
    /// Groups it goes to.
    pub groups: &'static str,
    /// What it means.
    pub description: &'static str,
    /// Its arguments.
    pub shape: Shape,
}

fn check<T: DeserializeOwned>(v: &Value) -> Result<(), String> {
    serde_path_to_error::deserialize::<_, T>(v)
        .map(drop)
        .map_err(|e| {
            let path = e.path().to_string();
            if path == "." {
                e.into_inner().to_string()
            } else {
                format!("{path}: {}", e.into_inner())
            }
        })
}

fn schema<T: JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    g.subschema_for::<T>()
}

macro_rules! object {
    ($t:ty) => {
        Shape::Object(schema::<$t>, check::<$t>)
    };
}

const fn arg(
    name: &'static str,
    schema: fn(&mut SchemaGenerator) -> Schema,
    check: fn(&Value) -> Result<(), String>,
    required: bool,
) -> Positional {
    Positional {
        name,
        schema,
        check,
        required,
    }
}

const TASK_ID: Positional = arg("taskId", schema::<String>, check::<String>, true);

/// Every event contract hubcast knows.
pub const CONTRACTS: &[Contract] = &[
    Contract { target: "SpendUpdate", hubs: &["spend"], groups: "vkey-{id}", description: "A charge was recorded for a virtual key (sent by `POST /api/v1/spend/{virtualKeyId}`).", shape: object!(SpendUpdateNotification) },
    Contract { target: "BudgetAlert", hubs: &["spend"], groups: "vkey-{id}", description: "A budget threshold (50/75/90/100 % by default) was crossed; once per threshold and key, cluster-wide, before the matching SpendUpdate.", shape: object!(BudgetAlertNotification) },
    Contract { target: "HighSpendAlert", hubs: &["admin-notifications"], groups: "admin, admin-vkey-{id}", description: "Admin copy of a budget alert (`HighSpend`, or `BudgetExceeded` at 100 %).", shape: object!(BudgetAlertNotification) },
    Contract { target: "UnusualSpendingDetected", hubs: &["spend"], groups: "vkey-{id}", description: "Spending well above the key's usual rate.", shape: object!(UnusualSpendingNotification) },
    Contract { target: "ProviderHealthUpdate", hubs: &["admin-notifications"], groups: "admin, admin-provider-{provider}", description: "A provider's health changed, after 3 consecutive identical results (sent by `POST /api/v1/providers/{provider}/health`).", shape: object!(ProviderHealthNotification) },
    Contract { target: "VideoGenerationStarted", hubs: &["video-generation"], groups: "video-{taskId}", description: "A video task started.", shape: object!(VideoGenerationStarted) },
    Contract { target: "VideoGenerationProgress", hubs: &["video-generation"], groups: "video-{taskId}", description: "Video task progress; coalesced (latest wins, at most 4 per second per task by default).", shape: object!(VideoGenerationProgress) },
    Contract { target: "VideoGenerationCompleted", hubs: &["video-generation"], groups: "video-{taskId}", description: "A video task completed; always delivered, after the last progress.", shape: object!(VideoGenerationCompleted) },
    Contract { target: "VideoGenerationFailed", hubs: &["video-generation"], groups: "video-{taskId}", description: "A video task failed; always delivered, after the last progress.", shape: object!(VideoGenerationFailed) },
    Contract { target: "VideoGenerationCancelled", hubs: &["video-generation"], groups: "video-{taskId}", description: "A video task was cancelled; always delivered, after the last progress.", shape: object!(GenerationCancelled) },
    Contract { target: "ImageGenerationStarted", hubs: &["image-generation"], groups: "image-{taskId}", description: "An image task started.", shape: object!(ImageGenerationStarted) },
    Contract { target: "ImageGenerationProgress", hubs: &["image-generation"], groups: "image-{taskId}", description: "Image task progress; coalesced like video progress.", shape: object!(ImageGenerationProgress) },
    Contract { target: "ImageGenerationCompleted", hubs: &["image-generation"], groups: "image-{taskId}", description: "An image task completed.", shape: object!(ImageGenerationCompleted) },
    Contract { target: "ImageGenerationFailed", hubs: &["image-generation"], groups: "image-{taskId}", description: "An image task failed.", shape: object!(ImageGenerationFailed) },
    Contract { target: "ImageGenerationCancelled", hubs: &["image-generation"], groups: "image-{taskId}", description: "An image task was cancelled.", shape: object!(GenerationCancelled) },
    Contract { target: "TaskStarted", hubs: &["tasks"], groups: "task-{taskId}", description: "Any task started (positional, as the gateway's TaskHub sends it).", shape: Shape::Positional(&[TASK_ID, arg("taskType", schema::<String>, check::<String>, true), arg("metadata", schema::<Value>, check::<Value>, true)]) },
    Contract { target: "TaskProgress", hubs: &["tasks"], groups: "task-{taskId}", description: "Task progress (positional); coalesced.", shape: Shape::Positional(&[TASK_ID, arg("progress", schema::<i64>, check::<i64>, true), arg("message", schema::<Option<String>>, check::<Option<String>>, false)]) },
    Contract { target: "TaskCompleted", hubs: &["tasks"], groups: "task-{taskId}", description: "A task completed (positional).", shape: Shape::Positional(&[TASK_ID, arg("result", schema::<Value>, check::<Value>, true)]) },
    Contract { target: "TaskFailed", hubs: &["tasks"], groups: "task-{taskId}", description: "A task failed (positional).", shape: Shape::Positional(&[TASK_ID, arg("error", schema::<String>, check::<String>, true), arg("isRetryable", schema::<bool>, check::<bool>, true)]) },
    Contract { target: "TaskCancelled", hubs: &["tasks"], groups: "task-{taskId}", description: "A task was cancelled (positional).", shape: Shape::Positional(&[TASK_ID, arg("reason", schema::<Option<String>>, check::<Option<String>>, false)]) },
    Contract { target: "DeliverySucceeded", hubs: &["webhooks"], groups: "webhook-{host}-{path}", description: "A webhook delivery succeeded (sent by `POST /api/v1/webhooks/deliveries`).", shape: object!(WebhookDeliverySuccess) },
    Contract { target: "DeliveryFailed", hubs: &["webhooks"], groups: "webhook-{host}-{path}", description: "A webhook delivery attempt failed.", shape: object!(WebhookDeliveryFailure) },
    Contract { target: "RetryScheduled", hubs: &["webhooks"], groups: "webhook-{host}-{path}", description: "A failed webhook delivery will be retried.", shape: object!(WebhookRetryInfo) },
    Contract { target: "CircuitBreakerStateChanged", hubs: &["webhooks"], groups: "webhook-{host}-{path}", description: "A webhook URL's circuit breaker changed state (Closed, Open, HalfOpen); exactly once per change, cluster-wide.", shape: object!(WebhookCircuitBreakerState) },
];

/// The contract of an event sent on a hub, if hubcast knows it.
pub fn contract(hub: &str, target: &str) -> Option<&'static Contract> {
    CONTRACTS
        .iter()
        .find(|c| c.target == target && c.hubs.contains(&hub))
}

impl Contract {
    /// Checks a publish's arguments; the error names the argument and field.
    ///
    /// # Errors
    /// A message such as `arguments[0].totalSpend: invalid type: string "x", expected f64`.
    pub fn check(&self, arguments: &[Value]) -> Result<(), String> {
        match self.shape {
            Shape::Object(_, check) => match arguments {
                [one] => check(one).map_err(|e| format!("arguments[0].{e}")),
                _ => Err(format!(
                    "{} takes exactly one object argument, got {}",
                    self.target,
                    arguments.len()
                )),
            },
            Shape::Positional(params) => {
                let required = params.iter().filter(|p| p.required).count();
                if arguments.len() < required || arguments.len() > params.len() {
                    return Err(format!(
                        "{} takes {} to {} arguments ({}), got {}",
                        self.target,
                        required,
                        params.len(),
                        params.iter().map(|p| p.name).collect::<Vec<_>>().join(", "),
                        arguments.len()
                    ));
                }
                for (i, (p, v)) in params.iter().zip(arguments).enumerate() {
                    (p.check)(v).map_err(|e| format!("arguments[{i}] ({}): {e}", p.name))?;
                }
                Ok(())
            }
        }
    }

    /// The JSON Schema of the arguments array.
    pub fn arguments_schema(&self, g: &mut SchemaGenerator) -> Value {
        match self.shape {
            Shape::Object(schema, _) => serde_json::json!({
                "type": "array", "minItems": 1, "maxItems": 1, "prefixItems": [schema(g)]
            }),
            Shape::Positional(params) => serde_json::json!({
                "type": "array",
                "minItems": params.iter().filter(|p| p.required).count(),
                "maxItems": params.len(),
                "prefixItems": params.iter().map(|p| {
                    let mut s = serde_json::to_value((p.schema)(g)).unwrap_or(Value::Null);
                    if let Value::Object(o) = &mut s { o.insert("title".into(), p.name.into()); }
                    s
                }).collect::<Vec<_>>(),
            }),
        }
    }
}

/// Every contract's schema, as served at `GET /api/v1/schemas`: one JSON Schema document
/// whose `events` map target names to their hubs, groups and arguments schema, with the
/// DTO definitions under `$defs`.
pub fn schemas() -> Value {
    let mut g = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    let events: serde_json::Map<String, Value> = CONTRACTS
        .iter()
        .map(|c| {
            (
                format!("{}@{}", c.target, c.hubs.join(",")),
                serde_json::json!({
                    "target": c.target,
                    "hubs": c.hubs,
                    "groups": c.groups,
                    "description": c.description,
                    "arguments": c.arguments_schema(&mut g),
                }),
            )
        })
        .collect();
    let defs = serde_json::to_value(g.take_definitions(true)).unwrap_or(Value::Null);
    serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "hubcast event contracts",
        "events": events,
        "$defs": defs,
    })
}

/// `docs/events.md`, generated from the contracts.
pub fn render_markdown() -> String {
    let doc = schemas();
    let mut out = String::from(
        "# Event contracts\n\n\
         Generated from `src/events.rs` by `cargo run --bin hubcast-event-docs > docs/events.md`;\n\
         a test fails when this file is stale. The same schemas are served at `GET /api/v1/schemas`.\n\n\
         Object events carry `timestamp` (UTC, RFC 3339) and `correlationId`. The tasks hub's\n\
         events keep the gateway's positional arguments.\n\n\
         | event | hubs | groups | meaning |\n|---|---|---|---|\n",
    );
    for c in CONTRACTS {
        out.push_str(&format!(
            "| `{}` | {} | `{}` | {} |\n",
            c.target,
            c.hubs.join(", "),
            c.groups,
            c.description
        ));
    }
    for c in CONTRACTS {
        let key = format!("{}@{}", c.target, c.hubs.join(","));
        out.push_str(&format!(
            "\n## {} ({})\n\n{}\n\n",
            c.target,
            c.hubs.join(", "),
            c.description
        ));
        out.push_str("```json\n");
        out.push_str(
            &serde_json::to_string_pretty(&doc["events"][&key]["arguments"]).unwrap_or_default(),
        );
        out.push_str("\n```\n");
    }
    out.push_str("\n## Definitions\n\n```json\n");
    out.push_str(&serde_json::to_string_pretty(&doc["$defs"]).unwrap_or_default());
    out.push_str("\n```\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_contract_is_found_on_its_hubs() {
        for c in CONTRACTS {
            for hub in c.hubs {
                assert_eq!(contract(hub, c.target).unwrap().target, c.target);
            }
        }
        assert!(contract("spend", "Unknown").is_none());
        assert!(contract("tasks", "SpendUpdate").is_none());
    }

    #[test]
    fn a_malformed_object_names_the_field() {
        let c = contract("spend", "SpendUpdate").unwrap();
        let e = c.check(&[json!({"timestamp": "2026-01-01T00:00:00Z", "correlationId": "c", "newSpend": 1, "totalSpend": "lots", "budget": null, "budgetPercentage": null, "budgetRemaining": 0, "budgetUtilization": 0, "provider": "p", "model": "m"})]).unwrap_err();
        assert!(e.contains("totalSpend"), "{e}");
        let e = c
            .check(&[json!({"timestamp": "2026-01-01T00:00:00Z"})])
            .unwrap_err();
        assert!(
            e.contains("correlationId") || e.contains("missing field"),
            "{e}"
        );
        assert!(c.check(&[]).unwrap_err().contains("exactly one"));
    }

    #[test]
    fn positional_events_check_arity_and_types() {
        let c = contract("tasks", "TaskProgress").unwrap();
        assert!(c.check(&[json!("t1"), json!(50)]).is_ok());
        assert!(c.check(&[json!("t1"), json!(50), json!("half")]).is_ok());
        let e = c.check(&[json!("t1"), json!("fifty")]).unwrap_err();
        assert!(e.contains("arguments[1] (progress)"), "{e}");
        assert!(c.check(&[json!("t1")]).is_err());
    }

    #[test]
    fn serialized_events_pass_their_own_check() {
        let now = Utc::now();
        let update = SpendUpdateNotification {
            timestamp: now,
            correlation_id: "c".into(),
            new_spend: 1.0,
            total_spend: 2.0,
            budget: Some(4.0),
            budget_percentage: Some(50.0),
            budget_remaining: 2.0,
            budget_utilization: 0.5,
            provider: "p".into(),
            model: "m".into(),
        };
        let v = serde_json::to_value(&update).unwrap();
        assert_eq!(v["budgetPercentage"], 50.0);
        assert!(contract("spend", "SpendUpdate")
            .unwrap()
            .check(&[v])
            .is_ok());
    }

    #[test]
    fn the_schema_document_describes_every_event() {
        let doc = schemas();
        assert_eq!(doc["events"].as_object().unwrap().len(), CONTRACTS.len());
        let defs = doc["$defs"].as_object().unwrap();
        assert!(defs.contains_key("SpendUpdateNotification"));
        assert!(render_markdown().contains("## CircuitBreakerStateChanged"));
    }
}
