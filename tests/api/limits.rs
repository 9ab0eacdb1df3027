//! The public listener does not hold connections for clients that are slow, silent or
//! too many: header-read, idle and body timeouts, the socket cap, HTTP/1.1 only.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{test_config, NodeProcess, TestApp, WAIT};

/// Reads until the server closes the connection (EOF or reset), within [`WAIT`];
/// returns what came before.
async fn read_to_close(tcp: &mut TcpStream) -> Vec<u8> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut got = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(deadline, tcp.read(&mut chunk)).await {
            Err(_) => panic!(
                "the server kept the connection open; got {:?}",
                String::from_utf8_lossy(&got)
            ),
            Ok(Ok(0) | Err(_)) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Reads one response with a `content-length` body.
async fn read_response(tcp: &mut TcpStream) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut got = Vec::new();
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(head_end) = text.find("\r\n\r\n") {
            let len: usize = text[..head_end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if got.len() >= head_end + 4 + len {
                return text;
            }
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, tcp.read(&mut chunk))
            .await
            .expect("a response in time")
            .unwrap();
        assert!(n > 0, "closed before a whole response: {text:?}");
        got.extend_from_slice(&chunk[..n]);
    }
}

async fn healthz_on(tcp: &mut TcpStream) -> String {
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    read_response(tcp).await
}

#[tokio::test]
async fn half_sent_requests_and_silent_sockets_are_closed_after_the_header_read_timeout() {
    let mut config = test_config();
    config.timeouts.header_read_ms = 1_000;
    config.timeouts.http_idle_ms = 3_600_000;
    let app = TestApp::spawn_with(config).await;

    // As many half-sent requests as took a node offline before, and a silent socket.
    let mut half = Vec::new();
    for _ in 0..3_000 {
        let mut tcp = TcpStream::connect(app.addr).await.unwrap();
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        half.push(tcp);
    }
    let mut silent = TcpStream::connect(app.addr).await.unwrap();
    let closed = futures_util::future::join_all(half.iter_mut().map(read_to_close)).await;
    assert_eq!(closed.len(), 3_000, "every half-sent request was closed");
    read_to_close(&mut silent).await;

    // A whole request is still answered.
    let mut ok = TcpStream::connect(app.addr).await.unwrap();
    assert!(healthz_on(&mut ok).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let mut config = test_config();
    // The header-read limit is far away: only the idle limit can close it in time.
    config.timeouts.header_read_ms = 3_600_000;
    config.timeouts.http_idle_ms = 1_000;
    let app = TestApp::spawn_with(config).await;

    let mut tcp = TcpStream::connect(app.addr).await.unwrap();
    assert!(healthz_on(&mut tcp).await.starts_with("HTTP/1.1 200"));
    assert!(
        healthz_on(&mut tcp).await.starts_with("HTTP/1.1 200"),
        "keep-alive works"
    );
    let rest = read_to_close(&mut tcp).await;
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
}

#[tokio::test]
async fn a_body_that_stops_arriving_is_answered_408_and_the_connection_closed() {
    let mut config = test_config();
    config.timeouts.body_read_ms = 1_000;
    let app = TestApp::spawn_with(config).await;

    let mut tcp = TcpStream::connect(app.addr).await.unwrap();
    tcp.write_all(
        b"POST /api/v1/hubs/tasks/groups/g HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"target\":",
    )
    .await
    .unwrap();
    let got = String::from_utf8(read_to_close(&mut tcp).await).unwrap();
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");

    // A body that arrives is unaffected.
    let r = reqwest::Client::new()
        .post(app.url("/api/v1/hubs/tasks/groups/g"))
        .json(&serde_json::json!({"target": "T", "arguments": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
}

#[tokio::test]
async fn past_the_socket_cap_a_connection_is_refused_and_healthz_answers_once_one_is_freed() {
    let mut config = test_config();
    config.limits.max_open_sockets = 4;
    let app = TestApp::spawn_with(config).await;

    // Connections are taken until one is refused: at most four are held (fewer if a
    // connection of the harness's own is still open).
    let mut held = Vec::new();
    let refused = loop {
        assert!(held.len() <= 4, "a fifth connection was served");
        let mut tcp = TcpStream::connect(app.addr).await.unwrap();
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let got = String::from_utf8_lossy(&read_some(&mut tcp).await).into_owned();
        if !got.starts_with("HTTP/1.1 200") {
            break got;
        }
        held.push(tcp);
    };
    assert!(
        refused.is_empty() || refused.starts_with("HTTP/1.1 503"),
        "refused: {refused}"
    );
    assert!(!held.is_empty());

    drop(held.pop());
    // The freed slot comes back once the node has seen the close.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut tcp = TcpStream::connect(app.addr).await.unwrap();
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let got = String::from_utf8_lossy(&read_some(&mut tcp).await).into_owned();
        if got.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no slot freed: {got}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The first bytes the server sends, or none if it closes first.
async fn read_some(tcp: &mut TcpStream) -> Vec<u8> {
    let mut chunk = [0u8; 4096];
    match tokio::time::timeout(WAIT, tcp.read(&mut chunk))
        .await
        .expect("an answer or a close in time")
    {
        Ok(n) => chunk[..n].to_vec(),
        Err(_) => Vec::new(),
    }
}

#[tokio::test]
async fn an_http2_prior_knowledge_preface_is_not_served() {
    let app = TestApp::spawn().await;
    let mut tcp = TcpStream::connect(app.addr).await.unwrap();
    let mut preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    // An empty SETTINGS frame, as a client sends right after the preface.
    preface.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    tcp.write_all(&preface).await.unwrap();
    let got = read_to_close(&mut tcp).await;
    // An HTTP/2 server answers with its own SETTINGS frame (type 4 in the fourth byte).
    assert!(
        got.is_empty() || got.starts_with(b"HTTP/1.1 "),
        "answered as HTTP/2: {got:?}"
    );
}

#[tokio::test]
async fn a_node_out_of_file_descriptors_keeps_running_counts_and_recovers() {
    // The socket cap is set above what the process may open, so accepting itself fails
    // (EMFILE): the accept loop must back off and count, not spin or die.
    let mut node = NodeProcess::spawn_with_open_files(
        "[limits]\nmax_open_sockets = 100000\n[timeouts]\nheader_read_ms = 3600000\nhttp_idle_ms = 3600000\n",
        Some(256),
    )
    .await;
    // Open sockets until the node stops taking them: past its descriptors it cannot
    // accept, the listen backlog fills and a connect no longer completes.
    // (A slow connect on a loaded machine is not that: only one past the node's
    // descriptors counts.)
    let mut held = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while held.len() < 2_000 && tokio::time::Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(node.addr)).await {
            Ok(Ok(tcp)) => held.push(tcp),
            _ if held.len() > 300 => break,
            _ => {}
        }
    }
    assert!(
        held.len() > 256,
        "more sockets than the node may open: {}",
        held.len()
    );
    assert!(
        node.is_running(),
        "the node survived running out of descriptors"
    );
    drop(held);
    let deadline = tokio::time::Instant::now() + WAIT;
    while reqwest::get(node.url("/healthz")).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the node did not recover"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        node.metric(
            "hubcast_http_connections_refused_total",
            &[("reason", "accept_error")]
        )
        .await
            > 0.0,
        "the failed accepts were counted"
    );
    assert!(node.is_running());
}
