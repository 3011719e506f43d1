#!/usr/bin/env bash
# RESP on the wire, for chapter 17's page: what redis-cli sends to ch17 and
# what it gets back (strace on the client), and what ch17 does with a
# pipelined batch from redis-benchmark (strace on the server: one read of
# 16 requests, one send of 16 replies). Writes book/src/captures/resp-wire.txt.
#
# Usage: bash book/capture/resp.sh   (needs strace, redis-cli, redis-benchmark)
set -euo pipefail
cd "$(dirname "$0")/../.."
source book/capture/lib.sh
cargo build --quiet --release -p ch17
work=$(mktemp -d)
pid=""
trap '[ -n "$pid" ] && kill -INT "$pid" 2>/dev/null && wait "$pid"; rm -rf "$work"' EXIT
target/release/ch17 --addr 127.0.0.1:0 >"$work/out" 2>/dev/null &
pid=$!
until port=$(sed -n 's/^listening on 127.0.0.1://p' "$work/out") && [ -n "$port" ]; do sleep 0.02; done

# The client's side: each request as it leaves, each reply as it comes.
client() {
    echo "\$ redis-cli $*"
    strace -qq -e trace=connect,sendto,recvfrom -s 200 -o "$work/trace" \
        redis-cli -p "$port" --no-raw "$@" >"$work/said"
    # Only the socket's traffic, from its connect on.
    sed -n '/^connect(/,$p' "$work/trace" |
        sed -nE 's/^(sendto|recvfrom)\([0-9]+, ("[^"]*"(\.\.\.)?).*\) = ([0-9]+)$/\1 \4 bytes: \2/p'
    sed 's/^/  prints: /' "$work/said"
    echo
}

{
    header bash book/capture/resp.sh
    echo "# $(redis-cli --version)"
    echo "# ANCHOR: client"
    client SET greeting hello EX 100
    client GET greeting
    client TTL greeting
    client MGET greeting missing
    client INCR greeting
    client NOSUCH command
    echo "# ANCHOR_END: client"

    # The server's side: one client, 16 requests in flight (-P 16).
    strace -qq -f -e trace=read,sendto -s 40 -o "$work/server" -p "$pid" &
    tracer=$!
    sleep 0.5 # strace attaches asynchronously; nothing to wait on but time
    redis-benchmark -p "$port" -c 1 -n 32 -P 16 -t get -q >/dev/null
    sleep 0.2
    kill -INT "$tracer"
    wait "$tracer" 2>/dev/null || true
    echo "# ANCHOR: server"
    echo "\$ strace -e read,sendto -p \$(pidof ch17)   # while: redis-benchmark -c 1 -n 32 -P 16 -t get"
    # The benchmark's GETs (its first connection asks CONFIG GET, then
    # leaves): each read brings 16 requests, each sendto takes 16 replies.
    grep -E 'GET|\$-1' "$work/server" | grep -v CONFIG |
        sed -E 's/^[0-9]+ +//; s/, MSG_NOSIGNAL, NULL, 0//'
    echo "# ANCHOR_END: server"
} >"$captures/resp-wire.txt"
cat "$captures/resp-wire.txt"
