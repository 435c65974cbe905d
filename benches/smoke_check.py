#!/usr/bin/env python3
"""Checks the results of a `compare.sh --smoke` run (JSON lines): every app
answered in every scenario and round, with no errors: fcgi-load checks each
answer (status, body, one END_REQUEST); wrk, through nginx and Caddy, counts
answers that are not 2xx or 3xx and socket errors. Speeds are
not checked: one second on a shared machine says nothing about them. The
one failure the comparison expects is listed below with its reason.

    smoke_check.py RESULTS.jsonl "APPS" "SCENARIOS"

Exits 1, naming each app and scenario that failed."""
import json
import sys

# (app, scenario): why errors are expected there.
EXPECTED_ERRORS = {
    ("php", "keep64"): "PHP-FPM's 8 workers each keep one of the 64 kept connections; "
    "the other 56 are never accepted and their first request goes unanswered",
}

path, apps, scenarios = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
results = {}
for line in open(path):
    line = line.strip()
    if line:
        r = json.loads(line)
        results.setdefault((r["app"], r["scenario"]), []).append(r)

failures = []
for scenario in scenarios:
    for app in apps:
        rounds = results.get((app, scenario), [])
        if not rounds:
            failures.append(f"{app} {scenario}: no result")
        for r in rounds:
            where = f"{app} {scenario} round {r.get('round', '?')}"
            if r["requests"] == 0:
                failures.append(f"{where}: no request answered")
            elif r["errors"] and (app, scenario) not in EXPECTED_ERRORS:
                failures.append(f"{where}: {r['errors']} errors in {r['requests']} requests")
            elif r["errors"]:
                print(f"smoke: {where}: {r['errors']} errors, expected: {EXPECTED_ERRORS[(app, scenario)]}")

for failure in failures:
    print(f"smoke FAILED: {failure}", file=sys.stderr)
if failures:
    sys.exit(1)
print(f"smoke: {len(apps)} apps answered in {len(scenarios)} scenarios without errors")
