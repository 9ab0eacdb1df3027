//! What became of users' group memberships, as a node process's `/metrics` counts it:
//! a record the user's bound pushed out, a group a connection had no room for, and a
//! ttl that ran out.

use crate::helpers::{until, Client, NodeProcess};
use crate::security::{ACCESS, MASTER, TOKEN_KEY};

const V: &str = "api-version=2024-12-01";

async fn put(node: &NodeProcess, path: &str) {
    let r = reqwest::Client::new()
        .put(node.url(path))
        .bearer_auth(ACCESS)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{path}");
}

async fn connect(node: &NodeProcess, user: &str) -> Client {
    let token = crate::helpers::client_token(&node.url(""), "tasks", user, ACCESS).await;
    let mut c = Client::open(&format!(
        "ws://{}/hubs/tasks?access_token={token}",
        node.addr
    ))
    .await;
    c.handshake().await;
    c
}

async fn counted(node: &NodeProcess, outcome: &str) -> f64 {
    node.metric(
        "hubcast_user_group_memberships_total",
        &[("hub", "tasks"), ("outcome", outcome)],
    )
    .await
}

#[tokio::test]
async fn what_becomes_of_a_users_group_memberships_is_counted() {
    let node = NodeProcess::spawn_secure(
        "[limits]\nmax_groups_per_connection = 2\n",
        [ACCESS, TOKEN_KEY, MASTER],
        &[],
    )
    .await;
    for outcome in ["evicted", "ended", "restore_failed", "join_refused"] {
        assert_eq!(counted(&node, outcome).await, 0.0, "{outcome} starts at 0");
    }

    for i in 0..101 {
        put(
            &node,
            &format!("/api/hubs/tasks/users/many/groups/g{i}?{V}"),
        )
        .await;
    }
    assert_eq!(counted(&node, "evicted").await, 1.0);

    for g in ["a", "b", "c"] {
        put(&node, &format!("/api/hubs/tasks/users/full/groups/{g}?{V}")).await;
    }
    let _full = connect(&node, "full").await;
    assert_eq!(
        counted(&node, "join_refused").await,
        1.0,
        "two of its three groups fit"
    );

    let _brief = connect(&node, "brief").await;
    put(
        &node,
        &format!("/api/hubs/tasks/users/brief/groups/t?{V}&ttl=1"),
    )
    .await;
    until("the ttl ended the membership", || async {
        counted(&node, "ended").await >= 1.0
    })
    .await;
    assert_eq!(counted(&node, "restore_failed").await, 0.0);
}
