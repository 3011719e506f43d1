//! The tests of this chapter's exercises (book/src/answers.md has the
//! answers; `just exercise ch07-K` checks a solution). These pass on the
//! chapter as it is, and fail once an exercise breaks what they check.

use std::io::Read;
use std::thread;
use std::time::{Duration, Instant};

use conformance::harness::{frame, secs, set_int_option, Client, Server, HEADER_LEN};
use conformance::sockdiag::SockDiag;

const BIN: &str = env!("CARGO_BIN_EXE_ch07");

/// How long the server's threads were running or waiting to run during
/// `window`: next to nothing for a server asleep in `epoll_wait`, about all
/// of it for one that spins, however loaded the machine.
fn busy_during(server: &Server, window: Duration) -> Duration {
    let before = server.busy_time();
    let start = Instant::now();
    // Measuring, not synchronising: nothing is awaited here.
    std::thread::sleep(window);
    let busy = server.busy_time().saturating_sub(before);
    busy.mul_f64(window.as_secs_f64() / start.elapsed().as_secs_f64())
}

/// Exercises 2 and 3: a server with nothing to do sleeps, both while an
/// idle client is connected and after it has left.
#[test]
fn a_server_with_nothing_to_do_sleeps() {
    const WINDOW: Duration = Duration::from_millis(500);
    const AT_MOST: Duration = Duration::from_millis(100);
    let server = Server::start(BIN);
    let at_rest = server.open_fds();
    let mut client = server.connect();
    client.assert_echo(b"and now, silence");
    let busy = busy_during(&server, WINDOW);
    assert!(
        busy <= AT_MOST,
        "with one idle client connected, the server was busy for {} of {}: it spins \
         instead of sleeping in epoll_wait",
        secs(busy),
        secs(WINDOW)
    );
    let connected = server.open_fds();
    drop(client);
    server.eventually(
        Duration::from_secs(5),
        "the server closes the connection of a client that left",
        |s| s.open_fds() < connected,
    );
    let busy = busy_during(&server, WINDOW);
    assert!(
        busy <= AT_MOST,
        "after its only client left, the server was busy for {} of {}: it spins instead \
         of sleeping in epoll_wait ({} descriptors open, {at_rest} before the client came)",
        secs(busy),
        secs(WINDOW),
        server.open_fds()
    );
}

/// Exercise 1: the server's send buffer fills after it has read every frame
/// the client sent, so it waits to write, with nothing left to read. Then
/// the client reads, without sending anything more or hanging up: the
/// server must finish its replies, woken by the room the client made.
///
/// The moment is made on purpose, as in the suite's
/// `frames_behind_a_full_send_buffer_are_answered`: a small receive buffer
/// and segment size keep the server's send buffer small, frames go in
/// batches the server answers whole while there is room, and the kernel's
/// view of the server's end (sock_diag, as `ss` reads it) says when it has
/// read everything and stopped with its send buffer full.
#[test]
fn a_reply_cut_short_is_finished_when_the_client_reads() {
    const FRAME: usize = HEADER_LEN + 1;
    let server = Server::start(BIN);
    let diag = SockDiag::open().expect("sock_diag, to watch the server's end");
    // A try ends in the right moment, or with frames still in the server's
    // kernel (then input wakes it anyway): again, on a new connection.
    for _attempt in 0..3 {
        let mut client = Client::connect_with(server.addr, |fd| {
            set_int_option(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, 4096);
            set_int_option(fd, libc::IPPROTO_TCP, libc::TCP_MAXSEG, 88);
        });
        let mut sent = 0u64;
        let mut next = 0u32;
        let mut still: Option<(u64, u64, Instant)> = None;
        let deadline = Instant::now() + Duration::from_secs(10);
        let all_read = loop {
            assert!(
                Instant::now() < deadline,
                "the server's send buffer never filled"
            );
            let end = diag.server_end(&client.stream).unwrap();
            if end.read == sent && end.written == sent {
                let room = end.send_buffer.saturating_sub(end.queued) as usize;
                let frames = (room / 8 / FRAME).clamp(64, 16_384);
                let batch: Vec<u8> = (0..frames)
                    .flat_map(|_| {
                        next += 1;
                        frame(&[(next % 251) as u8])
                    })
                    .collect();
                client.send(&batch);
                sent += batch.len() as u64;
                still = None;
                continue;
            }
            match still {
                Some((read, written, since)) if (read, written) == (end.read, end.written) => {
                    if end.send_buffer_full() && since.elapsed() >= Duration::from_millis(50) {
                        break end.read == sent;
                    }
                }
                _ => still = Some((end.read, end.written, Instant::now())),
            }
            thread::sleep(Duration::from_micros(200));
        };
        // Every reply comes, without a half-close or another request.
        client
            .stream
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        let mut received = 0u64;
        let mut chunk = [0u8; 4096];
        while received < sent {
            match client.stream.read(&mut chunk) {
                Ok(0) => {
                    panic!("the server closed the connection after {received} of {sent} bytes")
                }
                Ok(n) => received += n as u64,
                Err(e) => panic!(
                    "the server had read every frame and filled its send buffer{}; the client \
                     then read {received} of the {sent} bytes of replies and waited 3 s for \
                     the rest ({e}): the server, waiting to write, was never told that it \
                     could (EPOLLOUT)",
                    if all_read {
                        ""
                    } else {
                        " (some frames still unread)"
                    }
                ),
            }
        }
        if all_read {
            return;
        }
    }
    panic!("three tries, and the server never had read every frame when its send buffer filled");
}
