// Server-Sent Events and long polling with the official client, forced to each
// transport, through a balancer that sends every HTTP request to the next of two nodes
// (no sticky sessions): the client's POSTs and polls land on both nodes, and the node
// that does not hold the connection carries them to the one that does.

import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { createConnection, createServer } from "node:net";
import { once } from "node:events";
import { HttpTransportType, HubConnectionBuilder, HubConnectionState } from "@microsoft/signalr";
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
 * One HTTP request per client connection, each to the next node in turn, with
 * `Connection: close` so the client opens a new connection (and reaches the other node)
 * for its next request. Records which node each `?id=` request reached.
 */
class RequestBalancer {
  constructor(ports) {
    this.ports = ports;
    this.turn = 0;
    this.byNode = ports.map(() => 0);
    this.open = new Set();
    this.server = createServer((down) => this._accept(down));
  }

  async listen() {
    this.server.listen(0, "127.0.0.1");
    await once(this.server, "listening");
    this.origin = `http://127.0.0.1:${this.server.address().port}`;
    return this;
  }

  _accept(down) {
    this.open.add(down);
    down.on("close", () => this.open.delete(down));
    down.on("error", () => {});
    let head = Buffer.alloc(0);
    const onData = (chunk) => {
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf("\r\n\r\n");
      if (end < 0) return;
      down.off("data", onData);
      down.pause();
      const lines = head.subarray(0, end).toString("latin1").split("\r\n");
      const rest = head.subarray(end + 4);
      const kept = lines.filter((l) => !/^connection:/i.test(l));
      kept.push("Connection: close");
      const index = this.turn++ % this.ports.length;
      if (/[?&]id=/.test(lines[0])) this.byNode[index] += 1;
      const up = createConnection({ host: "127.0.0.1", port: this.ports[index] });
      this.open.add(up);
      up.on("close", () => {
        this.open.delete(up);
        down.destroy();
      });
      up.on("error", () => down.destroy());
      down.on("close", () => up.destroy());
      up.write(Buffer.concat([Buffer.from(kept.join("\r\n") + "\r\n\r\n", "latin1"), rest]));
      down.pipe(up);
      up.pipe(down);
      down.resume();
    };
    down.on("data", onData);
  }

  /** Drops every open connection, as a network failure would. */
  cutAll() {
    for (const s of this.open) s.destroy();
  }

  async close() {
    this.cutAll();
    await new Promise((resolve) => this.server.close(resolve));
  }
}

for (const [name, transport] of [
  ["Server-Sent Events", HttpTransportType.ServerSentEvents],
  ["long polling", HttpTransportType.LongPolling],
]) {
  describe(`${name} through a balancer without sticky sessions`, { timeout: 60_000 }, () => {
    let cluster;
    let nodes;
    let balancer;

    before(async () => {
      cluster = await startTwoNodeCluster("tr");
      nodes = cluster.nodes;
      balancer = await new RequestBalancer(cluster.ports).listen();
    });

    after(async () => {
      await balancer?.close();
      await cluster?.stop();
    });

    it("receives events, invokes methods, and reconnects", async () => {
      const logger = new CapturingLogger();
      const connection = new HubConnectionBuilder()
        .withUrl(`${balancer.origin}/hubs/tasks`, { transport })
        .withAutomaticReconnect([0, 100, 200, 500])
        .configureLogging(logger)
        .build();
      const got = [];
      connection.on("N", (n) => {
        got.push(n);
      });
      const group = uniqueGroup("tr");
      let rejoined = false;
      connection.onreconnected(async () => {
        await connection.invoke("JoinGroup", group);
        rejoined = true;
      });
      await withTimeout(connection.start(), 15_000, `start() over ${name}`);
      assert.equal(connection.state, HubConnectionState.Connected);
      // A method call and its completion, both through whichever node the balancer picks.
      await withTimeout(connection.invoke("JoinGroup", group), 10_000, "JoinGroup");
      const sent = [];
      for (let n = 0; n < 20; n++) {
        const res = await publishToGroup(nodes[n % 2].origin, "tasks", group, { target: "N", arguments: [n] });
        assert.equal(res.status, 202, res.text);
        sent.push(n);
      }
      await waitFor(() => got.length >= sent.length, {
        timeoutMs: 15_000,
        what: `20 events over ${name} (got ${got.length})`,
        detail: () => logger.dump(),
      });
      assert.deepEqual(got, sent, "every event once, in order");
      assert.ok(
        balancer.byNode.every((n) => n > 0),
        `requests of the connection reached both nodes: ${balancer.byNode}`,
      );
      await withTimeout(connection.invoke("LeaveGroup", group), 10_000, "LeaveGroup");
      await withTimeout(connection.invoke("JoinGroup", group), 10_000, "JoinGroup again");

      // The server ends the connection (allowing a reconnect); the client reconnects by
      // itself and is served again.
      const closed = await fetch(
        `${nodes[1].origin}/api/v1/hubs/tasks/connections/${encodeURIComponent(connection.connectionId)}`,
        { method: "DELETE" },
      );
      assert.ok(closed.status < 300, `close: ${closed.status}`);
      await waitFor(() => rejoined && connection.state === HubConnectionState.Connected, {
        timeoutMs: 20_000,
        what: `a reconnect over ${name}`,
        detail: () => logger.dump(),
      });
      const after = got.length;
      const res = await publishToGroup(nodes[0].origin, "tasks", group, { target: "N", arguments: [100] });
      assert.equal(res.status, 202);
      await waitFor(() => got.length > after, { timeoutMs: 15_000, what: "an event after the reconnect" });
      assert.equal(got.at(-1), 100);
      await safeStop(connection);
    });
  });
}
