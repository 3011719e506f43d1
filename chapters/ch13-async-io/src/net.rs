//! TCP on the reactor: a listener whose `accept` is a future, and a stream
//! whose reads and writes are, with the non-blocking tries underneath.
//!
//! Chapter 14 uses this file as it is, included from here (`#[path]`).

use std::future::poll_fn;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::task::{Context, Poll};

use common::error;
use common::net::{accept_nonblocking, retry_eintr, AcceptError};
use nix::sys::socket::{send, MsgFlags};

use crate::reactor::{AsyncFd, Interest};

/// A listening socket registered with the reactor.
pub struct TcpListener {
    fd: AsyncFd<std::net::TcpListener>,
}

impl TcpListener {
    /// Registers `listener`, which must be non-blocking.
    pub fn new(listener: std::net::TcpListener) -> io::Result<TcpListener> {
        Ok(TcpListener {
            fd: AsyncFd::new(listener)?,
        })
    }

    pub fn get_ref(&self) -> &std::net::TcpListener {
        self.fd.get_ref()
    }

    // ANCHOR: accept
    /// Waits for a connection and returns it, registered with the reactor.
    ///
    /// Chapter 9's accept loop, one connection per call. On errors that
    /// leave clients waiting (`Retry`, `NoFds`, `NoMemory`), the listener
    /// stays ready and the next call tries at once: what to do first (turn
    /// a client away, pause) is the caller's business. On `EAGAIN`, and on
    /// an error no retry fixes (`Fatal`), the readiness is cleared and the
    /// next call waits for the next edge. So it never returns `Empty`.
    pub async fn accept(&self) -> Result<TcpStream, AcceptError> {
        loop {
            let event = self.fd.ready(Interest::Read).await;
            match accept_nonblocking(self.get_ref()) {
                Ok(fd) => match TcpStream::new(fd) {
                    Ok(stream) => return Ok(stream),
                    // Dropping `fd` closes the connection we cannot watch.
                    Err(e) => error!("epoll_ctl: {e}"),
                },
                Err(AcceptError::Empty) => self.fd.clear_ready(event),
                Err(e @ AcceptError::Fatal(_)) => {
                    self.fd.clear_ready(event);
                    return Err(e);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Forgets the listener's readiness, so that the next `accept` waits
    /// for the next edge. For the caller who has just seen the backlog
    /// empty with an `accept` of its own (the spare descriptor's): no
    /// `.await` came between, so no newer edge can be forgotten with it.
    pub async fn forget_readiness(&self) {
        let event = self.fd.ready(Interest::Read).await;
        self.fd.clear_ready(event);
    }
    // ANCHOR_END: accept
}

impl AsFd for TcpListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

// ANCHOR: stream
/// A connected socket registered with the reactor.
pub struct TcpStream {
    fd: AsyncFd<OwnedFd>,
}

impl TcpStream {
    /// Registers a connected socket, which must be non-blocking.
    pub fn new(fd: OwnedFd) -> io::Result<TcpStream> {
        Ok(TcpStream {
            fd: AsyncFd::new(fd)?,
        })
    }

    /// `Ready` when an edge said the socket is ready for `interest` and no
    /// `try_read` or `try_write` has met `EAGAIN` since; see
    /// [`AsyncFd::poll_ready`]. For futures written by hand.
    pub fn poll_ready(&self, interest: Interest, cx: &mut Context<'_>) -> Poll<()> {
        self.fd.poll_ready(interest, cx).map(|_| ())
    }

    /// Reads once if the socket may have input: `WouldBlock` if not, or if
    /// the read meets `EAGAIN`, which uses the readiness up.
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.fd.try_io(Interest::Read, |fd| {
            Ok(retry_eintr(|| nix::unistd::read(fd, buf))?)
        })
    }

    /// Sends once if the socket may have room; as [`TcpStream::try_read`].
    pub fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        self.fd.try_io(Interest::Write, |fd| {
            // MSG_NOSIGNAL: a peer that has gone away makes this fail with
            // EPIPE instead of raising SIGPIPE (chapter 9).
            let flags = MsgFlags::MSG_NOSIGNAL;
            Ok(retry_eintr(|| send(fd.as_raw_fd(), buf, flags))?)
        })
    }
    // ANCHOR_END: stream

    // ANCHOR: read_write
    /// Reads into `buf`, waiting for input if there is none: `Ok(0)` is
    /// EOF. The echo server does not use it, because `buf` is borrowed for
    /// the whole wait: an idle connection would hold its buffer. It waits
    /// with `poll_ready`, then borrows a buffer for `try_read`.
    #[allow(dead_code)]
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            poll_fn(|cx| self.poll_ready(Interest::Read, cx)).await;
            match self.try_read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                result => return result,
            }
        }
    }

    /// Sends all of `buf`, waiting for room as often as needed.
    #[allow(dead_code)]
    pub async fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            poll_fn(|cx| self.poll_ready(Interest::Write, cx)).await;
            match self.try_write(buf) {
                Ok(n) => buf = &buf[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
    // ANCHOR_END: read_write
}

impl AsFd for TcpStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::io::{Read, Write};
    use std::net::TcpStream as StdStream;
    use std::pin::Pin;
    use std::task::ready;

    use super::*;
    use crate::executor::tests::bounded;
    use crate::executor::{spawn, Runtime};

    // ANCHOR: simplest_echo
    /// The shortest echo on this runtime: bytes in, the same bytes out,
    /// until EOF, with none of `echo`'s framing, bounds and timeouts.
    async fn echo_bytes(stream: TcpStream) -> io::Result<()> {
        let mut buf = vec![0; 4096];
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            stream.write_all(&buf[..n]).await?;
        }
    }
    // ANCHOR_END: simplest_echo

    // ANCHOR: echo_by_hand
    /// `echo_bytes` written by hand, as the compiler writes it for us: what
    /// is alive at every `.await` (the stream, the buffer) in the struct,
    /// what only one `.await` needs in that point's variant, and a `poll`
    /// that goes on from the point where the last one returned `Pending`.
    struct EchoBytes {
        stream: TcpStream,
        buf: Vec<u8>,
        state: State,
    }

    enum State {
        /// At `stream.read(&mut buf).await`.
        Reading,
        /// At `stream.write_all(&buf[..n]).await`, `sent` bytes of `n` sent.
        Writing { n: usize, sent: usize },
        /// Returned `Ready`.
        Done,
    }

    impl EchoBytes {
        /// What calling `echo_bytes(stream)` does: nothing yet but build
        /// the future, at its start.
        fn new(stream: TcpStream) -> EchoBytes {
            EchoBytes {
                stream,
                buf: vec![0; 4096],
                state: State::Reading,
            }
        }
    }

    impl Future for EchoBytes {
        type Output = io::Result<()>;

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            // No field points into another (`Writing` keeps a count, not
            // the slice `&buf[..n]`), so `EchoBytes` is `Unpin`, and
            // getting `&mut` out of the `Pin` needs no `unsafe`.
            let EchoBytes { stream, buf, state } = self.get_mut();
            loop {
                match state {
                    State::Reading => {
                        // `Pending` here has stored the waker with the reactor.
                        ready!(stream.poll_ready(Interest::Read, cx));
                        match stream.try_read(buf) {
                            Ok(0) => {
                                *state = State::Done;
                                return Poll::Ready(Ok(()));
                            }
                            Ok(n) => *state = State::Writing { n, sent: 0 },
                            // EAGAIN: the readiness is used up; wait again.
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                            Err(e) => {
                                *state = State::Done;
                                return Poll::Ready(Err(e));
                            }
                        }
                    }
                    State::Writing { n, sent } if sent == n => *state = State::Reading,
                    State::Writing { n, sent } => {
                        ready!(stream.poll_ready(Interest::Write, cx));
                        match stream.try_write(&buf[*sent..*n]) {
                            Ok(k) => *sent += k,
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                            Err(e) => {
                                *state = State::Done;
                                return Poll::Ready(Err(e));
                            }
                        }
                    }
                    State::Done => panic!("EchoBytes polled after it returned Ready"),
                }
            }
        }
    }
    // ANCHOR_END: echo_by_hand

    /// Three clients, all connected before any is answered, each served by
    /// a task of `echo`.
    fn serve_three_clients<F>(echo: fn(TcpStream) -> F)
    where
        F: Future<Output = io::Result<()>> + 'static,
    {
        let listener = common::net::listen("127.0.0.1:0".parse().unwrap()).unwrap();
        common::net::set_nonblocking(&listener).unwrap();
        let addr = listener.local_addr().unwrap();
        let clients = std::thread::spawn(move || {
            let mut clients: Vec<StdStream> =
                (0..3).map(|_| StdStream::connect(addr).unwrap()).collect();
            for (i, client) in clients.iter_mut().enumerate() {
                client.write_all(format!("hello {i}").as_bytes()).unwrap();
            }
            for (i, client) in clients.iter_mut().enumerate() {
                let mut reply = [0; 7];
                client.read_exact(&mut reply).unwrap();
                assert_eq!(reply, format!("hello {i}").as_bytes());
            }
            // Dropping them ends the server's tasks with EOF.
        });
        bounded(move || {
            Runtime::new().unwrap().block_on(async {
                let listener = TcpListener::new(listener).unwrap();
                let mut tasks = Vec::new();
                for _ in 0..3 {
                    let stream = listener.accept().await.unwrap();
                    tasks.push(spawn(echo(stream)));
                }
                for task in tasks {
                    task.await.unwrap();
                }
            })
        });
        clients.join().unwrap();
    }

    #[test]
    fn the_simplest_echo_serves_clients_at_once() {
        serve_three_clients(echo_bytes);
    }

    #[test]
    fn the_echo_written_by_hand_serves_them_the_same() {
        serve_three_clients(EchoBytes::new);
    }

    /// The hand-written future, polled by hand: `Pending` while there is
    /// nothing to read, having stored the waker that the reactor's next
    /// edge wakes; polled again, it goes on where it stopped.
    #[test]
    fn the_echo_written_by_hand_waits_for_the_wake() {
        use std::os::unix::net::UnixStream;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        use std::task::{Wake, Waker};

        use crate::executor::yield_now;

        #[derive(Default)]
        struct CountWakes(AtomicUsize);
        impl Wake for CountWakes {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        impl CountWakes {
            /// Lets the reactor take turns until it has woken us `n` times.
            async fn woken(&self, n: usize) {
                while self.0.load(Ordering::SeqCst) < n {
                    yield_now().await;
                }
            }
        }

        bounded(|| {
            Runtime::new().unwrap().block_on(async {
                let (ours, mut peer) = UnixStream::pair().unwrap();
                ours.set_nonblocking(true).unwrap();
                let mut echo = EchoBytes::new(TcpStream::new(ours.into()).unwrap());
                let wakes = Arc::new(CountWakes::default());
                let waker = Waker::from(wakes.clone());
                let mut poll = || Pin::new(&mut echo).poll(&mut Context::from_waker(&waker));

                assert!(poll().is_pending(), "nothing to read yet");
                peer.write_all(b"hi").unwrap();
                wakes.woken(1).await;
                assert!(poll().is_pending(), "echoed, and waiting again");
                let mut reply = [0; 2];
                peer.read_exact(&mut reply).unwrap();
                assert_eq!(&reply, b"hi");
                drop(peer);
                wakes.woken(2).await;
                assert!(matches!(poll(), Poll::Ready(Ok(()))), "EOF ends it");
            })
        });
    }
}
