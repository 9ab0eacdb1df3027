//! The in-process backplane: pub/sub and membership in memory, with Redis's semantics.
//!
//! One [`MemoryBus`] can be shared by several nodes of one process, which is how
//! multi-node behaviour is exercised without Redis; a single node gets a bus of its own.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use super::throttle::MemoryThrottle;
use super::{ConnectionRecord, Inbound};
use crate::ids::ConnectionId;

#[derive(Debug, Default)]
struct BusState {
    subscribers: HashMap<Arc<str>, Vec<(Arc<str>, Inbound)>>,
    /// (hub, group) → members.
    members: HashMap<(String, String), HashSet<ConnectionId>>,
    connections: HashMap<ConnectionId, ConnectionRecord>,
}

/// Channels and membership shared by the nodes of one process.
#[derive(Debug, Default)]
pub struct MemoryBus {
    state: Mutex<BusState>,
    /// Throttle state of the event flows; locked before `state` when both are needed.
    throttle: Mutex<MemoryThrottle>,
}

impl MemoryBus {
    fn state(&self) -> MutexGuard<'_, BusState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
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

    /// The flows' throttle state (shared by every node on the bus).
    pub(crate) fn throttle(&self) -> MutexGuard<'_, MemoryThrottle> {
        self.bus.throttle.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn register(&self, id: &ConnectionId, hub: &str) -> bool {
        let mut state = self.bus.state();
        if state
            .connections
            .get(id)
            .is_some_and(|r| *r.node != *self.node)
        {
            return false;
        }
        state.connections.insert(
            id.clone(),
            ConnectionRecord {
                node: self.node.to_string(),
                hub: hub.to_owned(),
            },
        );
        true
    }

    pub(crate) fn unregister(&self, id: &ConnectionId) {
        let mut s = self.bus.state();
        s.connections.remove(id);
        s.members.retain(|_, set| {
            set.remove(id);
            !set.is_empty()
        });
    }

    pub(crate) fn connection(&self, id: &ConnectionId) -> Option<ConnectionRecord> {
        self.bus.state().connections.get(id).cloned()
    }

    pub(crate) fn add_member(&self, hub: &str, group: &str, id: &ConnectionId) {
        self.bus
            .state()
            .members
            .entry((hub.to_owned(), group.to_owned()))
            .or_default()
            .insert(id.clone());
    }

    pub(crate) fn remove_member(&self, hub: &str, group: &str, id: &ConnectionId) {
        let mut s = self.bus.state();
        let key = (hub.to_owned(), group.to_owned());
        if let Some(set) = s.members.get_mut(&key) {
            set.remove(id);
            if set.is_empty() {
                s.members.remove(&key);
            }
        }
    }

    pub(crate) fn member_count(&self, hub: &str, group: &str) -> usize {
        self.bus
            .state()
            .members
            .get(&(hub.to_owned(), group.to_owned()))
            .map_or(0, HashSet::len)
    }

    pub(crate) fn membership_count(&self, hub: &str) -> usize {
        self.bus
            .state()
            .members
            .iter()
            .filter(|((h, _), _)| h == hub)
            .map(|(_, m)| m.len())
            .sum()
    }

    pub(crate) fn group_count(&self, hub: &str) -> usize {
        self.bus
            .state()
            .members
            .keys()
            .filter(|(h, _)| h == hub)
            .count()
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
