// Fault injection on a three-node hubcast cluster under load.
//
// One redis-server (free port, no persistence) and three hubcast nodes (the real binary,
// JSON logs in files under a temp dir); node 3 reaches Redis only through a TCP proxy
// the test can black-hole. 300 official @microsoft/signalr clients (100 per node, through
// a TCP load balancer that fails over to live nodes) in 30 groups, 10 members each, every
// group on every node. A publisher sends about 200 publishes/s with an Idempotency-Key
// each and retries anything but a 202 with the same key.
//
// Scenarios, in order on the same cluster: baseline; Redis restarted (down 1.5 s, 3.5 s);
// CLIENT PAUSE 5000 ALL; node 3 partitioned from Redis for 10 s and 25 s; kill -9 of
// node 3 (then a fresh node 3); SIGTERM of node 2. For each: lost deliveries that no
// metric counted, duplicates, client reconnects (none for Redis faults), member counts
// right on every node after the fault, and after SIGTERM no node reaped. The table is
// printed before anything is asserted.
//
//   cd tests/chaos && node --test --test-reporter=spec
// HUBCAST_BIN selects the binary (default: cargo's debug build); HUBCAST_CHAOS_KEEP_LOGS=1
// keeps the log directory also when everything passed.

import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { monitorEventLoopDelay } from "node:perf_hooks";

import {
  HUBCAST_BIN, HubcastNode, RedisProcess, countedFailures, delay, freePort, metricSum,
  redisCommand, uniqueRedisPrefix, waitFor, withTimeout,
} from "./harness.mjs";
import { LoadBalancer, TcpProxy } from "./proxy.mjs";
import { Fleet } from "./fleet.mjs";
import { Publisher } from "./publisher.mjs";
import { account, answers, formatTable } from "./report.mjs";

const NODES = 3;
const CLIENTS_PER_NODE = 100;
const GROUPS = Array.from({ length: 30 }, (_, i) => `chaos-${i}`);
const HUB = "tasks";
const RATE = 200;

const LOAD_BEFORE_MS = 5000; // load before the fault
const LOAD_AFTER_MS = 5000; // load after recovery
const RECOVERY_DEADLINE_MS = 20_000; // fresh deliveries on every node / victims rejoined
const MEMBERS_LIMIT_MS = 10_000; // member counts right within this after the fault heals
const GAUGE_LIMIT_MS = 1_000; // readiness and subscription gauges follow the subscriber within this
const HEARTBEAT_TTL_MS = 10_000; // the defaults (README, [cluster])
const HEARTBEAT_INTERVAL_MS = 3000;
const MEMBERS_LIMIT_KILL_MS = HEARTBEAT_TTL_MS + HEARTBEAT_INTERVAL_MS + 10_000;
const MEMBERS_GRACE_MS = 5000; // keep polling this much past the limit, to report the time
const MEMBERS_STABLE_MS = 2000; // counts must stay right this long to count as converged
const QUIET_MS = 2000; // no delivery for this long: everything that will arrive has
const DRAIN_DEADLINE_MS = 20_000;
const SCENARIO_TIMEOUT_MS = 150_000;

const ctx = {
  dir: null, redis: null, proxy: null, nodes: [], lb: null, fleet: null, publisher: null,
  down: new Set(), rows: [], failed: false, started: Date.now(),
};
const loop = monitorEventLoopDelay({ resolution: 10 });

/**
 * How long until every live node's gauges say what the subscriber really is:
 * hubcast_ready and hubcast_redis_subscriptions both 0 (down), or both up.
 */
async function gaugesSay(up, from) {
  const ok = (m) => {
    const ready = metricSum(m, "hubcast_ready");
    const subs = metricSum(m, "hubcast_redis_subscriptions");
    return up ? ready === 1 && subs > 0 : ready === 0 && subs === 0;
  };
  await waitFor(
    async () => (await Promise.all(liveNodes().map((node) => node.metrics().catch(() => null)))).every((m) => m && ok(m)),
    { timeoutMs: 15_000, intervalMs: 50, what: `gauges ${up ? "up" : "down"} on every node` },
  );
  return Date.now() - from;
}

/** Nodes to publish to and poll: running and not taken out (killed / draining). */
function liveNodes() {
  return ctx.nodes.filter((n) => n.running && !ctx.down.has(n.index));
}

async function scrapeAll(nodes = liveNodes()) {
  await Promise.all(nodes.map((n) => n.metrics().catch(() => null)));
}

/**
 * Polls every group's member count on every live node until all equal the number of
 * joined clients of the group, and stay so for `stableMs` (a count that is right only
 * until a reaper runs is not right). Returns {ms} from `since` to the start of that
 * streak, or {ms: null, last} past since + limitMs + MEMBERS_GRACE_MS.
 */
async function memberConvergence(since, limitMs, { stableMs = MEMBERS_STABLE_MS } = {}) {
  const deadline = since + limitMs + MEMBERS_GRACE_MS;
  let last = "";
  let streak = null;
  for (let round = 0; round < 1000 && (Date.now() < deadline || streak !== null); round++) {
    const roundAt = Date.now();
    const mismatches = [];
    await Promise.all(
      liveNodes().flatMap((n) =>
        GROUPS.map(async (g) => {
          try {
            const res = await fetch(`${n.origin}/api/v1/hubs/${HUB}/groups/${g}`, { signal: AbortSignal.timeout(2000) });
            const text = await res.text();
            const want = ctx.fleet.joinedCount(g);
            const got = res.status === 200 ? JSON.parse(text).members : `HTTP ${res.status}`;
            if (got !== want) mismatches.push(`${n.nodeId} ${g}: ${got} != ${want}`);
          } catch (err) {
            mismatches.push(`${n.nodeId} ${g}: ${err.message}`);
          }
        }),
      ),
    );
    if (mismatches.length === 0) {
      streak ??= roundAt;
      if (Date.now() - streak >= stableMs) return { ms: Math.max(0, streak - since) };
    } else {
      streak = null;
      last = `${mismatches.length} wrong, e.g. ${mismatches.slice(0, 3).join("; ")}`;
    }
    await delay(250);
  }
  return { ms: null, last };
}

const seconds = (ms) => `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)}s`;

/**
 * Runs one scenario: load, `fault()`, load until recovered + LOAD_AFTER_MS, drain, figures,
 * table row, assertions. `fault` resolves {faultAt, healedAt}; `kind` is "none", "redis"
 * or "crash" (then `victim` is the node index). `reap`: "report" waits (as part of the
 * recovery) for a survivor to reap the victim and reports when; "forbid" watches the
 * survivors' hubcast_nodes_reaped_total for a heartbeat TTL + interval + 3 s and fails if
 * it grew.
 */
async function runScenario({ n, name, kind, victim, fault, membersLimitMs = MEMBERS_LIMIT_MS, reap }) {
  const { fleet, publisher } = ctx;
  const row = { n, name, notes: [], failures: [] };
  const failures = row.failures;
  const logOffsets = new Map(ctx.nodes.map((node) => [node.logFile, node.logSize()]));

  const ready = await waitFor(() => fleet.allJoined(), { timeoutMs: 30_000, what: "every client joined" }).catch(() => false);
  if (!ready) failures.push(`at start only ${fleet.clients.filter((c) => c.joined).length}/${fleet.clients.length} clients joined`);

  const atStart = await memberConvergence(Date.now(), 0, { stableMs: 0 });
  if (atStart.ms === null) row.notes.push(`member counts already wrong when the scenario started (left by the one before): ${atStart.last}`);

  const nodesAtStart = liveNodes();
  await scrapeAll(nodesAtStart);
  const m0 = new Map(nodesAtStart.map((node) => [node, node.lastMetrics]));
  const reconnects0 = fleet.totalReconnects();
  const scraper = setInterval(() => scrapeAll().catch(() => {}), 1000);
  loop.reset();

  publisher.start(n);
  let faultInfo;
  let victims = [];
  let reapWatch = Promise.resolve(null);
  let reapedAfter = null;
  let recovery = "-";
  let members;
  try {
    await delay(LOAD_BEFORE_MS);
    await scrapeAll();
    if (kind === "crash") victims = fleet.clients.filter((c) => c.node === victim);
    const survivors = liveNodes().filter((node) => node.index !== victim);
    const reapedNow = () => metricSum(survivors.flatMap((s) => s.lastMetrics ?? []), "hubcast_nodes_reaped_total");
    const reaped0 = reapedNow();

    faultInfo = await fault();
    const { faultAt, healedAt } = faultInfo;
    if (faultInfo.gauges) {
      const upMs = await gaugesSay(true, healedAt);
      row.notes.push(`gauges (hubcast_ready, hubcast_redis_subscriptions) on every node: down ${faultInfo.gauges.down} ms after Redis died, up ${upMs} ms after it was back`);
      if (faultInfo.gauges.down > GAUGE_LIMIT_MS) failures.push(`gauges took ${faultInfo.gauges.down} ms to say Redis was gone (limit ${GAUGE_LIMIT_MS} ms)`);
    }

    // fresh deliveries (messages created after the heal), first per node of the client
    const firstFresh = new Map();
    fleet.watch = (client, id, now) => {
      if (firstFresh.has(client.node)) return;
      const m = publisher.messages.get(id);
      if (m && m.createdAt >= healedAt) firstFresh.set(client.node, now);
    };
    if (reap) {
      reapWatch = waitFor(
        async () => {
          await scrapeAll(survivors);
          const grew = reapedNow() - reaped0;
          return grew > 0 ? grew : false;
        },
        { timeoutMs: reap === "report" ? MEMBERS_LIMIT_KILL_MS : HEARTBEAT_TTL_MS + HEARTBEAT_INTERVAL_MS + 3000, intervalMs: 250 },
      ).then((grew) => {
        reapedAfter = Date.now() - faultAt;
        return grew;
      }, () => 0);
    }

    const recovered = (async () => {
      if (kind === "crash") {
        const back = (c) => c.joined && c.rejoinAfter(faultAt) !== null;
        const ok = await waitFor(() => victims.every(back), { timeoutMs: RECOVERY_DEADLINE_MS, intervalMs: 50 }).catch(() => false);
        if (!ok) return `${victims.filter((c) => !back(c)).length}/${victims.length} not rejoined`;
        if (victims.length === 0) return "no clients on the victim";
        const last = Math.max(...victims.map((c) => c.rejoinAfter(faultAt)));
        return `${victims.length} rejoined +${seconds(last - faultAt)}`;
      }
      if (kind === "none") return "-";
      const nodesWithClients = () => new Set(fleet.clients.filter((c) => c.joined).map((c) => c.node));
      const ok = await waitFor(() => [...nodesWithClients()].every((i) => firstFresh.has(i)), { timeoutMs: RECOVERY_DEADLINE_MS, intervalMs: 50 }).catch(() => false);
      const answers202 = publisher.messagesOf(n).flatMap((m) => m.attempts).filter((a) => a.status === 202 && a.answeredAt >= healedAt);
      const first202 = Math.min(...answers202.map((a) => a.answeredAt));
      const first202n3 = Math.min(...answers202.filter((a) => a.node === 2).map((a) => a.answeredAt));
      const n3 = firstFresh.get(2);
      return [
        Number.isFinite(first202) ? `202 +${seconds(first202 - healedAt)}` : "no 202",
        Number.isFinite(first202n3) ? `n3 202 +${seconds(first202n3 - healedAt)}` : "no n3 202",
        n3 !== undefined ? `n3 deliv +${seconds(n3 - healedAt)}` : "n3 deliv none",
        ok ? null : "not every node",
      ].filter(Boolean).join(", ");
    })();
    // after a crash, counts are checked once the victims are back (before that, the
    // victims' old memberships and their clients' view agree: nothing happened yet)
    const converged = (kind === "crash" ? recovered : Promise.resolve()).then(() => memberConvergence(healedAt, membersLimitMs));
    [recovery, members] = await Promise.all([recovered, converged, reap === "report" ? reapWatch : null]);
    await delay(LOAD_AFTER_MS);
  } finally {
    await publisher.stop().catch((err) => row.notes.push(`publisher: ${err.message}`));
    clearInterval(scraper);
    fleet.watch = null;
  }
  const reapedGrew = await reapWatch;

  // every client received everything it will get: all expected arrived, or quiet
  const exclusions = new Map();
  if (kind === "crash") {
    for (const c of victims) exclusions.set(c.index, [faultInfo.faultAt - 1000, c.rejoinAfter(faultInfo.faultAt) ?? Infinity]);
  }
  const messages = publisher.messagesOf(n);
  const drained = await waitFor(
    () => account(messages, fleet, exclusions).lost === 0 || Date.now() - fleet.lastDeliveryAt >= QUIET_MS,
    { timeoutMs: DRAIN_DEADLINE_MS, intervalMs: 250 },
  ).catch(() => false);
  if (!drained) row.notes.push(`deliveries still arriving ${seconds(DRAIN_DEADLINE_MS)} after publishing stopped`);

  await scrapeAll(nodesAtStart.filter((node) => node.running));
  let counted = 0;
  let redisReconnects = 0;
  let reaped = 0;
  let recovered = 0;
  for (const [node, before] of m0) {
    counted += countedFailures(node.lastMetrics) - countedFailures(before);
    redisReconnects += metricSum(node.lastMetrics, "hubcast_redis_reconnects_total") - metricSum(before, "hubcast_redis_reconnects_total");
    reaped += metricSum(node.lastMetrics, "hubcast_nodes_reaped_total") - metricSum(before, "hubcast_nodes_reaped_total");
    recovered += metricSum(node.lastMetrics, "hubcast_history_recovered_total") - metricSum(before, "hubcast_history_recovered_total");
  }

  const a = account(messages, fleet, exclusions);
  const ans = answers(messages);
  Object.assign(row, {
    publishes: a.publishes, accepted: a.accepted, other: ans.attempts - (ans.byCode["202"] ?? 0),
    retries: ans.retries, replayed: ans.replayed, expected: a.expected, received: a.received,
    lost: a.lost, counted, recovered, lostUncounted: Math.max(0, a.lost - counted), duplicates: a.duplicates,
    reconnects: fleet.totalReconnects() - reconnects0, recovery,
    members: (members.ms === null ? `no (>${seconds(membersLimitMs + MEMBERS_GRACE_MS)})` : seconds(members.ms)) +
      (reap === "report" ? (reapedGrew ? `, reaped +${seconds(reapedAfter)}` : ", not reaped") : ""),
    byCode: ans.byCode,
  });
  row.notes.push(
    `gave up ${a.gaveUp}; received but not expected ${a.extra}; duplicate copies ${a.duplicateCopies}; ` +
      `lost by client node ${JSON.stringify(a.lostByNode)}${a.lostSample.length ? ` e.g. ${a.lostSample.join(", ")}` : ""}; ` +
      `redis reconnects ${redisReconnects}; nodes reaped ${reaped}; test event loop p99 ${(loop.percentile(99) / 1e6).toFixed(0)} ms max ${(loop.max / 1e6).toFixed(0)} ms`,
  );
  if (kind === "crash") {
    row.notes.push(
      `${victims.length} clients of ${ctx.nodes[victim].nodeId}: messages accepted from 1 s before the fault until each one's rejoin ` +
        `not expected for it (${a.excluded} deliveries excluded); clients per node now ${JSON.stringify(fleet.distribution())}`,
    );
  }
  if (members.ms === null) row.notes.push(`member counts: ${members.last}`);
  const wrong = fleet.clients.reduce((s, c) => s + c.wrongGroup, 0);
  if (wrong) row.notes.push(`${wrong} events of another group`);

  // assertions, collected (the table is printed first)
  if (row.lostUncounted !== 0) failures.push(`${row.lostUncounted} deliveries lost and not counted (lost ${a.lost}, counted ${counted})`);
  if (row.duplicates !== 0) failures.push(`${row.duplicates} (message, client) pairs received more than once`);
  if (kind === "redis" && row.reconnects !== 0) failures.push(`${row.reconnects} client reconnects during a Redis fault`);
  if (members.ms === null || members.ms > membersLimitMs) {
    failures.push(`member counts not right on every node within ${seconds(membersLimitMs)} (${members.ms === null ? members.last : seconds(members.ms)})`);
  }
  if (reap === "forbid" && reapedGrew) failures.push(`survivors' hubcast_nodes_reaped_total grew by ${reapedGrew} after a graceful drain`);
  if (wrong) failures.push(`${wrong} events delivered to clients of another group`);

  ctx.rows.push(row);
  console.log(`\n${formatTable([row])}\n`);
  if (failures.length) {
    ctx.failed = true;
    const logs = ctx.nodes
      .map((node) => `--- ${node.nodeId} (${node.logFile}) WARN/ERROR since the scenario started ---\n${node.problems(logOffsets.get(node.logFile) ?? 0, 12).join("\n")}`)
      .join("\n");
    const clientLogs = fleet.clients.filter((c) => c.logger.lines.length).slice(0, 2).map((c) => `client ${c.index}: ${c.logger.lines.slice(-3).join(" | ")}`);
    console.log(`${logs}\n${clientLogs.join("\n")}\nlogs: ${ctx.dir}`);
  }
  assert.deepEqual(failures, [], `${name}: ${failures.join("; ")}`);
}

describe("chaos: three nodes, Redis faults, partitions and crashes under load", { timeout: 8 * 60_000 }, () => {
  before(async () => {
    ctx.dir = mkdtempSync(path.join(tmpdir(), "hubcast-chaos-"));
    console.log(`hubcast ${HUBCAST_BIN}\nlogs in ${ctx.dir}`);
    ctx.redis = new RedisProcess(await freePort(), path.join(ctx.dir, "redis.log"));
    await ctx.redis.start();
    ctx.proxy = new TcpProxy(ctx.redis.port);
    await ctx.proxy.listen();
    const prefix = uniqueRedisPrefix("chaos");
    ctx.prefix = prefix;
    ctx.nodes = [];
    for (let i = 0; i < NODES; i++) {
      ctx.nodes.push(new HubcastNode({
        index: i, nodeId: `n${i + 1}`, port: await freePort(), metricsPort: await freePort(), prefix, logDir: ctx.dir,
        redisUrl: i === 2 ? `redis://127.0.0.1:${ctx.proxy.port}` : ctx.redis.url,
      }));
    }
    await Promise.all(ctx.nodes.map((node) => node.start()));
    ctx.lb = new LoadBalancer(ctx.nodes.map((node) => node.port), { onRoute: (client, node) => ctx.fleet?.routed(client, node) });
    await ctx.lb.listen();
    ctx.fleet = new Fleet({
      count: NODES * CLIENTS_PER_NODE,
      groupOf: (i) => GROUPS[i % GROUPS.length],
      urlFor: (i) => `http://127.0.0.1:${ctx.lb.ports[Math.floor(i / CLIENTS_PER_NODE)]}/hubs/${HUB}?client=${i}`,
    });
    await ctx.fleet.startAll({ concurrency: 20 });
    const dist = ctx.fleet.distribution();
    assert.deepEqual(dist, { 0: 100, 1: 100, 2: 100 }, `clients per node: ${JSON.stringify(dist)}`);
    for (const g of GROUPS) {
      const perNode = [0, 1, 2].map((i) => ctx.fleet.byGroup.get(g).filter((c) => c.node === i).length);
      assert.ok(perNode.every((k) => k > 0), `${g} has members on every node: ${perNode}`);
    }
    ctx.publisher = new Publisher({ liveNodes, groups: GROUPS, hub: HUB, rate: RATE, maxInFlight: 64 });
    loop.enable();
    console.log(`cluster up: redis :${ctx.redis.port} (node 3 via proxy :${ctx.proxy.port}), nodes ${ctx.nodes.map((x) => `${x.nodeId} :${x.port}`).join(", ")}, ${ctx.fleet.clients.length} clients joined in ${seconds(Date.now() - ctx.started)}`);
  }, { timeout: 120_000 });

  after(async () => {
    if (ctx.rows.length) console.log(`\n=== chaos summary (${seconds(Date.now() - ctx.started)}) ===\n${formatTable(ctx.rows)}\n`);
    loop.disable();
    const steps = [
      () => ctx.publisher?.stop(),
      () => ctx.fleet?.stopAll(),
      () => ctx.lb?.close(),
      () => ctx.proxy?.close(),
      () => Promise.all(ctx.nodes.map((node) => node.stop("SIGKILL"))),
      () => ctx.redis?.stop("SIGKILL"),
    ];
    for (const step of steps) {
      try {
        await withTimeout(Promise.resolve(step()), 15_000, "cleanup step");
      } catch (err) {
        console.log(`cleanup: ${err.message}`);
      }
    }
    if (!ctx.failed && process.env.HUBCAST_CHAOS_KEEP_LOGS !== "1" && ctx.dir) rmSync(ctx.dir, { recursive: true, force: true });
    else if (ctx.dir) console.log(`node and redis logs kept in ${ctx.dir}`);
  }, { timeout: 90_000 });

  const redisRestart = (downMs) => async () => {
    const faultAt = Date.now();
    await ctx.redis.stop("SIGKILL");
    const downGauges = await gaugesSay(false, faultAt);
    await delay(Math.max(0, downMs - (Date.now() - faultAt)));
    await ctx.redis.start();
    const healedAt = Date.now();
    return { faultAt, healedAt, gauges: { down: downGauges, healedAt } };
  };

  const partition = (ms) => async () => {
    const faultAt = Date.now();
    ctx.proxy.blackhole();
    await delay(ms);
    ctx.proxy.heal();
    return { faultAt, healedAt: Date.now() };
  };

  it("1. baseline (no fault)", { timeout: SCENARIO_TIMEOUT_MS }, () =>
    runScenario({ n: 1, name: "baseline", kind: "none", fault: async () => ({ faultAt: Date.now(), healedAt: Date.now() }) }));

  it("2. Redis restarted, down 1.5 s (comes back empty)", { timeout: SCENARIO_TIMEOUT_MS }, () =>
    runScenario({ n: 2, name: "redis restart 1.5s", kind: "redis", fault: redisRestart(1500) }));

  it("3. Redis restarted, down 3.5 s (comes back empty)", { timeout: SCENARIO_TIMEOUT_MS }, () =>
    runScenario({ n: 3, name: "redis restart 3.5s", kind: "redis", fault: redisRestart(3500) }));

  it("4. CLIENT PAUSE 5000 ALL", { timeout: SCENARIO_TIMEOUT_MS }, () =>
    runScenario({
      n: 4, name: "CLIENT PAUSE 5s", kind: "redis",
      fault: async () => {
        const faultAt = Date.now();
        assert.equal(await redisCommand(ctx.redis.port, ["CLIENT", "PAUSE", "5000", "ALL"]), "OK");
        await delay(5000);
        await waitFor(async () => (await redisCommand(ctx.redis.port, ["PING"], { timeoutMs: 500 })) === "PONG", { timeoutMs: 5000, what: "Redis to answer after the pause" });
        return { faultAt, healedAt: Date.now() };
      },
    }));

  it("5. node 3 partitioned from Redis for 10 s", { timeout: SCENARIO_TIMEOUT_MS }, () =>
    runScenario({ n: 5, name: "partition n3 10s", kind: "redis", fault: partition(10_000) }));

  it("6. node 3 partitioned from Redis for 25 s (past the heartbeat TTL: reaped)", { timeout: SCENARIO_TIMEOUT_MS }, () =>
    runScenario({ n: 6, name: "partition n3 25s", kind: "redis", fault: partition(25_000) }));

  it("7. kill -9 of node 3 (clients fail over), then a fresh node 3", { timeout: SCENARIO_TIMEOUT_MS }, async () => {
    const n3 = ctx.nodes[2];
    let failure = null;
    try {
      await runScenario({
        n: 7, name: "kill -9 n3", kind: "crash", victim: 2, membersLimitMs: MEMBERS_LIMIT_KILL_MS, reap: "report",
        fault: async () => {
          ctx.lb.markDead(2);
          ctx.down.add(2);
          const faultAt = Date.now();
          await n3.stop("SIGKILL");
          return { faultAt, healedAt: faultAt };
        },
      });
    } catch (err) {
      failure = err;
    }
    // the next scenario starts with three nodes again: a fresh n3, once the dead one's
    // heartbeat has expired (else the new one would keep the old one alive)
    await waitFor(async () => (await redisCommand(ctx.redis.port, ["EXISTS", `${ctx.prefix}:node:{n3}:alive`])) === 0, {
      timeoutMs: HEARTBEAT_TTL_MS + 5000, intervalMs: 100, what: "the killed n3's heartbeat key to expire",
    });
    await n3.start();
    ctx.lb.markAlive(2);
    ctx.down.delete(2);
    if (failure) throw failure;
  });

  it("8. SIGTERM of node 2 (graceful drain, clients fail over; nobody reaps it)", { timeout: SCENARIO_TIMEOUT_MS }, async () => {
    const n2 = ctx.nodes[1];
    let exit;
    await runScenario({
      n: 8, name: "SIGTERM n2", kind: "crash", victim: 1, reap: "forbid",
      fault: async () => {
        ctx.lb.markDead(1);
        ctx.down.add(1);
        const faultAt = Date.now();
        exit = n2.stop("SIGTERM", 20_000);
        return { faultAt, healedAt: faultAt };
      },
    }).finally(async () => {
      const info = await exit;
      if (info) ctx.rows.at(-1)?.notes.push(`n2 exited with ${JSON.stringify(info)}`);
    });
  });
});
