#!/usr/bin/env bash
# Memory an idle kept connection costs each runtime: the hello app serves
# CONNS connections, each answered once with FCGI_KEEP_CONN and left open,
# and the app's anonymous memory (RssAnon) is read before and after.
#
#   benches/idle.sh [CONNS]     (default 1000)
#
# The README's limits table quotes this for 1000 connections.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
conns=${1:-1000}
work=$(mktemp -d /tmp/sfcgi-idle.XXXXXX)
trap 'rm -rf "$work"' EXIT
(cd "$root" && cargo build -q --release -p simple-fastcgi-examples)
if [ "$(ulimit -n)" -lt $((conns + 64)) ]; then
  ulimit -n $((conns + 64))
fi
for app in hello hello-async; do
  python3 - "$root/target/release/$app" "$work/$app.sock" "$conns" <<'EOF'
import os, socket, struct, subprocess, sys, time

app, sock, conns = sys.argv[1], sys.argv[2], int(sys.argv[3])
server = subprocess.Popen([app, "unix:" + sock], stderr=subprocess.DEVNULL)
try:
    for _ in range(200):
        if os.path.exists(sock):
            break
        time.sleep(0.05)
    else:
        sys.exit(f"{app} did not start")

    def record(kind, content):
        padding = (8 - len(content) % 8) % 8
        return struct.pack(">BBHHBB", 1, kind, 1, len(content), padding, 0) + content + b"\0" * padding

    def pair(name, value):
        return bytes([len(name), len(value)]) + name + value

    request = (
        record(1, struct.pack(">HB5x", 1, 1))  # BEGIN_REQUEST, responder, keep-conn
        + record(4, pair(b"REQUEST_METHOD", b"GET") + pair(b"SCRIPT_NAME", b"/idle"))
        + record(4, b"")
        + record(5, b"")
    )
    end_request = bytes([1, 3, 0, 1])

    def rss_anon_kib():
        with open(f"/proc/{server.pid}/status") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
        raise RuntimeError("no RssAnon")

    before = rss_anon_kib()
    kept = []
    for _ in range(conns):
        client = socket.socket(socket.AF_UNIX)
        client.settimeout(10)
        client.connect(sock)
        client.sendall(request)
        answer = b""
        while end_request not in answer:
            chunk = client.recv(4096)
            if not chunk:
                sys.exit(f"{app} closed a kept connection")
            answer += chunk
        kept.append(client)
    time.sleep(0.5)
    after = rss_anon_kib()
    print(
        f"{os.path.basename(app)}: {conns} idle kept connections add "
        f"{(after - before) / 1024:.1f} MiB ({(after - before) / conns:.1f} KiB each; "
        f"RssAnon {before} -> {after} KiB)"
    )
finally:
    server.terminate()
    server.wait()
EOF
done
