//! Slabs: a run of slab pages inside a segment, cut into blocks of one size
//! class.
//!
//! A slab has two free lists (the mimalloc idea of sharding):
//! - `free`: the local list, touched only by the thread that owns the slab's
//!   segment, without atomics;
//! - `remote`: blocks freed by other threads, pushed atomically, taken in one
//!   swap by the owner (`collect_remote`).
//!
//! Blocks past `bump` have never been handed out; they are carved lazily so a
//! fresh slab costs nothing until used.
//!
//! While a block is on any free list (a slab list, a remote list or a thread
//! cache), its first word links the list and its second word holds the
//! process-wide [`free_key`]. `free` reads that word to catch double frees;
//! `malloc` clears it before handing the block out.

use core::ptr;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::remote::{Link, RemoteList};
use crate::size_class::{is_block_start, CAPACITY, SLAB_PAGES, STRIDE};

/// A free block as seen by the free lists. Every block is at least 16 bytes.
#[repr(C)]
pub struct Block {
    pub next: *mut Block,
    pub key: u64,
}

// SAFETY: the link is the block's first word; callers hold the block.
unsafe impl Link for Block {
    #[inline]
    unsafe fn get_next(node: *mut Self) -> *mut Self {
        // SAFETY: caller holds `node`, a block of at least 16 bytes.
        unsafe { (*node).next }
    }
    #[inline]
    unsafe fn set_next(node: *mut Self, next: *mut Self) {
        // SAFETY: caller holds `node`, a block of at least 16 bytes.
        unsafe { (*node).next = next }
    }
}

static FREE_KEY: AtomicU64 = AtomicU64::new(0);

/// The value stored in the second word of every free block. Set once at
/// process start (before any block can be freed), random, never zero.
#[inline(always)]
pub fn free_key() -> u64 {
    FREE_KEY.load(Ordering::Relaxed)
}

pub fn init_free_key() {
    if FREE_KEY.load(Ordering::Relaxed) == 0 {
        let k = crate::os::random_u64() | 1;
        let _ = FREE_KEY.compare_exchange(0, k, Ordering::Relaxed, Ordering::Relaxed);
    }
}

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

/// A slab descriptor: the owner's fields fill the first cache line; the
/// remote list, which other threads write, has a line of its own so that
/// their pushes do not slow the owner's refills (false sharing).
#[repr(C, align(64))]
pub struct Slab {
    /// Local free list (owner only).
    pub free: *mut Block,
    /// First byte of block 0.
    pub base: *mut u8,
    /// Blocks not on the local list: in use, in thread caches, or on `remote`.
    pub used: u32,
    /// Blocks on the local list.
    pub free_count: u32,
    /// Blocks `[0, bump)` have been carved.
    pub bump: u32,
    pub capacity: u32,
    pub stride: u32,
    pub class: u8,
    pub pages: u8,
    pub list: SlabList,
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

const _: () = assert!(core::mem::offset_of!(Slab, remote) == 64);

impl Slab {
    /// Start serving `class` from `base` (slab-page aligned).
    pub fn init(&mut self, base: *mut u8, class: usize) {
        self.free = ptr::null_mut();
        self.base = base;
        self.used = 0;
        self.free_count = 0;
        self.bump = 0;
        self.capacity = CAPACITY[class];
        self.stride = STRIDE[class];
        self.class = class as u8;
        self.pages = SLAB_PAGES[class];
        self.list = SlabList::None;
        self.next = ptr::null_mut();
        self.prev = ptr::null_mut();
        debug_assert!(self.remote.is_empty());
    }

    /// Can `pop` succeed without collecting remote frees?
    #[inline]
    pub fn has_local_free(&self) -> bool {
        !self.free.is_null() || self.bump < self.capacity
    }

    /// Take one block for the owner's use (it counts as used), or null.
    #[inline]
    pub fn pop(&mut self) -> *mut Block {
        let b = self.free;
        if !b.is_null() {
            // SAFETY: blocks on the local list are free blocks of this slab.
            self.free = unsafe { (*b).next };
            self.free_count -= 1;
        } else if self.bump < self.capacity {
            // SAFETY: block `bump` lies inside the slab's pages.
            let p = unsafe { self.base.add(self.bump as usize * self.stride as usize) };
            self.bump += 1;
            self.used += 1;
            return p as *mut Block;
        } else {
            return ptr::null_mut();
        }
        self.used += 1;
        b
    }

    /// Return a block to the local list (owner only).
    ///
    /// # Safety
    /// `b` must be a block of this slab that counts as used.
    #[inline]
    pub unsafe fn push_local(&mut self, b: *mut Block) {
        debug_assert!(self.used > 0);
        // SAFETY: the caller hands over a block of this slab.
        unsafe {
            (*b).next = self.free;
            (*b).key = free_key();
        }
        self.free = b;
        self.free_count += 1;
        self.used -= 1;
    }

    /// Take the whole local list at once (owner only): its head and length.
    pub fn take_local_list(&mut self) -> (*mut Block, u32) {
        let r = (self.free, self.free_count);
        self.used += self.free_count;
        self.free = ptr::null_mut();
        self.free_count = 0;
        r
    }

    /// Move every remotely freed block to the local list (owner only).
    /// Returns how many arrived. The chain is walked only when the local list
    /// is not empty (to splice it in front).
    pub fn collect_remote(&mut self) -> u32 {
        let (chain, n) = self.remote.take_all();
        if chain.is_null() {
            return 0;
        }
        let n = n as u32;
        if !self.free.is_null() {
            let mut tail = chain;
            // SAFETY: take_all gave us the whole chain; its blocks belong to
            // this slab and are linked through their first word.
            unsafe {
                while !(*tail).next.is_null() {
                    tail = (*tail).next;
                }
                (*tail).next = self.free;
            }
        }
        self.free = chain;
        self.free_count += n;
        debug_assert!(self.used >= n);
        self.used -= n;
        n
    }

    /// Index of the block starting at `p`, if `p` is exactly a block start
    /// inside the carved part of the slab. Used by checks, not the fast path.
    pub fn block_index(&self, p: usize) -> Option<u32> {
        let off = p.wrapping_sub(self.base as usize);
        is_block_start(self.class as usize, off).then(|| (off / self.stride as usize) as u32)
    }

    /// Debug check of the slab's invariants (owner only).
    #[cfg(any(test, debug_assertions))]
    pub fn check(&self) {
        assert!(self.bump <= self.capacity);
        let mut n = 0u32;
        let mut b = self.free;
        while !b.is_null() {
            let i = self.block_index(b as usize).expect("free block is a block start");
            assert!(i < self.bump, "free block was never carved");
            n += 1;
            assert!(n <= self.bump, "cycle in free list");
            // SAFETY: blocks on the local list are free blocks of this slab.
            b = unsafe { (*b).next };
        }
        assert_eq!(n, self.free_count, "free_count counts the local list");
        assert_eq!(self.used + n, self.bump, "used + free == carved");
    }
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn pop_carves_every_block_once_then_reuses_freed_ones() {
        init_free_key();
        for class in [1, 5, 20, 21, 40, NUM_CLASSES - 1] {
            let mut mem = Vec::new();
            let mut s = slab_over(&mut mem, class);
            let mut got = Vec::new();
            loop {
                let b = s.pop();
                if b.is_null() {
                    break;
                }
                assert_eq!(b as usize % 16, 0);
                got.push(b);
            }
            assert_eq!(got.len(), CAPACITY[class] as usize);
            let mut sorted: Vec<usize> = got.iter().map(|&b| b as usize).collect();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), got.len(), "no block handed out twice");
            s.check();
            for &b in got.iter().rev() {
                // SAFETY: blocks of this slab, in use.
                unsafe { s.push_local(b) };
                // SAFETY: the block is now free; its key word was set.
                assert_eq!(unsafe { (*b).key }, free_key());
            }
            assert_eq!(s.used, 0);
            s.check();
            assert_eq!(s.pop(), got[0]);
        }
    }

    #[test]
    fn remote_frees_come_back_to_the_local_list() {
        init_free_key();
        let mut mem = Vec::new();
        let mut s = slab_over(&mut mem, 3);
        let a = s.pop();
        let b = s.pop();
        let c = s.pop();
        // SAFETY: in-use blocks of this slab handed to the remote list.
        unsafe {
            s.remote.push(a);
            s.remote.push(c);
        }
        assert_eq!(s.collect_remote(), 2);
        assert_eq!(s.used, 1);
        s.check();
        assert_eq!(s.collect_remote(), 0);
        let _ = b;
    }

    #[test]
    fn block_index_rejects_interior_and_tail_pointers() {
        let mut mem = Vec::new();
        let s = slab_over(&mut mem, 3); // 48-byte blocks
        let base = s.base as usize;
        assert_eq!(s.block_index(base), Some(0));
        assert_eq!(s.block_index(base + 48), Some(1));
        assert_eq!(s.block_index(base + 16), None);
        assert_eq!(s.block_index(base + 48 * CAPACITY[3] as usize), None);
    }
}
