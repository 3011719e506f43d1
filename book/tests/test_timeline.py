#!/usr/bin/env python3
"""Tests book/capture/timeline.py, the renderer of the book's system-call
timelines, on two small traces made by hand (book/tests/timeline/): how it
reads strace's lines, which lane and label each call gets, the window
rules, the cut-out breaks, and that the same trace always gives the same
picture: the one checked in beside them (expected.svg).

CI runs it (.ci/run). Usage: python3 book/tests/test_timeline.py
After a deliberate change to the drawing, rewrite the expected picture with
    python3 book/capture/timeline.py render book/tests/timeline/one-connection.txt \\
        book/tests/timeline/two-threads.txt -o book/tests/timeline/expected.svg
and look at it before committing it.
"""

import contextlib
import io
import os
import re
import shutil
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "capture"))
import timeline  # noqa: E402

FIXTURES = os.path.join(HERE, "timeline")
ONE = os.path.join(FIXTURES, "one-connection.txt")
TWO = os.path.join(FIXTURES, "two-threads.txt")
EXPECTED = os.path.join(FIXTURES, "expected.svg")


def calls_of(path):
    with open(path, encoding="utf-8") as f:
        return timeline.analyse(timeline.parse(f)).calls


def by_text(calls, start):
    return next(c for c in calls if c.text.startswith(start))


class Parsing(unittest.TestCase):
    def test_a_call_has_its_start_duration_and_result(self):
        c = by_text(calls_of(ONE), "sendto(7, \"\\3")
        self.assertEqual(timeline.clock(c.start), "10:00:00.010300")
        self.assertEqual(c.end - c.start, 20)
        self.assertEqual((c.name, c.ret, c.err), ("sendto", 4, ""))

    def test_an_error_is_named(self):
        c = by_text(calls_of(ONE), "read(7, 0x")
        self.assertEqual((c.ret, c.err), (-1, "EAGAIN"))

    def test_an_unfinished_call_is_joined_with_its_resumption(self):
        calls = calls_of(TWO)
        accept = next(c for c in calls if c.name == "accept4" and c.pid == "201")
        self.assertEqual(timeline.clock(accept.start), "10:00:00.005030")
        self.assertEqual(accept.end - accept.start, 30)
        self.assertEqual(accept.ret, 9)
        self.assertEqual(accept.text, "accept4(5, NULL, NULL, SOCK_CLOEXEC|SOCK_NONBLOCK) = 9")
        # The call still waiting when the trace ends is not a call.
        self.assertEqual(len([c for c in calls if c.name == "epoll_wait" and c.pid == "201"]), 2)

    def test_calls_are_in_the_order_they_started(self):
        starts = [c.start for c in calls_of(TWO)]
        self.assertEqual(starts, sorted(starts))


class Lanes(unittest.TestCase):
    def test_each_descriptor_is_named_for_what_made_it(self):
        calls = calls_of(ONE)
        kinds = {c.fd: c.kind for c in calls if c.fd is not None}
        self.assertEqual(kinds[3], "signalfd")
        self.assertEqual(kinds[4], "listener")
        self.assertEqual(kinds[6], "epoll")
        self.assertEqual(kinds[7], "connection")

    def test_epoll_ctl_belongs_to_the_descriptor_it_changes(self):
        ctl = by_text(calls_of(ONE), "epoll_ctl(6, EPOLL_CTL_MOD")
        self.assertEqual(ctl.fd, 7)

    def test_panels_by_descriptor_and_by_thread(self):
        one = timeline.make_panel(ONE)
        self.assertEqual([name for _, name in one.lanes], ["epoll (fd 6)", "connection (fd 7)"])
        two = timeline.make_panel(TWO)
        self.assertEqual([name for _, name in two.lanes], ["thread 1", "thread 2"])


class Labels(unittest.TestCase):
    def setUp(self):
        with open(ONE, encoding="utf-8") as f:
            self.trace = timeline.analyse(timeline.parse(f))

    def said(self, start):
        return timeline.result(by_text(self.trace.calls, start))

    def test_results(self):
        self.assertEqual(self.said('sendto(7, "\\3'), "4 of 7")  # short
        self.assertEqual(self.said('sendto(7, "one"'), "3")
        self.assertEqual(self.said("read(7, 0x"), "EAGAIN")
        self.assertEqual(self.said('read(7, ""'), "EOF")
        self.assertEqual(self.said("accept4"), "fd 7")
        self.assertEqual(self.said("epoll_ctl(6, EPOLL_CTL_MOD"), "MOD OUT")

    def test_an_event_names_its_descriptor_by_the_data_it_was_added_with(self):
        self.assertEqual(self.said("epoll_wait(6, [{events=EPOLLOUT"), "conn 7: OUT")
        self.assertEqual(self.said("epoll_wait(6, [{events=EPOLLIN, data={u32=4294967294"),
                         "listener: IN")


class Windows(unittest.TestCase):
    def window(self, path, **rule):
        with open(path, encoding="utf-8") as f:
            begin, end = timeline.window(timeline.parse(f), **rule)
        return timeline.clock(begin), timeline.clock(end)

    def test_from_a_call_to_a_later_one(self):
        # From the short send (its length, then a different result) to the
        # send after the next read that found nothing.
        short = r'^sendto\(\d+, "[^"]*"(?:\.\.\.)?, (\d+), [^)]*\) = (?!\1$)\d+$'
        self.assertEqual(self.window(ONE, start=short, end=r"^read\(\d+, 0x", extra=1),
                         ("10:00:00.010300", "10:00:00.050508"))

    def test_back_and_nth(self):
        self.assertEqual(self.window(ONE, start=r'^read\(\d+, "', back=1, end=r"^read\(@2"),
                         ("10:00:00.010200", "10:00:00.050458"))

    def test_start_after_counts_calls_as_they_end(self):
        # Thread 2's wait started later but ended first.
        self.assertEqual(self.window(TWO, start_after=r"^epoll_wait\(\d+, \[", end=r"^accept4.*= 9",
                                     lead=10, lag=5),
                         ("10:00:00.004980", "10:00:00.005065"))

    def test_a_rule_that_matches_nothing_fails_loudly(self):
        with self.assertRaises(SystemExit), contextlib.redirect_stderr(io.StringIO()):
            self.window(ONE, start=r"^io_uring_enter", end=r"^read")


class Drawing(unittest.TestCase):
    def test_a_long_wait_is_cut_out_and_says_how_long(self):
        panel = timeline.make_panel(ONE)
        self.assertEqual(panel.breaks, [(timeline.micros("10:00:00.010400"),
                                         timeline.micros("10:00:00.050400"))])
        svg = timeline.render([ONE])
        self.assertIn(">40.0 ms<", svg)

    def test_calls_cut_by_the_window_are_marked(self):
        svg = timeline.render([TWO])
        self.assertIn(">…epoll_wait<", svg)  # began before the window
        self.assertIn(">…<", svg)  # had not returned by its end

    def test_every_call_has_its_strace_line_as_a_tooltip(self):
        svg = timeline.render([ONE])
        self.assertIn("<title>10:00:00.010300 sendto(7, &quot;\\3\\0\\0\\0one&quot;, 7, "
                      "MSG_NOSIGNAL, NULL, 0) = 4 &lt;20 µs&gt;</title>", svg)

    def test_panels_share_one_scale(self):
        svg = timeline.render([ONE, TWO])
        widths = {}
        for m in re.finditer(r'width="([\d.]+)" height="14"[^>]*><title>\S+ (\w+)\(.*? &lt;(\d+) µs&gt;', svg):
            widths.setdefault(m.group(3), set()).add(m.group(1))
        # Boxes of calls that took equally long are equally wide, in either panel.
        self.assertEqual(len(widths["10"]), 1, widths["10"])

    def test_the_same_trace_draws_the_same_picture(self):
        self.assertEqual(timeline.render([ONE, TWO]), timeline.render([ONE, TWO]))
        with open(EXPECTED, encoding="utf-8") as f:
            expected = f.read()
        self.assertEqual(timeline.render([ONE, TWO]), expected,
                         "the drawing changed: see this file's docstring to rewrite expected.svg")


class Check(unittest.TestCase):
    def test_check_passes_a_fresh_picture_and_fails_a_stale_one(self):
        tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, tmp)
        svg = os.path.join(tmp, "t.svg")
        shutil.copy(EXPECTED, svg)
        with contextlib.redirect_stdout(io.StringIO()):
            self.assertEqual(timeline.main(["check", svg]), 0)
        with open(svg, encoding="utf-8") as f:
            text = f.read()
        with open(svg, "w", encoding="utf-8") as f:
            f.write(text.replace(">4 of 7<", ">7<"))
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            self.assertEqual(timeline.main(["check", svg]), 1)
        self.assertIn("is not what its captures draw", err.getvalue())


if __name__ == "__main__":
    unittest.main(verbosity=1)
