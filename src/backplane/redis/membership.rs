//! Connections and group memberships on Redis, in the single-slot steps the module
//! docs of [`super`] order, and the resync that writes a node's state again.

use super::{unavailable, RedisBackplane};
use crate::backplane::{BackplaneError, ConnectionRecord, ConnectionSnapshot};
use crate::ids::ConnectionId;

/// Connections a resync writes, or a reap drops, at the same time.
const CONCURRENCY: usize = 64;

impl RedisBackplane {
    /// Lists the id in the node's set, then writes the record (a crash between leaves a
    /// listed id without a record, which the reaper drops).
    pub(crate) async fn register_connection(
        &self,
        id: &ConnectionId,
        hub: &str,
        user: Option<&str>,
    ) -> Result<bool, BackplaneError> {
        let node_conns = self.keys.node_connections(&self.node);
        self.set_change("SADD", node_conns.clone(), id.as_str())
            .await?;
        let s = self.scripts.clone();
        let conn_key = self.keys.connection(id.as_str());
        let registered: i64 = self
            .run("register", |mut c| async move {
                s.register
                    .key(conn_key)
                    .arg(&*self.node)
                    .arg(hub)
                    .arg(user.unwrap_or(""))
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        if registered != 1 {
            // Another node holds that id: only its listing here was this node's.
            self.set_change("SREM", node_conns, id.as_str()).await?;
        }
        Ok(registered == 1)
    }

    /// Lists the id in this node's set, moves the record here, then unlists it from
    /// the previous node's set (a crash between leaves it listed twice: the reaper of
    /// the previous node drops only a record that node still owns).
    pub(crate) async fn take_over_connection(
        &self,
        id: &ConnectionId,
        hub: &str,
        user: Option<&str>,
        from: &str,
    ) -> Result<bool, BackplaneError> {
        self.set_change("SADD", self.keys.node_connections(&self.node), id.as_str())
            .await?;
        let s = self.scripts.clone();
        let conn_key = self.keys.connection(id.as_str());
        let moved: i64 = self
            .run("take_over", |mut c| async move {
                s.take_over
                    .key(conn_key)
                    .arg(&*self.node)
                    .arg(hub)
                    .arg(user.unwrap_or(""))
                    .arg(from)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        if moved != 1 {
            self.set_change("SREM", self.keys.node_connections(&self.node), id.as_str())
                .await?;
            return Ok(false);
        }
        self.set_change("SREM", self.keys.node_connections(from), id.as_str())
            .await?;
        Ok(true)
    }

    pub(crate) async fn unregister_connection(
        &self,
        id: &ConnectionId,
    ) -> Result<(), BackplaneError> {
        self.drop_connection(id.as_str(), &self.node).await
    }

    /// Removes what `owner` recorded of a connection: each group of its record, then the
    /// record, then its listing in `owner`'s set. A record another node owns now is left
    /// alone.
    pub(super) async fn drop_connection(
        &self,
        id: &str,
        owner: &str,
    ) -> Result<(), BackplaneError> {
        let key = self.keys.connection(id);
        let fields: Vec<(String, String)> = self
            .run("hgetall", |mut c| async move {
                redis::cmd("HGETALL").arg(key).query_async(&mut c).await
            })
            .await?;
        let field = |name: &str| fields.iter().find(|(f, _)| f == name).map(|(_, v)| v);
        let owned = field("node").is_none_or(|n| n == owner);
        if owned {
            if let Some(hub) = field("hub") {
                for (f, _) in &fields {
                    if let Some(group) = f.strip_prefix("g:") {
                        self.leave_sets(hub, group, id).await?;
                    }
                }
            }
            let s = self.scripts.clone();
            let key = self.keys.connection(id);
            self.run("drop", |mut c| async move {
                s.drop_record
                    .key(key)
                    .arg(owner)
                    .invoke_async::<i64>(&mut c)
                    .await
            })
            .await?;
        }
        self.set_change("SREM", self.keys.node_connections(owner), id)
            .await
    }

    /// The record gains the group first, then the member set and the hub's group set
    /// (so a crash between leaves a record naming more than the sets, which a drop
    /// handles).
    pub(crate) async fn add_member(
        &self,
        hub: &str,
        group: &str,
        id: &ConnectionId,
    ) -> Result<(), BackplaneError> {
        let s = self.scripts.clone();
        let conn = self.keys.connection(id.as_str());
        let recorded: i64 = self
            .run("join", |mut c| async move {
                s.join_record
                    .key(conn)
                    .arg(group)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        if recorded == 0 {
            // No record (removed meanwhile, or Redis restarted empty): the next resync
            // writes both.
            return Err(unavailable("connection record missing"));
        }
        self.set_change("SADD", self.keys.members(hub, group), id.as_str())
            .await?;
        self.set_change("SADD", self.keys.groups(hub), group).await
    }

    /// The sets first, then the record.
    pub(crate) async fn remove_member(
        &self,
        hub: &str,
        group: &str,
        id: &ConnectionId,
    ) -> Result<(), BackplaneError> {
        self.leave_sets(hub, group, id.as_str()).await?;
        let key = self.keys.connection(id.as_str());
        let field = format!("g:{group}");
        self.run("hdel", |mut c| async move {
            redis::cmd("HDEL")
                .arg(key)
                .arg(field)
                .query_async::<i64>(&mut c)
                .await
        })
        .await
        .map(drop)
    }

    /// The member leaves the group's set; when that emptied it, the group leaves the
    /// hub's set, and is put back if a join filled the set meanwhile (the join adds to
    /// the hub's set after its member, so one of the two always sees the other).
    async fn leave_sets(&self, hub: &str, group: &str, id: &str) -> Result<(), BackplaneError> {
        let s = self.scripts.clone();
        let members = self.keys.members(hub, group);
        let (_, left): (i64, i64) = self
            .run("leave", |mut c| async move {
                s.leave_set.key(members).arg(id).invoke_async(&mut c).await
            })
            .await?;
        if left > 0 {
            return Ok(());
        }
        self.set_change("SREM", self.keys.groups(hub), group)
            .await?;
        if self.scard(self.keys.members(hub, group)).await? > 0 {
            self.set_change("SADD", self.keys.groups(hub), group)
                .await?;
        }
        Ok(())
    }

    /// SADD or SREM of one member.
    async fn set_change(
        &self,
        command: &'static str,
        key: String,
        member: &str,
    ) -> Result<(), BackplaneError> {
        self.run(command, |mut c| async move {
            redis::cmd(command)
                .arg(key)
                .arg(member)
                .query_async::<i64>(&mut c)
                .await
        })
        .await
        .map(drop)
    }

    pub(crate) async fn member_count(
        &self,
        hub: &str,
        group: &str,
    ) -> Result<usize, BackplaneError> {
        self.scard(self.keys.members(hub, group)).await
    }

    pub(crate) async fn group_count(&self, hub: &str) -> Result<usize, BackplaneError> {
        self.scard(self.keys.groups(hub)).await
    }

    async fn scard(&self, key: String) -> Result<usize, BackplaneError> {
        self.run("scard", |mut c| async move {
            redis::cmd("SCARD")
                .arg(key)
                .query_async::<usize>(&mut c)
                .await
        })
        .await
    }

    pub(super) async fn smembers(&self, key: String) -> Result<Vec<String>, BackplaneError> {
        self.run("smembers", |mut c| async move {
            redis::cmd("SMEMBERS").arg(key).query_async(&mut c).await
        })
        .await
    }

    /// Writes this node's memberships per hub, living as long as its heartbeat would.
    pub(crate) async fn report_counts(
        &self,
        hubs: &[&str],
        memberships: &[usize],
    ) -> Result<(), BackplaneError> {
        let key = self.keys.node_counts(&self.node);
        let ttl = u64::try_from(self.options.heartbeat_ttl.as_millis()).unwrap_or(u64::MAX);
        let k = key.clone();
        self.run("counts", |mut c| async move {
            let mut hset = redis::cmd("HSET");
            hset.arg(k);
            for (hub, n) in hubs.iter().zip(memberships) {
                hset.arg(*hub).arg(*n);
            }
            hset.query_async::<i64>(&mut c).await
        })
        .await?;
        self.run("pexpire", |mut c| async move {
            redis::cmd("PEXPIRE")
                .arg(key)
                .arg(ttl)
                .query_async::<i64>(&mut c)
                .await
        })
        .await
        .map(drop)
    }

    /// Groups with members (the hub's set) and memberships (the sum of what the live
    /// nodes reported) of each hub.
    pub(crate) async fn cluster_counts(
        &self,
        hubs: &[&str],
    ) -> Result<Vec<(usize, usize)>, BackplaneError> {
        let nodes = self.smembers(self.keys.nodes()).await?;
        let mut members = vec![0usize; hubs.len()];
        for node in &nodes {
            let key = self.keys.node_counts(node);
            let counts: Vec<Option<usize>> = self
                .run("counts", |mut c| async move {
                    redis::cmd("HMGET")
                        .arg(key)
                        .arg(hubs)
                        .query_async(&mut c)
                        .await
                })
                .await?;
            for (sum, n) in members.iter_mut().zip(counts) {
                *sum += n.unwrap_or(0);
            }
        }
        let mut out = Vec::with_capacity(hubs.len());
        for (hub, members) in hubs.iter().zip(members) {
            out.push((self.group_count(hub).await?, members));
        }
        Ok(out)
    }

    pub(crate) async fn connection(
        &self,
        id: &ConnectionId,
    ) -> Result<Option<ConnectionRecord>, BackplaneError> {
        let key = self.keys.connection(id.as_str());
        let (node, hub, user): (Option<String>, Option<String>, Option<String>) = self
            .run("hmget", |mut c| async move {
                redis::cmd("HMGET")
                    .arg(key)
                    .arg("node")
                    .arg("hub")
                    .arg("user")
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(match (node, hub) {
            (Some(node), Some(hub)) => Some(ConnectionRecord {
                node,
                hub,
                user: user.filter(|u| !u.is_empty()),
            }),
            _ => None,
        })
    }

    /// Makes Redis match this node's local state: heartbeat first (so no reaper takes the
    /// node for dead while it re-registers), then drop connections Redis still lists for
    /// this node but that are gone, then write every local connection and membership.
    pub(crate) async fn resync(&self, local: &[ConnectionSnapshot]) -> Result<(), BackplaneError> {
        let done = match self.write_state(local).await {
            Ok(()) => self.confirm_registered().await,
            Err(e) => Err(e),
        };
        if done.is_err() {
            self.liveness.resync_failed();
        }
        done
    }

    async fn write_connection(&self, conn: &ConnectionSnapshot) -> Result<(), BackplaneError> {
        self.register_connection(&conn.id, &conn.hub, conn.user.as_deref())
            .await?;
        for g in &conn.groups {
            self.add_member(&conn.hub, g, &conn.id).await?;
        }
        Ok(())
    }

    async fn write_state(&self, local: &[ConnectionSnapshot]) -> Result<(), BackplaneError> {
        self.beat().await?;
        self.mark_resync_started().await?;
        let listed = self
            .smembers(self.keys.node_connections(&self.node))
            .await?;
        let stale: Vec<&str> = listed
            .iter()
            .map(String::as_str)
            .filter(|id| !local.iter().any(|l| l.id.as_str() == *id))
            .collect();
        self.drop_all(&stale, &self.node).await?;
        // Connections are written side by side (the command connection pipelines
        // them), each one's record before its memberships: one after another, a node
        // with many connections would take seconds to reappear after a partition.
        for chunk in local.chunks(CONCURRENCY) {
            let writes: Vec<_> = chunk.iter().map(|c| self.write_connection(c)).collect();
            for written in futures_util::future::join_all(writes).await {
                written?;
            }
        }
        Ok(())
    }

    /// Drops connections of `owner`, side by side.
    pub(super) async fn drop_all(&self, ids: &[&str], owner: &str) -> Result<(), BackplaneError> {
        for chunk in ids.chunks(CONCURRENCY) {
            let drops: Vec<_> = chunk
                .iter()
                .map(|id| self.drop_connection(id, owner))
                .collect();
            for dropped in futures_util::future::join_all(drops).await {
                dropped?;
            }
        }
        Ok(())
    }
}
