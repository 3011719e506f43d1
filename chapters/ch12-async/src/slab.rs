//! A slab: values in a `Vec`, each named by a [`Key`] that cannot be
//! mistaken for the next value stored in the same place.
//!
//! Tasks, I/O registrations and timers all live in one: a waker, an epoll
//! event or a heap entry holds a key, and may outlive the value it names.

// ANCHOR: key
/// Names a value in a [`Slab`]: where it is, and which value of that place
/// it is. Removing a value bumps its place's generation, so a stale key,
/// kept by a waker or an event after its value was removed, finds nothing
/// rather than the newcomer that reused the place. (A chapter 10 token was
/// a descriptor number, reused by the next `accept`; its handlers had to
/// shrug off calls meant for a predecessor.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    index: u32,
    generation: u32,
}

impl Key {
    /// A key no value ever has: slabs stop short of index `u32::MAX`.
    pub const RESERVED: Key = Key {
        index: u32::MAX,
        generation: 0,
    };

    /// The key as epoll's 64-bit event data, and back.
    pub const fn to_u64(self) -> u64 {
        (self.generation as u64) << 32 | self.index as u64
    }

    pub fn from_u64(data: u64) -> Key {
        Key {
            index: data as u32,
            generation: (data >> 32) as u32,
        }
    }
}
// ANCHOR_END: key

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
        entry.generation = entry.generation.wrapping_add(1);
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
    }
}
