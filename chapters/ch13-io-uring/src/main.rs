//! Chapter 13: the chapter 9 server on io_uring. Completions instead of
//! readiness.
//!
//! Every loop so far asked the kernel "which sockets are ready?" and then
//! made the calls itself: a `read` here, a `send` there, each a system call.
//! Here we hand the kernel the work instead: "receive on this socket", "send
//! these bytes on that one", written as entries into a queue in memory we
//! share with it. One `io_uring_enter` submits every operation of a loop
//! turn, for every connection, and waits; the kernel does each operation
//! when it can, and reports its result in a second queue. Our loop reads
//! results, decides the next operations, and goes round.

mod bufring;
// Chapter 9's file, unchanged. Receiving into the ring's buffers, this
// chapter only appends to a `Buf`, never reads into one.
#[allow(dead_code)]
#[path = "../../ch08-batching/src/buffer.rs"]
mod buffer; // chapter 8's buffers and pool, the same file

use std::fs::File;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::ExitCode;
use std::ptr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use buffer::{Buf, Pool, MIN_CAPACITY};
use bufring::BufRing;
use common::args::Args;
use common::frame::{parse_frame, Parse};
use common::log::count;
use common::net::{self, accept_nonblocking, AcceptError};
use common::signals::stop_signalfd;
use common::slab::{Key, Slab};
use common::{debug, error, info, warn};
use io_uring::types::{CancelBuilder, Fd, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, squeue, IoUring};
use nix::errno::Errno;
use nix::sys::signalfd::SignalFd;

// ANCHOR: conn
/// What a connection is doing, as in chapter 9. What changes is who does
/// it: in each state the kernel is doing one operation for the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for requests: a receive is in flight.
    Reading,
    /// Sending replies: a send is in flight, and nothing is received.
    Writing,
    /// Every reply is sent and our side shut down; a receive waits for the
    /// peer's EOF before we close (see `finish_if_no_more_requests`).
    Closing,
    /// Finished, cleanly or not: closed once nothing is in flight.
    Done,
}

/// An operation the kernel may be doing for a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Recv,
    Send,
}

/// Memory per connection: this struct plus, while bytes are in them, a read
/// and a write buffer of 16 to 256 KiB each (see `buffer.rs`), as in
/// chapter 9. A receive takes one of the ring's buffers (`bufring.rs`) only
/// when bytes arrive, so a quiet connection holds none, though a receive
/// always waits for it.
struct Conn {
    fd: OwnedFd,
    state: State,
    /// Received bytes not yet answered.
    incoming: Buf,
    /// Replies not yet sent. While a send is in flight the kernel reads
    /// them: nothing may change or move them until its completion.
    outgoing: Buf,
    /// How many more bytes we will answer: no limit while serving; once
    /// the requests are over (a bad frame, a stop), what had arrived by then.
    read_limit: Option<usize>,
    /// The operation the kernel is doing for it: never more than one.
    in_flight: Option<Op>,
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
            in_flight: None,
        }
    }
}

// ANCHOR: token
/// What a completion is about. A completion carries the 64 bits of
/// `user_data` we put in the submission, untouched, and nothing else to say
/// where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    /// The multishot accept on the listener.
    Accept,
    /// A poll of the listener, while out of file descriptors (see `accepted`).
    Listener,
    /// A poll of the signalfd.
    Stop,
    /// A cancellation's own completion: nothing to do.
    Cancel,
    /// A connection's operation.
    Conn(Op, Key),
}

impl From<Token> for u64 {
    /// Packs a token: kind in bits 56 to 63, a connection's key below (see
    /// `Connections`).
    fn from(token: Token) -> u64 {
        let (kind, key) = match token {
            Token::Accept => (0, None),
            Token::Listener => (1, None),
            Token::Stop => (2, None),
            Token::Cancel => (3, None),
            Token::Conn(Op::Recv, key) => (4, Some(key)),
            Token::Conn(Op::Send, key) => (5, Some(key)),
        };
        kind << Key::BITS | key.map_or(0, Key::to_u64)
    }
}

impl Token {
    fn from_user_data(data: u64) -> Option<Token> {
        let key = Key::from_u64(data);
        Some(match data >> Key::BITS {
            0 => Token::Accept,
            1 => Token::Listener,
            2 => Token::Stop,
            3 => Token::Cancel,
            4 => Token::Conn(Op::Recv, key),
            5 => Token::Conn(Op::Send, key),
            _ => return None,
        })
    }
}
// ANCHOR_END: token

// ANCHOR: table
/// The connections, in a slab (chapter 12's, in `common`): a key names a
/// slot, and which of the slot's occupants. Not the connection's file
/// descriptor: the kernel reuses a closed one for the next connection at
/// once, while completions for the old one may still be on their way, and
/// they must not be taken for the new one's.
type Connections = Slab<Conn>;

/// Removes the connection; dropping it closes its socket. Only once the
/// kernel holds nothing of it: no operation in flight.
fn remove(conns: &mut Connections, key: Key) {
    debug_assert!(conns.get_mut(key).is_some_and(|c| c.in_flight.is_none()));
    conns.remove(key);
}
// ANCHOR_END: table

/// How long a stop waits for connections to finish, unless `--grace-ms` says.
const DEFAULT_GRACE_MS: u64 = 1000;

// ANCHOR: sizes
/// Submission queue entries: operations queued before an `io_uring_enter`
/// must pass them on. More are fine: a full queue is submitted early.
const SQ_ENTRIES: u32 = 1024;
/// Completion queue entries: completions waiting for us to read them. The
/// kernel keeps any overflow aside rather than lose it, at a cost.
const CQ_ENTRIES: u32 = 8 * SQ_ENTRIES;
/// Receive buffers lent to the kernel, shared by every connection, unless
/// `--recv-buffers` says: only the receives that complete in one turn hold
/// one, until the turn ends. 256 of 16 KiB: 4 MiB, touched only as used.
const DEFAULT_RECV_BUFFERS: u16 = 256;
/// The buffer group they form, named in each receive.
const RECV_GROUP: u16 = 0;
// ANCHOR_END: sizes

fn main() -> ExitCode {
    common::args::run(serve)
}

// ANCHOR: setup
/// Creates the ring, or explains in one line why this system will not.
fn new_ring(defer_taskrun: bool) -> Result<IoUring> {
    let mut builder = IoUring::builder();
    if defer_taskrun {
        // Only this thread submits, and the kernel finishes an operation
        // (copies the bytes a receive waited for, say) only when we next
        // enter it, all of them in one batch, in our thread: instead of
        // interrupting whatever we are doing as each packet arrives.
        builder.setup_single_issuer().setup_defer_taskrun();
    }
    builder
        .setup_cqsize(CQ_ENTRIES)
        .build(SQ_ENTRIES)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENOSYS | libc::EPERM | libc::EINVAL) => anyhow::anyhow!(
                "io_uring is unavailable: {e}; it needs Linux 6.1 or later with \
                 `sysctl kernel.io_uring_disabled` at 0, and no seccomp filter \
                 (a container's default profile, say) blocking io_uring_setup"
            ),
            _ => anyhow::Error::new(e).context("io_uring_setup"),
        })
}
// ANCHOR_END: setup

fn serve() -> Result<()> {
    let mut args = Args::from_env(
        "ch13",
        "echoes frames from one thread with io_uring: completions instead of readiness",
    );
    let grace_ms = args.option(
        "grace-ms",
        "MS",
        "on SIGINT/SIGTERM, how long to let connections finish",
        DEFAULT_GRACE_MS,
    );
    let recv_buffers = args.option(
        "recv-buffers",
        "N",
        "receive buffers of 16 KiB lent to the kernel, shared by all connections (a power of 2)",
        DEFAULT_RECV_BUFFERS,
    );
    let no_defer_taskrun = args.flag(
        "no-defer-taskrun",
        "set the ring up without DEFER_TASKRUN, to measure what it saves \
         (a stop may then answer less than had arrived)",
    );
    let addr = args.finish()?;
    anyhow::ensure!(
        recv_buffers.is_power_of_two() && recv_buffers <= 1 << 15,
        "--recv-buffers {recv_buffers}: the kernel takes a power of 2, at most 32768"
    );
    net::raise_fd_limit()?;
    // First, before any thread exists: this blocks SIGINT and SIGTERM.
    let stop = stop_signalfd().context("signalfd")?;
    let mut ring = new_ring(!no_defer_taskrun)?;
    let mut bufring = BufRing::new(&ring, RECV_GROUP, recv_buffers, MIN_CAPACITY as u32)
        .context("registering the receive buffers")?;
    let listener = net::listen(addr)?;
    // Only for `accept_waiting`, when the multishot accept cannot help.
    net::set_nonblocking(&listener)?;
    let mut spare_fd = Some(File::open("/dev/null").context("open the spare fd")?);
    net::announce(&listener)?;

    // ANCHOR: event_loop
    let mut queue = Queue::default();
    queue.push(accept_all(&listener));
    queue.push(wait_for_signal(&stop));
    let mut listener = Some(listener);
    let mut conns = Connections::default();
    let mut pool = Pool::default();
    let mut completions: Vec<cqueue::Entry> = Vec::with_capacity(CQ_ENTRIES as usize);
    // Set when a stop signal arrives: the moment we give up on stragglers.
    let mut deadline: Option<Instant> = None;
    let outcome = 'event_loop: loop {
        // The one system call of the turn: every operation queued since the
        // last one goes in, and we wait for at least one completion.
        if let Err(e) = queue.submit_and_wait(&mut ring, deadline) {
            break Err(e);
        }
        completions.extend(ring.completion());
        let mut stop_requested = false;
        for cqe in completions.drain(..) {
            let result = errno_or(cqe.result());
            match Token::from_user_data(cqe.user_data()) {
                Some(Token::Conn(op, key)) => {
                    let Some(conn) = conns.get_mut(key) else {
                        error!("a completion for a connection already closed: {op:?}");
                        bufring.discard(cqe.flags());
                        continue;
                    };
                    conn.in_flight = None;
                    match op {
                        Op::Recv => bufring.read(result, cqe.flags(), |received| {
                            on_recv(conn, received, &mut pool)
                        }),
                        Op::Send => on_send(conn, result, &mut pool),
                    }
                    resume(&mut queue, &mut conns, key);
                }
                Some(Token::Accept) => {
                    let more = cqueue::more(cqe.flags());
                    accepted(result, more, &mut queue, &mut conns, listener.as_ref());
                }
                Some(Token::Listener) => {
                    if let Some(listener) = &listener {
                        accept_waiting(listener, &mut queue, &mut conns, &mut spare_fd);
                    }
                }
                Some(Token::Stop) => match stop.read_signal() {
                    Ok(Some(_)) if deadline.is_some() => break 'event_loop Ok(()),
                    Ok(Some(_)) => stop_requested = true,
                    // A spurious wakeup: nothing was pending after all.
                    Ok(None) => queue.push(wait_for_signal(&stop)),
                    Err(e) => break 'event_loop Err(e).context("signalfd"),
                },
                Some(Token::Cancel) => {}
                None => error!("a completion we never asked for: {cqe:?}"),
            }
        }
        if stop_requested {
            // After the turn's completions: bytes they received count as read.
            deadline = Some(Instant::now() + Duration::from_millis(grace_ms));
            queue.push(wait_for_signal(&stop));
            stop_accepting(&mut queue, listener.take());
            stop_reading(&mut queue, &mut conns);
        }
        if let Some(deadline) = deadline {
            if conns.is_empty() || Instant::now() >= deadline {
                break Ok(());
            }
        }
    };
    // ANCHOR_END: event_loop
    if !conns.is_empty() {
        info!(
            "closing {} that did not finish",
            count(conns.len(), "connection")
        );
    }
    // Whatever ended the loop, an error included.
    cancel_everything(&ring, conns);
    outcome
}

// ANCHOR: queue
/// An operation ready to submit. Only the functions below build one, and
/// each says what memory of ours, if any, the kernel will use until the
/// operation completes.
struct Submission(squeue::Entry);

/// Operations waiting for the turn's `io_uring_enter`.
#[derive(Default)]
struct Queue {
    pending: Vec<Submission>,
}

impl Queue {
    fn push(&mut self, submission: Submission) {
        self.pending.push(submission);
    }

    /// Submits every queued operation and waits for at least one
    /// completion, or until the deadline.
    fn submit_and_wait(&mut self, ring: &mut IoUring, deadline: Option<Instant>) -> Result<()> {
        for Submission(entry) in self.pending.drain(..) {
            // SAFETY: the entry points to memory that stays valid until its
            // completion, as the function that built it requires (`send`).
            while unsafe { ring.submission().push(&entry) }.is_err() {
                // The ring's submission queue is full: let the kernel take
                // what is there, and go on.
                ring.submit().context("io_uring_enter")?;
            }
        }
        let result = match deadline {
            None => ring.submit_and_wait(1),
            Some(deadline) => {
                // Rounded up: waking a little early would only make us wait again.
                let left = deadline.saturating_duration_since(Instant::now());
                let left = Timespec::from(left + Duration::from_micros(999));
                ring.submitter()
                    .submit_with_args(1, &SubmitArgs::new().timespec(&left))
            }
        };
        match result.map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0))) {
            // ETIME: the deadline passed; EINTR: a debugger, SIGSTOP;
            // EBUSY: completions overflowed, and we must read some first.
            Ok(_) | Err(Errno::ETIME | Errno::EINTR | Errno::EBUSY) => Ok(()),
            Err(e) => Err(e).context("io_uring_enter"),
        }
    }
}
// ANCHOR_END: queue

/// A completion's result: a count or a descriptor, or minus an errno.
fn errno_or(result: i32) -> Result<u32, Errno> {
    u32::try_from(result).map_err(|_| Errno::from_raw(-result))
}

// ANCHOR: ops
/// "Receive on this socket, into a buffer of the group, when data comes":
/// `recv(2)`, without waiting for readiness first.
fn recv(key: Key, conn: &mut Conn) -> Submission {
    conn.in_flight = Some(Op::Recv);
    // No buffer and no length of ours: with BUFFER_SELECT the kernel takes
    // a buffer of the group when bytes arrive, and fills what it can of it.
    // So this points to no memory of ours (the buffers are the ring's).
    let entry = opcode::Recv::new(Fd(conn.fd.as_raw_fd()), ptr::null_mut(), 0)
        .buf_group(RECV_GROUP)
        .build()
        .flags(squeue::Flags::BUFFER_SELECT);
    Submission(entry.user_data(Token::Conn(Op::Recv, key).into()))
}

/// "Send these replies": `send(2)`, and if the socket's buffer is full,
/// the waiting for room too.
///
/// # Safety
///
/// The kernel reads `conn.outgoing` until the completion: until then its
/// bytes must stay where they are, unchanged.
unsafe fn send(key: Key, conn: &mut Conn) -> Submission {
    conn.in_flight = Some(Op::Send);
    let unsent = conn.outgoing.data();
    // MSG_NOSIGNAL: a peer that has gone away makes this fail with EPIPE
    // instead of raising SIGPIPE.
    let entry = opcode::Send::new(
        Fd(conn.fd.as_raw_fd()),
        unsent.as_ptr(),
        unsent.len() as u32,
    )
    .flags(libc::MSG_NOSIGNAL)
    .build();
    Submission(entry.user_data(Token::Conn(Op::Send, key).into()))
}

/// "Tell me each time a client connects, until I say stop": `accept4(2)`
/// with `SOCK_CLOEXEC`, once per client. A multishot accept has no room
/// for the client's address, so it points to no memory.
fn accept_all(listener: &TcpListener) -> Submission {
    let entry = opcode::AcceptMulti::new(Fd(listener.as_raw_fd()))
        .flags(libc::SOCK_CLOEXEC)
        .build();
    Submission(entry.user_data(Token::Accept.into()))
}

/// "Tell me when a stop signal is pending": readiness, as one operation.
fn wait_for_signal(stop: &SignalFd) -> Submission {
    let entry = opcode::PollAdd::new(Fd(stop.as_raw_fd()), libc::POLLIN as u32).build();
    Submission(entry.user_data(Token::Stop.into()))
}

/// "Tell me when a client waits on the listener": see `accepted`.
fn wait_for_client(listener: &TcpListener) -> Submission {
    let entry = opcode::PollAdd::new(Fd(listener.as_raw_fd()), libc::POLLIN as u32).build();
    Submission(entry.user_data(Token::Listener.into()))
}

/// "Stop that operation": it completes with ECANCELED, unless it completed first.
fn cancel(token: Token) -> Submission {
    let entry = opcode::AsyncCancel::new(token.into()).build();
    Submission(entry.user_data(Token::Cancel.into()))
}
// ANCHOR_END: ops

// ANCHOR: resume
/// After a completion: the connection's next operation, or its end.
fn resume(queue: &mut Queue, conns: &mut Connections, key: Key) {
    let Some(conn) = conns.get_mut(key) else {
        return;
    };
    match conn.state {
        State::Reading | State::Closing => queue.push(recv(key, conn)),
        // SAFETY: nothing changes or frees `conn.outgoing` before the send
        // completes. Its bytes live in heap memory that stays put when the
        // `Conn` moves; only a completion for this connection touches its
        // buffers (`in_flight` says one is due); a buffer with bytes keeps
        // its memory (`Buf::release`); a connection is removed only with
        // nothing in flight, or after every operation is cancelled
        // (`cancel_everything`).
        State::Writing => queue.push(unsafe { send(key, conn) }),
        // Nothing in flight: the kernel holds nothing of it.
        State::Done => remove(conns, key),
    }
}
// ANCHOR_END: resume

// ANCHOR: recv
/// A receive completed: with bytes, with EOF (no bytes), or with an error.
fn on_recv(conn: &mut Conn, received: Result<&[u8], Errno>, pool: &mut Pool) {
    let fd = conn.fd.as_raw_fd();
    match (conn.state, received) {
        // Our cancellation lost the race: the bytes are not wanted.
        (State::Done, _) => {}
        (_, Ok([])) => {
            // EOF. Nothing is lost by closing now: we only receive in
            // `Reading`, when every frame received so far has been answered
            // and sent, or in `Closing`, waiting for exactly this.
            if conn.state == State::Reading && !conn.incoming.is_empty() {
                debug!("fd {fd}: EOF in the middle of a frame");
            }
            conn.state = State::Done;
        }
        // Dropped: we answer no more requests.
        (State::Closing, Ok(_)) => {}
        (_, Ok(bytes)) => {
            // A stop answers what had arrived when it came, and no more.
            let bytes = match &mut conn.read_limit {
                Some(limit) => {
                    let n = bytes.len().min(*limit);
                    *limit -= n;
                    &bytes[..n]
                }
                None => bytes,
            };
            // While `Reading` the buffer holds at most part of one frame, so
            // a receive's worth always fits.
            if conn.incoming.append(bytes, pool) {
                answer_requests(conn, pool);
            } else {
                error!("fd {fd}: no room for {} bytes received", bytes.len());
                conn.state = State::Done;
            }
        }
        // Every buffer was taken when the bytes came. They wait in the
        // socket; the turn gives buffers back before the receive goes again.
        (_, Err(Errno::ENOBUFS)) => debug!("fd {fd}: no receive buffer free: receiving again"),
        (_, Err(Errno::EAGAIN | Errno::EINTR)) => {}
        (_, Err(e)) => {
            // ECONNRESET, say: the peer is gone, which is its right.
            debug!("fd {fd}: recv: {e}");
            conn.state = State::Done;
        }
    }
    conn.incoming.release(pool);
    conn.outgoing.release(pool);
}
// ANCHOR_END: recv

// ANCHOR: send
/// A send completed: all of the replies went out, part of them, or none.
fn on_send(conn: &mut Conn, sent: Result<u32, Errno>, pool: &mut Pool) {
    match (conn.state, sent) {
        (State::Done, _) => {}
        (_, Ok(n)) => {
            conn.outgoing.consume(n as usize);
            // A short send leaves us `Writing`: the rest goes next.
            if conn.outgoing.is_empty() {
                conn.state = State::Reading;
                // The frames that waited for room in the write buffer.
                answer_requests(conn, pool);
            }
        }
        (_, Err(Errno::EAGAIN | Errno::EINTR)) => {}
        (_, Err(e)) => {
            // EPIPE or ECONNRESET: the peer is gone, which is its right.
            debug!("fd {}: send: {e}", conn.fd.as_raw_fd());
            conn.state = State::Done;
        }
    }
    conn.incoming.release(pool);
    conn.outgoing.release(pool);
}
// ANCHOR_END: send

// ANCHOR: parse
/// Appends the reply to every whole frame in the read buffer to the write
/// buffer, while it has room: many replies, to go out in one send.
fn try_requests(conn: &mut Conn, pool: &mut Pool) {
    loop {
        let len = match parse_frame(conn.incoming.data()) {
            Parse::Incomplete => return,
            Parse::TooLong { announced } => {
                let fd = conn.fd.as_raw_fd();
                debug!("fd {fd}: frame of {announced} bytes is too long: closing");
                // Every frame before it is answered; nothing after it can be.
                conn.incoming.clear();
                conn.read_limit = Some(0);
                return;
            }
            Parse::Frame { len } => len,
        };
        // The echo reply is the request frame itself.
        if !conn.outgoing.append(&conn.incoming.data()[..len], pool) {
            // Full: the rest waits until the replies drain (backpressure).
            return;
        }
        conn.incoming.consume(len);
    }
}

/// Answers the whole frames in the read buffer. Ends `Writing` with replies
/// to send, or still `Reading`, or `Closing` if no more requests will come.
fn answer_requests(conn: &mut Conn, pool: &mut Pool) {
    try_requests(conn, pool);
    if !conn.outgoing.is_empty() {
        conn.state = State::Writing;
    } else {
        finish_if_no_more_requests(conn);
    }
}
// ANCHOR_END: parse

// ANCHOR: close
/// Once a connection will read no more requests (it sent a bad frame, or
/// the server is stopping) and every reply is sent, we shut down our
/// sending side and wait for the client's EOF, as in chapter 9: `close`
/// with unread input would send a reset and lose the replies in flight.
fn finish_if_no_more_requests(conn: &mut Conn) {
    if conn.read_limit != Some(0) || conn.state != State::Reading {
        return;
    }
    if !conn.incoming.is_empty() {
        debug!("fd {}: dropping half a frame", conn.fd.as_raw_fd());
        conn.incoming.clear();
    }
    conn.state = match net::shutdown_write(&conn.fd) {
        Ok(()) => State::Closing,
        Err(_) => State::Done, // the peer is gone already
    };
}
// ANCHOR_END: close

// ANCHOR: accept
/// A completion of the multishot accept: a new connection, or why none;
/// `more` if the accept stays armed.
fn accepted(
    result: Result<u32, Errno>,
    more: bool,
    queue: &mut Queue,
    conns: &mut Connections,
    listener: Option<&TcpListener>,
) {
    // SAFETY: the kernel just installed this descriptor for us, as accept4
    // would have; nothing else owns it.
    let result = result.map(|fd| unsafe { OwnedFd::from_raw_fd(fd as i32) });
    let Some(listener) = listener else {
        // Stopping: a connection that beat the cancellation is closed.
        return;
    };
    match result.map_err(AcceptError::from) {
        Ok(fd) => add_conn(fd, queue, conns),
        // One client failed, or a signal came: on to the next.
        Err(AcceptError::Empty | AcceptError::Retry(_)) => {}
        // Out of descriptors, the multishot accept fails at once, before it
        // even looks for a client: submitted again, it would fail again, at
        // once, for ever. So we go back to readiness: a poll tells us when
        // someone waits, and `accept_waiting` serves or turns them away.
        Err(AcceptError::NoFds(_)) => {
            queue.push(wait_for_client(listener));
            return;
        }
        // The others wait: the accept is submitted again with this turn.
        Err(e @ AcceptError::NoMemory(_)) => warn!("accept: {e}"),
        Err(e @ AcceptError::Fatal(_)) => {
            error!("accept: {e}");
            queue.push(wait_for_client(listener));
            return;
        }
    }
    // Any error ends a multishot accept; so may a full completion queue.
    if !more {
        queue.push(accept_all(listener));
    }
}

/// Sets up a new connection and submits its first receive.
fn add_conn(fd: OwnedFd, queue: &mut Queue, conns: &mut Connections) {
    // We send each batch of replies as soon as it is ready: see chapter 4.
    if let Err(e) = net::set_nodelay(&fd) {
        error!("setsockopt(TCP_NODELAY): {e}");
    }
    let key = conns.insert(Conn::new(fd));
    let conn = conns.get_mut(key).expect("just inserted");
    queue.push(recv(key, conn));
}

/// The listener is readable and we may be out of descriptors: chapter 9's
/// `accept` loop, with its spare descriptor, then the multishot accept again.
fn accept_waiting(
    listener: &TcpListener,
    queue: &mut Queue,
    conns: &mut Connections,
    spare_fd: &mut Option<File>,
) {
    loop {
        match accept_nonblocking(listener) {
            Ok(fd) => add_conn(fd, queue, conns),
            Err(AcceptError::Empty) => break,
            Err(AcceptError::Retry(_)) => continue,
            Err(AcceptError::NoFds(_)) => {
                if !turn_away_one(listener, spare_fd) {
                    break;
                }
            }
            Err(e @ AcceptError::NoMemory(_)) => {
                warn!("accept: {e}");
                break;
            }
            Err(e @ AcceptError::Fatal(_)) => {
                // Nothing will fix the listener: stop accepting.
                error!("accept: {e}");
                return;
            }
        }
    }
    queue.push(accept_all(listener));
}

/// Chapter 9's spare descriptor: give it up, accept the connection, close
/// it at once (the client sees a clean close instead of waiting forever),
/// take the spare back. Returns true if it turned a connection away.
fn turn_away_one(listener: &TcpListener, spare_fd: &mut Option<File>) -> bool {
    drop(spare_fd.take());
    let turned_away = accept_nonblocking(listener).is_ok();
    if turned_away {
        warn!("out of file descriptors: turned a connection away");
    }
    *spare_fd = File::open("/dev/null").ok();
    turned_away
}
// ANCHOR_END: accept

// ANCHOR: stop
/// Stops accepting: cancels the accept (or the poll that stands in for it)
/// and closes the listener. The kernel keeps its own reference to the
/// socket while an operation uses it: closing our descriptor alone would
/// leave the accept running, and the port open.
fn stop_accepting(queue: &mut Queue, listener: Option<TcpListener>) {
    queue.push(cancel(Token::Accept));
    queue.push(cancel(Token::Listener));
    drop(listener);
}

/// A stop answers what each client had sent when the signal came, and no
/// more: the bytes in our buffer and in the socket's receive queue. (The
/// kernel counts those only up to an urgent mark, if there is one: frames
/// behind a byte of urgent data, a rarity, go unanswered.) No receive
/// completes while we count: with DEFER_TASKRUN they complete only
/// inside our `io_uring_enter`, and this turn's completions are all handled.
fn stop_reading(queue: &mut Queue, conns: &mut Connections) {
    info!(
        "stopping: letting {} finish",
        count(conns.len(), "connection")
    );
    for key in conns.keys() {
        let conn = conns.get_mut(key).expect("a key just listed");
        let unread = net::unread_bytes(&conn.fd).unwrap_or(0);
        conn.read_limit = Some(conn.read_limit.map_or(unread, |limit| limit.min(unread)));
        finish_if_no_more_requests(conn);
        // A finished connection is removed once nothing of it is in flight.
        // (Every connection has an operation in flight, see `resume`.)
        if conn.state == State::Done {
            match conn.in_flight {
                Some(op) => queue.push(cancel(Token::Conn(op, key))),
                None => remove(conns, key),
            }
        }
    }
}

/// Cancels every operation still in flight and waits until the kernel has
/// let go of them, before the buffers they point into are freed with `conns`.
fn cancel_everything(ring: &IoUring, conns: Connections) {
    let wait = Timespec::new().sec(1);
    match ring
        .submitter()
        .register_sync_cancel(Some(wait), CancelBuilder::any())
    {
        Ok(()) => {}
        // Nothing was in flight.
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        Err(e) => {
            // Never seen; but freeing memory the kernel may still write
            // into is worse than leaking it as we exit.
            error!("cancelling the operations in flight: {e}");
            std::mem::forget(conns);
        }
    }
}
// ANCHOR_END: stop

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_survive_the_round_trip() {
        let mut slab = Slab::default();
        let key = slab.insert(());
        for token in [
            Token::Accept,
            Token::Listener,
            Token::Stop,
            Token::Cancel,
            Token::Conn(Op::Recv, key),
            Token::Conn(Op::Send, Key::RESERVED),
        ] {
            assert_eq!(Token::from_user_data(token.into()), Some(token));
        }
        assert_eq!(Token::from_user_data(u64::MAX), None);
    }

    #[test]
    fn a_reused_slot_does_not_answer_to_the_old_key() {
        let mut conns = Connections::default();
        let fd = || OwnedFd::from(File::open("/dev/null").unwrap());
        let old = conns.insert(Conn::new(fd()));
        remove(&mut conns, old);
        let new = conns.insert(Conn::new(fd()));
        assert_eq!(
            new.to_u64() as u32,
            old.to_u64() as u32,
            "the slot is reused"
        );
        assert!(conns.get_mut(old).is_none(), "the old key finds nothing");
        assert!(conns.get_mut(new).is_some());
        assert_eq!(conns.keys(), [new]);
    }
}
