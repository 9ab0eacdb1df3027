//! `hubcast-bench`: starts Redis and two nodes of a system (hubcast, the socketioxide peer
//! or the Node Socket.IO peer), connects WebSocket clients speaking its protocol, spreads
//! them so every group has members on every node, publishes over HTTP, and reports one
//! JSON line per scenario plus a table. `floor` measures the kernel's cost of one loopback
//! socket write of a delivery's size. `redis-scaling` runs hubcast's fan-out on one Redis
//! and on a Redis Cluster. `all` runs the three systems, the raw Redis baseline, the Redis
//! Cluster comparison and the floor back to back and writes BENCHMARKS.md.

mod client;
mod floor;
mod paper;
mod procs;
mod report;
mod scaling;
mod scaling_report;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use serde_json::{json, Value};

use client::{Client, ClientResult, Publisher, Shared, System};
use procs::{CpuMeter, Proc, Redis, RedisKind};

/// Where `cargo build --release --manifest-path bench/peers/socketioxide/Cargo.toml` puts
/// the socketioxide peer: under `$CARGO_TARGET_DIR` when that is set, else under the
/// peer's own `target/` (it is a workspace of its own).
fn default_socketioxide() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(
            || PathBuf::from("bench/peers/socketioxide/target"),
            PathBuf::from,
        )
        .join("release/socketioxide-peer")
}

#[derive(Parser)]
#[command(
    name = "hubcast-bench",
    about = "Load generator for hubcast and its Socket.IO peers"
)]
struct Cli {
    /// The hubcast binary.
    #[arg(long, default_value = "target/release/hubcast", global = true)]
    hubcast: PathBuf,
    /// The Socket.IO peer's folder (server.js, node_modules).
    #[arg(long, default_value = "bench/peers/socketio", global = true)]
    socketio: PathBuf,
    /// The socketioxide peer's release binary [default: $CARGO_TARGET_DIR/release/socketioxide-peer
    /// if CARGO_TARGET_DIR is set, else bench/peers/socketioxide/target/release/socketioxide-peer].
    #[arg(long, default_value_os_t = default_socketioxide(), hide_default_value = true, global = true)]
    socketioxide: PathBuf,
    /// Which system to drive.
    #[arg(long, value_parser = ["hubcast", "socketio", "socketioxide"], default_value = "hubcast", global = true)]
    system: String,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Clone)]
enum Scenario {
    /// C clients in G groups over N nodes: a paced phase for latency, then a closed loop.
    Fanout {
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        #[arg(long, default_value_t = 100)]
        groups: usize,
        #[arg(long, default_value_t = 2)]
        nodes: usize,
        #[arg(long, default_value_t = 500)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        paced_secs: u64,
        #[arg(long, default_value_t = 10)]
        closed_secs: u64,
    },
    /// C idle connections on one node: RSS per connection.
    Idle {
        #[arg(long, default_value_t = 10_000)]
        clients: usize,
    },
    /// Deliveries/s and latency for groups of 1, 10, 100 and 1000 members.
    GroupSize {
        #[arg(long, default_value_t = 1000)]
        members: usize,
        #[arg(long, default_value_t = 5)]
        secs: u64,
    },
    /// Joins and leaves per second; subscription state checked at the end (hubcast).
    Churn {
        #[arg(long, default_value_t = 200)]
        clients: usize,
        #[arg(long, default_value_t = 10)]
        secs: u64,
    },
    /// Raw Redis: redis-benchmark PUBLISH, and one subscriber's receive rate.
    Redis,
    /// hubcast's fan-out on one Redis server and on a Redis Cluster of M masters (no
    /// replicas) in one run, with every Redis process's CPU and command counts; then N raw
    /// PUBLISH against N SPUBLISH on such a cluster, with its bus messages.
    RedisScaling {
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        #[arg(long, default_value_t = 100)]
        groups: usize,
        #[arg(long, default_value_t = 2)]
        nodes: usize,
        #[arg(long, default_value_t = 500)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        paced_secs: u64,
        #[arg(long, default_value_t = 10)]
        closed_secs: u64,
        #[arg(long, default_value_t = 3)]
        masters: usize,
        /// Messages of each raw phase (PUBLISH, SPUBLISH).
        #[arg(long, default_value_t = 500_000)]
        raw_messages: u64,
        /// Merge the result into this report's JSON (`BENCHMARKS.json` beside it) and
        /// regenerate the report from it; the other entries stay as they were.
        #[arg(long)]
        merge: Option<PathBuf>,
    },
    /// The kernel floor: one writer thread writing delivery-sized frames round-robin to N
    /// loopback TCP sockets; its CPU per write (no --system involved).
    Floor {
        /// Socket pairs.
        #[arg(long, default_value_t = 1000)]
        pairs: usize,
        /// Bytes per write, WebSocket header included (`all` uses the size of hubcast's
        /// fan-out deliveries measured in the same run).
        #[arg(long, default_value_t = DEFAULT_FRAME_BYTES)]
        frame_bytes: usize,
        /// How long to write.
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
        /// Stop after this many writes, if that comes first.
        #[arg(long)]
        writes: Option<u64>,
    },
    /// BENCHMARKS.md again from the BENCHMARKS.json beside it, measuring nothing (after
    /// an edit of bench/changes.md or of the report's code).
    Report {
        #[arg(long, default_value = "BENCHMARKS.md")]
        out: PathBuf,
        /// First merge this saved `redis-scaling` result (its JSON line from stdout).
        #[arg(long)]
        add: Option<PathBuf>,
    },
    /// Everything, for the three systems, then BENCHMARKS.md.
    All {
        /// Where to write the report.
        #[arg(long, default_value = "BENCHMARKS.md")]
        out: PathBuf,
        /// Shorter phases (for a quick look; the report says so).
        #[arg(long)]
        quick: bool,
        /// Publishes per second of the publish-latency phase.
        #[arg(long, default_value_t = 5000)]
        publish_rate: u64,
        /// Connection counts of the idle scenario (the process file limit here is 20 000).
        #[arg(long, value_delimiter = ',', default_value = "10000,19000")]
        idle_clients: Vec<usize>,
    },
}

/// Wire size (WebSocket header + SignalR record) of a fan-out delivery from hubcast, as
/// `hubcast-bench fanout` measures it (`delivery_wire_bytes`): the `floor` default.
const DEFAULT_FRAME_BYTES: usize = 76;

/// The systems `all` compares, hubcast first.
const SYSTEMS: [System; 3] = [System::Hubcast, System::Socketioxide, System::SocketIo];

/// Started processes of one system, with their addresses. Fields drop in order: the
/// nodes are stopped before Redis, so none of them logs a lost Redis connection.
struct Cluster {
    nodes: Vec<(Proc, String)>,
    redis: Redis,
    redis_port: u16,
    /// Per-shard counts from Redis's start to the nodes' readiness.
    setup: Vec<scaling::Snapshot>,
    _dir: PathBuf,
}

impl Cluster {
    async fn start(cli: &Cli, system: System, kind: RedisKind, n: usize) -> Self {
        let dir = std::env::temp_dir().join(format!("hubcast-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let redis = Redis::start(kind).await;
        assert!(
            system == System::Hubcast || kind == RedisKind::Standalone,
            "only hubcast runs on a Redis Cluster here"
        );
        let redis_port = redis.ports[0];
        let url = redis.url();
        let setup = scaling::snapshot(&redis.ports).await;
        let config = procs::write_bench_config(&dir);
        let mut nodes = Vec::new();
        for i in 0..n {
            nodes.push(match system {
                System::Hubcast => {
                    procs::start_hubcast(&cli.hubcast, Some(&url), &config, &format!("node{i}"))
                        .await
                }
                System::SocketIo => {
                    procs::start_socketio(&cli.socketio, redis_port, &format!("node{i}")).await
                }
                System::Socketioxide => {
                    procs::start_socketioxide(&cli.socketioxide, redis_port, &format!("node{i}"))
                        .await
                }
            });
        }
        Self {
            redis,
            redis_port,
            setup,
            nodes,
            _dir: dir,
        }
    }

    fn pids(&self) -> Vec<(String, u32)> {
        let mut v: Vec<(String, u32)> = self
            .nodes
            .iter()
            .map(|(p, _)| (p.name.clone(), p.pid()))
            .collect();
        v.extend(self.redis.pids());
        v.push(("loadgen".into(), 0));
        v
    }
}

/// Source addresses for client sockets: 127.0.0.2 … 127.0.0.251, each with its own port
/// range. Every connection takes the next slot, so no address serves more than 20 000
/// connections in a run and closed ones still in TIME_WAIT never exhaust its range (28 000
/// ports here); a run starts at an address picked by its process id, so back-to-back runs
/// do not reuse the previous run's ports either.
fn next_source() -> Ipv4Addr {
    static NEXT: std::sync::OnceLock<AtomicUsize> = std::sync::OnceLock::new();
    let next = NEXT.get_or_init(|| AtomicUsize::new((std::process::id() as usize % 250) * 20_000));
    let i = next.fetch_add(1, Ordering::Relaxed);
    Ipv4Addr::new(127, 0, 0, 2 + ((i / 20_000) % 250) as u8)
}

async fn connect_all(system: System, placements: &[(String, usize)]) -> Vec<Client> {
    let mut out = Vec::with_capacity(placements.len());
    for chunk in placements.chunks(200) {
        let tasks: Vec<_> = chunk
            .iter()
            .map(|(base, group)| {
                let (base, group, source) = (base.clone(), *group, next_source());
                tokio::spawn(async move {
                    // A server that never answers a handshake or join fails the run
                    // instead of hanging it.
                    let connect = Client::connect(system, &base, source, group);
                    match tokio::time::timeout(Duration::from_secs(30), connect).await {
                        Ok(r) => r,
                        Err(_) => Err(std::io::Error::other(
                            "no handshake and join answer within 30 s",
                        )),
                    }
                })
            })
            .collect();
        for t in tasks {
            out.push(t.await.unwrap().expect("client connects"));
        }
    }
    out
}

fn merge(results: &[ClientResult], phase: usize) -> Histogram<u64> {
    let mut h = Histogram::<u64>::new(3).unwrap();
    for r in results {
        let _ = h.add(&r.hist[phase]);
    }
    h
}

fn quantiles(h: &Histogram<u64>) -> Value {
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    json!({"p50_ms": ms(0.5), "p99_ms": ms(0.99), "p999_ms": ms(0.999), "max_ms": h.max() as f64 / 1000.0, "count": h.len()})
}

fn cpu_json(cpu: &[(String, f64)]) -> Value {
    Value::Object(
        cpu.iter()
            .map(|(n, s)| (n.clone(), json!((s * 1000.0).round() / 1000.0)))
            .collect(),
    )
}

/// Waits until `expected` deliveries arrived, or the timeout passed.
async fn drain(shared: &Shared, expected: u64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while shared.received.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[allow(clippy::too_many_arguments)]
async fn fanout(
    cli: &Cli,
    system: System,
    redis: RedisKind,
    clients: usize,
    groups: usize,
    nodes: usize,
    rate: u64,
    paced_secs: u64,
    closed_secs: u64,
) -> Value {
    let cluster = Cluster::start(cli, system, redis, nodes).await;
    // Client i joins group i % G on node (i / G) % N: every group has members on every node.
    let placements: Vec<(String, usize)> = (0..clients)
        .map(|i| (cluster.nodes[(i / groups) % nodes].1.clone(), i % groups))
        .collect();
    let members: Vec<u64> = (0..groups)
        .map(|g| placements.iter().filter(|(_, pg)| *pg == g).count() as u64)
        .collect();
    let conns = connect_all(system, &placements).await;
    let shared = Arc::new(Shared::default());
    let readers: Vec<_> = conns
        .into_iter()
        .map(|c| tokio::spawn(c.run(shared.clone())))
        .collect();
    let publisher = Publisher::new(system);
    let bases: Vec<String> = cluster.nodes.iter().map(|(_, b)| b.clone()).collect();
    let mut seq = vec![0u64; groups];
    let mut expected = 0u64;

    // Paced phase: a fixed rate, for latency.
    let paced_redis = scaling::snapshot(&cluster.redis.ports).await;
    let machine0 = procs::machine_busy_seconds();
    let cpu = CpuMeter::start(&cluster.pids());
    let mut http_paced = Histogram::<u64>::new(3).unwrap();
    let total = rate * paced_secs;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let start = Instant::now();
    let mut inflight = Vec::with_capacity(total as usize);
    for k in 0..total {
        let g = (k as usize) % groups;
        let s = seq[g];
        seq[g] += 1;
        expected += members[g];
        let (p, base) = (publisher.clone(), bases[k as usize % bases.len()].clone());
        tokio::time::sleep_until((start + interval * (k as u32)).into()).await;
        inflight.push(tokio::spawn(async move { p.publish(&base, g, s, 0).await }));
    }
    let mut failed = 0u64;
    for t in inflight {
        match t.await.unwrap() {
            Some(us) => {
                let _ = http_paced.record(us.max(1));
            }
            None => failed += 1,
        }
    }
    drain(&shared, expected, Duration::from_secs(10)).await;
    let paced_cpu = cpu.stop();
    let paced_machine = procs::machine_busy_seconds() - machine0;
    let paced_delivered = shared.received.load(Ordering::Relaxed);
    let closed_redis = scaling::snapshot(&cluster.redis.ports).await;
    let setup_shards = scaling::shards_json(&cluster.redis, &cluster.setup, &paced_redis, &[]);
    let paced_shards =
        scaling::shards_json(&cluster.redis, &paced_redis, &closed_redis, &paced_cpu);

    // Closed loop: one sequential publisher per group, as fast as they go.
    let machine0 = procs::machine_busy_seconds();
    let cpu = CpuMeter::start(&cluster.pids());
    let before = shared.received.load(Ordering::Relaxed);
    let stop_at = Instant::now() + Duration::from_secs(closed_secs);
    let loops: Vec<_> = (0..groups)
        .map(|g| {
            let (p, base, first) = (publisher.clone(), bases[g % bases.len()].clone(), seq[g]);
            tokio::spawn(async move {
                let mut s = first;
                let mut h = Histogram::<u64>::new(3).unwrap();
                let mut failed = 0u64;
                while Instant::now() < stop_at {
                    match p.publish(&base, g, s, 1).await {
                        Some(us) => {
                            let _ = h.record(us.max(1));
                        }
                        None => failed += 1,
                    }
                    s += 1;
                }
                (g, s, h, failed)
            })
        })
        .collect();
    let mut http_closed = Histogram::<u64>::new(3).unwrap();
    let mut published_closed = 0u64;
    for l in loops {
        let (g, s, h, f) = l.await.unwrap();
        published_closed += s - seq[g];
        expected += (s - seq[g]) * members[g];
        seq[g] = s;
        let _ = http_closed.add(&h);
        failed += f;
    }
    let publish_elapsed = closed_secs as f64;
    drain(&shared, expected, Duration::from_secs(30)).await;
    let closed_cpu = cpu.stop();
    let closed_machine = procs::machine_busy_seconds() - machine0;
    let closed_kernel = cpu.kernel();
    let closed_delivered = shared.received.load(Ordering::Relaxed) - before;
    let end_redis = scaling::snapshot(&cluster.redis.ports).await;
    let closed_shards =
        scaling::shards_json(&cluster.redis, &closed_redis, &end_redis, &closed_cpu);
    // Commands a script runs are counted too (its inner SPUBLISH, XADD, …), so the
    // publish path's round trips are the script calls alone: hubcast publishes only
    // from Lua.
    let script_calls = scaling::calls(&closed_shards, &["evalsha", "eval", "fcall"]);
    let all_calls = scaling::calls(&closed_shards, &[]);
    let channels: Vec<String> = (0..groups)
        .map(|g| format!("bench:tasks:group:{{g{g}}}"))
        .collect();
    let owners = scaling::owners(&cluster.redis, &channels).await;
    let groups_per_shard: Vec<usize> = (0..cluster.redis.ports.len())
        .map(|i| owners.iter().filter(|&&o| o == i).count())
        .collect();

    shared.stop.store(true, Ordering::Relaxed);
    drop(cluster);
    let mut results = Vec::new();
    for r in readers {
        if let Ok(r) = tokio::time::timeout(Duration::from_secs(15), r).await {
            results.push(r.unwrap());
        }
    }
    let mut lost = 0u64;
    let mut dups = 0u64;
    let mut reordered = 0u64;
    for r in &results {
        dups += r.duplicates;
        reordered += r.reordered;
        lost += r.missing(seq[r.group]);
    }
    let server_cpu = |cpu: &[(String, f64)]| {
        cpu.iter()
            .filter(|(n, _)| n != "loadgen")
            .map(|(_, s)| s)
            .sum::<f64>()
    };
    let loadgen_cpu = |cpu: &[(String, f64)]| {
        cpu.iter()
            .filter(|(n, _)| n == "loadgen")
            .map(|(_, s)| s)
            .sum::<f64>()
    };
    // What the machine ran beside the processes measured (other work on its cores).
    let others = |machine: f64, cpu: &[(String, f64)]| {
        ((machine - cpu.iter().map(|(_, s)| s).sum::<f64>()).max(0.0) * 1000.0).round() / 1000.0
    };
    let per_delivery = |secs: f64, delivered: u64| secs * 1e6 / (delivered.max(1) as f64);
    let closed_server = server_cpu(&closed_cpu);
    let closed_server_kernel = server_cpu(&closed_kernel);
    let received: u64 = results.iter().map(|r| r.received).sum();
    let wire_bytes: u64 = results.iter().map(|r| r.delivery_bytes).sum();
    json!({
        "scenario": "fanout",
        "system": system.name(),
        "redis": redis.name(),
        "clients": clients, "groups": groups, "nodes": nodes,
        "paced": {
            "rate": rate, "secs": paced_secs, "published": total, "delivered": paced_delivered,
            "latency": quantiles(&merge(&results, 0)),
            "publish_http": quantiles(&http_paced),
            "cpu_seconds": cpu_json(&paced_cpu),
            "server_cpu_us_per_delivery": per_delivery(server_cpu(&paced_cpu), paced_delivered),
            "redis_shards": paced_shards,
            "other_processes_cpu_seconds": others(paced_machine, &paced_cpu),
        },
        "closed": {
            "secs": closed_secs, "published": published_closed, "delivered": closed_delivered,
            "publishes_per_sec": published_closed as f64 / publish_elapsed,
            "deliveries_per_sec": closed_delivered as f64 / publish_elapsed,
            "latency": quantiles(&merge(&results, 1)),
            "publish_http": quantiles(&http_closed),
            "cpu_seconds": cpu_json(&closed_cpu),
            "server_cpu_us_per_delivery": per_delivery(closed_server, closed_delivered),
            "server_user_us_per_delivery": per_delivery(closed_server - closed_server_kernel, closed_delivered),
            "server_system_us_per_delivery": per_delivery(closed_server_kernel, closed_delivered),
            "server_kernel_share": closed_server_kernel / closed_server.max(1e-9),
            "loadgen_cpu_seconds": loadgen_cpu(&closed_cpu),
            "loadgen_cpu_us_per_delivery": per_delivery(loadgen_cpu(&closed_cpu), closed_delivered),
            "redis_publish_path_commands_per_publish": if system == System::Hubcast { json!(script_calls as f64 / published_closed.max(1) as f64) } else { Value::Null },
            "redis_commands_per_publish": if system == System::Hubcast { json!(all_calls as f64 / published_closed.max(1) as f64) } else { Value::Null },
            "redis_shards": closed_shards,
            "other_processes_cpu_seconds": others(closed_machine, &closed_cpu),
        },
        "redis_setup_shards": setup_shards,
        "redis_groups_per_shard": groups_per_shard,
        "delivery_wire_bytes": wire_bytes as f64 / received.max(1) as f64,
        "lost": lost, "duplicated": dups, "reordered": reordered, "failed_publishes": failed,
    })
}

async fn idle(cli: &Cli, system: System, clients: usize) -> Value {
    let cluster = Cluster::start(cli, system, RedisKind::Standalone, 1).await;
    let (node, base) = &cluster.nodes[0];
    // Let the node settle before the baseline.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = procs::rss_bytes(node.pid());
    let placements: Vec<(String, usize)> = (0..clients).map(|i| (base.clone(), i % 100)).collect();
    // Each batch starts reading as soon as it is connected, so that clients answer
    // heartbeats (socketioxide pings at once; a slow connect of many clients would
    // otherwise outlast the ping timeout of the first ones).
    let shared = Arc::new(Shared::default());
    let started = Instant::now();
    let mut readers = Vec::with_capacity(clients);
    for batch in placements.chunks(1000) {
        for c in connect_all(system, batch).await {
            readers.push(tokio::spawn(c.run(shared.clone())));
        }
    }
    let connect_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = procs::rss_bytes(node.pid());
    let alive = readers.iter().filter(|r| !r.is_finished()).count();
    shared.stop.store(true, Ordering::Relaxed);
    for r in &readers {
        r.abort();
    }
    json!({
        "scenario": "idle", "system": system.name(), "clients": clients,
        "connected_at_end": alive,
        "rss_before_mib": before as f64 / 1048576.0,
        "rss_after_mib": after as f64 / 1048576.0,
        "rss_per_connection_kib": after.saturating_sub(before) as f64 / clients as f64 / 1024.0,
        "connect_secs": connect_secs,
    })
}

async fn group_size(cli: &Cli, system: System, members: usize, secs: u64) -> Value {
    let mut rows = Vec::new();
    for size in [1usize, 10, 100, 1000] {
        let groups = (members / size).max(1);
        let clients = groups * size;
        let r = fanout(
            cli,
            system,
            RedisKind::Standalone,
            clients,
            groups,
            2,
            100,
            2,
            secs,
        )
        .await;
        rows.push(json!({
            "group_size": size, "groups": groups, "clients": clients,
            "deliveries_per_sec": r["closed"]["deliveries_per_sec"],
            "latency": r["closed"]["latency"],
            "paced_latency": r["paced"]["latency"],
            "lost": r["lost"], "duplicated": r["duplicated"],
        }));
    }
    json!({"scenario": "group-size", "system": system.name(), "rows": rows})
}

async fn churn(cli: &Cli, system: System, clients: usize, secs: u64) -> Value {
    let cluster = Cluster::start(cli, system, RedisKind::Standalone, 2).await;
    let groups = 50usize;
    let placements: Vec<(String, usize)> = (0..clients)
        .map(|i| (cluster.nodes[i % 2].1.clone(), i % groups))
        .collect();
    let conns = connect_all(system, &placements).await;
    let stop_at = Instant::now() + Duration::from_secs(secs);
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            tokio::spawn(async move {
                let mut ops = 0u64;
                let mut k = i;
                while Instant::now() < stop_at {
                    let g = groups + (k % groups);
                    if c.join(g).await.is_err() || c.leave(g).await.is_err() {
                        break;
                    }
                    ops += 2;
                    k += 7;
                }
                (ops, c)
            })
        })
        .collect();
    let mut ops = 0u64;
    let mut kept = Vec::new();
    for t in tasks {
        let (n, c) = t.await.unwrap();
        ops += n;
        kept.push(c);
    }
    // Every client is left in its original group only; check the subscriptions match.
    // Leaves unsubscribe asynchronously, so allow the last ones a moment to land.
    let mut mismatches = 0u64;
    if system == System::Hubcast {
        let client =
            redis::Client::open(format!("redis://127.0.0.1:{}", cluster.redis_port)).unwrap();
        let mut c = client.get_multiplexed_async_connection().await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            mismatches = 0;
            for g in 0..2 * groups {
                let channel = format!("bench:tasks:group:{{g{g}}}");
                let (_, subs): (String, u64) = redis::cmd("PUBSUB")
                    .arg("NUMSUB")
                    .arg(&channel)
                    .query_async(&mut c)
                    .await
                    .unwrap();
                let want = if g < groups {
                    (0..2)
                        .filter(|n| {
                            placements
                                .iter()
                                .enumerate()
                                .any(|(i, (_, pg))| *pg == g && i % 2 == *n)
                        })
                        .count() as u64
                } else {
                    0
                };
                if subs != want {
                    mismatches += 1;
                }
            }
            if mismatches == 0 || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    drop(kept);
    json!({
        "scenario": "churn", "system": system.name(), "clients": clients, "secs": secs,
        "joins_and_leaves_per_sec": ops as f64 / secs as f64,
        "subscription_mismatches": if system == System::Hubcast { json!(mismatches) } else { Value::Null },
    })
}

async fn redis_baseline() -> Value {
    let (redis, port) = procs::start_redis().await;
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe("bench-baseline").await.unwrap();
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let c2 = counter.clone();
    let reader = tokio::spawn(async move {
        let mut stream = pubsub.into_on_message();
        while futures_util::StreamExt::next(&mut stream).await.is_some() {
            c2.fetch_add(1, Ordering::Relaxed);
        }
    });
    let n = 200_000;
    let started = Instant::now();
    let out = tokio::process::Command::new("redis-benchmark")
        .args([
            "-p",
            &port.to_string(),
            "-n",
            &n.to_string(),
            "-q",
            "PUBLISH",
            "bench-baseline",
            "{\"s\":1,\"t\":1,\"p\":1}",
        ])
        .output()
        .await
        .expect("redis-benchmark on PATH");
    let elapsed = started.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let rps: f64 = text
        .split_whitespace()
        .find_map(|w| w.parse::<f64>().ok().filter(|v| *v > 100.0))
        .unwrap_or(0.0);
    drain_counter(&counter, n, Duration::from_secs(10)).await;
    let received = counter.load(Ordering::Relaxed);
    reader.abort();
    drop(redis);
    json!({
        "scenario": "redis-baseline",
        "publish_requests_per_sec": rps,
        "subscriber_received": received,
        "subscriber_messages_per_sec": received as f64 / elapsed,
        "raw": text.trim(),
    })
}

pub(crate) async fn drain_counter(c: &std::sync::atomic::AtomicU64, want: u64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while c.load(Ordering::Relaxed) < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn emit(v: &Value) {
    println!("{v}");
    report::table(v);
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let system = match cli.system.as_str() {
        "socketio" => System::SocketIo,
        "socketioxide" => System::Socketioxide,
        _ => System::Hubcast,
    };
    match cli.scenario.clone() {
        Scenario::Fanout {
            clients,
            groups,
            nodes,
            rate,
            paced_secs,
            closed_secs,
        } => emit(
            &fanout(
                &cli,
                system,
                RedisKind::Standalone,
                clients,
                groups,
                nodes,
                rate,
                paced_secs,
                closed_secs,
            )
            .await,
        ),
        Scenario::Idle { clients } => emit(&idle(&cli, system, clients).await),
        Scenario::GroupSize { members, secs } => {
            emit(&group_size(&cli, system, members, secs).await)
        }
        Scenario::Churn { clients, secs } => emit(&churn(&cli, system, clients, secs).await),
        Scenario::Redis => emit(&redis_baseline().await),
        Scenario::RedisScaling {
            clients,
            groups,
            nodes,
            rate,
            paced_secs,
            closed_secs,
            masters,
            raw_messages,
            merge,
        } => {
            let shape = scaling::Shape {
                clients,
                groups,
                nodes,
                rate,
                paced_secs,
                closed_secs,
            };
            let v = scaling::run(&cli, shape, masters, raw_messages).await;
            emit(&v);
            if let Some(out) = merge {
                scaling::merge(&out, v);
            }
        }
        Scenario::Floor {
            pairs,
            frame_bytes,
            secs,
            writes,
        } => emit(&floor_blocking(pairs, frame_bytes, secs, writes).await),
        Scenario::Report {
            out,
            add: Some(add),
        } => {
            let text = std::fs::read_to_string(&add).expect("read the saved result");
            let v: Value = serde_json::from_str(text.trim()).expect("a saved result is JSON");
            assert_eq!(v["scenario"], "redis-scaling", "only redis-scaling merges");
            scaling::merge(&out, v);
        }
        Scenario::Report { out, add: None } => {
            let raw = out.with_extension("json");
            let text = std::fs::read_to_string(&raw).expect("read the raw results");
            let runs: Vec<Value> = serde_json::from_str(&text).expect("raw results are JSON");
            std::fs::write(&out, report::markdown(&runs, report::was_quick(&runs)))
                .expect("write report");
            eprintln!("wrote {} from {}", out.display(), raw.display());
        }
        Scenario::All {
            out,
            quick,
            publish_rate,
            idle_clients,
        } => {
            let (paced, closed, gs, floor_secs) = if quick {
                (3, 3, 2, 2.0)
            } else {
                (10, 10, 5, 5.0)
            };
            let mut runs = Vec::new();
            let keep = |runs: &mut Vec<Value>, v: Value| {
                emit(&v);
                runs.push(v);
            };
            for sys in SYSTEMS {
                let st = RedisKind::Standalone;
                keep(
                    &mut runs,
                    fanout(&cli, sys, st, 1000, 100, 2, 500, paced, closed).await,
                );
                keep(
                    &mut runs,
                    json!({"scenario": "publish-latency", "system": sys.name(), "rate": publish_rate,
                    "result": fanout(&cli, sys, st, 1000, 100, 2, publish_rate, paced, 1).await}),
                );
                for &n in &idle_clients {
                    keep(&mut runs, idle(&cli, sys, n).await);
                }
                keep(&mut runs, group_size(&cli, sys, 1000, gs).await);
                keep(&mut runs, churn(&cli, sys, 200, closed).await);
            }
            keep(&mut runs, redis_baseline().await);
            let shape = scaling::Shape {
                clients: 1000,
                groups: 100,
                nodes: 2,
                rate: 500,
                paced_secs: paced,
                closed_secs: closed,
            };
            keep(&mut runs, scaling::run(&cli, shape, 3, 500_000).await);
            // The floor writes frames the size of hubcast's fan-out deliveries in this run.
            let frame_bytes = runs
                .iter()
                .find(|r| r["scenario"] == "fanout" && r["system"] == "hubcast")
                .and_then(|r| r["delivery_wire_bytes"].as_f64())
                .filter(|b| *b >= 8.0)
                .map_or(DEFAULT_FRAME_BYTES, |b| b.round() as usize);
            let v = floor_blocking(1000, frame_bytes, floor_secs, None).await;
            keep(&mut runs, v);
            let doc = report::markdown(&runs, quick);
            std::fs::write(&out, doc).expect("write report");
            let raw = out.with_extension("json");
            std::fs::write(&raw, serde_json::to_string_pretty(&runs).unwrap())
                .expect("write raw results");
            eprintln!("wrote {} and {}", out.display(), raw.display());
        }
    }
}

/// The floor runs on threads of its own, off the async runtime.
async fn floor_blocking(pairs: usize, frame_bytes: usize, secs: f64, writes: Option<u64>) -> Value {
    tokio::task::spawn_blocking(move || floor::run(pairs, frame_bytes, secs, writes))
        .await
        .expect("floor run")
}
