//! Joining and leaving, isolation between groups and hubs, order, and the membership API.

use serde_json::{json, Value};

use crate::helpers::{eventually, Client, TestApp, WAIT};

#[tokio::test]
async fn a_publish_reaches_every_member_of_the_group_with_the_exact_payload() {
    let app = TestApp::spawn().await;
    let mut a = Client::connect(&app, "/hubs/tasks").await;
    let mut b = Client::connect_direct(&app, "/hubs/tasks").await;
    a.call("JoinGroup", json!(["g"])).await;
    b.call("JoinGroup", json!(["g"])).await;
    let args = json!(["t1", 50, {"nested": {"list": [1, 2.5, null, true]}, "text": "héllo ✓"}]);
    let reach = app
        .publish("tasks", "g", "TaskProgress", args.clone())
        .await;
    assert_eq!(reach["localConnections"], 2);
    assert_eq!(reach["nodes"], 1);
    // Member counts come free on the in-process backplane; on Redis they would cost a
    // second command per publish, so the 202 leaves them out.
    if !crate::helpers::on_redis() {
        assert_eq!(reach["members"], 2);
    } else {
        assert!(reach.get("members").is_none());
    }
    assert_eq!(reach["correlationId"].as_str().unwrap().len(), 32);
    for c in [&mut a, &mut b] {
        assert_eq!(
            c.next_invocation().await,
            json!({"type": 1, "target": "TaskProgress", "arguments": args})
        );
    }
}

#[tokio::test]
async fn groups_and_hubs_are_isolated() {
    let app = TestApp::spawn().await;
    let mut in_a = Client::connect(&app, "/hubs/tasks").await;
    let mut in_b = Client::connect(&app, "/hubs/tasks").await;
    let mut other_hub = Client::connect(&app, "/hubs/video-generation").await;
    in_a.call("JoinGroup", json!(["a"])).await;
    in_b.call("JoinGroup", json!(["b"])).await;
    other_hub.call("JoinGroup", json!(["a"])).await;

    let reach = app.publish("tasks", "b", "ForB", json!([])).await;
    assert_eq!(reach["localConnections"], 1, "only b's member is targeted");
    assert_eq!(in_b.next_invocation().await["target"], "ForB");
    // Had ForB been queued for a's member, it would have been queued before this marker,
    // which is published only after b's member received ForB.
    app.publish("tasks", "a", "ForA", json!([])).await;
    assert_eq!(in_a.next_invocation().await["target"], "ForA");
    // Same group name on another hub is another group.
    app.publish("video-generation", "a", "ForVideoA", json!([]))
        .await;
    assert_eq!(other_hub.next_invocation().await["target"], "ForVideoA");
}

#[tokio::test]
async fn leaving_stops_delivery_and_disconnecting_leaves_every_group() {
    let app = TestApp::spawn().await;
    let mut stays = Client::connect(&app, "/hubs/tasks").await;
    let mut leaves = Client::connect(&app, "/hubs/tasks").await;
    stays.call("JoinGroup", json!(["g"])).await;
    leaves.call("JoinGroup", json!(["g"])).await;
    leaves.call("JoinGroup", json!(["h"])).await;
    assert_eq!(app.group_members("tasks", "g").await, 2);
    leaves.call("LeaveGroup", json!(["g"])).await;
    assert_eq!(app.group_members("tasks", "g").await, 1);
    let reach = app.publish("tasks", "g", "After", json!([])).await;
    assert_eq!(reach["localConnections"], 1);
    assert_eq!(stays.next_invocation().await["target"], "After");

    leaves.send(json!({"type": 7})).await;
    let node = app.node.clone();
    eventually("connection gone", || {
        node.registry().connection_count() == 1
    })
    .await;
    // The cluster-wide record goes right after the local one.
    let deadline = tokio::time::Instant::now() + WAIT;
    while app.group_members("tasks", "h").await != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "membership of h left behind"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_thousand_messages_to_one_group_arrive_in_order() {
    let app = TestApp::spawn().await;
    let mut c = Client::connect(&app, "/hubs/tasks").await;
    c.call("JoinGroup", json!(["ordered"])).await;
    let http = reqwest::Client::new();
    let url = app.url("/api/v1/hubs/tasks/groups/ordered");
    for i in 0..1000 {
        let r = http
            .post(&url)
            .json(&json!({"target": "N", "arguments": [i]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    for i in 0..1000 {
        assert_eq!(c.next_invocation().await["arguments"][0], i);
    }
}

#[tokio::test]
async fn the_api_adds_and_removes_a_connection_and_sends_to_it() {
    let app = TestApp::spawn().await;
    let neg: Value = reqwest::Client::new()
        .post(app.url("/hubs/tasks/negotiate?negotiateVersion=1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = neg["connectionId"].as_str().unwrap().to_owned();
    let token = neg["connectionToken"].as_str().unwrap();
    let mut c = Client::open(&app.ws_url(&format!("/hubs/tasks?id={token}"))).await;
    c.handshake().await;
    let node = app.node.clone();
    eventually("registered", || node.registry().connection_count() == 1).await;

    let http = reqwest::Client::new();
    let member = app.url(&format!("/api/v1/hubs/tasks/groups/api-g/connections/{id}"));
    assert_eq!(http.put(&member).send().await.unwrap().status(), 200);
    assert_eq!(app.group_members("tasks", "api-g").await, 1);
    app.publish("tasks", "api-g", "ViaApi", json!([1])).await;
    assert_eq!(c.next_invocation().await["target"], "ViaApi");
    assert_eq!(http.delete(&member).send().await.unwrap().status(), 200);
    assert_eq!(app.group_members("tasks", "api-g").await, 0);

    let direct = http
        .post(app.url(&format!("/api/v1/hubs/tasks/connections/{id}")))
        .json(&json!({"target": "JustYou", "arguments": ["x"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), 202);
    assert_eq!(
        c.next_invocation().await,
        json!({"type": 1, "target": "JustYou", "arguments": ["x"]})
    );

    // The connection belongs to the tasks hub, not another one.
    let wrong_hub = http
        .put(app.url(&format!("/api/v1/hubs/spend/groups/x/connections/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_hub.status(), 404);

    let exists = http
        .get(app.url(&format!("/api/v1/hubs/tasks/connections/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(exists.status(), 200);
    let closed = http
        .delete(app.url(&format!("/api/v1/hubs/tasks/connections/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(closed.status(), 202);
    assert_eq!(
        c.recv_non_ping().await,
        Some(json!({"type": 7, "allowReconnect": true}))
    );
}
