//! Every event contract hubcast knows: which hubs send it, to which groups, and its
//! argument types. Adding an event means adding a row here.

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::Value;

use super::contract::{check, Contract, Positional, Shape};
use super::dto::{
    BudgetAlertNotification, GenerationCancelled, ImageGenerationCompleted, ImageGenerationFailed,
    ImageGenerationProgress, ImageGenerationStarted, ProviderHealthNotification,
    SpendUpdateNotification, UnusualSpendingNotification, VideoGenerationCompleted,
    VideoGenerationFailed, VideoGenerationProgress, VideoGenerationStarted,
    WebhookCircuitBreakerState, WebhookDeliveryFailure, WebhookDeliverySuccess, WebhookRetryInfo,
};

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
    Contract { target: "TaskStarted", hubs: &["tasks"], groups: "task-{taskId}", description: "Any task started (positional, as the gateway's TaskHub sends it); with `virtualKeyId` also to `vkey-{virtualKeyId}-{taskType}`.", shape: Shape::Positional(&[TASK_ID, arg("taskType", schema::<String>, check::<String>, true), arg("metadata", schema::<Value>, check::<Value>, true)]) },
    Contract { target: "TaskProgress", hubs: &["tasks"], groups: "task-{taskId}", description: "Task progress (positional); coalesced.", shape: Shape::Positional(&[TASK_ID, arg("progress", schema::<i64>, check::<i64>, true), arg("message", schema::<Option<String>>, check::<Option<String>>, false)]) },
    Contract { target: "TaskCompleted", hubs: &["tasks"], groups: "task-{taskId}", description: "A task completed (positional).", shape: Shape::Positional(&[TASK_ID, arg("result", schema::<Value>, check::<Value>, true)]) },
    Contract { target: "TaskFailed", hubs: &["tasks"], groups: "task-{taskId}", description: "A task failed (positional).", shape: Shape::Positional(&[TASK_ID, arg("error", schema::<String>, check::<String>, true), arg("isRetryable", schema::<bool>, check::<bool>, true)]) },
    Contract { target: "TaskCancelled", hubs: &["tasks"], groups: "task-{taskId}", description: "A task was cancelled (positional).", shape: Shape::Positional(&[TASK_ID, arg("reason", schema::<Option<String>>, check::<Option<String>>, false)]) },
    Contract { target: "TaskTimedOut", hubs: &["tasks"], groups: "task-{taskId}", description: "A task ran past its time (positional).", shape: Shape::Positional(&[TASK_ID, arg("timeoutSeconds", schema::<i64>, check::<i64>, true)]) },
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
