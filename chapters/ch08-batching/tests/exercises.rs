//! The tests of this chapter's exercises (book/src/answers.md has the
//! answers; `just exercise ch08-K` checks a solution). These pass on the
//! chapter as it is, and fail once an exercise breaks what they check.

use std::mem;
use std::os::fd::AsRawFd;

use conformance::harness::{frame, Client, Server};

const BIN: &str = env!("CARGO_BIN_EXE_ch08");

/// How many TCP segments the client's socket has received (`TCP_INFO`).
fn segments_in(client: &Client) -> u32 {
    // SAFETY: all-zero bytes are a valid tcp_info.
    let mut info: libc::tcp_info = unsafe { mem::zeroed() };
    let mut len = mem::size_of_val(&info) as libc::socklen_t;
    // SAFETY: the pointers describe `info` and `len`, alive for the call.
    let rc = unsafe {
        libc::getsockopt(
            client.stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "getsockopt(TCP_INFO)");
    info.tcpi_segs_in
}

/// Exercise 2: a hundred frames pipelined in one write come back in one
/// send: a handful of segments, not one per reply (each reply in a send of
/// its own leaves at once, in a segment of its own: TCP_NODELAY).
#[test]
fn a_burst_of_pipelined_frames_comes_back_in_a_few_segments() {
    let server = Server::start(BIN);
    let mut client = server.connect();
    client.assert_echo(b"warm up");
    let burst: Vec<u8> = (0..100u8).flat_map(|i| frame(&[i])).collect();
    let before = segments_in(&client);
    client.send(&burst);
    assert!(
        client.recv_exact(burst.len()) == burst,
        "the replies differ"
    );
    let segments = segments_in(&client) - before;
    assert!(
        segments <= 10,
        "100 frames sent in one write came back in {segments} TCP segments: \
         the replies were not batched into one send"
    );
}
