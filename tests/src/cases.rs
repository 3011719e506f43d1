//! The registry: every case of the suite, once. Both the chapters' `cargo
//! test` and the `conform` tool read this list, and nothing else.
//!
//! To add a case: write `fn name(target: &Target)` in the level's module
//! (tests/src/LEVEL.rs), failing with a panic whose message a learner can
//! act on, and add one entry below. The case functions are reachable only
//! from here, so one that is missing from the list is dead code, which
//! `cargo clippy -- -D warnings` (and CI) rejects.

use std::fmt;

use crate::book::{self, BookRef};
use crate::harness::Target;
use crate::{
    accept, cli, concurrent, echo, event_loop, graceful, hello, idle_timeout, scale, wire,
};

/// A group of cases that one server design can meet. A chapter picks the
/// levels it runs; the `conform` tool runs a level with the ones below it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// The ch03 contract: one read, one fixed reply ("world"), close.
    Hello,
    /// Framing, every kind of bad input, signals: every echo server.
    Echo,
    /// Clients are served independently; a flood stalls no one and grows no memory.
    Concurrent,
    /// A thousand connections at once, a prompt stop while clients are connected.
    EventLoop,
    /// A 10,000-frame burst; 10,000 quiet connections in little memory.
    Scale,
    /// Idle connections are closed after `--idle-timeout-ms`.
    IdleTimeout,
}

impl Level {
    pub const ALL: [Level; 6] = [
        Level::Hello,
        Level::Echo,
        Level::Concurrent,
        Level::EventLoop,
        Level::Scale,
        Level::IdleTimeout,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Level::Hello => "hello",
            Level::Echo => "echo",
            Level::Concurrent => "concurrent",
            Level::EventLoop => "event_loop",
            Level::Scale => "scale",
            Level::IdleTimeout => "idle_timeout",
        }
    }

    pub fn parse(name: &str) -> Option<Level> {
        Level::ALL
            .into_iter()
            .find(|level| level.name() == name.replace('-', "_"))
    }

    /// This level and the echo levels below it: what a server that meets
    /// this level should pass. `hello` is a different protocol and stands alone.
    pub fn with_lower(self) -> Vec<Level> {
        match self {
            Level::Hello => vec![Level::Hello],
            _ => Level::ALL
                .into_iter()
                .filter(|&l| l != Level::Hello && l <= self)
                .collect(),
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whom a case holds to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// What every echo server must do, whoever wrote it.
    EveryServer,
    /// The contract of echo-steps' servers: their command line (`--help`,
    /// `--addr`, one-line errors) and conventions (raising the open-file
    /// limit, logging what ch03 heard). It applies when the tool starts the
    /// server as it starts this project's, with `--addr`; a server started
    /// with `--port` or a placeholder is not held to it, and these cases
    /// are reported "not applicable" there.
    EchoSteps,
}

impl Scope {
    pub fn name(self) -> &'static str {
        match self {
            Scope::EveryServer => "every echo server",
            Scope::EchoSteps => "echo-steps' contract",
        }
    }
}

// ANCHOR: case
/// One check of a server's behaviour.
pub struct Case {
    /// The function's name; `level::name` is the test's name.
    pub name: &'static str,
    pub level: Level,
    /// Every echo server, or only the ones that follow this project's contract.
    pub scope: Scope,
    /// One line: what the case checks.
    pub checks: &'static str,
    /// Where the book explains what a failure means.
    pub explains: BookRef,
    /// Runs the case against a server; panics (with a sentence) on failure.
    pub run: fn(&Target),
}
// ANCHOR_END: case

impl Case {
    /// `level::name`, unique in the registry.
    pub fn id(&self) -> String {
        format!("{}::{}", self.level, self.name)
    }
}

/// The cases of the given levels, in registry order.
pub fn cases_in(levels: &[Level]) -> impl Iterator<Item = &'static Case> + '_ {
    CASES.iter().filter(|case| levels.contains(&case.level))
}

pub static CASES: &[Case] = &[
    // --- hello ---------------------------------------------------------------
    Case {
        name: "replies_once_and_closes",
        level: Level::Hello,
        scope: Scope::EveryServer,
        checks: "a client says hello and gets \"world\" back, then the server closes and logs what it heard",
        explains: book::HELLO_READ_SEND,
        run: hello::replies_once_and_closes,
    },
    Case {
        name: "serves_clients_one_after_another",
        level: Level::Hello,
        scope: Scope::EveryServer,
        checks: "50 clients in a row each get their reply: the server goes back to accept",
        explains: book::HELLO_ACCEPT,
        run: hello::serves_clients_one_after_another,
    },
    Case {
        name: "survives_silent_and_oversized_clients",
        level: Level::Hello,
        scope: Scope::EveryServer,
        checks: "a client that says nothing and one that says 100 kB do not stop the server",
        explains: book::HELLO_WHAT_CAN_GO_WRONG,
        run: hello::survives_silent_and_oversized_clients,
    },
    Case {
        name: "sigint_exits_zero",
        level: Level::Hello,
        scope: Scope::EveryServer,
        checks: "SIGINT (Ctrl-C) stops the server with exit status 0",
        explains: book::HELLO_SIGNALS,
        run: hello::sigint_exits_zero,
    },
    Case {
        name: "sigterm_exits_zero",
        level: Level::Hello,
        scope: Scope::EveryServer,
        checks: "SIGTERM stops the server with exit status 0",
        explains: book::HELLO_SIGNALS,
        run: hello::sigterm_exits_zero,
    },
    Case {
        name: "help_lists_every_option",
        level: Level::Hello,
        scope: Scope::EchoSteps,
        checks: "--help and -h print the usage with --addr and every flag, and exit 0",
        explains: book::COMMAND_LINE,
        run: cli::help_lists_every_option,
    },
    Case {
        name: "user_errors_are_one_clear_line",
        level: Level::Hello,
        scope: Scope::EchoSteps,
        checks: "a port in use, a port out of range, a bad address or an unknown flag: one line on stderr, exit 1, no backtrace",
        explains: book::COMMAND_LINE,
        run: cli::user_errors_are_one_clear_line,
    },
    Case {
        name: "addr_accepts_a_host_name",
        level: Level::Hello,
        scope: Scope::EchoSteps,
        checks: "--addr localhost:PORT resolves the name, and the server listens on that port",
        explains: book::COMMAND_LINE,
        run: cli::addr_accepts_a_host_name,
    },
    Case {
        name: "raises_its_open_file_limit",
        level: Level::Hello,
        scope: Scope::EchoSteps,
        checks: "started with a soft limit of 256 open files under a higher hard limit, the server raises the soft one",
        explains: book::FD_LIMITS,
        run: wire::raises_its_open_file_limit,
    },
    Case {
        name: "broken_stderr_never_stops_the_server",
        level: Level::Hello,
        scope: Scope::EveryServer,
        checks: "with stderr a pipe nobody reads, the lines a client makes the server log do not stop it",
        explains: book::BROKEN_STDERR,
        run: hello::broken_stderr_never_stops_the_server,
    },
    Case {
        name: "listens_with_the_largest_backlog",
        level: Level::Hello,
        scope: Scope::EveryServer,
        checks: "the listener asks for the largest accept queue the kernel allows (ss -lnt shows it)",
        explains: book::BACKLOG,
        run: wire::listens_with_the_largest_backlog,
    },
    // --- echo ----------------------------------------------------------------
    Case {
        name: "one_frame",
        level: Level::Echo,
        scope: Scope::EveryServer,
        checks: "one frame comes back identical",
        explains: book::FRAMING,
        run: echo::one_frame,
    },
    Case {
        name: "empty_frame",
        level: Level::Echo,
        scope: Scope::EveryServer,
        checks: "a frame of length 0 is echoed, and the connection goes on",
        explains: book::FRAMING,
        run: echo::empty_frame,
    },
    Case {
        name: "largest_frame",
        level: Level::Echo,
        scope: Scope::EveryServer,
        checks: "a frame of 4096 bytes, the maximum, is echoed",
        explains: book::SHORT_READS,
        run: echo::largest_frame,
    },
    Case {
        name: "pipelined_random_frames_in_one_write",
        level: Level::Echo,
        scope: Scope::EveryServer,
        checks: "300 frames of random sizes sent in one write come back in order",
        explains: book::FRAMING,
        run: echo::pipelined_random_frames_in_one_write,
    },
    Case {
        name: "frame_sent_one_byte_at_a_time",
        level: Level::Echo,
        scope: Scope::EveryServer,
        checks: "a frame sent one byte per write is echoed once complete",
        explains: book::SHORT_READS,
        run: echo::frame_sent_one_byte_at_a_time,
    },
    Case {
        name: "length_4097_closes_only_that_connection",
        level: Level::Echo,
        scope: Scope::EveryServer,
        checks: "a header announcing 4097 bytes closes that connection, and the server serves on",
        explains: book::LYING_LENGTHS,
        run: echo::length_4097_closes_only_that_connection,
    },
    Case {
        name: "length_u32_max_closes_only_that_connection",
        level: Level::Echo,
        scope: Scope::EveryServer,
        checks: "a header announcing 4 GiB closes that connection, and the server serves on",
        explains: book::LYING_LENGTHS,
        run: echo::length_u32_max_closes_only_that_connection,
    },
    Case {
        name: "disconnect_mid_frame",
        level: Level::Echo,
        scope: Scope::EveryServer,
        checks: "clients that leave in the middle of a frame or a header cost only their connection",
        explains: book::LYING_LENGTHS,
        run: echo::disconnect_mid_frame,
    },
    Case {
        name: "flood_then_reset_with_replies_pending",
        level: Level::Echo,
        scope: Scope::EveryServer,
        checks: "a client that resets its connection with replies pending (EPIPE, SIGPIPE) harms no one else",
        explains: book::RESETS,
        run: echo::flood_then_reset_with_replies_pending,
    },
    Case {
        name: "three_hundred_connections_leak_no_fd",
        level: Level::Echo,
        scope: Scope::EveryServer,
        checks: "300 clients come and go, and the server holds no more file descriptors than before",
        explains: book::CLOSE,
        run: echo::three_hundred_connections_leak_no_fd,
    },
    Case {
        name: "half_close_still_gets_every_reply",
        level: Level::Echo,
        scope: Scope::EveryServer,
        checks: "after shutdown(SHUT_WR), a client still gets every reply, then the server closes",
        explains: book::HALF_CLOSE,
        run: echo::half_close_still_gets_every_reply,
    },
    Case {
        name: "out_of_fds_neither_spins_nor_stops_serving",
        level: Level::Echo,
        scope: Scope::EveryServer,
        checks: "out of file descriptors (EMFILE), the server neither spins nor dies, and serves again later",
        explains: book::EMFILE,
        run: echo::out_of_fds_neither_spins_nor_stops_serving,
    },
    Case {
        name: "sigint_exits_zero",
        level: Level::Echo,
        scope: Scope::EveryServer,
        checks: "SIGINT (Ctrl-C) stops the server with exit status 0",
        explains: book::SIGNALS,
        run: echo::sigint_exits_zero,
    },
    // ANCHOR: entry
    Case {
        name: "sigterm_exits_zero",
        level: Level::Echo,
        scope: Scope::EveryServer,
        checks: "SIGTERM stops the server with exit status 0",
        explains: book::SIGNALS,
        run: echo::sigterm_exits_zero,
    },
    // ANCHOR_END: entry
    Case {
        name: "sigint_while_a_client_is_connected",
        level: Level::Echo,
        scope: Scope::EveryServer,
        checks: "SIGINT stops the server within 2 s while a client is halfway through a frame",
        explains: book::SIGNALS,
        run: echo::sigint_while_a_client_is_connected,
    },
    Case {
        name: "big_burst_read_back_slowly_comes_back_in_order",
        level: Level::Echo,
        scope: Scope::EveryServer,
        checks: "6 MB of pipelined frames read back 64 bytes at a time come back complete and in order",
        explains: book::PARTIAL_WRITES,
        run: echo::big_burst_read_back_slowly_comes_back_in_order,
    },
    Case {
        name: "frames_behind_a_full_send_buffer_are_answered",
        level: Level::Echo,
        scope: Scope::EveryServer,
        checks: "frames read but not yet answered when the server's send buffer fills are answered once it drains, half-close or not",
        explains: book::PARTIAL_WRITES,
        run: echo::frames_behind_a_full_send_buffer_are_answered,
    },
    Case {
        name: "help_lists_every_option",
        level: Level::Echo,
        scope: Scope::EchoSteps,
        checks: "--help and -h print the usage with --addr and every flag, and exit 0",
        explains: book::COMMAND_LINE,
        run: cli::help_lists_every_option,
    },
    Case {
        name: "user_errors_are_one_clear_line",
        level: Level::Echo,
        scope: Scope::EchoSteps,
        checks: "a port in use, a port out of range, a bad address or an unknown flag: one line on stderr, exit 1, no backtrace",
        explains: book::COMMAND_LINE,
        run: cli::user_errors_are_one_clear_line,
    },
    Case {
        name: "addr_accepts_a_host_name",
        level: Level::Echo,
        scope: Scope::EchoSteps,
        checks: "--addr localhost:PORT resolves the name, and the server listens on that port",
        explains: book::COMMAND_LINE,
        run: cli::addr_accepts_a_host_name,
    },
    Case {
        name: "small_pipelined_frames_are_answered_at_once",
        level: Level::Echo,
        scope: Scope::EveryServer,
        checks: "three small frames written at once come back without waiting for a delayed ACK (Nagle)",
        explains: book::NAGLE,
        run: wire::small_pipelined_frames_are_answered_at_once,
    },
    Case {
        name: "good_frame_then_bad_length_in_one_write",
        level: Level::Echo,
        scope: Scope::EveryServer,
        checks: "a valid frame followed by a bad length in the same segment is answered, then that connection closes",
        explains: book::LYING_LENGTHS,
        run: wire::good_frame_then_bad_length_in_one_write,
    },
    Case {
        name: "urgent_data_does_not_stall_the_connection",
        level: Level::Echo,
        scope: Scope::EveryServer,
        checks: "a frame, one byte of urgent data (MSG_OOB), a frame: both frames are answered",
        explains: book::URGENT_DATA,
        run: wire::urgent_data_does_not_stall_the_connection,
    },
    Case {
        name: "broken_stderr_never_stops_the_server",
        level: Level::Echo,
        scope: Scope::EveryServer,
        checks: "with stderr a pipe nobody reads and every log line on, bad frames, vanishing clients and a stop do not kill the server",
        explains: book::BROKEN_STDERR,
        run: wire::broken_stderr_never_stops_the_server,
    },
    Case {
        name: "raises_its_open_file_limit",
        level: Level::Echo,
        scope: Scope::EchoSteps,
        checks: "started with a soft limit of 256 open files under a higher hard limit, the server raises the soft one",
        explains: book::FD_LIMITS,
        run: wire::raises_its_open_file_limit,
    },
    Case {
        name: "accept_errors_do_not_strand_clients",
        level: Level::Echo,
        scope: Scope::EveryServer,
        checks: "when every other accept fails with EPROTO or ENOBUFS, every client is still served",
        explains: book::ACCEPT_ERRORS,
        run: accept::accept_errors_do_not_strand_clients,
    },
    Case {
        name: "accept_pauses_while_the_kernel_is_short_of_memory",
        level: Level::Echo,
        scope: Scope::EveryServer,
        checks: "while every accept fails with ENOBUFS for 300 ms, the server tries again a little later, not in a busy loop, and then serves the client",
        explains: book::ACCEPT_ERRORS,
        run: accept::accept_pauses_while_the_kernel_is_short_of_memory,
    },
    Case {
        name: "a_client_accepted_with_the_spare_is_served_if_there_is_room",
        level: Level::Echo,
        scope: Scope::EchoSteps,
        checks: "when accept fails with EMFILE but the spare descriptor then accepts with room to spare, the client is served, not turned away",
        explains: book::SPARE_DESCRIPTOR,
        run: accept::a_client_accepted_with_the_spare_is_served_if_there_is_room,
    },
    Case {
        name: "listens_with_the_largest_backlog",
        level: Level::Echo,
        scope: Scope::EveryServer,
        checks: "the listener asks for the largest accept queue the kernel allows (ss -lnt shows it)",
        explains: book::BACKLOG,
        run: wire::listens_with_the_largest_backlog,
    },
    // --- concurrent ----------------------------------------------------------
    Case {
        name: "idle_client_with_half_a_header_does_not_delay_others",
        level: Level::Concurrent,
        scope: Scope::EveryServer,
        checks: "a client idle in the middle of a header delays no other client",
        explains: book::THE_STALL,
        run: concurrent::idle_client_with_half_a_header_does_not_delay_others,
    },
    Case {
        name: "two_hundred_clients_pipelining_get_their_own_replies",
        level: Level::Concurrent,
        scope: Scope::EveryServer,
        checks: "200 clients at once, 20 pipelined frames each: each gets exactly its own replies",
        explains: book::THREADS,
        run: concurrent::two_hundred_clients_pipelining_get_their_own_replies,
    },
    Case {
        name: "flooding_client_neither_stalls_others_nor_grows_memory",
        level: Level::Concurrent,
        scope: Scope::EveryServer,
        checks: "a client that sends without reading neither delays others nor grows the server's memory",
        explains: book::BACKPRESSURE,
        run: concurrent::flooding_client_neither_stalls_others_nor_grows_memory,
    },
    Case {
        name: "out_of_fds_every_client_is_served_or_closed",
        level: Level::Concurrent,
        scope: Scope::EveryServer,
        checks: "out of file descriptors, every client is either served or closed at once, none left hanging",
        explains: book::EMFILE,
        run: concurrent::out_of_fds_every_client_is_served_or_closed,
    },
    Case {
        name: "an_aborted_client_does_not_stop_the_turning_away",
        level: Level::Concurrent,
        scope: Scope::EveryServer,
        checks: "out of file descriptors, a client that gives up as the server turns it away (ECONNABORTED) does not leave the next one waiting",
        explains: book::ACCEPT_ERRORS,
        run: accept::an_aborted_client_does_not_stop_the_turning_away,
    },
    Case {
        name: "greedy_client_does_not_starve_others",
        level: Level::Concurrent,
        scope: Scope::EveryServer,
        checks: "a client that pipelines as fast as it can does not starve another",
        explains: book::TAKING_TURNS,
        run: concurrent::greedy_client_does_not_starve_others,
    },
    // --- event_loop ----------------------------------------------------------
    Case {
        name: "thousand_simultaneous_connections",
        level: Level::EventLoop,
        scope: Scope::EveryServer,
        checks: "1000 clients connected at once each get their frame back",
        explains: book::ONE_THREAD_MANY_CONNECTIONS,
        run: event_loop::thousand_simultaneous_connections,
    },
    Case {
        name: "stop_answers_every_frame_received",
        level: Level::EventLoop,
        scope: Scope::EveryServer,
        checks: "2,000 frames received, then SIGINT: all 2,000 replies, then a clean EOF, then exit 0",
        explains: book::GRACEFUL_STOP,
        run: graceful::stop_answers_every_frame_received,
    },
    Case {
        name: "stop_after_a_flood_ends_with_eof_not_reset",
        level: Level::EventLoop,
        scope: Scope::EveryServer,
        checks: "a client floods without reading, then SIGINT: whole replies in order, then EOF, not a reset",
        explains: book::RESET_ON_CLOSE,
        run: graceful::stop_after_a_flood_ends_with_eof_not_reset,
    },
    Case {
        name: "stop_does_not_wait_past_the_grace_period",
        level: Level::EventLoop,
        scope: Scope::EveryServer,
        checks: "a client that never reads cannot keep the server past --grace-ms",
        explains: book::GRACEFUL_STOP,
        run: graceful::stop_does_not_wait_past_the_grace_period,
    },
    Case {
        name: "idle_client_sees_eof_and_the_server_exits_when_it_leaves",
        level: Level::EventLoop,
        scope: Scope::EveryServer,
        checks: "at a stop an idle client reads EOF at once, and the server exits as soon as it hangs up",
        explains: book::GRACEFUL_STOP,
        run: graceful::idle_client_sees_eof_and_the_server_exits_when_it_leaves,
    },
    Case {
        name: "help_shows_the_grace_period",
        level: Level::EventLoop,
        scope: Scope::EchoSteps,
        checks: "--help lists --grace-ms",
        explains: book::GRACEFUL_STOP,
        run: graceful::help_shows_the_grace_period,
    },
    Case {
        name: "second_signal_stops_at_once",
        level: Level::EventLoop,
        scope: Scope::EveryServer,
        checks: "a second SIGINT/SIGTERM during the grace period stops the server at once, with status 0",
        explains: book::GRACEFUL_STOP,
        run: graceful::second_signal_stops_at_once,
    },
    Case {
        name: "a_stop_that_ends_early_says_how_many_did_not_finish",
        level: Level::EventLoop,
        scope: Scope::EchoSteps,
        checks: "a stop cut short by a second signal, or by the end of --grace-ms, logs \"closing N connections that did not finish\" either way",
        explains: book::GRACEFUL_STOP,
        run: graceful::a_stop_that_ends_early_says_how_many_did_not_finish,
    },
    // --- scale ---------------------------------------------------------------
    Case {
        name: "ten_thousand_pipelined_frames_come_back_in_order",
        level: Level::Scale,
        scope: Scope::EveryServer,
        checks: "10,000 frames sent in one burst come back complete and in order",
        explains: book::BATCHED_REPLIES,
        run: scale::ten_thousand_pipelined_frames_come_back_in_order,
    },
    Case {
        name: "ten_thousand_idle_connections_cost_little_memory",
        level: Level::Scale,
        scope: Scope::EveryServer,
        checks: "10,000 quiet connections grow the server's memory by less than 24 MiB",
        explains: book::IDLE_BUFFERS,
        run: scale::ten_thousand_idle_connections_cost_little_memory,
    },
    // --- idle_timeout --------------------------------------------------------
    Case {
        name: "an_idle_connection_is_closed_after_the_timeout",
        level: Level::IdleTimeout,
        scope: Scope::EveryServer,
        checks: "a client that goes quiet is closed after --idle-timeout-ms, not before, not much after",
        explains: book::IDLE_TIMEOUT,
        run: idle_timeout::an_idle_connection_is_closed_after_the_timeout,
    },
    Case {
        name: "half_a_frame_is_closed_after_the_timeout",
        level: Level::IdleTimeout,
        scope: Scope::EveryServer,
        checks: "a client that sends half a frame and stops (slowloris) is closed after the timeout",
        explains: book::ACTIVITY,
        run: idle_timeout::half_a_frame_is_closed_after_the_timeout,
    },
    Case {
        name: "bytes_that_never_complete_a_frame_do_not_keep_a_connection_open",
        level: Level::IdleTimeout,
        scope: Scope::EveryServer,
        checks: "a byte every 50 ms that never completes a frame is not activity: closed after the timeout",
        explains: book::ACTIVITY,
        run: idle_timeout::bytes_that_never_complete_a_frame_do_not_keep_a_connection_open,
    },
    Case {
        name: "a_frame_every_200_ms_keeps_a_connection_open",
        level: Level::IdleTimeout,
        scope: Scope::EveryServer,
        checks: "a frame every 200 ms for 2 s, with a timeout of 1 s: the connection stays open",
        explains: book::ACTIVITY,
        run: idle_timeout::a_frame_every_200_ms_keeps_a_connection_open,
    },
    Case {
        name: "a_client_that_never_reads_is_closed",
        level: Level::IdleTimeout,
        scope: Scope::EveryServer,
        checks: "a client that sends without reading its replies is idle too, and is closed",
        explains: book::ACTIVITY,
        run: idle_timeout::a_client_that_never_reads_is_closed,
    },
    Case {
        name: "a_thousand_idle_connections_are_all_reaped",
        level: Level::IdleTimeout,
        scope: Scope::EveryServer,
        checks: "1000 quiet connections are all closed on time, and every descriptor goes back",
        explains: book::IDLE_LIST,
        run: idle_timeout::a_thousand_idle_connections_are_all_reaped,
    },
    Case {
        name: "a_bad_idle_timeout_is_a_startup_error",
        level: Level::IdleTimeout,
        scope: Scope::EchoSteps,
        checks: "--idle-timeout-ms of 0, -1, abc and friends stop the server at start-up with a message",
        explains: book::COMMAND_LINE,
        run: idle_timeout::a_bad_idle_timeout_is_a_startup_error,
    },
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_unique_and_one_line_each() {
        let mut seen = HashSet::new();
        for case in CASES {
            assert!(seen.insert(case.id()), "{} is registered twice", case.id());
            assert!(
                case.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{}: a case's name is its function's snake_case name",
                case.id()
            );
            assert!(
                !case.checks.is_empty() && !case.checks.contains('\n'),
                "{}: `checks` is one line",
                case.id()
            );
        }
    }

    #[test]
    fn levels_stack_except_hello() {
        assert_eq!(Level::Hello.with_lower(), [Level::Hello]);
        assert_eq!(
            Level::EventLoop.with_lower(),
            [Level::Echo, Level::Concurrent, Level::EventLoop]
        );
        assert_eq!(Level::parse("event-loop"), Some(Level::EventLoop));
        for level in Level::ALL {
            assert!(
                cases_in(&[level]).next().is_some(),
                "level {level} has no case"
            );
        }
    }
}
