//! The session's socket work: batch writes, the goodbye, and what a read found besides
//! record bytes.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;

use tokio::time::{timeout, Duration};

use crate::connection::handle::Outbound;
use crate::protocol::framing::RecordReader;
use crate::ws::frame::{CLOSE_PROTOCOL, CLOSE_TOO_BIG};
use crate::ws::read::{Event, WsError};
use crate::ws::{Frame, Socket};

/// Most queued messages written in one system call.
pub(super) const MAX_BATCH: usize = 64;

/// How long the final Close record and close frame may take.
pub(super) const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Writes a last frame (if any) and a close frame, bounded in time, and ends the
/// connection.
///
/// Boxed: a rare path, kept out of every connection's resting state.
pub(super) fn close_now(
    socket: &Socket,
    last: Option<Frame>,
    code: u16,
) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
    Box::pin(close(socket, last, code))
}

async fn close(socket: &Socket, last: Option<Frame>, code: u16) {
    if let Some(last) = last {
        let _ = timeout(CLOSE_WRITE_TIMEOUT, socket.write_all(last.as_bytes())).await;
    }
    let _ = timeout(
        CLOSE_WRITE_TIMEOUT,
        socket.write_all(Frame::close(code).as_bytes()),
    )
    .await;
    socket.shutdown();
}

/// The close code for a client's framing error.
pub(super) fn close_code(e: &WsError) -> u16 {
    match e {
        WsError::Protocol(_) => CLOSE_PROTOCOL,
        WsError::TooBig(_) => CLOSE_TOO_BIG,
    }
}

/// What a read found besides record bytes: pings to answer, and whether the client
/// closed.
#[derive(Debug, Default)]
pub(super) struct Incoming {
    pub(super) pongs: Vec<Frame>,
    pub(super) closed: bool,
}

impl Incoming {
    pub(super) fn take(&mut self, records: &mut RecordReader, event: Event<'_>) {
        match event {
            Event::Data(bytes) => records.push(bytes),
            Event::Ping(payload) => self.pongs.push(Frame::pong(payload)),
            Event::Close(_) => self.closed = true,
        }
    }
}

/// Waits until the socket may be read (never, for a handle without one).
pub(super) async fn readable(socket: Option<&Socket>) -> io::Result<()> {
    match socket {
        Some(s) => s.readable().await,
        None => std::future::pending().await,
    }
}

/// Writes a whole batch, waiting for the socket as needed.
pub(super) async fn write_all(socket: &Socket, batch: &[Outbound]) -> io::Result<()> {
    let mut cursor = (0, 0);
    while !try_write_batch(socket, batch, &mut cursor)? {
        socket.writable().await?;
    }
    Ok(())
}

/// Writes what the socket takes now of a batch, one vectored write at a time. `cursor`
/// is (first unfinished item, bytes of it written); returns whether all is written.
/// Synchronous, so the slices live on the stack and not in the session's future.
fn try_write_batch(
    socket: &Socket,
    batch: &[Outbound],
    cursor: &mut (usize, usize),
) -> io::Result<bool> {
    loop {
        let (first, skip) = *cursor;
        if first == batch.len() {
            return Ok(true);
        }
        let mut slices = [IoSlice::new(&[]); MAX_BATCH];
        let mut n = 0;
        for (slot, o) in slices.iter_mut().zip(&batch[first..]) {
            let bytes = o.unwritten();
            *slot = IoSlice::new(if n == 0 { &bytes[skip..] } else { bytes });
            n += 1;
        }
        match socket.try_write_vectored(&slices[..n]) {
            Ok(mut wrote) => {
                let (mut first, mut skip) = (first, skip);
                while wrote > 0 {
                    let left = batch[first].unwritten().len() - skip;
                    if wrote >= left {
                        wrote -= left;
                        first += 1;
                        skip = 0;
                    } else {
                        skip += wrote;
                        wrote = 0;
                    }
                }
                *cursor = (first, skip);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}
