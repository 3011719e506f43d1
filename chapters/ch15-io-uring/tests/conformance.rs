//! The shared conformance suite, run only where io_uring is available.

use conformance::Level;

mod uring;

fn main() {
    if uring::unavailable() {
        return;
    }
    conformance::main(
        env!("CARGO_BIN_EXE_ch15"),
        &[
            Level::Echo,
            Level::Concurrent,
            Level::EventLoop,
            Level::Scale,
        ],
    );
}
