// The README's quick start, run as written: each tested block is marked in README.md by
// an HTML comment `<!-- readme-test: NAME -->` on the line before its fence, and is
// extracted from there (only the address of the node is replaced by the test node's).
//
// - client-js is saved under the name the README gives (client.mjs) in a directory with
//   this suite's node_modules and no package.json, and run with node; publish-curl is run with sh against the same node: the client prints
//   client-output, the 202's keys are publish-202's, and the node logs publish-log;
// - client-token mints a token with the built `hubcast token` and runs the same client
//   against a node with keys;
// - cluster-curl, sent to the second node of a two-node Redis cluster, reaches the client
//   on the first and prints the same line.
//
// Every wait polls a condition with a deadline.

import { describe, it, after } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, symlinkSync, mkdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import {
  HUBCAST_BIN,
  apiRequest,
  publishToGroup,
  startClusterNode,
  startRedis,
  startServer,
  uniqueRedisPrefix,
  waitFor,
} from "./helpers.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const README = readFileSync(path.resolve(HERE, "../../README.md"), "utf8");
const TEST_TIMEOUT = 30_000;

/** The body of the fenced block marked `<!-- readme-test: NAME -->`. */
function snippet(name) {
  const marker = `<!-- readme-test: ${name} -->\n`;
  const at = README.indexOf(marker);
  assert.notEqual(at, -1, `README.md has no block marked ${name}`);
  assert.equal(README.indexOf(marker, at + 1), -1, `README.md marks two blocks ${name}`);
  const m = /^```[a-z]*\n([\s\S]*?)\n```/.exec(README.slice(at + marker.length));
  assert.ok(m, `the line after the ${name} marker opens a fenced block`);
  return m[1];
}

/**
 * The file name the README tells readers to save the client as. The client is written
 * under that name in a directory with no package.json, so Node runs it as an ES module
 * only if the name says so (`.mjs`).
 */
function clientFile() {
  const m = /Save this as `([^`]+)`/.exec(README);
  assert.ok(m, "the README says what to save the client as");
  return m[1];
}

/** `text` with every occurrence of `from` (which must occur) replaced by `to`. */
function pointAt(text, from, to) {
  assert.ok(text.includes(from), `the snippet names ${from}:\n${text}`);
  return text.split(from).join(to);
}

// Node 18, the oldest the README names, runs a `.js` file outside a `"type": "module"`
// package as CommonJS; later releases guess from the syntax. The clients run without the
// guess, so a README that named a `.js` file would fail here as it does for those readers.
const NO_MODULE_GUESS = process.allowedNodeEnvironmentFlags.has("--experimental-detect-module")
  ? { NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ""} --no-experimental-detect-module`.trim() }
  : {};

const tempDirs = [];
const running = [];

after(async () => {
  for (const p of running) p.kill();
  await Promise.all(running.map((p) => p.exited));
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
});

/**
 * A temporary directory holding the README's client (talking to `hubUrl`) under the name
 * the README gives, this suite's node_modules, and bin/hubcast (the built binary).
 */
function clientDir(hubUrl) {
  const dir = mkdtempSync(path.join(tmpdir(), "hubcast-readme-"));
  tempDirs.push(dir);
  symlinkSync(path.join(HERE, "node_modules"), path.join(dir, "node_modules"), "dir");
  mkdirSync(path.join(dir, "bin"));
  symlinkSync(HUBCAST_BIN, path.join(dir, "bin", "hubcast"));
  const client = pointAt(snippet("client-js"), "http://localhost:8080/hubs/tasks", hubUrl);
  writeFileSync(path.join(dir, clientFile()), client);
  return dir;
}

/**
 * Runs `script` with sh in `dir` (its bin first on PATH) until stopped; .lines is what
 * it printed on stdout, .kill() ends its whole process group.
 */
function runScript(script, dir, env = {}) {
  const child = spawn("sh", ["-c", script], {
    cwd: dir,
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
    env: {
      ...process.env,
      ...NO_MODULE_GUESS,
      PATH: `${path.join(dir, "bin")}:${process.env.PATH}`,
      ...env,
    },
  });
  const proc = { lines: [], err: "", exitInfo: null };
  proc.exited = new Promise((resolve) =>
    child.on("exit", (code, signal) => {
      proc.exitInfo = { code, signal };
      resolve(proc.exitInfo);
    }),
  );
  let partial = "";
  child.stdout.setEncoding("utf8");
  child.stdout.on("data", (chunk) => {
    const parts = (partial + chunk).split("\n");
    partial = parts.pop();
    proc.lines.push(...parts);
  });
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (chunk) => {
    proc.err += chunk;
  });
  proc.kill = () => {
    if (proc.exitInfo) return;
    try {
      process.kill(-child.pid, "SIGKILL");
    } catch {
      // already gone
    }
  };
  running.push(proc);
  return proc;
}

/** Runs `script` with sh to completion: {code, stdout, stderr}. */
function runToEnd(script) {
  return new Promise((resolve) => {
    execFile("sh", ["-c", script], { timeout: 10_000, encoding: "utf8" }, (err, stdout, stderr) =>
      resolve({ code: err ? (err.code ?? -1) : 0, stdout, stderr }),
    );
  });
}

/** Waits until `group` of the tasks hub on `origin` has `n` members (`client` joined). */
async function waitMembers(client, origin, group, n, headers = {}) {
  let last;
  await waitFor(
    async () => {
      if (client.exitInfo) {
        throw new Error(`the client exited with ${JSON.stringify(client.exitInfo)}: ${client.err}`);
      }
      last = await apiRequest("GET", `${origin}/api/v1/hubs/tasks/groups/${group}`, undefined, { headers });
      return last.body?.members === n;
    },
    { timeoutMs: 15_000, what: `${n} member(s) in ${group}`, detail: () => `${JSON.stringify(last)}\n${client.err}` },
  );
}

/** Waits until `client` printed `line`. */
async function waitPrinted(client, line, server) {
  await waitFor(() => client.lines.includes(line), {
    timeoutMs: 10_000,
    what: `the client to print ${JSON.stringify(line)}`,
    detail: () => `printed: ${JSON.stringify(client.lines)}\nstderr: ${client.err}\n${server.logs()}`,
  });
}

describe("README quick start", () => {
  it("the client snippet, run as client.mjs, prints the documented line for the curl; the 202 and the log are as documented", { timeout: TEST_TIMEOUT }, async () => {
    const server = await startServer({ env: { RUST_LOG: "info,hubcast::publish=debug" } });
    try {
      const dir = clientDir(server.hubUrl("/hubs/tasks"));
      const client = runScript(`node ${clientFile()}`, dir, { HUBCAST_CLIENT_TOKEN: undefined });
      await waitMembers(client, server.origin, "task-42", 1);

      const curl = pointAt(snippet("publish-curl"), "http://localhost:8080", server.origin);
      const out = await runToEnd(curl);
      assert.equal(out.code, 0, out.stderr);
      const [documentedStatus, documentedBody] = snippet("publish-202").split("\n");
      const answer = out.stdout.split(/\r?\n/).filter((l) => l.length > 0);
      assert.equal(answer[0], documentedStatus);
      const body = JSON.parse(answer[answer.length - 1]);
      assert.deepEqual(Object.keys(body).sort(), Object.keys(JSON.parse(documentedBody)).sort());

      await waitPrinted(client, snippet("client-output"), server);
      const logged = snippet("publish-log");
      await waitFor(() => server.logs().split("\n").some((l) => l.includes(" DEBUG ") && l.includes(logged)), {
        timeoutMs: 5000,
        what: `the node to log ${logged}`,
        detail: () => server.logs(),
      });
    } finally {
      await server.stop();
    }
  });

  it("a token from the documented `hubcast token` line lets the client onto a node with keys", { timeout: TEST_TIMEOUT }, async () => {
    const ACCESS_KEY = "readme-access-key-0123456789abcdef0123";
    const TOKEN_KEY = "readme-token-key-0123456789abcdef01234";
    const MASTER_KEY = "readme-master-key-0123456789abcdef0123";
    const server = await startServer({
      secure: true,
      env: {
        HUBCAST_ACCESS_KEY: ACCESS_KEY,
        HUBCAST_TOKEN_KEY: TOKEN_KEY,
        HUBCAST_MASTER_KEY: MASTER_KEY,
        HUBCAST_INSECURE: undefined,
        HUBCAST_CONFIG: undefined,
        HUBCAST_CONNECT_PROXY_URL: undefined,
      },
    });
    try {
      const auth = { Authorization: `Bearer ${ACCESS_KEY}` };
      const dir = clientDir(server.hubUrl("/hubs/tasks"));
      const client = runScript(snippet("client-token"), dir, {
        HUBCAST_TOKEN_KEY: TOKEN_KEY,
        HUBCAST_CONFIG: undefined,
      });
      await waitMembers(client, server.origin, "task-42", 1, auth);
      const published = await publishToGroup(
        server.origin,
        "tasks",
        "task-42",
        { target: "TaskProgress", arguments: ["42", 50, "half way"] },
        { headers: auth },
      );
      assert.equal(published.status, 202, published.text);
      await waitPrinted(client, snippet("client-output"), server);
    } finally {
      await server.stop();
    }
  });

  it("the cluster example's curl on another node reaches the client with the handler's three arguments", { timeout: TEST_TIMEOUT }, async () => {
    const redis = await startRedis();
    const prefix = uniqueRedisPrefix("readme");
    const nodes = [];
    try {
      for (const nodeId of ["node-1", "node-3"]) {
        nodes.push(await startClusterNode({ redisUrl: redis.url, prefix, nodeId }));
      }
      const [first, other] = nodes;
      const dir = clientDir(first.hubUrl("/hubs/tasks"));
      const client = runScript(`node ${clientFile()}`, dir, { HUBCAST_CLIENT_TOKEN: undefined });
      // Members are counted cluster-wide: the node that publishes sees the client.
      await waitMembers(client, other.origin, "task-42", 1);
      const curl = pointAt(snippet("cluster-curl"), "http://127.0.0.1:8083", other.origin);
      const out = await runToEnd(curl);
      assert.equal(out.code, 0, out.stderr);
      assert.ok(JSON.parse(out.stdout).nodes >= 1, out.stdout);
      await waitPrinted(client, snippet("client-output"), first);
    } finally {
      await Promise.all(nodes.map((n) => n.stop()));
      await redis.stop();
    }
  });
});
