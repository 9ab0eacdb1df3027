//! The backplane: channels between nodes, and the cluster-wide membership store.
//!
//! A closed enum rather than a trait: there are exactly two implementations, and an enum
//! keeps generic parameters out of every handler. Both have the same semantics as Redis
//! pub/sub: a publish reaches the nodes subscribed to the channel at that moment, at most
//! once, and reports how many there were.

pub mod memory;

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::ids::ConnectionId;
use crate::metrics as m;

pub use memory::{MemoryBackplane, MemoryBus};

/// A payload that arrived on a channel this node subscribes to.
pub type InboundItem = (Arc<str>, Bytes);

/// The backplane could not take a command.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackplaneError {
    /// The backplane is unreachable; the caller may retry later.
    #[error("the backplane is unavailable: {0}")]
    Unavailable(String),
}

/// Where the backplane hands received payloads: bounded dispatch queues, one picked per
/// channel by hash so that a channel's messages stay in order. Never waits: a full queue
/// drops the payload and counts it, because blocking here would stall every channel.
#[derive(Debug, Clone)]
pub struct Inbound {
    shards: Arc<[mpsc::Sender<InboundItem>]>,
}

impl Inbound {
    /// Dispatch queues of `capacity` each; returns the receivers, one per shard.
    pub fn new(shards: usize, capacity: usize) -> (Self, Vec<mpsc::Receiver<InboundItem>>) {
        let (txs, rxs): (Vec<_>, Vec<_>) =
            (0..shards.max(1)).map(|_| mpsc::channel(capacity)).unzip();
        (Self { shards: txs.into() }, rxs)
    }

    /// Hands a payload to its shard. Returns false when it was dropped.
    pub fn deliver(&self, channel: Arc<str>, payload: Bytes) -> bool {
        let shard = shard_of(&channel, self.shards.len());
        match self.shards[shard].try_send((channel, payload)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full((channel, _))) => {
                let hub = crate::keys::hub_label(&channel);
                metrics::counter!(m::DELIVERY_FAILURES, "hub" => hub.to_owned(), "reason" => m::REASON_DISPATCH_QUEUE_FULL)
                    .increment(1);
                tracing::warn!(channel = %channel, shard, "dispatch queue full; message dropped on this node");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
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

/// The backplane of one node.
#[derive(Debug, Clone)]
pub enum Backplane {
    /// In-process: one node, or several nodes of one process sharing a [`MemoryBus`].
    Memory(MemoryBackplane),
}

impl Backplane {
    /// Publishes a payload; returns how many nodes took it.
    ///
    /// # Errors
    /// [`BackplaneError::Unavailable`] when the backplane cannot take it.
    pub async fn publish(&self, channel: &str, payload: Bytes) -> Result<usize, BackplaneError> {
        match self {
            Self::Memory(b) => Ok(b.publish(channel, payload)),
        }
    }

    /// Subscribes this node to channels.
    ///
    /// # Errors
    /// [`BackplaneError::Unavailable`].
    pub async fn subscribe(&self, channels: &[Arc<str>]) -> Result<(), BackplaneError> {
        match self {
            Self::Memory(b) => {
                b.subscribe(channels);
                Ok(())
            }
        }
    }

    /// Unsubscribes this node from channels.
    ///
    /// # Errors
    /// [`BackplaneError::Unavailable`].
    pub async fn unsubscribe(&self, channels: &[Arc<str>]) -> Result<(), BackplaneError> {
        match self {
            Self::Memory(b) => {
                b.unsubscribe(channels);
                Ok(())
            }
        }
    }

    /// Records a connection as a member of a group channel, cluster-wide.
    ///
    /// # Errors
    /// [`BackplaneError::Unavailable`].
    pub async fn add_member(
        &self,
        channel: &str,
        connection: &ConnectionId,
    ) -> Result<(), BackplaneError> {
        match self {
            Self::Memory(b) => {
                b.bus().add_member(channel, connection);
                Ok(())
            }
        }
    }

    /// Removes a connection from a group channel's members, cluster-wide.
    ///
    /// # Errors
    /// [`BackplaneError::Unavailable`].
    pub async fn remove_member(
        &self,
        channel: &str,
        connection: &ConnectionId,
    ) -> Result<(), BackplaneError> {
        match self {
            Self::Memory(b) => {
                b.bus().remove_member(channel, connection);
                Ok(())
            }
        }
    }

    /// Cluster-wide member count of a group channel.
    ///
    /// # Errors
    /// [`BackplaneError::Unavailable`].
    pub async fn member_count(&self, channel: &str) -> Result<usize, BackplaneError> {
        match self {
            Self::Memory(b) => Ok(b.bus().member_count(channel)),
        }
    }

    /// Records which node owns a connection (for routing API calls to it).
    ///
    /// # Errors
    /// [`BackplaneError::Unavailable`].
    pub async fn register_connection(
        &self,
        connection: &ConnectionId,
        node: &str,
    ) -> Result<(), BackplaneError> {
        match self {
            Self::Memory(b) => {
                b.bus().set_owner(connection, node);
                Ok(())
            }
        }
    }

    /// Forgets a connection's owner.
    ///
    /// # Errors
    /// [`BackplaneError::Unavailable`].
    pub async fn unregister_connection(
        &self,
        connection: &ConnectionId,
    ) -> Result<(), BackplaneError> {
        match self {
            Self::Memory(b) => {
                b.bus().remove_owner(connection);
                Ok(())
            }
        }
    }

    /// The node owning a connection, if any node does.
    ///
    /// # Errors
    /// [`BackplaneError::Unavailable`].
    pub async fn owner(&self, connection: &ConnectionId) -> Result<Option<String>, BackplaneError> {
        match self {
            Self::Memory(b) => Ok(b.bus().owner(connection)),
        }
    }

    /// A short name for logs.
    pub fn describe(&self) -> &'static str {
        match self {
            Self::Memory(_) => "in-process",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
