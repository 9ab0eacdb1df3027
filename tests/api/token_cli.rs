//! `hubcast token`, run as the built binary: a token it prints opens a node started with
//! the same key, with the user, virtual key and groups asked for; its refusals are one
//! line on stderr and a non-zero exit.

use serde_json::{json, Value};

use crate::helpers::TestApp;
use crate::security::{connect_with, secure_app, ACCESS, TOKEN_KEY};

/// Runs `hubcast token ARGS` with `key` (if any) as `HUBCAST_TOKEN_KEY` and nothing else
/// of the caller's `HUBCAST_*` settings: exit code, stdout, stderr.
async fn hubcast_token(key: Option<&str>, args: &[&str]) -> (i32, String, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_hubcast"));
    cmd.arg("token").args(args);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("HUBCAST_") {
            cmd.env_remove(name);
        }
    }
    if let Some(k) = key {
        cmd.env("HUBCAST_TOKEN_KEY", k);
    }
    let out = tokio::time::timeout(crate::helpers::WAIT, cmd.output())
        .await
        .expect("hubcast token finishes in time")
        .expect("the binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

async fn post(app: &TestApp, path: &str, body: Value) -> Value {
    let resp = reqwest::Client::new()
        .post(app.url(path))
        .bearer_auth(ACCESS)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    resp.json().await.unwrap()
}

async fn members(app: &TestApp, group: &str) -> u64 {
    let v: Value = reqwest::Client::new()
        .get(app.url(&format!("/api/v1/hubs/tasks/groups/{group}")))
        .bearer_auth(ACCESS)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["members"].as_u64().unwrap()
}

#[tokio::test]
async fn a_printed_token_connects_to_a_node_with_the_same_key_and_carries_its_claims() {
    let (code, out, err) = hubcast_token(
        Some(TOKEN_KEY),
        &[
            "--hub", "tasks", "--user", "u1", "--vkey", "7", "--groups", "task-*", "--ttl", "1h",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(err.is_empty(), "{err}");
    let token = out.strip_suffix('\n').expect("one line");
    assert_eq!(token.matches('.').count(), 2, "a JWT: {out:?}");

    let app = secure_app().await;
    let mut c = connect_with(&app, "/hubs/tasks", token).await;
    // The granted pattern lets it into task groups, and no further.
    c.call("SubscribeToTask", json!(["42"])).await;
    let refused = c.invoke("JoinGroup", json!(["video-1"])).await;
    assert!(refused.get("error").is_some(), "{refused}");
    // The virtual key: the hub lets it join its own key's task-type groups.
    c.call("SubscribeToTaskType", json!(["render"])).await;
    assert_eq!(members(&app, "task-42").await, 1);
    assert_eq!(members(&app, "vkey-7-render").await, 1);
    assert_eq!(members(&app, "video-1").await, 0);

    post(
        &app,
        "/api/v1/hubs/tasks/groups/task-42",
        json!({"target": "TaskProgress", "arguments": ["42", 50, "half way"]}),
    )
    .await;
    assert_eq!(
        c.next_invocation().await["arguments"],
        json!(["42", 50, "half way"])
    );
    // The user: a send to u1 reaches it.
    post(
        &app,
        "/api/v1/hubs/tasks/users/u1",
        json!({"target": "Hello", "arguments": ["u1"]}),
    )
    .await;
    assert_eq!(c.next_invocation().await["target"], "Hello");

    // The token names its hub: the spend hub refuses it.
    let refused =
        crate::security::upgrade_status(&app, &format!("/hubs/spend?access_token={token}")).await;
    assert_eq!(refused, 401);
}

#[tokio::test]
async fn a_missing_key_an_unknown_hub_and_a_bad_ttl_are_one_line_refusals() {
    let cases: [(Option<&str>, &[&str], &str); 3] = [
        (None, &["--hub", "tasks"], "HUBCAST_TOKEN_KEY"),
        (Some(TOKEN_KEY), &["--hub", "chat"], "unknown hub 'chat'"),
        (
            Some(TOKEN_KEY),
            &["--hub", "tasks", "--ttl", "1x"],
            "--ttl '1x'",
        ),
    ];
    for (key, args, says) in cases {
        let (code, out, err) = hubcast_token(key, args).await;
        assert_ne!(code, 0, "{args:?}");
        assert!(out.is_empty(), "{args:?} printed {out:?}");
        let line = err.strip_suffix('\n').unwrap_or(&err);
        assert!(!line.contains('\n'), "{args:?}: not one line: {err:?}");
        assert!(line.starts_with("hubcast token: "), "{err:?}");
        assert!(line.contains(says), "{args:?}: {err:?}");
        assert!(serde_json::from_str::<Value>(line).is_err(), "{err:?}");
        assert!(!line.contains('{'), "{err:?}");
    }
}
