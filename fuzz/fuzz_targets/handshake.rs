//! Handshake parsing: arbitrary bytes never panic; an accepted handshake is a JSON object
//! naming protocol `json` or `messagepack` with a version in 0..=MAX_VERSION; every refusal has a reply that
//! is one valid JSON record.

#![no_main]

use hubcast::protocol::handshake::{self, MAX_VERSION};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match handshake::parse(data) {
        Ok((protocol, version)) => {
            assert!(i64::from(version) <= MAX_VERSION);
            let v: serde_json::Value =
                serde_json::from_slice(data).expect("accepted handshake is not JSON");
            assert_eq!(v["protocol"], protocol.name());
            assert_eq!(v["version"].as_i64(), Some(i64::from(version)));
        }
        Err(e) => {
            let reply = e.reply();
            let body = reply
                .strip_suffix('\u{1e}')
                .expect("reply does not end with the record separator");
            assert!(!body.contains('\u{1e}'));
            let v: serde_json::Value = serde_json::from_str(body).expect("error reply is not JSON");
            assert!(v["error"].is_string());
        }
    }
});
