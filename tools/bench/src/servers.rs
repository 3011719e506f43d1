//! Finding, building, starting and stopping the servers under test.

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

/// What a server is, for the report: the chapters are compared with tokio,
/// and null-echo measures the load generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Chapter,
    /// tokio on its current-thread runtime: the chapters' yardstick.
    TokioCt,
    TokioMt,
    /// null-echo: not a server under test, the load generator's ceiling.
    Ceiling,
}

/// A server the benchmark runs.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Row name in the tables; what `--only` matches.
    pub label: String,
    pub package: String,
    /// The binary to run, of that package.
    pub bin: String,
    pub args: Vec<String>,
    /// Serves one client at a time: expected to stall with more.
    pub blocking: bool,
    pub kind: Kind,
    /// The tokio variant (`idiomatic`, `tuned`); empty for the others.
    pub variant: &'static str,
    /// One line on what it is, for the table of servers.
    pub about: String,
    /// Run only when named with `--only`.
    pub optional: bool,
}

/// The first chapter that is an echo server of the framing (ch03 is not).
const FIRST_CHAPTER: u32 = 4;

/// Chapters that are blocking when their manifest does not say: ch04 serves
/// one client at a time. `[package.metadata.bench] blocking = true` says so
/// from the chapter itself.
const BLOCKING_BY_DEFAULT: &[&str] = &["ch04"];

/// Every server, in the order of the book, then tokio, then null-echo.
///
/// Chapters are the workspace's packages named `chNN` (NN ≥ 4) under
/// `chapters/`, read from `cargo metadata`; each may carry
///
/// ```toml
/// [package.metadata.bench]
/// blocking = true             # one client at a time: stalls are expected
/// args = ["--threads", "{nproc}"]  # extra server flags; {nproc} = cores
/// skip = true                 # not an echo server of the framing
/// ```
pub fn discover(ws: &Workspace) -> Vec<Spec> {
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .to_string();
    let mut chapters: Vec<(u32, Spec)> = ws
        .packages
        .iter()
        .filter(|p| p.manifest.contains("/chapters/"))
        .filter_map(|p| {
            let number: u32 = p.name.strip_prefix("ch")?.parse().ok()?;
            let meta = &p.bench;
            if number < FIRST_CHAPTER || meta["skip"].as_bool() == Some(true) {
                return None;
            }
            let blocking = meta["blocking"]
                .as_bool()
                .unwrap_or(BLOCKING_BY_DEFAULT.contains(&p.name.as_str()));
            let args = meta["args"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str())
                .map(|a| a.replace("{nproc}", &nproc))
                .collect();
            let bin = p.main_bin.clone()?;
            Some((
                number,
                Spec {
                    label: p.name.clone(),
                    package: p.name.clone(),
                    bin,
                    args,
                    blocking,
                    kind: Kind::Chapter,
                    variant: "",
                    about: p.about(),
                    optional: false,
                },
            ))
        })
        .collect();
    chapters.sort_by_key(|(n, _)| *n);
    let tokio = |label: &str, runtime: &str, variant: &'static str, optional: bool| Spec {
        label: label.to_string(),
        package: "tokio-echo".into(),
        bin: "tokio-echo".into(),
        args: ["--runtime", runtime, "--variant", variant]
            .map(String::from)
            .to_vec(),
        blocking: false,
        kind: if runtime == "current-thread" {
            Kind::TokioCt
        } else {
            Kind::TokioMt
        },
        variant,
        about: format!("tools/tokio-echo, {variant}, tokio {runtime} runtime"),
        optional,
    };
    let mut specs: Vec<Spec> = chapters.into_iter().map(|(_, s)| s).collect();
    specs.extend([
        tokio("tokio-ct", "current-thread", "idiomatic", false),
        tokio("tokio-ct-tuned", "current-thread", "tuned", false),
        tokio("tokio-mt-tuned", "multi-thread", "tuned", false),
        // Trails tokio-mt-tuned on 2 cores and costs a minute: on request.
        tokio("tokio-mt", "multi-thread", "idiomatic", true),
        Spec {
            label: NULL_ECHO.into(),
            package: "loadgen".into(),
            bin: "null-echo".into(),
            args: Vec::new(),
            blocking: false,
            kind: Kind::Ceiling,
            variant: "",
            about:
                "tools/loadgen null-echo: raw byte echo, no parsing: the load generator's ceiling"
                    .into(),
            optional: false,
        },
    ]);
    specs
}

/// The label of the load generator's ceiling server.
pub const NULL_ECHO: &str = "null-echo";

/// A server that exists and was built.
pub struct Server {
    pub spec: Spec,
    pub binary: PathBuf,
    /// Part of the matrix (some run only in the targets or latency phases).
    pub in_matrix: bool,
}

/// A package of the workspace, as far as the benchmark cares.
pub struct Package {
    pub name: String,
    pub manifest: String,
    pub description: String,
    /// The binary named like the package, else its first (ch03 also ships ch03-client).
    pub main_bin: Option<String>,
    /// `[package.metadata.bench]`, or null.
    pub bench: serde_json::Value,
}

impl Package {
    /// "chapters/ch08-epoll-et: description".
    fn about(&self) -> String {
        let dir = Path::new(&self.manifest)
            .parent()
            .and_then(|d| d.file_name())
            .map(|d| d.to_string_lossy().into_owned())
            .unwrap_or_default();
        format!("chapters/{dir}: {}", self.description)
    }
}

/// What `cargo metadata` tells us about the workspace.
pub struct Workspace {
    pub target_dir: PathBuf,
    pub packages: Vec<Package>,
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
        let mut packages = Vec::new();
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
            let main_bin = bin_names
                .iter()
                .find(|&&b| b == name)
                .or(bin_names.first())
                .map(|b| b.to_string());
            packages.push(Package {
                manifest: package["manifest_path"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                description: package["description"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                bench: package["metadata"]["bench"].clone(),
                main_bin,
                name,
            });
        }
        Ok(Workspace {
            target_dir,
            packages,
        })
    }

    /// Where `cargo build --release` puts binary `bin`.
    pub fn binary(&self, bin: &str) -> PathBuf {
        self.target_dir.join("release").join(bin)
    }

    pub fn has(&self, package: &str) -> bool {
        self.packages.iter().any(|p| p.name == package)
    }
}

/// Builds the given packages in release mode. If the whole set fails (a
/// chapter being written may not compile), builds them one by one and
/// returns only those that built.
pub fn build(root: &Path, packages: &[String]) -> Vec<String> {
    let run = |pkgs: &[String]| {
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
            let ok = run(std::slice::from_ref(p));
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

/// Makes `command`'s process run on `cpu` only, if given.
fn pin(command: &mut Command, cpu: Option<usize>) -> Result<()> {
    use nix::sched::{sched_setaffinity, CpuSet};
    use std::os::unix::process::CommandExt;
    let Some(cpu) = cpu else {
        return Ok(());
    };
    let mut set = CpuSet::new();
    set.set(cpu)?;
    // SAFETY: between fork and exec only async-signal-safe calls are allowed;
    // sched_setaffinity is a plain system call on a set built before the fork.
    unsafe {
        command.pre_exec(move || {
            sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).map_err(std::io::Error::from)
        });
    }
    Ok(())
}

/// Starts `server` on a free port and waits for its `listening on` line;
/// on `cpu` only, if given.
pub fn start(server: &Server, log: &Path, cpu: Option<usize>) -> Result<Running> {
    let log = File::options().create(true).append(true).open(log)?;
    let mut command = Command::new(&server.binary);
    command
        .args(["--addr", "127.0.0.1:0"])
        .args(&server.spec.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log);
    pin(&mut command, cpu)?;
    let mut child = command
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

/// Runs the load generator (on `cpu` only, if given) and returns its exit
/// code and output.
pub fn run_loadgen(
    loadgen: &Path,
    args: &[String],
    timeout: Duration,
    cpu: Option<usize>,
) -> Result<(Option<i32>, String, String)> {
    let mut command = Command::new(loadgen);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    pin(&mut command, cpu)?;
    let mut child = command.spawn().context("starting loadgen")?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn package(name: &str, dir: &str, bench: serde_json::Value) -> Package {
        Package {
            name: name.into(),
            manifest: format!("/w/{dir}/Cargo.toml"),
            description: format!("{name} things"),
            main_bin: Some(name.into()),
            bench,
        }
    }

    #[test]
    fn chapters_come_from_the_workspace_in_book_order() {
        use serde_json::json;
        let ws = Workspace {
            target_dir: "/w/target".into(),
            packages: vec![
                package(
                    "ch16",
                    "chapters/ch16-multicore",
                    json!({"args": ["--threads", "{nproc}"]}),
                ),
                package("ch03", "chapters/ch03-hello", json!(null)),
                package("ch05", "chapters/ch05-threads", json!(null)),
                package("ch04", "chapters/ch04-framing", json!(null)),
                package("ch09", "chapters/ch09-epoll-et", json!({"blocking": true})),
                package("ch14", "chapters/ch14-async", json!({"skip": true})),
                // Not a chapter: outside chapters/.
                package("ch20", "tools/ch20", json!(null)),
                package("loadgen", "tools/loadgen", json!(null)),
            ],
        };
        let specs = discover(&ws);
        let labels: Vec<&str> = specs.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "ch04",
                "ch05",
                "ch09",
                "ch16",
                "tokio-ct",
                "tokio-ct-tuned",
                "tokio-mt-tuned",
                "tokio-mt",
                "null-echo"
            ]
        );
        let by = |l: &str| specs.iter().find(|s| s.label == l).unwrap();
        assert!(by("ch04").blocking, "ch04 is blocking by default");
        assert!(!by("ch05").blocking);
        assert!(by("ch09").blocking, "from its metadata");
        let nproc = std::thread::available_parallelism().unwrap().to_string();
        assert_eq!(by("ch16").args, ["--threads", nproc.as_str()]);
        assert_eq!(by("ch05").about, "chapters/ch05-threads: ch05 things");
        assert_eq!(by("null-echo").kind, Kind::Ceiling);
        assert_eq!(by("null-echo").bin, "null-echo");
        assert!(by("tokio-mt").optional);
        assert_eq!(
            by("tokio-ct-tuned").args,
            ["--runtime", "current-thread", "--variant", "tuned"]
        );
    }
}
