// Automatic reconnect across a node restart: SIGTERM makes hubcast send
// Close {allowReconnect: true} to every client and exit; a new process on the
// same port takes the client back, which rejoins its group in onreconnected
// and receives events published after the restart.

import { it, after } from "node:test";
import assert from "node:assert/strict";
import { HubConnectionState } from "@microsoft/signalr";
import {
  buildConnection,
  publishToGroup,
  recordEvents,
  safeStop,
  startServer,
  uniqueGroup,
  waitFor,
  withTimeout,
} from "./helpers.mjs";

const servers = [];
let connection;

after(async () => {
  await safeStop(connection);
  for (const s of servers) await s.stop("SIGKILL");
});

it("withAutomaticReconnect survives SIGTERM and a restart on the same port", { timeout: 45_000 }, async () => {
  const first = await startServer();
  servers.push(first);
  const hubUrl = first.hubUrl("/hubs/tasks");
  const group = uniqueGroup("reconnect");

  // Retry quickly (the default 0/2/10/30 s schedule would only slow the test
  // down); about 20 s of attempts in all.
  const delays = [0, 100, 250, 500, ...Array(20).fill(1000)];
  connection = buildConnection(hubUrl, { reconnect: delays });

  const lifecycle = [];
  const rejoinErrors = [];
  let closedWith = null;
  connection.onreconnecting((err) => lifecycle.push({ event: "reconnecting", error: err?.message }));
  connection.onreconnected(async (connectionId) => {
    lifecycle.push({ event: "reconnected", connectionId });
    try {
      await connection.invoke("JoinGroup", group);
      lifecycle.push({ event: "rejoined", connectionId });
    } catch (err) {
      rejoinErrors.push(err.message);
    }
  });
  connection.onclose((err) => {
    closedWith = err ?? "closed without error";
  });
  const progress = recordEvents(connection, "TaskProgress");
  const detail = () =>
    `lifecycle: ${JSON.stringify(lifecycle)}\nrejoin errors: ${JSON.stringify(rejoinErrors)}\n` +
    `closed: ${closedWith}\n${connection.testLogger.dump()}`;

  await withTimeout(connection.start(), 10_000, "start()");
  const firstId = connection.connectionId;
  await withTimeout(connection.invoke("JoinGroup", group), 5000, "JoinGroup");

  // Sanity check before the restart.
  let res = await publishToGroup(first.origin, "tasks", group, { target: "TaskProgress", arguments: ["t1", 10, "before"] });
  assert.equal(res.status, 202, res.text);
  await progress.waitForCount(1);

  // SIGTERM: the server says goodbye with Close {allowReconnect: true}.
  const closesBefore = connection.testLogger.receivedRecords.filter((r) => r.type === 7).length;
  const exit = await first.stop("SIGTERM", 10_000);
  assert.equal(exit.killed, false, `hubcast did not exit within 10 s of SIGTERM\n${first.logs()}`);
  assert.equal(exit.signal, null, `hubcast should handle SIGTERM and exit by itself: ${JSON.stringify(exit)}`);
  await waitFor(() => lifecycle.some((e) => e.event === "reconnecting"), {
    timeoutMs: 5000,
    what: "onreconnecting after SIGTERM",
    detail,
  });
  const closes = connection.testLogger.receivedRecords.filter((r) => r.type === 7).slice(closesBefore);
  assert.ok(closes.length >= 1, `expected a Close message on SIGTERM, got none\n${detail()}`);
  for (const close of closes) {
    assert.equal(close.allowReconnect, true, JSON.stringify(close));
    assert.equal(close.error, undefined, `a graceful shutdown is no error: ${JSON.stringify(close)}`);
  }
  assert.equal(lifecycle[0].event, "reconnecting");

  // Restart on the same port; the client finds it by itself.
  const second = await startServer({ port: first.port });
  servers.push(second);
  await waitFor(
    () => connection.state === HubConnectionState.Connected && lifecycle.at(-1)?.event === "rejoined",
    { timeoutMs: 20_000, what: "reconnect and rejoin after restart", detail },
  );
  assert.equal(closedWith, null, `onclose must not fire: ${closedWith}`);
  const events = lifecycle.map((e) => e.event);
  assert.deepEqual(events.slice(0, 1), ["reconnecting"], detail());
  assert.deepEqual(events.slice(-2), ["reconnected", "rejoined"], detail());
  const reconnectedId = lifecycle.at(-1).connectionId;
  assert.equal(typeof reconnectedId, "string", "a new negotiate gives a new id");
  assert.notEqual(reconnectedId, firstId, "the restarted node issues a new connection id");

  res = await publishToGroup(second.origin, "tasks", group, {
    target: "TaskProgress",
    arguments: ["t1", 50, { note: "after restart ✓" }],
  });
  assert.equal(res.status, 202, res.text);
  assert.equal(res.body?.members, 1, res.text);
  await progress.waitForCount(2);
  assert.deepEqual(progress.events, [
    ["t1", 10, "before"],
    ["t1", 50, { note: "after restart ✓" }],
  ]);
});
