//! What ch16 says when it cannot start: one line on stderr and exit status
//! 1, in the words of every other chapter. The suite's
//! `user_errors_are_one_clear_line` covers what all servers share; these are
//! the errors only several loops can meet. And who else may share the port.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use conformance::harness::{run_bounded, Options, Server};
use nix::errno::Errno;
use nix::sys::socket::{
    self, setsockopt, sockopt, AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage,
};

const BIN: &str = env!("CARGO_BIN_EXE_ch16");
const MODES: [&str; 3] = ["reuseport", "exclusive", "naive"];

/// Runs `command` (ch16, or a wrapper around it), which must exit at once.
fn run(command: &[&str], args: &[&str]) -> Output {
    let command: Vec<String> = command.iter().map(|s| s.to_string()).collect();
    run_bounded(&command, args, &[], Duration::from_secs(20))
}

/// Checks that the run failed with status 1 and one line on stderr that
/// starts with `line` (a hint may follow), without announcing a port.
fn assert_fails_with(out: &Output, line: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout: {stdout}, stderr: {stderr}"
    );
    assert!(
        stderr.starts_with(line) && stderr.lines().count() == 1,
        "expected one line starting with {line:?}, got {stderr:?}"
    );
    assert_eq!(stdout, "", "it must not announce a port it cannot serve");
}

// ANCHOR: second_instance
/// A second ch16 on the address of a running one fails as any other
/// chapter's server would, whatever either shares its port with: with
/// `SO_REUSEPORT` on both sides, the kernel would let the second join the
/// first's group and take a share of its clients.
#[test]
fn a_second_instance_on_the_same_address_fails_like_any_server() {
    for first_share in MODES {
        let mut first = Server::start_with(
            BIN,
            Options {
                args: &["--threads", "2", "--share", first_share],
                ..Options::default()
            },
        );
        let addr = first.addr.to_string();
        for share in MODES {
            let args = ["--addr", &addr, "--threads", "2", "--share", share];
            let second = format!("--share {first_share}, then --share {share}");
            let (status, stderr) = start_expecting_failure(&args, &second);
            assert_eq!(status, Some(1), "{second}: {stderr}");
            assert_eq!(
                stderr,
                format!("ch16: cannot listen on {addr}: Address already in use (os error 98)\n"),
                "{second}"
            );
        }
        first.assert_serves();
    }
}

/// What the first listener cannot prevent: a process of the same user that
/// sets `SO_REUSEPORT` joins the group and gets a share of the clients.
/// This test is such a process.
#[test]
fn the_group_is_still_open_to_a_process_of_the_same_user() {
    let server = Server::start_with(
        BIN,
        Options {
            args: &["--threads", "2"],
            ..Options::default()
        },
    );
    let intruder = listen_reuseport(server.addr);
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let accepted = intruder.accept().map(|_| ());
        // The listener goes back with the news, closed only once every
        // client has connected: closed now, it would reset the clients the
        // hash still sends it, and their connect would fail.
        let _ = tx.send((accepted, intruder));
    });
    // Three listeners in the group: the odds that the hash sends none of
    // 64 clients to the intruder are (2/3)^64, about 5 in 10^12.
    let clients: Vec<TcpStream> = (0..64)
        .map(|_| TcpStream::connect(server.addr).unwrap())
        .collect();
    let stolen = rx
        .recv_timeout(Duration::from_secs(10))
        .map(|(accepted, _intruder)| accepted);
    assert!(
        matches!(stolen, Ok(Ok(()))),
        "the intruder got no client: {stolen:?}"
    );
    drop(clients);
}
// ANCHOR_END: second_instance

/// The guard the kernel does keep: a process of another effective user
/// cannot join the group (socket(7)). Run as root, the test runs itself
/// again as `nobody` to try.
#[test]
fn another_user_cannot_join_the_group() {
    const JOIN: &str = "CH16_TEST_JOIN_AS_ANOTHER_USER";
    if let Ok(addr) = std::env::var(JOIN) {
        // The run as `nobody`.
        let joined = try_listen_reuseport(addr.parse().unwrap());
        assert_eq!(joined.err(), Some(Errno::EADDRINUSE));
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("only root can run a process as another user: nothing tested");
        return;
    }
    let server = Server::start_with(
        BIN,
        Options {
            args: &["--threads", "2"],
            ..Options::default()
        },
    );
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", "another_user_cannot_join_the_group"])
        .env(JOIN, server.addr.to_string())
        .output()
        .expect("setpriv (util-linux)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "as nobody: {stdout}{stderr}");
    // It did run, and ran that one test.
    assert!(stdout.contains("1 passed"), "as nobody: {stdout}{stderr}");
}

/// A listener on `addr` with `SO_REUSEPORT`, as any program may make one.
fn listen_reuseport(addr: SocketAddr) -> TcpListener {
    try_listen_reuseport(addr).expect("joining the group")
}

fn try_listen_reuseport(addr: SocketAddr) -> Result<TcpListener, Errno> {
    let fd = socket::socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    setsockopt(&fd, sockopt::ReusePort, &true)?;
    socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    socket::listen(&fd, Backlog::MAXCONN)?;
    Ok(TcpListener::from(fd))
}

/// Starts ch16 with `args` and returns its exit status and stderr, or
/// panics if it announces a port instead of failing.
fn start_expecting_failure(args: &[&str], what: &str) -> (Option<i32>, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    // Its first line, or "" when it exits without one.
    let line = rx.recv_timeout(Duration::from_secs(20));
    if line.as_deref() != Ok("") {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{what}: the second server did not fail: its first line was {line:?}");
    }
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (child.wait().unwrap().code(), stderr)
}

// ANCHOR: threads
/// `--threads` out of range, or more loops than the open-file limit has
/// descriptors for: the error names the flag and the limit.
#[test]
fn too_few_or_too_many_loops_are_named_with_the_limit() {
    assert_fails_with(
        &run(&[BIN], &["--threads", "0"]),
        "ch16: --threads 0: must be at least 1",
    );
    assert_fails_with(
        &run(&[BIN], &["--threads", "100000"]),
        "ch16: --threads 100000: must be at most 1024",
    );
    // Under a limit of 64 open files: how many loops fit depends on what
    // the process has open already, so the test reads the number.
    let with_64_files = [
        "sh",
        "-c",
        "ulimit -n 64 && exec \"$0\" --addr 127.0.0.1:0 \"$@\"",
        BIN,
    ];
    for (share, per_loop) in [("reuseport", 4), ("exclusive", 3), ("naive", 3)] {
        let out = run(&with_64_files, &["--threads", "100", "--share", share]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let most: u64 = stderr
            .strip_prefix("ch16: --threads 100: must be at most ")
            .and_then(|rest| rest.split_once(' '))
            .and_then(|(most, _)| most.parse().ok())
            .unwrap_or_else(|| panic!("--share {share}: {stderr:?}"));
        assert_fails_with(
            &out,
            &format!(
                "ch16: --threads 100: must be at most {most} here: each loop needs \
                 {per_loop} descriptors, and the open-file limit is 64 (ulimit -n)"
            ),
        );
        // The count is exact: that many loops start and serve a client
        // (whatever the process had open already), one more does not.
        let (fit, one_more) = (most.to_string(), (most + 1).to_string());
        let mut server = Server::start_with(
            BIN,
            Options {
                args: &["--threads", &fit, "--share", share],
                max_open_files: Some(64),
                ..Options::default()
            },
        );
        server.assert_serves();
        assert_fails_with(
            &run(&with_64_files, &["--threads", &one_more, "--share", share]),
            &format!("ch16: --threads {one_more}: must be at most {most} here"),
        );
    }
}
// ANCHOR_END: threads

/// The port number below which binding needs privilege, if any.
fn unprivileged_port_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(1024)
}

/// A port that needs privilege, bound without it: the error reads as every
/// chapter's (std's words for errno 13), not nix's `EACCES: Permission denied`.
#[test]
fn a_privileged_port_reads_like_every_chapter() {
    if unprivileged_port_start() <= 1 {
        eprintln!("every port is unprivileged here (ip_unprivileged_port_start): nothing to test");
        return;
    }
    // As root, run it as `nobody`, without capabilities, as a user would.
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let unprivileged: &[&str] = if root {
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ]
    } else {
        &[]
    };
    for share in MODES {
        let command = [unprivileged, &[BIN]].concat();
        let out = run(&command, &["--addr", "127.0.0.1:1", "--share", share]);
        assert_fails_with(
            &out,
            "ch16: cannot listen on 127.0.0.1:1: Permission denied (os error 13)",
        );
    }
}
