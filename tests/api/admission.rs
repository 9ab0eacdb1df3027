//! Hostile clients and anonymous traffic cannot exhaust a node: stalled upgrades, floods
//! of connect-proxy credentials, replayed connection tokens, unusable user ids, and the
//! smaller leaks around credentials. Each test fails without the limit it covers.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::SinkExt as _;
use hubcast::config::Config;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Semaphore};
use tokio_tungstenite::tungstenite::{self, Message};

use crate::helpers::{eventually, unique_prefix, use_redis, Client, RedisServer, TestApp, WAIT};
use crate::security::{
    error_of, now, proxied_config, secure_config, token, upgrade_status, vkey_token, ACCESS, MASTER,
};

type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Opens a WebSocket from `source` (any 127.x address reaches the node on Linux) and
/// never sends the SignalR handshake; `Err(status)` when the upgrade is refused.
async fn stalled_from(source: Ipv4Addr, app: &TestApp, path: &str) -> Result<Socket, u16> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0)).unwrap();
    let stream = socket.connect(app.addr).await.unwrap();
    match tokio_tungstenite::client_async(app.ws_url(path), stream).await {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("unexpected error {e}"),
    }
}

const LOCAL: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// Connects and completes the handshake: the well-behaved client.
async fn well_behaved(app: &TestApp, credential: &str) -> u16 {
    use futures_util::StreamExt as _;
    let url = app.ws_url(&format!("/hubs/spend?access_token={credential}"));
    let mut ws = match tokio_tungstenite::connect_async(url).await {
        Ok((ws, _)) => ws,
        Err(tungstenite::Error::Http(resp)) => return resp.status().as_u16(),
        Err(e) => panic!("unexpected error {e}"),
    };
    ws.send(Message::text("{\"protocol\":\"json\",\"version\":1}\u{1e}"))
        .await
        .unwrap();
    let reply = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("a handshake reply")
        .expect("the socket stays open")
        .unwrap();
    assert_eq!(reply.into_text().unwrap().as_str(), "{}\u{1e}");
    101
}

#[tokio::test]
async fn stalled_upgrades_of_a_few_credentials_never_refuse_a_well_behaved_client() {
    let mut config = secure_config();
    config.limits.max_concurrent_handshakes = 40;
    config
        .security
        .admission
        .max_pending_handshakes_per_credential = 2;
    let app = TestApp::spawn_with(config).await;
    let no_sub = token(json!({"vkey": 1, "exp": now() + 300}));
    let users: Vec<String> = (0..10).map(|u| vkey_token(100 + u)).collect();
    let forged = hubcast::auth::sign_jwt(&json!({"vkey": 1, "exp": now() + 300}), b"not-the-key");
    // One token without `sub`, the master key, ten users, and forged tokens: far more
    // upgrades than the node has handshake slots, none of which ever handshakes.
    let mut stalled = Vec::new();
    let mut refused = Vec::new();
    for _ in 0..60 {
        for (path, cred) in [
            ("/hubs/spend", no_sub.as_str()),
            ("/hubs/admin-notifications", MASTER),
            ("/hubs/spend", forged.as_str()),
        ] {
            match stalled_from(LOCAL, &app, &format!("{path}?access_token={cred}")).await {
                Ok(ws) => stalled.push(ws),
                Err(status) => refused.push(status),
            }
        }
    }
    for user in &users {
        for _ in 0..10 {
            match stalled_from(LOCAL, &app, &format!("/hubs/spend?access_token={user}")).await {
                Ok(ws) => stalled.push(ws),
                Err(status) => refused.push(status),
            }
        }
    }
    assert_eq!(
        stalled.len(),
        2 + 2 + 10 * 2,
        "each credential holds at most its share of the slots"
    );
    assert!(
        refused.iter().all(|s| *s == 401 || *s == 503),
        "{refused:?}"
    );
    for vkey in 0..10 {
        assert_eq!(
            well_behaved(&app, &vkey_token(vkey)).await,
            101,
            "client {vkey} was refused while the stalled upgrades held their slots"
        );
    }
}

#[tokio::test]
async fn stalled_upgrades_from_one_address_never_refuse_another_address() {
    let mut config = secure_config();
    config.limits.max_concurrent_handshakes = 20;
    config.security.admission.max_pending_handshakes_per_source = 5;
    let app = TestApp::spawn_with(config).await;
    let attacker = Ipv4Addr::new(127, 0, 0, 2);
    let mut stalled = Vec::new();
    let mut refused = 0;
    // A distinct user each time, so only the per-source limit applies.
    for n in 0..50 {
        let path = format!("/hubs/spend?access_token={}", vkey_token(1000 + n));
        match stalled_from(attacker, &app, &path).await {
            Ok(ws) => stalled.push(ws),
            Err(503) => refused += 1,
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert_eq!((stalled.len(), refused), (5, 45));
    for vkey in 0..10 {
        assert_eq!(well_behaved(&app, &vkey_token(vkey)).await, 101);
    }
    // A slot is given back when its handshake ends: the address may open one again.
    drop(stalled.pop());
    let mut reopened = None;
    let deadline = tokio::time::Instant::now() + WAIT;
    while reopened.is_none() {
        let path = format!("/hubs/spend?access_token={}", vkey_token(2000));
        match stalled_from(attacker, &app, &path).await {
            Ok(ws) => reopened = Some(ws),
            Err(503) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the slot never came back"
                );
                tokio::task::yield_now().await;
            }
            Err(other) => panic!("unexpected {other}"),
        }
    }
}

/// Backend state: calls made, calls in flight at most, and the gate held calls wait on.
struct Backend {
    calls: AtomicUsize,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
    release: Semaphore,
}

impl Default for Backend {
    fn default() -> Self {
        Self {
            calls: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            most_in_flight: AtomicUsize::new(0),
            release: Semaphore::new(0),
        }
    }
}

/// A connect-proxy backend: `good-N` is user uN; `hold-…` waits until released and is
/// refused; anything else is refused at once.
async fn counting_backend(state: Arc<Backend>) -> SocketAddr {
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/identify",
        post(move |axum::Json(body): axum::Json<Value>| {
            let state = state.clone();
            async move {
                state.calls.fetch_add(1, Ordering::SeqCst);
                let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                state.most_in_flight.fetch_max(now, Ordering::SeqCst);
                let credential = body["credential"].as_str().unwrap_or("").to_owned();
                if credential.starts_with("hold-") {
                    state.release.acquire().await.unwrap().forget();
                }
                state.in_flight.fetch_sub(1, Ordering::SeqCst);
                match credential.strip_prefix("good-") {
                    Some(n) => (
                        axum::http::StatusCode::OK,
                        axum::Json(json!({"user": format!("u{n}"), "vkey": n})),
                    ),
                    None => (axum::http::StatusCode::UNAUTHORIZED, axum::Json(json!({}))),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

async fn proxied_app(backend: SocketAddr, tune: impl FnOnce(&mut Config)) -> TestApp {
    let mut config = proxied_config(format!("http://{backend}/identify"));
    config.security.connect_proxy_timeout = Duration::from_secs(3600);
    tune(&mut config);
    TestApp::spawn_with(config).await
}

async fn negotiate(app: &TestApp, hub_path: &str, credential: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(app.url(&format!("{hub_path}/negotiate?negotiateVersion=1")))
        .bearer_auth(credential)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_flood_of_distinct_credentials_reaches_the_backend_at_most_the_cap_at_once() {
    let backend = Arc::new(Backend::default());
    let addr = counting_backend(backend.clone()).await;
    let app = proxied_app(addr, |c| c.security.connect_proxy_max_concurrent = 4).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    for n in 0..60 {
        let (url, tx) = (
            app.url("/hubs/proxied/negotiate?negotiateVersion=1"),
            tx.clone(),
        );
        tokio::spawn(async move {
            let status = reqwest::Client::new()
                .post(url)
                .bearer_auth(format!("hold-{n}"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16();
            let _ = tx.send(status);
        });
    }
    // Everything over the cap is refused at once, while the first four are still held.
    let mut early = Vec::new();
    while early.len() < 56 {
        let status = tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("the refusals over the cap came at once")
            .unwrap();
        early.push(status);
    }
    assert!(early.iter().all(|s| *s == 503), "{early:?}");
    eventually("the four calls under the cap reach the backend", || {
        backend.calls.load(Ordering::SeqCst) == 4
    })
    .await;
    backend.release.add_permits(4);
    for _ in 0..4 {
        assert_eq!(
            tokio::time::timeout(WAIT, rx.recv()).await.unwrap(),
            Some(401)
        );
    }
    assert_eq!(backend.calls.load(Ordering::SeqCst), 4);
    assert_eq!(backend.most_in_flight.load(Ordering::SeqCst), 4);
    assert_eq!(
        negotiate(&app, "/hubs/proxied", "good-1").await.status(),
        200,
        "once the flood is answered, a client gets in"
    );
}

#[tokio::test]
async fn a_credential_over_the_length_cap_is_refused_without_asking_the_backend() {
    let backend = Arc::new(Backend::default());
    let addr = counting_backend(backend.clone()).await;
    let app = proxied_app(addr, |_| {}).await;
    let long = format!("good-{}", "7".repeat(5000));
    let text = error_of(negotiate(&app, "/hubs/proxied", &long).await, 401).await;
    assert!(text.contains("longer"), "{text}");
    assert_eq!(
        upgrade_status(&app, &format!("/hubs/proxied?access_token={long}")).await,
        401
    );
    assert_eq!(backend.calls.load(Ordering::SeqCst), 0);
    assert_eq!(
        negotiate(&app, "/hubs/proxied", "good-7").await.status(),
        200
    );
}

#[tokio::test]
async fn the_proxy_cache_keeps_its_newest_entries_within_its_bound() {
    let backend = Arc::new(Backend::default());
    let addr = counting_backend(backend.clone()).await;
    let app = proxied_app(addr, |c| c.security.connect_proxy_cache_entries = 8).await;
    for n in 0..30 {
        assert_eq!(
            negotiate(&app, "/hubs/proxied", &format!("good-{n}"))
                .await
                .status(),
            200
        );
    }
    assert_eq!(backend.calls.load(Ordering::SeqCst), 30);
    negotiate(&app, "/hubs/proxied", "good-29").await;
    assert_eq!(
        backend.calls.load(Ordering::SeqCst),
        30,
        "the newest answer is cached"
    );
    negotiate(&app, "/hubs/proxied", "good-0").await;
    assert_eq!(
        backend.calls.load(Ordering::SeqCst),
        31,
        "the oldest answer was dropped to keep the bound"
    );
}

#[tokio::test]
async fn refusals_are_cached_for_less_time_than_answers() {
    let backend = Arc::new(Backend::default());
    let addr = counting_backend(backend.clone()).await;
    let app = proxied_app(addr, |c| {
        c.security.connect_proxy_refusal_cache = Duration::from_millis(200);
    })
    .await;
    assert_eq!(negotiate(&app, "/hubs/proxied", "bad").await.status(), 401);
    assert_eq!(
        negotiate(&app, "/hubs/proxied", "good-1").await.status(),
        200
    );
    assert_eq!(backend.calls.load(Ordering::SeqCst), 2);
    // Asked again until the refusal's short lifetime is over; the answer stays cached.
    let deadline = tokio::time::Instant::now() + WAIT;
    while backend.calls.load(Ordering::SeqCst) == 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the refusal was cached for too long"
        );
        assert_eq!(negotiate(&app, "/hubs/proxied", "bad").await.status(), 401);
        assert_eq!(
            negotiate(&app, "/hubs/proxied", "good-1").await.status(),
            200
        );
    }
    assert_eq!(
        backend.calls.load(Ordering::SeqCst),
        3,
        "only the refusal was asked again"
    );
}

/// Negotiates on `hub_path` with `credential`; the connection token.
async fn connection_token(app: &TestApp, hub_path: &str, credential: &str, version: u8) -> Value {
    let resp = reqwest::Client::new()
        .post(app.url(&format!("{hub_path}/negotiate?negotiateVersion={version}")))
        .bearer_auth(credential)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

#[tokio::test]
async fn a_connection_token_opens_one_connection_only() {
    let app = crate::security::secure_app().await;
    let cred = vkey_token(7);
    for version in [0, 1] {
        let neg = connection_token(&app, "/hubs/spend", &cred, version).await;
        // Version 0 has no separate token: the public connection id is the token.
        let field = if version == 0 {
            "connectionId"
        } else {
            "connectionToken"
        };
        let id = neg[field].as_str().unwrap().to_owned();
        let url = app.ws_url(&format!("/hubs/spend?id={id}&access_token={cred}"));
        let mut first = Client::open(&url).await;
        first.handshake().await;
        assert_eq!(
            upgrade_status(&app, &format!("/hubs/spend?id={id}&access_token={cred}")).await,
            409,
            "in use"
        );
        first.ws.close(None).await.unwrap();
        eventually("the first connection is gone", || {
            app.node.registry().connection_count() == 0
        })
        .await;
        // On Redis the cluster-wide record goes right after the local one: until then
        // the id is still in use (409).
        let url = format!("/hubs/spend?id={id}&access_token={cred}");
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut status = upgrade_status(&app, &url).await;
        while status == 409 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            status = upgrade_status(&app, &url).await;
        }
        assert_eq!(
            status, 404,
            "a used token is refused after its connection closed (version {version})"
        );
    }
}

#[tokio::test]
async fn a_connection_token_is_refused_on_another_hub_or_for_another_identity() {
    let app = crate::security::secure_app().await;
    let cred = vkey_token(7);
    let neg = connection_token(&app, "/hubs/spend", &cred, 1).await;
    let id = neg["connectionToken"].as_str().unwrap();
    for (path, other) in [
        ("/hubs/spend", vkey_token(8)),
        ("/hubs/notifications", cred.clone()),
        ("/hubs/admin-notifications", MASTER.to_owned()),
    ] {
        assert_eq!(
            upgrade_status(&app, &format!("{path}?id={id}&access_token={other}")).await,
            404,
            "{path}"
        );
    }
    assert_eq!(app.node.registry().connection_count(), 0);
    assert_eq!(
        upgrade_status(&app, &format!("/hubs/spend?id={id}&access_token={cred}")).await,
        101,
        "the refusals did not use the token up"
    );
}

#[tokio::test]
async fn a_used_connection_token_is_refused_by_every_node_of_a_redis_cluster() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix();
    let node = |_: ()| {
        let mut config = secure_config();
        use_redis(&mut config, &redis, &prefix);
        config
    };
    let a = TestApp::start(node(()), None).await;
    let b = TestApp::start(node(()), None).await;
    let cred = vkey_token(7);
    let neg = connection_token(&a, "/hubs/spend", &cred, 1).await;
    let id = neg["connectionToken"].as_str().unwrap().to_owned();
    let mut c = Client::open(&a.ws_url(&format!("/hubs/spend?id={id}&access_token={cred}"))).await;
    c.handshake().await;
    c.ws.close(None).await.unwrap();
    eventually("closed on a", || a.node.registry().connection_count() == 0).await;
    assert_eq!(
        upgrade_status(&b, &format!("/hubs/spend?id={id}&access_token={cred}")).await,
        404,
        "replayed on another node after its connection closed"
    );
    // And the other way round: first used on b, then replayed on a.
    let neg = connection_token(&a, "/hubs/spend", &cred, 1).await;
    let id = neg["connectionToken"].as_str().unwrap().to_owned();
    assert_eq!(
        upgrade_status(&b, &format!("/hubs/spend?id={id}&access_token={cred}")).await,
        101
    );
    eventually("closed on b", || b.node.registry().connection_count() == 0).await;
    assert_eq!(
        upgrade_status(&a, &format!("/hubs/spend?id={id}&access_token={cred}")).await,
        404
    );
}

#[tokio::test]
async fn a_token_with_an_unusable_sub_is_refused() {
    let app = crate::security::secure_app().await;
    for sub in [json!("u".repeat(300)), json!("bad\u{1}user"), json!(12)] {
        let t = token(json!({"sub": sub, "vkey": 7, "exp": now() + 300}));
        let resp = reqwest::Client::new()
            .post(app.url("/hubs/spend/negotiate?negotiateVersion=1"))
            .bearer_auth(&t)
            .send()
            .await
            .unwrap();
        let text = error_of(resp, 401).await;
        assert!(text.contains("sub"), "{text}");
        assert_eq!(
            upgrade_status(&app, &format!("/hubs/spend?access_token={t}")).await,
            401
        );
    }
    assert_eq!(app.node.registry().connection_count(), 0);
}

#[tokio::test]
async fn the_publish_api_names_the_credential_it_reads_and_ignores_forwarded_hosts() {
    let app = crate::security::secure_app().await;
    let path = "/api/v1/hubs/spend/groups/vkey-7";
    let body = json!({"target": "T", "arguments": []});
    let resp = reqwest::Client::new()
        .post(app.url(&format!("{path}?access_token={ACCESS}")))
        .json(&body)
        .send()
        .await
        .unwrap();
    let text = error_of(resp, 401).await;
    assert!(
        text.contains("Authorization: Bearer") && !text.contains("access_token"),
        "{text}"
    );
    // A token issued for another host is not made valid by naming that host.
    let jwt = hubcast::auth::sign_jwt(
        &json!({"aud": format!("http://evil.example{path}"), "exp": now() + 60}),
        ACCESS.as_bytes(),
    );
    let resp = reqwest::Client::new()
        .post(app.url(path))
        .bearer_auth(jwt)
        .header("x-forwarded-host", "evil.example")
        .json(&body)
        .send()
        .await
        .unwrap();
    error_of(resp, 401).await;
}

#[tokio::test]
async fn development_nodes_accept_each_others_connection_tokens() {
    let a = TestApp::spawn_in_memory(crate::helpers::test_config()).await;
    let b = TestApp::spawn_in_memory(crate::helpers::test_config()).await;
    let neg = crate::helpers::negotiate(&a, "/hubs/spend").await;
    let token = neg["connectionToken"].as_str().unwrap();
    let mut c = Client::open(&b.ws_url(&format!("/hubs/spend?id={token}"))).await;
    c.handshake().await;
    c.ws.send(Message::Close(None)).await.unwrap();
}
