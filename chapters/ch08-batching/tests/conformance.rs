conformance::suite!(
    env!("CARGO_BIN_EXE_ch08"),
    [echo, concurrent, event_loop, scale, cli, wire, graceful]
);
