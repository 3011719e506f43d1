//! Level `event_loop`: one thread, many connections, bounded memory.

use crate::harness::{Client, Server};

// ANCHOR: thousand
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
// ANCHOR_END: thousand
