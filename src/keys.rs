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
//! | `{p}:throttle:breaker:{h}` | hash | a webhook URL's breaker state and when it opened (`h`: hex SHA-256 of the exact URL) |
//! | `{p}:throttle:breaker:{h}:failures` | sorted set | failure times in the breaker window |
//! | `{p}:throttle:task:{kind}:{id}:done` | string, TTL | a task reached a terminal state: later progress is dropped |
//! | `{p}:throttle:rate:{hub}:{h}` | hash, TTL | token bucket of a storm-protection rule for one group and target (`h`: hex SHA-256 of both) |
//!
//! The Lua scripts in [`crate::backplane::redis`] build `{p}:{hub}:members:{g}`,
//! `{p}:{hub}:groups` and `{p}:conn:{c}` themselves (from the prefix and the hash's
//! fields) when they remove a connection; they follow the same patterns.
//!
//! A part a client or publisher chooses and that may hold `:` (a URL, a group name, a
//! target) is hashed into the name when the name has more than one such part or a fixed
//! suffix after it: otherwise the URL `X:failures` would name URL `X`'s failure list, and
//! group `a:b` with target `c` the bucket of group `a` with target `b:c`.
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

    /// Circuit-breaker state of a webhook URL, exactly as sent: two URLs that differ in
    /// any byte have two breakers, even when their group names coincide.
    pub fn breaker(&self, url: &str) -> String {
        format!("{}:throttle:breaker:{}", self.prefix, digest(&[url]))
    }

    /// Failure times in a webhook URL's breaker window.
    pub fn breaker_failures(&self, url: &str) -> String {
        format!(
            "{}:throttle:breaker:{}:failures",
            self.prefix,
            digest(&[url])
        )
    }

    /// Marker of a task that reached a terminal state.
    pub fn task_done(&self, kind: &str, task: &str) -> String {
        format!("{}:throttle:task:{kind}:{task}:done", self.prefix)
    }

    /// Token bucket of a storm-protection rule for one group and target. Group and
    /// target may hold `:`, so they are hashed together; the hub (which cannot) stays
    /// readable, for an operator looking at one hub's buckets.
    pub fn rate(&self, hub: &str, group: &str, target: &str) -> String {
        format!(
            "{}:throttle:rate:{hub}:{}",
            self.prefix,
            digest(&[group, target])
        )
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

/// Hex of the SHA-256 of `parts`, each preceded by its length: no two different lists
/// of parts give the same bytes to hash, whatever `:` or other separators they hold.
fn digest(parts: &[&str]) -> String {
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
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

    #[test]
    fn webhook_keys_of_different_urls_never_meet() {
        let k = Keys::new("t1");
        let x = "https://h.example/a";
        let x_failures = "https://h.example/a:failures";
        // Before hashing, the second URL's breaker was the first one's failure list.
        assert_ne!(k.breaker(x_failures), k.breaker_failures(x));
        for (a, b) in [
            (x, x_failures),
            ("https://a.example/h", "https://a-example/h"),
        ] {
            let names = [
                k.breaker(a),
                k.breaker_failures(a),
                k.breaker(b),
                k.breaker_failures(b),
            ];
            for (i, n) in names.iter().enumerate() {
                assert!(n.starts_with("t1:throttle:breaker:"), "{n}");
                assert!(!names[i + 1..].contains(n), "{n} is named twice");
            }
        }
        assert_eq!(k.breaker(x), k.breaker(x), "stable");
        assert_eq!(
            k.breaker(x).len(),
            "t1:throttle:breaker:".len() + 64,
            "fixed size, whatever the URL"
        );
    }

    #[test]
    fn rate_buckets_do_not_depend_on_where_a_colon_falls() {
        let k = Keys::new("t1");
        assert_ne!(k.rate("tasks", "a:b", "c"), k.rate("tasks", "a", "b:c"));
        assert_ne!(k.rate("tasks", "ab", "c"), k.rate("tasks", "a", "bc"));
        assert_ne!(k.rate("tasks", "g", "t"), k.rate("spend", "g", "t"));
        assert!(k
            .rate("tasks", "g", "t")
            .starts_with("t1:throttle:rate:tasks:"));
    }
}
