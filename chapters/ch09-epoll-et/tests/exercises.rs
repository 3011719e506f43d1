//! The tests of this chapter's exercises (book/src/answers.md has the
//! answers; `just exercise ch09-K` checks a solution). These pass on the
//! chapter as it is, and fail once an exercise breaks what they check.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::time::Duration;

use conformance::harness::{frame, Server};

const BIN: &str = env!("CARGO_BIN_EXE_ch09");

/// Exercise 1: a frame, one byte of urgent data, another frame, all in
/// the server's receive queue before it reads any of them. Its first read
/// stops short at the urgent mark, with the second frame behind it, and
/// no new edge will come for that frame: only reading on, until `EAGAIN`,
/// finds it. The suite's `urgent_data_does_not_stall_the_connection` sends
/// the same bytes, but the urgent byte leaves in a segment of its own, and
/// a server that reads before the rest arrives gets a new edge for it. Here
/// the server is stopped (SIGSTOP) until its kernel has every byte.
#[test]
fn a_frame_behind_the_urgent_mark_is_answered() {
    let server = Server::start(BIN);
    let mut client = server.connect();
    client.assert_echo(b"warm up");
    server.freeze();
    client.send_frame(b"before");
    // SAFETY: the pointer and length describe a 1-byte static buffer.
    let sent = unsafe {
        libc::send(
            client.stream.as_raw_fd(),
            b"!".as_ptr().cast(),
            1,
            libc::MSG_OOB,
        )
    };
    assert_eq!(sent, 1, "send(MSG_OOB)");
    client.send_frame(b"after");
    server.eventually(
        Duration::from_secs(5),
        "the stopped server's kernel acknowledges every byte",
        |_| client.unacknowledged() == 0,
    );
    server.thaw();
    client
        .stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    assert_eq!(client.recv_frame(), b"before");
    let mut after = [0u8; 9];
    if let Err(e) = client.stream.read_exact(&mut after) {
        panic!(
            "a frame queued behind one byte of urgent data got no reply in 3 s ({e}): the \
             server stopped reading at the urgent mark, and no edge will come for it"
        );
    }
    assert_eq!(after[..], frame(b"after")[..]);
}
