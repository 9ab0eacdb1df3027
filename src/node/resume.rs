//! Stateful reconnect across nodes: a client whose transport dropped comes back, through
//! a balancer, to any node; that node takes the connection over from the one that held
//! it, and the connection goes on with the same id, groups and user.
//!
//! 1. **Take over.** The new node asks the owner (itself, or another over the owner's
//!    control channel) to hand the connection off. The owner ends its transport's hold
//!    on it (without leaving its groups), and answers with what the client has not
//!    acknowledged (frames, their numbering), what it received, and the last position it
//!    delivered on each channel.
//! 2. **Adopt.** The new node registers the connection with a new handle, moves its
//!    cluster-wide record here, joins its channels locally and subscribes them.
//! 3. **Catch up, per channel.** Each channel's dispatch worker, which delivers that
//!    channel in order, gives the connection what the channel's history holds after the
//!    old node's last position and up to the worker's own, then lets live messages
//!    through; until then they are held back for it ([`crate::connection::replay`]).
//!
//! No message is written to Redis per connection: the channels' delivery positions and
//! history are what make the catch-up exact. The session resends the unacknowledged
//! frames first, so the client receives every message once, in order per channel.
//!
//! A node that died takes its connections' unacknowledged frames with it: such a resume
//! is refused, and the client starts a new connection (its normal reconnect).

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::oneshot;

use super::dispatch::bad_envelope;
use super::frames::Frames;
use super::remote::ACK_TIMEOUT;
use super::subscriptions::CLOCK_SKEW_MICROS;
use super::{Node, NodeError};
use crate::backplane::InboundItem;
use crate::connection::handle::{Outbound, SessionHandle};
use crate::connection::replay::{ReplayState, Unacked};
use crate::envelope::{now_micros, Envelope, HandOffReply, HandOffRequest, Kind, Moved, Position};
use crate::hub::Caller;
use crate::ids::ConnectionId;
use crate::protocol::HubProtocol;
use crate::ws::Frame;

/// A stateful connection taken over for a new transport on this node.
#[derive(Debug)]
pub struct Resumed {
    /// Its numbering and what is sent again.
    pub replay: ReplayState,
    /// Where it comes from.
    pub adopted: Adopted,
}

/// Where a taken-over connection comes from, for [`Node::adopt`].
#[derive(Debug, Clone)]
pub struct Adopted {
    /// Its channels.
    pub channels: Vec<Arc<str>>,
    /// Its hub protocol.
    pub protocol: HubProtocol,
    /// The node that held it, when another.
    pub from: Option<String>,
    /// When it was handed off (µs since the epoch).
    pub at_micros: u64,
}

impl Node {
    /// Takes a stateful connection of `hub` over from whichever node holds it.
    ///
    /// # Errors
    /// [`NodeError::UnknownConnection`] when no live node holds it as a stateful
    /// connection (its window passed, it was never stateful, its node died), or the
    /// backplane.
    pub async fn take_over(&self, hub: usize, id: &ConnectionId) -> Result<Resumed, NodeError> {
        if let Some(conn) = self.registry.connection(id) {
            if conn.hub != hub {
                return Err(NodeError::UnknownConnection(id.to_string()));
            }
            let replay = conn
                .handle
                .hand_off()
                .ok_or_else(|| NodeError::UnknownConnection(id.to_string()))?;
            return Ok(Resumed {
                replay,
                adopted: Adopted {
                    channels: conn.channels,
                    protocol: conn.handle.protocol(),
                    from: None,
                    at_micros: now_micros(),
                },
            });
        }
        let owner = self.remote_owner(hub, id).await?;
        let body = |nonce| {
            serde_json::to_vec(&HandOffRequest {
                hub: self.hubs[hub].name().to_owned(),
                reply_to: self.id.clone(),
                nonce,
            })
            .unwrap_or_default()
        };
        let moved = self
            .ask_owner(&self.handoffs, &owner, Kind::HandOff, id, body, ACK_TIMEOUT)
            .await?
            .ok_or_else(|| NodeError::UnknownConnection(id.to_string()))?;
        Ok(Resumed {
            replay: ReplayState {
                next: moved.next,
                received: moved.received,
                unacked: moved
                    .unacked
                    .into_iter()
                    .filter_map(|(first, count, frame)| {
                        let frame = Frame::from_wire(Bytes::from(frame));
                        if frame.is_none() {
                            bad_envelope("node", "a handed-off frame is not a whole frame");
                        }
                        Some(Unacked {
                            first,
                            count,
                            frame: frame?,
                        })
                    })
                    .collect(),
                positions: moved
                    .positions
                    .into_iter()
                    .map(|(c, epoch, seq)| {
                        (
                            Arc::from(c.as_str()),
                            Position {
                                epoch: Bytes::from(epoch),
                                seq,
                            },
                        )
                    })
                    .collect(),
            },
            adopted: Adopted {
                channels: moved
                    .channels
                    .iter()
                    .map(|c| Arc::from(c.as_str()))
                    .collect(),
                protocol: if moved.protocol == HubProtocol::MessagePack.name() {
                    HubProtocol::MessagePack
                } else {
                    HubProtocol::Json
                },
                from: Some(owner),
                at_micros: moved.at_micros,
            },
        })
    }

    /// Installs a connection taken over by [`Self::take_over`] with its new handle, and
    /// queues each channel's catch-up.
    ///
    /// # Errors
    /// [`NodeError::DuplicateConnection`] when a third node holds it meanwhile, or a
    /// channel that cannot be subscribed.
    pub async fn adopt(
        &self,
        hub: usize,
        caller: Caller,
        handle: SessionHandle,
        resumed: &Adopted,
    ) -> Result<(), NodeError> {
        let id = caller.connection_id.clone();
        metrics::counter!(crate::metrics::CONNECTIONS_RESUMED, "hub" => self.hubs[hub].name().to_owned(), "from" => if resumed.from.is_some() { "other_node" } else { "same_node" })
            .increment(1);
        match &resumed.from {
            None => {
                if !self.registry.replace_handle(&id, handle) {
                    return Err(NodeError::UnknownConnection(id.to_string()));
                }
            }
            Some(from) => {
                let user = caller.user.as_ref().map(|u| u.as_str().to_owned());
                let user_id = caller.user.clone();
                if !self.registry.insert(id.clone(), hub, handle, caller) {
                    return Err(NodeError::DuplicateConnection(id.to_string()));
                }
                metrics::gauge!(crate::metrics::CONNECTIONS, "hub" => self.hubs[hub].name().to_owned())
                    .increment(1.0);
                match self
                    .backplane
                    .take_over_connection(&id, self.hubs[hub].name(), user.as_deref(), from)
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => {
                        self.disconnect(&id).await;
                        return Err(NodeError::DuplicateConnection(id.to_string()));
                    }
                    Err(e) => self.store_failed("take over connection", &e),
                }
                let hub_name = self.hubs[hub].name();
                for channel in &resumed.channels {
                    let group = self
                        .keys
                        .group_of_channel(hub_name, channel)
                        .and_then(|g| crate::ids::GroupName::parse(g).ok());
                    // The memberships are cluster-wide already: only this node's registry
                    // and subscriptions change.
                    if let Err(e) = self.join_locally(&id, channel, group.is_some()).await {
                        self.disconnect(&id).await;
                        return Err(e);
                    }
                }
                if let Some(user) = user_id {
                    self.adopt_endings(hub, &user, &resumed.channels).await;
                }
            }
        }
        let since = resumed.at_micros.saturating_sub(CLOCK_SKEW_MICROS);
        for channel in &resumed.channels {
            self.inbound_tx
                .control(InboundItem::Resume(channel.clone(), id.clone(), since));
        }
        Ok(())
    }

    /// The dispatch worker of `channel` gives a resumed connection what the channel's
    /// history holds after the position its old node delivered, up to `upto` (the
    /// worker's own last position), then lets live messages through.
    pub(super) async fn resume_catch_up(
        &self,
        channel: &Arc<str>,
        id: &ConnectionId,
        upto: Option<Position>,
        since_micros: u64,
    ) {
        let Some(conn) = self.registry.connection(id) else {
            return;
        };
        let Some(cut) = conn.handle.pending_floor(channel) else {
            return;
        };
        let upto = match upto {
            Some(p) => Some(p),
            None => self.backplane.head(channel).await.ok().flatten(),
        };
        let Some(upto) = upto else {
            conn.handle.caught_up(channel, None);
            return;
        };
        let from = match &cut {
            Some(cut) if cut.epoch == upto.epoch => cut.seq + 1,
            _ => 1,
        };
        if from <= upto.seq {
            let fetched = self
                .backplane
                .history(channel, &upto.epoch, from, upto.seq)
                .await
                .unwrap_or_else(|e| {
                    tracing::warn!(channel = %channel, error = %e, "could not read history for a resumed connection");
                    Vec::new()
                });
            for payload in fetched {
                let Ok(env) = Envelope::decode(&payload) else {
                    continue;
                };
                let Some(position) = env.position.clone() else {
                    continue;
                };
                // On a channel it had nothing from, only what followed the hand-off.
                if cut.is_none() && env.published_at_micros < since_micros {
                    continue;
                }
                let Some((excluded, record)) = env.excluded_and_record() else {
                    continue;
                };
                if excluded.iter().any(|x| x == id.as_str().as_bytes()) {
                    continue;
                }
                let Some(frame) = Frames::new(&record).get(conn.handle.protocol()) else {
                    bad_envelope(
                        crate::keys::hub_label(channel),
                        "record cannot be written in the connection's protocol",
                    );
                    continue;
                };
                let item = Outbound::delivery(frame, env.published_at_micros);
                if conn
                    .handle
                    .send_caught_up(item, channel, &position)
                    .is_err()
                {
                    return;
                }
            }
        }
        conn.handle.caught_up(channel, Some(upto));
    }

    /// Hands a stateful connection this node holds over to the node asking, and
    /// forgets it here without touching its memberships.
    pub(super) async fn hand_off_to(&self, id: &ConnectionId, request: HandOffRequest) {
        let moved = self
            .registry
            .connection(id)
            .filter(|c| self.hubs[c.hub].name() == request.hub)
            .and_then(|conn| {
                let replay = conn.handle.hand_off()?;
                Some(Moved {
                    protocol: conn.handle.protocol().name().to_owned(),
                    channels: conn.channels.iter().map(|c| c.to_string()).collect(),
                    next: replay.next,
                    received: replay.received,
                    unacked: replay
                        .unacked
                        .into_iter()
                        .map(|u| (u.first, u.count, u.frame.as_bytes().to_vec()))
                        .collect(),
                    positions: replay
                        .positions
                        .into_iter()
                        .map(|(c, p)| (c.to_string(), p.epoch.to_vec(), p.seq))
                        .collect(),
                    at_micros: now_micros(),
                })
            });
        if moved.is_some() {
            self.release_moved(id);
            tracing::info!(connection = %id, to = %request.reply_to, "stateful connection handed over to the node its client resumed on");
        }
        let body = serde_json::to_vec(&HandOffReply {
            nonce: request.nonce,
            moved,
        })
        .unwrap_or_default();
        let payload = Envelope::encode(Kind::HandedOff, now_micros(), b"", b"", &body);
        if let Err(e) = self
            .backplane
            .publish(&self.keys.node_channel(&request.reply_to), payload)
            .await
        {
            tracing::warn!(error = %e, "could not answer a hand-off");
        }
    }

    /// The answer to a hand-off this node asked for.
    pub(super) fn handed_off(&self, reply: HandOffReply) {
        if let Some(tx) = self.handoffs().remove(&reply.nonce) {
            let _ = tx.send(reply.moved);
        }
    }

    fn handoffs(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, oneshot::Sender<Option<Moved>>>>
    {
        self.handoffs.lock().unwrap_or_else(|p| p.into_inner())
    }
}
