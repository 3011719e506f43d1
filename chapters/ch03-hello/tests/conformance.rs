use std::process::Command;
use std::time::Duration;

use conformance::harness::Server;
use conformance::Level;

fn main() {
    conformance::main_with(
        env!("CARGO_BIN_EXE_ch03"),
        &[Level::Hello],
        &[("client_prints_the_reply", client_prints_the_reply)],
    );
}

/// The chapter's own client talks to the chapter's server.
fn client_prints_the_reply() {
    let server = Server::start(env!("CARGO_BIN_EXE_ch03"));
    let out = Command::new(env!("CARGO_BIN_EXE_ch03-client"))
        .args(["--addr", &server.addr.to_string(), "hi there"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "server says: world\n");
    server.eventually(Duration::from_secs(2), "the server logs the message", |s| {
        s.stderr().contains("client says: hi there")
    });
}
