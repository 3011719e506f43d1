// ANCHOR: module
//! The keyspace: keys and values are byte strings, and a key may have a
//! deadline, after which it is gone.
//!
//! An expired key goes two ways, as in Redis. Lazily: every lookup checks
//! the deadline of the key it finds, and deletes it if it has passed, so
//! no command ever sees an expired key. Actively: a timer samples the keys
//! that have a deadline and deletes the expired ones it finds, so that keys
//! nobody asks for again do not hold memory for ever.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

// ANCHOR: db
/// The keys, and which of them have a deadline.
pub struct Db {
    entries: HashMap<Box<[u8]>, Entry>,
    /// The keys that have a deadline, in no order: what the active expiry
    /// samples from. Redis keeps a second hash table for them, `expires`.
    expiring: Vec<Box<[u8]>>,
    /// For sampling: xorshift, seeded from the clock.
    rng: u64,
}

struct Entry {
    value: Box<[u8]>,
    expiry: Option<Expiry>,
}

#[derive(Clone, Copy)]
struct Expiry {
    /// Unix time in milliseconds, as Redis keeps it: EXPIREAT and PEXPIREAT
    /// (and a saved database) need absolute times.
    at: i64,
    /// Where the key is in `expiring`, to take it out in O(1).
    slot: usize,
}
// ANCHOR_END: db

/// A key's time to live, as TTL and PTTL report it.
#[derive(Debug, PartialEq, Eq)]
pub enum Ttl {
    NoKey,
    Forever,
    /// Milliseconds left, never negative.
    Left(i64),
}

/// What one run of the active expiry did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Cycle {
    pub sampled: usize,
    pub expired: usize,
}

// ANCHOR: cycle_limits
/// Keys sampled per round of the active expiry: Redis's
/// `ACTIVE_EXPIRE_CYCLE_KEYS_PER_LOOP`.
pub const KEYS_PER_ROUND: usize = 20;
/// Rounds per cycle at most, so that one cycle samples at most
/// `KEYS_PER_ROUND * MAX_ROUNDS` keys however many have expired: the bound
/// on the work one timer event may do between two turns of the loop.
pub const MAX_ROUNDS: usize = 50;
/// Another round is worth it while more than this share of a sample had
/// expired (Redis's `ACTIVE_EXPIRE_CYCLE_ACCEPTABLE_STALE`, 10%).
const ACCEPTABLE_STALE_PERCENT: usize = 10;
// ANCHOR_END: cycle_limits

/// The current Unix time in milliseconds.
pub fn now_ms() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    since.as_millis() as i64
}

impl Default for Db {
    fn default() -> Db {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        Db {
            entries: HashMap::new(),
            expiring: Vec::new(),
            rng: seed | 1,
        }
    }
}

impl Db {
    /// Number of keys, expired ones not yet deleted included (as in Redis:
    /// DBSIZE does not look at deadlines).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// How many keys have a deadline.
    #[cfg(test)]
    pub fn expiring(&self) -> usize {
        self.expiring.len()
    }

    // ANCHOR: lookup
    /// The live entry for `key`. An expired one is deleted here, on access:
    /// the lazy half of expiry. Only a key with a deadline reads the clock,
    /// and while no key has one, a lookup is a lookup and nothing more.
    fn live(&mut self, key: &[u8]) -> Option<&mut Entry> {
        if !self.expiring.is_empty() {
            let expiry = self.entries.get(key)?.expiry;
            if expiry.is_some_and(|expiry| expiry.at < now_ms()) {
                self.delete(key);
                return None;
            }
        }
        self.entries.get_mut(key)
    }
    // ANCHOR_END: lookup

    pub fn get(&mut self, key: &[u8]) -> Option<&[u8]> {
        self.live(key).map(|entry| &*entry.value)
    }

    /// The length of `key`'s value, expired or not, without deleting it: to
    /// bound the size of a reply before running a command.
    pub fn peek_len(&self, key: &[u8]) -> usize {
        self.entries.get(key).map_or(0, |entry| entry.value.len())
    }

    pub fn contains(&mut self, key: &[u8]) -> bool {
        self.live(key).is_some()
    }

    /// Sets `key` to `value`. With `keep_ttl`, a deadline the key had stays;
    /// otherwise the key has none (SET without KEEPTTL forgets it).
    pub fn set(&mut self, key: &[u8], value: Box<[u8]>, keep_ttl: bool) {
        if let Some(entry) = self.live(key) {
            entry.value = value;
            if let Some(expiry) = entry.expiry.take_if(|_| !keep_ttl) {
                self.forget_deadline(expiry.slot);
            }
            return;
        }
        let entry = Entry {
            value,
            expiry: None,
        };
        self.entries.insert(key.into(), entry);
    }

    /// Deletes `key`; false if there was no live key to delete.
    pub fn remove(&mut self, key: &[u8]) -> bool {
        self.live(key).is_some() && self.delete(key)
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.expiring.clear();
    }

    // ANCHOR: deadlines
    pub fn ttl(&mut self, key: &[u8]) -> Ttl {
        match self.live(key).map(|entry| entry.expiry) {
            None => Ttl::NoKey,
            Some(None) => Ttl::Forever,
            Some(Some(expiry)) => Ttl::Left((expiry.at - now_ms()).max(0)),
        }
    }

    /// The deadline of a live key: `None` if there is no such key,
    /// `Some(None)` if it has none.
    pub fn deadline(&mut self, key: &[u8]) -> Option<Option<i64>> {
        self.live(key).map(|entry| entry.expiry.map(|e| e.at))
    }

    /// Gives a live `key` a deadline, Unix time in ms; false if no such key.
    pub fn set_deadline(&mut self, key: &[u8], at: i64) -> bool {
        let slot = self.expiring.len();
        let Some(entry) = self.live(key) else {
            return false;
        };
        match &mut entry.expiry {
            Some(expiry) => expiry.at = at,
            None => {
                entry.expiry = Some(Expiry { at, slot });
                self.expiring.push(key.into());
            }
        }
        true
    }

    /// Takes `key`'s deadline away; false if it had none (or no such key).
    pub fn persist(&mut self, key: &[u8]) -> bool {
        let Some(expiry) = self.live(key).and_then(|entry| entry.expiry.take()) else {
            return false;
        };
        self.forget_deadline(expiry.slot);
        true
    }
    // ANCHOR_END: deadlines

    /// Deletes `key` whether or not it has expired.
    fn delete(&mut self, key: &[u8]) -> bool {
        let Some(entry) = self.entries.remove(key) else {
            return false;
        };
        if let Some(expiry) = entry.expiry {
            self.forget_deadline(expiry.slot);
        }
        true
    }

    /// Takes the key at `slot` out of `expiring`; the last key moves into
    /// its place, and its entry learns where it is now.
    fn forget_deadline(&mut self, slot: usize) {
        self.expiring.swap_remove(slot);
        if let Some(moved) = self.expiring.get(slot) {
            let entry = self.entries.get_mut(moved).expect("a key with a deadline");
            if let Some(expiry) = &mut entry.expiry {
                expiry.slot = slot;
            }
        }
    }

    // ANCHOR: active_expiry
    /// The active half of expiry, run by a timer: samples keys that have a
    /// deadline and deletes the expired ones. Like Redis, it goes round
    /// again only while more than a tenth of a sample had expired (many
    /// more probably have), and like Redis it stops early, here after
    /// `MAX_ROUNDS`, so that a million keys expiring at once cost many
    /// short cycles, never one long pause of the whole server.
    pub fn expire_cycle(&mut self) -> Cycle {
        let now = now_ms();
        let mut cycle = Cycle::default();
        for _ in 0..MAX_ROUNDS {
            let sample = KEYS_PER_ROUND.min(self.expiring.len());
            let mut expired = 0;
            for _ in 0..sample {
                let slot = self.random_below(self.expiring.len());
                let key = &self.expiring[slot];
                let at = self.entries[key].expiry.map_or(i64::MAX, |e| e.at);
                if at < now {
                    let key = key.clone();
                    self.delete(&key);
                    expired += 1;
                }
            }
            cycle.sampled += sample;
            cycle.expired += expired;
            if sample == 0 || expired * 100 <= sample * ACCEPTABLE_STALE_PERCENT {
                break;
            }
        }
        cycle
    }
    // ANCHOR_END: active_expiry

    /// A number in `0..n`, for `n > 0` (xorshift64*: good enough to sample).
    fn random_below(&mut self, n: usize) -> usize {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let x = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (((x >> 32) * n as u64) >> 32) as usize
    }
}
// ANCHOR_END: module

#[cfg(test)]
mod tests {
    use super::*;

    fn db_with(keys: usize, deadline: Option<i64>) -> Db {
        let mut db = Db::default();
        for i in 0..keys {
            let key = format!("key:{i}");
            db.set(key.as_bytes(), b"v"[..].into(), false);
            if let Some(at) = deadline {
                db.set_deadline(key.as_bytes(), at);
            }
        }
        db
    }

    /// Every key in `expiring` has an entry that points back at its slot.
    fn assert_consistent(db: &Db) {
        for (slot, key) in db.expiring.iter().enumerate() {
            let expiry = db.entries[key].expiry.expect("listed keys have a deadline");
            assert_eq!(expiry.slot, slot);
        }
        let with_deadline = db.entries.values().filter(|e| e.expiry.is_some());
        assert_eq!(with_deadline.count(), db.expiring.len());
    }

    #[test]
    fn an_expired_key_is_deleted_when_it_is_looked_up() {
        let mut db = db_with(3, Some(now_ms() - 1));
        assert_eq!(db.len(), 3, "expired keys count until someone looks");
        assert_eq!(db.get(b"key:1"), None);
        assert!(!db.contains(b"key:0"));
        assert_eq!(db.len(), 1);
        assert_eq!(db.ttl(b"key:2"), Ttl::NoKey);
        assert_eq!(db.len(), 0);
        assert_consistent(&db);
    }

    #[test]
    fn deadlines_come_and_go_with_their_keys() {
        let mut db = db_with(10, None);
        let later = now_ms() + 60_000;
        for i in [3, 7, 1, 9] {
            assert!(db.set_deadline(format!("key:{i}").as_bytes(), later));
        }
        assert!(!db.set_deadline(b"nokey", later));
        assert!(db.persist(b"key:3"));
        assert!(!db.persist(b"key:3"));
        assert!(db.remove(b"key:7"));
        db.set(b"key:9", b"new"[..].into(), false); // forgets the deadline
        db.set(b"key:1", b"new"[..].into(), true); // keeps it
        assert_consistent(&db);
        assert_eq!(db.ttl(b"key:9"), Ttl::Forever);
        assert!(matches!(db.ttl(b"key:1"), Ttl::Left(ms) if ms > 59_000));
        assert_eq!(db.expiring(), 1);
    }

    #[test]
    fn a_cycle_does_bounded_work_however_many_keys_expired() {
        let mut db = db_with(20_000, Some(now_ms() - 1));
        let cycle = db.expire_cycle();
        assert_eq!(cycle.sampled, KEYS_PER_ROUND * MAX_ROUNDS);
        assert!(cycle.expired > 0 && cycle.expired <= cycle.sampled);
        assert_eq!(db.len(), 20_000 - cycle.expired);
        assert_consistent(&db);
        // Cycle after cycle, every expired key goes.
        while db.expiring() > 0 {
            db.expire_cycle();
        }
        assert_eq!(db.len(), 0);
    }

    #[test]
    fn a_cycle_stops_at_once_when_few_keys_have_expired() {
        let mut db = db_with(1000, Some(now_ms() + 60_000));
        let cycle = db.expire_cycle();
        assert_eq!(
            cycle,
            Cycle {
                sampled: KEYS_PER_ROUND,
                expired: 0
            }
        );
        assert_eq!(Db::default().expire_cycle(), Cycle::default());
    }
}
