//! One client connection, from the WebSocket upgrade to its end.
//!
//! A single task per connection runs the handshake and then one `select!` loop over: the
//! close signal, the outbound queue, the socket, the keep-alive timer and the client
//! timeout. One task (not a reader and a writer) keeps the memory cost of an idle
//! connection low; a write blocked on a slow client is bounded by the write timeout and
//! interrupted by eviction.
//!
//! The handshake reply `{}` goes in a WebSocket frame of its own: with stateful reconnect
//! the JS client starts counting messages only after the handshake resolves, so records
//! sharing that frame would throw its numbering off.

use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::SinkExt as _;
use tokio::time::{sleep_until, timeout, timeout_at, Duration, Instant};

use crate::connection::close::CloseReason;
use crate::connection::handle::{self, Outbound, SessionHandle};
use crate::connection::slot::UserSlot;
use crate::envelope::now_micros;
use crate::hub::{CallError, Caller};
use crate::metrics as m;
use crate::node::Node;
use crate::protocol::framing::RecordReader;
use crate::protocol::handshake;
use crate::protocol::message::{self, ClientMessage};

/// Most queued messages written before one flush.
const MAX_BATCH: usize = 64;

/// How long the final Close record and close frame may take.
const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// What the upgrade handler learned about the connection.
#[derive(Debug)]
pub struct SessionStart {
    /// Index of the hub.
    pub hub: usize,
    /// The caller's identity.
    pub caller: Caller,
    /// A slot of the node's concurrent-handshake limits, released after the handshake.
    pub handshake_permit: Option<crate::auth::HandshakeSlot>,
    /// A slot of the user's connection limit, released when the session ends.
    pub user_slot: Option<UserSlot>,
}

/// Runs a connection to its end.
pub async fn run(mut socket: WebSocket, node: Arc<Node>, mut start: SessionStart) {
    let id = start.caller.connection_id.clone();
    let hub_name = node.hubs()[start.hub].name().to_owned();

    let mut reader = RecordReader::new(node.limits().max_record_bytes);
    let handshake = Box::pin(do_handshake(&mut socket, &mut reader, &node)).await;
    drop(start.handshake_permit.take());
    match handshake {
        Ok(()) => {}
        Err(reply) => {
            if let Some(reply) = reply {
                tracing::debug!(connection = %id, reply = %reply.trim_end_matches('\u{1e}'), "handshake refused");
                let _ = timeout(
                    CLOSE_WRITE_TIMEOUT,
                    socket.send(Message::Text(reply.into())),
                )
                .await;
                let _ = timeout(CLOSE_WRITE_TIMEOUT, socket.send(close_frame())).await;
            }
            return;
        }
    }

    // Register and join the automatic groups before answering the handshake, so that a
    // publish made once the client's start() resolved reaches it.
    let (handle, mut rx) = SessionHandle::with_budget(
        node.limits().outbound_queue,
        node.limits().outbound_queue_bytes,
    );
    rx.count_discards(metrics::counter!(
        m::DELIVERY_FAILURES,
        "hub" => hub_name.clone(),
        "reason" => m::REASON_CONNECTION_CLOSED
    ));
    let registered = if node.is_draining() {
        Err("The server is shutting down.")
    } else {
        Box::pin(node.connect(start.hub, start.caller.clone(), handle.clone()))
            .await
            .map_err(|e| {
                tracing::warn!(connection = %id, error = %e, "connection could not be registered");
                "The connection could not be registered; please retry."
            })
    };
    if let Err(text) = registered {
        let _ = timeout(
            CLOSE_WRITE_TIMEOUT,
            socket.send(Message::Text(refusal(text).into())),
        )
        .await;
        let _ = timeout(CLOSE_WRITE_TIMEOUT, socket.send(close_frame())).await;
        return;
    }
    if socket
        .send(Message::Text(Utf8Bytes::from_static(handshake::SUCCESS)))
        .await
        .is_err()
    {
        Box::pin(node.disconnect(&id)).await;
        return;
    }
    tracing::debug!(connection = %id, hub = %hub_name, "connected");

    let reason = Session {
        socket: &mut socket,
        node: &node,
        hub: start.hub,
        hub_name: &hub_name,
        caller: &start.caller,
        handle: &handle,
        rx,
        reader,
        invocations: crate::auth::RateLimiter::new(
            f64::from(node.limits().invocations_per_second),
            2.0 * f64::from(node.limits().invocations_per_second),
        ),
    }
    .run()
    .await;

    if reason != CloseReason::ClientClosed {
        metrics::counter!(m::CONNECTIONS_CLOSED, "hub" => hub_name.clone(), "reason" => reason.label()).increment(1);
    }
    tracing::debug!(connection = %id, reason = reason.label(), "disconnected");
    // Leave the groups first, so nothing more is queued for a connection that is going.
    Box::pin(node.disconnect(&id)).await;
    Box::pin(finish(&mut socket, &reason)).await;
    drop(start.user_slot);
}

fn close_frame() -> Message {
    Message::Close(Some(CloseFrame {
        code: 1000,
        reason: Utf8Bytes::from_static(""),
    }))
}

/// Sends the Close record the reason calls for, then a normal close frame.
async fn finish(socket: &mut WebSocket, reason: &CloseReason) {
    if matches!(reason, CloseReason::ClientClosed | CloseReason::WriteFailed) {
        let _ = timeout(CLOSE_WRITE_TIMEOUT, socket.send(close_frame())).await;
        return;
    }
    if let Some(record) = reason.record() {
        let _ = timeout(
            CLOSE_WRITE_TIMEOUT,
            socket.send(Message::Text(record.into())),
        )
        .await;
    }
    let _ = timeout(CLOSE_WRITE_TIMEOUT, socket.send(close_frame())).await;
}

/// Reads the handshake. `Err(Some(reply))` sends the reply and closes; `Err(None)` means
/// the client went away.
async fn do_handshake(
    socket: &mut WebSocket,
    reader: &mut RecordReader,
    node: &Node,
) -> Result<(), Option<String>> {
    let deadline = Instant::now() + node.timeouts().handshake();
    let record = loop {
        match reader.next_record() {
            Ok(Some(record)) => break record,
            Ok(None) => {}
            Err(_) => return Err(Some(handshake::HandshakeError::Canceled.reply())),
        }
        match timeout_at(deadline, socket.recv()).await {
            Err(_) => return Err(Some(handshake::HandshakeError::Canceled.reply())),
            Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return Err(None),
            Ok(Some(Ok(Message::Text(t)))) => reader.push(t.as_bytes()),
            Ok(Some(Ok(Message::Binary(b)))) => reader.push(&b),
            Ok(Some(Ok(_))) => {}
        }
    };
    handshake::parse(&record).map_err(|e| Some(e.reply()))?;
    Ok(())
}

/// A handshake error reply for a node that cannot take the connection.
fn refusal(text: &str) -> String {
    let mut out = serde_json::json!({ "error": text }).to_string();
    out.push('\u{1e}');
    out
}

struct Session<'a> {
    socket: &'a mut WebSocket,
    node: &'a Arc<Node>,
    hub: usize,
    hub_name: &'a str,
    caller: &'a Caller,
    handle: &'a SessionHandle,
    rx: handle::Receiver,
    reader: RecordReader,
    invocations: crate::auth::RateLimiter,
}

impl Session<'_> {
    async fn run(mut self) -> CloseReason {
        let keepalive = self.node.timeouts().keepalive();
        let client_timeout = self.node.timeouts().client_timeout();
        let mut last_sent = Instant::now();
        let mut last_received = Instant::now();
        let delivered = metrics::counter!(m::MESSAGES_DELIVERED, "hub" => self.hub_name.to_owned());
        let lag = metrics::histogram!(m::DELIVERY_LAG, "hub" => self.hub_name.to_owned());
        // Reused across batches; dropped after a burst so an idle connection holds no buffer.
        let mut batch: Vec<Outbound> = Vec::new();

        // Records that arrived in the handshake's frame.
        if let Some(reason) = Box::pin(self.process_records()).await {
            return reason;
        }
        // One timer, moved only when it fires: arming a timer per message (the simple
        // `sleep_until(last_sent + keepalive)` in the select) costs two timer-wheel updates
        // per write on a busy connection.
        let timer = sleep_until(Instant::now() + keepalive.min(client_timeout));
        tokio::pin!(timer);
        loop {
            tokio::select! {
                biased;
                _ = self.handle.closed() => {
                    return self.handle.close_reason().unwrap_or(CloseReason::Shutdown);
                }
                () = self.rx.recv_batch(&mut batch, MAX_BATCH) => {
                    if let Err(reason) = Box::pin(self.write_batch(&batch)).await {
                        return reason;
                    }
                    self.rx.written(&batch);
                    last_sent = Instant::now();
                    delivered.increment(batch.len() as u64);
                    let now = now_micros();
                    for o in &batch {
                        if o.published_at_micros > 0 {
                            lag.record(now.saturating_sub(o.published_at_micros) as f64 / 1e6);
                        }
                    }
                    batch.clear();
                    if batch.capacity() > 4 {
                        batch = Vec::new();
                    }
                }
                msg = self.socket.recv() => {
                    last_received = Instant::now();
                    match msg {
                        None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return CloseReason::ClientClosed,
                        Some(Ok(Message::Text(t))) => self.reader.push(t.as_bytes()),
                        Some(Ok(Message::Binary(b))) => self.reader.push(&b),
                        Some(Ok(_)) => continue,
                    }
                    if let Some(reason) = Box::pin(self.process_records()).await {
                        return reason;
                    }
                }
                () = &mut timer => {
                    let now = Instant::now();
                    if now >= last_received + client_timeout {
                        tracing::info!(connection = %self.caller.connection_id, "client timeout: nothing received");
                        return CloseReason::ClientTimeout;
                    }
                    if now >= last_sent + keepalive {
                        if let Err(reason) = Box::pin(self.write_now(Utf8Bytes::from_static(message::PING))).await {
                            return reason;
                        }
                        last_sent = Instant::now();
                    }
                    timer.as_mut().reset((last_sent + keepalive).min(last_received + client_timeout));
                }
            }
        }
    }

    /// Writes queued messages with one flush, bounded by the write timeout and interrupted
    /// by a close request (eviction).
    async fn write_batch(&mut self, batch: &[Outbound]) -> Result<(), CloseReason> {
        let write_timeout = self.node.timeouts().write_timeout();
        let socket = &mut *self.socket;
        let write = async {
            for o in batch {
                socket.feed(Message::Text(o.frame.clone())).await?;
            }
            socket.flush().await
        };
        tokio::select! {
            biased;
            _ = self.handle.closed() => Err(self.handle.close_reason().unwrap_or(CloseReason::Shutdown)),
            r = timeout(write_timeout, write) => match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) | Err(_) => {
                    metrics::counter!(m::DELIVERY_FAILURES, "hub" => self.hub_name.to_owned(), "reason" => m::REASON_WRITE_ERROR)
                        .increment(batch.len() as u64);
                    tracing::info!(connection = %self.caller.connection_id, "write to client failed or timed out");
                    Err(CloseReason::WriteFailed)
                }
            }
        }
    }

    async fn write_now(&mut self, frame: Utf8Bytes) -> Result<(), CloseReason> {
        self.write_batch(&[Outbound {
            frame,
            published_at_micros: 0,
        }])
        .await
    }

    /// Handles every complete record buffered. `Some` ends the session.
    async fn process_records(&mut self) -> Option<CloseReason> {
        loop {
            let record = match self.reader.next_record() {
                Ok(Some(r)) => r,
                Ok(None) => return None,
                Err(e) => {
                    tracing::info!(connection = %self.caller.connection_id, error = %e, "record too large");
                    return Some(CloseReason::Protocol(format!("InvalidDataException: {e}")));
                }
            };
            let msg = match ClientMessage::parse(&record) {
                Ok(m) => m,
                Err(e) => {
                    tracing::info!(connection = %self.caller.connection_id, error = %e, "protocol error");
                    return Some(CloseReason::Protocol(e.to_string()));
                }
            };
            if let Some(reason) = self.handle_message(msg).await {
                return Some(reason);
            }
        }
    }

    async fn handle_message(&mut self, msg: ClientMessage) -> Option<CloseReason> {
        match msg {
            ClientMessage::Ping | ClientMessage::CancelInvocation { .. } | ClientMessage::Unknown(_) => None,
            ClientMessage::Close { .. } => Some(CloseReason::ClientClosed),
            ClientMessage::Invocation {
                invocation_id,
                target,
                arguments,
                stream_ids,
            } => {
                let outcome = if self.invocations.take().is_err() {
                    Err(CallError::RateLimited)
                } else if stream_ids.is_empty() {
                    Box::pin(self.node.invoke(self.hub, self.caller, &target, &arguments)).await
                } else {
                    Err(CallError::ArgumentCount {
                        given: arguments.len() + stream_ids.len(),
                        expected: arguments.len(),
                    })
                };
                let mut out = String::new();
                match outcome {
                    Ok(replies) => {
                        for (event, args) in replies {
                            let args = serde_json::Value::Array(args).to_string();
                            out.push_str(&message::invocation(&event, &args));
                        }
                        if let Some(id) = &invocation_id {
                            out.push_str(&message::completion_ok(id, None));
                        }
                    }
                    Err(e) => {
                        metrics::counter!(m::INVOCATIONS_REFUSED, "hub" => self.hub_name.to_owned(), "reason" => call_error_label(&e))
                            .increment(1);
                        tracing::debug!(connection = %self.caller.connection_id, method = %target, error = %e, "invocation refused");
                        if let Some(id) = &invocation_id {
                            out.push_str(&message::completion_error(id, &e.completion_text(&target)));
                        }
                    }
                }
                if out.is_empty() {
                    return None;
                }
                self.write_now(out.into()).await.err()
            }
            ClientMessage::StreamInvocation { invocation_id, target } => {
                let text = format!(
                    "The client attempted to invoke the non-streaming '{target}' method with a streaming invocation."
                );
                self.write_now(message::completion_error(&invocation_id, &text).into()).await.err()
            }
            ClientMessage::StreamItem { .. } | ClientMessage::Completion { .. } => Some(CloseReason::Protocol(
                "InvalidDataException: Unexpected stream item or completion: this server starts no streams and invokes no client methods.".into(),
            )),
            ClientMessage::Ack | ClientMessage::Sequence => Some(CloseReason::Protocol(
                "InvalidDataException: Ack and Sequence messages need stateful reconnect, which was not negotiated.".into(),
            )),
        }
    }
}

fn call_error_label(e: &CallError) -> &'static str {
    match e {
        CallError::UnknownMethod => "unknown_method",
        CallError::ArgumentCount { .. } | CallError::Binding => "bad_arguments",
        CallError::Unauthorized => "unauthorized",
        CallError::InvalidGroup(_) => "invalid_group",
        CallError::TooManyGroups(_) => "too_many_groups",
        CallError::RateLimited => "rate_limited",
        CallError::Unavailable => "unavailable",
    }
}
