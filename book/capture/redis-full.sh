#!/usr/bin/env bash
# redis-benchmark's full run against ch17, as the issue states it:
# -t ping,set,get,incr,mset -n 100000 -c 50, at -P 1 and at -P 16. The
# test (chapters/ch17-redis/tests/redis_tools.rs) runs a shorter -P 1 to
# keep CI quick; this shows the full one goes through without an error.
# Writes book/src/captures/redis-benchmark-full.txt.
#
# Usage: bash book/capture/redis-full.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
source book/capture/lib.sh
cargo build --quiet --release -p ch17
work=$(mktemp -d)
target/release/ch17 --addr 127.0.0.1:0 >"$work/out" 2>/dev/null &
pid=$!
trap 'kill -INT "$pid" 2>/dev/null; wait "$pid"; rm -rf "$work"' EXIT
until port=$(sed -n 's/^listening on 127.0.0.1://p' "$work/out") && [ -n "$port" ]; do sleep 0.02; done
{
    header bash book/capture/redis-full.sh
    echo "# $(redis-benchmark --version 2>/dev/null || echo redis-benchmark)"
    for pipeline in 1 16; do
        echo "\$ redis-benchmark -p PORT -t ping,set,get,incr,mset -n 100000 -c 50 -P $pipeline --csv"
        redis-benchmark -p "$port" -t ping,set,get,incr,mset -n 100000 -c 50 -P "$pipeline" --csv 2>&1
        echo "exit status $?"
    done
} >"$captures/redis-benchmark-full.txt"
cat "$captures/redis-benchmark-full.txt"
