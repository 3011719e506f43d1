//! A client for every framed chapter (ch04 onwards).
//!
//! ```text
//! client [--addr HOST:PORT] [--pipeline] MESSAGE...
//! ```
//!
//! Sends each message as a frame and prints each reply. By default it waits
//! for a reply before sending the next message; with `--pipeline` it sends
//! every request in a single write first, then reads all the replies. With no
//! messages it reads them from stdin, one per line.

use std::io::{self, BufRead, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use common::args::{Args, DEFAULT_ADDR};
use common::frame::{encode_frame, read_frame, write_frame, MAX_MSG};

fn main() -> ExitCode {
    common::args::run(talk)
}

fn talk() -> Result<()> {
    let mut args = Args::from_env(
        "client",
        "sends each MESSAGE as a frame and prints each reply",
    )
    .not_a_server("the server to talk to");
    let pipeline = args.flag(
        "pipeline",
        "send every message in one write before reading any reply",
    );
    let mut messages = args.operands(
        "MESSAGE",
        "the messages; without any, one per line from stdin",
    );
    let addr = args.finish()?;
    if messages.is_empty() {
        messages = io::stdin().lock().lines().collect::<io::Result<_>>()?;
    }
    if let Some(long) = messages.iter().find(|m| m.len() > MAX_MSG) {
        bail!(
            "a message of {} bytes is over the {MAX_MSG}-byte limit",
            long.len()
        );
    }

    let mut stream = connect(addr)?;
    let mut out = io::stdout().lock();
    let mut reply = [0u8; MAX_MSG];
    let mut print_reply = |stream: &mut TcpStream| -> Result<()> {
        let len = read_frame(stream, &mut reply)?.context("the server closed the connection")?;
        writeln!(out, "{}", String::from_utf8_lossy(&reply[..len]))?;
        Ok(())
    };
    if pipeline {
        let mut burst = Vec::new();
        for message in &messages {
            encode_frame(message.as_bytes(), &mut burst);
        }
        stream.write_all(&burst)?;
        for _ in &messages {
            print_reply(&mut stream)?;
        }
    } else {
        for message in &messages {
            write_frame(&mut stream, message.as_bytes())?;
            print_reply(&mut stream)?;
        }
    }
    Ok(())
}

/// Connects, and where nothing listens says what to do about it: the first
/// thing a newcomer meets who runs the client before a server.
fn connect(addr: SocketAddr) -> Result<TcpStream> {
    TcpStream::connect(addr).or_else(|e| {
        if e.kind() != io::ErrorKind::ConnectionRefused {
            return Err(e).context(format!("connect to {addr}"));
        }
        let (just, cargo) = if addr.to_string() == DEFAULT_ADDR {
            ("just run ch06".to_string(), "cargo run -p ch06".to_string())
        } else {
            (
                format!("just run ch06 --addr {addr}"),
                format!("cargo run -p ch06 -- --addr {addr}"),
            )
        };
        bail!(
            "no server listens on {addr} (connection refused): \
             start one first, in another terminal: {just} (or {cargo})"
        )
    })
}
