#!/usr/bin/env bash
# Nagle's algorithm against delayed ACKs, measured: the test in
# common/tests/nagle.rs runs a blocking echo server written like chapter 4's,
# with and without TCP_NODELAY, and prints the median time for three small
# frames to come back, over 20 exchanges. Writes book/src/captures/nagle.txt:
# the test's line, then the same two medians rounded.
#
# Usage: bash book/capture/nagle.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
source book/capture/lib.sh
line=$(cargo test --quiet --release -p common --test nagle -- --nocapture 2>/dev/null |
    grep '^median exchange')
{
    header bash book/capture/nagle.sh
    echo "\$ cargo test --release -p common --test nagle -- --nocapture"
    echo "$line"
    python3 - "$line" <<'PY'
import re, sys
units = {"s": 1e3, "ms": 1.0, "µs": 1e-3, "ns": 1e-6}
nagle, nodelay = (float(v) * units[u] for v, u in re.findall(r"([\d.]+)(s|ms|µs|ns)\b", sys.argv[1]))
print(f"rounded: {nagle:.0f} ms with Nagle, {nodelay * 1e3:.0f} µs with TCP_NODELAY")
PY
} >"$captures/nagle.txt"
echo "capture: $captures/nagle.txt"
