//! # hubcast
//!
//! A real-time notification backplane. Clients connect with the official ASP.NET Core
//! SignalR clients (JSON hub protocol over WebSockets); services publish events over HTTP
//! to a group of a hub on any node; nodes fan out through a backplane (in-process for a
//! single node, Redis pub/sub for a cluster), so every node holding members of a group
//! delivers and no other node does.
//!
//! ## Layout
//!
//! From the top down: a module uses only modules below it (`tests/architecture.rs` checks
//! that no module imports one that imports it).
//!
//! | module | what it is |
//! |---|---|
//! | [`app`] | binds listeners, builds the node, runs until shutdown and owns the drain order |
//! | [`telemetry`] | logging set-up (human or JSON) |
//! | [`http`] | the HTTP/1.1 accept loop (timeouts, socket cap), negotiate, WebSocket upgrade, the publish API, the flow endpoints, probes; [`http::error::ApiError`] |
//! | [`session`] | one connection's task: handshake, the read/write/keep-alive loop |
//! | [`flows`] | budget alerts, provider-health hysteresis, task progress, webhook breakers (one file each) |
//! | [`node`] | the coordinator: membership, the publish path, dispatch, subscriptions, remote operations, background tasks |
//! | [`guard`] | the publish guards below node and flows: progress coalescing, storm-protection suppression records |
//! | [`backplane`] | channels and cluster state: the in-process bus, and Redis (pub/sub, sets, Lua, heartbeat, reaper) |
//! | [`connection`] | what the node holds of a connection: its bounded outbound queue with direct writes, close reasons, the per-user slot |
//! | [`events`] | typed event contracts (the gateway's DTOs), their JSON Schemas and the publish check |
//! | [`config`] | flags, `HUBCAST_*` variables and the TOML file (schema, defaults), validated into one [`config::Config`] |
//! | [`hub`] | hub definitions: group templates, client methods (as data), the gateway's seven defaults |
//! | [`auth`] | credentials: access keys and JWTs, client auth modes, single-use connection tokens, handshake admission, the bounded connect proxy |
//! | [`protocol`] | the SignalR wire protocol: framing, handshake, messages, negotiate (pure) |
//! | [`ws`] | the WebSocket itself (RFC 6455): the upgrade, frames built once per message, an incremental frame reader, the shared socket |
//! | [`envelope`] | the binary envelope carried on backplane channels |
//! | [`keys`] | every channel and key name |
//! | [`metrics`] | every metric name and help text |
//! | [`ids`] | validated names: groups, users, connection and correlation ids |
//!
//! ## How a message flows (publish to a group)
//!
//! 1. `POST /api/v1/hubs/{hub}/groups/{group}` with `{"target": …, "arguments": […]}`
//!    (`http/api/send.rs`) validates the hub, group, body and correlation id.
//! 2. [`node::Node::publish`] (`node/publish.rs`) encodes the SignalR Invocation record
//!    **once** and runs one backplane call on `{p}:{hub}:group:{group}`
//!    ([`backplane::Publish`]): the idempotency check, the guard, the channel's next
//!    delivery position, the history entry and the `PUBLISH`, in one Lua script. The 202
//!    reports how many nodes took it.
//! 3. The backplane delivers only to nodes subscribed to that channel. Invariant: a node is
//!    subscribed to a channel iff it holds at least one local member; the node's
//!    subscription task (`node/subscriptions.rs`) reconciles every first-join and
//!    last-leave against the registry.
//! 4. The receiving side hands the payload, without waiting, to a dispatch queue picked by
//!    hashing the channel (per-channel order kept; [`backplane::Inbound`]); a full queue
//!    drops it and queues a catch-up for the channel. The dispatch worker compares the
//!    message's position with the last one it delivered on that channel
//!    (`node/positions.rs`): a gap is filled from the channel's history first, a repeat is
//!    dropped.
//! 5. The dispatch worker (`node/dispatch.rs`) frames the record as a WebSocket frame
//!    **once** ([`ws::Frame`]) and hands the same bytes to each local member
//!    ([`connection::handle`]): written straight into the socket when nothing waits for
//!    that connection (on channels with at most 64 local members), else queued in its
//!    bounded queue; a full queue closes that connection as a slow consumer.
//! 6. The session (`session/`) writes what waited, one vectored write per batch, under a
//!    write timeout.
//!
//! ## Redis keys and channels
//!
//! | name | type | purpose |
//! |---|---|---|
//! | `{p}:{hub}:group:{g}` | channel | fan-out to nodes holding ≥ 1 member of group `g` |
//! | `{p}:{hub}:user:{u}` | channel | fan-out to nodes holding ≥ 1 connection of user `u` |
//! | `{p}:{hub}:all` | channel | hub-wide broadcast (hubs with `allow_broadcast` only) |
//! | `{p}:node:{n}` | channel | control to one node: send to / join / leave / close a connection it owns, acks, probes |
//! | `{p}:{hub}:members:{g}` | set | connection ids in group `g` |
//! | `{p}:{hub}:groups` | set | groups of the hub that have members |
//! | `{p}:conn:{c}` | hash | owning `node`, `hub`, `user`, and a `g:{group}` field per group |
//! | `{p}:node:{n}:conns` | set | connections owned by node `n` |
//! | `{p}:node:{n}:alive` | string, TTL | heartbeat; survivors reap a node whose key expired |
//! | `{p}:nodes` | set | live nodes, for the reaper |
//! | `{p}:reap:{n}` | string, TTL | lock: the one node reaping dead node `n` |
//! | `{p}:node:{n}:gen` | string | generation node `n`'s state is written under; the reaper deletes it |
//! | `{p}:pos:{c}` | hash, TTL | channel `c`'s delivery position: epoch and last sequence |
//! | `{p}:hist:{c}` | stream, TTL | channel `c`'s recent messages, by sequence |
//! | `{p}:idem:{scope}:{k}` | string, TTL | what the first publish with idempotency key `k` did |
//! | `{p}:throttle:budget:{vkey}`, `{p}:throttle:health:{provider}` | set, hash | the flows' announced thresholds and health state |
//! | `{p}:throttle:breaker:{h}`, `…:{h}:failures` | hash, sorted set | a webhook URL's breaker (`h`: hex SHA-256 of the exact URL) |
//! | `{p}:throttle:task:{kind}:{id}:done` | string, TTL | a task ended: later progress is dropped |
//! | `{p}:throttle:rate:{hub}:{h}` | hash, TTL | a storm-protection bucket (`h`: hex SHA-256 of group and target) |
//!
//! `{p}` is the prefix (`--redis-prefix`, default `hubcast`). [`keys`] owns every name.
//!
//! ## Outages and partitions
//!
//! While Redis is unreachable, clients stay connected and joins succeed locally; publishes
//! answer 503 (`outcome` `not_sent` or `unknown`) and `/readyz` fails. When the subscriber
//! connection is back, the node resubscribes every channel with local members, catches each
//! up from its history, and writes its connections and memberships again. A node reaped
//! while alive finds its generation key gone on its next heartbeat and writes its state
//! again; a drained node removes its own records.
//!
//! ## Delivery contract
//!
//! A 202 means the message reaches every member its audience had when it was accepted,
//! once and in order per channel, or is counted in `hubcast_delivery_failures_total` with
//! its reason (`backplane_gap` when history no longer held what a node missed) and logged.
//! A retry with the same `Idempotency-Key` is answered as the first and not sent again.

pub mod app;
pub mod auth;
pub mod backplane;
pub mod config;
pub mod connection;
pub mod envelope;
pub mod events;
pub mod flows;
pub mod guard;
pub mod http;
pub mod hub;
pub mod ids;
pub mod keys;
pub mod metrics;
pub mod node;
pub mod protocol;
pub mod session;
pub mod telemetry;
pub mod ws;
