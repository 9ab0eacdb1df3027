//! The versioned Azure routes across nodes: exclusions travel with the message, closing
//! a group reaches every node holding a member, leaving all groups reaches the owner; a
//! user's group records reach its connections on every node, the user-in-group check
//! asks the nodes holding its connections, the member listing spans nodes, and a
//! connection opened while its node is cut off from Redis joins its user's groups once
//! Redis is back.

use serde_json::json;

use super::helpers::{negotiate, until, Client, TestApp};
use super::Cluster;

const V: &str = "api-version=2024-12-01";

async fn client(app: &TestApp) -> (Client, String) {
    let neg = negotiate(app, "/hubs/tasks").await;
    let id = neg["connectionId"].as_str().unwrap().to_owned();
    let token = neg["connectionToken"].as_str().unwrap();
    let mut c = Client::open(&app.ws_url(&format!("/hubs/tasks?id={token}"))).await;
    c.handshake().await;
    c.call("JoinGroup", json!(["x"])).await;
    (c, id)
}

#[tokio::test]
async fn exclusions_and_group_closes_are_honoured_on_every_node() {
    let cluster = Cluster::spawn(3).await;
    let [a, b, c] = [&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]];
    let (mut a1, id_a1) = client(a).await;
    let (mut a2, id_a2) = client(a).await;
    let (mut b1, _) = client(b).await;
    let (mut b2, id_b2) = client(b).await;
    assert_eq!(c.group_members("tasks", "x").await, 4);
    let http = reqwest::Client::new();
    let send = |q: String, target: &'static str| {
        http.post(c.url(&format!("/api/hubs/tasks/groups/x/:send?{V}{q}")))
            .json(&json!({"target": target, "arguments": []}))
            .send()
    };
    let r = send(format!("&excluded={id_a1}&excluded={id_b2}"), "Some")
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(a2.next_invocation().await["target"], "Some");
    assert_eq!(b1.next_invocation().await["target"], "Some");
    assert_eq!(send(String::new(), "All").await.unwrap().status(), 202);
    for client in [&mut a1, &mut a2, &mut b1, &mut b2] {
        assert_eq!(client.next_invocation().await["target"], "All");
    }

    let r = http
        .post(c.url(&format!(
            "/api/hubs/tasks/groups/x/:closeConnections?{V}&excluded={id_a2}&reason=moving"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    for client in [&mut a1, &mut b1, &mut b2] {
        assert_eq!(
            client.recv_non_ping().await,
            Some(json!({"type": 7, "error": "moving", "allowReconnect": true}))
        );
    }
    super::helpers::eventually("closed members left", || {
        a.node.registry().connection_count() == 1 && b.node.registry().connection_count() == 0
    })
    .await;

    // The survivor, on another node, leaves every group through the API on C.
    let r = http
        .delete(c.url(&format!("/api/hubs/tasks/connections/{id_a2}/groups?{V}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let head = http
        .head(c.url(&format!("/api/hubs/tasks/groups/x?{V}")))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 404);
    let connected = http
        .head(c.url(&format!("/api/hubs/tasks/connections/{id_a2}?{V}")))
        .send()
        .await
        .unwrap();
    assert_eq!(connected.status(), 200);
}

const ACCESS: &str = "publish-key-1-0123456789abcdef0123456";
const TOKEN_KEY: &str = "client-token-key-0123456789abcdef0123";
const MASTER: &str = "master-key-0123456789abcdef0123456789";

async fn secure_node(redis: &super::TestRedis, prefix: &str) -> TestApp {
    secure_node_at(&redis.url(), prefix).await
}

async fn secure_node_at(url: &str, prefix: &str) -> TestApp {
    let security = hubcast::config::Security {
        access_keys: vec![hubcast::auth::Secret::new(ACCESS)],
        token_key: Some(hubcast::auth::Secret::new(TOKEN_KEY)),
        master_key: Some(hubcast::auth::Secret::new(MASTER)),
        ..hubcast::config::Security::default()
    };
    let mut config =
        hubcast::config::Config::with_security("127.0.0.1:0".parse().unwrap(), security).unwrap();
    super::helpers::use_redis_url(&mut config, url, prefix);
    TestApp::start(config, None).await
}

async fn members(app: &TestApp, group: &str) -> u64 {
    reqwest::Client::new()
        .get(app.url(&format!("/api/v1/hubs/tasks/groups/{group}")))
        .bearer_auth(ACCESS)
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap()["members"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn a_users_connections_on_every_node_join_and_leave_a_group_and_are_found() {
    let redis = super::TestRedis::start().await;
    let prefix = super::helpers::unique_prefix();
    let a = secure_node(&redis, &prefix).await;
    let b = secure_node(&redis, &prefix).await;
    let c = secure_node(&redis, &prefix).await;
    let http = reqwest::Client::new();
    let token = token_for(&c, "u-9").await;
    let mut on_a = Client::open(&a.ws_url(&format!("/hubs/tasks?access_token={token}"))).await;
    on_a.handshake().await;
    let mut on_b = Client::open(&b.ws_url(&format!("/hubs/tasks?access_token={token}"))).await;
    on_b.handshake().await;

    let head = |user: &str| {
        http.head(c.url(&format!("/api/hubs/tasks/users/{user}?{V}")))
            .bearer_auth(ACCESS)
            .send()
    };
    assert_eq!(head("u-9").await.unwrap().status(), 200);
    assert_eq!(head("u-0").await.unwrap().status(), 404);

    let r = http
        .put(c.url(&format!("/api/hubs/tasks/users/u-9/groups/ug?{V}")))
        .bearer_auth(ACCESS)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    until_members(&c, "ug", 2).await;
    send_group(&c, "ug", "Both").await;
    assert_eq!(on_a.next_invocation().await["target"], "Both");
    assert_eq!(on_b.next_invocation().await["target"], "Both");

    let r = http
        .delete(c.url(&format!("/api/hubs/tasks/users/u-9/groups?{V}")))
        .bearer_auth(ACCESS)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    until_members(&c, "ug", 0).await;
}

async fn token_for(node: &TestApp, user: &str) -> String {
    super::helpers::client_token(&node.url(""), "tasks", user, ACCESS).await
}

async fn user_client(node: &TestApp, token: &str) -> Client {
    let mut c = Client::open(&node.ws_url(&format!("/hubs/tasks?access_token={token}"))).await;
    c.handshake().await;
    c
}

async fn status(method: reqwest::Method, node: &TestApp, path: &str) -> u16 {
    reqwest::Client::new()
        .request(method, node.url(path))
        .bearer_auth(ACCESS)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Sends `target` to a group through `node`: the 202's reach.
async fn send_group(node: &TestApp, group: &str, target: &str) -> serde_json::Value {
    let r = reqwest::Client::new()
        .post(node.url(&format!("/api/hubs/tasks/groups/{group}/:send?{V}")))
        .bearer_auth(ACCESS)
        .json(&json!({"target": target, "arguments": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    r.json().await.unwrap()
}

async fn until_members(node: &TestApp, group: &str, n: u64) {
    let what = format!("group {group} has {n} members");
    until(&what, || async { members(node, group).await == n }).await;
}

#[tokio::test]
async fn a_users_group_records_reach_its_connections_on_every_node_and_are_checked_and_listed() {
    let redis = super::TestRedis::start().await;
    let prefix = super::helpers::unique_prefix();
    let a = secure_node(&redis, &prefix).await;
    let b = secure_node(&redis, &prefix).await;
    let c = secure_node(&redis, &prefix).await;
    let put = format!("/api/hubs/tasks/users/u-20/groups/rec?{V}");
    assert_eq!(status(reqwest::Method::PUT, &c, &put).await, 200);
    let token = token_for(&c, "u-20").await;
    let mut on_a = user_client(&a, &token).await;
    let mut on_b = user_client(&b, &token).await;
    // Each joined from the record in Redis before its handshake was answered.
    assert_eq!(members(&c, "rec").await, 2);
    send_group(&c, "rec", "FromRecord").await;
    assert_eq!(on_a.next_invocation().await["target"], "FromRecord");
    assert_eq!(on_b.next_invocation().await["target"], "FromRecord");
    let in_group = |g: &'static str| {
        let path = format!("/api/hubs/tasks/users/u-20/groups/{g}?{V}");
        let c = &c;
        async move { status(reqwest::Method::HEAD, c, &path).await }
    };
    assert_eq!(in_group("rec").await, 200, "by the record");

    // ttl=0: no record, so node C (holding none of the user's connections) asks.
    let put = format!("/api/hubs/tasks/users/u-20/groups/now?{V}&ttl=0");
    assert_eq!(status(reqwest::Method::PUT, &c, &put).await, 200);
    until_members(&c, "now", 2).await;
    assert_eq!(in_group("now").await, 200, "nodes A and B answer yes");
    assert_eq!(in_group("never").await, 404, "both answer no");

    // The listing spans both nodes and tells each connection's user.
    let mut url = c.url(&format!(
        "/api/hubs/tasks/groups/rec/connections?{V}&maxpagesize=1"
    ));
    let mut listed = Vec::new();
    for _ in 0..10 {
        let page: serde_json::Value = reqwest::Client::new()
            .get(&url)
            .bearer_auth(ACCESS)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for m in page["value"].as_array().unwrap() {
            assert_eq!(m["userId"], "u-20", "{m}");
            listed.push(m["connectionId"].as_str().unwrap().to_owned());
        }
        match page["nextLink"].as_str() {
            Some(next) => url = next.to_owned(),
            None => break,
        }
    }
    listed.sort();
    listed.dedup();
    assert_eq!(listed.len(), 2, "both connections, once each: {listed:?}");

    // A timed membership ends on both nodes.
    let put = format!("/api/hubs/tasks/users/u-20/groups/brief?{V}&ttl=4");
    assert_eq!(status(reqwest::Method::PUT, &c, &put).await, 200);
    until_members(&c, "brief", 2).await;
    until_members(&c, "brief", 0).await;
    assert_eq!(in_group("brief").await, 404);
    assert_eq!(members(&c, "rec").await, 2, "the lasting one stays");
}

#[tokio::test]
async fn a_connection_opened_while_its_node_is_cut_off_from_redis_joins_its_users_groups_later() {
    // Standalone only: the proxy forwards to one server (a cluster redirects past it).
    let redis = super::TestRedis::standalone().await;
    let port: u16 = redis.url().rsplit(':').next().unwrap().parse().unwrap();
    let proxy = super::cut_proxy::CutProxy::start(port).await;
    let prefix = super::helpers::unique_prefix();
    // A process, so its /metrics can be read.
    let proxied = proxy.url();
    let a = super::helpers::NodeProcess::spawn_secure(
        "",
        [ACCESS, TOKEN_KEY, MASTER],
        &["--redis-url", &proxied, "--redis-prefix", &prefix],
    )
    .await;
    let c = secure_node(&redis, &prefix).await;
    let put = format!("/api/hubs/tasks/users/u-21/groups/kept?{V}");
    assert_eq!(status(reqwest::Method::PUT, &c, &put).await, 200);
    let token = token_for(&c, "u-21").await;

    proxy.cut();
    until("A saw Redis go", || async {
        reqwest::get(a.url("/readyz")).await.unwrap().status() == 503
    })
    .await;
    // Node A cannot read the user's groups now; the connection is taken all the same,
    // and the failure counted.
    let mut on_a = Client::open(&format!("ws://{}/hubs/tasks?access_token={token}", a.addr)).await;
    on_a.handshake().await;
    assert_eq!(members(&c, "kept").await, 0);
    let restore_failed = || {
        a.metric(
            "hubcast_user_group_memberships_total",
            &[("hub", "tasks"), ("outcome", "restore_failed")],
        )
    };
    assert_eq!(restore_failed().await, 1.0);

    proxy.mend();
    until_members(&c, "kept", 1).await;
    // Once A is subscribed again a publish reaches it.
    until("A resubscribed", || async {
        send_group(&c, "kept", "AfterTheCut").await["nodes"].as_u64() == Some(1)
    })
    .await;
    let mut target = on_a.next_invocation().await;
    while target["target"] != "AfterTheCut" {
        target = on_a.next_invocation().await;
    }
    assert_eq!(restore_failed().await, 1.0, "counted once, not per retry");
}
