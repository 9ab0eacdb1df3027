// The two TCP relays of the chaos suite, on 127.0.0.1 only:
//
// - TcpProxy: one upstream (node 3's way to Redis). blackhole() stops forwarding in both
//   directions without closing anything, as a network partition does: sockets stop being
//   read, bytes already read wait in the proxy, new connections are accepted but not
//   forwarded, and a side that closes meanwhile is closed on the other side only after
//   heal(). heal() delivers what waited (TCP would retransmit it) and resumes.
// - LoadBalancer: one listener per hubcast node. A new connection goes to that listener's
//   node unless it is marked dead or refuses the connection; then round-robin over the
//   nodes not marked dead. It reports which node each tagged client (`?client=N` in the
//   request line) was sent to.

import { createConnection, createServer } from "node:net";
import { once } from "node:events";

/**
 * Two sockets spliced together. `blocked()` true holds every byte and every close until
 * release() is called.
 */
class Splice {
  constructor(down, blocked, onDone) {
    this.down = down;
    this.up = null;
    this.upReady = false;
    this.blocked = blocked;
    this.onDone = onDone;
    this.toUp = [];
    this.toDown = [];
    this.downGone = false;
    this.upGone = false;
    this.done = false;
    down.setNoDelay(true);
    down.on("error", () => {});
    down.on("data", (chunk) => this._data(chunk, "down"));
    down.on("close", () => {
      this.downGone = true;
      this._maybeClose();
    });
  }

  /** Attaches the upstream socket (connected or connecting). */
  attach(up) {
    this.up = up;
    up.setNoDelay(true);
    up.on("error", () => {});
    up.on("data", (chunk) => this._data(chunk, "up"));
    up.on("close", () => {
      this.upGone = true;
      this._maybeClose();
    });
    const ready = () => {
      this.upReady = true;
      if (!this.blocked()) this._flush();
    };
    if (up.connecting) up.once("connect", ready);
    else ready();
  }

  _data(chunk, from) {
    const queue = from === "down" ? this.toUp : this.toDown;
    const src = from === "down" ? this.down : this.up;
    const dst = from === "down" ? this.up : this.down;
    if (this.blocked() || (from === "down" && !this.upReady) || queue.length > 0) {
      queue.push(chunk);
      if (this.blocked()) src.pause();
      return;
    }
    if (!dst.write(chunk)) {
      src.pause();
      dst.once("drain", () => {
        if (!this.blocked()) src.resume();
      });
    }
  }

  /** Writes what waited and resumes reading (after heal, or once upstream connected). */
  _flush() {
    if (this.done) return;
    if (this.upReady && !this.upGone && this.toUp.length) {
      for (const c of this.toUp.splice(0)) this.up.write(c);
    }
    if (!this.downGone && this.toDown.length) {
      for (const c of this.toDown.splice(0)) this.down.write(c);
    }
    this.down.resume();
    this.up?.resume();
    this._maybeClose();
  }

  /** Stops reading both sides (black hole). */
  hold() {
    this.down.pause();
    this.up?.pause();
  }

  release() {
    this._flush();
  }

  _maybeClose() {
    if (this.done || this.blocked()) return;
    if (!this.downGone && !this.upGone) return;
    this.done = true;
    if (this.downGone && this.up && !this.upGone) {
      if (this.upReady) for (const c of this.toUp.splice(0)) this.up.write(c);
      this.up.end();
    }
    if (this.upGone && !this.downGone) {
      for (const c of this.toDown.splice(0)) this.down.write(c);
      this.down.end();
    }
    this.onDone(this);
  }

  destroy() {
    this.done = true;
    this.down.destroy();
    this.up?.destroy();
  }
}

async function listen(server, port = 0) {
  server.listen(port, "127.0.0.1");
  await once(server, "listening");
  return server.address().port;
}

async function closeServer(server) {
  if (!server.listening) return;
  await new Promise((resolve) => server.close(() => resolve()));
}

/** A TCP proxy to 127.0.0.1:upstreamPort that the test can black-hole. */
export class TcpProxy {
  constructor(upstreamPort) {
    this.upstreamPort = upstreamPort;
    this.isBlackholed = false;
    this.splices = new Set();
    this.pendingConnect = new Set();
    this.connections = 0;
    this.server = createServer((down) => this._accept(down));
  }

  async listen(port = 0) {
    this.port = await listen(this.server, port);
    return this.port;
  }

  _accept(down) {
    this.connections += 1;
    const splice = new Splice(down, () => this.isBlackholed, (s) => this.splices.delete(s));
    this.splices.add(splice);
    if (this.isBlackholed) {
      down.pause();
      this.pendingConnect.add(splice);
    } else {
      this._connect(splice);
    }
  }

  _connect(splice) {
    if (splice.downGone) {
      splice.upGone = true;
      splice._maybeClose();
      return;
    }
    splice.attach(createConnection({ host: "127.0.0.1", port: this.upstreamPort }));
  }

  /** Stops forwarding in both directions; closes nothing. */
  blackhole() {
    this.isBlackholed = true;
    for (const s of this.splices) s.hold();
  }

  /** Resumes forwarding: connects the connections accepted meanwhile, delivers what waited. */
  heal() {
    this.isBlackholed = false;
    for (const s of this.pendingConnect) this._connect(s);
    this.pendingConnect.clear();
    for (const s of [...this.splices]) s.release();
  }

  async close() {
    this.isBlackholed = false;
    for (const s of this.splices) s.destroy();
    this.splices.clear();
    await closeServer(this.server);
  }
}

/**
 * One listener per node (index i prefers node i). `targets[i]` is node i's port;
 * `onRoute(clientTag, nodeIndex)` is called for each connection whose request line
 * carries `client=N`.
 */
export class LoadBalancer {
  constructor(targets, { onRoute = () => {} } = {}) {
    this.targets = [...targets];
    this.dead = new Set();
    this.onRoute = onRoute;
    this.failovers = 0;
    this.splices = new Set();
    this.servers = this.targets.map((_, i) => createServer((down) => this._accept(down, i)));
    this.ports = [];
  }

  async listen() {
    this.ports = await Promise.all(this.servers.map((s) => listen(s)));
    return this.ports;
  }

  markDead(i) {
    this.dead.add(i);
  }

  markAlive(i, port = this.targets[i]) {
    this.targets[i] = port;
    this.dead.delete(i);
  }

  /**
   * Node indexes to try, in order: the preferred one if alive, then the other live ones,
   * round-robin over the connections that did not go to their preferred node.
   */
  _candidates(preferred) {
    const alive = this.targets.map((_, i) => i).filter((i) => !this.dead.has(i));
    const others = alive.filter((i) => i !== preferred);
    const rotate = (start) => [...others.slice(start), ...others.slice(0, start)];
    if (alive.includes(preferred)) return [preferred, ...others];
    return others.length ? rotate(this.failovers++ % others.length) : [];
  }

  _accept(down, preferred) {
    const splice = new Splice(down, () => false, (s) => this.splices.delete(s));
    this.splices.add(splice);
    let tagged = false;
    const candidates = this._candidates(preferred);
    const tryNext = () => {
      const i = candidates.shift();
      if (i === undefined || splice.downGone) {
        down.destroy();
        return;
      }
      const up = createConnection({ host: "127.0.0.1", port: this.targets[i] });
      const onError = () => {
        up.destroy();
        tryNext();
      };
      up.once("error", onError);
      up.once("connect", () => {
        up.off("error", onError);
        splice.node = i;
        if (!tagged) {
          // the first bytes are already queued in the splice (upstream was not ready)
          const first = splice.toUp.length ? Buffer.concat(splice.toUp).toString("latin1", 0, 512) : "";
          const m = /^[A-Z]+ [^ ]*[?&]client=(\d+)/.exec(first);
          if (m) {
            tagged = true;
            this.onRoute(Number(m[1]), i);
          } else {
            down.once("data", (chunk) => {
              const m2 = /^[A-Z]+ [^ ]*[?&]client=(\d+)/.exec(chunk.toString("latin1", 0, 512));
              if (m2) this.onRoute(Number(m2[1]), i);
            });
          }
        }
        splice.attach(up);
      });
    };
    tryNext();
  }

  async close() {
    for (const s of this.splices) s.destroy();
    this.splices.clear();
    await Promise.all(this.servers.map(closeServer));
  }
}
