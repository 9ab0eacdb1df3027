//! The opening handshake (RFC 6455 §4.2): which requests may upgrade, and the 101 answer.

use axum::http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};
use base64::Engine as _;
use sha2::Digest as _;

/// The GUID every server appends to the client's key (RFC 6455 §1.3).
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Why a request cannot become a WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UpgradeError {
    /// Not a GET.
    #[error("a WebSocket upgrade must be a GET")]
    Method,
    /// No `Connection: upgrade` with `Upgrade: websocket`.
    #[error("not a WebSocket upgrade request")]
    NotUpgrade,
    /// A version other than 13.
    #[error("unsupported Sec-WebSocket-Version (13 is served)")]
    Version,
    /// No usable `Sec-WebSocket-Key`.
    #[error("missing or invalid Sec-WebSocket-Key")]
    Key,
}

/// Checks an upgrade request; returns the `Sec-WebSocket-Accept` value to answer with.
///
/// # Errors
/// [`UpgradeError`] naming the first thing wrong.
pub fn check(method: &Method, headers: &HeaderMap) -> Result<HeaderValue, UpgradeError> {
    if method != Method::GET {
        return Err(UpgradeError::Method);
    }
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|part| part.trim().eq_ignore_ascii_case(token))
            })
        })
    };
    if !has_token(header::CONNECTION, "upgrade") || !has_token(header::UPGRADE, "websocket") {
        return Err(UpgradeError::NotUpgrade);
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err(UpgradeError::Version);
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|k| {
            // 16 random bytes, base64: 24 characters.
            base64::engine::general_purpose::STANDARD
                .decode(k.as_bytes())
                .is_ok_and(|raw| raw.len() == 16)
        })
        .ok_or(UpgradeError::Key)?;
    Ok(accept(key.as_bytes()))
}

/// `Sec-WebSocket-Accept` for a client key.
pub fn accept(key: &[u8]) -> HeaderValue {
    let mut sha = sha1::Sha1::new();
    sha.update(key);
    sha.update(ACCEPT_GUID);
    let value = base64::engine::general_purpose::STANDARD.encode(sha.finalize());
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The `101 Switching Protocols` answer.
pub fn switching<B: Default>(accept: HeaderValue) -> Response<B> {
    let mut r = Response::new(B::default());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        h.insert(
            header::SEC_WEBSOCKET_KEY,
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        h
    }

    #[test]
    fn the_rfc_example_key_gets_the_rfc_answer() {
        assert_eq!(
            check(&Method::GET, &request()).unwrap(),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn requests_that_cannot_upgrade_say_why() {
        assert_eq!(check(&Method::POST, &request()), Err(UpgradeError::Method));
        let mut h = request();
        h.remove(header::UPGRADE);
        assert_eq!(check(&Method::GET, &h), Err(UpgradeError::NotUpgrade));
        let mut h = request();
        h.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("8"));
        assert_eq!(check(&Method::GET, &h), Err(UpgradeError::Version));
        let mut h = request();
        h.insert(header::SEC_WEBSOCKET_KEY, HeaderValue::from_static("short"));
        assert_eq!(check(&Method::GET, &h), Err(UpgradeError::Key));
    }
}
