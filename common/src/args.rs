//! Command-line flags shared by every server: `--addr HOST:PORT` plus any
//! chapter-specific `--name value` options.

use std::net::SocketAddr;
use std::str::FromStr;

use anyhow::{bail, Context, Result};

/// Where a server listens when no `--addr` is given.
pub const DEFAULT_ADDR: &str = "127.0.0.1:1234";

/// The parsed command line: the listening address and the other `--name value`
/// pairs, which a chapter claims with [`Args::take`] before calling [`Args::finish`].
#[derive(Debug)]
pub struct Args {
    pub addr: SocketAddr,
    options: Vec<(String, String)>,
}

impl Args {
    /// Parses the process's own arguments.
    pub fn from_env() -> Result<Args> {
        Args::parse(std::env::args().skip(1))
    }

    /// Parses `--addr HOST:PORT`, `--addr=HOST:PORT` and other `--name value` pairs.
    /// Port 0 asks the kernel for any free port.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Args> {
        let mut addr = DEFAULT_ADDR.to_string();
        let mut options = Vec::new();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let Some(flag) = arg.strip_prefix("--") else {
                bail!("unexpected argument {arg:?} (usage: --addr HOST:PORT)");
            };
            let (name, value) = match flag.split_once('=') {
                Some((name, value)) => (name.to_string(), value.to_string()),
                None => {
                    let value = args
                        .next()
                        .with_context(|| format!("--{flag} needs a value"))?;
                    (flag.to_string(), value)
                }
            };
            if name == "addr" {
                addr = value;
            } else {
                options.push((name, value));
            }
        }
        let addr = addr
            .parse()
            .with_context(|| format!("--addr {addr:?} is not HOST:PORT, e.g. {DEFAULT_ADDR}"))?;
        Ok(Args { addr, options })
    }

    /// Removes `--name value` and parses the value; `None` if it was not given.
    pub fn take<T>(&mut self, name: &str) -> Result<Option<T>>
    where
        T: FromStr,
        T::Err: std::error::Error + Send + Sync + 'static,
    {
        let Some(i) = self.options.iter().position(|(n, _)| n == name) else {
            return Ok(None);
        };
        let (_, value) = self.options.remove(i);
        let parsed = value
            .parse()
            .with_context(|| format!("--{name} {value:?} is not valid"))?;
        Ok(Some(parsed))
    }

    /// Fails on any option no one claimed, so a typo is an error, not a silent default.
    pub fn finish(self) -> Result<SocketAddr> {
        if let Some((name, _)) = self.options.first() {
            bail!("unknown option --{name}");
        }
        Ok(self.addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args> {
        Args::parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn default_and_explicit_addr() {
        assert_eq!(parse(&[]).unwrap().addr.to_string(), DEFAULT_ADDR);
        assert_eq!(parse(&["--addr", "127.0.0.1:0"]).unwrap().addr.port(), 0);
        assert_eq!(parse(&["--addr=127.0.0.1:7"]).unwrap().addr.port(), 7);
    }

    #[test]
    fn options_are_claimed_or_rejected() {
        let mut args = parse(&["--idle-timeout-ms", "500"]).unwrap();
        assert_eq!(args.take::<u64>("idle-timeout-ms").unwrap(), Some(500));
        assert!(args.finish().is_ok());
        assert!(parse(&["--bogus", "1"]).unwrap().finish().is_err());
        assert!(parse(&["--addr", "nonsense"]).is_err());
        assert!(parse(&["stray"]).is_err());
    }
}
