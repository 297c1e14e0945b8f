#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/fuzz_targets: signature header parsers, config loader, the
# whole request pipeline) for a bounded time each; any crash fails. Usage: scripts/fuzz.sh [seconds]
# cargo-fuzz needs nightly compiler flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-20}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
for target in $(cargo fuzz list); do
  echo "fuzz: $target for ${seconds}s"
  cargo fuzz run "$target" -- -max_total_time="$seconds" 2>&1 | grep -E "^Done|ERROR|panicked|SUMMARY" || true
  # cargo fuzz exits non-zero on a crash; pipefail would hide it behind grep, so check artifacts.
  if compgen -G "fuzz/artifacts/$target/crash-*" >/dev/null; then
    echo "fuzz: $target crashed; reproducer in fuzz/artifacts/$target" >&2
    exit 1
  fi
done
