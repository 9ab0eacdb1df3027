//! Connections and their groups on this node: registering a connection, a client's hub
//! method calls, and joining or leaving a channel (local registry first, then the
//! cluster store and the subscription).

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::oneshot;

use super::registry::NotHere;
use super::{Node, NodeError};
use crate::backplane::BackplaneError;
use crate::connection::handle::SessionHandle;
use crate::hub::{Action, CallError, Caller};
use crate::ids::{ConnectionId, GroupName};
use crate::metrics as m;

/// How long a join waits for the backplane subscription before failing.
pub(super) const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);

impl Node {
    // ---- connections -----------------------------------------------------------------

    /// Registers a connection after its handshake and joins its automatic channels.
    ///
    /// # Errors
    /// The backplane could not take the registration; the connection should be closed.
    pub async fn connect(
        &self,
        hub: usize,
        caller: Caller,
        handle: SessionHandle,
    ) -> Result<(), NodeError> {
        let id = caller.connection_id.clone();
        let hub_def = &self.hubs[hub];
        let mut channels: Vec<(String, Option<GroupName>)> = Vec::new();
        for t in &hub_def.auto_join {
            // A template whose claim is missing is skipped: the connection simply does not
            // get that group.
            if let Ok(g) = t.render(&[], &caller) {
                if let Ok(g) = GroupName::parse(&g) {
                    channels.push((self.keys.group_channel(hub_def.name(), g.as_str()), Some(g)));
                }
            }
        }
        if let Some(user) = &caller.user {
            channels.push((self.keys.user_channel(hub_def.name(), user.as_str()), None));
        }
        if hub_def.spec.allow_broadcast {
            channels.push((self.keys.hub_channel(hub_def.name()), None));
        }
        let user = caller.user.as_ref().map(|u| u.as_str().to_owned());
        let caller_user = caller.user.clone();
        if !self.registry.insert(id.clone(), hub, handle, caller) {
            return Err(NodeError::DuplicateConnection(id.to_string()));
        }
        metrics::gauge!(m::CONNECTIONS, "hub" => hub_def.name().to_owned()).increment(1.0);
        match self
            .backplane
            .register_connection(&id, hub_def.name(), user.as_deref())
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                // Held by another node: take back the local entry without touching the
                // other node's cluster-wide record.
                if self.registry.remove(&id).is_some() {
                    metrics::gauge!(m::CONNECTIONS, "hub" => hub_def.name().to_owned())
                        .decrement(1.0);
                }
                return Err(NodeError::DuplicateConnection(id.to_string()));
            }
            Err(e) => self.store_failed("register connection", &e),
        }
        for (channel, group) in channels {
            if let Err(e) = self
                .join_channel(&id, hub, &channel, group.as_ref())
                .await
                .map(drop)
            {
                self.disconnect(&id).await;
                return Err(e);
            }
        }
        // After the user's channel is joined: see `user_groups` for why.
        if let Some(user) = caller_user {
            self.restore_user_groups(hub, &id, &user).await;
        }
        Ok(())
    }

    /// Removes a connection and all its memberships.
    pub async fn disconnect(&self, id: &ConnectionId) {
        let Some((conn, emptied)) = self.registry.remove(id) else {
            return;
        };
        let hub = self.hubs[conn.hub].name().to_owned();
        metrics::gauge!(m::CONNECTIONS, "hub" => hub).decrement(1.0);
        for channel in &emptied {
            self.channel_emptied(channel.clone());
        }
        // One call removes the connection and every membership it had.
        if let Err(e) = self.backplane.unregister_connection(id).await {
            self.store_failed("unregister connection", &e);
        }
    }

    /// Runs a client's hub method call; returns the events to send back to the caller.
    ///
    /// # Errors
    /// See [`CallError`].
    pub async fn invoke(
        &self,
        hub: usize,
        caller: &Caller,
        target: &str,
        args: &[Value],
    ) -> Result<Vec<(String, Vec<Value>)>, CallError> {
        let hub_def = &self.hubs[hub];
        let method = hub_def.method(target).ok_or(CallError::UnknownMethod)?;
        let actions = method.resolve(args, caller)?;
        // Every join is checked before any is applied, so a refused call changes nothing.
        for action in &actions {
            if let Action::Join(g) = action {
                if !hub_def.may_join(g.as_str(), caller) {
                    return Err(CallError::Unauthorized);
                }
            }
        }
        self.check_group_limit(hub, caller, &actions)?;
        let mut replies = Vec::new();
        // Groups this call added, taken back if a later join fails, so a refused call
        // changes nothing.
        let mut added: Vec<(String, GroupName)> = Vec::new();
        for action in actions {
            match action {
                Action::Join(g) => {
                    let channel = self.keys.group_channel(hub_def.name(), g.as_str());
                    match self
                        .join_channel(&caller.connection_id, hub, &channel, Some(&g))
                        .await
                    {
                        Ok(true) => added.push((channel, g)),
                        Ok(false) => {}
                        Err(e) => {
                            for (channel, g) in &added {
                                let _ = self
                                    .leave_channel(&caller.connection_id, hub, channel, Some(g))
                                    .await;
                            }
                            return Err(match e {
                                NodeError::TooManyGroups(n) => CallError::TooManyGroups(n),
                                _ => CallError::Unavailable,
                            });
                        }
                    }
                }
                Action::Leave(g) => {
                    let channel = self.keys.group_channel(hub_def.name(), g.as_str());
                    self.leave_channel(&caller.connection_id, hub, &channel, Some(&g))
                        .await
                        .map_err(|_| CallError::Unavailable)?;
                }
                Action::Reply { target, arguments } => replies.push((target, arguments)),
            }
        }
        Ok(replies)
    }

    /// Refuses, before anything is applied, a call whose joins would take the connection
    /// past its group limit. Applying them one by one and rolling back on the first
    /// refusal gives the same answer, but one call with 101 URLs cost about 1 400 Redis
    /// commands (100 joins, then 100 leaves). The call's actions are replayed, in order,
    /// over the groups the connection is in now, so a join of a group it is in already,
    /// or after a leave in the same call, is counted as applying it would.
    fn check_group_limit(
        &self,
        hub: usize,
        caller: &Caller,
        actions: &[Action],
    ) -> Result<(), CallError> {
        let max = self.limits.max_groups_per_connection;
        if !actions.iter().any(|a| matches!(a, Action::Join(_))) {
            return Ok(());
        }
        // Not held here: the first join reports it, as before.
        let Some(conn) = self.registry.connection(&caller.connection_id) else {
            return Ok(());
        };
        let name = self.hubs[hub].name();
        let names: Vec<(bool, String)> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Join(g) => Some((true, self.keys.group_channel(name, g.as_str()))),
                Action::Leave(g) => Some((false, self.keys.group_channel(name, g.as_str()))),
                Action::Reply { .. } => None,
            })
            .collect();
        let mut channels: std::collections::HashSet<&str> =
            conn.channels.iter().map(|c| &**c).collect();
        let mut groups = conn.groups;
        for (join, channel) in &names {
            if !*join {
                if channels.remove(channel.as_str()) {
                    groups -= 1;
                }
            } else if channels.insert(channel.as_str()) {
                // The same test, and the same answer, as the registry's join.
                if groups >= max {
                    return Err(CallError::TooManyGroups(groups));
                }
                groups += 1;
            }
        }
        // The joins still check the limit one by one: another call may join meanwhile.
        Ok(())
    }

    /// Adds a connection held by this node to a channel, and returns once the node is
    /// subscribed to it, so that a publish right after the join reaches the connection.
    ///
    /// While the backplane is unreachable the join still succeeds locally: the
    /// subscription and the cluster-wide membership are written when it comes back.
    pub(super) async fn join_channel(
        &self,
        id: &ConnectionId,
        hub: usize,
        channel: &str,
        group: Option<&GroupName>,
    ) -> Result<bool, NodeError> {
        let joined = self
            .registry
            .join(
                id,
                channel,
                group.is_some(),
                self.limits.max_groups_per_connection,
            )
            .map_err(|e| match e {
                Ok(NotHere) => NodeError::UnknownConnection(id.to_string()),
                Err(n) => NodeError::TooManyGroups(n),
            })?;
        if !joined.added {
            return Ok(false);
        }
        if let Some(g) = group {
            if let Err(e) = self
                .backplane
                .add_member(self.hubs[hub].name(), g.as_str(), id)
                .await
            {
                self.store_failed("add membership", &e);
            }
        }
        // Always wait, even when another member came first: its subscription may still be
        // in flight.
        let (tx, rx) = oneshot::channel();
        self.request_reconcile(channel.into(), Some(tx));
        let outcome = match tokio::time::timeout(SUBSCRIBE_TIMEOUT, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(BackplaneError::Unavailable("the node is stopping".into())),
            Err(_) => Err(BackplaneError::Unavailable("subscribe timed out".into())),
        };
        if let Err(e) = outcome {
            if let Ok(left) = self.registry.leave(id, channel, group.is_some()) {
                if left.last {
                    self.channel_emptied(channel.into());
                }
            }
            if let Some(g) = group {
                let _ = self
                    .backplane
                    .remove_member(self.hubs[hub].name(), g.as_str(), id)
                    .await;
            }
            return Err(e.into());
        }
        Ok(true)
    }

    /// Joins a connection this node holds to `channel` here only (its cluster-wide
    /// membership exists already: it resumed from another node), and waits until the
    /// channel is subscribed.
    pub(super) async fn join_locally(
        &self,
        id: &ConnectionId,
        channel: &str,
        group: bool,
    ) -> Result<(), NodeError> {
        self.registry
            .join(id, channel, group, usize::MAX)
            .map_err(|_| NodeError::UnknownConnection(id.to_string()))?;
        let (tx, rx) = oneshot::channel();
        self.request_reconcile(channel.into(), Some(tx));
        match tokio::time::timeout(SUBSCRIBE_TIMEOUT, rx).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(e.into()),
            Ok(Err(_)) => Err(BackplaneError::Unavailable("the node is stopping".into()).into()),
            Err(_) => Err(BackplaneError::Unavailable("subscribe timed out".into()).into()),
        }
    }

    /// Forgets a connection that moved to another node (stateful reconnect), leaving
    /// its cluster-wide record and memberships to the node that took it.
    pub(super) fn release_moved(&self, id: &ConnectionId) {
        let Some((conn, emptied)) = self.registry.remove(id) else {
            return;
        };
        metrics::gauge!(m::CONNECTIONS, "hub" => self.hubs[conn.hub].name().to_owned())
            .decrement(1.0);
        for channel in &emptied {
            self.channel_emptied(channel.clone());
        }
    }

    pub(super) async fn leave_channel(
        &self,
        id: &ConnectionId,
        hub: usize,
        channel: &str,
        group: Option<&GroupName>,
    ) -> Result<bool, NodeError> {
        let left = self
            .registry
            .leave(id, channel, group.is_some())
            .map_err(|NotHere| NodeError::UnknownConnection(id.to_string()))?;
        if left.last {
            self.channel_emptied(channel.into());
        }
        if let (true, Some(g)) = (left.removed, group) {
            if let Err(e) = self
                .backplane
                .remove_member(self.hubs[hub].name(), g.as_str(), id)
                .await
            {
                self.store_failed("remove membership", &e);
            }
        }
        Ok(left.removed)
    }

    pub(super) fn store_failed(&self, what: &str, e: &BackplaneError) {
        self.needs_resync.store(true, Ordering::Release);
        tracing::warn!(error = %e, "{what}: cluster store unavailable; repaired when it is back");
    }
}
