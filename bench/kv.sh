#!/usr/bin/env bash
# Issue 19: poolpilot kv. Measured side by side in one run, everything on 127.0.0.1 (Debian's
# redis-server and redis-benchmark; apt-get install redis-server redis-tools), bounded in time:
#  1. the cost of the HTTP layer: one `poolpilot kv` member's read throughput (GET /item, closed
#     loop, $CONC connections, ${DUR}s, `poolpilot load`) as a ratio of `redis-benchmark -t get`
#     against the same replica with the same connection count; both read the same 3-byte value;
#  2. read throughput with 1, 2 and 3 replicas: N kv members, member i reading from replica i
#     (the shape of the appliance: API members scale with the replicas), loaded by N
#     `poolpilot load` processes at once ($CONC/N connections each); the sum of their rates, and
#     its ratio to N = 1.
# The load generators, the API members and the Redis servers all share this machine's cores
# ($(nproc) here), so (2) shows how far one machine goes, not how far separate machines would:
# read it as an upper bound on the overhead, not as a scaling curve for the cloud.
# Not run in CI.
set -euo pipefail
cd "$(dirname "$0")/.."
for t in redis-server redis-cli redis-benchmark; do
  command -v $t >/dev/null || { echo "$t is required: apt-get install redis-server redis-tools" >&2; exit 1; }
done
cargo build --release --locked -q
BIN=$PWD/target/release/poolpilot
DUR=${DUR:-10}
CONC=${CONC:-32}
PRIMARY=${PRIMARY:-18291}
REPLICAS=(${R1:-18292} ${R2:-18293} ${R3:-18294})
KV=(${K1:-18295} ${K2:-18296} ${K3:-18297})
KEY='key:__rand_int__' # redis-benchmark's GET key when no -r is given
TMP=$(mktemp -d)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$TMP"' EXIT

redis() { # port, extra args...
  local port=$1; shift
  mkdir -p "$TMP/r$port"
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$TMP/r$port" \
    "$@" >"$TMP/r$port/log" 2>&1 & PIDS+=($!)
  for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && return; sleep 0.1; done
  echo "redis-server on $port did not start" >&2; exit 1
}
redis "$PRIMARY"
for r in "${REPLICAS[@]}"; do redis "$r" --replicaof 127.0.0.1 "$PRIMARY"; done
redis-cli -p "$PRIMARY" set "$KEY" abc >/dev/null
# Each replica is in sync and holds the key before anything is measured.
for r in "${REPLICAS[@]}"; do
  for _ in $(seq 300); do
    [ "$(redis-cli -p "$r" get "$KEY")" = abc ] && break; sleep 0.1
  done
  [ "$(redis-cli -p "$r" get "$KEY")" = abc ] || { echo "replica $r did not sync" >&2; exit 1; }
done
for i in 0 1 2; do
  REDIS_URL=redis://127.0.0.1:$PRIMARY REDIS_REPLICAS_URL=redis://127.0.0.1:${REPLICAS[$i]} \
    "$BIN" kv --listen 127.0.0.1:${KV[$i]} --instance-id "bench-$i" --log-format text \
    2>"$TMP/kv$i.log" & PIDS+=($!)
done
for k in "${KV[@]}"; do
  for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$k/item?id=key%3A__rand_int__" >/dev/null 2>&1 && break; sleep 0.1; done
done

load() { # member index, connections, output
  "$BIN" load --url "http://127.0.0.1:${KV[$1]}/item?id=key%3A__rand_int__" \
    --concurrency "$2" --duration "${DUR}s" --json >"$3"
}

echo "== 1. GET of one key, $CONC connections, ${DUR}s, $(nproc) cores shared by everything"
load 0 "$CONC" "$TMP/kv1.json"
# As many GETs as the API answered in its run, so both run about as long.
N=$(python3 -c "import json; print(max(10000, int(json.load(open('$TMP/kv1.json'))['ok'])))")
redis-benchmark -p "${REPLICAS[0]}" -t get -c "$CONC" -n "$N" --csv >"$TMP/redis.csv"

echo "== 2. reads with 1, 2 and 3 replicas (N members, member i on replica i, N loaders at once)"
for n in 1 2 3; do
  per=$(( CONC / n > 0 ? CONC / n : 1 ))
  for i in $(seq 0 $((n - 1))); do
    load "$i" "$per" "$TMP/scale$n-$i.json" & LOADERS+=($!)
  done
  wait "${LOADERS[@]}"; LOADERS=()
done

python3 - "$TMP" <<'PY'
import csv, glob, json, sys
d = sys.argv[1]
kv = json.load(open(f"{d}/kv1.json"))
row = next(r for r in csv.DictReader(open(f"{d}/redis.csv")) if r["test"] == "GET")
redis_rps = float(row["rps"])
print(f"kv member   {kv['rate']:9.0f} req/s  p50 {kv['latency_ms']['p50']:6.2f} ms  p99 {kv['latency_ms']['p99']:6.2f} ms  failed {kv['failed']}")
print(f"redis GET   {redis_rps:9.0f} req/s  p50 {float(row['p50_latency_ms']):6.2f} ms  p99 {float(row['p99_latency_ms']):6.2f} ms")
print(f"HTTP layer: kv/redis throughput {kv['rate'] / redis_rps:.2f} (1 kv member vs redis-benchmark, same replica, same connections)")
base = None
for n in (1, 2, 3):
    runs = [json.load(open(f)) for f in sorted(glob.glob(f"{d}/scale{n}-*.json"))]
    total = sum(r["rate"] for r in runs)
    failed = sum(r["failed"] for r in runs)
    p99 = max(r["latency_ms"]["p99"] for r in runs)
    base = base or total
    print(f"{n} replica(s) + {n} member(s): {total:9.0f} req/s  worst p99 {p99:6.2f} ms  failed {failed}  x{total / base:.2f} of 1")
PY
