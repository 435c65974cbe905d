#!/usr/bin/env bash
# glommio with 1 executor against 2, both cores serving: hello-async pinned
# to one CPU (one executor) and then allowed both (two executors), the load
# generator unpinned, keep-conn, 64 connections.
#
#   benches/scaling.sh [SECONDS] [ROUNDS]      (default 5, 3)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-5}
rounds=${2:-3}
work=$(mktemp -d /tmp/sfcgi-scaling.XXXXXX)
trap 'rm -rf "$work"' EXIT
(cd "$root" && cargo build -q --release -p simple-fastcgi-benches -p simple-fastcgi-examples)
measure() {
  local cpus=$1 sock="$work/app.sock"
  rm -f "$sock"
  taskset -c "$cpus" "$root/target/release/hello-async" "$sock" 2>/dev/null &
  local pid=$!
  for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
  "$root/target/release/fcgi-load" --addr "unix:$sock" --conns 64 --duration "$seconds" --warmup 1 --json \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["rps"])'
  kill "$pid"; wait "$pid" 2>/dev/null || true
}
one=(); two=()
for _ in $(seq "$rounds"); do
  one+=("$(measure 0)")
  two+=("$(measure 0,1)")
done
python3 - "${one[*]}" "${two[*]}" <<'PY'
import statistics, sys
one = [float(x) for x in sys.argv[1].split()]
two = [float(x) for x in sys.argv[2].split()]
a, b = statistics.median(one), statistics.median(two)
print(f"1 executor: {a:,.0f} req/s (median of {one})")
print(f"2 executors: {b:,.0f} req/s (median of {two})")
print(f"scaling: {b / a:.2f}x")
PY
