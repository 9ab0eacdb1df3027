//! What the rest of the node holds of a session: a bounded outbound queue and a way to
//! close it with a reason.

use std::sync::{Arc, Mutex};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

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

#[derive(Debug)]
struct Closer {
    token: CancellationToken,
    reason: Mutex<Option<CloseReason>>,
}

/// A cheap, cloneable handle to one session.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    tx: mpsc::Sender<Outbound>,
    closer: Arc<Closer>,
}

impl SessionHandle {
    /// A handle and the receiving end of its queue of `capacity` messages.
    pub fn new(capacity: usize) -> (Self, mpsc::Receiver<Outbound>) {
        let (tx, rx) = mpsc::channel(capacity);
        (
            Self {
                tx,
                closer: Arc::new(Closer {
                    token: CancellationToken::new(),
                    reason: Mutex::new(None),
                }),
            },
            rx,
        )
    }

    /// Queues a message without waiting: the fan-out path never blocks on one client.
    ///
    /// # Errors
    /// [`QueueError::Full`] when the client is not keeping up, [`QueueError::Closed`] when
    /// the session is gone.
    pub fn try_send(&self, item: Outbound) -> Result<(), QueueError> {
        self.tx.try_send(item).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => QueueError::Full,
            mpsc::error::TrySendError::Closed(_) => QueueError::Closed,
        })
    }

    /// Asks the session to close. The first reason given wins; returns whether this call
    /// was the first.
    pub fn close(&self, reason: CloseReason) -> bool {
        let first = {
            let mut slot = self.closer.reason.lock().unwrap_or_else(|p| p.into_inner());
            if slot.is_none() {
                *slot = Some(reason);
                true
            } else {
                false
            }
        };
        self.closer.token.cancel();
        first
    }

    /// Completes once [`Self::close`] was called.
    pub async fn closed(&self) {
        self.closer.token.cancelled().await;
    }

    /// The reason given to [`Self::close`], if any.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.closer
            .reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether both handles lead to the same session.
    pub fn same_session(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.closer, &other.closer)
    }
}
