#!/usr/bin/env python3
"""Reads wrk's output (with --latency) on stdin; prints one JSON line in
fcgi-load's format: requests, errors, rps, p50_us, p99_us."""
import json
import re
import sys

text = sys.stdin.read()


def micros(value):
    match = re.match(r"([\d.]+)(us|ms|s|m)", value)
    if not match:
        return 0.0
    number, unit = match.groups()
    return float(number) * {"us": 1, "ms": 1000, "s": 1000000, "m": 60000000}[unit]


requests = int(re.search(r"(\d+) requests in", text).group(1))
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
errors = 0
for match in re.finditer(r"Non-2xx or 3xx responses: (\d+)", text):
    errors += int(match.group(1))
socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
if socket_errors:
    errors += sum(int(n) for n in socket_errors.groups())
p50_match = re.search(r"50%\s+(\S+)", text)
p99_match = re.search(r"99%\s+(\S+)", text)
p50 = micros(p50_match.group(1)) if p50_match else 0.0
p99 = micros(p99_match.group(1)) if p99_match else 0.0
print(json.dumps({"requests": requests, "errors": errors, "rps": rps, "p50_us": round(p50), "p99_us": round(p99)}))
