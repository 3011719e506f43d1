#!/usr/bin/env bash
# Checks the book's exercises against their solutions (book/src/answers.md).
#
# A solution is a patch, book/solutions/chNN-K.patch for exercise K of
# chapter NN's page. Before its first `diff --git` line (git apply ignores
# what comes before) it says which test proves it, and which way:
#
#     Exercise ch06-3: stop accepting while the server is full
#     Test: cargo test -p ch06 --test exercises -- --ignored --exact NAME
#     Expect: pass
#
#   Expect: pass  the exercise changes what the server does: the test fails
#                 on the chapter as it is, and passes with the patch (such
#                 tests are #[ignore]d, so that `cargo test` stays green);
#   Expect: fail  the exercise breaks something on purpose, to see which
#                 test notices: the test passes on the chapter as it is, and
#                 fails with the patch.
#   Runs: 3       (optional, with Expect: fail) the patch lets a race decide,
#                 and the test may miss it now and then: it must fail in one
#                 of this many runs.
#
# For each exercise this copies the repository (its tracked files, and new
# ones not ignored, as they are in the working tree) to a scratch directory,
# target/exercise/tree, runs the test there, applies the patch with
# `git apply`, runs the test again, and takes the patch back out with
# `git apply -R`. The copy keeps its own target directory
# (target/exercise/target), builds in debug, and is brought up to date file
# by file, so a run after the first rebuilds only what changed. Nothing in
# the working tree or in its target/ is touched.
#
# A test that skips itself where the system lacks what it needs (io_uring:
# the line `skipping: ...` on stderr) makes the exercise skipped, not failed.
#
# With --after-tests, an exercise whose test must pass on the chapter as it
# is (Expect: fail) runs it only with its patch: for CI, whose `cargo test
# --workspace` has just run every such test on the same tree (the ignored
# ones, Expect: pass, it does not run, so those still run both ways).
#
# Usage: bash book/exercise.sh chNN-K...   check these exercises
#        bash book/exercise.sh --all       check every solution
#        bash book/exercise.sh --list      list the solutions and their tests
#        bash book/exercise.sh --after-tests --all   (CI)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
solutions=$root/book/solutions

usage() {
    sed -n 's/^# Usage: bash/usage: bash/p; s/^#        bash/       bash/p' "$0" >&2
    exit 2
}

# Every solution, in chapter and exercise order: ch06-2 before ch06-10.
all_ids() {
    find "$solutions" -maxdepth 1 -name 'ch[0-9][0-9]-*.patch' -printf '%f\n' 2>/dev/null |
        sed 's/\.patch$//' | sort -t- -k1,1 -k2,2n
}

# Reads a patch's header into $test_line and $expect; fails naming what is wrong.
read_header() { # id
    local patch=$solutions/$1.patch
    test_line=$(sed -n '/^diff --git /q; s/^Test: *//p' "$patch")
    expect=$(sed -n '/^diff --git /q; s/^Expect: *//p' "$patch")
    runs=$(sed -n '/^diff --git /q; s/^Runs: *//p' "$patch")
    runs=${runs:-1}
    if ! [[ $runs =~ ^[1-9]$ ]] || { [ "$runs" -gt 1 ] && [ "$expect" != fail ]; }; then
        echo "$patch: 'Runs:' is a number from 1 to 9, and only for Expect: fail" >&2
        return 1
    fi
    if [[ $test_line != "cargo test "* ]] || [ "$(wc -l <<<"$test_line")" -ne 1 ]; then
        echo "$patch: want one line 'Test: cargo test ...' before the diff" >&2
        return 1
    fi
    if [ "$expect" != pass ] && [ "$expect" != fail ]; then
        echo "$patch: want 'Expect: pass' or 'Expect: fail' before the diff" >&2
        return 1
    fi
    grep -q '^diff --git ' "$patch" || {
        echo "$patch: no diff in it" >&2
        return 1
    }
}

after_tests=0
if [ "${1:-}" = --after-tests ]; then
    after_tests=1
    shift
fi
if [ $# -eq 0 ]; then
    usage
fi
case $1 in
    --list)
        for id in $(all_ids); do
            read_header "$id" || exit 1
            printf '%-8s %s  (%s)\n' "$id" "$test_line" \
                "$([ "$expect" = pass ] && echo 'fails before, passes after' || echo 'passes before, fails after')"
        done
        exit 0
        ;;
    --all)
        # Solutions that patch what every chapter builds on (common/) go
        # last: taking such a patch out makes cargo rebuild all that uses it.
        mapfile -t ids < <(for id in $(all_ids); do
            grep -q '^diff --git a/chapters/' "$solutions/$id.patch" &&
                ! grep -q '^diff --git a/[^c]\|^diff --git a/c[^h]' "$solutions/$id.patch" &&
                echo "0 $id" || echo "1 $id"
        done | sort -s -k1,1n | cut -d' ' -f2)
        ;;
    -*) usage ;;
    *)
        ids=()
        for arg in "$@"; do
            id=$(basename "$arg" .patch)
            if [ ! -f "$solutions/$id.patch" ]; then
                echo "no solution $id: there is no book/solutions/$id.patch (see \`just exercise\`)" >&2
                exit 2
            fi
            ids+=("$id")
        done
        ;;
esac
[ ${#ids[@]} -gt 0 ] || {
    echo "no solutions in book/solutions" >&2
    exit 1
}
for id in "${ids[@]}"; do
    read_header "$id" || exit 1
done

target=${CARGO_TARGET_DIR:-$root/target}
[[ $target == /* ]] || target=$root/$target
work=$target/exercise
tree=$work/tree
mkdir -p "$tree"
export CARGO_TARGET_DIR=$work/target
export CARGO_TERM_COLOR=never
exec 9>"$work/lock"
if ! flock -n 9; then
    echo "another run of book/exercise.sh uses $work: waiting for it" >&2
    flock 9
fi

# The copy's own repository: git apply works there, and never climbs up to
# the working tree's.
[ -d "$tree/.git" ] || git -C "$tree" init -q

# Brings the copy up to date with the working tree. Only files that differ
# are written, so cargo, which goes by modification times, rebuilds what
# changed and nothing else (an earlier run's patched files included).
sync_tree() {
    local file
    declare -A wanted=()
    while IFS= read -r -d '' file; do
        [ -f "$root/$file" ] || continue # deleted in the working tree
        wanted[$file]=1
        if ! cmp -s "$root/$file" "$tree/$file"; then
            mkdir -p "$(dirname "$tree/$file")"
            rm -f "$tree/$file"
            cp "$root/$file" "$tree/$file"
        fi
    done < <(git -C "$root" ls-files -z --cached --others --exclude-standard)
    while IFS= read -r -d '' file; do
        file=${file#./}
        [ -n "${wanted[$file]:-}" ] || rm -f "$tree/$file"
    done < <(cd "$tree" && find . -path ./.git -prune -o -type f -print0)
    # A directory left empty (a chapter renamed since the last copy) would
    # still match the workspace's `chapters/*`, and stop cargo.
    find "$tree" -mindepth 1 -depth -type d -empty -not -path "$tree/.git*" -delete
}

log=$work/last.log
# Runs the test (cargo builds what changed first); sets $outcome to passed,
# failed or skipped, or says why it can be neither and returns 1.
run_test() { # what
    local -a cmd
    read -ra cmd <<<"$test_line"
    local status=0
    (cd "$tree" && timeout 600 "${cmd[@]}") >"$log" 2>&1 || status=$?
    if grep -q '^error: could not compile' "$log"; then
        grep -E -A12 '^error(\[|:)' "$log" | head -n 40 | sed 's/^/    | /'
        echo "  $1: does not build" >&2
        return 1
    fi
    if grep -q '^skipping: ' "$log"; then
        outcome=skipped
        skip_reason=$(grep -m1 '^skipping: ' "$log")
        return 0
    fi
    local passed failed
    read -r passed failed < <(awk '/^test result: / {
        for (i = 1; i < NF; i++) {
            if ($(i + 1) == "passed;") p += $i
            if ($(i + 1) == "failed;") f += $i
        }
    } END { print p + 0, f + 0 }' "$log")
    if [ "$status" -eq 124 ]; then
        tail -n 30 "$log" | sed 's/^/    | /'
        echo "  $1: the test ran for 10 minutes: stopped" >&2
        return 1
    fi
    if [ $((passed + failed)) -ne 1 ]; then
        tail -n 30 "$log" | sed 's/^/    | /'
        echo "  $1: the Test line ran $passed passing and $failed failing tests; it must name exactly one" >&2
        return 1
    fi
    if [ "$failed" -eq 1 ]; then outcome=failed; else outcome=passed; fi
}

applied=""
cleanup() {
    if [ -n "$applied" ]; then
        git -C "$tree" apply -R "$applied" || echo "could not take $applied back out of $tree" >&2
    fi
}
trap cleanup EXIT

started=$SECONDS
echo "exercise: copying the working tree to $tree (cargo's target: $CARGO_TARGET_DIR)"
sync_tree
checked=0 skipped=0 broken=()
for id in "${ids[@]}"; do
    patch=$solutions/$id.patch
    read_header "$id"
    if [ "$expect" = pass ]; then want_before=failed want_after=passed; else want_before=passed want_after=failed; fi
    t0=$SECONDS
    echo
    echo "$id: $(sed -n '/^diff --git /q; s/^Exercise [^:]*: *//p' "$patch")"
    echo "  test: $test_line"
    # The copy is the working tree: a reader's own attempt at the exercise
    # is in it, and changes what the test sees before the patch.
    mapfile -t touched < <(git apply --numstat "$patch" | awk '{ print $3 }')
    if ! git -C "$root" diff --quiet HEAD -- "${touched[@]}" 2>/dev/null; then
        echo "  note: you have changed $(git -C "$root" diff --name-only HEAD -- "${touched[@]}" | paste -sd' '):"
        echo "  the copy has your version; \`git stash\` first to check the solution against the chapter as it is"
    fi
    # ok: 1 so far so good, 0 failed, 2 skipped (the test skipped itself).
    ok=1
    if [ "$after_tests" = 1 ] && [ "$expect" = fail ]; then
        echo "  without the solution: passed in the workspace's tests (--after-tests)"
    elif ! run_test "without the solution"; then
        ok=0
    elif [ "$outcome" = skipped ]; then
        ok=2
    elif [ "$outcome" != "$want_before" ]; then
        tail -n 30 "$log" | sed 's/^/    | /'
        echo "  without the solution the test $outcome; it should have $want_before" >&2
        ok=0
    else
        echo "  without the solution: the test $outcome, as it should"
    fi
    if [ "$ok" = 1 ] && ! git -C "$tree" apply --check "$patch" 2>"$log"; then
        sed 's/^/    | /' "$log"
        echo "  book/solutions/$id.patch no longer applies to the repository" >&2
        ok=0
    fi
    if [ "$ok" = 1 ]; then
        git -C "$tree" apply "$patch"
        applied=$patch
        echo "  applied book/solutions/$id.patch to the copy: $(git -C "$tree" apply --numstat "$patch" |
            awk '{ printf "%s%s (+%s -%s)", sep, $3, $1, $2; sep = ", " }')"
        # A solution is code to read: formatted as the rest is.
        mapfile -t changed < <(git -C "$tree" apply --numstat "$patch" | awk '$3 ~ /\.rs$/ { print $3 }')
        if [ ${#changed[@]} -gt 0 ] && command -v rustfmt >/dev/null &&
            ! (cd "$tree" && rustfmt --check --color never --edition 2021 "${changed[@]}") >"$log" 2>&1; then
            head -n 30 "$log" | sed 's/^/    | /'
            echo "  the solution is not formatted as cargo fmt would (above)" >&2
            ok=0
        elif ! run_test "with the solution"; then
            ok=0
        else
            # A race may hide what the patch breaks: again, up to $runs runs.
            for ((run = 2; run <= runs; run++)); do
                [ "$outcome" = passed ] && [ "$want_after" = failed ] || break
                echo "  with the solution the test passed (the race went the other way): run $run of $runs"
                run_test "with the solution" || {
                    ok=0
                    break
                }
            done
            if [ "$ok" = 0 ]; then
                :
            elif [ "$outcome" = skipped ]; then
                ok=2
            elif [ "$outcome" != "$want_after" ]; then
                tail -n 30 "$log" | sed 's/^/    | /'
                echo "  with the solution the test $outcome; it should have $want_after" >&2
                ok=0
            else
                echo "  with the solution: the test $outcome, as it should"
            fi
        fi
        git -C "$tree" apply -R "$patch"
        applied=""
        echo "  took the patch back out"
    fi
    case $ok in
        1)
            checked=$((checked + 1))
            echo "  ok ($((SECONDS - t0)) s)"
            ;;
        2)
            skipped=$((skipped + 1))
            echo "  skipped: the test says '${skip_reason#skipping: }'"
            ;;
        *)
            broken+=("$id")
            echo "  FAILED ($((SECONDS - t0)) s)"
            ;;
    esac
done

echo
summary="$checked checked, $skipped skipped, ${#broken[@]} failed, in $((SECONDS - started)) s"
if [ ${#broken[@]} -gt 0 ]; then
    echo "exercise: $summary: ${broken[*]}" >&2
    exit 1
fi
echo "exercise: $summary"
