//! The Redis backplane: pub/sub fan-out on one dedicated connection per node, commands and
//! Lua scripts over one multiplexed command connection, a heartbeat, and the reaper that cleans up
//! after nodes that died without doing it themselves.
//!
//! The subscriber connection is supervised: when it drops, the node keeps serving its
//! clients from memory, publishes answer 503, and the supervisor reconnects with backoff.
//! Once it is back it emits [`BackplaneEvent::Connected`], and the node resubscribes every
//! channel it has local members for and writes its connections and memberships again.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt as _;
use redis::aio::PubSubSink;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{BackplaneError, BackplaneEvent, ConnectionRecord, ConnectionSnapshot, Inbound};
use crate::ids::ConnectionId;
use crate::keys::Keys;
use crate::metrics as m;

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
}

/// Adds a connection to a group: its set, the hub's group set, the connection's hash.
const JOIN: &str = r"
if redis.call('HEXISTS', KEYS[3], 'node') == 0 then return 0 end
if redis.call('SADD', KEYS[1], ARGV[1]) == 1 then redis.call('INCR', KEYS[4]) end
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('HSET', KEYS[3], 'g:' .. ARGV[2], '1')
return 1
";

/// Removes a connection from a group; the group leaves the hub's set when it empties.
const LEAVE: &str = r"
local removed = redis.call('SREM', KEYS[1], ARGV[1])
if removed == 1 then redis.call('DECR', KEYS[4]) end
if redis.call('SCARD', KEYS[1]) == 0 then redis.call('SREM', KEYS[2], ARGV[2]) end
redis.call('HDEL', KEYS[3], 'g:' .. ARGV[2])
return removed
";

/// Records a connection: its hash and its node's set.
const REGISTER: &str = r"
local owner = redis.call('HGET', KEYS[1], 'node')
if owner and owner ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'node', ARGV[1], 'hub', ARGV[2], 'user', ARGV[3])
redis.call('SADD', KEYS[2], ARGV[4])
return 1
";

/// Removes everything about connections: ARGV[1] is the prefix, the rest connection ids;
/// KEYS[1] is the owning node's connection set.
const DROP_FN: &str = r"
local function drop(prefix, conn_id)
  local conn_key = prefix .. ':conn:' .. conn_id
  local fields = redis.call('HGETALL', conn_key)
  local hub = nil
  for i = 1, #fields, 2 do
    if fields[i] == 'hub' then hub = fields[i + 1] end
  end
  if hub then
    for i = 1, #fields, 2 do
      local f = fields[i]
      if string.sub(f, 1, 2) == 'g:' then
        local g = string.sub(f, 3)
        local members = prefix .. ':' .. hub .. ':members:' .. g
        if redis.call('SREM', members, conn_id) == 1 then
          redis.call('DECR', prefix .. ':' .. hub .. ':memberships')
        end
        if redis.call('SCARD', members) == 0 then
          redis.call('SREM', prefix .. ':' .. hub .. ':groups', g)
        end
      end
    end
  end
  redis.call('DEL', conn_key)
end
";

fn unregister_script() -> String {
    format!(
        "{DROP_FN}
for i = 2, #ARGV do
  drop(ARGV[1], ARGV[i])
  redis.call('SREM', KEYS[1], ARGV[i])
end
return #ARGV - 1
"
    )
}

/// Reaps a dead node: KEYS = its connection set, the node set, its heartbeat key;
/// ARGV = prefix, node id. Does nothing (returns -1) if the node is alive again.
fn reap_script() -> String {
    format!(
        "{DROP_FN}
if redis.call('EXISTS', KEYS[3]) == 1 then return -1 end
local conns = redis.call('SMEMBERS', KEYS[1])
for _, c in ipairs(conns) do drop(ARGV[1], c) end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[2])
return #conns
"
    )
}

struct Scripts {
    budget: Script,
    health: Script,
    breaker: Script,
    unless_done: Script,
    rate_publish: Script,
    join: Script,
    leave: Script,
    register: Script,
    unregister: Script,
    reap: Script,
}

struct Shared {
    /// The subscriber connection's command half; `None` while disconnected.
    sink: Mutex<Option<PubSubSink>>,
    /// Dead nodes this node reaped.
    reaped: std::sync::atomic::AtomicU64,
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
    shared: Arc<Shared>,
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
            scripts: Arc::new(Scripts {
                budget: Script::new(super::throttle::BUDGET_LUA),
                health: Script::new(super::throttle::HEALTH_LUA),
                breaker: Script::new(super::throttle::BREAKER_LUA),
                unless_done: Script::new(super::throttle::PUBLISH_UNLESS_DONE_LUA),
                rate_publish: Script::new(super::throttle::RATE_PUBLISH_LUA),
                join: Script::new(JOIN),
                leave: Script::new(LEAVE),
                register: Script::new(REGISTER),
                unregister: Script::new(&unregister_script()),
                reap: Script::new(&reap_script()),
            }),
            shared: Arc::new(Shared {
                sink: Mutex::new(None),
                reaped: std::sync::atomic::AtomicU64::new(0),
            }),
        };
        tokio::spawn(supervise_subscriber(
            client,
            backplane.shared.clone(),
            inbound,
            events.clone(),
            stop.clone(),
        ));
        tokio::spawn(heartbeat(backplane.clone(), events, stop));
        Ok(backplane)
    }

    /// Dead nodes this node reaped.
    pub fn nodes_reaped(&self) -> u64 {
        self.shared
            .reaped
            .load(std::sync::atomic::Ordering::Relaxed)
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
            f(conn).await.map_err(unavailable)
        })
        .await
        .unwrap_or_else(|_| Err(unavailable(format!("{name} timed out"))));
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

    fn sink(&self) -> Result<PubSubSink, BackplaneError> {
        self.shared
            .sink
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(BackplaneError::Disconnected)
    }

    pub(crate) async fn subscribe(&self, channels: &[Arc<str>]) -> Result<(), BackplaneError> {
        let mut sink = self.sink()?;
        for chunk in channels.chunks(1000) {
            let names: Vec<&str> = chunk.iter().map(|c| &**c).collect();
            tokio::time::timeout(self.options.command_timeout, sink.subscribe(names))
                .await
                .map_err(|_| unavailable("subscribe timed out"))?
                .map_err(unavailable)?;
        }
        Ok(())
    }

    pub(crate) async fn unsubscribe(&self, channels: &[Arc<str>]) -> Result<(), BackplaneError> {
        let mut sink = self.sink()?;
        for chunk in channels.chunks(1000) {
            let names: Vec<&str> = chunk.iter().map(|c| &**c).collect();
            tokio::time::timeout(self.options.command_timeout, sink.unsubscribe(names))
                .await
                .map_err(|_| unavailable("unsubscribe timed out"))?
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
        let key = self.keys.members(hub, group);
        self.run("scard", |mut c| async move {
            redis::cmd("SCARD")
                .arg(key)
                .query_async::<usize>(&mut c)
                .await
        })
        .await
    }

    pub(crate) async fn group_count(&self, hub: &str) -> Result<usize, BackplaneError> {
        let key = self.keys.groups(hub);
        self.run("scard", |mut c| async move {
            redis::cmd("SCARD")
                .arg(key)
                .query_async::<usize>(&mut c)
                .await
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

    pub(crate) async fn budget(
        &self,
        key: &str,
        percent: f64,
        thresholds: &[u32],
        rearm: f64,
    ) -> Result<Vec<u32>, BackplaneError> {
        let s = self.scripts.clone();
        let fired: Vec<u32> = self
            .run("budget", |mut c| async move {
                let mut inv = s.budget.key(key);
                inv.arg(percent).arg(rearm);
                for t in thresholds {
                    inv.arg(*t);
                }
                inv.invoke_async(&mut c).await
            })
            .await?;
        Ok(fired)
    }

    pub(crate) async fn budget_unmark(
        &self,
        key: &str,
        thresholds: &[u32],
    ) -> Result<(), BackplaneError> {
        self.run("budget_unmark", |mut c| async move {
            redis::cmd("SREM")
                .arg(key)
                .arg(thresholds)
                .query_async::<i64>(&mut c)
                .await
        })
        .await
        .map(drop)
    }

    pub(crate) async fn health(
        &self,
        key: &str,
        status: &str,
        needed: u32,
    ) -> Result<super::throttle::HealthVerdict, BackplaneError> {
        let s = self.scripts.clone();
        let (announce, previous): (i64, String) = self
            .run("health", |mut c| async move {
                s.health
                    .key(key)
                    .arg(status)
                    .arg(needed)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(super::throttle::HealthVerdict {
            announce: announce == 1,
            previous: (!previous.is_empty()).then_some(previous),
        })
    }

    pub(crate) async fn breaker(
        &self,
        key: &str,
        failures_key: &str,
        success: bool,
        settings: super::throttle::BreakerSettings,
    ) -> Result<Vec<super::throttle::BreakerTransition>, BackplaneError> {
        let s = self.scripts.clone();
        let member = crate::ids::random_token();
        let flat: Vec<redis::Value> = self
            .run("breaker", |mut c| async move {
                s.breaker
                    .key(key)
                    .key(failures_key)
                    .arg(if success { "1" } else { "0" })
                    .arg(settings.failures)
                    .arg(u64::try_from(settings.window.as_millis()).unwrap_or(u64::MAX))
                    .arg(u64::try_from(settings.half_open_after.as_millis()).unwrap_or(u64::MAX))
                    .arg(member)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        let text = |v: &redis::Value| -> String {
            redis::from_redis_value::<String>(v.clone()).unwrap_or_default()
        };
        let int =
            |v: &redis::Value| -> i64 { redis::from_redis_value::<i64>(v.clone()).unwrap_or(0) };
        Ok(flat
            .chunks(4)
            .filter(|c| c.len() == 4)
            .map(|c| super::throttle::BreakerTransition {
                from: text(&c[0]),
                to: text(&c[1]),
                failures: int(&c[2]),
                next_test_at_ms: u64::try_from(int(&c[3])).ok().filter(|n| *n > 0),
            })
            .collect())
    }

    pub(crate) async fn mark_done(&self, key: &str, ttl: Duration) -> Result<(), BackplaneError> {
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        self.run("mark_done", |mut c| async move {
            redis::cmd("SET")
                .arg(key)
                .arg("1")
                .arg("PX")
                .arg(ms)
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    pub(crate) async fn publish_unless_done(
        &self,
        done_key: &str,
        channel: &str,
        payload: Bytes,
    ) -> Result<Option<usize>, BackplaneError> {
        let s = self.scripts.clone();
        let n: i64 = self
            .run("publish", |mut c| async move {
                s.unless_done
                    .key(done_key)
                    .arg(channel)
                    .arg(&payload[..])
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(usize::try_from(n).ok())
    }

    pub(crate) async fn rate_publish(
        &self,
        bucket: &str,
        rate: f64,
        burst: f64,
        channel: &str,
        payload: Bytes,
    ) -> Result<Option<usize>, BackplaneError> {
        let s = self.scripts.clone();
        let n: i64 = self
            .run("publish", |mut c| async move {
                s.rate_publish
                    .key(bucket)
                    .arg(rate)
                    .arg(burst)
                    .arg(channel)
                    .arg(&payload[..])
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(usize::try_from(n).ok())
    }

    /// Makes Redis match this node's local state: heartbeat first (so no reaper takes the
    /// node for dead while it re-registers), then drop connections Redis still lists for
    /// this node but that are gone, then write every local connection and membership.
    pub(crate) async fn resync(&self, local: &[ConnectionSnapshot]) -> Result<(), BackplaneError> {
        self.beat().await?;
        let node_conns = self.keys.node_connections(&self.node);
        let listed: Vec<String> = self
            .run("smembers", |mut c| async move {
                redis::cmd("SMEMBERS")
                    .arg(node_conns)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let stale: Vec<&str> = listed
            .iter()
            .map(String::as_str)
            .filter(|id| !local.iter().any(|l| l.id.as_str() == *id))
            .collect();
        for chunk in stale.chunks(500) {
            self.unregister_many(chunk).await?;
        }
        for conn in local {
            self.register_connection(&conn.id, &conn.hub, conn.user.as_deref())
                .await?;
            for g in &conn.groups {
                self.add_member(&conn.hub, g, &conn.id).await?;
            }
        }
        Ok(())
    }

    /// Renews the heartbeat; returns whether this node had to be added back to the node
    /// set (first beat, or it was reaped while away).
    async fn beat(&self) -> Result<bool, BackplaneError> {
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
        let nodes_key = self.keys.nodes();
        let nodes: Vec<String> = self
            .run("smembers", |mut c| async move {
                redis::cmd("SMEMBERS")
                    .arg(nodes_key)
                    .query_async(&mut c)
                    .await
            })
            .await?;
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
                self.shared
                    .reaped
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                metrics::counter!(m::NODES_REAPED).increment(1);
                tracing::warn!(dead_node = %other, connections = reaped, "reaped the memberships of a node whose heartbeat expired");
            }
        }
        Ok(())
    }
}

/// Keeps the subscriber connection up: connect, hand every message to the dispatch
/// queues without waiting, and on loss reconnect with capped exponential backoff.
async fn supervise_subscriber(
    client: redis::Client,
    shared: Arc<Shared>,
    inbound: Inbound,
    events: mpsc::UnboundedSender<BackplaneEvent>,
    stop: CancellationToken,
) {
    let mut backoff = Duration::from_millis(50);
    let mut connected_before = false;
    loop {
        let attempt = tokio::select! {
            _ = stop.cancelled() => return,
            r = tokio::time::timeout(Duration::from_secs(2), client.get_async_pubsub()) => r,
        };
        match attempt {
            Ok(Ok(pubsub)) => {
                let (sink, mut stream) = pubsub.split();
                *shared.sink.lock().unwrap_or_else(|p| p.into_inner()) = Some(sink);
                if connected_before {
                    metrics::counter!(m::REDIS_RECONNECTS).increment(1);
                    tracing::info!("Redis pub/sub connection restored; resubscribing");
                }
                connected_before = true;
                backoff = Duration::from_millis(50);
                if events.send(BackplaneEvent::Connected).is_err() {
                    return;
                }
                loop {
                    let msg = tokio::select! {
                        _ = stop.cancelled() => return,
                        m = stream.next() => m,
                    };
                    let Some(msg) = msg else { break };
                    inbound.deliver(
                        Arc::from(msg.get_channel_name()),
                        Bytes::copy_from_slice(msg.get_payload_bytes()),
                    );
                }
                *shared.sink.lock().unwrap_or_else(|p| p.into_inner()) = None;
                let _ = events.send(BackplaneEvent::Disconnected);
                tracing::warn!("Redis pub/sub connection lost; reconnecting");
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "cannot reach Redis for pub/sub")
            }
            Err(_) => tracing::warn!(retry_in = ?backoff, "Redis pub/sub connect timed out"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// Renews this node's heartbeat and reaps dead nodes, every heartbeat interval.
async fn heartbeat(
    backplane: RedisBackplane,
    events: mpsc::UnboundedSender<BackplaneEvent>,
    stop: CancellationToken,
) {
    let mut first = true;
    loop {
        match backplane.beat().await {
            Ok(added) => {
                if added && !first {
                    tracing::warn!("this node was missing from the node set (reaped while unreachable); re-registering");
                    let _ = events.send(BackplaneEvent::ResyncNeeded);
                }
                first = false;
                if let Err(e) = backplane.reap_dead().await {
                    tracing::debug!(error = %e, "reaper pass failed");
                }
            }
            Err(e) => tracing::debug!(error = %e, "heartbeat failed"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backplane.options.heartbeat_interval) => {}
        }
    }
}
