//! The load generator against small misbehaving servers on 127.0.0.1: it must
//! catch wrong, reordered and lost replies, and end on time when nobody answers.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use loadgen::{Config, Verdict};

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
