//! Timers: `sleep` and `timeout`, and the heap of deadlines the executor
//! reads to know how long `epoll_wait` may sleep.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use common::slab::{Key, Slab};

// ANCHOR: timers
/// The armed timers, and their deadlines in a min-heap.
///
/// Chapter 11 needed one ordered list because every connection had the
/// same timeout. Timers with deadlines of their own need a structure that
/// orders any deadlines: a binary heap, O(log n) to add one and to take
/// the soonest. Removing one from the middle is what a heap cannot do
/// cheaply, so a cancelled timer leaves its entry behind, and the entry is
/// recognised as stale when it comes up: its key names nothing any more
/// (cancellation by generation). A timer pushed later (an idle deadline,
/// after every reply) leaves its entry too, and moves when it comes up:
/// one heap operation per timeout period, not per reply.
///
/// tokio uses a hierarchical timing wheel instead: six levels of 64 slots
/// at 1 ms, 64 ms, 4 s... resolution, each timer a node in the list of its
/// slot. Adding and cancelling are O(1), and nothing stale is left behind:
/// built for millions of timers, most cancelled before they fire (every
/// `timeout` around an I/O that succeeds). Timers far ahead sit in coarse
/// slots and move down a level as they come near. The price is a
/// resolution of one millisecond; a heap is exact.
struct Timers {
    /// Deadlines, soonest first, with the timer each was queued for.
    heap: BinaryHeap<Reverse<(Instant, Key)>>,
    timers: Slab<Timer>,
}

struct Timer {
    deadline: Instant,
    /// The deadline of the timer's live entry in the heap, if it has one:
    /// earlier than `deadline` after a reset moved it later.
    queued: Option<Instant>,
    fired: bool,
    waker: Option<Waker>,
}
// ANCHOR_END: timers

/// Stale entries the heap may hold beyond one per live timer before it is
/// rebuilt without them: a timer per connection, cancelled as each one
/// closes, must not grow the heap without bound.
const STALE_SLACK: usize = 64;

impl Timers {
    fn new() -> Timers {
        Timers {
            heap: BinaryHeap::new(),
            timers: Slab::default(),
        }
    }

    fn insert(&mut self, deadline: Instant, waker: Waker) -> Key {
        let key = self.timers.insert(Timer {
            deadline,
            queued: Some(deadline),
            fired: false,
            waker: Some(waker),
        });
        self.push(deadline, key);
        key
    }

    fn push(&mut self, deadline: Instant, key: Key) {
        self.heap.push(Reverse((deadline, key)));
        if self.heap.len() > 2 * self.timers.len() + STALE_SLACK {
            let timers = &self.timers;
            self.heap
                .retain(|Reverse((at, key))| is_live(timers, *at, *key));
        }
    }

    // ANCHOR: reset
    /// Moves a timer's deadline. Later: nothing to do until its heap entry
    /// comes up. Earlier, or fired already: a new entry.
    fn reset(&mut self, key: Key, deadline: Instant) {
        let Some(timer) = self.timers.get_mut(key) else {
            return;
        };
        timer.deadline = deadline;
        timer.fired = false;
        if timer.queued.is_none_or(|queued| deadline < queued) {
            timer.queued = Some(deadline);
            self.push(deadline, key);
        }
    }
    // ANCHOR_END: reset

    /// `Ready` once the timer has fired; otherwise keeps the waker.
    fn poll(&mut self, key: Key, waker: &Waker) -> Poll<()> {
        let Some(timer) = self.timers.get_mut(key) else {
            return Poll::Ready(());
        };
        if timer.fired {
            return Poll::Ready(());
        }
        if !timer.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            timer.waker = Some(waker.clone());
        }
        Poll::Pending
    }

    fn remove(&mut self, key: Key) {
        self.timers.remove(key);
    }

    // ANCHOR: next_deadline
    /// When the next timer may be due, stale entries at the top dropped.
    /// It may be earlier than any timer's deadline: the entry of a timer
    /// since moved later stays at its old place, and the executor wakes up
    /// for nothing then, once per timeout period. Moving the entry at every
    /// reset instead would cost a heap operation per reply.
    fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(&Reverse((at, key))) = self.heap.peek() {
            if is_live(&self.timers, at, key) {
                return Some(at);
            }
            self.heap.pop();
        }
        None
    }

    /// Fires every timer due at `now`: it wakes its task. A timer moved
    /// later goes back in at its new deadline.
    fn fire_expired(&mut self, now: Instant) {
        while self.next_deadline().is_some_and(|at| at <= now) {
            let Some(Reverse((_, key))) = self.heap.pop() else {
                break;
            };
            let timer = self.timers.get_mut(key).unwrap();
            if timer.deadline > now {
                timer.queued = Some(timer.deadline);
                let moved = (timer.deadline, key);
                self.heap.push(Reverse(moved));
                continue;
            }
            timer.fired = true;
            timer.queued = None;
            if let Some(waker) = timer.waker.take() {
                waker.wake();
            }
        }
    }
    // ANCHOR_END: next_deadline
}

/// Whether a heap entry is its timer's live one: not cancelled (the key
/// still names a timer) and not superseded by an earlier entry.
fn is_live(timers: &Slab<Timer>, at: Instant, key: Key) -> bool {
    timers.get(key).is_some_and(|t| t.queued == Some(at))
}

thread_local! {
    /// The timers of the runtime running on this thread, if one is.
    static TIMERS: RefCell<Option<Timers>> = const { RefCell::new(None) };
}

/// Gives this thread timers until the guard is dropped: part of entering
/// the runtime (see `executor::enter`).
pub fn enter() -> Entered {
    TIMERS.with(|timers| {
        let previous = timers.borrow_mut().replace(Timers::new());
        assert!(
            previous.is_none(),
            "a runtime is already running on this thread"
        );
    });
    Entered(())
}

pub struct Entered(());

impl Drop for Entered {
    fn drop(&mut self) {
        let timers = TIMERS.with(|timers| timers.borrow_mut().take());
        drop(timers);
    }
}

/// Runs `f` on the running runtime's timers.
///
/// # Panics
///
/// Outside `Runtime::block_on`, as tokio's timers do. A timer armed where
/// no executor reads the heap would never fire, and its task would wait
/// for ever: a panic says what is wrong at once.
fn with<R>(f: impl FnOnce(&mut Timers) -> R) -> R {
    TIMERS.with(|timers| {
        let mut timers = timers.borrow_mut();
        let timers = timers
            .as_mut()
            .expect("a timer polled outside Runtime::block_on, where nothing would fire it");
        f(timers)
    })
}

/// The soonest deadline of this thread's timers: how long the executor may
/// let the reactor sleep.
pub fn next_deadline() -> Option<Instant> {
    with(Timers::next_deadline)
}

/// Fires this thread's timers that are due.
pub fn fire_expired() {
    with(|timers| {
        if !timers.heap.is_empty() {
            timers.fire_expired(Instant::now());
        }
    });
}

// ANCHOR: sleep
/// A future that completes at a deadline. It joins the heap at its first
/// `Pending` poll, and leaves it when dropped.
pub struct Sleep {
    deadline: Instant,
    key: Option<Key>,
}

/// Completes `duration` from now.
pub fn sleep(duration: Duration) -> Sleep {
    sleep_until(after(duration))
}

pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep {
        deadline,
        key: None,
    }
}

impl Sleep {
    /// Moves the deadline, as tokio's `Sleep::reset`: cheaper than a new
    /// `Sleep`, which would leave a stale entry in the heap each time.
    pub fn reset(&mut self, deadline: Instant) {
        self.deadline = deadline;
        if let Some(key) = self.key {
            with(|timers| timers.reset(key, deadline));
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(key) = self.key {
            return with(|timers| timers.poll(key, cx.waker()));
        }
        if self.deadline <= Instant::now() {
            return Poll::Ready(());
        }
        let deadline = self.deadline;
        self.key = Some(with(|timers| timers.insert(deadline, cx.waker().clone())));
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            // Not `with`: after the runtime, there is nothing to leave; at
            // thread exit, the thread-local may be gone before us.
            let _ = TIMERS.try_with(|timers| timers.borrow_mut().as_mut().map(|t| t.remove(key)));
        }
    }
}
// ANCHOR_END: sleep

/// `now + duration`, or 30 years from now if that is past what an
/// `Instant` can hold (as tokio does): a deadline that never comes.
fn after(duration: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(duration)
        .unwrap_or_else(|| now + Duration::from_secs(30 * 365 * 24 * 3600))
}

// ANCHOR: timeout
/// The future did not finish in time.
#[derive(Debug, PartialEq, Eq)]
pub struct Elapsed;

/// Runs `future` for at most `duration`.
pub async fn timeout<F: Future>(duration: Duration, future: F) -> Result<F::Output, Elapsed> {
    timeout_at(after(duration), future).await
}

/// Runs `future` until `deadline`: a race with a `Sleep`, the future first,
/// so that work that can be done is done rather than timed out.
pub async fn timeout_at<F: Future>(deadline: Instant, future: F) -> Result<F::Output, Elapsed> {
    let mut future = pin!(future);
    let mut sleep = sleep_until(deadline);
    poll_fn(|cx| {
        if let Poll::Ready(output) = future.as_mut().poll(cx) {
            return Poll::Ready(Ok(output));
        }
        Pin::new(&mut sleep).poll(cx).map(|()| Err(Elapsed))
    })
    .await
}
// ANCHOR_END: timeout

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    use super::*;
    use crate::executor::{spawn, Runtime};

    /// A waker that counts its wakes.
    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn counter() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count::default());
        (count.clone(), Waker::from(count))
    }

    #[test]
    fn timers_fire_in_deadline_order_and_cancelled_ones_never() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut timers = Timers::new();
        let (count, waker) = counter();
        let late = timers.insert(at(30), waker.clone());
        let early = timers.insert(at(10), waker.clone());
        let cancelled = timers.insert(at(5), waker.clone());
        timers.remove(cancelled);
        assert_eq!(timers.next_deadline(), Some(at(10)));
        timers.fire_expired(at(20));
        assert_eq!(count.0.load(Ordering::Relaxed), 1);
        assert!(timers.poll(early, &waker).is_ready());
        assert!(timers.poll(late, &waker).is_pending());
        assert_eq!(timers.next_deadline(), Some(at(30)));
    }

    // ANCHOR: test_reset
    #[test]
    fn a_timer_moved_later_fires_at_its_new_deadline_only() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut timers = Timers::new();
        let (count, waker) = counter();
        let idle = timers.insert(at(100), waker.clone());
        // A reply goes out every 10 ms for a second: the deadline moves
        // each time, and the heap does not grow.
        for ms in (10..1000).step_by(10) {
            timers.reset(idle, at(ms + 100));
            timers.fire_expired(at(ms));
        }
        assert_eq!(timers.heap.len(), 1);
        assert_eq!(count.0.load(Ordering::Relaxed), 0);
        // Moved 9 times in all: once every 100 ms, when its old deadline came.
        assert_eq!(timers.next_deadline(), Some(at(1000)));
        // Earlier again: a new entry, and the old one becomes stale.
        timers.reset(idle, at(1050));
        timers.fire_expired(at(1050));
        assert_eq!(count.0.load(Ordering::Relaxed), 1);
        assert!(timers.poll(idle, &waker).is_ready());
        assert_eq!(timers.next_deadline(), None, "the stale entry is dropped");
    }
    // ANCHOR_END: test_reset

    #[test]
    fn cancelled_timers_do_not_pile_up_in_the_heap() {
        let t0 = Instant::now();
        let mut timers = Timers::new();
        let (_, waker) = counter();
        let keep = timers.insert(t0 + Duration::from_secs(1), waker.clone());
        for i in 0..10_000 {
            let key = timers.insert(t0 + Duration::from_secs(60 + i), waker.clone());
            timers.remove(key);
        }
        assert!(
            timers.heap.len() <= 2 + STALE_SLACK,
            "{}",
            timers.heap.len()
        );
        assert!(timers.poll(keep, &waker).is_pending());
    }

    /// Outside a runtime no one would fire the timer: a clear panic, not a
    /// task that waits for ever.
    #[test]
    #[should_panic(expected = "a timer polled outside Runtime::block_on")]
    fn a_sleep_polled_outside_a_runtime_panics() {
        let mut sleep = pin!(sleep(Duration::from_secs(1)));
        let _ = sleep.as_mut().poll(&mut Context::from_waker(Waker::noop()));
    }

    #[test]
    fn sleep_and_timeout_on_the_runtime() {
        let start = Instant::now();
        let (slept, timed_out, in_time) = Runtime::new().unwrap().block_on(async {
            let sleeper = spawn(async {
                sleep(Duration::from_millis(30)).await;
                Instant::now()
            });
            let timed_out = timeout(Duration::from_millis(10), std::future::pending::<()>()).await;
            let in_time = timeout(Duration::from_secs(5), async { 7 }).await;
            (sleeper.await, timed_out, in_time)
        });
        assert!(slept - start >= Duration::from_millis(30));
        assert_eq!(timed_out, Err(Elapsed));
        assert_eq!(in_time, Ok(7));
    }
}
