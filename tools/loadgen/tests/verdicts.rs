//! The load generator against small misbehaving servers on 127.0.0.1: it must
//! catch wrong, reordered and lost replies, and end on time when nobody answers;
//! and against null-echo, the server that measures its ceiling.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use loadgen::{Config, Verdict};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Starts a server on a free port that runs `serve` on each connection in a thread.
fn server(serve: fn(TcpStream)) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || serve(stream));
        }
    });
    addr
}

fn read_frame(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut header = [0u8; 4];
    stream.read_exact(&mut header).ok()?;
    let mut frame = header.to_vec();
    frame.resize(4 + u32::from_le_bytes(header) as usize, 0);
    stream.read_exact(&mut frame[4..]).ok()?;
    Some(frame)
}

fn config(addr: SocketAddr) -> Config {
    Config {
        addr,
        conns: 3,
        idle: 0,
        depth: 2,
        size: 32,
        connect_timeout: Duration::from_millis(500),
        warmup: Duration::from_millis(50),
        secs: Duration::from_millis(200),
        drain: Duration::from_millis(300),
        threads: 2,
        server_pid: None,
        rate: None,
    }
}

#[test]
fn a_correct_server_passes() {
    let addr = server(|mut s| {
        while let Some(f) = read_frame(&mut s) {
            s.write_all(&f).unwrap();
        }
    });
    let report = loadgen::run(&config(addr)).unwrap();
    assert_eq!(report.verdict(), Verdict::Ok, "{}", report.summary());
    assert!(report.frames > 0);
}

#[test]
fn a_flipped_byte_fails_the_run() {
    let addr = server(|mut s| {
        let mut n = 0;
        while let Some(mut f) = read_frame(&mut s) {
            n += 1;
            if n == 10 {
                f[20] ^= 0x40;
            }
            s.write_all(&f).unwrap();
        }
    });
    let report = loadgen::run(&config(addr)).unwrap();
    assert_eq!(report.verdict(), Verdict::Failed, "{}", report.summary());
    assert!(report.mismatches >= 1);
}

#[test]
fn swapped_replies_fail_the_run() {
    // Answers each pair of pipelined frames in the wrong order.
    let addr = server(|mut s| {
        while let (Some(a), Some(b)) = (read_frame(&mut s), read_frame(&mut s)) {
            s.write_all(&b).unwrap();
            s.write_all(&a).unwrap();
        }
    });
    let report = loadgen::run(&config(addr)).unwrap();
    assert_eq!(report.verdict(), Verdict::Failed, "{}", report.summary());
    assert!(report.mismatches >= 1);
}

#[test]
fn a_server_that_stops_answering_loses_frames() {
    let addr = server(|mut s| {
        for _ in 0..5 {
            let Some(f) = read_frame(&mut s) else { return };
            s.write_all(&f).unwrap();
        }
        // Keep the connection open but never answer again.
        while read_frame(&mut s).is_some() {}
    });
    let report = loadgen::run(&config(addr)).unwrap();
    assert_eq!(report.verdict(), Verdict::Failed, "{}", report.summary());
    assert!(report.lost > 0);
}

#[test]
fn a_silent_server_stalls_on_time() {
    // Accepts (the kernel does, anyway) but never reads or answers.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let started = Instant::now();
    let report = loadgen::run(&config(listener.local_addr().unwrap())).unwrap();
    assert_eq!(report.verdict(), Verdict::Stalled, "{}", report.summary());
    assert_eq!(report.stalled, 3);
    // connect_timeout + warmup + secs + drain = 1.05 s, plus slack.
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn nobody_listening_is_reported_not_hung() {
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    // The listener is dropped: connections are refused.
    let report = loadgen::run(&config(addr)).unwrap();
    assert_eq!(report.verdict(), Verdict::Stalled, "{}", report.summary());
    assert_eq!(report.connect_failed, 3);
}

#[test]
fn replies_cut_anywhere_are_put_back_together() {
    // Answers every frame in 7-byte pieces: replies straddle reads at every offset.
    let addr = server(|mut s| {
        s.set_nodelay(true).unwrap();
        while let Some(f) = read_frame(&mut s) {
            for piece in f.chunks(7) {
                if s.write_all(piece).is_err() {
                    return;
                }
            }
        }
    });
    let mut config = config(addr);
    config.size = 4096;
    let report = loadgen::run(&config).unwrap();
    assert_eq!(report.verdict(), Verdict::Ok, "{}", report.summary());
    assert!(report.frames > 0);
}

#[test]
fn a_truncated_reply_fails_the_run() {
    // Sends the first half of the third reply, then closes.
    let addr = server(|mut s| {
        for _ in 0..2 {
            let Some(f) = read_frame(&mut s) else { return };
            s.write_all(&f).unwrap();
        }
        if let Some(f) = read_frame(&mut s) {
            let _ = s.write_all(&f[..f.len() / 2]);
        }
    });
    let report = loadgen::run(&config(addr)).unwrap();
    assert_eq!(report.verdict(), Verdict::Failed, "{}", report.summary());
    assert!(report.closed > 0 && report.lost > 0, "{}", report.summary());
}

#[test]
fn a_reply_with_another_length_fails_the_run() {
    // Echoes the payload but one byte short, with a header that says so.
    let addr = server(|mut s| {
        while let Some(f) = read_frame(&mut s) {
            let mut short = ((f.len() - 5) as u32).to_le_bytes().to_vec();
            short.extend_from_slice(&f[4..f.len() - 1]);
            if s.write_all(&short).is_err() {
                return;
            }
        }
    });
    let report = loadgen::run(&config(addr)).unwrap();
    assert_eq!(report.verdict(), Verdict::Failed, "{}", report.summary());
    assert!(report.mismatches >= 1);
}

/// The null-echo binary on a free port, stopped with SIGINT by [`NullEcho::stop`].
struct NullEcho {
    child: Child,
    addr: SocketAddr,
}

impl NullEcho {
    fn start() -> NullEcho {
        let mut child = Command::new(env!("CARGO_BIN_EXE_null-echo"))
            .args(["--addr", "127.0.0.1:0"])
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
        NullEcho { child, addr }
    }

    /// SIGINT, then the exit status must be 0.
    fn stop(mut self) {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGINT).unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "exit status {status}");
    }
}

impl Drop for NullEcho {
    /// A test that panicked must not leave its server running.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn null_echo_returns_every_byte_and_exits_cleanly() {
    let server = NullEcho::start();
    let mut conn = TcpStream::connect(server.addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // Not frames at all, and more than its read buffer: it echoes bytes, whatever they are.
    let sent: Vec<u8> = (0..1_000_000u32)
        .map(|i| (i * 13 + i / 977) as u8)
        .collect();
    let writer = {
        let mut conn = conn.try_clone().unwrap();
        let sent = sent.clone();
        // Written from another thread: the echo fills our receive buffer meanwhile.
        std::thread::spawn(move || conn.write_all(&sent).unwrap())
    };
    let mut got = vec![0; sent.len()];
    conn.read_exact(&mut got).unwrap();
    writer.join().unwrap();
    assert!(got == sent, "the echo differs from what was sent");
    drop(conn);
    server.stop();
}

#[test]
fn loadgen_verifies_null_echo_at_every_size() {
    let server = NullEcho::start();
    for (depth, size) in [(1, 0), (16, 64), (4, 4096)] {
        let mut config = config(server.addr);
        (config.depth, config.size, config.idle) = (depth, size, 5);
        let report = loadgen::run(&config).unwrap();
        assert_eq!(report.verdict(), Verdict::Ok, "{}", report.summary());
        assert!(report.frames > 0);
    }
    server.stop();
}

#[test]
fn null_echo_closes_when_the_peer_does() {
    let server = NullEcho::start();
    for _ in 0..20 {
        let mut conn = TcpStream::connect(server.addr).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // Bytes and the FIN back to back: they often arrive in one edge,
        // and the EOF behind a short read must not be missed.
        conn.write_all(b"last words").unwrap();
        conn.shutdown(std::net::Shutdown::Write).unwrap();
        let mut got = Vec::new();
        conn.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"last words");
    }
    server.stop();
}
