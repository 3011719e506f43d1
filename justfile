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

# Build and run a chapter's server; extra arguments go to it: just run ch06 --addr 127.0.0.1:0
[continue]
run chapter *args:
    @cargo build --release -p {{chapter}} --bin {{chapter}}
    @exec "${CARGO_TARGET_DIR:-target}/release/{{chapter}}" "${@:2}"

# Send messages to a running server and print the replies: just client hello world
client *args:
    @cargo build --release -p client
    @exec "${CARGO_TARGET_DIR:-target}/release/client" "$@"

# Run every test: the same command CI runs.
test:
    cargo test --workspace

# Show what changed between two chapters (moved lines dimmed): just diff ch06 ch07
diff from to:
    @bash book/diff-chapters.sh "$1" "$2" --color=auto --color-moved=dimmed-zebra

# Test any echo server with the suite (options before the command; see --help): just conform event_loop -- target/release/ch07
conform level *command:
    @cargo run --quiet --release -p conformance -- --level "$1" "${@:2}"

# Format, lint and test, as CI does.
check:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings
    cargo test --workspace

# Run the CI script locally.
ci:
    bash .ci/run

# Build the book into book/book: generate the chapter diffs, check includes, anchors and links, build.
book:
    bash book/gen-diffs.sh
    bash book/check.sh
    mdbook build book

# Build the book, then serve it on http://localhost:3000 (rerun to regenerate the diffs).
[continue]
serve-book: book
    @trap : INT; mdbook serve book || [ $? -eq 130 ]

# Check the book without keeping a build: missing includes or anchors, broken links.
book-check:
    bash book/gen-diffs.sh
    bash book/check.sh

# Benchmark every server against tokio (≈12 min on 2 cores; --quick for a smoke run): just bench --quick
bench *args:
    cargo run --release -p bench -- "$@"

# Chapter 15 beside redis-server, in alternating rounds (needs Redis's tools, see the README): just bench-redis
bench-redis:
    ROUNDS="${ROUNDS:-5}" bash book/capture-redis.sh bench-out/redis.txt

# Copy the last full `just bench` run (bench-out/) into the book's Benchmarks chapter; refuses a --quick run.
bench-publish:
    bash book/publish-bench.sh
