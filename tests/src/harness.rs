//! Starting a server binary and talking to it, with every wait bounded.

use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, Once};
use std::thread;
use std::time::{Duration, Instant};

pub use common::frame::{encode_frame, HEADER_LEN, MAX_MSG};

/// How long any single socket operation may take before the test fails.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A running server binary. Dropping it kills the server; if the test is
/// failing, the server's stderr is printed to help find out why.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    stderr: Arc<Mutex<Vec<u8>>>,
}

/// Extra settings for [`Server::start_with`].
#[derive(Default)]
pub struct Options<'a> {
    /// Arguments after `--addr 127.0.0.1:0`.
    pub args: &'a [&'a str],
    /// `RLIMIT_NOFILE` for the server process.
    pub max_open_files: Option<u64>,
    /// The soft `RLIMIT_NOFILE` alone, the hard limit left as it is.
    pub soft_open_files: Option<u64>,
    /// Extra environment variables.
    pub env: &'a [(&'a str, &'a str)],
    /// Start the server with stderr a pipe whose reader has gone, as under
    /// `server 2>&1 | head -1` once `head` has exited.
    pub broken_stderr: bool,
}

impl Server {
    pub fn start(bin: &str) -> Server {
        Server::start_with(bin, Options::default())
    }

    pub fn start_with(bin: &str, options: Options) -> Server {
        raise_open_file_limit();
        let mut cmd = Command::new(bin);
        cmd.args(["--addr", "127.0.0.1:0"])
            .args(options.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.envs(options.env.iter().copied());
        let limits = match (options.max_open_files, options.soft_open_files) {
            (Some(limit), _) => Some((limit, limit)),
            (None, Some(soft)) => Some((soft, hard_open_file_limit())),
            (None, None) => None,
        };
        if let Some((soft, hard)) = limits {
            // SAFETY: runs in the forked child before exec; setrlimit is
            // async-signal-safe and touches no memory shared with the parent.
            unsafe {
                cmd.pre_exec(move || {
                    let rlim = libc::rlimit {
                        rlim_cur: soft,
                        rlim_max: hard,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &rlim) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));

        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut pipe = child.stderr.take().unwrap();
        if options.broken_stderr {
            // Closing the only read end: every write to it fails with EPIPE.
            drop(pipe);
        } else {
            let sink = stderr.clone();
            thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                    sink.lock().unwrap().extend_from_slice(&chunk[..n]);
                }
            });
        }

        // Wait for the `listening on` line: the only synchronisation needed.
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(IO_TIMEOUT)
            .unwrap_or_else(|_| panic!("{bin} printed no `listening on` line in time"));
        let addr = line
            .strip_suffix('\n')
            .and_then(|l| l.strip_prefix("listening on "))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("{bin}: expected `listening on HOST:PORT`, got {line:?}"));
        Server {
            child,
            addr,
            stderr,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Opens a client connection with read and write timeouts set.
    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    /// Panics if the server process has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("server exited unexpectedly: {status}");
        }
    }

    /// A fresh connection still gets its frame echoed: the server is alive and serving.
    pub fn assert_serves(&mut self) {
        self.assert_running();
        let mut client = self.connect();
        client.assert_echo(b"still serving?");
    }

    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own child.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill failed: {}", io::Error::last_os_error());
    }

    /// Waits for the server to exit on its own, failing after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "server still running {timeout:?} after being asked to stop"
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends `signal` and asserts a clean exit (status 0) within `timeout`.
    pub fn assert_stops_cleanly_on(&mut self, signal: libc::c_int, timeout: Duration) {
        self.signal(signal);
        let status = self.wait_exit(timeout);
        assert!(
            status.success(),
            "server exited with {status} (signal {:?}) instead of 0",
            status.signal()
        );
    }

    /// Resident memory of the server process, in bytes.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status");
        kib * 1024
    }

    /// CPU time (user + system) the server has used so far.
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // Fields after the command name, which is in parentheses and may hold spaces.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        Duration::from_millis(ticks * 1000 / hz)
    }

    /// Number of file descriptors the server has open.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .count()
    }

    /// Polls `condition` every few milliseconds until it holds or `timeout` passes.
    /// For effects that happen asynchronously in the server (closing a socket),
    /// where there is no message to wait for.
    pub fn eventually(
        &self,
        timeout: Duration,
        what: &str,
        mut condition: impl FnMut(&Self) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        while !condition(self) {
            assert!(
                Instant::now() < deadline,
                "not true after {timeout:?}: {what}"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("--- server stderr ---\n{}---", self.stderr());
        }
    }
}

/// Tests open thousands of sockets; the soft limit is often 1024. Raise it to
/// the hard limit once; servers we start inherit it.
fn raise_open_file_limit() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let mut rlim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit only read/write the struct we pass.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rlim) == 0 {
                rlim.rlim_cur = rlim.rlim_max;
                libc::setrlimit(libc::RLIMIT_NOFILE, &rlim);
            }
        }
    });
}

fn hard_open_file_limit() -> u64 {
    let mut rlim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rlim) };
    assert_eq!(rc, 0, "getrlimit: {}", io::Error::last_os_error());
    rlim.rlim_max
}

/// Runs `bin` with `args` to completion, for what it prints and how it
/// exits, killing it if it takes longer than `timeout` (a server that does
/// not know `--help` starts serving instead of exiting).
pub fn run_bounded(
    bin: &str,
    args: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
) -> std::process::Output {
    let child = Command::new(bin)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
    let pid = child.id() as i32;
    let (tx, rx) = mpsc::channel::<()>();
    let watchdog = thread::spawn(move || {
        if rx.recv_timeout(timeout).is_err() {
            // SAFETY: kill(2) has no memory-safety preconditions; the pid is
            // our child, not yet waited for, so it cannot have been reused.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    });
    let output = child.wait_with_output().unwrap();
    let _ = tx.send(());
    watchdog.join().unwrap();
    assert!(
        output.status.signal() != Some(libc::SIGKILL),
        "`{bin} {}` still ran after {timeout:?}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A client connection with every wait bounded by [`IO_TIMEOUT`].
pub struct Client {
    pub stream: TcpStream,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client { stream }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    pub fn send_frame(&mut self, payload: &[u8]) {
        self.send(&frame(payload));
    }

    /// Reads exactly `n` bytes.
    pub fn recv_exact(&mut self, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        self.stream
            .read_exact(&mut buf)
            .unwrap_or_else(|e| panic!("expected {n} bytes from the server: {e}"));
        buf
    }

    /// Reads one frame, checking its header, and returns the payload.
    pub fn recv_frame(&mut self) -> Vec<u8> {
        let header = self.recv_exact(HEADER_LEN);
        let len = u32::from_le_bytes(header.try_into().unwrap()) as usize;
        assert!(len <= MAX_MSG, "server sent a frame of {len} bytes");
        self.recv_exact(len)
    }

    /// Sends a frame and asserts the reply is the identical frame.
    pub fn assert_echo(&mut self, payload: &[u8]) {
        self.send_frame(payload);
        let reply = self.recv_exact(HEADER_LEN + payload.len());
        assert!(reply == frame(payload), "reply differs from the request");
    }

    /// Reads until the server closes the connection (EOF or reset), failing
    /// if it sends data or keeps it open longer than [`IO_TIMEOUT`].
    pub fn assert_closed_by_server(&mut self) {
        let mut buf = [0u8; 64];
        match self.stream.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => panic!("expected the server to close, got {n} bytes"),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            Err(e) => panic!("expected the server to close the connection: {e}"),
        }
    }

    pub fn shutdown_write(&self) {
        self.stream.shutdown(Shutdown::Write).unwrap();
    }

    /// Closes with a TCP reset instead of a FIN: SO_LINGER with a zero timeout
    /// makes close(2) discard unsent data and send RST.
    pub fn reset(self) {
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: the pointer and length describe a valid `linger` for the call's duration.
        let rc = unsafe {
            libc::setsockopt(
                self.stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "SO_LINGER: {}", io::Error::last_os_error());
        drop(self.stream);
    }
}

/// The frame carrying `payload`.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    encode_frame(payload, &mut out);
    out
}

/// A small deterministic generator (xorshift64*), so failures reproduce.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..=max`.
    pub fn up_to(&mut self, max: usize) -> usize {
        (self.next_u64() % (max as u64 + 1)) as usize
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}
