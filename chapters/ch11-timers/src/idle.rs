//! The idle list: handlers ordered by their last activity, oldest first.
//!
//! Chapter 17 uses this file as it is, included from here (`#[path]`).

use std::time::Instant;

use crate::reactor::Token;

// ANCHOR: idle_list
/// The handlers subject to the idle timeout, least recently active first: a
/// doubly linked list threaded through an array indexed by token. Finding an
/// entry, unlinking it and appending it are O(1), and nothing is allocated
/// once the array has grown to the highest descriptor number.
///
/// One list is enough because every entry has the same timeout: the order of
/// last activity is the order of deadlines, and activity only ever moves an
/// entry to the back. The nearest deadline is the front's, and the expired
/// entries are a prefix. Timers with deadlines of their own (a timeout per
/// request, a retry in 3 s) need a structure that orders any deadlines: a
/// binary heap (O(log n), and cancelling is awkward: usually the entry is
/// left in and skipped when it fires), or a timer wheel, an array of buckets
/// by time slot, O(1) to insert and to cancel. Tokio's timer is a wheel of
/// wheels, built for millions of timers, most cancelled before they fire.
pub struct IdleList {
    links: Vec<Link>,
    /// Least recently active entry, or `NIL` if the list is empty.
    head: usize,
    /// Most recently active entry, or `NIL`.
    tail: usize,
}

#[derive(Debug, Clone, Copy)]
struct Link {
    prev: usize,
    next: usize,
    /// When the entry was last active; `None` while it is not in the list.
    last_active: Option<Instant>,
}

/// Ends the list: no descriptor has this number.
const NIL: usize = usize::MAX;

const UNLINKED: Link = Link {
    prev: NIL,
    next: NIL,
    last_active: None,
};
// ANCHOR_END: idle_list

impl Default for IdleList {
    fn default() -> IdleList {
        IdleList {
            links: Vec::new(),
            head: NIL,
            tail: NIL,
        }
    }
}

impl IdleList {
    fn contains(&self, Token(token): Token) -> bool {
        self.links
            .get(token)
            .is_some_and(|link| link.last_active.is_some())
    }

    /// Appends `token`, active at `now`, as the most recently active entry.
    pub fn push_back(&mut self, token: Token, now: Instant) {
        debug_assert!(!self.contains(token), "{token:?} is already listed");
        let Token(token) = token;
        if self.links.len() <= token {
            self.links.resize(token + 1, UNLINKED);
        }
        self.links[token] = Link {
            prev: self.tail,
            next: NIL,
            last_active: Some(now),
        };
        match self.tail {
            NIL => self.head = token,
            tail => self.links[tail].next = token,
        }
        self.tail = token;
    }

    /// Takes `token` out of the list, if it is in it.
    pub fn remove(&mut self, Token(token): Token) {
        let Some(link) = self.links.get_mut(token) else {
            return;
        };
        if link.last_active.take().is_none() {
            return;
        }
        let Link { prev, next, .. } = *link;
        match prev {
            NIL => self.head = next,
            prev => self.links[prev].next = next,
        }
        match next {
            NIL => self.tail = prev,
            next => self.links[next].prev = prev,
        }
    }

    // ANCHOR: touch
    /// Records that `token` was active at `now`: it moves to the back, in
    /// O(1). `now` must not be earlier than any time already in the list,
    /// which a monotonic clock guarantees. A token not in the list (a handler
    /// exempt from the timeout) stays out.
    pub fn touch(&mut self, token: Token, now: Instant) {
        if self.contains(token) {
            self.remove(token);
            self.push_back(token, now);
        }
    }
    // ANCHOR_END: touch

    /// When the least recently active entry was last active.
    pub fn oldest(&self) -> Option<Instant> {
        self.links.get(self.head)?.last_active
    }

    /// Takes out the least recently active entry if it was last active at
    /// `cutoff` or before.
    pub fn pop_idle_since(&mut self, cutoff: Instant) -> Option<Token> {
        let token = Token(self.head);
        if self.oldest()? > cutoff {
            return None;
        }
        self.remove(token);
        Some(token)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Pops every entry idle since `cutoff`, oldest first.
    fn pop_all(list: &mut IdleList, cutoff: Instant) -> Vec<usize> {
        std::iter::from_fn(|| list.pop_idle_since(cutoff))
            .map(|Token(t)| t)
            .collect()
    }

    #[test]
    fn entries_leave_in_order_of_last_activity() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut list = IdleList::default();
        for (i, token) in [5, 3, 9, 0].into_iter().enumerate() {
            list.push_back(Token(token), at(i as u64));
        }
        list.touch(Token(5), at(10)); // head to the back
        list.touch(Token(0), at(11)); // tail stays at the back
        list.touch(Token(9), at(12)); // from the middle
        list.touch(Token(42), at(13)); // not listed: stays out
        assert_eq!(list.oldest(), Some(at(1)));
        assert_eq!(pop_all(&mut list, at(10)), [3, 5]);
        assert_eq!(pop_all(&mut list, at(11)), [0]);
        assert_eq!(list.oldest(), Some(at(12)));
        assert_eq!(pop_all(&mut list, at(100)), [9]);
        assert_eq!(list.oldest(), None);
        assert_eq!(pop_all(&mut list, at(100)), []);
    }

    #[test]
    fn removed_entries_never_come_out() {
        let t0 = Instant::now();
        let mut list = IdleList::default();
        for token in 0..5 {
            list.push_back(Token(token), t0);
        }
        for token in [0, 2, 4, 4, 7] {
            list.remove(Token(token));
        }
        assert_eq!(pop_all(&mut list, t0), [1, 3]);
        // A removed token can be listed again, as a reused descriptor is.
        list.push_back(Token(2), t0);
        assert_eq!(pop_all(&mut list, t0), [2]);
    }
}
