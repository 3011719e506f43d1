//! Level `idle_timeout`: a connection idle for `--idle-timeout-ms` is
//! closed (chapter 11 onwards). Activity means a reply went out, so the
//! silent client, the slowloris that dribbles in half a frame, and the
//! client that never reads its replies are all closed; a slow but honest
//! client is not.
//!
//! The timeouts are short so that the cases stay quick, and every margin
//! leaves room for a loaded machine, where any thread may stall for 200 ms:
//! the lower bounds ("not before the timeout") cannot be broken by a stall,
//! and the upper ones allow for two.

use std::io::{ErrorKind, Read, Write};
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::{frame, not_applicable, run_bounded, secs, Client, Options, Server, Target};

/// The timeout of the cases that wait for a close.
const TIMEOUT: Duration = Duration::from_millis(500);
const TIMEOUT_ARG: &str = "500";
/// How late after its deadline a connection may be closed: two stalls of a
/// loaded machine, still short of a second timeout period.
const SLACK: Duration = Duration::from_millis(400);

fn start(target: &Target, timeout_ms: &str) -> Server {
    if !target.follows_contract() {
        not_applicable(
            "the case sets the timeout with --idle-timeout-ms, which conform can give \
             only to a server it starts with --addr",
        );
    }
    target.start_with(Options {
        args: &["--idle-timeout-ms", timeout_ms],
        ..Options::default()
    })
}

/// The server logs before it closes, but its stderr reaches us through a
/// pipe and a thread: wait for the line rather than race it.
fn assert_logged(server: &Server, line: &str) {
    server.eventually(
        Duration::from_secs(2),
        &format!("the server logs `{line}`"),
        |s| s.stderr().contains(line),
    );
}

/// Waits for the server to close `client`; when that happened.
fn closed_at(client: &mut Client, what: &str) -> Instant {
    let patience = TIMEOUT + Duration::from_secs(2);
    client.stream.set_read_timeout(Some(patience)).unwrap();
    if let Err(e) = client.try_closed_by_server() {
        panic!(
            "{what} should be closed after the idle timeout ({}), but {e}",
            secs(TIMEOUT)
        );
    }
    Instant::now()
}

/// Checks a close at `closed` against the timeout: not before `earliest`
/// plus the timeout, not later than `latest` plus the timeout and slack.
fn assert_on_time(what: &str, earliest: Instant, latest: Instant, closed: Instant) {
    assert!(
        closed - earliest >= TIMEOUT,
        "{what} was closed {} after its last activity, before the timeout of {}",
        secs(closed - earliest),
        secs(TIMEOUT)
    );
    assert!(
        closed - latest <= TIMEOUT + SLACK,
        "{what} was closed only {} after its last activity, with a timeout of {}",
        secs(closed - latest),
        secs(TIMEOUT)
    );
}

pub fn an_idle_connection_is_closed_after_the_timeout(target: &Target) {
    let server = start(target, TIMEOUT_ARG);
    let mut client = server.connect();
    // The server's clock starts between these two instants: when it sends
    // the reply.
    let before_send = Instant::now();
    client.assert_echo(b"and then silence");
    let after_reply = Instant::now();
    let closed = closed_at(&mut client, "a client that went quiet");
    assert_on_time("a client that went quiet", before_send, after_reply, closed);
    assert_logged(&server, "idle for 500 ms");
}

/// Slowloris: half a frame, then nothing. Receiving bytes is not activity.
pub fn half_a_frame_is_closed_after_the_timeout(target: &Target) {
    let server = start(target, TIMEOUT_ARG);
    let before_connect = Instant::now();
    let mut client = server.connect();
    client.send(&frame(b"twenty bytes or so..")[..12]);
    let after_send = Instant::now();
    let closed = closed_at(&mut client, "a client that sent half a frame");
    assert_on_time(
        "a client that sent half a frame",
        before_connect,
        after_send,
        closed,
    );
    assert_logged(&server, "in the middle of a frame");
}

/// Slowloris, patient: a byte every 50 ms keeps bytes arriving, but no frame
/// is ever finished, so no reply ever goes out. The timeout runs from connect.
pub fn bytes_that_never_complete_a_frame_do_not_keep_a_connection_open(target: &Target) {
    let server = start(target, TIMEOUT_ARG);
    let before_connect = Instant::now();
    let mut client = server.connect();
    let header = (4096u32).to_le_bytes();
    // The read timeout paces the sender; a read that returns means closed.
    client
        .stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut sent = 0;
    let closed = loop {
        let byte = header.get(sent).copied().unwrap_or(b'x');
        if client.stream.write_all(&[byte]).is_err() {
            break Instant::now();
        }
        sent += 1;
        match client.stream.read(&mut [0; 1]) {
            Ok(0) => break Instant::now(),
            Ok(_) => panic!("the server answered half a frame"),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break Instant::now(), // reset: closed too
        }
        assert!(
            before_connect.elapsed() < 4 * TIMEOUT,
            "a client that sent a byte every 50 ms and never finished a frame was still \
             connected after {sent} bytes and {}: bytes that complete nothing are not activity",
            secs(before_connect.elapsed())
        );
    };
    assert!(
        closed - before_connect <= TIMEOUT + SLACK,
        "a client that never finished a frame was closed {} after connecting, {sent} bytes \
         in, with a timeout of {}",
        secs(closed - before_connect),
        secs(TIMEOUT)
    );
}

/// A frame every 200 ms for two seconds against a timeout of one second: a
/// slow but honest client is never closed. A stall of the client or the
/// server stretches a gap to 400 ms, well within the timeout.
pub fn a_frame_every_200_ms_keeps_a_connection_open(target: &Target) {
    let server = start(target, "1000");
    let mut client = server.connect();
    for i in 0..10 {
        // Pacing, not synchronisation: the gaps are a fifth of the timeout.
        thread::sleep(Duration::from_millis(200));
        if let Err(e) = client.try_echo(format!("still here {i}").as_bytes()) {
            panic!(
                "a client that sent a frame every 200 ms, with a timeout of 1 s: frame {i}: {e}"
            );
        }
    }
}

/// A client that sends without reading: its replies pile up until
/// backpressure stops the server reading, and no reply goes out any more.
/// A connection stuck like that is idle too, and is closed.
pub fn a_client_that_never_reads_is_closed(target: &Target) {
    let server = start(target, TIMEOUT_ARG);
    let baseline = server.open_fds();
    let mut client = server.connect();
    client.stream.set_nonblocking(true).unwrap();
    let burst = frame(&[7; 4096]).repeat(64);
    // Fill every buffer between us, both ways, until our writes block for
    // good, or fail because the server has already closed the connection.
    let mut sent = 0;
    let mut stalled_since = Instant::now();
    while stalled_since.elapsed() < Duration::from_millis(50) {
        // Go on from a short write's end, or the frames would come apart.
        match client.stream.write(&burst[sent..]) {
            Ok(n) => {
                sent = (sent + n) % burst.len();
                stalled_since = Instant::now();
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::yield_now(),
            Err(_) => break,
        }
    }
    // Not by reading (which would be activity): by its descriptor going.
    server.eventually(
        TIMEOUT + Duration::from_secs(2),
        "the connection of a client that never reads is closed",
        |s| s.open_fds() == baseline,
    );
    assert_logged(&server, "with replies it does not read");
}

/// A thousand quiet connections: every one is closed, not long after the
/// last one's timeout (a server that reaps one per timer tick is far
/// later), and every descriptor goes back.
pub fn a_thousand_idle_connections_are_all_reaped(target: &Target) {
    let mut server = start(target, TIMEOUT_ARG);
    let baseline = server.open_fds();
    let mut clients: Vec<Client> = (0..1000).map(|_| server.connect()).collect();
    let connected = Instant::now();
    for (i, client) in clients.iter_mut().enumerate() {
        let patience = (TIMEOUT + Duration::from_secs(2)).saturating_sub(connected.elapsed());
        client
            .stream
            .set_read_timeout(Some(patience.max(Duration::from_millis(1))))
            .unwrap();
        if let Err(e) = client.try_closed_by_server() {
            panic!("of 1000 idle connections, connection {i} should be closed, but {e}");
        }
    }
    let took = connected.elapsed();
    assert!(
        took <= TIMEOUT + Duration::from_secs(1),
        "the last of 1000 idle connections was closed {} after the last connected, with \
         a timeout of {}",
        secs(took),
        secs(TIMEOUT)
    );
    server.eventually(
        Duration::from_secs(2),
        "the descriptors of 1000 closed connections go back",
        |s| s.open_fds() == baseline,
    );
    server.assert_serves();
}

/// A timeout nobody meant (0, a negative one, not a number) stops the
/// server at start-up with a message, instead of serving with it.
pub fn a_bad_idle_timeout_is_a_startup_error(target: &Target) {
    for bad in ["abc", "-1", "0", "", "1.5", "99999999999999999999"] {
        let out = run_bounded(
            &target.command,
            &["--addr", "127.0.0.1:0", "--idle-timeout-ms", bad],
            &[],
            Duration::from_secs(2),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "`--idle-timeout-ms {bad:?}` should stop the server at start-up, but it exited with status 0"
        );
        assert!(
            stderr.contains("--idle-timeout-ms"),
            "`--idle-timeout-ms {bad:?}`: the error does not name the option: {}",
            crate::cli::quoted(&stderr)
        );
    }
}
