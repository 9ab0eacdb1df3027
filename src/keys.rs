//! Every backplane channel and Redis key name, in one place.
//!
//! | name | type | purpose |
//! |---|---|---|
//! | `{p}:{hub}:group:{g}` | channel | fan-out to nodes holding ≥ 1 member of group `g` |
//! | `{p}:{hub}:user:{u}` | channel | fan-out to nodes holding ≥ 1 connection of user `u` |
//! | `{p}:{hub}:all` | channel | hub-wide broadcast (only for hubs that allow it) |
//! | `{p}:node:{n}` | channel | control messages to one node (join/leave/send/close a connection it owns) |
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
    }
}
