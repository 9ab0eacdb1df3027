//! Record framing: every JSON record ends with the ASCII record separator `0x1E`; every
//! MessagePack message starts with its length as a VarInt (7 bits a byte, low bits first,
//! at most 5 bytes).
//!
//! Incoming bytes are buffered across WebSocket frames and cut on the separator or by the
//! length, so a record split over several frames and several records in one frame both
//! work. Outgoing records are always whole (the JS client kills the connection on a record
//! split across frames).

use bytes::{Buf as _, BytesMut};

/// The byte that ends every record.
pub const RECORD_SEPARATOR: u8 = 0x1E;

/// A record grew past the size limit before its separator arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("The maximum message size of {max}B was exceeded.")]
pub struct RecordTooLarge {
    /// The configured limit in bytes.
    pub max: usize,
}

/// Longest VarInt length prefix: 5 bytes hold up to 2^35 - 1.
const MAX_PREFIX: usize = 5;

/// Buffers incoming bytes and yields complete records (without the separator or the
/// length prefix).
#[derive(Debug)]
pub struct RecordReader {
    buffer: BytesMut,
    /// Records are length-prefixed (MessagePack) rather than separated (JSON).
    prefixed: bool,
    /// Bytes at the front of `buffer` already scanned and known to hold no separator, so a
    /// record trickling in over many frames is not rescanned from its start each time.
    scanned: usize,
    max_record: usize,
}

impl RecordReader {
    /// A reader that refuses records longer than `max_record` bytes.
    pub fn new(max_record: usize) -> Self {
        Self {
            buffer: BytesMut::new(),
            prefixed: false,
            scanned: 0,
            max_record,
        }
    }

    /// From now on, records are length-prefixed: the handshake (always a JSON record) chose
    /// MessagePack. What is buffered after the handshake is read that way too.
    pub fn use_length_prefix(&mut self) {
        self.prefixed = true;
        self.scanned = 0;
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete record, if one is buffered.
    ///
    /// # Errors
    /// [`RecordTooLarge`] when a record (complete or not) exceeds the limit; the connection
    /// should then be closed, since the stream can no longer be trusted.
    pub fn next_record(&mut self) -> Result<Option<BytesMut>, RecordTooLarge> {
        if self.prefixed {
            return self.next_prefixed();
        }
        match self.buffer[self.scanned..]
            .iter()
            .position(|&b| b == RECORD_SEPARATOR)
        {
            Some(offset) => {
                let end = self.scanned + offset;
                if end > self.max_record {
                    return Err(RecordTooLarge {
                        max: self.max_record,
                    });
                }
                let record = self.buffer.split_to(end);
                self.buffer.advance(1);
                self.scanned = 0;
                Ok(Some(record))
            }
            None => {
                self.scanned = self.buffer.len();
                if self.buffer.len() > self.max_record {
                    return Err(RecordTooLarge {
                        max: self.max_record,
                    });
                }
                Ok(None)
            }
        }
    }

    fn next_prefixed(&mut self) -> Result<Option<BytesMut>, RecordTooLarge> {
        let too_large = RecordTooLarge {
            max: self.max_record,
        };
        let Some((start, len)) = read_length_prefix(&self.buffer).ok_or(too_large)? else {
            return Ok(None);
        };
        if len > self.max_record {
            return Err(too_large);
        }
        if self.buffer.len() < start + len {
            return Ok(None);
        }
        self.buffer.advance(start);
        Ok(Some(self.buffer.split_to(len)))
    }

    /// Bytes buffered but not yet returned as a record.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }
}

/// The length a VarInt prefix at the start of `buf` gives, and the prefix's size:
/// `Some(None)` while the prefix is incomplete, `None` for a prefix longer than five bytes.
pub fn read_length_prefix(buf: &[u8]) -> Option<Option<(usize, usize)>> {
    let mut len: usize = 0;
    for (i, b) in buf.iter().take(MAX_PREFIX).enumerate() {
        len |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(Some((i + 1, len)));
        }
    }
    if buf.len() >= MAX_PREFIX {
        return None;
    }
    Some(None)
}

/// Appends `len` as a VarInt length prefix.
pub fn write_length_prefix(out: &mut Vec<u8>, mut len: usize) {
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(reader: &mut RecordReader) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(r) = reader.next_record().unwrap() {
            out.push(r.to_vec());
        }
        out
    }

    #[test]
    fn several_records_in_one_frame_are_all_returned() {
        let mut r = RecordReader::new(1024);
        r.push(b"{\"type\":6}\x1e{\"type\":7}\x1e");
        assert_eq!(
            records(&mut r),
            vec![b"{\"type\":6}".to_vec(), b"{\"type\":7}".to_vec()]
        );
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn a_record_split_across_frames_is_joined() {
        let mut r = RecordReader::new(1024);
        r.push(b"{\"ty");
        assert!(records(&mut r).is_empty());
        r.push(b"pe\":6");
        assert!(records(&mut r).is_empty());
        r.push(b"}\x1e{\"type\"");
        assert_eq!(records(&mut r), vec![b"{\"type\":6}".to_vec()]);
        assert_eq!(r.buffered(), 7);
    }

    #[test]
    fn a_record_over_the_limit_is_refused_even_before_its_end_arrives() {
        let mut r = RecordReader::new(8);
        r.push(b"123456789");
        assert_eq!(r.next_record(), Err(RecordTooLarge { max: 8 }));
        let mut r = RecordReader::new(8);
        r.push(b"123456789\x1e");
        assert_eq!(r.next_record(), Err(RecordTooLarge { max: 8 }));
    }

    #[test]
    fn a_record_exactly_at_the_limit_is_accepted() {
        let mut r = RecordReader::new(8);
        r.push(b"12345678\x1e");
        assert_eq!(records(&mut r), vec![b"12345678".to_vec()]);
    }

    #[test]
    fn length_prefixed_records_are_cut_by_their_length_across_frames() {
        let mut r = RecordReader::new(300);
        r.push(b"{\"protocol\":\"messagepack\",\"version\":1}\x1e\x01");
        assert_eq!(records(&mut r).len(), 1, "the handshake is a JSON record");
        r.use_length_prefix();
        let mut long = Vec::new();
        write_length_prefix(&mut long, 200);
        assert_eq!(long, vec![0xc8, 0x01]);
        long.extend(std::iter::repeat_n(b'x', 200));
        r.push(&[0x91]); // the one-byte message announced after the handshake
        r.push(&long[..50]);
        assert_eq!(records(&mut r), vec![vec![0x91]]);
        r.push(&long[50..]);
        assert_eq!(records(&mut r), vec![vec![b'x'; 200]]);
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn a_length_prefix_over_the_limit_or_too_long_is_refused() {
        let mut r = RecordReader::new(8);
        r.use_length_prefix();
        r.push(&[9]);
        assert_eq!(r.next_record(), Err(RecordTooLarge { max: 8 }));
        let mut r = RecordReader::new(8);
        r.use_length_prefix();
        r.push(&[0xff; 6]);
        assert_eq!(r.next_record(), Err(RecordTooLarge { max: 8 }));
        assert_eq!(read_length_prefix(&[0x80]), Some(None));
    }
}
