#!/usr/bin/env bash
# What a server that ignores EMFILE does: chapter 5 with its spare-descriptor
# fix removed (built from a copy of the working tree, patched), under
# `ulimit -n 32`, with 40 clients connected and waiting. Two views:
#
#   emfile-spin.txt       strace -f -e trace=accept4 of that server for 3 s:
#                         the accepts that worked, a few of the failures, and
#                         how many failures there were in all;
#   emfile-conform.txt    conform's case for it against the same binary
#                         (it must fail: the CPU it burns doing nothing).
#
# Usage: bash book/capture/emfile.sh   (needs strace, perl)
set -euo pipefail
cd "$(dirname "$0")/../.."
source book/capture/lib.sh
command -v strace >/dev/null || { echo "capture: install strace first" >&2; exit 1; }
tmp=$(mktemp -d)
server=""
cleanup() {
    [ -n "$server" ] && kill -KILL "$server" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT

# The patch: at EMFILE, go round the loop again, as a naive server does.
src=$tmp/src
mkdir -p "$src"
git ls-files -z | xargs -0 cp --parents -t "$src"
main=$src/chapters/ch05-threads/src/main.rs
perl -0pi -e 's/Err\(AcceptError::NoFds\(_\)\) => match accept_with_spare_fd\(&listener, &mut spare_fd\) \{\n\s*Some\(stream\) => stream,\n\s*None => continue,\n\s*\},/Err(AcceptError::NoFds(_)) => continue, \/\/ the fix removed/' "$main"
grep -q 'the fix removed' "$main" || { echo "capture: could not patch $main" >&2; exit 1; }
CARGO_TARGET_DIR=$PWD/target/capture-emfile cargo build --quiet --release \
    --manifest-path "$src/Cargo.toml" -p ch05 2>/dev/null
broken=$PWD/target/capture-emfile/release/ch05
cargo build --quiet --release -p conformance

# 40 clients against 32 descriptors, for 3 s, traced.
(
    ulimit -n 32
    exec strace -f -o "$tmp/strace.raw" -e trace=accept4 "$broken" --addr 127.0.0.1:0
) >"$tmp/out" 2>/dev/null &
server=$!
for _ in $(seq 100); do
    grep -q '^listening on' "$tmp/out" && break
    sleep 0.05
done
port=$(sed -n 's/^listening on 127.0.0.1://p' "$tmp/out")
# The clients stay connected until the server is gone, so that the trace
# shows only the spin, not the accepts that follow their leaving.
python3 - "$port" >"$tmp/clients" <<'EOF' &
import socket, sys, time
clients = [socket.create_connection(("127.0.0.1", int(sys.argv[1]))) for _ in range(40)]
print("connected", flush=True)
time.sleep(60)
EOF
clients=$!
until grep -q connected "$tmp/clients"; do sleep 0.05; done
sleep 3 # the window we trace: the clients wait, the server spins
kill -KILL "$(pgrep -P "$server" -x ch05)"
{ wait "$server"; } 2>/dev/null || true
server=""
kill "$clients"
wait "$clients" 2>/dev/null || true
{
    header bash book/capture/emfile.sh
    echo "# strace -f -e trace=accept4 target/capture-emfile/release/ch05 (chapter 5 without the spare descriptor),"
    echo "#   under ulimit -n 32, while 40 clients connect and wait for 3 s"
    sed -E 's/^[0-9]+ +//' "$tmp/strace.raw" | awk '
        / = [0-9]+$/ { ok[++accepted] = $0; next }
        /EMFILE/ { failed++; if (failed <= 5) fail[failed] = $0; next }
        END {
            for (i = 1; i <= accepted; i++)
                if (i <= 3 || i == accepted) print ok[i]; else if (i == 4) print "..."
            for (i = 1; i <= 5 && i <= failed; i++) print fail[i]
            printf "... (%d accepts that worked, then %d that failed with EMFILE, in 3 s)\n", accepted, failed
        }'
} >"$captures/emfile-spin.txt"
echo "capture: $captures/emfile-spin.txt"

case=out_of_fds_neither_spins_nor_stops_serving
{
    header bash book/capture/emfile.sh
    echo "\$ target/release/conform --level echo --only $case -- target/capture-emfile/release/ch05"
    # conform exits 1 when the case fails: that is the point here.
    target/release/conform --level echo --only "$case" -- "$broken" || [ $? -eq 1 ]
} >"$captures/emfile-conform.txt"
echo "capture: $captures/emfile-conform.txt"
