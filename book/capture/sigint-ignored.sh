#!/usr/bin/env bash
# Does a server started as a background job of a script stop on SIGINT?
# Such a job starts with SIGINT ignored (a shell without job control sets
# it so). Our event loops block SIGINT and SIGTERM and read them from a
# signalfd, and the kernel never discards a signal that a thread blocks
# (sig_ignored in kernel/signal.c): it stays pending until read. So the
# answer should be yes, once the server has blocked the signal, which it
# does before it prints `listening on`. For ch09 and ch16 (2 loops): the
# signal masks from /proc/PID/status, then SIGINT, then the exit status.
# Writes book/src/captures/sigint-ignored.txt.
#
# Usage: bash book/capture/sigint-ignored.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
source book/capture/lib.sh
cargo build --quiet --release -p ch09 -p ch16
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

try() { # server flags...
    local name=$1 pid status=0
    shift
    "target/release/$name" --addr 127.0.0.1:0 "$@" >"$tmp/out" 2>/dev/null &
    pid=$!
    until grep -q '^listening on' "$tmp/out"; do sleep 0.05; done
    echo "\$ target/release/$name${*:+ $*} &   # a background job: SIGINT ignored"
    # Bit 1 of each mask is SIGINT (signal 2), bit 14 SIGTERM (signal 15).
    grep -E '^Sig(Ign|Blk):' "/proc/$pid/status"
    echo "\$ kill -INT $name"
    kill -INT "$pid"
    # The deadline is the server's own: --grace-ms, 1 s by default.
    wait "$pid" || status=$?
    echo "exit status $status"
}

{
    header bash book/capture/sigint-ignored.sh
    echo "# each server started by this script in the background, then sent SIGINT once it listens"
    try ch09
    try ch16 --threads 2
} >"$captures/sigint-ignored.txt"
echo "capture: $captures/sigint-ignored.txt"
