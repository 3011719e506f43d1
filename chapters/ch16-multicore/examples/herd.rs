//! The client side of chapter 16's measurements (`book/capture/herd.sh`
//! runs it against `ch16 --stats` and prints the server's counters beside).
//!
//! - `herd`: opens connections in bursts, echoing one frame on each: every
//!   arrival may wake the loops, and `--stats` tells how many woke for it.
//! - `latency`: keeps loops busy with greedy clients (`--busy`), then
//!   times new clients one at a time from `connect` to their first reply.
//!
//! ```sh
//! cargo run --release -p ch16 --example herd -- herd --addr 127.0.0.1:1234 --connections 2000 --burst 100
//! cargo run --release -p ch16 --example herd -- latency --addr 127.0.0.1:1234 --busy 1 --probes 300
//! ```

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use common::args::Args;
use common::frame::encode_frame;

fn main() -> ExitCode {
    common::args::run(measure)
}

fn measure() -> Result<()> {
    let mut args = Args::from_env(
        "herd",
        "opens connections in bursts (herd), or times new clients beside busy ones (latency)",
    )
    .not_a_server("the server to measure");
    let connections: usize = args.option("connections", "N", "herd: connections to open", 2000);
    let burst: usize = args.option("burst", "N", "herd: connections opened at once", 100);
    let busy: usize = args.option("busy", "N", "latency: greedy clients first", 1);
    let probes: usize = args.option("probes", "N", "latency: new clients timed", 300);
    let mode = args.operands("MODE", "herd or latency");
    let addr = args.finish()?;
    match mode.as_slice() {
        [mode] if mode == "herd" => herd(addr, connections, burst.max(1)),
        [mode] if mode == "latency" => latency(addr, busy, probes),
        _ => bail!("say herd or latency (see --help)"),
    }
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(payload, &mut out);
    out
}

fn connect(addr: SocketAddr) -> Result<TcpStream> {
    let stream = TcpStream::connect(addr).with_context(|| format!("connect to {addr}"))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    Ok(stream)
}

/// Sends one frame and reads the reply back.
fn echo(stream: &mut TcpStream, payload: &[u8]) -> Result<()> {
    let request = frame(payload);
    stream.write_all(&request)?;
    let mut reply = vec![0; request.len()];
    stream.read_exact(&mut reply).context("reading a reply")?;
    if reply != request {
        bail!("a reply differs from its request");
    }
    Ok(())
}

/// `bursts` of connections arrive back to back; each is answered once,
/// then the burst leaves and the next comes.
fn herd(addr: SocketAddr, connections: usize, burst: usize) -> Result<()> {
    let start = Instant::now();
    let mut opened = 0;
    while opened < connections {
        let n = burst.min(connections - opened);
        let mut clients = (0..n).map(|_| connect(addr)).collect::<Result<Vec<_>>>()?;
        for (i, client) in clients.iter_mut().enumerate() {
            echo(client, &(opened + i).to_le_bytes())?;
        }
        opened += n;
    }
    println!(
        "herd: {connections} connections in bursts of {burst}, each answered once, in {:.2} s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A client that pipelines frames of one byte as fast as the server takes
/// them, and reads the replies as fast as they come: its loop is never
/// idle. One-byte frames cost the server far more than they cost us (a
/// parse and a copy per 5 bytes, against our big writes and reads), so
/// even on a machine with few cores its loop, not this client, is the
/// bottleneck.
fn greedy(addr: SocketAddr, stop: Arc<AtomicBool>, echoed: Arc<AtomicU64>) -> Result<()> {
    let mut writer = connect(addr)?;
    let mut reader = writer.try_clone()?;
    let chunk: Vec<u8> = (0..13_000).flat_map(|_| frame(b"g")).collect();
    let sending = {
        let stop = stop.clone();
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if writer.write_all(&chunk).is_err() {
                    break;
                }
            }
        })
    };
    let mut buf = vec![0; 256 << 10];
    while !stop.load(Ordering::Relaxed) {
        match reader.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => echoed.fetch_add(n as u64, Ordering::Relaxed),
        };
    }
    // Unblocks the writer if the server stopped reading.
    let _ = reader.shutdown(std::net::Shutdown::Both);
    let _ = sending.join();
    Ok(())
}

/// Times `probes` new clients, one after another, from `connect` to their
/// first reply, while `busy` greedy clients keep their loops busy.
fn latency(addr: SocketAddr, busy: usize, probes: usize) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let echoed = Arc::new(AtomicU64::new(0));
    let greedy_clients: Vec<_> = (0..busy)
        .map(|_| {
            let (stop, echoed) = (stop.clone(), echoed.clone());
            thread::spawn(move || greedy(addr, stop, echoed))
        })
        .collect();
    // Measure only once the greedy clients are being served.
    let deadline = Instant::now() + Duration::from_secs(10);
    while busy > 0 && echoed.load(Ordering::Relaxed) < (busy as u64) << 20 {
        if Instant::now() > deadline {
            bail!("the greedy clients were not served within 10 s");
        }
        thread::yield_now();
    }
    let mut times = Vec::with_capacity(probes);
    for i in 0..probes {
        let start = Instant::now();
        let mut probe = connect(addr)?;
        echo(&mut probe, &(i as u32).to_le_bytes())?;
        times.push(start.elapsed());
    }
    let busy_bytes = echoed.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    for client in greedy_clients {
        let _ = client.join();
    }
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1e3);
    println!(
        "latency: {probes} new clients, one at a time, beside {busy} greedy ({} MiB echoed): \
         connect to first reply p50 {}, p90 {}, p99 {}, max {}",
        busy_bytes >> 20,
        ms(at(0.5)),
        ms(at(0.9)),
        ms(at(0.99)),
        ms(at(1.0)),
    );
    Ok(())
}
