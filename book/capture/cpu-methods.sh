#!/usr/bin/env bash
# Issue 19's question: ch15 ÷ ch09, CPU per echoed frame, at 100×1×64 B and
# 100×16×64 B, counted four ways (over the load generator's window from
# schedstat, the same window from utime+stime, the server's whole run, and
# pinned), with where the kernel's softirq work ran. The benchmark's targets
# phase (which `just bench` runs with every target server) restricted to
# ch09, ch15 and tokio-ct, ROUNDS rounds (default 8); the tables are copied
# from its targets.md into book/src/captures/cpu-methods.txt, with the
# machine's load average, since on a shared machine the unpaired ratios
# are noise-bound and only the paired ones (same runs, two ways) resolve.
#
# Usage: ROUNDS=8 bash book/capture/cpu-methods.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
source book/capture/lib.sh
rounds=${ROUNDS:-8}
out=bench-out/cpu-methods
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
# A failed run (a lost frame) is listed in targets.md and left out of the
# figures: the capture is still made, and shows it.
status=0
cargo run --release -p bench -- --phases targets --only ch09,ch15,tokio-ct \
    --min-rounds "$rounds" --max-rounds "$rounds" --out "$out" || status=$?
[ -f "$out/targets.md" ] || exit "$status"
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
{
    header ROUNDS=$rounds bash book/capture/cpu-methods.sh
    echo "# = cargo run --release -p bench -- --phases targets --only ch09,ch15,tokio-ct --min-rounds $rounds --max-rounds $rounds"
    echo "# load average (1, 5, 15 min) before: $load_before, after: $load_after"
    echo
    for anchor in methods paired softirq; do
        sed -n "/<!-- ANCHOR: $anchor -->/,/<!-- ANCHOR_END: $anchor -->/p" "$out/targets.md"
        echo
    done
    sed -n '/^\*\*Runs that failed\*\*/,$p' "$out/targets.md"
} >book/src/captures/cpu-methods.txt
cat book/src/captures/cpu-methods.txt
