//! Every backplane channel and Redis key name, in one place.
//!
//! | name | type | purpose |
//! |---|---|---|
//! | `{p}:{hub}:group:{g}` | channel | fan-out to nodes holding ≥ 1 member of group `g` |
//! | `{p}:{hub}:user:{u}` | channel | fan-out to nodes holding ≥ 1 connection of user `u` |
//! | `{p}:{hub}:all` | channel | hub-wide broadcast (only for hubs that allow it) |
//! | `{p}:node:{n}` | channel | control messages to one node (join/leave/send/close a connection it owns, acks, readiness probes) |
//! | `{p}:{hub}:members:{g}` | set | connection ids in group `g` (cluster-wide counts) |
//! | `{p}:{hub}:groups` | set | groups of the hub that have members |
//! | `{p}:{hub}:memberships` | counter | group memberships of the hub (for the members gauge) |
//! | `{p}:conn:{c}` | hash | `node`, `hub`, `user` of connection `c`, and one `g:{group}` field per group |
//! | `{p}:node:{n}:conns` | set | connections owned by node `n` |
//! | `{p}:node:{n}:alive` | string, TTL | node `n`'s heartbeat; when it expires the node is dead |
//! | `{p}:nodes` | set | nodes that registered connections (the reaper's list) |
//! | `{p}:reap:{n}` | string, TTL | lock: the one node reaping dead node `n` |
//! | `{p}:node:{n}:gen` | string | the generation under which node `n`'s state is written; deleted when it is reaped |
//! | `{p}:pos:{c}` | hash, TTL | channel `c`'s delivery position: epoch `e` and last sequence `s` (`c` without the prefix) |
//! | `{p}:hist:{c}` | stream, TTL | channel `c`'s recent messages, entry id `{seq}-0` |
//! | `{p}:idem:{scope}:{k}` | string, TTL | what the first publish with idempotency key `k` did, per publisher scope (`k` hashed) |
//! | `{p}:throttle:budget:{vkey}` | set | budget thresholds already announced for a key |
//! | `{p}:throttle:health:{provider}` | hash | announced status, candidate status and its streak |
//! | `{p}:throttle:breaker:{url}` | hash | a webhook URL's breaker state and when it opened |
//! | `{p}:throttle:breaker:{url}:failures` | sorted set | failure times in the breaker window |
//! | `{p}:throttle:task:{kind}:{id}:done` | string, TTL | a task reached a terminal state: later progress is dropped |
//! | `{p}:throttle:rate:{hub}:{group}:{target}` | hash, TTL | token bucket of a storm-protection rule |
//!
//! The Lua scripts in [`crate::backplane::redis`] build `{p}:{hub}:members:{g}`,
//! `{p}:{hub}:groups` and `{p}:conn:{c}` themselves (from the prefix and the hash's
//! fields) when they remove a connection; they follow the same patterns.
//!
//! The prefix `{p}` is `--redis-prefix` (default `hubcast`), so clusters and tests sharing a
//! Redis never see each other's names.

/// Builds names under one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Names under `prefix`.
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Fan-out channel of a group.
    pub fn group_channel(&self, hub: &str, group: &str) -> String {
        format!("{}:{hub}:group:{group}", self.prefix)
    }

    /// Fan-out channel of a user's connections.
    pub fn user_channel(&self, hub: &str, user: &str) -> String {
        format!("{}:{hub}:user:{user}", self.prefix)
    }

    /// Broadcast channel of a hub.
    pub fn hub_channel(&self, hub: &str) -> String {
        format!("{}:{hub}:all", self.prefix)
    }

    /// Control channel of a node.
    pub fn node_channel(&self, node: &str) -> String {
        format!("{}:node:{node}", self.prefix)
    }

    /// Set of a group's member connection ids.
    pub fn members(&self, hub: &str, group: &str) -> String {
        format!("{}:{hub}:members:{group}", self.prefix)
    }

    /// Set of a hub's groups that have members.
    pub fn groups(&self, hub: &str) -> String {
        format!("{}:{hub}:groups", self.prefix)
    }

    /// Counter of a hub's group memberships, cluster-wide.
    pub fn memberships(&self, hub: &str) -> String {
        format!("{}:{hub}:memberships", self.prefix)
    }

    /// Hash describing a connection.
    pub fn connection(&self, connection: &str) -> String {
        format!("{}:conn:{connection}", self.prefix)
    }

    /// Set of a node's connections.
    pub fn node_connections(&self, node: &str) -> String {
        format!("{}:node:{node}:conns", self.prefix)
    }

    /// A node's heartbeat key.
    pub fn node_alive(&self, node: &str) -> String {
        format!("{}:node:{node}:alive", self.prefix)
    }

    /// Set of nodes that registered connections.
    pub fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }

    /// Reaping lock for a dead node.
    pub fn reap_lock(&self, node: &str) -> String {
        format!("{}:reap:{node}", self.prefix)
    }

    /// The generation under which a node's state is written.
    pub fn node_generation(&self, node: &str) -> String {
        format!("{}:node:{node}:gen", self.prefix)
    }

    /// Delivery position of a channel.
    pub fn position(&self, channel: &str) -> String {
        format!("{}:pos:{}", self.prefix, self.unprefixed(channel))
    }

    /// History stream of a channel.
    pub fn history(&self, channel: &str) -> String {
        format!("{}:hist:{}", self.prefix, self.unprefixed(channel))
    }

    /// Idempotency record of a publisher's key. The key is hashed: any bytes a client
    /// sends become a fixed-size name.
    pub fn idempotency(&self, scope: &str, key: &str) -> String {
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(key.as_bytes());
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        format!("{}:idem:{scope}:{hex}", self.prefix)
    }

    fn unprefixed<'a>(&self, channel: &'a str) -> &'a str {
        channel
            .strip_prefix(self.prefix.as_str())
            .and_then(|c| c.strip_prefix(':'))
            .unwrap_or(channel)
    }

    /// Budget thresholds announced for a virtual key.
    pub fn budget(&self, vkey: &str) -> String {
        format!("{}:throttle:budget:{vkey}", self.prefix)
    }

    /// Health hysteresis state of a provider.
    pub fn health(&self, provider: &str) -> String {
        format!("{}:throttle:health:{provider}", self.prefix)
    }

    /// Circuit-breaker state of a webhook URL.
    pub fn breaker(&self, url: &str) -> String {
        format!("{}:throttle:breaker:{url}", self.prefix)
    }

    /// Failure times in a webhook URL's breaker window.
    pub fn breaker_failures(&self, url: &str) -> String {
        format!("{}:throttle:breaker:{url}:failures", self.prefix)
    }

    /// Marker of a task that reached a terminal state.
    pub fn task_done(&self, kind: &str, task: &str) -> String {
        format!("{}:throttle:task:{kind}:{task}:done", self.prefix)
    }

    /// Token bucket of a storm-protection rule for one group and target.
    pub fn rate(&self, hub: &str, group: &str, target: &str) -> String {
        format!("{}:throttle:rate:{hub}:{group}:{target}", self.prefix)
    }

    /// The group of a group channel of `hub`, if `channel` is one.
    pub fn group_of_channel<'a>(&self, hub: &str, channel: &'a str) -> Option<&'a str> {
        channel
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(':')?
            .strip_prefix(hub)?
            .strip_prefix(":group:")
    }
}

/// The hub part of a channel name, for metric labels (`node` for node channels). Prefixes
/// hold no `:`, so the hub is the second segment.
pub fn hub_label(channel: &str) -> &str {
    channel.split(':').nth(1).unwrap_or("unknown")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_prefix_and_hub() {
        let k = Keys::new("t1");
        assert_eq!(k.group_channel("spend", "vkey-7"), "t1:spend:group:vkey-7");
        assert_eq!(k.user_channel("spend", "u"), "t1:spend:user:u");
        assert_eq!(k.hub_channel("spend"), "t1:spend:all");
        assert_eq!(k.node_channel("n1"), "t1:node:n1");
        assert_eq!(hub_label(&k.group_channel("spend", "a:b")), "spend");
        assert_eq!(
            k.group_of_channel("spend", &k.group_channel("spend", "a:b")),
            Some("a:b")
        );
        assert_eq!(
            k.group_of_channel("spend", &k.user_channel("spend", "u")),
            None
        );
        assert_eq!(k.members("spend", "g"), "t1:spend:members:g");
        assert_eq!(k.connection("c"), "t1:conn:c");
        let channel = k.group_channel("spend", "g");
        assert_eq!(k.position(&channel), "t1:pos:spend:group:g");
        assert_eq!(k.history(&channel), "t1:hist:spend:group:g");
        assert_eq!(k.node_generation("n1"), "t1:node:n1:gen");
        let idem = k.idempotency("s", "any key: with spaces");
        assert!(idem.starts_with("t1:idem:s:") && idem.len() == "t1:idem:s:".len() + 32);
    }
}
