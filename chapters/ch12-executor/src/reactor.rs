// ANCHOR: head
//! The reactor: chapter 9's edge-triggered epoll loop, as the half of the
//! runtime that turns events into wakes.
//!
//! Each descriptor is registered once, for both directions, edge-triggered.
//! Chapter 9's loop called the connection's code for each event, and
//! chapter 10's reactor called a handler. This one calls nobody: for each
//! registration it keeps the edges reported since its task last took them,
//! and the waker of that task. An event adds its edges and wakes the
//! waker; the executor polls the task, which takes the edges and does the
//! work they allow. tokio's I/O driver works so, and `ScheduledIo` is
//! named after its counterpart there.

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::BorrowedFd;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::eventfd::{EfdFlags, EventFd};

use common::slab::{Key, Slab};
// ANCHOR_END: head

// ANCHOR: scheduled_io
/// What the reactor knows about one registered descriptor: the edges
/// reported and not yet taken, and the task to wake at the next one.
///
/// The lost wakeup. A task takes the edges, works until `EAGAIN`, stores
/// its waker and returns `Pending`. Were the edge to come between the
/// `EAGAIN` and the storing, it would find no waker to wake, and no edge
/// comes twice: the task would sleep with input waiting. So looking for
/// an edge and storing the waker are one call, [`ScheduledIo::poll_edge`]:
/// an edge either came before it, and the task goes on, or finds the waker.
///
/// In this runtime the reactor runs only between polls, on the same
/// thread, so no edge can come in the middle of one. The rule is what makes
/// the protocol correct on its own, rather than by the accident of a single
/// thread: tokio's reactor runs on whichever worker thread is idle, in
/// parallel with the tasks.
pub struct ScheduledIo {
    /// Edges reported since the task last took them: epoll's flags, merged.
    edges: Cell<EpollFlags>,
    /// The task to wake at the next edge, once it has seen none.
    waker: Cell<Option<Waker>>,
}

impl Default for ScheduledIo {
    fn default() -> ScheduledIo {
        ScheduledIo {
            edges: Cell::new(EpollFlags::empty()),
            waker: Cell::new(None),
        }
    }
}

impl ScheduledIo {
    /// An event: remember its edges, and move the waker of the task that
    /// waits for one to `woken`, for the reactor to wake.
    fn set_readiness(&self, flags: EpollFlags, woken: &mut Vec<Waker>) {
        self.edges.set(self.edges.get() | flags);
        woken.extend(self.waker.take());
    }

    /// Takes the edges reported since the last call: what chapter 9's
    /// loop handed the connection with each event.
    fn take_edges(&self) -> EpollFlags {
        self.edges.replace(EpollFlags::empty())
    }

    /// `Ready` if an edge came that the task has not taken; otherwise
    /// stores the waker, for the edge that will come, and returns `Pending`.
    fn poll_edge(&self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.edges.get().is_empty() {
            return Poll::Ready(());
        }
        // A task polled again has the same waker: kept, not cloned.
        let waker = self.waker.take();
        let waker = waker.filter(|waker| waker.will_wake(cx.waker()));
        self.waker.set(waker.or_else(|| Some(cx.waker().clone())));
        Poll::Pending
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
    /// The wakers an event is for, woken once its edges are recorded.
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

    /// Forgets a registration, with the waker of its task. The descriptor
    /// stays on the interest list until it is closed, which its owner does
    /// as it drops the registration: closing takes it off (chapter 7), as
    /// long as no duplicate of it is open, and the owners here make none.
    fn deregister(&mut self, key: Key, io: &Rc<ScheduledIo>) {
        // A registration carried out of its runtime into another one's
        // `block_on` is not this reactor's: its key may name another's.
        if self.ios.get(key).is_some_and(|ours| Rc::ptr_eq(ours, io)) {
            self.ios.remove(key);
        }
    }

    /// Waits for events, at most `timeout` (`None`: for ever), and turns
    /// each into edges and wakes.
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
        // `None` if the registration is gone: a descriptor closed, and its
        // number perhaps reused by the next `accept`, after the event was
        // fetched. Not here, where events are dispatched as soon as they
        // are fetched and tasks run only between turns; but a reactor that
        // runs beside its tasks, as tokio's does, must expect it, and the
        // key's generation tells the newcomer from the one that is gone.
        if let Some(io) = self.ios.get(Key::from_u64(data)) {
            io.set_readiness(flags, &mut self.woken);
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

// ANCHOR: current
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
// ANCHOR_END: current

// ANCHOR: registration
/// A descriptor registered with this thread's reactor, for as long as this
/// lives. The descriptor is its owner's (a connection, the listener), who
/// closes it as it drops this.
pub struct Registration {
    key: Key,
    io: Rc<ScheduledIo>,
}

impl Registration {
    /// Registers `fd`, which must be non-blocking.
    pub fn new(fd: BorrowedFd<'_>) -> io::Result<Registration> {
        let registered = with(|reactor| reactor.register(fd));
        let (key, io) = registered.unwrap_or_else(|| {
            Err(io::Error::other(
                "no runtime on this thread: register inside Runtime::block_on",
            ))
        })?;
        Ok(Registration { key, io })
    }

    /// Takes the edges reported since the last call (see [`ScheduledIo`]).
    pub fn take_edges(&self) -> EpollFlags {
        self.io.take_edges()
    }

    /// `Ready` if an edge came since the last [`Registration::take_edges`];
    /// otherwise `Pending`, with the waker stored for the next edge.
    pub fn poll_edge(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.io.poll_edge(cx)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // `None` outside the runtime (a registration that outlived its
        // `block_on`): there is nothing left to forget it.
        with(|reactor| reactor.deregister(self.key, &self.io));
    }
}
// ANCHOR_END: registration

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    use super::*;
    use crate::executor::tests::bounded;
    use crate::executor::{spawn, yield_now, Runtime};

    /// An edge that comes before the task looks for one is kept for it;
    /// one that comes after it has looked in vain wakes it.
    #[test]
    fn an_edge_is_taken_or_wakes_the_task_that_waits_for_it() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::task::Wake;

        #[derive(Default)]
        struct CountWakes(AtomicUsize);
        impl Wake for CountWakes {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let wakes = Arc::new(CountWakes::default());
        let waker = Waker::from(wakes.clone());
        let cx = &mut Context::from_waker(&waker);
        let io = ScheduledIo::default();
        let woken = &mut Vec::new();

        io.set_readiness(EpollFlags::EPOLLIN, woken);
        assert!(woken.is_empty(), "no task waits yet");
        assert!(io.poll_edge(cx).is_ready(), "the edge is kept");
        assert_eq!(io.take_edges(), EpollFlags::EPOLLIN);
        assert!(io.poll_edge(cx).is_pending(), "taken: wait for the next");
        io.set_readiness(EpollFlags::EPOLLOUT, woken);
        io.set_readiness(EpollFlags::EPOLLIN, woken);
        assert_eq!(woken.len(), 1, "the stored waker, once");
        woken.drain(..).for_each(Waker::wake);
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert_eq!(io.take_edges(), EpollFlags::EPOLLIN | EpollFlags::EPOLLOUT);
    }

    /// A task waiting for input is woken by the edge of a write from
    /// another socket, and reads until `EAGAIN`.
    #[test]
    fn an_edge_wakes_the_task_waiting_for_it() {
        let got = bounded(|| {
            Runtime::new().unwrap().block_on(async {
                let (mut ours, mut peer) = UnixStream::pair().unwrap();
                ours.set_nonblocking(true).unwrap();
                let io = Registration::new(ours.as_fd()).unwrap();
                let reader = spawn(async move {
                    let mut got = Vec::new();
                    while got.len() < 6 {
                        std::future::poll_fn(|cx| io.poll_edge(cx)).await;
                        io.take_edges();
                        let mut buf = [0; 2];
                        loop {
                            match ours.read(&mut buf) {
                                Ok(n) => got.extend_from_slice(&buf[..n]),
                                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                                Err(e) => panic!("{e}"),
                            }
                        }
                    }
                    got
                });
                peer.write_all(b"abc").unwrap();
                yield_now().await;
                peer.write_all(b"def").unwrap();
                reader.await
            })
        });
        assert_eq!(got, b"abcdef");
    }

    /// A descriptor is closed and its number reused at once by the next
    /// one: an event for the old registration must not reach the new.
    #[test]
    fn a_late_event_for_a_closed_descriptor_reaches_no_one() {
        let mut reactor = Reactor::new().unwrap();
        let (old, _peer) = UnixStream::pair().unwrap();
        let (old_key, old_io) = reactor.register(old.as_fd()).unwrap();
        reactor.deregister(old_key, &old_io); // as dropping a `Registration` does
        drop(old);
        // Most likely the same number (other tests run meanwhile), and the
        // same place in the table: only the generation tells them apart.
        let (new, _peer) = UnixStream::pair().unwrap();
        let (new_key, io) = reactor.register(new.as_fd()).unwrap();
        assert_ne!(new_key, old_key);
        reactor.dispatch(old_key.to_u64(), EpollFlags::EPOLLIN);
        assert!(io.take_edges().is_empty(), "woken by a stranger's event");
        reactor.dispatch(new_key.to_u64(), EpollFlags::EPOLLIN);
        assert_eq!(io.take_edges(), EpollFlags::EPOLLIN);
    }

    #[test]
    fn registering_needs_a_runtime() {
        let (ours, _peer) = UnixStream::pair().unwrap();
        let err = Registration::new(ours.as_fd()).err().unwrap();
        assert!(err.to_string().contains("no runtime"), "{err}");
    }
}
