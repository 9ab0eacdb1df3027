//! The budget flow: spend facts, thresholds crossed once per key cluster-wide, their
//! budget and admin alerts, then the spend update.

use chrono::Utc;
use serde::Deserialize;
use serde_json::json;

use super::{finite, path_id, send, send_to_admins, to_value, FlowError, FlowReport};
use crate::events::{BudgetAlertNotification, SpendUpdateNotification};
use crate::ids::CorrelationId;
use crate::metrics as m;
use crate::node::{Guard, IdempotencyKey, Node};

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
    idempotency: Option<&IdempotencyKey>,
) -> Result<FlowReport, FlowError> {
    path_id("virtualKeyId", vkey)?;
    let new_spend = finite("newSpend", fact.new_spend)?;
    let total = finite("totalSpend", fact.total_spend)?;
    let budget = fact.budget.map(|b| finite("budget", b)).transpose()?;
    let flows = node.flows().clone();
    let percentage = budget.filter(|b| *b > 0.0).map(|b| total / b * 100.0);
    let mut report = FlowReport::new(correlation, idempotency);
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
                // Admin alerts are optional: a node without the admin hub skips them.
                if node.hub_index("admin-notifications").is_some() {
                    send_to_admins(
                        node,
                        &mut report,
                        &vgroup,
                        "HighSpendAlert",
                        to_value(&high),
                        correlation,
                        &detail,
                    )
                    .await?;
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
