//! Level `event_loop`: one thread, many connections, bounded memory.

use std::io::{ErrorKind, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::{frame, Client, Server};

pub fn thousand_simultaneous_connections(bin: &str) {
    let mut server = Server::start(bin);
    let mut clients: Vec<Client> = (0..1000).map(|_| server.connect()).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        client.send_frame(format!("connection {i}").as_bytes());
    }
    for (i, client) in clients.iter_mut().enumerate() {
        assert_eq!(client.recv_frame(), format!("connection {i}").as_bytes());
    }
    drop(clients);
    server.assert_serves();
}

/// Memory a server may gain while one client floods it without reading.
const MAX_RSS_GROWTH: u64 = 16 << 20;

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
                match stream.write(&chunk) {
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

pub fn sigint_while_idle_exits_within_a_second(bin: &str) {
    let mut server = Server::start(bin);
    let client = server.connect();
    server.assert_serves();
    server.assert_stops_cleanly_on(libc::SIGINT, Duration::from_secs(1));
    drop(client);
}
