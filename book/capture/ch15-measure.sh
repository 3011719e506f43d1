#!/usr/bin/env bash
# Server CPU per echoed frame, and throughput, of ch15 (and of ch15 with its
# ring set up without DEFER_TASKRUN) against ch09 and tokio (current-thread),
# measured in one run with the servers alternating, as ratios to ch09: on a
# shared machine the absolute numbers drift from run to run, but servers
# measured side by side drift together.
#
# For each round and each load, every server is loaded in turn by the
# verifying load generator, which reads the server's utime+stime from
# /proc/PID/stat around its window (--server-pid). The order of the
# servers rotates from round to round. A window that fails (a server that
# died, a load generator that could not connect) is reported and left out.
#
# Usage: bash book/capture/ch15-measure.sh [ROUNDS [OUTPUT]]
#        (default 3 rounds, SECS=3 per window, OUTPUT book/src/captures/ch15-measure.txt)
# LOADS="C D S;..." picks the loads (connections, depth, frame size);
# PIN=1 pins the servers to CPU 1 and the load generator to CPU 0.
# Prints (and writes to OUTPUT) one line per window, then, for each load, the ratios to ch09 of
# the same round: their median, mean and range (min..max). Short windows
# and many rounds resolve more than long windows and few: a neighbour's
# burst of work then falls on both sides of a ratio more often.
set -euo pipefail
cd "$(dirname "$0")/../.."
source book/capture/lib.sh
rounds=${1:-3}
out=${2:-$captures/ch15-measure.txt}
secs=${SECS:-3}
IFS=';' read -ra loads <<<"${LOADS:-100 16 64;100 1 64}"
pin_server=() pin_loadgen=()
if [ "${PIN:-0}" = 1 ]; then
    pin_server=(taskset -c 1) pin_loadgen=(taskset -c 0)
fi
names=(ch09 ch15 ch15-no-defer tokio-ct)
declare -A command=(
    [ch09]="target/release/ch09"
    [ch15]="target/release/ch15"
    [ch15-no-defer]="target/release/ch15 --no-defer-taskrun"
    [tokio-ct]="target/release/tokio-echo --runtime current-thread"
)

cargo build --release --quiet -p ch09 -p ch15 -p loadgen -p tokio-echo
tmp=$(mktemp -d)
cleanup() {
    for name in "${names[@]}"; do
        [ -f "$tmp/$name.pid" ] && kill "$(cat "$tmp/$name.pid")" 2>/dev/null
    done
    rm -rf "$tmp"
}
trap cleanup EXIT

# Starts a server, or starts it again if it has exited.
start() {
    local name=$1
    if [ -f "$tmp/$name.pid" ] && kill -0 "$(cat "$tmp/$name.pid")" 2>/dev/null; then
        return
    fi
    "${pin_server[@]}" ${command[$name]} --addr 127.0.0.1:0 >"$tmp/$name.out" 2>"$tmp/$name.err" &
    echo $! >"$tmp/$name.pid"
    for _ in $(seq 100); do
        grep -q '^listening on' "$tmp/$name.out" 2>/dev/null && break
        sleep 0.05
    done
    sed -n 's/^listening on //p' "$tmp/$name.out" >"$tmp/$name.addr"
    [ -s "$tmp/$name.addr" ] || { echo "measure: $name did not start" >&2; cat "$tmp/$name.err" >&2; exit 1; }
}

{
header SECS="$secs" LOADS="'${LOADS:-}'" PIN="${PIN:-0}" bash book/capture/ch15-measure.sh "$rounds"
echo "# round load server frames/s server-ns/frame"
for round in $(seq "$rounds"); do
    for load in "${loads[@]}"; do
        read -r conns depth size <<<"$load"
        for i in "${!names[@]}"; do
            name=${names[$(((i + round) % ${#names[@]}))]}
            start "$name"
            if ! json=$("${pin_loadgen[@]}" target/release/loadgen --addr "$(cat "$tmp/$name.addr")" \
                --conns "$conns" --depth "$depth" --size "$size" --secs "$secs" \
                --warmup 0.3 --drain 0.3 --json --server-pid "$(cat "$tmp/$name.pid")"); then
                why=$(python3 -c 'import json, sys
r = json.loads(sys.argv[1])
print(", ".join(f"{k} {r[k]}" for k in ("stalled", "connect_failed", "closed", "lost", "mismatches", "first_error") if r[k]))' "$json" 2>/dev/null || echo "no report")
                echo "# $round ${conns}x${depth}x$size $name FAILED: $why"
                continue
            fi
            python3 -c '
import json, sys
r = json.loads(sys.argv[1])
ns = r["server_cpu"] * r["secs"] * 1e9 / r["frames"]
load = "%dx%dx%d" % (r["conns"], r["depth"], r["size"])
print(sys.argv[2], load, sys.argv[3], round(r["frames_per_sec"]), round(ns))
' "$json" "$round" "$name"
        done
    done
done | tee "$tmp/runs.txt"

echo "# ANCHOR: ratios"
python3 - "$tmp/runs.txt" <<'EOF'
import collections, sys
runs = collections.defaultdict(dict)
for line in open(sys.argv[1]):
    if line.startswith("#"):
        continue
    round_, load, server, fps, ns = line.split()
    runs[(load, round_)][server] = (float(fps), float(ns))
print("# ratios to ch09 in the same round: CPU per frame (lower is better), throughput (higher is better)")
loads = sorted({load for load, _ in runs}, key=lambda l: (int(l.split("x")[2]), -int(l.split("x")[1])))
def spread(xs):
    xs = sorted(xs)
    median = (xs[(len(xs) - 1) // 2] + xs[len(xs) // 2]) / 2
    return f"median {median:.2f}, mean {sum(xs) / len(xs):.2f} ({xs[0]:.2f}..{xs[-1]:.2f})"
for load in loads:
    for server in ("ch15", "ch15-no-defer", "tokio-ct"):
        pairs = [r for (l, _), r in sorted(runs.items()) if l == load and server in r and "ch09" in r]
        if not pairs:
            continue
        cpu = [r[server][1] / r["ch09"][1] for r in pairs]
        fps = [r[server][0] / r["ch09"][0] for r in pairs]
        print(f"{load} {server}/ch09 over {len(pairs)} rounds: CPU per frame {spread(cpu)}; "
              f"throughput {spread(fps)}")
EOF
echo "# ANCHOR_END: ratios"
} | tee "$out"
