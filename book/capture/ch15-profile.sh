#!/usr/bin/env bash
# Where the CPU of ch09 and ch15 goes, per echoed frame: the system calls
# each makes, and a profile of its CPU split into the kernel's TCP/IP
# stack, the readiness or completion machinery (epoll; io_uring), the rest
# of the system calls, the rest of the kernel, and our own code.
#
# For each load, each server is started, then loaded three times by the
# verifying load generator, for 3 s each, and observed one way per run, so
# that no observer's overhead shows in another's figures: its CPU time
# (/proc/PID/stat, by loadgen --server-pid), with frames per second; its
# system calls, counted by `perf stat` on tracepoints; its call stacks,
# sampled by `perf record -g` every 250 µs of CPU. The last two cover the
# whole run, whose window is all but a few hundred of its frames. Each sample is charged
# to the first bucket its call stack belongs to, in this order: user space;
# TCP/IP (the stack is inside sock_sendmsg, sock_recvmsg, the loopback's
# softirq...); machinery (inside epoll_wait or io_uring_enter); system
# calls (the entry and exit, read's path down to the socket); other.
#
# Needs perf (Debian: apt-get install linux-perf) and root, or
# kernel.perf_event_paranoid <= 1 and readable /proc/kallsyms.
#
# Usage: bash book/capture/ch15-profile.sh   (writes book/src/captures/ch15-profile.txt)
set -euo pipefail
cd "$(dirname "$0")/../.."
source book/capture/lib.sh
command -v perf >/dev/null || { echo "profile: install perf first" >&2; exit 1; }
cargo build --release --quiet -p ch09 -p ch15 -p loadgen
tmp=$(mktemp -d)
server=""
cleanup() {
    [ -n "$server" ] && kill "$server" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

events=raw_syscalls:sys_enter,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_read
events+=,syscalls:sys_enter_sendto,syscalls:sys_enter_io_uring_enter
events+=,io_uring:io_uring_submit_req,io_uring:io_uring_poll_arm

{
header bash book/capture/ch15-profile.sh
echo "# per load and server, three runs of loadgen --conns C --depth D --size S --secs 3:"
echo "# unobserved (--server-pid); under perf stat -e <events>; under perf record -e cpu-clock -g"
for load in "100 16 64" "100 1 64" "10 16 4096"; do
    read -r conns depth size <<<"$load"
    for name in ch09 ch15; do
        target/release/$name --addr 127.0.0.1:0 >"$tmp/out" 2>/dev/null &
        server=$!
        for _ in $(seq 100); do
            grep -q '^listening on' "$tmp/out" && break
            sleep 0.05
        done
        addr=$(sed -n 's/^listening on //p' "$tmp/out")
        run=(--addr "$addr" --conns "$conns" --depth "$depth" --size "$size" --secs 3 --json)
        # 1. Unobserved: frames per second, and the server's CPU per frame.
        target/release/loadgen "${run[@]}" --server-pid "$server" >"$tmp/load.json"
        # 2. System calls, counted from the first connection to the last
        #    reply: the window, with no warm-up and a short drain, so that
        #    (almost) every frame counted is in the report's count.
        perf stat -x, -e "$events" -p "$server" -o "$tmp/stat.csv" -- \
            target/release/loadgen "${run[@]}" --warmup 0 --drain 0.2 >"$tmp/stat.json" || true
        # 3. Call stacks, the same way.
        perf record -q -e cpu-clock -F 4000 -g -p "$server" -o "$tmp/perf.data" -- \
            target/release/loadgen "${run[@]}" --warmup 0 --drain 0.2 >/dev/null 2>&1 || true
        kill -INT "$server"
        wait "$server" || true
        server=""
        perf script -i "$tmp/perf.data" -F ip,sym,dso 2>/dev/null >"$tmp/stacks.txt"
        python3 - "$name" "$conns $depth $size" "$tmp/load.json" "$tmp/stat.json" "$tmp/stat.csv" "$tmp/stacks.txt" <<'EOF'
import collections, json, sys

name, load, load_json, stat_json, stat_csv, stacks = sys.argv[1:]
report = json.load(open(load_json))
fps = report["frames_per_sec"]
ns_per_frame = report["server_cpu"] * report["secs"] * 1e9 / report["frames"]
frames = json.load(open(stat_json))["frames"]
counts = {}
for line in open(stat_csv):
    fields = line.strip().split(",")
    if len(fields) > 2 and fields[0] and not line.startswith("#"):
        try:
            counts[fields[2]] = float(fields[0])
        except ValueError:
            pass
conns, depth, size = load.split()
print()
print(f"## {name}, {conns} connections x {depth} in flight x {size} B: "
      f"{fps:,.0f} frames/s, {ns_per_frame:,.0f} ns of server CPU per frame")
def per_frame(event):
    return counts.get(event, 0) / frames
print(f"system calls per frame: {per_frame('raw_syscalls:sys_enter'):.3f} "
      f"(epoll_wait {per_frame('syscalls:sys_enter_epoll_wait'):.3f}, "
      f"read {per_frame('syscalls:sys_enter_read'):.3f}, "
      f"sendto {per_frame('syscalls:sys_enter_sendto'):.3f}, "
      f"io_uring_enter {per_frame('syscalls:sys_enter_io_uring_enter'):.3f})")
if per_frame("io_uring:io_uring_submit_req"):
    print(f"io_uring operations submitted per frame: {per_frame('io_uring:io_uring_submit_req'):.3f}, "
          f"of which had to wait for readiness (poll armed): {per_frame('io_uring:io_uring_poll_arm'):.3f}")

TCP = ("sock_sendmsg", "sock_recvmsg", "tcp_sendmsg", "tcp_recvmsg", "net_rx_action",
       "tcp_v4_rcv", "__dev_queue_xmit", "tcp_write_timer", "tcp_delack_timer")
MACHINERY = ("ep_", "do_epoll_", "__x64_sys_epoll", "__do_sys_epoll",
             "io_", "__io_", "__do_sys_io_uring", "tctx_task_work")
def bucket(chain):
    leaf_sym, leaf_dso = chain[0]
    if "kernel" not in leaf_dso:
        return "our code (user space: the loop, parsing, copying)"
    syms = [s for s, _ in chain]
    if any(s.startswith(TCP) for s in syms):
        return "TCP/IP stack and socket (send, receive, loopback)"
    if any(s.startswith(MACHINERY) for s in syms):
        return "readiness/completion machinery (epoll; io_uring)"
    if any(s.startswith(("do_syscall_64", "entry_SYSCALL")) for s in syms):
        return "other system call work (entry, exit, fd lookup...)"
    return "other kernel (scheduler, interrupts, timers)"

# Copying the bytes between our memory and the socket's, wherever it is done.
COPY = ("_copy_to_iter", "_copy_from_iter", "copy_user_", "rep_movs_alternative", "__memmove", "__memcpy")
samples = collections.Counter()
top = collections.defaultdict(collections.Counter)
copying = 0
chain = []
def flush():
    global copying
    if chain:
        b = bucket(chain)
        samples[b] += 1
        top[b][chain[0][0]] += 1
        copying += chain[0][0].startswith(COPY)
for line in open(stacks):
    line = line.strip()
    if not line:
        flush()
        chain = []
        continue
    parts = line.split(None, 1)
    if len(parts) < 2:
        continue
    rest = parts[1]
    sym, _, dso = rest.rpartition(" (")
    chain.append((sym.split("+")[0], dso.rstrip(")")))
flush()
total = sum(samples.values())
print(f"CPU split ({total} samples), and what it makes of the CPU per frame:")
for b, n in samples.most_common():
    leaves = ", ".join(s for s, _ in top[b].most_common(4))
    print(f"  {100 * n / total:5.1f}%  {ns_per_frame * n / total:6,.0f} ns  {b}  [{leaves}]")
print(f"  of all this, copying bytes (in the kernel or ours): {100 * copying / total:.1f}%, "
      f"{ns_per_frame * copying / total:,.0f} ns")
EOF
    done
done
} | tee "$captures/ch15-profile.txt"
