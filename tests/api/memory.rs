//! Hostile clients cannot grow a node's memory: measured on the binary in a process of
//! its own (`VmRSS`), as an operator would see it.

use std::time::Duration;

use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::helpers::{test_config, Client, NodeProcess, RawWs, TestApp, WAIT};

const MIB: u64 = 1024 * 1024;

/// Floods `ws` with Pings for `how_long`, never reading.
async fn ping_flood(mut ws: RawWs, how_long: Duration) {
    let mut burst = Vec::new();
    for _ in 0..256 {
        burst.extend_from_slice(&RawWs::frame(9, &[b'p'; 125]));
    }
    let end = tokio::time::Instant::now() + how_long;
    while tokio::time::Instant::now() < end {
        // A node that stops reading (or closes) ends the flood early: that is fine too.
        match tokio::time::timeout_at(end, ws.tcp.write_all(&burst)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => return,
        }
    }
}

async fn flood_and_measure(node: &NodeProcess, clients: Vec<RawWs>) -> u64 {
    let before = node.rss();
    let floods: Vec<_> = clients
        .into_iter()
        .map(|ws| tokio::spawn(ping_flood(ws, Duration::from_secs(10))))
        .collect();
    for f in floods {
        f.await.unwrap();
    }
    node.rss().saturating_sub(before)
}

#[tokio::test]
async fn a_ping_flood_from_a_connected_client_does_not_grow_the_node() {
    let node = NodeProcess::spawn("").await;
    let mut ws = RawWs::open(node.addr, "/hubs/tasks").await;
    ws.handshake().await;
    let grew = flood_and_measure(&node, vec![ws]).await;
    eprintln!("ping flood: RSS grew by {} KiB", grew / 1024);
    assert!(grew < 32 * MIB, "RSS grew by {} MiB", grew / MIB);
}

#[tokio::test]
async fn ping_floods_before_the_signalr_handshake_do_not_grow_the_node() {
    let node = NodeProcess::spawn("").await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(RawWs::open(node.addr, "/hubs/tasks").await);
    }
    let grew = flood_and_measure(&node, clients).await;
    eprintln!("ping flood: RSS grew by {} KiB", grew / 1024);
    assert!(grew < 32 * MIB, "RSS grew by {} MiB", grew / MIB);
}

#[tokio::test]
async fn a_one_mib_publish_reaches_a_well_behaved_client() {
    let mut config = test_config();
    config.limits.max_body_bytes = 2 * 1024 * 1024;
    let app = TestApp::spawn_with(config).await;
    let mut client = Client::connect(&app, "/hubs/tasks").await;
    client.call("JoinGroup", json!(["g"])).await;
    let payload = "m".repeat(1024 * 1024);
    for i in 0..3 {
        app.publish("tasks", "g", "Big", json!([i, payload])).await;
    }
    for i in 0..3 {
        let inv = client.next_invocation().await;
        assert_eq!(inv["arguments"][0], i);
        assert_eq!(
            inv["arguments"][1].as_str().map(str::len),
            Some(1024 * 1024)
        );
    }
}

#[tokio::test]
async fn a_client_that_stops_reading_large_publishes_is_closed_as_a_slow_consumer() {
    // A write to the stuck client never times out within the test: only the byte budget
    // can close it. The channel's history (which the in-process backplane keeps in
    // memory, up to its own bounds) is off: this measures what connections hold.
    let node = NodeProcess::spawn(
        "[timeouts]\nwrite_timeout_ms = 3600000\n[delivery]\nhistory_messages = 0\n",
    )
    .await;
    let mut stuck = RawWs::open(node.addr, "/hubs/tasks").await;
    stuck.handshake().await;
    stuck
        .send_text("{\"type\":1,\"invocationId\":\"1\",\"target\":\"JoinGroup\",\"arguments\":[\"g\"]}\u{1e}")
        .await;
    stuck.read_until("\"type\":3").await;
    let mut healthy = Client::open(&format!("ws://{}/hubs/tasks", node.addr)).await;
    healthy.handshake().await;
    healthy.call("JoinGroup", json!(["g"])).await;

    // Just under the 1 MiB body limit.
    let payload = "m".repeat(1024 * 1024 - 100);
    const N: usize = 200;
    let reader = tokio::spawn(async move {
        for i in 0..N {
            let inv = healthy.next_invocation().await;
            assert_eq!(
                inv["arguments"][0], i,
                "the healthy client gets every message"
            );
        }
    });
    let before = node.rss();
    let mut peak = before;
    let http = reqwest::Client::new();
    for i in 0..N {
        let r = http
            .post(node.url("/api/v1/hubs/tasks/groups/g"))
            .json(&json!({"target": "Big", "arguments": [i, payload]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        peak = peak.max(node.rss());
    }
    tokio::time::timeout(WAIT, reader)
        .await
        .expect("the healthy client received everything in time")
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let slow = node
            .metric(
                "hubcast_connections_closed_total",
                &[("hub", "tasks"), ("reason", "slow_consumer")],
            )
            .await;
        if slow == 1.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stuck client was not closed as a slow consumer ({slow})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Before the budget its queue pinned every publish: 200 MiB.
    let grew = peak.saturating_sub(before);
    eprintln!("slow consumer test: RSS grew by {} MiB", grew / MIB);
    assert!(grew < 96 * MIB, "RSS grew by {} MiB", grew / MIB);
    drop(stuck);
}

#[tokio::test]
async fn an_idle_connection_costs_the_node_a_few_kibibytes() {
    // Debug builds lay futures out less tightly than release (3.1 KiB per connection
    // measured there, BENCHMARKS.md); this bound catches a buffer kept per connection,
    // which is what grew an idle connection to 8 KiB once.
    const N: usize = 2000;
    let node = NodeProcess::spawn("").await;
    let mut warm = RawWs::open(node.addr, "/hubs/tasks").await;
    warm.handshake().await;
    let before = node.rss();
    let mut clients = Vec::with_capacity(N);
    for _ in 0..N {
        let mut ws = RawWs::open(node.addr, "/hubs/tasks").await;
        ws.handshake().await;
        clients.push(ws);
    }
    let per = node.rss().saturating_sub(before) / N as u64;
    eprintln!("idle connections: {per} bytes of RSS each");
    assert!(per <= 6 * 1024, "{per} bytes of RSS per idle connection");
    drop(clients);
}
