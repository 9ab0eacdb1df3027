//! Test harness: nodes on port 0 in this process, and a raw SignalR WebSocket client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hubcast::app::App;
use hubcast::backplane::MemoryBus;
use hubcast::config::Config;
use hubcast::node::Node;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long any single wait in a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(30);

/// A redis-server of the test's own, on a free port, killed when dropped.
pub struct RedisServer {
    pub port: u16,
    child: Option<std::process::Child>,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl RedisServer {
    pub async fn start() -> Self {
        let mut s = Self {
            port: free_port(),
            child: None,
        };
        s.restart().await;
        s
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port and waits until it answers PING.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test.sh installs it)");
        self.child = Some(child);
        let client = redis::Client::open(self.url()).unwrap();
        let deadline = tokio::time::Instant::now() + WAIT;
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
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills the server (as an outage would).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether the behaviour tests run on Redis (`HUBCAST_TEST_BACKPLANE=redis`) instead of
/// the in-process backplane.
pub fn on_redis() -> bool {
    std::env::var("HUBCAST_TEST_BACKPLANE").is_ok_and(|v| v == "redis")
}

/// A prefix no other test uses.
pub fn unique_prefix() -> String {
    format!("t{}", &hubcast::ids::random_token()[..12])
}

/// Points a config at a Redis server with a fresh prefix and fast heartbeats.
pub fn use_redis(config: &mut Config, redis: &RedisServer, prefix: &str) {
    use_redis_url(config, &redis.url(), prefix);
}

/// As [`use_redis`], for any Redis URL (a cluster's, a sentinel's).
pub fn use_redis_url(config: &mut Config, url: &str, prefix: &str) {
    config.redis = Some(hubcast::config::RedisSettings {
        url: url.to_owned(),
        prefix: prefix.to_owned(),
    });
    config.cluster.heartbeat_ttl_ms = 2_000;
    config.cluster.heartbeat_interval_ms = 500;
}

/// A running node.
pub struct TestApp {
    pub addr: SocketAddr,
    pub node: Arc<Node>,
    stop: Option<oneshot::Sender<()>>,
    pub task: Option<JoinHandle<std::io::Result<()>>>,
    /// The Redis server this node started for itself, if any.
    pub redis: Option<RedisServer>,
}

pub fn test_config() -> Config {
    Config::insecure_for_listen("127.0.0.1:0".parse().unwrap())
}

impl TestApp {
    /// A node on the backplane the run asks for (see [`on_redis`]).
    pub async fn spawn() -> Self {
        Self::spawn_with(test_config()).await
    }

    /// As [`Self::spawn`], with a config.
    pub async fn spawn_with(mut config: Config) -> Self {
        if on_redis() {
            let redis = RedisServer::start().await;
            use_redis(&mut config, &redis, &unique_prefix());
            let mut app = Self::start(config, None).await;
            app.redis = Some(redis);
            app
        } else {
            Self::start(config, Some(Arc::new(MemoryBus::default()))).await
        }
    }

    /// A node on an in-process bus, whatever the run asks for.
    pub async fn spawn_in_memory(config: Config) -> Self {
        Self::start(config, Some(Arc::new(MemoryBus::default()))).await
    }

    /// A node on Redis (`config.redis` set by the caller), or on `bus`.
    pub async fn start(config: Config, bus: Option<Arc<MemoryBus>>) -> Self {
        if std::env::var_os("TEST_LOG").is_some() {
            // Kept for the whole test process: dropping the guard stops the writer.
            std::mem::forget(hubcast::telemetry::init(hubcast::config::LogFormat::Human));
        }
        let on_redis = bus.is_none();
        let app = match bus {
            Some(bus) => App::build_on_bus(config, bus).await,
            None => App::build(config).await,
        }
        .expect("node starts");
        let addr = app.local_addr();
        let node = app.node();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run(async move {
            let _ = rx.await;
        }));
        let app = Self {
            addr,
            node,
            stop: Some(tx),
            task: Some(task),
            redis: None,
        };
        // The in-process bus is connected from the start; Redis needs a moment.
        if on_redis {
            app.wait_ready().await;
        }
        app
    }

    /// Waits until `/readyz` answers 200 (the backplane round trip works).
    pub async fn wait_ready(&self) {
        wait_ready_at(&self.url("")).await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// Triggers shutdown and returns the run task.
    pub fn shutdown(&mut self) -> JoinHandle<std::io::Result<()>> {
        let _ = self.stop.take().expect("not yet stopped").send(());
        self.task.take().expect("running")
    }

    pub async fn publish(&self, hub: &str, group: &str, target: &str, args: Value) -> Value {
        let resp = reqwest::Client::new()
            .post(self.url(&format!("/api/v1/hubs/{hub}/groups/{group}")))
            .json(&json!({ "target": target, "arguments": args }))
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            202,
            "publish refused: {}",
            resp.text().await.unwrap()
        );
        resp.json().await.unwrap()
    }

    pub async fn group_members(&self, hub: &str, group: &str) -> u64 {
        let v: Value = reqwest::get(self.url(&format!("/api/v1/hubs/{hub}/groups/{group}")))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["members"].as_u64().unwrap()
    }
}

/// Waits until `{base}/readyz` answers 200 (the backplane round trip works), or fails
/// after [`WAIT`].
pub async fn wait_ready_at(base: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(r) = reqwest::get(format!("{base}/readyz")).await {
            if r.status() == 200 {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node at {base} not ready in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `f` is true, polling, or fails after [`WAIT`].
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Polls `check` until it is true, or fails naming `what` after [`WAIT`].
pub async fn until<F: std::future::Future<Output = bool>>(
    what: &str,
    mut check: impl FnMut() -> F,
) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// `POST {hub_path}/negotiate?negotiateVersion=1` without a credential: its JSON answer.
pub async fn negotiate(app: &TestApp, hub_path: &str) -> Value {
    reqwest::Client::new()
        .post(app.url(&format!("{hub_path}/negotiate?negotiateVersion=1")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A client token for `user` on `hub`, from `POST {base}/api/hubs/{hub}/:generateToken`
/// with the publisher key `access`.
pub async fn client_token(base: &str, hub: &str, user: &str, access: &str) -> String {
    let r = reqwest::Client::new()
        .post(format!(
            "{base}/api/hubs/{hub}/:generateToken?api-version=2024-12-01&userId={user}"
        ))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A raw SignalR JSON client over tokio-tungstenite.
pub struct Client {
    pub ws: Ws,
    buf: Vec<u8>,
    next_id: u64,
    /// When this client last sent something (wall clock, so paused-clock tests that
    /// check the server's client timeout never see a keep-alive from here).
    last_sent: std::time::Instant,
}

/// How often a reading client sends a Ping, as the official clients do (every 15 s), so
/// a long read on a loaded machine is not taken for a dead client.
const CLIENT_PING_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

impl Client {
    /// Opens the WebSocket without negotiating (skipNegotiation).
    pub async fn open(url: &str) -> Self {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket opens");
        Self {
            ws,
            buf: Vec::new(),
            next_id: 0,
            last_sent: std::time::Instant::now(),
        }
    }

    /// Negotiates (v1), opens with `?id=`, and completes the handshake.
    pub async fn connect(app: &TestApp, hub_path: &str) -> Self {
        let neg = negotiate(app, hub_path).await;
        let token = neg["connectionToken"].as_str().unwrap();
        let mut c = Self::open(&app.ws_url(&format!("{hub_path}?id={token}"))).await;
        c.handshake().await;
        c
    }

    /// Opens without negotiating and completes the handshake.
    pub async fn connect_direct(app: &TestApp, hub_path: &str) -> Self {
        let mut c = Self::open(&app.ws_url(hub_path)).await;
        c.handshake().await;
        c
    }

    pub async fn handshake(&mut self) {
        self.send_raw("{\"protocol\":\"json\",\"version\":1}\u{1e}")
            .await;
        let reply = self.next_record().await.expect("handshake reply");
        assert_eq!(reply, json!({}), "handshake reply");
    }

    pub async fn send_raw(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
        self.last_sent = std::time::Instant::now();
    }

    pub async fn send(&mut self, v: Value) {
        self.send_raw(&format!("{v}\u{1e}")).await;
    }

    /// The next record, or `None` when the socket closed.
    pub async fn next_record(&mut self) -> Option<Value> {
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == 0x1e) {
                let rec: Vec<u8> = self.buf.drain(..=pos).collect();
                return Some(
                    serde_json::from_slice(&rec[..rec.len() - 1]).expect("record is JSON"),
                );
            }
            match self.ws.next().await {
                Some(Ok(Message::Text(t))) => self.buf.extend_from_slice(t.as_bytes()),
                Some(Ok(Message::Binary(b))) => self.buf.extend_from_slice(&b),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => {}
            }
        }
    }

    /// The next record within [`WAIT`].
    pub async fn recv(&mut self) -> Option<Value> {
        tokio::time::timeout(WAIT, self.next_record())
            .await
            .expect("a record in time")
    }

    /// The next record that is not a Ping.
    pub async fn recv_non_ping(&mut self) -> Option<Value> {
        loop {
            let r = self.recv().await?;
            if r["type"] != 6 {
                return Some(r);
            }
        }
    }

    /// Invokes a hub method and returns its Completion.
    pub async fn invoke(&mut self, target: &str, args: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id.to_string();
        self.send(json!({ "type": 1, "invocationId": id, "target": target, "arguments": args }))
            .await;
        loop {
            let r = self.recv().await.expect("connection open");
            if r["type"] == 3 && r["invocationId"] == id.as_str() {
                return r;
            }
        }
    }

    /// Invokes and asserts a void success.
    pub async fn call(&mut self, target: &str, args: Value) {
        let c = self.invoke(target, args).await;
        assert!(c.get("error").is_none(), "{target} failed: {c}");
    }

    /// The next Invocation from the server.
    pub async fn next_invocation(&mut self) -> Value {
        loop {
            if self.last_sent.elapsed() >= CLIENT_PING_EVERY {
                self.send(json!({"type": 6})).await;
            }
            let r = self.recv().await.expect("connection open");
            if r["type"] == 1 {
                return r;
            }
        }
    }
}

/// The node binary in a process of its own, for what only a process shows (its RSS).
/// Killed when dropped.
pub struct NodeProcess {
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    child: std::process::Child,
    config: std::path::PathBuf,
}

impl NodeProcess {
    /// Starts `hubcast --insecure` with `config_toml` as its config file and waits until
    /// it is ready.
    pub async fn spawn(config_toml: &str) -> Self {
        Self::spawn_with_open_files(config_toml, None).await
    }

    /// As [`Self::spawn`], with the process's open-file limit set to `limit` (through the
    /// shell's `ulimit`, so no unsafe code is needed here).
    pub async fn spawn_with_open_files(config_toml: &str, limit: Option<u32>) -> Self {
        Self::launch(config_toml, limit, &[]).await
    }

    /// As [`Self::spawn`], on Redis at `url` with `prefix`. Its log goes to the test's
    /// stdout when `TEST_LOG` is set (at `RUST_LOG`, or info).
    pub async fn spawn_on_redis(config_toml: &str, url: &str, prefix: &str) -> Self {
        let args = ["--redis-url", url, "--redis-prefix", prefix].map(str::to_owned);
        Self::launch(config_toml, None, &args).await
    }

    /// As [`Self::spawn`] but secure: `keys` are the access, token and master keys, and
    /// `args` any further flags (`--redis-url` …).
    pub async fn spawn_secure(config_toml: &str, keys: [&str; 3], args: &[&str]) -> Self {
        let mut all: Vec<String> = [
            "--access-key",
            keys[0],
            "--token-key",
            keys[1],
            "--master-key",
            keys[2],
        ]
        .map(str::to_owned)
        .to_vec();
        all.extend(args.iter().map(|a| (*a).to_owned()));
        Self::launch_as(config_toml, None, &all, false).await
    }

    async fn launch(config_toml: &str, limit: Option<u32>, args: &[String]) -> Self {
        Self::launch_as(config_toml, limit, args, true).await
    }

    async fn launch_as(
        config_toml: &str,
        limit: Option<u32>,
        args: &[String],
        insecure: bool,
    ) -> Self {
        let config = std::env::temp_dir().join(format!("hubcast-{}.toml", unique_prefix()));
        std::fs::write(&config, config_toml).unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let metrics_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut command = match limit {
            None => std::process::Command::new(env!("CARGO_BIN_EXE_hubcast")),
            Some(n) => {
                let mut c = std::process::Command::new("sh");
                c.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(env!("CARGO_BIN_EXE_hubcast"));
                c
            }
        };
        command
            .args(["--listen", &addr.to_string()])
            .args(["--metrics-listen", &metrics_addr.to_string()])
            .arg("--config")
            .arg(&config)
            .args(insecure.then_some("--insecure"))
            .args(args);
        if std::env::var_os("TEST_LOG").is_some() {
            let level = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
            command.env("RUST_LOG", level);
        } else {
            command
                .env("RUST_LOG", "warn")
                .stdout(std::process::Stdio::null());
        }
        let child = command.spawn().unwrap();
        let node = Self {
            addr,
            metrics_addr,
            child,
            config,
        };
        wait_ready_at(&node.url("")).await;
        node
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Resident memory of the process, in bytes (`VmRSS` of `/proc/<pid>/status`).
    pub fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/<pid>/status");
        kib * 1024
    }

    /// The sum of a metric's series whose labels include every one of `labels`.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = reqwest::get(format!("http://{}/metrics", self.metrics_addr))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
            })
            .filter(|l| {
                labels
                    .iter()
                    .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
    }
}

/// A WebSocket spoken by hand over TCP, for clients no library would be: ones that never
/// read, or flood.
pub struct RawWs {
    pub tcp: TcpStream,
    buf: Vec<u8>,
}

impl RawWs {
    /// Opens the WebSocket at `path` (no negotiate).
    pub async fn open(addr: SocketAddr, path: &str) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let end = loop {
            let mut chunk = [0u8; 1024];
            let n = tokio::time::timeout(WAIT, tcp.read(&mut chunk))
                .await
                .expect("upgrade answer in time")
                .unwrap();
            assert!(n > 0, "closed during the upgrade");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
        };
        assert!(
            buf.starts_with(b"HTTP/1.1 101"),
            "{}",
            String::from_utf8_lossy(&buf)
        );
        buf.drain(..end);
        Self { tcp, buf }
    }

    /// A masked client frame (the zero mask: legal, and the payload stays readable).
    pub fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n < 65536 => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&[0, 0, 0, 0]);
        f.extend_from_slice(payload);
        f
    }

    pub async fn send_text(&mut self, text: &str) {
        use tokio::io::AsyncWriteExt;
        self.tcp
            .write_all(&Self::frame(1, text.as_bytes()))
            .await
            .unwrap();
    }

    /// Reads server frames until a text payload contains `needle`.
    pub async fn read_until(&mut self, needle: &str) {
        use tokio::io::AsyncReadExt;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if String::from_utf8_lossy(&self.buf).contains(needle) {
                self.buf.clear();
                return;
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout_at(deadline, self.tcp.read(&mut chunk))
                .await
                .unwrap_or_else(|_| panic!("no {needle} in time"))
                .unwrap();
            assert!(n > 0, "closed while waiting for {needle}");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Completes the SignalR handshake.
    pub async fn handshake(&mut self) {
        self.send_text("{\"protocol\":\"json\",\"version\":1}\u{1e}")
            .await;
        self.read_until("{}\u{1e}").await;
    }
}
