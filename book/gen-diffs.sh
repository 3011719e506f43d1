#!/usr/bin/env bash
# Writes book/src/generated/chNN-chMM.diff for every consecutive pair of
# chapter crates (chapters/chNN-*), comparing their src/ directories: the same
# diff `just diff chNN chMM` prints. The directory is gitignored and rebuilt
# from scratch on every run, so a page can never show a stale diff.
#
# Usage: bash book/gen-diffs.sh   (from anywhere; needs git, or diff as a fallback)
set -euo pipefail
cd "$(dirname "$0")/.."

out=book/src/generated
rm -rf "$out"
mkdir -p "$out"

chapters=()
for dir in chapters/ch[0-9][0-9]-*/; do
    [ -d "${dir}src" ] && chapters+=("${dir%/}")
done
if [ "${#chapters[@]}" -lt 2 ]; then
    echo "gen-diffs: fewer than two chapters under chapters/" >&2
    exit 1
fi

# `git diff --no-index` exits 1 when the trees differ; only >1 is an error.
diff_dirs() {
    if command -v git >/dev/null; then
        git diff --no-index --no-color --no-ext-diff -- "$1" "$2" || [ $? -eq 1 ]
    else
        diff -ruN "$1" "$2" || [ $? -eq 1 ]
    fi
}

prev=""
for dir in "${chapters[@]}"; do
    if [ -n "$prev" ]; then
        from=$(basename "$prev" | cut -d- -f1)
        to=$(basename "$dir" | cut -d- -f1)
        file="$out/$from-$to.diff"
        diff_dirs "$prev/src" "$dir/src" >"$file"
        printf 'gen-diffs: %s (%s lines)\n' "$file" "$(wc -l <"$file")"
    fi
    prev=$dir
done
