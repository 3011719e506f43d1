//! A connection: the echo as an `async fn`, one task per connection.

use std::future::{poll_fn, Future};
use std::os::fd::{AsFd, AsRawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::Instant;

use common::frame::{parse_frame, Parse};
use common::{debug, info};

use crate::buffer::Buf;
use crate::net::TcpStream;
use crate::reactor::Interest;
use crate::stop::Watch;
use crate::time::{sleep, Sleep};
use crate::Shared;

// ANCHOR: conn
/// A connection: chapter 12's `Conn`, minus what the code's position now
/// says. No `State`: whether it is reading, writing or closing is where
/// the task is in `echo`. No `readable` and `writable` flags: the reactor
/// keeps them. No `replied` flag, as chapter 11 had: a send resets the
/// idle timer itself.
struct Conn {
    stream: TcpStream,
    /// Received bytes not yet answered.
    incoming: Buf,
    /// Replies not yet sent.
    outgoing: Buf,
    /// How many more bytes we will read: no limit while serving; once the
    /// requests are over (a bad frame, a stop), what had arrived by then.
    read_limit: Option<usize>,
    /// Fires when no reply has gone out for the idle timeout.
    idle: Sleep,
    /// Hears the stop; dropping it tells the server we are finished.
    stop: Watch,
    shared: Rc<Shared>,
}

/// The connection is over, cleanly or not: the task returns, and dropping
/// the `Conn` closes the socket.
struct Done;
// ANCHOR_END: conn

// ANCHOR: echo
/// Serves one connection, until the client leaves or idles, or the server
/// stops. Its task is this future: everything the connection needs between
/// two events lives in it, in `conn` and in where it stands in `serve`.
pub async fn echo(stream: TcpStream, shared: Rc<Shared>) {
    let mut conn = Conn {
        stream,
        incoming: Buf::default(),
        outgoing: Buf::default(),
        read_limit: None,
        idle: sleep(shared.idle_timeout),
        stop: shared.stop.watch(),
        shared,
    };
    // `Err(Done)`: it ended early, and said why in the log.
    let _ = conn.serve().await;
    // Dropping `conn` closes the socket, and tells the stop we are finished.
}
// ANCHOR_END: echo

impl Conn {
    // ANCHOR: serve
    /// Chapter 12's state machine, as straight-line code: reading,
    /// writing and closing are places in it, and a wait is an `.await`.
    async fn serve(&mut self) -> Result<(), Done> {
        // Requests: read, answer every whole frame, send the replies.
        while self.read_limit != Some(0) {
            self.wait(Interest::Read).await?;
            self.read()?;
            self.answer_requests().await?;
        }
        // No more: close, without losing the replies in flight.
        self.close_gracefully().await
    }
    // ANCHOR_END: serve

    // ANCHOR: wait
    /// Waits until the socket is ready for `interest`. Meanwhile it gives
    /// back the memory of the buffers it has emptied, hears the stop (and
    /// returns, the first time, so the caller sees the new `read_limit`),
    /// and gives up once no reply has gone out for the idle timeout.
    ///
    /// Three futures raced, as `select!` would: each poll polls all three
    /// with the task's waker, and whichever can go on wakes the task. The
    /// socket goes first: a connection whose request came just in time is
    /// served rather than closed.
    async fn wait(&mut self, interest: Interest) -> Result<(), Done> {
        poll_fn(|cx| {
            if self.stream.poll_ready(interest, cx).is_ready() {
                return Poll::Ready(Ok(()));
            }
            if self.read_limit.is_none() && self.stop.poll_stop(cx).is_ready() {
                self.stop_reading();
                return Poll::Ready(Ok(()));
            }
            if Pin::new(&mut self.idle).poll(cx).is_ready() {
                self.log_idle();
                return Poll::Ready(Err(Done));
            }
            let pool = &mut self.shared.pool.borrow_mut();
            self.incoming.release(pool);
            self.outgoing.release(pool);
            Poll::Pending
        })
        .await
    }
    // ANCHOR_END: wait

    fn fd(&self) -> i32 {
        self.stream.as_fd().as_raw_fd()
    }

    // ANCHOR: stop
    /// A stop answers what the client had sent when the signal came, and no
    /// more: the bytes in our buffer and in the socket's receive queue. (The
    /// kernel counts those only up to an urgent mark, if there is one: frames
    /// behind a byte of urgent data, a rarity, go unanswered.)
    fn stop_reading(&mut self) {
        let unread = common::net::unread_bytes(&self.stream).unwrap_or(0);
        self.read_limit = Some(unread);
    }
    // ANCHOR_END: stop

    fn log_idle(&self) {
        let why = if !self.outgoing.is_empty() {
            " with replies it does not read"
        } else if !self.incoming.is_empty() {
            " in the middle of a frame"
        } else {
            ""
        };
        let ms = self.shared.idle_timeout.as_millis();
        info!("fd {}: idle for {ms} ms{why}: closing", self.fd());
    }

    // ANCHOR: read
    /// Reads once into the read buffer. `WouldBlock` is no error: the
    /// readiness is used up, and the next `wait` waits.
    fn read(&mut self) -> Result<(), Done> {
        // While reading, the buffer holds at most part of one frame (whole
        // ones are answered at once), so it has room: 0 bytes means EOF.
        let free = self.incoming.unfilled(&mut self.shared.pool.borrow_mut());
        let room = self
            .read_limit
            .map_or(free.len(), |limit| free.len().min(limit));
        if room == 0 {
            return Ok(());
        }
        match self.stream.try_read(&mut free[..room]) {
            Ok(0) => {
                // EOF. Nothing is lost by closing now: we read only when
                // every frame received so far has been answered and sent.
                if !self.incoming.is_empty() {
                    debug!("fd {}: EOF in the middle of a frame", self.fd());
                }
                Err(Done)
            }
            // Even a short read does not prove the socket empty: TCP stops
            // a read at the urgent mark (MSG_OOB). Only EAGAIN does, and
            // `try_read` clears the readiness only then.
            Ok(n) => {
                self.incoming.commit(n);
                if let Some(limit) = &mut self.read_limit {
                    *limit -= n;
                }
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => {
                debug!("fd {}: read: {e}", self.fd());
                Err(Done)
            }
        }
    }
    // ANCHOR_END: read

    // ANCHOR: answer
    /// The bytes of the whole frames at the front of the read buffer. A
    /// frame that announces too much ends the requests: the frames before it
    /// are answered; it, and whatever follows it, are dropped.
    fn whole_frames(&mut self) -> usize {
        let mut whole = 0;
        loop {
            match parse_frame(&self.incoming.data()[whole..]) {
                Parse::Frame { len } => whole += len,
                Parse::Incomplete => return whole,
                Parse::TooLong { announced } => {
                    let fd = self.fd();
                    debug!("fd {fd}: frame of {announced} bytes is too long: closing");
                    self.incoming.truncate(whole);
                    self.read_limit = Some(0);
                    return whole;
                }
            }
        }
    }

    /// Answers every whole frame in the read buffer, all with one send,
    /// straight from the read buffer (the reply to a frame is the frame
    /// itself); what the socket does not take is copied to the write buffer
    /// and sent when there is room. Until then nothing is read:
    /// backpressure, as in chapter 9, now simply because the task is here.
    async fn answer_requests(&mut self) -> Result<(), Done> {
        let whole = self.whole_frames();
        if whole == 0 {
            return Ok(());
        }
        let sent = match self.stream.try_write(&self.incoming.data()[..whole]) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
            Err(e) => {
                // EPIPE or ECONNRESET: the peer is gone, which is its right.
                debug!("fd {}: send: {e}", self.fd());
                return Err(Done);
            }
        };
        if sent > 0 {
            // Activity is a reply going out, as in chapter 11.
            self.idle.reset(Instant::now() + self.shared.idle_timeout);
        }
        if sent < whole {
            // It fits: the write buffer may hold as much as the read buffer.
            let pool = &mut self.shared.pool.borrow_mut();
            let copied = self
                .outgoing
                .append(&self.incoming.data()[sent..whole], pool);
            debug_assert!(copied);
        }
        self.incoming.consume(whole);
        self.send_replies().await
    }

    /// Sends the write buffer, all in one call if the socket takes it.
    async fn send_replies(&mut self) -> Result<(), Done> {
        while !self.outgoing.is_empty() {
            self.wait(Interest::Write).await?;
            match self.stream.try_write(self.outgoing.data()) {
                Ok(n) => {
                    self.outgoing.consume(n);
                    // Activity is a reply going out, as in chapter 11: a
                    // client that dribbles in a frame slower than the
                    // timeout, or never reads the replies, is closed.
                    self.idle.reset(Instant::now() + self.shared.idle_timeout);
                }
                // The socket's buffer is full: `wait` waits for room.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    // EPIPE or ECONNRESET: the peer is gone, which is its right.
                    debug!("fd {}: send: {e}", self.fd());
                    return Err(Done);
                }
            }
        }
        Ok(())
    }
    // ANCHOR_END: answer

    // ANCHOR: close
    /// Every reply is sent and no request will be read: shut down our
    /// sending side, so the client reads our last reply and then EOF.
    ///
    /// Why not close at once: `close` on a socket with unread input sends a
    /// reset (RST) instead of a FIN, and the kernel throws away what we sent
    /// that the client has not received yet. So we wait for the client's
    /// EOF, reading and dropping what it still sends, and only then close.
    /// A client that never hangs up is closed by the idle timeout, or when
    /// the stop's grace period ends.
    async fn close_gracefully(&mut self) -> Result<(), Done> {
        if !self.incoming.is_empty() {
            debug!("fd {}: dropping half a frame", self.fd());
            self.incoming.clear();
        }
        // An error: the peer is gone already.
        common::net::shutdown_write(&self.stream).map_err(|_| Done)?;
        loop {
            self.wait(Interest::Read).await?;
            let scratch = self.incoming.unfilled(&mut self.shared.pool.borrow_mut());
            match self.stream.try_read(scratch) {
                // Dropped: we answer no more requests.
                Ok(1..) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                // EOF (it has all our replies) or an error: close now.
                Ok(0) | Err(_) => return Ok(()),
            }
        }
    }
    // ANCHOR_END: close
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::mem::size_of_val;
    use std::time::Duration;

    use common::net::accept_nonblocking;

    use super::*;
    use crate::executor::Runtime;
    use crate::stop::Stop;

    /// A connected pair: our side registered as a `TcpStream`.
    fn connected() -> (TcpStream, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let fd = accept_nonblocking(&listener).unwrap();
        (TcpStream::new(fd).unwrap(), client)
    }

    // ANCHOR: test_sizes
    /// What a connection costs while it waits: the task's future, whose
    /// size the compiler fixes as that of the largest set of locals alive
    /// across any one `.await`. Run with `--nocapture` to see the numbers.
    #[test]
    fn the_connection_future_is_small() {
        Runtime::new().unwrap().block_on(async {
            let shared = Rc::new(Shared {
                pool: RefCell::default(),
                stop: Stop::default(),
                idle_timeout: Duration::from_secs(60),
            });
            let (stream, _client) = connected();
            let conn = echo(stream, shared.clone());
            let size = size_of_val(&conn);
            println!("echo future: {size} bytes");
            println!("  of which Conn: {} bytes", size_of::<Conn>());
            println!("  of which Buf: {} bytes (x2)", size_of::<Buf>());
            println!("  of which Sleep: {} bytes", size_of::<Sleep>());
            assert!(size <= 512, "{size}");

            let wrapped = spawned_unboxed(conn);
            println!(
                "an async block awaiting it: {} bytes",
                size_of_val(&wrapped)
            );
            assert!(size_of_val(&wrapped) >= 2 * size);

            // Versus a buffer on the stack across an `.await`: it lives in
            // the future, for as long as the connection does.
            let (stream, _client) = connected();
            let stack = echo_with_a_stack_buffer(stream);
            println!("with a 4 KiB stack buffer: {} bytes", size_of_val(&stack));
            assert!(size_of_val(&stack) > 4096);
        });
    }

    /// What `spawn` would box if it did not box the future first: a block
    /// that awaits it and keeps the output for the `JoinHandle`.
    fn spawned_unboxed<F: Future>(future: F) -> impl Future<Output = ()> {
        let output = Rc::new(std::cell::Cell::new(None));
        async move { output.set(Some(future.await)) }
    }

    async fn echo_with_a_stack_buffer(stream: TcpStream) {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = stream.read(&mut buf).await {
            let _ = stream.write_all(&buf[..n]).await;
        }
    }
    // ANCHOR_END: test_sizes
}
