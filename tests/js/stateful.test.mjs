// Stateful reconnect with the official client (`withStatefulReconnect()`), resumed on
// another node: two nodes on one Redis behind a round-robin balancer that the test owns
// (no sticky sessions). While messages are published, the test cuts the client's
// WebSocket at the balancer, without a close frame, as a dropped network does; the
// client reconnects through the balancer to the other node, which takes the connection
// over. Every message must arrive once and in order, with the same connection id, and
// the client must never see onclose or onreconnecting.

import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { createConnection, createServer } from "node:net";
import { once } from "node:events";
import { HubConnectionBuilder, HubConnectionState } from "@microsoft/signalr";
import { MessagePackHubProtocol } from "@microsoft/signalr-protocol-msgpack";
import {
  CapturingLogger,
  publishToGroup,
  safeStop,
  startTwoNodeCluster,
  uniqueGroup,
  waitFor,
  withTimeout,
} from "./helpers.mjs";

/**
 * A TCP balancer over `ports`: each new connection goes to the next node in turn,
 * except WebSocket upgrades after cutWebSockets(), which go to the node that did not
 * hold the cut one. Knows which node each WebSocket reached.
 */
class Balancer {
  constructor(ports) {
    this.ports = ports;
    this.turn = 0;
    this.wsTarget = null;
    this.sockets = [];
    this.webSockets = [];
    this.server = createServer((down) => this._accept(down));
  }

  async listen() {
    this.server.listen(0, "127.0.0.1");
    await once(this.server, "listening");
    this.origin = `http://127.0.0.1:${this.server.address().port}`;
    return this;
  }

  _accept(down) {
    down.pause();
    down.once("data", (first) => {
      const isWs = /upgrade:\s*websocket/i.test(first.toString("latin1"));
      let index = this.turn++ % this.ports.length;
      if (isWs && this.wsTarget !== null) index = this.wsTarget;
      const up = createConnection({ host: "127.0.0.1", port: this.ports[index] });
      const pair = { down, up, node: index };
      this.sockets.push(pair);
      if (isWs) this.webSockets.push(pair);
      up.on("error", () => down.destroy());
      down.on("error", () => up.destroy());
      up.on("close", () => down.destroy());
      down.on("close", () => up.destroy());
      up.write(first);
      down.pipe(up);
      up.pipe(down);
    });
    down.resume();
  }

  /** The node index of the last WebSocket. */
  lastWebSocketNode() {
    return this.webSockets.at(-1)?.node;
  }

  /** Drops every open WebSocket without a close frame; the next goes to another node
   * (or the same one, with `sameNode`). */
  cutWebSockets({ sameNode = false } = {}) {
    const node = this.lastWebSocketNode();
    this.wsTarget = sameNode ? node : (node + 1) % this.ports.length;
    for (const { down, up } of this.webSockets) {
      down.resetAndDestroy();
      up.resetAndDestroy();
    }
  }

  async close() {
    for (const { down, up } of this.sockets) {
      down.destroy();
      up.destroy();
    }
    await new Promise((resolve) => this.server.close(resolve));
  }
}

describe("stateful reconnect resumed on another node", { timeout: 60_000 }, () => {
  let cluster;
  let nodes;
  let balancer;

  before(async () => {
    cluster = await startTwoNodeCluster("sr");
    nodes = cluster.nodes;
    balancer = await new Balancer(cluster.ports).listen();
  });

  after(async () => {
    await balancer?.close();
    await cluster?.stop();
  });

  async function dropAndResume({ sameNode, msgpack = false }) {
    const logger = new CapturingLogger();
    let builder = new HubConnectionBuilder()
      .withUrl(`${balancer.origin}/hubs/tasks`)
      .withStatefulReconnect()
      .configureLogging(logger);
    if (msgpack) builder = builder.withHubProtocol(new MessagePackHubProtocol());
    const connection = builder.build();
    const got = [];
    const closes = [];
    const reconnecting = [];
    connection.on("N", (n) => got.push(n));
    connection.onclose((e) => closes.push(e));
    connection.onreconnecting((e) => reconnecting.push(e));
    await withTimeout(connection.start(), 10_000, "start()");
    const id = connection.connectionId;
    const group = uniqueGroup("sr");
    await withTimeout(connection.invoke("JoinGroup", group), 5000, "JoinGroup");
    const first = balancer.lastWebSocketNode();

    const accepted = [];
    let publishing = true;
    const publisher = (async () => {
      for (let n = 0; publishing; n++) {
        const node = nodes[n % nodes.length];
        const res = await publishToGroup(node.origin, "tasks", group, { target: "N", arguments: [n] });
        if (res.status === 202) accepted.push(n);
        else assert.fail(`publish ${n} answered ${res.status} ${res.text}`);
        await new Promise((r) => setImmediate(r));
      }
    })();

    await waitFor(() => got.length >= 50, { timeoutMs: 10_000, what: "50 messages before the cut" });
    balancer.cutWebSockets({ sameNode });
    await waitFor(() => balancer.webSockets.length >= 2 && connection.state === HubConnectionState.Connected, {
      timeoutMs: 20_000,
      what: "the client back on a new WebSocket",
      detail: () => logger.dump(),
    });
    const cutAt = accepted.length;
    await waitFor(() => accepted.length >= cutAt + 50, { timeoutMs: 10_000, what: "50 more publishes after the resume" });
    publishing = false;
    await publisher;

    await waitFor(() => got.length >= accepted.length, {
      timeoutMs: 15_000,
      what: `all ${accepted.length} accepted messages (got ${got.length})`,
      detail: () => `missing: ${JSON.stringify(accepted.filter((n) => !got.includes(n)).slice(0, 20))}\n${logger.dump()}`,
    });
    assert.deepEqual(got, accepted, "every accepted message once, in order");
    if (sameNode) assert.equal(balancer.lastWebSocketNode(), first, "resumed on the same node");
    else assert.notEqual(balancer.lastWebSocketNode(), first, "resumed on the other node");
    assert.equal(connection.connectionId, id, "the same connection id");
    assert.deepEqual(closes, [], "no onclose");
    assert.deepEqual(reconnecting, [], "no onreconnecting: the resume is invisible to the app");
    // Still a working connection on its new node: a method call and a group change.
    await withTimeout(connection.invoke("LeaveGroup", group), 5000, "LeaveGroup after the resume");
    if (!sameNode) {
      assert.match(
        nodes[first].logs(),
        /stateful connection handed over to the node its client resumed on/,
        "the first node handed the connection over",
      );
    }
    await safeStop(connection);
  }

  it("on another node: every message once and in order, the same connection id, no onclose", () =>
    dropAndResume({ sameNode: false }));

  it("on the same node: the same", () => dropAndResume({ sameNode: true }));

  it("with MessagePack, on another node: the same", () => dropAndResume({ sameNode: false, msgpack: true }));
});
