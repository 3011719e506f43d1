#!/usr/bin/env bash
# Re-records the conform reports shown in book/src/test-your-server.md into
# book/src/captures/conform-*.txt. Not part of the build: the captures are
# checked in, so building the book needs neither python3 nor a C compiler.
# The reports are printed exactly as conform wrote them; only the timings
# differ from run to run (and, on a busy machine, a timing-bound case may
# too). Figures the page quotes from them are marked with the capture's name
# (<!--from captures/conform-....txt-->), so re-recording makes book/check.sh
# fail until the prose follows.
#
# Usage: bash book/capture/conform.sh   (needs cargo, python3 and cc)
set -euo pipefail
cd "$(dirname "$0")/../.."
source book/capture/lib.sh
command -v python3 >/dev/null || { echo "capture-conform: install python3 first" >&2; exit 1; }
command -v cc >/dev/null || { echo "capture-conform: install a C compiler (cc) first" >&2; exit 1; }

out=$captures
mkdir -p "$out" target/fixtures
cargo build --quiet --release -p conformance
cc -O2 -Wall -o target/fixtures/epoll_echo tests/fixtures/epoll_echo.c
# The tutorial-style server listens on a port fixed when it is compiled.
stranded_port=7401
cc -O2 -Wall -DPORT=$stranded_port -o target/fixtures/stranded_echo tests/fixtures/stranded_echo.c

capture() { # file, then conform's arguments
    local file=$out/$1
    shift
    {
        header bash book/capture/conform.sh
        echo "\$ target/release/conform $*"
        # conform exits 1 when a case fails: that is the point here.
        target/release/conform "$@" || [ $? -eq 1 ]
    } >"$file"
    echo "capture-conform: $file"
}

capture conform-python.txt --level event_loop -- python3 tests/fixtures/echo_socketserver.py
capture conform-c-epoll.txt --level scale -- target/fixtures/epoll_echo '{port}'
capture conform-stranded.txt --level event_loop --port $stranded_port -- target/fixtures/stranded_echo
capture conform-broken.txt --level echo -- python3 tests/fixtures/broken_echo.py
