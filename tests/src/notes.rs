//! What a case leaves behind besides its panic message, recorded on the
//! case's own thread by the harness and collected by the runner: how a
//! server it started ended on its own, the tail of that server's stderr,
//! and where the failure was detected. All of it is bounded, so a server
//! that logs a megabyte cannot flood the report.

use std::cell::RefCell;

use crate::harness::describe_signal;

/// At most this many lines of a server's stderr, each at most this long.
const STDERR_LINES: usize = 12;
const LINE_CHARS: usize = 200;

/// A server ending that the case did not ask for, or asked for and got
/// the wrong way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Death {
    /// Killed by `signal`: one the harness sent to stop it (SIGINT,
    /// SIGTERM), or one it brought on itself (SIGPIPE, SIGSEGV...).
    Signal {
        signal: libc::c_int,
        sent_by_us: bool,
        broken_stderr: bool,
    },
    /// Exited although nobody asked it to stop.
    Status { code: i32, last_words: String },
}

impl Death {
    /// "the server died of signal 13 (SIGPIPE), writing to ...".
    pub fn sentence(&self) -> String {
        match *self {
            Death::Signal {
                signal,
                sent_by_us: true,
                ..
            } if is_stop_signal(signal) => format!(
                "the server died of {}, which the case sent to stop it: it has no handler for it",
                describe_signal(signal)
            ),
            Death::Signal {
                signal: libc::SIGPIPE,
                broken_stderr: true,
                ..
            } => format!(
                "the server died of {} writing to its stderr, a pipe nobody reads",
                describe_signal(libc::SIGPIPE)
            ),
            Death::Signal { signal, .. } => {
                format!("the server died of {}", describe_signal(signal))
            }
            Death::Status {
                code,
                ref last_words,
            } => format!(
                "the server exited with status {code} while the case still needed it{last_words}"
            ),
        }
    }
}

pub fn is_stop_signal(signal: libc::c_int) -> bool {
    signal == libc::SIGINT || signal == libc::SIGTERM
}

/// Everything recorded on this thread since the last [`take`].
#[derive(Default, Debug)]
pub struct Notes {
    pub deaths: Vec<Death>,
    /// Where the failing panic was raised: `tests/src/echo.rs:42`.
    pub location: Option<String>,
    /// The last lines of each dropped server's stderr, already bounded.
    pub stderr_tails: Vec<String>,
}

thread_local! {
    static NOTES: RefCell<Notes> = RefCell::new(Notes::default());
}

pub fn record_death(death: Death) {
    NOTES.with(|n| n.borrow_mut().deaths.push(death));
}

pub fn record_location(location: String) {
    NOTES.with(|n| {
        n.borrow_mut().location.get_or_insert(location);
    });
}

/// Keeps the end of a failing case's server stderr, if it wrote anything.
pub fn record_stderr(stderr: &str) {
    let tail = tail(stderr);
    if !tail.is_empty() {
        NOTES.with(|n| n.borrow_mut().stderr_tails.push(tail));
    }
}

/// Takes (and clears) what this thread recorded.
pub fn take() -> Notes {
    NOTES.with(|n| std::mem::take(&mut *n.borrow_mut()))
}

/// The last [`STDERR_LINES`] non-empty lines, each cut to [`LINE_CHARS`],
/// a line repeated in a row shown once with its count (a server logging
/// the same error in a busy loop).
fn tail(text: &str) -> String {
    let mut runs: Vec<(&str, usize)> = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match runs.last_mut() {
            Some((last, count)) if *last == line => *count += 1,
            _ => runs.push((line, 1)),
        }
    }
    let skipped = runs.len().saturating_sub(STDERR_LINES);
    let mut out = String::new();
    if skipped > 0 {
        let lines: usize = runs[..skipped].iter().map(|(_, n)| n).sum();
        out.push_str(&format!("({lines} earlier lines not shown)\n"));
    }
    for (line, count) in &runs[skipped..] {
        let cut: String = line.chars().take(LINE_CHARS).collect();
        out.push_str(&cut);
        if cut.len() < line.len() {
            out.push_str(" [...]");
        }
        if *count > 1 {
            out.push_str(&format!("  (this line {count} times)"));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tail_is_bounded() {
        let long: String = (0..10_000)
            .map(|i| format!("{i} {}\n", "x".repeat(10_000)))
            .collect();
        let tail = tail(&long);
        assert!(tail.len() < 3_000, "{} bytes", tail.len());
        assert!(tail.starts_with("(9988 earlier lines not shown)"), "{tail}");
        assert!(tail.lines().nth(1).unwrap().ends_with(" [...]"));
        let spin = "accept: Too many open files\n".repeat(50_000);
        assert_eq!(
            super::tail(&spin),
            "accept: Too many open files  (this line 50000 times)\n"
        );
    }

    #[test]
    fn deaths_are_sentences() {
        let pipe = Death::Signal {
            signal: libc::SIGPIPE,
            sent_by_us: false,
            broken_stderr: false,
        };
        assert_eq!(pipe.sentence(), "the server died of signal 13 (SIGPIPE)");
        let int = Death::Signal {
            signal: libc::SIGINT,
            sent_by_us: true,
            broken_stderr: false,
        };
        assert!(int
            .sentence()
            .contains("signal 2 (SIGINT), which the case sent"));
    }
}
