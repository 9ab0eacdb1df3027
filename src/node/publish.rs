//! The publish path: encode the client record once, wrap it in an envelope and run one
//! backplane command, under the storm or done-marker guard.

use std::sync::Arc;

use super::dispatch::{bad_envelope, deliver_to};
use super::frames::Frames;
use super::{Audience, Guard, IdempotencyKey, Node, NodeError, Reach};
use crate::backplane::{Idempotency, Publish, PublishGuard, Published};
use crate::config::RateRule;
use crate::envelope::{now_micros, with_ids, Envelope, Kind};
use crate::ids::{ConnectionId, CorrelationId};
use crate::protocol::message;

impl Node {
    pub(super) fn storm_rule(&self, hub: &str, target: &str) -> Option<&RateRule> {
        self.flows
            .rate_limits
            .iter()
            .find(|r| r.target == target && r.hub.as_deref().is_none_or(|h| h == hub))
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
        idempotency: Option<&IdempotencyKey>,
    ) -> Result<Reach, NodeError> {
        self.publish_guarded(
            hub,
            audience,
            target,
            arguments_json,
            correlation,
            Guard::Storm,
            idempotency,
        )
        .await
    }

    /// [`Self::publish`] under a [`Guard`]. Either way the backplane runs one command,
    /// which also assigns the message's delivery position, keeps it in the channel's
    /// history and checks the idempotency key.
    ///
    /// # Errors
    /// As [`Self::publish`]; [`NodeError::IdempotencyConflict`] when the key came with
    /// another request before.
    #[allow(clippy::too_many_arguments)]
    pub async fn publish_guarded(
        &self,
        hub: usize,
        audience: &Audience,
        target: &str,
        arguments_json: &str,
        correlation: &CorrelationId,
        guard: Guard<'_>,
        idempotency: Option<&IdempotencyKey>,
    ) -> Result<Reach, NodeError> {
        self.publish_inner(
            hub,
            audience,
            target,
            arguments_json,
            correlation,
            guard,
            idempotency,
            &[],
        )
        .await
    }

    /// [`Self::publish`] to a hub or group, except to the `excluded` connections: the
    /// envelope carries their ids (encoded once with the record) and every receiving node
    /// skips them. Ignored for a user or one connection.
    ///
    /// # Errors
    /// As [`Self::publish_guarded`].
    #[allow(clippy::too_many_arguments)]
    pub async fn publish_excluding(
        &self,
        hub: usize,
        audience: &Audience,
        target: &str,
        arguments_json: &str,
        correlation: &CorrelationId,
        idempotency: Option<&IdempotencyKey>,
        excluded: &[ConnectionId],
    ) -> Result<Reach, NodeError> {
        let excluded = match audience {
            Audience::Hub | Audience::Group(_) => excluded,
            Audience::User(_) | Audience::Connection(_) => &[],
        };
        self.publish_inner(
            hub,
            audience,
            target,
            arguments_json,
            correlation,
            Guard::Storm,
            idempotency,
            excluded,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn publish_inner(
        &self,
        hub: usize,
        audience: &Audience,
        target: &str,
        arguments_json: &str,
        correlation: &CorrelationId,
        guard: Guard<'_>,
        idempotency: Option<&IdempotencyKey>,
        excluded: &[ConnectionId],
    ) -> Result<Reach, NodeError> {
        let hub_def = &self.hubs[hub];
        let hub_name = hub_def.name();
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
                let local = self.registry.connection(c).filter(|l| l.hub == hub);
                match local {
                    // Without a key there is nothing to remember: write it straight away.
                    Some(local) if idempotency.is_none() => {
                        let frame = Frames::new(record.as_bytes()).get(local.handle.protocol());
                        let delivered = match frame {
                            Some(frame) => deliver_to(
                                &self.meters[hub],
                                &local.handle,
                                c,
                                hub_name,
                                frame,
                                published_at,
                            ),
                            None => {
                                bad_envelope(
                                    hub_name,
                                    "record cannot be written in the connection's protocol",
                                );
                                false
                            }
                        };
                        return Ok(Reach {
                            nodes: 1,
                            local_connections: usize::from(delivered),
                            members: Some(1),
                            suppressed: false,
                            repeat_of: None,
                        });
                    }
                    Some(_) => (self.keys.node_channel(&self.id), Kind::Send, Some(c)),
                    None => {
                        let owner = self.remote_owner(hub, c).await?;
                        (self.keys.node_channel(&owner), Kind::Send, Some(c))
                    }
                }
            }
        };
        let (kind, body) = if kind == Kind::Deliver && !excluded.is_empty() {
            let ids = excluded.iter().map(|c| c.as_str().as_bytes());
            (Kind::DeliverExcept, with_ids(ids, record.as_bytes()).into())
        } else {
            (kind, bytes::Bytes::from(record.into_bytes()))
        };
        let local = if kind == Kind::Deliver || kind == Kind::DeliverExcept {
            let mut n = 0;
            self.registry.for_each_member(&channel, |m| {
                n += usize::from(!excluded.contains(&m.id));
            });
            n
        } else {
            0
        };
        let head = Envelope::head(
            kind,
            published_at,
            correlation.as_str().as_bytes(),
            connection.map_or(&[][..], |c| c.as_str().as_bytes()),
        );
        let bucket;
        let done;
        let backplane_guard = match (guard, audience) {
            (Guard::UnlessDone(kind, task), _) => {
                done = self.keys.task_done(kind, task, &channel);
                PublishGuard::UnlessDone(&done)
            }
            (Guard::Storm, Audience::Group(g)) => match self.storm_rule(hub_name, target) {
                Some(rule) => {
                    bucket = self.keys.rate(hub_name, g.as_str(), target);
                    PublishGuard::Rate {
                        bucket: &bucket,
                        per_second: rule.per_second,
                        burst: rule.burst.unwrap_or(rule.per_second),
                    }
                }
                None => PublishGuard::None,
            },
            (Guard::Storm, _) => PublishGuard::None,
        };
        let idem_key;
        let fingerprint;
        let idem = match idempotency {
            Some(k) => {
                idem_key = self.keys.idempotency(&k.scope, &k.key, &channel);
                let arguments = if k.exact { arguments_json } else { "" };
                fingerprint =
                    request_fingerprint(&channel, kind, connection, target, arguments, excluded);
                Some(Idempotency {
                    key: &idem_key,
                    fingerprint: &fingerprint,
                    correlation: correlation.as_str(),
                    ttl: self.delivery.idempotency(),
                })
            }
            None => None,
        };
        let published = self
            .backplane
            .publish_message(&Publish {
                channel: &channel,
                head,
                body,
                history: hub_def.spec.history,
                guard: backplane_guard,
                idempotency: idem,
            })
            .await?;
        let (nodes, repeat_of) = match published {
            Published::Sent { nodes, position } => {
                self.announce_epoch_end(&channel, position, correlation)
                    .await;
                (nodes, None)
            }
            Published::Suppressed => {
                let (rule, group) = match (guard, audience) {
                    (Guard::UnlessDone(..), _) => ("after_terminal", String::new()),
                    (_, Audience::Group(g)) => ("rate_limit", g.to_string()),
                    _ => ("rate_limit", String::new()),
                };
                self.suppressions.record(hub_def, &group, target, rule);
                return Ok(Reach {
                    nodes: 0,
                    local_connections: 0,
                    members: None,
                    suppressed: true,
                    repeat_of: None,
                });
            }
            Published::Repeat(first) => {
                if idem.is_some_and(|i| i.fingerprint != first.fingerprint) {
                    return Err(NodeError::IdempotencyConflict);
                }
                tracing::info!(hub = hub_name, channel = %channel, correlation_id = %first.correlation, "repeated publish (same Idempotency-Key) not sent again");
                let Some(nodes) = first.nodes else {
                    return Ok(Reach {
                        nodes: 0,
                        local_connections: 0,
                        members: None,
                        suppressed: true,
                        repeat_of: Some(first.correlation),
                    });
                };
                (nodes, Some(first.correlation))
            }
        };
        if kind == Kind::Send && nodes == 0 && repeat_of.is_none() {
            // The owner's subscriber is away: it fills the message from its control
            // channel's history when it is back, but the publisher should know.
            tracing::info!(hub = hub_name, channel = %channel, "send to a connection whose node is not subscribed now; it catches up from history when back");
        }
        let members = match audience {
            Audience::Group(g) if self.backplane.counts_are_local() => {
                self.backplane.member_count(hub_name, g.as_str()).await.ok()
            }
            Audience::Connection(_) => Some(1),
            _ => None,
        };
        Ok(Reach {
            nodes,
            local_connections: local,
            members,
            suppressed: false,
            repeat_of,
        })
    }
}

/// Most channels whose last published position a node remembers.
const MAX_HEADS: usize = 65_536;

impl Node {
    /// When `position` starts a new stream on `channel` (Redis lost its data) and this node
    /// published to the old one, tells the receivers how far the old one went: what a
    /// crash kept from them is then counted rather than lost silently. One extra command,
    /// only on an epoch change.
    async fn announce_epoch_end(
        &self,
        channel: &str,
        position: crate::envelope::Position,
        correlation: &CorrelationId,
    ) {
        let previous = {
            let mut heads = self.heads.lock().unwrap_or_else(|p| p.into_inner());
            if heads.len() >= MAX_HEADS && !heads.contains_key(channel) {
                heads.clear();
            }
            heads.insert(Arc::from(channel), position.clone())
        };
        let Some(old) = previous.filter(|old| old.epoch != position.epoch) else {
            return;
        };
        let marker = Envelope::encode(
            Kind::EpochEnd,
            now_micros(),
            correlation.as_str().as_bytes(),
            b"",
            &crate::envelope::Position::render(&old.epoch, old.seq),
        );
        // Recorded first: a receiver whose subscription is not back yet (a failover
        // moved the channel) misses the marker, and reads this when it catches up.
        if let Err(e) = self.backplane.record_epoch_end(channel, &old).await {
            tracing::warn!(channel, error = %e, "could not record where the channel's lost stream ended");
        }
        if let Err(e) = self.backplane.publish(channel, marker).await {
            tracing::warn!(channel, error = %e, "could not tell receivers where the channel's lost stream ended");
        }
    }
}

/// What makes two publishes the same request: audience, kind, target, arguments and
/// exclusions.
fn request_fingerprint(
    channel: &str,
    kind: Kind,
    connection: Option<&crate::ids::ConnectionId>,
    target: &str,
    arguments_json: &str,
    excluded: &[crate::ids::ConnectionId],
) -> String {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    // Only a send with exclusions hashes them, so other fingerprints stay as they were.
    for id in excluded {
        h.update(b"x");
        h.update((id.as_str().len() as u64).to_be_bytes());
        h.update(id.as_str().as_bytes());
    }
    for part in [
        channel.as_bytes(),
        &[kind as u8],
        connection.map_or(&b""[..], |c| c.as_str().as_bytes()),
        target.as_bytes(),
        arguments_json.as_bytes(),
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Node {
    /// What an earlier request with this idempotency key answered, if it is remembered.
    ///
    /// # Errors
    /// The backplane.
    pub async fn recall(&self, key: &IdempotencyKey) -> Result<Option<String>, NodeError> {
        let k = self.keys.idempotency_record(&k_scope(key), &key.key);
        Ok(self.backplane.recall(&k).await?)
    }

    /// Remembers what a request with this idempotency key answered, for the idempotency
    /// window.
    ///
    /// # Errors
    /// The backplane.
    pub async fn remember(&self, key: &IdempotencyKey, answer: &str) -> Result<(), NodeError> {
        let k = self.keys.idempotency_record(&k_scope(key), &key.key);
        Ok(self
            .backplane
            .remember(&k, answer, self.delivery.idempotency())
            .await?)
    }
}

/// Request-level records live apart from the per-message ones of the same key.
fn k_scope(key: &IdempotencyKey) -> String {
    format!("{}:request", key.scope)
}
