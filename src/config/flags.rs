//! Command-line flags and their `HUBCAST_*` environment variables: the process-level
//! settings, each with its default in `--help`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

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
    /// Address for hubs (WebSocket and negotiate) and the publish API. Default:
    /// 0.0.0.0:8080, or 127.0.0.1:8080 with --insecure (development mode is open to
    /// anyone who can reach it, so it stays on this machine unless told otherwise).
    #[arg(long, env = "HUBCAST_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

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

    /// Redis URL: one server (redis://host:port/db, rediss:// for TLS), a Redis Cluster
    /// by its seeds (redis+cluster://h1:6379,h2:6379) or a master through Sentinel
    /// (redis+sentinel://s1:26379,s2:26379/mymaster). Without it the node runs on an
    /// in-process backplane: a single node, no Redis needed. Default: none.
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
    /// lets anyone in and join any group; listens on 127.0.0.1 unless --listen is given;
    /// connection tokens are signed with a key derived from --redis-prefix, so the nodes
    /// of a development cluster accept each other's. Never in production.
    #[arg(long, env = "HUBCAST_INSECURE", default_value_t = false)]
    pub insecure: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_listen_address_is_refused_by_the_flag_parser() {
        let e = Cli::try_parse_from(["hubcast", "--listen", "nowhere"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--listen"), "{e}");
    }
}
