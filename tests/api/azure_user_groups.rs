//! A user's group membership that outlives its connections (Azure's "add user to
//! group", with its ttl semantics), the user-in-group checks, and the paged member
//! listing `GET /api/hubs/{hub}/groups/{group}/connections`.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::helpers::{Client, TestApp};
use crate::security::{connect_with, secure_config, ACCESS};

const V: &str = "api-version=2024-12-01";

struct Api {
    app: TestApp,
    http: reqwest::Client,
}

impl Api {
    async fn start() -> Self {
        Self {
            app: TestApp::spawn_with(secure_config()).await,
            http: reqwest::Client::new(),
        }
    }

    async fn req(&self, method: reqwest::Method, path: &str) -> reqwest::Response {
        self.http
            .request(method, self.app.url(path))
            .bearer_auth(ACCESS)
            .send()
            .await
            .unwrap()
    }

    async fn status(&self, method: reqwest::Method, path: &str) -> u16 {
        self.req(method, path).await.status().as_u16()
    }

    async fn token(&self, user: &str) -> String {
        crate::helpers::client_token(&self.app.url(""), "tasks", user, ACCESS).await
    }

    async fn connect(&self, user: &str) -> Client {
        let token = self.token(user).await;
        connect_with(&self.app, "/hubs/tasks", &token).await
    }

    async fn members(&self, group: &str) -> u64 {
        self.req(
            reqwest::Method::GET,
            &format!("/api/v1/hubs/tasks/groups/{group}"),
        )
        .await
        .json::<Value>()
        .await
        .unwrap()["members"]
            .as_u64()
            .unwrap()
    }

    /// Waits until the group has `n` members.
    async fn until_members(&self, group: &str, n: u64) {
        let what = format!("group {group} has {n} members");
        crate::helpers::until(&what, || async { self.members(group).await == n }).await;
    }

    async fn in_group(&self, user: &str, group: &str) -> u16 {
        self.status(
            reqwest::Method::HEAD,
            &format!("/api/hubs/tasks/users/{user}/groups/{group}?{V}"),
        )
        .await
    }

    /// Sends `target` to an audience: `groups/{g}` or `users/{u}`.
    async fn send(&self, audience: &str, target: &str) {
        let r = self
            .http
            .post(
                self.app
                    .url(&format!("/api/hubs/tasks/{audience}/:send?{V}")),
            )
            .bearer_auth(ACCESS)
            .json(&json!({"target": target, "arguments": []}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
}

#[tokio::test]
async fn a_user_added_without_a_ttl_is_in_the_group_on_every_later_connection() {
    let api = Api::start().await;
    let put = format!("/api/hubs/tasks/users/u-1/groups/later?{V}");
    assert_eq!(api.status(reqwest::Method::PUT, &put).await, 200);
    assert_eq!(api.in_group("u-1", "later").await, 200, "by its record");
    assert_eq!(api.in_group("u-1", "other").await, 404);
    assert_eq!(api.in_group("u-2", "later").await, 404);
    // v1's check, GET and HEAD.
    let v1 = "/api/v1/hubs/tasks/groups/later/users/u-1";
    assert_eq!(api.status(reqwest::Method::GET, v1).await, 200);
    assert_eq!(api.status(reqwest::Method::HEAD, v1).await, 200);

    let mut first = api.connect("u-1").await;
    assert_eq!(api.members("later").await, 1);
    let mut second = api.connect("u-1").await;
    assert_eq!(api.members("later").await, 2);
    api.send("groups/later", "ToLater").await;
    assert_eq!(first.next_invocation().await["target"], "ToLater");
    assert_eq!(second.next_invocation().await["target"], "ToLater");

    // Removed: its connections leave, and the next one does not join.
    let del = format!("/api/hubs/tasks/users/u-1/groups/later?{V}");
    assert_eq!(api.status(reqwest::Method::DELETE, &del).await, 204);
    api.until_members("later", 0).await;
    assert_eq!(api.in_group("u-1", "later").await, 404);
    // A connection's user's groups are joined before its handshake is answered.
    let _third = api.connect("u-1").await;
    assert_eq!(api.members("later").await, 0);
}

#[tokio::test]
async fn ttl_zero_adds_only_the_users_current_connections() {
    let api = Api::start().await;
    let _now = api.connect("u-4").await;
    let put = format!("/api/hubs/tasks/users/u-4/groups/now-only?{V}&ttl=0");
    assert_eq!(api.status(reqwest::Method::PUT, &put).await, 200);
    assert_eq!(api.members("now-only").await, 1);
    assert_eq!(
        api.in_group("u-4", "now-only").await,
        200,
        "by its connection"
    );
    let _later = api.connect("u-4").await;
    // The later connection is on the user's channel, and in no group.
    let mut probe = api.connect("u-4").await;
    api.send("users/u-4", "Hello").await;
    assert_eq!(probe.next_invocation().await["target"], "Hello");
    assert_eq!(api.members("now-only").await, 1);
}

#[tokio::test]
async fn a_timed_membership_ends_for_current_and_later_connections() {
    let api = Api::start().await;
    let mut c = api.connect("u-5").await;
    let put = format!("/api/hubs/tasks/users/u-5/groups/brief?{V}&ttl=4");
    assert_eq!(api.status(reqwest::Method::PUT, &put).await, 200);
    assert_eq!(api.members("brief").await, 1);
    let _later = api.connect("u-5").await;
    assert_eq!(api.members("brief").await, 2);
    api.send("groups/brief", "WhileItLasts").await;
    assert_eq!(c.next_invocation().await["target"], "WhileItLasts");
    // Four seconds on, both leave on their own.
    api.until_members("brief", 0).await;
    assert_eq!(api.in_group("u-5", "brief").await, 404);
    let _after = api.connect("u-5").await;
    api.send("users/u-5", "Marker").await;
    assert_eq!(c.next_invocation().await["target"], "Marker");
    assert_eq!(api.members("brief").await, 0);
}

#[tokio::test]
async fn a_user_keeps_its_100_latest_groups_without_a_ttl() {
    let api = Api::start().await;
    for i in 0..101 {
        let put = format!("/api/hubs/tasks/users/u-6/groups/g{i}?{V}");
        assert_eq!(api.status(reqwest::Method::PUT, &put).await, 200);
    }
    assert_eq!(api.in_group("u-6", "g0").await, 404, "the oldest went");
    assert_eq!(api.in_group("u-6", "g1").await, 200);
    assert_eq!(api.in_group("u-6", "g100").await, 200);
    let _c = api.connect("u-6").await;
    assert_eq!(api.members("g100").await, 1);
    assert_eq!(api.members("g1").await, 1);
    assert_eq!(api.members("g0").await, 0);
}

#[tokio::test]
async fn a_bad_ttl_is_refused_and_changes_nothing() {
    let api = Api::start().await;
    for ttl in ["-1", "soon", "1.5"] {
        let put = format!("/api/hubs/tasks/users/u-7/groups/g?{V}&ttl={ttl}");
        let r = api.req(reqwest::Method::PUT, &put).await;
        assert_eq!(r.status(), 400, "ttl={ttl}");
        let body: Value = r.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains("ttl"), "{body}");
    }
    assert_eq!(api.in_group("u-7", "g").await, 404);
}

/// Every page of a listing from `first`, following `nextLink`s: (ids, users, pages).
async fn list_all(api: &Api, first: &str) -> (Vec<String>, Vec<Value>, usize) {
    let mut url = api.app.url(first);
    let (mut ids, mut users, mut pages) = (Vec::new(), Vec::new(), 0);
    loop {
        let r = api.http.get(&url).bearer_auth(ACCESS).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let page: Value = r.json().await.unwrap();
        pages += 1;
        for m in page["value"].as_array().unwrap() {
            ids.push(m["connectionId"].as_str().unwrap().to_owned());
            users.push(m["userId"].clone());
        }
        match page["nextLink"].as_str() {
            Some(next) => {
                assert!(next.starts_with("http://"), "absolute: {next}");
                url = next.to_owned();
            }
            None => return (ids, users, pages),
        }
        assert!(pages < 100, "the listing ends");
    }
}

#[tokio::test]
async fn a_groups_members_are_listed_page_by_page_with_their_users() {
    let api = Api::start().await;
    let mut clients = Vec::new();
    for i in 0..5 {
        clients.push(api.connect(&format!("lister-{i}")).await);
        let put = format!("/api/hubs/tasks/users/lister-{i}/groups/listed?{V}&ttl=0");
        assert_eq!(api.status(reqwest::Method::PUT, &put).await, 200);
    }
    api.until_members("listed", 5).await;

    let (ids, users, pages) = list_all(
        &api,
        &format!("/api/hubs/tasks/groups/listed/connections?{V}&maxpagesize=2"),
    )
    .await;
    assert_eq!(pages, 3, "2 + 2 + 1");
    assert_eq!(ids.len(), 5);
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), 5, "no repeats");
    let users: BTreeSet<String> = users
        .iter()
        .map(|u| u.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        users,
        (0..5)
            .map(|i| format!("lister-{i}"))
            .collect::<BTreeSet<_>>()
    );

    // `top` bounds the whole listing.
    let (ids, _, pages) = list_all(
        &api,
        &format!("/api/hubs/tasks/groups/listed/connections?{V}&maxpagesize=2&top=3"),
    )
    .await;
    assert_eq!((ids.len(), pages), (3, 2));
    // One page holds everything when it may.
    let (ids, _, pages) = list_all(
        &api,
        &format!("/api/hubs/tasks/groups/listed/connections?{V}"),
    )
    .await;
    assert_eq!((ids.len(), pages), (5, 1));
    // An empty group is an empty page.
    let (ids, _, pages) = list_all(
        &api,
        &format!("/api/hubs/tasks/groups/nobody-here/connections?{V}"),
    )
    .await;
    assert_eq!((ids.len(), pages), (0, 1));
}

#[tokio::test]
async fn a_listing_refuses_bad_paging_parameters() {
    let api = Api::start().await;
    for q in [
        "maxpagesize=0",
        "maxpagesize=201",
        "maxpagesize=x",
        "top=0",
        "continuationToken=%25%25",
        "continuationToken=bm9wZQ",
    ] {
        let r = api
            .req(
                reqwest::Method::GET,
                &format!("/api/hubs/tasks/groups/g/connections?{V}&{q}"),
            )
            .await;
        assert_eq!(r.status(), 400, "{q}");
        let body: Value = r.json().await.unwrap();
        assert!(body["error"].is_string(), "{q}: {body}");
    }
}
