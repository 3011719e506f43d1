//! How several event loops take their connections from one port: three
//! ways, chosen with `--share`, of which two are worth using.

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::str::FromStr;
use std::sync::Arc;

use common::net;
use nix::sys::epoll::{Epoll, EpollEvent, EpollFlags};
use nix::sys::socket::{
    self, bind, setsockopt, sockopt, AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage,
};

// ANCHOR: share
/// How the loops share the port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Share {
    /// A listener per loop, all bound to the same port with `SO_REUSEPORT`:
    /// the kernel puts each new connection in the queue of one of them,
    /// chosen by a hash of its addresses and ports.
    ReusePort,
    /// One listener, in every loop's epoll with `EPOLLEXCLUSIVE`: a new
    /// connection wakes one loop waiting in `epoll_wait`, not all of them.
    Exclusive,
    /// One listener, in every loop's epoll: a new connection wakes every
    /// waiting loop, and all but one find nothing to accept. Kept only to
    /// measure that waste, the thundering herd.
    Naive,
}
// ANCHOR_END: share

impl FromStr for Share {
    type Err = &'static str;

    fn from_str(text: &str) -> Result<Share, Self::Err> {
        match text {
            "reuseport" => Ok(Share::ReusePort),
            "exclusive" => Ok(Share::Exclusive),
            "naive" => Ok(Share::Naive),
            _ => Err("expected reuseport, exclusive or naive"),
        }
    }
}

impl fmt::Display for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Share::ReusePort => "reuseport",
            Share::Exclusive => "exclusive",
            Share::Naive => "naive",
        })
    }
}

// ANCHOR: listeners
/// The listener each of `loops` loops takes connections from: its own with
/// `SO_REUSEPORT`, otherwise one for all. Non-blocking, as chapter 9's:
/// another loop may take the connection we were woken for.
pub fn listeners(
    addr: SocketAddr,
    share: Share,
    loops: usize,
) -> io::Result<Vec<Arc<TcpListener>>> {
    let listeners = match share {
        Share::ReusePort => {
            // The first is any chapter's listener, without `SO_REUSEPORT`,
            // and fails as theirs do if anything holds the port: a group of
            // `SO_REUSEPORT` sockets too, which we would otherwise join.
            let first = net::listen(addr)?;
            // Once it listens, no socket can bind the port: we open the
            // group to the others only now (see `join_group`).
            setsockopt(&first, sockopt::ReusePort, &true)
                .map_err(|e| net::listen_error(addr, e.into()))?;
            // With port 0 the kernel picked one: the others must bind it too.
            let addr = first.local_addr()?;
            let mut all = vec![Arc::new(first)];
            for _ in 1..loops {
                all.push(Arc::new(join_group(addr)?));
            }
            all
        }
        Share::Exclusive | Share::Naive => {
            let shared = Arc::new(net::listen(addr)?);
            (0..loops).map(|_| Arc::clone(&shared)).collect()
        }
    };
    for listener in &listeners {
        net::set_nonblocking(&**listener)?;
    }
    Ok(listeners)
}

/// `common::net::listen` with `SO_REUSEPORT` set before `bind`: a socket
/// that sets it may bind an address and port that other sockets hold, if
/// every one of them has set it too and belongs to the same effective user.
/// Together they form a group, and the kernel spreads the new connections
/// over their queues.
///
/// So the group is open to any process of the same user that sets the
/// option, not only to our loops: a second copy of this server would join
/// it, announce the port as its own and take a share of our clients. The
/// first listener shuts that door: it binds and listens *without* the
/// option, which fails if the port is held (by a group too), and once it
/// listens, nothing can bind beside it. It sets the option only then,
/// which lets our other listeners join; a second copy of ours, whose own
/// first listener has no `SO_REUSEPORT`, cannot. Other programs that set
/// the option still can: the kernel offers no way to close a group.
fn join_group(addr: SocketAddr) -> io::Result<TcpListener> {
    let listen = || -> nix::Result<TcpListener> {
        let family = match addr {
            SocketAddr::V4(_) => AddressFamily::Inet,
            SocketAddr::V6(_) => AddressFamily::Inet6,
        };
        let fd = socket::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
        setsockopt(&fd, sockopt::ReuseAddr, &true)?;
        setsockopt(&fd, sockopt::ReusePort, &true)?;
        bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
        socket::listen(&fd, Backlog::MAXCONN)?;
        Ok(TcpListener::from(fd))
    };
    listen().map_err(|e| net::listen_error(addr, e.into()))
}
// ANCHOR_END: listeners

// ANCHOR: register
/// Puts a loop's listener in its epoll instance, edge-triggered as in
/// chapter 9, and exclusive if asked. `EPOLLEXCLUSIVE` (Linux 4.5) is the
/// kernel's answer to the herd on a shared descriptor: of the epoll
/// instances that hold it so, a new connection wakes one with a thread
/// waiting, instead of every one.
pub fn register(
    epoll: &Epoll,
    listener: &TcpListener,
    share: Share,
    token: u64,
) -> nix::Result<()> {
    let mut interest = EpollFlags::EPOLLIN | EpollFlags::EPOLLET;
    if share == Share::Exclusive {
        interest |= EpollFlags::EPOLLEXCLUSIVE;
    }
    epoll.add(listener, EpollEvent::new(interest, token))
}
// ANCHOR_END: register

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_round_trips_through_its_name() {
        for share in [Share::ReusePort, Share::Exclusive, Share::Naive] {
            assert_eq!(share.to_string().parse(), Ok(share));
        }
        assert!("herd".parse::<Share>().is_err());
    }

    #[test]
    fn reuseport_binds_one_port_many_times() {
        let all = listeners("127.0.0.1:0".parse().unwrap(), Share::ReusePort, 3).unwrap();
        let port = all[0].local_addr().unwrap().port();
        assert!(all.iter().all(|l| l.local_addr().unwrap().port() == port));
        assert_eq!(all.iter().filter(|l| Arc::strong_count(l) == 1).count(), 3);
        let shared = listeners("127.0.0.1:0".parse().unwrap(), Share::Exclusive, 3).unwrap();
        assert_eq!(Arc::strong_count(&shared[0]), 3, "one listener for all");
    }
}
