#!/usr/bin/env bash
# Copies a benchmark run into the book: the tables, the CSV and the plots.
# Usage: bash book/publish-bench.sh [DIR]   (default: bench-out, what `just bench` writes)
# The book's Benchmarks page includes book/src/bench/results.txt (markdown tables;
# not .md, which would make it a page of its own) and shows the SVGs.
# Only a full run is published: a --quick run's tiny loads and windows are a
# smoke test, not numbers to read (results.md records the mode).
set -euo pipefail
cd "$(dirname "$0")/.."
from=${1:-bench-out}
to=book/src/bench
[ -f "$from/results.md" ] || { echo "no $from/results.md: run \`just bench\` first" >&2; exit 1; }
mode=$(sed -n 's/^- mode: //p' "$from/results.md" | head -1)
if [ "$mode" != full ]; then
    echo "refusing to publish $from: it is a ${mode:-pre-mode (older bench)} run, not a full one; run \`just bench\` without --quick" >&2
    exit 1
fi
if grep -q '^- only: ' "$from/results.md"; then
    echo "warning: $from is a run of some servers only ($(sed -n 's/^- only: //p' "$from/results.md"))" >&2
fi
mkdir -p "$to"
# The page has its own title and places the plots itself: drop the run's
# title line and its image links.
grep -v -e "^# " -e "^!\\[" "$from/results.md" > "$to/results.txt"
cp "$from/results.csv" "$from/runs.csv" "$from"/*.svg "$to/"
echo "published $from into $to"
