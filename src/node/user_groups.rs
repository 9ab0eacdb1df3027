//! A user's groups beyond its current connections (Azure SignalR's "add user to
//! group"): the record kept in the backplane for the user's future connections, each
//! new connection joining its user's groups, timed memberships ending on every node,
//! and asking the cluster whether a user is in a group.
//!
//! Order makes a change and a connection opening at the same time meet: a change writes
//! the record before it tells the user's channel, and a new connection is on the user's
//! channel before it reads the records, so it sees the one or gets the other.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;

use super::dispatch::bad_envelope;
use super::remote::ACK_TIMEOUT;
use super::{Node, NodeError};
use crate::backplane::user_groups::LASTING;
use crate::envelope::{now_micros, Envelope, Kind, UserInGroupQuery, UserInGroupReply};
use crate::ids::{ConnectionId, GroupName, UserId};
use crate::metrics as m;

/// The restore queue: connections whose user's groups are still to be joined.
pub(super) type PendingRestores = Mutex<HashSet<(usize, ConnectionId)>>;

/// Longest ttl taken: a year, as long as a membership without one.
pub const MAX_TTL: Duration = LASTING;

/// How long a user's membership of a group lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// Only the user's current connections join (Azure's `ttl=0`).
    Current,
    /// A year, for the user's future connections too (no ttl).
    Lasting,
    /// This long, for the user's future connections too; then every connection of the
    /// user leaves the group.
    For(Duration),
}

/// Timed memberships joined on this node, by when each ends.
#[derive(Debug, Default)]
pub(super) struct Endings {
    queue: BTreeSet<(u64, usize, UserId, GroupName)>,
    at: HashMap<(usize, UserId, GroupName), u64>,
}

impl Endings {
    fn insert(&mut self, hub: usize, user: &UserId, group: &GroupName, at: u64) {
        let key = (hub, user.clone(), group.clone());
        if let Some(old) = self.at.insert(key, at) {
            self.queue.remove(&(old, hub, user.clone(), group.clone()));
        }
        self.queue.insert((at, hub, user.clone(), group.clone()));
    }

    fn due(&mut self, now: u64) -> Vec<(usize, UserId, GroupName)> {
        let mut out = Vec::new();
        while self.queue.first().is_some_and(|(at, ..)| *at <= now) {
            if let Some((_, hub, user, group)) = self.queue.pop_first() {
                self.at.remove(&(hub, user.clone(), group.clone()));
                out.push((hub, user, group));
            }
        }
        out
    }

    /// Forgets the endings of users `keep` says have no connection here any more, so
    /// the schedule stays as small as the node's own users' memberships.
    fn retain_users(&mut self, mut keep: impl FnMut(usize, &UserId) -> bool) {
        self.at.retain(|(hub, user, _), _| keep(*hub, user));
        let at = &self.at;
        self.queue
            .retain(|(_, hub, user, group)| at.contains_key(&(*hub, user.clone(), group.clone())));
    }
}

/// Answers to one [`Kind::UserInGroup`] question.
#[derive(Debug, Default)]
pub(super) struct Question {
    /// (answers so far, any of them yes).
    answers: Mutex<(usize, bool)>,
    notify: Notify,
}

fn now_ms() -> u64 {
    now_micros() / 1000
}

fn count(hub: &str, outcome: &'static str, n: u64) {
    metrics::counter!(m::USER_GROUP_MEMBERSHIPS, "hub" => hub.to_owned(), "outcome" => outcome)
        .increment(n);
}

impl Node {
    /// Adds the user to `group`: its current connections on every node, and, unless
    /// the lifetime is [`Lifetime::Current`], its future connections until it ends.
    ///
    /// # Errors
    /// The backplane; too many groups for a connection on this node.
    pub async fn add_user_to_group(
        &self,
        hub: usize,
        user: &UserId,
        group: &GroupName,
        lifetime: Lifetime,
    ) -> Result<(), NodeError> {
        let name = self.hubs[hub].name();
        let ends_at_ms = match lifetime {
            Lifetime::For(ttl) => Some(now_ms() + ttl.as_millis() as u64),
            Lifetime::Current | Lifetime::Lasting => None,
        };
        if lifetime != Lifetime::Current {
            let evicted = self
                .backplane
                .add_user_group(name, user.as_str(), group.as_str(), ends_at_ms)
                .await?;
            if evicted > 0 {
                count(name, "evicted", evicted as u64);
                tracing::info!(hub = name, user = %user.as_str(), evicted, "a user's oldest group records made room for a new one");
            }
        }
        self.change_user_groups(hub, user, Some(group), true, ends_at_ms)
            .await
    }

    /// Takes the user out of `group` (`None`: every group): its record, and its
    /// current connections on every node.
    ///
    /// # Errors
    /// The backplane.
    pub async fn remove_user_from_group(
        &self,
        hub: usize,
        user: &UserId,
        group: Option<&GroupName>,
    ) -> Result<(), NodeError> {
        self.backplane
            .remove_user_group(
                self.hubs[hub].name(),
                user.as_str(),
                group.map(GroupName::as_str),
            )
            .await?;
        self.change_user_groups(hub, user, group, false, None).await
    }

    /// A new connection of `user` joins the groups its user belongs to. What cannot be
    /// joined is counted and logged; a failed read is tried again every second.
    pub(super) async fn restore_user_groups(&self, hub: usize, id: &ConnectionId, user: &UserId) {
        let name = self.hubs[hub].name();
        let records = match self.backplane.user_groups(name, user.as_str()).await {
            Ok(r) => r,
            Err(e) => {
                self.restore_later(hub, id, name, &e.to_string());
                return;
            }
        };
        for record in records {
            let Ok(group) = GroupName::parse(&record.group) else {
                continue;
            };
            let channel = self.keys.group_channel(name, group.as_str());
            match self.join_channel(id, hub, &channel, Some(&group)).await {
                Ok(_) => {
                    if record.timed {
                        self.schedule_end(hub, user, &group, record.ends_at_ms);
                    }
                }
                Err(NodeError::UnknownConnection(_)) => return,
                Err(NodeError::TooManyGroups(n)) => {
                    count(name, "join_refused", 1);
                    tracing::warn!(hub = name, connection = %id, groups = n, "a connection could not join its user's group: it is in as many groups as allowed");
                }
                Err(e) => {
                    self.restore_later(hub, id, name, &e.to_string());
                    return;
                }
            }
        }
    }

    fn restore_later(&self, hub: usize, id: &ConnectionId, name: &str, error: &str) {
        let first = self
            .pending_restores
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((hub, id.clone()));
        if first {
            count(name, "restore_failed", 1);
            tracing::warn!(hub = name, connection = %id, error, "a new connection could not join its user's groups yet; trying again every second");
        }
    }

    /// Remembers when a timed membership joined here ends.
    pub(super) fn schedule_end(&self, hub: usize, user: &UserId, group: &GroupName, at: u64) {
        self.endings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(hub, user, group, at);
    }

    /// A connection of `user` that moved here (stateful reconnect) brings its timed
    /// memberships: their endings are this node's to keep now.
    pub(super) async fn adopt_endings(&self, hub: usize, user: &UserId, channels: &[Arc<str>]) {
        let name = self.hubs[hub].name();
        let Ok(records) = self.backplane.user_groups(name, user.as_str()).await else {
            return;
        };
        for r in records.iter().filter(|r| r.timed) {
            let Ok(group) = GroupName::parse(&r.group) else {
                continue;
            };
            let channel = self.keys.group_channel(name, group.as_str());
            if channels.iter().any(|c| **c == *channel) {
                self.schedule_end(hub, user, &group, r.ends_at_ms);
            }
        }
    }

    /// Once a second: ends what is due (unless its record was renewed), and restores
    /// the groups of connections whose first try failed.
    pub(super) async fn user_groups_tick(&self, tick: u64) {
        let due = self
            .endings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .due(now_ms());
        for (hub, user, group) in due {
            self.end_membership(hub, &user, &group).await;
        }
        if tick % 60 == 0 {
            let keys = &self.keys;
            let hubs = &self.hubs;
            let registry = &self.registry;
            self.endings
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain_users(|hub, user| {
                    registry.has_members(&keys.user_channel(hubs[hub].name(), user.as_str()))
                });
        }
        let pending: Vec<(usize, ConnectionId)> = std::mem::take(
            &mut *self
                .pending_restores
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        )
        .into_iter()
        .collect();
        for (hub, id) in pending {
            let Some(user) = self.registry.connection(&id).and_then(|c| c.caller.user) else {
                continue;
            };
            self.restore_user_groups(hub, &id, &user).await;
        }
    }

    async fn end_membership(&self, hub: usize, user: &UserId, group: &GroupName) {
        let name = self.hubs[hub].name();
        match self.backplane.user_groups(name, user.as_str()).await {
            Ok(records) => {
                if let Some(r) = records.iter().find(|r| r.group == group.as_str()) {
                    // Renewed: a later end, or lasting now.
                    if r.timed {
                        self.schedule_end(hub, user, group, r.ends_at_ms);
                    }
                    return;
                }
            }
            Err(e) => {
                // Tried again in a second: ending late is better than not at all.
                tracing::debug!(error = %e, "cannot read a user's groups; ending its membership later");
                self.schedule_end(hub, user, group, now_ms() + 1000);
                return;
            }
        }
        let channel = self.keys.user_channel(name, user.as_str());
        let mut ids = Vec::new();
        self.registry
            .for_each_member(&channel, |m| ids.push(m.id.clone()));
        let mut left = false;
        for id in ids {
            left |= self
                .change_group(hub, &id, Some(group), false)
                .await
                .unwrap_or(false);
        }
        if left {
            count(name, "ended", 1);
            tracing::info!(hub = name, user = %user.as_str(), group = %group.as_str(), "a user's timed group membership ended");
        }
    }

    /// Whether the user is in the group: by its record, or by a connection of it in the
    /// group on any node (asked on the user's channel, which reaches exactly the nodes
    /// holding one; each answers).
    ///
    /// # Errors
    /// The backplane, or [`NodeError::OwnerTimeout`] when a node did not answer.
    pub async fn user_in_group(
        &self,
        hub: usize,
        user: &UserId,
        group: &GroupName,
    ) -> Result<bool, NodeError> {
        let name = self.hubs[hub].name();
        let user_channel = self.keys.user_channel(name, user.as_str());
        let group_channel = self.keys.group_channel(name, group.as_str());
        if self.local_user_in(&user_channel, &group_channel) {
            return Ok(true);
        }
        let records = self.backplane.user_groups(name, user.as_str()).await?;
        if records.iter().any(|r| r.group == group.as_str()) {
            return Ok(true);
        }
        let nonce = self
            .next_nonce
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let question = Arc::new(Question::default());
        let lock = || self.questions.lock().unwrap_or_else(|p| p.into_inner());
        lock().insert(nonce, question.clone());
        let body = serde_json::to_vec(&UserInGroupQuery {
            hub: name.to_owned(),
            group: group.as_str().to_owned(),
            reply_to: self.id.clone(),
            nonce,
        })
        .unwrap_or_default();
        let payload = Envelope::encode(Kind::UserInGroup, now_micros(), b"", b"", &body);
        let answer = match self.backplane.publish(&user_channel, payload).await {
            Ok(asked) => wait_for(&question, asked).await,
            Err(e) => Err(e.into()),
        };
        lock().remove(&nonce);
        answer
    }

    fn local_user_in(&self, user_channel: &str, group_channel: &str) -> bool {
        let mut ids = Vec::new();
        self.registry
            .for_each_member(user_channel, |m| ids.push(m.id.clone()));
        ids.iter().any(|id| {
            self.registry
                .connection(id)
                .is_some_and(|c| c.channels.iter().any(|ch| &**ch == group_channel))
        })
    }

    /// A [`Kind::UserInGroup`] arrived on a user's channel: answers for this node.
    pub(super) async fn answer_user_in_group(&self, channel: &str, body: &Bytes) {
        let Ok(q) = serde_json::from_slice::<UserInGroupQuery>(body) else {
            bad_envelope(
                crate::keys::hub_label(channel),
                "user-in-group question is not valid",
            );
            return;
        };
        let member = self.local_user_in(channel, &self.keys.group_channel(&q.hub, &q.group));
        let reply = serde_json::to_vec(&UserInGroupReply {
            nonce: q.nonce,
            member,
        })
        .unwrap_or_default();
        let payload = Envelope::encode(Kind::UserInGroupReply, now_micros(), b"", b"", &reply);
        if let Err(e) = self
            .backplane
            .publish(&self.keys.node_channel(&q.reply_to), payload)
            .await
        {
            tracing::warn!(error = %e, "could not answer whether a user is in a group");
        }
    }

    /// A [`Kind::UserInGroupReply`] arrived on this node's channel.
    pub(super) fn user_in_group_answered(&self, body: &Bytes) {
        let Ok(reply) = serde_json::from_slice::<UserInGroupReply>(body) else {
            bad_envelope("node", "user-in-group answer is not valid");
            return;
        };
        let question = self
            .questions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&reply.nonce)
            .cloned();
        if let Some(q) = question {
            let mut answers = q.answers.lock().unwrap_or_else(|p| p.into_inner());
            answers.0 += 1;
            answers.1 |= reply.member;
            drop(answers);
            q.notify.notify_one();
        }
    }
}

/// Waits until one of `asked` nodes said yes, or all of them answered.
async fn wait_for(question: &Question, asked: usize) -> Result<bool, NodeError> {
    let deadline = tokio::time::Instant::now() + ACK_TIMEOUT;
    loop {
        {
            let (answered, member) = *question.answers.lock().unwrap_or_else(|p| p.into_inner());
            if member {
                return Ok(true);
            }
            if answered >= asked {
                return Ok(false);
            }
        }
        // `notify_one` keeps a wake-up that comes before this wait.
        if tokio::time::timeout_at(deadline, question.notify.notified())
            .await
            .is_err()
        {
            return Err(NodeError::OwnerTimeout);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endings_come_due_in_order_and_a_later_end_replaces_an_earlier_one() {
        let mut e = Endings::default();
        let (u, v) = (UserId::parse("u").unwrap(), UserId::parse("v").unwrap());
        let (a, b) = (
            GroupName::parse("a").unwrap(),
            GroupName::parse("b").unwrap(),
        );
        e.insert(0, &u, &a, 10);
        e.insert(0, &v, &b, 5);
        e.insert(0, &u, &a, 20);
        assert_eq!(e.due(9), vec![(0, v.clone(), b.clone())]);
        assert!(e.due(19).is_empty());
        assert_eq!(e.due(20), vec![(0, u.clone(), a.clone())]);
        e.insert(0, &u, &a, 30);
        e.insert(0, &v, &b, 30);
        e.retain_users(|_, user| *user == v);
        assert_eq!(e.due(30), vec![(0, v, b)]);
    }
}
