//! (Longer than usual because every backplane operation appears here once, dispatching
//! to its two implementations, with the contract both keep.)
//!
//! The backplane: channels between nodes, and the cluster-wide membership store.
//!
//! A closed enum rather than a trait: there are exactly two implementations, and an enum
//! keeps generic parameters out of every handler. Both have the same semantics as Redis
//! pub/sub: a publish reaches the nodes subscribed to the channel at that moment, at most
//! once, and reports how many there were.

pub mod inbound;
pub mod memory;
pub mod outgoing;
pub mod redis;
pub mod throttle;
pub mod user_groups;

use std::sync::Arc;

use bytes::Bytes;

use crate::envelope::Position;
use crate::ids::ConnectionId;

pub use self::redis::{RedisBackplane, RedisOptions};
pub use inbound::{Inbound, InboundItem};
pub use memory::{MemoryBackplane, MemoryBus};
pub use outgoing::{HistorySettings, Idempotency, Publish, PublishGuard, Published, Recorded};

/// The backplane could not take a command.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackplaneError {
    /// The backplane is unreachable and the command was not applied; the caller may
    /// retry later.
    #[error("the backplane is unavailable: {0}")]
    Unavailable(String),
    /// The command was sent but no answer came in time: it may or may not have been
    /// applied. A publish retried with the same idempotency key is applied once.
    #[error("the backplane did not answer in time: {0}")]
    Unknown(String),
    /// The subscriber connection is down; subscriptions are restored when it is back.
    #[error("the backplane subscriber connection is down")]
    Disconnected,
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
    /// The connection's user, if it has one.
    pub user: Option<String>,
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
            Self::Memory(b) => Ok(b.register(id, hub, user)),
            Self::Redis(b) => b.register_connection(id, hub, user).await,
        }
    }

    /// Records that this node now holds connection `id`, which node `from` held until
    /// its transport moved here (stateful reconnect); its memberships stay. Returns
    /// false, changing nothing, when a third node holds it.
    ///
    /// # Errors
    /// [`BackplaneError::Unavailable`].
    pub async fn take_over_connection(
        &self,
        id: &ConnectionId,
        hub: &str,
        user: Option<&str>,
        from: &str,
    ) -> Result<bool, BackplaneError> {
        match self {
            Self::Memory(b) => Ok(b.take_over(id, hub, user, from)),
            Self::Redis(b) => b.take_over_connection(id, hub, user, from).await,
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

    /// Records this node's group memberships per hub, for the cluster-wide counts (each
    /// node reports its own, so a node that dies takes its share with it when reaped).
    ///
    /// # Errors
    /// [`BackplaneError::Unavailable`].
    pub async fn report_counts(
        &self,
        hubs: &[&str],
        memberships: &[usize],
    ) -> Result<(), BackplaneError> {
        match self {
            Self::Memory(_) => Ok(()),
            Self::Redis(b) => b.report_counts(hubs, memberships).await,
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

    /// Publishes a message on a positioned channel, in one step: the idempotency check,
    /// the guard, the next position, the history entry and the publish.
    ///
    /// # Errors
    /// [`BackplaneError::Unavailable`] (not published) or [`BackplaneError::Unknown`]
    /// (perhaps published).
    pub async fn publish_message(&self, msg: &Publish<'_>) -> Result<Published, BackplaneError> {
        match self {
            Self::Memory(b) => Ok(b.publish_message(msg)),
            Self::Redis(b) => b.publish_message(msg).await,
        }
    }

    /// Messages `from..=to` of a channel's stream `epoch`, as far as its history still
    /// holds them, in order.
    ///
    /// # Errors
    /// [`BackplaneError::Unavailable`].
    pub async fn history(
        &self,
        channel: &str,
        epoch: &[u8],
        from: u64,
        to: u64,
    ) -> Result<Vec<Bytes>, BackplaneError> {
        match self {
            Self::Memory(b) => Ok(b.history(channel, epoch, from, to)),
            Self::Redis(b) => b.history(channel, epoch, from, to).await,
        }
    }

    /// The position of a channel's last message, if it has one.
    ///
    /// # Errors
    /// [`BackplaneError::Unavailable`].
    pub async fn head(&self, channel: &str) -> Result<Option<Position>, BackplaneError> {
        match self {
            Self::Memory(b) => Ok(b.head(channel)),
            Self::Redis(b) => b.head(channel).await,
        }
    }

    /// Records where a channel's previous stream ended, as a publisher that saw it
    /// knows (kept beside the new stream, for nodes that catch up later).
    ///
    /// # Errors
    /// [`BackplaneError::Unavailable`].
    pub async fn record_epoch_end(
        &self,
        channel: &str,
        ended: &Position,
    ) -> Result<(), BackplaneError> {
        match self {
            Self::Memory(_) => Ok(()),
            Self::Redis(b) => b.record_epoch_end(channel, ended).await,
        }
    }

    /// Where the stream before the channel's current one ended, if recorded (its
    /// server failed over, or Redis lost its data and a publisher saw the old one).
    ///
    /// # Errors
    /// [`BackplaneError::Unavailable`].
    pub async fn previous_epoch(&self, channel: &str) -> Result<Option<Position>, BackplaneError> {
        match self {
            Self::Memory(_) => Ok(None),
            Self::Redis(b) => b.previous_epoch(channel).await,
        }
    }

    /// A stored idempotency record, if it has not expired.
    ///
    /// # Errors
    /// [`BackplaneError::Unavailable`].
    pub async fn recall(&self, key: &str) -> Result<Option<String>, BackplaneError> {
        match self {
            Self::Memory(b) => Ok(b.recall(key)),
            Self::Redis(b) => b.recall(key).await,
        }
    }

    /// Stores an idempotency record for `ttl`.
    ///
    /// # Errors
    /// [`BackplaneError::Unavailable`].
    pub async fn remember(
        &self,
        key: &str,
        value: &str,
        ttl: std::time::Duration,
    ) -> Result<(), BackplaneError> {
        match self {
            Self::Memory(b) => {
                b.remember(key, value, ttl);
                Ok(())
            }
            Self::Redis(b) => b.remember(key, value, ttl).await,
        }
    }

    /// Removes this node from the cluster after its connections are gone: its heartbeat,
    /// its generation and its entry in the node set, so no survivor reaps it.
    ///
    /// # Errors
    /// [`BackplaneError::Unavailable`].
    pub async fn leave(&self) -> Result<(), BackplaneError> {
        match self {
            Self::Memory(_) => Ok(()),
            Self::Redis(b) => b.leave().await,
        }
    }

    /// Whether this node's heartbeat was renewed recently and the cluster holds its
    /// state (always true in process).
    pub fn is_registered(&self) -> bool {
        match self {
            Self::Memory(_) => true,
            Self::Redis(b) => b.is_registered(),
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
