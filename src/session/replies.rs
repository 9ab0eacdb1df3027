//! What the session answers an invocation with, encoded in the connection's hub
//! protocol and sent as one frame.

use serde_json::Value;

use crate::protocol::{message, msgpack, HubProtocol};
use crate::ws::Frame;

/// Messages for one frame, in order.
pub(super) struct Replies {
    protocol: HubProtocol,
    bytes: Vec<u8>,
}

impl Replies {
    pub(super) fn new(protocol: HubProtocol) -> Self {
        Self {
            protocol,
            bytes: Vec::new(),
        }
    }

    /// An event for the caller alone (a method's reply events).
    pub(super) fn invocation(&mut self, target: &str, arguments: Vec<Value>) {
        match self.protocol {
            HubProtocol::Json => {
                let args = Value::Array(arguments).to_string();
                self.bytes
                    .extend_from_slice(message::invocation(target, &args).as_bytes());
            }
            HubProtocol::MessagePack => self
                .bytes
                .extend_from_slice(&msgpack::invocation(target, &arguments)),
        }
    }

    /// The Completion of invocation `id`: void, or the error text.
    pub(super) fn completion(&mut self, id: &str, error: Option<&str>) {
        let bytes = match (self.protocol, error) {
            (HubProtocol::Json, None) => message::completion_ok(id, None).into_bytes(),
            (HubProtocol::Json, Some(e)) => message::completion_error(id, e).into_bytes(),
            (HubProtocol::MessagePack, None) => msgpack::completion_void(id),
            (HubProtocol::MessagePack, Some(e)) => msgpack::completion_error(id, e),
        };
        self.bytes.extend_from_slice(&bytes);
    }

    /// The frame to send, if there is anything to say.
    pub(super) fn frame(self) -> Option<Frame> {
        (!self.bytes.is_empty()).then(|| self.protocol.frame(&self.bytes))
    }
}
