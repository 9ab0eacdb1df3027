//! Two nodes on a Redis Cluster: a master killed under load, a slot moved under load, and
//! what sharded pub/sub saves the cluster bus.

use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use crate::helpers::eventually;
use crate::load::{arrived_everywhere, finish, post, Accounting, Member, Nodes, Publisher};
use crate::redis_ha::{until, RedisCluster};

/// The bound: a message accepted after a master dies reaches its members within
/// this long of the kill.
const RESUME_WITHIN: Duration = Duration::from_secs(10);

/// The first time a message accepted (sent) after `since` had reached every member.
pub fn resumed(publisher: &Publisher, members: &[Member], since: Instant) -> Option<Instant> {
    publisher
        .attempts()
        .iter()
        .filter(|a| a.status == 202 && a.sent >= since)
        .filter_map(|a| arrived_everywhere(members, a.n))
        .min()
}

/// Growth of each node's failure counter.
pub fn growth(before: &[f64], after: &[f64]) -> Vec<f64> {
    after.iter().zip(before).map(|(a, b)| a - b).collect()
}

#[tokio::test]
async fn a_master_killed_under_load_is_replaced_within_ten_seconds_and_nothing_is_lost_unseen() {
    let mut redis = RedisCluster::start().await;
    let nodes = Nodes::start(&redis.url(), 2).await;
    let members = nodes.members(2).await;
    let before = nodes.failures().await;
    let publisher = Publisher::start(&nodes.procs[0]);
    publisher.wait_accepted(Instant::now(), 50).await;

    let slot = redis.slot_of(&nodes.channel()).await;
    let killed = redis.kill_master_of_slot(slot).await;
    let killed_at = Instant::now();
    eventually(
        "a message accepted after the kill reaches every member",
        || resumed(&publisher, &members, killed_at).is_some(),
    )
    .await;
    let took = resumed(&publisher, &members, killed_at).unwrap() - killed_at;
    eprintln!("master {killed} killed: delivery resumed after {took:?}");
    assert!(
        took <= RESUME_WITHIN,
        "delivery resumed {took:?} after the kill"
    );
    let promoted = redis.wait_promoted(slot).await;
    assert_ne!(promoted, killed);
    publisher.wait_accepted(Instant::now(), 100).await;

    let attempts = publisher.stop().await;
    let got = finish(&nodes.procs[1], members).await;
    let failures = growth(&before, &nodes.failures().await);
    Accounting::new(&attempts, &got, failures)
        .fault_at(killed_at)
        .assert_exactly_once_or_counted();
}

#[tokio::test]
async fn a_slot_moved_to_another_master_under_load_loses_and_repeats_nothing() {
    let redis = RedisCluster::start().await;
    let nodes = Nodes::start(&redis.url(), 2).await;
    let members = nodes.members(2).await;
    let channel = nodes.channel();
    let slot = redis.slot_of(&channel).await;
    let from = redis.master_of_slot(slot).await;
    let to = *redis.masters().await.iter().find(|&&p| p != from).unwrap();
    // Keys of the group's slot, so the move takes many MIGRATE batches while messages flow.
    let mut c = redis.connection_for(&channel).await;
    let mut fill = redis::pipe();
    for i in 0..3_000 {
        fill.cmd("SET")
            .arg(format!("fill:{{g}}:{i}"))
            .arg(i)
            .ignore();
    }
    let _: () = fill.query_async(&mut c).await.unwrap();

    let before = nodes.failures().await;
    let publisher = Publisher::start(&nodes.procs[0]);
    publisher.wait_accepted(Instant::now(), 50).await;
    let moving = Instant::now();
    redis.migrate_slot(slot, to).await;
    let moved = Instant::now();
    publisher.wait_accepted(moved, 100).await;
    let attempts = publisher.stop().await;
    until("both nodes subscribed on the slot's new shard", || async {
        redis.shardnumsub(&channel).await == 2
    })
    .await;
    let got = finish(&nodes.procs[1], members).await;
    let failures = growth(&before, &nodes.failures().await);
    let during = attempts.iter().filter(|a| a.sent < moved).count();
    eprintln!("slot {slot} moved {from} -> {to} after {during} attempts");
    Accounting::new(&attempts, &got, failures)
        .fault_at(moving)
        .assert_exactly_once();
}

/// The cluster-bus publish messages a node received: classic and sharded.
async fn bus_publishes(redis: &RedisCluster, port: u16) -> u64 {
    let info = redis.cluster_info(port).await.unwrap();
    // CLUSTER INFO leaves out message types it never saw.
    ["publish", "publishshard"]
        .iter()
        .map(|t| format!("cluster_stats_messages_{t}_received"))
        .map(|k| info.get(&k).map_or(0, |v| v.parse().unwrap()))
        .sum()
}

async fn bus_publishes_of(redis: &RedisCluster, ports: &[u16]) -> Vec<u64> {
    let mut out = Vec::new();
    for &p in ports {
        out.push(bus_publishes(redis, p).await);
    }
    out
}

#[tokio::test]
async fn a_groups_publishes_stay_on_its_shard_while_classic_publish_floods_every_master() {
    const N: u64 = 200;
    let redis = RedisCluster::start().await;
    let nodes = Nodes::start(&redis.url(), 2).await;
    let members = nodes.members(1).await;
    let slot = redis.slot_of(&nodes.channel()).await;
    let owner = redis.master_of_slot(slot).await;
    let others: Vec<u16> = redis
        .masters()
        .await
        .into_iter()
        .filter(|&p| p != owner)
        .collect();
    assert_eq!(others.len(), 2);

    let calls_before = redis.commandstats(owner).await;
    let bus_before = bus_publishes_of(&redis, &others).await;
    let http = reqwest::Client::new();
    for n in 0..N {
        let (status, body) = post(&http, &nodes.procs[n as usize % 2], "N", json!([n])).await;
        assert_eq!(status, 202, "{body}");
    }
    eventually("every member got the last message", || {
        arrived_everywhere(&members, N - 1).is_some()
    })
    .await;
    let calls_after = redis.commandstats(owner).await;
    let bus_after = bus_publishes_of(&redis, &others).await;
    let grew = |cmd: &str| {
        calls_after.get(cmd).copied().unwrap_or(0) - calls_before.get(cmd).copied().unwrap_or(0)
    };
    let on_shard: Vec<(&str, u64)> = ["evalsha", "eval", "spublish", "fcall"]
        .into_iter()
        .map(|c| (c, grew(c)))
        .collect();
    eprintln!(
        "owner {owner}: {on_shard:?}; other masters' bus publishes {bus_before:?} -> {bus_after:?}"
    );
    assert!(
        on_shard.iter().any(|&(_, n)| n >= N),
        "the owning master ran the {N} publishes: {on_shard:?}"
    );
    for (i, (a, b)) in bus_after.iter().zip(&bus_before).enumerate() {
        assert!(
            a - b < N / 2,
            "master {} got {} bus publish messages for {N} group publishes",
            others[i],
            a - b
        );
    }

    // The same number of classic PUBLISHes on the owner reach every other master.
    let mut c = crate::redis_ha::connect(owner).await.unwrap();
    let mut flood = redis::pipe();
    for n in 0..N {
        flood.cmd("PUBLISH").arg("classic").arg(n).ignore();
    }
    let _: () = flood.query_async(&mut c).await.unwrap();
    until(
        "every other master received the classic publishes",
        || async {
            let now = bus_publishes_of(&redis, &others).await;
            now.iter().zip(&bus_after).all(|(a, b)| a - b >= N)
        },
    )
    .await;
    drop(finish(&nodes.procs[0], members).await);
}
