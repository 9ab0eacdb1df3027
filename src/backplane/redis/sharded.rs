//! Sharded pub/sub on a Redis Cluster: each channel is subscribed on the shard that owns
//! its slot (SSUBSCRIBE), so a message is handled by that shard alone; classic PUBLISH
//! would be copied to every shard over the cluster bus.
//!
//! redis-rs's cluster connection resubscribes by itself after it reconnects to a shard,
//! and this node catches such a channel up from history. What it does not survive is a
//! slot moving away: the shard then sends an unsolicited SUNSUBSCRIBE, redis-rs drops
//! the channel from its own list and never subscribes it again, and every later SPUBLISH
//! reaches no one. So an SUNSUBSCRIBE for a channel this node still wants is taken as
//! "moved": the channel is subscribed again (on its new owner, which redis-rs finds
//! through `MOVED`) and caught up from its history, which moved with the slot.
//!
//! Nor does redis-rs notice a failover by itself: it reconnects to the dead master's
//! address and refreshes its slot map only when a command is refused. So when a shard's
//! connection drops, every wanted channel is subscribed again, slot by slot, until each
//! shard confirms: the healthy ones at once, the failed one once its replica is
//! promoted and the refused subscribe made redis-rs look again.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::Slot;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::link;
use super::subscriber::{Sink, SinkSlot};
use crate::backplane::{BackplaneError, BackplaneEvent, Inbound, InboundItem};
use crate::metrics as m;

/// Slots subscribed side by side.
const SLOTS_AT_ONCE: usize = 64;

/// What a shard gave up.
#[derive(Debug, PartialEq, Eq)]
enum Lost {
    /// One channel (its slot moved).
    Channel(Arc<str>),
    /// A shard's connection, with whatever it held.
    Shard,
}

/// What this node wants subscribed, and what a shard confirmed.
#[derive(Default)]
pub(super) struct Wanted(Mutex<WantedState>);

#[derive(Default)]
struct WantedState {
    /// Channels with local interest.
    wanted: HashSet<Arc<str>>,
    /// Channels a shard confirmed at least once: a later confirmation is a
    /// resubscription, after which the channel is caught up.
    confirmed: HashSet<Arc<str>>,
}

impl Wanted {
    fn lock(&self) -> std::sync::MutexGuard<'_, WantedState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, channels: &[Arc<str>], wanted: bool) {
        let mut s = self.lock();
        for c in channels {
            if wanted {
                s.wanted.insert(c.clone());
            } else {
                s.wanted.remove(c);
            }
        }
    }

    fn is_wanted(&self, channel: &str) -> bool {
        self.lock().wanted.contains(channel)
    }
}

/// SSUBSCRIBE or SUNSUBSCRIBE `channels`, marking them wanted or not first (a shard's
/// confirmation may arrive before the call returns).
pub(super) async fn change(
    conn: &ClusterConnection,
    wanted: &Wanted,
    subscribe: bool,
    channels: &[Arc<str>],
) -> Result<(), BackplaneError> {
    wanted.set(channels, subscribe);
    match send_by_slot(conn, subscribe, channels).await {
        (_, None) => Ok(()),
        (_, Some(e)) => Err(BackplaneError::Unavailable(e.to_string())),
    }
}

/// One command per slot (a command naming several slots is refused with CROSSSLOT),
/// slots side by side. Returns the channels of the slots that failed, and the last
/// error.
async fn send_by_slot(
    conn: &ClusterConnection,
    subscribe: bool,
    channels: &[Arc<str>],
) -> (Vec<Arc<str>>, Option<redis::RedisError>) {
    let mut by_slot: HashMap<Slot, Vec<Arc<str>>> = HashMap::new();
    for c in channels {
        by_slot
            .entry(Slot::for_key(c.as_bytes()))
            .or_default()
            .push(c.clone());
    }
    let groups: Vec<Vec<Arc<str>>> = by_slot.into_values().collect();
    let (mut failed, mut last) = (Vec::new(), None);
    for batch in groups.chunks(SLOTS_AT_ONCE) {
        let calls = batch.iter().map(|names| {
            let mut conn = conn.clone();
            async move {
                let names: Vec<&str> = names.iter().map(|c| &**c).collect();
                if subscribe {
                    conn.ssubscribe(names).await
                } else {
                    conn.sunsubscribe(names).await
                }
            }
        });
        for (names, done) in batch
            .iter()
            .zip(futures_util::future::join_all(calls).await)
        {
            if let Err(e) = done {
                failed.extend(names.iter().cloned());
                last = Some(e);
            }
        }
    }
    (failed, last)
}

/// Connects the subscribing cluster connection (retrying with backoff until it is up),
/// then subscribes again every channel a shard gave up while it is still wanted.
pub(super) async fn supervise_sharded(
    seeds: Vec<String>,
    timeout: Duration,
    slot: Arc<SinkSlot>,
    wanted: Arc<Wanted>,
    inbound: Inbound,
    events: mpsc::UnboundedSender<BackplaneEvent>,
    stop: CancellationToken,
) {
    let (moved_tx, mut moved_rx) = mpsc::unbounded_channel::<Lost>();
    let pushes = {
        let wanted = wanted.clone();
        move |info: PushInfo| -> Result<(), std::convert::Infallible> {
            on_push(&wanted, &inbound, &moved_tx, info);
            Ok(())
        }
    };
    let client = match link::cluster_client(&seeds, timeout, Some(pushes)) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the Redis Cluster subscriber");
            return;
        }
    };
    let mut backoff = Duration::from_millis(50);
    let conn = loop {
        let attempt = tokio::select! {
            _ = stop.cancelled() => return,
            r = tokio::time::timeout(timeout, client.get_async_connection()) => r,
        };
        match attempt {
            Ok(Ok(conn)) => break conn,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "cannot reach the Redis Cluster for pub/sub")
            }
            Err(_) => {
                tracing::warn!(retry_in = ?backoff, "Redis Cluster pub/sub connect timed out")
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    };
    slot.set(Some(Sink::Sharded(conn.clone())));
    if events.send(BackplaneEvent::Connected).is_err() {
        return;
    }
    loop {
        let first = tokio::select! {
            _ = stop.cancelled() => return,
            c = moved_rx.recv() => c,
        };
        let Some(first) = first else { return };
        let mut lost = vec![first];
        while let Ok(c) = moved_rx.try_recv() {
            lost.push(c);
        }
        let mut moved: Vec<Arc<str>> = if lost.contains(&Lost::Shard) {
            wanted.lock().wanted.iter().cloned().collect()
        } else {
            lost.into_iter()
                .filter_map(|l| match l {
                    Lost::Channel(c) => Some(c),
                    Lost::Shard => None,
                })
                .collect()
        };
        moved.retain(|c| wanted.is_wanted(c));
        moved.sort();
        moved.dedup();
        // Until the new owner takes it: redis-rs follows MOVED once it refreshes its
        // slot map, and a shard mid-failover refuses for a few seconds.
        let mut backoff = Duration::from_millis(50);
        while !moved.is_empty() {
            let (failed, error) = send_by_slot(&conn, true, &moved).await;
            let Some(e) = error else { break };
            tracing::warn!(error = %e, channels = failed.len(), retry_in = ?backoff, "cannot subscribe moved channels yet");
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(1));
            moved = failed;
            moved.retain(|c| wanted.is_wanted(c));
        }
    }
}

/// A push from a shard: a message goes to the dispatch queues; a confirmation of a
/// channel already confirmed once means it was subscribed again (after a reconnect or
/// a move), so it is caught up; an unsubscribe nobody asked for means it moved.
fn on_push(
    wanted: &Wanted,
    inbound: &Inbound,
    moved: &mpsc::UnboundedSender<Lost>,
    info: PushInfo,
) {
    let channel = |v: Option<&Value>| -> Option<Arc<str>> {
        match v? {
            Value::BulkString(b) => std::str::from_utf8(b).ok().map(Arc::from),
            Value::SimpleString(s) => Some(Arc::from(s.as_str())),
            _ => None,
        }
    };
    match info.kind {
        PushKind::SMessage | PushKind::Message => {
            let (Some(c), Some(Value::BulkString(payload))) =
                (channel(info.data.first()), info.data.get(1))
            else {
                return;
            };
            inbound.deliver(c, Bytes::copy_from_slice(payload));
        }
        PushKind::SSubscribe => {
            let Some(c) = channel(info.data.first()) else {
                return;
            };
            let again = !wanted.lock().confirmed.insert(c.clone());
            if again {
                inbound.control(InboundItem::CatchUp(c, None));
            }
        }
        PushKind::SUnsubscribe => {
            let Some(c) = channel(info.data.first()) else {
                return;
            };
            let mut s = wanted.lock();
            if s.wanted.contains(&c) {
                drop(s);
                metrics::counter!(m::REDIS_CHANNELS_MOVED).increment(1);
                tracing::warn!(channel = %c, "a Redis Cluster shard gave up a channel this node subscribes (slot moved or failover); subscribing it again");
                let _ = moved.send(Lost::Channel(c));
            } else {
                s.confirmed.remove(&c);
            }
        }
        PushKind::Disconnection => {
            tracing::warn!("a Redis Cluster shard's pub/sub connection dropped; subscribing every channel again until each shard confirms");
            let _ = moved.send(Lost::Shard);
        }
        _ => {}
    }
}
