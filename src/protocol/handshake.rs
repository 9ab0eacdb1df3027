//! The handshake: the client's first record names the hub protocol and its version.

use serde::Deserialize;

/// Highest handshake version accepted. ASP.NET accepts any version up to 2, and
/// signalrcore sends 0, so 0, 1 and 2 all pass.
pub const MAX_VERSION: i64 = 2;

/// The hub protocol a client chose: how every later message is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HubProtocol {
    /// JSON records ending in `0x1E`, in text frames.
    #[default]
    Json,
    /// Length-prefixed MessagePack arrays, in binary frames ([`super::msgpack`]).
    MessagePack,
}

impl HubProtocol {
    /// Its name in the handshake.
    pub fn name(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::MessagePack => "messagepack",
        }
    }

    /// `bytes` in the WebSocket frame this protocol uses.
    pub fn frame(self, bytes: &[u8]) -> crate::ws::Frame {
        match self {
            Self::Json => crate::ws::Frame::text(bytes),
            Self::MessagePack => crate::ws::Frame::binary(bytes),
        }
    }
}

/// The server's success reply, in a WebSocket frame of its own (see the module docs of
/// [`crate::session`] for why it is never batched with later records).
pub const SUCCESS: &str = "{}\u{1e}";

/// Why a handshake failed; the `Display` text is the `error` sent back to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The record is not a JSON object with a string `protocol` and an integer `version`.
    #[error("{0}")]
    Malformed(String),
    /// A protocol other than `json` and `messagepack`.
    #[error("The protocol '{0}' is not supported.")]
    UnsupportedProtocol(String),
    /// A version above [`MAX_VERSION`].
    #[error("The server does not support version {version} of the '{protocol}' protocol.")]
    UnsupportedVersion {
        /// The protocol named.
        protocol: String,
        /// The version asked for.
        version: i64,
    },
    /// Nothing complete arrived within the handshake timeout, or the record was too large.
    #[error("Handshake was canceled.")]
    Canceled,
}

impl HandshakeError {
    /// The error reply record, `{"error":"…"}` plus the separator.
    pub fn reply(&self) -> String {
        let mut out = serde_json::json!({ "error": self.to_string() }).to_string();
        out.push('\u{1e}');
        out
    }
}

#[derive(Deserialize)]
struct Request {
    protocol: Option<serde_json::Value>,
    version: Option<serde_json::Value>,
}

/// Parses a handshake record (without its separator) and checks protocol and version.
///
/// # Errors
/// See [`HandshakeError`].
pub fn parse(record: &[u8]) -> Result<(HubProtocol, u32), HandshakeError> {
    let req: Request = serde_json::from_slice(record)
        .map_err(|e| HandshakeError::Malformed(format!("Invalid handshake request: {e}")))?;
    let protocol = match req.protocol {
        Some(serde_json::Value::String(p)) => p,
        Some(_) => {
            return Err(HandshakeError::Malformed(
                "Expected 'protocol' to be of type String.".into(),
            ))
        }
        None => {
            return Err(HandshakeError::Malformed(
                "Missing required property 'protocol'.".into(),
            ))
        }
    };
    let version = match req.version {
        Some(serde_json::Value::Number(n)) => n.as_i64().ok_or_else(|| {
            HandshakeError::Malformed("Expected 'version' to be of type Integer.".into())
        })?,
        Some(_) => {
            return Err(HandshakeError::Malformed(
                "Expected 'version' to be of type Integer.".into(),
            ))
        }
        None => {
            return Err(HandshakeError::Malformed(
                "Missing required property 'version'.".into(),
            ))
        }
    };
    let chosen = match protocol.as_str() {
        "json" => HubProtocol::Json,
        "messagepack" => HubProtocol::MessagePack,
        _ => return Err(HandshakeError::UnsupportedProtocol(protocol)),
    };
    if !(0..=MAX_VERSION).contains(&version) {
        return Err(HandshakeError::UnsupportedVersion { protocol, version });
    }
    // Bounded by MAX_VERSION above.
    Ok((chosen, version as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_js_client_handshake_is_accepted() {
        assert_eq!(
            parse(br#"{"protocol":"json","version":1}"#),
            Ok((HubProtocol::Json, 1))
        );
    }

    #[test]
    fn signalrcore_version_zero_with_spaces_is_accepted() {
        assert_eq!(
            parse(br#"{"protocol": "json", "version": 0}"#),
            Ok((HubProtocol::Json, 0))
        );
    }

    #[test]
    fn version_two_is_accepted_and_three_is_not() {
        assert_eq!(
            parse(br#"{"version":2,"protocol":"json"}"#),
            Ok((HubProtocol::Json, 2))
        );
        let err = parse(br#"{"protocol":"json","version":3}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "The server does not support version 3 of the 'json' protocol."
        );
    }

    #[test]
    fn messagepack_is_accepted_and_others_are_refused_with_asp_net_text() {
        assert_eq!(
            parse(br#"{"protocol":"messagepack","version":1}"#),
            Ok((HubProtocol::MessagePack, 1))
        );
        let err = parse(br#"{"protocol":"blueprotocol","version":1}"#).unwrap_err();
        assert_eq!(
            err.reply(),
            "{\"error\":\"The protocol 'blueprotocol' is not supported.\"}\u{1e}"
        );
    }

    #[test]
    fn missing_fields_and_garbage_are_malformed() {
        assert!(matches!(
            parse(br#"{"protocol":"json"}"#),
            Err(HandshakeError::Malformed(_))
        ));
        assert!(matches!(
            parse(br#"{"version":1}"#),
            Err(HandshakeError::Malformed(_))
        ));
        assert!(matches!(
            parse(b"not json"),
            Err(HandshakeError::Malformed(_))
        ));
        assert!(matches!(
            parse(br#"{"protocol":1,"version":1}"#),
            Err(HandshakeError::Malformed(_))
        ));
        assert!(matches!(
            parse(br#"{"protocol":"json","version":"1"}"#),
            Err(HandshakeError::Malformed(_))
        ));
    }

    #[test]
    fn extra_keys_are_ignored() {
        assert_eq!(
            parse(br#"{"protocol":"json","version":1,"x":[1]}"#),
            Ok((HubProtocol::Json, 1))
        );
    }
}
