#!/usr/bin/env bash
# Writes book/src/generated/chAA-chNN.diff for every chapter crate
# (chapters/chNN-*): what it changed from the chapter before it, or from the
# one book/predecessors.sh names. The same diff `just diff chAA chNN` prints
# (book/diff-chapters.sh). The directory is gitignored and rebuilt from
# scratch on every run, so a page can never show a stale diff.
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
        printf 'gen-diffs: %s (%s lines)\n' "$file" "$(wc -l <"$file")"
    fi
    prev=$num
done
