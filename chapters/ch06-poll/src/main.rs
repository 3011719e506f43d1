//! Chapter 6: one thread serves every connection, with poll(2).
//!
//! A blocked thread per client costs a stack and a context switch per event.
//! Here every socket is non-blocking, each connection keeps what it is doing
//! in a small `Conn` state machine, and a single `poll` call tells the one
//! thread which sockets can make progress right now. Nothing ever waits
//! except `poll` itself, so a slow client can no longer hold up the others.

mod graceful;

use std::fs::File;
use std::net::TcpListener;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
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
use nix::poll::{poll, PollFd, PollFlags};
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
/// The readiness a connection waits for in its current state.
fn interest(state: State) -> PollFlags {
    match state {
        State::Reading | State::Closing => PollFlags::POLLIN,
        State::Writing => PollFlags::POLLOUT,
        State::Done => PollFlags::empty(),
    }
}
// ANCHOR_END: interest

/// How long a stop waits for connections to finish, unless `--grace-ms` says.
const DEFAULT_GRACE_MS: u64 = 1000;

fn main() -> ExitCode {
    common::args::run(serve)
}

fn serve() -> Result<()> {
    let mut args = Args::from_env(
        "ch06",
        "echoes frames to every client from one thread, with poll(2)",
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
    net::announce(&listener)?;

    // ANCHOR: event_loop
    let mut listener = Some(listener);
    let mut conns: Connections = Vec::new();
    let mut ready: Vec<RawFd> = Vec::new();
    // Set while `accept` pauses (see `accept_new_conn`): when it may go on.
    let mut accept_paused: Option<Instant> = None;
    // Set when a stop signal arrives: the moment we give up on stragglers.
    let mut deadline: Option<Instant> = None;
    loop {
        // Rebuilt on every iteration, and the kernel walks all of it on every
        // call: poll's cost grows with the number of connections, busy or not.
        // The signalfd comes first, then the listener unless accepting is
        // paused (see common::signals for why a stop request is just
        // another readable descriptor).
        let mut poll_args = vec![PollFd::new(stop.as_fd(), PollFlags::POLLIN)];
        if let Some(listener) = listener.as_ref().filter(|_| accept_paused.is_none()) {
            poll_args.push(PollFd::new(listener.as_fd(), PollFlags::POLLIN));
        }
        let first_conn = poll_args.len();
        for conn in conns.iter().flatten() {
            // POLLERR and POLLHUP are reported whether asked for or not.
            poll_args.push(PollFd::new(conn.fd.as_fd(), interest(conn.state)));
        }
        // Sleeps until something is ready, or until the stop's deadline or
        // the pause's end, whichever comes first.
        let wake_up = deadline.into_iter().chain(accept_paused).min();
        match poll(&mut poll_args, time_left(wake_up)) {
            Ok(_) => {}
            // With the stop signals blocked this is rare (a debugger, SIGSTOP).
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e).context("poll"),
        }
        // `revents` is None only for flags nix does not know: treat as ready.
        let is_ready = |p: &PollFd| p.any().unwrap_or(true);
        let stop_ready = is_ready(&poll_args[0]);
        let listener_ready = first_conn == 2 && is_ready(&poll_args[1]);
        ready.clear();
        ready.extend(
            poll_args[first_conn..]
                .iter()
                .filter(|p| is_ready(p))
                .map(|p| p.as_fd().as_raw_fd()),
        );
        // The array borrows every connection's fd; release it before changing them.
        drop(poll_args);

        if stop_ready && !stop_requested_again(&stop, deadline) {
            // Stop accepting: closing the listener refuses new clients at once.
            listener = None;
            deadline = Some(Instant::now() + Duration::from_millis(grace_ms));
            let open = conns.iter().flatten().count();
            info!("stopping: letting {} finish", count(open, "connection"));
            for conn in conns.iter_mut().flatten() {
                stop_reading(conn);
            }
        } else if stop_ready {
            break;
        }
        for &fd in &ready {
            let Some(conn) = conns[fd as usize].as_deref_mut() else {
                continue;
            };
            connection_io(conn);
            if conn.state == State::Done {
                // Dropping the Conn closes the socket.
                conns[fd as usize] = None;
            }
        }
        if let Some(listener) = listener.as_ref().filter(|_| listener_ready) {
            accept_paused = accept_new_conn(listener, &mut conns, &mut spare_fd);
        }
        // The pause is over: the next `poll` watches the listener again.
        if accept_paused.is_some_and(|until| Instant::now() >= until) {
            accept_paused = None;
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

// ANCHOR: accept
/// Accepts one connection. If more are waiting, the listener is still
/// readable and the next wait returns at once: level-triggered. Returns
/// when to watch the listener again, if accepting must pause.
fn accept_new_conn(
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
        // lasts. So the loop leaves it out of `poll` for a moment.
        Err(e @ AcceptError::NoMemory(_)) => {
            warn!("accept: {e}");
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
    let slot = fd.as_raw_fd() as usize;
    if conns.len() <= slot {
        conns.resize_with(slot + 1, || None);
    }
    conns[slot] = Some(Conn::new(fd));
    None
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
