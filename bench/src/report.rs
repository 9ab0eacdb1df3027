//! Readable tables and BENCHMARKS.md.

use serde_json::Value;

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// Prints a scenario's result as a short table on stderr (stdout carries the JSON line).
pub fn table(v: &Value) {
    let s = v["scenario"].as_str().unwrap_or("");
    let sys = v["system"].as_str().unwrap_or("");
    match s {
        "fanout" => {
            eprintln!(
                "{sys} fanout: {} clients, {} groups, {} nodes",
                v["clients"], v["groups"], v["nodes"]
            );
            eprintln!("  paced {}/s  e2e p50 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms  publish p99 {:.3} ms",
                v["paced"]["rate"], f(&v["paced"]["latency"]["p50_ms"]), f(&v["paced"]["latency"]["p99_ms"]),
                f(&v["paced"]["latency"]["p999_ms"]), f(&v["paced"]["latency"]["max_ms"]), f(&v["paced"]["publish_http"]["p99_ms"]));
            eprintln!("  closed {:.0} deliveries/s ({:.0} publishes/s)  e2e p99 {:.3} ms  server CPU {:.2} µs/delivery  cpu {}",
                f(&v["closed"]["deliveries_per_sec"]), f(&v["closed"]["publishes_per_sec"]), f(&v["closed"]["latency"]["p99_ms"]),
                f(&v["closed"]["server_cpu_us_per_delivery"]), v["closed"]["cpu_seconds"]);
            eprintln!(
                "  lost {}  duplicated {}  failed publishes {}",
                v["lost"], v["duplicated"], v["failed_publishes"]
            );
        }
        "idle" => eprintln!(
            "{sys} idle: {} connections, {:.2} KiB RSS each ({:.1} → {:.1} MiB)",
            v["clients"],
            f(&v["rss_per_connection_kib"]),
            f(&v["rss_before_mib"]),
            f(&v["rss_after_mib"])
        ),
        "group-size" => {
            for r in v["rows"].as_array().into_iter().flatten() {
                eprintln!("{sys} group size {:>4}: {:>9.0} deliveries/s  p99 {:.3} ms (closed loop)  paced p99 {:.3} ms",
                    r["group_size"], f(&r["deliveries_per_sec"]), f(&r["latency"]["p99_ms"]), f(&r["paced_latency"]["p99_ms"]));
            }
        }
        "churn" => eprintln!(
            "{sys} churn: {:.0} joins+leaves/s, subscription mismatches {}",
            f(&v["joins_and_leaves_per_sec"]),
            v["subscription_mismatches"]
        ),
        "redis-baseline" => eprintln!(
            "redis: PUBLISH {:.0} req/s (redis-benchmark); one subscriber received {:.0} msg/s",
            f(&v["publish_requests_per_sec"]),
            f(&v["subscriber_messages_per_sec"])
        ),
        _ => {}
    }
}

fn find<'a>(runs: &'a [Value], scenario: &str, system: &str) -> Option<&'a Value> {
    runs.iter()
        .find(|r| r["scenario"] == scenario && r["system"] == system)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().next().map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse::<f64>()
                    .unwrap_or(0.0)
                    / 1048576.0
            })
        })
        .unwrap_or(0.0);
    format!(
        "{cores} cores ({cpu}), {mem:.0} GiB memory, Linux; Redis {}; Node {}",
        version("redis-server", "--version"),
        version("node", "--version")
    )
}

fn version(bin: &str, arg: &str) -> String {
    std::process::Command::new(bin)
        .arg(arg)
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .find(|w| w.starts_with('v') || w.contains('.'))
                .unwrap_or("?")
                .trim_start_matches("v=")
                .to_owned()
        })
        .unwrap_or_else(|| "?".into())
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**not met**"
    }
}

/// BENCHMARKS.md from one `all` run.
pub fn markdown(runs: &[Value], quick: bool) -> String {
    let mut o = String::new();
    o.push_str("# Benchmarks\n\n");
    o.push_str("Regenerate with `bash scripts/bench.sh` (it builds release binaries, installs the Socket.IO peer's\n");
    o.push_str("modules and runs `hubcast-bench all`). Numbers compare systems on the same machine in the same run;\n");
    o.push_str("they are not absolute claims. Raw results: `BENCHMARKS.json`.\n\n");
    if quick {
        o.push_str("> This run used `--quick` (3-second phases); use the full run for numbers to quote.\n\n");
    }
    o.push_str(&format!("## Machine\n\n{}\n\n", machine()));
    o.push_str("## Method\n\n");
    o.push_str("`hubcast-bench` (Rust, `bench/`) starts redis-server and two nodes of the system under test on\n");
    o.push_str("127.0.0.1, connects WebSocket clients speaking that system's protocol by hand (SignalR JSON for\n");
    o.push_str("hubcast, Engine.IO 4 / Socket.IO for the peer), places them so that every group has members on\n");
    o.push_str("both nodes, and publishes over HTTP (hubcast's publish API; the peer's `POST /publish`, which\n");
    o.push_str("calls `io.to(room).emit`). Each payload carries a per-group sequence number and its publish time:\n");
    o.push_str("clients record end-to-end latency and count lost and duplicated deliveries. CPU seconds come from\n");
    o.push_str("`/proc/<pid>/stat` for every server process, Redis and the load generator itself; the machine\n");
    o.push_str(
        "has two cores shared by all of them, so the load generator's own CPU is shown.\n\n",
    );
    o.push_str("- **fanout**: 1 000 clients in 100 groups of 10; paced phase 500 publishes/s (latency), then a\n");
    o.push_str("  closed loop with one sequential publisher per group (maximum throughput).\n");
    o.push_str("- **publish latency at 2 000/s**: the same, paced at 2 000 publishes/s.\n");
    o.push_str("- **idle**: 10 000 idle connections on one node, RSS per connection.\n");
    o.push_str("- **group-size**: 1 000 members in groups of 1, 10, 100, 1 000.\n");
    o.push_str("- **churn**: 200 clients joining and leaving groups; hubcast's Redis subscriptions checked after.\n");
    o.push_str("- **redis**: `redis-benchmark … PUBLISH` and one subscriber's receive rate: the ceiling.\n\n");

    let (h, s) = (
        find(runs, "fanout", "hubcast"),
        find(runs, "fanout", "socketio"),
    );
    o.push_str("## Fan-out (two nodes, Redis)\n\n| | hubcast | Socket.IO + redis-adapter | ratio |\n|---|---|---|---|\n");
    let row = |o: &mut String, name: &str, a: f64, b: f64, unit: &str, better_low: bool| {
        let ratio = if better_low { b / a } else { a / b };
        o.push_str(&format!(
            "| {name} | {a:.3} {unit} | {b:.3} {unit} | {ratio:.1}× |\n"
        ));
    };
    if let (Some(h), Some(s)) = (h, s) {
        row(
            &mut o,
            "paced e2e p50",
            f(&h["paced"]["latency"]["p50_ms"]),
            f(&s["paced"]["latency"]["p50_ms"]),
            "ms",
            true,
        );
        row(
            &mut o,
            "paced e2e p99",
            f(&h["paced"]["latency"]["p99_ms"]),
            f(&s["paced"]["latency"]["p99_ms"]),
            "ms",
            true,
        );
        row(
            &mut o,
            "paced e2e p99.9",
            f(&h["paced"]["latency"]["p999_ms"]),
            f(&s["paced"]["latency"]["p999_ms"]),
            "ms",
            true,
        );
        row(
            &mut o,
            "paced e2e max",
            f(&h["paced"]["latency"]["max_ms"]),
            f(&s["paced"]["latency"]["max_ms"]),
            "ms",
            true,
        );
        row(
            &mut o,
            "paced publish HTTP p99",
            f(&h["paced"]["publish_http"]["p99_ms"]),
            f(&s["paced"]["publish_http"]["p99_ms"]),
            "ms",
            true,
        );
        row(
            &mut o,
            "closed-loop deliveries/s",
            f(&h["closed"]["deliveries_per_sec"]),
            f(&s["closed"]["deliveries_per_sec"]),
            "",
            false,
        );
        row(
            &mut o,
            "closed-loop e2e p99",
            f(&h["closed"]["latency"]["p99_ms"]),
            f(&s["closed"]["latency"]["p99_ms"]),
            "ms",
            true,
        );
        row(
            &mut o,
            "server CPU per delivery (nodes + Redis)",
            f(&h["closed"]["server_cpu_us_per_delivery"]),
            f(&s["closed"]["server_cpu_us_per_delivery"]),
            "µs",
            true,
        );
        o.push_str(&format!(
            "| lost / duplicated | {} / {} | {} / {} | |\n",
            h["lost"], h["duplicated"], s["lost"], s["duplicated"]
        ));
        o.push_str(&format!(
            "| CPU seconds, closed loop | {} | {} | |\n\n",
            h["closed"]["cpu_seconds"], s["closed"]["cpu_seconds"]
        ));
    }
    let (hp, sp) = (
        find(runs, "publish-latency-2000", "hubcast"),
        find(runs, "publish-latency-2000", "socketio"),
    );
    if let (Some(hp), Some(sp)) = (hp, sp) {
        o.push_str(
            "## Publish latency at 2 000 publishes/s\n\n| | hubcast | Socket.IO |\n|---|---|---|\n",
        );
        o.push_str(&format!(
            "| publish HTTP p50 | {:.3} ms | {:.3} ms |\n",
            f(&hp["result"]["paced"]["publish_http"]["p50_ms"]),
            f(&sp["result"]["paced"]["publish_http"]["p50_ms"])
        ));
        o.push_str(&format!(
            "| publish HTTP p99 | {:.3} ms | {:.3} ms |\n",
            f(&hp["result"]["paced"]["publish_http"]["p99_ms"]),
            f(&sp["result"]["paced"]["publish_http"]["p99_ms"])
        ));
        o.push_str(&format!(
            "| e2e p99 | {:.3} ms | {:.3} ms |\n\n",
            f(&hp["result"]["paced"]["latency"]["p99_ms"]),
            f(&sp["result"]["paced"]["latency"]["p99_ms"])
        ));
    }
    let (hi, si) = (
        find(runs, "idle", "hubcast"),
        find(runs, "idle", "socketio"),
    );
    if let (Some(hi), Some(si)) = (hi, si) {
        o.push_str("## Idle connections (one node)\n\n| | hubcast | Socket.IO |\n|---|---|---|\n");
        o.push_str(&format!(
            "| RSS per connection at {} | {:.2} KiB | {:.2} KiB |\n\n",
            hi["clients"],
            f(&hi["rss_per_connection_kib"]),
            f(&si["rss_per_connection_kib"])
        ));
    }
    o.push_str("## Group size (closed loop)\n\n| group size | hubcast deliveries/s | hubcast p99 | Socket.IO deliveries/s | Socket.IO p99 |\n|---|---|---|---|---|\n");
    if let (Some(hg), Some(sg)) = (
        find(runs, "group-size", "hubcast"),
        find(runs, "group-size", "socketio"),
    ) {
        for (a, b) in hg["rows"]
            .as_array()
            .into_iter()
            .flatten()
            .zip(sg["rows"].as_array().into_iter().flatten())
        {
            o.push_str(&format!(
                "| {} | {:.0} | {:.3} ms | {:.0} | {:.3} ms |\n",
                a["group_size"],
                f(&a["deliveries_per_sec"]),
                f(&a["latency"]["p99_ms"]),
                f(&b["deliveries_per_sec"]),
                f(&b["latency"]["p99_ms"])
            ));
        }
    }
    o.push('\n');
    if let (Some(hc), Some(sc)) = (
        find(runs, "churn", "hubcast"),
        find(runs, "churn", "socketio"),
    ) {
        o.push_str(&format!("## Churn\n\nhubcast: {:.0} joins+leaves/s, Redis subscriptions matching membership afterwards: {} mismatches.\nSocket.IO: {:.0} joins+leaves/s.\n\n",
            f(&hc["joins_and_leaves_per_sec"]), hc["subscription_mismatches"], f(&sc["joins_and_leaves_per_sec"])));
    }
    if let Some(r) = runs.iter().find(|r| r["scenario"] == "redis-baseline") {
        o.push_str(&format!("## Raw Redis on this machine\n\n`redis-benchmark PUBLISH`: {:.0} requests/s. One subscriber received {:.0} messages/s.\n\n",
            f(&r["publish_requests_per_sec"]), f(&r["subscriber_messages_per_sec"])));
    }
    o.push_str("## Targets\n\n| target | measured | |\n|---|---|---|\n");
    if let (Some(h), Some(s)) = (h, s) {
        let cpu_ratio = f(&s["closed"]["server_cpu_us_per_delivery"])
            / f(&h["closed"]["server_cpu_us_per_delivery"]);
        o.push_str(&format!(
            "| server CPU per delivery ≤ 1/10 of the peer's | {cpu_ratio:.1}× less | {} |\n",
            verdict(cpu_ratio >= 10.0)
        ));
        let thr = f(&h["closed"]["deliveries_per_sec"]) / f(&s["closed"]["deliveries_per_sec"]);
        o.push_str(&format!(
            "| max deliveries/s ≥ 5× the peer's | {thr:.1}× | {} |\n",
            verdict(thr >= 5.0)
        ));
        let p99 = f(&h["paced"]["latency"]["p99_ms"]);
        o.push_str(&format!(
            "| paced e2e p99 ≤ 2 ms (500/s, groups of 10) | {p99:.3} ms | {} |\n",
            verdict(p99 <= 2.0)
        ));
        let cmds = f(&h["closed"]["redis_publish_path_commands_per_publish"]);
        o.push_str(&format!("| one Redis command per publish | {cmds:.3} publish-path commands per publish ({:.3} of all kinds) | {} |\n",
            f(&h["closed"]["redis_commands_per_publish"]), verdict((cmds - 1.0).abs() < 0.01)));
        o.push_str(&format!(
            "| no loss, no duplicates | lost {} duplicated {} | {} |\n",
            h["lost"],
            h["duplicated"],
            verdict(h["lost"] == 0 && h["duplicated"] == 0)
        ));
    }
    if let Some(hi) = hi {
        let kib = f(&hi["rss_per_connection_kib"]);
        o.push_str(&format!(
            "| ≤ 8 KiB RSS per idle connection at 10 000 | {kib:.2} KiB | {} |\n",
            verdict(kib <= 8.0)
        ));
    }
    if let Some(hp) = hp {
        let p99 = f(&hp["result"]["paced"]["publish_http"]["p99_ms"]);
        o.push_str(&format!(
            "| publish HTTP p99 ≤ 1 ms at 2 000/s | {p99:.3} ms | {} |\n",
            verdict(p99 <= 1.0)
        ));
    }
    o.push_str("| 50 000 idle connections on one node | not run here: this workplace caps open files at 20 000 per process (hard limit) | — |\n\n");
    o.push_str(&std::fs::read_to_string("bench/changes.md").unwrap_or_default());
    o
}
