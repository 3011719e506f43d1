//! Logging to stderr that can never take a server down.
//!
//! `eprintln!` panics when the write fails, and a write to stderr fails as
//! soon as stderr is a pipe whose reader has gone (`ch09 2>&1 | head -1`, a
//! log shipper that died): the first log line would then kill the server,
//! and a client can make us log on purpose. These macros drop a line they
//! cannot write instead.
//!
//! Levels keep the two audiences apart: `error!` is a fault in the server
//! (a system call that should not fail), `warn!` a resource running out,
//! `info!` what an operator wants to see (start, stop, a connection turned
//! away), `debug!` what a peer did (reset, sent a bad frame, left mid-frame):
//! normal on the Internet and no business of the operator by default.
//! `ECHO_LOG=debug` (or error, warn, info) chooses; info is the default.

use std::fmt;
use std::io::{self, Write};
use std::sync::OnceLock;

/// How much a line matters; a line is written if its level is at most the
/// one `ECHO_LOG` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
}

impl Level {
    fn from_env() -> Level {
        match std::env::var("ECHO_LOG").as_deref() {
            Ok("error") => Level::Error,
            Ok("warn") => Level::Warn,
            Ok("debug") => Level::Debug,
            _ => Level::Info,
        }
    }
}

/// The level `ECHO_LOG` asked for, read once.
pub fn max_level() -> Level {
    static MAX: OnceLock<Level> = OnceLock::new();
    *MAX.get_or_init(Level::from_env)
}

/// Writes one line to stderr, if `level` is enabled; a failed write is ignored.
///
/// The line is formatted first and written with a single call, so that lines
/// from several threads never interleave within a line.
pub fn write(level: Level, args: fmt::Arguments<'_>) {
    if level > max_level() {
        return;
    }
    let prefix = match level {
        Level::Error => "error: ",
        Level::Warn => "warning: ",
        Level::Info | Level::Debug => "",
    };
    let line = format!("{prefix}{args}\n");
    let _ = io::stderr().write_all(line.as_bytes());
}

/// A fault in the server itself.
#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Error, format_args!($($arg)*)) };
}

/// A resource running out.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Warn, format_args!($($arg)*)) };
}

/// What an operator wants to see.
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Info, format_args!($($arg)*)) };
}

/// What a peer did: quiet unless `ECHO_LOG=debug`.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Debug, format_args!($($arg)*)) };
}

/// `3 connections`, `1 connection`: a count and its noun, for log lines.
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
