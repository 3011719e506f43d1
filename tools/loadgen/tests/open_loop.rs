//! The open loop (`Config::rate`) against small servers on 127.0.0.1: it
//! keeps its schedule whatever the server does, so a stall that a closed
//! loop hides shows in its percentiles, and a server that falls behind is
//! behind, not broken.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use loadgen::{Config, Verdict};

/// Starts a server on a free port that echoes each frame in a thread per
/// connection, calling `before_reply` with the server's age before each reply.
fn server(before_reply: fn(Duration)) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let born = Instant::now();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || echo(stream, born, before_reply));
        }
    });
    addr
}

fn echo(mut s: TcpStream, born: Instant, before_reply: fn(Duration)) {
    s.set_nodelay(true).unwrap();
    loop {
        let mut header = [0u8; 4];
        if s.read_exact(&mut header).is_err() {
            return;
        }
        let mut frame = header.to_vec();
        frame.resize(4 + u32::from_le_bytes(header) as usize, 0);
        if s.read_exact(&mut frame[4..]).is_err() {
            return;
        }
        before_reply(born.elapsed());
        if s.write_all(&frame).is_err() {
            return;
        }
    }
}

/// Serves for 300 ms, then stops for 200 ms, over and over: a pause the
/// way a garbage collector, a page fault storm or a blocking call makes one.
fn stall_every_half_second(age: Duration) {
    const CYCLE: u128 = 500;
    const SERVING: u128 = 300;
    let phase = age.as_millis() % CYCLE;
    if phase >= SERVING {
        std::thread::sleep(Duration::from_millis((CYCLE - phase) as u64));
    }
}

fn config(addr: SocketAddr, rate: Option<f64>) -> Config {
    Config {
        addr,
        conns: 1,
        idle: 0,
        depth: 1,
        size: 32,
        connect_timeout: Duration::from_secs(2),
        warmup: Duration::from_millis(50),
        secs: Duration::from_secs(2),
        drain: Duration::from_millis(500),
        threads: 1,
        server_pid: None,
        rate,
    }
}

#[test]
fn the_open_loop_sees_a_stall_the_closed_loop_hides() {
    let addr = server(stall_every_half_second);
    let closed = loadgen::run(&config(addr, None)).unwrap();
    let open = loadgen::run(&config(addr, Some(1000.0))).unwrap();
    for r in [&closed, &open] {
        assert_eq!(r.verdict(), Verdict::Ok, "{}", r.summary());
    }
    let ms = |us: f64| us / 1000.0;
    // Both met the stalls: each window holds four.
    assert!(ms(closed.latency_us.max) >= 150.0, "{}", closed.summary());
    assert!(ms(open.latency_us.max) >= 150.0, "{}", open.summary());
    // The closed loop stopped sending while the server stopped: four slow
    // frames among thousands, below its 99th percentile.
    assert!(ms(closed.latency_us.p99) < 50.0, "{}", closed.summary());
    // The open loop kept sending: the two frames in five due during a stall
    // waited for its end, up to 200 ms. (Its median is a frame sent while
    // the server serves: fast, so no bound on it.)
    assert!(ms(open.latency_us.p99) >= 100.0, "{}", open.summary());
}

#[test]
fn the_open_loop_sends_on_schedule() {
    let addr = server(|_| {});
    let mut config = config(addr, Some(2000.0));
    (config.conns, config.threads, config.idle) = (5, 2, 3);
    config.secs = Duration::from_millis(500);
    let r = loadgen::run(&config).unwrap();
    assert_eq!(r.verdict(), Verdict::Ok, "{}", r.summary());
    assert_eq!(r.offered_fps, Some(2000.0));
    // Exactly the frames due in the window, whatever the timer's precision:
    // 2000/s for 0.5 s, give or take one per thread at each end.
    let expected = 1000i64;
    assert!(
        (r.scheduled as i64 - expected).abs() <= 2 * config.threads as i64,
        "{} scheduled",
        r.scheduled
    );
    assert_eq!(r.unanswered, 0, "{}", r.summary());
    assert!(r.schedule_lag_us.is_some());
    assert!(r.frames_total >= r.frames);
}

#[test]
fn a_server_that_falls_behind_is_behind_not_broken() {
    // 5 ms per reply: 200 frames/s at most, offered 1000/s.
    let addr = server(|_| std::thread::sleep(Duration::from_millis(5)));
    let mut config = config(addr, Some(1000.0));
    config.secs = Duration::from_millis(500);
    config.drain = Duration::from_millis(200);
    let r = loadgen::run(&config).unwrap();
    assert_eq!(r.verdict(), Verdict::Ok, "{}", r.summary());
    assert_eq!(r.lost, 0);
    assert!(r.unanswered > 0, "{}", r.summary());
    // The frames still waiting count with the wait they reached: at least
    // the drain for the last one due, so the maximum is at least that.
    assert!(r.latency_us.max >= 200_000.0, "{}", r.summary());
}

#[test]
fn frames_due_in_the_window_count_however_late_they_are_answered() {
    // One stall, from 300 to 700 ms of the server's life: it straddles the
    // end of the window (about 50 to 550 ms), so the frames due in its
    // second half are answered only after the window has closed.
    let addr = server(|age| {
        let (from, to) = (Duration::from_millis(300), Duration::from_millis(700));
        if age >= from && age < to {
            std::thread::sleep(to - age);
        }
    });
    let mut config = config(addr, Some(1000.0));
    config.secs = Duration::from_millis(500);
    config.drain = Duration::from_millis(800);
    let r = loadgen::run(&config).unwrap();
    assert_eq!(r.verdict(), Verdict::Ok, "{}", r.summary());
    assert_eq!(r.unanswered, 0, "{}", r.summary());
    // Counted by when they were answered, the stalled frames would fall
    // out of the window and the percentiles would say nothing happened.
    assert!(r.latency_us.p99 >= 200_000.0, "{}", r.summary());
}
