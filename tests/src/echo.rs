//! Level `echo`: the framing contract and every kind of bad input, for every
//! echo server, even one that serves a single client at a time. So each test
//! finishes with one connection before it opens the next.

use std::io::{ErrorKind, Read, Write};
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::{
    difference, frame, join, not_applicable, read_failure, secs, set_int_option, Client, Options,
    Rng, Server, Target, HEADER_LEN, IO_TIMEOUT, MAX_MSG,
};
use crate::sockdiag::SockDiag;

const STOP_TIMEOUT: Duration = Duration::from_secs(2);

pub fn one_frame(target: &Target) {
    let server = target.start();
    server.connect().assert_echo(b"hello world");
}

pub fn empty_frame(target: &Target) {
    let server = target.start();
    let mut client = server.connect();
    client
        .try_echo(b"")
        .unwrap_or_else(|e| panic!("an empty frame (length 0) was not echoed: {e}"));
    client
        .try_echo(b"after the empty one")
        .unwrap_or_else(|e| panic!("the frame after an empty frame was not echoed: {e}"));
}

pub fn largest_frame(target: &Target) {
    let server = target.start();
    let payload = Rng::new(4096).bytes(MAX_MSG);
    server
        .connect()
        .try_echo(&payload)
        .unwrap_or_else(|e| panic!("a frame of the largest size, {MAX_MSG} bytes: {e}"));
}

// ANCHOR: test_pipelined
/// 300 frames of random sizes in a single write, read back by another thread:
/// the server must cut a byte stream into frames wherever the reads split it.
pub fn pipelined_random_frames_in_one_write(target: &Target) {
    let server = target.start();
    let mut rng = Rng::new(300);
    let payloads: Vec<Vec<u8>> = (0..300)
        .map(|_| {
            let len = rng.up_to(MAX_MSG);
            rng.bytes(len)
        })
        .collect();
    let burst: Vec<u8> = payloads.iter().flat_map(|p| frame(p)).collect();

    let mut client = server.connect();
    let mut reader = Client {
        stream: client.stream.try_clone().unwrap(),
    };
    // Write from another thread: a blocking server echoes as it reads, and
    // if nobody read the echoes both sides would wait on full buffers.
    let writer = thread::spawn(move || client.send(&burst));
    for (i, payload) in payloads.iter().enumerate() {
        let reply = reader
            .try_recv_frame()
            .unwrap_or_else(|e| panic!("300 frames sent in one write, reply {i}: {e}"));
        assert!(
            reply == *payload,
            "300 frames sent in one write: reply {i} differs from frame {i}"
        );
    }
    join(writer);
}
// ANCHOR_END: test_pipelined

// ANCHOR: test_one_byte
pub fn frame_sent_one_byte_at_a_time(target: &Target) {
    let server = target.start();
    let mut client = server.connect();
    // Sent fast, the bytes would pile up in the server's socket and one
    // read would take the whole frame: each waits until the server has
    // read the one before, as far as the kernel shows (sock_diag).
    let diag = SockDiag::open().ok();
    let request = frame(b"slow and steady");
    for (i, byte) in request.iter().enumerate() {
        if let Err(e) = client.try_send(std::slice::from_ref(byte)) {
            panic!("a frame sent one byte per write: after {i} bytes, {e} (a read may return any part of a frame)");
        }
        if let Some(diag) = &diag {
            wait_until_read(diag, &client, i as u64 + 1);
        }
    }
    let reply = client.try_recv_exact(request.len()).unwrap_or_else(|e| {
        panic!("a frame sent one byte per write: {e} (a read may return any part of a frame)")
    });
    assert!(
        reply == request,
        "a frame sent one byte per write came back different"
    );
}
// ANCHOR_END: test_one_byte

/// Waits, briefly, until the server has read `bytes` from `client`'s
/// connection: a server that reads only whole frames may never do so.
fn wait_until_read(diag: &SockDiag, client: &Client, bytes: u64) {
    let deadline = Instant::now() + Duration::from_millis(200);
    while Instant::now() < deadline {
        match diag.server_end(&client.stream) {
            Ok(end) if end.read < bytes => thread::sleep(Duration::from_micros(100)),
            _ => return,
        }
    }
}

// ANCHOR: test_oversized
fn oversized_length_closes_only_that_connection(target: &Target, announced: u32) {
    let mut server = target.start();
    let mut client = server.connect();
    client.assert_echo(b"fine so far");
    client.send(&announced.to_le_bytes());
    if let Err(e) = client.try_closed_by_server() {
        panic!("a header announcing {announced} bytes (the maximum is {MAX_MSG}) must close the connection, but {e}");
    }
    if let Err(e) = server.try_serves() {
        panic!("once the connection that announced {announced} bytes was closed, {e}");
    }
}
// ANCHOR_END: test_oversized

pub fn length_4097_closes_only_that_connection(target: &Target) {
    oversized_length_closes_only_that_connection(target, MAX_MSG as u32 + 1);
}

pub fn length_u32_max_closes_only_that_connection(target: &Target) {
    oversized_length_closes_only_that_connection(target, u32::MAX);
}

// ANCHOR: test_mid_frame
pub fn disconnect_mid_frame(target: &Target) {
    let mut server = target.start();
    let mut client = server.connect();
    client.send(&100u32.to_le_bytes());
    client.send(&[7; 10]);
    drop(client);
    // And a client that leaves in the middle of a header.
    let mut client = server.connect();
    client.send(&[1, 0]);
    drop(client);
    if let Err(e) = server.try_serves() {
        panic!("after two clients left in the middle of a frame, {e}");
    }
}
// ANCHOR_END: test_mid_frame

// ANCHOR: test_flood_reset
/// Sends frames without reading a single reply until the connection is
/// backed up in both directions, then resets it while replies are pending.
pub fn flood_then_reset_with_replies_pending(target: &Target) {
    let mut server = target.start();
    let mut client = server.connect();
    let chunk: Vec<u8> = (0..64).flat_map(|_| frame(&[b'f'; 1000])).collect();
    client.stream.set_nonblocking(true).unwrap();
    let mut sent = 0usize;
    // Bounded: stop when the kernel refuses more, or at 64 MiB.
    while sent < 64 << 20 {
        // Resume where a short write stopped, so the stream stays framed.
        match client.stream.write(&chunk[sent % chunk.len()..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("the server broke the connection while a client sent it frames: {e}"),
        }
    }
    assert!(
        sent >= 2 * chunk.len(),
        "a client could send only {sent} bytes before the connection was full"
    );
    client.reset();
    for _ in 0..2 {
        if let Err(e) = server.try_serves() {
            panic!("after a client reset its connection with replies pending, {e}");
        }
    }
}
// ANCHOR_END: test_flood_reset

pub fn three_hundred_connections_leak_no_fd(target: &Target) {
    let mut server = target.start();
    server.assert_serves();
    let baseline = server.open_fds();
    for i in 0..300u32 {
        server.connect().assert_echo(&i.to_le_bytes());
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    while server.open_fds() > baseline {
        assert!(
            Instant::now() < deadline,
            "300 clients came and went, and the server still holds {} file descriptors \
             {} later, {baseline} before: it does not close finished connections",
            server.open_fds(),
            secs(STOP_TIMEOUT)
        );
        thread::sleep(Duration::from_millis(10));
    }
    server.assert_serves();
}

// ANCHOR: test_half_close
/// The client says "no more requests" with shutdown(SHUT_WR) but still reads:
/// every reply must arrive before the server closes its side.
pub fn half_close_still_gets_every_reply(target: &Target) {
    let server = target.start();
    let mut client = server.connect();
    let payloads: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 100 * i as usize]).collect();
    let burst: Vec<u8> = payloads.iter().flat_map(|p| frame(p)).collect();
    client.send(&burst);
    client.shutdown_write();
    for (i, payload) in payloads.iter().enumerate() {
        let reply = client.try_recv_frame().unwrap_or_else(|e| {
            panic!("20 frames, then shutdown(SHUT_WR): reply {i}: {e}; replies to frames already received must still go out")
        });
        assert!(
            reply == *payload,
            "after shutdown(SHUT_WR), reply {i} differs from frame {i}"
        );
    }
    if let Err(e) = client.try_eof_from_server() {
        panic!("after the last reply to a half-closed client the server should close, but {e}");
    }
}
// ANCHOR_END: test_half_close

// ANCHOR: emfile
/// With `RLIMIT_NOFILE` at 32, 60 clients connect: `accept` fails with
/// `EMFILE`. The server must neither spin on the listener (it stays readable
/// while connections wait in the backlog) nor die, and must serve again once
/// descriptors free up.
pub fn out_of_fds_neither_spins_nor_stops_serving(target: &Target) {
    let mut server = target.start_with(Options {
        max_open_files: Some(32),
        ..Options::default()
    });
    let clients: Vec<Client> = (0..60).map(|_| server.connect()).collect();
    let busy_before = server.busy_time();
    thread::sleep(Duration::from_secs(2)); // measuring, not synchronising
    let busy = server.busy_time() - busy_before;
    assert!(
        busy < Duration::from_millis(500),
        "out of file descriptors, the server was running (or waiting for a CPU to \
         run on) for {} of 2 s with nothing to do: it is spinning on a listener it \
         cannot accept from",
        secs(busy)
    );
    drop(clients);
    server.eventually(
        STOP_TIMEOUT,
        "the server gives back its descriptors after 60 clients leave",
        |s| s.open_fds() < 16,
    );
    if let Err(e) = server.try_serves() {
        panic!("once descriptors were free again, {e}");
    }
}
// ANCHOR_END: emfile

pub fn sigint_exits_zero(target: &Target) {
    let mut server = target.start();
    server.assert_serves();
    server.assert_stops_cleanly_on(libc::SIGINT, STOP_TIMEOUT);
}

// ANCHOR: test_sigterm
pub fn sigterm_exits_zero(target: &Target) {
    let mut server = target.start();
    server.assert_stops_cleanly_on(libc::SIGTERM, STOP_TIMEOUT);
}
// ANCHOR_END: test_sigterm

// ANCHOR: test_sigint_connected
/// A blocking server is parked in `read` here, waiting for the rest of a frame.
pub fn sigint_while_a_client_is_connected(target: &Target) {
    let mut server = target.start();
    let mut client = server.connect();
    client.assert_echo(b"being served");
    client.send(&[9, 0, 0, 0, b'h']);
    // The server now waits for 8 more bytes that never come.
    server.assert_stops_cleanly_on(libc::SIGINT, STOP_TIMEOUT);
}
// ANCHOR_END: test_sigint_connected

/// 6 MB of pipelined frames, far more than the socket buffers hold, read back
/// 64 bytes at a time: the server's sends keep hitting a full buffer (short
/// writes, EAGAIN) with whole frames still waiting in its read buffer, and
/// every reply must still come back, complete and in order.
pub fn big_burst_read_back_slowly_comes_back_in_order(target: &Target) {
    let server = target.start();
    let mut rng = Rng::new(6);
    let burst: Vec<u8> = (0..3_000)
        .flat_map(|_| {
            let len = rng.up_to(MAX_MSG);
            frame(&rng.bytes(len))
        })
        .collect();

    let mut client = server.connect();
    let mut reader = client.stream.try_clone().unwrap();
    // Each reply comes soon after the one before, or never.
    let patience = Duration::from_secs(5);
    reader.set_read_timeout(Some(patience)).unwrap();
    let expected = burst.clone();
    let writer = thread::spawn(move || client.send(&burst));
    let mut received = 0;
    let mut chunk = [0u8; 64];
    let total = expected.len();
    while received < total {
        let want = chunk.len().min(total - received);
        match reader.read(&mut chunk[..want]) {
            Ok(0) => panic!(
                "6 MB of frames read back slowly: the server closed the connection after {received} of {total} bytes of replies"
            ),
            // Checked as it comes: a lost or doubled byte shows at once.
            Ok(n) => match difference(&chunk[..n], &expected[received..received + n]) {
                None => received += n,
                Some(at) => panic!(
                    "6 MB of frames read back slowly: the replies differ from the requests at byte {} of {total} \
                     (a write that took only part of the replies, and the rest dropped?)",
                    received + at
                ),
            },
            Err(e) => panic!(
                "6 MB of frames read back slowly: {}",
                read_failure(&e, received, total, patience)
            ),
        }
    }
    join(writer);
}

// ANCHOR: test_full_send_buffer
/// The server's send buffer fills while it still holds whole frames it has
/// read and not answered; then the client half-closes and reads. Every
/// reply must come back. A server that answers frames one at a time and,
/// when a reply's write meets `EAGAIN`, waits for `POLLOUT` and then for
/// more input, leaves the frames after it in its buffer: no input comes
/// (the client has sent everything), and at end of file they are dropped.
///
/// On loopback the server's send buffer grows to megabytes, so the client
/// makes that moment happen on purpose: a small receive buffer and a tiny
/// segment size (which keeps the server's send buffer small), small
/// batches of tiny frames sent only when the server has answered all the
/// previous ones, and the kernel's view of the server's end of the
/// connection (sock_diag, as `ss` reads it) to see when the server has
/// read everything sent and its send buffer is full.
pub fn frames_behind_a_full_send_buffer_are_answered(target: &Target) {
    let server = target.start();
    let diag = SockDiag::open().unwrap_or_else(|e| {
        not_applicable(format!(
            "the kernel's sock_diag interface, which the case needs to see the server's \
             send buffer fill, is not available here ({e})"
        ))
    });
    // Filling with a single frame unanswered is down to chance: try again.
    for _attempt in 0..3 {
        match fill_the_send_buffer(&server, &diag) {
            Fill::FramesBehind | Fill::FramesInKernel => return,
            Fill::OneBehind => {}
            Fill::Never => not_applicable(format!(
                "the server's send buffer did not fill within {}, so the case could \
                 not test what happens then",
                secs(IO_TIMEOUT)
            )),
        }
    }
}
// ANCHOR_END: test_full_send_buffer

/// How one attempt of [`frames_behind_a_full_send_buffer_are_answered`] went.
enum Fill {
    /// The server had read every frame sent, and answered fewer than all
    /// but one, when its send buffer filled: the moment the case is for.
    FramesBehind,
    /// Its send buffer filled while frames were still in its kernel's
    /// receive queue (a blocking server, say): fine, but not that moment.
    FramesInKernel,
    /// It filled with only the last frame unanswered: not that moment either.
    OneBehind,
    Never,
}

/// How long the server's counts must stay still, its send buffer full, for
/// the case to take it as stuck rather than busy. Mistaking a busy server
/// for a stuck one (a loaded machine) costs an attempt, never a false
/// failure: the case then reads and checks every reply all the same.
const STILL: Duration = Duration::from_millis(50);

/// One connection: fills the server's send buffer as described above,
/// half-closes, reads every reply and checks it, panicking if one is
/// missing or wrong.
fn fill_the_send_buffer(server: &Server, diag: &SockDiag) -> Fill {
    const FRAME: usize = HEADER_LEN + 1;
    let mut client = Client::connect_with(server.addr, |fd| {
        // Both before connect: the window and the MSS are set in the handshake.
        set_int_option(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, 4096);
        set_int_option(fd, libc::IPPROTO_TCP, libc::TCP_MAXSEG, 88);
    });
    let mut sent: Vec<u8> = Vec::new();
    let mut next = 0u32;
    // The server's read and written counts, and since when they are so.
    let mut still: Option<(u64, u64, Instant)> = None;
    let deadline = Instant::now() + IO_TIMEOUT;
    let fill = loop {
        let end = diag.server_end(&client.stream).unwrap_or_else(|e| {
            not_applicable(format!("sock_diag could not see the server's end: {e}"))
        });
        let total = sent.len() as u64;
        if end.read == total && end.written == total {
            // Caught up: another batch, small enough to be answered whole
            // while there is room (the memory counted also holds each
            // segment's overhead, hence the margin).
            let room = end.send_buffer.saturating_sub(end.queued) as usize;
            let frames = (room / 8 / FRAME).clamp(64, 16_384);
            let batch: Vec<u8> = (0..frames)
                .flat_map(|_| {
                    next += 1;
                    frame(&[(next % 251) as u8])
                })
                .collect();
            client.send(&batch);
            sent.extend_from_slice(&batch);
            still = None;
            continue;
        }
        match still {
            Some((read, written, since)) if (read, written) == (end.read, end.written) => {
                // Stuck, not busy: its send buffer is full, and its counts
                // have not moved for a while (fullness alone does not
                // prove it is waiting: a write can still succeed).
                if end.send_buffer_full() && since.elapsed() >= STILL {
                    break if end.read < total {
                        Fill::FramesInKernel
                    } else if total - end.written >= 2 * FRAME as u64 {
                        Fill::FramesBehind
                    } else {
                        Fill::OneBehind
                    };
                }
            }
            _ => still = Some((end.read, end.written, Instant::now())),
        }
        if Instant::now() > deadline {
            break Fill::Never;
        }
        // The server is busy with the last batch, or stuck: watch it.
        thread::sleep(Duration::from_micros(200));
    };
    client.shutdown_write();
    let frames = sent.len() / FRAME;
    let mut received = Vec::with_capacity(sent.len());
    let mut chunk = [0u8; 4096];
    while received.len() < sent.len() {
        match client.stream.read(&mut chunk) {
            Ok(0) => panic!(
                "the client pipelined {frames} frames until the server's send buffer was full, \
                 half-closed, then read: the server answered {} of them and closed the \
                 connection. It had read the other {} whole; when a write fails with EAGAIN, \
                 the frames after it must still be answered once the socket is writable, \
                 without waiting for more input",
                received.len() / FRAME,
                frames - received.len() / FRAME
            ),
            Ok(n) => received.extend_from_slice(&chunk[..n]),
            Err(e) => panic!(
                "{frames} frames pipelined until the server's send buffer was full, then a \
                 half-close: {}",
                read_failure(&e, received.len(), sent.len(), IO_TIMEOUT)
            ),
        }
    }
    if let Some(at) = difference(&received, &sent) {
        panic!(
            "{frames} frames pipelined until the server's send buffer was full: the reply to \
             frame {} differs from it",
            at / FRAME
        );
    }
    if let Err(e) = client.try_eof_from_server() {
        panic!("after the last reply to a half-closed client the server should close, but {e}");
    }
    fill
}
