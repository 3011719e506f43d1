//! The command line every server shares: `--addr HOST:PORT`, `-h`/`--help`,
//! and the chapter's own options; and how a server reports a user error:
//! one line on stderr, exit status 1.
//!
//! A chapter declares each option as it reads it, so `--help` lists exactly
//! the options the chapter takes:
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! let mut args = common::args::Args::from_env("ch11", "echo server with idle timeouts");
//! let idle_ms: u64 = args.option("idle-timeout-ms", "MS", "close connections idle this long", 60_000);
//! let addr = args.finish()?; // prints the usage and exits on --help
//! # Ok(()) }
//! ```

use std::fmt::{Display, Write as _};
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::process::ExitCode;
use std::str::FromStr;

use anyhow::{anyhow, bail, Context, Result};
use nix::errno::Errno;

/// Where a server listens when no `--addr` is given.
pub const DEFAULT_ADDR: &str = "127.0.0.1:1234";

/// Said under every server's usage: what happens without being asked.
const FOOTER: &str = "\
At start the server raises its soft limit on open files (ulimit -n) to the hard limit.
Logs go to stderr; ECHO_LOG=error|warn|info|debug chooses how much (default: info).";

/// The command line, claimed option by option with [`Args::option`] and
/// [`Args::flag`], then checked by [`Args::finish`].
pub struct Args {
    program: String,
    about: &'static str,
    /// What the usage ends with: for a server, what it does unasked.
    footer: &'static str,
    /// `MESSAGE...` in the usage line, for a program that takes operands.
    operands: Option<(&'static str, &'static str)>,
    /// Arguments not claimed yet.
    unclaimed: Vec<String>,
    /// One line of usage per declared option.
    usage: Vec<(String, String)>,
    help: bool,
    /// The `--addr` value, claimed first so no operand can take it.
    addr: String,
    /// The first bad value, reported by `finish` unless `--help` was asked.
    error: Option<anyhow::Error>,
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Outcome {
    /// Serve on this address.
    Serve(SocketAddr),
    /// Print this usage text and exit successfully.
    Help(String),
}

impl Args {
    /// The process's own arguments. `about` is the one-line description
    /// printed by `--help`.
    pub fn from_env(program: &str, about: &'static str) -> Args {
        Args::parse(program, about, std::env::args().skip(1))
    }

    pub fn parse(
        program: &str,
        about: &'static str,
        args: impl IntoIterator<Item = String>,
    ) -> Args {
        let mut unclaimed: Vec<String> = args.into_iter().collect();
        let given = unclaimed.len();
        unclaimed.retain(|a| a != "-h" && a != "--help");
        let mut args = Args {
            program: program.to_string(),
            about,
            help: unclaimed.len() != given,
            footer: FOOTER,
            operands: None,
            unclaimed,
            usage: Vec::new(),
            addr: String::new(),
            error: None,
        };
        args.addr = args.option(
            "addr",
            "HOST:PORT",
            "where to listen; port 0 picks a free port, a name is resolved",
            DEFAULT_ADDR.to_string(),
        );
        args
    }

    fn declare(&mut self, name: &str, value: &str, help: &str, default: impl Display) {
        let flag = if value.is_empty() {
            format!("--{name}")
        } else {
            format!("--{name} {value}")
        };
        let default = default.to_string();
        let help = if default.is_empty() {
            help.to_string()
        } else {
            format!("{help} [default: {default}]")
        };
        self.usage.push((flag, help));
    }

    /// Claims `--name VALUE` (or `--name=VALUE`), returning `default` when
    /// it is absent. A bad value is reported by [`Args::finish`].
    pub fn option<T>(&mut self, name: &str, value: &str, help: &str, default: T) -> T
    where
        T: FromStr + Display,
        T::Err: Display,
    {
        self.declare(name, value, help, &default);
        match self.claim_last(name) {
            Ok(None) => default,
            Ok(Some(text)) => match text.parse() {
                Ok(parsed) => parsed,
                Err(e) => {
                    self.fail(anyhow!("--{name} {text:?}: {e}"));
                    default
                }
            },
            Err(e) => {
                self.fail(e);
                default
            }
        }
    }

    /// [`Args::option`] for a number that must lie in `range`. Out of it,
    /// the error names the flag and the limit, the same way in every
    /// chapter: `--threads 0: must be at least 1`.
    pub fn option_in<T>(
        &mut self,
        name: &str,
        value: &str,
        help: &str,
        default: T,
        range: impl RangeBounds<T>,
    ) -> T
    where
        T: FromStr + Display + PartialOrd,
        T::Err: Display,
    {
        let parsed = self.option(name, value, help, default);
        let limit = match (range.start_bound(), range.end_bound()) {
            (Bound::Included(min), _) if parsed < *min => format!("must be at least {min}"),
            (Bound::Excluded(min), _) if parsed <= *min => format!("must be more than {min}"),
            (_, Bound::Included(max)) if parsed > *max => format!("must be at most {max}"),
            (_, Bound::Excluded(max)) if parsed >= *max => format!("must be less than {max}"),
            _ => return parsed,
        };
        self.fail(anyhow!("--{name} {parsed}: {limit}"));
        parsed
    }

    /// For a program that is not a server (a client): no server footer.
    /// `about_addr` replaces the help of `--addr`, which says "where to listen".
    pub fn not_a_server(mut self, about_addr: &str) -> Args {
        self.footer = "";
        self.usage[0].1 = format!("{about_addr} [default: {DEFAULT_ADDR}]");
        self
    }

    /// Claims every argument that is not an option (`MESSAGE...`). Call it
    /// after the options, which claim their values first. After `--`,
    /// everything is an operand.
    pub fn operands(&mut self, name: &'static str, help: &'static str) -> Vec<String> {
        self.operands = Some((name, help));
        let mut operands = Vec::new();
        let mut rest = Vec::new();
        let mut after_dashes = false;
        for arg in self.unclaimed.drain(..) {
            if after_dashes || !arg.starts_with('-') || arg == "-" {
                operands.push(arg);
            } else if arg == "--" {
                after_dashes = true;
            } else {
                rest.push(arg);
            }
        }
        self.unclaimed = rest;
        operands
    }

    /// Claims `--name`, an option without a value.
    pub fn flag(&mut self, name: &str, help: &str) -> bool {
        self.declare(name, "", help, "");
        let flag = format!("--{name}");
        let before = self.unclaimed.len();
        self.unclaimed.retain(|a| *a != flag);
        before != self.unclaimed.len()
    }

    /// The value of the last `--name`, as in most programs: a later flag
    /// overrides an earlier one (a script's default, then the user's).
    fn claim_last(&mut self, name: &str) -> Result<Option<String>> {
        let mut last = None;
        while let Some(value) = self.claim(name)? {
            last = Some(value);
        }
        Ok(last)
    }

    fn claim(&mut self, name: &str) -> Result<Option<String>> {
        let flag = format!("--{name}");
        let with_value = format!("--{name}=");
        let Some(i) = self
            .unclaimed
            .iter()
            .position(|a| *a == flag || a.starts_with(&with_value))
        else {
            return Ok(None);
        };
        let arg = self.unclaimed.remove(i);
        if let Some(value) = arg.strip_prefix(&with_value) {
            return Ok(Some(value.to_string()));
        }
        if i < self.unclaimed.len() {
            Ok(Some(self.unclaimed.remove(i)))
        } else {
            bail!("{flag} needs a value")
        }
    }

    fn fail(&mut self, error: anyhow::Error) {
        self.error.get_or_insert(error);
    }

    /// Checks the command line: `--help`, then bad values, then anything
    /// left unclaimed (a typo must be an error, not a silent default).
    pub fn outcome(self) -> Result<Outcome> {
        if self.help {
            return Ok(Outcome::Help(self.usage_text()));
        }
        if let Some(error) = self.error {
            return Err(error);
        }
        if let Some(arg) = self.unclaimed.first() {
            if arg.starts_with('-') {
                bail!("unknown option {arg} (see --help)");
            }
            bail!("unexpected argument {arg:?} (see --help)");
        }
        Ok(Outcome::Serve(resolve(&self.addr)?))
    }

    /// [`Args::outcome`] for a server's `main`: on `--help` prints the usage
    /// and exits with status 0; otherwise returns where to listen.
    pub fn finish(self) -> Result<SocketAddr> {
        match self.outcome()? {
            Outcome::Serve(addr) => Ok(addr),
            Outcome::Help(text) => {
                let _ = io::stdout().write_all(text.as_bytes());
                std::process::exit(0);
            }
        }
    }

    fn usage_text(&self) -> String {
        let mut rows: Vec<(String, String)> = self
            .usage
            .iter()
            .map(|(flag, help)| (format!("    {flag}"), help.clone()))
            .collect();
        rows.push(("-h, --help".into(), "print this help and exit".into()));
        let width = rows.iter().map(|(flag, _)| flag.len()).max().unwrap_or(0);
        let operands = match self.operands {
            Some((name, _)) => format!(" [{name}...]"),
            None => String::new(),
        };
        let mut text = format!(
            "{}: {}\n\nUsage: {} [OPTIONS]{operands}\n\n",
            self.program, self.about, self.program
        );
        if let Some((name, help)) = self.operands {
            let _ = writeln!(text, "{name}...: {help}\n");
        }
        text.push_str("Options:\n");
        for (flag, help) in rows {
            let _ = writeln!(text, "  {flag:<width$}  {help}");
        }
        if !self.footer.is_empty() {
            let _ = writeln!(text, "\n{}", self.footer);
        }
        text
    }
}

/// Turns `HOST:PORT` into an address, resolving a host name (the first IPv4
/// address it has, else the first address), with an error that says what
/// is wrong with it.
pub fn resolve(text: &str) -> Result<SocketAddr> {
    let Some((host, port)) = text.rsplit_once(':') else {
        bail!("--addr {text:?} is not HOST:PORT, e.g. {DEFAULT_ADDR}");
    };
    let port: u16 = port.parse().map_err(|_| match port.parse::<u64>() {
        Ok(_) => anyhow!("--addr {text}: port {port} is out of range (0 to 65535)"),
        Err(_) => anyhow!("--addr {text}: port {port:?} is not a number"),
    })?;
    // [::1]:1234 is how an IPv6 address and a port are written together.
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let found: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .with_context(|| format!("--addr {text}: cannot resolve host {host:?}"))?
        .collect();
    found
        .iter()
        .find(|a| a.is_ipv4())
        .or(found.first())
        .copied()
        .with_context(|| format!("--addr {text}: host {host:?} has no address"))
}

/// Runs a server's real `main` and turns an error into one line on stderr
/// and exit status 1: `ch09: cannot listen on 127.0.0.1:1234: Address
/// already in use`. (Returning `anyhow::Result` from `main` would print
/// `Error: ...` and, with `RUST_BACKTRACE=1` set, a backtrace: noise for a
/// user who typed a wrong port.)
pub fn run(main: impl FnOnce() -> Result<()>) -> ExitCode {
    match main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let argv0 = std::env::args().next().unwrap_or_default();
            let program = Path::new(&argv0)
                .file_name()
                .map_or("server".into(), |name| name.to_string_lossy());
            // No unwrap: a broken stderr must not turn an error into a panic.
            let _ = writeln!(io::stderr(), "{program}: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, as `{e:#}` prints them, but with
/// every system error in std's words (`Permission denied (os error 13)`),
/// whether it came through std or through nix, whose own are
/// `EACCES: Permission denied`: one wording, whichever crate a chapter
/// called.
fn one_line(e: &anyhow::Error) -> String {
    let causes: Vec<String> = e
        .chain()
        .map(|cause| match cause.downcast_ref::<Errno>() {
            Some(&errno) => io::Error::from(errno).to_string(),
            None => cause.to_string(),
        })
        .collect();
    causes.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Args {
        Args::parse("chXX", "a test", args.iter().map(|s| s.to_string()))
    }

    fn serve(args: Args) -> Result<SocketAddr> {
        match args.outcome()? {
            Outcome::Serve(addr) => Ok(addr),
            Outcome::Help(_) => panic!("help"),
        }
    }

    #[test]
    fn default_and_explicit_addr() {
        assert_eq!(serve(parse(&[])).unwrap().to_string(), DEFAULT_ADDR);
        assert_eq!(serve(parse(&["--addr", "127.0.0.1:0"])).unwrap().port(), 0);
        assert_eq!(serve(parse(&["--addr=127.0.0.1:7"])).unwrap().port(), 7);
        let last = serve(parse(&["--addr", "127.0.0.1:0", "--addr", "127.0.0.1:5"]));
        assert_eq!(last.unwrap().port(), 5, "the last --addr wins");
        assert_eq!(
            serve(parse(&["--addr", "[::1]:8"])).unwrap().to_string(),
            "[::1]:8"
        );
        let local = serve(parse(&["--addr", "localhost:9"])).unwrap();
        assert!(local.ip().is_loopback() && local.port() == 9);
    }

    #[test]
    fn options_are_claimed_or_rejected() {
        let mut args = parse(&["--idle-timeout-ms", "500", "--pin"]);
        assert_eq!(args.option("idle-timeout-ms", "MS", "", 1u64), 500);
        assert!(args.flag("pin", ""));
        assert!(serve(args).is_ok());
        let mut args = parse(&[]);
        assert_eq!(args.option("idle-timeout-ms", "MS", "", 1u64), 1);
        assert!(!args.flag("pin", ""));

        let error = |args: &[&str]| format!("{:#}", serve(parse(args)).unwrap_err());
        assert_eq!(
            error(&["--bogus", "1"]),
            "unknown option --bogus (see --help)"
        );
        assert_eq!(
            error(&["stray"]),
            "unexpected argument \"stray\" (see --help)"
        );
        assert_eq!(error(&["--addr"]), "--addr needs a value");
        assert!(error(&["--addr", "nonsense"]).contains("is not HOST:PORT"));
        assert_eq!(
            error(&["--addr", "127.0.0.1:99999"]),
            "--addr 127.0.0.1:99999: port 99999 is out of range (0 to 65535)"
        );
        assert!(error(&["--addr", "no-such-host.invalid:1"])
            .starts_with("--addr no-such-host.invalid:1: cannot resolve host"));
        let mut args = parse(&["--idle-timeout-ms", "soon"]);
        args.option("idle-timeout-ms", "MS", "", 1u64);
        assert_eq!(
            format!("{:#}", serve(args).unwrap_err()),
            "--idle-timeout-ms \"soon\": invalid digit found in string"
        );
    }

    #[test]
    fn a_number_out_of_range_names_the_flag_and_the_limit() {
        let error = |args: &[&str], range: (Bound<u64>, Bound<u64>)| {
            let mut args = parse(args);
            args.option_in("threads", "N", "", 2u64, range);
            serve(args).map_err(|e| format!("{e:#}"))
        };
        let one_to_64 = (Bound::Included(1), Bound::Included(64));
        assert!(error(&["--threads", "1"], one_to_64).is_ok());
        assert!(error(&["--threads", "64"], one_to_64).is_ok());
        assert!(error(&[], one_to_64).is_ok(), "the default");
        assert_eq!(
            error(&["--threads", "0"], one_to_64).unwrap_err(),
            "--threads 0: must be at least 1"
        );
        assert_eq!(
            error(&["--threads", "65"], one_to_64).unwrap_err(),
            "--threads 65: must be at most 64"
        );
        let below_64 = (Bound::Excluded(0), Bound::Excluded(64));
        assert_eq!(
            error(&["--threads=0"], below_64).unwrap_err(),
            "--threads 0: must be more than 0"
        );
        assert_eq!(
            error(&["--threads=64"], below_64).unwrap_err(),
            "--threads 64: must be less than 64"
        );
        // A value that does not parse says so, as any option's.
        assert_eq!(
            error(&["--threads", "-1"], one_to_64).unwrap_err(),
            "--threads \"-1\": invalid digit found in string"
        );
    }

    #[test]
    fn system_errors_read_the_same_through_std_and_nix() {
        let through_nix = anyhow::Error::from(Errno::EACCES).context("bind");
        let through_std = anyhow::Error::from(io::Error::from_raw_os_error(libc::EACCES));
        assert_eq!(
            one_line(&through_nix),
            "bind: Permission denied (os error 13)"
        );
        assert_eq!(
            one_line(&through_std.context("bind")),
            one_line(&through_nix)
        );
        let plain = anyhow!("no such host").context("--addr x:1");
        assert_eq!(one_line(&plain), format!("{plain:#}"));
    }

    #[test]
    fn help_lists_every_option_and_wins_over_errors() {
        for help in ["-h", "--help"] {
            let mut args = parse(&[help, "--idle-timeout-ms", "soon", "--bogus"]);
            args.option("idle-timeout-ms", "MS", "close idle connections", 60_000u64);
            let Outcome::Help(text) = args.outcome().unwrap() else {
                panic!("no help");
            };
            assert!(text.contains("Usage: chXX [OPTIONS]"), "{text}");
            assert!(text.contains("--addr HOST:PORT"), "{text}");
            assert!(text.contains("[default: 127.0.0.1:1234]"), "{text}");
            assert!(
                text.contains("--idle-timeout-ms MS  close idle connections [default: 60000]"),
                "{text}"
            );
            assert!(text.contains("-h, --help"), "{text}");
        }
    }
}
