//! The chapter's instruments, not the server's design: `--pin` puts each
//! loop's thread on a CPU of its own, and `--stats` prints, at exit, what
//! each loop did. The loop only counts (`Stats`); the rest is here.

use std::io::{self, Write};

use anyhow::{Context, Result};
use common::args::Args;
use common::warn;
use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::sys::resource::{getrusage, UsageWho};
use nix::unistd::Pid;

/// What `--pin` and `--stats` ask for.
pub struct Measure {
    pin: bool,
    stats: bool,
}

impl Measure {
    /// Declares the two flags.
    pub fn from_args(args: &mut Args) -> Measure {
        let pin = args.flag("pin", "pin each loop's thread to a CPU of its own");
        let stats = args.flag(
            "stats",
            "at exit, print per loop: connections accepted, wakeups, listener events",
        );
        Measure { pin, stats }
    }

    /// The CPU each loop is pinned to, by loop number: none without
    /// `--pin`, else the CPUs this process may use, in turn.
    pub fn cpus(&self, loops: usize) -> Result<Vec<Option<usize>>> {
        if !self.pin {
            return Ok(vec![None; loops]);
        }
        let allowed = allowed_cpus()?;
        let cpu = |id: usize| (!allowed.is_empty()).then(|| allowed[id % allowed.len()]);
        Ok((0..loops).map(cpu).collect())
    }

    /// Prints each loop's counts, with `--stats`.
    pub fn report(&self, per_loop: &[Stats]) {
        if self.stats {
            print_stats(per_loop);
        }
    }
}

// ANCHOR: stats
/// What a loop counts, for `--stats`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    /// Where it ran, if pinned.
    cpu: Option<usize>,
    /// Connections it accepted (not counting those turned away, see `emfile`).
    pub accepted: u64,
    /// Times `epoll_wait` returned an event for the listener.
    pub listener_events: u64,
    /// Of those, the ones that found nothing: the first `accept` said
    /// `EAGAIN`, another loop had taken the connection.
    pub empty: u64,
    /// Times the thread went to sleep and was woken (its voluntary context
    /// switches), for whatever reason. Most of the herd is here, not in
    /// `empty`: epoll checks a descriptor again before reporting it, so a
    /// loop woken for a connection that another loop has taken goes back
    /// to sleep inside `epoll_wait`, and we never see an event.
    wakeups: u64,
}

impl Stats {
    /// Called first thing on loop `id`'s thread: pins it to `cpu`, if any.
    pub fn start(id: usize, cpu: Option<usize>) -> Stats {
        let mut stats = Stats::default();
        if let Some(cpu) = cpu {
            match pin_to(cpu) {
                Ok(()) => stats.cpu = Some(cpu),
                Err(e) => warn!("loop {id}: cannot pin to CPU {cpu}: {e}"),
            }
        }
        stats
    }

    /// Called last thing on the loop's thread: adds its wakeups.
    pub fn finish(mut self) -> Stats {
        // RUSAGE_THREAD: this thread's own counts, not the process's.
        if let Ok(usage) = getrusage(UsageWho::RUSAGE_THREAD) {
            self.wakeups = usage.voluntary_context_switches() as u64;
        }
        self
    }
}

fn print_stats(per_loop: &[Stats]) {
    let mut out = io::stdout().lock();
    for (id, stats) in per_loop.iter().enumerate() {
        let pinned = stats
            .cpu
            .map_or(String::new(), |cpu| format!(" (CPU {cpu})"));
        let _ = writeln!(
            out,
            "loop {id}{pinned}: {} accepted, {} wakeups, {} listener events, {} of them empty (EAGAIN)",
            stats.accepted, stats.wakeups, stats.listener_events, stats.empty
        );
    }
    let _ = out.flush();
}
// ANCHOR_END: stats

// ANCHOR: pin
/// The CPUs this process may run on (`taskset` and cgroups may narrow them).
fn allowed_cpus() -> Result<Vec<usize>> {
    let allowed = sched_getaffinity(Pid::from_raw(0)).context("sched_getaffinity")?;
    Ok((0..CpuSet::count())
        .filter(|&cpu| allowed.is_set(cpu).unwrap_or(false))
        .collect())
}

/// Pins the calling thread to `cpu`: the scheduler will run it there and
/// nowhere else (pid 0 means the calling thread, not the whole process).
fn pin_to(cpu: usize) -> nix::Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu)?;
    sched_setaffinity(Pid::from_raw(0), &set)
}
// ANCHOR_END: pin
