use conformance::{Level, Suite, Target};

fn main() {
    Suite::new(
        Target::binary(env!("CARGO_BIN_EXE_ch05")),
        &[Level::Echo, Level::Concurrent],
    )
    .with_known_defect(
        "echo::accept_pauses_while_the_kernel_is_short_of_memory",
        "a blocking accept that fails with ENOBUFS is tried again at once; chapter 9 pauses",
    )
    .run()
}
