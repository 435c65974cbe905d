#!/usr/bin/env bash
# Peak RSS of both runtimes' hello apps with CONNS kept connections under
# load, dynamically and statically linked, split into anonymous memory (the
# app's own) and file-backed pages (code and data of the binary and of the
# shared libraries, mapped from disk).
#
#   benches/rss.sh [CONNS] [ROUNDS]     (default 64 connections, 3 rounds)
#
# Most of a small server's RSS is file-backed, and most of that is shared
# libraries: the kernel maps up to 64 KiB of a file around every page a
# process touches (fault-around), so touching a few functions spread over
# libc costs more than their size. A static build (glibc's libc.a, with
# `-C target-feature=+crt-static`) links only what the app calls, close
# together, and needs no dynamic loader. The README's targets table quotes
# this script. The app runs on CPU 0 and fcgi-load on CPU 1.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
conns=${1:-64}
rounds=${2:-3}
if [ "$(nproc)" -lt 2 ]; then
  echo "rss.sh needs 2 CPUs (the app on one, the load generator on the other)" >&2
  exit 2
fi
host=$(rustc -vV | sed -n 's/^host: //p')
work=$(mktemp -d /tmp/sfcgi-rss.XXXXXX)
app_pid=""
cleanup() {
  [ -n "$app_pid" ] && kill "$app_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "== building (dynamic: target/release; static: target/static)"
(cd "$root" && cargo build -q --release -p simple-fastcgi-benches -p simple-fastcgi-examples)
# --target keeps RUSTFLAGS off build scripts and proc macros, which must
# stay dynamic to be loaded by the compiler.
(cd "$root" && RUSTFLAGS="-C target-feature=+crt-static" cargo build -q --release \
  -p simple-fastcgi-examples --bin hello --bin hello-async \
  --target "$host" --target-dir "$root/target/static")
load="$root/target/release/fcgi-load"

# One measurement: prints "VmHWM RssAnon RssFile" in KiB at the end of the load.
measure() {
  local bin=$1 sock="$work/app.sock" stats
  rm -f "$sock"
  taskset -c 0 "$bin" "unix:$sock" 2>/dev/null &
  app_pid=$!
  for _ in $(seq 200); do [ -S "$sock" ] && break; sleep 0.05; done
  [ -S "$sock" ] || { echo "$bin did not start" >&2; exit 1; }
  if ! taskset -c 1 "$load" --addr "unix:$sock" --conns "$conns" --duration 3 --warmup 1 > "$work/load.txt"; then
    cat "$work/load.txt" >&2
    echo "fcgi-load failed against $bin" >&2
    exit 1
  fi
  stats=$(awk '/^(VmHWM|RssAnon|RssFile):/ { printf "%s ", $2 }' "/proc/$app_pid/status")
  kill "$app_pid"
  wait "$app_pid" 2>/dev/null || true
  app_pid=""
  echo "$stats"
}

printf '\n%d kept connections, %d rounds; KiB, median (min-max). Peak RSS is VmHWM;\n' "$conns" "$rounds"
printf 'anonymous and file-backed are RssAnon and RssFile at the end of the load.\n\n'
printf '| app | linked | peak RSS | anonymous | file-backed |\n| --- | --- | --- | --- | --- |\n'
for app in hello hello-async; do
  for link in dynamic static; do
    case "$link" in
      dynamic) bin="$root/target/release/$app" ;;
      static) bin="$root/target/static/$host/release/$app" ;;
    esac
    : > "$work/rounds.txt"
    for _ in $(seq "$rounds"); do
      measure "$bin" >> "$work/rounds.txt"
    done
    python3 - "$app" "$link" "$work/rounds.txt" <<'EOF'
import statistics, sys

app, link, path = sys.argv[1:4]
rows = [list(map(int, line.split())) for line in open(path) if line.strip()]
cells = []
for column in zip(*rows):
    cells.append(f"{int(statistics.median(column))} ({min(column)}-{max(column)})")
print(f"| {app} | {link} | " + " | ".join(cells) + " |")
EOF
  done
done
