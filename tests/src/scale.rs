//! Level `scale`: what batched replies and bounded, pooled buffers make
//! cheap (ch08 onwards): huge pipelined bursts, and many connections that
//! cost almost nothing while they are quiet.

use std::thread;

use crate::harness::{frame, join, Client, Target};

/// 10,000 frames written in one burst by another thread and read back in
/// order: whole runs of frames are answered with one write each, and
/// the replies must still come out exactly as the requests went in.
pub fn ten_thousand_pipelined_frames_come_back_in_order(target: &Target) {
    let server = target.start();
    let payload = |i: u32| format!("frame {i}").into_bytes();
    let burst: Vec<u8> = (0..10_000).flat_map(|i| frame(&payload(i))).collect();
    let mut client = server.connect();
    let mut reader = Client {
        stream: client.stream.try_clone().unwrap(),
    };
    let writer = thread::spawn(move || client.send(&burst));
    for i in 0..10_000 {
        let reply = reader
            .try_recv_frame()
            .unwrap_or_else(|e| panic!("10,000 frames sent in one burst: reply {i}: {e}"));
        assert!(
            reply == payload(i),
            "10,000 frames sent in one burst: reply {i} is {:?}, out of order or mixed up",
            String::from_utf8_lossy(&reply)
        );
    }
    join(writer);
}

/// A connection holds buffers only while it has bytes in them: 10,000
/// connections that each exchanged a frame and went quiet cost the server
/// little more than their `Conn`s. (Keeping two 16 KiB buffers each, they
/// cost 300 MiB.)
pub fn ten_thousand_idle_connections_cost_little_memory(target: &Target) {
    let mut server = target.start();
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
    assert!(
        growth < 24 << 20,
        "10,000 connections that each echoed a frame and went quiet grew the \
         server's memory by {} MiB (at most 24 MiB allowed): idle connections \
         should not keep buffers",
        growth >> 20
    );
    drop(clients);
    server.assert_serves();
}
