conformance::suite!(
    env!("CARGO_BIN_EXE_ch09"),
    [echo, concurrent, event_loop, scale, cli, wire, graceful]
);
