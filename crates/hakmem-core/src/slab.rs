//! Slabs: a run of slab pages inside a segment, cut into blocks of one size
//! class.
//!
//! A slab has two kinds of free list (the mimalloc idea of sharding):
//! - the local lists, touched only by the owner of the slab's segment (under
//!   its heap's lock), without atomics. There are `LOCAL_LISTS` of them,
//!   which pushes and pops take in turn: a refill that pops many blocks
//!   follows that many independent chains, so the cache misses on links of
//!   blocks freed long ago overlap instead of waiting one after the other;
//! - `remote`: blocks freed by other threads, pushed atomically, taken in one
//!   swap by the owner (`collect_remote`).
//!
//! Blocks past `bump` have never been handed out; they are carved in batches
//! (`carve`), so a fresh slab costs nothing until used. How far a slab is
//! carved is also published in the segment's page table, so that `free` can
//! refuse a block start that was never handed out.
//!
//! A free block, on whatever list (a thread cache, a slab list, a remote
//! list), holds two words:
//! - its link, encoded: `next ^ LINK_KEY`. A use-after-free write of the
//!   link no longer lets the writer choose what `malloc` returns: the decoded
//!   pointer is unpredictable, and the key's low four bits are all ones, so a
//!   written pointer (or any 16-aligned value) decodes to a misaligned one,
//!   which the pops detect;
//! - its tag, `TAG_KEY ^ address`: `free` of a block that carries its tag is
//!   a double free. A use-after-free read shows neither key without the
//!   block's address, and neither is derived from glibc's secrets.
//!
//! Both keys are fresh random values (`getrandom`), set before any block is
//! linked. `malloc` clears the tag word before handing a block out.

use core::ptr;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::config;
use crate::os;
use crate::remote::{Link, RemoteList};
use crate::size_class::{is_block_start, CAPACITY, SLAB_PAGES, STRIDE};

/// A free block as seen by the free lists. Every block is at least 16 bytes.
#[repr(C)]
pub struct Block {
    /// The next block, encoded (see the module comment).
    link: usize,
    /// `TAG_KEY ^ address` while free; 0 once handed out.
    pub tag: u64,
}

/// The two keys, on one cache line that the fast paths read.
#[repr(C, align(64))]
struct Keys {
    link: AtomicUsize,
    tag: AtomicU64,
}

static KEYS: Keys = Keys { link: AtomicUsize::new(0), tag: AtomicU64::new(0) };

/// Low bits forced into the link key: a 16-aligned value written over a link
/// decodes to a pointer with these bits set, which is never a block.
const LINK_KEY_LOW: usize = 0xF;

impl Block {
    /// The next block on the list (null at the end), decoded.
    ///
    /// # Safety
    /// `b` is a free block on a list the caller holds.
    #[inline(always)]
    pub unsafe fn next(b: *mut Block) -> *mut Block {
        // SAFETY: per contract, 16 readable bytes.
        (unsafe { (*b).link } ^ KEYS.link.load(Ordering::Relaxed)) as *mut Block
    }

    /// Link `b` to `next` (encoded).
    ///
    /// # Safety
    /// The caller holds `b`, a block of at least 16 bytes.
    #[inline(always)]
    pub unsafe fn set_next(b: *mut Block, next: *mut Block) {
        // SAFETY: per contract.
        unsafe { (*b).link = next as usize ^ KEYS.link.load(Ordering::Relaxed) }
    }

    /// The tag a free block at `b` carries.
    #[inline(always)]
    pub fn free_tag(b: *const Block) -> u64 {
        KEYS.tag.load(Ordering::Relaxed) ^ b as u64
    }

    /// Mark `b` free (set its tag).
    ///
    /// # Safety
    /// The caller holds `b`, a block of at least 16 bytes.
    #[inline(always)]
    pub unsafe fn mark_free(b: *mut Block) {
        // SAFETY: per contract.
        unsafe { (*b).tag = Self::free_tag(b) }
    }

    /// Does `b` carry its free tag, i.e. is it (most likely) already free?
    ///
    /// # Safety
    /// `b` is a block start of a live slab: 16 readable bytes.
    #[inline(always)]
    pub unsafe fn is_free(b: *const Block) -> bool {
        // SAFETY: per contract.
        unsafe { (*b).tag == Self::free_tag(b) }
    }
}

/// Can `p`, decoded from a link, be a block? Blocks are 16-aligned; a
/// corrupted link decodes to a misaligned pointer (see `LINK_KEY_LOW`).
#[inline(always)]
pub fn plausible_link(p: *mut Block) -> bool {
    p as usize & 15 == 0
}

/// A free list link was found corrupted (written after free): report and
/// abort, like glibc does, rather than hand out memory that is not a block.
#[cold]
#[inline(never)]
pub fn corrupted(at: *const Block) -> ! {
    crate::diag::line(format_args!("free list corrupted at {at:p} (a write after free?); aborting"));
    os::abort()
}

// SAFETY: the link is the block's first word; callers hold the block.
unsafe impl Link for Block {
    #[inline]
    unsafe fn set_next(node: *mut Self, next: *mut Self) {
        // SAFETY: caller holds `node`, a block of at least 16 bytes.
        unsafe { Block::set_next(node, next) }
    }
}

/// Draw the keys (once, before the first block is linked).
pub fn init_keys() {
    if KEYS.tag.load(Ordering::Relaxed) != 0 {
        return;
    }
    let link = os::random_u64() as usize | LINK_KEY_LOW;
    let tag = os::random_u64() | 1;
    if KEYS.link.compare_exchange(0, link, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
        KEYS.tag.store(tag, Ordering::Relaxed);
    }
    while KEYS.tag.load(Ordering::Relaxed) == 0 {
        core::hint::spin_loop();
    }
}

/// Local free lists per slab (see the module comment). Four misses in
/// flight instead of one; more would cost slab descriptor room for little.
pub const LOCAL_LISTS: usize = 4;

/// Which list of its heap a slab is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum SlabList {
    None,
    /// Has free blocks (local, unbumped, or maybe remote).
    Available,
    /// Had none when last looked at; remote frees may have arrived since.
    Full,
}

/// A slab descriptor: the owner's fields fill the first two cache lines;
/// the remote list, which other threads write, has a line of its own so
/// that their pushes do not slow the owner's refills (false sharing).
#[repr(C, align(64))]
pub struct Slab {
    /// Local free lists (owner only), taken in turn.
    free: [*mut Block; LOCAL_LISTS],
    /// The last block of each local list; null when the list is empty or,
    /// for list 0 only, when it is a chain taken from `remote` whose end was
    /// never looked for.
    tail: [*mut Block; LOCAL_LISTS],
    /// First byte of block 0.
    pub base: *mut u8,
    /// Blocks not on the local list: in use, in thread caches, or on `remote`.
    pub used: u32,
    /// Blocks on the local lists.
    pub free_count: u32,
    /// Blocks `[0, bump)` have been carved (since the slab last restarted).
    pub bump: u32,
    /// The highest `bump` ever: blocks below it may have been handed out,
    /// and the segment's page table publishes it (see `restart`).
    pub carved_max: u32,
    pub capacity: u32,
    pub stride: u32,
    pub class: u8,
    pub pages: u8,
    pub list: SlabList,
    /// The local lists hold only blocks other threads freed (taken from
    /// `remote` onto empty lists): cold in this core's cache.
    pub cold: bool,
    /// The local list the next push goes to; pops take the one before, so
    /// the lists give blocks back last in, first out while they are even.
    turn: u8,
    /// Links of the owning heap's per-class list.
    pub next: *mut Slab,
    pub prev: *mut Slab,
    /// Blocks freed by other threads.
    pub remote: CacheLine<RemoteList<Block>>,
}

/// A value alone on its cache line.
#[repr(C, align(64))]
pub struct CacheLine<T>(pub T);

impl<T> core::ops::Deref for CacheLine<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

const _: () = assert!(core::mem::offset_of!(Slab, remote) == 128);

impl Slab {
    /// Start serving `class` from `base` (slab-page aligned).
    pub fn init(&mut self, base: *mut u8, class: usize) {
        self.clear_lists();
        self.base = base;
        self.used = 0;
        self.free_count = 0;
        self.bump = 0;
        self.carved_max = 0;
        self.capacity = CAPACITY[class];
        self.stride = STRIDE[class];
        self.class = class as u8;
        self.pages = SLAB_PAGES[class];
        self.list = SlabList::None;
        self.cold = false;
        self.next = ptr::null_mut();
        self.prev = ptr::null_mut();
        debug_assert!(self.remote.is_empty());
    }

    /// Can `pop` succeed without collecting remote frees?
    #[inline]
    pub fn has_local_free(&self) -> bool {
        self.free_count > 0 || self.bump < self.capacity
    }

    /// Empty local lists (their blocks are accounted for by the caller).
    fn clear_lists(&mut self) {
        self.free = [ptr::null_mut(); LOCAL_LISTS];
        self.tail = [ptr::null_mut(); LOCAL_LISTS];
        self.turn = 0;
    }

    /// Bytes of the slab ever carved: every block handed out lies below.
    #[inline]
    pub fn carved_bytes(&self) -> usize {
        self.carved_max as usize * self.stride as usize
    }

    /// Does `b`, a block start of this slab, lie below the carve point of
    /// its current start? (Past it, blocks are free: see `restart`.)
    #[inline]
    pub fn carved_now(&self, b: *mut Block) -> bool {
        (b as usize - self.base as usize) < self.bump as usize * self.stride as usize
    }

    /// Every block is back on the local list (none used): forget the list
    /// and carve the slab afresh, in address order. Carving writes each
    /// block's link as it goes, where following a list of blocks that other
    /// threads freed waits on a cache miss per block. The published carve
    /// point stays where it was: the blocks past `bump` are free and keep
    /// their free tags, so a double free of one is still reported.
    pub fn restart(&mut self) {
        debug_assert_eq!(self.used, 0);
        self.clear_lists();
        self.free_count = 0;
        self.bump = 0;
        self.cold = false;
    }

    /// Take one block from the local lists for the owner's use (it counts
    /// as used), or null when they are empty. Does not carve. Successive
    /// pops take successive lists, so their link loads do not wait on each
    /// other.
    #[inline]
    pub fn pop(&mut self) -> *mut Block {
        if self.free_count == 0 {
            return ptr::null_mut();
        }
        // The list before `turn`, or the nearest non-empty one before it
        // (lists are uneven after `collect_remote`); one is not empty.
        let mut i = self.turn as usize;
        loop {
            i = (i + LOCAL_LISTS - 1) % LOCAL_LISTS;
            if !self.free[i].is_null() {
                break;
            }
        }
        let b = self.free[i];
        // SAFETY: blocks on the local lists are free blocks of this slab.
        let next = unsafe { Block::next(b) };
        // A written link decodes misaligned (as in the thread cache's pop);
        // HAKMEM_CHECK also requires it to be a handed-out block of this slab.
        if !plausible_link(next) || (config::check_mode() && !next.is_null() && !self.holds(next)) {
            corrupted(b);
        }
        self.free[i] = next;
        if next.is_null() {
            self.tail[i] = ptr::null_mut();
        }
        self.turn = i as u8;
        self.free_count -= 1;
        self.used += 1;
        b
    }

    /// Carve up to `n` fresh blocks (they count as used), linked in address
    /// order and tagged free. Returns the chain's first and last block and
    /// its length (0 when the slab is fully carved). The caller publishes
    /// the new carve point (`Segment::publish_carved`) before handing any
    /// of them out.
    pub fn carve(&mut self, n: u32) -> (*mut Block, *mut Block, u32) {
        let n = n.min(self.capacity - self.bump);
        if n == 0 {
            return (ptr::null_mut(), ptr::null_mut(), 0);
        }
        let stride = self.stride as usize;
        // SAFETY: blocks `bump .. bump + n` lie inside the slab's pages.
        let first = unsafe { self.base.add(self.bump as usize * stride) } as *mut Block;
        let mut b = first;
        for _ in 1..n {
            // SAFETY: as above; each block is at least 16 bytes and ours.
            unsafe {
                let next = (b as *mut u8).add(stride) as *mut Block;
                Block::set_next(b, next);
                Block::mark_free(b);
                b = next;
            }
        }
        // SAFETY: the last block of the run.
        unsafe {
            Block::set_next(b, ptr::null_mut());
            Block::mark_free(b);
        }
        self.bump += n;
        self.carved_max = self.carved_max.max(self.bump);
        self.used += n;
        (first, b, n)
    }

    /// Is `p` a carved block start of this slab?
    #[inline]
    pub fn holds(&self, p: *mut Block) -> bool {
        self.block_index(p as usize).is_some_and(|i| i < self.bump)
    }

    /// Return a block to the local list (owner only).
    ///
    /// # Safety
    /// `b` must be a block of this slab that counts as used.
    #[inline]
    pub unsafe fn push_local(&mut self, b: *mut Block) {
        debug_assert!(self.used > 0);
        let i = self.turn as usize;
        // SAFETY: the caller hands over a block of this slab.
        unsafe {
            Block::set_next(b, self.free[i]);
            Block::mark_free(b);
        }
        if self.free[i].is_null() {
            self.tail[i] = b;
        }
        self.free[i] = b;
        self.turn = ((i + 1) % LOCAL_LISTS) as u8;
        self.free_count += 1;
        self.used -= 1;
        self.cold = false;
    }

    /// Take the local lists at once (owner only), joined into one chain:
    /// its head and length. List 0, whose end may be unknown, goes last;
    /// the others are joined through their tails, without a walk.
    pub fn take_local_list(&mut self) -> (*mut Block, u32) {
        let mut head = self.free[0];
        for i in (1..LOCAL_LISTS).rev() {
            if !self.free[i].is_null() {
                debug_assert!(!self.tail[i].is_null(), "only list 0 may have an unknown end");
                // SAFETY: the tail of a local list is a free block of this slab.
                unsafe { Block::set_next(self.tail[i], head) };
                head = self.free[i];
            }
        }
        let r = (head, self.free_count);
        self.cold = false;
        self.used += self.free_count;
        self.clear_lists();
        self.free_count = 0;
        r
    }

    /// Move every remotely freed block to the local lists (owner only).
    /// Returns how many arrived. Onto an empty list 0 the chain goes as it
    /// is, its end unknown; otherwise it is walked, to splice it in front.
    pub fn collect_remote(&mut self) -> u32 {
        let (chain, n) = self.remote.take_all();
        if chain.is_null() {
            return 0;
        }
        let n = n as u32;
        self.cold = self.free_count == 0;
        if self.free[0].is_null() {
            self.tail[0] = ptr::null_mut();
        } else {
            let mut tail = chain;
            // SAFETY: take_all gave us the whole chain; its blocks belong to
            // this slab and are linked through their first word.
            unsafe {
                for _ in 1..n {
                    let next = Block::next(tail);
                    if !self.holds(next) {
                        corrupted(tail);
                    }
                    tail = next;
                }
                Block::set_next(tail, self.free[0]);
            }
        }
        self.free[0] = chain;
        self.free_count += n;
        debug_assert!(self.used >= n);
        self.used -= n;
        n
    }

    /// Is `b` on the local lists? (HAKMEM_CHECK: a double free whose tag
    /// was overwritten.) Walks them.
    pub fn on_local_list(&self, b: *mut Block) -> bool {
        let mut left = self.free_count;
        for &head in &self.free {
            let mut p = head;
            while !p.is_null() && left > 0 {
                if p == b {
                    return true;
                }
                left -= 1;
                // SAFETY: blocks on the local lists are free blocks of this slab.
                let next = unsafe { Block::next(p) };
                if !next.is_null() && !self.holds(next) {
                    corrupted(p);
                }
                p = next;
            }
        }
        false
    }

    /// Index of the block starting at `p`, if `p` is exactly a block start
    /// inside the slab (carved or not).
    pub fn block_index(&self, p: usize) -> Option<u32> {
        let off = p.wrapping_sub(self.base as usize);
        is_block_start(self.class as usize, off).then(|| (off / self.stride as usize) as u32)
    }

    /// Debug check of the slab's invariants (owner only).
    #[cfg(any(test, debug_assertions))]
    pub fn check(&self) {
        assert!(self.bump <= self.capacity);
        assert!((self.turn as usize) < LOCAL_LISTS);
        let mut n = 0u32;
        for i in 0..LOCAL_LISTS {
            let mut b = self.free[i];
            let mut last = ptr::null_mut();
            while !b.is_null() {
                assert!(self.holds(b), "free block is a carved block start");
                // SAFETY: blocks on the local lists are free blocks of this slab.
                assert!(unsafe { Block::is_free(b) }, "free block carries its tag");
                n += 1;
                assert!(n <= self.bump, "cycle in free list");
                last = b;
                // SAFETY: as above.
                b = unsafe { Block::next(b) };
            }
            if self.tail[i] != last {
                assert!(i == 0 && self.tail[i].is_null(), "tail of local list {i}");
            }
        }
        assert_eq!(n, self.free_count, "free_count counts the local lists");
        assert_eq!(self.used + n, self.bump, "used + free == carved");
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::size_class::{NUM_CLASSES, SLAB_PAGE};

    fn slab_over(mem: &mut Vec<u8>, class: usize) -> Slab {
        mem.resize(SLAB_PAGES[class] as usize * SLAB_PAGE + 16, 0);
        let base = ((mem.as_mut_ptr() as usize + 15) & !15) as *mut u8;
        // SAFETY: Slab is plain data; all-zero is a valid (empty) state.
        let mut s: Slab = unsafe { core::mem::zeroed() };
        s.init(base, class);
        s
    }

    /// The blocks of a chain, following the (encoded) links.
    pub(crate) fn chain(mut b: *mut Block) -> Vec<*mut Block> {
        let mut v = vec![];
        while !b.is_null() {
            v.push(b);
            // SAFETY: a chain of free blocks we hold.
            b = unsafe { Block::next(b) };
        }
        v
    }

    #[test]
    fn carve_hands_out_every_block_once_then_freed_ones_come_back() {
        init_keys();
        for class in [1, 5, 20, 21, 40, NUM_CLASSES - 1] {
            let mut mem = Vec::new();
            let mut s = slab_over(&mut mem, class);
            let mut got = Vec::new();
            loop {
                let (first, last, n) = s.carve(7);
                if n == 0 {
                    break;
                }
                let c = chain(first);
                assert_eq!(c.len(), n as usize);
                assert_eq!(*c.last().unwrap(), last);
                for &b in &c {
                    assert_eq!(b as usize % 16, 0);
                    // SAFETY: carved blocks are tagged free until handed out.
                    assert!(unsafe { Block::is_free(b) });
                }
                got.extend(c);
            }
            assert_eq!(got.len(), CAPACITY[class] as usize);
            assert_eq!(s.carved_bytes(), CAPACITY[class] as usize * STRIDE[class] as usize);
            let mut sorted: Vec<usize> = got.iter().map(|&b| b as usize).collect();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), got.len(), "no block handed out twice");
            s.check();
            for &b in got.iter().rev() {
                // SAFETY: blocks of this slab, in use.
                unsafe { s.push_local(b) };
            }
            assert_eq!(s.used, 0);
            s.check();
            assert_eq!(s.pop(), got[0]);
        }
    }

    #[test]
    fn tags_differ_per_block_and_links_are_not_plain_pointers() {
        init_keys();
        let mut mem = Vec::new();
        let mut s = slab_over(&mut mem, 2);
        let (first, _, n) = s.carve(3);
        let c = chain(first);
        assert_eq!(n, 3);
        // SAFETY: carved free blocks of 32 bytes.
        unsafe {
            assert_ne!((*c[0]).tag, (*c[1]).tag);
            assert_ne!((*c[0]).link, c[1] as usize, "the link is encoded");
            // A pointer written over a link decodes to a misaligned one.
            let first_block: *mut Block = c[0];
            (*first_block).link = c[2] as usize;
            assert!(!plausible_link(Block::next(c[0])));
        }
    }

    #[test]
    fn remote_frees_come_back_to_the_local_list() {
        init_keys();
        let mut mem = Vec::new();
        let mut s = slab_over(&mut mem, 3);
        let (first, _, _) = s.carve(3);
        let c = chain(first);
        // SAFETY: in-use blocks of this slab handed to the remote list.
        unsafe {
            s.push_local(c[1]);
            s.remote.push(c[0]);
            s.remote.push(c[2]);
        }
        assert_eq!(s.collect_remote(), 2);
        assert_eq!(s.used, 0);
        s.check();
        assert_eq!(s.collect_remote(), 0);
    }

    #[test]
    fn block_index_rejects_interior_and_tail_pointers() {
        let mut mem = Vec::new();
        let mut s = slab_over(&mut mem, 3); // 48-byte blocks
        let base = s.base as usize;
        assert_eq!(s.block_index(base), Some(0));
        assert_eq!(s.block_index(base + 48), Some(1));
        assert_eq!(s.block_index(base + 16), None);
        assert_eq!(s.block_index(base + 48 * CAPACITY[3] as usize), None);
        init_keys();
        s.carve(2);
        assert!(s.holds((base + 48) as *mut Block));
        assert!(!s.holds((base + 96) as *mut Block), "not carved yet");
    }
}
