#!/usr/bin/env bash
# Re-records what book/src/ch14-async.md shows of chapter 14, into
# book/src/captures/ch14-*.txt. Not part of the build: the captures are
# checked in, so building the book needs none of this.
#
#   sizes      the connection future's size (a unit test, with --nocapture)
#   memory     RSS of ch09 and ch14 holding 10,000 idle connections (python3)
#   strace     ch14's and ch09's system calls for one pipelined client (strace)
#   callgrind  user-space instructions per echoed frame: ch09, ch14 and tokio's
#              current-thread runtime (valgrind, python3; a few minutes)
#   syscalls   system calls per send under load, the same three (perf, with
#              access to the syscall tracepoints)
#   bench      server CPU per echoed frame, the same three, alternating
#              servers within each of ROUNDS rounds (default 7; minutes)
#
# Usage: bash book/capture/ch14.sh [sizes|memory|strace|callgrind|syscalls|bench]...
#        (default: sizes memory strace callgrind syscalls)
set -euo pipefail
cd "$(dirname "$0")/../.."
source book/capture/lib.sh

out=$captures
client=book/capture/ch14-client.py
T=target/release
tmp=$(mktemp -d)
started=()
cleanup() {
    for pid in "${started[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT
mkdir -p "$out"

# Starts a server (its command line in "$@") on a free port, or on the
# port given as $PORT; sets $pid and $addr.
start() {
    "$@" --addr "127.0.0.1:${PORT:-0}" >"$tmp/server.out" 2>"$tmp/server.err" &
    pid=$!
    started+=("$pid")
    for _ in $(seq 600); do
        grep -q '^listening on' "$tmp/server.out" 2>/dev/null && break
        sleep 0.05
    done
    addr=$(sed -n 's/^listening on //p' "$tmp/server.out")
    [ -n "$addr" ] || { echo "capture: $* did not start" >&2; exit 1; }
}

# Stops the server started last, with `signal` (default INT).
stop() {
    kill -"${1:-INT}" "$pid"
    wait "$pid" || true
}

needs() {
    for tool in "$@"; do
        command -v "$tool" >/dev/null || { echo "capture: this needs $tool" >&2; exit 1; }
    done
}

sizes() {
    {
        header bash book/capture/ch14.sh sizes
        echo "# cargo test --release -p ch14 --bin ch14 the_connection_future_is_small -- --nocapture"
        cargo test --quiet --release -p ch14 --bin ch14 the_connection_future_is_small -- --nocapture 2>/dev/null |
            grep -E 'bytes'
    } >"$out/ch14-sizes.txt"
    echo "capture: $out/ch14-sizes.txt"
}

memory() {
    needs python3
    cargo build --quiet --release -p ch09 -p ch14
    {
        header bash book/capture/ch14.sh memory
        echo "# each of 10,000 clients sends one frame, reads the echo, and stays connected; then VmRSS"
        for ch in ch09 ch14; do
            start "$T/$ch"
            local before after
            before=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
            # The client holds its connections until its stdin closes.
            coproc HOLD { python3 "$client" hold "$addr" 10000; }
            read -r _ <&"${HOLD[0]}"
            after=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
            printf '%s: %6d KiB at start, %6d KiB with 10,000 idle connections (%d bytes each)\n' \
                "$ch" "$before" "$after" $(((after - before) * 1024 / 10000))
            exec {HOLD[1]}>&-
            wait "$HOLD_PID" || true
            stop
        done
    } >"$out/ch14-memory.txt"
    echo "capture: $out/ch14-memory.txt"
}

strace_session() { # chapter file
    needs strace
    local ch=$1 file=$2
    cargo build --quiet --release -p "$ch" -p client
    local trace=network,epoll_wait,epoll_ctl,epoll_create1,eventfd2,read,write,openat,signalfd4
    strace -o "$tmp/strace.raw" -e trace="$trace" \
        "$T/$ch" --addr 127.0.0.1:7412 >"$tmp/server.out" 2>"$tmp/server.err" &
    pid=$!
    started+=("$pid")
    for _ in $(seq 100); do
        grep -q '^listening on' "$tmp/server.out" 2>/dev/null && break
        sleep 0.05
    done
    "$T/client" --addr 127.0.0.1:7412 --pipeline one two three >/dev/null
    sleep 0.3
    # The server is strace's child: signal it, not strace.
    kill -INT "$(pgrep -P "$pid" -x "$ch")"
    wait "$pid" || true
    {
        header bash book/capture/ch14.sh strace
        echo "# strace -e trace=$trace target/release/$ch --addr 127.0.0.1:7412"
        echo "# client: client --addr 127.0.0.1:7412 --pipeline one two three, then SIGINT to the server"
        echo "# (trimmed: what the dynamic loader and std do before main, up to the first line of ours)"
        sed -n '/^signalfd4/,$p' "$tmp/strace.raw"
    } >"$out/$file"
    echo "capture: $out/$file"
}

# User-space instructions per echoed frame, which callgrind counts exactly
# whatever else the machine is doing, for a fixed workload: 100
# connections, each sending a frame and reading its echo, N rounds. Two
# runs, of 1 round and of 1 + N: the difference, over 100 N frames, leaves
# out start-up and the first buffers' allocation.
callgrind() {
    needs valgrind python3
    cargo build --quiet --release -p ch09 -p ch14 -p tokio-echo
    local rounds=300
    instructions() { # rounds server...
        local n=$1
        shift
        start valgrind --tool=callgrind --callgrind-out-file="$tmp/cg.out" "$@"
        python3 "$client" rounds "$addr" "$n"
        stop TERM
        sed -n 's/^summary: //p' "$tmp/cg.out"
    }
    {
        header bash book/capture/ch14.sh callgrind
        echo "# valgrind --tool=callgrind SERVER, with 100 connections x N rounds of a 64-byte frame and its echo"
        echo "# user-space instructions per frame = (Ir for 1 + $rounds rounds - Ir for 1 round) / (100 x $rounds)"
        for server in "ch09" "ch14" "tokio-echo --runtime current-thread"; do
            local one many
            # shellcheck disable=SC2086 # the server's arguments split on purpose
            one=$(instructions 1 $T/$server)
            # shellcheck disable=SC2086
            many=$(instructions $((rounds + 1)) $T/$server)
            printf '%-36s %5d instructions per frame\n' "$server" $(((many - one) / (100 * rounds)))
        done
    } >"$out/ch14-callgrind.txt"
    echo "capture: $out/ch14-callgrind.txt"
}

# System calls per send under load, counted by the kernel's tracepoints:
# whether a server reads until EAGAIN (two reads per batch of replies) or
# takes a short read to mean an empty socket (one).
syscalls() {
    needs perf
    cargo build --quiet --release -p ch09 -p ch14 -p tokio-echo -p loadgen
    local events=syscalls:sys_enter_read,syscalls:sys_enter_recvfrom
    events+=,syscalls:sys_enter_sendto,syscalls:sys_enter_write,syscalls:sys_enter_epoll_wait
    {
        header bash book/capture/ch14.sh syscalls
        echo "# perf stat -e $events -p PID, during"
        echo "# loadgen --addr ADDR --conns 100 --depth D --size 64 --secs 3 (reads: read + recvfrom; sends: sendto + write)"
        for server in "ch09" "ch14" "tokio-echo --runtime current-thread"; do
            # shellcheck disable=SC2086 # the server's arguments split on purpose
            start $T/$server
            for depth in 1 16; do
                perf stat -x, -e "$events" -p "$pid" -o "$tmp/perf.csv" &
                local perf=$!
                "$T/loadgen" --addr "$addr" --conns 100 --depth "$depth" --size 64 --secs 3 >/dev/null
                kill -INT "$perf"
                wait "$perf" || true
                awk -F, -v s="${server%% *}" -v d="$depth" '
                    /sys_enter_(read|recvfrom),/ { reads += $1 }
                    /sys_enter_(sendto|write),/ { sends += $1 }
                    /sys_enter_epoll_wait,/ { waits += $1 }
                    END {
                        printf "%-10s depth %2d: %.2f reads and %.3f epoll_wait per send\n",
                            s, d, reads / sends, waits / sends
                    }' "$tmp/perf.csv"
            done
            stop
        done
    } >"$out/ch14-syscalls.txt"
    echo "capture: $out/ch14-syscalls.txt"
}

# Server CPU per echoed frame, from loadgen --server-pid, for each server
# in turn, ROUNDS times: the machine's noise hits all three alike.
bench() {
    cargo build --quiet --release -p ch09 -p ch14 -p tokio-echo -p loadgen
    local rounds=${ROUNDS:-7}
    local servers=("ch09" "ch14" "tokio-echo --runtime current-thread")
    {
        header ROUNDS="$rounds" bash book/capture/ch14.sh bench
        echo "# loadgen --addr ADDR --conns 100 --depth D --size 64 --secs 3 --server-pid PID"
        echo "# server CPU (utime+stime) per echoed frame, in ns; servers alternate within each round"
        for round in $(seq "$rounds"); do
            for server in "${servers[@]}"; do
                # shellcheck disable=SC2086 # the server's arguments split on purpose
                start $T/$server
                for depth in 1 16; do
                    local ns
                    ns=$("$T/loadgen" --addr "$addr" --conns 100 --depth "$depth" --size 64 --secs 3 \
                        --server-pid "$pid" | sed -n 's/.*, \([0-9]*\) ns per frame.*/\1/p')
                    echo "round $round depth $depth ${server%% *} $ns"
                done
                stop
            done
        done | tee "$tmp/bench"
        # Ratios within each round, then their median and spread: the
        # table the book shows, between the markers.
        echo "ANCHOR: summary"
        for depth in 1 16; do
            for other in ch09 tokio-echo; do
                awk -v d="$depth" -v o="$other" '
                    $4 == d { ns[$2, $5] = $6; rounds[$2] = 1 }
                    END {
                        for (r in rounds)
                            if ((r, o) in ns && (r, "ch14") in ns) printf "%.3f\n", ns[r, "ch14"] / ns[r, o]
                    }' "$tmp/bench" | sort -n |
                    awk -v d="$depth" -v o="$other" '
                        { ratio[NR] = $1 }
                        END {
                            printf "depth %2d: ch14 / %-10s median %.2f (min %.2f, max %.2f, %d rounds)\n",
                                d, o, ratio[int((NR + 1) / 2)], ratio[1], ratio[NR], NR
                        }'
            done
        done
        echo "ANCHOR_END: summary"
    } >"$out/ch14-bench.txt"
    echo "capture: $out/ch14-bench.txt"
}

what=("$@")
[ ${#what[@]} -gt 0 ] || what=(sizes memory strace callgrind syscalls)
for w in "${what[@]}"; do
    case $w in
        sizes) sizes ;;
        memory) memory ;;
        strace)
            strace_session ch14 ch14-strace.txt
            strace_session ch09 ch14-strace-ch09.txt
            ;;
        callgrind) callgrind ;;
        syscalls) syscalls ;;
        bench) bench ;;
        *) echo "capture: unknown $w (sizes, memory, strace, callgrind, syscalls, bench)" >&2; exit 2 ;;
    esac
done
