//! How a connection ends once its requests are over, after a bad frame or
//! when the server stops: every reply sent, then a goodbye (FIN) and not a
//! reset (see `finish_if_no_more_requests`). A stop ends every connection
//! so, all at once, within `--grace-ms`.

use std::os::fd::AsRawFd;

use common::debug;
use common::net::{self, retry_eintr};
use nix::errno::Errno;
use nix::unistd::read;

use crate::buffer::Pool;
use crate::{Conn, State, Turn, READS_PER_TURN};

// ANCHOR: stop_reading
// Identical in chapters 6 to 12, 16 and 17 (book/check.sh checks it).
/// A stop answers what the client had sent when the signal came, and no
/// more: the bytes in our buffer and in the socket's receive queue. (The
/// kernel counts those only up to an urgent mark, if there is one: frames
/// behind a byte of urgent data, a rarity, go unanswered.)
pub fn stop_reading(conn: &mut Conn) {
    let unread = net::unread_bytes(&conn.fd).unwrap_or(0);
    conn.read_limit = Some(conn.read_limit.map_or(unread, |limit| limit.min(unread)));
    if conn.state == State::Reading {
        finish_if_no_more_requests(conn);
    }
}
// ANCHOR_END: stop_reading

// ANCHOR: close
// Identical in chapters 9 to 12, 16 and 17 (book/check.sh checks it).
// ANCHOR: finish_requests
// Identical in chapters 8 to 12, 16 and 17 (book/check.sh checks it).
/// Once a connection will read no more requests (it sent a bad frame, or
/// the server is stopping) and every reply is sent, we shut down our
/// sending side: the client reads our last reply, then EOF.
///
/// Why not close at once: `close` on a socket with unread input makes the
/// kernel send a reset (RST) instead of a FIN, and throw away whatever we
/// sent that the client has not received yet. So we wait for the client's
/// EOF, reading and dropping what it still sends, and only then close. A
/// client that never hangs up is closed when the stop's grace period ends.
pub fn finish_if_no_more_requests(conn: &mut Conn) {
    if conn.read_limit != Some(0) {
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
// ANCHOR_END: finish_requests

pub fn close_gracefully(conn: &mut Conn, pool: &mut Pool) -> Turn {
    for _ in 0..READS_PER_TURN {
        if !conn.readable {
            return Turn::Idle;
        }
        match retry_eintr(|| read(&conn.fd, conn.incoming.unfilled(pool))) {
            // Dropped: we answer no more requests.
            Ok(1..) => continue,
            // Not yet: the client has not read everything, or not hung up.
            Err(Errno::EAGAIN) => conn.readable = false,
            // EOF (it has all our replies) or an error: close now.
            Ok(0) | Err(_) => conn.state = State::Done,
        }
        return Turn::Idle;
    }
    Turn::Unfinished
}
// ANCHOR_END: close
