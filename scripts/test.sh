#!/usr/bin/env bash
# The one command that runs every hubcast test on a fresh machine:
#   bash scripts/test.sh
# It installs what is missing (redis-server, the JS client's node modules, the
# Python test packages in .venv inside the repository), builds the server, then
# runs the Rust tests (among them the fault tests on a Redis Cluster and under
# Sentinel), the cluster suites again on a Redis Cluster, the JS suite (official
# @microsoft/signalr client), the chaos suite (faults under load on a three-node
# cluster) and the Python suite (signalrcore).
# Stops at the first failing stage.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

STAGE=0
STAGES=12
stage() {
  STAGE=$((STAGE + 1))
  printf '\n==============================================================\n'
  printf '==> [%d/%d] %s\n' "$STAGE" "$STAGES" "$*"
  printf '==============================================================\n'
}
trap 'rc=$?; if [ "$rc" -ne 0 ]; then printf "\n!!! stage %d/%d failed (exit %d)\n" "$STAGE" "$STAGES" "$rc" >&2; fi' EXIT

# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

stage "system packages (redis-server, redis-sentinel, node, python3)"
if command -v redis-server >/dev/null 2>&1; then
  echo "redis-server: $(command -v redis-server) ($(redis-server --version | head -n1))"
else
  echo "redis-server not found: installing redis-server redis-tools"
  apt_install redis-server redis-tools
fi
if ! command -v redis-sentinel >/dev/null 2>&1; then
  echo "redis-sentinel not found: installing redis-sentinel"
  apt_install redis-sentinel
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "node/npm not found: installing nodejs npm"
  apt_install nodejs npm
fi
echo "node $(node --version), npm $(npm --version)"
ensure_venv
echo "$("$PYTHON" --version) in $VENV"

stage "test dependencies (npm ci in tests/js, pip into .venv for tests/python)"
JS_MARKER="tests/js/node_modules/.package-lock.json"
if [ ! -d tests/js/node_modules ] || [ ! -f "$JS_MARKER" ] \
  || [ tests/js/package-lock.json -nt "$JS_MARKER" ]; then
  echo "tests/js/node_modules missing or older than package-lock.json: npm ci"
  (cd tests/js && npm ci --no-audit --no-fund)
else
  echo "tests/js/node_modules is up to date"
fi
if "$PYTHON" -c 'import signalrcore, pytest, requests' >/dev/null 2>&1; then
  echo "python packages present (signalrcore, pytest, requests)"
else
  echo "installing tests/python/requirements.txt"
  pip_install -r tests/python/requirements.txt
fi

stage "cargo build"
cargo build
HUBCAST_BIN="$(cargo_target_dir)/debug/hubcast"
if [ ! -x "$HUBCAST_BIN" ]; then
  echo "cargo build did not produce $HUBCAST_BIN" >&2
  exit 1
fi
export HUBCAST_BIN

stage "cargo test (unit tests, single node on the in-process backplane, cluster on Redis)"
timeout --kill-after=30 1800 cargo test

stage "cargo test --test api on the Redis backplane (same behaviour tests, real redis-server)"
HUBCAST_TEST_BACKPLANE=redis timeout --kill-after=30 1800 cargo test --test api

stage "cargo test --test cluster --test flows on a Redis Cluster (3 masters, 3 replicas per test)"
HUBCAST_TEST_REDIS=cluster timeout --kill-after=30 1200 cargo test --test cluster --test flows

stage "JS end-to-end tests (node --test, @microsoft/signalr) in tests/js"
(cd tests/js && timeout --kill-after=30 600 node --test --test-reporter=spec)

stage "JS cluster suite on a Redis Cluster (tests/js/cluster.test.mjs)"
(cd tests/js && HUBCAST_TEST_REDIS=cluster timeout --kill-after=30 300 node --test --test-reporter=spec cluster.test.mjs)

stage "Chaos: Redis restarts, CLIENT PAUSE, partitions, kill -9 and SIGTERM under load (tests/chaos)"
CHAOS_MARKER="tests/chaos/node_modules/.package-lock.json"
if [ ! -d tests/chaos/node_modules ] || [ ! -f "$CHAOS_MARKER" ] \
  || [ tests/chaos/package-lock.json -nt "$CHAOS_MARKER" ]; then
  echo "tests/chaos/node_modules missing or older than package-lock.json: npm ci"
  (cd tests/chaos && npm ci --no-audit --no-fund)
else
  echo "tests/chaos/node_modules is up to date"
fi
(cd tests/chaos && timeout --kill-after=30 600 node --test --test-reporter=spec)

stage "Python end-to-end tests (pytest, signalrcore) in tests/python"
timeout --kill-after=30 600 "$PYTHON" -m pytest -q tests/python

stage "Helm chart, image and compose checks (scripts/check-chart.sh)"
timeout --kill-after=30 900 bash scripts/check-chart.sh

stage "Observability: dashboard, PromQL, live scrape, real Prometheus (scripts/check-observability.sh)"
timeout --kill-after=30 900 bash scripts/check-observability.sh

printf '\n==> all %d stages passed\n' "$STAGES"
