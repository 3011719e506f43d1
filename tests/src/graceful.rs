//! Level `graceful`: what an event loop does on SIGINT or SIGTERM. It stops
//! accepting and reading, answers every frame it had received, sends the
//! replies, shuts down its side and waits for the clients to hang up, or
//! for `--grace-ms` to pass; then it exits with status 0.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::harness::{describe_exit, frame, secs, Options, Target};

/// The grace period the cases assume, `--grace-ms`'s default: the cases
/// pass no option, so that they apply to any server.
const GRACE: Duration = Duration::from_millis(1000);

/// How long after a stop a server that did not wait out its grace period
/// may take to exit. A server that waits exits a whole grace period after
/// the stop, whatever the load; one that does not usually exits within
/// milliseconds, and this leaves it room for several stalls of a loaded
/// machine (200 ms each) on its way.
const PROMPT_EXIT: Duration = Duration::from_millis(900);

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
    while client.unacknowledged() > 0 {
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
        panic!(
            "after its last reply the client got {}, not EOF: the server closed with a reset",
            ending(&e)
        );
    }
    drop(client);
    let status = server.wait_exit(Duration::from_secs(2));
    assert!(
        status.success(),
        "after its last client left, the server {}, not status 0",
        describe_exit(status)
    );
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
            "after {} bytes of replies the client got {}, not EOF: \
             the server closed with unread input, and the kernel sent a reset",
            replies.len(),
            ending(&e)
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
    assert!(
        status.success(),
        "after its last client left, the server {}, not status 0",
        describe_exit(status)
    );
}
// ANCHOR_END: stop_flood

// ANCHOR: stop_deadline
/// A client that neither reads nor hangs up cannot hold the server past
/// its grace period (the default, one second: the case passes no option,
/// so it applies to any server). That the server waits for about that
/// long first is echo-steps' convention, checked only on its servers.
pub fn stop_does_not_wait_past_the_grace_period(target: &Target) {
    let mut server = target.start();
    let client = server.connect_stuck();
    let stop = Instant::now();
    server.signal(libc::SIGTERM);
    let status = server.wait_exit(Duration::from_secs(3));
    let took = stop.elapsed();
    assert!(
        status.success(),
        "stopped while a client did not read its replies, the server {}, not status 0",
        describe_exit(status)
    );
    assert!(
        took >= GRACE / 2 || !target.follows_contract(),
        "the server gave up on a client with replies pending after only {}, \
         not a grace period of {}",
        secs(took),
        secs(GRACE)
    );
    assert!(
        took < GRACE + Duration::from_millis(1500),
        "a client that never reads kept the server {} after the stop, past a grace period of {}",
        secs(took),
        secs(GRACE)
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
    match client.stream.read(&mut byte) {
        Ok(0) => {}
        Ok(_) => panic!("at the stop, an idle client received a byte instead of EOF"),
        Err(e) => panic!(
            "at the stop, an idle client should read EOF, but {}",
            read_error(&e)
        ),
    }
    drop(client);
    let status = server.wait_exit(Duration::from_secs(2));
    assert!(
        status.success(),
        "after its last client left, the server {}, not status 0",
        describe_exit(status)
    );
    let took = stop.elapsed();
    assert!(
        took < PROMPT_EXIT,
        "the server took {} to exit after its last client left: it waited \
         for its grace period ({}) instead of noticing",
        secs(took),
        secs(GRACE)
    );
}

/// How a connection ended, when it was not a clean EOF.
fn ending(e: &std::io::Error) -> String {
    match e.kind() {
        ErrorKind::ConnectionReset => "a reset (ECONNRESET)".to_string(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut => {
            "nothing more, neither data nor EOF".to_string()
        }
        _ => format!("an error ({e})"),
    }
}

/// A failed read as the end of "..., but ".
fn read_error(e: &std::io::Error) -> String {
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => "nothing came".to_string(),
        ErrorKind::ConnectionReset => "the server reset the connection".to_string(),
        _ => format!("reading failed: {e}"),
    }
}
// ANCHOR_END: stop_idle

/// `--grace-ms` is in the usage.
pub fn help_shows_the_grace_period(target: &Target) {
    let out =
        crate::harness::run_bounded(&target.command, &["--help"], &[], Duration::from_secs(5));
    let usage = String::from_utf8_lossy(&out.stdout);
    assert!(
        usage.contains("--grace-ms MS"),
        "`--help` does not list `--grace-ms MS`; it printed {}",
        crate::cli::quoted(&usage)
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
    let first = Instant::now();
    server.signal(libc::SIGINT);
    let mut byte = [0u8; 1];
    match client.stream.read(&mut byte) {
        Ok(0) => {}
        Ok(_) => panic!("at the stop, an idle client received a byte instead of EOF"),
        Err(e) => panic!(
            "at the stop, an idle client should read EOF, but {}",
            read_error(&e)
        ),
    }
    server.signal(libc::SIGTERM);
    let status = server.wait_exit(Duration::from_secs(3));
    assert!(
        status.success(),
        "after a second signal the server {}, not status 0",
        describe_exit(status)
    );
    // From the first signal: a server that ignores the second one exits a
    // whole grace period after the first, however loaded the machine.
    let took = first.elapsed();
    assert!(
        took < PROMPT_EXIT,
        "the server exited {} after the first signal although a second one \
         came at once: it waited out its grace period ({}) instead",
        secs(took),
        secs(GRACE)
    );
    drop(client);
}
// ANCHOR_END: stop_twice

// ANCHOR: stop_log
/// A stop that ends before every connection is finished says so in the
/// same words whichever way it ends, a second signal or the end of the
/// grace period: "closing 1 connection that did not finish", never "grace
/// period over" (untrue when a second signal cut it short). A client that
/// sends and never reads keeps its connection from finishing. The words
/// are echo-steps' own: what a log says is every other server's business.
pub fn a_stop_that_ends_early_says_how_many_did_not_finish(target: &Target) {
    const SAID: &str = "closing 1 connection that did not finish";
    for (grace_ms, second_signal) in [("20000", true), ("300", false)] {
        let how = match second_signal {
            true => "a second signal cut the grace period short",
            false => "the grace period ended",
        };
        let mut server = target.start_with(Options {
            args: &["--grace-ms", grace_ms],
            ..Options::default()
        });
        let _stuck = server.connect_stuck();
        server.signal(libc::SIGINT);
        if second_signal {
            // Two signals pending at once are one: the first must be read.
            server.eventually(LOG_PATIENCE, "the server logs that it is stopping", |s| {
                s.stderr().contains("stopping")
            });
            server.signal(libc::SIGINT);
        }
        let status = server.wait_exit(Duration::from_secs(10));
        assert!(
            status.success(),
            "{how}, and the server {}, not status 0",
            describe_exit(status)
        );
        // The log is read by another thread: it may lag the exit a little.
        let deadline = Instant::now() + LOG_PATIENCE;
        while !server.stderr().contains(SAID) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let log = server.stderr();
        let last: Vec<&str> = log.lines().rev().take(3).collect();
        assert!(
            log.contains(SAID),
            "{how} with a client that never read its replies: the log should say \
             {SAID:?}; its last lines were {:?}",
            last.into_iter().rev().collect::<Vec<_>>()
        );
        assert!(
            !log.contains("grace period over"),
            "{how}, and the log says \"grace period over\": the same words whichever \
             way the stop ends"
        );
    }
}
// ANCHOR_END: stop_log

/// How long the log may take to show a line, on a loaded machine.
const LOG_PATIENCE: Duration = Duration::from_secs(3);
