#!/usr/bin/env bash
# Checks the justfile as a user meets it: `just run` starts a server, says
# what it builds, and ends with status 0 and no error line on Ctrl-C;
# `just client` talks to it, and without it says how to start one; a wrong
# chapter name or a privileged port is one clear line; `just conform` builds
# what it tests; `just diff` shows a step, the book's diff of it.
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

# With the server gone, its port has no listener: `just client` says so and
# how to start one, in one line, and just adds no error of its own.
status=0
msg=$(just client --addr "$addr" hello 2>&1 >/dev/null | grep -v '^ *\(Compiling\|Finished\|Blocking\)') || status=$?
if [ "$status" -ne 1 ] || [ "$(wc -l <<<"$msg")" -ne 1 ] ||
    ! grep -q "^client: no server listens on $addr .*just run ch06 --addr $addr" <<<"$msg"; then
    echo "just client with no server: status $status, said: $msg" >&2
    exit 1
fi

# A chapter is named by its crate (ch06) or its directory (ch06-poll, as in
# the README's table); any other name is one line and status 2.
just run ch06-poll --help 2>/dev/null | grep -q '^ch06: ' || { echo "just run ch06-poll --help failed" >&2; exit 1; }
status=0
msg=$(just run ch99 2>&1) || status=$?
if [ "$status" -ne 2 ] || [ "$msg" != 'no such chapter: ch99 (see `just chapters`)' ]; then
    echo "just run ch99: status $status, said: $msg" >&2
    exit 1
fi

# A privileged port without the right to bind it: every chapter says so in
# one line, with the way out, and exits 1. As root, the capability is taken
# away from the server (setpriv); a plain user never had it.
first_free=$(cat /proc/sys/net/ipv4/ip_unprivileged_port_start 2>/dev/null || echo 1024)
if [ "$first_free" -gt 80 ]; then
    drop=()
    [ "$(id -u)" -ne 0 ] || drop=(setpriv --bounding-set -net_bind_service --)
    for dir in chapters/*/; do
        chapter=$(basename "$dir")
        chapter=${chapter%%-*}
        status=0
        msg=$("${drop[@]}" just run "$chapter" --addr 127.0.0.1:80 2>&1 >/dev/null |
            grep -v '^ *\(Compiling\|Finished\|Blocking\)') || status=$?
        if [ "$status" -ne 1 ] || [ "$(wc -l <<<"$msg")" -ne 1 ] ||
            ! grep -q "^$chapter: cannot listen on 127.0.0.1:80: Permission denied.*CAP_NET_BIND_SERVICE.*use a port of $first_free or more" <<<"$msg"; then
            echo "just run $chapter --addr 127.0.0.1:80 without CAP_NET_BIND_SERVICE: status $status, said: $msg" >&2
            exit 1
        fi
    done
else
    echo "net.ipv4.ip_unprivileged_port_start is $first_free: port 80 needs no privilege here, not checked"
fi

# The README's example, as written, on a server not built yet: `just
# conform` builds what it names, and shows cargo at work.
rm -f "${CARGO_TARGET_DIR:-target}/release/ch07"
status=0
just conform event_loop -- target/release/ch07 >"$out" 2>&1 || status=$?
if [ "$status" -ne 0 ] || ! grep -q 'Finished' "$out" || grep -q '^error' "$out"; then
    cat "$out"
    echo "just conform event_loop -- target/release/ch07: status $status (want 0, cargo's build shown)" >&2
    exit 1
fi

# The README installs the mdBook that CI installs.
pinned=$(sed -n 's/.*cargo install mdbook --locked --version \([0-9.]*\).*/\1/p' .ci/run)
grep -qF "cargo install mdbook --locked --version $pinned\`" README.md ||
    { echo "README.md does not install mdBook $pinned, the version .ci/run installs" >&2; exit 1; }

diff_out=$(just diff ch06 ch07)
grep -q '^diff --git' <<<"$diff_out" || { echo "just diff ch06 ch07 printed no diff" >&2; exit 1; }
# The reader's diff is the book's, byte for byte: the same lines left out,
# the same whitespace ignored. With one chapter, the step its page shows:
# chapter 16's page compares itself with chapter 9.
bash book/gen-diffs.sh >/dev/null
cmp -s <(printf '%s\n' "$diff_out") book/src/generated/ch06-ch07.diff ||
    { echo "just diff ch06 ch07 differs from the book's generated/ch06-ch07.diff" >&2; exit 1; }
cmp -s <(just diff ch16) book/src/generated/ch09-ch16.diff ||
    { echo "just diff ch16 differs from the book's generated/ch09-ch16.diff" >&2; exit 1; }
cmp -s <(just diff ch07-epoll-lt) book/src/generated/ch06-ch07.diff ||
    { echo "just diff ch07-epoll-lt differs from the book's generated/ch06-ch07.diff" >&2; exit 1; }
status=0
msg=$(just diff ch03 2>&1) || status=$?
if [ "$status" -ne 2 ] || [ "$msg" != 'ch03 is the first chapter: nothing comes before it' ]; then
    echo "just diff ch03: status $status, said: $msg" >&2
    exit 1
fi
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
echo "justfile: ok (run, client, Ctrl-C, no server, no such chapter, privileged port, conform, diff and the book's diffs, serve-book)"
