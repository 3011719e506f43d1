//! `bench`: every server of the book, and tokio, under the same loads, measured
//! in one run on the reader's own machine, in three phases: the matrix (every
//! server, every load: the overview), the targets (a few ratios, rounds added
//! until their 95% intervals are narrow) and latency under a fixed offered
//! load (open loop). See README.md for the method.
//!
//! ```text
//! cargo run --release -p bench -- [--quick] [--out DIR] [--phases matrix,targets,latency]
//! ```

mod latency;
mod plot;
mod report;
mod runner;
mod servers;
mod stats;
mod targets;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use clap::Parser;

pub use runner::{Load, Measured, Outcome, Pin, Timing};
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
    /// Matrix: repetitions of every point (median reported) [default: 3, 1 with --quick].
    #[arg(long)]
    reps: Option<usize>,
    /// Matrix: measured seconds per run [default: fitted to a 9-minute budget, at most 2].
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
    /// Which parts to run, comma-separated [default: all: matrix,targets,latency].
    #[arg(long, value_enum, value_delimiter = ',')]
    phases: Vec<Phase>,
    /// The targets' and latency's least number of rounds [default: 6, the
    /// fewest with a 95% interval; 1 with --quick].
    #[arg(long)]
    min_rounds: Option<usize>,
    /// The targets' and latency's most rounds, if the intervals are not
    /// within ±3% before [default: 20 for the targets, 10 for latency; 1 with --quick].
    #[arg(long)]
    max_rounds: Option<usize>,
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

    /// The load generator's part of it.
    pub fn load(&self) -> Load {
        Load {
            idle: self.idle,
            ..Load::closed(self.conns, self.depth, self.size)
        }
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

/// A smoke run: one load of each kind, enough to run every server through
/// one and several clients, pipelining, 4 KiB frames and idle connections.
const QUICK: &[Point] = &[
    Point::new(1, 1, 64, "latency"),
    Point::new(10, 8, 64, "pipelined"),
    Point::new(4, 2, 4096, "bandwidth"),
    Point::new(10, 1, 64, "poll's O(n)").with_idle(90),
];

/// Start a server, stop it: seconds per run beyond ramp-up, warm-up and window
/// (measured: about 0.05 on 2 cores).
const OVERHEAD_PER_RUN: f64 = 0.1;
/// Ramp-up time per connection, seconds (10,000 take about 1.5 s on 2 cores).
const RAMP_PER_CONN: f64 = 0.15e-3;
/// The matrix must fit in about 10 minutes; leave room for stalls.
const BUDGET_SECS: f64 = 540.0;
/// The shortest measured window of a full run, seconds.
const MIN_SECS: f64 = 0.3;

/// Seconds one run at `point` takes, if the server keeps up.
fn run_secs(t: &Timing, point: &Point) -> f64 {
    OVERHEAD_PER_RUN + point.total_conns() as f64 * RAMP_PER_CONN + t.warmup + t.secs
}

/// Seconds one stalled run takes: the whole ramp-up, then the rest.
fn stall_secs(t: &Timing) -> f64 {
    OVERHEAD_PER_RUN + t.connect_timeout + t.warmup + t.secs + t.drain
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

/// The parts of a benchmark run, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Phase {
    /// Every server under every load: the overview (results.md).
    Matrix,
    /// The ratios the project set as targets, rounds added until settled (targets.md).
    Targets,
    /// Open-loop latency against offered load (latency.md, latency.svg).
    Latency,
}

/// What the phases share.
pub struct Context<'a> {
    pub quick: bool,
    pub servers: &'a [Server],
    pub loadgen: &'a Path,
    pub loadgen_threads: usize,
    pub log_dir: PathBuf,
    /// Override of the phases' round counts.
    pub min_rounds: Option<usize>,
    pub max_rounds: Option<usize>,
}

impl Context<'_> {
    /// The server labelled `label`, if it is part of this run.
    pub fn server(&self, label: &str) -> Option<&Server> {
        self.servers.iter().find(|s| s.spec.label == label)
    }

    /// Rounds for a phase: its own defaults unless given on the command line.
    pub fn rounds(&self, min: usize, max: usize) -> stats::Rounds {
        let (min, max) = if self.quick { (1, 1) } else { (min, max) };
        let min = self.min_rounds.unwrap_or(min).max(1);
        stats::Rounds {
            min,
            max: self.max_rounds.unwrap_or(max).max(min),
            tolerance: stats::TOLERANCE,
        }
    }

    pub fn measure(&self, server: &Server, load: &Load, t: &Timing, pin: Option<Pin>) -> Measured {
        runner::measure(
            server,
            load,
            t,
            self.loadgen,
            self.loadgen_threads,
            &self.log_dir,
            pin,
        )
    }
}

fn main() -> Result<ExitCode> {
    let args = Args::parse();
    // tools/bench → the workspace root.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()?;
    let out = args.out.clone().unwrap_or_else(|| root.join("bench-out"));
    std::fs::create_dir_all(out.join("logs"))?;
    let phases = if args.phases.is_empty() {
        vec![Phase::Matrix, Phase::Targets, Phase::Latency]
    } else {
        args.phases.clone()
    };

    let nofile = raise_nofile_limit();
    let mut wanted: Vec<String> = Vec::new();
    if phases.contains(&Phase::Targets) {
        wanted.extend(targets::SERVERS.iter().map(|s| s.to_string()));
    }
    if phases.contains(&Phase::Latency) {
        wanted.extend(latency::SERVERS.iter().map(|s| s.to_string()));
        wanted.extend(latency::CALIBRATION.iter().map(|s| s.to_string()));
    }
    let matrix = phases.contains(&Phase::Matrix);
    let (all_servers, loadgen) = prepare(&root, &args.only, matrix, !args.no_ceiling, &wanted)?;
    if all_servers.is_empty() {
        anyhow::bail!("no server to benchmark");
    }
    let machine = report::machine_description();
    let mode = if args.quick { "quick" } else { "full" };
    let context = Context {
        quick: args.quick,
        servers: &all_servers,
        loadgen: &loadgen,
        loadgen_threads: args.loadgen_threads,
        log_dir: out.join("logs"),
        min_rounds: args.min_rounds,
        max_rounds: args.max_rounds,
    };
    let started = Instant::now();
    let mut problems = Vec::new();

    if matrix {
        let servers: Vec<&Server> = all_servers.iter().filter(|s| s.in_matrix).collect();
        problems.extend(run_matrix_phase(
            &args, &servers, &loadgen, nofile, &machine, &out,
        )?);
    }
    if phases.contains(&Phase::Targets) {
        let t = Instant::now();
        let result = targets::run(&context);
        let info = report::RunInfo::new(mode, &args.only, &machine, t.elapsed().as_secs_f64());
        result.write(&out, &info)?;
        problems.extend(result.failures.iter().cloned());
    }
    if phases.contains(&Phase::Latency) {
        let t = Instant::now();
        let result = latency::run(&context);
        let info = report::RunInfo::new(mode, &args.only, &machine, t.elapsed().as_secs_f64());
        result.write(&out, &info)?;
        problems.extend(result.failures.iter().cloned());
    }
    eprintln!(
        "bench: done in {:.0} s; results in {}",
        started.elapsed().as_secs_f64(),
        out.display()
    );

    // Wrong bytes or a broken server contract always fail the run. A stall
    // is a finding (poll cannot take on 10,000 clients in time), except in
    // the small --quick loads, where it means a server is broken.
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

/// The overview: every server at every load of [`FULL`] (or [`QUICK`]),
/// `reps` times; writes results.md, the CSVs and the plots. Returns the problems.
fn run_matrix_phase(
    args: &Args,
    servers: &[&Server],
    loadgen: &Path,
    nofile: u64,
    machine: &str,
    out: &Path,
) -> Result<Vec<String>> {
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
    if servers.is_empty() {
        eprintln!("bench: no server for the matrix");
        return Ok(Vec::new());
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
            connect_timeout: 1.0,
            warmup: 0.05,
            secs: args.secs.unwrap_or(0.1),
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
            .map(|p| runs_at(p) as f64 * run_secs(t, p))
            .sum();
        runs + blocking as f64 * stall_secs(t)
    };
    timing.secs = match args.secs {
        Some(secs) => secs,
        None if args.quick => timing.secs,
        // Fit the measured window to the budget, between MIN_SECS and 2 seconds.
        None => ((BUDGET_SECS - estimate(&timing)) / expected_runs as f64).clamp(MIN_SECS, 2.0),
    };
    eprintln!(
        "bench: matrix: {} servers × {} loads × {reps} reps: {expected_runs} runs (a blocking \
         server is skipped after its first stall) of {:.1} s each after a {:.1} s warm-up; \
         estimated {:.0} s, plus {:.0} s for each run where a server cannot take on all its clients",
        servers.len(),
        points.len(),
        timing.secs,
        timing.warmup,
        estimate(&timing),
        timing.connect_timeout,
    );

    let started = Instant::now();
    let log_dir = out.join("logs");
    let results = run_matrix(servers, &points, reps, timing, loadgen, args, &log_dir);
    let elapsed = started.elapsed().as_secs_f64();

    let summary = report::Summary::new(servers, &points, &results, args.loadgen_threads);
    let table = summary.markdown_tables();
    println!("{table}");
    let run = report::RunInfo {
        mode: if args.quick { "quick" } else { "full" },
        only: args.only.join(","),
        machine: machine.to_string(),
        secs: timing.secs,
        reps,
        loadgen_threads: args.loadgen_threads,
        elapsed,
    };
    report::write_csv(&out.join("results.csv"), &summary)?;
    report::write_runs_csv(&out.join("runs.csv"), servers, &points, &results)?;
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
        "bench: matrix: {} runs in {elapsed:.0} s; wrote results.csv, results.md, runs.csv and the SVG plots",
        results.len(),
    );
    Ok(summary.problems(args.quick))
}

/// Finds which servers exist, builds them and the load generator; returns
/// the servers that built and the load generator's binary. The matrix
/// takes every server (or those `--only` names); the other phases add
/// theirs (`phase_servers`), also filtered by `--only` if it is given.
fn prepare(
    root: &Path,
    only: &[String],
    matrix: bool,
    ceiling: bool,
    phase_servers: &[String],
) -> Result<(Vec<Server>, PathBuf)> {
    let ws = Workspace::load(root)?;
    let specs = servers::discover(&ws);
    for name in only {
        if !specs.iter().any(|s| &s.label == name) {
            let known: Vec<&str> = specs.iter().map(|s| s.label.as_str()).collect();
            eprintln!("bench: no server {name} (yet); known: {}", known.join(", "));
        }
    }
    let in_matrix = |s: &servers::Spec| {
        matrix
            && if s.kind == servers::Kind::Ceiling {
                ceiling
            } else if only.is_empty() {
                !s.optional
            } else {
                only.contains(&s.label)
            }
    };
    let in_phase = |s: &servers::Spec| {
        phase_servers.contains(&s.label) && (only.is_empty() || only.contains(&s.label))
    };
    let wanted: Vec<(servers::Spec, bool)> = specs
        .into_iter()
        .filter(|s| in_matrix(s) || in_phase(s))
        .map(|s| {
            let m = in_matrix(&s);
            (s, m)
        })
        .collect();
    let mut packages = vec!["loadgen".to_string()];
    for (spec, _) in &wanted {
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
        .filter(|(s, _)| built.contains(&s.package))
        .map(|(spec, in_matrix)| Server {
            binary: ws.binary(&spec.bin),
            spec,
            in_matrix,
        })
        .collect();
    Ok((servers, ws.binary("loadgen")))
}

/// Runs every point on every server, `reps` times. Servers alternate within
/// each repetition, starting one further along each time, so slow drift of
/// the machine (heat, other load) spreads over all of them instead of
/// favouring whoever ran first.
fn run_matrix(
    servers: &[&Server],
    points: &[Point],
    reps: usize,
    timing: Timing,
    loadgen: &Path,
    args: &Args,
    log_dir: &Path,
) -> Vec<Run> {
    let total = reps * points.len() * servers.len();
    let mut results = Vec::with_capacity(total);
    // Blocking servers that stalled once with several clients: not run again
    // with several clients, the table shows them as stalling.
    let mut stalled = vec![false; servers.len()];
    // Stalls per (point, server): once they are half the repetitions the
    // cell reads "stalls" whatever the rest do, so the rest are skipped.
    let mut stalls = vec![vec![0usize; servers.len()]; points.len()];
    let order: Vec<usize> = (0..servers.len()).collect();
    for rep in 0..reps {
        for (pi, point) in points.iter().enumerate() {
            for si in runner::rotated(&order, rep) {
                let server = servers[si];
                let n = results.len() + 1;
                let several = point.total_conns() > 1;
                let skip = (stalled[si] && several) || 2 * stalls[pi][si] >= reps;
                let (outcome, hwm_kb) = if skip {
                    (Outcome::Stalled(None), None)
                } else {
                    let m = runner::measure(
                        server,
                        &point.load(),
                        &timing,
                        loadgen,
                        args.loadgen_threads,
                        log_dir,
                        None,
                    );
                    (m.outcome, m.hwm_kb)
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
                        Outcome::Stalled(_) if skip =>
                            "stalls (skipped after earlier stalls)".into(),
                        o => o.progress(),
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
