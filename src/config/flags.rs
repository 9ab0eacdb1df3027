//! Command-line flags and their `HUBCAST_*` environment variables: the process-level
//! settings, each with its default in `--help`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

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
    about = "A SignalR-compatible notification backplane: WebSocket hubs, HTTP publishing, Redis scale-out.",
    disable_help_subcommand = true
)]
pub struct Cli {
    /// A tool to run instead of the node; without one, `hubcast` runs a node.
    #[command(subcommand)]
    pub command: Option<Command>,

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
    #[arg(long, env = "HUBCAST_CONFIG", value_name = "FILE", global = true)]
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
        hide_env_values = true,
        global = true
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

/// What `hubcast` runs besides a node.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Prints a client token (an HS256 JWT signed with --token-key / HUBCAST_TOKEN_KEY)
    /// for a hub whose clients present tokens: the same key and claims a node checks.
    Token(TokenArgs),
}

/// `hubcast token`: whom the token is for and what it grants. The key and the hubs come
/// from the node's own `--token-key` and `--config`.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The hub's API name (`tasks`, `spend`, …, or one from --config); the token is good
    /// for that hub only.
    #[arg(long, value_name = "HUB")]
    pub hub: String,
    /// User id (`sub`), for sends to a user. Default: none.
    #[arg(long, value_name = "ID")]
    pub user: Option<String>,
    /// Virtual key id (`vkey`), for the `{vkey}` groups of the hub. Default: none.
    #[arg(long, value_name = "ID")]
    pub vkey: Option<String>,
    /// Groups the client may join besides the hub's own, comma-separated: names, or
    /// prefixes ending in `*` (`task-*`). Default: none.
    #[arg(long, value_name = "PATTERNS", value_delimiter = ',')]
    pub groups: Vec<String>,
    /// How long the token is valid: a whole number of seconds, or with `s`, `m`, `h` or
    /// `d` (`90s`, `30m`, `1h`, `7d`).
    #[arg(long, value_name = "DURATION", default_value = "1h")]
    pub ttl: String,
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

    #[test]
    fn without_a_subcommand_the_flags_run_a_node_as_before() {
        let cli = Cli::try_parse_from([
            "hubcast",
            "--insecure",
            "--listen",
            "127.0.0.1:9000",
            "--token-key",
            "k",
        ])
        .unwrap();
        assert!(cli.command.is_none());
        assert!(cli.insecure);
        assert_eq!(cli.token_key.as_deref(), Some("k"));
        assert_eq!(cli.listen, Some("127.0.0.1:9000".parse().unwrap()));
    }

    #[test]
    fn the_token_subcommand_takes_the_nodes_key_and_config_flags() {
        for args in [
            &[
                "hubcast",
                "token",
                "--hub",
                "tasks",
                "--token-key",
                "k",
                "--config",
                "f.toml",
            ][..],
            &[
                "hubcast",
                "--token-key",
                "k",
                "--config",
                "f.toml",
                "token",
                "--hub",
                "tasks",
            ][..],
        ] {
            let cli = Cli::try_parse_from(args).unwrap();
            let Some(Command::Token(t)) = &cli.command else {
                panic!("{args:?}: no token command");
            };
            assert_eq!(t.hub, "tasks");
            assert_eq!(t.ttl, "1h");
            assert_eq!(cli.token_key.as_deref(), Some("k"), "{args:?}");
            assert_eq!(cli.config, Some(PathBuf::from("f.toml")), "{args:?}");
        }
        let cli = Cli::try_parse_from([
            "hubcast",
            "token",
            "--hub",
            "tasks",
            "--groups",
            "task-*,video-1",
            "--groups",
            "x",
        ])
        .unwrap();
        let Some(Command::Token(t)) = cli.command else {
            panic!("no token command");
        };
        assert_eq!(t.groups, ["task-*", "video-1", "x"]);
    }
}
