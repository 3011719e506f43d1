use conformance::{Level, Suite, Target};

fn main() {
    Suite::new(
        Target::binary(env!("CARGO_BIN_EXE_ch05")),
        &[Level::Echo, Level::Concurrent],
    )
    .run()
}
