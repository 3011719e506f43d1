//! The conformance suite: one set of cases, written once, run against every
//! chapter's server binary over real sockets on 127.0.0.1, and, through the
//! `conform` tool (`src/main.rs`, `just conform LEVEL -- COMMAND`), against
//! any echo server at all, written in any language.
//!
//! Every case is listed once, in the registry ([`cases::CASES`]), with what
//! it checks and the section of the book that explains its failure.
//!
//! A chapter runs the levels its design can meet from its own
//! `tests/conformance.rs`, a test target with `harness = false`, so that each
//! case is a test of its own (`cargo test -p ch06 echo::one_frame`):
//!
//! ```ignore
//! use conformance::Level;
//!
//! fn main() {
//!     conformance::main(env!("CARGO_BIN_EXE_ch06"), &[Level::Echo, Level::Concurrent, Level::EventLoop]);
//! }
//! ```
//!
//! Levels:
//! - `hello`: the ch03 contract (one read, one fixed reply, close);
//! - `echo`: framing, every kind of bad input, signals (all echo servers);
//! - `concurrent`: clients are served independently, a flood stalls no one
//!   and grows no memory (ch05 onwards);
//! - `event_loop`: a thousand connections on one thread, prompt stop (ch06 onwards);
//! - `scale`: a 10,000-frame burst, 10,000 quiet connections in little memory (ch08 onwards);
//! - `idle_timeout`: connections idle for `--idle-timeout-ms` are closed,
//!   slowloris included (ch11 and ch14).
//!
//! Every case starts its own server on an ephemeral port, waits for its
//! `listening on` line, and bounds every socket operation with a timeout.

pub mod book;
pub mod cases;
pub mod harness;
pub mod notes;
pub mod runner;
pub mod sockdiag;

// The cases themselves: private, so that only the registry can use them.
mod accept;
mod cli;
mod concurrent;
mod echo;
mod event_loop;
mod graceful;
mod hello;
mod idle_timeout;
mod scale;
mod wire;

pub use cases::{Case, Level, Scope, CASES};
pub use harness::Target;

/// A chapter's conformance test: runs the cases of `levels` against the
/// binary `bin`, one named test per case (`echo::one_frame`), with the usual
/// `cargo test` arguments (filters, `--list`, `--test-threads`...).
pub fn main(bin: &str, levels: &[Level]) -> ! {
    Suite::new(Target::binary(bin), levels).run()
}

/// [`main`], plus tests of the chapter's own, run alongside the cases.
pub fn main_with(bin: &str, levels: &[Level], own_tests: &[(&'static str, fn())]) -> ! {
    Suite::new(Target::binary(bin), levels)
        .with_tests(own_tests)
        .run()
}

/// The cases of some levels against one server, as a `cargo test` target
/// (`harness = false`): one named test per case, and the usual arguments
/// (filters, `--list`, `--test-threads`...). A case that does not apply to
/// the server (it does not use the mechanism the case works through) is
/// reported as ignored, with the reason.
///
/// ```ignore
/// let target = Target::binary(BIN).with_args(["--threads", "4"]);
/// Suite::new(target, &[Level::Echo, Level::Concurrent])
///     .with_case_args(&["concurrent::greedy_client_does_not_starve_others"], &["--threads", "1"])
///     .run()
/// ```
pub struct Suite<'a> {
    target: Target,
    levels: &'a [Level],
    case_args: Vec<(&'a [&'a str], &'a [&'a str])>,
    known_defects: Vec<(&'a str, &'a str)>,
    own_tests: &'a [(&'static str, fn())],
}

impl<'a> Suite<'a> {
    pub fn new(target: Target, levels: &'a [Level]) -> Self {
        Suite {
            target,
            levels,
            case_args: Vec::new(),
            known_defects: Vec::new(),
            own_tests: &[],
        }
    }

    /// Starts the server with `args` after the target's own for the cases
    /// named (`level::name`): this project's servers take the last value of
    /// an option given twice. A name that is no case is a mistake, and
    /// panics.
    pub fn with_case_args(mut self, cases: &'a [&'a str], args: &'a [&'a str]) -> Self {
        for id in cases {
            assert!(
                CASES.iter().any(|case| case.id() == *id),
                "with_case_args: no case {id}"
            );
        }
        self.case_args.push((cases, args));
        self
    }

    /// A case this server is known to fail, and why: a step of the ladder
    /// that has not learned what a later one teaches. The case still runs,
    /// and is reported as ignored, with the reason it failed; if it passes,
    /// the test fails, so that the note goes once the defect does.
    pub fn with_known_defect(mut self, case: &'a str, why: &'a str) -> Self {
        assert!(
            CASES.iter().any(|c| c.id() == case),
            "with_known_defect: no case {case}"
        );
        self.known_defects.push((case, why));
        self
    }

    /// Tests of the chapter's own, run alongside the cases.
    pub fn with_tests(mut self, own_tests: &'a [(&'static str, fn())]) -> Self {
        self.own_tests = own_tests;
        self
    }

    /// The target for one case: with the extra arguments it is given.
    fn target_for(&self, case: &Case) -> Target {
        let id = case.id();
        let extra = self
            .case_args
            .iter()
            .filter(|(cases, _)| cases.contains(&id.as_str()))
            .flat_map(|(_, args)| args.iter().copied());
        self.target.clone().with_args(extra)
    }

    /// Runs the tests (as `cargo test` asked) and exits.
    pub fn run(self) -> ! {
        use libtest_mimic::{Arguments, Completion, Failed, Trial};
        use runner::Verdict;

        let args = Arguments::from_args();
        runner::quiet_panics();
        let mut trials: Vec<Trial> = cases::cases_in(self.levels)
            .map(|case| {
                let target = self.target_for(case);
                let known_defect = self
                    .known_defects
                    .iter()
                    .find(|(id, _)| *id == case.id())
                    .map(|&(_, why)| why.to_string());
                Trial::ignorable_test(case.id(), move || {
                    match (runner::judge(case, &target), &known_defect) {
                        (Verdict::Passed, None) => Ok(Completion::Completed),
                        (Verdict::Passed, Some(why)) => Err(Failed::from(format!(
                            "passes, though listed as a known defect ({why}): \
                             take it off the list"
                        ))),
                        (Verdict::NotApplicable(why), _) => {
                            Ok(Completion::ignored_with(format!("not applicable: {why}")))
                        }
                        (Verdict::Failed(failure), Some(why)) => Ok(Completion::ignored_with(
                            format!("known defect, {why}: {}", failure.reason),
                        )),
                        (Verdict::Failed(failure), None) => {
                            let mut message = format!(
                                "{}\n  server: {}\n  checks: {}\n  see {}",
                                failure.reason,
                                target.display(),
                                case.checks,
                                case.explains
                            );
                            for detail in &failure.details {
                                message
                                    .push_str(&format!("\n  {}", detail.replace('\n', "\n  | ")));
                            }
                            Err(Failed::from(message))
                        }
                    }
                })
            })
            .collect();
        trials.extend(self.own_tests.iter().map(|&(name, test)| {
            Trial::test(name, move || {
                notes::take();
                std::panic::catch_unwind(test).map_err(|payload| {
                    let at = notes::take().location.unwrap_or_default();
                    Failed::from(format!("{} ({at})", runner::panic_message(payload)))
                })
            })
        }));
        libtest_mimic::run(&args, trials).exit()
    }
}
