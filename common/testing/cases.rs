//! Cases that several chapters' own tests share, each chapter including this
//! file by path (`tests/shared.rs`): what a server does when `accept` fails
//! the way a loaded machine makes it fail, and what a stop that ends early
//! says. The failures come from `accept_faults.c`, preloaded into the
//! server; every case that uses it checks that it ran.
//!
//! Not part of `common`'s library: only the tests compile it.

#![allow(dead_code)] // each chapter runs the cases that apply to it

use std::io::{ErrorKind, Read, Write};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use conformance::harness::{frame, Client, Options, Server};

/// One `#[test]` per case named, each run against the binary `$bin`
/// started with the arguments `$args` (an expression, evaluated per test).
#[allow(unused_macros)] // a test file may want only the helpers
macro_rules! cases {
    ($bin:expr, $args:expr; $($case:ident),+ $(,)?) => {
        $(
            #[test]
            fn $case() {
                shared::$case($bin, &$args);
            }
        )+
    };
}
#[allow(unused_imports)]
pub(crate) use cases;

/// How long a client waits for its reply, or for the server to close.
const PATIENCE: Duration = Duration::from_secs(3);

// ANCHOR: aborted
/// Out of descriptors, the server turns a waiting client away with its
/// spare descriptor. If that `accept` fails because the client gave up
/// meanwhile (ECONNABORTED), the next client in the backlog must still be
/// dealt with: under edge-triggering, no new edge comes for it.
///
/// The clients come one at a time, each answered or closed before the next
/// connects: a client the server gave up on waits for good.
pub fn an_aborted_client_does_not_stop_the_turning_away(bin: &str, args: &[&str]) {
    let (server, faults) = start_with_fault(bin, args, "abort-after-emfile");
    let room = 8;
    limit_descriptors(&server, room);
    let mut served = Vec::new();
    for k in 0..2 * room {
        let mut client = server.connect();
        match echo_or_close(&mut client) {
            Reply::Echoed => served.push(client),
            Reply::Closed => {}
            Reply::Nothing(e) => panic!(
                "client {k} was neither served nor closed within {PATIENCE:?} ({e}); \
                 the server ran out of descriptors after {} clients, and gave up on the \
                 backlog when the accept that should have turned a client away failed \
                 with ECONNABORTED",
                served.len()
            ),
        }
    }
    assert_eq!(served.len(), room, "every free descriptor serves a client");
    faults.assert_made("ECONNABORTED", 1..=1);
}
// ANCHOR_END: aborted

// ANCHOR: nobufs
/// The kernel is short of memory for 300 ms: every `accept` fails with
/// ENOBUFS. The client must be served once it is over, and the server must
/// wait a little between tries rather than retry at once, in a busy loop
/// that logs every turn. (At 10 ms between tries, a loop tries about 30
/// times; a busy loop, thousands.)
pub fn accept_pauses_while_the_kernel_is_short_of_memory(bin: &str, args: &[&str]) {
    let (server, faults) = start_with_fault(bin, args, "nobufs:300");
    let mut client = server.connect();
    client.stream.set_read_timeout(Some(PATIENCE)).unwrap();
    client.assert_echo(b"after the shortage");
    let failed = faults.count();
    assert!(
        failed <= 1000,
        "{failed} accepts failed in 300 ms of ENOBUFS: the server retried at once, a busy loop"
    );
    faults.assert_made("ENOBUFS", 1..=1000);
}
// ANCHOR_END: nobufs

// ANCHOR: spare
/// `accept` fails with EMFILE, but by the time the server accepts with its
/// spare descriptor, there is room again (another thread closed a
/// connection, or another process freed its share of the system's table):
/// the client is served, not turned away. Chapter 5's policy, everywhere.
pub fn a_client_accepted_with_the_spare_is_served_if_there_is_room(bin: &str, args: &[&str]) {
    let (server, faults) = start_with_fault(bin, args, "emfile-once");
    let mut client = server.connect();
    client.stream.set_read_timeout(Some(PATIENCE)).unwrap();
    if let Err(e) = client.try_echo(b"room after all?") {
        panic!(
            "accept said EMFILE, then the spare descriptor accepted the client with room \
             to spare, and the server turned it away: {e}"
        );
    }
    faults.assert_made("EMFILE", 1..=1);
}
// ANCHOR_END: spare

// ANCHOR: stop_log
/// A stop that ends before every connection is finished says so in the
/// same words whichever way it ends: a second signal, or the end of the
/// grace period. A client that sends and never reads keeps its connection
/// from finishing.
pub fn a_stop_that_ends_early_says_how_many_did_not_finish(bin: &str, args: &[&str]) {
    for (grace_ms, second_signal) in [("20000", true), ("300", false)] {
        let args = [args, &["--grace-ms", grace_ms]].concat();
        let mut server = start(bin, &args, &[]);
        let _stuck = stuck_client(&server);
        server.signal(libc::SIGINT);
        if second_signal {
            // Two signals pending at once are one: the first must be read.
            server.eventually(PATIENCE, "the stop to begin", |s| {
                s.stderr().contains("stopping")
            });
            server.signal(libc::SIGINT);
        }
        let status = server.wait_exit(Duration::from_secs(10));
        assert!(status.success(), "{status}");
        let said = "closing 1 connection that did not finish";
        let how = if second_signal {
            "asked twice"
        } else {
            "grace period over"
        };
        server.eventually(PATIENCE, &format!("{how}: the log says {said:?}"), |s| {
            s.stderr().contains(said)
        });
        // Not "grace period over" when the grace period was cut short.
        assert!(!server.stderr().contains("grace period over"), "{how}");
    }
}
// ANCHOR_END: stop_log

fn start(bin: &str, args: &[&str], env: &[(&str, &str)]) -> Server {
    Server::start_with(
        bin,
        Options {
            args,
            env,
            ..Options::default()
        },
    )
}

/// Starts the server with accept_faults.c preloaded, making `fault`.
fn start_with_fault(bin: &str, args: &[&str], fault: &str) -> (Server, Faults) {
    let faults = Faults::new();
    let shim = accept_faults();
    let env = [
        ("LD_PRELOAD", shim.to_str().unwrap()),
        ("ECHO_ACCEPT_FAULT", fault),
        ("ECHO_ACCEPT_FAULT_COUNT", faults.0.to_str().unwrap()),
    ];
    (start(bin, args, &env), faults)
}

/// The file in which the shim counts the failures it makes.
struct Faults(PathBuf);

impl Faults {
    fn new() -> Faults {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let name = format!("echo-accept-faults-{}-{n}.count", std::process::id());
        let path = std::env::temp_dir().join(name);
        std::fs::write(&path, 0u64.to_ne_bytes()).unwrap();
        Faults(path)
    }

    fn count(&self) -> u64 {
        let bytes = std::fs::read(&self.0).unwrap();
        u64::from_ne_bytes(bytes[..8].try_into().unwrap())
    }

    /// Fails unless the shim failed between `expected` accepts with
    /// `errno`: a case whose fault never came tested nothing.
    fn assert_made(&self, errno: &str, expected: std::ops::RangeInclusive<u64>) {
        let n = self.count();
        assert!(
            expected.contains(&n),
            "the shim failed {n} accepts with {errno}, not {expected:?}"
        );
    }
}

impl Drop for Faults {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Lowers the server's limit on open files so that, measured now, at rest,
/// exactly `room` descriptors are left: so many clients and no more,
/// whatever the chapter holds (a loop per core holds three descriptors
/// each) and whatever it inherited. The limit caps descriptor *numbers*,
/// and new ones take the lowest free: the room is the free numbers below it.
pub fn limit_descriptors(server: &Server, room: usize) {
    let open: std::collections::BTreeSet<usize> =
        std::fs::read_dir(format!("/proc/{}/fd", server.pid()))
            .unwrap()
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
            .collect();
    let mut limit = 0;
    let mut free = 0;
    while free < room {
        if !open.contains(&limit) {
            free += 1;
        }
        limit += 1;
    }
    let limit = limit as libc::rlim_t;
    let rlimit = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: prlimit reads the struct we pass for the duration of the
    // call, and writes nothing (the last argument is null).
    let rc = unsafe {
        libc::prlimit(
            server.pid(),
            libc::RLIMIT_NOFILE,
            &rlimit,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

enum Reply {
    Echoed,
    Closed,
    Nothing(std::io::Error),
}

/// Sends a frame: the client is served (its echo comes back), turned away
/// (the server closes), or neither within [`PATIENCE`].
fn echo_or_close(client: &mut Client) -> Reply {
    client.stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let request = frame(b"anyone there?");
    // A client turned away may see its write fail: it reads why below.
    let _ = client.stream.write_all(&request);
    let mut reply = vec![0; request.len()];
    match client.stream.read_exact(&mut reply) {
        Ok(()) => {
            assert_eq!(reply, request);
            Reply::Echoed
        }
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset
            ) =>
        {
            Reply::Closed
        }
        Err(e) => Reply::Nothing(e),
    }
}

/// A client that fills both directions and then reads nothing: no stop
/// can finish it before the grace period ends.
pub fn stuck_client(server: &Server) -> Client {
    let mut client = server.connect();
    client.stream.set_nonblocking(true).unwrap();
    let chunk: Vec<u8> = (0..64).flat_map(|_| frame(&[7; 4000])).collect();
    loop {
        match client.stream.write(&chunk) {
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return client,
            Err(e) => panic!("flooding: {e}"),
        }
    }
}

/// Compiles accept_faults.c into a shared object, once per test binary.
fn accept_faults() -> PathBuf {
    static SHIM: OnceLock<PathBuf> = OnceLock::new();
    SHIM.get_or_init(|| {
        // The including test belongs to a crate in chapters/chNN-name/.
        let source =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../common/testing/accept_faults.c");
        let out = std::env::temp_dir().join(format!(
            "echo-accept-faults-{}-{}.so",
            env!("CARGO_PKG_NAME"),
            std::process::id()
        ));
        let status = Command::new("cc")
            .args(["-shared", "-fPIC", "-O1", "-o"])
            .arg(&out)
            .arg(&source)
            .arg("-ldl")
            .status()
            .expect("cc (a C compiler) is needed to build the accept(2) fault shim");
        assert!(status.success(), "cc failed to build {}", source.display());
        out
    })
    .clone()
}
