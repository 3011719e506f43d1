#!/usr/bin/env bash
# Re-records the strace sessions and system-call counts the book shows into
# book/src/captures/. Not part of the build: the captures are checked in, so
# building the book needs neither strace, perf, python3 nor a network.
#
# Each session: start a chapter's release binary under strace, run a client
# session against it, then stop the server with SIGINT (some sessions send
# the signal themselves, in the middle). The only editing is mechanical
# trimming: the dynamic loader's and std's start-up reads of ELF files and
# /proc/self/maps are dropped, and a comment line says so.
#
# The counts (syscalls-per-frame.txt) come from `perf stat` on the kernel's
# syscall tracepoints, which counts without stopping the server at every
# call as strace does; they are skipped, with a message, if perf cannot read
# the tracepoints (it needs root, or kernel.perf_event_paranoid <= -1).
#
# Usage: bash book/capture/strace.sh [WHAT...]   (default: all of them)
#   WHAT is a chapter (ch04 ... ch11: its sessions), counts (the table of
#   system calls per frame, chapters 7 to 10) or tokio-urgent (the tokio
#   servers against the urgent-data case).
#   Needs strace; python3 for chapter 9's urgent-data session; perf for counts.
set -euo pipefail
cd "$(dirname "$0")/../.."
source book/capture/lib.sh
command -v strace >/dev/null || { echo "capture: install strace first" >&2; exit 1; }

out=$captures
tmp=$(mktemp -d)
SERVER_PID=""
# On any exit, a server still running (a session that failed) is stopped first.
cleanup() {
    if [ -n "$SERVER_PID" ]; then kill -INT "$SERVER_PID" 2>/dev/null || true; fi
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
mkdir -p "$out"

# What to trace per chapter: the README's set, plus the calls that chapter adds.
trace_for() {
    case $1 in
        ch04) echo "network,poll,epoll_wait" ;;
        ch05) echo "network,poll,epoll_wait,clone3,clone" ;;
        ch06) echo "network,poll,epoll_wait,read,write,openat,signalfd4" ;;
        *) echo "network,poll,epoll_wait,epoll_ctl,epoll_create1,read,write,openat,signalfd4" ;;
    esac
}

wait_listening() {
    for _ in $(seq 100); do
        grep -q '^listening on' "$1" 2>/dev/null && return 0
        sleep 0.05
    done
    echo "capture: no 'listening on' line in $1" >&2
    cat "${1%.out}.err" >&2 2>/dev/null || true
    return 1
}

# Drops what the dynamic loader and std do before main; numbers the trim.
trim() {
    awk '
        /openat\(AT_FDCWD, "\/(etc|lib|usr\/lib|proc)/ { dropped++; next }
        / read\(3, "(\\177ELF|[0-9a-f]+-[0-9a-f]+ |[^"]*\/(usr|lib)|[^"]*\.so)/ { dropped++; next }
        / read\(3, "[^"]*"\.\.\., 1024\) = [0-9]+$/ { dropped++; next }
        / close\(3\) += 0$/ && !started { dropped++; next }
        / (signalfd4|socket)\(/ { started = 1 }
        { kept[++n] = $0 }
        END {
            if (dropped) printf "# (trimmed: %d start-up lines of the dynamic loader and std reading ELF files and /proc/self/maps)\n", dropped
            for (i = 1; i <= n; i++) print kept[i]
        }
    ' "$1"
}

session() { # chapter port client-session file-suffix [strace flags...]
    local ch=$1 port=$2 clients=$3 suffix=$4
    shift 4
    local bin=target/release/$ch
    local trace
    trace=$(trace_for "$ch")${TRACE_EXTRA:+,$TRACE_EXTRA}
    # A fresh file per session: an old "listening on" line must not be taken
    # for this server's.
    rm -f "$tmp/$ch.out"
    strace -f "$@" -o "$tmp/$ch.raw" -e trace="$trace" \
        "$bin" --addr "127.0.0.1:$port" ${SERVER_ARGS:-} >"$tmp/$ch.out" 2>"$tmp/$ch.err" &
    local strace_pid=$!
    wait_listening "$tmp/$ch.out"
    SERVER_PID=$(pgrep -P "$strace_pid" -x "$ch")
    export SERVER_PID
    "$clients" "$port" >"$tmp/$ch.client"
    case $clients in
        stop_*) ;; # the client sent SIGINT itself
        *)
            sleep 0.3
            kill -INT "$SERVER_PID"
            ;;
    esac
    wait "$strace_pid"
    SERVER_PID=""
    {
        header bash book/capture/strace.sh "$ch"
        echo "# strace -f ${*:+$* }-e trace=$trace target/release/$ch --addr 127.0.0.1:$port${SERVER_ARGS:+ $SERVER_ARGS}"
        echo "# client: $(clients_line "$clients" "$port")"
        trim "$tmp/$ch.raw"
    } >"$out/strace-$ch$suffix.txt"
    echo "capture: $out/strace-$ch$suffix.txt"
    case $suffix in -pipeline | -burst | -flood | -urgent)
        # Just the connection's reads and sends, without the thread ID column.
        {
            header bash book/capture/strace.sh "$ch"
            echo "# the read and sendto calls of strace-$ch$suffix.txt on the client's connection"
            grep -E '^[0-9]+ +(read|sendto)\(7, ' "$out/strace-$ch$suffix.txt" |
                sed -E 's/^[0-9]+ +//'
        } >"$out/strace-$ch$suffix-io.txt"
        echo "capture: $out/strace-$ch$suffix-io.txt"
        ;;
    esac
}

two_messages() { target/release/client --addr "127.0.0.1:$1" hello world; }

# Three requests in one write, then the three replies.
pipelined() { target/release/client --addr "127.0.0.1:$1" --pipeline one two three; }

# Chapter 4's stall: one client connects and stays silent for a second while a
# second one sends a message; the second is answered only after the first leaves.
idle_then_second() {
    exec 7<>"/dev/tcp/127.0.0.1/$1"
    (sleep 1; exec 7>&-) &
    local holder=$!
    exec 7>&-
    target/release/client --addr "127.0.0.1:$1" "anyone there?"
    wait "$holder"
}

# One connection that says nothing and waits for the server to close it.
one_idle() {
    exec 7<>"/dev/tcp/127.0.0.1/$1"
    timeout 2 cat <&7 >/dev/null || true
    exec 7>&-
}

# A frame of the largest size, 4096 bytes of payload: 4100 bytes in all.
big_frame() { # byte
    printf '\x00\x10\x00\x00'
    head -c 4096 /dev/zero | tr '\0' "$1"
}

# Four frames of 4100 bytes, 16,400 bytes, in one write; the replies; and the
# same again on the same connection.
two_bursts() {
    for b in a b c d; do big_frame "$b"; done >"$tmp/burst"
    exec 7<>"/dev/tcp/127.0.0.1/$1"
    for _ in 1 2; do
        cat "$tmp/burst" >&7 # one write of 16,400 bytes
        head -c 16400 <&7 >/dev/null
    done
    exec 7>&-
}

# 1,000 frames of the largest size (4,100 bytes each, 4.1 MB in all) written
# as fast as the connection takes them, while another thread reads the
# replies: a flood the server can keep up with only in big batches.
flood() {
    python3 - "$1" <<'EOF'
import socket, struct, sys, threading
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
frame = struct.pack("<I", 4096) + b"f" * 4096
n = 1000
def read_replies():
    want, got = n * len(frame), 0
    while got < want:
        chunk = s.recv(1 << 20)
        assert chunk, "the server closed the connection"
        got += len(chunk)
reader = threading.Thread(target=read_replies)
reader.start()
s.sendall(frame * n)
reader.join()
s.close()
EOF
}

# A frame, one byte of TCP urgent data (send with MSG_OOB), a frame; then the
# two replies. The suite's urgent_data_does_not_stall_the_connection, by hand.
urgent() {
    python3 - "$1" <<'EOF'
import socket, struct, sys
frame = lambda payload: struct.pack("<I", len(payload)) + payload
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(frame(b"before"))
s.send(b"!", socket.MSG_OOB)
s.sendall(frame(b"after"))
replies = b""
while len(replies) < 19:
    replies += s.recv(64)
assert replies == frame(b"before") + frame(b"after"), replies
EOF
}

# One echo, then SIGINT while connected and idle; read until the server's EOF,
# then hang up.
stop_while_connected() {
    exec 7<>"/dev/tcp/127.0.0.1/$1"
    printf '\x05\x00\x00\x00hello' >&7
    head -c 9 <&7 >/dev/null
    kill -INT "$SERVER_PID"
    cat <&7 >/dev/null
    exec 7>&-
}

# One echo, then SIGINT while connected; the client neither reads nor hangs up
# until long after the grace period.
stop_never_hangs_up() {
    exec 7<>"/dev/tcp/127.0.0.1/$1"
    printf '\x05\x00\x00\x00hello' >&7
    head -c 9 <&7 >/dev/null
    kill -INT "$SERVER_PID"
    sleep 0.8
    exec 7>&-
}

# One echo, SIGINT, and 0.3 s later a second SIGINT, while the client neither
# reads its EOF nor hangs up; it closes 0.5 s after that.
stop_twice() {
    exec 7<>"/dev/tcp/127.0.0.1/$1"
    printf '\x05\x00\x00\x00hello' >&7
    head -c 9 <&7 >/dev/null
    kill -INT "$SERVER_PID"
    sleep 0.3
    kill -INT "$SERVER_PID"
    sleep 0.5
    exec 7>&-
}

clients_line() {
    case $1 in
        two_messages) echo "client --addr 127.0.0.1:$2 hello world, then SIGINT to the server" ;;
        pipelined) echo "client --addr 127.0.0.1:$2 --pipeline one two three, then SIGINT to the server" ;;
        one_idle) echo "one connection that sends nothing, until the server closes it; then SIGINT" ;;
        idle_then_second) echo "one connection that sends nothing and closes after 1 s; meanwhile client --addr 127.0.0.1:$2 'anyone there?'; then SIGINT" ;;
        two_bursts) echo "four frames of 4096-byte payloads (16,400 bytes) in one write, the four replies; the same again on the same connection; close; then SIGINT" ;;
        flood) echo "1,000 frames of 4096-byte payloads written as fast as they go, the replies read meanwhile; close; then SIGINT" ;;
        urgent) echo "a frame 'before', one byte of urgent data (MSG_OOB), a frame 'after'; the two replies; close; then SIGINT" ;;
        stop_while_connected) echo "one frame and its reply; SIGINT to the server; read until EOF, then close" ;;
        stop_twice) echo "one frame and its reply; SIGINT to the server, and 0.3 s later another; close 0.5 s after that" ;;
        stop_never_hangs_up) echo "one frame and its reply; SIGINT to the server; neither read nor close for 0.8 s" ;;
    esac
}

# --- system calls per frame, counted by perf ------------------------------------

perf_usable() {
    command -v perf >/dev/null &&
        perf stat -e syscalls:sys_enter_read -o /dev/null -- true >/dev/null 2>&1
}

# Counts the server's system calls while clients run, without tracing it.
count() { # chapter port label client-command...   (BIN= another binary, NAME= its row's name)
    local ch=$1 port=$2 label=$3
    shift 3
    rm -f "$tmp/$ch.out"
    "${BIN:-target/release/$ch}" --addr "127.0.0.1:$port" >"$tmp/$ch.out" 2>/dev/null &
    local pid=$!
    wait_listening "$tmp/$ch.out"
    SERVER_PID=$pid
    perf stat -x, -o "$tmp/$ch.perf" -p "$pid" \
        -e syscalls:sys_enter_epoll_wait -e syscalls:sys_enter_epoll_ctl \
        -e syscalls:sys_enter_read -e syscalls:sys_exit_read --filter 'ret == -11' \
        -e syscalls:sys_enter_sendto &
    local perf_pid=$!
    sleep 0.5 # perf attaches
    "$@" >/dev/null
    sleep 0.2
    kill -INT "$perf_pid"
    wait "$perf_pid" || true
    kill -INT "$pid"
    wait "$pid"
    SERVER_PID=""
    awk -F, -v ch="${NAME:-$ch}" -v label="$label" '
        /sys_enter_epoll_wait/ { w = $1 } /sys_enter_epoll_ctl/ { c = $1 }
        /sys_enter_read/ { r = $1 } /sys_exit_read/ { e = $1 } /sys_enter_sendto/ { s = $1 }
        END { printf "%-15s %-14s %10d %9d %6d %7d %7d %7d\n", ch, label, w, c, r, e, s, w + c + r + s }
    ' "$tmp/$ch.perf"
}

one_at_a_time() { seq 1000 | target/release/client --addr "127.0.0.1:$1"; }
hundred_bursts() {
    for _ in $(seq 100); do seq 100 | target/release/client --addr "127.0.0.1:$1" --pipeline; done
}

# Chapter 9 as it would be with epoll(7)'s shortcut: stop reading after a short
# read instead of at EAGAIN. Built from a copy of the working tree, only to
# count what the shortcut would save; it is wrong (strace-ch09-urgent.txt).
build_shortcut() {
    local src=$tmp/shortcut
    mkdir -p "$src"
    git ls-files -z | xargs -0 cp --parents -t "$src"
    local main=$src/chapters/ch09-epoll-et/src/main.rs
    perl -0pi -e 's/(Ok\(n\) => \{\n)(\s+)(conn\.incoming\.commit\(n\);)/$1$2if n < room {\n$2    conn.readable = false; \/\/ the shortcut\n$2}\n$2$3/' "$main"
    grep -q 'the shortcut' "$main" || { echo "capture: could not patch $main" >&2; return 1; }
    CARGO_TARGET_DIR=$PWD/target/capture-shortcut cargo build --quiet --release \
        --manifest-path "$src/Cargo.toml" -p ch09
    echo "$PWD/target/capture-shortcut/release/ch09"
}

counts() { # chapters...
    local file=$out/syscalls-per-frame.txt
    cargo build --quiet --release -p client "${@/#/-p}"
    if ! perf_usable; then
        echo "capture: perf cannot count syscall tracepoints here: $file left as it is" >&2
        return
    fi
    local shortcut=""
    case " $* " in *" ch09 "*) shortcut=$(build_shortcut) ;; esac
    {
        header bash book/capture/strace.sh counts
        echo "# 1,000 frames to each server; its system calls counted by perf stat on the"
        echo "# syscalls:sys_enter_* tracepoints (read errors: sys_exit_read, ret == -11):"
        echo "#   one at a time   seq 1000 | client: one connection, each frame waits for its reply"
        echo "#   100 bursts      100 connections of seq 100 | client --pipeline: 100 frames a write"
        echo "#   ch09, shortcut  chapter 9 changed to stop reading after a short read (build_shortcut)"
        echo "# Counts vary from run to run with timing: is the next frame there when the server looks?"
        echo
        printf '%-15s %-14s %10s %9s %6s %7s %7s %7s\n' server load epoll_wait epoll_ctl read EAGAIN sendto total
        local port=7480
        for ch in "$@"; do
            port=$((port + 1))
            count "$ch" "$port" "one at a time" one_at_a_time "$port"
            port=$((port + 1))
            count "$ch" "$port" "100 bursts" hundred_bursts "$port"
            if [ "$ch" = ch09 ] && [ -n "$shortcut" ]; then
                port=$((port + 1))
                BIN=$shortcut NAME="ch09, shortcut" count ch09 "$port" "one at a time" one_at_a_time "$port"
                port=$((port + 1))
                BIN=$shortcut NAME="ch09, shortcut" count ch09 "$port" "100 bursts" hundred_bursts "$port"
            fi
        done
    } >"$file.new"
    mv "$file.new" "$file"
    echo "capture: $file"
}

# --- tokio and the urgent mark ------------------------------------------------

# The tokio reference servers (tools/tokio-echo, both variants) against the
# suite's urgent-data case, ten times each: tokio clears a socket's read
# readiness after a short read. The case depends on timing (the stall shows
# only if the frame after the urgent byte is already queued when the server
# reads), so every run's result is kept, with the report of the first failure.
tokio_urgent() {
    local file=$out/conform-tokio-urgent.txt
    cargo build --quiet --release -p conformance -p tokio-echo
    local case=urgent_data_does_not_stall_the_connection
    local variant run first=""
    {
        header bash book/capture/strace.sh tokio-urgent
        for variant in idiomatic tuned; do
            echo "\$ target/release/conform --level echo --only $case \\"
            echo "      -- target/release/tokio-echo --runtime current-thread --variant $variant   # ten times"
            for run in $(seq 10); do
                local report=$tmp/conform.$variant.$run
                # conform exits 1 when the case fails.
                target/release/conform --level echo --only "$case" \
                    -- target/release/tokio-echo --runtime current-thread --variant "$variant" \
                    >"$report" 2>&1 || [ $? -eq 1 ]
                grep -hE '^(pass|FAIL) ' "$report"
                if [ -z "$first" ] && grep -q '^FAIL ' "$report"; then first=$report; fi
            done
        done
        if [ -n "$first" ]; then
            echo "# the report of the first run that failed:"
            cat "$first"
        fi
    } >"$file"
    echo "capture: $file"
}

# --- which sessions for which chapter -----------------------------------------

what=("$@")
[ ${#what[@]} -gt 0 ] || what=(ch04 ch05 ch06 ch07 ch08 ch09 ch10 ch11 counts tokio-urgent)
chapters=()
bins=(-p client)
for w in "${what[@]}"; do
    case $w in
        counts | tokio-urgent) ;;
        ch04 | ch05 | ch06 | ch07 | ch08 | ch09 | ch10 | ch11)
            chapters+=("$w")
            bins+=(-p "$w")
            ;;
        *) echo "capture: unknown $w (ch04 ... ch11, counts, tokio-urgent)" >&2; exit 2 ;;
    esac
done
[ ${#chapters[@]} -eq 0 ] || cargo build --quiet --release "${bins[@]}"

# Each session on its own port, the same on every run, so that a re-recorded
# trace differs from the last only where the server's behaviour does.
port_of() {
    case $1 in
        ch04) echo 7400 ;; ch05) echo 7402 ;; ch06) echo 7403 ;; ch07) echo 7406 ;;
        ch08) echo 7408 ;; ch09) echo 7412 ;; ch10) echo 7415 ;; ch11) echo 7417 ;;
    esac
}

for ch in "${chapters[@]}"; do
    port=$(port_of "$ch")
    port=$((port + 1))
    session "$ch" "$port" two_messages ""
    case $ch in ch07 | ch08 | ch09 | ch10)
        port=$((port + 1))
        session "$ch" "$port" pipelined -pipeline
        ;;
    esac
    case $ch in
        ch04)
            port=$((port + 1))
            # -T: how long each call took; the stall is the 1-second recvfrom.
            session ch04 "$port" idle_then_second -stall -T
            ;;
        ch06)
            # The graceful stop: close is traced to show the listener going
            # first, ioctl for FIONREAD.
            port=$((port + 1))
            TRACE_EXTRA=ioctl,close session ch06 "$port" stop_while_connected -stop
            # A second signal stops at once, long before a 10-second grace period.
            port=$((port + 1))
            SERVER_ARGS="--grace-ms 10000" TRACE_EXTRA=ioctl,close \
                session ch06 "$port" stop_twice -stop-twice -r
            ;;
        ch08)
            # The kernel's socket buffer sizes, which chapter 8 compares with its own.
            {
                header bash book/capture/strace.sh ch08
                echo "# sysctl net.ipv4.tcp_rmem net.ipv4.tcp_wmem net.ipv4.tcp_moderate_rcvbuf  (Linux $(uname -r))"
                sysctl net.ipv4.tcp_rmem net.ipv4.tcp_wmem net.ipv4.tcp_moderate_rcvbuf
            } >"$out/sysctl-tcp-buffers.txt"
            echo "capture: $out/sysctl-tcp-buffers.txt"
            port=$((port + 1))
            session ch08 "$port" two_bursts -burst
            port=$((port + 1))
            session ch08 "$port" flood -flood
            ;;
        ch09)
            if command -v python3 >/dev/null; then
                # Each epoll_wait returns 100 ms late, so the client's three
                # sends have all arrived by the time the server reads.
                port=$((port + 1))
                session ch09 "$port" urgent -urgent -e inject=epoll_wait:delay_exit=100000
            else
                echo "capture: no python3: strace-ch09-urgent.txt left as it is" >&2
            fi
            ;;
        ch11)
            # An idle connection, closed by the server after 200 ms.
            port=$((port + 1))
            SERVER_ARGS="--idle-timeout-ms 200" session ch11 "$port" one_idle -idle
            # A stop whose grace period ends before the next idle deadline.
            port=$((port + 1))
            SERVER_ARGS="--idle-timeout-ms 5000 --grace-ms 300" TRACE_EXTRA=close \
                session ch11 "$port" stop_never_hangs_up -stop
            ;;
    esac
done
for w in "${what[@]}"; do
    case $w in
        counts) counts ch07 ch08 ch09 ch10 ;;
        tokio-urgent) tokio_urgent ;;
    esac
done
