#!/usr/bin/env python3
"""Summarizes benches/compare.sh results (JSON lines) as Markdown tables:
per scenario, per app: median req/s with the spread over rounds, the ratio
to the least-work server and to tokio-fastcgi, median p50/p99 latency, the
app's CPU time per request, how busy its CPU was, its peak RSS, and how
busy the load generator's own CPU was with work (not counting the time it
polled for answers not yet come, `--spin`): near 100%, the load generator,
not the app, set the pace, and the app's CPU time per request is the fairer
comparison; with the app's CPU near 100%, the app set it."""
import json
import statistics
import sys
from collections import defaultdict

NAMES = {
    "least": "least-work (ceiling)",
    "least-uring": "least-work on io_uring",
    "std": "simple-fastcgi std",
    "glommio": "simple-fastcgi glommio",
    "libfcgi": "libfcgi (C, threaded)",
    "go": "Go net/http/fcgi",
    "php": "PHP-FPM",
    "tokio": "tokio-fastcgi",
}
SCENARIOS = {
    "keep1": "keep-conn, 1 connection",
    "keep8": "keep-conn, 8 connections",
    "keep64": "keep-conn, 64 connections",
    "new8": "new connection per request, 8 at once",
    "post64k": "POST 64 KiB, keep-conn, 8 connections",
    "nginx8": "through nginx (wrk, 8 connections)",
    "caddy8": "through Caddy (wrk, 8 connections)",
}

runs = defaultdict(list)
for line in open(sys.argv[1]):
    line = line.strip()
    if line:
        r = json.loads(line)
        runs[(r["scenario"], r["app"])].append(r)

order = [a for a in NAMES if any(app == a for (_, app) in runs)]
for scenario in [s for s in SCENARIOS if any(sc == s for (sc, _) in runs)]:
    medians = {}
    for app in order:
        rs = runs.get((scenario, app), [])
        if rs:
            medians[app] = statistics.median(r["rps"] for r in rs)
    print(f"\n### {SCENARIOS[scenario]}\n")
    print("| app | req/s (median, min–max) | vs least-work | vs tokio-fastcgi | p50 / p99 µs | app CPU µs/req | app CPU | peak RSS | load-gen CPU | errors |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for app in order:
        rs = runs.get((scenario, app), [])
        if not rs:
            continue
        rates = [r["rps"] for r in rs]
        median = medians[app]
        least = medians.get("least")
        tokio = medians.get("tokio")
        vs_least = f"{median / least:.0%}" if least else "–"
        vs_tokio = f"{median / tokio:.1f}×" if tokio else "–"
        p50 = statistics.median(r["p50_us"] for r in rs)
        p99 = statistics.median(r["p99_us"] for r in rs)
        cpu = [r["app_cpu_s"] * 1e6 / r["requests"] for r in rs if r["requests"]]
        cpu_text = f"{statistics.median(cpu):.1f}" if cpu else "–"
        # wrk's lines (through nginx or Caddy) carry no duration: requests / rate.
        seconds = [r.get("seconds") or (r["requests"] / r["rps"] if r["rps"] else 0) for r in rs]
        app_busy = [r["app_cpu_s"] / t for r, t in zip(rs, seconds) if t]
        app_busy_text = f"{statistics.median(app_busy):.0%}" if app_busy else "–"
        rss = max(r["peak_rss_kib"] for r in rs)
        busy = [
            (r["loadgen_cpu_us_per_request"] - r.get("loadgen_spin_us_per_request", 0)) * r["rps"] / 1e6
            for r in rs
            if "loadgen_cpu_us_per_request" in r
        ]
        busy_text = f"{statistics.median(busy):.0%}" if busy else "–"
        errors = sum(r["errors"] for r in rs)
        print(
            f"| {NAMES[app]} | {median:,.0f} ({min(rates):,.0f}–{max(rates):,.0f}) | {vs_least} | {vs_tokio} "
            f"| {p50:.0f} / {p99:.0f} | {cpu_text} | {app_busy_text} | {rss / 1024:.1f} MiB | {busy_text} | {errors} |"
        )
