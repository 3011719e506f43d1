//! The suite's cases that do not depend on the protocol, run by name from
//! its registry (`tests/src/cases.rs`): the command line, the open-file
//! limit, the listen backlog, a stop on SIGTERM. The cases that speak the
//! echo protocol have their RESP counterparts in `server.rs`.

use conformance::harness::Target;
use conformance::runner::run_case;
use conformance::CASES;

const BIN: &str = env!("CARGO_BIN_EXE_ch15");

/// Runs the registry's case `name` against this chapter's server.
fn case(name: &str) {
    let case = CASES
        .iter()
        .find(|case| case.name == name)
        .unwrap_or_else(|| panic!("the suite has no case named {name}"));
    if let Err(reason) = run_case(case, &Target::binary(BIN)) {
        panic!(
            "{reason}\n  checks: {}\n  see {}",
            case.checks, case.explains
        );
    }
}

macro_rules! cases {
    ($($name:ident),+ $(,)?) => {
        $(
            #[test]
            fn $name() {
                case(stringify!($name));
            }
        )+
    };
}

cases!(
    help_lists_every_option,
    help_shows_the_grace_period,
    user_errors_are_one_clear_line,
    addr_accepts_a_host_name,
    raises_its_open_file_limit,
    listens_with_the_largest_backlog,
    sigterm_exits_zero,
);
