#!/usr/bin/env python3
"""Renumbers the chapters after chapter 11 to make room for two new steps.

Chapter 12 (futures, wakers, an executor, the reactor's readiness as
futures, timers and shutdown, all at once) is split into three steps: two
new chapters 12 and 13, and the old chapter 12 as chapter 14. Everything
after it moves up by two:

    ch12-async    -> ch14-async
    ch13-io-uring -> ch15-io-uring
    ch14-multicore-> ch16-multicore
    ch15-redis    -> ch17-redis     (if the tree has it)

This script does the mechanical part, on any tree (re-run it on a newer
main rather than merging its result): it renames every tracked file whose
path names one of these chapters (crates, pages, captures, capture scripts,
solutions), and rewrites every tracked text file:

  - `ch12`, `CH12` as a word or a prefix (`ch12-async`, `CARGO_BIN_EXE_ch12`,
    `ECHO_CH14_THREADS`, `captures/ch12-sizes.txt`, `ch11-ch12`);
  - "chapter 12", "Chapters 12 and 14", "chapters 9 to 12 and 14" in prose
    and comments, `// Identical in chapters ...` lists included: a range
    that the new steps would split ("9 to 12") is written out again ("9 to
    11 and 14"), and printed, for a person to read;
  - page titles (`# 12. Futures`) and SUMMARY.md's and the introduction's
    numbers (`[12. Futures`, `| [12](ch12-async.md)`).

What "chapter 12" *means* is not mechanical: after the split, the futures
live in the new chapter 12, the timers in chapter 14. The split's own
commits fix that by hand. Nothing here knows the new chapters 12 and 13.

Usage: python3 book/renumber.py [--dry-run]   (from anywhere in the tree)
It refuses a tree that has no chapters/ch12-async (renumbered already).
"""

import os
import re
import subprocess
import sys

# Old number -> new number. Only these move.
MAP = {12: 14, 13: 15, 14: 16, 15: 17}
FIRST_MOVED = min(MAP)

ROOT = subprocess.run(
    ["git", "rev-parse", "--show-toplevel"],
    capture_output=True, text=True, check=True,
    cwd=os.path.dirname(os.path.abspath(__file__)),
).stdout.strip()
SELF = os.path.relpath(os.path.abspath(__file__), ROOT)


def new_number(n):
    return MAP.get(n, n)


# --- tokens: ch12, CH12 ------------------------------------------------------

TOKEN = re.compile(r"(?<![A-Za-z0-9])(ch|CH)(1[2-5])(?![0-9])")


def rename_tokens(text):
    return TOKEN.sub(lambda m: "%s%02d" % (m.group(1), new_number(int(m.group(2)))), text)


# --- prose: "chapter 12", "chapters 9 to 12 and 14" ---------------------------

NUM = r"\d{1,2}(?![\d.,]\d)"  # not the start of 12.5 or 1,000
SEP = r"(?:\s*,\s*(?:and\s+|or\s+)?|\s+and\s+|\s+or\s+|\s+to\s+)"
LIST = re.compile(r"\b([Cc]hapters?)(\s+)(%s(?:%s%s)*)" % (NUM, SEP, NUM))
ITEM = re.compile(r"(\d+)(\s+to\s+(\d+))?")
rewritten_lists = []


def render(numbers):
    """8 9 10 11 14 16 -> '8 to 11, 14 and 16' (the lists book/check.sh reads)."""
    runs = []
    for n in sorted(numbers):
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    items = []
    for a, b in runs:
        if a == b:
            items.append(str(a))
        elif b == a + 1:
            items += [str(a), str(b)]
        else:
            items.append("%d to %d" % (a, b))
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def rename_list(match, where):
    word, space, body = match.groups()
    # "from chapter 11 to 12" is a step, not a set: its ends move alone.
    step = re.search(r"\b[Ff]rom\s+$", match.string[max(0, match.start() - 10):match.start()])
    # Split the body into items ("9 to 12") and what separates them.
    parts = re.split(r"(\s*,\s*(?:and\s+|or\s+)?|\s+and\s+|\s+or\s+)(?=\d)", body)
    items, seps = parts[0::2], parts[1::2]
    if not any(int(n) >= FIRST_MOVED for n in re.findall(r"\d+", body)):
        return match.group(0)
    broken = False
    numbers = []
    for item in items:
        m = ITEM.fullmatch(item.strip())
        a = int(m.group(1))
        b = int(m.group(3)) if m.group(3) else a
        span = [new_number(n) for n in range(a, b + 1)]
        numbers += span
        # A range stays a range only if it is still contiguous.
        if m.group(3) and not step and span != list(range(span[0], span[-1] + 1)):
            broken = True
    if broken:
        new_body = render(numbers)
        rewritten_lists.append("%s: %s %s -> %s %s" % (where, word, " ".join(body.split()),
                                                       word, new_body))
        return word + space + new_body
    out = []
    for i, item in enumerate(items):
        out.append(ITEM.sub(
            lambda m: str(new_number(int(m.group(1)))) + (
                m.group(2).replace(m.group(3), str(new_number(int(m.group(3)))))
                if m.group(2) else ""),
            item, count=1))
        if i < len(seps):
            out.append(seps[i])
    return word + space + "".join(out)


def rename_prose(text, where):
    return LIST.sub(lambda m: rename_list(m, where), text)


# --- headings and tables of chapters -----------------------------------------

TITLE = re.compile(r"^(#\s+)(1[2-5])(\.\s)", re.M)  # a page's "# 12. Futures"
SUMMARY_ITEM = re.compile(r"(\[)(1[2-5])(\.\s)")  # SUMMARY.md's "[12. Futures"
TABLE_LINK = re.compile(r"(\[)(1[2-5])(\]\(ch1[2-7]-)")  # introduction's "[12](ch12-...)"


def rename_numbers(text, path):
    bump = lambda m: m.group(1) + str(new_number(int(m.group(2)))) + m.group(3)
    if re.fullmatch(r"book/src/ch\d\d-[^/]*\.md", path):
        text = TITLE.sub(bump, text, count=1)
    if path == "book/src/SUMMARY.md":
        text = SUMMARY_ITEM.sub(bump, text)
    return TABLE_LINK.sub(bump, text)


# --- the tree -------------------------------------------------------------------


def git(*args):
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout


def is_text(path):
    with open(os.path.join(ROOT, path), "rb") as f:
        head = f.read(8192)
    return b"\0" not in head


def sort_lockfile():
    """Cargo.lock lists packages in order of name, then version: put the
    renamed chapters back in their places, as cargo would on the next build."""
    path = os.path.join(ROOT, "Cargo.lock")
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        head, *blocks = f.read().split("\n[[package]]\n")

    def key(block):
        fields = dict(re.findall(r'^(name|version) = "([^"]*)"$', block, re.M))
        version = [int(p) if p.isdigit() else p for p in re.split(r"[.+-]", fields["version"])]
        return fields["name"], [str(v) if isinstance(v, str) else "%09d" % v for v in version]

    blocks = [b.rstrip("\n") for b in blocks]
    with open(path, "w", encoding="utf-8") as f:
        f.write(head + "".join("\n[[package]]\n" + b + "\n" for b in sorted(blocks, key=key)))


def main():
    dry_run = "--dry-run" in sys.argv[1:]
    if not os.path.isdir(os.path.join(ROOT, "chapters/ch12-async")):
        sys.exit("renumber: no chapters/ch12-async here: this tree is renumbered already")
    files = [f for f in git("ls-files", "-z").split("\0") if f]
    if not dry_run and git("status", "--porcelain", "--untracked-files=no"):
        sys.exit("renumber: commit or stash your changes first")

    # Contents first, under the old paths.
    changed = 0
    for path in files:
        if path == SELF or not os.path.isfile(os.path.join(ROOT, path)) or not is_text(path):
            continue
        with open(os.path.join(ROOT, path), encoding="utf-8") as f:
            old = f.read()
        new = rename_numbers(rename_prose(rename_tokens(old), path), path)
        if new != old:
            changed += 1
            if not dry_run:
                with open(os.path.join(ROOT, path), "w", encoding="utf-8") as f:
                    f.write(new)

    # Then the paths, the highest chapter first: ch14 -> ch16 before
    # ch12 -> ch14, so that no name is taken twice.
    moves = [(p, rename_tokens(p)) for p in files if rename_tokens(p) != p]
    moves.sort(key=lambda move: -max(int(n) for _, n in TOKEN.findall(move[0])))
    for old, new in moves:
        if dry_run:
            continue
        os.makedirs(os.path.dirname(os.path.join(ROOT, new)) or ROOT, exist_ok=True)
        git("mv", old, new)
    if not dry_run:
        # Directories the moves emptied.
        for top in ["chapters", "book"]:
            for dirpath, _, _ in sorted(os.walk(os.path.join(ROOT, top)), reverse=True):
                if not os.listdir(dirpath):
                    os.rmdir(dirpath)
        sort_lockfile()
        git("add", "-u")

    for line in rewritten_lists:
        print("renumber: range written out:", line)
    print("renumber: %d files rewritten, %d renamed%s" % (changed, len(moves),
                                                         " (dry run)" if dry_run else ""))


if __name__ == "__main__":
    main()
