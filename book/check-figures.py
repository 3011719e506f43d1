#!/usr/bin/env python3
"""Ties the book's measured figures to the captures they come from.

A page marks a figure by writing, right after it, an HTML comment that names
its source relative to the page (the comment does not show in the book):

    51,067<!--from captures/thread-cost.txt--> frames/s
    0.92<!--from bench/results.txt-->×
    3.6 µs<!--from captures/copy-profile.txt-->      (a unit may sit between)

Two checks, over every page under SRC (default book/src), outside code
blocks, code spans and {{#include}}s:

1. Every marked figure appears in its file as a whole number token:
   thousands separators may differ (51067 matches 51,067), but "1.0" does
   not match "11.05" or "1.05", and "0.9" does not match "0.90". So when a
   capture is re-recorded and its numbers change, the page fails here until
   its prose follows.

2. The lint: a figure that looks measured and has no marker is an error.
   Looks measured means
     - a number followed by a unit of measurement: frames/s, ns, µs, ms, s,
       %, KiB, MiB, KB, MB, bytes, B, or a count of what the servers do:
       frames, syscalls, system calls, reads, sends, context switches,
       wakeups, instructions, samples, mappings;
     - a ratio: 0.92× or ×0.92 (not a load such as 100×16×64);
     - a number with two or more decimals (1.006), or a count of 1,000 or
       more that is not round (16,491; round: a multiple of 100 or a power
       of two).
   A figure that is a constant, a parameter or an input, not a measurement
   (Linux's 40 ms TCP_DELACK_MIN, the protocol's 4096-byte limit, a 2 s
   measuring window) is exempted where it stands:
       40 ms<!--const-->
   or, for a page that uses the same constants again and again, once at
   the top of the page:
       <!--consts: 64 B, 4 KiB, 2 s-->
   and a passage not yet checked (say, a table another change will
   generate) between
       <!--unchecked: why--> ... <!--/unchecked-->
   Every exemption is visible in the page source, and reviewed like code.

Usage: check-figures.py [SRC]   exit 1 and one line per problem on failure.
"""

import os
import re
import sys

NUMBER = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d{1,3}(?:[ \u00a0\u202f]\d{3})+(?!\d)|\d+(?:\.\d+)?"
ANY_MARKER = re.compile(r"<!--\s*(from|const)\b(.*?)-->", re.S)
CONSTS = re.compile(r"<!--\s*consts:(.*?)-->", re.S)
UNCHECKED = re.compile(r"<!--\s*unchecked:(.*?)-->(.*?)<!--\s*/unchecked\s*-->", re.S)
COMMENT = re.compile(r"<!--.*?-->", re.S)

SPACE = r"(?:[ \u00a0\u202f]|&nbsp;)?"
# Three kinds of unit. A rate, a time or a share is flagged whatever its
# value. A size or a count is flagged unless it is round (a power of two,
# or for a count a multiple of 100): 4 KiB, 16,384 bytes and 1,000 frames
# are nearly always buffer sizes and inputs, 258,300 bytes and 63 frames
# are what a run produced.
RATES = [
    r"k?" + SPACE + r"frames?/s", r"M" + SPACE + r"frames?/s",
    r"k?" + SPACE + r"frames per second", r"[kMG]B/s",
    r"ns\b", r"µs\b", r"μs\b", r"us\b", r"ms\b", r"s\b",
    r"nanoseconds?\b", r"microseconds?\b", r"milliseconds?\b", r"seconds?\b",
    r"%", r"per ?cent\b",
]
SIZES = [r"[KMG]iB\b", r"[kKMG]B\b", r"B\b", r"bytes?\b"]
COUNTS = [
    r"(?:echoed )?frames?\b", r"replies\b",
    r"(?:[a-z_0-9]+ )?(?:syscalls?|system calls?|calls)\b", r"reads\b", r"sends\b",
    r"context switch(?:es)?\b", r"switch(?:es)?\b", r"wakeups?\b",
    r"instructions?\b", r"samples?\b", r"mappings?\b",
]
UNIT = re.compile(SPACE + r"(?:(?P<rate>" + "|".join(RATES) + r")|(?P<size>" + "|".join(SIZES)
                  + r")|(?P<count>" + "|".join(COUNTS) + r"))")
# A unit may sit between a figure and its marker: 3.6 µs<!--from ...-->.
MARK_UNIT = r"(?:×|x\b|k\b|M\b|" + SPACE + r"(?:" + "|".join(RATES + SIZES + COUNTS) + r"))"
MARKER = re.compile(
    r"(?P<fig>(?<![\w.,])(?:" + NUMBER + r"))(?P<unit>" + MARK_UNIT + r")?"
    r"<!--\s*(?P<kind>from|const)\b(?P<arg>.*?)-->",
    re.S,
)
# Numbers that name things rather than measure them: chapter 4, RFC 1122.
NAMING = re.compile(r"(?:chapters?|Chapters?|ch|step|steps|section|RFC|Linux|kernel|port|version|"
                    r"edition|issue|commit|exercise|item|line|lines|mdBook|just|PEP)[ \u00a0]*$")
NUM_TOKEN = re.compile(r"(?<![\w.,/#-])(" + NUMBER + r")(?![\w]|\.\d|,\d)")
RATIO_AFTER = re.compile(r"(?<![\w.,×])(" + NUMBER + r")(?:×|x\b)(?![\d\s]*\d)")
RATIO_BEFORE = re.compile(r"(?<![\w.])×(" + NUMBER + r")(?![\w×]|\.\d)")


def normalize(figure):
    return re.sub(r"[, \u00a0\u202f]", "", figure)


HEADER_COMMAND = re.compile(r"^# \$ (?:\S+=(?:'[^']*'|\"[^\"]*\"|\S+) )*bash (book/capture/[\w.-]+\.sh)\b")
HEADER_MACHINE = re.compile(r"^# recorded \d{4}-\d{2}-\d{2} on \d+ cores? .*, Linux \S+")


def check_headers(src, problems):
    """Every capture starts with the command that re-records it (a script in
    book/capture/), then the date and the machine: lib.sh's header."""
    root = os.path.normpath(os.path.join(src, "..", ".."))
    captures = os.path.join(src, "captures")
    if not os.path.isdir(captures):
        return
    for name in sorted(os.listdir(captures)):
        path = os.path.join(captures, name)
        lines = open(path, encoding="utf-8", errors="replace").read().split("\n")[:2] + ["", ""]
        command = HEADER_COMMAND.match(lines[0])
        if not command or not HEADER_MACHINE.match(lines[1]):
            problems.append(
                f"{path}: does not start with the command that re-records it and the machine "
                f"('# $ bash book/capture/NAME.sh ...', '# recorded DATE on N cores (CPU), Linux VERSION'): "
                f"re-record it with its script, which writes them (book/capture/lib.sh)")
        elif not os.path.isfile(os.path.join(root, command.group(1))):
            problems.append(f"{path}: its first line names {command.group(1)}, which does not exist")


def tokens_of(path, cache={}):
    """Every number in a file, as normalized strings: 12,345 both as 12345
    and as 12 and 345 (a comma may separate thousands or fields). A
    capture's header (its command, date and machine) is left out."""
    if path not in cache:
        lines = open(path, encoding="utf-8", errors="replace").read().split("\n")
        if lines and lines[0].startswith("# $ ") and len(lines) > 1 and HEADER_MACHINE.match(lines[1]):
            lines = lines[2:]
        text = "\n".join(lines)
        found = set()
        # A number starts neither after a digit nor after a decimal point
        # (11.05 holds no 05), but may after two dots (0.71..1.09).
        for m in re.finditer(r"(?<!\d)(?<!\d\.)(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\d])", text):
            found.add(normalize(m.group(0)))
        for m in re.finditer(r"(?<!\d)(?<!\d\.)\d+(?:\.\d+)?(?![\d])", text):
            found.add(m.group(0))
        cache[path] = found
    return cache[path]


def blank(text, start, end, keep=""):
    """text with [start, end) replaced by spaces (newlines kept, so line
    numbers and offsets stay), or by keep padded with spaces."""
    part = text[start:end]
    filler = "".join("\n" if c == "\n" else " " for c in part)
    if keep:
        filler = keep + filler[len(keep):]
    return text[:start] + filler + text[end:]


def blank_all(text, pattern, keep=""):
    for m in reversed(list(pattern.finditer(text))):
        text = blank(text, m.start(), m.end(), keep)
    return text


def strip_code(text):
    """Blanks fenced code blocks, code spans and {{#include}}s."""
    lines = text.split("\n")
    fence = None
    for i, line in enumerate(lines):
        m = re.match(r"^\s*(`{3,}|~{3,})", line)
        if fence is None and m:
            fence = m.group(1)
            lines[i] = ""
        elif fence is not None:
            if line.strip().startswith(fence) and line.strip().strip(fence[0]) == "":
                fence = None
            lines[i] = ""
    text = "\n".join(lines)
    text = blank_all(text, re.compile(r"(`+)(?:(?!\1).)+?\1", re.S))
    text = blank_all(text, re.compile(r"\{\{#\w+[^}]*\}\}"))
    # Link targets and bare URLs: numbers in them are addresses, not figures.
    text = blank_all(text, re.compile(r"\]\([^)]*\)"))
    text = blank_all(text, re.compile(r"https?://\S+"))
    return text


def line_of(text, offset):
    return text.count("\n", 0, offset) + 1


def is_power_of_two(n):
    return n > 0 and (n & (n - 1)) == 0


def is_round(value):
    n = float(value)
    if n != int(n):
        return False
    n = int(n)
    return n % 100 == 0 or is_power_of_two(n)


def check_page(src, page, problems):
    path = os.path.join(src, page)
    raw = open(path, encoding="utf-8").read()
    text = strip_code(raw)

    # 1. Every marker: a figure right before it, and that figure in its file.
    covered = []
    for m in MARKER.finditer(text):
        covered.append((m.start(), m.end()))
        if m.group("kind") == "const":
            continue
        where = f"{path}:{line_of(text, m.start())}"
        source = m.group("arg").strip()
        if not source:
            problems.append(f"{where}: <!--from--> names no file")
            continue
        file = os.path.normpath(os.path.join(os.path.dirname(path), source))
        if not os.path.isfile(file):
            problems.append(f"{where}: {m.group('fig')} is marked from {source}, which does not exist")
            continue
        if normalize(m.group("fig")) not in tokens_of(file):
            problems.append(
                f"{where}: {m.group('fig')} is not in {source} (re-recorded? make the prose follow it)")
    for m in ANY_MARKER.finditer(text):
        if not any(start <= m.start() < end for start, end in covered):
            problems.append(
                f"{path}:{line_of(text, m.start())}: <!--{m.group(1)}...--> must follow a figure at once, "
                f"as in 51,067<!--from captures/thread-cost.txt-->")

    # 2. The lint, on what is left: markers, comments and unchecked passages blanked.
    consts = set()
    for m in CONSTS.finditer(text):
        for item in re.split(r",\s+", m.group(1)):  # 4,100 bytes, 2 s: a comma then a space
            item = " ".join(item.split())
            if item:
                consts.add(item)
    for m in UNCHECKED.finditer(text):
        if not m.group(1).strip():
            problems.append(f"{path}:{line_of(text, m.start())}: <!--unchecked: ...--> needs a reason")
    text = blank_all(text, UNCHECKED)
    text = blank_all(text, MARKER, keep="¤")
    text = blank_all(text, COMMENT)

    def unmarked(start, figure, why):
        problems.append(
            f"{path}:{line_of(text, start)}: unmarked figure '{figure}' ({why}): "
            f"mark its source (figure<!--from captures/FILE-->) or, if it is not a measurement, "
            f"exempt it (figure<!--const-->)")

    def declared(figure):
        return " ".join(figure.replace("\u00a0", " ").replace("&nbsp;", " ").split()) in consts

    flagged = set()
    for m in NUM_TOKEN.finditer(text):
        figure = m.group(1)
        after = text[m.end():]
        u = UNIT.match(after)
        # A load such as 100×16×64 B: its parts are parameters.
        if re.match(r"[×x]\d", after) or re.search(r"\d[×x]$", text[:m.start()]):
            continue
        if NAMING.search(text[max(0, m.start() - 12):m.start()]):
            continue
        if u:
            shown = figure + u.group(0)
            value = normalize(figure)
            if u.group("size") and "." not in value and is_power_of_two(int(value)):
                continue
            if u.group("count") and is_round(value):
                continue
            if not declared(shown) and not declared(figure):
                unmarked(m.start(), shown.strip(), "a measurement unit")
                flagged.add(m.start())
            continue
        if re.match(r"\.\d+\.\d", after) or re.search(r"\d\.$", text[:m.start()]):
            continue  # a version: 0.5.4
        decimals = figure.split(".")[1] if "." in figure else ""
        if len(decimals) >= 2 and not declared(figure):
            unmarked(m.start(), figure, "two or more decimals")
            flagged.add(m.start())
        elif ("," in figure or len(figure) >= 5) and "." not in figure \
                and not is_round(normalize(figure)) and not declared(figure):
            unmarked(m.start(), figure, "a count that is not round")
            flagged.add(m.start())
    for pattern in (RATIO_AFTER, RATIO_BEFORE):
        for m in pattern.finditer(text):
            if m.start(1) in flagged or declared(m.group(0)):
                continue
            unmarked(m.start(), m.group(0), "a ratio")


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "src")
    problems = []
    pages = sorted(
        os.path.relpath(os.path.join(d, f), src)
        for d, dirs, files in os.walk(src)
        for f in files
        if f.endswith(".md") and "generated" not in os.path.relpath(d, src).split(os.sep)
    )
    for page in pages:
        if page == "SUMMARY.md":
            continue
        check_page(src, page, problems)
    check_headers(src, problems)
    for p in problems:
        print(f"book check: {p}", file=sys.stderr)
    marked = sum(
        len(MARKER.findall(strip_code(open(os.path.join(src, p), encoding="utf-8").read())))
        for p in pages)
    if problems:
        print(f"book check: {len(problems)} figure problem(s)", file=sys.stderr)
        return 1
    print(f"figures: ok ({marked} marked figures in {len(pages)} pages)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
