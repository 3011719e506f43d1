// ANCHOR: head
//! The stop, told to every connection, and the wait for the last one to
//! finish: what tokio-util's `CancellationToken` and `TaskTracker` do for a
//! tokio server.
//!
//! Chapters 13 and 14 use this file as it is, included from here (`#[path]`).

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use common::slab::{Key, Slab};
// ANCHOR_END: head

// ANCHOR: stop
/// The server's stop, as the connections see it.
#[derive(Default)]
pub struct Stop {
    inner: Rc<Inner>,
}

#[derive(Default)]
struct Inner {
    requested: Cell<bool>,
    /// One entry per connection: the waker of its task, once it waits.
    connections: RefCell<Slab<Option<Waker>>>,
    /// The task waiting for the last connection to finish.
    finished: Cell<Option<Waker>>,
}

/// A connection's place in the [`Stop`], for its whole life: through it, it
/// hears of the stop; dropping it says the connection is finished.
pub struct Watch {
    inner: Rc<Inner>,
    key: Key,
}

impl Stop {
    pub fn watch(&self) -> Watch {
        let key = self.inner.connections.borrow_mut().insert(None);
        Watch {
            inner: self.inner.clone(),
            key,
        }
    }

    /// Tells every connection, waking those that wait.
    pub fn request(&self) {
        self.inner.requested.set(true);
        // Out of the borrow before any is woken: `wake` may run any code,
        // even code that watches this `Stop`.
        let wakers: Vec<Waker> = (self.inner.connections.borrow_mut().values_mut())
            .filter_map(Option::take)
            .collect();
        wakers.into_iter().for_each(Waker::wake);
    }

    /// How many connections are still open.
    pub fn open(&self) -> usize {
        self.inner.connections.borrow().len()
    }

    /// Waits until every connection is finished.
    pub async fn finished(&self) {
        poll_fn(|cx| {
            if self.open() == 0 {
                return Poll::Ready(());
            }
            self.inner.finished.set(Some(cx.waker().clone()));
            Poll::Pending
        })
        .await;
    }
}

impl Watch {
    /// `Ready` once the stop is requested; until then, keeps the waker.
    pub fn poll_stop(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.inner.requested.get() {
            return Poll::Ready(());
        }
        let mut connections = self.inner.connections.borrow_mut();
        if let Some(slot) = connections.get_mut(self.key) {
            if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *slot = Some(cx.waker().clone());
            }
        }
        Poll::Pending
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut connections = self.inner.connections.borrow_mut();
        connections.remove(self.key);
        let last = connections.is_empty();
        drop(connections);
        if last {
            if let Some(waker) = self.inner.finished.take() {
                waker.wake();
            }
        }
    }
}
// ANCHOR_END: stop

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::{spawn, yield_now, Runtime};

    #[test]
    fn the_stop_reaches_every_watch_and_the_last_drop_ends_the_wait() {
        let woken = Runtime::new().unwrap().block_on(async {
            let stop = Stop::default();
            let woken = Rc::new(Cell::new(0));
            for _ in 0..3 {
                let watch = stop.watch();
                let woken = woken.clone();
                spawn(async move {
                    poll_fn(|cx| watch.poll_stop(cx)).await;
                    woken.set(woken.get() + 1);
                    yield_now().await;
                });
            }
            yield_now().await;
            assert_eq!((stop.open(), woken.get()), (3, 0));
            stop.request();
            stop.finished().await;
            woken.get()
        });
        assert_eq!(woken, 3);
    }
}
