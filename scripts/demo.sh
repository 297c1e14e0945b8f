#!/usr/bin/env bash
# The newcomer's round trip on config/hookgate.yaml: installs what is missing, builds hookgate,
# starts two stand-in apps (:5000 "app", :5001 "analytics") and the gateway (HTTPS :8443 with a
# self-signed dev certificate, plain HTTP :8080, admin :9090, state in data/hookgate.db), then
# shows a signed delivery going through, a forged one refused, the redelivery answered
# already_processed, a delivery queued and delivered to both apps and a Redis stream, the
# delivery log, and the metrics that counted it all. The gateway keeps running until Ctrl-C
# (pass --no-wait to stop right away).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --bin hookgate
bin=target/release/hookgate

for port in 5000 5001 8080 8443 9090; do
  if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then
    echo "demo: port $port is already in use; stop whatever listens there first" >&2
    exit 1
  fi
done

# The queue route's broker destination appends to a Redis stream on :6379.
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
  for _ in $(seq 50); do redis-cli ping >/dev/null 2>&1 && break; sleep 0.1; done
fi

export IMGGO_WEBHOOK_SECRET="${IMGGO_WEBHOOK_SECRET:-demo-secret-change-me}"
python3 scripts/upstream.py 5000 app & up=$!
python3 scripts/upstream.py 5001 analytics & analytics=$!
"$bin" --log-format pretty run -c config/hookgate.yaml > /tmp/hookgate-demo.log 2>&1 & gw=$!
trap 'kill -INT $gw 2>/dev/null; kill $up $analytics 2>/dev/null || true' EXIT
for port in 5000 5001; do
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
done
for _ in $(seq 100); do curl -fs http://127.0.0.1:9090/healthz >/dev/null 2>&1 && break; sleep 0.1; done
kill -0 $gw 2>/dev/null || { echo "demo: hookgate did not start:" >&2; cat /tmp/hookgate-demo.log >&2; exit 1; }

body=$(mktemp)
printf '{"event":"job.completed","job_id":"job_%s","status":"completed","result":{"url":"https://cdn.imggo.example/out.png","width":800,"height":600}}' "$(date +%s)" > "$body"

echo "== 1. a signed delivery goes through"
"$bin" send https://localhost:8443/webhooks/imggo -c config/hookgate.yaml --route imggo "$body"
echo "== 2. a forged one is refused"
curl -sk https://localhost:8443/webhooks/imggo -H 'X-ImgGo-Signature: 0000' --data-binary @"$body"; echo
echo "== 3. the redelivery is answered already_processed"
"$bin" send https://localhost:8443/webhooks/imggo -c config/hookgate.yaml --route imggo "$body"
echo "== 4. queue mode: stored on disk, answered at once, delivered to app, analytics and a Redis stream"
"$bin" send https://localhost:8443/webhooks/imggo-queued -c config/hookgate.yaml --route imggo-queued "$body"
for _ in $(seq 50); do
  curl -s http://127.0.0.1:9090/metrics | grep -q 'hookgate_deliveries_total{destination="events",outcome="delivered",route="imggo-queued"}' && break
  sleep 0.1
done
echo "-- the newest entry of the Redis stream hookgate:imggo (fields body and headers):"
redis-cli -h 127.0.0.1 -p 6379 XREVRANGE hookgate:imggo + - COUNT 1 | cut -c1-160 || true
echo "== 5. the delivery log (also at http://127.0.0.1:9090/ui/)"
"$bin" deliveries list --limit 5 -c config/hookgate.yaml
echo "== 6. what the metrics counted"
curl -s http://127.0.0.1:9090/metrics | grep -E '^hookgate_(requests_total|deliveries_total)'

if [ "${1:-}" != "--no-wait" ]; then
  echo "== hookgate is serving (logs: /tmp/hookgate-demo.log); Ctrl-C to stop"
  wait $gw
fi
