// Two hubcast nodes joined through a Redis backplane, driven with the official
// @microsoft/signalr client: a publish on one node reaches clients held by the
// other, each client exactly once, and the group / connection API works for
// connections held by any node.
//
// The file starts its own redis-server (free port, no persistence) and two
// nodes A and B with a per-run key prefix, and waits for /readyz 200 on both.
// With HUBCAST_TEST_REDIS=cluster it starts a Redis Cluster instead (three
// masters and three replicas) and gives the nodes its redis+cluster:// URL.

import { describe, it, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { HubConnectionState } from "@microsoft/signalr";
import {
  apiRequest,
  connect,
  recordEvents,
  safeStop,
  startBackplaneRedis,
  startClusterNode,
  TEST_REDIS_MODE,
  uniqueGroup,
  uniqueRedisPrefix,
  withTimeout,
} from "./helpers.mjs";

const TEST_TIMEOUT = 15_000;
const HUB_PATH = "/hubs/tasks";
const HUB = "tasks";

let redis;
let nodeA;
let nodeB;
const connections = [];

const groupUrl = (node, group) =>
  `${node.origin}/api/v1/hubs/${HUB}/groups/${encodeURIComponent(group)}`;
const groupConnectionUrl = (node, group, connectionId) =>
  `${groupUrl(node, group)}/connections/${encodeURIComponent(connectionId)}`;
const connectionUrl = (node, connectionId) =>
  `${node.origin}/api/v1/hubs/${HUB}/connections/${encodeURIComponent(connectionId)}`;

function diagnostics() {
  return [nodeA?.logs(), nodeB?.logs(), redis?.logs()].filter(Boolean).join("\n");
}

async function open(node) {
  const connection = await connect(node.hubUrl(HUB_PATH));
  connections.push(connection);
  assert.equal(connection.state, HubConnectionState.Connected);
  return connection;
}

async function join(connection, group) {
  await withTimeout(connection.invoke("JoinGroup", group), 5000, `JoinGroup(${group})`);
}

async function publish(node, group, message) {
  const res = await apiRequest("POST", groupUrl(node, group), message);
  assert.equal(
    res.status,
    202,
    `POST ${groupUrl(node, group)}: status ${res.status}, body ${res.text}\n${diagnostics()}`,
  );
  assert.equal(typeof res.body, "object", `publish response must be JSON, got ${res.text}`);
  assert.equal(typeof res.body.correlationId, "string", `no correlationId in ${res.text}`);
  return res;
}

before(async () => {
  redis = await startBackplaneRedis();
  const prefix = uniqueRedisPrefix("js");
  [nodeA, nodeB] = await Promise.all([
    startClusterNode({ redisUrl: redis.url, prefix, nodeId: `${prefix}-a` }),
    startClusterNode({ redisUrl: redis.url, prefix, nodeId: `${prefix}-b` }),
  ]);
});

afterEach(async () => {
  await Promise.all(connections.splice(0).map(safeStop));
});

after(async () => {
  await Promise.all(connections.splice(0).map(safeStop));
  await Promise.all([nodeA, nodeB].filter(Boolean).map((n) => n.stop("SIGKILL")));
  if (redis) await redis.stop("SIGKILL");
});

describe(`Redis backplane with two nodes (${TEST_REDIS_MODE} Redis)`, () => {
  it("a publish on B reaches a client on A with the exact arguments", { timeout: TEST_TIMEOUT }, async () => {
    const client = await open(nodeA);
    const progress = recordEvents(client, "TaskProgress");
    const group = uniqueGroup("g");
    await join(client, group);

    const args = [
      "job-7",
      { stage: "upscale", progress: { percent: 42.5, steps: [1, { sub: "ü" }], eta: null }, tags: [] },
      "Grüße, 世界 — ✓ 🚀",
      3,
      true,
      null,
    ];
    const res = await publish(nodeB, group, { target: "TaskProgress", arguments: args });
    assert.equal(res.body.nodes, 1, `only node A holds a member of ${group}: ${res.text}`);
    assert.equal(res.body.localConnections, 0, `node B holds no member of ${group}: ${res.text}`);

    await progress.waitForCount(1);
    assert.deepEqual(progress.events, [args]);

    const members = await apiRequest("GET", groupUrl(nodeB, group));
    assert.equal(members.status, 200, `GET ${groupUrl(nodeB, group)}: ${members.status} ${members.text}`);
    assert.equal(members.body?.members, 1, `cluster-wide member count seen from B: ${members.text}`);
  });

  it("clients on A and B in the same group each get a publish exactly once", { timeout: TEST_TIMEOUT }, async () => {
    const [onA, onB] = await Promise.all([open(nodeA), open(nodeB)]);
    const eventsA = recordEvents(onA, "TaskProgress");
    const eventsB = recordEvents(onB, "TaskProgress");
    const group = uniqueGroup("g2");
    await Promise.all([join(onA, group), join(onB, group)]);

    const payload = ["both", { n: 1 }];
    const res = await publish(nodeB, group, { target: "TaskProgress", arguments: payload });
    assert.equal(res.body.nodes, 2, `both nodes hold a member of ${group}: ${res.text}`);
    assert.equal(res.body.localConnections, 1, `node B holds one member of ${group}: ${res.text}`);

    await Promise.all([eventsA.waitForCount(1), eventsB.waitForCount(1)]);

    // A marker published afterwards must be the very next event on each
    // client: a duplicate of the first event would arrive before it.
    const marker = ["marker", { n: 2 }];
    await publish(nodeB, group, { target: "TaskProgress", arguments: marker });
    await Promise.all([eventsA.waitForCount(2), eventsB.waitForCount(2)]);
    assert.deepEqual(eventsA.events, [payload, marker], "client on A");
    assert.deepEqual(eventsB.events, [payload, marker], "client on B");
  });

  it("B adds a connection held by A to a group and sends to it directly", { timeout: TEST_TIMEOUT }, async () => {
    const client = await open(nodeA);
    const id = client.connectionId;
    assert.equal(typeof id, "string", "negotiate must give a connectionId");
    assert.ok(id.length > 0);
    const progress = recordEvents(client, "TaskProgress");
    const direct = recordEvents(client, "Direct");
    const group = uniqueGroup("g3");

    const put = await apiRequest("PUT", groupConnectionUrl(nodeB, group, id));
    assert.equal(
      put.status,
      200,
      `PUT ${groupConnectionUrl(nodeB, group, id)}: ${put.status} ${put.text}\n${diagnostics()}`,
    );

    const groupArgs = ["added-by-b", { via: "PUT" }];
    const res = await publish(nodeB, group, { target: "TaskProgress", arguments: groupArgs });
    await progress.waitForCount(1);
    assert.deepEqual(progress.events, [groupArgs], `publish answer was ${res.text}`);

    const directArgs = ["just-you", { id, text: "naïve ☕" }];
    const sent = await apiRequest("POST", connectionUrl(nodeB, id), { target: "Direct", arguments: directArgs });
    assert.equal(
      sent.status,
      202,
      `POST ${connectionUrl(nodeB, id)}: ${sent.status} ${sent.text}\n${diagnostics()}`,
    );
    await direct.waitForCount(1);
    assert.deepEqual(direct.events, [directArgs]);
    assert.deepEqual(progress.events, [groupArgs], "the direct send must not reach the group handler");
  });
});
