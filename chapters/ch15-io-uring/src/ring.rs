// ANCHOR: ring_head
//! The ring, and what we ask of it. Each operation is built by one function
//! here, which says what memory of ours, if any, the kernel will use until
//! the operation completes; operations wait in a `Queue` for the turn's
//! `io_uring_enter`; and `Uring` owns the ring together with the
//! connections whose buffers its sends read, so that it cancels before it
//! frees.

use std::io;
use std::mem;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::ptr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use common::error;
use common::slab::Key;
use io_uring::types::{CancelBuilder, Fd, SubmitArgs, Timespec};
use io_uring::{opcode, squeue, IoUring};
use nix::errno::Errno;
use nix::sys::signalfd::SignalFd;

use crate::accept::ACCEPT_PAUSE;
use crate::bufring::BufRing;
use crate::{Conn, Connections, Op, RECV_GROUP};
// ANCHOR_END: ring_head

// ANCHOR: setup
/// Submission queue entries: operations queued before an `io_uring_enter`
/// must pass them on. More are fine: a full queue is submitted early.
const SQ_ENTRIES: u32 = 1024;
/// Completion queue entries: completions waiting for us to read them. The
/// kernel keeps any overflow aside rather than lose it, at a cost.
pub const CQ_ENTRIES: u32 = 8 * SQ_ENTRIES;

/// Creates the ring, or explains in one line why this system will not.
pub fn new_ring(defer_taskrun: bool) -> Result<IoUring> {
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

// ANCHOR: token
/// What a completion is about. A completion carries the 64 bits of
/// `user_data` we put in the submission, untouched, and nothing else to say
/// where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Token {
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
    pub fn from_user_data(data: u64) -> Option<Token> {
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

// ANCHOR: owner
/// The ring, and the connections whose buffers its sends read: owned
/// together, so that they go in the one safe order however `serve` ends,
/// by returning, with an error, or unwinding from a panic.
pub struct Uring {
    ring: IoUring,
    conns: Connections,
}

impl Uring {
    /// A new ring (see `new_ring`), and no connections yet.
    pub fn new(defer_taskrun: bool) -> Result<Uring> {
        let ring = new_ring(defer_taskrun)?;
        let conns = Connections::default();
        Ok(Uring { ring, conns })
    }

    /// The ring and the connections, to use: only the owner drops them.
    pub fn parts(&mut self) -> (&mut IoUring, &mut Connections) {
        (&mut self.ring, &mut self.conns)
    }
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
// ANCHOR_END: owner

// ANCHOR: queue
/// An operation ready to submit. Only the functions of this module build
/// one (its entry is private), and each says what memory of ours, if any,
/// the kernel will use until the operation completes.
pub struct Submission(squeue::Entry);

/// Operations waiting for the turn's `io_uring_enter`.
#[derive(Default)]
pub struct Queue {
    pending: Vec<Submission>,
}

impl Queue {
    pub fn push(&mut self, submission: Submission) {
        self.pending.push(submission);
    }

    /// Drops the operations with these tokens that wait for the next
    /// `io_uring_enter`: they will never reach the kernel.
    pub fn forget(&mut self, tokens: &[Token]) {
        let forgotten = |Submission(entry): &Submission| {
            tokens
                .iter()
                .any(|&token| u64::from(token) == entry.get_user_data())
        };
        self.pending.retain(|submission| !forgotten(submission));
    }

    /// Submits every queued operation and waits for at least one
    /// completion, or until the deadline.
    pub fn submit_and_wait(&mut self, ring: &mut IoUring, deadline: Option<Instant>) -> Result<()> {
        let mut pushed = 0;
        'push: for Submission(entry) in &self.pending {
            // SAFETY: the entry points to memory that stays valid until its
            // completion, as the function of this module that built it
            // requires (`send`); nothing else can build one.
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

// ANCHOR: ops
/// "Receive on this socket, into a buffer of the group, when data comes":
/// `recv(2)`, without waiting for readiness first.
pub fn recv(key: Key, conn: &mut Conn) -> Submission {
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
pub unsafe fn send(key: Key, conn: &mut Conn, bufring: &BufRing) -> Submission {
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
pub fn accept_all(listener: &TcpListener) -> Submission {
    let entry = opcode::AcceptMulti::new(Fd(listener.as_raw_fd()))
        .flags(libc::SOCK_CLOEXEC)
        .build();
    Submission(entry.user_data(Token::Accept.into()))
}

/// "Tell me when a stop signal is pending": readiness, as one operation.
pub fn wait_for_signal(stop: &SignalFd) -> Submission {
    let entry = opcode::PollAdd::new(Fd(stop.as_raw_fd()), libc::POLLIN as u32).build();
    Submission(entry.user_data(Token::Stop.into()))
}

/// "Tell me when a client waits on the listener": see `accepted`.
pub fn wait_for_client(listener: &TcpListener) -> Submission {
    let entry = opcode::PollAdd::new(Fd(listener.as_raw_fd()), libc::POLLIN as u32).build();
    Submission(entry.user_data(Token::Listener.into()))
}

/// "Tell me when `ACCEPT_PAUSE` has passed": a timer, as one operation. The
/// kernel reads the duration when it takes the submission, from memory
/// that lives as long as the program.
pub fn pause_accepting() -> Submission {
    static PAUSE: Timespec = Timespec::new().nsec(ACCEPT_PAUSE.subsec_nanos());
    let entry = opcode::Timeout::new(&PAUSE).build();
    Submission(entry.user_data(Token::AcceptPause.into()))
}

/// "Stop that operation": it completes with ECANCELED, unless it completed first.
pub fn cancel(token: Token) -> Submission {
    let entry = opcode::AsyncCancel::new(token.into()).build();
    Submission(entry.user_data(Token::Cancel.into()))
}
// ANCHOR_END: ops

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::TcpStream;
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::panic::{self, AssertUnwindSafe};

    use common::slab::Slab;

    use super::*;
    use crate::buffer::Pool;
    use crate::{uring, State};

    impl Queue {
        /// The tokens of the operations waiting, in order.
        pub(crate) fn tokens(&self) -> Vec<Token> {
            let data = self.pending.iter().map(|s| s.0.get_user_data());
            data.map(|d| Token::from_user_data(d).unwrap()).collect()
        }
    }

    impl Submission {
        /// An operation that does nothing, and points to no memory.
        pub(crate) fn nop(token: Token) -> Submission {
            Submission(opcode::Nop::new().build().user_data(token.into()))
        }
    }

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
        let mut uring = Uring::new(false).unwrap();
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
            queue.push(Submission::nop(Token::Cancel));
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
}
