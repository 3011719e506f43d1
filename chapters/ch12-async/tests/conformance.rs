use conformance::Level;

// The default idle timeout (60 s) is far longer than any case here takes:
// the suite checks that chapter 9's behaviour is intact.
fn main() {
    conformance::main(
        env!("CARGO_BIN_EXE_ch12"),
        &[
            Level::Echo,
            Level::Concurrent,
            Level::EventLoop,
            Level::Scale,
        ],
    );
}
