#!/usr/bin/env python3
"""Checks that the Grafana dashboard and the node's /metrics agree, with real tools.

Run through scripts/check-observability.sh, which installs what is missing first. Checks:

  a. grafana/hubcast.json type-checks against @grafana/schema (tsc --noEmit --strict), and
     deliberately broken copies of it do not (so the check has teeth); structural rules
     (variables, namespace/pod filters, ${datasource}, $__rate_interval) hold.
  b. every PromQL expression in the dashboard parses: one recording rule each, checked
     with `promtool check rules`.
  c. a node (in-process backplane, then one on a real redis-server) gets traffic that makes
     its series appear; its live scrape passes `promtool check metrics`, and every metric a
     panel references is in it.
  d. a real Prometheus scrapes two nodes: the connection count, publish count, delivered
     count and readiness it reports are exactly what the test did, and every dashboard
     expression evaluates on it.

Environment: HUBCAST_BIN (default: the debug build in cargo's target directory), OBS_PIDFILE (file to which the PID
of every process started here is appended, so the calling script can stop them),
OBS_WORKDIR (scratch directory; default: a new temp dir).

Traffic goes only to 127.0.0.1. Every wait has a deadline. Ends with `N passed, M failed`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import websocket  # websocket-client

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
DASHBOARD = ROOT / "grafana" / "hubcast.json"
def cargo_target_dir() -> Path:
    """cargo's target directory (CARGO_TARGET_DIR and .cargo/config included)."""
    out = subprocess.run(["cargo", "metadata", "--format-version", "1", "--no-deps"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return Path(json.loads(out)["target_directory"])


HUBCAST_BIN = os.environ.get("HUBCAST_BIN") or str(cargo_target_dir() / "debug" / "hubcast")
PROMETHEUS_BIN = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL_BIN = shutil.which("promtool") or "/usr/bin/promtool"
REDIS_BIN = shutil.which("redis-server")
PIDFILE = os.environ.get("OBS_PIDFILE")
WORK = Path(os.environ.get("OBS_WORKDIR") or tempfile.mkdtemp(prefix="hubcast-obs-"))
WORK.mkdir(parents=True, exist_ok=True)

RS = "\x1e"
# Metrics that only a node on the Redis backplane can emit (the in-process backplane has
# no Redis commands). They are required on the Redis-backed node's scrape instead.
REDIS_ONLY = {"hubcast_redis_command_duration_seconds", "hubcast_redis_command_errors_total"}
# The labels the Prometheus of check (d) attaches, as a Kubernetes scrape would.
NAMESPACE = "hubcast-obs"

# --------------------------------------------------------------------------- harness

RESULTS: list[tuple[str, bool, str]] = []
INFO: list[str] = []


def check(name: str, ok: bool, detail: str = "", note: str = "") -> bool:
    """Records one check. `detail` is printed when it fails, `note` when it passes."""
    RESULTS.append((name, ok, detail))
    print(f"[{'PASS' if ok else 'FAIL'}] {name}", flush=True)
    for line in (note if ok else detail).splitlines():
        print(f"       {line}", flush=True)
    return ok


def both(text: str) -> tuple[str, str]:
    """The same text as failure detail and pass note."""
    return text, text


def section(title: str) -> None:
    print(f"\n--- {title}", flush=True)


def poll_until(check, seconds: float, every: float = 0.1):
    """Calls `check` until it returns something other than None (or raises nothing but
    OSError), or `seconds` pass; returns its last result. The only wait in these checks:
    a condition with a deadline, never a fixed pause."""
    d = Deadline(seconds)
    result = None
    while True:
        try:
            result = check()
        except OSError:
            result = None
        if result is not None or d.over():
            return result
        time.sleep(min(every, d.left()))


class Deadline:
    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def over(self) -> bool:
        return time.monotonic() >= self.end


# --------------------------------------------------------------------------- processes

PROCS: list[tuple[str, subprocess.Popen, Path]] = []


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(name: str, argv: list[str], env: dict | None = None) -> subprocess.Popen:
    """Starts a process bounded by `timeout` (so it dies even if this script is killed),
    logging to WORK/<name>.log, and records its PID."""
    log = WORK / f"{name}.log"
    fh = open(log, "wb")
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    p = subprocess.Popen(
        ["timeout", "--kill-after=5", "300", *argv],
        stdout=fh,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=full_env,
    )
    fh.close()
    PROCS.append((name, p, log))
    if PIDFILE:
        with open(PIDFILE, "a") as f:
            f.write(f"{p.pid}\n")
    return p


def stop(p: subprocess.Popen) -> None:
    if p.poll() is not None:
        return
    try:
        p.send_signal(signal.SIGTERM)  # `timeout` forwards it to its child
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(timeout=5)
    except ProcessLookupError:
        pass


def stop_all() -> None:
    for _, p, _ in reversed(PROCS):
        stop(p)


def log_tail(name: str, lines: int = 15) -> str:
    for n, _, log in PROCS:
        if n == name and log.exists():
            return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    return ""


def http(method: str, url: str, body: object | None = None, headers: dict | None = None,
         timeout: float = 5.0) -> tuple[int, bytes, dict]:
    assert url.startswith("http://127.0.0.1:"), url
    data = None if body is None else json.dumps(body).encode()
    h = {"content-type": "application/json"} if body is not None else {}
    h.update(headers or {})
    req = urllib.request.Request(url, data=data, headers=h, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


class Node:
    def __init__(self, name: str, redis_url: str | None = None):
        self.name = name
        self.port = free_port()
        self.mport = free_port()
        argv = [HUBCAST_BIN, "--insecure", "--listen", f"127.0.0.1:{self.port}",
                "--metrics-listen", f"127.0.0.1:{self.mport}"]
        if redis_url:
            argv += ["--redis-url", redis_url, "--redis-prefix", f"obs-{os.getpid()}-{name}",
                     "--node-id", name]
        self.proc = spawn(name, argv)
        self.base = f"http://127.0.0.1:{self.port}"
        self.metrics_url = f"http://127.0.0.1:{self.mport}/metrics"

    def wait_up(self, seconds: float = 20) -> bool:
        def up():
            if self.proc.poll() is not None:
                return False
            ok = http("GET", self.base + "/readyz", timeout=2)[0] == 200 and \
                http("GET", self.metrics_url, timeout=2)[0] == 200
            return True if ok else None
        return bool(poll_until(up, seconds))

    def scrape(self) -> str:
        status, body, _ = http("GET", self.metrics_url)
        if status != 200:
            raise RuntimeError(f"{self.metrics_url} answered {status}")
        return body.decode()

    def publish(self, group: str, target: str, args: list, hub: str = "tasks") -> tuple[int, dict]:
        status, body, _ = http("POST", f"{self.base}/api/v1/hubs/{hub}/groups/{group}",
                               {"target": target, "arguments": args})
        try:
            return status, json.loads(body or b"{}")
        except ValueError:
            return status, {"raw": body.decode(errors="replace")}

    def stop(self) -> None:
        stop(self.proc)


class Client:
    """A SignalR JSON-protocol client over a raw WebSocket (no negotiate)."""

    def __init__(self, node: Node, hub_path: str = "/hubs/tasks"):
        self.ws = websocket.create_connection(f"ws://127.0.0.1:{node.port}{hub_path}", timeout=5)
        self.buf: list[dict] = []
        self._pending = ""
        self.lock = threading.Lock()
        self.ws.send('{"protocol":"json","version":1}' + RS)
        hs = self._next(5)
        if hs != {}:
            raise RuntimeError(f"handshake answered {hs!r}")
        self._inv = 0

    def _next(self, timeout: float) -> dict | None:
        """The next non-ping message, or None at the deadline."""
        d = Deadline(timeout)
        while True:
            if RS in self._pending:
                frame, self._pending = self._pending.split(RS, 1)
                msg = json.loads(frame)
                if msg.get("type") == 6:
                    continue
                return msg
            if d.over():
                return None
            self.ws.settimeout(max(0.05, d.left()))
            try:
                data = self.ws.recv()
            except websocket.WebSocketTimeoutException:
                return None
            if not data:
                raise ConnectionError("socket closed")
            self._pending += data if isinstance(data, str) else data.decode()

    def invoke(self, target: str, *args) -> dict:
        self._inv += 1
        inv = str(self._inv)
        with self.lock:
            self.ws.send(json.dumps({"type": 1, "invocationId": inv, "target": target,
                                     "arguments": list(args)}) + RS)
        d = Deadline(5)
        while not d.over():
            m = self._next(d.left())
            if m is None:
                break
            if m.get("type") == 3 and m.get("invocationId") == inv:
                return m
            self.buf.append(m)
        raise TimeoutError(f"no completion for {target}")

    def receive(self, n: int, timeout: float = 5) -> list[dict]:
        """Waits for n invocation messages (type 1) and returns them."""
        d = Deadline(timeout)
        got = [m for m in self.buf if m.get("type") == 1]
        self.buf = [m for m in self.buf if m.get("type") != 1]
        while len(got) < n and not d.over():
            m = self._next(d.left())
            if m is None:
                break
            if m.get("type") == 1:
                got.append(m)
        return got

    def ping(self) -> None:
        with self.lock:
            self.ws.send('{"type":6}' + RS)

    def send_raw(self, text: str) -> None:
        with self.lock:
            self.ws.send(text)

    def close(self) -> None:
        try:
            self.ws.close()
        except Exception:
            pass


class KeepAlive:
    """Pings clients every few seconds so the server's 30 s idle timeout never fires."""

    def __init__(self, clients: list[Client]):
        self.clients = clients
        self.stop_ev = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self) -> None:
        while not self.stop_ev.wait(5):
            for c in self.clients:
                try:
                    c.ping()
                except Exception:
                    pass

    def stop(self) -> None:
        self.stop_ev.set()
        self.t.join(timeout=2)


# --------------------------------------------------------------------------- dashboard

def load_dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def all_panels(d: dict) -> list[dict]:
    out = []
    for p in d.get("panels", []):
        out.append(p)
        out.extend(p.get("panels", []) or [])
    return out


def dashboard_exprs(d: dict) -> list[tuple[str, str]]:
    """(where, expr) for every PromQL expression: panel targets and variable queries."""
    out = []
    for p in all_panels(d):
        for t in p.get("targets", []) or []:
            if t.get("expr"):
                out.append((f"panel {p.get('id')} '{p.get('title')}' {t.get('refId')}", t["expr"]))
    for v in d.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v.get("query")
        q = q.get("query", "") if isinstance(q, dict) else (q or "")
        m = re.fullmatch(r"\s*label_values\((.*),\s*[a-zA-Z_][a-zA-Z0-9_]*\s*\)\s*", q, re.S)
        if m:
            out.append((f"variable {v['name']}", m.group(1)))
            continue
        m = re.fullmatch(r"\s*query_result\((.*)\)\s*", q, re.S)
        if m:
            out.append((f"variable {v['name']}", m.group(1)))
    return out


def substitute(expr: str, namespace: str = ".*", pod: str = ".*", hub: str = ".*") -> str:
    """Replaces Grafana's variables by values PromQL accepts."""
    e = expr.replace("$__rate_interval", "1m").replace("${__rate_interval}", "1m")
    e = e.replace("$__interval", "1m").replace("${__interval}", "1m")
    e = e.replace("$__range", "1h").replace("${__range}", "1h")
    values = {"namespace": namespace, "pod": pod, "hub": hub}
    e = re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)",
               lambda m: values.get(m.group(1) or m.group(2), ".*"), e)
    return e


# The node's own series and the standard process_* ones it exports.
METRIC_RE = re.compile(r"(?<![A-Za-z0-9_:\"'-])(?:hubcast|process)_[a-zA-Z0-9_]+")


def referenced_metrics(exprs: list[str]) -> set[str]:
    names = set()
    for e in exprs:
        # Drop string literals (label values) so only identifiers count.
        stripped = re.sub(r'"(?:[^"\\]|\\.)*"', '""', e)
        names.update(METRIC_RE.findall(stripped))
    return names


def base_name(sample: str) -> str:
    for suffix in ("_bucket", "_sum", "_count"):
        if sample.endswith(suffix):
            return sample[: -len(suffix)]
    return sample


def parse_scrape(text: str) -> tuple[dict[str, str], dict[str, list[tuple[dict, float]]]]:
    """Returns (TYPE by family, samples by sample name)."""
    types: dict[str, str] = {}
    samples: dict[str, list[tuple[dict, float]]] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, fam, typ = line.split(None, 3)
            types[fam] = typ.strip()
            continue
        if not line.strip() or line.startswith("#"):
            continue
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)", line)
        if not m:
            continue
        labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        try:
            value = float(m.group(4))
        except ValueError:
            continue
        samples.setdefault(m.group(1), []).append((labels, value))
    return types, samples


# --------------------------------------------------------------------------- (a)

TS_PRELUDE = """\
// Generated by tests/observability/check_observability.py: do not edit.
import type { Dashboard } from "@grafana/schema";

// JSON cannot name a TypeScript enum member: where the schema has a string enum (e.g.
// ThresholdsMode), accept exactly that enum's string values. Everything else is unchanged,
// so wrong types, wrong enum values and missing required fields still fail.
type Json<T> = T extends string
  ? `${T}`
  : T extends readonly (infer U)[]
    ? Json<U>[]
    : T extends object
      ? { [K in keyof T]: Json<T[K]> }
      : T;

export const d: Json<Dashboard> = """


def mutants(d: dict) -> dict[str, dict]:
    """Broken copies of the dashboard that the type check must reject."""
    out = {}

    def copy() -> dict:
        return json.loads(json.dumps(d))

    m = copy(); m["schemaVersion"] = str(m["schemaVersion"]); out["schemaVersion_as_string"] = m
    m = copy()
    p = next(p for p in all_panels(m) if p.get("type") != "row")
    del p["type"]; out["panel_without_type"] = m
    m = copy()
    p = next(p for p in all_panels(m) if p.get("fieldConfig", {}).get("defaults", {}).get("thresholds"))
    p["fieldConfig"]["defaults"]["thresholds"]["mode"] = "bogus"; out["bad_thresholds_mode"] = m
    m = copy(); m["templating"]["list"][0]["type"] = "querry"; out["bad_variable_type"] = m
    m = copy()
    p = next(p for p in all_panels(m) if p.get("type") != "row")
    p["gridPos"] = {"x": 0, "y": 0, "w": "12", "h": 8}; out["gridPos_w_as_string"] = m
    return out


def check_a(d: dict) -> None:
    section("(a) dashboard: structure and @grafana/schema type check")
    # Structure.
    tl = d.get("templating", {}).get("list", [])
    by_name = {v.get("name"): v for v in tl}
    ds = by_name.get("datasource", {})
    check("a: datasource variable (type datasource, query prometheus)",
          ds.get("type") == "datasource" and ds.get("query") == "prometheus", json.dumps(ds)[:200])
    for name in ("namespace", "pod"):
        v = by_name.get(name, {})
        q = v.get("query")
        q = q.get("query", "") if isinstance(q, dict) else (q or "")
        ok = v.get("type") == "query" and re.match(
            r"label_values\(\s*(hubcast_ready|hubcast_connections)\b", q) is not None \
            and (v.get("datasource") or {}).get("uid") == "${datasource}"
        check(f"a: {name} variable is a label_values query on hubcast_ready/connections", ok, q)
    exprs = dashboard_exprs(d)
    targets = [(w, e) for w, e in exprs if w.startswith("panel")]
    bad_filter, bad_ds, bad_rate, bad_join = [], [], [], []
    for p in all_panels(d):
        if p.get("type") == "row":
            continue
        pds = (p.get("datasource") or {}).get("uid")
        for t in p.get("targets", []) or []:
            if pds != "${datasource}" or (t.get("datasource") or {}).get("uid") != "${datasource}":
                bad_ds.append(f"panel {p.get('id')} {t.get('refId')}")
    for where, e in targets:
        # Every selector of a hubcast_ metric must carry both filters.
        for m in re.finditer(r"\b((?:hubcast|process)_[a-zA-Z0-9_]+)\s*(\{[^}]*\})?", e):
            sel = m.group(2) or ""
            if 'namespace=~"$namespace"' not in sel or 'pod=~"$pod"' not in sel:
                bad_filter.append(f"{where}: {m.group(0)}")
        # Every process in the namespace exports process_* under the same names: each such
        # selector must be joined to a hubcast series of the same target.
        for m in re.finditer(r"\bprocess_[a-zA-Z0-9_]+\s*\{[^}]*\}(?:\[[^\]]*\])?\)?\s*(and on \(namespace, pod, instance\) hubcast_)?", e):
            if not m.group(1):
                bad_join.append(f"{where}: {m.group(0)}")
        for m in re.finditer(r"\[([^\]]+)\]", re.sub(r'"(?:[^"\\]|\\.)*"', '""', e)):
            if m.group(1) != "$__rate_interval":
                bad_rate.append(f"{where}: [{m.group(1)}]")
    check(f"a: every selector of the {len(targets)} panel queries filters namespace=~\"$namespace\", pod=~\"$pod\"",
          not bad_filter, "\n".join(bad_filter[:10]))
    check("a: every process_* selector is joined 'and on (namespace, pod, instance)' to a hubcast series",
          not bad_join, "\n".join(bad_join[:10]))
    check("a: every panel and query uses the ${datasource} variable", not bad_ds, ", ".join(bad_ds[:10]))
    check("a: every range is [$__rate_interval]", not bad_rate, "\n".join(bad_rate[:10]))
    ids = [p.get("id") for p in all_panels(d)]
    check("a: panel ids are unique", len(ids) == len(set(ids)), str(ids))
    wanted = {
        "connections per hub": r"sum by \(hub\) \(hubcast_connections\{",
        "publishes per second": r"rate\(hubcast_events_published_total\{",
        "publish latency p50": r"histogram_quantile\(0\.5, .*hubcast_publish_duration_seconds_bucket",
        "publish latency p99": r"histogram_quantile\(0\.99, .*hubcast_publish_duration_seconds_bucket",
        "delivery lag p99": r"histogram_quantile\(0\.99, .*hubcast_delivery_lag_seconds_bucket",
        "deliveries per second": r"rate\(hubcast_messages_delivered_total\{",
        "delivery failures by reason": r"by \(reason\) \(rate\(hubcast_delivery_failures_total",
        "groups (cluster-wide)": r"hubcast_groups\{",
        "group members (cluster-wide)": r"hubcast_group_members\{",
        "local groups": r"hubcast_local_groups\{",
        "redis reconnects": r"hubcast_redis_reconnects_total\{",
        "redis subscriptions": r"hubcast_redis_subscriptions\{",
        "redis command latency p99": r"histogram_quantile\(0\.99, .*hubcast_redis_command_duration_seconds_bucket",
        "throttled events by rule": r"by \(rule\) .*hubcast_throttled_events_total",
        "budget alerts by threshold": r"by \(threshold\) .*hubcast_budget_alerts_total",
        "connections refused": r"hubcast_connections_refused_total",
        "publishes refused": r"hubcast_publishes_refused_total",
        "invocations refused": r"hubcast_invocations_refused_total",
        "readiness": r"hubcast_ready\{",
        "firing alerts": r'^ALERTS\{alertstate="firing", alertname=~"Hubcast',
        "versions running": r"by \(version\) \(hubcast_build_info\{",
        "connections per pod": r"sum by \(pod\) \(hubcast_connections\{",
        "deliveries per second per pod": r"sum by \(pod\) \(rate\(hubcast_messages_delivered_total\{",
        "cpu per pod": r"sum by \(pod\) \(rate\(process_cpu_seconds_total\{",
        "resident memory per pod": r"sum by \(pod\) \(process_resident_memory_bytes\{",
        "open fds vs max per pod": r"sum by \(pod\) \(process_open_fds\{.*/ sum by \(pod\) \(process_max_fds\{",
        "websocket bytes in per pod": r"sum by \(pod\) \(rate\(hubcast_websocket_received_bytes_total\{",
        "websocket bytes out per pod": r"sum by \(pod\) \(rate\(hubcast_websocket_sent_bytes_total\{",
        "outbound queued per pod": r"sum by \(pod\) \(hubcast_outbound_queued_messages\{",
        "delivery failure ratio (the alert's)": r'hubcast_delivery_failures_total\{[^}]*reason!~"connection_closed\|slow_consumer"\}.*/ on \(hub\) group_left \(\) \(sum by \(hub\) \(rate\(hubcast_messages_delivered_total',
        "connection refusal ratio": r"hubcast_connections_refused_total.*/ \(.*hubcast_connections_opened_total",
        "publish refusal ratio": r"hubcast_publishes_refused_total.*/ \(.*hubcast_publish_duration_seconds_count",
        "redis command errors by command": r"by \(command\) \(rate\(hubcast_redis_command_errors_total\{",
        "connection lifetime quantiles": r"histogram_quantile\(0\.5, .*hubcast_connection_duration_seconds_bucket",
        "resumed connections": r"hubcast_connections_resumed_total\{",
        "redis master changes": r"hubcast_redis_master_changes_total\{",
        "redis channels moved": r"hubcast_redis_channels_moved_total\{",
    }
    missing = [k for k, rx in wanted.items() if not any(re.search(rx, e) for _, e in targets)]
    check(f"a: the dashboard has all {len(wanted)} required views", not missing, "missing: " + ", ".join(missing))

    # Type check: the dashboard plus broken copies, in one tsc run.
    gen = HERE / "build"
    if gen.exists():
        shutil.rmtree(gen)
    gen.mkdir()
    files = {"dashboard": d, **{f"mutant_{k}": v for k, v in mutants(d).items()}}
    for stem, obj in files.items():
        (gen / f"{stem}.ts").write_text(TS_PRELUDE + json.dumps(obj, indent=2) + ";\n")
    tsc = HERE / "node_modules" / ".bin" / "tsc"
    (gen / "tsconfig.json").write_text(json.dumps({
        "compilerOptions": {"target": "es2022", "module": "esnext", "moduleResolution": "bundler",
                            "types": [], "noEmit": True, "strict": True},
        "files": [f"{s}.ts" for s in files]}, indent=2))
    cmd = [str(tsc), "-p", str(gen / "tsconfig.json"), "--noEmit", "--strict"]
    try:
        r = subprocess.run(cmd, cwd=HERE, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        check("a: tsc ran", False, str(e))
        return
    out = r.stdout + r.stderr
    errors: dict[str, list[str]] = {}
    for line in out.splitlines():
        m = re.match(r"(?:.*/)?build/([A-Za-z0-9_]+)\.ts\(\d+,\d+\): error", line)
        if m:
            errors.setdefault(m.group(1), []).append(line)
    other = [l for l in out.splitlines() if "error" in l and "build/" not in l]
    check("a: tsc --noEmit --strict: grafana/hubcast.json is a @grafana/schema Dashboard",
          "dashboard" not in errors and not other,
          "\n".join((errors.get("dashboard", []) + other)[:15]))
    for stem in files:
        if stem.startswith("mutant_"):
            check(f"a: tsc rejects a broken copy ({stem[len('mutant_'):]})", stem in errors,
                  "tsc accepted it: the type check would not catch this mistake")


# --------------------------------------------------------------------------- (b)

def check_b(d: dict) -> None:
    section("(b) every dashboard expression parses (promtool check rules)")
    exprs = dashboard_exprs(d)
    rules = []
    for i, (where, e) in enumerate(exprs):
        rules.append({"record": f"hubcast_dashboard:expr_{i:02d}", "expr": substitute(e)})
    doc = {"groups": [{"name": "hubcast-dashboard-expressions", "rules": rules}]}
    path = WORK / "dashboard-rules.yml"
    path.write_text(json.dumps(doc, indent=2))  # JSON is YAML
    r = subprocess.run([PROMTOOL_BIN, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    detail = (r.stdout + r.stderr).strip()
    ok = r.returncode == 0 and f"SUCCESS: {len(rules)} rules found" in detail
    if not ok:
        # Name the failing expressions one by one.
        for i, (where, e) in enumerate(exprs):
            one = WORK / f"rule-{i}.yml"
            one.write_text(json.dumps({"groups": [{"name": "g", "rules": [rules[i]]}]}))
            r1 = subprocess.run([PROMTOOL_BIN, "check", "rules", str(one)], capture_output=True, text=True, timeout=30)
            if r1.returncode != 0:
                detail += f"\n{where}: {rules[i]['expr']}\n  {(r1.stdout + r1.stderr).strip()}"
    check(f"b: promtool check rules on {len(rules)} expressions ({sum(1 for w, _ in exprs if w.startswith('panel'))} panel queries, "
          f"{sum(1 for w, _ in exprs if w.startswith('variable'))} variable queries)", ok,
          detail if not ok else "")


# --------------------------------------------------------------------------- (c)

def drive_traffic(node: Node) -> list[str]:
    """Does what makes every series appear; returns problems seen on the way."""
    problems = []
    a = Client(node)
    done = a.invoke("JoinGroup", "obs")
    if done.get("error"):
        problems.append(f"JoinGroup failed: {done}")
    # Publishes that reach a member: publish histogram, delivered counter, delivery lag.
    for i in range(3):
        status, body = node.publish("obs", "ObsEvent", [i])
        if status != 202:
            problems.append(f"publish {i}: {status} {body}")
    got = a.receive(3)
    if [m.get("arguments") for m in got] != [[0], [1], [2]]:
        problems.append(f"client received {got!r}, expected ObsEvent [0], [1], [2]")
    # An unknown hub method: hubcast_invocations_refused_total.
    if "error" not in a.invoke("NoSuchMethod"):
        problems.append("unknown method did not answer an error completion")
    # A known event with arguments outside its contract (schema_check = warn by default).
    status, body = node.publish("task-obs", "TaskProgress", [{"not": "positional"}])
    if status not in (202, 400):
        problems.append(f"contract-mismatch publish answered {status} {body}")
    # A spend crossing 50 % of the budget: hubcast_budget_alerts_total.
    status, _, _ = http("POST", f"{node.base}/api/v1/spend/obs-key",
                        {"newSpend": 60, "totalSpend": 60, "budget": 100, "provider": "p", "model": "m"})
    if status != 202:
        problems.append(f"spend flow answered {status}")
    # Progress after a terminal event: hubcast_throttled_events_total{rule="after_terminal"}.
    for action, body in (("completed", {}), ("progress", {"progress": 5})):
        status, _, _ = http("POST", f"{node.base}/api/v1/tasks/task/obs-task/{action}", body)
        if status != 202:
            problems.append(f"task flow {action} answered {status}")
    # A forged connection token: hubcast_connections_refused_total.
    try:
        websocket.create_connection(f"ws://127.0.0.1:{node.port}/hubs/tasks?id=forged", timeout=5).close()
        problems.append("a forged connection token was accepted")
    except websocket.WebSocketBadStatusException:
        pass
    # A protocol error: hubcast_connections_closed_total.
    b = Client(node)
    b.send_raw("this is not json" + RS)
    try:
        b._next(3)
    except (ConnectionError, websocket.WebSocketConnectionClosedException, ValueError):
        pass
    b.close()
    a.close()
    return problems


def redis_command(port: int, *args: str) -> bytes:
    """Sends one command to the redis-server on 127.0.0.1:port; returns its reply's first line."""
    req = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(req.encode())
        return s.recv(256).split(b"\r\n", 1)[0]


def fail_a_redis_command(node: Node, rport: int) -> list[str]:
    """Makes one of the node's Redis commands fail for real, so that
    hubcast_redis_command_errors_total appears: with maxmemory at 1 byte (noeviction),
    Redis refuses every write with OOM, so a publish is answered 503. Restores maxmemory."""
    problems = []
    policy = redis_command(rport, "CONFIG", "SET", "maxmemory-policy", "noeviction")
    limit = redis_command(rport, "CONFIG", "SET", "maxmemory", "1")
    if policy != b"+OK" or limit != b"+OK":
        return [f"CONFIG SET maxmemory answered {limit!r}, maxmemory-policy {policy!r}"]
    try:
        status, body = node.publish("obs", "ObsEvent", ["refused by redis"])
        if status != 503:
            problems.append(f"publish with Redis out of memory answered {status} {body}, not 503")
    finally:
        restored = redis_command(rport, "CONFIG", "SET", "maxmemory", "0")
        if restored != b"+OK":
            problems.append(f"CONFIG SET maxmemory 0 answered {restored!r}")
    # The node is usable again: a publish is accepted.
    if poll_until(lambda: True if node.publish("obs", "ObsEvent", ["after"])[0] == 202 else None, 10) is None:
        problems.append("publishes were not accepted again after Redis had memory again")
    return problems


def wait_scrape_complete(node: Node, names: set[str], exempt: set[str], seconds: float = 10) -> None:
    """Waits (polling, with a deadline) until every expected series is in the scrape: the
    lag histogram and coalesced progress are recorded asynchronously after the traffic."""
    def complete():
        _, samples = parse_scrape(node.scrape())
        return True if all(n in samples for n in names if base_name(n) not in exempt) else None
    poll_until(complete, seconds)


def check_scrape(label: str, node: Node, names: set[str], exempt: set[str]) -> None:
    wait_scrape_complete(node, names, exempt)
    text = node.scrape()
    path = WORK / f"scrape-{node.name}.txt"
    path.write_text(text)
    r = subprocess.run([PROMTOOL_BIN, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    check(f"c: promtool check metrics passes on the live scrape of the {label} node (exit {r.returncode})",
          r.returncode == 0, (r.stdout + r.stderr).strip()
          + f"\n(scrape: {path}; KEEP_WORK=1 keeps it after a failed run)")
    types, samples = parse_scrape(text)
    missing = []
    for n in sorted(names):
        if base_name(n) in exempt:
            continue
        if n not in samples:
            missing.append(n if base_name(n) == n else f"{n} (histogram {base_name(n)})")
    bases = sorted({base_name(n) for n in names} - {base_name(n) for n in exempt})
    check(f"c: all {len(bases)} metrics the dashboard uses are in the {label} node's scrape"
          + (f" (not required here: {', '.join(sorted(exempt))})" if exempt else ""),
          not missing, "missing: " + ", ".join(missing))
    undeclared = sorted(b for b in {base_name(n) for n in names} - exempt if b not in types)
    check(f"c: every metric the dashboard uses has a # TYPE line in the {label} node's scrape",
          not undeclared, "no TYPE: " + ", ".join(undeclared))


def check_c(d: dict) -> None:
    section("(c) live scrape: exposition lint and every dashboard metric present")
    names = referenced_metrics([e for _, e in dashboard_exprs(d)])
    node = Node("c-memory")
    if not check("c: node on the in-process backplane starts and is ready", node.wait_up(),
                 log_tail("c-memory")):
        return
    # Before any traffic: informational (dashboards show "No data" for these until then).
    _, idle = parse_scrape(node.scrape())
    absent_idle = sorted({base_name(n) for n in names if n not in idle})
    INFO.append("metrics absent from an idle node until their first event: " + ", ".join(absent_idle))
    problems = drive_traffic(node)
    check("c: traffic against the in-process node behaves (3 deliveries, refusals, flows)",
          not problems, "\n".join(problems))
    check_scrape("in-process", node, names, REDIS_ONLY)
    node.stop()

    if not REDIS_BIN:
        check("c: redis-server available for the Redis-backed node", False, "redis-server not on PATH")
        return
    rport = free_port()
    redis = spawn("c-redis", [REDIS_BIN, "--port", str(rport), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no"])
    def pong():
        with socket.create_connection(("127.0.0.1", rport), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return True if s.recv(16).startswith(b"+PONG") else None
    poll_until(pong, 10)
    rnode = Node("c-redis-node", redis_url=f"redis://127.0.0.1:{rport}")
    if not check("c: node on a Redis backplane starts and is ready", rnode.wait_up(),
                 log_tail("c-redis-node")):
        return
    problems = drive_traffic(rnode)
    check("c: traffic against the Redis-backed node behaves", not problems, "\n".join(problems))
    problems = fail_a_redis_command(rnode, rport)
    check("c: a Redis command refused for lack of memory answers the publish 503, then recovers",
          not problems, "\n".join(problems))
    check_scrape("Redis-backed", rnode, names, set())
    rnode.stop()
    stop(redis)


# --------------------------------------------------------------------------- (d)

class Prom:
    def __init__(self, targets: list[tuple[str, str]]):
        self.port = free_port()
        self.dir = WORK / "prometheus"
        (self.dir / "data").mkdir(parents=True, exist_ok=True)
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{
                "job_name": "hubcast",
                "static_configs": [{"targets": [t], "labels": {"namespace": NAMESPACE, "pod": pod}}
                                   for pod, t in targets],
            }],
        }
        cfg = self.dir / "prometheus.yml"
        cfg.write_text(json.dumps(config, indent=2))
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = spawn("prometheus", [
            PROMETHEUS_BIN, f"--config.file={cfg}", f"--storage.tsdb.path={self.dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn",
            "--storage.tsdb.retention.time=1h"])

    def wait_ready(self, seconds: float = 30) -> bool:
        def ready():
            if self.proc.poll() is not None:
                return False
            return True if http("GET", self.base + "/-/ready", timeout=2)[0] == 200 else None
        return bool(poll_until(ready, seconds, every=0.2))

    def query(self, q: str) -> tuple[str, list]:
        url = self.base + "/api/v1/query?" + urllib.parse.urlencode({"query": q})
        status, body, _ = http("GET", url, timeout=10)
        doc = json.loads(body)
        if doc.get("status") != "success":
            return "error", [doc.get("errorType"), doc.get("error")]
        return "success", doc["data"]["result"]

    def scalar(self, q: str) -> float | None:
        status, result = self.query(q)
        if status != "success" or not result:
            return None
        return float(result[0]["value"][1])

    def wait_value(self, q: str, want: float, seconds: float) -> tuple[bool, float | None]:
        last = [None]

        def equal():
            last[0] = self.scalar(q)
            return True if last[0] is not None and abs(last[0] - want) < 1e-9 else None
        return bool(poll_until(equal, seconds, every=0.5)), last[0]


def check_d(d: dict) -> None:
    section("(d) a real Prometheus scraping two nodes")
    a, b = Node("d-node-a"), Node("d-node-b")
    up = a.wait_up() and b.wait_up()
    if not check("d: two nodes start and are ready", up, log_tail("d-node-a") + "\n" + log_tail("d-node-b")):
        return
    prom = Prom([("hubcast-0", f"127.0.0.1:{a.mport}"), ("hubcast-1", f"127.0.0.1:{b.mport}")])
    if not check("d: prometheus starts", prom.wait_ready(), log_tail("prometheus")):
        return
    ok, v = prom.wait_value('count(up{job="hubcast"} == 1)', 2, 20)
    check("d: both targets are up", ok, f"count(up == 1) = {v}; {log_tail('prometheus', 5)}")
    # One connection opened and closed on each node, so that the connection lifetime
    # histogram has series.
    for n in (a, b):
        Client(n).close()

    # 3 clients on node a, 2 on node b, all in group "obs".
    clients_a = [Client(a) for _ in range(3)]
    clients_b = [Client(b) for _ in range(2)]
    clients = clients_a + clients_b
    keep = KeepAlive(clients)
    try:
        for c in clients:
            c.invoke("JoinGroup", "obs")
        ok, v = prom.wait_value("sum(hubcast_connections)", 5, 20)
        check("d: sum(hubcast_connections) == 5 (3 clients on one node, 2 on the other)", ok, *both(f"last value {v}"))
        both_ready = {"hubcast-0": "1", "hubcast-1": "1"}
        seen_ready = [{}]

        def ready_now():
            status, result = prom.query('hubcast_ready{job="hubcast"}')
            seen_ready[0] = {r["metric"].get("pod"): r["value"][1] for r in result} if status == "success" else {}
            return True if seen_ready[0] == both_ready else None
        poll_until(ready_now, 12, every=0.5)  # a scrape interval or two
        ready = seen_ready[0]
        check("d: hubcast_ready is 1 for both targets", ready == {"hubcast-0": "1", "hubcast-1": "1"}, *both(f"got {ready}"))
        ok, v = prom.wait_value('sum(hubcast_group_members{hub="tasks"})', 5, 15)
        check("d: sum(hubcast_group_members{hub=\"tasks\"}) == 5 (each in-process node counts its own)", ok, *both(f"last value {v}"))
        ok, v = prom.wait_value('sum(hubcast_local_groups{hub="tasks"})', 2, 15)
        check("d: sum(hubcast_local_groups{hub=\"tasks\"}) == 2 (group obs on each node)", ok, *both(f"last value {v}"))

        ok, v = prom.wait_value("sum(hubcast_redis_subscriptions)", 4, 15)
        check("d: sum(hubcast_redis_subscriptions) == 4 (per node: its node channel and group obs)", ok,
              *both(f"last value {v}"))
        # Warm-up publish on each node so the histograms exist, then an exact baseline.
        for n in (a, b):
            n.publish("obs", "Warmup", [0])
        for c in clients:
            c.receive(1)
        ok, base = prom.wait_value("sum(hubcast_publish_duration_seconds_count)", 2, 20)
        check("d: publish histogram count reaches the 2 warm-up publishes", ok, *both(f"last value {base}"))
        ok, dbase = prom.wait_value("sum(hubcast_messages_delivered_total)", 5, 20)
        check("d: delivered counter reaches the 5 warm-up deliveries", ok, *both(f"last value {dbase}"))
        if base is None or dbase is None:
            return
        # N publishes: 4 on node a (3 members each), 3 on node b (2 members each).
        na, nb = 4, 3
        bad = []
        for i in range(na):
            s, body = a.publish("obs", "ObsEvent", [i])
            if s != 202:
                bad.append(f"a {i}: {s} {body}")
        for i in range(nb):
            s, body = b.publish("obs", "ObsEvent", [i])
            if s != 202:
                bad.append(f"b {i}: {s} {body}")
        check(f"d: {na + nb} publishes answered 202", not bad, "; ".join(bad))
        recv = [len(c.receive(na)) for c in clients_a] + [len(c.receive(nb)) for c in clients_b]
        check("d: every client received its node's events", recv == [na] * 3 + [nb] * 2, *both(f"received {recv}"))
        ok, v = prom.wait_value("sum(hubcast_publish_duration_seconds_count)", base + na + nb, 20)
        check(f"d: sum(hubcast_publish_duration_seconds_count) grew by exactly {na + nb}", ok,
              *both(f"baseline {base}, last value {v}"))
        want = dbase + 3 * na + 2 * nb
        ok, v = prom.wait_value("sum(hubcast_messages_delivered_total)", want, 20)
        check(f"d: sum(hubcast_messages_delivered_total) grew by exactly {3 * na + 2 * nb}", ok,
              *both(f"baseline {dbase}, last value {v}"))
        ok, v = prom.wait_value("sum(hubcast_delivery_lag_seconds_count)", 5 + 3 * na + 2 * nb, 20)
        check("d: sum(hubcast_delivery_lag_seconds_count) equals the deliveries", ok, *both(f"last value {v}"))
        # ObsEvent and Warmup are not events the tasks hub declares: their label is "other",
        # so made-up targets cannot grow the label set.
        want = 2 + na + nb
        ok, v = prom.wait_value('sum(hubcast_events_published_total{hub="tasks",target="other"})', want, 20)
        check(f"d: sum(hubcast_events_published_total{{hub=\"tasks\",target=\"other\"}}) == {want}", ok,
              *both(f"last value {v}"))

        # Every dashboard expression evaluates on real data, scoped to the test namespace:
        # wait for two more scrapes, so that rate() over the traffic has two points.
        seen = prom.scalar("min(count_over_time(hubcast_ready[5m]))") or 0
        poll_until(lambda: True if (prom.scalar("min(count_over_time(hubcast_ready[5m]))") or 0) >= seen + 2
                   else None, 15, every=0.2)
        errors, empty = [], []
        for where, e in dashboard_exprs(d):
            q = substitute(e, namespace=NAMESPACE)
            status, result = prom.query(q)
            if status != "success":
                errors.append(f"{where}: {result}")
            elif not result and where.startswith("panel") and "redis_command" not in e \
                    and not e.startswith("ALERTS{") \
                    and not re.search(r"refused|throttled|budget|schema|closed|failures|http_requests", e):
                empty.append(where)
        n = len(dashboard_exprs(d))
        check(f"d: all {n} dashboard expressions evaluate on the live Prometheus", not errors, "\n".join(errors))
        check("d: the panels for traffic this test made return data", not empty, "no data: " + ", ".join(empty))
        # The variables, resolved as Grafana does for label_values(selector, label).
        want_vals = {"namespace": [NAMESPACE], "pod": ["hubcast-0", "hubcast-1"]}
        for v in d.get("templating", {}).get("list", []):
            q = v.get("query")
            q = q.get("query", "") if isinstance(q, dict) else (q or "")
            m = re.fullmatch(r"\s*label_values\((.*),\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*", q, re.S)
            if v.get("type") != "query" or not m:
                continue
            selector, label = substitute(m.group(1)), m.group(2)
            url = (f"{prom.base}/api/v1/label/{label}/values?"
                   + urllib.parse.urlencode({"match[]": selector}))
            doc = json.loads(http("GET", url)[1])
            vals = sorted(doc.get("data") or [])
            ok = doc.get("status") == "success" and (vals == want_vals[label] if label in want_vals else bool(vals))
            check(f"d: variable ${v['name']} resolves on the live Prometheus", ok,
                  *both(f"{q} -> {vals}"))
        conn = next(e for _, e in dashboard_exprs(d) if e.startswith("sum by (hub) (hubcast_connections{"))
        status, result = prom.query(substitute(conn, namespace=NAMESPACE))
        total = sum(float(r["value"][1]) for r in result) if status == "success" else None
        check("d: the 'Connections per hub' panel adds up to 5", total == 5, f"got {total}: {result}", f"got {total}")
        status, result = prom.query(substitute(conn, namespace="another-namespace"))
        check("d: the namespace variable filters (another namespace: no series)",
              status == "success" and result == [], f"{status} {result}")
    finally:
        keep.stop()
        for c in clients:
            c.close()
    ok, v = prom.wait_value("sum(hubcast_connections)", 0, 20)
    check("d: sum(hubcast_connections) returns to 0 after the clients leave", ok, *both(f"last value {v}"))
    stop(prom.proc)
    a.stop()
    b.stop()


# --------------------------------------------------------------------------- (e)

SRC = ROOT / "src"
OPERATIONS = ROOT / "docs" / "operations.md"
# The counters whose `reason` label operators read, by the constant in src/metrics.rs.
REASON_METRICS = ["DELIVERY_FAILURES", "CONNECTIONS_CLOSED", "CONNECTIONS_REFUSED",
                  "INVOCATIONS_REFUSED", "PUBLISHES_REFUSED"]
FN_RE = re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?(?:async\s+)?fn\s+(\w+)\s*(?:<[^>]*>)?\s*\(", re.M)
LIT_RE = re.compile(r'^"([a-z0-9_]+)"$')


def macro_calls(text: str, name: str) -> list[tuple[int, str]]:
    """(offset, arguments) of every `name!(…)` in text, with balanced parentheses."""
    out = []
    for m in re.finditer(re.escape(name) + r"!\s*\(", text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        out.append((m.start(), text[m.end():i - 1]))
    return out


def split_args(args: str) -> list[str]:
    """Top-level comma-separated arguments."""
    out, depth, cur = [], 0, ""
    for ch in args:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


def enclosing_fn(text: str, pos: int) -> tuple[str, list[str], str]:
    """(name, parameter names, body) of the function around offset pos."""
    starts = [m for m in FN_RE.finditer(text) if m.start() <= pos]
    if not starts:
        return "", [], text
    m = starts[-1]
    nxt = next((n.start() for n in FN_RE.finditer(text, m.end())), len(text))
    depth, i = 1, m.end()
    while i < len(text) and depth:
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        i += 1
    params = [a.split(":")[0].strip().lstrip("&").replace("mut ", "")
              for a in split_args(text[m.end():i - 1])]
    return m.group(1), params, text[m.start():nxt]


def fn_arm_labels(text: str, fn: str) -> list[str]:
    """The string literals a `fn fn(…) -> &'static str` match returns."""
    m = re.search(r"fn\s+" + re.escape(fn) + r"\b", text)
    if not m:
        return []
    body = text[m.start():]
    nxt = FN_RE.search(body, 1)
    body = body[: nxt.start()] if nxt else body
    return re.findall(r'=>\s*"([a-z0-9_]+)"', body)


def resolve_reason(expr: str, text: str, pos: int, consts: dict[str, str], depth: int = 0
                   ) -> tuple[set[str], list[str]]:
    """The values a `reason` label expression can take at offset pos of text, and what
    could not be told."""
    expr = expr.strip()
    if depth > 4:
        return set(), [f"too deep at {expr}"]
    if m := LIT_RE.match(expr):
        return {m.group(1)}, []
    if m := re.fullmatch(r"(?:(?:crate::)?metrics::|m::)?([A-Z][A-Z0-9_]*)", expr):
        if m.group(1) in consts:
            return {consts[m.group(1)]}, []
        return set(), [f"unknown constant {expr}"]
    if m := re.fullmatch(r"(\w+)\.label\(\)", expr):
        # CloseReason::label, less the variants the call site skips (`reason != X`).
        close = (SRC / "connection" / "close.rs").read_text()
        labels = dict(re.findall(r"Self::(\w+)(?:\([^)]*\))?\s*=>\s*\"([a-z0-9_]+)\"", close))
        _, _, body = enclosing_fn(text, pos)
        skipped = {labels.get(v) for v in re.findall(r"\b" + m.group(1) + r"\s*!=\s*CloseReason::(\w+)", body)}
        return set(labels.values()) - skipped, [] if labels else ["no CloseReason::label arms"]
    if m := re.fullmatch(r"(\w+)\(&?\w+\)", expr):
        arms = fn_arm_labels(text, m.group(1))
        return set(arms), [] if arms else [f"no labels in fn {m.group(1)}"]
    if re.fullmatch(r"[a-z_]\w*", expr):
        name, params, body = enclosing_fn(text, pos)
        before = body[: max(0, pos - text.find(body))] if text.find(body) >= 0 else body
        # for reason in [A, B, …]
        loops = re.findall(r"for\s+" + expr + r"\s+in\s+\[([^\]]*)\]", before)
        # let f = |reason: …| …; f(A) …
        closure = re.search(r"let\s+(\w+)\s*=\s*\|" + expr + r"\b", body)
        # let reason = match … { … => X, … };
        matched = re.search(r"let\s+" + expr + r"\s*=\s*match\b[^{]*\{(.*?)\n\s*\};", body, re.S)
        # let (reason, …) = match … { … => (X, …), … };
        tupled = re.search(r"let\s+\(\s*" + expr + r"\s*,[^)]*\)\s*=\s*match\b[^{]*\{(.*?)\n\s*\};", body, re.S)
        vals, unknown = set(), []
        def add(e: str) -> None:
            v, u = resolve_reason(e, text, pos, consts, depth + 1)
            vals.update(v)
            unknown.extend(u)
        if loops:
            for e in split_args(loops[-1]):
                add(e)
        elif closure:
            for c in re.finditer(r"\b" + closure.group(1) + r"\(([^()]*)\)", body[closure.end():]):
                add(c.group(1))
        elif matched:
            for arm in re.findall(r"=>\s*([^,\n]+),?", matched.group(1)):
                arm = arm.strip().rstrip(",")
                if re.fullmatch(r"[a-z_]\w*", arm):
                    # a parameter of this function, e.g. `_ => stage`
                    add_param = arm
                    vals_p, unk_p = resolve_param(name, params, add_param, text, consts, depth)
                    vals.update(vals_p)
                    unknown.extend(unk_p)
                else:
                    add(arm)
        elif tupled:
            for arm in re.findall(r"=>\s*\(\s*([^,]+),", tupled.group(1)):
                add(arm)
        elif expr in params:
            return resolve_param(name, params, expr, text, consts, depth)
        else:
            unknown.append(f"variable {expr} in fn {name}")
        return vals, unknown
    return set(), [f"expression {expr}"]


def resolve_param(fn: str, params: list[str], param: str, text: str, consts: dict[str, str],
                  depth: int) -> tuple[set[str], list[str]]:
    """The values parameter `param` of fn takes at its call sites in the same file."""
    idx = params.index(param)
    vals, unknown, calls = set(), [], 0
    for pos, args in macro_calls(text.replace(fn + "(", fn + "!("), fn):
        if re.search(r"fn\s+$", text[max(0, pos - 10):pos].replace("!", "")):
            continue
        a = split_args(args)
        if len(a) != len(params):
            continue
        calls += 1
        v, u = resolve_reason(a[idx], text, pos, consts, depth + 1)
        vals.update(v)
        unknown.extend(u)
    if not calls:
        unknown.append(f"no calls of fn {fn}")
    return vals, unknown


def emitted_reasons() -> tuple[dict[str, set[str]], list[str]]:
    """For each counter of REASON_METRICS (by metric name): every `reason` value some
    counter!() in src/ gives it; and the label expressions that could not be told."""
    metrics_rs = (SRC / "metrics.rs").read_text()
    consts = dict(re.findall(r'pub const (\w+): &str = "([^"]*)";', metrics_rs))
    reasons: dict[str, set[str]] = {consts[c]: set() for c in REASON_METRICS}
    unknown: list[str] = []
    for path in sorted(SRC.rglob("*.rs")):
        text = path.read_text()
        for pos, args in macro_calls(text, "metrics::counter"):
            a = split_args(args)
            metric = re.sub(r"^(?:(?:crate::)?metrics::|m::)", "", a[0]) if a else ""
            if metric not in REASON_METRICS:
                continue
            label = next((x.split("=>", 1)[1] for x in a[1:] if x.replace(" ", "").startswith('"reason"=>')), None)
            where = f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, pos) + 1}"
            if label is None:
                unknown.append(f"{where}: {consts[metric]} without a reason label")
                continue
            v, u = resolve_reason(label, text, pos, consts)
            reasons[consts[metric]].update(v)
            unknown.extend(f"{where}: {x}" for x in u)
    return reasons, unknown


def check_e(d: dict) -> None:
    section("(e) every reason label value the node emits is documented in docs/operations.md")
    reasons, unknown = emitted_reasons()
    check("e: every reason label of " + ", ".join(sorted(reasons)) + " in src/ is a value the check can tell",
          not unknown, "\n".join(unknown[:20]))
    doc = OPERATIONS.read_text()
    for metric, values in sorted(reasons.items()):
        row = next((l for l in doc.splitlines() if l.startswith(f"| `{metric}` |")), None)
        if not check(f"e: docs/operations.md has a table row for {metric}", row is not None,
                     f"no line starting with | `{metric}` |"):
            continue
        missing = sorted(v for v in values if f"`{v}`" not in row)
        check(f"e: {metric}: its {len(values)} reasons are documented ({', '.join(sorted(values))})",
              bool(values) and not missing,
              "not in its row of docs/operations.md: " + ", ".join(missing) if values else "no reason found in src/")


# --------------------------------------------------------------------------- main

def main() -> int:
    print(f"hubcast observability checks (work dir {WORK})", flush=True)
    for tool in (HUBCAST_BIN, PROMTOOL_BIN, PROMETHEUS_BIN):
        if not os.access(tool, os.X_OK):
            print(f"missing executable: {tool}", file=sys.stderr)
            return 2
    d = load_dashboard()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        for step in (check_a, check_b, check_c, check_d, check_e):
            try:
                step(d)
            except Exception as e:  # a crash in one step is a failure, the others still run
                check(f"{step.__name__} ran to the end", False, "".join(traceback.format_exception(e))[-2000:])
            finally:
                stop_all()
    except KeyboardInterrupt:
        check("interrupted", False)
    finally:
        stop_all()
    passed = sum(1 for _, ok, _ in RESULTS if ok)
    failed = len(RESULTS) - passed
    if INFO:
        print("\nnotes:")
        for line in INFO:
            print(f"  - {line}")
    if failed:
        print("\nfailed:")
        for name, ok, _ in RESULTS:
            if not ok:
                print(f"  - {name}")
    print(f"\n{passed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
