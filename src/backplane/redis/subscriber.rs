//! The pub/sub connection to one server: its supervisor, which reconnects with backoff
//! (to the master Sentinel names now, under Sentinel), and the slot where its command
//! half waits for subscribe calls.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use redis::aio::PubSubSink;
use redis::cluster_async::ClusterConnection;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::sentinel::SentinelMaster;
use crate::backplane::{BackplaneError, BackplaneEvent, Inbound};
use crate::metrics as m;

/// How long the old master's connection is still read after Sentinel named a new one.
const MOVE_DRAIN: Duration = Duration::from_millis(250);

/// What subscribe calls go through.
#[derive(Clone)]
pub(super) enum Sink {
    /// The command half of one server's pub/sub connection.
    Plain(PubSubSink),
    /// The cluster connection that holds the sharded subscriptions.
    Sharded(ClusterConnection),
}

/// The subscriber's command half; empty while disconnected.
#[derive(Default)]
pub(super) struct SinkSlot(Mutex<Option<Sink>>);

impl SinkSlot {
    pub(super) fn get(&self) -> Result<Sink, BackplaneError> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(BackplaneError::Disconnected)
    }

    pub(super) fn set(&self, sink: Option<Sink>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = sink;
    }
}

/// Where the subscriber connects.
pub(super) enum Source {
    /// One server.
    Fixed(Box<redis::Client>),
    /// The master Sentinel names at each attempt.
    Sentinel(Arc<SentinelMaster>),
}

impl Source {
    async fn client(&self) -> Result<redis::Client, BackplaneError> {
        match self {
            Self::Fixed(c) => Ok((**c).clone()),
            Self::Sentinel(s) => s.client().await,
        }
    }

    /// Changes when the connection must move to another server.
    fn moves(&self) -> watch::Receiver<u64> {
        match self {
            Self::Fixed(_) => watch::channel(0).1,
            Self::Sentinel(s) => s.changes(),
        }
    }
}

/// Keeps the subscriber connection up: connect, hand every message to the dispatch
/// queues without waiting, and on loss (or a new master) reconnect with capped
/// exponential backoff.
pub(super) async fn supervise_subscriber(
    source: Source,
    slot: Arc<SinkSlot>,
    inbound: Inbound,
    events: mpsc::UnboundedSender<BackplaneEvent>,
    stop: CancellationToken,
) {
    let mut backoff = Duration::from_millis(50);
    let mut connected_before = false;
    let mut moves = source.moves();
    loop {
        moves.borrow_and_update();
        let connect = async {
            let client = source.client().await?;
            client
                .get_async_pubsub()
                .await
                .map_err(|e| BackplaneError::Unavailable(e.to_string()))
        };
        let attempt = tokio::select! {
            _ = stop.cancelled() => return,
            r = tokio::time::timeout(Duration::from_secs(2), connect) => r,
        };
        match attempt {
            Ok(Ok(pubsub)) => {
                let (sink, mut stream) = pubsub.split();
                slot.set(Some(Sink::Plain(sink)));
                if connected_before {
                    metrics::counter!(m::REDIS_RECONNECTS).increment(1);
                    tracing::info!("Redis pub/sub connection restored; resubscribing");
                }
                connected_before = true;
                backoff = Duration::from_millis(50);
                if events.send(BackplaneEvent::Connected).is_err() {
                    return;
                }
                let deliver = |msg: redis::Msg| {
                    inbound.deliver(
                        Arc::from(msg.get_channel_name()),
                        Bytes::copy_from_slice(msg.get_payload_bytes()),
                    );
                };
                loop {
                    let msg = tokio::select! {
                        _ = stop.cancelled() => return,
                        // A dropped sender (one fixed server) never fires.
                        Ok(()) = moves.changed() => {
                            // What the old master sent before it failed is still in the
                            // socket: read it before moving on, or accepted messages
                            // would be lost on this node.
                            let drain = tokio::time::sleep(MOVE_DRAIN);
                            tokio::pin!(drain);
                            loop {
                                tokio::select! {
                                    () = &mut drain => break,
                                    m = stream.next() => match m {
                                        Some(m) => deliver(m),
                                        None => break,
                                    },
                                }
                            }
                            None
                        }
                        m = stream.next() => m,
                    };
                    let Some(msg) = msg else { break };
                    deliver(msg);
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
