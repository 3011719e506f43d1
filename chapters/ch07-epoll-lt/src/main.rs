//! Chapter 7: the chapter 6 server on epoll(7), level-triggered.
//!
//! `poll` takes the whole list of descriptors on every call and the kernel
//! scans all of it, so each wakeup costs as much as the number of connections.
//! epoll keeps the interest list in the kernel: we add a socket once, change
//! it only when what the connection waits for changes, and each wait returns
//! just the ready ones. The `Conn` state machine does not change at all.

mod graceful;

use std::fs::File;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use common::args::Args;
use common::frame::{parse_frame, Parse, MAX_FRAME};
use common::log::count;
use common::net::{self, accept_nonblocking, retry_eintr, AcceptError, ACCEPT_PAUSE};
use common::signals::stop_signalfd;
use common::time::time_left;
use common::{debug, error, info, warn};
use graceful::{close_gracefully, finish_if_no_more_requests, stop_reading, stop_requested_again};
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::socket::{send, MsgFlags};
use nix::unistd::read;

// ANCHOR: conn
// Identical in chapters 6 and 7 (book/check.sh checks it).
/// What a connection is doing, which decides what it waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for requests: for the socket to be readable.
    Reading,
    /// Sending a reply: waits for the socket to be writable.
    Writing,
    /// Every reply is sent and our side shut down; waits for the peer's EOF
    /// before closing (see `close_gracefully`).
    Closing,
    /// Finished, cleanly or not: the loop closes it.
    Done,
}

struct Conn {
    fd: OwnedFd,
    state: State,
    /// Received bytes not yet answered: `incoming[..incoming_len]`.
    incoming: [u8; MAX_FRAME],
    incoming_len: usize,
    /// The reply being sent: `reply[reply_sent..reply_len]` has yet to go.
    reply: [u8; MAX_FRAME],
    reply_len: usize,
    reply_sent: usize,
    /// How many more bytes we will read: no limit while serving; once the
    /// requests are over (a bad frame, a stop), what had arrived by then.
    read_limit: Option<usize>,
}
// ANCHOR_END: conn

// ANCHOR: conn_new
// Identical in chapters 6 and 7 (book/check.sh checks it).
impl Conn {
    /// Boxed: two 4 KiB buffers are too big to move around or to store
    /// inline in a table with a slot for every possible descriptor.
    fn new(fd: OwnedFd) -> Box<Conn> {
        Box::new(Conn {
            fd,
            state: State::Reading,
            incoming: [0; MAX_FRAME],
            incoming_len: 0,
            reply: [0; MAX_FRAME],
            reply_len: 0,
            reply_sent: 0,
            read_limit: None,
        })
    }
}
// ANCHOR_END: conn_new

/// Connections indexed by their file descriptor: the kernel hands out the
/// lowest free numbers, so the table stays about as long as the number of
/// open connections.
type Connections = Vec<Option<Box<Conn>>>;

// ANCHOR: interest
// Identical in chapters 7 and 8 (book/check.sh checks it).
/// The readiness a connection waits for in its current state.
fn interest(state: State) -> EpollFlags {
    match state {
        State::Reading | State::Closing => EpollFlags::EPOLLIN,
        State::Writing => EpollFlags::EPOLLOUT,
        State::Done => EpollFlags::empty(),
    }
}

/// Tells epoll about a change of state: the one extra system call a state
/// change costs, where `poll` paid for every connection on every wait.
/// A connection that is `Done` needs no call: closing its socket takes it
/// off the interest list (see the chapter for when that is not so).
fn update_interest(epoll: &Epoll, conn: &mut Conn) {
    if conn.state == State::Done {
        return;
    }
    let mut event = EpollEvent::new(interest(conn.state), token(&conn.fd));
    if let Err(e) = epoll.modify(&conn.fd, &mut event) {
        error!("fd {}: epoll_ctl: {e}", conn.fd.as_raw_fd());
        conn.state = State::Done;
    }
}
// ANCHOR_END: interest

// ANCHOR: token_fn
// Identical in chapters 7 to 9 (book/check.sh checks it).
/// Each event carries a 64-bit tag chosen at registration: for a connection,
/// its descriptor number, which is also its index in `conns`.
fn token(fd: &OwnedFd) -> u64 {
    fd.as_raw_fd() as u64
}
// ANCHOR_END: token_fn
/// Tags that no descriptor number can take.
const STOP: u64 = u64::MAX;
const LISTENER: u64 = u64::MAX - 1;

/// How long a stop waits for connections to finish, unless `--grace-ms` says.
const DEFAULT_GRACE_MS: u64 = 1000;

fn main() -> ExitCode {
    common::args::run(serve)
}

fn serve() -> Result<()> {
    let mut args = Args::from_env(
        "ch07",
        "echoes frames to every client from one thread, with epoll(7)",
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
    let mut spare_fd = Some(File::open("/dev/null").context("open the spare fd")?);

    // ANCHOR: epoll_setup
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).context("epoll_create1")?;
    // The signalfd is just another readable descriptor (see common::signals).
    epoll.add(&stop, EpollEvent::new(EpollFlags::EPOLLIN, STOP))?;
    epoll.add(&listener, EpollEvent::new(EpollFlags::EPOLLIN, LISTENER))?;
    let mut events = vec![EpollEvent::empty(); 256];
    // ANCHOR_END: epoll_setup
    net::announce(&listener)?;

    // ANCHOR: event_loop
    let mut listener = Some(listener);
    let mut conns: Connections = Vec::new();
    // Set while `accept` pauses (see `accept_new_conn`): when it may go on.
    let mut accept_paused: Option<Instant> = None;
    // Set when a stop signal arrives: the moment we give up on stragglers.
    let mut deadline: Option<Instant> = None;
    'event_loop: loop {
        // Sleeps until something is ready, or until the stop's deadline or
        // the pause's end, whichever comes first.
        let wake_up = deadline.into_iter().chain(accept_paused).min();
        // Returns only ready descriptors, up to `events.len()` at a time; any
        // others are still ready next time (level-triggered).
        let n = match epoll.wait(&mut events, time_left(wake_up)) {
            Ok(n) => n,
            // With the stop signals blocked this is rare (a debugger, SIGSTOP).
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e).context("epoll_wait"),
        };
        for event in &events[..n] {
            match event.data() {
                STOP if stop_requested_again(&stop, deadline) => break 'event_loop,
                STOP => {
                    // Stop accepting: closing the listener refuses new
                    // clients at once, and takes it off the interest list.
                    listener = None;
                    deadline = Some(Instant::now() + Duration::from_millis(grace_ms));
                    let open = conns.iter().flatten().count();
                    info!("stopping: letting {} finish", count(open, "connection"));
                    for slot in conns.iter_mut() {
                        if let Some(conn) = slot.as_deref_mut() {
                            let waited_for = conn.state;
                            stop_reading(conn);
                            after_io(&epoll, slot, waited_for);
                        }
                    }
                }
                LISTENER => {
                    if let Some(listener) = &listener {
                        accept_paused =
                            accept_new_conn(&epoll, listener, &mut conns, &mut spare_fd);
                    }
                }
                fd => {
                    let slot = &mut conns[fd as usize];
                    let Some(conn) = slot.as_deref_mut() else {
                        continue;
                    };
                    let waited_for = conn.state;
                    connection_io(conn);
                    after_io(&epoll, slot, waited_for);
                }
            }
        }
        // The pause is over: watch the listener again.
        if accept_paused.is_some_and(|until| Instant::now() >= until) {
            accept_paused = None;
            if let Some(listener) = &listener {
                watch_listener(&epoll, listener, true);
            }
        }
        if let Some(deadline) = deadline {
            // Returning drops `conns`, closing every connection still open.
            if conns.iter().all(Option::is_none) || Instant::now() >= deadline {
                break;
            }
        }
    }
    // ANCHOR_END: event_loop
    let late = conns.iter().flatten().count();
    if late > 0 {
        info!("closing {} that did not finish", count(late, "connection"));
    }
    Ok(())
}

/// After a connection's turn: tells epoll if what it waits for changed,
/// and closes it if it is done (dropping the `Conn` closes the socket).
fn after_io(epoll: &Epoll, slot: &mut Option<Box<Conn>>, waited_for: State) {
    let Some(conn) = slot.as_deref_mut() else {
        return;
    };
    if interest(conn.state) != interest(waited_for) {
        update_interest(epoll, conn);
    }
    if conn.state == State::Done {
        *slot = None;
    }
}

// ANCHOR: accept
// Identical in chapters 7 and 8 (book/check.sh checks it).
/// Accepts one connection. If more are waiting, the listener is still
/// readable and the next wait returns at once: level-triggered. Returns
/// when to watch the listener again, if accepting must pause.
fn accept_new_conn(
    epoll: &Epoll,
    listener: &TcpListener,
    conns: &mut Connections,
    spare_fd: &mut Option<File>,
) -> Option<Instant> {
    let fd = match accept_nonblocking(listener) {
        Ok(fd) => fd,
        // Nobody after all, or one client failed: the next wait tells.
        Err(AcceptError::Empty | AcceptError::Retry(_)) => return None,
        // The spare descriptor serves the client, or turns it away (`None`).
        Err(AcceptError::NoFds(_)) => accept_with_spare_fd(listener, spare_fd)?,
        // The client stays queued and the listener readable: watched, it
        // would end every wait at once, a busy loop while the shortage
        // lasts. So we stop watching it for a moment.
        Err(e @ AcceptError::NoMemory(_)) => {
            warn!("accept: {e}");
            watch_listener(epoll, listener, false);
            return Some(Instant::now() + ACCEPT_PAUSE);
        }
        Err(e @ AcceptError::Fatal(_)) => {
            error!("accept: {e}");
            return None;
        }
    };
    // We write each reply as soon as it is whole: see chapter 4.
    if let Err(e) = net::set_nodelay(&fd) {
        error!("setsockopt(TCP_NODELAY): {e}");
    }
    let event = EpollEvent::new(interest(State::Reading), token(&fd));
    if let Err(e) = epoll.add(&fd, event) {
        // Dropping `fd` closes the connection we cannot watch.
        error!("epoll_ctl: {e}");
        return None;
    }
    let slot = fd.as_raw_fd() as usize;
    if conns.len() <= slot {
        conns.resize_with(slot + 1, || None);
    }
    conns[slot] = Some(Conn::new(fd));
    None
}

/// Watches the listener for clients, or stops: the interest list keeps
/// it, with an empty interest while accepting pauses.
fn watch_listener(epoll: &Epoll, listener: &TcpListener, watch: bool) {
    let interest = if watch {
        EpollFlags::EPOLLIN
    } else {
        EpollFlags::empty()
    };
    if let Err(e) = epoll.modify(listener, &mut EpollEvent::new(interest, LISTENER)) {
        error!("epoll_ctl: {e}");
    }
}
// ANCHOR_END: accept

// ANCHOR: emfile
// Identical in chapters 6 to 8 (book/check.sh checks it).
/// Out of file descriptors, `accept` fails and leaves the connection in the
/// backlog, so the listener stays readable and the loop would spin at 100%
/// CPU. We keep one descriptor in reserve for this moment, as chapter 5
/// does: give it up, accept the client into the number it frees, and take
/// the spare back. If the spare finds no room, the client is turned away,
/// closed at once (it sees a clean close instead of waiting forever). If it
/// does, the shortage was not ours alone (the system's table, ENFILE, where
/// another process has made room since), and the client is served: the
/// client to serve is what this returns.
fn accept_with_spare_fd(listener: &TcpListener, spare_fd: &mut Option<File>) -> Option<OwnedFd> {
    drop(spare_fd.take());
    let accepted = accept_nonblocking(listener);
    *spare_fd = File::open("/dev/null").ok();
    match accepted {
        Ok(fd) if spare_fd.is_some() => Some(fd),
        Ok(fd) => {
            drop(fd);
            warn!("out of file descriptors: turned a connection away");
            *spare_fd = File::open("/dev/null").ok();
            None
        }
        Err(_) => None,
    }
}
// ANCHOR_END: emfile

// ANCHOR: state_machine
// Identical in chapters 6 and 7 (book/check.sh checks it).
/// Runs a connection that the kernel reported ready.
fn connection_io(conn: &mut Conn) {
    match conn.state {
        State::Reading => state_reading(conn),
        State::Writing => {
            state_writing(conn);
            // Reply sent: answer the frames that arrived in the same read
            // as the one just answered before waiting for more input. The
            // client may be waiting for exactly those replies and send
            // nothing more until it gets them.
            if conn.state == State::Reading {
                while try_one_request(conn) {}
            }
        }
        State::Closing => close_gracefully(conn),
        State::Done => {}
    }
    if conn.state == State::Reading {
        finish_if_no_more_requests(conn);
    }
}

/// Reads per connection per turn. Level-triggered, we may stop whenever we
/// like: if input remains, the next wait reports the socket again. Without a
/// limit, a client that sends and reads as fast as we echo would keep us in
/// this loop forever, and every other client would wait.
const READS_PER_TURN: usize = 16;

fn state_reading(conn: &mut Conn) {
    for _ in 0..READS_PER_TURN {
        if !try_fill_buffer(conn) {
            break;
        }
    }
}

// ANCHOR: state_writing
// Identical in chapters 6 to 12, 16 and 17 (book/check.sh checks it).
fn state_writing(conn: &mut Conn) {
    while try_flush_buffer(conn) {}
}
// ANCHOR_END: state_writing
// ANCHOR_END: state_machine

// ANCHOR: read
// Identical in chapters 6 and 7 (book/check.sh checks it).
/// Reads once into the free end of the read buffer and answers every whole
/// frame now in it. Returns true while there may be more to read.
fn try_fill_buffer(conn: &mut Conn) -> bool {
    // While `Reading` the buffer never holds a whole frame (we answer those
    // at once), so it has room: a read of zero bytes below really means EOF.
    let room = conn.incoming.len() - conn.incoming_len;
    let room = conn.read_limit.map_or(room, |limit| room.min(limit));
    if room == 0 {
        return false;
    }
    let free = &mut conn.incoming[conn.incoming_len..][..room];
    match retry_eintr(|| read(&conn.fd, free)) {
        Ok(0) => {
            // EOF. Nothing is lost by closing now: we only read in `Reading`,
            // when every frame received so far has been answered and sent.
            if conn.incoming_len > 0 {
                debug!("fd {}: EOF in the middle of a frame", conn.fd.as_raw_fd());
            }
            conn.state = State::Done;
            return false;
        }
        Ok(n) => {
            conn.incoming_len += n;
            if let Some(limit) = &mut conn.read_limit {
                *limit -= n;
            }
        }
        Err(Errno::EAGAIN) => return false,
        Err(e) => {
            debug!("fd {}: read: {e}", conn.fd.as_raw_fd());
            conn.state = State::Done;
            return false;
        }
    }
    // Pipelining: one read may bring several frames.
    while try_one_request(conn) {}
    conn.state == State::Reading
}
// ANCHOR_END: read

// ANCHOR: parse
// Identical in chapters 6 and 7 (book/check.sh checks it).
/// Answers the frame at the start of the read buffer, if it is whole.
/// Returns true if the reply went out and the next frame can be tried.
fn try_one_request(conn: &mut Conn) -> bool {
    let len = match parse_frame(&conn.incoming[..conn.incoming_len]) {
        Parse::Incomplete => return false,
        Parse::TooLong { announced } => {
            let fd = conn.fd.as_raw_fd();
            debug!("fd {fd}: frame of {announced} bytes is too long: closing");
            // Every frame before it was answered; nothing after it can be.
            conn.incoming_len = 0;
            conn.read_limit = Some(0);
            return false;
        }
        Parse::Frame { len } => len,
    };
    // The echo reply is the request frame itself.
    conn.reply[..len].copy_from_slice(&conn.incoming[..len]);
    conn.reply_len = len;
    conn.reply_sent = 0;
    // Shift what follows to the front. Simple, but it copies the rest of the
    // buffer once per frame; chapter 8 does better.
    conn.incoming.copy_within(len..conn.incoming_len, 0);
    conn.incoming_len -= len;

    conn.state = State::Writing;
    // Send now rather than wait to be told the socket is writable: it
    // usually is, and this saves a trip around the loop.
    state_writing(conn);
    conn.state == State::Reading
}
// ANCHOR_END: parse

// ANCHOR: write
// Identical in chapters 6 and 7 (book/check.sh checks it).
/// Sends what is left of the reply. Returns true to try again after a short
/// write; on EAGAIN it stays in `Writing` until the socket is writable again.
fn try_flush_buffer(conn: &mut Conn) -> bool {
    let unsent = &conn.reply[conn.reply_sent..conn.reply_len];
    // MSG_NOSIGNAL: a peer that has gone away makes this fail with EPIPE
    // instead of raising SIGPIPE. Rust ignores SIGPIPE before `main`
    // anyway; the flag states the intent where it matters.
    match retry_eintr(|| send(conn.fd.as_raw_fd(), unsent, MsgFlags::MSG_NOSIGNAL)) {
        Ok(n) => conn.reply_sent += n,
        Err(Errno::EAGAIN) => return false,
        Err(e) => {
            // EPIPE or ECONNRESET: the peer is gone, which is its right.
            debug!("fd {}: send: {e}", conn.fd.as_raw_fd());
            conn.state = State::Done;
            return false;
        }
    }
    if conn.reply_sent < conn.reply_len {
        // A short write: the socket's send buffer filled up. The next
        // attempt sends more or reports EAGAIN.
        return true;
    }
    conn.state = State::Reading;
    false
}
// ANCHOR_END: write
