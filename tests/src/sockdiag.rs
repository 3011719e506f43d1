//! The server's end of a test connection, as the kernel sees it: how many
//! bytes the server has read from it and written to it, and how full its
//! send buffer is. What `ss -tmi` shows, read the way `ss` reads it: a
//! `sock_diag(7)` request on a netlink socket.

use std::io;
use std::mem::size_of;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// What the kernel knows of the server's end of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerEnd {
    /// Bytes the server has read from the connection.
    pub read: u64,
    /// Bytes the server has written to it (sent or still queued).
    pub written: u64,
    /// The memory its send queue holds, and the most it may hold.
    pub queued: u64,
    pub send_buffer: u64,
}

impl ServerEnd {
    /// The server's send buffer is too full for `poll` to report it
    /// writable (the kernel wants a third of it free): a server waiting
    /// for `POLLOUT` waits until the client reads. A write may still
    /// succeed until the buffer is entirely full.
    pub fn send_buffer_full(&self) -> bool {
        3 * self.queued > 2 * self.send_buffer
    }
}

/// A netlink socket for `sock_diag` requests.
pub struct SockDiag(OwnedFd);

// The kernel's structures (linux/netlink.h, linux/inet_diag.h).
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const INET_DIAG_INFO: u16 = 2;
const INET_DIAG_SKMEMINFO: u16 = 7;
const SK_MEMINFO_SNDBUF: usize = 3;
const SK_MEMINFO_WMEM_QUEUED: usize = 5;
/// Offsets in `struct tcp_info` (since Linux 4.1).
const TCPI_BYTES_ACKED: usize = 120;
const TCPI_BYTES_RECEIVED: usize = 128;
/// Offsets in `struct inet_diag_msg`.
const IDIAG_RQUEUE: usize = 56;
const IDIAG_WQUEUE: usize = 60;
const INET_DIAG_MSG_LEN: usize = 72;

#[repr(C)]
struct InetDiagSockId {
    sport: u16,
    dport: u16,
    src: [u32; 4],
    dst: [u32; 4],
    interface: u32,
    cookie: [u32; 2],
}

#[repr(C)]
struct InetDiagReqV2 {
    family: u8,
    protocol: u8,
    ext: u8,
    pad: u8,
    states: u32,
    id: InetDiagSockId,
}

#[repr(C)]
struct Request {
    header: libc::nlmsghdr,
    body: InetDiagReqV2,
}

impl SockDiag {
    pub fn open() -> io::Result<SockDiag> {
        // SAFETY: socket(2) takes no pointers; a non-negative result is a
        // new descriptor that we own.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                libc::NETLINK_SOCK_DIAG,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by socket(2) and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let timeout = libc::timeval {
            tv_sec: 2,
            tv_usec: 0,
        };
        // SAFETY: the pointer and length describe `timeout`, alive for the call.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(SockDiag(fd))
    }

    /// The server's end of `client`'s connection (IPv4 only).
    pub fn server_end(&self, client: &TcpStream) -> io::Result<ServerEnd> {
        let (SocketAddr::V4(ours), SocketAddr::V4(theirs)) =
            (client.local_addr()?, client.peer_addr()?)
        else {
            return Err(io::Error::other("sock_diag: only IPv4 connections"));
        };
        let v4 = |ip: IpAddr| match ip {
            IpAddr::V4(ip) => [u32::from_ne_bytes(ip.octets()), 0, 0, 0],
            IpAddr::V6(_) => unreachable!(),
        };
        let request = Request {
            header: libc::nlmsghdr {
                nlmsg_len: size_of::<Request>() as u32,
                nlmsg_type: SOCK_DIAG_BY_FAMILY,
                nlmsg_flags: libc::NLM_F_REQUEST as u16,
                nlmsg_seq: 1,
                nlmsg_pid: 0,
            },
            body: InetDiagReqV2 {
                family: libc::AF_INET as u8,
                protocol: libc::IPPROTO_TCP as u8,
                ext: (1 << (INET_DIAG_INFO - 1)) | (1 << (INET_DIAG_SKMEMINFO - 1)),
                pad: 0,
                states: !0,
                // The server's end: its address is the source.
                id: InetDiagSockId {
                    sport: theirs.port().to_be(),
                    dport: ours.port().to_be(),
                    src: v4(IpAddr::V4(*theirs.ip())),
                    dst: v4(IpAddr::V4(*ours.ip())),
                    interface: 0,
                    cookie: [!0, !0], // INET_DIAG_NOCOOKIE: match by address
                },
            },
        };
        // SAFETY: the pointer and length describe `request`, a plain
        // `repr(C)` struct alive for the call; a null address sends to the
        // kernel, the socket's default peer.
        let sent = unsafe {
            libc::send(
                self.0.as_raw_fd(),
                (&request as *const Request).cast(),
                size_of::<Request>(),
                0,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut reply = [0u8; 4096];
        // SAFETY: the pointer and length describe `reply`, which recv
        // writes at most `reply.len()` bytes into.
        let got = unsafe {
            libc::recv(
                self.0.as_raw_fd(),
                reply.as_mut_ptr().cast(),
                reply.len(),
                0,
            )
        };
        if got < 0 {
            return Err(io::Error::last_os_error());
        }
        parse(&reply[..got as usize])
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes(b[at..at + 2].try_into().unwrap())
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(b[at..at + 8].try_into().unwrap())
}

/// Reads one `inet_diag_msg` and its attributes.
fn parse(reply: &[u8]) -> io::Result<ServerEnd> {
    let header_len = size_of::<libc::nlmsghdr>();
    if reply.len() < header_len {
        return Err(io::Error::other("sock_diag: a short reply"));
    }
    let len = (u32_at(reply, 0) as usize).min(reply.len());
    match u16_at(reply, 4) as libc::c_int {
        libc::NLMSG_ERROR => {
            let errno = -(u32_at(reply, header_len) as i32);
            return Err(io::Error::from_raw_os_error(errno));
        }
        t if t == SOCK_DIAG_BY_FAMILY as libc::c_int => {}
        other => return Err(io::Error::other(format!("sock_diag: message type {other}"))),
    }
    let msg = &reply[header_len..len];
    if msg.len() < INET_DIAG_MSG_LEN {
        return Err(io::Error::other("sock_diag: a short inet_diag_msg"));
    }
    let (rqueue, wqueue) = (u32_at(msg, IDIAG_RQUEUE), u32_at(msg, IDIAG_WQUEUE));
    let mut info = None;
    let mut memory = None;
    let mut at = INET_DIAG_MSG_LEN;
    while at + 4 <= msg.len() {
        let attr_len = u16_at(msg, at) as usize;
        if attr_len < 4 || at + attr_len > msg.len() {
            break;
        }
        let data = &msg[at + 4..at + attr_len];
        match u16_at(msg, at + 2) {
            INET_DIAG_INFO if data.len() >= TCPI_BYTES_RECEIVED + 8 => {
                info = Some((
                    u64_at(data, TCPI_BYTES_ACKED),
                    u64_at(data, TCPI_BYTES_RECEIVED),
                ));
            }
            INET_DIAG_SKMEMINFO if data.len() >= 4 * (SK_MEMINFO_WMEM_QUEUED + 1) => {
                memory = Some((
                    u32_at(data, 4 * SK_MEMINFO_WMEM_QUEUED),
                    u32_at(data, 4 * SK_MEMINFO_SNDBUF),
                ));
            }
            _ => {}
        }
        at += (attr_len + 3) & !3;
    }
    let ((acked, received), (queued, send_buffer)) = info
        .zip(memory)
        .ok_or_else(|| io::Error::other("sock_diag: no tcp_info or memory figures"))?;
    Ok(ServerEnd {
        read: received - u64::from(rqueue),
        written: acked + u64::from(wqueue),
        queued: queued.into(),
        send_buffer: send_buffer.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    /// Checked against a connection whose both ends we hold.
    #[test]
    fn sees_what_the_other_end_read_and_wrote() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let diag = SockDiag::open().unwrap();
        client.write_all(b"hello world").unwrap();
        let mut five = [0u8; 5];
        server.read_exact(&mut five).unwrap();
        server.write_all(b"abc").unwrap();
        let mut three = [0u8; 3];
        client.read_exact(&mut three).unwrap();
        let end = diag.server_end(&client).unwrap();
        assert_eq!((end.read, end.written), (5, 3), "{end:?}");
        assert!(end.send_buffer > 0 && !end.send_buffer_full(), "{end:?}");
    }
}
