//! One Ctrl-C, every loop: how a stop signal reaches N threads.
//!
//! SIGINT is sent to the process, not to a thread. With the stop signals
//! blocked (see `common::signals`), it waits, pending, until one thread
//! reads it from a signalfd; that read takes it from every other thread.
//! Every loop holds the same signalfd in its epoll instance, so every loop
//! wakes up for the signal, but only the first to read it learns of it: a
//! loop that loses the race reads nothing, and epoll, which checks a
//! descriptor again before reporting it, may not even report it. So the
//! winner tells the others, through a descriptor that nobody reads.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::{error, info};
use nix::sys::epoll::{Epoll, EpollEvent, EpollFlags};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::signalfd::SignalFd;

// ANCHOR: stop
/// What the loops share to stop together.
pub struct Stop {
    /// Stop signals so far: the first asks for a graceful stop, the second
    /// for an immediate one.
    signals: AtomicUsize,
    /// A loop failed: the others finish, as after a first signal. Kept
    /// apart from `signals`, so that no failure counts as one: two failures,
    /// or a failure and the user's first Ctrl-C, still stop gracefully.
    failed: AtomicBool,
    /// Written to wake the loops. Each loop's epoll holds it edge-triggered,
    /// so every write is one event in every loop, and no loop reads it, so
    /// none can take the event from another. (mio's `Waker` is the same.)
    wake: EventFd,
}

/// What a loop should do, as far as stopping goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    Serve,
    /// Stop accepting and reading, answer what came, close gracefully.
    Finish,
    /// Asked twice: close everything now.
    Quit,
}

impl Stop {
    pub fn new() -> nix::Result<Stop> {
        Ok(Stop {
            signals: AtomicUsize::new(0),
            failed: AtomicBool::new(false),
            wake: EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)?,
        })
    }

    /// Puts the signals and the wake-up in a loop's epoll instance, both
    /// under `token`. The signalfd is level-triggered, as in chapter 9: it
    /// stays readable until some loop reads the signal.
    pub fn register(&self, epoll: &Epoll, signals: &SignalFd, token: u64) -> nix::Result<()> {
        epoll.add(signals, EpollEvent::new(EpollFlags::EPOLLIN, token))?;
        let edges = EpollFlags::EPOLLIN | EpollFlags::EPOLLET;
        epoll.add(&self.wake, EpollEvent::new(edges, token))
    }

    /// On an event for `token`: takes the pending signal if this loop is
    /// the first to read it, and passes it on; then says what is asked.
    pub fn check(&self, signals: &SignalFd) -> Asked {
        match signals.read_signal() {
            Ok(Some(_)) => self.signal(),
            // Another loop read it first, or this was the wake-up.
            Ok(None) => {}
            Err(e) => {
                error!("signalfd: {e}");
                self.signal();
            }
        }
        self.asked()
    }

    fn asked(&self) -> Asked {
        match self.signals.load(Ordering::SeqCst) {
            0 if !self.failed.load(Ordering::SeqCst) => Asked::Serve,
            0 | 1 => Asked::Finish,
            _ => Asked::Quit,
        }
    }

    /// Counts a stop signal, and wakes the loops.
    fn signal(&self) {
        // The count before ours, in the same atomic step: checking first
        // and adding after would let two loops both see none.
        if self.signals.fetch_add(1, Ordering::SeqCst) > 0 {
            info!("second stop signal: closing every connection now");
        }
        self.wake();
    }

    /// A loop could not start or failed: the others finish, and the
    /// server exits with the error.
    pub fn fail(&self) {
        // Only the first failure needs to wake the loops.
        if !self.failed.swap(true, Ordering::SeqCst) {
            self.wake();
        }
    }

    fn wake(&self) {
        // Fails only if the counter would overflow, after 2^64 - 2 writes:
        // it is readable then, which is all we need.
        let _ = self.wake.write(1);
    }
}
// ANCHOR_END: stop

/// Held by a loop's thread: if the loop ends by an error or a panic, the
/// server has failed, and the other loops are asked to finish.
pub struct Running<'a> {
    stop: &'a Stop,
    /// Set by a loop that returns an error.
    pub failed: bool,
}

impl Stop {
    pub fn running(&self) -> Running<'_> {
        Running {
            stop: self,
            failed: false,
        }
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if self.failed || std::thread::panicking() {
            self.stop.fail();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failure stops the loops gracefully, however many there are, and
    /// never counts as a Ctrl-C: the user's first one after it must not be
    /// taken for a second.
    #[test]
    fn a_failure_never_counts_as_a_stop_signal() {
        let stop = Stop::new().unwrap();
        assert_eq!(stop.asked(), Asked::Serve);
        stop.fail();
        stop.fail();
        assert_eq!(stop.asked(), Asked::Finish, "two failures");
        stop.signal(); // what `check` does when it reads one
        assert_eq!(stop.asked(), Asked::Finish, "a failure, then one Ctrl-C");
        stop.signal();
        assert_eq!(stop.asked(), Asked::Quit, "two Ctrl-C");
    }
}
