//! The in-process backplane: pub/sub and membership in memory, with Redis's semantics.
//!
//! One [`MemoryBus`] can be shared by several nodes of one process, which is how
//! multi-node behaviour is exercised without Redis; a single node gets a bus of its own.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;

use super::outgoing::{HistorySettings, Publish, PublishGuard, Published, Recorded};
use super::throttle::MemoryThrottle;
use super::user_groups::{MembersPage, MemoryUserGroups};
use super::{ConnectionRecord, Inbound};
use crate::envelope::{Envelope, Position};
use crate::ids::ConnectionId;

/// One channel's delivery positions and history.
#[derive(Debug)]
struct Stream {
    epoch: Bytes,
    seq: u64,
    history: VecDeque<(u64, Bytes)>,
    /// Bytes held in `history`.
    history_bytes: usize,
    last_publish: Instant,
}

/// How many publishes pass between sweeps of idle streams and expired idempotency
/// records, so neither grows without bound.
const SWEEP_EVERY: u64 = 1024;

#[derive(Debug, Default)]
struct BusState {
    subscribers: HashMap<Arc<str>, Vec<(Arc<str>, Inbound)>>,
    /// (hub, group) → members.
    members: HashMap<(String, String), HashSet<ConnectionId>>,
    connections: HashMap<ConnectionId, ConnectionRecord>,
    streams: HashMap<Arc<str>, Stream>,
    /// Idempotency records and when each expires.
    idempotency: HashMap<String, (Instant, String)>,
    publishes: u64,
}

/// Channels and membership shared by the nodes of one process.
#[derive(Debug, Default)]
pub struct MemoryBus {
    state: Mutex<BusState>,
    /// Throttle state of the event flows; locked before `state` when both are needed.
    throttle: Mutex<MemoryThrottle>,
    /// Users' group records; never locked together with `state`.
    user_groups: Mutex<MemoryUserGroups>,
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
    history: HistorySettings,
}

impl MemoryBackplane {
    /// Attaches node `node` to `bus`, delivering what it receives to `inbound`.
    pub fn new(
        bus: Arc<MemoryBus>,
        node: &str,
        inbound: Inbound,
        history: HistorySettings,
    ) -> Self {
        Self {
            bus,
            node: node.into(),
            inbound,
            history,
        }
    }

    /// The flows' throttle state (shared by every node on the bus).
    pub(crate) fn throttle(&self) -> MutexGuard<'_, MemoryThrottle> {
        self.bus.throttle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Users' group records (shared by every node on the bus).
    pub(crate) fn user_groups(&self) -> MutexGuard<'_, MemoryUserGroups> {
        self.bus
            .user_groups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// A group's members in id order, `count` from offset `cursor`.
    pub(crate) fn members_page(
        &self,
        hub: &str,
        group: &str,
        cursor: u64,
        count: usize,
    ) -> MembersPage {
        let mut ids: Vec<String> = self
            .bus
            .state()
            .members
            .get(&(hub.to_owned(), group.to_owned()))
            .map(|m| m.iter().map(|id| id.as_str().to_owned()).collect())
            .unwrap_or_default();
        ids.sort();
        let from = usize::try_from(cursor).unwrap_or(usize::MAX).min(ids.len());
        let to = from.saturating_add(count.max(1)).min(ids.len());
        MembersPage {
            cursor: if to == ids.len() { 0 } else { to as u64 },
            ids: ids.drain(from..to).collect(),
        }
    }

    pub(crate) fn register(&self, id: &ConnectionId, hub: &str, user: Option<&str>) -> bool {
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
                user: user.map(str::to_owned),
            },
        );
        true
    }

    /// Moves the record of `id` from node `from` to this node; false when another node
    /// holds it.
    pub(crate) fn take_over(
        &self,
        id: &ConnectionId,
        hub: &str,
        user: Option<&str>,
        from: &str,
    ) -> bool {
        let mut state = self.bus.state();
        match state.connections.get_mut(id) {
            Some(r) if r.node == from || *r.node == *self.node => {
                r.node = self.node.to_string();
                true
            }
            Some(_) => false,
            None => {
                state.connections.insert(
                    id.clone(),
                    ConnectionRecord {
                        node: self.node.to_string(),
                        hub: hub.to_owned(),
                        user: user.map(str::to_owned),
                    },
                );
                true
            }
        }
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
        deliver(&self.bus.state(), channel, &payload)
    }

    /// The in-process twin of the Redis publish script: the same steps in one critical
    /// section, in the same order.
    pub(crate) fn publish_message(&self, msg: &Publish<'_>) -> Published {
        // Throttle before bus state, as everywhere.
        let mut throttle = self.bus.throttle.lock().unwrap_or_else(|p| p.into_inner());
        let mut s = self.bus.state();
        let now = Instant::now();
        s.publishes += 1;
        if s.publishes % SWEEP_EVERY == 0 {
            let ttl = self.history.position_ttl;
            s.streams
                .retain(|_, st| now.duration_since(st.last_publish) < ttl);
            s.idempotency.retain(|_, (expires, _)| *expires > now);
        }
        if let Some(idem) = &msg.idempotency {
            if let Some((expires, raw)) = s.idempotency.get(idem.key) {
                if *expires > now {
                    if let Some(recorded) = Recorded::parse(raw) {
                        return Published::Repeat(recorded);
                    }
                }
            }
        }
        let allowed = match msg.guard {
            PublishGuard::None => true,
            PublishGuard::UnlessDone(key) => !throttle.is_done(key),
            PublishGuard::Rate {
                bucket,
                per_second,
                burst,
            } => throttle.take(bucket, per_second, burst),
        };
        drop(throttle);
        let record = |nodes: Option<usize>| {
            msg.idempotency.map(|idem| {
                (
                    idem.key.to_owned(),
                    (
                        now + idem.ttl,
                        Recorded::render(idem.fingerprint, idem.correlation, nodes),
                    ),
                )
            })
        };
        if !allowed {
            if let Some((k, v)) = record(None) {
                s.idempotency.insert(k, v);
            }
            return Published::Suppressed;
        }
        let history = self.history;
        let stream = s
            .streams
            .entry(Arc::from(msg.channel))
            .or_insert_with(|| Stream {
                epoch: Bytes::from(crate::ids::random_token()),
                seq: 0,
                history: VecDeque::new(),
                history_bytes: 0,
                last_publish: now,
            });
        if now.duration_since(stream.last_publish) >= history.position_ttl {
            // Idle past its lifetime: a new stream, as when Redis drops the counter.
            stream.epoch = Bytes::from(crate::ids::random_token());
            stream.seq = 0;
            stream.history.clear();
            stream.history_bytes = 0;
        } else if now.duration_since(stream.last_publish) >= history.ttl {
            stream.history.clear();
            stream.history_bytes = 0;
        }
        stream.seq += 1;
        stream.last_publish = now;
        let position = Position {
            epoch: stream.epoch.clone(),
            seq: stream.seq,
        };
        let payload = Envelope::assemble(
            &msg.head,
            &Position::render(&position.epoch, position.seq),
            &msg.body,
        );
        if msg.history && history.messages > 0 && payload.len() <= history.bytes {
            stream.history_bytes += payload.len();
            stream.history.push_back((position.seq, payload.clone()));
            while stream.history.len() > history.messages || stream.history_bytes > history.bytes {
                if let Some((_, old)) = stream.history.pop_front() {
                    stream.history_bytes -= old.len();
                }
            }
        }
        // Delivered under the lock, so positions reach every node in order.
        let nodes = deliver(&s, msg.channel, &payload);
        if let Some((k, v)) = record(Some(nodes)) {
            s.idempotency.insert(k, v);
        }
        Published::Sent { nodes, position }
    }

    pub(crate) fn history(&self, channel: &str, epoch: &[u8], from: u64, to: u64) -> Vec<Bytes> {
        let s = self.bus.state();
        let Some(stream) = s.streams.get(channel).filter(|st| st.epoch[..] == *epoch) else {
            return Vec::new();
        };
        stream
            .history
            .iter()
            .filter(|(seq, _)| (from..=to).contains(seq))
            .map(|(_, payload)| payload.clone())
            .collect()
    }

    pub(crate) fn recall(&self, key: &str) -> Option<String> {
        let s = self.bus.state();
        s.idempotency
            .get(key)
            .filter(|(expires, _)| *expires > Instant::now())
            .map(|(_, v)| v.clone())
    }

    pub(crate) fn remember(&self, key: &str, value: &str, ttl: std::time::Duration) {
        self.bus
            .state()
            .idempotency
            .insert(key.to_owned(), (Instant::now() + ttl, value.to_owned()));
    }

    pub(crate) fn head(&self, channel: &str) -> Option<Position> {
        self.bus.state().streams.get(channel).map(|st| Position {
            epoch: st.epoch.clone(),
            seq: st.seq,
        })
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

/// Hands a payload to every node subscribed to `channel`; returns how many there were.
/// Only enqueues (never waits), so it may run under the bus lock.
fn deliver(s: &BusState, channel: &str, payload: &Bytes) -> usize {
    let Some((key, subs)) = s.subscribers.get_key_value(channel) else {
        return 0;
    };
    for (_, inbound) in subs {
        inbound.deliver(key.clone(), payload.clone());
    }
    subs.len()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::envelope::Kind;

    #[tokio::test]
    async fn history_is_bounded_in_bytes_and_skips_what_does_not_fit() {
        let (inbound, _rx) = Inbound::new(1, 16);
        let history = HistorySettings {
            messages: 1000,
            bytes: 2 * 1024 * 1024,
            ttl: Duration::from_secs(60),
            position_ttl: Duration::from_secs(3600),
        };
        let b = MemoryBackplane::new(Arc::default(), "n", inbound, history);
        let publish = |size: usize| {
            let published = b.publish_message(&Publish {
                channel: "c",
                head: Envelope::head(Kind::Deliver, 1, b"", b""),
                body: Bytes::from(vec![b'x'; size]),
                history: true,
                guard: PublishGuard::None,
                idempotency: None,
            });
            match published {
                Published::Sent { position, .. } => position,
                other => panic!("{other:?}"),
            }
        };
        let mut last = None;
        for _ in 0..10 {
            last = Some(publish(900 * 1024));
        }
        let epoch = last.unwrap().epoch;
        let kept = b.history("c", &epoch, 1, 10);
        assert_eq!(kept.len(), 2, "two 900 KiB messages fit in 2 MiB");
        assert!(kept.iter().map(Bytes::len).sum::<usize>() <= 2 * 1024 * 1024);
        publish(3 * 1024 * 1024);
        assert_eq!(b.history("c", &epoch, 11, 11).len(), 0, "too large to keep");
        assert_eq!(b.history("c", &epoch, 1, 11).len(), 2);
    }
}
