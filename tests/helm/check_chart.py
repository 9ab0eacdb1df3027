#!/usr/bin/env python3
"""Checks of the Helm chart (helm/hubcast) and of the local docker-compose setup.

Run it through `bash scripts/check-chart.sh` (which installs what is missing), or directly:

    python3 tests/helm/check_chart.py          # every check, then "N passed, M failed"
    pytest tests/helm/check_chart.py           # the same checks as pytest tests

What it does, without a cluster or a helm binary (helm-python-sdk bundles Helm's Go SDK):

- renders the chart with no values at all (the first install: in-chart Redis, generated
  keys), for the minimal documented install and seven variants (in-chart Redis;
  ServiceMonitor + PrometheusRule + HPA on connections; existingSecret + Ingress; a custom
  config file; Redis Cluster with a password Secret; Sentinel; development mode), and
  runs `helm lint --strict` on each;
- validates every rendered object with `kubernetes-validate --strict -k 1.30`, except the
  Prometheus Operator kinds (ServiceMonitor, PrometheusRule): they are custom resources
  whose schemas kubernetes-validate does not ship, so they are skipped, by name;
- runs `yamllint -d relaxed` on the rendered files;
- extracts the PrometheusRule into a rules file for `promtool check rules`, and runs
  `promtool test rules` to prove each alert fires on this release's series (and on no
  other release's);
- checks that every HUBCAST_* variable the chart sets is one `hubcast --help` lists, that
  the binary accepts each rendered hubcast.toml, and that a node started with exactly the
  Deployment's environment (keys from the rendered Secret, a throw-away redis-server, or
  a local Redis Cluster or Sentinel reached through the rendered URL) becomes ready,
  accepts a publish with the access key, and exports every metric the alerts and the HPA
  use;
- runs the `helm test` Pod's script against that node (negotiate with a token it signs,
  then a publish with the access key);
- checks that generated keys are reused from the Secret an upgrade finds (the lookup's
  result injected into a copy of the chart: no render here reaches a cluster);
- checks that invalid values are refused at render time, with one message naming every
  problem;
- checks NOTES.txt, the Grafana dashboard ConfigMap, and that every alert's runbook_url
  names a section of docs/operations.md;
- checks docker-compose.yml, deploy/ (Prometheus, and Grafana's provisioning, statically)
  and the Dockerfile.

Rendered files are left in target/helm-check/<variant>/ for inspection.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "hubcast"
OUT = ROOT / "target" / "helm-check"
KUBE_VERSION = "1.30"
RELEASE = "demo"
NAMESPACE = "hubcast"
# Kinds kubernetes-validate has no schema for (Prometheus Operator custom resources).
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
COMPOSE_RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
COMPOSE_SELECTOR = 'job="hubcast"'

KEYS = {"accessKey": "publish-secret-0123456789abcdef0123,old-publish-secret-0123456789abcdef0", "tokenKey": "token-secret-0123456789abcdef0123456",
        "masterKey": "admin-secret-0123456789abcdef0123456"}
MINIMAL = {"redis": {"url": "redis://redis.example:6379/0"}, "auth": dict(KEYS)}


def merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of base with extra merged in (dicts recursively, anything else replaced)."""
    out = json.loads(json.dumps(base))
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


VARIANTS: dict[str, dict[str, Any]] = {
    # `helm install` with no values at all: the in-chart Redis and generated keys.
    "bare": {},
    # The documented production install: an external Redis and keys given.
    "default": MINIMAL,
    "in-chart-redis": {"redis": {"inChart": {"enabled": True}}, "auth": dict(KEYS)},
    "monitoring": merged(MINIMAL, {
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
                    "prometheusRule": {"enabled": True, "labels": {"release": "prom"},
                                       "additionalLabels": {"team": "platform"}},
                    "grafanaDashboard": {"enabled": True}},
        "autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 12,
                        "connectionsPerPod": {"enabled": True, "averageValue": "8000"}},
    }),
    "existing-secret-ingress": {
        "redis": {"existingSecret": "hubcast-redis"},
        "auth": {"existingSecret": "hubcast-keys"},
        "ingress": {"enabled": True, "className": "nginx",
                    "hosts": [{"host": "notify.example.com",
                               "paths": [{"path": "/hubs", "pathType": "Prefix"}]}],
                    "tls": [{"secretName": "notify-tls", "hosts": ["notify.example.com"]}]},
    },
    "custom-config": merged(MINIMAL, {
        "auth": {"connectProxyUrl": "http://gateway.default.svc:8080/signalr/identify"},
        "replicaCount": 3,
        "lifecycle": {"useSleepAction": True, "preStopSleepSeconds": 8},
        "terminationGracePeriodSeconds": 45,
        "probes": {"startup": {"enabled": True}},
        "podDisruptionBudget": {"maxUnavailable": "", "minAvailable": "50%"},
        "topologySpread": {"zoneWhenUnsatisfiable": "DoNotSchedule"},
        "extraEnv": [{"name": "TZ", "value": "UTC"}],
        "config": {
            "limits": {"max_body_bytes": 65536, "outbound_queue": 256},
            "timeouts": {"shutdown_ms": 20000},
            "security": {"allowed_origins": ["https://app.example.com"]},
            "flows": {"rearm_below_percent": 40.5, "webhook_groups": "underscore",
                      "rate_limits": [{"target": "SpendUpdate", "per_second": 20},
                                      {"hub": "tasks", "target": "TaskProgress",
                                       "per_second": 2.5, "burst": 5}]},
            "hubs": [
                {"name": "chat", "path": "/hubs/chat", "auth": "connect-proxy",
                 "allow": ["room-*", "user-{user}"], "allow_broadcast": True,
                 "auto_join": ["lobby"], "schema_check": "off",
                 "methods": [{"name": "EnterRoom", "join": "room-{0}", "reply": "Entered"},
                             {"name": "LeaveRooms", "leave": "room-{0}", "each": True},
                             {"name": "Ping", "args": 1, "reply": "Pong",
                              "reply_args": ["{0}", "{connectionId}"]},
                             {"name": "Old", "error": "Old is gone; use EnterRoom"}]},
                {"name": "webhooks", "path": "/hubs/webhooks", "aliases": ["/hubs/hooks"],
                 "methods": [{"name": "SubscribeToWebhooks", "join": "{0:webhook}",
                              "each": True}]},
            ],
        },
    }),
    # A Redis Cluster with an AUTH token from a Secret of the operator's (the node check
    # runs it against a real local cluster; TLS is checked in the URL test).
    "redis-cluster": merged(MINIMAL, {"redis": {
        "url": "", "mode": "cluster",
        "cluster": {"nodes": ["clustercfg.notify.example.com:6379",
                              "redis-1.notify.example.com:6380"]},
        "password": {"existingSecret": "hubcast-redis-auth", "existingSecretKey": "auth-token"}}}),
    # The Bitnami Redis chart with Sentinel (release "cache"), its password Secret.
    "redis-sentinel": merged(MINIMAL, {"redis": {
        "url": "", "mode": "sentinel",
        "sentinel": {"nodes": ["cache-redis:26379"], "masterName": "mymaster"},
        "password": {"existingSecret": "cache-redis"}}}),
    "insecure-dev": {"insecure": True, "replicaCount": 1,
                     "redis": {"inChart": {"enabled": True}},
                     "podDisruptionBudget": {"enabled": False}},
}

# Smallest Redis values of the cluster and sentinel modes.
CLUSTER = {"mode": "cluster", "cluster": {"nodes": ["r-0:6379"]}}
SENTINEL = {"mode": "sentinel", "sentinel": {"nodes": ["s-0:26379"]}}

# Values the chart must refuse, with a piece of the message that must name the problem.
REFUSED: list[tuple[str, dict[str, Any], str]] = [
    ("in-chart Redis turned off, no other", {"redis": {"inChart": {"enabled": False}}},
     "redis.url"),
    ("no keys, generation off", {"redis": {"url": "redis://r:6379"}, "auth": {"generate": False}},
     "auth.existingSecret"),
    ("no token key, generation off", merged(MINIMAL, {"auth": {"tokenKey": "", "generate": False}}),
     "set auth.tokenKey"),
    ("no master key, generation off",
     merged(MINIMAL, {"auth": {"masterKey": "", "generate": False}}),
     "hubs admin-notifications authenticate clients with the master key"),
    ("in-chart Redis forced on beside a URL",
     {"redis": {"url": "redis://r:6379", "inChart": {"enabled": True}}}, "only one of redis.url"),
    ('replicaCount: "two"', merged(MINIMAL, {"replicaCount": "two"}), "'/replicaCount'"),
    ("unknown top-level value", merged(MINIMAL, {"replicas": 2}), "'replicas' not allowed"),
    ("unknown config key", merged(MINIMAL, {"config": {"limits": {"max_recrd_bytes": 10}}}),
     "'max_recrd_bytes' not allowed"),
    ("limit below the binary's minimum",
     merged(MINIMAL, {"config": {"limits": {"max_record_bytes": 10}}}),
     "'/config/limits/max_record_bytes'"),
    ("http:// Redis URL", merged(MINIMAL, {"redis": {"url": "http://r:6379"}}), "'/redis/url'"),
    ("two Redis sources", merged(MINIMAL, {"redis": {"inChart": {"enabled": True}}}),
     "only one of redis.url"),
    ("grace period shorter than preStop + drain",
     merged(MINIMAL, {"terminationGracePeriodSeconds": 12}), "terminationGracePeriodSeconds"),
    ("keepalive not below client timeout",
     merged(MINIMAL, {"config": {"timeouts": {"keepalive_ms": 30000}}}), "keepalive_ms"),
    ("heartbeat interval above half the TTL",
     merged(MINIMAL, {"config": {"cluster": {"heartbeat_interval_ms": 6000}}}),
     "heartbeat_interval_ms"),
    ("budget thresholds not ascending",
     merged(MINIMAL, {"config": {"flows": {"budget_thresholds": [
         {"percent": 90, "severity": "critical"}, {"percent": 50, "severity": "info"}]}}}),
     "strictly ascending"),
    ("connect-proxy hub without its URL",
     merged(MINIMAL, {"config": {"hubs": [{"name": "x", "path": "/hubs/x",
                                           "auth": "connect-proxy"}]}}), "connectProxyUrl"),
    ("unknown hub auth mode",
     merged(MINIMAL, {"config": {"hubs": [{"name": "x", "path": "/hubs/x", "auth": "basic"}]}}),
     "'/config/hubs/0/auth'"),
    ("bad Redis prefix", merged(MINIMAL, {"redis": {"prefix": "a b"}}), "'/redis/prefix'"),
    ("a password in redis.url",
     merged(MINIMAL, {"redis": {"url": "redis://:hunter2@r:6379/0"}}), "redis.url holds a password"),
    ("unknown redis.mode", merged(MINIMAL, {"redis": {"mode": "replicated"}}), "'/redis/mode'"),
    ("cluster mode with the in-chart Redis",
     {"auth": dict(KEYS), "redis": {**CLUSTER, "inChart": {"enabled": True}}},
     "redis.inChart.enabled deploys a standalone Redis, but redis.mode is cluster"),
    ("sentinel mode with the in-chart Redis",
     {"auth": dict(KEYS), "redis": {**SENTINEL, "inChart": {"enabled": True}}},
     "redis.inChart.enabled deploys a standalone Redis, but redis.mode is sentinel"),
    ("cluster mode without nodes", {"auth": dict(KEYS), "redis": {"mode": "cluster"}},
     "redis.mode=cluster needs its nodes: set redis.cluster.nodes"),
    ("sentinel mode without nodes", {"auth": dict(KEYS), "redis": {"mode": "sentinel"}},
     "redis.mode=sentinel needs its nodes: set redis.sentinel.nodes"),
    ("cluster mode with redis.url", merged(MINIMAL, {"redis": {**CLUSTER, "url": "redis://r:6379"}}),
     "redis.url is for redis.mode=standalone"),
    ("cluster nodes without cluster mode",
     merged(MINIMAL, {"redis": {"cluster": {"nodes": ["r-0:6379"]}}}),
     "redis.cluster.nodes is set, but redis.mode is standalone"),
    ("sentinel nodes in cluster mode",
     {"auth": dict(KEYS), "redis": {**CLUSTER, "sentinel": {"nodes": ["s-0:26379"]}}},
     "redis.sentinel.nodes is set, but redis.mode is cluster"),
    ("cluster TLS without cluster mode", merged(MINIMAL, {"redis": {"cluster": {"tls": True}}}),
     "redis.cluster.tls is set, but redis.mode is standalone"),
    ("cluster nodes and a URL Secret",
     {"auth": dict(KEYS), "redis": {**CLUSTER, "existingSecret": "hubcast-redis"}},
     "set only one of redis.cluster.nodes and redis.existingSecret"),
    ("a password Secret in standalone mode",
     merged(MINIMAL, {"redis": {"password": {"existingSecret": "redis-auth"}}}),
     "redis.password.existingSecret is used only with redis.mode=cluster or sentinel"),
    ("a password Secret with a URL Secret",
     {"auth": dict(KEYS), "redis": {"mode": "cluster", "existingSecret": "hubcast-redis",
                                    "password": {"existingSecret": "redis-auth"}}},
     "with redis.existingSecret the password belongs in that URL"),
    ("cluster TLS with a URL Secret",
     {"auth": dict(KEYS), "redis": {"mode": "cluster", "existingSecret": "hubcast-redis",
                                    "cluster": {"tls": True}}},
     "write rediss+cluster:// in that URL"),
    ("a seed node without a port",
     {"auth": dict(KEYS), "redis": {"mode": "cluster", "cluster": {"nodes": ["r-0"]}}},
     "'/redis/cluster/nodes/0'"),
    ("an empty Sentinel master name",
     {"auth": dict(KEYS), "redis": {**SENTINEL, "sentinel": {"nodes": ["s-0:26379"],
                                                             "masterName": ""}}},
     "'/redis/sentinel/masterName'"),
    ("HPA without a metric", merged(MINIMAL, {"autoscaling": {
        "enabled": True, "targetCPUUtilizationPercentage": 0}}), "needs a metric"),
]


# --------------------------------------------------------------------------- helpers


def helm():
    import helm_python  # noqa: PLC0415 (imported late so a missing package is one failure)

    return helm_python


def render(values: dict[str, Any]) -> dict[str, str]:
    """Template path → rendered text (NOTES.txt included), as `helm install` would."""
    with helm().Chart.load(CHART) as chart:
        return chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)


@functools.cache
def rendered(variant: str) -> dict[str, str]:
    return render(VARIANTS[variant])


@functools.cache
def documents(variant: str) -> list[dict[str, Any]]:
    """Every Kubernetes object of a variant's rendering."""
    docs = []
    for path, text in sorted(rendered(variant).items()):
        if not path.endswith((".yaml", ".yml")):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                docs.append(doc)
    return docs


def objects(variant: str, kind: str) -> list[dict[str, Any]]:
    return [d for d in documents(variant) if d.get("kind") == kind]


def one(variant: str, kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in objects(variant, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"{variant}: expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


@functools.cache
def written(variant: str) -> Path:
    """Writes each object of a variant to target/helm-check/<variant>/NN-kind-name.yaml."""
    out = OUT / variant
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for i, doc in enumerate(documents(variant)):
        name = f"{i:02d}-{doc['kind'].lower()}-{doc['metadata']['name']}.yaml"
        (out / name).write_text(yaml.safe_dump(doc, sort_keys=False))
    # The templates' own text too, comments and all, for yamllint.
    raw = out / "raw"
    raw.mkdir()
    for path, text in rendered(variant).items():
        if path.endswith(".yaml") and text.strip():
            (raw / Path(path).name).write_text(text if text.endswith("\n") else text + "\n")
    return out


def container(variant: str) -> dict[str, Any]:
    deployment = one(variant, "Deployment", f"{RELEASE}-hubcast")
    return deployment["spec"]["template"]["spec"]["containers"][0]


def env_of(variant: str) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container(variant)["env"]}


def config_toml(variant: str) -> str:
    return one(variant, "ConfigMap", f"{RELEASE}-hubcast")["data"]["hubcast.toml"]


def run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is not installed (bash scripts/check-chart.sh installs it)"
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env() -> dict[str, str]:
    """This process's environment without any HUBCAST_* or RUST_LOG setting."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("HUBCAST_") and k != "RUST_LOG"}


@functools.cache
def binary() -> Path:
    """HUBCAST_BIN, else the debug build in cargo's target directory (built with
    `cargo build --bin hubcast` when missing)."""
    override = os.environ.get("CHECK_CHART_BIN") or os.environ.get("HUBCAST_BIN")
    if override:
        return Path(override)
    meta = run(["cargo", "metadata", "--format-version", "1", "--no-deps"], cwd=ROOT)
    assert meta.returncode == 0, meta.stderr
    path = Path(json.loads(meta.stdout)["target_directory"]) / "debug" / "hubcast"
    if not path.exists():
        print(f"  (building {path}: cargo build --bin hubcast)", flush=True)
        r = subprocess.run(["cargo", "build", "--bin", "hubcast"], cwd=ROOT,
                           capture_output=True, text=True, timeout=1800)
        assert r.returncode == 0, f"cargo build failed:\n{r.stderr[-3000:]}"
    return path


@functools.cache
def binary_env_names() -> frozenset[str]:
    r = run([str(binary()), "--help"], env=clean_env())
    assert r.returncode == 0, r.stderr
    names = frozenset(re.findall(r"\[env: (HUBCAST_[A-Z0-9_]+)", r.stdout))
    assert names, "no [env: HUBCAST_…] entries in hubcast --help"
    return names


def stays_up(cmd: list[str], env: dict[str, str], seconds: float = 1.0) -> None:
    """Starts cmd, asserts it is still running after `seconds`, then stops it."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                _, err = proc.communicate()
                raise AssertionError(f"exited with {proc.returncode} within {seconds} s:\n{err}")
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def http(method: str, url: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def rule_groups(variant: str) -> list[dict[str, Any]]:
    return one(variant, "PrometheusRule")["spec"]["groups"]


def alerts(variant: str) -> list[dict[str, Any]]:
    return [r for g in rule_groups(variant) for r in g["rules"] if "alert" in r]


def metric_names(expr: str) -> set[str]:
    """hubcast_* series an expression reads, histogram suffixes removed."""
    names = set(re.findall(r"\b(hubcast_[a-z0-9_]+)", expr))
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}


# --------------------------------------------------------------------------- chart checks


def test_chart_metadata():
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert meta["apiVersion"] == "v2"
    assert str(meta["appVersion"]) == "0.1.0"
    cargo = (ROOT / "Cargo.toml").read_text()
    version = re.search(r'^version\s*=\s*"([^"]+)"', cargo, re.M).group(1)
    assert str(meta["appVersion"]) == version, f"appVersion != Cargo.toml version {version}"


def test_chart_sources_yamllint():
    files = [CHART / "Chart.yaml", CHART / "values.yaml"]
    r = run([tool("yamllint"), "-d", "relaxed", "-f", "parsable", *map(str, files)])
    assert r.returncode == 0, r.stdout + r.stderr
    json.loads((CHART / "values.schema.json").read_text())


def test_every_value_is_commented_and_in_the_schema():
    """Each key of values.yaml has a comment line right above it (or above its first
    sibling group) and a place in values.schema.json; the schema closes every object it
    describes key by key."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    missing: list[str] = []

    def walk(value: Any, node: dict[str, Any], path: str) -> None:
        if not isinstance(value, dict) or "properties" not in node:
            return
        assert node.get("additionalProperties") is False, f"{path or '/'}: schema is open"
        for key, sub in value.items():
            if key not in node["properties"]:
                missing.append(f"{path}.{key}".lstrip("."))
                continue
            walk(sub, node["properties"][key], f"{path}.{key}")

    walk(values, schema, "")
    assert not missing, f"values without a schema entry: {missing}"

    lines = (CHART / "values.yaml").read_text().splitlines()

    def commented(i: int, marker: str = "#") -> bool:
        """Line i has a comment block right above it, whose first line starts with marker."""
        j = i - 1
        while j >= 0 and lines[j].strip().startswith("#"):
            j -= 1
        return j < i - 1 and lines[j + 1].strip().startswith(marker)

    def ancestors(i: int):
        indent = len(lines[i]) - len(lines[i].lstrip())
        for j in range(i - 1, -1, -1):
            text = lines[j].strip()
            if not text or text.startswith("#"):
                continue
            ind = len(lines[j]) - len(lines[j].lstrip())
            if ind < indent:
                yield j
                indent = ind

    uncommented = []
    for i, line in enumerate(lines):
        m = re.match(r"^\s*([\w./-]+):(.*)$", line)
        if not m or not m.group(2).strip():
            continue  # not a key, or a group: its leaves carry the comments
        # A leaf needs a comment right above it, unless an enclosing key documents the
        # whole default object ("# -- …" above resources:, behavior:, annotations:, …).
        if commented(i) or any(commented(a, "# --") for a in ancestors(i)):
            continue
        uncommented.append(f"line {i + 1}: {line.strip()}")
    assert not uncommented, "values without a comment:\n" + "\n".join(uncommented)


def check_variant_renders(variant: str) -> None:
    kinds = sorted(d["kind"] for d in documents(variant))
    assert "Deployment" in kinds and "ConfigMap" in kinds, kinds
    notes = rendered(variant).get("hubcast/templates/NOTES.txt", "")
    assert "kubectl" in notes and "curl" in notes, "NOTES.txt lacks the first steps"


def check_variant_lint(variant: str) -> None:
    report = helm().lint(CHART, VARIANTS[variant], strict=True, namespace=NAMESPACE,
                         kube_version="v1.30.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    assert not problems, json.dumps(problems, indent=2)


def check_variant_kubernetes_validate(variant: str) -> None:
    out = written(variant)
    files, skipped = [], []
    for f in sorted(out.glob("*.yaml")):
        kind = yaml.safe_load(f.read_text())["kind"]
        (skipped if kind in CRD_KINDS else files).append(f)
    if skipped:
        print(f"    kubernetes-validate: skipped {', '.join(f.name for f in skipped)} "
              "(Prometheus Operator CRD kinds: no bundled schema)")
    # `python3 -m kubernetes_validate` is the kubernetes-validate command, run by the
    # interpreter it was pip-installed for (its script may not be on PATH).
    r = run([sys.executable, "-m", "kubernetes_validate", "--strict", "-k", KUBE_VERSION,
             "--quiet", *map(str, files)])
    assert r.returncode == 0, r.stdout + r.stderr


def check_variant_yamllint(variant: str) -> None:
    out = written(variant)
    r = run([tool("yamllint"), "-d", "relaxed", "-f", "parsable", str(out)])
    assert r.returncode == 0, r.stdout + r.stderr


def check_variant_config_accepted(variant: str) -> None:
    """The binary starts with the rendered hubcast.toml (exit 2 and a message if not)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "hubcast.toml"
        path.write_text(config_toml(variant))
        stays_up([str(binary()), "--config", str(path), "--insecure",
                  "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"],
                 env=clean_env())


def check_variant_env_names(variant: str) -> None:
    set_by_chart = {n for n in env_of(variant) if n.startswith("HUBCAST_")}
    unknown = set_by_chart - binary_env_names()
    assert not unknown, f"the chart sets {sorted(unknown)}, which hubcast --help does not list"




def test_default_deployment():
    deployment = one("default", "Deployment")
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    c = container("default")
    env = env_of("default")
    assert spec["replicas"] == 2
    assert env["HUBCAST_NODE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["HUBCAST_LOG_FORMAT"]["value"] == "json"
    assert env["HUBCAST_CONFIG"]["value"] == "/etc/hubcast/hubcast.toml"
    assert env["HUBCAST_REDIS_URL"]["value"] == "redis://redis.example:6379/0"
    assert "HUBCAST_INSECURE" not in env, "development mode must never be on by default"
    for name, key in [("HUBCAST_ACCESS_KEY", "access-key"), ("HUBCAST_TOKEN_KEY", "token-key"),
                      ("HUBCAST_MASTER_KEY", "master-key")]:
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": f"{RELEASE}-hubcast", "key": key}, ref
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["readinessProbe"]["timeoutSeconds"] > 1, "/readyz may take 1 s"
    assert "startupProbe" not in c
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"http": 8080, "metrics": 9464}
    sleep = int(c["lifecycle"]["preStop"]["exec"]["command"][1])
    drain = -(-int(re.search(r"shutdown_ms = (\d+)", config_toml("default")).group(1)) // 1000)
    assert sleep + drain < pod["terminationGracePeriodSeconds"], (sleep, drain)
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] and sc["runAsNonRoot"]
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
    assert sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["securityContext"]["runAsUser"] == 10001
    assert c["resources"]["requests"]["cpu"], "the HPA's CPU target needs a CPU request"
    keys = {t["topologyKey"] for t in pod["topologySpreadConstraints"]}
    assert keys == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    annotations = spec["template"]["metadata"]["annotations"]
    assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/config"])
    assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/secret"])
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/etc/hubcast"]["readOnly"]
    assert not objects("default", "HorizontalPodAutoscaler")
    assert not objects("default", "ServiceMonitor") and not objects("default", "PrometheusRule")
    assert not objects("default", "Ingress")
    pdb = one("default", "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    services = {s["metadata"]["name"]: s for s in objects("default", "Service")}
    assert services[f"{RELEASE}-hubcast"]["spec"]["ports"][0]["port"] == 8080
    assert services[f"{RELEASE}-hubcast-metrics"]["spec"]["ports"][0]["port"] == 9464
    secret = one("default", "Secret")
    assert base64.b64decode(secret["data"]["access-key"]).decode() == KEYS["accessKey"]


def test_default_config_file_is_the_binarys_defaults():
    """The rendered file states every default the binary has (README's config section)."""
    toml = config_toml("default")
    for line in ["default_hubs = true", "max_record_bytes = 32768", "max_body_bytes = 1048576",
                 "outbound_queue = 1024", "dispatch_queue = 8192",
                 "max_groups_per_connection = 100", "max_connections_per_node = 100000",
                 "max_connections_per_user = 100", "invocations_per_second = 20",
                 "publishes_per_key_per_second = 10000", "max_concurrent_handshakes = 1000",
                 "handshake_ms = 15000", "keepalive_ms = 15000", "client_timeout_ms = 30000",
                 "negotiate_ttl_ms = 15000", "write_timeout_ms = 10000", "shutdown_ms = 10000",
                 "heartbeat_ttl_ms = 10000", "heartbeat_interval_ms = 3000",
                 "redis_command_timeout_ms = 2000", "connect_proxy_timeout_ms = 2000",
                 "connect_proxy_cache_ms = 30000", "allowed_origins = []",
                 "rearm_below_percent = 50", "health_consecutive = 3",
                 "progress_per_second = 4", "task_done_ttl_ms = 600000",
                 "breaker_failures = 5", "breaker_window_ms = 900000",
                 "breaker_half_open_ms = 300000", 'webhook_groups = "hyphen"']:
        assert re.search(rf"^{re.escape(line)}$", toml, re.M), f"missing: {line}"
    for section in ["[limits]", "[timeouts]", "[cluster]", "[security]", "[flows]"]:
        assert section in toml


def test_in_chart_redis():
    env = env_of("in-chart-redis")
    assert env["HUBCAST_REDIS_URL"]["value"] == f"redis://{RELEASE}-hubcast-redis:6379"
    redis = one("in-chart-redis", "Deployment", f"{RELEASE}-hubcast-redis")
    assert redis["spec"]["replicas"] == 1
    assert redis["spec"]["template"]["spec"]["containers"][0]["image"] == "redis:7-alpine"
    one("in-chart-redis", "Service", f"{RELEASE}-hubcast-redis")
    policy = one("in-chart-redis", "NetworkPolicy")
    allowed = policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
    assert allowed == one("in-chart-redis", "Deployment", f"{RELEASE}-hubcast")["spec"][
        "selector"]["matchLabels"], "the NetworkPolicy must admit the hubcast pods"
    # The hubcast Service must not select the Redis pod, nor the reverse.
    svc = one("in-chart-redis", "Service", f"{RELEASE}-hubcast")["spec"]["selector"]
    assert svc["app.kubernetes.io/component"] == "node"
    assert not objects("default", "NetworkPolicy")


def test_monitoring_objects():
    monitor = one("monitoring", "ServiceMonitor")
    metrics_svc = one("monitoring", "Service", f"{RELEASE}-hubcast-metrics")
    selector = monitor["spec"]["selector"]["matchLabels"]
    labels = metrics_svc["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in selector.items()), "ServiceMonitor misses the Service"
    main_svc = one("monitoring", "Service", f"{RELEASE}-hubcast")["metadata"]["labels"]
    assert not all(main_svc.get(k) == v for k, v in selector.items()), \
        "ServiceMonitor must select only the metrics Service"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["metadata"]["labels"]["release"] == "prom"
    hpa = one("monitoring", "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    kinds = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert kinds["Resource"]["resource"]["name"] == "cpu"
    assert kinds["Pods"]["pods"]["metric"]["name"] == "hubcast_connections"
    assert kinds["Pods"]["pods"]["target"]["averageValue"] == "8000"
    assert "replicas" not in one("monitoring", "Deployment")["spec"], \
        "with an HPA the Deployment must not set replicas"
    names = {a["alert"] for a in alerts("monitoring")}
    assert {"HubcastNodeNotReady", "HubcastPublishLatencyHigh", "HubcastDeliveryFailures",
            "HubcastRedisReconnects", "HubcastSlowConsumerEvictions"} <= names, names
    for a in alerts("monitoring"):
        assert a.get("for"), f"{a['alert']} has no for:"
        assert a["labels"]["severity"] in {"info", "warning", "critical"}, a["alert"]
        assert a["labels"]["team"] == "platform"
        assert a["annotations"]["summary"] and a["annotations"]["description"]


def test_prometheus_rules_promtool_check():
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rules.yml"
        path.write_text(yaml.safe_dump({"groups": rule_groups("monitoring")}, sort_keys=False))
        r = run([tool("promtool"), "check", "rules", str(path)])
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"SUCCESS: {len(alerts('monitoring'))} rules found" in r.stdout, r.stdout


def test_prometheus_rules_fire_on_this_release_only():
    """promtool test rules: each alert's expression selects this release's series (job =
    the metrics Service, as the ServiceMonitor labels them) and fires on bad values, and
    not on healthy ones or on another release's."""
    me = f'job="{RELEASE}-hubcast-metrics",namespace="{NAMESPACE}"'
    other = f'job="other-hubcast-metrics",namespace="{NAMESPACE}"'
    series = [
        # Not ready: p1 for the whole run, p2 from minute 20; another release's node too.
        (f'hubcast_ready{{{me},pod="p1"}}', "0x40"),
        (f'hubcast_ready{{{me},pod="p2"}}', "1x19 0x20"),
        (f'hubcast_ready{{{other},pod="o1"}}', "0x40"),
        # Publish latency: hub "slow" around 0.5 s, hub "tasks" under 0.1 s.
        *[(f'hubcast_publish_duration_seconds_bucket{{{me},hub="slow",outcome="accepted",'
           f'le="{le}"}}', inc) for le, inc in [("0.1", "0+0x40"), ("0.5", "0+100x40"),
                                                 ("+Inf", "0+100x40")]],
        *[(f'hubcast_publish_duration_seconds_bucket{{{me},hub="tasks",outcome="accepted",'
           f'le="{le}"}}', "0+100x40") for le in ["0.1", "0.5", "+Inf"]],
        # Deliveries (per minute) and their failures: thresholds are ratios of attempts.
        # tasks: 10/s written, 10/s dispatch_queue_full (half fail: fires).
        (f'hubcast_messages_delivered_total{{{me},hub="tasks"}}', "0+600x40"),
        (f'hubcast_delivery_failures_total{{{me},hub="tasks",reason="dispatch_queue_full"}}',
         "0+600x40"),
        # spend: 100/s written, 0.1/s write_error (0.1 %: below 1 %), and a flood of
        # connection_closed (clients leaving), which counts neither way.
        (f'hubcast_messages_delivered_total{{{me},hub="spend"}}', "0+6000x40"),
        (f'hubcast_delivery_failures_total{{{me},hub="spend",reason="write_error"}}', "0+6x40"),
        (f'hubcast_delivery_failures_total{{{me},hub="spend",reason="connection_closed"}}',
         "0+60000x40"),
        # busy: 10/s write errors, ten times the old absolute threshold, but 0.1 % of 10 000/s.
        (f'hubcast_messages_delivered_total{{{me},hub="busy"}}', "0+600000x40"),
        (f'hubcast_delivery_failures_total{{{me},hub="busy",reason="write_error"}}', "0+600x40"),
        # Slow consumers: tasks evicts 1/min, 900 in 15 min, over 51 000 open connections
        # (1.8 %: fires); spend 0.1/min over 40 000 (0.02 %); another release's many.
        (f'hubcast_delivery_failures_total{{{me},hub="tasks",reason="slow_consumer"}}',
         "0+60x40"),
        (f'hubcast_delivery_failures_total{{{me},hub="spend",reason="slow_consumer"}}',
         "0+6x40"),
        (f'hubcast_delivery_failures_total{{{other},hub="x",reason="slow_consumer"}}',
         "0+6000x40"),
        (f'hubcast_connections{{{other},pod="o1",hub="x"}}', "10x40"),
        # Redis reconnects: p1 once a minute, p2 never.
        (f'hubcast_redis_reconnects_total{{{me},pod="p1"}}', "0+1x40"),
        (f'hubcast_redis_reconnects_total{{{me},pod="p2"}}', "0x40"),
        # Connections: p1 holds 90 000 of 100 000, p2 1 000.
        (f'hubcast_connections{{{me},pod="p1",hub="tasks"}}', "50000x40"),
        (f'hubcast_connections{{{me},pod="p1",hub="spend"}}', "40000x40"),
        (f'hubcast_connections{{{me},pod="p2",hub="tasks"}}', "1000x40"),
    ]
    expected = {  # alert → labels of the one series it must produce at minute 30
        "HubcastNodeNotReady": None,  # two pods at minute 30, checked below
        "HubcastNoNodeReady": "{}",
        "HubcastPublishLatencyHigh": '{hub="slow"}',
        "HubcastDeliveryFailures": '{hub="tasks", reason="dispatch_queue_full"}',
        "HubcastRedisReconnects": f'{{namespace="{NAMESPACE}", pod="p1"}}',
        "HubcastSlowConsumerEvictions": '{hub="tasks"}',
        "HubcastConnectionsNearLimit": f'{{namespace="{NAMESPACE}", pod="p1"}}',
    }
    by_name = {a["alert"]: a["expr"] for a in alerts("monitoring")}
    assert set(expected) == set(by_name), set(by_name) ^ set(expected)
    tests = []
    for name, labels in expected.items():
        expr = by_name[name]
        if name == "HubcastNodeNotReady":
            samples = [{"labels": f'{{namespace="{NAMESPACE}", pod="p1"}}', "value": 0},
                       {"labels": f'{{namespace="{NAMESPACE}", pod="p2"}}', "value": 0}]
            tests.append({"expr": expr, "eval_time": "30m", "exp_samples": samples})
            tests.append({"expr": expr, "eval_time": "10m", "exp_samples": samples[:1]})
            continue
        names = ", ".join(re.findall(r"(\w+)=", labels))
        tests.append({"expr": f"count by ({names}) ({expr})", "eval_time": "30m",
                      "exp_samples": [{"labels": labels, "value": 1}]})
    # Healthy at minute 10: p2 still ready.
    tests.append({"expr": by_name["HubcastNoNodeReady"], "eval_time": "10m", "exp_samples": []})
    # No series of this release at all (nothing running or scraped): NoNodeReady fires.
    absent_test = {"interval": "1m",
                   "input_series": [{"series": f'hubcast_ready{{{other},pod="o1"}}',
                                     "values": "1x10"}],
                   "promql_expr_test": [{"expr": f"count({by_name['HubcastNoNodeReady']})",
                                         "eval_time": "5m",
                                         "exp_samples": [{"labels": "{}", "value": 1}]}]}
    doc = {"rule_files": ["rules.yml"], "evaluation_interval": "1m",
           "tests": [{"interval": "1m",
                      "input_series": [{"series": s, "values": v} for s, v in series],
                      "promql_expr_test": tests}, absent_test]}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "rules.yml").write_text(
            yaml.safe_dump({"groups": rule_groups("monitoring")}, sort_keys=False))
        (Path(tmp) / "test.yml").write_text(yaml.safe_dump(doc, sort_keys=False))
        r = run([tool("promtool"), "test", "rules", "test.yml"], cwd=tmp)
        assert r.returncode == 0, r.stdout + r.stderr


def test_existing_secret_and_ingress():
    assert not objects("existing-secret-ingress", "Secret"), "existingSecret: no chart Secret"
    env = env_of("existing-secret-ingress")
    assert env["HUBCAST_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "hubcast-keys", "key": "access-key"}, "the access key must be required"
    for name in ["HUBCAST_TOKEN_KEY", "HUBCAST_MASTER_KEY"]:
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "hubcast-keys"
    assert env["HUBCAST_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "hubcast-redis", "key": "redis-url"}
    annotations = one("existing-secret-ingress", "Deployment")["spec"]["template"]["metadata"][
        "annotations"]
    assert "checksum/secret" not in annotations
    ingress = one("existing-secret-ingress", "Ingress")
    a = ingress["metadata"]["annotations"]
    assert int(a["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
    assert int(a["nginx.ingress.kubernetes.io/proxy-send-timeout"]) >= 3600
    assert ingress["spec"]["ingressClassName"] == "nginx"
    rule = ingress["spec"]["rules"][0]
    assert rule["host"] == "notify.example.com"
    path = rule["http"]["paths"][0]
    assert path["path"] == "/hubs" and path["backend"]["service"]["port"]["name"] == "http"
    assert ingress["spec"]["tls"][0]["secretName"] == "notify-tls"


def test_custom_config():
    toml = config_toml("custom-config")
    for line in ['[[hubs]]', 'name = "chat"', 'auth = "connect-proxy"', 'allow_broadcast = true',
                 '[[hubs.methods]]', 'join = "room-{0}"', 'each = true', 'args = 1',
                 'reply_args = ["{0}","{connectionId}"]', 'aliases = ["/hubs/hooks"]',
                 '[[flows.rate_limits]]', 'per_second = 2.5', 'burst = 5',
                 'rearm_below_percent = 40.5', 'webhook_groups = "underscore"',
                 'allowed_origins = ["https://app.example.com"]', 'shutdown_ms = 20000']:
        assert line in toml, f"missing: {line}\n{toml}"
    c = container("custom-config")
    assert c["lifecycle"]["preStop"] == {"sleep": {"seconds": 8}}
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
    env = env_of("custom-config")
    assert env["HUBCAST_CONNECT_PROXY_URL"]["value"].startswith("http://")
    assert env["TZ"]["value"] == "UTC"
    assert one("custom-config", "PodDisruptionBudget")["spec"]["minAvailable"] == "50%"


def test_insecure_dev_mode():
    env = env_of("insecure-dev")
    assert env["HUBCAST_INSECURE"]["value"] == "true"
    assert not any(n in env for n in ["HUBCAST_ACCESS_KEY", "HUBCAST_TOKEN_KEY",
                                      "HUBCAST_MASTER_KEY"])
    assert "WARNING" in rendered("insecure-dev")["hubcast/templates/NOTES.txt"]
    assert not objects("insecure-dev", "PodDisruptionBudget")


def redis_env(values: dict[str, Any]) -> list[dict[str, Any]]:
    """The Deployment's REDIS_PASSWORD and HUBCAST_REDIS_URL entries, in their order."""
    for path, text in render(values).items():
        if path.endswith("templates/deployment.yaml"):
            env = yaml.safe_load(text)["spec"]["template"]["spec"]["containers"][0]["env"]
            return [e for e in env if e["name"] in {"REDIS_PASSWORD", "HUBCAST_REDIS_URL"}]
    raise AssertionError("no Deployment rendered")


def test_redis_cluster_and_sentinel_urls():
    """Each mode renders HUBCAST_REDIS_URL from its values; a password comes from a Secret
    through $(REDIS_PASSWORD), defined before the URL so the kubelet expands it."""
    password = {"name": "REDIS_PASSWORD",
                "valueFrom": {"secretKeyRef": {"name": "hubcast-redis-auth", "key": "auth-token"}}}
    url = ("redis+cluster://:$(REDIS_PASSWORD)@clustercfg.notify.example.com:6379,"
           "redis-1.notify.example.com:6380")
    assert [e for e in container("redis-cluster")["env"]
            if e["name"] in {"REDIS_PASSWORD", "HUBCAST_REDIS_URL"}] == [
        password, {"name": "HUBCAST_REDIS_URL", "value": url}]
    tls = merged(VARIANTS["redis-cluster"], {"redis": {"cluster": {"tls": True}}})
    assert redis_env(tls) == [password, {"name": "HUBCAST_REDIS_URL",
                                         "value": url.replace("redis+", "rediss+", 1)}]
    bitnami = {"name": "REDIS_PASSWORD",
               "valueFrom": {"secretKeyRef": {"name": "cache-redis", "key": "redis-password"}}}
    assert redis_env(VARIANTS["redis-sentinel"]) == [
        bitnami, {"name": "HUBCAST_REDIS_URL",
                  "value": "redis+sentinel://:$(REDIS_PASSWORD)@cache-redis:26379/mymaster"}]
    cases = [
        ("cluster, no password, no TLS",
         {"mode": "cluster", "cluster": {"nodes": ["r-0:6379", "r-1:6379", "[fd00::5]:7000"]}},
         "redis+cluster://r-0:6379,r-1:6379,[fd00::5]:7000"),
        ("sentinel with TLS, no password",
         {"mode": "sentinel", "sentinel": {"nodes": ["s-0:26379", "s-1:26379"],
                                           "masterName": "cache", "tls": True}},
         "rediss+sentinel://s-0:26379,s-1:26379/cache"),
    ]
    for label, redis, expected in cases:
        env = redis_env({"auth": dict(KEYS), "redis": redis})
        assert env == [{"name": "HUBCAST_REDIS_URL", "value": expected}], f"{label}: {env}"
    for mode in ["cluster", "sentinel"]:
        env = redis_env({"auth": dict(KEYS), "redis": {"mode": mode,
                                                       "existingSecret": "hubcast-redis"}})
        assert env == [{"name": "HUBCAST_REDIS_URL", "valueFrom": {"secretKeyRef": {
            "name": "hubcast-redis", "key": "redis-url"}}}], f"{mode} with a URL Secret: {env}"
    # Neither the ConfigMap nor the chart's Secret carries the Redis URL or password.
    for variant in ["redis-cluster", "redis-sentinel"]:
        text = json.dumps(one(variant, "ConfigMap"))
        assert "redis+" not in text and "REDIS_PASSWORD" not in text, text
        assert set(one(variant, "Secret")["data"]) == {"access-key", "token-key", "master-key"}
    notes = rendered("redis-cluster")["hubcast/templates/NOTES.txt"]
    assert "Redis Cluster, seed nodes clustercfg.notify.example.com:6379" in notes, notes
    notes = rendered("redis-sentinel")["hubcast/templates/NOTES.txt"]
    assert 'master "mymaster" of Sentinels cache-redis:26379' in notes, notes


def test_invalid_values_are_refused():
    failures = []
    for label, values, needle in REFUSED:
        try:
            render(values)
        except helm().HelmError as e:
            if needle not in str(e):
                failures.append(f"{label}: message does not name '{needle}': {e}")
            continue
        failures.append(f"{label}: rendered without error")
    assert not failures, "\n".join(failures)


def test_first_install_with_no_values():
    """`helm install` with no values: two nodes, the in-chart Redis they point at, and the
    three keys generated into the chart's Secret, which is kept across uninstalls."""
    assert one("bare", "Deployment", f"{RELEASE}-hubcast")["spec"]["replicas"] == 2
    assert env_of("bare")["HUBCAST_REDIS_URL"]["value"] == f"redis://{RELEASE}-hubcast-redis:6379"
    one("bare", "Deployment", f"{RELEASE}-hubcast-redis")
    one("bare", "Service", f"{RELEASE}-hubcast-redis")
    one("bare", "NetworkPolicy")
    secret = one("bare", "Secret")
    assert secret["metadata"]["name"] == f"{RELEASE}-hubcast"
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    keys = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert set(keys) == {"access-key", "token-key", "master-key"}, keys
    for name, key in keys.items():
        assert re.fullmatch(r"[A-Za-z0-9]{48}", key), f"{name}: {key!r}"
    assert len(set(keys.values())) == 3, "each key must be generated on its own"
    env = env_of("bare")
    for name, key in [("HUBCAST_ACCESS_KEY", "access-key"), ("HUBCAST_TOKEN_KEY", "token-key"),
                      ("HUBCAST_MASTER_KEY", "master-key")]:
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": f"{RELEASE}-hubcast",
                                                          "key": key}, env[name]
    # Another install (nothing to look up) generates other keys: they are random.
    again = [d for path, text in render({}).items() if path.endswith("secret.yaml")
             for d in yaml.safe_load_all(text) if d]
    assert again[0]["data"]["access-key"] != secret["data"]["access-key"]
    # A Redis named any other way turns the in-chart one off by itself.
    for variant in ["default", "existing-secret-ingress", "redis-cluster", "redis-sentinel"]:
        names = [d["metadata"]["name"] for d in objects(variant, "Deployment")]
        assert names == [f"{RELEASE}-hubcast"], f"{variant}: {names}"
    # Keys given as values are used as they are; generation fills in only what is missing.
    partial = render({"auth": {"accessKey": KEYS["accessKey"]}})
    data = yaml.safe_load(partial["hubcast/templates/secret.yaml"])["data"]
    assert base64.b64decode(data["access-key"]).decode() == KEYS["accessKey"]
    assert re.fullmatch(r"[A-Za-z0-9]{48}", base64.b64decode(data["token-key"]).decode())
    # Without generation only the keys given are in the Secret and the environment.
    given = render({"auth": {"generate": False, "accessKey": "a" * 32},
                    "config": {"default_hubs": False, "hubs": [
                        {"name": "open", "path": "/hubs/open", "auth": "none"}]}})
    data = yaml.safe_load(given["hubcast/templates/secret.yaml"])["data"]
    assert set(data) == {"access-key"}, data
    assert "HUBCAST_TOKEN_KEY" not in given["hubcast/templates/deployment.yaml"]


def render_secret_data(values: dict[str, Any], existing: dict[str, Any] | None) -> dict[str, str]:
    """hubcast.secretData as secret.yaml calls it, with `existing` standing in for what
    `lookup` returns from a cluster (helm template and this SDK have no cluster, so their
    lookup always returns an empty dict): rendered from a copy of the chart with one more
    template that passes the fake Secret in. Key name → decoded value."""
    with tempfile.TemporaryDirectory() as tmp:
        chart = Path(tmp) / "hubcast"
        shutil.copytree(CHART, chart)
        fake = json.dumps(existing if existing is not None else {})
        (chart / "templates" / "zz-secret-data.yaml").write_text(
            "{{- $existing := " + json.dumps(fake) + " | fromJson }}\n"
            'secretData: {{ include "hubcast.secretData" (dict "root" . "existing" $existing) '
            "| quote }}\n")
        with helm().Chart.load(chart) as c:
            out = c.render(values, name=RELEASE, namespace=NAMESPACE, is_install=False)
    data = json.loads(yaml.safe_load(out["hubcast/templates/zz-secret-data.yaml"])["secretData"])
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def test_generated_keys_are_kept_across_upgrades():
    """The reuse path of the key generation: on an upgrade secret.yaml's lookup finds the
    Secret of the install, and every key not given as a value is read back from it rather
    than generated anew (a new token key would void every client token). The lookup
    itself needs a cluster; what it returns is injected here, and the lookup call is
    checked to name exactly the Secret the template creates."""
    stored = {"access-key": "stored-access-0123456789abcdef0123456789",
              "token-key": "stored-token-0123456789abcdef01234567890",
              "master-key": "stored-master-0123456789abcdef0123456789"}
    lookup_result = {"apiVersion": "v1", "kind": "Secret",
                     "metadata": {"name": f"{RELEASE}-hubcast", "namespace": NAMESPACE},
                     "data": {k: base64.b64encode(v.encode()).decode() for k, v in stored.items()}}
    assert render_secret_data({}, lookup_result) == stored, "stored keys must be reused"
    # A key given as a value wins over the stored one (rotation through values).
    rotated = render_secret_data({"auth": {"tokenKey": KEYS["tokenKey"]}}, lookup_result)
    assert rotated == {**stored, "token-key": KEYS["tokenKey"]}, rotated
    # A key missing from the stored Secret (say, one added to the chart later) is generated.
    partial = dict(lookup_result, data={"access-key": lookup_result["data"]["access-key"]})
    got = render_secret_data({}, partial)
    assert got["access-key"] == stored["access-key"]
    assert re.fullmatch(r"[A-Za-z0-9]{48}", got["token-key"]), got
    # Nothing found (first install): all three generated.
    fresh = render_secret_data({}, {})
    assert all(re.fullmatch(r"[A-Za-z0-9]{48}", v) for v in fresh.values()) and len(fresh) == 3
    # Key names of auth.existingSecretKeys are honoured on the way back too.
    renamed = {"auth": {"existingSecretKeys": {"accessKey": "publish"}}}
    old = dict(lookup_result, data={"publish": lookup_result["data"]["access-key"]})
    assert render_secret_data(renamed, old)["publish"] == stored["access-key"]
    # The lookup reads the Secret the template writes: same namespace, same name.
    text = (CHART / "templates" / "secret.yaml").read_text()
    assert re.search(r'\$name := include "hubcast.fullname" \.', text), text
    assert 'lookup "v1" "Secret" .Release.Namespace $name' in text, text
    assert re.search(r"^  name: \{\{ \$name \}\}$", text, re.M), text
    assert re.search(r"^  namespace: \{\{ \.Release\.Namespace \}\}$", text, re.M), text


def test_one_message_lists_every_missing_value():
    """Values missing several things stop the rendering once, with all of them listed."""
    values = {"redis": {"inChart": {"enabled": False}}, "auth": {"generate": False},
              "config": {"timeouts": {"keepalive_ms": 30000}}}
    try:
        render(values)
    except helm().HelmError as e:
        text = str(e)
    else:
        raise AssertionError("rendered without error")
    assert "(5 to fix)" in text, text
    for needle in ["redis.url", "redis.existingSecret", "redis.cluster.nodes",
                   "redis.sentinel.nodes", "set auth.existingSecret", "set auth.tokenKey",
                   "set auth.masterKey", "keepalive_ms"]:
        assert needle in text, f"missing {needle!r} in:\n{text}"
    assert text.count("hubcast cannot be installed") == 1, text


def test_notes_first_steps():
    notes = rendered("bare")["hubcast/templates/NOTES.txt"]
    for needle in [
        f"kubectl -n {NAMESPACE} exec deployment/{RELEASE}-hubcast -- "
        "hubcast token --hub tasks --user u1 --ttl 1h",
        f"kubectl -n {NAMESPACE} get secret {RELEASE}-hubcast",
        "-o jsonpath='{.data.token-key}' | base64 -d",
        "-o jsonpath='{.data.access-key}' | base64 -d",
        "helm.sh/resource-policy: keep",
        f"helm test {RELEASE} -n {NAMESPACE}",
        f"the in-chart single-replica Redis {RELEASE}-hubcast-redis",
    ]:
        assert needle in notes, f"NOTES.txt lacks: {needle}\n{notes}"
    notes = rendered("existing-secret-ingress")["hubcast/templates/NOTES.txt"]
    assert "get secret hubcast-keys" in notes and "were generated" not in notes, notes
    assert "hubcast token" not in rendered("insecure-dev")["hubcast/templates/NOTES.txt"]


def test_grafana_dashboard_configmap():
    chart_copy = CHART / "dashboards" / "hubcast.json"
    assert chart_copy.read_bytes() == (ROOT / "grafana" / "hubcast.json").read_bytes(), (
        "helm/hubcast/dashboards/hubcast.json must be a copy of grafana/hubcast.json: "
        "cp grafana/hubcast.json helm/hubcast/dashboards/")
    cm = one("monitoring", "ConfigMap", f"{RELEASE}-hubcast-grafana")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == NAMESPACE
    dashboard = json.loads(cm["data"]["hubcast.json"])
    assert dashboard == json.loads(chart_copy.read_text())
    assert "datasource" in [v["name"] for v in dashboard["templating"]["list"]], \
        "the dashboard must pick its datasource itself (the sidecar sets none)"
    assert not [c for c in objects("default", "ConfigMap")
                if c["metadata"]["name"].endswith("-grafana")], "off by default"
    custom = render(merged(MINIMAL, {"metrics": {"grafanaDashboard": {
        "enabled": True, "namespace": "monitoring", "labels": {"dashboards": "hubcast"},
        "annotations": {"grafana_folder": "hubcast"}}}}))
    cm = yaml.safe_load(custom["hubcast/templates/grafana-dashboard.yaml"])
    assert cm["metadata"]["namespace"] == "monitoring"
    # Helm merges maps: the default label stays unless set to null.
    assert cm["metadata"]["labels"]["dashboards"] == "hubcast"
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    only = render(merged(MINIMAL, {"metrics": {"grafanaDashboard": {
        "enabled": True, "labels": {"grafana_dashboard": None, "dashboards": "hubcast"}}}}))
    labels = yaml.safe_load(only["hubcast/templates/grafana-dashboard.yaml"])["metadata"]["labels"]
    assert "grafana_dashboard" not in labels and labels["dashboards"] == "hubcast", labels
    assert cm["metadata"]["annotations"] == {"grafana_folder": "hubcast"}


def helm_test_pod(variant: str) -> dict[str, Any]:
    return one(variant, "Pod", f"{RELEASE}-hubcast-test")


def test_helm_test_pod():
    pod = helm_test_pod("bare")
    a = pod["metadata"]["annotations"]
    assert a["helm.sh/hook"] == "test"
    assert "hook-succeeded" in a["helm.sh/hook-delete-policy"]
    assert pod["spec"]["restartPolicy"] == "Never"
    c = pod["spec"]["containers"][0]
    assert c["command"][:2] == ["python3", "-c"]
    assert c["command"][2].strip() == (CHART / "files" / "helm-test.py").read_text().strip()
    env = {e["name"]: e for e in c["env"]}
    assert env["HUBCAST_URL"]["value"] == f"http://{RELEASE}-hubcast:8080"
    assert env["HUB"]["value"] == "tasks" and env["HUB_PATH"]["value"] == "/hubs/tasks"
    assert env["ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["key"] == "access-key"
    assert env["TOKEN_KEY"]["valueFrom"]["secretKeyRef"]["name"] == f"{RELEASE}-hubcast"
    env = {e["name"]: e for e in helm_test_pod("existing-secret-ingress")["spec"]["containers"][0]["env"]}
    assert env["TOKEN_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "hubcast-keys"
    # A hub of config.hubs is reached on its own path.
    custom = render(merged(MINIMAL, {"helmTest": {"hub": "alerts"}, "config": {"hubs": [
        {"name": "alerts", "path": "/realtime/alerts"}]}}))
    pod = yaml.safe_load(custom["hubcast/templates/tests/test-publish.yaml"])
    env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
    assert env["HUB_PATH"]["value"] == "/realtime/alerts"
    off = render(merged(MINIMAL, {"helmTest": {"enabled": False}}))
    assert not off.get("hubcast/templates/tests/test-publish.yaml", "").strip()


def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors of a Markdown text."""
    out = set()
    for line in markdown.splitlines():
        m = re.match(r"^#{1,6}\s+(.*)$", line)
        if m:
            slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            out.add(slug)
    return out


def test_alert_runbooks():
    """Every alert links a section of docs/operations.md that exists."""
    known = anchors((ROOT / "docs" / "operations.md").read_text())
    for a in alerts("monitoring"):
        url = a["annotations"].get("runbook_url", "")
        base, _, anchor = url.partition("#")
        assert base == "docs/operations.md", f"{a['alert']}: {url}"
        assert anchor == a["alert"].lower(), f"{a['alert']}: {url}"
        assert anchor in known, f"{a['alert']}: no section #{anchor} in docs/operations.md"
    custom = render(merged(MINIMAL, {"metrics": {"prometheusRule": {
        "enabled": True, "runbookBaseUrl": "https://git.example.com/ops.md"}}}))
    rule = yaml.safe_load(custom["hubcast/templates/prometheusrule.yaml"])
    urls = {r["annotations"]["runbook_url"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert all(u.startswith("https://git.example.com/ops.md#") for u in urls), urls


# Secrets the existing-secret variant names, as an operator would have created them.
EXISTING_SECRETS = {
    "hubcast-keys": {"access-key": KEYS["accessKey"], "token-key": KEYS["tokenKey"],
                     "master-key": KEYS["masterKey"]},
    "hubcast-redis": {"redis-url": "redis://replaced-by-the-check:6379"},
    "hubcast-redis-auth": {"auth-token": "replaced-by-the-check"},
    "cache-redis": {"redis-password": "replaced-by-the-check"},
}


def free_cluster_port(taken: set[int]) -> int:
    """A port below 50000 that, with its cluster bus port (+10000), is free on 127.0.0.1
    and clear of `taken` (ports and bus ports already handed out)."""
    import random  # noqa: PLC0415

    for _ in range(200):
        port = random.randrange(20000, 40000)
        if {port, port + 10000} & taken:
            continue
        try:
            for p in (port, port + 10000):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", p))
        except OSError:
            continue
        taken |= {port, port + 10000}
        return port
    raise AssertionError("no free port pair below 50000")


def redis_cli(port: int, password: str | None, *args: str) -> str:
    auth = ["-a", password, "--no-auth-warning"] if password else []
    r = run([tool("redis-cli"), "-h", "127.0.0.1", "-p", str(port), *auth, *args])
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def wait_until(what: str, check: Callable[[], bool], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (AssertionError, OSError, subprocess.SubprocessError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out after {seconds} s waiting for {what}")


def spawn_redis(port: int, tmp: Path, *args: str, sentinel: bool = False) -> subprocess.Popen:
    name = f"redis-{port}"
    if sentinel:
        conf = tmp / f"sentinel-{port}.conf"
        conf.write_text("\n".join(args) + "\n")
        cmd = [tool("redis-sentinel"), str(conf), "--port", str(port), "--bind", "127.0.0.1",
               "--dir", str(tmp)]
    else:
        (tmp / name).mkdir()
        cmd = [tool("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--dir", str(tmp / name), *args]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def hosts_of(url: str) -> tuple[str, str, list[str], str]:
    """scheme, userinfo (with its @), host:port list and path of a multi-host URL."""
    m = re.fullmatch(r"([a-z+]+)://([^@/]*@)?([^/]+)(/.*)?", url)
    assert m, f"not a multi-host URL: {url}"
    return m.group(1), m.group(2) or "", m.group(3).split(","), m.group(4) or ""


def local_standalone(url: str, env: dict[str, str], tmp: Path,
                     procs: list[subprocess.Popen]) -> str:
    """A throw-away redis-server in place of whatever the rendering names."""
    port = free_port()
    procs.append(spawn_redis(port, tmp))
    wait_until("redis-server", lambda: redis_cli(port, None, "ping").strip() == "PONG")
    return f"redis://127.0.0.1:{port}"


def local_cluster(url: str, env: dict[str, str], tmp: Path,
                  procs: list[subprocess.Popen]) -> str:
    """A three-master Redis Cluster that requires the rendered password; the rendered URL
    with its seed hosts replaced by two of the local masters."""
    scheme, userinfo, hosts, path = hosts_of(url)
    assert scheme == "redis+cluster" and not path, url
    password = env.get("REDIS_PASSWORD")
    assert (userinfo == f":{password}@") if password else not userinfo, url
    taken: set[int] = set()
    ports = [free_cluster_port(taken) for _ in range(3)]
    auth = ["--requirepass", password, "--masterauth", password] if password else []
    for port in ports:
        procs.append(spawn_redis(port, tmp, "--cluster-enabled", "yes", "--cluster-config-file",
                                 "nodes.conf", "--cluster-node-timeout", "2000", *auth))
    for port in ports:
        wait_until("cluster redis-server", lambda p=port: redis_cli(p, password, "ping").strip()
                   == "PONG")
    redis_cli(ports[0], password, "--cluster", "create",
              *[f"127.0.0.1:{p}" for p in ports], "--cluster-replicas", "0", "--cluster-yes")
    wait_until("cluster_state:ok", lambda: all(
        "cluster_state:ok" in redis_cli(p, password, "cluster", "info") for p in ports))
    local = [f"127.0.0.1:{p}" for p in ports][:len(hosts)]
    return f"{scheme}://{userinfo}{','.join(local)}"


def local_sentinel(url: str, env: dict[str, str], tmp: Path,
                   procs: list[subprocess.Popen]) -> str:
    """A master that requires the rendered password and one Sentinel monitoring it under
    the rendered master name; the rendered URL with the Sentinel's local address."""
    scheme, userinfo, hosts, path = hosts_of(url)
    assert scheme == "redis+sentinel", url
    master_name = path.strip("/").split("/")[0]
    password = env.get("REDIS_PASSWORD")
    assert (userinfo == f":{password}@") if password else not userinfo, url
    master, sentinel = free_port(), free_port()
    procs.append(spawn_redis(master, tmp, *(["--requirepass", password] if password else [])))
    wait_until("master", lambda: redis_cli(master, password, "ping").strip() == "PONG")
    conf = [f"sentinel monitor {master_name} 127.0.0.1 {master} 1"]
    # The node gives the URL's password to the Sentinels too.
    if password:
        conf += [f"sentinel auth-pass {master_name} {password}", f"requirepass {password}"]
    procs.append(spawn_redis(sentinel, tmp, *conf, sentinel=True))
    wait_until("sentinel", lambda: redis_cli(
        sentinel, password, "sentinel", "get-master-addr-by-name", master_name).split()[1:2]
        == [str(master)])
    return f"{scheme}://{userinfo}127.0.0.1:{sentinel}{path}"


# The Redis each variant's node check runs against, by the rendered URL's kind.
LOCAL_REDIS = {"redis-cluster": local_cluster, "redis-sentinel": local_sentinel}


def check_variant_node_starts(variant: str) -> None:
    """A node given exactly the Deployment's environment (Secret references resolved from
    the rendered Secret or the operator's, $(VAR) expanded, HUBCAST_NODE_ID from a pod name;
    only the config path and the ports are replaced, by a file and local ports, and the
    Redis by a throw-away one: a redis-server, or for the cluster and sentinel variants a
    local Redis Cluster or master + Sentinel reached through the rendered URL with its
    hosts swapped) starts, becomes ready, accepts a publish with the access key (and
    refuses one without it), exports every metric the alerts and the HPA use, logs in
    the chosen format, and exits 0 on SIGTERM."""
    secrets = {k: dict(v) for k, v in EXISTING_SECRETS.items()}
    for obj in objects(variant, "Secret"):
        secrets[obj["metadata"]["name"]] = {
            k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
    http_port, metrics_port = free_port(), free_port()
    env = clean_env()
    for name, e in env_of(variant).items():
        source = e.get("valueFrom", {})
        if "value" in e:
            # $(VAR) of a variable defined earlier, as the kubelet expands it.
            env[name] = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                               lambda m: env.get(m.group(1), m.group(0)), e["value"])
        elif "fieldRef" in source:
            assert source["fieldRef"]["fieldPath"] == "metadata.name", source
            env[name] = f"{RELEASE}-hubcast-6d4cf56db6-x2x4q"
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            value = secrets.get(ref["name"], {}).get(ref["key"])
            assert value is not None or ref.get("optional"), f"{name}: {ref} does not resolve"
            if value is not None:
                env[name] = value
        else:
            raise AssertionError(f"{name}: unexpected env source {e}")
    insecure = env.get("HUBCAST_INSECURE") == "true"
    json_logs = env.get("HUBCAST_LOG_FORMAT") == "json"
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "hubcast.toml"
        config.write_text(config_toml(variant))
        assert env["HUBCAST_CONFIG"] == "/etc/hubcast/hubcast.toml"
        env.update({"HUBCAST_CONFIG": str(config),
                    "HUBCAST_LISTEN": f"127.0.0.1:{http_port}",
                    "HUBCAST_METRICS_LISTEN": f"127.0.0.1:{metrics_port}"})
        procs: list[subprocess.Popen] = []
        node = None
        try:
            start_redis = LOCAL_REDIS.get(variant, local_standalone)
            env["HUBCAST_REDIS_URL"] = start_redis(env["HUBCAST_REDIS_URL"], env, Path(tmp),
                                                   procs)
            node = subprocess.Popen([str(binary())], env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)
            base = f"http://127.0.0.1:{http_port}"
            deadline, status = time.monotonic() + 15, 0
            while time.monotonic() < deadline and node.poll() is None:
                try:
                    status, _ = http("GET", f"{base}/readyz")
                except OSError:
                    status = 0
                if status == 200:
                    break
                time.sleep(0.2)
            assert node.poll() is None, f"node exited: {node.communicate()[0][-3000:]}"
            assert status == 200, f"/readyz never answered 200 (last {status})"
            body = json.dumps({"target": "TaskProgress", "arguments": ["42", 50]}).encode()
            headers = {"content-type": "application/json"}
            url = f"{base}/api/v1/hubs/tasks/groups/task-42"
            if not insecure:
                status, _ = http("POST", url, body, headers)
                assert status == 401, f"a publish without a key got {status}"
                # The last key of a rotation list works as well as the first.
                headers["authorization"] = f"Bearer {env['HUBCAST_ACCESS_KEY'].split(',')[-1]}"
            status, text = http("POST", url, body, headers)
            assert status == 202, (status, text)
            # The `helm test` Pod's script, with the Pod's environment (the Service
            # replaced by this node): negotiate with a token it signs, then publish.
            test_env = {"PATH": os.environ.get("PATH", ""), "WAIT_SECONDS": "5"}
            for e in helm_test_pod(variant)["spec"]["containers"][0]["env"]:
                if "value" in e:
                    test_env[e["name"]] = e["value"]
                else:
                    ref = e["valueFrom"]["secretKeyRef"]
                    value = secrets.get(ref["name"], {}).get(ref["key"])
                    assert value is not None or ref.get("optional"), f"{e['name']}: {ref}"
                    if value is not None:
                        test_env[e["name"]] = value
            test_env["HUBCAST_URL"] = base
            script = helm_test_pod(variant)["spec"]["containers"][0]["command"]
            r = run([sys.executable, *script[1:]], env=test_env)
            assert r.returncode == 0, f"helm test script failed:\n{r.stdout}{r.stderr}"
            assert "negotiate /hubs/tasks: 200" in r.stdout and "publish to tasks: 202" in r.stdout, \
                r.stdout
            time.sleep(0.2)
            _, scrape = http("GET", f"http://127.0.0.1:{metrics_port}/metrics")
            exported = set(re.findall(r"^(hubcast_[a-z0-9_]+?)(?:_bucket|_sum|_count)?[{ ]",
                                      scrape, re.M))
            used = set().union(*(metric_names(a["expr"]) for a in alerts("monitoring")))
            used |= {m["pods"]["metric"]["name"] for m in
                     one("monitoring", "HorizontalPodAutoscaler")["spec"]["metrics"]
                     if m["type"] == "Pods"}
            assert used <= exported, f"not exported by the node: {sorted(used - exported)}"
            node.send_signal(signal.SIGTERM)
            out, _ = node.communicate(timeout=20)
            assert node.returncode == 0, f"exit {node.returncode} after SIGTERM:\n{out[-2000:]}"
            lines = [line for line in out.splitlines() if line.strip()]
            if json_logs:
                bad = [line for line in lines if not line.startswith("{")]
                assert not bad, f"HUBCAST_LOG_FORMAT=json, yet: {bad[:3]}"
        finally:
            for p in [node, *procs]:
                if p is not None and p.poll() is None:
                    p.terminate()
                    try:
                        p.wait(timeout=15)
                    except subprocess.TimeoutExpired:
                        p.kill()


# --------------------------------------------------------------------------- compose checks


def compose_rules() -> dict[str, Any]:
    """The chart's PrometheusRule groups, scoped to the compose setup's job."""
    values = merged(MINIMAL, {"metrics": {"prometheusRule": {
        "enabled": True, "selector": COMPOSE_SELECTOR}}})
    docs = [d for path, text in render(values).items() if path.endswith(".yaml")
            for d in yaml.safe_load_all(text) if d and d.get("kind") == "PrometheusRule"]
    return {"groups": docs[0]["spec"]["groups"]}


def write_compose_rules() -> None:
    header = ("# Generated from the chart's PrometheusRule (helm/hubcast/templates/"
              "prometheusrule.yaml)\n# with selector job=\"hubcast\" by\n#   python3 "
              "tests/helm/check_chart.py --write-compose-rules\n# Do not edit by hand; "
              "scripts/check-chart.sh checks it matches.\n")
    COMPOSE_RULES.write_text(header + yaml.safe_dump(compose_rules(), sort_keys=False,
                                                      width=100))


def test_compose_rules_match_the_chart():
    on_disk = yaml.safe_load(COMPOSE_RULES.read_text())
    assert on_disk == compose_rules(), (
        f"{COMPOSE_RULES.relative_to(ROOT)} differs from the chart's alerts; regenerate it "
        "with: python3 tests/helm/check_chart.py --write-compose-rules")


def test_compose_files_lint_and_promtool():
    files = [ROOT / "docker-compose.yml", *sorted((ROOT / "deploy").rglob("*.yml"))]
    r = run([tool("yamllint"), "-d", "relaxed", "-f", "parsable", *map(str, files)])
    assert r.returncode == 0, r.stdout + r.stderr
    r = run([tool("promtool"), "check", "config", str(ROOT / "deploy/prometheus/prometheus.yml")])
    assert r.returncode == 0, r.stdout + r.stderr


def test_compose_services():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    nodes = {n: s for n, s in services.items() if n.startswith("hubcast-")}
    assert len(nodes) == 3, sorted(services)
    assert {"redis", "prometheus", "grafana"} <= set(services), sorted(services)
    names = set()
    for name, svc in nodes.items():
        env = svc["environment"]
        names |= {k for k in env if k.startswith("HUBCAST_")}
        assert env["HUBCAST_NODE_ID"] == name
        assert env["HUBCAST_REDIS_URL"] == "redis://redis:6379"
        assert "HUBCAST_INSECURE" not in env
    unknown = names - binary_env_names()
    assert not unknown, f"docker-compose.yml sets {sorted(unknown)}, unknown to hubcast --help"
    prom = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = [t for job in prom["scrape_configs"] for sc in job["static_configs"]
               for t in sc["targets"]]
    assert sorted(targets) == sorted(f"{n}:9464" for n in nodes), targets


def compose_mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path → host path of a compose service's bind mounts."""
    out = {}
    for volume in service.get("volumes", []):
        host, container, *_ = volume.split(":")
        out[container] = (ROOT / host).resolve()
    return out


def test_compose_grafana_provisioning():
    """Grafana in docker-compose.yml: its data source is the compose Prometheus, and its
    dashboard provider reads the folder grafana/hubcast.json is mounted in. Checked
    statically (no Docker here): the files' shape as Grafana's provisioning reads it, and
    that every path and address lines up with the compose services."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    grafana = services["grafana"]
    image, _, tag = grafana["image"].partition(":")
    assert image == "grafana/grafana" and re.fullmatch(r"\d+\.\d+\.\d+", tag), grafana["image"]
    assert "prometheus" in grafana["depends_on"]
    assert all(p.startswith("127.0.0.1:") for p in grafana["ports"]), grafana["ports"]
    assert grafana["ports"] == ["127.0.0.1:3300:3000"], grafana["ports"]
    env = grafana["environment"]
    assert env["GF_SECURITY_ADMIN_PASSWORD"].startswith("${"), "the password comes from the shell"
    mounts = compose_mounts(grafana)
    provisioning = mounts["/etc/grafana/provisioning"]
    assert provisioning == (ROOT / "deploy/grafana/provisioning").resolve()

    # Data sources: one Prometheus, the compose service, on the port it listens on.
    ds_files = sorted((provisioning / "datasources").glob("*.yml"))
    assert ds_files, "no data source provisioning file"
    sources = [d for f in ds_files for d in yaml.safe_load(f.read_text())["datasources"]]
    for f in ds_files:
        assert yaml.safe_load(f.read_text())["apiVersion"] == 1, f
    assert len(sources) == 1 and sources[0]["type"] == "prometheus", sources
    ds = sources[0]
    assert ds["isDefault"] is True and ds["access"] == "proxy"
    m = re.fullmatch(r"http://([a-z0-9-]+):(\d+)", ds["url"])
    assert m and m.group(1) in services, ds["url"]
    prom_service = services[m.group(1)]
    assert prom_service["image"].startswith("prom/prometheus:")
    assert any(p.endswith(f":{m.group(2)}") for p in prom_service["ports"]), (
        f"Prometheus does not listen on {m.group(2)}: {prom_service['ports']}")
    prom = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    assert ds["jsonData"]["timeInterval"] == prom["global"]["scrape_interval"], \
        "timeInterval should be Prometheus's scrape interval"

    # Dashboards: a file provider whose folder is the mount of grafana/.
    db_files = sorted((provisioning / "dashboards").glob("*.yml"))
    providers = [p for f in db_files for p in yaml.safe_load(f.read_text())["providers"]]
    for f in db_files:
        assert yaml.safe_load(f.read_text())["apiVersion"] == 1, f
    assert len(providers) == 1 and providers[0]["type"] == "file", providers
    folder = providers[0]["options"]["path"]
    assert folder in mounts, f"the provider reads {folder}, which compose does not mount"
    assert mounts[folder] == (ROOT / "grafana").resolve()
    dashboards = sorted(mounts[folder].glob("*.json"))
    assert [d.name for d in dashboards] == ["hubcast.json"], dashboards
    dashboard = json.loads(dashboards[0].read_text())
    variable = {v["name"]: v for v in dashboard["templating"]["list"]}["datasource"]
    assert variable["type"] == "datasource" and variable["query"] == ds["type"], variable
    home = env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{folder}/hubcast.json", home
    # The dashboard filters on namespace and pod, which the compose scrape sets.
    labels = [sc["labels"] for job in prom["scrape_configs"] for sc in job["static_configs"]]
    assert all({"namespace", "pod"} <= set(lab) for lab in labels), labels


def test_compose_config_accepted():
    stays_up([str(binary()), "--config", str(ROOT / "deploy/hubcast.toml"), "--insecure",
              "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"], env=clean_env())


def test_dockerfile():
    text = (ROOT / "Dockerfile").read_text()
    for needle in ["cargo build --release --locked --bin hubcast", "USER 10001:10001",
                   "EXPOSE 8080 9464", 'ENTRYPOINT ["/usr/local/bin/hubcast"]']:
        assert needle in text, f"Dockerfile lacks: {needle}"
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert "target" in ignore or "/target" in ignore, ".dockerignore must leave out target/"


def test_dockerfile_build_context_loads():
    """What the build stage COPYs (and .dockerignore lets through) is a workspace Cargo can
    load with --locked: catches a new workspace member or file the Dockerfile misses.
    (`cargo metadata`, not a build: there is no Docker engine here.)"""
    text = (ROOT / "Dockerfile").read_text()
    build_stage = text.split("\nFROM ")[1]
    ignore = [line.strip().rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    with tempfile.TemporaryDirectory() as tmp:
        for line in build_stage.splitlines():
            m = re.match(r"COPY\s+(?!--from)(.+)\s+(\S+)$", line.strip())
            if not m:
                continue
            for source in m.group(1).split():
                excluded = [p for p in ignore if Path(source).match(p) or
                            any(Path(*Path(source).parts[:i + 1]).match(p)
                                for i in range(len(Path(source).parts)))]
                assert not excluded, f"COPY {source}, but .dockerignore excludes it ({excluded})"
                src, dst = ROOT / source, Path(tmp) / source
                dst.parent.mkdir(parents=True, exist_ok=True)
                (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
        r = run(["cargo", "metadata", "--locked", "--offline", "--format-version", "1",
                 "--no-deps"], cwd=tmp)
        assert r.returncode == 0, f"the Docker build context is not a loadable workspace:\n{r.stderr}"
        packages = {p["name"]: p for p in json.loads(r.stdout)["packages"]}
        bins = {t["name"] for t in packages["hubcast"]["targets"] if "bin" in t["kind"]}
        assert "hubcast" in bins, bins
        # Not --offline: resolving every platform's dependencies may need crates this
        # machine never built (macOS-only ones, for instance), and crates.io is reachable.
        r = run(["cargo", "metadata", "--locked", "--format-version", "1"], cwd=tmp)
        assert r.returncode == 0, f"Cargo.lock does not fit the build context:\n{r.stderr[-2000:]}"


# --------------------------------------------------------------------------- runner


VARIANT_CHECKS: list[tuple[str, Callable[[str], None]]] = [
    ("renders", check_variant_renders),
    ("helm lint --strict", check_variant_lint),
    ("kubernetes-validate --strict -k 1.30", check_variant_kubernetes_validate),
    ("yamllint -d relaxed", check_variant_yamllint),
    ("hubcast accepts hubcast.toml", check_variant_config_accepted),
    ("HUBCAST_* names exist in hubcast --help", check_variant_env_names),
    ("a node started with the Deployment's environment works", check_variant_node_starts),
]


def _collect() -> list[tuple[str, Callable[[], None]]]:
    checks: list[tuple[str, Callable[[], None]]] = []
    for variant in VARIANTS:
        for label, fn in VARIANT_CHECKS:
            checks.append((f"{variant}: {label}", functools.partial(fn, variant)))
    for name, fn in globals().items():
        if name.startswith("test_") and callable(fn) and name != "test_variant":
            checks.append((name[5:].replace("_", " "), fn))
    return checks


def test_variant():
    """pytest entry point for the per-variant checks (python3 runs them one by one)."""
    failures = []
    for variant in VARIANTS:
        for label, fn in VARIANT_CHECKS:
            try:
                fn(variant)
            except Exception as e:  # noqa: BLE001
                failures.append(f"{variant}: {label}: {e}")
    assert not failures, "\n".join(failures)


def main() -> int:
    if "--write-compose-rules" in sys.argv:
        write_compose_rules()
        print(f"wrote {COMPOSE_RULES.relative_to(ROOT)}")
        return 0
    passed = failed = 0
    for label, fn in _collect():
        started = time.monotonic()
        try:
            fn()
        except Exception as e:  # noqa: BLE001
            failed += 1
            detail = str(e) if isinstance(e, AssertionError) else traceback.format_exc()
            print(f"FAIL {label}\n     " + detail.strip().replace("\n", "\n     "), flush=True)
        else:
            passed += 1
            print(f"ok   {label} ({time.monotonic() - started:.1f} s)", flush=True)
    print(f"\n{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
