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
    .run()
}
