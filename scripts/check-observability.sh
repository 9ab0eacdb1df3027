#!/usr/bin/env bash
# Checks the Grafana dashboard (grafana/hubcast.json) and the node's /metrics with real
# tools:
#   bash scripts/check-observability.sh
# (a) the dashboard type-checks against @grafana/schema (tsc --noEmit --strict);
# (b) every PromQL expression in it parses (promtool check rules);
# (c) a live node's scrape passes `promtool check metrics` and holds every metric the
#     dashboard uses (in-process backplane, then a node on a redis-server it starts);
# (d) a real Prometheus scraping two nodes reports exactly the connections, publishes and
#     deliveries the test made, and every dashboard expression evaluates on it.
# It installs what is missing first (prometheus/promtool and redis-server from Debian,
# npm ci in tests/observability, pip for tests/observability/requirements.txt) and builds
# the hubcast binary (in cargo's target directory) if absent. Traffic stays on 127.0.0.1; every process it starts is
# stopped by PID on exit. Ends with "N passed, M failed"; exits non-zero on any failure.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OBS="tests/observability"

# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

WORK="$(mktemp -d -t hubcast-obs.XXXXXX)"
export OBS_WORKDIR="$WORK"
export OBS_PIDFILE="$WORK/pids"
: >"$OBS_PIDFILE"
CHECK_PID=""
cleanup() {
  local rc=$?
  # Stop the checks first (they stop their own processes on TERM), then whatever they
  # started and left running, by PID.
  if [ -n "$CHECK_PID" ] && kill -0 "$CHECK_PID" 2>/dev/null; then
    kill -TERM "$CHECK_PID" 2>/dev/null || true
    wait "$CHECK_PID" 2>/dev/null || true
  fi
  if [ -f "$OBS_PIDFILE" ]; then
    # Each PID is a `timeout` wrapper (it forwards TERM to its child); check that it
    # still is one before signalling, in case the PID was reused.
    ours() { [ -n "$1" ] && [ -r "/proc/$1/cmdline" ] && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q '^timeout '; }
    local left=0
    while read -r pid; do
      if ours "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        left=1
      fi
    done <"$OBS_PIDFILE"
    if [ "$left" -eq 1 ]; then
      sleep 1
      while read -r pid; do
        if ours "$pid"; then
          kill -KILL "$pid" 2>/dev/null || true
        fi
      done <"$OBS_PIDFILE"
    fi
  fi
  if [ "$rc" -eq 0 ] || [ -z "${KEEP_WORK:-}" ]; then
    rm -rf "$WORK"
  else
    echo "work dir kept: $WORK" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "==> tools"
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
  echo "promtool/prometheus not found: installing prometheus"
  apt_install --no-install-recommends prometheus
fi
if ! command -v redis-server >/dev/null 2>&1; then
  echo "redis-server not found: installing redis-server"
  apt_install redis-server
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "node/npm not found: installing nodejs npm"
  apt_install nodejs npm
fi
ensure_venv
echo "$(promtool --version 2>&1 | head -n1)"
echo "$(redis-server --version | head -n1)"
echo "node $(node --version), npm $(npm --version), $("$PYTHON" --version)"

echo "==> dependencies"
MARKER="$OBS/node_modules/.package-lock.json"
if [ ! -d "$OBS/node_modules" ] || [ ! -f "$MARKER" ] || [ "$OBS/package-lock.json" -nt "$MARKER" ]; then
  echo "$OBS/node_modules missing or older than package-lock.json: npm ci"
  (cd "$OBS" && npm ci --no-audit --no-fund)
else
  echo "$OBS/node_modules is up to date"
fi
if "$PYTHON" -c 'import websocket; websocket.create_connection' >/dev/null 2>&1; then
  echo "python package websocket-client present"
else
  echo "installing $OBS/requirements.txt"
  pip_install -r "$OBS/requirements.txt"
fi

echo "==> hubcast binary"
HUBCAST_BIN="$(cargo_target_dir)/debug/hubcast"
if [ ! -x "$HUBCAST_BIN" ]; then
  echo "$HUBCAST_BIN missing: cargo build"
  cargo build
fi
if [ ! -x "$HUBCAST_BIN" ]; then
  echo "cargo build did not produce $HUBCAST_BIN" >&2
  exit 1
fi
export HUBCAST_BIN

echo "==> checks"
# In the background and waited for, so that INT/TERM reach the trap at once.
timeout --kill-after=10 300 "$PYTHON" "$OBS/check_observability.py" &
CHECK_PID=$!
wait "$CHECK_PID"
