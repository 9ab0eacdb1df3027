//! The backplane: channels between nodes, and the cluster-wide membership store.
//!
//! A closed enum rather than a trait: there are exactly two implementations, and an enum
//! keeps generic parameters out of every handler. Both have the same semantics as Redis
//! pub/sub: a publish reaches the nodes subscribed to the channel at that moment, at most
//! once, and reports how many there were.

pub mod memory;
pub mod redis;
pub mod throttle;

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::ids::ConnectionId;
use crate::metrics as m;

pub use self::redis::{RedisBackplane, RedisOptions};
pub use memory::{MemoryBackplane, MemoryBus};

/// A payload that arrived on a channel this node subscribes to.
pub type InboundItem = (Arc<str>, Bytes);

/// The backplane could not take a command.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackplaneError {
    /// The backplane is unreachable; the caller may retry later.
    #[error("the backplane is unavailable: {0}")]
    Unavailable(String),
    /// The subscriber connection is down; subscriptions are restored when it is back.
    #[error("the backplane subscriber connection is down")]
    Disconnected,
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

/// Something the node must react to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackplaneEvent {
    /// The subscriber connection is (again) up: resubscribe everything, write local state.
    Connected,
    /// The subscriber connection dropped.
    Disconnected,
    /// Redis lost this node's state (it was reaped while unreachable): write it again.
    ResyncNeeded,
}

/// Where a connection lives, from the cluster-wide record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionRecord {
    /// The owning node.
    pub node: String,
    /// The hub's API name.
    pub hub: String,
}

/// A local connection as written to the cluster store on resync.
#[derive(Debug, Clone)]
pub struct ConnectionSnapshot {
    /// Its id.
    pub id: ConnectionId,
    /// Its hub's API name.
    pub hub: String,
    /// Its user, if any.
    pub user: Option<String>,
    /// Its groups.
    pub groups: Vec<String>,
}

/// The backplane of one node.
#[derive(Debug, Clone)]
pub enum Backplane {
    /// In-process: one node, or several nodes of one process sharing a [`MemoryBus`].
    Memory(MemoryBackplane),
    /// Redis: a cluster of processes.
    Redis(RedisBackplane),
}

impl Backplane {
    /// Publishes a payload; returns how many nodes took it.
    ///
    /// # Errors
    /// [`BackplaneError::Unavailable`] when the backplane cannot take it.
    pub async fn publish(&self, channel: &str, payload: Bytes) -> Result<usize, BackplaneError> {
        match self {
            Self::Memory(b) => Ok(b.publish(channel, payload)),
            Self::Redis(b) => b.publish(channel, payload).await,
        }
    }

    /// Subscribes this node to channels.
    ///
    /// # Errors
    /// [`BackplaneError::Disconnected`] while the subscriber connection is down (the
    /// channels are subscribed on reconnect), [`BackplaneError::Unavailable`] otherwise.
    pub async fn subscribe(&self, channels: &[Arc<str>]) -> Result<(), BackplaneError> {
        match self {
            Self::Memory(b) => {
                b.subscribe(channels);
                Ok(())
            }
            Self::Redis(b) => b.subscribe(channels).await,
        }
    }

    /// Unsubscribes this node from channels.
    ///
    /// # Errors
    /// As [`Self::subscribe`].
    pub async fn unsubscribe(&self, channels: &[Arc<str>]) -> Result<(), BackplaneError> {
        match self {
            Self::Memory(b) => {
                b.unsubscribe(channels);
                Ok(())
            }
            Self::Redis(b) => b.unsubscribe(channels).await,
        }
    }

    /// Records a connection of this node, cluster-wide. Returns false, changing nothing,
    /// when another node already holds that id.
    ///
    /// # Errors
    /// [`BackplaneError::Unavailable`].
    pub async fn register_connection(
        &self,
        id: &ConnectionId,
        hub: &str,
        user: Option<&str>,
    ) -> Result<bool, BackplaneError> {
        match self {
            Self::Memory(b) => Ok(b.register(id, hub)),
            Self::Redis(b) => b.register_connection(id, hub, user).await,
        }
    }

    /// Forgets a connection and all its memberships, cluster-wide.
    ///
    /// # Errors
    /// [`BackplaneError::Unavailable`].
    pub async fn unregister_connection(&self, id: &ConnectionId) -> Result<(), BackplaneError> {
        match self {
            Self::Memory(b) => {
                b.unregister(id);
                Ok(())
            }
            Self::Redis(b) => b.unregister_connection(id).await,
        }
    }

    /// Records a connection as a member of a group, cluster-wide.
    ///
    /// # Errors
    /// [`BackplaneError::Unavailable`].
    pub async fn add_member(
        &self,
        hub: &str,
        group: &str,
        id: &ConnectionId,
    ) -> Result<(), BackplaneError> {
        match self {
            Self::Memory(b) => {
                b.add_member(hub, group, id);
                Ok(())
            }
            Self::Redis(b) => b.add_member(hub, group, id).await,
        }
    }

    /// Removes a connection from a group, cluster-wide.
    ///
    /// # Errors
    /// [`BackplaneError::Unavailable`].
    pub async fn remove_member(
        &self,
        hub: &str,
        group: &str,
        id: &ConnectionId,
    ) -> Result<(), BackplaneError> {
        match self {
            Self::Memory(b) => {
                b.remove_member(hub, group, id);
                Ok(())
            }
            Self::Redis(b) => b.remove_member(hub, group, id).await,
        }
    }

    /// Cluster-wide member count of a group.
    ///
    /// # Errors
    /// [`BackplaneError::Unavailable`].
    pub async fn member_count(&self, hub: &str, group: &str) -> Result<usize, BackplaneError> {
        match self {
            Self::Memory(b) => Ok(b.member_count(hub, group)),
            Self::Redis(b) => b.member_count(hub, group).await,
        }
    }

    /// Cluster-wide number of groups of a hub that have members.
    ///
    /// # Errors
    /// [`BackplaneError::Unavailable`].
    pub async fn group_count(&self, hub: &str) -> Result<usize, BackplaneError> {
        match self {
            Self::Memory(b) => Ok(b.group_count(hub)),
            Self::Redis(b) => b.group_count(hub).await,
        }
    }

    /// Cluster-wide (groups with members, memberships) of each hub.
    ///
    /// # Errors
    /// [`BackplaneError::Unavailable`].
    pub async fn cluster_counts(
        &self,
        hubs: &[&str],
    ) -> Result<Vec<(usize, usize)>, BackplaneError> {
        match self {
            Self::Memory(b) => Ok(hubs
                .iter()
                .map(|h| (b.group_count(h), b.membership_count(h)))
                .collect()),
            Self::Redis(b) => b.cluster_counts(hubs).await,
        }
    }

    /// Where a connection lives, if any node holds it.
    ///
    /// # Errors
    /// [`BackplaneError::Unavailable`].
    pub async fn connection(
        &self,
        id: &ConnectionId,
    ) -> Result<Option<ConnectionRecord>, BackplaneError> {
        match self {
            Self::Memory(b) => Ok(b.connection(id)),
            Self::Redis(b) => b.connection(id).await,
        }
    }

    /// Writes this node's local state to the cluster store again (after an outage).
    ///
    /// # Errors
    /// [`BackplaneError::Unavailable`].
    pub async fn resync(&self, local: &[ConnectionSnapshot]) -> Result<(), BackplaneError> {
        match self {
            Self::Memory(_) => Ok(()),
            Self::Redis(b) => b.resync(local).await,
        }
    }

    /// Budget thresholds newly crossed for a key (ascending), atomically cluster-wide; all
    /// are re-armed when `percent` is below `rearm_below`.
    ///
    /// # Errors
    /// [`BackplaneError::Unavailable`].
    pub async fn budget_crossed(
        &self,
        key: &str,
        percent: f64,
        thresholds: &[u32],
        rearm_below: f64,
    ) -> Result<Vec<u32>, BackplaneError> {
        match self {
            Self::Memory(b) => Ok(b.throttle().budget(key, percent, thresholds, rearm_below)),
            Self::Redis(b) => b.budget(key, percent, thresholds, rearm_below).await,
        }
    }

    /// Takes back thresholds whose alerts could not be sent, so a retry sends them.
    ///
    /// # Errors
    /// [`BackplaneError::Unavailable`].
    pub async fn budget_unmark(&self, key: &str, thresholds: &[u32]) -> Result<(), BackplaneError> {
        if thresholds.is_empty() {
            return Ok(());
        }
        match self {
            Self::Memory(b) => {
                b.throttle().unmark_budget(key, thresholds);
                Ok(())
            }
            Self::Redis(b) => b.budget_unmark(key, thresholds).await,
        }
    }

    /// Applies a provider health result to its hysteresis.
    ///
    /// # Errors
    /// [`BackplaneError::Unavailable`].
    pub async fn health_observed(
        &self,
        key: &str,
        status: &str,
        needed: u32,
    ) -> Result<throttle::HealthVerdict, BackplaneError> {
        match self {
            Self::Memory(b) => Ok(b.throttle().health(key, status, needed)),
            Self::Redis(b) => b.health(key, status, needed).await,
        }
    }

    /// Applies a webhook delivery outcome to the URL's breaker; returns the state changes.
    ///
    /// # Errors
    /// [`BackplaneError::Unavailable`].
    pub async fn breaker_report(
        &self,
        key: &str,
        failures_key: &str,
        success: bool,
        settings: throttle::BreakerSettings,
    ) -> Result<Vec<throttle::BreakerTransition>, BackplaneError> {
        match self {
            Self::Memory(b) => Ok(b.throttle().breaker(
                key,
                success,
                crate::envelope::now_micros() / 1000,
                settings,
            )),
            Self::Redis(b) => b.breaker(key, failures_key, success, settings).await,
        }
    }

    /// Marks a task done, so that progress still in flight anywhere is dropped.
    ///
    /// # Errors
    /// [`BackplaneError::Unavailable`].
    pub async fn mark_done(
        &self,
        key: &str,
        ttl: std::time::Duration,
    ) -> Result<(), BackplaneError> {
        match self {
            Self::Memory(b) => {
                b.throttle().mark_done(key, ttl);
                Ok(())
            }
            Self::Redis(b) => b.mark_done(key, ttl).await,
        }
    }

    /// Publishes unless the task is marked done; `None` when dropped. One command.
    ///
    /// # Errors
    /// [`BackplaneError::Unavailable`].
    pub async fn publish_unless_done(
        &self,
        done_key: &str,
        channel: &str,
        payload: Bytes,
    ) -> Result<Option<usize>, BackplaneError> {
        match self {
            Self::Memory(b) => {
                let throttle = b.throttle();
                if throttle.is_done(done_key) {
                    return Ok(None);
                }
                // Publishing under the throttle lock keeps check and publish atomic.
                let n = b.publish(channel, payload);
                drop(throttle);
                Ok(Some(n))
            }
            Self::Redis(b) => b.publish_unless_done(done_key, channel, payload).await,
        }
    }

    /// Publishes if the bucket has a token; `None` when suppressed. One command.
    ///
    /// # Errors
    /// [`BackplaneError::Unavailable`].
    pub async fn publish_rate_limited(
        &self,
        bucket: &str,
        per_second: f64,
        burst: f64,
        channel: &str,
        payload: Bytes,
    ) -> Result<Option<usize>, BackplaneError> {
        match self {
            Self::Memory(b) => {
                if !b.throttle().take(bucket, per_second, burst) {
                    return Ok(None);
                }
                Ok(Some(b.publish(channel, payload)))
            }
            Self::Redis(b) => {
                b.rate_publish(bucket, per_second, burst, channel, payload)
                    .await
            }
        }
    }

    /// Dead nodes this node reaped (Redis only).
    pub fn nodes_reaped(&self) -> u64 {
        match self {
            Self::Memory(_) => 0,
            Self::Redis(b) => b.nodes_reaped(),
        }
    }

    /// Whether member counts are known without a backplane round trip.
    pub fn counts_are_local(&self) -> bool {
        matches!(self, Self::Memory(_))
    }

    /// A short name for logs.
    pub fn describe(&self) -> &'static str {
        match self {
            Self::Memory(_) => "in-process",
            Self::Redis(_) => "redis",
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
