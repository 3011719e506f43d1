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
//!   slowloris included (ch11 and ch12).
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
    main_with(bin, levels, &[])
}

/// [`main`], plus tests of the chapter's own, run alongside the cases.
///
/// A case that does not apply to the chapter's server (its mechanism is not
/// one the server uses) is reported as ignored, with the reason.
pub fn main_with(bin: &str, levels: &[Level], own_tests: &[(&'static str, fn())]) -> ! {
    use libtest_mimic::{Arguments, Completion, Failed, Trial};
    use runner::Verdict;

    let args = Arguments::from_args();
    runner::quiet_panics();
    let target = Target::binary(bin);
    let mut trials: Vec<Trial> = cases::cases_in(levels)
        .map(|case| {
            let target = target.clone();
            Trial::ignorable_test(case.id(), move || match runner::judge(case, &target) {
                Verdict::Passed => Ok(Completion::Completed),
                Verdict::NotApplicable(why) => {
                    Ok(Completion::ignored_with(format!("not applicable: {why}")))
                }
                Verdict::Failed(failure) => {
                    let mut message = format!(
                        "{}\n  checks: {}\n  see {}",
                        failure.reason, case.checks, case.explains
                    );
                    for detail in &failure.details {
                        message.push_str(&format!("\n  {}", detail.replace('\n', "\n  | ")));
                    }
                    Err(Failed::from(message))
                }
            })
        })
        .collect();
    trials.extend(own_tests.iter().map(|&(name, test)| {
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
