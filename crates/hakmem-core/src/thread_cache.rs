//! The thread cache: one bin per size class, the free blocks a thread
//! allocates from and frees to without atomics or locks.
//!
//! A bin is a singly linked list of free blocks (links encoded, see
//! `slab`) with a capacity (HAKMEM_TCACHE_*) and the room left below it.
//! The fast paths keep only the room: `free` compares it with zero and
//! decrements it in memory, where a count compared with the capacity took
//! a load, a compare, an increment and a store. A full bin gives one part
//! back and sets the other aside, off the list (`overflow`), so that no
//! flush walks the list to find where to cut it. The cache lives in
//! its thread's heap (`heap.rs`, first field), so that when a thread dies
//! without its exit hook, another thread can still give the blocks back.

use core::ptr;
use core::sync::atomic::{AtomicI32, AtomicU32, Ordering};

use crate::config;
use crate::size_class::{
    compute_tiny_lookup, is_tiny, CLASS_MASK, CLASS_SLOTS, NUM_CLASSES, STRIDE, TINY_MAX,
};
use crate::slab::{corrupted, plausible_link, Block};

#[repr(C)]
pub struct Bin {
    pub head: *mut Block,
    /// `cap` minus the blocks on the list; negative when a refill gave the
    /// bin more than its capacity. Only the owner writes it; an atomic
    /// (relaxed: plain moves) because statistics read it from other threads.
    room: AtomicI32,
    /// Relaxed atomic as well: the owner changes it (a bin grows) while
    /// statistics read it. The fast paths never look at it.
    cap: AtomicU32,
}

impl Bin {
    /// Blocks on the list.
    #[inline(always)]
    pub fn count(&self) -> u32 {
        (self.cap() as i32).wrapping_sub(self.room.load(Ordering::Relaxed)).max(0) as u32
    }

    #[inline(always)]
    pub fn set_count(&self, n: u32) {
        self.room.store((self.cap() as i32).wrapping_sub(n as i32), Ordering::Relaxed);
    }

    /// Most blocks the bin keeps before `free` flushes.
    #[inline(always)]
    pub fn cap(&self) -> u32 {
        self.cap.load(Ordering::Relaxed)
    }

    /// Change the capacity, keeping the count.
    pub fn set_cap(&mut self, cap: u32) {
        let n = self.count();
        self.cap.store(cap, Ordering::Relaxed);
        self.set_count(n);
    }
}

/// The older part of a bin, set aside at its last overflow: linked apart
/// from the list the fast paths use, so that the next overflow gives it back
/// without walking the list to find where the halves meet, and an
/// allocation that empties the list takes it whole. Its blocks count in the bin's count; only the slow paths
/// look at it.
#[derive(Clone, Copy)]
struct Held {
    head: *mut Block,
    n: u32,
}

#[repr(C)]
pub struct ThreadCache {
    pub bins: [Bin; CLASS_SLOTS],
    held: [Held; CLASS_SLOTS],
}

impl ThreadCache {
    /// Every bin empty, with capacity 0.
    pub const fn new() -> ThreadCache {
        ThreadCache {
            bins: [const { Bin { head: ptr::null_mut(), room: AtomicI32::new(0), cap: AtomicU32::new(0) } };
                CLASS_SLOTS],
            held: [Held { head: ptr::null_mut(), n: 0 }; CLASS_SLOTS],
        }
    }

    /// Pop a block of `class`; null when the bin is empty. The block's tag
    /// is cleared (it is no longer free).
    #[inline(always)]
    pub fn pop(&mut self, class: usize) -> *mut Block {
        // SAFETY: the offset of a bin.
        unsafe { self.pop_at(bin_offset(class & CLASS_MASK)) }
    }

    /// [`pop`](Self::pop) from the bin at byte offset `offset`.
    ///
    /// # Safety
    /// `offset` is [`bin_offset`] of a class below `CLASS_SLOTS` (it comes
    /// from hakmem's own tables, never from memory a program can write).
    #[inline(always)]
    pub unsafe fn pop_at(&mut self, offset: usize) -> *mut Block {
        debug_assert!(offset <= BIN_OFFSET_MASK && offset % core::mem::size_of::<Bin>() == 0);
        // SAFETY: per contract, the offset of one of the bins.
        let bin = unsafe { &mut *self.bins.as_mut_ptr().byte_add(offset) };
        let b = bin.head;
        if !b.is_null() {
            // SAFETY: blocks on a bin are free blocks of at least 16 bytes.
            unsafe {
                let next = Block::next(b);
                if !plausible_link(next) {
                    corrupted(b);
                }
                // The next pop of this bin reads `next`'s link: start that
                // load now. A block freed long ago is rarely in cache, and the
                // program's next allocations are mostly of other classes,
                // which leaves the load time to arrive. (Never faults.)
                core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(next as *const i8);
                bin.head = next;
                bin.room.store(bin.room.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
                (*b).tag = 0;
            }
        }
        b
    }

    /// Push a freed block; false when the bin is full. `tag` is the block's
    /// free tag, which the caller has computed already.
    ///
    /// # Safety
    /// `b` is a live block of `class` that the caller gives up.
    #[inline(always)]
    pub unsafe fn push(&mut self, b: *mut Block, class: usize, tag: u64) -> bool {
        // SAFETY: forwarded.
        unsafe { self.push_at(b, bin_offset(class), tag) }
    }

    /// [`push`](Self::push) to the bin at byte offset `offset` (see
    /// [`bin_offset`]).
    ///
    /// # Safety
    /// `b` is a live block of the bin's class that the caller gives up.
    #[inline(always)]
    pub unsafe fn push_at(&mut self, b: *mut Block, offset: usize, tag: u64) -> bool {
        // SAFETY: masked, the offset is that of one of the bins.
        let bin = unsafe { &mut *self.bins.as_mut_ptr().byte_add(offset & BIN_OFFSET_MASK) };
        // Two loads of the room: a test and a decrement in memory, no
        // register kept between them.
        if bin.room.load(Ordering::Relaxed) <= 0 {
            return false;
        }
        bin.room.store(bin.room.load(Ordering::Relaxed) - 1, Ordering::Relaxed);
        // SAFETY: the caller gives us `b`.
        unsafe {
            (*b).tag = tag;
            Block::set_next(b, bin.head);
        }
        bin.head = b;
        true
    }

    /// Empty the bin of `class`: its list and the part set aside, each a
    /// chain with its length.
    pub fn take_all(&mut self, class: usize) -> [(*mut Block, u32); 2] {
        let bin = &mut self.bins[class];
        let held = core::mem::replace(&mut self.held[class], Held { head: ptr::null_mut(), n: 0 });
        let list = (core::mem::replace(&mut bin.head, ptr::null_mut()), bin.count().saturating_sub(held.n));
        bin.set_count(0);
        [list, (held.head, held.n)]
    }

    /// The bin of `class` ran empty: make the part set aside its list, and
    /// pop from it. Null when nothing was set aside.
    pub fn pop_held(&mut self, class: usize) -> *mut Block {
        if !self.bins[class].head.is_null() {
            // (Not the case: callers come here when the list is empty.)
            return self.pop(class);
        }
        let held = core::mem::replace(&mut self.held[class], Held { head: ptr::null_mut(), n: 0 });
        if held.n == 0 {
            return ptr::null_mut();
        }
        self.bins[class].head = held.head;
        self.pop(class)
    }

    /// The bin of `class` is full: return a chain to give back with its
    /// length, and set the rest aside, leaving the list empty.
    ///
    /// With nothing set aside (the first overflow since the bin ran empty)
    /// the list is walked and cut at half the capacity: the most recently
    /// freed half goes back when `newest`, else the older half. Otherwise
    /// the bin has not run empty since it set a part aside (running empty
    /// takes it), and the part set aside, the older, goes back while the
    /// list takes its place: no walk. (After the capacity shrank, the part
    /// set aside may fill it alone; the next overflow gives it back.)
    pub fn overflow(&mut self, class: usize, newest: bool) -> (*mut Block, u32) {
        let held = self.held[class];
        if held.n == 0 {
            let keep = self.bins[class].cap() / 2;
            let surplus = self.take_surplus(class, keep, newest);
            let bin = &mut self.bins[class];
            let kept = bin.count();
            self.held[class] = Held { head: core::mem::replace(&mut bin.head, ptr::null_mut()), n: kept };
            return surplus;
        }
        let bin = &mut self.bins[class];
        let n = bin.count().saturating_sub(held.n);
        self.held[class] = Held { head: core::mem::replace(&mut bin.head, ptr::null_mut()), n };
        bin.set_count(n);
        (held.head, held.n)
    }

    /// Cut the list of the bin of `class` (nothing set aside) down to
    /// `keep` blocks and return the rest as a chain with its length: the
    /// earliest freed when `newest` is false, else the most recently freed.
    fn take_surplus(&mut self, class: usize, keep: u32, newest: bool) -> (*mut Block, u32) {
        debug_assert_eq!(self.held[class].n, 0);
        let bin = &mut self.bins[class];
        let count = bin.count();
        if count <= keep {
            return (ptr::null_mut(), 0);
        }
        let n = count - keep;
        let chain = if keep == 0 {
            core::mem::replace(&mut bin.head, ptr::null_mut())
        } else {
            // The block the cut follows: the `keep`th or the `n`th from the top.
            let mut cut = bin.head;
            // SAFETY: the bin holds `count > keep` linked free blocks.
            unsafe {
                for _ in 1..if newest { n } else { keep } {
                    cut = Block::next(cut);
                }
                let rest = Block::next(cut);
                Block::set_next(cut, ptr::null_mut());
                if newest {
                    core::mem::replace(&mut bin.head, rest)
                } else {
                    rest
                }
            }
        };
        bin.set_count(keep);
        (chain, n)
    }

    /// Bytes of blocks the bins may hold beyond their configured capacities.
    pub fn grown_bytes(&self) -> usize {
        (1..NUM_CLASSES)
            .map(|c| self.bins[c].cap().saturating_sub(capacity(c)) as usize * STRIDE[c] as usize)
            .sum()
    }

    /// Set every bin's capacity from the configuration.
    pub fn apply_capacities(&mut self) {
        for class in 1..NUM_CLASSES {
            self.bins[class].set_cap(capacity(class));
        }
    }
}

/// The byte offset of the bin of `class` in the cache. The segment page
/// table keeps it, so that `free` reaches the bin without scaling the class.
pub const fn bin_offset(class: usize) -> usize {
    class * core::mem::size_of::<Bin>()
}

/// The class of the bin at byte offset `offset`.
pub const fn bin_class(offset: usize) -> usize {
    (offset & BIN_OFFSET_MASK) / core::mem::size_of::<Bin>()
}

/// Per `(size + 15) / 16`, the bin offset of a tiny request of that size:
/// `malloc` indexes the cache with it directly.
static TINY_BINS: [u16; TINY_MAX / 16 + 1] = {
    let classes = compute_tiny_lookup();
    let mut t = [0u16; TINY_MAX / 16 + 1];
    let mut i = 0;
    while i < t.len() {
        t[i] = bin_offset(classes[i] as usize) as u16;
        i += 1;
    }
    t
};

/// The bin offset of a tiny request (`size <= TINY_MAX`).
#[inline(always)]
pub fn tiny_bin(size: usize) -> usize {
    debug_assert!(size <= TINY_MAX);
    TINY_BINS[(size + 15) >> 4] as usize
}

/// Masks any value to the offset of one of the bins.
pub const BIN_OFFSET_MASK: usize = (CLASS_SLOTS - 1) * core::mem::size_of::<Bin>();
const _: () = assert!(core::mem::size_of::<Bin>().is_power_of_two());

impl Default for ThreadCache {
    fn default() -> Self {
        Self::new()
    }
}

/// Bytes of blocks one mid-class bin may hold at most.
const MID_CACHE_BYTES: usize = 256 * 1024;

/// Capacity of the bin of `class` from the configuration: tiny classes use
/// HAKMEM_TCACHE_TINY, mid classes HAKMEM_TCACHE_MID bounded to
/// `MID_CACHE_BYTES` of blocks (but at least one block when the flag is
/// non-zero). HAKMEM_CHECK=1 sends every operation to the checked slow
/// paths: capacity 0.
pub fn capacity(class: usize) -> u32 {
    if config::check_mode() {
        return 0;
    }
    if is_tiny(class) {
        config::get(config::TCACHE_TINY) as u32
    } else {
        let flag = config::get(config::TCACHE_MID);
        let by_bytes = (MID_CACHE_BYTES / STRIDE[class] as usize).max(1);
        flag.min(by_bytes) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slab::init_keys;
    use crate::slab::tests::chain;

    /// 32-byte blocks in `mem`, two words each.
    fn blocks(mem: &mut [u128]) -> Vec<*mut Block> {
        (0..mem.len() / 2).map(|i| (&raw mut mem[2 * i]) as *mut Block).collect()
    }

    /// A cache whose bin of `class` has capacity `cap`.
    fn cache_with(class: usize, cap: u32) -> ThreadCache {
        let mut cache = ThreadCache::new();
        cache.bins[class].set_cap(cap);
        cache
    }

    /// Free `bs` in order into the bin of `class`; false when one did not fit.
    fn push_all(cache: &mut ThreadCache, class: usize, bs: &[*mut Block]) -> bool {
        // SAFETY: blocks of the tests' own memory, each freed once.
        bs.iter().all(|&b| unsafe { cache.push(b, class, Block::free_tag(b)) })
    }

    /// `bs` as a bin lists them after they were freed in order.
    fn newest_first(bs: &[*mut Block]) -> Vec<*mut Block> {
        bs.iter().rev().copied().collect()
    }

    #[test]
    fn surplus_is_the_earliest_or_the_latest_freed() {
        init_keys();
        let class = 2;
        for newest in [false, true] {
            let mut mem = vec![0u128; 10 * 2];
            let blocks = blocks(&mut mem);
            let mut cache = cache_with(class, 10);
            assert!(push_all(&mut cache, class, &blocks));
            let (surplus, n) = cache.take_surplus(class, 4, newest);
            assert_eq!(n, 6);
            assert_eq!(cache.bins[class].count(), 4);
            let (got, kept) = (chain(surplus), chain(cache.bins[class].head));
            let (want_got, want_kept) = if newest {
                (newest_first(&blocks[4..]), newest_first(&blocks[..4]))
            } else {
                (newest_first(&blocks[..6]), newest_first(&blocks[6..]))
            };
            assert_eq!(got, want_got, "newest: {newest}");
            assert_eq!(kept, want_kept, "newest: {newest}");
            assert_eq!(cache.take_surplus(class, 4, newest).1, 0, "nothing over the count");
        }
    }

    /// Overflows give back one part and set the other aside, walking the
    /// list only when nothing is set aside; an empty list takes the part set
    /// aside; emptying the bin takes both.
    #[test]
    fn overflows_swap_the_parts_and_an_empty_list_takes_the_held_one() {
        init_keys();
        let class = 2;
        for newest in [false, true] {
            let mut mem = vec![0u128; 15 * 2];
            let b = blocks(&mut mem);
            let mut cache = cache_with(class, 10);
            assert!(push_all(&mut cache, class, &b[..10]));
            assert!(!push_all(&mut cache, class, &b[10..11]), "full");
            // The first overflow cuts the list in halves: one goes back, the
            // other is set aside, and the list is empty.
            let (given, n) = cache.overflow(class, newest);
            let (given_half, aside) = if newest { (&b[5..10], &b[..5]) } else { (&b[..5], &b[5..10]) };
            assert_eq!((chain(given), n), (newest_first(given_half), 5));
            assert!(cache.bins[class].head.is_null());
            assert_eq!(cache.bins[class].count(), 5);
            assert!(push_all(&mut cache, class, &b[10..15]));
            // The next gives back the part set aside and sets the list aside.
            let (given, n) = cache.overflow(class, false);
            assert_eq!((chain(given), n), (newest_first(aside), 5));
            assert_eq!(cache.bins[class].count(), 5);
            // The empty list takes what was set aside.
            assert!(cache.pop(class).is_null());
            let held = newest_first(&b[10..15]);
            assert_eq!(cache.pop_held(class), held[0]);
            assert_eq!(chain(cache.bins[class].head), held[1..]);
            assert_eq!(cache.bins[class].count(), 4);
        }
        // Emptying a bin takes its list and the part set aside.
        let mut mem = vec![0u128; 13 * 2];
        let b = blocks(&mut mem);
        let mut cache = cache_with(class, 10);
        for x in b.chunks(1) {
            if !push_all(&mut cache, class, x) {
                let _ = cache.overflow(class, false);
                assert!(push_all(&mut cache, class, x));
            }
        }
        let [(list, n), (held, m)] = cache.take_all(class);
        assert_eq!((chain(list), n), (newest_first(&b[10..]), 3));
        assert_eq!((chain(held), m), (newest_first(&b[5..10]), 5));
        assert_eq!(cache.bins[class].count(), 0);
        assert!(cache.pop(class).is_null() && cache.pop_held(class).is_null());
    }
}
