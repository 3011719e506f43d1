use conformance::Level;

fn main() {
    conformance::main(
        env!("CARGO_BIN_EXE_ch14"),
        &[
            Level::Echo,
            Level::Concurrent,
            Level::EventLoop,
            Level::Scale,
        ],
    );
}
