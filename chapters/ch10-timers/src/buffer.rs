//! Connection buffers that hold memory only while they hold bytes.

use std::mem;

use common::frame::MAX_FRAME;

/// Size of every connection buffer. Big enough for a max frame and then some,
/// so one read brings in many small frames; small enough that two per busy
/// connection stay cheap.
pub const BUF_SIZE: usize = 16 << 10;
const _: () = assert!(BUF_SIZE >= 2 * MAX_FRAME);

/// A fixed-size buffer whose bytes in use are `mem[start..end]`. While it is
/// empty it can give its memory back to the [`Pool`], leaving `mem` empty.
#[derive(Default)]
pub struct Buf {
    mem: Vec<u8>,
    start: usize,
    end: usize,
}

impl Buf {
    pub fn pending(&self) -> &[u8] {
        &self.mem[self.start..self.end]
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Free space after the pending bytes.
    pub fn room(&self) -> usize {
        BUF_SIZE - self.end
    }

    /// Drops `n` bytes from the front of the pending ones.
    pub fn consume(&mut self, n: usize) {
        self.start += n;
        if self.is_empty() {
            // Back to the front for free: there are no bytes to move.
            (self.start, self.end) = (0, 0);
        }
    }

    pub fn append(&mut self, bytes: &[u8], pool: &mut Pool) {
        self.take_memory(pool);
        self.mem[self.end..self.end + bytes.len()].copy_from_slice(bytes);
        self.end += bytes.len();
    }

    /// Moves the pending bytes to the front and returns the free space after
    /// them, to read into. Call [`Buf::filled`] with what was read.
    pub fn compact_and_spare(&mut self, pool: &mut Pool) -> &mut [u8] {
        self.take_memory(pool);
        if self.start > 0 {
            self.mem.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        &mut self.mem[self.end..]
    }

    /// Counts `n` bytes written into the spare space as pending.
    pub fn filled(&mut self, n: usize) {
        self.end += n;
    }

    fn take_memory(&mut self, pool: &mut Pool) {
        if self.mem.is_empty() {
            self.mem = pool.take();
        }
    }

    /// Returns the memory to the pool if no bytes are pending.
    pub fn give_back_memory(&mut self, pool: &mut Pool) {
        if self.is_empty() && !self.mem.is_empty() {
            pool.give(mem::take(&mut self.mem));
        }
    }
}

// ANCHOR: pool
/// Buffers not in use. A connection takes one when it has bytes to keep and
/// gives it back once they are gone, so a buffer costs memory only while it
/// is busy, and busy connections reuse warm memory instead of calling the
/// allocator on every event.
#[derive(Default)]
pub struct Pool(Vec<Vec<u8>>);

/// Enough for bursts of activity; beyond this, buffers go back to the allocator.
const POOL_MAX: usize = 256;

impl Pool {
    fn take(&mut self) -> Vec<u8> {
        self.0.pop().unwrap_or_else(|| vec![0; BUF_SIZE])
    }

    fn give(&mut self, buf: Vec<u8>) {
        if self.0.len() < POOL_MAX {
            self.0.push(buf);
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
        buf.append(b"hello", &mut pool);
        buf.give_back_memory(&mut pool);
        assert_eq!(buf.pending(), b"hello", "pending bytes keep their memory");
        buf.consume(5);
        buf.give_back_memory(&mut pool);
        assert!(buf.mem.is_empty() && pool.0.len() == 1);
        buf.append(b"again", &mut pool);
        assert!(pool.0.is_empty(), "the pooled buffer is reused");
    }

    #[test]
    fn consuming_everything_rewinds_and_compaction_keeps_the_rest() {
        let mut pool = Pool::default();
        let mut buf = Buf::default();
        buf.append(b"abcdef", &mut pool);
        buf.consume(4);
        assert_eq!(
            buf.room(),
            BUF_SIZE - 6,
            "no bytes move before the next read"
        );
        let spare = buf.compact_and_spare(&mut pool);
        assert_eq!(spare.len(), BUF_SIZE - 2);
        spare[..3].copy_from_slice(b"ghi");
        buf.filled(3);
        assert_eq!(buf.pending(), b"efghi");
        buf.consume(5);
        assert_eq!(
            buf.room(),
            BUF_SIZE,
            "an empty buffer starts over at the front"
        );
    }
}
