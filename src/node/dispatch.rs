//! Fan-out: payloads from the backplane's dispatch queues go to local members' bounded
//! queues without waiting; a full queue closes its connection as a slow consumer.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::frames::Frames;
use super::positions::{Fill, Positions, Step};
use super::Node;
use crate::backplane::InboundItem;
use crate::connection::close::CloseReason;
use crate::connection::handle::{Outbound, QueueError, Sent, SessionHandle};
use crate::envelope::{now_micros, Envelope, Kind, Position};
use crate::ids::ConnectionId;
use crate::metrics as m;
use crate::ws::Frame;

impl Node {
    // ---- fan-out ---------------------------------------------------------------------

    /// Writes a frame to every local member of a channel. Never waits: an idle member's
    /// socket is written at once, a busy one's queue takes it, and a member whose queue
    /// is full is closed as a slow consumer.
    pub(super) fn deliver_local(
        &self,
        channel: &Arc<str>,
        frames: &mut Frames<'_>,
        published_at: u64,
        position: Option<&Position>,
        excluded: &[Bytes],
    ) {
        // The members are copied out first, so no registry lock is held across the
        // socket writes (a join on this node must not wait for a large group's fan-out).
        let mut members: Vec<(ConnectionId, SessionHandle)> = Vec::new();
        let Some(hub) = self.registry.for_each_member(channel, |member| {
            if !excluded.iter().any(|x| x == member.id.as_str().as_bytes()) {
                members.push((member.id.clone(), member.handle.clone()));
            }
        }) else {
            return;
        };
        let meters = &self.meters[hub];
        let direct = members.len() <= DIRECT_WRITE_MAX_MEMBERS;
        let mut written = 0u64;
        let mut closing = 0u64;
        let mut unencodable = 0u64;
        for (id, handle) in &members {
            let Some(frame) = frames.get(handle.protocol()) else {
                unencodable += 1;
                continue;
            };
            let item = Outbound::delivery(frame, published_at);
            match handle.try_send_at(item, direct, position.map(|p| (channel, p))) {
                Ok(Sent::Written) => written += 1,
                Ok(Sent::Queued | Sent::Skipped) => {}
                Err(QueueError::Closed) => closing += 1,
                Err(QueueError::Full) => evict_slow(meters, handle, id, self.hubs[hub].name()),
            }
        }
        if written > 0 {
            meters.delivered(written, published_at, now_micros());
        }
        if unencodable > 0 {
            metrics::counter!(m::DELIVERY_FAILURES, "hub" => self.hubs[hub].name().to_owned(), "reason" => m::REASON_BAD_ENVELOPE).increment(unencodable);
        }
        if closing > 0 {
            meters.connection_closed.increment(closing);
            tracing::debug!(
                channel = %channel,
                connections = closing,
                "message not queued: connections closing"
            );
        }
    }
}

/// Most local members a dispatch worker writes to itself. A larger fan-out is queued for
/// the sessions' tasks, which write in parallel on the runtime's threads: one worker
/// writing 500 sockets in a row (2–3 ms a message) let a big group's backlog, and its
/// latency, grow (p99 634 ms with 1 000 members, BENCHMARKS.md).
const DIRECT_WRITE_MAX_MEMBERS: usize = 64;

pub(super) fn deliver_to(
    meters: &m::HubMeters,
    handle: &SessionHandle,
    id: &ConnectionId,
    hub: &str,
    frame: Frame,
    published_at: u64,
) -> bool {
    match handle.try_send(Outbound::delivery(frame, published_at)) {
        Ok(Sent::Written) => {
            meters.delivered(1, published_at, now_micros());
            true
        }
        Ok(Sent::Queued | Sent::Skipped) => true,
        Err(QueueError::Closed) => {
            meters.connection_closed.increment(1);
            tracing::debug!(connection = %id, "message not queued: connection closing");
            false
        }
        Err(QueueError::Full) => {
            evict_slow(meters, handle, id, hub);
            false
        }
    }
}

pub(super) fn evict_slow(
    meters: &m::HubMeters,
    handle: &SessionHandle,
    id: &ConnectionId,
    hub: &str,
) {
    meters.slow_consumer.increment(1);
    if handle.close(CloseReason::SlowConsumer) {
        tracing::warn!(connection = %id, hub, "slow consumer: outbound queue full, closing the connection");
    }
}

pub(super) fn bad_envelope(hub: &str, why: &str) {
    metrics::counter!(m::DELIVERY_FAILURES, "hub" => hub.to_owned(), "reason" => m::REASON_BAD_ENVELOPE).increment(1);
    tracing::warn!(why, "backplane payload dropped: not a valid envelope");
}

/// Takes payloads from one dispatch queue and fans them out. Channel deliveries are done
/// inline (they never wait); control messages that need the backplane run as their own
/// tasks so one slow join cannot hold up the queue. A gap in a channel's positions is
/// filled from its history first (a backplane round trip, rare), so members get every
/// message once and in order.
pub(super) async fn dispatch_worker(node: Arc<Node>, mut rx: mpsc::Receiver<InboundItem>) {
    let mut positions = Positions::default();
    loop {
        let item = tokio::select! {
            _ = node.stop.cancelled() => return,
            item = rx.recv() => item,
        };
        match item {
            None => return,
            Some(InboundItem::Message(channel, payload)) => {
                let env = match Envelope::decode(&payload) {
                    Ok(e) => e,
                    Err(e) => {
                        bad_envelope(crate::keys::hub_label(&channel), &e.to_string());
                        continue;
                    }
                };
                if env.kind == Kind::EpochEnd {
                    if let Some(ended) = Position::parse(&env.body) {
                        if let Some((from, to)) = positions.epoch_ended(&channel, &ended) {
                            node.count_gap(&channel, &ended.epoch, (from, to), to + 1 - from);
                        }
                    }
                    continue;
                }
                if let Some(pos) = &env.position {
                    match positions.observe(&channel, pos) {
                        Step::Deliver => {}
                        Step::Duplicate => {
                            tracing::debug!(channel = %channel, seq = pos.seq, "already delivered from history");
                            continue;
                        }
                        Step::FillThenDeliver(fill) => {
                            // The message that revealed the gap is here: anything before it
                            // that did not come is missing.
                            if fill.restarted {
                                node.count_lost_tail(&mut positions, &channel).await;
                            }
                            node.fill(&channel, &fill, true).await;
                        }
                    }
                }
                node.handle(&channel, env).await;
            }
            Some(InboundItem::CatchUp(channel, dropped)) => {
                node.inbound_tx.caught_up(&channel);
                match node.backplane.head(&channel).await {
                    Ok(Some(head)) => {
                        if let Some(fill) = positions.catch_up(&channel, &head, dropped.as_ref()) {
                            if fill.restarted {
                                node.count_lost_tail(&mut positions, &channel).await;
                            }
                            let reached = node.fill(&channel, &fill, false).await;
                            positions.advance(&channel, &fill.epoch, reached);
                            if reached < fill.to {
                                // The rest may still be queued behind this catch-up; what
                                // has not arrived after a moment is missing.
                                node.verify_later(
                                    channel.clone(),
                                    Position {
                                        epoch: fill.epoch.clone(),
                                        seq: fill.to,
                                    },
                                );
                            }
                        }
                    }
                    Ok(None) => positions.baseline(&channel, None, 0),
                    // A new channel starts empty (what is published from now on is owed);
                    // a known one is looked at again by the next resync, or its next
                    // message reveals the gap.
                    Err(e) => {
                        let since = crate::envelope::now_micros()
                            .saturating_sub(super::subscriptions::CLOCK_SKEW_MICROS);
                        positions.baseline(&channel, None, since);
                        tracing::warn!(channel = %channel, error = %e, "could not read the channel's position to catch up")
                    }
                }
            }
            Some(InboundItem::Verify(channel, upto)) => {
                let Some(last) = positions.last_in(&channel, &upto.epoch) else {
                    continue;
                };
                if last < upto.seq {
                    let fill = Fill {
                        epoch: upto.epoch.clone(),
                        from: last + 1,
                        to: upto.seq,
                        restarted: false,
                        since_micros: 0,
                    };
                    node.fill(&channel, &fill, true).await;
                    positions.advance(&channel, &upto.epoch, upto.seq);
                }
            }
            Some(InboundItem::JoinedUnreachable(channel, since)) => {
                positions.baseline(&channel, None, since);
            }
            // Queued when the channel's last local member left, ahead of anything a later
            // join queues, so a member who joins again is owed only what follows.
            Some(InboundItem::Forget(channel)) => positions.forget(&channel),
            Some(InboundItem::Resume(channel, id, since)) => {
                node.resume_catch_up(&channel, &id, positions.last(&channel), since)
                    .await;
            }
        }
    }
}

impl Node {
    /// Acts on one envelope from a channel.
    async fn handle(self: &Arc<Self>, channel: &Arc<str>, env: Envelope) {
        match env.kind {
            Kind::Deliver | Kind::DeliverExcept => {
                self.received.fetch_add(1, Ordering::Relaxed);
                // The publish's correlation id, on every node that delivers it; at debug,
                // since a line per message per node costs more than the delivery itself
                // (`RUST_LOG=hubcast::delivery=debug` to trace one).
                tracing::debug!(
                    target: "hubcast::delivery",
                    channel = %channel,
                    correlation_id = %String::from_utf8_lossy(&env.correlation),
                    local_members = self.registry.member_count(channel),
                    "delivering"
                );
                let Some((excluded, record)) = env.excluded_and_record() else {
                    bad_envelope(crate::keys::hub_label(channel), "truncated exclusion list");
                    return;
                };
                if std::str::from_utf8(&record).is_err() {
                    bad_envelope(crate::keys::hub_label(channel), "record is not UTF-8");
                    return;
                }
                // Framed once here per protocol, for every local member.
                let mut frames = Frames::new(&record);
                self.deliver_local(
                    channel,
                    &mut frames,
                    env.published_at_micros,
                    env.position.as_ref(),
                    &excluded,
                );
            }
            Kind::CloseMembers => self.close_members(channel, &env.body),
            Kind::UserGroup => {
                let node = self.clone();
                let channel = channel.clone();
                self.tasks
                    .spawn(async move { node.apply_user_group(&channel, &env.body).await });
            }
            Kind::UserInGroup => {
                let node = self.clone();
                let channel = channel.clone();
                self.tasks
                    .spawn(async move { node.answer_user_in_group(&channel, &env.body).await });
            }
            Kind::Send
            | Kind::Close
            | Kind::Probe
            | Kind::Ack
            | Kind::HandedOff
            | Kind::TransportReply
            | Kind::UserInGroupReply => {
                self.apply_control(env).await;
            }
            // Handled by the dispatch worker, which holds the positions.
            Kind::EpochEnd => {}
            Kind::Join | Kind::Leave | Kind::HandOff | Kind::Transport => {
                let node = self.clone();
                self.tasks
                    .spawn(async move { node.apply_control(env).await });
            }
        }
    }

    /// The channel's stream started again: what the old one held after this node's last
    /// message, as a publisher or the new server recorded it, is counted as missing (the
    /// old stream's history is gone).
    async fn count_lost_tail(&self, positions: &mut Positions, channel: &Arc<str>) {
        match self.backplane.previous_epoch(channel).await {
            Ok(Some(ended)) => {
                if let Some((from, to)) = positions.epoch_ended(channel, &ended) {
                    self.count_gap(channel, &ended.epoch, (from, to), to + 1 - from);
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(channel = %channel, error = %e, "could not read where the channel's previous stream ended")
            }
        }
    }

    /// Delivers what a channel's history still holds of `fill`, in order. With
    /// `count_missing`, the rest is counted as `backplane_gap` (once per local member, the
    /// deliveries it cost). Returns the last position up to which everything was
    /// delivered or is not owed.
    async fn fill(self: &Arc<Self>, channel: &Arc<str>, fill: &Fill, count_missing: bool) -> u64 {
        let hub = crate::keys::hub_label(channel).to_owned();
        if fill.restarted {
            tracing::info!(channel = %channel, epoch = %String::from_utf8_lossy(&fill.epoch), "the channel's stream started again (Redis lost its data, or the channel was idle past its position lifetime); what the old one held after this node's last message cannot be checked");
        }
        let kept = self.delivery.history_messages as u64;
        // Only the newest `kept` can still be there.
        let from = fill.from.max((fill.to + 1).saturating_sub(kept));
        let fetched = if kept == 0 || from > fill.to {
            Ok(Vec::new())
        } else {
            self.backplane
                .history(channel, &fill.epoch, from, fill.to)
                .await
        };
        let fetched = fetched.unwrap_or_else(|e| {
            tracing::warn!(channel = %channel, error = %e, "could not read the channel's history");
            Vec::new()
        });
        let mut next = fill.from;
        let mut missing = 0u64;
        let mut recovered = 0u64;
        // Everything before `next` is delivered or not owed, while nothing is missing.
        let mut reached = fill.from - 1;
        for payload in fetched {
            let Ok(env) = Envelope::decode(&payload) else {
                continue;
            };
            let Some(seq) = env.position.as_ref().map(|p| p.seq) else {
                continue;
            };
            if seq < next || seq > fill.to {
                continue;
            }
            let owed = env.published_at_micros >= fill.since_micros;
            missing += seq - next;
            if missing == 0 {
                reached = seq;
            }
            next = seq + 1;
            if owed {
                recovered += 1;
                self.handle(channel, env).await;
            }
        }
        missing += fill.to + 1 - next;
        if !count_missing {
            missing = 0;
        }
        if recovered > 0 {
            metrics::counter!(m::HISTORY_RECOVERED, "hub" => hub.clone()).increment(recovered);
            tracing::info!(
                channel = %channel,
                from = fill.from,
                to = fill.to,
                recovered,
                "missed messages delivered from the channel's history"
            );
        }
        if missing > 0 {
            self.count_gap(channel, &fill.epoch, (fill.from, fill.to), missing);
        }
        if count_missing {
            fill.to
        } else {
            reached
        }
    }

    /// Counts `missing` messages of `from..=to` that this node missed on `channel` and can
    /// no longer get as `backplane_gap`: once per local member (a message for one connection on a control
    /// channel counts once), with a log line naming the range.
    fn count_gap(&self, channel: &str, epoch: &[u8], (from, to): (u64, u64), missing: u64) {
        let hub = crate::keys::hub_label(channel);
        let members = self.registry.member_count(channel).max(1) as u64;
        metrics::counter!(m::DELIVERY_FAILURES, "hub" => hub.to_owned(), "reason" => m::REASON_BACKPLANE_GAP)
            .increment(missing * members);
        tracing::warn!(
            hub,
            channel,
            epoch = %String::from_utf8_lossy(epoch),
            from,
            to,
            missing,
            local_members = members,
            "messages missed on this channel can no longer be fetched; counted as backplane_gap"
        );
    }

    /// Queues a [`InboundItem::Verify`] for `channel` after [`VERIFY_AFTER`].
    fn verify_later(&self, channel: Arc<str>, upto: Position) {
        let inbound = self.inbound_tx.clone();
        let stop = self.stop.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(VERIFY_AFTER) => inbound.control(InboundItem::Verify(channel, upto)),
            }
        });
    }
}

/// How long messages a catch-up could not find in history may take to arrive behind it
/// before they count as missing: far longer than a queued message waits.
const VERIFY_AFTER: std::time::Duration = std::time::Duration::from_secs(2);
