//! Opening a connection: its readers, fed what came with the upgrade; the SignalR
//! handshake (the first record, read before the connection is registered); the session
//! built once it is open.

use std::sync::Arc;

use tokio::time::{timeout, timeout_at, Instant};

use super::io::{close_code, close_now, Incoming, CLOSE_WRITE_TIMEOUT};
use super::{Session, SessionStart, FRAME_SLACK};
use crate::connection::handle::{self, SessionHandle};
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

/// What turns a connection's bytes into records.
pub(super) struct Readers {
    pub(super) frames: FrameReader,
    pub(super) reader: RecordReader,
    pub(super) pending: Incoming,
}

impl Readers {
    /// Readers for `protocol`, fed what came with the upgrade; `None` (the socket
    /// closed) when that already broke the WebSocket framing.
    pub(super) async fn start(
        socket: &Socket,
        node: &Node,
        early: bytes::Bytes,
        protocol: HubProtocol,
    ) -> Option<Self> {
        let mut frames = FrameReader::new(node.limits().max_record_bytes + FRAME_SLACK);
        let mut reader = RecordReader::new(node.limits().max_record_bytes);
        if protocol == HubProtocol::MessagePack {
            reader.use_length_prefix();
        }
        let mut pending = Incoming::default();
        // Copied out and dropped, so hyper's whole read buffer does not live as long as
        // the connection.
        let mut leftover = early.to_vec();
        drop(early);
        if let Err(e) = frames.feed(&mut leftover, &mut |e| pending.take(&mut reader, e)) {
            tracing::debug!(error = %e, "WebSocket protocol error before the first record");
            close_now(socket, None, close_code(&e)).await;
            return None;
        }
        Some(Self {
            frames,
            reader,
            pending,
        })
    }
}

impl<'a> Session<'a> {
    /// An open connection's session; `client_next` is the id of the client's next
    /// trackable message when stateful reconnect is on.
    pub(super) fn new(
        node: &'a Arc<Node>,
        start: &'a SessionStart,
        hub_name: &'a str,
        (handle, rx): (SessionHandle, handle::Receiver),
        readers: Readers,
        protocol: HubProtocol,
        client_next: Option<u64>,
    ) -> Self {
        let invocations = f64::from(node.limits().invocations_per_second);
        Session {
            node,
            hub: start.hub,
            hub_name,
            caller: &start.caller,
            handle,
            rx,
            frames: readers.frames,
            reader: readers.reader,
            pending: readers.pending,
            protocol,
            frames_broken: None,
            invocations: crate::auth::RateLimiter::new(invocations, 2.0 * invocations),
            stateful: client_next.is_some(),
            transport_lost: false,
            client_next: client_next.unwrap_or(1),
            ack_due: None,
        }
    }
}
