//! Ratios with their uncertainty: the median of per-round ratios, a 95%
//! interval for it, when to stop adding rounds, and whether a target is
//! met by the interval rather than by the median alone.
//!
//! The interval is the distribution-free one for a median: sorted, the
//! values from the k-th smallest to the k-th largest contain the true
//! median with probability 1 − 2·P(B < k), B ~ Binomial(n, ½), whatever
//! the distribution of the rounds (they only need to be independent). The
//! largest k that keeps this at 95% or more is used. Below six rounds no k
//! reaches 95%: the interval is then the minimum to the maximum, and says
//! how sure it is (94% for five rounds, 75% for three), which is never
//! enough to call a target met.

use std::fmt;

/// The confidence an interval must have before a target can be judged.
pub const CONFIDENCE: f64 = 0.95;

/// Rounds are added until every interval tracked is within this of its
/// median, on either side (±3%), or the cap is reached.
pub const TOLERANCE: f64 = 0.03;

/// A median and an interval around it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    pub median: f64,
    pub lo: f64,
    pub hi: f64,
    /// How many rounds it is made of.
    pub n: usize,
    /// The probability that [lo, hi] holds the true median.
    pub coverage: f64,
}

/// P(B ≤ k) for B ~ Binomial(n, ½).
fn binomial_cdf_half(n: usize, k: usize) -> f64 {
    let mut term = 0.5f64.powi(n as i32); // C(n, 0) / 2^n
    let mut sum = 0.0;
    for i in 0..=k.min(n) {
        sum += term;
        term = term * (n - i) as f64 / (i + 1) as f64;
    }
    sum
}

impl Interval {
    /// The median of the finite values and its interval; `None` if there are none.
    pub fn of(values: &[f64]) -> Option<Interval> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        // The widest-k search from the outside in: k = 1 is min–max.
        let coverage = |k: usize| 1.0 - 2.0 * binomial_cdf_half(n, k - 1);
        let k = (1..=n.div_ceil(2))
            .take_while(|&k| coverage(k) >= CONFIDENCE)
            .last()
            .unwrap_or(1);
        Some(Interval {
            median,
            lo: v[k - 1],
            hi: v[n - k],
            n,
            coverage: coverage(k).max(0.0),
        })
    }

    /// How far the interval reaches from the median, relative to it, on
    /// its wider side: 0.03 is ±3%.
    pub fn half_width(&self) -> f64 {
        let m = self.median.abs();
        if m == 0.0 {
            return f64::INFINITY;
        }
        ((self.hi - self.median) / m).max((self.median - self.lo) / m)
    }

    /// A 95% interval, within `tolerance` of its median.
    pub fn resolved(&self, tolerance: f64) -> bool {
        self.coverage >= CONFIDENCE && self.half_width() <= tolerance
    }

    /// "0.92 (0.89–0.95, 9 rounds)"; below 95%, "0.92 (0.89–0.95: min–max of 3 rounds, 75%)".
    pub fn text(&self, decimals: usize) -> String {
        let (m, lo, hi) = (self.median, self.lo, self.hi);
        let rounds = if self.n == 1 { "round" } else { "rounds" };
        if self.n == 1 {
            format!("{m:.decimals$} (1 round)")
        } else if self.coverage >= CONFIDENCE {
            format!(
                "{m:.decimals$} ({lo:.decimals$}–{hi:.decimals$}, {} {rounds})",
                self.n
            )
        } else {
            format!(
                "{m:.decimals$} ({lo:.decimals$}–{hi:.decimals$}: min–max of {} {rounds}, {:.0}%)",
                self.n,
                self.coverage * 100.0
            )
        }
    }
}

/// What a target asks of a ratio.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Goal {
    AtMost(f64),
    AtLeast(f64),
}

impl fmt::Display for Goal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Goal::AtMost(b) => write!(f, "≤ {b:.2}"),
            Goal::AtLeast(b) => write!(f, "≥ {b:.2}"),
        }
    }
}

/// Whether the interval, not the median, settles a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    Met,
    /// The interval straddles the bound, or is not a 95% one.
    NotResolved,
    Missed,
}

impl Verdict {
    pub fn text(self) -> &'static str {
        match self {
            Verdict::Met => "met",
            Verdict::Missed => "missed",
            Verdict::NotResolved => "not resolved",
        }
    }
}

/// Met when the whole 95% interval meets the goal, missed when none of it
/// does, and not resolved otherwise (or without a 95% interval).
pub fn judge(interval: Option<&Interval>, goal: Goal) -> Verdict {
    let Some(i) = interval.filter(|i| i.coverage >= CONFIDENCE) else {
        return Verdict::NotResolved;
    };
    let (meets_all, meets_none) = match goal {
        Goal::AtMost(b) => (i.hi <= b, i.lo > b),
        Goal::AtLeast(b) => (i.lo >= b, i.hi < b),
    };
    if meets_all {
        Verdict::Met
    } else if meets_none {
        Verdict::Missed
    } else {
        Verdict::NotResolved
    }
}

/// How many rounds to run: at least `min`, at most `max`, stopping between
/// when every interval tracked is resolved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rounds {
    pub min: usize,
    pub max: usize,
    pub tolerance: f64,
}

/// Why a series of rounds ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Stop {
    /// Every interval within the tolerance.
    Resolved { rounds: usize },
    /// The cap came first; the widest interval, and its name.
    Cap {
        rounds: usize,
        widest: f64,
        what: String,
    },
}

/// "1 round", "6 rounds".
fn rounds_text(n: usize) -> String {
    if n == 1 {
        "1 round".into()
    } else {
        format!("{n} rounds")
    }
}

impl Stop {
    pub fn text(&self, tolerance: f64) -> String {
        let pct = tolerance * 100.0;
        match self {
            Stop::Resolved { rounds } => {
                format!(
                    "every interval within ±{pct:.0}% after {}",
                    rounds_text(*rounds)
                )
            }
            Stop::Cap {
                rounds,
                widest,
                what,
            } if widest.is_finite() => format!(
                "stopped at the cap of {rounds} rounds, not within ±{pct:.0}%: the widest \
                 is ±{:.1}% ({what})",
                widest * 100.0
            ),
            Stop::Cap { rounds, what, .. } => {
                format!("stopped at the cap of {rounds} rounds without a 95% interval ({what})")
            }
        }
    }
}

impl Rounds {
    /// After `rounds` rounds, with these named intervals: stop, and why?
    /// `None`: run another round.
    pub fn stop(&self, rounds: usize, intervals: &[(String, Option<Interval>)]) -> Option<Stop> {
        let all_resolved = intervals
            .iter()
            .all(|(_, i)| i.is_some_and(|i| i.resolved(self.tolerance)));
        if rounds >= self.min && all_resolved {
            return Some(Stop::Resolved { rounds });
        }
        if rounds < self.max {
            return None;
        }
        // The worst: no interval at all, or one below 95%, else the widest.
        let width = |i: &Option<Interval>| match i {
            Some(i) if i.coverage >= CONFIDENCE => i.half_width(),
            _ => f64::INFINITY,
        };
        let (what, widest) = intervals
            .iter()
            .map(|(name, i)| (name.clone(), width(i)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap_or_default();
        Some(Stop::Cap {
            rounds,
            widest,
            what,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binomial_tails_add_up() {
        assert_eq!(binomial_cdf_half(1, 0), 0.5);
        assert_eq!(binomial_cdf_half(3, 0), 0.125);
        assert_eq!(binomial_cdf_half(3, 3), 1.0);
        // P(B ≤ 1), n = 6: (1 + 6) / 64.
        assert!((binomial_cdf_half(6, 1) - 7.0 / 64.0).abs() < 1e-12);
        // n = 20: P(B ≤ 5) = 21700 / 2^20.
        assert!((binomial_cdf_half(20, 5) - 21700.0 / 1048576.0).abs() < 1e-12);
    }

    #[test]
    fn below_six_rounds_the_interval_is_min_to_max_and_says_how_sure() {
        let i = Interval::of(&[1.02, 0.98, 1.10]).unwrap();
        assert_eq!((i.median, i.lo, i.hi, i.n), (1.02, 0.98, 1.10, 3));
        assert_eq!(i.coverage, 0.75);
        let five = Interval::of(&[5.0, 1.0, 4.0, 2.0, 3.0]).unwrap();
        assert_eq!((five.median, five.lo, five.hi), (3.0, 1.0, 5.0));
        assert_eq!(five.coverage, 1.0 - 2.0 / 32.0);
        assert!(five.coverage < CONFIDENCE);
        let one = Interval::of(&[0.9]).unwrap();
        assert_eq!((one.lo, one.hi, one.coverage), (0.9, 0.9, 0.0));
        assert_eq!(one.text(2), "0.90 (1 round)");
        assert_eq!(i.text(2), "1.02 (0.98–1.10: min–max of 3 rounds, 75%)");
    }

    #[test]
    fn with_more_rounds_the_interval_leaves_out_the_extremes() {
        // n = 6: min–max is already 96.9%.
        let six = Interval::of(&[6.0, 1.0, 5.0, 2.0, 4.0, 3.0]).unwrap();
        assert_eq!((six.lo, six.hi, six.median), (1.0, 6.0, 3.5));
        assert!((six.coverage - (1.0 - 2.0 / 64.0)).abs() < 1e-12);
        // n = 20: the 6th smallest to the 6th largest (95.9%); the 7th would be 88.5%.
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        let i = Interval::of(&v).unwrap();
        assert_eq!((i.lo, i.hi, i.median), (6.0, 15.0, 10.5));
        assert!((i.coverage - (1.0 - 2.0 * 21700.0 / 1048576.0)).abs() < 1e-12);
        assert_eq!(i.text(1), "10.5 (6.0–15.0, 20 rounds)");
        // Non-finite values (a round without a figure) are left out.
        let j = Interval::of(&[f64::NAN, 2.0, f64::INFINITY]).unwrap();
        assert_eq!((j.n, j.median), (1, 2.0));
        assert_eq!(Interval::of(&[f64::NAN]), None);
    }

    #[test]
    fn half_width_is_the_wider_side_relative_to_the_median() {
        let i = Interval {
            median: 1.0,
            lo: 0.99,
            hi: 1.04,
            n: 9,
            coverage: 0.96,
        };
        assert!((i.half_width() - 0.04).abs() < 1e-12);
        assert!(!i.resolved(0.03));
        assert!(i.resolved(0.05));
        // Narrow but not 95%: not resolved.
        let few = Interval {
            n: 3,
            coverage: 0.75,
            ..i
        };
        assert!(!few.resolved(0.05));
    }

    #[test]
    fn a_target_is_met_only_when_the_whole_interval_meets_it() {
        let i = |lo, median, hi| Interval {
            median,
            lo,
            hi,
            n: 8,
            coverage: 0.99,
        };
        let at_most = Goal::AtMost(0.95);
        assert_eq!(judge(Some(&i(0.90, 0.92, 0.94)), at_most), Verdict::Met);
        assert_eq!(judge(Some(&i(0.90, 0.92, 0.95)), at_most), Verdict::Met);
        // The median meets it, the interval does not all.
        assert_eq!(
            judge(Some(&i(0.90, 0.92, 0.97)), at_most),
            Verdict::NotResolved
        );
        assert_eq!(judge(Some(&i(0.96, 1.00, 1.05)), at_most), Verdict::Missed);
        let at_least = Goal::AtLeast(1.0);
        assert_eq!(judge(Some(&i(1.00, 1.05, 1.10)), at_least), Verdict::Met);
        assert_eq!(
            judge(Some(&i(0.98, 1.05, 1.10)), at_least),
            Verdict::NotResolved
        );
        assert_eq!(judge(Some(&i(0.90, 0.95, 0.99)), at_least), Verdict::Missed);
        // Without a 95% interval nothing is settled, however clear it looks.
        let few = Interval {
            n: 3,
            coverage: 0.75,
            ..i(0.5, 0.5, 0.5)
        };
        assert_eq!(judge(Some(&few), at_most), Verdict::NotResolved);
        assert_eq!(judge(None, at_most), Verdict::NotResolved);
    }

    #[test]
    fn rounds_stop_when_all_are_resolved_or_at_the_cap() {
        let rounds = Rounds {
            min: 6,
            max: 10,
            tolerance: 0.03,
        };
        let tight = Interval::of(&[1.0, 1.01, 0.99, 1.0, 1.02, 0.98]);
        let wide = Interval::of(&[1.0, 1.2, 0.8, 1.0, 1.1, 0.9]);
        let named = |i: &[Option<Interval>]| {
            i.iter()
                .enumerate()
                .map(|(n, i)| (format!("r{n}"), *i))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            rounds.stop(6, &named(&[tight, tight])),
            Some(Stop::Resolved { rounds: 6 })
        );
        // Resolved but too early: fewer than `min` rounds.
        assert_eq!(rounds.stop(5, &named(&[tight])), None);
        assert_eq!(rounds.stop(6, &named(&[tight, wide])), None);
        let Some(Stop::Cap {
            rounds: 10,
            widest,
            what,
        }) = rounds.stop(10, &named(&[tight, wide]))
        else {
            panic!("expected the cap");
        };
        assert_eq!(what, "r1");
        assert!((widest - 0.2).abs() < 1e-12);
        let text = rounds.stop(10, &named(&[tight, wide])).unwrap().text(0.03);
        assert_eq!(
            text,
            "stopped at the cap of 10 rounds, not within ±3%: the widest is ±20.0% (r1)"
        );
        // A missing figure is never resolved.
        assert_eq!(rounds.stop(6, &named(&[None])), None);
    }
}
