#!/usr/bin/env bash
# What a thread per connection costs: starts ch05 (and, for comparison, ch09),
# holds N idle connections open with the load generator, and records the
# server's threads, memory mappings, resident memory and the kernel memory
# the whole machine gained (its own stacks and task structures, which no
# per-process counter shows); then what each thread adds, from the two
# largest N. Writes book/src/captures/thread-cost.txt.
#
# Then: a surge of 17,500 clients against ch05's default cap on threads,
# and against no cap (--max-threads 100000): how many clients it serves
# before the kernel's limit on memory mappings kills it. Last, with 100
# busy clients (one frame in flight each), each server's frames/s, its CPU
# per echoed frame (loadgen --server-pid) and the context switches it makes
# per frame (perf stat, a software event that works even in a VM), three
# rounds with the servers alternating.
#
# Usage: bash book/capture/threads.sh [N...]   (default: 1000 10000; Linux,
# python3, perf from linux-perf for the last part; a few minutes)
set -euo pipefail
cd "$(dirname "$0")/../.."
source book/capture/lib.sh
counts=("${@:-1000}")
[ $# -eq 0 ] && counts=(1000 10000)
ulimit -n "$(ulimit -Hn)"
cargo build --quiet --release -p ch05 -p ch09 -p loadgen
bin=${CARGO_TARGET_DIR:-target}/release
out=$captures/thread-cost.txt

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
    printf '%-5s %6d idle: threads %6d  maps %6d  VmRSS %7d KiB  VmSize %9d KiB  kernel stacks %+7d KiB  page tables %+6d KiB\n' \
        "$server" "$n" "$(kib "/proc/$pid/status" Threads)" "$(wc -l <"/proc/$pid/maps")" \
        "$(kib "/proc/$pid/status" VmRSS)" "$(kib "/proc/$pid/status" VmSize)" \
        $(($(meminfo KernelStack) - stack0)) $(($(meminfo PageTables) - tables0))
    wait "$lg" || true
    kill -INT "$pid"
    wait "$pid" || true
    rm -f "$log"
}

# utime + stime of a whole process, threads that have exited included, in
# clock ticks (/proc/PID/stat, fields 14 and 15 after the command name).
cpu_ticks() {
    local fields
    read -r -a fields <<<"$(sed 's/^.*) //' "/proc/$1/stat")"
    echo $((fields[11] + fields[12]))
}

switches() { # server round: frames/s, CPU and context switches per frame, 100 busy clients
    local server=$1 log pid port json
    log=$(mktemp) json=$(mktemp)
    "$bin/$server" --addr 127.0.0.1:0 >"$log" 2>/dev/null &
    pid=$!
    until port=$(sed -n 's/^listening on 127.0.0.1://p' "$log") && [ -n "$port" ]; do sleep 0.05; done
    "$bin/loadgen" --addr "127.0.0.1:$port" --conns 100 --secs 4 --warmup 0.5 --json >"$json" 2>/dev/null &
    local lg=$!
    sleep 1.5 # past the ramp-up: every connection (and ch05's thread for it) exists
    # Over 2 s of steady load: the context switches (perf) and the CPU time.
    local cs c0 c1 t0 t1
    c0=$(cpu_ticks "$pid") t0=$(date +%s.%N)
    cs=$(perf stat -x, -e context-switches -p "$pid" -- sleep 2 2>&1 | awk -F, '/context-switches/ { print $1 }')
    c1=$(cpu_ticks "$pid") t1=$(date +%s.%N)
    wait "$lg" || true
    python3 - "$json" "$server" "$2" "$cs" "$((c1 - c0))" "$(getconf CLK_TCK)" "$t0" "$t1" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
server, rnd = sys.argv[2], sys.argv[3]
switches, ticks, hz, t0, t1 = (float(x) for x in sys.argv[4:])
fps = r["frames_per_sec"]
cores = ticks / hz / (t1 - t0)
print(f"{server}  100 busy, round {rnd}: {fps:6.0f} frames/s, server CPU {cores:.2f} cores = "
      f"{cores * 1e9 / fps:5.0f} ns per frame, {switches / (t1 - t0):6.0f} context switches/s = "
      f"{switches / (t1 - t0) / fps:.3f} per frame; loadgen CPU {r['loadgen_cpu']:.2f} cores")
PY
    kill -INT "$pid"
    wait "$pid" || true
    rm -f "$log" "$json"
}

surge() { # server clients [server flags...]: that many clients at once; does the server live?
    local server=$1 n=$2 log pid port
    shift 2
    log=$(mktemp)
    "$bin/$server" --addr 127.0.0.1:0 "$@" >"$log" 2>/dev/null &
    pid=$!
    until port=$(sed -n 's/^listening on 127.0.0.1://p' "$log") && [ -n "$port" ]; do sleep 0.05; done
    printf '%s: ' "$server${*:+ $*}"
    python3 - "$port" "$n" <<'PY'
import resource, socket, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
port, n = int(sys.argv[1]), int(sys.argv[2])
frame = (5).to_bytes(4, "little") + b"hello"
served = 0
clients = []
for _ in range(n):
    c = socket.create_connection(("127.0.0.1", port), timeout=10)
    clients.append(c)
for c in clients:
    try:
        c.sendall(frame)
        served += c.recv(9) == frame
    except OSError:
        pass
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

# Clients one after another, each served (and so holding a thread) before
# the next connects, until the server dies or N are in: where the limit is.
until_death() { # server clients [server flags...]
    local server=$1 n=$2 log err pid port
    shift 2
    log=$(mktemp) err=$(mktemp)
    "$bin/$server" --addr 127.0.0.1:0 "$@" >"$log" 2>"$err" &
    pid=$!
    until port=$(sed -n 's/^listening on 127.0.0.1://p' "$log") && [ -n "$port" ]; do sleep 0.05; done
    printf '%s: ' "$server${*:+ $*}"
    python3 - "$port" "$n" <<'PY'
import resource, socket, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
port, n = int(sys.argv[1]), int(sys.argv[2])
frame = (5).to_bytes(4, "little") + b"hello"
clients = []
served = 0
try:
    for _ in range(n):
        c = socket.create_connection(("127.0.0.1", port), timeout=10)
        clients.append(c)
        c.sendall(frame)
        if c.recv(9) != frame:
            break
        served += 1
except OSError:
    pass
print(f"{served} clients connected one by one and served", end="")
PY
    if kill -0 "$pid" 2>/dev/null; then
        printf ', and %s still runs\n' "$server"
        kill -INT "$pid"
        wait "$pid" || true
    else
        { wait "$pid"; } 2>/dev/null || true
        printf ', then %s died. Its last words:\n' "$server"
        grep -E 'panicked|^failed|^fatal' "$err" | sed 's/^/    /'
    fi
    rm -f "$log" "$err"
}

# What each thread adds: the difference between the two largest runs of
# ch05, divided by the threads between them.
per_thread() { # lines of measure's output
    awk '
        $1 == "ch05" { n[++runs] = $2; for (i = 3; i < NF; i++) v[runs, $i] = $(i + 1) + 0 }
        END {
            if (runs < 2) exit
            a = runs - 1; b = runs; d = n[b] - n[a]
            printf "ch05, each thread from %d to %d: VmSize +%.0f KiB, VmRSS +%.1f KiB, maps +%.2f, kernel stack +%.1f KiB, page tables +%.1f KiB\n",
                n[a], n[b], (v[b, "VmSize"] - v[a, "VmSize"]) / d, (v[b, "VmRSS"] - v[a, "VmRSS"]) / d,
                (v[b, "maps"] - v[a, "maps"]) / d, (v[b, "stacks"] - v[a, "stacks"]) / d, (v[b, "tables"] - v[a, "tables"]) / d
            total = v[b, "VmRSS"] + v[b, "stacks"] + v[b, "tables"]
            printf "ch05 with %d idle, VmRSS + kernel stacks + page tables: %d KiB (%.0f MiB)\n", n[b], total, total / 1024
        }' <<<"$1"
}

{
    header bash book/capture/threads.sh "$@"
    echo "# vm.max_map_count = $(cat /proc/sys/vm/max_map_count), kernel.threads-max = $(cat /proc/sys/kernel/threads-max)"
    idle=""
    for n in "${counts[@]}"; do
        idle+=$(measure ch05 "$n")$'\n'
        idle+=$(measure ch09 "$n")$'\n'
    done
    printf '%s' "$idle"
    per_thread "$idle"
    surge ch05 17500
    until_death ch05 17500 --max-threads 100000
    if command -v perf >/dev/null; then
        for round in 1 2 3; do
            switches ch05 "$round"
            switches ch09 "$round"
        done
    fi
} | tee "$out"
