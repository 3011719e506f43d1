//! The reactor: chapter 9's edge-triggered epoll loop, as the half of the
//! runtime that turns readiness into wakes.
//!
//! Each descriptor is registered once, for both directions, edge-triggered.
//! For each one the reactor keeps what chapter 9's `Conn` kept in its
//! `readable` and `writable` flags: the readiness the edges reported and no
//! operation has used up yet. Beside it, per direction, the wakers of the
//! tasks to wake when that readiness comes. An event sets the bits and wakes
//! the wakers; a future that meets `EAGAIN` clears its bit and waits. This is
//! tokio's I/O driver in miniature, and `ScheduledIo` is named after its
//! counterpart there.
//!
//! Chapter 14 uses this file as it is, included from here (`#[path]`).

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::executor;
use common::slab::{Key, Slab};

/// A direction of readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest {
    Read,
    Write,
}

impl Interest {
    fn bit(self) -> u8 {
        match self {
            Interest::Read => 0b01,
            Interest::Write => 0b10,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Readiness bits from an epoll event. Errors and hang-ups count for both
/// directions, as in chapter 9: the next read or send reports them.
fn readiness(flags: EpollFlags) -> u8 {
    use EpollFlags as E;
    let mut bits = 0;
    if flags.intersects(E::EPOLLIN | E::EPOLLHUP | E::EPOLLERR) {
        bits |= Interest::Read.bit();
    }
    if flags.intersects(E::EPOLLOUT | E::EPOLLHUP | E::EPOLLERR) {
        bits |= Interest::Write.bit();
    }
    bits
}

// ANCHOR: scheduled_io
/// What the reactor knows about one registered descriptor.
///
/// The lost wakeup. A future reads, meets `EAGAIN`, clears the readiness
/// bit, stores its waker and returns `Pending`. If the reactor reported new
/// input anywhere in between, say just after the `read` failed and before
/// the bit was cleared, clearing erases that news, no waker is stored yet
/// to be woken, and no edge will come again: the task sleeps with input
/// waiting. Two rules close every such window:
///
/// - a future clears readiness only if no event has come since the
///   readiness it acted on: each event bumps `tick`, and
///   [`ScheduledIo::clear_readiness`] compares (tokio's `ScheduledIo` does
///   the same, in the same word as the bits, with one atomic
///   compare-and-swap);
/// - checking the bit and storing the waker happen in the same poll
///   ([`ScheduledIo::poll_ready`]): readiness that comes later finds the
///   waker stored and wakes it.
///
/// In this runtime the reactor runs only between polls, on the same thread,
/// so it cannot set a bit in the middle of one, and the tick never saves the
/// day. It is what makes the protocol correct on its own, rather than by
/// the accident of a single thread: tokio's reactor runs on whichever
/// worker thread is idle, in parallel with the tasks.
///
/// Several tasks may wait for the same direction (two tasks reading one
/// socket, say), so each direction keeps a list of wakers, not one: a
/// second waker stored in a single slot would silently replace the first,
/// and its task would never wake. An event wakes them all.
#[derive(Default)]
pub struct ScheduledIo {
    /// Readiness seen and not used up, one bit per [`Interest`].
    bits: Cell<u8>,
    /// Counts the events for this descriptor.
    tick: Cell<u32>,
    /// The tasks waiting to read, and those waiting to write: usually one.
    waiters: [Cell<Vec<Waker>>; 2],
}

/// Readiness that a poll found: which direction, and as of which event.
#[derive(Debug, Clone, Copy)]
pub struct ReadyEvent {
    interest: Interest,
    tick: u32,
}

impl ScheduledIo {
    /// An event: remember the readiness, and move the wakers of who waits
    /// for it to `woken`, for the reactor to wake.
    fn set_readiness(&self, bits: u8, woken: &mut Vec<Waker>) {
        self.bits.set(self.bits.get() | bits);
        self.tick.set(self.tick.get().wrapping_add(1));
        for interest in [Interest::Read, Interest::Write] {
            if bits & interest.bit() != 0 {
                let slot = &self.waiters[interest.index()];
                let mut waiters = slot.take();
                // Emptied, not dropped: it keeps its memory for the next wait.
                woken.append(&mut waiters);
                slot.set(waiters);
            }
        }
    }

    /// The readiness for `interest`, if an event reported it and no
    /// operation has used it up since.
    fn ready_now(&self, interest: Interest) -> Option<ReadyEvent> {
        (self.bits.get() & interest.bit() != 0).then(|| ReadyEvent {
            interest,
            tick: self.tick.get(),
        })
    }

    /// `Ready` if [`ScheduledIo::ready_now`]; otherwise stores the waker,
    /// for the event that will come, and returns `Pending`.
    ///
    /// A waiter that gives up (its future dropped) leaves its waker in the
    /// list until the next event, which wakes its task for nothing: a
    /// spurious wake, which every future must expect anyway. tokio unlinks
    /// the waiter when its future is dropped (chapter 13, exercise 3).
    fn poll_ready(&self, interest: Interest, cx: &mut Context<'_>) -> Poll<ReadyEvent> {
        if let Some(event) = self.ready_now(interest) {
            return Poll::Ready(event);
        }
        let slot = &self.waiters[interest.index()];
        let mut waiters = slot.take();
        // A task polled again has the same waker: stored once, not cloned.
        if !waiters.iter().any(|waker| waker.will_wake(cx.waker())) {
            // Room for one at first, not `Vec`'s four: most sockets never
            // have a second waiter, and every connection has a list.
            if waiters.capacity() == 0 {
                waiters.reserve_exact(1);
            }
            waiters.push(cx.waker().clone());
        }
        slot.set(waiters);
        Poll::Pending
    }

    /// The operation that `event` allowed met `EAGAIN`: the readiness is
    /// used up. Unless a newer event came meanwhile: then it stays.
    fn clear_readiness(&self, event: ReadyEvent) {
        if self.tick.get() == event.tick {
            self.bits.set(self.bits.get() & !event.interest.bit());
        }
    }
}
// ANCHOR_END: scheduled_io

// ANCHOR: reactor
/// The epoll instance and what it knows about each registered descriptor.
pub struct Reactor {
    epoll: Epoll,
    events: Vec<EpollEvent>,
    /// Indexed by the key each descriptor was registered with: its epoll
    /// event data. Not by descriptor number, which the kernel reuses.
    ios: Slab<Rc<ScheduledIo>>,
    /// The wakers an event is for, woken once its readiness is recorded.
    woken: Vec<Waker>,
    unpark: Arc<Unpark>,
}

/// The event data of the [`Unpark`] eventfd: a key no registration has.
const UNPARK: u64 = Key::RESERVED.to_u64();

impl Reactor {
    pub fn new() -> io::Result<Reactor> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        let unpark = Unpark::new()?;
        epoll.add(&unpark.0, EpollEvent::new(EpollFlags::EPOLLIN, UNPARK))?;
        Ok(Reactor {
            epoll,
            events: vec![EpollEvent::empty(); 256],
            ios: Slab::default(),
            woken: Vec::new(),
            unpark: Arc::new(unpark),
        })
    }

    /// What another thread uses to wake the reactor (see [`Unpark`]).
    pub fn unpark(&self) -> Arc<Unpark> {
        self.unpark.clone()
    }

    /// Registers `fd` once, for good: both directions, edge-triggered.
    fn register(&mut self, fd: BorrowedFd<'_>) -> io::Result<(Key, Rc<ScheduledIo>)> {
        let io = Rc::new(ScheduledIo::default());
        let key = self.ios.insert(io.clone());
        let interest = EpollFlags::EPOLLIN | EpollFlags::EPOLLOUT | EpollFlags::EPOLLET;
        if let Err(e) = self.epoll.add(fd, EpollEvent::new(interest, key.to_u64())) {
            self.ios.remove(key);
            return Err(e.into());
        }
        Ok((key, io))
    }

    /// Takes `fd` off the interest list, and forgets its registration with
    /// the wakers of its tasks.
    ///
    /// Closing `fd` right after would not be enough. The interest list holds
    /// the socket, not the number, and the kernel removes it only when the
    /// socket's last descriptor closes: a duplicate (`dup`, `try_clone`, a
    /// child process's copy) would keep it there, reporting events under a
    /// key no one has, with no descriptor left to delete it by.
    fn deregister(&mut self, key: Key, io: &Rc<ScheduledIo>, fd: BorrowedFd<'_>) {
        // An `AsyncFd` carried out of its runtime into another one's
        // `block_on` is not this reactor's: its key may name another's.
        if !self.ios.get(key).is_some_and(|ours| Rc::ptr_eq(ours, io)) {
            return;
        }
        self.ios.remove(key);
        // Fails only for a descriptor that is not registered: a bug.
        let deleted = self.epoll.delete(fd);
        debug_assert!(deleted.is_ok(), "epoll_ctl(DEL): {deleted:?}");
    }

    /// Waits for events, at most `timeout` (`None`: for ever), and turns
    /// each into readiness and wakes.
    fn turn(&mut self, timeout: Option<Duration>) {
        // In whole milliseconds, rounded up (see `common::time`).
        let timeout = common::time::timeout(timeout);
        let n = match self.epoll.wait(&mut self.events, timeout) {
            Ok(n) => n,
            // With the stop signals blocked this is rare (a debugger, SIGSTOP).
            Err(Errno::EINTR) => 0,
            // EBADF, EFAULT, EINVAL: a bug here, nothing a peer can cause,
            // and nothing a retry would fix.
            Err(e) => panic!("epoll_wait: {e}"),
        };
        for i in 0..n {
            let event = self.events[i];
            self.dispatch(event.data(), event.events());
        }
        self.woken.drain(..).for_each(Waker::wake);
    }

    fn dispatch(&mut self, data: u64, flags: EpollFlags) {
        if data == UNPARK {
            self.unpark.reset();
            return;
        }
        // `None` if the registration is gone (see `Key`). Not here: events
        // are dispatched as soon as they are fetched, and descriptors are
        // deregistered by tasks, between turns. A reactor that runs beside
        // its tasks, as tokio's does, must expect it.
        if let Some(io) = self.ios.get(Key::from_u64(data)) {
            io.set_readiness(readiness(flags), &mut self.woken);
        }
    }
}
// ANCHOR_END: reactor

// ANCHOR: unpark
/// Wakes the reactor out of `epoll_wait` from another thread: an eventfd
/// in the interest list, as mio's `Waker`. A task woken from another
/// thread is on the run queue, but the executor would not look before
/// `epoll_wait` returns, which might be never.
pub struct Unpark(EventFd);

impl Unpark {
    fn new() -> io::Result<Unpark> {
        let flags = EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC;
        Ok(Unpark(EventFd::from_flags(flags)?))
    }

    pub fn unpark(&self) {
        // Adding to the counter makes the eventfd readable: an edge. This
        // fails only if the counter is full, and then it is readable anyway.
        let _ = self.0.write(1);
    }

    /// Back to zero, for the next edge; EAGAIN if it was zero already.
    fn reset(&self) {
        let _ = self.0.read();
    }
}
// ANCHOR_END: unpark

thread_local! {
    /// The reactor of the runtime running on this thread, if one is.
    static CURRENT: RefCell<Option<Reactor>> = const { RefCell::new(None) };
}

/// Makes `reactor` this thread's until the guard is dropped.
pub fn enter(reactor: Reactor) -> Entered {
    CURRENT.with(|current| {
        let previous = current.borrow_mut().replace(reactor);
        assert!(
            previous.is_none(),
            "a runtime is already running on this thread"
        );
    });
    Entered(())
}

pub struct Entered(());

impl Drop for Entered {
    fn drop(&mut self) {
        // Taken out before it is dropped, outside the borrow.
        let reactor = CURRENT.with(|current| current.borrow_mut().take());
        drop(reactor);
    }
}

/// Runs `f` on this thread's reactor; `None` if no runtime is running.
fn with<R>(f: impl FnOnce(&mut Reactor) -> R) -> Option<R> {
    CURRENT
        .try_with(|current| current.borrow_mut().as_mut().map(f))
        .ok()
        .flatten()
}

/// One turn of this thread's reactor: see [`Reactor::turn`].
pub fn turn(timeout: Option<Duration>) {
    with(|reactor| reactor.turn(timeout));
}

// ANCHOR: async_fd
/// A non-blocking descriptor registered with this thread's reactor:
/// tokio's `AsyncFd`, mio's `Registry::register` underneath.
///
/// It owns the descriptor (`T` converts into an `OwnedFd`: a socket, not a
/// reference to one), so no one else can close it while it is registered,
/// nor register it a second time; and dropping it deregisters the
/// descriptor before closing it.
pub struct AsyncFd<T: AsFd> {
    key: Key,
    io: Rc<ScheduledIo>,
    /// `None` only once [`AsyncFd::into_inner`] has taken it back.
    inner: Option<T>,
}

impl<T: AsFd + Into<OwnedFd>> AsyncFd<T> {
    /// Registers `inner`, whose descriptor must be non-blocking.
    pub fn new(inner: T) -> io::Result<AsyncFd<T>> {
        let registered = with(|reactor| reactor.register(inner.as_fd()));
        let (key, io) = registered.unwrap_or_else(|| {
            Err(io::Error::other(
                "no runtime on this thread: register inside Runtime::block_on",
            ))
        })?;
        Ok(AsyncFd {
            key,
            io,
            inner: Some(inner),
        })
    }
}

impl<T: AsFd> AsyncFd<T> {
    pub fn get_ref(&self) -> &T {
        self.inner.as_ref().expect("taken back by into_inner")
    }

    /// Deregisters the descriptor and gives it back, open: tokio's
    /// `AsyncFd::into_inner`. The echo server never needs it.
    #[allow(dead_code)]
    pub fn into_inner(mut self) -> T {
        self.deregister();
        self.inner.take().expect("taken back only here")
    }

    fn deregister(&mut self) {
        if let Some(inner) = &self.inner {
            // `None` outside the runtime (an `AsyncFd` that outlived its
            // `block_on`): the epoll instance is closed already.
            with(|reactor| reactor.deregister(self.key, &self.io, inner.as_fd()));
        }
    }

    /// `Ready` if an event reported readiness for `interest` and nothing
    /// has used it up, after spending one unit of the task's budget (see
    /// `executor::poll_budget`). Otherwise `Pending`, with the waker stored
    /// for the event to come.
    pub fn poll_ready(&self, interest: Interest, cx: &mut Context<'_>) -> Poll<ReadyEvent> {
        let event = ready!(self.io.poll_ready(interest, cx));
        ready!(executor::poll_budget(cx));
        Poll::Ready(event)
    }

    /// Waits for readiness: see [`AsyncFd::poll_ready`].
    pub async fn ready(&self, interest: Interest) -> ReadyEvent {
        poll_fn(|cx| self.poll_ready(interest, cx)).await
    }

    /// The readiness `event` reported is used up: the operation it allowed
    /// met `EAGAIN`. The next wait waits for the next edge.
    pub fn clear_ready(&self, event: ReadyEvent) {
        self.io.clear_readiness(event);
    }

    /// Tries `operation` if the readiness allows it, and clears the
    /// readiness if it fails with `WouldBlock`. Never waits, never spends
    /// budget; without readiness, fails with `WouldBlock` without a system call.
    pub fn try_io<R>(
        &self,
        interest: Interest,
        operation: impl FnOnce(&T) -> io::Result<R>,
    ) -> io::Result<R> {
        let Some(event) = self.io.ready_now(interest) else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        let result = operation(self.get_ref());
        if matches!(&result, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
            self.clear_ready(event);
        }
        result
    }
}

impl<T: AsFd> AsFd for AsyncFd<T> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.get_ref().as_fd()
    }
}

impl<T: AsFd> Drop for AsyncFd<T> {
    /// Deregisters the descriptor, which `inner` closes next (`EPOLL_CTL_DEL`,
    /// as tokio's `AsyncFd` does: see [`Reactor::deregister`] for why closing
    /// is not enough).
    fn drop(&mut self) {
        self.deregister();
    }
}
// ANCHOR_END: async_fd

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::task::Waker;

    use super::*;
    use crate::executor::tests::bounded;
    use crate::executor::{spawn, yield_now, Runtime};
    use nix::sys::epoll::EpollTimeout;

    // ANCHOR: test_lost_wakeup
    /// An event between a failed read and the clearing of its readiness
    /// must not be erased by the clearing.
    #[test]
    fn readiness_that_comes_after_a_failed_read_is_kept() {
        let io = ScheduledIo::default();
        let mut cx = Context::from_waker(Waker::noop());
        let woken = &mut Vec::new();
        io.set_readiness(Interest::Read.bit(), woken);
        let Poll::Ready(event) = io.poll_ready(Interest::Read, &mut cx) else {
            panic!("readable after the event");
        };
        // The read allowed by `event` meets EAGAIN; then, before it clears
        // the readiness, new input arrives and the reactor reports it.
        io.set_readiness(Interest::Read.bit(), woken);
        io.clear_readiness(event);
        assert!(
            io.ready_now(Interest::Read).is_some(),
            "the new input is lost"
        );
        // Without an event in between, clearing clears.
        let event = io.ready_now(Interest::Read).unwrap();
        io.clear_readiness(event);
        assert!(io.poll_ready(Interest::Read, &mut cx).is_pending());
        assert!(io.ready_now(Interest::Write).is_none(), "never reported");
    }
    // ANCHOR_END: test_lost_wakeup

    /// A task waiting to read is woken by the edge of a write from another
    /// socket, and reads until `EAGAIN`.
    #[test]
    fn an_edge_wakes_the_task_waiting_for_it() {
        let runtime = Runtime::new().unwrap();
        let got = runtime.block_on(async {
            let (ours, mut peer) = UnixStream::pair().unwrap();
            ours.set_nonblocking(true).unwrap();
            let ours = AsyncFd::new(ours).unwrap();
            let reader = spawn(async move {
                let mut got = Vec::new();
                while got.len() < 6 {
                    let mut buf = [0; 2];
                    let event = ours.ready(Interest::Read).await;
                    match ours.get_ref().read(&mut buf) {
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => ours.clear_ready(event),
                        Err(e) => panic!("{e}"),
                    }
                }
                got
            });
            peer.write_all(b"abc").unwrap();
            crate::executor::yield_now().await;
            peer.write_all(b"def").unwrap();
            reader.await
        });
        assert_eq!(got, b"abcdef");
    }

    /// A descriptor is closed and its number reused at once by the next
    /// one: an event for the old registration must not reach the new.
    #[test]
    fn a_late_event_for_a_closed_descriptor_reaches_no_one() {
        let mut reactor = Reactor::new().unwrap();
        let (old, _peer) = UnixStream::pair().unwrap();
        let (old_key, _) = reactor.register(old.as_fd()).unwrap();
        reactor.ios.remove(old_key); // as dropping its `AsyncFd` does
        drop(old);
        // Most likely the same number (other tests run meanwhile), and the
        // same place in the table: only the generation tells them apart.
        let (new, _peer) = UnixStream::pair().unwrap();
        let (new_key, io) = reactor.register(new.as_fd()).unwrap();
        assert_ne!(new_key, old_key);
        reactor.dispatch(old_key.to_u64(), EpollFlags::EPOLLIN);
        assert!(
            io.ready_now(Interest::Read).is_none(),
            "woken by a stranger's event"
        );
        reactor.dispatch(new_key.to_u64(), EpollFlags::EPOLLIN);
        assert!(io.ready_now(Interest::Read).is_some());
    }

    /// Dropping an `AsyncFd` takes its socket off the interest list, even
    /// while a duplicate keeps the socket open: no event may come for it
    /// under a key no one has.
    #[test]
    fn a_dropped_async_fd_is_off_the_interest_list_even_if_duplicated() {
        Runtime::new().unwrap().block_on(async {
            let (ours, mut peer) = UnixStream::pair().unwrap();
            ours.set_nonblocking(true).unwrap();
            let duplicate = ours.try_clone().unwrap();
            drop(AsyncFd::new(ours).unwrap());
            peer.write_all(b"for no one").unwrap();
            let fetched = with(|reactor| {
                let Reactor { epoll, events, .. } = reactor;
                epoll.wait(events, EpollTimeout::ZERO)
            });
            assert_eq!(
                fetched.unwrap().unwrap(),
                0,
                "an event for a dropped AsyncFd"
            );
            drop(duplicate);
        });
    }

    /// `into_inner` deregisters: the socket it gives back can be
    /// registered again (not `EEXIST`).
    #[test]
    fn a_descriptor_taken_back_can_be_registered_again() {
        bounded(|| {
            Runtime::new().unwrap().block_on(async {
                let (ours, mut peer) = UnixStream::pair().unwrap();
                ours.set_nonblocking(true).unwrap();
                let ours = AsyncFd::new(ours).unwrap().into_inner();
                let ours = AsyncFd::new(ours).expect("registered again");
                peer.write_all(b"x").unwrap();
                ours.ready(Interest::Read).await;
            })
        });
    }

    /// Two tasks wait to read the same socket: one edge wakes both. A
    /// single waker per direction would keep only the second's, and the
    /// first would wait for ever.
    #[test]
    fn one_edge_wakes_every_task_waiting_for_it() {
        bounded(|| {
            Runtime::new().unwrap().block_on(async {
                let (ours, mut peer) = UnixStream::pair().unwrap();
                ours.set_nonblocking(true).unwrap();
                let ours = Rc::new(AsyncFd::new(ours).unwrap());
                let waiters: Vec<_> = (0..2)
                    .map(|_| {
                        let ours = ours.clone();
                        spawn(async move { ours.ready(Interest::Read).await })
                    })
                    .collect();
                // Both are polled, and wait, before the input comes.
                yield_now().await;
                assert!(ours.io.ready_now(Interest::Read).is_none());
                peer.write_all(b"x").unwrap();
                for waiter in waiters {
                    waiter.await;
                }
            })
        });
    }

    #[test]
    fn registering_needs_a_runtime() {
        let (ours, _peer) = UnixStream::pair().unwrap();
        let err = AsyncFd::new(ours).err().unwrap();
        assert!(err.to_string().contains("no runtime"), "{err}");
    }
}
