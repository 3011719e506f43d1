//! The tests of this chapter's exercises (book/src/answers.md has the
//! answers; `just exercise ch04-K` checks a solution). An `#[ignore]`d test
//! fails until its exercise is solved: run it with
//! `cargo test -p ch04 --test exercises -- --ignored NAME`.

use std::time::{Duration, Instant};

use conformance::harness::{secs, Server};

const BIN: &str = env!("CARGO_BIN_EXE_ch04");

/// Exercise 3: a client that announces 4096 bytes, sends ten and then
/// nothing is given up on after a second of silence: the next client is
/// served, and the stalled one sees its connection closed.
#[test]
#[ignore = "exercise ch04-3: passes once a silent client is given up on"]
fn a_client_silent_in_the_middle_of_a_frame_is_given_up_on() {
    let server = Server::start(BIN);
    let mut stalled = server.connect();
    stalled.send(&4096u32.to_le_bytes());
    stalled.send(&[b'x'; 10]);

    let start = Instant::now();
    let mut next = server.connect();
    next.stream
        .set_read_timeout(Some(Duration::from_secs(4)))
        .unwrap();
    if let Err(e) = next.try_echo(b"my turn?") {
        panic!(
            "a client stalled in the middle of a frame; {} later, the next client \
             was still not served ({e})",
            secs(start.elapsed())
        );
    }
    stalled
        .stream
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    stalled.assert_closed_by_server();
}
