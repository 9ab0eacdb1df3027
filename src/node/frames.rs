//! A message's WebSocket frames, built once per hub protocol: the JSON frame from the
//! record as published, the MessagePack one transcoded from it the first time a
//! MessagePack member needs it, and then shared by every member of that protocol.

use crate::protocol::{msgpack, HubProtocol};
use crate::ws::Frame;

/// The frames of one JSON Invocation record.
pub(super) struct Frames<'a> {
    record: &'a [u8],
    json: Option<Frame>,
    /// `Some(None)`: the record could not be transcoded.
    msgpack: Option<Option<Frame>>,
}

impl<'a> Frames<'a> {
    pub(super) fn new(record: &'a [u8]) -> Self {
        Self {
            record,
            json: None,
            msgpack: None,
        }
    }

    /// The frame for members of `protocol`; `None` when the record cannot be written in
    /// it (not an Invocation record: a foreign publisher on the prefix).
    pub(super) fn get(&mut self, protocol: HubProtocol) -> Option<Frame> {
        match protocol {
            HubProtocol::Json => Some(
                self.json
                    .get_or_insert_with(|| Frame::text(self.record))
                    .clone(),
            ),
            HubProtocol::MessagePack => self
                .msgpack
                .get_or_insert_with(|| {
                    msgpack::from_json_invocation(self.record)
                        .map(|bytes| Frame::binary(&bytes))
                        .inspect_err(|e| tracing::warn!(error = %e, "a record could not be written as MessagePack"))
                        .ok()
                })
                .clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_protocol_is_framed_once_and_shared() {
        let record = crate::protocol::message::invocation("E", "[1]");
        let mut frames = Frames::new(record.as_bytes());
        let a = frames.get(HubProtocol::MessagePack).unwrap();
        let b = frames.get(HubProtocol::MessagePack).unwrap();
        assert_eq!(
            a.as_bytes().as_ptr(),
            b.as_bytes().as_ptr(),
            "the same bytes"
        );
        assert_eq!(
            frames.get(HubProtocol::Json).unwrap().payload(),
            record.as_bytes()
        );
        let mut bad = Frames::new(b"{\"type\":6}");
        assert!(bad.get(HubProtocol::MessagePack).is_none());
        assert!(bad.get(HubProtocol::Json).is_some());
    }
}
