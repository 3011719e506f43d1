//! The echo server with tokio, in two variants, one task per connection:
//!
//! - `idiomatic`: what a Rust programmer would write, buffered reads and
//!   writes and nothing clever. Still a *good* server, not a strawman:
//!   replies go into a `BufWriter` and are flushed only when no further
//!   complete frame is already buffered, so a client that pipelines gets its
//!   replies batched into few `write`s.
//! - `tuned`: the strongest tokio reference we know how to write. It reads
//!   straight into a 64 KiB buffer, answers every complete frame in it with
//!   one `write`, and parses no header twice: what ch08 does, on tokio.
//!
//! The benchmark holds the chapters against the better of the two.
//!
//! Same contract as the chapter servers: `--addr HOST:PORT`, then
//! `listening on HOST:PORT` on stdout; SIGINT or SIGTERM exits with status 0;
//! a frame announcing more than 4096 bytes closes that connection.

use std::io::{ErrorKind, Write};
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use common::frame::{parse_frame, Parse, MAX_FRAME, MAX_MSG};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::signal::unix::{signal, SignalKind};

#[derive(Parser)]
#[command(about = "tokio echo servers for the length-prefixed framing")]
struct Args {
    /// Where to listen; port 0 picks a free port.
    #[arg(long, default_value = common::args::DEFAULT_ADDR)]
    addr: SocketAddr,
    /// Which tokio scheduler runs the tasks.
    #[arg(long, value_enum, default_value_t = Runtime::MultiThread)]
    runtime: Runtime,
    /// How each connection is served.
    #[arg(long, value_enum, default_value_t = Variant::Idiomatic)]
    variant: Variant,
}

#[derive(Clone, Copy, ValueEnum)]
enum Variant {
    /// `BufReader` and `BufWriter`, one frame at a time.
    Idiomatic,
    /// One large read, every complete frame answered with one write.
    Tuned,
}

#[derive(Clone, Copy, ValueEnum)]
enum Runtime {
    /// Everything on the main thread: comparable to a single epoll loop.
    CurrentThread,
    /// A work-stealing pool with one worker per core.
    MultiThread,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut builder = match args.runtime {
        Runtime::CurrentThread => tokio::runtime::Builder::new_current_thread(),
        Runtime::MultiThread => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = builder.enable_all().build()?;
    runtime.block_on(serve(args.addr, args.variant))
    // Dropping the runtime here cancels the connection tasks still running.
}

async fn serve(addr: SocketAddr, variant: Variant) -> Result<()> {
    let listener = listen(addr)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {}", listener.local_addr()?)?;
    out.flush()?;
    drop(out);

    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(async move {
                        let served = match variant {
                            Variant::Idiomatic => echo(stream).await,
                            Variant::Tuned => echo_tuned(stream).await,
                        };
                        if let Err(e) = served {
                            // A peer that resets is its business, not an error worth a line.
                            if e.kind() != ErrorKind::ConnectionReset {
                                eprintln!("connection: {e}");
                            }
                        }
                    });
                }
                Err(e) => {
                    // Typically EMFILE: back off briefly instead of spinning on it.
                    eprintln!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
    Ok(())
}

/// `TcpListener::bind` would do, but it asks for a backlog of 1024; the
/// chapters ask for the kernel's maximum, and with thousands of clients
/// connecting at once a short queue drops SYNs and costs a 1 s retry.
fn listen(addr: SocketAddr) -> Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr).with_context(|| format!("bind {addr}"))?;
    Ok(socket.listen(4096)?)
}

/// Echoes frames until the peer closes, or sends a frame that is too long.
async fn echo(stream: TcpStream) -> std::io::Result<()> {
    // Replies are batched by the BufWriter, so Nagle would only add delay.
    stream.set_nodelay(true)?;
    let (reader, writer) = stream.into_split();
    let mut reader = BufReader::new(reader);
    let mut writer = BufWriter::new(writer);
    let mut payload = [0u8; MAX_MSG];
    loop {
        let len = match reader.read_u32_le().await {
            Ok(len) => len,
            // The peer closed between frames: the normal end of a connection.
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        };
        if len as usize > MAX_MSG {
            // Protocol error: dropping the halves closes the connection.
            return Ok(());
        }
        let payload = &mut payload[..len as usize];
        reader.read_exact(payload).await?;
        writer.write_u32_le(len).await?;
        writer.write_all(payload).await?;
        // Flush only when the next frame is not already here: then a burst
        // of pipelined frames is answered with one write instead of one each,
        // and we never wait for input while holding unsent replies.
        if !matches!(parse_frame(reader.buffer()), Parse::Frame { .. }) {
            writer.flush().await?;
        }
    }
}

/// Bytes one read may take: many pipelined frames, however large.
const READ_BUF: usize = 64 * 1024;

/// The tuned loop: read whatever the socket holds into one buffer, answer
/// every complete frame in it with one `write_all`, keep the incomplete rest.
///
/// The replies are byte for byte the frames received, in order and
/// contiguous, so the run of complete frames at the start of the buffer *is*
/// the output buffer: it is written from where it was read, never copied.
async fn echo_tuned(mut stream: TcpStream) -> std::io::Result<()> {
    // Every reply is written whole and at once: Nagle would only add delay.
    stream.set_nodelay(true)?;
    let mut buf: Vec<u8> = Vec::with_capacity(READ_BUF);
    loop {
        // What is left is less than a frame, so a read always has room for
        // at least the rest of it; `read_buf` fills spare capacity, unzeroed.
        if buf.capacity() - buf.len() < MAX_FRAME {
            buf.reserve(READ_BUF);
        }
        if stream.read_buf(&mut buf).await? == 0 {
            // Closed by the peer; half a frame left over is dropped with it.
            return Ok(());
        }
        let mut answered = 0;
        let too_long = loop {
            match parse_frame(&buf[answered..]) {
                Parse::Frame { len } => answered += len,
                Parse::Incomplete => break false,
                Parse::TooLong { .. } => break true,
            }
        };
        if answered > 0 {
            stream.write_all(&buf[..answered]).await?;
            buf.drain(..answered);
        }
        if too_long {
            // Protocol error, after answering the frames before it: close.
            return Ok(());
        }
    }
}
