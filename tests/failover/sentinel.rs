//! Two nodes on Redis behind Sentinel: the master killed under load.

use tokio::time::Instant;

use crate::cluster::{growth, resumed};
use crate::helpers::eventually;
use crate::load::{finish, Accounting, Nodes, Publisher};
use crate::redis_ha::RedisSentinel;

#[tokio::test]
async fn nodes_follow_a_sentinel_failover_under_load_and_nothing_is_lost_unseen() {
    let mut redis = RedisSentinel::start().await;
    let nodes = Nodes::start(&redis.url(), 2).await;
    let members = nodes.members(2).await;
    let before = nodes.failures().await;
    let publisher = Publisher::start(&nodes.procs[0]);
    publisher.wait_accepted(Instant::now(), 50).await;

    let killed = redis.kill_master().await;
    let killed_at = Instant::now();
    let promoted = redis.wait_failover().await;
    eprintln!(
        "master {killed} killed, {promoted} promoted after {:?}",
        killed_at.elapsed()
    );
    eventually(
        "a message accepted after the kill reaches every member",
        || resumed(&publisher, &members, killed_at).is_some(),
    )
    .await;
    let took = resumed(&publisher, &members, killed_at).unwrap() - killed_at;
    eprintln!("delivery resumed {took:?} after the kill");
    publisher.wait_accepted(Instant::now(), 100).await;

    let attempts = publisher.stop().await;
    let got = finish(&nodes.procs[1], members).await;
    let failures = growth(&before, &nodes.failures().await);
    Accounting::new(&attempts, &got, failures)
        .fault_at(killed_at)
        .assert_exactly_once_or_counted();
}
