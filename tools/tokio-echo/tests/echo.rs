//! The real binary on 127.0.0.1: the `listening on` contract, echoing,
//! closing on a too-long frame, exit 0 on SIGINT, and a short loadgen run.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use loadgen::{Config, Verdict};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

struct Server {
    child: Child,
    addr: SocketAddr,
}

fn start(runtime: &str) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tokio-echo"))
        .args(["--addr", "127.0.0.1:0", "--runtime", runtime])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .expect(&line)
        .parse()
        .unwrap();
    Server { child, addr }
}

impl Server {
    /// SIGINT, then the exit status must be 0.
    fn stop(mut self) {
        let pid = Pid::from_raw(self.child.id() as i32);
        kill(pid, Signal::SIGINT).unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "exit status {status}");
    }
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_le_bytes().to_vec();
    f.extend_from_slice(payload);
    f
}

#[test]
fn echoes_pipelined_frames_and_exits_cleanly() {
    for runtime in ["current-thread", "multi-thread"] {
        let server = start(runtime);
        let mut conn = TcpStream::connect(server.addr).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let big: Vec<u8> = (0..4096).map(|i| i as u8).collect();
        let sent: Vec<u8> = [&b"hello"[..], b"", &big]
            .iter()
            .flat_map(|p| frame(p))
            .collect();
        // All three at once: the replies must come back whole and in order.
        conn.write_all(&sent).unwrap();
        let mut got = vec![0; sent.len()];
        conn.read_exact(&mut got).unwrap();
        assert_eq!(got, sent, "{runtime}");

        // A frame over 4096 bytes closes the connection.
        conn.write_all(&4097u32.to_le_bytes()).unwrap();
        let mut rest = Vec::new();
        assert_eq!(conn.read_to_end(&mut rest).unwrap(), 0, "{runtime}");

        server.stop();
    }
}

#[test]
fn loadgen_verifies_every_reply() {
    let server = start("multi-thread");
    let report = loadgen::run(&Config {
        addr: server.addr,
        conns: 8,
        idle: 20,
        depth: 4,
        size: 100,
        connect_timeout: Duration::from_secs(2),
        warmup: Duration::from_millis(100),
        secs: Duration::from_millis(300),
        drain: Duration::from_millis(500),
        threads: 2,
        server_pid: None,
    })
    .unwrap();
    assert_eq!(report.verdict(), Verdict::Ok, "{}", report.summary());
    assert!(report.frames > 0);
    assert_eq!(report.mismatches + report.lost, 0);
    server.stop();
}
