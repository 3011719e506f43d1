//! The client against a real server (ch05), both modes.

use std::path::PathBuf;
use std::process::Command;

use conformance::harness::Server;

/// ch05's binary sits next to ours in the target directory once built; the
/// README's `cargo test --workspace` builds it.
fn server_bin() -> PathBuf {
    let mut path = PathBuf::from(env!("CARGO_BIN_EXE_client"));
    path.set_file_name("ch05");
    assert!(path.exists(), "build ch05 first: cargo build -p ch05");
    path
}

fn run_client(server: &Server, extra: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_client"))
        .args(["--addr", &server.addr.to_string()])
        .args(extra)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn prints_each_reply() {
    let server = Server::start(server_bin().to_str().unwrap());
    assert_eq!(run_client(&server, &["hello", "world"]), "hello\nworld\n");
    assert_eq!(
        run_client(&server, &["--pipeline", "a", "b", "c"]),
        "a\nb\nc\n"
    );
}

/// A mistake is one line and exit status 1, naming what is wrong.
#[test]
fn unknown_flags_and_bad_addresses_are_errors() {
    for (args, says) in [
        (&["--bogus", "x"][..], "unknown option --bogus"),
        (
            &["--addr", "127.0.0.1:99999", "x"][..],
            "--addr 127.0.0.1:99999",
        ),
        (&["--addr"][..], "--addr needs a value"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_client"))
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

/// With no server, the client says so and how to start one: not "Connection
/// refused (os error 111)".
#[test]
fn no_server_says_how_to_start_one() {
    // A port that nothing listens on: the kernel's pick, released at once.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_client"))
        .args(["--addr", &addr.to_string(), "hello"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "client: no server listens on {addr} (connection refused): start one first"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("just run ch06 --addr {addr}")),
        "{stderr}"
    );
}
