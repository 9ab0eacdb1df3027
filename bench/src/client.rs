//! WebSocket clients speaking each system's protocol by hand (SignalR JSON for hubcast,
//! Engine.IO 4 / Socket.IO 5 for both Socket.IO peers), and the HTTP publisher.
//!
//! Every published payload carries `s` (per-group sequence), `t` (publish time, µs since
//! the epoch) and `p` (phase); clients record end-to-end latency and detect lost and
//! duplicated deliveries from `s`.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const RS: char = '\u{1e}';

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    Hubcast,
    /// Socket.IO 4 on Node with `@socket.io/redis-adapter` (bench/peers/socketio).
    SocketIo,
    /// socketioxide with socketioxide-redis (bench/peers/socketioxide): the same wire
    /// protocol and HTTP API as the Node peer.
    Socketioxide,
}

impl System {
    pub fn name(self) -> &'static str {
        match self {
            Self::Hubcast => "hubcast",
            Self::SocketIo => "socketio",
            Self::Socketioxide => "socketioxide",
        }
    }

    /// What a client speaks: SignalR JSON (hubcast) or Engine.IO 4 / Socket.IO 5.
    fn socketio_wire(self) -> bool {
        !matches!(self, Self::Hubcast)
    }
}

pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// What all clients share while running.
#[derive(Default)]
pub struct Shared {
    pub received: AtomicU64,
    pub stop: AtomicBool,
}

/// One client's results.
pub struct ClientResult {
    pub group: usize,
    /// Latency (µs) per phase.
    pub hist: [Histogram<u64>; 2],
    pub received: u64,
    pub duplicates: u64,
    /// Deliveries that came after one with a higher sequence number. Publishes of one
    /// group can overtake each other (the paced phase sends them concurrently, over
    /// several HTTP connections), so this is no loss; it is reported, not counted as one.
    pub reordered: u64,
    /// The sequence numbers seen, one bit each: loss is what is missing at the end.
    seen: Vec<u64>,
    highest: Option<u64>,
    /// Bytes on the wire (WebSocket header + payload) of the frames that carried
    /// deliveries: with `received`, the size of a delivery as the server writes it.
    pub delivery_bytes: u64,
}

impl ClientResult {
    /// Nothing received yet, for a client of `group`.
    fn new(group: usize) -> Self {
        Self {
            group,
            hist: [
                Histogram::new(3).expect("histogram"),
                Histogram::new(3).expect("histogram"),
            ],
            received: 0,
            duplicates: 0,
            reordered: 0,
            seen: Vec::new(),
            highest: None,
            delivery_bytes: 0,
        }
    }
}

/// A server-to-client (unmasked) WebSocket frame's header size for a payload of `len`.
fn ws_header(len: usize) -> u64 {
    match len {
        0..=125 => 2,
        126..=65535 => 4,
        _ => 10,
    }
}

type Ws = WebSocketStream<tokio::net::TcpStream>;

/// Opens a TCP connection from `source` (several loopback addresses give more than one
/// port range's worth of connections).
async fn open(system: System, base: &str, source: Ipv4Addr) -> std::io::Result<Ws> {
    let addr: SocketAddr = base.parse().map_err(std::io::Error::other)?;
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(source.into(), 0))?;
    let stream = sock.connect(addr).await?;
    stream.set_nodelay(true)?;
    let url = if system.socketio_wire() {
        format!("ws://{base}/socket.io/?EIO=4&transport=websocket")
    } else {
        format!("ws://{base}/hubs/tasks")
    };
    // Deliveries are a few hundred bytes. tungstenite's default 128 KiB read buffer is
    // zero-filled before reads, which cost the load generator (sharing the cores with the
    // servers) CPU and, at 19 000 connections, gigabytes of memory.
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config))
        .await
        .map_err(std::io::Error::other)?;
    Ok(ws)
}

async fn next_text(ws: &mut Ws) -> std::io::Result<String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(t.as_str().to_owned()),
            Some(Ok(Message::Binary(b))) => return Ok(String::from_utf8_lossy(&b).into_owned()),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(std::io::Error::other(e)),
            None => return Err(std::io::Error::other("closed")),
        }
    }
}

/// A connected client that has joined its group.
pub struct Client {
    system: System,
    ws: Ws,
    group: usize,
    buf: String,
}

impl Client {
    pub async fn connect(
        system: System,
        base: &str,
        source: Ipv4Addr,
        group: usize,
    ) -> std::io::Result<Self> {
        let mut ws = open(system, base, source).await?;
        let mut buf = String::new();
        match system {
            System::Hubcast => {
                ws.send(Message::text(format!(
                    "{{\"protocol\":\"json\",\"version\":1}}{RS}"
                )))
                .await
                .map_err(std::io::Error::other)?;
                let reply = next_text(&mut ws).await?;
                if !reply.starts_with("{}") {
                    return Err(std::io::Error::other(format!("handshake refused: {reply}")));
                }
                let mut c = Self {
                    system,
                    ws,
                    group,
                    buf,
                };
                c.join(group).await?;
                Ok(c)
            }
            System::SocketIo | System::Socketioxide => {
                let open = next_text(&mut ws).await?;
                if !open.starts_with('0') {
                    return Err(std::io::Error::other(format!(
                        "unexpected open packet {open}"
                    )));
                }
                ws.send(Message::text("40"))
                    .await
                    .map_err(std::io::Error::other)?;
                loop {
                    let t = next_text(&mut ws).await?;
                    if t.starts_with("40") {
                        break;
                    }
                    // socketioxide pings as soon as the connection opens and drops it if
                    // the pong does not come within the ping timeout.
                    if t == "2" {
                        ws.send(Message::text("3"))
                            .await
                            .map_err(std::io::Error::other)?;
                    }
                }
                buf.clear();
                let mut c = Self {
                    system,
                    ws,
                    group,
                    buf,
                };
                c.join(group).await?;
                Ok(c)
            }
        }
    }

    async fn call(&mut self, method: &str, group: usize) -> std::io::Result<()> {
        match self.system {
            System::Hubcast => {
                let msg = format!("{{\"type\":1,\"invocationId\":\"j\",\"target\":\"{method}\",\"arguments\":[\"g{group}\"]}}{RS}");
                self.ws
                    .send(Message::text(msg))
                    .await
                    .map_err(std::io::Error::other)?;
                loop {
                    let t = next_text(&mut self.ws).await?;
                    if t.contains("\"type\":3") {
                        if t.contains("\"error\"") {
                            return Err(std::io::Error::other(t));
                        }
                        return Ok(());
                    }
                }
            }
            System::SocketIo | System::Socketioxide => {
                let event = if method == "JoinGroup" {
                    "join"
                } else {
                    "leave"
                };
                self.ws
                    .send(Message::text(format!("420[\"{event}\",\"g{group}\"]")))
                    .await
                    .map_err(std::io::Error::other)?;
                loop {
                    let t = next_text(&mut self.ws).await?;
                    if t == "2" {
                        self.ws
                            .send(Message::text("3"))
                            .await
                            .map_err(std::io::Error::other)?;
                    } else if t.starts_with("430") {
                        return Ok(());
                    }
                }
            }
        }
    }

    pub async fn join(&mut self, group: usize) -> std::io::Result<()> {
        self.call("JoinGroup", group).await
    }

    pub async fn leave(&mut self, group: usize) -> std::io::Result<()> {
        self.call("LeaveGroup", group).await
    }

    /// Reads deliveries until told to stop, keeping latency and sequence statistics.
    pub async fn run(mut self, shared: Arc<Shared>) -> ClientResult {
        let mut result = ClientResult::new(self.group);
        let mut ping = tokio::time::interval(Duration::from_secs(10));
        loop {
            let msg = tokio::select! {
                m = self.ws.next() => m,
                _ = ping.tick() => {
                    if self.system == System::Hubcast {
                        let _ = self.ws.send(Message::text(format!("{{\"type\":6}}{RS}"))).await;
                    }
                    if shared.stop.load(Ordering::Relaxed) {
                        break;
                    }
                    continue;
                }
            };
            let text = match msg {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => continue,
            };
            let now = now_micros();
            let before = result.received;
            match self.system {
                System::Hubcast => {
                    self.buf.push_str(text.as_str());
                    while let Some(pos) = self.buf.find(RS) {
                        let record: String = self.buf.drain(..=pos).collect();
                        observe(&record, now, &mut result, &shared);
                    }
                }
                System::SocketIo | System::Socketioxide => {
                    let t = text.as_str();
                    if t == "2" {
                        let _ = self.ws.send(Message::text("3")).await;
                    } else if t.starts_with("42") {
                        observe(t, now, &mut result, &shared);
                    }
                }
            }
            if result.received > before {
                result.delivery_bytes += text.len() as u64 + ws_header(text.len());
            }
            if shared.stop.load(Ordering::Relaxed) {
                break;
            }
        }
        result
    }
}

/// Reads `"s":N`, `"t":N`, `"p":N` out of a delivery without a JSON parser (the load
/// generator shares the machine with the servers; its own CPU is reported).
fn field(record: &str, name: &str) -> Option<u64> {
    let key = format!("\"{name}\":");
    let start = record.find(&key)? + key.len();
    let digits: String = record[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

fn observe(record: &str, now: u64, r: &mut ClientResult, shared: &Shared) {
    let (Some(s), Some(t)) = (field(record, "s"), field(record, "t")) else {
        return;
    };
    let phase = field(record, "p").unwrap_or(0).min(1) as usize;
    r.received += 1;
    shared.received.fetch_add(1, Ordering::Relaxed);
    let _ = r.hist[phase].record(now.saturating_sub(t).max(1));
    let (word, bit) = ((s / 64) as usize, 1u64 << (s % 64));
    if r.seen.len() <= word {
        r.seen.resize(word + 1, 0);
    }
    if r.seen[word] & bit != 0 {
        r.duplicates += 1;
        return;
    }
    r.seen[word] |= bit;
    if r.highest.is_some_and(|h| s < h) {
        r.reordered += 1;
    } else {
        r.highest = Some(s);
    }
}

impl ClientResult {
    /// Sequence numbers below `published` that never arrived.
    pub fn missing(&self, published: u64) -> u64 {
        let (full, rest) = ((published / 64) as usize, published % 64);
        let word = |i: usize| self.seen.get(i).copied().unwrap_or(0);
        let mut seen: u64 = (0..full).map(|i| u64::from(word(i).count_ones())).sum();
        if rest > 0 {
            seen += u64::from((word(full) & ((1u64 << rest) - 1)).count_ones());
        }
        published - seen
    }
}

/// Publishes over HTTP to either system.
#[derive(Clone)]
pub struct Publisher {
    system: System,
    http: reqwest::Client,
}

impl Publisher {
    pub fn new(system: System) -> Self {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            .build()
            .expect("http client");
        Self { system, http }
    }

    /// Publishes one message; returns the HTTP latency in µs, or None on failure.
    pub async fn publish(&self, base: &str, group: usize, seq: u64, phase: u8) -> Option<u64> {
        let t = now_micros();
        let data = format!("{{\"s\":{seq},\"t\":{t},\"p\":{phase}}}");
        let (url, body) = match self.system {
            System::Hubcast => (
                format!("http://{base}/api/v1/hubs/tasks/groups/g{group}"),
                format!("{{\"target\":\"B\",\"arguments\":[{data}]}}"),
            ),
            System::SocketIo | System::Socketioxide => (
                format!("http://{base}/publish"),
                format!("{{\"room\":\"g{group}\",\"event\":\"B\",\"data\":{data}}}"),
            ),
        };
        let r = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .ok()?;
        let ok = r.status().is_success();
        let _ = r.bytes().await;
        ok.then(|| now_micros().saturating_sub(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result() -> ClientResult {
        ClientResult::new(0)
    }

    #[test]
    fn overtaking_is_reordering_not_loss_and_repeats_are_duplicates() {
        let shared = Shared::default();
        let mut r = result();
        for s in [0u64, 2, 1, 3, 3, 70, 65] {
            observe(
                &format!("{{\"s\":{s},\"t\":1,\"p\":0}}"),
                2,
                &mut r,
                &shared,
            );
        }
        assert_eq!(r.duplicates, 1);
        assert_eq!(r.reordered, 2);
        // 0..=3, 65 and 70 arrived: of 0..71, 66 are missing; of 0..4, none.
        assert_eq!(r.missing(4), 0);
        assert_eq!(r.missing(71), 71 - 6);
        assert_eq!(r.missing(200), 200 - 6);
    }
}
