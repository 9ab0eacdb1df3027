//! A user's group memberships that outlive its connections (Azure SignalR's "add user
//! to group"): the groups each new connection of the user joins, with Azure's ttl
//! semantics, and a group's members page by page.
//!
//! - Without a ttl a membership lasts a year; of those, a user keeps the
//!   [`MAX_LASTING`] most recently updated (Azure's rule).
//! - With a ttl it lasts that long; a user keeps at most [`MAX_TIMED`] of them, the
//!   ones ending last (a bound of hubcast's own: Azure states none).
//! - Adding a group again replaces its earlier record, ttl or not.
//!
//! Records past their end are never returned; each write removes them, and the keys
//! expire with their last record.

use std::collections::HashMap;
use std::time::Duration;

use super::{Backplane, BackplaneError};
use crate::ids::ConnectionId;

/// How long a membership without a ttl lasts.
pub const LASTING: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// Memberships without a ttl a user keeps: the most recently updated.
pub const MAX_LASTING: usize = 100;
/// Memberships with a ttl a user keeps: the ones that end last.
pub const MAX_TIMED: usize = 100;
/// Users the in-process store holds records for (each bounded as above).
pub const MAX_MEMORY_USERS: usize = 100_000;

/// One group a user belongs to beyond its current connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserGroupRecord {
    /// The group.
    pub group: String,
    /// When the membership ends, in Unix milliseconds.
    pub ends_at_ms: u64,
    /// It was given a ttl (rather than lasting a year).
    pub timed: bool,
}

/// One page of a group's members.
#[derive(Debug, Clone, Default)]
pub struct MembersPage {
    /// Connection ids, in the order scanned.
    pub ids: Vec<String>,
    /// Where the scan goes on; 0 when it is done.
    pub cursor: u64,
}

/// The in-process twin of the two sorted sets per user.
#[derive(Debug, Default)]
pub struct MemoryUserGroups {
    users: HashMap<(String, String), Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    /// Group → when it was last updated (ms).
    lasting: HashMap<String, u64>,
    /// Group → when it ends (ms).
    timed: HashMap<String, u64>,
}

impl Entries {
    fn prune(&mut self, now: u64) {
        let year = LASTING.as_millis() as u64;
        self.lasting.retain(|_, updated| *updated + year > now);
        self.timed.retain(|_, ends| *ends > now);
    }

    fn is_empty(&self) -> bool {
        self.lasting.is_empty() && self.timed.is_empty()
    }
}

/// Drops the entries with the lowest scores until `map` holds `max`; returns how many.
fn trim(map: &mut HashMap<String, u64>, max: usize) -> usize {
    let excess = map.len().saturating_sub(max);
    if excess > 0 {
        let mut by_score: Vec<(u64, String)> = map.iter().map(|(g, s)| (*s, g.clone())).collect();
        by_score.sort();
        for (_, g) in by_score.into_iter().take(excess) {
            map.remove(&g);
        }
    }
    excess
}

impl MemoryUserGroups {
    /// Records `group` for the user: lasting when `ends_at_ms` is `None`. Returns how
    /// many older records the user's bound pushed out.
    ///
    /// # Errors
    /// The store holds [`MAX_MEMORY_USERS`] users already and this is a new one.
    pub fn add(
        &mut self,
        hub: &str,
        user: &str,
        group: &str,
        now: u64,
        ends_at_ms: Option<u64>,
    ) -> Result<usize, BackplaneError> {
        let key = (hub.to_owned(), user.to_owned());
        if !self.users.contains_key(&key) && self.users.len() >= MAX_MEMORY_USERS {
            self.users.retain(|_, e| {
                e.prune(now);
                !e.is_empty()
            });
            if self.users.len() >= MAX_MEMORY_USERS {
                return Err(BackplaneError::Unavailable(format!(
                    "the in-process store holds group records for {MAX_MEMORY_USERS} users, the most allowed"
                )));
            }
        }
        let entries = self.users.entry(key).or_default();
        entries.prune(now);
        Ok(match ends_at_ms {
            None => {
                entries.timed.remove(group);
                entries.lasting.insert(group.to_owned(), now);
                trim(&mut entries.lasting, MAX_LASTING)
            }
            Some(ends) => {
                entries.lasting.remove(group);
                entries.timed.insert(group.to_owned(), ends);
                trim(&mut entries.timed, MAX_TIMED)
            }
        })
    }

    /// Forgets the user's record of `group`, or all of them (`None`).
    pub fn remove(&mut self, hub: &str, user: &str, group: Option<&str>) {
        let key = (hub.to_owned(), user.to_owned());
        match group {
            None => {
                self.users.remove(&key);
            }
            Some(g) => {
                if let Some(e) = self.users.get_mut(&key) {
                    e.lasting.remove(g);
                    e.timed.remove(g);
                    if e.is_empty() {
                        self.users.remove(&key);
                    }
                }
            }
        }
    }

    /// The user's records that have not ended.
    pub fn list(&self, hub: &str, user: &str, now: u64) -> Vec<UserGroupRecord> {
        let year = LASTING.as_millis() as u64;
        let Some(e) = self.users.get(&(hub.to_owned(), user.to_owned())) else {
            return Vec::new();
        };
        let lasting = e.lasting.iter().map(|(g, updated)| UserGroupRecord {
            group: g.clone(),
            ends_at_ms: updated + year,
            timed: false,
        });
        let timed = e.timed.iter().map(|(g, ends)| UserGroupRecord {
            group: g.clone(),
            ends_at_ms: *ends,
            timed: true,
        });
        lasting
            .chain(timed)
            .filter(|r| r.ends_at_ms > now)
            .collect()
    }
}

impl Backplane {
    /// Records that the user belongs to `group` beyond its current connections, until
    /// `ends_at_ms` (`None`: lasting, a year). Returns how many of the user's older
    /// records its bound pushed out.
    ///
    /// # Errors
    /// [`BackplaneError::Unavailable`].
    pub async fn add_user_group(
        &self,
        hub: &str,
        user: &str,
        group: &str,
        ends_at_ms: Option<u64>,
    ) -> Result<usize, BackplaneError> {
        let now = crate::envelope::now_micros() / 1000;
        match self {
            Self::Memory(b) => b.user_groups().add(hub, user, group, now, ends_at_ms),
            Self::Redis(b) => b.add_user_group(hub, user, group, now, ends_at_ms).await,
        }
    }

    /// Forgets the user's record of `group`, or every record (`None`).
    ///
    /// # Errors
    /// [`BackplaneError::Unavailable`].
    pub async fn remove_user_group(
        &self,
        hub: &str,
        user: &str,
        group: Option<&str>,
    ) -> Result<(), BackplaneError> {
        match self {
            Self::Memory(b) => {
                b.user_groups().remove(hub, user, group);
                Ok(())
            }
            Self::Redis(b) => b.remove_user_group(hub, user, group).await,
        }
    }

    /// The groups the user belongs to beyond its current connections, now.
    ///
    /// # Errors
    /// [`BackplaneError::Unavailable`].
    pub async fn user_groups(
        &self,
        hub: &str,
        user: &str,
    ) -> Result<Vec<UserGroupRecord>, BackplaneError> {
        let now = crate::envelope::now_micros() / 1000;
        match self {
            Self::Memory(b) => Ok(b.user_groups().list(hub, user, now)),
            Self::Redis(b) => b.user_groups(hub, user, now).await,
        }
    }

    /// About `count` members of a group from `cursor` on (Redis's `SSCAN`: a member
    /// present from the first page to the last is listed at least once).
    ///
    /// # Errors
    /// [`BackplaneError::Unavailable`].
    pub async fn members_page(
        &self,
        hub: &str,
        group: &str,
        cursor: u64,
        count: usize,
    ) -> Result<MembersPage, BackplaneError> {
        match self {
            Self::Memory(b) => Ok(b.members_page(hub, group, cursor, count)),
            Self::Redis(b) => b.members_page(hub, group, cursor, count).await,
        }
    }

    /// The user of each connection (`None`: anonymous, or gone).
    ///
    /// # Errors
    /// [`BackplaneError::Unavailable`].
    pub async fn connection_users(
        &self,
        ids: &[ConnectionId],
    ) -> Result<Vec<Option<String>>, BackplaneError> {
        match self {
            Self::Memory(b) => Ok(ids
                .iter()
                .map(|id| b.connection(id).and_then(|r| r.user))
                .collect()),
            Self::Redis(b) => b.connection_users(ids).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_keeps_the_latest_lasting_records_and_the_timed_ones_that_end_last() {
        let mut s = MemoryUserGroups::default();
        for i in 0..(MAX_LASTING as u64 + 5) {
            s.add("h", "u", &format!("g{i}"), 1_000 + i, None).unwrap();
        }
        let kept = s.list("h", "u", 2_000);
        assert_eq!(kept.len(), MAX_LASTING);
        assert!(!kept.iter().any(|r| r.group == "g0" || r.group == "g4"));
        assert!(kept.iter().any(|r| r.group == "g5"));
        // A timed record replaces the lasting one of the same group, and ends.
        s.add("h", "u", "g5", 3_000, Some(10_000)).unwrap();
        let g5: Vec<_> = s
            .list("h", "u", 3_000)
            .into_iter()
            .filter(|r| r.group == "g5")
            .collect();
        assert_eq!(g5.len(), 1);
        assert!(g5[0].timed);
        assert!(!s.list("h", "u", 10_000).iter().any(|r| r.group == "g5"));
    }

    #[test]
    fn removing_one_group_or_all_of_them() {
        let mut s = MemoryUserGroups::default();
        s.add("h", "u", "a", 1, None).unwrap();
        s.add("h", "u", "b", 1, Some(100)).unwrap();
        s.remove("h", "u", Some("a"));
        assert_eq!(s.list("h", "u", 2).len(), 1);
        s.remove("h", "u", None);
        assert!(s.list("h", "u", 2).is_empty());
    }
}
