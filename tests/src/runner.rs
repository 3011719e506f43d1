//! Running cases and reporting on them: catching a failing case's panic,
//! naming its cause, bounding each case in time, and the report the
//! `conform` tool prints.

use std::any::Any;
use std::io::Write;
use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::Once;
use std::thread;
use std::time::{Duration, Instant};

use crate::book::{self, BookRef};
use crate::cases::{Case, Level, Scope};
use crate::harness::{self, describe_signal, secs, Target};
use crate::notes::{self, Death, Notes};

/// What came of running one case.
#[derive(Debug)]
pub enum Verdict {
    Passed,
    Failed(Failure),
    /// The case cannot say anything about this server, and why: it tests
    /// echo-steps' own command line on a server started otherwise, or it
    /// relies on a mechanism the server does not use.
    NotApplicable(String),
}

#[derive(Debug)]
pub struct Failure {
    /// Why, in a sentence a learner can act on.
    pub reason: String,
    /// What went wrong underneath: failures with the same cause are one
    /// problem to fix, reported together.
    pub cause: Cause,
    /// For `--verbose`: where the failure was detected, the tail of the
    /// server's stderr. Bounded.
    pub details: Vec<String>,
}

/// One problem to fix, and the section of the book that explains it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cause {
    pub summary: String,
    pub explains: BookRef,
}

impl Cause {
    /// The cause of a case's failure when nothing more specific is known:
    /// what the section of the book that the case points to is about.
    pub fn of(case: &Case) -> Cause {
        Cause {
            summary: case.explains.title(),
            explains: case.explains,
        }
    }
}

/// The payload of a panic that ends a case as "not applicable" (see
/// [`harness::not_applicable`]).
pub struct NotApplicable(pub String);

/// Runs one case on this thread and judges it.
pub fn judge(case: &Case, target: &Target) -> Verdict {
    if case.scope == Scope::EchoSteps && !target.follows_contract() {
        return Verdict::NotApplicable(CONTRACT_NOT_APPLICABLE.to_string());
    }
    notes::take();
    let result = panic::catch_unwind(AssertUnwindSafe(|| (case.run)(target)));
    let notes = notes::take();
    match result {
        Ok(()) => Verdict::Passed,
        Err(payload) => match payload.downcast::<NotApplicable>() {
            Ok(why) => Verdict::NotApplicable(why.0),
            Err(payload) => Verdict::Failed(failure(case, panic_message(payload), notes)),
        },
    }
}

const CONTRACT_NOT_APPLICABLE: &str = "it tests echo-steps' own command line and conventions, \
     and conform did not start this server with --addr";

/// Runs one case on this thread: `Ok` if it passed, otherwise why not (a
/// case that does not apply did not pass either).
pub fn run_case(case: &Case, target: &Target) -> Result<(), String> {
    match judge(case, target) {
        Verdict::Passed => Ok(()),
        Verdict::Failed(failure) => Err(failure.reason),
        Verdict::NotApplicable(why) => Err(format!("not applicable: {why}")),
    }
}

/// The reason and cause of a failure, from the case's panic message and
/// what its servers left behind. A server that died on its own is the news,
/// whatever the case saw next ("connection refused"), so it comes first.
fn failure(case: &Case, message: String, notes: Notes) -> Failure {
    let mut cause = Cause::of(case);
    let mut reason = message;
    if let Some(death) = notes.deaths.first() {
        if let Some(specific) = cause_of_death(case, death) {
            cause = specific;
        }
        let said = match death {
            Death::Signal { signal, .. } => {
                reason.contains(&describe_signal(*signal))
                    || reason.contains(&format!("{} killed", harness::signal_name(*signal)))
            }
            Death::Status { .. } => reason.contains("exited with status"),
        };
        if !said {
            reason = format!("{}; what the case saw then: {reason}", death.sentence());
        }
    }
    let mut details = Vec::new();
    if let Some(location) = notes.location {
        details.push(format!("detected at {location}"));
    }
    for tail in notes.stderr_tails {
        details.push(format!("the server's stderr ended with:\n{tail}"));
    }
    Failure {
        reason,
        cause,
        details,
    }
}

/// The problem behind a server's death, when it is not the case's own.
fn cause_of_death(case: &Case, death: &Death) -> Option<Cause> {
    let (summary, explains) = match *death {
        Death::Signal {
            signal,
            sent_by_us: true,
            ..
        } if notes::is_stop_signal(signal) => (
            "SIGINT or SIGTERM kills the server: it has no handler for it".to_string(),
            if case.level == Level::Hello {
                book::HELLO_SIGNALS
            } else {
                book::SIGNALS
            },
        ),
        Death::Signal {
            signal: libc::SIGPIPE,
            broken_stderr: true,
            ..
        } => (
            "A log line to a closed stderr kills the server (SIGPIPE)".to_string(),
            book::BROKEN_STDERR,
        ),
        Death::Signal {
            signal: libc::SIGPIPE,
            ..
        } => (
            "Writing to a connection its client has closed kills the server (SIGPIPE)".to_string(),
            book::RESETS,
        ),
        Death::Signal { signal, .. } => (
            format!("The server dies of {}", describe_signal(signal)),
            case.explains,
        ),
        Death::Status { .. } => return None,
    };
    Some(Cause { summary, explains })
}

/// The text a panic was raised with.
pub fn panic_message(payload: Box<dyn Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else if let Some(NotApplicable(why)) = payload.downcast_ref::<NotApplicable>() {
        format!("not applicable: {why}")
    } else {
        "the case panicked without a message".to_string()
    }
}

/// Replaces the default panic message (and backtrace) with a note of where
/// the panic was raised, kept for the report: the reason says the rest.
pub fn quiet_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        panic::set_hook(Box::new(|info| {
            if let Some(at) = info.location() {
                notes::record_location(format!("{}:{}", at.file(), at.line()));
            }
        }));
    });
}

/// What came of one case.
pub struct Outcome {
    pub case: &'static Case,
    pub verdict: Verdict,
    pub elapsed: Duration,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        matches!(self.verdict, Verdict::Passed)
    }

    pub fn failed(&self) -> bool {
        matches!(self.verdict, Verdict::Failed(_))
    }

    pub fn failure(&self) -> Option<&Failure> {
        match &self.verdict {
            Verdict::Failed(failure) => Some(failure),
            _ => None,
        }
    }

    fn status(&self) -> &'static str {
        match self.verdict {
            Verdict::Passed => "pass",
            Verdict::Failed(_) => "fail",
            Verdict::NotApplicable(_) => "not applicable",
        }
    }
}

/// Runs `case` on a thread of its own and gives up after `limit`: a case
/// must never hang the run, whatever the server does. Giving up kills the
/// case's servers, which ends the case's blocked socket calls soon after.
pub fn run_bounded(case: &'static Case, target: &Target, limit: Duration) -> Outcome {
    let start = Instant::now();
    let (tx, rx) = mpsc::channel();
    let target = target.clone();
    let spawned = thread::Builder::new().name(case.id()).spawn(move || {
        let _ = tx.send(judge(case, &target));
    });
    let verdict = match spawned {
        Err(e) => Verdict::Failed(Failure {
            reason: format!("could not start a thread for the case: {e}"),
            cause: Cause::of(case),
            details: Vec::new(),
        }),
        Ok(_) => match rx.recv_timeout(limit) {
            Ok(verdict) => verdict,
            Err(_) => {
                harness::kill_all_servers();
                // Let the case notice and clean up, without waiting forever.
                let _ = rx.recv_timeout(Duration::from_secs(5));
                Verdict::Failed(Failure {
                    reason: format!(
                        "the case did not finish within {}, so the server was stopped",
                        secs(limit)
                    ),
                    cause: Cause::of(case),
                    details: Vec::new(),
                })
            }
        },
    };
    Outcome {
        case,
        verdict,
        elapsed: start.elapsed(),
    }
}

/// The failures of a run, one group per cause, in the order the causes
/// first appeared.
pub fn by_cause(outcomes: &[Outcome]) -> Vec<(&Cause, Vec<&'static Case>)> {
    let mut groups: Vec<(&Cause, Vec<&'static Case>)> = Vec::new();
    for outcome in outcomes {
        let Some(failure) = outcome.failure() else {
            continue;
        };
        match groups
            .iter_mut()
            .find(|(cause, _)| **cause == failure.cause)
        {
            Some((_, cases)) => cases.push(outcome.case),
            None => groups.push((&failure.cause, vec![outcome.case])),
        }
    }
    groups
}

/// The report, written as the cases finish.
pub struct Report<W: Write> {
    out: W,
    json: bool,
    verbose: bool,
    /// The scope whose heading was printed last.
    section: Option<Scope>,
}

impl<W: Write> Report<W> {
    pub fn new(out: W, json: bool, verbose: bool) -> Self {
        Report {
            out,
            json,
            verbose,
            section: None,
        }
    }

    pub fn start(&mut self, target: &Target, levels: &str, count: usize) {
        if !self.json {
            let _ = writeln!(
                self.out,
                "conform: {count} case{} ({levels}) against `{}`",
                plural(count),
                target.display()
            );
            let _ = self.out.flush();
        }
    }

    fn heading(&mut self, target: &Target, scope: Scope) {
        if self.section == Some(scope) {
            return;
        }
        self.section = Some(scope);
        let heading = match scope {
            Scope::EveryServer => "What every echo server must do".to_string(),
            Scope::EchoSteps if target.follows_contract() => {
                "The contract of echo-steps' servers: their command line and conventions"
                    .to_string()
            }
            Scope::EchoSteps => format!(
                "The contract of echo-steps' servers: not applicable ({})",
                CONTRACT_NOT_APPLICABLE
            ),
        };
        let _ = writeln!(self.out, "\n{heading}");
    }

    pub fn case(&mut self, target: &Target, outcome: &Outcome) {
        if self.json {
            return;
        }
        let case = outcome.case;
        self.heading(target, case.scope);
        let took = format!("{:.1} s", outcome.elapsed.as_secs_f64());
        match &outcome.verdict {
            Verdict::Passed => {
                let _ = writeln!(self.out, "pass  {}  ({took})", case.id());
            }
            Verdict::NotApplicable(why) => {
                let _ = writeln!(self.out, "n/a   {}", case.id());
                if why != CONTRACT_NOT_APPLICABLE {
                    let _ = writeln!(self.out, "      {}", sentence(why));
                }
            }
            Verdict::Failed(failure) => {
                let _ = writeln!(self.out, "FAIL  {}  ({took})", case.id());
                let _ = writeln!(self.out, "      {}", sentence(&failure.reason));
                let _ = writeln!(self.out, "      checks: {}", case.checks);
                let _ = writeln!(self.out, "      see {}", case.explains);
                if self.verbose {
                    for detail in &failure.details {
                        for line in detail.lines() {
                            let _ = writeln!(self.out, "      | {line}");
                        }
                    }
                }
            }
        }
        let _ = self.out.flush();
    }

    pub fn finish(&mut self, target: &Target, levels: &str, outcomes: &[Outcome], total: Duration) {
        if self.json {
            let _ = writeln!(self.out, "{:#}", json(target, levels, outcomes, total));
            return;
        }
        let _ = writeln!(self.out);
        for scope in [Scope::EveryServer, Scope::EchoSteps] {
            let ours: Vec<&Outcome> = outcomes.iter().filter(|o| o.case.scope == scope).collect();
            if ours.is_empty() {
                continue;
            }
            let count = |f: fn(&Outcome) -> bool| ours.iter().filter(|o| f(o)).count();
            let (passed, failed) = (count(Outcome::passed), count(Outcome::failed));
            let not_applicable = ours.len() - passed - failed;
            let mut parts = vec![format!("{passed} passed"), format!("{failed} failed")];
            if not_applicable > 0 {
                parts.push(format!("{not_applicable} not applicable"));
            }
            let _ = writeln!(
                self.out,
                "{}: {} case{}, {}",
                match scope {
                    Scope::EveryServer => "What every echo server must do",
                    Scope::EchoSteps => "echo-steps' contract",
                },
                ours.len(),
                plural(ours.len()),
                parts.join(", ")
            );
        }
        let _ = writeln!(self.out, "({:.1} s)", total.as_secs_f64());
        let causes = by_cause(outcomes);
        if !causes.is_empty() {
            let failures: usize = causes.iter().map(|(_, cases)| cases.len()).sum();
            let _ = writeln!(
                self.out,
                "\n{failures} failure{}, {} cause{}:",
                plural(failures),
                causes.len(),
                plural(causes.len())
            );
            for (i, (cause, cases)) in causes.iter().enumerate() {
                let _ = writeln!(
                    self.out,
                    "{}. {} ({} case{})",
                    i + 1,
                    cause.summary,
                    cases.len(),
                    plural(cases.len())
                );
                for case in cases {
                    let _ = writeln!(self.out, "   {}", case.id());
                }
                let _ = writeln!(self.out, "   see {}", cause.explains);
            }
        }
        let _ = self.out.flush();
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// A reason as a sentence: capital first letter, full stop at the end.
fn sentence(reason: &str) -> String {
    let reason = reason.trim();
    let mut chars = reason.chars();
    let mut out = match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect::<String>(),
        None => return String::new(),
    };
    if !out.ends_with(['.', '!', '?']) {
        out.push('.');
    }
    out
}

fn book_json(r: &BookRef) -> serde_json::Value {
    serde_json::json!({
        "page": r.page,
        "heading": r.title(),
        "anchor": r.anchor(),
        "see": r.to_string(),
    })
}

/// The machine-readable report (`--json`).
pub fn json(
    target: &Target,
    levels: &str,
    outcomes: &[Outcome],
    total: Duration,
) -> serde_json::Value {
    let count = |f: fn(&Outcome) -> bool| outcomes.iter().filter(|o| f(o)).count();
    let (passed, failed) = (count(Outcome::passed), count(Outcome::failed));
    let cases: Vec<serde_json::Value> = outcomes
        .iter()
        .map(|o| {
            let case = o.case;
            let (reason, cause) = match &o.verdict {
                Verdict::Passed => (None, None),
                Verdict::NotApplicable(why) => (Some(sentence(why)), None),
                Verdict::Failed(f) => (Some(sentence(&f.reason)), Some(sentence(&f.cause.summary))),
            };
            serde_json::json!({
                "id": case.id(),
                "level": case.level.name(),
                "name": case.name,
                "scope": case.scope.name(),
                "status": o.status(),
                "reason": reason,
                "cause": cause,
                "seconds": (o.elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
                "checks": case.checks,
                "book": book_json(&case.explains),
            })
        })
        .collect();
    let causes: Vec<serde_json::Value> = by_cause(outcomes)
        .into_iter()
        .map(|(cause, cases)| {
            serde_json::json!({
                "cause": sentence(&cause.summary),
                "cases": cases.iter().map(|c| c.id()).collect::<Vec<_>>(),
                "book": book_json(&cause.explains),
            })
        })
        .collect();
    serde_json::json!({
        "command": target.display(),
        "levels": levels,
        "contract_applies": target.follows_contract(),
        "passed": passed,
        "failed": failed,
        "not_applicable": outcomes.len() - passed - failed,
        "seconds": (total.as_secs_f64() * 10.0).round() / 10.0,
        "causes": causes,
        "cases": cases,
    })
}
