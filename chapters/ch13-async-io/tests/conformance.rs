use conformance::Level;

// Chapter 9's levels. Not the idle timeout's: chapter 11's idle list was a
// reactor's, and this one has none; timers come back in chapter 14.
fn main() {
    conformance::main(
        env!("CARGO_BIN_EXE_ch13"),
        &[
            Level::Echo,
            Level::Concurrent,
            Level::EventLoop,
            Level::Scale,
        ],
    );
}
