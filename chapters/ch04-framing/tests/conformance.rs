use std::io::Read;
use std::time::Duration;

use conformance::harness::Server;
use conformance::{Level, Suite, Target};

// ANCHOR: suite
fn main() {
    Suite::new(Target::binary(env!("CARGO_BIN_EXE_ch04")), &[Level::Echo])
        .with_tests(&[(
            "second_client_waits_for_the_first",
            second_client_waits_for_the_first,
        )])
        .run()
}
// ANCHOR_END: suite

// ANCHOR: second_client_waits
/// The lesson of this chapter, pinned: while one client is connected, even
/// idle, the next one is not served at all.
fn second_client_waits_for_the_first() {
    let server = Server::start(env!("CARGO_BIN_EXE_ch04"));
    let mut first = server.connect();
    first.assert_echo(b"I am being served");

    let mut second = server.connect();
    second.send_frame(b"anyone there?");
    second
        .stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 1];
    let err = second.stream.read(&mut buf).unwrap_err();
    assert_eq!(
        err.kind(),
        std::io::ErrorKind::WouldBlock,
        "no reply while the first client stays"
    );

    // As soon as the first client leaves, the second one is served.
    drop(first);
    second
        .stream
        .set_read_timeout(Some(conformance::harness::IO_TIMEOUT))
        .unwrap();
    assert_eq!(second.recv_frame(), b"anyone there?");
}
// ANCHOR_END: second_client_waits
