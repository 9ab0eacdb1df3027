//! The publish path: encode the client record once, wrap it in an envelope and run one
//! backplane command, under the storm or done-marker guard.

use axum::extract::ws::Utf8Bytes;

use super::dispatch::deliver_to;
use super::{Audience, Guard, Node, NodeError, Reach};
use crate::config::RateRule;
use crate::envelope::{now_micros, Envelope, Kind};
use crate::ids::CorrelationId;
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
}
