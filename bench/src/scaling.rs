//! `redis-scaling`: hubcast's fan-out on one Redis server and on a Redis Cluster of
//! several masters in the same run, with each Redis process's CPU time and command counts;
//! and what classic PUBLISH costs on that cluster beside SPUBLISH. Also the per-shard
//! snapshots (`INFO commandstats`, `CLUSTER INFO`) the fan-out scenario records.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::procs::{CpuMeter, Redis, RedisKind};
use crate::Cli;

/// What one Redis process had counted at a moment: calls per command (`cmdstat_` dropped,
/// subcommands as `cluster|info`), cluster bus messages per type
/// (`cluster_stats_messages_` dropped; empty on a standalone server), and the read and
/// write events it handled (`INFO stats` `total_reads_processed`, `total_writes_processed`:
/// how many commands and replies each system call carried).
#[derive(Clone, Default)]
pub struct Snapshot {
    calls: BTreeMap<String, u64>,
    bus: BTreeMap<String, u64>,
    io: BTreeMap<String, u64>,
}

/// Commands the benchmark itself sends to take a snapshot, left out of the deltas.
const OWN_COMMANDS: [&str; 2] = ["info", "cluster|info"];

async fn connection(port: u16) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("Redis answers")
}

/// One snapshot per port, in order.
pub async fn snapshot(ports: &[u16]) -> Vec<Snapshot> {
    let mut out = Vec::with_capacity(ports.len());
    for &p in ports {
        let mut c = connection(p).await;
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut c)
            .await
            .unwrap_or_default();
        let mut s = Snapshot::default();
        for line in info.lines() {
            let Some((name, rest)) = line.split_once(':') else {
                continue;
            };
            let Some(name) = name.strip_prefix("cmdstat_") else {
                continue;
            };
            let calls = rest
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            s.calls.insert(name.to_owned(), calls);
        }
        let stats: String = redis::cmd("INFO")
            .arg("stats")
            .query_async(&mut c)
            .await
            .unwrap_or_default();
        for line in stats.lines() {
            if let Some((k, v)) = line.trim().split_once(':') {
                let k = match k {
                    "total_reads_processed" => "reads",
                    "total_writes_processed" => "writes",
                    _ => continue,
                };
                s.io.insert(k.to_owned(), v.parse().unwrap_or(0));
            }
        }
        // A standalone server refuses CLUSTER INFO: no bus, nothing recorded.
        let bus: String = redis::cmd("CLUSTER")
            .arg("INFO")
            .query_async(&mut c)
            .await
            .unwrap_or_default();
        for line in bus.lines() {
            if let Some((k, v)) = line.trim().split_once(':') {
                if let (Some(k), Ok(v)) = (k.strip_prefix("cluster_stats_messages_"), v.parse()) {
                    s.bus.insert(k.to_owned(), v);
                }
            }
        }
        out.push(s);
    }
    out
}

fn delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> Value {
    Value::Object(
        after
            .iter()
            .filter(|(k, _)| !OWN_COMMANDS.contains(&k.as_str()))
            .filter_map(|(k, a)| {
                let d = a.saturating_sub(before.get(k).copied().unwrap_or(0));
                (d > 0).then(|| (k.clone(), json!(d)))
            })
            .collect(),
    )
}

/// Per Redis process of a phase: name, port, CPU seconds, command calls and bus messages
/// the phase added.
pub fn shards_json(
    redis: &Redis,
    before: &[Snapshot],
    after: &[Snapshot],
    cpu: &[(String, f64)],
) -> Value {
    let rows: Vec<Value> = redis
        .procs
        .iter()
        .zip(&redis.ports)
        .enumerate()
        .map(|(i, (p, port))| {
            let secs = cpu
                .iter()
                .find(|(n, _)| *n == p.name)
                .map_or(0.0, |(_, s)| *s);
            json!({
                "name": p.name, "port": port,
                "cpu_seconds": (secs * 1000.0).round() / 1000.0,
                "calls": delta(&before[i].calls, &after[i].calls),
                "bus": delta(&before[i].bus, &after[i].bus),
                "io": delta(&before[i].io, &after[i].io),
            })
        })
        .collect();
    Value::Array(rows)
}

/// Calls of `commands` summed over the shards of a `shards_json` array.
pub fn calls(shards: &Value, commands: &[&str]) -> u64 {
    shards
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["calls"].as_object().into_iter().flatten())
        .filter(|(k, _)| commands.is_empty() || commands.contains(&k.as_str()))
        .filter_map(|(_, v)| v.as_u64())
        .sum()
}

/// The slot ranges each server owns, from the `myself` line of `CLUSTER NODES`.
async fn owned_slots(ports: &[u16]) -> Vec<Vec<(u16, u16)>> {
    let mut out = Vec::new();
    for &p in ports {
        let mut c = connection(p).await;
        let nodes: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut c)
            .await
            .unwrap_or_default();
        let ranges = nodes
            .lines()
            .find(|l| l.contains("myself"))
            .map(|l| {
                l.split_whitespace()
                    .skip(8)
                    .filter_map(|r| {
                        let (a, b) = r.split_once('-').unwrap_or((r, r));
                        Some((a.parse().ok()?, b.parse().ok()?))
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(ranges);
    }
    out
}

/// The index of the server owning each key (by `CLUSTER KEYSLOT`); all 0 on one server.
pub async fn owners(redis: &Redis, keys: &[String]) -> Vec<usize> {
    if redis.kind == RedisKind::Standalone {
        return vec![0; keys.len()];
    }
    let ranges = owned_slots(&redis.ports).await;
    let mut c = connection(redis.ports[0]).await;
    let mut out = Vec::with_capacity(keys.len());
    for k in keys {
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(k)
            .query_async(&mut c)
            .await
            .unwrap();
        out.push(
            ranges
                .iter()
                .position(|r| r.iter().any(|&(a, b)| (a..=b).contains(&slot)))
                .unwrap_or(usize::MAX),
        );
    }
    out
}

/// The fan-out's shape, the same on every Redis.
#[derive(Clone, Copy)]
pub struct Shape {
    pub clients: usize,
    pub groups: usize,
    pub nodes: usize,
    pub rate: u64,
    pub paced_secs: u64,
    pub closed_secs: u64,
}

/// hubcast's fan-out on one server, on a one-master cluster (cluster mode at the same
/// load per server) and on `masters` masters; then raw PUBLISH against SPUBLISH on a
/// fresh cluster of as many masters.
pub async fn run(cli: &Cli, shape: Shape, masters: usize, raw_messages: u64) -> Value {
    let mut out = json!({
        "scenario": "redis-scaling", "system": "hubcast", "masters": masters, "replicas": 0,
    });
    for (key, kind) in [
        ("standalone", RedisKind::Standalone),
        ("cluster_one", RedisKind::Cluster(1)),
        ("cluster", RedisKind::Cluster(masters)),
    ] {
        let r = crate::fanout(
            cli,
            crate::client::System::Hubcast,
            kind,
            shape.clients,
            shape.groups,
            shape.nodes,
            shape.rate,
            shape.paced_secs,
            shape.closed_secs,
        )
        .await;
        crate::report::table(&r);
        out[key] = r;
    }
    out["raw_publish"] = raw_publish(masters, raw_messages).await;
    out
}

/// Counts pushes of `marker` (`$7\r\nmessage\r\n`, `$8\r\nsmessage\r\n`) arriving on a
/// raw RESP2 connection after `command` (SUBSCRIBE or SSUBSCRIBE `channel`).
async fn raw_subscriber(
    port: u16,
    command: &'static str,
    channel: String,
    marker: &'static [u8],
    count: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let line = format!("{command} {channel}\r\n");
    s.write_all(line.as_bytes()).await.unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut carry: Vec<u8> = Vec::new();
        loop {
            let n = match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            carry.extend_from_slice(&buf[..n]);
            let found = carry.windows(marker.len()).filter(|w| *w == marker).count();
            count.fetch_add(found as u64, Ordering::Relaxed);
            // Keep a tail shorter than the marker: a marker split across reads is found
            // once, a whole one never twice.
            let keep = carry.len().min(marker.len() - 1);
            carry.drain(..carry.len() - keep);
        }
    })
}

/// Waits until the channel has one subscriber on `port` (PUBSUB NUMSUB or SHARDNUMSUB).
async fn wait_subscribed(port: u16, sub: &str, channel: &str) {
    let mut c = connection(port).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, n): (String, u64) = redis::cmd("PUBSUB")
            .arg(sub)
            .arg(channel)
            .query_async(&mut c)
            .await
            .unwrap();
        if n >= 1 {
            return;
        }
        assert!(Instant::now() < deadline, "{channel} not subscribed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One raw phase: a subscriber on `sub_port`, `n` publishes pipelined to `pub_port`; what
/// every master spent and counted.
async fn raw_phase(redis: &Redis, sharded: bool, pub_port: u16, sub_port: u16, n: u64) -> Value {
    let (command, publish, numsub, marker): (_, _, _, &'static [u8]) = if sharded {
        (
            "SSUBSCRIBE",
            "SPUBLISH",
            "SHARDNUMSUB",
            b"$8\r\nsmessage\r\n",
        )
    } else {
        ("SUBSCRIBE", "PUBLISH", "NUMSUB", b"$7\r\nmessage\r\n")
    };
    let channel = if sharded {
        sharded_channel(redis, pub_port).await
    } else {
        "bench-raw".to_owned()
    };
    let count = Arc::new(AtomicU64::new(0));
    let reader = raw_subscriber(sub_port, command, channel.clone(), marker, count.clone()).await;
    wait_subscribed(sub_port, numsub, &channel).await;
    let before = snapshot(&redis.ports).await;
    let cpu = CpuMeter::start(&redis.pids());
    let started = Instant::now();
    let mut c = connection(pub_port).await;
    let mut sent = 0u64;
    while sent < n {
        let batch = (n - sent).min(1000);
        let mut pipe = redis::pipe();
        for _ in 0..batch {
            pipe.cmd(publish)
                .arg(&channel)
                .arg("{\"s\":1,\"t\":1,\"p\":1}")
                .ignore();
        }
        let () = pipe.query_async(&mut c).await.expect("publishes accepted");
        sent += batch;
    }
    let elapsed = started.elapsed().as_secs_f64();
    crate::drain_counter(&count, n, Duration::from_secs(10)).await;
    // Bus copies to the masters without a subscriber arrive on their own schedule.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let spent = cpu.stop();
    let after = snapshot(&redis.ports).await;
    reader.abort();
    json!({
        "command": publish, "channel": channel, "messages": n,
        "publisher_port": pub_port, "subscriber_port": sub_port,
        "received": count.load(Ordering::Relaxed), "secs": elapsed,
        "shards": shards_json(redis, &before, &after, &spent),
    })
}

/// A channel whose slot `port` owns.
async fn sharded_channel(redis: &Redis, port: u16) -> String {
    let want = redis.ports.iter().position(|&p| p == port).unwrap();
    let names: Vec<String> = (0..64).map(|i| format!("bench-raw{{{i}}}")).collect();
    let owner = owners(redis, &names).await;
    names
        .into_iter()
        .zip(owner)
        .find(|(_, o)| *o == want)
        .map(|(n, _)| n)
        .expect("a channel on every master")
}

/// Classic PUBLISH on master 0 with the subscriber on master 1, then SPUBLISH on master 0
/// with the subscriber there, on a fresh cluster of `masters` masters.
async fn raw_publish(masters: usize, n: u64) -> Value {
    let redis = Redis::start(RedisKind::Cluster(masters)).await;
    let (p0, p1) = (redis.ports[0], redis.ports[1]);
    let classic = raw_phase(&redis, false, p0, p1, n).await;
    let sharded = raw_phase(&redis, true, p0, p0, n).await;
    json!({"masters": masters, "messages": n, "classic": classic, "sharded": sharded})
}

/// Puts `run` into the JSON beside `out` (replacing an earlier `redis-scaling` entry) and
/// regenerates `out` from it, so the full run's other numbers stay as they were.
pub fn merge(out: &Path, mut run: Value) {
    let raw = out.with_extension("json");
    let mut runs: Vec<Value> = std::fs::read_to_string(&raw)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    run["merged"] = json!(true);
    runs.retain(|r| r["scenario"] != "redis-scaling");
    runs.push(run);
    let doc = crate::report::markdown(&runs, crate::report::was_quick(&runs));
    std::fs::write(out, doc).expect("write report");
    std::fs::write(&raw, serde_json::to_string_pretty(&runs).unwrap()).expect("write raw results");
    eprintln!(
        "merged the redis-scaling run into {} and {}",
        raw.display(),
        out.display()
    );
}
