//! Chapter 12: chapter 9's server as futures, on an executor and a reactor
//! written here from `std::task` up.
//!
//! Chapter 9's loop called a connection's code at each of its edges, and
//! chapter 10's reactor called a handler. Here a connection is a future: a
//! task that an executor polls when it is awake. The reactor calls nobody:
//! it records each edge and wakes the task waiting for it. The connection's
//! code is chapter 9's state machine, unchanged; its `poll` is chapter 9's
//! turn, and where the turn ended, `poll` returns `Pending`. That is the
//! architecture of tokio, whose `listener.accept().await` the book began
//! with; chapter 13 lets the compiler write the state machines.

#[path = "../../ch08-batching/src/buffer.rs"]
mod buffer; // chapter 8's buffers and pool, the same file
mod executor;
mod graceful;
mod reactor;
mod stop;

use std::cell::RefCell;
use std::fs::File;
use std::future::{poll_fn, Future};
use std::net::TcpListener;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::pin::Pin;
use std::process::ExitCode;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use buffer::{Buf, Pool};
use common::args::Args;
use common::frame::{parse_frame, Parse};
use common::log::count;
use common::net::{accept_nonblocking, retry_eintr, AcceptError};
use common::signals::stop_signalfd;
use common::{debug, error, info, warn};
use executor::{defer, pause_until, race, spawn, wake_at, Runtime};
use graceful::{close_gracefully, finish_if_no_more_requests, stop_reading};
use nix::errno::Errno;
use nix::sys::epoll::EpollFlags;
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;
use nix::sys::socket::{send, MsgFlags};
use nix::unistd::read;
use reactor::Registration;
use stop::{Stop, Watch};

// ANCHOR: conn
/// What a connection is doing. It no longer decides what epoll reports
/// (always both directions), only what the connection does with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for requests: reads while the socket is readable.
    Reading,
    /// Sending replies: waits for the socket to be writable, reading nothing.
    Writing,
    /// Every reply is sent and our side shut down; waits for the peer's EOF
    /// before closing (see `close_gracefully`).
    Closing,
    /// Finished, cleanly or not: the task ends, and closes it.
    Done,
}

/// Memory per connection: this struct (152 bytes, in its task's box) plus,
/// while bytes are in them, a read and a write buffer of 16 to 256 KiB
/// each (see `buffer.rs`): at most 512 KiB, whatever the client does, and
/// nothing but the struct and its task's bookkeeping while it is quiet.
struct Conn {
    fd: OwnedFd,
    /// Its registration with the reactor: the edges, and who to wake.
    io: Registration,
    state: State,
    /// Received bytes not yet answered.
    incoming: Buf,
    /// Replies not yet sent.
    outgoing: Buf,
    /// How many more bytes we will read: no limit while serving; once the
    /// requests are over (a bad frame, a stop), what had arrived by then.
    read_limit: Option<usize>,
    /// Edges seen and not yet used up: the socket may have input to read, or
    /// room to write. The kernel will not say so again.
    readable: bool,
    writable: bool,
    /// Hears the stop; dropping it tells the server we are finished.
    stop: Watch,
}
// ANCHOR_END: conn

impl Conn {
    fn new(fd: OwnedFd, stop: &Stop) -> std::io::Result<Conn> {
        Ok(Conn {
            io: Registration::new(fd.as_fd())?,
            fd,
            state: State::Reading,
            incoming: Buf::default(),
            outgoing: Buf::default(),
            read_limit: None,
            // Registering reports the socket's current state as a first edge
            // (a new socket is writable), so we start out knowing nothing.
            readable: false,
            writable: false,
            stop: stop.watch(),
        })
    }
}

// ANCHOR: remember_edge
// Identical in chapters 9, 12 and 16 (book/check.sh checks it).
/// Remembers what an edge said. Errors and hang-ups count for both
/// directions: the next read or send reports them.
fn remember_edge(conn: &mut Conn, flags: EpollFlags) {
    use EpollFlags as E;
    if flags.intersects(E::EPOLLIN | E::EPOLLHUP | E::EPOLLERR) {
        conn.readable = true;
    }
    if flags.intersects(E::EPOLLOUT | E::EPOLLHUP | E::EPOLLERR) {
        conn.writable = true;
    }
}
// ANCHOR_END: remember_edge

/// How long a stop waits for connections to finish, unless `--grace-ms` says.
const DEFAULT_GRACE_MS: u64 = 1000;

fn main() -> ExitCode {
    common::args::run(serve)
}

fn serve() -> Result<()> {
    let mut args = Args::from_env(
        "ch12",
        "echoes frames from futures, on an executor and a reactor written from std::task up",
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
    });
    let runtime = Runtime::new().context("epoll_create1")?;
    let grace = Duration::from_millis(grace_ms);
    runtime.block_on(run(listener, signals, spare_fd, shared, grace))
}

/// What the connections share.
struct Shared {
    pool: RefCell<Pool>,
    stop: Stop,
}

// ANCHOR: run
/// The server's main task: accepts connections until a stop signal, then
/// lets them finish, for at most `grace`. An `async fn`: the compiler
/// writes its state machine, as chapter 13 has it write the connection's.
async fn run(
    listener: TcpListener,
    signals: SignalFd,
    spare_fd: File,
    shared: Rc<Shared>,
    grace: Duration,
) -> Result<()> {
    let signals = StopSignal::new(signals).context("register the signalfd")?;
    let listener =
        Listener::new(listener, spare_fd, shared.clone()).context("register the listener")?;
    common::net::announce(&listener.listener)?;
    let signal = || poll_fn(|cx| signals.poll_recv(cx));
    // The listener's future never ends: the signal does, and `race` drops
    // the listener, which closes it and refuses new clients at once.
    race(signal(), listener).await;
    let open = count(shared.stop.open(), "connection");
    info!("stopping: letting {open} finish");
    shared.stop.request();
    // Until they have all finished, a second signal comes, or time is up.
    let finished = race(shared.stop.finished(), signal());
    race(finished, pause_until(Instant::now() + grace)).await;
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
/// SIGINT and SIGTERM (see `common::signals`), registered with the reactor.
struct StopSignal {
    signals: SignalFd,
    io: Registration,
}

impl StopSignal {
    fn new(signals: SignalFd) -> std::io::Result<StopSignal> {
        let io = Registration::new(signals.as_fd())?;
        Ok(StopSignal { signals, io })
    }

    /// `Ready` once a stop signal has come; otherwise `Pending`, with the
    /// waker stored for the next edge.
    fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            self.io.take_edges();
            match self.signals.read_signal() {
                Ok(Some(info)) => {
                    let signal = Signal::try_from(info.ssi_signo as i32);
                    info!("{}: stopping", signal.map_or("signal", Signal::as_str));
                    return Poll::Ready(());
                }
                // Nothing pending after all: wait for the next edge.
                Ok(None) if self.io.poll_edge(cx).is_pending() => return Poll::Pending,
                Ok(None) => {}
                Err(e) => {
                    error!("signalfd: {e}: stopping");
                    return Poll::Ready(());
                }
            }
        }
    }
}
// ANCHOR_END: stop_signal

// ANCHOR: conn_future
/// A connection's task: chapter 9's connection, and the pool it borrows
/// its buffers from.
struct Connection {
    conn: Conn,
    shared: Rc<Shared>,
}

impl Future for Connection {
    type Output = ();

    /// Chapter 9's turn: what the edges said, then the work they allow.
    /// Where chapter 9's loop went on to the next event, `poll` returns
    /// `Pending`, having made sure it will be woken: by the next edge, or,
    /// cut short with input left, after the tasks the next events wake.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // No field points into another, so `Connection` is `Unpin`, and
        // getting `&mut` out of the `Pin` needs no `unsafe`.
        let Connection { conn, shared } = self.get_mut();
        let pool = &mut shared.pool.borrow_mut();
        // The first poll after the stop: answer what had arrived, no more.
        if conn.read_limit.is_none() && conn.stop.poll_stop(cx).is_ready() {
            stop_reading(conn);
        }
        loop {
            remember_edge(conn, conn.io.take_edges());
            match connection_io(conn, pool) {
                // Dropping the `Connection` closes the socket.
                _ if conn.state == State::Done => return Poll::Ready(()),
                // No edge will come for the input left (chapter 9's
                // `unfinished` list): woken after the others.
                Turn::Unfinished => {
                    defer(cx);
                    return Poll::Pending;
                }
                // Nothing to do until the next edge, unless one came.
                Turn::Idle if conn.io.poll_edge(cx).is_pending() => return Poll::Pending,
                Turn::Idle => {}
            }
        }
    }
}
// ANCHOR_END: conn_future

// ANCHOR: accept
/// The listener's edge is used up but clients may still be waiting (the
/// kernel is short of memory, or no descriptor is left even to turn them
/// away with): how long before `accept` is tried again. Not at once: such a
/// shortage can last, and trying at once would be a busy loop.
const ACCEPT_PAUSE: Duration = Duration::from_millis(10);

/// The listening socket, as a future that accepts connections, each served
/// by a task of its own, for as long as it is polled.
struct Listener {
    listener: TcpListener,
    io: Registration,
    /// A descriptor kept in reserve for EMFILE (see `accept_with_spare_fd`).
    spare_fd: Option<File>,
    shared: Rc<Shared>,
}

impl Listener {
    fn new(listener: TcpListener, spare_fd: File, shared: Rc<Shared>) -> std::io::Result<Listener> {
        Ok(Listener {
            io: Registration::new(listener.as_fd())?,
            listener,
            spare_fd: Some(spare_fd),
            shared,
        })
    }
}

impl Future for Listener {
    type Output = ();

    /// Accepts at every edge, as chapter 9's loop did, and when a pause
    /// ends. Never `Ready`.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            this.io.take_edges();
            let (listener, spare_fd) = (&this.listener, &mut this.spare_fd);
            if let Some(moment) = accept_new_conns(listener, spare_fd, &this.shared) {
                wake_at(moment, cx);
                return Poll::Pending;
            }
            if this.io.poll_edge(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

/// Accepts every pending connection. The listener's edge came once for all
/// of them: stopping before EAGAIN would strand the rest in the backlog
/// until yet another client arrives. Returns when to try again without
/// waiting for an edge, if some clients could not be taken yet.
fn accept_new_conns(
    listener: &TcpListener,
    spare_fd: &mut Option<File>,
    shared: &Rc<Shared>,
) -> Option<Instant> {
    let later = || Some(Instant::now() + ACCEPT_PAUSE);
    loop {
        let fd = match accept_nonblocking(listener) {
            Ok(fd) => fd,
            Err(AcceptError::Empty) => return None,
            // One client failed: on to the next.
            Err(AcceptError::Retry(_)) => continue,
            Err(AcceptError::NoFds(_)) => match accept_with_spare_fd(listener, spare_fd) {
                Spare::Room(fd) => fd,
                Spare::TurnedAway => continue,
                Spare::NobodyWaiting => return None,
                Spare::Later => return later(),
            },
            // The others wait, while the other tasks go on.
            Err(e @ AcceptError::NoMemory(_)) => {
                warn!("accept: {e}");
                return later();
            }
            Err(e @ AcceptError::Fatal(_)) => {
                error!("accept: {e}");
                return None;
            }
        };
        // We write each reply as soon as it is whole: see chapter 4.
        if let Err(e) = common::net::set_nodelay(&fd) {
            error!("setsockopt(TCP_NODELAY): {e}");
        }
        let conn = match Conn::new(fd, &shared.stop) {
            Ok(conn) => conn,
            // Dropping `fd` closed the connection we cannot watch.
            Err(e) => {
                error!("epoll_ctl: {e}");
                continue;
            }
        };
        // The handle is dropped: the task is detached, and runs on.
        let shared = shared.clone();
        spawn(Connection { conn, shared });
    }
}
// ANCHOR_END: accept

// ANCHOR: emfile
// Identical in chapters 9 to 14, 16 and 17 (book/check.sh checks it).
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

// ANCHOR: state_machine
/// How a connection's turn ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Turn {
    /// Nothing more to do until the next edge.
    Idle,
    /// It used up its reads for this turn with input still pending.
    Unfinished,
}

/// Does all the work the connection's readiness allows, then gives back
/// the memory of any buffer it has emptied.
fn connection_io(conn: &mut Conn, pool: &mut Pool) -> Turn {
    let turn = loop {
        let before = conn.state;
        let turn = match conn.state {
            State::Reading => state_reading(conn, pool),
            State::Writing => {
                state_writing(conn);
                Turn::Idle
            }
            State::Closing => close_gracefully(conn, pool),
            State::Done => Turn::Idle,
        };
        if conn.state == State::Reading {
            finish_if_no_more_requests(conn);
        }
        // A new state may have work that an edge announced earlier: input
        // that came while we were writing. Nobody will announce it again.
        if conn.state == before || turn == Turn::Unfinished {
            break turn;
        }
    };
    conn.incoming.release(pool);
    conn.outgoing.release(pool);
    turn
}

/// Reads per connection per turn. Without a limit, a client that sends and
/// reads as fast as we echo never lets a read come back empty, and we
/// would serve it forever. Unlike level-triggered, stopping early is not
/// free: the connection must be given another turn without an edge (see
/// `Connection::poll`).
const READS_PER_TURN: usize = 16;

fn state_reading(conn: &mut Conn, pool: &mut Pool) -> Turn {
    for _ in 0..READS_PER_TURN {
        if !try_fill_buffer(conn, pool) {
            return Turn::Idle;
        }
    }
    Turn::Unfinished
}

// ANCHOR: state_writing
// Identical in chapters 6 to 12, 16 and 17 (book/check.sh checks it).
fn state_writing(conn: &mut Conn) {
    while try_flush_buffer(conn) {}
}
// ANCHOR_END: state_writing
// ANCHOR_END: state_machine

// ANCHOR: read
// Identical in chapters 9 to 12 and 16 (book/check.sh checks it).
/// Reads once into the read buffer and answers every whole frame now in
/// it. Returns true while there may be more to read.
fn try_fill_buffer(conn: &mut Conn, pool: &mut Pool) -> bool {
    if !conn.readable {
        return false;
    }
    // While `Reading` the buffer holds at most part of one frame (we answer
    // whole ones at once), so it has room: a read of zero bytes means EOF.
    let free = conn.incoming.unfilled(pool);
    let room = conn
        .read_limit
        .map_or(free.len(), |limit| free.len().min(limit));
    if room == 0 {
        return false;
    }
    match retry_eintr(|| read(&conn.fd, &mut free[..room])) {
        Ok(0) => {
            // EOF. Nothing is lost by closing now: we only read in `Reading`,
            // when every frame received so far has been answered and sent.
            if !conn.incoming.is_empty() {
                debug!("fd {}: EOF in the middle of a frame", conn.fd.as_raw_fd());
            }
            conn.state = State::Done;
            return false;
        }
        // Even a short read does not prove the socket empty: TCP stops a read
        // at the urgent mark (MSG_OOB), with more bytes behind it. Only
        // EAGAIN does, so we read until we hear it.
        Ok(n) => {
            conn.incoming.commit(n);
            if let Some(limit) = &mut conn.read_limit {
                *limit -= n;
            }
        }
        Err(Errno::EAGAIN) => {
            conn.readable = false;
            return false;
        }
        Err(e) => {
            debug!("fd {}: read: {e}", conn.fd.as_raw_fd());
            conn.state = State::Done;
            return false;
        }
    }
    // Pipelining: one read may bring many frames, and they are answered
    // together.
    answer_requests(conn, pool);
    conn.state == State::Reading
}
// ANCHOR_END: read

// ANCHOR: parse
// Identical in chapters 8 to 10, 12 and 16 (book/check.sh checks it).
// ANCHOR: whole_frames
// Identical in chapters 8 to 12 and 16 (book/check.sh checks it).
/// The bytes of the whole frames at the front of the read buffer. A frame
/// that announces too much ends the requests: the frames before it are
/// answered; it, and whatever follows it, are dropped.
fn whole_frames(conn: &mut Conn) -> usize {
    let mut whole = 0;
    loop {
        match parse_frame(&conn.incoming.data()[whole..]) {
            Parse::Frame { len } => whole += len,
            Parse::Incomplete => return whole,
            Parse::TooLong { announced } => {
                let fd = conn.fd.as_raw_fd();
                debug!("fd {fd}: frame of {announced} bytes is too long: closing");
                conn.incoming.truncate(whole);
                conn.read_limit = Some(0);
                return whole;
            }
        }
    }
}
// ANCHOR_END: whole_frames

/// Answers every whole frame in the read buffer, all with one `send`. The
/// reply to a frame is the frame itself, so the replies go out straight
/// from the read buffer; only what the socket does not take is copied to
/// the write buffer, to wait there for room (`Writing`).
fn answer_requests(conn: &mut Conn, pool: &mut Pool) {
    let whole = whole_frames(conn);
    if whole == 0 {
        return;
    }
    let replies = &conn.incoming.data()[..whole];
    // MSG_NOSIGNAL: see `try_flush_buffer`.
    let sent = match retry_eintr(|| send(conn.fd.as_raw_fd(), replies, MsgFlags::MSG_NOSIGNAL)) {
        Ok(n) => n,
        Err(Errno::EAGAIN) => 0,
        Err(e) => {
            debug!("fd {}: send: {e}", conn.fd.as_raw_fd());
            conn.state = State::Done;
            return;
        }
    };
    if sent < whole {
        // It fits: the write buffer may hold as much as the read buffer.
        let copied = conn
            .outgoing
            .append(&conn.incoming.data()[sent..whole], pool);
        debug_assert!(copied);
        conn.state = State::Writing;
    }
    conn.incoming.consume(whole);
}
// ANCHOR_END: parse

// ANCHOR: write
// Identical in chapters 9, 10, 12 and 16 (book/check.sh checks it).
/// Sends the pending replies, all in one call if the socket takes them.
/// Returns true to try again after a short write; on EAGAIN it stays in
/// `Writing` until the socket is writable again.
fn try_flush_buffer(conn: &mut Conn) -> bool {
    if !conn.writable {
        return false;
    }
    let unsent = conn.outgoing.data();
    // MSG_NOSIGNAL: a peer that has gone away makes this fail with EPIPE
    // instead of raising SIGPIPE. Rust ignores SIGPIPE before `main`
    // anyway; the flag states the intent where it matters.
    match retry_eintr(|| send(conn.fd.as_raw_fd(), unsent, MsgFlags::MSG_NOSIGNAL)) {
        Ok(n) => conn.outgoing.consume(n),
        Err(Errno::EAGAIN) => {
            conn.writable = false;
            return false;
        }
        Err(e) => {
            // EPIPE or ECONNRESET: the peer is gone, which is its right.
            debug!("fd {}: send: {e}", conn.fd.as_raw_fd());
            conn.state = State::Done;
            return false;
        }
    }
    if !conn.outgoing.is_empty() {
        // A short write: the socket's send buffer filled up. The next
        // attempt sends more or reports EAGAIN.
        return true;
    }
    conn.state = State::Reading;
    false
}
// ANCHOR_END: write

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Wake, Waker};

    use super::*;
    use crate::executor::tests::bounded;
    use crate::executor::yield_now;

    #[test]
    fn a_conn_is_small_without_its_buffers() {
        // The memory per connection stated at `Conn` counts on this.
        assert!(std::mem::size_of::<Conn>() <= 152);
    }

    /// Counts the wakes of a waker made from it.
    #[derive(Default)]
    struct CountWakes(AtomicUsize);

    impl Wake for CountWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    impl CountWakes {
        /// Lets the reactor take turns until it has woken us `n` times.
        async fn woken(&self, n: usize) {
            while self.0.load(Ordering::SeqCst) < n {
                yield_now().await;
            }
        }
    }

    // ANCHOR: test_wake
    /// A connection's future, polled by hand: `Pending` while there is
    /// nothing to read, having stored the waker that the reactor's next
    /// edge wakes; polled again, it echoes, and waits again; at the
    /// client's EOF it is `Ready`.
    #[test]
    fn the_connection_is_a_future_the_reactor_wakes() {
        bounded(|| {
            Runtime::new().unwrap().block_on(async {
                let (ours, mut peer) = UnixStream::pair().unwrap();
                ours.set_nonblocking(true).unwrap();
                let shared = Rc::new(Shared {
                    pool: RefCell::default(),
                    stop: Stop::default(),
                });
                let conn = Conn::new(ours.into(), &shared.stop).unwrap();
                let mut task = Connection { conn, shared };
                let wakes = Arc::new(CountWakes::default());
                let waker = Waker::from(wakes.clone());
                let mut poll = || Pin::new(&mut task).poll(&mut Context::from_waker(&waker));

                assert!(poll().is_pending(), "nothing to read yet");
                let frame = [&2u32.to_le_bytes()[..], b"hi"].concat();
                peer.write_all(&frame).unwrap();
                wakes.woken(1).await;
                assert!(poll().is_pending(), "echoed, and waiting again");
                let mut reply = [0; 6];
                peer.read_exact(&mut reply).unwrap();
                assert_eq!(reply[..], frame);
                drop(peer);
                wakes.woken(2).await;
                assert!(poll().is_ready(), "EOF ends it");
            })
        });
    }
    // ANCHOR_END: test_wake
}
