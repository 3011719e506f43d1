#!/usr/bin/env bash
# Records the system-call timelines the book draws: a chapter's server under
# `strace -f -tt -T` (when each call started, how long it took) while a
# canned client runs, then a picture of a few of its loop's turns, one lane
# per descriptor or per thread (book/capture/timeline.py draws it).
#
# Each timeline NAME compares two servers under the same client and writes:
#   book/src/captures/timeline-NAME-SERVER.txt   the raw trace, one per server,
#       after lib.sh's header; its `# timeline:` line names the window drawn
#       (chosen by a rule, below, that the line after it spells out);
#   book/src/timelines/NAME.svg                  the picture of both.
# book/check.sh redraws every picture from its captures and fails if it
# differs, so a picture is always the trace it says it is.
#
#   batching  ch07 and ch08, a client pipelining eight frames in one write:
#             the turn that answers them;
#   lt-et     ch08 (level-triggered) and ch09 (edge-triggered), a client that
#             writes 2,000 frames of 4 KiB and reads slower than it writes:
#             from a send the full socket cuts short to the next read;
#   uring     ch09 and ch15, four connections that each send a frame, read
#             its reply, twice, and close: all of it once they are accepted;
#   herd      ch16 with four loops, --share naive and --share exclusive, one
#             client connecting while every loop sleeps: the wake.
#
# The only editing: lines before the server's first socket or signalfd (the
# dynamic loader and std starting up) are dropped, and a comment says how
# many. strace stops the server at every call, so the durations are
# strace's, several times the real ones; the pictures show the order and the
# shape of a turn, not its speed.
#
# Usage: bash book/capture/timeline.sh [NAME...]   (default: all of them)
#   Needs strace and python3.
set -euo pipefail
cd "$(dirname "$0")/../.."
source book/capture/lib.sh
for tool in strace python3; do
    command -v $tool >/dev/null || { echo "capture: install $tool first" >&2; exit 1; }
done

out=$captures
pictures=book/src/timelines
timeline="python3 book/capture/timeline.py"
tmp=$(mktemp -d)
strace_pid=""
cleanup() {
    if [ -n "$strace_pid" ]; then kill -INT "$strace_pid" 2>/dev/null || true; fi
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
mkdir -p "$out" "$pictures"

TRACE=network,read,write,close,shutdown,ioctl,epoll_create1,epoll_ctl,epoll_wait,epoll_pwait
TRACE+=,signalfd4,eventfd2,io_uring_setup,io_uring_enter,io_uring_register

wait_for() { # what file test...: polls until the test passes, 10 s at most
    local what=$1 file=$2
    shift 2
    for _ in $(seq 200); do
        "$@" "$file" && return 0
        sleep 0.05
    done
    echo "capture: timed out waiting for $what ($file)" >&2
    return 1
}
listening() { grep -q '^listening on' "$1" 2>/dev/null; }
# Every loop thread of the server has gone to sleep in epoll_wait.
all_waiting() { [ "$(awk '/ epoll_wait\(/ { print $1 }' "$1" | sort -u | wc -l)" -ge "$THREADS" ]; }

# Runs SERVER ARGS under strace while CLIENT runs, then stops it with SIGINT;
# writes the capture, without its `# timeline:` line (see `draw`).
session() { # name server client-description client-function [server args...]
    local name=$1 server=$2 described=$3 client=$4
    shift 4
    local bin=target/release/${server%% *}
    rm -f "$tmp/out"
    strace -f -tt -T -o "$tmp/raw" -e trace="$TRACE" "$bin" --addr 127.0.0.1:0 "$@" \
        >"$tmp/out" 2>/dev/null &
    strace_pid=$!
    wait_for "listening on" "$tmp/out" listening
    if [ -n "${THREADS:-}" ]; then wait_for "$THREADS loops in epoll_wait" "$tmp/raw" all_waiting; fi
    local addr
    addr=$(sed -n 's/^listening on //p' "$tmp/out")
    "$client" "$addr"
    # The client has its replies; what the server still does (its reads of
    # the client's EOF, its closes) comes within this.
    sleep 0.3
    kill -INT "$(pgrep -P "$strace_pid")"
    wait "$strace_pid"
    strace_pid=""
    {
        echo "# strace -f -tt -T -e trace=$TRACE target/release/${server%% *} --addr 127.0.0.1:0${*:+ $*}"
        echo "# client: $described"
        awk '
            !started && / (socket|signalfd4)\(/ { started = 1 }
            !started { dropped++; next }
            { kept[++n] = $0 }
            END {
                printf "# (trimmed: %d lines before the first socket or signalfd: the dynamic loader and std starting up)\n", dropped
                for (i = 1; i <= n; i++) print kept[i]
            }' "$tmp/raw"
    } >"$tmp/$name.body"
}

# Picks the window with timeline.py's rule, writes the capture with it, and
# draws the picture of every capture named.
finish() { # name title lanes window-rule...
    local name=$1 title=$2 lanes=$3
    shift 3
    local window
    window=$($timeline window "$tmp/$name.body" "$@")
    {
        header bash book/capture/timeline.sh "${name%-*}"
        echo "# timeline: $window lanes=$lanes title='$title'"
        echo "# (the window: book/capture/timeline.py window CAPTURE ${*@Q})"
        cat "$tmp/$name.body"
    } >"$out/timeline-$name.txt"
    echo "capture: $out/timeline-$name.txt"
}
draw() { # picture captures...
    local picture=$1
    shift
    $timeline render "${@/#/$out/timeline-}" -o "$pictures/$picture.svg"
    echo "capture: $pictures/$picture.svg"
}

# --- the clients ----------------------------------------------------------------

pipeline_eight() {
    target/release/client --addr "$1" --pipeline one two three four five six seven eight >/dev/null
}

# 2,000 frames of 4 KiB (8.2 MB) written as fast as they go, while another
# thread reads the replies 64 KiB at a time, one read a millisecond: the
# server's socket fills, and it must wait for room before it reads again.
slow_reader() {
    python3 - "$1" <<'EOF'
import socket, struct, sys, threading, time
host, port = sys.argv[1].rsplit(":", 1)
s = socket.create_connection((host, int(port)))
frame = struct.pack("<I", 4096) + b"s" * 4096
n = 2000
def read_replies():
    want, got = n * len(frame), 0
    while got < want:
        chunk = s.recv(64 << 10)
        assert chunk, "the server closed the connection"
        got += len(chunk)
        time.sleep(0.001)
reader = threading.Thread(target=read_replies)
reader.start()
s.sendall(frame * n)
reader.join()
s.close()
EOF
}

# Four connections; two rounds of one frame on each, then every reply;
# then they all close.
four_connections() {
    python3 - "$1" <<'EOF'
import socket, struct, sys
host, port = sys.argv[1].rsplit(":", 1)
conns = [socket.create_connection((host, int(port))) for _ in range(4)]
frame = struct.pack("<I", 5) + b"hello"
for _ in range(2):
    for c in conns:
        c.sendall(frame)
    for c in conns:
        got = b""
        while len(got) < len(frame):
            got += c.recv(64)
        assert got == frame, got
for c in conns:
    c.close()
EOF
}

one_client() { target/release/client --addr "$1" hello >/dev/null; }

# --- the timelines ------------------------------------------------------------------

# A send that the full socket cut short: sendto(fd, "...", LEN, ...) = less than LEN.
SHORT_SEND='^sendto\(\d+, "[^"]*"(?:\.\.\.)?, (\d+), [^)]*\) = (?!\1$)\d+$'
# A read that brought data.
DATA_READ='^read\(\d+, "'

batching() {
    cargo build --quiet --release -p ch07 -p ch08 -p client
    local ch
    for ch in ch07 ch08; do
        session "batching-$ch" "$ch" "client --addr ADDR --pipeline one two three four five six seven eight" pipeline_eight
    done
    # From the wait before the first read that brings data, to the read
    # after it (EAGAIN, or the client's EOF if it came meanwhile).
    finish batching-ch07 "ch07: one sendto per reply" fd --start "$DATA_READ" --back 1 --end '^read\(@2'
    finish batching-ch08 "ch08: one sendto for every reply of a read" fd --start "$DATA_READ" --back 1 --end '^read\(@2'
    draw batching batching-ch07.txt batching-ch08.txt
}

lt_et() {
    cargo build --quiet --release -p ch08 -p ch09
    local ch
    for ch in ch08 ch09; do
        session "lt-et-$ch" "$ch" "2,000 frames of 4096-byte payloads written as fast as they go; the replies read 64 KiB a millisecond" slow_reader
    done
    # From the first send cut short, to the send after the next read that brings data.
    finish lt-et-ch08 "ch08, level-triggered: epoll_ctl to wait for room, and again to read" fd \
        --start "$SHORT_SEND" --end "$DATA_READ" --extra 1
    finish lt-et-ch09 "ch09, edge-triggered: sends to EAGAIN, and no epoll_ctl" fd \
        --start "$SHORT_SEND" --end "$DATA_READ" --extra 1
    draw lt-et lt-et-ch08.txt lt-et-ch09.txt
}

uring() {
    cargo build --quiet --release -p ch09 -p ch15
    local ch
    for ch in ch09 ch15; do
        session "uring-$ch" "$ch" "four connections; twice a frame on each, then the four replies; then all close" four_connections
    done
    # From the end of the fourth connection's setsockopt (all accepted) to the fourth close.
    finish uring-ch09 "ch09: epoll_wait, then a read, a sendto and a read that says EAGAIN per connection" fd \
        --start-after '^setsockopt\(\d+, SOL_TCP@4' --end '^close\(@4'
    finish uring-ch15 "ch15: one io_uring_enter a turn, for every connection" fd \
        --start-after '^setsockopt\(\d+, SOL_TCP@4' --end '^close\(@4'
    draw uring uring-ch09.txt uring-ch15.txt
}

herd() {
    cargo build --quiet --release -p ch16 -p client
    local share
    for share in naive exclusive; do
        THREADS=4 session "herd-$share" "ch16" "one client connects, sends a frame, reads the reply and closes, once all four loops sleep in epoll_wait" \
            one_client --threads 4 --share "$share"
    done
    # From just before the first epoll_wait to return the listener's event
    # (ch16 registers the listener under the key u64 2^64 - 2) to just after
    # the accepted connection is registered.
    local wake='^epoll_wait\(\d+, \[\{events=EPOLLIN, data=\{u32=\d+, u64=18446744073709551614\}\}'
    finish herd-naive "ch16 --share naive: every loop wakes, one accepts" thread \
        --start-after "$wake" --lead 60 --end '^epoll_ctl\(\d+, EPOLL_CTL_ADD' --lag 200
    finish herd-exclusive "ch16 --share exclusive: one loop wakes and accepts" thread \
        --start-after "$wake" --lead 60 --end '^epoll_ctl\(\d+, EPOLL_CTL_ADD' --lag 200
    draw herd herd-naive.txt herd-exclusive.txt
}

what=("$@")
[ ${#what[@]} -gt 0 ] || what=(batching lt-et uring herd)
for w in "${what[@]}"; do
    case $w in
        batching) batching ;;
        lt-et) lt_et ;;
        uring) uring ;;
        herd) herd ;;
        *) echo "capture: unknown timeline $w (batching, lt-et, uring, herd)" >&2; exit 2 ;;
    esac
done
