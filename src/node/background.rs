//! The node's background work: the readiness probe, the gauge task, reacting to
//! backplane events, and shutdown.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::Node;
use crate::backplane::BackplaneEvent;
use crate::connection::close::CloseReason;
use crate::envelope::{now_micros, Envelope, Kind};
use crate::hub::Hub;
use crate::metrics as m;

impl Node {
    /// A pub/sub round trip through the backplane: publishes a probe to this node's own
    /// control channel and waits for it to come back.
    pub async fn probe(&self, within: Duration) -> bool {
        let nonce = self.next_nonce.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.probes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(nonce, tx);
        let payload = Envelope::encode(
            Kind::Probe,
            now_micros(),
            b"",
            b"",
            nonce.to_string().as_bytes(),
        );
        let channel = self.keys.node_channel(&self.id);
        let ok = tokio::time::timeout(within, async {
            self.backplane
                .publish(&channel, payload)
                .await
                .ok()
                .filter(|n| *n > 0)?;
            rx.await.ok()
        })
        .await
        .ok()
        .flatten()
        .is_some();
        self.probes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&nonce);
        ok
    }

    /// Ready to take traffic: not draining, registered in the cluster with a fresh
    /// heartbeat, and a pub/sub round trip through the backplane works.
    pub async fn is_ready(&self, within: Duration) -> bool {
        !self.is_draining() && self.backplane.is_registered() && self.probe(within).await
    }

    /// After a drain, once the sessions are gone: removes this node from the cluster, so
    /// no survivor reaps it.
    pub async fn leave(&self) {
        match self.backplane.leave().await {
            Ok(()) => tracing::info!("left the cluster"),
            Err(e) => {
                tracing::warn!(error = %e, "could not remove this node's records; survivors reap them after the heartbeat expires")
            }
        }
    }

    // ---- shutdown --------------------------------------------------------------------

    /// Starts draining: new connections are refused and every session is told to close
    /// with `allowReconnect`.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Release);
        for handle in self.registry.handles() {
            handle.close(CloseReason::Shutdown);
        }
    }

    /// Stops background tasks and waits for them (bounded).
    pub async fn stop(&self) {
        self.stop.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.tasks.wait()).await;
    }
}

pub(super) async fn gauge_task(node: Arc<Node>) {
    let names: Vec<&str> = node.hubs.iter().map(Hub::name).collect();
    crate::metrics::init_series(&names);
    // CPU, memory and open files of the process, under Prometheus's standard names.
    let process = metrics_process::Collector::default();
    process.describe();
    loop {
        process.collect();
        metrics::gauge!(m::OUTBOUND_QUEUED).set(node.registry.queued_messages() as f64);
        let local = node
            .registry
            .channel_counts(node.hubs.len(), |hub, channel| {
                node.keys
                    .group_of_channel(node.hubs[hub].name(), channel)
                    .is_some()
            });
        for (hub, (n, _)) in names.iter().zip(&local) {
            metrics::gauge!(m::LOCAL_GROUPS, "hub" => (*hub).to_owned()).set(*n as f64);
        }
        let memberships: Vec<usize> = local.iter().map(|(_, m)| *m).collect();
        if let Err(e) = node.backplane.report_counts(&names, &memberships).await {
            tracing::debug!(error = %e, "cannot report this node's memberships");
        }
        match node.backplane.cluster_counts(&names).await {
            Ok(counts) => {
                for (hub, (groups, members)) in names.iter().zip(counts) {
                    metrics::gauge!(m::GROUPS, "hub" => (*hub).to_owned()).set(groups as f64);
                    metrics::gauge!(m::GROUP_MEMBERS, "hub" => (*hub).to_owned())
                        .set(members as f64);
                }
            }
            Err(e) => tracing::debug!(error = %e, "cluster counts unavailable"),
        }
        let ready = node.is_ready(Duration::from_secs(1)).await;
        metrics::gauge!(m::READY).set(if ready { 1.0 } else { 0.0 });
        // Every second, so the gauge follows /readyz within a second; a lost subscriber
        // sets it at once (see the event task).
        let period = Duration::from_secs(1);
        tokio::select! {
            _ = node.stop.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
    }
}

/// Reacts to the backplane: a (re)connected subscriber or lost cluster state means
/// writing this node's state again.
pub(super) async fn event_task(
    node: Arc<Node>,
    mut events: mpsc::UnboundedReceiver<BackplaneEvent>,
) {
    let mut repair = tokio::time::interval(Duration::from_secs(5));
    repair.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let event = tokio::select! {
            _ = node.stop.cancelled() => return,
            e = events.recv() => e,
            _ = repair.tick() => {
                if node.needs_resync.load(Ordering::Acquire) {
                    node.resync().await;
                }
                continue;
            }
        };
        match event {
            None => return,
            Some(BackplaneEvent::Connected | BackplaneEvent::ResyncNeeded) => node.resync().await,
            Some(BackplaneEvent::Disconnected) => {
                metrics::gauge!(m::READY).set(0.0);
                metrics::gauge!(m::BACKPLANE_SUBSCRIPTIONS).set(0.0);
                let _ = node
                    .reconcile
                    .send(super::subscriptions::Subscription::Lost);
            }
        }
    }
}

/// Ends timed user memberships and retries failed restores, once a second.
pub(super) async fn user_groups_task(node: Arc<Node>) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tick = 0u64;
    loop {
        tokio::select! {
            _ = node.stop.cancelled() => return,
            _ = every.tick() => {}
        }
        tick += 1;
        node.user_groups_tick(tick).await;
    }
}
