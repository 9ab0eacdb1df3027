//! Typed configuration: command-line flags and `HUBCAST_*` environment variables for the
//! process, plus an optional TOML file for hubs, limits and timeouts.
//!
//! Each default is stated once, on the field that has it. Invalid settings stop start-up
//! with a message that names the setting.
//!
//! `flags` holds the command line, `file` the file's schema, and `validate` turns both
//! into the [`Config`] defined here.

mod file;
mod flags;
mod redis_url;
mod validate;

use std::net::SocketAddr;
use std::time::Duration;

use crate::auth::Secret;
use crate::hub::Hub;

pub use file::{
    Admission, Cluster, Delivery, FileConfig, Flows, Limits, RateRule, SecurityFile, Threshold,
    Timeouts, WebhookGroups,
};
pub use flags::{Cli, Command, LogFormat, TokenArgs};
pub use redis_url::RedisTarget;
pub use validate::{hub_specs, read_file, ConfigError, MIN_KEY_BYTES};

/// The credentials, browser origins and admission limits in force. The default has no
/// credential and the file's defaults for everything else.
#[derive(Debug, Clone)]
pub struct Security {
    /// Development mode: nothing is checked.
    pub insecure: bool,
    /// Publish API keys.
    pub access_keys: Vec<Secret>,
    /// Master key of `master-key` hubs.
    pub master_key: Option<Secret>,
    /// Signing key of client tokens.
    pub token_key: Option<Secret>,
    /// What connection tokens are signed with when no key is set (development mode): the
    /// Redis prefix, so every node of a development cluster accepts the others' tokens.
    pub development_token_seed: String,
    /// Connect-proxy backend.
    pub connect_proxy_url: Option<String>,
    /// Connect-proxy timeout.
    pub connect_proxy_timeout: Duration,
    /// Connect-proxy cache lifetime of answers that let a client in.
    pub connect_proxy_cache: Duration,
    /// Connect-proxy cache lifetime of refusals.
    pub connect_proxy_refusal_cache: Duration,
    /// Longest credential the connect proxy is asked about, in bytes.
    pub connect_proxy_max_credential_bytes: usize,
    /// Most connect-proxy answers cached.
    pub connect_proxy_cache_entries: usize,
    /// Most bytes of connect-proxy answers cached.
    pub connect_proxy_cache_bytes: usize,
    /// Connect-proxy requests in flight at once.
    pub connect_proxy_max_concurrent: usize,
    /// Browser origins allowed besides same-origin.
    pub allowed_origins: Vec<String>,
    /// Whether `X-Forwarded-Host` / `X-Forwarded-For` are believed.
    pub trust_forwarded_headers: bool,
    /// Pending handshakes per credential and per source.
    pub admission: Admission,
}

impl Security {
    /// The file's settings with no credential: the base the flags (or a test) fill in.
    pub fn from_file(file: &SecurityFile, admission: &Admission) -> Self {
        Self {
            connect_proxy_timeout: Duration::from_millis(file.connect_proxy_timeout_ms),
            connect_proxy_cache: Duration::from_millis(file.connect_proxy_cache_ms),
            connect_proxy_refusal_cache: Duration::from_millis(file.connect_proxy_refusal_cache_ms),
            connect_proxy_max_credential_bytes: file.connect_proxy_max_credential_bytes,
            connect_proxy_cache_entries: file.connect_proxy_cache_entries,
            connect_proxy_cache_bytes: file.connect_proxy_cache_bytes,
            connect_proxy_max_concurrent: file.connect_proxy_max_concurrent,
            allowed_origins: file.allowed_origins.clone(),
            trust_forwarded_headers: file.trust_forwarded_headers,
            admission: admission.clone(),
            insecure: false,
            access_keys: Vec::new(),
            master_key: None,
            token_key: None,
            development_token_seed: String::new(),
            connect_proxy_url: None,
        }
    }
}

impl Default for Security {
    fn default() -> Self {
        Self::from_file(&SecurityFile::default(), &Admission::default())
    }
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
    /// Delivery positions, history and idempotency.
    pub delivery: Delivery,
    /// Credentials and origins.
    pub security: Security,
    /// Event-flow settings.
    pub flows: Flows,
    /// Log format.
    pub log_format: LogFormat,
}
