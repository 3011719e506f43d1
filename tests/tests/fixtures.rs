//! The `conform` tool end to end, on servers with known bugs: each must get
//! exactly the report its tests/fixtures/*.expected file describes (which
//! cases fail, which do not apply), with reasons, causes and the book's
//! sections. A case that stops catching its bug, or starts failing a
//! correct behaviour, shows up here. Needs python3 and cc.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// Case id to expected status ("fail" or "not applicable"), from `name`.
fn expected(name: &str) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(fixtures().join(name)).unwrap();
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| match line.split_once(char::is_whitespace) {
            Some((id, status)) => (id.to_string(), status.trim().to_string()),
            None => (line.to_string(), "fail".to_string()),
        })
        .collect()
}

/// Runs `conform --json` with `args`, checks the statuses against `name`,
/// and returns the report.
fn check(args: &[&str], name: &str) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_conform"))
        .args(args)
        .output()
        .expect("run conform");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "conform must exit 1 when cases fail; stderr: {stderr}"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("conform --json printed no JSON ({e}); stderr: {stderr}"));
    let cases = report["cases"].as_array().expect("a list of cases");
    let got: BTreeMap<String, String> = cases
        .iter()
        .filter(|case| case["status"] != "pass")
        .map(|case| {
            (
                case["id"].as_str().unwrap().to_string(),
                case["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let reasons: Vec<String> = cases
        .iter()
        .filter(|case| case["status"] != "pass")
        .map(|case| format!("  {} {}: {}", case["id"], case["status"], case["reason"]))
        .collect();
    assert!(
        got == expected(name),
        "the report differs from tests/fixtures/{name}; its cases that did not pass:\n{}",
        reasons.join("\n")
    );
    // Each failure says what went wrong, and where the book explains it;
    // the causes cover every failure once.
    let mut explained = 0;
    for cause in report["causes"].as_array().unwrap() {
        assert!(cause["book"]["see"].as_str().unwrap().contains("book/src/"));
        explained += cause["cases"].as_array().unwrap().len();
    }
    for case in cases.iter().filter(|case| case["status"] == "fail") {
        assert!(case["reason"].as_str().is_some_and(|r| r.len() > 20));
        assert!(case["cause"].as_str().is_some());
    }
    assert_eq!(explained, report["failed"].as_u64().unwrap() as usize);
    report
}

fn reason<'a>(report: &'a serde_json::Value, id: &str) -> &'a str {
    report["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|case| case["id"] == id)
        .and_then(|case| case["reason"].as_str())
        .unwrap_or_else(|| panic!("no reason for {id}"))
}

#[test]
fn broken_echo_py_fails_exactly_the_expected_cases() {
    let script = fixtures().join("broken_echo.py");
    let report = check(
        &[
            "--level",
            "echo",
            "--json",
            "--",
            "python3",
            script.to_str().unwrap(),
        ],
        "broken_echo.expected",
    );
    assert!(report["contract_applies"] == true);
    assert!(
        reason(&report, "echo::sigterm_exits_zero").contains("does not handle SIGTERM"),
        "{report}"
    );
}

/// tests/fixtures/stranded_echo.c compiled to listen on a free port: the
/// binary, and the port.
fn stranded_echo() -> (PathBuf, String) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let binary = dir.join(format!("stranded_echo_{port}"));
    let status = Command::new("cc")
        .args(["-O2", "-Wall", &format!("-DPORT={port}"), "-o"])
        .arg(&binary)
        .arg(fixtures().join("stranded_echo.c"))
        .status()
        .expect("cc (a C compiler) is needed to build tests/fixtures/stranded_echo.c");
    assert!(status.success());
    (binary, port.to_string())
}

/// `-v` adds where each failure was seen and the end of the server's
/// stderr, not megabytes of it: this server logs a line per turn of its
/// spin when out of descriptors.
#[test]
fn verbose_output_is_bounded() {
    let (binary, port) = stranded_echo();
    let out = Command::new(env!("CARGO_BIN_EXE_conform"))
        .args(["-v", "--only", "out_of_fds_neither_spins_nor_stops_serving"])
        .args(["--port", &port, "--", binary.to_str().unwrap()])
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("run conform");
    let _ = std::fs::remove_file(&binary);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("accept: Too many open files"), "{text}");
    assert!(
        out.stdout.len() + out.stderr.len() < 8 << 10,
        "{} bytes of report",
        out.stdout.len() + out.stderr.len()
    );
    assert!(
        !text.contains("stack backtrace") && out.stderr.is_empty(),
        "{text}"
    );
}

/// A server from elsewhere: no options, a fixed port, nothing printed, and
/// the stranded-frame bug.
#[test]
fn stranded_echo_c_started_with_port_gets_no_contract_failures() {
    let (binary, port) = stranded_echo();
    let report = check(
        &[
            "--level",
            "echo",
            "--port",
            &port,
            "--json",
            "--",
            binary.to_str().unwrap(),
        ],
        "stranded_echo.expected",
    );
    let _ = std::fs::remove_file(&binary);
    assert!(report["contract_applies"] == false);
    assert!(
        reason(
            &report,
            "echo::frames_behind_a_full_send_buffer_are_answered"
        )
        .contains("had read the other"),
        "{report}"
    );
    // The signal failures are one cause, not four lines.
    let signals = report["causes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|cause| {
            cause["cause"]
                .as_str()
                .unwrap()
                .starts_with("SIGINT or SIGTERM")
        })
        .expect("a cause for the missing signal handlers");
    assert_eq!(signals["cases"].as_array().unwrap().len(), 4, "{signals}");
}
