conformance::suite!(env!("CARGO_BIN_EXE_ch05"), [echo, concurrent, cli, wire]);
