//! Hub messages: parsing what clients send and encoding what the server sends.
//!
//! Parsing is order-independent (the JS client writes `type` last) and skips unknown
//! properties; unknown message types are ignored, as ASP.NET does. Encoding omits absent
//! optional fields instead of writing `null` (the JS client kills the connection on
//! `"invocationId": null`).

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

/// Longest invocation id accepted from a client, in bytes (the spec lets a callee refuse
/// unreasonably long ids; ours come back in Completions, so they are bounded).
pub const MAX_INVOCATION_ID: usize = 128;

/// A message received from a client.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    /// Type 1: call a hub method. No `invocation_id` means fire-and-forget.
    Invocation {
        /// Echoed in the Completion; absent for fire-and-forget.
        invocation_id: Option<String>,
        /// The method name (matched case-insensitively).
        target: String,
        /// Positional arguments.
        arguments: Vec<Value>,
        /// Upload stream ids; hubcast has no streaming methods, so any is an error.
        stream_ids: Vec<String>,
    },
    /// Type 2: an item of an upload stream.
    StreamItem {
        /// The stream id.
        invocation_id: String,
    },
    /// Type 3: a Completion (end of an upload stream, or a client result).
    Completion {
        /// The id completed.
        invocation_id: String,
    },
    /// Type 4: invoke a streaming hub method.
    StreamInvocation {
        /// Echoed in the Completion.
        invocation_id: String,
        /// The method name.
        target: String,
    },
    /// Type 5: cancel an invocation; unknown ids are ignored.
    CancelInvocation {
        /// The id to cancel.
        invocation_id: String,
    },
    /// Type 6: keep-alive.
    Ping,
    /// Type 7: the client is closing.
    Close {
        /// The client's error text, if any.
        error: Option<String>,
    },
    /// Type 8: stateful reconnect: the peer processed our trackable messages up to this
    /// id.
    Ack {
        /// The last id processed.
        sequence_id: u64,
    },
    /// Type 9: stateful reconnect: the id of the first message the peer (re)sends on a
    /// new transport.
    Sequence {
        /// That id.
        sequence_id: u64,
    },
    /// A type this server does not know; ignored for forward compatibility.
    Unknown(u64),
}

/// A record that is not a valid hub message. The text follows ASP.NET's wording.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("InvalidDataException: {0}")]
pub struct ProtocolError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, ProtocolError> {
    Err(ProtocolError(msg.into()))
}

#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(rename = "type")]
    kind: Option<Value>,
    #[serde(rename = "invocationId", borrow)]
    invocation_id: Option<&'a RawValue>,
    target: Option<Value>,
    arguments: Option<Value>,
    #[serde(rename = "streamIds")]
    stream_ids: Option<Value>,
    error: Option<Value>,
    #[serde(rename = "sequenceId")]
    sequence_id: Option<Value>,
}

fn sequence_id(value: Option<Value>) -> Result<u64, ProtocolError> {
    match value {
        Some(Value::Number(n)) => n
            .as_u64()
            .ok_or_else(|| ProtocolError("Expected 'sequenceId' to be of type Integer.".into())),
        Some(_) => err("Expected 'sequenceId' to be of type Integer."),
        None => err("Missing required property 'sequenceId'."),
    }
}

fn string_id(raw: Option<&RawValue>, required: bool) -> Result<Option<String>, ProtocolError> {
    let Some(raw) = raw else {
        return if required {
            err("Missing required property 'invocationId'.")
        } else {
            Ok(None)
        };
    };
    match serde_json::from_str::<Value>(raw.get()) {
        Ok(Value::String(s)) if !s.is_empty() && s.len() <= MAX_INVOCATION_ID => Ok(Some(s)),
        Ok(Value::String(s)) if s.is_empty() => err("Property 'invocationId' must not be empty."),
        Ok(Value::String(_)) => err(format!(
            "Property 'invocationId' is longer than {MAX_INVOCATION_ID} characters."
        )),
        _ => err("Expected 'invocationId' to be of type String."),
    }
}

fn string_field(value: Option<Value>, name: &str) -> Result<String, ProtocolError> {
    match value {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        Some(Value::String(_)) => err(format!("Property '{name}' must not be empty.")),
        Some(_) => err(format!("Expected '{name}' to be of type String.")),
        None => err(format!("Missing required property '{name}'.")),
    }
}

impl ClientMessage {
    /// Parses one record (without its separator).
    ///
    /// # Errors
    /// [`ProtocolError`] for anything that is not a valid message; the connection is then
    /// closed with that text.
    pub fn parse(record: &[u8]) -> Result<Self, ProtocolError> {
        let raw: Raw<'_> = serde_json::from_slice(record)
            .map_err(|e| ProtocolError(format!("Error reading JSON: {e}")))?;
        let kind = match raw.kind {
            Some(Value::Number(n)) => n
                .as_u64()
                .ok_or_else(|| ProtocolError("Expected 'type' to be of type Integer.".into()))?,
            Some(_) => return err("Expected 'type' to be of type Integer."),
            None => return err("Missing required property 'type'."),
        };
        Ok(match kind {
            1 => {
                let invocation_id = string_id(raw.invocation_id, false)?;
                let target = string_field(raw.target, "target")?;
                let arguments = match raw.arguments {
                    Some(Value::Array(a)) => a,
                    Some(_) => return err("Expected 'arguments' to be of type Array."),
                    None => return err("Missing required property 'arguments'."),
                };
                let stream_ids = match raw.stream_ids {
                    None | Some(Value::Null) => Vec::new(),
                    Some(Value::Array(ids)) => ids
                        .into_iter()
                        .map(|v| match v {
                            Value::String(s) => Ok(s),
                            _ => err("Expected 'streamIds' to hold strings."),
                        })
                        .collect::<Result<_, _>>()?,
                    Some(_) => return err("Expected 'streamIds' to be of type Array."),
                };
                ClientMessage::Invocation {
                    invocation_id,
                    target,
                    arguments,
                    stream_ids,
                }
            }
            2 => ClientMessage::StreamItem {
                invocation_id: string_id(raw.invocation_id, true)?.unwrap_or_default(),
            },
            3 => ClientMessage::Completion {
                invocation_id: string_id(raw.invocation_id, true)?.unwrap_or_default(),
            },
            4 => ClientMessage::StreamInvocation {
                invocation_id: string_id(raw.invocation_id, true)?.unwrap_or_default(),
                target: string_field(raw.target, "target")?,
            },
            5 => ClientMessage::CancelInvocation {
                invocation_id: string_id(raw.invocation_id, true)?.unwrap_or_default(),
            },
            6 => ClientMessage::Ping,
            7 => ClientMessage::Close {
                error: match raw.error {
                    Some(Value::String(s)) => Some(s),
                    _ => None,
                },
            },
            8 => ClientMessage::Ack {
                sequence_id: sequence_id(raw.sequence_id)?,
            },
            9 => ClientMessage::Sequence {
                sequence_id: sequence_id(raw.sequence_id)?,
            },
            other => ClientMessage::Unknown(other),
        })
    }

    /// Whether stateful reconnect numbers and buffers this message (the others are
    /// neither: handshake, Ping, Close, Ack, Sequence).
    pub fn is_trackable(&self) -> bool {
        matches!(
            self,
            Self::Invocation { .. }
                | Self::StreamItem { .. }
                | Self::Completion { .. }
                | Self::StreamInvocation { .. }
                | Self::CancelInvocation { .. }
        )
    }
}

/// An Ack record: this side processed the peer's trackable messages up to `sequence_id`.
pub fn ack(sequence_id: u64) -> String {
    format!("{{\"type\":8,\"sequenceId\":{sequence_id}}}\u{1e}")
}

/// A Sequence record: the first message that follows on this transport has this id.
pub fn sequence(sequence_id: u64) -> String {
    format!("{{\"type\":9,\"sequenceId\":{sequence_id}}}\u{1e}")
}

/// `{"type":6}` plus the separator.
pub const PING: &str = "{\"type\":6}\u{1e}";

/// Encodes a server-to-client Invocation record with already-serialized arguments.
///
/// `arguments_json` must be a JSON array (the caller has validated it); it is copied in as
/// is, so a publish is serialized once for all recipients.
pub fn invocation(target: &str, arguments_json: &str) -> String {
    let target = serde_json::to_string(target).unwrap_or_else(|_| "\"\"".into());
    let mut out = String::with_capacity(34 + target.len() + arguments_json.len());
    out.push_str("{\"type\":1,\"target\":");
    out.push_str(&target);
    out.push_str(",\"arguments\":");
    out.push_str(arguments_json);
    out.push_str("}\u{1e}");
    out
}

/// A Completion: `result` of `None` means a void method (no `result` key).
pub fn completion_ok(invocation_id: &str, result: Option<&Value>) -> String {
    let mut obj = serde_json::Map::new();
    obj.insert("type".into(), Value::from(3));
    obj.insert("invocationId".into(), Value::from(invocation_id));
    // A method without a return value completes with `"result": null`, as ASP.NET writes.
    obj.insert("result".into(), result.cloned().unwrap_or(Value::Null));
    record(Value::Object(obj))
}

/// A Completion carrying an error text (the JS client rejects the call with it).
pub fn completion_error(invocation_id: &str, error: &str) -> String {
    record(serde_json::json!({ "type": 3, "invocationId": invocation_id, "error": error }))
}

/// A Close record. `error` and `allowReconnect` are written only when present/true, as
/// ASP.NET does.
pub fn close(error: Option<&str>, allow_reconnect: bool) -> String {
    let mut obj = serde_json::Map::new();
    obj.insert("type".into(), Value::from(7));
    if let Some(e) = error {
        obj.insert("error".into(), Value::from(e));
    }
    if allow_reconnect {
        obj.insert("allowReconnect".into(), Value::from(true));
    }
    record(Value::Object(obj))
}

fn record(v: Value) -> String {
    let mut s = v.to_string();
    s.push('\u{1e}');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_invocation_from_the_js_client_with_type_last_parses() {
        let m = ClientMessage::parse(
            br#"{"target":"JoinGroup","arguments":["room1"],"invocationId":"0","type":1}"#,
        )
        .unwrap();
        assert_eq!(
            m,
            ClientMessage::Invocation {
                invocation_id: Some("0".into()),
                target: "JoinGroup".into(),
                arguments: vec![json!("room1")],
                stream_ids: vec![],
            }
        );
    }

    #[test]
    fn signalrcore_headers_are_ignored() {
        let m = ClientMessage::parse(
            br#"{"type":1,"headers":{"Content-Type":"application/json"},"target":"JoinGroup","arguments":["g"],"invocationId":"8c1c-uuid"}"#,
        )
        .unwrap();
        assert!(
            matches!(m, ClientMessage::Invocation { invocation_id: Some(ref id), .. } if id == "8c1c-uuid")
        );
    }

    #[test]
    fn a_fire_and_forget_invocation_has_no_id() {
        let m = ClientMessage::parse(br#"{"type":1,"target":"X","arguments":[]}"#).unwrap();
        assert!(matches!(
            m,
            ClientMessage::Invocation {
                invocation_id: None,
                ..
            }
        ));
        // ASP.NET reads a null id as no id; so do we.
        let m =
            ClientMessage::parse(br#"{"type":1,"target":"X","arguments":[],"invocationId":null}"#)
                .unwrap();
        assert!(matches!(
            m,
            ClientMessage::Invocation {
                invocation_id: None,
                ..
            }
        ));
    }

    #[test]
    fn malformed_invocations_are_protocol_errors() {
        for bad in [
            &br#"{"type":1,"target":"X","arguments":[],"invocationId":5}"#[..],
            br#"{"type":1,"target":"X","arguments":[],"invocationId":""}"#,
            br#"{"type":1,"target":"","arguments":[]}"#,
            br#"{"type":1,"target":"X"}"#,
            br#"{"type":1,"target":"X","arguments":{}}"#,
            br#"{"type":1,"arguments":[]}"#,
            br#"{"target":"X","arguments":[]}"#,
            br#"{"type":"1"}"#,
            br#"{"type":-1}"#,
            br#"[1,2]"#,
            b"{",
        ] {
            assert!(
                ClientMessage::parse(bad).is_err(),
                "accepted {}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn an_overlong_invocation_id_is_refused() {
        let rec = format!(
            r#"{{"type":1,"target":"X","arguments":[],"invocationId":"{}"}}"#,
            "a".repeat(MAX_INVOCATION_ID + 1)
        );
        assert!(ClientMessage::parse(rec.as_bytes()).is_err());
    }

    #[test]
    fn every_other_message_type_parses() {
        let cases: [(&[u8], ClientMessage); 9] = [
            (
                br#"{"type":2,"invocationId":"1","item":3}"#,
                ClientMessage::StreamItem {
                    invocation_id: "1".into(),
                },
            ),
            (
                br#"{"type":3,"invocationId":"1"}"#,
                ClientMessage::Completion {
                    invocation_id: "1".into(),
                },
            ),
            (
                br#"{"type":4,"invocationId":"2","target":"S","arguments":[]}"#,
                ClientMessage::StreamInvocation {
                    invocation_id: "2".into(),
                    target: "S".into(),
                },
            ),
            (
                br#"{"type":5,"invocationId":"2"}"#,
                ClientMessage::CancelInvocation {
                    invocation_id: "2".into(),
                },
            ),
            (br#"{"type":6}"#, ClientMessage::Ping),
            (
                br#"{"type":7,"error":"bye"}"#,
                ClientMessage::Close {
                    error: Some("bye".into()),
                },
            ),
            (
                br#"{"type":8,"sequenceId":1}"#,
                ClientMessage::Ack { sequence_id: 1 },
            ),
            (
                br#"{"sequenceId":4,"type":9}"#,
                ClientMessage::Sequence { sequence_id: 4 },
            ),
            (br#"{"type":42}"#, ClientMessage::Unknown(42)),
        ];
        for (bytes, want) in cases {
            assert_eq!(ClientMessage::parse(bytes).unwrap(), want);
        }
        assert!(
            ClientMessage::parse(br#"{"type":8}"#).is_err(),
            "an Ack needs its sequenceId"
        );
    }

    #[test]
    fn an_invocation_is_encoded_without_an_id_and_with_raw_arguments() {
        let rec = invocation("Spend\"Update", r#"[{"a":1},"é"]"#);
        assert_eq!(
            rec,
            "{\"type\":1,\"target\":\"Spend\\\"Update\",\"arguments\":[{\"a\":1},\"é\"]}\u{1e}"
        );
        let parsed: Value = serde_json::from_str(rec.trim_end_matches('\u{1e}')).unwrap();
        assert_eq!(parsed["target"], "Spend\"Update");
    }

    #[test]
    fn a_void_completion_carries_a_null_result() {
        assert_eq!(
            completion_ok("0", None),
            "{\"invocationId\":\"0\",\"result\":null,\"type\":3}\u{1e}"
        );
        let with_result: Value =
            serde_json::from_str(completion_ok("1", Some(&json!(null))).trim_end_matches('\u{1e}'))
                .unwrap();
        assert_eq!(
            with_result,
            json!({"type":3,"invocationId":"1","result":null})
        );
        let e: Value = serde_json::from_str(
            completion_error("2", "Unknown hub method 'Nope'").trim_end_matches('\u{1e}'),
        )
        .unwrap();
        assert_eq!(
            e,
            json!({"type":3,"invocationId":"2","error":"Unknown hub method 'Nope'"})
        );
    }

    #[test]
    fn close_writes_allow_reconnect_only_when_true() {
        let c: Value = serde_json::from_str(close(None, true).trim_end_matches('\u{1e}')).unwrap();
        assert_eq!(c, json!({"type":7,"allowReconnect":true}));
        let c: Value =
            serde_json::from_str(close(Some("x"), false).trim_end_matches('\u{1e}')).unwrap();
        assert_eq!(c, json!({"type":7,"error":"x"}));
    }
}
