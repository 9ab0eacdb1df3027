//! A group's members, cluster-wide, page by page: each page one or more scans of the
//! member set, sorted, and picked up after the last id the previous page listed.
//!
//! A member present from the first page to the last is listed (Redis's `SSCAN`
//! promise); one that joins or leaves meanwhile may be listed or not, and a set that
//! grows while it is listed may list a member twice.

use super::{Node, NodeError};
use crate::ids::{ConnectionId, GroupName};

/// Scans of the member set one page may take before it answers with what it has.
const MAX_SCANS_PER_PAGE: usize = 64;

/// Where the next page starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageToken {
    /// The scan cursor of the batch the previous page ended in.
    pub cursor: u64,
    /// The last id listed from that batch.
    pub after: Option<String>,
    /// Members still to list under the caller's `top` (`None`: no limit).
    pub remaining: Option<u64>,
}

/// One page of members.
#[derive(Debug, Clone, Default)]
pub struct MembersListing {
    /// (connection id, its user), sorted by id within each batch.
    pub members: Vec<(String, Option<String>)>,
    /// Where the next page starts; `None` on the last.
    pub next: Option<PageToken>,
}

impl Node {
    /// Up to `page_size` members of a group from `from` on (the first page when
    /// `None`), at most `top` over all pages.
    ///
    /// # Errors
    /// The backplane.
    pub async fn group_members(
        &self,
        hub: usize,
        group: &GroupName,
        page_size: usize,
        from: Option<PageToken>,
        top: Option<u64>,
    ) -> Result<MembersListing, NodeError> {
        let name = self.hubs[hub].name();
        let mut at = from.unwrap_or(PageToken {
            cursor: 0,
            after: None,
            remaining: top,
        });
        let limit = at.remaining.map_or(page_size, |r| {
            page_size.min(usize::try_from(r).unwrap_or(usize::MAX))
        });
        let mut ids: Vec<String> = Vec::new();
        let mut next = None;
        for scan in 1..=MAX_SCANS_PER_PAGE {
            if limit == 0 {
                break;
            }
            let page = self
                .backplane
                .members_page(name, group.as_str(), at.cursor, page_size)
                .await?;
            let mut batch = page.ids;
            batch.sort();
            batch.dedup();
            if let Some(after) = &at.after {
                batch.retain(|id| id > after);
            }
            let room = limit - ids.len();
            if batch.len() > room {
                batch.truncate(room);
                at.after = batch.last().cloned();
                ids.extend(batch);
                next = Some(at.clone());
                break;
            }
            ids.extend(batch);
            if page.cursor == 0 {
                break;
            }
            at = PageToken {
                cursor: page.cursor,
                after: None,
                remaining: at.remaining,
            };
            if ids.len() == limit || scan == MAX_SCANS_PER_PAGE {
                next = Some(at.clone());
                break;
            }
        }
        if let Some(n) = &mut next {
            n.remaining = n.remaining.map(|r| r - ids.len() as u64);
            if n.remaining == Some(0) {
                next = None;
            }
        }
        let parsed: Vec<ConnectionId> = ids
            .iter()
            .filter_map(|id| ConnectionId::parse(id))
            .collect();
        let users = self.backplane.connection_users(&parsed).await?;
        let mut by_id: std::collections::HashMap<&str, Option<String>> =
            parsed.iter().map(ConnectionId::as_str).zip(users).collect();
        let members = ids
            .iter()
            .map(|id| (id.clone(), by_id.remove(id.as_str()).flatten()))
            .collect();
        Ok(MembersListing { members, next })
    }
}
