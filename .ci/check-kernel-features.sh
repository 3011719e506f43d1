#!/usr/bin/env bash
# What each chapter does on a kernel without what it needs (the README's
# "Where it runs"): it stops at start with one line naming what failed, and
# exit status 1. A missing feature is simulated by making its system call
# fail, with strace's fault injection, on the binaries `cargo test` built.
#
# Usage: bash .ci/check-kernel-features.sh   (after cargo test --workspace)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${CARGO_TARGET_DIR:-target}/debug

if ! strace -f -o /dev/null true 2>/dev/null; then
    echo "kernel features: strace cannot trace here: not checked"
    exit 0
fi

errors=0
# expect SYSCALL:INJECTION PATTERN CHAPTER [ARGS...]: the chapter, with that
# call failing, prints one line matching PATTERN and exits 1.
expect() {
    local inject=$1 pattern=$2 chapter=$3
    shift 3
    local out status=0
    out=$(timeout 20 strace -f -o /dev/null -e inject="$inject" \
        "$bin/$chapter" --addr 127.0.0.1:0 "$@" 2>&1 >/dev/null) || status=$?
    if [ "$status" -ne 1 ] || [ "$(wc -l <<<"$out")" -ne 1 ] || ! grep -qE "^$chapter: $pattern" <<<"$out"; then
        echo "kernel features: $chapter${*:+ $*} with $inject: status $status (want 1), said:" >&2
        printf '%s\n' "$out" >&2
        errors=$((errors + 1))
    fi
}

# The event loops' stop signals arrive through a signalfd (Linux 2.6.27).
for chapter in ch06 ch07 ch08 ch09 ch10 ch11 ch12 ch13 ch14 ch15 ch16 ch17; do
    expect signalfd4:error=ENOSYS 'signalfd: .*Function not implemented' "$chapter"
done
# epoll (epoll_create1: Linux 2.6.27).
for chapter in ch07 ch08 ch09 ch10 ch11 ch12 ch13 ch14 ch16 ch17; do
    expect epoll_create1:error=ENOSYS 'epoll_create1: .*Function not implemented' "$chapter"
done
# eventfd, to wake a loop from another thread.
for chapter in ch12 ch13 ch14; do
    expect eventfd2:error=ENOSYS '.*Function not implemented' "$chapter"
done
expect eventfd2:error=ENOSYS 'eventfd: .*Function not implemented' ch16
# io_uring: absent (ENOSYS), disabled or filtered (EPERM), or without
# DEFER_TASKRUN before Linux 6.1 (EINVAL).
for errno in ENOSYS EPERM EINVAL; do
    expect io_uring_setup:error=$errno 'io_uring is unavailable: .*Linux 6.1 or later' ch15
done
# SO_REUSEPORT (Linux 3.9), set after SO_REUSEADDR: the second setsockopt.
expect setsockopt:error=ENOPROTOOPT:when=2 'cannot listen on 127.0.0.1:0: Protocol not available' \
    ch16 --share reuseport
# EPOLLEXCLUSIVE (Linux 4.5): one loop registers its stop signal, then the
# listener (the second epoll_ctl).
expect epoll_ctl:error=EINVAL:when=2 'epoll_ctl: .*Invalid argument' ch16 --share exclusive --threads 1

[ "$errors" -eq 0 ] || exit 1
echo "kernel features: ok (signalfd, epoll, eventfd, io_uring, SO_REUSEPORT, EPOLLEXCLUSIVE missing: one line, status 1)"
