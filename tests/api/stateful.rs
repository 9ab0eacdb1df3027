//! Stateful reconnect at the protocol level: what a connection keeps while its transport
//! is down, the Sequence and resend on resume, refusals, and the window running out.

use serde_json::{json, Value};

use crate::helpers::{Client, NodeProcess, WAIT};

/// Negotiates with stateful reconnect; returns the connection token.
async fn negotiate(node: &NodeProcess) -> String {
    let r: Value = reqwest::Client::new()
        .post(node.url("/hubs/tasks/negotiate?negotiateVersion=1&useStatefulReconnect=true"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        r["useStatefulReconnect"], true,
        "offered to a client that asks: {r}"
    );
    r["connectionToken"].as_str().unwrap().to_owned()
}

/// Opens the WebSocket for `token` and handshakes with version 2.
async fn open(node: &NodeProcess, token: &str) -> Client {
    let mut c = Client::open(&format!("ws://{}/hubs/tasks?id={token}", node.addr)).await;
    c.send_raw("{\"protocol\":\"json\",\"version\":2}\u{1e}")
        .await;
    assert_eq!(c.next_record().await, Some(json!({})));
    c
}

async fn publish(node: &NodeProcess, n: u64) {
    let r = reqwest::Client::new()
        .post(node.url("/api/v1/hubs/tasks/groups/g"))
        .json(&json!({"target": "N", "arguments": [n]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
}

async fn wait_metric(node: &NodeProcess, name: &str, labels: &[(&str, &str)], want: f64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got = node.metric(name, labels).await;
        if got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name}{labels:?} is {got}, not {want}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_dropped_transport_is_resumed_with_a_sequence_and_what_was_not_acknowledged() {
    let node = NodeProcess::spawn("").await;
    let token = negotiate(&node).await;
    let mut c = open(&node, &token).await;
    c.call("JoinGroup", json!(["g"])).await;
    publish(&node, 1).await;
    assert_eq!(c.next_invocation().await["arguments"], json!([1]));
    // Dropped without a close frame: the connection waits, keeping what is sent to it.
    drop(c);
    publish(&node, 2).await;
    let mut back = Client::open(&format!("ws://{}/hubs/tasks?id={token}", node.addr)).await;
    // No handshake on a resume: the server's first message is the Sequence of the
    // oldest message the client did not acknowledge (it acknowledged none: 1 is the
    // JoinGroup completion), then those messages again, then what followed.
    assert_eq!(
        back.next_record().await,
        Some(json!({"type": 9, "sequenceId": 1}))
    );
    let mut targets = Vec::new();
    while targets.len() < 3 {
        let r = back.recv().await.expect("open");
        if r["type"] == 1 {
            targets.push(r["arguments"][0].clone());
        } else if r["type"] == 3 {
            targets.push(json!("completion"));
        }
    }
    assert_eq!(targets, vec![json!("completion"), json!(1), json!(2)]);
    back.send(json!({"type": 8, "sequenceId": 3})).await;
    wait_metric(
        &node,
        "hubcast_connections_resumed_total",
        &[("hub", "tasks"), ("from", "same_node")],
        1.0,
    )
    .await;
}

#[tokio::test]
async fn a_connection_not_resumed_within_its_window_ends_and_what_it_kept_is_counted() {
    let node = NodeProcess::spawn("[timeouts]\nreconnect_window_ms = 300\n").await;
    let token = negotiate(&node).await;
    let mut c = open(&node, &token).await;
    c.call("JoinGroup", json!(["g"])).await;
    drop(c);
    // Kept for the resume that never comes: counted once the window passes.
    publish(&node, 1).await;
    publish(&node, 2).await;
    wait_metric(
        &node,
        "hubcast_connections_closed_total",
        &[("hub", "tasks"), ("reason", "resume_expired")],
        1.0,
    )
    .await;
    // The two events and the JoinGroup completion were never acknowledged.
    wait_metric(
        &node,
        "hubcast_delivery_failures_total",
        &[("hub", "tasks"), ("reason", "resume_expired")],
        3.0,
    )
    .await;
    // The token no longer resumes anything.
    let refused =
        tokio_tungstenite::connect_async(format!("ws://{}/hubs/tasks?id={token}", node.addr)).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 404),
        other => panic!("expected a 404, got {other:?}"),
    }
}

#[tokio::test]
async fn a_waiting_connection_that_outgrows_what_it_may_keep_is_closed_without_holding_up_others() {
    let node = NodeProcess::spawn("[limits]\nreconnect_buffer_messages = 3\n").await;
    let token = negotiate(&node).await;
    let mut c = open(&node, &token).await;
    c.call("JoinGroup", json!(["g"])).await;
    let mut other = Client::open(&format!("ws://{}/hubs/tasks", node.addr)).await;
    other.handshake().await;
    other.call("JoinGroup", json!(["g"])).await;
    drop(c);
    // The completion and two events fill its three; the third event closes it.
    for n in 0..3 {
        publish(&node, n).await;
    }
    wait_metric(
        &node,
        "hubcast_connections_closed_total",
        &[("hub", "tasks"), ("reason", "slow_consumer")],
        1.0,
    )
    .await;
    // The other member of the group got everything, in order.
    for n in 0..3 {
        assert_eq!(other.next_invocation().await["arguments"], json!([n]));
    }
    let refused =
        tokio_tungstenite::connect_async(format!("ws://{}/hubs/tasks?id={token}", node.addr)).await;
    assert!(refused.is_err(), "nothing to resume");
}
