//! The MessagePack hub protocol, as ASP.NET Core SignalR defines it: each message is a
//! MessagePack array behind a VarInt length prefix, carried in binary WebSocket frames.
//!
//! | message | array |
//! |---|---|
//! | Invocation | `[1, headers, invocationId or nil, target, arguments, streamIds?]` |
//! | StreamItem | `[2, headers, invocationId, item]` |
//! | Completion | `[3, headers, invocationId, resultKind (1 error, 2 void, 3 result), error or result?]` |
//! | StreamInvocation | `[4, headers, invocationId, target, arguments, streamIds?]` |
//! | CancelInvocation | `[5, headers, invocationId]` |
//! | Ping | `[6]` |
//! | Close | `[7, error or nil, allowReconnect?]` |
//! | Ack, Sequence | `[8, sequenceId]`, `[9, sequenceId]` |
//!
//! Arguments map between JSON and MessagePack value for value, as ASP.NET's MessagePack
//! protocol writes them: integers stay integers, other numbers are float64, objects are
//! maps with string keys. Events are published as JSON; a node transcodes each message
//! once per protocol ([`from_json_invocation`]), never per recipient.

use rmpv::Value as Mp;
use serde_json::Value;

use super::framing::{write_length_prefix, RECORD_SEPARATOR};
use super::message::{ClientMessage, ProtocolError, MAX_INVOCATION_ID};

/// Deepest nesting read from a client, as for JSON records.
const MAX_DEPTH: usize = 128;

/// The keep-alive Ping message, framed.
pub fn ping() -> Vec<u8> {
    framed(&Mp::Array(vec![Mp::from(6)]))
}

/// Parses one message (without its length prefix).
///
/// # Errors
/// Not a MessagePack array of a known shape.
pub fn parse(record: &[u8]) -> Result<ClientMessage, ProtocolError> {
    let mut rd = record;
    let value = rmpv::decode::read_value_with_max_depth(&mut rd, MAX_DEPTH)
        .map_err(|e| ProtocolError(format!("Reading the MessagePack message failed: {e}")))?;
    let Mp::Array(items) = value else {
        return Err(ProtocolError(
            "A message must be a MessagePack array.".into(),
        ));
    };
    let kind = items
        .first()
        .and_then(Mp::as_u64)
        .ok_or_else(|| ProtocolError("Reading 'messageType' as Int32 failed.".into()))?;
    let field = |i: usize| items.get(i).unwrap_or(&Mp::Nil);
    let id = |i: usize| -> Result<String, ProtocolError> {
        match field(i) {
            Mp::String(s) => match s.as_str() {
                Some(s) if s.len() <= MAX_INVOCATION_ID => Ok(s.to_owned()),
                Some(_) => Err(ProtocolError("The invocation id is too long.".into())),
                None => Err(ProtocolError("The invocation id is not UTF-8.".into())),
            },
            _ => Err(ProtocolError(
                "Reading 'invocationId' as String failed.".into(),
            )),
        }
    };
    let text = |i: usize, name: &str| -> Result<String, ProtocolError> {
        field(i)
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| ProtocolError(format!("Reading '{name}' as String failed.")))
    };
    Ok(match kind {
        1 => ClientMessage::Invocation {
            invocation_id: match field(2) {
                Mp::Nil => None,
                _ => Some(id(2)?),
            },
            target: text(3, "target")?,
            arguments: arguments(field(4))?,
            stream_ids: strings(field(5)),
        },
        2 => ClientMessage::StreamItem {
            invocation_id: id(2)?,
        },
        3 => ClientMessage::Completion {
            invocation_id: id(2)?,
        },
        4 => ClientMessage::StreamInvocation {
            invocation_id: id(2)?,
            target: text(3, "target")?,
        },
        5 => ClientMessage::CancelInvocation {
            invocation_id: id(2)?,
        },
        6 => ClientMessage::Ping,
        7 => ClientMessage::Close {
            error: field(1).as_str().map(str::to_owned),
        },
        8 | 9 => {
            let sequence_id = field(1)
                .as_u64()
                .ok_or_else(|| ProtocolError("Reading 'sequenceId' as Int64 failed.".into()))?;
            if kind == 8 {
                ClientMessage::Ack { sequence_id }
            } else {
                ClientMessage::Sequence { sequence_id }
            }
        }
        other => ClientMessage::Unknown(other),
    })
}

fn arguments(v: &Mp) -> Result<Vec<Value>, ProtocolError> {
    match v {
        Mp::Array(items) => items.iter().map(to_json).collect(),
        _ => Err(ProtocolError("Reading 'arguments' as Array failed.".into())),
    }
}

fn strings(v: &Mp) -> Vec<String> {
    match v {
        Mp::Array(items) => items
            .iter()
            .filter_map(|i| i.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// A client's MessagePack value as JSON, for the hub methods (which take JSON values).
fn to_json(v: &Mp) -> Result<Value, ProtocolError> {
    Ok(match v {
        Mp::Nil => Value::Null,
        Mp::Boolean(b) => Value::Bool(*b),
        Mp::Integer(i) => match (i.as_i64(), i.as_u64()) {
            (Some(n), _) => Value::from(n),
            (None, Some(n)) => Value::from(n),
            _ => Value::Null,
        },
        Mp::F32(f) => {
            serde_json::Number::from_f64(f64::from(*f)).map_or(Value::Null, Value::Number)
        }
        Mp::F64(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        Mp::String(s) => Value::String(
            s.as_str()
                .ok_or_else(|| ProtocolError("A string argument is not UTF-8.".into()))?
                .to_owned(),
        ),
        Mp::Array(items) => Value::Array(items.iter().map(to_json).collect::<Result<_, _>>()?),
        Mp::Map(pairs) => {
            let mut m = serde_json::Map::new();
            for (k, v) in pairs {
                let key = k.as_str().ok_or_else(|| {
                    ProtocolError("A map argument's keys must be strings.".into())
                })?;
                m.insert(key.to_owned(), to_json(v)?);
            }
            Value::Object(m)
        }
        Mp::Binary(_) | Mp::Ext(..) => {
            return Err(ProtocolError(
                "Binary and extension values are not accepted as arguments.".into(),
            ))
        }
    })
}

/// A JSON value as MessagePack.
fn to_mp(v: &Value) -> Mp {
    match v {
        Value::Null => Mp::Nil,
        Value::Bool(b) => Mp::Boolean(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => Mp::from(i),
            (None, Some(u), _) => Mp::from(u),
            (_, _, Some(f)) => Mp::F64(f),
            _ => Mp::Nil,
        },
        Value::String(s) => Mp::from(s.as_str()),
        Value::Array(items) => Mp::Array(items.iter().map(to_mp).collect()),
        Value::Object(m) => Mp::Map(
            m.iter()
                .map(|(k, v)| (Mp::from(k.as_str()), to_mp(v)))
                .collect(),
        ),
    }
}

/// `[1, {}, nil, target, arguments, []]`, framed: six elements, as ASP.NET writes it
/// (signalrcore reads the stream ids and drops a frame without them).
pub fn invocation(target: &str, arguments: &[Value]) -> Vec<u8> {
    framed(&Mp::Array(vec![
        Mp::from(1),
        Mp::Map(Vec::new()),
        Mp::Nil,
        Mp::from(target),
        Mp::Array(arguments.iter().map(to_mp).collect()),
        Mp::Array(Vec::new()),
    ]))
}

/// The MessagePack form of a JSON Invocation record (`{"type":1,"target":…,
/// "arguments":[…]}`, with or without its separator), as a publishing node encoded it.
///
/// # Errors
/// The record is not such an Invocation.
pub fn from_json_invocation(record: &[u8]) -> Result<Vec<u8>, ProtocolError> {
    #[derive(serde::Deserialize)]
    struct Record {
        target: String,
        arguments: Vec<Value>,
    }
    let body = record.strip_suffix(&[RECORD_SEPARATOR]).unwrap_or(record);
    let r: Record = serde_json::from_slice(body)
        .map_err(|e| ProtocolError(format!("not an invocation record: {e}")))?;
    Ok(invocation(&r.target, &r.arguments))
}

/// A Completion of a method without a result: `[3, {}, id, 2]`.
pub fn completion_void(invocation_id: &str) -> Vec<u8> {
    framed(&Mp::Array(vec![
        Mp::from(3),
        Mp::Map(Vec::new()),
        Mp::from(invocation_id),
        Mp::from(2),
    ]))
}

/// A Completion carrying an error text: `[3, {}, id, 1, error]`.
pub fn completion_error(invocation_id: &str, error: &str) -> Vec<u8> {
    framed(&Mp::Array(vec![
        Mp::from(3),
        Mp::Map(Vec::new()),
        Mp::from(invocation_id),
        Mp::from(1),
        Mp::from(error),
    ]))
}

/// An Ack: `[8, sequenceId]`.
pub fn ack(sequence_id: u64) -> Vec<u8> {
    framed(&Mp::Array(vec![Mp::from(8), Mp::from(sequence_id)]))
}

/// A Sequence: `[9, sequenceId]`.
pub fn sequence(sequence_id: u64) -> Vec<u8> {
    framed(&Mp::Array(vec![Mp::from(9), Mp::from(sequence_id)]))
}

/// A Close message: `[7, error or nil, allowReconnect]`.
pub fn close(error: Option<&str>, allow_reconnect: bool) -> Vec<u8> {
    framed(&Mp::Array(vec![
        Mp::from(7),
        error.map_or(Mp::Nil, Mp::from),
        Mp::Boolean(allow_reconnect),
    ]))
}

/// A value behind its VarInt length prefix.
fn framed(v: &Mp) -> Vec<u8> {
    let mut body = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = rmpv::encode::write_value(&mut body, v);
    let mut out = Vec::with_capacity(body.len() + 5);
    write_length_prefix(&mut out, body.len());
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn unframe(bytes: &[u8]) -> Mp {
        let (start, len) = super::super::framing::read_length_prefix(bytes)
            .unwrap()
            .unwrap();
        assert_eq!(bytes.len(), start + len, "one whole message");
        let mut rd = &bytes[start..];
        rmpv::decode::read_value(&mut rd).unwrap()
    }

    #[test]
    fn a_json_invocation_becomes_the_same_values_in_messagepack() {
        let args = json!([{"n": 1, "neg": -7, "f": 2.5, "f2": 985.690_694_632_869_5, "s": "ünï", "b": true, "z": null,
            "big": 9_007_199_254_740_991_u64, "a": [], "o": {}}]);
        let record = super::super::message::invocation("Hello", &args.to_string());
        let mp = from_json_invocation(record.as_bytes()).unwrap();
        let Mp::Array(items) = unframe(&mp) else {
            panic!("an array")
        };
        assert_eq!(items[0], Mp::from(1));
        assert_eq!(items[2], Mp::Nil, "no invocation id: nothing to answer");
        assert_eq!(items[3].as_str(), Some("Hello"));
        assert_eq!(items.len(), 6, "with the empty stream ids");
        assert_eq!(items[5], Mp::Array(vec![]));
        assert_eq!(
            arguments(&items[4]).unwrap(),
            args.as_array().unwrap().clone()
        );
    }

    #[test]
    fn client_invocations_parse_with_or_without_an_id() {
        let with = framed(&Mp::Array(vec![
            Mp::from(1),
            Mp::Map(vec![]),
            Mp::from("7"),
            Mp::from("JoinGroup"),
            Mp::Array(vec![Mp::from("g")]),
            Mp::Array(vec![]),
        ]));
        let (start, _) = super::super::framing::read_length_prefix(&with)
            .unwrap()
            .unwrap();
        assert_eq!(
            parse(&with[start..]).unwrap(),
            ClientMessage::Invocation {
                invocation_id: Some("7".into()),
                target: "JoinGroup".into(),
                arguments: vec![json!("g")],
                stream_ids: vec![],
            }
        );
        let ping = ping();
        assert_eq!(parse(&ping[1..]).unwrap(), ClientMessage::Ping);
        assert_eq!(
            parse(&ack(300)[1..]).unwrap(),
            ClientMessage::Ack { sequence_id: 300 }
        );
        assert_eq!(
            parse(&sequence(7)[1..]).unwrap(),
            ClientMessage::Sequence { sequence_id: 7 }
        );
    }

    #[test]
    fn malformed_messages_are_protocol_errors() {
        for bad in [
            &[0xc1][..],                           // never used marker
            &[0x01],                               // not an array
            &[0x91, 0xa1, b'x'],                   // type is not an integer
            &[0x95, 0x01, 0x80, 0xc0, 0x01, 0x90], // target is not a string
            &[0x93, 0x01, 0x80, 0x05],             // invocation id is not a string
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let binary_arg = framed(&Mp::Array(vec![
            Mp::from(1),
            Mp::Map(vec![]),
            Mp::Nil,
            Mp::from("M"),
            Mp::Array(vec![Mp::Binary(vec![1])]),
        ]));
        assert!(parse(&binary_arg[1..]).is_err());
    }

    #[test]
    fn completions_and_close_have_asp_net_shapes() {
        assert_eq!(
            unframe(&completion_void("1")),
            Mp::Array(vec![
                Mp::from(3),
                Mp::Map(vec![]),
                Mp::from("1"),
                Mp::from(2)
            ])
        );
        assert_eq!(
            unframe(&completion_error("1", "no")),
            Mp::Array(vec![
                Mp::from(3),
                Mp::Map(vec![]),
                Mp::from("1"),
                Mp::from(1),
                Mp::from("no")
            ])
        );
        assert_eq!(
            unframe(&close(None, true)),
            Mp::Array(vec![Mp::from(7), Mp::Nil, Mp::Boolean(true)])
        );
    }
}
