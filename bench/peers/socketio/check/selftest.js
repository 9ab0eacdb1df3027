#!/usr/bin/env node
// Self-test / wire capture for the Socket.IO peer. Not part of any test
// suite; run by hand:
//
//   cd bench/peers/socketio && npm ci && node check/selftest.js [--quick]
//
// It starts redis-server on a free port, two server.js instances (A, B) on
// free ports sharing that Redis, connects raw WebSocket clients (no
// socket.io-client), joins rooms, POSTs /publish to one instance and checks
// the event arrives on the other, and prints every frame sent and received.
// Without --quick it also waits for a real heartbeat at the default
// pingInterval (25 s). A third instance C with a short ping interval is used
// to show what happens when a client does not answer pings.
// Exits 0 if every check passed, 1 otherwise.
"use strict";

const { spawn } = require("node:child_process");
const net = require("node:net");
const path = require("node:path");
const { createClient } = require("redis");
const { RawClient, stamp } = require("./rawclient");

const QUICK = process.argv.includes("--quick");
const SERVER = path.join(__dirname, "..", "server.js");
// PEER_BIN=/path/to/binary runs the same checks against another implementation of this
// peer's command line and API (the socketioxide peer in ../../socketioxide).
const PEER_BIN = process.env.PEER_BIN;
const children = [];
let passed = 0;
let failed = 0;

function log(line) {
  process.stdout.write(`${stamp()} ${line}\n`);
}
function section(title) {
  process.stdout.write(`\n=== ${title} ===\n`);
}
function check(cond, what) {
  if (cond) {
    passed++;
    log(`PASS ${what}`);
  } else {
    failed++;
    log(`FAIL ${what}`);
  }
}
// Checks of behaviour that belongs to Socket.IO's Node implementation rather than to the
// peer API (engine/socket ids, Redis channel names, reactions to protocol mistakes): with
// PEER_BIN they are logged as NOTE instead of counted, so the shared API is what passes.
function checkNode(cond, what) {
  if (PEER_BIN && !cond) log(`NOTE (Node-specific, differs here) ${what}`);
  else check(cond, what);
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function startRedis(port) {
  const p = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
    stdio: ["ignore", "ignore", "inherit"],
  });
  children.push(p);
  return p;
}

// Spawn server.js and resolve once it printed "listening on P".
function startPeer(name, args) {
  return new Promise((resolve, reject) => {
    const [cmd, argv] = PEER_BIN ? [PEER_BIN, args] : [process.execPath, [SERVER, ...args]];
    const p = spawn(cmd, argv, { stdio: ["ignore", "pipe", "pipe"] });
    children.push(p);
    p.name = name;
    let out = "";
    const timer = setTimeout(() => reject(new Error(`${name} did not print "listening on" within 10s`)), 10000);
    p.stdout.on("data", (d) => {
      out += d.toString();
      for (const line of d.toString().split("\n").filter(Boolean)) log(`[${name} stdout] ${line}`);
      const m = /^listening on (\d+)$/m.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve({ proc: p, port: Number(m[1]), stdout: () => out });
      }
    });
    p.stderr.on("data", (d) => {
      for (const line of d.toString().split("\n").filter(Boolean)) log(`[${name} stderr] ${line}`);
    });
    p.on("exit", (code, sig) => {
      p.exitInfo = { code, sig };
      clearTimeout(timer);
      reject(new Error(`${name} exited early: code=${code} signal=${sig}`));
    });
  });
}

async function http(port, method, urlPath, body, { raw = false } = {}) {
  const res = await fetch(`http://127.0.0.1:${port}${urlPath}`, {
    method,
    headers: body === undefined ? {} : { "content-type": "application/json" },
    body: body === undefined ? undefined : raw ? body : JSON.stringify(body),
  });
  const text = await res.text();
  log(`HTTP ${method} :${port}${urlPath} ${body === undefined ? "" : raw ? body : JSON.stringify(body)} -> ${res.status} ${text}`);
  return { status: res.status, text };
}

// Send a WebSocket upgrade request over a plain TCP socket and return
// everything the server writes in the first 300 ms (as a string).
function rawUpgrade(port, urlPath) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, "127.0.0.1");
    let buf = Buffer.alloc(0);
    sock.on("data", (d) => (buf = Buffer.concat([buf, d])));
    sock.on("error", reject);
    sock.on("connect", () => {
      sock.write(
        `GET ${urlPath} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
      );
      setTimeout(() => {
        sock.destroy();
        resolve(buf.toString("latin1"));
      }, 300);
    });
  });
}

const isEvent = (name) => (f) => f.text.startsWith(`42["${name}"`);

async function main() {
  section("setup");
  const redisPort = await freePort();
  const redisProc = startRedis(redisPort);
  const redisUrl = `redis://127.0.0.1:${redisPort}`;
  log(`redis-server pid ${redisProc.pid} on ${redisUrl}`);

  // Observe the adapter's traffic on Redis (channel names only; payloads are
  // msgpack). Also doubles as "wait until redis accepts connections".
  const spy = createClient({ url: redisUrl, socket: { reconnectStrategy: (n) => (n > 50 ? new Error("redis not up") : 100) } });
  spy.on("error", () => {});
  await spy.connect();
  const redisChannels = [];
  await spy.pSubscribe("*", (message, channelBuf) => {
    const channel = channelBuf.toString("utf8");
    redisChannels.push(channel);
    log(`[redis] PUBLISH channel=${JSON.stringify(channel)} payload=${message.length} bytes`);
  }, true);

  const [portA, portB] = [await freePort(), await freePort()];
  const A = await startPeer("A", ["--port", String(portA), "--redis", redisUrl]);
  const B = await startPeer("B", ["--port", String(portB), "--redis", redisUrl, "--prefix", "socket.io"]);
  check(A.port === portA && B.port === portB, `A listening on ${A.port}, B listening on ${B.port}`);

  const hA = await http(portA, "GET", "/healthz");
  const hB = await http(portB, "GET", "/healthz");
  check(hA.status === 200 && hB.status === 200, "GET /healthz -> 200 on both");

  section("handshake (client c1 on A)");
  const c1 = new RawClient("c1@A", `ws://127.0.0.1:${portA}/socket.io/?EIO=4&transport=websocket`);
  await c1.open();
  const hs = await c1.handshake();
  checkNode(
    typeof hs.engine.sid === "string" && hs.engine.pingInterval === 25000 && hs.engine.pingTimeout === 20000 &&
      hs.engine.maxPayload === 1000000 && Array.isArray(hs.engine.upgrades) && hs.engine.upgrades.length === 0,
    `open packet fields: ${Object.keys(hs.engine).join(",")}`,
  );
  checkNode(typeof hs.socket.sid === "string" && hs.socket.sid !== hs.engine.sid, "40{sid} carries a socket id different from the engine sid");
  check(c1.frames.every((f) => !f.binary), "all frames so far are text frames");

  section("join with ack (c1 on A)");
  c1.send('420["join","room1"]');
  const ack0 = await c1.expect("ack 0", (f) => f.text.startsWith("430"));
  check(ack0.text === "430[true]", `join ack frame is ${ack0.text}`);

  section("handshake + join on B (client c2 on B)");
  const c2 = new RawClient("c2@B", `ws://127.0.0.1:${portB}/socket.io/?EIO=4&transport=websocket`);
  await c2.open();
  await c2.handshake();
  c2.send('420["join","room1"]');
  const ack0b = await c2.expect("ack 0", (f) => f.text.startsWith("430"));
  check(ack0b.text === "430[true]", `c2 join ack frame is ${ack0b.text}`);

  section("POST /publish to B, event must arrive on A (via Redis) and on B (local)");
  const payload = { id: 1, msg: "hello", nested: { a: [1, 2, 3] }, s: "ünïcødé" };
  const p1 = await http(portB, "POST", "/publish", { room: "room1", event: "notify", data: payload });
  check(p1.status === 202 && p1.text === '{"ok":true}', "POST /publish -> 202 {\"ok\":true}");
  const e1 = await c1.expect("notify on A", isEvent("notify"));
  const e1b = await c2.expect("notify on B", isEvent("notify"));
  check(e1.text === `42["notify",${JSON.stringify(payload)}]`, `A received ${e1.text}`);
  check(e1b.text === e1.text, "B's local client received the identical frame");

  section("POST /publish to A, arrives on B's client too");
  await http(portA, "POST", "/publish", { room: "room1", event: "notify", data: { id: 2 } });
  const e2 = await c2.expect("notify id 2 on B", isEvent("notify"));
  const e2a = await c1.expect("notify id 2 on A", isEvent("notify"));
  check(e2.text === '42["notify",{"id":2}]' && e2a.text === e2.text, `both received ${e2.text}`);

  section("data shapes");
  await http(portB, "POST", "/publish", { room: "room1", event: "bare" });
  const e3 = await c1.expect("bare", isEvent("bare"));
  check(e3.text === '42["bare"]', `no "data" key -> ${e3.text}`);
  await http(portB, "POST", "/publish", { room: "room1", event: "arr", data: [1, "two", null] });
  const e4 = await c1.expect("arr", isEvent("arr"));
  check(e4.text === '42["arr",[1,"two",null]]', `array data is ONE argument -> ${e4.text}`);
  await http(portB, "POST", "/publish", { room: "room1", event: "nul", data: null });
  const e5 = await c1.expect("nul", isEvent("nul"));
  check(e5.text === '42["nul",null]', `null data -> ${e5.text}`);
  await http(portB, "POST", "/publish", { room: "room1", event: "str", data: "plain" });
  const e6 = await c1.expect("str", isEvent("str"));
  check(e6.text === '42["str","plain"]', `string data -> ${e6.text}`);

  section("room isolation");
  await http(portB, "POST", "/publish", { room: "other", event: "notify", data: { id: 3 } });
  check(await c1.expectNothing(isEvent("notify"), 300), "publish to a room c1 is not in: nothing arrives within 300ms");

  section("join without ack, invalid join, second ack id");
  c1.send('42["join","room2"]');
  check(await c1.expectNothing((f) => f.text.startsWith("43"), 300), "join without ack id: server sends no reply frame");
  await http(portB, "POST", "/publish", { room: "room2", event: "r2", data: 1 });
  const e7 = await c1.expect("r2", isEvent("r2"));
  check(e7.text === '42["r2",1]', `...but the join took effect: ${e7.text}`);
  c1.send('421["join",42]');
  const ack1 = await c1.expect("ack 1", (f) => f.text.startsWith("431"));
  check(ack1.text === "431[false]", `non-string room -> ${ack1.text}`);

  section("leave with ack");
  c1.send('422["leave","room1"]');
  const ack2 = await c1.expect("ack 2", (f) => f.text.startsWith("432"));
  check(ack2.text === "432[true]", `leave ack frame is ${ack2.text}`);
  await http(portB, "POST", "/publish", { room: "room1", event: "after-leave", data: {} });
  await c2.expect("after-leave on c2", isEvent("after-leave"));
  check(await c1.expectNothing(isEvent("after-leave"), 300), "after leave, c1 gets nothing for room1 (c2 still does)");

  section("HTTP error handling");
  check((await http(portB, "POST", "/publish", "{not json", { raw: true })).status === 400, "bad JSON -> 400");
  check((await http(portB, "POST", "/publish", { event: "x" })).status === 400, "missing room -> 400");
  check((await http(portB, "POST", "/publish", { room: "room1", event: "disconnect" })).status === 400, "reserved event name -> 400");
  check((await http(portB, "GET", "/publish")).status === 405, "GET /publish -> 405");
  check((await http(portB, "GET", "/nope")).status === 404, "unknown path -> 404");

  section("unknown namespace, namespace disconnect, engine close (client c3 on A)");
  const c3 = new RawClient("c3@A", `ws://127.0.0.1:${portA}/socket.io/?EIO=4&transport=websocket`);
  await c3.open();
  await c3.expect("open", (f) => f.text.startsWith("0"));
  c3.send("40/nope,");
  const nsErr = await c3.expect("connect_error", (f) => f.text.startsWith("44"));
  check(nsErr.text === '44/nope,{"message":"Invalid namespace"}', `unknown namespace -> ${nsErr.text}`);
  c3.send("40");
  await c3.expect("40", (f) => f.text.startsWith("40"));
  c3.send("41");
  checkNode(await c3.expectNothing(() => true, 300), "client 41 (namespace disconnect): server sends nothing back");
  checkNode(c3.closed === null, "...and keeps the Engine.IO connection open");
  c3.send("1");
  checkNode(await c3.expectNothing(() => true, 300).catch(() => false), "client 1 (engine close packet): server sends nothing back");
  checkNode(c3.closed === null, "...and does NOT close the WebSocket (engine.io only honours '1' on polling)");
  c3.ws.close(1000);
  await sleep(200);
  checkNode(c3.closed !== null && c3.closed.code === 1000, `client-initiated WebSocket close completes (code ${c3.closed && c3.closed.code})`);

  section("protocol mistakes a hand-written client must avoid (fresh clients on A)");
  {
    // (a) client-sent ping: EIO4 heartbeats go server -> client only.
    const m1 = new RawClient("m1@A", `ws://127.0.0.1:${portA}/socket.io/?EIO=4&transport=websocket`);
    await m1.open();
    await m1.handshake();
    m1.send("2");
    await sleep(300);
    checkNode(m1.closed !== null, `client sends "2": server drops the connection (code ${m1.closed && m1.closed.code}); no "3" is ever sent back`);
    checkNode(!m1.frames.some((f) => f.dir === "<-" && f.text === "3"), "...and no pong frame was received");

    // (b) event before the namespace CONNECT.
    const m2 = new RawClient("m2@A", `ws://127.0.0.1:${portA}/socket.io/?EIO=4&transport=websocket`);
    await m2.open();
    await m2.expect("open", (f) => f.text.startsWith("0"));
    m2.send('420["join","room1"]');
    await sleep(300);
    checkNode(m2.closed !== null && !m2.frames.some((f) => f.text.startsWith("43")),
      `event sent before 40: no ack, server drops the connection (code ${m2.closed && m2.closed.code})`);

    // (e) a second CONNECT for an already connected namespace.
    const m5 = new RawClient("m5@A", `ws://127.0.0.1:${portA}/socket.io/?EIO=4&transport=websocket`);
    await m5.open();
    await m5.handshake();
    m5.send("40");
    await sleep(300);
    checkNode(m5.closed !== null, `second "40" on a connected namespace: server drops the connection (code ${m5.closed && m5.closed.code})`);

    // (c) malformed Socket.IO payload.
    const m3 = new RawClient("m3@A", `ws://127.0.0.1:${portA}/socket.io/?EIO=4&transport=websocket`);
    await m3.open();
    await m3.handshake();
    m3.send("42notjson");
    await sleep(300);
    checkNode(m3.closed !== null, `malformed "42notjson": server drops the connection (code ${m3.closed && m3.closed.code})`);

    // (d) unsolicited pong is harmless.
    const m4 = new RawClient("m4@A", `ws://127.0.0.1:${portA}/socket.io/?EIO=4&transport=websocket`);
    await m4.open();
    await m4.handshake();
    m4.send("3");
    await sleep(300);
    checkNode(m4.closed === null, "unsolicited \"3\" from the client: connection stays open");
    m4.close();
  }

  section("raw HTTP upgrade exchange (plain TCP, bytes as sent by the server)");
  for (const q of ["EIO=4&transport=websocket", "EIO=3&transport=websocket", "transport=websocket", "EIO=4&transport=polling"]) {
    const bytes = await rawUpgrade(portA, `/socket.io/?${q}`);
    log(`GET /socket.io/?${q} -> ${JSON.stringify(bytes)}`);
    if (q === "EIO=4&transport=websocket") {
      checkNode(/^HTTP\/1\.1 101 /.test(bytes), "good URL: 101 Switching Protocols");
    } else if (q === "EIO=4&transport=polling") {
      checkNode(/^HTTP\/1\.1 400 /.test(bytes), "transport=polling is refused with a plain HTTP 400 (no 101)");
    } else {
      checkNode(/^HTTP\/1\.1 101 [\s\S]*HTTP\/1\.1 400 /.test(bytes), `?${q}: 101 is sent, then a raw "HTTP/1.1 400" is written into the upgraded stream`);
    }
  }

  if (!QUICK) {
    section("heartbeat at default pingInterval (25 s): server sends 2, client answers 3");
    const ping = await c1.expect("server ping", (f) => f.text === "2", 30000);
    check(ping.text === "2", "server sent engine.io ping '2'");
    c1.send("3");
    // c2 answers too so it is still alive for the shutdown section.
    await c2.expect("server ping on c2", (f) => f.text === "2", 5000);
    c2.send("3");
    await sleep(500);
    check(c1.closed === null && c2.closed === null, "connections still open after answering the ping");
  }

  section("ping timeout (instance C with --ping-interval 500 --ping-timeout 400)");
  const portC = await freePort();
  const C = await startPeer("C", ["--port", String(portC), "--redis", redisUrl, "--ping-interval", "500", "--ping-timeout", "400"]);
  const c4 = new RawClient("c4@C", `ws://127.0.0.1:${portC}/socket.io/?EIO=4&transport=websocket`);
  await c4.open();
  const hs4 = await c4.handshake();
  check(hs4.engine.pingInterval === 500 && hs4.engine.pingTimeout === 400, "open packet reflects --ping-interval/--ping-timeout");
  const tPing = Date.now();
  await c4.expect("ping", (f) => f.text === "2", 2000);
  log(`c4 got ping ${Date.now() - tPing}ms after handshake; NOT answering it`);
  const tClose = Date.now();
  await new Promise((r) => (c4.closed ? r() : (c4.onClose = r)));
  check(true, `server closed the WebSocket ${Date.now() - tClose}ms after an unanswered ping (code ${c4.closed.code})`);

  section("SIGTERM on A with c1 connected");
  A.proc.removeAllListeners("exit");
  const exitA = new Promise((r) => A.proc.once("exit", (code, sig) => r({ code, sig })));
  A.proc.kill("SIGTERM");
  const ex = await exitA;
  await sleep(100);
  check(ex.code === 0, `A exited with code=${ex.code} signal=${ex.sig}`);
  check(c1.closed !== null, `c1 saw the WebSocket closed (code ${c1.closed && c1.closed.code})`);

  section("B keeps working; healthz after redis goes away");
  await http(portB, "POST", "/publish", { room: "room1", event: "still", data: true });
  const e8 = await c2.expect("still", isEvent("still"));
  check(e8.text === '42["still",true]', `B local delivery still works: ${e8.text}`);
  await spy.quit();
  redisProc.kill("SIGTERM");
  await sleep(500);
  check((await http(portB, "GET", "/healthz")).status === 503, "GET /healthz -> 503 while redis is down");

  for (const P of [B, C]) {
    P.proc.removeAllListeners("exit");
    const done = new Promise((r) => P.proc.once("exit", (code, sig) => r({ code, sig })));
    P.proc.kill("SIGTERM");
    const e = await done;
    check(e.code === 0, `${P.proc.name} exited with code=${e.code} on SIGTERM (redis down)`);
  }

  section("redis channels the adapter published on");
  log([...new Set(redisChannels)].join("  "));
  checkNode(redisChannels.includes("socket.io#/#room1#"), 'room broadcast published on "socket.io#/#room1#"');
}

main()
  .catch((err) => {
    failed++;
    log(`FAIL ${err.stack || err}`);
  })
  .finally(() => {
    for (const p of children) if (p.exitCode === null && p.signalCode === null) p.kill("SIGKILL");
    process.stdout.write(`\n${passed} passed, ${failed} failed\n`);
    process.exit(failed === 0 ? 0 : 1);
  });
