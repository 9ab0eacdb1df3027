//! Node liveness on Redis: this node's heartbeat, and the reaper that cleans up after
//! nodes whose heartbeat expired without them doing it themselves.

use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{unavailable, RedisBackplane};
use crate::backplane::{BackplaneError, BackplaneEvent};
use crate::metrics as m;

impl RedisBackplane {
    /// Renews the heartbeat; returns whether the cluster still holds this node's state
    /// under its generation (false at first, after being reaped, or after Redis lost its
    /// data).
    pub(super) async fn beat(&self) -> Result<bool, BackplaneError> {
        let s = self.scripts.clone();
        let (alive, generation) = (
            self.keys.node_alive(&self.node),
            self.keys.node_generation(&self.node),
        );
        let ttl = u64::try_from(self.options.heartbeat_ttl.as_millis()).unwrap_or(u64::MAX);
        let held: i64 = self
            .run("heartbeat", |mut c| async move {
                s.heartbeat
                    .key(alive)
                    .key(generation)
                    .arg(ttl)
                    .arg(&*self.generation)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        // The node set lives in another slot: listed after the heartbeat is written, so
        // a reaper never finds this node listed without a heartbeat it just wrote.
        let nodes = self.keys.nodes();
        self.run("sadd", |mut c| async move {
            redis::cmd("SADD")
                .arg(nodes)
                .arg(&*self.node)
                .query_async::<i64>(&mut c)
                .await
        })
        .await?;
        let held = held == 1;
        self.liveness.beat_ok(held);
        Ok(held)
    }

    /// Marks a resync as started: the generation key holds a pending mark until the
    /// resync confirms, so a reap in between (which deletes the key) is noticed.
    pub(super) async fn mark_resync_started(&self) -> Result<(), BackplaneError> {
        let key = self.keys.node_generation(&self.node);
        let mark = format!("pending-{}", self.generation);
        self.run("generation", |mut c| async move {
            redis::cmd("SET")
                .arg(key)
                .arg(mark)
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    /// Records that this node's state is written again, under its generation, unless a
    /// reaper removed it while it was being written.
    pub(super) async fn confirm_registered(&self) -> Result<(), BackplaneError> {
        let s = self.scripts.clone();
        let key = self.keys.node_generation(&self.node);
        let mark = format!("pending-{}", self.generation);
        let confirmed: i64 = self
            .run("generation", |mut c| async move {
                s.confirm
                    .key(key)
                    .arg(mark)
                    .arg(&*self.generation)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        if confirmed != 1 {
            return Err(unavailable(
                "this node was reaped while its state was being written; writing it again",
            ));
        }
        self.liveness.registered();
        Ok(())
    }

    /// Removes this node's records after a drain: its heartbeat first, then what the
    /// reaper would remove (any connection still listed, its connection set, its
    /// generation, its entry in the node set), so no survivor reaps it later.
    pub(crate) async fn leave(&self) -> Result<(), BackplaneError> {
        // The heartbeat task stops beating from here on; one beat already in flight may
        // still renew the key once, hence the second try.
        self.liveness.left();
        for _ in 0..2 {
            let alive = self.keys.node_alive(&self.node);
            self.run("leave", |mut c| async move {
                redis::cmd("DEL").arg(alive).query_async::<()>(&mut c).await
            })
            .await?;
            if self.reap_node(&self.node).await? >= 0 {
                return Ok(());
            }
        }
        Err(unavailable(
            "this node's heartbeat came back while it was leaving",
        ))
    }

    /// Reaps `node` in the steps of the module docs of [`super`]: claim, drop each
    /// connection, finish. Returns how many connections it removed, or -1 when the
    /// node's heartbeat is alive (at the claim, or again by the finish).
    async fn reap_node(&self, node: &str) -> Result<i64, BackplaneError> {
        let s = self.scripts.clone();
        let (alive, generation, conns, counts) = (
            self.keys.node_alive(node),
            self.keys.node_generation(node),
            self.keys.node_connections(node),
            self.keys.node_counts(node),
        );
        let claimed: Vec<redis::Value> = self
            .run("reap", |mut c| {
                let (s, alive, generation, conns) =
                    (s.clone(), alive.clone(), generation.clone(), conns.clone());
                async move {
                    s.reap_claim
                        .key(alive)
                        .key(generation)
                        .key(conns)
                        .invoke_async(&mut c)
                        .await
                }
            })
            .await?;
        let mut claimed = claimed.into_iter();
        if claimed
            .next()
            .and_then(|v| redis::from_redis_value::<i64>(v).ok())
            != Some(0)
        {
            return Ok(-1);
        }
        let ids: Vec<String> = claimed
            .filter_map(|v| redis::from_redis_value::<String>(v).ok())
            .collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        self.drop_all(&refs, node).await?;
        let finished: i64 = self
            .run("reap", |mut c| async move {
                s.reap_finish
                    .key(alive)
                    .key(generation)
                    .key(conns)
                    .key(counts)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        if finished < 0 {
            return Ok(-1);
        }
        let nodes = self.keys.nodes();
        self.run("srem", |mut c| async move {
            redis::cmd("SREM")
                .arg(nodes)
                .arg(node)
                .query_async::<i64>(&mut c)
                .await
        })
        .await?;
        Ok(i64::try_from(ids.len()).unwrap_or(i64::MAX))
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
            let reaped = self.reap_node(other).await?;
            if reaped >= 0 {
                self.reaped.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(m::NODES_REAPED).increment(1);
                tracing::warn!(dead_node = %other, connections = reaped, "reaped the memberships of a node whose heartbeat expired");
            }
        }
        Ok(())
    }

    /// Renews this node's heartbeat and reaps dead nodes, every heartbeat interval. When
    /// the cluster no longer holds this node's state, asks the node to write it again,
    /// on every beat until it has.
    pub(super) async fn heartbeat(
        self,
        events: mpsc::UnboundedSender<BackplaneEvent>,
        stop: CancellationToken,
    ) {
        loop {
            if self.liveness.has_left() {
                return;
            }
            match self.beat().await {
                Ok(held) => {
                    if !held && self.liveness.request_resync() {
                        tracing::warn!("the cluster does not hold this node's state (first start, reaped while unreachable, or Redis lost its data); writing it again");
                        let _ = events.send(BackplaneEvent::ResyncNeeded);
                    }
                    if let Err(e) = self.reap_dead().await {
                        tracing::debug!(error = %e, "reaper pass failed");
                    }
                }
                Err(e) => {
                    self.liveness.beat_failed();
                    tracing::warn!(error = %e, "heartbeat failed; not ready until it succeeds");
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(self.options.heartbeat_interval) => {}
            }
        }
    }
}

/// What this node knows of its own standing in the cluster.
#[derive(Debug, Default)]
pub(super) struct Liveness(Mutex<LivenessState>);

#[derive(Debug, Default)]
struct LivenessState {
    /// When a heartbeat last succeeded.
    last_beat: Option<Instant>,
    /// The latest heartbeat failed.
    beat_failed: bool,
    /// The cluster holds this node's state under its generation.
    holds_state: bool,
    /// A resync was asked for and has not confirmed yet.
    resync_pending: bool,
    /// The node left the cluster (drained).
    left: bool,
}

impl Liveness {
    fn lock(&self) -> std::sync::MutexGuard<'_, LivenessState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn beat_ok(&self, held: bool) {
        let mut s = self.lock();
        s.last_beat = Some(Instant::now());
        s.beat_failed = false;
        s.holds_state = held;
    }

    fn beat_failed(&self) {
        self.lock().beat_failed = true;
    }

    /// True when a resync should be asked for now (none pending).
    fn request_resync(&self) -> bool {
        let mut s = self.lock();
        !std::mem::replace(&mut s.resync_pending, true)
    }

    fn registered(&self) {
        let mut s = self.lock();
        s.holds_state = true;
        s.resync_pending = false;
    }

    /// A resync failed: the next beat asks again.
    pub(super) fn resync_failed(&self) {
        self.lock().resync_pending = false;
    }

    fn left(&self) {
        self.lock().left = true;
    }

    fn has_left(&self) -> bool {
        self.lock().left
    }

    /// Registered and heard from Redis within `ttl`: other nodes see this node alive.
    pub(super) fn is_registered(&self, ttl: Duration) -> bool {
        let s = self.lock();
        !s.left && !s.beat_failed && s.holds_state && s.last_beat.is_some_and(|t| t.elapsed() < ttl)
    }
}
