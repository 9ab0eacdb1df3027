//! The Redis deployments themselves behave as the fault tests expect.

use crate::redis_ha::{query, RedisCluster, RedisSentinel};

#[tokio::test]
async fn the_cluster_serves_every_slot_moves_a_slot_and_promotes_a_replica() {
    let mut cluster = RedisCluster::start().await;
    let masters = cluster.masters().await;
    assert_eq!(masters.len(), 3, "three masters own slots");
    for port in &masters {
        let info = cluster.cluster_info(*port).await.unwrap();
        assert_eq!(info["cluster_state"], "ok");
        assert_eq!(info["cluster_slots_assigned"], "16384");
    }
    assert!(cluster.url().starts_with("redis+cluster://127.0.0.1:"));
    // The group's hash tag decides the slot, as CRC16 does: "{g}" and "g" agree.
    let key = "t1:hist:tasks:group:{g}";
    let slot = cluster.slot_of(key).await;
    assert_eq!(slot, cluster.slot_of("g").await);
    let mut c = cluster.connection_for(key).await;
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg("v")
        .query_async(&mut c)
        .await
        .unwrap();

    let owner = cluster.master_of_slot(slot).await;
    let target = *masters.iter().find(|&&p| p != owner).unwrap();
    cluster.migrate_slot(slot, target).await;
    assert_eq!(cluster.master_of_slot(slot).await, target);
    let moved: Option<String> = query(target, redis::cmd("GET").arg(key)).await.unwrap();
    assert_eq!(moved.as_deref(), Some("v"), "the key went with its slot");
    let calls = cluster.commandstats(target).await;
    assert!(
        calls.get("restore-asking").copied().unwrap_or(0) >= 1,
        "{calls:?}"
    );

    // Replication is asynchronous: the key must be on the replica before its master dies.
    let acked: u64 = query(target, redis::cmd("WAIT").arg(1).arg(5000))
        .await
        .unwrap();
    assert_eq!(acked, 1);
    let killed = cluster.kill_master_of_slot(slot).await;
    assert_eq!(killed, target);
    let promoted = cluster.wait_promoted(slot).await;
    assert_ne!(promoted, killed);
    assert!(!masters.contains(&promoted), "a replica took over");
    let kept: Option<String> = query(promoted, redis::cmd("GET").arg(key)).await.unwrap();
    assert_eq!(kept.as_deref(), Some("v"), "the replica had the key");
}

#[tokio::test]
async fn the_sentinels_name_the_master_and_promote_the_replica_when_it_dies() {
    let mut sentinel = RedisSentinel::start().await;
    assert!(sentinel.url().ends_with("/mymaster"));
    let first = sentinel.master_port().await;
    let mut c = sentinel.connection().await;
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query_async(&mut c)
        .await
        .unwrap();
    // The replica has it before the master dies (WAIT 1 replica).
    let acked: u64 = redis::cmd("WAIT")
        .arg(1)
        .arg(5000)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(acked, 1);

    assert_eq!(sentinel.kill_master().await, first);
    let promoted = sentinel.wait_failover().await;
    assert_ne!(promoted, first);
    assert_eq!(sentinel.master_port().await, promoted);
    let kept: Option<String> = query(promoted, redis::cmd("GET").arg("k")).await.unwrap();
    assert_eq!(kept.as_deref(), Some("v"));
}
