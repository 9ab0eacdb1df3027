//! The versioned Azure SignalR REST routes (`/api/hubs/{hub}/…`): status codes, `excluded`
//! honoured, `reason` passed on, existence checks, and `:generateToken`'s token accepted.

use serde_json::{json, Value};

use crate::helpers::{eventually, negotiate, test_config, Client, TestApp};
use crate::security::{connect_with, secure_config, ACCESS};

const V: &str = "api-version=2024-12-01";

/// A client on `hub_path` and its connection id.
async fn client(app: &TestApp, hub_path: &str) -> (Client, String) {
    let neg = negotiate(app, hub_path).await;
    let id = neg["connectionId"].as_str().unwrap().to_owned();
    let token = neg["connectionToken"].as_str().unwrap();
    let mut c = Client::open(&app.ws_url(&format!("{hub_path}?id={token}"))).await;
    c.handshake().await;
    (c, id)
}

async fn join(app: &TestApp, hub: &str, group: &str, id: &str) {
    let url = app.url(&format!(
        "/api/hubs/{hub}/groups/{group}/connections/{id}?{V}"
    ));
    let r = reqwest::Client::new().put(url).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

async fn call(method: reqwest::Method, url: String, body: Option<Value>) -> reqwest::Response {
    let mut req = reqwest::Client::new().request(method, url);
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.unwrap()
}

fn chat_config() -> hubcast::config::Config {
    let mut config = test_config();
    config.hubs.push(
        hubcast::hub::Hub::new(hubcast::hub::HubSpec {
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
        })
        .unwrap(),
    );
    config
}

#[tokio::test]
async fn a_group_send_skips_the_excluded_connections_and_reaches_the_rest() {
    let app = TestApp::spawn().await;
    let (mut a, id_a) = client(&app, "/hubs/tasks").await;
    let (mut b, id_b) = client(&app, "/hubs/tasks").await;
    join(&app, "tasks", "ex", &id_a).await;
    join(&app, "tasks", "ex", &id_b).await;
    let send = |q: String, target: &str| {
        call(
            reqwest::Method::POST,
            app.url(&format!("/api/hubs/tasks/groups/ex/:send?{q}")),
            Some(json!({"target": target, "arguments": [1]})),
        )
    };
    let r = send(
        format!("{V}&excluded={id_a}&excluded=not-a-member"),
        "NotForA",
    )
    .await;
    assert_eq!(r.status(), 202);
    assert_eq!(b.next_invocation().await["target"], "NotForA");
    assert_eq!(send(V.to_owned(), "ForBoth").await.status(), 202);
    // A's first message is the second send: the first never reached it.
    assert_eq!(a.next_invocation().await["target"], "ForBoth");
    assert_eq!(b.next_invocation().await["target"], "ForBoth");

    // The v1 group route takes `excluded` too.
    let r = call(
        reqwest::Method::POST,
        app.url(&format!("/api/v1/hubs/tasks/groups/ex?excluded={id_b}")),
        Some(json!({"target": "V1NotForB", "arguments": []})),
    )
    .await;
    assert_eq!(r.status(), 202);
    assert_eq!(a.next_invocation().await["target"], "V1NotForB");
    assert_eq!(send(V.to_owned(), "Last").await.status(), 202);
    assert_eq!(b.next_invocation().await["target"], "Last");
    assert_eq!(a.next_invocation().await["target"], "Last");
}

#[tokio::test]
async fn a_hub_send_skips_the_excluded_connections() {
    let app = TestApp::spawn_with(chat_config()).await;
    let (mut a, id_a) = client(&app, "/hubs/chat").await;
    let (mut b, _) = client(&app, "/hubs/chat").await;
    let url = |q: &str| app.url(&format!("/api/hubs/chat/:send?{V}{q}"));
    let body = |t: &str| Some(json!({"target": t, "arguments": []}));
    let r = call(
        reqwest::Method::POST,
        url(&format!("&excluded={id_a}")),
        body("NotForA"),
    )
    .await;
    assert_eq!(r.status(), 202);
    assert_eq!(b.next_invocation().await["target"], "NotForA");
    assert_eq!(
        call(reqwest::Method::POST, url(""), body("All"))
            .await
            .status(),
        202
    );
    assert_eq!(a.next_invocation().await["target"], "All");
    assert_eq!(b.next_invocation().await["target"], "All");
}

#[tokio::test]
async fn user_and_connection_sends_answer_202_and_arrive() {
    let app = TestApp::spawn().await;
    let (mut a, id_a) = client(&app, "/hubs/tasks").await;
    let r = call(
        reqwest::Method::POST,
        app.url(&format!("/api/hubs/tasks/connections/{id_a}/:send?{V}")),
        Some(json!({"target": "Direct", "arguments": ["x"]})),
    )
    .await;
    assert_eq!(r.status(), 202);
    assert_eq!(
        a.next_invocation().await,
        json!({"type": 1, "target": "Direct", "arguments": ["x"]})
    );
    let r = call(
        reqwest::Method::POST,
        app.url(&format!("/api/hubs/tasks/users/nobody/:send?{V}")),
        Some(json!({"target": "ToUser", "arguments": []})),
    )
    .await;
    assert_eq!(r.status(), 202);
}

#[tokio::test]
async fn existence_checks_answer_404_for_an_empty_group_and_unknown_connections() {
    let app = TestApp::spawn().await;
    let head = |path: String| call(reqwest::Method::HEAD, app.url(&path), None);
    assert_eq!(
        head(format!("/api/hubs/tasks/groups/empty?{V}"))
            .await
            .status(),
        404
    );
    assert_eq!(
        call(
            reqwest::Method::GET,
            app.url("/api/v1/hubs/tasks/groups/empty"),
            None
        )
        .await
        .status(),
        404
    );
    assert_eq!(
        head("/api/v1/hubs/tasks/groups/empty".into())
            .await
            .status(),
        404
    );
    let (_a, id_a) = client(&app, "/hubs/tasks").await;
    assert_eq!(
        head(format!("/api/hubs/tasks/connections/{id_a}?{V}"))
            .await
            .status(),
        200
    );
    assert_eq!(
        head(format!("/api/hubs/tasks/connections/nope?{V}"))
            .await
            .status(),
        404
    );
    join(&app, "tasks", "full", &id_a).await;
    assert_eq!(
        head(format!("/api/hubs/tasks/groups/full?{V}"))
            .await
            .status(),
        200
    );
    assert_eq!(app.group_members("tasks", "full").await, 1);
    assert_eq!(
        head(format!("/api/hubs/tasks/users/nobody?{V}"))
            .await
            .status(),
        404
    );
    assert_eq!(
        head("/api/v1/hubs/tasks/users/nobody".into())
            .await
            .status(),
        404
    );
}

#[tokio::test]
async fn close_connections_closes_the_group_but_the_excluded_with_the_reason() {
    let app = TestApp::spawn().await;
    let (mut a, id_a) = client(&app, "/hubs/tasks").await;
    let (mut b, id_b) = client(&app, "/hubs/tasks").await;
    let (mut c, _) = client(&app, "/hubs/tasks").await;
    join(&app, "tasks", "cl", &id_a).await;
    join(&app, "tasks", "cl", &id_b).await;
    let r = call(
        reqwest::Method::POST,
        app.url(&format!(
            "/api/hubs/tasks/groups/cl/:closeConnections?{V}&excluded={id_a}&reason=maintenance"
        )),
        None,
    )
    .await;
    assert_eq!(r.status(), 204);
    assert_eq!(
        b.recv_non_ping().await,
        Some(json!({"type": 7, "error": "maintenance", "allowReconnect": true}))
    );
    let node = app.node.clone();
    eventually("b left", || node.registry().connection_count() == 2).await;
    // The excluded member and the non-member are still connected and served.
    let r = call(
        reqwest::Method::POST,
        app.url(&format!("/api/hubs/tasks/connections/{id_a}/:send?{V}")),
        Some(json!({"target": "StillHere", "arguments": []})),
    )
    .await;
    assert_eq!(r.status(), 202);
    assert_eq!(a.next_invocation().await["target"], "StillHere");
    c.send(json!({"type": 6})).await;
    assert_eq!(app.node.registry().connection_count(), 2);
}

#[tokio::test]
async fn close_connections_of_a_hub_spares_the_excluded() {
    let app = TestApp::spawn_with(chat_config()).await;
    let (mut a, id_a) = client(&app, "/hubs/chat").await;
    let (mut b, _) = client(&app, "/hubs/chat").await;
    let r = call(
        reqwest::Method::POST,
        app.url(&format!(
            "/api/hubs/chat/:closeConnections?{V}&excluded={id_a}"
        )),
        None,
    )
    .await;
    assert_eq!(r.status(), 204);
    assert_eq!(
        b.recv_non_ping().await,
        Some(json!({"type": 7, "allowReconnect": true}))
    );
    let r = call(
        reqwest::Method::POST,
        app.url(&format!("/api/hubs/chat/:send?{V}")),
        Some(json!({"target": "Survivor", "arguments": []})),
    )
    .await;
    assert_eq!(r.status(), 202);
    assert_eq!(a.next_invocation().await["target"], "Survivor");
    // A hub without broadcast has no hub-wide channel: refused as a broadcast is.
    let r = call(
        reqwest::Method::POST,
        app.url(&format!("/api/hubs/tasks/:closeConnections?{V}")),
        None,
    )
    .await;
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn closing_one_connection_answers_200_and_passes_the_reason() {
    let app = TestApp::spawn().await;
    let (mut a, id_a) = client(&app, "/hubs/tasks").await;
    let r = call(
        reqwest::Method::DELETE,
        app.url(&format!(
            "/api/hubs/tasks/connections/{id_a}?{V}&reason=bye"
        )),
        None,
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        a.recv_non_ping().await,
        Some(json!({"type": 7, "error": "bye", "allowReconnect": true}))
    );
}

#[tokio::test]
async fn removing_a_connection_from_all_groups_empties_them() {
    let app = TestApp::spawn().await;
    let (_a, id_a) = client(&app, "/hubs/tasks").await;
    join(&app, "tasks", "g1", &id_a).await;
    join(&app, "tasks", "g2", &id_a).await;
    assert_eq!(app.group_members("tasks", "g1").await, 1);
    let r = call(
        reqwest::Method::DELETE,
        app.url(&format!("/api/hubs/tasks/connections/{id_a}/groups?{V}")),
        None,
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(app.group_members("tasks", "g1").await, 0);
    assert_eq!(app.group_members("tasks", "g2").await, 0);
    let unknown = call(
        reqwest::Method::DELETE,
        app.url(&format!("/api/hubs/tasks/connections/nope/groups?{V}")),
        None,
    )
    .await;
    assert_eq!(unknown.status(), 404);
}

#[tokio::test]
async fn an_unknown_api_version_is_refused_in_the_specs_error_shape() {
    let app = TestApp::spawn().await;
    let r = call(
        reqwest::Method::POST,
        app.url("/api/hubs/tasks/groups/g/:send?api-version=1999-01-01"),
        Some(json!({"target": "X", "arguments": []})),
    )
    .await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["x-ms-error-code"], "InvalidApiVersion");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "InvalidApiVersion");
    assert!(
        body["message"].as_str().unwrap().contains("2024-12-01"),
        "{body}"
    );
    for ok in ["api-version=2022-06-01", V, ""] {
        let r = call(
            reqwest::Method::POST,
            app.url(&format!("/api/hubs/tasks/groups/g/:send?{ok}")),
            Some(json!({"target": "X", "arguments": []})),
        )
        .await;
        assert_eq!(r.status(), 202, "{ok}");
    }
}

#[tokio::test]
async fn a_generated_token_opens_a_client_connection_as_its_user() {
    let app = TestApp::spawn_with(secure_config()).await;
    let http = reqwest::Client::new();
    let r = http
        .post(app.url(&format!(
            "/api/hubs/tasks/:generateToken?{V}&userId=u-17&minutesToExpire=5"
        )))
        .bearer_auth(ACCESS)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let token = r.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let claims = hubcast::auth::verify_jwt(
        &token,
        &[crate::security::TOKEN_KEY.as_bytes()],
        true,
        true,
        |a| a == "tasks",
    )
    .unwrap();
    let exp = claims.0["exp"].as_u64().unwrap();
    assert!(exp <= hubcast::auth::now_secs() + 300, "{exp}");
    let mut c = connect_with(&app, "/hubs/tasks", &token).await;
    let head = |user: &str| {
        http.head(app.url(&format!("/api/hubs/tasks/users/{user}?{V}")))
            .bearer_auth(ACCESS)
            .send()
    };
    assert_eq!(head("u-17").await.unwrap().status(), 200);
    assert_eq!(head("u-18").await.unwrap().status(), 404);
    let r = http
        .post(app.url(&format!("/api/hubs/tasks/users/u-17/:send?{V}")))
        .bearer_auth(ACCESS)
        .json(&json!({"target": "Mine", "arguments": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(c.next_invocation().await["target"], "Mine");
    // Without the publisher credential there is no token.
    let r = http
        .post(app.url(&format!("/api/hubs/tasks/:generateToken?{V}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let bad = http
        .post(app.url(&format!(
            "/api/hubs/tasks/:generateToken?{V}&minutesToExpire=0"
        )))
        .bearer_auth(ACCESS)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}

async fn generated_token(app: &TestApp, user: &str) -> String {
    crate::helpers::client_token(&app.url(""), "tasks", user, ACCESS).await
}

#[tokio::test]
async fn a_users_current_connections_join_and_leave_groups() {
    let app = TestApp::spawn_with(secure_config()).await;
    let token = generated_token(&app, "u-5").await;
    let mut c1 = connect_with(&app, "/hubs/tasks", &token).await;
    let mut c2 = connect_with(&app, "/hubs/tasks", &token).await;
    let node = app.node.clone();
    eventually("connected", || node.registry().connection_count() == 2).await;
    let http = reqwest::Client::new();
    let req = |m: reqwest::Method, path: String| {
        http.request(m, app.url(&path)).bearer_auth(ACCESS).send()
    };
    let members = |g: &'static str| {
        let r = req(
            reqwest::Method::GET,
            format!("/api/v1/hubs/tasks/groups/{g}"),
        );
        async move {
            r.await.unwrap().json::<Value>().await.unwrap()["members"]
                .as_u64()
                .unwrap()
        }
    };
    let put = req(
        reqwest::Method::PUT,
        format!("/api/hubs/tasks/users/u-5/groups/ug?{V}"),
    )
    .await;
    assert_eq!(put.unwrap().status(), 200);
    assert_eq!(members("ug").await, 2);
    let v1 = req(
        reqwest::Method::PUT,
        "/api/v1/hubs/tasks/groups/ug2/users/u-5".into(),
    )
    .await;
    assert_eq!(v1.unwrap().status(), 202);
    assert_eq!(members("ug2").await, 2);
    let r = http
        .post(app.url(&format!("/api/hubs/tasks/groups/ug/:send?{V}")))
        .bearer_auth(ACCESS)
        .json(&json!({"target": "ToGroup", "arguments": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(c1.next_invocation().await["target"], "ToGroup");
    assert_eq!(c2.next_invocation().await["target"], "ToGroup");

    let del = req(
        reqwest::Method::DELETE,
        format!("/api/hubs/tasks/users/u-5/groups/ug?{V}"),
    )
    .await;
    assert_eq!(del.unwrap().status(), 204);
    assert_eq!(members("ug").await, 0);
    assert_eq!(members("ug2").await, 2);
    let all = req(
        reqwest::Method::DELETE,
        format!("/api/hubs/tasks/users/u-5/groups?{V}"),
    )
    .await;
    assert_eq!(all.unwrap().status(), 204);
    assert_eq!(members("ug2").await, 0);
    // A user without connections: nothing to change, answered as the spec says.
    let none = req(
        reqwest::Method::DELETE,
        "/api/v1/hubs/tasks/users/nobody/groups".into(),
    )
    .await;
    assert_eq!(none.unwrap().status(), 200);
}
