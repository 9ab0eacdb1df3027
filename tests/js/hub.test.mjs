// End-to-end tests of hubcast with the official @microsoft/signalr client:
// negotiation, skipNegotiation, group delivery over the HTTP publish API,
// group and hub isolation, hub method errors.

import { describe, it, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { HubConnectionState } from "@microsoft/signalr";
import {
  HUB_PATHS,
  connect,
  hubName,
  publishToGroup,
  recordEvents,
  safeStop,
  startServer,
  uniqueGroup,
  withTimeout,
} from "./helpers.mjs";

const TEST_TIMEOUT = 20_000;

let server;
const connections = [];

async function open(hubPath, opts) {
  const connection = await connect(server.hubUrl(hubPath), opts);
  connections.push(connection);
  return connection;
}

async function join(connection, group) {
  await withTimeout(connection.invoke("JoinGroup", group), 5000, `JoinGroup(${group})`);
}

async function publishOk(hub, group, message) {
  const res = await publishToGroup(server.origin, hub, group, message);
  assert.equal(res.status, 202, `publish to ${hub}/${group}: status ${res.status}, body ${res.text}`);
  return res;
}

// An object with nested values, unicode outside the BMP, nulls, floats,
// empty containers: it must come back exactly as sent.
const RICH_ARGUMENTS = [
  "t1",
  50,
  "half",
  {
    id: "job-42",
    progress: { percent: 99.5, steps: [1, 2, { sub: "x" }], done: false, eta: null },
    tags: ["α", "β", "γ"],
    meta: { nested: { deeper: { text: "Grüße, 世界 — ✓ 🚀" } } },
    empty: {},
    none: [],
    big: 9007199254740991,
    negative: -12.25,
  },
  "naïve café ☕ 日本語 🎉 \"quoted\" back\\slash\nnewline",
  -7,
  0,
  true,
  null,
];

before(async () => {
  server = await startServer();
});

afterEach(async () => {
  await Promise.all(connections.splice(0).map(safeStop));
});

after(async () => {
  if (server) await server.stop("SIGKILL");
});

describe("delivery from the HTTP publish API", () => {
  it("negotiated connection receives a group event with the exact payload", { timeout: TEST_TIMEOUT }, async () => {
    const connection = await open("/hubs/tasks");
    assert.equal(connection.state, HubConnectionState.Connected);
    assert.equal(typeof connection.connectionId, "string", "negotiate must give a connectionId");
    assert.ok(connection.connectionId.length > 0);

    const progress = recordEvents(connection, "TaskProgress");
    const group = uniqueGroup("neg");
    await join(connection, group);

    const res = await publishOk("tasks", group, { target: "TaskProgress", arguments: RICH_ARGUMENTS });
    assert.equal(typeof res.body, "object", `publish response must be JSON, got ${res.text}`);
    assert.equal(typeof res.body.correlationId, "string", `no correlationId in ${res.text}`);
    assert.equal(res.body.members, 1, `one member joined ${group}: ${res.text}`);

    await progress.waitForCount(1);
    assert.deepEqual(progress.events, [RICH_ARGUMENTS]);

    // The wire record is a plain Invocation without invocationId (a
    // fire-and-forget event, not a client-result call).
    const invocations = connection.testLogger.receivedRecords.filter((r) => r.type === 1);
    assert.equal(invocations.length, 1, JSON.stringify(invocations));
    assert.equal(invocations[0].target, "TaskProgress");
    assert.equal(invocations[0].invocationId, undefined, JSON.stringify(invocations[0]));
    assert.deepEqual(invocations[0].arguments, RICH_ARGUMENTS);
  });

  it("skipNegotiation WebSocket connection joins and receives", { timeout: TEST_TIMEOUT }, async () => {
    const connection = await open("/hubs/video-generation", { skipNegotiation: true });
    assert.equal(connection.state, HubConnectionState.Connected);
    assert.equal(connection.connectionId, null, "no negotiate, so the client knows no id");

    const events = recordEvents(connection, "VideoGenerationProgress");
    const group = uniqueGroup("skip");
    await join(connection, group);

    const args = ["vid-1", { stage: "render", percent: 12.5, frames: [1, 2, 3] }, "ünïcödé ✓"];
    const res = await publishOk("video-generation", group, { target: "VideoGenerationProgress", arguments: args });
    assert.equal(res.body?.members, 1, res.text);

    await events.waitForCount(1);
    assert.deepEqual(events.events, [args]);
  });

  it("every hub delivers to its own groups only", { timeout: TEST_TIMEOUT }, async () => {
    // The same group name on every hub: a group belongs to its hub.
    const group = uniqueGroup("allhubs");
    const perHub = [];
    for (const hubPath of HUB_PATHS) {
      const connection = await open(hubPath);
      const recorder = recordEvents(connection, "Hello");
      await join(connection, group);
      perHub.push({ hubPath, name: hubName(hubPath), recorder });
    }
    for (const { name } of perHub) {
      const res = await publishOk(name, group, { target: "Hello", arguments: [name] });
      assert.equal(res.body?.members, 1, `group ${group} of hub ${name} has one member: ${res.text}`);
    }
    for (const { recorder } of perHub) await recorder.waitForCount(1);
    // A second round as a fence: anything misrouted from round one would
    // have reached a connection before its own second message.
    for (const { name } of perHub) {
      await publishOk(name, group, { target: "Hello", arguments: [name, 2] });
    }
    for (const { name, recorder } of perHub) {
      await recorder.waitForCount(2);
      assert.deepEqual(recorder.events, [[name], [name, 2]], `events on hub ${name}`);
    }
  });

  it("SubscribeToTask on the tasks hub joins group task-{taskId}", { timeout: TEST_TIMEOUT }, async () => {
    const connection = await open("/hubs/tasks");
    const events = recordEvents(connection, "TaskCompleted");
    const taskId = uniqueGroup("task");
    await withTimeout(connection.invoke("SubscribeToTask", taskId), 5000, "SubscribeToTask");

    const res = await publishOk("tasks", `task-${taskId}`, {
      target: "TaskCompleted",
      arguments: [taskId, { ok: true }],
    });
    assert.equal(res.body?.members, 1, res.text);
    await events.waitForCount(1);
    assert.deepEqual(events.events, [[taskId, { ok: true }]]);
  });
});

describe("group isolation", () => {
  it("a member of group A does not receive what is published to group B", { timeout: TEST_TIMEOUT }, async () => {
    const groupA = uniqueGroup("A");
    const groupB = uniqueGroup("B");
    const memberA = await open("/hubs/notifications");
    const memberB = await open("/hubs/notifications");
    const eventsA = recordEvents(memberA, "Notify");
    const eventsB = recordEvents(memberB, "Notify");
    await join(memberA, groupA);
    await join(memberB, groupB);

    await publishOk("notifications", groupB, { target: "Notify", arguments: ["for B"] });
    await publishOk("notifications", groupA, { target: "Notify", arguments: ["for A"] });

    await eventsB.waitForCount(1);
    await eventsA.waitForCount(1);
    assert.deepEqual(eventsA.events, [["for A"]], "A-member got only A's event");
    assert.deepEqual(eventsB.events, [["for B"]], "B-member got only B's event");
  });

  it("LeaveGroup stops delivery from that group", { timeout: TEST_TIMEOUT }, async () => {
    const connection = await open("/hubs/spend");
    const events = recordEvents(connection, "SpendUpdated");
    const left = uniqueGroup("left");
    const kept = uniqueGroup("kept");
    await join(connection, left);
    await join(connection, kept);

    await publishOk("spend", left, { target: "SpendUpdated", arguments: ["before leave"] });
    await events.waitForCount(1);

    await withTimeout(connection.invoke("LeaveGroup", left), 5000, "LeaveGroup");
    const res = await publishOk("spend", left, { target: "SpendUpdated", arguments: ["after leave"] });
    assert.equal(res.body?.members, 0, `nobody is left in ${left}: ${res.text}`);
    await publishOk("spend", kept, { target: "SpendUpdated", arguments: ["kept group"] });

    await events.waitForCount(2);
    assert.deepEqual(events.events, [["before leave"], ["kept group"]]);
  });
});

describe("hub methods", () => {
  it("invoking an unknown method rejects with the server's error and keeps the connection", { timeout: TEST_TIMEOUT }, async () => {
    const connection = await open("/hubs/webhooks");
    await assert.rejects(
      withTimeout(connection.invoke("Nope"), 5000, "invoke('Nope')"),
      (err) => {
        assert.ok(err instanceof Error, `rejected with ${err}`);
        assert.match(err.message, /Unknown hub method 'Nope'/);
        return true;
      },
    );
    // The error is per invocation: the connection stays usable.
    assert.equal(connection.state, HubConnectionState.Connected);
    const events = recordEvents(connection, "WebhookDelivered");
    const group = uniqueGroup("after-error");
    await join(connection, group);
    await publishOk("webhooks", group, { target: "WebhookDelivered", arguments: [1] });
    await events.waitForCount(1);
    assert.deepEqual(events.events, [[1]]);
  });
});
