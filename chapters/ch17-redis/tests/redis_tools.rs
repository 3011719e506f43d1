//! The real clients: `redis-cli` runs the same script against `ch17` and
//! against `redis-server`, and must print the same thing; `redis-benchmark`
//! runs its tests against `ch17` and must meet no error.
//!
//! Without Redis's tools these tests fail and say how to install them.

mod support;

use std::time::Duration;

use support::{run_tool, start, RedisServer};

// ANCHOR: script
/// A session as a person would type it, errors included: every reply,
/// error texts too, must be the one Redis gives.
const SCRIPT: &str = "\
PING
PING \"hello world\"
ECHO 'quoted words'
SET greeting hello
GET greeting
GET missing
SET counter 10
INCR counter
INCRBY counter 5
DECR counter
DECRBY counter 3
INCR greeting
SET big 9223372036854775807
INCR big
MSET a 1 b 2 c 3
MGET a b c d
EXISTS a b d a
DEL a b d
DBSIZE
SET k v NX
SET k v2 NX
SET k v3 XX
SET nokey v XX
GET k
SET k v EX 100
TTL k
PERSIST k
PERSIST k
TTL k
EXPIRE k 200
TTL k
EXPIRE k 10 NX
EXPIRE k 300 GT
TTL k
EXPIRE k 50 LT
TTL k
EXPIRE k 10 NX XX
EXPIRE k 10 FOO
PEXPIRE k 0
EXISTS k
TTL nokey
PTTL nokey
SET k v EX 0
SET k v PX -5
SET k v EX abc
SET k v NX XX
SET k v EX 10 PX 10
NOSUCHCOMMAND a b
GET
GET a b
MSET a
PING a b
CONFIG GET save
CONFIG GET appendonly
CONFIG SET nosuch x
CLIENT SETNAME tester
CLIENT GETNAME
CLIENT SETNAME \"two words\"
CLIENT NOSUCH
HELLO 4
FLUSHALL
DBSIZE
";
// ANCHOR_END: script

const LIMIT: Duration = Duration::from_secs(60);

fn cli_session(port: u16) -> String {
    let port = port.to_string();
    let args = ["-h", "127.0.0.1", "-p", &port, "--no-raw"];
    run_tool("redis-cli", &args, SCRIPT.as_bytes(), LIMIT).0
}

#[test]
fn redis_cli_prints_what_redis_server_makes_it_print() {
    let redis = RedisServer::start();
    let expected = cli_session(redis.port);
    let server = start(&[]);
    let got = cli_session(server.addr.port());
    assert!(
        expected.contains("(error) ERR unknown command 'NOSUCHCOMMAND'"),
        "the script ran against redis-server: {expected}"
    );
    for (line, (want, have)) in expected.lines().zip(got.lines()).enumerate() {
        let command = SCRIPT.lines().nth(line).unwrap_or("?");
        assert_eq!(have, want, "line {} of the script, `{command}`", line + 1);
    }
    assert_eq!(got.lines().count(), expected.lines().count());
}

// ANCHOR: benchmark
/// redis-benchmark's own tests, 50 clients, without and with pipelining.
/// It stops at the first error reply it gets, and says so. The runs here
/// are shorter than the default 100,000 requests (the capture in the
/// book's chapter shows those); the pipelined run is the full length.
#[test]
fn redis_benchmark_runs_without_an_error() {
    let server = start(&[]);
    let port = server.addr.port().to_string();
    for (pipeline, requests) in [("1", "10000"), ("16", "100000")] {
        let args = [
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-c",
            "50",
            "-n",
            requests,
            "-P",
            pipeline,
            "-t",
            "ping,set,get,incr,mset",
            "--csv",
        ];
        let (out, err) = run_tool("redis-benchmark", &args, b"", LIMIT);
        let said = format!("{out}{err}");
        assert!(
            !said.contains("Error") && !said.contains("WARNING"),
            "redis-benchmark -P {pipeline} met an error:\n{said}"
        );
        for test in [
            "PING_INLINE",
            "PING_MBULK",
            "SET",
            "GET",
            "INCR",
            "MSET (10 keys)",
        ] {
            assert!(
                out.contains(&format!("\"{test}\",")),
                "redis-benchmark -P {pipeline} has no result for {test}:\n{said}"
            );
        }
    }
}
// ANCHOR_END: benchmark

/// `redis-cli` at a terminal asks `COMMAND DOCS` for its hints before the
/// first prompt, and must get on with an empty answer. `script` gives it a
/// terminal (a dumb one: no cursor queries), and the session must go on.
#[test]
fn interactive_redis_cli_starts_and_serves() {
    support::redis_tool("redis-cli");
    let server = start(&[]);
    let cli = format!("redis-cli -p {}", server.addr.port());
    let mut child = std::process::Command::new("script")
        .args(["-qec", &cli, "/dev/null"])
        .env("TERM", "dumb")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("script (util-linux) gives redis-cli a terminal");
    use std::io::{Read, Write};
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(b"SET greeting hello\nGET greeting\nQUIT\n")
        .unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    drop(stdin);
    let _ = child.wait();
    assert!(out.contains("OK") && out.contains("\"hello\""), "{out}");
    assert!(!out.contains("(error)") && !out.contains("ERR"), "{out}");
}
