//! Servers under test start with every signal at its default action and
//! none blocked, whatever the test runner inherited. A script that runs
//! `cargo test &` starts it with SIGINT ignored (as shells do for a
//! background job), and an ignored signal stays ignored across exec: a
//! server that inherited that could not be stopped with SIGINT however
//! well it was written, and `sigint_exits_zero` would blame it.
//!
//! Its own test binary, because it changes the process's signal state.
//! Needs python3 (the fixture server is Python's `socketserver`).

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use conformance::harness::{run_bounded, Target};
use conformance::{runner, CASES};

/// The `SigIgn` and `SigBlk` masks of a process, from /proc/PID/status.
fn ignored_and_blocked(status: &str) -> (u64, u64) {
    let mask = |name: &str| {
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {status}"));
        u64::from_str_radix(line.trim(), 16).unwrap()
    };
    (mask("SigIgn:"), mask("SigBlk:"))
}

fn bit(signal: libc::c_int) -> u64 {
    1 << (signal - 1)
}

fn python_fixture() -> Target {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/echo_socketserver.py");
    Target {
        command: vec!["python3".into(), script.to_string_lossy().into_owned()],
        port: None,
    }
}

/// Ignores SIGINT and SIGQUIT in this process, as a shell does for a
/// background job, and blocks SIGTERM in this thread, as a program that
/// reads signals from a signalfd does.
fn inherit_a_background_jobs_signals() {
    // SAFETY: signal and pthread_sigmask only change this process's signal
    // state; no handler runs Rust code.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGQUIT, libc::SIG_IGN);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

#[test]
fn servers_start_with_default_signals_whatever_the_runner_inherited() {
    inherit_a_background_jobs_signals();

    // A server the harness starts...
    let target = python_fixture();
    let server = target.start();
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    let (ignored, blocked) = ignored_and_blocked(&status);
    assert_eq!(
        ignored & (bit(libc::SIGINT) | bit(libc::SIGQUIT)),
        0,
        "the server inherited ignored signals: SigIgn {ignored:x}"
    );
    assert_eq!(
        blocked, 0,
        "the server inherited a signal mask: SigBlk {blocked:x}"
    );
    drop(server);

    // ...and the cases that stop it with SIGINT pass, as in a terminal.
    for id in [
        "echo::sigint_exits_zero",
        "echo::sigint_while_a_client_is_connected",
    ] {
        let case = CASES.iter().find(|c| c.id() == id).unwrap();
        if let Err(reason) = runner::run_case(case, &target) {
            panic!("{id}, with SIGINT ignored in the test runner: {reason}");
        }
    }

    // A command run to completion (`--help`, a bad option) too.
    let out = run_bounded(
        &["cat".to_string()],
        &["/proc/self/status"],
        &[],
        Duration::from_secs(5),
    );
    let (ignored, blocked) = ignored_and_blocked(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(ignored, 0, "run_bounded: SigIgn {ignored:x}");
    assert_eq!(blocked, 0, "run_bounded: SigBlk {blocked:x}");
}

/// The `conform` tool, started by a script in the background, judges the
/// server as it would from a terminal.
#[test]
fn conform_in_the_background_judges_sigint_as_in_a_terminal() {
    let mut conform = Command::new(env!("CARGO_BIN_EXE_conform"));
    conform
        .args([
            "--only",
            "sigint_exits_zero,sigint_while_a_client_is_connected",
            "--",
        ])
        .args(python_fixture().command);
    // SAFETY: runs in the forked child before exec; signal(2) is
    // async-signal-safe.
    unsafe {
        conform.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_IGN);
            Ok(())
        });
    }
    let out = conform.output().unwrap();
    assert!(
        out.status.success(),
        "conform with SIGINT ignored: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
