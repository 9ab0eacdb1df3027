//! Why a session ended, and what the client is told.

use crate::protocol::{message, msgpack, HubProtocol};

/// Why a session ends. Each reason says who is at fault and whether the client should
/// reconnect, and maps to one SignalR Close record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed (Close message, WebSocket close, or the socket dropped). Nothing
    /// is sent.
    ClientClosed,
    /// The node is shutting down: `{"type":7,"allowReconnect":true}`, so clients come back
    /// to another node.
    Shutdown,
    /// Closed through the API (`DELETE …/connections/{id}`): reconnect allowed.
    ClosedByServer,
    /// Closed through the API with a reason, which the Close message carries as its
    /// error: reconnect allowed.
    ClosedWithReason(String),
    /// The client did not read fast enough and its outbound queue filled.
    SlowConsumer,
    /// Writing to the socket failed or timed out.
    WriteFailed,
    /// Nothing was received within the client timeout.
    ClientTimeout,
    /// The client broke the protocol (bad record, oversized record, unexpected message).
    Protocol(String),
    /// The connection moved to a new transport (stateful reconnect, on this node or
    /// another): the old transport ends without leaving the connection's groups.
    Resumed,
    /// Its transport was lost and no new one resumed it within the reconnect window.
    ResumeExpired,
}

impl CloseReason {
    /// The Close message to send, if any, in the connection's hub protocol.
    pub fn record(&self, protocol: HubProtocol) -> Option<Vec<u8>> {
        let (error, reconnect) = self.close_message()?;
        Some(match protocol {
            HubProtocol::Json => message::close(error.as_deref(), reconnect).into_bytes(),
            HubProtocol::MessagePack => msgpack::close(error.as_deref(), reconnect),
        })
    }

    /// The Close message's error text and whether it allows a reconnect.
    fn close_message(&self) -> Option<(Option<String>, bool)> {
        const ERR: &str = "Connection closed with an error.";
        match self {
            Self::ClientClosed | Self::WriteFailed | Self::Resumed | Self::ResumeExpired => None,
            Self::Shutdown | Self::ClosedByServer => Some((None, true)),
            Self::ClosedWithReason(reason) => Some((Some(reason.clone()), true)),
            Self::SlowConsumer => Some((
                Some("Connection closed with an error. The client did not read messages fast enough (slow consumer).".into()),
                true,
            )),
            Self::ClientTimeout => Some((Some(ERR.into()), true)),
            Self::Protocol(detail) => Some((Some(format!("{ERR} {detail}")), true)),
        }
    }

    /// A short, closed-set label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Self::ClientClosed => "client_closed",
            Self::Shutdown => "shutdown",
            Self::ClosedByServer | Self::ClosedWithReason(_) => "closed_by_api",
            Self::SlowConsumer => "slow_consumer",
            Self::WriteFailed => "write_error",
            Self::ClientTimeout => "client_timeout",
            Self::Protocol(_) => "protocol_error",
            Self::Resumed => "resumed",
            Self::ResumeExpired => "resume_expired",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shutdown_allows_reconnect_without_an_error() {
        assert_eq!(
            CloseReason::Shutdown.record(HubProtocol::Json).unwrap(),
            b"{\"allowReconnect\":true,\"type\":7}\x1e"
        );
    }

    #[test]
    fn a_slow_consumer_is_told_why_and_may_reconnect() {
        let r = String::from_utf8(CloseReason::SlowConsumer.record(HubProtocol::Json).unwrap())
            .unwrap();
        assert!(r.contains("slow consumer") && r.contains("\"allowReconnect\":true"));
        let mp = CloseReason::SlowConsumer
            .record(HubProtocol::MessagePack)
            .unwrap();
        assert_eq!(
            mp,
            msgpack::close(
                Some("Connection closed with an error. The client did not read messages fast enough (slow consumer)."),
                true
            )
        );
    }

    #[test]
    fn a_client_that_left_is_sent_nothing() {
        assert_eq!(CloseReason::ClientClosed.record(HubProtocol::Json), None);
        assert_eq!(
            CloseReason::ClientClosed.record(HubProtocol::MessagePack),
            None
        );
    }
}
