//! The case several chapters share (common/testing/cases.rs) that applies
//! to this one: its accept goes through io_uring, not accept4, so the
//! accept faults, preloaded over accept4, would test nothing here.

#[path = "../../../common/testing/cases.rs"]
mod shared;
mod uring;

#[test]
fn a_stop_that_ends_early_says_how_many_did_not_finish() {
    if uring::unavailable() {
        return;
    }
    shared::a_stop_that_ends_early_says_how_many_did_not_finish(env!("CARGO_BIN_EXE_ch13"), &[]);
}
