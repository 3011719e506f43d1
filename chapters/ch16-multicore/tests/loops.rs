//! What is new with several loops: the suite's cases again with four loops
//! in each way of sharing the port, how the connections spread, one signal
//! stopping every loop, descriptors running out for all of them at once,
//! and pinning.

use std::io::{ErrorKind, Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};

use conformance::harness::{frame, Client, Options, Server};
use conformance::{runner, Target, CASES};

const BIN: &str = env!("CARGO_BIN_EXE_ch16");
const MODES: [&str; 3] = ["reuseport", "exclusive", "naive"];

fn start(args: &[&str]) -> Server {
    Server::start_with(
        BIN,
        Options {
            args,
            ..Options::default()
        },
    )
}

// ANCHOR: cases
/// The suite's cases that exercise accepting, serving and stopping, run
/// against four loops: more loops than this machine may have cores, so
/// that they really do compete for the port. Left out: running out of
/// descriptors has a test of its own below (four loops hold more than the
/// 16 descriptors the suite's case allows a server at rest); and taking
/// turns, which is one loop's business, unchanged from chapter 9, and run
/// with one loop (tests/conformance.rs): with four loops on two cores its
/// 500 ms limit would time the scheduler, not the loop.
const CASES_WITH_FOUR_LOOPS: [&str; 10] = [
    "echo::one_frame",
    "echo::pipelined_random_frames_in_one_write",
    "echo::length_4097_closes_only_that_connection",
    "echo::accept_errors_do_not_strand_clients",
    "echo::sigint_while_a_client_is_connected",
    "concurrent::two_hundred_clients_pipelining_get_their_own_replies",
    "event_loop::thousand_simultaneous_connections",
    "event_loop::stop_answers_every_frame_received",
    "event_loop::idle_client_sees_eof_and_the_server_exits_when_it_leaves",
    "scale::ten_thousand_idle_connections_cost_little_memory",
];

fn four_loops_pass_the_cases(share: &str) {
    let target = Target {
        command: [BIN, "--threads", "4", "--share", share]
            .map(String::from)
            .to_vec(),
        port: None,
    };
    for id in CASES_WITH_FOUR_LOOPS {
        let case = CASES.iter().find(|case| case.id() == id).expect(id);
        if let Err(reason) = runner::run_case(case, &target) {
            panic!("--threads 4 --share {share}: {id}: {reason}");
        }
    }
}

#[test]
fn four_loops_with_reuseport_pass_the_cases() {
    four_loops_pass_the_cases("reuseport");
}

#[test]
fn four_loops_with_exclusive_pass_the_cases() {
    four_loops_pass_the_cases("exclusive");
}

#[test]
fn four_loops_with_naive_pass_the_cases() {
    four_loops_pass_the_cases("naive");
}
// ANCHOR_END: cases

/// How many listening sockets `ss` shows on the server's port.
fn listening_sockets(server: &Server) -> usize {
    let filter = format!("sport = :{}", server.addr.port());
    let out = Command::new("ss")
        .args(["-Hlnt", &filter])
        .output()
        .expect("ss (from iproute2)");
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[test]
fn reuseport_gives_each_loop_a_listener_of_its_own() {
    assert_eq!(listening_sockets(&start(&["--threads", "4"])), 4);
    for share in ["exclusive", "naive"] {
        let server = start(&["--threads", "4", "--share", share]);
        assert_eq!(listening_sockets(&server), 1, "--share {share}");
    }
}

/// Per loop, what `--stats` printed: (accepted, wakeups, listener events, empty).
fn stats(stdout: &str) -> Vec<(u64, u64, u64, u64)> {
    stdout
        .lines()
        .filter(|line| line.starts_with("loop "))
        .map(|line| {
            let numbers: Vec<u64> = line
                .split_once(": ")
                .unwrap()
                .1
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|word| word.parse().ok())
                .collect();
            (numbers[0], numbers[1], numbers[2], numbers[3])
        })
        .collect()
}

// ANCHOR: spread
#[test]
fn stats_count_every_connection_and_reuseport_spreads_them() {
    for share in MODES {
        let mut server = start(&["--threads", "4", "--share", share, "--stats"]);
        for i in 0..200u32 {
            server.connect().assert_echo(&i.to_le_bytes());
        }
        server.signal(libc::SIGINT);
        assert!(server.wait_exit(Duration::from_secs(5)).success());
        // The exit comes first, the last of its output a moment later.
        server.eventually(Duration::from_secs(5), "four lines of stats", |s| {
            stats(&s.stdout()).len() == 4
        });
        let per_loop = stats(&server.stdout());
        assert_eq!(per_loop.len(), 4, "--share {share}: {}", server.stdout());
        let accepted: u64 = per_loop.iter().map(|s| s.0).sum();
        assert_eq!(accepted, 200, "--share {share}: {per_loop:?}");
        // A loop that was running already finds an event without being woken.
        for (accepted, _wakeups, events, empty) in &per_loop {
            assert!(empty <= events, "--share {share}: {per_loop:?}");
            assert!(
                *events > 0 || *accepted == 0,
                "--share {share}: {per_loop:?}"
            );
        }
        if share == "reuseport" {
            // The hash of 200 random client ports leaves no loop out (the
            // odds of it are 4 × (3/4)^200, about 10^-25).
            assert!(per_loop.iter().all(|s| s.0 > 0), "{per_loop:?}");
        }
    }
}
// ANCHOR_END: spread

// ANCHOR: second_signal
/// Whichever loop reads the first signal, every loop stops gracefully: the
/// idle clients of all four read EOF. A second signal, read by whichever
/// loop is still running, ends the grace period of all of them at once.
#[test]
fn one_signal_stops_every_loop_and_a_second_ends_the_grace_period() {
    for share in MODES {
        let mut server = start(&["--threads", "4", "--share", share, "--grace-ms", "20000"]);
        let stuck: Vec<Client> = (0..8).map(|_| server.connect_stuck()).collect();
        let mut idle: Vec<Client> = (0..40).map(|_| server.connect()).collect();
        for client in &mut idle {
            client.assert_echo(b"then nothing");
        }
        server.signal(libc::SIGINT);
        for (i, client) in idle.iter_mut().enumerate() {
            let mut byte = [0u8; 1];
            let eof = client.stream.read(&mut byte);
            assert!(
                matches!(eof, Ok(0)),
                "--share {share}: idle client {i} should read EOF at the stop, got {eof:?}"
            );
        }
        server.assert_running();
        let second = Instant::now();
        server.signal(libc::SIGINT);
        let status = server.wait_exit(Duration::from_secs(3));
        assert!(status.success(), "--share {share}: exited with {status}");
        assert!(second.elapsed() < Duration::from_secs(2), "--share {share}");
        drop(stuck);
    }
}
// ANCHOR_END: second_signal

// ANCHOR: emfile
/// Out of descriptors, the loops compete for the few that free up: each
/// client must still be served or closed at once, in every mode, and no
/// loop may spin on a listener it cannot accept from.
#[test]
fn out_of_fds_four_loops_serve_or_close_every_client() {
    for share in MODES {
        let mut server = start(&["--threads", "4", "--share", share]);
        // Room for 30 clients, above what the four loops hold at rest.
        server.limit_descriptors(30);
        let mut clients: Vec<Client> = (0..100).map(|_| server.connect()).collect();
        let (mut served, mut turned_away) = (0, 0);
        let request = frame(b"anyone there?");
        for (k, client) in clients.iter_mut().enumerate() {
            let _ = client.stream.write_all(&request);
            let mut reply = vec![0; request.len()];
            match client.stream.read_exact(&mut reply) {
                Ok(()) => {
                    assert_eq!(reply, request, "--share {share}: client {k}");
                    served += 1;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset
                    ) =>
                {
                    turned_away += 1
                }
                Err(e) => {
                    panic!("--share {share}: client {k} of 100 was neither served nor closed: {e}")
                }
            }
        }
        assert!(
            served >= 20 && turned_away >= 40,
            "--share {share}: {served} served, {turned_away} turned away"
        );
        let cpu_before = server.cpu_time();
        std::thread::sleep(Duration::from_secs(1)); // measuring, not synchronising
        let cpu = server.cpu_time() - cpu_before;
        assert!(
            cpu < Duration::from_millis(250),
            "--share {share}: {cpu:?} of CPU in 1 s, full and idle"
        );
        drop(clients);
        server.eventually(Duration::from_secs(5), "a newcomer is served again", |s| {
            let mut s = Client::connect(s.addr);
            s.try_echo(b"room now?").is_ok()
        });
        server.assert_running();
    }
}
// ANCHOR_END: emfile

/// The CPUs a thread may run on, from /proc: "0", "1", "0-1".
fn cpus_allowed(pid: i32, tid: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim()
        .to_string()
}

/// (thread name, CPUs allowed) of every thread named "loop N".
fn loop_threads(pid: i32) -> Vec<(String, String)> {
    let mut threads: Vec<(String, String)> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|entry| {
            let tid = entry.ok()?.file_name().into_string().ok()?;
            let name = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).ok()?;
            let name = name.trim().to_string();
            name.starts_with("loop ")
                .then(|| (name, cpus_allowed(pid, &tid)))
        })
        .collect();
    threads.sort();
    threads
}

#[test]
fn pin_gives_each_loop_one_cpu() {
    let cpus = std::thread::available_parallelism().unwrap().get();
    let mut server = start(&["--threads", "2", "--pin", "--stats"]);
    server.eventually(
        Duration::from_secs(5),
        "two loop threads, each on one CPU",
        |s| {
            let threads = loop_threads(s.pid());
            threads.len() == 2
                && threads
                    .iter()
                    .all(|(_, allowed)| allowed.parse::<usize>().is_ok())
        },
    );
    let threads = loop_threads(server.pid());
    if cpus >= 2 {
        assert_ne!(
            threads[0].1, threads[1].1,
            "two loops on one CPU: {threads:?}"
        );
    }
    server.assert_serves();
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit(Duration::from_secs(5)).success());
    // The exit comes first, the last of its output a moment later.
    server.eventually(Duration::from_secs(5), "loop 0's stats, pinned", |s| {
        s.stdout().contains("loop 0 (CPU ")
    });
}
