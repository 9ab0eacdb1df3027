//! SIGTERM-style drain: clients get Close with allowReconnect and the node stops as soon as they are gone.

use serde_json::json;

use crate::helpers::{test_config, Client, TestApp, WAIT};

#[tokio::test]
async fn shutdown_closes_every_client_with_allow_reconnect_and_returns_once_they_are_gone() {
    let mut config = test_config();
    // The drain must end as soon as every client is gone, not when its timer runs out: with
    // an hour-long drain timer, returning at all proves it.
    config.timeouts.shutdown_ms = 3_600_000;
    let mut app = TestApp::spawn_with(config).await;
    let mut a = Client::connect(&app, "/hubs/tasks").await;
    let mut b = Client::connect_direct(&app, "/hubs/spend").await;
    a.call("JoinGroup", json!(["g"])).await;
    let run = app.shutdown();
    for c in [&mut a, &mut b] {
        assert_eq!(
            c.recv_non_ping().await,
            Some(json!({"type": 7, "allowReconnect": true}))
        );
        assert_eq!(c.recv().await, None, "socket closed after the Close record");
    }
    let result = tokio::time::timeout(WAIT, run)
        .await
        .expect("run returns once every client is closed");
    result.unwrap().unwrap();
    assert_eq!(app.node.registry().connection_count(), 0);
    // The listener is gone: new connections are refused.
    assert!(reqwest::get(app.url("/healthz")).await.is_err());
}
