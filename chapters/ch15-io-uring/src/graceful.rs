//! How a connection ends once its requests are over, after a bad frame or
//! when the server stops: every reply sent, then a goodbye (FIN) and not a
//! reset (see `finish_if_no_more_requests`). A stop ends every connection
//! so, all at once, within `--grace-ms`. Where chapter 9 closed things, a
//! stop here cancels them too: closing a descriptor does not stop an
//! operation that uses it.

use std::net::TcpListener;
use std::os::fd::AsRawFd;

use common::log::count;
use common::net;
use common::{debug, info};

use crate::ring::{cancel, Queue, Token};
use crate::{remove, Conn, Connections, State};

// ANCHOR: stop
/// Stops accepting: cancels the accept (or the poll or the pause that
/// stands in for it) and closes the listener. The kernel keeps its own
/// reference to the socket while an operation uses it: closing our
/// descriptor alone would leave the accept running, and the port open.
/// An accept this turn queued but did not submit yet is dropped: submitted
/// after the `close`, it would name a descriptor number that is free, or
/// by then another file's.
pub fn stop_accepting(queue: &mut Queue, listener: Option<TcpListener>) {
    let accepting = [Token::Accept, Token::Listener, Token::AcceptPause];
    queue.forget(&accepting);
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
pub fn stop_reading(queue: &mut Queue, conns: &mut Connections) {
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
// ANCHOR_END: stop

// ANCHOR: close
/// Once a connection will read no more requests (it sent a bad frame, or
/// the server is stopping) and every reply is sent, we shut down our
/// sending side: the client reads our last reply, then EOF.
///
/// Why not close at once: `close` on a socket with unread input makes the
/// kernel send a reset (RST) instead of a FIN, and throw away whatever we
/// sent that the client has not received yet. So we wait for the client's
/// EOF, receiving and dropping what it still sends, and only then close. A
/// client that never hangs up is closed when the stop's grace period ends.
pub fn finish_if_no_more_requests(conn: &mut Conn) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::{accept_all, pause_accepting, wait_for_client, Submission};

    #[test]
    fn stopping_drops_the_accepts_not_yet_submitted() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut queue = Queue::default();
        // This turn's completions re-armed the accept, then the stop came.
        queue.push(accept_all(&listener));
        queue.push(wait_for_client(&listener));
        queue.push(pause_accepting());
        queue.push(Submission::nop(Token::Stop));
        stop_accepting(&mut queue, Some(listener));
        // Submitted after the close, they would name a free descriptor
        // number, or another file's.
        assert_eq!(
            queue.tokens(),
            [Token::Stop, Token::Cancel, Token::Cancel, Token::Cancel]
        );
    }
}
