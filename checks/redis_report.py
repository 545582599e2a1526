#!/usr/bin/env python3
"""Checks the report of `poolpilot demo --profile redis` (redis.json): the facts the story
claims, read back from what it recorded, not from its exit code.

- every request of the load got an answer it counts as ok (failed == 0, and some succeeded);
- every acknowledged write was read back through the API (verify: acknowledged == ok > 0);
- both pools (replicas, api) grew past one member, and both were back at one healthy member
  before the load ended (the shrink happened under load, so drains were exercised);
- the replicas the primary counted online followed the replica pool up;
- no problem was recorded; redis.svg exists.

Usage: checks/redis_report.py DIR
"""
import json
import os
import sys

d = sys.argv[1]
r = json.load(open(os.path.join(d, "redis.json")))
failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)


load, verify, samples = r["load"], r["verify"]["report"], r["samples"]
check(load["failed"] == 0, f"{load['failed']} requests failed: {load['errors']}")
check(load["ok"] > 0, "no request succeeded")
check(verify["acknowledged"] > 0, "no write was acknowledged")
check(verify["ok"] == verify["acknowledged"],
      f"{verify['acknowledged'] - verify['ok']} of {verify['acknowledged']} acknowledged writes did not read back")
check(not r["problems"], f"problems: {r['problems']}")
for i, name in enumerate(r["pools"]):
    top = max(s["pools"][i]["size"] for s in samples)
    check(top >= 2, f"the {name} pool never grew (max {top})")
    peak = max(range(len(samples)), key=lambda k: samples[k]["pools"][i]["size"])
    check(any(s["pools"][i]["size"] == 1 and s["pools"][i]["healthy"] == 1 for s in samples[peak:]),
          f"the {name} pool never came back to one healthy member")
check(max(s["replicas_online"] for s in samples) >= 2, "the primary never counted two replicas online")
check(os.path.getsize(os.path.join(d, "redis.svg")) > 500, "redis.svg is missing or empty")
if failures:
    for f in failures:
        print(f"redis report: FAIL: {f}")
    sys.exit(1)
tops = [max(s["pools"][i]["size"] for s in samples) for i in range(len(r["pools"]))]
print(f"redis report: ok: {load['ok']} requests, 0 failed; {verify['acknowledged']} acknowledged writes, all read back; "
      + ", ".join(f"{n} 1 -> {t} -> 1" for n, t in zip(r["pools"], tops)))
