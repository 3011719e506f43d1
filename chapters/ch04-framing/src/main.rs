//! Chapter 4: framing. TCP delivers a stream of bytes, not messages, so we
//! give the stream a shape: each message is a 4-byte little-endian length and
//! then that many bytes. The server echoes every frame, on a loop, until the
//! client hangs up.
//!
//! Still blocking, still one client at a time: while one client is connected,
//! or merely idle, every other client waits in the listen backlog.

use std::io;
use std::net::TcpStream;
use std::process::ExitCode;
use std::thread;

use anyhow::Result;
use common::frame::{self, MAX_MSG};
use common::net::{self, AcceptError, ACCEPT_PAUSE};
use common::signals::{self, Stoppable};
use common::{args::Args, debug, info, warn};

fn main() -> ExitCode {
    common::args::run(serve)
}

// ANCHOR: main
fn serve() -> Result<()> {
    let addr = Args::from_env(
        "ch04",
        "echoes length-prefixed frames, one client at a time",
    )
    .finish()?;
    net::raise_fd_limit()?;
    signals::install_stop_handler()?;
    let listener = net::listen_and_announce(addr)?;

    while !signals::stop_requested() {
        let stream = match net::accept(&listener) {
            Ok(stream) => stream,
            // EINTR (a signal: the loop condition decides), or a client
            // that gave up while it waited in the backlog.
            Err(AcceptError::Retry(_)) => continue,
            // ANCHOR: no_memory
            // Identical in chapters 4 and 5 (book/check.sh checks it).
            // The kernel is short of memory, and the client stays queued:
            // try again in a moment, not at once in a busy loop. A stop
            // request waits out the moment, then the loop's check sees it.
            Err(e @ AcceptError::NoMemory(_)) => {
                warn!("accept: {e}");
                thread::sleep(ACCEPT_PAUSE);
                continue;
            }
            // ANCHOR_END: no_memory
            Err(e) => {
                warn!("accept: {e}");
                continue;
            }
        };
        // The whole server is busy with this one client until it leaves.
        if let Err(e) = echo(stream) {
            if !signals::is_stop(&e) {
                // A reset, a bad frame, EOF mid-frame: the client's doing.
                debug!("closing connection: {e}");
            }
        }
    }
    // The socket of a client still connected is closed as we return; bytes
    // it sent that we never read make that close a reset (chapter 6).
    info!("stopping");
    Ok(())
}
// ANCHOR_END: main

// ANCHOR: echo
/// Echoes frames until the client closes the connection or breaks the protocol.
fn echo(stream: TcpStream) -> io::Result<()> {
    // One write per reply: without this, Nagle's algorithm holds back every
    // reply sent while the one before is unacknowledged (see the chapter).
    stream.set_nodelay(true)?;
    // Ctrl-C must be able to interrupt us while we wait for this client.
    let mut stream = Stoppable(stream);
    let mut payload = [0u8; MAX_MSG];
    while let Some(len) = frame::read_frame(&mut stream, &mut payload)? {
        frame::write_frame(&mut stream, &payload[..len])?;
    }
    Ok(())
}
// ANCHOR_END: echo
