//! The tests of this chapter's exercises (book/src/answers.md has the
//! answers; `just exercise ch03-K` checks a solution). An `#[ignore]`d test
//! fails until its exercise is solved: run it with
//! `cargo test -p ch03 --test exercises -- --ignored NAME`. The others pass
//! on the chapter as it is, and fail once the exercise breaks what they check.

use std::io::Read;
use std::time::Duration;

use conformance::harness::{Options, Server};

const BIN: &str = env!("CARGO_BIN_EXE_ch03");

/// Says `message` on a new connection, and returns all the server sent
/// before it closed the connection.
fn say(server: &Server, message: &[u8]) -> Vec<u8> {
    let mut client = server.connect();
    client.send(message);
    let mut reply = Vec::new();
    client
        .stream
        .read_to_end(&mut reply)
        .unwrap_or_else(|e| panic!("reading the reply to {message:?}: {e}"));
    reply
}

/// Exercise 1. The server closes first, so the connections it served wait
/// in TIME_WAIT on its port for a minute after it exits. A server restarted
/// at once must still be able to bind that port.
#[test]
fn a_restarted_server_binds_its_port_at_once() {
    let mut first = Server::start(BIN);
    let addr = first.addr.to_string();
    assert_eq!(say(&first, b"hello"), b"world");
    first.assert_stops_cleanly_on(libc::SIGTERM, Duration::from_secs(5));
    // Panics, with the server's last words, if it cannot listen there.
    let mut second = Server::start_with(
        BIN,
        Options {
            addr: Some(&addr),
            ..Options::default()
        },
    );
    assert_eq!(say(&second, b"hello again"), b"world");
    second.assert_running();
}

/// Exercise 2: the log line names the client, as `accept` reports it: its
/// IP address and port, `127.0.0.1:54321 says: hello`.
#[test]
#[ignore = "exercise ch03-2: passes once the server logs who connected"]
fn the_log_names_the_client() {
    let server = Server::start(BIN);
    let mut client = server.connect();
    let me = client.stream.local_addr().unwrap().to_string();
    client.send(b"hello");
    let mut reply = Vec::new();
    client.stream.read_to_end(&mut reply).unwrap();
    server.eventually(
        Duration::from_secs(2),
        &format!("the server logs a line with `{me}` and `says: hello` on stderr"),
        |s| {
            s.stderr()
                .lines()
                .any(|line| line.contains(&me) && line.contains("says: hello"))
        },
    );
}

/// Exercise 3: the reply is what the client said, then the close.
#[test]
#[ignore = "exercise ch03-3: passes once the server echoes what it read"]
fn the_reply_is_what_the_client_said() {
    let server = Server::start(BIN);
    for message in [&b"hello"[..], b"something else", b"x"] {
        let reply = say(&server, message);
        assert!(
            reply == message,
            "a client said {:?} and the server answered {:?}",
            String::from_utf8_lossy(message),
            String::from_utf8_lossy(&reply)
        );
    }
}
