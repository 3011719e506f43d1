//! Finding, building, starting and stopping the servers under test.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// A server the benchmark knows how to run, whether or not it exists yet.
pub struct Spec {
    /// Column name in the tables.
    pub label: &'static str,
    pub package: &'static str,
    pub args: &'static [&'static str],
    /// Serves one client at a time: expected to stall with more.
    pub blocking: bool,
}

/// In the order of the book, then the yardstick.
pub const SPECS: &[Spec] = &[
    Spec {
        label: "ch04",
        package: "ch04",
        args: &[],
        blocking: true,
    },
    Spec {
        label: "ch05",
        package: "ch05",
        args: &[],
        blocking: false,
    },
    Spec {
        label: "ch06",
        package: "ch06",
        args: &[],
        blocking: false,
    },
    Spec {
        label: "ch07",
        package: "ch07",
        args: &[],
        blocking: false,
    },
    Spec {
        label: "ch08",
        package: "ch08",
        args: &[],
        blocking: false,
    },
    Spec {
        label: "ch09",
        package: "ch09",
        args: &[],
        blocking: false,
    },
    Spec {
        label: "ch10",
        package: "ch10",
        args: &[],
        blocking: false,
    },
    Spec {
        label: "tokio-ct",
        package: "tokio-echo",
        args: &["--runtime", "current-thread"],
        blocking: false,
    },
    Spec {
        label: "tokio-mt",
        package: "tokio-echo",
        args: &["--runtime", "multi-thread"],
        blocking: false,
    },
];

/// A server that exists and was built.
pub struct Server {
    pub spec: &'static Spec,
    pub binary: PathBuf,
}

/// What `cargo metadata` tells us about the workspace.
pub struct Workspace {
    pub target_dir: PathBuf,
    /// Package name → name of its main binary.
    bins: HashMap<String, String>,
}

fn cargo() -> Command {
    // Under `cargo run`, CARGO is the cargo that runs us: use the same one.
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

impl Workspace {
    pub fn load(root: &Path) -> Result<Workspace> {
        let out = cargo()
            .args(["metadata", "--no-deps", "--format-version", "1"])
            .current_dir(root)
            .stderr(Stdio::inherit())
            .output()
            .context("running cargo metadata")?;
        if !out.status.success() {
            bail!("cargo metadata failed");
        }
        let meta: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let target_dir = PathBuf::from(
            meta["target_directory"]
                .as_str()
                .context("target_directory")?,
        );
        let mut bins = HashMap::new();
        for package in meta["packages"].as_array().context("packages")? {
            let name = package["name"].as_str().unwrap_or_default().to_string();
            let targets = package["targets"].as_array().cloned().unwrap_or_default();
            let bin_names: Vec<&str> = targets
                .iter()
                .filter(|t| {
                    t["kind"]
                        .as_array()
                        .is_some_and(|k| k.iter().any(|k| k == "bin"))
                })
                .filter_map(|t| t["name"].as_str())
                .collect();
            // Prefer the binary named like the package (ch03 also ships ch03-client).
            let bin = bin_names.iter().find(|&&b| b == name).or(bin_names.first());
            if let Some(bin) = bin {
                bins.insert(name, bin.to_string());
            }
        }
        Ok(Workspace { target_dir, bins })
    }

    pub fn binary(&self, package: &str) -> Option<PathBuf> {
        let bin = self.bins.get(package)?;
        Some(self.target_dir.join("release").join(bin))
    }

    pub fn has(&self, package: &str) -> bool {
        self.bins.contains_key(package)
    }
}

/// Builds the given packages in release mode. If the whole set fails (a
/// chapter being written may not compile), builds them one by one and
/// returns only those that built.
pub fn build(root: &Path, packages: &[&str]) -> Vec<String> {
    let run = |pkgs: &[&str]| {
        let mut cmd = cargo();
        cmd.args(["build", "--release", "--quiet"])
            .current_dir(root);
        for p in pkgs {
            cmd.args(["-p", p]);
        }
        cmd.status().is_ok_and(|s| s.success())
    };
    if run(packages) {
        return packages.iter().map(|p| p.to_string()).collect();
    }
    eprintln!("bench: building everything at once failed; trying each package alone");
    packages
        .iter()
        .filter(|p| {
            let ok = run(&[p]);
            if !ok {
                eprintln!("bench: skipping {p}: it does not build");
            }
            ok
        })
        .map(|p| p.to_string())
        .collect()
}

/// A running server.
pub struct Running {
    child: Child,
    pub addr: SocketAddr,
}

/// Starts `server` on a free port and waits for its `listening on` line.
pub fn start(server: &Server, log: &Path) -> Result<Running> {
    let log = File::options().create(true).append(true).open(log)?;
    let mut child = Command::new(&server.binary)
        .args(["--addr", "127.0.0.1:0"])
        .args(server.spec.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", server.binary.display()))?;
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout);
        let mut first = String::new();
        let _ = tx.send(lines.read_line(&mut first).map(|_| first));
        // Keep draining: a server that prints more must never block on a full pipe.
        let _ = std::io::copy(&mut lines, &mut std::io::sink());
    });
    let line = match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(line)) => line,
        Ok(Err(e)) => {
            let _ = child.kill();
            return Err(e).context("reading the server's stdout");
        }
        Err(_) => {
            let _ = child.kill();
            bail!("no `listening on` line within 10 s");
        }
    };
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .and_then(|a| a.parse().ok());
    match addr {
        Some(addr) => Ok(Running { child, addr }),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            bail!("expected `listening on HOST:PORT`, got {line:?}")
        }
    }
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's peak resident memory since it started (VmHWM), in kB.
    /// The server is fresh for every run, so the peak belongs to this run.
    pub fn peak_rss_kb(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let kb = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
        kb.trim().trim_end_matches("kB").trim().parse().ok()
    }

    /// Sends SIGINT and waits up to 5 s: the contract is a prompt exit with status 0.
    pub fn stop(mut self) -> Result<()> {
        let pid = Pid::from_raw(self.child.id() as i32);
        kill(pid, Signal::SIGINT).context("sending SIGINT")?;
        let id = self.child.id();
        match wait_timeout(&mut self.child, Duration::from_secs(5))? {
            Some(status) if status.success() => Ok(()),
            Some(status) => bail!("after SIGINT it exited with {status}, not 0"),
            None => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("pid {id} did not exit within 5 s of SIGINT; killed it")
            }
        }
    }
}

impl Drop for Running {
    /// A server left behind by an error path must not outlive the benchmark.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits for `child` to exit for at most `timeout`; `None` if it is still running.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>> {
    // Polling try_wait is crude but needs no extra thread or signal juggling,
    // and only decides how quickly we notice an exit, never correctness.
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if std::time::Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs the load generator against `addr` and returns its exit code and output.
pub fn run_loadgen(
    loadgen: &Path,
    args: &[String],
    timeout: Duration,
) -> Result<(Option<i32>, String, String)> {
    let mut child = Command::new(loadgen)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting loadgen")?;
    // Read both pipes on threads so a chatty child cannot block on them.
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let status = match wait_timeout(&mut child, timeout)? {
        Some(status) => status,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            bail!("loadgen did not finish within {timeout:?}; killed it");
        }
    };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    Ok((status.code(), out, err))
}
