#!/usr/bin/env bash
# Syscalls and context switches per request, keep-conn, of each runtime's
# hello app and of the two least-work references: fcgi-least (one thread,
# one epoll) and `fcgi-least --thread-per-conn` (blocking reads, one thread
# per connection: one read and one write per request, the floor).
#
#   benches/syscalls.sh [REQUESTS] [CONNS]     (default 200000, 8)
#   APPS="fcgi-least,fcgi-least --uring" benches/syscalls.sh    (some apps only)
#   SPIN=0 benches/syscalls.sh    (fcgi-load sleeps at once; default: it polls
#                                  for up to 1000 us first, as in compare.sh)
#
# `fcgi-least --uring` is the least-work server on an io_uring of its own
# (multishot recv into provided buffers, sends submitted in batches, one
# io_uring_enter per round): what a server pays that submits its socket
# I/O through io_uring.
#
# The counts come from `perf stat` on the kernel's syscall tracepoints,
# which barely slows the app. (`strace -c` slows it several times over;
# then more requests wait at each `epoll_wait` and the counts of servers
# that batch look better than they are.) Needs perf (Debian: linux-perf)
# and root, or a perf_event_paranoid that allows tracepoints.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
requests=${1:-200000}
conns=${2:-8}
spin=${SPIN:-1000}
work=$(mktemp -d /tmp/sfcgi-syscalls.XXXXXX)
trap 'rm -rf "$work"' EXIT
command -v perf > /dev/null || { echo "syscalls.sh: perf is not installed (apt-get install linux-perf)" >&2; exit 1; }
(cd "$root" && cargo build -q --release -p simple-fastcgi-benches -p simple-fastcgi-examples)
bin="$root/target/release"
IFS=, read -ra apps <<< "${APPS:-hello,hello-async,fcgi-least,fcgi-least --thread-per-conn,fcgi-least --uring}"
for app in "${apps[@]}"; do
  sock="$work/app.sock"
  rm -f "$sock"
  # shellcheck disable=SC2086 # the app's name carries its flags
  taskset -c 0 "$bin"/$app "unix:$sock" 2>/dev/null &
  pid=$!
  for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
  # Warm up first, so start-up is not counted.
  taskset -c 1 "$bin/fcgi-load" --addr "unix:$sock" --conns "$conns" --spin "$spin" --requests 20000 --warmup 0 > /dev/null
  perf stat -x, -e 'syscalls:sys_enter_*' -e context-switches -p "$pid" -o "$work/perf.csv" &
  tracer=$!
  sleep 0.5
  taskset -c 1 "$bin/fcgi-load" --addr "unix:$sock" --conns "$conns" --spin "$spin" --requests "$requests" --warmup 0 > /dev/null
  kill -INT "$tracer"; wait "$tracer" 2>/dev/null || true
  # Once more without perf, whose counters slow some apps down (std's
  # threads), for the app's CPU time per request and its req/s.
  ticks_before=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
  taskset -c 1 "$bin/fcgi-load" --addr "unix:$sock" --conns "$conns" --spin "$spin" --requests "$requests" --warmup 0 --json > "$work/load.json"
  ticks_after=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  echo "== $app: per request ($requests keep-conn requests, $conns connections)"
  awk -F, -v n="$requests" -v ticks=$((ticks_after - ticks_before)) -v hz="$(getconf CLK_TCK)" \
    -v rps="$(grep -o '"rps":[0-9.]*' "$work/load.json" | cut -d: -f2)" '
    $3 ~ /^syscalls:sys_enter_/ && $1 + 0 > 0 { name = substr($3, 20); count[name] = $1; sum += $1 }
    $3 == "context-switches" { switches = $1 }
    END {
      for (name in count) if (count[name] / n >= 0.001) printf "  %-16s %6.3f\n", name, count[name] / n | "sort"
      close("sort")
      printf "  %-16s %6.3f\n  %-16s %6.3f\n", "all syscalls", sum / n, "context switches", switches / n
      printf "  %-16s %6.2f us (%.0f req/s, without perf)\n", "app CPU", ticks / hz / n * 1e6, rps
    }' "$work/perf.csv"
done
