//! Node liveness on Redis: this node's heartbeat, and the reaper that cleans up after
//! nodes whose heartbeat expired without them doing it themselves.

use std::sync::atomic::Ordering;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::RedisBackplane;
use crate::backplane::{BackplaneError, BackplaneEvent};
use crate::metrics as m;

impl RedisBackplane {
    /// Renews the heartbeat; returns whether this node had to be added back to the node
    /// set (first beat, or it was reaped while away).
    pub(super) async fn beat(&self) -> Result<bool, BackplaneError> {
        let alive = self.keys.node_alive(&self.node);
        let nodes = self.keys.nodes();
        let ttl = u64::try_from(self.options.heartbeat_ttl.as_millis()).unwrap_or(u64::MAX);
        let node = self.node.clone();
        let added: i64 = self
            .run("heartbeat", |mut c| async move {
                redis::pipe()
                    .cmd("SET")
                    .arg(alive)
                    .arg("1")
                    .arg("PX")
                    .arg(ttl)
                    .ignore()
                    .cmd("SADD")
                    .arg(nodes)
                    .arg(&*node)
                    .query_async::<(i64,)>(&mut c)
                    .await
                    .map(|(a,)| a)
            })
            .await?;
        Ok(added == 1)
    }

    /// Looks for dead nodes and reaps each under a lock, so one node does it.
    async fn reap_dead(&self) -> Result<(), BackplaneError> {
        let nodes = self.smembers(self.keys.nodes()).await?;
        for other in nodes.iter().filter(|n| n.as_str() != &*self.node) {
            let alive = self.keys.node_alive(other);
            let exists: bool = self
                .run("exists", |mut c| async move {
                    redis::cmd("EXISTS").arg(alive).query_async(&mut c).await
                })
                .await?;
            if exists {
                continue;
            }
            let lock = self.keys.reap_lock(other);
            let me = self.node.clone();
            let hold =
                u64::try_from((self.options.heartbeat_ttl * 3).as_millis()).unwrap_or(u64::MAX);
            let won: Option<String> = self
                .run("lock", |mut c| async move {
                    redis::cmd("SET")
                        .arg(lock)
                        .arg(&*me)
                        .arg("NX")
                        .arg("PX")
                        .arg(hold)
                        .query_async(&mut c)
                        .await
                })
                .await?;
            if won.is_none() {
                continue;
            }
            let s = self.scripts.clone();
            let (conns, nodes, alive) = (
                self.keys.node_connections(other),
                self.keys.nodes(),
                self.keys.node_alive(other),
            );
            let prefix = self.keys.prefix().to_owned();
            let reaped: i64 = self
                .run("reap", |mut c| async move {
                    s.reap
                        .key(conns)
                        .key(nodes)
                        .key(alive)
                        .arg(prefix)
                        .arg(other.as_str())
                        .invoke_async(&mut c)
                        .await
                })
                .await?;
            if reaped >= 0 {
                self.reaped.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(m::NODES_REAPED).increment(1);
                tracing::warn!(dead_node = %other, connections = reaped, "reaped the memberships of a node whose heartbeat expired");
            }
        }
        Ok(())
    }

    /// Renews this node's heartbeat and reaps dead nodes, every heartbeat interval.
    pub(super) async fn heartbeat(
        self,
        events: mpsc::UnboundedSender<BackplaneEvent>,
        stop: CancellationToken,
    ) {
        let mut first = true;
        loop {
            match self.beat().await {
                Ok(added) => {
                    if added && !first {
                        tracing::warn!("this node was missing from the node set (reaped while unreachable); re-registering");
                        let _ = events.send(BackplaneEvent::ResyncNeeded);
                    }
                    first = false;
                    if let Err(e) = self.reap_dead().await {
                        tracing::debug!(error = %e, "reaper pass failed");
                    }
                }
                Err(e) => tracing::debug!(error = %e, "heartbeat failed"),
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(self.options.heartbeat_interval) => {}
            }
        }
    }
}
