//! The suite's cases against ch14, with as many loops as the environment
//! variable `ECHO_CH14_THREADS` says, or the server's default (one per CPU)
//! without it. CI runs them with 1, 2, 4 and 8 (see .ci/run).
//!
//! Three cases run with one loop, whatever the number: two start the server
//! with 32 descriptors and count on few of them being taken at rest, which
//! holds for one loop (each loop holds three: tests/loops.rs runs out of
//! descriptors with several, against a measured baseline); the third times
//! one loop taking turns between two clients, which with several loops
//! could be served by two loops, and with more loops than cores would time
//! the scheduler.

use conformance::cases::cases_in;
use conformance::{runner, Level, Target};
use libtest_mimic::{Arguments, Failed, Trial};

const BIN: &str = env!("CARGO_BIN_EXE_ch14");

const ONE_LOOP: [&str; 3] = [
    "echo::out_of_fds_neither_spins_nor_stops_serving",
    "concurrent::out_of_fds_every_client_is_served_or_closed",
    "concurrent::greedy_client_does_not_starve_others",
];

fn main() {
    let threads = std::env::var("ECHO_CH14_THREADS").ok();
    let levels = [
        Level::Echo,
        Level::Concurrent,
        Level::EventLoop,
        Level::Scale,
    ];
    let trials = cases_in(&levels)
        .map(|case| {
            let id = case.id();
            let threads = match ONE_LOOP.contains(&id.as_str()) {
                true => Some("1".to_string()),
                false => threads.clone(),
            };
            let mut command = vec![BIN.to_string()];
            command.extend(threads.iter().flat_map(|n| ["--threads".into(), n.clone()]));
            let target = Target {
                command,
                port: None,
            };
            Trial::test(id, move || {
                runner::run_case(case, &target).map_err(|reason| {
                    Failed::from(format!(
                        "{reason}\n  server: {}\n  checks: {}\n  see {}",
                        target.display(),
                        case.checks,
                        case.explains
                    ))
                })
            })
        })
        .collect();
    libtest_mimic::run(&Arguments::from_args(), trials).exit()
}
