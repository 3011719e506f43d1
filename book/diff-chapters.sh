#!/usr/bin/env bash
# Prints what one chapter changed from another: the diff of their src/
# directories, as `just diff` and the book show it. The `// ANCHOR:` marker
# lines the book uses to quote code are left out (they are not code), and
# main.rs comes first, where the lesson is.
#
# Usage: bash book/diff-chapters.sh FROM TO [git diff options]   e.g. ch06 ch07 --color
set -euo pipefail
cd "$(dirname "$0")/.."

chapter_dir() {
    local dirs=(chapters/"$1"-*/)
    if [ ! -d "${dirs[0]}" ]; then
        echo "no such chapter: $1 (see \`just chapters\`)" >&2
        exit 2
    fi
    echo "${dirs[0]%/}"
}
from=$(chapter_dir "$1")
to=$(chapter_dir "$2")
shift 2

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
    find "$tmp/$dir" -name '*.rs' -exec sed -i -E '/^[[:space:]]*\/\/ ANCHOR(_END)?: /d' {} +
done
printf '*/main.rs\n*\n' >"$tmp/order"
cd "$tmp"
# Exit status 1 means "the trees differ": that is the point, not an error.
# 141 is SIGPIPE: the reader stopped reading (`just diff ch06 ch07 | head`),
# which is not a failure of the diff either.
status=0
git diff --no-index --no-ext-diff -O order "$@" -- "$from/src" "$to/src" || status=$?
[ "$status" -eq 0 ] || [ "$status" -eq 1 ] || [ "$status" -eq 141 ] || exit "$status"
