#!/usr/bin/env bash
# The FastCGI comparison: our runtimes against the least-work server (the
# ceiling; also on an io_uring of its own, least-uring), libfcgi, Go's net/http/fcgi, PHP-FPM and tokio-fastcgi, each a
# "Hello, world!" app on a Unix socket, started by spawn-fcgi on fd 0
# (PHP-FPM by its own master).
#
#   benches/compare.sh [--rounds N] [--duration SECONDS] [--apps "least std ..."]
#                      [--scenarios "keep1 keep8 ..."] [--spin MICROS] [--out DIR]
#                      [--quick | --smoke]
#
# Every app is pinned to CPU 0 and the load generator (fcgi-load, or wrk
# through nginx or Caddy, which share the app's CPU) to CPU 1. fcgi-load
# polls for up to --spin microseconds (default 1000) before it sleeps, so
# that the apps are not charged for waking it after every answer (a
# cross-CPU interrupt, dear in a VM); --spin 0 measures with a load
# generator that sleeps at once. Apps are started fresh for every measurement and
# alternated over the rounds; the summary gives the median req/s with the
# spread, p50/p99 latency, the app's CPU time per request and its peak RSS.
# Throughput ratios against the least-work server and against tokio-fastcgi
# are the headline: absolute numbers drift on shared machines.
#
# Needs: a release build (done here), spawn-fcgi, gcc and libfcgi-dev,
# golang-go, php-fpm, nginx, caddy, wrk, taskset (util-linux), python3. `--quick` is a
# one-minute look at our runtimes: one round of one second, three apps, two
# scenarios. `--smoke` (what CI runs) is one round of one second with every
# app and every scenario, and fails unless every app answered in every
# scenario without errors (benches/smoke_check.py); it checks that
# the comparison still runs on a fresh machine, not how fast anything is.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
rounds=3
duration=5
apps="least least-uring std glommio libfcgi go php tokio"
scenarios="keep1 keep8 keep64 new8 post64k nginx8 caddy8"
out="$root/target/compare"
spin=1000
smoke=false
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --apps) apps=$2; shift 2 ;;
    --scenarios) scenarios=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --spin) spin=$2; shift 2 ;;
    --quick) rounds=1; duration=1; apps="least std glommio"; scenarios="keep8 new8"; shift ;;
    --smoke) rounds=1; duration=1; smoke=true; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
# Names are checked before anything is built or measured.
for app in $apps; do
  case "$app" in
    least | least-uring | std | glommio | libfcgi | go | php | tokio) ;;
    *) echo "unknown app $app (least least-uring std glommio libfcgi go php tokio)" >&2; exit 2 ;;
  esac
done
for scenario in $scenarios; do
  case "$scenario" in
    keep1 | keep8 | keep64 | new8 | post64k | nginx8 | caddy8) ;;
    *) echo "unknown scenario $scenario (keep1 keep8 keep64 new8 post64k nginx8 caddy8)" >&2; exit 2 ;;
  esac
done
if [ "$(nproc)" -lt 2 ]; then
  echo "compare.sh needs 2 CPUs (the app on one, the load generator on the other)" >&2
  exit 2
fi
APP_CPU=0
LOAD_CPU=1
mkdir -p "$out"
work=$(mktemp -d /tmp/sfcgi-compare.XXXXXX)
bin="$root/target/release"
results="$out/results.jsonl"
: > "$results"
app_pid=""
web_pid=""

cleanup() {
  [ -n "$app_pid" ] && kill "$app_pid" 2>/dev/null || true
  [ -n "$web_pid" ] && kill "$web_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "== building"
(cd "$root" && cargo build -q --release -p simple-fastcgi-benches -p simple-fastcgi-examples)
for app in $apps; do
  case "$app" in
    libfcgi) gcc -O2 -o "$work/libfcgi-hello" "$root/benches/competitors/libfcgi/hello.c" -lfcgi -lpthread ;;
    go) (cd "$root/benches/competitors/go" && GO111MODULE=off GOCACHE="$work/gocache" go build -o "$work/go-hello" hello.go) ;;
    tokio) (cd "$root/benches/competitors/tokio-fastcgi" && cargo build -q --release) ;;
  esac
done

# start_app NAME SOCKET: starts the app pinned to APP_CPU; sets app_pid.
start_app() {
  local name=$1 sock=$2
  rm -f "$sock"
  # Every app but PHP-FPM (which has its own master process) serves the
  # listening socket on fd 0, the FastCGI way: spawn-fcgi makes the socket
  # and, with -n, execs the app in its own process, so $! is the app.
  spawn() { taskset -c $APP_CPU spawn-fcgi -n -s "$sock" -- "$@" 2>"$work/app.log" & }
  case "$name" in
    least) spawn "$bin/fcgi-least" ;;
    least-uring) spawn "$bin/fcgi-least" --uring ;;
    std) spawn "$bin/hello" ;;
    glommio) spawn "$bin/hello-async" ;;
    # libfcgi serves one kept connection per thread: as many as connections.
    libfcgi) spawn "$work/libfcgi-hello" 64 ;;
    go) spawn "$work/go-hello" ;;
    tokio) spawn "$root/benches/competitors/tokio-fastcgi/target/release/tokio-fastcgi-hello" ;;
    php)
      cat > "$work/php-fpm.conf" <<EOF
[global]
pid = $work/php-fpm.pid
error_log = $work/php-fpm.log
daemonize = no
[hello]
listen = $sock
listen.mode = 0666
pm = static
pm.max_children = 8
EOF
      taskset -c $APP_CPU php-fpm8.2 -R -F -y "$work/php-fpm.conf" 2>"$work/app.log" & ;;
    *) echo "unknown app $name" >&2; exit 2 ;;
  esac
  app_pid=$!
  for _ in $(seq 100); do
    if [ -S "$sock" ]; then
      # spawn-fcgi makes the socket before it execs the app: the app must
      # also still be running a moment later.
      sleep 0.1
      kill -0 "$app_pid" 2>/dev/null && return 0
      break
    fi
    sleep 0.05
  done
  echo "$name did not start; its stderr:" >&2
  cat "$work/app.log" >&2
  exit 1
}

# SIGTERM, then SIGKILL for apps that do not stop on it (libfcgi's threads
# stay blocked in accept).
stop_app() {
  local children
  children=$(pgrep -P "$app_pid" 2>/dev/null || true)
  kill "$app_pid" 2>/dev/null || true
  for _ in $(seq 40); do
    kill -0 "$app_pid" 2>/dev/null || break
    sleep 0.05
  done
  kill -9 "$app_pid" $children 2>/dev/null || true
  wait "$app_pid" 2>/dev/null || true
  app_pid=""
}

# The app's CPU ticks (user + system, children included: PHP-FPM's workers).
app_ticks() {
  local total=0 pid
  for pid in $(pgrep -P "$app_pid" 2>/dev/null) "$app_pid"; do
    if [ -r "/proc/$pid/stat" ]; then
      total=$((total + $(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || echo 0)))
    fi
  done
  echo "$total"
}

# The app's peak resident memory in KiB (largest process for PHP-FPM's pool).
app_peak_kib() {
  local peak=0 pid kib
  for pid in $(pgrep -P "$app_pid" 2>/dev/null) "$app_pid"; do
    kib=$(awk '/^VmHWM/ { print $2 }' "/proc/$pid/status" 2>/dev/null || echo 0)
    [ "${kib:-0}" -gt "$peak" ] && peak=$kib
  done
  echo "$peak"
}

# wait_for_port NAME PORT: until the web server just started accepts on PORT.
wait_for_port() {
  local name=$1 port=$2
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "$name did not start" >&2
  exit 1
}

start_nginx() {
  local sock=$1 port=$2
  cat > "$work/nginx.conf" <<EOF
$( [ "$(id -u)" = 0 ] && echo "user root root;" )
worker_processes 1;
daemon off;
master_process off;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $work/client_body;
    fastcgi_temp_path $work/fastcgi;
    proxy_temp_path $work/proxy;
    uwsgi_temp_path $work/uwsgi;
    scgi_temp_path $work/scgi;
    upstream app { server unix:$sock; keepalive 16; }
    server {
        listen 127.0.0.1:$port;
        location / {
            include /etc/nginx/fastcgi_params;
            fastcgi_param SCRIPT_FILENAME $root/benches/competitors/php/hello.php;
            fastcgi_keep_conn on;
            fastcgi_pass app;
        }
    }
}
EOF
  taskset -c $APP_CPU nginx -p "$work" -c "$work/nginx.conf" -e "$work/nginx-error.log" &
  web_pid=$!
  wait_for_port nginx "$port"
}

# Caddy 2 with its FastCGI transport, on the app's CPU as nginx is. It opens
# a connection to the app per request (it never sets FCGI_KEEP_CONN).
start_caddy() {
  local sock=$1 port=$2
  cat > "$work/Caddyfile" <<EOF
{
	admin off
	auto_https off
	storage file_system $work/caddy-data
	log {
		output file $work/caddy.log
		level ERROR
	}
}
http://:$port {
	bind 127.0.0.1
	reverse_proxy unix/$sock {
		transport fastcgi {
			env SCRIPT_FILENAME $root/benches/competitors/php/hello.php
		}
	}
}
EOF
  XDG_CONFIG_HOME="$work/caddy-config" XDG_DATA_HOME="$work/caddy-data" \
    taskset -c $APP_CPU caddy run --adapter caddyfile --config "$work/Caddyfile" > /dev/null 2>&1 &
  web_pid=$!
  wait_for_port caddy "$port"
}

# measure APP SCENARIO ROUND: one fresh app, a warm-up, one measured run.
measure() {
  local app=$1 scenario=$2 round=$3 sock="$work/app.sock" args=() before after peak line
  args=(--addr "unix:$sock" --spin "$spin" --param "SCRIPT_FILENAME=$root/benches/competitors/php/hello.php")
  case "$scenario" in
    keep1) args+=(--conns 1) ;;
    keep8) args+=(--conns 8) ;;
    keep64) args+=(--conns 64) ;;
    new8) args+=(--conns 8 --new-conn) ;;
    post64k) args+=(--conns 8 --body 65536) ;;
    nginx8 | caddy8) ;;
    *) echo "unknown scenario $scenario" >&2; exit 2 ;;
  esac
  start_app "$app" "$sock"
  if [ "$scenario" = nginx8 ] || [ "$scenario" = caddy8 ]; then
    local port=$((20000 + RANDOM % 20000))
    if [ "$scenario" = nginx8 ]; then
      start_nginx "$sock" "$port"
    else
      start_caddy "$sock" "$port"
    fi
    taskset -c $LOAD_CPU wrk -t1 -c8 -d1s "http://127.0.0.1:$port/" > /dev/null
    before=$(app_ticks)
    line=$(taskset -c $LOAD_CPU wrk -t1 -c8 -d"${duration}s" --latency "http://127.0.0.1:$port/" \
      | python3 "$root/benches/wrk_json.py")
    after=$(app_ticks)
    kill "$web_pid" 2>/dev/null || true
    wait "$web_pid" 2>/dev/null || true
    web_pid=""
  else
    taskset -c $LOAD_CPU "$bin/fcgi-load" "${args[@]}" --duration 1 --warmup 0 > /dev/null 2>&1 || true
    before=$(app_ticks)
    line=$(taskset -c $LOAD_CPU "$bin/fcgi-load" "${args[@]}" --duration "$duration" --warmup 0 --json) || true
    after=$(app_ticks)
  fi
  peak=$(app_peak_kib)
  stop_app
  if [ -z "$line" ]; then
    line='{"requests":0,"errors":1,"rps":0,"p50_us":0,"p99_us":0}'
  fi
  python3 - "$line" "$app" "$scenario" "$round" "$((after - before))" "$peak" "$(getconf CLK_TCK)" >> "$results" <<'EOF'
import json, sys
line, app, scenario, round_, ticks, peak, hz = sys.argv[1:]
r = json.loads(line)
r.update(app=app, scenario=scenario, round=int(round_), app_cpu_s=int(ticks) / int(hz), peak_rss_kib=int(peak))
print(json.dumps(r))
EOF
  printf '  %-8s %-8s round %s: %s\n' "$app" "$scenario" "$round" \
    "$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print("%.0f req/s, %d errors" % (r["rps"], r["errors"]))' "$line")"
}

echo "== measuring: $rounds round(s) of ${duration}s; apps on CPU $APP_CPU, load on CPU $LOAD_CPU"
set -- $apps
app_list=("$@")
for round in $(seq "$rounds"); do
  for scenario in $scenarios; do
    # Alternate the order of the apps from round to round.
    n=${#app_list[@]}
    for i in $(seq 0 $((n - 1))); do
      measure "${app_list[$(( (i + round - 1) % n ))]}" "$scenario" "$round"
    done
  done
done

python3 "$root/benches/summarize.py" "$results" | tee "$out/summary.md"
echo "results: $results, summary: $out/summary.md"
if $smoke; then
  python3 "$root/benches/smoke_check.py" "$results" "$apps" "$scenarios"
fi
