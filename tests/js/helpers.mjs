// Shared helpers for the hubcast end-to-end tests with the official
// @microsoft/signalr client. Not a test file itself (node --test only picks up
// *.test.mjs here).
//
// Every wait in these helpers polls a condition with a deadline; nothing
// sleeps to synchronise.

import { execFile, execFileSync, spawn } from "node:child_process";
import { once } from "node:events";
import { createConnection, createServer } from "node:net";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { fileURLToPath } from "node:url";
import { createHmac, randomBytes, randomUUID } from "node:crypto";
import path from "node:path";
import {
  HubConnectionBuilder,
  HttpTransportType,
  LogLevel,
} from "@microsoft/signalr";

const HERE = path.dirname(fileURLToPath(import.meta.url));

/**
 * Absolute path of the hubcast binary: env HUBCAST_BIN (a relative value is
 * taken from the current directory), else the debug build in cargo's target
 * directory (which `cargo metadata` knows, CARGO_TARGET_DIR included).
 */
export const HUBCAST_BIN = process.env.HUBCAST_BIN
  ? path.resolve(process.env.HUBCAST_BIN)
  : path.join(
      JSON.parse(
        execFileSync("cargo", ["metadata", "--format-version", "1", "--no-deps"], {
          cwd: path.resolve(HERE, "../.."),
          encoding: "utf8",
        }),
      ).target_directory,
      "debug",
      "hubcast",
    );

const VERBOSE = process.env.HUBCAST_TEST_VERBOSE === "1";
const LOG_TAIL_LINES = 200;

/** All hubs the server exposes (path under the origin). */
export const HUB_PATHS = [
  "/hubs/spend",
  "/hubs/tasks",
  "/hubs/video-generation",
  "/hubs/image-generation",
  "/hubs/webhooks",
  "/hubs/notifications",
  "/hubs/admin-notifications",
];

/** A group name nobody else uses. */
export function uniqueGroup(prefix = "g") {
  return `${prefix}-${randomUUID().slice(0, 8)}`;
}

/** Resolves to a TCP port that was free on 127.0.0.1 a moment ago. */
export async function freePort() {
  const srv = createServer();
  srv.listen(0, "127.0.0.1");
  await once(srv, "listening");
  const { port } = srv.address();
  srv.close();
  await once(srv, "close");
  return port;
}

/**
 * Polls `check` (sync or async) every `intervalMs` until it returns a truthy
 * value, which is returned. Throws after `timeoutMs` with `what` in the
 * message (plus `detail()` if given).
 */
export async function waitFor(
  check,
  { timeoutMs = 5000, intervalMs = 10, what = "condition", detail } = {},
) {
  const deadline = Date.now() + timeoutMs;
  let lastError;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() >= deadline) {
      const extra = detail ? `\n${detail()}` : "";
      const cause = lastError ? ` (last error: ${lastError.message})` : "";
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${cause}${extra}`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** Races `promise` against a timeout. */
export async function withTimeout(promise, timeoutMs, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)),
      timeoutMs,
    );
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

const running = new Set();
process.on("exit", () => {
  for (const child of running) {
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
  }
});

/**
 * A running hubcast process.
 *   .port, .origin ("http://127.0.0.1:PORT"), .hubUrl(path), .logs(),
 *   .stop(signal) -> {code, signal}, .exited (promise)
 */
class HubcastServer {
  constructor(child, port) {
    this.child = child;
    this.port = port;
    this.origin = `http://127.0.0.1:${port}`;
    this._log = [];
    this.exitInfo = null;
    this.exited = new Promise((resolve) => {
      child.on("exit", (code, signal) => {
        running.delete(child);
        this.exitInfo = { code, signal };
        resolve(this.exitInfo);
      });
    });
    const collect = (stream, name) => {
      let partial = "";
      stream.setEncoding("utf8");
      stream.on("data", (chunk) => {
        if (VERBOSE) process.stderr.write(chunk);
        const lines = (partial + chunk).split("\n");
        partial = lines.pop();
        for (const line of lines) this._pushLog(`[${name}] ${line}`);
      });
      stream.on("end", () => {
        if (partial) this._pushLog(`[${name}] ${partial}`);
      });
    };
    collect(child.stdout, "out");
    collect(child.stderr, "err");
  }

  _pushLog(line) {
    this._log.push(line);
    if (this._log.length > LOG_TAIL_LINES) this._log.shift();
  }

  /** The last lines the server printed (for failure messages). */
  logs() {
    return `--- hubcast (port ${this.port}) output tail ---\n${this._log.join("\n")}\n--- end ---`;
  }

  hubUrl(hubPath) {
    return `${this.origin}${hubPath}`;
  }

  /**
   * Sends `signal` and waits for the process to exit; SIGKILL after
   * `timeoutMs`. Returns {code, signal, killed}.
   */
  async stop(signal = "SIGTERM", timeoutMs = 10_000) {
    if (this.exitInfo) return { ...this.exitInfo, killed: false };
    this.child.kill(signal);
    let timer;
    const timedOut = new Promise((resolve) => {
      timer = setTimeout(() => resolve("timeout"), timeoutMs);
    });
    const result = await Promise.race([this.exited, timedOut]);
    clearTimeout(timer);
    if (result === "timeout") {
      this.child.kill("SIGKILL");
      const info = await this.exited;
      return { ...info, killed: true };
    }
    return { ...result, killed: false };
  }
}

async function healthy(origin) {
  try {
    const res = await fetch(`${origin}/healthz`, { signal: AbortSignal.timeout(1000) });
    await res.arrayBuffer();
    return res.status === 200;
  } catch {
    return false;
  }
}

/**
 * Spawns hubcast on `port` (a fresh free port if omitted) and resolves once
 * GET /healthz answers 200. If the process exits before that (say the port
 * is still taken), it is retried until `timeoutMs` runs out.
 */
// Nodes run in development mode (no credentials) unless a test passes `env` with keys;
// `secure: true` drops --insecure.
export async function startServer({ port, timeoutMs = 20_000, extraArgs = [], env = {}, secure = false } = {}) {
  if (!existsSync(HUBCAST_BIN)) {
    throw new Error(
      `hubcast binary not found at ${HUBCAST_BIN}: run 'cargo build' or set HUBCAST_BIN`,
    );
  }
  const fixedPort = port !== undefined;
  const deadline = Date.now() + timeoutMs;
  let lastFailure = "";
  while (Date.now() < deadline) {
    const p = fixedPort ? port : await freePort();
    const child = spawn(
      HUBCAST_BIN,
      ["--listen", `127.0.0.1:${p}`, "--metrics-listen", "127.0.0.1:0", ...(secure ? [] : ["--insecure"]), ...extraArgs],
      { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...env } },
    );
    running.add(child);
    const server = new HubcastServer(child, p);
    let spawnError = null;
    child.once("error", (err) => {
      spawnError = err;
    });
    for (;;) {
      if (spawnError) throw new Error(`could not spawn ${HUBCAST_BIN}: ${spawnError.message}`);
      if (server.exitInfo) break;
      if ((await healthy(server.origin)) && !server.exitInfo) return server;
      if (Date.now() >= deadline) {
        await server.stop("SIGKILL");
        throw new Error(
          `hubcast did not answer 200 on /healthz within ${timeoutMs} ms\n${server.logs()}`,
        );
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    lastFailure = `exited early with ${JSON.stringify(server.exitInfo)}\n${server.logs()}`;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`hubcast failed to start within ${timeoutMs} ms: ${lastFailure}`);
}

/**
 * A logger for the SignalR client that keeps every line and records the raw
 * text frames received over the WebSocket (needs logMessageContent: true).
 */
export class CapturingLogger {
  constructor() {
    this.lines = [];
    this.receivedRecords = [];
  }

  log(level, message) {
    this.lines.push(`${LogLevel[level]}: ${message}`);
    if (this.lines.length > 500) this.lines.shift();
    const m = /^\(WebSockets transport\) data received\. String data of length \d+\. Content: '([\s\S]*)'\.$/.exec(
      message,
    );
    if (m) {
      for (const rec of m[1].split("\x1e")) {
        if (rec.length === 0) continue;
        try {
          this.receivedRecords.push(JSON.parse(rec));
        } catch {
          this.receivedRecords.push({ unparsable: rec });
        }
      }
    }
    if (VERBOSE && level >= LogLevel.Warning) process.stderr.write(`[signalr] ${message}\n`);
  }

  dump() {
    return `--- signalr client log tail ---\n${this.lines.slice(-60).join("\n")}\n--- end ---`;
  }
}

/**
 * Builds (does not start) a HubConnection.
 *   skipNegotiation: connect straight to the WebSocket
 *   reconnect: passed to withAutomaticReconnect (true = default delays)
 *   accessTokenFactory: passed to withUrl (the credential the client presents)
 */
export function buildConnection(url, { skipNegotiation = false, reconnect, accessTokenFactory } = {}) {
  const logger = new CapturingLogger();
  const options = { logMessageContent: true };
  if (accessTokenFactory) options.accessTokenFactory = accessTokenFactory;
  if (skipNegotiation) {
    options.skipNegotiation = true;
    options.transport = HttpTransportType.WebSockets;
  }
  let builder = new HubConnectionBuilder().withUrl(url, options).configureLogging(logger);
  if (reconnect === true) builder = builder.withAutomaticReconnect();
  else if (reconnect) builder = builder.withAutomaticReconnect(reconnect);
  const connection = builder.build();
  connection.testLogger = logger;
  return connection;
}

/** Builds and starts a connection (with a timeout on start()). */
export async function connect(url, opts = {}) {
  const connection = buildConnection(url, opts);
  await withTimeout(connection.start(), 10_000, `start() of ${url}`);
  return connection;
}

/** Stops a connection, never throwing, bounded in time. */
export async function safeStop(connection) {
  if (!connection) return;
  try {
    await withTimeout(connection.stop(), 5000, "connection.stop()");
  } catch {
    // best effort
  }
}

/**
 * Records every invocation of `target` on `connection` as an array of its
 * arguments. `.events` is the list; `.waitForCount(n)` waits until n arrived.
 */
export function recordEvents(connection, target) {
  const events = [];
  connection.on(target, (...args) => {
    events.push(args);
  });
  return {
    events,
    waitForCount(n, timeoutMs = 5000) {
      return waitFor(() => events.length >= n, {
        timeoutMs,
        what: `${n} '${target}' event(s) (got ${events.length})`,
        detail: () => `received so far: ${JSON.stringify(events)}\n${connection.testLogger?.dump() ?? ""}`,
      });
    },
  };
}

/**
 * POST /api/v1/hubs/{hubName}/groups/{group}; returns {status, body, text}.
 * `hubName` is the last segment of the hub path. `headers` are added to the
 * request (e.g. Authorization for a secure node).
 */
export async function publishToGroup(origin, hubName, group, message, { headers = {} } = {}) {
  const url = `${origin}/api/v1/hubs/${encodeURIComponent(hubName)}/groups/${encodeURIComponent(group)}`;
  const res = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify(message),
    signal: AbortSignal.timeout(5000),
  });
  const text = await res.text();
  let body;
  try {
    body = text.length ? JSON.parse(text) : undefined;
  } catch {
    body = undefined;
  }
  return { status: res.status, body, text };
}

/** Last path segment of a hub path: "/hubs/video-generation" -> "video-generation". */
export function hubName(hubPath) {
  return hubPath.split("/").filter(Boolean).pop();
}

// ---------------------------------------------------------------------------
// Cluster (Redis backplane) helpers
// ---------------------------------------------------------------------------

/** Resolves true if a Redis server on `port` answers PING with +PONG. */
function redisPing(port, timeoutMs = 1000) {
  return new Promise((resolve) => {
    const socket = createConnection({ host: "127.0.0.1", port });
    let buf = "";
    const done = (ok) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    socket.setEncoding("utf8");
    socket.on("connect", () => socket.write("PING\r\n"));
    socket.on("data", (chunk) => {
      buf += chunk;
      if (buf.includes("\r\n")) done(buf.startsWith("+PONG"));
    });
    socket.on("error", () => done(false));
    socket.on("close", () => done(false));
  });
}

/**
 * A running redis-server: .port, .url ("redis://127.0.0.1:PORT"), .logs(),
 * .stop(signal).
 */
class RedisServer {
  constructor(child, port) {
    this.child = child;
    this.port = port;
    this.url = `redis://127.0.0.1:${port}`;
    this._log = [];
    this.exitInfo = null;
    this.exited = new Promise((resolve) => {
      child.on("exit", (code, signal) => {
        running.delete(child);
        this.exitInfo = { code, signal };
        resolve(this.exitInfo);
      });
    });
    for (const stream of [child.stdout, child.stderr]) {
      stream.setEncoding("utf8");
      stream.on("data", (chunk) => {
        for (const line of chunk.split("\n")) {
          if (!line) continue;
          this._log.push(line);
          if (this._log.length > 50) this._log.shift();
        }
      });
    }
  }

  logs() {
    return `--- redis-server (port ${this.port}) output tail ---\n${this._log.join("\n")}\n--- end ---`;
  }

  async stop(signal = "SIGKILL", timeoutMs = 5000) {
    if (this.exitInfo) return this.exitInfo;
    this.child.kill(signal);
    await withTimeout(this.exited, timeoutMs, `redis-server (port ${this.port}) to exit`);
    return this.exitInfo;
  }
}

/**
 * Spawns `redis-server` (REDIS_SERVER_BIN or the one on PATH) on a free port,
 * without persistence, and resolves once it answers PING. Retries on another
 * port if the process exits early (port taken) until `timeoutMs` runs out.
 */
export async function startRedis({ timeoutMs = 15_000 } = {}) {
  const bin = process.env.REDIS_SERVER_BIN || "redis-server";
  const deadline = Date.now() + timeoutMs;
  let lastFailure = "";
  while (Date.now() < deadline) {
    const port = await freePort();
    const child = spawn(
      bin,
      ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    running.add(child);
    const redis = new RedisServer(child, port);
    let spawnError = null;
    child.once("error", (err) => {
      spawnError = err;
    });
    for (;;) {
      if (spawnError) throw new Error(`could not spawn ${bin}: ${spawnError.message}`);
      if (redis.exitInfo) break;
      if ((await redisPing(port)) && !redis.exitInfo) return redis;
      if (Date.now() >= deadline) {
        await redis.stop("SIGKILL").catch(() => {});
        throw new Error(`redis-server did not answer PING within ${timeoutMs} ms\n${redis.logs()}`);
      }
      await new Promise((r) => setTimeout(r, 25));
    }
    lastFailure = `exited early with ${JSON.stringify(redis.exitInfo)}\n${redis.logs()}`;
  }
  throw new Error(`redis-server failed to start within ${timeoutMs} ms: ${lastFailure}`);
}

/**
 * Resolves to a port in [20000, 50000) that, with its cluster bus port
 * (port + 10000), was free on 127.0.0.1 a moment ago, and is not in `avoid`.
 * Redis Cluster needs the bus port, so ports from freePort() (often above
 * 55535) do not do.
 */
async function freeClusterPort(avoid = new Set()) {
  const canListen = async (port) => {
    const srv = createServer();
    try {
      srv.listen(port, "127.0.0.1");
      await Promise.race([
        once(srv, "listening"),
        once(srv, "error").then(([err]) => Promise.reject(err)),
      ]);
      return true;
    } catch {
      return false;
    } finally {
      if (srv.listening) {
        srv.close();
        await once(srv, "close");
      }
    }
  };
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = 20000 + Math.floor(Math.random() * 30000);
    if (avoid.has(port) || avoid.has(port + 10000) || avoid.has(port - 10000)) continue;
    if ((await canListen(port)) && (await canListen(port + 10000))) return port;
  }
  throw new Error("no free port pair (port, port + 10000) below 50000 found");
}

/** Runs redis-cli (REDIS_CLI_BIN or the one on PATH); resolves to its stdout. */
function redisCli(args, timeoutMs = 10_000) {
  const bin = process.env.REDIS_CLI_BIN || "redis-cli";
  return new Promise((resolve, reject) => {
    execFile(bin, args, { timeout: timeoutMs, encoding: "utf8" }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${bin} ${args.join(" ")}: ${err.message}\n${stdout}${stderr}`));
      else resolve(stdout);
    });
  });
}

/** The fields of a CLUSTER INFO reply on `port` as an object. */
async function clusterInfo(port) {
  const text = await redisCli(["-h", "127.0.0.1", "-p", String(port), "cluster", "info"], 2000);
  const info = {};
  for (const line of text.split(/\r?\n/)) {
    const i = line.indexOf(":");
    if (i > 0) info[line.slice(0, i)] = line.slice(i + 1).trim();
  }
  return info;
}

/**
 * The roles in CLUSTER NODES on `port`: {masters, replicas}, ports sorted,
 * counting only nodes not flagged fail / fail? whose link is "connected" (and
 * replicas only once they name their master).
 */
async function clusterRoles(port) {
  const text = await redisCli(["-h", "127.0.0.1", "-p", String(port), "cluster", "nodes"], 2000);
  const masters = [];
  const replicas = [];
  for (const line of text.split(/\r?\n/)) {
    const fields = line.split(" ");
    if (fields.length < 8) continue;
    const nodePort = Number(fields[1].split("@")[0].split(":").pop());
    const flags = fields[2].split(",");
    if (flags.includes("fail") || flags.includes("fail?") || fields[7] !== "connected") continue;
    if (flags.includes("master")) masters.push(nodePort);
    else if (flags.includes("slave") && fields[3] !== "-") replicas.push(nodePort);
  }
  const byNumber = (a, b) => a - b;
  return { masters: masters.sort(byNumber), replicas: replicas.sort(byNumber) };
}

/**
 * A running Redis Cluster of three masters and three replicas, each a
 * redis-server in its own temporary directory:
 *   .url ("redis+cluster://127.0.0.1:M1,127.0.0.1:M2,127.0.0.1:M3", the masters
 *   as seed nodes), .masters / .replicas (ports), .servers (RedisServer each),
 *   .logs(), .stop(signal) (stops every server and removes the directories).
 */
class RedisCluster {
  constructor(servers, dirs) {
    this.servers = servers;
    this.dirs = dirs;
    this.masters = [];
    this.replicas = [];
    this.url = "";
  }

  /** Sets .masters, .replicas and .url from `roles` (see clusterRoles). */
  _setRoles({ masters, replicas }) {
    this.masters = masters;
    this.replicas = replicas;
    this.url = `redis+cluster://${masters.map((p) => `127.0.0.1:${p}`).join(",")}`;
  }

  logs() {
    return this.servers.map((s) => s.logs()).join("\n");
  }

  async stop(signal = "SIGKILL", timeoutMs = 5000) {
    try {
      await Promise.all(this.servers.map((s) => s.stop(signal, timeoutMs)));
    } finally {
      for (const dir of this.dirs) rmSync(dir, { recursive: true, force: true });
    }
  }
}

/**
 * Starts a Redis Cluster (3 masters + 3 replicas, `cluster-node-timeout`
 * 2000 ms for a quick failover) on free ports below 50000, each node in its
 * own temporary directory without persistence, and resolves once every node
 * reports `cluster_state:ok` with all 16384 slots served and sees the same
 * three masters and three replicas. Throws (after stopping what it started) when that takes longer than
 * `timeoutMs`.
 */
export async function startRedisCluster({ timeoutMs = 30_000, nodeTimeoutMs = 2000 } = {}) {
  const bin = process.env.REDIS_SERVER_BIN || "redis-server";
  const deadline = Date.now() + timeoutMs;
  const servers = [];
  const dirs = [];
  const cluster = new RedisCluster(servers, dirs);
  const taken = new Set();
  try {
    for (let i = 0; i < 6; i++) {
      let started = null;
      let lastFailure = "";
      while (!started && Date.now() < deadline) {
        const port = await freeClusterPort(taken);
        const dir = mkdtempSync(path.join(tmpdir(), `hubcast-redis-cluster-${port}-`));
        const child = spawn(
          bin,
          [
            "--port", String(port),
            "--bind", "127.0.0.1",
            "--dir", dir,
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", String(nodeTimeoutMs),
            "--save", "",
            "--appendonly", "no",
          ],
          { stdio: ["ignore", "pipe", "pipe"] },
        );
        running.add(child);
        const redis = new RedisServer(child, port);
        let spawnError = null;
        child.once("error", (err) => {
          spawnError = err;
        });
        for (;;) {
          if (spawnError) throw new Error(`could not spawn ${bin}: ${spawnError.message}`);
          if (redis.exitInfo) break;
          if ((await redisPing(port)) && !redis.exitInfo) {
            started = redis;
            break;
          }
          if (Date.now() >= deadline) {
            await redis.stop("SIGKILL").catch(() => {});
            rmSync(dir, { recursive: true, force: true });
            throw new Error(`cluster redis-server did not answer PING within ${timeoutMs} ms\n${redis.logs()}`);
          }
          await new Promise((r) => setTimeout(r, 25));
        }
        if (started) {
          servers.push(started);
          dirs.push(dir);
          taken.add(port);
        } else {
          lastFailure = `exited early with ${JSON.stringify(redis.exitInfo)}\n${redis.logs()}`;
          rmSync(dir, { recursive: true, force: true });
        }
      }
      if (!started) throw new Error(`cluster redis-server failed to start within ${timeoutMs} ms: ${lastFailure}`);
    }

    await redisCli(
      [
        "--cluster", "create",
        ...servers.map((s) => `127.0.0.1:${s.port}`),
        "--cluster-replicas", "1",
        "--cluster-yes",
      ],
      Math.max(1000, deadline - Date.now()),
    );

    // Ready when every node serves all slots and sees the same three masters
    // and three replicas (roles spread by gossip after `--cluster create`).
    let last = {};
    const roles = await waitFor(
      async () => {
        let seen = null;
        for (const s of servers) {
          const info = await clusterInfo(s.port);
          const view = await clusterRoles(s.port);
          last = { port: s.port, ...info, ...view };
          if (
            info.cluster_state !== "ok" ||
            info.cluster_slots_ok !== "16384" ||
            info.cluster_known_nodes !== "6" ||
            view.masters.length !== 3 ||
            view.replicas.length !== 3
          ) {
            return null;
          }
          if (seen && JSON.stringify(seen) !== JSON.stringify(view)) return null;
          seen = view;
        }
        return seen;
      },
      {
        timeoutMs: Math.max(0, deadline - Date.now()),
        intervalMs: 100,
        what: "cluster_state:ok and 3 masters + 3 replicas on all six Redis Cluster nodes",
        detail: () => `last view: ${JSON.stringify(last)}\n${cluster.logs()}`,
      },
    );
    cluster._setRoles(roles);
    return cluster;
  } catch (err) {
    await cluster.stop("SIGKILL").catch(() => {});
    throw err;
  }
}

/**
 * Which Redis the backplane suites run on: "standalone" (the default) or
 * "cluster", from env HUBCAST_TEST_REDIS.
 */
export const TEST_REDIS_MODE = (() => {
  const mode = process.env.HUBCAST_TEST_REDIS || "standalone";
  if (mode !== "standalone" && mode !== "cluster") {
    throw new Error(`HUBCAST_TEST_REDIS must be 'standalone' or 'cluster', got '${mode}'`);
  }
  return mode;
})();

/**
 * Starts the Redis a backplane suite runs on: startRedisCluster() when
 * HUBCAST_TEST_REDIS=cluster, else startRedis(). Either has .url, .logs()
 * and .stop().
 */
export function startBackplaneRedis(options = {}) {
  return TEST_REDIS_MODE === "cluster" ? startRedisCluster(options) : startRedis(options);
}

/** A Redis key prefix nobody else uses ("js" + random hex). */
export function uniqueRedisPrefix(prefix = "js") {
  return `${prefix}${randomBytes(6).toString("hex")}`;
}

/** Waits until GET /readyz on `server` answers 200. */
export async function waitReady(server, timeoutMs = 15_000) {
  let last = "no answer";
  await waitFor(
    async () => {
      if (server.exitInfo) throw new Error(`exited with ${JSON.stringify(server.exitInfo)}`);
      const res = await fetch(`${server.origin}/readyz`, { signal: AbortSignal.timeout(1000) });
      last = `${res.status} ${await res.text()}`;
      return res.status === 200;
    },
    {
      timeoutMs,
      intervalMs: 25,
      what: `GET ${server.origin}/readyz to answer 200`,
      detail: () => `last answer: ${last}\n${server.logs()}`,
    },
  );
  return server;
}

/**
 * Starts a hubcast node joined to the cluster on `redisUrl` with `prefix`
 * and `nodeId`, and resolves once /readyz answers 200.
 */
export async function startClusterNode({ redisUrl, prefix, nodeId, timeoutMs = 20_000, extraArgs = [] }) {
  const server = await startServer({
    timeoutMs,
    extraArgs: ["--redis-url", redisUrl, "--redis-prefix", prefix, "--node-id", nodeId, ...extraArgs],
  });
  try {
    await waitReady(server, timeoutMs);
  } catch (err) {
    await server.stop("SIGKILL");
    throw err;
  }
  server.nodeId = nodeId;
  return server;
}

/**
 * Two nodes on one backplane Redis (a Redis Cluster with HUBCAST_TEST_REDIS=cluster),
 * with a key prefix of their own: `{ redis, nodes, ports, stop() }`.
 */
export async function startTwoNodeCluster(tag) {
  const redis = await startBackplaneRedis();
  const prefix = uniqueRedisPrefix(tag);
  const nodes = [];
  for (const id of [`${tag}-a`, `${tag}-b`]) {
    nodes.push(await startClusterNode({ redisUrl: redis.url, prefix, nodeId: id }));
  }
  return {
    redis,
    nodes,
    ports: nodes.map((n) => Number(new URL(n.origin).port)),
    async stop() {
      for (const n of nodes) await n.stop();
      await redis.stop();
    },
  };
}

/**
 * An HTTP request with an optional JSON body; returns {status, body, text}
 * (body is the parsed JSON, or undefined). `headers` are added to the request.
 */
export async function apiRequest(method, url, json, { headers = {} } = {}) {
  const init = { method, signal: AbortSignal.timeout(5000), headers: { ...headers } };
  if (json !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(json);
  }
  const res = await fetch(url, init);
  const text = await res.text();
  let body;
  try {
    body = text.length ? JSON.parse(text) : undefined;
  } catch {
    body = undefined;
  }
  return { status: res.status, body, text };
}

// ---------------------------------------------------------------------------
// Credentials (secure mode)
// ---------------------------------------------------------------------------

/**
 * An HS256 JWT over `claims`, signed with `key` (a string, used as its UTF-8
 * bytes). `header` replaces the default {"alg":"HS256","typ":"JWT"}.
 */
export function signJwt(claims, key, header = { alg: "HS256", typ: "JWT" }) {
  const b64 = (obj) => Buffer.from(JSON.stringify(obj), "utf8").toString("base64url");
  const signingInput = `${b64(header)}.${b64(claims)}`;
  const signature = createHmac("sha256", Buffer.from(key, "utf8")).update(signingInput).digest("base64url");
  return `${signingInput}.${signature}`;
}

/** Seconds since the Unix epoch (for `exp` / `nbf` claims). */
export function nowSecs() {
  return Math.floor(Date.now() / 1000);
}
