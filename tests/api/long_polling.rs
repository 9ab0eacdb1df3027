//! Long polling at the HTTP level: a client that stops polling cannot make the node hold
//! an unbounded backlog for it.

use serde_json::{json, Value};

use crate::helpers::{NodeProcess, WAIT};

#[tokio::test]
async fn a_long_polling_client_that_stops_polling_is_closed_as_a_slow_consumer() {
    let node = NodeProcess::spawn("").await;
    let http = reqwest::Client::new();
    let negotiated: Value = http
        .post(node.url("/hubs/tasks/negotiate?negotiateVersion=1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let transports: Vec<&str> = negotiated["availableTransports"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["transport"].as_str())
        .collect();
    assert_eq!(
        transports,
        ["WebSockets", "ServerSentEvents", "LongPolling"]
    );
    let token = negotiated["connectionToken"].as_str().unwrap();
    let url = node.url(&format!("/hubs/tasks?id={token}"));
    assert_eq!(
        http.get(&url).send().await.unwrap().status(),
        200,
        "the first poll binds it"
    );
    for record in [
        "{\"protocol\":\"json\",\"version\":1}\u{1e}",
        "{\"type\":1,\"invocationId\":\"1\",\"target\":\"JoinGroup\",\"arguments\":[\"lp\"]}\u{1e}",
    ] {
        assert_eq!(
            http.post(&url).body(record).send().await.unwrap().status(),
            200
        );
    }
    let first = http.get(&url).send().await.unwrap().text().await.unwrap();
    assert!(
        first.starts_with("{}\u{1e}"),
        "the handshake answer comes in a poll: {first:?}"
    );
    // Never polled again: 64 KiB events until the node gives up on it.
    let payload = "x".repeat(64 * 1024);
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut sent = 0;
    while node
        .metric(
            "hubcast_connections_closed_total",
            &[("hub", "tasks"), ("reason", "slow_consumer")],
        )
        .await
        != 1.0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not closed after {sent} events"
        );
        let r = http
            .post(node.url("/api/v1/hubs/tasks/groups/lp"))
            .json(&json!({"target": "Big", "arguments": [payload]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        sent += 1;
    }
    // What it held stayed within its bounds: the queue's 4 MiB, the bridge's 4 MiB and
    // the loopback pair's buffers, far below what was sent.
    assert!(
        sent > 150,
        "closed after {sent} events: before its bounds were reached"
    );
    assert!(
        node.rss() < 200 * 1024 * 1024,
        "{} bytes resident after {sent} events of 64 KiB",
        node.rss()
    );
    // Polls hand out what the bridge still held, then say the connection ended.
    let mut drained = 0;
    loop {
        let r = http.get(&url).send().await.unwrap();
        // 204 while the bridge is ending, 404 once the connection is gone.
        if r.status() == 204 || r.status() == 404 {
            break;
        }
        assert_eq!(r.status(), 200);
        drained += r.bytes().await.unwrap().len();
        assert!(
            drained <= 16 * 1024 * 1024 && tokio::time::Instant::now() < deadline + WAIT,
            "polls went on after the close ({drained} bytes)"
        );
    }
}
