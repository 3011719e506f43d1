//! Chapter 4: framing. TCP delivers a stream of bytes, not messages, so we
//! give the stream a shape: each message is a 4-byte little-endian length and
//! then that many bytes. The server echoes every frame, on a loop, until the
//! client hangs up.
//!
//! Still blocking, still one client at a time: while one client is connected,
//! or merely idle, every other client waits in the listen backlog.

use std::io::{self, ErrorKind};
use std::net::TcpStream;

use anyhow::Result;
use common::frame::{self, MAX_MSG};
use common::{args::Args, net, signals};

// ANCHOR: main
fn main() -> Result<()> {
    let addr = Args::from_env()?.finish()?;
    signals::install_stop_handler()?;
    let listener = net::listen_and_announce(addr)?;

    while !signals::stop_requested() {
        let stream = match net::accept(&listener) {
            Ok(stream) => stream,
            // A signal interrupted the wait; the loop condition decides.
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                eprintln!("accept: {e}");
                continue;
            }
        };
        // The whole server is busy with this one client until it leaves.
        match serve(stream) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {} // stopping
            Err(e) => eprintln!("closing connection: {e}"),
        }
    }
    eprintln!("stopping");
    Ok(())
}
// ANCHOR_END: main

// ANCHOR: serve
/// Echoes frames until the client closes the connection or breaks the protocol.
fn serve(mut stream: TcpStream) -> io::Result<()> {
    let mut payload = [0u8; MAX_MSG];
    while let Some(len) = frame::read_frame(&mut stream, &mut payload)? {
        frame::write_frame(&mut stream, &payload[..len])?;
    }
    Ok(())
}
// ANCHOR_END: serve
