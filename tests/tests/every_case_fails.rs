//! No case that nothing fails: for every case of the suite,
//! tests/fixtures/flawed.expected names a server that fails it, the
//! `flawed` fixture (tests/src/bin/flawed.rs) with one or two defects
//! switched on, and words the reason must contain. This runs every line
//! through `conform` and checks that the case fails, for that reason; and
//! runs the fixture without defects through every level, where it must
//! pass everything, so that each failure is the defect's doing.
//!
//! A case added to the registry without a line here fails this test.

use std::collections::{BTreeSet, VecDeque};
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::thread;
use std::time::Instant;

use conformance::CASES;

/// One run of `conform`, and what must come of it.
struct Run {
    /// `FLAWED` for the fixture.
    defects: String,
    level: String,
    /// `--only`, or every case of the level.
    only: Option<String>,
    expect: Expect,
}

enum Expect {
    /// The one case fails, with these words in its reason.
    Fails(String),
    /// Every case passes.
    AllPass,
}

fn runs() -> Vec<Run> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/flawed.expected");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut runs = vec![
        // The longest first, so that the others fill in around it.
        Run {
            defects: String::new(),
            level: "idle_timeout".into(),
            only: None,
            expect: Expect::AllPass,
        },
        Run {
            defects: "hello".into(),
            level: "hello".into(),
            only: None,
            expect: Expect::AllPass,
        },
    ];
    let mut listed = BTreeSet::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(id), Some(defects)) = (words.next(), words.next()) else {
            panic!("flawed.expected: `{line}` is not `CASE DEFECTS WORDS`");
        };
        let words: Vec<&str> = words.collect();
        assert!(
            !words.is_empty(),
            "flawed.expected: `{line}` says nothing of the reason"
        );
        assert!(
            listed.insert(id.to_string()),
            "flawed.expected lists {id} twice"
        );
        runs.push(Run {
            defects: defects.into(),
            // Its own level, which brings the ones below it.
            level: id.split("::").next().unwrap().into(),
            only: Some(id.into()),
            expect: Expect::Fails(words.join(" ")),
        });
    }
    let all: BTreeSet<String> = CASES.iter().map(|c| c.id()).collect();
    let missing: Vec<&String> = all.difference(&listed).collect();
    let unknown: Vec<&String> = listed.difference(&all).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "tests/fixtures/flawed.expected must list every case, once: missing {missing:?}, \
         not cases {unknown:?}"
    );
    runs
}

/// Runs `conform` for `run`; the problem, if its outcome is not the one expected.
fn check(run: &Run) -> Option<String> {
    let mut conform = Command::new(env!("CARGO_BIN_EXE_conform"));
    conform
        .env("FLAWED", &run.defects)
        .args(["--level", &run.level, "--json"]);
    if let Some(only) = &run.only {
        conform.args(["--only", only]);
    }
    let out = conform
        .args(["--", env!("CARGO_BIN_EXE_flawed")])
        .output()
        .expect("run conform");
    let shown = format!(
        "FLAWED={} conform --level {} {}",
        run.defects,
        run.level,
        run.only
            .as_deref()
            .map_or(String::new(), |o| format!("--only {o}"))
    );
    let report: serde_json::Value = match serde_json::from_slice(&out.stdout) {
        Ok(report) => report,
        Err(_) => {
            return Some(format!(
                "{shown}: no report; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    };
    let cases = report["cases"].as_array().unwrap();
    match &run.expect {
        Expect::AllPass => {
            let not: Vec<String> = cases
                .iter()
                .filter(|c| c["status"] != "pass")
                .map(|c| format!("{} {}: {}", c["id"], c["status"], c["reason"]))
                .collect();
            (!not.is_empty()).then(|| {
                format!(
                    "{shown}: without defects, every case must pass:\n  {}",
                    not.join("\n  ")
                )
            })
        }
        Expect::Fails(words) => {
            let case = &cases[0];
            let reason = case["reason"].as_str().unwrap_or("");
            let raw = ["assertion `left", "exit status:", "signal: "];
            if let Some(raw) = raw.iter().find(|r| reason.contains(*r)) {
                return Some(format!(
                    "{shown}: a raw Rust value ({raw:?}) in the reason: {reason}"
                ));
            }
            if case["status"] != "fail" {
                Some(format!("{shown}: {}, not failed", case["status"]))
            } else if !reason.to_lowercase().contains(&words.to_lowercase()) {
                Some(format!(
                    "{shown}: failed, but the reason does not say {words:?}: {reason}"
                ))
            } else {
                None
            }
        }
    }
}

#[test]
fn every_case_fails_on_a_server_with_the_defect_it_is_for() {
    let start = Instant::now();
    let queue = Mutex::new(VecDeque::from(runs()));
    let problems = Mutex::new(Vec::new());
    // Two at a time: the machine running this may have no more cores.
    thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| loop {
                let Some(run) = queue.lock().unwrap().pop_front() else {
                    return;
                };
                // A case that judges by time (a greedy client's turn, a
                // spin's CPU) can miss its defect on a loaded machine, where
                // the defect's effect needs the server to have a CPU at
                // the right moment. It is a detector if it catches the
                // defect in one of three runs; a case that never fails
                // still fails here.
                let tries = if matches!(run.expect, Expect::Fails(_)) {
                    3
                } else {
                    1
                };
                let problem = (0..tries).map_while(|_| check(&run)).nth(tries - 1);
                if let Some(problem) = problem {
                    problems.lock().unwrap().push(problem);
                }
            });
        }
    });
    let problems = problems.into_inner().unwrap();
    assert!(
        problems.is_empty(),
        "{} problems (in {:.0?}):\n{}",
        problems.len(),
        start.elapsed(),
        problems.join("\n")
    );
}
