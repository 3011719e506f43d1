//! `loadgen`: drives an echo server with pipelined, verified frames and
//! reports throughput and latency. See the library docs for the design.
//!
//! Exit status: 0 if every connection was served and every reply verified,
//! 1 if any reply was wrong or lost, 2 if the server did not serve every
//! connection (stalled, or could not connect).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Parser;
use loadgen::{Config, Verdict};

#[derive(Parser)]
#[command(about = "Load generator for the length-prefixed echo protocol")]
struct Args {
    /// The server to load.
    #[arg(long, default_value = "127.0.0.1:1234")]
    addr: SocketAddr,
    /// Connections to open.
    #[arg(long, default_value_t = 1)]
    conns: usize,
    /// Extra connections that are answered once, then stay silent.
    #[arg(long, default_value_t = 0)]
    idle: usize,
    /// Frames in flight per connection (1 = strict request/response); closed loop only.
    #[arg(long, default_value_t = 1)]
    depth: usize,
    /// Open loop: send this many frames per second over all connections, on
    /// a fixed schedule whatever the server does; latency counts from when
    /// each frame was due.
    #[arg(long, conflicts_with = "depth")]
    rate: Option<f64>,
    /// Payload bytes per frame (at most 4096).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Length of the measured window, in seconds.
    #[arg(long, default_value_t = 2.0)]
    secs: f64,
    /// Longest ramp-up, in seconds: connections not answered by then count as stalled.
    #[arg(long, default_value_t = 5.0)]
    connect_timeout: f64,
    /// Seconds of load after the ramp-up and before the window, not measured.
    #[arg(long, default_value_t = 0.5)]
    warmup: f64,
    /// Seconds to wait for outstanding replies after the window.
    #[arg(long, default_value_t = 1.0)]
    drain: f64,
    /// Event-loop threads; connections are spread over them.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Print the report as one JSON object instead of a human line.
    #[arg(long)]
    json: bool,
    /// The server's pid: also report the CPU it uses during the window.
    #[arg(long)]
    server_pid: Option<u32>,
}

fn main() -> Result<ExitCode> {
    let args = Args::parse();
    let secs = |s: f64| Duration::try_from_secs_f64(s);
    let config = Config {
        addr: args.addr,
        conns: args.conns,
        idle: args.idle,
        depth: args.depth,
        size: args.size,
        connect_timeout: secs(args.connect_timeout)?,
        warmup: secs(args.warmup)?,
        secs: secs(args.secs)?,
        drain: secs(args.drain)?,
        threads: args.threads,
        server_pid: args.server_pid,
        rate: args.rate,
    };
    let report = loadgen::run(&config)?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", report.summary());
    }
    Ok(match report.verdict() {
        Verdict::Ok => ExitCode::SUCCESS,
        v => ExitCode::from(v as u8),
    })
}
