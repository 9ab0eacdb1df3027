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
mod validate;

use std::net::SocketAddr;
use std::time::Duration;

use crate::auth::Secret;
use crate::hub::Hub;

pub use file::{
    Cluster, Delivery, FileConfig, Flows, Limits, RateRule, SecurityFile, Threshold, Timeouts,
    WebhookGroups,
};
pub use flags::{Cli, LogFormat};
pub use validate::ConfigError;

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
