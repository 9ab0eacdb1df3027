//! Credentials: who may publish, who may connect to which hub, and which groups a
//! connection may join.
//!
//! - The publish API takes an access key, or an HS256 JWT signed with one whose `aud` is
//!   the request URL (Azure SignalR's scheme).
//! - Each hub authenticates clients in one [`AuthMode`]: anonymous, the master key, an
//!   HS256 token signed with the token key, or a connect proxy (the gateway's own backend).
//! - Negotiate hands out a connection token signed with a key derived from the cluster's
//!   keys, so any node accepts the WebSocket that follows (no sticky sessions). A token is
//!   bound to its hub and identity and opens one connection ([`UsedTokens`]).
//! - WebSocket handshakes are admitted per node, credential and source
//!   ([`HandshakeAdmission`]), so one credential or address cannot take every slot.
//!
//! Every secret comparison is constant-time.

use std::time::{SystemTime, UNIX_EPOCH};

use hmac::Hmac;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::ids::UserId;

mod admission;
mod jwt;
mod proxy;
mod rate;
mod replay;
mod tokens;

pub use admission::{AdmissionRefusal, HandshakeAdmission, HandshakeSlot};
pub use jwt::{sign_jwt, verify_jwt, Claims};
pub use proxy::{ConnectProxy, ProxySettings};
pub use rate::RateLimiter;
pub use replay::UsedTokens;
pub use tokens::{ConnectionTokens, TokenBinding, TokenError, VerifiedToken};

pub(crate) type HmacSha256 = Hmac<Sha256>;

/// How a hub authenticates its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMode {
    /// Anyone may connect.
    None,
    /// The credential must be `HUBCAST_MASTER_KEY` (the admin hub).
    MasterKey,
    /// An HS256 JWT signed with `HUBCAST_TOKEN_KEY`.
    Token,
    /// The credential is posted to the configured backend, which says who it is.
    ConnectProxy,
}

/// Who a client is, as its credential says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// User id (`sub`, or `nameid`), for user-targeted sends.
    pub user: Option<UserId>,
    /// Virtual key id (`vkey`), for `{vkey}` in group policies.
    pub virtual_key: Option<String>,
    /// Groups the credential grants: exact names, or prefixes ending in `*`.
    pub groups: Vec<String>,
}

/// Why a credential was refused. The text is returned to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credential was presented.
    #[error("a credential is required (Authorization: Bearer, or access_token in the query)")]
    Missing,
    /// A publish API request without `Authorization: Bearer` (that API reads no query
    /// parameter).
    #[error(
        "a credential is required: Authorization: Bearer <access key, or a JWT signed with one>"
    )]
    MissingBearer,
    /// A credential longer than the connect proxy is asked about.
    #[error("the credential is longer than this hub accepts")]
    TooLong,
    /// A token (or auth-backend answer) whose user id cannot be used: the client would
    /// escape the per-user limit and never receive user sends.
    #[error("the token's user id (sub) is not usable: it must be 1 to 256 bytes without control characters")]
    UnusableUser,
    /// The credential is not a key or token this node accepts.
    #[error("the credential is not valid")]
    Invalid,
    /// A well-formed token that is expired or not yet valid.
    #[error("the token is expired or not yet valid")]
    Expired,
    /// A token for another audience (hub or URL).
    #[error("the token was issued for another audience")]
    WrongAudience,
    /// The connect proxy refused the credential.
    #[error("the credential was refused by the authentication backend")]
    Refused,
    /// The connect proxy could not be asked; nobody is let in meanwhile.
    #[error("the authentication backend is unavailable")]
    BackendUnavailable,
    /// The connect proxy has as many requests in flight as allowed; nobody waits.
    #[error("the authentication backend is busy; retry shortly")]
    BackendBusy,
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Constant-time equality of two byte strings (the length is not secret).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A secret string that never shows in logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret's bytes.
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Whether `group` is granted by one of `patterns` (exact, or a prefix ending in `*`).
pub fn matches_any(group: &str, patterns: &[String]) -> bool {
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => group.starts_with(prefix),
        None => p == group,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use serde_json::json;
    use std::time::Duration;

    use crate::ids::ConnectionId;

    const KEY: &[u8] = b"test-key";

    fn verify(token: &str) -> Result<Claims, AuthError> {
        verify_jwt(token, &[KEY], false, false, |a| a == "spend")
    }

    #[test]
    fn a_signed_token_yields_its_identity() {
        let t = sign_jwt(
            &json!({"sub": "u1", "vkey": 7, "groups": ["task-1", "video-*"], "exp": now_secs() + 60}),
            KEY,
        );
        let id = verify(&t).unwrap().identity().unwrap();
        assert_eq!(id.user.unwrap().as_str(), "u1");
        assert_eq!(id.virtual_key.as_deref(), Some("7"));
        assert_eq!(id.groups, vec!["task-1", "video-*"]);
    }

    #[test]
    fn nameid_is_the_user_when_sub_is_absent() {
        let t = sign_jwt(&json!({"nameid": "n1"}), KEY);
        assert_eq!(
            verify(&t)
                .unwrap()
                .identity()
                .unwrap()
                .user
                .unwrap()
                .as_str(),
            "n1"
        );
    }

    #[test]
    fn an_unusable_sub_refuses_the_token_instead_of_dropping_the_user() {
        for sub in [
            json!("x".repeat(257)),
            json!("a\u{7}b"),
            json!(""),
            json!(42),
        ] {
            let t = sign_jwt(&json!({ "sub": sub }), KEY);
            assert_eq!(
                verify(&t).unwrap().identity(),
                Err(AuthError::UnusableUser),
                "{sub}"
            );
        }
        let t = sign_jwt(&json!({"vkey": 7}), KEY);
        assert_eq!(verify(&t).unwrap().identity().unwrap().user, None);
    }

    #[test]
    fn a_bad_signature_another_key_or_alg_none_is_invalid() {
        let t = sign_jwt(&json!({"sub": "u"}), b"other");
        assert_eq!(verify(&t).unwrap_err(), AuthError::Invalid);
        let mut t = sign_jwt(&json!({"sub": "u"}), KEY);
        t.push('A');
        assert_eq!(verify(&t).unwrap_err(), AuthError::Invalid);
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(br#"{"sub":"u"}"#)
        );
        assert_eq!(verify(&none).unwrap_err(), AuthError::Invalid);
        assert_eq!(verify("garbage").unwrap_err(), AuthError::Invalid);
    }

    #[test]
    fn expired_and_not_yet_valid_tokens_are_refused() {
        let t = sign_jwt(&json!({"exp": now_secs() - 3600}), KEY);
        assert_eq!(verify(&t).unwrap_err(), AuthError::Expired);
        let t = sign_jwt(&json!({"nbf": now_secs() + 3600}), KEY);
        assert_eq!(verify(&t).unwrap_err(), AuthError::Expired);
        let t = sign_jwt(&json!({"sub": "u"}), KEY);
        assert_eq!(
            verify_jwt(&t, &[KEY], true, false, |_| true).unwrap_err(),
            AuthError::Invalid
        );
    }

    #[test]
    fn the_audience_is_checked_when_present() {
        let t = sign_jwt(&json!({"aud": "tasks"}), KEY);
        assert_eq!(verify(&t).unwrap_err(), AuthError::WrongAudience);
        let t = sign_jwt(&json!({"aud": ["x", "spend"]}), KEY);
        assert!(verify(&t).is_ok());
        let t = sign_jwt(&json!({"sub": "u"}), KEY);
        assert_eq!(
            verify_jwt(&t, &[KEY], false, true, |_| true).unwrap_err(),
            AuthError::WrongAudience
        );
    }

    #[test]
    fn connection_tokens_round_trip_and_refuse_forgeries() {
        let tokens = ConnectionTokens::derive(&[b"cluster-secret"]);
        let me = TokenBinding::new("spend", &Identity::default());
        let id = ConnectionId::random();
        let t = tokens.issue(&id, Duration::from_secs(15), false, me);
        let ok = tokens.verify(&t, me).unwrap();
        assert_eq!(ok.id, id);
        assert!(ok.remaining <= Duration::from_secs(15) && ok.remaining > Duration::ZERO);
        let other = ConnectionTokens::derive(&[b"another-cluster"]);
        assert_eq!(other.verify(&t, me), Err(TokenError::Forged));
        assert_eq!(tokens.verify("AAAA", me), Err(TokenError::Forged));
        let mut raw = URL_SAFE_NO_PAD.decode(&t).unwrap();
        raw[9] ^= 1;
        assert_eq!(
            tokens.verify(&URL_SAFE_NO_PAD.encode(raw), me),
            Err(TokenError::Forged)
        );
        let v0 = tokens.issue(&id, Duration::from_secs(15), true, me);
        assert_eq!(
            tokens.verify(&v0, me).unwrap().id.as_str(),
            v0,
            "a version-0 token is its own id"
        );
        let expired = tokens.issue(&id, Duration::ZERO, false, me);
        let stateful = tokens.issue_with(&id, Duration::ZERO, false, true, me);
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(tokens.verify(&expired, me), Err(TokenError::Expired));
        // A stateful token resumes its connection after it expired, for its principal only.
        assert_eq!(tokens.verify(&stateful, me), Err(TokenError::Expired));
        assert_eq!(tokens.verify_resumable(&stateful, me), Ok(id.clone()));
        assert_eq!(
            tokens.verify_resumable(&expired, me),
            Err(TokenError::Expired),
            "a token without stateful reconnect never resumes"
        );
        let someone_else = TokenBinding::new(
            "spend",
            &Identity {
                user: Some(UserId::parse("mallory").unwrap()),
                ..Identity::default()
            },
        );
        assert_eq!(
            tokens.verify_resumable(&stateful, someone_else),
            Err(TokenError::Mismatch),
            "another principal cannot resume it"
        );
        let same = ConnectionTokens::derive(&[b"cluster-secret"]);
        assert_eq!(
            same.verify(&t, me).map(|v| v.id),
            Ok(id),
            "every node of a cluster derives the same key"
        );
    }

    #[test]
    fn a_connection_token_is_bound_to_its_hub_and_identity() {
        let tokens = ConnectionTokens::derive(&[b"cluster-secret"]);
        let user = |u: &str| Identity {
            user: Some(UserId::parse(u).unwrap()),
            ..Identity::default()
        };
        let mine = TokenBinding::new("spend", &user("u1"));
        let t = tokens.issue(
            &ConnectionId::random(),
            Duration::from_secs(15),
            false,
            mine,
        );
        for other in [
            TokenBinding::new("spend", &user("u2")),
            TokenBinding::new("admin-notifications", &user("u1")),
            TokenBinding::new("spend", &Identity::default()),
            TokenBinding::new(
                "spend",
                &Identity {
                    virtual_key: Some("7".into()),
                    ..user("u1")
                },
            ),
        ] {
            assert_eq!(tokens.verify(&t, other), Err(TokenError::Mismatch));
        }
        let reordered = |g: &[&str]| Identity {
            groups: g.iter().map(|s| (*s).to_owned()).collect(),
            ..user("u1")
        };
        assert_eq!(
            TokenBinding::new("spend", &reordered(&["a", "b"])),
            TokenBinding::new("spend", &reordered(&["b", "a"])),
            "a token minted again with its groups in another order is the same identity"
        );
    }

    #[test]
    fn a_used_token_is_refused_until_it_expires() {
        let used = UsedTokens::default();
        let a = ConnectionId::random();
        assert!(used.first_use(&a, Duration::from_secs(60)));
        assert!(!used.first_use(&a, Duration::from_secs(60)));
        let b = ConnectionId::random();
        assert!(used.first_use(&b, Duration::ZERO));
        std::thread::sleep(Duration::from_millis(2));
        let c = ConnectionId::random();
        assert!(used.first_use(&c, Duration::from_secs(60)));
        assert_eq!(
            used.len(),
            2,
            "an expired entry is pruned when another comes"
        );
    }

    #[test]
    fn group_patterns_match_exactly_or_by_prefix() {
        let p = vec!["task-1".to_owned(), "video-*".to_owned()];
        assert!(matches_any("task-1", &p));
        assert!(!matches_any("task-12", &p));
        assert!(matches_any("video-9", &p));
        assert!(!matches_any("image-9", &p));
    }

    #[test]
    fn the_rate_limiter_allows_a_burst_then_refuses() {
        let mut r = RateLimiter::new(1.0, 3.0);
        assert!(r.take().is_ok() && r.take().is_ok() && r.take().is_ok());
        let wait = r.take().unwrap_err();
        assert!(wait > Duration::from_millis(900) && wait <= Duration::from_secs(1));
    }

    #[test]
    fn constant_time_eq_compares_bytes() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
