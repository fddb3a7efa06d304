#!/usr/bin/env python3
"""Medians per case and ratios from run.sh's runs.tsv:  summary.py RUNS_TSV SUMMARY_MD"""
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
cases = []
for r in rows:
    if r["case"] not in cases:
        cases.append(r["case"])
med = {}
for c in cases:
    rs = [r for r in rows if r["case"] == c]
    m = {k: statistics.median(float(r[k]) for r in rs) for k in ("wall_s", "cpu_s", "user_s", "sys_s", "peak_rss_kib", "load1")}
    m["n"] = len(rs)
    m["bytes"], m["lines"], m["records"] = int(rs[0]["input_bytes"]), int(rs[0]["input_lines"]), int(rs[0]["records"])
    m["walls"] = sorted(float(r["wall_s"]) for r in rs)
    m["cpus"] = sorted(float(r["cpu_s"]) for r in rs)
    med[c] = m
out = ["| case | runs | input MB | input lines | records | wall s (median; min–max) | lines/s | MB/s | CPU s (min–max) | CPU s per GB | user / sys s | peak RSS MiB |",
       "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
for c in cases:
    m = med[c]
    out.append(f"| {c} | {m['n']} | {m['bytes']/1e6:.1f} | {m['lines']:,} | {m['records']:,} | "
               f"{m['wall_s']:.2f} ({m['walls'][0]:.2f}–{m['walls'][-1]:.2f}) | {m['lines']/m['wall_s']:,.0f} | "
               f"{m['bytes']/1e6/m['wall_s']:.1f} | {m['cpu_s']:.2f} ({m['cpus'][0]:.2f}–{m['cpus'][-1]:.2f}) | "
               f"{m['cpu_s']/(m['bytes']/1e9):.2f} | {m['user_s']:.2f} / {m['sys_s']:.2f} | {m['peak_rss_kib']/1024:.0f} |")
out += ["", "| ratio (medians) | wall | CPU | peak RSS |", "|---|---:|---:|---:|"]
for a, b, what in [("A-head", "A-base", "A: head / base, plain lines"),
                   ("B", "B-ref", "B: multiline / no stage, stack-trace input"),
                   ("C", "A-head", "C: interceptors / no stage, plain input"),
                   ("D", "D-ref", "D: format cri / plain lines, CRI input")]:
    if a in med and b in med:
        out.append(f"| {what} | {med[a]['wall_s']/med[b]['wall_s']:.3f} | {med[a]['cpu_s']/med[b]['cpu_s']:.3f} | "
                   f"{med[a]['peak_rss_kib']/med[b]['peak_rss_kib']:.2f} |")
# Paired per-round ratios for A (same round, adjacent runs).
if "A-head" in med and "A-base" in med:
    byr = {}
    for r in rows:
        byr.setdefault(r["round"], {})[r["case"]] = r
    pr = [(float(v["A-head"]["wall_s"]) / float(v["A-base"]["wall_s"]), float(v["A-head"]["cpu_s"]) / float(v["A-base"]["cpu_s"]))
          for v in byr.values() if "A-head" in v and "A-base" in v]
    out += ["", "A, per round (head/base, wall; CPU): " + ", ".join(f"{w:.3f}; {c:.3f}" for w, c in pr)]
open(sys.argv[2], "w").write("\n".join(out) + "\n")
print("\n".join(out))
