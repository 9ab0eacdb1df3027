//! What the rest of the node holds of one client connection, below both the node and the
//! session: its outbound queue and close signal ([`handle`]), why it ends and what the
//! client is told ([`close`]), what stateful reconnect keeps to send again
//! ([`replay`]), and its slot of the per-user limit ([`slot`]).

pub mod close;
pub mod handle;
pub mod replay;
pub mod slot;
