#!/usr/bin/env bash
# What an overflowing accept queue looks like from outside. A listener with
# a backlog of 2 that never accepts (a server stuck elsewhere) meets 8
# clients; `ss -lnt` shows its queue (Recv-Q: waiting, Send-Q: the backlog)
# and `nstat` the kernel's counters of connections it had to refuse. Then
# the same view of ch09, which asks for the largest backlog the kernel allows.
# Writes book/src/captures/backlog.txt. Needs python3, ss and nstat (iproute2).
set -euo pipefail
cd "$(dirname "$0")/../.."
source book/capture/lib.sh
cargo build --quiet --release -p ch09
out=$captures/backlog.txt
{
    header bash book/capture/backlog.sh
    echo "\$ nstat -n   # (resets nstat's view of the counters)"
    nstat -n
    python3 - <<'PY'
import socket, subprocess, time
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(2)  # never accepted from
port = listener.getsockname()[1]
clients = []
for _ in range(8):
    c = socket.socket()
    c.setblocking(False)
    c.connect_ex(("127.0.0.1", port))  # the handshake may never finish
    clients.append(c)
time.sleep(1)  # let the kernel retry the dropped handshakes once
print(f"$ ss -lnt 'sport = :{port}'   # a listener with backlog 2, 8 clients")
print(subprocess.run(["ss", "-lnt", f"sport = :{port}"], capture_output=True, text=True).stdout, end="")
PY
    echo "\$ nstat -z TcpExtListenOverflows TcpExtListenDrops"
    nstat -z TcpExtListenOverflows TcpExtListenDrops | tail -n +2
    log=$(mktemp)
    "${CARGO_TARGET_DIR:-target}/release/ch09" --addr 127.0.0.1:0 >"$log" 2>/dev/null &
    pid=$!
    until port=$(sed -n 's/^listening on 127.0.0.1://p' "$log") && [ -n "$port" ]; do sleep 0.05; done
    echo "\$ ss -lnt 'sport = :$port'   # ch09: the backlog it asked for"
    ss -lnt "sport = :$port"
    kill -INT "$pid"
    wait "$pid" || true
    rm -f "$log"
} | sed -E 's/ +$//' | tee "$out"
