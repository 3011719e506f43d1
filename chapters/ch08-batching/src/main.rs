//! Chapter 8: batching. Chapter 7 answers a pipelined burst one frame at a
//! time: a `send` per reply, and the rest of the burst waits in the read
//! buffer until each reply is out. Here every whole frame a read brings is
//! answered by one `send`, straight from the read buffer; only what the
//! socket does not take is copied to a write buffer, to wait for room.
//!
//! That needs buffers bigger than a frame, and so the question of their
//! size. They start at 16 KiB, double while a client keeps more in flight
//! than they hold, stop at 256 KiB (the most a client can make us keep),
//! and go back to a pool whenever they are empty: an idle connection holds
//! no buffer at all. Still level-triggered, still the same state machine.

mod buffer;
mod graceful;

use std::fs::File;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use buffer::{Buf, Pool};
use common::args::Args;
use common::frame::{parse_frame, Parse};
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
/// What a connection is doing, which decides what it waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for requests: for the socket to be readable.
    Reading,
    /// Sending replies: waits for the socket to be writable.
    Writing,
    /// Every reply is sent and our side shut down; waits for the peer's EOF
    /// before closing (see `close_gracefully`).
    Closing,
    /// Finished, cleanly or not: the loop closes it.
    Done,
}

/// Memory per connection: this struct (128 bytes) plus, while bytes
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
        }
    }
}

/// Connections indexed by their file descriptor: the kernel hands out the
/// lowest free numbers, so the table stays about as long as the number of
/// open connections. A `Conn` is small now that its buffers are only
/// borrowed from the pool, so the table holds it inline.
type Connections = Vec<Option<Conn>>;

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
        "ch08",
        "echoes frames from one thread, with epoll(7), many replies per send",
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
    let mut pool = Pool::default();
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
                        if let Some(conn) = slot.as_mut() {
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
                    let Some(conn) = slot.as_mut() else {
                        continue;
                    };
                    let waited_for = conn.state;
                    connection_io(conn, &mut pool);
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
fn after_io(epoll: &Epoll, slot: &mut Option<Conn>, waited_for: State) {
    let Some(conn) = slot.as_mut() else {
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
/// Runs a connection that the kernel reported ready, then gives back the
/// memory of any buffer it has emptied.
fn connection_io(conn: &mut Conn, pool: &mut Pool) {
    match conn.state {
        State::Reading => state_reading(conn, pool),
        State::Writing => state_writing(conn),
        State::Closing => close_gracefully(conn, pool),
        State::Done => {}
    }
    if conn.state == State::Reading {
        finish_if_no_more_requests(conn);
    }
    conn.incoming.release(pool);
    conn.outgoing.release(pool);
}

/// Reads per connection per turn. Level-triggered, we may stop whenever we
/// like: if input remains, the next wait reports the socket again. Without a
/// limit, a client that sends and reads as fast as we echo would keep us in
/// this loop forever, and every other client would wait.
const READS_PER_TURN: usize = 16;

fn state_reading(conn: &mut Conn, pool: &mut Pool) {
    for _ in 0..READS_PER_TURN {
        if !try_fill_buffer(conn, pool) {
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
/// Reads once into the read buffer and answers every whole frame now in
/// it. Returns true while there may be more to read.
fn try_fill_buffer(conn: &mut Conn, pool: &mut Pool) -> bool {
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
        Ok(n) => {
            conn.incoming.commit(n);
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
/// Sends the pending replies, all in one call if the socket takes them.
/// Returns true to try again after a short write; on EAGAIN it stays in
/// `Writing` until the socket is writable again.
fn try_flush_buffer(conn: &mut Conn) -> bool {
    let unsent = conn.outgoing.data();
    // MSG_NOSIGNAL: a peer that has gone away makes this fail with EPIPE
    // instead of raising SIGPIPE. Rust ignores SIGPIPE before `main`
    // anyway; the flag states the intent where it matters.
    match retry_eintr(|| send(conn.fd.as_raw_fd(), unsent, MsgFlags::MSG_NOSIGNAL)) {
        Ok(n) => conn.outgoing.consume(n),
        Err(Errno::EAGAIN) => return false,
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
        assert!(std::mem::size_of::<Option<Conn>>() <= 128);
    }
}
