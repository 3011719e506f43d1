//! The executor: tasks, the wakers that put them on the run queue, and
//! `block_on`, the loop that polls what is awake and, when nothing is, lets
//! the reactor wait in `epoll_wait`.
//!
//! A task is a future the executor owns. Polling it runs its code up to an
//! `.await` that cannot go on; the future then returns `Pending`, having
//! handed a `Waker` to whatever it waits for: the reactor, a timer, another
//! task. When that thing happens it calls `wake`, which puts the task back
//! on the run queue, and the executor polls it again.

use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::io;
use std::mem;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use common::slab::{Key, Slab};

use crate::reactor::{self, Reactor, Unpark};
use crate::time;

// ANCHOR: waker
// Identical in chapters 12 to 14 (book/check.sh checks it).
/// What a task's `Waker` points to. `std::task::Wake` makes a `Waker` out
/// of an `Arc<TaskWaker>`, with `Arc`'s reference count as the waker's:
/// no vtable, no `unsafe` (the tests show the vtable it saves us).
struct TaskWaker {
    task: Key,
    /// True while the task is on the run queue: waking it again is free,
    /// and it is polled once however many times it was woken.
    queued: AtomicBool,
    queue: Arc<RunQueue>,
}

impl TaskWaker {
    /// Called just before a poll: from now on, a wake queues the task
    /// again. A swap, not a store, to acquire what a wake on another thread
    /// did before it found the task queued already and left it at that:
    /// the poll about to run is the one that must see it.
    fn dequeued(&self) {
        self.queued.swap(false, Ordering::AcqRel);
    }
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            self.queue.push(self.task);
        }
    }
}

/// The tasks to poll, in the order they were woken.
///
/// A `Waker` is `Send` and `Sync`: any thread may wake a task, hence the
/// `Mutex`. This runtime's own wakes all come from its own thread, between
/// polls, and never contend for it.
struct RunQueue {
    tasks: Mutex<Vec<Key>>,
    unpark: Arc<Unpark>,
}

impl RunQueue {
    fn push(&self, task: Key) {
        self.tasks.lock().unwrap().push(task);
        // From another thread, the executor may be asleep in `epoll_wait`
        // with nothing to wake it: the reactor's eventfd will.
        if !self.is_current() {
            self.unpark.unpark();
        }
    }

    /// Swaps the queue for `batch` (empty, its memory reused).
    fn take(&self, batch: &mut Vec<Key>) {
        mem::swap(&mut *self.tasks.lock().unwrap(), batch);
    }

    fn is_empty(&self) -> bool {
        self.tasks.lock().unwrap().is_empty()
    }

    /// Whether this queue's executor is the one running this code.
    fn is_current(&self) -> bool {
        CURRENT
            .try_with(|current| {
                let current = current.borrow();
                current.as_ref().is_some_and(|e| ptr_eq(&e.queue, self))
            })
            .unwrap_or(false)
    }
}

fn ptr_eq(queue: &Arc<RunQueue>, other: &RunQueue) -> bool {
    std::ptr::eq(Arc::as_ptr(queue), other)
}
// ANCHOR_END: waker

// ANCHOR: task
/// A spawned future and its waker. Boxed, so that futures of different
/// types share a table (see `spawn` for what is in the box).
struct Task {
    future: Pin<Box<dyn Future<Output = ()>>>,
    task_waker: Arc<TaskWaker>,
    /// The same `Arc` as a `Waker`, made once rather than at every poll.
    waker: Waker,
}

/// The tasks of the runtime running on this thread.
struct Executor {
    /// A task is out of its slot (`None`) while it is polled.
    tasks: RefCell<Slab<Option<Task>>>,
    queue: Arc<RunQueue>,
    /// Tasks that gave up their turn with work left (see [`defer`]).
    deferred: RefCell<Vec<Waker>>,
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<Executor>>> = const { RefCell::new(None) };
}

impl Executor {
    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()>>>) {
        let mut tasks = self.tasks.borrow_mut();
        let key = tasks.insert(None);
        let waker = Arc::new(TaskWaker {
            task: key,
            queued: AtomicBool::new(false),
            queue: self.queue.clone(),
        });
        // Woken once, for its first poll.
        waker.wake_by_ref();
        tasks.get_mut(key).unwrap().replace(Task {
            future,
            waker: Waker::from(waker.clone()),
            task_waker: waker,
        });
    }

    fn poll_task(&self, key: Key) {
        // The task leaves the table for its poll, as a handler left its
        // slot in chapter 10: its code may spawn tasks into the table.
        // `None` for a task finished since it was woken.
        let Some(mut task) = self.tasks.borrow_mut().get_mut(key).and_then(Option::take) else {
            return;
        };
        task.task_waker.dequeued();
        BUDGET_LEFT.set(BUDGET);
        let poll = task
            .future
            .as_mut()
            .poll(&mut Context::from_waker(&task.waker));
        let mut tasks = self.tasks.borrow_mut();
        match poll {
            Poll::Pending => *tasks.get_mut(key).unwrap() = Some(task),
            Poll::Ready(()) => {
                tasks.remove(key);
                drop(tasks);
                // Outside the borrow: the future's destructors may use the
                // runtime (a `Watch` wakes the task waiting for the last one).
                drop(task);
            }
        }
    }
}

/// The id of the future `block_on` runs, which has no place in the table.
const MAIN: Key = Key::RESERVED;
// ANCHOR_END: task

// ANCHOR: spawn
// Identical in chapters 12 to 14 (book/check.sh checks it).
/// Starts `future` as a task of the runtime running on this thread. The
/// handle awaits its output; dropping the handle detaches the task, which
/// runs on, as in tokio.
///
/// # Panics
///
/// Outside `Runtime::block_on`, as tokio's `spawn` does.
pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    let join = Rc::new(Join {
        output: Cell::new(None),
        waiter: Cell::new(None),
    });
    // Boxed on its own, and only the box captured: an `async` block keeps
    // what it captures and, apart, what it awaits (rustc does not lay the
    // two over each other), so awaiting a captured future would hold it
    // twice (the test `the_connection_future_is_small` prints both sizes).
    let future = Box::pin(future);
    let task = {
        let join = join.clone();
        async move {
            join.output.set(Some(future.await));
            if let Some(waiter) = join.waiter.take() {
                waiter.wake();
            }
        }
    };
    CURRENT.with(|current| {
        let current = current.borrow();
        let executor = current.as_ref().expect("spawn outside Runtime::block_on");
        executor.spawn(Box::pin(task));
    });
    JoinHandle { join }
}

/// Awaits a spawned task's output.
pub struct JoinHandle<T> {
    join: Rc<Join<T>>,
}

struct Join<T> {
    output: Cell<Option<T>>,
    /// The task awaiting the handle.
    waiter: Cell<Option<Waker>>,
}

impl<T> Future for JoinHandle<T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match self.join.output.take() {
            Some(output) => Poll::Ready(output),
            None => {
                self.join.waiter.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        }
    }
}
// ANCHOR_END: spawn

/// The executor and the reactor, ready to run.
pub struct Runtime {
    reactor: Reactor,
}

impl Runtime {
    pub fn new() -> io::Result<Runtime> {
        Ok(Runtime {
            reactor: Reactor::new()?,
        })
    }

    // ANCHOR: block_on
    /// Runs `future` to completion on this thread, and with it every task
    /// it spawns; returns its output, dropping the tasks still unfinished.
    pub fn block_on<F: Future>(self, future: F) -> F::Output {
        let executor = enter(self.reactor);
        let main = Arc::new(TaskWaker {
            task: MAIN,
            queued: AtomicBool::new(false),
            queue: executor.queue.clone(),
        });
        let main_waker = Waker::from(main.clone());
        let mut future = pin!(future);
        main.wake_by_ref();
        let mut batch = Vec::new();
        loop {
            // A round: every task woken so far, once, in the order woken.
            // Those woken meanwhile wait for the next round.
            executor.queue.take(&mut batch);
            for key in batch.drain(..) {
                if key != MAIN {
                    executor.poll_task(key);
                    continue;
                }
                main.dequeued();
                BUDGET_LEFT.set(BUDGET);
                let cx = &mut Context::from_waker(&main_waker);
                if let Poll::Ready(output) = future.as_mut().poll(cx) {
                    return output;
                }
            }
            // Sleep in epoll_wait until an event or the next timer; but if
            // a task is awake already (another woke it this round, or it
            // yielded), only collect the events that are there.
            let timeout = if executor.queue.is_empty() && executor.deferred.borrow().is_empty() {
                time::next_deadline().map(|at| at.saturating_duration_since(Instant::now()))
            } else {
                Some(Duration::ZERO)
            };
            reactor::turn(timeout);
            time::fire_expired();
            // Last, the tasks that yielded: behind those the events woke.
            executor.deferred.take().into_iter().for_each(Waker::wake);
        }
    }
    // ANCHOR_END: block_on
}

/// Makes the runtime this thread's until the guard is dropped: `reactor`,
/// new timers and a new executor, entered and left together. Whatever
/// needs the runtime finds all three, or none, and then says so: `spawn`
/// and a timer's poll panic, `AsyncFd::new` fails.
fn enter(reactor: Reactor) -> Entered {
    let unpark = reactor.unpark();
    let reactor = reactor::enter(reactor);
    let timers = time::enter();
    let executor = Rc::new(Executor {
        tasks: RefCell::new(Slab::default()),
        queue: Arc::new(RunQueue {
            tasks: Mutex::new(Vec::new()),
            unpark,
        }),
        deferred: RefCell::new(Vec::new()),
    });
    CURRENT.with(|current| {
        let previous = current.borrow_mut().replace(executor.clone());
        assert!(
            previous.is_none(),
            "a runtime is already running on this thread"
        );
    });
    Entered {
        executor,
        _timers: timers,
        _reactor: reactor,
    }
}

/// Left in this order: the executor (and its tasks), the timers, the reactor.
struct Entered {
    executor: Rc<Executor>,
    _timers: time::Entered,
    _reactor: reactor::Entered,
}

impl std::ops::Deref for Entered {
    type Target = Executor;

    fn deref(&self) -> &Executor {
        &self.executor
    }
}

impl Drop for Entered {
    /// Drops the unfinished tasks, while the runtime is still this thread's:
    /// their sockets and timers deregister themselves as they go.
    fn drop(&mut self) {
        let tasks = mem::take(&mut *self.executor.tasks.borrow_mut());
        drop(tasks);
        CURRENT.with(|current| current.borrow_mut().take());
    }
}

// ANCHOR: budget
// Identical in chapters 13 and 14 (book/check.sh checks it).
/// Operations a task may do per poll: 16 reads and 16 sends, say, as
/// chapter 9 read 16 times per turn. tokio gives 128.
const BUDGET: u32 = 32;

thread_local! {
    /// What is left of the budget of the task being polled.
    static BUDGET_LEFT: Cell<u32> = const { Cell::new(BUDGET) };
}

/// Spends a unit of the polled task's budget on an operation about to go
/// ahead. With none left, the operation says `Pending` instead, and the
/// task is woken again later (see [`defer`]), where its `.await` resumes.
/// A client that always has input waiting would otherwise keep its task
/// running, and the others waiting, for ever: no `.await` returns
/// `Pending` on its own when there is work.
pub fn poll_budget(cx: &mut Context<'_>) -> Poll<()> {
    match BUDGET_LEFT.get() {
        0 => {
            defer(cx);
            Poll::Pending
        }
        left => {
            BUDGET_LEFT.set(left - 1);
            Poll::Ready(())
        }
    }
}

/// Wakes the polled task after the reactor's next turn, behind the tasks
/// its events wake: chapter 9's `unfinished` connections, which had their
/// next turn after those with an edge. Woken at once instead, the task
/// would be queued before them, and a client that sent a frame while the
/// greedy one had its turn would wait for another of its turns. (tokio
/// defers the same way.) Outside a runtime, the task is woken at once.
fn defer(cx: &Context<'_>) {
    let deferred = CURRENT.with(|current| {
        let current = current.borrow();
        let executor = current.as_ref()?;
        executor.deferred.borrow_mut().push(cx.waker().clone());
        Some(())
    });
    if deferred.is_none() {
        cx.waker().wake_by_ref();
    }
}
// ANCHOR_END: budget

/// Lets the other tasks run, and the reactor collect its events: `Pending`
/// once, the task woken again after them (see [`defer`]). The server no
/// longer needs it (a task that must wait for the kernel sleeps instead);
/// the tests do.
#[allow(dead_code)]
pub async fn yield_now() {
    let mut yielded = false;
    poll_fn(|cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        defer(cx);
        Poll::Pending
    })
    .await;
}

// ANCHOR: race
// Identical in chapters 12 to 14 (book/check.sh checks it).
/// Which of two raced futures finished first.
pub enum Either<A, B> {
    Left(A),
    Right(B),
}

/// Runs two futures at once and returns the output of the first to finish,
/// dropping the other: what tokio's `select!` does for two branches.
/// Both are polled with the task's own `Context`, so whichever can go on
/// wakes the task; `first` is polled first, and wins a tie.
pub async fn race<A: Future, B: Future>(first: A, second: B) -> Either<A::Output, B::Output> {
    let (mut first, mut second) = (pin!(first), pin!(second));
    poll_fn(|cx| {
        if let Poll::Ready(output) = first.as_mut().poll(cx) {
            return Poll::Ready(Either::Left(output));
        }
        second.as_mut().poll(cx).map(Either::Right)
    })
    .await
}
// ANCHOR_END: race

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::mpsc;
    use std::thread;

    use super::*;

    /// Runs `test` on another thread, failing if it takes more than a few
    /// seconds: a runtime that misses a wake waits forever.
    pub(crate) fn bounded<T: Send + 'static>(test: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let _ = tx.send(test());
        });
        rx.recv_timeout(Duration::from_secs(5))
            .expect("the runtime did not return in time")
    }

    #[test]
    fn spawned_tasks_run_and_their_handles_give_their_output() {
        let dropped = bounded(|| {
            let dropped = Rc::new(Cell::new(false));
            let out = Runtime::new().unwrap().block_on({
                let dropped = dropped.clone();
                async move {
                    let doubled = spawn(async { 21 * 2 });
                    // Never finishes: dropped with the runtime.
                    let guard = DropFlag(dropped);
                    spawn(async move {
                        let _guard = guard;
                        std::future::pending::<()>().await;
                    });
                    doubled.await
                }
            });
            assert_eq!(out, 42);
            dropped.get()
        });
        assert!(dropped, "the unfinished task is dropped at the end");
    }

    struct DropFlag(Rc<Cell<bool>>);

    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.set(true);
        }
    }

    // ANCHOR: test_budget
    #[test]
    fn a_task_that_never_waits_still_lets_the_others_run() {
        let spins = bounded(|| {
            Runtime::new().unwrap().block_on(async {
                let done = Rc::new(Cell::new(false));
                spawn({
                    let done = done.clone();
                    async move { done.set(true) }
                });
                // Never `Pending` on its own: without the budget, this loop
                // would spin for ever and the task above never run.
                let mut spins = 0;
                while !done.get() {
                    poll_fn(poll_budget).await;
                    spins += 1;
                }
                spins
            })
        });
        // BUDGET in its first poll; the next one waits for the other's turn.
        assert_eq!(spins, BUDGET + 1);
    }
    // ANCHOR_END: test_budget

    /// Chapter 9's order: after a greedy turn, the connections with an
    /// event first, then the one that was cut short.
    #[test]
    fn a_task_out_of_budget_goes_after_those_the_events_woke() {
        use std::io::Write;
        use std::os::unix::net::UnixStream;

        use crate::reactor::{AsyncFd, Interest};

        let order = bounded(|| {
            Runtime::new().unwrap().block_on(async {
                let (ours, mut peer) = UnixStream::pair().unwrap();
                ours.set_nonblocking(true).unwrap();
                let ours = AsyncFd::new(ours).unwrap();
                let order = Rc::new(RefCell::new(Vec::new()));
                let waiting = spawn({
                    let order = order.clone();
                    async move {
                        ours.ready(Interest::Read).await;
                        order.borrow_mut().push("woken by input");
                    }
                });
                let greedy = spawn({
                    let order = order.clone();
                    async move {
                        // Input for the other task, during this one's turn.
                        peer.write_all(b"x").unwrap();
                        for _ in 0..=BUDGET {
                            poll_fn(poll_budget).await;
                        }
                        order.borrow_mut().push("greedy again");
                    }
                });
                waiting.await;
                greedy.await;
                Rc::try_unwrap(order).unwrap().into_inner()
            })
        });
        assert_eq!(order, ["woken by input", "greedy again"]);
    }

    /// A waker sent to another thread wakes the executor out of an
    /// `epoll_wait` with no timeout (no timer is armed). The other thread
    /// wakes it only once the executor's thread is asleep there: a wake
    /// that came sooner would be found on the run queue before the wait,
    /// and the test would pass without the unpark.
    #[test]
    fn a_wake_from_another_thread_reaches_a_sleeping_executor() {
        let polls = bounded(|| {
            Runtime::new().unwrap().block_on(async {
                let executor = std::fs::canonicalize("/proc/thread-self").unwrap();
                let (tx, rx) = mpsc::channel::<Waker>();
                let waking = thread::spawn(move || {
                    let waker = rx.recv().unwrap();
                    wait_until_in_epoll_wait(&executor);
                    waker.wake();
                });
                let mut polls = 0;
                poll_fn(|cx| {
                    polls += 1;
                    if polls == 1 {
                        tx.send(cx.waker().clone()).unwrap();
                        return Poll::Pending;
                    }
                    Poll::Ready(())
                })
                .await;
                waking.join().unwrap();
                polls
            })
        });
        assert_eq!(polls, 2);
    }

    /// Polls until the thread whose /proc directory is `task` is in
    /// `epoll_wait` (its `syscall` file names the call a thread is blocked
    /// in, or says `running`). `bounded` fails the test if it never is.
    fn wait_until_in_epoll_wait(task: &std::path::Path) {
        #[cfg(target_arch = "x86_64")]
        let waits = [
            libc::SYS_epoll_wait,
            libc::SYS_epoll_pwait,
            libc::SYS_epoll_pwait2,
        ];
        #[cfg(not(target_arch = "x86_64"))]
        let waits = [libc::SYS_epoll_pwait, libc::SYS_epoll_pwait2];
        let syscall = task.join("syscall");
        loop {
            let now = std::fs::read_to_string(&syscall).unwrap();
            let number = now.split_whitespace().next().and_then(|n| n.parse().ok());
            if number.is_some_and(|n| waits.contains(&n)) {
                return;
            }
            thread::sleep(Duration::from_millis(1)); // polling, not synchronising
        }
    }

    #[test]
    fn race_returns_the_first_to_finish_and_drops_the_other() {
        let dropped = Rc::new(Cell::new(false));
        let winner = Runtime::new().unwrap().block_on({
            let guard = DropFlag(dropped.clone());
            async move {
                let slow = async move {
                    let _guard = guard;
                    yield_now().await;
                    "slow"
                };
                match race(slow, async { "fast" }).await {
                    Either::Left(s) | Either::Right(s) => s,
                }
            }
        });
        assert_eq!(winner, "fast");
        assert!(dropped.get());
    }

    // ANCHOR: raw_waker
    // Identical in chapters 12 to 14 (book/check.sh checks it).
    /// The `TaskWaker`'s `Waker` written by hand, as `std::task::Wake`
    /// writes it for us: four functions over a type-erased pointer, each
    /// keeping the reference count right. One mistake is a leak, or a
    /// use-after-free when a waker outlives its task. Why write one anyway:
    /// to make a waker that is not an `Arc` (tokio's points into the task's
    /// own allocation, header and future together, with the reference
    /// count in its state word: one allocation per task, where ours takes
    /// two), or with no allocator at all, on an embedded target.
    mod by_hand {
        use std::mem::ManuallyDrop;
        use std::sync::Arc;
        use std::task::{RawWaker, RawWakerVTable, Wake, Waker};

        use super::TaskWaker;

        const VTABLE: RawWakerVTable = RawWakerVTable::new(clone, wake, wake_by_ref, drop);

        pub fn waker(task: Arc<TaskWaker>) -> Waker {
            let data = Arc::into_raw(task).cast::<()>();
            // SAFETY: `data` is an `Arc<TaskWaker>` turned into a pointer,
            // and each function of VTABLE treats it as one: `clone` adds a
            // reference, `wake` and `drop` give one up, `wake_by_ref` only
            // borrows. The pointee is `Send + Sync`, as a `Waker` must be.
            unsafe { Waker::from_raw(RawWaker::new(data, &VTABLE)) }
        }

        unsafe fn clone(data: *const ()) -> RawWaker {
            // SAFETY: `data` is alive: the waker being cloned holds a reference.
            unsafe { Arc::increment_strong_count(data.cast::<TaskWaker>()) };
            RawWaker::new(data, &VTABLE)
        }

        unsafe fn wake(data: *const ()) {
            // SAFETY: takes over the reference of the waker being consumed.
            let task = unsafe { Arc::from_raw(data.cast::<TaskWaker>()) };
            task.wake();
        }

        unsafe fn wake_by_ref(data: *const ()) {
            // SAFETY: borrows the waker's reference; ManuallyDrop leaves it.
            let task = ManuallyDrop::new(unsafe { Arc::from_raw(data.cast::<TaskWaker>()) });
            task.wake_by_ref();
        }

        unsafe fn drop(data: *const ()) {
            // SAFETY: gives up the reference of the waker being dropped.
            std::mem::drop(unsafe { Arc::from_raw(data.cast::<TaskWaker>()) });
        }
    }
    // ANCHOR_END: raw_waker

    #[test]
    fn a_hand_written_vtable_wakes_like_wake() {
        let queue = Arc::new(RunQueue {
            tasks: Mutex::new(Vec::new()),
            unpark: Reactor::new().unwrap().unpark(),
        });
        let task = Arc::new(TaskWaker {
            task: MAIN,
            queued: AtomicBool::new(false),
            queue: queue.clone(),
        });
        for waker in [Waker::from(task.clone()), by_hand::waker(task.clone())] {
            let copy = waker.clone();
            assert!(copy.will_wake(&waker));
            copy.wake();
            waker.wake_by_ref();
            drop(waker);
            let mut woken = Vec::new();
            queue.take(&mut woken);
            assert_eq!(woken, [MAIN], "queued once, however often woken");
            task.dequeued();
        }
        assert_eq!(Arc::strong_count(&task), 1, "every reference given back");
    }
}
