//! SIGTERM-style drain: clients get Close with allowReconnect and the node stops quickly.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{Client, TestApp};

#[tokio::test]
async fn shutdown_closes_every_client_with_allow_reconnect_and_returns_quickly() {
    let mut app = TestApp::spawn().await;
    let mut a = Client::connect(&app, "/hubs/tasks").await;
    let mut b = Client::connect_direct(&app, "/hubs/spend").await;
    a.call("JoinGroup", json!(["g"])).await;
    let started = tokio::time::Instant::now();
    let run = app.shutdown();
    for c in [&mut a, &mut b] {
        assert_eq!(
            c.recv_non_ping().await,
            Some(json!({"type": 7, "allowReconnect": true}))
        );
        assert_eq!(c.recv().await, None, "socket closed after the Close record");
    }
    let result = tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("run returns within 5 s");
    result.unwrap().unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(app.node.registry().connection_count(), 0);
    // The listener is gone: new connections are refused.
    assert!(reqwest::get(app.url("/healthz")).await.is_err());
}
