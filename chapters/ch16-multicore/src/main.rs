//! Chapter 16: chapter 9's event loop, once per core.
//!
//! One loop keeps one core busy, however many the machine has. Rather than
//! share every connection among the threads of a pool (tokio's work
//! stealing), we run one loop per thread, each with its own epoll instance,
//! connections, buffers and listener: shared-nothing. No request ever
//! crosses from one thread to another, so serving one takes no lock, and a
//! connection's data stays in the caches of the core that serves it. What
//! the loops must still share is the port (`share.rs`: two ways, and a bad
//! third), the stop (`stop.rs`: one signal, read once, obeyed by all) and,
//! for the moment descriptors run out, a lock that each `accept` takes for
//! reading (`DESCRIPTORS`, see `accept_with_spare_fd_alone`). What it
//! measures with, `--pin` and `--stats`, is in `measure.rs`.

#[path = "../../ch08-batching/src/buffer.rs"]
mod buffer; // chapter 8's buffers and pool, the same file
mod graceful;
mod measure;
mod share;
mod stop;

use std::fs::File;
use std::mem;
use std::net::TcpListener;
use std::num::NonZeroUsize;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::ExitCode;
use std::sync::{Arc, PoisonError, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};
use buffer::{Buf, Pool};
use common::args::Args;
use common::frame::{parse_frame, Parse};
use common::log::count;
use common::net::{self, accept_nonblocking, retry_eintr, AcceptError};
use common::signals::stop_signalfd;
use common::slab::{Key, Slab};
use common::time::time_left;
use common::{debug, error, info, warn};
use graceful::{close_gracefully, finish_if_no_more_requests, stop_reading};
use measure::{Measure, Stats};
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::signalfd::SignalFd;
use nix::sys::socket::{send, MsgFlags};
use nix::unistd::read;
use share::Share;
use stop::{Asked, Stop};

// ANCHOR: conn
// Identical in chapters 9 and 16 (book/check.sh checks it).
/// What a connection is doing. It no longer decides what epoll reports
/// (always both directions), only what the connection does with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for requests: reads while the socket is readable.
    Reading,
    /// Sending replies: waits for the socket to be writable, reading nothing.
    Writing,
    /// Every reply is sent and our side shut down; waits for the peer's EOF
    /// before closing (see `close_gracefully`).
    Closing,
    /// Finished, cleanly or not: the loop closes it.
    Done,
}

/// Memory per connection: this struct (136 bytes) plus, while bytes
/// are in them, a read and a write buffer of 16 to 256 KiB each (see
/// `buffer.rs`): at most 512 KiB, whatever the client does, and nothing
/// but the struct while it is quiet.
struct Conn {
    fd: OwnedFd,
    state: State,
    /// Received bytes not yet answered.
    incoming: Buf,
    /// Replies not yet sent.
    outgoing: Buf,
    /// How many more bytes we will read: no limit while serving; once the
    /// requests are over (a bad frame, a stop), what had arrived by then.
    read_limit: Option<usize>,
    /// Edges seen and not yet used up: the socket may have input to read, or
    /// room to write. The kernel will not say so again.
    readable: bool,
    writable: bool,
    /// It used up its turn with input left, and waits in the `unfinished` list.
    unfinished: bool,
}
// ANCHOR_END: conn

// ANCHOR: conn_new
// Identical in chapters 9 and 16 (book/check.sh checks it).
impl Conn {
    fn new(fd: OwnedFd) -> Conn {
        Conn {
            fd,
            state: State::Reading,
            incoming: Buf::default(),
            outgoing: Buf::default(),
            read_limit: None,
            // Registering reports the socket's current state as a first edge
            // (a new socket is writable), so we start out knowing nothing.
            readable: false,
            writable: false,
            unfinished: false,
        }
    }
}
// ANCHOR_END: conn_new

// ANCHOR: slots
/// A loop's connections, in a slab (chapter 12's, in `common`): each has a
/// slot, and a key that is its tag in epoll.
///
/// Chapter 9 used the descriptor number, but descriptor numbers belong to
/// the process: with several loops, one loop's connections are scattered
/// over the numbers of all of them, and a table indexed by number would be
/// as long as all the loops' tables together, in every loop. Slots keep
/// each table as long as its own loop's busiest moment.
///
/// A slot is reused, like a descriptor number, but a key also says which of
/// the slot's connections it names: an event fetched for a connection
/// closed earlier in the same round finds nothing, rather than the
/// connection that took its slot.
type Connections = Slab<Conn>;
// ANCHOR_END: slots

// ANCHOR: register
/// Registers a connection once, for good: both directions, edge-triggered.
fn register(epoll: &Epoll, fd: &OwnedFd, key: Key) -> nix::Result<()> {
    let interest = EpollFlags::EPOLLIN | EpollFlags::EPOLLOUT | EpollFlags::EPOLLET;
    epoll.add(fd, EpollEvent::new(interest, key.to_u64()))
}

// ANCHOR: remember_edge
// Identical in chapters 9, 12 and 16 (book/check.sh checks it).
/// Remembers what an edge said. Errors and hang-ups count for both
/// directions: the next read or send reports them.
fn remember_edge(conn: &mut Conn, flags: EpollFlags) {
    use EpollFlags as E;
    if flags.intersects(E::EPOLLIN | E::EPOLLHUP | E::EPOLLERR) {
        conn.readable = true;
    }
    if flags.intersects(E::EPOLLOUT | E::EPOLLHUP | E::EPOLLERR) {
        conn.writable = true;
    }
}
// ANCHOR_END: remember_edge
// ANCHOR_END: register

/// Tags that no key can take: a key leaves the top byte clear.
const STOP: u64 = u64::MAX;
const LISTENER: u64 = u64::MAX - 1;

/// How long a stop waits for connections to finish, unless `--grace-ms` says.
const DEFAULT_GRACE_MS: u64 = 1000;

fn main() -> ExitCode {
    common::args::run(serve)
}

// ANCHOR: serve
fn serve() -> Result<()> {
    let mut args = Args::from_env(
        "ch16",
        "echoes frames with one edge-triggered epoll loop per core",
    );
    let threads = args.option_in(
        "threads",
        "N",
        "event loops, each on a thread of its own",
        thread::available_parallelism()
            .map_or(1, NonZeroUsize::get)
            .min(MAX_THREADS),
        1..=MAX_THREADS,
    );
    let share: Share = args.option(
        "share",
        "HOW",
        "how the loops share the port: reuseport, exclusive or naive",
        Share::ReusePort,
    );
    let measure = Measure::from_args(&mut args);
    let grace_ms = args.option(
        "grace-ms",
        "MS",
        "on SIGINT/SIGTERM, how long to let connections finish",
        DEFAULT_GRACE_MS,
    );
    let addr = args.finish()?;
    let fd_limit = net::raise_fd_limit()?;
    // First, before any thread exists: this blocks SIGINT and SIGTERM, and
    // every thread started from here on inherits the mask.
    let signals = stop_signalfd().context("signalfd")?;
    let stop = Stop::new().context("eventfd")?;
    let cpus = measure.cpus(threads)?;
    check_descriptors(threads, share, fd_limit)?;
    let mut loops = Vec::new();
    for (id, listener) in share::listeners(addr, share, threads)?
        .into_iter()
        .enumerate()
    {
        loops.push(Loop::new(id, listener, share, cpus[id], &stop, &signals)?);
    }
    net::announce(&loops[0].listener)?;

    let grace = Duration::from_millis(grace_ms);
    // Scoped threads may borrow `stop` and `signals`: the scope joins them
    // all before it returns.
    let finished: Vec<Result<Stats>> = thread::scope(|scope| {
        let threads: Vec<_> = loops
            .into_iter()
            .map(|event_loop| {
                thread::Builder::new()
                    .name(format!("loop {}", event_loop.id))
                    .spawn_scoped(scope, || run_loop(event_loop, &stop, &signals, grace))
            })
            .collect();
        if threads.iter().any(Result::is_err) {
            // The others would serve on without it: stop them before
            // waiting for them.
            stop.fail();
        }
        threads
            .into_iter()
            .enumerate()
            .map(|(id, thread)| match thread {
                Ok(thread) => thread
                    .join()
                    .unwrap_or_else(|_| Err(anyhow!("loop {id} panicked"))),
                Err(e) => Err(anyhow!("cannot start loop {id}'s thread: {e}")),
            })
            .collect()
    });
    let per_loop = finished.into_iter().collect::<Result<Vec<Stats>>>()?;
    measure.report(&per_loop);
    Ok(())
}
// ANCHOR_END: serve

// ANCHOR: loop
/// One event loop and what it owns: its epoll instance, its listener (a
/// share of one, or its own with `SO_REUSEPORT`) and its spare descriptor.
/// The main thread makes them, so that any error at start comes before
/// `listening on`; each runs on a thread of its own.
struct Loop {
    id: usize,
    epoll: Epoll,
    listener: Arc<TcpListener>,
    spare_fd: Option<File>,
    /// The CPU to pin the thread to, with `--pin`.
    cpu: Option<usize>,
}

impl Loop {
    fn new(
        id: usize,
        listener: Arc<TcpListener>,
        share: Share,
        cpu: Option<usize>,
        stop: &Stop,
        signals: &SignalFd,
    ) -> Result<Loop> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).context("epoll_create1")?;
        stop.register(&epoll, signals, STOP).context("epoll_ctl")?;
        share::register(&epoll, &listener, share, LISTENER).context("epoll_ctl")?;
        let spare_fd = Some(File::open("/dev/null").context("open the spare fd")?);
        Ok(Loop {
            id,
            epoll,
            listener,
            spare_fd,
            cpu,
        })
    }
}

/// The most loops `--threads` may ask for: one per core is the point, and
/// more than this is a typing mistake, not a machine.
const MAX_THREADS: usize = 1024;

/// What each loop needs: its epoll instance, its spare descriptor, and
/// room for one client (a loop that cannot hold one serves nobody).
const DESCRIPTORS_PER_LOOP: u64 = 3;

/// Too many loops for the open-file limit would fail with `EMFILE` from
/// whichever call came first, saying nothing of `--threads`: count first,
/// and name the flag and the limit.
fn check_descriptors(loops: usize, share: Share, limit: u64) -> Result<()> {
    let (per_loop, shared) = match share {
        // A listener of its own.
        Share::ReusePort => (DESCRIPTORS_PER_LOOP + 1, 0),
        // One listener for all.
        Share::Exclusive | Share::Naive => (DESCRIPTORS_PER_LOOP, 1),
    };
    let most = limit.saturating_sub(open_descriptors() + shared) / per_loop;
    ensure!(
        loops as u64 <= most,
        "--threads {loops}: must be at most {most} here: each loop needs \
         {per_loop} descriptors, and the open-file limit is {limit} (ulimit -n)"
    );
    Ok(())
}

/// How many descriptors the process has open now.
fn open_descriptors() -> u64 {
    // Less the one that reads the list.
    std::fs::read_dir("/proc/self/fd").map_or(0, |fds| fds.count() as u64 - 1)
}
// ANCHOR_END: loop

// ANCHOR: event_loop
/// Chapter 9's loop, on one loop's thread. Its new lines: the stop comes
/// through `stop.rs`, connections live in a slab, and counting for `--stats`.
fn run_loop(event_loop: Loop, stop: &Stop, signals: &SignalFd, grace: Duration) -> Result<Stats> {
    let mut running = stop.running();
    let Loop {
        id,
        epoll,
        listener,
        mut spare_fd,
        cpu,
    } = event_loop;
    let mut stats = Stats::start(id, cpu);
    let mut events = vec![EpollEvent::empty(); 256];

    let mut listener = Some(listener);
    let mut conns = Connections::default();
    let mut pool = Pool::default();
    // Connections that stopped with input left: no edge will come for it, so
    // we keep our own list, and do not sleep while it has entries.
    let mut unfinished: Vec<Key> = Vec::new();
    let mut next_round: Vec<Key> = Vec::new();
    // The listener's edge is used up but clients may still be waiting: when
    // to call `accept` again without an edge (see `ACCEPT_PAUSE`).
    let mut accept_again: Option<Instant> = None;
    // Set when a stop signal arrives: the moment we give up on stragglers.
    let mut deadline: Option<Instant> = None;
    'event_loop: loop {
        let timeout = if unfinished.is_empty() {
            time_left(deadline.into_iter().chain(accept_again).min())
        } else {
            EpollTimeout::ZERO
        };
        let n = match epoll.wait(&mut events, timeout) {
            Ok(n) => n,
            // With the stop signals blocked this is rare (a debugger, SIGSTOP).
            Err(Errno::EINTR) => continue,
            Err(e) => {
                running.failed = true;
                return Err(e).context(format!("loop {id}: epoll_wait"));
            }
        };
        for event in &events[..n] {
            match event.data() {
                STOP => match stop.check(signals) {
                    Asked::Quit => break 'event_loop,
                    Asked::Finish if deadline.is_none() => {
                        // Stop accepting. Our own listener closes as we
                        // drop it, a shared one when the last loop does.
                        if let Some(listener) = listener.take() {
                            let _ = epoll.delete(&*listener);
                        }
                        deadline = Some(Instant::now() + grace);
                        let open = conns.len();
                        info!(
                            "loop {id}: stopping: letting {} finish",
                            count(open, "connection")
                        );
                        for key in conns.keys() {
                            let Some(conn) = conns.get_mut(key) else {
                                continue;
                            };
                            stop_reading(conn);
                            // An unfinished one gets its turn below.
                            if !conn.unfinished {
                                take_turn(&mut conns, key, &mut pool, &mut unfinished);
                            }
                        }
                    }
                    // A stop already under way, or another loop ending.
                    _ => {}
                },
                LISTENER => {
                    if let Some(listener) = &listener {
                        stats.listener_events += 1;
                        accept_again = accept_new_conns(
                            &epoll,
                            listener,
                            &mut conns,
                            &mut spare_fd,
                            &mut stats,
                        );
                    }
                }
                data => {
                    let key = Key::from_u64(data);
                    let Some(conn) = conns.get_mut(key) else {
                        continue;
                    };
                    remember_edge(conn, event.events());
                    // An unfinished one gets its turn below, after the others.
                    if !conn.unfinished {
                        take_turn(&mut conns, key, &mut pool, &mut unfinished);
                    }
                }
            }
        }
        mem::swap(&mut unfinished, &mut next_round);
        for key in next_round.drain(..) {
            take_turn(&mut conns, key, &mut pool, &mut unfinished);
        }
        let retry_due = accept_again.is_some_and(|at| Instant::now() >= at);
        if let Some(listener) = listener.as_ref().filter(|_| retry_due) {
            accept_again =
                accept_new_conns(&epoll, listener, &mut conns, &mut spare_fd, &mut stats);
        }
        if let Some(deadline) = deadline {
            // Returning drops `conns`, closing every connection still open.
            if conns.is_empty() || Instant::now() >= deadline {
                break;
            }
        }
    }
    let late = conns.len();
    if late > 0 {
        info!(
            "loop {id}: closing {} that did not finish",
            count(late, "connection")
        );
    }
    Ok(stats.finish())
}
// ANCHOR_END: event_loop

// ANCHOR: take_turn
/// Lets a connection do what its readiness allows; then closes it, or queues
/// it for another turn if it stopped before running out of input.
fn take_turn(conns: &mut Connections, key: Key, pool: &mut Pool, unfinished: &mut Vec<Key>) {
    let Some(conn) = conns.get_mut(key) else {
        return;
    };
    let turn = connection_io(conn, pool);
    conn.unfinished = turn == Turn::Unfinished;
    if conn.unfinished {
        unfinished.push(key);
    }
    if conn.state == State::Done {
        // Dropping the Conn closes the socket, which also takes it off the
        // interest list (chapter 7).
        conns.remove(key);
    }
}
// ANCHOR_END: take_turn

// ANCHOR: accept
/// The listener's edge is used up but clients may still be waiting (the
/// kernel is short of memory, or no descriptor is left even to turn them
/// away with): how long before `accept` is tried again. Not at once: such a
/// shortage can last, and trying at once would be a busy loop.
const ACCEPT_PAUSE: Duration = Duration::from_millis(10);

/// Accepts every pending connection. The listener's edge came once for all
/// of them: stopping before EAGAIN would strand the rest in the backlog
/// until yet another client arrives. Returns when to try again without
/// waiting for an edge, if some clients could not be taken yet.
fn accept_new_conns(
    epoll: &Epoll,
    listener: &TcpListener,
    conns: &mut Connections,
    spare_fd: &mut Option<File>,
    stats: &mut Stats,
) -> Option<Instant> {
    let later = || Some(Instant::now() + ACCEPT_PAUSE);
    for attempt in 0.. {
        let fd = match accept_shared(listener) {
            Ok(fd) => fd,
            Err(AcceptError::Empty) => {
                if attempt == 0 {
                    // Woken for a connection another loop took first.
                    stats.empty += 1;
                }
                return None;
            }
            // One client failed: on to the next.
            Err(AcceptError::Retry(_)) => continue,
            Err(AcceptError::NoFds(_)) => match accept_with_spare_fd_alone(listener, spare_fd) {
                Spare::Room(fd) => fd,
                Spare::TurnedAway => continue,
                Spare::NobodyWaiting => return None,
                Spare::Later => return later(),
            },
            // The others wait: the loop tries again soon.
            Err(e @ AcceptError::NoMemory(_)) => {
                warn!("accept: {e}");
                return later();
            }
            Err(e @ AcceptError::Fatal(_)) => {
                error!("accept: {e}");
                return None;
            }
        };
        // We write each reply as soon as it is whole: see chapter 4.
        if let Err(e) = net::set_nodelay(&fd) {
            error!("setsockopt(TCP_NODELAY): {e}");
        }
        let key = conns.insert(Conn::new(fd));
        let conn = conns.get_mut(key).expect("just inserted");
        if let Err(e) = register(epoll, &conn.fd, key) {
            // Dropping it closes the connection we cannot watch.
            error!("epoll_ctl: {e}");
            conns.remove(key);
            continue;
        }
        stats.accepted += 1;
    }
    unreachable!("the loop above returns")
}
// ANCHOR_END: accept

// ANCHOR: emfile_lock
/// The one lock on the accept path. Every loop takes it for reading around
/// `accept`, so loops accept at the same time; a loop accepting with its
/// spare descriptor takes it for writing (see below).
static DESCRIPTORS: RwLock<()> = RwLock::new(());

/// `accept`, but never while a loop is accepting with its spare.
fn accept_shared(listener: &TcpListener) -> Result<OwnedFd, AcceptError> {
    let _table = DESCRIPTORS.read().unwrap_or_else(PoisonError::into_inner);
    accept_nonblocking(listener)
}

/// Chapter 9's spare descriptor, one per loop: out of descriptors, give it
/// up, accept the client into the number it frees, take the spare back,
/// and turn the client away if the spare found no room.
///
/// But the table of descriptors belongs to the process, not to the loop:
/// between our `close` and our `accept`, another loop's `accept` could take
/// the number, and we would be left with neither a client to turn away nor
/// our spare, for as long as the process stays full. Holding `DESCRIPTORS`
/// for writing keeps every other loop out of `accept` for these few calls.
/// (Other loops may still close connections meanwhile: then the spare finds
/// room, and the client is served.)
fn accept_with_spare_fd_alone(listener: &TcpListener, spare_fd: &mut Option<File>) -> Spare {
    let _table = DESCRIPTORS.write().unwrap_or_else(PoisonError::into_inner);
    accept_with_spare_fd(listener, spare_fd)
}
// ANCHOR_END: emfile_lock

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

// ANCHOR: state_machine
// Identical in chapters 9 to 11 and 16 (book/check.sh checks it).
/// How a connection's turn ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Turn {
    /// Nothing more to do until the next edge.
    Idle,
    /// It used up its reads for this turn with input still pending.
    Unfinished,
}

/// Does all the work the connection's readiness allows, then gives back
/// the memory of any buffer it has emptied.
fn connection_io(conn: &mut Conn, pool: &mut Pool) -> Turn {
    let turn = loop {
        let before = conn.state;
        let turn = match conn.state {
            State::Reading => state_reading(conn, pool),
            State::Writing => {
                state_writing(conn);
                Turn::Idle
            }
            State::Closing => close_gracefully(conn, pool),
            State::Done => Turn::Idle,
        };
        if conn.state == State::Reading {
            finish_if_no_more_requests(conn);
        }
        // A new state may have work that an edge announced earlier: input
        // that came while we were writing. Nobody will announce it again.
        if conn.state == before || turn == Turn::Unfinished {
            break turn;
        }
    };
    conn.incoming.release(pool);
    conn.outgoing.release(pool);
    turn
}

/// Reads per connection per turn. Without a limit, a client that sends and
/// reads as fast as we echo never lets a read come back empty, and we
/// would serve it forever. Unlike level-triggered, stopping early is not
/// free: the connection must be given another turn without an edge (see
/// `take_turn`).
const READS_PER_TURN: usize = 16;

fn state_reading(conn: &mut Conn, pool: &mut Pool) -> Turn {
    for _ in 0..READS_PER_TURN {
        if !try_fill_buffer(conn, pool) {
            return Turn::Idle;
        }
    }
    Turn::Unfinished
}

// ANCHOR: state_writing
// Identical in chapters 6 to 12, 16 and 17 (book/check.sh checks it).
fn state_writing(conn: &mut Conn) {
    while try_flush_buffer(conn) {}
}
// ANCHOR_END: state_writing
// ANCHOR_END: state_machine

// ANCHOR: read
// Identical in chapters 9 to 12 and 16 (book/check.sh checks it).
/// Reads once into the read buffer and answers every whole frame now in
/// it. Returns true while there may be more to read.
fn try_fill_buffer(conn: &mut Conn, pool: &mut Pool) -> bool {
    if !conn.readable {
        return false;
    }
    // While `Reading` the buffer holds at most part of one frame (we answer
    // whole ones at once), so it has room: a read of zero bytes means EOF.
    let free = conn.incoming.unfilled(pool);
    let room = conn
        .read_limit
        .map_or(free.len(), |limit| free.len().min(limit));
    if room == 0 {
        return false;
    }
    match retry_eintr(|| read(&conn.fd, &mut free[..room])) {
        Ok(0) => {
            // EOF. Nothing is lost by closing now: we only read in `Reading`,
            // when every frame received so far has been answered and sent.
            if !conn.incoming.is_empty() {
                debug!("fd {}: EOF in the middle of a frame", conn.fd.as_raw_fd());
            }
            conn.state = State::Done;
            return false;
        }
        // Even a short read does not prove the socket empty: TCP stops a read
        // at the urgent mark (MSG_OOB), with more bytes behind it. Only
        // EAGAIN does, so we read until we hear it.
        Ok(n) => {
            conn.incoming.commit(n);
            if let Some(limit) = &mut conn.read_limit {
                *limit -= n;
            }
        }
        Err(Errno::EAGAIN) => {
            conn.readable = false;
            return false;
        }
        Err(e) => {
            debug!("fd {}: read: {e}", conn.fd.as_raw_fd());
            conn.state = State::Done;
            return false;
        }
    }
    // Pipelining: one read may bring many frames, and they are answered
    // together.
    answer_requests(conn, pool);
    conn.state == State::Reading
}
// ANCHOR_END: read

// ANCHOR: parse
// Identical in chapters 8 to 10, 12 and 16 (book/check.sh checks it).
// ANCHOR: whole_frames
// Identical in chapters 8 to 12 and 16 (book/check.sh checks it).
/// The bytes of the whole frames at the front of the read buffer. A frame
/// that announces too much ends the requests: the frames before it are
/// answered; it, and whatever follows it, are dropped.
fn whole_frames(conn: &mut Conn) -> usize {
    let mut whole = 0;
    loop {
        match parse_frame(&conn.incoming.data()[whole..]) {
            Parse::Frame { len } => whole += len,
            Parse::Incomplete => return whole,
            Parse::TooLong { announced } => {
                let fd = conn.fd.as_raw_fd();
                debug!("fd {fd}: frame of {announced} bytes is too long: closing");
                conn.incoming.truncate(whole);
                conn.read_limit = Some(0);
                return whole;
            }
        }
    }
}
// ANCHOR_END: whole_frames

/// Answers every whole frame in the read buffer, all with one `send`. The
/// reply to a frame is the frame itself, so the replies go out straight
/// from the read buffer; only what the socket does not take is copied to
/// the write buffer, to wait there for room (`Writing`).
fn answer_requests(conn: &mut Conn, pool: &mut Pool) {
    let whole = whole_frames(conn);
    if whole == 0 {
        return;
    }
    let replies = &conn.incoming.data()[..whole];
    // MSG_NOSIGNAL: see `try_flush_buffer`.
    let sent = match retry_eintr(|| send(conn.fd.as_raw_fd(), replies, MsgFlags::MSG_NOSIGNAL)) {
        Ok(n) => n,
        Err(Errno::EAGAIN) => 0,
        Err(e) => {
            debug!("fd {}: send: {e}", conn.fd.as_raw_fd());
            conn.state = State::Done;
            return;
        }
    };
    if sent < whole {
        // It fits: the write buffer may hold as much as the read buffer.
        let copied = conn
            .outgoing
            .append(&conn.incoming.data()[sent..whole], pool);
        debug_assert!(copied);
        conn.state = State::Writing;
    }
    conn.incoming.consume(whole);
}
// ANCHOR_END: parse

// ANCHOR: write
// Identical in chapters 9, 10, 12 and 16 (book/check.sh checks it).
/// Sends the pending replies, all in one call if the socket takes them.
/// Returns true to try again after a short write; on EAGAIN it stays in
/// `Writing` until the socket is writable again.
fn try_flush_buffer(conn: &mut Conn) -> bool {
    if !conn.writable {
        return false;
    }
    let unsent = conn.outgoing.data();
    // MSG_NOSIGNAL: a peer that has gone away makes this fail with EPIPE
    // instead of raising SIGPIPE. Rust ignores SIGPIPE before `main`
    // anyway; the flag states the intent where it matters.
    match retry_eintr(|| send(conn.fd.as_raw_fd(), unsent, MsgFlags::MSG_NOSIGNAL)) {
        Ok(n) => conn.outgoing.consume(n),
        Err(Errno::EAGAIN) => {
            conn.writable = false;
            return false;
        }
        Err(e) => {
            // EPIPE or ECONNRESET: the peer is gone, which is its right.
            debug!("fd {}: send: {e}", conn.fd.as_raw_fd());
            conn.state = State::Done;
            return false;
        }
    }
    if !conn.outgoing.is_empty() {
        // A short write: the socket's send buffer filled up. The next
        // attempt sends more or reports EAGAIN.
        return true;
    }
    conn.state = State::Reading;
    false
}
// ANCHOR_END: write

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conn_is_small_without_its_buffers() {
        // The memory per connection stated at `Conn` counts on this.
        assert!(std::mem::size_of::<Option<Conn>>() <= 136);
    }
}
