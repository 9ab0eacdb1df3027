#!/usr/bin/env bash
# Fuzzes every parser of untrusted input (cargo-fuzz / libFuzzer targets in fuzz/):
#
#   bash scripts/fuzz.sh            # every target, 30 s each
#   bash scripts/fuzz.sh 300        # every target, 300 s each
#   bash scripts/fuzz.sh 60 record  # only the named target(s)
#
# Targets: record (framing + hub messages), handshake, envelope (backplane), publish_body.
# cargo-fuzz needs nightly features; on a stable toolchain RUSTC_BOOTSTRAP=1 unlocks them.
# Builds use debug assertions (so integer overflow panics too), and a single allocation
# above 64 MiB counts as a failure: no input of a few KiB may make a parser allocate that.
# Corpora grow in fuzz/corpus/<target>/; a crash or OOM leaves its input in
# fuzz/artifacts/<target>/ and makes this script exit non-zero. Reproduce one with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz -a <target> fuzz/artifacts/<target>/<file>
# Not run by CI (it takes minutes); `cargo test --test properties` covers the same code.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SECONDS_EACH="${1:-30}"
if ! [[ "$SECONDS_EACH" =~ ^[0-9]+$ ]] || [ "$SECONDS_EACH" -lt 1 ]; then
  echo "usage: $0 [SECONDS_PER_TARGET (default 30)] [TARGET...]" >&2
  exit 2
fi
shift || true

export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "==> cargo-fuzz not found: cargo install cargo-fuzz --locked"
  cargo install cargo-fuzz --locked
fi

if [ "$#" -gt 0 ]; then
  TARGETS=("$@")
else
  mapfile -t TARGETS < <(cargo fuzz list --fuzz-dir fuzz)
fi

echo "==> building ${#TARGETS[@]} target(s): ${TARGETS[*]}"
cargo fuzz build --fuzz-dir fuzz --debug-assertions

FAILED=()
for target in "${TARGETS[@]}"; do
  echo
  echo "==> fuzzing '$target' for ${SECONDS_EACH}s"
  mkdir -p "fuzz/corpus/$target"
  if cargo fuzz run --fuzz-dir fuzz --debug-assertions "$target" -- \
    -max_total_time="$SECONDS_EACH" -malloc_limit_mb=64 -print_final_stats=1; then
    echo "==> '$target': no crash"
  else
    echo "!!! '$target' failed: see fuzz/artifacts/$target/" >&2
    FAILED+=("$target")
  fi
done

echo
if [ "${#FAILED[@]}" -gt 0 ]; then
  echo "!!! ${#FAILED[@]} of ${#TARGETS[@]} target(s) failed: ${FAILED[*]}" >&2
  exit 1
fi
echo "==> all ${#TARGETS[@]} target(s) ran ${SECONDS_EACH}s each without a crash"
