//! Medians over repetitions, and the tables and files made from them.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;

use crate::servers::{Kind, Server};
use crate::stats::Interval;
use crate::{Group, Outcome, Point, Run};

/// How a (server, point) cell ended over all its repetitions.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    Ok,
    Stalls,
    Failed,
    NotRun,
}

/// The load generator used at least this share of each of its threads'
/// cores: it, not the server, may have set the pace.
pub const LOADGEN_LIMIT: f64 = 0.9;

/// Servers that must hold many idle connections in little memory, and
/// their bound in MiB (issue 14).
const MEMORY_TARGETS: [(&str, f64); 2] = [("ch09", 10.0), ("ch14", 20.0)];

/// The mark for a cell limited by the load generator.
const LIMITED: &str = "†";

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
    /// The median loadgen CPU reached [`LOADGEN_LIMIT`].
    pub loadgen_limited: bool,
    /// Server CPU time per echoed frame, ns: its cost, whoever was the bottleneck.
    pub server_ns_per_frame: f64,
    /// Why there is no server CPU figure, when there is none.
    pub cpu_note: Option<String>,
    /// Highest peak RSS of the server over the repetitions, kB.
    pub hwm_kb: Option<u64>,
    /// Repetitions that stalled, of how many.
    pub stalled_reps: usize,
    pub reps_run: usize,
    /// What the worst stalled run saw, if any stalled.
    pub stall_detail: String,
}

pub struct Summary {
    pub servers: Vec<String>,
    pub kinds: Vec<Kind>,
    variants: Vec<&'static str>,
    about: Vec<String>,
    /// Whether each server is expected to stall with several clients.
    blocking: Vec<bool>,
    pub points: Vec<Point>,
    /// cells[point][server]
    pub cells: Vec<Vec<Cell>>,
    /// Per point, the stronger tokio current-thread variant (server index).
    pub tokio_ref: Vec<Option<usize>>,
    /// Per point, the null-echo cell's frames/s: the load generator's ceiling.
    pub ceiling: Vec<Option<f64>>,
    /// frames/s of each repetition that served everyone: [point][server][rep].
    rep_fps: Vec<Vec<Vec<Option<f64>>>>,
    /// Failures with their reason, for the end of the run.
    failures: Vec<String>,
}

/// The median of the finite values; NaN if there are none.
fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
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
    pub fn new(
        servers: &[&Server],
        points: &[Point],
        runs: &[Run],
        loadgen_threads: usize,
    ) -> Summary {
        let mut failures = Vec::new();
        let cells: Vec<Vec<Cell>> = (0..points.len())
            .map(|pi| {
                (0..servers.len())
                    .map(|si| {
                        let runs: Vec<&Run> = runs
                            .iter()
                            .filter(|r| r.point == pi && r.server == si)
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
                        cell(&runs, loadgen_threads)
                    })
                    .collect()
            })
            .collect();
        let kinds: Vec<Kind> = servers.iter().map(|s| s.spec.kind).collect();
        let tokio_ref = cells
            .iter()
            .map(|row| {
                (0..row.len())
                    .filter(|&si| kinds[si] == Kind::TokioCt && row[si].status == Status::Ok)
                    .max_by(|&a, &b| row[a].frames_per_sec.total_cmp(&row[b].frames_per_sec))
            })
            .collect();
        let ceiling = cells
            .iter()
            .map(|row| {
                (0..row.len())
                    .find(|&si| kinds[si] == Kind::Ceiling && row[si].status == Status::Ok)
                    .map(|si| row[si].frames_per_sec)
            })
            .collect();
        let reps = runs.iter().map(|r| r.rep + 1).max().unwrap_or(0);
        let mut rep_fps = vec![vec![vec![None; reps]; servers.len()]; points.len()];
        for r in runs {
            if let Outcome::Ok(report) = &r.outcome {
                rep_fps[r.point][r.server][r.rep] = Some(report.frames_per_sec);
            }
        }
        Summary {
            rep_fps,
            servers: servers.iter().map(|s| s.spec.label.clone()).collect(),
            kinds,
            variants: servers.iter().map(|s| s.spec.variant).collect(),
            about: servers.iter().map(|s| s.spec.about.clone()).collect(),
            blocking: servers.iter().map(|s| s.spec.blocking).collect(),
            points: points.to_vec(),
            cells,
            tokio_ref,
            ceiling,
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
                        if cell.stall_detail.is_empty() {
                            "skipped after earlier stalls".into()
                        } else {
                            cell.stall_detail.clone()
                        }
                    ));
                }
            }
        }
        stalls
    }

    /// The servers under test: all but null-echo.
    fn under_test(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.servers.len()).filter(|&si| self.kinds[si] != Kind::Ceiling)
    }

    /// Frames/s of server `si` at point `pi` over the stronger tokio-ct there:
    /// the median of the repetitions' ratios (each against the same
    /// repetition's tokio), and their interval.
    pub fn vs_tokio_interval(&self, pi: usize, si: usize) -> Option<Interval> {
        let r = self.tokio_ref[pi]?;
        if self.cells[pi][si].status != Status::Ok {
            return None;
        }
        let ratios: Vec<f64> = self.rep_fps[pi][si]
            .iter()
            .zip(&self.rep_fps[pi][r])
            .filter_map(|(a, b)| Some(a.as_ref()? / b.as_ref()?))
            .collect();
        Interval::of(&ratios)
    }

    pub fn vs_tokio(&self, pi: usize, si: usize) -> Option<f64> {
        self.vs_tokio_interval(pi, si).map(|i| i.median)
    }

    /// The fastest server under test at point `pi`: index and frames/s.
    fn fastest(&self, pi: usize) -> Option<(usize, f64)> {
        self.under_test()
            .filter(|&si| self.cells[pi][si].status == Status::Ok)
            .map(|si| (si, self.cells[pi][si].frames_per_sec))
            .max_by(|a, b| a.1.total_cmp(&b.1))
    }

    /// Every table of the report, in markdown (which reads fine in a
    /// terminal too). Servers are rows and a few loads the columns, so that
    /// each table fits a book page.
    pub fn markdown_tables(&self) -> String {
        let mut s = String::new();
        let groups: Vec<(Group, Vec<usize>)> = Group::ALL
            .iter()
            .map(|&g| {
                let pis = (0..self.points.len())
                    .filter(|&pi| self.points[pi].group() == g)
                    .collect::<Vec<_>>();
                (g, pis)
            })
            .filter(|(_, pis)| !pis.is_empty())
            .collect();

        for (group, pis) in &groups {
            let _ = write!(s, "**Frames/s, {}** (median):\n\n", group.title());
            s += &self.server_table(pis, true, |pi, si, c| {
                let ratio = match self.vs_tokio_interval(pi, si) {
                    Some(i) if i.n > 1 => format!(" ×{:.2} ({:.2}–{:.2})", i.median, i.lo, i.hi),
                    Some(i) => format!(" ×{:.2}", i.median),
                    None => String::new(),
                };
                let mark = if c.loadgen_limited { LIMITED } else { "" };
                cell_text(c, format!("{}{ratio}{mark}", si_(c.frames_per_sec)))
            });
            s += "\n";
        }
        let _ = write!(
            s,
            "×r (lo–hi): the server's frames/s divided by that of the stronger tokio \
             current-thread variant at the same load (named in the row *stronger tokio-ct*) in \
             the same repetition; the median of the repetitions' ratios, then the lowest and \
             highest: with three repetitions that range holds the true median only three times \
             in four, so the targets below are settled by more rounds, not by this table. \
             {LIMITED} limited by the load generator: it used {LOADGEN_LIMIT} of a core or more \
             (per loadgen thread) in that cell, so the server may have had capacity to spare; \
             compare the server CPU per frame below. *stalls*: some clients were never answered \
             within the ramp-up (listed at the end).\n\n"
        );

        // Server CPU per frame, with a footnote per reason for a missing figure.
        let mut notes: Vec<String> = Vec::new();
        for (group, pis) in &groups {
            let _ = write!(
                s,
                "**Server CPU time per echoed frame, ns, {}** (median; lower is better):\n\n",
                group.title()
            );
            s += &self.server_table(pis, false, |_, _, c| {
                let ns = c.server_ns_per_frame;
                let text = if ns.is_finite() || c.status != Status::Ok {
                    format!("{ns:.0}")
                } else {
                    let note = c
                        .cpu_note
                        .clone()
                        .unwrap_or_else(|| "no server CPU figure".into());
                    let i = notes.iter().position(|n| *n == note).unwrap_or_else(|| {
                        notes.push(note);
                        notes.len() - 1
                    });
                    format!("–{}", superscript(i + 1))
                };
                cell_text(c, text)
            });
            s += "\n";
        }
        s += "The server's CPU time (all its threads, from /proc) over the measured window, \
              divided by the frames echoed in it: what a frame costs the server, whoever \
              set the pace.";
        for (i, note) in notes.iter().enumerate() {
            let _ = write!(s, " –{}: {note}.", superscript(i + 1));
        }
        s += "\n\n";

        s += &self.per_server_table();
        s += &self.memory_table();
        s += &self.memory_targets();
        s += &self.ceiling_table();

        s += "**The servers:**\n\n";
        let rows = (0..self.servers.len()).map(|si| {
            let mut about = self.about[si].clone();
            if self.blocking[si] {
                about += " [blocking]";
            }
            vec![self.servers[si].clone(), about]
        });
        s += &table(&["server".into(), "what".into()], rows);

        let stalls = self.unexpected_stalls();
        if !stalls.is_empty() {
            s += "\nStalls of servers meant to serve many clients (from the worst repetition):\n\n";
            for st in stalls {
                let _ = writeln!(s, "- {st}");
            }
        }
        if !self.failures.is_empty() {
            s += "\nFAILED runs:\n\n";
            for f in &self.failures {
                let _ = writeln!(s, "- {f}");
            }
        }
        s
    }

    /// A table with a row per server under test and a column per point of
    /// `pis`, then, if `name_ref`, the row naming the stronger tokio-ct of each column.
    fn server_table(
        &self,
        pis: &[usize],
        name_ref: bool,
        mut text: impl FnMut(usize, usize, &Cell) -> String,
    ) -> String {
        let header: Vec<String> = std::iter::once("server".to_string())
            .chain(pis.iter().map(|&pi| self.points[pi].label()))
            .collect();
        let mut rows: Vec<Vec<String>> = Vec::new();
        for si in self.under_test() {
            let mut row = vec![self.servers[si].clone()];
            for &pi in pis {
                row.push(text(pi, si, &self.cells[pi][si]));
            }
            rows.push(row);
        }
        if name_ref && self.kinds.contains(&Kind::TokioCt) {
            let mut row = vec!["*stronger tokio-ct*".to_string()];
            row.extend(pis.iter().map(|&pi| match self.tokio_ref[pi] {
                Some(si) => self.servers[si].clone(),
                None => "–".into(),
            }));
            rows.push(row);
        }
        table(&header, rows.into_iter())
    }

    /// Latency at one client, bandwidth at 4 KiB, memory at the most clients:
    /// one row per server.
    fn per_server_table(&self) -> String {
        let latency = self
            .points
            .iter()
            .position(|p| p.conns == 1 && p.depth == 1 && p.idle == 0);
        let bandwidth: Vec<usize> = (0..self.points.len())
            .filter(|&pi| self.points[pi].size >= 4096)
            .collect();
        let mut header = vec!["server".to_string()];
        if let Some(pi) = latency {
            header.push(format!("µs at {}", self.points[pi].label()));
        }
        for &pi in &bandwidth {
            header.push(format!("MB/s at {}", self.points[pi].label()));
        }
        let rows = self.under_test().map(|si| {
            let mut row = vec![self.servers[si].clone()];
            if let Some(pi) = latency {
                let c = &self.cells[pi][si];
                row.push(cell_text(
                    c,
                    format!("{:.0} / {:.0} / {:.0}", c.p50, c.p99, c.p999),
                ));
            }
            for &pi in &bandwidth {
                let c = &self.cells[pi][si];
                let mark = if c.loadgen_limited { LIMITED } else { "" };
                row.push(cell_text(c, format!("{:.0}{mark}", c.mb_per_sec)));
            }
            row
        });
        let mut s = String::from(
            "**Latency and bandwidth** (median; latency p50 / p99 / p99.9 in µs, \
             MB/s of payload echoed):\n\n",
        );
        s += &table(&header, rows);
        s += "\n";
        s
    }

    /// The memory targets, judged on the load with the most idle
    /// connections: the highest peak over the repetitions, each on a fresh
    /// server, against the bound (no interval: a maximum is already the
    /// cautious side).
    fn memory_targets(&self) -> String {
        let Some(pi) = (0..self.points.len())
            .filter(|&pi| self.points[pi].idle > 0)
            .max_by_key(|&pi| self.points[pi].idle)
        else {
            return String::new();
        };
        let rows: Vec<Vec<String>> = MEMORY_TARGETS
            .iter()
            .filter_map(|&(server, mib)| {
                let si = self.servers.iter().position(|s| s == server)?;
                let c = &self.cells[pi][si];
                let (peak, verdict) = match (c.status.clone(), c.hwm_kb) {
                    (Status::Ok, Some(kb)) => {
                        let peak = kb as f64 / 1024.0;
                        let verdict = if peak < mib { "met" } else { "missed" };
                        (format!("{peak:.1} MiB"), verdict)
                    }
                    (Status::NotRun, _) | (_, None) => return None,
                    _ => (cell_text(c, String::new()), "missed"),
                };
                Some(vec![
                    format!("{server} under {mib:.0} MiB"),
                    peak,
                    verdict.to_string(),
                ])
            })
            .collect();
        if rows.is_empty() {
            return String::new();
        }
        let mut s = format!(
            "**Memory targets**, at {} (the highest peak, VmHWM, over the repetitions):\n\n\
             <!-- ANCHOR: memory-targets -->\n",
            self.points[pi].label()
        );
        s += &table(
            &["target".into(), "peak".into(), String::new()],
            rows.into_iter(),
        );
        s += "<!-- ANCHOR_END: memory-targets -->\n\n";
        s
    }

    /// Peak memory against the number of busy clients (the memory plot's data).
    fn memory_table(&self) -> String {
        let pis: Vec<usize> = (0..self.points.len())
            .filter(|&pi| self.points[pi].in_sweep())
            .collect();
        if pis.is_empty() {
            return String::new();
        }
        let header: Vec<String> = std::iter::once("server".to_string())
            .chain(pis.iter().map(|&pi| self.points[pi].conns.to_string()))
            .collect();
        let rows = self.under_test().map(|si| {
            std::iter::once(self.servers[si].clone())
                .chain(pis.iter().map(|&pi| {
                    let c = &self.cells[pi][si];
                    match (c.hwm_kb, &c.status) {
                        (_, Status::NotRun) | (None, _) => "–".into(),
                        (Some(kb), Status::Ok) => format!("{:.1}", kb as f64 / 1024.0),
                        (Some(kb), _) => format!("{:.1} (stalls)", kb as f64 / 1024.0),
                    }
                }))
                .collect()
        });
        let mut s = String::from(
            "**Server peak memory (VmHWM), MB, against the number of busy clients** (depth 1, \
             64 B; the highest over the repetitions, each on a fresh server):\n\n",
        );
        s += &table(&header, rows);
        s += "\n";
        s
    }

    /// The load generator against null-echo, per load, beside the fastest server.
    fn ceiling_table(&self) -> String {
        let Some(ne) = (0..self.servers.len()).find(|&si| self.kinds[si] == Kind::Ceiling) else {
            return String::new();
        };
        let header: Vec<String> = [
            "load",
            "null-echo",
            "loadgen CPU",
            "per loadgen core",
            "fastest server",
            "÷ fastest",
        ]
        .map(String::from)
        .to_vec();
        let rows = (0..self.points.len()).map(|pi| {
            let c = &self.cells[pi][ne];
            let fastest = self.fastest(pi);
            vec![
                self.points[pi].label(),
                cell_text(c, si_(c.frames_per_sec)),
                cell_text(c, format!("{:.2}", c.loadgen_cpu)),
                cell_text(c, si_(c.frames_per_sec / c.loadgen_cpu)),
                fastest
                    .map(|(si, fps)| format!("{}: {}", self.servers[si], si_(fps)))
                    .unwrap_or_else(|| "–".into()),
                match (self.ceiling[pi], fastest) {
                    (Some(ceiling), Some((_, fps))) => format!("{:.2}", ceiling / fps),
                    _ => "–".into(),
                },
            ]
        });
        let mut s = String::from(
            "**The load generator's ceiling**: frames/s of the same loads against null-echo, a \
             raw byte echo that parses nothing (the cheapest possible server), the load \
             generator's CPU there (cores), and *per loadgen core*: frames/s ÷ that CPU, what \
             one load generator thread could drive with a core to itself. *÷ fastest*: null-echo's \
             frames/s over the fastest server's; near 1, the load generator, not the servers, \
             set the pace at that load:\n\n",
        );
        s += &table(&header, rows);
        s += "\n";
        s
    }
}

/// The medians of one (server, point) cell over its runs.
fn cell(runs: &[&Run], loadgen_threads: usize) -> Cell {
    let oks: Vec<&loadgen::Report> = runs
        .iter()
        .filter_map(|r| match &r.outcome {
            Outcome::Ok(rep) => Some(&**rep),
            _ => None,
        })
        .collect();
    let stalled_reps = runs
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Stalled(_)))
        .count();
    // Any wrong reply fails the cell; a stall in a minority of repetitions
    // (a busy machine) leaves a median, and a note.
    let status = if runs.is_empty() {
        Status::NotRun
    } else if runs.iter().any(|r| matches!(r.outcome, Outcome::Failed(_))) {
        Status::Failed
    } else if 2 * oks.len() <= runs.len() {
        Status::Stalls
    } else {
        Status::Ok
    };
    let m = |f: fn(&loadgen::Report) -> f64| median(oks.iter().map(|r| f(r)).collect());
    let loadgen_cpu = m(|r| r.loadgen_cpu);
    Cell {
        status,
        reps: oks.len(),
        frames_per_sec: m(|r| r.frames_per_sec),
        mb_per_sec: m(|r| r.mb_per_sec),
        p50: m(|r| r.latency_us.p50),
        p99: m(|r| r.latency_us.p99),
        p999: m(|r| r.latency_us.p999),
        loadgen_cpu,
        loadgen_limited: loadgen_cpu >= LOADGEN_LIMIT * loadgen_threads as f64,
        server_ns_per_frame: m(|r| r.server_ns_per_frame().unwrap_or(f64::NAN)),
        cpu_note: oks.iter().find_map(|r| r.server_cpu_note.clone()),
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

/// 1 → "¹": footnote marks that do not look like part of the number.
fn superscript(n: usize) -> String {
    const DIGITS: [char; 10] = ['⁰', '¹', '²', '³', '⁴', '⁵', '⁶', '⁷', '⁸', '⁹'];
    n.to_string()
        .chars()
        .map(|d| DIGITS[d.to_digit(10).unwrap_or(0) as usize])
        .collect()
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

/// [`si`] under a name that a local `si` (a server index) does not shadow.
fn si_(v: f64) -> String {
    si(v)
}

/// A markdown table with padded columns.
fn table(header: &[String], rows: impl Iterator<Item = Vec<String>>) -> String {
    let rows: Vec<Vec<String>> = rows.collect();
    let width = |i: usize| {
        rows.iter()
            .map(|r| r[i].chars().count())
            .chain([header[i].chars().count(), 3])
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

/// A CSV field: quoted when it holds a comma or a quote.
fn field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// A number, or empty when there is none.
fn num(v: f64, decimals: usize) -> String {
    if v.is_finite() {
        format!("{v:.decimals$}")
    } else {
        String::new()
    }
}

/// One row per (server, point) with the medians. Columns after
/// `server_peak_rss_kb` were added later, at the end so older readers work.
pub fn write_csv(path: &Path, summary: &Summary) -> Result<()> {
    let mut s = String::from(
        "server,conns,idle,depth,size,status,reps_ok,frames_per_sec,mb_per_sec,p50_us,p99_us,p999_us,loadgen_cpu,server_ns_per_frame,server_peak_rss_kb,\
         variant,loadgen_limited,vs_tokio_ct,tokio_ct_ref,loadgen_ceiling_fps,server_cpu_note\n",
    );
    for (pi, (p, row)) in summary.points.iter().zip(&summary.cells).enumerate() {
        for (si, c) in row.iter().enumerate() {
            let _ = writeln!(
                s,
                "{},{},{},{},{},{:?},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                summary.servers[si],
                p.conns,
                p.idle,
                p.depth,
                p.size,
                c.status,
                c.reps,
                num(c.frames_per_sec, 0),
                num(c.mb_per_sec, 2),
                num(c.p50, 1),
                num(c.p99, 1),
                num(c.p999, 1),
                num(c.loadgen_cpu, 2),
                num(c.server_ns_per_frame, 0),
                c.hwm_kb.map(|v| v.to_string()).unwrap_or_default(),
                summary.variants[si],
                c.loadgen_limited,
                summary
                    .vs_tokio(pi, si)
                    .map(|r| format!("{r:.3}"))
                    .unwrap_or_default(),
                summary.tokio_ref[pi]
                    .map(|r| summary.servers[r].clone())
                    .unwrap_or_default(),
                summary.ceiling[pi].map(|v| num(v, 0)).unwrap_or_default(),
                field(c.cpu_note.as_deref().unwrap_or_default()),
            );
        }
    }
    Ok(std::fs::write(path, s)?)
}

/// Every run, for whoever wants more than medians. Columns after `detail`
/// were added later, at the end so older readers work.
pub fn write_runs_csv(
    path: &Path,
    servers: &[&Server],
    points: &[Point],
    runs: &[Run],
) -> Result<()> {
    let mut s = String::from(
        "rep,server,conns,idle,depth,size,outcome,frames_per_sec,p50_us,p99_us,p999_us,loadgen_cpu,ramp_s,server_peak_rss_kb,detail,\
         variant,server_cpu,server_ns_per_frame,loadgen_limited\n",
    );
    for r in runs {
        let p = &points[r.point];
        // Rates only from runs that served everyone; the ramp-up from any.
        let (outcome, ok, any, detail) = match &r.outcome {
            Outcome::Ok(rep) => (
                "ok",
                Some(rep),
                Some(rep),
                rep.server_cpu_note.clone().unwrap_or_default(),
            ),
            Outcome::Stalled(rep) => (
                "stalled",
                None,
                rep.as_ref(),
                rep.as_ref()
                    .map(|r| stall_detail(r))
                    .unwrap_or_else(|| "skipped after earlier stalls".into()),
            ),
            Outcome::Failed(e) => ("failed", None, None, e.clone()),
        };
        let num = |f: &dyn Fn(&loadgen::Report) -> Option<f64>, decimals: usize| {
            ok.and_then(|r| f(r))
                .map(|v| format!("{v:.decimals$}"))
                .unwrap_or_default()
        };
        let ramp = any
            .map(|r| format!("{:.2}", r.ramp_secs))
            .unwrap_or_default();
        let spec = &servers[r.server].spec;
        let _ = writeln!(
            s,
            "{},{},{},{},{},{},{outcome},{},{},{},{},{},{ramp},{},\"{}\",{},{},{},{}",
            r.rep + 1,
            spec.label,
            p.conns,
            p.idle,
            p.depth,
            p.size,
            num(&|r| Some(r.frames_per_sec), 1),
            num(&|r| Some(r.latency_us.p50), 1),
            num(&|r| Some(r.latency_us.p99), 1),
            num(&|r| Some(r.latency_us.p999), 1),
            num(&|r| Some(r.loadgen_cpu), 2),
            r.hwm_kb.map(|v| v.to_string()).unwrap_or_default(),
            detail.replace('"', "'"),
            spec.variant,
            num(&|r| r.server_cpu, 3),
            num(&|r| r.server_ns_per_frame(), 0),
            ok.map(|r| (r.loadgen_cpu >= LOADGEN_LIMIT * r.threads as f64).to_string())
                .unwrap_or_default(),
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

/// How the run was made: printed at the top of results.md, targets.md and latency.md.
pub struct RunInfo {
    /// `full` or `quick`; `book/publish-bench.sh` refuses anything but `full`.
    pub mode: &'static str,
    /// The `--only` list, if any.
    pub only: String,
    pub machine: String,
    pub secs: f64,
    pub reps: usize,
    pub loadgen_threads: usize,
    pub elapsed: f64,
}

impl RunInfo {
    /// For a phase that has its own window and rounds (targets, latency).
    pub fn new(mode: &'static str, only: &[String], machine: &str, elapsed: f64) -> RunInfo {
        RunInfo {
            mode,
            only: only.join(","),
            machine: machine.to_string(),
            secs: 0.0,
            reps: 0,
            loadgen_threads: 1,
            elapsed,
        }
    }

    /// The lines every results file starts with: `- mode:` (which
    /// `book/publish-bench.sh` checks), `--only`, the machine, the time taken.
    pub fn header(&self) -> String {
        let only = if self.only.is_empty() {
            String::new()
        } else {
            format!("- only: {}\n", self.only)
        };
        format!(
            "- mode: {}\n{only}{}- took: {:.0} s\n",
            self.mode, self.machine, self.elapsed
        )
    }
}

pub fn write_markdown(path: &Path, tables: &str, run: &RunInfo) -> Result<()> {
    let s = format!(
        "# echo-steps benchmark: the matrix\n\n{}\n\
         Each cell is the median of {} run(s) of {:.1} s after a warm-up, servers alternating \
         within each repetition. Load generator and server share this machine and its cores \
         over loopback; the load generator used {} thread(s). \
         See tools/bench/README.md for the method.\n\n{tables}\n\
         ![frames/s per load](throughput.svg)\n\n![frames/s against connections](connections.svg)\n\n\
         ![busy connections among idle ones](idle.svg)\n\n![peak memory against connections](memory.svg)\n",
        run.header(),
        run.reps,
        run.secs,
        run.loadgen_threads,
    );
    Ok(std::fs::write(path, s)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::servers::Spec;

    fn server(label: &str, kind: Kind) -> Server {
        Server {
            spec: Spec {
                label: label.into(),
                package: label.into(),
                bin: label.into(),
                args: Vec::new(),
                blocking: false,
                kind,
                variant: "",
                about: format!("{label}, for the test"),
                optional: false,
            },
            binary: label.into(),
            in_matrix: true,
        }
    }

    fn report(fps: f64, loadgen_cpu: f64, server_cpu: Option<f64>) -> loadgen::Report {
        serde_json::from_value(serde_json::json!({
            "addr": "127.0.0.1:1", "conns": 10, "idle": 0, "depth": 4, "size": 4096,
            "threads": 1, "secs": 1.0, "ramp_secs": 0.01, "frames": fps as u64,
            "frames_per_sec": fps, "mb_per_sec": fps * 4096e-6,
            "latency_us": {"p50": 1.0, "p99": 2.0, "p999": 3.0, "max": 4.0, "mean": 1.5},
            "connected": 10, "connect_failed": 0, "stalled": 0, "closed": 0,
            "mismatches": 0, "lost": 0, "first_error": null, "loadgen_cpu": loadgen_cpu,
            "server_cpu": server_cpu,
            "server_cpu_note": server_cpu.is_none().then_some(loadgen::THREAD_EXITED),
        }))
        .unwrap()
    }

    #[test]
    fn cells_are_compared_with_the_stronger_tokio_ct_and_marked() {
        let servers = [
            server("ch08", Kind::Chapter),
            server("tokio-ct", Kind::TokioCt),
            server("tokio-ct-tuned", Kind::TokioCt),
            server("null-echo", Kind::Ceiling),
        ];
        let points = [Point::new(10, 4, 4096, "bandwidth")];
        let runs: Vec<Run> = [
            (0, report(150e3, 0.95, None)),
            (1, report(100e3, 0.5, Some(0.9))),
            (2, report(200e3, 0.6, Some(0.9))),
            (3, report(400e3, 0.97, Some(0.9))),
        ]
        .into_iter()
        .map(|(server, r)| Run {
            server,
            point: 0,
            rep: 0,
            outcome: Outcome::Ok(Box::new(r)),
            hwm_kb: Some(3000),
        })
        .collect();
        let servers: Vec<&Server> = servers.iter().collect();
        let summary = Summary::new(&servers, &points, &runs, 1);
        assert_eq!(summary.tokio_ref[0], Some(2), "tuned was the stronger");
        assert_eq!(summary.vs_tokio(0, 0), Some(0.75));
        assert_eq!(summary.ceiling[0], Some(400e3));
        let md = summary.markdown_tables();
        // ch08: ratio to tokio-ct-tuned, and limited by the load generator.
        assert!(md.contains("| ch08                | 150.0k ×0.75†"), "{md}");
        assert!(
            md.contains("| *stronger tokio-ct* | tokio-ct-tuned"),
            "{md}"
        );
        // No CPU figure for ch08: a dash and the reason as a footnote.
        assert!(md.contains("–¹"), "{md}");
        assert!(
            md.contains(&format!("–¹: {}.", loadgen::THREAD_EXITED)),
            "{md}"
        );
        // null-echo is the ceiling, not a row of the comparison.
        assert!(!md.contains("| null-echo           |"), "{md}");
        assert!(md.contains("| 10×4×4096B | 400.0k"), "{md}");
        assert!(md.contains("tokio-ct-tuned: 200.0k | 2.00"), "{md}");
    }

    #[test]
    fn memory_targets_are_read_at_the_most_idle_connections() {
        let servers = [
            server("ch09", Kind::Chapter),
            server("ch14", Kind::Chapter),
            server("tokio-ct", Kind::TokioCt),
        ];
        let servers: Vec<&Server> = servers.iter().collect();
        let points = [
            Point::new(10, 1, 64, "poll's O(n)").with_idle(990),
            Point::new(10, 1, 64, "poll's O(n)").with_idle(9990),
        ];
        let mut runs = Vec::new();
        for (point, rep, server, kb) in [
            (1, 0, 0, 3000),
            (1, 1, 0, 3500),
            (1, 0, 1, 21000),
            (1, 1, 1, 19000),
            (0, 0, 0, 50_000),
        ] {
            runs.push(Run {
                server,
                point,
                rep,
                outcome: Outcome::Ok(Box::new(report(100.0, 0.5, Some(0.5)))),
                hwm_kb: Some(kb),
            });
        }
        let md = Summary::new(&servers, &points, &runs, 1).memory_targets();
        // The 9990-idle load, not the other; the highest peak of the repetitions.
        assert!(md.contains("at 10×1×64B +9990 idle"), "{md}");
        assert!(
            md.contains("| ch09 under 10 MiB | 3.4 MiB  | met    |"),
            "{md}"
        );
        assert!(
            md.contains("| ch14 under 20 MiB | 20.5 MiB | missed |"),
            "{md}"
        );
    }
}
