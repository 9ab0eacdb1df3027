//! One client connection, from the WebSocket upgrade to its end.
//!
//! A single task per connection runs the handshake and then one `select!` loop over: the
//! close signal, the outbound queue, the socket, the keep-alive timer and the client
//! timeout. One task (not a reader and a writer) keeps the memory cost of an idle
//! connection low; a write blocked on a slow client is bounded by the write timeout and
//! interrupted by eviction.
//!
//! Deliveries to an idle connection do not pass through this task at all: the dispatch
//! worker writes them into the socket itself ([`crate::connection::handle`]). The task
//! writes what had to wait, in one vectored write per batch.
//!
//! The handshake reply `{}` goes in a WebSocket frame of its own: with stateful reconnect
//! the JS client starts counting messages only after the handshake resolves, so records
//! sharing that frame would throw its numbering off.

mod io;
mod messages;
mod opening;
mod replies;
mod resume;

use std::sync::{Arc, LazyLock};

use tokio::time::{sleep_until, timeout, Instant};

use io::{close_code, close_now, readable, write_all, Incoming, MAX_BATCH};
use opening::{do_handshake, refusal, Readers};
use resume::{replay_limits, resume};

use crate::connection::close::CloseReason;
use crate::connection::handle::{self, Outbound, QueueError, SessionHandle};
use crate::connection::replay::Replay;
use crate::connection::slot::UserSlot;
use crate::envelope::now_micros;
use crate::hub::Caller;
use crate::metrics as m;
use crate::node::{Node, Resumed};
use crate::protocol::framing::RecordReader;
use crate::protocol::handshake;
use crate::protocol::message;
use crate::protocol::{msgpack, HubProtocol};
use crate::ws::frame::CLOSE_NORMAL;
use crate::ws::read::FrameReader;
use crate::ws::socket::{Read, ReadError};
use crate::ws::{Frame, Socket, Upgraded};

/// Bytes a client frame may carry beyond the largest record: the records are bounded by
/// the record reader; this only stops one huge frame from being read before that check.
const FRAME_SLACK: usize = 64 * 1024;

/// The keep-alive Ping, framed once per protocol.
static PING: LazyLock<Frame> = LazyLock::new(|| Frame::text(message::PING.as_bytes()));
static PING_MSGPACK: LazyLock<Frame> = LazyLock::new(|| Frame::binary(&msgpack::ping()));

fn ping(protocol: HubProtocol) -> Frame {
    match protocol {
        HubProtocol::Json => PING.clone(),
        HubProtocol::MessagePack => PING_MSGPACK.clone(),
    }
}

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
    /// The connection negotiated stateful reconnect (it becomes stateful if its
    /// handshake is version 2 or later).
    pub stateful: bool,
    /// A stateful connection taken over for this transport: no handshake, and what it
    /// had not acknowledged is sent again first.
    pub resume: Option<Resumed>,
}

/// Runs a connection to its end. The caller keeps `start` (and with it the user's
/// connection slot) until this returns.
///
/// Arguments are borrowed, the opening is boxed and the session is built inside it: an
/// async fn keeps room for every value moved out of it, so each of these is stored once,
/// and the opening's locals are gone once the connection is open. The session's future
/// is most of an idle connection's memory.
pub async fn run(upgraded: Upgraded, node: &Arc<Node>, start: &mut SessionStart) {
    let hub_name = node.hubs()[start.hub].name().to_owned();
    let opened = match start.resume.take() {
        Some(resumed) => Box::pin(resume(upgraded, node, start, &hub_name, resumed)).await,
        None => Box::pin(open(upgraded, node, start, &hub_name)).await,
    };
    let Some(mut session) = opened else {
        return;
    };
    let opened_at = std::time::Instant::now();
    metrics::counter!(m::CONNECTIONS_OPENED, "hub" => hub_name.clone()).increment(1);
    session.run().await;
    metrics::histogram!(m::CONNECTION_DURATION, "hub" => hub_name.clone())
        .record(opened_at.elapsed().as_secs_f64());
}

/// The handshake and registration. `None` when the connection did not open.
async fn open<'a>(
    upgraded: Upgraded,
    node: &'a Arc<Node>,
    start: &'a mut SessionStart,
    hub_name: &'a str,
) -> Option<Session<'a>> {
    let id = start.caller.connection_id.clone();
    let Upgraded {
        socket,
        leftover: early,
    } = upgraded;

    let Readers {
        mut frames,
        mut reader,
        mut pending,
    } = Readers::start(&socket, node, early, HubProtocol::Json).await?;
    let handshake = Box::pin(do_handshake(
        &socket,
        &mut frames,
        &mut reader,
        &mut pending,
        node,
    ))
    .await;
    drop(start.handshake_permit.take());
    let (protocol, version) = match handshake {
        Ok(chosen) => chosen,
        Err(reply) => {
            if let Some(reply) = reply {
                tracing::debug!(connection = %id, reply = %reply.trim_end_matches('\u{1e}'), "handshake refused");
                close_now(&socket, Some(Frame::text(reply.as_bytes())), CLOSE_NORMAL).await;
            }
            return None;
        }
    };

    // Register and join the automatic groups before answering the handshake, so that a
    // publish made once the client's start() resolved reaches it. Until the answer is
    // written the session owns the socket: deliveries wait in the queue.
    let (handle, mut rx) = SessionHandle::with_socket(
        node.limits().outbound_queue,
        node.limits().outbound_queue_bytes,
        socket,
        protocol,
    );
    rx.count_discards(node.meters(start.hub).connection_closed.clone());
    // Stateful reconnect needs handshake version 2; below it, ASP.NET silently goes on
    // without.
    let stateful = start.stateful && version >= 2;
    if stateful {
        handle.make_stateful(Replay::new(replay_limits(node)));
    }
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
    let socket = rx.socket().expect("a session's handle owns its socket");
    if let Err(text) = registered {
        close_now(
            socket,
            Some(Frame::text(refusal(text).as_bytes())),
            CLOSE_NORMAL,
        )
        .await;
        return None;
    }
    let answered = timeout(
        node.timeouts().write_timeout(),
        // In the protocol's own frame type: binary clients read only binary frames.
        socket.write_all(protocol.frame(handshake::SUCCESS.as_bytes()).as_bytes()),
    )
    .await;
    if !matches!(answered, Ok(Ok(()))) {
        socket.shutdown();
        Box::pin(node.disconnect(&id)).await;
        return None;
    }
    rx.release();
    tracing::debug!(connection = %id, hub = %hub_name, protocol = protocol.name(), "connected");

    Some(Session::new(
        node,
        start,
        hub_name,
        (handle, rx),
        Readers {
            frames,
            reader,
            pending,
        },
        protocol,
        stateful.then_some(1),
    ))
}

struct Session<'a> {
    node: &'a Arc<Node>,
    hub: usize,
    hub_name: &'a str,
    caller: &'a Caller,
    handle: SessionHandle,
    rx: handle::Receiver,
    frames: FrameReader,
    reader: RecordReader,
    pending: Incoming,
    protocol: HubProtocol,
    /// The client broke the WebSocket framing: the close code to end with.
    frames_broken: Option<u16>,
    invocations: crate::auth::RateLimiter,
    /// Stateful reconnect is on: a lost transport leaves the connection waiting to be
    /// resumed.
    stateful: bool,
    /// The transport ended without a close: the socket dropped, a write failed, or the
    /// client went silent.
    transport_lost: bool,
    /// The id the client's next trackable message has (stateful reconnect).
    client_next: u64,
    /// When to acknowledge what the client sent (stateful reconnect).
    ack_due: Option<Instant>,
}

impl Session<'_> {
    /// Serves the connection until it ends, then leaves its groups and says goodbye.
    async fn run(&mut self) {
        let mut reason = self.serve().await;
        if reason == CloseReason::Resumed {
            // Another transport has the connection now, groups and all.
            self.socket().shutdown();
            return;
        }
        let lost = self.transport_lost
            || matches!(
                reason,
                CloseReason::WriteFailed | CloseReason::ClientTimeout
            );
        if self.stateful && lost {
            match Box::pin(self.await_resume()).await {
                None => return,
                Some(end) => reason = end,
            }
        }
        if reason != CloseReason::ClientClosed {
            metrics::counter!(m::CONNECTIONS_CLOSED, "hub" => self.hub_name.to_owned(), "reason" => reason.label()).increment(1);
        }
        tracing::debug!(connection = %self.caller.connection_id, reason = reason.label(), "disconnected");
        // Leave the groups first, so nothing more is queued for a connection that is going.
        Box::pin(self.node.disconnect(&self.caller.connection_id)).await;
        // No direct write may start once the goodbye is being written.
        self.handle.close(reason.clone());
        let code = self.frames_broken.unwrap_or(CLOSE_NORMAL);
        let last = reason
            .record(self.protocol)
            .map(|r| self.protocol.frame(&r));
        close_now(self.socket(), last, code).await;
    }

    fn socket(&self) -> &Socket {
        self.rx
            .socket()
            .expect("a session's handle owns its socket")
    }

    async fn serve(&mut self) -> CloseReason {
        let keepalive = self.node.timeouts().keepalive();
        let client_timeout = self.node.timeouts().client_timeout();
        let mut last_sent = Instant::now();
        let mut last_received = Instant::now();
        // A reference, not a clone: five handles fewer in every connection's future.
        let node: &Node = self.node;
        let meters = node.meters(self.hub);
        // Reused across batches; dropped after a burst so an idle connection holds no buffer.
        let mut batch: Vec<Outbound> = Vec::new();

        // Records and pings that arrived with the handshake.
        if let Some(reason) = self.answer_pings() {
            return reason;
        }
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
                    if let Err(reason) = Box::pin(self.write_batch(&batch, meters)).await {
                        return reason;
                    }
                    self.rx.written(&batch);
                    last_sent = Instant::now();
                    let now = now_micros();
                    for o in &batch {
                        if o.published_at_micros > 0 {
                            meters.delivered(1, o.published_at_micros, now);
                        }
                    }
                    batch.clear();
                    if batch.capacity() > 4 {
                        batch = Vec::new();
                    }
                }
                r = readable(self.rx.socket()) => {
                    last_received = Instant::now();
                    if r.is_err() {
                        self.transport_lost = true;
                        return CloseReason::ClientClosed;
                    }
                    if let Some(reason) = self.read() {
                        return reason;
                    }
                    if let Some(reason) = Box::pin(self.process_records()).await {
                        return reason;
                    }
                    if let Some(due) = self.ack_due {
                        if due < timer.deadline() {
                            timer.as_mut().reset(due);
                        }
                    }
                }
                () = &mut timer => {
                    let now = Instant::now();
                    if now >= last_received + client_timeout {
                        tracing::info!(connection = %self.caller.connection_id, "client timeout: nothing received");
                        return CloseReason::ClientTimeout;
                    }
                    if now >= last_sent + keepalive {
                        if let Err(reason) = self.send_own(ping(self.protocol), 0) {
                            return reason;
                        }
                        last_sent = Instant::now();
                    }
                    if self.ack_due.is_some_and(|due| now >= due) {
                        self.ack_due = None;
                        if let Err(reason) = self.send_ack() {
                            return reason;
                        }
                    }
                    let mut next = (last_sent + keepalive).min(last_received + client_timeout);
                    if let Some(due) = self.ack_due {
                        next = next.min(due);
                    }
                    timer.as_mut().reset(next);
                }
            }
        }
    }

    /// Reads what arrived. `Some` ends the session.
    fn read(&mut self) -> Option<CloseReason> {
        let socket = self.rx.socket()?;
        let (pending, reader) = (&mut self.pending, &mut self.reader);
        match socket.read_available(&mut self.frames, &mut |e| pending.take(reader, e)) {
            Ok(Read::Open) => {}
            Ok(Read::Eof) | Err(ReadError::Io(_)) => {
                self.transport_lost = true;
                return Some(CloseReason::ClientClosed);
            }
            Err(ReadError::Ws(e)) => {
                tracing::info!(connection = %self.caller.connection_id, error = %e, "WebSocket protocol error");
                self.frames_broken = Some(close_code(&e));
                return Some(CloseReason::Protocol(format!("InvalidDataException: {e}")));
            }
        }
        if self.pending.closed {
            return Some(CloseReason::ClientClosed);
        }
        self.answer_pings()
    }

    /// Queues the pongs owed. `Some` ends the session.
    fn answer_pings(&mut self) -> Option<CloseReason> {
        for pong in std::mem::take(&mut self.pending.pongs) {
            if let Err(reason) = self.send_own(pong, 0) {
                return Some(reason);
            }
        }
        None
    }

    /// Sends a frame of the session's own, in order with the deliveries: a client that
    /// makes the node answer (pings, invocations) and never reads fills its queue like
    /// any slow consumer.
    fn send_own(&self, frame: Frame, trackable: u32) -> Result<(), CloseReason> {
        match self.handle.try_send(Outbound::reply(frame, trackable)) {
            Ok(_) => Ok(()),
            Err(QueueError::Full) => {
                self.handle.close(CloseReason::SlowConsumer);
                tracing::warn!(connection = %self.caller.connection_id, hub = self.hub_name, "slow consumer: outbound queue full, closing the connection");
                Err(CloseReason::SlowConsumer)
            }
            Err(QueueError::Closed) => {
                Err(self.handle.close_reason().unwrap_or(CloseReason::Shutdown))
            }
        }
    }

    /// Writes queued messages, bounded by the write timeout and interrupted by a close
    /// request (eviction).
    async fn write_batch(
        &self,
        batch: &[Outbound],
        meters: &m::HubMeters,
    ) -> Result<(), CloseReason> {
        let write_timeout = self.node.timeouts().write_timeout();
        let socket = self.socket();
        tokio::select! {
            biased;
            _ = self.handle.closed() => Err(self.handle.close_reason().unwrap_or(CloseReason::Shutdown)),
            r = timeout(write_timeout, write_all(socket, batch)) => match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) | Err(_) => {
                    let deliveries = batch.iter().filter(|o| o.published_at_micros > 0).count();
                    meters.write_error.increment(deliveries as u64);
                    tracing::info!(connection = %self.caller.connection_id, "write to client failed or timed out");
                    Err(CloseReason::WriteFailed)
                }
            }
        }
    }
}
