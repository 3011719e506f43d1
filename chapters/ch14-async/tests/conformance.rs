use conformance::Level;

// Every level up to chapter 9's, with the default idle timeout (60 s, far
// longer than any of those cases takes), and chapter 11's idle timeout,
// whose cases set short timeouts with --idle-timeout-ms.
fn main() {
    conformance::main(
        env!("CARGO_BIN_EXE_ch14"),
        &[
            Level::Echo,
            Level::Concurrent,
            Level::EventLoop,
            Level::Scale,
            Level::IdleTimeout,
        ],
    );
}
