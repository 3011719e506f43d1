#!/usr/bin/env bash
# The ratios the issues set as targets, measured with more care than the
# full matrix can afford: a few servers, the four loads the targets name,
# windows of 2 s, servers alternating within each round, ROUNDS rounds.
# For each round and load it records every server's frames/s and CPU per
# echoed frame (loadgen --server-pid); at the end, the median of each
# server's per-round ratio to chapter 9 and to tokio's stronger
# current-thread variant. Writes book/src/captures/targets.txt.
#
# Usage: ROUNDS=5 bash book/capture/targets.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
source book/capture/lib.sh
rounds=${ROUNDS:-5}
cargo build --quiet --release -p ch09 -p ch12 -p ch13 -p tokio-echo -p loadgen
bin=${CARGO_TARGET_DIR:-target}/release
servers=(
    "ch09=$bin/ch09"
    "ch12=$bin/ch12"
    "ch13=$bin/ch13"
    "tokio-ct=$bin/tokio-echo --runtime current-thread --variant idiomatic"
    "tokio-ct-tuned=$bin/tokio-echo --runtime current-thread --variant tuned"
)
loads=("100 1 64" "100 16 64" "10 4 4096" "10 16 4096")
raw=$(mktemp)
trap 'rm -f "$raw"' EXIT

for round in $(seq "$rounds"); do
    for load in "${loads[@]}"; do
        read -r conns depth size <<<"$load"
        for spec in "${servers[@]}"; do
            name=${spec%%=*}
            log=$(mktemp)
            # shellcheck disable=SC2086
            ${spec#*=} --addr 127.0.0.1:0 >"$log" 2>/dev/null &
            pid=$!
            until port=$(sed -n 's/^listening on 127.0.0.1://p' "$log") && [ -n "$port" ]; do sleep 0.02; done
            json=$("$bin/loadgen" --addr "127.0.0.1:$port" --conns "$conns" --depth "$depth" \
                --size "$size" --secs 2 --warmup 0.3 --server-pid "$pid" --json 2>/dev/null || true)
            kill -INT "$pid"
            wait "$pid" || true
            rm -f "$log"
            echo "$round ${conns}x${depth}x${size} $name $json" >>"$raw"
        done
    done
    echo "capture-targets: round $round of $rounds done" >&2
done

{
header ROUNDS=$rounds bash book/capture/targets.sh
python3 - "$raw" "$rounds" <<'PY'
import json, statistics, sys
from collections import defaultdict
raw, rounds = sys.argv[1], sys.argv[2]
cell = {}  # (round, load, server) -> (fps, ns per frame)
for line in open(raw):
    r, load, name, js = line.split(" ", 3)
    d = json.loads(js)
    ns = d["server_cpu"] * d["secs"] * 1e9 / d["frames"] if d.get("server_cpu") and d["frames"] else None
    cell[(r, load, name)] = (d["frames_per_sec"], ns)
loads = list(dict.fromkeys(k[1] for k in cell))
names = list(dict.fromkeys(k[2] for k in cell))
print("# 2 s windows, servers alternating within each round")
print("# median over rounds of each round's ratio; CPU = server CPU per echoed frame")
for load in loads:
    print(f"\n{load}")
    rs = sorted({k[0] for k in cell if k[1] == load})
    for name in names:
        fps = [cell[(r, load, name)][0] for r in rs]
        ns = [cell[(r, load, name)][1] for r in rs]
        def ratio(other, i):
            pairs = [(cell[(r, load, name)][i], cell[(r, load, other)][i]) for r in rs]
            return statistics.median(a / b for a, b in pairs if a and b)
        def stronger(r):  # tokio's cheaper current-thread variant in that round
            return min(("tokio-ct", "tokio-ct-tuned"), key=lambda t: cell[(r, load, t)][1])
        vs_tokio = statistics.median(
            cell[(r, load, name)][1] / cell[(r, load, stronger(r))][1] for r in rs)
        print(f"  {name:15} {statistics.median(fps)/1e3:8.1f}k frames/s  CPU {statistics.median(ns):7.0f} ns/frame"
              f"  ×ch09: frames {ratio('ch09', 0):.2f} CPU {ratio('ch09', 1):.2f}"
              f"  CPU ×stronger tokio-ct: {vs_tokio:.2f}")
PY
} | tee "$captures/targets.txt"
