//! One run: a fresh server, the load generator against it, the server
//! stopped; what every phase of the benchmark is made of.

use std::path::Path;
use std::time::Duration;

use loadgen::Report;

use crate::servers::{self, Server};

/// What the load generator does in one run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Load {
    pub conns: usize,
    pub idle: usize,
    /// Closed loop: frames in flight per connection.
    pub depth: usize,
    pub size: usize,
    /// Open loop: frames per second over all connections, instead of `depth`.
    pub rate: Option<f64>,
}

impl Load {
    pub const fn closed(conns: usize, depth: usize, size: usize) -> Load {
        Load {
            conns,
            idle: 0,
            depth,
            size,
            rate: None,
        }
    }

    /// "100×16×64B"; open loop: "100×64B at 25.0k/s".
    pub fn label(&self) -> String {
        match self.rate {
            None => format!("{}×{}×{}B", self.conns, self.depth, self.size),
            Some(rate) => format!(
                "{}×{}B at {}/s",
                self.conns,
                self.size,
                crate::report::si(rate)
            ),
        }
    }
}

/// Timing of one run, in seconds.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Longest time for every connection to be answered once.
    pub connect_timeout: f64,
    pub warmup: f64,
    pub secs: f64,
    pub drain: f64,
}

/// Which CPU the server and the load generator each run on, when pinned.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pin {
    pub server: usize,
    pub loadgen: usize,
}

impl Pin {
    /// The server on the last CPU, the load generator on the first; none on one CPU.
    pub fn apart() -> Option<Pin> {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        (n >= 2).then_some(Pin {
            server: n - 1,
            loadgen: 0,
        })
    }
}

/// How one run ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    Ok(Box<Report>),
    /// The server did not serve every connection (expected of a blocking server).
    Stalled(Option<Box<Report>>),
    /// Wrong bytes, lost frames, a crash, or a broken start/stop contract.
    Failed(String),
}

impl Outcome {
    pub fn report(&self) -> Option<&Report> {
        match self {
            Outcome::Ok(r) => Some(r),
            _ => None,
        }
    }

    /// One line for the progress log.
    pub fn progress(&self) -> String {
        match self {
            Outcome::Ok(r) => format!(
                "{} frames/s, loadgen {:.2} cores",
                crate::report::si(r.frames_per_sec),
                r.loadgen_cpu
            ),
            Outcome::Stalled(Some(r)) => format!("stalls: {}", crate::report::stall_detail(r)),
            Outcome::Stalled(None) => "stalls".into(),
            Outcome::Failed(e) => format!("FAILED: {e}"),
        }
    }
}

/// What one run measured.
pub struct Measured {
    pub outcome: Outcome,
    /// Peak resident memory of the (fresh) server during the run, kB.
    pub hwm_kb: Option<u64>,
    /// The server's CPU time (utime + stime) from the moment it was
    /// listening to the end of the load, in seconds: "over the whole load",
    /// ramp-up, warm-up and drain included, against `Report::frames_total`.
    pub whole_cpu: Option<f64>,
}

impl Measured {
    /// Server CPU per echoed frame over the whole load, ns.
    pub fn whole_ns_per_frame(&self) -> Option<f64> {
        let r = self.outcome.report()?;
        let cpu = self.whole_cpu?;
        (r.frames_total > 0).then(|| cpu * 1e9 / r.frames_total as f64)
    }
}

/// Starts a fresh server (so its peak memory belongs to this run), loads it, stops it.
pub fn measure(
    server: &Server,
    load: &Load,
    t: &Timing,
    loadgen: &Path,
    threads: usize,
    log_dir: &Path,
    pin: Option<Pin>,
) -> Measured {
    let log = log_dir.join(format!("{}.log", server.spec.label));
    let running = match servers::start(server, &log, pin.map(|p| p.server)) {
        Ok(r) => r,
        Err(e) => {
            return Measured {
                outcome: Outcome::Failed(format!("start: {e:#}")),
                hwm_kb: None,
                whole_cpu: None,
            }
        }
    };
    let mut args: Vec<String> = [
        ("--addr", running.addr.to_string()),
        ("--conns", load.conns.to_string()),
        ("--idle", load.idle.to_string()),
        ("--connect-timeout", t.connect_timeout.to_string()),
        ("--size", load.size.to_string()),
        ("--warmup", t.warmup.to_string()),
        ("--secs", t.secs.to_string()),
        ("--drain", t.drain.to_string()),
        ("--threads", threads.to_string()),
        ("--server-pid", running.pid().to_string()),
    ]
    .into_iter()
    .flat_map(|(k, v)| [k.to_string(), v])
    .chain(["--json".to_string()])
    .collect();
    match load.rate {
        Some(rate) => args.extend(["--rate".to_string(), rate.to_string()]),
        None => args.extend(["--depth".to_string(), load.depth.to_string()]),
    }
    // The load generator bounds itself; this outer bound is for a broken one.
    let timeout = Duration::from_secs_f64(t.connect_timeout + t.warmup + t.secs + t.drain + 10.0);
    let cpu_before = loadgen::process_stat_time(running.pid());
    let result = servers::run_loadgen(loadgen, &args, timeout, pin.map(|p| p.loadgen));
    let cpu_after = loadgen::process_stat_time(running.pid());
    let hwm_kb = running.peak_rss_kb();
    let stopped = running.stop();
    let outcome = match result {
        Err(e) => Outcome::Failed(format!("{e:#}")),
        Ok((code, stdout, stderr)) => match serde_json::from_str::<Report>(stdout.trim()) {
            Err(_) => Outcome::Failed(format!("loadgen exited with {code:?}: {}", stderr.trim())),
            Ok(r) => match code {
                Some(0) => Outcome::Ok(Box::new(r)),
                Some(2) => Outcome::Stalled(Some(Box::new(r))),
                _ => Outcome::Failed(r.summary().replace('\n', "; ")),
            },
        },
    };
    let outcome = match (outcome, stopped) {
        (Outcome::Failed(e), _) => Outcome::Failed(e),
        (_, Err(e)) => Outcome::Failed(format!("stop: {e:#}")),
        (o, Ok(())) => o,
    };
    let whole_cpu = cpu_before
        .zip(cpu_after)
        .and_then(|(b, a)| a.checked_sub(b))
        .map(|d| d.as_secs_f64());
    Measured {
        outcome,
        hwm_kb,
        whole_cpu,
    }
}

/// `items` in an order that starts one further along in each round, so
/// that no server always runs first (or right after a given other).
pub fn rotated<T: Copy>(items: &[T], round: usize) -> Vec<T> {
    let n = items.len().max(1);
    (0..items.len()).map(|i| items[(i + round) % n]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_round_starts_one_further_along() {
        assert_eq!(rotated(&[1, 2, 3], 0), [1, 2, 3]);
        assert_eq!(rotated(&[1, 2, 3], 1), [2, 3, 1]);
        assert_eq!(rotated(&[1, 2, 3], 5), [3, 1, 2]);
        assert!(rotated::<u8>(&[], 3).is_empty());
    }

    #[test]
    fn loads_are_labelled_by_their_shape() {
        assert_eq!(Load::closed(100, 16, 64).label(), "100×16×64B");
        let open = Load {
            rate: Some(25_000.0),
            ..Load::closed(100, 1, 64)
        };
        assert_eq!(open.label(), "100×64B at 25.0k/s");
    }
}
