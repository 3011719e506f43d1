//! What real peers do to a TCP connection that a polite test client never
//! does: pipeline small frames and wait, mix a valid frame with a bad one,
//! send urgent data; and what real machines do to a server: break its
//! stderr, lower its file limit (`accept`'s failures have a module of their
//! own, accept.rs). For every echo server.

use std::io::{ErrorKind, Read};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::{frame, secs, Options, Target, IO_TIMEOUT};

// ANCHOR: nagle
/// A client writes three small frames at once and waits for the three
/// replies, twenty times. A server that writes one reply per `send` with
/// Nagle's algorithm on makes the second reply wait for the client's
/// delayed ACK of the first: about 40 ms per exchange on Linux.
pub fn small_pipelined_frames_are_answered_at_once(target: &Target) {
    let server = target.start();
    let mut client = server.connect();
    let burst: Vec<u8> = [&b"one"[..], b"two", b"three"]
        .iter()
        .flat_map(|p| frame(p))
        .collect();
    let mut exchanges = Vec::new();
    for _ in 0..20 {
        let start = Instant::now();
        client.send(&burst);
        assert!(
            client.recv_exact(burst.len()) == burst,
            "three small pipelined frames came back different"
        );
        exchanges.push(start.elapsed());
    }
    exchanges.sort();
    let median = exchanges[exchanges.len() / 2];
    assert!(
        median < Duration::from_millis(15),
        "three small pipelined frames took {} to come back (median of 20): \
         the replies wait for the client's delayed ACK (Nagle's algorithm; set TCP_NODELAY)",
        secs(median)
    );
}
// ANCHOR_END: nagle

// ANCHOR: bad_after_good
/// A valid frame and a bad length header arrive in the same segment: the
/// frame is answered, then the connection is closed, and only that one.
pub fn good_frame_then_bad_length_in_one_write(target: &Target) {
    let mut server = target.start();
    for bad in [4097u32, u32::MAX] {
        let mut client = server.connect();
        let mut bytes = frame(b"good");
        bytes.extend_from_slice(&bad.to_le_bytes());
        client.send(&bytes);
        let reply = client.try_recv_frame().unwrap_or_else(|e| {
            panic!("a valid frame followed by a header announcing {bad} bytes: {e}; the valid frame must still be answered")
        });
        assert!(
            reply == b"good",
            "the reply to a valid frame followed by a bad length came back different"
        );
        client.assert_closed_by_server();
        server.assert_serves();
    }
}
// ANCHOR_END: bad_after_good

// ANCHOR: urgent
/// A frame, one byte of TCP urgent data (`send(MSG_OOB)`), another frame:
/// both frames are answered. The urgent byte is taken out of the stream
/// (no `SO_OOBINLINE`), but a `read` stops short at the urgent mark, and a
/// server that takes a short read to mean "nothing left" never reads the
/// second frame: no new data comes, so edge-triggered epoll reports nothing.
pub fn urgent_data_does_not_stall_the_connection(target: &Target) {
    let server = target.start();
    let mut client = server.connect();
    client.assert_echo(b"warm up");
    // The server is stopped until its kernel holds all three sends: its
    // first read then stops at the urgent mark with "after" already queued
    // behind it, every time. (Corking the sends is not enough: the kernel
    // sends urgent data at once, cork or not.)
    server.freeze();
    client.send_frame(b"before");
    send_urgent_byte(&client.stream);
    client.send_frame(b"after");
    server.eventually(
        IO_TIMEOUT,
        "the server's kernel acknowledges every byte",
        |_| client.unacknowledged() == 0,
    );
    server.thaw();
    client
        .stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let before = client.try_recv_frame().unwrap_or_else(|e| {
        panic!("a frame, then one byte of urgent data: the frame's reply: {e}")
    });
    assert!(
        before == b"before",
        "the reply to the frame before the urgent byte came back different"
    );
    let mut after = [0u8; 9];
    match client.stream.read_exact(&mut after) {
        Ok(()) => assert!(
            after[..] == frame(b"after")[..],
            "the reply to the frame after the urgent byte came back different"
        ),
        Err(e) if e.kind() == ErrorKind::WouldBlock => panic!(
            "the frame after one byte of urgent data got no reply in 3 s: the server \
             stopped reading at the urgent mark and waits for an edge that never comes \
             (or it took the urgent byte into the stream, SO_OOBINLINE)"
        ),
        Err(e) => panic!("reading the reply after urgent data: {e}"),
    }
}
// ANCHOR_END: urgent

fn send_urgent_byte(stream: &std::net::TcpStream) {
    // SAFETY: the pointer and length describe a 1-byte static buffer.
    let sent = unsafe { libc::send(stream.as_raw_fd(), b"!".as_ptr().cast(), 1, libc::MSG_OOB) };
    assert!(
        sent == 1,
        "send(MSG_OOB): {}",
        std::io::Error::last_os_error()
    );
}

// ANCHOR: broken_stderr
/// stderr is a pipe nobody reads any more (`server 2>&1 | head -1`, a log
/// shipper that died), and every log line is on (`ECHO_LOG=debug`). Bad
/// frames, vanishing clients and a stop all make the server log: none of
/// it may take it down (`eprintln!` panics when its write fails).
pub fn broken_stderr_never_stops_the_server(target: &Target) {
    let mut server = target.start_with(Options {
        env: &[("ECHO_LOG", "debug")],
        broken_stderr: true,
        ..Options::default()
    });
    let mut client = server.connect();
    client.send(&u32::MAX.to_le_bytes());
    client.assert_closed_by_server();
    let mut client = server.connect();
    client.send(&frame(b"interrupted")[..6]);
    drop(client);
    server.connect().reset();
    server.assert_serves();
    server.assert_stops_cleanly_on(libc::SIGINT, Duration::from_secs(3));
}
// ANCHOR_END: broken_stderr

// ANCHOR: fd_limit
/// Started with the usual soft limit on open files (here 256) under a
/// higher hard limit, the server raises its soft limit to the hard one.
pub fn raises_its_open_file_limit(target: &Target) {
    let server = target.start_with(Options {
        soft_open_files: Some(256),
        ..Options::default()
    });
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.pid())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files in /proc/PID/limits");
    let numbers: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert!(
        numbers[0] == numbers[1],
        "started with a soft limit of {} open files under a hard limit of {}, the \
         server kept the soft one: it will run out of descriptors long before it must",
        numbers[0],
        numbers[1]
    );
}
// ANCHOR_END: fd_limit

// ANCHOR: backlog
/// The listening socket asks for the largest accept queue the kernel allows
/// (`net.core.somaxconn`): with a short one, a burst of clients overflows it,
/// the kernel drops their handshakes, and they retry a second later. `ss
/// -lnt` shows a listener's backlog as its Send-Q.
pub fn listens_with_the_largest_backlog(target: &Target) {
    let server = target.start();
    let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn").unwrap();
    let filter = format!("sport = :{}", server.addr.port());
    let out = Command::new("ss")
        .args(["-Hlnt", &filter])
        .output()
        .expect("ss (from iproute2) is needed to read a listener's backlog");
    let line = String::from_utf8_lossy(&out.stdout);
    let backlog = line.split_whitespace().nth(2).unwrap_or("?");
    assert!(
        backlog == somaxconn.trim(),
        "the server listens with a backlog of {backlog}, not the kernel's maximum \
         (net.core.somaxconn = {}): a burst of clients would overflow it",
        somaxconn.trim()
    );
}
// ANCHOR_END: backlog
