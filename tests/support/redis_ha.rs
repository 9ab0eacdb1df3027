//! Highly available Redis deployments of the test's own: a Redis Cluster (3 masters, 3
//! replicas) and a Sentinel setup (1 master, 1 replica, 3 sentinels), as real processes on
//! free ports. Every process is killed, and its directory removed, when dropped. This file
//! holds what both share; `redis_cluster.rs` and `redis_sentinel.rs` the deployments.
//!
//! Included next to `tests/api/helpers.rs` (as `helpers`), whose [`WAIT`] bounds every wait.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

/// Ports handed out in this process, so tests running side by side never share one.
static TAKEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A free port below the ephemeral range (so no outgoing connection takes it meanwhile)
/// whose cluster bus port (+10000) is free too.
fn ha_port() -> u16 {
    loop {
        let port = rand::random_range(12_000..22_000u16);
        let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 10_000) && TAKEN.lock().unwrap().insert(port) {
            return port;
        }
    }
}

/// A directory of the test's own, removed when dropped (kept when `HUBCAST_TEST_KEEP_REDIS`
/// is set, for its logs).
struct TempDir(PathBuf);

impl TempDir {
    fn new(kind: &str) -> Self {
        let token = &hubcast::ids::random_token()[..12];
        let dir = std::env::temp_dir().join(format!("hubcast-{kind}-{token}"));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn sub(&self, name: &str) -> PathBuf {
        let d = self.0.join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("HUBCAST_TEST_KEEP_REDIS").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// One redis-server (or redis-sentinel) process, SIGKILLed when dropped.
struct Proc {
    port: u16,
    child: Option<Child>,
}

impl Proc {
    fn spawn(program: &str, port: u16, args: &[String]) -> Self {
        let child = Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{program} runs (apt-get install -y redis-server redis-sentinel): {e}")
            });
        Self {
            port,
            child: Some(child),
        }
    }

    fn alive(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL, as `kill -9` would.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The arguments every server gets: loopback only, no persistence, logs in `dir`.
fn server_args(port: u16, dir: &std::path::Path) -> Vec<String> {
    let dir = dir.display().to_string();
    [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        &dir,
        "--logfile",
        &format!("{dir}/redis.log"),
        // Through a file: a replica is then streamed every write as soon as the master
        // calls it online (diskless sync waits for the replica's first ACK first).
        "--repl-diskless-sync",
        "no",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// A connection to one server (no cluster redirections followed).
pub async fn connect(port: u16) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    match tokio::time::timeout(
        Duration::from_secs(5),
        client.get_multiplexed_async_connection(),
    )
    .await
    {
        Ok(c) => c,
        Err(_) => Err(std::io::Error::from(std::io::ErrorKind::TimedOut).into()),
    }
}

/// Runs `cmd` on the server at `port`.
pub async fn query<T: redis::FromRedisValue>(port: u16, cmd: &redis::Cmd) -> redis::RedisResult<T> {
    let mut c = connect(port).await?;
    match tokio::time::timeout(Duration::from_secs(5), cmd.query_async(&mut c)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::from(std::io::ErrorKind::TimedOut).into()),
    }
}

/// `k:v` lines (INFO, CLUSTER INFO) as a map; `#` comments skipped.
fn fields(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.trim().split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// One server's `INFO <section>` as a map.
pub async fn info(port: u16, section: &str) -> redis::RedisResult<HashMap<String, String>> {
    let text: String = query(port, redis::cmd("INFO").arg(section)).await?;
    Ok(fields(&text))
}

/// Whether the master at `port` has a replica that is online and streamed every write.
pub async fn replica_online(port: u16) -> bool {
    info(port, "replication").await.is_ok_and(|i| {
        i.get("role").is_some_and(|r| r == "master")
            && i.get("slave0").is_some_and(|s| s.contains("state=online"))
    })
}

pub use crate::helpers::until;

/// Whether the Redis suites run on a Redis Cluster (`HUBCAST_TEST_REDIS=cluster`) instead
/// of one standalone server.
pub fn on_cluster() -> bool {
    std::env::var("HUBCAST_TEST_REDIS").is_ok_and(|v| v == "cluster")
}

/// The Redis a suite's nodes share: a standalone server, or a cluster (see [`on_cluster`]).
pub enum TestRedis {
    Standalone(crate::helpers::RedisServer),
    Cluster(RedisCluster),
}

impl TestRedis {
    /// The kind the run asks for.
    pub async fn start() -> Self {
        if on_cluster() {
            Self::Cluster(RedisCluster::start().await)
        } else {
            Self::standalone().await
        }
    }

    /// One standalone server, whatever the run asks for.
    pub async fn standalone() -> Self {
        Self::Standalone(crate::helpers::RedisServer::start().await)
    }

    pub fn url(&self) -> String {
        match self {
            Self::Standalone(r) => r.url(),
            Self::Cluster(c) => c.url(),
        }
    }

    /// The standalone server, for tests about one server's outages.
    pub fn server(&mut self) -> &mut crate::helpers::RedisServer {
        match self {
            Self::Standalone(r) => r,
            Self::Cluster(_) => panic!("this test runs on a standalone server only"),
        }
    }

    /// Subscribers of a channel: `PUBSUB NUMSUB`, or `SHARDNUMSUB` on its shard.
    pub async fn numsub(&self, channel: &str) -> u64 {
        match self {
            Self::Standalone(r) => {
                let cmd = redis::cmd("PUBSUB").arg("NUMSUB").arg(channel).clone();
                let (_, n): (String, u64) = query(r.port, &cmd).await.unwrap();
                n
            }
            Self::Cluster(c) => c.shardnumsub(channel).await,
        }
    }

    /// A connection to the server holding `key`.
    pub async fn connection_for(&self, key: &str) -> redis::aio::MultiplexedConnection {
        match self {
            Self::Standalone(r) => r.connection().await,
            Self::Cluster(c) => c.connection_for(key).await,
        }
    }
}

#[path = "redis_cluster.rs"]
mod cluster;
#[path = "redis_sentinel.rs"]
mod sentinel;
pub use cluster::RedisCluster;
// Unused by the suites that run on a cluster only.
#[allow(unused_imports)]
pub use sentinel::RedisSentinel;
