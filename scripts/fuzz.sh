#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/fuzz_targets: signature header parsers, config loader, the
# whole request pipeline) for a bounded time each; a build failure or any crash fails.
# Usage: scripts/fuzz.sh [seconds per target]
# cargo-fuzz needs nightly compiler flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-20}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
cargo fuzz build
log=$(mktemp)
for target in $(cargo fuzz list); do
  echo "fuzz: $target for ${seconds}s"
  if ! cargo fuzz run "$target" -- -max_total_time="$seconds" > "$log" 2>&1; then
    tail -40 "$log" >&2
    echo "fuzz: $target failed; reproducer (if any) in fuzz/artifacts/$target" >&2
    exit 1
  fi
  grep -E "^Done" "$log" || true
done
