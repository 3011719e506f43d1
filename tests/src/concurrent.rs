//! Level `concurrent`: clients are served independently of each other.

use std::io::{ErrorKind, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::{frame, Client, Server};

/// How long a client may wait for a reply while another client misbehaves.
const PROMPT: Duration = Duration::from_millis(1000);

pub fn idle_client_with_half_a_header_does_not_delay_others(bin: &str) {
    let server = Server::start(bin);
    let mut idle = server.connect();
    idle.send(&[3, 0]);
    for _ in 0..3 {
        let start = Instant::now();
        server.connect().assert_echo(b"not waiting for anyone");
        assert!(start.elapsed() < PROMPT, "took {:?}", start.elapsed());
    }
    idle.send(&[0, 0, b'a', b'b', b'c']);
    assert_eq!(idle.recv_frame(), b"abc");
}

/// 200 clients connect at once, each pipelines 20 frames in one write, and
/// each must get exactly its own 20 frames back, in order.
pub fn two_hundred_clients_pipelining_get_their_own_replies(bin: &str) {
    let server = Server::start(bin);
    let payload = |client: usize, i: usize| format!("client {client} frame {i}").into_bytes();
    let mut clients: Vec<Client> = (0..200).map(|_| server.connect()).collect();
    for (c, client) in clients.iter_mut().enumerate() {
        let burst: Vec<u8> = (0..20).flat_map(|i| frame(&payload(c, i))).collect();
        client.send(&burst);
    }
    for (c, client) in clients.iter_mut().enumerate() {
        for i in 0..20 {
            assert_eq!(client.recv_frame(), payload(c, i), "client {c} frame {i}");
        }
    }
}

/// Memory a server may gain while one client floods it without reading.
const MAX_RSS_GROWTH: u64 = 16 << 20;

// ANCHOR: test_flood_memory
pub fn flooding_client_neither_stalls_others_nor_grows_memory(bin: &str) {
    let mut server = Server::start(bin);
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
                    Err(e) => panic!("flooding: {e}"),
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
        other.assert_echo(&i.to_le_bytes());
        slowest = slowest.max(t.elapsed());
        rss_peak = rss_peak.max(server.rss_bytes());
        i += 1;
        thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    let (flooder, sent) = flooding.join().unwrap();
    assert!(sent > 1 << 20, "the flood was only {sent} bytes");
    assert!(
        slowest < Duration::from_millis(500),
        "an echo took {slowest:?}"
    );
    let growth = rss_peak.saturating_sub(rss_before);
    assert!(
        growth < MAX_RSS_GROWTH,
        "RSS grew by {} KiB while flooded with {} KiB",
        growth >> 10,
        sent >> 10
    );
    flooder.reset();
    server.assert_serves();
}
// ANCHOR_END: test_flood_memory
