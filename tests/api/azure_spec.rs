//! Every operation of Azure SignalR's vendored REST specs (v1, 2022-06-01, 2024-12-01)
//! is routed here, or listed in [`NOT_SERVED`] with the reason.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::helpers::TestApp;

/// Operations not served, as (method, path template), with why.
const NOT_SERVED: &[(&str, &str, &str)] = &[
    (
        "HEAD",
        "/api/v1/health",
        "liveness is /healthz, readiness /readyz",
    ),
    (
        "HEAD",
        "/api/health",
        "liveness is /healthz, readiness /readyz",
    ),
    (
        "GET",
        "/api/auth/accessKey",
        "nodes hand out no signing key; :generateToken mints client tokens",
    ),
    (
        "POST",
        "/api/hubs/{hub}/:execute",
        "transactions of commands (OData filters) are not implemented",
    ),
    (
        "POST",
        "/api/hubs/{hub}/connections/{connectionId}/:invoke",
        "client results (invocations awaiting a completion) are not implemented",
    ),
    (
        "POST",
        "/api/hubs/{hub}/connections/{connectionId}/streams/{streamId}/:send",
        "server-to-client streams are not implemented",
    ),
    (
        "POST",
        "/api/hubs/{hub}/connections/{connectionId}/streams/{streamId}/:complete",
        "server-to-client streams are not implemented",
    ),
];

fn spec(name: &str) -> Value {
    let path = format!(
        "{}/tests/api/azure_swagger/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// (method, path template, api-version) of every operation in the specs.
fn operations() -> Vec<(String, String, Option<String>)> {
    let mut ops = Vec::new();
    for (file, version) in [
        ("v1.json", None),
        ("V20220601.json", Some("2022-06-01")),
        ("v20241201.operations.json", Some("2024-12-01")),
    ] {
        let doc = spec(file);
        for (path, methods) in doc["paths"].as_object().unwrap() {
            for method in methods.as_object().unwrap().keys() {
                if method != "parameters" {
                    ops.push((
                        method.to_uppercase(),
                        path.clone(),
                        version.map(str::to_owned),
                    ));
                }
            }
        }
    }
    ops
}

fn concrete(template: &str) -> String {
    template
        .replace("{hub}", "tasks")
        .replace("{group}", "g")
        .replace("{user}", "u")
        .replace("{id}", "u")
        .replace("{connectionId}", "c1")
        .replace("{streamId}", "s1")
}

/// Whether the router served `method url`: not its 405, and not its 404 (a fallback
/// answer names no route; for a HEAD, which has no body, the path answers another
/// method's 405 when it is routed).
async fn routed(http: &reqwest::Client, method: &str, url: &str) -> bool {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = http.request(m, url);
    if method == "POST" || method == "PUT" {
        req = req.json(&json!({"target": "X", "arguments": []}));
    }
    let resp = req.send().await.unwrap();
    match resp.status().as_u16() {
        405 => false,
        404 if method == "HEAD" => {
            let probe = http
                .request(reqwest::Method::OPTIONS, url)
                .send()
                .await
                .unwrap();
            probe.status() == 405
        }
        404 => {
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            !body["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("no route for"))
        }
        _ => true,
    }
}

#[tokio::test]
async fn every_operation_of_the_azure_specs_is_routed_or_listed_as_not_served() {
    let app = TestApp::spawn().await;
    let http = reqwest::Client::new();
    let not_served: BTreeSet<(&str, &str)> = NOT_SERVED.iter().map(|(m, p, _)| (*m, *p)).collect();
    let mut wrong = Vec::new();
    let mut listed_seen = BTreeSet::new();
    for (method, template, version) in operations() {
        let mut url = app.url(&concrete(&template));
        if let Some(v) = &version {
            url.push_str(&format!("?api-version={v}"));
        }
        let is_routed = routed(&http, &method, &url).await;
        let listed = not_served.contains(&(method.as_str(), template.as_str()));
        if listed {
            listed_seen.insert((method.clone(), template.clone()));
        }
        match (is_routed, listed) {
            (true, true) => wrong.push(format!(
                "{method} {template}: routed but listed as not served"
            )),
            (false, false) => wrong.push(format!("{method} {template}: neither routed nor listed")),
            _ => {}
        }
    }
    for (m, p, _) in NOT_SERVED {
        if !listed_seen.contains(&((*m).to_owned(), (*p).to_owned())) {
            wrong.push(format!("{m} {p}: listed but in no spec"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// A secure node with a hub `specs` whose clients present tokens (so they have users)
/// and which allows broadcast (so every hub-wide operation is served).
fn specs_config() -> hubcast::config::Config {
    let mut config = crate::security::secure_config();
    config.hubs.push(
        hubcast::hub::Hub::new(hubcast::hub::HubSpec {
            name: "specs".into(),
            path: "/hubs/specs".into(),
            aliases: vec![],
            allow_broadcast: true,
            auto_join: vec![],
            auth: hubcast::auth::AuthMode::Token,
            schema_check: hubcast::hub::SchemaCheck::Warn,
            allow: vec![],
            methods: vec![],
            history: false,
        })
        .unwrap(),
    );
    config
}

/// The success codes (2xx) an operation's spec lists.
fn success_codes(file: &str, template: &str, method: &str) -> Vec<u16> {
    spec(file)["paths"][template][method.to_lowercase()]["responses"]
        .as_object()
        .unwrap()
        .keys()
        .filter_map(|c| c.parse::<u16>().ok())
        .filter(|c| (200..300).contains(c))
        .collect()
}

#[tokio::test]
async fn every_served_operation_answers_with_a_success_code_of_its_spec() {
    let app = TestApp::spawn_with(specs_config()).await;
    let http = reqwest::Client::new();
    let access = crate::security::ACCESS;
    let token = crate::helpers::client_token(&app.url(""), "specs", "u", access).await;
    let mut wrong = Vec::new();
    let mut checked = 0;
    for (file, version) in [
        ("v1.json", None),
        ("V20220601.json", Some("2022-06-01")),
        ("v20241201.operations.json", Some("2024-12-01")),
    ] {
        for (method, template, _) in operations()
            .into_iter()
            .filter(|(_, _, v)| v.as_deref() == version)
        {
            if NOT_SERVED
                .iter()
                .any(|(m, p, _)| *m == method && *p == template)
            {
                continue;
            }
            // Each operation meets a fresh connection of user `u`, in group `g`.
            let mut client = crate::helpers::Client::open(
                &app.ws_url(&format!("/hubs/specs?access_token={token}")),
            )
            .await;
            client.handshake().await;
            let q = "api-version=2024-12-01";
            let put = http
                .put(app.url(&format!("/api/hubs/specs/users/u/groups/g?{q}&ttl=0")))
                .bearer_auth(access)
                .send()
                .await
                .unwrap();
            assert_eq!(put.status(), 200);
            let listed: Value = http
                .get(app.url(&format!("/api/hubs/specs/groups/g/connections?{q}")))
                .bearer_auth(access)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let id = listed["value"][0]["connectionId"]
                .as_str()
                .unwrap()
                .to_owned();
            let mut url = app.url(
                &template
                    .replace("{hub}", "specs")
                    .replace("{group}", "g")
                    .replace("{user}", "u")
                    .replace("{id}", "u")
                    .replace("{connectionId}", &id),
            );
            if let Some(v) = version {
                url.push_str(&format!("?api-version={v}"));
            }
            let mut req = http
                .request(
                    reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                    &url,
                )
                .bearer_auth(access);
            if method == "POST" || method == "PUT" {
                req = req.json(&json!({"target": "X", "arguments": []}));
            }
            let status = req.send().await.unwrap().status().as_u16();
            let codes = success_codes(file, &template, &method);
            if !codes.contains(&status) {
                wrong.push(format!(
                    "{method} {template} ({file}): {status}, the spec says {codes:?}"
                ));
            }
            checked += 1;
            // Gone from the group before the next operation's connection comes.
            http.delete(app.url(&format!("/api/hubs/specs/connections/{id}?{q}")))
                .bearer_auth(access)
                .send()
                .await
                .unwrap();
            drop(client);
            let node = app.node.clone();
            crate::helpers::eventually("the connection closed", || {
                node.registry().connection_count() == 0
            })
            .await;
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    let served = operations()
        .iter()
        .filter(|(m, p, _)| !NOT_SERVED.iter().any(|(nm, np, _)| nm == m && np == p))
        .count();
    assert_eq!(checked, served, "every served operation was tried");
}
