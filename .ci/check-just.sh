#!/usr/bin/env bash
# Checks the justfile as a user meets it: `just run` starts a server, says
# what it builds, and ends with status 0 and no error line on Ctrl-C;
# `just client` talks to it; `just diff` shows a step.
set -euo pipefail
cd "$(dirname "$0")/.."

just --list >/dev/null

out=$(mktemp)
trap 'rm -f "$out"' EXIT
# A session of its own, as a terminal's foreground job: Ctrl-C reaches
# every process in it, just and the server alike.
setsid just run ch06 --addr 127.0.0.1:0 >"$out" 2>&1 &
session=$!
for _ in $(seq 600); do
    grep -q '^listening on ' "$out" && break
    sleep 0.1
done
addr=$(sed -n 's/^listening on //p' "$out")
[ -n "$addr" ] || { cat "$out"; echo "just run printed no listening line" >&2; exit 1; }
grep -q 'Finished' "$out" || { cat "$out"; echo "just run did not show cargo's build" >&2; exit 1; }

replies=$(just client --addr "$addr" hello world 2>/dev/null)
[ "$replies" = $'hello\nworld' ] || { echo "just client printed: $replies" >&2; exit 1; }

kill -INT -- "-$session"
status=0
wait "$session" || status=$?
if [ "$status" -ne 0 ] || grep -q '^error' "$out"; then
    cat "$out"
    echo "Ctrl-C on just run: status $status (want 0, and no error line)" >&2
    exit 1
fi

diff_out=$(just diff ch06 ch07)
grep -q '^diff --git' <<<"$diff_out" || { echo "just diff ch06 ch07 printed no diff" >&2; exit 1; }
# A reader who stops reading (`just diff ch06 ch07 | head`) is not an error.
# Here the pipe's reading end is closed before just starts, so the diff's
# first write meets SIGPIPE every time, not one run in two.
status=0
python3 - <<'EOF' || status=$?
import os, subprocess, sys
read_end, write_end = os.pipe()
os.close(read_end)
sys.exit(subprocess.run(["just", "diff", "ch06", "ch07"], stdout=write_end).returncode)
EOF
[ "$status" -eq 0 ] || { echo "just diff into a closed pipe: status $status (want 0)" >&2; exit 1; }

# `just serve-book` too ends with status 0 on Ctrl-C.
setsid just serve-book >"$out" 2>&1 &
session=$!
for _ in $(seq 1800); do
    grep -q 'Serving on' "$out" && break
    sleep 0.1
done
grep -q 'Serving on' "$out" || { cat "$out"; echo "just serve-book did not serve" >&2; exit 1; }
kill -INT -- "-$session"
status=0
wait "$session" || status=$?
if [ "$status" -ne 0 ] || grep -q '^error' "$out"; then
    cat "$out"
    echo "Ctrl-C on just serve-book: status $status (want 0, and no error line)" >&2
    exit 1
fi
echo "justfile: ok (run, client, Ctrl-C, diff, serve-book)"
