//! Chapter 10: the chapter 9 server, split into a small reactor and handlers.
//!
//! Chapter 9's loop knew everything: the listener, the signal, what a
//! connection does with an edge. Here the loop moves to `reactor.rs` and
//! knows none of it: it maps tokens to handlers and calls the one an event
//! names. The server becomes three handlers (a listener, a connection, a
//! stop signal), and its behaviour is chapter 9's, guarantee for guarantee.

#[path = "../../ch08-batching/src/buffer.rs"]
mod buffer; // chapter 8's buffers and pool, the same file
mod graceful;
mod reactor;

use std::fs::File;
use std::net::TcpListener;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use buffer::{Buf, Pool};
use common::args::Args;
use common::frame::{parse_frame, Parse};
use common::log::count;
use common::net::{self, accept_nonblocking, retry_eintr, AcceptError};
use common::signals::stop_signalfd;
use common::{debug, error, info, warn};
use graceful::{close_gracefully, finish_if_no_more_requests, stop_reading};
use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;
use nix::sys::socket::{send, MsgFlags};
use nix::unistd::read;
use reactor::{Context, Handler, Interest, Next, Reactor, Ready};

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
    /// Finished, cleanly or not: the loop closes it.
    Done,
}

/// Memory per connection: this struct (136 bytes, boxed as a handler) plus, while bytes
/// are in them, a read and a write buffer of 16 to 256 KiB each (see
/// `buffer.rs`): at most 512 KiB, whatever the client does, and nothing
/// but the struct while it is quiet.
struct Conn {
    fd: OwnedFd,
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
}
// ANCHOR_END: conn

impl Conn {
    fn new(fd: OwnedFd) -> Conn {
        Conn {
            fd,
            state: State::Reading,
            incoming: Buf::default(),
            outgoing: Buf::default(),
            read_limit: None,
            // Registering reports the socket's current state as a first edge
            // (a new socket is writable), so we start out knowing nothing.
            readable: false,
            writable: false,
        }
    }
}

// ANCHOR: conn_handler
// Identical in chapters 10, 11 and 17 (book/check.sh checks it).
impl AsFd for Conn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Remembers what an edge said. Errors and hang-ups count for both
/// directions: the next read or send reports them. After `Next::Again` the
/// reactor calls with `Ready::EMPTY`, or with the edges that came meanwhile.
fn remember_edge(conn: &mut Conn, ready: Ready) {
    if ready.is_readable() || ready.is_read_closed() || ready.is_error() {
        conn.readable = true;
    }
    if ready.is_writable() || ready.is_write_closed() || ready.is_error() {
        conn.writable = true;
    }
}
// ANCHOR_END: conn_handler

/// How long a stop waits for connections to finish, unless `--grace-ms` says.
const DEFAULT_GRACE_MS: u64 = 1000;

fn main() -> ExitCode {
    common::args::run(serve)
}

fn serve() -> Result<()> {
    let mut args = Args::from_env(
        "ch10",
        "echoes frames from a reactor: a registry of handlers",
    );
    let grace_ms = args.option(
        "grace-ms",
        "MS",
        "on SIGINT/SIGTERM, how long to let connections finish",
        DEFAULT_GRACE_MS,
    );
    let addr = args.finish()?;
    net::raise_fd_limit()?;
    // First, before any thread exists: this blocks SIGINT and SIGTERM.
    let stop = stop_signalfd().context("signalfd")?;
    let listener = net::listen(addr)?;
    // A listener that is not ready must make accept fail with EAGAIN, not wait.
    net::set_nonblocking(&listener)?;
    let spare_fd = Some(File::open("/dev/null").context("open the spare fd")?);

    // ANCHOR: event_loop
    // The state every handler shares is the buffer pool.
    let mut reactor = Reactor::new(Pool::default()).context("epoll_create1")?;
    let registry = reactor.registry();
    registry
        .add(Box::new(StopSignal(stop)), Interest::READABLE)
        .context("register the signalfd")?;
    // Registering reports the listener's current state as a first edge, so
    // a client that connects before this waits in the backlog, not forever.
    net::announce(&listener)?;
    let listener = Listener { listener, spare_fd };
    registry
        .add(Box::new(listener), Interest::READABLE)
        .context("register the listener")?;
    let late = reactor
        .run(Duration::from_millis(grace_ms))
        .context("epoll_wait")?;
    // ANCHOR_END: event_loop
    if late > 0 {
        info!("closing {} that did not finish", count(late, "connection"));
    }
    Ok(())
}

// ANCHOR: stop
// Identical in chapters 10 and 11 (book/check.sh checks it).
/// Stops the reactor when SIGINT or SIGTERM arrives (see `common::signals`).
struct StopSignal(SignalFd);

impl AsFd for StopSignal {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl Handler<Pool> for StopSignal {
    fn ready(&mut self, _: Ready, cx: &mut Context<'_, Pool>) -> Next {
        match self.0.read_signal() {
            Ok(Some(info)) => {
                let name = Signal::try_from(info.ssi_signo as i32).map_or("signal", Signal::as_str);
                info!("{name}: stopping");
            }
            // A spurious event: no signal is pending after all.
            Ok(None) => return Next::Wait,
            Err(e) => error!("signalfd: {e}: stopping"),
        }
        cx.stop();
        Next::Wait
    }

    /// Stays through a stop, so that a second signal stops at once; the
    /// stop does not wait for it.
    fn stop(&mut self, _: &mut Context<'_, Pool>) -> Next {
        Next::Wait
    }

    fn delays_stop(&self) -> bool {
        false
    }
}

// ANCHOR_END: stop

// ANCHOR: take_turn
impl Handler<Pool> for Conn {
    /// Remembers what the edge said, then does what the connection's
    /// readiness allows. Returning `Remove` closes it: the reactor drops it.
    fn ready(&mut self, ready: Ready, cx: &mut Context<'_, Pool>) -> Next {
        remember_edge(self, ready);
        take_turn(self, cx.shared)
    }

    // ANCHOR: conn_stop
    // Identical in chapters 10 and 11 (book/check.sh checks it).
    fn stop(&mut self, cx: &mut Context<'_, Pool>) -> Next {
        stop_reading(self);
        take_turn(self, cx.shared)
    }
    // ANCHOR_END: conn_stop
}

// ANCHOR: take_turn_fn
// Identical in chapters 10 and 11 (book/check.sh checks it).
/// Lets a connection do what its readiness allows, and tells the reactor
/// what next: close it, or give it another turn if it stopped before
/// running out of input (chapter 9's `unfinished` list, now the reactor's).
fn take_turn(conn: &mut Conn, pool: &mut Pool) -> Next {
    match connection_io(conn, pool) {
        _ if conn.state == State::Done => Next::Remove,
        Turn::Unfinished => Next::Again,
        Turn::Idle => Next::Wait,
    }
}
// ANCHOR_END: take_turn_fn
// ANCHOR_END: take_turn

// ANCHOR: accept
/// The listener's edge is used up but clients may still be waiting (the
/// kernel is short of memory, or no descriptor is left even to turn them
/// away with): how long before `accept` is tried again. Not at once: such a
/// shortage can last, and trying at once would be a busy loop.
const ACCEPT_PAUSE: Duration = Duration::from_millis(10);

// ANCHOR: listener
// Identical in chapters 10, 11 and 17 (book/check.sh checks it).
/// Accepts connections and registers a [`Conn`] handler for each.
struct Listener {
    listener: TcpListener,
    /// A descriptor kept in reserve for EMFILE (see `accept_with_spare_fd`).
    spare_fd: Option<File>,
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }
}
// ANCHOR_END: listener

impl Handler<Pool> for Listener {
    /// Accepts every pending connection. The listener's edge came once for
    /// all of them: stopping before EAGAIN would strand the rest in the
    /// backlog until yet another client arrives.
    fn ready(&mut self, _: Ready, cx: &mut Context<'_, Pool>) -> Next {
        let later = || Next::At(Instant::now() + ACCEPT_PAUSE);
        loop {
            let fd = match accept_nonblocking(&self.listener) {
                Ok(fd) => fd,
                Err(AcceptError::Empty) => return Next::Wait,
                // One client failed: on to the next.
                Err(AcceptError::Retry(_)) => continue,
                Err(AcceptError::NoFds(_)) => {
                    match accept_with_spare_fd(&self.listener, &mut self.spare_fd) {
                        Spare::Room(fd) => fd,
                        Spare::TurnedAway => continue,
                        Spare::NobodyWaiting => return Next::Wait,
                        Spare::Later => return later(),
                    }
                }
                // The others wait: the reactor calls again soon.
                Err(e @ AcceptError::NoMemory(_)) => {
                    warn!("accept: {e}");
                    return later();
                }
                Err(e @ AcceptError::Fatal(_)) => {
                    error!("accept: {e}");
                    return Next::Wait;
                }
            };
            // We write each reply as soon as it is whole: see chapter 4.
            if let Err(e) = net::set_nodelay(&fd) {
                error!("setsockopt(TCP_NODELAY): {e}");
            }
            // Registered once, for good: both directions.
            let interest = Interest::READABLE | Interest::WRITABLE;
            if let Err(e) = cx.registry.add(Box::new(Conn::new(fd)), interest) {
                // `add` dropped the connection we cannot watch, closing it.
                error!("epoll_ctl: {e}");
            }
        }
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
// Identical in chapters 9 to 11 and 16 (book/check.sh checks it).
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
/// `take_turn`).
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
    use super::*;

    #[test]
    fn a_conn_is_small_without_its_buffers() {
        // The memory per connection stated at `Conn` counts on this.
        assert!(std::mem::size_of::<Conn>() <= 136);
    }
}
