//! Credentials: who may publish, who may connect to which hub, and which groups a
//! connection may join.
//!
//! - The publish API takes an access key, or an HS256 JWT signed with one whose `aud` is
//!   the request URL (Azure SignalR's scheme).
//! - Each hub authenticates clients in one [`AuthMode`]: anonymous, the master key, an
//!   HS256 token signed with the token key, or a connect proxy (the gateway's own backend).
//! - Negotiate hands out a connection token signed with a key derived from the cluster's
//!   keys, so any node accepts the WebSocket that follows (no sticky sessions).
//!
//! Every secret comparison is constant-time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;

use crate::ids::{ConnectionId, UserId};

type HmacSha256 = Hmac<Sha256>;

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

/// Claims of a verified token.
#[derive(Debug, Clone, Default)]
pub struct Claims(pub serde_json::Map<String, Value>);

impl Claims {
    fn str(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(Value::as_str)
    }

    /// Turns client-token claims into an identity: `sub` (or `nameid`), `vkey` (string or
    /// number), `groups` (array of strings, or one string).
    pub fn identity(&self) -> Identity {
        let user = self
            .str("sub")
            .or_else(|| self.str("nameid"))
            .and_then(|u| UserId::parse(u).ok());
        let virtual_key = match self.0.get("vkey") {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        let groups = match self.0.get("groups") {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|g| g.as_str().map(str::to_owned))
                .collect(),
            Some(Value::String(s)) => vec![s.clone()],
            _ => Vec::new(),
        };
        Identity {
            user,
            virtual_key,
            groups,
        }
    }
}

/// Verifies an HS256 JWT against any of `keys`: signature, `exp`/`nbf` (60 s leeway),
/// and `aud` with `audience_ok` when the token has one (`require_aud` makes it mandatory).
///
/// # Errors
/// See [`AuthError`].
pub fn verify_jwt(
    token: &str,
    keys: &[&[u8]],
    require_exp: bool,
    require_aud: bool,
    audience_ok: impl Fn(&str) -> bool,
) -> Result<Claims, AuthError> {
    const LEEWAY: u64 = 60;
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Invalid);
    };
    let header: Value = URL_SAFE_NO_PAD
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(AuthError::Invalid)?;
    if header.get("alg").and_then(Value::as_str) != Some("HS256") {
        return Err(AuthError::Invalid);
    }
    let sig = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| AuthError::Invalid)?;
    let signed = &token[..h.len() + 1 + p.len()];
    let valid = keys.iter().any(|key| {
        let Ok(mut mac) = HmacSha256::new_from_slice(key) else {
            return false;
        };
        mac.update(signed.as_bytes());
        mac.verify_slice(&sig).is_ok()
    });
    if !valid {
        return Err(AuthError::Invalid);
    }
    let claims: serde_json::Map<String, Value> = URL_SAFE_NO_PAD
        .decode(p)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(AuthError::Invalid)?;
    let now = now_secs();
    match claims.get("exp").map(Value::as_u64) {
        Some(Some(exp)) if exp + LEEWAY < now => return Err(AuthError::Expired),
        Some(Some(_)) => {}
        Some(None) => return Err(AuthError::Invalid),
        None if require_exp => return Err(AuthError::Invalid),
        None => {}
    }
    match claims.get("nbf").map(Value::as_u64) {
        Some(Some(nbf)) if nbf > now + LEEWAY => return Err(AuthError::Expired),
        Some(None) => return Err(AuthError::Invalid),
        _ => {}
    }
    let audience_matches = match claims.get("aud") {
        None => !require_aud,
        Some(Value::String(a)) => audience_ok(a),
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).any(&audience_ok),
        Some(_) => return Err(AuthError::Invalid),
    };
    if !audience_matches {
        return Err(AuthError::WrongAudience);
    }
    Ok(Claims(claims))
}

/// Signs claims as an HS256 JWT (for tests and tooling).
pub fn sign_jwt(claims: &Value, key: &[u8]) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signed = format!("{header}.{payload}");
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(signed.as_bytes());
    format!(
        "{signed}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

/// Issues and checks negotiate connection tokens: the connection id, an expiry and a MAC,
/// so any node of the cluster can accept the WebSocket that follows.
#[derive(Clone)]
pub struct ConnectionTokens {
    key: [u8; 32],
}

impl std::fmt::Debug for ConnectionTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnectionTokens(***)")
    }
}

/// Why a connection token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// Not one of ours (forged or garbled).
    Forged,
    /// Past its expiry.
    Expired,
}

impl ConnectionTokens {
    /// Derives the signing key from the cluster's shared secrets, so every node of a
    /// cluster derives the same one. With no secret at all (insecure mode) a random key is
    /// drawn: tokens then work only on the node that issued them.
    pub fn derive(secrets: &[&[u8]]) -> Self {
        let mut mac =
            HmacSha256::new_from_slice(b"hubcast connection token v1").expect("any key length");
        if secrets.is_empty() {
            mac.update(crate::ids::random_token().as_bytes());
        }
        for s in secrets {
            mac.update(&(s.len() as u64).to_be_bytes());
            mac.update(s);
        }
        Self {
            key: mac.finalize().into_bytes().into(),
        }
    }

    fn mac(&self, body: &[u8]) -> [u8; 32] {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("any key length");
        mac.update(body);
        mac.finalize().into_bytes().into()
    }

    /// A token for `id` valid for `ttl`. `token_is_id` marks tokens given to
    /// negotiate-version-0 clients, which use the token itself as their connection id.
    pub fn issue(&self, id: &ConnectionId, ttl: Duration, token_is_id: bool) -> String {
        let expires = now_millis() + u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let mut body = Vec::with_capacity(9 + id.as_str().len() + 16);
        body.push(u8::from(token_is_id));
        body.extend_from_slice(&expires.to_be_bytes());
        body.extend_from_slice(id.as_str().as_bytes());
        let mac = self.mac(&body);
        body.extend_from_slice(&mac[..16]);
        URL_SAFE_NO_PAD.encode(body)
    }

    /// The connection id a token stands for, if the token is ours and not expired: the id
    /// inside it, or the token itself for a version-0 token.
    ///
    /// # Errors
    /// See [`TokenError`].
    pub fn verify(&self, token: &str) -> Result<ConnectionId, TokenError> {
        let raw = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| TokenError::Forged)?;
        if raw.len() < 1 + 8 + 16 + 1 {
            return Err(TokenError::Forged);
        }
        let (body, tag) = raw.split_at(raw.len() - 16);
        if !constant_time_eq(&self.mac(body)[..16], tag) {
            return Err(TokenError::Forged);
        }
        let expires = u64::from_be_bytes(body[1..9].try_into().map_err(|_| TokenError::Forged)?);
        if expires < now_millis() {
            return Err(TokenError::Expired);
        }
        let id = if body[0] == 1 {
            ConnectionId::parse(token)
        } else {
            std::str::from_utf8(&body[9..])
                .ok()
                .and_then(ConnectionId::parse)
        };
        id.ok_or(TokenError::Forged)
    }
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Whether `group` is granted by one of `patterns` (exact, or a prefix ending in `*`).
pub fn matches_any(group: &str, patterns: &[String]) -> bool {
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => group.starts_with(prefix),
        None => p == group,
    })
}

/// The answer a connect-proxy backend gives.
#[derive(Debug, Clone, Deserialize)]
struct ProxyAnswer {
    #[serde(default, alias = "userId")]
    user: Option<String>,
    #[serde(default, alias = "virtualKey", alias = "virtualKeyId")]
    vkey: Option<Value>,
    #[serde(default)]
    groups: Vec<String>,
}

/// Asks the gateway's backend who a credential is: `POST {url}` with
/// `{"credential": …, "hub": …}`. 200 with `{user?, vkey?, groups?}` lets the client in;
/// any other status refuses it; no answer within the timeout refuses it too. Answers are
/// cached briefly per (hub, credential).
#[derive(Debug)]
pub struct ConnectProxy {
    url: String,
    client: reqwest::Client,
    cache_ttl: Duration,
    cache: Mutex<HashMap<(String, String), CachedAnswer>>,
}

/// A connect-proxy answer and when it was received.
type CachedAnswer = (Instant, Result<Identity, AuthError>);

/// Most cached connect-proxy answers kept; the cache is cleared when it is full.
const PROXY_CACHE_MAX: usize = 10_000;

impl ConnectProxy {
    /// A proxy to `url` with a request timeout and a cache lifetime.
    pub fn new(url: String, timeout: Duration, cache_ttl: Duration) -> Self {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .unwrap_or_default();
        Self {
            url,
            client,
            cache_ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Who `credential` is on `hub`.
    ///
    /// # Errors
    /// [`AuthError::Refused`] or [`AuthError::BackendUnavailable`].
    pub async fn identify(&self, hub: &str, credential: &str) -> Result<Identity, AuthError> {
        let key = (hub.to_owned(), credential.to_owned());
        if let Some((at, answer)) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            if at.elapsed() < self.cache_ttl {
                return answer.clone();
            }
        }
        let answer = self.ask(hub, credential).await;
        // Outages are not cached: the next client asks again.
        if !matches!(answer, Err(AuthError::BackendUnavailable)) {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if cache.len() >= PROXY_CACHE_MAX {
                cache.clear();
            }
            cache.insert(key, (Instant::now(), answer.clone()));
        }
        answer
    }

    async fn ask(&self, hub: &str, credential: &str) -> Result<Identity, AuthError> {
        let resp = self
            .client
            .post(&self.url)
            .json(&serde_json::json!({ "credential": credential, "hub": hub }))
            .send()
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "connect proxy unreachable; refusing the connection");
                AuthError::BackendUnavailable
            })?;
        let status = resp.status();
        if status.is_server_error() {
            tracing::warn!(%status, "connect proxy failed; refusing the connection");
            return Err(AuthError::BackendUnavailable);
        }
        if !status.is_success() {
            return Err(AuthError::Refused);
        }
        let answer: ProxyAnswer = resp.json().await.map_err(|e| {
            tracing::warn!(error = %e, "connect proxy answered with something that is not an identity");
            AuthError::BackendUnavailable
        })?;
        Ok(Identity {
            user: answer.user.as_deref().and_then(|u| UserId::parse(u).ok()),
            virtual_key: match answer.vkey {
                Some(Value::String(s)) if !s.is_empty() => Some(s),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => None,
            },
            groups: answer.groups,
        })
    }
}

/// A token bucket: `rate` per second, holding at most `burst`.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    /// A full bucket.
    pub fn new(rate: f64, burst: f64) -> Self {
        Self {
            rate,
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    /// Takes one token; `Err(wait)` says how long until one is available.
    ///
    /// # Errors
    /// The bucket is empty.
    pub fn take(&mut self) -> Result<(), Duration> {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
        let id = verify(&t).unwrap().identity();
        assert_eq!(id.user.unwrap().as_str(), "u1");
        assert_eq!(id.virtual_key.as_deref(), Some("7"));
        assert_eq!(id.groups, vec!["task-1", "video-*"]);
    }

    #[test]
    fn nameid_is_the_user_when_sub_is_absent() {
        let t = sign_jwt(&json!({"nameid": "n1"}), KEY);
        assert_eq!(verify(&t).unwrap().identity().user.unwrap().as_str(), "n1");
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
        let id = ConnectionId::random();
        let t = tokens.issue(&id, Duration::from_secs(15), false);
        assert_eq!(tokens.verify(&t), Ok(id.clone()));
        let other = ConnectionTokens::derive(&[b"another-cluster"]);
        assert_eq!(other.verify(&t), Err(TokenError::Forged));
        assert_eq!(tokens.verify("AAAA"), Err(TokenError::Forged));
        let mut raw = URL_SAFE_NO_PAD.decode(&t).unwrap();
        raw[9] ^= 1;
        assert_eq!(
            tokens.verify(&URL_SAFE_NO_PAD.encode(raw)),
            Err(TokenError::Forged)
        );
        let v0 = tokens.issue(&id, Duration::from_secs(15), true);
        assert_eq!(
            tokens.verify(&v0).unwrap().as_str(),
            v0,
            "a version-0 token is its own id"
        );
        let expired = tokens.issue(&id, Duration::ZERO, false);
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(tokens.verify(&expired), Err(TokenError::Expired));
        let same = ConnectionTokens::derive(&[b"cluster-secret"]);
        assert_eq!(
            same.verify(&t),
            Ok(id),
            "every node of a cluster derives the same key"
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
