//! Chapter 5: a thread per connection. The obvious fix for chapter 4's stall:
//! the main thread only accepts, and each client gets a thread of its own that
//! runs chapter 4's blocking echo loop. An idle client now blocks only its own
//! thread. The cost: a stack and a kernel task per client, and a context
//! switch for every message.

use std::fs::File;
use std::io::{self, ErrorKind};
use std::net::{TcpListener, TcpStream};
use std::thread;

use anyhow::Result;
use common::frame::{self, MAX_MSG};
use common::{args::Args, net, signals};
use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow};

// ANCHOR: main
fn main() -> Result<()> {
    let addr = Args::from_env()?.finish()?;
    signals::install_stop_handler()?;
    let listener = net::listen_and_announce(addr)?;
    let mut spare_fd = Some(File::open("/dev/null")?);

    while !signals::stop_requested() {
        match net::accept(&listener) {
            Ok(stream) => spawn_worker(stream),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if is_out_of_fds(&e) => {
                if let Some(stream) = accept_with_spare_fd(&listener, &mut spare_fd) {
                    spawn_worker(stream);
                }
            }
            Err(e) => eprintln!("accept: {e}"),
        }
    }
    // Returning from main ends the process, worker threads included: the
    // kernel closes their sockets. Replies already written are delivered;
    // a client in the middle of a frame simply sees the connection close.
    eprintln!("stopping");
    Ok(())
}
// ANCHOR_END: main

// ANCHOR: spawn
fn spawn_worker(stream: TcpStream) {
    // A new thread inherits the signal mask of its creator. Block SIGINT and
    // SIGTERM while spawning, so workers never take them: the kernel then
    // delivers them to the main thread, whose accept() fails with EINTR.
    let mut previous = SigSet::empty();
    let stop_signals = SigSet::from_iter(signals::STOP_SIGNALS);
    let blocked = pthread_sigmask(
        SigmaskHow::SIG_BLOCK,
        Some(&stop_signals),
        Some(&mut previous),
    );
    let spawned = thread::Builder::new().spawn(move || {
        if let Err(e) = serve(stream) {
            eprintln!("closing connection: {e}");
        }
    });
    if blocked.is_ok() {
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&previous), None);
    }
    // Out of memory or over the thread limit: the stream was dropped (closed)
    // with the closure, and the server carries on.
    if let Err(e) = spawned {
        eprintln!("cannot start a thread: {e}");
    }
}
// ANCHOR_END: spawn

// ANCHOR: serve
/// Chapter 4's loop, unchanged: it only blocks this client's own thread now.
fn serve(mut stream: TcpStream) -> io::Result<()> {
    let mut payload = [0u8; MAX_MSG];
    while let Some(len) = frame::read_frame(&mut stream, &mut payload)? {
        frame::write_frame(&mut stream, &payload[..len])?;
    }
    Ok(())
}
// ANCHOR_END: serve

// ANCHOR: emfile
fn is_out_of_fds(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// accept(2) reserves a descriptor before it takes a connection, so at the
/// descriptor limit it fails at once, every time: the loop would spin at full
/// CPU while clients wait in the backlog. So we keep one descriptor in
/// reserve: free it, accept with it, and take the reserve back. If that leaves
/// us at the limit, the client is turned away with a prompt close, which is
/// kinder than leaving it hanging in the backlog; if threads have meanwhile
/// closed connections, there is room and it is served.
fn accept_with_spare_fd(listener: &TcpListener, spare_fd: &mut Option<File>) -> Option<TcpStream> {
    drop(spare_fd.take());
    let accepted = net::accept(listener);
    *spare_fd = File::open("/dev/null").ok();
    match accepted {
        Ok(stream) if spare_fd.is_some() => Some(stream),
        Ok(stream) => {
            eprintln!("out of file descriptors: turning a client away");
            drop(stream);
            *spare_fd = File::open("/dev/null").ok();
            None
        }
        Err(_) => None,
    }
}
// ANCHOR_END: emfile
