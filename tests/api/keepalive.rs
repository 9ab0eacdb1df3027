//! Ping cadence, client timeout and handshake timeout, on tokio's paused clock: the
//! runtime jumps to the next timer whenever every task is idle, so 30 s pass instantly
//! and exactly.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::{timeout, Instant};

use crate::helpers::{test_config, Client, TestApp};

async fn next_within(c: &mut Client, d: Duration) -> Option<Value> {
    timeout(d, c.next_record())
        .await
        .expect("a record within the window")
}

#[tokio::test(start_paused = true)]
async fn the_server_pings_every_15_seconds_of_silence() {
    // Timing tests run on the paused clock, which only the in-process backplane is
    // compatible with (Redis I/O would let the clock jump past command timeouts).
    let app = TestApp::spawn_in_memory(test_config()).await;
    let mut c = Client::connect_direct(&app, "/hubs/tasks").await;
    let start = Instant::now();
    for n in 1..=3u64 {
        // Keep the connection alive from the client side so only the server's cadence shows.
        c.send(json!({"type": 6})).await;
        let r = next_within(&mut c, Duration::from_secs(20)).await;
        assert_eq!(r, Some(json!({"type": 6})));
        let at = start.elapsed();
        assert!(
            at >= Duration::from_secs(15 * n) && at < Duration::from_secs(15 * n + 1),
            "ping {n} at {at:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_silent_client_is_closed_after_30_seconds_with_allow_reconnect() {
    // Timing tests run on the paused clock, which only the in-process backplane is
    // compatible with (Redis I/O would let the clock jump past command timeouts).
    let app = TestApp::spawn_in_memory(test_config()).await;
    let mut c = Client::connect_direct(&app, "/hubs/tasks").await;
    let start = Instant::now();
    let close = loop {
        let r = next_within(&mut c, Duration::from_secs(40))
            .await
            .expect("a Close before the socket ends");
        if r["type"] != 6 {
            break r;
        }
    };
    let at = start.elapsed();
    assert_eq!(
        close,
        json!({"type": 7, "error": "Connection closed with an error.", "allowReconnect": true})
    );
    assert!(
        at >= Duration::from_secs(30) && at < Duration::from_secs(31),
        "closed at {at:?}"
    );
    assert_eq!(next_within(&mut c, Duration::from_secs(5)).await, None);
    assert_eq!(app.node.registry().connection_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_client_that_pings_stays_connected() {
    // Timing tests run on the paused clock, which only the in-process backplane is
    // compatible with (Redis I/O would let the clock jump past command timeouts).
    let app = TestApp::spawn_in_memory(test_config()).await;
    let mut c = Client::connect_direct(&app, "/hubs/tasks").await;
    for _ in 0..8 {
        c.send(json!({"type": 6})).await;
        // The server's ping (15 s cadence) comes within 16 s; nothing else may.
        let r = next_within(&mut c, Duration::from_secs(16)).await;
        assert_eq!(r, Some(json!({"type": 6})));
    }
    // 8 × 15 s = 2 minutes, well past the 30 s timeout.
    assert_eq!(app.node.registry().connection_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_handshake_not_completed_in_15_seconds_is_canceled() {
    // Timing tests run on the paused clock, which only the in-process backplane is
    // compatible with (Redis I/O would let the clock jump past command timeouts).
    let app = TestApp::spawn_in_memory(test_config()).await;
    let mut c = Client::open(&app.ws_url("/hubs/tasks")).await;
    // Half a handshake, never finished.
    c.send_raw("{\"protocol\":").await;
    let start = Instant::now();
    let r = next_within(&mut c, Duration::from_secs(20)).await;
    assert_eq!(r, Some(json!({"error": "Handshake was canceled."})));
    let at = start.elapsed();
    assert!(
        at >= Duration::from_secs(14) && at < Duration::from_secs(16),
        "canceled at {at:?}"
    );
    assert_eq!(next_within(&mut c, Duration::from_secs(5)).await, None);
}
