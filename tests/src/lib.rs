//! The conformance suite: one set of tests, written once, run against every
//! chapter's server binary over real sockets on 127.0.0.1.
//!
//! A chapter opts in from its own `tests/conformance.rs`, choosing the levels
//! its design can meet:
//!
//! ```ignore
//! conformance::suite!(env!("CARGO_BIN_EXE_ch06"), [echo, concurrent, event_loop]);
//! ```
//!
//! Levels:
//! - `hello`: the ch03 contract (one read, one fixed reply, close);
//! - `echo`: framing, every kind of bad input, signals (all echo servers);
//! - `concurrent`: clients are served independently, a flood stalls no one
//!   and grows no memory (ch05 onwards);
//! - `event_loop`: a thousand connections on one thread, prompt stop (ch06 onwards);
//! - `scale`: a 10,000-frame burst, 10,000 quiet connections in little memory (ch08 onwards).
//!
//! Every test starts its own server on an ephemeral port, waits for its
//! `listening on` line, and bounds every socket operation with a timeout.

pub mod cli;
pub mod concurrent;
pub mod echo;
pub mod event_loop;
pub mod graceful;
pub mod harness;
pub mod hello;
pub mod scale;
pub mod wire;

/// Generates one `#[test]` per case, grouped in a module per level.
#[macro_export]
macro_rules! suite {
    ($bin:expr, [$($level:ident),+ $(,)?]) => {
        $( $crate::suite!(@level $level, $bin); )+
    };
    (@level hello, $bin:expr) => {
        $crate::suite!(@cases hello, $bin, [
            replies_once_and_closes,
            serves_clients_one_after_another,
            survives_silent_and_oversized_clients,
            sigint_exits_zero,
            sigterm_exits_zero,
        ]);
    };
    (@level echo, $bin:expr) => {
        $crate::suite!(@cases echo, $bin, [
            one_frame,
            empty_frame,
            largest_frame,
            pipelined_random_frames_in_one_write,
            frame_sent_one_byte_at_a_time,
            length_4097_closes_only_that_connection,
            length_u32_max_closes_only_that_connection,
            disconnect_mid_frame,
            flood_then_reset_with_replies_pending,
            three_hundred_connections_leak_no_fd,
            half_close_still_gets_every_reply,
            out_of_fds_neither_spins_nor_stops_serving,
            sigint_exits_zero,
            sigterm_exits_zero,
            sigint_while_a_client_is_connected,
            big_burst_read_back_slowly_comes_back_in_order,
        ]);
    };
    (@level concurrent, $bin:expr) => {
        $crate::suite!(@cases concurrent, $bin, [
            idle_client_with_half_a_header_does_not_delay_others,
            two_hundred_clients_pipelining_get_their_own_replies,
            flooding_client_neither_stalls_others_nor_grows_memory,
            out_of_fds_every_client_is_served_or_closed,
            greedy_client_does_not_starve_others,
        ]);
    };
    (@level event_loop, $bin:expr) => {
        $crate::suite!(@cases event_loop, $bin, [
            thousand_simultaneous_connections,
        ]);
    };
    (@level cli, $bin:expr) => {
        $crate::suite!(@cases cli, $bin, [
            help_lists_every_option,
            user_errors_are_one_clear_line,
            addr_accepts_a_host_name,
        ]);
    };
    (@level wire, $bin:expr) => {
        $crate::suite!(@cases wire, $bin, [
            small_pipelined_frames_are_answered_at_once,
            good_frame_then_bad_length_in_one_write,
            urgent_data_does_not_stall_the_connection,
            broken_stderr_never_stops_the_server,
            raises_its_open_file_limit,
            accept_errors_do_not_strand_clients,
        ]);
    };
    (@level graceful, $bin:expr) => {
        $crate::suite!(@cases graceful, $bin, [
            stop_answers_every_frame_received,
            stop_after_a_flood_ends_with_eof_not_reset,
            stop_does_not_wait_past_the_grace_period,
            idle_client_sees_eof_and_the_server_exits_when_it_leaves,
            help_shows_the_grace_period,
        ]);
    };
    (@level scale, $bin:expr) => {
        $crate::suite!(@cases scale, $bin, [
            ten_thousand_pipelined_frames_come_back_in_order,
            ten_thousand_idle_connections_cost_little_memory,
        ]);
    };
    (@cases $level:ident, $bin:expr, [$($case:ident),+ $(,)?]) => {
        mod $level {
            $(
                #[test]
                fn $case() {
                    $crate::$level::$case($bin)
                }
            )+
        }
    };
}
