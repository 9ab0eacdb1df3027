//! The accept loop of a listener: HTTP/1.1 only, a cap on open sockets, and the
//! header-read and idle timeouts (`conn_watch`).
//!
//! `axum::serve` holds every connection for as long as the client likes and serves h2c
//! to anyone who asks: thousands of half-sent requests or silent sockets took a node's
//! file descriptors. Here:
//!
//! - **HTTP/1.1 only.** WebSockets need it, the publish API needs nothing more, and h2c
//!   on a public port is one more parser and one more way to hold a connection.
//! - **A socket cap.** Past `limits.max_open_sockets` a connection is accepted, answered
//!   503 if its send buffer takes it, and closed: counted, logged at most once a second.
//! - **Accept errors** (out of file descriptors) are counted and the loop backs off
//!   briefly instead of spinning or ending.
//! - **Shutdown** stops accepting, then asks every connection to finish its request and
//!   close; upgraded WebSockets have left hyper by then and drain on their own.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::sleep_until;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service as _;

use super::conn_watch::{Expiry, Phase, Watched};
use super::log_every::LogEvery;
use crate::metrics as m;

/// How long the accept loop pauses after an accept error such as EMFILE: long enough not
/// to spin, short enough to pick up again as soon as descriptors are free.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The answer a connection over the cap gets, if its send buffer takes it.
const OVER_CAP: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\nretry-after: 1\r\ncontent-length: 0\r\n\r\n";

/// What one listener enforces.
#[derive(Debug, Clone)]
pub struct ListenerLimits {
    /// The listener's name in metrics and logs (`public`, `metrics`).
    pub name: &'static str,
    /// Connections open at once.
    pub max_open_sockets: usize,
    /// Time a request head may take.
    pub header_read: Duration,
    /// Time a keep-alive connection may sit between requests.
    pub idle: Duration,
}

/// A slot of the socket cap, counted in the open-sockets gauge while held.
struct Slot {
    _permit: OwnedSemaphorePermit,
    gauge: metrics::Gauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gauge.decrement(1.0);
    }
}

/// The socket under a connection hyper upgraded, for the WebSocket layer (which writes
/// to it directly). `None` when the connection was not accepted by [`serve`] or
/// `axum::serve` (an in-memory transport in a test, say).
pub fn take_socket(upgraded: hyper::upgrade::Upgraded) -> Option<crate::ws::Upgraded> {
    use crate::ws::{Socket, Upgraded};
    match upgraded.downcast::<TokioIo<Watched<TcpStream, Slot>>>() {
        Ok(parts) => {
            let (tcp, slot) = parts.io.into_inner().into_parts();
            Some(Upgraded {
                socket: Socket::new(tcp, Box::new(slot)),
                leftover: parts.read_buf,
            })
        }
        Err(upgraded) => upgraded
            .downcast::<TokioIo<TcpStream>>()
            .ok()
            .map(|parts| Upgraded {
                socket: Socket::new(parts.io.into_inner(), Box::new(())),
                leftover: parts.read_buf,
            }),
    }
}

/// Serves `router` on `listener` until `stop` is cancelled, then waits for its HTTP
/// connections to finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ListenerLimits,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_open_sockets));
    let name = limits.name;
    let open = metrics::gauge!(m::HTTP_OPEN_SOCKETS, "listener" => name);
    open.set(0.0);
    let over_cap = metrics::counter!(m::HTTP_CONNECTIONS_REFUSED, "listener" => name, "reason" => m::REASON_MAX_OPEN_SOCKETS);
    let accept_failed = metrics::counter!(m::HTTP_CONNECTIONS_REFUSED, "listener" => name, "reason" => m::REASON_ACCEPT_ERROR);
    over_cap.increment(0);
    accept_failed.increment(0);
    for reason in [m::REASON_HEADER_READ, m::REASON_IDLE] {
        metrics::counter!(m::HTTP_TIMEOUTS, "listener" => name, "reason" => reason).increment(0);
    }
    let refusals = Arc::new(LogEvery::new(Duration::from_secs(1)));
    let timeouts = Arc::new(LogEvery::new(Duration::from_secs(10)));
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            r = listener.accept() => r,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            // The peer gave up before we took it: nothing to count.
            Err(e) if is_peer_error(&e) => continue,
            Err(e) => {
                accept_failed.increment(1);
                if let Some(skipped) = refusals.ready() {
                    tracing::warn!(listener = name, error = %e, skipped, "accept failed; backing off");
                }
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            over_cap.increment(1);
            if let Some(skipped) = refusals.ready() {
                tracing::warn!(
                    listener = name,
                    max_open_sockets = limits.max_open_sockets,
                    skipped,
                    "connection refused: too many open sockets"
                );
            }
            let _ = tcp.try_write(OVER_CAP);
            continue;
        };
        open.increment(1.0);
        let slot = Slot {
            _permit: permit,
            gauge: open.clone(),
        };
        // Responses and WebSocket frames are small writes: without TCP_NODELAY, Nagle's
        // algorithm and the client's delayed ACK add tens of milliseconds.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        connections.spawn(connection(
            tcp,
            peer,
            slot,
            router.clone(),
            limits.clone(),
            stop.clone(),
            timeouts.clone(),
        ));
    }
    // Closing the listener makes the kernel refuse new connections from here on.
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// Errors of one incoming connection, not of the listener.
fn is_peer_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    )
}

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    slot: Slot,
    router: Router,
    limits: ListenerLimits,
    stop: CancellationToken,
    timeouts: Arc<LogEvery>,
) {
    let phase = Phase::new();
    let io = TokioIo::new(Watched::new(tcp, phase.clone(), slot));
    let service = {
        let phase = phase.clone();
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            phase.busy();
            // The peer's address, for the per-source handshake limit (axum's ConnectInfo).
            let mut req = req.map(Body::new);
            req.extensions_mut().insert(ConnectInfo(peer));
            // A Router is always ready: `poll_ready` need not be awaited first.
            let response = router.clone().call(req);
            let phase = phase.clone();
            async move {
                let response = response.await?;
                Ok::<_, Infallible>(response.map(|b| phase.track(b)))
            }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        // Our own timers (`conn_watch`) replace hyper's.
        .header_read_timeout(None)
        .serve_connection(io, service)
        .with_upgrades();
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        let due = phase.deadline(limits.header_read, limits.idle);
        tokio::select! {
            biased;
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(listener = limits.name, error = %e, "HTTP connection ended with an error");
                }
                break;
            }
            () = stop.cancelled(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            () = phase.changed() => {}
            () = async { sleep_until(due.map_or_else(tokio::time::Instant::now, |d| d.0)).await }, if due.is_some() => {
                let Some((at, why)) = phase.deadline(limits.header_read, limits.idle) else { continue };
                if at > tokio::time::Instant::now() {
                    continue;
                }
                metrics::counter!(m::HTTP_TIMEOUTS, "listener" => limits.name, "reason" => why.label()).increment(1);
                match why {
                    // Closing a keep-alive connection nobody uses is routine.
                    Expiry::Idle => tracing::debug!(listener = limits.name, "idle HTTP connection closed"),
                    Expiry::HeaderRead => {
                        if let Some(skipped) = timeouts.ready() {
                            tracing::info!(listener = limits.name, skipped, "HTTP connection closed: request head not received in time");
                        }
                    }
                }
                break;
            }
        }
    }
    phase.done();
}
