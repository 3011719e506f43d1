//! Where io_uring is blocked, ch15 says so in one line and exits with
//! status 1. Container runtimes block it with a seccomp filter that makes
//! `io_uring_setup` fail with EPERM; this test installs such a filter in the
//! server's process, just before it starts, so it runs on any kernel.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

#[test]
fn blocked_io_uring_is_one_clear_line() {
    let mut server = Command::new(env!("CARGO_BIN_EXE_ch15"));
    server
        .args(["--addr", "127.0.0.1:0"])
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: runs in the forked child before exec, and only makes two
    // prctl calls, which are async-signal-safe, on memory of its own.
    unsafe { server.pre_exec(block_io_uring_setup) };
    let mut child = server.spawn().expect("start ch15");
    let deadline = Instant::now() + Duration::from_secs(5);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("ch15 is still running with io_uring_setup blocked");
        }
        thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "not one line:\n{stderr}");
    assert!(
        stderr.starts_with("ch15: io_uring is unavailable: Operation not permitted")
            && stderr.contains("kernel.io_uring_disabled")
            && stderr.contains("seccomp"),
        "does not say what is wrong and what to check: {stderr}"
    );
    assert!(out.stdout.is_empty(), "it announced a listener anyway");
}

/// Installs a seccomp filter: `io_uring_setup` fails with EPERM, every
/// other system call is allowed. (A filter for production would check the
/// architecture first; for this test, the running one is the one compiled.)
fn block_io_uring_setup() -> io::Result<()> {
    let code = |bits: u32| bits as u16;
    let program = [
        // Load the system call number, at offset 0 of `struct seccomp_data`.
        libc::sock_filter {
            code: code(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS),
            jt: 0,
            jf: 0,
            k: 0,
        },
        // If it is io_uring_setup, go on to the next instruction, else skip it.
        libc::sock_filter {
            code: code(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K),
            jt: 0,
            jf: 1,
            k: libc::SYS_io_uring_setup as u32,
        },
        libc::sock_filter {
            code: code(libc::BPF_RET | libc::BPF_K),
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        },
        libc::sock_filter {
            code: code(libc::BPF_RET | libc::BPF_K),
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ALLOW,
        },
    ];
    let prog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: PR_SET_NO_NEW_PRIVS takes plain integers; PR_SET_SECCOMP reads
    // `prog`, and through it `program`, both alive for the whole call.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &prog as *const libc::sock_fprog,
            ) != 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
