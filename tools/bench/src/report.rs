//! Medians over repetitions, and the tables and files made from them.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;

use crate::servers::Server;
use crate::{Outcome, Point, Run};

/// How a (server, point) cell ended over all its repetitions.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    Ok,
    Stalls,
    Failed,
    NotRun,
}

/// Medians of one server at one point.
#[derive(Debug, Clone)]
pub struct Cell {
    pub status: Status,
    pub reps: usize,
    pub frames_per_sec: f64,
    pub mb_per_sec: f64,
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub loadgen_cpu: f64,
    /// Server CPU time per echoed frame, ns: its cost, whoever was the bottleneck.
    pub server_ns_per_frame: f64,
    /// Highest peak RSS of the server over the repetitions, kB.
    pub hwm_kb: Option<u64>,
    /// Repetitions that stalled, of how many.
    pub stalled_reps: usize,
    pub reps_run: usize,
    /// What the worst stalled run saw, if any stalled.
    pub stall_detail: String,
}

pub struct Summary {
    pub servers: Vec<&'static str>,
    /// Whether each server is expected to stall with several clients.
    blocking: Vec<bool>,
    pub points: Vec<Point>,
    /// cells[point][server]
    pub cells: Vec<Vec<Cell>>,
    /// Failures with their reason, for the end of the run.
    failures: Vec<String>,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

impl Summary {
    pub fn new(servers: &[Server], points: &[Point], runs: &[Run]) -> Summary {
        let mut failures = Vec::new();
        let cells = (0..points.len())
            .map(|pi| {
                (0..servers.len())
                    .map(|si| {
                        let runs: Vec<&Run> = runs
                            .iter()
                            .filter(|r| r.point == pi && r.server == si)
                            .collect();
                        let oks: Vec<_> = runs
                            .iter()
                            .filter_map(|r| match &r.outcome {
                                Outcome::Ok(rep) => Some(rep),
                                _ => None,
                            })
                            .collect();
                        for r in &runs {
                            if let Outcome::Failed(e) = &r.outcome {
                                failures.push(format!(
                                    "{} at {} (rep {}): {e}",
                                    servers[si].spec.label,
                                    points[pi].label(),
                                    r.rep + 1
                                ));
                            }
                        }
                        let stalled_reps = runs
                            .iter()
                            .filter(|r| matches!(r.outcome, Outcome::Stalled(_)))
                            .count();
                        // Any wrong reply fails the cell; a stall in a minority
                        // of repetitions (a busy machine) leaves a median, and a note.
                        let status = if runs.is_empty() {
                            Status::NotRun
                        } else if runs.iter().any(|r| matches!(r.outcome, Outcome::Failed(_))) {
                            Status::Failed
                        } else if 2 * oks.len() <= runs.len() {
                            Status::Stalls
                        } else {
                            Status::Ok
                        };
                        let m = |f: fn(&loadgen::Report) -> f64| {
                            median(oks.iter().map(|r| f(r)).collect())
                        };
                        Cell {
                            status,
                            reps: oks.len(),
                            frames_per_sec: m(|r| r.frames_per_sec),
                            mb_per_sec: m(|r| r.mb_per_sec),
                            p50: m(|r| r.latency_us.p50),
                            p99: m(|r| r.latency_us.p99),
                            p999: m(|r| r.latency_us.p999),
                            loadgen_cpu: m(|r| r.loadgen_cpu),
                            server_ns_per_frame: m(|r| r.server_ns_per_frame().unwrap_or(f64::NAN)),
                            hwm_kb: runs.iter().filter_map(|r| r.hwm_kb).max(),
                            stalled_reps,
                            reps_run: runs.len(),
                            stall_detail: runs
                                .iter()
                                .filter_map(|r| match &r.outcome {
                                    Outcome::Stalled(Some(rep)) => Some(rep),
                                    _ => None,
                                })
                                .max_by_key(|rep| rep.stalled + rep.connect_failed)
                                .map(|rep| stall_detail(rep))
                                .unwrap_or_default(),
                        }
                    })
                    .collect()
            })
            .collect();
        Summary {
            servers: servers.iter().map(|s| s.spec.label).collect(),
            blocking: servers.iter().map(|s| s.spec.blocking).collect(),
            points: points.to_vec(),
            cells,
            failures,
        }
    }

    /// Everything that should fail the run: wrong replies and broken
    /// servers, plus, if `stalls_too`, stalls of servers that are supposed
    /// to serve many clients.
    pub fn problems(&self, stalls_too: bool) -> Vec<String> {
        let mut problems = self.failures.clone();
        if stalls_too {
            problems.extend(self.unexpected_stalls());
        }
        problems
    }

    /// Stalls of non-blocking servers, with how far they got.
    pub fn unexpected_stalls(&self) -> Vec<String> {
        let mut stalls = Vec::new();
        for (pi, row) in self.cells.iter().enumerate() {
            for (si, cell) in row.iter().enumerate() {
                let expected = self.blocking[si] && self.points[pi].total_conns() > 1;
                if cell.stalled_reps > 0 && !expected {
                    stalls.push(format!(
                        "{} at {}, {} of {} repetitions: {}",
                        self.servers[si],
                        self.points[pi].label(),
                        cell.stalled_reps,
                        cell.reps_run,
                        cell.stall_detail
                    ));
                }
            }
        }
        stalls
    }

    /// The throughput table, then latency, bandwidth and memory, in markdown
    /// (which reads fine in a terminal too).
    pub fn markdown_tables(&self) -> String {
        let mut s = String::new();
        let header: Vec<String> = ["load (conns×depth×size)", "shows"]
            .iter()
            .map(|h| h.to_string())
            .chain(self.servers.iter().map(|h| h.to_string()))
            .collect();

        s += "Throughput, frames/s (median):\n\n";
        let rows = self.points.iter().zip(&self.cells).map(|(p, row)| {
            [p.label(), p.what.to_string()]
                .into_iter()
                .chain(row.iter().map(|c| cell_text(c, si(c.frames_per_sec))))
                .collect()
        });
        s += &table(&header, rows);

        if let Some(pi) = self
            .points
            .iter()
            .position(|p| p.conns == 1 && p.depth == 1)
        {
            let _ = write!(
                s,
                "\nLatency at {}, µs (p50 / p99 / p99.9):\n\n",
                self.points[pi].label()
            );
            s += &self.one_row_table(pi, |c| {
                format!("{:.0} / {:.0} / {:.0}", c.p50, c.p99, c.p999)
            });
        }
        if let Some(pi) = self.points.iter().position(|p| p.size >= 4096) {
            let _ = write!(
                s,
                "\nBandwidth at {}, MB/s of payload echoed:\n\n",
                self.points[pi].label()
            );
            s += &self.one_row_table(pi, |c| format!("{:.0}", c.mb_per_sec));
        }
        // The most connections, all busy: the memory point.
        let busy = (0..self.points.len()).filter(|&i| self.points[i].idle == 0);
        if let Some(pi) = busy.max_by_key(|&i| self.points[i].conns) {
            let _ = write!(
                s,
                "\nServer peak memory (VmHWM) with {} connections, MB:\n\n",
                self.points[pi].conns
            );
            let header: Vec<String> = self.servers.iter().map(|h| h.to_string()).collect();
            let row = self.cells[pi]
                .iter()
                .map(|c| match c.hwm_kb {
                    Some(kb) if c.status != Status::NotRun => format!("{:.1}", kb as f64 / 1024.0),
                    _ => "–".to_string(),
                })
                .collect();
            s += &table(&header, std::iter::once(row));
        }
        s += "\nServer CPU time per echoed frame, ns (lower is better). When the load generator is the limit, throughput ties; this still shows what each frame costs the server:\n\n";
        let rows = self.points.iter().zip(&self.cells).map(|(p, row)| {
            [p.label(), p.what.to_string()]
                .into_iter()
                .chain(row.iter().map(|c| {
                    // No figure when a server thread exited mid-window (see loadgen).
                    let ns = c.server_ns_per_frame;
                    cell_text(
                        c,
                        if ns.is_finite() {
                            format!("{ns:.0}")
                        } else {
                            "–".into()
                        },
                    )
                }))
                .collect()
        });
        s += &table(&header, rows);
        s += "\nThe load generator's own CPU, cores (near 1.00 per loadgen thread: it, not the server, may have been the limit):\n\n";
        let rows = self.points.iter().zip(&self.cells).map(|(p, row)| {
            [p.label(), p.what.to_string()]
                .into_iter()
                .chain(
                    row.iter()
                        .map(|c| cell_text(c, format!("{:.2}", c.loadgen_cpu))),
                )
                .collect()
        });
        s += &table(&header, rows);
        let stalls = self.unexpected_stalls();
        if !stalls.is_empty() {
            s += "\nStalls of servers meant to serve many clients (from the worst repetition):\n\n";
            for st in stalls {
                let _ = writeln!(s, "- {st}");
            }
        }
        s
    }

    fn one_row_table(&self, pi: usize, f: impl Fn(&Cell) -> String) -> String {
        let header: Vec<String> = self.servers.iter().map(|h| h.to_string()).collect();
        let row = self.cells[pi].iter().map(|c| cell_text(c, f(c))).collect();
        table(&header, std::iter::once(row))
    }
}

/// "N of M connections never answered…" for a stalled run.
pub fn stall_detail(r: &loadgen::Report) -> String {
    let mut s = format!(
        "{} of {} connections never answered within the {:.1} s ramp-up",
        r.stalled + r.connect_failed,
        r.conns + r.idle,
        r.ramp_secs
    );
    if r.connect_failed > 0 {
        s += &format!(" ({} could not connect)", r.connect_failed);
    }
    s
}

/// The value if the cell ran fine, else what happened instead.
fn cell_text(c: &Cell, value: String) -> String {
    match c.status {
        Status::Ok => value,
        Status::Stalls => "stalls".into(),
        Status::Failed => "FAILED".into(),
        Status::NotRun => "–".into(),
    }
}

/// 1234567 → "1.23M": short enough for a table cell.
pub fn si(v: f64) -> String {
    if !v.is_finite() {
        "–".into()
    } else if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// A markdown table with padded columns.
fn table(header: &[String], rows: impl Iterator<Item = Vec<String>>) -> String {
    let rows: Vec<Vec<String>> = rows.collect();
    let width = |i: usize| {
        rows.iter()
            .map(|r| r[i].chars().count())
            .chain([header[i].chars().count()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..header.len()).map(width).collect();
    let line = |cells: &[String]| {
        let cells: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, &w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
            .collect();
        format!("| {} |\n", cells.join(" | "))
    };
    let mut s = line(header);
    let rule: Vec<String> = widths.iter().map(|&w| "-".repeat(w)).collect();
    s += &line(&rule);
    for r in &rows {
        s += &line(r);
    }
    s
}

/// One row per (server, point) with the medians.
pub fn write_csv(path: &Path, summary: &Summary) -> Result<()> {
    let mut s = String::from(
        "server,conns,idle,depth,size,status,reps_ok,frames_per_sec,mb_per_sec,p50_us,p99_us,p999_us,loadgen_cpu,server_ns_per_frame,server_peak_rss_kb\n",
    );
    for (p, row) in summary.points.iter().zip(&summary.cells) {
        for (server, c) in summary.servers.iter().zip(row) {
            let _ = writeln!(
                s,
                "{server},{},{},{},{},{:?},{},{:.0},{:.2},{:.1},{:.1},{:.1},{:.2},{:.0},{}",
                p.conns,
                p.idle,
                p.depth,
                p.size,
                c.status,
                c.reps,
                c.frames_per_sec,
                c.mb_per_sec,
                c.p50,
                c.p99,
                c.p999,
                c.loadgen_cpu,
                c.server_ns_per_frame,
                c.hwm_kb.map(|v| v.to_string()).unwrap_or_default()
            );
        }
    }
    Ok(std::fs::write(path, s.replace("NaN", ""))?)
}

/// Every run, for whoever wants more than medians.
pub fn write_runs_csv(
    path: &Path,
    servers: &[Server],
    points: &[Point],
    runs: &[Run],
) -> Result<()> {
    let mut s = String::from("rep,server,conns,idle,depth,size,outcome,frames_per_sec,p50_us,p99_us,p999_us,loadgen_cpu,ramp_s,server_peak_rss_kb,detail\n");
    for r in runs {
        let p = &points[r.point];
        // Rates only from runs that served everyone; the ramp-up from any.
        let (outcome, ok, any, detail) = match &r.outcome {
            Outcome::Ok(rep) => ("ok", Some(rep), Some(rep), String::new()),
            Outcome::Stalled(rep) => (
                "stalled",
                None,
                rep.as_ref(),
                rep.as_ref()
                    .map(|r| stall_detail(r))
                    .unwrap_or_else(|| "skipped after an earlier stall".into()),
            ),
            Outcome::Failed(e) => ("failed", None, None, e.clone()),
        };
        let num =
            |f: fn(&loadgen::Report) -> f64| ok.map(|r| format!("{:.1}", f(r))).unwrap_or_default();
        let ramp = any
            .map(|r| format!("{:.2}", r.ramp_secs))
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "{},{},{},{},{},{},{outcome},{},{},{},{},{},{ramp},{},\"{}\"",
            r.rep + 1,
            servers[r.server].spec.label,
            p.conns,
            p.idle,
            p.depth,
            p.size,
            num(|r| r.frames_per_sec),
            num(|r| r.latency_us.p50),
            num(|r| r.latency_us.p99),
            num(|r| r.latency_us.p999),
            num(|r| r.loadgen_cpu),
            r.hwm_kb.map(|v| v.to_string()).unwrap_or_default(),
            detail.replace('"', "'")
        );
    }
    Ok(std::fs::write(path, s)?)
}

/// nproc, CPU model, kernel and date: what a reader needs to compare runs.
pub fn machine_description() -> String {
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = ["ostype", "osrelease"]
        .map(|f| {
            std::fs::read_to_string(format!("/proc/sys/kernel/{f}"))
                .unwrap_or_default()
                .trim()
                .to_string()
        })
        .join(" ");
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!("- cores (nproc): {nproc}\n- CPU: {cpu}\n- kernel: {kernel}\n- date: {date}\n")
}

pub fn write_markdown(
    path: &Path,
    tables: &str,
    machine: &str,
    secs: f64,
    reps: usize,
    loadgen_threads: usize,
) -> Result<()> {
    let s = format!(
        "# echo-steps benchmark\n\n{machine}\n\
         Each cell is the median of {reps} run(s) of {secs:.1} s after a warm-up, servers alternating \
         within each repetition. Load generator and server share this machine and its cores \
         over loopback; the load generator used {loadgen_threads} thread(s). \
         \"stalls\": some connections were never answered (a blocking server serves one client at a time). \
         See tools/bench/README.md for the method.\n\n{tables}\n\
         ![throughput per load](throughput.svg)\n\n![throughput vs connections](connections.svg)\n\n\
         ![busy connections among idle ones](idle.svg)\n"
    );
    Ok(std::fs::write(path, s)?)
}
