//! A small reactor: chapter 11's, with timer events.
//!
//! It knows five things: a table that maps a token to a handler, the epoll
//! instance the handlers are registered with, a loop that waits for events
//! and calls the handler each one names, the idle list (`idle.rs`): which
//! handlers have been quiet longest, so that `epoll_wait` can sleep until
//! the first of them is due, and now tasks it runs every so often, on the
//! state the handlers share, as Redis's event loop runs its `serverCron`.

use std::io;
use std::mem;
use std::ops::BitOr;
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use common::time::time_left;
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

use crate::idle::IdleList;

// ANCHOR: token
// Identical in chapters 10, 11 and 17 (book/check.sh checks it).
/// Names a handler in the registry and in the events, as mio's `Token`
/// does: here, its descriptor number, so the table stays as long as the
/// number of open descriptors and two live handlers never share a token.
///
/// The kernel reuses a closed descriptor's number for the next one, so a
/// token outlives what it named: an event already fetched for a handler
/// that has since been removed may reach its successor. Handlers must
/// therefore tolerate spurious calls: a read that says `EAGAIN`, a write
/// with nothing to send. Mio writes the same rule down for its users.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Token(pub usize);

impl Token {
    fn of(fd: &(impl AsFd + ?Sized)) -> Token {
        Token(fd.as_fd().as_raw_fd() as usize)
    }
}
// ANCHOR_END: token

// ANCHOR: handler
/// Something the reactor calls when its descriptor becomes ready.
///
/// Handlers are trait objects, `Box<dyn Handler<S>>`, so the reactor knows
/// nothing of listeners or connections, and a new kind of handler needs no
/// change to it. The price: an allocation per handler (per connection) and
/// an indirect call per event. An `enum` of handler kinds would avoid both
/// (a `match` the compiler can inline, handlers stored inline in the table)
/// but closes the set of kinds: reactor and server become one module again.
pub trait Handler<S>: AsFd {
    /// Does the work `ready` allows. Registration is edge-triggered: work
    /// until `EAGAIN` or return [`Next::Again`], as no reminder will come.
    fn ready(&mut self, ready: Ready, cx: &mut Context<'_, S>) -> Next;

    // ANCHOR: handler_stop
    // Identical in chapters 10, 11 and 17 (book/check.sh checks it).
    /// The server is stopping (see [`Context::stop`]): finish up. By
    /// default a handler is simply removed; one with work in hand says how
    /// long it needs, as `ready` does, and is called on its events until it
    /// returns [`Next::Remove`] or the grace period ends.
    fn stop(&mut self, _cx: &mut Context<'_, S>) -> Next {
        Next::Remove
    }

    /// Whether a stop waits for this handler while it stays registered.
    /// Most handlers that stay have work in hand; one that stays only to
    /// hear a second stop request (the signal) says no.
    fn delays_stop(&self) -> bool {
        true
    }
    // ANCHOR_END: handler_stop

    /// Called when the handler has been idle for `timeout` (see
    /// [`Context::touch`]), just before the reactor drops it.
    fn idle(&mut self, _timeout: Duration) {}
}

// ANCHOR: next
// Identical in chapters 10, 11 and 17 (book/check.sh checks it).
/// What a handler wants after its turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Call me on the next event.
    Wait,
    /// Call me again after the others, event or not: I stopped with work
    /// left, and the edge that announced it is used up (chapter 9's
    /// unfinished connections, made general).
    Again,
    /// Call me again once this moment has come, event or not: I have work
    /// that cannot be done yet, and no edge will say when it can (chapter
    /// 9's listener, when the kernel is short of memory).
    At(Instant),
    /// I am done: drop me, which closes my descriptor.
    Remove,
}

/// What one event reported, or several merged (see [`Next::Again`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ready(EpollFlags);

impl Ready {
    /// Nothing new: what a handler gets when called back after `Next::Again`.
    pub const EMPTY: Ready = Ready(EpollFlags::empty());

    pub fn is_readable(self) -> bool {
        self.0.contains(EpollFlags::EPOLLIN)
    }

    pub fn is_writable(self) -> bool {
        self.0.contains(EpollFlags::EPOLLOUT)
    }

    /// The peer has finished sending (EPOLLRDHUP), or the connection is
    /// gone altogether (EPOLLHUP).
    pub fn is_read_closed(self) -> bool {
        self.0
            .intersects(EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLHUP)
    }

    /// Both directions are closed (EPOLLHUP): a write would fail.
    pub fn is_write_closed(self) -> bool {
        self.0.contains(EpollFlags::EPOLLHUP)
    }

    /// An error is pending; the next read or write reports it.
    pub fn is_error(self) -> bool {
        self.0.contains(EpollFlags::EPOLLERR)
    }
}
// ANCHOR_END: next
// ANCHOR_END: handler

// ANCHOR: interest
// Identical in chapters 10, 11 and 17 (book/check.sh checks it).
/// The readiness a handler wants to hear about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interest(EpollFlags);

impl Interest {
    /// Input, and the peer's shutdown (EPOLLRDHUP), as mio does.
    pub const READABLE: Interest = Interest(EpollFlags::EPOLLIN.union(EpollFlags::EPOLLRDHUP));
    pub const WRITABLE: Interest = Interest(EpollFlags::EPOLLOUT);

    /// Always edge-triggered, as in mio: level-triggered would report a
    /// handler that left work undone on every wait, and a reactor that
    /// dispatches without knowing what the handler does could only spin.
    fn event(self, token: Token) -> EpollEvent {
        EpollEvent::new(self.0 | EpollFlags::EPOLLET, token.0 as u64)
    }
}

impl BitOr for Interest {
    type Output = Interest;

    fn bitor(self, other: Interest) -> Interest {
        Interest(self.0 | other.0)
    }
}
// ANCHOR_END: interest

/// Whether the idle timeout applies to a handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idle {
    /// Close it once it has been idle for the timeout: connections.
    Close,
    /// Never: the listener, the signal.
    Keep,
}

/// What a handler may use during its turn.
pub struct Context<'a, S> {
    /// The handler whose turn it is.
    token: Token,
    /// To add, modify or remove other handlers.
    pub registry: &'a mut Registry<S>,
    /// State all the handlers share: for the echo server, the buffer pool.
    pub shared: &'a mut S,
    stop: &'a mut bool,
}

impl<S> Context<'_, S> {
    // ANCHOR: context_stop
    // Identical in chapters 10, 11 and 17 (book/check.sh checks it).
    /// Asks the reactor to stop at the end of this turn: it calls every
    /// handler's [`Handler::stop`], then runs until they are all removed
    /// or the grace period given to [`Reactor::run`] ends. Asked again
    /// meanwhile, it stops at once.
    pub fn stop(&mut self) {
        *self.stop = true;
    }
    // ANCHOR_END: context_stop

    /// Records activity: the handler's idle timeout starts over. What counts
    /// as activity is the handler's call; the reactor cannot tell a useful
    /// event from a useless one.
    pub fn touch(&mut self) {
        self.registry.idle.touch(self.token, Instant::now());
    }
}

// ANCHOR: registry
/// Handlers indexed by token.
pub struct Registry<S> {
    epoll: Epoll,
    slots: Vec<Option<Slot<S>>>,
    /// The handlers registered with `Idle::Close`. Beside the slots, not in
    /// them, so that a handler can be touched while it is out of its slot.
    idle: IdleList,
}

struct Slot<S> {
    handler: Box<dyn Handler<S>>,
    /// `Some` while the handler waits in the again queue: events that come
    /// meanwhile are merged here, for its next turn.
    queued: Option<Ready>,
}

impl<S> Registry<S> {
    /// Registers `handler`, edge-triggered, and returns its token. On
    /// failure the handler is dropped, which closes its descriptor.
    /// Registering counts as activity: the idle timeout starts now.
    pub fn add(
        &mut self,
        handler: Box<dyn Handler<S>>,
        interest: Interest,
        idle: Idle,
    ) -> io::Result<Token> {
        let token = Token::of(&*handler);
        self.epoll.add(handler.as_fd(), interest.event(token))?;
        if idle == Idle::Close {
            self.idle.push_back(token, Instant::now());
        }
        if self.slots.len() <= token.0 {
            self.slots.resize_with(token.0 + 1, || None);
        }
        self.slots[token.0] = Some(Slot {
            handler,
            queued: None,
        });
        Ok(token)
    }

    // ANCHOR: modify
    // Identical in chapters 10, 11 and 17 (book/check.sh checks it).
    /// Changes what a registered handler hears about. The echo server never
    /// does: edge-triggered, a socket is registered for both directions once
    /// (chapter 9). A level-triggered design calls this on every change of
    /// state (chapter 8); it is mio's `Registry::reregister`.
    #[allow(dead_code)]
    pub fn modify(&self, fd: &impl AsFd, interest: Interest) -> io::Result<()> {
        self.epoll.modify(fd, &mut interest.event(Token::of(fd)))?;
        Ok(())
    }
    // ANCHOR_END: modify

    /// Deregisters a handler and hands it back, its descriptor still open:
    /// so it must leave the interest list explicitly (`EPOLL_CTL_DEL`).
    /// Not for the handler whose turn it is: that one is out of its slot
    /// (see `Reactor::dispatch`) and returns `Next::Remove` instead.
    #[allow(dead_code)]
    pub fn remove(&mut self, token: Token) -> Option<Box<dyn Handler<S>>> {
        let slot = self.slots.get_mut(token.0)?.take()?;
        self.idle.remove(token);
        if let Err(e) = self.epoll.delete(slot.handler.as_fd()) {
            common::error!("epoll_ctl(DEL) fd {}: {e}", token.0);
        }
        Some(slot.handler)
    }

    /// Drops a handler, closing its descriptor. No `EPOLL_CTL_DEL`: closing
    /// takes it off the interest list, since handlers own their descriptors
    /// and never duplicate them (chapter 7 says why that matters). And the
    /// handler leaves the idle list.
    fn drop_handler(&mut self, token: Token, slot: Slot<S>) {
        self.idle.remove(token);
        drop(slot);
    }

    // ANCHOR: delaying
    // Identical in chapters 10, 11 and 17 (book/check.sh checks it).
    /// How many handlers a stop still waits for.
    fn delaying_stop(&self) -> usize {
        let slots = self.slots.iter().flatten();
        slots.filter(|slot| slot.handler.delays_stop()).count()
    }

    fn tokens(&self) -> Vec<Token> {
        (0..self.slots.len())
            .filter(|&i| self.slots[i].is_some())
            .map(Token)
            .collect()
    }
    // ANCHOR_END: delaying
}
// ANCHOR_END: registry

/// The registry, the state the handlers share, and the loop that drives them.
pub struct Reactor<S> {
    registry: Registry<S>,
    shared: S,
    events: Vec<EpollEvent>,
    /// Handlers that returned `Next::Again`, to call in the next round.
    again: Vec<Token>,
    /// Handlers that returned `Next::At`, and when to call them. Few: a
    /// listener in trouble.
    later: Vec<(Instant, Token)>,
    stop_requested: bool,
    /// How long a handler registered with `Idle::Close` may stay idle.
    idle_timeout: Duration,
    /// Tasks to run every so often (see [`Reactor::every`]).
    timers: Vec<Timer<S>>,
}

// ANCHOR: timer
/// A task the loop runs on the shared state every `period`: a time event,
/// in the words of Redis's event loop (`aeCreateTimeEvent`).
struct Timer<S> {
    due: Instant,
    period: Duration,
    task: fn(&mut S),
}
// ANCHOR_END: timer

impl<S> Reactor<S> {
    pub fn new(shared: S, idle_timeout: Duration) -> io::Result<Reactor<S>> {
        Ok(Reactor {
            registry: Registry {
                epoll: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?,
                slots: Vec::new(),
                idle: IdleList::default(),
            },
            shared,
            events: vec![EpollEvent::empty(); 256],
            again: Vec::new(),
            later: Vec::new(),
            stop_requested: false,
            idle_timeout,
            timers: Vec::new(),
        })
    }

    // ANCHOR: every
    /// Runs `task` every `period`, between turns: after the events that came
    /// meanwhile have been handled, never in the middle of a handler's
    /// turn. A task must be short; the loop waits for it.
    pub fn every(&mut self, period: Duration, task: fn(&mut S)) {
        let due = Instant::now() + period;
        self.timers.push(Timer { due, period, task });
    }

    /// Runs the tasks that are due. The next run is a period after this
    /// one, not after the one planned: a late loop does not catch up.
    fn run_timers(&mut self) {
        let now = Instant::now();
        for timer in &mut self.timers {
            if timer.due <= now {
                (timer.task)(&mut self.shared);
                timer.due = now + timer.period;
            }
        }
    }
    // ANCHOR_END: every

    // ANCHOR: registry_fn
    // Identical in chapters 10, 11 and 17 (book/check.sh checks it).
    pub fn registry(&mut self) -> &mut Registry<S> {
        &mut self.registry
    }
    // ANCHOR_END: registry_fn

    // ANCHOR: dispatch
    /// Waits for events and dispatches them until a handler calls
    /// [`Context::stop`] and then every handler is gone, or `grace` has
    /// passed since the stop, or a second stop request comes. Returns how
    /// many handlers it was still waiting for.
    /// Closes the handlers that stay idle too long.
    pub fn run(&mut self, grace: Duration) -> io::Result<usize> {
        let mut this_round = Vec::new();
        let mut deadline = None;
        loop {
            if mem::take(&mut self.stop_requested) {
                if deadline.is_some() {
                    return Ok(self.registry.delaying_stop());
                }
                deadline = Some(Instant::now() + grace);
                self.stop_all();
            }
            if let Some(deadline) = deadline {
                // A scan per turn, but only for the grace period.
                let delaying = self.registry.delaying_stop();
                if delaying == 0 || Instant::now() >= deadline {
                    return Ok(delaying);
                }
            }
            // No sleeping while handlers wait for another turn: no event
            // would come to wake them.
            let timeout = if self.again.is_empty() {
                time_left(self.next_moment(deadline))
            } else {
                EpollTimeout::ZERO
            };
            let n = match self.registry.epoll.wait(&mut self.events, timeout) {
                Ok(n) => n,
                // With the stop signals blocked this is rare (a debugger, SIGSTOP).
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            };
            // The handlers that asked for another turn get it after every
            // handler with an event has had one: no one goes twice before
            // the others go once.
            mem::swap(&mut self.again, &mut this_round);
            for i in 0..n {
                let event = self.events[i];
                self.on_event(Token(event.data() as usize), Ready(event.events()));
            }
            for token in this_round.drain(..) {
                self.on_again(token);
            }
            self.on_time();
            self.run_timers();
            // Last: a handler whose input came just in time has touched its
            // entry by now, and is served rather than closed.
            self.reap();
        }
    }

    // ANCHOR: timeout
    /// The first moment something is due: the end of a stop's grace
    /// period, a handler's `Next::At`, the idle deadline of the handler
    /// quiet longest, or now a timer's next run. `epoll_wait` sleeps until
    /// then, rounded *up* to whole milliseconds (`time_left`, in `common`):
    /// rounded down, it would wake up to a millisecond early, find nothing
    /// due, and wait 0 ms, a busy loop until the deadline.
    fn next_moment(&self, deadline: Option<Instant>) -> Option<Instant> {
        let later = self.later.iter().map(|&(moment, _)| moment);
        // `None` if the idle deadline is too far to represent: it never comes.
        let oldest = self.registry.idle.oldest();
        let idle_deadline = oldest.and_then(|t| t.checked_add(self.idle_timeout));
        let timers = self.timers.iter().map(|timer| timer.due);
        later
            .chain(deadline)
            .chain(idle_deadline)
            .chain(timers)
            .min()
    }
    // ANCHOR_END: timeout

    // ANCHOR: turns
    // Identical in chapters 10, 11 and 17 (book/check.sh checks it).
    fn on_event(&mut self, token: Token, ready: Ready) {
        // `None` if a handler earlier in this round removed it.
        let Some(slot) = self
            .registry
            .slots
            .get_mut(token.0)
            .and_then(Option::as_mut)
        else {
            return;
        };
        match &mut slot.queued {
            // Its turn comes below, with the others': keep the news for it.
            Some(missed) => *missed = Ready(missed.0 | ready.0),
            None => self.dispatch(token, |handler, cx| handler.ready(ready, cx)),
        }
    }

    fn on_again(&mut self, token: Token) {
        // `None` if the handler was removed meanwhile: its token may even
        // name a newer handler by now, which did not ask for a turn.
        let slot = self
            .registry
            .slots
            .get_mut(token.0)
            .and_then(Option::as_mut);
        if let Some(ready) = slot.and_then(|slot| slot.queued.take()) {
            self.dispatch(token, |handler, cx| handler.ready(ready, cx));
        }
    }

    /// Calls the handlers whose moment (`Next::At`) has come. One whose
    /// token names a newer handler by now calls that one: a spurious call,
    /// which handlers tolerate (see `Token`).
    fn on_time(&mut self) {
        let now = Instant::now();
        let mut i = 0;
        while i < self.later.len() {
            if self.later[i].0 > now {
                i += 1;
                continue;
            }
            let (_, token) = self.later.swap_remove(i);
            // Not if it was removed, or waits in the again queue anyway.
            let slots = &self.registry.slots;
            let slot = slots.get(token.0).and_then(Option::as_ref);
            if slot.is_some_and(|slot| slot.queued.is_none()) {
                self.dispatch(token, |handler, cx| handler.ready(Ready::EMPTY, cx));
            }
        }
    }

    /// Tells every handler that the server is stopping.
    fn stop_all(&mut self) {
        for token in self.registry.tokens() {
            self.dispatch(token, |handler, cx| handler.stop(cx));
        }
    }
    // ANCHOR_END: turns

    /// One handler's turn. The handler leaves its slot for the duration: it
    /// is borrowed mutably to run, and so is the registry, which it may use
    /// to add others (a listener adds connections); out of the table, the
    /// two borrows no longer overlap. No one can take the empty slot: a new
    /// descriptor cannot get the number the handler's own still holds.
    fn dispatch(
        &mut self,
        token: Token,
        turn: impl FnOnce(&mut dyn Handler<S>, &mut Context<'_, S>) -> Next,
    ) {
        let Some(mut slot) = self.registry.slots[token.0].take() else {
            return;
        };
        let mut cx = Context {
            token,
            registry: &mut self.registry,
            shared: &mut self.shared,
            stop: &mut self.stop_requested,
        };
        match turn(&mut *slot.handler, &mut cx) {
            Next::Wait => {}
            Next::Again if slot.queued.is_none() => {
                slot.queued = Some(Ready::EMPTY);
                self.again.push(token);
            }
            // Already queued: its turn comes.
            Next::Again => {}
            Next::At(moment) => self.later.push((moment, token)),
            Next::Remove => {
                self.registry.drop_handler(token, slot);
                return;
            }
        }
        self.registry.slots[token.0] = Some(slot);
    }
    // ANCHOR_END: dispatch

    // ANCHOR: reap
    /// Closes every handler idle for the timeout or longer. They are the
    /// front of the idle list, so this looks at one entry more than it closes.
    fn reap(&mut self) {
        let Some(cutoff) = Instant::now().checked_sub(self.idle_timeout) else {
            return; // The clock has not run that long yet.
        };
        while let Some(token) = self.registry.idle.pop_idle_since(cutoff) {
            if let Some(mut slot) = self.registry.slots[token.0].take() {
                slot.handler.idle(self.idle_timeout);
                // Dropping the slot closes the descriptor.
                self.registry.drop_handler(token, slot);
            }
        }
    }
    // ANCHOR_END: reap
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::fd::BorrowedFd;
    use std::os::unix::net::UnixStream;
    use std::sync::mpsc;
    use std::thread;

    use super::*;

    /// A handler on one end of a socket pair that reads what arrives, counts
    /// its turns in the shared state, and does what the bytes say.
    struct Probe(UnixStream);

    impl AsFd for Probe {
        fn as_fd(&self) -> BorrowedFd<'_> {
            self.0.as_fd()
        }
    }

    impl Handler<Vec<u8>> for Probe {
        fn ready(&mut self, _: Ready, cx: &mut Context<'_, Vec<u8>>) -> Next {
            let mut buf = [0u8; 16];
            let n = self.0.read(&mut buf).unwrap_or(0);
            cx.shared.extend_from_slice(&buf[..n]);
            match cx.shared.last() {
                // Three more turns without a single new byte, then stop.
                Some(b'a') if cx.shared.len() < 4 => {
                    cx.shared.push(b'a');
                    Next::Again
                }
                Some(b'r') => {
                    cx.stop();
                    Next::Remove
                }
                // One more turn, 50 ms from now, then stop.
                Some(b't') if cx.shared.len() < 2 => {
                    cx.shared.push(b't');
                    Next::At(Instant::now() + Duration::from_millis(50))
                }
                _ => {
                    cx.stop();
                    Next::Wait
                }
            }
        }

        fn idle(&mut self, _: Duration) {
            let _ = self.0.write_all(b"idle");
        }
    }

    fn pair() -> (UnixStream, Probe) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        theirs.set_nonblocking(true).unwrap();
        (ours, Probe(theirs))
    }

    /// Runs `test` on another thread, failing if it takes more than a few
    /// seconds: a reactor that misses an event waits forever.
    fn bounded(test: impl FnOnce() + Send + 'static) {
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            test();
            let _ = tx.send(());
        });
        rx.recv_timeout(Duration::from_secs(5))
            .expect("the reactor did not return in time");
    }

    #[test]
    fn again_brings_turns_without_events() {
        bounded(|| {
            let mut reactor = Reactor::new(Vec::new(), Duration::MAX).unwrap();
            let (mut peer, probe) = pair();
            reactor
                .registry()
                .add(Box::new(probe), Interest::READABLE, Idle::Keep)
                .unwrap();
            peer.write_all(b"a").unwrap();
            // The probe is removed by the stop: the run ends at once.
            assert_eq!(reactor.run(Duration::from_secs(5)).unwrap(), 0);
            assert_eq!(reactor.shared, b"aaaa");
        });
    }

    #[test]
    fn at_brings_a_turn_at_its_moment_without_events() {
        bounded(|| {
            let mut reactor = Reactor::new(Vec::new(), Duration::MAX).unwrap();
            let (mut peer, probe) = pair();
            reactor
                .registry()
                .add(Box::new(probe), Interest::READABLE, Idle::Keep)
                .unwrap();
            let start = Instant::now();
            peer.write_all(b"t").unwrap();
            assert_eq!(reactor.run(Duration::from_secs(5)).unwrap(), 0);
            assert_eq!(reactor.shared, b"tt");
            assert!(start.elapsed() >= Duration::from_millis(50));
        });
    }

    /// What a timer's test shares: the runs so far, and a socket the task
    /// writes to on its third run, to wake a handler that stops the loop.
    struct Ticks {
        runs: u32,
        wake: UnixStream,
    }

    /// Stops the loop at the first byte.
    struct Stopper(UnixStream);

    impl AsFd for Stopper {
        fn as_fd(&self) -> BorrowedFd<'_> {
            self.0.as_fd()
        }
    }

    impl Handler<Ticks> for Stopper {
        fn ready(&mut self, _: Ready, cx: &mut Context<'_, Ticks>) -> Next {
            cx.stop();
            Next::Remove
        }
    }

    #[test]
    fn a_timer_runs_with_no_event_to_wake_the_loop() {
        bounded(|| {
            let (wake, theirs) = UnixStream::pair().unwrap();
            let ticks = Ticks { runs: 0, wake };
            // No idle deadline, no `Next::At`: only the timer's next run
            // can end a wait that no event ends.
            let mut reactor = Reactor::new(ticks, Duration::MAX).unwrap();
            reactor
                .registry()
                .add(Box::new(Stopper(theirs)), Interest::READABLE, Idle::Keep)
                .unwrap();
            reactor.every(Duration::from_millis(10), |ticks: &mut Ticks| {
                ticks.runs += 1;
                if ticks.runs == 3 {
                    ticks.wake.write_all(b"s").unwrap();
                }
            });
            let start = Instant::now();
            assert_eq!(reactor.run(Duration::from_secs(5)).unwrap(), 0);
            assert!(reactor.shared.runs >= 3);
            // A period after each run, not all at once.
            assert!(start.elapsed() >= Duration::from_millis(30));
        });
    }

    #[test]
    fn a_removed_handler_is_closed_and_a_handed_back_one_deregistered() {
        bounded(|| {
            let mut reactor = Reactor::new(Vec::new(), Duration::MAX).unwrap();
            let (mut peer, probe) = pair();
            let token = reactor
                .registry()
                .add(Box::new(probe), Interest::READABLE, Idle::Keep)
                .unwrap();
            peer.write_all(b"r").unwrap();
            reactor.run(Duration::from_secs(5)).unwrap();
            // `Next::Remove` dropped the handler: its peer reads EOF.
            assert_eq!(peer.read(&mut [0; 1]).unwrap(), 0);
            assert!(reactor.registry().remove(token).is_none());

            // `remove` hands a handler back, off the interest list.
            let (_peer, probe) = pair();
            let token = reactor
                .registry()
                .add(Box::new(probe), Interest::READABLE, Idle::Keep)
                .unwrap();
            let probe = reactor.registry().remove(token).unwrap();
            let err = reactor
                .registry()
                .modify(&probe.as_fd(), Interest::WRITABLE)
                .unwrap_err();
            assert_eq!(err.raw_os_error(), Some(Errno::ENOENT as i32));
        });
    }

    #[test]
    fn an_idle_handler_is_told_and_closed_after_the_timeout() {
        bounded(|| {
            let (mut idle_peer, idle) = pair();
            let (mut stop_peer, stopper) = pair();
            let start = Instant::now();
            let reactor = thread::spawn(move || {
                let timeout = Duration::from_millis(50);
                let mut reactor = Reactor::new(Vec::new(), timeout).unwrap();
                let registry = reactor.registry();
                registry
                    .add(Box::new(idle), Interest::READABLE, Idle::Close)
                    .unwrap();
                registry
                    .add(Box::new(stopper), Interest::READABLE, Idle::Keep)
                    .unwrap();
                reactor.run(Duration::from_secs(5)).unwrap()
            });
            let mut told = String::new();
            idle_peer.read_to_string(&mut told).unwrap();
            assert_eq!(told, "idle", "told, then closed");
            assert!(start.elapsed() >= Duration::from_millis(50));
            // The other one, exempt, is still there to stop the reactor.
            stop_peer.write_all(b"s").unwrap();
            assert_eq!(reactor.join().unwrap(), 0);
        });
    }
}
