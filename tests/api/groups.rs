//! Joining and leaving, isolation between groups and hubs, order, and the membership API.

use serde_json::json;

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
    let neg = crate::helpers::negotiate(&app, "/hubs/tasks").await;
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

/// Redis commands the test's server ran, in all and for (un)subscribing; `None` on the
/// in-process backplane.
async fn redis_calls(app: &TestApp) -> Option<(u64, u64)> {
    let redis = app.redis.as_ref()?;
    let mut c = redis.connection().await;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut c)
        .await
        .unwrap();
    let (mut all, mut subscribing) = (0, 0);
    for line in info.lines() {
        let Some((name, stats)) = line
            .strip_prefix("cmdstat_")
            .and_then(|l| l.split_once(':'))
        else {
            continue;
        };
        let calls: u64 = stats
            .split(',')
            .find_map(|kv| kv.strip_prefix("calls="))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        all += calls;
        if name.ends_with("subscribe") {
            subscribing += calls;
        }
    }
    Some((all, subscribing))
}

#[tokio::test]
async fn a_call_whose_joins_pass_the_group_limit_is_refused_before_any_is_applied() {
    let app = TestApp::spawn().await;
    let mut c = Client::connect(&app, "/hubs/webhooks").await;
    c.call("JoinGroup", json!(["kept"])).await;
    let groups_now = || {
        let conns = app.node.registry().snapshot();
        assert_eq!(conns.len(), 1);
        let mut channels: Vec<String> = conns[0].1.channels.iter().map(|c| c.to_string()).collect();
        channels.sort();
        (conns[0].1.groups, channels)
    };
    let before = groups_now();
    assert_eq!(before.0, 1);

    // 101 URLs: the joins would take the connection to 102 groups, over the 100 allowed.
    let urls: Vec<String> = (0..101)
        .map(|i| format!("https://h{i}.example/hook"))
        .collect();
    let calls_before = redis_calls(&app).await;
    let refused = c.invoke("SubscribeToWebhooks", json!([urls])).await;
    let calls_after = redis_calls(&app).await;
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("already in 100 groups, the most allowed"),
        "the Completion error a join over the limit gets: {refused}"
    );
    assert_eq!(
        groups_now(),
        before,
        "the connection's groups are unchanged"
    );
    assert_eq!(
        app.group_members("webhooks", "webhook-h0-example--hook")
            .await,
        0
    );
    if let (Some((all0, sub0)), Some((all1, sub1))) = (calls_before, calls_after) {
        // Joining 100 and rolling them back cost about 1 400 commands; refusing up front
        // costs none. What runs meanwhile is the node's heartbeat and this test's INFO.
        assert_eq!(
            (sub1 - sub0, all1 - all0 < 20),
            (0, true),
            "no channel (un)subscribed and nearly no command: {} (un)subscribes, {} commands",
            sub1 - sub0,
            all1 - all0
        );
        assert!(
            all1 - all0 < 20,
            "{} Redis commands for a refused call",
            all1 - all0
        );
    }

    // Exactly up to the limit is allowed; joins of groups it is in already, or twice in
    // one call, add nothing and count nothing.
    let mut fit = urls[..99].to_vec();
    fit.push(urls[0].clone());
    c.call("SubscribeToWebhooks", json!([fit])).await;
    assert_eq!(groups_now().0, 100);
    c.call("SubscribeToWebhooks", json!([[urls[5].clone()]]))
        .await;
    c.call("JoinGroup", json!(["kept"])).await;
    let over = c
        .invoke("SubscribeToWebhooks", json!([[urls[100].clone()]]))
        .await;
    assert!(
        over["error"]
            .as_str()
            .unwrap()
            .contains("already in 100 groups"),
        "{over}"
    );
    assert_eq!(groups_now().0, 100);
}

#[tokio::test]
async fn a_method_whose_group_needs_a_missing_claim_says_so_and_void_methods_complete_with_null() {
    // The test hubs take connections without claims, as development mode does.
    let app = TestApp::spawn().await;
    let mut c = Client::connect(&app, "/hubs/tasks").await;
    let refused = c.invoke("SubscribeToTaskType", json!(["export"])).await;
    let error = refused["error"].as_str().unwrap();
    assert!(
        error.contains("'vkey' claim") && !error.contains("unauthorized"),
        "{error}"
    );
    let joined = c.invoke("JoinGroup", json!(["task-1"])).await;
    assert_eq!(joined["result"], serde_json::Value::Null);
    assert!(
        joined.as_object().unwrap().contains_key("result"),
        "a void completion carries \"result\": null: {joined}"
    );
}
