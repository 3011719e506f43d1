//! Chapter 15: the chapter 9 server on io_uring. Completions instead of
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
//!
//! This file is the loop, and what each completion means for a connection.
//! `ring.rs` builds the operations and owns the ring, `bufring.rs` lends
//! the kernel our receive buffers, `accept.rs` accepts, `graceful.rs` stops.

mod accept;
mod bufring;
// Chapter 9's file, unchanged. Receiving into the ring's buffers, this
// chapter only appends to a `Buf`, never reads into one.
#[allow(dead_code)]
#[path = "../../ch08-batching/src/buffer.rs"]
mod buffer; // chapter 8's buffers and pool, the same file
mod graceful;
mod ring;

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use accept::{accept_waiting, accepted};
use anyhow::{Context, Result};
use buffer::{Buf, Pool, MAX_CAPACITY};
use bufring::{BufRing, Filled};
use common::args::Args;
use common::frame::{parse_frame, Parse, MAX_FRAME};
use common::log::count;
use common::net;
use common::signals::stop_signalfd;
use common::slab::{Key, Slab};
use common::{debug, error, info};
use graceful::{finish_if_no_more_requests, stop_accepting, stop_reading};
use io_uring::cqueue;
use nix::errno::Errno;
use ring::{accept_all, recv, send, wait_for_signal, Queue, Token, Uring, CQ_ENTRIES};

// DIFF PART: connection
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

// DIFF PART: loop
/// How long a stop waits for connections to finish, unless `--grace-ms` says.
const DEFAULT_GRACE_MS: u64 = 1000;

// ANCHOR: sizes
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

fn serve() -> Result<()> {
    let mut args = Args::from_env(
        "ch15",
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
    let mut uring = Uring::new(!no_defer_taskrun)?;
    let (ring, conns) = uring.parts();
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

// DIFF PART: completions
/// A completion's result: a count or a descriptor, or minus an errno.
fn errno_or(result: i32) -> Result<u32, Errno> {
    u32::try_from(result).map_err(|_| Errno::from_raw(-result))
}

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

#[cfg(test)]
#[path = "../tests/uring/mod.rs"]
mod uring;

#[cfg(test)]
mod tests {
    use super::*;
    use ring::new_ring;

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
