//! Server-to-client frames, built once per message.
//!
//! A server never masks its frames (RFC 6455 §5.1), so header and payload are the same
//! bytes for every recipient: a publish is framed once on each node and every connection
//! writes those shared bytes as they are, with no per-recipient framing or copy.

use bytes::{BufMut as _, Bytes, BytesMut};

/// Opcode of a continuation frame.
pub const OP_CONTINUATION: u8 = 0x0;
/// Opcode of a text frame.
pub const OP_TEXT: u8 = 0x1;
/// Opcode of a binary frame.
pub const OP_BINARY: u8 = 0x2;
/// Opcode of a close frame.
pub const OP_CLOSE: u8 = 0x8;
/// Opcode of a ping frame.
pub const OP_PING: u8 = 0x9;
/// Opcode of a pong frame.
pub const OP_PONG: u8 = 0xA;

/// Close code: normal closure.
pub const CLOSE_NORMAL: u16 = 1000;
/// Close code: the peer broke the protocol.
pub const CLOSE_PROTOCOL: u16 = 1002;
/// Close code: a message too big to process.
pub const CLOSE_TOO_BIG: u16 = 1009;

/// One complete, unmasked frame: header and payload in one buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame(Bytes);

impl Frame {
    /// A final text frame carrying `payload`.
    pub fn text(payload: &[u8]) -> Self {
        Self::build(OP_TEXT, payload)
    }

    /// A final binary frame carrying `payload`.
    pub fn binary(payload: &[u8]) -> Self {
        Self::build(OP_BINARY, payload)
    }

    /// The answer to a ping: its payload echoed.
    pub fn pong(payload: &[u8]) -> Self {
        Self::build(OP_PONG, payload)
    }

    /// A close frame with a status code and no reason text.
    pub fn close(code: u16) -> Self {
        Self::build(OP_CLOSE, &code.to_be_bytes())
    }

    /// A frame as [`Self::as_bytes`] gave it (moved between nodes with a stateful
    /// connection), if it is one whole, final, unmasked text or binary frame.
    pub fn from_wire(bytes: Bytes) -> Option<Self> {
        let (&first, rest) = bytes.split_first()?;
        if first != 0x80 | OP_TEXT && first != 0x80 | OP_BINARY {
            return None;
        }
        let (&second, rest) = rest.split_first()?;
        let (len, rest) = match second {
            126 => (
                usize::from(u16::from_be_bytes(rest.get(..2)?.try_into().ok()?)),
                &rest[2..],
            ),
            127 => (
                usize::try_from(u64::from_be_bytes(rest.get(..8)?.try_into().ok()?)).ok()?,
                &rest[8..],
            ),
            n if n < 126 => (usize::from(n), rest),
            _ => return None,
        };
        (rest.len() == len).then_some(Self(bytes))
    }

    fn build(opcode: u8, payload: &[u8]) -> Self {
        let len = payload.len();
        let mut buf = BytesMut::with_capacity(header_len(len) + len);
        buf.put_u8(0x80 | opcode);
        if len < 126 {
            buf.put_u8(len as u8);
        } else if let Ok(short) = u16::try_from(len) {
            buf.put_u8(126);
            buf.put_u16(short);
        } else {
            buf.put_u8(127);
            buf.put_u64(len as u64);
        }
        buf.extend_from_slice(payload);
        Self(buf.freeze())
    }

    /// The whole frame, as written to the socket.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Length of the whole frame in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the frame has no bytes (never true of a built frame).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The opcode.
    pub fn opcode(&self) -> u8 {
        self.0[0] & 0x0F
    }

    /// The payload, without the header.
    pub fn payload(&self) -> &[u8] {
        let start = match self.0[1] & 0x7F {
            126 => 4,
            127 => 10,
            _ => 2,
        };
        &self.0[start..]
    }

    /// The payload as text, when it is UTF-8 (a text frame's always is).
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.payload()).unwrap_or("")
    }
}

/// Header length of an unmasked frame with a payload of `len` bytes.
fn header_len(len: usize) -> usize {
    if len < 126 {
        2
    } else if len <= usize::from(u16::MAX) {
        4
    } else {
        10
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_length_forms() {
        for (len, header) in [(0, 2), (125, 2), (126, 4), (65_535, 4), (65_536, 10)] {
            let payload = vec![b'a'; len];
            let f = Frame::text(&payload);
            assert_eq!(f.len(), header + len, "payload {len}");
            assert_eq!(f.payload(), &payload[..]);
            assert_eq!(f.as_bytes()[0], 0x81, "FIN and text");
            assert_eq!(f.opcode(), OP_TEXT);
        }
        assert_eq!(Frame::text(&[0; 300]).as_bytes()[1..4], [126, 1, 44]);
    }

    #[test]
    fn close_carries_its_code() {
        let f = Frame::close(CLOSE_PROTOCOL);
        assert_eq!(f.as_bytes(), &[0x88, 2, 0x03, 0xEA]);
    }

    #[test]
    fn frames_from_the_wire_are_checked_whole() {
        for f in [
            Frame::text(b"hi"),
            Frame::binary(&[7; 300]),
            Frame::text(&[1; 70_000]),
        ] {
            assert_eq!(
                Frame::from_wire(Bytes::copy_from_slice(f.as_bytes())),
                Some(f.clone())
            );
            let cut = Bytes::copy_from_slice(&f.as_bytes()[..f.as_bytes().len() - 1]);
            assert_eq!(Frame::from_wire(cut), None, "one byte short");
        }
        assert_eq!(
            Frame::from_wire(Bytes::copy_from_slice(Frame::pong(b"p").as_bytes())),
            None
        );
        assert_eq!(Frame::from_wire(Bytes::new()), None);
    }
}
