//! The ASP.NET Core SignalR wire protocol, with the JSON and the MessagePack hub
//! protocols: record framing, the handshake, hub messages and the negotiate reply.
//!
//! Everything here is pure (no I/O), so it is tested with bytes and fuzzed directly.

pub mod framing;
pub mod handshake;
pub mod message;
pub mod msgpack;
pub mod negotiate;

pub use framing::{RecordReader, RECORD_SEPARATOR};
pub use handshake::HubProtocol;
pub use message::{ClientMessage, ProtocolError};
