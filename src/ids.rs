//! Validated identifiers: every name that crosses a boundary is parsed once, at the edge.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore as _;

/// Longest group name accepted, in bytes (Azure allows 1024; we keep channel names short).
pub const MAX_GROUP_BYTES: usize = 256;

/// Why a name was refused. The message is shown to the caller as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("{what} must not be empty")]
    Empty {
        /// Which kind of name.
        what: &'static str,
    },
    /// The name is longer than allowed.
    #[error("{what} is {len} bytes long; at most {max} are allowed")]
    TooLong {
        /// Which kind of name.
        what: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// The name holds a control character.
    #[error("{what} must not contain control characters")]
    ControlCharacter {
        /// Which kind of name.
        what: &'static str,
    },
}

fn check_name(what: &'static str, raw: &str, max: usize) -> Result<(), NameError> {
    if raw.is_empty() {
        return Err(NameError::Empty { what });
    }
    if raw.len() > max {
        return Err(NameError::TooLong {
            what,
            len: raw.len(),
            max,
        });
    }
    if raw.chars().any(char::is_control) {
        return Err(NameError::ControlCharacter { what });
    }
    Ok(())
}

/// A group name: 1 to 256 bytes of UTF-8 without control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupName(String);

impl GroupName {
    /// Parses a group name.
    ///
    /// # Errors
    /// Empty, longer than [`MAX_GROUP_BYTES`], or holding control characters.
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        check_name("group name", raw, MAX_GROUP_BYTES)?;
        Ok(Self(raw.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A user id, as taken from a credential or an API path: same rules as a group name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(String);

impl UserId {
    /// Parses a user id.
    ///
    /// # Errors
    /// Empty, longer than 256 bytes, or holding control characters.
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        check_name("user id", raw, MAX_GROUP_BYTES)?;
        Ok(Self(raw.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A SignalR connection id: 16 random bytes, base64url without padding (22 characters),
/// as ASP.NET makes them. URL-safe because the JS client pastes ids into URLs unencoded.
/// Shared, not owned: the fan-out path clones the ids of a message's recipients.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(std::sync::Arc<str>);

impl ConnectionId {
    /// A fresh random id.
    pub fn random() -> Self {
        Self(random_token().into())
    }

    /// Accepts an id from outside; anything that is not 22 to 96 base64url characters
    /// cannot be one of ours (negotiate-version-0 clients use their signed token as the
    /// id), so it is refused here rather than looked up.
    pub fn parse(raw: &str) -> Option<Self> {
        let ok = (22..=96).contains(&raw.len())
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        ok.then(|| Self(raw.into()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// 16 random bytes as 22 base64url characters.
pub fn random_token() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A correlation id: taken from the caller when it is sane, otherwise generated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorrelationId(String);

impl CorrelationId {
    /// Longest caller-supplied correlation id kept, in bytes.
    pub const MAX_LEN: usize = 128;

    /// A fresh id (32 hex digits, the shape of a W3C trace id).
    pub fn generate() -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut bytes = [0u8; 16];
        rand::rng().fill_bytes(&mut bytes);
        let mut out = String::with_capacity(32);
        for b in bytes {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0F)]));
        }
        Self(out)
    }

    /// Accepts a caller's id: 1 to 128 visible ASCII characters.
    pub fn parse(raw: &str) -> Option<Self> {
        let ok = !raw.is_empty()
            && raw.len() <= Self::MAX_LEN
            && raw.bytes().all(|b| b.is_ascii_graphic());
        ok.then(|| Self(raw.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_group_name_is_rejected() {
        assert!(matches!(GroupName::parse(""), Err(NameError::Empty { .. })));
    }

    #[test]
    fn a_group_name_of_257_bytes_is_rejected() {
        let long = "a".repeat(257);
        assert!(matches!(
            GroupName::parse(&long),
            Err(NameError::TooLong { len: 257, .. })
        ));
        assert!(GroupName::parse(&"a".repeat(256)).is_ok());
    }

    #[test]
    fn a_group_name_with_a_control_character_is_rejected() {
        assert!(matches!(
            GroupName::parse("a\u{1e}b"),
            Err(NameError::ControlCharacter { .. })
        ));
        assert!(GroupName::parse("vkey-42 ünïcode").is_ok());
    }

    #[test]
    fn connection_ids_are_22_url_safe_characters() {
        let id = ConnectionId::random();
        assert_eq!(id.as_str().len(), 22);
        assert_eq!(ConnectionId::parse(id.as_str()), Some(id));
        assert_eq!(ConnectionId::parse("short"), None);
        assert_eq!(ConnectionId::parse("aaaaaaaaaaaaaaaaaaaa+/"), None);
    }

    #[test]
    fn correlation_ids_from_callers_must_be_visible_ascii() {
        assert!(CorrelationId::parse("req-1").is_some());
        assert!(CorrelationId::parse("with space").is_none());
        assert!(CorrelationId::parse(&"x".repeat(129)).is_none());
        assert_eq!(CorrelationId::generate().as_str().len(), 32);
    }
}
