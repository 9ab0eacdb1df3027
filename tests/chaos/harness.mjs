// Processes of the chaos suite: a redis-server that can be killed and started again on
// the same port, hubcast nodes with fixed ports and JSON logs in files, a raw RESP
// client (CLIENT PAUSE, PING) and the Prometheus text parser.
//
// The signalr-free helpers come from tests/js/helpers.mjs. That module imports
// @microsoft/signalr from tests/js/node_modules, so `npm ci` must have run there too.

import { spawn } from "node:child_process";
import { createConnection } from "node:net";
import { closeSync, existsSync, openSync, readFileSync, statSync } from "node:fs";
import path from "node:path";

let helpers;
try {
  helpers = await import("../js/helpers.mjs");
} catch (err) {
  throw new Error(
    `cannot load ../js/helpers.mjs (${err.message}); run 'npm ci' in tests/js first`,
  );
}

export const { freePort, waitFor, withTimeout, uniqueRedisPrefix, HUBCAST_BIN } = helpers;

/** Resolves after `ms` (fault durations and load periods only, never to synchronise). */
export const delay = (ms) => new Promise((r) => setTimeout(r, ms));

const children = new Set();
process.on("exit", () => {
  for (const child of children) {
    try {
      child.kill("SIGKILL");
    } catch {
      // gone
    }
  }
});

function track(child) {
  children.add(child);
  child.on("exit", () => children.delete(child));
}

// ---------------------------------------------------------------------------
// RESP
// ---------------------------------------------------------------------------

function encodeCommand(args) {
  let out = `*${args.length}\r\n`;
  for (const a of args) {
    const s = String(a);
    out += `$${Buffer.byteLength(s)}\r\n${s}\r\n`;
  }
  return out;
}

/** Parses one RESP reply at `off`: {value, next}, or null when incomplete. */
function parseReply(buf, off = 0) {
  const eol = buf.indexOf("\r\n", off);
  if (eol < 0) return null;
  const type = String.fromCharCode(buf[off]);
  const line = buf.toString("utf8", off + 1, eol);
  const next = eol + 2;
  switch (type) {
    case "+":
      return { value: line, next };
    case "-":
      return { value: new Error(line), next };
    case ":":
      return { value: Number(line), next };
    case "$": {
      const len = Number(line);
      if (len < 0) return { value: null, next };
      if (buf.length < next + len + 2) return null;
      return { value: buf.toString("utf8", next, next + len), next: next + len + 2 };
    }
    case "*": {
      const n = Number(line);
      if (n < 0) return { value: null, next };
      const items = [];
      let at = next;
      for (let i = 0; i < n; i++) {
        const r = parseReply(buf, at);
        if (!r) return null;
        items.push(r.value);
        at = r.next;
      }
      return { value: items, next: at };
    }
    default:
      throw new Error(`unexpected RESP type ${JSON.stringify(type)}`);
  }
}

/** Sends one command to Redis on 127.0.0.1:port over a fresh socket; resolves its reply. */
export function redisCommand(port, args, { timeoutMs = 2000 } = {}) {
  return new Promise((resolve, reject) => {
    const socket = createConnection({ host: "127.0.0.1", port });
    let buf = Buffer.alloc(0);
    let done = false;
    const finish = (err, value) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      if (err) reject(err);
      else if (value instanceof Error) reject(value);
      else resolve(value);
    };
    const timer = setTimeout(() => finish(new Error(`redis ${args[0]} timed out`)), timeoutMs);
    socket.on("connect", () => socket.write(encodeCommand(args)));
    socket.on("data", (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      const r = parseReply(buf);
      if (r) finish(null, r.value);
    });
    socket.on("error", (err) => finish(err));
    socket.on("close", () => finish(new Error("redis connection closed")));
  });
}

// ---------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------

class Proc {
  constructor(name, logFile) {
    this.name = name;
    this.logFile = logFile;
    this.child = null;
    this.exitInfo = null;
    this.exited = Promise.resolve(null);
  }

  _spawn(bin, args) {
    const fd = openSync(this.logFile, "a");
    const child = spawn(bin, args, { stdio: ["ignore", fd, fd] });
    closeSync(fd);
    track(child);
    this.child = child;
    this.exitInfo = null;
    this.spawnError = null;
    child.once("error", (err) => {
      this.spawnError = err;
    });
    this.exited = new Promise((resolve) => {
      child.once("exit", (code, signal) => {
        this.exitInfo = { code, signal };
        resolve(this.exitInfo);
      });
    });
    return child;
  }

  get running() {
    return this.child !== null && this.exitInfo === null && !this.spawnError;
  }

  get pid() {
    return this.child?.pid;
  }

  /** Sends `signal`; resolves the exit ({code, signal}), SIGKILL after `timeoutMs`. */
  async stop(signal = "SIGKILL", timeoutMs = 15_000) {
    if (!this.running) return this.exitInfo;
    this.child.kill(signal);
    try {
      return await withTimeout(this.exited, timeoutMs, `${this.name} to exit after ${signal}`);
    } catch {
      this.child.kill("SIGKILL");
      const info = await this.exited;
      return { ...info, forced: true };
    }
  }

  logSize() {
    return existsSync(this.logFile) ? statSync(this.logFile).size : 0;
  }

  /** The last `max` lines of the log from byte `since` matching `filter`. */
  logTail({ since = 0, max = 20, filter = () => true } = {}) {
    if (!existsSync(this.logFile)) return [];
    const text = readFileSync(this.logFile).subarray(since).toString("utf8");
    return text.split("\n").filter((l) => l && filter(l)).slice(-max);
  }
}

export class RedisProcess extends Proc {
  constructor(port, logFile) {
    super(`redis-server:${port}`, logFile);
    this.port = port;
    this.url = `redis://127.0.0.1:${port}`;
  }

  /** Starts redis-server on this.port (no persistence) and waits for PING. */
  async start({ timeoutMs = 15_000 } = {}) {
    const bin = process.env.REDIS_SERVER_BIN || "redis-server";
    const deadline = Date.now() + timeoutMs;
    for (let attempt = 1; ; attempt++) {
      this._spawn(bin, [
        "--port", String(this.port), "--bind", "127.0.0.1",
        "--save", "", "--appendonly", "no",
      ]);
      const ok = await waitFor(
        async () => {
          if (this.spawnError) throw this.spawnError;
          if (!this.running) return "exited";
          return (await redisCommand(this.port, ["PING"], { timeoutMs: 500 })) === "PONG" && "ok";
        },
        { timeoutMs: Math.max(500, deadline - Date.now()), intervalMs: 20, what: `${this.name} to answer PING` },
      );
      if (ok === "ok") return this;
      if (Date.now() >= deadline || attempt >= 20) {
        throw new Error(`${this.name} exited before answering PING: ${JSON.stringify(this.exitInfo)}\n${this.logTail({ max: 10 }).join("\n")}`);
      }
    }
  }
}

export class HubcastNode extends Proc {
  /**
   * index 0..2, nodeId "n1".."n3", port / metricsPort fixed, redisUrl (direct or through
   * the proxy), prefix shared by the cluster, logDir for `${nodeId}-${start}.log`.
   */
  constructor({ index, nodeId, port, metricsPort, redisUrl, prefix, logDir }) {
    super(nodeId, path.join(logDir, `${nodeId}-1.log`));
    Object.assign(this, { index, nodeId, port, metricsPort, redisUrl, prefix, logDir });
    this.starts = 0;
    this.origin = `http://127.0.0.1:${port}`;
    this.metricsUrl = `http://127.0.0.1:${metricsPort}/metrics`;
    this.lastMetrics = null;
  }

  /** Spawns the node and waits until /readyz answers 200 (retrying a failed bind). */
  async start({ timeoutMs = 30_000 } = {}) {
    if (!existsSync(HUBCAST_BIN)) {
      throw new Error(`hubcast binary not found at ${HUBCAST_BIN}: run 'cargo build' or set HUBCAST_BIN`);
    }
    this.starts += 1;
    this.logFile = path.join(this.logDir, `${this.nodeId}-${this.starts}.log`);
    const deadline = Date.now() + timeoutMs;
    for (let attempt = 1; ; attempt++) {
      this._spawn(HUBCAST_BIN, [
        "--listen", `127.0.0.1:${this.port}`,
        "--metrics-listen", `127.0.0.1:${this.metricsPort}`,
        "--redis-url", this.redisUrl,
        "--redis-prefix", this.prefix,
        "--node-id", this.nodeId,
        "--log-format", "json",
        "--insecure",
      ]);
      const state = await waitFor(
        async () => {
          if (this.spawnError) throw this.spawnError;
          if (!this.running) return "exited";
          const res = await fetch(`${this.origin}/readyz`, { signal: AbortSignal.timeout(1000) });
          await res.arrayBuffer();
          return res.status === 200 && "ready";
        },
        {
          timeoutMs: Math.max(500, deadline - Date.now()),
          intervalMs: 50,
          what: `${this.nodeId} /readyz 200`,
          detail: () => this.logTail({ max: 15 }).join("\n"),
        },
      );
      if (state === "ready") return this;
      if (Date.now() >= deadline || attempt >= 20) {
        throw new Error(`${this.nodeId} exited before ready: ${JSON.stringify(this.exitInfo)}\n${this.logTail({ max: 15 }).join("\n")}`);
      }
    }
  }

  /** Scrapes /metrics; remembers the last good scrape (a killed node keeps its last one). */
  async metrics() {
    const res = await fetch(this.metricsUrl, { signal: AbortSignal.timeout(2000) });
    const samples = parsePrometheus(await res.text());
    this.lastMetrics = samples;
    return samples;
  }

  /**
   * The WARN / ERROR lines of the current log since byte `since`, one line per distinct
   * message: count, first and last time, the last line's other fields.
   */
  problems(since = 0, max = 15) {
    const byMessage = new Map();
    for (const line of this.logTail({ since, max: Infinity, filter: (l) => /"level":"(WARN|ERROR)"/.test(l) })) {
      let rec;
      try {
        rec = JSON.parse(line);
      } catch {
        rec = { fields: { message: line } };
      }
      const { message = "?", ...fields } = rec.fields ?? {};
      const key = `${rec.level} ${message}`;
      const seen = byMessage.get(key) ?? { count: 0, first: rec.timestamp };
      byMessage.set(key, { count: seen.count + 1, first: seen.first, last: rec.timestamp, fields });
    }
    return [...byMessage.entries()]
      .slice(-max)
      .map(([key, v]) => `${String(v.count).padStart(5)} x ${key} (${v.first?.slice(11, 23)}..${v.last?.slice(11, 23)}) ${JSON.stringify(v.fields)}`);
  }
}

// ---------------------------------------------------------------------------
// Prometheus text
// ---------------------------------------------------------------------------

/** [{name, labels: {k: v}, value}] of every sample line. */
export function parsePrometheus(text) {
  const out = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    if (m[3]) {
      for (const lm of m[3].matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[lm[1]] = lm[2];
    }
    out.push({ name: m[1], labels, value: Number(m[4]) });
  }
  return out;
}

/** Sum of the samples named `name` whose labels pass `filter`. */
export function metricSum(samples, name, filter = () => true) {
  if (!samples) return 0;
  return samples.filter((s) => s.name === name && filter(s.labels)).reduce((a, s) => a + s.value, 0);
}

/** Delivery failures that count as "counted loss": every reason but connection_closed. */
export function countedFailures(samples) {
  return metricSum(samples, "hubcast_delivery_failures_total", (l) => l.reason !== "connection_closed");
}
