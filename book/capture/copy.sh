#!/usr/bin/env bash
# Where a server's CPU goes at the bandwidth load (10 connections x 4 frames
# of 4 KiB in flight): chapter 9 as it was when it appended every reply to
# its write buffer (commit d495128), and as it is, sending replies straight
# from the read buffer. `perf record` samples each server for 2 s of load;
# the capture lists the top symbols and the share of user-space copying.
# Writes book/src/captures/copy-profile.txt. Needs perf (linux-perf).
set -euo pipefail
cd "$(dirname "$0")/../.."
source book/capture/lib.sh
before=d495128
out=$captures/copy-profile.txt
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cargo build --quiet --release -p ch09 -p loadgen
bin=${CARGO_TARGET_DIR:-target}/release
git worktree add --quiet --detach "$tmp/before" "$before"
CARGO_TARGET_DIR=$PWD/target/capture-copy cargo build --quiet --release \
    --manifest-path "$tmp/before/Cargo.toml" -p ch09
git worktree remove --force "$tmp/before"

profile() { # label binary
    local log="$tmp/$1.log" pid port
    "$2" --addr 127.0.0.1:0 >"$log" 2>/dev/null &
    pid=$!
    until port=$(sed -n 's/^listening on 127.0.0.1://p' "$log") && [ -n "$port" ]; do sleep 0.05; done
    "$bin/loadgen" --addr "127.0.0.1:$port" --conns 10 --depth 4 --size 4096 --secs 4 \
        --warmup 0.5 --server-pid "$pid" --json >"$tmp/$1.json" 2>/dev/null &
    local lg=$!
    sleep 1
    perf record --quiet -e cpu-clock -p "$pid" -o "$tmp/$1.data" -- sleep 2 >/dev/null 2>&1
    wait "$lg"
    kill -INT "$pid"
    wait "$pid" || true
    local ns
    ns=$(python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(round(d['server_cpu']*d['secs']*1e9/d['frames']))" "$tmp/$1.json")
    echo "== $1: $ns ns of server CPU per frame; top symbols (perf report --sort sym):"
    perf report -i "$tmp/$1.data" --no-children --sort sym --stdio 2>/dev/null |
        awk '/^ +[0-9]/ && n++ < 6'
}

{
    header bash book/capture/copy.sh
    echo "# load: loadgen --conns 10 --depth 4 --size 4096"
    profile "ch09, replies copied to the write buffer ($before)" "$PWD/target/capture-copy/release/ch09"
    profile "ch09, replies sent from the read buffer" "$bin/ch09"
} | tee "$out"
