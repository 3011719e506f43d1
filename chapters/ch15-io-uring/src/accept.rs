// ANCHOR: accept_head
//! Accepting, in io_uring's terms: one multishot accept serves every
//! client while all is well. Out of memory or out of descriptors,
//! submitting it again would fail again at once, so it pauses, or falls
//! back on readiness and chapter 9's spare descriptor.

use std::fs::File;
use std::net::TcpListener;
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;

use common::net::{self, accept_nonblocking, AcceptError};
use common::{error, warn};
use nix::errno::Errno;

use crate::ring::{accept_all, pause_accepting, recv, wait_for_client, Queue};
use crate::{Conn, Connections};
// ANCHOR_END: accept_head

// ANCHOR: accept
/// Out of memory, or out of descriptors with none to spare for turning a
/// client away, accepting again at once would fail again at once: how long
/// to pause first. Chapter 9's pause, as an operation of the ring.
pub const ACCEPT_PAUSE: Duration = Duration::from_millis(10);

/// A completion of the multishot accept: a new connection, or why none;
/// `more` if the accept stays armed.
pub fn accepted(
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
pub fn accept_waiting(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::Token;

    #[test]
    fn accept_errors_keep_accepting_and_pause_when_short_of_memory() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut conns = Connections::default();
        let mut after = |error: Errno, more: bool| {
            let mut queue = Queue::default();
            accepted(Err(error), more, &mut queue, &mut conns, Some(&listener));
            queue.tokens()
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
}
