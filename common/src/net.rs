//! The listening socket and the line that announces it.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::socket::{
    self, bind, setsockopt, sockopt, AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage,
};

// ANCHOR: listen
/// Creates a TCP socket, binds it to `addr` and starts listening.
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    // SOCK_CLOEXEC: a child process we might start must not inherit the listener.
    let fd = socket::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    // Without SO_REUSEADDR, restarting the server fails with EADDRINUSE for a
    // minute or two: the connections it just closed linger in TIME_WAIT on
    // this port, and the kernel refuses to bind over them.
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    // The backlog bounds connections the kernel has completed but we have not
    // yet accepted; the kernel caps it at net.core.somaxconn.
    socket::listen(&fd, Backlog::MAXCONN)?;
    Ok(TcpListener::from(fd))
}
// ANCHOR_END: listen

/// Prints `listening on HOST:PORT` on stdout and flushes it: tests and scripts
/// wait for this line, and with `--addr 127.0.0.1:0` it is the only way to
/// learn which port the kernel picked.
pub fn announce(listener: &TcpListener) -> io::Result<SocketAddr> {
    let addr = listener.local_addr()?;
    let mut out = io::stdout().lock();
    writeln!(out, "listening on {addr}")?;
    out.flush()?;
    Ok(addr)
}

/// [`listen`], then [`announce`]: what every server does first.
pub fn listen_and_announce(addr: SocketAddr) -> io::Result<TcpListener> {
    let listener = listen(addr)?;
    announce(&listener)?;
    Ok(listener)
}

// ANCHOR: set_nonblocking
/// Puts a file descriptor in non-blocking mode: from now on a `read`, `write`
/// or `accept` that would wait fails at once with `EAGAIN` (`WouldBlock`).
pub fn set_nonblocking(fd: impl AsFd) -> io::Result<()> {
    let flags = OFlag::from_bits_retain(fcntl(fd.as_fd(), FcntlArg::F_GETFL)?);
    fcntl(fd.as_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}
// ANCHOR_END: set_nonblocking

// ANCHOR: accept
/// Waits for a connection with accept(2) itself, not `TcpListener::accept`:
/// std retries `EINTR` for us, but a blocking server must *see* it, because
/// that is how a Ctrl-C reaches a loop parked in `accept`.
pub fn accept(listener: &TcpListener) -> io::Result<TcpStream> {
    let fd = socket::accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC)?;
    // SAFETY: accept4 just returned this descriptor; nothing else owns it.
    Ok(TcpStream::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}
// ANCHOR_END: accept
