//! The node's local index: its connections and, per channel, its local members.
//!
//! A `std::sync::RwLock` guards it: every operation is short and synchronous and no lock
//! is ever held across an `.await`, so a blocking lock is cheaper than an async one. It
//! reports the first-member and last-member transitions that drive backplane
//! subscriptions.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::connection::handle::SessionHandle;
use crate::hub::Caller;
use crate::ids::ConnectionId;

/// A connection held by this node.
#[derive(Debug, Clone)]
pub struct LocalConnection {
    /// Index of its hub in the node's hub list.
    pub hub: usize,
    /// Its session.
    pub handle: SessionHandle,
    /// Its identity.
    pub caller: Caller,
    /// Channels it is a member of (groups, its user, its hub).
    pub channels: Vec<Arc<str>>,
    /// How many of those are groups (counted against the per-connection limit).
    pub groups: usize,
}

/// A local member of a channel, as the fan-out path sees it.
#[derive(Debug, Clone)]
pub struct Member {
    /// The connection.
    pub id: ConnectionId,
    /// Its session.
    pub handle: SessionHandle,
}

#[derive(Debug)]
struct ChannelEntry {
    hub: usize,
    members: Vec<Member>,
}

#[derive(Debug, Default)]
struct Inner {
    connections: HashMap<ConnectionId, LocalConnection>,
    channels: HashMap<Arc<str>, ChannelEntry>,
}

/// The connection is not held by this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotHere;

/// What a join changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Joined {
    /// The connection was not a member before.
    pub added: bool,
    /// It is the channel's first local member.
    pub first: bool,
}

/// What a leave changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Left {
    /// The connection was a member.
    pub removed: bool,
    /// The channel has no local member left.
    pub last: bool,
}

/// The local index.
#[derive(Debug, Default)]
pub struct Registry {
    inner: RwLock<Inner>,
}

impl Registry {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a connection (with no memberships yet). Returns false, changing nothing, when
    /// the id is already connected here (a negotiate token used twice).
    pub fn insert(
        &self,
        id: ConnectionId,
        hub: usize,
        handle: SessionHandle,
        caller: Caller,
    ) -> bool {
        let mut inner = self.write();
        if inner.connections.contains_key(&id) {
            return false;
        }
        inner.connections.insert(
            id,
            LocalConnection {
                hub,
                handle,
                caller,
                channels: Vec::new(),
                groups: 0,
            },
        );
        true
    }

    /// Gives connection `id` a new session (its client resumed on a new transport): its
    /// channels stay. Returns false when the connection is not here.
    pub fn replace_handle(&self, id: &ConnectionId, handle: SessionHandle) -> bool {
        let mut inner = self.write();
        let inner = &mut *inner;
        let Some(conn) = inner.connections.get_mut(id) else {
            return false;
        };
        conn.handle = handle.clone();
        for channel in &conn.channels {
            if let Some(entry) = inner.channels.get_mut(channel) {
                for m in entry.members.iter_mut().filter(|m| &m.id == id) {
                    m.handle = handle.clone();
                }
            }
        }
        true
    }

    /// Removes a connection and all its memberships; returns it and the channels that
    /// lost their last local member.
    pub fn remove(&self, id: &ConnectionId) -> Option<(LocalConnection, Vec<Arc<str>>)> {
        let mut inner = self.write();
        let conn = inner.connections.remove(id)?;
        let mut emptied = Vec::new();
        for channel in &conn.channels {
            if let Some(entry) = inner.channels.get_mut(channel) {
                entry.members.retain(|m| &m.id != id);
                if entry.members.is_empty() {
                    inner.channels.remove(channel);
                    emptied.push(channel.clone());
                }
            }
        }
        Some((conn, emptied))
    }

    /// Adds a connection to a channel. `group` counts it against the group limit `max`.
    ///
    /// # Errors
    /// `Err(Ok(NotHere))` when the connection is not local, `Err(Err(n))` when it is
    /// already in `n` = `max` groups.
    pub fn join(
        &self,
        id: &ConnectionId,
        channel: &str,
        group: bool,
        max: usize,
    ) -> Result<Joined, Result<NotHere, usize>> {
        let mut inner = self.write();
        let inner = &mut *inner;
        let conn = inner.connections.get_mut(id).ok_or(Ok(NotHere))?;
        if conn.channels.iter().any(|c| &**c == channel) {
            return Ok(Joined {
                added: false,
                first: false,
            });
        }
        if group && conn.groups >= max {
            return Err(Err(conn.groups));
        }
        let key: Arc<str> = inner
            .channels
            .get_key_value(channel)
            .map_or_else(|| Arc::from(channel), |(k, _)| k.clone());
        conn.channels.push(key.clone());
        if group {
            conn.groups += 1;
        }
        let member = Member {
            id: id.clone(),
            handle: conn.handle.clone(),
        };
        let hub = conn.hub;
        let entry = inner.channels.entry(key).or_insert_with(|| ChannelEntry {
            hub,
            members: Vec::new(),
        });
        entry.members.push(member);
        Ok(Joined {
            added: true,
            first: entry.members.len() == 1,
        })
    }

    /// Removes a connection from a channel.
    ///
    /// # Errors
    /// [`NotHere`] when the connection is not local.
    pub fn leave(&self, id: &ConnectionId, channel: &str, group: bool) -> Result<Left, NotHere> {
        let mut inner = self.write();
        let inner = &mut *inner;
        let conn = inner.connections.get_mut(id).ok_or(NotHere)?;
        let Some(pos) = conn.channels.iter().position(|c| &**c == channel) else {
            return Ok(Left {
                removed: false,
                last: false,
            });
        };
        conn.channels.swap_remove(pos);
        if group {
            conn.groups = conn.groups.saturating_sub(1);
        }
        let mut last = false;
        if let Some(entry) = inner.channels.get_mut(channel) {
            entry.members.retain(|m| &m.id != id);
            if entry.members.is_empty() {
                inner.channels.remove(channel);
                last = true;
            }
        }
        Ok(Left {
            removed: true,
            last,
        })
    }

    /// Whether the channel has a local member.
    pub fn has_members(&self, channel: &str) -> bool {
        self.read().channels.contains_key(channel)
    }

    /// Number of local members of the channel.
    pub fn member_count(&self, channel: &str) -> usize {
        self.read()
            .channels
            .get(channel)
            .map_or(0, |e| e.members.len())
    }

    /// Calls `f` for each local member, under the read lock (so `f` must not block).
    /// Returns the channel's hub index, or `None` when it has no local member.
    pub fn for_each_member(&self, channel: &str, mut f: impl FnMut(&Member)) -> Option<usize> {
        let inner = self.read();
        let entry = inner.channels.get(channel)?;
        entry.members.iter().for_each(&mut f);
        Some(entry.hub)
    }

    /// A copy of a local connection's entry.
    pub fn connection(&self, id: &ConnectionId) -> Option<LocalConnection> {
        self.read().connections.get(id).cloned()
    }

    /// Every channel with a local member (for resubscribing after a reconnect).
    pub fn channels(&self) -> Vec<Arc<str>> {
        self.read().channels.keys().cloned().collect()
    }

    /// Every local connection (for resync).
    pub fn snapshot(&self) -> Vec<(ConnectionId, LocalConnection)> {
        self.read()
            .connections
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Every local connection's session (for shutdown).
    pub fn handles(&self) -> Vec<SessionHandle> {
        self.read()
            .connections
            .values()
            .map(|c| c.handle.clone())
            .collect()
    }

    /// Channels with local members and their local memberships, per hub index,
    /// counting only channels `is_group` accepts.
    pub fn channel_counts(
        &self,
        hubs: usize,
        is_group: impl Fn(usize, &str) -> bool,
    ) -> Vec<(usize, usize)> {
        let mut counts = vec![(0, 0); hubs];
        for (name, entry) in &self.read().channels {
            if entry.hub < hubs && is_group(entry.hub, name) {
                counts[entry.hub].0 += 1;
                counts[entry.hub].1 += entry.members.len();
            }
        }
        counts
    }

    /// Messages waiting in the local connections' outbound queues (one lock each: for a
    /// once-a-second gauge, not a hot path).
    pub fn queued_messages(&self) -> usize {
        self.read()
            .connections
            .values()
            .map(|c| c.handle.queued())
            .sum()
    }

    /// Number of local connections.
    pub fn connection_count(&self) -> usize {
        self.read().connections.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(r: &Registry) -> ConnectionId {
        let id = ConnectionId::random();
        let (h, _rx) = SessionHandle::new(4);
        r.insert(
            id.clone(),
            0,
            h,
            Caller {
                connection_id: id.clone(),
                user: None,
                virtual_key: None,
                granted: Vec::new(),
            },
        );
        id
    }

    #[test]
    fn first_and_last_member_transitions_are_reported() {
        let r = Registry::default();
        let (a, b) = (conn(&r), conn(&r));
        assert_eq!(
            r.join(&a, "c", true, 10),
            Ok(Joined {
                added: true,
                first: true
            })
        );
        assert_eq!(
            r.join(&b, "c", true, 10),
            Ok(Joined {
                added: true,
                first: false
            })
        );
        assert_eq!(
            r.join(&b, "c", true, 10),
            Ok(Joined {
                added: false,
                first: false
            })
        );
        assert_eq!(r.member_count("c"), 2);
        assert_eq!(
            r.leave(&a, "c", true),
            Ok(Left {
                removed: true,
                last: false
            })
        );
        assert_eq!(
            r.leave(&b, "c", true),
            Ok(Left {
                removed: true,
                last: true
            })
        );
        assert!(!r.has_members("c"));
    }

    #[test]
    fn removing_a_connection_reports_emptied_channels() {
        let r = Registry::default();
        let (a, b) = (conn(&r), conn(&r));
        r.join(&a, "x", true, 10).unwrap();
        r.join(&a, "y", true, 10).unwrap();
        r.join(&b, "y", true, 10).unwrap();
        let (_, emptied) = r.remove(&a).unwrap();
        assert_eq!(emptied, vec![Arc::<str>::from("x")]);
        assert_eq!(r.member_count("y"), 1);
    }

    #[test]
    fn the_group_limit_is_enforced() {
        let r = Registry::default();
        let a = conn(&r);
        r.join(&a, "g1", true, 1).unwrap();
        assert_eq!(r.join(&a, "g2", true, 1), Err(Err(1)));
        assert!(
            r.join(&a, "user", false, 1).is_ok(),
            "non-group channels are not counted"
        );
    }

    #[test]
    fn unknown_connections_are_not_here() {
        let r = Registry::default();
        let ghost = ConnectionId::random();
        assert_eq!(r.join(&ghost, "c", true, 10), Err(Ok(NotHere)));
        assert_eq!(r.leave(&ghost, "c", true), Err(NotHere));
    }
}
