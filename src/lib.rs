//! # hubcast
//!
//! A real-time notification backplane. Clients connect with the official ASP.NET Core
//! SignalR clients (JSON or MessagePack hub protocol over WebSockets); services publish
//! events over HTTP to a group of a hub on any node; nodes fan out through a backplane
//! (in-process for a single node, Redis pub/sub for a cluster), so every node holding
//! members of a group delivers and no other node does.
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
//! | [`http`] | the HTTP/1.1 accept loop (timeouts, socket cap), negotiate, WebSocket upgrade, Server-Sent Events and long polling (bridged into the same session), the publish API, the flow endpoints, probes; [`http::error::ApiError`] |
//! | [`mint`] | `hubcast token` and the API's `:generateToken`: a client token for a hub, with the key and claims nodes check |
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
//! | [`protocol`] | the SignalR wire protocol: framing, handshake, JSON and MessagePack messages, negotiate (pure) |
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
//!    **once** and runs one backplane call on `{p}:{hub}:group:{{group}}`
//!    ([`backplane::Publish`]): the idempotency check, the guard, the channel's next
//!    delivery position, the history entry and the `PUBLISH` (`SPUBLISH` on a Redis
//!    Cluster), in one Lua script on the channel's shard. The 202 reports how many nodes
//!    took it.
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
//!    **once** per hub protocol ([`ws::Frame`]; the MessagePack one transcoded from the
//!    JSON record only if a member speaks it) and hands the same bytes to each local member
//!    ([`connection::handle`]): written straight into the socket when nothing waits for
//!    that connection (on channels with at most 64 local members), else queued in its
//!    bounded queue; a full queue closes that connection as a slow consumer.
//! 6. The session (`session/`) writes what waited, one vectored write per batch, under a
//!    write timeout.
//!
//! ## Redis keys and channels
//!
//! One server, a Redis Cluster (`redis+cluster://`) or the master Sentinel names
//! (`redis+sentinel://`), see [`config::RedisTarget`]. On a cluster, fan-out uses
//! sharded pub/sub (SSUBSCRIBE/SPUBLISH), so each message is handled by the one shard
//! owning its channel's slot.
//!
//! | name | type | slot (hash tag) | purpose |
//! |---|---|---|---|
//! | `{p}:{hub}:group:{{g}}` | channel | `g` | fan-out to nodes holding ≥ 1 member of group `g` |
//! | `{p}:{hub}:user:{{u}}` | channel | `u` | fan-out to nodes holding ≥ 1 connection of user `u` |
//! | `{p}:{hub}:all:{{hub}}` | channel | `hub` | hub-wide broadcast (only for hubs that allow it) |
//! | `{p}:node:{{n}}` | channel | `n` | control messages to one node (join/leave/send/close a connection it owns, acks, readiness probes) |
//! | `{p}:pos:{c}` | hash, TTL | `c`'s | channel `c`'s delivery position: epoch `e`, last sequence `s`, the server it was written on `r`, where the previous stream ended `pe`, `ps` (`c` without the prefix) |
//! | `{p}:hist:{c}` | stream, TTL | `c`'s | channel `c`'s recent messages, entry id `{seq}-0` |
//! | `{p}:idem:{scope}:{k}:{tag}` | string, TTL | the channel's | what the first publish with idempotency key `k` (hashed) did, per publisher scope and channel |
//! | `{p}:idem:{scope}:{k}` | string, TTL | — | an idempotency record not tied to a channel: a whole flow request (scope `…:request`), a connection token's use |
//! | `{p}:throttle:task:{h}:done:{tag}` | string, TTL | the channel's | a task (`h`: hex SHA-256 of kind and id) reached a terminal state: its later progress on that channel is dropped |
//! | `{p}:throttle:rate:{hub}:{h}:{tag}` | hash, TTL | the group channel's | token bucket of a storm-protection rule for one group and target (`h`: hex SHA-256 of both) |
//! | `{p}:{hub}:members:{{g}}` | set | `g` | connection ids in group `g` (cluster-wide counts) |
//! | `{p}:{hub}:ugroups:{{u}}` | sorted set, TTL | `u` | groups user `u` was added to without a ttl, scored by when (ms); the 100 latest, each for a year |
//! | `{p}:{hub}:ugroups:{{u}}:ttl` | sorted set, TTL | `u` | groups user `u` was added to with a ttl, scored by when each ends (ms); at most 100 |
//! | `{p}:conn:{{c}}` | hash | `c` | `node`, `hub`, `user` of connection `c`, and one `g:{group}` field per group |
//! | `{p}:node:{{n}}:conns` | set | `n` | connections owned by node `n` |
//! | `{p}:node:{{n}}:alive` | string, TTL | `n` | node `n`'s heartbeat; when it expires the node is dead |
//! | `{p}:node:{{n}}:gen` | string | `n` | the generation under which node `n`'s state is written; deleted when it is reaped |
//! | `{p}:node:{{n}}:counts` | hash, TTL | `n` | node `n`'s group memberships per hub, as it last reported them |
//! | `{p}:reap:{{n}}` | string, TTL | `n` | lock: the one node reaping dead node `n` |
//! | `{p}:{hub}:groups` | set | — | groups of the hub that have members |
//! | `{p}:nodes` | set | — | nodes that registered connections (the reaper's list) |
//! | `{p}:throttle:budget:{vkey}` | set | — | budget thresholds already announced for a key |
//! | `{p}:throttle:health:{provider}` | hash | — | announced status, candidate status and its streak |
//! | `{p}:throttle:breaker:{{h}}` | hash | `h` | a webhook URL's breaker state and when it opened (`h`: hex SHA-256 of the exact URL) |
//! | `{p}:throttle:breaker:{{h}}:failures` | sorted set | `h` | failure times in the breaker window |
//!
//! `{{x}}` is `x` between literal braces, a Redis Cluster hash tag: every Lua script
//! names keys of one slot. What spans slots is written in ordered single-slot steps
//! (the table in [`backplane::redis`] gives the order and what repairs a step left
//! undone). `{p}` is the prefix (`--redis-prefix`, default `hubcast`). [`keys`] owns
//! every name.
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
//! On a Redis Cluster, a slot that moves or a master that fails over takes its
//! channels' subscriptions with it: the node subscribes them again on the new owner and
//! catches each up from its history (which moved or was replicated with it); publishes
//! to that slot answer 503 until a master serves it. Under Sentinel the node follows
//! the master the sentinels name. Where a channel can move, a position written on
//! another server starts a new epoch, so a promoted replica that lacks the newest
//! writes never reuses their sequence numbers.
//!
//! ## Stateful reconnect
//!
//! A connection negotiated with stateful reconnect outlives a dropped transport for the
//! reconnect window, and a new transport on any node resumes it: that node takes it over
//! from its owner ([`node::Node::take_over`], the owner's control channel), resends what the
//! client had not acknowledged ([`connection::replay`]) and fills each channel from history
//! after the owner's last delivered position (`node/resume.rs`).
//!
//! ## A user's groups
//!
//! Adding a user to a group through the REST API records it in the backplane
//! ([`backplane::user_groups`]: a year without a ttl, the user's 100 latest; or for the
//! ttl), and every connection the user opens joins its recorded groups before its
//! handshake is answered (`node/user_groups.rs`). A ttl that runs out takes the user's
//! connections out of the group on every node; `ttl=0` records nothing.
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
pub mod mint;
pub mod node;
pub mod protocol;
pub mod session;
pub mod telemetry;
pub mod ws;
