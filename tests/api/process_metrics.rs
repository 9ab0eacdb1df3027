//! What an SRE reads off a node: its build, its process (CPU, memory, open files), bytes
//! on its WebSockets, connections opened and how long they lasted, queued messages.

use serde_json::json;

use crate::helpers::{Client, NodeProcess, WAIT};

#[tokio::test]
async fn a_node_exports_its_process_build_bytes_and_connection_lifetimes() {
    let node = NodeProcess::spawn("").await;
    let mut c = Client::open(&format!("ws://{}/hubs/tasks", node.addr)).await;
    c.handshake().await;
    c.call("JoinGroup", json!(["g"])).await;
    let r = reqwest::Client::new()
        .post(node.url("/api/v1/hubs/tasks/groups/g"))
        .json(&json!({"target": "Hello", "arguments": ["x".repeat(1000)]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    c.next_invocation().await;

    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        node.metric("hubcast_build_info", &[("version", version)])
            .await,
        1.0
    );
    // The collector reads the same /proc the test does.
    let rss = node.metric("process_resident_memory_bytes", &[]).await;
    assert!(
        rss > 1e6 && rss < 4.0 * node.rss() as f64,
        "resident memory {rss}"
    );
    assert!(node.metric("process_open_fds", &[]).await >= 3.0);
    assert!(node.metric("process_max_fds", &[]).await > 0.0);
    assert_eq!(
        node.metric("hubcast_connections_opened_total", &[("hub", "tasks")])
            .await,
        1.0
    );
    assert!(
        node.metric("hubcast_websocket_sent_bytes_total", &[]).await > 1000.0,
        "the 1 000-byte event and the replies were counted"
    );
    assert!(
        node.metric("hubcast_websocket_received_bytes_total", &[])
            .await
            > 0.0
    );
    assert_eq!(
        node.metric("hubcast_outbound_queued_messages", &[]).await,
        0.0
    );

    drop(c);
    let deadline = tokio::time::Instant::now() + WAIT;
    while node
        .metric(
            "hubcast_connection_duration_seconds_count",
            &[("hub", "tasks")],
        )
        .await
        != 1.0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the closed connection's lifetime was not recorded"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
