//! Where the backplane hands received payloads: bounded dispatch queues, one picked per
//! channel by hash so that a channel's messages stay in order.
//!
//! Delivering never waits, because blocking here would stall every channel: a full queue
//! drops the payload. A message that carries a delivery position is not lost by that:
//! the channel is marked for a catch-up, which reads the channel's head position and
//! fills what was dropped from its history (or counts it as a gap). A message without a
//! position (a control message) is counted as dropped.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::envelope::{Envelope, Position};
use crate::ids::ConnectionId;
use crate::metrics as m;

/// What a dispatch worker is handed.
#[derive(Debug)]
pub enum InboundItem {
    /// A payload that arrived on a channel this node subscribes to.
    Message(Arc<str>, Bytes),
    /// Read the channel's head position and deliver what this node has not seen (after a
    /// subscription, or after this queue dropped a positioned message: the first one
    /// dropped).
    CatchUp(Arc<str>, Option<Position>),
    /// A catch-up found part of its range neither in history nor delivered yet (it may
    /// still be queued): whatever of it up to this position has not arrived by now is
    /// counted as a gap.
    Verify(Arc<str>, Position),
    /// This node no longer subscribes to the channel: forget its position.
    Forget(Arc<str>),
    /// A member joined the channel while the backplane could not be reached: the
    /// channel starts empty, and messages published before this time (µs) are not owed.
    JoinedUnreachable(Arc<str>, u64),
    /// A stateful connection resumed on this node: give it what the channel's history
    /// holds after the position its old node delivered, up to this worker's own, then
    /// let live messages through (on a channel it had nothing from: only messages
    /// published after this time, µs).
    Resume(Arc<str>, ConnectionId, u64),
}

/// The sending side of the dispatch queues.
#[derive(Debug, Clone)]
pub struct Inbound {
    shards: Arc<[mpsc::Sender<InboundItem>]>,
    /// Channels with a catch-up queued because a message was dropped; one each at most.
    pending: Arc<Mutex<HashSet<Arc<str>>>>,
}

impl Inbound {
    /// Dispatch queues of `capacity` each; returns the receivers, one per shard.
    pub fn new(shards: usize, capacity: usize) -> (Self, Vec<mpsc::Receiver<InboundItem>>) {
        let (txs, rxs): (Vec<_>, Vec<_>) =
            (0..shards.max(1)).map(|_| mpsc::channel(capacity)).unzip();
        let inbound = Self {
            shards: txs.into(),
            pending: Arc::default(),
        };
        (inbound, rxs)
    }

    fn shard(&self, channel: &str) -> &mpsc::Sender<InboundItem> {
        &self.shards[shard_of(channel, self.shards.len())]
    }

    /// Hands a payload to its shard. Returns false when it was dropped.
    pub fn deliver(&self, channel: Arc<str>, payload: Bytes) -> bool {
        match self
            .shard(&channel)
            .try_send(InboundItem::Message(channel, payload))
        {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(InboundItem::Message(channel, payload))) => {
                self.dropped(channel, &payload);
                false
            }
            Err(_) => false,
        }
    }

    fn dropped(&self, channel: Arc<str>, payload: &Bytes) {
        let position = Envelope::decode(payload).ok().and_then(|e| e.position);
        let hub = crate::keys::hub_label(&channel).to_owned();
        let Some(position) = position else {
            metrics::counter!(m::DELIVERY_FAILURES, "hub" => hub, "reason" => m::REASON_DISPATCH_QUEUE_FULL)
                .increment(1);
            tracing::warn!(channel = %channel, "dispatch queue full; control message dropped on this node");
            return;
        };
        tracing::warn!(channel = %channel, "dispatch queue full; message deferred to a catch-up from the channel's history");
        let first = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(channel.clone());
        if first {
            // Waits for room in the queue, behind what the queue already holds.
            let tx = self.shard(&channel).clone();
            tokio::spawn(async move {
                let _ = tx.send(InboundItem::CatchUp(channel, Some(position))).await;
            });
        }
    }

    /// Queues a catch-up, verify or forget for a channel behind what its queue holds,
    /// without waiting: when the queue is full, a task waits for room.
    pub fn control(&self, item: InboundItem) {
        let channel = match &item {
            InboundItem::Message(c, _)
            | InboundItem::CatchUp(c, _)
            | InboundItem::Verify(c, _)
            | InboundItem::Forget(c)
            | InboundItem::JoinedUnreachable(c, _)
            | InboundItem::Resume(c, _, _) => c,
        };
        let tx = self.shard(channel).clone();
        if let Err(mpsc::error::TrySendError::Full(item)) = tx.try_send(item) {
            tokio::spawn(async move {
                let _ = tx.send(item).await;
            });
        }
    }

    /// A catch-up for `channel` ran: a later drop queues a new one.
    pub fn caught_up(&self, channel: &str) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(channel);
    }
}

fn shard_of(channel: &str, shards: usize) -> usize {
    // FNV-1a: stable, fast, and good enough to spread channel names.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in channel.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % shards as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Kind;

    #[test]
    fn shards_are_stable_and_in_range() {
        for n in 1..8 {
            let s = shard_of("hubcast:spend:group:vkey-1", n);
            assert!(s < n);
            assert_eq!(s, shard_of("hubcast:spend:group:vkey-1", n));
        }
    }

    #[tokio::test]
    async fn a_full_shard_drops_instead_of_waiting() {
        let (inbound, _rx) = Inbound::new(1, 1);
        assert!(inbound.deliver("c".into(), Bytes::from_static(b"1")));
        assert!(!inbound.deliver("c".into(), Bytes::from_static(b"2")));
    }

    #[tokio::test]
    async fn a_dropped_positioned_message_queues_one_catch_up() {
        let (inbound, mut rxs) = Inbound::new(1, 1);
        let rx = &mut rxs[0];
        let head = Envelope::head(Kind::Deliver, 1, b"", b"");
        let msg = |seq| Envelope::assemble(&head, &Position::render(b"e", seq), b"r");
        assert!(inbound.deliver("c".into(), msg(1)));
        assert!(!inbound.deliver("c".into(), msg(2)));
        assert!(!inbound.deliver("c".into(), msg(3)));
        assert!(matches!(rx.recv().await, Some(InboundItem::Message(..))));
        assert!(
            matches!(rx.recv().await, Some(InboundItem::CatchUp(c, Some(p))) if &*c == "c" && p.seq == 2)
        );
        inbound.caught_up("c");
        assert!(rx.try_recv().is_err(), "one catch-up for both drops");
    }
}
