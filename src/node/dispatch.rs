//! Fan-out: payloads from the backplane's dispatch queues go to local members' bounded
//! queues without waiting; a full queue closes its connection as a slow consumer.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use tokio::sync::mpsc;

use super::Node;
use crate::backplane::InboundItem;
use crate::connection::close::CloseReason;
use crate::connection::handle::{Outbound, QueueError, SessionHandle};
use crate::envelope::{Envelope, Kind};
use crate::ids::ConnectionId;
use crate::metrics as m;

impl Node {
    // ---- fan-out ---------------------------------------------------------------------

    /// Writes a record to every local member of a channel. Never waits: a member whose
    /// queue is full is closed as a slow consumer.
    pub(super) fn deliver_local(&self, channel: &str, frame: Utf8Bytes, published_at: u64) {
        let mut slow: Vec<(ConnectionId, SessionHandle)> = Vec::new();
        let mut closing = 0u64;
        let hub = self.registry.for_each_member(channel, |member| {
            match member.handle.try_send(Outbound {
                frame: frame.clone(),
                published_at_micros: published_at,
            }) {
                Ok(()) => {}
                Err(QueueError::Closed) => closing += 1,
                Err(QueueError::Full) => slow.push((member.id.clone(), member.handle.clone())),
            }
        });
        if let Some(hub) = hub {
            let name = self.hubs[hub].name();
            for (id, handle) in slow {
                evict_slow(&handle, &id, name);
            }
            if closing > 0 {
                metrics::counter!(m::DELIVERY_FAILURES, "hub" => name.to_owned(), "reason" => m::REASON_CONNECTION_CLOSED)
                    .increment(closing);
                tracing::debug!(
                    channel,
                    connections = closing,
                    "message not queued: connections closing"
                );
            }
        }
    }
}

pub(super) fn deliver_to(
    handle: &SessionHandle,
    id: &ConnectionId,
    hub: &str,
    frame: Utf8Bytes,
    published_at: u64,
) -> bool {
    match handle.try_send(Outbound {
        frame,
        published_at_micros: published_at,
    }) {
        Ok(()) => true,
        Err(QueueError::Closed) => {
            metrics::counter!(m::DELIVERY_FAILURES, "hub" => hub.to_owned(), "reason" => m::REASON_CONNECTION_CLOSED).increment(1);
            tracing::debug!(connection = %id, "message not queued: connection closing");
            false
        }
        Err(QueueError::Full) => {
            evict_slow(handle, id, hub);
            false
        }
    }
}

pub(super) fn evict_slow(handle: &SessionHandle, id: &ConnectionId, hub: &str) {
    metrics::counter!(m::DELIVERY_FAILURES, "hub" => hub.to_owned(), "reason" => m::REASON_SLOW_CONSUMER).increment(1);
    if handle.close(CloseReason::SlowConsumer) {
        tracing::warn!(connection = %id, hub, "slow consumer: outbound queue full, closing the connection");
    }
}

pub(super) fn bad_envelope(hub: &str, why: &str) {
    metrics::counter!(m::DELIVERY_FAILURES, "hub" => hub.to_owned(), "reason" => m::REASON_BAD_ENVELOPE).increment(1);
    tracing::warn!(why, "backplane payload dropped: not a valid envelope");
}

/// Takes payloads from one dispatch queue and fans them out. Channel deliveries are done
/// inline (they never wait); control messages that need the backplane run as their own
/// tasks so one slow join cannot hold up the queue.
pub(super) async fn dispatch_worker(node: Arc<Node>, mut rx: mpsc::Receiver<InboundItem>) {
    loop {
        let item = tokio::select! {
            _ = node.stop.cancelled() => return,
            item = rx.recv() => item,
        };
        let Some((channel, payload)) = item else {
            return;
        };
        let env = match Envelope::decode(&payload) {
            Ok(e) => e,
            Err(e) => {
                bad_envelope(crate::keys::hub_label(&channel), &e.to_string());
                continue;
            }
        };
        match env.kind {
            Kind::Deliver => {
                node.received.fetch_add(1, Ordering::Relaxed);
                // The publish's correlation id, on every node that delivers it. Filter
                // with `RUST_LOG=hubcast::delivery=warn` when the volume matters.
                tracing::info!(
                    target: "hubcast::delivery",
                    channel = %channel,
                    correlation_id = %String::from_utf8_lossy(&env.correlation),
                    local_members = node.registry.member_count(&channel),
                    "delivering"
                );
                match Utf8Bytes::try_from(env.body) {
                    Ok(frame) => node.deliver_local(&channel, frame, env.published_at_micros),
                    Err(_) => bad_envelope(crate::keys::hub_label(&channel), "record is not UTF-8"),
                }
            }
            Kind::Send | Kind::Close | Kind::Probe | Kind::Ack => node.apply_control(env).await,
            Kind::Join | Kind::Leave => {
                let node2 = node.clone();
                node.tasks
                    .spawn(async move { node2.apply_control(env).await });
            }
        }
    }
}
