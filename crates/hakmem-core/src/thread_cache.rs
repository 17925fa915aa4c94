//! The thread cache: one bin per size class, the free blocks a thread
//! allocates from and frees to without atomics or locks.
//!
//! A bin is a singly linked list of free blocks (links encoded, see
//! `slab`) with a count and a capacity (HAKMEM_TCACHE_*). The cache lives in
//! its thread's heap (`heap.rs`, first field), so that when a thread dies
//! without its exit hook, another thread can still give the blocks back.

use core::ptr;
use core::sync::atomic::{AtomicU32, Ordering};

use crate::config;
use crate::size_class::{is_tiny, CLASS_SLOTS, NUM_CLASSES, STRIDE};
use crate::slab::{corrupted, plausible_link, Block};

#[repr(C)]
pub struct Bin {
    pub head: *mut Block,
    /// Blocks on the list. Only the owner writes it; an atomic (relaxed:
    /// plain moves) because statistics read it from other threads.
    count: AtomicU32,
    pub cap: u32,
}

impl Bin {
    #[inline(always)]
    pub fn count(&self) -> u32 {
        self.count.load(Ordering::Relaxed)
    }

    #[inline(always)]
    pub fn set_count(&self, n: u32) {
        self.count.store(n, Ordering::Relaxed);
    }
}

#[repr(C)]
pub struct ThreadCache {
    pub bins: [Bin; CLASS_SLOTS],
}

impl ThreadCache {
    /// Every bin empty, with capacity 0.
    pub const fn new() -> ThreadCache {
        ThreadCache {
            bins: [const { Bin { head: ptr::null_mut(), count: AtomicU32::new(0), cap: 0 } }; CLASS_SLOTS],
        }
    }

    /// Pop a block of `class`; null when the bin is empty. The block's tag
    /// is cleared (it is no longer free).
    #[inline(always)]
    pub fn pop(&mut self, class: usize) -> *mut Block {
        let bin = &mut self.bins[class];
        let b = bin.head;
        if !b.is_null() {
            // SAFETY: blocks on a bin are free blocks of at least 16 bytes.
            unsafe {
                let next = Block::next(b);
                if !plausible_link(next) {
                    corrupted(b);
                }
                bin.head = next;
                bin.set_count(bin.count() - 1);
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
        let bin = &mut self.bins[class];
        let count = bin.count();
        if count >= bin.cap {
            return false;
        }
        // SAFETY: the caller gives us `b`.
        unsafe {
            (*b).tag = tag;
            Block::set_next(b, bin.head);
        }
        bin.head = b;
        bin.set_count(count + 1);
        true
    }

    /// Cut the bin of `class` down to its `keep` most recently freed blocks
    /// and return the rest as a chain with its length.
    pub fn take_surplus(&mut self, class: usize, keep: u32) -> (*mut Block, u32) {
        let bin = &mut self.bins[class];
        let count = bin.count();
        if count <= keep {
            return (ptr::null_mut(), 0);
        }
        let n = count - keep;
        let chain = if keep == 0 {
            core::mem::replace(&mut bin.head, ptr::null_mut())
        } else {
            let mut cut = bin.head;
            // SAFETY: the bin holds `count > keep` linked free blocks.
            unsafe {
                for _ in 1..keep {
                    cut = Block::next(cut);
                }
                let c = Block::next(cut);
                Block::set_next(cut, ptr::null_mut());
                c
            }
        };
        bin.set_count(keep);
        (chain, n)
    }

    /// Set every bin's capacity from the configuration.
    pub fn apply_capacities(&mut self) {
        for class in 1..NUM_CLASSES {
            self.bins[class].cap = capacity(class);
        }
    }
}

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
