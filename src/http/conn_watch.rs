//! Where one HTTP/1.1 connection is in its life, for the header-read and idle timeouts.
//!
//! hyper 1's own `header_read_timeout` starts whenever it waits for a request head, idle
//! time included, so it cannot give a short limit to a half-sent head and a longer one to
//! a keep-alive connection between requests. Here a connection is in one of three phases:
//!
//! - **head**: from the accept, or from the first byte after an idle spell, until the
//!   request head is complete (`timeouts.header_read_ms`);
//! - **busy**: a request is being served (its body has its own limit, `body_deadline`);
//! - **idle**: from the end of a response until the next byte (`timeouts.http_idle_ms`).
//!
//! The socket's reads, the service call and the end of the response body move the phase;
//! the connection's task sleeps until the current phase's deadline and closes the
//! connection if the phase has not moved by then. One timer per phase change, none per
//! read.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::metrics as m;

/// A phase of the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Head,
    Busy,
    Idle,
    /// Served its last request, or upgraded to a WebSocket: no more HTTP timeouts.
    Done,
}

#[derive(Debug)]
struct Inner {
    /// The phase and when it began.
    stage: Mutex<(Stage, Instant)>,
    /// Wakes the connection's task when the phase moved to one with a deadline.
    changed: Notify,
}

/// The phase of one connection, shared by its socket, its service and its task.
#[derive(Debug, Clone)]
pub struct Phase(Arc<Inner>);

/// Which limit a connection ran out of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// The request head took too long.
    HeaderRead,
    /// No request came for too long.
    Idle,
}

impl Expiry {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::HeaderRead => m::REASON_HEADER_READ,
            Self::Idle => m::REASON_IDLE,
        }
    }
}

impl Phase {
    /// A just-accepted connection, waiting for its first request head.
    pub fn new() -> Self {
        Self(Arc::new(Inner {
            stage: Mutex::new((Stage::Head, Instant::now())),
            changed: Notify::new(),
        }))
    }

    fn set(&self, from: Option<Stage>, to: Stage) {
        let moved = {
            let mut s = self.0.stage.lock().unwrap_or_else(|p| p.into_inner());
            if from.is_some_and(|f| s.0 != f) || s.0 == Stage::Done {
                false
            } else {
                *s = (to, Instant::now());
                true
            }
        };
        if moved && matches!(to, Stage::Head | Stage::Idle) {
            self.0.changed.notify_one();
        }
    }

    /// Bytes arrived: an idle connection starts a request head.
    fn bytes_arrived(&self) {
        self.set(Some(Stage::Idle), Stage::Head);
    }

    /// A request head was read: the request is being served.
    pub fn busy(&self) {
        self.set(None, Stage::Busy);
    }

    /// The connection serves no more requests.
    pub fn done(&self) {
        self.set(None, Stage::Done);
    }

    /// When the current phase runs out, and which limit that is.
    pub fn deadline(&self, header_read: Duration, idle: Duration) -> Option<(Instant, Expiry)> {
        let (stage, since) = *self.0.stage.lock().unwrap_or_else(|p| p.into_inner());
        match stage {
            Stage::Head => Some((since + header_read, Expiry::HeaderRead)),
            Stage::Idle => Some((since + idle, Expiry::Idle)),
            Stage::Busy | Stage::Done => None,
        }
    }

    /// Completes when the phase moved to one with a deadline.
    pub async fn changed(&self) {
        self.0.changed.notified().await;
    }

    /// A response body that marks the connection idle once it is sent (or dropped).
    pub fn track(&self, body: Body) -> Body {
        Body::new(Tracked {
            inner: body,
            _sent: Sent(self.clone()),
        })
    }
}

impl Default for Phase {
    fn default() -> Self {
        Self::new()
    }
}

/// Marks the connection idle when dropped: hyper drops a response body right after its
/// last frame is written.
struct Sent(Phase);

impl Drop for Sent {
    fn drop(&mut self) {
        self.0.set(Some(Stage::Busy), Stage::Idle);
    }
}

struct Tracked {
    inner: Body,
    _sent: Sent,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A socket that tells its [`Phase`] when bytes arrive, and holds the connection's slot
/// of the listener's socket cap for as long as it is open (through a WebSocket upgrade).
pub struct Watched<S, Slot> {
    inner: S,
    phase: Phase,
    _slot: Slot,
}

impl<S, Slot> Watched<S, Slot> {
    /// Wraps a socket.
    pub fn new(inner: S, phase: Phase, slot: Slot) -> Self {
        Self {
            inner,
            phase,
            _slot: slot,
        }
    }

    /// The socket and its slot, once HTTP is done with them (a WebSocket upgrade).
    pub fn into_parts(self) -> (S, Slot) {
        (self.inner, self._slot)
    }
}

impl<S: AsyncRead + Unpin, Slot: Unpin> AsyncRead for Watched<S, Slot> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.phase.bytes_arrived();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin, Slot: Unpin> AsyncWrite for Watched<S, Slot> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: Duration = Duration::from_secs(10);
    const I: Duration = Duration::from_secs(60);

    #[tokio::test(start_paused = true)]
    async fn the_deadline_follows_the_phase() {
        let phase = Phase::new();
        let (at, why) = phase.deadline(H, I).unwrap();
        assert_eq!(why, Expiry::HeaderRead);
        assert_eq!(at, Instant::now() + H);
        phase.bytes_arrived();
        assert_eq!(
            phase.deadline(H, I).unwrap().0,
            at,
            "a head in progress keeps its start"
        );
        phase.busy();
        assert_eq!(phase.deadline(H, I), None);
        let body = phase.track(Body::from("x"));
        tokio::time::advance(Duration::from_secs(5)).await;
        drop(body);
        let (at, why) = phase.deadline(H, I).unwrap();
        assert_eq!((at, why), (Instant::now() + I, Expiry::Idle));
        tokio::time::advance(Duration::from_secs(5)).await;
        phase.bytes_arrived();
        assert_eq!(
            phase.deadline(H, I).unwrap(),
            (Instant::now() + H, Expiry::HeaderRead)
        );
        phase.done();
        phase.bytes_arrived();
        assert_eq!(phase.deadline(H, I), None);
    }
}
