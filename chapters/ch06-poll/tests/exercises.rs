//! The tests of this chapter's exercises (book/src/answers.md has the
//! answers; `just exercise ch06-K` checks a solution). An `#[ignore]`d test
//! fails until its exercise is solved: run it with
//! `cargo test -p ch06 --test exercises -- --ignored NAME`.

use std::io::{ErrorKind, Read};
use std::time::Duration;

use conformance::harness::{Options, Server};

const BIN: &str = env!("CARGO_BIN_EXE_ch06");

/// Exercise 3: with `--max-conns 2`, a third client waits in the listen
/// backlog, unserved, until one of the two leaves; then it is served.
#[test]
#[ignore = "exercise ch06-3: passes once --max-conns leaves the listener out of poll"]
fn a_full_server_leaves_the_next_client_in_the_backlog() {
    let server = Server::start_with(
        BIN,
        Options {
            args: &["--max-conns", "2"],
            ..Options::default()
        },
    );
    let mut first = server.connect();
    first.assert_echo(b"one");
    let mut second = server.connect();
    second.assert_echo(b"two");

    // The kernel completes the handshake and queues the bytes; nobody reads them.
    let mut third = server.connect();
    third.send_frame(b"three");
    third
        .stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    match third.stream.read(&mut [0; 1]) {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!(
            "two clients are connected to a server started with --max-conns 2; a third \
             should wait unserved, but its read gave {other:?}"
        ),
    }
    second.assert_echo(b"still served");

    drop(first);
    third
        .stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(
        third.recv_frame(),
        b"three",
        "once a client left, the third is served"
    );
}
