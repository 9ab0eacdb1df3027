//! On paper: how many Redis Cluster shards 1 M deliveries/s needs, from the CPU per
//! publish the `redis-scaling` run measured on its most expensive shard, and what classic
//! PUBLISH would add on every shard.

use serde_json::Value;

use crate::report::{f, group_digits, num};
use crate::scaling_report::{per, redis_cpu, scripts, shards, u};

/// Deliveries per second the paper estimate is for.
const TARGET_DELIVERIES: f64 = 1_000_000.0;
/// The share of one core a shard may use (Redis runs commands on one thread).
const HEADROOM: f64 = 0.7;

/// Rounded up, with what floating point adds to an exact quotient taken off first.
fn ceil(x: f64) -> f64 {
    (x - 1e-9).ceil()
}

/// A Redis's CPU per publish in a fan-out's closed loop and how busy it was (CPU seconds
/// per second, over its processes).
fn cost(run: &Value) -> (f64, f64) {
    let c = &run["closed"];
    let n = shards(&c["redis_shards"]).len().max(1) as f64;
    (
        per(redis_cpu(run), f(&c["published"])),
        redis_cpu(run) / f(&c["secs"]) / n,
    )
}

/// Read and write events per publish, over a fan-out's Redis processes.
fn io(run: &Value) -> (f64, f64) {
    let list = shards(&run["closed"]["redis_shards"]);
    let calls = list.iter().map(scripts).sum::<u64>().max(1) as f64;
    let sum = |k: &str| list.iter().map(|s| u(&s["io"][k])).sum::<u64>() as f64;
    (sum("reads") / calls, sum("writes") / calls)
}

/// What the one-master cluster, carrying the whole load on one shard, says about the
/// cost at a higher load per shard.
fn busier(st: &Value, one: &Value, cl: &Value, c_pub: f64, load: f64, publishes: f64) -> String {
    let (c_one, load_one) = cost(one);
    let ((r1, w1), (rn, wn)) = (io(one), io(cl));
    let (c_st, load_st) = cost(st);
    if !c_one.is_finite() {
        return String::new();
    }
    let shards_one = ceil(publishes * c_one / 1e6 / HEADROOM);
    let trend = if c_one < c_pub && load_one > load {
        format!(
            "A shard's cost per publish falls as its load rises: the one-master cluster handled\n\
             {r1:.2} reads and {w1:.2} writes per publish, the {masters}-master shards {rn:.2} and {wn:.2}{why}.\n\
             At {:.0} % busy it would be lower still: **{shards_one:.0} shards** at the one-master\n\
             cluster's cost, fewer at a busier shard's; the count above is the cautious one.",
            HEADROOM * 100.0,
            masters = shards(&cl["closed"]["redis_shards"]).len(),
            why = if r1 < rn && w1 < wn {
                "\n(a busier shard finds more commands per read and sends more replies and messages per\nwrite, and each of those is a system call)"
            } else {
                ""
            }
        )
    } else {
        format!(
            "The busier shard did not spend less per publish, so load does not explain the cost;\n\
             at its cost the count is {shards_one:.0} shards."
        )
    };
    let cmds = |v: &Value| f(&v["closed"]["redis_commands_per_publish"]);
    format!(
        "The one-master cluster carried the whole load on one shard, {:.0} % busy: {c_one:.2} µs per\n\
         publish, against {c_pub:.2} µs on a {masters}-master shard {:.0} % busy. At about the same load the\n\
         standalone server ({:.0} % busy) spent {c_st:.2} µs: cluster mode itself added {:.2} µs per\n\
         publish ({:.2} Redis commands per publish against {:.2}). {trend}\n\n",
        load_one * 100.0,
        load * 100.0,
        load_st * 100.0,
        c_one - c_st,
        cmds(one),
        cmds(st),
        masters = shards(&cl["closed"]["redis_shards"]).len(),
    )
}

/// Shards for TARGET_DELIVERIES, from the cluster run's most expensive shard.
pub fn shards_needed(st: &Value, one: &Value, cl: &Value, raw: &Value) -> String {
    let c = &cl["closed"];
    let d = f(&c["delivered"]) / f(&c["published"]).max(1.0);
    let nodes = u(&cl["nodes"]);
    let secs = f(&c["secs"]);
    let Some((name, c_pub, load)) = shards(&c["redis_shards"])
        .iter()
        .filter(|s| scripts(s) > 0)
        .map(|s| {
            (
                s["name"].as_str().unwrap_or("?").to_owned(),
                per(f(&s["cpu_seconds"]), scripts(s) as f64),
                f(&s["cpu_seconds"]) / secs,
            )
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
    else {
        return "No shard ran a publish script: no estimate.\n\n".into();
    };
    let st_pub = per(redis_cpu(st), f(&st["closed"]["published"]));
    let publishes = TARGET_DELIVERIES / d;
    let cores = publishes * c_pub / 1e6;
    let per_shard = HEADROOM * 1e6 / c_pub;
    let needed = ceil(publishes / per_shard);
    let g = |v: f64| group_digits(v as u64);
    let mut o = String::from("### On paper: shards for 1 M deliveries/s\n\n");
    o.push_str(&format!(
        "The most expensive shard of the {masters}-master run ({name}) spent **{c_pub:.2} µs of CPU per publish** it\n\
         handled (one `EVALSHA`: position, history, idempotency record and the `SPUBLISH` to the\n\
         {nodes} nodes subscribed to the group), {:.3} µs per delivery at {d:.1} deliveries per publish;\n\
         the standalone server spent {st_pub:.2} µs per publish. That shard was {:.0} % busy.\n\
         Redis runs commands on one thread, so a shard gets at most one core. At {:.0} % of it:\n\n\
         - per shard: {:.0} µs/s ÷ {c_pub:.2} µs = **{} publishes/s**, {} deliveries/s;\n\
         - 1 M deliveries/s ÷ {d:.1} deliveries per publish = {} publishes/s;\n\
         - {} publishes/s × {c_pub:.2} µs = {cores:.2} cores of Redis;\n\
         - {} ÷ {} = {:.2} → **{needed:.0} shards** (masters).\n\n",
        c_pub / d,
        load * 100.0,
        HEADROOM * 100.0,
        HEADROOM * 1e6,
        g(per_shard),
        g(per_shard * d),
        g(publishes),
        g(publishes),
        g(publishes),
        g(per_shard),
        publishes / per_shard,
        masters = shards(&c["redis_shards"]).len(),
    ));
    if one.is_object() {
        o.push_str(&busier(st, one, cl, c_pub, load, publishes));
    }
    // Classic PUBLISH: every other master pays for every message, however many shards.
    let n = f(&raw["messages"]);
    let classic = &raw["classic"];
    let idle = shards(&classic["shards"])
        .iter()
        .filter(|s| {
            s["port"] != classic["publisher_port"] && s["port"] != classic["subscriber_port"]
        })
        .map(|s| per(f(&s["cpu_seconds"]), n))
        .fold(f64::NAN, f64::max);
    if idle.is_finite() {
        let bus_cores = publishes * idle / 1e6;
        let left = HEADROOM - bus_cores;
        let verdict = if left > 0.0 {
            format!(
                "each shard would keep\n\
                 {left:.2} of its {HEADROOM:.2} core for its own publishes, so {cores:.2} ÷ {left:.2} → {:.0} shards,\n\
                 and every shard added would pay the same again",
                ceil(cores / left)
            )
        } else {
            "that alone is more than a shard's budget, so no number of shards would do".into()
        };
        o.push_str(&format!(
            "With classic `PUBLISH` instead, every master would also take every message off the bus:\n\
             the master with neither publisher nor subscriber spent {idle:.2} µs per raw message above, so\n\
             {} messages/s × {idle:.2} µs = {bus_cores:.2} cores on every shard; {verdict}.\n\n",
            g(publishes)
        ));
    }
    let node_secs: f64 = c["cpu_seconds"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.starts_with("node"))
        .map(|(_, v)| f(v))
        .sum();
    let node_us = per(node_secs, f(&c["delivered"]));
    o.push_str(&format!(
        "This assumes the measured shape: groups of {d:.0} members spread over {nodes} nodes (a publish's\n\
         Redis cost grows with the nodes subscribed to its group, not with its members, so larger\n\
         groups need fewer shards per delivery, and groups spread over more nodes more); enough\n\
         groups that slots, and so publishes, spread evenly over the shards (the shares above show\n\
         how even {} groups were); a core per shard (here the shards shared two cores with the nodes\n\
         and the load generator); and no replicas: a replica per master needs a core of its own,\n\
         and its master spends more per publish on the replication stream and on the publishshard\n\
         copy to it. The nodes are not counted: at {} of node CPU per delivery in the\n\
         cluster run, 1 M deliveries/s is about {:.0} cores of nodes at the same {:.0} %.\n\n",
        cl["groups"],
        num(node_us, 2, " µs"),
        node_us * TARGET_DELIVERIES / 1e6 / HEADROOM,
        HEADROOM * 100.0
    ));
    o
}
