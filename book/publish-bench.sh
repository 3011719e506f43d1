#!/usr/bin/env bash
# Copies a benchmark run into the book: the tables, the CSVs and the plots.
# Usage: bash book/publish-bench.sh [DIR]   (default: bench-out, what `just bench` writes)
#
# The Benchmarks page includes book/src/bench/results.txt (the matrix),
# targets.txt (the targets, settled by their intervals) and latency.txt
# (latency against offered load): markdown, but not .md, which would make
# each a page of its own. Each phase's files are published if the run has
# them, so `just bench --phases targets` followed by this replaces the
# targets and leaves the rest as it was.
# Only full runs are published: a --quick run's tiny loads and windows are
# a smoke test, not numbers to read (each results file records its mode).
set -euo pipefail
cd "$(dirname "$0")/.."
from=${1:-bench-out}
to=book/src/bench
published=()
mkdir -p "$to"
for phase in results targets latency; do
    md=$from/$phase.md
    [ -f "$md" ] || continue
    mode=$(sed -n 's/^- mode: //p' "$md" | head -1)
    if [ "$mode" != full ]; then
        echo "refusing to publish $md: it is a ${mode:-pre-mode (older bench)} run, not a full one; run \`just bench\` without --quick" >&2
        exit 1
    fi
    if grep -q '^- only: ' "$md"; then
        echo "warning: $md is a run of some servers only ($(sed -n 's/^- only: //p' "$md"))" >&2
    fi
    # The page has its own titles and places the plots itself: drop the
    # run's title line and its image links.
    grep -v -e "^# " -e "^!\\[" "$md" >"$to/$phase.txt"
    published+=("$phase")
done
[ ${#published[@]} -gt 0 ] || { echo "no results in $from: run \`just bench\` first" >&2; exit 1; }
for f in results.csv runs.csv targets.csv latency.csv throughput.svg connections.svg idle.svg memory.svg latency.svg; do
    if [ -f "$from/$f" ]; then cp "$from/$f" "$to/"; fi
done
echo "published ${published[*]} from $from into $to"
