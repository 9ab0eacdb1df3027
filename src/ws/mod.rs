//! A server-side WebSocket (RFC 6455) over a plain TCP socket.
//!
//! Hand-rolled rather than tungstenite's, for three things a fan-out server needs and a
//! general WebSocket library does not offer:
//!
//! - **Encode once.** Server frames are unmasked, so a message is framed once per node
//!   ([`frame::Frame`]) and its bytes written as they are to every recipient.
//! - **Direct writes.** Every socket operation takes `&self` ([`socket::Socket`]), so a
//!   dispatch worker writes a frame straight into an idle connection's socket; the
//!   connection's task wakes only when the kernel cannot take it all.
//! - **No buffers at rest.** Frames are parsed as bytes arrive ([`read::FrameReader`]),
//!   through a buffer on the stack; an idle connection holds a few dozen bytes of parser
//!   state, not a read and a write buffer.
//!
//! No extensions are negotiated (no permessage-deflate: the same bytes go to everyone)
//! and no subprotocol.

pub mod frame;
pub mod read;
pub mod socket;
pub mod upgrade;

pub use frame::Frame;
pub use socket::{Socket, Upgraded};
