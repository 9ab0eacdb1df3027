//! The pub/sub connection: its supervisor, which reconnects with backoff, and the slot
//! where its command half waits for subscribe calls.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use redis::aio::PubSubSink;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::backplane::{BackplaneError, BackplaneEvent, Inbound};
use crate::metrics as m;

/// The subscriber connection's command half; empty while disconnected.
#[derive(Default)]
pub(super) struct SinkSlot(Mutex<Option<PubSubSink>>);

impl SinkSlot {
    pub(super) fn get(&self) -> Result<PubSubSink, BackplaneError> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(BackplaneError::Disconnected)
    }

    fn set(&self, sink: Option<PubSubSink>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = sink;
    }
}

/// Keeps the subscriber connection up: connect, hand every message to the dispatch
/// queues without waiting, and on loss reconnect with capped exponential backoff.
pub(super) async fn supervise_subscriber(
    client: redis::Client,
    slot: Arc<SinkSlot>,
    inbound: Inbound,
    events: mpsc::UnboundedSender<BackplaneEvent>,
    stop: CancellationToken,
) {
    let mut backoff = Duration::from_millis(50);
    let mut connected_before = false;
    loop {
        let attempt = tokio::select! {
            _ = stop.cancelled() => return,
            r = tokio::time::timeout(Duration::from_secs(2), client.get_async_pubsub()) => r,
        };
        match attempt {
            Ok(Ok(pubsub)) => {
                let (sink, mut stream) = pubsub.split();
                slot.set(Some(sink));
                if connected_before {
                    metrics::counter!(m::REDIS_RECONNECTS).increment(1);
                    tracing::info!("Redis pub/sub connection restored; resubscribing");
                }
                connected_before = true;
                backoff = Duration::from_millis(50);
                if events.send(BackplaneEvent::Connected).is_err() {
                    return;
                }
                loop {
                    let msg = tokio::select! {
                        _ = stop.cancelled() => return,
                        m = stream.next() => m,
                    };
                    let Some(msg) = msg else { break };
                    inbound.deliver(
                        Arc::from(msg.get_channel_name()),
                        Bytes::copy_from_slice(msg.get_payload_bytes()),
                    );
                }
                slot.set(None);
                let _ = events.send(BackplaneEvent::Disconnected);
                tracing::warn!("Redis pub/sub connection lost; reconnecting");
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "cannot reach Redis for pub/sub")
            }
            Err(_) => tracing::warn!(retry_in = ?backoff, "Redis pub/sub connect timed out"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}
