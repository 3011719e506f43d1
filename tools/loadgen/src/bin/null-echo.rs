//! `null-echo`: the cheapest server the load generator can be pointed at, to
//! measure the load generator's own ceiling.
//!
//! It sends back every byte it receives, as it comes, without looking for
//! frames: one edge-triggered epoll loop (mio), one large read buffer shared
//! by all connections, one `write` per `read`. A frame-aware server has to do
//! at least this much work, so what the load generator reaches against
//! null-echo bounds what it can measure against any server.
//!
//! Same contract as the chapter servers: `--addr HOST:PORT`, then
//! `listening on HOST:PORT` on stdout; SIGINT or SIGTERM exits with status 0.
//! It checks nothing: an oversize length header is echoed like any byte.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;

use anyhow::{Context, Result};
use common::args::Args;
use common::net::{announce, listen};
use common::signals::stop_signalfd;
use mio::net::{TcpListener, TcpStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

const STOP: Token = Token(usize::MAX);
const LISTENER: Token = Token(usize::MAX - 1);
/// One read takes whatever a socket holds, up to this: many frames at once.
const READ_BUF: usize = 256 * 1024;

struct Conn {
    stream: TcpStream,
    /// Bytes read but not yet written back: the socket's send buffer was full.
    pending: Vec<u8>,
}

fn main() -> std::process::ExitCode {
    common::args::run(serve)
}

fn serve() -> Result<()> {
    let addr = Args::from_env(
        "null-echo",
        "echoes bytes back unparsed: the cheapest server, to measure loadgen's ceiling",
    )
    .finish()?;
    // First, before any thread exists: this blocks SIGINT and SIGTERM.
    let stop = stop_signalfd().context("signalfd")?;
    let std_listener = listen(addr)?;
    std_listener.set_nonblocking(true)?;
    // Connections arriving before the listener is registered wait in the
    // backlog, and registering reports them: announcing first is safe.
    announce(&std_listener)?;
    let mut listener = TcpListener::from_std(std_listener);
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut SourceFd(&stop.as_raw_fd()), STOP, Interest::READABLE)?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;

    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut buf = vec![0u8; READ_BUF];
    let mut events = Events::with_capacity(1024);
    loop {
        match poll.poll(&mut events, None) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("epoll_wait"),
        }
        for event in events.iter() {
            match event.token() {
                STOP => return Ok(()),
                LISTENER => loop {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            // Replies go out as they are read: Nagle would only delay them.
                            stream.set_nodelay(true)?;
                            let i = free.pop().unwrap_or(conns.len());
                            poll.registry().register(
                                &mut stream,
                                Token(i),
                                Interest::READABLE | Interest::WRITABLE,
                            )?;
                            let conn = Some(Conn {
                                stream,
                                pending: Vec::new(),
                            });
                            match conns.get_mut(i) {
                                Some(slot) => *slot = conn,
                                None => conns.push(conn),
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        // EMFILE and the like: the next edge retries.
                        Err(e) => {
                            eprintln!("accept: {e}");
                            break;
                        }
                    }
                },
                Token(i) => {
                    let Some(conn) = conns.get_mut(i).and_then(Option::as_mut) else {
                        continue;
                    };
                    // The peer's FIN may come in the same edge as data: then
                    // a short read does not mean the socket is done.
                    let ended = event.is_read_closed() || event.is_error();
                    if !pump(conn, &mut buf, ended) {
                        // Dropping the stream closes it and removes it from epoll.
                        conns[i] = None;
                        free.push(i);
                    }
                }
            }
        }
    }
}

/// Writes back what is pending, then echoes until the socket is empty or
/// the peer stops taking bytes. Returns false when the connection is over.
fn pump(conn: &mut Conn, buf: &mut [u8], ended: bool) -> bool {
    if !conn.pending.is_empty() {
        match write_some(&mut conn.stream, &conn.pending) {
            Ok(n) if n == conn.pending.len() => conn.pending.clear(),
            Ok(n) => {
                // Still full: read nothing more until the next writable edge.
                conn.pending.drain(..n);
                return true;
            }
            Err(_) => return false,
        }
    }
    loop {
        let n = match conn.stream.read(buf) {
            Ok(0) => return false,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return false,
        };
        match write_some(&mut conn.stream, &buf[..n]) {
            Ok(w) if w == n => {}
            Ok(w) => {
                conn.pending.extend_from_slice(&buf[w..n]);
                return true;
            }
            Err(_) => return false,
        }
        // A short read emptied the socket; with edge-triggered epoll, bytes
        // arriving later raise a new event, so the read that would only
        // return EAGAIN is skipped (unless the peer closed: no edge comes
        // for an EOF already there).
        if n < buf.len() && !ended {
            return true;
        }
    }
}

/// Writes as much of `bytes` as the socket takes now.
fn write_some(stream: &mut TcpStream, bytes: &[u8]) -> std::io::Result<usize> {
    let mut done = 0;
    while done < bytes.len() {
        match stream.write(&bytes[done..]) {
            Ok(n) => done += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}
