#!/usr/bin/env bash
# Records the two sessions the chapter 15 page shows, into book/src/captures/:
#
#   strace-ch15-pipeline.txt  the server's system calls while a client
#                             pipelines three frames, then SIGINT;
#   ch15-uring-trace.txt      the same session seen from inside the kernel:
#                             io_uring's tracepoints, for every process
#                             (a wakeup runs in the process that caused it).
#
# The only editing: strace's start-up lines of the dynamic loader and std
# are dropped, and in the trace the ring's and requests' kernel addresses
# (the same on every line, and different on every run) are removed.
#
# Needs strace and perf, and root for the tracepoints.
# Usage: bash book/capture/ch15-trace.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
source book/capture/lib.sh
for tool in strace perf; do
    command -v $tool >/dev/null || { echo "capture: install $tool first" >&2; exit 1; }
done
cargo build --release --quiet -p ch15 -p client
out=$captures
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

wait_listening() {
    for _ in $(seq 100); do
        grep -q '^listening on' "$1" 2>/dev/null && return 0
        sleep 0.05
    done
    echo "capture: no 'listening on' line in $1" >&2
    return 1
}

# --- strace ---------------------------------------------------------------
trace=io_uring_setup,io_uring_register,io_uring_enter,signalfd4,network,ioctl,close
strace -f -o "$tmp/strace.raw" -e trace="$trace" \
    target/release/ch15 --addr 127.0.0.1:0 >"$tmp/out" 2>/dev/null &
strace_pid=$!
wait_listening "$tmp/out"
addr=$(sed -n 's/^listening on //p' "$tmp/out")
target/release/client --addr "$addr" --pipeline one two three >/dev/null
sleep 0.3
kill -INT "$(pgrep -P "$strace_pid" -x ch15)"
wait "$strace_pid"
{
    header bash book/capture/ch15-trace.sh
    echo "# strace -f -e trace=$trace target/release/ch15 --addr 127.0.0.1:0"
    echo "# client: target/release/client --addr $addr --pipeline one two three; then SIGINT"
    # Descriptors 3 and below are closed by std and the loader at start-up.
    grep -vE 'close\([0-3]\) ' "$tmp/strace.raw" | sed -E 's/^[0-9]+ +//'
} >"$out/strace-ch15-pipeline.txt"
echo "capture: $out/strace-ch15-pipeline.txt"

# --- io_uring tracepoints -------------------------------------------------
target/release/ch15 --addr 127.0.0.1:0 >"$tmp/out" 2>/dev/null &
server=$!
wait_listening "$tmp/out"
addr=$(sed -n 's/^listening on //p' "$tmp/out")
events=io_uring:io_uring_submit_req,io_uring:io_uring_poll_arm,io_uring:io_uring_task_add
events+=,io_uring:io_uring_complete
# perf starts with its events disabled (-D -1) and says when it has
# enabled them (--control): on a busy machine it can take a second to set
# up, and a session run before that would be missing from the trace.
mkfifo "$tmp/ctl" "$tmp/ack"
perf record -q -a -D -1 --control "fifo:$tmp/ctl,$tmp/ack" -e "$events" -o "$tmp/trace.data" \
    -- sleep 60 >/dev/null 2>&1 &
perf=$!
exec 8>"$tmp/ctl" 9<"$tmp/ack"
echo enable >&8
read -r -u 9 _
target/release/client --addr "$addr" --pipeline one two three >/dev/null
sleep 0.3 # the client's close, and its completion, are not ours to wait for
kill -INT "$server"
wait "$server" || true
echo disable >&8
read -r -u 9 _
exec 8>&- 9<&-
kill -INT "$perf"
wait "$perf" || true
perf script -i "$tmp/trace.data" -F comm,pid,event,trace 2>/dev/null >"$tmp/trace.txt"
# Only our ring: the one the server's own events name.
ring=$(grep -m1 -oE "^ *ch15 +$server .*ring (0x[0-9a-f]+)" "$tmp/trace.txt" | grep -oE '0x[0-9a-f]+$')
{
    header bash book/capture/ch15-trace.sh
    echo "# perf record -a -e $events"
    echo "#   while target/release/client --addr $addr --pipeline one two three; then SIGINT"
    echo "# (each line: the process the event ran in, its pid, the event; ring and request addresses removed)"
    grep "ring $ring," "$tmp/trace.txt" | sed -E 's/ring 0x[0-9a-f]+, //; s/req (0x[0-9a-f]+|\(nil\)), //; s/ +/ /g; s/^ //'
} >"$out/ch15-uring-trace.txt"
echo "capture: $out/ch15-uring-trace.txt"
