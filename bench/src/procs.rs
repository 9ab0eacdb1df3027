//! The processes under test: redis-server (one server, or the masters of a Redis Cluster),
//! hubcast nodes, Socket.IO and socketioxide nodes; and what /proc says about their CPU
//! time and memory.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process, killed on drop.
pub struct Proc {
    pub name: String,
    pub child: Child,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until `url` answers 200, or panics after 20 s.
pub async fn wait_http_ok(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let http = reqwest::Client::new();
    loop {
        if let Ok(r) = http.get(url).send().await {
            if r.status().is_success() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{url} did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn start_redis() -> (Proc, u16) {
    let port = free_port();
    let child = spawn_redis(port, &[]);
    wait_redis(port).await;
    (
        Proc {
            name: "redis".into(),
            child,
        },
        port,
    )
}

fn spawn_redis(port: u16, extra: &[&str]) -> Child {
    Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(extra)
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server on PATH")
}

/// Waits until the server on `port` answers PING, or panics after 10 s.
async fn wait_redis(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
    loop {
        if let Ok(mut c) = client.get_multiplexed_async_connection().await {
            if redis::cmd("PING")
                .query_async::<String>(&mut c)
                .await
                .is_ok()
            {
                return;
            }
        }
        assert!(Instant::now() < deadline, "redis-server did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The Redis a system under test uses: one server, or the masters of a cluster.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RedisKind {
    Standalone,
    /// A Redis Cluster of this many masters, without replicas.
    Cluster(usize),
}

impl RedisKind {
    pub fn name(self) -> String {
        match self {
            Self::Standalone => "standalone".into(),
            Self::Cluster(n) => format!("cluster-{n}"),
        }
    }
}

/// Started Redis processes (named `redis`, or `redis0`… for a cluster's masters) and
/// their ports; killed on drop, a cluster's folder removed.
pub struct Redis {
    pub procs: Vec<Proc>,
    pub ports: Vec<u16>,
    pub kind: RedisKind,
    dir: Option<PathBuf>,
}

impl Redis {
    pub async fn start(kind: RedisKind) -> Self {
        match kind {
            RedisKind::Standalone => {
                let (p, port) = start_redis().await;
                Self {
                    procs: vec![p],
                    ports: vec![port],
                    kind,
                    dir: None,
                }
            }
            RedisKind::Cluster(n) => start_redis_cluster(n).await,
        }
    }

    /// The `--redis-url` for hubcast: the cluster's masters as seeds.
    pub fn url(&self) -> String {
        let addrs: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        match self.kind {
            RedisKind::Standalone => format!("redis://{}", addrs[0]),
            RedisKind::Cluster(_) => format!("redis+cluster://{}", addrs.join(",")),
        }
    }

    pub fn pids(&self) -> Vec<(String, u32)> {
        self.procs
            .iter()
            .map(|p| (p.name.clone(), p.pid()))
            .collect()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.procs.clear();
        if let Some(d) = &self.dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// A free port below 50 000 whose cluster bus port (+10 000) is free too.
fn free_cluster_port() -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        if p < 50_000 && TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok() {
            return p;
        }
    }
}

/// `masters` cluster-enabled servers joined by `redis-cli --cluster create` (or one
/// server owning every slot) with no replicas (a replica would take CPU from the two cores the shards are measured on),
/// waited for until every master reports `cluster_state:ok` and knows the others.
pub async fn start_redis_cluster(masters: usize) -> Redis {
    let dir = std::env::temp_dir().join(format!(
        "hubcast-bench-cluster-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let mut procs = Vec::new();
    let mut ports = Vec::new();
    for i in 0..masters {
        let port = free_cluster_port();
        let conf = dir.join(format!("nodes-{port}.conf"));
        let child = spawn_redis(
            port,
            &[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                conf.to_str().unwrap(),
                "--dir",
                dir.to_str().unwrap(),
            ],
        );
        procs.push(Proc {
            name: format!("redis{i}"),
            child,
        });
        ports.push(port);
    }
    for &p in &ports {
        wait_redis(p).await;
    }
    if masters == 1 {
        // redis-cli refuses to create a cluster of fewer than three masters: one server
        // simply takes every slot.
        let client = redis::Client::open(format!("redis://127.0.0.1:{}", ports[0])).unwrap();
        let mut c = client.get_multiplexed_async_connection().await.unwrap();
        let () = redis::cmd("CLUSTER")
            .arg("ADDSLOTSRANGE")
            .arg(0)
            .arg(16383)
            .query_async(&mut c)
            .await
            .expect("CLUSTER ADDSLOTSRANGE");
    } else {
        let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli on PATH");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    for &p in &ports {
        let client = redis::Client::open(format!("redis://127.0.0.1:{p}")).unwrap();
        let mut c = client.get_multiplexed_async_connection().await.unwrap();
        loop {
            let info: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query_async(&mut c)
                .await
                .unwrap_or_default();
            let ok = info.contains("cluster_state:ok")
                && info.contains(&format!("cluster_known_nodes:{masters}"));
            if ok {
                break;
            }
            assert!(Instant::now() < deadline, "the cluster did not form");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Redis {
        procs,
        ports,
        kind: RedisKind::Cluster(masters),
        dir: Some(dir),
    }
}

/// Settings that take hubcast's protective limits out of the way of a load test.
pub fn write_bench_config(dir: &Path) -> PathBuf {
    let path = dir.join("hubcast-bench.toml");
    std::fs::write(
        &path,
        "[limits]\n\
         publishes_per_key_per_second = 10000000\n\
         invocations_per_second = 1000000\n\
         max_connections_per_node = 1000000\n\
         max_concurrent_handshakes = 100000\n\
         outbound_queue = 4096\n\
         dispatch_queue = 65536\n\
         max_open_sockets = 1000000\n",
    )
    .unwrap();
    path
}

pub async fn start_hubcast(
    bin: &Path,
    redis_url: Option<&str>,
    config: &Path,
    name: &str,
) -> (Proc, String) {
    let port = free_port();
    let mut cmd = Command::new(bin);
    cmd.args([
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--metrics-listen",
        "127.0.0.1:0",
        "--insecure",
    ])
    .arg("--config")
    .arg(config)
    .args(["--node-id", name])
    // The default log level, as deployed: a publish logs a line at INFO.
    .env_remove("RUST_LOG")
    .stdout(Stdio::null());
    if let Some(url) = redis_url {
        cmd.args(["--redis-url", url, "--redis-prefix", "bench"]);
    }
    let child = cmd.spawn().expect("hubcast binary (cargo build --release)");
    let base = format!("127.0.0.1:{port}");
    wait_http_ok(&format!("http://{base}/readyz")).await;
    (
        Proc {
            name: name.into(),
            child,
        },
        base,
    )
}

/// The Node Socket.IO peer: `node server.js` in its folder.
pub async fn start_socketio(dir: &Path, redis_port: u16, name: &str) -> (Proc, String) {
    let mut cmd = Command::new("node");
    cmd.arg(dir.join("server.js"));
    start_peer(cmd, "node on PATH", redis_port, name).await
}

/// The socketioxide peer: its release binary, with the Node peer's command line.
pub async fn start_socketioxide(bin: &Path, redis_port: u16, name: &str) -> (Proc, String) {
    let cmd = Command::new(bin);
    let hint = "socketioxide peer binary (cargo build --release --manifest-path \
                bench/peers/socketioxide/Cargo.toml, or pass --socketioxide)";
    start_peer(cmd, hint, redis_port, name).await
}

/// Starts a Socket.IO peer (both take the same flags) and waits for its `/healthz`.
async fn start_peer(mut cmd: Command, hint: &str, redis_port: u16, name: &str) -> (Proc, String) {
    let port = free_port();
    let child = cmd
        .args([
            "--port",
            &port.to_string(),
            "--redis",
            &format!("redis://127.0.0.1:{redis_port}"),
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect(hint);
    let base = format!("127.0.0.1:{port}");
    wait_http_ok(&format!("http://{base}/healthz")).await;
    (
        Proc {
            name: name.into(),
            child,
        },
        base,
    )
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// CPU seconds (user + system) a process has used, from /proc/{pid}/stat.
pub fn cpu_seconds(pid: u32) -> f64 {
    let (user, system) = cpu_split(pid);
    user + system
}

/// CPU seconds a process has used in user space and in the kernel.
pub fn cpu_split(pid: u32) -> (f64, f64) {
    if pid == 0 {
        stat_split("/proc/self/stat")
    } else {
        stat_split(&format!("/proc/{pid}/stat"))
    }
}

/// CPU seconds the calling thread has used in user space and in the kernel.
pub fn thread_cpu_split() -> (f64, f64) {
    stat_split("/proc/thread-self/stat")
}

fn stat_split(path: &str) -> (f64, f64) {
    let Ok(stat) = std::fs::read_to_string(path) else {
        return (0.0, 0.0);
    };
    // The command name may hold spaces: fields start after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let stime: f64 = fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    (utime / clock_ticks(), stime / clock_ticks())
}

/// CPU seconds all processes on the machine have run (all cores, user and system), from
/// the first line of /proc/stat: what else ran beside the processes under test.
pub fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system: what processes ran. Interrupt and softirq time (the loopback
    // traffic of the processes measured, too) is not counted to any process.
    let busy: f64 = fields.iter().take(3).sum();
    busy / clock_ticks()
}

/// Resident memory of a process, in bytes.
pub fn rss_bytes(pid: u32) -> u64 {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return 0;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// CPU seconds of a set of processes, sampled at the start of a phase.
pub struct CpuMeter {
    start: Vec<(String, u32, f64)>,
    kernel_start: Vec<f64>,
}

impl CpuMeter {
    pub fn start(procs: &[(String, u32)]) -> Self {
        Self {
            start: procs
                .iter()
                .map(|(n, p)| (n.clone(), *p, cpu_seconds(*p)))
                .collect(),
            kernel_start: procs.iter().map(|(_, p)| cpu_split(*p).1).collect(),
        }
    }

    /// Kernel CPU seconds each process used since the start.
    pub fn kernel(&self) -> Vec<(String, f64)> {
        self.start
            .iter()
            .zip(&self.kernel_start)
            .map(|((n, p, _), k)| (n.clone(), cpu_split(*p).1 - k))
            .collect()
    }

    /// CPU seconds each process used since the start.
    pub fn stop(&self) -> Vec<(String, f64)> {
        self.start
            .iter()
            .map(|(n, p, s)| (n.clone(), cpu_seconds(*p) - s))
            .collect()
    }
}
