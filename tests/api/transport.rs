//! Negotiate, the WebSocket upgrade, the handshake and record framing.

use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{Client, TestApp};

async fn negotiate(app: &TestApp, query: &str) -> Value {
    reqwest::Client::new()
        .post(app.url(&format!("/hubs/tasks/negotiate{query}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn negotiate_version_1_returns_a_token_distinct_from_the_id() {
    let app = TestApp::spawn().await;
    let v = negotiate(&app, "?negotiateVersion=1").await;
    assert_eq!(v["negotiateVersion"], 1);
    let id = v["connectionId"].as_str().unwrap();
    let token = v["connectionToken"].as_str().unwrap();
    assert_eq!(id.len(), 22);
    assert_ne!(id, token);
    assert_eq!(v["availableTransports"][0]["transport"], "WebSockets");
    assert_eq!(
        v["availableTransports"][0]["transferFormats"],
        json!(["Text", "Binary"])
    );
}

#[tokio::test]
async fn negotiate_without_a_version_is_version_0_for_signalrcore() {
    let app = TestApp::spawn().await;
    let v = negotiate(&app, "").await;
    assert_eq!(v["negotiateVersion"], 0);
    assert!(v.get("connectionToken").is_none());
    // Version 0 clients connect with the connection id itself.
    let id = v["connectionId"].as_str().unwrap();
    let mut c = Client::open(&app.ws_url(&format!("/hubs/tasks?id={id}"))).await;
    c.handshake().await;
    c.call("JoinGroup", json!(["g"])).await;
}

#[tokio::test]
async fn query_keys_are_case_insensitive_and_versions_above_1_are_capped() {
    let app = TestApp::spawn().await;
    assert_eq!(
        negotiate(&app, "?NegotiateVersion=5&hub=x").await["negotiateVersion"],
        1
    );
    let bad = negotiate(&app, "?negotiateVersion=abc").await;
    assert!(bad["error"]
        .as_str()
        .unwrap()
        .contains("invalid protocol version"));
}

#[tokio::test]
async fn an_unknown_id_is_404_and_a_reused_one_is_409() {
    let app = TestApp::spawn().await;
    let err = tokio_tungstenite::connect_async(app.ws_url("/hubs/tasks?id=nope"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");

    let v = negotiate(&app, "?negotiateVersion=1").await;
    let token = v["connectionToken"].as_str().unwrap();
    let mut first = Client::open(&app.ws_url(&format!("/hubs/tasks?id={token}"))).await;
    first.handshake().await;
    let err = tokio_tungstenite::connect_async(app.ws_url(&format!("/hubs/tasks?id={token}")))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("409"), "{err}");
}

#[tokio::test]
async fn a_plain_get_on_a_hub_is_a_json_400() {
    let app = TestApp::spawn().await;
    let resp = reqwest::get(app.url("/hubs/tasks")).await.unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert!(v["error"].as_str().unwrap().contains("WebSocket"));
}

#[tokio::test]
async fn an_unknown_protocol_gets_an_error_reply_then_close() {
    let app = TestApp::spawn().await;
    let mut c = Client::open(&app.ws_url("/hubs/tasks")).await;
    c.send_raw("{\"protocol\":\"blueprotocol\",\"version\":1}\u{1e}")
        .await;
    assert_eq!(
        c.recv().await,
        Some(json!({"error": "The protocol 'blueprotocol' is not supported."}))
    );
    assert_eq!(c.recv().await, None, "closed after the error");
    assert_eq!(app.node.registry().connection_count(), 0);
}

#[tokio::test]
async fn an_unsupported_version_gets_an_error_reply() {
    let app = TestApp::spawn().await;
    let mut c = Client::open(&app.ws_url("/hubs/tasks")).await;
    c.send_raw("{\"protocol\":\"json\",\"version\":3}\u{1e}")
        .await;
    assert_eq!(
        c.recv().await,
        Some(json!({"error": "The server does not support version 3 of the 'json' protocol."}))
    );
}

#[tokio::test]
async fn handshake_versions_0_and_2_are_accepted() {
    let app = TestApp::spawn().await;
    for v in [0, 2] {
        let mut c = Client::open(&app.ws_url("/hubs/tasks")).await;
        c.send_raw(&format!(
            "{{\"protocol\": \"json\", \"version\": {v}}}\u{1e}"
        ))
        .await;
        assert_eq!(c.recv().await, Some(json!({})));
    }
}

#[tokio::test]
async fn a_handshake_split_across_frames_with_an_invocation_in_its_last_frame_works() {
    let app = TestApp::spawn().await;
    let mut c = Client::open(&app.ws_url("/hubs/tasks")).await;
    c.ws.send(Message::text("{\"protocol\":\"js"))
        .await
        .unwrap();
    c.ws.send(Message::text("on\",\"version\":1}\u{1e}{\"type\":1,\"invocationId\":\"7\",\"target\":\"JoinGroup\",\"arguments\":[\"g\"]}\u{1e}"))
        .await
        .unwrap();
    assert_eq!(c.recv().await, Some(json!({})));
    assert_eq!(
        c.recv_non_ping().await,
        Some(json!({"type": 3, "invocationId": "7", "result": null}))
    );
}

#[tokio::test]
async fn several_records_in_one_frame_and_one_record_over_three_frames_are_all_handled() {
    let app = TestApp::spawn().await;
    let mut c = Client::connect(&app, "/hubs/tasks").await;
    c.ws.send(Message::text(
        "{\"type\":6}\u{1e}{\"type\":1,\"invocationId\":\"a\",\"target\":\"JoinGroup\",\"arguments\":[\"x\"]}\u{1e}{\"type\":1,\"invocationId\":\"b\",\"target\":\"JoinGroup\",\"arguments\":[\"y\"]}\u{1e}",
    ))
    .await
    .unwrap();
    assert_eq!(c.recv_non_ping().await.unwrap()["invocationId"], "a");
    assert_eq!(c.recv_non_ping().await.unwrap()["invocationId"], "b");
    for part in [
        "{\"type\":1,\"invocationId\":\"c\",",
        "\"target\":\"Leave",
        "Group\",\"arguments\":[\"x\"]}\u{1e}",
    ] {
        c.ws.send(Message::binary(part.as_bytes().to_vec()))
            .await
            .unwrap();
    }
    assert_eq!(
        c.recv_non_ping().await,
        Some(json!({"type": 3, "invocationId": "c", "result": null}))
    );
    assert_eq!(app.group_members("tasks", "x").await, 0);
    assert_eq!(app.group_members("tasks", "y").await, 1);
}

#[tokio::test]
async fn an_unknown_method_gets_a_completion_error() {
    let app = TestApp::spawn().await;
    let mut c = Client::connect(&app, "/hubs/tasks").await;
    assert_eq!(
        c.invoke("Nope", json!([])).await,
        json!({"type": 3, "invocationId": "1", "error": "Unknown hub method 'Nope'"})
    );
    let wrong = c.invoke("JoinGroup", json!([])).await;
    assert!(wrong["error"]
        .as_str()
        .unwrap()
        .contains("Invocation provides 0 argument(s) but target expects 1."));
}

#[tokio::test]
async fn methods_are_matched_case_insensitively_and_hub_specific_ones_work() {
    let app = TestApp::spawn().await;
    let mut c = Client::connect(&app, "/hubs/video-generation").await;
    c.call("subscribetotask", json!(["t9"])).await;
    assert_eq!(app.group_members("video-generation", "video-t9").await, 1);
    let mut admin = Client::connect(&app, "/hubs/admin-notifications").await;
    admin
        .send(json!({"type":1,"invocationId":"s","target":"SubscribeToVirtualKey","arguments":[7]}))
        .await;
    assert_eq!(
        admin.recv_non_ping().await.unwrap(),
        json!({"type":1,"target":"SubscribedToVirtualKey","arguments":[7]})
    );
    assert_eq!(
        admin.recv_non_ping().await.unwrap(),
        json!({"type":3,"invocationId":"s","result":null})
    );
    assert_eq!(
        app.group_members("admin-notifications", "admin-vkey-7")
            .await,
        1
    );
    assert_eq!(
        app.group_members("admin-notifications", "admin").await,
        1,
        "joined admin on connect"
    );
}

#[tokio::test]
async fn streams_get_a_clean_error_and_stateful_messages_close_the_connection() {
    let app = TestApp::spawn().await;
    let mut c = Client::connect(&app, "/hubs/tasks").await;
    c.send(json!({"type":4,"invocationId":"s1","target":"Counter","arguments":[]}))
        .await;
    let done = c.recv_non_ping().await.unwrap();
    assert_eq!(done["invocationId"], "s1");
    assert!(done["error"].as_str().unwrap().contains("non-streaming"));

    let upload = c.invoke_with_streams().await;
    assert!(upload["error"].as_str().is_some(), "{upload}");

    c.send(json!({"type":8,"sequenceId":1})).await;
    let close = c.recv_non_ping().await.unwrap();
    assert_eq!(close["type"], 7);
    assert!(close["error"]
        .as_str()
        .unwrap()
        .contains("stateful reconnect"));
    assert_eq!(close["allowReconnect"], true);
}

#[tokio::test]
async fn a_malformed_record_closes_only_that_connection() {
    let app = TestApp::spawn().await;
    let mut bad = Client::connect(&app, "/hubs/tasks").await;
    let mut good = Client::connect(&app, "/hubs/tasks").await;
    good.call("JoinGroup", json!(["g"])).await;
    bad.send_raw("{\"type\":1,\"target\":5}\u{1e}").await;
    let close = bad.recv_non_ping().await.unwrap();
    assert_eq!(close["type"], 7);
    assert!(close["error"]
        .as_str()
        .unwrap()
        .starts_with("Connection closed with an error. InvalidDataException"));
    assert_eq!(bad.recv().await, None);
    app.publish("tasks", "g", "Still", json!([1])).await;
    assert_eq!(good.next_invocation().await["target"], "Still");
}

#[tokio::test]
async fn a_record_over_the_limit_closes_that_connection_with_an_error() {
    let app = TestApp::spawn().await;
    let mut big = Client::connect(&app, "/hubs/tasks").await;
    let mut other = Client::connect(&app, "/hubs/tasks").await;
    other.call("JoinGroup", json!(["g"])).await;
    let arg = "x".repeat(33 * 1024);
    big.send(json!({"type":1,"target":"JoinGroup","arguments":[arg]}))
        .await;
    let close = big.recv_non_ping().await.unwrap();
    assert_eq!(close["type"], 7);
    assert!(
        close["error"]
            .as_str()
            .unwrap()
            .contains("The maximum message size of 32768B was exceeded."),
        "{close}"
    );
    assert_eq!(big.recv().await, None);
    crate::helpers::eventually("oversized connection removed", || {
        app.node.registry().connection_count() == 1
    })
    .await;
    app.publish("tasks", "g", "Still", json!([])).await;
    assert_eq!(other.next_invocation().await["target"], "Still");
}

#[tokio::test]
async fn optional_fields_are_omitted_not_null() {
    let app = TestApp::spawn().await;
    let mut c = Client::connect(&app, "/hubs/tasks").await;
    c.send_raw(
        "{\"type\":1,\"invocationId\":\"q\",\"target\":\"JoinGroup\",\"arguments\":[\"g\"]}\u{1e}",
    )
    .await;
    let mut raw = String::new();
    while !raw.contains("\"type\":3") {
        match tokio::time::timeout(
            crate::helpers::WAIT,
            futures_util::StreamExt::next(&mut c.ws),
        )
        .await
        {
            Ok(Some(Ok(Message::Text(t)))) => raw.push_str(t.as_str()),
            other => panic!("unexpected {other:?}"),
        }
    }
    // A void method's completion carries `"result": null`, as ASP.NET writes; no other
    // field is sent as null.
    assert!(raw.contains("\"result\":null"), "{raw}");
    assert!(
        !raw.replace("\"result\":null", "").contains("null"),
        "{raw}"
    );
    app.publish("tasks", "g", "E", json!([])).await;
    let inv = c.next_invocation().await;
    assert_eq!(inv, json!({"type":1,"target":"E","arguments":[]}));
}

impl Client {
    async fn invoke_with_streams(&mut self) -> Value {
        self.send(json!({"type":1,"invocationId":"u1","target":"JoinGroup","arguments":["g"],"streamIds":["9"]})).await;
        loop {
            let r = self.recv_non_ping().await.unwrap();
            if r["invocationId"] == "u1" {
                return r;
            }
        }
    }
}

#[tokio::test]
async fn one_negotiate_token_cannot_open_two_connections_even_racing() {
    let app = TestApp::spawn().await;
    let v = negotiate(&app, "?negotiateVersion=1").await;
    let token = v["connectionToken"].as_str().unwrap();
    let url = app.ws_url(&format!("/hubs/tasks?id={token}"));
    // The first upgrade uses the token up: the second is refused before any handshake,
    // even while the first has not registered yet.
    let mut first = Client::open(&url).await;
    match tokio_tungstenite::connect_async(&url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 404),
        other => panic!("expected 404, got {:?}", other.map(|_| ())),
    }
    first
        .send_raw("{\"protocol\":\"json\",\"version\":1}\u{1e}")
        .await;
    assert_eq!(first.recv().await, Some(json!({})));
    assert_eq!(app.node.registry().connection_count(), 1);
    // The first connection is untouched.
    first.call("JoinGroup", json!(["g"])).await;
    app.publish("tasks", "g", "StillMine", json!([])).await;
    assert_eq!(first.next_invocation().await["target"], "StillMine");
}

#[tokio::test]
async fn broken_websocket_framing_closes_only_that_connection_with_1002() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let app = TestApp::spawn().await;
    let mut good = Client::connect(&app, "/hubs/tasks").await;
    good.call("JoinGroup", json!(["g"])).await;
    for (wire, code) in [
        // Unmasked: a client must mask every frame.
        (vec![0x81u8, 0x02, b'h', b'i'], [0x03, 0xEA]),
        // Reserved bits without an extension.
        (crate::helpers::RawWs::frame(0x41, b"x"), [0x03, 0xEA]),
        // A frame declaring 2^40 bytes: refused from its header, as too big.
        (
            [
                &[0x81u8, 0x80 | 127][..],
                &(1u64 << 40).to_be_bytes(),
                &[0; 4],
            ]
            .concat(),
            [0x03, 0xF1],
        ),
    ] {
        let mut bad = crate::helpers::RawWs::open(app.addr, "/hubs/tasks").await;
        bad.handshake().await;
        bad.tcp.write_all(&wire).await.unwrap();
        // Read until the node closes (an end of stream, or a reset if bytes were left).
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            match tokio::time::timeout(crate::helpers::WAIT, bad.tcp.read(&mut buf))
                .await
                .expect("the node closes the connection")
            {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        let close = [&[0x88u8, 0x02][..], &code].concat();
        assert!(
            got.windows(4).any(|w| w == close.as_slice()),
            "a close frame with code {code:?} in {got:?}"
        );
    }
    app.publish("tasks", "g", "Still", json!([1])).await;
    assert_eq!(good.next_invocation().await["target"], "Still");
}
