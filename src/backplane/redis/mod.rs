//! The Redis backplane: pub/sub fan-out on one dedicated connection per node, commands
//! and Lua scripts over one multiplexed command connection, a heartbeat, and the reaper
//! that cleans up after nodes that died without doing it themselves. On one server, on
//! a Redis Cluster (sharded pub/sub, each script on one shard) or on the master that
//! Sentinel names ([`crate::config::RedisTarget`]).
//!
//! The subscriber connection is supervised: when it drops, the node keeps serving its
//! clients from memory, publishes answer 503, and the supervisor reconnects with backoff.
//! Once it is back it emits [`BackplaneEvent::Connected`], and the node resubscribes every
//! channel it has local members for and writes its connections and memberships again.
//!
//! ## What spans slots, step by step
//!
//! On a Redis Cluster a connection's record, its node's set, a group's member set and
//! the hub's group set live in different slots, so no script can change them together.
//! Each change is a sequence of single-slot steps, in an order that leaves only states
//! the reaper or a resync repairs, should the node die (or Redis fail) between two:
//!
//! | change | steps, in order | what a crash between steps leaves |
//! |---|---|---|
//! | register | the node's set gains the id; the record is written | a listed id without a record: the reaper drops it |
//! | join | the record gains the group; the member set, then the hub's group set, gain it | a record naming a group whose set lacks it: harmless, and the owner's resync writes it again |
//! | leave | the member set loses it (and the hub's group set, if that emptied it, checked again after); the record loses the group | a record naming a group it left: the next drop removes nothing more |
//! | drop (close, reap) | every group of the record is left; the record is deleted; the node's set loses the id | the id is still listed, so the next reap finishes it |
//! | reap | claim (the dead node's generation deleted, its ids listed); each id dropped; its sets deleted | the lock expires and another node reaps again; a node that came back meanwhile is told to write its state once more |
//! | take over (stateful reconnect on another node) | the new node's set gains the id; the record moves to it; the old node's set loses the id | listed under both nodes: the old node's reaper leaves a record it no longer owns |
//!
//! The same steps run on one server, so both deployments behave alike.

mod delivery;
mod link;
mod liveness;
mod membership;
mod scripts;
mod sentinel;
mod sharded;
mod subscriber;
mod throttle;
mod user_groups;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use self::link::{Commands, LazyCluster, Link};
use self::liveness::Liveness;
use self::scripts::Scripts;
use self::sentinel::SentinelMaster;
use self::sharded::{supervise_sharded, Wanted};
use self::subscriber::{supervise_subscriber, Sink, SinkSlot, Source};
use super::outgoing::HistorySettings;
use super::{BackplaneError, BackplaneEvent, Inbound};
use crate::config::RedisTarget;
use crate::keys::Keys;
use crate::metrics as m;

/// Settings of the Redis backplane.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// The deployment's URL (see [`RedisTarget`]).
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
    commands: Commands,
    /// `PUBLISH`, or `SPUBLISH` on a Redis Cluster.
    publish_command: &'static str,
    /// A channel can move to another server while in use (cluster, Sentinel).
    channels_move: bool,
    keys: Keys,
    node: Arc<str>,
    options: RedisOptions,
    scripts: Arc<Scripts>,
    /// Shared with the subscriber supervisor, which fills and empties it.
    sink: Arc<SinkSlot>,
    /// The sharded channels this node wants (Redis Cluster), shared with the
    /// subscriber, which subscribes a moved one again.
    wanted: Arc<Wanted>,
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
    /// Creates the command connection (lazily) and starts the subscriber supervisor and
    /// the heartbeat. Nothing here waits for Redis: a node starts (not ready) while
    /// Redis is down.
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
        let target = RedisTarget::parse(&options.url).map_err(unavailable)?;
        let timeout = options.command_timeout;
        let sink: Arc<SinkSlot> = Arc::default();
        let wanted: Arc<Wanted> = Arc::default();
        let commands = match &target {
            RedisTarget::Standalone { url } => {
                let client = link::client(url)?;
                let commands = link::manager(client.clone(), timeout)?;
                tokio::spawn(supervise_subscriber(
                    Source::Fixed(Box::new(client)),
                    sink.clone(),
                    inbound,
                    events.clone(),
                    stop.clone(),
                ));
                Commands::Fixed(commands)
            }
            RedisTarget::Sentinel {
                sentinels,
                master,
                master_url,
            } => {
                let sentinel = Arc::new(SentinelMaster::new(
                    sentinels.clone(),
                    master.clone(),
                    master_url.clone(),
                    timeout,
                ));
                let (follower, interval, until) =
                    (sentinel.clone(), options.heartbeat_interval, stop.clone());
                tokio::spawn(async move { follower.follow(interval, until).await });
                tokio::spawn(supervise_subscriber(
                    Source::Sentinel(sentinel.clone()),
                    sink.clone(),
                    inbound,
                    events.clone(),
                    stop.clone(),
                ));
                Commands::Sentinel(sentinel)
            }
            RedisTarget::Cluster { seeds } => {
                let client = link::cluster_client(seeds, timeout, None::<link::NoPushes>)?;
                tokio::spawn(supervise_sharded(
                    seeds.clone(),
                    timeout,
                    sink.clone(),
                    wanted.clone(),
                    inbound,
                    events.clone(),
                    stop.clone(),
                ));
                Commands::Cluster(Arc::new(LazyCluster::new(client)))
            }
        };
        let backplane = Self {
            publish_command: if commands.is_cluster() {
                "SPUBLISH"
            } else {
                "PUBLISH"
            },
            channels_move: target.moves(),
            commands,
            keys,
            node: node.into(),
            options,
            scripts: Arc::new(Scripts::load()),
            sink,
            wanted,
            reaped: Arc::default(),
            generation: crate::ids::random_token().into(),
            liveness: Arc::default(),
        };
        tokio::spawn(backplane.clone().heartbeat(events, stop));
        Ok(backplane)
    }

    /// Dead nodes this node reaped.
    pub fn nodes_reaped(&self) -> u64 {
        self.reaped.load(Ordering::Relaxed)
    }

    /// Runs one command under the command timeout, timing it.
    async fn run<T, F>(
        &self,
        name: &'static str,
        f: impl FnOnce(Link) -> F,
    ) -> Result<T, BackplaneError>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let started = Instant::now();
        let result = tokio::time::timeout(self.options.command_timeout, async {
            let conn = self.commands.link().await?;
            f(conn).await.map_err(|e| classify(&e))
        })
        .await
        .unwrap_or_else(|_| Err(BackplaneError::Unknown(format!("{name} timed out"))));
        metrics::histogram!(m::REDIS_COMMAND_DURATION, "command" => name)
            .record(started.elapsed().as_secs_f64());
        if result.is_err() {
            metrics::counter!(m::REDIS_COMMAND_ERRORS, "command" => name).increment(1);
        }
        result
    }

    pub(crate) async fn publish(
        &self,
        channel: &str,
        payload: Bytes,
    ) -> Result<usize, BackplaneError> {
        self.run("publish", |mut c| async move {
            redis::cmd(self.publish_command)
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

    /// Subscribes or unsubscribes in chunks (one server) or per slot (a cluster), so a
    /// resubscribe of many channels does not build one huge command; each chunk gets its
    /// own command timeout.
    async fn change_subscriptions(
        &self,
        subscribe: bool,
        channels: &[Arc<str>],
    ) -> Result<(), BackplaneError> {
        let name = if subscribe {
            "subscribe"
        } else {
            "unsubscribe"
        };
        let timed_out = |_| unavailable(format!("{name} timed out"));
        match self.sink.get()? {
            Sink::Sharded(conn) => {
                let sent = sharded::change(&conn, &self.wanted, subscribe, channels);
                tokio::time::timeout(self.options.command_timeout, sent)
                    .await
                    .map_err(timed_out)?
            }
            Sink::Plain(mut sink) => {
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
                        .map_err(timed_out)?
                        .map_err(unavailable)?;
                }
                Ok(())
            }
        }
    }
}
