#!/usr/bin/env bash
# Checks that the book cannot drift from the code. Fails (exit 1) if:
#
#   1. an {{#include path:anchor}} names a file that does not exist, or an
#      anchor whose `ANCHOR: name` / `ANCHOR_END: name` markers are not both in
#      that file (mdBook itself only logs a missing file, and silently includes
#      nothing for a missing anchor), or uses line numbers instead of an anchor;
#   2. a page is missing from SUMMARY.md (so it would never be built), or a
#      chapter crate chapters/chNN-name has no page book/src/chNN-name.md that
#      quotes the crate through an anchor and shows the generated diff from
#      the chapter before (or the one book/predecessors.sh names); a diff
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
#      says how, and what it exempts);
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
        if [ -n "$prev" ]; then
            diff="generated/$prev-$num.diff"
            [ -f "$src/$diff" ] || fail "$src/$diff was not generated"
            grep -q "{{#include $diff}}" "$page" ||
                fail "$page does not show the generated diff {{#include $diff}}"
        fi
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
if grep -l -E '^[-+ ][[:space:]]*// ANCHOR(_END)?: ' "$src"/generated/*.diff >/dev/null 2>&1; then
    fail "a generated diff shows // ANCHOR: lines: run book/gen-diffs.sh (it strips them)"
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
echo "book check: ok ($includes includes, $copies copies checked, $links internal links)"
