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
# cargo-fuzz builds with one codegen unit by default, which leaves a core idle through most of
# the build on a two-core machine (CI's build took 19 minutes that way; with 16 units, 10 on
# another such machine), for somewhat slower fuzzing. `run` is given the same options, or it
# would build everything again.
build=(--codegen-units 16)
cargo fuzz build "${build[@]}"
log=$(mktemp)
for target in $(cargo fuzz list); do
  echo "fuzz: $target for ${seconds}s"
  # A target with seeds (fuzz/seeds/TARGET, read only) and a dictionary starts from them; what
  # the fuzzer finds goes to fuzz/corpus/TARGET (not in git).
  dirs=(); options=()
  if [ -d "fuzz/seeds/$target" ]; then
    mkdir -p "fuzz/corpus/$target"
    dirs=("fuzz/corpus/$target" "fuzz/seeds/$target")
  fi
  [ -f "fuzz/seeds/$target.dict" ] && options=(-dict="fuzz/seeds/$target.dict")
  if ! cargo fuzz run "${build[@]}" "$target" "${dirs[@]}" -- -max_total_time="$seconds" "${options[@]}" > "$log" 2>&1; then
    tail -40 "$log" >&2
    echo "fuzz: $target failed; reproducer (if any) in fuzz/artifacts/$target" >&2
    exit 1
  fi
  grep -E "^Done" "$log" || true
done
