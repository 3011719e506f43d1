//! Level `event_loop`: one thread, many connections, bounded memory.

use crate::harness::{Client, Target};

// ANCHOR: thousand
pub fn thousand_simultaneous_connections(target: &Target) {
    let mut server = target.start();
    let mut clients: Vec<Client> = (0..1000).map(|_| server.connect()).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        client.send_frame(format!("connection {i}").as_bytes());
    }
    for (i, client) in clients.iter_mut().enumerate() {
        let reply = client.try_recv_frame().unwrap_or_else(|e| {
            panic!("1000 clients connected at once and each sent a frame; connection {i}: {e}")
        });
        assert!(
            reply == format!("connection {i}").as_bytes(),
            "1000 clients connected at once: connection {i} got another's reply"
        );
    }
    drop(clients);
    server.assert_serves();
}
// ANCHOR_END: thousand
