//! Whether this system lets us use io_uring, asked once per test binary.

use std::io::Write;
use std::sync::OnceLock;

use io_uring::IoUring;

/// True, after saying so once on stderr, if io_uring is unavailable here
/// (too old a kernel, `kernel.io_uring_disabled`, a seccomp filter): the
/// caller then skips its test. `ECHO_REQUIRE_IO_URING=1` makes that a failure
/// instead, for CI that must not skip.
pub fn unavailable() -> bool {
    static WHY: OnceLock<Option<String>> = OnceLock::new();
    let why = WHY.get_or_init(|| {
        // The server's own setup: a kernel with io_uring but without these
        // flags (before 6.1) cannot run it either.
        let setup = IoUring::<io_uring::squeue::Entry>::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(8);
        let e = setup.err()?;
        if std::env::var_os("ECHO_REQUIRE_IO_URING").is_some_and(|v| v == "1") {
            panic!("io_uring unavailable ({e}), and ECHO_REQUIRE_IO_URING=1 forbids skipping");
        }
        let why = format!("skipping: io_uring unavailable: {e}");
        // Straight to stderr: the test harness captures `eprintln!`.
        let _ = writeln!(std::io::stderr(), "{why}");
        Some(why)
    });
    why.is_some()
}
