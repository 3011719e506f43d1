//! The shared conformance suite, run only where io_uring is available.

mod uring;

conformance::suite!(
    {
        if crate::uring::unavailable() {
            return;
        }
        env!("CARGO_BIN_EXE_ch13")
    },
    [echo, concurrent, event_loop, scale, cli, wire, graceful]
);
