#!/usr/bin/env bash
# What a thread per connection costs: starts ch05 (and, for comparison, ch09),
# holds N idle connections open with the load generator, and records the
# server's threads, memory mappings, resident memory and the kernel memory
# the whole machine gained (its own stacks and task structures, which no
# per-process counter shows). Writes book/src/captures/thread-cost.txt.
#
# Then, with 100 busy clients, the context switches the server makes per
# echoed frame (perf stat, a software event that works even in a VM).
#
# Usage: bash book/capture-threads.sh [N...]   (default: 1000 10000; Linux,
# perf from linux-perf for the second part)
set -euo pipefail
cd "$(dirname "$0")/.."
counts=("${@:-1000}")
[ $# -eq 0 ] && counts=(1000 10000)
ulimit -n "$(ulimit -Hn)"
cargo build --quiet --release -p ch05 -p ch09 -p loadgen
bin=${CARGO_TARGET_DIR:-target}/release
out=book/src/captures/thread-cost.txt

kib() { awk -v k="$2" '$1 == k ":" { print $2 }' "$1"; }
meminfo() { kib /proc/meminfo "$1"; }

settle() { # waits until the kernel has freed what the last server held
    local before after
    after=$(meminfo KernelStack)
    for _ in $(seq 50); do
        sleep 0.3
        before=$after after=$(meminfo KernelStack)
        [ "${before#-}" -eq "$after" ] && return
    done
}

measure() { # server idle_connections
    local server=$1 n=$2 log pid port
    settle
    log=$(mktemp)
    "$bin/$server" --addr 127.0.0.1:0 >"$log" 2>/dev/null &
    pid=$!
    until port=$(sed -n 's/^listening on 127.0.0.1://p' "$log") && [ -n "$port" ]; do sleep 0.05; done
    local stack0 tables0
    stack0=$(meminfo KernelStack) tables0=$(meminfo PageTables)
    # One busy connection and N idle ones, held for the whole window.
    "$bin/loadgen" --addr "127.0.0.1:$port" --conns 1 --idle "$n" --secs 6 \
        --connect-timeout 30 >/dev/null 2>&1 &
    local lg=$! fds=0
    until [ "$fds" -gt "$n" ]; do
        sleep 0.2
        fds=$(ls "/proc/$pid/fd" | wc -l)
    done
    sleep 1 # let the last threads settle
    printf '%-5s %6d idle: threads %6d  maps %6d  VmRSS %7d KiB  VmSize %9d KiB  kernel stacks +%7d KiB  page tables +%6d KiB\n' \
        "$server" "$n" "$(kib "/proc/$pid/status" Threads)" "$(wc -l <"/proc/$pid/maps")" \
        "$(kib "/proc/$pid/status" VmRSS)" "$(kib "/proc/$pid/status" VmSize)" \
        $(($(meminfo KernelStack) - stack0)) $(($(meminfo PageTables) - tables0))
    wait "$lg" || true
    kill -INT "$pid"
    wait "$pid" || true
    rm -f "$log"
}

switches() { # server: context switches per frame with 100 busy clients
    local server=$1 log pid port json
    log=$(mktemp) json=$(mktemp)
    "$bin/$server" --addr 127.0.0.1:0 >"$log" 2>/dev/null &
    pid=$!
    until port=$(sed -n 's/^listening on 127.0.0.1://p' "$log") && [ -n "$port" ]; do sleep 0.05; done
    "$bin/loadgen" --addr "127.0.0.1:$port" --conns 100 --secs 3 --warmup 0.5 --json >"$json" 2>/dev/null &
    local lg=$!
    sleep 1.5 # past the ramp-up: every connection (and ch05's thread for it) exists
    local cs
    cs=$(perf stat -x, -e context-switches -p "$pid" -- sleep 1 2>&1 | awk -F, '/context-switches/ { print $1 }')
    wait "$lg" || true
    local fps
    fps=$(sed -n 's/.*"frames_per_sec":\([0-9.]*\).*/\1/p' "$json")
    awk -v s="$server" -v cs="$cs" -v fps="$fps" 'BEGIN {
        printf "%-5s 100 busy: %8.0f frames/s, %7d context switches/s, %.3f per frame\n", s, fps, cs, cs / fps }'
    kill -INT "$pid"
    wait "$pid" || true
    rm -f "$log" "$json"
}

surge() { # server clients: that many clients at once; does the server live?
    local server=$1 n=$2 log pid port
    log=$(mktemp)
    "$bin/$server" --addr 127.0.0.1:0 >"$log" 2>/dev/null &
    pid=$!
    until port=$(sed -n 's/^listening on 127.0.0.1://p' "$log") && [ -n "$port" ]; do sleep 0.05; done
    python3 - "$port" "$n" <<'PY'
import resource, socket, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
port, n = int(sys.argv[1]), int(sys.argv[2])
frame = (5).to_bytes(4, "little") + b"hello"
served = turned_away = 0
clients = []
for _ in range(n):
    c = socket.create_connection(("127.0.0.1", port), timeout=10)
    clients.append(c)
for c in clients:
    try:
        c.sendall(frame)
        served += c.recv(9) == frame
    except OSError:
        turned_away += 1
    else:
        turned_away += 0
print(f"{n} clients connected at once: {served} served, {len(clients) - served} turned away", end="")
PY
    if kill -0 "$pid" 2>/dev/null; then
        printf ', and %s still runs\n' "$server"
        kill -INT "$pid"
        wait "$pid" || true
    else
        printf ', and %s died\n' "$server"
    fi
    rm -f "$log"
}

{
    echo "# bash book/capture-threads.sh $*    ($(uname -r), $(nproc) cores, $(date -u +%Y-%m-%d))"
    echo "# vm.max_map_count = $(cat /proc/sys/vm/max_map_count), kernel.threads-max = $(cat /proc/sys/kernel/threads-max)"
    for n in "${counts[@]}"; do
        measure ch05 "$n"
        measure ch09 "$n"
    done
    surge ch05 17500
    if command -v perf >/dev/null; then
        switches ch05
        switches ch09
    fi
} | tee "$out"
