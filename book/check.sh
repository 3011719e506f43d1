#!/usr/bin/env bash
# Checks that the book cannot drift from the code. Fails (exit 1) if:
#
#   1. an {{#include path:anchor}} names a file that does not exist, or an
#      anchor whose `ANCHOR: name` / `ANCHOR_END: name` markers are not both in
#      that file (mdBook itself only logs a missing file, and silently includes
#      nothing for a missing anchor), or uses line numbers instead of an anchor;
#   2. a page is missing from SUMMARY.md (so it would never be built), or a
#      chapter crate chapters/chNN-name has no page book/src/chNN-name.md that
#      quotes the crate through an anchor (its diff: see 2c); a diff
#      longer than 150 lines is shown folded, inside <details>; no generated
#      diff carries an `// ANCHOR:` marker line;
#   2b. code that says "Identical in chapters A to B" (or any list of
#      chapters and ranges: "6 and 7", "8 to 11 and 14", "6, 9 to 11 and
#      14") is: the anchored region (or, said in a file's opening comment,
#      the whole file) must be the same in every chapter listed, so copies
#      meant to stay equal cannot drift;
#   2c. a figure on a page is not in the capture its marker names
#      (51,067<!--from captures/thread-cost.txt-->), a measured-looking
#      figure has no marker, or a capture does not start with the command
#      that re-records it, the date and the machine (book/check-figures.py
#      says how, and what it exempts); or a timeline (src/timelines/*.svg)
#      is not what book/capture/timeline.py draws from its captures;
#   2d. every step reads as a diff: each chapter's page shows the diff from
#      the chapter before (or the one book/predecessors.sh names), whole or
#      file by file (generated/chAA-chNN/FILE.diff, or FILE/NAME.diff for
#      the parts a file marks with `// DIFF PART: NAME`), each printed diff folded
#      in <details> under a <summary> that says what it carries, and none
#      with more than 600 changed lines; a new module may instead be shown on
#      its own, every line of it quoted through anchors. The diffs ignore
#      indentation alone, and nothing else. Every chapter page has the parts
#      the introduction promises, in order;
#   2e. an exercise does not say how to know it is done, or does not link
#      its answer, or a solution patch (book/solutions/) and the exercise
#      that names its test do not match (book/check-exercises.py);
#   3. mdBook reports any error or warning while building;
#   4. a link or image in the built HTML points at a page, file or #fragment
#      that does not exist.
#
# Run book/gen-diffs.sh first. Usage: bash book/check.sh   (needs mdbook)
set -euo pipefail
cd "$(dirname "$0")/.."
source book/predecessors.sh

MDBOOK=${MDBOOK:-mdbook}
command -v "$MDBOOK" >/dev/null || MDBOOK="$HOME/.cargo/bin/mdbook"

errors=0
fail() {
    echo "book check: $*" >&2
    errors=$((errors + 1))
}

src=book/src
if [ ! -d "$src/generated" ]; then
    fail "$src/generated is missing: run book/gen-diffs.sh first"
    exit 1
fi

# --- 1. includes and anchors -------------------------------------------------

has_marker() { # file kind name
    grep -Eq "$2:[[:space:]]*$3([^A-Za-z0-9_-]|\$)" "$1"
}

includes=0
while IFS= read -r page; do
    dir=$(dirname "$page")
    # Every {{#include ...}} not escaped with a backslash, with its line number.
    while IFS=: read -r line directive; do
        arg=${directive#\{\{\#*include }
        arg=${arg%\}\}}
        arg=${arg#"${arg%%[![:space:]]*}"}
        arg=${arg%"${arg##*[![:space:]]}"}
        path=${arg%%:*}
        selector=""
        [ "$path" != "$arg" ] && selector=${arg#*:}
        where="$page:$line: {{#include $arg}}"
        includes=$((includes + 1))
        if [ ! -f "$dir/$path" ]; then
            fail "$where: no such file $dir/$path"
            continue
        fi
        if [ -z "$selector" ]; then
            continue
        fi
        if [[ $selector =~ ^[0-9:]*$ ]]; then
            fail "$where: line numbers drift when the code changes; mark the lines with // ANCHOR: name and include path:name"
            continue
        fi
        has_marker "$dir/$path" ANCHOR "$selector" ||
            fail "$where: no 'ANCHOR: $selector' in $dir/$path"
        has_marker "$dir/$path" ANCHOR_END "$selector" ||
            fail "$where: no 'ANCHOR_END: $selector' in $dir/$path"
    done < <(grep -noE '(^|[^\\])\{\{#(include|rustdoc_include)[^}]*\}\}' "$page" |
        sed -E 's/^([0-9]+):[^{]*/\1:/')
done < <(find "$src" -name '*.md' -not -path "$src/generated/*" | sort)

# --- 2. every page in SUMMARY.md, one page per chapter crate ------------------

while IFS= read -r page; do
    rel=${page#"$src"/}
    [ "$rel" = SUMMARY.md ] && continue
    grep -q "]($rel)" "$src/SUMMARY.md" ||
        fail "$page is not listed in $src/SUMMARY.md, so it is never built or checked"
done < <(find "$src" -name '*.md' -not -path "$src/generated/*" | sort)


prev=""
for crate in chapters/ch[0-9][0-9]-*/; do
    crate=${crate%/}
    name=$(basename "$crate")
    num=${name%%-*}
    page="$src/$name.md"
    prev=$(predecessor_of "$num" "$prev")
    if [ ! -f "$page" ]; then
        want="quotes the crate ({{#include ../../$crate/src/main.rs:ANCHOR_NAME}})"
        [ -n "$prev" ] && want="$want and shows {{#include generated/$prev-$num.diff}}"
        fail "chapter crate $crate has no page $page: write one that $want, and list it in $src/SUMMARY.md"
    else
        grep -q "($name.md)" "$src/SUMMARY.md" ||
            fail "$page is not listed in $src/SUMMARY.md"
        grep -Eq "\{\{#include \.\./\.\./$crate/[^}]*:[A-Za-z_][A-Za-z0-9_-]*\}\}" "$page" ||
            fail "$page quotes no code from $crate through an anchor"
    fi
    prev=$num
done

# Long diffs are folded, and no diff shows the book's anchor markers.
folding=$(
    find "$src" -name '*.md' -not -path "$src/generated/*" | sort | while IFS= read -r page; do
        awk -v page="$page" -v dir="$src" '
            /<details>/ { open = 1 }
            /<\/details>/ { open = 0 }
            match($0, /\{\{#include generated\/[^}]*\.diff\}\}/) {
                file = substr($0, RSTART + 11, RLENGTH - 13)
                lines = 0
                while ((getline line < (dir "/" file)) > 0) lines++
                close(dir "/" file)
                if (lines > 150 && !open)
                    printf "%s:%d: %s has %d lines: fold it in <details> with a <summary> of what changed\n", page, NR, file, lines
            }' "$page"
    done
)
if [ -n "$folding" ]; then
    sed 's/^/book check: /' <<<"$folding" >&2
    errors=$((errors + 1))
fi
if grep -rl -E '^[-+ ][[:space:]]*// (ANCHOR(_END)?|DIFF PART): ' "$src"/generated --include='*.diff' >/dev/null 2>&1; then
    fail "a generated diff shows // ANCHOR: or // DIFF PART: lines: run book/gen-diffs.sh (it strips them)"
fi

# --- 2b. copies that must stay identical -----------------------------------------

region() { # file anchor: the lines between its ANCHOR and ANCHOR_END markers
    awk -v name="$2" '
        $0 ~ "// ANCHOR_END: " name "$" { inside = 0 }
        inside { print }
        $0 ~ "// ANCHOR: " name "$" { inside = 1 }' "$1"
}
# The chapter numbers a list names: "8 to 11 and 14" is 8 9 10 11 14.
chapter_numbers() { # list
    local words i=0
    read -ra words <<<"${1//,/ }"
    while [ "$i" -lt "${#words[@]}" ]; do
        if [ "${words[i]}" = and ]; then
            i=$((i + 1))
        elif [ "${words[i + 1]:-}" = to ]; then
            seq "${words[i]}" "${words[i + 2]}"
            i=$((i + 3))
        else
            echo "${words[i]}"
            i=$((i + 1))
        fi
    done
}
copies=0
while IFS=: read -r file line _; do
    rel=${file#chapters/*/}
    text=$(sed -n "${line}p" "$file")
    [[ $text =~ Identical\ in\ chapters\ ([0-9]+(\ to\ [0-9]+)?((,|\ and)\ [0-9]+(\ to\ [0-9]+)?)*) ]] || continue
    list=${BASH_REMATCH[1]}
    # The anchor whose region holds this line, if any.
    anchor=$(awk -v at="$line" '
        NR >= at { exit }
        /\/\/ ANCHOR: / { sub(/.*\/\/ ANCHOR: /, ""); open[$0] = 1; last = $0 }
        /\/\/ ANCHOR_END: / { sub(/.*\/\/ ANCHOR_END: /, ""); delete open[$0]; if ($0 == last) last = "" }
        END { print last }' "$file")
    for n in $(chapter_numbers "$list"); do
        other=$(printf 'chapters/ch%02d-*/%s' "$n" "$rel")
        # shellcheck disable=SC2086
        other=$(echo $other)
        if [ ! -f "$other" ]; then
            fail "$file:$line says it is identical in chapters $list, but $other does not exist"
            continue
        fi
        copies=$((copies + 1))
        if [ -n "$anchor" ]; then
            cmp -s <(region "$file" "$anchor") <(region "$other" "$anchor") ||
                fail "$other: the '$anchor' region differs from $file's, which says it is identical in chapters $list"
        else
            cmp -s "$file" "$other" ||
                fail "$other differs from $file, which says it is identical in chapters $list"
        fi
    done
done < <(grep -n -r 'Identical in chapters' chapters --include='*.rs' | sort -u)

# --- 2c. figures and their captures ----------------------------------------------

command -v python3 >/dev/null || { fail "python3 is needed for the figures check"; exit 1; }
if figures=$(python3 book/check-figures.py "$src"); then
    echo "book check: $figures"
else
    errors=$((errors + 1))
fi
# A timeline is a picture of a capture: redrawn from it, it must not change.
timelines=("$src"/timelines/*.svg)
if [ -e "${timelines[0]}" ]; then
    if drawn=$(python3 book/capture/timeline.py check "${timelines[@]}"); then
        echo "book check: $drawn"
    else
        errors=$((errors + 1))
    fi
fi
# --- 2d. steps a reader can diff (issue 21) ------------------------------------
# A step shows one idea: its page prints the diff from the chapter before,
# whole or in parts (one per file, generated/chAA-chNN/FILE.diff, or per
# part of a file that marks them, FILE/NAME.diff: see gen-diffs.sh), each part
# folded under a <summary> that says what it carries, and no printed diff
# longer than a reader can take in. A new module may be shown on its own
# instead, through anchors that quote every line of it but its tests.

MAX_CHANGED_LINES=600
# Steps not cut down yet, and why; the check names them each time, with
# their size, instead of failing. Delete a line when its step is cut.
declare -A OVER_LIMIT_FOR_NOW=(
)

changed_lines() { # diff file: its + and - lines, headers not counted
    awk '/^diff --git /{ hunk = 0; next } /^@@/{ hunk = 1; next } hunk && /^[-+]/{ n++ } END { print n + 0 }' "$1"
}

# The share of a file's lines, before its tests, that a page quotes
# through anchors: "covered total".
quoted_lines() { # page file
    local anchors
    anchors=$(grep -oE "\{\{#include \.\./\.\./$2:[A-Za-z0-9_-]+\}\}" "$1" |
        sed -E 's/.*:([A-Za-z0-9_-]+)\}\}$/\1/' | sort -u | tr '\n' ' ')
    if grep -qF "{{#include ../../$2}}" "$1"; then
        echo "1 1"
        return
    fi
    awk -v list="$anchors" '
        BEGIN { n = split(list, a, " "); for (i = 1; i <= n; i++) want[a[i]] = 1 }
        /^#\[cfg\(test\)\]/ { exit }
        /\/\/ ANCHOR_END: / { name = $0; sub(/.*ANCHOR_END: /, "", name); open[name] = 0; next }
        /\/\/ ANCHOR: / { name = $0; sub(/.*ANCHOR: /, "", name); open[name] = 1; next }
        /^[[:space:]]*$/ || /\/\/ Identical in chapters / { next }
        {
            total++
            for (k in open) if (open[k] && want[k]) { covered++; break }
        }
        END { print covered + 0, total + 0 }' "$2"
}

# Every diff a page prints: "line file summary", the summary being that of
# the <details> it is folded in (empty if it is not folded).
printed_diffs() { # page
    awk '
        /<details>/ { open = 1; summary = "" }
        /<\/details>/ { open = 0 }
        open && match($0, /<summary>.*<\/summary>/) { summary = substr($0, RSTART + 9, RLENGTH - 19) }
        match($0, /\{\{#include generated\/[^}]*\.diff\}\}/) {
            print NR "\t" substr($0, RSTART + 11, RLENGTH - 13) "\t" (open ? summary : "")
        }' "$1"
}

steps=0
prev=""
for crate in chapters/ch[0-9][0-9]-*/; do
    [ -d "${crate}src" ] || continue
    crate=${crate%/}
    name=$(basename "$crate")
    num=${name%%-*}
    page="$src/$name.md"
    from=$(predecessor_of "$num" "$prev")
    prev=$num
    [ -n "$from" ] && [ -f "$page" ] || continue
    step="$from-$num"
    steps=$((steps + 1))
    whole="generated/$step.diff"
    if [ ! -f "$src/$whole" ]; then
        fail "$src/$whole was not generated: run book/gen-diffs.sh"
        continue
    fi
    DIFF_CHECK_INDENT_ONLY=1 bash book/diff-chapters.sh "$from" "$num" ||
        fail "the diff $from to $num hides a change that is not indentation (above): undo it, or make it a change of its own"

    declare -A shown=()
    while IFS=$'\t' read -r line diff summary; do
        shown[$diff]=1
        if [ ! -f "$src/$diff" ]; then
            fail "$page:$line: {{#include $diff}}: no such generated diff (book/gen-diffs.sh writes generated/$step.diff, generated/$step/FILE.diff, and generated/$step/FILE/NAME.diff for a file that marks its parts)"
            continue
        fi
        case $diff in
            "$whole" | "generated/$step/"*) ;;
            *) fail "$page:$line: shows $diff, but this page's step is $from to $num" ;;
        esac
        [ -n "$summary" ] ||
            fail "$page:$line: fold $diff in <details> with a <summary> that says what it carries"
        n=$(changed_lines "$src/$diff")
        if [ "$n" -gt "$MAX_CHANGED_LINES" ]; then
            if [ -n "${OVER_LIMIT_FOR_NOW[$step]:-}" ]; then
                echo "book check: note: $page:$line: $diff has $n changed lines, over $MAX_CHANGED_LINES for now: ${OVER_LIMIT_FOR_NOW[$step]}"
            else
                fail "$page:$line: $diff has $n changed lines, more than $MAX_CHANGED_LINES: show the step in parts, one per file ({{#include generated/$step/FILE.diff}}) or per part a long file marks with // DIFF PART: NAME (generated/$step/FILE/NAME.diff), each under its own <summary>; a new module may be quoted through anchors instead"
            fi
        fi
    done < <(printed_diffs "$page")

    # Shown whole, or every file: as its part, or as a new module quoted.
    if [ -z "${shown[$whole]:-}" ]; then
        while IFS= read -r part; do
            file=${part#"$src/generated/$step/"}
            file=${file%.diff}
            [ -n "${shown[generated/$step/$file.diff]:-}" ] && continue
            if grep -q '^new file mode' "$part"; then
                read -r covered total < <(quoted_lines "$page" "$crate/src/$file")
                [ "$covered" -gt 0 ] && [ "$covered" -eq "$total" ] && continue
                fail "$page shows neither {{#include generated/$step/$file.diff}} nor all of the new $file through anchors ($covered of its $total lines before its tests)"
            else
                fail "$page does not show what $file changed: {{#include generated/$step/$file.diff}}, or the whole step, {{#include $whole}}"
            fi
        done < <(find "$src/generated/$step" -name '*.diff' | sort)
    fi
    unset shown
done

# The parts of a chapter page, in the order the introduction promises.
template=("The problem" "The system calls" "The code" "What changed" "What can go wrong" "Exercises")
grep -qF "1. **${template[0]}**" "$src/introduction.md" ||
    fail "$src/introduction.md no longer lists the parts of a chapter page (1. **${template[0]}**...): update book/check.sh's template with it"
for page in "$src"/ch[0-9][0-9]-*.md; do
    missing=$(awk -v want="$(printf '%s\n' "${template[@]}")" '
        BEGIN { n = split(want, parts, "\n"); i = 1 }
        /^```/ { fenced = !fenced }
        !fenced && /^## / && i <= n && substr($0, 4) == parts[i] { i++ }
        END { if (i <= n) print parts[i] }' "$page")
    [ -z "$missing" ] ||
        fail "$page: no '## $missing' heading where the introduction's page template puts it (in order: $(printf '%s, ' "${template[@]}" | sed 's/, $//'))"
done

# --- 2e. exercises that check themselves (issue 21) ---------------------------
# Every exercise says how to know it is done and links its answer; every
# solution (book/solutions/chNN-K.patch) belongs to an exercise that names
# its test. book/check-exercises.py says how; book/exercise.sh runs them.

if exercises=$(python3 book/check-exercises.py); then
    echo "book check: $exercises"
else
    errors=$((errors + 1))
fi

# --- 3. build, refusing errors and warnings ------------------------------------

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
if ! log=$("$MDBOOK" build book -d "$out/html" 2>&1); then
    echo "$log" >&2
    fail "mdbook build failed"
    exit 1
fi
if grep -E '(ERROR|WARN)' <<<"$log" >&2; then
    fail "mdbook reported the problems above"
fi

# --- 4. links in the built HTML ---------------------------------------------------

html="$out/html"
declare -A ids=()
ids_of() { # file: caches every id="..." in it
    [ -n "${ids[$1]+x}" ] && return
    ids[$1]=" $(grep -oE ' id="[^"]*"' "$1" | sed -E 's/ id="(.*)"/\1/' | tr '\n' ' ')"
}

links=0
while IFS= read -r page; do
    rel=${page#"$html"/}
    while IFS= read -r target; do
        case $target in
            '' | '#' | //* | [a-zA-Z]*:*) continue ;; # external: http:, mailto:, data: ...
        esac
        links=$((links + 1))
        path=${target%%#*}
        frag=""
        [ "$path" != "$target" ] && frag=${target#*#}
        path=${path%%\?*}
        if [ -z "$path" ]; then
            file=$page
        else
            file=$(dirname "$page")/$path
        fi
        if [ ! -e "$file" ]; then
            fail "$rel links to $target: no such page or file"
            continue
        fi
        if [ -n "$frag" ] && [[ $file == *.html ]]; then
            ids_of "$file"
            [[ ${ids[$file]} == *" $frag "* ]] ||
                fail "$rel links to $target: no id=\"$frag\" in ${file#"$html"/}"
        fi
    done < <(grep -oE '(href|src)="[^"]*"' "$page" | sed -E 's/^[a-z]+="(.*)"$/\1/' | sed 's/&amp;/\&/g')
done < <(find "$html" -name '*.html' | sort)

if [ "$errors" -gt 0 ]; then
    echo "book check: $errors problem(s)" >&2
    exit 1
fi
echo "book check: ok ($includes includes, $copies copies checked, $steps steps, $links internal links)"
