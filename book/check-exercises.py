#!/usr/bin/env python3
"""Ties the exercises on the chapter pages to their answers and solutions.

Over every chapter page book/src/chNN-*.md (found, not listed), its
`## Exercises` section, the answers page book/src/answers.md, the solution
patches book/solutions/chNN-K.patch and the exercise tests
chapters/*/tests/exercises.rs, it checks that:

0. the prose above the exercises names none that the page does not have
   ("exercise 7" where there are five);
1. every exercise (item K of the numbered list) says how to know it is done
   (*Solved when*, *Done when* or *Check*) and links its answer,
   answers.md#chNN-K, whose heading carries that id ({#chNN-K});
2. every answer belongs to an exercise, and every solution patch too; the
   answer shows its patch ({{#include ../solutions/chNN-K.patch}}), and the
   exercise names the patch's test: *Solved when* it passes (Expect: pass)
   or *Done when* it fails (Expect: fail);
3. every `#[ignore = "exercise chNN-K ..."]` test is the test of that
   solution, so no test waits for an exercise that is gone.

book/exercise.sh runs the solutions; this checks that the book points at
them. Usage: check-exercises.py   exit 1 and one line per problem.
"""

import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SRC = os.path.join(ROOT, "book", "src")
SOLUTIONS = os.path.join(ROOT, "book", "solutions")

problems = []


def fail(message):
    problems.append(message)


def exercises_of(page):
    """The items of a page's Exercises section: {number: text}."""
    with open(page, encoding="utf-8") as f:
        text = f.read()
    match = re.search(r"^## Exercises\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    if not match:
        return None
    items = {}
    for item in re.finditer(r"^(\d+)\. (.*?)(?=^\d+\. |\Z)", match.group(1), re.S | re.M):
        items[int(item.group(1))] = " ".join(item.group(2).split())
    return items


def solution(ident):
    """(test command, expect) from a patch's header, or None."""
    path = os.path.join(SOLUTIONS, ident + ".patch")
    if not os.path.exists(path):
        return None
    header = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("diff --git "):
                break
            key, _, value = line.partition(":")
            if key in ("Test", "Expect"):
                header[key] = value.strip()
    return header.get("Test", ""), header.get("Expect", "")


with open(os.path.join(SRC, "answers.md"), encoding="utf-8") as f:
    answers = f.read()
answer_ids = set(re.findall(r"^#+ .*\{#(ch\d\d-\d+)\}\s*$", answers, re.M))

exercises = set()
for name in sorted(os.listdir(SRC)):
    match = re.fullmatch(r"(ch\d\d)-.*\.md", name)
    if not match:
        continue
    chapter = match.group(1)
    items = exercises_of(os.path.join(SRC, name))
    if items is None:
        fail(f"book/src/{name}: no ## Exercises section")
        continue
    if sorted(items) != list(range(1, len(items) + 1)):
        fail(f"book/src/{name}: the exercises are not numbered 1 to {len(items)}")
    # "exercise 7" in the prose must name one of the page's own exercises.
    with open(os.path.join(SRC, name), encoding="utf-8") as f:
        prose = f.read().split("\n## Exercises\n")[0]
    for mention in re.finditer(r"(chapter \d+'s )?\b[Ee]xercises? (\d+)", prose):
        if not mention.group(1) and int(mention.group(2)) not in items:
            line = prose.count("\n", 0, mention.start()) + 1
            fail(f"book/src/{name}:{line}: '{mention.group(0)}', but the page's exercises "
                 f"are 1 to {len(items)}")
    for number, text in items.items():
        ident = f"{chapter}-{number}"
        exercises.add(ident)
        where = f"book/src/{name}, exercise {number}"
        if not re.search(r"\*(Solved when|Done when|Check)\*", text):
            fail(f"{where}: does not say how to know it is done (*Solved when*, *Done when* or *Check*)")
        links = re.findall(r"answers\.md#(ch\d\d-\d+)", text)
        if links != [ident]:
            fail(f"{where}: should link its answer, answers.md#{ident}, and no other (links {links})")
        if ident not in answer_ids:
            fail(f"{where}: book/src/answers.md has no heading {{#{ident}}}")
        sol = solution(ident)
        if sol is None:
            continue
        test, expect = sol
        name_of_test = test.split()[-1] if test else ""
        if name_of_test not in text:
            fail(f"{where}: should name its solution's test, {name_of_test}")
        wanted = {"pass": "*Solved when*", "fail": "*Done when*"}.get(expect)
        if wanted and wanted not in text:
            fail(f"{where}: its test {expect}s with the solution (Expect: {expect}): say {wanted}")
        if f"{{{{#include ../solutions/{ident}.patch}}}}" not in answers:
            fail(f"book/src/answers.md: the answer {ident} does not show book/solutions/{ident}.patch")

for ident in sorted(answer_ids - exercises):
    fail(f"book/src/answers.md: the answer {{#{ident}}} has no exercise {ident} on its chapter's page")
for name in sorted(os.listdir(SOLUTIONS)):
    ident = name[: -len(".patch")] if name.endswith(".patch") else None
    if ident is None or not re.fullmatch(r"ch\d\d-\d+", ident):
        fail(f"book/solutions/{name}: a solution is named chNN-K.patch")
    elif ident not in exercises:
        fail(f"book/solutions/{name}: there is no exercise {ident} on its chapter's page")

chapters = os.path.join(ROOT, "chapters")
for crate in sorted(os.listdir(chapters)):
    path = os.path.join(chapters, crate, "tests", "exercises.rs")
    if not os.path.exists(path):
        continue
    with open(path, encoding="utf-8") as f:
        source = f.read()
    for ident, test in re.findall(r'#\[ignore = "exercise (ch\d\d-\d+)\b[^"]*"\]\s*fn (\w+)', source):
        sol = solution(ident)
        if sol is None or not sol[0].endswith(" " + test) or sol[1] != "pass":
            fail(f"chapters/{crate}/tests/exercises.rs: {test} waits for exercise {ident}, "
                 f"but book/solutions/{ident}.patch is not its solution (Expect: pass, Test: ... {test})")

for problem in problems:
    print("exercises check: " + problem, file=sys.stderr)
if problems:
    sys.exit(1)
print(f"{len(exercises)} exercises, {len(os.listdir(SOLUTIONS))} solutions")
