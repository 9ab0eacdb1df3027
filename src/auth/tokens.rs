//! Negotiate connection tokens: the connection id, an expiry and a MAC, so any node of
//! the cluster accepts the WebSocket that follows (no sticky sessions).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::Mac;

use crate::ids::ConnectionId;

use super::{constant_time_eq, HmacSha256};

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
