//! Typed event contracts: the events and DTOs the gateway's clients expect, with their
//! JSON Schemas, and the check the publish API runs against them.
//!
//! Field names are the gateway's camelCase. Object events carry `timestamp` (UTC) and
//! `correlationId`; the tasks hub's events keep the gateway's positional arguments
//! (`TaskProgress(taskId, progress, message)`), since typed .NET clients bind by arity, so
//! their timestamp and correlation id travel in the logs and the 202 only.
//! `docs/events.md` is generated from this module (`cargo run --bin hubcast-event-docs`).

mod contract;
mod dto;
mod label;
mod registry;
mod schema;

pub use self::contract::{Contract, Positional, Shape};
pub use self::dto::{
    BudgetAlertNotification, GenerationCancelled, ImageGenerationCompleted, ImageGenerationFailed,
    ImageGenerationProgress, ImageGenerationStarted, ProviderHealthNotification,
    SpendUpdateNotification, Timestamp, UnusualSpendingNotification, VideoGenerationCompleted,
    VideoGenerationFailed, VideoGenerationProgress, VideoGenerationStarted,
    WebhookCircuitBreakerState, WebhookDeliveryFailure, WebhookDeliverySuccess, WebhookRetryInfo,
};
pub use self::label::{target_label, OTHER_TARGET};
pub use self::registry::{contract, CONTRACTS};
pub use self::schema::{render_markdown, schemas};
