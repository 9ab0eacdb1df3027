//! socketioxide + socketioxide-redis peer server for the hubcast benchmark harness.
//!
//! Same command line, HTTP API and socket events as the Node Socket.IO peer in
//! `../socketio` (see README.md in this folder):
//!
//!   socketioxide-peer --port P --redis redis://127.0.0.1:R [--prefix socket.io]
//!                     [--ping-interval MS] [--ping-timeout MS]

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use serde_json::{json, Value};
use socketioxide::extract::{AckSender, Data, SocketRef};
use socketioxide::handler::ConnectHandler;
use socketioxide::{SocketIo, TransportType};
use socketioxide_redis::{RedisAdapter, RedisAdapterConfig, RedisAdapterCtr};

const USAGE: &str = "usage: socketioxide-peer --port P --redis redis://127.0.0.1:R \
[--prefix socket.io] [--ping-interval MS] [--ping-timeout MS]";

/// Largest accepted `POST /publish` body, as in the Node peer.
const MAX_PUBLISH_BODY: usize = 64 * 1024 * 1024;

/// Buffers that drop messages silently (or make `emit` fail) when full are set far above
/// anything the benchmark can queue: the per-socket packet queue (default 128) and the
/// adapter's channel from the Redis connection to the namespace (default 1024). Both are
/// tokio bounded channels, which allocate per 32 queued items, not up front, so a large
/// bound costs nothing while the queue is short.
const SOCKET_QUEUE: usize = 1 << 20;
const ADAPTER_STREAM_BUFFER: usize = 1 << 20;

/// Socket.IO event names an application may not emit (socket.io's `RESERVED_EVENTS`).
const RESERVED: [&str; 6] = [
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];

struct Cli {
    port: u16,
    redis: String,
    prefix: String,
    ping_interval: Duration,
    ping_timeout: Duration,
}

fn fail(msg: &str) -> ! {
    eprintln!("{msg}\n{USAGE}");
    std::process::exit(2);
}

fn parse_cli() -> Cli {
    let mut port = None;
    let mut redis = None;
    let mut prefix = "socket.io".to_owned();
    // Socket.IO's own defaults, as in the Node peer.
    let mut ping_interval = 25_000u64;
    let mut ping_timeout = 20_000u64;
    let mut args = std::env::args().skip(1);
    let int = |name: &str, v: Option<String>, min: u64, max: u64| -> u64 {
        let Some(v) = v else {
            fail(&format!("{name} needs a value"))
        };
        match v.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) && v.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => fail(&format!(
                "{name} must be an integer in {min}..{max}, got {v:?}"
            )),
        }
    };
    while let Some(a) = args.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (a.clone(), None),
        };
        let mut value = || inline.clone().or_else(|| args.next());
        match flag.as_str() {
            "--port" => port = Some(int("--port", value(), 0, 65535) as u16),
            "--redis" => redis = value(),
            "--prefix" => prefix = value().unwrap_or_default(),
            "--ping-interval" => ping_interval = int("--ping-interval", value(), 1, 3_600_000),
            "--ping-timeout" => ping_timeout = int("--ping-timeout", value(), 1, 3_600_000),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => fail(&format!("unknown argument {other:?}")),
        }
    }
    let Some(port) = port else {
        fail("--port is required")
    };
    let Some(redis) = redis else {
        fail("--redis is required")
    };
    if !(redis.starts_with("redis://") || redis.starts_with("rediss://")) {
        fail(&format!("--redis must be a redis:// URL, got {redis:?}"));
    }
    if prefix.is_empty() {
        fail("--prefix must not be empty");
    }
    Cli {
        port,
        redis,
        prefix,
        ping_interval: Duration::from_millis(ping_interval),
        ping_timeout: Duration::from_millis(ping_timeout),
    }
}

/// The adapter's redis driver speaks RESP3 (push messages on a multiplexed connection):
/// ask for it on the URL unless the caller already chose a protocol.
fn resp3_url(url: &str) -> String {
    if url.contains("protocol=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&protocol=resp3")
    } else {
        format!("{url}?protocol=resp3")
    }
}

/// The redis adapter on the `redis` crate driver.
type Adapter = RedisAdapter<socketioxide::adapter::Emitter>;
type Io = SocketIo<Adapter>;

#[derive(Clone)]
struct AppState {
    io: Io,
    health: redis::aio::MultiplexedConnection,
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn method_not_allowed(allow: &'static str) -> Response {
    let mut r = json_response(
        StatusCode::METHOD_NOT_ALLOWED,
        json!({"ok": false, "error": "method not allowed"}),
    );
    r.headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static(allow));
    r
}

fn bad_request(error: String) -> Response {
    json_response(
        StatusCode::BAD_REQUEST,
        json!({"ok": false, "error": error}),
    )
}

async fn publish(State(st): State<AppState>, method: Method, body: Bytes) -> Response {
    if method != Method::POST {
        return method_not_allowed("POST");
    }
    let msg: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return bad_request(format!("bad JSON: {e}")),
    };
    let Value::Object(mut msg) = msg else {
        return bad_request("body must be a JSON object".into());
    };
    let room = match msg.remove("room") {
        Some(Value::String(r)) if !r.is_empty() => r,
        _ => return bad_request("\"room\" must be a non-empty string".into()),
    };
    let event = match msg.remove("event") {
        Some(Value::String(e)) if !e.is_empty() => e,
        _ => return bad_request("\"event\" must be a non-empty string".into()),
    };
    if RESERVED.contains(&event.as_str()) {
        return bad_request(format!("{event:?} is a reserved event name"));
    }
    // Like the Node peer, `data` is ONE emit argument (a JSON array is a sequence, which
    // socketioxide sends as a single argument); no `data` key means no argument. The emit
    // PUBLISHes to Redis (awaited) and then writes to this node's sockets in the room.
    let sent = match msg.get("data") {
        Some(data) => st.io.to(room).emit(&event, data).await,
        None => st.io.to(room).emit(&event, &[(); 0]).await,
    };
    match sent {
        Ok(()) => json_response(StatusCode::ACCEPTED, json!({"ok": true})),
        Err(e) => {
            eprintln!("emit failed: {e}");
            json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"ok": false, "error": e.to_string()}),
            )
        }
    }
}

async fn healthz(State(mut st): State<AppState>, method: Method) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return method_not_allowed("GET, HEAD");
    }
    let cmd = redis::cmd("PING");
    let ping = cmd.query_async::<String>(&mut st.health);
    let ready = matches!(
        tokio::time::timeout(Duration::from_secs(1), ping).await,
        Ok(Ok(_))
    );
    if ready {
        json_response(StatusCode::OK, json!({"ok": true, "redis": "connected"}))
    } else {
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"ok": false, "redis": "not connected"}),
        )
    }
}

async fn not_found() -> Response {
    json_response(
        StatusCode::NOT_FOUND,
        json!({"ok": false, "error": "not found"}),
    )
}

/// `join` / `leave` with a room name; acks `true`, or `false` for a bad room name.
fn room_op(socket: &SocketRef<Adapter>) {
    socket.on(
        "join",
        async |s: SocketRef<Adapter>, Data(room): Data<Value>, ack: AckSender<Adapter>| {
            let ok = match room {
                Value::String(r) if !r.is_empty() => {
                    s.join(r);
                    true
                }
                _ => false,
            };
            let _ = ack.send(&ok);
        },
    );
    socket.on(
        "leave",
        async |s: SocketRef<Adapter>, Data(room): Data<Value>, ack: AckSender<Adapter>| {
            let ok = match room {
                Value::String(r) if !r.is_empty() => {
                    s.leave(r);
                    true
                }
                _ => false,
            };
            let _ = ack.send(&ok);
        },
    );
}

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let client = redis::Client::open(resp3_url(&cli.redis))?;
    let config = RedisAdapterConfig::new()
        .with_prefix(cli.prefix.clone())
        .with_stream_buffer(ADAPTER_STREAM_BUFFER);
    // Like the Node peer: keep retrying until Redis answers; the port is bound only then.
    let (adapter, health) = loop {
        let attempt = async {
            let adapter = RedisAdapterCtr::new_with_redis_config(&client, config.clone()).await?;
            let health = client.get_multiplexed_async_connection().await?;
            Ok::<_, redis::RedisError>((adapter, health))
        };
        match attempt.await {
            Ok(v) => break v,
            Err(e) => {
                eprintln!("redis connect error: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    let (layer, io) = SocketIo::builder()
        .transports([TransportType::Websocket])
        .ping_interval(cli.ping_interval)
        .ping_timeout(cli.ping_timeout)
        .max_buffer_size(SOCKET_QUEUE)
        // The Node peer advertises (and accepts) 1 000 000 bytes; socketioxide defaults to 100 000.
        .max_payload(1_000_000)
        .with_adapter::<Adapter>(adapter)
        .build_layer();
    // The event handlers are registered in a connect middleware, which socketioxide awaits
    // before it sends the CONNECT reply. A connect handler runs in a task spawned after
    // the reply, so a client that emits `join` as soon as it is connected could otherwise
    // be faster than the registration, and its event would be dropped unanswered.
    let register = async |socket: SocketRef<Adapter>| {
        room_op(&socket);
        Ok::<(), std::convert::Infallible>(())
    };
    io.ns("/", (async |_: SocketRef<Adapter>| {}).with(register))
        .await?;

    let state = AppState {
        io: io.clone(),
        health,
    };
    let app = Router::new()
        .route("/publish", any(publish))
        .route("/healthz", any(healthz))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_PUBLISH_BODY))
        .with_state(state)
        .layer(layer);

    let listener =
        tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], cli.port))).await?;
    println!("listening on {}", listener.local_addr()?.port());
    let server = axum::serve(listener, app.into_make_service());
    tokio::select! {
        r = server => r?,
        signal = shutdown_signal() => {
            eprintln!("{signal} received, shutting down");
            // Disconnects every socket; the adapter unsubscribes with its namespace. HTTP
            // keep-alive connections are not waited for.
            if tokio::time::timeout(Duration::from_secs(5), io.close()).await.is_err() {
                eprintln!("closing sockets took more than 5 s");
                std::process::exit(1);
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = parse_cli();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(run(cli)) {
        Ok(()) => {
            rt.shutdown_timeout(Duration::from_millis(500));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fatal: {e}");
            ExitCode::FAILURE
        }
    }
}
