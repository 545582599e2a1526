#!/usr/bin/env bash
# Issue: the elasticity benchmark and policy simulator.
# For each built-in trace, the elastic speedup of our default policy over `course` (the
# course's webhook rule) and over `hpa` (Kubernetes' defaults): the geometric mean of the
# ratios of θU, θO, τU, τO (SPEC RG elasticity metrics), all three run side by side in one
# `poolpilot simulate` per trace, the same model, seed and ceiling (--max 10). Also printed:
# SLO-violation minutes and cost, because a speedup can be bought with money.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -q
BIN=target/release/poolpilot
SEEDS=${SEEDS:-1}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
printf '%-7s %5s %12s %10s %14s %14s %14s\n' trace seed "x course" "x hpa" "SLO-min c/h/d" "EUR c/h/d" "changes c/h/d"
for trace in step ramp sine spike noisy; do
  for seed in $(seq 1 "$SEEDS"); do
    $BIN simulate --trace "$trace" --seed "$seed" --max 10 \
      --policy course --policy hpa --policy default --json --svg "$OUT/$trace.svg" > "$OUT/$trace.json"
    python3 - "$OUT/$trace.json" "$trace" "$seed" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
p = {x["policy"]: x for x in r["policies"]}
d = p["default"]
f = lambda k, fmt: "/".join(fmt % p[n]["scores"][k] for n in ("course", "hpa", "default"))
print("%-7s %5s %12.2f %10.2f %14s %14s %14s" % (
    sys.argv[2], sys.argv[3], d["speedup_over_course"], d["speedup_over_hpa"],
    f("slo_violation_minutes", "%.0f"), f("cost_eur", "%.3f"), f("scale_changes", "%d")))
PY
  done
done
echo "x course, x hpa: elastic speedup of 'default' (> 1: better); c/h/d = course/hpa/default"
