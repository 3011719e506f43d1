#!/usr/bin/env bash
# Chapter 17 beside redis-server, in the same run. Both servers run on the
# same core (taskset), one at a time, in alternating order from round to
# round; redis-benchmark (50 clients) runs on the other cores and drives
# PING_INLINE, PING_MBULK, SET, GET and INCR, without pipelining (-P 1) and
# with 16 requests in flight per client (-P 16). For each round, test and
# depth it records each server's requests/s and its CPU time (utime+stime
# from /proc) per request; the report gives, per test, the median of the
# per-round ratios ch17 / redis-server with their min-max and the number
# of rounds, against the targets. Then two memory figures: 10,000 idle
# connections (each said PING once), and memory per key after loading
# KEYS keys, beside Redis's own `INFO memory` count.
#
# redis-server runs with persistence off and one I/O thread, as the
# issue's comparison asks: `--save "" --appendonly no --io-threads 1`.
#
# Usage: ROUNDS=5 REQUESTS=100000 KEYS=200000 bash book/capture/redis.sh [OUT]
#        (defaults; OUT is book/src/captures/redis.txt; `just bench-redis`
#        writes bench-out/redis.txt)
set -euo pipefail
cd "$(dirname "$0")/../.."
source book/capture/lib.sh
rounds=${ROUNDS:-5}
requests=${REQUESTS:-100000} # per test at -P 1; ten times as many at -P 16
keys=${KEYS:-200000}
out=${1:-$captures/redis.txt}
mkdir -p "$(dirname "$out")"
for tool in redis-server redis-cli redis-benchmark python3 taskset; do
    command -v "$tool" >/dev/null || {
        echo "capture/redis.sh: needs $tool (Debian: apt-get install redis-server redis-tools util-linux python3)" >&2
        exit 1
    }
done
cargo build --quiet --release -p ch17
ch17=${CARGO_TARGET_DIR:-target}/release/ch17

cores=$(nproc)
server_pin=() client_pin=()
if [ "$cores" -ge 2 ]; then
    server_pin=(taskset -c 0)
    client_pin=(taskset -c "1-$((cores - 1))")
fi
tests=(ping_inline ping_mbulk set get incr)
raw=$(mktemp)
work=$(mktemp -d)
pid=""
cleanup() {
    [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null
    rm -rf "$raw" "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Starts server $1 (ch17 or redis); sets pid and port.
start() {
    if [ "$1" = ch17 ]; then
        # The last run's line must not be read for this one's.
        rm -f "$work/out"
        "${server_pin[@]}" "$ch17" --addr 127.0.0.1:0 >"$work/out" 2>/dev/null &
        pid=$!
        until port=$(sed -n 's/^listening on 127.0.0.1://p' "$work/out") && [ -n "$port" ]; do sleep 0.02; done
    else
        port=$(free_port)
        "${server_pin[@]}" redis-server --port "$port" --bind 127.0.0.1 --save "" \
            --appendonly no --io-threads 1 --logfile "" >/dev/null &
        pid=$!
        until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.02; done
    fi
}

stop() {
    kill -INT "$pid"
    wait "$pid" 2>/dev/null || true
    pid=""
}

# utime + stime of the server, in clock ticks.
ticks() {
    awk '{ print $14 + $15 }' "/proc/$pid/stat"
}

rss_kib() {
    awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status"
}

for round in $(seq "$rounds"); do
    order=(ch17 redis)
    [ $((round % 2)) -eq 0 ] && order=(redis ch17)
    for server in "${order[@]}"; do
        start "$server"
        for depth in 1 16; do
            n=$requests
            [ "$depth" -eq 16 ] && n=$((requests * 10))
            for test in "${tests[@]}"; do
                before=$(ticks)
                csv=$("${client_pin[@]}" redis-benchmark -h 127.0.0.1 -p "$port" -c 50 -n "$n" \
                    -P "$depth" -t "$test" --csv 2>&1)
                after=$(ticks)
                rps=$(tail -1 <<<"$csv" | cut -d, -f2 | tr -d '"')
                echo "$round $server $depth $test $rps $((after - before)) $n" >>"$raw"
            done
        done
        stop
    done
    echo "capture/redis.sh: round $round of $rounds done" >&2
done

# 10,000 connections that each said PING and went quiet.
idle_kib() {
    python3 - "$port" "$pid" <<'PY'
import socket, sys
port, pid = int(sys.argv[1]), sys.argv[2]
rss = lambda: int(next(l.split()[1] for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS:")))
before = rss()
conns = []
for _ in range(10000):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"PING\r\n")
    assert s.recv(16) == b"+PONG\r\n"
    conns.append(s)
print(rss() - before)
PY
}

# KEYS keys of 12 bytes, values of 14, through redis-cli --pipe; prints the
# growth of RSS in KiB, and for Redis its own count (`used_memory`) in bytes.
load_keys() {
    python3 -c "
import sys
out = sys.stdout.buffer
for i in range($keys):
    k, v = b'key:%08d' % i, b'value:%08d' % i
    out.write(b'*3\r\n\$3\r\nSET\r\n\$%d\r\n%s\r\n\$%d\r\n%s\r\n' % (len(k), k, len(v), v))
" >"$work/keys.resp"
    local before used_before=0 used_after=0
    before=$(rss_kib)
    [ "$1" = redis ] && used_before=$(redis-cli -p "$port" info memory | sed -n 's/^used_memory:\([0-9]*\).*/\1/p')
    redis-cli -p "$port" --pipe <"$work/keys.resp" >/dev/null
    [ "$1" = redis ] && used_after=$(redis-cli -p "$port" info memory | sed -n 's/^used_memory:\([0-9]*\).*/\1/p')
    echo "$(($(rss_kib) - before)) $((used_after - used_before))"
}

for server in ch17 redis; do
    start "$server"
    echo "idle $server $(idle_kib)" >>"$raw"
    stop
    start "$server"
    echo "keys $server $(load_keys "$server")" >>"$raw"
    stop
done

{
    header ROUNDS="$rounds" REQUESTS="$requests" KEYS="$keys" bash book/capture/redis.sh
    echo "# $(redis-server --version | cut -d' ' -f1-3); servers pinned with: ${server_pin[*]:-nothing (1 core)}; redis-benchmark: ${client_pin[*]:-unpinned}"
    python3 - "$raw" "$rounds" "$keys" "$(getconf CLK_TCK)" <<'PY'
import statistics, sys
from collections import defaultdict
raw, rounds, keys, hz = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rps, cpu = {}, {}
idle, per_key = {}, {}
for line in open(raw):
    f = line.split()
    if f[0] == "idle":
        idle[f[1]] = int(f[2])
    elif f[0] == "keys":
        per_key[f[1]] = (int(f[2]) * 1024 / keys, int(f[3]) / keys)
    else:
        r, server, depth, test, r_s, t, n = f
        key = (int(r), server, int(depth), test)
        rps[key] = float(r_s)
        cpu[key] = int(t) / hz / int(n) * 1e9  # ns of server CPU per request
tests = list(dict.fromkeys(k[3] for k in rps))

def ratio(table, depth, test):
    per_round = [table[(r, "ch17", depth, test)] / table[(r, "redis", depth, test)]
                 for r in range(1, rounds + 1) if table[(r, "redis", depth, test)] > 0]
    if not per_round:  # a run too short for one clock tick of CPU: nan, "not resolved"
        return (float("nan"),) * 3
    return statistics.median(per_round), min(per_round), max(per_round)

def verdict(lo, hi, target, higher_is_better):
    if higher_is_better:
        return "met" if lo >= target else "missed" if hi < target else "not resolved"
    return "met" if hi <= target else "missed" if lo > target else "not resolved"

print()
print("## ch17 / redis-server, median of per-round ratios [min-max], %d rounds" % rounds)
# Two tables, each narrow enough for the book's column: the ratios, then
# the medians they come from.
print("# ANCHOR: ratios")
print("| test | depth | requests/s | CPU per request |")
print("|---|---|---|---|")
summary = []
for depth in (1, 16):
    for test in tests:
        m, lo, hi = ratio(rps, depth, test)
        c, clo, chi = ratio(cpu, depth, test)
        print(f"| {test.upper()} | -P {depth} | {m:.2f} [{lo:.2f}-{hi:.2f}] | {c:.2f} [{clo:.2f}-{chi:.2f}] |")
        summary.append((depth, test, lo, hi, clo, chi))
print("# ANCHOR_END: ratios")
print()
print("## Medians over the rounds")
print("# ANCHOR: medians")
print("| test | depth | ch17 req/s | redis req/s | ch17 ns/req | redis ns/req |")
print("|---|---|---|---|---|---|")
for depth in (1, 16):
    for test in tests:
        med = lambda table, s: statistics.median(table[(r, s, depth, test)] for r in range(1, rounds + 1))
        print(f"| {test.upper()} | -P {depth} | {med(rps, 'ch17'):,.0f} | {med(rps, 'redis'):,.0f} "
              f"| {med(cpu, 'ch17'):,.0f} | {med(cpu, 'redis'):,.0f} |")
print("# ANCHOR_END: medians")
print()
print("## Targets: requests/s >= 1.0x at -P 16 and >= 0.9x at -P 1; CPU per request <= 1.1x")
print("# ANCHOR: targets")
for depth in (1, 16):
    target = 1.0 if depth == 16 else 0.9
    for d, test, lo, hi, clo, chi in summary:
        if d != depth:
            continue
        print(f"{test.upper():12} -P {depth:<2}  requests/s {verdict(lo, hi, target, True):12}  "
              f"CPU per request {verdict(clo, chi, 1.1, False)}")
print("# ANCHOR_END: targets")
print()
print("## Memory")
print("# ANCHOR: memory")
print("| | ch17 | redis-server |")
print("|---|---|---|")
print(f"| 10,000 idle connections, RSS growth | {idle['ch17'] / 1024:.1f} MiB | {idle['redis'] / 1024:.1f} MiB |")
print(f"| per key ({keys:,} keys), RSS growth | {per_key['ch17'][0]:.0f} bytes | {per_key['redis'][0]:.0f} bytes |")
print(f"| per key, Redis's INFO memory (used_memory) | | {per_key['redis'][1]:.0f} bytes |")
print("# ANCHOR_END: memory")
PY
} >"$out"
cat "$out"
