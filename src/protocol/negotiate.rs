//! The negotiate reply (`POST {hub}/negotiate`), versions 0 and 1.

use serde::Serialize;

/// Highest negotiate version spoken (ASP.NET's maximum).
pub const MAX_VERSION: u32 = 1;

/// What the client asked for in `negotiateVersion`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionRequest {
    /// The parameter is absent: version 0 (signalrcore).
    Absent,
    /// An integer.
    Number(i64),
    /// Not an integer.
    Invalid,
}

impl VersionRequest {
    /// Reads the raw query value.
    pub fn from_query(raw: Option<&str>) -> Self {
        match raw {
            None => Self::Absent,
            Some(v) => v.parse().map(Self::Number).unwrap_or(Self::Invalid),
        }
    }

    /// The version to answer with, or the error text (sent as `{"error": …}`, status 200,
    /// as ASP.NET does).
    pub fn select(self) -> Result<u32, String> {
        match self {
            Self::Absent => Ok(0),
            Self::Number(n) if n < 0 => Err(format!(
                "The client requested version '{n}', but the server does not support this version."
            )),
            Self::Number(n) => Ok(u32::try_from(n).unwrap_or(MAX_VERSION).min(MAX_VERSION)),
            Self::Invalid => Err("The client requested an invalid protocol version.".into()),
        }
    }
}

/// A transport and its formats.
#[derive(Debug, Serialize)]
pub struct Transport {
    transport: &'static str,
    #[serde(rename = "transferFormats")]
    transfer_formats: &'static [&'static str],
}

/// What the server offers, in the order clients try them: WebSockets, then Server-Sent
/// Events (text only: an event stream carries text), then long polling.
const TRANSPORTS: [Transport; 3] = [
    Transport {
        transport: "WebSockets",
        transfer_formats: &["Text", "Binary"],
    },
    Transport {
        transport: "ServerSentEvents",
        transfer_formats: &["Text"],
    },
    Transport {
        transport: "LongPolling",
        transfer_formats: &["Text", "Binary"],
    },
];

/// The successful negotiate reply.
#[derive(Debug, Serialize)]
pub struct NegotiateResponse {
    #[serde(rename = "negotiateVersion")]
    negotiate_version: u32,
    #[serde(rename = "connectionId")]
    connection_id: String,
    /// Only written for version ≥ 1; in version 0 the connection id doubles as the token.
    #[serde(rename = "connectionToken", skip_serializing_if = "Option::is_none")]
    connection_token: Option<String>,
    #[serde(rename = "availableTransports")]
    available_transports: &'static [Transport; 3],
    /// Written only when true, as ASP.NET does: a client that did not ask fails on it.
    #[serde(
        rename = "useStatefulReconnect",
        skip_serializing_if = "std::ops::Not::not"
    )]
    use_stateful_reconnect: bool,
}

impl NegotiateResponse {
    /// Builds the reply.
    pub fn new(version: u32, connection_id: String, connection_token: String) -> Self {
        Self {
            negotiate_version: version,
            connection_id,
            connection_token: (version >= 1).then_some(connection_token),
            available_transports: &TRANSPORTS,
            use_stateful_reconnect: false,
        }
    }

    /// Offers stateful reconnect (the client asked, and the server allows it).
    pub fn with_stateful_reconnect(mut self) -> Self {
        self.use_stateful_reconnect = true;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn versions_are_selected_like_asp_net() {
        assert_eq!(VersionRequest::from_query(None).select(), Ok(0));
        assert_eq!(VersionRequest::from_query(Some("1")).select(), Ok(1));
        assert_eq!(VersionRequest::from_query(Some("7")).select(), Ok(1));
        assert!(VersionRequest::from_query(Some("-1")).select().is_err());
        assert!(VersionRequest::from_query(Some("one")).select().is_err());
    }

    #[test]
    fn version_zero_has_no_connection_token() {
        let v0 =
            serde_json::to_value(NegotiateResponse::new(0, "id".into(), "tok".into())).unwrap();
        assert_eq!(
            v0,
            json!({"negotiateVersion":0,"connectionId":"id","availableTransports":[
                {"transport":"WebSockets","transferFormats":["Text","Binary"]},
                {"transport":"ServerSentEvents","transferFormats":["Text"]},
                {"transport":"LongPolling","transferFormats":["Text","Binary"]}
            ]})
        );
        let v1 =
            serde_json::to_value(NegotiateResponse::new(1, "id".into(), "tok".into())).unwrap();
        assert_eq!(v1["connectionToken"], "tok");
        assert_eq!(v1["negotiateVersion"], 1);
    }
}
