#!/usr/bin/env python3
"""Cuts the copied source tables in raw/ into the traces of this directory (README.md says
where each table comes from). Rates are the source's counts over the interval's length; nothing
is smoothed, interpolated or synthesised. Run from anywhere: python3 traces/raw/build.py"""
import os

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.dirname(HERE)


def write(name, header, rows):
    with open(os.path.join(OUT, name), "w") as f:
        for line in header:
            f.write(f"# {line}\n")
        f.write("time_s,requests_per_s\n")
        for t, r in rows:
            f.write(f"{t},{r:.4f}\n")


def lines(name):
    with open(os.path.join(HERE, name)) as f:
        return [l.strip() for l in f if l.strip() and not l.startswith("#")]


# www.cs.wisc.edu, analog hourly report: 48 whole hours, 28/Nov/00 01:00 to 30/Nov/00 01:00.
hours = [int(l.rsplit(":", 1)[1]) for l in lines("wisc-hourly.txt")]
assert len(hours) == 48
# An hourly count says how many requests came in that hour, not that the rate jumped on the
# hour: each hour's mean rate is placed at the hour's middle and the rate between two middles
# is a straight line (one row a minute); before the first and after the last middle it holds.
mids = [((i + 0.5) * 3600, n / 3600) for i, n in enumerate(hours)]


def rate_at(t):
    if t <= mids[0][0]:
        return mids[0][1]
    for (t0, r0), (t1, r1) in zip(mids, mids[1:]):
        if t <= t1:
            return r0 + (r1 - r0) * (t - t0) / (t1 - t0)
    return mids[-1][1]


rows = [(m * 60, rate_at(m * 60)) for m in range(48 * 60 + 1)]
write("wisc-diurnal.csv", [
    "www.cs.wisc.edu, all requests per hour (analog), 2000-11-28 01:00 to 2000-11-30 01:00",
    "local server time; each hour's rate (requests / 3600) at the hour's middle, linear between",
    "middles, one row a minute; see README.md",
], rows)

# WorldCup98, requests per minute, 1998-06-10 13:00 to 17:25 (timestamps as in the source).
# A minute split over two source files (the files are cut by size) is the sum of its parts.
per_minute = {}
for l in lines("wc98-0610.txt"):
    stamp, count = l.split(",")
    per_minute[stamp] = per_minute.get(stamp, 0) + int(count)
stamps = sorted(per_minute)
assert stamps[0] == "1998-06-10 13:00" and stamps[-1] == "1998-06-10 17:25", stamps[-1]
assert len(stamps) == 266
rows = [(i * 60, per_minute[s] / 60) for i, s in enumerate(stamps)]
rows.append((len(stamps) * 60, per_minute[stamps[-1]] / 60))
write("wc98-flash.csv", [
    "WorldCup98 (www.france98.com), all requests per minute, 1998-06-10 13:00 to 17:25",
    "the opening match's crowd; rate = the minute's requests / 60; see README.md",
], rows)

# WorldCup98, 1998-06-09 22:01 to 1998-06-10 01:59 (22:00 is cut: its minute is split with
# the previous source file, which was not copied).
counts = [int(x) for l in lines("wc98-0609-night.txt") for x in l.split()][1:]
assert len(counts) == 239
rows = [(i * 60, n / 60) for i, n in enumerate(counts)] + [(len(counts) * 60, counts[-1] / 60)]
write("wc98-night.csv", [
    "WorldCup98 (www.france98.com), all requests per minute, 1998-06-09 22:01 to 1998-06-10 01:59",
    "a night plateau with minute-to-minute bursts; rate = the minute's requests / 60; see README.md",
], rows)

# NASA-HTTP (Kennedy Space Center WWW server), requests per 5 minutes, 1995-07-13 00:00 to
# 16:55 (-04:00): the day of the STS-70 launch. One row per 5-minute bin at its start (the load
# holds for the bin), plus a closing row at 17:00 that holds the last bin.
per_bin = []
for i, l in enumerate(lines("nasa-0713-5min.txt")):
    stamp, count = l.split(",")
    hh, mm = divmod(i * 5, 60)
    assert stamp == f"1995-07-13 {hh:02d}:{mm:02d}:00-04:00", stamp
    per_bin.append(float(count))
assert len(per_bin) == 204
rows = [(i * 300, n / 300) for i, n in enumerate(per_bin)]
rows.append((len(per_bin) * 300, per_bin[-1] / 300))
write("nasa-launch.csv", [
    "NASA-HTTP (NASA Kennedy Space Center WWW server), all requests per 5 minutes,",
    "1995-07-13 00:00 to 16:55 (-04:00, the log's time): the STS-70 launch day, rising to the",
    "launch and falling back, with one-bin dips; rate = the bin's requests / 300; see README.md",
], rows)
