//! Nagle's algorithm meets delayed ACKs, shown on a real connection.
//!
//! A tiny blocking echo server, written the way chapter 4 is (a `write` per
//! reply), answers a client that sends three small frames in one write and
//! waits for the three replies. Without `TCP_NODELAY` the second reply is
//! held back until the first is acknowledged, and the client acknowledges
//! late (it has nothing to send back): about 40 ms per exchange on Linux.
//! With `TCP_NODELAY` the same exchange takes a fraction of a millisecond.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::frame::{encode_frame, read_frame, write_frame, MAX_MSG};

/// Serves one client: one `write` per reply, as chapter 4 does.
fn echo_server(nodelay: bool) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.set_nodelay(nodelay).unwrap();
        let mut payload = [0u8; MAX_MSG];
        while let Ok(Some(len)) = read_frame(&mut stream, &mut payload) {
            write_frame(&mut stream, &payload[..len]).unwrap();
        }
    });
    addr
}

/// The median time for three small frames to come back, over 20 exchanges.
fn median_exchange(nodelay: bool) -> Duration {
    let mut client = TcpStream::connect(echo_server(nodelay)).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut burst = Vec::new();
    for payload in [&b"one"[..], b"two", b"three"] {
        encode_frame(payload, &mut burst);
    }
    let mut replies = vec![0; burst.len()];
    let mut times: Vec<Duration> = (0..20)
        .map(|_| {
            let start = Instant::now();
            client.write_all(&burst).unwrap();
            client.read_exact(&mut replies).unwrap();
            assert_eq!(replies, burst);
            start.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

// ANCHOR: nagle
#[test]
fn without_nodelay_each_exchange_waits_for_a_delayed_ack() {
    let with_nagle = median_exchange(false);
    let with_nodelay = median_exchange(true);
    println!("median exchange: {with_nagle:?} with Nagle, {with_nodelay:?} with TCP_NODELAY");
    assert!(
        with_nagle >= Duration::from_millis(20),
        "with Nagle on, expected a delayed-ACK stall (~40 ms), got {with_nagle:?}"
    );
    assert!(
        with_nodelay < Duration::from_millis(15),
        "with TCP_NODELAY, expected no stall, got {with_nodelay:?}"
    );
}
// ANCHOR_END: nagle
