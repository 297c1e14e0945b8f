#!/usr/bin/env bash
# Whole-gateway load test, all targets in the same run, alternating rounds:
#   upstream   the stand-in app directly (examples/bench_upstream.rs)
#   nginx      nginx as a plain reverse proxy, 1 worker, upstream keepalive
#   haproxy    HAProxy 2.6, 1 thread, with the checks its config language can do: allowlist, HMAC of
#              the buffered body, required fields and event (json_query), stick-table dedupe
#   pingora    a plain Pingora passthrough, 1 thread (examples/passthrough.rs)
#   pingora-hyper   the same with hyper's HTTP/1 serving Pingora's accepted streams (examples/hyper_passthrough.rs)
#   hookgate   every check on (ImgGo route: signature, schema, events, memory-store dedupe), 1 thread
#   hookgate-redis   the same on the Redis store
#   hookgate-queue   the same checks on a queue route (file store, durable before "queued"), delivering
#                    to the same app in the background
#   hookgate-queue-nats   the same queue route with one JetStream destination (the machine's NATS on
#                    4222, a stream of the run's own) instead of the app
# Queue targets (hookgate's and qhook's) are charged the CPU of a round until the backlog it left is
# delivered, and targets on the shared Postgres are charged its CPU too (when it runs here).
# wrk replays pre-signed, all-distinct deliveries. Prints req/s, p50, p99 per target and the
# ratios to nginx and to plain Pingora. Usage: benches/load.sh [seconds per round] [rounds] [connections]
set -euo pipefail
cd "$(dirname "$0")/.."
# cmake builds the Kafka client's librdkafka for the release binary.
command -v wrk >/dev/null && command -v nginx >/dev/null && command -v haproxy >/dev/null && command -v cmake >/dev/null || {
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get install -y -qq wrk nginx-light haproxy cmake >/dev/null
}
# qhook, the open-source tool of queue mode's shape, is measured beside it when it can be installed.
command -v qhook >/dev/null || cargo install qhook --locked || echo "load: qhook could not be installed; its targets are skipped"
cargo build --release --bin hookgate --example bench_upstream --example passthrough --example hyper_passthrough
exec python3 benches/load.py "$@"
