//! The webhook flow: a delivery outcome becomes its lifecycle events, sent to the URL's
//! group, and feeds the URL's circuit breaker (one per exact URL), whose changes are
//! announced once cluster-wide.

use std::time::Duration;

use chrono::{TimeZone as _, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{send, to_value, FlowError, FlowReport};
use crate::backplane::throttle::BreakerSettings;
use crate::config::WebhookGroups;
use crate::events::{
    WebhookCircuitBreakerState, WebhookDeliveryFailure, WebhookDeliverySuccess, WebhookRetryInfo,
};
use crate::hub::{webhook_group, WebhookStyle};
use crate::ids::CorrelationId;
use crate::node::{Guard, IdempotencyKey, Node};

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
    idempotency: Option<&IdempotencyKey>,
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
    // The breaker is the exact URL's, not the group's: the gateway's group name drops
    // port, query and the difference between '.' and '-', so two endpoints (maybe two
    // tenants') can share a group, but one's failures must not open the other's breaker.
    let transitions = node
        .backplane()
        .breaker_report(
            &node.keys().breaker(&fact.url),
            &node.keys().breaker_failures(&fact.url),
            success,
            settings,
        )
        .await?;
    let mut report = FlowReport::new(correlation, idempotency);
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
