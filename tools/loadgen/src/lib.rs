//! A load generator for the echo framing (`u32` little-endian length, then
//! that many bytes; the reply is the identical frame).
//!
//! # Design
//! - `threads` OS threads, each running its own `mio` (epoll) loop over its
//!   share of the `conns` non-blocking connections: the load generator must
//!   not be the bottleneck, so it never blocks and never has a thread per
//!   connection.
//! - `idle` more connections make one round trip during the ramp-up (so the
//!   server has surely accepted them) and then stay silent: a server that
//!   looks at every connection on every wake-up (`poll`) pays for them, one
//!   that is told which are ready (`epoll`) does not.
//! - Each connection keeps `depth` frames in flight (pipelining). New frames
//!   are queued as replies arrive and written together, one `write` for many
//!   frames; replies are read with large reads.
//! - Every reply is checked byte for byte. Payloads differ per frame (a
//!   stamp of the connection id and sequence number over a shifting byte
//!   pattern), so a reply that is corrupt, truncated, *or out of order* is
//!   caught.
//! - Two ways to send. *Closed loop* (the default): each connection keeps
//!   `depth` frames in flight and sends the next only when a reply arrives,
//!   which measures throughput. *Open loop* (`rate`): frames are due on a
//!   fixed schedule, `rate` per second over all busy connections in turn,
//!   and go out when due whatever the server does, which measures latency
//!   the way users meet it. A closed loop slows its own sending while the
//!   server stalls, so only the few frames in flight see the stall
//!   (*coordinated omission*); in the open loop every frame due during the
//!   stall waits, and each latency counts from the frame's *scheduled*
//!   send time, as wrk2 does. A timerfd wakes the loop when the next frame
//!   is due (epoll's own timeout counts in milliseconds), and how late the
//!   loop itself was is reported (`schedule_lag_us`): latency is only as
//!   good as that. Frames due while the socket is full wait in memory, so a
//!   server that stops reading costs `rate × window` frames of it.
//! - Time is split into a ramp-up, a warm-up, a measured window, and a drain.
//!   The ramp-up opens the connections, at most [`MAX_CONNECTING`] of them
//!   unanswered at a time (more would overflow the server's accept queue,
//!   and the kernel would drop SYNs and retry them only after a second), and
//!   ends when every connection has had a reply, or at `connect_timeout`.
//!   After the window no new frames are sent, and frames still unanswered at
//!   the end of the drain are *lost* (closed loop) or *unanswered* (open
//!   loop, where a server that cannot keep up falls behind by design: they
//!   count in the latencies with the wait they had reached, a lower bound).
//!   Every phase has a deadline, so a server that never answers (a blocking
//!   server with many clients) makes the run end on time and report
//!   "stalled", never hang.
//!
//! # Its own ceiling
//! The report includes the CPU the load generator itself used during the
//! window (`loadgen_cpu`, in cores). Close to `threads` means it was busy
//! all the time and may have been the bottleneck. To keep its own share of
//! each frame small it
//! - reads every connection into one large buffer (`READ_BUF`), so one
//!   `read` takes all the replies a socket holds, and nothing is zeroed or
//!   shifted per read (only a frame cut by the end of a read is kept, per
//!   connection);
//! - skips the `read` that would only say `EAGAIN` after a short read, and
//!   the `read` on writable-only events;
//! - writes all the frames a connection has room for with one `write`.
//!
//! What it can drive is measured against `null-echo` (`src/bin/null-echo.rs`),
//! a raw byte echo that parses nothing: the benchmark runs it at every load.
//! At 4 KiB frames most of the load generator's time is then the kernel's
//! (copies, TCP), which on loopback costs it about what it costs the server.

use std::collections::VecDeque;
use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use common::frame::{HEADER_LEN, MAX_MSG};
use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use serde::{Deserialize, Serialize};

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    pub addr: SocketAddr,
    pub conns: usize,
    /// Extra connections that are answered once, then stay silent.
    pub idle: usize,
    /// Frames in flight per connection.
    pub depth: usize,
    /// Payload bytes per frame, at most [`MAX_MSG`].
    pub size: usize,
    /// Longest ramp-up: connections not answered by then count as stalled.
    pub connect_timeout: Duration,
    pub warmup: Duration,
    pub secs: Duration,
    /// How long to wait for the last replies after the window closes.
    pub drain: Duration,
    pub threads: usize,
    /// The server's process id, to measure the CPU it uses during the window.
    pub server_pid: Option<u32>,
    /// Open loop: frames per second over all busy connections, sent on a
    /// fixed schedule whatever the server does; `depth` is then unused.
    pub rate: Option<f64>,
}

/// What happened. Rates cover the measured window only.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub addr: String,
    pub conns: usize,
    pub idle: usize,
    pub depth: usize,
    pub size: usize,
    pub threads: usize,
    /// Length of the measured window, in seconds.
    pub secs: f64,
    /// How long it took until every connection had been answered once (or
    /// the connect timeout), in seconds: how fast the server takes on clients.
    pub ramp_secs: f64,
    /// Frames answered (and verified) within the window.
    pub frames: u64,
    pub frames_per_sec: f64,
    /// Payload megabytes (10^6 bytes) echoed per second, one direction.
    pub mb_per_sec: f64,
    pub latency_us: Latency,
    /// Connections that were established.
    pub connected: usize,
    /// Connections that failed, or were not established before the window closed.
    pub connect_failed: usize,
    /// Connections that never got a single reply (including those never
    /// opened because the ones before them were not answered).
    pub stalled: usize,
    /// Connections the server closed or reset while we still expected replies.
    pub closed: usize,
    /// Replies that differed from the frame sent (content, length or order).
    pub mismatches: u64,
    /// Frames sent on a connection that was being answered, but never answered.
    pub lost: u64,
    /// The first verification error, to show what went wrong.
    pub first_error: Option<String>,
    /// CPU used by the load generator during the window, in cores (1.0 = one core busy).
    pub loadgen_cpu: f64,
    /// CPU used by the server during the window, in cores, if its pid was given.
    #[serde(default)]
    pub server_cpu: Option<f64>,
    /// Why `server_cpu` is missing although a pid was given.
    #[serde(default)]
    pub server_cpu_note: Option<String>,
    /// The same, from another clock: utime + stime of `/proc/PID/stat`
    /// (which the kernel samples at each tick and scales to the scheduler's
    /// runtime), including threads that exited during the window.
    #[serde(default)]
    pub server_cpu_stat: Option<f64>,
    /// Every verified reply of the run, ramp-up, warm-up and drain included:
    /// with the server's CPU over its whole life, the cost per frame "over
    /// the load" rather than over the window.
    #[serde(default)]
    pub frames_total: u64,
    /// Each CPU's time over the window, from `/proc/stat`: where the
    /// kernel's softirq work ran, whoever it was charged to.
    #[serde(default)]
    pub cpus: Vec<CpuTimes>,
    /// CPU of the kernel's softirq threads (`ksoftirqd/N`) over the
    /// window, in cores: network work deferred to them is charged to
    /// neither the server nor the load generator.
    #[serde(default)]
    pub ksoftirqd_cpu: Option<f64>,
    /// Open loop: the frames per second offered.
    #[serde(default)]
    pub offered_fps: Option<f64>,
    /// Open loop: frames due within the window (all of them were sent).
    #[serde(default)]
    pub scheduled: u64,
    /// Open loop: frames still unanswered at the end of the drain.
    #[serde(default)]
    pub unanswered: u64,
    /// Open loop: how late the load generator queued each frame of the
    /// window after it was due (its own timer and loop, not the server).
    #[serde(default)]
    pub schedule_lag_us: Option<Latency>,
}

/// One CPU's time over the window, in seconds, from `/proc/stat`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuTimes {
    pub cpu: usize,
    pub user: f64,
    pub system: f64,
    pub softirq: f64,
    pub irq: f64,
    pub idle: f64,
}

impl Report {
    /// Server CPU time per echoed frame, in nanoseconds: what a frame costs
    /// the server, whichever side was the bottleneck.
    pub fn server_ns_per_frame(&self) -> Option<f64> {
        let cpu = self.server_cpu?;
        (self.frames > 0).then(|| cpu * self.secs * 1e9 / self.frames as f64)
    }
}

/// Round-trip times of the frames answered in the window, in microseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

/// How a run ended, from best to worst; also the process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// Every connection was served and every reply verified.
    Ok = 0,
    /// Wrong, lost or cut-off replies: the server is broken.
    Failed = 1,
    /// No wrong bytes, but some connections were never connected or never
    /// answered: the server could not serve this load.
    Stalled = 2,
}

impl Report {
    pub fn verdict(&self) -> Verdict {
        if self.mismatches > 0 || self.lost > 0 || self.closed > 0 {
            Verdict::Failed
        } else if self.stalled > 0 || self.connect_failed > 0 {
            Verdict::Stalled
        } else {
            Verdict::Ok
        }
    }

    /// One human-readable summary: the numbers, then what went wrong if anything.
    pub fn summary(&self) -> String {
        let l = &self.latency_us;
        let shape = match self.offered_fps {
            Some(rate) => format!("rate={rate:.0}/s"),
            None => format!("depth={}", self.depth),
        };
        let mut s = format!(
            "{} conns={} idle={} {shape} size={}B: {:.0} frames/s, {:.1} MB/s, latency p50 {:.1} µs p99 {:.1} µs p99.9 {:.1} µs max {:.1} µs, loadgen cpu {:.2} cores",
            self.addr, self.conns, self.idle, self.size, self.frames_per_sec, self.mb_per_sec,
            l.p50, l.p99, l.p999, l.max, self.loadgen_cpu
        );
        if let Some(lag) = &self.schedule_lag_us {
            s += &format!(", sent late by p99 {:.1} µs max {:.1} µs", lag.p99, lag.max);
        }
        if self.unanswered > 0 {
            s += &format!(
                "\nBEHIND: {} frames still unanswered at the end (counted with the wait they had reached)",
                self.unanswered
            );
        }
        if let (Some(cpu), Some(ns)) = (self.server_cpu, self.server_ns_per_frame()) {
            s += &format!(", server cpu {cpu:.2} cores, {ns:.0} ns per frame");
        }
        if self.stalled > 0 {
            s += &format!(
                "\nSTALLED: {} of {} connections got no reply",
                self.stalled,
                self.conns + self.idle
            );
        }
        if self.connect_failed > 0 {
            s += &format!(
                "\nSTALLED: {} of {} connections could not connect",
                self.connect_failed,
                self.conns + self.idle
            );
        }
        if self.verdict() == Verdict::Failed {
            s += &format!(
                "\nFAILED: {} mismatched replies, {} lost frames, {} connections closed by the server",
                self.mismatches, self.lost, self.closed
            );
            if let Some(e) = &self.first_error {
                s += &format!("; first: {e}");
            }
        }
        s
    }
}

/// Connections opened but not yet answered, at most, over all threads.
/// Servers listen with a backlog of up to 4096 (`somaxconn`); staying well
/// under it keeps the accept queue from overflowing.
pub const MAX_CONNECTING: usize = 1000;

/// Bytes one `read` may take from a socket: many 4 KiB replies at once.
const READ_BUF: usize = 256 * 1024;

/// What the threads share: the ramp-up count and, once it is over, the clock.
struct Shared {
    total: usize,
    /// Connections answered once, or given up on.
    settled: Mutex<usize>,
    all_settled: Condvar,
    phases: OnceLock<Phases>,
}

impl Shared {
    fn settle(&self) {
        let mut n = self.settled.lock().expect("poisoned");
        *n += 1;
        if *n == self.total {
            self.all_settled.notify_all();
        }
    }
}

/// Runs the load and waits for every thread; returns within about
/// `connect_timeout + warmup + secs + drain` whatever the server does.
pub fn run(config: &Config) -> Result<Report> {
    if config.size > MAX_MSG {
        bail!(
            "--size {} is over the protocol's maximum of {MAX_MSG}",
            config.size
        );
    }
    if config.conns == 0 || config.depth == 0 || config.threads == 0 {
        bail!("--conns, --depth and --threads must be at least 1");
    }
    if config.secs.is_zero() {
        bail!("--secs must be more than 0");
    }
    if let Some(rate) = config.rate {
        if !(rate.is_finite() && rate > 0.0) {
            bail!("--rate must be a positive number of frames per second");
        }
    }
    let total = config.conns + config.idle;
    let threads = config.threads.min(total);
    let start = Instant::now();
    let shared = Arc::new(Shared {
        total,
        settled: Mutex::new(0),
        all_settled: Condvar::new(),
        phases: OnceLock::new(),
    });
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            // Connection ids t, t+threads, t+2·threads, …: ids are unique across threads.
            // Ids from `conns` on are the idle connections.
            let ids: VecDeque<u32> = (t..total).step_by(threads).map(|i| i as u32).collect();
            // Open loop: each thread sends its busy connections' share of the rate.
            let busy = ids
                .iter()
                .filter(|&&id| (id as usize) < config.conns)
                .count();
            let mut config = config.clone();
            config.rate = config
                .rate
                .map(|rate| rate * busy as f64 / config.conns as f64);
            let shared = shared.clone();
            let max_connecting = (MAX_CONNECTING / threads).max(1);
            std::thread::Builder::new()
                .name(format!("loadgen-{t}"))
                .spawn(move || Worker::new(&config, ids, max_connecting, shared)?.run())
        })
        .collect::<io::Result<_>>()?;

    // Ramp-up: wait until every connection was answered once, or time is up.
    let settled = shared.settled.lock().expect("poisoned");
    let timeout = config.connect_timeout;
    drop(
        shared
            .all_settled
            .wait_timeout_while(settled, timeout, |n| *n < total),
    );
    let ramp_end = Instant::now();
    let phases = Phases {
        start: ramp_end,
        measure: ramp_end + config.warmup,
        stop: ramp_end + config.warmup + config.secs,
        end: ramp_end + config.warmup + config.secs + config.drain,
    };
    shared.phases.set(phases).expect("set once");

    // Measure our own CPU over the window: sleeping here only decides *when*
    // to sample, the workers are driven by their own clocks.
    // The server's CPU too, over the same window, if we know its pid.
    sleep_until(phases.measure);
    let cpu_before = cpu_time()?;
    let server_before = config.server_pid.map(process_cpu_time);
    let stat_before = config.server_pid.and_then(process_stat_time);
    let cpus_before = cpu_times();
    let ksoftirqd = ksoftirqd_pids();
    let ksoftirqd_before = ksoftirqd
        .iter()
        .map(|&p| process_cpu_time(p))
        .collect::<Option<Vec<_>>>();
    sleep_until(phases.stop);
    let window = config.secs.as_secs_f64();
    let cpu = (cpu_time()? - cpu_before).as_secs_f64() / window;
    let server_after = config.server_pid.map(process_cpu_time);
    let stat_after = config.server_pid.and_then(process_stat_time);
    let cpus = cpus_before
        .zip(cpu_times())
        .map(|(before, after)| cpu_deltas(&before, &after))
        .unwrap_or_default();
    let ksoftirqd_after = ksoftirqd
        .iter()
        .map(|&p| process_cpu_time(p))
        .collect::<Option<Vec<_>>>();
    let ksoftirqd_cpu = ksoftirqd_before
        .zip(ksoftirqd_after)
        .map(|(before, after)| {
            let sum = |v: &[ProcessCpu]| v.iter().map(|c| c.time).sum::<Duration>();
            sum(&after).saturating_sub(sum(&before)).as_secs_f64() / window
        });
    let server_cpu_stat = stat_before
        .zip(stat_after)
        .and_then(|(before, after)| after.checked_sub(before))
        .map(|d| d.as_secs_f64() / window);
    let (server_cpu, server_cpu_note) = match (server_before, server_after) {
        (Some(Some(before)), Some(Some(after))) => {
            // A thread that exited meanwhile takes its time with it: no answer then.
            let exited = before.threads.iter().any(|t| !after.threads.contains(t));
            match after.time.checked_sub(before.time) {
                Some(d) if !exited => (Some(d.as_secs_f64() / window), None),
                _ => (None, Some(THREAD_EXITED.to_string())),
            }
        }
        (Some(_), Some(_)) => (None, Some("the server's /proc entry was unreadable".into())),
        _ => (None, None),
    };

    let mut total = Tally::new();
    for handle in handles {
        let tally = handle.join().expect("a load generator thread panicked")?;
        total.merge(tally)?;
    }
    let ramp_secs = (ramp_end - start).as_secs_f64();
    let mut report = total.report(config, threads, ramp_secs, cpu);
    report.server_cpu = server_cpu;
    report.server_cpu_note = server_cpu_note;
    report.server_cpu_stat = server_cpu_stat;
    report.cpus = cpus;
    report.ksoftirqd_cpu = ksoftirqd_cpu;
    Ok(report)
}

fn sleep_until(t: Instant) {
    std::thread::sleep(t.saturating_duration_since(Instant::now()));
}

/// User + system CPU time of the whole process (all threads).
fn cpu_time() -> Result<Duration> {
    use nix::sys::resource::{getrusage, UsageWho};
    let usage = getrusage(UsageWho::RUSAGE_SELF).context("getrusage")?;
    let d =
        |tv: nix::sys::time::TimeVal| Duration::new(tv.tv_sec() as u64, tv.tv_usec() as u32 * 1000);
    Ok(d(usage.user_time()) + d(usage.system_time()))
}

/// Why a report has no server CPU figure when a thread of the server ended
/// during the window (ch05's thread per connection, for one).
pub const THREAD_EXITED: &str = "a server thread exited during the window";

/// The CPU time of a process and which threads it was summed over.
struct ProcessCpu {
    time: Duration,
    threads: Vec<String>,
}

/// CPU time of another process, summed over its threads, from
/// `/proc/PID/task/TID/schedstat` (nanoseconds on the CPU: finer than the
/// 10 ms ticks of `/proc/PID/stat`); `None` if it is gone or unreadable.
/// A thread that exits takes its time with it: the caller compares the
/// thread lists and gives no figure then.
fn process_cpu_time(pid: u32) -> Option<ProcessCpu> {
    let mut ns = 0u64;
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let task = task.ok()?;
        // A thread that exits between read_dir and here: not counted either way.
        let Ok(schedstat) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        ns += schedstat.split_whitespace().next()?.parse::<u64>().ok()?;
        threads.push(task.file_name().to_string_lossy().into_owned());
    }
    Some(ProcessCpu {
        time: Duration::from_nanos(ns),
        threads,
    })
}

/// The kernel's per-CPU softirq threads, found by name.
fn ksoftirqd_pids() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.starts_with("ksoftirqd/"))
        })
        .collect()
}

/// utime + stime of a whole process from `/proc/PID/stat`, threads that
/// exited included: the kernel's tick samples, scaled to the scheduler's
/// runtime, in clock ticks (`USER_HZ`, 100 a second on Linux).
pub fn process_stat_time(pid: u32) -> Option<Duration> {
    parse_stat_time(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn parse_stat_time(stat: &str) -> Option<Duration> {
    // The command name, in parentheses, may hold spaces and parentheses:
    // fields count from after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // Fields 14 and 15 of proc(5); `rest` starts at field 3.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 1000 / USER_HZ))
}

/// The unit of `/proc/PID/stat` and `/proc/stat` times: fixed at 100 on Linux
/// whatever the kernel's tick rate (`sysconf(_SC_CLK_TCK)`).
const USER_HZ: u64 = 100;

/// Each CPU's cumulative times from `/proc/stat`, in ticks:
/// (cpu, user + nice, system, idle + iowait, irq, softirq).
fn cpu_times() -> Option<Vec<[u64; 6]>> {
    parse_cpu_times(&std::fs::read_to_string("/proc/stat").ok()?)
}

fn parse_cpu_times(stat: &str) -> Option<Vec<[u64; 6]>> {
    stat.lines()
        .filter_map(|l| l.strip_prefix("cpu"))
        .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()))
        .map(|l| {
            let v: Vec<u64> = l
                .split_whitespace()
                .map(|f| f.parse().ok())
                .collect::<Option<_>>()?;
            // cpuN user nice system idle iowait irq softirq ...
            (v.len() >= 8).then(|| [v[0], v[1] + v[2], v[3], v[4] + v[5], v[6], v[7]])
        })
        .collect()
}

fn cpu_deltas(before: &[[u64; 6]], after: &[[u64; 6]]) -> Vec<CpuTimes> {
    let secs = |a: u64, b: u64| a.saturating_sub(b) as f64 / USER_HZ as f64;
    before
        .iter()
        .zip(after)
        .map(|(b, a)| CpuTimes {
            cpu: a[0] as usize,
            user: secs(a[1], b[1]),
            system: secs(a[2], b[2]),
            idle: secs(a[3], b[3]),
            irq: secs(a[4], b[4]),
            softirq: secs(a[5], b[5]),
        })
        .collect()
}

#[derive(Debug, Clone, Copy)]
struct Phases {
    /// The end of the ramp-up: the open loop's frame 0 is due now.
    start: Instant,
    /// Replies from here on are counted.
    measure: Instant,
    /// No new frames from here on; later replies are checked but not counted.
    stop: Instant,
    /// Whatever is unanswered now is lost or stalled.
    end: Instant,
}

// ANCHOR: payload
/// A byte pattern that does not repeat within a frame; each frame's payload
/// is a window into it, shifted per frame, with the first bytes overwritten
/// by a stamp of (connection, sequence number).
const PATTERN_LEN: usize = MAX_MSG + 256;

fn pattern() -> Vec<u8> {
    (0..PATTERN_LEN).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// Where frame `seq` of connection `conn` starts in the pattern, and its stamp.
fn frame_key(conn: u32, seq: u64) -> (usize, [u8; 8]) {
    let offset = (seq.wrapping_mul(31).wrapping_add(conn as u64) % 256) as usize;
    (offset, mix(seq ^ ((conn as u64) << 40)).to_le_bytes())
}

/// A bijective bit mixer (from splitmix64): every stamp byte depends on both
/// the connection and the sequence number, so even a 1-byte payload tells
/// neighbouring frames apart.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d049bb133111eb);
    x ^ (x >> 31)
}

fn push_frame(out: &mut Vec<u8>, pattern: &[u8], size: usize, conn: u32, seq: u64) {
    let (offset, stamp) = frame_key(conn, seq);
    out.extend_from_slice(&(size as u32).to_le_bytes());
    let start = out.len();
    out.extend_from_slice(&pattern[offset..offset + size]);
    let n = size.min(stamp.len());
    out[start..start + n].copy_from_slice(&stamp[..n]);
}

/// Checks one whole received frame against what frame `seq` must be.
fn check_frame(frame: &[u8], pattern: &[u8], size: usize, conn: u32, seq: u64) -> bool {
    let (offset, stamp) = frame_key(conn, seq);
    let n = size.min(stamp.len());
    frame[..HEADER_LEN] == (size as u32).to_le_bytes()
        && frame[HEADER_LEN..HEADER_LEN + n] == stamp[..n]
        && frame[HEADER_LEN + n..] == pattern[offset + n..offset + size]
}
// ANCHOR_END: payload

/// What a readiness event says about reading.
#[derive(Clone, Copy)]
struct Readable {
    /// The peer closed its side, or the socket has an error: read to the end.
    ended: bool,
}

enum State {
    Connecting,
    Open,
    /// Closed by the server, by an error, or by us after a mismatch.
    Done,
}

struct Conn {
    id: u32,
    stream: TcpStream,
    state: State,
    /// Bytes queued for the server; `out[written..]` is still unsent.
    out: Vec<u8>,
    written: usize,
    /// The start of a reply cut by the end of the last read (less than a frame).
    partial: Vec<u8>,
    next_send: u64,
    next_recv: u64,
    /// Send time of each frame in flight, oldest first.
    in_flight: VecDeque<Instant>,
    replies: u64,
    /// Answered once or given up on: no longer part of the ramp-up.
    settled: bool,
    /// Sends one frame only.
    idle: bool,
    /// Open loop: frames were queued this turn, a write is due.
    queued: bool,
}

/// What one thread counted; merged across threads into a [`Report`].
struct Tally {
    hist: Histogram<u64>,
    /// Open loop: how late each frame of the window was queued, ns.
    lag: Histogram<u64>,
    frames: u64,
    frames_total: u64,
    scheduled: u64,
    unanswered: u64,
    connected: usize,
    connect_failed: usize,
    stalled: usize,
    closed: usize,
    mismatches: u64,
    lost: u64,
    first_error: Option<String>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            // Nanoseconds, from 1 ns to 100 s, 3 significant digits.
            hist: Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid bounds"),
            lag: Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid bounds"),
            frames: 0,
            frames_total: 0,
            scheduled: 0,
            unanswered: 0,
            connected: 0,
            connect_failed: 0,
            stalled: 0,
            closed: 0,
            mismatches: 0,
            lost: 0,
            first_error: None,
        }
    }

    fn merge(&mut self, other: Tally) -> Result<()> {
        self.hist.add(&other.hist).context("merging histograms")?;
        self.lag.add(&other.lag).context("merging histograms")?;
        self.frames += other.frames;
        self.frames_total += other.frames_total;
        self.scheduled += other.scheduled;
        self.unanswered += other.unanswered;
        self.connected += other.connected;
        self.connect_failed += other.connect_failed;
        self.stalled += other.stalled;
        self.closed += other.closed;
        self.mismatches += other.mismatches;
        self.lost += other.lost;
        self.first_error = self.first_error.take().or(other.first_error);
        Ok(())
    }

    fn error(&mut self, message: impl FnOnce() -> String) {
        if self.first_error.is_none() {
            self.first_error = Some(message());
        }
    }

    fn report(self, config: &Config, threads: usize, ramp_secs: f64, loadgen_cpu: f64) -> Report {
        let secs = config.secs.as_secs_f64();
        let latency_us = Latency::of(&self.hist);
        let open_loop = config.rate.is_some();
        Report {
            addr: config.addr.to_string(),
            conns: config.conns,
            idle: config.idle,
            depth: config.depth,
            size: config.size,
            threads,
            secs,
            ramp_secs,
            frames: self.frames,
            frames_per_sec: self.frames as f64 / secs,
            mb_per_sec: (self.frames * config.size as u64) as f64 / secs / 1e6,
            latency_us,
            connected: self.connected,
            connect_failed: self.connect_failed,
            stalled: self.stalled,
            closed: self.closed,
            mismatches: self.mismatches,
            lost: self.lost,
            first_error: self.first_error,
            loadgen_cpu,
            server_cpu: None,
            server_cpu_note: None,
            server_cpu_stat: None,
            frames_total: self.frames_total,
            cpus: Vec::new(),
            ksoftirqd_cpu: None,
            offered_fps: config.rate,
            scheduled: self.scheduled,
            unanswered: self.unanswered,
            schedule_lag_us: open_loop.then(|| Latency::of(&self.lag)),
        }
    }
}

impl Latency {
    /// Percentiles of a histogram of nanoseconds, in microseconds.
    fn of(h: &Histogram<u64>) -> Latency {
        let us = |ns: u64| ns as f64 / 1000.0;
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            p50: us(h.value_at_quantile(0.5)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
            mean: h.mean() / 1000.0,
        }
    }
}

/// One thread's event loop and its connections.
struct Worker {
    poll: Poll,
    addr: SocketAddr,
    conns: Vec<Conn>,
    /// Connection ids below this are active, the others idle.
    active: usize,
    /// Ids of the connections not opened yet.
    pending: VecDeque<u32>,
    /// Opened connections not yet settled, and how many may be.
    connecting: usize,
    max_connecting: usize,
    shared: Arc<Shared>,
    /// The clock, once the ramp-up is over.
    phases: Option<Phases>,
    depth: usize,
    size: usize,
    pattern: Vec<u8>,
    /// Where every connection's replies are read to: see [`Worker::read`].
    rbuf: Vec<u8>,
    tally: Tally,
    /// Open loop: this thread's share of the rate, frames per second.
    rate: Option<f64>,
    /// Open loop: set up once the ramp-up is over.
    schedule: Option<Schedule>,
    /// Open loop: connections with frames queued this turn.
    queued: Vec<usize>,
}

/// The open loop's clock: frame `i` of this thread is due at
/// `start + i / rate` and goes to busy connection `i mod n`, so each
/// connection sends at `rate / n`, evenly spaced, whatever the replies do.
struct Schedule {
    rate: f64,
    start: Instant,
    /// The next frame to send.
    next: u64,
    /// Busy connections' tokens, in turn.
    order: Vec<usize>,
    /// Wakes the loop when the next frame is due: epoll's own timeout
    /// counts in milliseconds, a timerfd in nanoseconds.
    timer: TimerFd,
}

/// The timerfd's token; connections are numbered from 0.
const TIMER: Token = Token(usize::MAX);

impl Schedule {
    fn due(&self, i: u64) -> Instant {
        self.start + Duration::from_secs_f64(i as f64 / self.rate)
    }

    /// The connection frame `i` goes to.
    fn conn(&self, i: u64) -> usize {
        self.order[(i % self.order.len() as u64) as usize]
    }
}

impl Worker {
    fn new(
        config: &Config,
        pending: VecDeque<u32>,
        max_connecting: usize,
        shared: Arc<Shared>,
    ) -> Result<Worker> {
        let mut worker = Worker {
            poll: Poll::new()?,
            addr: config.addr,
            conns: Vec::with_capacity(pending.len()),
            active: config.conns,
            pending,
            connecting: 0,
            max_connecting,
            shared,
            phases: None,
            depth: config.depth,
            size: config.size,
            pattern: pattern(),
            rbuf: vec![0; READ_BUF],
            tally: Tally::new(),
            rate: config.rate,
            schedule: None,
            queued: Vec::new(),
        };
        worker.open_more()?;
        Ok(worker)
    }

    /// Open loop, once the ramp-up is over: the schedule, over the busy
    /// connections opened by then, and its timer.
    fn start_schedule(&mut self, phases: &Phases) -> io::Result<()> {
        let Some(rate) = self.rate else {
            return Ok(());
        };
        let order: Vec<usize> = (0..self.conns.len())
            .filter(|&t| !self.conns[t].idle)
            .collect();
        if order.is_empty() || rate <= 0.0 {
            return Ok(());
        }
        // The timer's slack (50 µs by default) would be latency we add ourselves.
        let _ = nix::sys::prctl::set_timerslack(1);
        let timer = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        let fd = timer.as_fd().as_raw_fd();
        self.poll
            .registry()
            .register(&mut SourceFd(&fd), TIMER, Interest::READABLE)?;
        self.schedule = Some(Schedule {
            rate,
            start: phases.start,
            next: 0,
            order,
            timer,
        });
        Ok(())
    }

    /// Open loop: queues every frame due by now (and before the window
    /// closes), writes them, and sets the timer for the next.
    fn send_due(&mut self, phases: &Phases) -> io::Result<()> {
        let Some(schedule) = &mut self.schedule else {
            return Ok(());
        };
        let now = Instant::now();
        loop {
            let due = schedule.due(schedule.next);
            if due > now || due >= phases.stop {
                break;
            }
            let token = schedule.conn(schedule.next);
            schedule.next += 1;
            let c = &mut self.conns[token];
            // A connection that failed, or never opened, misses its turns.
            if !matches!(c.state, State::Open) {
                continue;
            }
            push_frame(&mut c.out, &self.pattern, self.size, c.id, c.next_send);
            c.next_send += 1;
            // The latency will count from when the frame was due, not from now.
            c.in_flight.push_back(due);
            if !c.queued {
                c.queued = true;
                self.queued.push(token);
            }
            if due >= phases.measure {
                self.tally.scheduled += 1;
                let late = now.duration_since(due).as_nanos() as u64;
                self.tally.lag.saturating_record(late.max(1));
            }
        }
        let next = schedule.due(schedule.next);
        if next < phases.stop {
            // Zero would disarm the timer: at least a nanosecond.
            let wait = next
                .saturating_duration_since(Instant::now())
                .max(Duration::from_nanos(1));
            schedule.timer.set(
                Expiration::OneShot(TimeSpec::from_duration(wait)),
                TimerSetTimeFlags::empty(),
            )?;
        }
        for i in 0..self.queued.len() {
            let token = self.queued[i];
            self.conns[token].queued = false;
            if let Err(e) = self.write(token) {
                self.fail(token, e);
            }
        }
        self.queued.clear();
        Ok(())
    }

    /// Opens connections while fewer than `max_connecting` wait for their first reply.
    fn open_more(&mut self) -> io::Result<()> {
        while self.connecting < self.max_connecting {
            let Some(id) = self.pending.pop_front() else {
                return Ok(());
            };
            // Non-blocking connect: it completes when the socket turns writable.
            match TcpStream::connect(self.addr) {
                Ok(mut stream) => {
                    let token = Token(self.conns.len());
                    self.poll.registry().register(
                        &mut stream,
                        token,
                        Interest::READABLE | Interest::WRITABLE,
                    )?;
                    self.conns.push(Conn {
                        id,
                        stream,
                        state: State::Connecting,
                        out: Vec::new(),
                        written: 0,
                        partial: Vec::new(),
                        next_send: 0,
                        next_recv: 0,
                        in_flight: VecDeque::with_capacity(self.depth),
                        replies: 0,
                        settled: false,
                        idle: id as usize >= self.active,
                        queued: false,
                    });
                    self.connecting += 1;
                }
                // Out of descriptors or ports: count it, carry on with the rest.
                Err(_) => {
                    self.tally.connect_failed += 1;
                    self.shared.settle();
                }
            }
        }
        Ok(())
    }

    fn run(mut self) -> Result<Tally> {
        let mut events = Events::with_capacity(1024);
        loop {
            if self.phases.is_none() {
                self.phases = self.shared.phases.get().copied();
                if let Some(p) = self.phases {
                    self.start_schedule(&p)?;
                }
            }
            if let Some(p) = self.phases {
                self.send_due(&p)?;
            }
            let now = Instant::now();
            let timeout = match self.phases {
                // Ramping up: look at the shared clock again soon.
                None => Duration::from_millis(5),
                Some(p) if now >= p.end || (now >= p.stop && self.all_answered()) => break,
                // Wake at the next phase boundary even if nothing happens.
                Some(p) => {
                    [p.stop, p.end]
                        .into_iter()
                        .find(|&t| t > now)
                        .unwrap_or(p.end)
                        - now
                }
            };
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
            for event in events.iter() {
                // The timer's expiry is cleared by setting it again, in send_due.
                if event.token() == TIMER {
                    continue;
                }
                // A writable-only event needs no read: skipping it saves a
                // read(2) that would only say EAGAIN.
                // The peer's FIN or an error may come in the same edge as
                // data: then a short read does not mean the socket is done.
                let ended = event.is_read_closed() || event.is_error();
                let readable = if event.is_readable() || ended {
                    Some(Readable { ended })
                } else {
                    None
                };
                self.handle(event.token().0, readable)?;
            }
        }
        Ok(self.finish())
    }

    fn all_answered(&self) -> bool {
        self.conns
            .iter()
            .all(|c| matches!(c.state, State::Done) || c.in_flight.is_empty())
    }

    /// Counts what each connection ended as.
    fn finish(mut self) -> Tally {
        let now = Instant::now();
        for c in &self.conns {
            match c.state {
                State::Connecting => self.tally.connect_failed += 1,
                State::Open if c.replies == 0 => self.tally.stalled += 1,
                // Open loop: behind, not lost; each still waiting counts with
                // the wait it has reached, or a stall would shorten the tail.
                State::Open if self.rate.is_some() => {
                    self.tally.unanswered += c.in_flight.len() as u64;
                    let window = self.phases.map(|p| p.measure..p.stop);
                    for due in &c.in_flight {
                        if window.as_ref().is_some_and(|w| w.contains(due)) {
                            let ns = now.duration_since(*due).as_nanos() as u64;
                            self.tally.hist.saturating_record(ns.max(1));
                        }
                    }
                }
                State::Open => self.tally.lost += c.in_flight.len() as u64,
                State::Done => {}
            }
        }
        self.tally.stalled += self.pending.len();
        self.tally
    }

    /// Does everything a readiness event allows: finish connecting, read and
    /// check replies, queue new frames, write.
    fn handle(&mut self, token: usize, readable: Option<Readable>) -> io::Result<()> {
        self.handle_conn(token, readable);
        // Answered once, or dead: let the next connection in.
        let c = &mut self.conns[token];
        if !c.settled && (c.replies > 0 || matches!(c.state, State::Done)) {
            c.settled = true;
            self.connecting -= 1;
            self.shared.settle();
            self.open_more()?;
        }
        Ok(())
    }

    fn handle_conn(&mut self, token: usize, readable: Option<Readable>) {
        let c = &mut self.conns[token];
        if let State::Connecting = c.state {
            match connected(&c.stream) {
                Ok(true) => {
                    c.state = State::Open;
                    self.tally.connected += 1;
                    // Frames are written as soon as they are queued: no Nagle delay.
                    let _ = c.stream.set_nodelay(true);
                }
                Ok(false) => return,
                Err(_) => {
                    c.state = State::Done;
                    self.tally.connect_failed += 1;
                    return;
                }
            }
        }
        let read = match readable {
            Some(r) => self.read(token, r.ended),
            None => Ok(()),
        };
        if let Err(e) = read.and_then(|()| self.write(token)) {
            self.fail(token, e);
        }
    }

    /// The server closed the connection, or it broke: what was in flight is lost.
    fn fail(&mut self, token: usize, e: io::Error) {
        let c = &mut self.conns[token];
        if !matches!(c.state, State::Done) {
            c.state = State::Done;
            self.tally.closed += 1;
            self.tally.lost += c.in_flight.len() as u64;
            let id = c.id;
            self.tally.error(|| format!("connection {id}: {e}"));
        }
    }

    /// Reads until the socket is empty, checking each whole reply.
    ///
    /// Every connection reads into the worker's one large buffer, so a read
    /// takes all the replies a socket holds (fewer `read`s per frame) and
    /// nothing is zeroed or shifted per read; only the few bytes of a frame
    /// cut by the end of a read are kept per connection, in `partial`.
    fn read(&mut self, token: usize, ended: bool) -> io::Result<()> {
        let frame_len = HEADER_LEN + self.size;
        let c = &mut self.conns[token];
        if !matches!(c.state, State::Open) {
            return Ok(());
        }
        let buf = &mut self.rbuf;
        loop {
            let carried = c.partial.len();
            buf[..carried].copy_from_slice(&c.partial);
            let n = match c.stream.read(&mut buf[carried..]) {
                Ok(0) => {
                    let after_window = self.phases.is_some_and(|p| Instant::now() >= p.stop);
                    if c.in_flight.is_empty() && after_window {
                        return Ok(()); // nothing owed: not an error
                    }
                    return Err(io::Error::new(
                        ErrorKind::UnexpectedEof,
                        "closed by the server",
                    ));
                }
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            c.partial.clear();
            let filled = carried + n;
            // A short read emptied the socket: with edge-triggered epoll, data
            // arriving from now on raises a new event, so the read(2) that
            // would only say EAGAIN can be skipped: one syscall less per batch.
            // Not if the peer already closed: its EOF raises no new edge.
            let drained = filled < buf.len() && !ended;
            let now = Instant::now();
            let mut consumed = 0;
            while filled - consumed >= frame_len {
                let Some(sent_at) = c.in_flight.pop_front() else {
                    self.tally.mismatches += 1;
                    let id = c.id;
                    self.tally
                        .error(|| format!("connection {id}: a reply to a frame never sent"));
                    c.state = State::Done;
                    return Ok(());
                };
                let frame = &buf[consumed..consumed + frame_len];
                if !check_frame(frame, &self.pattern, self.size, c.id, c.next_recv) {
                    self.tally.mismatches += 1;
                    let (id, seq) = (c.id, c.next_recv);
                    let head = &frame[..frame_len.min(16)];
                    self.tally.error(|| {
                        format!("connection {id}, frame {seq}: reply differs from the frame sent (starts {head:02x?})")
                    });
                    // The stream is out of step now: give up on this connection.
                    c.state = State::Done;
                    return Ok(());
                }
                consumed += frame_len;
                c.next_recv += 1;
                c.replies += 1;
                self.tally.frames_total += 1;
                let in_window =
                    |t: Instant| self.phases.is_some_and(|p| t >= p.measure && t < p.stop);
                if in_window(now) {
                    self.tally.frames += 1;
                }
                // Closed loop: the replies that arrive in the window. Open
                // loop: the frames *due* in the window, whenever they are
                // answered, or a stall would push its victims out of the count.
                let counted = if self.rate.is_some() { sent_at } else { now };
                if in_window(counted) {
                    let ns = now.saturating_duration_since(sent_at).as_nanos() as u64;
                    self.tally.hist.saturating_record(ns.max(1));
                }
            }
            let rest = &buf[consumed..filled];
            // A reply longer than what we sent would only show up as a mismatch
            // later; a header announcing another size is caught right away.
            if rest.len() >= HEADER_LEN && rest[..HEADER_LEN] != (self.size as u32).to_le_bytes() {
                self.tally.mismatches += 1;
                let id = c.id;
                self.tally
                    .error(|| format!("connection {id}: reply with a wrong length header"));
                c.state = State::Done;
                return Ok(());
            }
            c.partial.extend_from_slice(rest);
            if drained {
                return Ok(());
            }
        }
    }

    /// Closed loop: tops the connection up to `depth` frames in flight.
    /// Open loop: only the ramp-up's first frame, the schedule sends the
    /// rest. Then writes what it can.
    fn write(&mut self, token: usize) -> io::Result<()> {
        let c = &mut self.conns[token];
        if !matches!(c.state, State::Open) {
            return Ok(());
        }
        let now = Instant::now();
        let limit = match (c.idle, self.rate) {
            (true, _) => 1,
            (false, None) => u64::MAX,
            (false, Some(_)) if self.phases.is_none() => 1,
            (false, Some(_)) => 0,
        };
        if self.phases.is_none_or(|p| now < p.stop) {
            while c.in_flight.len() < self.depth && c.next_send < limit {
                push_frame(&mut c.out, &self.pattern, self.size, c.id, c.next_send);
                c.next_send += 1;
                c.in_flight.push_back(now);
            }
        }
        while c.written < c.out.len() {
            match c.stream.write(&c.out[c.written..]) {
                Ok(n) => c.written += n,
                // The rest goes out on the next writable event.
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        c.out.clear();
        c.written = 0;
        Ok(())
    }
}

/// After a writable event on a connecting socket: has the connection been
/// established (`true`), is it still pending (`false`), or did it fail?
fn connected(stream: &TcpStream) -> io::Result<bool> {
    if let Some(e) = stream.take_error()? {
        return Err(e);
    }
    match stream.peer_addr() {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotConnected => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_spaces_frames_evenly_over_the_connections_in_turn() {
        let start = Instant::now();
        let schedule = Schedule {
            rate: 4000.0,
            start,
            next: 0,
            order: vec![3, 5, 8],
            timer: TimerFd::new(ClockId::CLOCK_MONOTONIC, TimerFlags::TFD_CLOEXEC).unwrap(),
        };
        assert_eq!(schedule.due(0), start);
        assert_eq!(schedule.due(4000) - start, Duration::from_secs(1));
        assert_eq!(
            schedule.due(3) - schedule.due(2),
            Duration::from_micros(250)
        );
        let conns: Vec<usize> = (0..7).map(|i| schedule.conn(i)).collect();
        assert_eq!(conns, [3, 5, 8, 3, 5, 8, 3]);
    }

    #[test]
    fn process_times_are_read_past_a_command_name_with_spaces() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt
        // majflt cmajflt utime stime ...: utime 250 and stime 130 ticks.
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 130 0 0 20 0 1 0";
        assert_eq!(parse_stat_time(stat), Some(Duration::from_millis(3800)));
        assert_eq!(parse_stat_time("42 (x) S 1"), None);
        // Our own process reads too.
        assert!(process_stat_time(std::process::id()).is_some());
    }

    #[test]
    fn cpu_times_are_per_cpu_deltas_in_seconds() {
        let before = "cpu  9 9 9 9 9 9 9 9 0 0\n\
                      cpu0 100 5 200 1000 10 0 30 0 0 0\n\
                      cpu1 100 0 200 1000 0 1 40 0 0 0\nintr 1 2 3\n";
        let after = "cpu  9 9 9 9 9 9 9 9 0 0\n\
                     cpu0 150 5 260 1010 10 0 45 0 0 0\n\
                     cpu1 100 0 300 1000 0 1 140 0 0 0\n";
        let d = cpu_deltas(
            &parse_cpu_times(before).unwrap(),
            &parse_cpu_times(after).unwrap(),
        );
        assert_eq!(d.len(), 2);
        assert_eq!((d[0].cpu, d[0].user, d[0].system), (0, 0.5, 0.6));
        assert_eq!((d[0].idle, d[0].softirq), (0.1, 0.15));
        assert_eq!((d[1].cpu, d[1].system, d[1].softirq), (1, 1.0, 1.0));
    }

    #[test]
    fn frames_check_only_against_themselves() {
        let pattern = pattern();
        for size in [0, 1, 7, 8, 9, 64, MAX_MSG] {
            let mut out = Vec::new();
            push_frame(&mut out, &pattern, size, 3, 10);
            assert_eq!(out.len(), HEADER_LEN + size);
            assert!(check_frame(&out, &pattern, size, 3, 10));
            if size > 0 {
                // Another frame of the same connection, or another connection's.
                assert!(!check_frame(&out, &pattern, size, 3, 11), "size {size}");
                assert!(!check_frame(&out, &pattern, size, 4, 10), "size {size}");
                let mut corrupt = out.clone();
                *corrupt.last_mut().unwrap() ^= 1;
                assert!(!check_frame(&corrupt, &pattern, size, 3, 10), "size {size}");
            }
        }
    }
}
