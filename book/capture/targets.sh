#!/usr/bin/env bash
# The targets alone: the benchmark's targets phase (ch09, ch14, ch15 and
# tokio's current-thread variants at the four loads the targets name,
# servers alternating in each round, rounds added until every interval is
# within ±3% or the cap; see tools/bench/README.md), then published into
# the book's Benchmarks page (book/src/bench/targets.txt and targets.csv).
# `just bench` runs the same phase among the others.
#
# Usage: bash book/capture/targets.sh [bench options, e.g. --max-rounds 10]
set -euo pipefail
cd "$(dirname "$0")/../.."
out=bench-out/targets-only
cargo run --release -p bench -- --phases targets --out "$out" "$@"
bash book/publish-bench.sh "$out"
