//! A client that stops reading is evicted; everyone else keeps receiving.

use serde_json::json;

use crate::helpers::{eventually, test_config, Client, TestApp};

#[tokio::test]
async fn a_non_reading_client_is_evicted_while_a_healthy_one_receives_everything() {
    let mut config = test_config();
    config.limits.outbound_queue = 16;
    // A write to the stuck client never times out within the test: if its blocked socket
    // could hold up anyone else's delivery, the healthy client would stall and the test
    // would fail on its receive deadline instead of finishing.
    config.timeouts.write_timeout_ms = 3_600_000;
    let app = TestApp::spawn_with(config).await;
    let mut healthy = Client::connect(&app, "/hubs/tasks").await;
    let mut stuck = Client::connect(&app, "/hubs/tasks").await;
    healthy.call("JoinGroup", json!(["g"])).await;
    stuck.call("JoinGroup", json!(["g"])).await;

    // `stuck` never reads again: once the socket buffers fill, its queue fills and it is
    // evicted. 2 000 × 16 KiB is far more than loopback buffers hold.
    let payload = "p".repeat(16 * 1024);
    let node = app.node.clone();
    let publisher = {
        let url = app.url("/api/v1/hubs/tasks/groups/g");
        let payload = payload.clone();
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            for i in 0..2000 {
                let r = http
                    .post(&url)
                    .json(&json!({"target": "Big", "arguments": [i, payload]}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 202);
            }
        })
    };
    for i in 0..2000 {
        let inv = healthy.next_invocation().await;
        assert_eq!(
            inv["arguments"][0], i,
            "healthy client got every message in order"
        );
    }
    publisher.await.unwrap();
    eventually("stuck client evicted", || {
        node.registry().connection_count() == 1
    })
    .await;
    assert_eq!(app.group_members("tasks", "g").await, 1);
    drop(stuck);
}
