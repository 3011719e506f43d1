//! Where the book explains each failure. Every reference lives here, so a
//! renamed page or heading is fixed in one place, and the test at the end
//! of this file fails until it is.

use std::fmt;

/// A section of the book: a page in `book/src` and one of its headings,
/// written exactly as in the Markdown (backticks included).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BookRef {
    pub page: &'static str,
    pub heading: &'static str,
}

pub const HELLO_READ_SEND: BookRef = BookRef {
    page: "ch03-hello.md",
    heading: "`read` and `send`",
};
pub const HELLO_ACCEPT: BookRef = BookRef {
    page: "ch03-hello.md",
    heading: "`accept`",
};
pub const HELLO_WHAT_CAN_GO_WRONG: BookRef = BookRef {
    page: "ch03-hello.md",
    heading: "What can go wrong",
};
pub const HELLO_SIGNALS: BookRef = BookRef {
    page: "ch03-hello.md",
    heading: "Stopping on Ctrl-C: `EINTR`",
};
pub const CLOSE: BookRef = BookRef {
    page: "ch03-hello.md",
    heading: "`close`",
};
pub const FRAMING: BookRef = BookRef {
    page: "ch04-framing.md",
    heading: "The problem",
};
pub const SHORT_READS: BookRef = BookRef {
    page: "ch04-framing.md",
    heading: "Short reads: reading until a buffer is full",
};
pub const THE_STALL: BookRef = BookRef {
    page: "ch04-framing.md",
    heading: "The stall",
};
pub const THREADS: BookRef = BookRef {
    page: "ch05-threads.md",
    heading: "The problem",
};
pub const ONE_THREAD_MANY_CONNECTIONS: BookRef = BookRef {
    page: "ch06-poll.md",
    heading: "The problem",
};
pub const PARTIAL_WRITES: BookRef = BookRef {
    page: "ch06-poll.md",
    heading: "Reading, parsing, writing",
};
pub const SIGNALFD: BookRef = BookRef {
    page: "ch06-poll.md",
    heading: "Signals as a file descriptor: `signalfd`",
};
pub const TAKING_TURNS: BookRef = BookRef {
    page: "ch09-epoll-et.md",
    heading: "Taking turns",
};
pub const BATCHED_REPLIES: BookRef = BookRef {
    page: "ch08-batching.md",
    heading: "Many replies, one `send`",
};
pub const IDLE_BUFFERS: BookRef = BookRef {
    page: "ch08-batching.md",
    heading: "Buffers that cost memory only while busy",
};
pub const SPARE_DESCRIPTOR: BookRef = BookRef {
    page: "ch05-threads.md",
    heading: "Running out of descriptors",
};
pub const EMFILE: BookRef = BookRef {
    page: "what-can-go-wrong.md",
    heading: "Running out of file descriptors (`EMFILE`)",
};
pub const BACKPRESSURE: BookRef = BookRef {
    page: "what-can-go-wrong.md",
    heading: "The client that never reads (backpressure)",
};
pub const RESETS: BookRef = BookRef {
    page: "what-can-go-wrong.md",
    heading: "Peers that reset, and `SIGPIPE`",
};
pub const LYING_LENGTHS: BookRef = BookRef {
    page: "what-can-go-wrong.md",
    heading: "Lengths that lie, frames that stop halfway",
};
pub const HALF_CLOSE: BookRef = BookRef {
    page: "what-can-go-wrong.md",
    heading: "Half-close: \"no more requests\" is not \"goodbye\"",
};
pub const SIGNALS: BookRef = BookRef {
    page: "what-can-go-wrong.md",
    heading: "Signals: stopping on time",
};
pub const NAGLE: BookRef = BookRef {
    page: "what-can-go-wrong.md",
    heading: "Nagle's algorithm meets delayed ACKs",
};
pub const URGENT_DATA: BookRef = BookRef {
    page: "what-can-go-wrong.md",
    heading: "Urgent data, and the short read that lies",
};
pub const RESET_ON_CLOSE: BookRef = BookRef {
    page: "what-can-go-wrong.md",
    heading: "Closing with unread input: a reset, not a goodbye",
};
pub const BROKEN_STDERR: BookRef = BookRef {
    page: "what-can-go-wrong.md",
    heading: "A log line that kills the server",
};
pub const FD_LIMITS: BookRef = BookRef {
    page: "what-can-go-wrong.md",
    heading: "Soft and hard limits on open files",
};
pub const ACCEPT_ERRORS: BookRef = BookRef {
    page: "what-can-go-wrong.md",
    heading: "`accept` fails for reasons that are not ours",
};
pub const COMMAND_LINE: BookRef = BookRef {
    page: "what-can-go-wrong.md",
    heading: "Mistakes on the command line",
};
pub const BACKLOG: BookRef = BookRef {
    page: "what-can-go-wrong.md",
    heading: "A full accept queue",
};
pub const IDLE_TIMEOUT: BookRef = BookRef {
    page: "ch11-timers.md",
    heading: "The problem",
};
pub const ACTIVITY: BookRef = BookRef {
    page: "ch11-timers.md",
    heading: "What counts as activity",
};
pub const IDLE_LIST: BookRef = BookRef {
    page: "ch11-timers.md",
    heading: "The idle list",
};
pub const GRACEFUL_STOP: BookRef = BookRef {
    page: "ch06-poll.md",
    heading: "Stopping gracefully",
};

impl BookRef {
    /// The heading as it reads on the page, without Markdown.
    pub fn title(&self) -> String {
        self.heading.replace('`', "")
    }

    /// The id mdBook gives the heading: its text lowercased, spaces turned
    /// into `-`, punctuation other than `-` and `_` dropped.
    pub fn anchor(&self) -> String {
        anchor_of(&self.title())
    }

    /// `book/src/PAGE#ANCHOR`, relative to the repository.
    pub fn path(&self) -> String {
        format!("book/src/{}#{}", self.page, self.anchor())
    }

    /// "chapter 4" for a chapter's page, the page's name otherwise.
    pub fn part(&self) -> String {
        let stem = self.page.trim_end_matches(".md");
        if let Some(number) = stem
            .strip_prefix("ch")
            .and_then(|rest| rest.split('-').next())
            .and_then(|n| n.parse::<u32>().ok())
        {
            return format!("chapter {number}");
        }
        let words = stem.replace('-', " ");
        let mut chars = words.chars();
        match chars.next() {
            Some(first) => format!("'{}{}'", first.to_uppercase(), chars.as_str()),
            None => String::new(),
        }
    }
}

/// "chapter 4, 'The stall' (book/src/ch04-framing.md#the-stall)".
impl fmt::Display for BookRef {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}, '{}' ({})", self.part(), self.title(), self.path())
    }
}

fn anchor_of(text: &str) -> String {
    text.chars()
        .filter_map(|c| {
            if c.is_alphanumeric() || c == '-' || c == '_' {
                Some(c.to_ascii_lowercase())
            } else if c.is_whitespace() {
                Some('-')
            } else {
                None
            }
        })
        .collect()
}

/// The headings of a Markdown page, outside code blocks.
pub fn headings(markdown: &str) -> Vec<String> {
    let mut in_code = false;
    let mut found = Vec::new();
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
        } else if !in_code && line.starts_with('#') {
            let text = line.trim_start_matches('#');
            if text.starts_with(' ') {
                found.push(text.trim().to_string());
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cases::CASES;
    use std::path::Path;

    #[test]
    fn anchors_are_what_mdbook_makes() {
        let emfile = BookRef {
            page: "what-can-go-wrong.md",
            heading: "Running out of file descriptors (`EMFILE`)",
        };
        assert_eq!(emfile.anchor(), "running-out-of-file-descriptors-emfile");
        assert_eq!(SIGNALFD.anchor(), "signals-as-a-file-descriptor-signalfd");
        assert_eq!(THE_STALL.part(), "chapter 4");
        assert_eq!(
            emfile.to_string(),
            "'What can go wrong', 'Running out of file descriptors (EMFILE)' \
             (book/src/what-can-go-wrong.md#running-out-of-file-descriptors-emfile)"
        );
    }

    /// Every case's reference names a page that exists and a heading on it
    /// whose anchor is unique there (mdBook numbers duplicates: `-1`, `-2`).
    #[test]
    fn every_book_reference_exists() {
        let book = Path::new(env!("CARGO_MANIFEST_DIR")).join("../book/src");
        let mut problems = Vec::new();
        for case in CASES {
            let r = case.explains;
            let page = book.join(r.page);
            let Ok(markdown) = std::fs::read_to_string(&page) else {
                problems.push(format!("{}: no page book/src/{}", case.id(), r.page));
                continue;
            };
            let headings = headings(&markdown);
            if !headings.iter().any(|h| h == r.heading) {
                problems.push(format!(
                    "{}: no heading `{}` in book/src/{} (headings: {headings:?})",
                    case.id(),
                    r.heading,
                    r.page
                ));
            }
            let same = headings
                .iter()
                .filter(|h| anchor_of(&h.replace('`', "")) == r.anchor())
                .count();
            if same > 1 {
                problems.push(format!(
                    "{}: {same} headings in book/src/{} share the anchor #{}",
                    case.id(),
                    r.page,
                    r.anchor()
                ));
            }
        }
        assert!(
            problems.is_empty(),
            "book references to fix in tests/src/book.rs:\n{}",
            problems.join("\n")
        );
    }
}
