//! Negotiate connection tokens: the connection id, an expiry, what the token is bound to,
//! and a MAC, so any node of the cluster accepts the WebSocket that follows (no sticky
//! sessions) while a token is of no use on another hub or to another identity.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::Mac;
use sha2::Digest as _;

use crate::ids::ConnectionId;

use super::{constant_time_eq, HmacSha256, Identity};

/// Bytes of the binding kept in a token.
const BINDING_BYTES: usize = 16;
/// Bytes of the MAC kept in a token.
const TAG_BYTES: usize = 16;
/// Version flag, expiry, binding.
const HEADER_BYTES: usize = 1 + 8 + BINDING_BYTES;

/// Issues and checks negotiate connection tokens, so any node of the cluster can accept
/// the WebSocket that follows.
#[derive(Clone)]
pub struct ConnectionTokens {
    key: [u8; 32],
}

impl std::fmt::Debug for ConnectionTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnectionTokens(***)")
    }
}

/// What a token is bound to: a digest of the hub and of the identity the negotiating
/// credential proved. The upgrade recomputes it from its own credential; a token taken
/// from another client, user or hub does not match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBinding([u8; BINDING_BYTES]);

impl TokenBinding {
    /// The binding of a client of `hub` with `identity`.
    pub fn new(hub: &str, identity: &Identity) -> Self {
        let mut h = sha2::Sha256::new();
        let mut field = |bytes: &[u8]| {
            // Length-prefixed, so no two different identities hash the same bytes.
            h.update((bytes.len() as u64).to_be_bytes());
            h.update(bytes);
        };
        field(hub.as_bytes());
        field(
            identity
                .user
                .as_ref()
                .map_or(b"" as &[u8], |u| u.as_str().as_bytes()),
        );
        field(identity.virtual_key.as_deref().unwrap_or("").as_bytes());
        let mut groups: Vec<&str> = identity.groups.iter().map(String::as_str).collect();
        groups.sort_unstable();
        for g in groups {
            field(g.as_bytes());
        }
        let digest = h.finalize();
        let mut out = [0u8; BINDING_BYTES];
        out.copy_from_slice(&digest[..BINDING_BYTES]);
        Self(out)
    }
}

/// Why a connection token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// Not one of ours (forged or garbled).
    Forged,
    /// Past its expiry.
    Expired,
    /// Ours, but issued for another hub or identity.
    Mismatch,
}

/// A token that checked out: the connection it opens and how long it stays valid (how
/// long its use must be remembered).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// The connection id.
    pub id: ConnectionId,
    /// Time left until the token expires.
    pub remaining: Duration,
    /// Negotiated with stateful reconnect: the token also resumes its connection on a
    /// new transport, within the connection's reconnect window.
    pub stateful: bool,
}

impl ConnectionTokens {
    /// Derives the signing key from the cluster's shared secrets, so every node of a
    /// cluster derives the same one. Development mode passes a seed (the Redis prefix)
    /// instead, for the same reason.
    pub fn derive(secrets: &[&[u8]]) -> Self {
        let mut mac =
            HmacSha256::new_from_slice(b"hubcast connection token v2").expect("any key length");
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

    /// A token for `id` valid for `ttl`, bound to `binding`. `token_is_id` marks tokens
    /// given to negotiate-version-0 clients, which use the token itself as their
    /// connection id.
    pub fn issue(
        &self,
        id: &ConnectionId,
        ttl: Duration,
        token_is_id: bool,
        binding: TokenBinding,
    ) -> String {
        self.issue_with(id, ttl, token_is_id, false, binding)
    }

    /// As [`Self::issue`], for a connection that negotiated stateful reconnect when
    /// `stateful`: such a token resumes its connection after it expired (see
    /// [`Self::verify_resumable`]).
    pub fn issue_with(
        &self,
        id: &ConnectionId,
        ttl: Duration,
        token_is_id: bool,
        stateful: bool,
        binding: TokenBinding,
    ) -> String {
        let expires =
            now_millis().saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
        let mut body = Vec::with_capacity(HEADER_BYTES + id.as_str().len() + TAG_BYTES);
        body.push(u8::from(token_is_id) | (u8::from(stateful) << 1));
        body.extend_from_slice(&expires.to_be_bytes());
        body.extend_from_slice(&binding.0);
        body.extend_from_slice(id.as_str().as_bytes());
        let mac = self.mac(&body);
        body.extend_from_slice(&mac[..TAG_BYTES]);
        URL_SAFE_NO_PAD.encode(body)
    }

    /// The connection a token opens, if the token is ours, not expired and bound to
    /// `binding`: the id inside it, or the token itself for a version-0 token.
    ///
    /// # Errors
    /// See [`TokenError`].
    pub fn verify(&self, token: &str, binding: TokenBinding) -> Result<VerifiedToken, TokenError> {
        self.check(token, binding, true)
    }

    /// The connection a stateful token resumes, expired or not: it is ours and bound to
    /// `binding` (the same principal on the same hub), which is what a resume needs; the
    /// connection itself must still exist.
    ///
    /// # Errors
    /// As [`Self::verify`]; [`TokenError::Expired`] for an expired token that is not
    /// stateful.
    pub fn verify_resumable(
        &self,
        token: &str,
        binding: TokenBinding,
    ) -> Result<ConnectionId, TokenError> {
        let verified = self.check(token, binding, false)?;
        if verified.stateful {
            Ok(verified.id)
        } else {
            Err(TokenError::Expired)
        }
    }

    /// The connection a token names, expired or not, if it is ours and bound to
    /// `binding`: what a later request of an HTTP transport (a POST, a poll) carries to
    /// prove it belongs to the connection's principal; the connection must exist.
    ///
    /// # Errors
    /// [`TokenError::Forged`] or [`TokenError::Mismatch`].
    pub fn verify_bound(
        &self,
        token: &str,
        binding: TokenBinding,
    ) -> Result<ConnectionId, TokenError> {
        self.check(token, binding, false).map(|v| v.id)
    }

    fn check(
        &self,
        token: &str,
        binding: TokenBinding,
        unexpired: bool,
    ) -> Result<VerifiedToken, TokenError> {
        let raw = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| TokenError::Forged)?;
        if raw.len() < HEADER_BYTES + TAG_BYTES + 1 {
            return Err(TokenError::Forged);
        }
        let (body, tag) = raw.split_at(raw.len() - TAG_BYTES);
        if !constant_time_eq(&self.mac(body)[..TAG_BYTES], tag) {
            return Err(TokenError::Forged);
        }
        let expires = u64::from_be_bytes(body[1..9].try_into().map_err(|_| TokenError::Forged)?);
        let now = now_millis();
        if unexpired && expires < now {
            return Err(TokenError::Expired);
        }
        if !constant_time_eq(&body[9..HEADER_BYTES], &binding.0) {
            return Err(TokenError::Mismatch);
        }
        let id = if body[0] & 1 == 1 {
            ConnectionId::parse(token)
        } else {
            std::str::from_utf8(&body[HEADER_BYTES..])
                .ok()
                .and_then(ConnectionId::parse)
        };
        let id = id.ok_or(TokenError::Forged)?;
        Ok(VerifiedToken {
            id,
            remaining: Duration::from_millis(expires.saturating_sub(now)),
            stateful: body[0] & 2 == 2,
        })
    }
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
