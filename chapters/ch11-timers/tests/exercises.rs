//! The tests of this chapter's exercises (book/src/answers.md has the
//! answers; `just exercise ch11-K` checks a solution). These pass on the
//! chapter as it is, and fail once an exercise breaks what they check.

use std::time::Duration;

use common::time::timeout;

/// Exercise 2: the loop's wait for a deadline less than a millisecond away
/// lasts a millisecond. `epoll_wait` counts in whole milliseconds; rounded
/// down, such a wait would be 0 ms, return at once, find nothing due, and
/// wait 0 ms again: a busy loop until the deadline.
#[test]
fn a_deadline_under_a_millisecond_away_is_waited_for() {
    for nanos in [1, 999, 500_000, 999_999] {
        let ms: i32 = timeout(Some(Duration::from_nanos(nanos))).into();
        assert_eq!(
            ms, 1,
            "with {nanos} ns left before a deadline, the loop would wait {ms} ms"
        );
    }
}
