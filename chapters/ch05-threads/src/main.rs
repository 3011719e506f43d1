//! Chapter 5: a thread per connection. The obvious fix for chapter 4's stall:
//! the main thread only accepts, and each client gets a thread of its own that
//! runs chapter 4's blocking echo loop. An idle client now blocks only its own
//! thread. The cost: a stack and a kernel task per client, and a context
//! switch for every message.

use std::fs::File;
use std::io;
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

use anyhow::Result;
use common::frame::{self, MAX_MSG};
use common::net::{self, AcceptError, ACCEPT_PAUSE};
use common::signals::{self, Stoppable};
use common::{args::Args, debug, info, warn};
use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow};

// ANCHOR: max_threads
/// How many clients are served at once unless `--max-threads` says otherwise.
///
/// Each thread costs four memory mappings (its stack and guard page, and the
/// alternate signal stack and guard page Rust gives every thread), and Linux
/// allows a process 65,530 mappings (`vm.max_map_count`). At about 16,000
/// threads the next one cannot set up its guard page, and Rust aborts the
/// whole process. So we stop well short of that, and turn the rest away.
const DEFAULT_MAX_THREADS: usize = 10_000;
// ANCHOR_END: max_threads

fn main() -> ExitCode {
    common::args::run(serve)
}

// ANCHOR: main
fn serve() -> Result<()> {
    let mut args = Args::from_env("ch05", "echoes frames, one thread per client");
    let max_threads = args.option_in(
        "max-threads",
        "N",
        "serve at most N clients at once; turn away the others",
        DEFAULT_MAX_THREADS,
        1..,
    );
    let addr = args.finish()?;
    net::raise_fd_limit()?;
    signals::install_stop_handler()?;
    let listener = net::listen_and_announce(addr)?;
    let mut spare_fd = Some(File::open("/dev/null")?);
    let threads = Arc::new(AtomicUsize::new(0));

    while !signals::stop_requested() {
        let stream = match net::accept(&listener) {
            Ok(stream) => stream,
            // EINTR (a signal: the loop condition decides), or a client
            // that gave up while it waited in the backlog.
            Err(AcceptError::Retry(_)) => continue,
            Err(AcceptError::NoFds(_)) => match accept_with_spare_fd(&listener, &mut spare_fd) {
                Some(stream) => stream,
                None => continue,
            },
            // ANCHOR: no_memory
            // Identical in chapters 4 and 5 (book/check.sh checks it).
            // The kernel is short of memory, and the client stays queued:
            // try again in a moment, not at once in a busy loop. A stop
            // request waits out the moment, then the loop's check sees it.
            Err(e @ AcceptError::NoMemory(_)) => {
                warn!("accept: {e}");
                thread::sleep(ACCEPT_PAUSE);
                continue;
            }
            // ANCHOR_END: no_memory
            Err(e) => {
                warn!("accept: {e}");
                continue;
            }
        };
        if threads.load(Ordering::Relaxed) >= max_threads {
            // Closing at once is kinder than a client left waiting, and the
            // clients already here keep their threads.
            debug!("{max_threads} threads busy: turned a client away");
            continue;
        }
        spawn_worker(stream, &threads);
    }
    // Returning from main ends the process, worker threads included, and the
    // kernel closes their sockets. A reply already written is delivered,
    // unless the client had sent more that we never read: then the close is
    // a reset, which discards it (chapter 6 stops gracefully).
    info!("stopping");
    Ok(())
}
// ANCHOR_END: main

// ANCHOR: spawn
/// Holds one unit of the thread count while a worker runs: dropped when
/// the thread ends, however it ends.
struct Busy(Arc<AtomicUsize>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn spawn_worker(stream: TcpStream, threads: &Arc<AtomicUsize>) {
    threads.fetch_add(1, Ordering::Relaxed);
    let busy = Busy(threads.clone());
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
        let _busy = busy;
        if let Err(e) = echo(stream) {
            if !signals::is_stop(&e) {
                // A reset, a bad frame, EOF mid-frame: the client's doing.
                debug!("closing connection: {e}");
            }
        }
    });
    if blocked.is_ok() {
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&previous), None);
    }
    // Out of memory or over a limit on threads (EAGAIN): the closure, with
    // the stream and the count, was dropped, so the client is closed and
    // the count is right.
    if let Err(e) = spawned {
        warn!("cannot start a thread: {e}");
    }
}
// ANCHOR_END: spawn

// ANCHOR: echo
/// Echoes frames until the client closes the connection or breaks the protocol.
/// Chapter 4's loop, unchanged: it only blocks this client's own thread now.
fn echo(stream: TcpStream) -> io::Result<()> {
    // One write per reply: without this, Nagle's algorithm holds back every
    // reply sent while the one before is unacknowledged (see the chapter).
    stream.set_nodelay(true)?;
    // Ctrl-C must be able to interrupt us while we wait for this client.
    let mut stream = Stoppable(stream);
    let mut payload = [0u8; MAX_MSG];
    while let Some(len) = frame::read_frame(&mut stream, &mut payload)? {
        frame::write_frame(&mut stream, &payload[..len])?;
    }
    Ok(())
}
// ANCHOR_END: echo

// ANCHOR: emfile
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
            warn!("out of file descriptors: turned a client away");
            drop(stream);
            *spare_fd = File::open("/dev/null").ok();
            None
        }
        Err(_) => None,
    }
}
// ANCHOR_END: emfile
