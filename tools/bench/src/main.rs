//! `bench`: every server of the book, and tokio, under the same loads, measured
//! in one run on the reader's own machine. See README.md for the method.
//!
//! ```text
//! cargo run --release -p bench -- [--quick] [--out DIR]
//! ```

mod plot;
mod report;
mod servers;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Parser;
use loadgen::Report;

use servers::{Server, Workspace};

#[derive(Parser)]
#[command(about = "Benchmarks every chapter server and tokio under the same loads")]
struct Args {
    /// A seconds-long smoke run: small loads, one repetition, no speed claims.
    #[arg(long)]
    quick: bool,
    /// Where results.csv, results.md and the SVG plots go [default: bench-out/ at the workspace root].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Repetitions of every point (median reported) [default: 3, 1 with --quick].
    #[arg(long)]
    reps: Option<usize>,
    /// Measured seconds per run [default: fitted to a 10-minute budget, at most 2].
    #[arg(long)]
    secs: Option<f64>,
    /// Event-loop threads of the load generator.
    #[arg(long, default_value_t = 1)]
    loadgen_threads: usize,
    /// Only these servers (labels such as ch08, tokio-ct-tuned), comma-separated;
    /// null-echo, the load generator's ceiling, runs anyway unless --no-ceiling.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Do not run null-echo to measure the load generator's ceiling.
    #[arg(long)]
    no_ceiling: bool,
}

/// One load: `conns` connections, each with `depth` frames of `size` bytes
/// in flight, plus `idle` connections that are open but silent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub conns: usize,
    pub idle: usize,
    pub depth: usize,
    pub size: usize,
    /// What this point shows, for the table.
    pub what: &'static str,
}

impl Point {
    const fn new(conns: usize, depth: usize, size: usize, what: &'static str) -> Point {
        Point {
            conns,
            idle: 0,
            depth,
            size,
            what,
        }
    }

    const fn with_idle(self, idle: usize) -> Point {
        Point { idle, ..self }
    }

    pub fn label(&self) -> String {
        let busy = format!("{}×{}×{}B", self.conns, self.depth, self.size);
        match self.idle {
            0 => busy,
            idle => format!("{busy} +{idle} idle"),
        }
    }

    /// Every connection the load opens.
    pub fn total_conns(&self) -> usize {
        self.conns + self.idle
    }

    /// Depth 1, 64 B, all busy: the points of the throughput-vs-connections sweep.
    pub fn in_sweep(&self) -> bool {
        self.depth == 1 && self.size == 64 && self.idle == 0
    }

    /// Which table of the report the point goes in.
    pub fn group(&self) -> Group {
        if self.idle > 0 {
            Group::Idle
        } else if self.in_sweep() && self.conns <= FEW_CLIENTS {
            Group::FewClients
        } else if self.in_sweep() {
            Group::ManyClients
        } else {
            Group::Batches
        }
    }

    /// A few busy connections among more and more idle ones.
    pub fn in_idle_sweep(&self) -> bool {
        self.depth == 1 && self.size == 64 && self.conns == IDLE_SWEEP_BUSY
    }
}

/// Busy connections of the idle sweep.
const IDLE_SWEEP_BUSY: usize = 10;
/// Up to this many clients at depth 1 make the first throughput table.
const FEW_CLIENTS: usize = 100;

/// The report's throughput tables: a few loads each, so that a table with a
/// row per server fits a book page without scrolling sideways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    FewClients,
    ManyClients,
    Batches,
    Idle,
}

impl Group {
    pub const ALL: [Group; 4] = [
        Group::FewClients,
        Group::ManyClients,
        Group::Batches,
        Group::Idle,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Group::FewClients => "one frame in flight per client, 64 B: latency and a few clients",
            Group::ManyClients => "one frame in flight per client, 64 B: many clients",
            Group::Batches => "pipelined and 4 KiB frames: batching and copying",
            Group::Idle => "10 busy clients among idle connections: poll's O(n)",
        }
    }
}

const FULL: &[Point] = &[
    Point::new(1, 1, 64, "latency"),
    Point::new(10, 1, 64, "sweep"),
    Point::new(100, 1, 64, "many clients"),
    Point::new(100, 16, 64, "pipelined"),
    Point::new(10, 4, 4096, "bandwidth"),
    Point::new(10, 16, 4096, "bandwidth, pipelined"),
    Point::new(1000, 1, 64, "sweep"),
    Point::new(5000, 1, 64, "sweep"),
    Point::new(10000, 1, 64, "memory (RSS)"),
    Point::new(10, 1, 64, "poll's O(n)").with_idle(990),
    Point::new(10, 1, 64, "poll's O(n)").with_idle(9990),
];

const QUICK: &[Point] = &[
    Point::new(1, 1, 64, "latency"),
    Point::new(10, 1, 64, "sweep"),
    Point::new(10, 8, 64, "pipelined"),
    Point::new(4, 2, 4096, "bandwidth"),
    Point::new(50, 1, 64, "memory (RSS)"),
    Point::new(10, 1, 64, "poll's O(n)").with_idle(90),
];

/// Timing of one run.
#[derive(Clone, Copy)]
struct Timing {
    /// Longest time for every connection to be answered once.
    connect_timeout: f64,
    warmup: f64,
    secs: f64,
    drain: f64,
}

/// Start a server, stop it: seconds per run beyond ramp-up, warm-up and window
/// (measured: about 0.05 on 2 cores).
const OVERHEAD_PER_RUN: f64 = 0.1;
/// Ramp-up time per connection, seconds (10,000 take about 1.5 s on 2 cores).
const RAMP_PER_CONN: f64 = 0.15e-3;
/// The full run must fit in about 12 minutes; leave room for the build and stalls.
const BUDGET_SECS: f64 = 560.0;
/// The shortest measured window of a full run, seconds.
const MIN_SECS: f64 = 0.3;

impl Timing {
    /// Seconds one run at `point` takes, if the server keeps up.
    fn run_secs(&self, point: &Point) -> f64 {
        OVERHEAD_PER_RUN + point.total_conns() as f64 * RAMP_PER_CONN + self.warmup + self.secs
    }

    /// Seconds one stalled run takes: the whole ramp-up, then the rest.
    fn stall_secs(&self) -> f64 {
        OVERHEAD_PER_RUN + self.connect_timeout + self.warmup + self.secs + self.drain
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

/// One run's result.
pub struct Run {
    pub server: usize,
    pub point: usize,
    pub rep: usize,
    pub outcome: Outcome,
    /// Peak resident memory of the (fresh) server during the run, kB.
    pub hwm_kb: Option<u64>,
}

fn main() -> Result<ExitCode> {
    let args = Args::parse();
    // tools/bench → the workspace root.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()?;
    let out = args.out.clone().unwrap_or_else(|| root.join("bench-out"));
    std::fs::create_dir_all(out.join("logs"))?;

    let nofile = raise_nofile_limit();
    let points = if args.quick { QUICK } else { FULL };
    let (points, too_big): (Vec<Point>, Vec<Point>) = points
        .iter()
        .partition(|p| (p.total_conns() as u64) + 64 <= nofile);
    for p in &too_big {
        eprintln!(
            "bench: skipping {}: needs more open files than the limit of {nofile}",
            p.label()
        );
    }

    let (servers, loadgen) = prepare(&root, &args.only, !args.no_ceiling)?;
    if servers.is_empty() {
        anyhow::bail!("no server to benchmark");
    }

    let reps = args.reps.unwrap_or(if args.quick { 1 } else { 3 });
    // Blocking servers run the one-client points, and stall once.
    let blocking = servers.iter().filter(|s| s.spec.blocking).count();
    let runs_at = |p: &Point| match p.total_conns() {
        1 => reps * servers.len(),
        _ => reps * (servers.len() - blocking),
    };
    let expected_runs = points.iter().map(runs_at).sum::<usize>() + blocking;
    let mut timing = if args.quick {
        Timing {
            connect_timeout: 2.0,
            warmup: 0.1,
            secs: args.secs.unwrap_or(0.2),
            drain: 0.5,
        }
    } else {
        Timing {
            connect_timeout: 5.0,
            warmup: 0.2,
            secs: 0.0,
            drain: 1.0,
        }
    };
    let estimate = |t: &Timing| {
        let runs: f64 = points
            .iter()
            .map(|p| runs_at(p) as f64 * t.run_secs(p))
            .sum();
        runs + blocking as f64 * t.stall_secs()
    };
    timing.secs = match args.secs {
        Some(secs) => secs,
        None if args.quick => timing.secs,
        // Fit the measured window to the budget, between MIN_SECS and 2 seconds.
        None => ((BUDGET_SECS - estimate(&timing)) / expected_runs as f64).clamp(MIN_SECS, 2.0),
    };
    eprintln!(
        "bench: {} servers × {} loads × {reps} reps: {expected_runs} runs (a blocking server is \
         skipped after its first stall) of {:.1} s each after a {:.1} s warm-up; estimated \
         total {:.0} s, plus {:.0} s for each run where a server cannot take on all its clients",
        servers.len(),
        points.len(),
        timing.secs,
        timing.warmup,
        estimate(&timing),
        timing.connect_timeout,
    );

    let started = Instant::now();
    let results = run_matrix(&servers, &points, reps, timing, &loadgen, &args, &out);
    let elapsed = started.elapsed().as_secs_f64();

    let summary = report::Summary::new(&servers, &points, &results, args.loadgen_threads);
    let table = summary.markdown_tables();
    println!("{table}");
    let run = report::RunInfo {
        mode: if args.quick { "quick" } else { "full" },
        only: args.only.join(","),
        machine: report::machine_description(),
        secs: timing.secs,
        reps,
        loadgen_threads: args.loadgen_threads,
        elapsed,
    };
    report::write_csv(&out.join("results.csv"), &summary)?;
    report::write_runs_csv(&out.join("runs.csv"), &servers, &points, &results)?;
    report::write_markdown(&out.join("results.md"), &table, &run)?;
    plot::throughput(&out.join("throughput.svg"), &summary)?;
    plot::connections(
        &out.join("connections.svg"),
        &summary,
        Point::in_sweep,
        "Frames/s against busy connections (depth 1, 64 B)",
        "connections open, all busy",
    )?;
    plot::connections(
        &out.join("idle.svg"),
        &summary,
        Point::in_idle_sweep,
        "Frames/s of 10 busy connections among idle ones (64 B)",
        "connections open (10 busy, the rest idle)",
    )?;
    plot::memory(&out.join("memory.svg"), &summary)?;
    eprintln!(
        "bench: {} runs in {elapsed:.0} s; wrote results.csv, results.md, runs.csv and the SVG plots to {}",
        results.len(),
        out.display()
    );

    // Wrong bytes or a broken server contract always fail the run. A stall
    // is a finding (poll cannot take on 10,000 clients in time), except in
    // the small --quick loads, where it means a server is broken.
    let problems = summary.problems(args.quick);
    if problems.is_empty() {
        eprintln!("bench: every run verified");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("bench: {} problem(s):", problems.len());
        for p in &problems {
            eprintln!("  {p}");
        }
        Ok(ExitCode::FAILURE)
    }
}

/// Finds which servers exist, builds them and the load generator; returns
/// the servers that built and the load generator's binary.
fn prepare(root: &Path, only: &[String], ceiling: bool) -> Result<(Vec<Server>, PathBuf)> {
    let ws = Workspace::load(root)?;
    let specs = servers::discover(&ws);
    for name in only {
        if !specs.iter().any(|s| &s.label == name) {
            let known: Vec<&str> = specs.iter().map(|s| s.label.as_str()).collect();
            eprintln!("bench: no server {name} (yet); known: {}", known.join(", "));
        }
    }
    let wanted: Vec<_> = specs
        .into_iter()
        .filter(|s| {
            if s.kind == servers::Kind::Ceiling {
                ceiling
            } else if only.is_empty() {
                !s.optional
            } else {
                only.contains(&s.label)
            }
        })
        .collect();
    let mut packages = vec!["loadgen".to_string()];
    for spec in &wanted {
        if !ws.has(&spec.package) {
            eprintln!(
                "bench: skipping {}: package {} does not exist (yet)",
                spec.label, spec.package
            );
        } else if !packages.contains(&spec.package) {
            packages.push(spec.package.clone());
        }
    }
    eprintln!("bench: building {} (release)…", packages.join(", "));
    let built = servers::build(root, &packages);
    if !built.iter().any(|p| p == "loadgen") {
        anyhow::bail!("the load generator does not build");
    }
    let servers = wanted
        .into_iter()
        .filter(|s| built.contains(&s.package))
        .map(|spec| Server {
            binary: ws.binary(&spec.bin),
            spec,
        })
        .collect();
    Ok((servers, ws.binary("loadgen")))
}

/// Runs every point on every server, `reps` times. Servers alternate within
/// each repetition, so slow drift of the machine (heat, other load) spreads
/// over all of them instead of favouring whoever ran first.
fn run_matrix(
    servers: &[Server],
    points: &[Point],
    reps: usize,
    timing: Timing,
    loadgen: &Path,
    args: &Args,
    out: &Path,
) -> Vec<Run> {
    let total = reps * points.len() * servers.len();
    let mut results = Vec::with_capacity(total);
    // Blocking servers that stalled once with several clients: not run again
    // with several clients, the table shows them as stalling.
    let mut stalled = vec![false; servers.len()];
    // Stalls per (point, server): once they are half the repetitions the
    // cell reads "stalls" whatever the rest do, so the rest are skipped.
    let mut stalls = vec![vec![0usize; servers.len()]; points.len()];
    for rep in 0..reps {
        for (pi, point) in points.iter().enumerate() {
            for (si, server) in servers.iter().enumerate() {
                let n = results.len() + 1;
                let several = point.total_conns() > 1;
                let skip = (stalled[si] && several) || 2 * stalls[pi][si] >= reps;
                let (outcome, hwm_kb) = if skip {
                    (Outcome::Stalled(None), None)
                } else {
                    run_one(server, point, timing, loadgen, args.loadgen_threads, out)
                };
                if matches!(outcome, Outcome::Stalled(_)) {
                    stalls[pi][si] += 1;
                    if server.spec.blocking && several {
                        stalled[si] = true;
                    }
                }
                eprintln!(
                    "[{n:>3}/{total}] rep {}/{reps} {:>16} {:>14}  {}",
                    rep + 1,
                    point.label(),
                    server.spec.label,
                    match &outcome {
                        Outcome::Ok(r) => format!(
                            "{} frames/s, loadgen {:.2} cores",
                            report::si(r.frames_per_sec),
                            r.loadgen_cpu
                        ),
                        Outcome::Stalled(_) if skip =>
                            "stalls (skipped after earlier stalls)".into(),
                        Outcome::Stalled(Some(r)) => format!("stalls: {}", report::stall_detail(r)),
                        Outcome::Stalled(None) => "stalls".into(),
                        Outcome::Failed(e) => format!("FAILED: {e}"),
                    }
                );
                results.push(Run {
                    server: si,
                    point: pi,
                    rep,
                    outcome,
                    hwm_kb,
                });
            }
        }
    }
    results
}

/// Starts a fresh server (so its peak memory belongs to this run), loads it, stops it.
fn run_one(
    server: &Server,
    point: &Point,
    t: Timing,
    loadgen: &Path,
    threads: usize,
    out: &Path,
) -> (Outcome, Option<u64>) {
    let log = out.join("logs").join(format!("{}.log", server.spec.label));
    let running = match servers::start(server, &log) {
        Ok(r) => r,
        Err(e) => return (Outcome::Failed(format!("start: {e:#}")), None),
    };
    let args: Vec<String> = [
        ("--addr", running.addr.to_string()),
        ("--conns", point.conns.to_string()),
        ("--idle", point.idle.to_string()),
        ("--depth", point.depth.to_string()),
        ("--connect-timeout", t.connect_timeout.to_string()),
        ("--size", point.size.to_string()),
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
    // The load generator bounds itself; this outer bound is for a broken one.
    let timeout = Duration::from_secs_f64(t.connect_timeout + t.warmup + t.secs + t.drain + 10.0);
    let result = servers::run_loadgen(loadgen, &args, timeout);
    let hwm = running.peak_rss_kb();
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
    (outcome, hwm)
}

/// Raises the soft limit on open files to the hard limit (10,000 connections
/// need 10,000 descriptors in the server and as many in the load generator,
/// both inherit it from us) and returns the limit now in force.
fn raise_nofile_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(e) => {
                eprintln!("bench: could not raise the open-files limit from {soft} to {hard}: {e}");
                soft
            }
        },
        Ok((soft, _)) => soft,
        Err(_) => 1024,
    }
}
