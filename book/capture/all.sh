#!/usr/bin/env bash
# Re-records every capture under book/src/captures/, one script after the
# other (`just captures`). Each capture file names, on its first line, the
# command that re-records it alone (`just capture NAME [ARGS]` runs
# book/capture/NAME.sh). Takes about an hour on 2 cores, most of it in the
# measurements (ch15-measure, targets, ch14's bench, multicore, herd);
# needs strace, perf, valgrind, python3, a C compiler, root (perf's
# tracepoints) and, for chapter 17's, redis-server and redis-tools. After
# it: `just book`, and make the prose follow whatever book/check.sh finds
# changed.
#
# Usage: bash book/capture/all.sh [NAME...]   (default: every script)
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts=("$@")
[ ${#scripts[@]} -gt 0 ] || scripts=(strace emfile nagle sigint-ignored backlog conform threads copy ch14 ch15-trace
    ch15-profile ch15-measure ch15-stress herd multicore targets counts cpu-methods timeline resp redis-full
    redis redis-profile)
for name in "${scripts[@]}"; do
    echo "=== book/capture/$name.sh ($SECONDS s)" >&2
    case $name in
        ch14) bash book/capture/ch14.sh sizes memory strace callgrind syscalls bench ;;
        ch15-measure) SECS=1.5 bash book/capture/ch15-measure.sh 30 ;;
        *) bash "book/capture/$name.sh" ;;
    esac >/dev/null
done
echo "=== all captures re-recorded in $SECONDS s" >&2
