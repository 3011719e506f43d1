//! The suite's cases against ch16, with as many loops as the environment
//! variable `ECHO_CH16_THREADS` says, or the server's default (one per CPU)
//! without it. CI runs them with 1, 2, 4 and 8 (see .ci/run).
//!
//! Three cases run with one loop, whatever the number: two start the server
//! with 32 descriptors and count on few of them being taken at rest, which
//! holds for one loop (each loop holds three: tests/loops.rs runs out of
//! descriptors with several, against a measured baseline); the third times
//! one loop taking turns between two clients, which with several loops
//! could be served by two loops, and with more loops than cores would time
//! the scheduler.

use conformance::{Level, Suite, Target};

const ONE_LOOP: &[&str] = &[
    "echo::out_of_fds_neither_spins_nor_stops_serving",
    "concurrent::out_of_fds_every_client_is_served_or_closed",
    "concurrent::greedy_client_does_not_starve_others",
];

fn main() {
    let mut target = Target::binary(env!("CARGO_BIN_EXE_ch16"));
    if let Ok(threads) = std::env::var("ECHO_CH16_THREADS") {
        target = target.with_args(["--threads", &threads]);
    }
    let levels = [
        Level::Echo,
        Level::Concurrent,
        Level::EventLoop,
        Level::Scale,
    ];
    Suite::new(target, &levels)
        .with_case_args(ONE_LOOP, &["--threads", "1"])
        .run()
}
