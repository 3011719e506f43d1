#!/usr/bin/env bash
# The hunt for lost frames: many short windows of the verifying load
# generator against ch15, with and without DEFER_TASKRUN, across loads, with
# chapter 9 loaded the same way in the same rounds as the control. Every
# reply is checked byte for byte; a frame still unanswered after the drain
# (2 s, against round trips of milliseconds) is lost.
#
# A window whose slowest reply took over STALL_MS is explained from a
# scheduler trace (below): was the server, or the load generator, asleep
# (a lost wakeup, if work was waiting) or runnable and waiting for a CPU
# (a machine with more to do than cores)? ch09, loaded the same way in the
# same rounds, is the control for what the machine does to every server.
#
# Usage: bash book/capture/ch15-stress.sh [ROUNDS]   (default 25: 300 windows;
#        writes book/src/captures/ch15-stress.txt)
# Writes its report to stdout; book/src/captures/ch15-stress.txt is one.
set -euo pipefail
cd "$(dirname "$0")/../.."
source book/capture/lib.sh
rounds=${1:-25}
secs=${SECS:-1}
stall_ms=${STALL_MS:-100}
loads=("100 1 64" "100 16 64" "10 4 4096" "10 16 4096")
names=(ch15 ch15-no-defer ch09)
declare -A command=(
    [ch15]="target/release/ch15"
    [ch15-no-defer]="target/release/ch15 --no-defer-taskrun"
    [ch09]="target/release/ch09"
)

cargo build --release --quiet -p ch09 -p ch15 -p loadgen
tmp=$(mktemp -d)
cleanup() {
    for name in "${names[@]}"; do
        [ -f "$tmp/$name.pid" ] && kill "$(cat "$tmp/$name.pid")" 2>/dev/null || true
    done
    rm -rf "$tmp"
}
trap 'cleanup_trace; cleanup' EXIT

# Starts a server, or starts it again if it has exited (and says so).
start() {
    local name=$1
    if [ -f "$tmp/$name.pid" ]; then
        kill -0 "$(cat "$tmp/$name.pid")" 2>/dev/null && return
        echo "# $name had exited: $(tail -1 "$tmp/$name.err")"
    fi
    ${command[$name]} --addr 127.0.0.1:0 >"$tmp/$name.out" 2>"$tmp/$name.err" &
    echo $! >"$tmp/$name.pid"
    for _ in $(seq 100); do
        grep -q '^listening on' "$tmp/$name.out" 2>/dev/null && break
        sleep 0.05
    done
    sed -n 's/^listening on //p' "$tmp/$name.out" >"$tmp/$name.addr"
    [ -s "$tmp/$name.addr" ] || { echo "stress: $name did not start" >&2; exit 1; }
}

# A flight recorder: the scheduler's switches and wakeups, kept by the
# kernel in a trace instance of our own, cleared before each window and
# read after one with a slow reply.
trace=/sys/kernel/tracing/instances/ch15-stress-$$
if mkdir "$trace" 2>/dev/null; then
    echo 16384 >"$trace/buffer_size_kb"
    echo 'comm == "ch15" || comm == "ch09" || comm ~ "loadgen*"' >"$trace/events/sched/sched_wakeup/filter"
    echo 1 >"$trace/events/sched/sched_wakeup/enable"
    echo 1 >"$trace/events/sched/sched_switch/enable"
else
    trace=""
    echo "# (no tracefs: run as root for the scheduler traces of slow windows)"
fi
cleanup_trace() { [ -z "$trace" ] || rmdir "$trace" 2>/dev/null || true; }

# Reads the recorder after a slow window. Each thread's time is cut into
# running, runnable (woken or preempted, waiting for a CPU) and asleep (no
# work for it). The stall is the longest time the load generator's thread
# spent off the CPU, waiting for replies (or for a CPU itself); over that
# stall, the server's time is added up. A server asleep through it, with a
# load generator asleep too, would be a lost wakeup: NOT EXPLAINED. A side
# that waited for a CPU through most of it met a machine with more to do
# than cores, and the trace says what ran instead.
cat >"$tmp/offcpu.py" <<'PY'
import collections, re, sys
server, slowest = int(sys.argv[1]), float(sys.argv[2]) / 1000
line_re = re.compile(r"^\s*(.+?)-(\d+)\s+\[(\d+)\].*?\s(\d+\.\d+): (sched_\w+): (.*)$")
events = []
for line in sys.stdin:
    m = line_re.match(line)
    if m:
        events.append((float(m[4]), int(m[3]), m[5], m[6]))
if not events:
    print("#   trace: NOT EXPLAINED: the trace is empty"); sys.exit()
field = lambda text, name: re.search(name + r"=(\S+)", text)[1]
first, last = events[0][0], events[-1][0]

def timeline(pid):
    """(state, start, end) pieces: run, runnable, asleep; from its first event to its last."""
    pieces, state, since = [], None, first
    for t, _, kind, text in events:
        if kind == "sched_switch" and int(field(text, "prev_pid")) == pid:
            pieces.append(("run", since, t))
            state, since = ("runnable" if field(text, "prev_state").startswith("R") else "asleep"), t
        elif kind == "sched_wakeup" and int(field(text, "pid")) == pid and state == "asleep":
            pieces.append(("asleep", since, t))
            state, since = "runnable", t
        elif kind == "sched_switch" and int(field(text, "next_pid")) == pid:
            if state:
                pieces.append((state, since, t))
            state, since = "run", t
    return pieces

def within(pieces, a, b):
    total = collections.Counter()
    for state, start, end in pieces:
        total[state] += max(0.0, min(end, b) - max(start, a))
    return total

loadgens = {int(field(text, "next_pid")) for _, _, kind, text in events
            if kind == "sched_switch" and field(text, "next_comm").startswith("loadgen-")}
# The stall: the load generator thread's longest time off the CPU.
stall = (0, first, first, None)
for pid in loadgens:
    pieces = timeline(pid)
    for i, (state, start, end) in enumerate(pieces):
        if state == "run":
            continue
        j = i
        while j + 1 < len(pieces) and pieces[j + 1][0] != "run":
            j += 1
        if pieces[j][2] - start > stall[0]:
            stall = (pieces[j][2] - start, start, pieces[j][2], pid)
length, a, b, loadgen = stall
ms = lambda x: f"{x * 1000:.0f} ms"
srv = within(timeline(server), a, b)
gen = within(timeline(loadgen), a, b) if loadgen else collections.Counter()
busy = collections.Counter()
current = {}
for t, cpu, kind, text in events:
    if kind != "sched_switch" or t > b:
        continue
    if cpu in current:
        busy[field(text, "prev_comm")] += max(0.0, t - max(current[cpu], a))
    current[cpu] = t
top = ", ".join(f"{c} {ms(x)}" for c, x in busy.most_common(4) if x >= 0.001)
if length < slowest / 2:
    verdict = "NOT EXPLAINED: the load generator was never off the CPU that long"
elif gen["runnable"] + srv["runnable"] >= length / 2:
    verdict = "waiting for a CPU"
elif srv["asleep"] >= length / 2:
    verdict = "NOT EXPLAINED: both sides asleep"
else:
    verdict = "NOT EXPLAINED: the server ran, and no reply came"
print(f"#   trace: {verdict}. For {ms(length)} the load generator was off the CPU "
      f"(asleep {ms(gen['asleep'])}, runnable {ms(gen['runnable'])}); meanwhile the server ran "
      f"{ms(srv['run'])}, waited for a CPU {ms(srv['runnable'])}, slept {ms(srv['asleep'])}; "
      f"the CPUs ran {top}")
PY

{
header SECS="$secs" STALL_MS="$stall_ms" bash book/capture/ch15-stress.sh "$rounds"
echo "# round load server verdict frames/s p50-us p99.9-us max-ms lost"
for round in $(seq "$rounds"); do
    for load in "${loads[@]}"; do
        read -r conns depth size <<<"$load"
        for i in "${!names[@]}"; do
            name=${names[$(((i + round) % ${#names[@]}))]}
            start "$name"
            pid=$(cat "$tmp/$name.pid")
            addr=$(cat "$tmp/$name.addr")
            [ -n "$trace" ] && : >"$trace/trace"
            json=$(target/release/loadgen --addr "$addr" --conns "$conns" --depth "$depth" \
                --size "$size" --secs "$secs" --warmup 0.2 --drain 2 --json) || true
            line=$(python3 -c '
import json, sys
try:
    r = json.loads(sys.argv[1])
except ValueError:
    print("NO-REPORT 0 0 0 0 0"); sys.exit()
bad = r["mismatches"] or r["lost"] or r["closed"] or r["stalled"] or r["connect_failed"]
l = r["latency_us"]
print("FAILED" if bad else "ok", round(r["frames_per_sec"]), round(l["p50"]),
      round(l["p999"]), round(l["max"] / 1000, 1), r["lost"])
' "$json")
            echo "$round ${conns}x${depth}x$size $name $line"
            case $line in ok*) ;; *) echo "#   report: $json" ;; esac
            read -r _ _ _ _ max_ms _ <<<"$line"
            if [ -n "$trace" ] && python3 -c "import sys; sys.exit(not $max_ms > $stall_ms)"; then
                echo 0 >"$trace/tracing_on"
                python3 "$tmp/offcpu.py" "$pid" "$max_ms" <"$trace/trace" || true
                echo 1 >"$trace/tracing_on"
            fi
        done
    done
done | tee "$tmp/runs.txt"

echo "# ANCHOR: summary"
python3 - "$tmp/runs.txt" "$stall_ms" <<'PY'
import collections, sys
stall_ms = float(sys.argv[2])
windows, traced = collections.defaultdict(list), collections.Counter()
server = None
for line in open(sys.argv[1]):
    if line.startswith("#   trace: NOT EXPLAINED"):
        traced[server, "unexplained"] += 1
    elif line.startswith("#   trace: "):
        traced[server, "cpu"] += 1
    if line.startswith("#"):
        continue
    _, load, server, verdict, fps, p50, p999, max_ms, lost = line.split()
    windows[(server, load)].append((verdict, float(max_ms), int(lost)))
print("# summary: windows; verified (every frame answered and checked); failed; frames lost;")
print(f"# slow: windows whose slowest reply took over {stall_ms:g} ms; the slowest reply")
for server in ("ch15", "ch15-no-defer", "ch09"):
    rows = [(load, w) for (s, load), w in sorted(windows.items()) if s == server]
    for load, w in rows:
        print(f"{server} {load}: {len(w)} windows, {sum(v == 'ok' for v, _, _ in w)} verified, "
              f"{sum(v != 'ok' for v, _, _ in w)} failed, {sum(l for _, _, l in w)} lost, "
              f"{sum(m > stall_ms for _, m, _ in w)} slow, slowest {max(m for _, m, _ in w):g} ms")
    total = sum(len(w) for _, w in rows)
    ok = sum(v == "ok" for _, w in rows for v, _, _ in w)
    print(f"{server}, all loads: {total} windows, {ok} verified; slow windows traced: "
          f"{traced[server, 'cpu']} explained by the scheduler, {traced[server, 'unexplained']} not explained")
PY
echo "# ANCHOR_END: summary"
} | tee "$captures/ch15-stress.txt"
