//! Stateful reconnect in the session: acknowledging what the client sent, waiting for
//! the client to come back when the transport drops, and opening a connection resumed
//! on a new transport (no handshake; the Sequence and what the client had not
//! acknowledged go first).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::timeout;

use super::io::close_now;
use super::{Readers, Session, SessionStart};
use crate::connection::close::CloseReason;
use crate::connection::handle::SessionHandle;
use crate::connection::replay::{Replay, ReplayLimits};
use crate::metrics as m;
use crate::node::{Node, Resumed};
use crate::protocol::{message, msgpack, HubProtocol};
use crate::ws::{Frame, Upgraded};

/// How soon what the client sent is acknowledged (ASP.NET and the JS client both ack on
/// about a one-second timer).
pub(super) const ACK_INTERVAL: Duration = Duration::from_secs(1);

/// What a stateful connection of this node may keep unacknowledged.
pub(super) fn replay_limits(node: &Node) -> ReplayLimits {
    ReplayLimits {
        bytes: node.limits().reconnect_buffer_bytes,
        messages: node.limits().reconnect_buffer_messages,
    }
}

fn ack(protocol: HubProtocol, id: u64) -> Frame {
    match protocol {
        HubProtocol::Json => Frame::text(message::ack(id).as_bytes()),
        HubProtocol::MessagePack => Frame::binary(&msgpack::ack(id)),
    }
}

fn sequence(protocol: HubProtocol, id: u64) -> Frame {
    match protocol {
        HubProtocol::Json => Frame::text(message::sequence(id).as_bytes()),
        HubProtocol::MessagePack => Frame::binary(&msgpack::sequence(id)),
    }
}

impl Session<'_> {
    /// Tells the client what was processed of its messages.
    pub(super) fn send_ack(&self) -> Result<(), CloseReason> {
        self.send_own(ack(self.protocol, self.handle.received()), 0)
    }

    /// The transport is gone: the connection keeps its groups and what is sent to it,
    /// for the reconnect window. `None` when a new transport took it over; else why it
    /// ends (the window passed, or it outgrew what it may keep).
    pub(super) async fn await_resume(&mut self) -> Option<CloseReason> {
        self.socket().shutdown();
        self.handle.detach();
        tracing::debug!(connection = %self.caller.connection_id, "transport lost; the connection waits for its client to resume it");
        let window = self.node.timeouts().reconnect_window();
        tokio::select! {
            _ = self.handle.closed() => {}
            _ = tokio::time::sleep(window) => {
                // First reason wins: a hand-off at this very moment keeps the connection.
                self.handle.close(CloseReason::ResumeExpired);
            }
        }
        let reason = self
            .handle
            .close_reason()
            .unwrap_or(CloseReason::ResumeExpired);
        if reason == CloseReason::Resumed {
            return None;
        }
        let kept = self.handle.unacknowledged();
        if kept > 0 {
            // Outgrowing what it may keep closes it as a slow consumer; else the window
            // passed.
            let failure = if reason == CloseReason::SlowConsumer {
                m::REASON_SLOW_CONSUMER
            } else {
                m::REASON_RESUME_EXPIRED
            };
            metrics::counter!(m::DELIVERY_FAILURES, "hub" => self.hub_name.to_owned(), "reason" => failure)
                .increment(kept);
            tracing::info!(connection = %self.caller.connection_id, messages = kept, reason = reason.label(), "stateful connection ended before its client resumed it; messages it had not acknowledged are lost");
        }
        Some(reason)
    }
}

/// Opens a stateful connection taken over for this transport: it is registered here,
/// the client is told where the resend starts and gets what it had not acknowledged,
/// then deliveries flow (each channel's catch-up first).
pub(super) async fn resume<'a>(
    upgraded: Upgraded,
    node: &'a Arc<Node>,
    start: &'a mut SessionStart,
    hub_name: &'a str,
    resumed: Resumed,
) -> Option<Session<'a>> {
    let id = start.caller.connection_id.clone();
    let Upgraded {
        socket,
        leftover: early,
    } = upgraded;
    let protocol = resumed.adopted.protocol;
    drop(start.handshake_permit.take());
    let readers = Readers::start(&socket, node, early, protocol).await?;
    let (handle, mut rx) = SessionHandle::with_socket(
        node.limits().outbound_queue,
        node.limits().outbound_queue_bytes,
        socket,
        protocol,
    );
    rx.count_discards(node.meters(start.hub).connection_closed.clone());
    handle.make_stateful(Replay::resumed(
        replay_limits(node),
        resumed.replay,
        &resumed.adopted.channels,
    ));
    let socket = rx.socket().expect("a session's handle owns its socket");
    if let Err(e) = Box::pin(node.adopt(
        start.hub,
        start.caller.clone(),
        handle.clone(),
        &resumed.adopted,
    ))
    .await
    {
        tracing::warn!(connection = %id, error = %e, "a resumed connection could not be taken over");
        close_now(socket, None, crate::ws::frame::CLOSE_NORMAL).await;
        return None;
    }
    let (first, resend) = handle.resend();
    let written = timeout(node.timeouts().write_timeout(), async {
        socket
            .write_all(sequence(protocol, first).as_bytes())
            .await?;
        for frame in &resend {
            socket.write_all(frame.as_bytes()).await?;
        }
        std::io::Result::Ok(())
    })
    .await;
    if !matches!(written, Ok(Ok(()))) {
        // Gone again: the serve loop finds out at once and waits for the next resume.
        socket.shutdown();
    }
    rx.release();
    tracing::debug!(connection = %id, hub = %hub_name, resent = resend.len(), from = first, "resumed");
    let client_next = handle.received() + 1;
    Some(Session::new(
        node,
        start,
        hub_name,
        (handle, rx),
        readers,
        protocol,
        Some(client_next),
    ))
}
