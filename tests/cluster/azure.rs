//! The versioned Azure routes across nodes: exclusions travel with the message, closing
//! a group reaches every node holding a member, leaving all groups reaches the owner.

use serde_json::json;

use super::helpers::{negotiate, Client, TestApp};
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
    let security = hubcast::config::Security {
        access_keys: vec![hubcast::auth::Secret::new(ACCESS)],
        token_key: Some(hubcast::auth::Secret::new(TOKEN_KEY)),
        master_key: Some(hubcast::auth::Secret::new(MASTER)),
        ..hubcast::config::Security::default()
    };
    let mut config =
        hubcast::config::Config::with_security("127.0.0.1:0".parse().unwrap(), security).unwrap();
    super::helpers::use_redis_url(&mut config, &redis.url(), prefix);
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
    let r = http
        .post(c.url(&format!("/api/hubs/tasks/:generateToken?{V}&userId=u-9")))
        .bearer_auth(ACCESS)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let token = r.json::<serde_json::Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
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
    let deadline = std::time::Instant::now() + super::WAIT;
    while members(&c, "ug").await != 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "both connections joined"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let r = http
        .post(c.url(&format!("/api/hubs/tasks/groups/ug/:send?{V}")))
        .bearer_auth(ACCESS)
        .json(&json!({"target": "Both", "arguments": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(on_a.next_invocation().await["target"], "Both");
    assert_eq!(on_b.next_invocation().await["target"], "Both");

    let r = http
        .delete(c.url(&format!("/api/hubs/tasks/users/u-9/groups?{V}")))
        .bearer_auth(ACCESS)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let deadline = std::time::Instant::now() + super::WAIT;
    while members(&c, "ug").await != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "both connections left"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
