//! Wiring: builds a node from a [`Config`], binds its listeners, and runs it until a
//! shutdown signal, owning the drain order.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::backplane::{
    Backplane, BackplaneError, BackplaneEvent, HistorySettings, Inbound, MemoryBackplane,
    MemoryBus, RedisBackplane, RedisOptions,
};
use crate::config::Config;
use crate::http::{self, AppState};
use crate::keys::Keys;
use crate::node::{Node, NodeParts};

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The backplane could not be set up.
    #[error("backplane: {0}")]
    Backplane(#[from] BackplaneError),
}

/// A built node with bound listeners, ready to run.
pub struct App {
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    node: Arc<Node>,
    sessions: TaskTracker,
    gate: Arc<crate::http::gate::Gate>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("node", &self.node.id())
            .finish_non_exhaustive()
    }
}

impl App {
    /// Builds a node on its own in-process backplane, or on Redis when configured.
    ///
    /// # Errors
    /// See [`StartError`].
    pub async fn build(config: Config) -> Result<Self, StartError> {
        Self::build_with(config, None).await
    }

    /// Builds a node on a shared in-process bus: several nodes of one process then form a
    /// cluster (for tests and embedding).
    ///
    /// # Errors
    /// See [`StartError`].
    pub async fn build_on_bus(config: Config, bus: Arc<MemoryBus>) -> Result<Self, StartError> {
        Self::build_with(config, Some(bus)).await
    }

    async fn build_with(config: Config, bus: Option<Arc<MemoryBus>>) -> Result<Self, StartError> {
        // The recorder must exist before the node starts, or the series it registers at
        // start (zero-valued counters, gauges) are lost.
        let metrics = config
            .metrics_listen
            .and_then(|_| crate::metrics::install());
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| StartError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let metrics_listener = match config.metrics_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartError::Bind { addr, source })?,
            ),
            None => None,
        };
        let id = config
            .node_id
            .clone()
            .unwrap_or_else(|| crate::ids::random_token()[..12].to_owned());
        let shards = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(1, 16);
        let (inbound, receivers) = Inbound::new(shards, config.limits.dispatch_queue);
        let keys = Keys::new(
            config
                .redis
                .as_ref()
                .map_or("hubcast", |r| r.prefix.as_str()),
        );
        let (events_tx, events) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let d = &config.delivery;
        let history = HistorySettings {
            messages: d.history_messages,
            bytes: d.history_bytes,
            ttl: Duration::from_millis(d.history_ms),
            position_ttl: Duration::from_millis(d.position_ttl_ms),
        };
        let backplane = match (&config.redis, bus) {
            (Some(redis), None) => {
                let c = &config.cluster;
                Backplane::Redis(RedisBackplane::start(
                    RedisOptions {
                        url: redis.url.clone(),
                        heartbeat_ttl: Duration::from_millis(c.heartbeat_ttl_ms),
                        heartbeat_interval: Duration::from_millis(c.heartbeat_interval_ms),
                        command_timeout: Duration::from_millis(c.redis_command_timeout_ms),
                        history,
                    },
                    keys.clone(),
                    &id,
                    inbound.clone(),
                    events_tx,
                    stop.clone(),
                )?)
            }
            (_, bus) => {
                // The in-process bus is connected from the start.
                let _ = events_tx.send(BackplaneEvent::Connected);
                Backplane::Memory(MemoryBackplane::new(
                    bus.unwrap_or_default(),
                    &id,
                    inbound.clone(),
                    history,
                ))
            }
        };
        let node = Node::start(NodeParts {
            id,
            keys,
            hubs: config.hubs.clone(),
            backplane,
            inbound: receivers,
            inbound_tx: inbound,
            events,
            stop,
            limits: config.limits.clone(),
            timeouts: config.timeouts.clone(),
            flows: config.flows.clone(),
            delivery: config.delivery.clone(),
        });
        if config.security.insecure {
            tracing::warn!("running in development mode (--insecure): the publish API and every hub accept anyone");
        }
        Ok(Self {
            listener,
            metrics_listener,
            metrics,
            node,
            sessions: TaskTracker::new(),
            gate: Arc::new(crate::http::gate::Gate::new(
                config.security.clone(),
                config.limits.clone(),
            )),
        })
    }

    /// The address hubs and the API are served on.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The address `/metrics` is served on, if any.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// The node.
    pub fn node(&self) -> Arc<Node> {
        self.node.clone()
    }

    /// Serves until `shutdown` completes, then drains: not ready, every client gets
    /// `Close{allowReconnect}`, sessions end (bounded by the shutdown timeout), the node's
    /// tasks stop.
    ///
    /// # Errors
    /// None today (the accept loop outlives accept errors); kept for callers.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let state = AppState {
            node: self.node.clone(),
            sessions: self.sessions.clone(),
            gate: self.gate.clone(),
        };
        let router = http::router(state);
        let stop_accepting = tokio_util::sync::CancellationToken::new();
        let server = tokio::spawn(http::serve::serve(
            self.listener,
            router,
            listener_limits(&self.node, "public"),
            stop_accepting.clone(),
        ));
        let metrics_server = self.metrics_listener.map(|l| {
            tokio::spawn(serve_metrics(
                l,
                self.metrics.clone(),
                listener_limits(&self.node, "metrics"),
            ))
        });

        shutdown.await;
        tracing::info!("shutting down: draining connections");
        self.node.drain();
        stop_accepting.cancel();
        self.sessions.close();
        let grace = self.node.timeouts().shutdown();
        if tokio::time::timeout(grace, self.sessions.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = self.sessions.len(),
                "shutdown grace elapsed with sessions still open"
            );
        }
        self.node.leave().await;
        self.node.stop().await;
        if let Some(m) = metrics_server {
            m.abort();
        }
        // HTTP connections were asked to finish when accepting stopped; one still in a
        // request after the sessions drained does not hold up the exit.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), server).await;
        Ok(())
    }
}

/// The limits every listener of a node enforces.
fn listener_limits(node: &Node, name: &'static str) -> http::serve::ListenerLimits {
    http::serve::ListenerLimits {
        name,
        max_open_sockets: node.limits().max_open_sockets,
        header_read: node.timeouts().header_read(),
        idle: node.timeouts().http_idle(),
    }
}

async fn serve_metrics(
    listener: TcpListener,
    handle: Option<metrics_exporter_prometheus::PrometheusHandle>,
    limits: http::serve::ListenerLimits,
) {
    let Some(handle) = handle else {
        tracing::warn!("a metrics recorder was already installed; /metrics is not served");
        return;
    };
    let upkeep = handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });
    let router = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let h = handle.clone();
            async move { h.render() }
        }),
    );
    // Never stopped: the task is aborted at exit.
    http::serve::serve(listener, router, limits, CancellationToken::new()).await;
}
