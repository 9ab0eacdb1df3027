//! The TOML file's schema: hubs, limits, timeouts, cluster, security and flow settings,
//! each with its default.

use std::time::Duration;

use serde::Deserialize;

use crate::hub::HubSpec;

/// Size and count limits.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest record a client may send, handshake included, in bytes. Default: 32768.
    pub max_record_bytes: usize,
    /// Largest publish API request body, in bytes. Default: 1048576 (1 MiB).
    pub max_body_bytes: usize,
    /// Messages queued for one connection before it is closed as a slow consumer.
    /// Default: 1024.
    pub outbound_queue: usize,
    /// Messages queued per dispatch shard before new ones are dropped (and counted).
    /// Default: 8192.
    pub dispatch_queue: usize,
    /// Groups one connection may be in. Default: 100.
    pub max_groups_per_connection: usize,
    /// Connections one node accepts. Default: 100000.
    pub max_connections_per_node: usize,
    /// Connections one user may hold on one node. Default: 100.
    pub max_connections_per_user: usize,
    /// Hub method calls one connection may make per second (bursts of twice that).
    /// Default: 20.
    pub invocations_per_second: u32,
    /// Publishes one API key may make per second on one node (bursts of the same size);
    /// more get 429 with `Retry-After`. Default: 10000.
    pub publishes_per_key_per_second: u32,
    /// WebSocket handshakes in progress at once on one node; more get 503. Default: 1000.
    pub max_concurrent_handshakes: usize,
    /// Bytes queued for one connection (what waits and what is being written) before it
    /// is closed as a slow consumer; at least `max_body_bytes` and `max_record_bytes` plus
    /// [`Limits::FRAME_OVERHEAD`], so the largest message always fits. Default: 4194304 (4 MiB).
    pub outbound_queue_bytes: usize,
    /// Bytes of messages a stateful-reconnect connection keeps until its client
    /// acknowledges them (what is sent again after a drop); a connection that would
    /// keep more is closed; at least the largest message, like `outbound_queue_bytes`.
    /// Default: 4194304 (4 MiB).
    pub reconnect_buffer_bytes: usize,
    /// Messages such a connection keeps until acknowledged; a connection that would
    /// keep more is closed. Default: 10000.
    pub reconnect_buffer_messages: u64,
    /// TCP connections open at once on each listener (the public one, and `/metrics`'s),
    /// WebSockets included; more are accepted and closed at once (counted). Keep it
    /// below the process's file-descriptor limit. Default: 16384.
    pub max_open_sockets: usize,
}

impl Limits {
    /// Bytes a message to a client may carry beyond the body or record it came from: the
    /// Invocation record around a publish's arguments, the WebSocket frame header.
    pub const FRAME_OVERHEAD: usize = 4096;

    /// The largest WebSocket frame the node writes: a publish body or a reply to a
    /// client record, wrapped.
    pub fn largest_frame(&self) -> usize {
        self.max_body_bytes.max(self.max_record_bytes) + Self::FRAME_OVERHEAD
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_record_bytes: 32 * 1024,
            max_body_bytes: 1024 * 1024,
            outbound_queue: 1024,
            dispatch_queue: 8192,
            max_groups_per_connection: 100,
            max_connections_per_node: 100_000,
            max_connections_per_user: 100,
            invocations_per_second: 20,
            publishes_per_key_per_second: 10_000,
            max_concurrent_handshakes: 1000,
            outbound_queue_bytes: 4 * 1024 * 1024,
            reconnect_buffer_bytes: 4 * 1024 * 1024,
            reconnect_buffer_messages: 10_000,
            max_open_sockets: 16_384,
        }
    }
}

/// Timeouts, in milliseconds in the file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Timeouts {
    /// Time a client has to complete the handshake. Default: 15000.
    pub handshake_ms: u64,
    /// A Ping is sent when nothing else was sent for this long. Default: 15000.
    pub keepalive_ms: u64,
    /// A client that sent nothing (pings included) for this long is closed. Default: 30000.
    pub client_timeout_ms: u64,
    /// How long a negotiated connection waits for its WebSocket. Default: 15000.
    pub negotiate_ttl_ms: u64,
    /// A write to a client that takes longer closes it. Default: 10000.
    pub write_timeout_ms: u64,
    /// On SIGTERM, how long clients get to receive their Close before the process exits.
    /// Default: 10000.
    pub shutdown_ms: u64,
    /// A new HTTP connection, or one that began a request after an idle spell, has this
    /// long to send the whole request head; then it is closed. Default: 10000.
    pub header_read_ms: u64,
    /// An HTTP keep-alive connection with no request for this long is closed.
    /// Default: 60000.
    pub http_idle_ms: u64,
    /// A request body must have arrived this long after its head; then the request is
    /// answered 408 and the connection closed. Default: 30000.
    pub body_read_ms: u64,
    /// How long a stateful-reconnect connection (`withStatefulReconnect()`) whose
    /// transport dropped lives on, with its groups, waiting for its client to resume it
    /// on any node; 0 turns stateful reconnect off. Default: 15000.
    pub reconnect_window_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            handshake_ms: 15_000,
            keepalive_ms: 15_000,
            client_timeout_ms: 30_000,
            negotiate_ttl_ms: 15_000,
            write_timeout_ms: 10_000,
            shutdown_ms: 10_000,
            header_read_ms: 10_000,
            http_idle_ms: 60_000,
            body_read_ms: 30_000,
            reconnect_window_ms: 15_000,
        }
    }
}

impl Timeouts {
    /// [`Self::handshake_ms`] as a duration.
    pub fn handshake(&self) -> Duration {
        Duration::from_millis(self.handshake_ms)
    }
    /// [`Self::keepalive_ms`] as a duration.
    pub fn keepalive(&self) -> Duration {
        Duration::from_millis(self.keepalive_ms)
    }
    /// [`Self::client_timeout_ms`] as a duration.
    pub fn client_timeout(&self) -> Duration {
        Duration::from_millis(self.client_timeout_ms)
    }
    /// [`Self::reconnect_window_ms`] as a duration.
    pub fn reconnect_window(&self) -> Duration {
        Duration::from_millis(self.reconnect_window_ms)
    }
    /// [`Self::negotiate_ttl_ms`] as a duration.
    pub fn negotiate_ttl(&self) -> Duration {
        Duration::from_millis(self.negotiate_ttl_ms)
    }
    /// [`Self::write_timeout_ms`] as a duration.
    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms)
    }
    /// [`Self::shutdown_ms`] as a duration.
    pub fn shutdown(&self) -> Duration {
        Duration::from_millis(self.shutdown_ms)
    }
    /// [`Self::header_read_ms`] as a duration.
    pub fn header_read(&self) -> Duration {
        Duration::from_millis(self.header_read_ms)
    }
    /// [`Self::http_idle_ms`] as a duration.
    pub fn http_idle(&self) -> Duration {
        Duration::from_millis(self.http_idle_ms)
    }
    /// [`Self::body_read_ms`] as a duration.
    pub fn body_read(&self) -> Duration {
        Duration::from_millis(self.body_read_ms)
    }
}

/// Cluster settings (Redis backplane only), in milliseconds in the file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Cluster {
    /// How long a node's heartbeat lives; a node silent this long is dead and its
    /// memberships are reaped. Default: 10000.
    pub heartbeat_ttl_ms: u64,
    /// How often the heartbeat is renewed and dead nodes are looked for. Default: 3000.
    pub heartbeat_interval_ms: u64,
    /// Longest a Redis command may take before it counts as failed. Default: 2000.
    pub redis_command_timeout_ms: u64,
}

impl Default for Cluster {
    fn default() -> Self {
        Self {
            heartbeat_ttl_ms: 10_000,
            heartbeat_interval_ms: 3_000,
            redis_command_timeout_ms: 2_000,
        }
    }
}

/// What every channel's stream keeps, and how long a publisher's idempotency key is
/// remembered (both backplanes), in milliseconds in the file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Delivery {
    /// Messages kept per channel for nodes that missed some (0: none; gaps are then only
    /// counted). Hubs can opt out with `history = false`. Default: 1000.
    pub history_messages: usize,
    /// Most bytes of history kept per channel, so large messages cannot pin memory in
    /// Redis (or in process); a message larger than this is not kept. Default: 4194304.
    pub history_bytes: usize,
    /// A channel's history is dropped this long after its last publish. Default: 60000.
    pub history_ms: u64,
    /// A channel's position counter is dropped this long after its last publish (the
    /// next publish starts a new epoch); at least `history_ms`. Default: 3600000.
    pub position_ttl_ms: u64,
    /// How long a publish's `Idempotency-Key` is remembered. Default: 600000.
    pub idempotency_ms: u64,
}

impl Default for Delivery {
    fn default() -> Self {
        Self {
            history_messages: 1000,
            history_bytes: 4 * 1024 * 1024,
            history_ms: 60_000,
            position_ttl_ms: 3_600_000,
            idempotency_ms: 600_000,
        }
    }
}

impl Delivery {
    /// [`Self::idempotency_ms`] as a duration.
    pub fn idempotency(&self) -> Duration {
        Duration::from_millis(self.idempotency_ms)
    }
}

/// A budget threshold and the severity of its alert.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Threshold {
    /// Percent of the budget.
    pub percent: u32,
    /// `info`, `warning` or `critical`.
    pub severity: String,
}

/// A storm-protection rule: at most `per_second` events of `target` to any one group
/// (bursts of `burst`), cluster-wide; the excess is suppressed, counted and logged.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateRule {
    /// Hub the rule applies to. Default: every hub.
    #[serde(default)]
    pub hub: Option<String>,
    /// Event (target) name.
    pub target: String,
    /// Events per second per group.
    pub per_second: f64,
    /// Bucket size. Default: `per_second`.
    #[serde(default)]
    pub burst: Option<f64>,
}

/// How webhook URLs become group names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum WebhookGroups {
    /// `webhook-{host}-{path}` with `-` (the gateway today).
    #[default]
    Hyphen,
    /// `webhook_{host}_{path}` with `_` (older gateway clients).
    Underscore,
}

/// Event-flow settings, in the file's `[flows]` table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Flows {
    /// Budget thresholds. Default: 50 info, 75 warning, 90 critical, 100 critical.
    pub budget_thresholds: Vec<Threshold>,
    /// Every threshold is re-armed when usage drops below this percent. Default: 50.
    pub rearm_below_percent: f64,
    /// Identical consecutive health results needed to announce a change. Default: 3.
    pub health_consecutive: u32,
    /// Progress events per second per task; more are coalesced (latest wins). Default: 4.
    pub progress_per_second: u32,
    /// How long a finished task's marker lives (later progress is dropped). Default: 600000.
    pub task_done_ttl_ms: u64,
    /// Failures within the window that open a webhook URL's breaker. Default: 5.
    pub breaker_failures: u32,
    /// The breaker's failure window. Default: 900000 (15 minutes).
    pub breaker_window_ms: u64,
    /// How long an open breaker waits before half-open. Default: 300000 (5 minutes).
    pub breaker_half_open_ms: u64,
    /// Webhook group naming. Default: `hyphen`.
    pub webhook_groups: WebhookGroups,
    /// Storm protection rules. Default: none.
    pub rate_limits: Vec<RateRule>,
}

impl Default for Flows {
    fn default() -> Self {
        let t = |percent, severity: &str| Threshold {
            percent,
            severity: severity.to_owned(),
        };
        Self {
            budget_thresholds: vec![
                t(50, "info"),
                t(75, "warning"),
                t(90, "critical"),
                t(100, "critical"),
            ],
            rearm_below_percent: 50.0,
            health_consecutive: 3,
            progress_per_second: 4,
            task_done_ttl_ms: 600_000,
            breaker_failures: 5,
            breaker_window_ms: 900_000,
            breaker_half_open_ms: 300_000,
            webhook_groups: WebhookGroups::Hyphen,
            rate_limits: Vec::new(),
        }
    }
}

/// Client-authentication settings in the file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityFile {
    /// Longest the connect proxy may take to answer; slower means refused. Default: 2000.
    pub connect_proxy_timeout_ms: u64,
    /// How long a connect-proxy answer that lets a client in is reused for the same
    /// credential. Default: 30000.
    pub connect_proxy_cache_ms: u64,
    /// How long a connect-proxy refusal is reused for the same credential: shorter than
    /// answers, so a credential the backend starts accepting works soon, yet a client
    /// retrying a refused one does not reach the backend each time. Default: 2000.
    pub connect_proxy_refusal_cache_ms: u64,
    /// Longest credential sent to the connect proxy, in bytes; a longer one is refused
    /// (401) without asking the backend. Default: 4096.
    pub connect_proxy_max_credential_bytes: usize,
    /// Most connect-proxy answers cached; the oldest go first. Default: 10000.
    pub connect_proxy_cache_entries: usize,
    /// Most bytes of connect-proxy answers cached (an estimate: key, user, virtual key and
    /// groups); the oldest go first. Default: 8388608 (8 MiB).
    pub connect_proxy_cache_bytes: usize,
    /// Connect-proxy requests in flight at once on one node; a client that would need
    /// another is refused with 503 at once. Default: 32.
    pub connect_proxy_max_concurrent: usize,
    /// Browser origins allowed (added to `HUBCAST_ALLOWED_ORIGINS`). Default: none.
    pub allowed_origins: Vec<String>,
    /// Whether `X-Forwarded-Host` and `X-Forwarded-For` are believed: set it only when
    /// every request reaches the node through a proxy that sets them (an ingress). Then
    /// the publish API's JWT audience is checked against the forwarded host, and the
    /// per-source handshake limit counts the client's address instead of the proxy's.
    /// Default: false (anyone could send them).
    pub trust_forwarded_headers: bool,
}

impl Default for SecurityFile {
    fn default() -> Self {
        Self {
            connect_proxy_timeout_ms: 2_000,
            connect_proxy_cache_ms: 30_000,
            connect_proxy_refusal_cache_ms: 2_000,
            connect_proxy_max_credential_bytes: 4096,
            connect_proxy_cache_entries: 10_000,
            connect_proxy_cache_bytes: 8 * 1024 * 1024,
            connect_proxy_max_concurrent: 32,
            allowed_origins: Vec::new(),
            trust_forwarded_headers: false,
        }
    }
}

/// Admission of WebSocket handshakes: how many may wait for their SignalR handshake at
/// once per credential and per source address, so that no single credential or address
/// takes the node's `limits.max_concurrent_handshakes`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Admission {
    /// Handshakes one credential (by its digest) may have pending on one node; more get
    /// 503. Default: 16.
    pub max_pending_handshakes_per_credential: usize,
    /// Handshakes one source address may have pending on one node; more get 503. Behind
    /// a proxy every client shares its address unless `security.trust_forwarded_headers`
    /// is set. Default: 256.
    pub max_pending_handshakes_per_source: usize,
}

impl Default for Admission {
    fn default() -> Self {
        Self {
            max_pending_handshakes_per_credential: 16,
            max_pending_handshakes_per_source: 256,
        }
    }
}

/// The config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    /// Keep the seven default hubs. Default: true. A file hub with a default hub's name
    /// replaces it.
    pub default_hubs: Option<bool>,
    /// Extra hubs.
    pub hubs: Vec<HubSpec>,
    /// Limits.
    pub limits: Limits,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Cluster settings.
    pub cluster: Cluster,
    /// Delivery positions, history and idempotency.
    pub delivery: Delivery,
    /// Client-authentication settings.
    pub security: SecurityFile,
    /// Handshake admission per credential and source.
    pub admission: Admission,
    /// Event-flow settings.
    pub flows: Flows,
}
