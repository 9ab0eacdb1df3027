//! The event flows, cluster-wide: two nodes on a real redis-server started by the test.

#[path = "../api/helpers.rs"]
#[allow(dead_code)]
mod helpers;
#[path = "../support/redis_ha.rs"]
#[allow(dead_code)]
mod redis_ha;

use std::time::Duration;

use helpers::{test_config, unique_prefix, use_redis_url, Client, TestApp, WAIT};
use hubcast::config::{Config, RateRule};
use redis_ha::TestRedis;
use serde_json::{json, Value};

/// Two nodes on one Redis: standalone, or a Redis Cluster with `HUBCAST_TEST_REDIS=cluster`.
struct Pair {
    redis: TestRedis,
    prefix: String,
    nodes: Vec<TestApp>,
}

async fn node(redis: &TestRedis, prefix: &str, tweak: fn(&mut Config)) -> TestApp {
    let mut config = test_config();
    use_redis_url(&mut config, &redis.url(), prefix);
    tweak(&mut config);
    TestApp::start(config, None).await
}

async fn pair(tweak: fn(&mut Config)) -> Pair {
    let redis = TestRedis::start().await;
    let prefix = unique_prefix();
    let nodes = vec![
        node(&redis, &prefix, tweak).await,
        node(&redis, &prefix, tweak).await,
    ];
    Pair {
        redis,
        prefix,
        nodes,
    }
}

fn no_tweak(_: &mut Config) {}

async fn post(app: &TestApp, path: &str, body: Value) -> Value {
    let r = reqwest::Client::new()
        .post(app.url(path))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, 202, "{path}: {v}");
    v
}

async fn member(app: &TestApp, hub: &str, group: &str) -> Client {
    let mut c = Client::connect(app, &format!("/hubs/{hub}")).await;
    c.call("JoinGroup", json!([group])).await;
    c
}

/// Every invocation until (and including) the one with target `until`.
async fn collect_until(c: &mut Client, until: &str) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let inv = c.next_invocation().await;
        let done = inv["target"] == until;
        out.push(inv);
        if done {
            return out;
        }
    }
}

async fn marker(app: &TestApp, hub: &str, group: &str) {
    app.publish(hub, group, "Marker", json!([])).await;
}

fn thresholds(events: &[Value]) -> Vec<u64> {
    events
        .iter()
        .filter(|e| e["target"] == "BudgetAlert")
        .map(|e| e["arguments"][0]["threshold"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn budget_alerts_fire_once_per_threshold_across_the_cluster_and_survive_a_restart() {
    let mut p = pair(no_tweak).await;
    let vkey = "42";
    let group = format!("vkey-{vkey}");
    let mut on_a = member(&p.nodes[0], "spend", &group).await;
    let mut on_b = member(&p.nodes[1], "spend", &group).await;
    let mut admin = member(&p.nodes[1], "admin-notifications", "admin").await;
    let spend = |total: f64| json!({"newSpend": 0.5, "totalSpend": total, "budget": 100.0, "provider": "openai", "model": "gpt-4o"});

    // 60 %: the 50 % threshold fires, once.
    let first = post(&p.nodes[0], &format!("/api/v1/spend/{vkey}"), spend(60.0)).await;
    assert_eq!(first["thresholdsCrossed"], json!([50]));

    // Fifty concurrent updates to both nodes, from 70 % to 94.5 %: 75 and 90 fire once each.
    let mut posts = Vec::new();
    for i in 0..50 {
        let url = p.nodes[i % 2].url(&format!("/api/v1/spend/{vkey}"));
        let body = spend(70.0 + i as f64 * 0.5);
        posts.push(tokio::spawn(async move {
            let r = reqwest::Client::new()
                .post(url)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 202);
            r.json::<Value>().await.unwrap()
        }));
    }
    let mut crossed = Vec::new();
    for t in posts {
        let v = t.await.unwrap();
        crossed.extend(
            v["thresholdsCrossed"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap()),
        );
    }
    crossed.sort_unstable();
    assert_eq!(
        crossed,
        vec![75, 90],
        "each threshold fired by exactly one request"
    );

    marker(&p.nodes[0], "spend", &group).await;
    for c in [&mut on_a, &mut on_b] {
        let events = collect_until(c, "Marker").await;
        // Concurrent requests may deliver 90 before 75; each arrives exactly once.
        let mut got = thresholds(&events);
        got.sort_unstable();
        assert_eq!(got, vec![50, 75, 90]);
        assert_eq!(
            events
                .iter()
                .filter(|e| e["target"] == "SpendUpdate")
                .count(),
            51
        );
        // Every alert comes before the SpendUpdate of the same charge.
        for (i, e) in events
            .iter()
            .enumerate()
            .filter(|(_, e)| e["target"] == "BudgetAlert")
        {
            let corr = &e["arguments"][0]["correlationId"];
            let update = events
                .iter()
                .position(|u| {
                    u["target"] == "SpendUpdate" && &u["arguments"][0]["correlationId"] == corr
                })
                .expect("the charge's SpendUpdate");
            assert!(i < update, "alert before its SpendUpdate");
            assert!(e["arguments"][0]["timestamp"]
                .as_str()
                .unwrap()
                .ends_with('Z'));
        }
    }
    marker(&p.nodes[1], "admin-notifications", "admin").await;
    let admin_events = collect_until(&mut admin, "Marker").await;
    let high: Vec<_> = admin_events
        .iter()
        .filter(|e| e["target"] == "HighSpendAlert")
        .collect();
    assert_eq!(high.len(), 3, "one admin copy per threshold");
    assert_eq!(high[0]["arguments"][0]["alertType"], "HighSpend");

    // Below 50 % every threshold re-arms.
    let low = post(&p.nodes[1], &format!("/api/v1/spend/{vkey}"), spend(10.0)).await;
    assert_eq!(low["thresholdsCrossed"], json!([]));
    let again = post(&p.nodes[0], &format!("/api/v1/spend/{vkey}"), spend(80.0)).await;
    assert_eq!(again["thresholdsCrossed"], json!([50, 75]));

    // A restarted node keeps the state: 75 is not announced again, 90 is.
    let restarted = node(&p.redis, &p.prefix, no_tweak).await;
    let _old = std::mem::replace(&mut p.nodes[0], restarted);
    let after = post(&p.nodes[0], &format!("/api/v1/spend/{vkey}"), spend(85.0)).await;
    assert_eq!(after["thresholdsCrossed"], json!([]));
    let more = post(&p.nodes[0], &format!("/api/v1/spend/{vkey}"), spend(100.0)).await;
    assert_eq!(more["thresholdsCrossed"], json!([90, 100]));
    assert_eq!(more["events"][0]["target"], "BudgetAlert");
}

#[tokio::test]
async fn provider_health_is_announced_only_after_three_identical_changes() {
    let p = pair(no_tweak).await;
    let mut admin = member(&p.nodes[0], "admin-notifications", "admin-provider-openai").await;
    // (result, announced?) — results alternate between the two nodes: the state is shared.
    let sequence = [
        ("Healthy", true),  // the first result always announces
        ("Healthy", false), // steady
        ("Healthy", false),
        ("Unhealthy", false), // flapping never reaches three in a row
        ("Healthy", false),
        ("Unhealthy", false),
        ("Unhealthy", false),
        ("Healthy", false),
        ("Unhealthy", false), // sustained change: the third in a row announces
        ("Unhealthy", false),
        ("Unhealthy", true),
        ("Unhealthy", false),
        ("Online", false), // Online is Healthy: a new streak starts
        ("healthy", false),
        ("Healthy", true),
    ];
    let mut expected = Vec::new();
    for (i, (status, announce)) in sequence.iter().enumerate() {
        let v = post(
            &p.nodes[i % 2],
            "/api/v1/providers/openai/health",
            json!({"status": status, "responseTimeMs": 120.0}),
        )
        .await;
        assert_eq!(v["announced"], *announce, "result {i} ({status})");
        if *announce {
            expected.push(v["status"].as_str().unwrap().to_owned());
        }
    }
    marker(&p.nodes[1], "admin-notifications", "admin-provider-openai").await;
    let events = collect_until(&mut admin, "Marker").await;
    // The admin hub also joins `admin` on connect, so each announcement arrives once per
    // group: count distinct notifications.
    let mut seen = std::collections::HashSet::new();
    let announced: Vec<String> = events
        .iter()
        .filter(|e| e["target"] == "ProviderHealthUpdate")
        .filter(|e| seen.insert(e["arguments"][0]["id"].as_str().unwrap().to_owned()))
        .map(|e| e["arguments"][0]["status"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        seen.len() * 2,
        events
            .iter()
            .filter(|e| e["target"] == "ProviderHealthUpdate")
            .count(),
        "one copy per group"
    );
    assert_eq!(announced, expected);
    assert_eq!(announced, vec!["Healthy", "Unhealthy", "Healthy"]);
    let bad = reqwest::Client::new()
        .post(p.nodes[0].url("/api/v1/providers/openai/health"))
        .json(&json!({"status": "Sideways"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn progress_is_coalesced_and_the_terminal_event_always_arrives_last() {
    let p = pair(no_tweak).await;
    let mut video = member(&p.nodes[0], "video-generation", "video-t1").await;
    let mut tasks = member(&p.nodes[1], "tasks", "task-t1").await;
    let http = reqwest::Client::new();
    let mut posts = Vec::new();
    for i in 1..=100 {
        // Progress arrives on both nodes, as behind a load balancer.
        let url = p.nodes[i % 2].url("/api/v1/tasks/video/t1/progress");
        let http = http.clone();
        posts.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .json(&json!({"progress": i, "message": format!("step {i}")}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 202);
        }));
    }
    for t in posts {
        t.await.unwrap();
    }
    let done = post(
        &p.nodes[1],
        "/api/v1/tasks/video/t1/completed",
        json!({"videoUrl": "https://cdn/v.mp4", "duration": 4.0, "provider": "p", "model": "m"}),
    )
    .await;
    assert_eq!(done["events"][0]["target"], "VideoGenerationCompleted");
    assert_eq!(done["events"][1]["target"], "TaskCompleted");
    marker(&p.nodes[0], "video-generation", "video-t1").await;
    marker(&p.nodes[0], "tasks", "task-t1").await;

    let v = collect_until(&mut video, "Marker").await;
    let progress: Vec<&Value> = v
        .iter()
        .filter(|e| e["target"] == "VideoGenerationProgress")
        .collect();
    assert!(
        !progress.is_empty() && progress.len() <= 10,
        "100 progress events became {}",
        progress.len()
    );
    let completed = v
        .iter()
        .position(|e| e["target"] == "VideoGenerationCompleted")
        .expect("terminal delivered");
    assert_eq!(
        completed,
        v.len() - 2,
        "the terminal event is last (before the marker)"
    );
    assert!(v[..completed]
        .iter()
        .all(|e| e["target"] == "VideoGenerationProgress"));
    assert_eq!(
        v[completed]["arguments"][0]["videoUrl"],
        "https://cdn/v.mp4"
    );

    let t = collect_until(&mut tasks, "Marker").await;
    let last_progress = t.iter().rposition(|e| e["target"] == "TaskProgress");
    let task_done = t
        .iter()
        .position(|e| e["target"] == "TaskCompleted")
        .expect("TaskCompleted delivered");
    assert!(last_progress.is_none_or(|lp| lp < task_done));
    assert!(t.iter().filter(|e| e["target"] == "TaskProgress").count() <= 10);
    // TaskProgress keeps the gateway's positional arguments.
    if let Some(lp) = last_progress {
        assert_eq!(t[lp]["arguments"][0], "t1");
        assert!(t[lp]["arguments"][1].is_i64());
    }

    // Progress that arrives after the task ended is dropped, and the 202 says so.
    let late = post(
        &p.nodes[1],
        "/api/v1/tasks/video/t1/progress",
        json!({"progress": 100}),
    )
    .await;
    assert_eq!(
        late["suppressed"], 2,
        "both of its events (video and task hub) were dropped: {late}"
    );
    assert!(late["events"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["suppressed"] == true && e["nodes"] == 0));
}

fn fast_breaker(config: &mut Config) {
    config.flows.breaker_failures = 3;
    config.flows.breaker_half_open_ms = 1_000;
}

#[tokio::test]
async fn the_circuit_breaker_opens_half_opens_and_closes_each_change_announced_once() {
    let p = pair(fast_breaker).await;
    let url = "https://hooks.example.com/gateway/events";
    let group = "webhook-hooks-example-com--gateway-events";
    let mut watcher = member(&p.nodes[0], "webhooks", group).await;
    let report = |i: usize, outcome: &str, attempt: i64| {
        let app = &p.nodes[i % 2];
        let body = json!({"url": url, "outcome": outcome, "attempt": attempt, "taskId": "t9", "error": "HTTP 500"});
        async move { post(app, "/api/v1/webhooks/deliveries", body).await }
    };
    let mut changes = Vec::new();
    for i in 0..5 {
        let v = report(i, "failed", 1).await;
        changes.extend(v["breaker"].as_array().unwrap().iter().map(|c| {
            format!(
                "{}->{}",
                c["from"].as_str().unwrap(),
                c["to"].as_str().unwrap()
            )
        }));
    }
    assert_eq!(
        changes,
        vec!["Closed->Open"],
        "opened once, on the third failure"
    );
    let opened_at = tokio::time::Instant::now();
    // The breaker's own timer: half-open once its open period has elapsed.
    tokio::time::sleep_until(opened_at + Duration::from_millis(1_100)).await;
    let v = report(1, "succeeded", 2).await;
    let t: Vec<String> = v["breaker"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{}->{}",
                c["from"].as_str().unwrap(),
                c["to"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(t, vec!["Open->HalfOpen", "HalfOpen->Closed"]);
    let v = report(0, "retrying", 1).await;
    assert!(
        v["breaker"].as_array().unwrap().is_empty(),
        "one failure does not reopen a closed breaker"
    );
    assert_eq!(v["events"][0]["target"], "DeliveryFailed");
    assert_eq!(v["events"][1]["target"], "RetryScheduled");

    marker(&p.nodes[1], "webhooks", group).await;
    let events = collect_until(&mut watcher, "Marker").await;
    let states: Vec<String> = events
        .iter()
        .filter(|e| e["target"] == "CircuitBreakerStateChanged")
        .map(|e| {
            format!(
                "{}->{}",
                e["arguments"][0]["previousState"].as_str().unwrap(),
                e["arguments"][0]["currentState"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        states,
        vec!["Closed->Open", "Open->HalfOpen", "HalfOpen->Closed"]
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| e["target"] == "DeliveryFailed")
            .count(),
        6
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| e["target"] == "DeliverySucceeded")
            .count(),
        1
    );
    let failed = events
        .iter()
        .find(|e| e["target"] == "DeliveryFailed")
        .unwrap();
    assert_eq!(failed["arguments"][0]["errorMessage"], "HTTP 500");
    assert_eq!(failed["arguments"][0]["error"], "HTTP 500");
}

fn storm_rule(config: &mut Config) {
    config.flows.rate_limits.push(RateRule {
        hub: Some("tasks".into()),
        target: "Storm".into(),
        per_second: 5.0,
        burst: Some(5.0),
    });
}

#[tokio::test]
async fn a_storm_to_one_group_is_cut_to_the_configured_rate_and_counted() {
    let p = pair(storm_rule).await;
    let mut c = member(&p.nodes[0], "tasks", "stormy").await;
    let started = tokio::time::Instant::now();
    let mut sent = 0u64;
    let mut suppressed = 0u64;
    for i in 0..40 {
        let v = p.nodes[i % 2]
            .publish("tasks", "stormy", "Storm", json!([i]))
            .await;
        if v["suppressed"] == 1 {
            suppressed += 1;
            assert_eq!(v["nodes"], 0);
        } else {
            sent += 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let allowed = 5.0 + 5.0 * elapsed + 1.0;
    assert!((sent as f64) <= allowed, "{sent} sent in {elapsed:.2} s");
    assert!(
        suppressed >= 40 - allowed as u64,
        "the excess was suppressed and reported"
    );
    // Other targets to the same group are not limited.
    p.nodes[1]
        .publish("tasks", "stormy", "Calm", json!([]))
        .await;
    let events = collect_until(&mut c, "Calm").await;
    assert_eq!(
        events.iter().filter(|e| e["target"] == "Storm").count() as u64,
        sent,
        "exactly the accepted ones arrived"
    );
}

fn reject_mode(config: &mut Config) {
    for hub in &mut config.hubs {
        if hub.spec.name == "spend" {
            hub.spec.schema_check = hubcast::hub::SchemaCheck::Reject;
        }
    }
}

#[tokio::test]
async fn a_malformed_payload_for_a_registered_target_is_rejected_naming_the_field() {
    let p = pair(reject_mode).await;
    let mut c = member(&p.nodes[0], "spend", "vkey-1").await;
    let bad = reqwest::Client::new()
        .post(p.nodes[0].url("/api/v1/hubs/spend/groups/vkey-1"))
        .json(&json!({"target": "SpendUpdate", "arguments": [{"timestamp": "2026-11-27T00:00:00Z", "correlationId": "c", "newSpend": 1, "totalSpend": "lots", "budget": null, "budgetPercentage": null, "budgetRemaining": 0, "budgetUtilization": 0, "provider": "p", "model": "m"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let err: Value = bad.json().await.unwrap();
    assert!(
        err["error"].as_str().unwrap().contains("totalSpend"),
        "{err}"
    );
    // A well-formed one passes, and a target without a contract is not checked.
    let flow = post(
        &p.nodes[1],
        "/api/v1/spend/1",
        json!({"newSpend": 1.0, "totalSpend": 2.0, "provider": "p", "model": "m"}),
    )
    .await;
    assert_eq!(flow["events"][0]["target"], "SpendUpdate");
    p.nodes[0]
        .publish("spend", "vkey-1", "Custom", json!(["anything"]))
        .await;
    let events = collect_until(&mut c, "Custom").await;
    assert_eq!(
        events.len(),
        2,
        "the rejected publish never arrived: {events:?}"
    );
    let schemas: Value = reqwest::get(p.nodes[0].url("/api/v1/schemas"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(schemas["events"]["SpendUpdate@spend"]["arguments"].is_object());
    let _ = WAIT;
}

/// The breaker changes one webhook report made, as `from->to`.
fn breaker_changes(report: &Value) -> Vec<String> {
    report["breaker"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{}->{}",
                c["from"].as_str().unwrap(),
                c["to"].as_str().unwrap()
            )
        })
        .collect()
}

async fn report_failure(app: &TestApp, url: &str) -> Vec<String> {
    let body = json!({"url": url, "outcome": "failed", "attempt": 1, "error": "HTTP 500"});
    breaker_changes(&post(app, "/api/v1/webhooks/deliveries", body).await)
}

#[tokio::test]
async fn a_url_ending_in_failures_has_its_own_breaker_and_no_503() {
    let p = pair(fast_breaker).await;
    // Its breaker's name used to be the failure list of the URL without the suffix: the
    // wrong type for the breaker script, so every report on it answered 503.
    let x = "https://hooks.example.com/a";
    let x_failures = "https://hooks.example.com/a:failures";
    let none: Vec<String> = Vec::new();
    let open = vec!["Closed->Open".to_owned()];
    assert_eq!(report_failure(&p.nodes[0], x).await, none);
    assert_eq!(report_failure(&p.nodes[1], x).await, none);
    assert_eq!(report_failure(&p.nodes[0], x_failures).await, none);
    assert_eq!(report_failure(&p.nodes[1], x_failures).await, none);
    assert_eq!(
        report_failure(&p.nodes[0], x_failures).await,
        open,
        "its own third failure opens it"
    );
    assert_eq!(
        report_failure(&p.nodes[1], x).await,
        open,
        "the other URL's failures did not count"
    );
}

#[tokio::test]
async fn urls_whose_group_names_coincide_share_the_group_but_not_the_breaker() {
    let p = pair(fast_breaker).await;
    let a = "https://a.example/h";
    let b = "https://a-example/h";
    let group = "webhook-a-example--h";
    let mut watcher = member(&p.nodes[0], "webhooks", group).await;
    let none: Vec<String> = Vec::new();
    for url in [a, a, b, b] {
        // With one breaker for both, b's first failure was the third and opened it.
        assert_eq!(report_failure(&p.nodes[1], url).await, none, "{url}");
    }
    assert_eq!(
        report_failure(&p.nodes[0], b).await,
        vec!["Closed->Open"],
        "b's own third failure"
    );
    // a's breaker is still closed with two failures: a success changes nothing.
    let ok = post(
        &p.nodes[1],
        "/api/v1/webhooks/deliveries",
        json!({"url": a, "outcome": "succeeded", "attempt": 3}),
    )
    .await;
    assert_eq!(breaker_changes(&ok), none);
    assert_eq!(ok["group"], group, "the gateway's group name, for both");

    marker(&p.nodes[1], "webhooks", group).await;
    let events = collect_until(&mut watcher, "Marker").await;
    let of = |target: &str, url: &str| {
        events
            .iter()
            .filter(|e| e["target"] == target && e["arguments"][0]["url"] == url)
            .count()
    };
    // The group is shared (that is the gateway's naming): its members see both URLs.
    assert_eq!((of("DeliveryFailed", a), of("DeliveryFailed", b)), (2, 3));
    assert_eq!(of("DeliverySucceeded", a), 1);
    assert_eq!(
        (
            of("CircuitBreakerStateChanged", a),
            of("CircuitBreakerStateChanged", b)
        ),
        (0, 1),
        "only b's breaker changed"
    );
}

fn colon_rules(config: &mut Config) {
    for target in ["y", "x:y"] {
        config.flows.rate_limits.push(RateRule {
            hub: Some("tasks".into()),
            target: target.into(),
            // One event, then none for the rest of the test.
            per_second: 0.001,
            burst: Some(1.0),
        });
    }
}

#[tokio::test]
async fn rate_buckets_of_parts_holding_colons_do_not_collide() {
    let p = pair(colon_rules).await;
    // Group `g` with target `x:y` and group `g:x` with target `y` used to name one
    // bucket (`…:rate:tasks:g:x:y`), so one drained the other.
    let first = p.nodes[0].publish("tasks", "g", "x:y", json!([])).await;
    assert_eq!(first["suppressed"], 0);
    let other = p.nodes[1].publish("tasks", "g:x", "y", json!([])).await;
    assert_eq!(other["suppressed"], 0, "its own bucket is full: {other}");
    // Each bucket is now empty: the rules still hold.
    for (group, target) in [("g", "x:y"), ("g:x", "y")] {
        let again = p.nodes[0].publish("tasks", group, target, json!([])).await;
        assert_eq!(again["suppressed"], 1, "{group} / {target}: {again}");
    }
}

#[tokio::test]
async fn made_up_targets_share_one_metric_label_and_declared_ones_keep_theirs() {
    let redis = TestRedis::start().await;
    let mut config = test_config();
    use_redis_url(&mut config, &redis.url(), &unique_prefix());
    // The node serves /metrics, so the process-wide recorder is installed (once per test
    // binary; other tests of this binary may add to it, never take away).
    config.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    let tag = &hubcast::ids::random_token()[..10];
    let made_up = |i: usize| format!("MadeUp{tag}N{i}");
    config.flows.rate_limits.push(RateRule {
        hub: Some("tasks".into()),
        target: made_up(0),
        per_second: 0.001,
        burst: Some(1.0),
    });
    let app = hubcast::app::App::build(config).await.expect("node starts");
    let metrics = app.metrics_addr().expect("a metrics listener");
    let base = format!("http://{}", app.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(app.run(async move {
        let _ = stopped.await;
    }));
    helpers::wait_ready_at(&base).await;
    let http = reqwest::Client::new();
    let publish = |target: String| {
        let http = http.clone();
        let url = format!("{base}/api/v1/hubs/tasks/groups/labels");
        async move {
            let r = http
                .post(url)
                .json(&json!({"target": target, "arguments": []}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 202);
        }
    };
    // 500 targets nobody declared; the first one twice, so its rule suppresses one.
    publish(made_up(0)).await;
    for i in 0..500 {
        publish(made_up(i)).await;
    }
    // A declared target (its arguments miss the contract: counted, sent anyway).
    publish("TaskProgress".to_owned()).await;

    let text = reqwest::get(format!("http://{metrics}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !text.contains(tag),
        "a made-up target became a label: {}",
        text.lines().find(|l| l.contains(tag)).unwrap_or_default()
    );
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{series} not in /metrics"))
    };
    assert!(value(r#"hubcast_events_published_total{hub="tasks",target="other"}"#) >= 500.0);
    assert!(
        value(r#"hubcast_throttled_events_total{hub="tasks",target="other",rule="rate_limit"}"#)
            >= 1.0
    );
    assert!(value(r#"hubcast_events_published_total{hub="tasks",target="TaskProgress"}"#) >= 1.0);
    assert!(value(r#"hubcast_schema_mismatches_total{hub="tasks",target="TaskProgress"}"#) >= 1.0);
    let _ = stop.send(());
    let _ = run.await;
}

#[tokio::test]
async fn a_started_task_reaches_its_keys_task_type_subscribers_and_a_timeout_its_watchers() {
    let p = pair(no_tweak).await;
    // `SubscribeToTaskType("export")` by key 7 joins this group.
    let mut by_type = member(&p.nodes[0], "tasks", "vkey-7-export").await;
    let mut by_task = member(&p.nodes[1], "tasks", "task-t9").await;
    let started = post(
        &p.nodes[1],
        "/api/v1/tasks/task/t9/started",
        json!({"taskType": "export", "virtualKeyId": 7, "metadata": {"n": 1}}),
    )
    .await;
    assert_eq!(started["events"].as_array().unwrap().len(), 2, "{started}");
    for c in [&mut by_type, &mut by_task] {
        let inv = c.next_invocation().await;
        assert_eq!(inv["target"], "TaskStarted");
        assert_eq!(inv["arguments"], json!(["t9", "export", {"n": 1}]));
    }
    post(
        &p.nodes[0],
        "/api/v1/tasks/task/t9/timedout",
        json!({"timeoutSeconds": 300}),
    )
    .await;
    let inv = by_task.next_invocation().await;
    assert_eq!(inv["target"], "TaskTimedOut");
    assert_eq!(inv["arguments"], json!(["t9", 300]));

    let http = reqwest::Client::new();
    for (path, body, why) in [
        (
            "/api/v1/tasks/task/t10/timedout",
            json!({}),
            "'timeoutSeconds' is required",
        ),
        (
            "/api/v1/tasks/video/t10/timedout",
            json!({"timeoutSeconds": 5}),
            "report it as failed",
        ),
    ] {
        let r = http
            .post(p.nodes[0].url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{path}");
        let v: Value = r.json().await.unwrap();
        assert!(v["error"].as_str().unwrap().contains(why), "{path}: {v}");
    }
}
