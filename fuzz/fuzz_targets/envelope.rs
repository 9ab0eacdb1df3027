//! Backplane envelope decoding: arbitrary payloads never panic; whatever decodes encodes
//! back to the same bytes; and envelopes built from fields taken from the input decode to
//! those fields.

#![no_main]

use bytes::Bytes;
use hubcast::envelope::{Envelope, EnvelopeError, Kind, Position};
use libfuzzer_sys::fuzz_target;

const KINDS: [Kind; 8] = [
    Kind::Deliver,
    Kind::Send,
    Kind::Join,
    Kind::Leave,
    Kind::Close,
    Kind::Probe,
    Kind::Ack,
    Kind::EpochEnd,
];

fuzz_target!(|data: &[u8]| {
    // 1. Decode the raw bytes.
    let payload = Bytes::copy_from_slice(data);
    match Envelope::decode(&payload) {
        Ok(e) => {
            assert!(e.correlation.len() <= 255 && e.connection.len() <= 255);
            let head =
                Envelope::head(e.kind, e.published_at_micros, &e.correlation, &e.connection);
            let position = e
                .position
                .as_ref()
                .map(|p| Position::render(&p.epoch, p.seq))
                .unwrap_or_default();
            let again = Envelope::assemble(&head, &position, &e.body);
            assert_eq!(&again[..], data, "decode then encode changed the bytes");
        }
        Err(EnvelopeError::Truncated) => {
            // Walk the three length bytes; one of them (or what it announces) is missing.
            let mut at = 10;
            let mut complete = data.len() > at;
            for _ in 0..3 {
                match data.get(at) {
                    Some(n) => at += 1 + usize::from(*n),
                    None => complete = false,
                }
            }
            assert!(
                !(complete && data.len() >= at),
                "refused as truncated but long enough: {data:?}"
            );
        }
        Err(EnvelopeError::Position) => {}
        Err(EnvelopeError::Version(v)) => assert_eq!(Some(&v), data.first()),
        Err(EnvelopeError::Kind(k)) => {
            assert_eq!(Some(&k), data.get(1));
            assert!(k == 0 || k > 8);
        }
    }

    // 2. Build an envelope from fields cut out of the input and decode it again.
    if data.len() < 11 {
        return;
    }
    let kind = KINDS[usize::from(data[0]) % KINDS.len()];
    let micros = u64::from_le_bytes(data[1..9].try_into().unwrap());
    let rest = &data[11..];
    let corr_len = usize::from(data[9]).min(rest.len());
    let (correlation, rest) = rest.split_at(corr_len);
    let conn_len = usize::from(data[10]).min(rest.len());
    let (connection, body) = rest.split_at(conn_len);
    let encoded = Envelope::encode(kind, micros, correlation, connection, body);
    let e = Envelope::decode(&encoded).expect("an encoded envelope does not decode");
    assert_eq!(e.kind, kind);
    assert_eq!(e.published_at_micros, micros);
    assert_eq!(&e.correlation[..], correlation);
    assert_eq!(&e.connection[..], connection);
    assert_eq!(&e.body[..], body);
});
