//! The task flow: task progress facts, the events a post plans (per kind and action),
//! and sending them with progress coalesced and nothing after a terminal event.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{mark_done, path_id, send, to_value, FlowError, FlowReport};
use crate::events::{
    GenerationCancelled, ImageGenerationCompleted, ImageGenerationFailed, ImageGenerationProgress,
    ImageGenerationStarted, VideoGenerationCompleted, VideoGenerationFailed,
    VideoGenerationProgress, VideoGenerationStarted,
};
use crate::guard::{PlannedEvent, ProgressStep};
use crate::ids::CorrelationId;
use crate::metrics as m;
use crate::node::{Guard, IdempotencyKey, Node};

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
    /// Timed out (terminal; tasks hub only).
    TimedOut,
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
            "timedout" => Self::TimedOut,
            _ => return None,
        })
    }

    fn terminal(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Failed | Self::Cancelled | Self::TimedOut
        )
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
    /// The task's virtual key: `TaskStarted` also goes to `vkey-{virtualKeyId}-{taskType}`.
    pub virtual_key_id: Option<i64>,
    /// Seconds the task was allowed (tasks hub `TaskTimedOut`).
    pub timeout_seconds: Option<i64>,
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
    // Video and image cancellations carry the same body under their own target.
    let cancelled = || {
        to_value(&GenerationCancelled {
            task_id: id.into(),
            reason: f.reason.clone(),
            cancelled_at: now,
            timestamp: now,
            correlation_id: corr.clone(),
        })
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
                TaskAction::Cancelled => ("VideoGenerationCancelled", cancelled()),
                TaskAction::TimedOut => return Err(timed_out_elsewhere(kind)),
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
                TaskAction::Cancelled => ("ImageGenerationCancelled", cancelled()),
                TaskAction::TimedOut => return Err(timed_out_elsewhere(kind)),
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
        TaskAction::TimedOut => {
            let secs = f.timeout_seconds.ok_or_else(|| {
                FlowError::Invalid("'timeoutSeconds' is required to report a timeout".into())
            })?;
            ("TaskTimedOut", vec![tid, Value::from(secs)])
        }
    };
    // As the gateway's TaskNotificationService: to the key's `SubscribeToTaskType` group too.
    if let (TaskAction::Started, Some(vkey)) = (action, f.virtual_key_id) {
        let task_type = f.task_type.clone().unwrap_or_else(|| kind.to_owned());
        events.push((
            "tasks",
            format!("vkey-{vkey}-{task_type}"),
            target,
            args.clone(),
        ));
    }
    events.push(("tasks", format!("task-{id}"), target, args));
    Ok(events)
}

fn timed_out_elsewhere(kind: &str) -> FlowError {
    FlowError::Invalid(format!(
        "'timedout' is reported for kind 'task' (TaskTimedOut on the tasks hub); the {kind}-generation hub has no timeout event: report it as failed"
    ))
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

/// Sends a post's events in order, stopping at the first that fails.
async fn send_all(
    node: &Node,
    report: &mut FlowReport,
    events: &[PlannedEvent],
    correlation: &CorrelationId,
    guard: Guard<'_>,
    detail: &str,
) -> Result<(), FlowError> {
    for (hub, group, target, args) in events {
        send(
            node,
            report,
            hub,
            group,
            target,
            args,
            correlation,
            guard,
            detail,
        )
        .await?;
    }
    Ok(())
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
    idempotency: Option<&IdempotencyKey>,
) -> Result<FlowReport, FlowError> {
    path_id("taskId", id)?;
    let events = plan_task(kind, id, action, &fact, correlation)?;
    for (hub, _, _, _) in &events {
        node.hub_index(hub).ok_or(FlowError::HubMissing(hub))?;
    }
    let slot_key = format!("{kind}:{id}");
    let mut report = FlowReport::new(correlation, idempotency);
    let detail = format!("Task: {id}, Kind: {kind}");
    if action.terminal() {
        // Drop what this node still holds, then mark the task done cluster-wide so no
        // node publishes progress after this terminal event.
        let dropped = node.progress.finish(&slot_key);
        count_coalesced(&events, dropped, "coalesce");
        let ttl = Duration::from_millis(node.flows().task_done_ttl_ms);
        mark_done(node, kind, id, &events, ttl).await?;
        send_all(
            node,
            &mut report,
            &events,
            correlation,
            Guard::Storm,
            &detail,
        )
        .await?;
        return Ok(report);
    }
    if action == TaskAction::Started {
        send_all(
            node,
            &mut report,
            &events,
            correlation,
            Guard::UnlessDone(kind, id),
            &detail,
        )
        .await?;
        return Ok(report);
    }
    let interval = Duration::from_secs_f64(1.0 / f64::from(node.flows().progress_per_second));
    let (step, schedule, now) =
        node.progress
            .offer(&slot_key, events.clone(), correlation, interval);
    match step {
        ProgressStep::SendNow => {
            let now = now.unwrap_or_default();
            send_all(
                node,
                &mut report,
                &now,
                correlation,
                Guard::UnlessDone(kind, id),
                &detail,
            )
            .await?;
            report.details.insert("coalesced".into(), json!(false));
        }
        ProgressStep::Held => {
            if schedule {
                let (node2, kind, id) = (node.clone(), kind.to_owned(), id.to_owned());
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
                    let mut report = FlowReport::new(&corr, None);
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
                            Guard::UnlessDone(&kind, &id),
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
