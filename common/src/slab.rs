//! A slab: values in a `Vec`, each named by a [`Key`] that cannot be
//! mistaken for the next value stored in the same place.
//!
//! The table of connections, tasks, registrations and timers from chapter
//! 12 on: an epoll event, an io_uring completion, a waker or a heap entry
//! holds a key, and may outlive the value it names.

// ANCHOR: key
/// Names a value in a [`Slab`]: where it is, and which value of that place
/// it is. Removing a value bumps its place's generation, so a stale key,
/// kept by a waker, an event or a completion after its value was removed,
/// finds nothing rather than the newcomer that reused the place. (A chapter
/// 10 token was a descriptor number, reused by the next `accept`; its
/// handlers had to shrug off calls meant for a predecessor.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    index: u32,
    /// Counts the place's values, modulo 2^24 (see [`Key::to_u64`]).
    generation: u32,
}

impl Key {
    /// A key no value ever has: slabs stop short of index `u32::MAX`.
    pub const RESERVED: Key = Key {
        index: u32::MAX,
        generation: 0,
    };

    /// How many low bits of a `u64` [`Key::to_u64`] uses. The top byte is
    /// left for tags of the caller's own (chapter 15 says there which
    /// operation completed).
    pub const BITS: u32 = 56;

    /// The key as 64 bits of event data (epoll's, io_uring's), and back.
    pub const fn to_u64(self) -> u64 {
        (self.generation as u64) << 32 | self.index as u64
    }

    /// The inverse of [`Key::to_u64`]; bits above [`Key::BITS`] are ignored.
    pub fn from_u64(data: u64) -> Key {
        Key {
            index: data as u32,
            generation: (data >> 32) as u32 & GENERATION_MASK,
        }
    }
}
// ANCHOR_END: key

const GENERATION_MASK: u32 = (1 << (Key::BITS - 32)) - 1;

pub struct Slab<T> {
    entries: Vec<Entry<T>>,
    /// Places with no value, reused most recent first.
    vacant: Vec<u32>,
    len: usize,
}

struct Entry<T> {
    generation: u32,
    value: Option<T>,
}

impl<T> Default for Slab<T> {
    fn default() -> Slab<T> {
        Slab {
            entries: Vec::new(),
            vacant: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Slab<T> {
    pub fn insert(&mut self, value: T) -> Key {
        self.len += 1;
        if let Some(index) = self.vacant.pop() {
            let entry = &mut self.entries[index as usize];
            entry.value = Some(value);
            return Key {
                index,
                generation: entry.generation,
            };
        }
        let index = u32::try_from(self.entries.len())
            .ok()
            .filter(|&i| i != Key::RESERVED.index)
            .expect("a slab of 4 billion entries");
        self.entries.push(Entry {
            generation: 0,
            value: Some(value),
        });
        Key {
            index,
            generation: 0,
        }
    }

    pub fn get(&self, key: Key) -> Option<&T> {
        let entry = self.entries.get(key.index as usize)?;
        (entry.generation == key.generation)
            .then_some(entry.value.as_ref())
            .flatten()
    }

    pub fn get_mut(&mut self, key: Key) -> Option<&mut T> {
        let entry = self.entries.get_mut(key.index as usize)?;
        (entry.generation == key.generation)
            .then_some(entry.value.as_mut())
            .flatten()
    }

    /// Takes the value out; `key`, and every copy of it, now names nothing.
    pub fn remove(&mut self, key: Key) -> Option<T> {
        let entry = self.entries.get_mut(key.index as usize)?;
        if entry.generation != key.generation {
            return None;
        }
        let value = entry.value.take()?;
        entry.generation = (entry.generation + 1) & GENERATION_MASK;
        self.vacant.push(key.index);
        self.len -= 1;
        Some(value)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The key of every value, in no particular order: a list to go through
    /// while values come and go.
    pub fn keys(&self) -> Vec<Key> {
        let occupied = self.entries.iter().zip(0..);
        occupied
            .filter(|(entry, _)| entry.value.is_some())
            .map(|(entry, index)| Key {
                index,
                generation: entry.generation,
            })
            .collect()
    }

    /// Every value, in no particular order.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.entries.iter_mut().filter_map(|e| e.value.as_mut())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_key_never_finds_the_newcomer() {
        let mut slab = Slab::default();
        let old = slab.insert("old");
        assert_eq!(slab.remove(old), Some("old"));
        let new = slab.insert("new");
        assert_eq!(new.index, old.index, "the place is reused");
        assert_eq!(slab.get(old), None);
        assert_eq!(slab.remove(old), None);
        assert_eq!(slab.get(new), Some(&"new"));
        assert_eq!(Key::from_u64(new.to_u64()), new);
        assert_eq!(slab.len(), 1);
        assert_eq!(slab.keys(), [new]);
    }

    #[test]
    fn a_key_leaves_the_top_byte_to_the_caller() {
        let mut slab = Slab::default();
        let first = slab.insert(());
        // The place's last generation before it wraps round.
        slab.entries[0].generation = GENERATION_MASK;
        let last = Key {
            generation: GENERATION_MASK,
            ..first
        };
        assert!(last.to_u64() < 1 << Key::BITS);
        let tagged = 0xAB << Key::BITS | last.to_u64();
        assert_eq!(Key::from_u64(tagged), last);
        slab.remove(last);
        assert_eq!(slab.insert(()), first, "the generation wrapped round");
        assert!(Key::RESERVED.to_u64() < 1 << Key::BITS);
    }
}
