//! The ASP.NET Core SignalR wire protocol, JSON hub protocol only: record framing, the
//! handshake, hub messages and the negotiate reply.
//!
//! Everything here is pure (no I/O), so it is tested with bytes and fuzzed directly.

pub mod framing;
pub mod handshake;
pub mod message;
pub mod negotiate;

pub use framing::{RecordReader, RECORD_SEPARATOR};
pub use message::{ClientMessage, ProtocolError};
