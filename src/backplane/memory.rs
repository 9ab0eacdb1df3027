//! The in-process backplane: pub/sub and membership in memory, with Redis's semantics.
//!
//! One [`MemoryBus`] can be shared by several nodes of one process, which is how
//! multi-node behaviour is exercised without Redis; a single node gets a bus of its own.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use super::Inbound;
use crate::ids::ConnectionId;

#[derive(Debug, Default)]
struct BusState {
    subscribers: HashMap<Arc<str>, Vec<(Arc<str>, Inbound)>>,
    members: HashMap<String, HashSet<ConnectionId>>,
    owners: HashMap<ConnectionId, String>,
}

/// Channels and membership shared by the nodes of one process.
#[derive(Debug, Default)]
pub struct MemoryBus {
    state: Mutex<BusState>,
}

impl MemoryBus {
    fn state(&self) -> MutexGuard<'_, BusState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn add_member(&self, channel: &str, connection: &ConnectionId) {
        self.state()
            .members
            .entry(channel.to_owned())
            .or_default()
            .insert(connection.clone());
    }

    pub(crate) fn remove_member(&self, channel: &str, connection: &ConnectionId) {
        let mut s = self.state();
        if let Some(set) = s.members.get_mut(channel) {
            set.remove(connection);
            if set.is_empty() {
                s.members.remove(channel);
            }
        }
    }

    pub(crate) fn member_count(&self, channel: &str) -> usize {
        self.state().members.get(channel).map_or(0, HashSet::len)
    }

    pub(crate) fn set_owner(&self, connection: &ConnectionId, node: &str) {
        self.state()
            .owners
            .insert(connection.clone(), node.to_owned());
    }

    pub(crate) fn remove_owner(&self, connection: &ConnectionId) {
        self.state().owners.remove(connection);
    }

    pub(crate) fn owner(&self, connection: &ConnectionId) -> Option<String> {
        self.state().owners.get(connection).cloned()
    }

    /// Number of nodes subscribed to a channel (Redis's `PUBSUB NUMSUB`).
    pub fn subscriber_count(&self, channel: &str) -> usize {
        self.state().subscribers.get(channel).map_or(0, Vec::len)
    }
}

/// One node's view of a [`MemoryBus`].
#[derive(Debug, Clone)]
pub struct MemoryBackplane {
    bus: Arc<MemoryBus>,
    node: Arc<str>,
    inbound: Inbound,
}

impl MemoryBackplane {
    /// Attaches node `node` to `bus`, delivering what it receives to `inbound`.
    pub fn new(bus: Arc<MemoryBus>, node: &str, inbound: Inbound) -> Self {
        Self {
            bus,
            node: node.into(),
            inbound,
        }
    }

    pub(crate) fn bus(&self) -> &MemoryBus {
        &self.bus
    }

    pub(crate) fn publish(&self, channel: &str, payload: Bytes) -> usize {
        // Collect first and deliver outside the lock: delivery only enqueues, but holding
        // the bus lock while touching other locks invites ordering trouble.
        let targets: Vec<(Arc<str>, Inbound)> = {
            let s = self.bus.state();
            match s.subscribers.get_key_value(channel) {
                Some((key, subs)) => subs
                    .iter()
                    .map(|(_, inbound)| (key.clone(), inbound.clone()))
                    .collect(),
                None => return 0,
            }
        };
        for (key, inbound) in &targets {
            inbound.deliver(key.clone(), payload.clone());
        }
        targets.len()
    }

    pub(crate) fn subscribe(&self, channels: &[Arc<str>]) {
        let mut s = self.bus.state();
        for c in channels {
            let subs = s.subscribers.entry(c.clone()).or_default();
            if !subs.iter().any(|(n, _)| n == &self.node) {
                subs.push((self.node.clone(), self.inbound.clone()));
            }
        }
    }

    pub(crate) fn unsubscribe(&self, channels: &[Arc<str>]) {
        let mut s = self.bus.state();
        for c in channels {
            if let Some(subs) = s.subscribers.get_mut(c) {
                subs.retain(|(n, _)| n != &self.node);
                if subs.is_empty() {
                    s.subscribers.remove(c);
                }
            }
        }
    }
}
