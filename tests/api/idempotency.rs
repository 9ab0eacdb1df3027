//! A publisher that retries with the same `Idempotency-Key` gets each message delivered
//! once; a key reused for another request is refused; a malformed key is a 400.

use serde_json::{json, Value};

use crate::helpers::{Client, TestApp, WAIT};

async fn post(app: &TestApp, path: &str, key: Option<&str>, body: Value) -> reqwest::Response {
    let mut req = reqwest::Client::new().post(app.url(path)).json(&body);
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn a_retry_with_the_same_key_is_answered_as_the_first_and_delivered_once() {
    let app = TestApp::spawn().await;
    let mut member = Client::connect(&app, "/hubs/tasks").await;
    member.call("JoinGroup", json!(["g"])).await;
    let body = json!({"target": "Once", "arguments": [1]});
    let path = "/api/v1/hubs/tasks/groups/g";

    let first = post(&app, path, Some("retry-1"), body.clone()).await;
    assert_eq!(first.status(), 202);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();

    let again = post(&app, path, Some("retry-1"), body.clone()).await;
    assert_eq!(again.status(), 202);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["correlationId"], first["correlationId"]);

    // Another key is another message.
    let other = post(&app, path, Some("retry-2"), body.clone()).await;
    assert_eq!(other.status(), 202);
    app.publish("tasks", "g", "End", json!([])).await;
    let mut got = Vec::new();
    loop {
        let inv = member.next_invocation().await;
        if inv["target"] == "End" {
            break;
        }
        got.push(inv["target"].clone());
    }
    assert_eq!(
        got,
        vec![json!("Once"), json!("Once")],
        "two keys, two messages"
    );
}

#[tokio::test]
async fn a_key_reused_for_another_request_is_refused_and_sends_nothing() {
    let app = TestApp::spawn().await;
    let mut member = Client::connect(&app, "/hubs/tasks").await;
    member.call("JoinGroup", json!(["g"])).await;
    let path = "/api/v1/hubs/tasks/groups/g";
    let ok = post(
        &app,
        path,
        Some("k"),
        json!({"target": "A", "arguments": [1]}),
    )
    .await;
    assert_eq!(ok.status(), 202);
    let reused = post(
        &app,
        path,
        Some("k"),
        json!({"target": "A", "arguments": [2]}),
    )
    .await;
    assert_eq!(reused.status(), 422);
    let err: Value = reused.json().await.unwrap();
    assert!(err["error"].as_str().unwrap().contains("Idempotency-Key"));
    let bad = post(&app, path, Some(""), json!({"target": "A"})).await;
    assert_eq!(bad.status(), 400);
    let long = "k".repeat(256);
    let bad = post(&app, path, Some(&long), json!({"target": "A"})).await;
    assert_eq!(bad.status(), 400);

    app.publish("tasks", "g", "End", json!([])).await;
    assert_eq!(member.next_invocation().await["arguments"], json!([1]));
    assert_eq!(
        member.next_invocation().await["target"],
        "End",
        "nothing else was sent"
    );
}

#[tokio::test]
async fn a_retried_flow_request_is_answered_from_its_record_and_sends_nothing_again() {
    let app = TestApp::spawn().await;
    let mut member = Client::connect(&app, "/hubs/tasks").await;
    member.call("JoinGroup", json!(["task-t7"])).await;
    let path = "/api/v1/tasks/task/t7/progress";
    let body = json!({"progress": 40, "message": "m"});
    let first = post(&app, path, Some("flow-1"), body.clone()).await;
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    let again = post(&app, path, Some("flow-1"), body.clone()).await;
    assert_eq!(again.status(), 202);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again, first, "the first answer, as it was");
    let other = post(&app, path, Some("flow-1"), json!({"progress": 41})).await;
    assert_eq!(other.status(), 422);

    let done = post(&app, "/api/v1/tasks/task/t7/completed", None, json!({})).await;
    assert_eq!(done.status(), 202);
    let mut progress = 0;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        assert!(tokio::time::Instant::now() < deadline);
        let inv = member.next_invocation().await;
        match inv["target"].as_str().unwrap() {
            "TaskProgress" => progress += 1,
            "TaskCompleted" => break,
            _ => {}
        }
    }
    assert_eq!(progress, 1, "one progress event for two identical requests");
}
