//! The idle timeout, with a short one (200 ms) so the tests stay quick.

use std::io::{ErrorKind, Read, Write};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use conformance::harness::{frame, Client, Options, Server};

const BIN: &str = env!("CARGO_BIN_EXE_ch12");
const TIMEOUT: Duration = Duration::from_millis(200);
/// How late after its deadline a connection may be closed.
const SLACK: Duration = Duration::from_millis(100);

fn start() -> Server {
    Server::start_with(
        BIN,
        Options {
            args: &["--idle-timeout-ms", "200"],
            ..Default::default()
        },
    )
}

/// The server logs before it closes, but its stderr reaches us through a
/// pipe and a thread: wait for the line rather than race it.
fn assert_logged(server: &Server, line: &str) {
    server.eventually(Duration::from_secs(2), line, |s| s.stderr().contains(line));
}

/// Waits for the server to close `client`, and returns when that happened.
fn closed_at(client: &mut Client) -> Instant {
    client.assert_closed_by_server();
    Instant::now()
}

#[test]
fn an_idle_connection_is_closed_after_the_timeout() {
    let server = start();
    let mut client = server.connect();
    // The server's clock starts between these two instants: when it sends
    // the reply.
    let before_send = Instant::now();
    client.assert_echo(b"and then silence");
    let after_reply = Instant::now();
    let closed = closed_at(&mut client);
    assert!(
        closed - before_send >= TIMEOUT,
        "closed {:?} after the last activity",
        closed - before_send
    );
    assert!(
        closed - after_reply <= TIMEOUT + SLACK,
        "closed only {:?} after the last activity",
        closed - after_reply
    );
    assert_logged(&server, "idle for 200 ms");
}

/// Slowloris: half a frame, then nothing. Receiving bytes is not activity.
#[test]
fn half_a_frame_is_closed_after_the_timeout() {
    let server = start();
    let before_connect = Instant::now();
    let mut client = server.connect();
    client.send(&frame(b"twenty bytes or so..")[..12]);
    let after_send = Instant::now();
    let closed = closed_at(&mut client);
    assert!(closed - before_connect >= TIMEOUT);
    assert!(closed - after_send <= TIMEOUT + SLACK);
    assert_logged(&server, "in the middle of a frame");
}

/// Slowloris, patient: a byte every 50 ms keeps bytes arriving, but no frame
/// is ever finished, so no reply ever goes out. The timeout runs from connect.
#[test]
fn bytes_that_never_complete_a_frame_do_not_keep_a_connection_open() {
    let server = start();
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
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(_) => break Instant::now(), // reset: closed too
        }
        assert!(
            before_connect.elapsed() < 10 * TIMEOUT,
            "still open after {sent} bytes"
        );
    };
    assert!(sent >= 3, "closed after only {sent} bytes");
    assert!(
        closed - before_connect <= TIMEOUT + SLACK,
        "closed {:?} after connecting, {sent} bytes in",
        closed - before_connect
    );
}

#[test]
fn a_frame_every_100_ms_keeps_a_connection_open() {
    let server = start();
    let mut client = server.connect();
    for i in 0..10 {
        // Pacing, not synchronisation: the gaps are half the timeout.
        thread::sleep(Duration::from_millis(100));
        client.assert_echo(format!("still here {i}").as_bytes());
    }
}

/// A client that sends without reading: its replies pile up until
/// backpressure stops the server reading, and no reply goes out any more.
/// A connection stuck like that is idle too, and is closed.
#[test]
fn a_client_that_never_reads_is_closed() {
    let server = start();
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
        Duration::from_secs(2),
        "the stalled connection is closed",
        |s| s.open_fds() == baseline,
    );
    assert_logged(&server, "with replies it does not read");
}

#[test]
fn a_thousand_idle_connections_are_all_reaped() {
    let mut server = start();
    let baseline = server.open_fds();
    let mut clients: Vec<Client> = (0..1000).map(|_| server.connect()).collect();
    let connected = Instant::now();
    for client in &mut clients {
        client.assert_closed_by_server();
    }
    assert!(
        connected.elapsed() <= TIMEOUT + SLACK,
        "the last was closed {:?} after the last connected",
        connected.elapsed()
    );
    server.eventually(SLACK, "every descriptor is closed", |s| {
        s.open_fds() == baseline
    });
    server.assert_serves();
}

#[test]
fn a_bad_idle_timeout_is_a_startup_error() {
    for bad in ["abc", "-1", "0", "", "1.5", "99999999999999999999"] {
        let mut child = Command::new(BIN)
            .args(["--addr", "127.0.0.1:0", "--idle-timeout-ms", bad])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("--idle-timeout-ms {bad:?}: the server started");
            }
            thread::sleep(Duration::from_millis(10));
        };
        let mut stderr = String::new();
        child.stderr.unwrap().read_to_string(&mut stderr).unwrap();
        assert!(!status.success(), "--idle-timeout-ms {bad:?}: {status}");
        assert!(stderr.contains("--idle-timeout-ms"), "{bad:?}: {stderr}");
    }
}
