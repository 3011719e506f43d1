//! The command line, as a user meets it: `--help`, and one clear line for
//! every mistake, never a backtrace. For every server, ch03 included.

use std::net::TcpListener;
use std::time::Duration;

use crate::harness::{describe_exit, run_bounded, Options, Target};

const RUN_TIMEOUT: Duration = Duration::from_secs(5);

/// `--help` and `-h` print the usage, with `--addr` and every flag, and exit 0.
pub fn help_lists_every_option(target: &Target) {
    for flag in ["--help", "-h"] {
        let out = run_bounded(&target.command, &[flag], &[], RUN_TIMEOUT);
        let usage = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "`{flag}` {} instead of printing the usage and exiting with status 0",
            describe_exit(out.status)
        );
        assert!(
            usage.to_lowercase().contains("usage:") && usage.contains("--addr"),
            "`{flag}` printed no usage with --addr on stdout (it printed {})",
            quoted(&usage)
        );
        assert!(
            usage.contains("-h, --help"),
            "the usage omits `-h, --help`; it reads {}",
            quoted(&usage)
        );
        // This project's servers name themselves as they were run.
        let program = std::path::Path::new(&target.command[0])
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        if program.starts_with("ch") {
            assert!(
                usage.contains(&format!("Usage: {program} ")),
                "the usage of {program} names another program: {}",
                quoted(&usage)
            );
        }
    }
}

// ANCHOR: user_errors
/// A user error is one line on stderr naming what is wrong, and exit status
/// 1; no backtrace, even with RUST_BACKTRACE=1 set as on many machines.
pub fn user_errors_are_one_clear_line(target: &Target) {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let in_use = taken.local_addr().unwrap().to_string();
    let cases: [(&[&str], &str); 4] = [
        (&["--addr", &in_use], &in_use),
        (&["--addr", "127.0.0.1:99999"], "out of range"),
        (&["--addr", "127.0.0.1"], "HOST:PORT"),
        (&["--no-such-flag"], "--no-such-flag"),
    ];
    for (args, must_mention) in cases {
        let out = run_bounded(
            &target.command,
            args,
            &[("RUST_BACKTRACE", "1")],
            RUN_TIMEOUT,
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        let command = args.join(" ");
        assert!(
            out.status.code() == Some(1),
            "`{command}` {} instead of exiting with status 1; its stderr: {}",
            describe_exit(out.status),
            quoted(&stderr)
        );
        let lines = stderr.lines().count();
        assert!(
            lines == 1,
            "`{command}` should explain itself in one line on stderr; it printed {}",
            if lines == 0 {
                "nothing".to_string()
            } else {
                format!("{lines} lines: {}", quoted(&stderr))
            }
        );
        assert!(
            stderr.contains(must_mention),
            "`{command}`: the error does not mention {must_mention:?}: {}",
            quoted(&stderr)
        );
    }
}
// ANCHOR_END: user_errors

/// `--addr localhost:PORT` resolves the name, as `ping localhost` would,
/// and the server listens there: on the loopback interface, on that port
/// (a server that ignored the option would be found listening elsewhere).
pub fn addr_accepts_a_host_name(target: &Target) {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let asked = format!("localhost:{port}");
    let mut server = target.start_with(Options {
        addr: Some(&asked),
        ..Options::default()
    });
    assert!(
        server.addr.ip().is_loopback() && server.addr.port() == port,
        "told `--addr {asked}`, the server announced `listening on {}`: it should \
         resolve the name and listen on that port",
        server.addr
    );
    // A connection, not an echo: the hello level's servers speak another protocol.
    if let Err(e) = server.try_connect() {
        panic!("told `--addr {asked}`, the server announced it, but {e}");
    }
    server.assert_running();
}

/// What a program printed, for a one-line reason: its first lines, quoted,
/// or "nothing".
pub(crate) fn quoted(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    match lines.len() {
        0 => "nothing".to_string(),
        1..=3 => format!("`{}`", lines.join(" / ")),
        n => format!("`{}` and {} more lines", lines[..3].join(" / "), n - 3),
    }
}
