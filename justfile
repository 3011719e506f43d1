# echo-steps: a TCP echo server built in small, runnable, tested steps.
# `just` alone lists the recipes. Nothing here is needed to build or test:
# `cargo run -p ch06` and `cargo test --workspace` work without just.
# Needs just 1.54 or later (for `[continue]`: Ctrl-C on a server is how it
# ends, not an error).

set positional-arguments
set shell := ["bash", "-cu"]

# List the recipes.
default:
    @just --list --unsorted

# List the chapters with a one-line summary each.
chapters:
    #!/usr/bin/env bash
    for dir in chapters/*/; do
        name=$(sed -n 's/^name = "\(.*\)"/\1/p' "$dir/Cargo.toml" | head -1)
        desc=$(sed -n 's/^description = "\(.*\)"/\1/p' "$dir/Cargo.toml" | head -1)
        printf '%-6s %s\n' "$name" "$desc"
    done

# How a recipe reads a chapter's name: ch06, its directory ch06-poll, or
# chapters/ch06-poll/ (a shell's completion). `crate NAME` prints the crate's
# name (ch06), or says there is no such chapter and fails.
_crate := '''
crate() {
    local name=${1#chapters/}
    name=${name%/}
    local dirs=(chapters/"${name%%-*}"-*/)
    if [[ $name == ch[0-9]* && -d ${dirs[0]} && ($name != *-* || -d chapters/$name) ]]; then
        echo "${name%%-*}"
    else
        echo "no such chapter: $1 (see \`just chapters\`)" >&2
        return 2
    fi
}
'''

# Build and run a chapter's server; extra arguments go to it: just run ch06 --addr 127.0.0.1:0
[continue]
[no-exit-message]
run chapter *args:
    @{{ _crate }} c=$(crate "$1") && cargo build --release -p "$c" --bin "$c" && exec "${CARGO_TARGET_DIR:-target}/release/$c" "${@:2}"

# Send messages to a running server and print the replies: just client hello world
[no-exit-message]
client *args:
    @cargo build --release -p client
    @exec "${CARGO_TARGET_DIR:-target}/release/client" "$@"

# Run every test: the same command CI runs.
test:
    cargo test --workspace

# Show what a step changed, as the book does (indentation-only changes ignored): just diff ch06 ch07, or just diff ch16 (from the chapter its page compares with)
[no-exit-message]
diff from to="":
    @{{ _crate }} from=$(crate "$1") && to=${2:+$(crate "$2")} && bash book/diff-chapters.sh "$from" $to --color=auto --color-moved=dimmed-zebra --color-moved-ws=allow-indentation-change

# Test any echo server with the suite (options before the command; see --help): just conform event_loop -- target/release/ch07
[no-exit-message]
conform level *command:
    #!/usr/bin/env bash
    set -euo pipefail
    {{ _crate }}
    # A server of this workspace named by its path (target/release/ch07) is
    # built first, as `just run` builds its chapter: on a fresh clone the
    # README's example works as written.
    args=("${@:2}")
    for i in "${!args[@]}"; do
        [ "${args[i]}" = -- ] || continue
        server=${args[i + 1]:-}
        name=$(basename -- "$server")
        profile=$(basename -- "$(dirname -- "$server")")
        built=$(realpath -m -- "$(dirname -- "$server")")
        target=$(realpath -m -- "${CARGO_TARGET_DIR:-target}/$profile")
        if [[ $profile =~ ^(release|debug)$ && $built == "$target" ]] &&
            { crate "$name" >/dev/null 2>&1 || [ -f "tools/$name/Cargo.toml" ]; }; then
            flags=(-p "$name" --bin "$name")
            [ "$profile" = debug ] || flags+=(--release)
            echo "conform: building $server (cargo build ${flags[*]})" >&2
            cargo build "${flags[@]}"
        fi
        break
    done
    # Not --quiet: a cold build takes a while, and cargo says what it does.
    exec cargo run --release -p conformance -- --level "$1" "${@:2}"

# Format, lint and test, as CI does.
check:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings
    cargo test --workspace

# Run the CI script locally.
ci:
    bash .ci/run

# Check an exercise's solution on a scratch copy, its test before and after: just exercise ch06-3 (no argument: the list; all: every one)
[no-exit-message]
exercise *ids:
    #!/usr/bin/env bash
    case "${1:-}" in
        "") exec bash book/exercise.sh --list ;;
        all) exec bash book/exercise.sh --all ;;
        *) exec bash book/exercise.sh "$@" ;;
    esac

# Build the book into book/book: generate the chapter diffs, check includes, anchors and links, build.
book:
    bash book/gen-diffs.sh
    bash book/check.sh
    mdbook build book

# Build the book, then serve it on http://localhost:3000 (rerun to regenerate the diffs).
[continue]
serve-book: book
    @trap : INT; mdbook serve book || [ $? -eq 130 ]

# Open the built book in headless Chromium and check it as a reader meets it (needs chromium, chromium-driver).
book-browser-check: book
    python3 book/browser-check.py book/book

# Check the book without keeping a build: missing includes or anchors, broken links.
book-check:
    bash book/gen-diffs.sh
    bash book/check.sh

# Re-record every capture the book quotes (about an hour; needs strace, perf, valgrind, root, Redis's tools): just captures
captures:
    bash book/capture/all.sh

# Re-record one capture script's files: just capture threads (the scripts are in book/capture/)
capture name *args:
    bash "book/capture/$1.sh" "${@:2}"

# Benchmark every server against tokio: matrix, targets, open-loop latency (18–26 min on 2 cores; --quick: seconds)
bench *args:
    cargo run --release -p bench -- "$@"

# Chapter 17 beside redis-server, in alternating rounds (needs Redis's tools, see the README): just bench-redis
bench-redis:
    ROUNDS="${ROUNDS:-5}" bash book/capture/redis.sh bench-out/redis.txt

# Copy the last full `just bench` run (bench-out/) into the book's Benchmarks chapter; refuses a --quick run.
bench-publish:
    bash book/publish-bench.sh
