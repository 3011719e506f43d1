#!/usr/bin/env python3
"""Draws what a server did, system call by system call, from a trace of
`strace -f -tt -T`: a timeline in SVG, one lane per descriptor (or per
thread), each call a box as long as it took, labelled with its result.

A timeline capture (book/capture/timeline.sh writes them) is lib.sh's
header, comment lines, and the raw trace. One comment line says what to
draw:

    # timeline: from=22:44:14.588117 to=22:44:14.632811 lanes=fd title='...'

Every call that overlaps [from, to] is drawn, cut at the window's edges.
Stretches longer than gap_us (optional, 1000 by default) in which no call
starts or ends (the loop asleep in epoll_wait, say) are cut out and drawn
as a break that says how long they were, so a turn of a few hundred
microseconds and a wait of 40 ms fit one picture.

    timeline.py window CAPTURE --start RE[@N] [--back K] --end RE[@N] [--extra K]
        prints from=... to=...: from the start of the Nth call (default 1st)
        whose text ("name(args) = result") matches the first RE (or of the
        K-th call before it on the same thread), to the end of the Nth call
        matching the second, counting from that first call (or of the K-th
        call after it on its thread). --start-after RE[@N] starts at the end
        of that call instead, counting from the call after it; --lead and
        --lag widen the window by so many microseconds.
    timeline.py render CAPTURE... -o OUT.svg
        one panel per capture, all at the same scale, one above the other.
    timeline.py check SVG...
        redraws each SVG from the captures its first comment names, and
        fails if the picture differs: a timeline cannot drift from its trace.

The output depends only on the captures and the arguments: no clock, no
randomness, fixed number formats, so a redrawn picture is byte for byte
the same. Only Python's standard library is used.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
from dataclasses import dataclass, field

# --- the trace -----------------------------------------------------------------

LINE = re.compile(r"^(?:(?P<pid>\d+) +)?(?P<time>\d\d:\d\d:\d\d\.\d{6}) (?P<rest>.*)$")
DURATION = re.compile(r" <(\d+)\.(\d{6})>$")
UNFINISHED = re.compile(r"^(?P<call>\w+\(.*?) ?<unfinished \.\.\.>$")
RESUMED = re.compile(r"^<\.\.\. (?P<name>\w+) resumed>(?P<rest>.*)$")
CALL = re.compile(r"^(?P<name>\w+)\((?P<args>.*)\) += (?P<ret>-?\d+|\?|0x[0-9a-f]+)(?P<err>.*)$")


def micros(clock):
    """22:44:14.588117 -> microseconds since midnight (a trace never spans one)."""
    hms, frac = clock.split(".")
    h, m, s = (int(x) for x in hms.split(":"))
    return ((h * 60 + m) * 60 + s) * 1_000_000 + int(frac)


def clock(us):
    s, frac = divmod(us, 1_000_000)
    return f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}.{frac:06d}"


@dataclass
class Call:
    pid: str
    start: int  # microseconds since midnight
    end: int
    name: str
    args: str
    ret: int | None  # None: not a number (a pointer, ?)
    err: str  # the error's name, EAGAIN, or ""
    text: str  # name(args) = result, as strace wrote it, without the time
    fd: int | None = None  # the descriptor it works on
    kind: str | None = None  # what that descriptor is: connection, listener...
    events: list = field(default_factory=list)  # epoll_wait's: (fd, its kind, flags)
    index: int = 0  # order in the trace


def parse(lines):
    """The calls of a trace, in the order they started; unfinished calls
    joined with their resumption. Lines that are not calls (comments, a
    signal, an exit) are skipped."""
    calls, pending = [], {}
    for raw in lines:
        m = LINE.match(raw.rstrip("\n"))
        if not m:
            continue
        pid, at, rest = m.group("pid") or "", micros(m.group("time")), m.group("rest")
        unfinished = UNFINISHED.match(rest)
        if unfinished:
            pending[pid] = (at, unfinished.group("call"))
            continue
        resumed = RESUMED.match(rest)
        if resumed:
            if pid not in pending:
                continue  # began before the trace did
            at, head = pending.pop(pid)
            rest = head + resumed.group("rest")
        d = DURATION.search(rest)
        if not d:
            continue  # +++ exited +++, --- SIGINT ---, a call that never returned
        rest = rest[: d.start()]
        c = CALL.match(rest)
        if not c:
            continue
        ret = c.group("ret")
        err = re.match(r" (E[A-Z0-9]+)", c.group("err"))
        calls.append(Call(
            pid=pid, start=at, end=at + int(d.group(1)) * 1_000_000 + int(d.group(2)),
            name=c.group("name"), args=c.group("args"),
            ret=int(ret) if re.fullmatch(r"-?\d+", ret) else None,
            # strace pads short calls to align their results: "close(7)     = 0".
            err=err.group(1) if err else "", text=re.sub(r"\) {2,}= ", ") = ", rest),
        ))
    calls.sort(key=lambda c: (c.start, c.end))
    for i, c in enumerate(calls):
        c.index = i
    return calls


def first_int(args):
    m = re.match(r"\s*(-?\d+)", args)
    return int(m.group(1)) if m else None


# Calls whose result is a new descriptor, and what it is.
NEW_FD = {
    "socket": "socket",
    "epoll_create1": "epoll", "epoll_create": "epoll", "signalfd4": "signalfd",
    "signalfd": "signalfd", "io_uring_setup": "io_uring", "eventfd2": "eventfd",
    "openat": "file",
}


@dataclass
class Trace:
    calls: list
    kinds: dict = field(default_factory=dict)  # fd -> what it was when first seen in the window
    keys: dict = field(default_factory=dict)  # (epoll fd, event data) -> fd
    threads: dict = field(default_factory=dict)  # pid -> its order of appearance


def analyse(calls):
    """Which descriptor each call works on, what each descriptor is, and
    which event data stands for which descriptor (from EPOLL_CTL_ADD)."""
    trace = Trace(calls)
    kind = {}
    for c in calls:
        trace.threads.setdefault(c.pid, len(trace.threads))
        # Most calls work on their first argument; epoll_ctl on its third.
        fd = first_int(c.args)
        if c.name in NEW_FD:
            fd = c.ret if c.ret is not None and c.ret >= 0 else None
            if fd is not None:
                kind[fd] = NEW_FD[c.name]
        elif c.name in ("accept4", "accept") and c.ret is not None and c.ret >= 0:
            kind[c.ret] = "connection"
        elif c.name == "listen" and fd is not None:
            kind[fd] = "listener"
        elif c.name == "setsockopt" and "SOL_TCP" in c.args and fd not in kind:
            # A TCP option on a socket we did not see accepted: a ring's
            # accept, say. Only a connection gets one here (TCP_NODELAY).
            kind[fd] = "connection"
        elif c.name == "epoll_ctl":
            m = re.match(r"(\d+), EPOLL_CTL_(\w+), (\d+)(?:, \{.*?data=\{u32=\d+, u64=(\d+)\})?", c.args)
            if m:
                fd = int(m.group(3))
                if m.group(2) == "ADD" and m.group(4):
                    trace.keys[(int(m.group(1)), m.group(4))] = fd
        c.fd = fd
        c.kind = kind.get(fd, "fd") if fd is not None else None
        if c.name in ("epoll_wait", "epoll_pwait", "epoll_pwait2"):
            # Each event, named for the descriptor its data was added with,
            # as that descriptor is now.
            epfd = first_int(c.args)
            c.events = []
            for bits, data in re.findall(r"\{events=([A-Z|]+), data=\{u32=\d+, u64=(\d+)\}\}", c.args):
                target = trace.keys.get((epfd, data))
                c.events.append((target, kind.get(target, "fd") if target is not None else None, bits))
        if c.name == "close" and fd is not None:
            kind.pop(fd, None)
    return trace


# --- what a box says -------------------------------------------------------------

FLAG = {"EPOLLIN": "IN", "EPOLLOUT": "OUT", "EPOLLERR": "ERR", "EPOLLHUP": "HUP",
        "EPOLLRDHUP": "RDHUP", "EPOLLET": "ET", "EPOLLEXCLUSIVE": "EXCL"}


def flags(text):
    return "|".join(FLAG.get(f, f) for f in text.split("|"))


def short_name(fd, kind):
    return {"connection": f"conn {fd}", "listener": "listener", "signalfd": "signalfd",
            "epoll": "epoll", "io_uring": "ring", "eventfd": "eventfd"}.get(kind, f"fd {fd}")


def result(c):
    """The result in a few characters."""
    if c.err:
        return c.err
    if c.name in ("read", "recvfrom", "recv", "recvmsg"):
        return "EOF" if c.ret == 0 else f"{c.ret}"
    if c.name in ("sendto", "send", "write", "sendmsg"):
        m = re.search(r"\.{0,3}, (\d+), ", c.args)
        asked = int(m.group(1)) if m else None
        return f"{c.ret} of {asked}" if asked is not None and c.ret < asked else f"{c.ret}"
    if c.name in ("epoll_wait", "epoll_pwait", "epoll_pwait2"):
        if not c.events:
            return "nothing" if c.ret == 0 else f"{c.ret}"
        said = [f"{short_name(fd, kind)}: {flags(bits)}" if fd is not None else flags(bits)
                for fd, kind, bits in c.events]
        return ", ".join(said) if len(said) <= 2 else f"{len(said)} events"
    if c.name == "io_uring_enter":
        # The result counts the requests the kernel took in; the
        # completions it left in the ring, strace cannot see.
        return f"{c.ret} in" if c.ret is not None else ""
    if c.name == "epoll_ctl":
        m = re.match(r"\d+, EPOLL_CTL_(\w+), \d+(?:, \{events=([A-Z|]+))?", c.args)
        if m:
            return m.group(1) + (" " + flags(m.group(2)) if m.group(2) else "")
    if c.name in ("accept4", "accept"):
        return f"fd {c.ret}"
    return "" if c.ret in (0, None) else f"{c.ret}"


def label(c):
    return {"io_uring_enter": "enter"}.get(c.name, c.name)


# Colours by what a call does: the same in every timeline of the book.
COLOURS = [
    ("wait", {"epoll_wait", "epoll_pwait", "epoll_pwait2", "poll", "ppoll", "io_uring_enter"}, "#2e6da4"),
    ("read", {"read", "recvfrom", "recv", "recvmsg"}, "#3c8c40"),
    ("send", {"sendto", "send", "write", "sendmsg"}, "#c77a1e"),
    ("epoll_ctl", {"epoll_ctl"}, "#8e44ad"),
    ("accept", {"accept4", "accept"}, "#16808a"),
    ("close", {"close", "shutdown"}, "#666666"),
]
OTHER = "#9a9a9a"


def colour(name):
    for _, names, rgb in COLOURS:
        if name in names:
            return rgb
    return OTHER


# --- windows ---------------------------------------------------------------------


def nth_match(calls, spec, after=0):
    pattern, _, n = spec.rpartition("@") if re.search(r"@\d+$", spec) else (spec, "", "1")
    found = 0
    for c in calls[after:]:
        if re.search(pattern, c.text):
            found += 1
            if found == int(n):
                return c
    sys.exit(f"timeline: no call #{n} matching {pattern!r}")


def same_thread(calls, c, step):
    """The call `step` calls after (or before, if negative) c on its thread."""
    mine = [x for x in calls if x.pid == c.pid]
    i = mine.index(c) + step
    if not 0 <= i < len(mine):
        sys.exit(f"timeline: no call {step:+d} from {c.text!r} on its thread")
    return mine[i]


def window(calls, start=None, start_after=None, back=0, end=None, extra=0, lead=0, lag=0):
    if start:
        first = same_thread(calls, nth_match(calls, start), -back) if back else nth_match(calls, start)
        begin, after = first.start, nth_match(calls, start).index
    else:
        # The Nth to *end*: with several threads, calls end in another order.
        first = nth_match(sorted(calls, key=lambda c: (c.end, c.index)), start_after)
        begin, after = first.end, first.index + 1
    last = nth_match(calls, end, after)
    if extra:
        last = same_thread(calls, last, extra)
    return begin - lead, last.end + lag


# --- drawing -----------------------------------------------------------------------

WIDTH = 800
LEFT = 112  # lane names
RIGHT = 12
PLOT = WIDTH - LEFT - RIGHT
BREAK_W = 30
FONT = 10.5
CHAR_W = 0.58 * FONT  # a conservative average, for placing labels apart
TIER = 12
BOX_H = 14
HALO = 'text-anchor="middle" stroke="#ffffff" stroke-width="3" paint-order="stroke"'


def esc(text):
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


def num(x):
    """Coordinates with one decimal, and no -0.0: the same text every time."""
    s = f"{x:.1f}"
    return "0.0" if s == "-0.0" else s


def human(us):
    if us >= 1_000_000:
        return f"{us / 1_000_000:.2f} s"
    if us >= 1000:
        return f"{us / 1000:.1f} ms"
    return f"{us} µs"


@dataclass
class Panel:
    title: str
    trace: Trace
    calls: list  # those in the window
    begin: int
    end: int
    lanes: list  # (key, name)
    by: str  # what a lane is: "fd" or "thread"
    gap_us: int
    lane_of: dict = field(default_factory=dict)
    breaks: list = field(default_factory=list)  # (t0, t1)
    linear_us: int = 0
    source: str = ""


def read_capture(path):
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    options = None
    for line in lines:
        if line.startswith("# timeline:"):
            options = dict(kv.split("=", 1) for kv in shlex.split(line[len("# timeline:"):]))
    if options is None:
        sys.exit(f"timeline: {path} has no '# timeline: from=... to=...' line")
    return lines, options


def make_panel(path):
    lines, opt = read_capture(path)
    calls = parse(lines)
    trace = analyse(calls)
    begin, end = micros(opt["from"]), micros(opt["to"])
    # A call that ends where the window begins (the one it starts after) is not in it.
    shown = [c for c in calls if c.end > begin and c.start < end or begin <= c.start == c.end <= end]
    if not shown:
        sys.exit(f"timeline: {path}: no call between {opt['from']} and {opt['to']}")
    # What each descriptor is, as of the window: a number reused after a
    # close is named for what it is here.
    for c in shown:
        if c.fd is not None and c.fd not in trace.kinds:
            trace.kinds[c.fd] = c.kind
    by = opt.get("lanes", "fd")
    panel = Panel(title=opt.get("title", os.path.basename(path)), trace=trace, calls=shown,
                  begin=begin, end=end, lanes=[], by=by, gap_us=int(opt.get("gap_us", "1000")), source=path)
    if by == "thread":
        pids = sorted({c.pid for c in shown}, key=lambda p: trace.threads[p])
        for i, pid in enumerate(pids):
            panel.lanes.append((pid, f"thread {i + 1}"))
        panel.lane_of = {c.index: c.pid for c in shown}
    else:
        order = {"epoll": 0, "io_uring": 0, "signalfd": 1, "eventfd": 1, "listener": 2,
                 "socket": 2, "connection": 3}
        fds = sorted({c.fd for c in shown if c.fd is not None},
                     key=lambda fd: (order.get(trace.kinds.get(fd), 4), fd))
        for fd in fds:
            kind = trace.kinds.get(fd)
            panel.lanes.append((fd, f"{kind} (fd {fd})" if kind and kind != "fd" else f"fd {fd}"))
        panel.lane_of = {c.index: c.fd for c in shown if c.fd is not None}
    # Cut out the long stretches where no call starts or ends.
    points = sorted({min(max(p, begin), end) for c in shown for p in (c.start, c.end)} | {begin, end})
    for a, b in zip(points, points[1:]):
        if b - a > panel.gap_us:
            panel.breaks.append((a, b))
        else:
            panel.linear_us += b - a
    return panel


def x_of(panel, t, scale):
    """Where time t falls: linear between breaks, each break BREAK_W wide."""
    x = LEFT
    prev = panel.begin
    for a, b in panel.breaks:
        if t <= a:
            break
        if t < b:
            return x + (a - prev) * scale + BREAK_W * (t - a) / (b - a)
        x += (a - prev) * scale + BREAK_W
        prev = b
    return x + (t - prev) * scale


def place(items):
    """Gives each (x_center, text) a tier so that no two labels of a tier
    overlap; returns [(x, tier, text)], x kept inside the plot."""
    ends, out = [], []
    for x, text in items:
        w = len(text) * CHAR_W
        x = min(max(x, LEFT + w / 2), WIDTH - RIGHT - w / 2)
        for tier, last in enumerate(ends):
            if x - w / 2 >= last + 4:
                ends[tier] = x + w / 2
                break
        else:
            tier = len(ends)
            ends.append(x + w / 2)
        out.append((x, tier, text))
    return out


def render(paths):
    panels = [make_panel(p) for p in paths]
    # One scale for every panel, so that the same width means the same time.
    scale = min((PLOT - BREAK_W * len(p.breaks)) / max(p.linear_us, 1) for p in panels)
    body, y = [], 8
    for panel in panels:
        y = draw_panel(body, panel, scale, y) + 14
    # A scale bar, the legend.
    bar_us = next(u for u in (10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000)
                  if u * scale >= 60 or u == 50000)
    body.append(f'  <line x1="{LEFT}" y1="{y}" x2="{num(LEFT + bar_us * scale)}" y2="{y}" '
                f'stroke="#333" stroke-width="1.5"/>')
    for x in (LEFT, LEFT + bar_us * scale):
        body.append(f'  <line x1="{num(x)}" y1="{y - 4}" x2="{num(x)}" y2="{y + 4}" stroke="#333"/>')
    body.append(f'  <text x="{num(LEFT + bar_us * scale + 6)}" y="{y + 4}" font-size="{FONT}" '
                f'fill="#333">{human(bar_us)}</text>')
    lx = LEFT + bar_us * scale + 70
    used = {colour(c.name) for p in panels for c in p.calls}
    keys = [(name, f'fill="{rgb}"') for name, _, rgb in COLOURS + [("other", (), OTHER)] if rgb in used]
    if any(c.err for p in panels for c in p.calls):
        keys.append(("hollow: failed (EAGAIN...)", 'fill="#ffffff" stroke="#555" stroke-width="1.5"'))
    for name, fill in keys:
        w = 26 + len(name) * CHAR_W
        if lx + w > WIDTH - RIGHT:
            lx, y = LEFT + bar_us * scale + 70, y + 16
        body.append(f'  <rect x="{num(lx)}" y="{y - 6}" width="14" height="10" {fill}/>')
        body.append(f'  <text x="{num(lx + 18)}" y="{y + 3}" font-size="{FONT}" fill="#333">{name}</text>')
        lx += w
    y += 16
    body.append(f'  <text x="{LEFT}" y="{y + 6}" font-size="{FONT - 1}" fill="#555">Each box is one '
                f'system call as strace saw it (strace slows every call down). A zigzag cuts out '
                f'a stretch with no call starting or ending.</text>')
    height = y + 14
    sources = [os.path.relpath(p.source, SRC) for p in panels]
    lanes = "thread" if panels[0].by == "thread" else "descriptor"
    head = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="{FONT}">',
        f'  <!-- timeline.py render {" ".join(sources)} -->',
        f'  <title>System calls over time, per {lanes}: {esc(" / ".join(p.title for p in panels))}</title>',
        f'  <desc>Drawn by book/capture/timeline.py from {esc(", ".join(sources))}.</desc>',
        f'  <rect width="{WIDTH}" height="{height}" fill="#ffffff"/>',
    ]
    return "\n".join(head + body + ["</svg>"]) + "\n"


def draw_panel(out, panel, scale, y):
    out.append(f'  <text x="8" y="{y + 12}" font-weight="bold" font-size="12.5" fill="#222">'
               f'{esc(panel.title)}</text>')
    out.append(f'  <text x="{WIDTH - RIGHT}" y="{y + 12}" text-anchor="end" font-size="{FONT - 1}" '
               f'fill="#555">from {clock(panel.begin)}</text>')
    y += 20
    top = y
    right = x_of(panel, panel.end, scale)
    # Labels go on last, over the breaks, each with a white halo.
    labels = []
    for key, name in panel.lanes:
        mine = [c for c in panel.calls if panel.lane_of.get(c.index) == key]
        boxes = []
        for c in mine:
            a = x_of(panel, max(c.start, panel.begin), scale)
            boxes.append((a, max(x_of(panel, min(c.end, panel.end), scale), a + 2), c))
        # A call cut by the window's edge: begun before it ("…name"), or
        # not returned by its end (no result yet: "…").
        above = place([((a + b) / 2, ("…" if c.start < panel.begin else "") + label(c))
                       for a, b, c in boxes])
        below = place([((a + b) / 2, "…" if c.end > panel.end else result(c))
                       for a, b, c in boxes if c.end > panel.end or result(c)])
        n_above = max((t for _, t, _ in above), default=-1) + 1
        n_below = max((t for _, t, _ in below), default=-1) + 1
        box_y = y + 4 + n_above * TIER
        out.append(f'  <text x="8" y="{num(box_y + BOX_H - 3)}" font-size="11.5" fill="#222">{esc(name)}</text>')
        out.append(f'  <line x1="{LEFT}" y1="{num(box_y + BOX_H / 2)}" x2="{num(right)}" '
                   f'y2="{num(box_y + BOX_H / 2)}" stroke="#d8d8d8"/>')
        for a, b, c in boxes:
            rgb = colour(c.name)
            fill = f'fill="#ffffff" stroke="{rgb}" stroke-width="1.5"' if c.err else f'fill="{rgb}"'
            out.append(f'  <rect x="{num(a)}" y="{num(box_y)}" width="{num(b - a)}" height="{BOX_H}" {fill}>'
                       f'<title>{clock(c.start)} {esc(c.text)} &lt;{human(c.end - c.start)}&gt;</title></rect>')
        for x, tier, text in above:
            labels.append(f'  <text x="{num(x)}" y="{num(box_y - 3 - tier * TIER)}" '
                          f'fill="#222" {HALO}>{esc(text)}</text>')
        for x, tier, text in below:
            labels.append(f'  <text x="{num(x)}" y="{num(box_y + BOX_H + 10 + tier * TIER)}" '
                          f'fill="#555" {HALO}>{esc(text)}</text>')
        y = box_y + BOX_H + n_below * TIER + 8
    # Breaks: a white band with zigzag edges across every lane, and how long.
    for a, b in panel.breaks:
        x0 = x_of(panel, a, scale) + 6
        x1 = x0 + BREAK_W - 12
        zig = " ".join(f"{num(x0 + (3 if i % 2 else 0))},{num(top + i * 6)}"
                       for i in range(int((y - top) / 6) + 1))
        zag = " ".join(f"{num(x1 + (3 if i % 2 else 0))},{num(top + i * 6)}"
                       for i in range(int((y - top) / 6) + 1))
        out.append(f'  <rect x="{num(x0)}" y="{top}" width="{num(x1 - x0)}" height="{num(y - top)}" fill="#ffffff"/>')
        out.append(f'  <polyline points="{zig}" fill="none" stroke="#888"/>')
        out.append(f'  <polyline points="{zag}" fill="none" stroke="#888"/>')
        out.append(f'  <text x="{num((x0 + x1) / 2)}" y="{num(y + 9)}" text-anchor="middle" '
                   f'font-size="{FONT - 1}" fill="#555">{human(b - a)}</text>')
    out.extend(labels)
    return y + 10


# --- the command line ----------------------------------------------------------

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.normpath(os.path.join(HERE, "..", "src"))


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    w = sub.add_parser("window", help="find the window to draw",
                       description="Prints from=... to=... for a '# timeline:' line. A call's "
                       "text is 'name(args) = result'; RE@N means the Nth call it matches.")
    w.add_argument("capture")
    w.add_argument("--start", metavar="RE[@N]", help="from the start of this call")
    w.add_argument("--start-after", metavar="RE[@N]",
                   help="from the end of this call (the Nth to end, across threads)")
    w.add_argument("--back", type=int, default=0, metavar="K",
                   help="from K calls before --start's, on its thread")
    w.add_argument("--end", required=True, metavar="RE[@N]",
                   help="to the end of this call, counted from the start")
    w.add_argument("--extra", type=int, default=0, metavar="K",
                   help="to K calls after --end's, on its thread")
    w.add_argument("--lead", type=int, default=0, help="microseconds more before")
    w.add_argument("--lag", type=int, default=0, help="microseconds more after")
    r = sub.add_parser("render", help="draw captures into one SVG")
    r.add_argument("captures", nargs="+")
    r.add_argument("-o", "--output", required=True)
    c = sub.add_parser("check", help="redraw SVGs and compare")
    c.add_argument("svgs", nargs="+")
    args = ap.parse_args(argv)

    if args.command == "window":
        if bool(args.start) == bool(args.start_after):
            ap.error("give one of --start, --start-after")
        with open(args.capture, encoding="utf-8") as f:
            calls = parse(f)
        begin, end = window(calls, args.start, args.start_after, args.back, args.end, args.extra,
                            args.lead, args.lag)
        print(f"from={clock(begin)} to={clock(end)}")
    elif args.command == "render":
        svg = render(args.captures)
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(svg)
    else:
        failed = 0
        for path in args.svgs:
            with open(path, encoding="utf-8") as f:
                text = f.read()
            m = re.search(r"<!-- timeline\.py render (.*?) -->", text)
            if not m:
                print(f"timeline: {path}: no '<!-- timeline.py render ... -->' line", file=sys.stderr)
                failed += 1
                continue
            sources = [os.path.join(SRC, s) for s in m.group(1).split()]
            if render(sources) != text:
                print(f"timeline: {path} is not what its captures draw ({m.group(1)}): "
                      f"redraw it with book/capture/timeline.sh", file=sys.stderr)
                failed += 1
        if failed:
            return 1
        print(f"timeline: {len(args.svgs)} timeline(s) match their captures")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
