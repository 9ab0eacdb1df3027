//! The backplane envelope: what travels on a channel between nodes.
//!
//! A small binary header (version, kind, publish time, correlation id, target connection,
//! delivery position) followed by the SignalR record already encoded for clients, so a
//! receiving node never parses JSON on the fan-out path.
//!
//! ```text
//! [0]      version (2)
//! [1]      kind
//! [2..10]  published at, microseconds since the Unix epoch, big-endian
//! [10]     correlation id length n, then n bytes
//! [..]     connection id length m, then m bytes (0 when the kind targets a channel)
//! [..]     position length p, then p ASCII bytes `{epoch}:{seq}` (0: no position)
//! [..]     body: the client record (Deliver, Send) or the group channel (Join, Leave);
//!          for DeliverExcept and CloseMembers, a list of connection ids first
//! ```
//!
//! The position is the channel's delivery position, assigned by the backplane in the same
//! step as the publish: the part before it (the [`Envelope::head`]) and the body are built
//! here, and the backplane puts the position between them (Redis does it in Lua), so the
//! message is still encoded once.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut as _, Bytes, BytesMut};

mod id_list;
pub use id_list::{split_ids, with_ids, MAX_LISTED_IDS};
mod user_group;
pub use user_group::{UserGroupChange, UserInGroupQuery, UserInGroupReply};

const VERSION: u8 = 2;

/// What an envelope asks the receiving node to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Write the body to every local member of the channel it arrived on.
    Deliver = 1,
    /// Write the body to one connection this node owns.
    Send = 2,
    /// Add a connection this node owns to the group channel in the body.
    Join = 3,
    /// Remove a connection this node owns from the group channel in the body.
    Leave = 4,
    /// Close a connection this node owns (with allowReconnect).
    Close = 5,
    /// A readiness probe a node sends itself; the body is its nonce.
    Probe = 6,
    /// The answer to a [`Kind::Join`] or [`Kind::Leave`]; the body is an [`Ack`].
    Ack = 7,
    /// A publisher's word that a channel's previous stream ended at least at the position
    /// in the body (`{epoch}:{seq}`): sent when its publish starts a new epoch (Redis lost
    /// its data), so receivers can count what the lost stream held that they never got.
    EpochEnd = 8,
    /// Hand a stateful connection this node owns over to the node in the body (its
    /// client resumed there); the body is a [`HandOffRequest`].
    HandOff = 9,
    /// The answer to a [`Kind::HandOff`]; the body is a [`HandOffReply`].
    HandedOff = 10,
    /// A request of an HTTP transport (Server-Sent Events, long polling) that reached
    /// another node, for the node holding the connection; the body is a
    /// [`TransportRequest`].
    Transport = 11,
    /// The answer to a [`Kind::Transport`]; the body is a [`TransportReply`].
    TransportReply = 12,
    /// As [`Kind::Deliver`], except to the connections listed first in the body (see
    /// [`with_ids`]), then the client record.
    DeliverExcept = 13,
    /// Close every local member of the channel it arrived on except the connections
    /// listed first in the body (see [`with_ids`]); the rest of the body is the reason
    /// (UTF-8, may be empty).
    CloseMembers = 14,
    /// Add or remove the local connections of the user whose channel it arrived on to or
    /// from a group (or all groups); the body is a [`UserGroupChange`].
    UserGroup = 15,
    /// Whether any local connection of the user whose channel it arrived on is in a
    /// group; the body is a [`UserInGroupQuery`], answered with a
    /// [`Kind::UserInGroupReply`].
    UserInGroup = 16,
    /// The answer to a [`Kind::UserInGroup`]; the body is a [`UserInGroupReply`].
    UserInGroupReply = 17,
}

/// Body of [`Kind::Transport`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TransportRequest {
    /// Node waiting for the [`TransportReply`].
    pub reply_to: String,
    /// Matches the reply to the request.
    pub nonce: u64,
    /// Bytes the client sent (a POST), or `None` for a poll.
    pub data: Option<Vec<u8>>,
}

/// Body of [`Kind::TransportReply`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TransportReply {
    /// The request's nonce.
    pub nonce: u64,
    /// What a poll takes (empty when nothing came in time); `None` when the connection
    /// is gone.
    pub data: Option<Vec<u8>>,
}

/// Body of [`Kind::HandOff`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HandOffRequest {
    /// Hub API name.
    pub hub: String,
    /// Node waiting for the [`HandOffReply`], which takes the connection over.
    pub reply_to: String,
    /// Matches the reply to the request.
    pub nonce: u64,
}

/// Body of [`Kind::HandedOff`]: what moves with the connection, or `None` when the
/// owner could not hand it over (not stateful, unknown, already ending).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HandOffReply {
    /// The request's nonce.
    pub nonce: u64,
    /// The connection's state.
    pub moved: Option<Moved>,
}

/// A stateful connection's state, as it moves between nodes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Moved {
    /// `json` or `messagepack`.
    pub protocol: String,
    /// Channels it is a member of.
    pub channels: Vec<String>,
    /// The id its next trackable message gets.
    pub next: u64,
    /// Trackable messages processed from the client.
    pub received: u64,
    /// Unacknowledged frames, oldest first: (first id, messages, the WebSocket frame).
    pub unacked: Vec<(u64, u32, Vec<u8>)>,
    /// The last position delivered per channel: (channel, epoch, sequence).
    pub positions: Vec<(String, Vec<u8>, u64)>,
    /// When it was handed off (µs since the epoch).
    pub at_micros: u64,
}

/// Body of [`Kind::Join`] and [`Kind::Leave`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GroupChange {
    /// Hub API name.
    pub hub: String,
    /// Group name (empty when `all`).
    pub group: String,
    /// A [`Kind::Leave`] of every group the connection is in.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all: bool,
    /// Node waiting for the [`Ack`].
    pub reply_to: String,
    /// Matches the ack to the request.
    pub nonce: u64,
}

/// Body of [`Kind::Ack`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Ack {
    /// The request's nonce.
    pub nonce: u64,
    /// What happened.
    pub outcome: AckOutcome,
}

/// Outcome of a remote group change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum AckOutcome {
    /// Applied (or nothing to do).
    Done,
    /// The owner no longer holds the connection.
    UnknownConnection,
    /// The connection is in as many groups as allowed.
    TooManyGroups(usize),
}

impl Kind {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => Self::Deliver,
            2 => Self::Send,
            3 => Self::Join,
            4 => Self::Leave,
            5 => Self::Close,
            6 => Self::Probe,
            7 => Self::Ack,
            8 => Self::EpochEnd,
            9 => Self::HandOff,
            10 => Self::HandedOff,
            11 => Self::Transport,
            12 => Self::TransportReply,
            13 => Self::DeliverExcept,
            14 => Self::CloseMembers,
            15 => Self::UserGroup,
            16 => Self::UserInGroup,
            17 => Self::UserInGroupReply,
            _ => return None,
        })
    }
}

/// A message's place in its channel's stream: the stream's epoch (a new one whenever the
/// backplane starts the channel's sequence again, e.g. after Redis lost its data) and the
/// sequence number in it, 1, 2, 3… without holes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The stream's epoch.
    pub epoch: Bytes,
    /// The message's number in the stream.
    pub seq: u64,
}

impl Position {
    /// Parses `{epoch}:{seq}`.
    pub fn parse(raw: &Bytes) -> Option<Self> {
        let colon = raw.iter().rposition(|b| *b == b':')?;
        let digits = &raw[colon + 1..];
        // Canonical only (no leading zero, no 0), so a position renders back to its bytes.
        if colon == 0 || digits.first().is_none_or(|d| *d == b'0') {
            return None;
        }
        let seq = digits.iter().try_fold(0u64, |n, d| {
            if !d.is_ascii_digit() {
                return None;
            }
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })?;
        Some(Self {
            epoch: raw.slice(..colon),
            seq,
        })
    }

    /// `{epoch}:{seq}`, as it travels.
    pub fn render(epoch: &[u8], seq: u64) -> Vec<u8> {
        let mut out = epoch.to_vec();
        out.push(b':');
        out.extend_from_slice(seq.to_string().as_bytes());
        out
    }
}

/// A decoded envelope; the byte fields borrow the payload without copying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// What to do.
    pub kind: Kind,
    /// When the publishing node accepted the message.
    pub published_at_micros: u64,
    /// Correlation id of the publish.
    pub correlation: Bytes,
    /// The target connection (empty for channel deliveries).
    pub connection: Bytes,
    /// The delivery position, for messages published on a positioned channel.
    pub position: Option<Position>,
    /// The client record or group channel.
    pub body: Bytes,
}

/// Why a payload is not an envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// Shorter than its header says.
    #[error("envelope truncated")]
    Truncated,
    /// A version this node does not speak.
    #[error("unknown envelope version {0}")]
    Version(u8),
    /// An unknown kind.
    #[error("unknown envelope kind {0}")]
    Kind(u8),
    /// A position that is not `{epoch}:{seq}`.
    #[error("malformed delivery position")]
    Position,
}

/// Microseconds since the Unix epoch, now.
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

impl Envelope {
    /// For a delivery: the connections it skips and the client record; `None` when the
    /// exclusion list is truncated.
    pub fn excluded_and_record(&self) -> Option<(Vec<Bytes>, Bytes)> {
        match self.kind {
            Kind::DeliverExcept => split_ids(&self.body),
            _ => Some((Vec::new(), self.body.clone())),
        }
    }

    /// Encodes an envelope without a position. Ids longer than 255 bytes are cut (ours
    /// never are).
    pub fn encode(
        kind: Kind,
        published_at_micros: u64,
        correlation: &[u8],
        connection: &[u8],
        body: &[u8],
    ) -> Bytes {
        Self::assemble(
            &Self::head(kind, published_at_micros, correlation, connection),
            b"",
            body,
        )
    }

    /// Everything before the position: what a positioned publish hands the backplane
    /// together with the body.
    pub fn head(
        kind: Kind,
        published_at_micros: u64,
        correlation: &[u8],
        connection: &[u8],
    ) -> Bytes {
        let correlation = &correlation[..correlation.len().min(255)];
        let connection = &connection[..connection.len().min(255)];
        let mut out = BytesMut::with_capacity(12 + correlation.len() + connection.len());
        out.put_u8(VERSION);
        out.put_u8(kind as u8);
        out.put_u64(published_at_micros);
        out.put_u8(correlation.len() as u8);
        out.put_slice(correlation);
        out.put_u8(connection.len() as u8);
        out.put_slice(connection);
        out.freeze()
    }

    /// Head, position (rendered `{epoch}:{seq}`, or empty) and body as one payload: what
    /// the Redis publish script builds in Lua, for the in-process backplane.
    pub fn assemble(head: &[u8], position: &[u8], body: &[u8]) -> Bytes {
        let position = &position[..position.len().min(255)];
        let mut out = BytesMut::with_capacity(head.len() + 1 + position.len() + body.len());
        out.put_slice(head);
        out.put_u8(position.len() as u8);
        out.put_slice(position);
        out.put_slice(body);
        out.freeze()
    }

    /// Decodes a payload without copying it.
    ///
    /// # Errors
    /// See [`EnvelopeError`].
    pub fn decode(payload: &Bytes) -> Result<Self, EnvelopeError> {
        let p = payload.as_ref();
        if p.len() < 11 {
            return Err(EnvelopeError::Truncated);
        }
        if p[0] != VERSION {
            return Err(EnvelopeError::Version(p[0]));
        }
        let kind = Kind::from_u8(p[1]).ok_or(EnvelopeError::Kind(p[1]))?;
        let published_at_micros =
            u64::from_be_bytes(p[2..10].try_into().map_err(|_| EnvelopeError::Truncated)?);
        let corr_len = usize::from(p[10]);
        let corr_end = 11 + corr_len;
        if p.len() < corr_end + 1 {
            return Err(EnvelopeError::Truncated);
        }
        let conn_len = usize::from(p[corr_end]);
        let conn_end = corr_end + 1 + conn_len;
        if p.len() < conn_end + 1 {
            return Err(EnvelopeError::Truncated);
        }
        let pos_len = usize::from(p[conn_end]);
        let pos_end = conn_end + 1 + pos_len;
        if p.len() < pos_end {
            return Err(EnvelopeError::Truncated);
        }
        let position = if pos_len == 0 {
            None
        } else {
            Some(
                Position::parse(&payload.slice(conn_end + 1..pos_end))
                    .ok_or(EnvelopeError::Position)?,
            )
        };
        Ok(Self {
            kind,
            published_at_micros,
            correlation: payload.slice(11..corr_end),
            connection: payload.slice(corr_end + 1..conn_end),
            position,
            body: payload.slice(pos_end..),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_round_trips() {
        let bytes = Envelope::encode(Kind::Send, 42, b"corr", b"conn", b"{\"type\":1}\x1e");
        let e = Envelope::decode(&bytes).unwrap();
        assert_eq!(e.kind, Kind::Send);
        assert_eq!(e.published_at_micros, 42);
        assert_eq!(&e.correlation[..], b"corr");
        assert_eq!(&e.connection[..], b"conn");
        assert_eq!(&e.body[..], b"{\"type\":1}\x1e");
        assert_eq!(e.position, None);
    }

    #[test]
    fn a_positioned_envelope_round_trips() {
        let head = Envelope::head(Kind::Deliver, 7, b"c", b"");
        let bytes = Envelope::assemble(&head, &Position::render(b"e1", 42), b"rec");
        let e = Envelope::decode(&bytes).unwrap();
        let pos = e.position.unwrap();
        assert_eq!((&pos.epoch[..], pos.seq), (&b"e1"[..], 42));
        assert_eq!(&e.body[..], b"rec");
    }

    #[test]
    fn malformed_positions_are_refused() {
        let head = Envelope::head(Kind::Deliver, 7, b"c", b"");
        for bad in [
            &b"e1"[..],
            b":5",
            b"e1:",
            b"e1:5x",
            b"e1:05",
            b"e1:0",
            b"e:99999999999999999999",
        ] {
            let bytes = Envelope::assemble(&head, bad, b"rec");
            assert_eq!(
                Envelope::decode(&bytes),
                Err(EnvelopeError::Position),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn truncated_and_foreign_payloads_are_refused() {
        let good = Envelope::encode(Kind::Deliver, 1, b"abc", b"", b"x");
        for cut in 0..14 {
            assert!(
                Envelope::decode(&good.slice(..cut)).is_err(),
                "accepted {cut} bytes"
            );
        }
        let mut v = good.to_vec();
        v[0] = 9;
        assert_eq!(
            Envelope::decode(&Bytes::from(v.clone())),
            Err(EnvelopeError::Version(9))
        );
        v[0] = VERSION;
        v[1] = 77;
        assert_eq!(
            Envelope::decode(&Bytes::from(v)),
            Err(EnvelopeError::Kind(77))
        );
    }
}
