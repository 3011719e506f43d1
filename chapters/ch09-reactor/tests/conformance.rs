use std::thread;

use conformance::harness::{frame, Client, Server};

const BIN: &str = env!("CARGO_BIN_EXE_ch09");

conformance::suite!(env!("CARGO_BIN_EXE_ch09"), [echo, concurrent, event_loop]);

/// 10,000 frames written in one burst by another thread and read back in
/// order, as in chapter 8: whole runs of frames are answered with one write
/// each, and through the reactor the replies must still come out exactly as
/// the requests went in. (`Next::Again` is tested in `reactor.rs` and by
/// the suite's `greedy_client_does_not_starve_others`.)
#[test]
fn ten_thousand_pipelined_frames_come_back_in_order() {
    let server = Server::start(BIN);
    let payload = |i: u32| format!("frame {i}").into_bytes();
    let burst: Vec<u8> = (0..10_000).flat_map(|i| frame(&payload(i))).collect();
    let mut client = server.connect();
    let mut reader = Client {
        stream: client.stream.try_clone().unwrap(),
    };
    let writer = thread::spawn(move || client.send(&burst));
    for i in 0..10_000 {
        assert_eq!(reader.recv_frame(), payload(i), "reply {i}");
    }
    writer.join().unwrap();
}

/// A connection holds buffers only while it has bytes in them, as in
/// chapter 8: boxing each connection as a handler adds an allocation, not
/// its buffers. 10,000 connections that each exchanged a frame and went
/// quiet cost the server little more than their `Conn`s.
#[test]
fn ten_thousand_idle_connections_cost_little_memory() {
    let mut server = Server::start(BIN);
    server.assert_serves();
    let rss_before = server.rss_bytes();
    let clients: Vec<Client> = (0..10_000u32)
        .map(|i| {
            let mut client = server.connect();
            client.assert_echo(&i.to_le_bytes());
            client
        })
        .collect();
    let growth = server.rss_bytes().saturating_sub(rss_before);
    assert!(growth < 24 << 20, "RSS grew by {} KiB", growth >> 10);
    drop(clients);
    server.assert_serves();
}
