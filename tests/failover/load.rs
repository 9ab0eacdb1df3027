//! What the fault tests share: node processes on one Redis URL, members of group `g` that
//! timestamp every message they get, a publisher sending numbered messages one after the
//! other, and the accounting of what was accepted against what each member got.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::helpers::{eventually, unique_prefix, Client, NodeProcess, WAIT};

pub const GROUP: &str = "g";
/// Heartbeats as fast as the cluster tests use, so a dead node is noticed quickly.
const NODE_CONFIG: &str = "[cluster]\nheartbeat_ttl_ms = 2000\nheartbeat_interval_ms = 500\n";
const FAILURES: &str = "hubcast_delivery_failures_total";

/// Node processes (each with its own `/metrics`) on one Redis URL and prefix.
pub struct Nodes {
    pub prefix: String,
    pub procs: Vec<NodeProcess>,
}

impl Nodes {
    pub async fn start(url: &str, n: usize) -> Self {
        let prefix = unique_prefix();
        let mut procs = Vec::new();
        for _ in 0..n {
            procs.push(NodeProcess::spawn_on_redis(NODE_CONFIG, url, &prefix).await);
        }
        Self { prefix, procs }
    }

    /// The group's channel (`{prefix}:tasks:group:{g}`, the group as hash tag).
    pub fn channel(&self) -> String {
        format!("{}:tasks:group:{{{GROUP}}}", self.prefix)
    }

    /// Each node's delivery failures on the tasks hub, every reason.
    pub async fn failures(&self) -> Vec<f64> {
        let mut out = Vec::new();
        for p in &self.procs {
            out.push(p.metric(FAILURES, &[("hub", "tasks")]).await);
        }
        out
    }

    /// `per_node` members of `g` on every node, reading; returns once the group counts
    /// all of them cluster-wide.
    pub async fn members(&self, per_node: usize) -> Vec<Member> {
        let mut members = Vec::new();
        for (node, p) in self.procs.iter().enumerate() {
            for _ in 0..per_node {
                let mut c = Client::open(&format!("ws://{}/hubs/tasks", p.addr)).await;
                c.handshake().await;
                c.call("JoinGroup", json!([GROUP])).await;
                members.push(Member::start(node, c));
            }
        }
        let want = members.len() as u64;
        let deadline = Instant::now() + WAIT;
        for p in &self.procs {
            while group_members(p).await != Some(want) {
                assert!(Instant::now() < deadline, "members not counted in time");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        members
    }
}

async fn group_members(p: &NodeProcess) -> Option<u64> {
    let r = reqwest::get(p.url(&format!("/api/v1/hubs/tasks/groups/{GROUP}")))
        .await
        .ok()?;
    r.json::<Value>().await.ok()?["members"].as_u64()
}

/// One POST to the group: its number, status and (on 503) `outcome`.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub n: u64,
    pub status: u16,
    pub outcome: Option<String>,
    pub sent: Instant,
    pub answered: Instant,
}

/// POSTs `target` with `arguments` to `g` on a node.
pub async fn post(
    http: &reqwest::Client,
    node: &NodeProcess,
    target: &str,
    args: Value,
) -> (u16, Value) {
    let url = node.url(&format!("/api/v1/hubs/tasks/groups/{GROUP}"));
    let body = json!({"target": target, "arguments": args});
    match http.post(url).json(&body).send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.json().await.unwrap_or(Value::Null))
        }
        Err(e) => (0, json!({"error": e.to_string()})),
    }
}

/// Numbered messages `N(n)` to `g` through one node, one after the other, until stopped.
pub struct Publisher {
    log: Arc<Mutex<Vec<Attempt>>>,
    stop: tokio::sync::watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// At most this many attempts: the load stops by itself.
const MAX_ATTEMPTS: u64 = 20_000;

impl Publisher {
    pub fn start(node: &NodeProcess) -> Self {
        let url = node.url("");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn({
            let log = log.clone();
            async move {
                let http = reqwest::Client::new();
                let target = format!("{url}/api/v1/hubs/tasks/groups/{GROUP}");
                for n in 0..MAX_ATTEMPTS {
                    if *stopped.borrow() {
                        return;
                    }
                    let sent = Instant::now();
                    let body = json!({"target": "N", "arguments": [n]});
                    let (status, reply) = match http.post(&target).json(&body).send().await {
                        Ok(r) => (r.status().as_u16(), r.json::<Value>().await.ok()),
                        Err(_) => (0, None),
                    };
                    let outcome = reply.and_then(|v| v["outcome"].as_str().map(str::to_owned));
                    log.lock().unwrap().push(Attempt {
                        n,
                        status,
                        outcome,
                        sent,
                        answered: Instant::now(),
                    });
                    if status != 202 {
                        // Refused while Redis recovers: not too fast, not synchronising.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        });
        Self { log, stop, task }
    }

    /// How many were accepted after `since` (sent after it).
    pub fn accepted_since(&self, since: Instant) -> usize {
        let log = self.log.lock().unwrap();
        log.iter()
            .filter(|a| a.status == 202 && a.sent >= since)
            .count()
    }

    /// Waits until `count` more were accepted after `since`.
    pub async fn wait_accepted(&self, since: Instant, count: usize) {
        eventually(&format!("{count} publishes accepted"), || {
            self.accepted_since(since) >= count
        })
        .await;
    }

    pub fn attempts(&self) -> Vec<Attempt> {
        self.log.lock().unwrap().clone()
    }

    /// Stops after the attempt under way; every attempt made.
    pub async fn stop(self) -> Vec<Attempt> {
        let _ = self.stop.send(true);
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("the publisher stops")
            .unwrap();
        Arc::try_unwrap(self.log).unwrap().into_inner().unwrap()
    }
}

/// A member of `g` reading until the `End` marker: each `N(n)` with when it came.
pub struct Member {
    pub node: usize,
    got: Arc<Mutex<Vec<(u64, Instant)>>>,
    task: JoinHandle<Ending>,
}

/// How a member's reading ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Marker,
    Closed,
    Silent,
}

impl Member {
    fn start(node: usize, mut c: Client) -> Self {
        let got = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let got = got.clone();
            async move {
                let mut pinged = Instant::now();
                let mut heard = Instant::now();
                loop {
                    if pinged.elapsed() >= Duration::from_secs(5) {
                        c.send(json!({"type": 6})).await;
                        pinged = Instant::now();
                    }
                    if heard.elapsed() >= WAIT {
                        return Ending::Silent;
                    }
                    let r =
                        match tokio::time::timeout(Duration::from_secs(1), c.next_record()).await {
                            Err(_) => continue,
                            Ok(None) => return Ending::Closed,
                            Ok(Some(r)) => r,
                        };
                    heard = Instant::now();
                    match (r["type"].as_u64(), r["target"].as_str()) {
                        (Some(7), _) => return Ending::Closed,
                        (Some(1), Some("End")) => return Ending::Marker,
                        (Some(1), Some("N")) => {
                            let n = r["arguments"][0].as_u64().expect("a number");
                            got.lock().unwrap().push((n, Instant::now()));
                        }
                        _ => {}
                    }
                }
            }
        });
        Self { node, got, task }
    }

    /// When `n` arrived here, if it did.
    pub fn arrival(&self, n: u64) -> Option<Instant> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .find(|(m, _)| *m == n)
            .map(|(_, t)| *t)
    }
}

/// When every member had `n`, if all did.
pub fn arrived_everywhere(members: &[Member], n: u64) -> Option<Instant> {
    members
        .iter()
        .map(|m| m.arrival(n))
        .collect::<Option<Vec<_>>>()?
        .into_iter()
        .max()
}

/// Sends the `End` marker through `node` (retrying refusals), then collects every member's
/// numbers and how its reading ended.
pub async fn finish(node: &NodeProcess, members: Vec<Member>) -> Vec<(usize, Vec<u64>, Ending)> {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + WAIT;
    while post(&http, node, "End", json!([])).await.0 != 202 {
        assert!(
            Instant::now() < deadline,
            "the End marker was never accepted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut out = Vec::new();
    for m in members {
        let ending = tokio::time::timeout(WAIT + WAIT, m.task)
            .await
            .expect("a member stops reading")
            .unwrap();
        let got = m.got.lock().unwrap().iter().map(|(n, _)| *n).collect();
        out.push((m.node, got, ending));
    }
    out
}

/// What every member got against what was accepted, with each node's counted failures
/// (`failures`: growth of `hubcast_delivery_failures_total` during the test).
#[derive(Debug)]
pub struct Accounting {
    pub accepted: usize,
    pub refused: usize,
    /// Per member: (node, delivered, missing, duplicated, out of order, not sent yet got).
    pub members: Vec<(usize, usize, usize, usize, usize, usize)>,
    pub failures: Vec<f64>,
    pub endings: Vec<Ending>,
    /// The first accepted messages some member missed, with when each was sent and
    /// answered (ms after the first attempt).
    pub missed: Vec<(u64, u128, u128)>,
    /// When the fault was made (ms after the first attempt).
    pub fault_at_ms: Option<u128>,
    start: Option<Instant>,
}

impl Accounting {
    pub fn new(
        attempts: &[Attempt],
        got: &[(usize, Vec<u64>, Ending)],
        failures: Vec<f64>,
    ) -> Self {
        let accepted: BTreeSet<u64> = attempts
            .iter()
            .filter(|a| a.status == 202)
            .map(|a| a.n)
            .collect();
        let not_sent: BTreeSet<u64> = attempts
            .iter()
            .filter(|a| a.outcome.as_deref() == Some("not_sent"))
            .map(|a| a.n)
            .collect();
        let members = got
            .iter()
            .map(|(node, seq, _)| {
                let mut seen = HashMap::new();
                for n in seq {
                    *seen.entry(*n).or_insert(0usize) += 1;
                }
                let dup = seen.values().filter(|&&c| c > 1).map(|c| c - 1).sum();
                let disorder = seq.windows(2).filter(|w| w[0] >= w[1]).count();
                let missing = accepted.iter().filter(|n| !seen.contains_key(n)).count();
                let wrong = not_sent.iter().filter(|n| seen.contains_key(n)).count();
                (*node, seq.len(), missing, dup, disorder, wrong)
            })
            .collect();
        let start = attempts.first().map(|a| a.sent);
        let missed = attempts
            .iter()
            .filter(|a| a.status == 202)
            .filter(|a| got.iter().any(|(_, seq, _)| !seq.contains(&a.n)))
            .take(10)
            .map(|a| {
                let at = |t: Instant| (t - start.unwrap()).as_millis();
                (a.n, at(a.sent), at(a.answered))
            })
            .collect();
        Self {
            accepted: accepted.len(),
            refused: attempts.len() - accepted.len(),
            members,
            failures,
            endings: got.iter().map(|g| g.2).collect(),
            missed,
            fault_at_ms: None,
            start,
        }
    }

    /// Notes when the fault was made, for the report.
    pub fn fault_at(mut self, at: Instant) -> Self {
        self.fault_at_ms = self.start.map(|s| (at - s).as_millis());
        self
    }

    /// No duplicate, nothing out of order, nothing answered `not_sent` delivered, and
    /// every accepted message a member missed counted by its node.
    pub fn assert_exactly_once_or_counted(&self) {
        eprintln!(
            "{} accepted, {} refused; per member (node, delivered, missing, duplicated, \
             out of order, not_sent delivered): {:?}; failures counted per node: {:?}; {:?}; \
             missed (n, sent ms, answered ms): {:?}, fault at {:?} ms",
            self.accepted,
            self.refused,
            self.members,
            self.failures,
            self.endings,
            self.missed,
            self.fault_at_ms
        );
        assert!(self.accepted > 0, "nothing was accepted");
        for (i, &(node, _, missing, dup, disorder, wrong)) in self.members.iter().enumerate() {
            assert_eq!(dup, 0, "member {i}: duplicates: {self:?}");
            assert_eq!(disorder, 0, "member {i}: out of order: {self:?}");
            assert_eq!(
                wrong, 0,
                "member {i}: got messages answered not_sent: {self:?}"
            );
            let missed_on_node: usize = self
                .members
                .iter()
                .filter(|m| m.0 == node)
                .map(|m| m.2)
                .sum();
            assert!(
                missed_on_node as f64 <= self.failures[node],
                "member {i}: {missing} accepted messages neither delivered nor counted: {self:?}"
            );
        }
    }

    /// As [`Self::assert_exactly_once_or_counted`], with nothing missing at all.
    pub fn assert_exactly_once(&self) {
        self.assert_exactly_once_or_counted();
        for (i, m) in self.members.iter().enumerate() {
            assert_eq!(m.2, 0, "member {i} missed accepted messages: {self:?}");
            assert_eq!(self.endings[i], Ending::Marker, "member {i}: {self:?}");
        }
    }
}
