//! A WebSocket's TCP socket, shared by its session (reads, queued writes) and the
//! dispatch workers (direct writes).
//!
//! Every operation takes `&self` (tokio's readiness API: `readable`/`try_read`,
//! `writable`/`try_write`), so a dispatch worker can write a frame straight to an idle
//! connection without waking its task. Reads go through a buffer on the thread's stack,
//! never held across an `.await`, so an idle connection owns no read buffer.

use std::io::{self, IoSlice};
use std::sync::LazyLock;

use bytes::Bytes;
use tokio::net::TcpStream;

use super::read::{Event, FrameReader, WsError};
use crate::metrics as m;

/// Registered once: every read and write counts its bytes.
static SENT: LazyLock<metrics::Counter> =
    LazyLock::new(|| metrics::counter!(m::WEBSOCKET_SENT_BYTES));
static RECEIVED: LazyLock<metrics::Counter> =
    LazyLock::new(|| metrics::counter!(m::WEBSOCKET_RECEIVED_BYTES));

fn sent(n: io::Result<usize>) -> io::Result<usize> {
    if let Ok(n) = n {
        SENT.increment(n as u64);
    }
    n
}

/// Bytes read from the kernel per `try_read`.
const READ_CHUNK: usize = 4096;

/// Reads per call to [`Socket::read_available`], so one busy client cannot keep its task
/// from its writes and timers.
const READS_PER_TURN: usize = 4;

/// The socket of an upgraded connection.
pub struct Socket {
    tcp: TcpStream,
    /// Held for as long as the socket is open: the listener's slot of its socket cap.
    _hold: Box<dyn Send + Sync>,
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket").field("tcp", &self.tcp).finish()
    }
}

/// What [`Socket::read_available`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// Everything the kernel held was read (or the turn's share of it).
    Open,
    /// The client closed the TCP connection.
    Eof,
}

/// Why reading stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The client broke the WebSocket protocol.
    #[error(transparent)]
    Ws(#[from] WsError),
}

/// A freshly upgraded connection: its socket, and bytes the client sent right after the
/// upgrade request that the HTTP layer had already read.
#[derive(Debug)]
pub struct Upgraded {
    /// The socket.
    pub socket: Socket,
    /// Bytes already read past the HTTP request.
    pub leftover: Bytes,
}

impl Socket {
    /// Wraps a connected socket; `hold` is dropped when the socket is.
    pub fn new(tcp: TcpStream, hold: Box<dyn Send + Sync>) -> Self {
        Self { tcp, _hold: hold }
    }

    /// Waits until the socket may be read.
    ///
    /// # Errors
    /// When the socket failed.
    pub async fn readable(&self) -> io::Result<()> {
        self.tcp.readable().await
    }

    /// Reads what the kernel holds and parses it, reporting what it finds to `on`.
    ///
    /// # Errors
    /// [`ReadError`] when the socket failed or the client broke the protocol.
    pub fn read_available(
        &self,
        frames: &mut FrameReader,
        on: &mut impl FnMut(Event<'_>),
    ) -> Result<Read, ReadError> {
        let mut buf = [0u8; READ_CHUNK];
        for _ in 0..READS_PER_TURN {
            match self.tcp.try_read(&mut buf) {
                Ok(0) => return Ok(Read::Eof),
                Ok(n) => {
                    RECEIVED.increment(n as u64);
                    frames.feed(&mut buf[..n], on)?;
                    if n < buf.len() {
                        return Ok(Read::Open);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Read::Open),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Read::Open)
    }

    /// Writes what the socket takes now, without waiting.
    ///
    /// # Errors
    /// `WouldBlock` when it takes nothing; others when the socket failed.
    pub fn try_write(&self, bytes: &[u8]) -> io::Result<usize> {
        sent(self.tcp.try_write(bytes))
    }

    /// Writes what the socket takes now of several buffers, in one system call.
    ///
    /// # Errors
    /// As [`Self::try_write`].
    pub fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        sent(self.tcp.try_write_vectored(bufs))
    }

    /// Waits until the socket may be written.
    ///
    /// # Errors
    /// When the socket failed.
    pub async fn writable(&self) -> io::Result<()> {
        self.tcp.writable().await
    }

    /// Writes all of `bytes`, waiting for the socket as needed.
    ///
    /// # Errors
    /// When the socket failed.
    pub async fn write_all(&self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            match sent(self.tcp.try_write(bytes)) {
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.tcp.writable().await?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Ends the connection in both directions now, even while other holders of the
    /// session's handle still exist: their writes fail from here on.
    pub fn shutdown(&self) {
        let _ = socket2::SockRef::from(&self.tcp).shutdown(std::net::Shutdown::Both);
    }
}
