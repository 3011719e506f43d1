// The default idle timeout (60 s) is far longer than any test here takes:
// the suite checks that chapter 9's behaviour is intact.
conformance::suite!(
    env!("CARGO_BIN_EXE_ch12"),
    [echo, concurrent, event_loop, scale, cli, wire, graceful]
);
