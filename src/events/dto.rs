//! The typed events and DTOs, in the gateway's camelCase: what [`super::CONTRACTS`]
//! checks publishes against and what the flows build.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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
