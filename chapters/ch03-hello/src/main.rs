//! Chapter 3: hello. The smallest TCP server: `socket`, `bind`, `listen`,
//! `accept`; then, per client, one `read`, one `write`, one `close`.
//!
//! This chapter calls libc directly, on purpose: the system calls are the
//! lesson, so nothing stands between you and them. Later chapters use the
//! safer wrappers in `nix` and `std`.

use std::io;
use std::mem;
use std::net::{SocketAddr, SocketAddrV4, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::ExitCode;

use anyhow::{bail, Result};
use common::{args::Args, info, net, signals, warn};

/// What the server answers, whatever the client said.
const REPLY: &[u8] = b"world";

// ANCHOR: start
fn main() -> ExitCode {
    common::args::run(serve)
}

fn serve() -> Result<()> {
    let addr =
        Args::from_env("ch03", "answers \"world\" to every client, then hangs up").finish()?;
    net::raise_fd_limit()?;
    // Ctrl-C must interrupt a blocked accept or read: see common::signals.
    signals::install_stop_handler()?;
    let SocketAddr::V4(addr) = addr else {
        bail!("ch03 speaks IPv4 only, got {addr}");
    };
    let listener = listen(addr).map_err(|e| net::listen_error(addr.into(), e))?;
    // std's local_addr is getsockname(2): with port 0 it tells which port the kernel chose.
    net::announce(&TcpListener::from(listener.try_clone()?))?;
    // ANCHOR_END: start

    // ANCHOR: accept_loop
    while !signals::stop_requested() {
        // accept(2) blocks until a client has connected, then returns a *new*
        // descriptor for that one connection; the listener keeps listening.
        // SAFETY: null address pointers are allowed: we don't ask who connected.
        let fd = unsafe {
            libc::accept(
                listener.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        if fd < 0 {
            let err = io::Error::last_os_error();
            // EINTR: a signal arrived while we waited; the loop condition decides.
            if err.kind() != io::ErrorKind::Interrupted {
                warn!("accept: {err}");
            }
            continue;
        }
        // SAFETY: accept just returned this descriptor and nothing else owns it;
        // OwnedFd closes it when `conn` goes out of scope.
        let conn = unsafe { OwnedFd::from_raw_fd(fd) };
        if let Err(err) = say_hello(conn.as_raw_fd()) {
            // A client that resets is its own business: say it, quietly.
            common::debug!("connection: {err}");
        }
    }
    // ANCHOR_END: accept_loop
    info!("stopping");
    Ok(())
}

// ANCHOR: listen
/// socket(2), setsockopt(2), bind(2), listen(2): a socket ready to accept.
fn listen(addr: SocketAddrV4) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes plain integers; we check the result below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that we now own; it is closed on every error path.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };

    // Let a restarted server bind at once, despite old connections in TIME_WAIT.
    let on: libc::c_int = 1;
    // SAFETY: the pointer and length describe `on`, alive for the whole call.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&on as *const libc::c_int).cast(),
            mem::size_of_val(&on) as libc::socklen_t,
        )
    })?;

    // The kernel wants the address as a `sockaddr_in`, in network byte order.
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: the pointer and length describe `sin`, alive for the whole call.
    check(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sin as *const libc::sockaddr_in).cast(),
            mem::size_of_val(&sin) as libc::socklen_t,
        )
    })?;
    // SAFETY: listen(2) takes plain integers.
    check(unsafe { libc::listen(fd.as_raw_fd(), libc::SOMAXCONN) })?;
    Ok(fd)
}
// ANCHOR_END: listen

// ANCHOR: say_hello
/// One read, one write. The descriptor is closed by our caller.
fn say_hello(conn: RawFd) -> io::Result<()> {
    let mut buf = [0u8; 64];
    // read(2) returns as soon as *some* bytes have arrived, at most buf.len():
    // maybe the whole message, maybe part of it, 0 if the client hung up.
    // SAFETY: the pointer and length describe `buf`, which outlives the call.
    let n = unsafe { libc::read(conn, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    info!(
        "client says: {}",
        String::from_utf8_lossy(&buf[..n as usize])
    );

    // MSG_NOSIGNAL: if the client has gone, fail with EPIPE instead of raising
    // SIGPIPE, whose default action kills the process. (Rust's runtime already
    // ignores SIGPIPE before main; the flag says so where it matters.)
    // A 5-byte write into an empty send buffer is never short; ch04 handles
    // short writes. And a first small segment is never held back by Nagle's
    // algorithm, which waits only while earlier data is unacknowledged (ch04).
    // SAFETY: the pointer and length describe REPLY, a static.
    let sent = unsafe { libc::send(conn, REPLY.as_ptr().cast(), REPLY.len(), libc::MSG_NOSIGNAL) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
// ANCHOR_END: say_hello

/// libc reports failure as -1 with the reason in errno.
fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
