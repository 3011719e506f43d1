//! The tests of this chapter's exercises (book/src/answers.md has the
//! answers; `just exercise ch15-K` checks a solution). These pass on the
//! chapter as it is, and fail once an exercise breaks what they check.
//! Where io_uring is unavailable they skip, saying so.

use std::io::ErrorKind;
use std::net::TcpStream;
use std::time::Duration;

use conformance::harness::{Options, Server};

mod uring;

const BIN: &str = env!("CARGO_BIN_EXE_ch15");

/// Exercise 1: once a stop has begun, the port refuses new clients at
/// once, while a connected client keeps the server in its grace period.
#[test]
fn a_stopping_server_refuses_new_clients() {
    if uring::unavailable() {
        return;
    }
    let mut server = Server::start_with(
        BIN,
        Options {
            args: &["--grace-ms", "10000"],
            ..Options::default()
        },
    );
    let mut client = server.connect();
    client.assert_echo(b"keeping the server in its grace period");
    server.signal(libc::SIGINT);
    server.eventually(
        Duration::from_secs(3),
        "once stopping, the server refuses new connections (the listener is closed)",
        |s| matches!(TcpStream::connect(s.addr), Err(e) if e.kind() == ErrorKind::ConnectionRefused),
    );
    server.assert_running();
}
