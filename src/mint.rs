//! `hubcast token`: a client token for a hub whose clients present tokens, signed with the
//! token key and carrying the claims the gate reads — `sub` (the user), `vkey` (the
//! virtual key), `groups` (granted names or `*` prefixes), `exp` (required by the node),
//! and `aud` the hub, so the token opens that hub only.
//!
//! The key and the hubs are the node's own (`--token-key` / `HUBCAST_TOKEN_KEY`, the
//! defaults and `--config`), so what is minted here is what a node started the same way
//! accepts. Every refusal is one line naming what to fix.

use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::auth::{now_secs, sign_jwt, AuthMode};
use crate::config::{hub_specs, read_file, Cli, ConfigError, TokenArgs, MIN_KEY_BYTES};
use crate::hub::HubSpec;
use crate::ids::{GroupName, UserId};

/// Why no token was printed. The text is one line and names the setting.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// Neither `--token-key` nor `HUBCAST_TOKEN_KEY` is set.
    #[error("no token key: set --token-key or HUBCAST_TOKEN_KEY to the key the nodes verify client tokens with")]
    NoKey,
    /// A key a node would refuse to start with.
    #[error("the token key is {0} bytes long: nodes refuse keys under {MIN_KEY_BYTES} bytes, so none would accept this token")]
    ShortKey(usize),
    /// No hub of that name is defined.
    #[error("unknown hub '{hub}': the hubs whose clients present tokens are {known}")]
    UnknownHub {
        /// The name asked for.
        hub: String,
        /// The token hubs, comma-separated.
        known: String,
    },
    /// The hub authenticates clients some other way.
    #[error("hub '{hub}' does not take client tokens: its clients present {presents}")]
    NotTokenHub {
        /// The hub.
        hub: String,
        /// What they present instead.
        presents: &'static str,
    },
    /// `--ttl` is not a positive duration.
    #[error("invalid --ttl '{0}': use a whole number of seconds, or with s, m, h or d (90s, 30m, 1h, 7d)")]
    BadTtl(String),
    /// `--user` is not a user id the node accepts.
    #[error("invalid --user: {0}")]
    BadUser(String),
    /// A `--groups` entry is not a group name or prefix.
    #[error("invalid --groups entry '{entry}': {why}")]
    BadGroup {
        /// The entry.
        entry: String,
        /// Why.
        why: String,
    },
    /// `--vkey` is empty.
    #[error("invalid --vkey: it must not be empty")]
    BadVkey,
    /// The config file named by `--config` cannot be used.
    #[error("{0}")]
    Config(#[from] ConfigError),
}

/// Parses `--ttl`: `3600`, `90s`, `30m`, `1h`, `7d`; more than zero.
///
/// # Errors
/// [`MintError::BadTtl`].
pub fn parse_ttl(raw: &str) -> Result<Duration, MintError> {
    let bad = || MintError::BadTtl(raw.to_owned());
    let text = raw.trim();
    let (number, unit) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&text[..i], c),
        _ => (text, 's'),
    };
    let scale = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return Err(bad()),
    };
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let secs = number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|&s| s > 0 && s <= u64::from(u32::MAX))
        .ok_or_else(bad)?;
    Ok(Duration::from_secs(secs))
}

/// The hub named `name` among `specs`, if its clients present tokens.
///
/// # Errors
/// [`MintError::UnknownHub`] or [`MintError::NotTokenHub`].
pub fn token_hub<'a>(specs: &'a [HubSpec], name: &str) -> Result<&'a HubSpec, MintError> {
    let Some(spec) = specs.iter().find(|h| h.name == name) else {
        let known: Vec<&str> = specs
            .iter()
            .filter(|h| h.auth == AuthMode::Token)
            .map(|h| h.name.as_str())
            .collect();
        return Err(MintError::UnknownHub {
            hub: name.to_owned(),
            known: if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            },
        });
    };
    let presents = match spec.auth {
        AuthMode::Token => return Ok(spec),
        AuthMode::None => "nothing (anyone may connect)",
        AuthMode::MasterKey => "the master key (HUBCAST_MASTER_KEY)",
        AuthMode::ConnectProxy => "a credential the connect proxy identifies",
    };
    Err(MintError::NotTokenHub {
        hub: spec.name.clone(),
        presents,
    })
}

/// The claims of a token for `hub` as `args` ask, issued at `now` (seconds).
///
/// # Errors
/// A bad `--ttl`, `--user`, `--vkey` or `--groups` entry.
pub fn claims(hub: &HubSpec, args: &TokenArgs, now: u64) -> Result<Value, MintError> {
    let ttl = parse_ttl(&args.ttl)?;
    let mut claims = Map::new();
    claims.insert("aud".into(), json!(hub.name));
    if let Some(user) = &args.user {
        let user = UserId::parse(user).map_err(|e| MintError::BadUser(e.to_string()))?;
        claims.insert("sub".into(), json!(user.as_str()));
    }
    if let Some(vkey) = &args.vkey {
        if vkey.is_empty() {
            return Err(MintError::BadVkey);
        }
        claims.insert("vkey".into(), json!(vkey));
    }
    let groups: Vec<&str> = args
        .groups
        .iter()
        .map(|g| g.trim())
        .filter(|g| !g.is_empty())
        .collect();
    for entry in &groups {
        let name = entry.strip_suffix('*').unwrap_or(entry);
        if !name.is_empty() {
            GroupName::parse(name).map_err(|e| MintError::BadGroup {
                entry: (*entry).to_owned(),
                why: e.to_string(),
            })?;
        }
    }
    if !groups.is_empty() {
        claims.insert("groups".into(), json!(groups));
    }
    claims.insert("iat".into(), json!(now));
    claims.insert("exp".into(), json!(now + ttl.as_secs()));
    Ok(Value::Object(claims))
}

/// Runs `hubcast token`: the token to print.
///
/// # Errors
/// See [`MintError`].
pub fn run(cli: &Cli, args: &TokenArgs) -> Result<String, MintError> {
    let key = cli
        .token_key
        .as_deref()
        .filter(|k| !k.trim().is_empty())
        .ok_or(MintError::NoKey)?;
    if key.len() < MIN_KEY_BYTES {
        return Err(MintError::ShortKey(key.len()));
    }
    let specs = hub_specs(&read_file(cli.config.as_deref())?);
    let hub = token_hub(&specs, &args.hub)?;
    let claims = claims(hub, args, now_secs())?;
    Ok(sign_jwt(&claims, key.as_bytes()))
}

/// A client token for `hub` as the REST API's `:generateToken` asks: the same claims and
/// signature as `hubcast token --hub … --user … --ttl {minutes}m`, with the node's own key.
///
/// # Errors
/// No key or a short one, a hub whose clients present no token, a bad user id.
pub fn api_token(
    hub: &HubSpec,
    key: Option<&[u8]>,
    user: Option<&str>,
    minutes: u64,
) -> Result<String, MintError> {
    let key = key.filter(|k| !k.is_empty()).ok_or(MintError::NoKey)?;
    if key.len() < MIN_KEY_BYTES {
        return Err(MintError::ShortKey(key.len()));
    }
    let hub = token_hub(std::slice::from_ref(hub), &hub.name)?;
    let args = TokenArgs {
        hub: hub.name.clone(),
        user: user.map(str::to_owned),
        vkey: None,
        groups: Vec::new(),
        ttl: format!("{minutes}m"),
    };
    Ok(sign_jwt(&claims(hub, &args, now_secs())?, key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{AuthError, Identity, Secret};
    use crate::config::{Command, Limits, Security};
    use crate::http::gate::Gate;
    use crate::hub::{default_hubs, Hub};
    use clap::Parser as _;

    const KEY: &str = "client-token-key-0123456789abcdef0123";

    fn cli(args: &[&str]) -> (Cli, TokenArgs) {
        let cli = Cli::try_parse_from(args).unwrap();
        let Some(Command::Token(t)) = cli.command.clone() else {
            panic!("not a token command: {args:?}");
        };
        (cli, t)
    }

    fn gate() -> Gate {
        let security = Security {
            token_key: Some(Secret::new(KEY)),
            ..Security::default()
        };
        Gate::new(security, Limits::default())
    }

    fn hub(name: &str) -> Hub {
        Hub::new(default_hubs().into_iter().find(|h| h.name == name).unwrap()).unwrap()
    }

    #[tokio::test]
    async fn a_minted_token_is_accepted_by_the_nodes_check_for_its_hub_with_its_claims() {
        let (cli, args) = cli(&[
            "hubcast",
            "token",
            "--token-key",
            KEY,
            "--hub",
            "tasks",
            "--user",
            "u1",
            "--vkey",
            "7",
            "--groups",
            "task-*",
            "--ttl",
            "1h",
        ]);
        let token = run(&cli, &args).unwrap();
        let identity = gate()
            .authenticate_client(&hub("tasks"), Some(&token))
            .await
            .unwrap();
        assert_eq!(
            identity,
            Identity {
                user: Some(UserId::parse("u1").unwrap()),
                virtual_key: Some("7".into()),
                groups: vec!["task-*".into()],
            }
        );
        let claims =
            crate::auth::verify_jwt(&token, &[KEY.as_bytes()], true, true, |a| a == "tasks")
                .unwrap();
        let exp = claims.0["exp"].as_u64().unwrap();
        let now = now_secs();
        assert!(
            exp > now + 3590 && exp <= now + 3600,
            "exp {exp}, now {now}"
        );
        assert_eq!(
            gate()
                .authenticate_client(&hub("spend"), Some(&token))
                .await,
            Err(AuthError::WrongAudience),
            "a token for one hub opens no other"
        );
        let other = Gate::new(
            Security {
                token_key: Some(Secret::new("another-token-key-0123456789abcdef0")),
                ..Security::default()
            },
            Limits::default(),
        );
        assert_eq!(
            other.authenticate_client(&hub("tasks"), Some(&token)).await,
            Err(AuthError::Invalid),
            "nodes with another key refuse it"
        );
    }

    #[tokio::test]
    async fn a_token_without_optional_claims_is_accepted_and_grants_nothing_more() {
        let (cli, args) = cli(&["hubcast", "token", "--token-key", KEY, "--hub", "spend"]);
        let token = run(&cli, &args).unwrap();
        let identity = gate()
            .authenticate_client(&hub("spend"), Some(&token))
            .await
            .unwrap();
        assert_eq!(identity, Identity::default());
    }

    #[test]
    fn ttls_take_a_unit_or_seconds_and_refuse_anything_else() {
        for (raw, secs) in [
            ("90s", 90),
            ("30m", 1800),
            ("1h", 3600),
            ("7d", 604_800),
            ("45", 45),
        ] {
            assert_eq!(parse_ttl(raw).unwrap(), Duration::from_secs(secs), "{raw}");
        }
        for raw in [
            "",
            "0",
            "0h",
            "h",
            "1x",
            "-1h",
            "1.5h",
            "1 h",
            "1hh",
            "99999999999999999999d",
        ] {
            assert!(
                matches!(parse_ttl(raw), Err(MintError::BadTtl(_))),
                "{raw:?} accepted"
            );
        }
    }

    #[test]
    fn refusals_are_one_line_and_name_what_to_fix() {
        let run_with = |args: &[&str]| {
            let (cli, t) = cli(args);
            run(&cli, &t).unwrap_err()
        };
        // `hubcast token` with the key and these arguments.
        let keyed = |rest: &[&str]| {
            let mut args = vec!["hubcast", "token", "--token-key", KEY];
            args.extend_from_slice(rest);
            run_with(&args)
        };
        let no_key = run_with(&["hubcast", "token", "--hub", "tasks"]);
        assert!(matches!(no_key, MintError::NoKey), "{no_key}");
        assert!(no_key.to_string().contains("HUBCAST_TOKEN_KEY"));
        let short = run_with(&["hubcast", "token", "--token-key", "short", "--hub", "tasks"]);
        assert!(matches!(short, MintError::ShortKey(5)), "{short}");
        let unknown = keyed(&["--hub", "chat"]);
        assert_eq!(
            unknown.to_string(),
            "unknown hub 'chat': the hubs whose clients present tokens are spend, tasks, \
             video-generation, image-generation, webhooks, notifications"
        );
        let admin = keyed(&["--hub", "admin-notifications"]);
        assert!(matches!(admin, MintError::NotTokenHub { .. }), "{admin}");
        let ttl = keyed(&["--hub", "tasks", "--ttl", "soon"]);
        assert!(matches!(ttl, MintError::BadTtl(_)), "{ttl}");
        let user = keyed(&["--hub", "tasks", "--user", "a\u{7}b"]);
        assert!(matches!(user, MintError::BadUser(_)), "{user}");
        let group = keyed(&["--hub", "tasks", "--groups", &"g".repeat(300)]);
        assert!(matches!(group, MintError::BadGroup { .. }), "{group}");
        let file = keyed(&["--hub", "tasks", "--config", "/nonexistent/hubcast.toml"]);
        assert!(matches!(file, MintError::Config(_)), "{file}");
        for e in [no_key, short, unknown, admin, ttl, user, group, file] {
            let text = e.to_string();
            assert!(!text.contains('\n') && !text.starts_with('{'), "{text:?}");
        }
    }

    #[test]
    fn hubs_from_the_config_file_can_be_minted_for() {
        let dir = std::env::temp_dir().join(format!("hubcast-mint-{}", crate::ids::random_token()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("hubs.toml");
        std::fs::write(&path, "[[hubs]]\nname = \"chat\"\npath = \"/hubs/chat\"\n").unwrap();
        let path = path.to_str().unwrap();
        let (cli, args) = cli(&[
            "hubcast",
            "token",
            "--token-key",
            KEY,
            "--config",
            path,
            "--hub",
            "chat",
        ]);
        let token = run(&cli, &args);
        std::fs::remove_dir_all(&dir).unwrap();
        let claims = crate::auth::verify_jwt(&token.unwrap(), &[KEY.as_bytes()], true, true, |a| {
            a == "chat"
        });
        assert!(claims.is_ok(), "{claims:?}");
    }
}
