//! Publish body parsing: arbitrary bytes never panic; an accepted body has a non-empty
//! target of at most MAX_TARGET_BYTES without control characters, and arguments that are
//! the text of a JSON array; the Invocation record built from it is one a client parses
//! back to the same target and arguments.

#![no_main]

use hubcast::http::api::{PublishBody, MAX_TARGET_BYTES};
use hubcast::protocol::message::{self, ClientMessage};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = PublishBody::parse(data) else {
        return;
    };
    assert!(!body.target.is_empty());
    assert!(body.target.len() <= MAX_TARGET_BYTES);
    assert!(
        !body.target.chars().any(char::is_control),
        "{:?}",
        body.target
    );
    let args: Value = serde_json::from_str(&body.arguments_json)
        .unwrap_or_else(|e| panic!("arguments_json {:?} is not JSON: {e}", body.arguments_json));
    let Value::Array(args) = args else {
        panic!("arguments_json {:?} is not an array", body.arguments_json);
    };

    let record = message::invocation(&body.target, &body.arguments_json);
    let record = record
        .strip_suffix('\u{1e}')
        .expect("record does not end with the separator");
    assert!(
        !record.contains('\u{1e}'),
        "record {record:?} holds a separator"
    );
    match ClientMessage::parse(record.as_bytes()) {
        Ok(ClientMessage::Invocation {
            invocation_id: None,
            target,
            arguments,
            stream_ids,
        }) => {
            assert_eq!(target, body.target);
            assert_eq!(arguments, args);
            assert!(stream_ids.is_empty());
        }
        other => panic!("record {record:?} parsed as {other:?}"),
    }
});
