#!/usr/bin/env bash
# Re-records the strace sessions shown in book/src/observing.md into
# book/src/captures/strace-*.txt. Not part of the build: the captures are
# checked in, so building the book needs neither strace nor a network.
#
# Each session: start a chapter's release binary under strace, run the client
# with two messages, then stop the server with SIGINT. The only editing is
# mechanical trimming: the dynamic loader's and std's start-up reads of
# ELF files and /proc/self/maps are dropped, and a comment line says so.
#
# Usage: bash book/capture.sh [chNN...]   (default: every chapter it knows)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v strace >/dev/null || { echo "capture: install strace first" >&2; exit 1; }

out=book/src/captures
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
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
    return 1
}

# Drops what the dynamic loader and std do before main; numbers the trim.
trim() {
    awk '
        /openat\(AT_FDCWD, "\/(etc|lib|usr\/lib|proc)/ { dropped++; next }
        / read\(3, "(\\177ELF|[0-9a-f]+-[0-9a-f]+ |[^"]*\/(usr|lib)|[^"]*\.so)/ { dropped++; next }
        / read\(3, "[^"]*"\.\.\., 1024\) = [0-9]+$/ { dropped++; next }
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
    strace -f "$@" -o "$tmp/$ch.raw" -e trace="$(trace_for "$ch")" \
        "$bin" --addr "127.0.0.1:$port" ${SERVER_ARGS:-} >"$tmp/$ch.out" 2>"$tmp/$ch.err" &
    local strace_pid=$!
    wait_listening "$tmp/$ch.out"
    "$clients" "$port" >"$tmp/$ch.client"
    sleep 0.3
    kill -INT "$(pgrep -P "$strace_pid" -x "$ch")"
    wait "$strace_pid"
    {
        echo "# strace -f ${*:+$* }-e trace=$(trace_for "$ch") target/release/$ch --addr 127.0.0.1:$port${SERVER_ARGS:+ $SERVER_ARGS}"
        echo "# client: $(clients_line "$clients" "$port")"
        trim "$tmp/$ch.raw"
    } >"$out/strace-$ch$suffix.txt"
    echo "capture: $out/strace-$ch$suffix.txt"
    if [ "$suffix" = -pipeline ]; then
        # Just the connection's reads and sends, without the thread ID column.
        {
            echo "# the read and sendto calls of strace-$ch$suffix.txt"
            grep -E '^[0-9]+ +(read|sendto)\([0-9]+, ' "$out/strace-$ch$suffix.txt" |
                sed -E 's/^[0-9]+ +//'
        } >"$out/strace-$ch$suffix-io.txt"
        echo "capture: $out/strace-$ch$suffix-io.txt"
    fi
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

clients_line() {
    case $1 in
        two_messages) echo "client --addr 127.0.0.1:$2 hello world, then SIGINT to the server" ;;
        pipelined) echo "client --addr 127.0.0.1:$2 --pipeline one two three, then SIGINT to the server" ;;
        one_idle) echo "one connection that sends nothing, until the server closes it; then SIGINT" ;;
        idle_then_second) echo "one connection that sends nothing and closes after 1 s; meanwhile client --addr 127.0.0.1:$2 'anyone there?'; then SIGINT" ;;
    esac
}

chapters=("$@")
[ ${#chapters[@]} -gt 0 ] || chapters=(ch04 ch05 ch06 ch07 ch08 ch09 ch10)
bins=(-p client)
for ch in "${chapters[@]}"; do
    ls -d "chapters/$ch"-* >/dev/null 2>&1 || continue
    bins+=(-p "$ch")
done
cargo build --quiet --release "${bins[@]}"

port=7400
for ch in "${chapters[@]}"; do
    ls -d "chapters/$ch"-* >/dev/null 2>&1 || continue
    port=$((port + 1))
    session "$ch" "$port" two_messages ""
    case $ch in ch07 | ch08 | ch09)
        port=$((port + 1))
        session "$ch" "$port" pipelined -pipeline
        ;;
    esac
    if [ "$ch" = ch10 ]; then
        # An idle connection, closed by the server after 200 ms.
        port=$((port + 1))
        SERVER_ARGS="--idle-timeout-ms 200" session ch10 "$port" one_idle -idle
    fi
    if [ "$ch" = ch04 ]; then
        port=$((port + 1))
        # -T: how long each call took; the stall is the 1-second recvfrom.
        session ch04 "$port" idle_then_second -stall -T
    fi
done
