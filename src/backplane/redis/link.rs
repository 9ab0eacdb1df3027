//! The command connection, whatever the deployment: one multiplexed connection to a
//! server (standalone, or the master Sentinel names), or redis-rs's cluster connection,
//! which routes each command to the shard owning its first key and follows `MOVED`.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use super::sentinel::SentinelMaster;
use super::{classify, unavailable};
use crate::backplane::BackplaneError;

/// A connection to run one command on.
#[derive(Clone)]
pub(super) enum Link {
    /// One server.
    Single(ConnectionManager),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// Where command connections come from.
#[derive(Clone)]
pub(super) enum Commands {
    /// One server, by URL.
    Fixed(ConnectionManager),
    /// The master Sentinel names now.
    Sentinel(Arc<SentinelMaster>),
    /// A Redis Cluster, connected on first use (a node starts while Redis is down).
    Cluster(Arc<LazyCluster>),
}

impl Commands {
    /// A connection for the next command.
    pub(super) async fn link(&self) -> Result<Link, BackplaneError> {
        match self {
            Self::Fixed(c) => Ok(Link::Single(c.clone())),
            Self::Sentinel(s) => s.commands().await.map(Link::Single),
            Self::Cluster(l) => l.connection().await.map(Link::Cluster),
        }
    }

    /// Whether this is a Redis Cluster: fan-out then uses sharded pub/sub.
    pub(super) fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }
}

/// A cluster connection made on first use and kept: it reconnects to shards itself.
pub(super) struct LazyCluster {
    client: ClusterClient,
    connection: tokio::sync::OnceCell<ClusterConnection>,
}

impl LazyCluster {
    pub(super) fn new(client: ClusterClient) -> Self {
        Self {
            client,
            connection: tokio::sync::OnceCell::new(),
        }
    }

    async fn connection(&self) -> Result<ClusterConnection, BackplaneError> {
        self.connection
            .get_or_try_init(|| self.client.get_async_connection())
            .await
            .cloned()
            .map_err(|e| classify(&e))
    }
}

/// A client for one server, with Nagle's algorithm off: redis-rs leaves it on, and
/// pipelined publishes then wait for the server's delayed ACK, milliseconds each under
/// load.
pub(super) fn client(url: &str) -> Result<redis::Client, BackplaneError> {
    let info = redis::IntoConnectionInfo::into_connection_info(url)
        .map_err(unavailable)?
        .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
    redis::Client::open(info).map_err(unavailable)
}

/// The reconnecting command connection to one server.
///
/// Commands share one pipelined connection. A pool would add nothing (the connection
/// multiplexes concurrent commands) and deadpool's recycle check sends UNWATCH and PING
/// on every checkout: two extra commands and a round trip per publish.
pub(super) fn manager(
    client: redis::Client,
    timeout: Duration,
) -> Result<ConnectionManager, BackplaneError> {
    ConnectionManager::new_lazy_with_config(
        client,
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1)),
    )
    .map_err(unavailable)
}

/// Attempts to reconnect to one cluster node before its address is given up.
const MAX_CONNECTION_ATTEMPTS: std::num::NonZeroUsize = match std::num::NonZeroUsize::new(3) {
    Some(n) => n,
    None => unreachable!(),
};

/// A cluster client over `seeds`, RESP3 (sharded pub/sub arrives as pushes), with
/// `push` receiving them when given.
pub(super) fn cluster_client(
    seeds: &[String],
    timeout: Duration,
    push: Option<impl redis::aio::AsyncPushSender>,
) -> Result<ClusterClient, BackplaneError> {
    let mut builder = redis::cluster::ClusterClientBuilder::new(seeds.to_vec())
        .use_protocol(redis::ProtocolVersion::RESP3)
        .connection_timeout(timeout)
        .response_timeout(timeout)
        .retries(2)
        // Without a bound, redis-rs retries a dead shard's address forever and never
        // learns that its replica took over: once the address is given up, the next
        // command for one of its slots refreshes the slot map (and the subscriptions).
        .max_connection_attempts(MAX_CONNECTION_ATTEMPTS)
        .tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
    if let Some(push) = push {
        builder = builder.push_sender(push);
    }
    builder.build().map_err(unavailable)
}

/// The push sender of a cluster client that subscribes nothing.
pub(super) type NoPushes = tokio::sync::mpsc::UnboundedSender<redis::PushInfo>;
