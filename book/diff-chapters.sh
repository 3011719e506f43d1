#!/usr/bin/env bash
# Prints what one chapter changed from another: the diff of their src/
# directories, as `just diff` and the book show it. main.rs comes first,
# where the lesson is. Left out, because they are not the lesson:
#
#   - the book's bookkeeping comments: the `// ANCHOR:` markers it quotes
#     code by, the `// Identical in chapters ...` notes book/check.sh
#     reads (they change whenever a copy is made, not when code does), and
#     the `// DIFF PART:` markers where book/gen-diffs.sh cuts a long
#     file's diff in parts;
#   - changes of indentation alone (`git diff -w`): a block that moves into
#     a loop or a function shows as the same lines, not as all of them
#     deleted and added again. book/check.sh checks that this hides no
#     other change of whitespace.
#
# Usage: bash book/diff-chapters.sh [FROM] TO [git diff options]
#   e.g. ch06 ch07 --color. Without FROM, TO is compared with the chapter its
#   page compares itself with (book/predecessors.sh): `ch16` is ch09 ch16.
#
# With DIFF_CHECK_INDENT_ONLY=1 in the environment it prints no diff, and
# fails if `-w` hides anything but indentation in this step (a change of
# spacing inside a line, in a string say): book/check.sh runs it that way.
set -euo pipefail
cd "$(dirname "$0")/.."
source book/predecessors.sh

chapter_dir() {
    local dirs=(chapters/"$1"-*/)
    if [[ $1 != ch[0-9][0-9] || ! -d ${dirs[0]} ]]; then
        echo "no such chapter: $1 (see \`just chapters\`)" >&2
        exit 2
    fi
    echo "${dirs[0]%/}"
}
if [ $# -ge 2 ] && [[ $2 != -* ]]; then
    from=$1 to=$2
    shift 2
else
    to=$1
    shift
    chapter_dir "$to" >/dev/null
    from=$(predecessor_of_chapter "$to")
    if [ -z "$from" ]; then
        echo "$to is the first chapter: nothing comes before it" >&2
        exit 2
    fi
fi
from=$(chapter_dir "$from")
to=$(chapter_dir "$to")

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for dir in "$from" "$to"; do
    mkdir -p "$tmp/$dir"
    cp -R "$dir/src" "$tmp/$dir/"
    # A module included from another chapter's file (`#[path = "FILE"]` on
    # the line before `mod NAME;` in main.rs) is copied in as src/NAME.rs:
    # the diff shows the code a chapter uses, wherever the file lives.
    while read -r file name; do
        cp "$dir/src/$file" "$tmp/$dir/src/$name.rs"
    done < <(awk '
        /^#\[path = "[^"]+"\]$/ { split($0, quoted, "\""); file = quoted[2]; next }
        file != "" && match($0, /^mod [a-z0-9_]+;/) { print file, substr($0, 5, RLENGTH - 5) }
        { file = "" }' "$dir/src/main.rs")
    find "$tmp/$dir" -name '*.rs' -exec sed -i -E \
        -e '/^[[:space:]]*\/\/ ANCHOR(_END)?: /d' \
        -e '/^[[:space:]]*\/\/ DIFF PART: /d' \
        -e '/^[[:space:]]*\/\/ Identical in chapters [0-9].*\(book\/check\.sh checks it\)\.$/d' {} +
done
printf '*/main.rs\n*\n' >"$tmp/order"
cd "$tmp"
if [ "${DIFF_CHECK_INDENT_ONLY:-}" = 1 ]; then
    # Without their indentation, the trees must diff the same with -w and
    # without it: else -w hid a change of whitespace within a line.
    find "$from" "$to" -name '*.rs' -exec sed -i -E 's/^[[:space:]]+//' {} +
    plain=$(git diff --no-index --no-ext-diff --no-color -- "$from/src" "$to/src" || true)
    if [ "$plain" != "$(git diff --no-index --no-ext-diff --no-color -w -- "$from/src" "$to/src" || true)" ]; then
        echo "${from#chapters/} to ${to#chapters/}: the diff ignores a change of whitespace that is not indentation:" >&2
        diff <(git diff --no-index --no-color -w -- "$from/src" "$to/src" | grep '^[-+][^-+]' || true) \
            <(grep '^[-+][^-+]' <<<"$plain" || true) | sed -n 's/^> /    /p' >&2
        exit 1
    fi
    exit 0
fi
# Exit status 1 means "the trees differ": that is the point, not an error.
# 141 is SIGPIPE: the reader stopped reading (`just diff ch06 ch07 | head`),
# which is not a failure of the diff either.
status=0
git diff --no-index --no-ext-diff -w -O order "$@" -- "$from/src" "$to/src" || status=$?
[ "$status" -eq 0 ] || [ "$status" -eq 1 ] || [ "$status" -eq 141 ] || exit "$status"
