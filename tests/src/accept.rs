//! `accept` failing the way a real machine makes it fail: a network error
//! of the new connection, a client that gives up while the server turns it
//! away, a kernel short of memory for a while, a shortage of descriptors
//! that is over by the time the server looks again.
//!
//! The failures come from a small C library preloaded into the server
//! (`LD_PRELOAD`, tests/fixtures/accept_faults.c), which counts the calls
//! it saw and the failures it made. A server that never calls `accept` or
//! `accept4` through the C library (it accepts through io_uring, or is
//! linked statically) gets no failure: then the case did not test anything,
//! and says it does not apply instead of passing.

use std::io::{ErrorKind, Read, Write};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use crate::harness::{frame, not_applicable, Client, Options, Server, Target};

/// How long a client waits for its reply, or for the server to close.
const PATIENCE: Duration = Duration::from_secs(3);

// ANCHOR: accept_errors
/// Every other `accept` fails, before taking a connection, with a network
/// error (EPROTO) or a shortage of memory (ENOBUFS). Every client must
/// still be served: accept(2) says to retry, and an edge-triggered server
/// that gives up instead leaves the client in the backlog for good.
pub fn accept_errors_do_not_strand_clients(target: &Target) {
    for (errno, name) in [(libc::EPROTO, "EPROTO"), (libc::ENOBUFS, "ENOBUFS")] {
        let (mut server, shim) = start_with_fault(target, &format!("every-other:{errno}"));
        for i in 0..4 {
            let mut client = client_with_patience(&server);
            let echoed = client.try_echo(b"anyone?");
            shim.must_have_run();
            if let Err(e) = echoed {
                panic!(
                    "when every other accept failed with {name}, client {i} of 4: {e}; \
                     the server gave up accepting"
                );
            }
        }
        server.assert_running();
        shim.must_have_failed(name, 1..=u64::MAX);
    }
}
// ANCHOR_END: accept_errors

// ANCHOR: aborted
/// Out of descriptors, a server turns a waiting client away (with a spare
/// descriptor: accept it, close it). If that `accept` fails because the
/// client gave up meanwhile (ECONNABORTED), the next client in the backlog
/// must still be dealt with: under edge-triggering, no new edge comes for
/// it.
///
/// The clients come one at a time, each answered or closed before the next
/// connects: a client the server gave up on waits for good.
pub fn an_aborted_client_does_not_stop_the_turning_away(target: &Target) {
    let (server, shim) = start_with_fault(target, "abort-after-emfile");
    let room = 8;
    server.limit_descriptors(room);
    let mut served = Vec::new();
    for k in 0..2 * room {
        let mut client = server.connect();
        match echo_or_close(&mut client) {
            Ok(Reply::Echoed) => served.push(client),
            Ok(Reply::Closed) => {}
            Err(e) => panic!(
                "client {k} {e}: out of descriptors after serving {} clients, the \
                 server left it in the backlog once an accept had failed with \
                 ECONNABORTED (as if a client had given up); a server must go on \
                 accepting, to turn the next client away or serve it",
                served.len()
            ),
        }
        shim.must_have_run();
    }
    if shim.faults() == 0 {
        not_applicable(format!(
            "with room for {room} more descriptors, the server served {} of {} clients \
             without ever running out of descriptors in accept, so no accept could fail \
             as it turned a client away",
            served.len(),
            2 * room
        ));
    }
    shim.must_have_failed("ECONNABORTED", 1..=1);
}
// ANCHOR_END: aborted

// ANCHOR: nobufs
/// The kernel is short of memory for 300 ms: every `accept` fails with
/// ENOBUFS. The client must be served once it is over, and the server must
/// wait a little between tries rather than retry at once, in a busy loop
/// that logs every turn. (At 10 ms between tries, a loop tries about 30
/// times; a busy loop, thousands.)
pub fn accept_pauses_while_the_kernel_is_short_of_memory(target: &Target) {
    let (server, shim) = start_with_fault(target, "nobufs:300");
    let mut client = client_with_patience(&server);
    let echoed = client.try_echo(b"after the shortage");
    shim.must_have_run();
    if let Err(e) = echoed {
        panic!(
            "every accept failed with ENOBUFS for 300 ms; once that was over, the \
             client waiting meanwhile: {e}"
        );
    }
    let failed = shim.faults();
    assert!(
        failed <= 1000,
        "{failed} accepts failed in 300 ms of ENOBUFS: the server retried at once, a busy loop"
    );
    shim.must_have_failed("ENOBUFS", 1..=1000);
}
// ANCHOR_END: nobufs

// ANCHOR: spare
/// `accept` fails with EMFILE, but by the time the server accepts with its
/// spare descriptor there is room again (another thread closed a
/// connection, or another process freed its share of the system's table):
/// the client is served, not turned away. Chapter 5's policy, everywhere.
pub fn a_client_accepted_with_the_spare_is_served_if_there_is_room(target: &Target) {
    let (server, shim) = start_with_fault(target, "emfile-once");
    let mut client = client_with_patience(&server);
    let echoed = client.try_echo(b"room after all?");
    shim.must_have_run();
    if let Err(e) = echoed {
        panic!(
            "accept failed with EMFILE once, though descriptors were free; then: {e}. \
             A client accepted with the spare descriptor must be served when that \
             leaves room, not turned away"
        );
    }
    shim.must_have_failed("EMFILE", 1..=1);
}
// ANCHOR_END: spare

fn client_with_patience(server: &Server) -> Client {
    let client = server.connect();
    client.stream.set_read_timeout(Some(PATIENCE)).unwrap();
    client
}

enum Reply {
    Echoed,
    Closed,
}

/// Sends a frame: the client is served (its echo comes back) or turned
/// away (the server closes); otherwise, what happened instead.
fn echo_or_close(client: &mut Client) -> Result<Reply, String> {
    client.stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let request = frame(b"anyone there?");
    // A client turned away may see its write fail: it reads why below.
    let _ = client.stream.write_all(&request);
    let mut reply = vec![0; request.len()];
    match client.stream.read_exact(&mut reply) {
        Ok(()) if reply == request => Ok(Reply::Echoed),
        Ok(()) => Err("got a reply that is not its frame".into()),
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset
            ) =>
        {
            Ok(Reply::Closed)
        }
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Err(format!(
            "was neither served nor closed within {} s",
            PATIENCE.as_secs()
        )),
        Err(e) => Err(format!("was neither served nor closed: {e}")),
    }
}

/// Starts the server with the shim preloaded, making `fault` (see
/// accept_faults.c for the faults it knows).
fn start_with_fault(target: &Target, fault: &str) -> (Server, Shim) {
    let shim = Shim::new();
    let server = target.start_with(Options {
        env: &[
            ("LD_PRELOAD", shim_library().to_str().unwrap()),
            ("ECHO_ACCEPT_FAULT", fault),
            ("ECHO_ACCEPT_FAULT_COUNT", shim.path()),
        ],
        ..Options::default()
    });
    (server, shim)
}

/// The file in which the shim counts the calls it saw and the failures it
/// made, removed when dropped.
struct Shim(PathBuf);

impl Shim {
    fn new() -> Shim {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("echo-accept-faults-{}-{n}.count", std::process::id());
        let path = std::env::temp_dir().join(name);
        std::fs::write(&path, [0u8; 16]).unwrap();
        Shim(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("a UTF-8 temporary directory")
    }

    fn read(&self, which: usize) -> u64 {
        let bytes = std::fs::read(&self.0).unwrap();
        u64::from_ne_bytes(bytes[8 * which..8 * which + 8].try_into().unwrap())
    }

    fn calls(&self) -> u64 {
        self.read(0)
    }

    fn faults(&self) -> u64 {
        self.read(1)
    }

    /// Ends the case as not applicable if the server has been served a
    /// client without calling the shim: it accepts some other way.
    fn must_have_run(&self) {
        if self.calls() == 0 {
            not_applicable(
                "the server accepted a client without calling accept(2) or accept4(2) \
                 through the C library (it may accept through io_uring, or be linked \
                 statically), so the preloaded library could not make them fail",
            );
        }
    }

    /// Fails unless the shim failed between `expected` calls with
    /// `errno`: a case whose fault never came tested nothing.
    fn must_have_failed(&self, errno: &str, expected: RangeInclusive<u64>) {
        let n = self.faults();
        assert!(
            expected.contains(&n),
            "the preloaded library failed {n} accepts with {errno}, not {}",
            match (*expected.start(), *expected.end()) {
                (a, b) if a == b => format!("{a}"),
                (a, u64::MAX) => format!("{a} or more"),
                (a, b) => format!("{a} to {b}"),
            }
        );
    }
}

impl Drop for Shim {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Compiles tests/fixtures/accept_faults.c into a shared object, once per
/// process. The source is built into the suite, so `conform` needs only a
/// C compiler, wherever it runs.
fn shim_library() -> PathBuf {
    static LIBRARY: OnceLock<PathBuf> = OnceLock::new();
    LIBRARY
        .get_or_init(|| {
            let dir = std::env::temp_dir();
            let stem = format!("echo-accept-faults-{}", std::process::id());
            let source = dir.join(format!("{stem}.c"));
            let library = dir.join(format!("{stem}.so"));
            std::fs::write(&source, include_str!("../fixtures/accept_faults.c")).unwrap();
            let status = Command::new("cc")
                .args(["-shared", "-fPIC", "-O1", "-o"])
                .arg(&library)
                .arg(&source)
                .arg("-ldl")
                .status()
                .expect("cc (a C compiler) is needed to build the accept(2) fault library");
            assert!(status.success(), "cc failed to build {}", source.display());
            let _ = std::fs::remove_file(&source);
            library
        })
        .clone()
}
