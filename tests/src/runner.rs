//! Running cases and reporting on them: catching a failing case's panic,
//! bounding each case in time, and the report the `conform` tool prints.

use std::any::Any;
use std::io::Write;
use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::Once;
use std::thread;
use std::time::{Duration, Instant};

use crate::cases::Case;
use crate::harness::{self, secs, Target};

/// Runs one case on this thread; a panic becomes the reason it failed.
pub fn run_case(case: &Case, target: &Target) -> Result<(), String> {
    panic::catch_unwind(AssertUnwindSafe(|| (case.run)(target))).map_err(panic_message)
}

/// The text a panic was raised with.
pub fn panic_message(payload: Box<dyn Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "the case panicked without a message".to_string()
    }
}

/// What came of one case.
pub struct Outcome {
    pub case: &'static Case,
    /// `None` if it passed; otherwise why it failed, in a sentence.
    pub failure: Option<String>,
    pub elapsed: Duration,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.failure.is_none()
    }
}

/// Silences the default panic message (and backtrace hint): the report says
/// it better. With `verbose`, panics are still printed, location included.
pub fn quiet_panics(verbose: bool) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if verbose {
                default(info);
            }
        }));
    });
}

/// Runs `case` on a thread of its own and gives up after `limit`: a case
/// must never hang the run, whatever the server does. Giving up kills the
/// case's servers, which ends the case's blocked socket calls soon after.
pub fn run_bounded(case: &'static Case, target: &Target, limit: Duration) -> Outcome {
    let start = Instant::now();
    let (tx, rx) = mpsc::channel();
    let target = target.clone();
    let spawned = thread::Builder::new().name(case.id()).spawn(move || {
        let _ = tx.send(run_case(case, &target));
    });
    let failure = match spawned {
        Err(e) => Some(format!("could not start a thread for the case: {e}")),
        Ok(_) => match rx.recv_timeout(limit) {
            Ok(result) => result.err(),
            Err(_) => {
                harness::kill_all_servers();
                // Let the case notice and clean up, without waiting forever.
                let _ = rx.recv_timeout(Duration::from_secs(5));
                Some(format!(
                    "the case did not finish within {}, so the server was stopped",
                    secs(limit)
                ))
            }
        },
    };
    Outcome {
        case,
        failure,
        elapsed: start.elapsed(),
    }
}

/// The report, written as the cases finish.
pub struct Report<W: Write> {
    out: W,
    json: bool,
}

impl<W: Write> Report<W> {
    pub fn new(out: W, json: bool) -> Self {
        Report { out, json }
    }

    pub fn start(&mut self, target: &Target, levels: &str, count: usize) {
        if !self.json {
            let _ = writeln!(
                self.out,
                "conform: {count} case{} ({levels}) against `{}`\n",
                if count == 1 { "" } else { "s" },
                target.display()
            );
            let _ = self.out.flush();
        }
    }

    pub fn case(&mut self, outcome: &Outcome) {
        if self.json {
            return;
        }
        let case = outcome.case;
        let took = format!("{:.1} s", outcome.elapsed.as_secs_f64());
        match &outcome.failure {
            None => {
                let _ = writeln!(self.out, "pass  {}  ({took})", case.id());
            }
            Some(reason) => {
                let _ = writeln!(self.out, "FAIL  {}  ({took})", case.id());
                let _ = writeln!(self.out, "      {}", sentence(reason));
                let _ = writeln!(self.out, "      checks: {}", case.checks);
                let _ = writeln!(self.out, "      see {}", case.explains);
            }
        }
        let _ = self.out.flush();
    }

    pub fn finish(&mut self, target: &Target, levels: &str, outcomes: &[Outcome], total: Duration) {
        let failed = outcomes.iter().filter(|o| !o.passed()).count();
        if self.json {
            let _ = writeln!(self.out, "{:#}", json(target, levels, outcomes, total));
            return;
        }
        let _ = writeln!(
            self.out,
            "\n{} case{}: {} passed, {failed} failed ({:.1} s)",
            outcomes.len(),
            if outcomes.len() == 1 { "" } else { "s" },
            outcomes.len() - failed,
            total.as_secs_f64()
        );
        if failed > 0 {
            let names: Vec<String> = outcomes
                .iter()
                .filter(|o| !o.passed())
                .map(|o| o.case.id())
                .collect();
            let _ = writeln!(self.out, "failed: {}", names.join(" "));
        }
        let _ = self.out.flush();
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

/// The machine-readable report (`--json`).
pub fn json(
    target: &Target,
    levels: &str,
    outcomes: &[Outcome],
    total: Duration,
) -> serde_json::Value {
    let failed = outcomes.iter().filter(|o| !o.passed()).count();
    let cases: Vec<serde_json::Value> = outcomes
        .iter()
        .map(|o| {
            let case = o.case;
            serde_json::json!({
                "id": case.id(),
                "level": case.level.name(),
                "name": case.name,
                "passed": o.passed(),
                "reason": o.failure.as_deref().map(sentence),
                "seconds": (o.elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
                "checks": case.checks,
                "book": {
                    "page": case.explains.page,
                    "heading": case.explains.title(),
                    "anchor": case.explains.anchor(),
                    "see": case.explains.to_string(),
                },
            })
        })
        .collect();
    serde_json::json!({
        "command": target.display(),
        "levels": levels,
        "passed": outcomes.len() - failed,
        "failed": failed,
        "seconds": (total.as_secs_f64() * 10.0).round() / 10.0,
        "cases": cases,
    })
}
