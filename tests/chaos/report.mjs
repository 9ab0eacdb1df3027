// The figures of one scenario (expected / received / lost / duplicates) and the table.

/**
 * Delivery accounting over `messages` (one scenario's) and the clients of `fleet`.
 *
 * A client is expected to receive an accepted message when it was a joined member of the
 * message's group (join acknowledged, not disconnected since) from the send of the
 * attempt that got the first 202 until that 202: the PUBLISH happened in that window. For
 * a 202 that replays an earlier attempt (same Idempotency-Key), the window opens at the
 * first attempt.
 * `exclusions` (client index -> [from, to]) removes messages accepted in [from, to] for
 * that client (crash scenarios: in flight at the crash, or not yet rejoined).
 */
export function account(messages, fleet, exclusions = new Map()) {
  const r = {
    publishes: messages.length, accepted: 0, gaveUp: 0,
    expected: 0, received: 0, receivedExpected: 0, lost: 0, extra: 0, excluded: 0,
    duplicates: 0, duplicateCopies: 0, lostByNode: {}, lostSample: [],
  };
  for (const m of messages) {
    if (m.acceptAt !== null) r.accepted += 1;
    if (m.gaveUp) r.gaveUp += 1;
    for (const c of fleet.byGroup.get(m.group) ?? []) {
      const n = c.received.get(m.id) ?? 0;
      if (n > 0) r.received += 1;
      if (n > 1) {
        r.duplicates += 1;
        r.duplicateCopies += n - 1;
      }
      let expected = m.acceptAt !== null && c.memberThroughout(m.sendAt, m.acceptAt);
      const ex = exclusions.get(c.index);
      if (expected && ex && m.acceptAt >= ex[0] && m.acceptAt <= ex[1]) {
        expected = false;
        r.excluded += 1;
      }
      if (expected) {
        r.expected += 1;
        if (n > 0) r.receivedExpected += 1;
        else {
          r.lost += 1;
          r.lostByNode[c.node] = (r.lostByNode[c.node] ?? 0) + 1;
          if (r.lostSample.length < 3) r.lostSample.push(`${m.group}#${m.seq} to client ${c.index}`);
        }
      } else if (n > 0) {
        r.extra += 1;
      }
    }
  }
  return r;
}

/** Publish attempts by answer: {"202": n, "503/absent": n, "timeout": n, "error/ECONNREFUSED": n}. */
export function answers(messages) {
  const byCode = {};
  let attempts = 0;
  let replayed = 0;
  for (const m of messages) {
    for (const a of m.attempts) {
      attempts += 1;
      if (a.replayed) replayed += 1;
      let key = String(a.status);
      if (a.status === 503) key = `503/${a.outcome}`;
      if (a.status === "error") key = `error/${a.error}`;
      byCode[key] = (byCode[key] ?? 0) + 1;
    }
  }
  return { byCode, attempts, retries: attempts - messages.length, replayed };
}

const COLUMNS = [
  ["#", (r) => r.n],
  ["scenario", (r) => r.name],
  ["pubs", (r) => r.publishes],
  ["202", (r) => r.accepted],
  ["other", (r) => r.other],
  ["retries", (r) => r.retries],
  ["replayed", (r) => r.replayed],
  ["expected", (r) => r.expected],
  ["received", (r) => r.received],
  ["lost", (r) => r.lost],
  ["counted", (r) => r.counted],
  ["from history", (r) => r.recovered],
  ["lost&uncounted", (r) => r.lostUncounted],
  ["dups", (r) => r.duplicates],
  ["reconnects", (r) => r.reconnects],
  ["recovery", (r) => r.recovery],
  ["members ok", (r) => r.members],
  ["result", (r) => (r.failures.length ? "FAIL" : "ok")],
];

/** The table, one line per row, then each row's answers and notes. */
export function formatTable(rows) {
  const cells = rows.map((r) => COLUMNS.map(([, f]) => String(f(r) ?? "")));
  const widths = COLUMNS.map(([h], i) => Math.max(h.length, ...cells.map((c) => c[i].length)));
  const line = (vals) => vals.map((v, i) => (i <= 1 || i >= 15 ? v.padEnd(widths[i]) : v.padStart(widths[i]))).join("  ");
  const out = [line(COLUMNS.map(([h]) => h)), widths.map((w) => "-".repeat(w)).join("  ")];
  for (const c of cells) out.push(line(c));
  out.push("");
  for (const r of rows) {
    out.push(`${r.n}. ${r.name}: answers ${JSON.stringify(r.byCode)}`);
    for (const note of r.notes) out.push(`     ${note}`);
    for (const f of r.failures) out.push(`     FAILED: ${f}`);
  }
  return out.join("\n");
}
