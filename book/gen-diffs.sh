#!/usr/bin/env bash
# Writes book/src/generated/chAA-chNN.diff for every chapter crate
# (chapters/chNN-*): what it changed from the chapter before it, or from the
# one book/predecessors.sh names. The same diff `just diff chAA chNN` prints
# (book/diff-chapters.sh). And the same diff in parts, one per file, as
# book/src/generated/chAA-chNN/FILE.diff (main.rs.diff, share.rs.diff...):
# a page may show a long step file by file, each part with its own label.
# A file too long to read as one diff marks where its diff is cut, with
# `// DIFF PART: NAME` lines between its items: its parts are then
# book/src/generated/chAA-chNN/FILE/NAME.diff, each from its marker to
# the next (see cut_in_parts).
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

# Cuts one file's diff in the parts its new version marks. Part NAME holds
# the diff's lines from the line after `// DIFF PART: NAME` to the next
# marker (lines before the first marker join the first part); a deleted
# line goes with the line that follows it in the new file. Each hunk cut
# in two gets a header of its own; a piece with no change is left out.
cut_in_parts() { # file.diff new-source parts-dir
    mkdir -p "$3"
    awk -v dir="$3" '
        # The new source, as book/diff-chapters.sh strips it: where each
        # part starts, in the numbering of the diff.
        FNR == NR {
            if ($0 ~ /^[[:space:]]*\/\/ DIFF PART: /) {
                name = $0
                sub(/.*\/\/ DIFF PART: */, "", name)
                if (name !~ /^[A-Za-z0-9_-]+$/ || name in seen) {
                    printf "gen-diffs: %s: bad or repeated part name \"%s\"\n", FILENAME, name > "/dev/stderr"
                    exit 2
                }
                seen[name] = 1
                parts++
                start[parts] = n + 1
                names[parts] = name
                next
            }
            if ($0 ~ /^[[:space:]]*\/\/ ANCHOR(_END)?: / ||
                $0 ~ /^[[:space:]]*\/\/ Identical in chapters [0-9].*\(book\/check\.sh checks it\)\.$/)
                next
            n++
            next
        }
        function part_of(line,   i, p) {
            p = 1
            for (i = 2; i <= parts; i++) if (start[i] <= line) p = i
            return p
        }
        function flush(   f) {
            if (changed) {
                f = dir "/" names[cur] ".diff"
                if (!(f in written)) { printf "%s", header > f; written[f] = 1 }
                printf "@@ -%d,%d +%d,%d @@\n", ocount ? ostart : ostart - 1, ocount,
                    ncount ? nstart : nstart - 1, ncount > f
                printf "%s", body > f
            }
            pending = 0; body = ""; ocount = 0; ncount = 0; changed = 0
        }
        !hunk && !/^@@/ { header = header $0 "\n"; next }
        /^@@/ {
            flush()
            hunk = 1
            split($2, o, ","); split($3, m, ",")
            old = substr(o[1], 2) + (o[2] == "0"); new = substr(m[1], 2) + (m[2] == "0")
            next
        }
        {
            p = part_of(new)
            if (pending && p != cur) flush()
            if (!pending) { cur = p; ostart = old; nstart = new; pending = 1 }
            body = body $0 "\n"
            kind = substr($0, 1, 1)
            if (kind == " ") { old++; new++; ocount++; ncount++ }
            else if (kind == "-") { old++; ocount++; changed = 1 }
            else if (kind == "+") { new++; ncount++; changed = 1 }
        }
        END {
            flush()
            for (i = 1; i <= parts; i++) {
                f = dir "/" names[i] ".diff"
                if (!(f in written)) printf "%s", header > f
            }
        }' "$2" "$1"
}

changes() { # diff files: their changed lines, headers left out
    awk 'FNR == 1 { hunk = 0 } /^@@/ { hunk = 1; next } hunk && /^[-+]/' "$@"
}

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
        # A changed file that marks parts of itself is shown in those parts.
        mapfile -t parts < <(find "$out/$from-$num" -name '*.diff' | sort)
        for part in "${parts[@]}"; do
            path=${part#"$out/$from-$num/"}
            path=${path%.diff}
            source="${dir}src/$path"
            if [ -f "$source" ] && grep -q '^[[:space:]]*// DIFF PART: ' "$source" &&
                ! grep -q '^new file mode' "$part"; then
                cut_in_parts "$part" "$source" "$out/$from-$num/$path"
                # The parts, in the file's order, must hold every changed
                # line of the whole, in its order: nothing lost or moved.
                mapfile -t pieces < <(sed -n "s|^[[:space:]]*// DIFF PART: *\(.*\)|$out/$from-$num/$path/\1.diff|p" "$source")
                if ! cmp -s <(changes "$part") <(changes "${pieces[@]}"); then
                    echo "gen-diffs: the parts of $path's diff ($from to $num) lose or reorder lines" >&2
                    exit 1
                fi
                rm "$part"
            fi
        done
        printf 'gen-diffs: %s (%s lines, %s parts)\n' "$file" "$(wc -l <"$file")" \
            "$(find "$out/$from-$num" -name '*.diff' | wc -l)"
    fi
    prev=$num
done
