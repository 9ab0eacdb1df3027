// The publisher: about `rate` publishes per second, round-robin over the groups, each to
// a live node (rotating, skipping dead ones) with its own Idempotency-Key. Anything but a
// 202 (503, 429, a connection error, a timeout) is retried with the same key after
// Retry-After (or 200 ms) until `retryWindowMs` after the first attempt. At most
// `maxInFlight` messages are in flight; while that many are, the rate drops.

import { randomUUID } from "node:crypto";
import { delay, withTimeout } from "./harness.mjs";

const MAX_ATTEMPTS = 200;

export class Publisher {
  /** `liveNodes()` returns the nodes to publish to ({index, origin}). */
  constructor({ liveNodes, groups, hub = "tasks", rate = 200, maxInFlight = 64, retryWindowMs = 30_000, requestTimeoutMs = 5000 }) {
    Object.assign(this, { liveNodes, groups, hub, rate, maxInFlight, retryWindowMs, requestTimeoutMs });
    this.messages = new Map(); // id -> message
    this.seq = new Map(groups.map((g) => [g, 0]));
    this.inFlight = new Set();
    this.rr = 0;
    this.groupRr = 0;
    this.timer = null;
    this.scenario = null;
  }

  /** Starts publishing messages tagged `scenario`. */
  start(scenario) {
    this.scenario = scenario;
    let last = Date.now();
    let credit = 0;
    this.timer = setInterval(() => {
      const now = Date.now();
      credit = Math.min(credit + ((now - last) * this.rate) / 1000, this.rate / 10);
      last = now;
      while (credit >= 1 && this.inFlight.size < this.maxInFlight) {
        credit -= 1;
        this._publishOne();
      }
    }, 5);
  }

  /** Stops creating messages and waits (bounded) for those in flight to settle. */
  async stop() {
    clearInterval(this.timer);
    this.timer = null;
    await withTimeout(
      Promise.allSettled([...this.inFlight]),
      this.retryWindowMs + this.requestTimeoutMs + 5000,
      "in-flight publishes to settle",
    );
  }

  _nextNode() {
    const nodes = this.liveNodes();
    if (nodes.length === 0) return null;
    return nodes[this.rr++ % nodes.length];
  }

  _publishOne() {
    const group = this.groups[this.groupRr++ % this.groups.length];
    const seq = this.seq.get(group) + 1;
    this.seq.set(group, seq);
    const msg = {
      id: randomUUID(),
      group,
      seq,
      scenario: this.scenario,
      createdAt: Date.now(),
      attempts: [],
      sendAt: null, // send time of the attempt that got the first 202 (the first attempt's, for a replay)
      acceptAt: null, // time of the first 202
      correlationId: null,
      gaveUp: false,
    };
    this.messages.set(msg.id, msg);
    const p = this._send(msg).finally(() => this.inFlight.delete(p));
    this.inFlight.add(p);
  }

  async _send(msg) {
    const body = JSON.stringify({ target: "Chaos", arguments: [{ g: msg.group, seq: msg.seq, id: msg.id }] });
    for (let n = 1; ; n++) {
      const node = this._nextNode();
      const attempt = { at: Date.now(), node: node?.index ?? null, status: null, outcome: undefined, replayed: false };
      msg.attempts.push(attempt);
      let retryAfterMs = 200;
      if (node) {
        try {
          const res = await fetch(`${node.origin}/api/v1/hubs/${this.hub}/groups/${encodeURIComponent(msg.group)}`, {
            method: "POST",
            headers: { "content-type": "application/json", "idempotency-key": msg.id },
            body,
            signal: AbortSignal.timeout(this.requestTimeoutMs),
          });
          const answeredAt = Date.now();
          attempt.answeredAt = answeredAt;
          const text = await res.text();
          attempt.status = res.status;
          let json;
          try {
            json = JSON.parse(text);
          } catch {
            json = undefined;
          }
          if (res.status === 202) {
            attempt.replayed = res.headers.get("idempotent-replayed") === "true";
            if (msg.acceptAt === null) {
              msg.acceptAt = answeredAt;
              // A replay means an earlier attempt (whose answer was lost) published it:
              // the PUBLISH happened somewhere between the first attempt and now.
              msg.sendAt = attempt.replayed ? msg.attempts[0].at : attempt.at;
              msg.correlationId = json?.correlationId ?? null;
            }
            return;
          }
          if (res.status === 503) attempt.outcome = typeof json?.outcome === "string" ? json.outcome : "absent";
          const ra = Number(res.headers.get("retry-after"));
          if (Number.isFinite(ra) && ra > 0) retryAfterMs = Math.min(ra * 1000, 5000);
        } catch (err) {
          attempt.status = err.name === "TimeoutError" ? "timeout" : "error";
          attempt.error = err.cause?.code ?? err.message;
        }
      } else {
        attempt.status = "no-node";
      }
      if (Date.now() + retryAfterMs - msg.createdAt > this.retryWindowMs || n >= MAX_ATTEMPTS) {
        msg.gaveUp = true;
        return;
      }
      await delay(retryAfterMs);
    }
  }

  /** The messages tagged `scenario`. */
  messagesOf(scenario) {
    return [...this.messages.values()].filter((m) => m.scenario === scenario);
  }
}
