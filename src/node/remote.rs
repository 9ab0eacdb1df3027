//! Operations on a connection held by another node: group changes, closes and sends go
//! to the owner over its control channel and wait for its acknowledgement; and the
//! control messages this node applies for others.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use super::dispatch::{bad_envelope, deliver_to};
use super::frames::Frames;
use super::{Node, NodeError};
use crate::connection::close::CloseReason;
use crate::envelope::{
    now_micros, Ack, AckOutcome, Envelope, GroupChange, HandOffReply, HandOffRequest, Kind,
    TransportRequest,
};
use crate::ids::{ConnectionId, GroupName};
use crate::metrics as m;

/// How long a remote group change waits for the owning node's ack.
pub(super) const ACK_TIMEOUT: Duration = Duration::from_secs(3);

impl Node {
    /// Adds a connection to a group from the API, on whichever node holds it.
    ///
    /// # Errors
    /// Unknown connection, too many groups, the backplane, or an owner that does not
    /// answer.
    pub async fn add_to_group(
        &self,
        hub: usize,
        id: &ConnectionId,
        group: &GroupName,
    ) -> Result<(), NodeError> {
        self.change_group(hub, id, Some(group), true)
            .await
            .map(drop)
    }

    /// Removes a connection from a group from the API, on whichever node holds it.
    /// Returns whether it was a member (always true for a remote connection).
    ///
    /// # Errors
    /// As [`Self::add_to_group`].
    pub async fn remove_from_group(
        &self,
        hub: usize,
        id: &ConnectionId,
        group: &GroupName,
    ) -> Result<bool, NodeError> {
        self.change_group(hub, id, Some(group), false).await
    }

    /// Removes a connection from every group it is in, on whichever node holds it.
    ///
    /// # Errors
    /// As [`Self::add_to_group`].
    pub async fn remove_from_all_groups(
        &self,
        hub: usize,
        id: &ConnectionId,
    ) -> Result<(), NodeError> {
        self.change_group(hub, id, None, false).await.map(drop)
    }

    /// Leaves every group of a connection this node holds.
    pub(super) async fn leave_all_local(
        &self,
        id: &ConnectionId,
        hub: usize,
    ) -> Result<bool, NodeError> {
        let conn = self
            .registry
            .connection(id)
            .filter(|c| c.hub == hub)
            .ok_or_else(|| NodeError::UnknownConnection(id.to_string()))?;
        let name = self.hubs[hub].name();
        let mut any = false;
        for channel in &conn.channels {
            let Some(group) = self
                .keys
                .group_of_channel(name, channel)
                .and_then(|g| GroupName::parse(g).ok())
            else {
                continue;
            };
            any |= self.leave_channel(id, hub, channel, Some(&group)).await?;
        }
        Ok(any)
    }

    /// Joins or leaves `group` (`None`: leaves every group) for a connection, here or on
    /// its owner.
    pub(super) async fn change_group(
        &self,
        hub: usize,
        id: &ConnectionId,
        group: Option<&GroupName>,
        join: bool,
    ) -> Result<bool, NodeError> {
        if self.registry.connection(id).is_some_and(|c| c.hub == hub) {
            let Some(group) = group else {
                return self.leave_all_local(id, hub).await;
            };
            let channel = self
                .keys
                .group_channel(self.hubs[hub].name(), group.as_str());
            return if join {
                self.join_channel(id, hub, &channel, Some(group))
                    .await
                    .map(|_| true)
            } else {
                self.leave_channel(id, hub, &channel, Some(group)).await
            };
        }
        let owner = self.remote_owner(hub, id).await?;
        let kind = if join { Kind::Join } else { Kind::Leave };
        let body = |nonce| {
            serde_json::to_vec(&GroupChange {
                hub: self.hubs[hub].name().to_owned(),
                group: group.map_or_else(String::new, |g| g.as_str().to_owned()),
                all: group.is_none(),
                reply_to: self.id.clone(),
                nonce,
            })
            .unwrap_or_default()
        };
        match self
            .ask_owner(&self.acks, &owner, kind, id, body, ACK_TIMEOUT)
            .await?
        {
            AckOutcome::Done => Ok(true),
            AckOutcome::UnknownConnection => Err(NodeError::UnknownConnection(id.to_string())),
            AckOutcome::TooManyGroups(n) => Err(NodeError::TooManyGroups(n)),
        }
    }

    /// Sends `kind` about connection `id` to its owner's control channel and waits up
    /// to `wait` for the answer `replies` receives under the request's nonce.
    pub(super) async fn ask_owner<T>(
        &self,
        replies: &Mutex<HashMap<u64, oneshot::Sender<T>>>,
        owner: &str,
        kind: Kind,
        id: &ConnectionId,
        body: impl FnOnce(u64) -> Vec<u8>,
        wait: Duration,
    ) -> Result<T, NodeError> {
        let lock = || replies.lock().unwrap_or_else(|p| p.into_inner());
        let nonce = self.next_nonce.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock().insert(nonce, tx);
        let payload = Envelope::encode(
            kind,
            now_micros(),
            b"",
            id.as_str().as_bytes(),
            &body(nonce),
        );
        let sent = self
            .backplane
            .publish(&self.keys.node_channel(owner), payload)
            .await;
        let reply = match sent {
            Ok(0) => Err(NodeError::UnknownConnection(id.to_string())),
            Ok(_) => match tokio::time::timeout(wait, rx).await {
                Ok(Ok(reply)) => Ok(reply),
                Ok(Err(_)) | Err(_) => Err(NodeError::OwnerTimeout),
            },
            Err(e) => Err(e.into()),
        };
        lock().remove(&nonce);
        reply
    }

    /// The node holding a connection of this hub elsewhere in the cluster.
    pub(super) async fn remote_owner(
        &self,
        hub: usize,
        id: &ConnectionId,
    ) -> Result<String, NodeError> {
        match self.backplane.connection(id).await? {
            Some(rec) if rec.hub == self.hubs[hub].name() && rec.node != self.id => Ok(rec.node),
            _ => Err(NodeError::UnknownConnection(id.to_string())),
        }
    }

    /// Closes a connection from the API (the client may reconnect), wherever it is.
    ///
    /// # Errors
    /// Unknown connection, or the backplane.
    pub async fn close_connection(&self, hub: usize, id: &ConnectionId) -> Result<(), NodeError> {
        self.close_connection_with(hub, id, None).await
    }

    /// [`Self::close_connection`], with a reason the Close message carries.
    ///
    /// # Errors
    /// As [`Self::close_connection`].
    pub async fn close_connection_with(
        &self,
        hub: usize,
        id: &ConnectionId,
        reason: Option<&str>,
    ) -> Result<(), NodeError> {
        if let Some(conn) = self.registry.connection(id).filter(|c| c.hub == hub) {
            conn.handle.close(close_reason(reason.unwrap_or("")));
            return Ok(());
        }
        let owner = self.remote_owner(hub, id).await?;
        let payload = Envelope::encode(
            Kind::Close,
            now_micros(),
            b"",
            id.as_str().as_bytes(),
            reason.unwrap_or("").as_bytes(),
        );
        match self
            .backplane
            .publish(&self.keys.node_channel(&owner), payload)
            .await?
        {
            0 => Err(NodeError::UnknownConnection(id.to_string())),
            _ => Ok(()),
        }
    }

    /// Whether a connection of this hub is connected to any node.
    ///
    /// # Errors
    /// The backplane.
    pub async fn has_connection(&self, hub: usize, id: &ConnectionId) -> Result<bool, NodeError> {
        if self.registry.connection(id).is_some_and(|c| c.hub == hub) {
            return Ok(true);
        }
        Ok(self
            .backplane
            .connection(id)
            .await?
            .is_some_and(|r| r.hub == self.hubs[hub].name()))
    }

    /// Cluster-wide member count of a group.
    ///
    /// # Errors
    /// The backplane.
    pub async fn group_size(&self, hub: usize, group: &GroupName) -> Result<usize, NodeError> {
        Ok(self
            .backplane
            .member_count(self.hubs[hub].name(), group.as_str())
            .await?)
    }

    pub(super) async fn apply_control(self: &Arc<Self>, env: Envelope) {
        match env.kind {
            Kind::Probe => {
                let nonce = std::str::from_utf8(&env.body)
                    .ok()
                    .and_then(|b| b.parse::<u64>().ok());
                if let Some(tx) = nonce.and_then(|n| {
                    self.probes
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&n)
                }) {
                    let _ = tx.send(());
                }
                return;
            }
            Kind::TransportReply => {
                self.transport_reply(&env.body);
                return;
            }
            Kind::UserInGroupReply => {
                self.user_in_group_answered(&env.body);
                return;
            }
            Kind::HandedOff => {
                match serde_json::from_slice::<HandOffReply>(&env.body) {
                    Ok(reply) => self.handed_off(reply),
                    Err(_) => bad_envelope("node", "hand-off reply is not valid"),
                }
                return;
            }
            Kind::Ack => {
                match serde_json::from_slice::<Ack>(&env.body) {
                    Ok(ack) => {
                        if let Some(tx) = self
                            .acks
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&ack.nonce)
                        {
                            let _ = tx.send(ack.outcome);
                        }
                    }
                    Err(_) => bad_envelope("node", "ack body is not valid"),
                }
                return;
            }
            _ => {}
        }
        let Some(id) = std::str::from_utf8(&env.connection)
            .ok()
            .and_then(ConnectionId::parse)
        else {
            bad_envelope("node", "control message without a valid connection id");
            return;
        };
        match env.kind {
            Kind::Send => {
                if std::str::from_utf8(&env.body).is_err() {
                    bad_envelope("node", "record is not UTF-8");
                    return;
                }
                let Some(conn) = self.registry.connection(&id) else {
                    // Published with a 202 while the connection was leaving this node.
                    metrics::counter!(m::DELIVERY_FAILURES, "hub" => "node", "reason" => m::REASON_CONNECTION_CLOSED).increment(1);
                    tracing::info!(connection = %id, "message for a connection that has left this node dropped");
                    return;
                };
                let Some(frame) = Frames::new(&env.body).get(conn.handle.protocol()) else {
                    bad_envelope(
                        "node",
                        "record cannot be written in the connection's protocol",
                    );
                    return;
                };
                deliver_to(
                    &self.meters[conn.hub],
                    &conn.handle,
                    &id,
                    self.hubs[conn.hub].name(),
                    frame,
                    env.published_at_micros,
                );
            }
            Kind::Close => {
                if let Some(conn) = self.registry.connection(&id) {
                    conn.handle
                        .close(close_reason(&String::from_utf8_lossy(&env.body)));
                }
            }
            Kind::Join | Kind::Leave => {
                let Ok(change) = serde_json::from_slice::<GroupChange>(&env.body) else {
                    bad_envelope("node", "group change body is not valid");
                    return;
                };
                let outcome = self
                    .apply_group_change(&id, &change, env.kind == Kind::Join)
                    .await;
                let ack = serde_json::to_vec(&Ack {
                    nonce: change.nonce,
                    outcome,
                })
                .unwrap_or_default();
                let payload = Envelope::encode(Kind::Ack, now_micros(), b"", b"", &ack);
                if let Err(e) = self
                    .backplane
                    .publish(&self.keys.node_channel(&change.reply_to), payload)
                    .await
                {
                    tracing::warn!(error = %e, "could not acknowledge a remote group change");
                }
            }
            Kind::HandOff => match serde_json::from_slice::<HandOffRequest>(&env.body) {
                Ok(request) => self.hand_off_to(&id, request).await,
                Err(_) => bad_envelope("node", "hand-off body is not valid"),
            },
            Kind::Transport => match serde_json::from_slice::<TransportRequest>(&env.body) {
                Ok(request) => self.transport_request(&id, request).await,
                Err(_) => bad_envelope("node", "transport request is not valid"),
            },
            Kind::Deliver
            | Kind::Probe
            | Kind::Ack
            | Kind::EpochEnd
            | Kind::HandedOff
            | Kind::TransportReply
            | Kind::DeliverExcept
            | Kind::CloseMembers
            | Kind::UserGroup
            | Kind::UserInGroup
            | Kind::UserInGroupReply => {}
        }
    }

    pub(super) async fn apply_group_change(
        &self,
        id: &ConnectionId,
        change: &GroupChange,
        join: bool,
    ) -> AckOutcome {
        let Some(hub) = self.hub_index(&change.hub) else {
            return AckOutcome::UnknownConnection;
        };
        if self.registry.connection(id).is_none_or(|c| c.hub != hub) {
            return AckOutcome::UnknownConnection;
        }
        let result = if change.all && !join {
            self.leave_all_local(id, hub).await.map(drop)
        } else {
            let Ok(group) = GroupName::parse(&change.group) else {
                return AckOutcome::UnknownConnection;
            };
            let channel = self.keys.group_channel(&change.hub, group.as_str());
            if join {
                self.join_channel(id, hub, &channel, Some(&group))
                    .await
                    .map(drop)
            } else {
                self.leave_channel(id, hub, &channel, Some(&group))
                    .await
                    .map(drop)
            }
        };
        match result {
            Ok(()) => AckOutcome::Done,
            Err(NodeError::TooManyGroups(n)) => AckOutcome::TooManyGroups(n),
            Err(NodeError::UnknownConnection(_)) => AckOutcome::UnknownConnection,
            Err(e) => {
                tracing::warn!(connection = %id, error = %e, "remote group change failed");
                AckOutcome::UnknownConnection
            }
        }
    }
}

/// How the API closes a connection: with the caller's reason as the Close message's
/// error, if it gave one.
pub(super) fn close_reason(reason: &str) -> CloseReason {
    if reason.is_empty() {
        CloseReason::ClosedByServer
    } else {
        CloseReason::ClosedWithReason(reason.chars().take(512).collect())
    }
}
