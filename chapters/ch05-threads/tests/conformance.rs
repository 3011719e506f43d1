use conformance::Level;

fn main() {
    conformance::main(
        env!("CARGO_BIN_EXE_ch05"),
        &[Level::Echo, Level::Concurrent],
    );
}
