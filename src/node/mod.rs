//! The node: one process's coordinator. It owns the local [`Registry`] and the
//! [`Backplane`]; the rest of its work lives in one file per concern:
//!
//! | file | what it holds |
//! |---|---|
//! | `membership` | connecting, a client's hub method calls, joining and leaving channels |
//! | `publish` | the publish path: encode once, one backplane command, guards |
//! | `dispatch` | fan-out from the dispatch queues to local members' bounded queues |
//! | `subscriptions` | keeping subscriptions equal to local interest; resync after outages |
//! | `remote` | operations on connections another node owns, and control messages |
//! | `background` | the readiness probe, gauges, backplane events, shutdown |
//! | `user_groups` | a user's groups beyond its connections: records, restore, endings |

mod audience;
mod background;
mod dispatch;
mod frames;
mod membership;
mod positions;
mod publish;
pub mod registry;
mod remote;
mod resume;

pub use resume::{Adopted, Resumed};
pub use transport::{BridgeCall, POLL_WAIT};
mod listing;
mod subscriptions;
mod transport;
mod user_groups;

pub use listing::{MembersListing, PageToken};

pub use user_groups::{Lifetime, MAX_TTL};

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backplane::{Backplane, BackplaneError, BackplaneEvent, Inbound, InboundItem};
use crate::config::{Delivery, Flows, Limits, Timeouts};
use crate::envelope::AckOutcome;
use crate::hub::Hub;
use crate::ids::{ConnectionId, GroupName, UserId};
use crate::keys::Keys;
use registry::Registry;
use subscriptions::Subscription;

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
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// A repeat of an earlier publish with the same idempotency key: nothing was sent
    /// now, and this is the first publish's correlation id.
    pub repeat_of: Option<String>,
}

/// A publisher's `Idempotency-Key`: a retry with the same key (from the same publisher,
/// within the idempotency window) is answered as the first publish was, and not sent
/// again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// Whose key: a digest of the publisher's credential, so two publishers never share.
    pub scope: String,
    /// The key as sent.
    pub key: String,
    /// A repeat must carry the same arguments too (a client's own publish). Events a flow
    /// derives from one request carry fresh timestamps on a retry, so theirs match on
    /// audience and target alone.
    pub exact: bool,
}

/// A condition on a publish.
#[derive(Debug, Clone, Copy)]
pub enum Guard<'a> {
    /// Storm protection applies (the per-group, per-target rate limits).
    Storm,
    /// Only if the task (kind, id) has not ended on this channel (progress after a
    /// terminal event is dropped).
    UnlessDone(&'a str, &'a str),
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
    /// An idempotency key came back with a different request.
    #[error("this Idempotency-Key was used for a different request")]
    IdempotencyConflict,
}

/// One hubcast node.
pub struct Node {
    id: String,
    keys: Keys,
    hubs: Vec<Hub>,
    /// Each hub's delivery series, by hub index.
    meters: Vec<crate::metrics::HubMeters>,
    registry: Registry,
    backplane: Backplane,
    reconcile: mpsc::UnboundedSender<Subscription>,
    limits: Limits,
    timeouts: Timeouts,
    flows: Flows,
    delivery: Delivery,
    /// The dispatch queues' sending side, for catch-ups and forgets queued behind what
    /// the backplane delivered.
    inbound_tx: Inbound,
    suppressions: crate::guard::Suppressions,
    /// The last position this node published per channel: when a publish starts a new
    /// epoch, receivers are told where the lost stream ended (bounded: cleared when full).
    heads: Mutex<HashMap<Arc<str>, crate::envelope::Position>>,
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
    /// Hand-offs of stateful connections this node asked another for, by nonce.
    handoffs: Mutex<HashMap<u64, oneshot::Sender<Option<crate::envelope::Moved>>>>,
    /// Bridges of HTTP-transport connections this node holds.
    bridges: Mutex<HashMap<ConnectionId, mpsc::Sender<BridgeCall>>>,
    /// Transport requests this node carried to another, by nonce.
    transport_replies: Mutex<HashMap<u64, oneshot::Sender<Option<Vec<u8>>>>>,
    /// Timed user memberships joined here, by when each ends.
    endings: Mutex<user_groups::Endings>,
    /// Questions whether a user is in a group, waiting for the nodes' answers.
    questions: Mutex<HashMap<u64, Arc<user_groups::Question>>>,
    /// Connections still to join their user's groups (the first read failed).
    pending_restores: user_groups::PendingRestores,
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
    /// Their sending side (the backplane holds a clone).
    pub inbound_tx: Inbound,
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
    /// Delivery positions, history and idempotency settings.
    pub delivery: Delivery,
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
            meters: parts
                .hubs
                .iter()
                .map(|h| crate::metrics::HubMeters::new(h.name()))
                .collect(),
            hubs: parts.hubs,
            registry: Registry::default(),
            backplane: parts.backplane,
            reconcile: reconcile_tx,
            limits: parts.limits,
            timeouts: parts.timeouts,
            flows: parts.flows,
            delivery: parts.delivery,
            inbound_tx: parts.inbound_tx,
            suppressions: crate::guard::Suppressions::default(),
            heads: Mutex::new(HashMap::new()),
            progress: crate::guard::Coalescer::default(),
            draining: AtomicBool::new(false),
            needs_resync: AtomicBool::new(false),
            next_nonce: AtomicU64::new(1),
            received: AtomicU64::new(0),
            probes: Mutex::new(HashMap::new()),
            acks: Mutex::new(HashMap::new()),
            handoffs: Mutex::new(HashMap::new()),
            bridges: Mutex::new(HashMap::new()),
            transport_replies: Mutex::new(HashMap::new()),
            endings: Mutex::default(),
            questions: Mutex::new(HashMap::new()),
            pending_restores: Mutex::default(),
            stop: parts.stop,
            tasks: TaskTracker::new(),
        });
        for rx in parts.inbound {
            node.tasks
                .spawn(dispatch::dispatch_worker(node.clone(), rx));
        }
        node.tasks
            .spawn(subscriptions::subscription_task(node.clone(), reconcile_rx));
        node.tasks
            .spawn(background::event_task(node.clone(), parts.events));
        node.tasks.spawn(background::gauge_task(node.clone()));
        node.tasks.spawn(background::user_groups_task(node.clone()));
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

    /// The delivery series of hub `hub` (an index into [`Self::hubs`]).
    pub fn meters(&self, hub: usize) -> &crate::metrics::HubMeters {
        &self.meters[hub]
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
}
