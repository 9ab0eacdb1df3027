//! The provider-health flow: a check result goes through cluster-wide hysteresis, and
//! only a settled change is announced to the admins.

use chrono::Utc;
use serde::Deserialize;
use serde_json::json;

use super::{finite, path_id, send_to_admins, to_value, FlowError, FlowReport};
use crate::events::ProviderHealthNotification;
use crate::ids::CorrelationId;
use crate::node::{IdempotencyKey, Node};

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
    idempotency: Option<&IdempotencyKey>,
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
    let mut report = FlowReport::new(correlation, idempotency);
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
        send_to_admins(
            node,
            &mut report,
            &format!("provider-{provider}"),
            "ProviderHealthUpdate",
            to_value(&note),
            correlation,
            &detail,
        )
        .await?;
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
