//! What 10,000 quiet connections cost this server in all: its whole
//! resident memory, where the suite's `scale` level bounds only the growth.

use conformance::harness::{Client, Server};

const BIN: &str = env!("CARGO_BIN_EXE_ch14");

// ANCHOR: test_memory
/// Each client exchanges a frame and goes quiet. A quiet connection holds
/// no buffer, only its task (the `echo` future, boxed), its waker, its
/// registration, its idle timer and its place in the stop.
#[test]
fn ten_thousand_idle_connections_fit_in_20_mib() {
    let mut server = Server::start(BIN);
    let before = server.rss_bytes();
    let clients: Vec<Client> = (0..10_000u32)
        .map(|i| {
            let mut client = server.connect();
            client.assert_echo(&i.to_le_bytes());
            client
        })
        .collect();
    let rss = server.rss_bytes();
    println!(
        "RSS: {} KiB at start, {} KiB with 10,000 idle connections",
        before >> 10,
        rss >> 10
    );
    assert!(rss < 20 << 20, "RSS {} KiB", rss >> 10);
    drop(clients);
    server.assert_serves();
}
// ANCHOR_END: test_memory
