#!/usr/bin/env bash
# What can be measured of chapter 16 on a small machine, until the benchmark
# (`just bench`) runs it: throughput and server CPU per echoed frame of
# ch09, ch16 with 1 and 2 loops, and tokio's multi-thread runtime with 2
# workers (tools/tokio-echo, idiomatic and tuned), under the same loads from
# loadgen (one loadgen thread). Each
# load runs on every server in turn, three times over; every run is printed.
# Writes book/src/captures/multicore.txt.
#
# Usage: bash book/capture/multicore.sh [OUTPUT] [SECONDS PER RUN]
set -euo pipefail
cd "$(dirname "$0")/../.."
source book/capture/lib.sh
out=${1:-$captures/multicore.txt}
secs=${2:-3}

cargo build --quiet --release -p ch09 -p ch16 -p tokio-echo -p loadgen
dir=${CARGO_TARGET_DIR:-target}/release

tmp=$(mktemp -d)
pid=""
cleanup() {
    [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT

declare -A servers=(
    ["ch09"]="$dir/ch09"
    ["ch16 --threads 1"]="$dir/ch16 --threads 1"
    ["ch16 --threads 2"]="$dir/ch16 --threads 2"
    ["tokio-mt, 2 workers"]="$dir/tokio-echo --runtime multi-thread --variant idiomatic"
    ["tokio-mt-tuned, 2"]="$dir/tokio-echo --runtime multi-thread --variant tuned"
)
order=("ch09" "ch16 --threads 1" "ch16 --threads 2" "tokio-mt, 2 workers" "tokio-mt-tuned, 2")

run() { # server-name conns depth size
    rm -f "$tmp/out"
    mkfifo "$tmp/out"
    # shellcheck disable=SC2086 # the command and its flags, split on purpose
    TOKIO_WORKER_THREADS=2 ECHO_LOG=warn ${servers[$1]} --addr 127.0.0.1:0 >"$tmp/out" 2>/dev/null &
    pid=$!
    exec 3<"$tmp/out"
    local line
    read -r line <&3
    local result
    result=$("$dir/loadgen" --addr "${line##* }" --conns "$2" --depth "$3" --size "$4" \
        --secs "$secs" --server-pid "$pid" --threads 1 | head -1)
    kill -TERM "$pid"
    wait "$pid" || true
    pid=""
    exec 3<&-
    printf '%-20s %s\n' "$1" "${result#*: }"
}

{
    header bash book/capture/multicore.sh
    for load in "100 1 64" "1000 16 64"; do
        read -r conns depth size <<<"$load"
        echo
        echo "## ${conns} connections × ${depth} frames in flight × ${size} B"
        for round in 1 2 3; do
            for server in "${order[@]}"; do
                run "$server" "$conns" "$depth" "$size"
            done
        done
    done
} | tee "$out"
# The table the book shows (between the markers), from the rows above.
summary=$(awk '
    # The summary of a capture-multicore.sh run: per server and load, the
    # lowest and highest server CPU per frame of its rounds.
    /^## [0-9]/ {
        load = substr($0, 4)
        sub(/ connections × /, " conns, depth ", load)
        sub(/ frames in flight × /, ", ", load)
        loads[++nloads] = load
        next
    }
    / ns per frame$/ && nloads {
        name = substr($0, 1, 20)
        sub(/ +$/, "", name)
        if (!(name in seen)) { seen[name] = 1; names[++nnames] = name }
        ns = $(NF - 3)
        key = name SUBSEP nloads
        if (!(key in lo) || ns + 0 < lo[key]) lo[key] = ns + 0
        if (!(key in hi) || ns + 0 > hi[key]) hi[key] = ns + 0
    }
    END {
        print ""
        print "## Summary: server CPU per echoed frame, in ns, lowest and highest of the rounds"
        print "ANCHOR: summary"
        line = sprintf("%-20s", "server")
        for (l = 1; l <= nloads; l++) line = line sprintf("  %-24s", loads[l])
        sub(/ +$/, "", line)
        print line
        for (n = 1; n <= nnames; n++) {
            line = sprintf("%-20s", names[n])
            for (l = 1; l <= nloads; l++) {
                key = names[n] SUBSEP l
                line = line sprintf("  %-24s", lo[key] " to " hi[key])
            }
            sub(/ +$/, "", line)
            print line
        }
        print "ANCHOR_END: summary"
    }
' "$out")
printf '%s\n' "$summary" | tee -a "$out"
echo "capture-multicore: wrote $out" >&2
