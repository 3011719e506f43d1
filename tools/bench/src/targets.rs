//! The targets phase: the ratios the project set as targets, measured with
//! more care than the matrix can afford. A few servers, the four loads the
//! targets name, servers alternating (in a rotating order) within each
//! round, and rounds added, per load, until every ratio the targets need
//! has a 95% interval within ±3% of its median, or the cap. Each ratio is
//! the median of per-round ratios; a target is met only when its whole
//! interval meets it.
//!
//! Every run records the server's CPU three ways: over the load
//! generator's window from the scheduler's runtime (`schedstat`, the
//! benchmark's figure), over the same window from `/proc/PID/stat`
//! (utime + stime), and over the server's whole life under load (utime +
//! stime from its `listening on` to the end of the load, against every
//! frame echoed). ch09 and ch15 also run pinned (server and load generator
//! on a core each) at the 64 B loads. A CPU target holds only if it holds
//! under every method.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;

use crate::report::{si, RunInfo};
use crate::stats::{judge, Goal, Interval, Stop, Verdict};
use crate::{Context, Load, Outcome, Pin, Timing};

/// Seconds a run takes beyond its warm-up and window: start, ramp-up, stop
/// (measured: 0.05 to 0.1 on 2 cores).
pub const OVERHEAD_PER_RUN: f64 = 0.1;

/// The servers this phase runs (labels of `servers::discover`).
pub const SERVERS: [&str; 5] = ["ch09", "ch14", "ch15", "tokio-ct", "tokio-ct-tuned"];
/// These also run pinned at the 64 B loads: the ch15 ÷ ch09 question.
const PINNED: [&str; 2] = ["ch09", "ch15"];
/// tokio's current-thread variants: per round, the stronger is the reference.
const TOKIO_CT: [&str; 2] = ["tokio-ct", "tokio-ct-tuned"];

pub const LOADS: [Load; 4] = [
    Load::closed(100, 1, 64),
    Load::closed(100, 16, 64),
    Load::closed(10, 4, 4096),
    Load::closed(10, 16, 4096),
];

/// How a server's CPU per frame was measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// Over the load generator's window, from /proc/PID/task/*/schedstat.
    Window,
    /// Over the same window, from /proc/PID/stat (utime + stime).
    StatWindow,
    /// From the server's start to the end of the load, utime + stime,
    /// against every frame echoed.
    Whole,
}

impl Method {
    fn text(self) -> &'static str {
        match self {
            Method::Window => "window (schedstat)",
            Method::StatWindow => "window (utime+stime)",
            Method::Whole => "whole run (utime+stime)",
        }
    }
}

/// What a ratio divides.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Metric {
    FramesPerSec,
    Cpu(Method),
}

/// What it divides by.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Den {
    Server(&'static str),
    /// The stronger of tokio's current-thread variants in that round: more
    /// frames/s, or less CPU per frame.
    StrongerTokio,
}

/// One round's figures of one server at one load.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    pub fps: f64,
    /// ns per frame, by [`Method`]: window, stat window, whole run.
    pub cpu: [Option<f64>; 3],
    /// Pinned runs: softirq time on the server's core, ns per frame.
    pub softirq_server_core: Option<f64>,
    /// Softirq time on every CPU (whoever it was charged to), ns per frame.
    pub softirq: Option<f64>,
    /// CPU of the ksoftirqd threads (charged to neither side), ns per frame.
    pub ksoftirqd: Option<f64>,
}

impl Sample {
    fn value(&self, metric: Metric) -> Option<f64> {
        match metric {
            Metric::FramesPerSec => Some(self.fps).filter(|v| *v > 0.0),
            Metric::Cpu(m) => self.cpu[m as usize],
        }
    }
}

/// A server's label in a round: "ch15", or "ch15 pinned".
fn pinned(label: &str) -> String {
    format!("{label} pinned")
}

/// One round at one load: every server's sample, by label.
pub type Round = HashMap<String, Sample>;

/// `num`'s `metric` over `den`'s in one round. A pinned run is divided by
/// the same server pinned: "ch15 pinned" ÷ "ch09 pinned".
pub fn ratio(round: &Round, num: &str, den: Den, metric: Metric) -> Option<f64> {
    let value = |label: &str| round.get(label)?.value(metric);
    let a = value(num)?;
    let b = match den {
        Den::Server(label) if num.ends_with(" pinned") => value(&pinned(label))?,
        Den::Server(label) => value(label)?,
        Den::StrongerTokio => {
            let values = TOKIO_CT.iter().filter_map(|t| value(t));
            match metric {
                Metric::FramesPerSec => values.reduce(f64::max)?,
                Metric::Cpu(_) => values.reduce(f64::min)?,
            }
        }
    };
    Some(a / b)
}

/// A ratio under one method: what the target's row shows and judges.
#[derive(Debug, Clone)]
pub struct Variant {
    pub name: String,
    pub num: String,
    pub den: Den,
    pub metric: Metric,
}

impl Variant {
    fn den_label(&self) -> String {
        match self.den {
            Den::Server(s) if self.num.ends_with(" pinned") => pinned(s),
            Den::Server(s) => s.to_string(),
            Den::StrongerTokio => "the stronger tokio-ct".into(),
        }
    }

    fn per_round(&self, rounds: &[Round]) -> Vec<f64> {
        rounds
            .iter()
            .filter_map(|r| ratio(r, &self.num, self.den, self.metric))
            .collect()
    }
}

/// A target: a ratio at a load, and what it must be.
#[derive(Debug, Clone)]
pub struct Target {
    pub server: &'static str,
    pub what: &'static str,
    pub load: usize,
    pub den: Den,
    pub cpu: bool,
    pub goal: Goal,
    /// Also judged pinned (ch15 ÷ ch09 at 64 B).
    pub pinned_too: bool,
}

impl Target {
    /// The ratio under each method it is judged by.
    pub fn variants(&self) -> Vec<Variant> {
        let v = |name: &str, num: String, metric| Variant {
            name: name.to_string(),
            num,
            den: self.den,
            metric,
        };
        let s = self.server.to_string();
        if !self.cpu {
            return vec![v("frames/s", s, Metric::FramesPerSec)];
        }
        let mut all = vec![
            v(
                Method::Window.text(),
                s.clone(),
                Metric::Cpu(Method::Window),
            ),
            v(Method::Whole.text(), s.clone(), Metric::Cpu(Method::Whole)),
        ];
        if self.pinned_too {
            all.push(v(
                "pinned, window (schedstat)",
                pinned(&s),
                Metric::Cpu(Method::Window),
            ));
            all.push(v(
                "pinned, whole run (utime+stime)",
                pinned(&s),
                Metric::Cpu(Method::Whole),
            ));
        }
        all
    }

    /// Whether the servers it divides were part of the run.
    fn measurable(&self, present: &[&str]) -> bool {
        let den = match self.den {
            Den::Server(s) => present.contains(&s),
            Den::StrongerTokio => TOKIO_CT.iter().any(|t| present.contains(t)),
        };
        den && present.contains(&self.server)
    }

    fn den_text(&self) -> &'static str {
        match self.den {
            Den::Server(s) => s,
            Den::StrongerTokio => "the stronger tokio-ct",
        }
    }
}

/// The targets of issues 8, 14 and 22, in the order the page lists them.
pub fn targets() -> Vec<Target> {
    let t = |server, what, load, den, cpu, goal| Target {
        server,
        what,
        load,
        den,
        cpu,
        goal,
        pinned_too: false,
    };
    let fps = "frames/s";
    let cpu = "CPU per frame";
    let tokio = Den::StrongerTokio;
    let ch09 = Den::Server("ch09");
    let (d1, d16, k4, k16) = (0, 1, 2, 3);
    vec![
        t("ch09", fps, k4, tokio, false, Goal::AtLeast(1.0)),
        t("ch09", cpu, k4, tokio, true, Goal::AtMost(1.0)),
        t("ch09", fps, k16, tokio, false, Goal::AtLeast(1.0)),
        t("ch09", cpu, k16, tokio, true, Goal::AtMost(1.0)),
        t("ch09", cpu, d1, tokio, true, Goal::AtMost(1.0)),
        t("ch09", cpu, d16, tokio, true, Goal::AtMost(1.0)),
        t("ch14", cpu, d1, ch09, true, Goal::AtMost(1.05)),
        t("ch14", cpu, d16, ch09, true, Goal::AtMost(1.05)),
        t("ch14", cpu, d1, tokio, true, Goal::AtMost(1.0)),
        t("ch14", cpu, d16, tokio, true, Goal::AtMost(1.0)),
        Target {
            pinned_too: true,
            ..t("ch15", cpu, d1, ch09, true, Goal::AtMost(1.0))
        },
        Target {
            pinned_too: true,
            ..t("ch15", cpu, d16, ch09, true, Goal::AtMost(0.95))
        },
        t("ch15", fps, k4, ch09, false, Goal::AtLeast(1.0)),
        t("ch15", cpu, k4, ch09, true, Goal::AtMost(1.0)),
        t("ch15", fps, k16, ch09, false, Goal::AtLeast(1.0)),
        t("ch15", cpu, k16, ch09, true, Goal::AtMost(1.0)),
    ]
}

/// One verdict from several methods: met only if met under all of them,
/// missed only if missed under all.
pub fn combine(verdicts: &[Verdict]) -> Verdict {
    if !verdicts.is_empty() && verdicts.iter().all(|v| *v == Verdict::Met) {
        Verdict::Met
    } else if !verdicts.is_empty() && verdicts.iter().all(|v| *v == Verdict::Missed) {
        Verdict::Missed
    } else {
        Verdict::NotResolved
    }
}

/// Everything the phase measured.
pub struct TargetsRun {
    pub loads: Vec<Load>,
    /// rounds[load] = one [`Round`] per round run at that load.
    pub rounds: Vec<Vec<Round>>,
    pub stops: Vec<Option<Stop>>,
    pub tolerance: f64,
    pub window: f64,
    pub failures: Vec<String>,
    /// Every run, for targets.csv: (load, round, label, figures, what went wrong).
    runs: Vec<(usize, usize, String, Sample, String)>,
}

/// Runs the phase.
pub fn run(ctx: &Context) -> TargetsRun {
    let rounds_policy = ctx.rounds(6, 15);
    let timing = if ctx.quick {
        Timing {
            connect_timeout: 1.0,
            warmup: 0.05,
            secs: 0.1,
            drain: 0.5,
        }
    } else {
        Timing {
            connect_timeout: 5.0,
            warmup: 0.3,
            secs: 1.0,
            drain: 1.0,
        }
    };
    let pin = Pin::apart();
    let mut result = TargetsRun {
        loads: LOADS.to_vec(),
        rounds: vec![Vec::new(); LOADS.len()],
        stops: vec![None; LOADS.len()],
        tolerance: rounds_policy.tolerance,
        window: timing.secs,
        failures: Vec::new(),
        runs: Vec::new(),
    };
    let present: Vec<&str> = SERVERS
        .iter()
        .copied()
        .filter(|s| ctx.server(s).is_some())
        .collect();
    if !present.contains(&"ch09") || !TOKIO_CT.iter().any(|t| present.contains(t)) {
        eprintln!("bench: targets: skipped, they need ch09 and a tokio-ct in the run");
        return result;
    }
    let all_targets = targets();
    let pinned_runs = if pin.is_some() {
        PINNED.iter().filter(|s| present.contains(s)).count()
    } else {
        0
    };
    let runs_per_round: usize = LOADS
        .iter()
        .map(|l| present.len() + if l.size == 64 { pinned_runs } else { 0 })
        .sum();
    let per_round = runs_per_round as f64 * (timing.warmup + timing.secs + OVERHEAD_PER_RUN);
    eprintln!(
        "bench: targets: {} servers × {} loads, {:.1} s windows, rounds per load from {} until \
         every interval is within ±{:.0}%, at most {}: about {:.0} s a round, so {:.0} to {:.0} s",
        present.len(),
        LOADS.len(),
        timing.secs,
        rounds_policy.min,
        rounds_policy.tolerance * 100.0,
        rounds_policy.max,
        per_round,
        per_round * rounds_policy.min as f64,
        per_round * rounds_policy.max as f64,
    );
    for (li, load) in LOADS.iter().enumerate() {
        // Who runs at this load: every server, and pinned ones at 64 B.
        let mut entries: Vec<(String, &str, Option<Pin>)> =
            present.iter().map(|&s| (s.to_string(), s, None)).collect();
        if load.size == 64 {
            if let Some(pin) = pin {
                entries.extend(
                    PINNED
                        .iter()
                        .filter(|s| present.contains(s))
                        .map(|&s| (pinned(s), s, Some(pin))),
                );
            }
        }
        let tracked: Vec<Variant> = all_targets
            .iter()
            .filter(|t| t.load == li && t.measurable(&present))
            .flat_map(|t| t.variants())
            .collect();
        for round in 0.. {
            let mut samples = Round::new();
            for (label, base, pin) in runner_order(&entries, round) {
                let Some(server) = ctx.server(base) else {
                    continue;
                };
                let m = ctx.measure(server, load, &timing, pin);
                let sample = sample(&m, pin);
                eprintln!(
                    "targets: {} round {} {:>14}  {}",
                    load.label(),
                    round + 1,
                    label,
                    m.outcome.progress()
                );
                let note = match &m.outcome {
                    Outcome::Ok(_) => String::new(),
                    o => {
                        let text = o.progress();
                        result.failures.push(format!(
                            "targets: {label} at {} (round {}): {text}",
                            load.label(),
                            round + 1
                        ));
                        text
                    }
                };
                if let Some(s) = sample {
                    samples.insert(label.clone(), s);
                }
                result
                    .runs
                    .push((li, round, label, sample.unwrap_or_default(), note));
            }
            result.rounds[li].push(samples);
            let intervals: Vec<(String, Option<Interval>)> = tracked
                .iter()
                .map(|v| {
                    (
                        format!("{} ÷ {}, {}", v.num, v.den_label(), v.name),
                        Interval::of(&v.per_round(&result.rounds[li])),
                    )
                })
                .collect();
            if let Some(stop) = rounds_policy.stop(round + 1, &intervals) {
                eprintln!(
                    "targets: {}: {}",
                    load.label(),
                    stop.text(rounds_policy.tolerance)
                );
                result.stops[li] = Some(stop);
                break;
            }
        }
    }
    result
}

/// The entries in this round's order.
fn runner_order<'a>(
    entries: &'a [(String, &'a str, Option<Pin>)],
    round: usize,
) -> Vec<(String, &'a str, Option<Pin>)> {
    let idx: Vec<usize> = (0..entries.len()).collect();
    crate::runner::rotated(&idx, round)
        .into_iter()
        .map(|i| entries[i].clone())
        .collect()
}

/// A run's figures, if it served everyone.
fn sample(m: &crate::Measured, pin: Option<Pin>) -> Option<Sample> {
    let r = m.outcome.report()?;
    let per_frame = |cpu: Option<f64>| {
        let cpu = cpu?;
        (r.frames > 0).then(|| cpu * r.secs * 1e9 / r.frames as f64)
    };
    let ns = |secs: f64| (r.frames > 0).then(|| secs * 1e9 / r.frames as f64);
    let softirq = pin.and_then(|p| ns(r.cpus.iter().find(|c| c.cpu == p.server)?.softirq));
    let all_softirq = (!r.cpus.is_empty())
        .then(|| ns(r.cpus.iter().map(|c| c.softirq).sum()))
        .flatten();
    Some(Sample {
        fps: r.frames_per_sec,
        cpu: [
            per_frame(r.server_cpu),
            per_frame(r.server_cpu_stat),
            m.whole_ns_per_frame(),
        ],
        softirq_server_core: softirq,
        softirq: all_softirq,
        ksoftirqd: r.ksoftirqd_cpu.and_then(|c| per_frame(Some(c))),
    })
}

impl TargetsRun {
    fn interval(&self, load: usize, v: &Variant) -> Option<Interval> {
        Interval::of(&v.per_round(&self.rounds[load]))
    }

    /// The targets table: each target, its ratio under each method, and
    /// the verdict of the intervals.
    pub fn targets_table(&self) -> String {
        let mut s = String::from(
            "| target | load | measured: median of per-round ratios (95% interval, rounds) | |\n\
             |---|---|---|---|\n",
        );
        for t in targets() {
            let rounds = &self.rounds[t.load];
            let present: Vec<&str> = SERVERS
                .iter()
                .copied()
                .filter(|s| rounds.iter().any(|r| r.contains_key(*s)))
                .collect();
            if rounds.is_empty() || !t.measurable(&present) {
                continue;
            }
            let mut verdicts = Vec::new();
            let mut cells = Vec::new();
            for v in t.variants() {
                let i = self.interval(t.load, &v);
                let verdict = judge(i.as_ref(), t.goal);
                verdicts.push(verdict);
                let text = i.map_or_else(|| "no figure".into(), |i| i.text(2));
                cells.push(if t.cpu {
                    format!("{}: {text}", v.name)
                } else {
                    text
                });
            }
            let verdict = combine(&verdicts);
            let mut verdict_text = verdict.text().to_string();
            if verdict == Verdict::NotResolved && verdicts.contains(&Verdict::Met) {
                let met: Vec<String> = t
                    .variants()
                    .iter()
                    .zip(&verdicts)
                    .filter(|(_, v)| **v == Verdict::Met)
                    .map(|(variant, _)| variant.name.clone())
                    .collect();
                let _ = write!(verdict_text, " (met by {} only)", met.join(", "));
            }
            let _ = writeln!(
                s,
                "| {} {} ÷ {} {} | {} | {} | {} |",
                t.server,
                t.what,
                t.den_text(),
                t.goal,
                self.loads[t.load].label(),
                cells.join("; "),
                verdict_text
            );
        }
        s
    }

    /// Why each load's rounds stopped, one line under the targets table.
    pub fn stops_text(&self) -> String {
        let stops: Vec<String> = (0..self.loads.len())
            .filter_map(|li| {
                let stop = self.stops[li].as_ref()?;
                Some(format!(
                    "{}: {}",
                    self.loads[li].label(),
                    stop.text(self.tolerance)
                ))
            })
            .collect();
        if stops.is_empty() {
            String::new()
        } else {
            format!("\nRounds, per load: {}.\n", stops.join("; "))
        }
    }

    /// Per load: why the rounds stopped, and every server's figures and ratios.
    pub fn ratio_tables(&self) -> String {
        let mut s = String::new();
        for (li, load) in self.loads.iter().enumerate() {
            let rounds = &self.rounds[li];
            if rounds.is_empty() {
                continue;
            }
            let stop = self.stops[li]
                .as_ref()
                .map(|st| st.text(self.tolerance))
                .unwrap_or_default();
            let _ = write!(s, "**{}**: {stop}.\n\n", load.label());
            s += "| server | frames/s | CPU ns/frame | frames/s ÷ ch09 | CPU ÷ ch09 | CPU ÷ stronger tokio-ct |\n\
                  |---|---|---|---|---|---|\n";
            let mut labels: Vec<String> = Vec::new();
            for r in rounds {
                for l in r.keys() {
                    if !labels.contains(l) {
                        labels.push(l.clone());
                    }
                }
            }
            labels.sort_by_key(|l| order_key(l));
            for label in &labels {
                let values = |f: &dyn Fn(&Sample) -> Option<f64>| -> Option<Interval> {
                    Interval::of(
                        &rounds
                            .iter()
                            .filter_map(|r| f(r.get(label)?))
                            .collect::<Vec<_>>(),
                    )
                };
                let fps = values(&|s| Some(s.fps)).map(|i| si(i.median));
                let ns = values(&|s| s.cpu[0]).map(|i| format!("{:.0}", i.median));
                let per_round = |den: Den, metric: Metric| {
                    let v: Vec<f64> = rounds
                        .iter()
                        .filter_map(|r| ratio(r, label, den, metric))
                        .collect();
                    Interval::of(&v).map_or("–".into(), |i| i.text(2))
                };
                let _ = writeln!(
                    s,
                    "| {label} | {} | {} | {} | {} | {} |",
                    fps.unwrap_or("–".into()),
                    ns.unwrap_or("–".into()),
                    per_round(Den::Server("ch09"), Metric::FramesPerSec),
                    per_round(Den::Server("ch09"), Metric::Cpu(Method::Window)),
                    if label.ends_with(" pinned") {
                        "–".into()
                    } else {
                        per_round(Den::StrongerTokio, Metric::Cpu(Method::Window))
                    },
                );
            }
            s += "\n";
        }
        s
    }

    /// How much the method alone moves ch15 ÷ ch09: per round, the ratio
    /// counted one way over the same runs' ratio counted the other way.
    /// Paired, so the machine's noise between runs cancels.
    pub fn paired_methods_table(&self) -> String {
        let pairs: [(&str, bool, Method, Method); 3] = [
            (
                "utime+stime ÷ schedstat, same window",
                false,
                Method::StatWindow,
                Method::Window,
            ),
            ("whole run ÷ window", false, Method::Whole, Method::Window),
            (
                "pinned: whole run ÷ window",
                true,
                Method::Whole,
                Method::Window,
            ),
        ];
        let mut s = String::new();
        for (li, load) in self.loads.iter().enumerate() {
            if load.size != 64 || self.rounds[li].is_empty() {
                continue;
            }
            if s.is_empty() {
                s += "| load | ";
                s += &pairs.map(|p| p.0).join(" | ");
                s += " |\n|---|";
                s += &"---|".repeat(pairs.len());
                s += "\n";
            }
            let _ = write!(s, "| {} |", load.label());
            for (_, pin, a, b) in pairs {
                let (num, den) = if pin {
                    (pinned("ch15"), Den::Server("ch09"))
                } else {
                    ("ch15".to_string(), Den::Server("ch09"))
                };
                let v: Vec<f64> = self.rounds[li]
                    .iter()
                    .filter_map(|r| {
                        let x = ratio(r, &num, den, Metric::Cpu(a))?;
                        let y = ratio(r, &num, den, Metric::Cpu(b))?;
                        Some(x / y)
                    })
                    .collect();
                let text = Interval::of(&v).map_or("–".into(), |i| i.text(3));
                let _ = write!(s, " {text} |");
            }
            s += "\n";
        }
        s
    }

    /// ch15 ÷ ch09, CPU per frame, at the 64 B loads, by method: issue 19's
    /// question of why two ways of measuring disagree.
    pub fn methods_table(&self) -> String {
        let mut s = String::new();
        let columns: [(&str, bool, Method); 5] = [
            ("window, schedstat", false, Method::Window),
            ("window, utime+stime", false, Method::StatWindow),
            ("whole run, utime+stime", false, Method::Whole),
            ("pinned: window, schedstat", true, Method::Window),
            ("pinned: whole run", true, Method::Whole),
        ];
        let mut any = false;
        for (li, load) in self.loads.iter().enumerate() {
            if load.size != 64 || self.rounds[li].is_empty() {
                continue;
            }
            if !any {
                s += "| load | ";
                s += &columns.map(|c| c.0).join(" | ");
                s += " |\n|---|";
                s += &"---|".repeat(columns.len());
                s += "\n";
                any = true;
            }
            let _ = write!(s, "| {} |", load.label());
            for (_, pin, method) in columns {
                let v = Variant {
                    name: String::new(),
                    num: if pin { pinned("ch15") } else { "ch15".into() },
                    den: Den::Server("ch09"),
                    metric: Metric::Cpu(method),
                };
                let text = self.interval(li, &v).map_or("–".into(), |i| i.text(3));
                let _ = write!(s, " {text} |");
            }
            s += "\n";
        }
        s
    }

    /// Where the kernel's softirq work (on loopback: the receive side of
    /// every TCP segment, run by whoever sent it, or by ksoftirqd) went,
    /// ns per frame, median over rounds, at the 64 B loads.
    pub fn softirq_table(&self) -> String {
        let loads: Vec<usize> = (0..self.loads.len())
            .filter(|&li| self.loads[li].size == 64 && !self.rounds[li].is_empty())
            .collect();
        if loads.is_empty() {
            return String::new();
        }
        // A row per server and load: narrow enough for the book's column.
        let mut s = String::from(
            "| server | load | CPU (window) | softirq, all cores | on the server's core | ksoftirqd |\n\
             |---|---|---|---|---|---|\n",
        );
        for label in ["ch09", "ch15", "ch09 pinned", "ch15 pinned"] {
            for &li in &loads {
                let m = |f: fn(&Sample) -> Option<f64>| {
                    let v: Vec<f64> = self.rounds[li]
                        .iter()
                        .filter_map(|r| f(r.get(label)?))
                        .collect();
                    Interval::of(&v).map_or("–".into(), |i| format!("{:.0}", i.median))
                };
                let _ = writeln!(
                    s,
                    "| {label} | {} | {} | {} | {} | {} |",
                    self.loads[li].label(),
                    m(|s| s.cpu[0]),
                    m(|s| s.softirq),
                    m(|s| s.softirq_server_core),
                    m(|s| s.ksoftirqd)
                );
            }
        }
        s
    }

    pub fn write(&self, out: &Path, info: &RunInfo) -> Result<()> {
        if self.rounds.iter().all(|r| r.is_empty()) {
            return Ok(());
        }
        let md = format!(
            "# echo-steps benchmark: the targets\n\n{}\n\
             Servers alternate within each round, in an order that rotates from round to round; \
             each run is a fresh server and {:.1} s of load after a warm-up. Each ratio is the \
             median of the rounds' ratios (each server against the same round's reference), \
             with its 95% interval; rounds were added per load until every interval a target \
             needs was within ±{:.0}% of its median, or the cap. A target is *met* when its \
             whole interval meets it (under every CPU method, for CPU targets), *missed* when \
             none of it does, and *not resolved* otherwise.\n\n\
             <!-- ANCHOR: targets -->\n{}<!-- ANCHOR_END: targets -->\n\n\
             **ch15 ÷ ch09, CPU per frame, by how it is measured** (median, 95% interval, rounds):\n\n\
             <!-- ANCHOR: methods -->\n{}<!-- ANCHOR_END: methods -->\n\n\
             **How much the method alone moves that ratio**: per round, ch15 ÷ ch09 counted \
             one way over the same runs counted the other way (paired, so the noise between \
             runs cancels; 1.000 means no difference):\n\n\
             <!-- ANCHOR: paired -->\n{}<!-- ANCHOR_END: paired -->\n\n\
             **Where the kernel's softirq work ran**, ns per echoed frame (median over rounds; \
             /proc/stat ticks, so a few ns of resolution at these rates):\n\n\
             <!-- ANCHOR: softirq -->\n{}<!-- ANCHOR_END: softirq -->\n\n\
             **Every server, per load** (CPU: the window, schedstat):\n\n\
             <!-- ANCHOR: ratios -->\n{}<!-- ANCHOR_END: ratios -->\n",
            info.header(),
            self.window,
            self.tolerance * 100.0,
            self.targets_table() + &self.stops_text(),
            self.methods_table(),
            self.paired_methods_table(),
            self.softirq_table(),
            self.ratio_tables(),
        );
        let md = md + &failures_section(&self.failures);
        println!("{md}");
        std::fs::write(out.join("targets.md"), md)?;
        let mut csv = String::from(
            "load,round,server,frames_per_sec,ns_window_schedstat,ns_window_stat,ns_whole_run,softirq_ns_server_core,softirq_ns_all,ksoftirqd_ns,note\n",
        );
        let num = |v: Option<f64>| v.map(|v| format!("{v:.0}")).unwrap_or_default();
        for (li, round, label, s, note) in &self.runs {
            let _ = writeln!(
                csv,
                "{},{},{label},{:.0},{},{},{},{},{},{},\"{}\"",
                self.loads[*li].label(),
                round + 1,
                s.fps,
                num(s.cpu[0]),
                num(s.cpu[1]),
                num(s.cpu[2]),
                num(s.softirq_server_core),
                num(s.softirq),
                num(s.ksoftirqd),
                note.replace('"', "'"),
            );
        }
        std::fs::write(out.join("targets.csv"), csv)?;
        eprintln!("bench: targets: wrote targets.md and targets.csv");
        Ok(())
    }
}

/// The runs that failed (wrong or lost replies, a server that did not
/// start or stop): listed, and left out of the ratios.
pub fn failures_section(failures: &[String]) -> String {
    if failures.is_empty() {
        return String::new();
    }
    let mut s = String::from("\n**Runs that failed**, left out of the figures above:\n\n");
    for f in failures {
        let _ = writeln!(s, "- {f}");
    }
    s
}

/// Rows in the order of [`SERVERS`], each pinned run after the rest.
fn order_key(label: &str) -> (bool, usize) {
    let base = label.trim_end_matches(" pinned");
    let i = SERVERS
        .iter()
        .position(|s| *s == base)
        .unwrap_or(SERVERS.len());
    (label.ends_with(" pinned"), i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(fps: f64, ns: f64) -> Sample {
        Sample {
            fps,
            cpu: [Some(ns), Some(ns * 1.1), Some(ns * 1.2)],
            softirq_server_core: None,
            softirq: None,
            ksoftirqd: None,
        }
    }

    #[test]
    fn the_stronger_tokio_is_chosen_per_round_and_per_metric() {
        let round: Round = [
            ("ch09".to_string(), sample(100.0, 900.0)),
            ("tokio-ct".to_string(), sample(80.0, 1000.0)),
            ("tokio-ct-tuned".to_string(), sample(120.0, 1200.0)),
        ]
        .into();
        // More frames/s: tuned; less CPU: idiomatic.
        let fps = ratio(&round, "ch09", Den::StrongerTokio, Metric::FramesPerSec).unwrap();
        assert!((fps - 100.0 / 120.0).abs() < 1e-12);
        let cpu = ratio(
            &round,
            "ch09",
            Den::StrongerTokio,
            Metric::Cpu(Method::Window),
        )
        .unwrap();
        assert!((cpu - 0.9).abs() < 1e-12);
        let whole = ratio(
            &round,
            "ch09",
            Den::Server("tokio-ct"),
            Metric::Cpu(Method::Whole),
        );
        assert!((whole.unwrap() - 0.9).abs() < 1e-12);
        assert_eq!(
            ratio(&round, "ch15", Den::Server("ch09"), Metric::FramesPerSec),
            None
        );
    }

    #[test]
    fn pinned_runs_are_divided_by_pinned_runs() {
        let rounds: Vec<Round> = (0..3)
            .map(|i| {
                let k = 1.0 + i as f64 / 100.0;
                [
                    ("ch09".to_string(), sample(100.0, 1000.0)),
                    ("ch15".to_string(), sample(100.0, 900.0 * k)),
                    (pinned("ch09"), sample(100.0, 500.0)),
                    (pinned("ch15"), sample(100.0, 600.0 * k)),
                ]
                .into()
            })
            .collect();
        let t = targets()
            .into_iter()
            .find(|t| t.server == "ch15" && t.pinned_too && t.load == 1)
            .unwrap();
        let variants = t.variants();
        assert_eq!(variants.len(), 4);
        let medians: Vec<f64> = variants
            .iter()
            .map(|v| Interval::of(&v.per_round(&rounds)).unwrap().median)
            .collect();
        assert!((medians[0] - 0.909).abs() < 1e-9, "{medians:?}");
        assert!((medians[2] - 1.212).abs() < 1e-9, "{medians:?}");
    }

    #[test]
    fn a_target_holds_only_under_every_method() {
        use Verdict::*;
        assert_eq!(combine(&[Met, Met]), Met);
        assert_eq!(combine(&[Met, NotResolved]), NotResolved);
        assert_eq!(combine(&[Met, Missed]), NotResolved);
        assert_eq!(combine(&[Missed, Missed]), Missed);
        assert_eq!(combine(&[]), NotResolved);
    }

    #[test]
    fn the_targets_table_says_met_only_from_the_intervals() {
        let mut run = TargetsRun {
            loads: LOADS.to_vec(),
            rounds: vec![Vec::new(); LOADS.len()],
            stops: vec![None; LOADS.len()],
            tolerance: 0.03,
            window: 1.0,
            failures: Vec::new(),
            runs: Vec::new(),
        };
        // 8 rounds at 10×4×4096: ch09 at 1.2× tokio's frames/s every round,
        // and its CPU 0.97 to 1.02 of tokio's.
        run.rounds[2] = (0..8)
            .map(|i| {
                let cpu = 970.0 + 7.0 * i as f64;
                [
                    ("ch09".to_string(), sample(120.0, cpu)),
                    ("tokio-ct".to_string(), sample(100.0, 1000.0)),
                ]
                .into()
            })
            .collect();
        let table = run.targets_table();
        let row = |start: &str| {
            table
                .lines()
                .find(|l| l.starts_with(start))
                .unwrap_or_else(|| panic!("no row {start} in\n{table}"))
                .to_string()
        };
        let fps = row("| ch09 frames/s ÷ the stronger tokio-ct ≥ 1.00 | 10×4×4096B");
        assert!(
            fps.ends_with("| 1.20 (1.20–1.20, 8 rounds) | met |"),
            "{fps}"
        );
        let cpu = row("| ch09 CPU per frame ÷ the stronger tokio-ct ≤ 1.00 | 10×4×4096B");
        assert!(cpu.ends_with("| not resolved |"), "{cpu}");
        assert!(
            cpu.contains("window (schedstat): 0.99 (0.97–1.02, 8 rounds)"),
            "{cpu}"
        );
        // Loads without rounds have no rows, nor targets of servers not run.
        assert!(!table.contains("100×1×64B"), "{table}");
        assert!(!table.contains("ch15"), "{table}");
    }

    #[test]
    fn the_paired_table_shows_what_the_method_alone_changes() {
        let mut run = TargetsRun {
            loads: LOADS.to_vec(),
            rounds: vec![Vec::new(); LOADS.len()],
            stops: vec![None; LOADS.len()],
            tolerance: 0.03,
            window: 1.0,
            failures: Vec::new(),
            runs: Vec::new(),
        };
        // Rounds that differ a lot from each other; within each, ch15's
        // whole-run figure is 4% under its window figure, ch09's equal.
        run.rounds[1] = (0..6)
            .map(|i| {
                let noise = 1.0 + 0.2 * i as f64;
                let mut ch15 = sample(100.0, 500.0 * noise);
                ch15.cpu[2] = Some(480.0 * noise);
                let mut ch09 = sample(100.0, 550.0);
                ch09.cpu[2] = Some(550.0);
                [("ch09".to_string(), ch09), ("ch15".to_string(), ch15)].into()
            })
            .collect();
        let table = run.paired_methods_table();
        let row = table
            .lines()
            .find(|l| l.starts_with("| 100×16×64B"))
            .unwrap();
        // utime+stime ÷ schedstat: the helper makes both 1.1×: no change;
        // whole run ÷ window: 0.96 every round, whatever the noise.
        assert_eq!(
            row,
            "| 100×16×64B | 1.000 (1.000–1.000, 6 rounds) | 0.960 (0.960–0.960, 6 rounds) | – |"
        );
    }
}
