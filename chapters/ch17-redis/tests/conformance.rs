//! The suite's cases that do not depend on the protocol, run by id from its
//! registry (`tests/src/cases.rs`): the command line, the open-file limit,
//! the listen backlog, a stop on SIGTERM, a bad idle timeout. The cases
//! that speak the echo protocol have their RESP counterparts in `server.rs`.

use conformance::harness::Target;
use conformance::runner::run_case;
use conformance::CASES;

const BIN: &str = env!("CARGO_BIN_EXE_ch17");

/// Runs the registry's case `level::name` against this chapter's server. A
/// case reported not applicable fails here: each one below was chosen
/// because it applies.
fn case(id: &str) {
    let case = CASES
        .iter()
        .find(|case| case.id() == id)
        .unwrap_or_else(|| panic!("the suite has no case {id}"));
    if let Err(reason) = run_case(case, &Target::binary(BIN)) {
        panic!(
            "{reason}\n  checks: {}\n  see {}",
            case.checks, case.explains
        );
    }
}

macro_rules! cases {
    ($($level:ident :: $name:ident),+ $(,)?) => {
        $(
            #[test]
            fn $name() {
                case(concat!(stringify!($level), "::", stringify!($name)));
            }
        )+
    };
}

cases!(
    echo::help_lists_every_option,
    echo::user_errors_are_one_clear_line,
    echo::addr_accepts_a_host_name,
    echo::raises_its_open_file_limit,
    echo::listens_with_the_largest_backlog,
    echo::sigterm_exits_zero,
    event_loop::help_shows_the_grace_period,
    idle_timeout::a_bad_idle_timeout_is_a_startup_error,
);
