//! The thread cap: `--max-threads` bounds how many clients are served at
//! once, and the clients beyond it are turned away, not left hanging, while
//! the server keeps serving the others.

use std::io::{Read, Write};
use std::time::Duration;

use conformance::harness::{frame, Client, Options, Server};

const BIN: &str = env!("CARGO_BIN_EXE_ch05");

/// A client that tries one echo, and says whether it got it, instead of
/// failing the test: the server may turn it away.
fn served(server: &Server) -> bool {
    let mut client = server.connect();
    let request = frame(b"room for me?");
    let mut reply = vec![0; request.len()];
    client.stream.write_all(&request).is_ok()
        && client.stream.read_exact(&mut reply).is_ok()
        && reply == request
}

// ANCHOR: cap
#[test]
fn clients_beyond_max_threads_are_turned_away_and_the_others_served() {
    let mut server = Server::start_with(
        BIN,
        Options {
            args: &["--max-threads", "4"],
            ..Options::default()
        },
    );
    let mut held: Vec<Client> = (0..4u8)
        .map(|i| {
            let mut client = server.connect();
            client.assert_echo(&[i; 10]);
            client
        })
        .collect();
    // Every thread is busy with an idle client: the next one is closed at
    // once, not left waiting.
    let mut fifth = server.connect();
    fifth
        .stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    fifth.assert_closed_by_server();
    for client in &mut held {
        client.assert_echo(b"still served");
    }
    // One leaves; its thread ends, and a newcomer gets it.
    drop(held.pop());
    server.eventually(Duration::from_secs(5), "a newcomer is served", served);
    server.assert_running();
}
// ANCHOR_END: cap

#[test]
fn help_shows_max_threads() {
    let out = conformance::harness::run_bounded(
        &[BIN.to_string()],
        &["--help"],
        &[],
        Duration::from_secs(5),
    );
    let usage = String::from_utf8_lossy(&out.stdout);
    assert!(
        usage.contains("--max-threads N") && usage.contains("[default: 10000]"),
        "{usage}"
    );
}
