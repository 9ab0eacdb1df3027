//! What the rest of the node holds of a session: a bounded outbound queue and a way to
//! close it with a reason.
//!
//! One small shared allocation per connection: a `VecDeque` that allocates only while
//! messages wait, two `Notify`s, a byte count and the close reason. (A tokio channel
//! allocates a 32-slot block up front and a cancellation token a tree node: more than
//! 1.5 KiB per idle connection.)
//!
//! The queue is bounded twice: in messages, and in bytes. A message bound alone let a
//! client that stops reading pin `outbound_queue` × the largest publish (1 024 × 1 MiB).
//! The bytes a batch carries stay counted while the session writes it, so the budget
//! covers everything the connection holds on to, not only what waits.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::Notify;

use super::close::CloseReason;

/// One message waiting to be written to a client.
#[derive(Debug, Clone)]
pub struct Outbound {
    /// The encoded record(s); shared by every recipient of the same publish.
    pub frame: Utf8Bytes,
    /// When it was published (µs since the epoch), for the delivery-lag histogram; 0 when
    /// not from a publish.
    pub published_at_micros: u64,
}

/// Why a message could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueError {
    /// The queue is full: the client is not keeping up.
    Full,
    /// The session has ended.
    Closed,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Outbound>,
    /// Bytes of the frames queued or taken by the session and not yet written.
    bytes: usize,
    reason: Option<CloseReason>,
    /// The receiving side is gone.
    ended: bool,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    capacity: usize,
    byte_budget: usize,
    /// Wakes the session when a message is queued.
    queued: Notify,
    /// Wakes the session when it is asked to close.
    closing: Notify,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A cheap, cloneable handle to one session.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    shared: Arc<Shared>,
}

/// The session's end of its queue.
#[derive(Debug)]
pub struct Receiver {
    shared: Arc<Shared>,
    /// Counts messages still queued when the session ends.
    discarded: Option<metrics::Counter>,
}

impl SessionHandle {
    /// A handle and the receiving end of its queue of `capacity` messages, with no byte
    /// budget (tests and embedding; sessions use [`Self::with_budget`]).
    pub fn new(capacity: usize) -> (Self, Receiver) {
        Self::with_budget(capacity, usize::MAX)
    }

    /// A handle and the receiving end of its queue of `capacity` messages and at most
    /// `byte_budget` bytes queued or being written.
    pub fn with_budget(capacity: usize, byte_budget: usize) -> (Self, Receiver) {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            capacity,
            byte_budget,
            queued: Notify::new(),
            closing: Notify::new(),
        });
        (
            Self {
                shared: shared.clone(),
            },
            Receiver {
                shared,
                discarded: None,
            },
        )
    }

    /// Queues a message without waiting: the fan-out path never blocks on one client.
    ///
    /// # Errors
    /// [`QueueError::Full`] when the client is not keeping up (the message bound or the
    /// byte budget would be exceeded), [`QueueError::Closed`] when the session is gone or
    /// closing.
    pub fn try_send(&self, item: Outbound) -> Result<(), QueueError> {
        {
            let mut state = self.shared.state();
            if state.ended || state.reason.is_some() {
                return Err(QueueError::Closed);
            }
            let bytes = state.bytes.saturating_add(item.frame.len());
            if state.queue.len() >= self.shared.capacity || bytes > self.shared.byte_budget {
                return Err(QueueError::Full);
            }
            state.bytes = bytes;
            state.queue.push_back(item);
        }
        // A stored permit if the session is not waiting right now: no wake-up is lost.
        self.shared.queued.notify_one();
        Ok(())
    }

    /// Asks the session to close. The first reason given wins; returns whether this call
    /// was the first.
    pub fn close(&self, reason: CloseReason) -> bool {
        let first = {
            let mut state = self.shared.state();
            if state.reason.is_none() {
                state.reason = Some(reason);
                true
            } else {
                false
            }
        };
        self.shared.closing.notify_waiters();
        first
    }

    /// Completes once [`Self::close`] was called.
    pub async fn closed(&self) {
        loop {
            let notified = self.shared.closing.notified();
            tokio::pin!(notified);
            // Registered before the check, so a close between the two is not missed.
            notified.as_mut().enable();
            if self.shared.state().reason.is_some() {
                return;
            }
            notified.await;
        }
    }

    /// The reason given to [`Self::close`], if any.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.shared.state().reason.clone()
    }

    /// Whether both handles lead to the same session.
    pub fn same_session(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }
}

impl Receiver {
    /// Waits for messages and moves up to `max` of them into `batch`. Their bytes stay
    /// counted against the budget until [`Self::written`].
    pub async fn recv_batch(&mut self, batch: &mut Vec<Outbound>, max: usize) {
        loop {
            {
                let mut state = self.shared.state();
                if !state.queue.is_empty() {
                    let n = state.queue.len().min(max);
                    batch.extend(state.queue.drain(..n));
                    // Give back what a burst grew, so an idle connection holds nothing.
                    if state.queue.is_empty() && state.queue.capacity() > 64 {
                        state.queue = VecDeque::new();
                    }
                    return;
                }
            }
            self.shared.queued.notified().await;
        }
    }
}

impl Receiver {
    /// Gives back to the budget the bytes of a batch from [`Self::recv_batch`], once it
    /// is written.
    pub fn written(&mut self, batch: &[Outbound]) {
        let n: usize = batch.iter().map(|o| o.frame.len()).sum();
        let mut state = self.shared.state();
        state.bytes = state.bytes.saturating_sub(n);
    }

    /// Waits for the next message (one at a time; the session itself uses batches). Its
    /// bytes are given back at once.
    pub async fn recv(&mut self) -> Option<Outbound> {
        let mut one = Vec::with_capacity(1);
        self.recv_batch(&mut one, 1).await;
        self.written(&one);
        one.pop()
    }

    /// The next message, if one is waiting. Its bytes are given back at once.
    pub fn try_recv(&mut self) -> Option<Outbound> {
        let mut state = self.shared.state();
        let item = state.queue.pop_front()?;
        state.bytes = state.bytes.saturating_sub(item.frame.len());
        Some(item)
    }
}

impl Receiver {
    /// Where to count messages still queued when the session ends.
    pub fn count_discards(&mut self, counter: metrics::Counter) {
        self.discarded = Some(counter);
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let left = {
            let mut state = self.shared.state();
            state.ended = true;
            let left = state.queue.len();
            state.queue.clear();
            state.bytes = 0;
            left
        };
        if left > 0 {
            if let Some(c) = &self.discarded {
                c.increment(left as u64);
            }
            tracing::info!(
                messages = left,
                "connection closed with messages still queued"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(n: u64) -> Outbound {
        Outbound {
            frame: Utf8Bytes::from_static("x"),
            published_at_micros: n,
        }
    }

    #[tokio::test]
    async fn messages_come_out_in_order_in_batches() {
        let (h, mut rx) = SessionHandle::new(10);
        for n in 1..=5 {
            h.try_send(item(n)).unwrap();
        }
        let mut batch = Vec::new();
        rx.recv_batch(&mut batch, 3).await;
        assert_eq!(
            batch
                .iter()
                .map(|o| o.published_at_micros)
                .collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        batch.clear();
        rx.recv_batch(&mut batch, 3).await;
        assert_eq!(batch.len(), 2);
    }

    #[tokio::test]
    async fn a_full_queue_refuses_and_a_closed_session_refuses() {
        let (h, rx) = SessionHandle::new(1);
        h.try_send(item(1)).unwrap();
        assert_eq!(h.try_send(item(2)), Err(QueueError::Full));
        drop(rx);
        assert_eq!(h.try_send(item(3)), Err(QueueError::Closed));
    }

    fn sized(len: usize) -> Outbound {
        Outbound {
            frame: Utf8Bytes::from("x".repeat(len)),
            published_at_micros: 0,
        }
    }

    #[tokio::test]
    async fn the_byte_budget_counts_what_waits_and_what_is_being_written() {
        let (h, mut rx) = SessionHandle::with_budget(100, 10);
        h.try_send(sized(6)).unwrap();
        assert_eq!(h.try_send(sized(5)), Err(QueueError::Full), "6 + 5 > 10");
        h.try_send(sized(4)).unwrap();
        let mut batch = Vec::new();
        rx.recv_batch(&mut batch, 8).await;
        assert_eq!(
            h.try_send(sized(1)),
            Err(QueueError::Full),
            "a batch being written still counts"
        );
        rx.written(&batch);
        h.try_send(sized(10)).unwrap();
        assert_eq!(rx.try_recv().map(|o| o.frame.len()), Some(10));
        h.try_send(sized(10)).unwrap();
    }

    #[tokio::test]
    async fn close_wakes_a_waiter_and_the_first_reason_wins() {
        let (h, _rx) = SessionHandle::new(1);
        let waiter = {
            let h = h.clone();
            tokio::spawn(async move { h.closed().await })
        };
        assert!(h.close(CloseReason::SlowConsumer));
        assert!(!h.close(CloseReason::Shutdown));
        waiter.await.unwrap();
        assert_eq!(h.close_reason(), Some(CloseReason::SlowConsumer));
        assert_eq!(h.try_send(item(1)), Err(QueueError::Closed));
    }

    #[tokio::test]
    async fn a_message_queued_before_waiting_is_not_missed() {
        let (h, mut rx) = SessionHandle::new(4);
        h.try_send(item(7)).unwrap();
        let mut batch = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(1),
            rx.recv_batch(&mut batch, 8),
        )
        .await
        .unwrap();
        assert_eq!(batch[0].published_at_micros, 7);
    }
}
