#!/usr/bin/env bash
# Issue: the autoscaler. GET /up served on one core (goal: 20,000 requests/s or more), and the
# autoscaler's memory under a flood (goal: flat), measured in one run:
#   the autoscaler pinned to core 0 (one tokio worker), wrk pinned to core 1, against a simulator.
# Everything on 127.0.0.1; the flood lasts FLOOD seconds (default 60). Needs wrk and taskset.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "wrk is required: apt-get install wrk" >&2; exit 1; }
[ "$(nproc)" -ge 2 ] || { echo "needs 2 cores (one for the autoscaler, one for wrk)" >&2; exit 1; }
cargo build --release --locked -q
BIN=$PWD/target/release/poolpilot
FLOOD=${FLOOD:-60}
SIM_PORT=${SIM_PORT:-18279}
PORT=${PORT:-18290}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

$BIN sim --listen 127.0.0.1:$SIM_PORT --pool-size 1 --env-file "$work/sim.env" >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -s "$work/sim.env" ] && break; sleep 0.05; done
# shellcheck disable=SC1091
. "$work/sim.env"
POOLPILOT_LOG=warn taskset -c 0 $BIN autoscaler --listen 127.0.0.1:$PORT --max 3 --interval 60s >/dev/null 2>&1 &
AS=$!
pids+=($AS)
for _ in $(seq 100); do curl -fsS http://127.0.0.1:$PORT/readyz >/dev/null 2>&1 && break; sleep 0.05; done

rss() { awk '/VmRSS/ {print $2}' /proc/$AS/status; }
echo "== GET /up on one core (autoscaler on core 0, wrk on core 1), ${FLOOD}s flood"
rss_start=$(rss)
taskset -c 1 wrk -t1 -c64 -d${FLOOD}s http://127.0.0.1:$PORT/up > "$work/wrk.txt" &
WRK=$!
samples=()
for i in $(seq 1 $((FLOOD / 5))); do
  sleep 5
  samples+=("$(rss)")
done
wait $WRK
rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk.txt")
non2xx=$(awk '/Non-2xx/ {print $NF}' "$work/wrk.txt")
python3 - "$rps" "${non2xx:-0}" "$rss_start" "${samples[@]}" <<'PY'
import sys
rps, bad, start = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
s = [int(x) for x in sys.argv[4:]]
print(f"requests/s:               {rps:10.0f}   (goal >= 20000; ratio to goal {rps/20000:.2f})")
print(f"non-2xx answers:          {bad:10d}")
print(f"RSS before the flood:     {start/1024:10.1f} MiB")
print(f"RSS every 5 s:            {' '.join(f'{x/1024:.1f}' for x in s)} MiB")
warm = s[1] if len(s) > 1 else s[0]
print(f"RSS end / RSS at 10 s:    {s[-1]/warm:10.2f}   (flat: about 1.00)")
PY
curl -fsS http://127.0.0.1:$PORT/metrics | grep 'webhook_requests_total{route="/up"' || true
