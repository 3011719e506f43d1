#!/usr/bin/env bash
# Figures without timing noise, beside the CPU-time ratios of the targets:
# for ch09, ch14, ch15 and tokio-ct at the targets' two 64 B loads
# (100 connections, 1 or 16 frames in flight, from tools/loadgen),
#   - user-space instructions per echoed frame, counted by callgrind: two
#     runs under valgrind, of 0.5 s and of 3 s of load, and the difference
#     in instructions over the difference in frames, which leaves out
#     start-up, ramp-up and the first buffers. Under valgrind a server runs
#     some 50 times slower, so it finds more frames per wake-up than it
#     would at full speed: compare servers with each other, not with the
#     CPU times;
#   - system calls per echoed frame, counted by the kernel's tracepoints
#     (perf stat -e raw_syscalls:sys_enter and the calls named below)
#     over a 2 s load at full speed, against every frame of the run.
# Counts vary from run to run too (how many frames a wake-up finds depends
# on timing, and with it the loop's overhead per frame), so each is taken
# REPS times (default 3): the median, and the lowest and highest.
# Writes book/src/captures/counts.txt. Needs valgrind, perf (with access
# to the syscall tracepoints) and python3; takes about five minutes.
#
# Usage: REPS=3 bash book/capture/counts.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
source book/capture/lib.sh
for tool in valgrind perf python3; do
    command -v "$tool" >/dev/null || { echo "capture-counts: this needs $tool" >&2; exit 1; }
done
cargo build --quiet --release -p ch09 -p ch14 -p ch15 -p tokio-echo -p loadgen
T=${CARGO_TARGET_DIR:-target}/release
servers=(
    "ch09=$T/ch09"
    "ch14=$T/ch14"
    "ch15=$T/ch15"
    "tokio-ct=$T/tokio-echo --runtime current-thread --variant idiomatic"
)
loads=("100 1 64" "100 16 64")
reps=${REPS:-3}
out=book/src/captures/counts.txt
tmp=$(mktemp -d)
pid=
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT

# Starts "$@" on a free port; sets $pid and $addr.
start() {
    "$@" --addr 127.0.0.1:0 >"$tmp/server.out" 2>"$tmp/server.err" &
    pid=$!
    # Under valgrind, on a busy machine, starting can take many seconds.
    for _ in $(seq 1200); do
        grep -q '^listening on' "$tmp/server.out" 2>/dev/null && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    addr=$(sed -n 's/^listening on //p' "$tmp/server.out")
    [ -n "$addr" ] || { echo "capture-counts: $* did not start" >&2; cat "$tmp/server.err" >&2; exit 1; }
}

stop() { # signal
    kill -"$1" "$pid"
    wait "$pid" || true
    pid=
}

# Runs loadgen against $addr; prints its frames_total, fails on a bad run.
load() { # conns depth size secs [command prefix...]
    local conns=$1 depth=$2 size=$3 secs=$4
    shift 4
    "$@" "$T/loadgen" --addr "$addr" --conns "$conns" --depth "$depth" --size "$size" \
        --secs "$secs" --warmup 0.3 --drain 1 --connect-timeout 30 --json >"$tmp/report.json"
    python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["frames_total"])' "$tmp/report.json"
}

# User-space instructions per echoed frame: the server under callgrind.
instructions() { # conns depth size command...
    local conns=$1 depth=$2 size=$3
    shift 3
    local ir=() frames=()
    for secs in 0.5 3; do
        # shellcheck disable=SC2068 # the server's command splits on purpose
        start valgrind --tool=callgrind --callgrind-out-file="$tmp/cg.out" $@
        frames+=("$(load "$conns" "$depth" "$size" "$secs")")
        stop TERM
        ir+=("$(sed -n 's/^summary: //p' "$tmp/cg.out")")
    done
    echo $(((ir[1] - ir[0]) / (frames[1] - frames[0])))
}

calls="read recvfrom recvmsg readv write sendto sendmsg writev epoll_wait epoll_pwait epoll_ctl io_uring_enter"
events=raw_syscalls:sys_enter
for call in $calls; do events+=",syscalls:sys_enter_$call"; done

# System calls per echoed frame: the server at full speed, counted by perf.
syscalls() { # conns depth size command...
    local conns=$1 depth=$2 size=$3
    shift 3
    # shellcheck disable=SC2068
    start $@
    local frames
    frames=$(load "$conns" "$depth" "$size" 2 perf stat -x, -o "$tmp/perf.csv" -e "$events" -p "$pid" --)
    stop INT
    awk -F, -v frames="$frames" '
        /raw_syscalls:sys_enter/ { total = $1 }
        /sys_enter_(read|recvfrom|recvmsg|readv),/ { reads += $1 }
        /sys_enter_(write|sendto|sendmsg|writev),/ { sends += $1 }
        /sys_enter_(epoll_wait|epoll_pwait),/ { waits += $1 }
        /sys_enter_epoll_ctl,/ { ctls += $1 }
        /sys_enter_io_uring_enter,/ { enters += $1 }
        END {
            if (!(total > 0 && frames > 0)) {
                print "capture-counts: perf counted no system calls" > "/dev/stderr"
                exit 1
            }
            printf "%.3f %.3f %.3f %.3f %.3f %.3f\n", total / frames, reads / frames,
                sends / frames, waits / frames, ctls / frames, enters / frames
        }' "$tmp/perf.csv"
}

# One row per server and load, tab-separated, for the table at the end:
# server, load, then each run's instructions, then each run's system calls
# ("total reads sends waits ctl enter").
: >"$tmp/rows"
for load in "${loads[@]}"; do
    read -r conns depth size <<<"$load"
    for spec in "${servers[@]}"; do
        name=${spec%%=*}
        command=${spec#*=}
        ir=() sc=()
        for _ in $(seq "$reps"); do
            ir+=("$(instructions "$conns" "$depth" "$size" "$command")")
            sc+=("$(syscalls "$conns" "$depth" "$size" "$command")")
        done
        (IFS=,; printf '%s\t%s\t%s\t%s\n' "$name" "100×${depth}×64B" "${ir[*]}" "${sc[*]}") >>"$tmp/rows"
        echo "capture-counts: $name at 100×${depth}×64B done" >&2
    done
done

{
    header REPS=$reps bash book/capture/counts.sh
    echo "# instructions: user space, per echoed frame (callgrind, difference of a 0.5 s and a 3 s load)"
    echo "# system calls per echoed frame over a 2 s load (perf stat, tracepoints): all of them, then"
    echo "# reads (read, recvfrom, recvmsg, readv), sends (write, sendto, sendmsg, writev),"
    echo "# epoll_wait/epoll_pwait, epoll_ctl, io_uring_enter (those of the median run)"
    echo "# each: median (lowest–highest) of $reps runs; vs ch09: median over ch09's at the same load"
    echo "# loadgen --conns 100 --depth D --size 64"
    echo
    python3 - "$tmp/rows" <<'PY'
import statistics, sys

rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1])]
def spread(values, decimals):
    v = sorted(values)
    return f"{statistics.median_low(v):.{decimals}f} ({v[0]:.{decimals}f}–{v[-1]:.{decimals}f})"
table = [["server", "load", "instructions", "vs ch09", "system calls", "vs ch09",
          "reads", "sends", "waits", "ctl", "enter"]]
base = {}
for name, load, ir, sc in rows:
    ir = [float(x) for x in ir.split(",")]
    sc = [[float(x) for x in run.split()] for run in sc.split(",")]
    median_run = sorted(sc)[(len(sc) - 1) // 2]
    ir_m = statistics.median_low(sorted(ir))
    base.setdefault(load, (ir_m, median_run[0]))
    b_ir, b_sc = base[load]
    table.append([name, load, spread(ir, 0), f"{ir_m / b_ir:.2f}",
                  spread([r[0] for r in sc], 2), f"{median_run[0] / b_sc:.2f}",
                  *(f"{x:.2f}" for x in median_run[1:4]), f"{median_run[4]:.3f}",
                  f"{median_run[5]:.2f}"])
widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
for r in table:
    cells = [c.ljust(w) if i < 3 or i == 4 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))]
    print("  ".join(cells).rstrip())
PY
} >"$tmp/counts.txt"
mv "$tmp/counts.txt" "$out"
cat "$out"
