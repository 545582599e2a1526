#!/usr/bin/env bash
# Issue: poolpilot front. The front and HAProxy (Debian's) side by side in one run, in front of
# the same two local backends (`poolpilot app`, its cheap /health route), loaded the same way
# by `poolpilot load` (closed loop, $CONC connections, ${DUR}s each):
#  - throughput of the front as a ratio of HAProxy's (goal: 0.8 or more);
#  - p99 latency each adds over going direct to one backend.
# Everything on 127.0.0.1, bounded in time. Needs haproxy (apt-get install haproxy).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v haproxy >/dev/null || { echo "haproxy is required: apt-get install haproxy" >&2; exit 1; }
cargo build --release --locked -q
BIN=$PWD/target/release/poolpilot
DUR=${DUR:-10}
CONC=${CONC:-32}
B1=${B1:-18191} B2=${B2:-18192} FRONT=${FRONT:-18193} ADMIN=${ADMIN:-18194} HAP=${HAP:-18195}
TMP=$(mktemp -d)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$TMP"' EXIT

for p in $B1 $B2; do
  $BIN app --listen 127.0.0.1:$p --log-format text 2>/dev/null & PIDS+=($!)
done
$BIN front --listen 127.0.0.1:$FRONT --admin-listen 127.0.0.1:$ADMIN \
  --backend a=http://127.0.0.1:$B1 --backend b=http://127.0.0.1:$B2 --log-format text 2>"$TMP/front.log" & PIDS+=($!)
cat > "$TMP/haproxy.cfg" <<CFG
global
  maxconn 4096
defaults
  mode http
  option http-keep-alive
  timeout connect 2s
  timeout client 30s
  timeout server 30s
frontend f
  bind 127.0.0.1:$HAP
  default_backend b
backend b
  balance roundrobin
  retry-on conn-failure empty-response response-timeout 500 502 503 504
  option redispatch
  server a 127.0.0.1:$B1
  server b 127.0.0.1:$B2
CFG
haproxy -q -f "$TMP/haproxy.cfg" & PIDS+=($!)
for url in http://127.0.0.1:$B1/health http://127.0.0.1:$B2/health http://127.0.0.1:$FRONT/health http://127.0.0.1:$HAP/health; do
  for _ in $(seq 100); do curl -fsS "$url" >/dev/null 2>&1 && break; sleep 0.1; done
done

run() { $BIN load --url "$1/health" --concurrency $CONC --duration ${DUR}s --json > "$TMP/$2.json"; }
echo "== /health through each, $CONC connections, ${DUR}s each, $(nproc) cores shared by all"
run http://127.0.0.1:$B1 direct
run http://127.0.0.1:$HAP haproxy
run http://127.0.0.1:$FRONT front
python3 - "$TMP" <<'PY'
import json, sys
d = sys.argv[1]
r = {k: json.load(open(f"{d}/{k}.json")) for k in ("direct", "haproxy", "front")}
for k, v in r.items():
    print(f"{k:8} {v['rate']:9.0f} req/s  p99 {v['latency_ms']['p99']:7.2f} ms  failed {v['failed']}")
front, hap, direct = r["front"], r["haproxy"], r["direct"]
print(f"throughput front/haproxy: {front['rate'] / hap['rate']:.2f}   (goal >= 0.80)")
print(f"p99 added over direct:    front {front['latency_ms']['p99'] - direct['latency_ms']['p99']:+.2f} ms, "
      f"haproxy {hap['latency_ms']['p99'] - direct['latency_ms']['p99']:+.2f} ms")
PY
