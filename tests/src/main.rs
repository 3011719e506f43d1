//! `conform`: runs the conformance suite against any echo server, written in
//! any language, given the command that starts it.
//!
//! ```text
//! conform [--level L] [--only A,B] [--skip C] [--port N] [--json] [--] COMMAND...
//! ```
//!
//! See `--help`, and the book's page "Test your own server".

use std::collections::BTreeSet;
use std::io;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use conformance::cases::{Case, Level, Scope, CASES};
use conformance::harness::Target;
use conformance::runner::{self, Outcome, Report};

/// Tests an echo server against the conformance suite: starts it afresh
/// for each case, talks to it over 127.0.0.1, and reports which cases pass
/// and, for each failure, why and where the book explains it, failures
/// grouped by cause. Exit status: 0 if no selected case failed (a case that
/// does not apply is not a failure), 1 if any did, 2 if the server could
/// not be started or the arguments are wrong.
#[derive(Parser, Debug)]
#[command(
    name = "conform",
    after_help = "\
HOW THE SERVER IS STARTED
  By default the server follows this project's contract: the tool appends
  `--addr 127.0.0.1:0` (unless COMMAND already has an --addr) and reads the
  address from the `listening on HOST:PORT` line the server prints first on
  stdout. For any other server, put {port}, {host} or {addr} (HOST:PORT) in
  COMMAND: the tool picks a free port for each case, substitutes it, and
  waits until the port accepts connections. With --port N, the server
  listens on N (whether or not COMMAND says so), with the same wait.
  Environment variables: wrap with sh -c 'PORT={port} exec ./server'.

WHAT APPLIES
  Most cases hold any echo server to what every echo server must do. A few
  test echo-steps' own contract (--help, --addr, one-line errors, raising
  the open-file limit): they apply only when the tool starts the server
  with --addr, and are reported `n/a` (not applicable) with --port or a
  placeholder. So is a case whose mechanism the server does not use (an
  accept(2) error injected into a server that accepts through io_uring).

EXAMPLES
  conform --level event_loop -- target/release/ch07
  conform --level concurrent -- python3 tests/fixtures/echo_socketserver.py --addr {addr}
  conform --level event_loop -- ./epoll_echo {port}
  conform --only one_frame,empty_frame --json -- ./my-server --port {port}"
)]
struct Cli {
    /// The level to meet: hello, echo, concurrent, event_loop, scale or
    /// idle_timeout. A level includes the echo levels below it (event_loop
    /// runs echo, concurrent and event_loop); hello stands alone.
    #[arg(short, long, default_value = "echo", value_parser = parse_level)]
    level: Level,

    /// Run only these cases (comma-separated names, `name` or `level::name`).
    #[arg(long, value_delimiter = ',', value_name = "CASE,...")]
    only: Vec<String>,

    /// Leave these cases out (comma-separated, as for --only).
    #[arg(long, value_delimiter = ',', value_name = "CASE,...")]
    skip: Vec<String>,

    /// The server listens on this fixed port; the tool waits until it accepts
    /// connections instead of reading a `listening on` line.
    #[arg(long, value_name = "N")]
    port: Option<u16>,

    /// Give up on a case after this many seconds (and stop its server).
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    case_timeout: u64,

    /// Print the report as JSON, for machines.
    #[arg(long)]
    json: bool,

    /// List the selected cases (what each checks, where the book explains
    /// it) and exit without running anything.
    #[arg(long)]
    list: bool,

    /// Also print, under each failure, where the case detected it and the
    /// last lines the server wrote to stderr.
    #[arg(short, long)]
    verbose: bool,

    /// The command that starts the server, e.g. `./my-server --port {port}`.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    command: Vec<String>,
}

fn parse_level(name: &str) -> Result<Level, String> {
    Level::parse(name).ok_or_else(|| {
        let names: Vec<&str> = Level::ALL.iter().map(|l| l.name()).collect();
        format!("no level {name:?}: choose one of {}", names.join(", "))
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("conform: {message}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, String> {
    let levels = cli.level.with_lower();
    let level_names = levels
        .iter()
        .map(|l| l.name())
        .collect::<Vec<_>>()
        .join(", ");
    let cases = select(&levels, &cli.only, &cli.skip)?;
    if cli.list {
        for case in &cases {
            println!(
                "{}\n    {}\n    see {}",
                case.id(),
                case.checks,
                case.explains
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    if cli.command.is_empty() {
        return Err("no server command given: conform [OPTIONS] -- COMMAND... (see --help)".into());
    }
    let target = Target {
        command: cli.command,
        port: cli.port,
    };

    runner::quiet_panics();

    // One start before the cases: a server that cannot start fails every
    // case for the same reason, so say it once.
    if let Err(reason) = std::panic::catch_unwind(|| drop(target.start())) {
        let death = conformance::notes::take()
            .deaths
            .first()
            .map(|d| format!(" ({})", d.sentence()))
            .unwrap_or_default();
        return Err(format!(
            "cannot test `{}`: {}{death}",
            target.display(),
            runner::panic_message(reason)
        ));
    }

    let limit = Duration::from_secs(cli.case_timeout);
    let mut report = Report::new(io::stdout().lock(), cli.json, cli.verbose);
    report.start(&target, &level_names, cases.len());
    let start = Instant::now();
    let mut outcomes: Vec<Outcome> = Vec::new();
    for case in cases {
        let outcome = runner::run_bounded(case, &target, limit);
        report.case(&target, &outcome);
        outcomes.push(outcome);
    }
    report.finish(&target, &level_names, &outcomes, start.elapsed());
    Ok(if outcomes.iter().any(Outcome::failed) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The cases of `levels`, narrowed by `--only` and `--skip`. A name that
/// matches no case is an error, not an empty run.
fn select(
    levels: &[Level],
    only: &[String],
    skip: &[String],
) -> Result<Vec<&'static Case>, String> {
    let matches = |pattern: &str, case: &Case| pattern == case.name || pattern == case.id();
    for pattern in only.iter().chain(skip) {
        let known: Vec<&Case> = CASES.iter().filter(|c| matches(pattern, c)).collect();
        if known.is_empty() {
            return Err(format!(
                "no case named {pattern:?} (`conform --level scale --list` lists them all)"
            ));
        }
        if !known.iter().any(|c| levels.contains(&c.level)) {
            let theirs: BTreeSet<&str> = known.iter().map(|c| c.level.name()).collect();
            return Err(format!(
                "{pattern} is a case of the {} level, which --level does not include",
                theirs.into_iter().collect::<Vec<_>>().join(" and ")
            ));
        }
    }
    let selected = CASES
        .iter()
        .filter(|c| levels.contains(&c.level))
        .filter(|c| only.is_empty() || only.iter().any(|p| matches(p, c)));
    // What every echo server must do first, then echo-steps' own contract:
    // the report has a section for each.
    let (mut every, ours): (Vec<&Case>, Vec<&Case>) = selected
        .filter(|c| !skip.iter().any(|p| matches(p, c)))
        .partition(|c| c.scope == Scope::EveryServer);
    every.extend(ours);
    Ok(every)
}
