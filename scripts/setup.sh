#!/usr/bin/env bash
# Installs what a fresh Debian/Ubuntu machine lacks to build and run hookgate: cmake (Pingora's
# zlib-ng build), make/perl and a C compiler, python3 (the stand-in upstream), curl, and a Redis
# server (the demo's stream destination). With --tests, also what only the tests need: promtool,
# systemd-analyze, Chromium and ChromeDriver, psql and the PostgreSQL server binaries, the
# providers' Python libraries, kubernetes-validate and selenium, and tansu (a Kafka-protocol broker,
# built from crates.io: about 11 minutes on two idle cores, once per machine).
# Idempotent: does nothing when everything is present.
# Usage: scripts/setup.sh [--tests]
set -euo pipefail
cd "$(dirname "$0")/.."
tests=false
[ "${1:-}" = "--tests" ] && tests=true

need=()
command -v cmake >/dev/null || need+=(cmake)
command -v make >/dev/null || need+=(make)
command -v perl >/dev/null || need+=(perl)
command -v cc >/dev/null || need+=(build-essential)
command -v python3 >/dev/null || need+=(python3)
command -v curl >/dev/null || need+=(curl)
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-cli >/dev/null || need+=(redis-tools)
if $tests; then
  command -v promtool >/dev/null || need+=(prometheus)   # promtool, for the alert rules' tests
  command -v systemd-analyze >/dev/null || need+=(systemd)        # verifies deploy/systemd/hookgate.service
  command -v chromium >/dev/null || need+=(chromium)               # the delivery log page's browser test
  command -v chromedriver >/dev/null || need+=(chromium-driver)
  command -v socat >/dev/null || need+=(socat)                     # a TLS front for the shared RabbitMQ (amqps:// test)
  command -v psql >/dev/null || need+=(postgresql-client)  # the Postgres store's tests make their databases with it
  [ -x "$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | head -n1)/initdb" ] || need+=(postgresql)  # initdb/pg_ctl for the outage tests
fi

if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if $tests; then
  # The providers' own signing libraries, for the scheme conformance tests.
  if ! python3 -c "import stripe, standardwebhooks, svix, slack_sdk, twilio, nacl, sendgrid, paddle_billing, square, cryptography" >/dev/null 2>&1; then
    echo "setup: installing the providers' Python libraries (tests/providers/requirements.txt)"
    python3 -m pip install -q --disable-pip-version-check -r tests/providers/requirements.txt 2>&1 | grep -v "Running pip as the 'root' user" || true
  fi

  # Offline validation of the Kubernetes manifests in deploy/kubernetes; Selenium drives Chromium
  # for the delivery log page's test.
  if ! command -v kubernetes-validate >/dev/null 2>&1 || ! python3 -c "import selenium" >/dev/null 2>&1; then
    echo "setup: installing kubernetes-validate and selenium"
    python3 -m pip install -q --disable-pip-version-check kubernetes-validate selenium 2>&1 | grep -v "Running pip as the 'root' user" || true
  fi
fi

command -v cargo >/dev/null || { echo "setup: cargo not found; install Rust from https://rustup.rs" >&2; exit 1; }

if $tests && ! command -v tansu >/dev/null && [ ! -x "$HOME/.cargo/bin/tansu" ]; then
  # The Kafka destination's tests start private brokers of it. Its in-memory storage engine is
  # the `dynostore` feature, which tansu's default build leaves out.
  echo "setup: installing tansu 0.6 (a Kafka-protocol broker) for the Kafka destination's tests"
  cargo install tansu --version 0.6.0 --locked --features dynostore
fi
