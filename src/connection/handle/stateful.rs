//! The stateful-reconnect side of a handle: numbering and keeping what is sent, the
//! transport going away and the connection moving to another one.

use std::sync::Arc;

use super::{QueueError, Sent, SessionHandle};
use crate::connection::close::CloseReason;
use crate::connection::handle::Outbound;
use crate::connection::replay::{Replay, ReplayState};
use crate::envelope::Position;
use crate::ws::Frame;

impl SessionHandle {
    /// Numbers and keeps this connection's output from now on.
    pub fn make_stateful(&self, replay: Replay) {
        self.shared.state().replay = Some(Box::new(replay));
    }

    /// Whether the connection may be resumed on a new transport.
    pub fn is_stateful(&self) -> bool {
        self.shared.state().replay.is_some()
    }

    /// The transport is gone: what is sent from now on is only kept for the resend, and
    /// what was queued for the old transport is in the resend already.
    pub fn detach(&self) {
        let mut state = self.shared.state();
        state.detached = true;
        state.queue.clear();
        state.bytes = 0;
    }

    /// Ends this transport's hold on the connection and returns what moves to the new
    /// one; `None` when the connection is not stateful or already ending. The old
    /// session then ends without leaving the connection's groups.
    pub fn hand_off(&self) -> Option<ReplayState> {
        let taken = {
            let mut state = self.shared.state();
            if state.reason.is_some() || state.ended {
                return None;
            }
            let taken = state.replay.as_mut()?.take();
            state.reason = Some(CloseReason::Resumed);
            state.detached = true;
            state.queue.clear();
            state.bytes = 0;
            taken
        };
        self.shared.closing.notify_waiters();
        if let Some(socket) = &self.shared.socket {
            // The client is on its new transport: the old one, if still open, is stale.
            socket.shutdown();
        }
        Some(taken)
    }

    /// The client processed our trackable messages up to `upto`.
    pub fn ack(&self, upto: u64) {
        if let Some(r) = self.shared.state().replay.as_mut() {
            r.ack(upto);
        }
    }

    /// Trackable messages processed from the client so far.
    pub fn received(&self) -> u64 {
        self.shared
            .state()
            .replay
            .as_ref()
            .map_or(0, |r| r.received())
    }

    /// One more trackable message from the client was processed; returns its id.
    pub fn receive(&self) -> u64 {
        self.shared
            .state()
            .replay
            .as_mut()
            .map_or(0, |r| r.receive())
    }

    /// Trackable messages sent and not acknowledged.
    pub fn unacknowledged(&self) -> u64 {
        self.shared
            .state()
            .replay
            .as_ref()
            .map_or(0, |r| r.pending())
    }

    /// The id a resend starts at, and the frames to send again, oldest first.
    pub fn resend(&self) -> (u64, Vec<Frame>) {
        let state = self.shared.state();
        match state.replay.as_ref() {
            Some(r) => (
                r.first_unacked(),
                r.unacked().map(|u| u.frame.clone()).collect(),
            ),
            None => (1, Vec::new()),
        }
    }

    /// After a resume: where `channel`'s catch-up starts (`Some(None)`: nothing was
    /// delivered there), or `None` when it has none pending.
    pub fn pending_floor(&self, channel: &str) -> Option<Option<Position>> {
        self.shared.state().replay.as_ref()?.pending_floor(channel)
    }

    /// Sends a message of `channel`'s catch-up, before the live ones it holds back.
    ///
    /// # Errors
    /// As [`Self::try_send`].
    pub fn send_caught_up(
        &self,
        item: Outbound,
        channel: &Arc<str>,
        position: &Position,
    ) -> Result<Sent, QueueError> {
        self.send_at(item, false, None).inspect(|_| {
            if let Some(r) = self.shared.state().replay.as_mut() {
                r.caught_up(channel, Some(position.clone()));
            }
        })
    }

    /// `channel`'s catch-up is done up to `upto`: its live messages follow.
    pub fn caught_up(&self, channel: &Arc<str>, upto: Option<Position>) {
        if let Some(r) = self.shared.state().replay.as_mut() {
            r.caught_up(channel, upto);
        }
    }
}
