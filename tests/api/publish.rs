//! Every bad publish-API input gets a clear JSON error and changes nothing.

use serde_json::{json, Value};

use crate::helpers::{test_config, Client, TestApp};

async fn expect_error(resp: reqwest::Response, status: u16, needle: &str) {
    assert_eq!(resp.status(), status, "status");
    let body: Value = resp.json().await.expect("a JSON error body");
    let msg = body["error"].as_str().expect("an 'error' string");
    assert!(msg.contains(needle), "{msg:?} should mention {needle:?}");
}

#[tokio::test]
async fn bad_requests_are_refused_and_deliver_nothing() {
    let mut config = test_config();
    config.limits.max_body_bytes = 2048;
    let app = TestApp::spawn_with(config).await;
    let mut member = Client::connect(&app, "/hubs/tasks").await;
    member.call("JoinGroup", json!(["g"])).await;
    let http = reqwest::Client::new();
    let group_url = app.url("/api/v1/hubs/tasks/groups/g");
    let post = |url: String, body: &'static str| {
        http.post(url)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };

    expect_error(
        post(
            app.url("/api/v1/hubs/nope/groups/g"),
            r#"{"target":"X","arguments":[]}"#,
        )
        .await
        .unwrap(),
        404,
        "unknown hub 'nope'",
    )
    .await;
    expect_error(
        post(group_url.clone(), r#"{"arguments":[]}"#)
            .await
            .unwrap(),
        400,
        "missing 'target'",
    )
    .await;
    expect_error(
        post(group_url.clone(), r#"{"target":7,"arguments":[]}"#)
            .await
            .unwrap(),
        400,
        "'target' must be a string",
    )
    .await;
    expect_error(
        post(group_url.clone(), r#"{"target":"X","arguments":{"a":1}}"#)
            .await
            .unwrap(),
        400,
        "'arguments' must be an array",
    )
    .await;
    expect_error(
        post(group_url.clone(), r#"{"target":"X","arguments":[1"#)
            .await
            .unwrap(),
        400,
        "not valid JSON",
    )
    .await;
    expect_error(
        post(group_url.clone(), r#""just a string""#).await.unwrap(),
        400,
        "JSON object",
    )
    .await;

    let big = format!(r#"{{"target":"X","arguments":["{}"]}}"#, "y".repeat(4096));
    expect_error(
        http.post(&group_url).body(big).send().await.unwrap(),
        413,
        "larger than 2048 bytes",
    )
    .await;

    expect_error(
        post(app.url("/api/v1/hubs/tasks/groups/"), r#"{"target":"X"}"#)
            .await
            .unwrap(),
        400,
        "must not be empty",
    )
    .await;
    let long = format!("/api/v1/hubs/tasks/groups/{}", "a".repeat(257));
    expect_error(
        post(app.url(&long), r#"{"target":"X"}"#).await.unwrap(),
        400,
        "257 bytes",
    )
    .await;
    expect_error(
        post(
            app.url("/api/v1/hubs/tasks/groups/a%07b"),
            r#"{"target":"X"}"#,
        )
        .await
        .unwrap(),
        400,
        "control characters",
    )
    .await;

    expect_error(
        post(app.url("/api/v1/hubs/tasks"), r#"{"target":"X"}"#)
            .await
            .unwrap(),
        403,
        "not allowed",
    )
    .await;
    expect_error(
        http.post(&group_url)
            .header("x-correlation-id", "has space")
            .body(r#"{"target":"X"}"#)
            .send()
            .await
            .unwrap(),
        400,
        "X-Correlation-Id",
    )
    .await;

    let ghost = "AAAAAAAAAAAAAAAAAAAAAA";
    expect_error(
        post(
            app.url(&format!("/api/v1/hubs/tasks/connections/{ghost}")),
            r#"{"target":"X"}"#,
        )
        .await
        .unwrap(),
        404,
        "not connected",
    )
    .await;
    expect_error(
        http.put(app.url(&format!("/api/v1/hubs/tasks/groups/g/connections/{ghost}")))
            .send()
            .await
            .unwrap(),
        404,
        "not connected",
    )
    .await;
    expect_error(
        http.delete(app.url(&format!("/api/v1/hubs/tasks/groups/g/connections/{ghost}")))
            .send()
            .await
            .unwrap(),
        404,
        "not connected",
    )
    .await;
    expect_error(
        http.get(app.url("/api/v1/nothing")).send().await.unwrap(),
        404,
        "no route",
    )
    .await;

    // Nothing was published and membership did not change: the first event the member
    // sees is this one, and the group still has exactly one member.
    assert_eq!(app.group_members("tasks", "g").await, 1);
    app.publish("tasks", "g", "Marker", json!([])).await;
    assert_eq!(member.next_invocation().await["target"], "Marker");
}

#[tokio::test]
async fn a_caller_correlation_id_is_echoed_and_azure_casing_is_accepted() {
    let app = TestApp::spawn().await;
    let mut member = Client::connect(&app, "/hubs/tasks").await;
    member.call("JoinGroup", json!(["g"])).await;
    let resp = reqwest::Client::new()
        .post(app.url("/api/v1/hubs/tasks/groups/g"))
        .header("x-correlation-id", "req-42")
        .body(r#"{"Target":"Cased","Arguments":[1]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    assert_eq!(resp.headers()["x-correlation-id"], "req-42");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["correlationId"], "req-42");
    assert_eq!(
        member.next_invocation().await,
        json!({"type":1,"target":"Cased","arguments":[1]})
    );
}

#[tokio::test]
async fn a_hub_that_allows_broadcast_reaches_all_its_connections() {
    let mut config = test_config();
    let spec = hubcast::hub::HubSpec {
        name: "chat".into(),
        path: "/hubs/chat".into(),
        aliases: vec![],
        allow_broadcast: true,
        auto_join: vec![],
        auth: hubcast::auth::AuthMode::None,
        schema_check: hubcast::hub::SchemaCheck::Warn,
        allow: vec![],
        methods: vec![],
        history: true,
    };
    config.hubs.push(hubcast::hub::Hub::new(spec).unwrap());
    let app = TestApp::spawn_with(config).await;
    let mut a = Client::connect(&app, "/hubs/chat").await;
    let mut b = Client::connect_direct(&app, "/hubs/chat").await;
    let resp = reqwest::Client::new()
        .post(app.url("/api/v1/hubs/chat"))
        .json(&json!({"target": "Everyone", "arguments": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    assert_eq!(a.next_invocation().await["target"], "Everyone");
    assert_eq!(b.next_invocation().await["target"], "Everyone");
}

#[tokio::test]
async fn flow_bodies_with_absurd_numbers_are_refused_not_panicked_on() {
    let app = TestApp::spawn().await;
    let http = reqwest::Client::new();
    for body in [
        json!({"url": "https://a.io/b", "outcome": "retrying", "attempt": 1, "nextRetryInSeconds": 1e300}),
        json!({"url": "https://a.io/b", "outcome": "retrying", "attempt": 1, "nextRetryInSeconds": -5}),
        json!({"url": "https://a.io/b", "outcome": "failed", "attempt": i64::MAX}),
    ] {
        let r = http
            .post(app.url("/api/v1/webhooks/deliveries"))
            .json(&body)
            .send()
            .await
            .unwrap();
        expect_error(r, 400, "must be between").await;
    }
    // The node is still serving.
    assert_eq!(
        reqwest::get(app.url("/healthz")).await.unwrap().status(),
        200
    );
}
