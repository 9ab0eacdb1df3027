//! Progress coalescing: per task on this node, the latest progress wins and at most one
//! batch per window goes out.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::ids::CorrelationId;

/// One event a flow sends: hub, group, target and arguments. It lives here, not in the
/// flows, because the coalescer holds it and must not depend on the flows.
pub(crate) type PlannedEvent = (&'static str, String, &'static str, Vec<Value>);

/// Progress waiting for its coalescing window, per task on this node.
#[derive(Debug, Default)]
pub struct Coalescer {
    slots: Mutex<HashMap<String, Slot>>,
}

#[derive(Debug)]
struct Slot {
    last_sent: Instant,
    pending: Option<(Vec<PlannedEvent>, CorrelationId)>,
    flush_scheduled: bool,
    coalesced: u64,
}

/// Slots idle this long are forgotten.
const SLOT_IDLE: Duration = Duration::from_secs(600);

/// What [`Coalescer::offer`] decided for a progress post.
pub(crate) enum ProgressStep {
    /// The window is open: send these events now.
    SendNow,
    /// Held as the task's latest progress until its window opens.
    Held,
}

impl Coalescer {
    /// Offers a task's latest progress: sent now if its window is open, otherwise held
    /// (replacing what was held). The `bool` says the caller must schedule the flush,
    /// so exactly one flush is pending per task.
    pub(crate) fn offer(
        &self,
        key: &str,
        events: Vec<PlannedEvent>,
        correlation: &CorrelationId,
        interval: Duration,
    ) -> (ProgressStep, bool, Option<Vec<PlannedEvent>>) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if slots.len() > 10_000 {
            slots.retain(|_, s| s.flush_scheduled || s.last_sent.elapsed() < SLOT_IDLE);
        }
        let now = Instant::now();
        let slot = slots.entry(key.to_owned()).or_insert_with(|| Slot {
            last_sent: now.checked_sub(interval).unwrap_or(now),
            pending: None,
            flush_scheduled: false,
            coalesced: 0,
        });
        if slot.pending.is_none()
            && !slot.flush_scheduled
            && now.duration_since(slot.last_sent) >= interval
        {
            slot.last_sent = now;
            return (ProgressStep::SendNow, false, Some(events));
        }
        let superseded = slot.pending.is_some();
        if superseded {
            slot.coalesced += 1;
        }
        slot.pending = Some((events, correlation.clone()));
        let schedule = !slot.flush_scheduled;
        slot.flush_scheduled = true;
        (ProgressStep::Held, schedule, None)
    }

    /// When the held progress of `key` may go out.
    pub(crate) fn due(&self, key: &str, interval: Duration) -> Option<Instant> {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.get(key).map(|s| s.last_sent + interval)
    }

    /// Takes the held progress of `key` for its flush, with how many posts it superseded.
    pub(crate) fn take(&self, key: &str) -> Option<(Vec<PlannedEvent>, CorrelationId, u64)> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let slot = slots.get_mut(key)?;
        slot.flush_scheduled = false;
        let (events, corr) = slot.pending.take()?;
        slot.last_sent = Instant::now();
        let coalesced = std::mem::take(&mut slot.coalesced);
        Some((events, corr, coalesced))
    }

    /// Forgets a task's pending progress (its terminal event supersedes it); returns how
    /// many progress events that drops.
    pub(crate) fn finish(&self, key: &str) -> u64 {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots
            .remove(key)
            .map_or(0, |s| s.coalesced + u64::from(s.pending.is_some()))
    }
}
