// The clients: official @microsoft/signalr HubConnections (WebSockets, automatic
// reconnect), each in one group, rejoining it after every reconnect. Each client keeps
// its membership intervals (join acknowledged .. disconnected), its reconnects, and every
// `Chaos` event it received.

import { HttpTransportType, HubConnectionBuilder, HubConnectionState, LogLevel } from "@microsoft/signalr";
import { delay, withTimeout } from "./harness.mjs";

/** 0, 200, 500, 1000 ms, then every 2 s for about 40 s. */
export const RECONNECT_DELAYS = [0, 200, 500, 1000, ...Array(20).fill(2000)];

const JOIN_ATTEMPTS = 20;

class RingLogger {
  constructor(max = 20) {
    this.max = max;
    this.lines = [];
  }

  log(level, message) {
    if (level < LogLevel.Warning) return;
    this.lines.push(`${new Date().toISOString()} ${LogLevel[level]}: ${message}`);
    if (this.lines.length > this.max) this.lines.shift();
  }
}

export class ChaosClient {
  constructor(fleet, index, group, url) {
    this.fleet = fleet;
    this.index = index;
    this.group = group;
    this.url = url;
    this.node = null; // node index the load balancer last sent it to
    this.joined = false;
    this.intervals = []; // [joinedAt, leftAt | null]
    this.reconnects = 0;
    this.disconnects = []; // times the connection dropped
    this.rejoins = []; // times a rejoin was acknowledged
    this.received = new Map(); // message id -> times received
    this.wrongGroup = 0;
    this.generation = 0;
    this.closed = false;
    this.logger = new RingLogger();
    this.connection = new HubConnectionBuilder()
      .withUrl(url, { transport: HttpTransportType.WebSockets, skipNegotiation: true })
      .withAutomaticReconnect(RECONNECT_DELAYS)
      .configureLogging(this.logger)
      .build();
    this.connection.on("Chaos", (payload) => this._event(payload));
    this.connection.onreconnecting(() => {
      this.reconnects += 1;
      this._left();
    });
    this.connection.onreconnected(() => {
      this._join(true).catch(() => {});
    });
    this.connection.onclose(() => {
      this.closed = true;
      this._left();
    });
  }

  _event(payload) {
    const now = Date.now();
    if (!payload || payload.g !== this.group) this.wrongGroup += 1;
    const id = payload?.id;
    this.received.set(id, (this.received.get(id) ?? 0) + 1);
    this.fleet._delivered(this, id, now);
  }

  _left() {
    this.generation += 1;
    if (this.joined) {
      this.joined = false;
      const now = Date.now();
      this.intervals[this.intervals.length - 1][1] = now;
      this.disconnects.push(now);
    }
  }

  /** JoinGroup until acknowledged (bounded), unless the connection drops meanwhile. */
  async _join(rejoin = false) {
    const generation = this.generation;
    for (let attempt = 1; attempt <= JOIN_ATTEMPTS; attempt++) {
      if (generation !== this.generation || this.connection.state !== HubConnectionState.Connected) return false;
      try {
        await withTimeout(this.connection.invoke("JoinGroup", this.group), 10_000, `JoinGroup(${this.group})`);
        if (generation !== this.generation) return false;
        const now = Date.now();
        this.joined = true;
        this.intervals.push([now, null]);
        if (rejoin) this.rejoins.push(now);
        return true;
      } catch (err) {
        this.lastJoinError = err.message;
        await delay(200);
      }
    }
    return false;
  }

  async start() {
    this.closed = false;
    await withTimeout(this.connection.start(), 10_000, `start() of client ${this.index}`);
    if (!(await this._join())) throw new Error(`client ${this.index} could not join ${this.group}: ${this.lastJoinError}`);
  }

  /** Joined over the whole of [from, to] (a message sent at `from`, accepted at `to`). */
  memberThroughout(from, to) {
    for (const [start, end] of this.intervals) {
      if (start <= from && (end === null || end > to)) return true;
    }
    return false;
  }

  /** First rejoin acknowledged at or after `t`, or null. */
  rejoinAfter(t) {
    return this.rejoins.find((r) => r >= t) ?? null;
  }

  async stop() {
    try {
      await withTimeout(this.connection.stop(), 5000, `stop() of client ${this.index}`);
    } catch {
      // best effort
    }
  }
}

export class Fleet {
  /** `urlFor(i)` is client i's hub URL; `groupOf(i)` its group. */
  constructor({ count, groupOf, urlFor }) {
    this.clients = [];
    this.byGroup = new Map();
    for (let i = 0; i < count; i++) {
      const c = new ChaosClient(this, i, groupOf(i), urlFor(i));
      this.clients.push(c);
      if (!this.byGroup.has(c.group)) this.byGroup.set(c.group, []);
      this.byGroup.get(c.group).push(c);
    }
    this.lastDeliveryAt = 0;
    this.watch = null;
  }

  /** Starts every client, `concurrency` at a time, each retried up to 3 times. */
  async startAll({ concurrency = 20 } = {}) {
    const queue = [...this.clients];
    const failures = [];
    const worker = async () => {
      for (let c = queue.shift(); c; c = queue.shift()) {
        let lastErr;
        for (let attempt = 0; attempt < 3; attempt++) {
          try {
            await c.start();
            lastErr = null;
            break;
          } catch (err) {
            lastErr = err;
            await c.stop();
          }
        }
        if (lastErr) failures.push(`client ${c.index}: ${lastErr.message}`);
      }
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
    if (failures.length) throw new Error(`${failures.length} clients failed to start:\n${failures.slice(0, 5).join("\n")}`);
  }

  /** Sets the node of the client tagged `index` (the load balancer's report). */
  routed(index, node) {
    const c = this.clients[index];
    if (c) c.node = node;
  }

  _delivered(client, id, now) {
    this.lastDeliveryAt = now;
    this.watch?.(client, id, now);
  }

  joinedCount(group) {
    return (this.byGroup.get(group) ?? []).filter((c) => c.joined).length;
  }

  allJoined() {
    return this.clients.every((c) => c.joined);
  }

  totalReconnects() {
    return this.clients.reduce((a, c) => a + c.reconnects, 0);
  }

  /** Clients per node index (null: not routed yet). */
  distribution() {
    const d = {};
    for (const c of this.clients) d[c.node] = (d[c.node] ?? 0) + 1;
    return d;
  }

  async stopAll() {
    await Promise.all(this.clients.map((c) => c.stop()));
  }
}
