//! Stateful reconnect on the server's side of one connection: what was sent and not yet
//! acknowledged, kept so a new transport (on this node or another) can send it again,
//! and where each channel's deliveries stand, so the node that resumes the connection
//! fills from history exactly what this one did not deliver.
//!
//! Trackable messages (invocations, completions; not pings) are numbered from 1 in the
//! order they go out, the numbering the client keeps too. The client acknowledges up to
//! an id every second or so; frames wholly at or below it are dropped. The buffer is
//! bounded in bytes and in messages: a connection that outgrows it while its transport
//! is down is closed rather than let it grow or hold up a fan-out.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::envelope::Position;
use crate::ws::Frame;

/// How much unacknowledged output a connection may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayLimits {
    /// Bytes of frames.
    pub bytes: usize,
    /// Trackable messages.
    pub messages: u64,
}

/// A frame sent and not yet acknowledged in full.
#[derive(Debug, Clone)]
pub struct Unacked {
    /// The id of its first trackable message.
    pub first: u64,
    /// How many trackable messages it holds.
    pub count: u32,
    /// The frame, as sent.
    pub frame: Frame,
}

/// Where a resumed connection stands on a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Floor {
    /// The node that held the connection delivered up to here; the channel's dispatch
    /// worker has yet to fill what follows from history. Live messages wait for that.
    Pending(Option<Position>),
    /// Delivered up to here: a message at or below it is a repeat.
    Ready(Position),
}

/// One stateful connection's replay state.
#[derive(Debug)]
pub struct Replay {
    limits: ReplayLimits,
    /// The id the next trackable message gets.
    next: u64,
    unacked: VecDeque<Unacked>,
    bytes: usize,
    /// The last position delivered on each channel.
    positions: HashMap<Arc<str>, Position>,
    /// After a resume, per channel: what the new node must not deliver again.
    floors: HashMap<Arc<str>, Floor>,
    /// Trackable messages processed from the client (its numbering).
    received: u64,
}

/// The buffer would exceed its limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow;

/// What moves with a connection to the transport that resumes it.
#[derive(Debug, Clone)]
pub struct ReplayState {
    /// The id the next trackable message gets.
    pub next: u64,
    /// Unacknowledged frames, oldest first.
    pub unacked: Vec<Unacked>,
    /// The last position delivered on each channel.
    pub positions: Vec<(Arc<str>, Position)>,
    /// Trackable messages processed from the client: what it sends again at or below
    /// this id is a repeat.
    pub received: u64,
}

impl Replay {
    /// An empty buffer: the first trackable message will be 1.
    pub fn new(limits: ReplayLimits) -> Self {
        Self {
            limits,
            next: 1,
            unacked: VecDeque::new(),
            bytes: 0,
            positions: HashMap::new(),
            floors: HashMap::new(),
            received: 0,
        }
    }

    /// Resumes `state` (from the transport before), its frames to be sent again first.
    /// Each channel in `channels` waits for its catch-up ([`Floor::Pending`]) from the
    /// position delivered there, if any.
    pub fn resumed(limits: ReplayLimits, state: ReplayState, channels: &[Arc<str>]) -> Self {
        let positions: HashMap<Arc<str>, Position> = state.positions.into_iter().collect();
        let floors = channels
            .iter()
            .map(|c| (c.clone(), Floor::Pending(positions.get(c).cloned())))
            .collect();
        let bytes = state.unacked.iter().map(|u| u.frame.as_bytes().len()).sum();
        Self {
            limits,
            next: state.next,
            unacked: state.unacked.into(),
            bytes,
            positions,
            floors,
            received: state.received,
        }
    }

    /// Trackable messages processed from the client.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// One more trackable message from the client was processed.
    pub fn receive(&mut self) -> u64 {
        self.received += 1;
        self.received
    }

    /// Whether a delivery at `position` on `channel` is to be sent: not before the
    /// channel's catch-up, not twice.
    pub fn wants(&self, channel: &str, position: &Position) -> bool {
        match self.floors.get(channel) {
            None => true,
            Some(Floor::Pending(_)) => false,
            Some(Floor::Ready(floor)) => floor.epoch != position.epoch || position.seq > floor.seq,
        }
    }

    /// The catch-up of `channel` delivers from after this position (`None`: nothing was
    /// delivered there before the resume).
    pub fn pending_floor(&self, channel: &str) -> Option<Option<Position>> {
        match self.floors.get(channel) {
            Some(Floor::Pending(p)) => Some(p.clone()),
            _ => None,
        }
    }

    /// The catch-up of `channel` delivered up to `upto`: live messages follow.
    pub fn caught_up(&mut self, channel: &Arc<str>, upto: Option<Position>) {
        match upto {
            Some(p) => {
                self.floors.insert(channel.clone(), Floor::Ready(p));
            }
            None => {
                self.floors.remove(channel);
            }
        }
    }

    /// Records a frame going out with `count` trackable messages, and the position it
    /// delivers on a channel.
    ///
    /// # Errors
    /// [`Overflow`] when it would pass the limits; nothing is recorded.
    pub fn record(
        &mut self,
        frame: &Frame,
        count: u32,
        position: Option<(&Arc<str>, &Position)>,
    ) -> Result<(), Overflow> {
        if let Some((channel, p)) = position {
            self.positions.insert(channel.clone(), p.clone());
        }
        if count == 0 {
            return Ok(());
        }
        let bytes = self.bytes + frame.as_bytes().len();
        let held = self.unacked_messages() + u64::from(count);
        if bytes > self.limits.bytes || held > self.limits.messages {
            return Err(Overflow);
        }
        self.unacked.push_back(Unacked {
            first: self.next,
            count,
            frame: frame.clone(),
        });
        self.next += u64::from(count);
        self.bytes = bytes;
        Ok(())
    }

    fn unacked_messages(&self) -> u64 {
        self.unacked
            .front()
            .map_or(0, |first| self.next - first.first)
    }

    /// The client processed everything up to `upto`.
    pub fn ack(&mut self, upto: u64) {
        while let Some(front) = self.unacked.front() {
            if front.first + u64::from(front.count) - 1 > upto {
                break;
            }
            self.bytes -= front.frame.as_bytes().len();
            self.unacked.pop_front();
        }
        if self.unacked.is_empty() && self.unacked.capacity() > 64 {
            self.unacked = VecDeque::new();
        }
    }

    /// Trackable messages not acknowledged.
    pub fn pending(&self) -> u64 {
        self.unacked_messages()
    }

    /// The id a resend starts at: the oldest unacknowledged message, or the next one.
    pub fn first_unacked(&self) -> u64 {
        self.unacked.front().map_or(self.next, |u| u.first)
    }

    /// Unacknowledged frames, oldest first, to send again.
    pub fn unacked(&self) -> impl Iterator<Item = &Unacked> {
        self.unacked.iter()
    }

    /// Everything that moves to the transport that resumes the connection.
    pub fn take(&mut self) -> ReplayState {
        self.bytes = 0;
        ReplayState {
            next: self.next,
            unacked: std::mem::take(&mut self.unacked).into(),
            positions: self.positions.drain().collect(),
            received: self.received,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    const LIMITS: ReplayLimits = ReplayLimits {
        bytes: 1000,
        messages: 10,
    };

    fn pos(seq: u64) -> Position {
        Position {
            epoch: Bytes::from_static(b"e"),
            seq,
        }
    }

    #[test]
    fn acks_drop_whole_frames_only() {
        let mut r = Replay::new(LIMITS);
        let f = Frame::text(b"x");
        r.record(&f, 1, None).unwrap();
        r.record(&f, 3, None).unwrap(); // 2, 3, 4
        r.record(&f, 0, None).unwrap(); // a ping: not numbered
        assert_eq!(r.pending(), 4);
        r.ack(3);
        assert_eq!(
            r.first_unacked(),
            2,
            "frame 2..=4 is not acknowledged in full"
        );
        r.ack(4);
        assert_eq!(r.pending(), 0);
        assert_eq!(r.first_unacked(), 5);
    }

    #[test]
    fn the_limits_refuse_and_record_nothing() {
        let mut r = Replay::new(LIMITS);
        let f = Frame::text(&[b'x'; 400]);
        r.record(&f, 1, None).unwrap();
        r.record(&f, 1, None).unwrap();
        assert_eq!(r.record(&f, 1, None), Err(Overflow), "1 200 bytes > 1 000");
        assert_eq!(r.pending(), 2);
        r.ack(2);
        let small = Frame::text(b"x");
        for _ in 0..10 {
            r.record(&small, 1, None).unwrap();
        }
        assert_eq!(r.record(&small, 1, None), Err(Overflow), "11 messages > 10");
    }

    #[test]
    fn a_resumed_connection_waits_for_each_catch_up_then_drops_repeats() {
        let c: Arc<str> = Arc::from("c");
        let mut r = Replay::new(LIMITS);
        r.record(&Frame::text(b"x"), 1, Some((&c, &pos(7))))
            .unwrap();
        let state = r.take();
        let mut resumed = Replay::resumed(LIMITS, state, std::slice::from_ref(&c));
        assert_eq!(resumed.first_unacked(), 1, "sent again first");
        assert!(!resumed.wants("c", &pos(9)), "not before the catch-up");
        assert_eq!(resumed.pending_floor("c"), Some(Some(pos(7))));
        resumed.caught_up(&c, Some(pos(9)));
        assert!(!resumed.wants("c", &pos(9)));
        assert!(resumed.wants("c", &pos(10)));
        assert!(resumed.wants("other", &pos(1)));
    }
}
