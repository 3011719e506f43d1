//! The client for chapter 3: connect, send one message, print the reply.
//!
//! Usage: `ch03-client [--addr HOST:PORT] [MESSAGE]` (default message: "hello").

use std::io;
use std::mem;
use std::net::{SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::{bail, Context, Result};
use common::args::Args;

fn main() -> std::process::ExitCode {
    common::args::run(talk)
}

fn talk() -> Result<()> {
    let mut args = Args::from_env("ch03-client", "sends one message to ch03, prints the reply")
        .not_a_server("the server to talk to");
    let mut operands = args.operands("MESSAGE", "what to send (default: hello)");
    let addr = args.finish()?;
    if operands.len() > 1 {
        bail!("one MESSAGE only (quote it if it has spaces)");
    }
    let message = operands.pop().unwrap_or_else(|| "hello".to_string());
    let SocketAddr::V4(addr) = addr else {
        bail!("ch03-client speaks IPv4 only");
    };
    let conn = connect(addr).with_context(|| format!("connect to {addr}"))?;

    // SAFETY: the pointer and length describe `message`, alive for the call.
    let sent = unsafe {
        libc::send(
            conn.as_raw_fd(),
            message.as_ptr().cast(),
            message.len(),
            libc::MSG_NOSIGNAL,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error()).context("send");
    }
    let mut buf = [0u8; 64];
    // SAFETY: the pointer and length describe `buf`, which outlives the call.
    let n = unsafe { libc::read(conn.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error()).context("read");
    }
    println!(
        "server says: {}",
        String::from_utf8_lossy(&buf[..n as usize])
    );
    Ok(())
}

// ANCHOR: connect
/// socket(2) then connect(2): the client side of the handshake.
fn connect(addr: SocketAddrV4) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes plain integers; we check the result.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that we now own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: the pointer and length describe `sin`, alive for the whole call.
    let rc = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&sin as *const libc::sockaddr_in).cast(),
            mem::size_of_val(&sin) as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}
// ANCHOR_END: connect
