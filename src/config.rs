//! Typed configuration: command-line flags and `HUBCAST_*` environment variables for the
//! process, plus an optional TOML file for hubs, limits and timeouts.
//!
//! Each default is stated once, on the field that has it. Invalid settings stop start-up
//! with a message that names the setting.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use serde::Deserialize;

use crate::auth::{AuthMode, Secret};
use crate::hub::{default_hubs, Hub, HubSpec};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line (for Kubernetes log pipelines).
    Json,
}

/// Command-line flags; every flag also reads a `HUBCAST_*` environment variable.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "hubcast",
    version,
    about = "A SignalR-compatible notification backplane: WebSocket hubs, HTTP publishing, Redis scale-out."
)]
pub struct Cli {
    /// Address for hubs (WebSocket and negotiate) and the publish API.
    #[arg(
        long,
        env = "HUBCAST_LISTEN",
        default_value = "0.0.0.0:8080",
        value_name = "ADDR"
    )]
    pub listen: SocketAddr,

    /// Address for Prometheus `/metrics`, apart from the public listener.
    #[arg(
        long,
        env = "HUBCAST_METRICS_LISTEN",
        default_value = "0.0.0.0:9464",
        value_name = "ADDR"
    )]
    pub metrics_listen: SocketAddr,

    /// TOML file with hub definitions, limits and timeouts (see the README). Default: none.
    #[arg(long, env = "HUBCAST_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Redis URL (redis://host:port/db, or rediss:// for TLS). Without it the node runs on an in-process
    /// backplane: a single node, no Redis needed. Default: none.
    #[arg(
        long,
        env = "HUBCAST_REDIS_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub redis_url: Option<String>,

    /// Prefix of every Redis key and channel this cluster uses.
    #[arg(
        long,
        env = "HUBCAST_REDIS_PREFIX",
        default_value = "hubcast",
        value_name = "PREFIX"
    )]
    pub redis_prefix: String,

    /// This node's id in the cluster. Default: a random id at each start.
    #[arg(long, env = "HUBCAST_NODE_ID", value_name = "ID")]
    pub node_id: Option<String>,

    /// Log format.
    #[arg(long, env = "HUBCAST_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,

    /// Keys for the publish API, comma-separated (several for rotation). Callers send one
    /// as `Authorization: Bearer`, or an HS256 JWT signed with one. Prefer the environment
    /// variable. Default: none.
    #[arg(
        long,
        env = "HUBCAST_ACCESS_KEY",
        value_name = "KEYS",
        hide_env_values = true
    )]
    pub access_key: Option<String>,

    /// The key clients of `master-key` hubs (the admin hub) present. Default: none.
    #[arg(
        long,
        env = "HUBCAST_MASTER_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub master_key: Option<String>,

    /// The key that signs client tokens (HS256) for `token` hubs. Default: none.
    #[arg(
        long,
        env = "HUBCAST_TOKEN_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub token_key: Option<String>,

    /// Backend that identifies credentials for `connect-proxy` hubs (http://…). Default: none.
    #[arg(long, env = "HUBCAST_CONNECT_PROXY_URL", value_name = "URL")]
    pub connect_proxy_url: Option<String>,

    /// Browser origins allowed to connect, comma-separated (`https://app.example.com`);
    /// same-origin pages and non-browser clients are always allowed. Default: none.
    #[arg(long, env = "HUBCAST_ALLOWED_ORIGINS", value_name = "ORIGINS")]
    pub allowed_origins: Option<String>,

    /// Development mode: no credential anywhere; the publish API is open and every hub
    /// lets anyone in and join any group. Never in production.
    #[arg(long, env = "HUBCAST_INSECURE", default_value_t = false)]
    pub insecure: bool,
}

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
    /// How long a connect-proxy answer is reused for the same credential. Default: 30000.
    pub connect_proxy_cache_ms: u64,
    /// Browser origins allowed (added to `HUBCAST_ALLOWED_ORIGINS`). Default: none.
    pub allowed_origins: Vec<String>,
}

impl Default for SecurityFile {
    fn default() -> Self {
        Self {
            connect_proxy_timeout_ms: 2_000,
            connect_proxy_cache_ms: 30_000,
            allowed_origins: Vec::new(),
        }
    }
}

/// The credentials and browser origins in force.
#[derive(Debug, Clone, Default)]
pub struct Security {
    /// Development mode: nothing is checked.
    pub insecure: bool,
    /// Publish API keys.
    pub access_keys: Vec<Secret>,
    /// Master key of `master-key` hubs.
    pub master_key: Option<Secret>,
    /// Signing key of client tokens.
    pub token_key: Option<Secret>,
    /// Connect-proxy backend.
    pub connect_proxy_url: Option<String>,
    /// Connect-proxy timeout.
    pub connect_proxy_timeout: Duration,
    /// Connect-proxy cache lifetime.
    pub connect_proxy_cache: Duration,
    /// Browser origins allowed besides same-origin.
    pub allowed_origins: Vec<String>,
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
    /// Client-authentication settings.
    pub security: SecurityFile,
    /// Event-flow settings.
    pub flows: Flows,
}

/// Redis connection settings.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// The server URL.
    pub url: String,
    /// Key and channel prefix.
    pub prefix: String,
}

/// The whole, validated configuration of one node.
#[derive(Debug, Clone)]
pub struct Config {
    /// Hubs and publish API listener.
    pub listen: SocketAddr,
    /// Metrics listener; `None` serves no metrics (tests).
    pub metrics_listen: Option<SocketAddr>,
    /// Redis; `None` is the in-process backplane.
    pub redis: Option<RedisSettings>,
    /// Node id; `None` draws a random one.
    pub node_id: Option<String>,
    /// Hubs served.
    pub hubs: Vec<Hub>,
    /// Limits.
    pub limits: Limits,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Cluster settings.
    pub cluster: Cluster,
    /// Credentials and origins.
    pub security: Security,
    /// Event-flow settings.
    pub flows: Flows,
    /// Log format.
    pub log_format: LogFormat,
}

/// A setting is invalid; the text names it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, which names the key.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid setting {setting}: {message}")]
    Invalid {
        /// The setting's name as written in the file or on the command line.
        setting: String,
        /// What is wrong.
        message: String,
    },
}

fn invalid(setting: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting: setting.into(),
        message: message.into(),
    }
}

impl Config {
    /// Defaults for everything in development mode (no credentials), listening on
    /// `listen`, no metrics listener: the base for tests and embedding.
    pub fn insecure_for_listen(listen: SocketAddr) -> Self {
        let security = Security {
            insecure: true,
            ..Security::default()
        };
        Self::assemble(
            listen,
            None,
            None,
            None,
            FileConfig::default(),
            security,
            LogFormat::Human,
        )
        .expect("the defaults are valid")
    }

    /// Defaults for everything with these credentials, listening on `listen`, no metrics
    /// listener.
    ///
    /// # Errors
    /// A hub's auth mode needs a key that is not given.
    pub fn with_security(listen: SocketAddr, security: Security) -> Result<Self, ConfigError> {
        Self::assemble(
            listen,
            None,
            None,
            None,
            FileConfig::default(),
            security,
            LogFormat::Human,
        )
    }

    /// Builds the configuration from the command line and the file it names.
    ///
    /// # Errors
    /// See [`ConfigError`].
    pub fn from_cli(cli: Cli) -> Result<Self, ConfigError> {
        let file = match &cli.config {
            None => FileConfig::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    path: path.clone(),
                    message: e.to_string(),
                })?
            }
        };
        let redis = match cli.redis_url {
            Some(url) if url.trim().is_empty() => None,
            Some(url) => {
                if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                    return Err(invalid(
                        "--redis-url / HUBCAST_REDIS_URL",
                        "must start with redis:// or rediss:// (TLS)",
                    ));
                }
                Some(RedisSettings {
                    url,
                    prefix: cli.redis_prefix.clone(),
                })
            }
            None => None,
        };
        let split = |v: &Option<String>| -> Vec<String> {
            v.as_deref()
                .unwrap_or("")
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let non_empty = |v: Option<String>| v.filter(|s| !s.trim().is_empty()).map(Secret::new);
        let mut allowed_origins = split(&cli.allowed_origins);
        allowed_origins.extend(file.security.allowed_origins.iter().cloned());
        let security = Security {
            insecure: cli.insecure,
            access_keys: split(&cli.access_key)
                .into_iter()
                .map(Secret::new)
                .collect(),
            master_key: non_empty(cli.master_key),
            token_key: non_empty(cli.token_key),
            connect_proxy_url: cli.connect_proxy_url.filter(|u| !u.trim().is_empty()),
            connect_proxy_timeout: Duration::from_millis(file.security.connect_proxy_timeout_ms),
            connect_proxy_cache: Duration::from_millis(file.security.connect_proxy_cache_ms),
            allowed_origins,
        };
        Self::assemble(
            cli.listen,
            Some(cli.metrics_listen),
            redis,
            cli.node_id,
            file,
            security,
            cli.log_format,
        )
    }

    fn assemble(
        listen: SocketAddr,
        metrics_listen: Option<SocketAddr>,
        redis: Option<RedisSettings>,
        node_id: Option<String>,
        file: FileConfig,
        security: Security,
        log_format: LogFormat,
    ) -> Result<Self, ConfigError> {
        if let Some(r) = &redis {
            let ok = !r.prefix.is_empty()
                && r.prefix.len() <= 64
                && r.prefix
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            if !ok {
                return Err(invalid(
                    "--redis-prefix / HUBCAST_REDIS_PREFIX",
                    "1 to 64 letters, digits, '-', '_' or '.'",
                ));
            }
        }
        if let Some(id) = &node_id {
            let ok = !id.is_empty()
                && id.len() <= 64
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            if !ok {
                return Err(invalid(
                    "--node-id / HUBCAST_NODE_ID",
                    "1 to 64 letters, digits, '-', '_' or '.'",
                ));
            }
        }
        let l = &file.limits;
        if l.max_record_bytes < 1024 {
            return Err(invalid("limits.max_record_bytes", "must be at least 1024"));
        }
        if l.max_body_bytes < 1024 {
            return Err(invalid("limits.max_body_bytes", "must be at least 1024"));
        }
        if l.outbound_queue == 0 {
            return Err(invalid("limits.outbound_queue", "must be at least 1"));
        }
        if l.dispatch_queue == 0 {
            return Err(invalid("limits.dispatch_queue", "must be at least 1"));
        }
        for (name, v) in [
            (
                "limits.max_groups_per_connection",
                l.max_groups_per_connection,
            ),
            (
                "limits.max_connections_per_node",
                l.max_connections_per_node,
            ),
            (
                "limits.max_connections_per_user",
                l.max_connections_per_user,
            ),
            (
                "limits.invocations_per_second",
                l.invocations_per_second as usize,
            ),
            (
                "limits.publishes_per_key_per_second",
                l.publishes_per_key_per_second as usize,
            ),
            (
                "limits.max_concurrent_handshakes",
                l.max_concurrent_handshakes,
            ),
        ] {
            if v == 0 {
                return Err(invalid(name, "must be at least 1"));
            }
        }
        let t = &file.timeouts;
        for (name, v) in [
            ("timeouts.handshake_ms", t.handshake_ms),
            ("timeouts.keepalive_ms", t.keepalive_ms),
            ("timeouts.client_timeout_ms", t.client_timeout_ms),
            ("timeouts.negotiate_ttl_ms", t.negotiate_ttl_ms),
            ("timeouts.write_timeout_ms", t.write_timeout_ms),
            ("timeouts.shutdown_ms", t.shutdown_ms),
        ] {
            if v == 0 {
                return Err(invalid(name, "must be greater than 0"));
            }
        }
        let f = &file.flows;
        if f.budget_thresholds.is_empty() {
            return Err(invalid("flows.budget_thresholds", "at least one threshold"));
        }
        if f.budget_thresholds
            .windows(2)
            .any(|w| w[0].percent >= w[1].percent)
        {
            return Err(invalid(
                "flows.budget_thresholds",
                "percents must be strictly ascending",
            ));
        }
        if let Some(t) = f
            .budget_thresholds
            .iter()
            .find(|t| !["info", "warning", "critical"].contains(&t.severity.as_str()))
        {
            return Err(invalid(
                "flows.budget_thresholds",
                format!("severity '{}' is not info, warning or critical", t.severity),
            ));
        }
        for (name, v) in [
            ("flows.health_consecutive", u64::from(f.health_consecutive)),
            (
                "flows.progress_per_second",
                u64::from(f.progress_per_second),
            ),
            ("flows.breaker_failures", u64::from(f.breaker_failures)),
            ("flows.breaker_window_ms", f.breaker_window_ms),
            ("flows.breaker_half_open_ms", f.breaker_half_open_ms),
            ("flows.task_done_ttl_ms", f.task_done_ttl_ms),
        ] {
            if v == 0 {
                return Err(invalid(name, "must be greater than 0"));
            }
        }
        if let Some(r) = f.rate_limits.iter().find(|r| {
            r.per_second.is_nan()
                || r.per_second <= 0.0
                || r.burst.is_some_and(|b| b.is_nan() || b < 1.0)
        }) {
            return Err(invalid(
                "flows.rate_limits",
                format!(
                    "rule for '{}': per_second must be > 0 and burst ≥ 1",
                    r.target
                ),
            ));
        }
        let c = &file.cluster;
        for (name, v) in [
            ("cluster.heartbeat_ttl_ms", c.heartbeat_ttl_ms),
            ("cluster.heartbeat_interval_ms", c.heartbeat_interval_ms),
            (
                "cluster.redis_command_timeout_ms",
                c.redis_command_timeout_ms,
            ),
        ] {
            if v == 0 {
                return Err(invalid(name, "must be greater than 0"));
            }
        }
        if c.heartbeat_interval_ms * 2 > c.heartbeat_ttl_ms {
            return Err(invalid(
                "cluster.heartbeat_interval_ms",
                format!(
                    "({}) must be at most half of cluster.heartbeat_ttl_ms ({})",
                    c.heartbeat_interval_ms, c.heartbeat_ttl_ms
                ),
            ));
        }
        if t.keepalive_ms >= t.client_timeout_ms {
            return Err(invalid(
                "timeouts.keepalive_ms",
                format!(
                    "({}) must be less than timeouts.client_timeout_ms ({})",
                    t.keepalive_ms, t.client_timeout_ms
                ),
            ));
        }

        let mut specs: Vec<HubSpec> = if file.default_hubs.unwrap_or(true) {
            default_hubs()
        } else {
            Vec::new()
        };
        for extra in file.hubs {
            specs.retain(|h| h.name != extra.name);
            specs.push(extra);
        }
        if security.insecure {
            // Development mode: anyone connects to any hub and joins any group.
            for spec in &mut specs {
                spec.auth = AuthMode::None;
                spec.allow = vec!["*".into()];
            }
        } else {
            if security.access_keys.is_empty() {
                return Err(invalid(
                    "HUBCAST_ACCESS_KEY",
                    "no publish API key is set; set one (or pass --insecure for local development only)",
                ));
            }
            for spec in &specs {
                let missing = match spec.auth {
                    AuthMode::MasterKey if security.master_key.is_none() => {
                        Some("HUBCAST_MASTER_KEY")
                    }
                    AuthMode::Token if security.token_key.is_none() => Some("HUBCAST_TOKEN_KEY"),
                    AuthMode::ConnectProxy if security.connect_proxy_url.is_none() => {
                        Some("HUBCAST_CONNECT_PROXY_URL")
                    }
                    _ => None,
                };
                if let Some(setting) = missing {
                    return Err(invalid(
                        setting,
                        format!(
                            "hub '{}' authenticates clients with {:?} but it is not set",
                            spec.name, spec.auth
                        ),
                    ));
                }
            }
        }
        if let Some(url) = &security.connect_proxy_url {
            if !url.starts_with("http://") {
                return Err(invalid(
                    "HUBCAST_CONNECT_PROXY_URL",
                    "must be an http:// URL (an in-cluster backend)",
                ));
            }
        }
        if specs.is_empty() {
            return Err(invalid(
                "hubs",
                "no hub is defined (default_hubs = false and no [[hubs]])",
            ));
        }
        let mut hubs: Vec<Hub> = Vec::with_capacity(specs.len());
        for (i, spec) in specs.into_iter().enumerate() {
            let hub = Hub::new(spec).map_err(|m| invalid(format!("hubs[{i}]"), m))?;
            for other in &hubs {
                let paths = |h: &Hub| -> Vec<String> {
                    std::iter::once(h.spec.path.clone())
                        .chain(h.spec.aliases.clone())
                        .collect()
                };
                if other.name() == hub.name() {
                    return Err(invalid(
                        format!("hubs[{i}].name"),
                        format!("'{}' is used twice", hub.name()),
                    ));
                }
                if let Some(p) = paths(&hub).into_iter().find(|p| paths(other).contains(p)) {
                    return Err(invalid(
                        format!("hubs[{i}].path"),
                        format!("'{p}' is used by hub '{}' too", other.name()),
                    ));
                }
            }
            hubs.push(hub);
        }

        Ok(Self {
            listen,
            metrics_listen,
            redis,
            node_id,
            hubs,
            limits: file.limits,
            timeouts: file.timeouts,
            cluster: file.cluster,
            security,
            flows: file.flows,
            log_format,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("hubcast").chain(args.iter().copied())).unwrap()
    }

    fn with_file(text: &str) -> Result<Config, ConfigError> {
        let dir = std::env::temp_dir().join(format!("hubcast-cfg-{}", crate::ids::random_token()));
        std::fs::write(&dir, text).unwrap();
        let r = Config::from_cli(cli(&["--insecure", "--config", dir.to_str().unwrap()]));
        let _ = std::fs::remove_file(&dir);
        r
    }

    #[test]
    fn defaults_serve_the_seven_hubs_without_redis() {
        let c = Config::from_cli(cli(&["--insecure"])).unwrap();
        assert_eq!(c.hubs.len(), 7);
        assert!(c.redis.is_none());
        assert_eq!(c.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(c.limits.max_record_bytes, 32 * 1024);
    }

    #[test]
    fn a_file_adds_a_hub_and_changes_limits() {
        let c = with_file(
            r#"
            [limits]
            max_body_bytes = 2048
            [[hubs]]
            name = "chat"
            path = "/hubs/chat"
            allow_broadcast = true
            [[hubs.methods]]
            name = "Enter"
            join = "room-{0}"
            "#,
        )
        .unwrap();
        assert_eq!(c.hubs.len(), 8);
        assert_eq!(c.limits.max_body_bytes, 2048);
        assert!(c
            .hubs
            .iter()
            .any(|h| h.name() == "chat" && h.method("enter").is_some()));
    }

    #[test]
    fn bad_settings_are_named() {
        let e = with_file("[timeouts]\nkeepalive_ms = 40000\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("timeouts.keepalive_ms"), "{e}");
        let e = with_file("[limits]\nmax_record_bytes = 10\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("limits.max_record_bytes"), "{e}");
        let e = with_file("[limits]\nmax_recrd_bytes = 10\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_recrd_bytes"), "{e}");
        let e = with_file("[[hubs]]\nname = \"x\"\npath = \"/hubs/spend\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("/hubs/spend"), "{e}");
        let e = Config::from_cli(cli(&["--redis-url", "http://x"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--redis-url"), "{e}");
    }

    #[test]
    fn without_insecure_every_key_the_hubs_need_must_be_set() {
        let e = Config::from_cli(cli(&[])).unwrap_err().to_string();
        assert!(e.contains("HUBCAST_ACCESS_KEY"), "{e}");
        let e = Config::from_cli(cli(&["--access-key", "a"]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("HUBCAST_TOKEN_KEY") || e.contains("HUBCAST_MASTER_KEY"),
            "{e}"
        );
        let c = Config::from_cli(cli(&[
            "--access-key",
            "a, b",
            "--token-key",
            "t",
            "--master-key",
            "m",
        ]))
        .unwrap();
        assert_eq!(
            c.security.access_keys.len(),
            2,
            "comma-separated keys for rotation"
        );
        assert!(!c.security.insecure);
        assert_eq!(
            c.hubs
                .iter()
                .find(|h| h.name() == "admin-notifications")
                .unwrap()
                .spec
                .auth,
            AuthMode::MasterKey
        );
    }

    #[test]
    fn a_malformed_listen_address_is_refused_by_the_flag_parser() {
        let e = Cli::try_parse_from(["hubcast", "--listen", "nowhere"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--listen"), "{e}");
    }
}
