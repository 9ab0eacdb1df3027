//! Keeping the node's backplane subscriptions equal to local interest, and writing its
//! state to the cluster store again after an outage.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::Node;
use crate::backplane::{BackplaneError, ConnectionSnapshot, InboundItem};
use crate::metrics as m;

/// How far apart nodes' clocks may be, when a publish time decides what a member who
/// joined during an outage is owed: a message up to this much older is delivered.
pub(super) const CLOCK_SKEW_MICROS: u64 = 1_000_000;

pub(super) type Done = Option<oneshot::Sender<Result<(), BackplaneError>>>;

/// A request to the subscription task.
pub(super) enum Subscription {
    /// Bring one channel's subscription in line with local interest.
    Reconcile { channel: Arc<str>, done: Done },
    /// The subscriber connection is new: subscribe the control channel and every channel
    /// with local members, then catch each up from its history.
    Resync,
    /// The subscriber connection dropped: nothing is subscribed until the next resync.
    Lost,
}

impl Node {
    pub(super) fn request_reconcile(&self, channel: Arc<str>, done: Done) {
        // The receiver lives as long as the node; a send error means the node stopped,
        // and the dropped `done` tells the waiter so.
        let _ = self
            .reconcile
            .send(Subscription::Reconcile { channel, done });
    }

    /// The last local member left `channel`: unsubscribe it, and forget its position, so
    /// a member who joins later is owed only what follows the join.
    pub(super) fn channel_emptied(&self, channel: Arc<str>) {
        self.inbound_tx
            .control(InboundItem::Forget(channel.clone()));
        self.request_reconcile(channel, None);
    }

    /// Writes this node's state to the backplane again: subscriptions first, then the
    /// cluster-wide connection records and memberships.
    pub(super) async fn resync(&self) {
        let _ = self.reconcile.send(Subscription::Resync);
        self.needs_resync.store(false, Ordering::Release);
        let snapshot: Vec<ConnectionSnapshot> = self
            .registry
            .snapshot()
            .into_iter()
            .map(|(id, conn)| {
                let hub = self.hubs[conn.hub].name();
                ConnectionSnapshot {
                    groups: conn
                        .channels
                        .iter()
                        .filter_map(|c| self.keys.group_of_channel(hub, c).map(str::to_owned))
                        .collect(),
                    hub: hub.to_owned(),
                    user: conn.caller.user.as_ref().map(|u| u.as_str().to_owned()),
                    id,
                }
            })
            .collect();
        match self.backplane.resync(&snapshot).await {
            Ok(()) => tracing::info!(connections = snapshot.len(), "cluster state written"),
            Err(e) => self.store_failed("resync", &e),
        }
    }
}

/// Keeps the node's backplane subscriptions equal to the channels that have local
/// members. Requests are handled in batches; each one re-reads the registry, so whatever
/// order joins and leaves interleave in, the last request for a channel leaves it right.
/// While the subscriber connection is down, joins succeed (they are local) and the
/// `Resync` that follows the reconnect subscribes everything.
pub(super) async fn subscription_task(
    node: Arc<Node>,
    mut rx: mpsc::UnboundedReceiver<Subscription>,
) {
    let mut subscribed: HashSet<Arc<str>> = HashSet::new();
    let control: Arc<str> = node.keys.node_channel(&node.id).into();
    loop {
        let first = tokio::select! {
            _ = node.stop.cancelled() => return,
            r = rx.recv() => r,
        };
        let Some(first) = first else { return };
        let mut batch = vec![first];
        while batch.len() < 512 {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let mut to_sub: Vec<Arc<str>> = Vec::new();
        let mut to_unsub: Vec<Arc<str>> = Vec::new();
        let mut seen: HashSet<Arc<str>> = HashSet::new();
        if batch.iter().any(|r| matches!(r, Subscription::Lost)) {
            subscribed.clear();
        }
        let resync = batch.iter().any(|r| matches!(r, Subscription::Resync));
        if resync {
            subscribed.clear();
            to_sub.push(control.clone());
            to_sub.extend(node.registry.channels());
            seen.extend(to_sub.iter().cloned());
        }
        for r in &batch {
            let Subscription::Reconcile { channel, .. } = r else {
                continue;
            };
            if !seen.insert(channel.clone()) {
                continue;
            }
            let want = node.registry.has_members(channel);
            let have = subscribed.contains(channel);
            if want && !have {
                to_sub.push(channel.clone());
            } else if !want && have {
                to_unsub.push(channel.clone());
            }
        }
        let sub_result = if to_sub.is_empty() {
            Ok(())
        } else {
            match node.backplane.subscribe(&to_sub).await {
                Ok(()) => {
                    subscribed.extend(to_sub.iter().cloned());
                    // Each channel's dispatch worker reads the head position: a new
                    // channel starts there; a known one fills what was published while
                    // this node was not subscribed from history.
                    for c in &to_sub {
                        node.inbound_tx
                            .control(InboundItem::CatchUp(c.clone(), None));
                    }
                    Ok(())
                }
                // The reconnect's resync will subscribe these; the joins stand, and what
                // is published to them from now on is owed.
                Err(BackplaneError::Disconnected) => {
                    let since = crate::envelope::now_micros().saturating_sub(CLOCK_SKEW_MICROS);
                    for c in &to_sub {
                        node.inbound_tx
                            .control(InboundItem::JoinedUnreachable(c.clone(), since));
                    }
                    Ok(())
                }
                Err(e) => {
                    tracing::warn!(error = %e, channels = to_sub.len(), "backplane subscribe failed");
                    // A failed resync must be tried again: its channels (and the node's
                    // own control channel) would otherwise stay unsubscribed.
                    if resync {
                        node.needs_resync.store(true, Ordering::Release);
                    }
                    Err(e)
                }
            }
        };
        if !to_unsub.is_empty() {
            match node.backplane.unsubscribe(&to_unsub).await {
                Ok(()) | Err(BackplaneError::Disconnected) => {
                    for c in &to_unsub {
                        subscribed.remove(c);
                    }
                }
                // Staying subscribed to a channel without members only costs traffic; it
                // is retried on the channel's next transition.
                Err(e) => tracing::warn!(error = %e, "backplane unsubscribe failed"),
            }
        }
        metrics::gauge!(m::BACKPLANE_SUBSCRIPTIONS).set(subscribed.len() as f64);
        for r in batch {
            if let Subscription::Reconcile {
                channel,
                done: Some(done),
            } = r
            {
                let result = if to_sub.contains(&channel) {
                    sub_result.clone()
                } else {
                    Ok(())
                };
                let _ = done.send(result);
            }
        }
    }
}
