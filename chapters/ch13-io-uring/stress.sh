#!/usr/bin/env bash
# The hunt for lost frames: many short windows of the verifying load
# generator against ch13, with and without DEFER_TASKRUN, across loads, with
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
# Usage: bash chapters/ch13-io-uring/stress.sh [ROUNDS]   (default 25: 300 windows)
# Writes its report to stdout; book/src/captures/ch13-stress.txt is one.
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-25}
secs=${SECS:-1}
stall_ms=${STALL_MS:-100}
loads=("100 1 64" "100 16 64" "10 4 4096" "10 16 4096")
names=(ch13 ch13-no-defer ch09)
declare -A command=(
    [ch13]="target/release/ch13"
    [ch13-no-defer]="target/release/ch13 --no-defer-taskrun"
    [ch09]="target/release/ch09"
)

cargo build --release --quiet -p ch09 -p ch13 -p loadgen
tmp=$(mktemp -d)
cleanup() {
    for name in "${names[@]}"; do
        [ -f "$tmp/$name.pid" ] && kill "$(cat "$tmp/$name.pid")" 2>/dev/null
    done
    rm -rf "$tmp"
}
trap 'cleanup; cleanup_trace' EXIT

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
trace=/sys/kernel/tracing/instances/ch13-stress-$$
if mkdir "$trace" 2>/dev/null; then
    echo 16384 >"$trace/buffer_size_kb"
    echo 'comm == "ch13" || comm == "ch09" || comm ~ "loadgen*"' >"$trace/events/sched/sched_wakeup/filter"
    echo 1 >"$trace/events/sched/sched_wakeup/enable"
    echo 1 >"$trace/events/sched/sched_switch/enable"
else
    trace=""
    echo "# (no tracefs: run as root for the scheduler traces of slow windows)"
fi
cleanup_trace() { [ -n "$trace" ] && rmdir "$trace" 2>/dev/null; }

# Reads the recorder after a slow window: the longest time the server (and
# the load generator's thread) spent off the CPU, split into asleep (no
# work for it: waiting for a completion, or for epoll) and runnable (woken,
# waiting for a CPU), and what ran on the CPUs meanwhile. Asleep with work
# pending would be a lost wakeup; runnable is a machine with too much to do.
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
    sys.exit()
field = lambda text, name: re.search(name + r"=(\S+)", text)[1]
threads = {server: "server"}
for _, _, kind, text in events:
    if kind == "sched_switch" and field(text, "next_comm").startswith("loadgen-"):
        threads[int(field(text, "next_pid"))] = "load generator"
longest, waits = {}, {}
for pid, who in threads.items():
    off, woke, best, wait = None, None, (0, 0, 0, 0), 0
    for t, _, kind, text in events:
        if kind == "sched_switch" and int(field(text, "prev_pid")) == pid:
            off, woke, state = t, None, field(text, "prev_state")
        elif kind == "sched_wakeup" and int(field(text, "pid")) == pid and off is not None:
            woke = woke or t
        elif kind == "sched_switch" and int(field(text, "next_pid")) == pid and off is not None:
            runnable_since = off if state.startswith("R") else (woke or t)
            best = max(best, (t - off, off, t, runnable_since))
            wait = max(wait, t - runnable_since)
            off = None
    if best[0]:
        longest[who], waits[who] = best, max(wait, waits.get(who, 0))
waited = max(waits.values(), default=0)
print(f"#   trace: {'waiting for a CPU' if waited >= slowest / 2 else 'NOT EXPLAINED'}: "
      f"the longest wait for a CPU, {waited * 1000:.0f} ms, against the slowest reply's {slowest * 1000:.0f} ms")
for who, (length, start, end, runnable_since) in sorted(longest.items()):
    if who != "server" and length < 0.02:
        continue
    busy = collections.Counter()
    current = {}
    for t, cpu, kind, text in events:
        if kind != "sched_switch" or t > end:
            continue
        prev = field(text, "prev_comm")
        if cpu in current:
            busy[prev] += max(0.0, t - max(current[cpu], start))
        current[cpu] = t
    top = ", ".join(f"{c} {ms * 1000:.0f}" for c, ms in busy.most_common(4) if ms > 0.0005)
    print(f"#   trace: the {who} was off the CPU for {length * 1000:.0f} ms: asleep "
          f"{(runnable_since - start) * 1000:.0f} ms, then runnable {(end - runnable_since) * 1000:.0f} ms"
          f"; meanwhile on the CPUs (ms): {top}")
PY

echo "# bash chapters/ch13-io-uring/stress.sh $rounds   (SECS=$secs STALL_MS=$stall_ms)"
echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, Linux $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"
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

python3 - "$tmp/runs.txt" "$stall_ms" <<'PY'
import collections, sys
stall_ms = float(sys.argv[2])
windows, traced = collections.defaultdict(list), collections.Counter()
server = None
for line in open(sys.argv[1]):
    if line.startswith("#   trace: waiting for a CPU"):
        traced[server, "cpu"] += 1
    elif line.startswith("#   trace: NOT EXPLAINED"):
        traced[server, "unexplained"] += 1
    if line.startswith("#"):
        continue
    _, load, server, verdict, fps, p50, p999, max_ms, lost = line.split()
    windows[(server, load)].append((verdict, float(max_ms), int(lost)))
print("# summary: windows; verified (every frame answered and checked); failed; frames lost;")
print(f"# slow: windows whose slowest reply took over {stall_ms:g} ms; the slowest reply")
for server in ("ch13", "ch13-no-defer", "ch09"):
    rows = [(load, w) for (s, load), w in sorted(windows.items()) if s == server]
    for load, w in rows:
        print(f"{server} {load}: {len(w)} windows, {sum(v == 'ok' for v, _, _ in w)} verified, "
              f"{sum(v != 'ok' for v, _, _ in w)} failed, {sum(l for _, _, l in w)} lost, "
              f"{sum(m > stall_ms for _, m, _ in w)} slow, slowest {max(m for _, m, _ in w):g} ms")
    total = sum(len(w) for _, w in rows)
    ok = sum(v == "ok" for _, w in rows for v, _, _ in w)
    print(f"{server}, all loads: {total} windows, {ok} verified; slow windows traced: "
          f"{traced[server, 'cpu']} waiting for a CPU, {traced[server, 'unexplained']} not explained")
PY
