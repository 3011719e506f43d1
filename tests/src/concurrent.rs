//! Level `concurrent`: clients are served independently of each other.

use std::io::{self, ErrorKind, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::{frame, join, secs, Client, Options, Target, IO_TIMEOUT};

/// How long a client may wait for a reply while another client misbehaves:
/// five stalls of a loaded machine (200 ms each), and still a fraction of
/// how long the misbehaving client keeps at it.
const PROMPT: Duration = Duration::from_millis(1000);

// ANCHOR: test_idle_half_header
pub fn idle_client_with_half_a_header_does_not_delay_others(target: &Target) {
    let server = target.start();
    let mut idle = server.connect();
    idle.send(&[3, 0]);
    for _ in 0..3 {
        let start = Instant::now();
        let mut other = server.connect();
        // Long enough to be sure, short enough not to waste the reader's time.
        let patience = Duration::from_secs(5);
        other.stream.set_read_timeout(Some(patience)).unwrap();
        if let Err(e) = other.try_echo(b"not waiting for anyone") {
            panic!("while one client sat idle with half a header, another got {e}: the server serves one client at a time");
        }
        let took = start.elapsed();
        assert!(
            took < PROMPT,
            "while one client sat idle with half a header, another waited {} for its echo",
            secs(took)
        );
    }
    idle.send(&[0, 0, b'a', b'b', b'c']);
    let reply = idle
        .try_recv_frame()
        .unwrap_or_else(|e| panic!("the idle client finished its frame at last, but {e}"));
    assert!(
        reply == b"abc",
        "the idle client's late frame came back different"
    );
}
// ANCHOR_END: test_idle_half_header

/// 200 clients connect at once, each pipelines 20 frames in one write, and
/// each must get exactly its own 20 frames back, in order.
pub fn two_hundred_clients_pipelining_get_their_own_replies(target: &Target) {
    let server = target.start();
    let payload = |client: usize, i: usize| format!("client {client} frame {i}").into_bytes();
    let mut clients: Vec<Client> = (0..200).map(|_| server.connect()).collect();
    for (c, client) in clients.iter_mut().enumerate() {
        let burst: Vec<u8> = (0..20).flat_map(|i| frame(&payload(c, i))).collect();
        client.send(&burst);
    }
    for (c, client) in clients.iter_mut().enumerate() {
        for i in 0..20 {
            let reply = client.try_recv_frame().unwrap_or_else(|e| {
                let hint = if c > 0 {
                    ", though the clients before it were answered: is the server serving one client at a time?"
                } else {
                    ""
                };
                panic!("200 clients connected at once and sent 20 frames each; for client {c}'s frame {i}: {e}{hint}")
            });
            assert!(
                reply == payload(c, i),
                "200 clients sent 20 frames each: client {c} got {:?} for its frame {i}",
                String::from_utf8_lossy(&reply)
            );
        }
    }
}

/// Memory a server may gain while one client floods it without reading.
const MAX_RSS_GROWTH: u64 = 16 << 20;

// ANCHOR: test_flood_memory
pub fn flooding_client_neither_stalls_others_nor_grows_memory(target: &Target) {
    let mut server = target.start();
    server.assert_serves();
    let rss_before = server.rss_bytes();

    let flooder = server.connect();
    flooder.stream.set_nonblocking(true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flooding = {
        let stop = stop.clone();
        thread::spawn(move || {
            let chunk: Vec<u8> = (0..64).flat_map(|_| frame(&[b'f'; 4000])).collect();
            let mut stream = &flooder.stream;
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // Resume where a short write stopped, so the stream stays framed.
                match stream.write(&chunk[(sent % chunk.len() as u64) as usize..]) {
                    Ok(n) => sent += n as u64,
                    // Full: the server has stopped reading. Keep pushing gently.
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(1))
                    }
                    Err(e) => panic!("the server broke the connection of a client that sent without reading: {e}"),
                }
            }
            (flooder, sent)
        })
    };

    // Meanwhile another client must be served promptly, and memory stay flat.
    let mut other = server.connect();
    let mut rss_peak = rss_before;
    let mut slowest = Duration::ZERO;
    let start = Instant::now();
    let mut i = 0u32;
    while start.elapsed() < Duration::from_secs(3) {
        let t = Instant::now();
        if let Err(e) = other.try_echo(&i.to_le_bytes()) {
            stop.store(true, Ordering::Relaxed);
            panic!("while one client sent without reading, another got {e}: the server waits on the client that does not read instead of serving the others");
        }
        slowest = slowest.max(t.elapsed());
        rss_peak = rss_peak.max(server.rss_bytes());
        i += 1;
        thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    let (flooder, sent) = join(flooding);
    assert!(sent > 1 << 20, "the flood was only {sent} bytes");
    assert!(
        slowest < PROMPT,
        "while one client sent without reading, another waited {} for an echo",
        secs(slowest)
    );
    let growth = rss_peak.saturating_sub(rss_before);
    assert!(
        growth < MAX_RSS_GROWTH,
        "the server's memory grew by {} KiB while a client sent {} KiB without \
         reading the replies: it keeps reading instead of applying backpressure",
        growth >> 10,
        sent >> 10
    );
    flooder.reset();
    server.assert_serves();
}
// ANCHOR_END: test_flood_memory

/// RLIMIT_NOFILE 32 leaves room for about 25 connections. The shared suite
/// checks the server does not spin when it runs out; this checks what the
/// clients see: each one is either served or closed at once, none hangs.
pub fn out_of_fds_every_client_is_served_or_closed(target: &Target) {
    let options = Options {
        max_open_files: Some(32),
        ..Default::default()
    };
    let mut server = target.start_with(options);
    let baseline = server.open_fds();
    let mut clients: Vec<Client> = (0..60).map(|_| server.connect()).collect();

    let (mut served, mut turned_away) = (0, 0);
    let request = frame(b"anyone there?");
    // "At once": far longer than either takes, even on a loaded machine.
    let patience = Duration::from_secs(3);
    for (k, client) in clients.iter_mut().enumerate() {
        client.stream.set_read_timeout(Some(patience)).unwrap();
        // A write to a closed connection may fail; the read tells the story.
        let _ = client.stream.write_all(&request);
        let mut reply = vec![0; request.len()];
        match client.stream.read_exact(&mut reply) {
            Ok(()) if reply == request => served += 1,
            Ok(()) => panic!("out of file descriptors, client {k} of 60 got a wrong reply"),
            Err(e) if closed_by_server(&e) => turned_away += 1,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => panic!(
                "the server has 32 file descriptors and 60 clients connected: client {k} \
                 was neither served nor closed within {}; a connection it cannot take \
                 must be accepted and closed, not left waiting",
                secs(patience)
            ),
            Err(e) => panic!("out of file descriptors, client {k} of 60: {e}"),
        }
    }
    assert!(
        served >= 20,
        "with 32 file descriptors, only {served} of 60 clients were served"
    );
    assert!(
        turned_away >= 20,
        "with 32 file descriptors, only {turned_away} of 60 clients were turned away"
    );

    drop(clients);
    server.eventually(
        Duration::from_secs(2),
        "the server closes the 60 connections after their clients leave",
        |s| s.open_fds() <= baseline,
    );
    server.assert_serves();
}

/// A client that pipelines frames and reads the replies as fast as it can
/// never lets the server's reads come up empty. The server must still take
/// turns: another client's echo may not wait behind it.
pub fn greedy_client_does_not_starve_others(target: &Target) {
    let server = target.start();
    let mut greedy = server.connect();
    let mut replies = greedy.stream.try_clone().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let sending = {
        let stop = stop.clone();
        thread::spawn(move || {
            let chunk: Vec<u8> = (0..4096).flat_map(|_| frame(&[b'g'; 60])).collect();
            let mut sent = 0;
            while !stop.load(Ordering::Relaxed) {
                greedy.send(&chunk);
                sent += chunk.len() as u64;
            }
            greedy.shutdown_write();
            sent
        })
    };
    // Until the server closes the connection, after the last reply.
    let replied = Arc::new(AtomicU64::new(0));
    let reading = thread::spawn({
        let replied = replied.clone();
        move || {
            let mut buf = vec![0; 1 << 20];
            let mut received = 0;
            loop {
                match replies.read(&mut buf) {
                    Ok(0) => return received,
                    Ok(n) => {
                        received += n as u64;
                        replied.store(received, Ordering::Relaxed);
                    }
                    Err(e) => {
                        panic!("a client that pipelines as fast as it can stopped getting replies: {e}")
                    }
                }
            }
        }
    });

    let mut other = server.connect();
    // The server is busy with the greedy client before the other one asks:
    // otherwise a server that never takes turns could be busy with the
    // other one instead, and pass.
    server.eventually(
        IO_TIMEOUT,
        "the greedy client gets its first replies",
        |_| replied.load(Ordering::Relaxed) > 0,
    );
    // Far past the limit below, short enough not to keep a learner waiting.
    other
        .stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    // Starvation shows only while the greedy client keeps the server's
    // reads from coming up empty, which on a loaded machine it does not
    // always manage (its threads wait for a CPU too). A wait of more than
    // half the limit is either such a machine or a server that does not
    // take turns, caught at a lucky moment: watching longer tells them
    // apart. A server that takes turns keeps its waits far below the limit.
    let mut slowest = Duration::ZERO;
    let start = Instant::now();
    let mut watch = Duration::from_secs(3);
    while start.elapsed() < watch {
        let t = Instant::now();
        if let Err(e) = other.try_echo(b"my turn?") {
            stop.store(true, Ordering::Relaxed);
            panic!("while one client kept the server busy with pipelined frames, another got {e}: the server does not take turns");
        }
        slowest = slowest.max(t.elapsed());
        if slowest >= PROMPT {
            break;
        }
        if slowest >= PROMPT / 2 {
            watch = Duration::from_secs(9);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let sent = join(sending);
    let received = join(reading);
    assert!(
        received == sent,
        "the busy client sent {sent} bytes and got {received} back"
    );
    assert!(sent > 1 << 20, "the greedy client sent only {sent} bytes");
    assert!(
        slowest < PROMPT,
        "while one client kept the server busy with pipelined frames, another \
         waited {} for an echo: the server does not take turns",
        secs(slowest)
    );
}

fn closed_by_server(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset
    )
}
