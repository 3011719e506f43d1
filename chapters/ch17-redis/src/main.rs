//! A real protocol: the reactor with timers (chapter 11) speaks RESP, the
//! protocol of Redis, well enough for `redis-cli` and `redis-benchmark`.
//!
//! The loop is chapter 11's. What changed is what a connection does with
//! the bytes it reads: instead of echoing frames, it parses requests
//! (`resp.rs`), runs them against a keyspace whose keys may expire
//! (`db.rs`, `commands.rs`), and sends the replies to every request of a
//! read with one `send`, as chapter 8 taught. A timer of the reactor's
//! samples the keys that have a deadline and deletes the expired ones.

#[path = "../../ch08-batching/src/buffer.rs"]
mod buffer; // chapter 8's buffers and pool, the same file
mod commands;
mod db;
mod graceful;
#[path = "../../ch11-timers/src/idle.rs"]
mod idle; // chapter 11's idle list, the same file
mod reactor;
mod resp;

use std::fs::File;
use std::mem;
use std::net::TcpListener;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use buffer::{Buf, Pool};
use commands::{Outcome, Session, MAX_REPLIES};
use common::args::Args;
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
use reactor::{Context, Handler, Idle, Interest, Next, Reactor, Ready};
use resp::{Parse, Progress};

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

/// Memory per connection: this struct (200 bytes, boxed as a handler) plus, while bytes
/// are in them, a read and a write buffer of 16 to 256 KiB each (see
/// `buffer.rs`): at most 512 KiB, whatever the client does, and nothing
/// but the struct while it is quiet. (A name given with CLIENT SETNAME
/// adds its length.)
struct Conn {
    fd: OwnedFd,
    state: State,
    /// Received bytes not yet answered.
    incoming: Buf,
    /// How far the request at the front of `incoming` has been parsed.
    progress: Progress,
    /// What CLIENT and HELLO know of the connection.
    session: Session,
    /// Replies not yet sent.
    outgoing: Buf,
    /// How many more bytes we will read: no limit while serving; once the
    /// requests are over (a protocol error, QUIT, a stop), what had arrived by then.
    read_limit: Option<usize>,
    /// Edges seen and not yet used up: the socket may have input to read, or
    /// room to write. The kernel will not say so again.
    readable: bool,
    writable: bool,
    /// Replies went out during this turn: the connection was active.
    replied: bool,
}
// ANCHOR_END: conn

impl Conn {
    fn new(fd: OwnedFd, id: u64) -> Conn {
        Conn {
            fd,
            state: State::Reading,
            incoming: Buf::default(),
            progress: Progress::default(),
            session: Session::new(id),
            outgoing: Buf::default(),
            read_limit: None,
            // Registering reports the socket's current state as a first edge
            // (a new socket is writable), so we start out knowing nothing.
            readable: false,
            writable: false,
            replied: false,
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

/// How long a connection may stay idle when `--idle-timeout-ms` is not given.
const DEFAULT_IDLE_TIMEOUT_MS: u64 = 60_000;

/// How long a stop waits for connections to finish, unless `--grace-ms` says.
const DEFAULT_GRACE_MS: u64 = 1000;

/// How many times a second the active expiry runs, unless `--hz` says: the
/// default of Redis's `hz`, which sets how often its timer (`serverCron`) runs.
const DEFAULT_HZ: u64 = 10;

// ANCHOR: server
/// What every handler shares: the buffer pool, and now the keyspace.
struct Server {
    pool: Pool,
    db: db::Db,
    /// The arguments of the request being run, and the replies to a read
    /// before they are sent: one of each for all the connections, reused.
    args: resp::Args,
    replies: Vec<u8>,
    /// For CLIENT ID: Redis numbers its connections from 1.
    last_id: u64,
}
// ANCHOR_END: server

fn main() -> ExitCode {
    common::args::run(serve)
}

fn serve() -> Result<()> {
    let mut args = Args::from_env(
        "ch17",
        "serves redis-cli and redis-benchmark: RESP2, strings, expiry",
    );
    let idle_ms = args.option_in(
        "idle-timeout-ms",
        "MS",
        "close a connection that sends no complete request, or reads no reply, for this long",
        DEFAULT_IDLE_TIMEOUT_MS,
        1..,
    );
    let grace_ms = args.option(
        "grace-ms",
        "MS",
        "on SIGINT/SIGTERM, how long to let connections finish",
        DEFAULT_GRACE_MS,
    );
    let hz = args.option(
        "hz",
        "N",
        "how many times a second to delete expired keys nobody asks for; 0: only when asked",
        DEFAULT_HZ,
    );
    let addr = args.finish()?;
    let idle_timeout = Duration::from_millis(idle_ms);
    net::raise_fd_limit()?;
    // First, before any thread exists: this blocks SIGINT and SIGTERM.
    let stop = stop_signalfd().context("signalfd")?;
    let listener = net::listen(addr)?;
    // A listener that is not ready must make accept fail with EAGAIN, not wait.
    net::set_nonblocking(&listener)?;
    let spare_fd = Some(File::open("/dev/null").context("open the spare fd")?);

    // ANCHOR: event_loop
    let server = Server {
        pool: Pool::default(),
        db: db::Db::default(),
        args: resp::Args::default(),
        replies: Vec::new(),
        last_id: 0,
    };
    let mut reactor = Reactor::new(server, idle_timeout).context("epoll_create1")?;
    info!("closing connections idle for {idle_ms} ms");
    // ANCHOR: cron
    if hz > 0 {
        let period = Duration::from_secs(1) / u32::try_from(hz.min(1000)).unwrap_or(1000);
        reactor.every(period, |server: &mut Server| {
            let cycle = server.db.expire_cycle();
            if cycle.expired > 0 {
                debug!("{} expired", count(cycle.expired, "key"));
            }
        });
    }
    // ANCHOR_END: cron
    let registry = reactor.registry();
    registry
        .add(Box::new(StopSignal(stop)), Interest::READABLE, Idle::Keep)
        .context("register the signalfd")?;
    // Registering reports the listener's current state as a first edge, so
    // a client that connects before this waits in the backlog, not forever.
    net::announce(&listener)?;
    let listener = Listener { listener, spare_fd };
    registry
        .add(Box::new(listener), Interest::READABLE, Idle::Keep)
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
/// Stops the reactor when SIGINT or SIGTERM arrives (see `common::signals`).
struct StopSignal(SignalFd);

impl AsFd for StopSignal {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl Handler<Server> for StopSignal {
    fn ready(&mut self, _: Ready, cx: &mut Context<'_, Server>) -> Next {
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
    fn stop(&mut self, _: &mut Context<'_, Server>) -> Next {
        Next::Wait
    }

    fn delays_stop(&self) -> bool {
        false
    }
}

// ANCHOR_END: stop

// ANCHOR: take_turn
impl Handler<Server> for Conn {
    /// Remembers what the edge said, then does what the connection's
    /// readiness allows. Returning `Remove` closes it: the reactor drops it.
    fn ready(&mut self, ready: Ready, cx: &mut Context<'_, Server>) -> Next {
        remember_edge(self, ready);
        let next = take_turn(self, cx.shared);
        // ANCHOR: activity
        // Activity is a reply going out, not an event or a byte coming in: a
        // client that dribbles in a request slower than the timeout, or sends
        // requests and never reads the answers (they pile up until backpressure
        // stops us reading), is closed like a silent one. Each request must
        // arrive whole within the timeout; at 256 KiB at most, no hardship.
        if mem::take(&mut self.replied) {
            cx.touch();
        }
        // ANCHOR_END: activity
        next
    }

    // ANCHOR: conn_stop
    fn stop(&mut self, cx: &mut Context<'_, Server>) -> Next {
        stop_reading(self);
        take_turn(self, cx.shared)
    }
    // ANCHOR_END: conn_stop

    fn idle(&mut self, timeout: Duration) {
        let why = if !self.outgoing.is_empty() {
            " with replies it does not read"
        } else if !self.incoming.is_empty() {
            " in the middle of a request"
        } else {
            ""
        };
        let ms = timeout.as_millis();
        info!("fd {}: idle for {ms} ms{why}: closing", self.fd.as_raw_fd());
    }
}

// ANCHOR: take_turn_fn
/// Lets a connection do what its readiness allows, and tells the reactor
/// what next: close it, or give it another turn if it stopped before
/// running out of input (chapter 9's `unfinished` list, now the reactor's).
fn take_turn(conn: &mut Conn, server: &mut Server) -> Next {
    match connection_io(conn, server) {
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

impl Handler<Server> for Listener {
    /// Accepts every pending connection. The listener's edge came once for
    /// all of them: stopping before EAGAIN would strand the rest in the
    /// backlog until yet another client arrives.
    fn ready(&mut self, _: Ready, cx: &mut Context<'_, Server>) -> Next {
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
            cx.shared.last_id += 1;
            let conn = Box::new(Conn::new(fd, cx.shared.last_id));
            if let Err(e) = cx.registry.add(conn, interest, Idle::Close) {
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
fn connection_io(conn: &mut Conn, server: &mut Server) -> Turn {
    let turn = loop {
        let before = conn.state;
        let turn = match conn.state {
            State::Reading => state_reading(conn, server),
            State::Writing => {
                state_writing(conn);
                // Requests that waited for room in the write buffer.
                if conn.state == State::Reading {
                    answer_requests(conn, server);
                }
                Turn::Idle
            }
            State::Closing => close_gracefully(conn, &mut server.pool),
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
    conn.incoming.release(&mut server.pool);
    conn.outgoing.release(&mut server.pool);
    turn
}

/// Reads per connection per turn. Without a limit, a client that sends and
/// reads as fast as we echo never lets a read come back empty, and we
/// would serve it forever. Unlike level-triggered, stopping early is not
/// free: the connection must be given another turn without an edge (see
/// `take_turn`).
const READS_PER_TURN: usize = 16;

fn state_reading(conn: &mut Conn, server: &mut Server) -> Turn {
    for _ in 0..READS_PER_TURN {
        if !try_fill_buffer(conn, server) {
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
/// Reads once into the read buffer and answers every whole request now in
/// it. Returns true while there may be more to read.
fn try_fill_buffer(conn: &mut Conn, server: &mut Server) -> bool {
    if !conn.readable {
        return false;
    }
    // While `Reading` the buffer holds at most part of one request (we
    // answer whole ones at once, and the parser refuses one that could not
    // fit), so it has room: a read of zero bytes means EOF.
    let free = conn.incoming.unfilled(&mut server.pool);
    let room = conn
        .read_limit
        .map_or(free.len(), |limit| free.len().min(limit));
    if room == 0 {
        return false;
    }
    match retry_eintr(|| read(&conn.fd, &mut free[..room])) {
        Ok(0) => {
            // EOF. Nothing is lost by closing now: we only read in `Reading`,
            // when every request received so far has been answered and sent.
            if !conn.incoming.is_empty() {
                debug!("fd {}: EOF in the middle of a request", conn.fd.as_raw_fd());
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
    // Pipelining: one read may bring many requests, and they are answered
    // together.
    answer_requests(conn, server);
    conn.state == State::Reading
}
// ANCHOR_END: read

// ANCHOR: parse
/// Answers every whole request in the read buffer, in order, and sends all
/// the replies with one `send`: what the socket does not take waits in the
/// write buffer (`Writing`). Requests whose replies would not fit behind
/// those wait in the read buffer, and are answered once the write buffer
/// has been sent (see `connection_io`).
fn answer_requests(conn: &mut Conn, server: &mut Server) {
    loop {
        let waiting = run_requests(conn, server);
        send_replies(conn, server);
        // All sent at once, and more to answer: on with them.
        if !waiting || conn.state != State::Reading {
            return;
        }
    }
}

// ANCHOR: run_requests
/// Runs the whole requests at the front of the read buffer, appending their
/// replies to `server.replies`. Returns true if it stopped at one whose
/// reply might not fit. A protocol error or QUIT ends the requests: the
/// ones before it are answered; it is answered, and what follows dropped.
fn run_requests(conn: &mut Conn, server: &mut Server) -> bool {
    let Server {
        db, args, replies, ..
    } = server;
    let mut answered = 0;
    let waiting = loop {
        let input = &conn.incoming.data()[answered..];
        match resp::parse(input, &mut conn.progress, args) {
            Parse::Incomplete => break false,
            Parse::Nothing { len } => answered += len,
            Parse::Request { len } => {
                let room = MAX_REPLIES - replies.len();
                let request = args.request(input);
                let session = &mut conn.session;
                if commands::execute(request, db, session, replies, room) == Outcome::NoRoom {
                    break true;
                }
                answered += len;
                if conn.session.quit {
                    end_requests(conn, answered);
                    break false;
                }
            }
            // Its reply is short, but must fit too.
            Parse::Error(_) if MAX_REPLIES - replies.len() < commands::SMALL_REPLY => break true,
            Parse::Error(error) => {
                let fd = conn.fd.as_raw_fd();
                debug!("fd {fd}: protocol error ({error:?}): closing");
                error.reply(replies);
                end_requests(conn, answered);
                break false;
            }
        }
    };
    conn.incoming.consume(answered);
    waiting
}

/// No more requests from this connection: what follows the first `answered`
/// bytes is dropped, and nothing more is read (see `finish_if_no_more_requests`).
fn end_requests(conn: &mut Conn, answered: usize) {
    conn.incoming.truncate(answered);
    conn.read_limit = Some(0);
}
// ANCHOR_END: run_requests

/// Sends the replies in one call, straight from `server.replies`; only
/// what the socket does not take is copied to the write buffer, to wait
/// there for room (`Writing`). In `Reading` the write buffer is empty, and
/// the replies fit in it: `run_requests` ran no more than that.
fn send_replies(conn: &mut Conn, server: &mut Server) {
    let replies = &mut server.replies;
    if replies.is_empty() {
        return;
    }
    // MSG_NOSIGNAL: see `try_flush_buffer`.
    let sent = match retry_eintr(|| send(conn.fd.as_raw_fd(), replies, MsgFlags::MSG_NOSIGNAL)) {
        Ok(n) => n,
        Err(Errno::EAGAIN) => 0,
        Err(e) => {
            debug!("fd {}: send: {e}", conn.fd.as_raw_fd());
            conn.state = State::Done;
            0
        }
    };
    if sent > 0 {
        conn.replied = true;
    }
    if sent < replies.len() && conn.state != State::Done {
        let copied = conn.outgoing.append(&replies[sent..], &mut server.pool);
        debug_assert!(copied);
        conn.state = State::Writing;
    }
    replies.clear();
}
// ANCHOR_END: parse

// ANCHOR: write
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
        Ok(n) => {
            conn.outgoing.consume(n);
            conn.replied = true;
        }
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
        assert!(std::mem::size_of::<Conn>() <= 200);
    }
}
