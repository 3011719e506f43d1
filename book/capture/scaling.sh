#!/usr/bin/env bash
# Chapter 16's hypothesis, for a machine with cores to spare: with the same
# number of server threads N, one loop per core (ch16 --threads N) moves at
# least 1.2 times the frames of tokio's work-stealing runtime
# (tokio-echo --runtime multi-thread, N workers) at 1,000 connections x 16
# frames in flight x 64 B, for no more CPU per frame. For N = 1, 2, 4, 8,
# each server in turn, three rounds; the load generator gets 4 threads, and
# with taskset the servers and the load generator are kept on separate
# CPUs. Writes book/src/captures/scaling.txt.
#
# Not run by all.sh: on fewer than 2 x 8 + 4 CPUs it measures the load
# generator and the neighbours, not the servers (chapter 16 says why).
# Usage: bash book/capture/scaling.sh   (FORCE=1 to run on a small machine)
set -euo pipefail
cd "$(dirname "$0")/../.."
source book/capture/lib.sh
cpus=$(nproc)
if [ "$cpus" -lt 20 ] && [ -z "${FORCE:-}" ]; then
    echo "scaling: $cpus CPUs; this needs 20 (8 for the servers, 4 for the load generator, spare)." >&2
    echo "scaling: FORCE=1 runs it anyway, but the numbers then say nothing about scaling." >&2
    exit 1
fi
cargo build --quiet --release -p ch16 -p tokio-echo -p loadgen
bin=${CARGO_TARGET_DIR:-target}/release
tmp=$(mktemp -d)
pid=""
cleanup() {
    [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT

# Servers on CPUs 0..N-1, the load generator on the last four.
loadgen_cpus=$((cpus - 4))-$((cpus - 1))

run() { # label threads command...
    local label=$1 n=$2
    shift 2
    rm -f "$tmp/out"
    TOKIO_WORKER_THREADS=$n taskset -c "0-$((n - 1))" "$@" --addr 127.0.0.1:0 >"$tmp/out" 2>/dev/null &
    pid=$!
    until grep -q '^listening on' "$tmp/out" 2>/dev/null; do sleep 0.05; done
    local result
    result=$(taskset -c "$loadgen_cpus" "$bin/loadgen" --addr "$(sed -n 's/^listening on //p' "$tmp/out")" \
        --conns 1000 --depth 16 --size 64 --secs 5 --threads 4 --server-pid "$pid" | head -1)
    kill -TERM "$pid"
    wait "$pid" || true
    pid=""
    printf '%-28s %s\n' "$label" "${result#*: }"
}

{
    header bash book/capture/scaling.sh
    echo "# loadgen --conns 1000 --depth 16 --size 64 --secs 5 --threads 4, on CPUs $loadgen_cpus"
    for n in 1 2 4 8; do
        echo
        echo "## $n server threads, on CPUs 0-$((n - 1))"
        for round in 1 2 3; do
            run "ch16 --threads $n" "$n" "$bin/ch16" --threads "$n"
            run "tokio-mt-tuned, $n workers" "$n" "$bin/tokio-echo" --runtime multi-thread --variant tuned
        done
    done
} | tee "$captures/scaling.txt"
