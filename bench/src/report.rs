//! Readable tables and BENCHMARKS.md.

use serde_json::Value;

pub(crate) fn f(v: &Value) -> f64 {
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
            eprintln!("  closed {:.0} deliveries/s ({:.0} publishes/s)  e2e p99 {:.3} ms  server CPU {:.2} µs/delivery (user {:.2}, system {:.2})  loadgen {:.2} µs/delivery  cpu {}",
                f(&v["closed"]["deliveries_per_sec"]), f(&v["closed"]["publishes_per_sec"]), f(&v["closed"]["latency"]["p99_ms"]),
                f(&v["closed"]["server_cpu_us_per_delivery"]), f(&v["closed"]["server_user_us_per_delivery"]),
                f(&v["closed"]["server_system_us_per_delivery"]), f(&v["closed"]["loadgen_cpu_us_per_delivery"]),
                v["closed"]["cpu_seconds"]);
            eprintln!(
                "  lost {}  duplicated {}  reordered {}  failed publishes {}  delivery {:.1} bytes on the wire",
                v["lost"],
                v["duplicated"],
                v["reordered"],
                v["failed_publishes"],
                f(&v["delivery_wire_bytes"])
            );
        }
        "publish-latency" => {
            let r = &v["result"];
            eprintln!(
                "{sys} publish latency at {}/s: publish HTTP p50 {:.3} ms  p99 {:.3} ms  e2e p99 {:.3} ms  lost {} duplicated {}",
                v["rate"],
                f(&r["paced"]["publish_http"]["p50_ms"]),
                f(&r["paced"]["publish_http"]["p99_ms"]),
                f(&r["paced"]["latency"]["p99_ms"]),
                r["lost"],
                r["duplicated"]
            );
        }
        "idle" => eprintln!(
            "{sys} idle: {} connections ({} still open at the end), {:.2} KiB RSS each ({:.1} → {:.1} MiB), connected in {:.1} s",
            v["clients"],
            v["connected_at_end"],
            f(&v["rss_per_connection_kib"]),
            f(&v["rss_before_mib"]),
            f(&v["rss_after_mib"]),
            f(&v["connect_secs"])
        ),
        "group-size" => {
            for r in v["rows"].as_array().into_iter().flatten() {
                eprintln!("{sys} group size {:>4}: {:>9.0} deliveries/s  p99 {:.3} ms (closed loop)  paced p99 {:.3} ms  lost {} duplicated {}",
                    r["group_size"], f(&r["deliveries_per_sec"]), f(&r["latency"]["p99_ms"]), f(&r["paced_latency"]["p99_ms"]),
                    r["lost"], r["duplicated"]);
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
        "floor" => eprintln!(
            "floor: {} writes of {} bytes over {} loopback sockets, {:.0} writes/s, writer CPU {:.3} µs/write (user {:.3}, system {:.3}), {} bytes lost",
            v["writes"],
            v["frame_bytes"],
            v["pairs"],
            f(&v["writes_per_sec"]),
            f(&v["cpu_us_per_write"]),
            f(&v["user_us_per_write"]),
            f(&v["system_us_per_write"]),
            v["bytes_lost"]
        ),
        "redis-scaling" => crate::scaling_report::table(v),
        _ => {}
    }
}

/// Whether `runs` came from an `all --quick` run: its hubcast fan-out's paced phase was
/// shorter than the full run's 10 s.
pub fn was_quick(runs: &[Value]) -> bool {
    find(runs, "fanout", "hubcast")
        .and_then(|r| r["paced"]["secs"].as_u64())
        .is_some_and(|s| s < 10)
}

/// The systems in report order: name in the JSON, column heading.
const SYSTEMS: [(&str, &str); 3] = [
    ("hubcast", "hubcast"),
    ("socketioxide", "socketioxide + socketioxide-redis"),
    ("socketio", "Socket.IO + redis-adapter"),
];
/// The peers hubcast is compared with (indexes into SYSTEMS).
const PEERS: [usize; 2] = [1, 2];

fn find<'a>(runs: &'a [Value], scenario: &str, system: &str) -> Option<&'a Value> {
    runs.iter()
        .find(|r| r["scenario"] == scenario && r["system"] == system)
}

/// One scenario's result for each system, in SYSTEMS order.
fn per_system<'a>(runs: &'a [Value], scenario: &str) -> [Option<&'a Value>; 3] {
    SYSTEMS.map(|(name, _)| find(runs, scenario, name))
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
        "{cores} cores ({cpu}), {mem:.0} GiB memory, Linux; Redis {}; Node {}; socketioxide {}, socketioxide-redis {}",
        version("redis-server", "--version"),
        version("node", "--version"),
        locked_version("socketioxide"),
        locked_version("socketioxide-redis"),
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

/// A crate's version as the socketioxide peer's Cargo.lock pins it.
fn locked_version(krate: &str) -> String {
    let lock = std::fs::read_to_string("bench/peers/socketioxide/Cargo.lock").unwrap_or_default();
    let needle = format!("name = \"{krate}\"\n");
    lock.split("[[package]]")
        .find(|p| p.contains(&needle))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = ")))
        .map_or_else(|| "?".into(), |v| v.trim_matches('"').to_owned())
}

pub(crate) fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**not met**"
    }
}

/// A number for a table cell: `—` when it was not measured.
pub(crate) fn num(v: f64, decimals: usize, unit: &str) -> String {
    if v.is_finite() {
        format!("{v:.decimals$}{unit}")
    } else {
        "—".into()
    }
}

/// The best peer's value of a metric (lowest or highest) and that peer's column heading.
fn best_peer(values: &[f64; 3], lower_is_better: bool) -> Option<(f64, &'static str)> {
    PEERS
        .iter()
        .filter(|&&i| values[i].is_finite())
        .map(|&i| (values[i], SYSTEMS[i].1))
        .reduce(|a, b| {
            let b_better = if lower_is_better {
                b.0 < a.0
            } else {
                b.0 > a.0
            };
            if b_better {
                b
            } else {
                a
            }
        })
}

/// hubcast's value over the best peer's, as a table cell.
fn ratio_cell(values: &[f64; 3], lower_is_better: bool) -> String {
    match best_peer(values, lower_is_better) {
        Some((best, _)) if values[0].is_finite() && best != 0.0 => {
            format!("{:.2}×", values[0] / best)
        }
        _ => "—".into(),
    }
}

/// One metric row: a value per system, the floor's (or `—`), and hubcast / best peer.
struct Row<'a> {
    name: &'a str,
    values: [f64; 3],
    floor: f64,
    decimals: usize,
    unit: &'a str,
    lower_is_better: bool,
}

fn push_row(o: &mut String, r: &Row<'_>) {
    let cells: Vec<String> = r
        .values
        .iter()
        .map(|v| num(*v, r.decimals, r.unit))
        .collect();
    o.push_str(&format!(
        "| {} | {} | {} | {} |\n",
        r.name,
        cells.join(" | "),
        num(r.floor, r.decimals, r.unit),
        ratio_cell(&r.values, r.lower_is_better)
    ));
}

fn values(runs: &[Option<&Value>; 3], get: impl Fn(&Value) -> f64) -> [f64; 3] {
    runs.map(|r| r.map_or(f64::NAN, &get))
}

/// BENCHMARKS.md from one `all` run.
pub fn markdown(runs: &[Value], quick: bool) -> String {
    let mut o = String::new();
    o.push_str("# Benchmarks\n\n");
    o.push_str("Regenerate with `bash scripts/bench.sh` (it builds release binaries, including the socketioxide\n");
    o.push_str("peer, installs the Socket.IO peer's modules and runs `hubcast-bench all`). Numbers compare systems\n");
    o.push_str("on the same machine in the same run; they are not absolute claims. Raw results: `BENCHMARKS.json`.\n\n");
    if quick {
        o.push_str("> This run used `--quick` (3-second phases); use the full run for numbers to quote.\n\n");
    }
    o.push_str(&format!("## Machine\n\n{}\n\n", machine()));
    let fan = per_system(runs, "fanout");
    let pl = per_system(runs, "publish-latency");
    let floor = runs.iter().find(|r| r["scenario"] == "floor");
    let publish_rate = pl.iter().flatten().find_map(|r| r["rate"].as_u64());
    let rate_text = publish_rate.map_or("—".into(), group_digits);
    let idle_counts: Vec<u64> = {
        let mut v: Vec<u64> = runs
            .iter()
            .filter(|r| r["scenario"] == "idle")
            .filter_map(|r| r["clients"].as_u64())
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let idle_text = idle_counts
        .iter()
        .map(|n| group_digits(*n))
        .collect::<Vec<_>>()
        .join(" and ");

    o.push_str("## Method\n\n");
    o.push_str("`hubcast-bench` (Rust, `bench/`) starts redis-server and two nodes of the system under test on\n");
    o.push_str("127.0.0.1, connects WebSocket clients speaking that system's protocol by hand (SignalR JSON for\n");
    o.push_str("hubcast; Engine.IO 4 / Socket.IO 5 for both peers), places them so that every group has members\n");
    o.push_str("on both nodes, and publishes over HTTP (hubcast's publish API; the peers' `POST /publish`, which\n");
    o.push_str(
        "calls `io.to(room).emit`). The peers are socketioxide with socketioxide-redis (Rust,\n",
    );
    o.push_str(
        "`bench/peers/socketioxide`) and Socket.IO 4 with `@socket.io/redis-adapter` (Node,\n",
    );
    o.push_str("`bench/peers/socketio`); \"best peer\" is whichever of the two did better on that metric. Each\n");
    o.push_str("payload carries a per-group sequence number and its publish time: clients record end-to-end\n");
    o.push_str("latency and count lost (never arrived) and duplicated deliveries; a delivery overtaken by a\n");
    o.push_str(
        "later publish of its group (paced publishes go out concurrently) is counted apart, as\n",
    );
    o.push_str("reordered, not as a loss. CPU seconds come from `/proc/<pid>/stat` for\n");
    o.push_str("every server process, Redis and the load generator itself (user and system time separately);\n");
    o.push_str("the machine has two cores shared by all of them, so the load generator's own CPU is shown.\n\n");
    o.push_str("- **fanout**: 1 000 clients in 100 groups of 10; paced phase 500 publishes/s (latency), then a\n");
    o.push_str("  closed loop with one sequential publisher per group (maximum throughput).\n");
    o.push_str(&format!(
        "- **publish latency at {rate_text}/s**: the same, paced at {rate_text} publishes/s.\n"
    ));
    o.push_str(&format!(
        "- **idle**: {idle_text} idle connections on one node, RSS per connection (this workplace caps\n  open files at 20 000 per process, a hard limit).\n"
    ));
    o.push_str("- **group-size**: 1 000 members in groups of 1, 10, 100, 1 000.\n");
    o.push_str("- **churn**: 200 clients joining and leaving groups; hubcast's Redis subscriptions checked after.\n");
    o.push_str("- **redis**: `redis-benchmark … PUBLISH` and one subscriber's receive rate: the ceiling.\n");
    o.push_str(&crate::scaling_report::method(runs));
    if let Some(fl) = floor {
        o.push_str(&format!(
            "- **floor**: the kernel's cost of one loopback TCP write of a delivery: {} socket pairs\n  (`TCP_NODELAY`), a reader thread draining the far ends, one thread writing a pre-built\n  {}-byte WebSocket frame (the size of hubcast's fan-out deliveries in this run) to them\n  round-robin. CPU is {}.\n",
            fl["pairs"], fl["frame_bytes"], fl["measured"].as_str().unwrap_or("the writer's")
        ));
    }
    o.push('\n');

    // Fan-out: the three systems, the floor, and hubcast against the best peer.
    o.push_str("## Fan-out (two nodes, Redis)\n\n");
    o.push_str("| | hubcast | socketioxide + socketioxide-redis | Socket.IO + redis-adapter | kernel floor | hubcast / best peer |\n|---|---|---|---|---|---|\n");
    let fl = |key: &str| floor.map_or(f64::NAN, |v| f(&v[key]));
    let c = |key: &'static str| move |v: &Value| f(&v["closed"][key]);
    let rows = [
        Row {
            name: "server CPU per delivery (nodes + Redis; floor: per write)",
            values: values(&fan, c("server_cpu_us_per_delivery")),
            floor: fl("cpu_us_per_write"),
            decimals: 2,
            unit: " µs",
            lower_is_better: true,
        },
        Row {
            name: "… of it user",
            values: values(&fan, c("server_user_us_per_delivery")),
            floor: fl("user_us_per_write"),
            decimals: 2,
            unit: " µs",
            lower_is_better: true,
        },
        Row {
            name: "… of it system",
            values: values(&fan, c("server_system_us_per_delivery")),
            floor: fl("system_us_per_write"),
            decimals: 2,
            unit: " µs",
            lower_is_better: true,
        },
        Row {
            name: "max deliveries/s (closed loop; floor: writes/s)",
            values: values(&fan, c("deliveries_per_sec")),
            floor: fl("writes_per_sec"),
            decimals: 0,
            unit: "",
            lower_is_better: false,
        },
        Row {
            name: "load generator CPU per delivery (closed loop)",
            values: values(&fan, c("loadgen_cpu_us_per_delivery")),
            floor: f64::NAN,
            decimals: 2,
            unit: " µs",
            lower_is_better: true,
        },
        Row {
            name: "paced e2e p50 (500/s)",
            values: values(&fan, |v| f(&v["paced"]["latency"]["p50_ms"])),
            floor: f64::NAN,
            decimals: 3,
            unit: " ms",
            lower_is_better: true,
        },
        Row {
            name: "paced e2e p99 (500/s)",
            values: values(&fan, |v| f(&v["paced"]["latency"]["p99_ms"])),
            floor: f64::NAN,
            decimals: 3,
            unit: " ms",
            lower_is_better: true,
        },
        Row {
            name: "paced e2e p99.9 (500/s)",
            values: values(&fan, |v| f(&v["paced"]["latency"]["p999_ms"])),
            floor: f64::NAN,
            decimals: 3,
            unit: " ms",
            lower_is_better: true,
        },
        Row {
            name: "paced publish HTTP p99 (500/s)",
            values: values(&fan, |v| f(&v["paced"]["publish_http"]["p99_ms"])),
            floor: f64::NAN,
            decimals: 3,
            unit: " ms",
            lower_is_better: true,
        },
        Row {
            name: &format!("publish HTTP p99 at {rate_text}/s"),
            values: values(&pl, |v| f(&v["result"]["paced"]["publish_http"]["p99_ms"])),
            floor: f64::NAN,
            decimals: 3,
            unit: " ms",
            lower_is_better: true,
        },
        Row {
            name: "closed-loop e2e p99",
            values: values(&fan, |v| f(&v["closed"]["latency"]["p99_ms"])),
            floor: f64::NAN,
            decimals: 3,
            unit: " ms",
            lower_is_better: true,
        },
        Row {
            name: "bytes on the wire per delivery",
            values: values(&fan, |v| f(&v["delivery_wire_bytes"])),
            floor: fl("frame_bytes"),
            decimals: 1,
            unit: "",
            lower_is_better: true,
        },
    ];
    for r in &rows {
        push_row(&mut o, r);
    }
    let lost = |r: &Option<&Value>| {
        r.map_or("—".into(), |v| {
            format!("{} / {} ({})", v["lost"], v["duplicated"], v["reordered"])
        })
    };
    o.push_str(&format!(
        "| lost / duplicated (overtaken by a later publish) | {} | {} | {} | {} | |\n",
        lost(&fan[0]),
        lost(&fan[1]),
        lost(&fan[2]),
        floor.map_or("—".into(), |v| format!("{} bytes lost", v["bytes_lost"]))
    ));
    let cpu =
        |r: &Option<&Value>| r.map_or("—".into(), |v| v["closed"]["cpu_seconds"].to_string());
    o.push_str(&format!(
        "| CPU seconds, closed loop | {} | {} | {} | | |\n\n",
        cpu(&fan[0]),
        cpu(&fan[1]),
        cpu(&fan[2])
    ));

    o.push_str(&format!(
        "## Publish latency at {rate_text} publishes/s\n\n| | hubcast | socketioxide | Socket.IO | hubcast / best peer |\n|---|---|---|---|---|\n"
    ));
    for (name, get) in [
        ("publish HTTP p50", "p50_ms"),
        ("publish HTTP p99", "p99_ms"),
    ] {
        let v = values(&pl, |r| f(&r["result"]["paced"]["publish_http"][get]));
        o.push_str(&format!(
            "| {name} | {} | {} | {} | {} |\n",
            num(v[0], 3, " ms"),
            num(v[1], 3, " ms"),
            num(v[2], 3, " ms"),
            ratio_cell(&v, true)
        ));
    }
    let v = values(&pl, |r| f(&r["result"]["paced"]["latency"]["p99_ms"]));
    o.push_str(&format!(
        "| e2e p99 | {} | {} | {} | {} |\n",
        num(v[0], 3, " ms"),
        num(v[1], 3, " ms"),
        num(v[2], 3, " ms"),
        ratio_cell(&v, true)
    ));
    o.push_str(&format!(
        "| lost / duplicated (overtaken by a later publish) | {} | {} | {} | |\n\n",
        pl[0].map_or("—".into(), |v| lost(&Some(&v["result"]))),
        pl[1].map_or("—".into(), |v| lost(&Some(&v["result"]))),
        pl[2].map_or("—".into(), |v| lost(&Some(&v["result"]))),
    ));

    o.push_str("## Idle connections (one node)\n\n| | hubcast | socketioxide | Socket.IO | hubcast / best peer |\n|---|---|---|---|---|\n");
    let idle_at = |n: u64| -> [Option<&Value>; 3] {
        SYSTEMS.map(|(name, _)| {
            runs.iter().find(|r| {
                r["scenario"] == "idle" && r["system"] == name && r["clients"].as_u64() == Some(n)
            })
        })
    };
    for &n in &idle_counts {
        let at = idle_at(n);
        let v = values(&at, |r| f(&r["rss_per_connection_kib"]));
        o.push_str(&format!(
            "| RSS per connection at {} | {} | {} | {} | {} |\n",
            group_digits(n),
            num(v[0], 2, " KiB"),
            num(v[1], 2, " KiB"),
            num(v[2], 2, " KiB"),
            ratio_cell(&v, true)
        ));
        let open =
            |r: &Option<&Value>| r.map_or("—".into(), |v| v["connected_at_end"].to_string());
        o.push_str(&format!(
            "| … connections still open when measured | {} | {} | {} | |\n",
            open(&at[0]),
            open(&at[1]),
            open(&at[2])
        ));
    }
    o.push('\n');

    o.push_str("## Group size (closed loop)\n\n| group size | hubcast deliveries/s | hubcast p99 | socketioxide deliveries/s | socketioxide p99 | Socket.IO deliveries/s | Socket.IO p99 |\n|---|---|---|---|---|---|---|\n");
    let gs = per_system(runs, "group-size");
    if let Some(h) = gs[0] {
        for (i, a) in h["rows"].as_array().into_iter().flatten().enumerate() {
            let mut line = format!("| {} ", a["group_size"]);
            for g in &gs {
                let row = g.map(|g| &g["rows"][i]);
                line.push_str(&format!(
                    "| {} | {} ",
                    num(row.map_or(f64::NAN, |r| f(&r["deliveries_per_sec"])), 0, ""),
                    num(
                        row.map_or(f64::NAN, |r| f(&r["latency"]["p99_ms"])),
                        3,
                        " ms"
                    ),
                ));
            }
            line.push_str("|\n");
            o.push_str(&line);
        }
    }
    o.push('\n');

    let ch = per_system(runs, "churn");
    if let Some(hc) = ch[0] {
        o.push_str(&format!(
            "## Churn\n\nhubcast: {:.0} joins+leaves/s, Redis subscriptions matching membership afterwards: {} mismatches.\n",
            f(&hc["joins_and_leaves_per_sec"]),
            hc["subscription_mismatches"]
        ));
        for (i, name) in [(1, "socketioxide"), (2, "Socket.IO")] {
            if let Some(c) = ch[i] {
                o.push_str(&format!(
                    "{name}: {:.0} joins+leaves/s.\n",
                    f(&c["joins_and_leaves_per_sec"])
                ));
            }
        }
        o.push('\n');
    }
    if let Some(r) = runs.iter().find(|r| r["scenario"] == "redis-baseline") {
        o.push_str(&format!("## Raw Redis on this machine\n\n`redis-benchmark PUBLISH`: {:.0} requests/s. One subscriber received {:.0} messages/s.\n\n",
            f(&r["publish_requests_per_sec"]), f(&r["subscriber_messages_per_sec"])));
    }
    if let Some(fl) = floor {
        o.push_str(&format!(
            "## Kernel floor\n\n{} writes of {} bytes to {} loopback sockets in {:.1} s: {:.0} writes/s, {:.3} µs of CPU per write\n({:.3} µs user, {:.3} µs system), {} bytes lost. Measured: {}.\n\n",
            fl["writes"], fl["frame_bytes"], fl["pairs"], f(&fl["secs"]), f(&fl["writes_per_sec"]),
            f(&fl["cpu_us_per_write"]), f(&fl["user_us_per_write"]), f(&fl["system_us_per_write"]),
            fl["bytes_lost"], fl["measured"].as_str().unwrap_or("")
        ));
    }

    o.push_str(&crate::scaling_report::section(runs));
    o.push_str(&targets(runs, &fan, &pl, floor, &idle_counts, &rate_text));
    o.push_str(&std::fs::read_to_string("bench/changes.md").unwrap_or_default());
    o
}

/// The targets table, every verdict computed from this run's numbers.
fn targets(
    runs: &[Value],
    fan: &[Option<&Value>; 3],
    pl: &[Option<&Value>; 3],
    floor: Option<&Value>,
    idle_counts: &[u64],
    rate_text: &str,
) -> String {
    let mut o = String::from("## Targets\n\n| target | measured | |\n|---|---|---|\n");
    let not_measured = |o: &mut String, target: &str| {
        o.push_str(&format!("| {target} | not measured in this run | — |\n"));
    };

    let cpu = values(fan, |v| f(&v["closed"]["server_cpu_us_per_delivery"]));
    let t = "server CPU per delivery ≤ 0.6× the best peer's";
    match best_peer(&cpu, true) {
        Some((best, who)) if cpu[0].is_finite() => {
            let r = cpu[0] / best;
            o.push_str(&format!(
                "| {t} | {:.2} µs = {r:.2}× {who}'s {best:.2} µs | {} |\n",
                cpu[0],
                verdict(r <= 0.6)
            ));
        }
        _ => not_measured(&mut o, t),
    }
    let t = "server CPU per delivery ≤ 2× the kernel floor";
    match floor.map(|fl| f(&fl["cpu_us_per_write"])) {
        Some(fl) if fl.is_finite() && cpu[0].is_finite() && fl > 0.0 => {
            let r = cpu[0] / fl;
            o.push_str(&format!(
                "| {t} | {:.2} µs = {r:.2}× the floor's {fl:.2} µs per write | {} |\n",
                cpu[0],
                verdict(r <= 2.0)
            ));
        }
        _ => not_measured(&mut o, t),
    }
    let thr = values(fan, |v| f(&v["closed"]["deliveries_per_sec"]));
    let t = "max deliveries/s ≥ 1.5× the best peer's";
    match best_peer(&thr, false) {
        Some((best, who)) if thr[0].is_finite() => {
            let r = thr[0] / best;
            o.push_str(&format!(
                "| {t} | {:.0} = {r:.2}× {who}'s {best:.0} | {} |\n",
                thr[0],
                verdict(r >= 1.5)
            ));
        }
        _ => not_measured(&mut o, t),
    }
    let p99 = values(fan, |v| f(&v["paced"]["latency"]["p99_ms"]));
    let t = "paced e2e p99 ≤ 1 ms and below every peer's (500/s, groups of 10)";
    if p99[0].is_finite() {
        let peers: Vec<String> = PEERS
            .iter()
            .map(|&i| format!("{} {}", SYSTEMS[i].0, num(p99[i], 3, " ms")))
            .collect();
        let below = PEERS.iter().all(|&i| p99[i].is_finite() && p99[0] < p99[i]);
        o.push_str(&format!(
            "| {t} | {:.3} ms ({}) | {} |\n",
            p99[0],
            peers.join(", "),
            verdict(p99[0] <= 1.0 && below)
        ));
    } else {
        not_measured(&mut o, t);
    }
    for &n in idle_counts {
        let t = format!("RSS per idle connection ≤ 4 KiB at {}", group_digits(n));
        match runs.iter().find(|r| {
            r["scenario"] == "idle" && r["system"] == "hubcast" && r["clients"].as_u64() == Some(n)
        }) {
            Some(v) => {
                let kib = f(&v["rss_per_connection_kib"]);
                let all_open = v["connected_at_end"].as_u64() == Some(n);
                o.push_str(&format!(
                    "| {t} | {kib:.2} KiB{} | {} |\n",
                    if all_open {
                        ""
                    } else {
                        " (not every connection stayed open)"
                    },
                    verdict(kib <= 4.0 && all_open)
                ));
            }
            None => not_measured(&mut o, &t),
        }
    }
    let t = format!("publish HTTP p99 ≤ 1 ms at {rate_text}/s");
    match pl[0] {
        Some(v) => {
            let p = f(&v["result"]["paced"]["publish_http"]["p99_ms"]);
            o.push_str(&format!("| {t} | {p:.3} ms | {} |\n", verdict(p <= 1.0)));
        }
        None => not_measured(&mut o, &t),
    }
    if let Some(h) = fan[0] {
        let cmds = f(&h["closed"]["redis_publish_path_commands_per_publish"]);
        o.push_str(&format!("| one Redis command per publish | {cmds:.3} script calls per publish ({:.3} commands of all kinds, a script's inner commands included) | {} |\n",
            f(&h["closed"]["redis_commands_per_publish"]), verdict((cmds - 1.0).abs() < 0.01)));
    }
    // Loss counts over every hubcast run that delivers (fan-out, publish latency, group sizes).
    let mut lost = 0u64;
    let mut dups = 0u64;
    let mut seen = false;
    for r in runs.iter().filter(|r| r["system"] == "hubcast") {
        let mut add = |v: &Value| {
            if let (Some(l), Some(d)) = (v["lost"].as_u64(), v["duplicated"].as_u64()) {
                lost += l;
                dups += d;
                seen = true;
            }
        };
        match r["scenario"].as_str() {
            Some("fanout") => add(r),
            Some("publish-latency") => add(&r["result"]),
            Some("group-size") => r["rows"].as_array().into_iter().flatten().for_each(add),
            _ => {}
        }
    }
    if seen {
        o.push_str(&format!(
            "| no loss, no duplicates (every hubcast run) | lost {lost} duplicated {dups} | {} |\n",
            verdict(lost == 0 && dups == 0)
        ));
    }
    o.push('\n');
    o
}

/// 19000 → "19 000", as the report writes counts.
pub(crate) fn group_digits(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fanout(system: &str, cpu: f64, thr: f64, p99: f64) -> Value {
        json!({"scenario": "fanout", "system": system, "lost": 0, "duplicated": 0,
            "delivery_wire_bytes": 80.0,
            "paced": {"latency": {"p50_ms": p99 / 2.0, "p99_ms": p99, "p999_ms": p99 * 2.0},
                      "publish_http": {"p99_ms": 0.5}},
            "closed": {"server_cpu_us_per_delivery": cpu, "server_user_us_per_delivery": cpu / 2.0,
                       "server_system_us_per_delivery": cpu / 2.0, "deliveries_per_sec": thr,
                       "loadgen_cpu_us_per_delivery": 3.0, "latency": {"p99_ms": 10.0},
                       "cpu_seconds": {}, "redis_publish_path_commands_per_publish": 1.0,
                       "redis_commands_per_publish": 1.0}})
    }

    #[test]
    fn verdicts_follow_the_numbers() {
        let runs = vec![
            fanout("hubcast", 5.0, 150_000.0, 0.8),
            fanout("socketioxide", 10.0, 90_000.0, 1.2),
            fanout("socketio", 15.0, 60_000.0, 2.0),
            json!({"scenario": "idle", "system": "hubcast", "clients": 10000, "connected_at_end": 10000, "rss_per_connection_kib": 3.5}),
            json!({"scenario": "idle", "system": "hubcast", "clients": 19000, "connected_at_end": 19000, "rss_per_connection_kib": 4.5}),
            json!({"scenario": "publish-latency", "system": "hubcast", "rate": 5000,
                   "result": {"lost": 0, "duplicated": 0, "paced": {"publish_http": {"p50_ms": 0.3, "p99_ms": 1.5}, "latency": {"p99_ms": 1.0}}}}),
            json!({"scenario": "floor", "pairs": 1000, "frame_bytes": 80, "cpu_us_per_write": 2.0,
                   "user_us_per_write": 0.2, "system_us_per_write": 1.8, "writes_per_sec": 400000.0,
                   "bytes_lost": 0, "writes": 1, "secs": 1.0, "measured": "the writer"}),
        ];
        let md = markdown(&runs, true);
        let line = |needle: &str| {
            md.lines()
                .find(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("no line with {needle}"))
                .to_owned()
        };
        // 5 / 10 = 0.5 ≤ 0.6; 5 / 2 = 2.5 > 2; 150 000 / 90 000 = 1.67 ≥ 1.5.
        assert!(line("≤ 0.6× the best peer").ends_with("| met |"));
        assert!(line("≤ 2× the kernel floor").contains("**not met**"));
        assert!(line("≥ 1.5× the best peer").ends_with("| met |"));
        assert!(line("paced e2e p99 ≤ 1 ms").ends_with("| met |"));
        assert!(line("≤ 4 KiB at 10 000").ends_with("| met |"));
        assert!(line("≤ 4 KiB at 19 000").contains("**not met**"));
        assert!(line("publish HTTP p99 ≤ 1 ms at 5 000/s").contains("**not met**"));
        assert!(line("server CPU per delivery (nodes").contains("| 0.50× |"));
        assert!(line("max deliveries/s (closed").contains("| 1.67× |"));
    }

    #[test]
    fn digits_are_grouped() {
        assert_eq!(group_digits(5000), "5 000");
        assert_eq!(group_digits(19000), "19 000");
        assert_eq!(group_digits(100), "100");
        assert_eq!(group_digits(1_000_000), "1 000 000");
    }
}
