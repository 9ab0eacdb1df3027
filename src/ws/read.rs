//! Client-to-server frames, parsed incrementally as bytes arrive.
//!
//! The reader keeps only a frame's header state between reads (a few dozen bytes), not a
//! buffer: payload bytes are unmasked in the caller's read buffer and handed on at once,
//! so an idle connection holds no read buffer at all. Messages are not reassembled here;
//! the SignalR record reader above cuts records on their separator across frames anyway.

use super::frame::{OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT};

/// Largest payload of a control frame (RFC 6455 §5.5).
const MAX_CONTROL: usize = 125;

/// What a read revealed, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// Payload bytes of a text or binary message (any part of it).
    Data(&'a [u8]),
    /// A ping: answer with a pong carrying the same payload.
    Ping(&'a [u8]),
    /// The client is closing, with its status code if it gave one.
    Close(Option<u16>),
}

/// Why the stream cannot be read on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WsError {
    /// The client broke the framing rules (close with 1002).
    #[error("WebSocket protocol error: {0}")]
    Protocol(&'static str),
    /// A message is larger than allowed (close with 1009).
    #[error("WebSocket message larger than {0} bytes")]
    TooBig(usize),
}

/// Incremental parser of one connection's client frames.
#[derive(Debug)]
pub struct FrameReader {
    max_message: usize,
    /// Header bytes of the frame being read, until complete.
    head: [u8; 14],
    head_len: u8,
    /// Payload bytes of the current frame still to come; `None` between frames.
    remaining: Option<u64>,
    opcode: u8,
    mask: [u8; 4],
    /// Payload bytes of the current frame already unmasked (position in the mask).
    offset: u64,
    /// A text or binary message has started and not ended.
    in_message: bool,
    /// Bytes of that message so far.
    message_len: usize,
    /// A control frame's payload, gathered across reads.
    control: Vec<u8>,
}

impl FrameReader {
    /// A reader refusing messages longer than `max_message` bytes.
    pub fn new(max_message: usize) -> Self {
        Self {
            max_message,
            head: [0; 14],
            head_len: 0,
            remaining: None,
            opcode: 0,
            mask: [0; 4],
            offset: 0,
            in_message: false,
            message_len: 0,
            control: Vec::new(),
        }
    }

    /// Parses `input` (unmasking payloads in place) and reports what it holds to `on`,
    /// in order. Stops at the first close frame.
    ///
    /// # Errors
    /// [`WsError`] when the client broke the protocol; nothing more may be read.
    pub fn feed(
        &mut self,
        mut input: &mut [u8],
        on: &mut impl FnMut(Event<'_>),
    ) -> Result<(), WsError> {
        loop {
            let Some(remaining) = self.remaining else {
                if input.is_empty() {
                    return Ok(());
                }
                let used = self.read_head(input)?;
                input = &mut input[used..];
                continue;
            };
            if remaining > 0 && input.is_empty() {
                return Ok(());
            }
            let take = usize::try_from(remaining)
                .unwrap_or(usize::MAX)
                .min(input.len());
            let (chunk, rest) = input.split_at_mut(take);
            input = rest;
            for (i, b) in chunk.iter_mut().enumerate() {
                *b ^= self.mask[((self.offset + i as u64) % 4) as usize];
            }
            self.offset += take as u64;
            let left = remaining - take as u64;
            self.remaining = Some(left);
            if is_control(self.opcode) {
                self.control.extend_from_slice(chunk);
            } else if !chunk.is_empty() {
                on(Event::Data(chunk));
            }
            if left == 0 && self.end_frame(on) {
                return Ok(());
            }
        }
    }

    /// Consumes header bytes; returns how many of `input` it used.
    fn read_head(&mut self, input: &[u8]) -> Result<usize, WsError> {
        let mut used = 0;
        loop {
            let have = usize::from(self.head_len);
            if have >= 2 && self.head[1] & 0x80 == 0 {
                // Refused at once: an unmasked frame's header is shorter than we would
                // wait for.
                return Err(WsError::Protocol("client frames must be masked"));
            }
            // Two bytes tell how long the rest of the header is.
            let need = if have < 2 {
                2
            } else {
                2 + ext_len(self.head[1]) + 4
            };
            if have == need {
                self.begin_frame()?;
                return Ok(used);
            }
            let take = (need - have).min(input.len() - used);
            if take == 0 {
                return Ok(used);
            }
            self.head[have..have + take].copy_from_slice(&input[used..used + take]);
            self.head_len += take as u8;
            used += take;
        }
    }

    /// The header is complete: checks it and starts the frame.
    fn begin_frame(&mut self) -> Result<(), WsError> {
        let (b0, b1) = (self.head[0], self.head[1]);
        self.head_len = 0;
        if b0 & 0x70 != 0 {
            return Err(WsError::Protocol("reserved bits set without an extension"));
        }
        let fin = b0 & 0x80 != 0;
        let opcode = b0 & 0x0F;
        let ext = ext_len(b1);
        let len = match b1 & 0x7F {
            126 => u64::from(u16::from_be_bytes([self.head[2], self.head[3]])),
            127 => u64::from_be_bytes(self.head[2..10].try_into().unwrap_or([0xFF; 8])),
            n => u64::from(n),
        };
        self.mask.copy_from_slice(&self.head[2 + ext..6 + ext]);
        match opcode {
            OP_CLOSE | OP_PING | OP_PONG => {
                if !fin {
                    return Err(WsError::Protocol("fragmented control frame"));
                }
                if len > MAX_CONTROL as u64 {
                    return Err(WsError::Protocol("control frame over 125 bytes"));
                }
            }
            OP_TEXT | OP_BINARY | OP_CONTINUATION => {
                match (opcode == OP_CONTINUATION, self.in_message) {
                    (true, false) => {
                        return Err(WsError::Protocol("continuation without a message"))
                    }
                    (false, true) => {
                        return Err(WsError::Protocol("new message before the last one ended"))
                    }
                    (false, false) => self.message_len = 0,
                    (true, true) => {}
                }
                let total = usize::try_from(len)
                    .ok()
                    .and_then(|l| l.checked_add(self.message_len))
                    .filter(|&t| t <= self.max_message)
                    .ok_or(WsError::TooBig(self.max_message))?;
                self.message_len = total;
                self.in_message = !fin;
            }
            _ => return Err(WsError::Protocol("unknown opcode")),
        }
        self.opcode = opcode;
        self.offset = 0;
        self.remaining = Some(len);
        Ok(())
    }

    /// The current frame's payload is complete. Returns whether it was a close.
    fn end_frame(&mut self, on: &mut impl FnMut(Event<'_>)) -> bool {
        self.remaining = None;
        match self.opcode {
            OP_PING => on(Event::Ping(&self.control)),
            OP_CLOSE => {
                let code = (self.control.len() >= 2)
                    .then(|| u16::from_be_bytes([self.control[0], self.control[1]]));
                on(Event::Close(code));
                return true;
            }
            _ => {}
        }
        if is_control(self.opcode) {
            // Give the few bytes back: an idle connection keeps no buffer.
            self.control = Vec::new();
        }
        false
    }
}

fn is_control(opcode: u8) -> bool {
    opcode & 0x08 != 0
}

/// Extended payload-length bytes after the second header byte.
fn ext_len(b1: u8) -> usize {
    match b1 & 0x7F {
        126 => 2,
        127 => 8,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame, as a browser sends it.
    fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xFA, 0x21, 0x3D];
        let mut out = vec![first];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    #[derive(Debug, PartialEq, Eq)]
    enum Seen {
        Data(Vec<u8>),
        Ping(Vec<u8>),
        Close(Option<u16>),
    }

    fn feed_in_pieces(
        reader: &mut FrameReader,
        bytes: &[u8],
        piece: usize,
    ) -> Result<Vec<Seen>, WsError> {
        let mut seen = Vec::new();
        for chunk in bytes.chunks(piece) {
            let mut chunk = chunk.to_vec();
            reader.feed(&mut chunk, &mut |e| {
                seen.push(match e {
                    Event::Data(d) => Seen::Data(d.to_vec()),
                    Event::Ping(p) => Seen::Ping(p.to_vec()),
                    Event::Close(c) => Seen::Close(c),
                })
            })?;
        }
        Ok(seen)
    }

    fn data(seen: &[Seen]) -> Vec<u8> {
        seen.iter()
            .filter_map(|s| match s {
                Seen::Data(d) => Some(d.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    #[test]
    fn frames_split_anywhere_give_the_same_bytes() {
        let big = vec![b'x'; 70_000];
        let mut wire = client_frame(0x81, b"{\"protocol\":\"json\",\"version\":1}\x1e");
        wire.extend(client_frame(0x89, b"hi"));
        wire.extend(client_frame(0x02, &big[..300]));
        wire.extend(client_frame(0x80, &big[300..]));
        let mut expected = b"{\"protocol\":\"json\",\"version\":1}\x1e".to_vec();
        expected.extend_from_slice(&big);
        for piece in [1, 2, 3, 7, 14, 100, 4096, wire.len()] {
            let mut r = FrameReader::new(1 << 20);
            let seen = feed_in_pieces(&mut r, &wire, piece).unwrap();
            assert_eq!(data(&seen), expected, "pieces of {piece}");
            assert!(
                seen.contains(&Seen::Ping(b"hi".to_vec())),
                "pieces of {piece}"
            );
        }
    }

    #[test]
    fn a_close_frame_reports_its_code() {
        let mut r = FrameReader::new(1024);
        let seen = feed_in_pieces(&mut r, &client_frame(0x88, &[0x03, 0xE8]), 1).unwrap();
        assert_eq!(seen, vec![Seen::Close(Some(1000))]);
        let mut r = FrameReader::new(1024);
        let seen = feed_in_pieces(&mut r, &client_frame(0x88, &[]), 64).unwrap();
        assert_eq!(seen, vec![Seen::Close(None)]);
    }

    #[test]
    fn broken_framing_is_refused() {
        let cases: [(Vec<u8>, &str); 6] = [
            (vec![0x81, 0x02, b'h', b'i'], "client frames must be masked"),
            (
                client_frame(0xC1, b"x"),
                "reserved bits set without an extension",
            ),
            (client_frame(0x09, b"x"), "fragmented control frame"),
            (
                client_frame(0x89, &[0; 126]),
                "control frame over 125 bytes",
            ),
            (client_frame(0x80, b"x"), "continuation without a message"),
            (client_frame(0x83, b"x"), "unknown opcode"),
        ];
        for (wire, why) in cases {
            let mut r = FrameReader::new(1024);
            assert_eq!(
                feed_in_pieces(&mut r, &wire, 64),
                Err(WsError::Protocol(why))
            );
        }
        let mut wire = client_frame(0x01, b"a");
        wire.extend(client_frame(0x81, b"b"));
        let mut r = FrameReader::new(1024);
        assert_eq!(
            feed_in_pieces(&mut r, &wire, 64),
            Err(WsError::Protocol("new message before the last one ended"))
        );
    }

    #[test]
    fn a_message_over_the_limit_is_refused_from_its_header() {
        let mut r = FrameReader::new(100);
        let mut wire = client_frame(0x01, &[b'a'; 60]);
        wire.extend(client_frame(0x80, &[b'a'; 60]));
        assert_eq!(
            feed_in_pieces(&mut r, &wire, 4096),
            Err(WsError::TooBig(100))
        );
        // Only the header of a 2^63-byte frame is needed to refuse it.
        let mut r = FrameReader::new(100);
        let mut huge = vec![0x81, 0x80 | 127];
        huge.extend_from_slice(&(u64::MAX >> 1).to_be_bytes());
        huge.extend_from_slice(&[1, 2, 3, 4]);
        assert_eq!(
            feed_in_pieces(&mut r, &huge, 4096),
            Err(WsError::TooBig(100))
        );
    }
}
