#!/usr/bin/env bash
# Instructions per request, ch17 beside redis-server, counted by callgrind:
# a figure that the load of a shared machine does not move. User space
# only: the kernel's share (the system calls, TCP on loopback), most of a
# server's CPU, is not in it. For each server and test, a run with the
# requests and a run without (start, one PING, stop) are counted; the
# difference over the number of requests is the cost of one request. Then
# the functions ch17 spends its instructions in, for GET; and, without
# valgrind, how many read system calls each server makes per request.
# Writes book/src/captures/redis-profile.txt.
#
# Usage: REQUESTS=20000 bash book/capture/redis-profile.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
source book/capture/lib.sh
requests=${REQUESTS:-20000}
cargo build --quiet --release -p ch17
ch17=${CARGO_TARGET_DIR:-target}/release/ch17
work=$(mktemp -d)
pid=""
trap '[ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$work"' EXIT

# Runs server $1 under callgrind; with a test name $2, drives it with
# redis-benchmark -P 16. Prints the program's total instruction count.
count() {
    local out="$work/$1-${2:-none}.cg" port
    if [ "$1" = ch17 ]; then
        # The last run's line must not be read for this one's.
        rm -f "$work/stdout"
        valgrind --tool=callgrind --callgrind-out-file="$out" "$ch17" --addr 127.0.0.1:0 \
            >"$work/stdout" 2>/dev/null &
        pid=$!
        until port=$(sed -n 's/^listening on 127.0.0.1://p' "$work/stdout" 2>/dev/null) && [ -n "$port" ]; do
            sleep 0.05
        done
    else
        port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        valgrind --tool=callgrind --callgrind-out-file="$out" redis-server --port "$port" \
            --bind 127.0.0.1 --save "" --appendonly no --io-threads 1 --logfile "" >/dev/null 2>&1 &
        pid=$!
    fi
    until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.05; done
    if [ -n "${2:-}" ]; then
        # GET and INCR find the key (redis-benchmark uses this one name).
        redis-cli -p "$port" set key:__rand_int__ 1 >/dev/null
        redis-cli -p "$port" set counter:__rand_int__ 1 >/dev/null
        redis-benchmark -p "$port" -c 50 -n "$requests" -P 16 -t "$2" -q >/dev/null
    fi
    kill -INT "$pid"
    wait "$pid" 2>/dev/null || true
    pid=""
    callgrind_annotate "$out" 2>/dev/null | sed -n 's/^\([0-9,]*\) .*PROGRAM TOTALS.*/\1/p' | tr -d ,
}

# Server $1 without tracing, driven at depth $2: read system calls per
# request, from the kernel's own count (syscr in /proc/PID/io: read and
# its kind; a send is not counted there, a write is).
reads() {
    local port before after
    if [ "$1" = ch17 ]; then
        rm -f "$work/stdout"
        "$ch17" --addr 127.0.0.1:0 >"$work/stdout" 2>/dev/null &
        pid=$!
        until port=$(sed -n 's/^listening on 127.0.0.1://p' "$work/stdout" 2>/dev/null) && [ -n "$port" ]; do
            sleep 0.05
        done
    else
        port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --io-threads 1 \
            --logfile "" >/dev/null 2>&1 &
        pid=$!
    fi
    until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.05; done
    before=$(awk '/^syscr/ { print $2 }' "/proc/$pid/io")
    redis-benchmark -p "$port" -c 50 -n "$requests" -P "$2" -t ping_mbulk -q >/dev/null
    after=$(awk '/^syscr/ { print $2 }' "/proc/$pid/io")
    kill -INT "$pid"
    wait "$pid" 2>/dev/null || true
    pid=""
    python3 -c "print(f'{($after - $before) / $requests:.2f}')"
}

{
    header REQUESTS="$requests" bash book/capture/redis-profile.sh
    echo "# $(valgrind --version), redis-server $(redis-server --version | cut -d' ' -f3)"
    echo "# callgrind, user space only; redis-benchmark -c 50 -P 16"
    echo "# ANCHOR: per_request"
    echo "| test | ch17 instructions per request | redis-server instructions per request | ratio |"
    echo "|---|---|---|---|"
    declare -A base
    for server in ch17 redis; do
        base[$server]=$(count "$server")
    done
    for test in get set incr; do
        ch17_ir=$(($(count ch17 "$test") - base[ch17]))
        redis_ir=$(($(count redis "$test") - base[redis]))
        python3 -c "
c, r, n = $ch17_ir, $redis_ir, $requests
print(f'| ${test^^} | {c / n:,.0f} | {r / n:,.0f} | {c / r:.2f} |')"
    done
    echo "# ANCHOR_END: per_request"
    echo
    echo "# ANCHOR: syscalls"
    echo "read system calls per request (syscr in /proc/PID/io), redis-benchmark -t ping_mbulk -c 50:"
    echo "| depth | ch17 | redis-server |"
    echo "|---|---|---|"
    for depth in 1 16; do
        echo "| -P $depth | $(reads ch17 "$depth") | $(reads redis "$depth") |"
    done
    echo "# ANCHOR_END: syscalls"
    echo
    echo "# ANCHOR: ch17_get"
    echo "ch17, GET: the functions with the most instructions of their own (callgrind_annotate)"
    callgrind_annotate --inclusive=no "$work/ch17-get.cg" 2>/dev/null |
        grep -E '^ *[0-9,]+ +\( *[0-9.]+%\) ' | grep -v 'PROGRAM TOTALS' | sed -n '1,14p' |
        sed -E 's#/rustc/[0-9a-f]+/library/#std: #; s#chapters/ch17-redis/##; s/ \[[^]]*\]$//; s/ +$//'
    echo "# ANCHOR_END: ch17_get"
} >"$captures/redis-profile.txt"
cat "$captures/redis-profile.txt"
