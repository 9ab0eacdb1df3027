//! A log line at most once per interval, saying how many were left out.
//!
//! Refusals that an attacker can cause by the thousand a second (a full socket cap, an
//! exhausted file-descriptor table, slow clients) are each counted in a metric, but a log
//! line each would turn the flood into a disk-filling one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lets one line through per interval.
#[derive(Debug)]
pub struct LogEvery {
    interval: Duration,
    last: Mutex<Option<Instant>>,
    skipped: AtomicU64,
}

impl LogEvery {
    /// A limiter letting one line through per `interval`.
    pub const fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: Mutex::new(None),
            skipped: AtomicU64::new(0),
        }
    }

    /// `Some(lines left out since the last one)` when a line may be written now.
    pub fn ready(&self) -> Option<u64> {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| now.duration_since(t) < self.interval) {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *last = Some(now);
        Some(self.skipped.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_and_the_rest_are_counted() {
        let log = LogEvery::new(Duration::from_secs(3600));
        assert_eq!(log.ready(), Some(0));
        assert_eq!(log.ready(), None);
        assert_eq!(log.ready(), None);
        *log.last.lock().unwrap() = Some(Instant::now() - Duration::from_secs(7200));
        assert_eq!(log.ready(), Some(2));
    }
}
