//! Storm-protection bookkeeping: suppressed events are counted every time but logged at
//! most once per second, so a storm cannot flood the log as well.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::events::target_label;
use crate::hub::Hub;
use crate::metrics as m;

/// Counts suppressed events and logs them at most once per second per (hub, group,
/// target), with how many were suppressed since the last line.
#[derive(Debug, Default)]
pub struct Suppressions {
    windows: Mutex<HashMap<String, (Instant, u64)>>,
}

impl Suppressions {
    /// Records one suppressed event.
    pub fn record(&self, hub_def: &Hub, group: &str, target: &str, rule: &'static str) {
        let hub = hub_def.name();
        let label = target_label(hub_def, target);
        metrics::counter!(m::THROTTLED_EVENTS, "hub" => hub.to_owned(), "target" => label, "rule" => rule).increment(1);
        let key = format!("{hub}\u{0}{group}\u{0}{target}\u{0}{rule}");
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if windows.len() > 10_000 {
            windows.retain(|_, (at, _)| at.elapsed() < Duration::from_secs(60));
        }
        let entry = windows
            .entry(key)
            .or_insert((Instant::now() - Duration::from_secs(2), 0));
        entry.1 += 1;
        if entry.0.elapsed() >= Duration::from_secs(1) {
            tracing::warn!(
                hub,
                group,
                target,
                rule,
                suppressed = entry.1,
                "[SignalR:{target}] events suppressed"
            );
            *entry = (Instant::now(), 0);
        }
    }
}
