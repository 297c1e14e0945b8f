#!/usr/bin/env bash
# Runs hookgate's whole test suite: unit tests and the integration-test binary (which starts the
# real gateway, a recording upstream and, for the Redis tests, private redis-server processes).
# The Redis store tests also use the Redis on 127.0.0.1:6379, started here if it is not running;
# the Postgres store tests make a database each on the PostgreSQL on 127.0.0.1:5432.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --tests

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "test: starting redis-server on 127.0.0.1:6379"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
  for _ in $(seq 50); do redis-cli ping >/dev/null 2>&1 && break; sleep 0.1; done
fi

if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
  echo "test: PostgreSQL does not answer on 127.0.0.1:5432 (user postgres, trust auth); the Postgres store's tests need it" >&2
  exit 1
fi

echo "test: Prometheus alert rules"
promtool check rules config/prometheus/alerts.yml
(cd config/prometheus && promtool test rules alerts.test.yml)

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --no-fail-fast "$@"
else
  cargo test --no-fail-fast "$@"
fi
