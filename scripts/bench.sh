#!/usr/bin/env bash
# Runs hubcast, the Socket.IO peer and the raw Redis baseline back to back on this machine
# and regenerates BENCHMARKS.md (and BENCHMARKS.json). Pass --quick for short phases.
#   bash scripts/bench.sh [--quick]
set -euo pipefail
cd "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# shellcheck source=scripts/lib.sh
. scripts/lib.sh
if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-benchmark >/dev/null 2>&1; then
  apt_install redis-server redis-tools
fi
PEER=bench/peers/socketio
if [ ! -d "$PEER/node_modules" ] || [ "$PEER/package-lock.json" -nt "$PEER/node_modules/.package-lock.json" ]; then
  (cd "$PEER" && npm ci --no-audit --no-fund)
fi
cargo build --release -p hubcast -p hubcast-bench
TARGET="$(cargo_target_dir)"
# The load generator opens one socket per client; the node one per connection.
ulimit -n "$(ulimit -Hn)" || true
exec "$TARGET/release/hubcast-bench" --hubcast "$TARGET/release/hubcast" --socketio "$PEER" all --out BENCHMARKS.md "$@"
