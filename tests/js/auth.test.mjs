// Secure mode end to end with the official @microsoft/signalr client: one
// hubcast node started without --insecure, with an access key (publish API),
// a token key (HS256 client tokens) and a master key (admin hub).
//
// - spend: the token's vkey decides the one group the connection is in
//   (auto-joined) and may join;
// - tasks: SubscribeToTask only for the groups the token grants;
// - admin-notifications: the master key, the `admin` group, SubscribeToVirtualKey;
// - refusals: bad, expired, not-yet-valid, wrong-audience and missing tokens
//   fail negotiate; the publish API wants the access key;
// - user targeting reaches every connection of a `sub`.
//
// Tokens are minted here with node:crypto (helpers.signJwt).

import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { HubConnectionState } from "@microsoft/signalr";
import {
  HUBCAST_BIN,
  apiRequest,
  buildConnection,
  nowSecs,
  publishToGroup,
  recordEvents,
  safeStop,
  signJwt,
  startServer,
  withTimeout,
} from "./helpers.mjs";

const TEST_TIMEOUT = 15_000;

// Two publish keys (the variable takes a comma-separated list).
const ACCESS_KEY = "test-access-key-0123456789abcdef";
const ACCESS_KEY_2 = "second-access-key-fedcba9876543210";
const TOKEN_KEY = "test-token-key-for-client-jwts-0123456789";
const MASTER_KEY = "test-master-key-for-admin-hub-0123456789";

const SECURE_ENV = {
  HUBCAST_ACCESS_KEY: `${ACCESS_KEY},${ACCESS_KEY_2}`,
  HUBCAST_TOKEN_KEY: TOKEN_KEY,
  HUBCAST_MASTER_KEY: MASTER_KEY,
  // Never inherit anything that would relax or replace the configuration
  // under test (undefined drops the variable from the child's environment).
  HUBCAST_INSECURE: undefined,
  HUBCAST_CONFIG: undefined,
  HUBCAST_CONNECT_PROXY_URL: undefined,
};

const AUTH = { Authorization: `Bearer ${ACCESS_KEY}` };

let server;
const connections = [];

function diagnostics(connection) {
  return `${connection?.testLogger?.dump() ?? ""}\n${server?.logs() ?? ""}`;
}

/** A client token signed with the token key, valid for five minutes. */
function clientToken(claims, key = TOKEN_KEY) {
  return signJwt({ exp: nowSecs() + 300, ...claims }, key);
}

/** Builds and starts a connection presenting `credential` (none if undefined). */
async function open(hubPath, credential) {
  const connection = buildConnection(server.hubUrl(hubPath), {
    accessTokenFactory: credential === undefined ? undefined : () => credential,
  });
  connections.push(connection);
  await withTimeout(connection.start(), 10_000, `start() of ${hubPath}`);
  assert.equal(connection.state, HubConnectionState.Connected);
  return connection;
}

/** Expects start() with `credential` on `hubPath` to reject with a 401. */
async function assertRefused(hubPath, credential, what) {
  const connection = buildConnection(server.hubUrl(hubPath), {
    accessTokenFactory: credential === undefined ? undefined : () => credential,
  });
  connections.push(connection);
  await assert.rejects(
    withTimeout(connection.start(), 10_000, `start() with ${what}`),
    (err) => {
      assert.match(
        err.message,
        /401|Unauthorized/i,
        `start() with ${what} rejected, but not with a 401: ${err.message}\n${diagnostics(connection)}`,
      );
      return true;
    },
    `start() with ${what} must reject`,
  );
  assert.notEqual(connection.state, HubConnectionState.Connected, `${what}: state after rejection`);
}

async function publish(hub, group, message, headers = AUTH) {
  const res = await publishToGroup(server.origin, hub, group, message, { headers });
  assert.equal(
    res.status,
    202,
    `POST ${hub}/groups/${group}: status ${res.status}, body ${res.text}\n${server.logs()}`,
  );
  return res;
}

async function invoke(connection, method, ...args) {
  return withTimeout(connection.invoke(method, ...args), 5000, `${method}(${args.join(", ")})`);
}

before(async () => {
  server = await startServer({ secure: true, env: SECURE_ENV });
});

after(async () => {
  await Promise.all(connections.map((c) => safeStop(c)));
  if (server) await server.stop();
});

describe("spend hub scoped by the token's vkey", () => {
  let spend;
  let updates;

  before(async () => {
    spend = await open("/hubs/spend", clientToken({ sub: "u7", vkey: 7 }));
    updates = recordEvents(spend, "SpendUpdate");
  });

  it("auto-joins vkey-7 and receives nothing for vkey-8", { timeout: TEST_TIMEOUT }, async () => {
    const payload = [
      7,
      { spent: 12.5, currency: "USD", model: "gpt-x", breakdown: { input: 10, output: 2.5 }, note: "Grüße ✓" },
    ];
    const other = [8, { spent: 999 }];
    const marker = ["marker", 7];

    // No JoinGroup: membership of vkey-7 comes from the token alone.
    const first = await publish("spend", "vkey-7", { target: "SpendUpdate", arguments: payload });
    assert.equal(first.body?.localConnections, 1, `publish to vkey-7 must reach the connection: ${first.text}`);
    await publish("spend", "vkey-8", { target: "SpendUpdate", arguments: other });
    await publish("spend", "vkey-7", { target: "SpendUpdate", arguments: marker });

    await updates.waitForCount(2);
    // Published in this order on one node: had the vkey-8 event been delivered,
    // it would sit between the two.
    assert.deepEqual(updates.events, [payload, marker], diagnostics(spend));
  });

  it("JoinGroup of another vkey's group is refused", { timeout: TEST_TIMEOUT }, async () => {
    await assert.rejects(invoke(spend, "JoinGroup", "vkey-8"), /unauthorized/i);
    assert.equal(spend.state, HubConnectionState.Connected, "a refused JoinGroup must not close the connection");

    const res = await publish("spend", "vkey-8", { target: "SpendUpdate", arguments: ["after-refusal"] });
    assert.equal(res.body?.localConnections, 0, `nobody may be in vkey-8: ${res.text}`);

    // Still in its own group (so the 0 above is not just a dead connection).
    const own = await publish("spend", "vkey-7", { target: "SpendUpdate", arguments: ["still-here"] });
    assert.equal(own.body?.localConnections, 1, own.text);
    await updates.waitForCount(3);
    assert.deepEqual(updates.events.at(-1), ["still-here"]);
    assert.ok(
      !updates.events.some((args) => args[0] === "after-refusal"),
      `the vkey-8 event reached the vkey-7 connection: ${JSON.stringify(updates.events)}`,
    );
  });
});

it("tasks hub: SubscribeToTask only for the groups the token grants", { timeout: TEST_TIMEOUT }, async () => {
  // aud present and equal to the hub name: accepted.
  const tasks = await open("/hubs/tasks", clientToken({ sub: "u-tasks", vkey: 5, aud: "tasks", groups: ["task-42"] }));
  const progress = recordEvents(tasks, "TaskProgress");

  await invoke(tasks, "SubscribeToTask", "42");
  const payload = ["42", 50, { stage: "render", eta: null }];
  const res = await publish("tasks", "task-42", { target: "TaskProgress", arguments: payload });
  assert.equal(res.body?.localConnections, 1, res.text);
  await progress.waitForCount(1);
  assert.deepEqual(progress.events, [payload]);

  await assert.rejects(invoke(tasks, "SubscribeToTask", "43"), /unauthorized/i);
  const refused = await publish("tasks", "task-43", { target: "TaskProgress", arguments: ["43", 1] });
  assert.equal(refused.body?.localConnections, 0, `task-43 must have no member: ${refused.text}`);
  assert.equal(tasks.state, HubConnectionState.Connected);
});

it("admin hub with the master key: group admin and SubscribeToVirtualKey", { timeout: TEST_TIMEOUT }, async () => {
  const admin = await open("/hubs/admin-notifications", MASTER_KEY);
  const alerts = recordEvents(admin, "AdminAlert");
  const subscribed = recordEvents(admin, "SubscribedToVirtualKey");

  const alert = ["provider-down", { provider: "p1", severity: 2 }];
  await publish("admin-notifications", "admin", { target: "AdminAlert", arguments: alert });
  await alerts.waitForCount(1);
  assert.deepEqual(alerts.events, [alert]);

  await invoke(admin, "SubscribeToVirtualKey", 7);
  await subscribed.waitForCount(1);
  assert.deepEqual(subscribed.events, [[7]]);

  // The subscription is real: admin-vkey-7 now reaches the connection.
  const perKey = ["vkey-7-spend", 3.25];
  const res = await publish("admin-notifications", "admin-vkey-7", { target: "AdminAlert", arguments: perKey });
  assert.equal(res.body?.localConnections, 1, res.text);
  await alerts.waitForCount(2);
  assert.deepEqual(alerts.events, [alert, perKey]);
});

describe("refusals", () => {
  it("negotiate refuses bad, expired, not-yet-valid, wrong-audience and missing tokens", { timeout: TEST_TIMEOUT }, async () => {
    const now = nowSecs();
    await assertRefused("/hubs/spend", clientToken({ sub: "u7", vkey: 7 }, "not-the-token-key"), "a token signed with the wrong key");
    await assertRefused("/hubs/spend", signJwt({ sub: "u7", vkey: 7, exp: now - 3600 }, TOKEN_KEY), "an expired token");
    await assertRefused("/hubs/spend", clientToken({ sub: "u7", vkey: 7, nbf: now + 3600 }), "a token not valid before an hour from now");
    await assertRefused("/hubs/spend", clientToken({ sub: "u7", vkey: 7, aud: "tasks" }), "a token for the tasks hub");
    await assertRefused("/hubs/spend", signJwt({ sub: "u7", vkey: 7 }, TOKEN_KEY), "a token without exp");
    await assertRefused("/hubs/spend", undefined, "no token");
    // The admin hub takes the master key only, not a client token or the access key.
    await assertRefused("/hubs/admin-notifications", clientToken({ sub: "u7" }), "a client token on the admin hub");
    await assertRefused("/hubs/admin-notifications", ACCESS_KEY, "the access key on the admin hub");
  });

  it("publish API answers 401 with a JSON error without a valid access key", { timeout: TEST_TIMEOUT }, async () => {
    const message = { target: "SpendUpdate", arguments: ["x"] };
    for (const [what, headers] of [
      ["no Authorization", {}],
      ["a wrong key", { Authorization: "Bearer not-the-access-key" }],
      ["the token key", { Authorization: `Bearer ${TOKEN_KEY}` }],
      ["the master key", { Authorization: `Bearer ${MASTER_KEY}` }],
    ]) {
      const res = await publishToGroup(server.origin, "spend", "vkey-7", message, { headers });
      assert.equal(res.status, 401, `publish with ${what}: status ${res.status}, body ${res.text}`);
      assert.equal(typeof res.body?.error, "string", `publish with ${what}: body must be JSON {error}: ${res.text}`);
      assert.ok(res.body.error.length > 0);
    }
    // Either key of the comma-separated list is accepted.
    await publish("spend", "vkey-7", message, { Authorization: `Bearer ${ACCESS_KEY_2}` });
  });

  it("publish API accepts a JWT signed with the access key for the exact URL", { timeout: TEST_TIMEOUT }, async () => {
    const url = `${server.origin}/api/v1/hubs/spend/groups/vkey-9`;
    const message = { target: "SpendUpdate", arguments: ["jwt"] };
    const exp = nowSecs() + 300;
    const good = signJwt({ aud: url, exp }, ACCESS_KEY);
    const ok = await apiRequest("POST", url, message, { headers: { Authorization: `Bearer ${good}` } });
    assert.equal(ok.status, 202, `JWT for ${url}: ${ok.status} ${ok.text}`);

    const otherUrl = signJwt({ aud: `${server.origin}/api/v1/hubs/spend/groups/vkey-10`, exp }, ACCESS_KEY);
    const wrongAud = await apiRequest("POST", url, message, { headers: { Authorization: `Bearer ${otherUrl}` } });
    assert.equal(wrongAud.status, 401, `JWT for another URL: ${wrongAud.status} ${wrongAud.text}`);
    assert.equal(typeof wrongAud.body?.error, "string", wrongAud.text);

    const expired = signJwt({ aud: url, exp: nowSecs() - 3600 }, ACCESS_KEY);
    const late = await apiRequest("POST", url, message, { headers: { Authorization: `Bearer ${expired}` } });
    assert.equal(late.status, 401, `expired JWT: ${late.status} ${late.text}`);

    const wrongKey = signJwt({ aud: url, exp }, TOKEN_KEY);
    const forged = await apiRequest("POST", url, message, { headers: { Authorization: `Bearer ${wrongKey}` } });
    assert.equal(forged.status, 401, `JWT signed with the token key: ${forged.status} ${forged.text}`);
  });

  it("a secure node without all three keys refuses to start", { timeout: TEST_TIMEOUT }, async () => {
    for (const missing of ["HUBCAST_ACCESS_KEY", "HUBCAST_TOKEN_KEY", "HUBCAST_MASTER_KEY"]) {
      const env = { ...process.env, ...SECURE_ENV, [missing]: undefined };
      for (const k of Object.keys(env)) if (env[k] === undefined) delete env[k];
      const child = spawn(HUBCAST_BIN, ["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"], {
        stdio: ["ignore", "ignore", "pipe"],
        env,
      });
      let stderr = "";
      child.stderr.setEncoding("utf8");
      child.stderr.on("data", (chunk) => {
        stderr += chunk;
      });
      const exited = new Promise((resolve) => child.on("exit", (code, signal) => resolve({ code, signal })));
      let result;
      try {
        result = await withTimeout(exited, 5000, `hubcast without ${missing} to exit`);
      } finally {
        if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      }
      assert.notEqual(result.code, 0, `without ${missing}: exit ${JSON.stringify(result)}\n${stderr}`);
      assert.equal(result.signal, null, `without ${missing}: ${JSON.stringify(result)}`);
      assert.ok(stderr.includes(missing), `without ${missing}: the error must name it:\n${stderr}`);
    }
  });
});

it("user targeting reaches every connection of the sub", { timeout: TEST_TIMEOUT }, async () => {
  const alice1 = await open("/hubs/spend", clientToken({ sub: "alice", vkey: 1 }));
  const alice2 = await open("/hubs/spend", clientToken({ sub: "alice", vkey: "2" }));
  const bob = await open("/hubs/spend", clientToken({ sub: "bob", vkey: 3 }));
  const seen = [alice1, alice2, bob].map((c) => recordEvents(c, "UserNotice"));

  const toAlice = ["for-alice", { n: 1 }];
  const res = await apiRequest(
    "POST",
    `${server.origin}/api/v1/hubs/spend/users/alice`,
    { target: "UserNotice", arguments: toAlice },
    { headers: AUTH },
  );
  assert.equal(res.status, 202, `POST users/alice: ${res.status} ${res.text}`);
  const toBob = ["for-bob"];
  const resBob = await apiRequest(
    "POST",
    `${server.origin}/api/v1/hubs/spend/users/bob`,
    { target: "UserNotice", arguments: toBob },
    { headers: AUTH },
  );
  assert.equal(resBob.status, 202, `POST users/bob: ${resBob.status} ${resBob.text}`);

  await Promise.all(seen.map((s) => s.waitForCount(1)));
  assert.deepEqual(seen[0].events, [toAlice], "alice on vkey 1");
  assert.deepEqual(seen[1].events, [toAlice], "alice on vkey 2");
  // bob's own message arrived after alice's was published: alice's never came.
  assert.deepEqual(seen[2].events, [toBob], "bob");

  // The user send needs the access key too.
  const anonymous = await apiRequest("POST", `${server.origin}/api/v1/hubs/spend/users/alice`, {
    target: "UserNotice",
    arguments: ["anon"],
  });
  assert.equal(anonymous.status, 401, `anonymous user send: ${anonymous.status} ${anonymous.text}`);
});
