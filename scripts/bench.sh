#!/usr/bin/env bash
# Runs hubcast, the socketioxide peer, the Socket.IO peer, the raw Redis baseline and the
# kernel floor back to back on this machine and regenerates BENCHMARKS.md (and
# BENCHMARKS.json). Pass --quick for short phases; other flags go to `hubcast-bench all`.
# The Redis Cluster comparison alone, added to the existing report:
#   target/release/hubcast-bench --hubcast target/release/hubcast redis-scaling --merge BENCHMARKS.md
#   bash scripts/bench.sh [--quick] [--publish-rate N] [--idle-clients A,B]
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
# The socketioxide peer is a workspace of its own: built from its committed Cargo.lock, into
# $CARGO_TARGET_DIR when that is set, else into its own target/.
RUST_PEER=bench/peers/socketioxide
cargo build --release --locked --manifest-path "$RUST_PEER/Cargo.toml"
RUST_PEER_TARGET="$(cd "$RUST_PEER" && cargo_target_dir)"
# The load generator opens one socket per client; the node one per connection.
ulimit -n "$(ulimit -Hn)" || true
exec "$TARGET/release/hubcast-bench" --hubcast "$TARGET/release/hubcast" --socketio "$PEER" \
  --socketioxide "$RUST_PEER_TARGET/release/socketioxide-peer" all --out BENCHMARKS.md "$@"
