//! How long an event loop may sleep: the timeout of `poll` and `epoll_wait`.

use std::time::{Duration, Instant};

use nix::poll::PollTimeout;

// ANCHOR: time_left
/// How long `poll` or `epoll_wait` may sleep before `due`: for ever if
/// nothing is due, else the time left (see [`timeout`]). `Instant` is
/// CLOCK_MONOTONIC, the clock the kernel times these waits with: setting
/// the wall clock moves neither. (`EpollTimeout` is `PollTimeout`.)
pub fn time_left(due: Option<Instant>) -> PollTimeout {
    timeout(due.map(|due| due.saturating_duration_since(Instant::now())))
}

/// `left` in whole milliseconds, rounded *up*, from the nanoseconds.
/// Rounded down, the wait would end up to a millisecond early, find nothing
/// due, and wait 0 ms: a busy loop until the deadline. (Rounding whole
/// microseconds up is not enough: under a microsecond left is 0 µs.)
pub fn timeout(left: Option<Duration>) -> PollTimeout {
    let Some(left) = left else {
        return PollTimeout::NONE;
    };
    let ms = left.as_nanos().div_ceil(1_000_000);
    // Past i32::MAX ms (24 days), wake up then and look again.
    PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
}
// ANCHOR_END: time_left

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(left: Duration) -> i32 {
        timeout(Some(left)).into()
    }

    #[test]
    fn any_time_left_waits_at_least_a_millisecond() {
        // Truncated to microseconds first, these would be 0 ms: a wait that
        // returns at once, again and again, until the deadline.
        assert_eq!(ms(Duration::from_nanos(1)), 1);
        assert_eq!(ms(Duration::from_nanos(999)), 1);
        assert_eq!(ms(Duration::from_nanos(1_000_001)), 2);
        assert_eq!(ms(Duration::from_nanos(1_000_999)), 2);
    }

    #[test]
    fn whole_milliseconds_and_the_ends() {
        assert_eq!(ms(Duration::ZERO), 0);
        assert_eq!(ms(Duration::from_millis(7)), 7);
        assert_eq!(ms(Duration::from_secs(30 * 24 * 3600)), i32::MAX);
        assert_eq!(timeout(None), PollTimeout::NONE);
        assert_eq!(time_left(None), PollTimeout::NONE);
        assert_eq!(time_left(Some(Instant::now())), PollTimeout::ZERO);
    }
}
