//! Chapter 14: the echo server in async/await, on a runtime written here
//! from `std::task` up.
//!
//! Chapters 10 and 11 wrote each connection as a state machine by hand: a
//! `State` enum, flags for what the edges said, and a handler the reactor
//! calls back. Here a connection is an `async fn` and the compiler writes
//! the state machine. Underneath is chapter 11's reactor turned inside out:
//! instead of calling a handler per event, it wakes the task waiting for
//! that event, and an executor polls the tasks that are awake. That is the
//! architecture of tokio, whose `listener.accept().await` the book began with.

#[path = "../../ch08-batching/src/buffer.rs"]
mod buffer; // chapter 8's buffers and pool, the same file
mod executor;
mod net;
mod reactor;
mod stop;
mod time;

use std::cell::RefCell;
use std::fs::File;
use std::future::{poll_fn, Future};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::pin::Pin;
use std::process::ExitCode;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use buffer::{Buf, Pool};
use common::args::Args;
use common::frame::{parse_frame, Parse};
use common::log::count;
use common::net::{accept_nonblocking, AcceptError};
use common::signals::stop_signalfd;
use common::{debug, error, info, warn};
use executor::{race, spawn, Runtime};
use net::{TcpListener, TcpStream};
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;
use reactor::{AsyncFd, Interest};
use stop::{Stop, Watch};
use time::{sleep, timeout, Sleep};

/// How long a connection may stay idle when `--idle-timeout-ms` is not given.
const DEFAULT_IDLE_TIMEOUT_MS: u64 = 60_000;

/// How long a stop waits for connections to finish, unless `--grace-ms` says.
const DEFAULT_GRACE_MS: u64 = 1000;

fn main() -> ExitCode {
    common::args::run(serve)
}

fn serve() -> Result<()> {
    let mut args = Args::from_env(
        "ch14",
        "echoes frames from async tasks, on an executor and a reactor written from std::task up",
    );
    let idle_ms = args.option_in(
        "idle-timeout-ms",
        "MS",
        "close a connection that sends no complete frame, or reads no reply, for this long",
        DEFAULT_IDLE_TIMEOUT_MS,
        1..,
    );
    let grace_ms = args.option(
        "grace-ms",
        "MS",
        "on SIGINT/SIGTERM, how long to let connections finish",
        DEFAULT_GRACE_MS,
    );
    let addr = args.finish()?;
    common::net::raise_fd_limit()?;
    // First, before any thread exists: this blocks SIGINT and SIGTERM.
    let signals = stop_signalfd().context("signalfd")?;
    let listener = common::net::listen(addr)?;
    // A listener that is not ready must make accept fail with EAGAIN, not wait.
    common::net::set_nonblocking(&listener)?;
    let spare_fd = File::open("/dev/null").context("open the spare fd")?;
    let shared = Rc::new(Shared {
        pool: RefCell::default(),
        stop: Stop::default(),
        idle_timeout: Duration::from_millis(idle_ms),
    });
    let runtime = Runtime::new().context("epoll_create1")?;
    info!("closing connections idle for {idle_ms} ms");
    let grace = Duration::from_millis(grace_ms);
    runtime.block_on(run(listener, signals, spare_fd, shared, grace))
}

/// What the connections share.
struct Shared {
    pool: RefCell<Pool>,
    stop: Stop,
    idle_timeout: Duration,
}

// ANCHOR: run
/// The server's main task: accepts connections until a stop signal, then
/// lets them finish, for at most `grace`.
async fn run(
    listener: std::net::TcpListener,
    signals: SignalFd,
    spare_fd: File,
    shared: Rc<Shared>,
    grace: Duration,
) -> Result<()> {
    let listener = TcpListener::new(listener).context("register the listener")?;
    let signals = StopSignal(AsyncFd::new(signals).context("register the signalfd")?);
    common::net::announce(listener.get_ref())?;
    // The accept loop never ends: the signal does, and the loop is dropped.
    race(signals.recv(), accept(&listener, spare_fd, &shared)).await;
    // Stop accepting: closing the listener refuses new clients at once.
    drop(listener);
    let open = count(shared.stop.open(), "connection");
    info!("stopping: letting {open} finish");
    shared.stop.request();
    // Until they have all finished, a second signal comes, or time is up.
    let _ = timeout(grace, race(shared.stop.finished(), signals.recv())).await;
    let late = shared.stop.open();
    if late > 0 {
        info!("closing {} that did not finish", count(late, "connection"));
    }
    // Returning ends `block_on`, which drops the tasks still running:
    // their sockets close.
    Ok(())
}
// ANCHOR_END: run

// ANCHOR: stop_signal
/// SIGINT and SIGTERM, as a future (see `common::signals`).
struct StopSignal(AsyncFd<SignalFd>);

impl StopSignal {
    async fn recv(&self) {
        loop {
            let event = self.0.ready(Interest::Read).await;
            match self.0.get_ref().read_signal() {
                Ok(Some(info)) => {
                    let signal = Signal::try_from(info.ssi_signo as i32);
                    info!("{}: stopping", signal.map_or("signal", Signal::as_str));
                    return;
                }
                // Nothing pending after all: wait for the next edge.
                Ok(None) => self.0.clear_ready(event),
                Err(e) => {
                    error!("signalfd: {e}: stopping");
                    return;
                }
            }
        }
    }
}
// ANCHOR_END: stop_signal

// ANCHOR: accept
/// Accepts connections, each served by a task of its own, for as long as
/// it is polled.
async fn accept(listener: &TcpListener, spare_fd: File, shared: &Rc<Shared>) {
    let mut spare_fd = Some(spare_fd);
    loop {
        let stream = match listener.accept().await {
            Ok(stream) => stream,
            // One client failed: on to the next. (`accept` waits on EAGAIN
            // rather than return `Empty`.)
            Err(AcceptError::Retry(_) | AcceptError::Empty) => continue,
            Err(AcceptError::NoFds(_)) => match accept_with_spare_fd(listener, &mut spare_fd) {
                Spare::Room(fd) => match TcpStream::new(fd) {
                    Ok(stream) => stream,
                    // Dropping `fd` closed the connection we cannot watch.
                    Err(e) => {
                        error!("epoll_ctl: {e}");
                        continue;
                    }
                },
                // The next `accept` takes the next client, or meets EAGAIN
                // and waits for an edge.
                Spare::TurnedAway => continue,
                // Still out of descriptors, `accept` would fail with EMFILE
                // again at once: the kernel wants a free number before it
                // looks at the backlog. Nobody is waiting, so wait for an edge.
                Spare::NobodyWaiting => {
                    listener.forget_readiness().await;
                    continue;
                }
                Spare::Later => {
                    sleep(ACCEPT_PAUSE).await;
                    continue;
                }
            },
            // The others wait, while the other tasks go on.
            Err(e @ AcceptError::NoMemory(_)) => {
                warn!("accept: {e}");
                sleep(ACCEPT_PAUSE).await;
                continue;
            }
            Err(e @ AcceptError::Fatal(_)) => {
                error!("accept: {e}");
                continue;
            }
        };
        // We write each reply as soon as it is whole: see chapter 4.
        if let Err(e) = common::net::set_nodelay(&stream) {
            error!("setsockopt(TCP_NODELAY): {e}");
        }
        // The handle is dropped: the task is detached, and runs on.
        spawn(echo(stream, shared.clone()));
    }
}

/// Clients may still be waiting, but the kernel is short of memory, or no
/// descriptor is left even to turn them away with: how long before
/// `accept` is tried again. Not at once: such a shortage can last, and
/// trying at once would be a busy loop (`yield_now` is one too: with
/// nothing else to do, the executor polls the task again at once).
const ACCEPT_PAUSE: Duration = Duration::from_millis(10);
// ANCHOR_END: accept

// ANCHOR: emfile
// Identical in chapters 9 to 11, 14, 16 and 17 (book/check.sh checks it).
/// What came of accepting with the spare descriptor.
enum Spare {
    /// A client, and room to serve it: the spare came back.
    Room(OwnedFd),
    /// A client was turned away, or had given up: on to the next.
    TurnedAway,
    /// Nobody was waiting after all.
    NobodyWaiting,
    /// Not even one descriptor to do it with: try again later.
    Later,
}

/// Out of file descriptors, `accept` fails and leaves the connection in the
/// backlog. Level-triggered, the loop would spin; edge-triggered, we would
/// never hear of that client again. We keep one descriptor in reserve for
/// this moment: give it up, accept the client into the number it frees,
/// and take the spare back. If the spare finds no room, the client is
/// turned away, closed at once (it sees a clean close instead of waiting
/// forever); if it does (a descriptor was freed meanwhile), the client is
/// served, as in chapter 5.
fn accept_with_spare_fd(listener: &TcpListener, spare_fd: &mut Option<File>) -> Spare {
    // A spare we could not take back last time (another process took the
    // number: the system-wide limit, ENFILE) may be free again.
    let Some(spare) = spare_fd.take().or_else(|| File::open("/dev/null").ok()) else {
        return Spare::Later;
    };
    drop(spare);
    let accepted = accept_nonblocking(listener);
    *spare_fd = File::open("/dev/null").ok();
    match accepted {
        Ok(fd) if spare_fd.is_some() => Spare::Room(fd),
        Ok(fd) => {
            drop(fd);
            warn!("out of file descriptors: turned a connection away");
            *spare_fd = File::open("/dev/null").ok();
            Spare::TurnedAway
        }
        Err(AcceptError::Empty) => Spare::NobodyWaiting,
        Err(AcceptError::Retry(_)) => Spare::TurnedAway,
        Err(_) => Spare::Later,
    }
}
// ANCHOR_END: emfile

// ANCHOR: conn
/// A connection: chapter 11's `Conn`, minus what the code's position now
/// says. No `State`: whether it is reading, writing or closing is where
/// the task is in `echo`. No `readable` and `writable` flags: the reactor
/// keeps them. No `replied` flag: a send resets the idle timer itself.
struct Conn {
    stream: TcpStream,
    /// Received bytes not yet answered.
    incoming: Buf,
    /// Replies not yet sent.
    outgoing: Buf,
    /// How many more bytes we will read: no limit while serving; once the
    /// requests are over (a bad frame, a stop), what had arrived by then.
    read_limit: Option<usize>,
    /// Fires when no reply has gone out for the idle timeout.
    idle: Sleep,
    /// Hears the stop; dropping it tells the server we are finished.
    stop: Watch,
    shared: Rc<Shared>,
}

/// The connection is over, cleanly or not: the task returns, and dropping
/// the `Conn` closes the socket.
struct Done;
// ANCHOR_END: conn

// ANCHOR: echo
/// Serves one connection, until the client leaves or idles, or the server
/// stops. Its task is this future: everything the connection needs between
/// two events lives in it, in `conn` and in where it stands in `serve`.
async fn echo(stream: TcpStream, shared: Rc<Shared>) {
    let mut conn = Conn {
        stream,
        incoming: Buf::default(),
        outgoing: Buf::default(),
        read_limit: None,
        idle: sleep(shared.idle_timeout),
        stop: shared.stop.watch(),
        shared,
    };
    // `Err(Done)`: it ended early, and said why in the log.
    let _ = conn.serve().await;
    // Dropping `conn` closes the socket, and tells the stop we are finished.
}
// ANCHOR_END: echo

impl Conn {
    // ANCHOR: serve
    /// Chapters 9 to 11's state machine, as straight-line code: reading,
    /// writing and closing are places in it, and a wait is an `.await`.
    async fn serve(&mut self) -> Result<(), Done> {
        // Requests: read, answer every whole frame, send the replies.
        while self.read_limit != Some(0) {
            self.wait(Interest::Read).await?;
            self.read()?;
            self.answer_requests().await?;
        }
        // No more: close, without losing the replies in flight.
        self.close_gracefully().await
    }
    // ANCHOR_END: serve

    // ANCHOR: wait
    /// Waits until the socket is ready for `interest`. Meanwhile it gives
    /// back the memory of the buffers it has emptied, hears the stop (and
    /// returns, the first time, so the caller sees the new `read_limit`),
    /// and gives up once no reply has gone out for the idle timeout.
    ///
    /// Three futures raced, as `select!` would: each poll polls all three
    /// with the task's waker, and whichever can go on wakes the task. The
    /// socket goes first: a connection whose request came just in time is
    /// served rather than closed.
    async fn wait(&mut self, interest: Interest) -> Result<(), Done> {
        poll_fn(|cx| {
            if self.stream.poll_ready(interest, cx).is_ready() {
                return Poll::Ready(Ok(()));
            }
            if self.read_limit.is_none() && self.stop.poll_stop(cx).is_ready() {
                self.stop_reading();
                return Poll::Ready(Ok(()));
            }
            if Pin::new(&mut self.idle).poll(cx).is_ready() {
                self.log_idle();
                return Poll::Ready(Err(Done));
            }
            let pool = &mut self.shared.pool.borrow_mut();
            self.incoming.release(pool);
            self.outgoing.release(pool);
            Poll::Pending
        })
        .await
    }
    // ANCHOR_END: wait

    fn fd(&self) -> i32 {
        self.stream.as_fd().as_raw_fd()
    }

    // ANCHOR: stop
    /// A stop answers what the client had sent when the signal came, and no
    /// more: the bytes in our buffer and in the socket's receive queue. (The
    /// kernel counts those only up to an urgent mark, if there is one: frames
    /// behind a byte of urgent data, a rarity, go unanswered.)
    fn stop_reading(&mut self) {
        let unread = common::net::unread_bytes(&self.stream).unwrap_or(0);
        self.read_limit = Some(unread);
    }
    // ANCHOR_END: stop

    fn log_idle(&self) {
        let why = if !self.outgoing.is_empty() {
            " with replies it does not read"
        } else if !self.incoming.is_empty() {
            " in the middle of a frame"
        } else {
            ""
        };
        let ms = self.shared.idle_timeout.as_millis();
        info!("fd {}: idle for {ms} ms{why}: closing", self.fd());
    }

    // ANCHOR: read
    /// Reads once into the read buffer. `WouldBlock` is no error: the
    /// readiness is used up, and the next `wait` waits.
    fn read(&mut self) -> Result<(), Done> {
        // While reading, the buffer holds at most part of one frame (whole
        // ones are answered at once), so it has room: 0 bytes means EOF.
        let free = self.incoming.unfilled(&mut self.shared.pool.borrow_mut());
        let room = self
            .read_limit
            .map_or(free.len(), |limit| free.len().min(limit));
        if room == 0 {
            return Ok(());
        }
        match self.stream.try_read(&mut free[..room]) {
            Ok(0) => {
                // EOF. Nothing is lost by closing now: we read only when
                // every frame received so far has been answered and sent.
                if !self.incoming.is_empty() {
                    debug!("fd {}: EOF in the middle of a frame", self.fd());
                }
                Err(Done)
            }
            // Even a short read does not prove the socket empty: TCP stops
            // a read at the urgent mark (MSG_OOB). Only EAGAIN does, and
            // `try_read` clears the readiness only then.
            Ok(n) => {
                self.incoming.commit(n);
                if let Some(limit) = &mut self.read_limit {
                    *limit -= n;
                }
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => {
                debug!("fd {}: read: {e}", self.fd());
                Err(Done)
            }
        }
    }
    // ANCHOR_END: read

    // ANCHOR: answer
    /// The bytes of the whole frames at the front of the read buffer. A
    /// frame that announces too much ends the requests: the frames before it
    /// are answered; it, and whatever follows it, are dropped.
    fn whole_frames(&mut self) -> usize {
        let mut whole = 0;
        loop {
            match parse_frame(&self.incoming.data()[whole..]) {
                Parse::Frame { len } => whole += len,
                Parse::Incomplete => return whole,
                Parse::TooLong { announced } => {
                    let fd = self.fd();
                    debug!("fd {fd}: frame of {announced} bytes is too long: closing");
                    self.incoming.truncate(whole);
                    self.read_limit = Some(0);
                    return whole;
                }
            }
        }
    }

    /// Answers every whole frame in the read buffer, all with one send,
    /// straight from the read buffer (the reply to a frame is the frame
    /// itself); what the socket does not take is copied to the write buffer
    /// and sent when there is room. Until then nothing is read:
    /// backpressure, as in chapter 9, now simply because the task is here.
    async fn answer_requests(&mut self) -> Result<(), Done> {
        let whole = self.whole_frames();
        if whole == 0 {
            return Ok(());
        }
        let sent = match self.stream.try_write(&self.incoming.data()[..whole]) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
            Err(e) => {
                // EPIPE or ECONNRESET: the peer is gone, which is its right.
                debug!("fd {}: send: {e}", self.fd());
                return Err(Done);
            }
        };
        if sent > 0 {
            // Activity is a reply going out, as in chapter 11.
            self.idle.reset(Instant::now() + self.shared.idle_timeout);
        }
        if sent < whole {
            // It fits: the write buffer may hold as much as the read buffer.
            let pool = &mut self.shared.pool.borrow_mut();
            let copied = self
                .outgoing
                .append(&self.incoming.data()[sent..whole], pool);
            debug_assert!(copied);
        }
        self.incoming.consume(whole);
        self.send_replies().await
    }

    /// Sends the write buffer, all in one call if the socket takes it.
    async fn send_replies(&mut self) -> Result<(), Done> {
        while !self.outgoing.is_empty() {
            self.wait(Interest::Write).await?;
            match self.stream.try_write(self.outgoing.data()) {
                Ok(n) => {
                    self.outgoing.consume(n);
                    // Activity is a reply going out, as in chapter 11: a
                    // client that dribbles in a frame slower than the
                    // timeout, or never reads the replies, is closed.
                    self.idle.reset(Instant::now() + self.shared.idle_timeout);
                }
                // The socket's buffer is full: `wait` waits for room.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    // EPIPE or ECONNRESET: the peer is gone, which is its right.
                    debug!("fd {}: send: {e}", self.fd());
                    return Err(Done);
                }
            }
        }
        Ok(())
    }
    // ANCHOR_END: answer

    // ANCHOR: close
    /// Every reply is sent and no request will be read: shut down our
    /// sending side, so the client reads our last reply and then EOF.
    ///
    /// Why not close at once: `close` on a socket with unread input sends a
    /// reset (RST) instead of a FIN, and the kernel throws away what we sent
    /// that the client has not received yet. So we wait for the client's
    /// EOF, reading and dropping what it still sends, and only then close.
    /// A client that never hangs up is closed by the idle timeout, or when
    /// the stop's grace period ends.
    async fn close_gracefully(&mut self) -> Result<(), Done> {
        if !self.incoming.is_empty() {
            debug!("fd {}: dropping half a frame", self.fd());
            self.incoming.clear();
        }
        // An error: the peer is gone already.
        common::net::shutdown_write(&self.stream).map_err(|_| Done)?;
        loop {
            self.wait(Interest::Read).await?;
            let scratch = self.incoming.unfilled(&mut self.shared.pool.borrow_mut());
            match self.stream.try_read(scratch) {
                // Dropped: we answer no more requests.
                Ok(1..) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                // EOF (it has all our replies) or an error: close now.
                Ok(0) | Err(_) => return Ok(()),
            }
        }
    }
    // ANCHOR_END: close
}

#[cfg(test)]
mod tests {
    use std::mem::size_of_val;

    use super::*;

    /// A connected pair: our side registered as a `TcpStream`.
    fn connected() -> (TcpStream, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let fd = accept_nonblocking(&listener).unwrap();
        (TcpStream::new(fd).unwrap(), client)
    }

    // ANCHOR: test_sizes
    /// What a connection costs while it waits: the task's future, whose
    /// size the compiler fixes as that of the largest set of locals alive
    /// across any one `.await`. Run with `--nocapture` to see the numbers.
    #[test]
    fn the_connection_future_is_small() {
        Runtime::new().unwrap().block_on(async {
            let shared = Rc::new(Shared {
                pool: RefCell::default(),
                stop: Stop::default(),
                idle_timeout: Duration::from_secs(60),
            });
            let (stream, _client) = connected();
            let conn = echo(stream, shared.clone());
            let size = size_of_val(&conn);
            println!("echo future: {size} bytes");
            println!("  of which Conn: {} bytes", size_of::<Conn>());
            println!("  of which Buf: {} bytes (x2)", size_of::<Buf>());
            println!("  of which Sleep: {} bytes", size_of::<Sleep>());
            assert!(size <= 512, "{size}");

            let wrapped = spawned_unboxed(conn);
            println!(
                "an async block awaiting it: {} bytes",
                size_of_val(&wrapped)
            );
            assert!(size_of_val(&wrapped) >= 2 * size);

            // Versus a buffer on the stack across an `.await`: it lives in
            // the future, for as long as the connection does.
            let (stream, _client) = connected();
            let stack = echo_with_a_stack_buffer(stream);
            println!("with a 4 KiB stack buffer: {} bytes", size_of_val(&stack));
            assert!(size_of_val(&stack) > 4096);
        });
    }

    /// What `spawn` would box if it did not box the future first: a block
    /// that awaits it and keeps the output for the `JoinHandle`.
    fn spawned_unboxed<F: Future>(future: F) -> impl Future<Output = ()> {
        let output = Rc::new(std::cell::Cell::new(None));
        async move { output.set(Some(future.await)) }
    }

    async fn echo_with_a_stack_buffer(stream: TcpStream) {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = stream.read(&mut buf).await {
            let _ = stream.write_all(&buf[..n]).await;
        }
    }
    // ANCHOR_END: test_sizes
}
