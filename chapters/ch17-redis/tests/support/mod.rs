//! What the tests of this chapter share: starting `ch17` (through the
//! suite's harness), a small RESP client, and the real Redis tools.

#![allow(dead_code)] // each test file uses what it needs

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

pub use conformance::harness::{Options, Server};

pub const BIN: &str = env!("CARGO_BIN_EXE_ch17");

/// How long a reply may take before a test fails.
pub const PATIENCE: Duration = Duration::from_secs(10);

pub fn start(args: &[&str]) -> Server {
    Server::start_with(
        BIN,
        Options {
            args,
            ..Options::default()
        },
    )
}

/// A request in the multibulk form, as client libraries send it.
pub fn request(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// `request` from words.
pub fn cmd(line: &str) -> Vec<u8> {
    let words: Vec<&[u8]> = line.split_whitespace().map(str::as_bytes).collect();
    request(&words)
}

/// A connection that reads whole replies, raw, as the server sent them.
pub struct Redis {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Redis {
    pub fn connect(addr: SocketAddr) -> Redis {
        let stream = TcpStream::connect(addr).expect("connect to the server");
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream.set_write_timeout(Some(PATIENCE)).unwrap();
        stream.set_nodelay(true).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Redis { stream, reader }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send to the server");
    }

    /// Sends `line` (words, as a multibulk request) and returns the reply.
    pub fn call(&mut self, line: &str) -> String {
        self.send(&cmd(line));
        self.reply()
    }

    /// The next whole reply, as text (lossy: the tests' values are text).
    pub fn reply(&mut self) -> String {
        String::from_utf8_lossy(&self.raw_reply()).into_owned()
    }

    pub fn raw_reply(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        self.read_reply_into(&mut out);
        out
    }

    fn read_reply_into(&mut self, out: &mut Vec<u8>) {
        let start = out.len();
        match self.reader.read_until(b'\n', out) {
            Ok(0) => panic!("the server closed the connection instead of replying"),
            Ok(_) => {}
            Err(e) => panic!("no reply within {PATIENCE:?}: {e}"),
        }
        let line = String::from_utf8_lossy(&out[start..]).into_owned();
        let number = || line[1..].trim_end().parse::<i64>().unwrap();
        match line.as_bytes()[0] {
            b'$' if number() >= 0 => {
                let mut data = vec![0; number() as usize + 2];
                self.reader.read_exact(&mut data).expect("a bulk string");
                out.extend_from_slice(&data);
            }
            b'*' => {
                for _ in 0..number().max(0) {
                    self.read_reply_into(out);
                }
            }
            _ => {}
        }
    }

    /// An integer reply's value.
    pub fn integer(&mut self, line: &str) -> i64 {
        let reply = self.call(line);
        reply
            .strip_prefix(':')
            .and_then(|n| n.trim_end().parse().ok())
            .unwrap_or_else(|| panic!("{line}: not an integer reply: {reply:?}"))
    }

    /// Asserts that the server closes the connection, with nothing more to say.
    pub fn assert_closed(&mut self) {
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) if rest.is_empty() => {}
            Ok(_) => panic!(
                "before closing, the server sent {:?}",
                String::from_utf8_lossy(&rest)
            ),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            Err(e) => panic!("the connection stayed open: {e}"),
        }
    }
}

/// A fresh connection is answered: the server is up and serving.
pub fn assert_serves(server: &mut Server) {
    server.assert_running();
    let mut redis = Redis::connect(server.addr);
    assert_eq!(
        redis.call("PING"),
        "+PONG\r\n",
        "a new client was not served"
    );
}

/// Polls `condition` until it holds, failing after `within`.
pub fn eventually(within: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "still not true after {within:?}: {what}"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

// ANCHOR: tools
/// A program from Redis's packages, or a failure that says how to get it.
/// These tests need the real tools: without them they fail, they do not skip.
pub fn redis_tool(name: &str) -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|path| path.is_file());
    found.unwrap_or_else(|| {
        panic!(
            "{name} is not installed: chapter 17's tests drive the server with the real \
             Redis tools and compare it with the real Redis. Install them (Debian, Ubuntu: \
             `apt-get install redis-server redis-tools`; Fedora: `dnf install redis`; \
             macOS: `brew install redis`; see the README); CI installs them itself"
        )
    })
}
// ANCHOR_END: tools

/// A `redis-server` on a free port, persistence off; killed when dropped.
pub struct RedisServer {
    child: Child,
    pub port: u16,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(redis_tool("redis-server"))
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--io-threads", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let mut server = RedisServer { child, port };
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        eventually(PATIENCE, "redis-server accepts connections", || {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("redis-server exited at once ({status}): is port {port} free?");
            }
            TcpStream::connect(addr).is_ok()
        });
        server
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a Redis tool to completion, killing it after `limit`.
pub fn run_tool(name: &str, args: &[&str], stdin: &[u8], limit: Duration) -> (String, String) {
    let mut child = Command::new(redis_tool(name))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {name}: {e}"));
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    let writer = thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let out = thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{name} {} did not finish within {limit:?}", args.join(" "));
        }
        thread::sleep(Duration::from_millis(20));
    };
    writer.join().unwrap();
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    assert!(
        status.success(),
        "{name} {}: {status}\n{out}\n{err}",
        args.join(" ")
    );
    (out, err)
}
