#!/usr/bin/env bash
# Measures chapter 16's accept herd and connection imbalance, and writes
# book/src/captures/herd.txt. Rerun it on your machine: the counts depend
# on its cores and on how busy it is.
#
#   1. The herd: 4 loops (even on 2 cores), 2,000 connections arriving one
#      at a time (each answered before the next connects), then in bursts
#      of 100, under each --share; the server's --stats say how many times
#      each loop woke for the listener, and how many of those found nothing.
#   2. The imbalance: 2 loops, one of them kept busy by a greedy client
#      (frames pipelined as fast as the server takes them); 1,000 new
#      clients one at a time, each timed from connect to its first reply;
#      where they went, and the CPU time each loop thread used.
#
# Usage: bash book/capture/herd.sh [OUTPUT]   (default book/src/captures/herd.txt)
set -euo pipefail
cd "$(dirname "$0")/../.."
source book/capture/lib.sh
out=${1:-$captures/herd.txt}

cargo build --quiet --release -p ch16 --bin ch16 --example herd
bin=${CARGO_TARGET_DIR:-target}/release/ch16
herd=${CARGO_TARGET_DIR:-target}/release/examples/herd

tmp=$(mktemp -d)
pid=""
cleanup() {
    [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT

# Starts ch16 with the given flags; sets pid and port. Its stdout is a fifo,
# so we wait for its `listening on` line instead of sleeping.
start() {
    rm -f "$tmp/out"
    mkfifo "$tmp/out"
    "$bin" --addr 127.0.0.1:0 --stats "$@" >"$tmp/out" 2>"$tmp/err" &
    pid=$!
    exec 3<"$tmp/out"
    local line
    read -r line <&3
    port=${line##*:}
}

# CPU time (user + system) of each loop thread so far, in ms.
loop_cpu() {
    local hz
    hz=$(getconf CLK_TCK)
    for task in /proc/"$pid"/task/*; do
        name=$(cat "$task/comm")
        [[ $name == loop* ]] || continue
        # Fields 14 and 15 of stat, counted after the command name.
        read -r -a fields <<<"$(sed 's/^.*) //' "$task/stat")"
        echo "$name: $(((fields[11] + fields[12]) * 1000 / hz)) ms of CPU"
    done | sort
}

# Stops the server (SIGTERM, as scripts usually stop their background jobs),
# prints its --stats lines, and adds a row for them to the summary: the
# label, wakeups and empty wakeups per connection, connections per loop.
stop() { # label
    kill -TERM "$pid"
    wait "$pid"
    pid=""
    cat <&3 | tee "$tmp/stats"
    exec 3<&-
    awk -v label="$1" '
        /^loop/ {
            for (i = 2; i <= NF; i++) {
                if ($i == "accepted,") { a = $(i - 1); accepted += a; spread = spread sep a; sep = " / " }
                if ($i == "wakeups,") wakeups += $(i - 1)
                if ($i == "listener") events += $(i - 1)
                if ($i == "of" && $(i + 1) == "them") empty += $(i - 1)
            }
        }
        END {
            printf "| %-36s | %7.2f | %6.2f | %5.2f | %-25s |\n", label, wakeups / accepted, events / accepted, empty / accepted, spread
        }' "$tmp/stats" >>"$tmp/summary"
}

{
    header bash book/capture/herd.sh
    echo
    echo "## 1. The herd: 4 loops, 2,000 connections, one at a time, then in bursts of 100"
    for burst in 1 100; do
        for share in reuseport exclusive naive; do
            echo
            echo "--- ch16 --threads 4 --share $share; connections in bursts of $burst"
            start --threads 4 --share "$share"
            "$herd" herd --addr "127.0.0.1:$port" --connections 2000 --burst "$burst"
            stop "--share $share, bursts of $burst"
        done
    done
    echo
    echo "## 2. The imbalance: 2 loops, one kept busy by a greedy client, 1,000 new clients"
    for share in reuseport exclusive; do
        echo
        echo "--- ch16 --threads 2 --share $share; one greedy client first"
        start --threads 2 --share "$share"
        "$herd" latency --addr "127.0.0.1:$port" --busy 1 --probes 1000
        loop_cpu
        stop "--share $share, 2 loops, one busy"
    done
    echo
    echo "## Summary. Per accepted connection: the loops' wakeups (voluntary context"
    echo "## switches, for anything: the connection, its frame, its hang-up), events for"
    echo "## the listener, and those that found nothing to accept. Then where they went."
    echo
    # The book shows this table, between the markers; the rest is linked.
    echo "ANCHOR: summary"
    echo "| run                                  | wakeups | events | empty | accepted per loop         |"
    echo "|--------------------------------------|--------:|-------:|------:|---------------------------|"
    cat "$tmp/summary"
    echo "ANCHOR_END: summary"
} | tee "$out"
echo "capture-herd: wrote $out" >&2
