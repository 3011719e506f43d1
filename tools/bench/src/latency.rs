//! The latency phase: latency the way users meet it, under a fixed offered
//! load (the load generator's open loop), against how much is offered.
//!
//! First the strongest tokio's maximum at the load's shape, 100 clients of
//! 64 B frames: the most frames per second any tokio variant answered with
//! 100 connections each waiting for its reply (closed loop, depth 1; the
//! median over rounds). Then every server at 25%, 50%, 75% and 90% of
//! that, frames sent on schedule whatever the server does, each latency
//! counted from when its frame was due. Servers alternate within each
//! round; rounds are added per offered load until every p99 ratio a target
//! needs is within ±3%, or the cap.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;

use crate::report::{si, RunInfo};
#[cfg(test)]
use crate::stats::Verdict;
use crate::stats::{judge, Goal, Interval, Stop};
use crate::{Context, Load, Outcome, Timing};

/// The servers measured, in the order of the tables.
pub const SERVERS: [&str; 7] = [
    "ch05", "ch07", "ch09", "ch14", "ch15", "tokio-ct", "tokio-mt",
];
/// Whose maximum sets the offered loads: the strongest of these.
pub const CALIBRATION: [&str; 4] = ["tokio-ct", "tokio-ct-tuned", "tokio-mt", "tokio-mt-tuned"];
/// The shape: 100 clients, 64 B frames.
const SHAPE: Load = Load::closed(100, 1, 64);
/// Offered loads, as shares of the strongest tokio's maximum.
const SHARES: [f64; 4] = [0.25, 0.5, 0.75, 0.9];
/// The target: these servers' p99 no higher than the reference's up to
/// this share of the maximum.
const TARGET_SERVERS: [&str; 3] = ["ch09", "ch14", "ch15"];
const REFERENCE: &str = "tokio-ct";
const TARGET_UP_TO: f64 = 0.75;
/// A cell is marked when the load generator's own lateness (its p99) is
/// more than this share of the server's p99: the figure is then the pair's.
const LATE_SHARE: f64 = 0.25;
/// Where the page says each server's p99 crosses: 1 ms.
const CROSSING_US: f64 = 1000.0;

/// One open-loop run's figures, in µs.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    /// Replies per second within the window.
    pub achieved: f64,
    /// How late the load generator sent, p99.
    pub lag_p99: f64,
    /// Frames still unanswered at the end: the server fell behind.
    pub unanswered: u64,
}

type Round = HashMap<String, Sample>;

pub struct LatencyRun {
    /// The strongest tokio and its maximum frames/s at the shape.
    pub reference: Option<(String, f64)>,
    pub shares: Vec<f64>,
    /// rounds[share] = one [`Round`] per round.
    pub rounds: Vec<Vec<Round>>,
    pub stops: Vec<Option<Stop>>,
    pub tolerance: f64,
    pub window: f64,
    pub failures: Vec<String>,
    calibration: Vec<(String, Option<Interval>)>,
}

impl LatencyRun {
    /// The offered frames/s at share `i`.
    pub fn offered(&self, i: usize) -> Option<f64> {
        Some(self.reference.as_ref()?.1 * self.shares[i])
    }
}

pub fn run(ctx: &Context) -> LatencyRun {
    let rounds_policy = ctx.rounds(6, 10);
    let (timing, shares, calibration_rounds) = if ctx.quick {
        let t = Timing {
            connect_timeout: 1.0,
            warmup: 0.05,
            secs: 0.2,
            drain: 0.5,
        };
        (t, vec![0.5], 1)
    } else {
        let t = Timing {
            connect_timeout: 5.0,
            warmup: 0.3,
            secs: 1.0,
            drain: 2.0,
        };
        (t, SHARES.to_vec(), 3)
    };
    let mut result = LatencyRun {
        reference: None,
        rounds: vec![Vec::new(); shares.len()],
        stops: vec![None; shares.len()],
        shares,
        tolerance: rounds_policy.tolerance,
        window: timing.secs,
        failures: Vec::new(),
        calibration: Vec::new(),
    };
    let tokios: Vec<&str> = CALIBRATION
        .iter()
        .copied()
        .filter(|s| ctx.server(s).is_some())
        .collect();
    if tokios.is_empty() {
        eprintln!("bench: latency: skipped, it needs a tokio server in the run");
        return result;
    }
    let servers: Vec<&str> = SERVERS
        .iter()
        .copied()
        .filter(|s| ctx.server(s).is_some())
        .collect();
    let run = timing.warmup + timing.secs + crate::targets::OVERHEAD_PER_RUN;
    let per_round = servers.len() as f64 * run;
    eprintln!(
        "bench: latency: the maximum of {} at {} ({calibration_rounds} round(s)), then {} servers \
         at {} offered loads, {:.1} s windows, rounds per load from {} to {} until the p99 \
         ratios are within ±{:.0}%: about {:.0} to {:.0} s",
        tokios.join(", "),
        SHAPE.label(),
        servers.len(),
        result.shares.len(),
        timing.secs,
        rounds_policy.min,
        rounds_policy.max,
        rounds_policy.tolerance * 100.0,
        run * (calibration_rounds * tokios.len()) as f64
            + per_round * (rounds_policy.min * result.shares.len()) as f64,
        run * (calibration_rounds * tokios.len()) as f64
            + per_round * (rounds_policy.max * result.shares.len()) as f64,
    );

    // The strongest tokio's maximum: closed loop, each client waiting for its reply.
    let mut fps: HashMap<&str, Vec<f64>> = HashMap::new();
    for round in 0..calibration_rounds {
        for label in crate::runner::rotated(&tokios, round) {
            let server = ctx.server(label).expect("present");
            let m = ctx.measure(server, &SHAPE, &timing, None);
            eprintln!(
                "latency: maximum, round {} {:>14}  {}",
                round + 1,
                label,
                m.outcome.progress()
            );
            match m.outcome.report() {
                Some(r) => fps.entry(label).or_default().push(r.frames_per_sec),
                None => result.failures.push(format!(
                    "latency: {label} at {} (calibration): {}",
                    SHAPE.label(),
                    m.outcome.progress()
                )),
            }
        }
    }
    result.calibration = tokios
        .iter()
        .map(|t| (t.to_string(), fps.get(t).and_then(|v| Interval::of(v))))
        .collect();
    result.reference = result
        .calibration
        .iter()
        .filter_map(|(t, i)| Some((t.clone(), i.as_ref()?.median)))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    let Some((strongest, max)) = result.reference.clone() else {
        return result;
    };
    eprintln!("latency: the strongest tokio, {strongest}, answered {max:.0} frames/s");

    for (li, &share) in result.shares.clone().iter().enumerate() {
        let load = Load {
            rate: Some((max * share).round()),
            ..SHAPE
        };
        for round in 0.. {
            let mut samples = Round::new();
            for label in crate::runner::rotated(&servers, round) {
                let server = ctx.server(label).expect("present");
                let m = ctx.measure(server, &load, &timing, None);
                eprintln!(
                    "latency: {:.0}% = {} round {} {:>10}  {}",
                    share * 100.0,
                    load.label(),
                    round + 1,
                    label,
                    latency_progress(&m.outcome)
                );
                match &m.outcome {
                    Outcome::Ok(r) => {
                        let l = &r.latency_us;
                        samples.insert(
                            label.to_string(),
                            Sample {
                                p50: l.p50,
                                p99: l.p99,
                                p999: l.p999,
                                max: l.max,
                                achieved: r.frames_per_sec,
                                lag_p99: r.schedule_lag_us.as_ref().map_or(0.0, |l| l.p99),
                                unanswered: r.unanswered,
                            },
                        );
                    }
                    o => result.failures.push(format!(
                        "latency: {label} at {} (round {}): {}",
                        load.label(),
                        round + 1,
                        o.progress()
                    )),
                }
            }
            result.rounds[li].push(samples);
            let tracked: Vec<(String, Option<Interval>)> = if share <= TARGET_UP_TO {
                TARGET_SERVERS
                    .iter()
                    .map(|s| {
                        (
                            format!("{s} p99 ÷ {REFERENCE}'s"),
                            Interval::of(&p99_ratios(&result.rounds[li], s)),
                        )
                    })
                    .collect()
            } else {
                Vec::new()
            };
            if let Some(stop) = rounds_policy.stop(round + 1, &tracked) {
                eprintln!(
                    "latency: {:.0}%: {}",
                    share * 100.0,
                    stop.text(rounds_policy.tolerance)
                );
                result.stops[li] = Some(stop);
                break;
            }
        }
    }
    result
}

fn latency_progress(o: &Outcome) -> String {
    match o {
        Outcome::Ok(r) => {
            let l = &r.latency_us;
            let mut s = format!(
                "p50 {:.0} µs, p99 {:.0} µs, p99.9 {:.0} µs, max {:.0} µs",
                l.p50, l.p99, l.p999, l.max
            );
            if r.unanswered > 0 {
                let _ = write!(s, ", {} behind at the end", r.unanswered);
            }
            s
        }
        o => o.progress(),
    }
}

/// `server`'s p99 over the reference's, per round.
fn p99_ratios(rounds: &[Round], server: &str) -> Vec<f64> {
    rounds
        .iter()
        .filter_map(|r| Some(r.get(server)?.p99 / r.get(REFERENCE)?.p99))
        .collect()
}

/// The median over rounds of one figure.
fn median(rounds: &[Round], server: &str, f: fn(&Sample) -> f64) -> Option<f64> {
    let v: Vec<f64> = rounds
        .iter()
        .filter_map(|r| Some(f(r.get(server)?)))
        .collect();
    Interval::of(&v).map(|i| i.median)
}

/// µs for a table: 41, 2.3k, 1.25M.
fn us(v: f64) -> String {
    if v >= 10_000.0 {
        si(v)
    } else {
        format!("{v:.0}")
    }
}

impl LatencyRun {
    fn servers(&self) -> Vec<String> {
        SERVERS
            .iter()
            .filter(|s| self.rounds.iter().flatten().any(|r| r.contains_key(**s)))
            .map(|s| s.to_string())
            .collect()
    }

    fn column(&self, i: usize) -> String {
        format!(
            "{:.0}% ({}/s)",
            self.shares[i] * 100.0,
            self.offered(i).map_or("–".into(), si)
        )
    }

    /// A row per server, a column per offered load: p50 / p99 / p99.9 / max.
    pub fn latency_table(&self) -> String {
        let mut s = String::from("| server |");
        for i in 0..self.shares.len() {
            let _ = write!(s, " {} |", self.column(i));
        }
        s += "\n|---|";
        s += &"---|".repeat(self.shares.len());
        s += "\n";
        for server in self.servers() {
            let _ = write!(s, "| {server} |");
            for rounds in &self.rounds {
                let m = |f: fn(&Sample) -> f64| median(rounds, &server, f);
                let cell = match (m(|s| s.p50), m(|s| s.p99), m(|s| s.p999), m(|s| s.max)) {
                    (Some(a), Some(b), Some(c), Some(d)) => {
                        let behind = rounds
                            .iter()
                            .filter_map(|r| r.get(&server))
                            .filter(|s| s.unanswered > 0)
                            .count();
                        let mut mark = if 2 * behind > rounds.len() {
                            " ⁺"
                        } else {
                            ""
                        };
                        if m(|s| s.lag_p99).is_some_and(|lag| lag > LATE_SHARE * b) {
                            mark = if mark.is_empty() { " ‡" } else { " ⁺‡" };
                        }
                        format!("{} / {} / {} / {}{mark}", us(a), us(b), us(c), us(d))
                    }
                    _ => "–".into(),
                };
                let _ = write!(s, " {cell} |");
            }
            s += "\n";
        }
        s
    }

    /// p99 ÷ tokio-ct's per offered load up to the target's share.
    pub fn targets_table(&self) -> String {
        let mut s = String::from(
            "| target | offered load | p99 ÷ tokio-ct's p99: median of per-round ratios (95% interval, rounds) | |\n\
             |---|---|---|---|\n",
        );
        for server in TARGET_SERVERS {
            for (i, rounds) in self.rounds.iter().enumerate() {
                if self.shares[i] > TARGET_UP_TO || rounds.is_empty() {
                    continue;
                }
                let interval = Interval::of(&p99_ratios(rounds, server));
                let verdict = judge(interval.as_ref(), Goal::AtMost(1.0));
                let _ = writeln!(
                    s,
                    "| {server} p99 ≤ {REFERENCE}'s | {} | {} | {} |",
                    self.column(i),
                    interval.map_or("no figure".into(), |i| i.text(2)),
                    verdict.text()
                );
            }
        }
        s
    }

    /// Where each server's p99 (median over rounds) first exceeds 1 ms.
    pub fn crossings(&self) -> String {
        let mut s = String::from("| server | p99 above 1 ms |\n|---|---|\n");
        for server in self.servers() {
            let p99: Vec<Option<f64>> = self
                .rounds
                .iter()
                .map(|r| median(r, &server, |s| s.p99))
                .collect();
            let at = |i: usize| {
                format!(
                    "{:.0}% ({}/s, p99 {} µs)",
                    self.shares[i] * 100.0,
                    self.offered(i).map_or("–".into(), si),
                    p99[i].map_or("–".into(), us)
                )
            };
            let first = p99.iter().position(|p| p.is_some_and(|p| p > CROSSING_US));
            let text = match first {
                None => format!("never, up to {}", at(self.shares.len() - 1)),
                Some(0) => format!("already at {}", at(0)),
                Some(i) => format!("between {} and {}", at(i - 1), at(i)),
            };
            let _ = writeln!(s, "| {server} | {text} |");
        }
        s
    }

    /// The plot's lines: per server, (offered frames/s, p99 µs).
    pub fn series(&self) -> Vec<(String, Vec<(f64, f64)>)> {
        self.servers()
            .into_iter()
            .map(|server| {
                let points = (0..self.shares.len())
                    .filter_map(|i| {
                        Some((
                            self.offered(i)?,
                            median(&self.rounds[i], &server, |s| s.p99)?,
                        ))
                    })
                    .collect();
                (server, points)
            })
            .collect()
    }

    pub fn write(&self, out: &Path, info: &RunInfo) -> Result<()> {
        let Some((strongest, max)) = &self.reference else {
            return Ok(());
        };
        let calibration: Vec<String> = self
            .calibration
            .iter()
            .map(|(t, i)| format!("{t} {}", i.as_ref().map_or("–".into(), |i| si(i.median))))
            .collect();
        let stops: Vec<String> = (0..self.shares.len())
            .filter_map(|i| {
                let stop = self.stops[i].as_ref()?;
                Some(format!(
                    "{:.0}%: {}",
                    self.shares[i] * 100.0,
                    stop.text(self.tolerance)
                ))
            })
            .collect();
        let md = format!(
            "# echo-steps benchmark: latency under a fixed offered load\n\n{}\n\
             The load: 100 connections, 64 B frames, sent on a fixed schedule whatever the \
             server does (open loop); each latency counts from when its frame was due, so a \
             stall delays every frame due during it. Offered: shares of the most frames/s the \
             strongest tokio answered with 100 clients each waiting for its reply (closed loop, \
             median of rounds): {strongest}, {}/s ({}). Each run: a fresh server, {:.1} s of \
             load after a warm-up; servers alternate within each round. Each figure is the \
             median over rounds. Rounds: {}.\n\n\
             **Latency, µs: p50 / p99 / p99.9 / max** (⁺: the server was still behind at the \
             end of the drain in most rounds: it could not keep up, and its figures grow with \
             the window; ‡: the load generator itself sent late by more than a quarter of that \
             p99 (its own p99 lateness, median over rounds): the machine, not only the server, \
             set that figure):\n\n\
             <!-- ANCHOR: latency -->\n{}<!-- ANCHOR_END: latency -->\n\n\
             **The target**: ch09, ch14 and ch15 each with a p99 no higher than tokio-ct's at \
             every offered load up to {:.0}%, judged by the interval of the per-round ratios:\n\n\
             <!-- ANCHOR: targets -->\n{}<!-- ANCHOR_END: targets -->\n\n\
             **Where each server's p99 crosses 1 ms**:\n\n\
             <!-- ANCHOR: crossings -->\n{}<!-- ANCHOR_END: crossings -->\n\n\
             ![p99 latency against offered load](latency.svg)\n",
            info.header(),
            si(*max),
            calibration.join(", "),
            self.window,
            stops.join("; "),
            self.latency_table(),
            TARGET_UP_TO * 100.0,
            self.targets_table(),
            self.crossings(),
        );
        let md = md + &crate::targets::failures_section(&self.failures);
        println!("{md}");
        std::fs::write(out.join("latency.md"), md)?;
        let mut csv = String::from(
            "offered_share,offered_fps,round,server,p50_us,p99_us,p999_us,max_us,achieved_fps,loadgen_lag_p99_us,unanswered\n",
        );
        for (i, rounds) in self.rounds.iter().enumerate() {
            for (round, r) in rounds.iter().enumerate() {
                for server in SERVERS {
                    let Some(s) = r.get(server) else { continue };
                    let _ = writeln!(
                        csv,
                        "{},{:.0},{},{server},{:.1},{:.1},{:.1},{:.1},{:.0},{:.1},{}",
                        self.shares[i],
                        self.offered(i).unwrap_or(f64::NAN),
                        round + 1,
                        s.p50,
                        s.p99,
                        s.p999,
                        s.max,
                        s.achieved,
                        s.lag_p99,
                        s.unanswered
                    );
                }
            }
        }
        std::fs::write(out.join("latency.csv"), csv)?;
        crate::plot::latency(&out.join("latency.svg"), &self.series(), CROSSING_US)?;
        eprintln!("bench: latency: wrote latency.md, latency.csv and latency.svg");
        Ok(())
    }
}

/// Whether a verdict table holds any "met": for the tests.
#[cfg(test)]
fn verdicts(table: &str) -> Vec<Verdict> {
    table
        .lines()
        .filter_map(|l| {
            let last = l.trim_end_matches(" |").rsplit("| ").next()?;
            [Verdict::Met, Verdict::Missed, Verdict::NotResolved]
                .into_iter()
                .find(|v| v.text() == last)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_with(p99s: &[(&str, [f64; 4])], rounds: usize) -> LatencyRun {
        let mut run = LatencyRun {
            reference: Some(("tokio-mt".into(), 100_000.0)),
            shares: SHARES.to_vec(),
            rounds: vec![Vec::new(); 4],
            stops: vec![None; 4],
            tolerance: 0.03,
            window: 1.0,
            failures: Vec::new(),
            calibration: Vec::new(),
        };
        for (i, r) in run.rounds.iter_mut().enumerate() {
            *r = (0..rounds)
                .map(|k| {
                    p99s.iter()
                        .map(|(s, p)| {
                            let sample = Sample {
                                p99: p[i] * (1.0 + k as f64 / 1000.0),
                                ..Sample::default()
                            };
                            (s.to_string(), sample)
                        })
                        .collect()
                })
                .collect();
        }
        run
    }

    #[test]
    fn the_crossing_is_where_the_median_p99_first_exceeds_a_millisecond() {
        let run = run_with(
            &[
                ("ch05", [1500.0, 2000.0, 3000.0, 9000.0]),
                ("ch09", [50.0, 80.0, 400.0, 1200.0]),
                ("tokio-ct", [60.0, 90.0, 300.0, 800.0]),
            ],
            1,
        );
        let c = run.crossings();
        assert!(
            c.contains("| ch05 | already at 25% (25.0k/s, p99 1500 µs) |"),
            "{c}"
        );
        assert!(
            c.contains(
                "| ch09 | between 75% (75.0k/s, p99 400 µs) and 90% (90.0k/s, p99 1200 µs) |"
            ),
            "{c}"
        );
        assert!(
            c.contains("| tokio-ct | never, up to 90% (90.0k/s, p99 800 µs) |"),
            "{c}"
        );
        let series = run.series();
        assert_eq!(series[1].0, "ch09");
        assert_eq!(series[1].1[0].0, 25_000.0);
    }

    #[test]
    fn the_p99_target_is_judged_per_offered_load_up_to_three_quarters() {
        let run = run_with(
            &[
                ("ch09", [50.0, 80.0, 400.0, 1200.0]),
                ("ch14", [60.0, 90.0, 300.0, 800.0]),
                ("ch15", [61.0, 89.0, 301.0, 800.0]),
                ("tokio-ct", [60.0, 90.0, 300.0, 800.0]),
            ],
            8,
        );
        let table = run.targets_table();
        // Three servers × three loads (25, 50, 75%): 90% is not a target.
        assert_eq!(table.lines().count(), 2 + 9, "{table}");
        assert!(!table.contains("90%"), "{table}");
        use Verdict::*;
        // ch09: lower, lower, higher; ch14 equal (every round the same ratio,
        // 1.00 ≤ 1.0: met); ch15 a hair above, then below, then above.
        assert_eq!(
            verdicts(&table),
            [Met, Met, Missed, Met, Met, Met, Missed, Met, Missed],
            "{table}"
        );
    }
}
