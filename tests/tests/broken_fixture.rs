//! The `conform` tool end to end: run against a server with known bugs
//! (tests/fixtures/broken_echo.py), it must fail exactly the cases listed
//! in broken_echo.expected, and say why in its JSON report. A case that
//! stops catching its bug, or starts failing a correct behaviour, shows up
//! here. Needs python3.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

#[test]
fn broken_server_fails_exactly_the_expected_cases() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let out = Command::new(env!("CARGO_BIN_EXE_conform"))
        .args(["--level", "echo", "--json", "--", "python3"])
        .arg(fixtures.join("broken_echo.py"))
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
    assert!(cases.len() >= 16, "the echo level has at least 16 cases");
    let failed: BTreeSet<&str> = cases
        .iter()
        .filter(|case| case["passed"] == false)
        .map(|case| case["id"].as_str().unwrap())
        .collect();
    let expected_text = std::fs::read_to_string(fixtures.join("broken_echo.expected")).unwrap();
    let expected: BTreeSet<&str> = expected_text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect();
    let reasons: Vec<String> = cases
        .iter()
        .filter(|case| case["passed"] == false)
        .map(|case| format!("  {}: {}", case["id"], case["reason"]))
        .collect();
    assert_eq!(
        failed,
        expected,
        "failed cases differ from tests/fixtures/broken_echo.expected; the reasons:\n{}",
        reasons.join("\n")
    );

    // Each failure says what went wrong, and where the book explains it.
    for case in cases.iter().filter(|case| case["passed"] == false) {
        assert!(case["reason"].as_str().is_some_and(|r| r.len() > 20));
        assert!(case["book"]["see"].as_str().unwrap().contains("book/src/"));
    }
    let sigterm = cases
        .iter()
        .find(|case| case["id"] == "echo::sigterm_exits_zero")
        .unwrap();
    assert!(
        sigterm["reason"]
            .as_str()
            .unwrap()
            .contains("does not handle SIGTERM"),
        "{sigterm}"
    );
}
