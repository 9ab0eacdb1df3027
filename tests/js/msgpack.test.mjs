// End-to-end tests of hubcast's MessagePack hub protocol with the official
// @microsoft/signalr client and @microsoft/signalr-protocol-msgpack: binary
// frames, values published as JSON reaching MessagePack and JSON clients
// alike, hub methods and their completions, keep-alive, Close.
//
// Besides what the client hands to the application, every binary frame the
// MessagePack client receives is decoded here from the client's trace log
// (logMessageContent), so that the wire shape of each record is checked too:
//   Invocation [1, headers, nil, target, arguments, streamIds]
//   Completion [3, headers, id, 1, error] | [3, headers, id, 2] | [3, headers, id, 3, result]
//   Ping [6], Close [7, error|nil, allowReconnect]

import { describe, it, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { HubConnectionBuilder, HubConnectionState, HttpTransportType } from "@microsoft/signalr";
import { MessagePackHubProtocol } from "@microsoft/signalr-protocol-msgpack";
import { decode } from "@msgpack/msgpack";
import {
  CapturingLogger,
  HUB_PATHS,
  apiRequest,
  connect,
  publishToGroup,
  recordEvents,
  safeStop,
  startServer,
  uniqueGroup,
  waitFor,
  withTimeout,
} from "./helpers.mjs";

const TEST_TIMEOUT = 30_000;

// ---------------------------------------------------------------------------
// A MessagePack connection that records its decoded wire records
// ---------------------------------------------------------------------------

const BINARY_RECEIVED =
  /^\(WebSockets transport\) data received\. Binary data of length (\d+)\. Content: '([0-9a-fx ]*)'\.$/;
const TEXT_RECEIVED = /^\(WebSockets transport\) data received\. String data of length \d+\./;

/** Splits a frame into its VarInt-length-prefixed payloads. */
function splitLengthPrefixed(bytes) {
  const payloads = [];
  let offset = 0;
  while (offset < bytes.length) {
    let length = 0;
    let shift = 0;
    let byte;
    do {
      if (offset >= bytes.length || shift > 28) throw new Error("truncated or overlong length prefix");
      byte = bytes[offset++];
      length |= (byte & 0x7f) << shift;
      shift += 7;
    } while (byte & 0x80);
    if (offset + length > bytes.length) {
      throw new Error(`record of ${length} bytes but only ${bytes.length - offset} left in the frame`);
    }
    payloads.push(bytes.subarray(offset, offset + length));
    offset += length;
  }
  return payloads;
}

/**
 * CapturingLogger that also decodes the binary frames received: `.records`
 * holds every MessagePack record as the decoded array with the time it came
 * (`{raw, at}`), `.handshake` the handshake response text, `.textFrames` the
 * text frames received after the handshake (there should be none),
 * `.undecodable` whatever failed to decode.
 */
class MessagePackLogger extends CapturingLogger {
  constructor() {
    super();
    this.records = [];
    this.handshake = undefined;
    this.textFrames = [];
    this.undecodable = [];
  }

  log(level, message) {
    super.log(level, message);
    if (TEXT_RECEIVED.test(message)) {
      if (this.handshake === undefined) this.handshake = message;
      else this.textFrames.push(message);
      return;
    }
    const m = BINARY_RECEIVED.exec(message);
    if (!m) return;
    let bytes = Uint8Array.from(m[2].split(" ").filter(Boolean), (h) => parseInt(h, 16));
    if (this.handshake === undefined) {
      // The handshake response is JSON ending in 0x1e; records may follow it in the same frame.
      const end = bytes.indexOf(0x1e);
      this.handshake = Buffer.from(end < 0 ? bytes : bytes.subarray(0, end)).toString("utf8");
      bytes = end < 0 ? new Uint8Array(0) : bytes.subarray(end + 1);
    }
    const at = Date.now();
    try {
      for (const payload of splitLengthPrefixed(bytes)) this.records.push({ raw: decode(payload), at });
    } catch (err) {
      this.undecodable.push({ hex: m[2], error: err.message });
    }
  }

  /** Decoded records whose first element (the message type) is `type`. */
  ofType(type) {
    return this.records.filter((r) => Array.isArray(r.raw) && r.raw[0] === type);
  }

  wire() {
    return `--- decoded records ---\n${this.records.map((r) => JSON.stringify(r.raw)).join("\n")}\n` +
      `undecodable: ${JSON.stringify(this.undecodable)}\ntext frames: ${JSON.stringify(this.textFrames)}`;
  }
}

/**
 * Builds (does not start) a HubConnection with the MessagePack hub protocol.
 * `.closes` collects what onclose gave (null for a close without error).
 */
function buildMessagePackConnection(url, { skipNegotiation = false, serverTimeoutMs, keepAliveMs } = {}) {
  const logger = new MessagePackLogger();
  const options = { logMessageContent: true };
  if (skipNegotiation) {
    options.skipNegotiation = true;
    options.transport = HttpTransportType.WebSockets;
  }
  let builder = new HubConnectionBuilder()
    .withUrl(url, options)
    .withHubProtocol(new MessagePackHubProtocol())
    .configureLogging(logger);
  if (serverTimeoutMs !== undefined) builder = builder.withServerTimeout(serverTimeoutMs);
  if (keepAliveMs !== undefined) builder = builder.withKeepAliveInterval(keepAliveMs);
  const connection = builder.build();
  connection.testLogger = logger;
  connection.closes = [];
  connection.onclose((err) => connection.closes.push(err ?? null));
  return connection;
}

function detailOf(connection, server) {
  return `${connection.testLogger.wire()}\n${connection.testLogger.dump()}\n${server ? server.logs() : ""}`;
}

// ---------------------------------------------------------------------------
// Shared node and bookkeeping
// ---------------------------------------------------------------------------

let server;
const connections = [];
const extraServers = [];
const tempDirs = [];

async function openMessagePack(hubPath, opts = {}, on = server) {
  const connection = buildMessagePackConnection(on.hubUrl(hubPath), opts);
  connections.push(connection);
  try {
    await withTimeout(connection.start(), 10_000, `start() of ${hubPath} (messagepack)`);
  } catch (err) {
    err.message += `\n${detailOf(connection, on)}`;
    throw err;
  }
  return connection;
}

async function openJson(hubPath, opts = {}, on = server) {
  const connection = await connect(on.hubUrl(hubPath), opts);
  connections.push(connection);
  return connection;
}

async function join(connection, group) {
  return withTimeout(connection.invoke("JoinGroup", group), 5000, `JoinGroup(${group})`);
}

async function publishOk(hub, group, message, on = server) {
  const res = await publishToGroup(on.origin, hub, group, message);
  assert.equal(res.status, 202, `publish to ${hub}/${group}: status ${res.status}, body ${res.text}`);
  return res;
}

/** The error message `promise` rejects with (fails if it resolves). */
async function rejection(promise, what) {
  try {
    const value = await withTimeout(promise, 5000, what);
    assert.fail(`${what} resolved with ${JSON.stringify(value)} instead of rejecting`);
  } catch (err) {
    if (err instanceof assert.AssertionError) throw err;
    assert.ok(err instanceof Error, `${what} rejected with ${err}`);
    return err.message;
  }
}

/** A node with `toml` as its config file (development mode). */
async function startConfiguredServer(toml) {
  const dir = mkdtempSync(path.join(tmpdir(), "hubcast-msgpack-"));
  tempDirs.push(dir);
  const file = path.join(dir, "hubcast.toml");
  writeFileSync(file, toml);
  const node = await startServer({ extraArgs: ["--config", file] });
  extraServers.push(node);
  return node;
}

before(async () => {
  server = await startServer();
});

afterEach(async () => {
  await Promise.all(connections.splice(0).map(safeStop));
  await Promise.all(extraServers.splice(0).map((s) => s.stop("SIGKILL")));
});

after(async () => {
  if (server) await server.stop("SIGKILL");
  for (const dir of tempDirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------
// Values published as JSON
// ---------------------------------------------------------------------------

// Each case is published as its own event; the first argument names the case.
// The integers sit on MessagePack's encoding boundaries (fixint, uint8/16/32/64,
// negative fixint, int8/16/32/64), the strings and containers on str8/16/32,
// array16 and map16.
const VALUE_CASES = {
  "nested objects": [
    {
      id: "job-42",
      progress: { percent: 99.5, steps: [1, 2, { sub: "x" }], done: false, eta: null },
      meta: { nested: { deeper: { deepest: { text: "Grüße, 世界 — ✓ 🚀" } } } },
      "ключ": { "🔑": "値" },
    },
    [{ a: [{ b: [{ c: {} }] }] }],
  ],
  arrays: [[1, "two", 3.5, null, true, false, [], {}, [[["deep"]]]], Array.from({ length: 20 }, (_, i) => i * 3)],
  integers: [0, 1, 42, 127, 128, 255, 256, 65535, 65536, 4294967295, 4294967296],
  "negative numbers": [-1, -31, -32, -33, -127, -128, -129, -32768, -32769, -2147483648, -2147483649, -0.5, -12.25, -1e-9],
  floats: [0.1, 0.5, 99.5, 3.141592653589793, 1e-7, 6.02e23, 1.7976931348623157e308, 5e-324, 2.5e-308, 985.6906946328695],
  "unicode strings": [
    "Grüße, 世界 — ✓",
    "astral: 🚀🎉 𝄞 👩‍👩‍👧",
    "naïve café ☕ 日本語 \"quoted\" back\\slash\nnewline\ttab",
    "control \u0001\u001f and nul \u0000 inside",
    "",
    "x".repeat(31),
    "é".repeat(200),
    "語".repeat(30_000),
  ],
  "booleans and null": [true, false, null, [true, null, false], { t: true, f: false, n: null }],
  "large integers within 2^53": [9007199254740991, -9007199254740991, 9007199254740990, 1e15, -1e15, 2 ** 40],
  "empty containers": [[], {}, { empty: {}, none: [] }, [[], {}]],
  "big map": [Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`k${i}`, i % 2 ? `v${i}` : i]))],
};

describe("negotiate", () => {
  it("lists WebSockets with transferFormats Text and Binary on every hub", { timeout: TEST_TIMEOUT }, async () => {
    for (const hubPath of HUB_PATHS) {
      const res = await apiRequest("POST", `${server.hubUrl(hubPath)}/negotiate?negotiateVersion=1`);
      assert.equal(res.status, 200, `negotiate on ${hubPath}: ${res.status} ${res.text}`);
      const ws = (res.body?.availableTransports ?? []).filter((t) => t.transport === "WebSockets");
      assert.equal(ws.length, 1, `one WebSockets transport on ${hubPath}: ${res.text}`);
      assert.deepEqual(ws[0].transferFormats, ["Text", "Binary"], `${hubPath}: ${res.text}`);
    }
  });
});

describe("MessagePack delivery from the HTTP publish API", () => {
  it("a MessagePack and a JSON client in one group receive equal values", { timeout: TEST_TIMEOUT }, async () => {
    const mp = await openMessagePack("/hubs/tasks");
    assert.equal(mp.state, HubConnectionState.Connected);
    assert.equal(typeof mp.connectionId, "string", "negotiate must give a connectionId");
    const json = await openJson("/hubs/tasks");
    const mpEvents = recordEvents(mp, "Values");
    const jsonEvents = recordEvents(json, "Values");
    const group = uniqueGroup("mp-values");
    await join(mp, group);
    await join(json, group);

    const names = Object.keys(VALUE_CASES);
    for (const name of names) {
      const res = await publishOk("tasks", group, { target: "Values", arguments: [name, ...VALUE_CASES[name]] });
      assert.equal(res.body?.members, 2, `both clients are in ${group}: ${res.text}`);
    }
    // An event without arguments, last.
    await publishOk("tasks", group, { target: "Values", arguments: [] });

    await mpEvents.waitForCount(names.length + 1);
    await jsonEvents.waitForCount(names.length + 1);

    const byCase = (events) => new Map(events.filter((e) => e.length > 0).map((e) => [e[0], e.slice(1)]));
    const mpByCase = byCase(mpEvents.events);
    const jsonByCase = byCase(jsonEvents.events);
    const mismatches = [];
    for (const name of names) {
      const expected = VALUE_CASES[name];
      for (const [who, got] of [["messagepack", mpByCase.get(name)], ["json", jsonByCase.get(name)]]) {
        try {
          assert.deepEqual(got, expected);
        } catch {
          mismatches.push(`${name} (${who}): got ${JSON.stringify(got)}, published ${JSON.stringify(expected)}`);
        }
      }
    }
    assert.deepEqual(mismatches, [], mismatches.join("\n"));
    assert.deepEqual(mpEvents.events.at(-1), [], "the event without arguments");
    assert.deepEqual(mpEvents.events, jsonEvents.events, "both clients saw the same events in the same order");
  });

  it("events arrive in binary frames as Invocations [1, headers, nil, target, arguments, []]", { timeout: TEST_TIMEOUT }, async () => {
    const mp = await openMessagePack("/hubs/tasks");
    const events = recordEvents(mp, "Shape");
    const group = uniqueGroup("mp-wire");
    await join(mp, group);
    const published = [[1, "two", null], [], [{ a: [true] }]];
    for (const args of published) await publishOk("tasks", group, { target: "Shape", arguments: args });
    await events.waitForCount(published.length);

    const logger = mp.testLogger;
    assert.deepEqual(logger.undecodable, [], logger.wire());
    assert.deepEqual(logger.textFrames, [], "after the handshake everything comes in binary frames");
    const invocations = logger.ofType(1).map((r) => r.raw);
    assert.equal(invocations.length, published.length, logger.wire());
    for (const [i, raw] of invocations.entries()) {
      assert.equal(raw.length, 6, `[1, headers, invocationId, target, arguments, streamIds] expected, got ${JSON.stringify(raw)}`);
      assert.ok(raw[1] !== null && typeof raw[1] === "object" && !Array.isArray(raw[1]), `headers are a map: ${JSON.stringify(raw)}`);
      assert.equal(raw[2], null, `an event has no invocationId: ${JSON.stringify(raw)}`);
      assert.equal(raw[3], "Shape");
      assert.deepEqual(raw[4], published[i]);
      assert.deepEqual(raw[5], [], `no stream ids: ${JSON.stringify(raw)}`);
    }
    assert.deepEqual(events.events, published);
  });

  it("skipNegotiation MessagePack connection joins and receives", { timeout: TEST_TIMEOUT }, async () => {
    const mp = await openMessagePack("/hubs/video-generation", { skipNegotiation: true });
    assert.equal(mp.state, HubConnectionState.Connected);
    assert.equal(mp.connectionId, null, "no negotiate, so the client knows no id");
    const events = recordEvents(mp, "VideoGenerationProgress");
    const group = uniqueGroup("mp-skip");
    await join(mp, group);

    const args = ["vid-1", { stage: "render", percent: 12.5, frames: [1, 2, 3] }, "ünïcödé ✓", -4, null];
    const res = await publishOk("video-generation", group, { target: "VideoGenerationProgress", arguments: args });
    assert.equal(res.body?.members, 1, res.text);
    await events.waitForCount(1);
    assert.deepEqual(events.events, [args]);
  });
});

describe("MessagePack hub methods", () => {
  it("JoinGroup and LeaveGroup complete void (resultKind 2) and change delivery", { timeout: TEST_TIMEOUT }, async () => {
    const mp = await openMessagePack("/hubs/spend");
    const events = recordEvents(mp, "SpendUpdated");
    const left = uniqueGroup("mp-left");
    const kept = uniqueGroup("mp-kept");
    assert.equal(await join(mp, left), undefined, "a void completion resolves invoke() with undefined");
    assert.equal(await join(mp, kept), undefined);

    await publishOk("spend", left, { target: "SpendUpdated", arguments: ["before leave"] });
    await events.waitForCount(1);

    assert.equal(await withTimeout(mp.invoke("LeaveGroup", left), 5000, "LeaveGroup"), undefined);
    const res = await publishOk("spend", left, { target: "SpendUpdated", arguments: ["after leave"] });
    assert.equal(res.body?.members, 0, `nobody is left in ${left}: ${res.text}`);
    // The marker: published after, to a group still joined; once it is in,
    // "after leave" would have been too.
    await publishOk("spend", kept, { target: "SpendUpdated", arguments: ["marker"] });
    await events.waitForCount(2);
    assert.deepEqual(events.events, [["before leave"], ["marker"]]);

    const completions = mp.testLogger.ofType(3).map((r) => r.raw);
    assert.equal(completions.length, 3, detailOf(mp));
    for (const raw of completions) {
      assert.equal(raw.length, 4, `a void Completion is [3, headers, id, 2]: ${JSON.stringify(raw)}`);
      assert.ok(raw[1] !== null && typeof raw[1] === "object" && !Array.isArray(raw[1]), JSON.stringify(raw));
      assert.equal(typeof raw[2], "string", JSON.stringify(raw));
      assert.equal(raw[3], 2, `resultKind 2 (void): ${JSON.stringify(raw)}`);
    }
    assert.equal(new Set(completions.map((r) => r[2])).size, 3, "one Completion per invocation id");
  });

  it("a method's reply event carries the MessagePack arguments back unchanged", { timeout: TEST_TIMEOUT }, async () => {
    // UpdatePreferences(prefs) answers the caller with PreferencesUpdated(prefs):
    // MessagePack in, MessagePack out.
    const mp = await openMessagePack("/hubs/notifications");
    const replies = recordEvents(mp, "PreferencesUpdated");
    const prefs = {
      email: true,
      sms: false,
      digest: "daily",
      quietHours: { from: 22, to: 7, zone: "Europe/Zürich" },
      channels: ["push", "mail", "ウェブ"],
      weight: 0.75,
      note: null,
      big: 9007199254740991,
      negative: -40,
      deep: { list: [[], {}, [1, [2, [3]]]] },
      emoji: "🔔",
    };
    const result = await withTimeout(mp.invoke("UpdatePreferences", prefs), 5000, "UpdatePreferences");
    assert.equal(result, undefined, "UpdatePreferences is void");
    await replies.waitForCount(1);
    assert.deepEqual(replies.events, [[prefs]]);
  });

  it("an unknown method rejects invoke() with the server's error text and keeps the connection", { timeout: TEST_TIMEOUT }, async () => {
    const mp = await openMessagePack("/hubs/webhooks");
    const message = await rejection(mp.invoke("Nope"), "invoke('Nope')");
    assert.equal(message, "Unknown hub method 'Nope'");

    const errors = mp.testLogger.ofType(3).map((r) => r.raw);
    assert.equal(errors.length, 1, detailOf(mp));
    assert.equal(errors[0].length, 5, `an error Completion is [3, headers, id, 1, error]: ${JSON.stringify(errors[0])}`);
    assert.equal(errors[0][3], 1, `resultKind 1 (error): ${JSON.stringify(errors[0])}`);
    assert.equal(errors[0][4], "Unknown hub method 'Nope'");

    // The error is per invocation: the connection stays usable.
    assert.equal(mp.state, HubConnectionState.Connected);
    const events = recordEvents(mp, "WebhookDelivered");
    const group = uniqueGroup("mp-after-error");
    await join(mp, group);
    await publishOk("webhooks", group, { target: "WebhookDelivered", arguments: [1, "ok"] });
    await events.waitForCount(1);
    assert.deepEqual(events.events, [[1, "ok"]]);
    assert.deepEqual(mp.closes, []);
  });

  it("wrong argument count, wrong argument type and refused calls reject as over JSON", { timeout: TEST_TIMEOUT }, async () => {
    const mp = await openMessagePack("/hubs/tasks");
    const json = await openJson("/hubs/tasks");
    const calls = [
      { what: "JoinGroup()", args: ["JoinGroup"], expect: /^Failed to invoke 'JoinGroup' due to an error on the server\. InvalidDataException: Invocation provides 0 argument\(s\) but target expects 1\.$/ },
      { what: "JoinGroup(a, b)", args: ["JoinGroup", "a", "b"], expect: /Invocation provides 2 argument\(s\) but target expects 1\./ },
      { what: "JoinGroup({...})", args: ["JoinGroup", { not: "a string" }], expect: /^Failed to invoke 'JoinGroup' due to an error on the server\. InvalidDataException: Error binding arguments\./ },
      // Development mode connects without claims: the task-type group needs `vkey`.
      { what: "SubscribeToTaskType(export)", args: ["SubscribeToTaskType", "export"], expect: /^An unexpected error occurred invoking 'SubscribeToTaskType' on the server\. HubException: .*'vkey' claim/ },
    ];
    for (const { what, args, expect } of calls) {
      const overMessagePack = await rejection(mp.invoke(...args), `${what} over MessagePack`);
      const overJson = await rejection(json.invoke(...args), `${what} over JSON`);
      assert.match(overMessagePack, expect, `${what} over MessagePack`);
      assert.equal(overMessagePack, overJson, `${what}: the same error text over both protocols`);
    }
    const errors = mp.testLogger.ofType(3).map((r) => r.raw);
    assert.equal(errors.length, calls.length, detailOf(mp));
    for (const raw of errors) assert.deepEqual([raw.length, raw[3], typeof raw[4]], [5, 1, "string"], JSON.stringify(raw));
    assert.equal(mp.state, HubConnectionState.Connected);
    assert.deepEqual(mp.closes, []);
  });
});

describe("MessagePack keep-alive and close", () => {
  // Fast timers: the server pings after 200 ms of silence and drops a client
  // silent for 1.5 s.
  const FAST_TIMEOUTS = "[timeouts]\nkeepalive_ms = 200\nclient_timeout_ms = 1500\n";

  it("the server's pings keep the connection open past the client's serverTimeout", { timeout: TEST_TIMEOUT }, async () => {
    const node = await startConfiguredServer(FAST_TIMEOUTS);
    const serverTimeoutMs = 1000;
    const mp = await openMessagePack("/hubs/tasks", { serverTimeoutMs, keepAliveMs: 250 }, node);
    const started = Date.now();
    const pings = () => mp.testLogger.ofType(6);
    // 15 pings at 200 ms are three serverTimeouts.
    await waitFor(() => pings().length >= 15 || mp.closes.length > 0, {
      timeoutMs: 15_000,
      what: "15 pings from the server",
      detail: () => detailOf(mp, node),
    });
    assert.deepEqual(mp.closes, [], `closed early: ${mp.closes}\n${detailOf(mp, node)}`);
    assert.equal(mp.state, HubConnectionState.Connected);
    assert.ok(Date.now() - started > 2 * serverTimeoutMs, "the connection outlived the client's serverTimeout");
    for (const { raw } of pings()) assert.deepEqual(raw, [6]);
    const times = [started, ...pings().map((p) => p.at)];
    const longestGap = Math.max(...times.slice(1).map((t, i) => t - times[i]));
    assert.ok(longestGap < serverTimeoutMs, `longest silence ${longestGap} ms, serverTimeout ${serverTimeoutMs} ms`);

    // Still fully usable.
    const events = recordEvents(mp, "TaskProgress");
    const group = uniqueGroup("mp-alive");
    await join(mp, group);
    await publishOk("tasks", group, { target: "TaskProgress", arguments: ["t", 1] }, node);
    await events.waitForCount(1);
    assert.deepEqual(events.events, [["t", 1]]);
  });

  it("a client that sends nothing is closed with an error Close record", { timeout: TEST_TIMEOUT }, async () => {
    const node = await startConfiguredServer(FAST_TIMEOUTS);
    // The client neither pings (keep-alive 60 s) nor gives up first (serverTimeout 60 s).
    const mp = await openMessagePack("/hubs/tasks", { serverTimeoutMs: 60_000, keepAliveMs: 60_000 }, node);
    await waitFor(() => mp.closes.length > 0, {
      timeoutMs: 10_000,
      what: "the server to close the silent client",
      detail: () => detailOf(mp, node),
    });
    const closes = mp.testLogger.ofType(7).map((r) => r.raw);
    assert.deepEqual(closes, [[7, "Connection closed with an error.", true]], detailOf(mp, node));
    assert.equal(mp.closes.length, 1);
    assert.ok(mp.closes[0] instanceof Error, `onclose with an error, got ${mp.closes[0]}`);
    assert.match(mp.closes[0].message, /Server returned an error on close: Connection closed with an error\./);
  });

  it("stop() closes cleanly: onclose without error and the group is left", { timeout: TEST_TIMEOUT }, async () => {
    const mp = await openMessagePack("/hubs/tasks");
    const group = uniqueGroup("mp-stop");
    await join(mp, group);
    const members = async () => (await apiRequest("GET", `${server.origin}/api/v1/hubs/tasks/groups/${group}`));
    const before = await members();
    assert.equal(before.body?.members, 1, before.text);

    await withTimeout(mp.stop(), 5000, "stop()");
    assert.equal(mp.state, HubConnectionState.Disconnected);
    assert.deepEqual(mp.closes, [null], "onclose once, without error");
    assert.deepEqual(mp.testLogger.undecodable, [], mp.testLogger.wire());
    let last;
    await waitFor(
      async () => {
        last = await members();
        return last.status === 404 || last.body?.members === 0;
      },
      { what: `group ${group} to be empty`, detail: () => `${last?.status} ${last?.text}` },
    );
  });

  it("a SIGTERM shutdown sends Close [7, nil, true] and the client closes without error", { timeout: TEST_TIMEOUT }, async () => {
    const node = await startConfiguredServer("");
    const mp = await openMessagePack("/hubs/tasks", {}, node);
    const stopped = node.stop("SIGTERM");
    await waitFor(() => mp.closes.length > 0, {
      timeoutMs: 10_000,
      what: "the client to see the shutdown",
      detail: () => detailOf(mp, node),
    });
    const exit = await stopped;
    assert.equal(exit.killed, false, `hubcast exited on SIGTERM: ${JSON.stringify(exit)}`);
    const closes = mp.testLogger.ofType(7).map((r) => r.raw);
    assert.deepEqual(closes, [[7, null, true]], detailOf(mp, node));
    assert.deepEqual(mp.closes, [null], "a graceful shutdown is no error");
  });
});
