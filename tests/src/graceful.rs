//! Level `graceful`: what an event loop does on SIGINT or SIGTERM. It stops
//! accepting and reading, answers every frame it had received, sends the
//! replies, shuts down its side and waits for the clients to hang up, or
//! for `--grace-ms` to pass; then it exits with status 0.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::harness::{frame, Target};

/// Bytes the client has sent that the server's kernel has not yet
/// acknowledged (`SIOCOUTQ`): once 0, the server has received them all.
fn unacknowledged(stream: &TcpStream) -> usize {
    let mut count: libc::c_int = 0;
    // SAFETY: SIOCOUTQ writes one c_int through the pointer, to `count`.
    let rc = unsafe { libc::ioctl(stream.as_raw_fd(), libc::TIOCOUTQ, &mut count) };
    assert_eq!(
        rc,
        0,
        "ioctl(SIOCOUTQ): {}",
        std::io::Error::last_os_error()
    );
    count as usize
}

/// Reads until the server closes: whatever arrived, and whether the end was
/// a clean EOF (not a reset).
fn read_to_close(stream: &mut TcpStream) -> (Vec<u8>, Result<(), std::io::Error>) {
    let mut received = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return (received, Ok(())),
            Ok(n) => received.extend_from_slice(&chunk[..n]),
            Err(e) => return (received, Err(e)),
        }
    }
}

// ANCHOR: stop_answers
/// A client pipelines 2,000 frames and reads nothing until the server has
/// received them all; then the server is told to stop. The client must
/// read all 2,000 replies and then a clean EOF, not a reset, and the
/// server must exit with status 0 once the client has hung up.
pub fn stop_answers_every_frame_received(target: &Target) {
    let mut server = target.start();
    let mut client = server.connect();
    let payload = |i: u32| format!("frame {i:04} of 2000, pipelined").into_bytes();
    let requests: Vec<u8> = (0..2000).flat_map(|i| frame(&payload(i))).collect();
    client.send(&requests);
    let deadline = Instant::now() + Duration::from_secs(5);
    while unacknowledged(&client.stream) > 0 {
        assert!(
            Instant::now() < deadline,
            "the server did not take the frames in"
        );
        std::thread::yield_now();
    }
    server.signal(libc::SIGINT);
    let (replies, end) = read_to_close(&mut client.stream);
    assert!(
        replies == requests,
        "after the stop, the client received {} of {} bytes of replies: \
         frames the server had received went unanswered",
        replies.len(),
        requests.len()
    );
    if let Err(e) = end {
        panic!("after its last reply the client got {e}, not EOF: the server closed with a reset");
    }
    drop(client);
    let status = server.wait_exit(Duration::from_secs(2));
    assert!(status.success(), "the server exited with {status}");
}
// ANCHOR_END: stop_answers

// ANCHOR: stop_flood
/// A client floods the server without reading until neither side can take
/// more, then the server is told to stop. `close` with unread input would
/// send a reset and throw away the replies in flight; a graceful stop sends
/// whole replies, in order, then EOF.
pub fn stop_after_a_flood_ends_with_eof_not_reset(target: &Target) {
    let mut server = target.start();
    let mut client = server.connect();
    let requests: Vec<u8> = (0..4000u32)
        .flat_map(|i| frame(&[(i % 251) as u8; 1000]))
        .collect();
    client.stream.set_nonblocking(true).unwrap();
    let mut sent = 0;
    while sent < requests.len() {
        match client.stream.write(&requests[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("flooding: {e}"),
        }
    }
    assert!(sent > 1 << 20, "the flood was only {sent} bytes");
    server.signal(libc::SIGINT);
    client.stream.set_nonblocking(false).unwrap();
    let (replies, end) = read_to_close(&mut client.stream);
    if let Err(e) = end {
        panic!(
            "after {} bytes of replies the client got {e}, not EOF: \
             the server closed with unread input, and the kernel sent a reset",
            replies.len()
        );
    }
    let frame_len = 1004;
    assert!(
        replies.len() % frame_len == 0 && replies[..] == requests[..replies.len()],
        "the replies are not whole echoes of the requests, in order"
    );
    assert!(!replies.is_empty(), "no reply at all after the stop");
    drop(client);
    let status = server.wait_exit(Duration::from_secs(3));
    assert!(status.success(), "the server exited with {status}");
}
// ANCHOR_END: stop_flood

// ANCHOR: stop_deadline
/// A client that neither reads nor hangs up cannot hold the server past
/// its grace period (the default, one second: the case passes no option,
/// so it applies to any server).
pub fn stop_does_not_wait_past_the_grace_period(target: &Target) {
    let mut server = target.start();
    let mut client = server.connect();
    client.stream.set_nonblocking(true).unwrap();
    let chunk: Vec<u8> = (0..64).flat_map(|_| frame(&[7; 4000])).collect();
    let mut sent = 0usize;
    loop {
        match client.stream.write(&chunk[sent % chunk.len()..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("flooding: {e}"),
        }
    }
    let stop = Instant::now();
    server.signal(libc::SIGTERM);
    let status = server.wait_exit(Duration::from_secs(3));
    let took = stop.elapsed();
    assert!(status.success(), "the server exited with {status}");
    assert!(
        took >= Duration::from_millis(500),
        "the server gave up on a client with replies pending after only {took:?}, \
         not a grace period of a second"
    );
    assert!(
        took < Duration::from_millis(2500),
        "a client that never reads kept the server {took:?} past a grace period of a second"
    );
    drop(client);
}
// ANCHOR_END: stop_deadline

// ANCHOR: stop_idle
/// An idle client sees EOF as soon as the server stops; once it hangs up,
/// the server exits at once, without waiting for the grace period.
pub fn idle_client_sees_eof_and_the_server_exits_when_it_leaves(target: &Target) {
    let mut server = target.start();
    let mut client = server.connect();
    client.assert_echo(b"then nothing");
    let stop = Instant::now();
    server.signal(libc::SIGINT);
    let mut byte = [0u8; 1];
    let eof = client.stream.read(&mut byte);
    assert!(
        matches!(eof, Ok(0)),
        "an idle client should read EOF at the stop, got {eof:?}"
    );
    drop(client);
    let status = server.wait_exit(Duration::from_secs(2));
    assert!(status.success(), "the server exited with {status}");
    let took = stop.elapsed();
    assert!(
        took < Duration::from_millis(700),
        "the server took {took:?} to exit after its last client left: it waited \
         for its grace period (a second) instead of noticing"
    );
}
// ANCHOR_END: stop_idle

/// `--grace-ms` is in the usage.
pub fn help_shows_the_grace_period(target: &Target) {
    let out =
        crate::harness::run_bounded(&target.command, &["--help"], &[], Duration::from_secs(5));
    let usage = String::from_utf8_lossy(&out.stdout);
    assert!(
        usage.contains("--grace-ms MS"),
        "no --grace-ms in:\n{usage}"
    );
}

// ANCHOR: stop_twice
/// A second signal ends the grace period at once: the operator who presses
/// Ctrl-C twice means it.
pub fn second_signal_stops_at_once(target: &Target) {
    let mut server = target.start();
    // An idle client that never hangs up holds the stop for the grace
    // period, a second.
    let mut client = server.connect();
    client.assert_echo(b"holding on");
    server.signal(libc::SIGINT);
    let mut byte = [0u8; 1];
    assert!(
        matches!(client.stream.read(&mut byte), Ok(0)),
        "the client should read EOF at the stop"
    );
    let second = Instant::now();
    server.signal(libc::SIGTERM);
    let status = server.wait_exit(Duration::from_secs(3));
    assert!(status.success(), "the server exited with {status}");
    let took = second.elapsed();
    assert!(
        took < Duration::from_millis(500),
        "after a second signal the server took {took:?} to exit: it waited for its \
         grace period instead"
    );
    drop(client);
}
// ANCHOR_END: stop_twice
