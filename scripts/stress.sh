#!/usr/bin/env bash
# Runs the whole suite several times in a row while busy loops keep every core loaded, to find
# tests that only pass on an idle machine. Usage: scripts/stress.sh [runs, default 5]
# (Add `scripts/fuzz.sh 20 &` beside it for a heavier, less even load.)
set -uo pipefail
cd "$(dirname "$0")/.."
runs="${1:-5}"
cargo nextest run --no-run >/dev/null 2>&1 || { echo "stress: the suite does not build" >&2; exit 1; }
hogs=()
for _ in $(seq "$(nproc)"); do
  yes > /dev/null &
  hogs+=($!)
done
trap 'kill "${hogs[@]}" 2>/dev/null' EXIT
failed=0
for i in $(seq "$runs"); do
  log=$(mktemp)
  cargo nextest run --no-fail-fast > "$log" 2>&1
  status=$?
  echo "stress: run $i of $runs: $(grep -E 'Summary' "$log")"
  if [ "$status" -ne 0 ]; then
    failed=1
    grep -E "^ +FAIL" "$log" | sort -u
    echo "stress: full output of run $i in $log"
  fi
done
exit "$failed"
