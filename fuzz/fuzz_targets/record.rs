//! Record framing plus message parsing: arbitrary bytes, pushed in chunks whose sizes come
//! from the input, must yield exactly the records a plain reference model cuts, refuse
//! over-long records, never buffer much more than the limit, and every record must parse
//! (or fail to parse) without panicking.
//!
//! Input layout: two bytes pick the record limit (1..=1024), then a sequence of chunks, each
//! one length byte followed by up to that many bytes.

#![no_main]

use hubcast::protocol::framing::{RecordReader, RecordTooLarge, RECORD_SEPARATOR};
use hubcast::protocol::handshake;
use hubcast::protocol::message::{ClientMessage, MAX_INVOCATION_ID};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let max_record = usize::from(u16::from_be_bytes([data[0], data[1]]) % 1024) + 1;
    let mut rest = &data[2..];

    let mut reader = RecordReader::new(max_record);
    // Reference model: the bytes pushed and not yet returned.
    let mut pending: Vec<u8> = Vec::new();
    let mut first = true;

    while let Some((&len, tail)) = rest.split_first() {
        let take = usize::from(len).min(tail.len());
        let (chunk, tail) = tail.split_at(take);
        rest = tail;

        reader.push(chunk);
        pending.extend_from_slice(chunk);
        assert_eq!(reader.buffered(), pending.len());
        // Before this push the buffer held at most `max_record` bytes (or the stream was
        // already refused), so it can never be more than that plus the last chunk.
        assert!(
            reader.buffered() <= max_record + chunk.len(),
            "buffered {} > max {} + chunk {}",
            reader.buffered(),
            max_record,
            chunk.len()
        );

        loop {
            let got = reader.next_record();
            let want = match pending.iter().position(|&b| b == RECORD_SEPARATOR) {
                Some(end) if end > max_record => Err(RecordTooLarge { max: max_record }),
                Some(end) => {
                    let record: Vec<u8> = pending.drain(..=end).take(end).collect();
                    Ok(Some(record))
                }
                None if pending.len() > max_record => Err(RecordTooLarge { max: max_record }),
                None => Ok(None),
            };
            match (got, want) {
                (Ok(Some(got)), Ok(Some(want))) => {
                    assert_eq!(&got[..], &want[..]);
                    assert!(got.len() <= max_record);
                    assert!(!got.contains(&RECORD_SEPARATOR));
                    assert_eq!(reader.buffered(), pending.len());
                    if first {
                        first = false;
                        if let Ok((_, v)) = handshake::parse(&got) {
                            assert!(i64::from(v) <= handshake::MAX_VERSION);
                        }
                    }
                    check_message(&got);
                }
                (Ok(None), Ok(None)) => {
                    assert!(reader.buffered() <= max_record);
                    break;
                }
                // The stream is refused: the session closes the connection here.
                (Err(got), Err(want)) => {
                    assert_eq!(got, want);
                    return;
                }
                (got, want) => panic!("reader returned {got:?}, model expected {want:?}"),
            }
        }
    }
});

fn check_message(record: &[u8]) {
    let Ok(msg) = ClientMessage::parse(record) else {
        return;
    };
    let id_ok = |id: &str| !id.is_empty() && id.len() <= MAX_INVOCATION_ID;
    match msg {
        ClientMessage::Invocation {
            invocation_id,
            target,
            ..
        } => {
            assert!(!target.is_empty());
            if let Some(id) = invocation_id {
                assert!(id_ok(&id));
            }
        }
        ClientMessage::StreamInvocation {
            invocation_id,
            target,
        } => {
            assert!(!target.is_empty());
            assert!(id_ok(&invocation_id));
        }
        ClientMessage::StreamItem { invocation_id }
        | ClientMessage::Completion { invocation_id }
        | ClientMessage::CancelInvocation { invocation_id } => assert!(id_ok(&invocation_id)),
        ClientMessage::Unknown(t) => assert!(t == 0 || t > 9, "known type {t} parsed as unknown"),
        ClientMessage::Ping
        | ClientMessage::Close { .. }
        | ClientMessage::Ack { .. }
        | ClientMessage::Sequence { .. } => {}
    }
}
