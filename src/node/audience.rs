//! Operations on an audience as a whole: closing a hub's, group's or user's connections
//! (except some), asking whether a group or user has any connection, and adding or
//! removing a user's current connections to or from groups.

use bytes::Bytes;

use super::dispatch::bad_envelope;
use super::remote::close_reason;
use super::{Audience, Node, NodeError};
use crate::envelope::{now_micros, split_ids, with_ids, Envelope, Kind, UserGroupChange};
use crate::ids::{ConnectionId, GroupName, UserId};

impl Node {
    /// Closes every connection of the audience except the `excluded` ones, wherever they
    /// are: one message on the audience's channel, which reaches exactly the nodes holding
    /// a member, and each closes its own. Returns how many nodes took it.
    ///
    /// # Errors
    /// The backplane; for one connection, as [`Self::close_connection_with`].
    pub async fn close_audience(
        &self,
        hub: usize,
        audience: &Audience,
        excluded: &[ConnectionId],
        reason: Option<&str>,
    ) -> Result<usize, NodeError> {
        let name = self.hubs[hub].name();
        let channel = match audience {
            Audience::Hub => self.keys.hub_channel(name),
            Audience::Group(g) => self.keys.group_channel(name, g.as_str()),
            Audience::User(u) => self.keys.user_channel(name, u.as_str()),
            Audience::Connection(c) if excluded.contains(c) => return Ok(0),
            Audience::Connection(c) => {
                return self.close_connection_with(hub, c, reason).await.map(|()| 1)
            }
        };
        let ids = excluded.iter().map(|c| c.as_str().as_bytes());
        let body = with_ids(ids, reason.unwrap_or("").as_bytes());
        let payload = Envelope::encode(Kind::CloseMembers, now_micros(), b"", b"", &body);
        Ok(self.backplane.publish(&channel, payload).await?)
    }

    /// A [`Kind::CloseMembers`] arrived on `channel`: closes its local members but the
    /// excluded ones.
    pub(super) fn close_members(&self, channel: &str, body: &Bytes) {
        let Some((excluded, reason)) = split_ids(body) else {
            bad_envelope(crate::keys::hub_label(channel), "truncated exclusion list");
            return;
        };
        let reason = String::from_utf8_lossy(&reason);
        let mut closing = Vec::new();
        self.registry.for_each_member(channel, |m| {
            if !excluded.iter().any(|x| x == m.id.as_str().as_bytes()) {
                closing.push(m.handle.clone());
            }
        });
        for handle in closing {
            handle.close(close_reason(&reason));
        }
    }

    /// Whether any connection of the hub is in the group, cluster-wide.
    ///
    /// # Errors
    /// The backplane.
    pub async fn group_exists(&self, hub: usize, group: &GroupName) -> Result<bool, NodeError> {
        Ok(self.group_size(hub, group).await? > 0)
    }

    /// Whether the user has a connection to the hub on any node: a node is subscribed to
    /// the user's channel iff it holds one of them, so an empty probe published there
    /// (which receivers ignore) reports it.
    ///
    /// # Errors
    /// The backplane.
    pub async fn user_connected(&self, hub: usize, user: &UserId) -> Result<bool, NodeError> {
        let channel = self.keys.user_channel(self.hubs[hub].name(), user.as_str());
        if self.registry.has_members(&channel) {
            return Ok(true);
        }
        let probe = Envelope::encode(Kind::Probe, now_micros(), b"", b"", b"");
        Ok(self.backplane.publish(&channel, probe).await? > 0)
    }

    /// Adds (`join`) or removes the user's current connections to or from `group`
    /// (`None`: removes them from every group), on every node: this node's at once, the
    /// others' through one message on the user's channel, which reaches exactly the nodes
    /// holding one. A timed join (`ends_at_ms`) is undone on each node when it ends.
    ///
    /// # Errors
    /// The backplane; too many groups for a connection on this node.
    pub(super) async fn change_user_groups(
        &self,
        hub: usize,
        user: &UserId,
        group: Option<&GroupName>,
        join: bool,
        ends_at_ms: Option<u64>,
    ) -> Result<(), NodeError> {
        let name = self.hubs[hub].name();
        let channel = self.keys.user_channel(name, user.as_str());
        let ending = ends_at_ms.map(|at| (user, at));
        self.apply_user_group_locally(hub, &channel, group, join, ending)
            .await?;
        let body = serde_json::to_vec(&UserGroupChange {
            hub: name.to_owned(),
            group: group.map_or_else(String::new, |g| g.as_str().to_owned()),
            join,
            all: group.is_none(),
            origin: self.id.clone(),
            user: user.as_str().to_owned(),
            ends_at_ms,
        })
        .unwrap_or_default();
        let payload = Envelope::encode(Kind::UserGroup, now_micros(), b"", b"", &body);
        self.backplane.publish(&channel, payload).await?;
        Ok(())
    }

    async fn apply_user_group_locally(
        &self,
        hub: usize,
        user_channel: &str,
        group: Option<&GroupName>,
        join: bool,
        ending: Option<(&UserId, u64)>,
    ) -> Result<(), NodeError> {
        let mut ids: Vec<ConnectionId> = Vec::new();
        self.registry
            .for_each_member(user_channel, |m| ids.push(m.id.clone()));
        if let (true, Some(g), Some((user, at))) = (join && !ids.is_empty(), group, ending) {
            self.schedule_end(hub, user, g, at);
        }
        for id in ids {
            let result = self.change_group(hub, &id, group, join).await;
            match result {
                // It left meanwhile.
                Ok(_) | Err(NodeError::UnknownConnection(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// A [`Kind::UserGroup`] arrived on a user's channel from another node.
    pub(super) async fn apply_user_group(&self, channel: &str, body: &Bytes) {
        let Ok(change) = serde_json::from_slice::<UserGroupChange>(body) else {
            bad_envelope(
                crate::keys::hub_label(channel),
                "user group change is not valid",
            );
            return;
        };
        if change.origin == self.id {
            return;
        }
        let Some(hub) = self.hub_index(&change.hub) else {
            return;
        };
        let group = if change.all {
            None
        } else {
            match GroupName::parse(&change.group) {
                Ok(g) => Some(g),
                Err(_) => {
                    bad_envelope(
                        crate::keys::hub_label(channel),
                        "user group change names no group",
                    );
                    return;
                }
            }
        };
        let user = UserId::parse(&change.user).ok();
        let ending = user.as_ref().zip(change.ends_at_ms);
        if let Err(e) = self
            .apply_user_group_locally(hub, channel, group.as_ref(), change.join, ending)
            .await
        {
            tracing::warn!(channel, error = %e, "could not apply a user's group change to its connections here");
        }
    }
}
