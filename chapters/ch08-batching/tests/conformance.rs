use conformance::{Level, Suite, Target};

fn main() {
    Suite::new(
        Target::binary(env!("CARGO_BIN_EXE_ch08")),
        &[
            Level::Echo,
            Level::Concurrent,
            Level::EventLoop,
            Level::Scale,
        ],
    )
    .with_known_defect(
        "echo::accept_pauses_while_the_kernel_is_short_of_memory",
        "the listener stays readable, and epoll_wait returns to it at once; chapter 9 pauses",
    )
    .run()
}
