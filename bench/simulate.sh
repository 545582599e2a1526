#!/usr/bin/env bash
# Issue 16: the default policy against Kubernetes' HPA and the oracle, on every trace.
#
# For each synthetic trace (noisy with 5 seeds) and each real trace of traces/ (at the scale
# traces/README.md gives it), one `poolpilot simulate` runs course, hpa, default and the oracle
# side by side (same model, same seed, --max 20). Printed for each policy: the elastic speedup
# over hpa and over course (SPEC RG: geometric mean of the θU, θO, τU, τO ratios, > 1 is
# better), instance-hours as a ratio of the oracle's, and SLO-violation minutes. The last
# columns check the acceptance target of issue 16 for `default`: speedup over hpa >= 1.3, SLO
# minutes <= hpa's, instance-hours <= 1.15 x the oracle's.
#
# The bench is seed 1 (the boot delays) and noisy's seeds 1-5. To see how much of a result is
# the seed, run others side by side: SEEDS="2 3 4 5" (every trace but noisy) and NOISY_SEEDS
# (e.g. "6 7 8 9 10 11 12 13 14 15", which were never used to choose the parameters).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -q
BIN=target/release/poolpilot
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

SEEDS=${SEEDS:-1}
NOISY_SEEDS=${NOISY_SEEDS:-1 2 3 4 5}
real=("traces/wisc-diurnal.csv 30" "traces/wc98-flash.csv 0.085" "traces/wc98-night.csv 0.5" "traces/nasa-launch.csv 30")
runs=()
for seed in $SEEDS; do
  for trace in step ramp sine spike; do runs+=("$trace 1 $seed"); done
done
for seed in $NOISY_SEEDS; do runs+=("noisy 1 $seed"); done
for r in "${real[@]}"; do
  for seed in $SEEDS; do runs+=("$r $seed"); done
done

i=0
for r in "${runs[@]}"; do
  read -r trace scale seed <<<"$r"
  $BIN simulate --trace "$trace" --scale "$scale" --seed "$seed" --max 20 \
    --policy course --policy hpa --policy default --policy oracle \
    --json --svg "$OUT/$i.svg" > "$OUT/$i.json"
  i=$((i + 1))
done

python3 - "$OUT" "$i" <<'PY'
import json, os, sys
out, n = sys.argv[1], int(sys.argv[2])
hdr = "%-18s %4s %-8s %7s %8s %8s %8s" % ("trace", "seed", "policy", "x hpa", "x course", "h/oracle", "SLO-min")
print(hdr)
print("-" * len(hdr))
summary = []
for i in range(n):
    r = json.load(open(os.path.join(out, "%d.json" % i)))
    p = {x["policy"]: x for x in r["policies"]}
    name = os.path.basename(r["trace"]).replace(".csv", "")
    for pol in ("course", "hpa", "default", "oracle"):
        x = p[pol]
        print("%-18s %4s %-8s %7.2f %8.2f %8.2f %8.1f" % (
            name, r["seed"], pol, x["speedup_over_hpa"], x["speedup_over_course"],
            x["instance_hours_over_oracle"], x["scores"]["slo_violation_minutes"]))
    d, h = p["default"], p["hpa"]
    checks = (
        d["speedup_over_hpa"] >= 1.3,
        d["scores"]["slo_violation_minutes"] <= h["scores"]["slo_violation_minutes"] + 1e-9,
        d["instance_hours_over_oracle"] <= 1.15,
    )
    summary.append((name, r["seed"], d, h, checks))
    print()
print("acceptance for default (issue 16): speedup over hpa >= 1.3 | SLO-min <= hpa's | h/oracle <= 1.15")
ok = 0
for name, seed, d, h, (a, b, c) in summary:
    mark = lambda v: "yes" if v else "NO "
    print("%-18s %4s  x hpa %5.2f %s | SLO %5.1f vs %5.1f %s | h/oracle %4.2f %s" % (
        name, seed, d["speedup_over_hpa"], mark(a), d["scores"]["slo_violation_minutes"],
        h["scores"]["slo_violation_minutes"], mark(b), d["instance_hours_over_oracle"], mark(c)))
    ok += a + b + c
print("%d of %d checks hold" % (ok, 3 * len(summary)))
PY
