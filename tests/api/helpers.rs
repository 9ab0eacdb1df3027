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
pub const WAIT: Duration = Duration::from_secs(10);

/// A running node.
pub struct TestApp {
    pub addr: SocketAddr,
    pub node: Arc<Node>,
    stop: Option<oneshot::Sender<()>>,
    pub task: Option<JoinHandle<std::io::Result<()>>>,
}

pub fn test_config() -> Config {
    Config::for_listen("127.0.0.1:0".parse().unwrap())
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(test_config()).await
    }

    pub async fn spawn_with(config: Config) -> Self {
        Self::spawn_on(config, Arc::new(MemoryBus::default())).await
    }

    pub async fn spawn_on(config: Config, bus: Arc<MemoryBus>) -> Self {
        if std::env::var_os("TEST_LOG").is_some() {
            hubcast::telemetry::init(hubcast::config::LogFormat::Human);
        }
        let app = App::build_on_bus(config, bus).await.expect("node starts");
        let addr = app.local_addr();
        let node = app.node();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run(async move {
            let _ = rx.await;
        }));
        Self {
            addr,
            node,
            stop: Some(tx),
            task: Some(task),
        }
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

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A raw SignalR JSON client over tokio-tungstenite.
pub struct Client {
    pub ws: Ws,
    buf: Vec<u8>,
    next_id: u64,
}

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
        }
    }

    /// Negotiates (v1), opens with `?id=`, and completes the handshake.
    pub async fn connect(app: &TestApp, hub_path: &str) -> Self {
        let neg: Value = reqwest::Client::new()
            .post(app.url(&format!("{hub_path}/negotiate?negotiateVersion=1")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
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
            let r = self.recv().await.expect("connection open");
            if r["type"] == 1 {
                return r;
            }
        }
    }
}
