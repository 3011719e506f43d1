//! Connection buffers that fit the traffic: they grow while a client keeps
//! more bytes in flight than they hold, up to a cap, and give their memory
//! back whenever they are empty.
//!
//! Chapters 9 to 17 use this file as it is: each includes it from here
//! (`#[path]`), so there is one copy to read and to fix.

use std::mem;

use common::frame::MAX_FRAME;

// ANCHOR: sizes
/// What a buffer starts with: room for a few whole frames, so one read
/// brings in many small ones.
pub const MIN_CAPACITY: usize = 16 << 10;
/// The most a buffer grows to, and so the most a client can make us hold:
/// two buffers, 512 KiB per connection. 256 KiB holds 64 frames of 4 KiB
/// in flight, which is more than a client gains from: beyond a few rounds
/// of replies, the kernel's own socket buffers do the queueing.
pub const MAX_CAPACITY: usize = 256 << 10;
const _: () = assert!(MIN_CAPACITY >= 2 * MAX_FRAME && MAX_CAPACITY.is_power_of_two());
// ANCHOR_END: sizes

// ANCHOR: buf
/// A buffer whose bytes in use are `mem[start..end]`. While it is empty it
/// can give its memory back to the [`Pool`], leaving `mem` empty.
pub struct Buf {
    mem: Vec<u8>,
    start: usize,
    end: usize,
    /// The size it takes from the pool: doubled each time the traffic
    /// fills it, up to [`MAX_CAPACITY`].
    capacity: usize,
}

impl Default for Buf {
    fn default() -> Buf {
        Buf {
            mem: Vec::new(),
            start: 0,
            end: 0,
            capacity: MIN_CAPACITY,
        }
    }
}

impl Buf {
    /// The bytes in the buffer.
    pub fn data(&self) -> &[u8] {
        &self.mem[self.start..self.end]
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Drops `n` bytes from the front.
    pub fn consume(&mut self, n: usize) {
        self.start += n;
        if self.is_empty() {
            // Back to the front for free: there are no bytes to move.
            (self.start, self.end) = (0, 0);
        }
    }

    pub fn clear(&mut self) {
        (self.start, self.end) = (0, 0);
    }

    /// Keeps only the first `len` bytes.
    pub fn truncate(&mut self, len: usize) {
        self.end = self.end.min(self.start + len);
    }

    /// Appends `bytes`, growing the buffer if need be. Returns false,
    /// appending nothing, if they would take it over [`MAX_CAPACITY`].
    pub fn append(&mut self, bytes: &[u8], pool: &mut Pool) -> bool {
        self.take_memory(pool);
        if self.end + bytes.len() > self.mem.len() {
            self.compact();
        }
        while self.end + bytes.len() > self.mem.len() {
            if !self.grow() {
                return false;
            }
        }
        self.mem[self.end..self.end + bytes.len()].copy_from_slice(bytes);
        self.end += bytes.len();
        true
    }

    /// Moves the bytes to the front and returns the free space after them,
    /// to read into. Call [`Buf::commit`] with what was read.
    pub fn unfilled(&mut self, pool: &mut Pool) -> &mut [u8] {
        self.take_memory(pool);
        self.compact();
        &mut self.mem[self.end..]
    }

    /// Counts `n` bytes read into the free space as data. If they filled it,
    /// more may be waiting: the buffer grows for the next read.
    pub fn commit(&mut self, n: usize) {
        self.end += n;
        if self.end == self.mem.len() {
            self.grow();
        }
    }

    fn compact(&mut self) {
        if self.start > 0 {
            self.mem.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
    }

    fn grow(&mut self) -> bool {
        if self.capacity == MAX_CAPACITY {
            return false;
        }
        self.capacity *= 2;
        self.mem.resize(self.capacity, 0);
        true
    }

    fn take_memory(&mut self, pool: &mut Pool) {
        if self.mem.is_empty() {
            self.mem = pool.take(self.capacity);
        }
    }

    /// Gives the memory back to the pool if the buffer is empty. A quiet
    /// connection then costs nothing but this struct; its capacity is
    /// remembered for when it is busy again.
    pub fn release(&mut self, pool: &mut Pool) {
        if self.is_empty() && !self.mem.is_empty() {
            pool.give(mem::take(&mut self.mem));
        }
    }
}
// ANCHOR_END: buf

// ANCHOR: pool
/// Buffers not in use, by size. A connection takes one when it has bytes to
/// keep and gives it back once they are gone, so a buffer costs memory only
/// while it is busy, and busy connections reuse warm memory instead of
/// calling the allocator on every event.
#[derive(Default)]
pub struct Pool {
    /// One free list per size: 16, 32, 64, 128 and 256 KiB.
    free: [Vec<Vec<u8>>; SIZES],
    bytes: usize,
}

const SIZES: usize = (MAX_CAPACITY / MIN_CAPACITY).trailing_zeros() as usize + 1;
/// Enough for bursts of activity; beyond this, buffers go back to the allocator.
const POOL_MAX_BYTES: usize = 4 << 20;

fn size_class(capacity: usize) -> usize {
    (capacity / MIN_CAPACITY).trailing_zeros() as usize
}

impl Pool {
    fn take(&mut self, capacity: usize) -> Vec<u8> {
        match self.free[size_class(capacity)].pop() {
            Some(buf) => {
                self.bytes -= buf.len();
                buf
            }
            None => vec![0; capacity],
        }
    }

    fn give(&mut self, buf: Vec<u8>) {
        if self.bytes + buf.len() <= POOL_MAX_BYTES {
            self.bytes += buf.len();
            self.free[size_class(buf.len())].push(buf);
        }
    }
}
// ANCHOR_END: pool

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_held_only_while_bytes_are_pending() {
        let mut pool = Pool::default();
        let mut buf = Buf::default();
        assert!(buf.append(b"hello", &mut pool));
        buf.release(&mut pool);
        assert_eq!(buf.data(), b"hello", "pending bytes keep their memory");
        buf.consume(5);
        buf.release(&mut pool);
        assert!(buf.mem.is_empty() && pool.bytes == MIN_CAPACITY);
        assert!(buf.append(b"again", &mut pool));
        assert_eq!(pool.bytes, 0, "the pooled buffer is reused");
    }

    #[test]
    fn consuming_everything_rewinds_and_compaction_keeps_the_rest() {
        let mut pool = Pool::default();
        let mut buf = Buf::default();
        assert!(buf.append(b"abcdef", &mut pool));
        buf.consume(4);
        let spare = buf.unfilled(&mut pool);
        assert_eq!(spare.len(), MIN_CAPACITY - 2);
        spare[..3].copy_from_slice(b"ghi");
        buf.commit(3);
        assert_eq!(buf.data(), b"efghi");
        buf.consume(5);
        assert_eq!(
            buf.unfilled(&mut pool).len(),
            MIN_CAPACITY,
            "empty: room from the front"
        );
    }

    #[test]
    fn a_full_read_grows_the_buffer_up_to_the_cap() {
        let mut pool = Pool::default();
        let mut buf = Buf::default();
        let mut sizes = Vec::new();
        loop {
            let n = buf.unfilled(&mut pool).len();
            if n == 0 {
                break;
            }
            buf.commit(n);
            sizes.push(buf.mem.len());
        }
        assert_eq!(
            sizes,
            [32 << 10, 64 << 10, 128 << 10, 256 << 10, 256 << 10],
            "doubles each time a read fills it, then stays at the cap"
        );
        buf.clear();
        buf.release(&mut pool);
        let mut next = Buf::default();
        assert!(next.append(b"x", &mut pool));
        assert_eq!(next.mem.len(), MIN_CAPACITY, "a new buffer starts small");
        assert_eq!(
            buf.unfilled(&mut pool).len(),
            MAX_CAPACITY,
            "the grown one comes back big"
        );
    }

    #[test]
    fn truncating_keeps_the_front() {
        let mut pool = Pool::default();
        let mut buf = Buf::default();
        assert!(buf.append(b"abcdef", &mut pool));
        buf.consume(1);
        buf.truncate(3);
        assert_eq!(buf.data(), b"bcd");
        buf.truncate(10);
        assert_eq!(buf.data(), b"bcd", "never longer than it was");
    }

    #[test]
    fn appending_stops_at_the_cap() {
        let mut pool = Pool::default();
        let mut buf = Buf::default();
        let reply = [7u8; MAX_FRAME];
        let mut appended = 0;
        while buf.append(&reply, &mut pool) {
            appended += reply.len();
        }
        assert!(appended <= MAX_CAPACITY && appended + reply.len() > MAX_CAPACITY);
        assert_eq!(buf.data().len(), appended);
    }

    #[test]
    fn the_pool_keeps_at_most_its_budget() {
        let mut pool = Pool::default();
        for _ in 0..100 {
            pool.give(vec![0; MAX_CAPACITY]);
        }
        assert_eq!(pool.bytes, POOL_MAX_BYTES);
    }
}
