//! A message going out on a positioned channel, and what became of it.
//!
//! One backplane step (one Lua call on Redis, one critical section in process) does all of
//! it: the idempotency check, the guard, the next delivery position, the history entry and
//! the publish, so none of them can happen without the others.

use std::time::Duration;

use bytes::Bytes;

use crate::envelope::Position;

/// How much of each channel's stream the backplane keeps, so a node that missed messages
/// (its subscriber was away, or its dispatch queue was full) can fill the gap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistorySettings {
    /// Most messages kept per channel (0: none; gaps are then only counted).
    pub messages: usize,
    /// Most bytes kept per channel.
    pub bytes: usize,
    /// A channel's history is dropped this long after its last publish.
    pub ttl: Duration,
    /// A channel's position counter is dropped this long after its last publish; the next
    /// publish starts a new epoch. Not shorter than `ttl`.
    pub position_ttl: Duration,
}

/// A condition checked in the same step as the publish.
#[derive(Debug, Clone, Copy)]
pub enum PublishGuard<'a> {
    /// Publish unconditionally.
    None,
    /// Publish unless this done-marker key exists (progress after a terminal event).
    UnlessDone(&'a str),
    /// Publish if this token bucket has a token (storm protection).
    Rate {
        /// The bucket's key.
        bucket: &'a str,
        /// Tokens added per second.
        per_second: f64,
        /// Most tokens held.
        burst: f64,
    },
}

/// A publisher's `Idempotency-Key`, and what identifies the request it came with.
#[derive(Debug, Clone, Copy)]
pub struct Idempotency<'a> {
    /// Where the record lives (scoped by publisher; see [`crate::keys::Keys::idempotency`]).
    pub key: &'a str,
    /// A digest of the request (audience, target, arguments): the same key with another
    /// request is refused.
    pub fingerprint: &'a str,
    /// The request's correlation id, answered again to a repeat.
    pub correlation: &'a str,
    /// How long a repeat is recognised.
    pub ttl: Duration,
}

/// One message for a channel.
#[derive(Debug, Clone)]
pub struct Publish<'a> {
    /// The channel.
    pub channel: &'a str,
    /// The envelope before its position ([`crate::envelope::Envelope::head`]).
    pub head: Bytes,
    /// The envelope's body: the client record.
    pub body: Bytes,
    /// Whether the channel keeps history (per hub).
    pub history: bool,
    /// The condition.
    pub guard: PublishGuard<'a>,
    /// The publisher's idempotency key, if it sent one.
    pub idempotency: Option<Idempotency<'a>>,
}

/// What became of a [`Publish`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    /// Published at `position`; `nodes` were subscribed.
    Sent {
        /// Nodes that took it.
        nodes: usize,
        /// Its delivery position.
        position: Position,
    },
    /// The guard held it back.
    Suppressed,
    /// The idempotency key was seen before: nothing was published now.
    Repeat(Recorded),
}

/// What the first request with an idempotency key did, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// Its fingerprint.
    pub fingerprint: String,
    /// Its correlation id.
    pub correlation: String,
    /// Nodes that took it; `None` when it was suppressed.
    pub nodes: Option<usize>,
}

impl Recorded {
    /// The stored form: `{fingerprint}|{correlation}|{nodes, or -1}`.
    pub fn render(fingerprint: &str, correlation: &str, nodes: Option<usize>) -> String {
        let nodes = nodes.map_or_else(|| "-1".to_owned(), |n| n.to_string());
        format!("{fingerprint}|{correlation}|{nodes}")
    }

    /// Parses the stored form (correlation ids may hold `|`; the other two parts cannot).
    pub fn parse(raw: &str) -> Option<Self> {
        let (fingerprint, rest) = raw.split_once('|')?;
        let (correlation, nodes) = rest.rsplit_once('|')?;
        let nodes = match nodes {
            "-1" => None,
            n => Some(n.parse().ok()?),
        };
        Some(Self {
            fingerprint: fingerprint.to_owned(),
            correlation: correlation.to_owned(),
            nodes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_with_any_correlation_id() {
        for (corr, nodes) in [("c1", Some(3)), ("a|b|c", None), ("", Some(0))] {
            let raw = Recorded::render("f00d", corr, nodes);
            assert_eq!(
                Recorded::parse(&raw),
                Some(Recorded {
                    fingerprint: "f00d".into(),
                    correlation: corr.into(),
                    nodes
                })
            );
        }
        assert_eq!(Recorded::parse("junk"), None);
    }
}
