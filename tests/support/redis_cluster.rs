//! A Redis Cluster: 3 masters and 3 replicas. Part of `redis_ha`.

use std::collections::HashMap;
use std::process::{Command, Stdio};

use super::{
    connect, fields, ha_port, info, query, replica_online, server_args, until, Proc, TempDir,
};

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone)]
struct NodeLine {
    id: String,
    port: u16,
    master: bool,
    failed: bool,
    /// Owned slot ranges, inclusive (migration markers such as `[5->-id]` left out).
    slots: Vec<(u16, u16)>,
}

impl NodeLine {
    fn owns(&self, slot: u16) -> bool {
        self.slots.iter().any(|&(a, b)| (a..=b).contains(&slot))
    }
}

fn parse_nodes(text: &str) -> Vec<NodeLine> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let addr = f.get(1)?.split('@').next()?;
            let flags = f.get(2)?;
            let slots = f
                .iter()
                .skip(8)
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => s.parse().ok().map(|a| (a, a)),
                })
                .collect();
            Some(NodeLine {
                id: f[0].to_owned(),
                port: addr.rsplit(':').next()?.parse().ok()?,
                master: flags.contains("master"),
                failed: flags.contains("fail"),
                slots,
            })
        })
        .collect()
}

/// A Redis Cluster: 3 masters and 3 replicas, with `cluster-node-timeout 2000` so a dead
/// master's replica takes over in about 3 s.
pub struct RedisCluster {
    nodes: Vec<Proc>,
    /// The masters at creation: the seed list of [`Self::url`].
    seeds: Vec<u16>,
    _dir: TempDir,
}

impl RedisCluster {
    /// Starts six servers, creates the cluster, and waits until it is fully up.
    pub async fn start() -> Self {
        let dir = TempDir::new("cluster");
        let mut nodes = Vec::new();
        for _ in 0..6 {
            let port = ha_port();
            let mut args = server_args(port, &dir.sub(&port.to_string()));
            args.extend(
                ["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"].map(str::to_owned),
            );
            nodes.push(Proc::spawn("redis-server", port, &args));
        }
        for n in &nodes {
            until("a cluster node answers PING", || async {
                query::<String>(n.port, &redis::cmd("PING")).await.is_ok()
            })
            .await;
        }
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)))
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(Stdio::null())
            .status()
            .expect("redis-cli is installed");
        assert!(created.success(), "redis-cli --cluster create failed");
        let mut cluster = Self {
            nodes,
            seeds: Vec::new(),
            _dir: dir,
        };
        cluster.wait_healthy("the new cluster is up").await;
        cluster.seeds = cluster.masters().await;
        for port in cluster.seeds.clone() {
            until("every master streams to its replica", || {
                replica_online(port)
            })
            .await;
        }
        cluster
    }

    /// `redis+cluster://` with the creation's masters as seeds.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self
            .seeds
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+cluster://{}", seeds.join(","))
    }

    fn live_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.alive())
            .map(|n| n.port)
            .collect()
    }

    /// `CLUSTER NODES` as one live node sees it.
    async fn view(&self, port: u16) -> Option<Vec<NodeLine>> {
        let text: String = query(port, redis::cmd("CLUSTER").arg("NODES")).await.ok()?;
        Some(parse_nodes(&text))
    }

    /// The first live node's view.
    async fn any_view(&self) -> Vec<NodeLine> {
        for port in self.live_ports() {
            if let Some(v) = self.view(port).await {
                return v;
            }
        }
        panic!("no cluster node answers CLUSTER NODES");
    }

    /// Whether every live node says `cluster_state:ok` with every slot served, and all of
    /// them agree on which live master owns every slot.
    async fn healthy(&self) -> bool {
        let mut owners = None;
        for port in self.live_ports() {
            let Ok(i) = self.cluster_info(port).await else {
                return false;
            };
            if i.get("cluster_state").map(String::as_str) != Some("ok")
                || i.get("cluster_slots_ok").map(String::as_str) != Some("16384")
            {
                return false;
            }
            let Some(view) = self.view(port).await else {
                return false;
            };
            let mut masters: Vec<(String, Vec<(u16, u16)>)> = view
                .into_iter()
                .filter(|n| n.master && !n.failed && !n.slots.is_empty())
                .map(|n| (n.id, n.slots))
                .collect();
            masters.sort();
            if owners.get_or_insert_with(|| masters.clone()) != &masters {
                return false;
            }
        }
        true
    }

    async fn wait_healthy(&self, what: &str) {
        until(what, || self.healthy()).await;
    }

    /// The live masters that own slots, by port.
    pub async fn masters(&self) -> Vec<u16> {
        let mut m: Vec<u16> = self
            .any_view()
            .await
            .into_iter()
            .filter(|n| n.master && !n.failed && !n.slots.is_empty())
            .map(|n| n.port)
            .collect();
        m.sort_unstable();
        m
    }

    /// `CLUSTER KEYSLOT key` (hash tags included).
    pub async fn slot_of(&self, key: &str) -> u16 {
        let port = self.live_ports()[0];
        query(port, redis::cmd("CLUSTER").arg("KEYSLOT").arg(key))
            .await
            .unwrap()
    }

    /// The port of the live master owning `slot`.
    pub async fn master_of_slot(&self, slot: u16) -> u16 {
        self.any_view()
            .await
            .into_iter()
            .find(|n| n.master && !n.failed && n.owns(slot))
            .unwrap_or_else(|| panic!("no live master owns slot {slot}"))
            .port
    }

    /// SIGKILLs the master owning `slot`; returns its port.
    pub async fn kill_master_of_slot(&mut self, slot: u16) -> u16 {
        let port = self.master_of_slot(slot).await;
        self.nodes
            .iter_mut()
            .find(|n| n.port == port)
            .unwrap()
            .kill();
        port
    }

    /// Waits until a live node (the dead master's replica) owns `slot`, answers as a
    /// master, and the cluster is whole again; returns its port.
    pub async fn wait_promoted(&self, slot: u16) -> u16 {
        until(
            "a replica took over the slot and the cluster is ok",
            || async {
                let Some(owner) = self
                    .any_view()
                    .await
                    .into_iter()
                    .find(|n| n.master && !n.failed && n.owns(slot))
                else {
                    return false;
                };
                self.live_ports().contains(&owner.port)
                    && info(owner.port, "replication")
                        .await
                        .is_ok_and(|i| i.get("role").is_some_and(|r| r == "master"))
                    && self.healthy().await
            },
        )
        .await;
        self.master_of_slot(slot).await
    }

    async fn id_of(&self, port: u16) -> String {
        query(port, redis::cmd("CLUSTER").arg("MYID"))
            .await
            .unwrap()
    }

    /// Moves `slot` to the master at `to` as `redis-cli --cluster reshard` does: IMPORTING
    /// on the target, MIGRATING on the source, its keys in batches with MIGRATE, then
    /// SETSLOT NODE on every master.
    pub async fn migrate_slot(&self, slot: u16, to: u16) {
        let from = self.master_of_slot(slot).await;
        assert_ne!(from, to, "slot {slot} is already on {to}");
        let (from_id, to_id) = (self.id_of(from).await, self.id_of(to).await);
        let setslot = |state: &str, id: &str| {
            redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg(state)
                .arg(id)
                .clone()
        };
        let _: () = query(to, &setslot("IMPORTING", &from_id)).await.unwrap();
        let _: () = query(from, &setslot("MIGRATING", &to_id)).await.unwrap();
        loop {
            let keys: Vec<String> = query(
                from,
                redis::cmd("CLUSTER")
                    .arg("GETKEYSINSLOT")
                    .arg(slot)
                    .arg(100),
            )
            .await
            .unwrap();
            if keys.is_empty() {
                break;
            }
            let _: () = query(
                from,
                redis::cmd("MIGRATE")
                    .arg("127.0.0.1")
                    .arg(to)
                    .arg("")
                    .arg(0)
                    .arg(5000)
                    .arg("REPLACE")
                    .arg("KEYS")
                    .arg(&keys),
            )
            .await
            .unwrap();
        }
        let mut order = vec![to, from];
        order.extend(
            self.masters()
                .await
                .into_iter()
                .filter(|p| ![to, from].contains(p)),
        );
        for port in order {
            let _: () = query(port, &setslot("NODE", &to_id)).await.unwrap();
        }
        until(
            "every node sees the migrated slot on its new master",
            || async {
                for port in self.live_ports() {
                    let Some(view) = self.view(port).await else {
                        return false;
                    };
                    if !view.iter().any(|n| n.port == to && n.owns(slot)) {
                        return false;
                    }
                }
                self.healthy().await
            },
        )
        .await;
    }

    /// The live nodes of the shard serving `slot`: its master first, then its replicas.
    async fn shard_of(&self, slot: u16) -> Vec<u16> {
        let view = self.any_view().await;
        let master = view
            .iter()
            .find(|n| n.master && !n.failed && n.owns(slot))
            .unwrap_or_else(|| panic!("no live master owns slot {slot}"));
        let mut shard = vec![master.port];
        for port in self.live_ports().into_iter().filter(|&p| p != master.port) {
            let of_master = info(port, "replication")
                .await
                .is_ok_and(|i| i.get("master_port") == Some(&master.port.to_string()));
            if of_master {
                shard.push(port);
            }
        }
        shard
    }

    /// `PUBSUB SHARDNUMSUB channel`, summed over the channel's shard (its master, and its
    /// replicas, which accept SSUBSCRIBE too).
    pub async fn shardnumsub(&self, channel: &str) -> u64 {
        let slot = self.slot_of(channel).await;
        let mut total = 0;
        for port in self.shard_of(slot).await {
            let (_, n): (String, u64) =
                query(port, redis::cmd("PUBSUB").arg("SHARDNUMSUB").arg(channel))
                    .await
                    .unwrap();
            total += n;
        }
        total
    }

    /// Calls per command on one server (`INFO commandstats`), e.g. `evalsha`, `spublish`,
    /// `cluster|info`.
    pub async fn commandstats(&self, port: u16) -> HashMap<String, u64> {
        info(port, "commandstats")
            .await
            .unwrap()
            .into_iter()
            .filter_map(|(k, v)| {
                let name = k.strip_prefix("cmdstat_")?.to_owned();
                let calls = v.split(',').find_map(|f| f.strip_prefix("calls="))?;
                Some((name, calls.parse().ok()?))
            })
            .collect()
    }

    /// One server's `CLUSTER INFO` fields, e.g. `cluster_state`,
    /// `cluster_stats_messages_publish_received`, `…_publishshard_received`.
    pub async fn cluster_info(&self, port: u16) -> redis::RedisResult<HashMap<String, String>> {
        let text: String = query(port, redis::cmd("CLUSTER").arg("INFO")).await?;
        Ok(fields(&text))
    }

    /// A connection to the master owning `key`, for reading keys as they are.
    pub async fn connection_for(&self, key: &str) -> redis::aio::MultiplexedConnection {
        let slot = self.slot_of(key).await;
        connect(self.master_of_slot(slot).await).await.unwrap()
    }
}
