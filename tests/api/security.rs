//! One test per refusal path: each asserts the refusal and that nothing changed (no
//! membership, no delivery, no count). Plus the connect proxy against a backend the test
//! starts.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hubcast::auth::{sign_jwt, AuthMode, ConnectionTokens, Identity, Secret, TokenBinding};
use hubcast::config::{Config, Security};
use hubcast::hub::{Hub, HubSpec};
use hubcast::ids::UserId;
use serde_json::{json, Value};

use crate::helpers::{Client, TestApp};

// Keys of at least 32 bytes, all different: a node refuses anything else.
pub const ACCESS: &str = "publish-key-1-0123456789abcdef0123456";
pub const ROTATED: &str = "publish-key-2-0123456789abcdef0123456";
pub const TOKEN_KEY: &str = "client-token-key-0123456789abcdef0123";
pub const MASTER: &str = "master-key-0123456789abcdef0123456789";

pub fn security() -> Security {
    Security {
        access_keys: vec![Secret::new(ACCESS), Secret::new(ROTATED)],
        token_key: Some(Secret::new(TOKEN_KEY)),
        master_key: Some(Secret::new(MASTER)),
        allowed_origins: vec!["https://app.example.com".into()],
        connect_proxy_timeout: Duration::from_millis(500),
        connect_proxy_cache: Duration::from_secs(30),
        ..Security::default()
    }
}

pub fn secure_config() -> Config {
    Config::with_security("127.0.0.1:0".parse().unwrap(), security()).unwrap()
}

pub async fn secure_app() -> TestApp {
    TestApp::spawn_with(secure_config()).await
}

pub fn now() -> u64 {
    hubcast::auth::now_secs()
}

pub fn token(claims: Value) -> String {
    sign_jwt(&claims, TOKEN_KEY.as_bytes())
}

pub fn vkey_token(vkey: u32) -> String {
    token(json!({"sub": format!("user-{vkey}"), "vkey": vkey, "exp": now() + 300}))
}

pub async fn negotiate_status(app: &TestApp, hub_path: &str, bearer: Option<&str>) -> u16 {
    let mut req =
        reqwest::Client::new().post(app.url(&format!("{hub_path}/negotiate?negotiateVersion=1")));
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    req.send().await.unwrap().status().as_u16()
}

pub async fn upgrade_status(app: &TestApp, hub_path_and_query: &str) -> u16 {
    match tokio_tungstenite::connect_async(app.ws_url(hub_path_and_query)).await {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("unexpected error {e}"),
    }
}

/// Connects with a credential in the query, as browsers do.
pub async fn connect_with(app: &TestApp, hub_path: &str, credential: &str) -> Client {
    let mut c = Client::open(&app.ws_url(&format!("{hub_path}?access_token={credential}"))).await;
    c.handshake().await;
    c
}

async fn publish_as(
    app: &TestApp,
    bearer: Option<&str>,
    path: &str,
    body: Value,
) -> reqwest::Response {
    let mut req = reqwest::Client::new().post(app.url(path)).json(&body);
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    req.send().await.unwrap()
}

async fn members(app: &TestApp, hub: &str, group: &str) -> u64 {
    let v: Value = reqwest::Client::new()
        .get(app.url(&format!("/api/v1/hubs/{hub}/groups/{group}")))
        .bearer_auth(ACCESS)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["members"].as_u64().unwrap()
}

pub async fn error_of(resp: reqwest::Response, status: u16) -> String {
    assert_eq!(resp.status(), status);
    let v: Value = resp.json().await.unwrap();
    v["error"].as_str().expect("a JSON error").to_owned()
}

#[tokio::test]
async fn without_a_credential_negotiate_and_upgrade_are_401_and_nothing_connects() {
    let app = secure_app().await;
    assert_eq!(negotiate_status(&app, "/hubs/spend", None).await, 401);
    assert_eq!(upgrade_status(&app, "/hubs/spend").await, 401);
    assert_eq!(app.node.registry().connection_count(), 0);
}

#[tokio::test]
async fn a_token_with_a_bad_signature_is_refused() {
    let app = secure_app().await;
    let forged = sign_jwt(&json!({"vkey": 7, "exp": now() + 300}), b"not-the-key");
    assert_eq!(
        negotiate_status(&app, "/hubs/spend", Some(&forged)).await,
        401
    );
    assert_eq!(
        upgrade_status(&app, &format!("/hubs/spend?access_token={forged}")).await,
        401
    );
    assert_eq!(members(&app, "spend", "vkey-7").await, 0);
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let app = secure_app().await;
    let expired = token(json!({"vkey": 7, "exp": now() - 3600}));
    assert_eq!(
        negotiate_status(&app, "/hubs/spend", Some(&expired)).await,
        401
    );
    assert_eq!(
        upgrade_status(&app, &format!("/hubs/spend?access_token={expired}")).await,
        401
    );
    let no_exp = token(json!({"vkey": 7}));
    assert_eq!(
        upgrade_status(&app, &format!("/hubs/spend?access_token={no_exp}")).await,
        401
    );
    assert_eq!(app.node.registry().connection_count(), 0);
}

#[tokio::test]
async fn a_token_for_another_hub_is_refused() {
    let app = secure_app().await;
    let for_tasks = token(json!({"vkey": 7, "aud": "tasks", "exp": now() + 300}));
    assert_eq!(
        negotiate_status(&app, "/hubs/spend", Some(&for_tasks)).await,
        401
    );
    assert_eq!(
        upgrade_status(&app, &format!("/hubs/spend?access_token={for_tasks}")).await,
        401
    );
    assert_eq!(
        negotiate_status(&app, "/hubs/tasks", Some(&for_tasks)).await,
        200
    );
}

#[tokio::test]
async fn a_key_7_connection_joins_its_own_group_and_cannot_join_key_8s() {
    let app = secure_app().await;
    let mut c = connect_with(&app, "/hubs/spend", &vkey_token(7)).await;
    assert_eq!(
        members(&app, "spend", "vkey-7").await,
        1,
        "joined its own key's group on connect"
    );
    let refused = c.invoke("JoinGroup", json!(["vkey-8"])).await;
    assert_eq!(
        refused["error"],
        "Failed to invoke 'JoinGroup' because user is unauthorized"
    );
    assert_eq!(members(&app, "spend", "vkey-8").await, 0);
    let resp = publish_as(
        &app,
        Some(ACCESS),
        "/api/v1/hubs/spend/groups/vkey-8",
        json!({"target": "SpendUpdate", "arguments": [{"x": 8}]}),
    )
    .await;
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["localConnections"], 0);
    publish_as(
        &app,
        Some(ACCESS),
        "/api/v1/hubs/spend/groups/vkey-7",
        json!({"target": "SpendUpdate", "arguments": [{"x": 7}]}),
    )
    .await;
    assert_eq!(
        c.next_invocation().await["arguments"][0]["x"],
        7,
        "key 8's update never reached key 7"
    );
}

#[tokio::test]
async fn the_admin_hub_needs_the_master_key() {
    let app = secure_app().await;
    assert_eq!(
        negotiate_status(&app, "/hubs/admin-notifications", None).await,
        401
    );
    assert_eq!(
        negotiate_status(&app, "/hubs/admin-notifications", Some(&vkey_token(7))).await,
        401
    );
    assert_eq!(
        negotiate_status(&app, "/hubs/admin-notifications", Some("wrong-master")).await,
        401
    );
    assert_eq!(
        upgrade_status(&app, "/hubs/admin-notifications?access_token=wrong-master").await,
        401
    );
    assert_eq!(members(&app, "admin-notifications", "admin").await, 0);
    let mut admin = connect_with(&app, "/hubs/admin-notifications", MASTER).await;
    assert_eq!(members(&app, "admin-notifications", "admin").await, 1);
    let refused = admin.invoke("JoinGroup", json!(["vkey-7"])).await;
    assert!(
        refused["error"].as_str().unwrap().contains("unauthorized"),
        "admin hub joins only admin groups"
    );
}

#[tokio::test]
async fn a_client_cannot_invoke_server_side_send_methods() {
    let app = secure_app().await;
    let mut attacker = connect_with(&app, "/hubs/spend", &vkey_token(7)).await;
    let mut victim = connect_with(&app, "/hubs/spend", &vkey_token(8)).await;
    for method in [
        "SendSpendUpdate",
        "SendBudgetAlert",
        "BroadcastDeliverySucceeded",
        "Publish",
    ] {
        let r = attacker.invoke(method, json!([8, {"evil": true}])).await;
        assert_eq!(r["error"], format!("Unknown hub method '{method}'"));
    }
    publish_as(
        &app,
        Some(ACCESS),
        "/api/v1/hubs/spend/groups/vkey-8",
        json!({"target": "Marker", "arguments": []}),
    )
    .await;
    assert_eq!(
        victim.next_invocation().await["target"],
        "Marker",
        "nothing the attacker sent reached key 8"
    );
}

#[tokio::test]
async fn a_forged_or_expired_connection_token_is_refused() {
    let app = secure_app().await;
    let good = vkey_token(7);
    let binding = TokenBinding::new(
        "spend",
        &Identity {
            user: Some(UserId::parse("user-7").unwrap()),
            virtual_key: Some("7".into()),
            groups: vec![],
        },
    );
    let forged = ConnectionTokens::derive(&[b"another cluster"]).issue(
        &hubcast::ids::ConnectionId::random(),
        Duration::from_secs(60),
        false,
        binding,
    );
    assert_eq!(
        upgrade_status(
            &app,
            &format!("/hubs/spend?id={forged}&access_token={good}")
        )
        .await,
        404
    );
    let ours = ConnectionTokens::derive(&[
        ACCESS.as_bytes(),
        ROTATED.as_bytes(),
        TOKEN_KEY.as_bytes(),
        MASTER.as_bytes(),
    ]);
    let expired = ours.issue(
        &hubcast::ids::ConnectionId::random(),
        Duration::ZERO,
        false,
        binding,
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(
        upgrade_status(
            &app,
            &format!("/hubs/spend?id={expired}&access_token={good}")
        )
        .await,
        404
    );
    let valid = ours.issue(
        &hubcast::ids::ConnectionId::random(),
        Duration::from_secs(60),
        false,
        binding,
    );
    assert_eq!(
        upgrade_status(&app, &format!("/hubs/spend?id={valid}&access_token={good}")).await,
        101,
        "a token signed with the cluster's keys is accepted by any node"
    );
}

#[tokio::test]
async fn publishing_needs_a_valid_key_or_a_jwt_for_the_exact_url() {
    let app = secure_app().await;
    let mut c = connect_with(&app, "/hubs/spend", &vkey_token(7)).await;
    let path = "/api/v1/hubs/spend/groups/vkey-7";
    let body = json!({"target": "Nope", "arguments": []});
    error_of(publish_as(&app, None, path, body.clone()).await, 401).await;
    error_of(
        publish_as(&app, Some("wrong"), path, body.clone()).await,
        401,
    )
    .await;
    let url = app.url(path);
    let other_url = app.url("/api/v1/hubs/spend/groups/vkey-8");
    let wrong_aud = sign_jwt(
        &json!({"aud": other_url, "exp": now() + 60}),
        ACCESS.as_bytes(),
    );
    error_of(
        publish_as(&app, Some(&wrong_aud), path, body.clone()).await,
        401,
    )
    .await;
    let expired = sign_jwt(&json!({"aud": url, "exp": now() - 3600}), ACCESS.as_bytes());
    error_of(
        publish_as(&app, Some(&expired), path, body.clone()).await,
        401,
    )
    .await;
    let no_exp = sign_jwt(&json!({"aud": url}), ACCESS.as_bytes());
    error_of(publish_as(&app, Some(&no_exp), path, body).await, 401).await;
    // Reads need the key too.
    assert_eq!(
        reqwest::get(app.url("/api/v1/hubs/spend/groups/vkey-7"))
            .await
            .unwrap()
            .status(),
        401
    );

    let jwt = sign_jwt(&json!({"aud": url, "exp": now() + 60}), ROTATED.as_bytes());
    assert_eq!(
        publish_as(
            &app,
            Some(&jwt),
            path,
            json!({"target": "ViaJwt", "arguments": []})
        )
        .await
        .status(),
        202
    );
    assert_eq!(
        publish_as(
            &app,
            Some(ROTATED),
            path,
            json!({"target": "ViaRotatedKey", "arguments": []})
        )
        .await
        .status(),
        202
    );
    assert_eq!(
        c.next_invocation().await["target"],
        "ViaJwt",
        "no refused publish was delivered"
    );
    assert_eq!(c.next_invocation().await["target"], "ViaRotatedKey");
}

#[tokio::test]
async fn a_connection_in_the_most_groups_allowed_cannot_join_another() {
    let mut config = secure_config();
    config.limits.max_groups_per_connection = 3;
    let app = TestApp::spawn_with(config).await;
    let t = token(json!({"vkey": 1, "groups": ["g-*"], "exp": now() + 300}));
    let mut c = connect_with(&app, "/hubs/tasks", &t).await;
    for g in ["g-1", "g-2", "g-3"] {
        c.call("JoinGroup", json!([g])).await;
    }
    let refused = c.invoke("JoinGroup", json!(["g-4"])).await;
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("already in 3 groups"),
        "{refused}"
    );
    assert_eq!(members(&app, "tasks", "g-4").await, 0);
}

#[tokio::test]
async fn invocation_and_publish_rate_limits_refuse_the_excess() {
    let mut config = secure_config();
    config.limits.invocations_per_second = 2;
    config.limits.publishes_per_key_per_second = 3;
    let app = TestApp::spawn_with(config).await;
    let t = token(json!({"vkey": 1, "groups": ["r-*"], "exp": now() + 300}));
    let mut c = connect_with(&app, "/hubs/tasks", &t).await;
    // A burst of twice the rate passes, the next call is refused and changes nothing.
    for i in 0..4 {
        c.call("JoinGroup", json!([format!("r-{i}")])).await;
    }
    let refused = c.invoke("JoinGroup", json!(["r-9"])).await;
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("Rate limit exceeded"),
        "{refused}"
    );
    assert_eq!(members(&app, "tasks", "r-9").await, 0);

    let path = "/api/v1/hubs/tasks/groups/r-0";
    for i in 0..3 {
        assert_eq!(
            publish_as(
                &app,
                Some(ACCESS),
                path,
                json!({"target": "P", "arguments": [i]})
            )
            .await
            .status(),
            202
        );
    }
    let limited = publish_as(
        &app,
        Some(ACCESS),
        path,
        json!({"target": "Excess", "arguments": []}),
    )
    .await;
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().get("retry-after").is_some());
    for i in 0..3 {
        assert_eq!(c.next_invocation().await["arguments"][0], i);
    }
    // The limit is per key: the rotated key still has its budget.
    assert_eq!(
        publish_as(
            &app,
            Some(ROTATED),
            path,
            json!({"target": "Other", "arguments": []})
        )
        .await
        .status(),
        202
    );
    assert_eq!(
        c.next_invocation().await["target"],
        "Other",
        "the refused publish was not delivered"
    );
}

#[tokio::test]
async fn per_user_and_handshake_limits_refuse_new_connections() {
    let mut config = secure_config();
    config.limits.max_connections_per_user = 1;
    config.limits.max_concurrent_handshakes = 1;
    let app = TestApp::spawn_with(config).await;
    let t = vkey_token(5);
    let _first = connect_with(&app, "/hubs/spend", &t).await;
    assert_eq!(
        upgrade_status(&app, &format!("/hubs/spend?access_token={t}")).await,
        429
    );
    assert_eq!(app.node.registry().connection_count(), 1);
    // A socket that never completes its handshake holds the only handshake slot.
    let _stalled =
        Client::open(&app.ws_url(&format!("/hubs/spend?access_token={}", vkey_token(6)))).await;
    assert_eq!(
        upgrade_status(&app, &format!("/hubs/spend?access_token={}", vkey_token(7))).await,
        503
    );
}

#[tokio::test]
async fn browser_origins_must_be_allowed() {
    let app = secure_app().await;
    let http = reqwest::Client::new();
    let neg = app.url("/hubs/spend/negotiate?negotiateVersion=1");
    let evil = http
        .post(&neg)
        .bearer_auth(vkey_token(7))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(evil.status(), 403);
    let good = http
        .post(&neg)
        .bearer_auth(vkey_token(7))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(good.status(), 200);
    assert_eq!(
        good.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(good.headers()["access-control-allow-credentials"], "true");
    let pre = http
        .request(reqwest::Method::OPTIONS, &neg)
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(pre.status(), 204);
    assert!(pre.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .contains("authorization"));

    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = app
        .ws_url(&format!("/hubs/spend?access_token={}", vkey_token(7)))
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("origin", "https://evil.example".parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 403),
        other => panic!("expected 403, got {:?}", other.map(|_| ())),
    }
    assert_eq!(app.node.registry().connection_count(), 0);
}

/// A backend for the connect proxy: `good` is user u1 with key 3 and task groups, `bad`
/// is refused, `slow` answers too late.
pub async fn identity_backend(calls: Arc<AtomicUsize>) -> std::net::SocketAddr {
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/identify",
        post(move |axum::Json(body): axum::Json<Value>| {
            let calls = calls.clone();
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                match body["credential"].as_str() {
                    Some("good") => (
                        axum::http::StatusCode::OK,
                        axum::Json(json!({"user": "u1", "vkey": 3, "groups": ["task-*"]})),
                    ),
                    Some("slow") => {
                        // Far past the proxy timeout: a 503 can only come from the timeout.
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        (
                            axum::http::StatusCode::OK,
                            axum::Json(json!({"user": "late"})),
                        )
                    }
                    _ => (axum::http::StatusCode::UNAUTHORIZED, axum::Json(json!({}))),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

pub fn proxied_config(url: String) -> Config {
    let mut sec = security();
    sec.connect_proxy_url = Some(url);
    let mut config = Config::with_security("127.0.0.1:0".parse().unwrap(), sec).unwrap();
    let spec = HubSpec {
        name: "proxied".into(),
        path: "/hubs/proxied".into(),
        aliases: vec![],
        allow_broadcast: false,
        auto_join: vec!["vkey-{vkey}".into()],
        auth: AuthMode::ConnectProxy,
        schema_check: hubcast::hub::SchemaCheck::Warn,
        allow: vec![],
        methods: vec![],
        history: true,
    };
    config.hubs.push(Hub::new(spec).unwrap());
    config
}

#[tokio::test]
async fn the_connect_proxy_identifies_clients_caches_answers_and_refuses_when_down() {
    let calls = Arc::new(AtomicUsize::new(0));
    let backend = identity_backend(calls.clone()).await;
    let app = TestApp::spawn_with(proxied_config(format!("http://{backend}/identify"))).await;

    let mut good = connect_with(&app, "/hubs/proxied", "good").await;
    assert_eq!(
        members(&app, "proxied", "vkey-3").await,
        1,
        "the backend's virtual key drives auto-join"
    );
    good.call("JoinGroup", json!(["task-5"])).await;
    let refused = good.invoke("JoinGroup", json!(["other"])).await;
    assert!(refused["error"].as_str().unwrap().contains("unauthorized"));
    let r = reqwest::Client::new()
        .post(app.url("/api/v1/hubs/proxied/users/u1"))
        .bearer_auth(ACCESS)
        .json(&json!({"target": "ForU1", "arguments": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(
        good.next_invocation().await["target"],
        "ForU1",
        "the backend's user id is the connection's user"
    );

    let before = calls.load(Ordering::SeqCst);
    let _again = connect_with(&app, "/hubs/proxied", "good").await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        before,
        "a cached answer is reused"
    );

    assert_eq!(
        upgrade_status(&app, "/hubs/proxied?access_token=bad").await,
        401
    );
    assert_eq!(
        upgrade_status(&app, "/hubs/proxied?access_token=slow").await,
        503,
        "a slow backend refuses, never lets in"
    );
    assert_eq!(app.node.registry().connection_count(), 2);

    // A backend that is down refuses too. The port stays bound (not listening) for the
    // rest of the test, so connecting is refused and nothing else can take it meanwhile.
    let held = tokio::net::TcpSocket::new_v4().unwrap();
    held.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let closed = held.local_addr().unwrap();
    let down = TestApp::spawn_with(proxied_config(format!("http://{closed}/identify"))).await;
    assert_eq!(
        upgrade_status(&down, "/hubs/proxied?access_token=good").await,
        503
    );
    assert_eq!(down.node.registry().connection_count(), 0);
    drop(held);
}
