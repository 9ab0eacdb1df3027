//! (Longer than usual because the queue and its direct-write path share one lock and one
//! set of invariants, and their tests, with real sockets, sit beside them.)
//!
//! What the rest of the node holds of a session: a bounded outbound queue and a way to
//! close it with a reason.
//!
//! One small shared allocation per connection: a `VecDeque` that allocates only while
//! messages wait, two `Notify`s, a byte count and the close reason. (A tokio channel
//! allocates a 32-slot block up front and a cancellation token a tree node: more than
//! 1.5 KiB per idle connection.)
//!
//! The queue is bounded twice: in messages, and in bytes. A message bound alone let a
//! client that stops reading pin `outbound_queue` × the largest publish (1 024 × 1 MiB).
//! The bytes a batch carries stay counted while the session writes it, so the budget
//! covers everything the connection holds on to, not only what waits.
//!
//! **Direct writes.** When nothing is queued and the session is not writing, `try_send`
//! writes the frame straight into the socket (a non-blocking `write`), and the session's
//! task is not woken at all; only what the kernel does not take is queued. The decision
//! and the write happen under the state lock, so a direct write can never overtake a
//! queued one or interleave with the session's. The lock is a plain mutex held across a
//! non-blocking system call, never across an `.await`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

mod stateful;

use super::close::CloseReason;
use super::replay::Replay;
use crate::envelope::Position;
use crate::protocol::HubProtocol;
use crate::ws::{Frame, Socket};

/// One message waiting to be written to a client.
#[derive(Debug, Clone)]
pub struct Outbound {
    /// The WebSocket frame; shared by every recipient of the same publish.
    pub frame: Frame,
    /// Bytes of the frame already written (a direct write the kernel took only part of).
    pub offset: usize,
    /// When it was published (µs since the epoch), for the delivery-lag histogram; 0 when
    /// not a delivery (replies, pings, pongs).
    pub published_at_micros: u64,
    /// Trackable messages in the frame (stateful reconnect numbers them): 1 for a
    /// delivery, 0 for pings and pongs.
    pub trackable: u32,
}

impl Outbound {
    /// A delivery of a publish made at `published_at_micros`.
    pub fn delivery(frame: Frame, published_at_micros: u64) -> Self {
        Self {
            frame,
            offset: 0,
            published_at_micros,
            trackable: 1,
        }
    }

    /// A frame of the session's own holding `trackable` numbered messages (replies to an
    /// invocation); 0 for a ping or pong.
    pub fn reply(frame: Frame, trackable: u32) -> Self {
        Self {
            frame,
            offset: 0,
            published_at_micros: 0,
            trackable,
        }
    }

    /// The bytes still to write.
    pub fn unwritten(&self) -> &[u8] {
        &self.frame.as_bytes()[self.offset..]
    }
}

/// Where [`SessionHandle::try_send`] put a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Written to the socket in full, now.
    Written,
    /// Queued for the session to write (or, while a stateful connection's transport is
    /// down, kept for the resend).
    Queued,
    /// Not sent: a resumed connection already had it, or waits for its channel's
    /// catch-up, which delivers it.
    Skipped,
}

/// Why a message could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueError {
    /// The queue is full: the client is not keeping up.
    Full,
    /// The session has ended.
    Closed,
}

#[derive(Debug)]
struct State {
    queue: VecDeque<Outbound>,
    /// Bytes of the frames queued or taken by the session and not yet written.
    bytes: usize,
    reason: Option<CloseReason>,
    /// The receiving side is gone.
    ended: bool,
    /// The session owns the socket's write side: it writes a batch, or has not finished
    /// its handshake. No direct writes meanwhile.
    writing: bool,
    /// Stateful reconnect's numbering and unacknowledged frames; `None` for the others.
    replay: Option<Box<Replay>>,
    /// The transport is gone and the connection waits to be resumed: messages are only
    /// kept for the resend.
    detached: bool,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    capacity: usize,
    byte_budget: usize,
    /// Wakes the session when a message is queued.
    queued: Notify,
    /// Wakes the session when it is asked to close.
    closing: Notify,
    /// The connection's socket, for direct writes; `None` for a queue alone.
    socket: Option<Socket>,
    /// How the connection's messages are encoded: deliveries pick the frame of this
    /// protocol.
    protocol: HubProtocol,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A cheap, cloneable handle to one session.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    shared: Arc<Shared>,
}

/// The session's end of its queue.
#[derive(Debug)]
pub struct Receiver {
    shared: Arc<Shared>,
    /// Counts messages still queued when the session ends.
    discarded: Option<metrics::Counter>,
}

impl SessionHandle {
    /// A handle and the receiving end of its queue of `capacity` messages, with no byte
    /// budget (tests and embedding; sessions use [`Self::with_budget`]).
    pub fn new(capacity: usize) -> (Self, Receiver) {
        Self::with_budget(capacity, usize::MAX)
    }

    /// A handle and the receiving end of its queue of `capacity` messages and at most
    /// `byte_budget` bytes queued or being written, with no socket (messages wait for
    /// the receiver).
    pub fn with_budget(capacity: usize, byte_budget: usize) -> (Self, Receiver) {
        Self::build(capacity, byte_budget, None, HubProtocol::Json)
    }

    /// As [`Self::with_budget`], owning the connection's socket: messages are written
    /// straight to it while nothing waits. The session's writes stay its own until it
    /// calls [`Receiver::release`].
    pub fn with_socket(
        capacity: usize,
        byte_budget: usize,
        socket: Socket,
        protocol: HubProtocol,
    ) -> (Self, Receiver) {
        Self::build(capacity, byte_budget, Some(socket), protocol)
    }

    fn build(
        capacity: usize,
        byte_budget: usize,
        socket: Option<Socket>,
        protocol: HubProtocol,
    ) -> (Self, Receiver) {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                bytes: 0,
                reason: None,
                ended: false,
                writing: socket.is_some(),
                replay: None,
                detached: false,
            }),
            capacity,
            byte_budget,
            queued: Notify::new(),
            closing: Notify::new(),
            socket,
            protocol,
        });
        (
            Self {
                shared: shared.clone(),
            },
            Receiver {
                shared,
                discarded: None,
            },
        )
    }

    /// The hub protocol the connection's messages are encoded in.
    pub fn protocol(&self) -> HubProtocol {
        self.shared.protocol
    }

    /// Writes or queues a message without waiting: the fan-out path never blocks on one
    /// client.
    ///
    /// # Errors
    /// [`QueueError::Full`] when the client is not keeping up (the message bound or the
    /// byte budget would be exceeded), [`QueueError::Closed`] when the session is gone or
    /// closing.
    pub fn try_send(&self, item: Outbound) -> Result<Sent, QueueError> {
        self.send(item, true)
    }

    /// As [`Self::try_send`], but never writes to the socket itself: the session's task
    /// does. For large fan-outs, whose writes are better spread over the runtime's
    /// threads than made one after another by a single dispatch worker.
    ///
    /// # Errors
    /// As [`Self::try_send`].
    pub fn try_queue(&self, item: Outbound) -> Result<Sent, QueueError> {
        self.send(item, false)
    }

    fn send(&self, item: Outbound, direct: bool) -> Result<Sent, QueueError> {
        self.send_at(item, direct, None)
    }

    /// As [`Self::try_send`] (or [`Self::try_queue`] without `direct`), for a delivery
    /// at `position` on a channel: a stateful connection records it, and after a resume
    /// skips what was delivered before (or waits for the channel's catch-up).
    ///
    /// # Errors
    /// As [`Self::try_send`].
    pub fn try_send_at(
        &self,
        item: Outbound,
        direct: bool,
        position: Option<(&Arc<str>, &Position)>,
    ) -> Result<Sent, QueueError> {
        self.send_at(item, direct, position)
    }

    fn send_at(
        &self,
        mut item: Outbound,
        direct: bool,
        position: Option<(&Arc<str>, &Position)>,
    ) -> Result<Sent, QueueError> {
        {
            let mut state = self.shared.state();
            if state.ended || state.reason.is_some() {
                return Err(QueueError::Closed);
            }
            let bytes = state.bytes.saturating_add(item.unwritten().len());
            if state.queue.len() >= self.shared.capacity || bytes > self.shared.byte_budget {
                return Err(QueueError::Full);
            }
            if let Some(replay) = state.replay.as_mut() {
                if position.is_some_and(|(c, p)| !replay.wants(c, p)) {
                    return Ok(Sent::Skipped);
                }
                if replay
                    .record(&item.frame, item.trackable, position)
                    .is_err()
                {
                    return Err(QueueError::Full);
                }
                if state.detached {
                    return Ok(Sent::Queued);
                }
            }
            if let (true, true, false, Some(socket)) = (
                direct,
                state.queue.is_empty(),
                state.writing,
                &self.shared.socket,
            ) {
                match socket.try_write(item.unwritten()) {
                    Ok(n) if n == item.unwritten().len() => return Ok(Sent::Written),
                    Ok(n) => item.offset += n,
                    // Full (`WouldBlock`) or failing: the session's own write of the
                    // queued frame waits for room or reports the failure.
                    Err(_) => {}
                }
            }
            state.bytes = state.bytes.saturating_add(item.unwritten().len());
            state.queue.push_back(item);
        }
        // A stored permit if the session is not waiting right now: no wake-up is lost.
        self.shared.queued.notify_one();
        Ok(Sent::Queued)
    }

    /// Asks the session to close. The first reason given wins; returns whether this call
    /// was the first.
    pub fn close(&self, reason: CloseReason) -> bool {
        let first = {
            let mut state = self.shared.state();
            if state.reason.is_none() {
                state.reason = Some(reason);
                true
            } else {
                false
            }
        };
        self.shared.closing.notify_waiters();
        first
    }

    /// Completes once [`Self::close`] was called.
    pub async fn closed(&self) {
        loop {
            let notified = self.shared.closing.notified();
            tokio::pin!(notified);
            // Registered before the check, so a close between the two is not missed.
            notified.as_mut().enable();
            if self.shared.state().reason.is_some() {
                return;
            }
            notified.await;
        }
    }

    /// The reason given to [`Self::close`], if any.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.shared.state().reason.clone()
    }

    /// Messages waiting in the queue.
    pub fn queued(&self) -> usize {
        self.shared.state().queue.len()
    }

    /// Whether both handles lead to the same session.
    pub fn same_session(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }
}

impl Receiver {
    /// Waits for messages and moves up to `max` of them into `batch`. Their bytes stay
    /// counted against the budget until [`Self::written`].
    pub async fn recv_batch(&self, batch: &mut Vec<Outbound>, max: usize) {
        loop {
            {
                let mut state = self.shared.state();
                if !state.queue.is_empty() {
                    let n = state.queue.len().min(max);
                    batch.extend(state.queue.drain(..n));
                    state.writing = true;
                    // Give back what a burst grew, so an idle connection holds nothing.
                    if state.queue.is_empty() && state.queue.capacity() > 64 {
                        state.queue = VecDeque::new();
                    }
                    return;
                }
            }
            self.shared.queued.notified().await;
        }
    }
}

impl Receiver {
    /// Gives back to the budget the bytes of a batch from [`Self::recv_batch`], once it
    /// is written.
    pub fn written(&mut self, batch: &[Outbound]) {
        let n: usize = batch.iter().map(|o| o.unwritten().len()).sum();
        let mut state = self.shared.state();
        state.bytes = state.bytes.saturating_sub(n);
        state.writing = false;
    }

    /// The session is done writing on its own (its handshake reply is out): from now on
    /// messages may be written directly while nothing waits.
    pub fn release(&mut self) {
        self.shared.state().writing = false;
    }

    /// The connection's socket, when the handle owns one.
    pub fn socket(&self) -> Option<&Socket> {
        self.shared.socket.as_ref()
    }

    /// Waits for the next message (one at a time; the session itself uses batches). Its
    /// bytes are given back at once.
    pub async fn recv(&mut self) -> Option<Outbound> {
        let mut one = Vec::with_capacity(1);
        self.recv_batch(&mut one, 1).await;
        self.written(&one);
        one.pop()
    }

    /// The next message, if one is waiting. Its bytes are given back at once.
    pub fn try_recv(&mut self) -> Option<Outbound> {
        let mut state = self.shared.state();
        let item = state.queue.pop_front()?;
        state.bytes = state.bytes.saturating_sub(item.unwritten().len());
        Some(item)
    }
}

impl Receiver {
    /// Where to count messages still queued when the session ends.
    pub fn count_discards(&mut self, counter: metrics::Counter) {
        self.discarded = Some(counter);
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let left = {
            let mut state = self.shared.state();
            state.ended = true;
            let left = state.queue.len();
            state.queue.clear();
            state.bytes = 0;
            left
        };
        if left > 0 {
            if let Some(c) = &self.discarded {
                c.increment(left as u64);
            }
            tracing::info!(
                messages = left,
                "connection closed with messages still queued"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(n: u64) -> Outbound {
        Outbound::delivery(Frame::text(b"x"), n)
    }

    #[tokio::test]
    async fn messages_come_out_in_order_in_batches() {
        let (h, rx) = SessionHandle::new(10);
        for n in 1..=5 {
            h.try_send(item(n)).unwrap();
        }
        let mut batch = Vec::new();
        rx.recv_batch(&mut batch, 3).await;
        assert_eq!(
            batch
                .iter()
                .map(|o| o.published_at_micros)
                .collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        batch.clear();
        rx.recv_batch(&mut batch, 3).await;
        assert_eq!(batch.len(), 2);
    }

    #[tokio::test]
    async fn a_full_queue_refuses_and_a_closed_session_refuses() {
        let (h, rx) = SessionHandle::new(1);
        h.try_send(item(1)).unwrap();
        assert_eq!(h.try_send(item(2)), Err(QueueError::Full));
        drop(rx);
        assert_eq!(h.try_send(item(3)), Err(QueueError::Closed));
    }

    /// A frame of `len` bytes in all (2 of them header).
    fn sized(len: usize) -> Outbound {
        Outbound::reply(Frame::text("x".repeat(len - 2).as_bytes()), 0)
    }

    #[tokio::test]
    async fn the_byte_budget_counts_what_waits_and_what_is_being_written() {
        let (h, mut rx) = SessionHandle::with_budget(100, 10);
        h.try_send(sized(6)).unwrap();
        assert_eq!(h.try_send(sized(5)), Err(QueueError::Full), "6 + 5 > 10");
        h.try_send(sized(4)).unwrap();
        let mut batch = Vec::new();
        rx.recv_batch(&mut batch, 8).await;
        assert_eq!(
            h.try_send(sized(2)),
            Err(QueueError::Full),
            "a batch being written still counts"
        );
        rx.written(&batch);
        h.try_send(sized(10)).unwrap();
        assert_eq!(rx.try_recv().map(|o| o.frame.len()), Some(10));
        h.try_send(sized(10)).unwrap();
    }

    #[tokio::test]
    async fn close_wakes_a_waiter_and_the_first_reason_wins() {
        let (h, _rx) = SessionHandle::new(1);
        let waiter = {
            let h = h.clone();
            tokio::spawn(async move { h.closed().await })
        };
        assert!(h.close(CloseReason::SlowConsumer));
        assert!(!h.close(CloseReason::Shutdown));
        waiter.await.unwrap();
        assert_eq!(h.close_reason(), Some(CloseReason::SlowConsumer));
        assert_eq!(h.try_send(item(1)), Err(QueueError::Closed));
    }

    #[tokio::test]
    async fn a_message_queued_before_waiting_is_not_missed() {
        let (h, rx) = SessionHandle::new(4);
        h.try_send(item(7)).unwrap();
        let mut batch = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(1),
            rx.recv_batch(&mut batch, 8),
        )
        .await
        .unwrap();
        assert_eq!(batch[0].published_at_micros, 7);
    }

    /// A connected pair: the server end wrapped for a handle, the client end to read.
    async fn socket_pair() -> (Socket, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        (
            Socket::new(accepted.unwrap().0, Box::new(())),
            client.unwrap(),
        )
    }

    #[tokio::test]
    async fn direct_writes_wait_for_the_handshake_and_never_overtake_the_queue() {
        use tokio::io::AsyncReadExt as _;
        let (socket, mut client) = socket_pair().await;
        let (h, mut rx) = SessionHandle::with_socket(16, 1 << 20, socket, HubProtocol::Json);
        assert_eq!(
            h.try_send(item(1)),
            Ok(Sent::Queued),
            "the session holds the socket"
        );
        rx.release();
        assert_eq!(h.try_send(item(2)), Ok(Sent::Queued), "one is waiting");
        let mut batch = Vec::new();
        rx.recv_batch(&mut batch, 8).await;
        assert_eq!(
            h.try_send(item(3)),
            Ok(Sent::Queued),
            "the session is writing"
        );
        for o in &batch {
            rx.socket().unwrap().write_all(o.unwritten()).await.unwrap();
        }
        rx.written(&batch);
        batch.clear();
        rx.recv_batch(&mut batch, 8).await;
        rx.socket()
            .unwrap()
            .write_all(batch[0].unwritten())
            .await
            .unwrap();
        rx.written(&batch);
        assert_eq!(h.try_send(item(4)), Ok(Sent::Written));
        assert_eq!(
            h.try_queue(item(5)),
            Ok(Sent::Queued),
            "a large fan-out leaves the write to the session"
        );
        let mut wire = vec![0u8; 4 * 3];
        client.read_exact(&mut wire).await.unwrap();
        assert_eq!(wire, [0x81, 1, b'x'].repeat(4));
    }

    #[tokio::test]
    async fn a_frame_the_kernel_took_part_of_is_finished_in_order() {
        use tokio::io::AsyncReadExt as _;
        let (socket, mut client) = socket_pair().await;
        let (h, mut rx) =
            SessionHandle::with_socket(1 << 16, usize::MAX, socket, HubProtocol::Json);
        rx.release();
        let frames: Vec<Frame> = (0..=255u8).map(|b| Frame::binary(&[b; 65_536])).collect();
        let mut sent = 0;
        // Until the kernel's buffers are full and something had to be queued.
        while sent < frames.len() {
            let r = h
                .try_send(Outbound::delivery(frames[sent].clone(), 1))
                .unwrap();
            sent += 1;
            if r == Sent::Queued {
                break;
            }
        }
        assert!(sent < frames.len(), "a non-reading peer fills the socket");
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            client.read_to_end(&mut all).await.unwrap();
            all
        });
        let mut batch = Vec::new();
        rx.recv_batch(&mut batch, 8).await;
        for o in &batch {
            rx.socket().unwrap().write_all(o.unwritten()).await.unwrap();
        }
        rx.written(&batch);
        rx.socket().unwrap().shutdown();
        let expected: Vec<u8> = frames[..sent]
            .iter()
            .flat_map(|f| f.as_bytes().to_vec())
            .collect();
        assert!(
            reader.await.unwrap() == expected,
            "every byte once, in order"
        );
    }
}
