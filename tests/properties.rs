//! Property tests of the code that reads hostile input: record framing, hub messages, the
//! handshake, the backplane envelope, the publish body and the whole send request (path
//! name, correlation and idempotency headers, body), and the throttle keys built from them.
//!
//! The same pieces have cargo-fuzz targets in `fuzz/` (run them with `scripts/fuzz.sh`);
//! these properties run in `cargo test` with bounded case counts, so they take seconds.

use axum::http::{HeaderMap, HeaderValue};
use bytes::Bytes;
use hubcast::envelope::{Envelope, EnvelopeError, Kind, Position};
use hubcast::http::api::{PublishBody, SendPath, SendRequest, MAX_TARGET_BYTES};
use hubcast::http::error::ApiError;
use hubcast::http::gate::PublisherScope;
use hubcast::ids::{ConnectionId, CorrelationId, GroupName, UserId};
use hubcast::keys::Keys;
use hubcast::node::Audience;
use hubcast::protocol::framing::{RecordReader, RecordTooLarge, RECORD_SEPARATOR};
use hubcast::protocol::handshake::{self, HandshakeError, HubProtocol, MAX_VERSION};
use hubcast::protocol::message::{self, ClientMessage, MAX_INVOCATION_ID};
use proptest::prelude::*;
use serde_json::{json, Map, Number, Value};

/// The record separator as a char (`prop_assert!` cannot quote a `'\u{..}'` literal).
const RS: char = '\u{1e}';

// ---------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------

/// Any byte but the record separator.
fn rs_free_byte() -> impl Strategy<Value = u8> {
    any::<u8>().prop_filter("no record separator", |b| *b != RECORD_SEPARATOR)
}

fn rs_free_bytes(max_len: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(rs_free_byte(), 0..=max_len)
}

/// Sorted, deduplicated cut points inside `0..=len`.
fn cuts(len: usize, splits: &[prop::sample::Index]) -> Vec<usize> {
    let mut cuts: Vec<usize> = splits.iter().map(|i| i.index(len + 1)).collect();
    cuts.push(0);
    cuts.push(len);
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

/// Strings that exercise escapes, control characters, the separator and non-ASCII.
fn json_string() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-zA-Z0-9 _.-]{0,12}",
        1 => "\\PC{0,8}",
        1 => prop::collection::vec(any::<char>(), 0..8).prop_map(|c| c.into_iter().collect()),
        1 => Just("\u{1e}".to_owned()),
        1 => Just("\"\\\u{0}\n".to_owned()),
    ]
}

fn json_number() -> impl Strategy<Value = Number> {
    prop_oneof![
        any::<u64>().prop_map(Number::from),
        any::<i64>().prop_map(Number::from),
        (-3i64..12).prop_map(Number::from),
        any::<f64>().prop_filter_map("finite", Number::from_f64),
    ]
}

/// Arbitrary JSON value trees.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        json_number().prop_map(Value::Number),
        json_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((json_string(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Objects built from the keys the parsers look at (in any casing they accept), each with
/// an arbitrary value, plus unknown keys: far more likely to reach deep branches than
/// arbitrary trees are.
fn protocolish_object() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("type".to_owned()),
        Just("invocationId".to_owned()),
        Just("target".to_owned()),
        Just("Target".to_owned()),
        Just("arguments".to_owned()),
        Just("Arguments".to_owned()),
        Just("streamIds".to_owned()),
        Just("error".to_owned()),
        Just("protocol".to_owned()),
        Just("version".to_owned()),
        json_string(),
    ];
    let value = prop_oneof![
        2 => json_value(),
        1 => (0u64..12).prop_map(Value::from),
        1 => Just(Value::from("json")),
        1 => "[a-z]{1,8}".prop_map(Value::from),
        1 => prop::collection::vec(json_value(), 0..4).prop_map(Value::Array),
    ];
    prop::collection::vec((key, value), 0..8)
        .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>()))
}

/// JSON text of a value, compact or pretty-printed.
fn json_text() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![json_value(), protocolish_object()],
        any::<bool>(),
    )
        .prop_map(|(v, pretty)| {
            if pretty {
                serde_json::to_vec_pretty(&v).unwrap()
            } else {
                serde_json::to_vec(&v).unwrap()
            }
        })
}

/// Arbitrary bytes, or JSON text with some bytes overwritten (mostly-valid garbage).
fn hostile_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        (
            json_text(),
            prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4)
        )
            .prop_map(|(mut text, edits)| {
                if !text.is_empty() {
                    for (at, b) in edits {
                        let i = at.index(text.len());
                        text[i] = b;
                    }
                }
                text
            }),
        (json_text(), any::<prop::sample::Index>()).prop_map(|(text, at)| {
            let cut = at.index(text.len() + 1);
            text[..cut].to_vec()
        }),
    ]
}

/// The same value after a trip through JSON text (float parsing need not be exact, so
/// compare parsed with parsed).
fn reparsed(v: &Value) -> Value {
    serde_json::from_str(&v.to_string()).unwrap()
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::Deliver),
        Just(Kind::Send),
        Just(Kind::Join),
        Just(Kind::Leave),
        Just(Kind::Close),
        Just(Kind::Probe),
        Just(Kind::Ack),
        Just(Kind::EpochEnd),
    ]
}

/// A valid publish target: 1..=MAX_TARGET_BYTES bytes, no control characters.
fn valid_target() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z][A-Za-z0-9_.]{0,40}",
        "[^\\p{Cc}]{1,40}",
        Just("x".repeat(MAX_TARGET_BYTES)),
    ]
    .prop_filter("fits", |t| !t.is_empty() && t.len() <= MAX_TARGET_BYTES)
}

// ---------------------------------------------------------------------------------------
// Record framing
// ---------------------------------------------------------------------------------------

/// Pushes `bytes` cut at `cuts`, draining after every push; returns the records read and
/// the error that ended the stream, if any. Checks the bounds the reader promises.
fn read_all(
    reader: &mut RecordReader,
    max: usize,
    bytes: &[u8],
    cuts: &[usize],
) -> (Vec<Vec<u8>>, Option<RecordTooLarge>) {
    let mut out = Vec::new();
    for w in cuts.windows(2) {
        let chunk = &bytes[w[0]..w[1]];
        let before = reader.buffered();
        reader.push(chunk);
        assert_eq!(reader.buffered(), before + chunk.len());
        assert!(
            reader.buffered() <= max + chunk.len(),
            "buffered {} bytes with a limit of {max} after a {}-byte push",
            reader.buffered(),
            chunk.len()
        );
        loop {
            match reader.next_record() {
                Ok(Some(r)) => {
                    assert!(r.len() <= max, "returned a {}-byte record", r.len());
                    assert!(!r.contains(&RECORD_SEPARATOR));
                    out.push(r.to_vec());
                }
                Ok(None) => {
                    assert!(reader.buffered() <= max);
                    break;
                }
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, None)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Records joined with the separator come back exactly, however the stream is split,
    /// and an unterminated tail stays buffered.
    #[test]
    fn reader_returns_exactly_the_records_however_split(
        records in prop::collection::vec(rs_free_bytes(40), 0..12),
        tail in rs_free_bytes(40),
        slack in 0usize..8,
        splits in prop::collection::vec(any::<prop::sample::Index>(), 0..16),
    ) {
        let max = records.iter().chain([&tail]).map(Vec::len).max().unwrap_or(0) + slack;
        let mut stream = Vec::new();
        for r in &records {
            stream.extend_from_slice(r);
            stream.push(RECORD_SEPARATOR);
        }
        stream.extend_from_slice(&tail);
        let cuts = cuts(stream.len(), &splits);
        let mut reader = RecordReader::new(max);
        let (got, err) = read_all(&mut reader, max, &stream, &cuts);
        prop_assert_eq!(err, None);
        prop_assert_eq!(got, records);
        prop_assert_eq!(reader.buffered(), tail.len());
        // The tail comes out once it is terminated.
        reader.push(&[RECORD_SEPARATOR]);
        prop_assert_eq!(reader.next_record().unwrap().map(|r| r.to_vec()), Some(tail));
        prop_assert_eq!(reader.next_record(), Ok(None));
        prop_assert_eq!(reader.buffered(), 0);
    }

    /// A record longer than the limit is refused, terminated or not, after the records
    /// before it were returned intact; the buffer never holds much more than the limit.
    #[test]
    fn reader_refuses_a_record_over_the_limit(
        max in 1usize..48,
        before in prop::collection::vec(rs_free_bytes(48), 0..4),
        extra in 1usize..200,
        filler in rs_free_byte(),
        terminated in any::<bool>(),
        after in rs_free_bytes(16),
        splits in prop::collection::vec(any::<prop::sample::Index>(), 0..16),
    ) {
        let before: Vec<Vec<u8>> = before.into_iter().map(|mut r| { r.truncate(max); r }).collect();
        let mut stream = Vec::new();
        for r in &before {
            stream.extend_from_slice(r);
            stream.push(RECORD_SEPARATOR);
        }
        stream.extend(std::iter::repeat_n(filler, max + extra));
        if terminated {
            stream.push(RECORD_SEPARATOR);
            stream.extend_from_slice(&after);
        }
        let cuts = cuts(stream.len(), &splits);
        let mut reader = RecordReader::new(max);
        let (got, err) = read_all(&mut reader, max, &stream, &cuts);
        prop_assert_eq!(err, Some(RecordTooLarge { max }));
        prop_assert_eq!(got, before);
    }

    /// Arbitrary bytes in arbitrary pushes never panic, stay bounded, and yield exactly
    /// what a plain reference model cuts.
    #[test]
    fn reader_matches_a_model_on_arbitrary_bytes(
        max in 0usize..64,
        stream in prop::collection::vec(
            prop_oneof![4 => any::<u8>(), 1 => Just(RECORD_SEPARATOR)], 0..512),
        splits in prop::collection::vec(any::<prop::sample::Index>(), 0..32),
    ) {
        let cuts = cuts(stream.len(), &splits);
        let mut reader = RecordReader::new(max);
        let (got, err) = read_all(&mut reader, max, &stream, &cuts);

        // Model: records are the separator-terminated pieces; the stream is refused at the
        // first one longer than `max`, or as soon as an unterminated piece is.
        let mut want = Vec::new();
        let mut want_err = None;
        let mut consumed = 0;
        for &end in &cuts[1..] {
            loop {
                let pending = &stream[consumed..end];
                match pending.iter().position(|&b| b == RECORD_SEPARATOR) {
                    Some(n) if n > max => { want_err = Some(RecordTooLarge { max }); break; }
                    Some(n) => { want.push(pending[..n].to_vec()); consumed += n + 1; }
                    None if pending.len() > max => { want_err = Some(RecordTooLarge { max }); break; }
                    None => break,
                }
            }
            if want_err.is_some() {
                break;
            }
        }
        prop_assert_eq!(got, want);
        prop_assert_eq!(err, want_err);
        if err.is_none() {
            prop_assert_eq!(reader.buffered(), stream.len() - consumed);
        }
    }
}

#[test]
fn a_record_exactly_at_the_limit_is_accepted_and_one_byte_more_is_not() {
    for max in [0usize, 1, 7, 100] {
        let mut r = RecordReader::new(max);
        r.push(&vec![b'a'; max]);
        assert_eq!(r.next_record(), Ok(None));
        r.push(&[RECORD_SEPARATOR]);
        assert_eq!(r.next_record().unwrap().unwrap().len(), max);
        r.push(&vec![b'a'; max + 1]);
        assert_eq!(r.next_record(), Err(RecordTooLarge { max }));
    }
}

// ---------------------------------------------------------------------------------------
// Hub messages and the handshake
// ---------------------------------------------------------------------------------------

/// What every successfully parsed message must satisfy.
fn check_message(msg: &ClientMessage) -> Result<(), TestCaseError> {
    let id_ok = |id: &str| !id.is_empty() && id.len() <= MAX_INVOCATION_ID;
    match msg {
        ClientMessage::Invocation {
            invocation_id,
            target,
            ..
        } => {
            prop_assert!(!target.is_empty());
            if let Some(id) = invocation_id {
                prop_assert!(id_ok(id), "invocation id {:?}", id);
            }
        }
        ClientMessage::StreamInvocation {
            invocation_id,
            target,
        } => {
            prop_assert!(!target.is_empty());
            prop_assert!(id_ok(invocation_id));
        }
        ClientMessage::StreamItem { invocation_id }
        | ClientMessage::Completion { invocation_id }
        | ClientMessage::CancelInvocation { invocation_id } => {
            prop_assert!(id_ok(invocation_id), "invocation id {:?}", invocation_id);
        }
        ClientMessage::Unknown(t) => prop_assert!(*t == 0 || *t > 9, "type {} unknown", t),
        ClientMessage::Ping
        | ClientMessage::Close { .. }
        | ClientMessage::Ack { .. }
        | ClientMessage::Sequence { .. } => {}
    }
    Ok(())
}

/// What every handshake outcome must satisfy: success only for protocol `json` with a
/// version in range; every refusal has a reply that is one JSON record.
fn check_handshake(
    input: &[u8],
    result: &Result<(HubProtocol, u32), HandshakeError>,
) -> Result<(), TestCaseError> {
    match result {
        Ok((protocol, version)) => {
            prop_assert!(i64::from(*version) <= MAX_VERSION);
            let v: Value = serde_json::from_slice(input).expect("accepted input is JSON");
            prop_assert_eq!(&v["protocol"], protocol.name());
            prop_assert_eq!(v["version"].as_i64(), Some(i64::from(*version)));
        }
        Err(e) => {
            let reply = e.reply();
            let body = reply
                .strip_suffix('\u{1e}')
                .expect("reply ends with the separator");
            prop_assert!(!body.contains(RS));
            let v: Value = serde_json::from_str(body).expect("reply is JSON");
            prop_assert!(v["error"].is_string());
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn message_parse_never_panics_on_bytes(input in hostile_bytes()) {
        if let Ok(msg) = ClientMessage::parse(&input) {
            check_message(&msg)?;
        }
    }

    #[test]
    fn message_parse_never_panics_on_json(input in json_text()) {
        if let Ok(msg) = ClientMessage::parse(&input) {
            check_message(&msg)?;
        }
    }

    #[test]
    fn handshake_parse_never_panics_on_bytes(input in hostile_bytes()) {
        let result = handshake::parse(&input);
        check_handshake(&input, &result)?;
    }

    #[test]
    fn handshake_parse_never_panics_on_json(input in json_text()) {
        let result = handshake::parse(&input);
        check_handshake(&input, &result)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A well-formed Invocation, with keys in any order and extra keys, parses to exactly
    /// its fields.
    #[test]
    fn a_valid_invocation_parses_to_its_fields(
        id in prop::option::of("[ -~]{1,128}"),
        target in "[^\\p{Cc}]{1,30}",
        arguments in prop::collection::vec(json_value(), 0..5),
        extra in prop::collection::vec(("x[a-z]{0,6}", json_value()), 0..3),
        reverse in any::<bool>(),
    ) {
        let mut fields: Vec<(String, Value)> = vec![
            ("type".into(), json!(1)),
            ("target".into(), json!(target)),
            ("arguments".into(), Value::Array(arguments.clone())),
        ];
        if let Some(id) = &id {
            fields.push(("invocationId".into(), json!(id)));
        }
        fields.extend(extra);
        if reverse {
            fields.reverse();
        }
        let text = format!(
            "{{{}}}",
            fields
                .iter()
                .map(|(k, v)| format!("{}:{}", json!(k), v))
                .collect::<Vec<_>>()
                .join(",")
        );
        let msg = ClientMessage::parse(text.as_bytes());
        prop_assert_eq!(
            msg,
            Ok(ClientMessage::Invocation {
                invocation_id: id,
                target,
                arguments: arguments.iter().map(reparsed).collect(),
                stream_ids: vec![],
            })
        );
    }

    /// Every message type maps to its variant; types the server does not know are
    /// reported as unknown (and ignored), never mistaken for a known one.
    #[test]
    fn message_types_map_to_their_variants(t in prop_oneof![0u64..12, any::<u64>()]) {
        let text = json!({
            "type": t, "invocationId": "1", "target": "T", "arguments": [], "error": "e",
            "sequenceId": 3
        })
        .to_string();
        let want = match t {
            1 => ClientMessage::Invocation {
                invocation_id: Some("1".into()),
                target: "T".into(),
                arguments: vec![],
                stream_ids: vec![],
            },
            2 => ClientMessage::StreamItem { invocation_id: "1".into() },
            3 => ClientMessage::Completion { invocation_id: "1".into() },
            4 => ClientMessage::StreamInvocation { invocation_id: "1".into(), target: "T".into() },
            5 => ClientMessage::CancelInvocation { invocation_id: "1".into() },
            6 => ClientMessage::Ping,
            7 => ClientMessage::Close { error: Some("e".into()) },
            8 => ClientMessage::Ack { sequence_id: 3 },
            9 => ClientMessage::Sequence { sequence_id: 3 },
            other => ClientMessage::Unknown(other),
        };
        prop_assert_eq!(ClientMessage::parse(text.as_bytes()), Ok(want));
    }

    /// Ids of the other message types are checked the same way: 1..=128 bytes.
    #[test]
    fn invocation_ids_are_bounded(kind in 2u64..=5, len in 0usize..300) {
        let id = "i".repeat(len);
        let text = json!({"type": kind, "invocationId": id, "target": "T"}).to_string();
        let result = ClientMessage::parse(text.as_bytes());
        prop_assert_eq!(result.is_ok(), (1..=MAX_INVOCATION_ID).contains(&len), "{:?}", result);
    }

    /// The handshake accepts protocols `json` and `messagepack` exactly for versions
    /// 0..=MAX_VERSION.
    #[test]
    fn handshake_accepts_exactly_json_and_messagepack_with_a_known_version(
        protocol in prop_oneof![Just("json".to_owned()), Just("messagepack".to_owned()), "[a-z]{0,12}"],
        version in prop_oneof![-3i64..6, any::<i64>()],
        extra in prop::collection::vec(("x[a-z]{0,6}", json_value()), 0..3),
    ) {
        let mut obj: Map<String, Value> = extra.into_iter().collect();
        obj.insert("protocol".into(), json!(protocol));
        obj.insert("version".into(), json!(version));
        let text = Value::Object(obj).to_string();
        let result = handshake::parse(text.as_bytes());
        let known = match protocol.as_str() {
            "json" => Some(HubProtocol::Json),
            "messagepack" => Some(HubProtocol::MessagePack),
            _ => None,
        };
        if let (Some(p), true) = (known, (0..=MAX_VERSION).contains(&version)) {
            prop_assert_eq!(result, Ok((p, version as u32)));
        } else {
            prop_assert!(result.is_err());
        }
    }

    /// Anything but a JSON object is not a handshake.
    #[test]
    fn a_non_object_is_never_a_handshake(v in json_value()) {
        prop_assume!(!v.is_object());
        prop_assert!(handshake::parse(v.to_string().as_bytes()).is_err());
        prop_assert!(ClientMessage::parse(v.to_string().as_bytes()).is_err());
    }
}

// ---------------------------------------------------------------------------------------
// Backplane envelope
// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Encoding then decoding gives back every field, and the decoded envelope encodes
    /// back to the same bytes.
    #[test]
    fn envelope_round_trips(
        kind in kind(),
        micros in any::<u64>(),
        correlation in prop::collection::vec(any::<u8>(), 0..=255),
        connection in prop::collection::vec(any::<u8>(), 0..=255),
        position in prop::option::of(("[a-zA-Z0-9]{1,24}", any::<u64>())),
        body in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let rendered = position
            .as_ref()
            .map(|(e, s)| Position::render(e.as_bytes(), *s))
            .unwrap_or_default();
        let head = Envelope::head(kind, micros, &correlation, &connection);
        let bytes = Envelope::assemble(&head, &rendered, &body);
        prop_assert_eq!(
            bytes.len(),
            13 + correlation.len() + connection.len() + rendered.len() + body.len()
        );
        let e = Envelope::decode(&bytes).unwrap();
        prop_assert_eq!(e.kind, kind);
        prop_assert_eq!(e.published_at_micros, micros);
        prop_assert_eq!(&e.correlation[..], &correlation[..]);
        prop_assert_eq!(&e.connection[..], &connection[..]);
        prop_assert_eq!(
            e.position.as_ref().map(|p| (p.epoch.to_vec(), p.seq)),
            position.map(|(ep, s)| (ep.into_bytes(), s))
        );
        prop_assert_eq!(&e.body[..], &body[..]);
        let again = reencode(&e);
        prop_assert_eq!(again, bytes.clone());
        // Every cut into the header (before the body starts) is refused.
        for cut in 0..13 + correlation.len() + connection.len() + rendered.len() {
            prop_assert_eq!(Envelope::decode(&bytes.slice(..cut)), Err(EnvelopeError::Truncated));
        }
    }

    /// Decoding arbitrary bytes never panics; what decodes re-encodes to the same bytes;
    /// refusals name the right reason.
    #[test]
    fn envelope_decode_never_panics(
        data in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..64),
            // Mostly-valid headers: the current version, a known kind, short length bytes.
            (1u8..=8, prop::collection::vec(any::<u8>(), 10..80), 0u8..40, 0u8..40, 0u8..12)
                .prop_map(|(k, mut rest, corr, conn, pos)| {
                    rest[8] = corr;
                    let at = 9 + usize::from(corr);
                    if rest.len() > at {
                        rest[at] = conn;
                    }
                    let at = at + 1 + usize::from(conn);
                    if rest.len() > at {
                        rest[at] = pos;
                    }
                    let mut v = vec![2, k];
                    v.extend(rest);
                    v
                }),
        ],
    ) {
        let payload = Bytes::from(data.clone());
        // Offsets of the three length bytes, where the payload has them.
        let corr_at = 10;
        let conn_at = data.get(corr_at).map(|n| corr_at + 1 + usize::from(*n));
        let pos_at = conn_at.and_then(|c| data.get(c)).map(|n| conn_at.unwrap_or(0) + 1 + usize::from(*n));
        let body_at = pos_at.and_then(|p| data.get(p)).map(|n| pos_at.unwrap_or(0) + 1 + usize::from(*n));
        match Envelope::decode(&payload) {
            Ok(e) => {
                prop_assert_eq!(&reencode(&e)[..], &data[..]);
            }
            Err(EnvelopeError::Truncated) => {
                let complete = data.len() >= 2 && body_at.is_some_and(|b| data.len() >= b);
                prop_assert!(!complete, "refused a complete header: {:?}", data);
            }
            Err(EnvelopeError::Version(v)) => {
                prop_assert_eq!(Some(&v), data.first());
                prop_assert_ne!(v, 2);
            }
            Err(EnvelopeError::Kind(k)) => {
                prop_assert_eq!(Some(&k), data.get(1));
                prop_assert!(k == 0 || k > 8);
            }
            Err(EnvelopeError::Position) => {
                let (p, b) = (pos_at.unwrap(), body_at.unwrap());
                let raw = Bytes::copy_from_slice(&data[p + 1..b]);
                prop_assert!(Position::parse(&raw).is_none(), "refused a valid position: {:?}", raw);
            }
        }
    }
}

/// The bytes a decoded envelope came from, built again from its fields.
fn reencode(e: &Envelope) -> Bytes {
    let head = Envelope::head(e.kind, e.published_at_micros, &e.correlation, &e.connection);
    let position = e
        .position
        .as_ref()
        .map(|p| Position::render(&p.epoch, p.seq))
        .unwrap_or_default();
    Envelope::assemble(&head, &position, &e.body)
}

#[test]
fn ids_longer_than_255_bytes_are_cut_not_misframed() {
    let long = vec![b'c'; 300];
    let bytes = Envelope::encode(Kind::Send, 7, &long, &long, b"body");
    let e = Envelope::decode(&bytes).unwrap();
    assert_eq!(&e.correlation[..], &long[..255]);
    assert_eq!(&e.connection[..], &long[..255]);
    assert_eq!(&e.body[..], b"body");
}

// ---------------------------------------------------------------------------------------
// Publish body
// ---------------------------------------------------------------------------------------

/// What every accepted publish body must satisfy, including that the Invocation record
/// built from it is one record a client parses back to the same target and arguments.
fn check_publish_body(body: &PublishBody) -> Result<(), TestCaseError> {
    prop_assert!(!body.target.is_empty());
    prop_assert!(body.target.len() <= MAX_TARGET_BYTES);
    prop_assert!(
        !body.target.chars().any(char::is_control),
        "target {:?}",
        body.target
    );
    let args: Value = serde_json::from_str(&body.arguments_json).expect("arguments are JSON");
    let Value::Array(args) = args else {
        return Err(TestCaseError::fail(format!(
            "arguments {:?} are not an array",
            body.arguments_json
        )));
    };
    let record = message::invocation(&body.target, &body.arguments_json);
    let record = record
        .strip_suffix('\u{1e}')
        .expect("record ends with the separator");
    prop_assert!(
        !record.contains(RS),
        "record {:?} holds a separator",
        record
    );
    match ClientMessage::parse(record.as_bytes()) {
        Ok(ClientMessage::Invocation {
            invocation_id: None,
            target,
            arguments,
            stream_ids,
        }) => {
            prop_assert_eq!(&target, &body.target);
            prop_assert_eq!(arguments, args);
            prop_assert!(stream_ids.is_empty());
        }
        other => {
            return Err(TestCaseError::fail(format!(
                "record {record:?} parsed as {other:?}"
            )))
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn publish_body_never_panics_on_bytes(input in hostile_bytes()) {
        if let Ok(body) = PublishBody::parse(&input) {
            check_publish_body(&body)?;
        }
    }

    #[test]
    fn publish_body_never_panics_on_json(input in json_text()) {
        if let Ok(body) = PublishBody::parse(&input) {
            check_publish_body(&body)?;
        }
    }

    /// Bodies with a `target` and `arguments` of arbitrary values: accepted exactly when
    /// the target is valid and the arguments are an array (or null, or absent).
    #[test]
    fn publish_body_accepts_exactly_valid_bodies(
        target in prop_oneof![
            valid_target().prop_map(Value::String),
            json_string().prop_map(Value::String),
            json_value(),
        ],
        arguments in prop::option::of(prop_oneof![
            prop::collection::vec(json_value(), 0..5).prop_map(Value::Array),
            json_value(),
        ]),
        azure_casing in any::<bool>(),
        pretty in any::<bool>(),
    ) {
        let (t, a) = if azure_casing { ("Target", "Arguments") } else { ("target", "arguments") };
        let mut obj = Map::new();
        obj.insert(t.into(), target.clone());
        if let Some(args) = &arguments {
            obj.insert(a.into(), args.clone());
        }
        let obj = Value::Object(obj);
        let text = if pretty { serde_json::to_string_pretty(&obj) } else { serde_json::to_string(&obj) }.unwrap();
        let result = PublishBody::parse(text.as_bytes());

        let target_ok = matches!(&target, Value::String(s)
            if !s.is_empty() && s.len() <= MAX_TARGET_BYTES && !s.chars().any(char::is_control));
        let args_ok = matches!(&arguments, None | Some(Value::Null) | Some(Value::Array(_)));
        prop_assert_eq!(result.is_ok(), target_ok && args_ok, "{} -> {:?}", text, result);
        if let Ok(body) = result {
            check_publish_body(&body)?;
            prop_assert_eq!(Value::String(body.target.clone()), target);
            let want = match arguments {
                Some(Value::Array(a)) => reparsed(&Value::Array(a)),
                _ => json!([]),
            };
            let got: Value = serde_json::from_str(&body.arguments_json).unwrap();
            prop_assert_eq!(got, want);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Send requests: the path's name, the headers and the body, as the send routes check them
// ---------------------------------------------------------------------------------------

/// A name as a path segment may carry it: ordinary, with `:` and `/`, control
/// characters, the shape of a connection id, too long, empty.
fn path_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z0-9:./_-]{1,20}",
        1 => json_string(),
        1 => "\\PC{0,12}",
        1 => "[A-Za-z0-9_-]{22}",
        1 => (250usize..300).prop_map(|n| "g".repeat(n)),
        1 => Just(String::new()),
    ]
}

/// A header's bytes, or no header.
fn header_bytes(shaped: BoxedStrategy<String>) -> impl Strategy<Value = Option<Vec<u8>>> {
    prop::option::of(prop_oneof![
        3 => shaped.prop_map(String::into_bytes),
        2 => "[ -~]{0,300}".prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 0..300),
    ])
}

fn trace_parent() -> BoxedStrategy<String> {
    prop_oneof![
        "00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]",
        Just(format!("00-{}-{}-01", "0".repeat(32), "1".repeat(16))),
        "[0-9a-f-]{0,60}",
    ]
    .boxed()
}

#[derive(Debug, Clone)]
enum PathKind {
    Hub,
    Group,
    User,
    Connection,
}

fn send_path<'a>(kind: &PathKind, name: &'a str) -> SendPath<'a> {
    match kind {
        PathKind::Hub => SendPath::Hub,
        PathKind::Group => SendPath::Group(name),
        PathKind::User => SendPath::User(name),
        PathKind::Connection => SendPath::Connection(name),
    }
}

/// Builds the headers a request could carry (bytes no header value may hold leave the
/// header out, as the HTTP layer would refuse the request first); returns the values kept.
fn headers(given: [(&'static str, &Option<Vec<u8>>); 3]) -> (HeaderMap, [Option<HeaderValue>; 3]) {
    let mut map = HeaderMap::new();
    let kept = given.map(|(name, bytes)| {
        let v = bytes
            .as_deref()
            .and_then(|b| HeaderValue::from_bytes(b).ok())?;
        map.insert(name, v.clone());
        Some(v)
    });
    (map, kept)
}

/// A request is refused by the first check it fails, in the routes' order (name, body,
/// correlation id, idempotency key), and an accepted one carries exactly what it sent.
fn check_send_request(
    kind: &PathKind,
    name: &str,
    given: [Option<Vec<u8>>; 3],
    body: &[u8],
) -> Result<(), TestCaseError> {
    let [corr_given, trace_given, idem_given] = &given;
    let (map, [corr, trace, idem]) = headers([
        ("x-correlation-id", corr_given),
        ("traceparent", trace_given),
        ("idempotency-key", idem_given),
    ]);
    let scope = PublisherScope("scope-1".into());
    let result = SendRequest::parse(
        send_path(kind, name),
        &map,
        &scope,
        Ok(Bytes::copy_from_slice(body)),
    );

    let name_ok = match kind {
        PathKind::Hub => true,
        PathKind::Group => GroupName::parse(name).is_ok(),
        PathKind::User => UserId::parse(name).is_ok(),
        PathKind::Connection => ConnectionId::parse(name).is_some(),
    };
    if !name_ok {
        prop_assert!(
            matches!(
                result,
                Err(ApiError::InvalidName { .. } | ApiError::UnknownConnection(_))
            ),
            "a bad name is refused first, whatever follows: {:?}",
            result
        );
        return Ok(());
    }
    if let Err(why) = PublishBody::parse(body) {
        prop_assert!(
            matches!(&result, Err(ApiError::BadRequest(m)) if *m == why),
            "{:?}",
            result
        );
        return Ok(());
    }
    let corr_text = corr
        .as_ref()
        .map(|v| v.to_str().ok().and_then(CorrelationId::parse));
    if let Some(None) = corr_text {
        prop_assert!(
            matches!(&result, Err(ApiError::BadRequest(m)) if m.contains("X-Correlation-Id")),
            "{:?}",
            result
        );
        return Ok(());
    }
    let idem_text = idem.as_ref().map(|v| {
        v.to_str()
            .ok()
            .filter(|k| {
                (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
            })
            .map(str::to_owned)
    });
    if let Some(None) = idem_text {
        prop_assert!(
            matches!(&result, Err(ApiError::BadRequest(m)) if m.contains("Idempotency-Key")),
            "{:?}",
            result
        );
        return Ok(());
    }

    let req = match result {
        Ok(req) => req,
        Err(e) => return Err(TestCaseError::fail(format!("refused a valid request: {e}"))),
    };
    match (&req.audience, kind) {
        (Audience::Hub, PathKind::Hub) => {}
        (Audience::Group(g), PathKind::Group) => prop_assert_eq!(g.as_str(), name),
        (Audience::User(u), PathKind::User) => prop_assert_eq!(u.as_str(), name),
        (Audience::Connection(c), PathKind::Connection) => prop_assert_eq!(c.as_str(), name),
        (a, k) => return Err(TestCaseError::fail(format!("{k:?} path gave {a:?}"))),
    }
    check_publish_body(&req.body)?;
    let trace_id = trace
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.split('-').nth(1))
        .filter(|id| {
            id.len() == 32
                && id.bytes().all(|b| b.is_ascii_hexdigit())
                && id.bytes().any(|b| b != b'0')
        });
    let c = req.correlation.as_str();
    match (corr_text.flatten(), trace_id) {
        (Some(sent), _) => prop_assert_eq!(c, sent.as_str(), "X-Correlation-Id wins"),
        (None, Some(t)) => prop_assert_eq!(c, t, "then the trace id"),
        (None, None) => prop_assert!(
            c.len() == 32 && c.bytes().all(|b| b.is_ascii_hexdigit()),
            "else a new one: {}",
            c
        ),
    }
    match (req.idempotency, idem_text.flatten()) {
        (None, None) => {}
        (Some(k), Some(sent)) => {
            prop_assert_eq!(&k.key, &sent);
            prop_assert_eq!(&k.scope, &scope.0);
            prop_assert!(
                k.exact,
                "a client's own publish repeats only with the same arguments"
            );
            // Whatever the key, its Redis name has one size.
            let keys = Keys::new("p");
            prop_assert_eq!(
                keys.idempotency(&k.scope, &k.key, "p:tasks:group:{g}")
                    .len(),
                "p:idem:scope-1::{g}".len() + 32
            );
        }
        (got, sent) => {
            return Err(TestCaseError::fail(format!(
                "key {got:?} for header {sent:?}"
            )))
        }
    }
    if let Audience::Group(g) = &req.audience {
        let keys = Keys::new("p");
        let bucket = keys.rate("tasks", g.as_str(), &req.body.target);
        // Fixed size before the group channel's hash tag, whatever the target holds.
        let tag = hubcast::keys::tag_of(&bucket);
        prop_assert_eq!(
            bucket.len() - tag.len(),
            "p:throttle:rate:tasks::".len() + 64
        );
        let channel = keys.group_channel("tasks", g.as_str());
        prop_assert_eq!(tag, hubcast::keys::tag_of(&channel));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn send_requests_are_checked_in_the_routes_order(
        kind in prop_oneof![
            Just(PathKind::Hub),
            Just(PathKind::Group),
            Just(PathKind::User),
            Just(PathKind::Connection),
        ],
        name in path_name(),
        corr in header_bytes("[!-~]{1,130}".boxed()),
        trace in header_bytes(trace_parent()),
        idem in header_bytes("[ -~]{0,260}".boxed()),
        body in prop_oneof![
            2 => (valid_target(), prop::collection::vec(json_value(), 0..3)).prop_map(|(t, a)| {
                serde_json::to_vec(&json!({"target": t, "arguments": a})).unwrap()
            }),
            1 => hostile_bytes(),
        ],
    ) {
        check_send_request(&kind, &name, [corr, trace, idem], &body)?;
    }

    /// Wherever a `:` falls between group and target, the bucket is another one.
    #[test]
    fn rate_buckets_differ_for_every_split_of_the_same_text(
        text in "[a-z:]{2,16}",
        i in any::<prop::sample::Index>(),
        j in any::<prop::sample::Index>(),
    ) {
        let (i, j) = (i.index(text.len() + 1), j.index(text.len() + 1));
        prop_assume!(i != j);
        let keys = Keys::new("p");
        prop_assert_ne!(
            keys.rate("h", &text[..i], &text[i..]),
            keys.rate("h", &text[..j], &text[j..])
        );
    }

    /// Two different URLs never name each other's breaker or failure list.
    #[test]
    fn webhook_breaker_keys_of_different_urls_never_meet(
        a in "https://[a-z.-]{1,10}/[a-z:/]{0,12}",
        suffix in prop_oneof![Just(":failures".to_owned()), "[a-z:/.-]{1,6}"],
    ) {
        let b = format!("{a}{suffix}");
        let keys = Keys::new("p");
        let names = [keys.breaker(&a), keys.breaker_failures(&a), keys.breaker(&b), keys.breaker_failures(&b)];
        for (n, name) in names.iter().enumerate() {
            prop_assert!(!names[n + 1..].contains(name), "{} named twice", name);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Hostile shapes that property generators rarely reach
// ---------------------------------------------------------------------------------------

#[test]
fn deep_nesting_is_refused_without_overflowing_the_stack() {
    for depth in [127usize, 128, 129, 10_000, 200_000] {
        for (open, close) in [("[", "]"), ("{\"a\":", "}")] {
            let text = format!("{}1{}", open.repeat(depth), close.repeat(depth));
            let _ = ClientMessage::parse(text.as_bytes());
            let _ = handshake::parse(text.as_bytes());
            let _ = PublishBody::parse(text.as_bytes());
            let inside = format!("{{\"type\":1,\"target\":\"T\",\"arguments\":[{text}]}}");
            let _ = ClientMessage::parse(inside.as_bytes());
            let publish = format!("{{\"target\":\"T\",\"arguments\":[{text}]}}");
            if let Ok(body) = PublishBody::parse(publish.as_bytes()) {
                // An accepted body must still make a record clients can parse.
                let record = message::invocation(&body.target, &body.arguments_json);
                let record = record.trim_end_matches('\u{1e}');
                assert!(
                    ClientMessage::parse(record.as_bytes()).is_ok(),
                    "publish body nested {depth} deep accepted, but its record does not parse"
                );
            }
        }
    }
    // A long flat array of many small values parses fine.
    let wide = format!(
        "{{\"type\":1,\"target\":\"T\",\"arguments\":[{}0]}}",
        "0,".repeat(100_000)
    );
    assert!(ClientMessage::parse(wide.as_bytes()).is_ok());
}
