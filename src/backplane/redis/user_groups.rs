//! Users' group records on Redis: two sorted sets per user in the user's slot, each
//! change one script call; and a group's members page by page, with their users.

use futures_util::future::join_all;

use super::RedisBackplane;
use crate::backplane::user_groups::{
    MembersPage, UserGroupRecord, LASTING, MAX_LASTING, MAX_TIMED,
};
use crate::backplane::BackplaneError;
use crate::ids::ConnectionId;

fn year_ms() -> u64 {
    LASTING.as_millis() as u64
}

/// `[group, score, group, score…]` as records ending at `end(score)`.
fn records(flat: Vec<String>, timed: bool, end: impl Fn(u64) -> u64) -> Vec<UserGroupRecord> {
    flat.chunks_exact(2)
        .map(|pair| UserGroupRecord {
            group: pair[0].clone(),
            ends_at_ms: end(pair[1].parse::<f64>().unwrap_or(0.0) as u64),
            timed,
        })
        .collect()
}

impl RedisBackplane {
    pub(crate) async fn add_user_group(
        &self,
        hub: &str,
        user: &str,
        group: &str,
        now: u64,
        ends_at_ms: Option<u64>,
    ) -> Result<usize, BackplaneError> {
        let s = self.scripts.clone();
        let keys = [
            self.keys.user_groups(hub, user),
            self.keys.user_groups_timed(hub, user),
        ];
        self.run("user_group_add", |mut c| async move {
            s.user_group_add
                .key(&keys[0])
                .key(&keys[1])
                .arg(group)
                .arg(now)
                .arg(ends_at_ms.unwrap_or(0))
                .arg(MAX_LASTING)
                .arg(MAX_TIMED)
                .arg(year_ms())
                .invoke_async(&mut c)
                .await
        })
        .await
    }

    pub(crate) async fn remove_user_group(
        &self,
        hub: &str,
        user: &str,
        group: Option<&str>,
    ) -> Result<(), BackplaneError> {
        let s = self.scripts.clone();
        let keys = [
            self.keys.user_groups(hub, user),
            self.keys.user_groups_timed(hub, user),
        ];
        let _: i64 = self
            .run("user_group_remove", |mut c| async move {
                s.user_group_remove
                    .key(&keys[0])
                    .key(&keys[1])
                    .arg(group.unwrap_or(""))
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(())
    }

    pub(crate) async fn user_groups(
        &self,
        hub: &str,
        user: &str,
        now: u64,
    ) -> Result<Vec<UserGroupRecord>, BackplaneError> {
        let s = self.scripts.clone();
        let keys = [
            self.keys.user_groups(hub, user),
            self.keys.user_groups_timed(hub, user),
        ];
        let (lasting, timed): (Vec<String>, Vec<String>) = self
            .run("user_groups", |mut c| async move {
                s.user_groups_read
                    .key(&keys[0])
                    .key(&keys[1])
                    .arg(now)
                    .arg(year_ms())
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        let mut out = records(lasting, false, |updated| updated + year_ms());
        out.extend(records(timed, true, |end| end));
        Ok(out)
    }

    pub(crate) async fn members_page(
        &self,
        hub: &str,
        group: &str,
        cursor: u64,
        count: usize,
    ) -> Result<MembersPage, BackplaneError> {
        let key = self.keys.members(hub, group);
        let (cursor, ids): (u64, Vec<String>) = self
            .run("sscan", |mut c| async move {
                redis::cmd("SSCAN")
                    .arg(key)
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(count.max(1))
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(MembersPage { ids, cursor })
    }

    /// One `HGET` per connection, all in flight at once on the multiplexed connection
    /// (on a cluster each goes to its own slot's shard).
    pub(crate) async fn connection_users(
        &self,
        ids: &[ConnectionId],
    ) -> Result<Vec<Option<String>>, BackplaneError> {
        let keys: Vec<String> = ids
            .iter()
            .map(|id| self.keys.connection(id.as_str()))
            .collect();
        let users: Vec<Option<String>> = self
            .run("hget", |c| async move {
                let asks = keys.iter().map(|k| {
                    let mut c = c.clone();
                    async move {
                        redis::cmd("HGET")
                            .arg(k)
                            .arg("user")
                            .query_async::<Option<String>>(&mut c)
                            .await
                    }
                });
                join_all(asks).await.into_iter().collect()
            })
            .await?;
        Ok(users
            .into_iter()
            .map(|u| u.filter(|u| !u.is_empty()))
            .collect())
    }
}
