//! The tests of this chapter's exercises (book/src/answers.md has the
//! answers; `just exercise ch14-K` checks a solution). An `#[ignore]`d test
//! fails until its exercise is solved: run it with
//! `cargo test -p ch14 --test exercises -- --ignored NAME`.

use std::time::Duration;

use conformance::harness::Server;

const BIN: &str = env!("CARGO_BIN_EXE_ch14");

/// Exercise 2: every second the server logs how many connections are open,
/// as `2 connections open`: chapter 10's exercise, as a task.
#[test]
#[ignore = "exercise ch14-2: passes once a task logs the open connections"]
fn the_open_connections_are_logged_every_second() {
    let server = Server::start(BIN);
    let mut first = server.connect();
    first.assert_echo(b"one");
    let mut second = server.connect();
    second.assert_echo(b"two");
    let logged =
        |line: &'static str| move |s: &Server| s.stderr().lines().any(|l| l.ends_with(line));
    server.eventually(
        Duration::from_secs(3),
        "with two clients connected, the server logs `2 connections open`",
        logged("2 connections open"),
    );
    drop(first);
    server.eventually(
        Duration::from_secs(3),
        "once one of them left, the server logs `1 connection open`",
        logged("1 connection open"),
    );
}
