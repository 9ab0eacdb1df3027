#!/usr/bin/env node
// Socket.IO 4 + @socket.io/redis-adapter peer server for the hubcast
// benchmark harness. See README.md in this folder for usage and for the
// wire protocol a hand-written (non socket.io-client) client must speak.
//
//   node server.js --port P --redis redis://127.0.0.1:R [--prefix socket.io]
//                  [--ping-interval MS] [--ping-timeout MS]
"use strict";

const http = require("node:http");
const { parseArgs } = require("node:util");
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-adapter");
const { createClient } = require("redis");

const USAGE =
  "usage: node server.js --port P --redis redis://127.0.0.1:R [--prefix socket.io]" +
  " [--ping-interval MS] [--ping-timeout MS]";

// Largest accepted POST /publish body. Far above anything the harness sends;
// only there so a runaway client cannot make the peer buffer without bound.
const MAX_PUBLISH_BODY = 64 * 1024 * 1024;

function fail(msg) {
  process.stderr.write(`${msg}\n${USAGE}\n`);
  process.exit(2);
}

function parseCli() {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        port: { type: "string" },
        redis: { type: "string" },
        prefix: { type: "string", default: "socket.io" },
        "ping-interval": { type: "string" },
        "ping-timeout": { type: "string" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    fail(err.message);
  }
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  const int = (name, min, max) => {
    const raw = values[name];
    if (raw === undefined) return undefined;
    if (!/^\d+$/.test(raw)) fail(`--${name} must be an integer, got ${JSON.stringify(raw)}`);
    const n = Number(raw);
    if (n < min || n > max) fail(`--${name} must be in ${min}..${max}, got ${n}`);
    return n;
  };
  if (values.port === undefined) fail("--port is required");
  if (values.redis === undefined) fail("--redis is required");
  if (!/^rediss?:\/\//.test(values.redis)) fail(`--redis must be a redis:// URL, got ${JSON.stringify(values.redis)}`);
  if (values.prefix === "") fail("--prefix must not be empty");
  return {
    port: int("port", 0, 65535),
    redisUrl: values.redis,
    prefix: values.prefix,
    // Socket.IO's own defaults (engine.io 6): 25000 / 20000 ms.
    pingInterval: int("ping-interval", 1, 3_600_000) ?? 25000,
    pingTimeout: int("ping-timeout", 1, 3_600_000) ?? 20000,
  };
}

function sendJson(res, status, body) {
  const payload = JSON.stringify(body);
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(payload),
  });
  res.end(payload);
}

async function main() {
  const cfg = parseCli();

  // node-redis v4 clients, exactly as the adapter's README shows.
  const pubClient = createClient({ url: cfg.redisUrl });
  const subClient = pubClient.duplicate();
  // node-redis emits 'error' on connection problems (and reconnects by
  // itself); without a listener the process would crash.
  for (const [name, client] of [["pub", pubClient], ["sub", subClient]]) {
    client.on("error", (err) => process.stderr.write(`redis ${name} client error: ${err.message}\n`));
  }

  let io; // set below; the request handler only uses it after listen()
  let shuttingDown = false;

  const httpServer = http.createServer((req, res) => {
    const path = (req.url || "/").split("?", 1)[0];

    if (path === "/healthz") {
      if (req.method !== "GET" && req.method !== "HEAD") {
        res.setHeader("allow", "GET, HEAD");
        return sendJson(res, 405, { ok: false, error: "method not allowed" });
      }
      const ready = !shuttingDown && pubClient.isReady && subClient.isReady;
      return sendJson(res, ready ? 200 : 503, { ok: ready, redis: ready ? "connected" : "not connected" });
    }

    if (path === "/publish") {
      if (req.method !== "POST") {
        res.setHeader("allow", "POST");
        return sendJson(res, 405, { ok: false, error: "method not allowed" });
      }
      const chunks = [];
      let size = 0;
      let tooBig = false;
      req.on("data", (chunk) => {
        if (tooBig) return;
        size += chunk.length;
        if (size > MAX_PUBLISH_BODY) {
          tooBig = true;
          chunks.length = 0;
          return;
        }
        chunks.push(chunk);
      });
      req.on("end", () => {
        if (tooBig) return sendJson(res, 413, { ok: false, error: "body too large" });
        let msg;
        try {
          msg = JSON.parse(Buffer.concat(chunks).toString("utf8"));
        } catch (err) {
          return sendJson(res, 400, { ok: false, error: `bad JSON: ${err.message}` });
        }
        if (msg === null || typeof msg !== "object" || Array.isArray(msg)) {
          return sendJson(res, 400, { ok: false, error: "body must be a JSON object" });
        }
        if (typeof msg.room !== "string" || msg.room === "") {
          return sendJson(res, 400, { ok: false, error: "\"room\" must be a non-empty string" });
        }
        if (typeof msg.event !== "string" || msg.event === "") {
          return sendJson(res, 400, { ok: false, error: "\"event\" must be a non-empty string" });
        }
        try {
          // Local sockets in the room get the packet synchronously inside
          // this call; the redis adapter PUBLISHes to the other nodes without
          // awaiting the result (fire-and-forget). That is the stock behaviour.
          if (Object.prototype.hasOwnProperty.call(msg, "data")) {
            io.to(msg.room).emit(msg.event, msg.data);
          } else {
            io.to(msg.room).emit(msg.event);
          }
        } catch (err) {
          // e.g. reserved event names ("connect", "disconnect", ...)
          return sendJson(res, 400, { ok: false, error: err.message });
        }
        return sendJson(res, 202, { ok: true });
      });
      req.on("error", () => {
        /* client went away; nothing to answer */
      });
      return;
    }

    sendJson(res, 404, { ok: false, error: "not found" });
  });

  // Installed before connecting so that SIGTERM also works while node-redis
  // is still retrying an unreachable Redis.
  const shutdown = (signal) => {
    if (shuttingDown) return;
    shuttingDown = true;
    process.stderr.write(`${signal} received, shutting down\n`);
    const hardExit = setTimeout(() => process.exit(1), 5000);
    hardExit.unref();
    const closeRedis = async () => {
      await Promise.allSettled(
        [pubClient, subClient].map((c) => (c.isReady ? c.quit() : c.isOpen ? c.disconnect() : undefined)),
      );
      process.exit(0);
    };
    if (io) {
      // io.close() disconnects every socket, closes the http server and the
      // adapter (which unsubscribes from Redis).
      io.close(closeRedis);
    } else {
      closeRedis();
    }
  };
  process.on("SIGTERM", () => shutdown("SIGTERM"));
  process.on("SIGINT", () => shutdown("SIGINT"));

  try {
    await Promise.all([pubClient.connect(), subClient.connect()]);
  } catch (err) {
    if (shuttingDown) return; // disconnect() during a pending connect
    throw err;
  }
  if (shuttingDown) return;

  io = new Server(httpServer, {
    path: "/socket.io/",
    transports: ["websocket"],
    serveClient: false,
    perMessageDeflate: false,
    httpCompression: false,
    pingInterval: cfg.pingInterval,
    pingTimeout: cfg.pingTimeout,
    adapter: createAdapter(pubClient, subClient, { key: cfg.prefix }),
  });

  io.on("connection", (socket) => {
    const roomOp = (op) => async (...args) => {
      const ack = typeof args[args.length - 1] === "function" ? args.pop() : undefined;
      const room = args[0];
      if (typeof room !== "string" || room === "") {
        if (ack) ack(false);
        return;
      }
      try {
        await socket[op](room);
      } catch (err) {
        process.stderr.write(`${op}(${JSON.stringify(room)}) failed: ${err.message}\n`);
        if (ack) ack(false);
        return;
      }
      if (ack) ack(true);
    };
    socket.on("join", roomOp("join"));
    socket.on("leave", roomOp("leave"));
  });

  httpServer.on("error", (err) => {
    process.stderr.write(`http server error: ${err.message}\n`);
    process.exit(1);
  });
  httpServer.listen(cfg.port, "127.0.0.1", () => {
    process.stdout.write(`listening on ${httpServer.address().port}\n`);
  });
}

main().catch((err) => {
  process.stderr.write(`fatal: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
