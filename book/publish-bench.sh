#!/usr/bin/env bash
# Copies a benchmark run into the book: the tables, the CSV and the plots.
# Usage: bash book/publish-bench.sh [DIR]   (default: bench-out, what `just bench` writes)
# The book's Benchmarks page includes book/src/bench/results.txt (markdown tables;
# not .md, which would make it a page of its own) and shows the SVGs.
set -euo pipefail
cd "$(dirname "$0")/.."
from=${1:-bench-out}
to=book/src/bench
[ -f "$from/results.md" ] || { echo "no $from/results.md: run \`just bench\` first" >&2; exit 1; }
mkdir -p "$to"
# The page has its own title and places the plots itself: drop the run's
# title line and its image links.
grep -v -e "^# " -e "^!\\[" "$from/results.md" > "$to/results.txt"
cp "$from/results.csv" "$from/runs.csv" "$from"/*.svg "$to/"
echo "published $from into $to"
