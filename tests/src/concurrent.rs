//! Level `concurrent`: clients are served independently of each other.

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
