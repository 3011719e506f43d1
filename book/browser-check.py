#!/usr/bin/env python3
"""The built book as a reader meets it: in a real browser (headless Chromium,
driven through WebDriver by chromedriver). Fails (exit 1), naming the page and
the reason, if:

  1. a page of SUMMARY.md logs a JavaScript console error, or a request it
     makes fails (a missing SVG, script, style sheet or font);
  2. an image or SVG on a page renders at zero size;
  3. a table or code block is wider than the content column at a 1280x800
     window (a reader would have to scroll it sideways);
  4. a folded diff (<details>) does not show its code when its summary is
     clicked;
  5. the search box does not find EAGAIN, or its first result leads to a page
     without it;
  6. print.html misses a chapter, or fails as in 1 and 2.

It also leaves screenshots of three pages in BOOK/browser-check/, so a person
can look. Needs the Debian packages chromium and chromium-driver, and nothing
but Python's standard library: the WebDriver protocol is plain JSON over HTTP.

Usage: python3 book/browser-check.py [BOOK_DIR] [--pages a.html,b.html]
BOOK_DIR defaults to book/book (build it with `just book` first); --pages
checks only those pages of SUMMARY.md (the search and print checks still run).
"""

import argparse
import base64
import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
WINDOW = (1280, 800)
# Pages to look at, each scrolled to a heading: prose, a figure, the tables.
SCREENSHOTS = {
    "introduction.html": "introduction",
    "ch06-poll.html": "the-connection-and-its-states",
    "benchmarks.html": "the-results",
}
SEARCH_TERM = "EAGAIN"
# As root on a machine without a network, Chromium needs all of these: no
# sandbox (root), and no background connections (they are refused, loudly).
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    f"--window-size={WINDOW[0]},{WINDOW[1]}",
]


class WebDriverError(Exception):
    pass


class Browser:
    """The few WebDriver commands this check needs, as chromedriver speaks them."""

    def __init__(self, driver_url, user_data_dir):
        self.base = driver_url
        chromium = shutil.which("chromium") or "/usr/bin/chromium"
        caps = {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": CHROMIUM_FLAGS + [f"--user-data-dir={user_data_dir}"],
            },
            # Console messages and the network events of every request.
            "goog:loggingPrefs": {"browser": "ALL", "performance": "ALL"},
            "timeouts": {"pageLoad": 30_000, "script": 15_000, "implicit": 0},
        }
        value = self._call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})
        self.base += "/session/" + value["sessionId"]

    def _call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base + path, data=data, method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.load(response)["value"]
        except urllib.error.HTTPError as e:
            value = json.load(e).get("value", {})
            message = (value.get("message") or "").splitlines()
            raise WebDriverError(
                f"{value.get('error', e.code)}: {message[0] if message else ''}"
            ) from None

    def get(self, url):
        self._call("POST", "/url", {"url": url})

    def run(self, script, *args):
        """Runs an async function body in the page; returns what it returns."""
        wrapped = (
            "const done = arguments[arguments.length - 1];"
            f"(async (...args) => {{ {script} }})(...Array.from(arguments).slice(0, -1))"
            ".then(done, e => done({scriptError: String(e && e.stack || e)}));"
        )
        value = self._call("POST", "/execute/async", {"script": wrapped, "args": list(args)})
        if isinstance(value, dict) and "scriptError" in value:
            raise WebDriverError("script failed: " + value["scriptError"])
        return value

    def find(self, css):
        value = self._call("POST", "/element", {"using": "css selector", "value": css})
        return next(iter(value.values()))

    def click(self, element):
        self._call("POST", f"/element/{element}/click", {})

    def type(self, element, text):
        self._call("POST", f"/element/{element}/value", {"text": text})

    def logs(self, kind):
        """Drains the log: each call returns what came since the last."""
        return self._call("POST", "/se/log", {"type": kind})

    def screenshot(self, path):
        with open(path, "wb") as f:
            f.write(base64.b64decode(self._call("GET", "/screenshot")))

    def quit(self):
        try:
            self._call("DELETE", "")
        except (WebDriverError, OSError):
            pass


def serve(directory):
    """Serves the book on 127.0.0.1 (a free port), as `mdbook serve` would."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=directory)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def start_chromedriver():
    driver = shutil.which("chromedriver")
    if not driver:
        sys.exit("browser check: chromedriver not found (apt-get install chromium chromium-driver)")
    # With --port=0 it takes a free port for IPv6, then exits if that port
    # is taken on IPv4 (seen one start in twenty): try again a few times.
    for _ in range(5):
        proc = subprocess.Popen(
            [driver, "--port=0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        said = []
        # It says which port it took once it listens.
        for line in proc.stdout:
            said.append(line)
            found = re.search(r"started successfully on port (\d+)", line)
            if found:
                threading.Thread(target=proc.stdout.read, daemon=True).start()
                return proc, f"http://127.0.0.1:{found.group(1)}"
        proc.wait()
        if not any("port not available" in line for line in said):
            break
    sys.exit("browser check: chromedriver exited before listening:\n" + "".join(said))


def summary_pages():
    with open(os.path.join(HERE, "src", "SUMMARY.md")) as f:
        return [
            re.sub(r"\.md$", ".html", path)
            for path in re.findall(r"\]\(([^)]+\.md)\)", f.read())
        ]


# The address of every request seen, by id, and those already reported for
# an HTTP error (Chromium then also says the load was aborted).
REQUESTS = {}
ANSWERED = set()


def page_problems(browser):
    """Console errors and failed requests since the last call. A request that
    started before the first page (Chromium's own start page) is not ours."""
    problems = []
    for entry in browser.logs("browser"):
        # A failed load is also logged here; the network events below say
        # it more exactly, once.
        if entry.get("level") == "SEVERE" and entry.get("source") != "network":
            problems.append("console error: " + entry.get("message", "")[:300])
    for entry in browser.logs("performance"):
        message = json.loads(entry["message"])["message"]
        method, params = message.get("method"), message.get("params", {})
        if method == "Network.requestWillBeSent":
            REQUESTS[params["requestId"]] = params["request"]["url"]
        elif method == "Network.responseReceived":
            status = params["response"]["status"]
            if status >= 400:
                ANSWERED.add(params["requestId"])
                problems.append(f"request failed: {params['response']['url']} (HTTP {status})")
        elif (
            method == "Network.loadingFailed"
            and params["requestId"] in REQUESTS
            and params["requestId"] not in ANSWERED
        ):
            url = REQUESTS[params["requestId"]]
            problems.append(f"request failed: {url} ({params.get('errorText')})")
    return problems


# Runs in the page once it has loaded: fonts that failed, images at zero size,
# and (if args[0]) tables and code blocks wider than the column, folded blocks
# opened first so that what they hide is measured too.
MEASURE = """
await document.fonts.ready;
const out = [];
for (const font of document.fonts) {
    if (font.status === 'error') out.push(`font failed to load: ${font.family} ${font.weight} ${font.style}`);
}
const main = document.querySelector('main');
if (!main) return ['no <main> element: not an mdBook page?'];
for (const d of main.querySelectorAll('details')) d.open = true;
const short = (text) => text.replace(/\\s+/g, ' ').trim().slice(0, 70);
// mdBook shows each image once and keeps a hidden copy for its zoomed view:
// every image must load, and every one that is visible must have a size.
const shown = new Map();
for (const img of main.querySelectorAll('img')) {
    await img.decode().catch(() => {});
    const r = img.getBoundingClientRect();
    const src = img.getAttribute('src');
    if (!img.complete || img.naturalWidth === 0) out.push(`image did not load: ${src}`);
    else if (img.checkVisibility() && (r.width < 1 || r.height < 1)) out.push(`image renders at ${r.width}x${r.height}: ${src}`);
    shown.set(src, (shown.get(src) || 0) + (r.width >= 1 && r.height >= 1 ? 1 : 0));
}
for (const [src, count] of shown) {
    if (!count) out.push(`image is never shown: ${src}`);
}
for (const svg of main.querySelectorAll('svg')) {
    const r = svg.getBoundingClientRect();
    if (r.width < 1 || r.height < 1) out.push(`inline SVG renders at ${r.width}x${r.height}`);
}
if (!args[0]) return out;
const column = main.clientWidth;
for (const table of main.querySelectorAll('table')) {
    const width = Math.max(table.scrollWidth, table.getBoundingClientRect().width);
    if (width > column + 1) {
        out.push(`table wider than the column (${Math.round(width)}px > ${column}px): ` +
                 short(table.rows[0] ? table.rows[0].innerText : ''));
    }
}
for (const pre of main.querySelectorAll('pre')) {
    const code = pre.querySelector('code') || pre;
    const width = Math.max(pre.scrollWidth, code.scrollWidth, pre.getBoundingClientRect().width);
    if (width > column + 1) {
        const longest = code.innerText.split('\\n').reduce((a, b) => (b.length > a.length ? b : a), '');
        out.push(`code block wider than the column (${Math.round(width)}px > ${column}px): ${short(longest)}`);
    }
}
return out;
"""

# Checks that a <details> is folded, then (after a real click on its summary)
# shows its code.
DETAILS_STATE = """
const d = document.querySelector('main details');
const body = d && d.querySelector(':scope > :not(summary)');
return d && {open: d.open, shown: body ? body.getBoundingClientRect().height : -1};
"""


def wait_for(browser, script, *args, timeout=10.0):
    """Polls a condition in the page, once per frame, up to a deadline."""
    return browser.run(
        f"""
        const deadline = performance.now() + {timeout * 1000};
        for (;;) {{
            const value = (() => {{ {script} }})();
            if (value || performance.now() > deadline) return value;
            await new Promise(r => requestAnimationFrame(r));
        }}""",
        *args,
    )


def check_page(browser, base, page, failures, titles, shots):
    browser.get(f"{base}/{page}")
    problems = []
    if browser.run("return document.querySelectorAll('main details').length"):
        state = browser.run(DETAILS_STATE)
        if state["open"]:
            problems.append("folded diff is open before a click")
        browser.click(browser.find("main details > summary"))
        state = browser.run(DETAILS_STATE)
        if not state["open"] or state["shown"] <= 0:
            problems.append(f"folded diff does not open on a click ({state})")
    problems += browser.run(MEASURE, True)
    titles[page] = browser.run("const h = document.querySelector('main h1'); return h && h.innerText")
    if not titles[page]:
        problems.append("no <h1> title")
    problems += page_problems(browser)
    if page in SCREENSHOTS:
        if not browser.run("const h = document.getElementById(args[0]);"
                           "if (h) h.scrollIntoView(); return !!h", SCREENSHOTS[page]):
            problems.append(f"no #{SCREENSHOTS[page]} to take a screenshot of")
        path = os.path.join(shots, page.replace(".html", ".png"))
        browser.screenshot(path)
    failures += [f"{page}: {p}" for p in dict.fromkeys(problems)]


def check_search(browser, base, failures):
    browser.get(f"{base}/index.html")
    browser.click(browser.find("#mdbook-search-toggle"))
    browser.type(browser.find("#mdbook-searchbar"), SEARCH_TERM)
    found = wait_for(
        browser,
        "const a = document.querySelector('#mdbook-searchresults li a');"
        "return a && a.getAttribute('href');",
    )
    problems = page_problems(browser)
    if not found:
        problems.append(f"searching for {SEARCH_TERM} shows no result")
    else:
        target = urllib.parse.urljoin(f"{base}/index.html", found).split("#")[0].split("?")[0]
        browser.click(browser.find("#mdbook-searchresults li a"))
        landed = wait_for(
            browser,
            "return document.readyState === 'complete'"
            " && location.href.split(/[?#]/)[0] === args[0]",
            target,
        )
        text = browser.run("const m = document.querySelector('main'); return m ? m.innerText : ''")
        if not landed:
            problems.append(f"the first result for {SEARCH_TERM} ({found}) leads nowhere")
        elif SEARCH_TERM not in text:
            problems.append(f"the first result for {SEARCH_TERM} leads to {found}, which lacks it")
        problems += page_problems(browser)
    failures += [f"search: {p}" for p in dict.fromkeys(problems)]


def check_print(browser, base, titles, failures):
    browser.get(f"{base}/print.html")
    # The same blocks as on their own pages: their widths are checked there.
    problems = browser.run(MEASURE, False)
    printed = set(browser.run(
        "return [...document.querySelectorAll('main h1')]"
        ".filter(h => h.getBoundingClientRect().height > 0).map(h => h.innerText)"
    ))
    for page, title in titles.items():
        if title and title not in printed:
            problems.append(f"misses the chapter {title!r} ({page})")
    problems += page_problems(browser)
    failures += [f"print.html: {p}" for p in dict.fromkeys(problems)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("book", nargs="?", default=os.path.join(HERE, "book"))
    parser.add_argument("--pages", help="only these pages of SUMMARY.md, comma-separated")
    args = parser.parse_args()
    started = time.monotonic()

    pages = summary_pages()
    if args.pages:
        wanted = args.pages.split(",")
        unknown = [p for p in wanted if p not in pages]
        if unknown:
            sys.exit(f"browser check: not in SUMMARY.md: {', '.join(unknown)}")
        pages = wanted
    missing = [p for p in pages + ["print.html"] if not os.path.exists(os.path.join(args.book, p))]
    if missing:
        sys.exit(f"browser check: {args.book} lacks {', '.join(missing)}: build the book first (just book)")
    shots = os.path.join(args.book, "browser-check")
    os.makedirs(shots, exist_ok=True)

    server = serve(args.book)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    driver, driver_url = start_chromedriver()
    failures, titles = [], {}
    with tempfile.TemporaryDirectory(prefix="book-chromium-") as profile:
        browser = None
        try:
            browser = Browser(driver_url, profile)
            # Drop what Chromium's own start-up page logged.
            browser.logs("browser")
            browser.logs("performance")
            size = browser.run("return [window.outerWidth, window.outerHeight]")
            if tuple(size) != WINDOW:
                failures.append(f"window is {size}, not {list(WINDOW)}")
            # A command the browser refuses (no search box, say) fails that
            # part only, named.
            parts = [(page, check_page, (page, failures, titles, shots)) for page in pages]
            parts += [("search", check_search, (failures,))]
            parts += [("print.html", check_print, (titles, failures))]
            for name, check, args in parts:
                try:
                    check(browser, base, *args)
                except WebDriverError as e:
                    failures.append(f"{name}: {e}")
        except WebDriverError as e:
            failures.append(f"browser: {e}")
        finally:
            if browser:
                browser.quit()
            driver.terminate()
            driver.wait()
            server.shutdown()

    for failure in failures:
        print(f"browser check: {failure}", file=sys.stderr)
    took = time.monotonic() - started
    if failures:
        print(f"browser check: {len(failures)} problem(s) in {took:.0f} s", file=sys.stderr)
        return 1
    shown = [p for p in SCREENSHOTS if p in pages]
    print(
        f"browser check: ok ({len(pages)} pages, search, print.html; "
        f"screenshots of {', '.join(shown) or 'none'} in {shots}) in {took:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
