#!/usr/bin/env python3
"""How much a fixed margin costs and what it absorbs, on each real trace of traces/.

Issue 16 asks `default` for SLO minutes <= hpa's and instance-hours <= 1.15x the oracle's on
every trace. This script shows, from the traces alone, where both cannot hold for a policy that
sizes the pool from what it has seen: at every step of the trace (its own resolution, 1 or 5
minutes), a rule sizes the pool at ceil(rate x (1 + margin)) members, or at the peak of the
last few steps times (1 + margin), from the readings up to that moment. A rise it did not
cover within `LEAD` seconds of any moment of the step it decided in (boot 60 s + health check 20 s + the metric's lag and a
tick, the simulator's defaults and the default policy's horizon) is a rise no member could be
booted for in time: SLO minutes. Printed per trace and rule: the member-steps it pays over the
demand's own (a lower bound of the oracle's instance-hours, which also pays boots), and the
uncovered rises. hpa's 60 % target is the margin 0.67.

It is an argument about a family of rules, not a proof about every policy: it shows what the
SLO costs on a trace where the next step is not in the past ones. Same scales and capacity as
bench/simulate.sh (10 requests/s per member).
"""
import math
import os
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
TRACES = [("wisc-diurnal", 30), ("wc98-flash", 0.085), ("wc98-night", 0.5), ("nasa-launch", 30)]
CAPACITY = 10.0
LEAD = 150.0


def load(name, scale):
    rows = []
    with open(os.path.join(ROOT, "traces", name + ".csv")) as f:
        for line in f:
            if line[:1].isdigit():
                t, r = line.strip().split(",")
                rows.append((float(t), float(r) * scale / CAPACITY))
    return rows


def need(x):
    return max(0, math.ceil(x - 1e-9))


def evaluate(rows, margin, peak_steps):
    step = rows[1][0] - rows[0][0]
    paid = needed = uncovered = 0
    for i, (t, _) in enumerate(rows):
        seen = [r for _, r in rows[max(0, i - peak_steps + 1) : i + 1]]
        size = need(max(seen) * (1 + margin))
        # The size chosen at the step's last moment must hold until a member started then is
        # ready: every step that begins before that.
        ahead = [need(r) for u, r in rows[i + 1 :] if u < t + step + LEAD]
        if ahead and max(ahead) > size:
            uncovered += 1
        paid += size
        needed += need(rows[i][1])
    return paid / needed, uncovered


def main():
    margins = [0.0, 0.1, 0.15, 0.2, 0.3, 0.4, 0.67]
    print("rule: size = ceil(peak of the last k steps x (1 + margin)); cost = member-steps over the")
    print("demand's; uncovered = steps after which the next %d s need more than the size" % LEAD)
    for name, scale in TRACES:
        rows = load(name, scale)
        step = rows[1][0] - rows[0][0]
        print("\n%s (%d steps of %d s, scale %s)" % (name, len(rows), step, scale))
        print("%8s" % "margin" + "".join("   k=%d cost/uncov" % k for k in (1, 2, 3)))
        for m in margins:
            cells = []
            for k in (1, 2, 3):
                c, u = evaluate(rows, m, k)
                cells.append("%11.2f / %3d" % (c, u))
            print("%8.2f" % m + "".join("   " + c for c in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
