//! Starting a server and talking to it, with every wait bounded.
//!
//! Failures panic with a sentence a learner can act on ("the server closed
//! the connection after 4 of the 15 bytes of the reply"), because the runner
//! prints the panic message as the reason a case failed.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, Once};
use std::thread;
use std::time::{Duration, Instant};

pub use common::frame::{encode_frame, HEADER_LEN, MAX_MSG};

use crate::notes::{self, Death};

/// How long any single socket operation may take before the test fails.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// How to start the server under test and find where it listens.
///
/// `command` is a program and its arguments. In them, `{addr}`, `{host}` and
/// `{port}` are replaced by the address the server should listen on. Then:
///
/// - with a placeholder, or with a fixed `port`, the address is known in
///   advance (the port is `port`, or a free port picked afresh for each
///   start), and starting waits until it accepts connections;
/// - otherwise the server follows this project's contract: unless the
///   command already has an `--addr`, `--addr 127.0.0.1:0` is appended, and
///   the server must print `listening on HOST:PORT` as its first line on
///   stdout.
#[derive(Clone, Debug)]
pub struct Target {
    pub command: Vec<String>,
    pub port: Option<u16>,
}

/// Where the started server will listen.
enum Listen {
    /// It prints `listening on HOST:PORT`.
    Announced,
    /// We told it (or were told) the address; it prints nothing we need.
    Known(SocketAddr),
}

impl Target {
    /// One of this project's servers: a binary that follows the contract.
    pub fn binary(bin: &str) -> Target {
        Target {
            command: vec![bin.to_string()],
            port: None,
        }
    }

    /// The same server, started with `args` after its command's own.
    pub fn with_args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Target {
        self.command.extend(args.into_iter().map(Into::into));
        self
    }

    /// The command as a person would type it, for reports.
    pub fn display(&self) -> String {
        shell_words(&self.command)
    }

    pub fn start(&self) -> Server {
        self.start_with(Options::default())
    }

    /// Whether the tool starts the server as this project's servers are
    /// started, telling it where to listen with `--addr` and reading its
    /// `listening on` line: only then do the cases of echo-steps' own
    /// command line apply (see [`crate::cases::Scope`]).
    pub fn follows_contract(&self) -> bool {
        self.port.is_none() && !self.has_placeholder()
    }

    fn has_placeholder(&self) -> bool {
        let placeholders = ["{addr}", "{host}", "{port}"];
        self.command
            .iter()
            .any(|arg| placeholders.iter().any(|p| arg.contains(p)))
    }

    /// The arguments to run and where the server will listen.
    fn resolve(&self, addr_arg: Option<&str>) -> (Vec<String>, Listen) {
        if !self.follows_contract() {
            let port = self.port.unwrap_or_else(free_port);
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            let argv = self
                .command
                .iter()
                .map(|arg| {
                    arg.replace("{addr}", &addr.to_string())
                        .replace("{host}", &addr.ip().to_string())
                        .replace("{port}", &port.to_string())
                })
                .collect();
            (argv, Listen::Known(addr))
        } else {
            let mut argv = self.command.clone();
            let has_addr = argv[1..]
                .iter()
                .any(|arg| arg == "--addr" || arg.starts_with("--addr="));
            if let Some(addr) = addr_arg {
                argv.extend(["--addr".to_string(), addr.to_string()]);
            } else if !has_addr {
                argv.extend(["--addr".to_string(), "127.0.0.1:0".to_string()]);
            }
            (argv, Listen::Announced)
        }
    }

    pub fn start_with(&self, options: Options) -> Server {
        assert!(!self.command.is_empty(), "no server command given");
        raise_open_file_limit();
        let (argv, listen) = self.resolve(options.addr);
        if let Listen::Known(addr) = listen {
            if TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
                panic!(
                    "something already accepts connections on {addr} before the server \
                     was started: stop it, or test on another port"
                );
            }
        }
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .args(options.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: signals go to the server and anything
            // it runs (a wrapper script, say), as Ctrl-C in a terminal would.
            .process_group(0);
        cmd.envs(options.env.iter().copied());
        with_default_signals(&mut cmd);
        let limits = match (options.max_open_files, options.soft_open_files) {
            (Some(limit), _) => Some((limit, limit)),
            (None, Some(soft)) => Some((soft, hard_open_file_limit())),
            (None, None) => None,
        };
        // SAFETY: runs in the forked child before exec; prctl and setrlimit
        // are async-signal-safe and touch no memory shared with the parent.
        unsafe {
            cmd.pre_exec(move || {
                // Dies with us, so a killed test run leaves no server behind.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                if let Some((soft, hard)) = limits {
                    let rlim = libc::rlimit {
                        rlim_cur: soft,
                        rlim_max: hard,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &rlim) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let shown = shell_words(&argv);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the server `{shown}`: {e}"));
        register_live(child.id() as i32);

        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr_pipe = child.stderr.take().unwrap();
        if options.broken_stderr {
            // Closing the only read end: every write to it fails with EPIPE.
            drop(stderr_pipe);
        } else {
            drain(stderr_pipe, stderr.clone(), None);
        }
        let (first_line, line) = mpsc::channel();
        drain(
            child.stdout.take().unwrap(),
            stdout.clone(),
            Some(first_line),
        );

        let mut server = Server {
            child,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            stderr,
            stdout,
            exit: None,
            signals_sent: AtomicU64::new(0),
            broken_stderr: options.broken_stderr,
        };
        server.addr = match listen {
            Listen::Announced => server.read_announced_addr(&shown, line),
            Listen::Known(addr) => {
                server.wait_accepting(&shown, addr);
                addr
            }
        };
        server
    }
}

pub(crate) fn hard_open_file_limit() -> u64 {
    let mut rlim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rlim) };
    assert_eq!(rc, 0, "getrlimit: {}", io::Error::last_os_error());
    rlim.rlim_max
}

// ANCHOR: default_signals
/// Starts the command with every signal at its default action and none
/// blocked, whatever this process inherited: a test run started in the
/// background by a script (`cargo test &`) has SIGINT and SIGQUIT ignored,
/// an ignored signal stays ignored across exec, and a server that inherits
/// that cannot be stopped with Ctrl-C however well it is written.
fn with_default_signals(cmd: &mut Command) {
    // SAFETY: runs in the forked child before exec, where only
    // async-signal-safe calls are allowed: raw system calls are, and they
    // read only the zeroed action on this stack frame. The raw call, not
    // the C library's sigaction, which refuses the two real-time signals
    // it keeps for itself (a parent may have left those ignored too).
    unsafe {
        cmd.pre_exec(|| {
            // The kernel's `struct sigaction`, all zero: SIG_DFL, no flags,
            // an empty mask. Larger than any architecture's.
            let default = [0u64; 4];
            for signal in 1..=64 {
                // SIGKILL and SIGSTOP cannot be changed: EINVAL, harmless.
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    signal,
                    default.as_ptr(),
                    std::ptr::null_mut::<u64>(),
                    8,
                );
            }
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            if libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
// ANCHOR_END: default_signals

/// Runs `command` plus `args` to completion, for what it prints and how it
/// exits, killing it if it takes longer than `timeout` (a server that does
/// not know `--help` starts serving instead of exiting). It runs in a
/// process group of its own, killed whole at the end, so that nothing it
/// started can outlive it and hold its output open.
pub fn run_bounded(
    command: &[String],
    args: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
) -> std::process::Output {
    let shown = format!("{} {}", shell_words(command), args.join(" "));
    let mut cmd = Command::new(&command[0]);
    cmd.args(&command[1..])
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    with_default_signals(&mut cmd);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{shown}`: {e}"));
    let pid = child.id() as i32;
    let stdout = Arc::new(Mutex::new(Vec::new()));
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let readers = [
        drain(child.stdout.take().unwrap(), stdout.clone(), None),
        drain(child.stderr.take().unwrap(), stderr.clone(), None),
    ];
    let deadline = Instant::now() + timeout;
    let finished = loop {
        if peek_exit(pid).is_some() {
            break true;
        }
        if Instant::now() >= deadline {
            break false;
        }
        thread::sleep(Duration::from_millis(5));
    };
    // Whatever is left of its process group goes, the leader too if it
    // is still running.
    // SAFETY: kill(2) has no memory-safety preconditions. The leader is our
    // child, and only the `wait` below reaps it (`peek_exit` does not), so
    // the group id cannot have passed to another process yet.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
    let status = child.wait().unwrap();
    assert!(
        finished,
        "`{shown}` was still running after {}, as if it did not know the \
         option and started serving instead",
        secs(timeout)
    );
    for reader in readers {
        let _ = reader.join();
    }
    let take = |buf: Arc<Mutex<Vec<u8>>>| std::mem::take(&mut *buf.lock().unwrap());
    std::process::Output {
        status,
        stdout: take(stdout),
        stderr: take(stderr),
    }
}

/// Arguments as a shell would need them typed.
fn shell_words(args: &[String]) -> String {
    args.iter()
        .map(|arg| {
            let plain = arg
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./:=,+@{}".contains(c));
            if plain && !arg.is_empty() {
                arg.clone()
            } else {
                format!("'{}'", arg.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A port that is free right now, for a server that must be told one.
fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().unwrap().port()
}

/// How much of a server's stdout or stderr is kept.
const MAX_KEPT_OUTPUT: usize = 1 << 20;

/// Copies a pipe into `sink` until it closes, so a chatty server never
/// blocks on a full pipe; sends the first line to `first_line` if given.
fn drain(
    mut pipe: impl Read + Send + 'static,
    sink: Arc<Mutex<Vec<u8>>>,
    first_line: Option<mpsc::Sender<String>>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut first_line = first_line;
        let mut chunk = [0u8; 4096];
        while let Ok(n @ 1..) = pipe.read(&mut chunk) {
            let mut all = sink.lock().unwrap();
            all.extend_from_slice(&chunk[..n]);
            if first_line.is_some() {
                if let Some(end) = all.iter().position(|&b| b == b'\n') {
                    let line = String::from_utf8_lossy(&all[..=end]).into_owned();
                    let _ = first_line.take().unwrap().send(line);
                }
            }
            // A server logging an error in a busy loop writes megabytes a
            // second: keep the latest output only.
            if all.len() > MAX_KEPT_OUTPUT {
                let excess = all.len() - MAX_KEPT_OUTPUT / 2;
                all.drain(..excess);
            }
        }
        // Closed without a newline: whatever there is counts as the line.
        if let Some(tx) = first_line {
            let _ = tx.send(String::from_utf8_lossy(&sink.lock().unwrap()).into_owned());
        }
    })
}

/// The process groups of the servers running now, so that a runner giving
/// up on a case can stop its server. A server's leader is never reaped
/// while it is listed here (see [`Server::exit_status`]), so its group id
/// cannot have been reused by another process when it is signalled.
static LIVE: Mutex<Vec<i32>> = Mutex::new(Vec::new());

fn register_live(pid: i32) {
    LIVE.lock().unwrap().push(pid);
}

fn unregister_live(pid: i32) {
    LIVE.lock().unwrap().retain(|&p| p != pid);
}

/// Kills every server started by this process that is still running. Their
/// `Server` values notice on their next operation.
pub fn kill_all_servers() {
    for &pid in LIVE.lock().unwrap().iter() {
        // SAFETY: kill(2) has no memory-safety preconditions. Each pid is a
        // child we started as the leader of its own process group and have
        // not reaped (a reaped one leaves the list first, under this lock),
        // so the group id is still ours.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }
}

/// A running server. Dropping it kills the server (and its process group).
/// If the case is failing, what helps explain it is kept for the report
/// (the tail of the server's stderr; how it died, if it died on its own:
/// see [`crate::notes`]).
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    stderr: Arc<Mutex<Vec<u8>>>,
    stdout: Arc<Mutex<Vec<u8>>>,
    /// How the server ended, once it has.
    exit: Option<ExitStatus>,
    /// The signals this harness sent it, one bit each.
    signals_sent: AtomicU64,
    broken_stderr: bool,
}

/// Extra settings for [`Server::start_with`].
#[derive(Default)]
pub struct Options<'a> {
    /// Arguments after the command (and after `--addr 127.0.0.1:0`).
    pub args: &'a [&'a str],
    /// The address to give with `--addr`, instead of `127.0.0.1:0`. The
    /// server must announce the address it listens on, as always.
    pub addr: Option<&'a str>,
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
    /// Starts one of this project's binaries; see [`Target::binary`].
    pub fn start(bin: &str) -> Server {
        Target::binary(bin).start()
    }

    pub fn start_with(bin: &str, options: Options) -> Server {
        Target::binary(bin).start_with(options)
    }

    /// Waits for the `listening on` line: the only synchronisation needed.
    fn read_announced_addr(&mut self, shown: &str, line: mpsc::Receiver<String>) -> SocketAddr {
        let Ok(line) = line.recv_timeout(IO_TIMEOUT) else {
            panic!(
                "the server printed no line on stdout within {}; it should print \
                 `listening on HOST:PORT` once it listens (if it cannot, tell the \
                 tool its port: see --port and the {{port}} placeholder)",
                secs(IO_TIMEOUT)
            );
        };
        if line.is_empty() {
            let status = self.wait_exit_quietly(Duration::from_secs(2));
            panic!(
                "the server {} without printing `listening on HOST:PORT`{}",
                status.map_or("closed its stdout".into(), describe_exit),
                self.last_words()
            );
        }
        line.strip_suffix('\n')
            .map(|l| l.strip_suffix('\r').unwrap_or(l))
            .and_then(|l| l.strip_prefix("listening on "))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "`{shown}` printed {:?} as its first line, not `listening on HOST:PORT` \
                     (a server that announces nothing can be told its port: see --port \
                     and the {{port}} placeholder)",
                    line.trim_end()
                )
            })
    }

    /// Polls until `addr` accepts a connection, for servers that print
    /// nothing. The probe connection is closed at once: a server must cope
    /// with that anyway.
    fn wait_accepting(&mut self, shown: &str, addr: SocketAddr) {
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            if let Some(status) = self.exit_status() {
                panic!(
                    "the server {} before accepting connections on {addr}{}",
                    describe_exit(status),
                    self.last_words()
                );
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "`{shown}` did not accept connections on {addr} within {}",
                secs(IO_TIMEOUT)
            );
            thread::sleep(Duration::from_millis(10));
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
        self.try_running().unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn try_running(&mut self) -> Result<(), String> {
        match self.exit_status() {
            None => Ok(()),
            Some(status) => Err(format!(
                "the server {} while it should still be serving{}",
                describe_exit(status),
                self.last_words()
            )),
        }
    }

    /// A fresh connection still gets its frame echoed: the server is alive and serving.
    pub fn assert_serves(&mut self) {
        self.try_serves().unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn try_serves(&mut self) -> Result<(), String> {
        self.try_running()?;
        self.try_connect()
            .and_then(|mut client| client.try_echo(b"still serving?"))
            .map_err(|e| {
                // A dying server resets connections before it is gone: if
                // it is exiting, that is the news, not the reset.
                let _ = self.wait_exit_quietly(Duration::from_secs(1));
                self.try_running()
                    .err()
                    .unwrap_or_else(|| format!("a new client was not served: {e}"))
            })
    }

    /// Opens a client connection, or says why not.
    pub fn try_connect(&self) -> Result<Client, String> {
        Client::try_connect(self.addr)
    }

    /// Sends `signal` to the server's process group, as Ctrl-C in a terminal does.
    pub fn signal(&self, signal: libc::c_int) {
        self.signals_sent
            .fetch_or(1 << (signal as u64 & 63), Ordering::Relaxed);
        // SAFETY: kill(2) has no memory-safety preconditions; the group is
        // our own child's, whose leader is not reaped before `drop`.
        let rc = unsafe { libc::kill(-self.pid(), signal) };
        assert!(rc == 0, "kill failed: {}", io::Error::last_os_error());
    }

    /// Stops every process of the server (SIGSTOP to its group) and waits
    /// until its leader is stopped: from then on, what clients send piles
    /// up in its kernel's queues, and its next read finds all of it.
    pub fn freeze(&self) {
        self.signal(libc::SIGSTOP);
        let pid = self.pid();
        self.eventually(IO_TIMEOUT, "the server stops on SIGSTOP", |_| {
            process_state(pid) == Some('T')
        });
    }

    /// Lets a server stopped by [`Server::freeze`] go on.
    pub fn thaw(&self) {
        self.signal(libc::SIGCONT);
    }

    fn was_sent(&self, signal: libc::c_int) -> bool {
        self.signals_sent.load(Ordering::Relaxed) & (1 << (signal as u64 & 63)) != 0
    }

    /// How the server ended, if it has, without reaping it: the zombie
    /// keeps its pid and process group id from being reused until `drop`,
    /// which signals the group before it reaps the leader.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = peek_exit(self.pid());
        }
        self.exit
    }

    fn wait_exit_quietly(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exit_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits for the server to exit on its own, failing after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        self.wait_exit_quietly(timeout).unwrap_or_else(|| {
            panic!(
                "the server was still running {} after being asked to stop",
                secs(timeout)
            )
        })
    }

    /// Sends `signal` and asserts a clean exit (status 0) within `timeout`.
    pub fn assert_stops_cleanly_on(&mut self, signal: libc::c_int, timeout: Duration) {
        let name = signal_name(signal);
        self.assert_running();
        self.signal(signal);
        let Some(status) = self.wait_exit_quietly(timeout) else {
            panic!(
                "the server was still running {} after {name}: it must stop promptly, \
                 wherever it is blocked",
                secs(timeout)
            );
        };
        if status.signal() == Some(signal) {
            panic!("{name} killed the server instead of stopping it with exit status 0: it does not handle {name}");
        }
        assert!(
            status.success(),
            "after {name} the server {} instead of exiting with status 0{}",
            describe_exit(status),
            self.last_words()
        );
    }

    /// Resident memory of the server process, in bytes.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .unwrap_or_else(|e| panic!("the server's /proc/PID/status: {e} (did it exit?)"));
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status");
        kib * 1024
    }

    /// CPU time (user + system) the server has used so far.
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
            .unwrap_or_else(|e| panic!("the server's /proc/PID/stat: {e} (did it exit?)"));
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

    /// How long the server's threads have been running or ready to run (on
    /// a run queue, waiting for a CPU) so far, from /proc/PID/task/*/schedstat:
    /// a server that spins is always one or the other, however loaded the
    /// machine, where its CPU time alone shrinks with the share it gets.
    /// Without schedstat, its CPU time.
    pub fn busy_time(&self) -> Duration {
        let tasks = format!("/proc/{}/task", self.pid());
        let Ok(tasks) = std::fs::read_dir(tasks) else {
            return self.cpu_time();
        };
        let mut nanos: u64 = 0;
        for task in tasks.flatten() {
            let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) else {
                return self.cpu_time();
            };
            let mut fields = stat
                .split_whitespace()
                .map(|f| f.parse::<u64>().unwrap_or(0));
            nanos += fields.next().unwrap_or(0) + fields.next().unwrap_or(0);
        }
        Duration::from_nanos(nanos)
    }

    /// Number of file descriptors the server has open.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap_or_else(|e| panic!("the server's /proc/PID/fd: {e} (did it exit?)"))
            .count()
    }

    /// Lowers the server's limit on open files so that, measured now, at
    /// rest, exactly `room` descriptors are left: so many clients and no
    /// more, whatever the server holds (a loop per core holds three
    /// descriptors each) and whatever it inherited. The limit caps
    /// descriptor *numbers*, and a new one takes the lowest free: the room
    /// is the free numbers below it.
    pub fn limit_descriptors(&self, room: usize) {
        let open: std::collections::BTreeSet<usize> =
            std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
                .unwrap_or_else(|e| panic!("the server's /proc/PID/fd: {e} (did it exit?)"))
                .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
                .collect();
        let mut limit = 0;
        let mut free = 0;
        while free < room {
            if !open.contains(&limit) {
                free += 1;
            }
            limit += 1;
        }
        let rlimit = libc::rlimit {
            rlim_cur: limit as libc::rlim_t,
            rlim_max: limit as libc::rlim_t,
        };
        // SAFETY: prlimit reads the struct we pass for the duration of the
        // call, and writes nothing (the last argument is null).
        let rc = unsafe {
            libc::prlimit(
                self.pid(),
                libc::RLIMIT_NOFILE,
                &rlimit,
                std::ptr::null_mut(),
            )
        };
        assert_eq!(rc, 0, "prlimit: {}", io::Error::last_os_error());
    }

    /// A client that fills both directions of its connection and then
    /// reads nothing: no stop can finish it before a grace period ends.
    pub fn connect_stuck(&self) -> Client {
        let mut client = self.connect();
        client.stream.set_nonblocking(true).unwrap();
        let chunk: Vec<u8> = (0..64).flat_map(|_| frame(&[7; 4000])).collect();
        let mut sent = 0;
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            // Resume where a short write stopped, so the stream stays framed.
            match client.stream.write(&chunk[sent % chunk.len()..]) {
                Ok(n) => sent += n,
                // A send blocks as soon as the kernel's queues are full, even
                // before the server accepts (a busy machine): stuck means the
                // server took the connection and its replies wait for us.
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if client.unread() > 0 {
                        return client;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "the server answered no frame of a client that sent {sent} bytes"
                    );
                    thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("a client that sends without reading: {e}"),
            }
        }
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
                "still not true after {}: {what}",
                secs(timeout)
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// What the server printed on stdout, its `listening on` line included.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned()
    }

    /// The last line the server wrote to stderr, as the end of a sentence.
    fn last_words(&self) -> String {
        let stderr = self.stderr();
        match stderr.lines().rev().find(|l| !l.trim().is_empty()) {
            Some(line) => {
                let line: String = line.trim().chars().take(200).collect();
                format!("; the last line on its stderr: `{line}`")
            }
            None => String::new(),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Before the kill, or our own SIGKILL would hide how it ended. A
        // failing case may have met a server that is dying (its
        // connections reset): give it a moment to be seen dead.
        let ended = match self.exit_status() {
            None if thread::panicking() => self.wait_exit_quietly(Duration::from_millis(100)),
            ended => ended,
        };
        // SAFETY: kill(2) has no memory-safety preconditions; the leader of
        // the group is not reaped yet (that is the wait below), so the group
        // id is still our child's.
        unsafe { libc::kill(-self.pid(), libc::SIGKILL) };
        // Before the wait, which frees the pid for reuse.
        unregister_live(self.pid());
        let _ = self.child.wait();
        if let Some(status) = ended {
            if let Some(death) = self.death(status) {
                notes::record_death(death);
            }
        }
        if thread::panicking() {
            notes::record_stderr(&self.stderr());
        }
    }
}

impl Server {
    /// How the server ended, if that is news: a signal, or a failure status.
    fn death(&self, status: ExitStatus) -> Option<Death> {
        if let Some(signal) = status.signal() {
            return Some(Death::Signal {
                signal,
                sent_by_us: self.was_sent(signal),
                broken_stderr: self.broken_stderr,
            });
        }
        match status.code() {
            // After a stop signal, how it exited is the case's own business.
            Some(_) if self.signals_sent.load(Ordering::Relaxed) != 0 => None,
            Some(code) => Some(Death::Status {
                code,
                last_words: self.last_words(),
            }),
            None => None,
        }
    }
}

/// How process `pid` ended, if it has, leaving it to be reaped later
/// (waitid with WNOWAIT).
fn peek_exit(pid: i32) -> Option<ExitStatus> {
    // SAFETY: waitid writes only to the siginfo_t we pass; zeroed is a
    // valid siginfo_t, and si_pid stays 0 if no child has changed state.
    let info = unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let rc = libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        );
        if rc != 0 || info.si_pid() == 0 {
            return None;
        }
        info
    };
    // SAFETY: for a child that exited, waitid filled si_status.
    let value = unsafe { info.si_status() };
    // The raw wait status, as waitpid(2) would have returned it.
    let raw = match info.si_code {
        libc::CLD_EXITED => (value & 0xff) << 8,
        libc::CLD_DUMPED => value | 0x80,
        _ => value,
    };
    Some(ExitStatus::from_raw(raw))
}

/// Ends the running case as "not applicable": what it checks cannot
/// happen with this server (it does not use the mechanism the case works
/// through), which is not a pass. `why` finishes "not applicable: ...".
pub fn not_applicable(why: impl Into<String>) -> ! {
    std::panic::panic_any(crate::runner::NotApplicable(why.into()))
}

/// "exited with status 1", "died of signal 11 (SIGSEGV)".
pub fn describe_exit(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("died of {}", describe_signal(signal)),
        _ => format!("ended ({status})"),
    }
}

/// "signal 13 (SIGPIPE)".
pub fn describe_signal(signal: libc::c_int) -> String {
    match signal_name(signal) {
        name if name.starts_with("SIG") => format!("signal {signal} ({name})"),
        _ => format!("signal {signal}"),
    }
}

pub fn signal_name(signal: libc::c_int) -> String {
    match signal {
        libc::SIGINT => "SIGINT".into(),
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGKILL => "SIGKILL".into(),
        libc::SIGSEGV => "SIGSEGV".into(),
        libc::SIGABRT => "SIGABRT".into(),
        libc::SIGPIPE => "SIGPIPE".into(),
        libc::SIGBUS => "SIGBUS".into(),
        libc::SIGQUIT => "SIGQUIT".into(),
        libc::SIGHUP => "SIGHUP".into(),
        libc::SIGFPE => "SIGFPE".into(),
        libc::SIGILL => "SIGILL".into(),
        libc::SIGUSR1 => "SIGUSR1".into(),
        libc::SIGUSR2 => "SIGUSR2".into(),
        libc::SIGALRM => "SIGALRM".into(),
        libc::SIGXFSZ => "SIGXFSZ".into(),
        libc::SIGXCPU => "SIGXCPU".into(),
        libc::SIGSYS => "SIGSYS".into(),
        other => format!("signal {other}"),
    }
}

/// A duration the way a person says it: "10 s", "500 ms", "1.5 s".
pub fn secs(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
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

/// A client connection with every wait bounded by [`IO_TIMEOUT`].
///
/// Each operation comes in two forms: `try_x` returns why it failed as a
/// sentence, so that a case can say what that means; `x` panics with it.
pub struct Client {
    pub stream: TcpStream,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        Client::try_connect(addr).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn try_connect(addr: SocketAddr) -> Result<Client, String> {
        Client::try_connect_with(addr, |_| {})
    }

    /// Connects with socket options that must be set before `connect`
    /// (`SO_RCVBUF`, `TCP_MAXSEG`), which `setup` sets on the new socket.
    pub fn connect_with(addr: SocketAddr, setup: impl FnOnce(RawFd)) -> Client {
        Client::try_connect_with(addr, setup).unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_connect_with(addr: SocketAddr, setup: impl FnOnce(RawFd)) -> Result<Client, String> {
        let connected = if let SocketAddr::V4(v4) = addr {
            connect_v4(v4, setup)
        } else {
            TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        };
        let stream = connected.map_err(|e| match e.kind() {
            ErrorKind::ConnectionRefused => format!(
                "a client could not connect: connection refused (is the server still listening on {addr}?)"
            ),
            ErrorKind::WouldBlock | ErrorKind::TimedOut => format!(
                "a client could not connect within {}: the server's listen backlog is full and it is not accepting",
                secs(IO_TIMEOUT)
            ),
            _ => format!("a client could not connect to {addr}: {e}"),
        })?;
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Ok(Client { stream })
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.try_send(bytes).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn try_send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.stream.write_all(bytes).map_err(|e| match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => format!(
                "sending {} bytes did not finish within {}: the server stopped reading",
                bytes.len(),
                secs(self.timeout())
            ),
            ErrorKind::ConnectionReset | ErrorKind::BrokenPipe => {
                "sending failed: the server had closed the connection".to_string()
            }
            _ => format!("sending failed: {e}"),
        })
    }

    pub fn send_frame(&mut self, payload: &[u8]) {
        self.send(&frame(payload));
    }

    fn timeout(&self) -> Duration {
        self.stream
            .read_timeout()
            .ok()
            .flatten()
            .unwrap_or(IO_TIMEOUT)
    }

    /// Reads exactly `n` bytes.
    pub fn recv_exact(&mut self, n: usize) -> Vec<u8> {
        self.try_recv_exact(n).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn try_recv_exact(&mut self, n: usize) -> Result<Vec<u8>, String> {
        let mut buf = vec![0; n];
        let mut got = 0;
        while got < n {
            match self.stream.read(&mut buf[got..]) {
                Ok(0) => {
                    return Err(if got == 0 {
                        "the server closed the connection instead of replying".to_string()
                    } else {
                        format!("the server closed the connection after {got} of the {n} bytes expected")
                    })
                }
                Ok(k) => got += k,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(read_failure(&e, got, n, self.timeout())),
            }
        }
        Ok(buf)
    }

    /// Reads one frame, checking its header, and returns the payload.
    pub fn recv_frame(&mut self) -> Vec<u8> {
        self.try_recv_frame().unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn try_recv_frame(&mut self) -> Result<Vec<u8>, String> {
        let header = self.try_recv_exact(HEADER_LEN)?;
        let len = u32::from_le_bytes(header.try_into().unwrap()) as usize;
        if len > MAX_MSG {
            return Err(format!(
                "the server sent a header announcing {len} bytes, more than the {MAX_MSG} a frame may hold"
            ));
        }
        self.try_recv_exact(len)
    }

    /// Sends a frame and asserts the reply is the identical frame.
    pub fn assert_echo(&mut self, payload: &[u8]) {
        self.try_echo(payload).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn try_echo(&mut self, payload: &[u8]) -> Result<(), String> {
        let request = frame(payload);
        self.try_send(&request)?;
        let reply = self.try_recv_exact(request.len())?;
        match difference(&reply, &request) {
            None => Ok(()),
            Some(at) => Err(format!(
                "the reply to a {}-byte frame differs from it at byte {at}",
                request.len()
            )),
        }
    }

    /// Reads until the server closes the connection (EOF or reset), failing
    /// if it sends data or keeps it open longer than [`IO_TIMEOUT`].
    pub fn assert_closed_by_server(&mut self) {
        self.try_closed_by_server()
            .unwrap_or_else(|e| panic!("expected the server to close the connection, but {e}"))
    }

    /// Why the connection is not closed, as the end of "expected it closed, but ...".
    pub fn try_closed_by_server(&mut self) -> Result<(), String> {
        let mut buf = [0u8; 64];
        match self.stream.read(&mut buf) {
            Ok(0) => Ok(()),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => Ok(()),
            Ok(n) => Err(format!("it sent {n} more bytes")),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Err(
                format!("it kept the connection open for {}", secs(self.timeout())),
            ),
            Err(e) => Err(format!("reading failed: {e}")),
        }
    }

    /// Like [`Client::try_closed_by_server`], but only a clean close (FIN)
    /// will do: a reset, once the client has read everything, says the
    /// server closed with input unread or threw its send queue away.
    pub fn try_eof_from_server(&mut self) -> Result<(), String> {
        let mut buf = [0u8; 64];
        match self.stream.read(&mut buf) {
            Ok(0) => Ok(()),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                Err("it reset the connection instead of closing it with a FIN".into())
            }
            Ok(n) => Err(format!("it sent {n} more bytes")),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Err(
                format!("it kept the connection open for {}", secs(self.timeout())),
            ),
            Err(e) => Err(format!("reading failed: {e}")),
        }
    }

    /// Bytes received and not yet read (`FIONREAD`).
    pub fn unread(&self) -> usize {
        common::net::unread_bytes(&self.stream).expect("ioctl(FIONREAD)")
    }

    /// Bytes this client has sent that the server's kernel has not yet
    /// acknowledged (`SIOCOUTQ`): once 0, the server's kernel holds them all.
    pub fn unacknowledged(&self) -> usize {
        common::net::unacknowledged_bytes(&self.stream).expect("ioctl(SIOCOUTQ)")
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

/// A TCP connection to `addr` from a socket that `setup` prepared, bounded
/// by [`IO_TIMEOUT`] (on Linux, `SO_SNDTIMEO` bounds `connect` too).
fn connect_v4(addr: std::net::SocketAddrV4, setup: impl FnOnce(RawFd)) -> io::Result<TcpStream> {
    // SAFETY: socket(2) takes no pointers; a non-negative result is a new
    // descriptor that the TcpStream takes ownership of, once, right here.
    let stream = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        TcpStream::from_raw_fd(fd)
    };
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    setup(stream.as_raw_fd());
    let sockaddr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(addr.ip().octets()),
        },
        sin_zero: [0; 8],
    };
    loop {
        // SAFETY: the pointer and length describe `sockaddr`, alive for the call.
        let rc = unsafe {
            libc::connect(
                stream.as_raw_fd(),
                (&sockaddr as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return Ok(stream);
        }
        let e = io::Error::last_os_error();
        if e.kind() != ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Sets an integer socket option, panicking if the kernel refuses it.
pub fn set_int_option(fd: RawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) {
    // SAFETY: the pointer and length describe `value`, alive for the call.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert!(
        rc == 0,
        "setsockopt({level}, {name}, {value}): {}",
        io::Error::last_os_error()
    );
}

/// Why reading `want` bytes stopped after `got`, in words.
pub fn read_failure(e: &io::Error, got: usize, want: usize, timeout: Duration) -> String {
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut if got == 0 => {
            format!("no reply within {}", secs(timeout))
        }
        ErrorKind::WouldBlock | ErrorKind::TimedOut => format!(
            "only {got} of the {want} bytes expected came, then nothing for {}",
            secs(timeout)
        ),
        ErrorKind::ConnectionReset if got == 0 => {
            "the server reset the connection instead of replying".to_string()
        }
        ErrorKind::ConnectionReset => {
            format!("the server reset the connection after {got} of the {want} bytes expected")
        }
        _ => format!("reading the reply failed after {got} of {want} bytes: {e}"),
    }
}

/// Where two byte strings first differ, if they do.
pub fn difference(a: &[u8], b: &[u8]) -> Option<usize> {
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(at) => Some(at),
        None if a.len() != b.len() => Some(a.len().min(b.len())),
        None => None,
    }
}

/// Joins a helper thread, passing its panic (and so its message) on.
pub fn join<T>(handle: thread::JoinHandle<T>) -> T {
    handle
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
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

/// The state letter of /proc/PID/stat (`T`: stopped by a signal).
fn process_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name, in parentheses, which may hold anything.
    stat.rsplit_once(") ")?.1.chars().next()
}
