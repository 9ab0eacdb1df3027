//! The last delivery position this node handled per channel, and what a new one means:
//! the next message, a duplicate (already delivered from history), or a gap to fill from
//! history first. Owned by one dispatch worker (a channel always hashes to the same one),
//! so it needs no lock.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use crate::envelope::Position;

/// Positions to fetch from the channel's history before going on: `from..=to` of `epoch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Fill {
    /// The stream the missing messages belong to.
    pub epoch: Bytes,
    /// First missing position.
    pub from: u64,
    /// Last missing position.
    pub to: u64,
    /// The channel's stream started again (Redis lost its data, or the channel was idle
    /// past its position lifetime): what the old stream held after the last message seen
    /// can no longer be checked.
    pub restarted: bool,
    /// Skip messages published before this (µs since the epoch; 0: none): the channel
    /// was joined while its position could not be read, so older history is not owed.
    pub since_micros: u64,
}

/// What to do with a message that carries a position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Step {
    /// The next one: deliver it.
    Deliver,
    /// Already delivered (it came from history first): drop it.
    Duplicate,
    /// Fill the gap from history, then deliver it.
    FillThenDeliver(Fill),
}

#[derive(Debug)]
struct Last {
    /// Empty: no stream known yet (any epoch is new).
    epoch: Box<[u8]>,
    seq: u64,
    /// Set from a head position read after subscribing, and nothing delivered since: a
    /// live message at or below it was published after the subscription and not seen,
    /// so it is delivered rather than taken for a duplicate.
    tentative: bool,
    since_micros: u64,
    /// The stream before this one and the last position delivered (or counted) in it, to
    /// compare with a publisher's [`crate::envelope::Kind::EpochEnd`].
    previous: Option<(Box<[u8]>, u64)>,
}

/// Last positions of the channels one dispatch worker serves.
#[derive(Debug, Default)]
pub(super) struct Positions {
    last: HashMap<Arc<str>, Last>,
}

impl Positions {
    /// Records a message's position and says what to do with it.
    pub fn observe(&mut self, channel: &Arc<str>, pos: &Position) -> Step {
        let Some(last) = self.last.get_mut(channel) else {
            // The first message since this node subscribed: the channel's members joined
            // after anything before it was published.
            self.last.insert(channel.clone(), new_last(pos));
            return Step::Deliver;
        };
        let tentative = std::mem::replace(&mut last.tentative, false);
        if *last.epoch == pos.epoch[..] {
            if pos.seq <= last.seq {
                if tentative {
                    last.seq = pos.seq;
                    return Step::Deliver;
                }
                return Step::Duplicate;
            }
            let from = last.seq + 1;
            last.seq = pos.seq;
            if pos.seq == from {
                return Step::Deliver;
            }
            return Step::FillThenDeliver(Fill {
                epoch: pos.epoch.clone(),
                from,
                to: pos.seq - 1,
                restarted: false,
                since_micros: last.since_micros,
            });
        }
        let since_micros = last.since_micros;
        let restarted = !last.epoch.is_empty();
        switch(last, pos);
        if pos.seq == 1 {
            return Step::Deliver;
        }
        Step::FillThenDeliver(Fill {
            epoch: pos.epoch.clone(),
            from: 1,
            to: pos.seq - 1,
            restarted,
            since_micros,
        })
    }

    /// Where a newly subscribed channel starts: its head position when read after the
    /// subscription (`None`: it has no stream yet), or, when it could not be read, an
    /// empty start with messages older than `since_micros` not owed. Ignored once the
    /// channel has a position.
    pub fn baseline(&mut self, channel: &Arc<str>, head: Option<&Position>, since_micros: u64) {
        self.last.entry(channel.clone()).or_insert_with(|| Last {
            epoch: head.map_or_else(Box::default, |h| h.epoch.to_vec().into_boxed_slice()),
            seq: head.map_or(0, |h| h.seq),
            tentative: head.is_some(),
            since_micros,
            previous: None,
        });
    }

    /// After a (re)subscription, or a dropped message: the channel's head position as the
    /// backplane has it now, and what between the last delivered one and it to fetch. The
    /// position does not move here: messages still queued behind this catch-up are part of
    /// that range, and [`Self::advance`] moves it only past what the fill delivered. A
    /// channel without a position starts at the head (or just before `dropped`, the first
    /// message a full queue dropped, which is owed).
    pub fn catch_up(
        &mut self,
        channel: &Arc<str>,
        head: &Position,
        dropped: Option<&Position>,
    ) -> Option<Fill> {
        if !self.last.contains_key(channel) {
            match dropped {
                Some(d) => {
                    let before = Position {
                        epoch: d.epoch.clone(),
                        seq: d.seq.saturating_sub(1),
                    };
                    self.last.insert(channel.clone(), new_last(&before));
                }
                None => {
                    self.baseline(channel, Some(head), 0);
                    return None;
                }
            }
        }
        let last = self.last.get_mut(channel)?;
        if *last.epoch == head.epoch[..] {
            if head.seq <= last.seq {
                return None;
            }
            return Some(Fill {
                epoch: head.epoch.clone(),
                from: last.seq + 1,
                to: head.seq,
                restarted: false,
                since_micros: last.since_micros,
            });
        }
        let since_micros = last.since_micros;
        let restarted = !last.epoch.is_empty();
        // A new stream: nothing of it delivered yet.
        switch(
            last,
            &Position {
                epoch: head.epoch.clone(),
                seq: 0,
            },
        );
        Some(Fill {
            epoch: head.epoch.clone(),
            from: 1,
            to: head.seq,
            restarted,
            since_micros,
        })
    }

    /// A publisher says the channel's stream `ended.epoch` reached at least `ended.seq`.
    /// Returns the positions of it this node never got (`from..=to`), now counted: the
    /// stream is gone, so they cannot be fetched.
    pub fn epoch_ended(&mut self, channel: &str, ended: &Position) -> Option<(u64, u64)> {
        let last = self.last.get_mut(channel)?;
        let seen = if *last.epoch == ended.epoch[..] {
            &mut last.seq
        } else {
            match &mut last.previous {
                Some((epoch, seq)) if **epoch == ended.epoch[..] => seq,
                _ => return None,
            }
        };
        if ended.seq <= *seen {
            return None;
        }
        let from = *seen + 1;
        *seen = ended.seq;
        Some((from, ended.seq))
    }

    /// Records that everything of `epoch` up to `seq` was delivered (or is not owed).
    pub fn advance(&mut self, channel: &str, epoch: &[u8], seq: u64) {
        if let Some(last) = self.last.get_mut(channel) {
            if *last.epoch == *epoch && seq > last.seq {
                last.seq = seq;
                last.tentative = false;
            }
        }
    }

    /// The last position delivered on a channel, in `epoch`.
    pub fn last_in(&self, channel: &str, epoch: &[u8]) -> Option<u64> {
        self.last
            .get(channel)
            .filter(|l| *l.epoch == *epoch)
            .map(|l| l.seq)
    }

    /// The last position delivered on a channel, if any.
    pub fn last(&self, channel: &str) -> Option<Position> {
        self.last.get(channel).map(|l| Position {
            epoch: Bytes::copy_from_slice(&l.epoch),
            seq: l.seq,
        })
    }

    /// Forgets a channel this node no longer subscribes to.
    pub fn forget(&mut self, channel: &str) {
        self.last.remove(channel);
    }
}

fn new_last(pos: &Position) -> Last {
    Last {
        epoch: pos.epoch.to_vec().into_boxed_slice(),
        seq: pos.seq,
        tentative: false,
        since_micros: 0,
        previous: None,
    }
}

/// `last` moves to a new stream; the old one is kept as the previous.
fn switch(last: &mut Last, pos: &Position) {
    let old = std::mem::replace(last, new_last(pos));
    if !old.epoch.is_empty() {
        last.previous = Some((old.epoch, old.seq));
    }
    last.since_micros = old.since_micros;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(epoch: &'static str, seq: u64) -> Position {
        Position {
            epoch: Bytes::from_static(epoch.as_bytes()),
            seq,
        }
    }

    fn fill(epoch: &'static str, from: u64, to: u64, restarted: bool) -> Fill {
        Fill {
            epoch: Bytes::from_static(epoch.as_bytes()),
            from,
            to,
            restarted,
            since_micros: 0,
        }
    }

    #[test]
    fn in_order_messages_are_delivered_and_repeats_dropped() {
        let mut p = Positions::default();
        let c: Arc<str> = "c".into();
        assert_eq!(p.observe(&c, &pos("e", 5)), Step::Deliver);
        assert_eq!(p.observe(&c, &pos("e", 6)), Step::Deliver);
        assert_eq!(p.observe(&c, &pos("e", 6)), Step::Duplicate);
        assert_eq!(p.observe(&c, &pos("e", 3)), Step::Duplicate);
    }

    #[test]
    fn a_gap_is_filled_before_the_message_that_reveals_it() {
        let mut p = Positions::default();
        let c: Arc<str> = "c".into();
        p.observe(&c, &pos("e", 1));
        assert_eq!(
            p.observe(&c, &pos("e", 5)),
            Step::FillThenDeliver(fill("e", 2, 4, false))
        );
        assert_eq!(p.observe(&c, &pos("e", 6)), Step::Deliver);
    }

    #[test]
    fn a_new_epoch_is_filled_from_its_start() {
        let mut p = Positions::default();
        let c: Arc<str> = "c".into();
        p.observe(&c, &pos("old", 500));
        assert_eq!(
            p.observe(&c, &pos("new", 3)),
            Step::FillThenDeliver(fill("new", 1, 2, true))
        );
        assert_eq!(p.observe(&c, &pos("new", 4)), Step::Deliver);
        assert_eq!(p.observe(&c, &pos("other", 1)), Step::Deliver);
    }

    #[test]
    fn catching_up_fills_the_tail_and_only_what_it_delivered_is_a_duplicate() {
        let mut p = Positions::default();
        let c: Arc<str> = "c".into();
        assert_eq!(
            p.catch_up(&c, &pos("x", 9), None),
            None,
            "an unknown channel starts at its head"
        );
        p.forget(&c);
        p.observe(&c, &pos("e", 4));
        assert_eq!(p.catch_up(&c, &pos("e", 4), None), None);
        assert_eq!(
            p.catch_up(&c, &pos("e", 9), None),
            Some(fill("e", 5, 9, false))
        );
        // The fill delivered 5..=6 (7..=9 are still queued behind it): those arrive live.
        p.advance(&c, b"e", 6);
        assert_eq!(p.observe(&c, &pos("e", 6)), Step::Duplicate);
        assert_eq!(p.observe(&c, &pos("e", 7)), Step::Deliver);
        assert_eq!(p.last_in(&c, b"e"), Some(7));
        assert_eq!(
            p.catch_up(&c, &pos("f", 2), None),
            Some(fill("f", 1, 2, true))
        );
        assert_eq!(
            p.last_in(&c, b"f"),
            Some(0),
            "nothing of the new stream yet"
        );
        p.forget(&c);
        assert_eq!(p.observe(&c, &pos("f", 9)), Step::Deliver, "forgotten");
    }

    #[test]
    fn after_a_baseline_a_live_message_at_or_below_it_is_delivered_once() {
        let mut p = Positions::default();
        let c: Arc<str> = "c".into();
        p.baseline(&c, Some(&pos("e", 10)), 0);
        assert_eq!(
            p.observe(&c, &pos("e", 9)),
            Step::Deliver,
            "published after the subscription"
        );
        assert_eq!(p.observe(&c, &pos("e", 10)), Step::Deliver);
        assert_eq!(p.observe(&c, &pos("e", 10)), Step::Duplicate);
        p.baseline(&c, Some(&pos("e", 50)), 0);
        assert_eq!(
            p.observe(&c, &pos("e", 11)),
            Step::Deliver,
            "a baseline never moves a position"
        );
    }

    #[test]
    fn a_message_a_full_queue_dropped_before_the_channel_had_a_position_is_owed() {
        let mut p = Positions::default();
        let c: Arc<str> = "c".into();
        assert_eq!(
            p.catch_up(&c, &pos("e", 12), Some(&pos("e", 11))),
            Some(fill("e", 11, 12, false))
        );
    }

    #[test]
    fn a_publishers_epoch_end_counts_what_the_lost_stream_held_once() {
        let mut p = Positions::default();
        let c: Arc<str> = "c".into();
        p.observe(&c, &pos("old", 113));
        // The new stream shows up first, then a publisher says the old one reached 114.
        assert!(matches!(p.observe(&c, &pos("new", 1)), Step::Deliver));
        assert_eq!(p.epoch_ended(&c, &pos("old", 114)), Some((114, 114)));
        assert_eq!(p.epoch_ended(&c, &pos("old", 114)), None, "counted once");
        assert_eq!(p.epoch_ended(&c, &pos("old", 110)), None, "already seen");
        assert_eq!(
            p.epoch_ended(&c, &pos("other", 5)),
            None,
            "not a stream it knew"
        );
        // Said before the new stream arrives: the same.
        let d: Arc<str> = "d".into();
        p.observe(&d, &pos("old", 3));
        assert_eq!(p.epoch_ended(&d, &pos("old", 5)), Some((4, 5)));
        assert_eq!(p.observe(&d, &pos("old", 5)), Step::Duplicate);
    }

    #[test]
    fn a_channel_joined_without_a_position_is_filled_from_the_streams_start() {
        let mut p = Positions::default();
        let c: Arc<str> = "c".into();
        p.baseline(&c, None, 77);
        let mut want = fill("new", 1, 4, false);
        want.since_micros = 77;
        assert_eq!(p.observe(&c, &pos("new", 5)), Step::FillThenDeliver(want));
    }
}
