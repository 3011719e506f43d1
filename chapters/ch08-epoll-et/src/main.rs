//! Chapter 8: the chapter 7 server on edge-triggered epoll, done right.
//!
//! Level-triggered epoll repeats "still ready" on every wait, so chapter 7
//! switched each socket between readable and writable with a system call per
//! change. Edge-triggered epoll reports a change once: we register a socket
//! once, for both directions, and never touch it again. Nobody reminds us, so
//! a connection remembers what it was told and works until `EAGAIN`. In
//! return, a pipelined burst costs one read and one write, and bounded
//! buffers cap what any client can make us hold.

mod buffer;

use std::fs::File;
use std::mem;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::{Context, Result};
use buffer::{Buf, Pool};
use common::args::Args;
use common::frame::{parse_frame, Parse};
use common::net::{announce, listen, set_nonblocking};
use common::signals::stop_signalfd;
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{accept4, send, MsgFlags, SockFlag};
use nix::unistd::read;

// ANCHOR: conn
/// A connection no longer has a state that decides what it waits for: it
/// waits for both, all the time, and remembers what the edges said.
///
/// Memory per connection: this struct (under 100 bytes) plus at most one read
/// and one write buffer of `BUF_SIZE` (16 KiB), 32 KiB in all, whatever the
/// client does. It holds a buffer only while bytes are in it (see `Pool`), so
/// 10,000 idle connections cost about 1 MiB.
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
    /// It used up its turn with input left, and waits in the `unfinished` list.
    unfinished: bool,
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
            unfinished: false,
        }
    }
}

/// The connection is over: the peer finished, or an error was logged.
struct Close;

/// How a connection's turn ended, if it did not close.
#[derive(Debug, PartialEq, Eq)]
enum Turn {
    /// Nothing more to do until the next edge.
    Idle,
    /// It used up its reads for this turn with input still pending.
    Unfinished,
}

/// Connections indexed by their file descriptor. A `Conn` is small now that
/// its buffers are only borrowed from the pool, so the table holds it inline.
type Fd2Conn = Vec<Option<Conn>>;

/// Each event carries a 64-bit tag chosen at registration: for a connection,
/// its descriptor number, which is also its index in `fd2conn`.
fn token(fd: &OwnedFd) -> u64 {
    fd.as_raw_fd() as u64
}
/// Tags that no descriptor number can take.
const STOP: u64 = u64::MAX;
const LISTENER: u64 = u64::MAX - 1;

fn main() -> Result<()> {
    let addr = Args::from_env()?.finish()?;
    // First, before any thread exists: this blocks SIGINT and SIGTERM.
    let stop = stop_signalfd().context("signalfd")?;
    let listener = listen(addr).with_context(|| format!("listen on {addr}"))?;
    // A listener that is not ready must make accept fail with EAGAIN, not wait.
    set_nonblocking(&listener)?;
    let mut spare_fd = Some(File::open("/dev/null").context("open the spare fd")?);

    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).context("epoll_create1")?;
    // The signalfd is just another readable descriptor (see common::signals).
    epoll.add(&stop, EpollEvent::new(EpollFlags::EPOLLIN, STOP))?;
    let edges = EpollFlags::EPOLLIN | EpollFlags::EPOLLET;
    epoll.add(&listener, EpollEvent::new(edges, LISTENER))?;
    // Room for many events: under load, one wait serves many connections.
    let mut events = vec![EpollEvent::empty(); 1024];
    announce(&listener)?;

    // ANCHOR: event_loop
    let mut fd2conn: Fd2Conn = Vec::new();
    let mut pool = Pool::default();
    // Connections that stopped with input left: no edge will come for it, so
    // we keep our own list, and do not sleep while it has entries.
    let mut unfinished: Vec<usize> = Vec::new();
    let mut next_round: Vec<usize> = Vec::new();
    'event_loop: loop {
        let timeout = if unfinished.is_empty() {
            EpollTimeout::NONE
        } else {
            EpollTimeout::ZERO
        };
        let n = match epoll.wait(&mut events, timeout) {
            Ok(n) => n,
            // With the stop signals blocked this is rare (a debugger, SIGSTOP).
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e).context("epoll_wait"),
        };
        for event in &events[..n] {
            match event.data() {
                STOP => break 'event_loop,
                LISTENER => accept_new_conns(&epoll, &listener, &mut fd2conn, &mut spare_fd),
                fd => {
                    let Some(conn) = fd2conn[fd as usize].as_mut() else {
                        continue;
                    };
                    remember_edge(conn, event.events());
                    // An unfinished one gets its turn below, after the others.
                    if !conn.unfinished {
                        take_turn(&mut fd2conn, fd as usize, &mut pool, &mut unfinished);
                    }
                }
            }
        }
        mem::swap(&mut unfinished, &mut next_round);
        for fd in next_round.drain(..) {
            take_turn(&mut fd2conn, fd, &mut pool, &mut unfinished);
        }
    }
    // ANCHOR_END: event_loop

    let open = fd2conn.iter().flatten().count();
    eprintln!("stop signal received: closing {open} connections");
    // Deliberate: replies already handed to the kernel are still delivered
    // after close; replies waiting in our own write buffers are dropped. A
    // stop is a stop, and draining a client that never reads could take forever.
    drop(fd2conn);
    Ok(())
}

// ANCHOR: take_turn
/// Lets a connection do what its readiness allows; then closes it, or queues
/// it for another turn if it stopped before running out of input.
fn take_turn(fd2conn: &mut Fd2Conn, fd: usize, pool: &mut Pool, unfinished: &mut Vec<usize>) {
    let slot = &mut fd2conn[fd];
    let Some(conn) = slot.as_mut() else {
        return;
    };
    let result = connection_io(conn, pool);
    conn.rbuf.give_back_memory(pool);
    conn.wbuf.give_back_memory(pool);
    match result {
        Ok(turn) => {
            conn.unfinished = turn == Turn::Unfinished;
            if conn.unfinished {
                unfinished.push(fd);
            }
        }
        // Closing the socket also takes it off the interest list. No
        // EPOLL_CTL_DEL needed: we never dup it (chapter 7 says why it matters).
        Err(Close) => *slot = None,
    }
}
// ANCHOR_END: take_turn

// ANCHOR: accept
/// Accepts every pending connection. The listener's edge came once for all
/// of them: stopping before EAGAIN would strand the rest in the backlog
/// until yet another client arrives.
fn accept_new_conns(
    epoll: &Epoll,
    listener: &TcpListener,
    fd2conn: &mut Fd2Conn,
    spare_fd: &mut Option<File>,
) {
    // SOCK_NONBLOCK: the socket is born non-blocking, no extra fcntl needed.
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    loop {
        match accept4(listener.as_raw_fd(), flags) {
            Ok(fd) => {
                // SAFETY: accept4 just returned this descriptor; nothing else owns it.
                let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                if let Err(e) = register(epoll, &fd) {
                    // Dropping `fd` closes the connection we cannot watch.
                    eprintln!("epoll_ctl: {e}");
                    continue;
                }
                let slot = fd.as_raw_fd() as usize;
                if fd2conn.len() <= slot {
                    fd2conn.resize_with(slot + 1, || None);
                }
                fd2conn[slot] = Some(Conn::new(fd));
            }
            Err(Errno::EAGAIN) => return,
            // The client gave up while waiting in the backlog: on to the next.
            Err(Errno::ECONNABORTED | Errno::EINTR) => continue,
            Err(Errno::EMFILE | Errno::ENFILE) => {
                if !turn_away_one(listener, spare_fd) {
                    return;
                }
            }
            Err(e) => {
                // The next client to connect brings a new edge, and a retry.
                eprintln!("accept: {e}");
                return;
            }
        }
    }
}
// ANCHOR_END: accept

// ANCHOR: register
/// Registers a connection once, for good: both directions, edge-triggered.
/// EPOLLRDHUP reports that the peer has finished sending in the same event
/// as its last data, which matters because we stop reading early (see
/// `try_fill_buffer`).
fn register(epoll: &Epoll, fd: &OwnedFd) -> nix::Result<()> {
    let interest =
        EpollFlags::EPOLLIN | EpollFlags::EPOLLOUT | EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLET;
    epoll.add(fd, EpollEvent::new(interest, token(fd)))
}

/// Remembers what an edge said. Errors and hang-ups count for both
/// directions: the next read or send reports them.
fn remember_edge(conn: &mut Conn, flags: EpollFlags) {
    use EpollFlags as E;
    if flags.intersects(E::EPOLLIN | E::EPOLLRDHUP | E::EPOLLHUP | E::EPOLLERR) {
        conn.readable = true;
    }
    if flags.intersects(E::EPOLLOUT | E::EPOLLHUP | E::EPOLLERR) {
        conn.writable = true;
    }
    if flags.intersects(E::EPOLLRDHUP | E::EPOLLHUP) {
        conn.peer_done = true;
    }
}
// ANCHOR_END: register

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
fn connection_io(conn: &mut Conn, pool: &mut Pool) -> Result<Turn, Close> {
    let mut reads = 0;
    loop {
        try_requests(conn, pool)?;
        if !conn.wbuf.is_empty() {
            if !conn.writable {
                return Ok(Turn::Idle);
            }
            try_flush_buffer(conn)?;
            if !conn.wbuf.is_empty() {
                // The socket is full: wait for EPOLLOUT.
                return Ok(Turn::Idle);
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
            return Ok(Turn::Idle);
        }
        if reads == READS_PER_TURN {
            return Ok(Turn::Unfinished);
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
        assert!(mem::size_of::<Option<Conn>>() < 100);
    }
}
