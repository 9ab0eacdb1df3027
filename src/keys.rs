//! Every backplane channel and Redis key name, in one place.
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
//! `{{x}}` is `x` between literal braces: a Redis Cluster hash tag. Every Lua script
//! names keys of one slot only, so each runs on one shard: a publish touches its
//! channel's position, history, idempotency record and guard, which all end in (or
//! contain) the channel's tag. What spans slots (a connection's record, its node's set,
//! a group's member set, the hub's group set) is written in ordered single-slot steps;
//! see [`crate::backplane::redis`] for the order and what repairs a step left undone.
//! Nothing before a tag may hold a brace, so parts a client chooses that come first
//! (a task id) are hashed.
//!
//! A part a client or publisher chooses and that may hold `:` (a URL, a group name, a
//! target) is hashed into the name when the name has more than one such part or a fixed
//! suffix after it: otherwise the URL `X:failures` would name URL `X`'s failure list, and
//! group `a:b` with target `c` the bucket of group `a` with target `b:c`.
//!
//! The prefix `{p}` is `--redis-prefix` (default `hubcast`; no braces), so clusters and
//! tests sharing a Redis never see each other's names.

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
        format!("{}:{hub}:group:{{{group}}}", self.prefix)
    }

    /// Fan-out channel of a user's connections.
    pub fn user_channel(&self, hub: &str, user: &str) -> String {
        format!("{}:{hub}:user:{{{user}}}", self.prefix)
    }

    /// Broadcast channel of a hub.
    pub fn hub_channel(&self, hub: &str) -> String {
        format!("{}:{hub}:all:{{{hub}}}", self.prefix)
    }

    /// Control channel of a node.
    pub fn node_channel(&self, node: &str) -> String {
        format!("{}:node:{{{node}}}", self.prefix)
    }

    /// Set of a group's member connection ids (in the slot of the group's channel).
    pub fn members(&self, hub: &str, group: &str) -> String {
        format!("{}:{hub}:members:{{{group}}}", self.prefix)
    }

    /// Groups a user was added to without a ttl, for the user's future connections (in
    /// the slot of the user's channel).
    pub fn user_groups(&self, hub: &str, user: &str) -> String {
        format!("{}:{hub}:ugroups:{{{user}}}", self.prefix)
    }

    /// Groups a user was added to with a ttl, scored by when each ends.
    pub fn user_groups_timed(&self, hub: &str, user: &str) -> String {
        format!("{}:{hub}:ugroups:{{{user}}}:ttl", self.prefix)
    }

    /// Set of a hub's groups that have members.
    pub fn groups(&self, hub: &str) -> String {
        format!("{}:{hub}:groups", self.prefix)
    }

    /// Hash describing a connection.
    pub fn connection(&self, connection: &str) -> String {
        format!("{}:conn:{{{connection}}}", self.prefix)
    }

    /// Set of a node's connections.
    pub fn node_connections(&self, node: &str) -> String {
        format!("{}:node:{{{node}}}:conns", self.prefix)
    }

    /// A node's heartbeat key.
    pub fn node_alive(&self, node: &str) -> String {
        format!("{}:node:{{{node}}}:alive", self.prefix)
    }

    /// A node's group memberships per hub, as it last reported them.
    pub fn node_counts(&self, node: &str) -> String {
        format!("{}:node:{{{node}}}:counts", self.prefix)
    }

    /// Set of nodes that registered connections.
    pub fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }

    /// Reaping lock for a dead node.
    pub fn reap_lock(&self, node: &str) -> String {
        format!("{}:reap:{{{node}}}", self.prefix)
    }

    /// The generation under which a node's state is written.
    pub fn node_generation(&self, node: &str) -> String {
        format!("{}:node:{{{node}}}:gen", self.prefix)
    }

    /// Delivery position of a channel.
    pub fn position(&self, channel: &str) -> String {
        format!("{}:pos:{}", self.prefix, self.unprefixed(channel))
    }

    /// History stream of a channel.
    pub fn history(&self, channel: &str) -> String {
        format!("{}:hist:{}", self.prefix, self.unprefixed(channel))
    }

    /// Idempotency record of a publisher's key for one channel, in that channel's slot
    /// so the publish reads and writes it in the same call. The key is hashed: any bytes
    /// a client sends become a fixed-size name.
    pub fn idempotency(&self, scope: &str, key: &str, channel: &str) -> String {
        format!(
            "{}:idem:{scope}:{}:{}",
            self.prefix,
            short_digest(key),
            tag_of(channel)
        )
    }

    /// Idempotency record of a key not tied to one channel (a whole flow request, a
    /// connection token's use).
    pub fn idempotency_record(&self, scope: &str, key: &str) -> String {
        format!("{}:idem:{scope}:{}", self.prefix, short_digest(key))
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
        format!("{}:throttle:breaker:{{{}}}", self.prefix, digest(&[url]))
    }

    /// Failure times in a webhook URL's breaker window (in the breaker's slot).
    pub fn breaker_failures(&self, url: &str) -> String {
        format!(
            "{}:throttle:breaker:{{{}}}:failures",
            self.prefix,
            digest(&[url])
        )
    }

    /// Marker, in one channel's slot, of a task that reached a terminal state: the
    /// task's progress on that channel is dropped from then on.
    pub fn task_done(&self, kind: &str, task: &str, channel: &str) -> String {
        format!(
            "{}:throttle:task:{}:done:{}",
            self.prefix,
            digest(&[kind, task]),
            tag_of(channel)
        )
    }

    /// Token bucket of a storm-protection rule for one group and target, in the
    /// group channel's slot. Group and target may hold `:`, so they are hashed together;
    /// the hub (which cannot) stays readable, for an operator looking at one hub's
    /// buckets.
    pub fn rate(&self, hub: &str, group: &str, target: &str) -> String {
        format!(
            "{}:throttle:rate:{hub}:{}:{}",
            self.prefix,
            digest(&[group, target]),
            tag_of(&self.group_channel(hub, group))
        )
    }

    /// The group of a group channel of `hub`, if `channel` is one.
    pub fn group_of_channel<'a>(&self, hub: &str, channel: &'a str) -> Option<&'a str> {
        channel
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(':')?
            .strip_prefix(hub)?
            .strip_prefix(":group:{")?
            .strip_suffix('}')
    }
}

/// The hash tag of a name: from its first `{` to the first `}` after it, braces
/// included. Redis Cluster places a name by that part alone, so a key that ends in its
/// channel's tag shares the channel's slot, whatever the tag holds.
pub fn tag_of(name: &str) -> &str {
    name.find('{')
        .and_then(|open| {
            name[open + 1..]
                .find('}')
                .map(|close| &name[open..open + close + 2])
        })
        .unwrap_or(name)
}

/// The first 16 bytes of the SHA-256 of `key`, in hex.
fn short_digest(key: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(key.as_bytes())[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
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
        assert_eq!(
            k.group_channel("spend", "vkey-7"),
            "t1:spend:group:{vkey-7}"
        );
        assert_eq!(k.user_channel("spend", "u"), "t1:spend:user:{u}");
        assert_eq!(k.hub_channel("spend"), "t1:spend:all:{spend}");
        assert_eq!(k.node_channel("n1"), "t1:node:{n1}");
        assert_eq!(hub_label(&k.group_channel("spend", "a:b")), "spend");
        assert_eq!(hub_label(&k.node_channel("n1")), "node");
        assert_eq!(
            k.group_of_channel("spend", &k.group_channel("spend", "a:b}c")),
            Some("a:b}c")
        );
        assert_eq!(
            k.group_of_channel("spend", &k.user_channel("spend", "u")),
            None
        );
        assert_eq!(k.members("spend", "g"), "t1:spend:members:{g}");
        assert_eq!(k.connection("c"), "t1:conn:{c}");
        let channel = k.group_channel("spend", "g");
        assert_eq!(k.position(&channel), "t1:pos:spend:group:{g}");
        assert_eq!(k.history(&channel), "t1:hist:spend:group:{g}");
        assert_eq!(k.node_generation("n1"), "t1:node:{n1}:gen");
        let idem = k.idempotency("s", "any key: with spaces", &channel);
        assert!(
            idem.starts_with("t1:idem:s:") && idem.ends_with(":{g}"),
            "{idem}"
        );
        assert_ne!(
            k.idempotency_record("s", "k"),
            k.idempotency("s", "k", &channel)
        );
    }

    /// Redis Cluster runs a script only when every key it names hashes to one slot:
    /// each name a publish touches must carry its channel's hash tag, whatever braces or
    /// colons the group holds.
    #[test]
    fn what_one_publish_touches_shares_the_channels_hash_tag() {
        let k = Keys::new("t1");
        for group in ["g", "a:b", "x}y", "{x", "x{y}z", "{}", "ünï"] {
            let channel = k.group_channel("tasks", group);
            let tag = tag_of(&channel);
            for name in [
                k.position(&channel),
                k.history(&channel),
                k.idempotency("scope", "key", &channel),
                k.task_done("task", "id{1}", &channel),
                k.rate("tasks", group, "Target"),
                k.members("tasks", group),
            ] {
                assert_eq!(tag_of(&name), tag, "{name} beside {channel}");
            }
        }
        let node = "n-1";
        for name in [
            k.node_connections(node),
            k.node_alive(node),
            k.node_generation(node),
            k.node_counts(node),
        ] {
            assert_eq!(tag_of(&name), "{n-1}", "{name}");
        }
        assert_eq!(tag_of(&k.breaker("u")), tag_of(&k.breaker_failures("u")));
        assert_eq!(tag_of("no tag"), "no tag");
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
            "t1:throttle:breaker:{}".len() + 64,
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
        assert_ne!(k.rate("tasks", "a}b", "t"), k.rate("tasks", "a", "t"));
    }
}
