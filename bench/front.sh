#!/usr/bin/env bash
# Issue: poolpilot front. The front and HAProxy (Debian's) side by side in one run, in front of
# the same two local backends (`poolpilot app`, its cheap /health route), loaded the same way
# by `poolpilot load` (closed loop, $CONC connections, ${DUR}s each):
#  - throughput of the front as a ratio of HAProxy's (goal: 0.8 or more);
#  - p99 latency each adds over going direct to one backend;
#  - CPU time each proxy spent per request (from /proc, less sensitive to a busy machine).
# Fair by construction: both proxies get $THREADS threads (HAProxy `nbthread`, the front's
# tokio workers through TOKIO_WORKER_THREADS), keep-alive on both sides, the same backends and
# the same load; HAProxy and the front take turns ($ROUNDS rounds each, alternating), so a
# change in the machine's other load falls on both. Everything on 127.0.0.1, bounded in time.
# Needs haproxy (apt-get install haproxy).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v haproxy >/dev/null || { echo "haproxy is required: apt-get install haproxy" >&2; exit 1; }
cargo build --release --locked -q
BIN=$PWD/target/release/poolpilot
DUR=${DUR:-10}
CONC=${CONC:-32}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-2}
B1=${B1:-18191} B2=${B2:-18192} FRONT=${FRONT:-18193} ADMIN=${ADMIN:-18194} HAP=${HAP:-18195}
TMP=$(mktemp -d)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$TMP"' EXIT

for p in $B1 $B2; do
  $BIN app --listen 127.0.0.1:$p --log-format text 2>/dev/null & PIDS+=($!)
done
TOKIO_WORKER_THREADS=$THREADS $BIN front --listen 127.0.0.1:$FRONT --admin-listen 127.0.0.1:$ADMIN \
  --backend a=http://127.0.0.1:$B1 --backend b=http://127.0.0.1:$B2 --log-format text 2>"$TMP/front.log" & PIDS+=($!)
FRONT_PID=$!
cat > "$TMP/haproxy.cfg" <<CFG
global
  maxconn 4096
  nbthread $THREADS
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
haproxy -q -db -f "$TMP/haproxy.cfg" & PIDS+=($!)
HAP_PID=$!
for url in http://127.0.0.1:$B1/health http://127.0.0.1:$B2/health http://127.0.0.1:$FRONT/health http://127.0.0.1:$HAP/health; do
  for _ in $(seq 100); do curl -fsS "$url" >/dev/null 2>&1 && break; sleep 0.1; done
done

# CPU seconds (user + system) a process has used so far.
cpu() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"; }
# run URL NAME [PID]: one load run; the proxy's CPU time during it goes beside the result.
run() {
  local before=0
  [ -n "${3:-}" ] && before=$(cpu "$3")
  $BIN load --url "$1/health" --concurrency $CONC --duration ${DUR}s --json > "$TMP/$2.json"
  [ -n "${3:-}" ] && awk -v a="$(cpu "$3")" -v b="$before" 'BEGIN { print a - b }' > "$TMP/$2.cpu"
  return 0
}
echo "== /health through each, $CONC connections, ${DUR}s each, $ROUNDS rounds alternating; $THREADS threads for each proxy; $(nproc) cores shared by all; load: $(cut -d' ' -f1-3 /proc/loadavg)"
run http://127.0.0.1:$B1 direct
for r in $(seq "$ROUNDS"); do
  run http://127.0.0.1:$HAP "haproxy.$r" "$HAP_PID"
  run http://127.0.0.1:$FRONT "front.$r" "$FRONT_PID"
done
python3 - "$TMP" "$ROUNDS" <<'PY'
import json, sys
d, rounds = sys.argv[1], int(sys.argv[2])
def load(name):
    v = json.load(open(f"{d}/{name}.json"))
    try:
        v["cpu"] = float(open(f"{d}/{name}.cpu").read())
    except FileNotFoundError:
        v["cpu"] = None
    return v
def show(name, v):
    cpu = f"  cpu {v['cpu'] * 1e6 / max(v['ok'], 1):6.1f} us/req" if v["cpu"] is not None else ""
    print(f"{name:10} {v['rate']:9.0f} req/s  p99 {v['latency_ms']['p99']:7.2f} ms  failed {v['failed']}{cpu}")
direct = load("direct")
show("direct", direct)
ratios, cpus = [], []
for r in range(1, rounds + 1):
    hap, front = load(f"haproxy.{r}"), load(f"front.{r}")
    show(f"haproxy.{r}", hap)
    show(f"front.{r}", front)
    ratios.append(front["rate"] / hap["rate"])
    cpus.append((front["cpu"] / max(front["ok"], 1)) / (hap["cpu"] / max(hap["ok"], 1)))
    print(f"  round {r}: throughput front/haproxy {ratios[-1]:.2f}; CPU per request front/haproxy {cpus[-1]:.2f}; "
          f"p99 added over direct: front {front['latency_ms']['p99'] - direct['latency_ms']['p99']:+.2f} ms, "
          f"haproxy {hap['latency_ms']['p99'] - direct['latency_ms']['p99']:+.2f} ms")
print(f"throughput front/haproxy: {sum(ratios) / len(ratios):.2f} (mean of {rounds} rounds; goal >= 0.80)")
print(f"CPU per request front/haproxy: {sum(cpus) / len(cpus):.2f}")
PY
