//! The real binary on 127.0.0.1, in every variant and runtime: the
//! `listening on` contract, echoing, pipelining, frames cut anywhere, closing
//! on a too-long frame after answering the frames before it, exit 0 on
//! SIGINT, and short loadgen runs.

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

/// Every (runtime, variant) the benchmark runs.
const SERVERS: [(&str, &str); 4] = [
    ("current-thread", "idiomatic"),
    ("current-thread", "tuned"),
    ("multi-thread", "idiomatic"),
    ("multi-thread", "tuned"),
];

fn start(runtime: &str, variant: &str) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tokio-echo"))
        .args(["--addr", "127.0.0.1:0", "--runtime", runtime])
        .args(["--variant", variant])
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

impl Drop for Server {
    /// A test that panicked must not leave its server running.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_le_bytes().to_vec();
    f.extend_from_slice(payload);
    f
}

fn connect(server: &Server) -> TcpStream {
    let conn = TcpStream::connect(server.addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn
}

#[test]
fn echoes_pipelined_frames_and_exits_cleanly() {
    for (runtime, variant) in SERVERS {
        let server = start(runtime, variant);
        let mut conn = connect(&server);
        let big: Vec<u8> = (0..4096).map(|i| i as u8).collect();
        let sent: Vec<u8> = [&b"hello"[..], b"", &big]
            .iter()
            .flat_map(|p| frame(p))
            .collect();
        // All three at once: the replies must come back whole and in order.
        conn.write_all(&sent).unwrap();
        let mut got = vec![0; sent.len()];
        conn.read_exact(&mut got).unwrap();
        assert_eq!(got, sent, "{runtime} {variant}");

        // A frame over 4096 bytes closes the connection.
        conn.write_all(&4097u32.to_le_bytes()).unwrap();
        let mut rest = Vec::new();
        assert_eq!(
            conn.read_to_end(&mut rest).unwrap(),
            0,
            "{runtime} {variant}"
        );

        server.stop();
    }
}

#[test]
fn frames_cut_anywhere_are_answered_whole() {
    for (runtime, variant) in SERVERS {
        let server = start(runtime, variant);
        let mut conn = connect(&server);
        conn.set_nodelay(true).unwrap();
        let sent: Vec<u8> = (0..20u32)
            .flat_map(|i| frame(&vec![i as u8; (i * 217) as usize % 4097]))
            .collect();
        // Pieces of 1000 bytes, each its own segment: headers and payloads
        // are cut at every kind of place.
        let reader = {
            let mut conn = conn.try_clone().unwrap();
            let len = sent.len();
            std::thread::spawn(move || {
                let mut got = vec![0; len];
                conn.read_exact(&mut got).map(|()| got)
            })
        };
        for piece in sent.chunks(1000) {
            conn.write_all(piece).unwrap();
        }
        let got = reader.join().unwrap().unwrap();
        assert!(got == sent, "{runtime} {variant}: replies differ");
        server.stop();
    }
}

#[test]
fn a_too_long_frame_closes_after_the_frames_before_it_are_answered() {
    for (runtime, variant) in SERVERS {
        let server = start(runtime, variant);
        let mut conn = connect(&server);
        let good: Vec<u8> = [&b"one"[..], &[7; 4096], b"three"]
            .iter()
            .flat_map(|p| frame(p))
            .collect();
        // One write: the oversize header arrives in the same read as the good frames.
        let mut sent = good.clone();
        sent.extend_from_slice(&5000u32.to_le_bytes());
        conn.write_all(&sent).unwrap();
        // Everything before the bad header, then EOF.
        let mut got = Vec::new();
        conn.read_to_end(&mut got).unwrap();
        assert!(got == good, "{runtime} {variant}: got {} bytes", got.len());
        server.stop();
    }
}

#[test]
fn loadgen_verifies_every_reply() {
    for (runtime, variant) in SERVERS {
        let server = start(runtime, variant);
        for (depth, size) in [(4, 100), (8, 4096)] {
            let report = loadgen::run(&Config {
                addr: server.addr,
                conns: 8,
                idle: 20,
                depth,
                size,
                connect_timeout: Duration::from_secs(2),
                warmup: Duration::from_millis(100),
                secs: Duration::from_millis(200),
                drain: Duration::from_millis(500),
                threads: 2,
                server_pid: None,
                rate: None,
            })
            .unwrap();
            assert_eq!(
                report.verdict(),
                Verdict::Ok,
                "{runtime} {variant}: {}",
                report.summary()
            );
            assert!(report.frames > 0);
        }
        server.stop();
    }
}
