//! Chapter 10: timers. A connection idle for `--idle-timeout-ms` is closed.
//!
//! Until now a client could hold a connection, and its buffers, forever by
//! saying nothing, or by sending half a frame and stopping there (slowloris).
//! Now the reactor keeps its connections in order of last activity, sleeps in
//! `epoll_wait` only until the oldest one is due, and closes those that are.
//! Activity means a reply went out: only a client that completes frames and
//! reads the answers stays, however many bytes it dribbles in.

mod buffer;
mod idle;
mod reactor;

use std::fs::File;
use std::mem;
use std::net::TcpListener;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use buffer::{Buf, Pool};
use common::args::Args;
use common::frame::{parse_frame, Parse};
use common::net::{announce, listen, set_nonblocking};
use common::signals::stop_signalfd;
use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;
use nix::sys::socket::{accept4, send, MsgFlags, SockFlag};
use nix::unistd::read;
use reactor::{Context, Handler, Idle, Interest, Next, Reactor, Ready};

/// How long a connection may stay idle when `--idle-timeout-ms` is not given.
const DEFAULT_IDLE_TIMEOUT_MS: u64 = 60_000;

fn main() -> Result<()> {
    let mut args = Args::from_env()?;
    let idle_ms = args
        .take("idle-timeout-ms")?
        .unwrap_or(DEFAULT_IDLE_TIMEOUT_MS);
    let addr = args.finish()?;
    ensure!(idle_ms > 0, "--idle-timeout-ms must be at least 1");
    let idle_timeout = Duration::from_millis(idle_ms);
    // First, before any thread exists: this blocks SIGINT and SIGTERM.
    let stop = stop_signalfd().context("signalfd")?;
    let listener = listen(addr).with_context(|| format!("listen on {addr}"))?;
    // A listener that is not ready must make accept fail with EAGAIN, not wait.
    set_nonblocking(&listener)?;
    let spare_fd = Some(File::open("/dev/null").context("open the spare fd")?);
    // The state every handler shares is the buffer pool.
    let mut reactor = Reactor::new(Pool::default(), idle_timeout).context("epoll_create1")?;
    eprintln!("closing connections idle for {idle_ms} ms");
    let registry = reactor.registry();
    registry
        .add(Box::new(StopSignal(stop)), Interest::READABLE, Idle::Keep)
        .context("register the signalfd")?;
    // Last, once every descriptor the server keeps is open. A client that
    // connects before the listener is registered waits in the backlog:
    // registering reports the listener's current state as a first edge.
    announce(&listener)?;
    let listener = Listener { listener, spare_fd };
    registry
        .add(Box::new(listener), Interest::READABLE, Idle::Keep)
        .context("register the listener")?;
    reactor.run().context("epoll_wait")?;
    // Dropping the reactor drops every handler, closing every connection.
    Ok(())
}

// ANCHOR: signal_handler
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
                let name =
                    Signal::try_from(info.ssi_signo as i32).map_or("a signal", Signal::as_str);
                eprintln!("{name} received: stopping");
            }
            // A spurious event: no signal is pending after all.
            Ok(None) => return Next::Wait,
            Err(e) => eprintln!("signalfd: {e}: stopping"),
        }
        cx.stop();
        Next::Wait
    }
}
// ANCHOR_END: signal_handler

// ANCHOR: listener_handler
/// Accepts connections and registers a [`Conn`] handler for each.
struct Listener {
    listener: TcpListener,
    /// A descriptor kept in reserve for EMFILE (see `turn_away_one`).
    spare_fd: Option<File>,
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }
}

impl Handler<Pool> for Listener {
    /// Accepts every pending connection. The listener's edge came once for
    /// all of them: stopping before EAGAIN would strand the rest in the
    /// backlog until yet another client arrives.
    fn ready(&mut self, _: Ready, cx: &mut Context<'_, Pool>) -> Next {
        // SOCK_NONBLOCK: the socket is born non-blocking, no extra fcntl needed.
        let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
        loop {
            match accept4(self.listener.as_raw_fd(), flags) {
                Ok(fd) => {
                    // SAFETY: accept4 just returned this descriptor; nothing else owns it.
                    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                    // Registered once, for good: both directions. READABLE
                    // includes EPOLLRDHUP, which reports that the peer has
                    // finished sending in the same event as its last data
                    // (it matters because we stop reading early: see
                    // `try_fill_buffer`).
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    let conn = Box::new(Conn::new(fd));
                    if let Err(e) = cx.registry.add(conn, interest, Idle::Close) {
                        // `add` dropped the connection we cannot watch, closing it.
                        eprintln!("epoll_ctl: {e}");
                    }
                }
                Err(Errno::EAGAIN) => return Next::Wait,
                // The client gave up while waiting in the backlog: on to the next.
                Err(Errno::ECONNABORTED | Errno::EINTR) => continue,
                Err(Errno::EMFILE | Errno::ENFILE) => {
                    if !turn_away_one(&self.listener, &mut self.spare_fd) {
                        return Next::Wait;
                    }
                }
                Err(e) => {
                    // The next client to connect brings a new edge, and a retry.
                    eprintln!("accept: {e}");
                    return Next::Wait;
                }
            }
        }
    }
}
// ANCHOR_END: listener_handler

// ANCHOR: emfile
/// Out of file descriptors, `accept` fails and leaves the connection in the
/// backlog. Level-triggered, the loop would spin; edge-triggered, we would
/// never hear of that client again. We keep one descriptor in reserve for
/// this moment: give it up, accept the connection, close it at once (the
/// client sees a clean close instead of waiting forever), take the spare
/// back. Returns true if it turned a connection away, so the caller can go on.
fn turn_away_one(listener: &TcpListener, spare_fd: &mut Option<File>) -> bool {
    drop(spare_fd.take());
    let turned_away = match accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
        Ok(fd) => {
            // SAFETY: accept4 just returned this descriptor; nothing else owns it.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
            eprintln!("out of file descriptors: turned a connection away");
            true
        }
        Err(_) => false,
    };
    *spare_fd = File::open("/dev/null").ok();
    turned_away
}
// ANCHOR_END: emfile

// ANCHOR: conn
/// A connection waits for both directions, all the time, and remembers what
/// the edges said (chapter 8). Whether it used up its turn with input left
/// is no longer its business: it says `Next::Again` and the reactor queues it.
///
/// Memory per connection: this struct (under 100 bytes, boxed as a handler)
/// plus at most one read and one write buffer of `BUF_SIZE` (16 KiB) while
/// bytes are in them (see `Pool`).
struct Conn {
    fd: OwnedFd,
    /// Received bytes not yet answered.
    rbuf: Buf,
    /// Replies not yet sent.
    wbuf: Buf,
    /// Edges seen and not yet used up: the socket may have input to read, or
    /// room to write. The kernel will not say so again.
    readable: bool,
    writable: bool,
    /// The peer has shut down its sending side (EPOLLRDHUP or EPOLLHUP).
    peer_done: bool,
    /// We have read its EOF.
    eof: bool,
    /// Replies went out during this turn: the connection was active.
    replied: bool,
}
// ANCHOR_END: conn

impl Conn {
    fn new(fd: OwnedFd) -> Conn {
        Conn {
            fd,
            rbuf: Buf::default(),
            wbuf: Buf::default(),
            // Registering reports the socket's current state as a first edge
            // (a new socket is writable), so we start out knowing nothing.
            readable: false,
            writable: false,
            peer_done: false,
            eof: false,
            replied: false,
        }
    }
}

/// The connection is over: the peer finished, or an error was logged.
struct Close;

// ANCHOR: conn_handler
impl AsFd for Conn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Handler<Pool> for Conn {
    /// Remembers what the edge said, then does what the connection's
    /// readiness allows. Returning `Remove` closes it: the reactor drops it.
    fn ready(&mut self, ready: Ready, cx: &mut Context<'_, Pool>) -> Next {
        remember_edge(self, ready);
        let pool = &mut *cx.shared;
        let result = connection_io(self, pool);
        self.rbuf.give_back_memory(pool);
        self.wbuf.give_back_memory(pool);
        // ANCHOR: activity
        // Activity is a reply going out, not an event or a byte coming in: a
        // client that dribbles in a frame slower than the timeout, or sends
        // frames and never reads the answers (they pile up until backpressure
        // stops us reading), is closed like a silent one. Each frame must
        // arrive whole within the timeout; at 4 KiB that is no hardship.
        if mem::take(&mut self.replied) {
            cx.touch();
        }
        // ANCHOR_END: activity
        result.unwrap_or(Next::Remove)
    }

    fn idle(&mut self, timeout: Duration) {
        let why = if !self.wbuf.is_empty() {
            " with replies it does not read"
        } else if !self.rbuf.is_empty() {
            " in the middle of a frame"
        } else {
            ""
        };
        let ms = timeout.as_millis();
        eprintln!("fd {}: idle for {ms} ms{why}: closing", self.fd.as_raw_fd());
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
    if ready.is_read_closed() {
        conn.peer_done = true;
    }
}
// ANCHOR_END: conn_handler

// ANCHOR: backpressure
/// Reads per connection per turn: 16 × 16 KiB = 256 KiB, plenty for
/// throughput. Without a limit, a client that sends and reads as fast as we
/// echo never lets a read come back short, and we would serve it forever.
const READS_PER_TURN: usize = 16;

/// Does all the work the connection's readiness allows: answer, send, read,
/// until nothing more can be done without a new edge.
///
/// Backpressure: we read only once every reply is sent. A client that sends
/// without reading fills our write buffer, then the socket's send buffer;
/// from then on we stop reading (`readable` stays true: we know input is
/// pending) until an EPOLLOUT edge says replies can go out again. Its unread
/// requests wait in the kernel, where TCP flow control pushes back on the
/// client, not in our memory. That also ends the turn of a client that floods
/// without reading; `READS_PER_TURN` ends the turn of one that reads too.
fn connection_io(conn: &mut Conn, pool: &mut Pool) -> Result<Next, Close> {
    let mut reads = 0;
    loop {
        try_requests(conn, pool)?;
        if !conn.wbuf.is_empty() {
            if !conn.writable {
                return Ok(Next::Wait);
            }
            try_flush_buffer(conn)?;
            if !conn.wbuf.is_empty() {
                // The socket is full: wait for EPOLLOUT.
                return Ok(Next::Wait);
            }
            // Room again: answer the frames a full write buffer held back.
            continue;
        }
        if conn.eof {
            // Every whole frame answered and sent: the peer is done, so are we.
            if !conn.rbuf.is_empty() {
                eprintln!("fd {}: EOF in the middle of a frame", conn.fd.as_raw_fd());
            }
            return Err(Close);
        }
        if !conn.readable {
            return Ok(Next::Wait);
        }
        if reads == READS_PER_TURN {
            // Input is left and no edge will come for it: ask for another turn.
            return Ok(Next::Again);
        }
        try_fill_buffer(conn, pool)?;
        reads += 1;
    }
}
// ANCHOR_END: backpressure

// ANCHOR: read
/// Reads once into the read buffer.
fn try_fill_buffer(conn: &mut Conn, pool: &mut Pool) -> Result<(), Close> {
    // Compact here, once per read rather than once per frame. We read only
    // after answering every whole frame, so this moves part of one frame at
    // most, and leaves room for at least BUF_SIZE - MAX_FRAME bytes.
    let spare = conn.rbuf.compact_and_spare(pool);
    let asked = spare.len();
    let result = loop {
        match read(&conn.fd, &mut *spare) {
            Err(Errno::EINTR) => continue,
            result => break result,
        }
    };
    match result {
        Ok(0) => {
            conn.eof = true;
            conn.readable = false;
        }
        Ok(n) => {
            conn.rbuf.filled(n);
            // epoll(7): on a stream socket, a read that returns less than
            // asked means the receive queue is now empty, and new data will
            // bring a new edge. So we skip the read that would only say EAGAIN.
            // Unless the peer is done: its EOF came with an edge we already
            // had, and only another read shows it.
            if n < asked && !conn.peer_done {
                conn.readable = false;
            }
        }
        Err(Errno::EAGAIN) => conn.readable = false,
        Err(e) => {
            eprintln!("fd {}: read: {e}", conn.fd.as_raw_fd());
            return Err(Close);
        }
    }
    Ok(())
}
// ANCHOR_END: read

// ANCHOR: parse
/// Appends the reply to every whole frame in the read buffer to the write
/// buffer, while it has room: many replies, to go out in one send.
fn try_requests(conn: &mut Conn, pool: &mut Pool) -> Result<(), Close> {
    loop {
        let len = match parse_frame(conn.rbuf.pending()) {
            Parse::Incomplete => return Ok(()),
            Parse::TooLong { announced } => {
                let fd = conn.fd.as_raw_fd();
                eprintln!("fd {fd}: frame of {announced} bytes is too long");
                return Err(Close);
            }
            Parse::Frame { len } => len,
        };
        if conn.wbuf.room() < len {
            // Full: the rest waits until the replies drain.
            return Ok(());
        }
        // The echo reply is the request frame itself.
        conn.wbuf.append(&conn.rbuf.pending()[..len], pool);
        // Step past the frame; the bytes move only at the next read, if at all.
        conn.rbuf.consume(len);
    }
}
// ANCHOR_END: parse

// ANCHOR: write
/// Sends the pending replies, all in one call if the socket takes them.
fn try_flush_buffer(conn: &mut Conn) -> Result<(), Close> {
    let unsent = conn.wbuf.pending();
    let result = loop {
        // MSG_NOSIGNAL: a peer that has gone away makes this fail with EPIPE
        // instead of raising SIGPIPE. Rust ignores SIGPIPE before `main`
        // anyway; the flag states the intent where it matters.
        match send(conn.fd.as_raw_fd(), unsent, MsgFlags::MSG_NOSIGNAL) {
            Err(Errno::EINTR) => continue,
            result => break result,
        }
    };
    match result {
        Ok(n) => {
            // A short write means the socket's send buffer is full, and
            // EPOLLOUT will come once it drains (epoll(7) again): no need
            // to try once more just to hear EAGAIN.
            if n < unsent.len() {
                conn.writable = false;
            }
            conn.wbuf.consume(n);
            conn.replied = true;
        }
        Err(Errno::EAGAIN) => conn.writable = false,
        Err(e) => {
            eprintln!("fd {}: send: {e}", conn.fd.as_raw_fd());
            return Err(Close);
        }
    }
    Ok(())
}
// ANCHOR_END: write

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conn_is_small_without_its_buffers() {
        // The memory bound stated at `Conn` counts on this.
        assert!(std::mem::size_of::<Conn>() < 100);
    }
}
