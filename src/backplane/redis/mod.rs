//! The Redis backplane: pub/sub fan-out on one dedicated connection per node, commands and
//! Lua scripts over one multiplexed command connection, a heartbeat, and the reaper that cleans up
//! after nodes that died without doing it themselves.
//!
//! The subscriber connection is supervised: when it drops, the node keeps serving its
//! clients from memory, publishes answer 503, and the supervisor reconnects with backoff.
//! Once it is back it emits [`BackplaneEvent::Connected`], and the node resubscribes every
//! channel it has local members for and writes its connections and memberships again.

mod delivery;
mod liveness;
mod scripts;
mod subscriber;
mod throttle;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use self::liveness::Liveness;
use self::scripts::Scripts;
use self::subscriber::{supervise_subscriber, SinkSlot};
use super::outgoing::HistorySettings;
use super::{BackplaneError, BackplaneEvent, ConnectionRecord, ConnectionSnapshot, Inbound};
use crate::ids::ConnectionId;
use crate::keys::Keys;
use crate::metrics as m;

/// Connections a resync writes at the same time.
const RESYNC_CONCURRENCY: usize = 64;

/// Settings of the Redis backplane.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// Server URL.
    pub url: String,
    /// How long a node's heartbeat lives.
    pub heartbeat_ttl: Duration,
    /// How often it is renewed (and dead nodes looked for).
    pub heartbeat_interval: Duration,
    /// Longest a single command may take before it counts as failed.
    pub command_timeout: Duration,
    /// What each channel's stream keeps.
    pub history: HistorySettings,
}

/// One node's Redis backplane.
#[derive(Clone)]
pub struct RedisBackplane {
    /// Commands share one pipelined connection that reconnects by itself. A pool would
    /// add nothing (the connection multiplexes concurrent commands) and deadpool's
    /// recycle check sends UNWATCH and PING on every checkout: two extra commands and a
    /// round trip per publish.
    commands: ConnectionManager,
    keys: Keys,
    node: Arc<str>,
    options: RedisOptions,
    scripts: Arc<Scripts>,
    /// Shared with the subscriber supervisor, which fills and empties it.
    sink: Arc<SinkSlot>,
    /// Dead nodes this node reaped.
    reaped: Arc<AtomicU64>,
    /// Chosen at start: the cluster holds this node's state while its generation key
    /// says this value.
    generation: Arc<str>,
    liveness: Arc<Liveness>,
}

impl std::fmt::Debug for RedisBackplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackplane")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: impl std::fmt::Display) -> BackplaneError {
    BackplaneError::Unavailable(e.to_string())
}

/// A failed command was either never applied (refused connection, an error reply) or may
/// have been (it went out and the answer did not come back).
fn classify(e: &redis::RedisError) -> BackplaneError {
    if !e.is_connection_refusal()
        && (e.is_timeout() || e.is_connection_dropped() || e.is_io_error())
    {
        BackplaneError::Unknown(e.to_string())
    } else {
        BackplaneError::Unavailable(e.to_string())
    }
}

impl RedisBackplane {
    /// Creates the command connection (lazily) and starts the subscriber supervisor and the heartbeat. Nothing
    /// here waits for Redis: a node starts (not ready) while Redis is down.
    ///
    /// # Errors
    /// The URL is not a valid Redis URL.
    pub fn start(
        options: RedisOptions,
        keys: Keys,
        node: &str,
        inbound: Inbound,
        events: mpsc::UnboundedSender<BackplaneEvent>,
        stop: CancellationToken,
    ) -> Result<Self, BackplaneError> {
        // rediss:// needs a rustls crypto provider; installing it twice (several nodes in
        // one process) is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        // redis-rs leaves Nagle's algorithm on: pipelined PUBLISHes then wait for the
        // server's delayed ACK, milliseconds per publish under load.
        let info = redis::IntoConnectionInfo::into_connection_info(options.url.as_str())
            .map_err(unavailable)?
            .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
        let client = redis::Client::open(info).map_err(unavailable)?;
        let commands = ConnectionManager::new_lazy_with_config(
            client.clone(),
            ConnectionManagerConfig::new()
                .set_connection_timeout(Some(options.command_timeout))
                .set_response_timeout(Some(options.command_timeout))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_secs(1)),
        )
        .map_err(unavailable)?;
        let backplane = Self {
            commands,
            keys,
            node: node.into(),
            options,
            scripts: Arc::new(Scripts::load()),
            sink: Arc::default(),
            reaped: Arc::default(),
            generation: crate::ids::random_token().into(),
            liveness: Arc::default(),
        };
        tokio::spawn(supervise_subscriber(
            client,
            backplane.sink.clone(),
            inbound,
            events.clone(),
            stop.clone(),
        ));
        tokio::spawn(backplane.clone().heartbeat(events, stop));
        Ok(backplane)
    }

    /// Dead nodes this node reaped.
    pub fn nodes_reaped(&self) -> u64 {
        self.reaped.load(Ordering::Relaxed)
    }

    async fn conn(&self) -> Result<ConnectionManager, BackplaneError> {
        Ok(self.commands.clone())
    }

    /// Runs one command under the command timeout, timing it.
    async fn run<T, F>(
        &self,
        name: &'static str,
        f: impl FnOnce(ConnectionManager) -> F,
    ) -> Result<T, BackplaneError>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let started = Instant::now();
        let result = tokio::time::timeout(self.options.command_timeout, async {
            let conn = self.conn().await?;
            f(conn).await.map_err(|e| classify(&e))
        })
        .await
        .unwrap_or_else(|_| Err(BackplaneError::Unknown(format!("{name} timed out"))));
        metrics::histogram!(m::REDIS_COMMAND_DURATION, "command" => name)
            .record(started.elapsed().as_secs_f64());
        result
    }

    pub(crate) async fn publish(
        &self,
        channel: &str,
        payload: Bytes,
    ) -> Result<usize, BackplaneError> {
        self.run("publish", |mut c| async move {
            redis::cmd("PUBLISH")
                .arg(channel)
                .arg(&payload[..])
                .query_async::<usize>(&mut c)
                .await
        })
        .await
    }

    /// Whether this node's heartbeat is fresh and the cluster holds its state.
    pub fn is_registered(&self) -> bool {
        self.liveness.is_registered(self.options.heartbeat_ttl)
    }

    pub(crate) async fn subscribe(&self, channels: &[Arc<str>]) -> Result<(), BackplaneError> {
        self.change_subscriptions(true, channels).await
    }

    pub(crate) async fn unsubscribe(&self, channels: &[Arc<str>]) -> Result<(), BackplaneError> {
        self.change_subscriptions(false, channels).await
    }

    /// Subscribes or unsubscribes in chunks, so a resubscribe of many channels does not
    /// build one huge command; each chunk gets its own command timeout.
    async fn change_subscriptions(
        &self,
        subscribe: bool,
        channels: &[Arc<str>],
    ) -> Result<(), BackplaneError> {
        let mut sink = self.sink.get()?;
        let name = if subscribe {
            "subscribe"
        } else {
            "unsubscribe"
        };
        for chunk in channels.chunks(1000) {
            let names: Vec<&str> = chunk.iter().map(|c| &**c).collect();
            let sent = async {
                if subscribe {
                    sink.subscribe(names).await
                } else {
                    sink.unsubscribe(names).await
                }
            };
            tokio::time::timeout(self.options.command_timeout, sent)
                .await
                .map_err(|_| unavailable(format!("{name} timed out")))?
                .map_err(unavailable)?;
        }
        Ok(())
    }

    pub(crate) async fn register_connection(
        &self,
        id: &ConnectionId,
        hub: &str,
        user: Option<&str>,
    ) -> Result<bool, BackplaneError> {
        let s = self.scripts.clone();
        let conn_key = self.keys.connection(id.as_str());
        let node_conns = self.keys.node_connections(&self.node);
        self.run("register", |mut c| async move {
            s.register
                .key(conn_key)
                .key(node_conns)
                .arg(&*self.node)
                .arg(hub)
                .arg(user.unwrap_or(""))
                .arg(id.as_str())
                .invoke_async::<i64>(&mut c)
                .await
        })
        .await
        .map(|registered| registered == 1)
    }

    pub(crate) async fn unregister_connection(
        &self,
        id: &ConnectionId,
    ) -> Result<(), BackplaneError> {
        self.unregister_many(&[id.as_str()]).await
    }

    async fn unregister_many(&self, ids: &[&str]) -> Result<(), BackplaneError> {
        if ids.is_empty() {
            return Ok(());
        }
        let s = self.scripts.clone();
        let node_conns = self.keys.node_connections(&self.node);
        let prefix = self.keys.prefix().to_owned();
        self.run("unregister", |mut c| async move {
            let mut inv = s.unregister.key(node_conns);
            inv.arg(prefix);
            for id in ids {
                inv.arg(*id);
            }
            inv.invoke_async::<i64>(&mut c).await
        })
        .await
        .map(drop)
    }

    pub(crate) async fn add_member(
        &self,
        hub: &str,
        group: &str,
        id: &ConnectionId,
    ) -> Result<(), BackplaneError> {
        self.membership(true, hub, group, id).await
    }

    pub(crate) async fn remove_member(
        &self,
        hub: &str,
        group: &str,
        id: &ConnectionId,
    ) -> Result<(), BackplaneError> {
        self.membership(false, hub, group, id).await
    }

    /// Runs the join or leave script: both take the same keys and arguments.
    async fn membership(
        &self,
        join: bool,
        hub: &str,
        group: &str,
        id: &ConnectionId,
    ) -> Result<(), BackplaneError> {
        let s = self.scripts.clone();
        let (members, groups, conn, count) = (
            self.keys.members(hub, group),
            self.keys.groups(hub),
            self.keys.connection(id.as_str()),
            self.keys.memberships(hub),
        );
        let name = if join { "join" } else { "leave" };
        self.run(name, |mut c| async move {
            let script = if join { &s.join } else { &s.leave };
            script
                .key(members)
                .key(groups)
                .key(conn)
                .key(count)
                .arg(id.as_str())
                .arg(group)
                .invoke_async::<i64>(&mut c)
                .await
        })
        .await
        .and_then(|applied| {
            // The join script refuses a connection with no record (removed meanwhile, or
            // Redis restarted empty): the next resync writes both.
            if join && applied == 0 {
                Err(unavailable("connection record missing"))
            } else {
                Ok(())
            }
        })
    }

    pub(crate) async fn member_count(
        &self,
        hub: &str,
        group: &str,
    ) -> Result<usize, BackplaneError> {
        self.scard(self.keys.members(hub, group)).await
    }

    pub(crate) async fn group_count(&self, hub: &str) -> Result<usize, BackplaneError> {
        self.scard(self.keys.groups(hub)).await
    }

    async fn scard(&self, key: String) -> Result<usize, BackplaneError> {
        self.run("scard", |mut c| async move {
            redis::cmd("SCARD")
                .arg(key)
                .query_async::<usize>(&mut c)
                .await
        })
        .await
    }

    async fn smembers(&self, key: String) -> Result<Vec<String>, BackplaneError> {
        self.run("smembers", |mut c| async move {
            redis::cmd("SMEMBERS").arg(key).query_async(&mut c).await
        })
        .await
    }

    /// Groups with members and memberships of each hub, in one round trip.
    pub(crate) async fn cluster_counts(
        &self,
        hubs: &[&str],
    ) -> Result<Vec<(usize, usize)>, BackplaneError> {
        let mut pipe = redis::pipe();
        for hub in hubs {
            pipe.cmd("SCARD").arg(self.keys.groups(hub));
            pipe.cmd("GET").arg(self.keys.memberships(hub));
        }
        let flat: Vec<Option<i64>> = self
            .run(
                "counts",
                |mut c| async move { pipe.query_async(&mut c).await },
            )
            .await?;
        Ok(flat
            .chunks(2)
            .map(|p| {
                let n = |v: Option<&Option<i64>>| {
                    usize::try_from(v.copied().flatten().unwrap_or(0)).unwrap_or(0)
                };
                (n(p.first()), n(p.get(1)))
            })
            .collect())
    }

    pub(crate) async fn connection(
        &self,
        id: &ConnectionId,
    ) -> Result<Option<ConnectionRecord>, BackplaneError> {
        let key = self.keys.connection(id.as_str());
        let (node, hub): (Option<String>, Option<String>) = self
            .run("hmget", |mut c| async move {
                redis::cmd("HMGET")
                    .arg(key)
                    .arg("node")
                    .arg("hub")
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(match (node, hub) {
            (Some(node), Some(hub)) => Some(ConnectionRecord { node, hub }),
            _ => None,
        })
    }

    /// Makes Redis match this node's local state: heartbeat first (so no reaper takes the
    /// node for dead while it re-registers), then drop connections Redis still lists for
    /// this node but that are gone, then write every local connection and membership.
    pub(crate) async fn resync(&self, local: &[ConnectionSnapshot]) -> Result<(), BackplaneError> {
        let done = match self.write_state(local).await {
            Ok(()) => self.confirm_registered().await,
            Err(e) => Err(e),
        };
        if done.is_err() {
            self.liveness.resync_failed();
        }
        done
    }

    async fn write_connection(&self, conn: &ConnectionSnapshot) -> Result<(), BackplaneError> {
        self.register_connection(&conn.id, &conn.hub, conn.user.as_deref())
            .await?;
        for g in &conn.groups {
            self.add_member(&conn.hub, g, &conn.id).await?;
        }
        Ok(())
    }

    async fn write_state(&self, local: &[ConnectionSnapshot]) -> Result<(), BackplaneError> {
        self.beat().await?;
        self.mark_resync_started().await?;
        let listed = self
            .smembers(self.keys.node_connections(&self.node))
            .await?;
        let stale: Vec<&str> = listed
            .iter()
            .map(String::as_str)
            .filter(|id| !local.iter().any(|l| l.id.as_str() == *id))
            .collect();
        for chunk in stale.chunks(500) {
            self.unregister_many(chunk).await?;
        }
        // Connections are written side by side (the command connection pipelines
        // them), each one's record before its memberships: one after another, a node
        // with many connections would take seconds to reappear after a partition.
        for chunk in local.chunks(RESYNC_CONCURRENCY) {
            let writes: Vec<_> = chunk.iter().map(|c| self.write_connection(c)).collect();
            for written in futures_util::future::join_all(writes).await {
                written?;
            }
        }
        Ok(())
    }
}
