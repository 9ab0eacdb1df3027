//! Every metric name, its type, unit and help, in one place.
//!
//! Labels come only from closed sets (hub names from configuration, the event targets a
//! hub declares with any other target as `other` — see [`crate::events::target_label`] —
//! outcomes, reasons): never group names, user ids or connection ids.

use std::sync::OnceLock;

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Histogram: publish request received until the backplane accepted it. Labels: hub, outcome.
pub const PUBLISH_DURATION: &str = "hubcast_publish_duration_seconds";
/// Histogram: publish time until written to the client socket. Label: hub.
pub const DELIVERY_LAG: &str = "hubcast_delivery_lag_seconds";
/// Counter: events accepted for publishing. Labels: hub, target.
pub const EVENTS_PUBLISHED: &str = "hubcast_events_published_total";
/// Counter: messages written to client sockets. Label: hub.
pub const MESSAGES_DELIVERED: &str = "hubcast_messages_delivered_total";
/// Counter: messages not delivered. Labels: hub, reason.
pub const DELIVERY_FAILURES: &str = "hubcast_delivery_failures_total";
/// Gauge: open connections on this node. Label: hub.
pub const CONNECTIONS: &str = "hubcast_connections";
/// Gauge: groups with at least one member on this node. Label: hub.
pub const LOCAL_GROUPS: &str = "hubcast_local_groups";
/// Counter: connections closed by the server. Labels: hub, reason.
pub const CONNECTIONS_CLOSED: &str = "hubcast_connections_closed_total";
/// Counter: events not sent by the flows' throttles. Labels: hub, target, rule
/// (`rate_limit`, `coalesce`, `after_terminal`).
pub const THROTTLED_EVENTS: &str = "hubcast_throttled_events_total";
/// Counter: publishes whose arguments do not match their event contract. Labels: hub,
/// target.
pub const SCHEMA_MISMATCHES: &str = "hubcast_schema_mismatches_total";
/// Counter: budget alerts sent. Label: threshold (percent).
pub const BUDGET_ALERTS: &str = "hubcast_budget_alerts_total";
/// Gauge: groups of a hub that have members, cluster-wide (refreshed every 5 s). Label: hub.
pub const GROUPS: &str = "hubcast_groups";
/// Gauge: group memberships of a hub, cluster-wide (refreshed every 5 s). Label: hub.
pub const GROUP_MEMBERS: &str = "hubcast_group_members";
/// Gauge: 1 when this node's backplane round trip works and it is not draining.
pub const READY: &str = "hubcast_ready";
/// Counter: connection attempts refused (credential, origin, limits). Labels: hub, reason.
pub const CONNECTIONS_REFUSED: &str = "hubcast_connections_refused_total";
/// Counter: publish API requests refused before publishing (401, 429). Label: reason.
pub const PUBLISHES_REFUSED: &str = "hubcast_publishes_refused_total";
/// Counter: client invocations refused. Labels: hub, reason.
pub const INVOCATIONS_REFUSED: &str = "hubcast_invocations_refused_total";
/// Counter: HTTP requests. Labels: route (template), status.
pub const HTTP_REQUESTS: &str = "hubcast_http_requests_total";
/// Gauge: backplane channels this node is subscribed to.
pub const BACKPLANE_SUBSCRIPTIONS: &str = "hubcast_redis_subscriptions";
/// Counter: times the Redis pub/sub connection was re-established.
pub const REDIS_RECONNECTS: &str = "hubcast_redis_reconnects_total";
/// Counter, by hub and `from` (`same_node`, `other_node`): stateful-reconnect
/// connections resumed on a new transport.
pub const CONNECTIONS_RESUMED: &str = "hubcast_connections_resumed_total";
/// Counter: what became of users' group memberships beyond their current connections.
/// Labels: hub, outcome (`evicted`: a user's bound pushed an older record out;
/// `ended`: a ttl ran out and the user's connections here left the group;
/// `restore_failed`: a new connection could not read or join its user's groups;
/// `join_refused`: a connection was in as many groups as allowed).
pub const USER_GROUP_MEMBERSHIPS: &str = "hubcast_user_group_memberships_total";
/// The outcomes of [`USER_GROUP_MEMBERSHIPS`].
pub const USER_GROUP_OUTCOMES: [&str; 4] = ["evicted", "ended", "restore_failed", "join_refused"];
/// Gauge, by `version`: always 1; which build runs.
pub const BUILD_INFO: &str = "hubcast_build_info";
/// Counter: bytes written to client WebSockets (frames, headers included).
pub const WEBSOCKET_SENT_BYTES: &str = "hubcast_websocket_sent_bytes_total";
/// Counter: bytes read from client WebSockets.
pub const WEBSOCKET_RECEIVED_BYTES: &str = "hubcast_websocket_received_bytes_total";
/// Counter, by hub: connections opened (handshake done, registered).
pub const CONNECTIONS_OPENED: &str = "hubcast_connections_opened_total";
/// Histogram, by hub: how long connections lasted, from their handshake to their end.
pub const CONNECTION_DURATION: &str = "hubcast_connection_duration_seconds";
/// Gauge: messages waiting in this node's connections' outbound queues.
pub const OUTBOUND_QUEUED: &str = "hubcast_outbound_queued_messages";
/// Counter, by command: Redis commands that failed (refused, timed out, or lost).
pub const REDIS_COMMAND_ERRORS: &str = "hubcast_redis_command_errors_total";
/// Counter: times Sentinel named a new master and the node followed it.
pub const REDIS_MASTER_CHANGES: &str = "hubcast_redis_master_changes_total";
/// Counter: sharded channels a Redis Cluster shard gave up (its slot moved, or the
/// shard failed over) that the node subscribed again and caught up from history.
pub const REDIS_CHANNELS_MOVED: &str = "hubcast_redis_channels_moved_total";
/// Histogram: Redis command duration. Label: command.
pub const REDIS_COMMAND_DURATION: &str = "hubcast_redis_command_duration_seconds";
/// Counter: dead nodes whose memberships this node removed.
pub const NODES_REAPED: &str = "hubcast_nodes_reaped_total";
/// Counter, by hub: messages a node missed on a channel (its subscriber was away, or its
/// dispatch queue was full) and then delivered from the channel's history.
pub const HISTORY_RECOVERED: &str = "hubcast_history_recovered_total";
/// Counter, by outcome (`unknown`, `not_sent`): publishes answered 503 because the
/// backplane could not take them.
pub const PUBLISHES_UNAVAILABLE: &str = "hubcast_publishes_unavailable_total";
/// Counter: publishes answered as a repeat of an earlier one with the same
/// `Idempotency-Key` (not sent again).
pub const PUBLISHES_REPEATED: &str = "hubcast_publishes_repeated_total";

/// Counter, by listener (`public`, `metrics`) and reason (`max_open_sockets`,
/// `accept_error`): TCP connections refused before HTTP (accepted and closed at once, or
/// an accept that failed, such as out of file descriptors).
pub const HTTP_CONNECTIONS_REFUSED: &str = "hubcast_http_connections_refused_total";
/// Counter, by listener and reason (`header_read`, `idle`, `body_read`): HTTP connections
/// closed, or requests answered 408, because the client was too slow or silent.
pub const HTTP_TIMEOUTS: &str = "hubcast_http_timeouts_total";
/// Gauge, by listener: TCP connections open (WebSockets included).
pub const HTTP_OPEN_SOCKETS: &str = "hubcast_http_open_sockets";

/// HTTP refusal reason: the listener holds `limits.max_open_sockets` connections.
pub const REASON_MAX_OPEN_SOCKETS: &str = "max_open_sockets";
/// HTTP refusal reason: accepting failed (out of file descriptors, say); the loop backs off.
pub const REASON_ACCEPT_ERROR: &str = "accept_error";
/// HTTP timeout reason: the request head did not arrive within `timeouts.header_read_ms`.
pub const REASON_HEADER_READ: &str = "header_read";
/// HTTP timeout reason: a keep-alive connection sat idle for `timeouts.http_idle_ms`.
pub const REASON_IDLE: &str = "idle";
/// HTTP timeout reason: a request body did not arrive within `timeouts.body_read_ms`.
pub const REASON_BODY_READ: &str = "body_read";

/// Failure reason: a connection's outbound queue was full (in messages or in bytes); it
/// was closed.
pub const REASON_SLOW_CONSUMER: &str = "slow_consumer";
/// Failure reason: writing to the socket failed or timed out.
pub const REASON_WRITE_ERROR: &str = "write_error";
/// Failure reason: a dispatch shard's queue was full; the message was dropped on this node.
pub const REASON_DISPATCH_QUEUE_FULL: &str = "dispatch_queue_full";
/// Failure reason: the connection was closing or had gone when the message arrived, or
/// the message was still queued when it closed.
pub const REASON_CONNECTION_CLOSED: &str = "connection_closed";
/// Failure reason: a coalesced progress event could not be published (backplane down).
pub const REASON_PUBLISH_FAILED: &str = "publish_failed";
/// Failure reason: a backplane payload could not be decoded.
pub const REASON_BAD_ENVELOPE: &str = "bad_envelope";
/// Failure reason: messages a node missed on a channel were no longer in its history
/// (counted once per local member).
pub const REASON_BACKPLANE_GAP: &str = "backplane_gap";
/// Failure reason: messages kept for a stateful connection whose transport dropped and
/// that no new transport resumed within the reconnect window.
pub const REASON_RESUME_EXPIRED: &str = "resume_expired";

/// Refusal reason: a handshake was refused because its credential already had the most
/// pending handshakes allowed (`admission.max_pending_handshakes_per_credential`).
pub const REFUSED_HANDSHAKES_PER_CREDENTIAL: &str = "handshakes_per_credential";
/// Refusal reason: a handshake was refused because its source address already had the
/// most pending handshakes allowed (`admission.max_pending_handshakes_per_source`).
pub const REFUSED_HANDSHAKES_PER_SOURCE: &str = "handshakes_per_source";
/// Refusal reason: a credential longer than the connect proxy is asked about.
pub const REFUSED_CREDENTIAL_TOO_LONG: &str = "credential_too_long";
/// Refusal reason: the connect proxy had the most calls in flight allowed.
pub const REFUSED_AUTH_BACKEND_BUSY: &str = "auth_backend_busy";
/// Refusal reason: a token (or auth-backend answer) whose user id cannot be used.
pub const REFUSED_UNUSABLE_USER: &str = "unusable_user";
/// Refusal reason: a connection token that already opened a connection.
pub const REFUSED_CONNECTION_TOKEN_REUSED: &str = "connection_token_reused";
/// Refusal reason: a connection token issued for another hub or identity.
pub const REFUSED_CONNECTION_TOKEN_MISMATCH: &str = "connection_token_mismatch";

/// Buckets for latency histograms, in seconds: 50 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 10.0,
];

/// Buckets for connection lifetimes, in seconds: 1 s to a day.
const DURATION_BUCKETS: &[f64] = &[
    1.0,
    10.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    4.0 * 3600.0,
    12.0 * 3600.0,
    86_400.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide Prometheus recorder once and returns its handle. `None` when
/// another recorder was installed first (embedding); metrics are then not served.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(CONNECTION_DURATION.into()), DURATION_BUCKETS)
                .ok()?
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .ok()?
                .install_recorder()
                .ok()?;
            describe();
            Some(handle)
        })
        .clone()
}

/// One hub's delivery and publish series, registered once so the fan-out and publish
/// paths update them without building label strings or looking them up per message.
#[derive(Debug)]
pub struct HubMeters {
    /// The hub's name, the `hub` label.
    hub: String,
    /// Publish durations of accepted publishes.
    pub publish_accepted: metrics::Histogram,
    /// Publish durations of refused publishes.
    pub publish_refused: metrics::Histogram,
    /// Events published, by target label (a bounded set: see `events::target_label`).
    events: std::sync::RwLock<std::collections::HashMap<String, metrics::Counter>>,
    /// Messages written to client sockets.
    pub delivered: metrics::Counter,
    /// Publish time until written.
    pub lag: metrics::Histogram,
    /// Not queued: the connection was closing.
    pub connection_closed: metrics::Counter,
    /// Not queued: the connection's queue was full (it is closed).
    pub slow_consumer: metrics::Counter,
    /// Not written: the socket failed or timed out.
    pub write_error: metrics::Counter,
}

impl HubMeters {
    /// The series of hub `hub`.
    pub fn new(hub: &str) -> Self {
        let failures = |reason: &'static str| metrics::counter!(DELIVERY_FAILURES, "hub" => hub.to_owned(), "reason" => reason);
        let publish = |outcome: &'static str| metrics::histogram!(PUBLISH_DURATION, "hub" => hub.to_owned(), "outcome" => outcome);
        Self {
            hub: hub.to_owned(),
            publish_accepted: publish("accepted"),
            publish_refused: publish("refused"),
            events: std::sync::RwLock::default(),
            delivered: metrics::counter!(MESSAGES_DELIVERED, "hub" => hub.to_owned()),
            lag: metrics::histogram!(DELIVERY_LAG, "hub" => hub.to_owned()),
            connection_closed: failures(REASON_CONNECTION_CLOSED),
            slow_consumer: failures(REASON_SLOW_CONSUMER),
            write_error: failures(REASON_WRITE_ERROR),
        }
    }

    /// The events-published counter of a target label, registered on its first use.
    pub fn events_published(&self, label: &str) -> metrics::Counter {
        if let Some(c) = self
            .events
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(label)
        {
            return c.clone();
        }
        let counter = metrics::counter!(EVENTS_PUBLISHED, "hub" => self.hub.clone(), "target" => label.to_owned());
        self.events
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(label.to_owned())
            .or_insert(counter)
            .clone()
    }

    /// Counts `count` deliveries of a message published at `published_at_micros`,
    /// written at `now_micros`.
    pub fn delivered(&self, count: u64, published_at_micros: u64, now_micros: u64) {
        self.delivered.increment(count);
        if published_at_micros > 0 {
            let lag = now_micros.saturating_sub(published_at_micros) as f64 / 1e6;
            self.lag.record_many(lag, count as usize);
        }
    }
}

/// Registers every series with fixed labels at zero, so dashboards and alerts see them
/// before the first event.
pub fn init_series(hubs: &[&str]) {
    for hub in hubs {
        let h = (*hub).to_owned();
        metrics::gauge!(CONNECTIONS, "hub" => h.clone()).increment(0.0);
        metrics::gauge!(LOCAL_GROUPS, "hub" => h.clone()).set(0.0);
        metrics::gauge!(GROUPS, "hub" => h.clone()).set(0.0);
        metrics::gauge!(GROUP_MEMBERS, "hub" => h.clone()).set(0.0);
        metrics::counter!(MESSAGES_DELIVERED, "hub" => h.clone()).increment(0);
        for reason in [
            REASON_SLOW_CONSUMER,
            REASON_WRITE_ERROR,
            REASON_DISPATCH_QUEUE_FULL,
            REASON_BAD_ENVELOPE,
            REASON_PUBLISH_FAILED,
            REASON_CONNECTION_CLOSED,
            REASON_BACKPLANE_GAP,
            REASON_RESUME_EXPIRED,
        ] {
            metrics::counter!(DELIVERY_FAILURES, "hub" => h.clone(), "reason" => reason)
                .increment(0);
        }
        metrics::counter!(HISTORY_RECOVERED, "hub" => h.clone()).increment(0);
        for from in ["same_node", "other_node"] {
            metrics::counter!(CONNECTIONS_RESUMED, "hub" => h.clone(), "from" => from).increment(0);
        }
        for outcome in USER_GROUP_OUTCOMES {
            metrics::counter!(USER_GROUP_MEMBERSHIPS, "hub" => h.clone(), "outcome" => outcome)
                .increment(0);
        }
    }
    metrics::gauge!(BACKPLANE_SUBSCRIPTIONS).increment(0.0);
    metrics::gauge!(READY).increment(0.0);
    metrics::counter!(REDIS_RECONNECTS).increment(0);
    metrics::counter!(REDIS_MASTER_CHANGES).increment(0);
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    metrics::counter!(WEBSOCKET_SENT_BYTES).increment(0);
    metrics::counter!(WEBSOCKET_RECEIVED_BYTES).increment(0);
    metrics::gauge!(OUTBOUND_QUEUED).set(0.0);
    metrics::counter!(REDIS_CHANNELS_MOVED).increment(0);
    metrics::counter!(NODES_REAPED).increment(0);
    metrics::counter!(PUBLISHES_REPEATED).increment(0);
    for outcome in ["unknown", "not_sent"] {
        metrics::counter!(PUBLISHES_UNAVAILABLE, "outcome" => outcome).increment(0);
    }
    for reason in ["unauthorized", "rate_limited"] {
        metrics::counter!(PUBLISHES_REFUSED, "reason" => reason).increment(0);
    }
}

fn describe() {
    describe_counter!(
        USER_GROUP_MEMBERSHIPS,
        "Users' group memberships beyond their connections, by what became of them."
    );
    describe_counter!(
        REDIS_RECONNECTS,
        "Times the Redis pub/sub connection was re-established."
    );
    describe_gauge!(
        BUILD_INFO,
        "Always 1; the version label says which build runs."
    );
    describe_counter!(
        WEBSOCKET_SENT_BYTES,
        "Bytes written to client WebSockets, frame headers included."
    );
    describe_counter!(
        WEBSOCKET_RECEIVED_BYTES,
        "Bytes read from client WebSockets."
    );
    describe_counter!(
        CONNECTIONS_OPENED,
        "Connections opened (handshake done and registered), by hub."
    );
    describe_histogram!(
        CONNECTION_DURATION,
        "How long connections lasted, from their handshake to their end, by hub."
    );
    describe_gauge!(
        OUTBOUND_QUEUED,
        "Messages waiting in this node's connections' outbound queues."
    );
    describe_counter!(
        REDIS_COMMAND_ERRORS,
        "Redis commands that failed (refused, timed out or lost), by command."
    );
    describe_counter!(
        CONNECTIONS_RESUMED,
        "Stateful-reconnect connections resumed on a new transport, by hub and from (same_node, other_node)."
    );
    describe_counter!(
        REDIS_MASTER_CHANGES,
        "Times Sentinel named a new master and the node followed it."
    );
    describe_counter!(
        REDIS_CHANNELS_MOVED,
        "Sharded channels a Redis Cluster shard gave up (slot moved, failover) that the node subscribed again and caught up."
    );
    describe_counter!(
        NODES_REAPED,
        "Dead nodes whose memberships this node removed."
    );
    describe_counter!(
        HISTORY_RECOVERED,
        "Messages this node missed on a channel and delivered late from the channel's history."
    );
    describe_counter!(
        PUBLISHES_UNAVAILABLE,
        "Publishes answered 503: outcome unknown (sent, no answer) or not_sent."
    );
    describe_counter!(
        PUBLISHES_REPEATED,
        "Publishes recognised as a retry by their Idempotency-Key and not sent again."
    );
    describe_histogram!(
        REDIS_COMMAND_DURATION,
        Unit::Seconds,
        "Redis command duration, by command."
    );
    describe_gauge!(GROUPS, "Groups with members, cluster-wide.");
    describe_gauge!(GROUP_MEMBERS, "Group memberships, cluster-wide.");
    describe_gauge!(
        READY,
        "1 when the backplane round trip works and the node is not draining."
    );
    describe_counter!(
        SCHEMA_MISMATCHES,
        "Publishes whose arguments do not match their event contract."
    );
    describe_counter!(
        THROTTLED_EVENTS,
        "Events not sent by the flows' throttles, by rule."
    );
    describe_counter!(BUDGET_ALERTS, "Budget alerts sent, by threshold.");
    describe_counter!(
        CONNECTIONS_REFUSED,
        "Connection attempts refused, by reason."
    );
    describe_counter!(
        PUBLISHES_REFUSED,
        "Publish API requests refused before publishing, by reason."
    );
    describe_histogram!(
        PUBLISH_DURATION,
        Unit::Seconds,
        "Publish request received until the backplane accepted it."
    );
    describe_histogram!(
        DELIVERY_LAG,
        Unit::Seconds,
        "Publish time until the message was written to the client socket."
    );
    describe_counter!(
        EVENTS_PUBLISHED,
        "Events accepted for publishing, by hub and target."
    );
    describe_counter!(MESSAGES_DELIVERED, "Messages written to client sockets.");
    describe_counter!(DELIVERY_FAILURES, "Messages not delivered, by reason.");
    describe_gauge!(CONNECTIONS, "Open client connections on this node.");
    describe_gauge!(
        LOCAL_GROUPS,
        "Groups with at least one member on this node."
    );
    describe_counter!(
        CONNECTIONS_CLOSED,
        "Connections closed by the server, by reason."
    );
    describe_counter!(
        INVOCATIONS_REFUSED,
        "Client invocations refused, by reason."
    );
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests, by route template and status."
    );
    describe_counter!(
        HTTP_CONNECTIONS_REFUSED,
        "TCP connections refused before HTTP, by listener and reason."
    );
    describe_counter!(
        HTTP_TIMEOUTS,
        "HTTP connections closed or requests answered 408 for a slow or silent client, by listener and reason."
    );
    describe_gauge!(
        HTTP_OPEN_SOCKETS,
        "TCP connections open on a listener, WebSockets included."
    );
    describe_gauge!(
        BACKPLANE_SUBSCRIPTIONS,
        "Backplane channels this node is subscribed to."
    );
}
