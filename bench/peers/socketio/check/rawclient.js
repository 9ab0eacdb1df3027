// A raw WebSocket client that speaks Engine.IO 4 / Socket.IO 5 by hand (no
// socket.io-client) and logs every frame it sends and receives. Used by
// selftest.js; it mirrors what the Rust load generator has to do.
"use strict";

const path = require("node:path");

// `ws` is not a direct dependency: it comes in with socket.io (engine.io
// depends on it). npm hoists it, but resolve it through engine.io to be safe.
function loadWs() {
  try {
    return require("ws");
  } catch {
    const engineDir = path.dirname(require.resolve("engine.io/package.json"));
    return require(require.resolve("ws", { paths: [engineDir] }));
  }
}
const WebSocket = loadWs();

const t0 = Date.now();
function stamp() {
  return `+${String(Date.now() - t0).padStart(6, " ")}ms`;
}

class RawClient {
  constructor(name, url, { log = true } = {}) {
    this.name = name;
    this.url = url;
    this.log = log;
    this.frames = []; // { dir: "<-"|"->"|"ws", text, binary }
    this.queue = [];
    this.waiters = [];
    this.closed = null;
  }

  print(line) {
    if (this.log) process.stdout.write(`${stamp()} [${this.name}] ${line}\n`);
  }

  open() {
    return new Promise((resolve, reject) => {
      this.print(`connect ${this.url}`);
      // perMessageDeflate: false -> do not even offer the extension.
      const ws = new WebSocket(this.url, { perMessageDeflate: false });
      this.ws = ws;
      ws.on("upgrade", (res) => {
        this.print(`HTTP ${res.statusCode} upgrade; sec-websocket-extensions=${JSON.stringify(res.headers["sec-websocket-extensions"] ?? null)}`);
      });
      ws.on("open", () => resolve());
      ws.on("error", (err) => {
        this.print(`ws error: ${err.message}`);
        reject(err);
      });
      ws.on("ping", (data) => this.print(`WS-level ping control frame (${data.length} bytes)`));
      ws.on("message", (data, isBinary) => {
        const text = isBinary ? data.toString("hex") : data.toString("utf8");
        const frame = { dir: "<-", text, binary: isBinary };
        this.frames.push(frame);
        this.print(`<- ${isBinary ? "BINARY " : "text   "}${text}`);
        const i = this.waiters.findIndex((w) => w.pred(frame));
        if (i >= 0) {
          const [w] = this.waiters.splice(i, 1);
          clearTimeout(w.timer);
          w.resolve(frame);
        } else {
          this.queue.push(frame);
        }
      });
      ws.on("close", (code, reason) => {
        this.closed = { code, reason: reason.toString() };
        this.print(`ws closed by peer: code=${code} reason=${JSON.stringify(reason.toString())}`);
        for (const w of this.waiters.splice(0)) {
          clearTimeout(w.timer);
          w.reject(new Error(`[${this.name}] connection closed while waiting for ${w.what}`));
        }
        if (this.onClose) this.onClose(this.closed);
      });
    });
  }

  send(text) {
    this.frames.push({ dir: "->", text, binary: false });
    this.print(`-> text   ${text}`);
    this.ws.send(text);
  }

  // Wait for the next received frame matching pred (frames that arrived
  // earlier and were not consumed count too).
  expect(what, pred, timeoutMs = 5000) {
    const i = this.queue.findIndex(pred);
    if (i >= 0) return Promise.resolve(this.queue.splice(i, 1)[0]);
    if (this.closed) return Promise.reject(new Error(`[${this.name}] closed; never got ${what}`));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        const j = this.waiters.findIndex((w) => w.timer === timer);
        if (j >= 0) this.waiters.splice(j, 1);
        reject(new Error(`[${this.name}] timed out after ${timeoutMs}ms waiting for ${what}`));
      }, timeoutMs);
      this.waiters.push({ what, pred, resolve, reject, timer });
    });
  }

  // Resolve true if no matching frame arrives within ms.
  async expectNothing(pred, ms) {
    try {
      await this.expect("nothing", pred, ms);
      return false;
    } catch (err) {
      if (/timed out/.test(err.message)) return true;
      throw err;
    }
  }

  // Socket.IO handshake on the main namespace: read the Engine.IO open
  // packet, send "40", read "40{sid}".
  async handshake() {
    const open = await this.expect("Engine.IO open packet", (f) => f.text.startsWith("0"));
    this.engine = JSON.parse(open.text.slice(1));
    this.send("40");
    const conn = await this.expect("Socket.IO CONNECT reply", (f) => f.text.startsWith("40"));
    this.socket = JSON.parse(conn.text.slice(2));
    return { engine: this.engine, socket: this.socket };
  }

  close() {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.close(1000);
  }
}

module.exports = { RawClient, WebSocket, stamp };
