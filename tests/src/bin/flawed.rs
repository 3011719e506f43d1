//! `flawed`: an echo server with defects to order, for the suite's own
//! test that every case catches something (tests/tests/every_case_fails.rs).
//!
//! Without defects it keeps the whole contract and passes every case of
//! every level: one thread, level-triggered epoll, buffers that exist only
//! while a connection is busy, a graceful stop. `FLAWED=a,b` in its
//! environment switches defects on, each one a mistake real servers make
//! (see [`Defect`]); `FLAWED=hello` makes it speak chapter 3's protocol
//! instead (one read, "world", close).
//!
//! ```text
//! conform --level scale -- target/debug/flawed
//! conform --only one_frame -- env FLAWED=flip-byte target/debug/flawed
//! ```

use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use common::args::{self, Args};
use common::frame::{HEADER_LEN, MAX_MSG};
use common::{debug, info, net};

macro_rules! defects {
    ($($variant:ident = $name:literal: $what:literal,)*) => {
        /// The defects, by the name `FLAWED` gives them.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        enum Defect { $($variant,)* }

        impl Defect {
            const ALL: &[(Defect, &str, &str)] = &[$((Defect::$variant, $name, $what),)*];
        }
    };
}

defects! {
    Hello = "hello": "speak chapter 3's protocol: one read, \"world\", close",
    HelloWrongReply = "hello-wrong-reply": "answer \"word\"",
    HelloServeOnce = "hello-serve-once": "exit after the first client",
    HelloCrashOnSilence = "hello-crash-on-silence": "exit(1) when a client says nothing",
    NoSigint = "no-sigint": "leave SIGINT to its default action",
    NoSigterm = "no-sigterm": "leave SIGTERM to its default action",
    SigpipeDefault = "sigpipe-default": "restore SIGPIPE's default action: a write to a closed pipe or connection kills",
    NoHelp = "no-help": "--help is an unknown option",
    HelpWithoutGrace = "help-without-grace": "no --grace-ms option",
    UserErrorPanics = "user-error-panics": "a bad command line panics",
    IgnoreHostName = "ignore-host-name": "--addr with a host name listens on 127.0.0.1:0 instead",
    KeepFdLimit = "keep-fd-limit": "leave the soft limit on open files as it is",
    SmallBacklog = "small-backlog": "listen with a backlog of 128",
    FlipByte = "flip-byte": "flip the first payload byte of every reply",
    CloseOnEmpty = "close-on-empty": "close a connection that sends an empty frame",
    Max4095 = "max-4095": "refuse frames of 4096 bytes, as if too long",
    SwapPairs = "swap-pairs": "answer two frames read together in the wrong order",
    ShortReadCloses = "short-read-closes": "close a connection whose read ends in the middle of a frame",
    TooLongExits = "too-long-exits": "exit(1) on a frame that is too long",
    ExitOnEofMidFrame = "exit-on-eof-mid-frame": "exit(1) when a client leaves in the middle of a frame",
    LeakFd = "leak-fd": "never close a finished connection's descriptor",
    ResetOnEof = "reset-on-eof": "at a client's end of file, close at once with a reset",
    EmfileSpin = "emfile-spin": "out of descriptors, leave the connection in the backlog (and spin)",
    WaitForPartialFrames = "wait-for-partial-frames": "at a stop, wait for clients in the middle of a frame",
    IgnoreShortWrites = "ignore-short-writes": "drop what a write did not take",
    StrandFrames = "strand-frames": "after a write meets EAGAIN, answer the frames left in the buffer only when more input comes",
    Nagle = "nagle": "no TCP_NODELAY, and a write per reply",
    BadLengthDropsReplies = "bad-length-drops-replies": "on a bad length, close at once, replies pending or not",
    OobInline = "oob-inline": "take urgent data into the stream (SO_OOBINLINE)",
    AcceptErrorExits = "accept-error-exits": "exit(1) when accept fails",
    AcceptGivesUp = "accept-gives-up": "watch the listener edge-triggered, and stop accepting when an accept that turns a client away fails",
    NobufsSpin = "nobufs-spin": "when the kernel is short of memory (ENOBUFS), try to accept again at once",
    SpareTurnsAway = "spare-turns-away": "out of descriptors, turn away the client accepted with the spare even when that leaves room",
    VagueStopLog = "vague-stop-log": "after a second signal, log \"grace period over\"",
    ConnectionErrorExits = "connection-error-exits": "exit(1) when a read or write on a connection fails",
    BlockingRead = "blocking-read": "wait for the rest of a frame, blocking everyone",
    Max100Connections = "max-100-connections": "close connections beyond the first 100",
    UnboundedOutput = "unbounded-output": "keep reading from a client that does not read its replies",
    NoTurns = "no-turns": "serve a connection until it has been quiet for 100 ms, 1 KiB at a time, however long that takes and however many replies wait",
    StopResets = "stop-resets": "at a stop, close every connection with a reset",
    NoGraceDeadline = "no-grace-deadline": "at a stop, wait for every client, however long",
    WaitOutGrace = "wait-out-grace": "at a stop, wait out the grace period even when no client is left",
    IgnoreSecondSignal = "ignore-second-signal": "a second signal does not end the grace period",
    RequestLimit = "request-limit": "close a connection after 5,000 frames",
    BuffersPerConnection = "buffers-per-connection": "keep 8 KiB of buffers for every connection, busy or not",
    NoIdleTimeout = "no-idle-timeout": "take --idle-timeout-ms, and close no idle connection",
    MidFrameIsBusy = "mid-frame-is-busy": "never count a connection in the middle of a frame as idle",
    BytesAreActivity = "bytes-are-activity": "count every byte received as activity",
    PendingOutputIsActivity = "pending-output-is-activity": "never count a connection with replies waiting as idle",
    TimeoutIgnoresActivity = "timeout-ignores-activity": "close a connection the timeout after it opened, active or not",
    ReapOnePerCheck = "reap-one-per-check": "close at most one idle connection every 10 ms",
    ZeroTimeoutAccepted = "zero-timeout-accepted": "take --idle-timeout-ms 0 to mean no timeout",
}

/// The defects switched on.
struct Flaws(Vec<Defect>);

impl Flaws {
    fn from_env() -> Result<Flaws, String> {
        let text = std::env::var("FLAWED").unwrap_or_default();
        let mut on = Vec::new();
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match Defect::ALL.iter().find(|(_, n, _)| *n == name) {
                Some((defect, _, _)) => on.push(*defect),
                None => {
                    let names: Vec<&str> = Defect::ALL.iter().map(|(_, n, _)| *n).collect();
                    return Err(format!(
                        "FLAWED: no defect {name:?}; the defects are {}",
                        names.join(", ")
                    ));
                }
            }
        }
        Ok(Flaws(on))
    }

    fn has(&self, defect: Defect) -> bool {
        self.0.contains(&defect)
    }
}

/// What the command line asks for.
struct Config {
    addr: SocketAddr,
    grace: Duration,
    /// `None`: connections may stay idle for ever.
    idle_timeout: Option<Duration>,
}

fn main() -> ExitCode {
    let flaws = match Flaws::from_env() {
        Ok(flaws) => flaws,
        Err(e) => {
            let _ = writeln!(io::stderr(), "flawed: {e}");
            return ExitCode::from(2);
        }
    };
    if flaws.has(Defect::SigpipeDefault) {
        // SAFETY: signal(2) only changes this process's disposition.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    if flaws.has(Defect::UserErrorPanics) {
        let config = parse_args(&flaws).unwrap();
        serve(&flaws, config).unwrap();
        return ExitCode::SUCCESS;
    }
    args::run(|| {
        let config = parse_args(&flaws)?;
        serve(&flaws, config).map_err(Into::into)
    })
}

fn parse_args(flaws: &Flaws) -> anyhow::Result<Config> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if flaws.has(Defect::NoHelp) {
        if let Some(help) = argv.iter().find(|a| *a == "-h" || *a == "--help") {
            anyhow::bail!("unknown option {help}");
        }
    }
    let mut args = Args::parse("flawed", "an echo server with defects to order", argv);
    let grace_ms = if flaws.has(Defect::HelpWithoutGrace) || flaws.has(Defect::Hello) {
        1000
    } else {
        args.option(
            "grace-ms",
            "MS",
            "at a stop, how long to wait for clients",
            1000u64,
        )
    };
    let idle_ms = if flaws.has(Defect::Hello) {
        0
    } else {
        args.option(
            "idle-timeout-ms",
            "MS",
            "close connections idle this long",
            60_000u64,
        )
    };
    let addr_text = addr_argument();
    let mut addr = args.finish()?;
    if flaws.has(Defect::IgnoreHostName) && addr_text.is_some_and(|a| !is_ip_literal(&a)) {
        addr = "127.0.0.1:0".parse().unwrap();
    }
    if idle_ms == 0 && !flaws.has(Defect::Hello) && !flaws.has(Defect::ZeroTimeoutAccepted) {
        anyhow::bail!("--idle-timeout-ms must be at least 1");
    }
    Ok(Config {
        addr,
        grace: Duration::from_millis(grace_ms),
        idle_timeout: (idle_ms > 0 && !flaws.has(Defect::NoIdleTimeout))
            .then(|| Duration::from_millis(idle_ms)),
    })
}

/// The last `--addr` value as typed.
fn addr_argument() -> Option<String> {
    let argv: Vec<String> = std::env::args().collect();
    let mut found = None;
    for (i, arg) in argv.iter().enumerate() {
        if arg == "--addr" {
            found = argv.get(i + 1).cloned();
        } else if let Some(value) = arg.strip_prefix("--addr=") {
            found = Some(value.to_string());
        }
    }
    found
}

fn is_ip_literal(addr: &str) -> bool {
    addr.rsplit_once(':')
        .is_some_and(|(host, _)| host.trim_matches(['[', ']']).parse::<IpAddr>().is_ok())
}

fn serve(flaws: &Flaws, config: Config) -> io::Result<()> {
    if !flaws.has(Defect::KeepFdLimit) {
        net::raise_fd_limit()?;
    }
    let listener = if flaws.has(Defect::SmallBacklog) {
        // std listens with a backlog of 128.
        TcpListener::bind(config.addr).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot listen on {}: {e}", config.addr))
        })?
    } else {
        net::listen(config.addr)?
    };
    // Everything is ready before the announcement: a signal may follow it
    // at once, and a test counts the descriptors of a server at rest.
    let signals = stop_signals(flaws)?;
    if flaws.has(Defect::Hello) {
        net::announce(&listener)?;
        hello(flaws, &listener, &signals)
    } else {
        let server = Server::new(flaws, config, listener, signals)?;
        net::announce(server.listener.as_ref().unwrap())?;
        server.run()
    }
}

/// A signalfd for the stop signals the server handles (all but those a
/// defect leaves to their default action, which is to die).
fn stop_signals(flaws: &Flaws) -> io::Result<OwnedFd> {
    // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it,
    // pthread_sigmask and signalfd read it; a non-negative result of
    // signalfd is a new descriptor that we own.
    unsafe {
        let mut mask: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut mask);
        if !flaws.has(Defect::NoSigint) {
            libc::sigaddset(&mut mask, libc::SIGINT);
        }
        if !flaws.has(Defect::NoSigterm) {
            libc::sigaddset(&mut mask, libc::SIGTERM);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &mask, std::ptr::null_mut());
        let fd = libc::signalfd(-1, &mask, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// Reads every pending signal; true if there was one.
fn take_signals(signals: &OwnedFd) -> bool {
    let mut info = [0u8; 128]; // one signalfd_siginfo
    let mut any = false;
    // SAFETY: read(2) writes at most `info.len()` bytes into `info`.
    while unsafe { libc::read(signals.as_raw_fd(), info.as_mut_ptr().cast(), info.len()) } > 0 {
        any = true;
    }
    any
}

/// Waits until one of `fds` is readable, or `timeout` passes.
fn wait_readable(fds: &[RawFd], timeout: Option<Duration>) -> Vec<bool> {
    let mut polled: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32);
    // SAFETY: the pointer and count describe `polled`, alive for the call.
    unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, ms) };
    polled.iter().map(|p| p.revents != 0).collect()
}

// --- chapter 3's protocol --------------------------------------------------

fn hello(flaws: &Flaws, listener: &TcpListener, signals: &OwnedFd) -> io::Result<()> {
    loop {
        let ready = wait_readable(&[listener.as_raw_fd(), signals.as_raw_fd()], None);
        if ready[1] && take_signals(signals) {
            return Ok(());
        }
        if !ready[0] {
            continue;
        }
        let Ok((mut client, _)) = listener.accept() else {
            continue;
        };
        client.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut said = [0u8; 1024];
        let n = client.read(&mut said).unwrap_or(0);
        if n == 0 && flaws.has(Defect::HelloCrashOnSilence) {
            std::process::exit(1);
        }
        info!("client says: {}", String::from_utf8_lossy(&said[..n]));
        let reply: &[u8] = if flaws.has(Defect::HelloWrongReply) {
            b"word"
        } else {
            b"world"
        };
        let _ = client.write_all(reply);
        drop(client);
        if flaws.has(Defect::HelloServeOnce) {
            return Ok(());
        }
    }
}

// --- the echo server ---------------------------------------------------------

/// Replies a connection may have waiting before it is read no more.
const MAX_OUTPUT: usize = 256 << 10;
/// Reads per connection per turn, so that no client has the loop to itself.
const READS_PER_TURN: usize = 16;
/// no-turns: how long a connection must be quiet before the loop moves on.
const GREEDY_QUIET: Duration = Duration::from_millis(100);

const LISTENER: u64 = u64::MAX;
const SIGNALS: u64 = u64::MAX - 1;

struct Conn {
    stream: TcpStream,
    input: Vec<u8>,
    output: Vec<u8>,
    /// The client has sent everything (end of file).
    peer_done: bool,
    /// No more requests will be read: a bad frame, or a stop.
    done_reading: bool,
    /// Frames whose replies wait for more input (the strand-frames defect).
    stranded: bool,
    frames: u64,
    /// When a reply last went out (or the connection opened).
    last_active: Instant,
}

struct Server<'a> {
    flaws: &'a Flaws,
    config: Config,
    listener: Option<TcpListener>,
    signals: OwnedFd,
    epoll: OwnedFd,
    conns: HashMap<u64, Conn>,
    next_token: u64,
    /// Kept open to be given up when out of descriptors, so that a client
    /// can be accepted and closed rather than left in the backlog.
    spare: Option<OwnedFd>,
    /// When the grace period ends, once stopping.
    deadline: Option<Instant>,
    /// When to look for idle connections next.
    next_idle_check: Instant,
    /// When to try to accept again, after the kernel was short of memory.
    accept_again: Option<Instant>,
}

/// How long to wait before accepting again when the kernel is short of memory.
const ACCEPT_PAUSE: Duration = Duration::from_millis(10);

fn spare_fd() -> Option<OwnedFd> {
    std::fs::File::open("/dev/null").ok().map(OwnedFd::from)
}

impl<'a> Server<'a> {
    fn new(
        flaws: &'a Flaws,
        config: Config,
        listener: TcpListener,
        signals: OwnedFd,
    ) -> io::Result<Server<'a>> {
        // SAFETY: epoll_create1 takes no pointers; a non-negative result
        // is a new descriptor that we own.
        let epoll = unsafe {
            let fd = libc::epoll_create1(libc::EPOLL_CLOEXEC);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            OwnedFd::from_raw_fd(fd)
        };
        listener.set_nonblocking(true)?;
        let server = Server {
            flaws,
            config,
            listener: None,
            signals,
            epoll,
            conns: HashMap::new(),
            next_token: 0,
            spare: spare_fd(),
            deadline: None,
            next_idle_check: Instant::now(),
            accept_again: None,
        };
        server.ctl(
            libc::EPOLL_CTL_ADD,
            listener.as_raw_fd(),
            LISTENER,
            server.listener_events(),
        )?;
        server.ctl(
            libc::EPOLL_CTL_ADD,
            server.signals.as_raw_fd(),
            SIGNALS,
            libc::EPOLLIN,
        )?;
        Ok(Server {
            listener: Some(listener),
            ..server
        })
    }

    fn has(&self, defect: Defect) -> bool {
        self.flaws.has(defect)
    }

    fn listener_events(&self) -> libc::c_int {
        match self.has(Defect::AcceptGivesUp) {
            true => libc::EPOLLIN | libc::EPOLLET,
            false => libc::EPOLLIN,
        }
    }

    /// Stops watching the listener for [`ACCEPT_PAUSE`]: it stays readable
    /// meanwhile, and the loop would come straight back.
    fn pause_accepting(&mut self) {
        if let Some(listener) = &self.listener {
            let fd = listener.as_raw_fd();
            let _ = self.ctl(libc::EPOLL_CTL_MOD, fd, LISTENER, 0);
            self.accept_again = Some(Instant::now() + ACCEPT_PAUSE);
        }
    }

    /// Watches the listener again once the pause is over, and accepts.
    fn resume_accepting(&mut self) {
        if self.accept_again.is_some_and(|at| Instant::now() >= at) {
            self.accept_again = None;
            if let Some(listener) = &self.listener {
                let fd = listener.as_raw_fd();
                let _ = self.ctl(libc::EPOLL_CTL_MOD, fd, LISTENER, self.listener_events());
                self.accept();
            }
        }
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, token: u64, events: libc::c_int) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: events as u32,
            u64: token,
        };
        // SAFETY: `event` is a valid epoll_event for the call's duration.
        if unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd, &mut event) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn run(mut self) -> io::Result<()> {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
        loop {
            if let Some(deadline) = self.deadline {
                let waiting = self.has(Defect::NoGraceDeadline)
                    || (self.has(Defect::WaitForPartialFrames)
                        && self.conns.values().any(|c| !c.input.is_empty()));
                if Instant::now() >= deadline && !waiting {
                    self.log_unfinished();
                    return Ok(());
                }
                if self.conns.is_empty() && !self.has(Defect::WaitOutGrace) {
                    return Ok(());
                }
            }
            let mut wake = self.deadline;
            if self.config.idle_timeout.is_some() && !self.conns.is_empty() {
                wake = Some(wake.map_or(self.next_idle_check, |w| w.min(self.next_idle_check)));
            }
            if let Some(at) = self.accept_again {
                wake = Some(wake.map_or(at, |w| w.min(at)));
            }
            let timeout = match wake {
                Some(wake) => wake
                    .saturating_duration_since(Instant::now())
                    .as_millis()
                    .clamp(1, 100) as i32,
                None => -1,
            };
            // SAFETY: the pointer and length describe `events`, which
            // epoll_wait fills with at most that many entries.
            let n = unsafe {
                libc::epoll_wait(
                    self.epoll.as_raw_fd(),
                    events.as_mut_ptr(),
                    events.len() as i32,
                    timeout,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            self.close_idle();
            self.resume_accepting();
            for event in &events[..n as usize] {
                match event.u64 {
                    LISTENER => self.accept(),
                    SIGNALS => {
                        if take_signals(&self.signals) && self.stop() {
                            return Ok(());
                        }
                    }
                    token => self.connection_io(token, event.events),
                }
            }
        }
    }

    /// The first signal starts the graceful stop; true if the server must
    /// exit now (a second signal).
    fn stop(&mut self) -> bool {
        if self.deadline.is_some() {
            if self.has(Defect::IgnoreSecondSignal) {
                return false;
            }
            if self.has(Defect::VagueStopLog) {
                info!(
                    "grace period over: closing {} connections",
                    self.conns.len()
                );
            } else {
                self.log_unfinished();
            }
            return true;
        }
        info!("stopping: {} connections to finish", self.conns.len());
        self.deadline = Some(Instant::now() + self.config.grace);
        self.listener = None;
        let tokens: Vec<u64> = self.conns.keys().copied().collect();
        for token in tokens {
            if self.has(Defect::StopResets) {
                let conn = self.conns.remove(&token).unwrap();
                reset(conn.stream);
                continue;
            }
            let conn = self.conns.get_mut(&token).unwrap();
            let mid_frame = !conn.input.is_empty();
            if !(mid_frame && self.flaws.has(Defect::WaitForPartialFrames)) {
                conn.done_reading = true;
                conn.input = Vec::new();
            }
            self.progress(token);
        }
        false
    }

    /// Says how many connections a stop cut short, in the same words
    /// whichever way it ended.
    fn log_unfinished(&self) {
        match self.conns.len() {
            0 => {}
            1 => info!("closing 1 connection that did not finish"),
            n => info!("closing {n} connections that did not finish"),
        }
    }

    /// Closes the connections idle for the timeout, every 10 ms at most
    /// (every tenth of the timeout, if that is less).
    fn close_idle(&mut self) {
        let Some(timeout) = self.config.idle_timeout else {
            return;
        };
        let now = Instant::now();
        if now < self.next_idle_check {
            return;
        }
        self.next_idle_check = now + (timeout / 10).min(Duration::from_millis(10));
        let flaws = self.flaws;
        let idle: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| now - c.last_active >= timeout)
            // The defects: some idle connections never count as idle.
            .filter(|(_, c)| !flaws.has(Defect::MidFrameIsBusy) || c.input.is_empty())
            .filter(|(_, c)| !flaws.has(Defect::PendingOutputIsActivity) || c.output.is_empty())
            .map(|(&token, _)| token)
            .collect();
        let limit = if flaws.has(Defect::ReapOnePerCheck) {
            1
        } else {
            usize::MAX
        };
        for token in idle.into_iter().take(limit) {
            let conn = &self.conns[&token];
            let why = if !conn.output.is_empty() {
                " with replies it does not read"
            } else if !conn.input.is_empty() {
                " in the middle of a frame"
            } else {
                ""
            };
            info!(
                "connection {token}: idle for {} ms{why}: closing",
                timeout.as_millis()
            );
            self.close(token);
        }
    }

    fn accept(&mut self) {
        for _ in 0..64 {
            let Some(listener) = &self.listener else {
                return;
            };
            let stream = match listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    if self.has(Defect::EmfileSpin) {
                        return;
                    }
                    // Give up the spare descriptor for a moment to take the
                    // client: it is served if the spare comes back (there
                    // was room after all), or else closed, told at once,
                    // and the listener does not stay readable for nothing.
                    self.spare = None;
                    let accepted = listener.accept();
                    self.spare = spare_fd();
                    match accepted {
                        Ok((stream, _))
                            if self.spare.is_some() && !self.has(Defect::SpareTurnsAway) =>
                        {
                            stream
                        }
                        Ok((stream, _)) => {
                            drop(stream);
                            self.spare = self.spare.take().or_else(spare_fd);
                            continue;
                        }
                        // Level-triggered, the listener says again if a
                        // client is still waiting; edge-triggered, it
                        // never will (the defect).
                        Err(e) if self.has(Defect::AcceptGivesUp) => {
                            debug!("accept: {e}");
                            return;
                        }
                        Err(e) => {
                            debug!("accept: {e}");
                            continue;
                        }
                    }
                }
                Err(e)
                    if matches!(e.raw_os_error(), Some(libc::ENOBUFS | libc::ENOMEM))
                        && !self.has(Defect::NobufsSpin) =>
                {
                    // A shortage can last: try again in a while, not at once.
                    debug!("accept: {e}");
                    self.pause_accepting();
                    return;
                }
                Err(e) => {
                    if self.has(Defect::AcceptErrorExits) {
                        let _ = writeln!(io::stderr(), "flawed: accept: {e}");
                        std::process::exit(1);
                    }
                    debug!("accept: {e}");
                    continue;
                }
            };
            if self.has(Defect::Max100Connections) && self.conns.len() >= 100 {
                continue;
            }
            self.add(stream);
        }
    }

    fn add(&mut self, stream: TcpStream) {
        if stream.set_nonblocking(true).is_err() {
            return;
        }
        if !self.has(Defect::Nagle) {
            let _ = stream.set_nodelay(true);
        }
        if self.has(Defect::OobInline) {
            let on: libc::c_int = 1;
            // SAFETY: the pointer and length describe `on`, alive for the call.
            unsafe {
                libc::setsockopt(
                    stream.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_OOBINLINE,
                    (&on as *const libc::c_int).cast(),
                    4,
                )
            };
        }
        let token = self.next_token;
        self.next_token += 1;
        if self
            .ctl(
                libc::EPOLL_CTL_ADD,
                stream.as_raw_fd(),
                token,
                libc::EPOLLIN,
            )
            .is_err()
        {
            return;
        }
        let (mut input, mut output) = (Vec::new(), Vec::new());
        if self.has(Defect::BuffersPerConnection) {
            // Touched, so that the memory is really taken.
            input = vec![1; 4096];
            output = vec![1; 4096];
            input.clear();
            output.clear();
        }
        debug!("connection {token} opened");
        self.conns.insert(
            token,
            Conn {
                stream,
                input,
                output,
                peer_done: false,
                done_reading: false,
                stranded: false,
                frames: 0,
                last_active: Instant::now(),
            },
        );
    }

    fn connection_io(&mut self, token: u64, events: u32) {
        if !self.conns.contains_key(&token) {
            return;
        }
        if events & (libc::EPOLLIN | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0 {
            self.read(token);
        }
        if self.conns.contains_key(&token) {
            self.progress(token);
        }
    }

    /// Reads what the connection has (within its turn), answering whole frames.
    fn read(&mut self, token: u64) {
        let flaws = self.flaws;
        // no-turns: small reads, as many as the client keeps sending.
        let (reads, size) = if flaws.has(Defect::NoTurns) {
            (usize::MAX, 1 << 10)
        } else {
            (READS_PER_TURN, 64 << 10)
        };
        let mut chunk = vec![0u8; size];
        for _ in 0..reads {
            let conn = self.conns.get_mut(&token).unwrap();
            if flaws.has(Defect::NoTurns) && !write_out(conn, flaws) {
                self.close(token);
                return;
            }
            // no-turns: not even replies piling up end the turn.
            let unbounded = flaws.has(Defect::UnboundedOutput) || flaws.has(Defect::NoTurns);
            if conn.peer_done || (conn.output.len() >= MAX_OUTPUT && !unbounded) {
                return;
            }
            match conn.stream.read(&mut chunk) {
                Ok(0) => {
                    conn.peer_done = true;
                    if self.flaws.has(Defect::ExitOnEofMidFrame) && !conn.input.is_empty() {
                        let _ = writeln!(io::stderr(), "flawed: unexpected end of file");
                        std::process::exit(1);
                    }
                    if self.flaws.has(Defect::ResetOnEof) {
                        let conn = self.conns.remove(&token).unwrap();
                        reset(conn.stream);
                    }
                    return;
                }
                Ok(n) if conn.done_reading => {
                    let _ = n; // requests are over: discard
                }
                Ok(n) => {
                    if flaws.has(Defect::BytesAreActivity) {
                        conn.last_active = Instant::now();
                    }
                    conn.input.extend_from_slice(&chunk[..n]);
                    conn.stranded = false;
                    if !self.answer(token) {
                        return;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    // no-turns: a client that keeps sending keeps the server
                    // (a greedy client's next send may be late by a scheduler
                    // tick, and the defect must show on a loaded machine too).
                    let fd = conn.stream.as_raw_fd();
                    if !(flaws.has(Defect::NoTurns) && wait_readable(&[fd], Some(GREEDY_QUIET))[0])
                    {
                        return;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    info!("connection {token}: {e}");
                    if self.flaws.has(Defect::ConnectionErrorExits) {
                        let _ = writeln!(io::stderr(), "flawed: {e}");
                        std::process::exit(1);
                    }
                    self.close(token);
                    return;
                }
            }
        }
    }

    /// Answers the whole frames in the connection's input; false if the
    /// connection is gone.
    fn answer(&mut self, token: u64) -> bool {
        let flaws = self.flaws;
        let max = if flaws.has(Defect::Max4095) {
            MAX_MSG - 1
        } else {
            MAX_MSG
        };
        let conn = self.conns.get_mut(&token).unwrap();
        let mut at = 0;
        // Where the last reply added by this call starts (for swap-pairs).
        let mut previous: Option<usize> = None;
        while conn.input.len() - at >= HEADER_LEN {
            let len = u32::from_le_bytes(conn.input[at..at + 4].try_into().unwrap()) as usize;
            if len > max {
                info!("connection {token}: a frame of {len} bytes is too long");
                if flaws.has(Defect::TooLongExits) {
                    let _ = writeln!(io::stderr(), "flawed: frame too long: {len} bytes");
                    std::process::exit(1);
                }
                if flaws.has(Defect::BadLengthDropsReplies) {
                    let conn = self.conns.remove(&token).unwrap();
                    reset(conn.stream);
                    return false;
                }
                conn.done_reading = true;
                conn.input = Vec::new();
                return true;
            }
            if len == 0 && flaws.has(Defect::CloseOnEmpty) {
                self.close(token);
                return false;
            }
            if conn.input.len() - at < HEADER_LEN + len {
                break;
            }
            let frame = &conn.input[at..at + HEADER_LEN + len];
            let start = conn.output.len();
            conn.output.extend_from_slice(frame);
            if flaws.has(Defect::FlipByte) && len > 0 {
                conn.output[start + HEADER_LEN] ^= 0xff;
            }
            match previous.take() {
                // The reply just added goes before the one before it.
                Some(before) if flaws.has(Defect::SwapPairs) => {
                    conn.output[before..].rotate_right(HEADER_LEN + len);
                }
                _ => previous = Some(start),
            }
            at += HEADER_LEN + len;
            conn.frames += 1;
            if flaws.has(Defect::RequestLimit) && conn.frames >= 5000 {
                conn.done_reading = true;
                conn.input = Vec::new();
                return true;
            }
            if flaws.has(Defect::Nagle) || flaws.has(Defect::StrandFrames) {
                // A write per reply.
                let ok = write_out(conn, flaws);
                if !ok {
                    self.close(token);
                    return false;
                }
                if flaws.has(Defect::StrandFrames) && !conn.output.is_empty() {
                    // The reply met EAGAIN: the frames after it wait for
                    // more input (the bug).
                    conn.input.drain(..at);
                    conn.stranded = true;
                    return true;
                }
            }
        }
        conn.input.drain(..at);
        if conn.input.capacity() > 0
            && conn.input.is_empty()
            && !flaws.has(Defect::BuffersPerConnection)
        {
            conn.input = Vec::new();
        }
        if !conn.input.is_empty() {
            if flaws.has(Defect::ShortReadCloses) {
                self.close(token);
                return false;
            }
            if flaws.has(Defect::BlockingRead) {
                // Waits for the rest, blocking every other client.
                let _ = conn.stream.set_nonblocking(false);
                let _ = conn.stream.set_read_timeout(Some(Duration::from_secs(30)));
                let mut rest = [0u8; 1];
                while incomplete(&conn.input) {
                    match conn.stream.read(&mut rest) {
                        Ok(1) => conn.input.push(rest[0]),
                        _ => break,
                    }
                }
                let _ = conn.stream.set_nonblocking(true);
                if !incomplete(&conn.input) {
                    return self.answer(token);
                }
            }
        }
        true
    }

    /// Writes what it can, closes what is finished, and asks epoll for
    /// what the connection needs next.
    fn progress(&mut self, token: u64) {
        let flaws = self.flaws;
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        if !conn.output.is_empty() && !write_out(conn, flaws) {
            self.close(token);
            return;
        }
        if conn.output.is_empty()
            && conn.output.capacity() > 0
            && !flaws.has(Defect::BuffersPerConnection)
        {
            conn.output = Vec::new();
        }
        let flushed = conn.output.is_empty();
        if flushed && (conn.peer_done || conn.done_reading) {
            if !conn.peer_done {
                // Said all it will: half-close, and close at the client's
                // end of file, so that unread input never turns into a reset.
                let _ = conn.stream.shutdown(std::net::Shutdown::Write);
            } else {
                self.close(token);
                return;
            }
        }
        let mut events = 0;
        let conn = &self.conns[&token];
        if !conn.peer_done && (conn.output.len() < MAX_OUTPUT || flaws.has(Defect::UnboundedOutput))
        {
            events |= libc::EPOLLIN;
        }
        if !conn.output.is_empty() {
            events |= libc::EPOLLOUT;
        }
        let _ = self.ctl(libc::EPOLL_CTL_MOD, conn.stream.as_raw_fd(), token, events);
    }

    fn close(&mut self, token: u64) {
        if let Some(conn) = self.conns.remove(&token) {
            debug!("connection {token} closed after {} frames", conn.frames);
            if self.has(Defect::LeakFd) {
                std::mem::forget(conn.stream);
            }
        }
    }
}

/// Writes the connection's output; false if the connection is broken.
fn write_out(conn: &mut Conn, flaws: &Flaws) -> bool {
    while !conn.output.is_empty() {
        match conn.stream.write(&conn.output) {
            Ok(n) if flaws.has(Defect::IgnoreShortWrites) => {
                let _ = n;
                conn.output.clear();
            }
            Ok(n) => {
                conn.output.drain(..n);
                // Activity: a reply went out.
                if n > 0 && !flaws.has(Defect::TimeoutIgnoresActivity) {
                    conn.last_active = Instant::now();
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if flaws.has(Defect::IgnoreShortWrites) {
                    conn.output.clear();
                }
                return true;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                info!("a client went away: {e}");
                if flaws.has(Defect::ConnectionErrorExits) {
                    let _ = writeln!(io::stderr(), "flawed: {e}");
                    std::process::exit(1);
                }
                return false;
            }
        }
    }
    // Stranded frames are answered once the reply before them is out (the
    // correct server) or when more input comes (the defect).
    true
}

/// The input holds a frame's beginning, not its end.
fn incomplete(input: &[u8]) -> bool {
    input.len() < HEADER_LEN
        || input.len() < HEADER_LEN + u32::from_le_bytes(input[..4].try_into().unwrap()) as usize
}

/// Closes with a reset: SO_LINGER with a zero timeout.
fn reset(stream: TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the pointer and length describe `linger`, alive for the call.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
}
