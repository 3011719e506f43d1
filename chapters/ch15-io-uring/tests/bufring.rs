//! The provided-buffer ring running dry: receives that find no buffer
//! fail with ENOBUFS, and must be submitted again, not taken for an error.

mod uring;

use std::thread;
use std::time::Duration;

use conformance::harness::{frame, Client, Options, Server};

/// 200 clients pipeline 20 frames each at once, while the server lends the
/// kernel a single receive buffer: most receives find none. Every client
/// must still get exactly its own replies, in order.
#[test]
fn a_dry_buffer_ring_delays_receives_and_loses_nothing() {
    if uring::unavailable() {
        return;
    }
    let server = Server::start_with(
        env!("CARGO_BIN_EXE_ch15"),
        Options {
            args: &["--recv-buffers", "1"],
            env: &[("ECHO_LOG", "debug")],
            ..Options::default()
        },
    );
    let payload = |client: usize, i: usize| format!("client {client} frame {i}").into_bytes();
    let clients: Vec<Client> = (0..200).map(|_| server.connect()).collect();
    let readers: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(c, mut client)| {
            let burst: Vec<u8> = (0..20).flat_map(|i| frame(&payload(c, i))).collect();
            client.send(&burst);
            thread::spawn(move || {
                for i in 0..20 {
                    assert_eq!(client.recv_frame(), payload(c, i), "client {c} frame {i}");
                }
            })
        })
        .collect();
    for reader in readers {
        reader.join().unwrap();
    }
    // The log arrives through a pipe, read by another thread.
    server.eventually(
        Duration::from_secs(5),
        "the ring ran dry at least once (else this tested nothing)",
        |s| s.stderr().contains("no receive buffer free"),
    );
}
