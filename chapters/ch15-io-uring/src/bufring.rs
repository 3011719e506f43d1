// ANCHOR: bufring_head
//! A provided-buffer ring: receive buffers lent to the kernel in advance,
//! which it takes one at a time, only when data arrives.
//!
//! A `recv` submitted with a buffer of its own holds that buffer for as long
//! as it waits, and a quiet connection waits forever: ten thousand of them
//! would pin ten thousand buffers. A `recv` that names a buffer *group*
//! instead holds nothing; when bytes come, the kernel picks the next buffer
//! from this ring, fills it, and says which one in the completion. We read
//! the bytes (or send them straight back: an echo's reply is its request)
//! and hand the buffer back, and the ring goes round.

use std::alloc::{self, Layout};
use std::io;
use std::ptr;
use std::slice;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::{cqueue, IoUring};
use nix::errno::Errno;
// ANCHOR_END: bufring_head

// ANCHOR: bufring
/// A descriptor of the ring, as the kernel reads it (`struct io_uring_buf`).
/// In the first one, the field that would be `resv` is the ring's tail.
#[repr(C)]
struct Entry {
    addr: u64,
    len: u32,
    bid: u16,
    tail: u16,
}

/// The ring: `count` descriptors (address, length, buffer id) that the
/// kernel reads, and `count` buffers of `size` bytes each that it writes.
/// Not all are lent at first: the kernel takes the buffers in turn, each
/// the one given back longest ago, so the fewer go round, the more often
/// the memory it writes is still in the CPU's caches. The ring grows when
/// a receive finds it empty.
///
/// Both live as long as the process: the kernel may use them until the
/// io_uring instance is torn down, which closing its descriptor only starts.
/// Memory that is never freed can never be written after it is freed.
pub struct BufRing {
    entries: *mut Entry,
    buffers: *mut u8,
    count: u16,
    size: u32,
    /// The next free descriptor: ours to fill, the kernel's once published.
    tail: u16,
    /// Buffers lent so far: ids `0..lent`; the others wait until needed.
    lent: u16,
    /// Buffers taken out of the ring and not given back yet.
    taken: u16,
}

/// How many buffers are lent at first: enough for the receives of a turn
/// with a few dozen busy connections.
const FIRST_LENT: u16 = 32;

/// A buffer the kernel filled and took out of the ring: ours, and the
/// kernel's no more, until it goes back with [`BufRing::give_back`].
#[must_use = "a buffer not given back is lost to the ring"]
pub struct Filled {
    id: u16,
    /// Its bytes not yet consumed: `start..end`.
    start: u32,
    end: u32,
}

impl Filled {
    pub fn len(&self) -> usize {
        (self.end - self.start) as usize
    }

    /// Drops `n` bytes from the front.
    pub fn consume(&mut self, n: usize) {
        self.start += n.min(self.len()) as u32;
    }

    /// Keeps only the first `len` bytes.
    pub fn truncate(&mut self, len: usize) {
        self.end = self.start + len.min(self.len()) as u32;
    }
}

impl BufRing {
    /// Allocates the ring and its buffers, registers them with `ring` as
    /// buffer group `group`, and lends the kernel every buffer.
    pub fn new(ring: &IoUring, group: u16, count: u16, size: u32) -> io::Result<BufRing> {
        assert!(count.is_power_of_two(), "the kernel wants 2^n entries");
        // The kernel wants the descriptors page-aligned.
        let layout = Layout::array::<Entry>(usize::from(count))
            .and_then(|l| l.align_to(4096))
            .unwrap();
        // SAFETY: the layout has a non-zero size. Zeroed memory is a valid
        // ring: every descriptor empty, the tail 0.
        let entries = unsafe { alloc::alloc_zeroed(layout) }.cast::<Entry>();
        if entries.is_null() {
            alloc::handle_alloc_error(layout);
        }
        // Zeroed pages from the allocator are mapped lazily: a buffer costs
        // memory only once the kernel has written into it.
        let buffers = vec![0u8; usize::from(count) * size as usize].leak();
        let mut bufring = BufRing {
            entries,
            buffers: buffers.as_mut_ptr(),
            count,
            size,
            tail: 0,
            lent: 0,
            taken: 0,
        };
        // SAFETY: `entries` points to `count` descriptors, page-aligned, that
        // live for the rest of the process (never freed, see above).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(entries as u64, count, group, 0)?;
        }
        bufring.lend_more(FIRST_LENT.min(count));
        Ok(bufring)
    }

    /// What a receive brought, from its completion's result and flags:
    /// bytes, in the buffer the flags name, now ours; EOF (no bytes); or an
    /// error.
    pub fn take(
        &mut self,
        result: Result<u32, Errno>,
        flags: u32,
    ) -> Result<Option<Filled>, Errno> {
        let filled = cqueue::buffer_select(flags).map(|id| {
            assert!(id < self.count, "the kernel names a buffer we never lent");
            self.taken += 1;
            let end = result.map_or(0, |n| n.min(self.size));
            Filled { id, start: 0, end }
        });
        match (result, filled) {
            (Ok(n), Some(filled)) if n > 0 => Ok(Some(filled)),
            (result, filled) => {
                if let Some(filled) = filled {
                    self.give_back(filled);
                }
                result.map(|_| None)
            }
        }
    }

    /// The bytes of a buffer we hold.
    pub fn bytes(&self, filled: &Filled) -> &[u8] {
        // SAFETY: buffer `id` is `size` bytes inside `buffers`, which lives
        // for ever, and `start..end` lies within it. The completion that
        // named it took it out of the ring: the kernel writes into it no
        // more until we give it back, which takes the `Filled` away.
        unsafe {
            let buffer = self.buffer(filled.id).add(filled.start as usize);
            slice::from_raw_parts(buffer, filled.len())
        }
    }

    /// Lends a buffer to the kernel again.
    pub fn give_back(&mut self, filled: Filled) {
        self.taken -= 1;
        self.publish(filled.id);
    }

    /// Gives back the buffer a completion's flags name, if any, unread.
    pub fn discard(&mut self, flags: u32) {
        if let Ok(Some(filled)) = self.take(Ok(1), flags) {
            self.give_back(filled);
        }
    }

    /// True while at most half the buffers lent are held: one more may be
    /// kept a while (until its send completes) without leaving receives short.
    pub fn can_keep(&self) -> bool {
        self.taken <= self.lent / 2
    }

    /// A receive found no buffer: lends the kernel twice as many, while
    /// there are more. Returns false if all were lent already.
    pub fn grow(&mut self) -> bool {
        let more = self.lent.min(self.count - self.lent);
        self.lend_more(more);
        more > 0
    }

    fn lend_more(&mut self, n: u16) {
        for id in self.lent..self.lent + n {
            self.publish(id);
        }
        self.lent += n;
    }

    fn buffer(&self, id: u16) -> *mut u8 {
        // SAFETY: id < count, so the offset stays inside `buffers`.
        unsafe { self.buffers.add(usize::from(id) * self.size as usize) }
    }

    /// Writes buffer `id` into the next free descriptor and publishes it.
    ///
    /// Through raw pointers, one field at a time, never a `&mut Entry`: the
    /// first descriptor holds the tail, which the kernel reads whenever it
    /// likes, and a `&mut` would claim that no one else looks at it.
    fn publish(&mut self, id: u16) {
        let slot = usize::from(self.tail & (self.count - 1));
        // SAFETY: the slot is one of our `count` descriptors, and it is free:
        // the kernel consumes descriptors in order and we never hand out
        // more than `count` buffers, so it has moved past this one, and
        // reads none of these three fields until the tail says so.
        unsafe {
            let entry = self.entries.add(slot);
            ptr::addr_of_mut!((*entry).addr).write(self.buffer(id) as u64);
            ptr::addr_of_mut!((*entry).len).write(self.size);
            ptr::addr_of_mut!((*entry).bid).write(id);
        }
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the tail is a u16 inside the first descriptor, which lives
        // for ever, aligned for an atomic; the kernel only reads it. The
        // release store makes the descriptor written above visible before
        // the new tail is.
        let tail = unsafe { AtomicU16::from_ptr(ptr::addr_of_mut!((*self.entries).tail)) };
        tail.store(self.tail, Ordering::Release);
    }
}

// The layout the kernel reads: 16 bytes, the tail in the last two.
const _: () =
    assert!(std::mem::size_of::<Entry>() == 16 && std::mem::offset_of!(Entry, tail) == 14);
// ANCHOR_END: bufring
