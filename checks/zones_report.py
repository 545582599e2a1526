#!/usr/bin/env python3
"""Checks the report of `poolpilot demo --zones 2` (zones.json): the facts the story claims,
read back from what it recorded, not from its exit code.

- every client request got a 200 (failed_requests == 0, and some succeeded);
- the lost zone was ejected by the front after it went down, and healthy (re-admitted, with
  healthy members at its NLB) after it came back, at the end;
- the surviving zone's pool was larger during the outage than when the zone went down;
- no problem was recorded; zones.svg exists.

Usage: checks/zones_report.py DIR
"""
import json
import os
import sys

d = sys.argv[1]
r = json.load(open(os.path.join(d, "zones.json")))
failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)


zones = r["zones"]
lost = zones.index(r["lost"])
survivor = 0
samples = r["samples"]
check(r["failed_requests"] == 0, f"{r['failed_requests']} client requests failed")
check(r["ok_requests"] > 0, "no client request succeeded")
check(not r["problems"], f"problems: {r['problems']}")
down, up = r["down_at_s"], r["up_at_s"]
during = [s for s in samples if down <= s["t"] <= up]
check(any(s["zones"][lost][2] == "ejected" for s in during), "the lost zone was never ejected during the outage")
check(not any(s["zones"][lost][2] == "ejected" for s in samples if s["t"] < down), "a zone was ejected before the outage")
last = samples[-1]
check(last["zones"][lost][2] == "healthy" and last["zones"][lost][1] > 0, f"the lost zone is not back at the end: {last['zones'][lost]}")
at_down = max((s for s in samples if s["t"] <= down), key=lambda s: s["t"])["zones"][survivor][0]
check(any(s["zones"][survivor][0] > at_down for s in samples if s["t"] >= down),
      f"{zones[survivor]} never grew past {at_down} after {zones[lost]} went down")
check(os.path.getsize(os.path.join(d, "zones.svg")) > 500, "zones.svg is missing or empty")
if failures:
    for f in failures:
        print(f"zones report: FAIL: {f}")
    sys.exit(1)
print(f"zones report: ok: {r['ok_requests']} requests, 0 failed; {r['lost']} ejected while down and re-admitted; "
      f"{zones[survivor]} grew from {at_down}")
