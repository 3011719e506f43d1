//! Socket plumbing every chapter needs and none of them teaches any more:
//! the listening socket, `accept` as a safe call, and small socket options.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::resource::{getrlimit, setrlimit, Resource, RLIM_INFINITY};
use nix::sys::socket::{
    self, bind, setsockopt, sockopt, AddressFamily, Backlog, Shutdown, SockFlag, SockType,
    SockaddrStorage,
};

// ANCHOR: listen
/// Creates a TCP socket, binds it to `addr` and starts listening. The error
/// names the address: "cannot listen on 127.0.0.1:1234: Address in use".
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    try_listen(addr).map_err(|e| listen_error(addr, e))
}

fn try_listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    // SOCK_CLOEXEC: a child process we might start must not inherit the listener.
    let fd = socket::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    // Without SO_REUSEADDR, restarting the server fails with EADDRINUSE for
    // a minute: the connections it just closed linger in TIME_WAIT on this
    // port for 60 s (Linux's fixed TCP_TIMEWAIT_LEN), and the kernel refuses
    // to bind over them.
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    // The backlog bounds connections the kernel has completed but we have not
    // yet accepted; the kernel caps it at net.core.somaxconn.
    socket::listen(&fd, Backlog::MAXCONN)?;
    Ok(TcpListener::from(fd))
}
// ANCHOR_END: listen

/// The error of a server that could not listen on `addr`, in one line that
/// names the address, and for a privileged port says how to do without:
/// every chapter reports its `bind` failures through it.
pub fn listen_error(addr: SocketAddr, e: io::Error) -> io::Error {
    let mut message = format!("cannot listen on {addr}: {e}");
    // Below net.ipv4.ip_unprivileged_port_start (1024 unless changed; it
    // applies to IPv6 too), binding takes CAP_NET_BIND_SERVICE, which root has.
    let first_free = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1024u32);
    let port = u32::from(addr.port());
    if e.kind() == io::ErrorKind::PermissionDenied && port != 0 && port < first_free {
        let instead = SocketAddr::new(addr.ip(), 1234);
        message += &format!(
            "; ports below {first_free} need the capability CAP_NET_BIND_SERVICE \
             (which root usually has): use a port of {first_free} or more, e.g. --addr {instead}"
        );
    }
    io::Error::new(e.kind(), message)
}

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

// ANCHOR: accept_error
/// Why `accept` gave us no connection, sorted by what to do about it.
///
/// accept(2) warns that Linux passes errors of the new connection up to
/// `accept`, and that they should be treated like `EAGAIN`: retry. Giving up
/// on them instead would, under edge-triggered epoll, leave every client
/// behind in the backlog until yet another one connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptError {
    /// `EAGAIN`: nobody is waiting (only on a non-blocking listener).
    Empty,
    /// That one connection failed (`ECONNABORTED`, `EPROTO`, a network
    /// error, `EPERM` from a firewall rule), or a signal interrupted the
    /// call (`EINTR`): go on with the next.
    Retry(Errno),
    /// Out of file descriptors (`EMFILE`, `ENFILE`): the connection stays
    /// in the backlog, and so the listener stays readable.
    NoFds(Errno),
    /// The kernel is short of memory (`ENOBUFS`, `ENOMEM`): the client
    /// stays in the backlog; try again after [`ACCEPT_PAUSE`].
    NoMemory(Errno),
    /// A bug (`EBADF`, `EINVAL`, `ENOTSOCK`...): nothing will fix it by retrying.
    Fatal(Errno),
}

/// How long to wait before calling `accept` again after
/// [`AcceptError::NoMemory`]. Not zero: a shortage of memory can last, and
/// trying at once would be a busy loop that logs every try. Short: the
/// clients are waiting.
pub const ACCEPT_PAUSE: Duration = Duration::from_millis(10);

impl From<Errno> for AcceptError {
    fn from(e: Errno) -> AcceptError {
        use Errno::*;
        match e {
            EAGAIN => AcceptError::Empty,
            ECONNABORTED | EPROTO | EINTR | EPERM | ENETDOWN | ENOPROTOOPT | EHOSTDOWN | ENONET
            | EHOSTUNREACH | EOPNOTSUPP | ENETUNREACH | ETIMEDOUT => AcceptError::Retry(e),
            EMFILE | ENFILE => AcceptError::NoFds(e),
            ENOBUFS | ENOMEM => AcceptError::NoMemory(e),
            _ => AcceptError::Fatal(e),
        }
    }
}
// ANCHOR_END: accept_error

impl std::fmt::Display for AcceptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AcceptError::Empty => Errno::EAGAIN.fmt(f),
            AcceptError::Retry(e)
            | AcceptError::NoFds(e)
            | AcceptError::NoMemory(e)
            | AcceptError::Fatal(e) => e.fmt(f),
        }
    }
}

// ANCHOR: accept
/// Takes the next connection from a non-blocking listener: accept4(2) with
/// `SOCK_NONBLOCK` (the socket is born non-blocking, no `fcntl` needed) and
/// `SOCK_CLOEXEC`, the descriptor owned from the first instant.
pub fn accept_nonblocking(listener: &impl AsFd) -> Result<OwnedFd, AcceptError> {
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    let fd = socket::accept4(listener.as_fd().as_raw_fd(), flags)?;
    // SAFETY: accept4 just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Waits for a connection, for the blocking chapters. Calls accept(2)
/// itself, not `TcpListener::accept`: std retries `EINTR` for us, but a
/// blocking server must *see* it, as that is how Ctrl-C reaches a loop
/// parked in `accept` (see [`crate::signals`]).
pub fn accept(listener: &TcpListener) -> Result<TcpStream, AcceptError> {
    let fd = socket::accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC)?;
    // SAFETY: accept4 just returned this descriptor; nothing else owns it.
    Ok(TcpStream::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}
// ANCHOR_END: accept

// ANCHOR: nodelay
/// Sets `TCP_NODELAY`: a small write goes out at once, even while an earlier
/// one is still unacknowledged. Without it, Nagle's algorithm holds it back
/// until that acknowledgement comes, and a client that delays its ACKs
/// (Linux: up to 40 ms) stalls on every second reply (chapter 4).
pub fn set_nodelay(fd: impl AsFd) -> io::Result<()> {
    setsockopt(&fd, sockopt::TcpNoDelay, &true)?;
    Ok(())
}
// ANCHOR_END: nodelay

/// Closes our sending side: the peer reads EOF after the last byte we sent,
/// while we can still read what it sends.
pub fn shutdown_write(fd: impl AsFd) -> io::Result<()> {
    socket::shutdown(fd.as_fd().as_raw_fd(), Shutdown::Write)?;
    Ok(())
}

/// How many bytes wait in a socket's receive queue (`FIONREAD`, also known
/// as `SIOCINQ` for TCP): what the peer has sent that we have not read yet.
pub fn unread_bytes(fd: impl AsFd) -> io::Result<usize> {
    let mut count: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which points to
    // `count`, alive for the whole call.
    let rc = unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), libc::FIONREAD, &mut count) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(count.max(0) as usize)
}

/// How many bytes wait in a socket's send queue that the peer has not
/// acknowledged (`SIOCOUTQ`): 0 once the peer's kernel holds all we sent.
pub fn unacknowledged_bytes(fd: impl AsFd) -> io::Result<usize> {
    let mut count: libc::c_int = 0;
    // SAFETY: SIOCOUTQ writes one c_int through the pointer, which points to
    // `count`, alive for the whole call.
    let rc = unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), libc::TIOCOUTQ, &mut count) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(count.max(0) as usize)
}

/// Calls `f` again while it fails with `EINTR`: a signal handler ran during
/// the call and the call did nothing, so doing it again is always right.
/// (With the stop signals blocked and read from a signalfd, this is rare: a
/// debugger attaching, SIGSTOP and SIGCONT.)
pub fn retry_eintr<T>(mut f: impl FnMut() -> nix::Result<T>) -> nix::Result<T> {
    loop {
        match f() {
            Err(Errno::EINTR) => continue,
            result => return result,
        }
    }
}

// ANCHOR: fd_limit
/// Raises the soft limit on open files to the hard limit, and returns it.
///
/// Every connection is a file descriptor, and the usual soft limit is 1024:
/// a server that kept it would refuse its 1021st client with `EMFILE`. The
/// soft limit is what applies, the hard limit is how far an unprivileged
/// process may raise it (`ulimit -Sn` and `ulimit -Hn` in a shell); the
/// kernel's own caps are `fs.nr_open` per process and `fs.file-max` for the
/// whole system.
pub fn raise_fd_limit() -> io::Result<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    // An unlimited hard limit still cannot exceed fs.nr_open.
    let target = if hard == RLIM_INFINITY {
        std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(soft)
    } else {
        hard
    };
    if soft < target {
        setrlimit(Resource::RLIMIT_NOFILE, target, hard)?;
        crate::debug!("open files: soft limit raised from {soft} to {target}");
    }
    Ok(target.max(soft))
}
// ANCHOR_END: fd_limit

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_errors_name_the_address() {
        let taken = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = taken.local_addr().unwrap();
        let err = listen(addr).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert!(
            err.to_string()
                .starts_with(&format!("cannot listen on {addr}: ")),
            "{err}"
        );
    }

    #[test]
    fn a_privileged_port_says_how_to_do_without() {
        let denied = || io::Error::from_raw_os_error(libc::EACCES);
        let err = listen_error("127.0.0.1:80".parse().unwrap(), denied());
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        let text = err.to_string();
        assert!(
            text.starts_with(
                "cannot listen on 127.0.0.1:80: Permission denied (os error 13); ports below "
            ),
            "{text}"
        );
        assert!(text.contains("CAP_NET_BIND_SERVICE"), "{text}");
        assert!(text.ends_with("e.g. --addr 127.0.0.1:1234"), "{text}");
        let err = listen_error("[::1]:80".parse().unwrap(), denied());
        assert!(err.to_string().ends_with("e.g. --addr [::1]:1234"), "{err}");
        // Only for the port's privilege: not another error, not port 0.
        for (addr, e) in [
            (
                "127.0.0.1:80",
                io::Error::from_raw_os_error(libc::EADDRINUSE),
            ),
            ("127.0.0.1:0", denied()),
            ("127.0.0.1:50000", denied()),
        ] {
            let text = listen_error(addr.parse().unwrap(), e).to_string();
            assert!(!text.contains("CAP_NET_BIND_SERVICE"), "{text}");
        }
    }

    /// A real bind of a privileged port, on a thread without the capability
    /// (capabilities belong to a thread: the test's other threads keep it).
    #[test]
    fn binding_a_privileged_port_without_the_capability() {
        let first_free: u16 =
            std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
                .map_or(1024, |s| s.trim().parse().unwrap());
        if first_free <= 1 {
            // Every port is free to bind here (some containers): nothing to see.
            eprintln!("net.ipv4.ip_unprivileged_port_start is {first_free}: skipped");
            return;
        }
        let err = std::thread::spawn(|| {
            drop_net_bind_service();
            listen("127.0.0.1:1".parse().unwrap()).unwrap_err()
        })
        .join()
        .unwrap();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
        assert!(err.to_string().contains("CAP_NET_BIND_SERVICE"), "{err}");
    }

    /// Removes CAP_NET_BIND_SERVICE from the calling thread's effective set.
    fn drop_net_bind_service() {
        #[repr(C)]
        struct Header {
            version: u32,
            pid: libc::c_int,
        }
        #[repr(C)]
        #[derive(Clone, Copy, Default)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        const VERSION_3: u32 = 0x2008_0522;
        const CAP_NET_BIND_SERVICE: u32 = 10;
        let mut header = Header {
            version: VERSION_3,
            pid: 0,
        };
        let mut data = [Data::default(); 2];
        // SAFETY: capget(2) with a version 3 header writes two `Data`, which
        // `data` holds; pid 0 is the calling thread.
        let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
        assert_eq!(rc, 0, "capget: {}", io::Error::last_os_error());
        data[0].effective &= !(1 << CAP_NET_BIND_SERVICE);
        // SAFETY: as above; capset(2) only reads them. Dropping a capability
        // from the effective set needs no privilege.
        let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
        assert_eq!(rc, 0, "capset: {}", io::Error::last_os_error());
    }

    #[test]
    fn accept_errors_sorted_by_what_to_do() {
        assert_eq!(AcceptError::from(Errno::EAGAIN), AcceptError::Empty);
        for e in [
            Errno::ECONNABORTED,
            Errno::EPROTO,
            Errno::EPERM,
            Errno::EINTR,
        ] {
            assert_eq!(AcceptError::from(e), AcceptError::Retry(e));
        }
        assert_eq!(
            AcceptError::from(Errno::EMFILE),
            AcceptError::NoFds(Errno::EMFILE)
        );
        assert_eq!(
            AcceptError::from(Errno::ENOBUFS),
            AcceptError::NoMemory(Errno::ENOBUFS)
        );
        assert_eq!(
            AcceptError::from(Errno::EBADF),
            AcceptError::Fatal(Errno::EBADF)
        );
    }

    #[test]
    fn unread_bytes_counts_the_receive_queue() {
        let listener = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        assert_eq!(unread_bytes(&server).unwrap(), 0);
        client.write_all(b"twelve bytes").unwrap();
        // Loopback delivers before write returns, but do not rely on it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while unread_bytes(&server).unwrap() < 12 {
            assert!(std::time::Instant::now() < deadline);
            std::thread::yield_now();
        }
        assert_eq!(unread_bytes(&server).unwrap(), 12);
    }
}
