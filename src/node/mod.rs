//! The node: one process's coordinator. It owns the local [`Registry`], the
//! [`Backplane`], the dispatch workers that fan received messages out to local
//! connections, and the subscription task that keeps backplane subscriptions equal to
//! local interest.

pub mod registry;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backplane::{
    Backplane, BackplaneError, BackplaneEvent, ConnectionSnapshot, InboundItem,
};
use crate::config::{Flows, Limits, RateRule, Timeouts};
use crate::envelope::{now_micros, Ack, AckOutcome, Envelope, GroupChange, Kind};
use crate::hub::{Action, CallError, Caller, Hub};
use crate::ids::{ConnectionId, CorrelationId, GroupName, UserId};
use crate::keys::Keys;
use crate::metrics as m;
use crate::protocol::message;
use crate::session::close::CloseReason;
use crate::session::handle::{Outbound, QueueError, SessionHandle};
use registry::{NotHere, Registry};

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
    /// The message was not sent: a storm-protection rule suppressed it, or its task had
    /// already ended. Counted and logged.
    pub suppressed: bool,
}

/// A condition on a publish.
#[derive(Debug, Clone, Copy)]
pub enum Guard<'a> {
    /// Storm protection applies (the per-group, per-target rate limits).
    Storm,
    /// Only if the task with this done-marker has not ended (progress after a terminal
    /// event is dropped).
    UnlessDone(&'a str),
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
    /// The connection id is already connected (a negotiate token used twice).
    #[error("connection '{0}' is already connected")]
    DuplicateConnection(String),
    /// The node owning the connection did not answer in time.
    #[error("the node holding the connection did not answer")]
    OwnerTimeout,
}

/// How long a remote group change waits for the owning node's ack.
const ACK_TIMEOUT: Duration = Duration::from_secs(3);

type Done = Option<oneshot::Sender<Result<(), BackplaneError>>>;

/// A request to the subscription task.
enum Subscription {
    /// Bring one channel's subscription in line with local interest.
    Reconcile { channel: Arc<str>, done: Done },
    /// The subscriber connection is new: subscribe the control channel and every channel
    /// with local members.
    Resync,
}

/// One hubcast node.
pub struct Node {
    id: String,
    keys: Keys,
    hubs: Vec<Hub>,
    registry: Registry,
    backplane: Backplane,
    reconcile: mpsc::UnboundedSender<Subscription>,
    limits: Limits,
    timeouts: Timeouts,
    flows: Flows,
    suppressions: crate::guard::Suppressions,
    /// Task progress waiting for its coalescing window, per task.
    pub(crate) progress: crate::guard::Coalescer,
    draining: AtomicBool,
    /// Set when a cluster-store write failed; the next resync repairs it.
    needs_resync: AtomicBool,
    next_nonce: AtomicU64,
    /// Channel deliveries this node received from the backplane.
    received: AtomicU64,
    probes: Mutex<HashMap<u64, oneshot::Sender<()>>>,
    acks: Mutex<HashMap<u64, oneshot::Sender<AckOutcome>>>,
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
    /// Events from the backplane (connected, lost, resync needed).
    pub events: mpsc::UnboundedReceiver<BackplaneEvent>,
    /// Cancelled when the node stops; the backplane's own tasks watch it too.
    pub stop: CancellationToken,
    /// Limits.
    pub limits: Limits,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Event-flow settings.
    pub flows: Flows,
}

impl Node {
    /// Starts a node: spawns its dispatch workers, its subscription task and the task
    /// that reacts to backplane events (the first `Connected` subscribes the node's
    /// control channel).
    pub fn start(parts: NodeParts) -> Arc<Self> {
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
            flows: parts.flows,
            suppressions: crate::guard::Suppressions::default(),
            progress: crate::guard::Coalescer::default(),
            draining: AtomicBool::new(false),
            needs_resync: AtomicBool::new(false),
            next_nonce: AtomicU64::new(1),
            received: AtomicU64::new(0),
            probes: Mutex::new(HashMap::new()),
            acks: Mutex::new(HashMap::new()),
            stop: parts.stop,
            tasks: TaskTracker::new(),
        });
        for rx in parts.inbound {
            node.tasks.spawn(dispatch_worker(node.clone(), rx));
        }
        node.tasks
            .spawn(subscription_task(node.clone(), reconcile_rx));
        node.tasks.spawn(event_task(node.clone(), parts.events));
        node.tasks.spawn(gauge_task(node.clone()));
        node
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

    /// Spawns a task the node waits for when it stops.
    pub(crate) fn spawn_tracked(
        &self,
        task: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        self.tasks.spawn(task);
    }

    /// Event-flow settings in force.
    pub fn flows(&self) -> &Flows {
        &self.flows
    }

    fn storm_rule(&self, hub: &str, target: &str) -> Option<&RateRule> {
        self.flows
            .rate_limits
            .iter()
            .find(|r| r.target == target && r.hub.as_deref().is_none_or(|h| h == hub))
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

    /// How many channel deliveries this node received from the backplane: a node without
    /// members of a group receives none of its messages.
    pub fn received_deliveries(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Whether the node is shutting down (not ready, refusing new connections).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
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
            self.request_reconcile(channel.clone(), None);
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

    /// Adds a connection held by this node to a channel, and returns once the node is
    /// subscribed to it, so that a publish right after the join reaches the connection.
    ///
    /// While the backplane is unreachable the join still succeeds locally: the
    /// subscription and the cluster-wide membership are written when it comes back.
    async fn join_channel(
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
                    self.request_reconcile(channel.into(), None);
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

    async fn leave_channel(
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
            self.request_reconcile(channel.into(), None);
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

    fn store_failed(&self, what: &str, e: &BackplaneError) {
        self.needs_resync.store(true, Ordering::Release);
        tracing::warn!(error = %e, "{what}: cluster store unavailable; repaired when it is back");
    }

    fn request_reconcile(&self, channel: Arc<str>, done: Done) {
        // The receiver lives as long as the node; a send error means the node stopped,
        // and the dropped `done` tells the waiter so.
        let _ = self
            .reconcile
            .send(Subscription::Reconcile { channel, done });
    }

    /// Writes this node's state to the backplane again: subscriptions first, then the
    /// cluster-wide connection records and memberships.
    async fn resync(&self) {
        let _ = self.reconcile.send(Subscription::Resync);
        self.needs_resync.store(false, Ordering::Release);
        let snapshot: Vec<ConnectionSnapshot> = self
            .registry
            .snapshot()
            .into_iter()
            .map(|(id, conn)| {
                let hub = self.hubs[conn.hub].name();
                ConnectionSnapshot {
                    groups: conn
                        .channels
                        .iter()
                        .filter_map(|c| self.keys.group_of_channel(hub, c).map(str::to_owned))
                        .collect(),
                    hub: hub.to_owned(),
                    user: conn.caller.user.as_ref().map(|u| u.as_str().to_owned()),
                    id,
                }
            })
            .collect();
        match self.backplane.resync(&snapshot).await {
            Ok(()) => tracing::info!(connections = snapshot.len(), "cluster state written"),
            Err(e) => self.store_failed("resync", &e),
        }
    }

    /// A pub/sub round trip through the backplane: publishes a probe to this node's own
    /// control channel and waits for it to come back.
    pub async fn probe(&self, within: Duration) -> bool {
        let nonce = self.next_nonce.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.probes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(nonce, tx);
        let payload = Envelope::encode(
            Kind::Probe,
            now_micros(),
            b"",
            b"",
            nonce.to_string().as_bytes(),
        );
        let channel = self.keys.node_channel(&self.id);
        let ok = tokio::time::timeout(within, async {
            self.backplane
                .publish(&channel, payload)
                .await
                .ok()
                .filter(|n| *n > 0)?;
            rx.await.ok()
        })
        .await
        .ok()
        .flatten()
        .is_some();
        self.probes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&nonce);
        ok
    }

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
        self.change_group(hub, id, group, true).await.map(drop)
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
        self.change_group(hub, id, group, false).await
    }

    async fn change_group(
        &self,
        hub: usize,
        id: &ConnectionId,
        group: &GroupName,
        join: bool,
    ) -> Result<bool, NodeError> {
        let channel = self
            .keys
            .group_channel(self.hubs[hub].name(), group.as_str());
        if self.registry.connection(id).is_some_and(|c| c.hub == hub) {
            return if join {
                self.join_channel(id, hub, &channel, Some(group))
                    .await
                    .map(|_| true)
            } else {
                self.leave_channel(id, hub, &channel, Some(group)).await
            };
        }
        let owner = self.remote_owner(hub, id).await?;
        let nonce = self.next_nonce.fetch_add(1, Ordering::Relaxed);
        let body = serde_json::to_vec(&GroupChange {
            hub: self.hubs[hub].name().to_owned(),
            group: group.as_str().to_owned(),
            reply_to: self.id.clone(),
            nonce,
        })
        .unwrap_or_default();
        let (tx, rx) = oneshot::channel();
        self.acks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(nonce, tx);
        let kind = if join { Kind::Join } else { Kind::Leave };
        let payload = Envelope::encode(kind, now_micros(), b"", id.as_str().as_bytes(), &body);
        let sent = self
            .backplane
            .publish(&self.keys.node_channel(&owner), payload)
            .await;
        let outcome = match sent {
            Ok(0) => Err(NodeError::UnknownConnection(id.to_string())),
            Ok(_) => match tokio::time::timeout(ACK_TIMEOUT, rx).await {
                Ok(Ok(AckOutcome::Done)) => Ok(true),
                Ok(Ok(AckOutcome::UnknownConnection)) => {
                    Err(NodeError::UnknownConnection(id.to_string()))
                }
                Ok(Ok(AckOutcome::TooManyGroups(n))) => Err(NodeError::TooManyGroups(n)),
                Ok(Err(_)) | Err(_) => Err(NodeError::OwnerTimeout),
            },
            Err(e) => Err(e.into()),
        };
        self.acks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&nonce);
        outcome
    }

    /// The node holding a connection of this hub elsewhere in the cluster.
    async fn remote_owner(&self, hub: usize, id: &ConnectionId) -> Result<String, NodeError> {
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
        if let Some(conn) = self.registry.connection(id).filter(|c| c.hub == hub) {
            conn.handle.close(CloseReason::ClosedByServer);
            return Ok(());
        }
        let owner = self.remote_owner(hub, id).await?;
        let payload = Envelope::encode(Kind::Close, now_micros(), b"", id.as_str().as_bytes(), b"");
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
        self.publish_guarded(
            hub,
            audience,
            target,
            arguments_json,
            correlation,
            Guard::Storm,
        )
        .await
    }

    /// [`Self::publish`] under a [`Guard`]. Either way the backplane runs one command.
    ///
    /// # Errors
    /// As [`Self::publish`].
    pub async fn publish_guarded(
        &self,
        hub: usize,
        audience: &Audience,
        target: &str,
        arguments_json: &str,
        correlation: &CorrelationId,
        guard: Guard<'_>,
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
                        suppressed: false,
                    });
                }
                let owner = self.remote_owner(hub, c).await?;
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
        let rule = match (guard, audience) {
            (Guard::Storm, Audience::Group(g)) => self.storm_rule(hub_name, target).map(|r| (r, g)),
            _ => None,
        };
        let sent = match (guard, rule) {
            (Guard::UnlessDone(done), _) => {
                self.backplane
                    .publish_unless_done(done, &channel, payload)
                    .await?
            }
            (Guard::Storm, Some((rule, g))) => {
                let bucket = self.keys.rate(hub_name, g.as_str(), target);
                self.backplane
                    .publish_rate_limited(
                        &bucket,
                        rule.per_second,
                        rule.burst.unwrap_or(rule.per_second),
                        &channel,
                        payload,
                    )
                    .await?
            }
            (Guard::Storm, None) => Some(self.backplane.publish(&channel, payload).await?),
        };
        let Some(nodes) = sent else {
            let (rule, group) = match (guard, audience) {
                (Guard::UnlessDone(_), _) => ("after_terminal", String::new()),
                (_, Audience::Group(g)) => ("rate_limit", g.to_string()),
                _ => ("rate_limit", String::new()),
            };
            self.suppressions.record(hub_name, &group, target, rule);
            return Ok(Reach {
                nodes: 0,
                local_connections: 0,
                members: None,
                suppressed: true,
            });
        };
        let members = match audience {
            Audience::Group(g) if self.backplane.counts_are_local() => {
                self.backplane.member_count(hub_name, g.as_str()).await.ok()
            }
            Audience::Connection(_) => Some(usize::from(nodes > 0)),
            _ => None,
        };
        Ok(Reach {
            nodes,
            local_connections: local,
            members,
            suppressed: false,
        })
    }

    // ---- fan-out ---------------------------------------------------------------------

    /// Writes a record to every local member of a channel. Never waits: a member whose
    /// queue is full is closed as a slow consumer.
    fn deliver_local(&self, channel: &str, frame: Utf8Bytes, published_at: u64) {
        let mut slow: Vec<(ConnectionId, SessionHandle)> = Vec::new();
        let mut closing = 0u64;
        let hub = self.registry.for_each_member(channel, |member| {
            match member.handle.try_send(Outbound {
                frame: frame.clone(),
                published_at_micros: published_at,
            }) {
                Ok(()) => {}
                Err(QueueError::Closed) => closing += 1,
                Err(QueueError::Full) => slow.push((member.id.clone(), member.handle.clone())),
            }
        });
        if let Some(hub) = hub {
            let name = self.hubs[hub].name();
            for (id, handle) in slow {
                evict_slow(&handle, &id, name);
            }
            if closing > 0 {
                metrics::counter!(m::DELIVERY_FAILURES, "hub" => name.to_owned(), "reason" => m::REASON_CONNECTION_CLOSED)
                    .increment(closing);
                tracing::debug!(
                    channel,
                    connections = closing,
                    "message not queued: connections closing"
                );
            }
        }
    }

    async fn apply_control(self: &Arc<Self>, env: Envelope) {
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
                } else {
                    // Published with a 202 while the connection was leaving this node.
                    metrics::counter!(m::DELIVERY_FAILURES, "hub" => "node", "reason" => m::REASON_CONNECTION_CLOSED).increment(1);
                    tracing::info!(connection = %id, "message for a connection that has left this node dropped");
                }
            }
            Kind::Close => {
                if let Some(conn) = self.registry.connection(&id) {
                    conn.handle.close(CloseReason::ClosedByServer);
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
            Kind::Deliver | Kind::Probe | Kind::Ack => {}
        }
    }

    async fn apply_group_change(
        &self,
        id: &ConnectionId,
        change: &GroupChange,
        join: bool,
    ) -> AckOutcome {
        let (Some(hub), Ok(group)) = (self.hub_index(&change.hub), GroupName::parse(&change.group))
        else {
            return AckOutcome::UnknownConnection;
        };
        if self.registry.connection(id).is_none_or(|c| c.hub != hub) {
            return AckOutcome::UnknownConnection;
        }
        let channel = self.keys.group_channel(&change.hub, group.as_str());
        let result = if join {
            self.join_channel(id, hub, &channel, Some(&group))
                .await
                .map(drop)
        } else {
            self.leave_channel(id, hub, &channel, Some(&group))
                .await
                .map(drop)
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
        Err(QueueError::Closed) => {
            metrics::counter!(m::DELIVERY_FAILURES, "hub" => hub.to_owned(), "reason" => m::REASON_CONNECTION_CLOSED).increment(1);
            tracing::debug!(connection = %id, "message not queued: connection closing");
            false
        }
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
            Kind::Deliver => {
                node.received.fetch_add(1, Ordering::Relaxed);
                // The publish's correlation id, on every node that delivers it. Filter
                // with `RUST_LOG=hubcast::delivery=warn` when the volume matters.
                tracing::info!(
                    target: "hubcast::delivery",
                    channel = %channel,
                    correlation_id = %String::from_utf8_lossy(&env.correlation),
                    local_members = node.registry.member_count(&channel),
                    "delivering"
                );
                match Utf8Bytes::try_from(env.body) {
                    Ok(frame) => node.deliver_local(&channel, frame, env.published_at_micros),
                    Err(_) => bad_envelope(crate::keys::hub_label(&channel), "record is not UTF-8"),
                }
            }
            Kind::Send | Kind::Close | Kind::Probe | Kind::Ack => node.apply_control(env).await,
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
/// While the subscriber connection is down, joins succeed (they are local) and the
/// `Resync` that follows the reconnect subscribes everything.
async fn subscription_task(node: Arc<Node>, mut rx: mpsc::UnboundedReceiver<Subscription>) {
    let mut subscribed: HashSet<Arc<str>> = HashSet::new();
    let control: Arc<str> = node.keys.node_channel(&node.id).into();
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
        if batch.iter().any(|r| matches!(r, Subscription::Resync)) {
            subscribed.clear();
            to_sub.push(control.clone());
            to_sub.extend(node.registry.channels());
            seen.extend(to_sub.iter().cloned());
        }
        for r in &batch {
            let Subscription::Reconcile { channel, .. } = r else {
                continue;
            };
            if !seen.insert(channel.clone()) {
                continue;
            }
            let want = node.registry.has_members(channel);
            let have = subscribed.contains(channel);
            if want && !have {
                to_sub.push(channel.clone());
            } else if !want && have {
                to_unsub.push(channel.clone());
            }
        }
        let sub_result = if to_sub.is_empty() {
            Ok(())
        } else {
            match node.backplane.subscribe(&to_sub).await {
                Ok(()) => {
                    subscribed.extend(to_sub.iter().cloned());
                    Ok(())
                }
                // The reconnect's resync will subscribe these; the joins stand.
                Err(BackplaneError::Disconnected) => Ok(()),
                Err(e) => {
                    tracing::warn!(error = %e, channels = to_sub.len(), "backplane subscribe failed");
                    // A failed resync must be tried again: its channels (and the node's
                    // own control channel) would otherwise stay unsubscribed.
                    if batch.iter().any(|r| matches!(r, Subscription::Resync)) {
                        node.needs_resync.store(true, Ordering::Release);
                    }
                    Err(e)
                }
            }
        };
        if !to_unsub.is_empty() {
            match node.backplane.unsubscribe(&to_unsub).await {
                Ok(()) | Err(BackplaneError::Disconnected) => {
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
            if let Subscription::Reconcile {
                channel,
                done: Some(done),
            } = r
            {
                let result = if to_sub.contains(&channel) {
                    sub_result.clone()
                } else {
                    Ok(())
                };
                let _ = done.send(result);
            }
        }
    }
}

/// Refreshes the gauges that need a look at the registry or the cluster store: groups
/// and memberships cluster-wide, local groups, and readiness.
async fn gauge_task(node: Arc<Node>) {
    let names: Vec<&str> = node.hubs.iter().map(Hub::name).collect();
    crate::metrics::init_series(&names);
    loop {
        let local = node
            .registry
            .channel_counts(node.hubs.len(), |hub, channel| {
                node.keys
                    .group_of_channel(node.hubs[hub].name(), channel)
                    .is_some()
            });
        for (hub, n) in names.iter().zip(&local) {
            metrics::gauge!(m::LOCAL_GROUPS, "hub" => (*hub).to_owned()).set(*n as f64);
        }
        match node.backplane.cluster_counts(&names).await {
            Ok(counts) => {
                for (hub, (groups, members)) in names.iter().zip(counts) {
                    metrics::gauge!(m::GROUPS, "hub" => (*hub).to_owned()).set(groups as f64);
                    metrics::gauge!(m::GROUP_MEMBERS, "hub" => (*hub).to_owned())
                        .set(members as f64);
                }
            }
            Err(e) => tracing::debug!(error = %e, "cluster counts unavailable"),
        }
        let ready = !node.is_draining() && node.probe(Duration::from_secs(1)).await;
        metrics::gauge!(m::READY).set(if ready { 1.0 } else { 0.0 });
        // While not ready (starting, or Redis away), look again soon, so the gauge follows
        // /readyz within a second.
        let period = if ready {
            Duration::from_secs(5)
        } else {
            Duration::from_millis(500)
        };
        tokio::select! {
            _ = node.stop.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
    }
}

/// Reacts to the backplane: a (re)connected subscriber or lost cluster state means
/// writing this node's state again.
async fn event_task(node: Arc<Node>, mut events: mpsc::UnboundedReceiver<BackplaneEvent>) {
    let mut repair = tokio::time::interval(Duration::from_secs(5));
    repair.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let event = tokio::select! {
            _ = node.stop.cancelled() => return,
            e = events.recv() => e,
            _ = repair.tick() => {
                if node.needs_resync.load(Ordering::Acquire) {
                    node.resync().await;
                }
                continue;
            }
        };
        match event {
            None => return,
            Some(BackplaneEvent::Connected | BackplaneEvent::ResyncNeeded) => node.resync().await,
            Some(BackplaneEvent::Disconnected) => {}
        }
    }
}
