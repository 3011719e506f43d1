conformance::suite!(
    env!("CARGO_BIN_EXE_ch06"),
    [echo, concurrent, event_loop, cli, wire, graceful]
);
