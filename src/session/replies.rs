//! What the session answers an invocation with, encoded in the connection's hub
//! protocol and sent as one frame.

use serde_json::Value;

use crate::protocol::{message, msgpack, HubProtocol};
use crate::ws::Frame;

/// Messages for one frame, in order.
pub(super) struct Replies {
    protocol: HubProtocol,
    bytes: Vec<u8>,
    /// Messages written (all trackable: invocations and completions).
    count: u32,
}

impl Replies {
    pub(super) fn new(protocol: HubProtocol) -> Self {
        Self {
            protocol,
            bytes: Vec::new(),
            count: 0,
        }
    }

    /// An event for the caller alone (a method's reply events).
    pub(super) fn invocation(&mut self, target: &str, arguments: Vec<Value>) {
        self.count += 1;
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
        self.count += 1;
        let bytes = match (self.protocol, error) {
            (HubProtocol::Json, None) => message::completion_ok(id, None).into_bytes(),
            (HubProtocol::Json, Some(e)) => message::completion_error(id, e).into_bytes(),
            (HubProtocol::MessagePack, None) => msgpack::completion_void(id),
            (HubProtocol::MessagePack, Some(e)) => msgpack::completion_error(id, e),
        };
        self.bytes.extend_from_slice(&bytes);
    }

    /// Messages written so far (stateful reconnect numbers each).
    pub(super) fn count(&self) -> u32 {
        self.count
    }

    /// The frame to send, if there is anything to say.
    pub(super) fn frame(self) -> Option<Frame> {
        (!self.bytes.is_empty()).then(|| self.protocol.frame(&self.bytes))
    }
}
