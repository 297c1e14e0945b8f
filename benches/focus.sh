#!/usr/bin/env bash
# One gateway build under the load of benches/load.sh, alone, for A/B runs of two builds in one
# sitting (run it alternately for each build, several rounds; compare medians).
#   benches/focus.sh BIN [SECONDS] [CONNECTIONS]
#   MODE=queue|forward (default queue)   STORE=file|postgres (queue mode; default file)
#   TLS=1: a TLS listener (one ECDSA P-256 certificate) and a new connection per delivery
# Prints accepted/s, p99, the gateway's CPU per request, the machine's idle share, and on
# Postgres the database's CPU (all its processes) and commits per delivery, and what was left
# pending. Needs wrk and the release examples (cargo build --release --example bench_upstream);
# Postgres on 127.0.0.1:5432.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(realpath "${1:?usage: benches/focus.sh BIN [SECONDS] [CONNECTIONS]}")
SECONDS_=${2:-8}
CONNS=${3:-50}
MODE=${MODE:-queue}
STORE=${STORE:-file}
TLS=${TLS:-0}
PORT=18100 ADMIN=18101 APP=18000
tmp=$(mktemp -d)
db="hookgate_focus_$$"
cleanup() {
  kill "${gw:-}" "${app:-}" 2>/dev/null || true
  wait 2>/dev/null || true
  [ "$STORE" = postgres ] && psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1
  rm -rf "$tmp"
}
trap cleanup EXIT

target/release/examples/bench_upstream "127.0.0.1:$APP" 1 >/dev/null 2>&1 & app=$!
case "$MODE/$STORE" in
  forward/*) store='{ url: memory, max_keys: 2000000 }'
             delivery="upstream: \"http://127.0.0.1:$APP\"" ;;
  queue/file) store="{ url: \"file:$tmp/queue.db\" }" ;;
  queue/postgres)
    psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $db" >/dev/null
    store="{ url: \"postgres://postgres@127.0.0.1:5432/$db?sslmode=disable\" }" ;;
  *) echo "focus: MODE is queue or forward, STORE file or postgres" >&2; exit 2 ;;
esac
[ "$MODE" = queue ] && delivery="mode: queue
    upstreams: [{ name: app, url: \"http://127.0.0.1:$APP\" }]"
listen="{ addr: \"127.0.0.1:$PORT\" }" scheme=http host=127.0.0.1 close=""
if [ "$TLS" = 1 ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost -keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>/dev/null
  listen="{ addr: \"127.0.0.1:$PORT\", tls: { cert: $tmp/cert.pem, key: $tmp/key.pem } }"
  scheme=https host=localhost close=close
fi
cat > "$tmp/hookgate.yaml" <<YAML
listen: [$listen]
threads: 1
grace_period: 1s
upgrade_socket: $tmp/upgrade.sock
admin: { addr: "127.0.0.1:$ADMIN" }
store: $store
routes:
  - name: imggo
    path: /webhooks/imggo
    https_only: $([ "$TLS" = 1 ] && echo true || echo false)
    allow_ips: ["127.0.0.0/8"]
    signature: { scheme: imggo, secrets: ["bench-secret"] }
    schema: $PWD/config/schemas/imggo-webhook.json
    events: { pointer: /event, allow: [job.completed, job.failed] }
    idempotency: { key: ["/event", "/job_id"] }
    $delivery
YAML
RUST_LOG=info "$BIN" --log-format json run -c "$tmp/hookgate.yaml" >"$tmp/gateway.log" 2>&1 & gw=$!
for _ in $(seq 100); do curl -sf "127.0.0.1:$ADMIN/readyz" >/dev/null && break; sleep 0.1; done

load() {  # load SECONDS FILE
  wrk -t2 -c"$CONNS" -d"$1"s --latency -s benches/imggo.lua "$scheme://$host:$PORT/webhooks/imggo" -- "$2" X-ImgGo-Signature $close
}
python3 benches/gen_deliveries.py 100000 bench-secret "$tmp/warm.txt" "warm$$"
python3 benches/gen_deliveries.py 400000 bench-secret "$tmp/load.txt" "load$$"
load 2 "$tmp/warm.txt" >/dev/null

pg_cpu() { for p in $(pgrep -x postgres); do awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null; done | awk '{s += $1} END {print s + 0}'; }
commits() { psql -h 127.0.0.1 -U postgres -Atc "SELECT xact_commit FROM pg_stat_database WHERE datname = '$db'"; }
cpu() { awk '{print $14 + $15}' "/proc/$gw/stat"; }
[ "$STORE" = postgres ] && x0=$(commits) && p0=$(pg_cpu)
c0=$(cpu); s0=$(head -1 /proc/stat)
load "$SECONDS_" "$tmp/load.txt" >"$tmp/wrk.txt"
c1=$(cpu); s1=$(head -1 /proc/stat)
[ "$STORE" = postgres ] && p1=$(pg_cpu)
n=$(grep -oP '\d+(?= requests in)' "$tmp/wrk.txt")
python3 - "$c0" "$c1" "$n" "$s0" "$s1" "$(getconf CLK_TCK)" "$tmp/wrk.txt" <<'PY'
import re, sys
c0, c1, n, s0, s1, tck, wrk = sys.argv[1:]
out = open(wrk).read()
d = [int(b) - int(a) for a, b in zip(s0.split()[1:], s1.split()[1:])]
rps = re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)
p99 = re.search(r" 99%\s+(\S+)", out).group(1)
p50 = re.search(r" 50%\s+(\S+)", out).group(1)
bad = re.search(r"non_200 \d+", out).group(0)
cpu = (float(c1) - float(c0)) / int(tck) * 1e6 / int(n)
idle = 100 * (d[3] + d[4]) / sum(d)
print(f"req/s {rps}  p50 {p50}  p99 {p99}  gateway cpu {cpu:.1f} us/req  idle {idle:.0f}%  {bad}")
PY
if [ "$STORE" = postgres ] && [ "$MODE" = queue ]; then
  sleep 3
  echo "postgres cpu $(python3 -c "print(round(($p1 - $p0) / $(getconf CLK_TCK) * 1e6 / $n, 1))") us/req," \
       "commits per delivery $(python3 -c "print(round(($(commits) - $x0) / $n, 2))")," \
       "pending after 3 s: $(psql -h 127.0.0.1 -U postgres -d "$db" -Atc "SELECT count(*) FROM hookgate_destinations WHERE state = 'pending'")"
fi
