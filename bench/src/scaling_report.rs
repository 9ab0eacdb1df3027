//! The "Redis Cluster scaling" section of BENCHMARKS.md, from a `redis-scaling` result:
//! hubcast's fan-out on one server and on the cluster, each Redis process's share, classic
//! PUBLISH against SPUBLISH, and (from `paper`) the shards 1 M deliveries/s needs.

use serde_json::Value;

use crate::report::{f, group_digits, num, verdict};

pub(crate) fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

pub(crate) fn shards(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], |a| a.as_slice())
}

fn bus(s: &Value, kinds: &[&str]) -> u64 {
    kinds.iter().map(|k| u(&s["bus"][k])).sum()
}

/// Script calls on a shard: each is one publish.
pub(crate) fn scripts(s: &Value) -> u64 {
    u(&s["calls"]["evalsha"]) + u(&s["calls"]["eval"]) + u(&s["calls"]["fcall"])
}

/// µs of CPU per unit, `—` for no units.
pub(crate) fn per(secs: f64, units: f64) -> f64 {
    if units > 0.0 {
        secs * 1e6 / units
    } else {
        f64::NAN
    }
}

/// Redis CPU seconds of a fan-out's closed loop, over all its Redis processes.
pub(crate) fn redis_cpu(run: &Value) -> f64 {
    shards(&run["closed"]["redis_shards"])
        .iter()
        .map(|s| f(&s["cpu_seconds"]))
        .sum()
}

/// The fan-out runs of a `redis-scaling` result that are there, with their labels.
fn fanouts(r: &Value) -> Vec<(String, &Value)> {
    let masters = u(&r["masters"]);
    [
        ("standalone".to_owned(), &r["standalone"]),
        ("1-master cluster".to_owned(), &r["cluster_one"]),
        (format!("{masters}-master cluster"), &r["cluster"]),
    ]
    .into_iter()
    .filter(|(_, v)| v.is_object())
    .collect()
}

pub fn table(v: &Value) {
    for (key, r) in fanouts(v) {
        let c = &r["closed"];
        eprintln!(
            "redis-scaling {key}: {:.0} deliveries/s, Redis CPU {:.2} µs/publish",
            f(&c["deliveries_per_sec"]),
            per(redis_cpu(r), f(&c["published"]))
        );
        for s in shards(&c["redis_shards"]) {
            eprintln!(
                "  {} cpu {:.3} s  calls {}  bus {}",
                s["name"].as_str().unwrap_or(""),
                f(&s["cpu_seconds"]),
                s["calls"],
                s["bus"]
            );
        }
    }
    for key in ["classic", "sharded"] {
        let p = &v["raw_publish"][key];
        eprintln!(
            "raw {}: {} of {} received",
            p["command"].as_str().unwrap_or(""),
            p["received"],
            p["messages"]
        );
        for s in shards(&p["shards"]) {
            eprintln!(
                "  {} cpu {:.3} s  bus {}",
                s["name"].as_str().unwrap_or(""),
                f(&s["cpu_seconds"]),
                s["bus"]
            );
        }
    }
}

/// The method bullet, when the run has a `redis-scaling` result.
pub fn method(runs: &[Value]) -> String {
    let Some(r) = runs.iter().find(|r| r["scenario"] == "redis-scaling") else {
        return String::new();
    };
    format!(
        "- **redis-scaling**: hubcast's fan-out (the same clients, groups, nodes and rate) on one\n  Redis server, on a one-master Redis Cluster and on a {}-master one, without replicas; then\n  {} raw `PUBLISH` against as many `SPUBLISH` on such a cluster; see \"Redis Cluster scaling\".\n",
        r["masters"],
        group_digits(u(&r["raw_publish"]["messages"]))
    )
}

/// The section, or nothing when the run has no `redis-scaling` result.
pub fn section(runs: &[Value]) -> String {
    let Some(r) = runs.iter().find(|r| r["scenario"] == "redis-scaling") else {
        return String::new();
    };
    let (st, cl) = (&r["standalone"], &r["cluster"]);
    let masters = u(&r["masters"]);
    let runs = fanouts(r);
    let mut o = String::from("## Redis Cluster scaling\n\n");
    o.push_str(if r["merged"] == true {
        "From a separate `hubcast-bench redis-scaling` run, merged into `BENCHMARKS.json` beside the\nfull run's results, which it leaves as they were (`--merge BENCHMARKS.md`, or `report --add`\nof its saved JSON line). The machine's speed drifts between sittings: compare this section's\nnumbers with each other, not with the tables above.\n\n"
    } else {
        "Measured in the same run as the tables above (`hubcast-bench all` runs `redis-scaling`).\n\n"
    });
    o.push_str(&format!(
        "hubcast's fan-out ({} clients in {} groups, {} nodes, paced at {}/s for {} s, then a {} s\nclosed loop) on one Redis server, on a Redis Cluster of one master owning every slot (cluster\nmode at the standalone server's load), then on a Redis Cluster of {masters} masters\n(`redis+cluster://` with the masters as seeds). The clusters have no replicas: on two cores a\nreplica per master would double the Redis processes competing with the nodes and the load\ngenerator for CPU, and replication is not what this measures. Each group's channel,\nposition and history carry the group as hash tag, so a publish is one `EVALSHA` on the shard\nowning its slot, which runs the `SPUBLISH` there. CPU time is each Redis process's\nutime + stime from `/proc/<pid>/stat`; command counts are `INFO commandstats` deltas\n(commands a script runs are counted too; the benchmark's own `INFO` and `CLUSTER INFO` are\nleft out); bus messages are `CLUSTER INFO` `cluster_stats_messages_*` deltas; \"other\nprocesses\" is the machine's user + system time (`/proc/stat`) less that of the processes\nmeasured: other work sharing the two cores.\n\n",
        group_digits(u(&cl["clients"])),
        cl["groups"],
        cl["nodes"],
        cl["paced"]["rate"],
        cl["paced"]["secs"],
        cl["closed"]["secs"]
    ));
    o.push_str(&fanout_table(&runs));
    o.push_str(&shard_table(&runs));
    o.push_str(&raw_table(&r["raw_publish"]));
    o.push_str(&checks(cl, &r["raw_publish"]));
    o.push_str(&crate::paper::shards_needed(
        st,
        &r["cluster_one"],
        cl,
        &r["raw_publish"],
    ));
    o
}

/// A number read from a fan-out result.
type Getter = fn(&Value) -> f64;

/// The fan-out runs side by side, the last over the first.
fn fanout_table(runs: &[(String, &Value)]) -> String {
    let heads: Vec<&str> = runs.iter().map(|(l, _)| l.as_str()).collect();
    let mut o = format!(
        "| | {} | {} / {} |\n|---|{}---|\n",
        heads.join(" | "),
        heads.last().unwrap_or(&""),
        heads.first().unwrap_or(&""),
        "---|".repeat(heads.len())
    );
    let rate = runs[0].1["paced"]["rate"].to_string();
    let rows: Vec<(String, Getter, usize, &str)> = vec![
        (
            "max deliveries/s (closed loop)".into(),
            |v: &Value| f(&v["closed"]["deliveries_per_sec"]),
            0,
            "",
        ),
        (
            "publishes/s (closed loop)".into(),
            |v: &Value| f(&v["closed"]["publishes_per_sec"]),
            0,
            "",
        ),
        (
            format!("paced e2e p50 ({rate}/s)"),
            |v: &Value| f(&v["paced"]["latency"]["p50_ms"]),
            3,
            " ms",
        ),
        (
            format!("paced e2e p99 ({rate}/s)"),
            |v: &Value| f(&v["paced"]["latency"]["p99_ms"]),
            3,
            " ms",
        ),
        (
            format!("paced publish HTTP p99 ({rate}/s)"),
            |v: &Value| f(&v["paced"]["publish_http"]["p99_ms"]),
            3,
            " ms",
        ),
        (
            "closed-loop publish HTTP p99".into(),
            |v: &Value| f(&v["closed"]["publish_http"]["p99_ms"]),
            3,
            " ms",
        ),
        (
            "server CPU per delivery (nodes + every Redis process)".into(),
            |v: &Value| f(&v["closed"]["server_cpu_us_per_delivery"]),
            2,
            " µs",
        ),
        (
            "Redis CPU, closed loop, all Redis processes".into(),
            redis_cpu,
            2,
            " s",
        ),
        (
            "Redis CPU per publish, all Redis processes".into(),
            |v: &Value| per(redis_cpu(v), f(&v["closed"]["published"])),
            2,
            " µs",
        ),
        (
            "Redis CPU per delivery, all Redis processes".into(),
            |v: &Value| per(redis_cpu(v), f(&v["closed"]["delivered"])),
            3,
            " µs",
        ),
        (
            "CPU of other processes on the machine, closed loop".into(),
            |v: &Value| f(&v["closed"]["other_processes_cpu_seconds"]),
            2,
            " s",
        ),
        (
            "Redis commands per publish (a script's inner ones included)".into(),
            |v: &Value| f(&v["closed"]["redis_commands_per_publish"]),
            2,
            "",
        ),
        (
            "script calls per publish (summed over the shards)".into(),
            |v: &Value| f(&v["closed"]["redis_publish_path_commands_per_publish"]),
            3,
            "",
        ),
    ];
    for (name, get, d, unit) in &rows {
        let v: Vec<f64> = runs.iter().map(|(_, r)| get(r)).collect();
        let (a, b) = (v[0], v[v.len() - 1]);
        let ratio = if a.is_finite() && b.is_finite() && a != 0.0 {
            format!("{:.2}×", b / a)
        } else {
            "—".into()
        };
        let cells: Vec<String> = v.iter().map(|x| num(*x, *d, unit)).collect();
        o.push_str(&format!("| {name} | {} | {ratio} |\n", cells.join(" | ")));
    }
    let lost = |v: &Value| {
        format!(
            "{} / {} ({}), {} failed publishes",
            v["lost"], v["duplicated"], v["reordered"], v["failed_publishes"]
        )
    };
    let cells: Vec<String> = runs.iter().map(|(_, r)| lost(r)).collect();
    o.push_str(&format!(
        "| lost / duplicated (overtaken by a later publish) | {} | |\n\n",
        cells.join(" | ")
    ));
    o
}

/// One row per Redis process of each run, closed loop; a total for a cluster's masters.
fn shard_table(runs: &[(String, &Value)]) -> String {
    let mut o = String::from("Each Redis process in the closed loop (subscribe commands: from Redis's start until the clients\nhad joined; busy: CPU seconds per second of the loop, per process; bus: publish + publishshard\nmessages sent / received; reads / writes: the read and write events Redis handled, `INFO stats`
`total_reads_processed` and `total_writes_processed`, each one system call):\n\n| run | process | groups owned | script calls (≈ publishes) | share | SPUBLISH | PUBLISH | subscribe commands (SSUBSCRIBE / SUBSCRIBE) | CPU | busy | CPU per publish | CPU per delivery | reads / writes per publish | bus messages |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (label, run) in runs {
        let c = &run["closed"];
        let secs = f(&c["secs"]);
        let per_publish = f(&c["delivered"]) / f(&c["published"]).max(1.0);
        let list = shards(&c["redis_shards"]);
        let setup = shards(&run["redis_setup_shards"]);
        let total_scripts: u64 = list.iter().map(scripts).sum();
        let mut row = |name: &str, s: &[&Value], setup: &[&Value], owned: u64| {
            let sum = |g: &dyn Fn(&Value) -> u64| s.iter().map(|v| g(v)).sum::<u64>();
            let calls = sum(&scripts);
            let cpu: f64 = s.iter().map(|v| f(&v["cpu_seconds"])).sum();
            let subs = setup
                .iter()
                .map(|v| u(&v["calls"]["ssubscribe"]) + u(&v["calls"]["subscribe"]))
                .sum::<u64>();
            o.push_str(&format!(
                "| {label} | {name} | {owned} | {calls} | {} | {} | {} | {subs} | {:.2} s | {} | {} | {} | {:.2} / {:.2} | {} / {} |\n",
                num(calls as f64 / total_scripts.max(1) as f64 * 100.0, 1, " %"),
                sum(&|v| u(&v["calls"]["spublish"])),
                sum(&|v| u(&v["calls"]["publish"])),
                cpu,
                num(cpu / secs / s.len() as f64 * 100.0, 0, " %"),
                num(per(cpu, calls as f64), 2, " µs"),
                num(per(cpu, calls as f64 * per_publish), 3, " µs"),
                sum(&|v| u(&v["io"]["reads"])) as f64 / calls.max(1) as f64,
                sum(&|v| u(&v["io"]["writes"])) as f64 / calls.max(1) as f64,
                sum(&|v| bus(v, &["publish_sent", "publishshard_sent"])),
                sum(&|v| bus(v, &["publish_received", "publishshard_received"])),
            ));
        };
        let owned = |i: usize| u(&run["redis_groups_per_shard"][i]);
        for (i, s) in list.iter().enumerate() {
            let name = s["name"].as_str().unwrap_or("?");
            row(
                name,
                &[s],
                &setup.get(i).into_iter().collect::<Vec<_>>(),
                owned(i),
            );
        }
        if list.len() > 1 {
            let all: Vec<&Value> = list.iter().collect();
            let all_setup: Vec<&Value> = setup.iter().collect();
            row("all masters", &all, &all_setup, u(&run["groups"]));
        }
    }
    o.push_str("\nEvery command each process counted in the closed loop:\n\n");
    for (label, run) in runs {
        for s in shards(&run["closed"]["redis_shards"]) {
            let cmds: Vec<String> = s["calls"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            o.push_str(&format!(
                "- {label} {}: {}\n",
                s["name"].as_str().unwrap_or("?"),
                cmds.join(", ")
            ));
        }
    }
    o.push('\n');
    o
}

/// Classic PUBLISH against SPUBLISH: per master, CPU and bus messages per message.
fn raw_table(raw: &Value) -> String {
    let (c, s) = (&raw["classic"], &raw["sharded"]);
    let n = f(&raw["messages"]);
    let mut o = format!(
        "{} raw messages each, pipelined from one connection, on a fresh {}-master cluster: `PUBLISH`\non master 0 with one `SUBSCRIBE`r on master 1, then `SPUBLISH` on master 0 (to a channel\nit owns) with one `SSUBSCRIBE`r there. Received: {} of {} (PUBLISH), {} of {} (SPUBLISH).\n\n| master | PUBLISH: role | CPU per message | bus messages sent / received per message | SPUBLISH: role | CPU per message | bus messages sent / received per message |\n|---|---|---|---|---|---|---|\n",
        group_digits(n as u64),
        raw["masters"],
        group_digits(u(&c["received"])),
        group_digits(u(&c["messages"])),
        group_digits(u(&s["received"])),
        group_digits(u(&s["messages"]))
    );
    let role = |p: &Value, port: &Value| {
        let (publ, sub) = (&p["publisher_port"], &p["subscriber_port"]);
        match (port == publ, port == sub) {
            (true, true) => "publisher and subscriber",
            (true, false) => "publisher",
            (false, true) => "subscriber",
            _ => "neither",
        }
    };
    let cells = |p: &Value, x: &Value| {
        format!(
            "{} | {} | {:.2} / {:.2}",
            role(p, &x["port"]),
            num(per(f(&x["cpu_seconds"]), n), 2, " µs"),
            bus(x, &["publish_sent", "publishshard_sent"]) as f64 / n,
            bus(x, &["publish_received", "publishshard_received"]) as f64 / n
        )
    };
    let (cs, ss) = (shards(&c["shards"]), shards(&s["shards"]));
    for (i, (a, b)) in cs.iter().zip(ss).enumerate() {
        o.push_str(&format!("| {i} | {} | {} |\n", cells(c, a), cells(s, b)));
    }
    let total = |l: &[Value]| {
        let cpu: f64 = l.iter().map(|x| f(&x["cpu_seconds"])).sum();
        let sent: u64 = l
            .iter()
            .map(|x| bus(x, &["publish_sent", "publishshard_sent"]))
            .sum();
        let recv: u64 = l
            .iter()
            .map(|x| bus(x, &["publish_received", "publishshard_received"]))
            .sum();
        format!(
            "{} | {:.2} / {:.2}",
            num(per(cpu, n), 2, " µs"),
            sent as f64 / n,
            recv as f64 / n
        )
    };
    o.push_str(&format!("| all | | {} | | {} |\n\n", total(cs), total(ss)));
    o
}

/// Verdicts computed from the run.
fn checks(cl: &Value, raw: &Value) -> String {
    let c = &cl["closed"];
    let list = shards(&c["redis_shards"]);
    let published = u(&c["published"]);
    let scripts_sum: u64 = list.iter().map(scripts).sum();
    let spublish: u64 = list.iter().map(|s| u(&s["calls"]["spublish"])).sum();
    let publish: u64 = list.iter().map(|s| u(&s["calls"]["publish"])).sum();
    let bus_pub: u64 = list
        .iter()
        .map(|s| bus(s, &["publish_sent", "publishshard_sent"]))
        .sum();
    let mut o = String::from("| check (cluster run, closed loop) | measured | |\n|---|---|---|\n");
    let near = |a: u64, b: u64| (a as f64 - b as f64).abs() <= 0.01 * b.max(1) as f64;
    o.push_str(&format!(
        "| each publish is one script call on one shard: script calls summed over the shards = publishes | {scripts_sum} script calls for {published} publishes | {} |\n",
        verdict(near(scripts_sum, published))
    ));
    o.push_str(&format!(
        "| fan-out is sharded pub/sub only: one SPUBLISH per script call (within 1 %), no PUBLISH, no pub/sub message on the cluster bus | {spublish} SPUBLISH, {publish} PUBLISH, {bus_pub} bus pub/sub messages | {} |\n",
        verdict(near(spublish, scripts_sum) && publish == 0 && bus_pub == 0)
    ));
    let groups = f(&cl["groups"]).max(1.0);
    let shares: Vec<String> = list
        .iter()
        .enumerate()
        .map(|(i, s)| {
            format!(
                "{} {:.1} % of publishes, {:.0} % of groups",
                s["name"].as_str().unwrap_or("?"),
                scripts(s) as f64 / scripts_sum.max(1) as f64 * 100.0,
                f(&cl["redis_groups_per_shard"][i]) / groups * 100.0
            )
        })
        .collect();
    let worst = list
        .iter()
        .enumerate()
        .map(|(i, s)| {
            (scripts(s) as f64 / scripts_sum.max(1) as f64
                - f(&cl["redis_groups_per_shard"][i]) / groups)
                .abs()
        })
        .fold(0.0, f64::max);
    o.push_str(&format!(
        "| each shard's share of publishes follows its share of groups (within 5 points; 1/{} each if the slots split evenly) | {} | {} |\n",
        list.len(),
        shares.join("; "),
        verdict(worst <= 0.05)
    ));
    let n = f(&raw["messages"]);
    let (cs, ss) = (
        shards(&raw["classic"]["shards"]),
        shards(&raw["sharded"]["shards"]),
    );
    let recv_min = cs
        .iter()
        .skip(1)
        .map(|s| bus(s, &["publish_received"]) as f64 / n)
        .fold(f64::INFINITY, f64::min);
    let s_bus: u64 = ss
        .iter()
        .map(|s| bus(s, &["publish_sent", "publishshard_sent"]))
        .sum();
    o.push_str(&format!(
        "| classic PUBLISH is copied to every other master over the bus; SPUBLISH to none (no replicas) | PUBLISH: ≥ {recv_min:.2} bus messages received per message on each other master; SPUBLISH: {s_bus} bus messages | {} |\n\n",
        verdict(recv_min >= 0.99 && s_bus == 0)
    ));
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn shard(name: &str, port: u16, cpu: f64, scripts: u64, publish: &str) -> Value {
        json!({"name": name, "port": port, "cpu_seconds": cpu,
               "calls": {"evalsha": scripts, publish: scripts, "xadd": scripts},
               "bus": {"ping_sent": 3}})
    }

    fn fanout(shards: Vec<Value>, owned: Vec<u64>) -> Value {
        let published: u64 = shards.iter().map(scripts).sum();
        json!({"clients": 1000, "groups": 100, "nodes": 2, "lost": 0, "duplicated": 0,
               "reordered": 0, "failed_publishes": 0, "redis_groups_per_shard": owned,
               "redis_setup_shards": [],
               "paced": {"rate": 500, "secs": 10, "latency": {"p50_ms": 0.5, "p99_ms": 3.0},
                         "publish_http": {"p99_ms": 3.0}},
               "closed": {"secs": 10, "published": published, "delivered": published * 10,
                          "deliveries_per_sec": published as f64, "publishes_per_sec": 1.0,
                          "latency": {"p99_ms": 40.0}, "publish_http": {"p99_ms": 30.0},
                          "server_cpu_us_per_delivery": 17.0,
                          "redis_publish_path_commands_per_publish": 1.0,
                          "cpu_seconds": {"node0": 5.0, "node1": 5.0, "loadgen": 8.0},
                          "redis_shards": shards}})
    }

    fn raw(cmd: &str, cpu: [f64; 3], sent: u64, recv: u64) -> Value {
        let s = |i: usize, port: u16| {
            json!({"name": format!("redis{i}"), "port": port, "cpu_seconds": cpu[i],
                   "bus": if i == 0 { json!({"publish_sent": sent}) } else { json!({"publish_received": recv}) }})
        };
        json!({"command": cmd, "messages": 100000, "received": 100000,
               "publisher_port": 1, "subscriber_port": if cmd == "PUBLISH" { 2 } else { 1 },
               "shards": [s(0, 1), s(1, 2), s(2, 3)]})
    }

    #[test]
    fn section_computes_shards_and_verdicts() {
        let run = json!({"scenario": "redis-scaling", "masters": 3,
            "standalone": fanout(vec![shard("redis", 1, 1.5, 60000, "publish")], vec![100]),
            // 60 000 publishes in 1.2 s: 20 µs each, 12 % busy; 100 000/s × 20 µs = 2 cores → 3.
            "cluster_one": fanout(vec![shard("redis0", 1, 1.2, 60000, "spublish")], vec![100]),
            // 20 000 publishes in 0.6 s on redis0: 30 µs each, the most expensive shard.
            "cluster": fanout(vec![shard("redis0", 1, 0.6, 20000, "spublish"),
                                   shard("redis1", 2, 0.5, 20000, "spublish"),
                                   shard("redis2", 3, 0.5, 20000, "spublish")], vec![33, 33, 34]),
            "raw_publish": {"masters": 3, "messages": 100000,
                "classic": raw("PUBLISH", [0.6, 0.25, 0.2], 200000, 100000),
                "sharded": raw("SPUBLISH", [0.05, 0.0, 0.0], 0, 0)}});
        let md = section(&[run]);
        let line = |needle: &str| {
            md.lines()
                .find(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("no line with {needle}"))
                .to_owned()
        };
        assert!(line("one script call on one shard").ends_with("| met |"));
        assert!(line("sharded pub/sub only").ends_with("| met |"));
        assert!(line("share of groups").ends_with("| met |"));
        assert!(line("copied to every other master").ends_with("| met |"));
        // 100 000 publishes/s × 30 µs = 3 cores; 0.7 / 30 µs = 23 333/s per shard → 5.
        assert!(md.contains("**30.00 µs of CPU per publish**"));
        assert!(md.contains("**23 333 publishes/s**"));
        assert!(md.contains("= 3.00 cores of Redis"));
        assert!(md.contains("**5 shards**"));
        // Classic: 2 µs per message on the idle master = 0.2 cores each; 3 / 0.5 → 6.
        assert!(md.contains("= 0.20 cores on every shard"));
        assert!(md.contains("→ 6 shards"));
        assert!(md.contains("Measured in the same run"));
        assert!(md.contains("**3 shards** at"));
        assert!(md.contains("| 1-master cluster |"));
    }

    #[test]
    fn no_section_without_a_run() {
        assert_eq!(section(&[json!({"scenario": "fanout"})]), "");
        assert_eq!(method(&[]), "");
    }
}
