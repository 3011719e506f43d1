//! Level `hello`: the ch03 contract. Each connection gets one read, one fixed
//! reply and a close, after which the server goes back to `accept`.

use std::io::{Read, Write};
use std::time::Duration;

use crate::harness::{Server, Target};

const IO_WAIT: Duration = Duration::from_secs(2);

/// The fixed reply ch03 sends to whatever a client says.
const REPLY: &[u8] = b"world";

/// Says hello on a new connection; returns everything the server sent
/// before closing it.
fn hello(server: &Server) -> Vec<u8> {
    let mut client = server.connect();
    client.send(b"hello");
    let mut reply = Vec::new();
    if let Err(e) = client.stream.read_to_end(&mut reply) {
        let what = match e.kind() {
            std::io::ErrorKind::ConnectionReset => "reset the connection".to_string(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                "neither finished its reply nor closed the connection".to_string()
            }
            _ => format!("broke the connection ({e})"),
        };
        panic!(
            "a client said hello; after {:?} the server {what}",
            String::from_utf8_lossy(&reply)
        );
    }
    reply
}

fn assert_world(reply: &[u8]) {
    assert!(
        reply == REPLY,
        "the server answered {:?} then closed; expected \"world\" then close",
        String::from_utf8_lossy(reply)
    );
}

pub fn replies_once_and_closes(target: &Target) {
    let server = target.start();
    assert_world(&hello(&server));
    // Logging what it heard is ch03's own convention, not every server's.
    if target.follows_contract() {
        // The log line travels through a pipe and a reader thread: wait for it.
        server.eventually(
            IO_WAIT,
            "the server logs `client says: hello` on stderr",
            |s| s.stderr().contains("client says: hello"),
        );
    }
}

pub fn serves_clients_one_after_another(target: &Target) {
    let server = target.start();
    for _ in 0..50 {
        assert_world(&hello(&server));
    }
}

// ANCHOR: test_silent_oversized
pub fn survives_silent_and_oversized_clients(target: &Target) {
    let mut server = target.start();
    // Connects and hangs up without a word: the read returns 0 (EOF).
    drop(server.connect());
    // Sends far more than one read takes: the rest is discarded at close.
    let mut chatty = server.connect();
    let _ = chatty.stream.write_all(&[b'x'; 100_000]);
    drop(chatty);
    server.assert_running();
    assert_world(&hello(&server));
}
// ANCHOR_END: test_silent_oversized

pub fn sigint_exits_zero(target: &Target) {
    let mut server = target.start();
    assert_world(&hello(&server));
    server.assert_stops_cleanly_on(libc::SIGINT, Duration::from_secs(2));
}

pub fn sigterm_exits_zero(target: &Target) {
    let mut server = target.start();
    server.assert_stops_cleanly_on(libc::SIGTERM, Duration::from_secs(2));
}

/// stderr is a pipe nobody reads: the server logs what every client says,
/// and a failed log line must not kill it.
pub fn broken_stderr_never_stops_the_server(target: &Target) {
    let mut server = target.start_with(crate::harness::Options {
        broken_stderr: true,
        ..Default::default()
    });
    for _ in 0..3 {
        assert_world(&hello(&server));
    }
    server.assert_stops_cleanly_on(libc::SIGINT, IO_WAIT);
}
