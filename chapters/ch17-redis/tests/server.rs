//! The server over real sockets: pipelining, requests in pieces, hostile
//! input, memory bounds, expiry, and the stop, as every chapter's.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use support::{assert_serves, cmd, eventually, request, start, Options, Redis, Server, BIN};

fn connect(server: &Server) -> Redis {
    Redis::connect(server.addr)
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let server = start(&[]);
    let mut redis = connect(&server);
    let mut burst = Vec::new();
    let mut expected = Vec::new();
    for i in 0..1000 {
        burst.extend(cmd(&format!("SET key:{i} value:{i}")));
        burst.extend(cmd(&format!("GET key:{i}")));
        burst.extend(cmd("INCR counter"));
        expected.push("+OK\r\n".to_string());
        expected.push(format!("${}\r\nvalue:{i}\r\n", format!("value:{i}").len()));
        expected.push(format!(":{}\r\n", i + 1));
    }
    // Inline commands pipeline too.
    burst.extend_from_slice(b"PING\r\nECHO \"two words\"\r\n");
    expected.push("+PONG\r\n".into());
    expected.push("$9\r\ntwo words\r\n".into());
    redis.send(&burst);
    for (i, want) in expected.iter().enumerate() {
        assert_eq!(&redis.reply(), want, "reply {i}");
    }
}

/// The replies to requests that arrive together leave together, at once:
/// no reply waits for the client's delayed ACK (Nagle's algorithm).
#[test]
fn small_pipelined_requests_come_back_at_once() {
    let server = start(&[]);
    let mut redis = connect(&server);
    let burst = [cmd("PING"), cmd("ECHO x"), cmd("PING")].concat();
    let mut exchanges = Vec::new();
    for _ in 0..20 {
        let start = Instant::now();
        redis.send(&burst);
        for _ in 0..3 {
            redis.reply();
        }
        exchanges.push(start.elapsed());
    }
    exchanges.sort();
    let median = exchanges[exchanges.len() / 2];
    assert!(
        median < Duration::from_millis(15),
        "median round trip {median:?}"
    );
}

// ANCHOR: pieces
/// A request that arrives in pieces, split at every byte, is answered once,
/// when it is whole, and only then.
#[test]
fn a_request_split_anywhere_is_answered_once_whole() {
    let server = start(&[]);
    let mut redis = connect(&server);
    let set = request(&[b"SET", b"split key", b"a value\r\nwith CRLF"]);
    let inline = b"ECHO \"in pieces\"\r\n".to_vec();
    for (whole, reply) in [(&set, "+OK\r\n"), (&inline, "$9\r\nin pieces\r\n")] {
        for split in 1..whole.len() {
            redis.send(&whole[..split]);
            redis.send(&whole[split..]);
            assert_eq!(redis.reply(), reply, "split after {split} bytes");
        }
    }
    // One byte per write; nothing comes back before the last one.
    redis
        .stream
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    for &byte in &set[..set.len() - 1] {
        redis.send(&[byte]);
        let mut buf = [0u8; 16];
        match redis.stream.read(&mut buf) {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            other => panic!("half a request was answered: {other:?}"),
        }
    }
    redis
        .stream
        .set_read_timeout(Some(support::PATIENCE))
        .unwrap();
    redis.send(&set[set.len() - 1..]);
    assert_eq!(redis.reply(), "+OK\r\n");
    let value = request(&[b"GET", b"split key"]);
    redis.send(&value);
    assert_eq!(redis.reply(), "$18\r\na value\r\nwith CRLF\r\n");
}
// ANCHOR_END: pieces

#[test]
fn unknown_commands_and_wrong_arity_leave_the_connection_usable() {
    let server = start(&[]);
    let mut redis = connect(&server);
    assert_eq!(
        redis.call("FOO a b"),
        "-ERR unknown command 'FOO', with args beginning with: 'a' 'b' \r\n"
    );
    assert_eq!(
        redis.call("GET"),
        "-ERR wrong number of arguments for 'get' command\r\n"
    );
    assert_eq!(
        redis.call("mset a"),
        "-ERR wrong number of arguments for 'mset' command\r\n"
    );
    assert_eq!(redis.call("PING"), "+PONG\r\n");
}

// ANCHOR: protocol_errors
/// Every kind of protocol error: the requests before it are answered, then
/// the error in Redis's words, then EOF; the server serves on.
#[test]
fn a_protocol_error_closes_only_that_connection_after_the_replies_before_it() {
    let mut server = start(&[]);
    let bystander_redis = &mut connect(&server);
    let long = format!("*{}", "9".repeat(40));
    let cases: [(&[u8], &str); 8] = [
        (b"*x\r\n", "invalid multibulk length"),
        (b"*2147483648\r\n", "invalid multibulk length"),
        (b"*1\r\n$-1\r\n", "invalid bulk length"),
        (b"*1\r\n$2147483647\r\n", "invalid bulk length"),
        (b"*1\r\nPING\r\n", "expected '$', got 'P'"),
        (long.as_bytes(), "too big mbulk count string"),
        (b"SET \"unbalanced\r\n", "unbalanced quotes in request"),
        (&[b'x'; 70_000], "too big inline request"),
    ];
    for (bad, error) in cases {
        let mut redis = connect(&server);
        redis.send(
            &[
                cmd("SET before error").as_slice(),
                b"PING\r\n",
                bad,
                b"PING\r\n",
            ]
            .concat(),
        );
        assert_eq!(redis.reply(), "+OK\r\n");
        assert_eq!(redis.reply(), "+PONG\r\n");
        assert_eq!(redis.reply(), format!("-ERR Protocol error: {error}\r\n"));
        redis.assert_closed();
        assert_eq!(bystander_redis.call("GET before"), "$5\r\nerror\r\n");
    }
    assert_serves(&mut server);
}
// ANCHOR_END: protocol_errors

#[test]
fn quit_answers_then_closes_and_drops_what_follows() {
    let server = start(&[]);
    let mut redis = connect(&server);
    redis.send(&[cmd("PING"), cmd("QUIT"), cmd("SET after quit")].concat());
    assert_eq!(redis.reply(), "+PONG\r\n");
    assert_eq!(redis.reply(), "+OK\r\n");
    redis.assert_closed();
    assert_eq!(connect(&server).call("EXISTS after"), ":0\r\n");
}

// ANCHOR: memory_bounds
/// A client pipelines GETs of a 100 KB value and never reads: 2 GB of
/// replies if the server kept them all. It stops reading from that client
/// once its write buffer is full, holds at most its two buffers, and goes
/// on serving others.
#[test]
fn a_client_that_never_reads_cannot_grow_memory() {
    let mut server = start(&[]);
    let mut redis = connect(&server);
    let value = "v".repeat(100_000);
    assert_eq!(redis.call(&format!("SET big {value}")), "+OK\r\n");
    let rss_before = server.rss_bytes();
    let mut flood = TcpStream::connect(server.addr).unwrap();
    flood.set_nonblocking(true).unwrap();
    let gets = cmd("GET big").repeat(500_000);
    let (mut sent, mut stalled_since) = (0, Instant::now());
    // Until neither side takes more: our writes block for 100 ms.
    while stalled_since.elapsed() < Duration::from_millis(100) && sent < gets.len() {
        match flood.write(&gets[sent..]) {
            Ok(n) => {
                sent += n;
                stalled_since = Instant::now();
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::yield_now(),
            Err(e) => panic!("the server closed the flooding client: {e}"),
        }
    }
    assert!(
        sent < gets.len(),
        "the server took every request without a reply read"
    );
    assert_eq!(
        redis.call("PING"),
        "+PONG\r\n",
        "others are served meanwhile"
    );
    let growth = server.rss_bytes().saturating_sub(rss_before);
    assert!(growth < 8 << 20, "memory grew by {} KiB", growth >> 10);
    drop(flood);
    assert_serves(&mut server);
}

/// A reply that could never fit in the write buffer, even alone, is
/// refused with an error; Redis would build it.
#[test]
fn a_reply_too_large_for_the_write_buffer_is_refused() {
    let server = start(&[]);
    let mut redis = connect(&server);
    let value = "v".repeat(100_000);
    assert_eq!(redis.call(&format!("SET big {value}")), "+OK\r\n");
    assert_eq!(
        redis.call("MGET big big big"),
        "-ERR reply would exceed the 262144-byte limit\r\n"
    );
    assert_eq!(redis.call("MGET big big").len(), 4 + 2 * (9 + 100_000 + 2));
}

/// Lengths that announce more than a request may hold are refused before
/// a byte of the data is read; those within the limit hold at most the
/// read buffer, whatever they announce.
#[test]
fn declared_lengths_cost_only_what_arrives() {
    let mut server = start(&[]);
    let rss_before = server.rss_bytes();
    let partial: Vec<Redis> = (0..20)
        .map(|_| {
            let mut redis = connect(&server);
            redis.send(b"*1000\r\n$250000\r\n");
            redis.send(&[b'x'; 100_000]);
            redis
        })
        .collect();
    assert_serves(&mut server);
    let growth = server.rss_bytes().saturating_sub(rss_before);
    assert!(
        growth < 20 * (512 << 10),
        "memory grew by {} KiB",
        growth >> 10
    );
    drop(partial);
}
// ANCHOR_END: memory_bounds

// ANCHOR: lazy_expiry
/// With the active expiry off (`--hz 0`), an expired key stays in memory,
/// counted by DBSIZE, until a command looks it up and finds it expired.
#[test]
fn an_expired_key_goes_when_it_is_looked_up() {
    let server = start(&["--hz", "0"]);
    let mut redis = connect(&server);
    assert_eq!(redis.call("SET short-lived v PX 100"), "+OK\r\n");
    let set_at = Instant::now();
    assert_eq!(redis.call("SET forever v"), "+OK\r\n");
    // Not synchronisation: the key's deadline must pass.
    thread::sleep(Duration::from_millis(150).saturating_sub(set_at.elapsed()));
    assert_eq!(redis.integer("DBSIZE"), 2, "nothing deletes it unasked");
    assert_eq!(redis.call("GET short-lived"), "$-1\r\n");
    assert_eq!(redis.integer("DBSIZE"), 1, "the lookup deleted it");
}
// ANCHOR_END: lazy_expiry

// ANCHOR: active_expiry
/// Keys nobody asks for again are deleted by the timer.
#[test]
fn expired_keys_nobody_asks_for_are_deleted_by_the_timer() {
    let server = start(&[]);
    let mut redis = connect(&server);
    let sets: Vec<u8> = (0..500)
        .flat_map(|i| cmd(&format!("SET k{i} v PX 50")))
        .collect();
    redis.send(&[sets, cmd("SET forever v")].concat());
    for _ in 0..501 {
        assert_eq!(redis.reply(), "+OK\r\n");
    }
    eventually(
        Duration::from_secs(5),
        "only the key without a TTL is left",
        || redis.integer("DBSIZE") == 1,
    );
}

/// However many keys expire at once, one timer event deletes at most
/// `KEYS_PER_ROUND * MAX_ROUNDS` (1,000) of them: the loop stays responsive.
#[test]
fn the_timer_deletes_a_bounded_number_of_keys_per_run() {
    let hz: i64 = 4;
    let server = start(&["--hz", &hz.to_string()]);
    let mut redis = connect(&server);
    let keys = 3000;
    let sets: Vec<u8> = (0..keys)
        .flat_map(|i| cmd(&format!("SET k{i} v PX 1")))
        .collect();
    redis.send(&sets);
    for _ in 0..keys {
        redis.reply();
    }
    let began = Instant::now();
    let mut last = (began, redis.integer("DBSIZE"));
    loop {
        let left = redis.integer("DBSIZE");
        let now = Instant::now();
        let runs = (now - last.0).as_millis() as i64 * hz / 1000 + 1;
        assert!(
            last.1 - left <= 1000 * runs,
            "{} keys deleted in {:?}: more than 1,000 per run",
            last.1 - left,
            now - last.0
        );
        if left == 0 {
            break;
        }
        last = (now, left);
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "{left} keys left"
        );
        thread::sleep(Duration::from_millis(20)); // pacing the polls
    }
}
// ANCHOR_END: active_expiry

/// How many bytes the socket's send queue holds that the peer has not
/// acknowledged: 0 once the server has taken in everything we sent.
fn unacknowledged(stream: &TcpStream) -> usize {
    common::net::unacknowledged_bytes(stream).expect("ioctl(SIOCOUTQ)")
}

// ANCHOR: stop
/// 2,000 requests received, then SIGINT: 2,000 replies, then EOF, exit 0.
#[test]
fn a_stop_answers_every_request_received() {
    let mut server = start(&[]);
    let mut redis = connect(&server);
    redis.send(&cmd("INCR n").repeat(2000));
    eventually(
        Duration::from_secs(5),
        "the server took the requests in",
        || unacknowledged(&redis.stream) == 0,
    );
    server.signal(libc::SIGINT);
    for i in 1..=2000 {
        assert_eq!(redis.reply(), format!(":{i}\r\n"));
    }
    redis.assert_closed();
    let status = server.wait_exit(Duration::from_secs(3));
    assert!(status.success(), "{status}");
}
// ANCHOR_END: stop

#[test]
fn a_second_signal_stops_at_once() {
    let mut server = start(&["--grace-ms", "20000"]);
    let mut redis = connect(&server);
    // A client that never hangs up holds the stop for the grace period.
    assert_eq!(redis.call("PING"), "+PONG\r\n");
    server.signal(libc::SIGTERM);
    redis.assert_closed();
    let start = Instant::now();
    server.signal(libc::SIGTERM);
    let status = server.wait_exit(Duration::from_secs(3));
    assert!(status.success() && start.elapsed() < Duration::from_secs(3));
    drop(redis);
}

#[test]
fn broken_stderr_never_stops_the_server() {
    let mut server = Server::start_with(
        BIN,
        Options {
            env: &[("ECHO_LOG", "debug")],
            broken_stderr: true,
            ..Options::default()
        },
    );
    let mut bad = connect(&server);
    bad.send(b"*x\r\n");
    bad.reply();
    bad.assert_closed();
    connect(&server).send(b"*3\r\n$3\r\nSET\r\n");
    let mut redis = connect(&server);
    assert_eq!(redis.call("SET k v PX 1"), "+OK\r\n");
    drop(redis);
    assert_serves(&mut server);
    server.assert_stops_cleanly_on(libc::SIGINT, Duration::from_secs(3));
}

#[test]
fn half_a_request_is_closed_after_the_idle_timeout() {
    let server = start(&["--idle-timeout-ms", "200"]);
    let mut redis = connect(&server);
    let started = Instant::now();
    redis.send(b"*2\r\n$3\r\nGET\r\n$3\r\nke");
    redis.assert_closed();
    assert!(started.elapsed() >= Duration::from_millis(200));
    server.eventually(Duration::from_secs(2), "the server says why", |s| {
        s.stderr().contains("in the middle of a request")
    });
}

/// 10,000 connections that each ran a command and went quiet cost little
/// more than their `Conn`s: no buffer is kept while it is empty.
#[test]
fn ten_thousand_idle_connections_cost_little_memory() {
    let mut server = start(&[]);
    assert_serves(&mut server);
    let rss_before = server.rss_bytes();
    // Plain streams: a `Redis` holds two descriptors, and the test's own
    // limit may be close to 20,000.
    let clients: Vec<TcpStream> = (0..10_000)
        .map(|i| {
            let mut stream = TcpStream::connect(server.addr).unwrap();
            stream.set_read_timeout(Some(support::PATIENCE)).unwrap();
            let i = format!("{i:05}");
            stream.write_all(&cmd(&format!("ECHO {i}"))).unwrap();
            let mut reply = [0u8; 11];
            stream.read_exact(&mut reply).unwrap();
            assert_eq!(reply, format!("$5\r\n{i}\r\n").as_bytes());
            stream
        })
        .collect();
    let growth = server.rss_bytes().saturating_sub(rss_before);
    assert!(
        growth < 20 << 20,
        "10,000 idle connections: {} MiB",
        growth >> 20
    );
    drop(clients);
    assert_serves(&mut server);
}
