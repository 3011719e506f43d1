//! Cases several chapters share (common/testing/cases.rs), against this
//! chapter's server.

#[path = "../../../common/testing/cases.rs"]
mod shared;

shared::cases!(
    env!("CARGO_BIN_EXE_ch05"), [];
    a_client_accepted_with_the_spare_is_served_if_there_is_room,
);
