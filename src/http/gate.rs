//! The gate: every check a request passes before it may touch the node — publisher
//! credentials and rate limits, client credentials per hub, browser origins, handshake
//! admission, single use of connection tokens, and the per-user connection limit.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use axum::http::{header, HeaderMap, Uri};

use crate::auth::{
    constant_time_eq, verify_jwt, AdmissionRefusal, AuthError, AuthMode, ConnectProxy,
    ConnectionTokens, HandshakeAdmission, HandshakeSlot, Identity, ProxySettings, RateLimiter,
    UsedTokens,
};
use crate::config::{Limits, Security};
use crate::connection::slot::{UserSlot, UserSlots};
use crate::hub::Hub;

/// Which publisher a request authenticated as: the index of the access key, for the
/// per-key rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Publisher(usize);

/// Whose idempotency keys a request's are: a digest of the publisher's access key (the
/// same after a rotation reorders the keys), or `open` in development mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublisherScope(pub String);

/// The checks, with their state.
#[derive(Debug)]
pub struct Gate {
    security: Security,
    limits: Limits,
    proxy: Option<ConnectProxy>,
    /// Signs and checks negotiate connection tokens.
    pub tokens: ConnectionTokens,
    /// Connection tokens already used on this node.
    pub used_tokens: UsedTokens,
    publish_buckets: Mutex<HashMap<Publisher, RateLimiter>>,
    handshakes: HandshakeAdmission,
    users: UserSlots,
}

/// The credential a request carries: the `access_token` query parameter (browsers cannot
/// set headers on WebSockets), `Authorization: Bearer`, `X-Master-Key`, `X-API-Key`, or
/// the `api_key` query parameter — the order the gateway's own clients rely on.
pub fn credential(query: &[(String, String)], headers: &HeaderMap) -> Option<String> {
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, v)| k.eq_ignore_ascii_case(name) && !v.is_empty())
            .map(|(_, v)| v.clone())
    };
    if let Some(t) = param("access_token") {
        return Some(t);
    }
    if let Some(t) = bearer(headers) {
        return Some(t);
    }
    for h in ["x-master-key", "x-api-key"] {
        if let Some(v) = headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
        {
            return Some(v.to_owned());
        }
    }
    param("api_key")
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_owned())
}

/// Whether a JWT `aud` names this request: the request URL without query and trailing
/// slash. The scheme is not compared, since TLS usually ends at a proxy in front. The
/// host is `X-Forwarded-Host` only when `trust_forwarded` (the node is behind a proxy
/// that sets it); otherwise anyone could name the host a token was issued for.
fn audience_is_request(aud: &str, headers: &HeaderMap, uri: &Uri, trust_forwarded: bool) -> bool {
    let aud = aud
        .split(['?', '#'])
        .next()
        .unwrap_or("")
        .trim_end_matches('/');
    let Some((_, rest)) = aud.split_once("://") else {
        return false;
    };
    let (aud_host, aud_path) = rest
        .find('/')
        .map_or((rest, ""), |i| (&rest[..i], &rest[i..]));
    let forwarded = trust_forwarded
        .then(|| headers.get("x-forwarded-host"))
        .flatten();
    let host = forwarded
        .or_else(|| headers.get(header::HOST))
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .unwrap_or("");
    aud_host.eq_ignore_ascii_case(host) && aud_path == uri.path().trim_end_matches('/')
}

impl Gate {
    /// The gate for this configuration.
    pub fn new(security: Security, limits: Limits) -> Self {
        let mut secrets: Vec<&[u8]> = security.access_keys.iter().map(|k| k.expose()).collect();
        if let Some(k) = &security.token_key {
            secrets.push(k.expose());
        }
        if let Some(k) = &security.master_key {
            secrets.push(k.expose());
        }
        // Development mode has no key: the seed (the Redis prefix) stands in, so the nodes
        // of a development cluster accept each other's tokens behind any balancer.
        let seed = format!("development:{}", security.development_token_seed);
        if secrets.is_empty() {
            secrets.push(seed.as_bytes());
        }
        let tokens = ConnectionTokens::derive(&secrets);
        let proxy = security.connect_proxy_url.clone().map(|url| {
            ConnectProxy::new(ProxySettings {
                url,
                timeout: security.connect_proxy_timeout,
                answer_ttl: security.connect_proxy_cache,
                refusal_ttl: security.connect_proxy_refusal_cache,
                max_credential_bytes: security.connect_proxy_max_credential_bytes,
                cache_entries: security.connect_proxy_cache_entries,
                cache_bytes: security.connect_proxy_cache_bytes,
                max_concurrent: security.connect_proxy_max_concurrent,
            })
        });
        Self {
            handshakes: HandshakeAdmission::new(
                limits.max_concurrent_handshakes,
                security.admission.max_pending_handshakes_per_credential,
                security.admission.max_pending_handshakes_per_source,
            ),
            users: UserSlots::new(limits.max_connections_per_user),
            security,
            limits,
            proxy,
            tokens,
            used_tokens: UsedTokens::default(),
            publish_buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The key client tokens are signed with, if this node has one.
    pub fn token_key(&self) -> Option<&[u8]> {
        self.security
            .token_key
            .as_ref()
            .map(crate::auth::Secret::expose)
    }

    /// Whether this node runs without credentials (development mode).
    pub fn insecure(&self) -> bool {
        self.security.insecure
    }

    /// Checks a publish API request's credential.
    ///
    /// # Errors
    /// Missing, invalid, expired, or for another URL.
    pub fn authenticate_publisher(
        &self,
        headers: &HeaderMap,
        uri: &Uri,
    ) -> Result<Publisher, AuthError> {
        if self.security.insecure {
            return Ok(Publisher(usize::MAX));
        }
        let token = bearer(headers).ok_or(AuthError::MissingBearer)?;
        for (i, key) in self.security.access_keys.iter().enumerate() {
            if constant_time_eq(token.as_bytes(), key.expose()) {
                return Ok(Publisher(i));
            }
        }
        if token.matches('.').count() != 2 {
            return Err(AuthError::Invalid);
        }
        // A JWT: find which key signed it, so rate limits follow the key.
        for (i, key) in self.security.access_keys.iter().enumerate() {
            match verify_jwt(&token, &[key.expose()], true, true, |aud| {
                audience_is_request(aud, headers, uri, self.security.trust_forwarded_headers)
            }) {
                Ok(_) => return Ok(Publisher(i)),
                Err(AuthError::Invalid) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(AuthError::Invalid)
    }

    /// The idempotency scope of a publisher.
    pub fn publisher_scope(&self, publisher: Publisher) -> PublisherScope {
        use sha2::Digest as _;
        match self.security.access_keys.get(publisher.0) {
            Some(key) => {
                let digest = sha2::Sha256::digest(key.expose());
                PublisherScope(digest[..8].iter().map(|b| format!("{b:02x}")).collect())
            }
            None => PublisherScope("open".to_owned()),
        }
    }

    /// Takes one publish from a publisher's budget; `Err(wait)` when it is spent.
    ///
    /// # Errors
    /// How long until the next publish is allowed.
    pub fn take_publish(&self, publisher: Publisher) -> Result<(), Duration> {
        let rate = f64::from(self.limits.publishes_per_key_per_second);
        self.publish_buckets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(publisher)
            .or_insert_with(|| RateLimiter::new(rate, rate))
            .take()
    }

    /// Authenticates a client of `hub`.
    ///
    /// # Errors
    /// See [`AuthError`].
    pub async fn authenticate_client(
        &self,
        hub: &Hub,
        credential: Option<&str>,
    ) -> Result<Identity, AuthError> {
        match hub.spec.auth {
            AuthMode::None => Ok(Identity::default()),
            AuthMode::MasterKey => {
                let key = self
                    .security
                    .master_key
                    .as_ref()
                    .ok_or(AuthError::Invalid)?;
                let presented = credential.ok_or(AuthError::Missing)?;
                if constant_time_eq(presented.as_bytes(), key.expose()) {
                    Ok(Identity::default())
                } else {
                    Err(AuthError::Invalid)
                }
            }
            AuthMode::Token => {
                let key = self.security.token_key.as_ref().ok_or(AuthError::Invalid)?;
                let token = credential.ok_or(AuthError::Missing)?;
                let claims = verify_jwt(token, &[key.expose()], true, false, |aud| {
                    aud == hub.name() || aud.trim_end_matches('/').ends_with(hub.spec.path.as_str())
                })?;
                claims.identity()
            }
            AuthMode::ConnectProxy => {
                let proxy = self.proxy.as_ref().ok_or(AuthError::BackendUnavailable)?;
                let presented = credential.ok_or(AuthError::Missing)?;
                proxy.identify(hub.name(), presented).await
            }
        }
    }

    /// Whether a browser origin may connect: no `Origin` (not a browser), same origin as
    /// the `Host` it asked for, or listed. Development mode allows every origin.
    pub fn origin_allowed(&self, headers: &HeaderMap) -> bool {
        let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
            return true;
        };
        if self.security.insecure {
            return true;
        }
        let origin = origin.trim_end_matches('/');
        let same_host = origin
            .split_once("://")
            .zip(headers.get(header::HOST).and_then(|h| h.to_str().ok()))
            .is_some_and(|((_, o), host)| o.eq_ignore_ascii_case(host));
        same_host
            || self
                .security
                .allowed_origins
                .iter()
                .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin))
    }

    /// A handshake slot for a verified `credential` from `source`.
    ///
    /// # Errors
    /// The limit that is reached.
    pub fn admit_handshake(
        &self,
        credential: Option<&str>,
        source: Option<IpAddr>,
    ) -> Result<HandshakeSlot, AdmissionRefusal> {
        self.handshakes.admit(credential, source)
    }

    /// Where a request comes from: the peer address, or the last `X-Forwarded-For` hop
    /// when forwarded headers are trusted (the peer is then the proxy).
    pub fn source(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        if self.security.trust_forwarded_headers {
            let forwarded = headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .next_back()
                .and_then(|ip| ip.trim().parse().ok());
            if forwarded.is_some() {
                return forwarded;
            }
        }
        peer.map(|p| p.ip())
    }

    /// Cached connect-proxy answers and their estimated bytes; `None` without a proxy.
    pub fn proxy_cache(&self) -> Option<(usize, usize)> {
        self.proxy.as_ref().map(ConnectProxy::cached)
    }

    /// One of `user`'s connection slots; `None` when the user holds the most allowed.
    pub fn user_slot(&self, user: &str) -> Option<UserSlot> {
        self.users.take(user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_audience_is_the_request_url_without_scheme_query_or_trailing_slash() {
        let h = headers(&[("host", "hub.local:8080")]);
        let uri: Uri = "/api/v1/hubs/spend/groups/g?x=1".parse().unwrap();
        let ok = |aud: &str, h: &HeaderMap, trust: bool| audience_is_request(aud, h, &uri, trust);
        assert!(ok(
            "https://hub.local:8080/api/v1/hubs/spend/groups/g/",
            &h,
            false
        ));
        assert!(ok(
            "http://HUB.local:8080/api/v1/hubs/spend/groups/g?y",
            &h,
            false
        ));
        assert!(!ok(
            "http://hub.local:8080/api/v1/hubs/spend/groups/other",
            &h,
            false
        ));
        assert!(!ok(
            "http://evil:8080/api/v1/hubs/spend/groups/g",
            &h,
            false
        ));
        assert!(!ok("/api/v1/hubs/spend/groups/g", &h, false));
        let forwarded = headers(&[("host", "hub.local:8080"), ("x-forwarded-host", "evil")]);
        let evil = "http://evil/api/v1/hubs/spend/groups/g";
        assert!(
            !ok(evil, &forwarded, false),
            "X-Forwarded-Host is anyone's to send unless a proxy is trusted"
        );
        assert!(ok(evil, &forwarded, true));
        assert!(ok(
            "http://hub.local:8080/api/v1/hubs/spend/groups/g",
            &forwarded,
            false
        ));
    }

    #[test]
    fn the_source_is_the_peer_unless_forwarded_headers_are_trusted() {
        let peer: SocketAddr = "10.0.0.9:5000".parse().unwrap();
        let h = headers(&[("x-forwarded-for", "1.2.3.4, 5.6.7.8")]);
        let gate = Gate::new(Security::default(), Limits::default());
        assert_eq!(gate.source(Some(peer), &h), Some(peer.ip()));
        let trusting = Gate::new(
            Security {
                trust_forwarded_headers: true,
                ..Security::default()
            },
            Limits::default(),
        );
        assert_eq!(
            trusting.source(Some(peer), &h),
            Some("5.6.7.8".parse().unwrap()),
            "the hop the trusted proxy saw"
        );
        assert_eq!(
            trusting.source(Some(peer), &HeaderMap::new()),
            Some(peer.ip())
        );
    }

    #[test]
    fn development_nodes_with_one_prefix_accept_each_others_tokens() {
        use crate::auth::TokenBinding;
        let dev = |prefix: &str| {
            Gate::new(
                Security {
                    insecure: true,
                    development_token_seed: prefix.to_owned(),
                    ..Security::default()
                },
                Limits::default(),
            )
        };
        let b = TokenBinding::new("spend", &Identity::default());
        let id = crate::ids::ConnectionId::random();
        let t = dev("hubcast")
            .tokens
            .issue(&id, Duration::from_secs(15), false, b);
        assert_eq!(dev("hubcast").tokens.verify(&t, b).unwrap().id, id);
        assert!(dev("other").tokens.verify(&t, b).is_err());
    }

    #[test]
    fn credentials_are_read_in_the_gateways_order() {
        let q = vec![("access_token".to_owned(), "q".to_owned())];
        let h = headers(&[("authorization", "Bearer b"), ("x-master-key", "m")]);
        assert_eq!(credential(&q, &h).as_deref(), Some("q"));
        assert_eq!(credential(&[], &h).as_deref(), Some("b"));
        assert_eq!(
            credential(&[], &headers(&[("x-master-key", "m")])).as_deref(),
            Some("m")
        );
        assert_eq!(credential(&[], &HeaderMap::new()), None);
    }

    #[test]
    fn origins_are_same_host_or_listed() {
        let security = Security {
            allowed_origins: vec!["https://app.example.com".into()],
            ..Security::default()
        };
        let gate = Gate::new(security, Limits::default());
        assert!(gate.origin_allowed(&headers(&[])));
        assert!(gate.origin_allowed(&headers(&[
            ("origin", "https://app.example.com"),
            ("host", "hub")
        ])));
        assert!(gate.origin_allowed(&headers(&[
            ("origin", "http://hub:8080"),
            ("host", "hub:8080")
        ])));
        assert!(!gate.origin_allowed(&headers(&[
            ("origin", "https://evil.example"),
            ("host", "hub")
        ])));
    }

    #[test]
    fn user_slots_are_limited_and_released() {
        let limits = Limits {
            max_connections_per_user: 2,
            ..Limits::default()
        };
        let gate = Gate::new(Security::default(), limits);
        let a = gate.user_slot("u").unwrap();
        let _b = gate.user_slot("u").unwrap();
        assert!(gate.user_slot("u").is_none());
        drop(a);
        assert!(gate.user_slot("u").is_some());
    }
}
