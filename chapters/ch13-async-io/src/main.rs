//! Chapter 13: the echo server in async/await: the reactor's readiness as
//! futures, and the connection as an `async fn`.
//!
//! Chapter 12 wrote each connection's future by hand: chapter 9's state
//! machine, a `State` enum and flags for what the edges said, behind a
//! `poll`. Here the reactor keeps the readiness itself, so that any future
//! can wait for it: `listener.accept().await`, `stream.read(..).await`.
//! A connection is an `async fn`, and the compiler writes the state
//! machine. That is how the book began, with tokio's `accept().await`.

#[path = "../../ch08-batching/src/buffer.rs"]
mod buffer; // chapter 8's buffers and pool, the same file
mod conn;
mod executor;
mod net;
mod reactor;
#[path = "../../ch12-executor/src/stop.rs"]
mod stop; // chapter 12's stop, the same file

use std::cell::RefCell;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use buffer::Pool;
use common::args::Args;
use common::log::count;
use common::net::{accept_nonblocking, AcceptError};
use common::signals::stop_signalfd;
use common::{error, info, warn};
use conn::echo;
use executor::{pause_until, race, spawn, Runtime};
use net::{TcpListener, TcpStream};
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;
use reactor::{AsyncFd, Interest};
use stop::Stop;

/// How long a stop waits for connections to finish, unless `--grace-ms` says.
const DEFAULT_GRACE_MS: u64 = 1000;

fn main() -> ExitCode {
    common::args::run(serve)
}

fn serve() -> Result<()> {
    let mut args = Args::from_env(
        "ch13",
        "echoes frames from async tasks, on an executor and a reactor written from std::task up",
    );
    let grace_ms = args.option(
        "grace-ms",
        "MS",
        "on SIGINT/SIGTERM, how long to let connections finish",
        DEFAULT_GRACE_MS,
    );
    let addr = args.finish()?;
    common::net::raise_fd_limit()?;
    // First, before any thread exists: this blocks SIGINT and SIGTERM.
    let signals = stop_signalfd().context("signalfd")?;
    let listener = common::net::listen(addr)?;
    // A listener that is not ready must make accept fail with EAGAIN, not wait.
    common::net::set_nonblocking(&listener)?;
    let spare_fd = File::open("/dev/null").context("open the spare fd")?;
    let shared = Rc::new(Shared {
        pool: RefCell::default(),
        stop: Stop::default(),
    });
    let runtime = Runtime::new().context("epoll_create1")?;
    let grace = Duration::from_millis(grace_ms);
    runtime.block_on(run(listener, signals, spare_fd, shared, grace))
}

/// What the connections share.
struct Shared {
    pool: RefCell<Pool>,
    stop: Stop,
}

// ANCHOR: run
/// The server's main task: accepts connections until a stop signal, then
/// lets them finish, for at most `grace`.
async fn run(
    listener: std::net::TcpListener,
    signals: SignalFd,
    spare_fd: File,
    shared: Rc<Shared>,
    grace: Duration,
) -> Result<()> {
    let listener = TcpListener::new(listener).context("register the listener")?;
    let signals = StopSignal(AsyncFd::new(signals).context("register the signalfd")?);
    common::net::announce(listener.get_ref())?;
    // The accept loop never ends: the signal does, and the loop is dropped.
    race(signals.recv(), accept(&listener, spare_fd, &shared)).await;
    // Stop accepting: closing the listener refuses new clients at once.
    drop(listener);
    let open = count(shared.stop.open(), "connection");
    info!("stopping: letting {open} finish");
    shared.stop.request();
    // Until they have all finished, a second signal comes, or time is up.
    let finished = race(shared.stop.finished(), signals.recv());
    race(finished, pause_until(Instant::now() + grace)).await;
    let late = shared.stop.open();
    if late > 0 {
        info!("closing {} that did not finish", count(late, "connection"));
    }
    // Returning ends `block_on`, which drops the tasks still running:
    // their sockets close.
    Ok(())
}
// ANCHOR_END: run

// ANCHOR: stop_signal
// Identical in chapters 13 and 14 (book/check.sh checks it).
/// SIGINT and SIGTERM, as a future (see `common::signals`).
struct StopSignal(AsyncFd<SignalFd>);

impl StopSignal {
    async fn recv(&self) {
        loop {
            let event = self.0.ready(Interest::Read).await;
            match self.0.get_ref().read_signal() {
                Ok(Some(info)) => {
                    let signal = Signal::try_from(info.ssi_signo as i32);
                    info!("{}: stopping", signal.map_or("signal", Signal::as_str));
                    return;
                }
                // Nothing pending after all: wait for the next edge.
                Ok(None) => self.0.clear_ready(event),
                Err(e) => {
                    error!("signalfd: {e}: stopping");
                    return;
                }
            }
        }
    }
}
// ANCHOR_END: stop_signal

// ANCHOR: accept
/// Accepts connections, each served by a task of its own, for as long as
/// it is polled.
async fn accept(listener: &TcpListener, spare_fd: File, shared: &Rc<Shared>) {
    let mut spare_fd = Some(spare_fd);
    loop {
        let stream = match listener.accept().await {
            Ok(stream) => stream,
            // One client failed: on to the next. (`accept` waits on EAGAIN
            // rather than return `Empty`.)
            Err(AcceptError::Retry(_) | AcceptError::Empty) => continue,
            Err(AcceptError::NoFds(_)) => match accept_with_spare_fd(listener, &mut spare_fd) {
                Spare::Room(fd) => match TcpStream::new(fd) {
                    Ok(stream) => stream,
                    // Dropping `fd` closed the connection we cannot watch.
                    Err(e) => {
                        error!("epoll_ctl: {e}");
                        continue;
                    }
                },
                // The next `accept` takes the next client, or meets EAGAIN
                // and waits for an edge.
                Spare::TurnedAway => continue,
                // Still out of descriptors, `accept` would fail with EMFILE
                // again at once: the kernel wants a free number before it
                // looks at the backlog. Nobody is waiting, so wait for an edge.
                Spare::NobodyWaiting => {
                    listener.forget_readiness().await;
                    continue;
                }
                Spare::Later => {
                    pause_until(Instant::now() + ACCEPT_PAUSE).await;
                    continue;
                }
            },
            // The others wait, while the other tasks go on.
            Err(e @ AcceptError::NoMemory(_)) => {
                warn!("accept: {e}");
                pause_until(Instant::now() + ACCEPT_PAUSE).await;
                continue;
            }
            Err(e @ AcceptError::Fatal(_)) => {
                error!("accept: {e}");
                continue;
            }
        };
        // We write each reply as soon as it is whole: see chapter 4.
        if let Err(e) = common::net::set_nodelay(&stream) {
            error!("setsockopt(TCP_NODELAY): {e}");
        }
        // The handle is dropped: the task is detached, and runs on.
        spawn(echo(stream, shared.clone()));
    }
}

/// Clients may still be waiting, but the kernel is short of memory, or no
/// descriptor is left even to turn them away with: how long before
/// `accept` is tried again. Not at once: such a shortage can last, and
/// trying at once would be a busy loop (`yield_now` is one too: with
/// nothing else to do, the executor polls the task again at once).
const ACCEPT_PAUSE: Duration = Duration::from_millis(10);
// ANCHOR_END: accept

// ANCHOR: emfile
// Identical in chapters 9 to 14, 16 and 17 (book/check.sh checks it).
/// What came of accepting with the spare descriptor.
enum Spare {
    /// A client, and room to serve it: the spare came back.
    Room(OwnedFd),
    /// A client was turned away, or had given up: on to the next.
    TurnedAway,
    /// Nobody was waiting after all.
    NobodyWaiting,
    /// Not even one descriptor to do it with: try again later.
    Later,
}

/// Out of file descriptors, `accept` fails and leaves the connection in the
/// backlog. Level-triggered, the loop would spin; edge-triggered, we would
/// never hear of that client again. We keep one descriptor in reserve for
/// this moment: give it up, accept the client into the number it frees,
/// and take the spare back. If the spare finds no room, the client is
/// turned away, closed at once (it sees a clean close instead of waiting
/// forever); if it does (a descriptor was freed meanwhile), the client is
/// served, as in chapter 5.
fn accept_with_spare_fd(listener: &TcpListener, spare_fd: &mut Option<File>) -> Spare {
    // A spare we could not take back last time (another process took the
    // number: the system-wide limit, ENFILE) may be free again.
    let Some(spare) = spare_fd.take().or_else(|| File::open("/dev/null").ok()) else {
        return Spare::Later;
    };
    drop(spare);
    let accepted = accept_nonblocking(listener);
    *spare_fd = File::open("/dev/null").ok();
    match accepted {
        Ok(fd) if spare_fd.is_some() => Spare::Room(fd),
        Ok(fd) => {
            drop(fd);
            warn!("out of file descriptors: turned a connection away");
            *spare_fd = File::open("/dev/null").ok();
            Spare::TurnedAway
        }
        Err(AcceptError::Empty) => Spare::NobodyWaiting,
        Err(AcceptError::Retry(_)) => Spare::TurnedAway,
        Err(_) => Spare::Later,
    }
}
// ANCHOR_END: emfile
