#!/usr/bin/env bash
# Writes book/src/generated/chAA-chNN.diff for every chapter crate
# (chapters/chNN-*): what it changed from the chapter before it, or from the
# one book/predecessors.sh names. The same diff `just diff chAA chNN` prints
# (book/diff-chapters.sh). And the same diff in parts, one per file, as
# book/src/generated/chAA-chNN/FILE.diff (main.rs.diff, share.rs.diff...):
# a page may show a long step file by file, each part with its own label.
# The directory is gitignored and rebuilt from scratch on every run, so a
# page can never show a stale diff.
#
# Usage: bash book/gen-diffs.sh   (from anywhere; needs git)
set -euo pipefail
cd "$(dirname "$0")/.."
source book/predecessors.sh

out=book/src/generated
rm -rf "$out"
mkdir -p "$out"

prev=""
for dir in chapters/ch[0-9][0-9]-*/; do
    [ -d "${dir}src" ] || continue
    num=$(basename "$dir" | cut -d- -f1)
    from=$(predecessor_of "$num" "$prev")
    if [ -n "$from" ]; then
        file="$out/$from-$num.diff"
        bash book/diff-chapters.sh "$from" "$num" --no-color >"$file"
        # One part per file: each `diff --git` header starts one, named by
        # the file's path under src/ (the new side's; the old one's if the
        # file is gone).
        mkdir -p "$out/$from-$num"
        awk -v parts="$out/$from-$num" '
            /^diff --git / {
                if (part != "") close(part)
                path = $NF
                if (path == "b/dev/null") path = $(NF - 1)
                sub(/^[ab]\/chapters\/[^\/]+\/src\//, "", path)
                part = parts "/" path ".diff"
                if (path ~ /\//) {
                    dir = part
                    sub(/\/[^\/]*$/, "", dir)
                    system("mkdir -p \"" dir "\"")
                }
            }
            { print > part }' "$file"
        printf 'gen-diffs: %s (%s lines, %s parts)\n' "$file" "$(wc -l <"$file")" \
            "$(find "$out/$from-$num" -name '*.diff' | wc -l)"
    fi
    prev=$num
done
