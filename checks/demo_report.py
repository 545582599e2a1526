#!/usr/bin/env python3
"""Checks a `poolpilot demo --fast` report: the story happened and the chart is readable.

Usage: checks/demo_report.py DEMO_OUT_DIR
"""
import csv
import json
import sys
import xml.etree.ElementTree as ET


def fail(msg):
    print(f"demo report: FAIL: {msg}")
    sys.exit(1)


out = sys.argv[1]
rows = list(csv.DictReader(open(f"{out}/timeline.csv")))
if len(rows) < 30:
    fail(f"only {len(rows)} timeline rows")
sizes = [int(r["size"]) for r in rows]
if sizes[0] != 1:
    fail(f"the pool started at {sizes[0]}, not 1")
if max(sizes) < 3:
    fail(f"the pool grew only to {max(sizes)}")
if sizes[-1] != 1:
    fail(f"the pool ended at {sizes[-1]}")
if int(rows[-1]["failed_total"]) != 0:
    fail(f"{rows[-1]['failed_total']} failed requests")
cpus = [float(r["cpu_pct"]) for r in rows if r["cpu_pct"]]
if not cpus or max(cpus) < 80 or min(cpus) > 20:
    fail("the CPU never crossed both thresholds")

report = json.load(open(f"{out}/timeline.json"))
o = report["summary"]["outcome"]
if o["problems"] or o["scale_ups"] < 2 or o["scale_downs"] < 2:
    fail(f"outcome {o}")
if len(report["samples"]) != len(rows):
    fail("CSV and JSON disagree")
if not all(d["reason"] for d in report["decisions"]):
    fail("a decision without a reason")

svg = ET.parse(f"{out}/chart.svg").getroot()
texts = " ".join(t.text or "" for t in svg.iter("{http://www.w3.org/2000/svg}text"))
for needed in ["time since the load started (s)", "pool-average CPU (%)", "pool size (instances)",
               "load (concurrent /load clients)", "▲", "▼"]:
    if needed not in texts:
        fail(f"the chart lacks `{needed}`")
paths = list(svg.iter("{http://www.w3.org/2000/svg}path"))
if len(paths) < 4:
    fail(f"the chart has {len(paths)} series, expected 4")
print(f"demo report: ok: {len(rows)} s, pool 1 -> {max(sizes)} -> {sizes[-1]}, "
      f"{o['scale_ups']} up / {o['scale_downs']} down, {o['ok_requests']} requests ok, 0 failed")
