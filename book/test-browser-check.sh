#!/usr/bin/env bash
# A test of book/browser-check.py: on a copy of the built book with pages
# broken on purpose, the check must fail, and name each page and reason.
# A check that passes on a broken book would be worse than none.
#
# Usage: bash book/test-browser-check.sh   (after `just book`)
set -euo pipefail
cd "$(dirname "$0")/.."

broken=$(mktemp -d)
trap 'rm -rf "$broken"' EXIT
cp -r book/book/. "$broken"

# ch06: a missing SVG, and a missing font (Open Sans regular is the body's).
rm "$broken/conn-states.svg" "$broken"/fonts/open-sans-v17-all-charsets-regular-*.woff2
# ch07: a script error, a missing script, a table and a code block too wide
# for the column (nothing in them can wrap).
wide=$(printf 'x%.0s' $(seq 300))
python3 - "$broken/ch07-epoll-lt.html" "$wide" <<'EOF'
import sys
path, wide = sys.argv[1], sys.argv[2]
page = open(path).read()
page = page.replace("<main>", "<main>"
    f'<table><tr><td style="white-space: nowrap">wide table {wide}</td></tr></table>'
    f'<pre><code style="white-space: pre; word-break: normal; overflow-wrap: normal">wide code {wide}</code></pre>', 1)
page = page.replace("</body>", '<script>notDefinedAnywhere();</script><script src="gone.js"></script></body>', 1)
open(path, "w").write(page)
EOF
# ch08: its folded diff stays empty when opened.
sed -i 's|</head>|<style>details > :not(summary) { display: none !important; }</style></head>|' \
    "$broken/ch08-batching.html"
# Search: the index still finds EAGAIN, but the pages no longer say it.
sed -i 's/EAGAIN/E_AGAIN/g' "$broken"/*.html
# print.html: chapter 7 is missing.
sed -i 's|<h1 id="7-epoll-level-triggered">.*</h1>||' "$broken/print.html"

out=$(mktemp)
trap 'rm -rf "$broken" "$out"' EXIT
status=0
python3 book/browser-check.py "$broken" --pages ch06-poll.html,ch07-epoll-lt.html,ch08-batching.html \
    >"$out" 2>&1 || status=$?

errors=0
expect() {
    grep -qF -- "$1" "$out" || { echo "test-browser-check: missing: $1" >&2; errors=$((errors + 1)); }
}
expect "ch06-poll.html: request failed: http://127.0.0.1:"
expect "/conn-states.svg (HTTP 404)"
expect "ch06-poll.html: image did not load: conn-states.svg"
expect "ch06-poll.html: font failed to load: Open Sans 400 normal"
expect "ch07-epoll-lt.html: console error:"
expect "notDefinedAnywhere is not defined"
expect "/gone.js (HTTP 404)"
expect "ch07-epoll-lt.html: table wider than the column"
expect "ch07-epoll-lt.html: code block wider than the column"
expect "ch08-batching.html: folded diff does not open on a click"
expect "search: the first result for EAGAIN leads to "
expect ", which lacks it"
expect "print.html: misses the chapter '7. epoll, level-triggered' (ch07-epoll-lt.html)"
if [ "$status" -ne 1 ] || [ "$errors" -ne 0 ]; then
    cat "$out" >&2
    echo "test-browser-check: FAILED (the check exited $status on a broken book; want 1)" >&2
    exit 1
fi
echo "test-browser-check: ok (the check fails on each broken page, and says why)"
