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
use std::io;
use std::mem;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::ExitCode;
use std::ptr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use buffer::{Buf, Pool, MAX_CAPACITY};
use bufring::{BufRing, Filled};
use common::args::Args;
use common::frame::{parse_frame, Parse, MAX_FRAME};
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

/// Memory per connection: this struct plus, while bytes are in it, a read
/// buffer (see `buffer.rs`). A receive takes one of the ring's buffers
/// (`bufring.rs`) only when bytes arrive, so a quiet connection holds none,
/// though a receive always waits for it.
struct Conn {
    fd: OwnedFd,
    state: State,
    /// Received bytes not yet answered (at most part of a frame while
    /// `Reading`).
    incoming: Buf,
    /// The ring's buffer that a receive filled, kept while the whole frames
    /// at its front are sent straight back from it; else they are sent from
    /// the front of `incoming`. While a send is in flight the kernel reads
    /// them: nothing may change or move them until its completion.
    held: Option<Filled>,
    /// How many bytes of replies are not yet sent: whole frames, the reply
    /// to a frame being the frame itself.
    unsent: usize,
    /// How many more bytes we will answer: no limit while serving; once
    /// the requests are over (a bad frame, a stop), what had arrived by then.
    read_limit: Option<usize>,
    /// The operation the kernel is doing for it: never more than one.
    in_flight: Option<Op>,
}
// ANCHOR_END: conn

impl Conn {
    /// The replies not yet sent.
    fn unsent<'a>(&'a self, bufring: &'a BufRing) -> &'a [u8] {
        let front = match &self.held {
            Some(filled) => bufring.bytes(filled),
            None => self.incoming.data(),
        };
        &front[..self.unsent]
    }

    fn new(fd: OwnedFd) -> Conn {
        Conn {
            fd,
            state: State::Reading,
            incoming: Buf::default(),
            held: None,
            unsent: 0,
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
    /// A pause before accepting again, while the kernel is short of memory.
    AcceptPause,
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
            Token::AcceptPause => (6, None),
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
            6 => Token::AcceptPause,
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
/// Receive buffers for the kernel, shared by every connection, unless
/// `--recv-buffers` says: 32 lent at first, more when a receive finds none
/// (see `bufring.rs`). The receives that complete in one turn take one each
/// (with 100 clients, up to 100); a connection keeps its buffer while it
/// sends from it.
const DEFAULT_RECV_BUFFERS: u16 = 128;
/// Their size: a receive takes what the socket holds, up to this. At
/// 4 KiB frames, 16 in flight from a client are 64 KiB and more: the
/// larger the buffer, the fewer receives and sends move them. 128 of
/// 128 KiB: 16 MiB of address space, in memory only where written.
const RECV_BUFFER_SIZE: u32 = 128 << 10;
// A receive's worth always fits in a read buffer that holds part of a frame.
const _: () = assert!(RECV_BUFFER_SIZE as usize + MAX_FRAME <= MAX_CAPACITY);
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
        "receive buffers of 128 KiB lent to the kernel, shared by all connections (a power of 2)",
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
    let mut uring = Uring {
        ring: new_ring(!no_defer_taskrun)?,
        conns: Connections::default(),
    };
    let Uring { ring, conns } = &mut uring;
    let mut bufring = BufRing::new(ring, RECV_GROUP, recv_buffers, RECV_BUFFER_SIZE)
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
    let mut pool = Pool::default();
    let mut completions: Vec<cqueue::Entry> = Vec::with_capacity(CQ_ENTRIES as usize);
    // Set when a stop signal arrives: the moment we give up on stragglers.
    let mut deadline: Option<Instant> = None;
    let outcome = 'event_loop: loop {
        // The one system call of the turn: every operation queued since the
        // last one goes in, and we wait for at least one completion.
        if let Err(e) = queue.submit_and_wait(ring, deadline) {
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
                        Op::Recv => {
                            let received = bufring.take(result, cqe.flags());
                            on_recv(conn, received, &mut bufring, &mut pool);
                        }
                        Op::Send => on_send(conn, result, &mut bufring, &mut pool),
                    }
                    resume(&mut queue, conns, key, &mut bufring);
                }
                Some(Token::Accept) => {
                    let more = cqueue::more(cqe.flags());
                    accepted(result, more, &mut queue, conns, listener.as_ref());
                }
                Some(Token::Listener) => {
                    if let Some(listener) = &listener {
                        accept_waiting(listener, &mut queue, conns, &mut spare_fd);
                    }
                }
                Some(Token::AcceptPause) => {
                    if let Some(listener) = &listener {
                        queue.push(accept_all(listener));
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
            stop_reading(&mut queue, conns);
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
    // Dropping `uring` cancels what is in flight, then frees the buffers.
    outcome
}

// ANCHOR: owner
/// The ring, and the connections whose write buffers its sends read: owned
/// together, so that they go in the one safe order however `serve` ends,
/// by returning, with an error, or unwinding from a panic.
struct Uring {
    ring: IoUring,
    conns: Connections,
}

impl Drop for Uring {
    /// Runs before the fields are dropped: first the kernel lets go of our
    /// memory, then the buffers are freed. The other order is the danger:
    /// a send that waits for room, freed under it and completed later,
    /// would copy freed memory to a client (without DEFER_TASKRUN the
    /// kernel finishes it in our thread, on its way out of any system call).
    fn drop(&mut self) {
        if !cancel_everything(&self.ring) {
            // Freeing memory the kernel may still read is worse than
            // leaking it as we exit.
            mem::forget(mem::take(&mut self.conns));
        }
    }
}
// ANCHOR_END: owner

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
        let mut pushed = 0;
        'push: for Submission(entry) in &self.pending {
            // SAFETY: the entry points to memory that stays valid until its
            // completion, as the function that built it requires (`send`).
            while unsafe { ring.submission().push(entry) }.is_err() {
                // The ring's submission queue is full: let the kernel take
                // what is there, and go on.
                if entered(ring.submit())? == Entered::Busy {
                    // It wants its completions read first: the rest waits
                    // in our queue for the next turn.
                    break 'push;
                }
            }
            pushed += 1;
        }
        self.pending.drain(..pushed);
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
        entered(result).map(drop)
    }
}

/// What an `io_uring_enter` that did not fail outright means for the loop.
#[derive(Debug, PartialEq, Eq)]
enum Entered {
    /// The kernel took the submissions; or the wait ended: completions,
    /// the deadline (ETIME), or a signal for a debugger or SIGSTOP (EINTR).
    Done,
    /// The completion queue overflowed (EBUSY), or the kernel is short of
    /// memory for requests (EAGAIN): read completions, then try again.
    Busy,
}

/// Sorts an `io_uring_enter`'s result: only an error that no retry can
/// fix (EBADF, EFAULT, ...) ends the loop.
fn entered(result: io::Result<usize>) -> Result<Entered> {
    match result.map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0))) {
        Ok(_) | Err(Errno::ETIME | Errno::EINTR) => Ok(Entered::Done),
        Err(Errno::EBUSY | Errno::EAGAIN) => Ok(Entered::Busy),
        Err(e) => Err(e).context("io_uring_enter"),
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
/// The kernel reads the replies, in `conn.held` or `conn.incoming`, until
/// the completion: until then they must stay where they are, unchanged.
unsafe fn send(key: Key, conn: &mut Conn, bufring: &BufRing) -> Submission {
    conn.in_flight = Some(Op::Send);
    let unsent = conn.unsent(bufring);
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

/// "Tell me when `ACCEPT_PAUSE` has passed": a timer, as one operation. The
/// kernel reads the duration when it takes the submission, from memory
/// that lives as long as the program.
fn pause_accepting() -> Submission {
    static PAUSE: Timespec = Timespec::new().nsec(ACCEPT_PAUSE.subsec_nanos());
    let entry = opcode::Timeout::new(&PAUSE).build();
    Submission(entry.user_data(Token::AcceptPause.into()))
}

/// "Stop that operation": it completes with ECANCELED, unless it completed first.
fn cancel(token: Token) -> Submission {
    let entry = opcode::AsyncCancel::new(token.into()).build();
    Submission(entry.user_data(Token::Cancel.into()))
}
// ANCHOR_END: ops

// ANCHOR: resume
/// After a completion: the connection's next operation, or its end.
fn resume(queue: &mut Queue, conns: &mut Connections, key: Key, bufring: &mut BufRing) {
    let Some(conn) = conns.get_mut(key) else {
        return;
    };
    match conn.state {
        State::Reading | State::Closing => queue.push(recv(key, conn)),
        // SAFETY: nothing changes or frees the replies before the send
        // completes. The ring's buffers live for ever, and one we hold is
        // given back only once its replies are sent or the connection is
        // done. The bytes of `conn.incoming` live in heap memory that stays
        // put when the `Conn` moves; only a completion for this connection
        // touches its buffers (`in_flight` says one is due), and only a
        // receive appends to them, while no receive is in flight in
        // `Writing`; a buffer with bytes keeps its memory (`Buf::release`);
        // a connection is removed only with nothing in flight; and the
        // table itself is freed only after every operation is cancelled and
        // done (`Uring`'s `drop`), even when a panic unwinds.
        State::Writing => queue.push(unsafe { send(key, conn, bufring) }),
        // Nothing in flight: the kernel holds nothing of it.
        State::Done => {
            if let Some(filled) = conn.held.take() {
                bufring.give_back(filled);
            }
            remove(conns, key);
        }
    }
}
// ANCHOR_END: resume

// ANCHOR: recv
/// A receive completed: with bytes, in a buffer of the ring, with EOF (no
/// bytes), or with an error.
fn on_recv(
    conn: &mut Conn,
    received: Result<Option<Filled>, Errno>,
    bufring: &mut BufRing,
    pool: &mut Pool,
) {
    let fd = conn.fd.as_raw_fd();
    match (conn.state, received) {
        // Our cancellation lost the race, or we answer no more requests:
        // the bytes are not wanted.
        (State::Done | State::Closing, Ok(Some(filled))) => bufring.give_back(filled),
        (State::Done, _) => {}
        (_, Ok(None)) => {
            // EOF. Nothing is lost by closing now: we only receive in
            // `Reading`, when every frame received so far has been answered
            // and sent, or in `Closing`, waiting for exactly this.
            if conn.state == State::Reading && !conn.incoming.is_empty() {
                debug!("fd {fd}: EOF in the middle of a frame");
            }
            conn.state = State::Done;
        }
        (_, Ok(Some(mut filled))) => {
            // A stop answers what had arrived when it came, and no more.
            if let Some(limit) = &mut conn.read_limit {
                filled.truncate(*limit);
                *limit -= filled.len();
            }
            answer_requests(conn, filled, bufring, pool);
        }
        // Every buffer was taken when the bytes came. They wait in the
        // socket; the turn gives buffers back before the receive goes
        // again, and the ring lends more, while it has more.
        (_, Err(Errno::ENOBUFS)) => {
            let more = if bufring.grow() {
                ", with more buffers"
            } else {
                ""
            };
            debug!("fd {fd}: no receive buffer free: receiving again{more}");
        }
        (_, Err(Errno::EAGAIN | Errno::EINTR)) => {}
        (_, Err(e)) => {
            // ECONNRESET, say: the peer is gone, which is its right.
            debug!("fd {fd}: recv: {e}");
            conn.state = State::Done;
        }
    }
    conn.incoming.release(pool);
}
// ANCHOR_END: recv

// ANCHOR: send
/// A send completed: all of the replies went out, part of them, or none.
fn on_send(conn: &mut Conn, sent: Result<u32, Errno>, bufring: &mut BufRing, pool: &mut Pool) {
    match (conn.state, sent) {
        (State::Done, _) => {}
        (_, Ok(n)) => {
            match &mut conn.held {
                Some(filled) => filled.consume(n as usize),
                None => conn.incoming.consume(n as usize),
            }
            conn.unsent -= n as usize;
            // A short send leaves us `Writing`: the rest goes next. Once all
            // are out, what is left is at most part of a frame: receive more.
            if conn.unsent == 0 {
                if let Some(filled) = conn.held.take() {
                    bufring.give_back(filled);
                }
                conn.state = State::Reading;
                finish_if_no_more_requests(conn);
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
}
// ANCHOR_END: send

// ANCHOR: parse
/// The length of the whole frames at the front of `data`, and how much of
/// `data` to keep: all of it, unless a frame announces too much. That ends
/// the requests: the frames before it are answered; it, and whatever
/// follows it, are dropped.
fn whole_frames(data: &[u8], read_limit: &mut Option<usize>) -> (usize, usize) {
    let mut whole = 0;
    loop {
        match parse_frame(&data[whole..]) {
            Parse::Frame { len } => whole += len,
            Parse::Incomplete => return (whole, data.len()),
            Parse::TooLong { announced } => {
                debug!("frame of {announced} bytes is too long: closing");
                *read_limit = Some(0);
                return (whole, whole);
            }
        }
    }
}

/// Answers every whole frame received, all with one send. The reply to a
/// frame is the frame itself, so the replies go out straight from the
/// buffer the kernel received them into, when it starts with a frame (it
/// usually does); only the start of a frame after them is copied, to the
/// read buffer, to wait for the rest. Ends `Writing` with replies to send,
/// or still `Reading`, or `Closing` if no more requests will come.
fn answer_requests(conn: &mut Conn, filled: Filled, bufring: &mut BufRing, pool: &mut Pool) {
    let received = bufring.bytes(&filled);
    if conn.incoming.is_empty() && bufring.can_keep() {
        let (whole, keep) = whole_frames(received, &mut conn.read_limit);
        if whole > 0 {
            let rest = &received[whole..keep];
            if !rest.is_empty() {
                let fits = conn.incoming.append(rest, pool);
                debug_assert!(fits, "less than a frame always fits");
            }
            conn.unsent = whole;
            conn.held = Some(filled);
            conn.state = State::Writing;
            return;
        }
    }
    // While `Reading` the read buffer holds at most part of one frame, so
    // a receive's worth always fits.
    let appended = conn.incoming.append(received, pool);
    bufring.give_back(filled);
    if !appended {
        error!("fd {}: no room for the bytes received", conn.fd.as_raw_fd());
        conn.state = State::Done;
        return;
    }
    let (whole, keep) = whole_frames(conn.incoming.data(), &mut conn.read_limit);
    conn.incoming.truncate(keep);
    conn.unsent = whole;
    if whole > 0 {
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
/// Out of memory, or out of descriptors with none to spare for turning a
/// client away, accepting again at once would fail again at once: how long
/// to pause first. Chapter 14's pause, as an operation of the ring.
const ACCEPT_PAUSE: Duration = Duration::from_millis(10);

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
    let error = match result.map_err(AcceptError::from) {
        Ok(fd) => {
            add_conn(fd, queue, conns);
            None
        }
        Err(e) => Some(e),
    };
    if more {
        // Still armed: the next client comes by itself.
        return;
    }
    // Any error ends a multishot accept; so may a full completion queue.
    match error {
        // One client failed, or a signal came: on to the next, at once.
        None | Some(AcceptError::Empty | AcceptError::Retry(_)) => queue.push(accept_all(listener)),
        // Out of descriptors, the multishot accept fails at once, before it
        // even looks for a client: submitted again, it would fail again, at
        // once, for ever. So we go back to readiness: a poll tells us when
        // someone waits, and `accept_waiting` serves or turns them away.
        Some(AcceptError::NoFds(_)) => queue.push(wait_for_client(listener)),
        // The others wait in the backlog while the kernel recovers.
        Some(e @ AcceptError::NoMemory(_)) => {
            warn!("accept: {e}");
            queue.push(pause_accepting());
        }
        Some(e @ AcceptError::Fatal(_)) => {
            error!("accept: {e}");
            queue.push(wait_for_client(listener));
        }
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
/// `accept` loop, with its spare descriptor, then the multishot accept
/// again, at once or after a pause.
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
            // One client failed: on to the next.
            Err(AcceptError::Retry(_)) => continue,
            Err(AcceptError::NoFds(_)) => match turn_away_one(listener, spare_fd) {
                TurnAway::Done => continue,
                TurnAway::NobodyWaiting => break,
                TurnAway::Later => {
                    queue.push(pause_accepting());
                    return;
                }
            },
            Err(e @ AcceptError::NoMemory(_)) => {
                warn!("accept: {e}");
                queue.push(pause_accepting());
                return;
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

/// What came of trying to turn a connection away.
enum TurnAway {
    /// One client was accepted and closed at once (or failed by itself): go on.
    Done,
    /// The backlog was empty after all.
    NobodyWaiting,
    /// Not even one descriptor to do it with: try again later.
    Later,
}

/// Chapter 9's spare descriptor: give it up, accept the connection into the
/// number it frees, close it at once (the client sees a clean close instead
/// of waiting forever), take the spare back.
fn turn_away_one(listener: &TcpListener, spare_fd: &mut Option<File>) -> TurnAway {
    // A spare we could not take back last time (another process took the
    // number: the system-wide limit, ENFILE) may be free again.
    let Some(spare) = spare_fd.take().or_else(|| File::open("/dev/null").ok()) else {
        return TurnAway::Later;
    };
    drop(spare);
    let outcome = match accept_nonblocking(listener) {
        Ok(_closed_at_once) => {
            warn!("out of file descriptors: turned a connection away");
            TurnAway::Done
        }
        Err(AcceptError::Empty) => TurnAway::NobodyWaiting,
        Err(AcceptError::Retry(_)) => TurnAway::Done,
        Err(_) => TurnAway::Later,
    };
    *spare_fd = File::open("/dev/null").ok();
    outcome
}
// ANCHOR_END: accept

// ANCHOR: stop
/// Stops accepting: cancels the accept (or the poll or the pause that
/// stands in for it) and closes the listener. The kernel keeps its own
/// reference to the socket while an operation uses it: closing our
/// descriptor alone would leave the accept running, and the port open.
/// An accept this turn queued but did not submit yet is dropped: submitted
/// after the `close`, it would name a descriptor number that is free, or
/// by then another file's.
fn stop_accepting(queue: &mut Queue, listener: Option<TcpListener>) {
    let accepting = [Token::Accept, Token::Listener, Token::AcceptPause];
    queue
        .pending
        .retain(|s| !accepting.map(u64::from).contains(&s.0.get_user_data()));
    for token in accepting {
        queue.push(cancel(token));
    }
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
/// let go of them. False if it could not say that it has.
fn cancel_everything(ring: &IoUring) -> bool {
    let wait = Timespec::new().sec(1);
    match ring
        .submitter()
        .register_sync_cancel(Some(wait), CancelBuilder::any())
    {
        Ok(()) => true,
        // Nothing was in flight.
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => true,
        Err(e) => {
            error!("cancelling the operations in flight: {e}");
            false
        }
    }
}
// ANCHOR_END: stop

#[cfg(test)]
#[path = "../tests/uring/mod.rs"]
mod uring;

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::TcpStream;
    use std::panic::{self, AssertUnwindSafe};

    use super::*;

    /// Operations the kernel is still waiting on (armed polls), and
    /// completions posted, in the ring with this descriptor.
    fn ring_state(ring_fd: &OwnedFd) -> (usize, u32) {
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", ring_fd.as_raw_fd()))
            .expect("the ring's fdinfo");
        let waiting = info
            .lines()
            .skip_while(|l| !l.starts_with("PollList:"))
            .skip(1)
            .take_while(|l| l.starts_with("  op="))
            .count();
        let cq_tail = info
            .lines()
            .find_map(|l| l.strip_prefix("CqTail:"))
            .and_then(|n| n.trim().parse().ok())
            .expect("CqTail in the ring's fdinfo");
        (waiting, cq_tail)
    }

    /// A connection with a send in flight that waits for room: its peer
    /// reads nothing, and its socket's send buffer is already full.
    fn a_send_waiting_for_room(uring: &mut Uring, pool: &mut Pool) -> TcpStream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut socket, _) = listener.accept().unwrap();
        socket.set_nonblocking(true).unwrap();
        while socket.write(&[1; 1 << 16]).is_ok() {}
        let key = uring.conns.insert(Conn::new(socket.into()));
        let conn = uring.conns.get_mut(key).unwrap();
        let mut request = Vec::new();
        common::frame::encode_frame(&[2; 4092], &mut request);
        assert!(conn.incoming.append(&request, pool));
        conn.unsent = request.len();
        conn.state = State::Writing;
        let bufring = BufRing::new(&uring.ring, RECV_GROUP, 1, 4096).unwrap();
        // SAFETY: `incoming` stays as it is until the owner is dropped; the
        // point of the test is what that drop does.
        let Submission(entry) = unsafe { send(key, conn, &bufring) };
        // SAFETY: as above.
        unsafe { uring.ring.submission().push(&entry) }.unwrap();
        uring.ring.submit().unwrap();
        peer
    }

    #[test]
    fn a_panic_cancels_what_the_kernel_holds_before_freeing_it() {
        if uring::unavailable() {
            return;
        }
        let mut pool = Pool::default();
        // Without DEFER_TASKRUN: where a send freed under it could run.
        let mut uring = Uring {
            ring: new_ring(false).unwrap(),
            conns: Connections::default(),
        };
        let _peer = a_send_waiting_for_room(&mut uring, &mut pool);
        // A second descriptor keeps the ring alive after `uring` is dropped,
        // so we can look at what it still holds.
        // SAFETY: dup takes a descriptor we own, and returns a new one (or
        // -1), which nothing else owns.
        let ring_fd = unsafe { libc::dup(uring.ring.as_raw_fd()) };
        assert!(ring_fd >= 0, "dup: {}", io::Error::last_os_error());
        // SAFETY: as above.
        let ring_fd = unsafe { OwnedFd::from_raw_fd(ring_fd) };
        assert_eq!(ring_state(&ring_fd), (1, 0), "the send waits for room");
        let unwound = panic::catch_unwind(AssertUnwindSafe(move || {
            let _owner = uring;
            panic!("a bug in the loop, say");
        }));
        assert!(unwound.is_err());
        assert_eq!(
            ring_state(&ring_fd),
            (0, 1),
            "the buffers were freed with the send still in flight, not cancelled"
        );
    }

    fn tokens(queue: &Queue) -> Vec<Token> {
        let data = queue.pending.iter().map(|s| s.0.get_user_data());
        data.map(|d| Token::from_user_data(d).unwrap()).collect()
    }

    #[test]
    fn accept_errors_keep_accepting_and_pause_when_short_of_memory() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut conns = Connections::default();
        let mut after = |error: Errno, more: bool| {
            let mut queue = Queue::default();
            accepted(Err(error), more, &mut queue, &mut conns, Some(&listener));
            tokens(&queue)
        };
        // One client's failure: the next client is accepted at once.
        assert_eq!(after(Errno::ECONNABORTED, false), [Token::Accept]);
        assert_eq!(after(Errno::EINTR, false), [Token::Accept]);
        // Out of descriptors: readiness tells when someone waits.
        assert_eq!(after(Errno::EMFILE, false), [Token::Listener]);
        // Short of memory: accepting again at once would fail at once.
        assert_eq!(after(Errno::ENOBUFS, false), [Token::AcceptPause]);
        assert_eq!(after(Errno::ENOMEM, false), [Token::AcceptPause]);
        // Still armed: nothing to submit.
        assert_eq!(after(Errno::ECONNABORTED, true), []);
    }

    #[test]
    fn stopping_drops_the_accepts_not_yet_submitted() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut queue = Queue::default();
        // This turn's completions re-armed the accept, then the stop came.
        queue.push(accept_all(&listener));
        queue.push(wait_for_client(&listener));
        queue.push(pause_accepting());
        let other = opcode::Nop::new().build().user_data(Token::Stop.into());
        queue.push(Submission(other));
        stop_accepting(&mut queue, Some(listener));
        // Submitted after the close, they would name a free descriptor
        // number, or another file's.
        assert_eq!(
            tokens(&queue),
            [Token::Stop, Token::Cancel, Token::Cancel, Token::Cancel]
        );
    }

    #[test]
    fn a_full_submission_queue_loses_no_operation() {
        if uring::unavailable() {
            return;
        }
        // Room for 4 submissions, and 100 to submit: most go in through
        // the full queue's path.
        let mut ring = IoUring::builder().build(4).unwrap();
        let mut queue = Queue::default();
        for _ in 0..100 {
            queue.push(Submission(
                opcode::Nop::new().build().user_data(Token::Cancel.into()),
            ));
        }
        let mut completed = 0;
        for _ in 0..100 {
            queue.submit_and_wait(&mut ring, None).unwrap();
            completed += ring.completion().count();
            if completed == 100 {
                break;
            }
        }
        assert_eq!((completed, queue.pending.len()), (100, 0));
    }

    #[test]
    fn a_connection_that_fails_gives_back_the_buffer_it_sends_from() {
        if uring::unavailable() {
            return;
        }
        let ring = new_ring(true).unwrap();
        // Two buffers: one may be kept while the other receives.
        let mut bufring = BufRing::new(&ring, RECV_GROUP, 2, 4096).unwrap();
        let (mut pool, mut queue) = (Pool::default(), Queue::default());
        let mut conns = Connections::default();
        let key = conns.insert(Conn::new(File::open("/dev/null").unwrap().into()));
        let conn = conns.get_mut(key).unwrap();
        // A receive brought two empty frames (8 zero bytes) into buffer 1,
        // as its completion's flags say: the replies go out from it.
        let buffer_1 = cqueue_flags_naming(1);
        let received = bufring.take(Ok(8), buffer_1);
        on_recv(conn, received, &mut bufring, &mut pool);
        assert_eq!((conn.state, conn.unsent), (State::Writing, 8));
        assert!(
            conn.held.is_some(),
            "the replies go out from the ring's buffer"
        );
        // The client resets the connection while the send waits for room.
        on_send(conn, Err(Errno::ECONNRESET), &mut bufring, &mut pool);
        resume(&mut queue, &mut conns, key, &mut bufring);
        assert!(conns.get_mut(key).is_none(), "the connection is gone");
        // Had buffer 1 not gone back, taking buffer 0 would hold both.
        let _buffer_0 = bufring.take(Ok(1), cqueue_flags_naming(0)).unwrap();
        assert!(bufring.can_keep(), "a buffer was lost to the ring");
    }

    /// A receive's completion flags, naming the buffer it filled:
    /// IORING_CQE_F_BUFFER, and the buffer's id from bit 16 on.
    fn cqueue_flags_naming(id: u16) -> u32 {
        1 | u32::from(id) << 16
    }

    #[test]
    fn only_errors_no_retry_can_fix_end_the_loop() {
        let err = |e: i32| Err(io::Error::from_raw_os_error(e));
        assert_eq!(entered(Ok(3)).unwrap(), Entered::Done);
        assert_eq!(entered(err(libc::ETIME)).unwrap(), Entered::Done);
        assert_eq!(entered(err(libc::EINTR)).unwrap(), Entered::Done);
        assert_eq!(entered(err(libc::EBUSY)).unwrap(), Entered::Busy);
        assert_eq!(entered(err(libc::EAGAIN)).unwrap(), Entered::Busy);
        assert!(entered(err(libc::EBADF)).is_err());
    }

    #[test]
    fn tokens_survive_the_round_trip() {
        let mut slab = Slab::default();
        let key = slab.insert(());
        for token in [
            Token::Accept,
            Token::Listener,
            Token::Stop,
            Token::Cancel,
            Token::AcceptPause,
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
