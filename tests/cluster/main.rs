//! Several nodes on a real redis-server started by the test, with a prefix of its own.

#[path = "../api/helpers.rs"]
#[allow(dead_code)]
mod helpers;
#[path = "../support/redis_ha.rs"]
#[allow(dead_code)]
mod redis_ha;

#[path = "../support/cut_proxy.rs"]
mod cut_proxy;

mod azure;

use std::time::Duration;

use helpers::{
    eventually, test_config, unique_prefix, use_redis_url, wait_ready_at, Client, TestApp, WAIT,
};
use hubcast::connection::handle::SessionHandle;
use hubcast::hub::Caller;
use hubcast::ids::{ConnectionId, UserId};
use redis_ha::TestRedis;
use serde_json::{json, Value};

/// Nodes on one Redis: standalone, or a Redis Cluster with `HUBCAST_TEST_REDIS=cluster`.
struct Cluster {
    redis: TestRedis,
    prefix: String,
    nodes: Vec<TestApp>,
}

impl Cluster {
    async fn spawn(n: usize) -> Self {
        Self::on(TestRedis::start().await, n).await
    }

    /// On one standalone server whatever the run asks for.
    async fn spawn_standalone(n: usize) -> Self {
        Self::on(TestRedis::standalone().await, n).await
    }

    async fn on(redis: TestRedis, n: usize) -> Self {
        let prefix = unique_prefix();
        let mut nodes = Vec::new();
        for _ in 0..n {
            nodes.push(Self::node(&redis, &prefix).await);
        }
        Self {
            redis,
            prefix,
            nodes,
        }
    }

    async fn node(redis: &TestRedis, prefix: &str) -> TestApp {
        let mut config = test_config();
        use_redis_url(&mut config, &redis.url(), prefix);
        TestApp::start(config, None).await
    }

    fn channel(&self, hub: &str, group: &str) -> String {
        format!("{}:{hub}:group:{{{group}}}", self.prefix)
    }

    async fn numsub(&self, channel: &str) -> u64 {
        self.redis.numsub(channel).await
    }
}

async fn publish_status(
    app: &TestApp,
    hub: &str,
    group: &str,
    target: &str,
    args: Value,
) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(app.url(&format!("/api/v1/hubs/{hub}/groups/{group}")))
        .json(&json!({"target": target, "arguments": args}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let retry = r.headers().get("retry-after").is_some();
    let mut body: Value = r.json().await.unwrap_or(Value::Null);
    if retry {
        body["_retryAfter"] = true.into();
    }
    (status, body)
}

#[tokio::test]
async fn members_on_two_nodes_receive_exactly_once_and_the_third_node_receives_nothing() {
    let cluster = Cluster::spawn(3).await;
    let [a, b, c] = [&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]];
    let mut on_a = Client::connect(a, "/hubs/tasks").await;
    let mut on_b = Client::connect(b, "/hubs/tasks").await;
    let mut also_b = Client::connect_direct(b, "/hubs/tasks").await;
    for client in [&mut on_a, &mut on_b, &mut also_b] {
        client.call("JoinGroup", json!(["g"])).await;
    }
    assert_eq!(
        cluster.numsub(&cluster.channel("tasks", "g")).await,
        2,
        "A and B subscribed, C not"
    );
    assert_eq!(
        c.group_members("tasks", "g").await,
        3,
        "the count is cluster-wide, from any node"
    );

    let reach = c
        .publish("tasks", "g", "Hello", json!([{"n": 1, "s": "ünï"}]))
        .await;
    assert_eq!(reach["nodes"], 2);
    assert_eq!(reach["localConnections"], 0);
    for client in [&mut on_a, &mut on_b, &mut also_b] {
        assert_eq!(
            client.next_invocation().await,
            json!({"type":1,"target":"Hello","arguments":[{"n":1,"s":"ünï"}]})
        );
    }
    c.publish("tasks", "g", "Marker", json!([])).await;
    for client in [&mut on_a, &mut on_b, &mut also_b] {
        assert_eq!(
            client.next_invocation().await["target"],
            "Marker",
            "no duplicate before the marker"
        );
    }
    assert_eq!(
        c.node.received_deliveries(),
        0,
        "the node without members received nothing"
    );
    assert_eq!(a.node.received_deliveries(), 2);
}

#[tokio::test]
async fn subscriptions_follow_membership_through_concurrent_churn() {
    let cluster = Cluster::spawn(3).await;
    let mut tasks = Vec::new();
    for (i, node) in cluster.nodes.iter().enumerate() {
        for k in 0..6 {
            let ws = node.ws_url("/hubs/tasks");
            tasks.push(tokio::spawn(async move {
                let mut c = Client::open(&ws).await;
                c.handshake().await;
                // Each client joins and leaves many times, ending in or out by parity.
                for round in 0..15 {
                    c.call("JoinGroup", json!(["churn"])).await;
                    if round < 14 || (i + k) % 2 == 1 {
                        c.call("LeaveGroup", json!(["churn"])).await;
                    }
                }
                c
            }));
        }
    }
    let mut clients = Vec::new();
    for t in tasks {
        clients.push(t.await.unwrap());
    }
    // (i + k) even stays in: node 0 has k = 0, 2, 4; node 1 has k = 1, 3, 5; node 2 as node 0.
    let expected_members = 9;
    assert_eq!(
        cluster.nodes[0].group_members("tasks", "churn").await,
        expected_members
    );
    for node in &cluster.nodes {
        assert_eq!(
            node.node
                .registry()
                .member_count(&cluster.channel("tasks", "churn")),
            3
        );
    }
    let channel = cluster.channel("tasks", "churn");
    assert_eq!(
        cluster.numsub(&channel).await,
        3,
        "every node with members is subscribed"
    );

    // Now everyone on node 1 leaves: node 1 must unsubscribe, the others stay.
    for (idx, c) in clients.iter_mut().enumerate() {
        if idx / 6 == 1 {
            c.call("LeaveGroup", json!(["churn"])).await;
        }
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while cluster.numsub(&channel).await != 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "node 1 did not unsubscribe"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(cluster.nodes[2].group_members("tasks", "churn").await, 6);
    let reach = cluster.nodes[1]
        .publish("tasks", "churn", "X", json!([]))
        .await;
    assert_eq!(reach["nodes"], 2);
}

#[tokio::test]
async fn ten_thousand_messages_to_members_on_three_nodes_arrive_once_and_in_order() {
    let cluster = Cluster::spawn(3).await;
    let mut readers = Vec::new();
    for node in &cluster.nodes {
        let mut c = Client::connect(node, "/hubs/tasks").await;
        c.call("JoinGroup", json!(["big"])).await;
        readers.push(tokio::spawn(async move {
            for i in 0..10_000u64 {
                let inv = c.next_invocation().await;
                assert_eq!(inv["arguments"][0], i, "in order, none lost or duplicated");
            }
            // Nothing after the last one but what we publish next: no duplicate tail.
            let next = c.next_invocation().await;
            assert_eq!(next["target"], "End");
        }));
    }
    let http = reqwest::Client::new();
    let url = cluster.nodes[0].url("/api/v1/hubs/tasks/groups/big");
    for i in 0..10_000u64 {
        let r = http
            .post(&url)
            .json(&json!({"target": "N", "arguments": [i]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    cluster.nodes[1]
        .publish("tasks", "big", "End", json!([]))
        .await;
    for r in readers {
        tokio::time::timeout(Duration::from_secs(60), r)
            .await
            .expect("readers finish")
            .unwrap();
    }
}

#[tokio::test]
async fn user_targeting_reaches_every_connection_of_the_user_on_every_node() {
    let cluster = Cluster::spawn(3).await;
    let user = UserId::parse("alice").unwrap();
    let mut queues = Vec::new();
    for node in &cluster.nodes[..2] {
        for _ in 0..2 {
            let id = ConnectionId::random();
            let (handle, rx) = SessionHandle::new(16);
            let caller = Caller {
                connection_id: id,
                user: Some(user.clone()),
                virtual_key: None,
                granted: vec![],
            };
            node.node.connect(0, caller, handle).await.unwrap();
            queues.push(rx);
        }
    }
    // Someone else on the third node must not get alice's messages.
    let (bob, mut bob_rx) = SessionHandle::new(16);
    let bob_caller = Caller {
        connection_id: ConnectionId::random(),
        user: Some(UserId::parse("bob").unwrap()),
        virtual_key: None,
        granted: vec![],
    };
    cluster.nodes[2]
        .node
        .connect(0, bob_caller, bob)
        .await
        .unwrap();

    let r = reqwest::Client::new()
        .post(cluster.nodes[2].url("/api/v1/hubs/spend/users/alice"))
        .json(&json!({"target": "ForAlice", "arguments": [1]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["nodes"], 2);
    for rx in &mut queues {
        let out = tokio::time::timeout(WAIT, rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            out.frame.as_str(),
            "{\"type\":1,\"target\":\"ForAlice\",\"arguments\":[1]}\u{1e}"
        );
    }
    assert!(bob_rx.try_recv().is_none());
}

#[tokio::test]
async fn the_api_changes_and_sends_to_a_connection_held_by_another_node() {
    let cluster = Cluster::spawn(2).await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let neg = crate::helpers::negotiate(a, "/hubs/tasks").await;
    let id = neg["connectionId"].as_str().unwrap().to_owned();
    let mut c = Client::open(&a.ws_url(&format!(
        "/hubs/tasks?id={}",
        neg["connectionToken"].as_str().unwrap()
    )))
    .await;
    c.handshake().await;
    let node = a.node.clone();
    eventually("registered", || node.registry().connection_count() == 1).await;

    let http = reqwest::Client::new();
    let member = b.url(&format!(
        "/api/v1/hubs/tasks/groups/remote/connections/{id}"
    ));
    assert_eq!(http.put(&member).send().await.unwrap().status(), 200);
    assert_eq!(b.group_members("tasks", "remote").await, 1);
    b.publish("tasks", "remote", "ViaB", json!([])).await;
    assert_eq!(c.next_invocation().await["target"], "ViaB");

    let direct = http
        .post(b.url(&format!("/api/v1/hubs/tasks/connections/{id}")))
        .json(&json!({"target": "Direct", "arguments": [2]}))
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), 202);
    assert_eq!(
        c.next_invocation().await,
        json!({"type":1,"target":"Direct","arguments":[2]})
    );

    assert_eq!(http.delete(&member).send().await.unwrap().status(), 200);
    assert_eq!(b.group_members("tasks", "remote").await, 0);
    assert_eq!(
        http.get(b.url(&format!("/api/v1/hubs/tasks/connections/{id}")))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        http.delete(b.url(&format!("/api/v1/hubs/tasks/connections/{id}")))
            .send()
            .await
            .unwrap()
            .status(),
        202
    );
    assert_eq!(
        c.recv_non_ping().await,
        Some(json!({"type":7,"allowReconnect":true}))
    );
    let ghost = "AAAAAAAAAAAAAAAAAAAAAA";
    assert_eq!(
        http.put(b.url(&format!("/api/v1/hubs/tasks/groups/x/connections/{ghost}")))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

#[tokio::test]
async fn a_redis_outage_gives_503_and_not_ready_then_delivery_resumes_without_reconnecting() {
    // Standalone only: it stops the one server and starts it again, empty.
    let mut cluster = Cluster::spawn_standalone(2).await;
    let mut on_a = Client::connect(&cluster.nodes[0], "/hubs/tasks").await;
    let mut on_b = Client::connect(&cluster.nodes[1], "/hubs/tasks").await;
    on_a.call("JoinGroup", json!(["o"])).await;
    on_b.call("JoinGroup", json!(["o"])).await;

    cluster.redis.server().stop();
    let (status, body) = publish_status(&cluster.nodes[0], "tasks", "o", "Lost", json!([])).await;
    assert_eq!(status, 503);
    assert!(
        ["not_sent", "unknown"].contains(&body["outcome"].as_str().unwrap_or_default()),
        "the 503 says whether the publish may have been applied: {body}"
    );
    assert_eq!(body["_retryAfter"], true);
    let started = tokio::time::Instant::now();
    loop {
        let r = reqwest::get(cluster.nodes[1].url("/readyz")).await.unwrap();
        if r.status() == 503 {
            break;
        }
        assert!(
            started.elapsed() < WAIT,
            "readiness did not flip within {WAIT:?}"
        );
    }
    // Clients stay connected through the outage and may even join meanwhile.
    on_a.call("JoinGroup", json!(["during"])).await;

    cluster.redis.server().restart().await;
    let back = tokio::time::Instant::now();
    // Redis came back empty: every node must resubscribe and re-register by itself. The
    // first publishes may be accepted before a node has resubscribed: that node catches
    // up from the channel's history, so every 202 reaches both members, once, in order.
    let mut accepted = Vec::new();
    let mut n = 0u64;
    while accepted.len() < 20 {
        assert!(
            back.elapsed() < WAIT,
            "publishing did not resume within {WAIT:?}"
        );
        let (status, _) = publish_status(&cluster.nodes[0], "tasks", "o", "Back", json!([n])).await;
        if status == 202 {
            accepted.push(n);
        }
        n += 1;
    }
    let last = *accepted.last().unwrap();
    for client in [&mut on_a, &mut on_b] {
        // A publish answered 503 `unknown` may have gone out too; a 202 must have.
        let mut got = Vec::new();
        while got.last() != Some(&last) {
            let inv = client.next_invocation().await;
            assert_eq!(inv["target"], "Back");
            got.push(inv["arguments"][0].as_u64().unwrap());
        }
        assert!(
            got.windows(2).all(|w| w[0] < w[1]),
            "in order, once: {got:?}"
        );
        for want in &accepted {
            assert!(
                got.contains(want),
                "accepted publish {want} missing: {got:?}"
            );
        }
    }
    cluster.nodes[0].wait_ready().await;
    cluster.nodes[1].wait_ready().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while cluster.nodes[1].group_members("tasks", "o").await != 2
        || cluster.nodes[1].group_members("tasks", "during").await != 1
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "memberships not re-registered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reach = cluster.nodes[1]
        .publish("tasks", "during", "JoinedDuringOutage", json!([]))
        .await;
    assert_eq!(reach["nodes"], 1);
    loop {
        let inv = on_a.next_invocation().await;
        if inv["target"] == "JoinedDuringOutage" {
            break;
        }
    }
}

#[tokio::test]
async fn a_node_killed_with_sigkill_is_reaped_within_two_ttls_by_one_survivor() {
    let cluster = Cluster::spawn(2).await;
    let dir = std::env::temp_dir().join(format!("hubcast-{}", cluster.prefix));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("hubcast.toml");
    std::fs::write(
        &config,
        "[cluster]\nheartbeat_ttl_ms = 2000\nheartbeat_interval_ms = 500\n",
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_hubcast"))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .args([
            "--redis-url",
            &cluster.redis.url(),
            "--redis-prefix",
            &cluster.prefix,
        ])
        .arg("--insecure")
        .arg("--config")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    wait_ready_at(&base).await;
    let mut doomed = Vec::new();
    for _ in 0..3 {
        let mut c = Client::open(&format!("ws://127.0.0.1:{port}/hubs/tasks")).await;
        c.handshake().await;
        c.call("JoinGroup", json!(["reap"])).await;
        doomed.push(c);
    }
    let mut survivor = Client::connect(&cluster.nodes[0], "/hubs/tasks").await;
    survivor.call("JoinGroup", json!(["reap"])).await;
    assert_eq!(cluster.nodes[1].group_members("tasks", "reap").await, 4);

    child.kill().unwrap();
    child.wait().unwrap();
    let killed = tokio::time::Instant::now();
    let deadline = killed + Duration::from_secs(4);
    while cluster.nodes[1].group_members("tasks", "reap").await != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not reaped within two TTLs (4 s)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The memberships go first; the reap counts once its last step is done.
    let reapers = || -> u64 {
        cluster
            .nodes
            .iter()
            .map(|n| n.node.backplane().nodes_reaped())
            .sum()
    };
    while reapers() == 0 {
        assert!(
            tokio::time::Instant::now() < killed + WAIT,
            "no survivor finished reaping the dead node"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(reapers(), 1, "exactly one survivor reaped the dead node");
    let reach = cluster.nodes[1]
        .publish("tasks", "reap", "AfterReap", json!([]))
        .await;
    assert_eq!(reach["nodes"], 1);
    assert_eq!(survivor.next_invocation().await["target"], "AfterReap");
    drop(doomed);
    let _ = std::fs::remove_dir_all(dir);
}

/// Spawns the binary with JSON logs, returning the child and a channel of its log lines.
fn spawn_node(
    redis: &TestRedis,
    prefix: &str,
    port: u16,
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead as _;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_hubcast"))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--metrics-listen",
            "127.0.0.1:0",
            "--insecure",
        ])
        .args(["--redis-url", &redis.url(), "--redis-prefix", prefix])
        .env("HUBCAST_LOG_FORMAT", "json")
        // Per-message publish and delivery lines are debug: asked for, as an operator
        // tracing one would.
        .env(
            "RUST_LOG",
            "info,hubcast::publish=debug,hubcast::delivery=debug",
        )
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (child, rx)
}

/// Reads JSON log lines until one satisfies `f`, within [`WAIT`].
fn find_line(rx: &std::sync::mpsc::Receiver<String>, f: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = rx.recv_timeout(left).expect("a matching log line in time");
        if let Ok(v) = serde_json::from_str::<Value>(&line) {
            if f(&v) {
                return v;
            }
        }
    }
}

#[tokio::test]
async fn a_publishs_correlation_id_is_echoed_and_logged_by_the_publishing_and_delivering_nodes() {
    let redis = TestRedis::start().await;
    let prefix = unique_prefix();
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (pa, pb) = (free(), free());
    let (mut a, a_logs) = spawn_node(&redis, &prefix, pa);
    let (mut b, b_logs) = spawn_node(&redis, &prefix, pb);
    let (base_a, base_b) = (
        format!("http://127.0.0.1:{pa}"),
        format!("http://127.0.0.1:{pb}"),
    );
    wait_ready_at(&base_a).await;
    wait_ready_at(&base_b).await;
    let mut on_b = Client::open(&format!("ws://127.0.0.1:{pb}/hubs/tasks")).await;
    on_b.handshake().await;
    on_b.call("JoinGroup", json!(["traced"])).await;

    let resp = reqwest::Client::new()
        .post(format!("{base_a}/api/v1/hubs/tasks/groups/traced"))
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .json(&json!({"target": "Traced", "arguments": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let body: Value = resp.json().await.unwrap();
    let corr = "4bf92f3577b34da6a3ce929d0e0e4736";
    assert_eq!(
        body["correlationId"], corr,
        "the trace id of traceparent is the correlation id"
    );
    assert_eq!(on_b.next_invocation().await["target"], "Traced");

    let published = find_line(&a_logs, |v| v["fields"]["correlation_id"] == corr);
    assert!(published["fields"]["message"]
        .as_str()
        .unwrap()
        .starts_with("[SignalR:Traced] Sent notification"));
    assert_eq!(published["target"], "hubcast::publish");
    let delivered = find_line(&b_logs, |v| {
        v["target"] == "hubcast::delivery" && v["fields"]["correlation_id"] == corr
    });
    assert_eq!(delivered["fields"]["local_members"], 1);
    let _ = a.kill();
    let _ = b.kill();
    let _ = (a.wait(), b.wait());
}

#[tokio::test]
async fn a_node_reaches_redis_over_tls() {
    // Standalone only: TLS is set up on one server of its own.
    let dir = std::env::temp_dir().join(format!("hubcast-tls-{}", unique_prefix()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("redis.crt"), dir.join("redis.key"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl is installed");
    assert!(made.success());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut redis = std::process::Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--tls-cert-file")
        .arg(&cert)
        .arg("--tls-key-file")
        .arg(&key)
        .arg("--tls-ca-cert-file")
        .arg(&cert)
        .args(["--tls-auth-clients", "no"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut config = test_config();
    // `#insecure`: the test's certificate is self-signed; production verifies against the
    // system's roots.
    config.redis = Some(hubcast::config::RedisSettings {
        url: format!("rediss://127.0.0.1:{port}/#insecure"),
        prefix: unique_prefix(),
    });
    let app = TestApp::start(config, None).await;
    let mut c = Client::connect(&app, "/hubs/tasks").await;
    c.call("JoinGroup", json!(["secure"])).await;
    let reach = app.publish("tasks", "secure", "OverTls", json!([1])).await;
    assert_eq!(reach["nodes"], 1, "the PUBLISH went through Redis over TLS");
    assert_eq!(c.next_invocation().await["target"], "OverTls");
    let _ = redis.kill();
    let _ = redis.wait();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_channels_history_in_redis_is_bounded_in_bytes() {
    let cluster = Cluster::spawn(1).await;
    let mut member = Client::connect(&cluster.nodes[0], "/hubs/tasks").await;
    member.call("JoinGroup", json!(["big"])).await;
    // 900 KiB each: the default 4 MiB of history holds four of them, not the ten sent.
    let payload = "p".repeat(900 * 1024);
    for i in 0..10 {
        cluster.nodes[0]
            .publish("tasks", "big", "Big", json!([i, payload]))
            .await;
        // Read as they come: ten at once would pass the connection's byte budget.
        assert_eq!(member.next_invocation().await["arguments"][0], i);
    }
    let key = format!("{}:hist:tasks:group:{{big}}", cluster.prefix);
    let mut c = cluster.redis.connection_for(&key).await;
    let (entries, bytes): (u64, u64) = redis::pipe()
        .cmd("XLEN")
        .arg(&key)
        .cmd("MEMORY")
        .arg("USAGE")
        .arg(&key)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(entries, 4, "as many 900 KiB entries as fit in 4 MiB");
    assert!(bytes <= 5 * 1024 * 1024, "{bytes} bytes of history");
}
