//! A Sentinel deployment: one master, one replica and three sentinels watching them as
//! `mymaster` (quorum 2, down after 1 s, failover timeout 5 s). Part of `redis_ha`.

use super::{info, query, replica_online, server_args, until, Proc, TempDir};

/// The master name the sentinels watch.
pub const MASTER_NAME: &str = "mymaster";

/// One master, one replica, three sentinels.
pub struct RedisSentinel {
    /// The two data servers; which one is master changes with a failover.
    servers: Vec<Proc>,
    sentinels: Vec<Proc>,
    _dir: TempDir,
}

impl RedisSentinel {
    /// Starts the servers and sentinels and waits until every sentinel knows the master,
    /// the replica and the two other sentinels.
    pub async fn start() -> Self {
        let dir = TempDir::new("sentinel");
        let master_port = super::ha_port();
        let replica_port = super::ha_port();
        let master = Proc::spawn(
            "redis-server",
            master_port,
            &server_args(master_port, &dir.sub("master")),
        );
        let mut args = server_args(replica_port, &dir.sub("replica"));
        args.extend([
            "--replicaof".into(),
            "127.0.0.1".into(),
            master_port.to_string(),
        ]);
        let replica = Proc::spawn("redis-server", replica_port, &args);
        until("the master streams to its replica", || {
            replica_online(master_port)
        })
        .await;
        let mut sentinels = Vec::new();
        for i in 0..3 {
            let port = super::ha_port();
            let home = dir.sub(&format!("sentinel-{i}"));
            let conf = home.join("sentinel.conf");
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\nprotected-mode no\ndaemonize no\n\
                     dir {home}\nlogfile {home}/sentinel.log\n\
                     sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n\
                     sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                     sentinel failover-timeout {MASTER_NAME} 5000\n\
                     sentinel parallel-syncs {MASTER_NAME} 1\n",
                    home = home.display()
                ),
            )
            .unwrap();
            sentinels.push(Proc::spawn(
                "redis-sentinel",
                port,
                &[conf.display().to_string()],
            ));
        }
        let deployment = Self {
            servers: vec![master, replica],
            sentinels,
            _dir: dir,
        };
        for s in &deployment.sentinels {
            until(
                "a sentinel knows the master, the replica and its peers",
                || async {
                    deployment.sentinel_master(s.port).await == Some(master_port)
                        && replicas(s.port).await.contains(&replica_port)
                        && peers(s.port).await == 2
                },
            )
            .await;
        }
        deployment
    }

    /// `redis+sentinel://` with the three sentinels and the master name.
    pub fn url(&self) -> String {
        let s: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        format!("redis+sentinel://{}/{MASTER_NAME}", s.join(","))
    }

    /// The master one sentinel names (`SENTINEL GET-MASTER-ADDR-BY-NAME`).
    async fn sentinel_master(&self, sentinel: u16) -> Option<u16> {
        let addr: Option<(String, String)> = query(
            sentinel,
            redis::cmd("SENTINEL")
                .arg("GET-MASTER-ADDR-BY-NAME")
                .arg(MASTER_NAME),
        )
        .await
        .ok()?;
        addr?.1.parse().ok()
    }

    /// The master's port, as the first sentinel that answers names it.
    pub async fn master_port(&self) -> u16 {
        for s in self.sentinels.iter().filter(|s| s.alive()) {
            if let Some(port) = self.sentinel_master(s.port).await {
                return port;
            }
        }
        panic!("no sentinel names a master");
    }

    /// The port of the data server that is not the master.
    fn other_server(&self, port: u16) -> u16 {
        self.servers.iter().find(|s| s.port != port).unwrap().port
    }

    /// SIGKILLs the current master; returns its port.
    pub async fn kill_master(&mut self) -> u16 {
        let port = self.master_port().await;
        self.servers
            .iter_mut()
            .find(|s| s.port == port)
            .unwrap()
            .kill();
        port
    }

    /// Waits until every sentinel names the surviving server as master and it answers
    /// as one; returns its port.
    pub async fn wait_failover(&self) -> u16 {
        let dead = self
            .servers
            .iter()
            .find(|s| !s.alive())
            .expect("a killed master");
        let promoted = self.other_server(dead.port);
        until("the sentinels promoted the replica", || async {
            for s in &self.sentinels {
                if self.sentinel_master(s.port).await != Some(promoted) {
                    return false;
                }
            }
            info(promoted, "replication")
                .await
                .is_ok_and(|i| i.get("role").is_some_and(|r| r == "master"))
        })
        .await;
        promoted
    }

    /// A connection to the current master.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        super::connect(self.master_port().await).await.unwrap()
    }
}

/// The replica ports one sentinel knows and takes as up.
async fn replicas(sentinel: u16) -> Vec<u16> {
    let list: Vec<std::collections::HashMap<String, String>> = query(
        sentinel,
        redis::cmd("SENTINEL").arg("REPLICAS").arg(MASTER_NAME),
    )
    .await
    .unwrap_or_default();
    list.iter()
        .filter(|r| r.get("flags").is_some_and(|f| f == "slave"))
        .filter_map(|r| r.get("port")?.parse().ok())
        .collect()
}

/// How many other sentinels one sentinel knows.
async fn peers(sentinel: u16) -> usize {
    let list: Vec<redis::Value> = query(
        sentinel,
        redis::cmd("SENTINEL").arg("SENTINELS").arg(MASTER_NAME),
    )
    .await
    .unwrap_or_default();
    list.len()
}
