//! Chapter 7: the chapter 6 server on epoll(7), level-triggered.
//!
//! `poll` takes the whole list of descriptors on every call and the kernel
//! scans all of it, so each wakeup costs as much as the number of connections.
//! epoll keeps the interest list in the kernel: we add a socket once, change
//! it only when what the connection waits for changes, and each wait returns
//! just the ready ones. The `Conn` state machine does not change at all.

use std::fs::File;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::{Context, Result};
use common::args::Args;
use common::frame::{parse_frame, Parse, MAX_FRAME};
use common::net::{announce, listen, set_nonblocking};
use common::signals::stop_signalfd;
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{accept4, send, MsgFlags, SockFlag};
use nix::unistd::read;

// ANCHOR: conn
/// What a connection is doing, which decides what it waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading requests: waits for the socket to be readable.
    Req,
    /// Sending a reply: waits for the socket to be writable.
    Res,
    /// Finished, cleanly or not: the loop closes it.
    End,
}

struct Conn {
    fd: OwnedFd,
    state: State,
    /// Received bytes not yet answered: `rbuf[..rbuf_len]`.
    rbuf: [u8; MAX_FRAME],
    rbuf_len: usize,
    /// The reply being sent: `wbuf[wbuf_sent..wbuf_len]` has yet to go.
    wbuf: [u8; MAX_FRAME],
    wbuf_len: usize,
    wbuf_sent: usize,
}
// ANCHOR_END: conn

impl Conn {
    /// Boxed: two 4 KiB buffers are too big to move around or to store
    /// inline in a table with a slot for every possible descriptor.
    fn new(fd: OwnedFd) -> Box<Conn> {
        Box::new(Conn {
            fd,
            state: State::Req,
            rbuf: [0; MAX_FRAME],
            rbuf_len: 0,
            wbuf: [0; MAX_FRAME],
            wbuf_len: 0,
            wbuf_sent: 0,
        })
    }
}

/// Connections indexed by their file descriptor: the kernel hands out the
/// lowest free numbers, so the table stays about as long as the number of
/// open connections.
type Fd2Conn = Vec<Option<Box<Conn>>>;

// ANCHOR: interest
/// The readiness a connection waits for in its current state.
fn interest(state: State) -> EpollFlags {
    match state {
        State::Req => EpollFlags::EPOLLIN,
        State::Res => EpollFlags::EPOLLOUT,
        State::End => EpollFlags::empty(),
    }
}

/// Tells epoll about a change of state: the one extra system call a state
/// change costs, where `poll` paid for every connection on every wait.
fn update_interest(epoll: &Epoll, conn: &mut Conn) {
    let result = if conn.state == State::End {
        // close(2) would also drop the socket from the interest list, but
        // only once no other descriptor (a dup, a forked child's copy) refers
        // to the same socket. Saying so is cheap and never wrong.
        epoll.delete(&conn.fd)
    } else {
        let mut event = EpollEvent::new(interest(conn.state), token(&conn.fd));
        epoll.modify(&conn.fd, &mut event)
    };
    if let Err(e) = result {
        eprintln!("fd {}: epoll_ctl: {e}", conn.fd.as_raw_fd());
        conn.state = State::End;
    }
}
// ANCHOR_END: interest

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

    // ANCHOR: epoll_setup
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).context("epoll_create1")?;
    // The signalfd is just another readable descriptor (see common::signals).
    epoll.add(&stop, EpollEvent::new(EpollFlags::EPOLLIN, STOP))?;
    epoll.add(&listener, EpollEvent::new(EpollFlags::EPOLLIN, LISTENER))?;
    let mut events = vec![EpollEvent::empty(); 256];
    // ANCHOR_END: epoll_setup
    announce(&listener)?;

    // ANCHOR: event_loop
    let mut fd2conn: Fd2Conn = Vec::new();
    'event_loop: loop {
        // Returns only ready descriptors, up to `events.len()` at a time; any
        // others are still ready next time (level-triggered).
        let n = match epoll.wait(&mut events, EpollTimeout::NONE) {
            Ok(n) => n,
            // With the stop signals blocked this is rare (a debugger, SIGSTOP).
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e).context("epoll_wait"),
        };
        for event in &events[..n] {
            match event.data() {
                STOP => break 'event_loop,
                LISTENER => accept_new_conn(&epoll, &listener, &mut fd2conn, &mut spare_fd),
                fd => {
                    let Some(conn) = fd2conn[fd as usize].as_deref_mut() else {
                        continue;
                    };
                    let waited_for = conn.state;
                    connection_io(conn);
                    if conn.state != waited_for {
                        update_interest(&epoll, conn);
                    }
                    if conn.state == State::End {
                        // Dropping the Conn closes the socket.
                        fd2conn[fd as usize] = None;
                    }
                }
            }
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

// ANCHOR: accept
/// Accepts one connection. If more are waiting, the listener is still
/// readable and the next wait returns at once: level-triggered.
fn accept_new_conn(
    epoll: &Epoll,
    listener: &TcpListener,
    fd2conn: &mut Fd2Conn,
    spare_fd: &mut Option<File>,
) {
    // SOCK_NONBLOCK: the socket is born non-blocking, no extra fcntl needed.
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    match accept4(listener.as_raw_fd(), flags) {
        Ok(fd) => {
            // SAFETY: accept4 just returned this descriptor; nothing else owns it.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let event = EpollEvent::new(interest(State::Req), token(&fd));
            if let Err(e) = epoll.add(&fd, event) {
                // Dropping `fd` closes the connection we cannot watch.
                eprintln!("epoll_ctl: {e}");
                return;
            }
            let slot = fd.as_raw_fd() as usize;
            if fd2conn.len() <= slot {
                fd2conn.resize_with(slot + 1, || None);
            }
            fd2conn[slot] = Some(Conn::new(fd));
        }
        Err(Errno::EMFILE | Errno::ENFILE) => turn_away_one(listener, spare_fd),
        // The client gave up while waiting in the backlog (ECONNABORTED), or
        // is already gone (EAGAIN): nothing to do. EINTR: the next wait retries.
        Err(Errno::ECONNABORTED | Errno::EAGAIN | Errno::EINTR) => {}
        Err(e) => eprintln!("accept: {e}"),
    }
}
// ANCHOR_END: accept

// ANCHOR: emfile
/// Out of file descriptors, `accept` fails and leaves the connection in the
/// backlog, so the listener stays readable and the loop would spin at 100%
/// CPU. We keep one descriptor in reserve for this moment: give it up, accept
/// the connection, close it at once (the client sees a clean close instead of
/// waiting forever), and take the spare back.
fn turn_away_one(listener: &TcpListener, spare_fd: &mut Option<File>) {
    drop(spare_fd.take());
    if let Ok(fd) = accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
        // SAFETY: accept4 just returned this descriptor; nothing else owns it.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
        eprintln!("out of file descriptors: turned a connection away");
    }
    *spare_fd = File::open("/dev/null").ok();
}
// ANCHOR_END: emfile

// ANCHOR: state_machine
/// Runs a connection that the kernel reported ready.
fn connection_io(conn: &mut Conn) {
    match conn.state {
        State::Req => state_req(conn),
        State::Res => {
            state_res(conn);
            // Reply sent: answer the frames that arrived in the same read
            // as the one just answered before waiting for more input. The
            // client may be waiting for exactly those replies and send
            // nothing more until it gets them.
            if conn.state == State::Req {
                while try_one_request(conn) {}
            }
        }
        State::End => {}
    }
}

/// Reads per connection per wakeup. Level-triggered, we may stop whenever we
/// like: if input remains, the next wait reports the socket again. Without a
/// limit, a client that sends and reads as fast as we echo would keep us in
/// this loop forever, and every other client would wait.
const READS_PER_WAKEUP: usize = 16;

fn state_req(conn: &mut Conn) {
    for _ in 0..READS_PER_WAKEUP {
        if !try_fill_buffer(conn) {
            break;
        }
    }
}

fn state_res(conn: &mut Conn) {
    while try_flush_buffer(conn) {}
}
// ANCHOR_END: state_machine

// ANCHOR: read
/// Reads once into the free end of the read buffer and answers every whole
/// frame now in it. Returns true while there may be more to read.
fn try_fill_buffer(conn: &mut Conn) -> bool {
    // In `Req` the buffer never holds a whole frame (we answer those at
    // once), so it has room: a read of zero bytes below really means EOF.
    debug_assert!(conn.rbuf_len < conn.rbuf.len());
    let result = loop {
        match read(&conn.fd, &mut conn.rbuf[conn.rbuf_len..]) {
            Err(Errno::EINTR) => continue,
            result => break result,
        }
    };
    match result {
        Ok(0) => {
            // EOF. Nothing is lost by closing now: we only read in `Req`, when
            // every frame received so far has been answered and sent.
            if conn.rbuf_len > 0 {
                eprintln!("fd {}: EOF in the middle of a frame", conn.fd.as_raw_fd());
            }
            conn.state = State::End;
            return false;
        }
        Ok(n) => conn.rbuf_len += n,
        Err(Errno::EAGAIN) => return false,
        Err(e) => {
            eprintln!("fd {}: read: {e}", conn.fd.as_raw_fd());
            conn.state = State::End;
            return false;
        }
    }
    // Pipelining: one read may bring several frames.
    while try_one_request(conn) {}
    conn.state == State::Req
}
// ANCHOR_END: read

// ANCHOR: parse
/// Answers the frame at the start of the read buffer, if it is whole.
/// Returns true if the reply went out and the next frame can be tried.
fn try_one_request(conn: &mut Conn) -> bool {
    let len = match parse_frame(&conn.rbuf[..conn.rbuf_len]) {
        Parse::Incomplete => return false,
        Parse::TooLong { announced } => {
            let fd = conn.fd.as_raw_fd();
            eprintln!("fd {fd}: frame of {announced} bytes is too long");
            conn.state = State::End;
            return false;
        }
        Parse::Frame { len } => len,
    };
    // The echo reply is the request frame itself.
    conn.wbuf[..len].copy_from_slice(&conn.rbuf[..len]);
    conn.wbuf_len = len;
    conn.wbuf_sent = 0;
    // Shift what follows to the front. Simple, but it copies the rest of the
    // buffer once per frame; chapter 8 does better.
    conn.rbuf.copy_within(len..conn.rbuf_len, 0);
    conn.rbuf_len -= len;

    conn.state = State::Res;
    // Send now rather than wait to be told the socket is writable: it
    // usually is, and this saves a trip around the loop.
    state_res(conn);
    conn.state == State::Req
}
// ANCHOR_END: parse

// ANCHOR: write
/// Sends what is left of the reply. Returns true to try again after a short
/// write; on EAGAIN it stays in `Res` until the socket is writable again.
fn try_flush_buffer(conn: &mut Conn) -> bool {
    let unsent = &conn.wbuf[conn.wbuf_sent..conn.wbuf_len];
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
        Ok(n) => conn.wbuf_sent += n,
        Err(Errno::EAGAIN) => return false,
        Err(e) => {
            eprintln!("fd {}: send: {e}", conn.fd.as_raw_fd());
            conn.state = State::End;
            return false;
        }
    }
    if conn.wbuf_sent < conn.wbuf_len {
        // A short write: the socket's send buffer filled up. The next
        // attempt sends more or reports EAGAIN.
        return true;
    }
    conn.state = State::Req;
    false
}
// ANCHOR_END: write
