//! (Longer than usual because every check that can refuse a setting is here, in the order
//! their errors are reported, with the tests that drive them through the flags and the file.)
//!
//! Validation: the flags and the file become one [`Config`], or a [`ConfigError`] that
//! names the setting.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::file::{FileConfig, Limits};
use super::flags::{Cli, LogFormat};
use super::{Config, RedisSettings, Security};
use crate::auth::{AuthMode, Secret};
use crate::hub::{default_hubs, Hub, HubSpec};

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
        Self::with_security(listen, security).expect("the defaults are valid")
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
        let file = read_file(cli.config.as_deref())?;
        let redis = match cli.redis_url {
            Some(url) if url.trim().is_empty() => None,
            Some(url) => {
                if let Err(why) = super::RedisTarget::parse(&url) {
                    return Err(invalid("--redis-url / HUBCAST_REDIS_URL", why));
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
        let mut security = Security::from_file(&file.security, &file.admission);
        security.allowed_origins = split(&cli.allowed_origins);
        security
            .allowed_origins
            .extend(file.security.allowed_origins.iter().cloned());
        security.insecure = cli.insecure;
        security.access_keys = split(&cli.access_key)
            .into_iter()
            .map(Secret::new)
            .collect();
        security.master_key = non_empty(cli.master_key);
        security.token_key = non_empty(cli.token_key);
        security.development_token_seed = cli.redis_prefix.clone();
        security.connect_proxy_url = cli.connect_proxy_url.filter(|u| !u.trim().is_empty());
        // Development mode is open to anyone who reaches it: it stays on this machine
        // unless an address is asked for.
        let listen = cli.listen.unwrap_or_else(|| {
            if cli.insecure {
                SocketAddr::from(([127, 0, 0, 1], 8080))
            } else {
                SocketAddr::from(([0, 0, 0, 0], 8080))
            }
        });
        Self::assemble(
            listen,
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
            check_name("--redis-prefix / HUBCAST_REDIS_PREFIX", &r.prefix)?;
        }
        if let Some(id) = &node_id {
            check_name("--node-id / HUBCAST_NODE_ID", id)?;
        }
        check_numbers(&file)?;
        let hubs = served_hubs(&file, &security)?;
        if !security.insecure {
            check_keys(&security)?;
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
            delivery: file.delivery,
            security,
            flows: file.flows,
            log_format,
        })
    }
}

/// Shortest key accepted: an HMAC key (the token key signs client tokens, every key goes
/// into the connection-token key) shorter than its hash's 32 bytes is guessable offline.
pub const MIN_KEY_BYTES: usize = 32;

/// Every key is long enough, and no key is another's: a token key equal to the access key
/// would let every client publish, a master key equal to either would open the admin hub.
fn check_keys(security: &Security) -> Result<(), ConfigError> {
    let mut keys: Vec<(&str, &Secret)> = security
        .access_keys
        .iter()
        .map(|k| ("HUBCAST_ACCESS_KEY", k))
        .collect();
    keys.extend(security.token_key.iter().map(|k| ("HUBCAST_TOKEN_KEY", k)));
    keys.extend(
        security
            .master_key
            .iter()
            .map(|k| ("HUBCAST_MASTER_KEY", k)),
    );
    if let Some((setting, key)) = keys.iter().find(|(_, k)| k.expose().len() < MIN_KEY_BYTES) {
        return Err(invalid(
            *setting,
            format!(
                "a key of {} bytes is too short: use at least {MIN_KEY_BYTES} random bytes (e.g. `openssl rand -hex 32`)",
                key.expose().len()
            ),
        ));
    }
    for (i, (setting, key)) in keys.iter().enumerate() {
        if let Some((other, _)) = keys[..i].iter().find(|(_, k)| k == key) {
            let message = if other == setting {
                "lists the same key twice".to_owned()
            } else {
                format!("must differ from {other}: each key grants something else")
            };
            return Err(invalid(*setting, message));
        }
    }
    Ok(())
}

/// Node ids and the Redis prefix become part of key and channel names.
fn check_name(setting: &str, value: &str) -> Result<(), ConfigError> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(invalid(setting, "1 to 64 letters, digits, '-', '_' or '.'"))
    }
}

/// The first of `settings` (name and value) below `min` is refused with `message`.
fn at_least<T: PartialOrd>(
    min: T,
    message: &str,
    settings: impl IntoIterator<Item = (&'static str, T)>,
) -> Result<(), ConfigError> {
    match settings.into_iter().find(|(_, v)| *v < min) {
        Some((name, _)) => Err(invalid(name, message)),
        None => Ok(()),
    }
}

/// Limits, timeouts, flow and cluster settings, in the order their errors are reported.
fn check_numbers(file: &FileConfig) -> Result<(), ConfigError> {
    let l = &file.limits;
    at_least(
        1024,
        "must be at least 1024",
        [
            ("limits.max_record_bytes", l.max_record_bytes),
            ("limits.max_body_bytes", l.max_body_bytes),
        ],
    )?;
    at_least(
        1,
        "must be at least 1",
        [
            ("limits.outbound_queue", l.outbound_queue),
            ("limits.dispatch_queue", l.dispatch_queue),
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
            ("limits.max_open_sockets", l.max_open_sockets),
        ],
    )?;
    let (sec, adm) = (&file.security, &file.admission);
    at_least(
        1,
        "must be at least 1",
        [
            (
                "security.connect_proxy_max_credential_bytes",
                sec.connect_proxy_max_credential_bytes,
            ),
            (
                "security.connect_proxy_cache_entries",
                sec.connect_proxy_cache_entries,
            ),
            (
                "security.connect_proxy_cache_bytes",
                sec.connect_proxy_cache_bytes,
            ),
            (
                "security.connect_proxy_max_concurrent",
                sec.connect_proxy_max_concurrent,
            ),
            (
                "admission.max_pending_handshakes_per_credential",
                adm.max_pending_handshakes_per_credential,
            ),
            (
                "admission.max_pending_handshakes_per_source",
                adm.max_pending_handshakes_per_source,
            ),
        ],
    )?;
    if sec.connect_proxy_refusal_cache_ms > sec.connect_proxy_cache_ms {
        return Err(invalid(
            "security.connect_proxy_refusal_cache_ms",
            format!(
                "({}) must be at most security.connect_proxy_cache_ms ({})",
                sec.connect_proxy_refusal_cache_ms, sec.connect_proxy_cache_ms
            ),
        ));
    }
    // Below this a single large publish would close every recipient as a slow consumer.
    at_least(
        l.largest_frame(),
        &format!(
            "must hold the largest message: at least max_body_bytes and max_record_bytes plus {}",
            Limits::FRAME_OVERHEAD
        ),
        [
            ("limits.outbound_queue_bytes", l.outbound_queue_bytes),
            ("limits.reconnect_buffer_bytes", l.reconnect_buffer_bytes),
        ],
    )?;
    at_least(
        1,
        "must be greater than 0",
        [(
            "limits.reconnect_buffer_messages",
            l.reconnect_buffer_messages,
        )],
    )?;
    let t = &file.timeouts;
    at_least(
        1,
        "must be greater than 0",
        [
            ("timeouts.handshake_ms", t.handshake_ms),
            ("timeouts.keepalive_ms", t.keepalive_ms),
            ("timeouts.client_timeout_ms", t.client_timeout_ms),
            ("timeouts.negotiate_ttl_ms", t.negotiate_ttl_ms),
            ("timeouts.write_timeout_ms", t.write_timeout_ms),
            ("timeouts.shutdown_ms", t.shutdown_ms),
            ("timeouts.header_read_ms", t.header_read_ms),
            ("timeouts.http_idle_ms", t.http_idle_ms),
            ("timeouts.body_read_ms", t.body_read_ms),
        ],
    )?;
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
    at_least(
        1,
        "must be greater than 0",
        [
            ("flows.health_consecutive", u64::from(f.health_consecutive)),
            (
                "flows.progress_per_second",
                u64::from(f.progress_per_second),
            ),
            ("flows.breaker_failures", u64::from(f.breaker_failures)),
            ("flows.breaker_window_ms", f.breaker_window_ms),
            ("flows.breaker_half_open_ms", f.breaker_half_open_ms),
            ("flows.task_done_ttl_ms", f.task_done_ttl_ms),
        ],
    )?;
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
    at_least(
        1,
        "must be greater than 0",
        [
            ("cluster.heartbeat_ttl_ms", c.heartbeat_ttl_ms),
            ("cluster.heartbeat_interval_ms", c.heartbeat_interval_ms),
            (
                "cluster.redis_command_timeout_ms",
                c.redis_command_timeout_ms,
            ),
        ],
    )?;
    if c.heartbeat_interval_ms.saturating_mul(2) > c.heartbeat_ttl_ms {
        return Err(invalid(
            "cluster.heartbeat_interval_ms",
            format!(
                "({}) must be at most half of cluster.heartbeat_ttl_ms ({})",
                c.heartbeat_interval_ms, c.heartbeat_ttl_ms
            ),
        ));
    }
    let d = &file.delivery;
    at_least(
        1,
        "must be greater than 0",
        [
            ("delivery.history_ms", d.history_ms),
            ("delivery.position_ttl_ms", d.position_ttl_ms),
            ("delivery.idempotency_ms", d.idempotency_ms),
        ],
    )?;
    if d.position_ttl_ms < d.history_ms {
        return Err(invalid(
            "delivery.position_ttl_ms",
            format!(
                "({}) must be at least delivery.history_ms ({})",
                d.position_ttl_ms, d.history_ms
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
    Ok(())
}

/// The config file at `path` (`--config`), or the defaults without one.
///
/// # Errors
/// The file cannot be read or is not of the expected shape.
pub fn read_file(path: Option<&Path>) -> Result<FileConfig, ConfigError> {
    let Some(path) = path else {
        return Ok(FileConfig::default());
    };
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// The hubs a node with this file defines, before any credential is checked: the
/// defaults (unless turned off) with the file's hubs replacing or joining them.
pub fn hub_specs(file: &FileConfig) -> Vec<HubSpec> {
    let mut specs: Vec<HubSpec> = if file.default_hubs.unwrap_or(true) {
        default_hubs()
    } else {
        Vec::new()
    };
    for extra in &file.hubs {
        specs.retain(|h| h.name != extra.name);
        specs.push(extra.clone());
    }
    specs
}

/// The hubs served ([`hub_specs`]), checked against the credentials that are set.
fn served_hubs(file: &FileConfig, security: &Security) -> Result<Vec<Hub>, ConfigError> {
    let mut specs = hub_specs(file);
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
                AuthMode::MasterKey if security.master_key.is_none() => Some("HUBCAST_MASTER_KEY"),
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
    Ok(hubs)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

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

    fn file_error(text: &str) -> String {
        with_file(text).unwrap_err().to_string()
    }

    fn cli_error(args: &[&str]) -> String {
        Config::from_cli(cli(args)).unwrap_err().to_string()
    }

    #[test]
    fn defaults_serve_the_seven_hubs_without_redis() {
        let c = Config::from_cli(cli(&["--insecure"])).unwrap();
        assert_eq!(c.hubs.len(), 7);
        assert!(c.redis.is_none());
        assert_eq!(
            c.listen.to_string(),
            "127.0.0.1:8080",
            "development mode stays on this machine"
        );
        assert_eq!(c.limits.max_record_bytes, 32 * 1024);
        let c = Config::from_cli(cli(&["--insecure", "--listen", "0.0.0.0:9000"])).unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:9000", "unless asked");
        let c = Config::from_cli(cli(&[
            "--access-key",
            ACCESS,
            "--token-key",
            TOKEN,
            "--master-key",
            MASTER,
        ]))
        .unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:8080");
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
        let e = file_error("[timeouts]\nkeepalive_ms = 40000\n");
        assert!(e.contains("timeouts.keepalive_ms"), "{e}");
        let e = file_error("[limits]\nmax_record_bytes = 10\n");
        assert!(e.contains("limits.max_record_bytes"), "{e}");
        let e = file_error("[limits]\nmax_recrd_bytes = 10\n");
        assert!(e.contains("max_recrd_bytes"), "{e}");
        let e = file_error("[[hubs]]\nname = \"x\"\npath = \"/hubs/spend\"\n");
        assert!(e.contains("/hubs/spend"), "{e}");
        let e = cli_error(&["--redis-url", "http://x"]);
        assert!(e.contains("--redis-url"), "{e}");
    }

    const ACCESS: &str = "access-key-0123456789abcdef0123456789";
    const ROTATED: &str = "access-key-rotated-0123456789abcdef01";
    const TOKEN: &str = "token-key-0123456789abcdef0123456789a";
    const MASTER: &str = "master-key-0123456789abcdef0123456789";

    #[test]
    fn without_insecure_every_key_the_hubs_need_must_be_set() {
        let e = cli_error(&[]);
        assert!(e.contains("HUBCAST_ACCESS_KEY"), "{e}");
        let e = cli_error(&["--access-key", ACCESS]);
        assert!(
            e.contains("HUBCAST_TOKEN_KEY") || e.contains("HUBCAST_MASTER_KEY"),
            "{e}"
        );
        let both = format!("{ACCESS}, {ROTATED}");
        let c = Config::from_cli(cli(&[
            "--access-key",
            &both,
            "--token-key",
            TOKEN,
            "--master-key",
            MASTER,
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
    fn short_or_shared_keys_are_refused_by_name() {
        let short = format!("{ACCESS},x");
        let e = cli_error(&[
            "--access-key",
            &short,
            "--token-key",
            TOKEN,
            "--master-key",
            MASTER,
        ]);
        assert!(
            e.contains("HUBCAST_ACCESS_KEY") && e.contains("too short"),
            "{e}"
        );
        let e = cli_error(&[
            "--access-key",
            ACCESS,
            "--token-key",
            "t",
            "--master-key",
            MASTER,
        ]);
        assert!(e.contains("HUBCAST_TOKEN_KEY"), "{e}");
        let e = cli_error(&[
            "--access-key",
            ACCESS,
            "--token-key",
            TOKEN,
            "--master-key",
            TOKEN,
        ]);
        assert!(
            e.contains("HUBCAST_MASTER_KEY") && e.contains("must differ from HUBCAST_TOKEN_KEY"),
            "{e}"
        );
        let e = cli_error(&[
            "--access-key",
            ACCESS,
            "--token-key",
            ACCESS,
            "--master-key",
            MASTER,
        ]);
        assert!(e.contains("HUBCAST_TOKEN_KEY"), "{e}");
        // Development mode needs no key at all.
        assert!(Config::from_cli(cli(&["--insecure", "--access-key", "x"])).is_ok());
    }

    #[test]
    fn admission_and_proxy_settings_are_checked() {
        let e = file_error("[admission]\nmax_pending_handshakes_per_source = 0\n");
        assert!(
            e.contains("admission.max_pending_handshakes_per_source"),
            "{e}"
        );
        let e = file_error("[security]\nconnect_proxy_max_concurrent = 0\n");
        assert!(e.contains("security.connect_proxy_max_concurrent"), "{e}");
        let e = file_error(
            "[security]\nconnect_proxy_cache_ms = 1000\nconnect_proxy_refusal_cache_ms = 5000\n",
        );
        assert!(e.contains("security.connect_proxy_refusal_cache_ms"), "{e}");
        let c = with_file("[admission]\nmax_pending_handshakes_per_credential = 3\n").unwrap();
        assert_eq!(
            c.security.admission.max_pending_handshakes_per_credential,
            3
        );
        assert_eq!(c.security.connect_proxy_max_credential_bytes, 4096);
    }

    #[test]
    fn development_tokens_are_signed_from_the_redis_prefix() {
        let c = Config::from_cli(cli(&["--insecure", "--redis-prefix", "dev-a"])).unwrap();
        assert_eq!(c.security.development_token_seed, "dev-a");
    }
}
