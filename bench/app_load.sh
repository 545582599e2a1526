#!/usr/bin/env bash
# Issue: the slow app and the load generator.
#  1. `poolpilot load` against wrk on the same /health endpoint, side by side in one run:
#     requests/s ratio ours/wrk (goal: 0.8 or more).
#  2. /health p99 latency while every core is busy with /load (goal: under 50 ms).
# Everything runs on 127.0.0.1; each load is bounded in time. Needs wrk (apt-get install wrk).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "wrk is required: apt-get install wrk" >&2; exit 1; }
cargo build --release --locked -q
BIN=target/release/poolpilot
PORT=${PORT:-18180}
DUR=${DUR:-10}
CONC=${CONC:-64}
CORES=$(nproc)

$BIN app --listen 127.0.0.1:$PORT --load-seconds 2s --log-format text 2>/dev/null &
APP=$!
trap 'kill $APP 2>/dev/null || true; wait 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -fsS http://127.0.0.1:$PORT/health >/dev/null 2>&1 && break; sleep 0.1; done

echo "== 1. /health throughput, $CONC connections, ${DUR}s each, $CORES cores shared with the app"
wrk_rps=$(wrk -t2 -c$CONC -d${DUR}s http://127.0.0.1:$PORT/health | awk '/Requests\/sec/ {print $2}')
ours_rps=$($BIN load --url http://127.0.0.1:$PORT/health --concurrency $CONC --duration ${DUR}s --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["rate"])')
python3 - "$wrk_rps" "$ours_rps" <<'PY'
import sys
wrk, ours = float(sys.argv[1]), float(sys.argv[2])
print(f"wrk:            {wrk:10.0f} req/s")
print(f"poolpilot load: {ours:10.0f} req/s")
print(f"ratio ours/wrk: {ours/wrk:10.2f}   (goal >= 0.80)")
PY

echo "== 2. /health p99 while $CORES /load requests keep every core busy (${DUR}s)"
$BIN load --url http://127.0.0.1:$PORT/load --concurrency $CORES --duration $((DUR + 2))s --json > /tmp/poolpilot-bench-load.json &
LOADER=$!
sleep 1
health=$($BIN load --url http://127.0.0.1:$PORT/health --rate 50 --duration ${DUR}s --json)
wait $LOADER
python3 - "$health" /tmp/poolpilot-bench-load.json <<'PY'
import json, sys
h = json.loads(sys.argv[1]); l = json.load(open(sys.argv[2]))
print(f"/load completed: {l['ok']} (each burns every core for 2 s), failed {l['failed']}")
print(f"/health: {h['ok']} ok, {h['failed']} failed, p50 {h['latency_ms']['p50']:.2f} ms, p99 {h['latency_ms']['p99']:.2f} ms   (goal p99 < 50 ms)")
PY
