//! Record framing: every JSON record ends with the ASCII record separator `0x1E`.
//!
//! Incoming bytes are buffered across WebSocket frames and cut on the separator, so a record
//! split over several frames and several records in one frame both work. Outgoing records
//! are always whole (the JS client kills the connection on a record split across frames).

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

/// Buffers incoming bytes and yields complete records (without the separator).
#[derive(Debug)]
pub struct RecordReader {
    buffer: BytesMut,
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
            scanned: 0,
            max_record,
        }
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

    /// Bytes buffered but not yet returned as a record.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
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
}
