//! Level `hello`: the ch03 contract. Each connection gets one read, one fixed
//! reply and a close, after which the server goes back to `accept`.

use std::io::{Read, Write};
use std::time::Duration;

use crate::harness::Server;

const IO_WAIT: Duration = Duration::from_secs(2);

/// The fixed reply ch03 sends to whatever a client says.
pub const REPLY: &[u8] = b"world";

fn hello(server: &Server) -> Vec<u8> {
    let mut client = server.connect();
    client.send(b"hello");
    let mut reply = Vec::new();
    client
        .stream
        .read_to_end(&mut reply)
        .expect("reply, then EOF");
    reply
}

pub fn replies_once_and_closes(bin: &str) {
    let server = Server::start(bin);
    assert_eq!(hello(&server), REPLY);
    // The log line travels through a pipe and a reader thread: wait for it.
    server.eventually(IO_WAIT, "the server logs what the client said", |s| {
        s.stderr().contains("client says: hello")
    });
}

pub fn serves_clients_one_after_another(bin: &str) {
    let server = Server::start(bin);
    for _ in 0..50 {
        assert_eq!(hello(&server), REPLY);
    }
}

// ANCHOR: test_silent_oversized
pub fn survives_silent_and_oversized_clients(bin: &str) {
    let mut server = Server::start(bin);
    // Connects and hangs up without a word: the read returns 0 (EOF).
    drop(server.connect());
    // Sends far more than one read takes: the rest is discarded at close.
    let mut chatty = server.connect();
    let _ = chatty.stream.write_all(&[b'x'; 100_000]);
    drop(chatty);
    server.assert_running();
    assert_eq!(hello(&server), REPLY);
}
// ANCHOR_END: test_silent_oversized

pub fn sigint_exits_zero(bin: &str) {
    let mut server = Server::start(bin);
    assert_eq!(hello(&server), REPLY);
    server.assert_stops_cleanly_on(libc::SIGINT, Duration::from_secs(2));
}

pub fn sigterm_exits_zero(bin: &str) {
    let mut server = Server::start(bin);
    server.assert_stops_cleanly_on(libc::SIGTERM, Duration::from_secs(2));
}
