#!/usr/bin/env bash
# Syscalls per request of each runtime's hello app, keep-conn: the app runs
# under `strace -c -f` while fcgi-load sends REQUESTS requests over CONNS
# connections; the table divides each syscall's count by the requests.
#
#   benches/syscalls.sh [REQUESTS] [CONNS]     (default 20000, 8)
#
# strace slows the app down a lot; the counts, not the times, are the point.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
requests=${1:-20000}
conns=${2:-8}
work=$(mktemp -d /tmp/sfcgi-syscalls.XXXXXX)
trap 'rm -rf "$work"' EXIT
(cd "$root" && cargo build -q --release -p simple-fastcgi-benches -p simple-fastcgi-examples)
for app in hello hello-async; do
  sock="$work/$app.sock"
  taskset -c 0 "$root/target/release/$app" "$sock" 2>/dev/null &
  pid=$!
  for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
  # Warm up first, so connection set-up is not counted.
  taskset -c 1 "$root/target/release/fcgi-load" --addr "unix:$sock" --conns "$conns" --requests 2000 --warmup 0 > /dev/null
  strace -c -f -p "$pid" -o "$work/$app.strace" &
  tracer=$!
  sleep 0.5
  taskset -c 1 "$root/target/release/fcgi-load" --addr "unix:$sock" --conns "$conns" --requests "$requests" --warmup 0 > /dev/null
  kill -INT "$tracer"; wait "$tracer" 2>/dev/null || true
  kill "$pid"; wait "$pid" 2>/dev/null || true
  echo "== $app: syscalls per request ($requests keep-conn requests, $conns connections)"
  awk -v n="$requests" '$NF ~ /^[a-z_0-9]+$/ && $4 ~ /^[0-9]+$/ && $NF != "total" { printf "  %-16s %6.3f\n", $NF, $4 / n; sum += $4 } END { printf "  %-16s %6.3f\n", "all", sum / n }' "$work/$app.strace"
done
