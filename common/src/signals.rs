//! Stopping cleanly on SIGINT (Ctrl-C) and SIGTERM (`kill`).
//!
//! Two techniques, for two kinds of server:
//! - blocking servers install a handler *without* `SA_RESTART`, so a blocked
//!   `accept` or `read` returns `EINTR` and the loop checks [`stop_requested`];
//! - event loops turn the signals into a readable file descriptor
//!   ([`stop_signalfd`]) and wait for it like for any socket.

use std::io::{self, ErrorKind, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

/// The signals that ask a server to stop.
pub const STOP_SIGNALS: [Signal; 2] = [Signal::SIGINT, Signal::SIGTERM];

// ANCHOR: handler
static STOP: AtomicBool = AtomicBool::new(false);

/// Runs in signal context, in the middle of whatever the thread was doing, so
/// it may only do async-signal-safe things: storing to an atomic is one.
extern "C" fn request_stop(_signal: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Installs the SIGINT/SIGTERM handler. The flags are empty on purpose: with
/// `SA_RESTART` the kernel would silently restart the interrupted `accept` or
/// `read`, and a server blocked there would never notice the signal.
pub fn install_stop_handler() -> io::Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(request_stop),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for sig in STOP_SIGNALS {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { signal::sigaction(sig, &action) }?;
    }
    Ok(())
}

/// True once SIGINT or SIGTERM has arrived.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}
// ANCHOR_END: handler

// ANCHOR: stoppable
/// A blocking stream that gives up when a stop is requested.
///
/// A signal that arrives while the thread is blocked in `read` or `write`
/// makes the call fail with `EINTR` (the handler has no `SA_RESTART`); we
/// then check the flag and either stop or call again. std's `read_exact` and
/// `write_all` would retry `EINTR` silently, leaving a server deaf to Ctrl-C
/// until its client spoke: that is why this wrapper sits *under* them.
///
/// It also checks *before* each call: a signal that lands between two calls
/// interrupts nothing, and without the check the next `read` would wait for
/// the client. A window of a few instructions remains between the check and
/// the system call; the event loops close it for good by waiting for the
/// signal as a file descriptor ([`stop_signalfd`]).
pub struct Stoppable<S>(pub S);

/// The error a [`Stoppable`] stream returns once a stop is requested.
pub fn is_stop(e: &io::Error) -> bool {
    e.kind() == ErrorKind::Other && e.to_string() == STOPPING
}

const STOPPING: &str = "stopping: SIGINT or SIGTERM received";

impl<S> Stoppable<S> {
    fn call<T>(&mut self, mut f: impl FnMut(&mut S) -> io::Result<T>) -> io::Result<T> {
        loop {
            if stop_requested() {
                return Err(io::Error::other(STOPPING));
            }
            match f(&mut self.0) {
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                result => return result,
            }
        }
    }
}

impl<S: Read> Read for Stoppable<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.call(|s| s.read(buf))
    }
}

impl<S: Write> Write for Stoppable<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.call(|s| s.write(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.call(|s| s.flush())
    }
}
// ANCHOR_END: stoppable

// ANCHOR: signalfd
/// Blocks SIGINT and SIGTERM and returns a descriptor that becomes readable
/// when one of them is pending.
///
/// Why signalfd and not a handler plus a self-pipe: with the signals blocked
/// no handler ever interrupts the loop, so there is no `EINTR` to handle and
/// no async-signal-safety to think about; the signal simply waits in the
/// kernel until the loop reads it like any other event. (A self-pipe does the
/// same job portably; signalfd is Linux-only, as is epoll.)
///
/// Call it before starting any thread: the mask is per thread, and a thread
/// that left the signals unblocked would take them and die of the default action.
pub fn stop_signalfd() -> io::Result<SignalFd> {
    let mut mask = SigSet::empty();
    for sig in STOP_SIGNALS {
        mask.add(sig);
    }
    signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)?;
    Ok(SignalFd::with_flags(
        &mask,
        SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC,
    )?)
}
// ANCHOR_END: signalfd
