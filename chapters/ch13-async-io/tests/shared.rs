//! Cases several chapters share (common/testing/cases.rs), against this
//! chapter's server.

#[path = "../../../common/testing/cases.rs"]
mod shared;

shared::cases!(
    env!("CARGO_BIN_EXE_ch13"), [];
    an_aborted_client_does_not_stop_the_turning_away,
    accept_pauses_while_the_kernel_is_short_of_memory,
    a_client_accepted_with_the_spare_is_served_if_there_is_room,
    a_stop_that_ends_early_says_how_many_did_not_finish,
);
