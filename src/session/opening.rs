//! The SignalR handshake: the first record, read before the connection is registered.

use tokio::time::{timeout, timeout_at, Instant};

use super::io::{close_code, close_now, Incoming, CLOSE_WRITE_TIMEOUT};
use crate::node::Node;
use crate::protocol::framing::RecordReader;
use crate::protocol::{handshake, HubProtocol};
use crate::ws::read::FrameReader;
use crate::ws::socket::{Read, ReadError};
use crate::ws::Socket;

/// Reads the handshake and returns the hub protocol and version it chose (the record reader reads
/// that protocol's framing from then on). `Err(Some(reply))` sends the reply and closes;
/// `Err(None)` means the client went away.
pub(super) async fn do_handshake(
    socket: &Socket,
    frames: &mut FrameReader,
    reader: &mut RecordReader,
    pending: &mut Incoming,
    node: &Node,
) -> Result<(HubProtocol, u32), Option<String>> {
    let deadline = Instant::now() + node.timeouts().handshake();
    let record = loop {
        match reader.next_record() {
            Ok(Some(record)) => break record,
            Ok(None) => {}
            Err(_) => return Err(Some(handshake::HandshakeError::Canceled.reply())),
        }
        if pending.closed {
            return Err(None);
        }
        match timeout_at(deadline, socket.readable()).await {
            Err(_) => return Err(Some(handshake::HandshakeError::Canceled.reply())),
            Ok(Err(_)) => return Err(None),
            Ok(Ok(())) => {}
        }
        match socket.read_available(frames, &mut |e| pending.take(reader, e)) {
            Ok(Read::Open) => {}
            Ok(Read::Eof) | Err(ReadError::Io(_)) => return Err(None),
            Err(ReadError::Ws(e)) => {
                close_now(socket, None, close_code(&e)).await;
                return Err(None);
            }
        }
        // Pings before the handshake are answered at once: nothing else is written yet.
        for pong in pending.pongs.drain(..) {
            let _ = timeout(CLOSE_WRITE_TIMEOUT, socket.write_all(pong.as_bytes())).await;
        }
    };
    let (protocol, version) = handshake::parse(&record).map_err(|e| Some(e.reply()))?;
    if protocol == HubProtocol::MessagePack {
        reader.use_length_prefix();
    }
    Ok((protocol, version))
}

/// A handshake error reply for a node that cannot take the connection.
pub(super) fn refusal(text: &str) -> String {
    let mut out = serde_json::json!({ "error": text }).to_string();
    out.push('\u{1e}');
    out
}
