//! The harness's own promises, the ones every case relies on.

use std::panic;
use std::time::{Duration, Instant};

use conformance::harness::run_bounded;

/// A command that does not exit in time is stopped, with everything it
/// started: a `sh -c` wrapper whose server outlives the shell must not keep
/// the output pipes open, and with them the case, for ever.
#[test]
fn run_bounded_stops_the_command_and_what_it_started_on_time() {
    let start = Instant::now();
    let outcome = panic::catch_unwind(|| {
        run_bounded(
            &["sh".into(), "-c".into(), "sleep 30 & exec sleep 30".into()],
            &["--help"],
            &[],
            Duration::from_millis(500),
        )
    });
    let took = start.elapsed();
    let Err(payload) = outcome else {
        panic!("a command that ran for 30 s was reported as finished");
    };
    let message = payload
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(message.contains("still running after 500 ms"), "{message}");
    assert!(
        took < Duration::from_secs(5),
        "run_bounded took {took:?} to give up after 500 ms"
    );
}

#[test]
fn run_bounded_reports_what_a_command_printed_and_how_it_exited() {
    let out = run_bounded(
        &[
            "sh".into(),
            "-c".into(),
            "echo out; echo err >&2; exit 3".into(),
        ],
        &[],
        &[],
        Duration::from_secs(5),
    );
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");
}
