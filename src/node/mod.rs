//! The node: one process's coordinator. It owns the local [`Registry`], the
//! [`Backplane`], the dispatch workers that fan received messages out to local
//! connections, and the subscription task that keeps backplane subscriptions equal to
//! local interest.

pub mod registry;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backplane::{Backplane, BackplaneError, InboundItem};
use crate::config::{Limits, Timeouts};
use crate::envelope::{now_micros, Envelope, Kind};
use crate::hub::{Action, CallError, Caller, Hub};
use crate::ids::{ConnectionId, CorrelationId, GroupName, UserId};
use crate::keys::Keys;
use crate::metrics as m;
use crate::protocol::message;
use crate::session::close::CloseReason;
use crate::session::handle::{Outbound, QueueError, SessionHandle};
use registry::{NotHere, Registry};

/// Most groups one connection may be in.
pub const MAX_GROUPS_PER_CONNECTION: usize = 100;

/// How long a join waits for the backplane subscription before failing.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Whom a publish is for.
#[derive(Debug, Clone)]
pub enum Audience {
    /// Every member of a group.
    Group(GroupName),
    /// Every connection of a user.
    User(UserId),
    /// One connection.
    Connection(ConnectionId),
    /// Every connection of the hub.
    Hub,
}

/// How far a publish reached when it was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reach {
    /// Nodes that took the message (the backplane's own count).
    pub nodes: usize,
    /// Connections on this node it is being written to.
    pub local_connections: usize,
    /// Cluster-wide members of the audience, where known without extra work.
    pub members: Option<usize>,
}

/// Why a publish or membership change was refused.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// No node holds that connection.
    #[error("connection '{0}' is not connected")]
    UnknownConnection(String),
    /// The connection is in as many groups as allowed.
    #[error("connection is already in {0} groups, the most allowed")]
    TooManyGroups(usize),
    /// The backplane refused.
    #[error(transparent)]
    Backplane(#[from] BackplaneError),
}

/// A request to bring one channel's subscription in line with local interest.
struct Reconcile {
    channel: Arc<str>,
    done: Option<oneshot::Sender<Result<(), BackplaneError>>>,
}

/// A negotiated connection waiting for (or using) its WebSocket.
#[derive(Debug)]
struct Negotiated {
    connection_id: ConnectionId,
    expires: Instant,
    attached: bool,
}

/// Why a negotiated token cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachError {
    /// Unknown or expired: 404.
    NotFound,
    /// Already attached to a WebSocket: 409.
    Active,
}

/// One hubcast node.
pub struct Node {
    id: String,
    keys: Keys,
    hubs: Vec<Hub>,
    registry: Registry,
    backplane: Backplane,
    reconcile: mpsc::UnboundedSender<Reconcile>,
    limits: Limits,
    timeouts: Timeouts,
    draining: AtomicBool,
    negotiated: Mutex<HashMap<String, Negotiated>>,
    /// Cancelled when the node stops; ends its background tasks.
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// What [`Node::start`] needs.
pub struct NodeParts {
    /// Node id.
    pub id: String,
    /// Names.
    pub keys: Keys,
    /// Hubs served.
    pub hubs: Vec<Hub>,
    /// The backplane, already delivering into `inbound`'s queues.
    pub backplane: Backplane,
    /// The dispatch queues' receivers.
    pub inbound: Vec<mpsc::Receiver<InboundItem>>,
    /// Limits.
    pub limits: Limits,
    /// Timeouts.
    pub timeouts: Timeouts,
}

impl Node {
    /// Starts a node: spawns its dispatch workers and subscription task, and subscribes to
    /// its own control channel.
    ///
    /// # Errors
    /// The backplane refused the control-channel subscription.
    pub async fn start(parts: NodeParts) -> Result<Arc<Self>, BackplaneError> {
        let (reconcile_tx, reconcile_rx) = mpsc::unbounded_channel();
        let node = Arc::new(Self {
            id: parts.id,
            keys: parts.keys,
            hubs: parts.hubs,
            registry: Registry::default(),
            backplane: parts.backplane,
            reconcile: reconcile_tx,
            limits: parts.limits,
            timeouts: parts.timeouts,
            draining: AtomicBool::new(false),
            negotiated: Mutex::new(HashMap::new()),
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        let control: Arc<str> = node.keys.node_channel(&node.id).into();
        node.backplane.subscribe(&[control]).await?;
        for rx in parts.inbound {
            node.tasks.spawn(dispatch_worker(node.clone(), rx));
        }
        node.tasks
            .spawn(subscription_task(node.clone(), reconcile_rx));
        node.tasks.spawn(negotiate_sweeper(node.clone()));
        Ok(node)
    }

    /// This node's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The hubs served.
    pub fn hubs(&self) -> &[Hub] {
        &self.hubs
    }

    /// Index of the hub with this API name.
    pub fn hub_index(&self, name: &str) -> Option<usize> {
        self.hubs.iter().position(|h| h.name() == name)
    }

    /// Limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Timeouts in force.
    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    /// The local index (read-only use by tests and probes).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The backplane.
    pub fn backplane(&self) -> &Backplane {
        &self.backplane
    }

    /// Channel names.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Whether the node is shutting down (not ready, refusing new connections).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    // ---- negotiate -------------------------------------------------------------------

    /// Records a negotiated connection; returns its id and token (the same for version 0).
    pub fn negotiate(&self, version: u32) -> (ConnectionId, String) {
        let id = ConnectionId::random();
        let token = if version == 0 {
            id.as_str().to_owned()
        } else {
            crate::ids::random_token()
        };
        let mut map = self.negotiated.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(
            token.clone(),
            Negotiated {
                connection_id: id.clone(),
                expires: Instant::now() + self.timeouts.negotiate_ttl(),
                attached: false,
            },
        );
        (id, token)
    }

    /// Claims a negotiated token for a WebSocket.
    ///
    /// # Errors
    /// See [`AttachError`].
    pub fn attach(&self, token: &str) -> Result<ConnectionId, AttachError> {
        let mut map = self.negotiated.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map.get_mut(token).ok_or(AttachError::NotFound)?;
        if entry.attached {
            return Err(AttachError::Active);
        }
        if entry.expires <= Instant::now() {
            map.remove(token);
            return Err(AttachError::NotFound);
        }
        entry.attached = true;
        Ok(entry.connection_id.clone())
    }

    /// Releases a token when its connection ends.
    pub fn detach(&self, token: &str) {
        self.negotiated
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(token);
    }

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
        let mut channels: Vec<(String, bool)> = Vec::new();
        for t in &hub_def.auto_join {
            // A template whose claim is missing is skipped: the connection simply does not
            // get that group.
            if let Ok(g) = t.render(&[], &caller) {
                if let Ok(g) = GroupName::parse(&g) {
                    channels.push((self.keys.group_channel(hub_def.name(), g.as_str()), true));
                }
            }
        }
        if let Some(user) = &caller.user {
            channels.push((self.keys.user_channel(hub_def.name(), user.as_str()), false));
        }
        if hub_def.spec.allow_broadcast {
            channels.push((self.keys.hub_channel(hub_def.name()), false));
        }
        self.registry.insert(id.clone(), hub, handle, caller);
        metrics::gauge!(m::CONNECTIONS, "hub" => hub_def.name().to_owned()).increment(1.0);
        if let Err(e) = self.backplane.register_connection(&id, &self.id).await {
            self.disconnect(&id).await;
            return Err(e.into());
        }
        for (channel, group) in channels {
            if let Err(e) = self.join_channel(&id, &channel, group).await {
                self.disconnect(&id).await;
                return Err(e);
            }
        }
        Ok(())
    }

    /// Removes a connection and all its memberships.
    pub async fn disconnect(&self, id: &ConnectionId) {
        let Some((conn, emptied)) = self.registry.remove(id) else {
            return;
        };
        let hub = self.hubs[conn.hub].name().to_owned();
        metrics::gauge!(m::CONNECTIONS, "hub" => hub.clone()).decrement(1.0);
        for channel in &emptied {
            self.request_reconcile(channel.clone(), None);
        }
        let group_prefix = self.keys.group_channel(&hub, "");
        for channel in conn
            .channels
            .iter()
            .filter(|c| c.starts_with(&group_prefix))
        {
            if let Err(e) = self.backplane.remove_member(channel, id).await {
                tracing::warn!(connection = %id, error = %e, "could not remove membership from the backplane");
            }
        }
        if let Err(e) = self.backplane.unregister_connection(id).await {
            tracing::warn!(connection = %id, error = %e, "could not unregister connection from the backplane");
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
        let mut replies = Vec::new();
        for action in actions {
            match action {
                Action::Join(g) => {
                    let channel = self.keys.group_channel(hub_def.name(), g.as_str());
                    self.join_channel(&caller.connection_id, &channel, true)
                        .await
                        .map_err(|e| match e {
                            NodeError::TooManyGroups(n) => CallError::TooManyGroups(n),
                            _ => CallError::Unavailable,
                        })?;
                }
                Action::Leave(g) => {
                    let channel = self.keys.group_channel(hub_def.name(), g.as_str());
                    self.leave_channel(&caller.connection_id, &channel, true)
                        .await
                        .map_err(|_| CallError::Unavailable)?;
                }
                Action::Reply { target, arguments } => replies.push((target, arguments)),
            }
        }
        Ok(replies)
    }

    /// Adds a connection held by this node to a channel, and returns once the node is
    /// subscribed to it, so that a publish right after the join reaches the connection.
    async fn join_channel(
        &self,
        id: &ConnectionId,
        channel: &str,
        group: bool,
    ) -> Result<(), NodeError> {
        let joined = self
            .registry
            .join(id, channel, group, MAX_GROUPS_PER_CONNECTION)
            .map_err(|e| match e {
                Ok(NotHere) => NodeError::UnknownConnection(id.to_string()),
                Err(n) => NodeError::TooManyGroups(n),
            })?;
        if !joined.added {
            return Ok(());
        }
        let rollback = |node: &Self| {
            if let Ok(left) = node.registry.leave(id, channel, group) {
                if left.last {
                    node.request_reconcile(channel.into(), None);
                }
            }
        };
        if group {
            if let Err(e) = self.backplane.add_member(channel, id).await {
                rollback(self);
                return Err(e.into());
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
            rollback(self);
            if group {
                let _ = self.backplane.remove_member(channel, id).await;
            }
            return Err(e.into());
        }
        Ok(())
    }

    async fn leave_channel(
        &self,
        id: &ConnectionId,
        channel: &str,
        group: bool,
    ) -> Result<bool, NodeError> {
        let left = self
            .registry
            .leave(id, channel, group)
            .map_err(|NotHere| NodeError::UnknownConnection(id.to_string()))?;
        if left.last {
            self.request_reconcile(channel.into(), None);
        }
        if left.removed && group {
            self.backplane.remove_member(channel, id).await?;
        }
        Ok(left.removed)
    }

    fn request_reconcile(
        &self,
        channel: Arc<str>,
        done: Option<oneshot::Sender<Result<(), BackplaneError>>>,
    ) {
        // The receiver lives as long as the node; a send error means the node stopped,
        // and the dropped `done` tells the waiter so.
        let _ = self.reconcile.send(Reconcile { channel, done });
    }

    /// Adds a connection to a group from the API. Returns whether it was added (false:
    /// already a member).
    ///
    /// # Errors
    /// Unknown connection, too many groups, or the backplane.
    pub async fn add_to_group(
        &self,
        hub: usize,
        id: &ConnectionId,
        group: &GroupName,
    ) -> Result<(), NodeError> {
        let conn = self.registry.connection(id).filter(|c| c.hub == hub);
        if conn.is_none() {
            return Err(NodeError::UnknownConnection(id.to_string()));
        }
        let channel = self
            .keys
            .group_channel(self.hubs[hub].name(), group.as_str());
        self.join_channel(id, &channel, true).await
    }

    /// Removes a connection from a group from the API.
    ///
    /// # Errors
    /// Unknown connection, or the backplane.
    pub async fn remove_from_group(
        &self,
        hub: usize,
        id: &ConnectionId,
        group: &GroupName,
    ) -> Result<bool, NodeError> {
        if self
            .registry
            .connection(id)
            .filter(|c| c.hub == hub)
            .is_none()
        {
            return Err(NodeError::UnknownConnection(id.to_string()));
        }
        let channel = self
            .keys
            .group_channel(self.hubs[hub].name(), group.as_str());
        self.leave_channel(id, &channel, true).await
    }

    /// Closes a connection from the API (the client may reconnect).
    ///
    /// # Errors
    /// Unknown connection.
    pub fn close_connection(&self, hub: usize, id: &ConnectionId) -> Result<(), NodeError> {
        let conn = self
            .registry
            .connection(id)
            .filter(|c| c.hub == hub)
            .ok_or_else(|| NodeError::UnknownConnection(id.to_string()))?;
        conn.handle.close(CloseReason::ClosedByServer);
        Ok(())
    }

    /// Whether a connection of this hub is connected.
    pub fn has_connection(&self, hub: usize, id: &ConnectionId) -> bool {
        self.registry.connection(id).is_some_and(|c| c.hub == hub)
    }

    /// Cluster-wide member count of a group.
    ///
    /// # Errors
    /// The backplane.
    pub async fn group_size(&self, hub: usize, group: &GroupName) -> Result<usize, NodeError> {
        let channel = self
            .keys
            .group_channel(self.hubs[hub].name(), group.as_str());
        Ok(self.backplane.member_count(&channel).await?)
    }

    // ---- publishing ------------------------------------------------------------------

    /// Publishes an event: encodes the client record once and hands it to the backplane.
    /// Returns once the backplane accepted it.
    ///
    /// # Errors
    /// Unknown connection (for [`Audience::Connection`]), or the backplane.
    pub async fn publish(
        &self,
        hub: usize,
        audience: &Audience,
        target: &str,
        arguments_json: &str,
        correlation: &CorrelationId,
    ) -> Result<Reach, NodeError> {
        let hub_name = self.hubs[hub].name();
        let record = message::invocation(target, arguments_json);
        let published_at = now_micros();
        let (channel, kind, connection) = match audience {
            Audience::Group(g) => (
                self.keys.group_channel(hub_name, g.as_str()),
                Kind::Deliver,
                None,
            ),
            Audience::User(u) => (
                self.keys.user_channel(hub_name, u.as_str()),
                Kind::Deliver,
                None,
            ),
            Audience::Hub => (self.keys.hub_channel(hub_name), Kind::Deliver, None),
            Audience::Connection(c) => {
                if let Some(local) = self.registry.connection(c).filter(|l| l.hub == hub) {
                    let frame = Utf8Bytes::from(record);
                    let delivered = deliver_to(&local.handle, c, hub_name, frame, published_at);
                    return Ok(Reach {
                        nodes: 1,
                        local_connections: usize::from(delivered),
                        members: Some(1),
                    });
                }
                let owner = self
                    .backplane
                    .owner(c)
                    .await?
                    .ok_or_else(|| NodeError::UnknownConnection(c.to_string()))?;
                (self.keys.node_channel(&owner), Kind::Send, Some(c))
            }
        };
        let local = if kind == Kind::Deliver {
            self.registry.member_count(&channel)
        } else {
            0
        };
        let payload = Envelope::encode(
            kind,
            published_at,
            correlation.as_str().as_bytes(),
            connection.map_or(&[][..], |c| c.as_str().as_bytes()),
            record.as_bytes(),
        );
        let nodes = self.backplane.publish(&channel, payload).await?;
        let members = match (&self.backplane, audience) {
            (Backplane::Memory(_), Audience::Group(_)) => {
                self.backplane.member_count(&channel).await.ok()
            }
            (_, Audience::Connection(_)) => Some(1),
            _ => None,
        };
        Ok(Reach {
            nodes,
            local_connections: local,
            members,
        })
    }

    // ---- fan-out ---------------------------------------------------------------------

    /// Writes a record to every local member of a channel. Never waits: a member whose
    /// queue is full is closed as a slow consumer.
    fn deliver_local(&self, channel: &str, frame: Utf8Bytes, published_at: u64) {
        let mut slow: Vec<(ConnectionId, SessionHandle)> = Vec::new();
        let hub = self.registry.for_each_member(channel, |member| {
            match member.handle.try_send(Outbound {
                frame: frame.clone(),
                published_at_micros: published_at,
            }) {
                Ok(()) | Err(QueueError::Closed) => {}
                Err(QueueError::Full) => slow.push((member.id.clone(), member.handle.clone())),
            }
        });
        if let Some(hub) = hub {
            for (id, handle) in slow {
                evict_slow(&handle, &id, self.hubs[hub].name());
            }
        }
    }

    async fn apply_control(self: &Arc<Self>, env: Envelope) {
        let Some(id) = std::str::from_utf8(&env.connection)
            .ok()
            .and_then(ConnectionId::parse)
        else {
            tracing::warn!("control message with an invalid connection id ignored");
            return;
        };
        match env.kind {
            Kind::Send => {
                let Ok(frame) = Utf8Bytes::try_from(env.body) else {
                    bad_envelope("node", "record is not UTF-8");
                    return;
                };
                if let Some(conn) = self.registry.connection(&id) {
                    deliver_to(
                        &conn.handle,
                        &id,
                        self.hubs[conn.hub].name(),
                        frame,
                        env.published_at_micros,
                    );
                }
            }
            Kind::Close => {
                if let Some(conn) = self.registry.connection(&id) {
                    conn.handle.close(CloseReason::ClosedByServer);
                }
            }
            Kind::Join | Kind::Leave => {
                let Ok(channel) = std::str::from_utf8(&env.body) else {
                    bad_envelope("node", "channel is not UTF-8");
                    return;
                };
                let result = if env.kind == Kind::Join {
                    self.join_channel(&id, channel, true).await
                } else {
                    self.leave_channel(&id, channel, true).await.map(|_| ())
                };
                if let Err(e) = result {
                    tracing::warn!(connection = %id, error = %e, "remote group change not applied");
                }
            }
            Kind::Deliver => {}
        }
    }

    // ---- shutdown --------------------------------------------------------------------

    /// Starts draining: new connections are refused and every session is told to close
    /// with `allowReconnect`.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Release);
        for handle in self.registry.handles() {
            handle.close(CloseReason::Shutdown);
        }
    }

    /// Stops background tasks and waits for them (bounded).
    pub async fn stop(&self) {
        self.stop.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.tasks.wait()).await;
    }
}

fn deliver_to(
    handle: &SessionHandle,
    id: &ConnectionId,
    hub: &str,
    frame: Utf8Bytes,
    published_at: u64,
) -> bool {
    match handle.try_send(Outbound {
        frame,
        published_at_micros: published_at,
    }) {
        Ok(()) => true,
        Err(QueueError::Closed) => false,
        Err(QueueError::Full) => {
            evict_slow(handle, id, hub);
            false
        }
    }
}

fn evict_slow(handle: &SessionHandle, id: &ConnectionId, hub: &str) {
    metrics::counter!(m::DELIVERY_FAILURES, "hub" => hub.to_owned(), "reason" => m::REASON_SLOW_CONSUMER).increment(1);
    if handle.close(CloseReason::SlowConsumer) {
        tracing::warn!(connection = %id, hub, "slow consumer: outbound queue full, closing the connection");
    }
}

fn bad_envelope(hub: &str, why: &str) {
    metrics::counter!(m::DELIVERY_FAILURES, "hub" => hub.to_owned(), "reason" => m::REASON_BAD_ENVELOPE).increment(1);
    tracing::warn!(why, "backplane payload dropped: not a valid envelope");
}

/// Takes payloads from one dispatch queue and fans them out. Channel deliveries are done
/// inline (they never wait); control messages that need the backplane run as their own
/// tasks so one slow join cannot hold up the queue.
async fn dispatch_worker(node: Arc<Node>, mut rx: mpsc::Receiver<InboundItem>) {
    loop {
        let item = tokio::select! {
            _ = node.stop.cancelled() => return,
            item = rx.recv() => item,
        };
        let Some((channel, payload)) = item else {
            return;
        };
        let env = match Envelope::decode(&payload) {
            Ok(e) => e,
            Err(e) => {
                bad_envelope(crate::keys::hub_label(&channel), &e.to_string());
                continue;
            }
        };
        match env.kind {
            Kind::Deliver => match Utf8Bytes::try_from(env.body) {
                Ok(frame) => node.deliver_local(&channel, frame, env.published_at_micros),
                Err(_) => bad_envelope(crate::keys::hub_label(&channel), "record is not UTF-8"),
            },
            Kind::Send | Kind::Close => node.apply_control(env).await,
            Kind::Join | Kind::Leave => {
                let node2 = node.clone();
                node.tasks
                    .spawn(async move { node2.apply_control(env).await });
            }
        }
    }
}

/// Keeps the node's backplane subscriptions equal to the channels that have local
/// members. Requests are handled in batches; each one re-reads the registry, so whatever
/// order joins and leaves interleave in, the last request for a channel leaves it right.
async fn subscription_task(node: Arc<Node>, mut rx: mpsc::UnboundedReceiver<Reconcile>) {
    let mut subscribed: HashSet<Arc<str>> = HashSet::new();
    loop {
        let first = tokio::select! {
            _ = node.stop.cancelled() => return,
            r = rx.recv() => r,
        };
        let Some(first) = first else { return };
        let mut batch = vec![first];
        while batch.len() < 512 {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let mut to_sub: Vec<Arc<str>> = Vec::new();
        let mut to_unsub: Vec<Arc<str>> = Vec::new();
        let mut seen: HashSet<Arc<str>> = HashSet::new();
        for r in &batch {
            if !seen.insert(r.channel.clone()) {
                continue;
            }
            let want = node.registry.has_members(&r.channel);
            let have = subscribed.contains(&r.channel);
            if want && !have {
                to_sub.push(r.channel.clone());
            } else if !want && have {
                to_unsub.push(r.channel.clone());
            }
        }
        let sub_result = if to_sub.is_empty() {
            Ok(())
        } else {
            node.backplane.subscribe(&to_sub).await
        };
        match &sub_result {
            Ok(()) => subscribed.extend(to_sub.iter().cloned()),
            Err(e) => {
                tracing::warn!(error = %e, channels = to_sub.len(), "backplane subscribe failed")
            }
        }
        if !to_unsub.is_empty() {
            match node.backplane.unsubscribe(&to_unsub).await {
                Ok(()) => {
                    for c in &to_unsub {
                        subscribed.remove(c);
                    }
                }
                // Staying subscribed to a channel without members only costs traffic; it
                // is retried on the channel's next transition.
                Err(e) => tracing::warn!(error = %e, "backplane unsubscribe failed"),
            }
        }
        metrics::gauge!(m::BACKPLANE_SUBSCRIPTIONS).set(subscribed.len() as f64);
        for r in batch {
            if let Some(done) = r.done {
                let result = if to_sub.contains(&r.channel) {
                    sub_result.clone()
                } else {
                    Ok(())
                };
                let _ = done.send(result);
            }
        }
    }
}

/// Forgets negotiated connections whose WebSocket never came.
async fn negotiate_sweeper(node: Arc<Node>) {
    let period = node
        .timeouts
        .negotiate_ttl()
        .max(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = node.stop.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        let now = Instant::now();
        node.negotiated
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, n| n.attached || n.expires > now);
    }
}
