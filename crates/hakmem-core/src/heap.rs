//! Thread heaps: the slabs and segments one thread owns, and the slow paths
//! that move blocks between slabs and the thread cache.
//!
//! ```text
//! refill(class)             one block + a batch for the thread cache
//!   slab_with_free(class)   available list -> remote frees -> full list scan
//!     new_slab(class)       own segments -> adopt abandoned -> new segment
//! free_chain(blocks)        a thread-cache flush: local slab or remote list
//!   free_local(slab, b)     owner: push; an emptied slab waits for collect
//!   free_remote(b)          not owner: atomic push to the slab's remote list
//! collect()                 every COLLECT_EVERY slow paths: drain remote
//!                           lists, release empty slabs, purge aged pages
//! teardown()                thread exit: release what is empty, abandon the rest
//! ```
//!
//! Only the heap's own thread calls these (the orphan heap is behind a lock),
//! so nothing here is atomic except segment ownership and remote lists.

use core::ptr;
use core::sync::atomic::Ordering;

use crate::config;
use crate::list::{Linked, Queue};
use crate::os;
use crate::segment::{self, Owner, Segment, PAGES};
use crate::size_class::NUM_CLASSES;
use crate::slab::{free_key, Block, Slab, SlabList};
use crate::stats::{self, STATS};
use crate::sync::Lock;

/// Full slabs looked at for remote frees before a new slab is made.
const FULL_SCAN: usize = 8;
/// Abandoned segments adopted by one `new_slab` call at most.
const ADOPT_MAX: usize = 4;
/// Slow-path events between two `collect` passes.
const COLLECT_EVERY: u32 = 256;

// SAFETY: `next` and `prev` are distinct fields.
unsafe impl Linked for Slab {
    unsafe fn links(p: *mut Self) -> (*mut *mut Self, *mut *mut Self) {
        // SAFETY: `p` is valid.
        unsafe { (&raw mut (*p).next, &raw mut (*p).prev) }
    }
}

// SAFETY: `next` and `prev` are distinct fields.
unsafe impl Linked for Segment {
    unsafe fn links(p: *mut Self) -> (*mut *mut Self, *mut *mut Self) {
        // SAFETY: `p` is valid.
        unsafe { (&raw mut (*p).next, &raw mut (*p).prev) }
    }
}

struct ClassSlabs {
    available: Queue<Slab>,
    full: Queue<Slab>,
}

pub struct Heap {
    classes: [ClassSlabs; NUM_CLASSES],
    /// Segments this heap owns; those with free pages first.
    segments: Queue<Segment>,
    /// Free slab memory not yet given back to the OS.
    dirty_bytes: usize,
    /// The purge epoch at which this heap last aged its segments.
    epoch: u64,
    ticks: u32,
    /// Link in the heap pool's free list.
    pool_next: *mut Heap,
}

// SAFETY: a heap is used by one thread at a time (its owner, or the holder of
// the orphan lock); the pointers it holds are to memory hakmem owns.
unsafe impl Send for Heap {}

/// The slab a block of a live slab belongs to.
///
/// # Safety
/// `b` must be a block of a live slab.
#[inline]
pub unsafe fn slab_of(b: *mut Block) -> *mut Slab {
    let seg = Segment::of(b as usize);
    // SAFETY: a live block's segment is mapped and its page entry is set.
    unsafe {
        let info = (*seg).page_info[Segment::page_index(b as usize)].load(Ordering::Relaxed);
        &raw mut (*seg).slabs[(info >> 8) as usize]
    }
}

/// Hand a block to its slab's owner through the slab's remote list.
///
/// # Safety
/// `b` is a live block the caller gives up.
pub unsafe fn free_remote(b: *mut Block) {
    // SAFETY: forwarded contract.
    unsafe { free_remote_chain(b, b, 1, slab_of(b)) }
}

/// # Safety
/// `first ..= last` is a chain of `n` live blocks of `slab` the caller gives up.
unsafe fn free_remote_chain(first: *mut Block, last: *mut Block, n: usize, slab: *mut Slab) {
    stats::count(&STATS.remote_frees);
    // SAFETY: the slab is live while it has used blocks (these); the remote
    // list accepts pushes from any thread; a slab has at most 4096 blocks.
    unsafe {
        (*last).key = free_key();
        (*slab).remote.push_chain(first, last, n);
    }
}

impl Heap {
    pub const fn new() -> Heap {
        Heap {
            classes: [const { ClassSlabs { available: Queue::new(), full: Queue::new() } }; NUM_CLASSES],
            segments: Queue::new(),
            dirty_bytes: 0,
            epoch: 0,
            ticks: 0,
            pool_next: ptr::null_mut(),
        }
    }

    /// This heap's identity in segment headers.
    fn owner_id(&mut self) -> *mut Owner {
        (self as *mut Heap).cast()
    }

    fn purge_limit() -> usize {
        config::get(config::PURGE_KB).saturating_mul(1024)
    }

    /// One block of `class` for the caller, plus a chain of up to `want` more
    /// (null-terminated) for the thread cache; a slab's whole local list is
    /// taken at once when it holds at most `2 * want` blocks.
    /// Returns `(block, chain, chain_len)`; block is null when out of memory.
    pub fn refill(&mut self, class: usize, want: u32) -> (*mut Block, *mut Block, u32) {
        stats::count(&STATS.refills);
        self.tick();
        let slab = self.slab_with_free(class);
        if slab.is_null() {
            return (ptr::null_mut(), ptr::null_mut(), 0);
        }
        // SAFETY: the heap owns `slab`; only this thread touches its local part.
        unsafe {
            let s = &mut *slab;
            let first = s.pop();
            debug_assert!(!first.is_null());
            let (mut head, mut n) = (ptr::null_mut(), 0);
            if want > 0 && s.free_count <= 2 * want {
                (head, n) = s.take_local_list();
            }
            // Top up from never-carved blocks, then from remote frees,
            // keeping carved blocks in address order ahead of the list.
            let mut top: *mut Block = ptr::null_mut();
            let mut tail: *mut Block = ptr::null_mut();
            while n < want {
                let b = s.pop();
                if b.is_null() {
                    if s.collect_remote() == 0 {
                        break;
                    }
                    continue;
                }
                // Every block in a thread cache carries the key (a carved
                // block does not have it yet).
                (*b).key = free_key();
                if tail.is_null() {
                    top = b;
                } else {
                    (*tail).next = b;
                }
                tail = b;
                n += 1;
            }
            if !tail.is_null() {
                (*tail).next = head;
                head = top;
            }
            if !s.has_local_free() && s.remote.is_empty() {
                self.move_to(slab, SlabList::Full);
            }
            (first, head, n)
        }
    }

    /// A slab of `class` with a free block, or null when out of memory.
    fn slab_with_free(&mut self, class: usize) -> *mut Slab {
        // SAFETY: every slab on this heap's lists is owned by this heap.
        unsafe {
            loop {
                let s = self.classes[class].available.head;
                if s.is_null() {
                    break;
                }
                if (*s).has_local_free() || (*s).collect_remote() > 0 {
                    return s;
                }
                self.move_to(s, SlabList::Full);
            }
            for _ in 0..FULL_SCAN {
                let s = self.classes[class].full.head;
                if s.is_null() {
                    break;
                }
                if (*s).collect_remote() > 0 {
                    self.move_to(s, SlabList::Available);
                    return s;
                }
                if s == self.classes[class].full.tail {
                    break;
                }
                self.classes[class].full.remove(s);
                self.classes[class].full.push_back(s);
            }
        }
        self.new_slab(class)
    }

    /// Move an owned slab to list `to` of its class.
    ///
    /// # Safety
    /// The heap owns `s`.
    unsafe fn move_to(&mut self, s: *mut Slab, to: SlabList) {
        // SAFETY: the heap owns `s`; its `list` says which queue holds it.
        unsafe {
            self.unlink(s);
            let c = &mut self.classes[(*s).class as usize];
            match to {
                SlabList::Available => c.available.push_back(s),
                SlabList::Full => c.full.push_back(s),
                SlabList::None => {}
            }
            (*s).list = to;
        }
    }

    /// # Safety
    /// The heap owns `s`.
    unsafe fn unlink(&mut self, s: *mut Slab) {
        // SAFETY: `s.list` names the queue it is on.
        unsafe {
            let c = &mut self.classes[(*s).class as usize];
            match (*s).list {
                SlabList::Available => c.available.remove(s),
                SlabList::Full => c.full.remove(s),
                SlabList::None => {}
            }
            (*s).list = SlabList::None;
        }
    }

    /// A fresh slab of `class` on the available list, or null (out of memory).
    fn new_slab(&mut self, class: usize) -> *mut Slab {
        let me = self.owner_id();
        let mut adopted = 0;
        loop {
            // SAFETY: segments on our queue are owned by this heap.
            unsafe {
                let mut seg = self.segments.head;
                while !seg.is_null() && (*seg).free_pages != 0 {
                    let next = Queue::next(seg);
                    if let Some((slab, dirty)) = (*seg).alloc_slab(class) {
                        let slab: *mut Slab = slab;
                        self.dirty_bytes = self.dirty_bytes.saturating_sub(dirty);
                        if (*seg).free_pages == 0 {
                            self.segments.remove(seg);
                            self.segments.push_back(seg);
                        }
                        self.classes[class].available.push_front(slab);
                        (*slab).list = SlabList::Available;
                        return slab;
                    }
                    seg = next;
                }
            }
            if adopted < ADOPT_MAX {
                let seg = segment::adopt(me);
                if !seg.is_null() {
                    adopted += 1;
                    // SAFETY: adopt made this heap the segment's owner.
                    unsafe { self.take_adopted(seg) };
                    // A partly used slab of this class came with it: use it
                    // rather than carve a new one.
                    let s = self.classes[class].available.head;
                    if !s.is_null() {
                        return s;
                    }
                    continue;
                }
            }
            let seg = segment::acquire();
            if seg.is_null() {
                return ptr::null_mut();
            }
            // SAFETY: acquire gave us an unowned, empty segment.
            unsafe {
                (*seg).owner.store(me, Ordering::Relaxed);
                self.dirty_bytes += (*seg).dirty_bytes();
                self.segments.push_front(seg);
            }
        }
    }

    /// Rebuild this heap's lists from an adopted segment's slabs.
    ///
    /// # Safety
    /// This heap just became the owner of `seg`.
    unsafe fn take_adopted(&mut self, seg: *mut Segment) {
        // SAFETY: we own the segment now; its slab descriptors are consistent
        // (the previous owner left them so before abandoning it).
        unsafe {
            let sg = &mut *seg;
            self.dirty_bytes += sg.dirty_bytes();
            let mut i = 1;
            while i < PAGES {
                let Some(slab) = sg.slab_at(i) else {
                    i += 1;
                    continue;
                };
                let n = slab.pages as usize;
                slab.collect_remote();
                slab.list = SlabList::None;
                if slab.used == 0 {
                    self.dirty_bytes += sg.release_slab(i);
                } else {
                    let to = if slab.has_local_free() { SlabList::Available } else { SlabList::Full };
                    let s: *mut Slab = slab;
                    self.move_to(s, to);
                }
                i += n;
            }
            if sg.free_pages != 0 {
                self.segments.push_front(seg);
            } else {
                self.segments.push_back(seg);
            }
        }
        self.maybe_purge();
    }

    /// Free a chain of `n` blocks (a thread-cache flush). Blocks of this
    /// heap's slabs go to their local lists, others to their owners' remote
    /// lists, consecutive blocks of one slab in one push.
    ///
    /// # Safety
    /// The chain holds `n` live blocks the caller gives up, linked through
    /// their first word, each but maybe the first keyed with [`free_key`].
    pub unsafe fn free_chain(&mut self, mut b: *mut Block, n: u32) {
        stats::count(&STATS.flushes);
        self.tick();
        let me = self.owner_id();
        // The run of consecutive blocks of one foreign slab: first, last, length, slab.
        let mut batch: (*mut Block, *mut Block, usize, *mut Slab) =
            (ptr::null_mut(), ptr::null_mut(), 0, ptr::null_mut());
        // SAFETY: each block is live until handed to a slab or remote list;
        // `next` is read before that.
        unsafe {
            for _ in 0..n {
                let next = (*b).next;
                let slab = slab_of(b);
                if (*Segment::of(b as usize)).owner.load(Ordering::Relaxed) == me {
                    self.free_local(slab, b);
                } else if slab == batch.3 && (*batch.1).next == b {
                    // Already linked to the run's last block (nothing went
                    // local in between) and keyed: every block in a thread
                    // cache carries the key.
                    debug_assert!((*b).key == free_key());
                    batch.1 = b;
                    batch.2 += 1;
                } else {
                    if !batch.0.is_null() {
                        free_remote_chain(batch.0, batch.1, batch.2, batch.3);
                    }
                    (*b).key = free_key();
                    batch = (b, b, 1, slab);
                }
                b = next;
            }
            if !batch.0.is_null() {
                free_remote_chain(batch.0, batch.1, batch.2, batch.3);
            }
        }
    }

    /// Free one block, wherever it belongs.
    ///
    /// # Safety
    /// `b` is a live block the caller gives up.
    pub unsafe fn free_block(&mut self, b: *mut Block) {
        // SAFETY: forwarded; a one-block chain.
        unsafe { self.free_chain(b, 1) }
    }

    /// # Safety
    /// The heap owns `slab`, and `b` is one of its used blocks.
    unsafe fn free_local(&mut self, slab: *mut Slab, b: *mut Block) {
        // SAFETY: owner access to the slab's local part.
        unsafe {
            (*slab).push_local(b);
            // A full slab has room again; an emptied one goes to the back of
            // its class, so partly used slabs fill up first, and is released
            // by the next `collect` if still empty then (a slab emptied and
            // refilled in a moment is not released, recreated and refaulted).
            if (*slab).used == 0 || (*slab).list == SlabList::Full {
                self.move_to(slab, SlabList::Available);
            }
        }
    }

    /// Give an empty slab's pages back to its segment, and an empty segment
    /// back to the system.
    ///
    /// # Safety
    /// The heap owns `slab`, which has no used block.
    unsafe fn release_slab(&mut self, slab: *mut Slab) {
        // SAFETY: owner access; the slab and its segment stay mapped until
        // `segment::release`, after which neither is touched.
        unsafe {
            self.unlink(slab);
            let seg = Segment::of(slab as usize);
            let was_full = (*seg).free_pages == 0;
            let idx = (*seg).slab_index(slab);
            self.dirty_bytes += (*seg).release_slab(idx);
            if (*seg).live_slabs == 0 && self.segments.head != self.segments.tail {
                self.segments.remove(seg);
                self.dirty_bytes = self.dirty_bytes.saturating_sub((*seg).dirty_bytes());
                segment::release(seg);
            } else if was_full {
                self.segments.remove(seg);
                self.segments.push_front(seg);
            }
        }
        self.maybe_purge();
    }

    /// Decay: free pages unused for at least HAKMEM_PURGE_DELAY_MS (two
    /// epochs of the global purge clock) go back to the OS; pages reused
    /// sooner never pay for a purge and a refault. Over HAKMEM_PURGE_KB,
    /// dirty pages go back at once until half of it remains.
    fn maybe_purge(&mut self) {
        if self.dirty_bytes == 0 {
            return;
        }
        let limit = Self::purge_limit();
        if self.dirty_bytes > limit {
            // Down to half the cap: the oldest free pages first (those of the
            // segments' last snapshots), then, if that is not enough, all.
            for oldest in [true, false] {
                let mut seg = self.segments.head;
                while !seg.is_null() && self.dirty_bytes > limit / 2 {
                    // SAFETY: segments on our queue are owned by this heap.
                    unsafe {
                        let n = if oldest { (*seg).purge_oldest() } else { (*seg).purge() };
                        self.dirty_bytes = self.dirty_bytes.saturating_sub(n);
                        seg = Queue::next(seg);
                    }
                }
            }
            return;
        }
        let e = segment::purge_epoch();
        if e == self.epoch {
            return;
        }
        self.epoch = e;
        let mut seg = self.segments.head;
        while !seg.is_null() {
            // SAFETY: segments on our queue are owned by this heap.
            unsafe {
                self.dirty_bytes = self.dirty_bytes.saturating_sub((*seg).age(e));
                seg = Queue::next(seg);
            }
        }
    }

    /// Give all dirty free slab pages back to the OS.
    pub fn purge(&mut self) {
        let mut seg = self.segments.head;
        while !seg.is_null() {
            // SAFETY: segments on our queue are owned by this heap.
            unsafe {
                if (*seg).dirty_pages != 0 {
                    (*seg).purge();
                }
                seg = Queue::next(seg);
            }
        }
        self.dirty_bytes = 0;
    }

    fn tick(&mut self) {
        self.ticks += 1;
        if self.ticks >= COLLECT_EVERY {
            self.ticks = 0;
            self.collect(false);
        }
    }

    /// Drain every slab's remote list and release empty slabs (all of them
    /// when `all`, else all but one per class), then purge if over the limit.
    pub fn collect(&mut self, all: bool) {
        for class in 1..NUM_CLASSES {
            let mut kept_empty = all;
            for full in [false, true] {
                let c = &self.classes[class];
                let mut s = if full { c.full.head } else { c.available.head };
                while !s.is_null() {
                    // SAFETY: slabs on our lists are owned by this heap; the
                    // next pointer is read before `s` may be released.
                    unsafe {
                        let next = Queue::next(s);
                        let got = (*s).collect_remote();
                        if (*s).used == 0 {
                            if kept_empty {
                                self.release_slab(s);
                            } else {
                                kept_empty = true;
                                self.move_to(s, SlabList::Available);
                            }
                        } else if got > 0 && full {
                            self.move_to(s, SlabList::Available);
                        }
                        s = next;
                    }
                }
            }
        }
        self.maybe_purge();
    }

    /// The thread is exiting and its cache is flushed: release what is empty,
    /// give the rest to the abandoned list for another heap to adopt. Dirty
    /// pages go along (the cache or the adopter accounts for them), so a
    /// short-lived thread costs no purge.
    pub fn teardown(&mut self) {
        self.collect(true);
        loop {
            let seg = self.segments.head;
            if seg.is_null() {
                break;
            }
            // SAFETY: we own the segment and give it up.
            unsafe {
                self.segments.remove(seg);
                if (*seg).live_slabs == 0 {
                    segment::release(seg);
                } else {
                    segment::abandon(seg);
                }
            }
        }
        for c in self.classes.iter_mut() {
            *c = ClassSlabs { available: Queue::new(), full: Queue::new() };
        }
        self.dirty_bytes = 0;
    }

    /// Check every owned segment and slab (tests and debug builds).
    #[cfg(any(test, debug_assertions))]
    pub fn check(&mut self) {
        let me = self.owner_id();
        let mut seg = self.segments.head;
        let mut seen_full = false;
        while !seg.is_null() {
            // SAFETY: our segments are mapped and owned by us.
            unsafe {
                assert_eq!((*seg).owner.load(Ordering::Relaxed), me);
                if (*seg).free_pages == 0 {
                    seen_full = true;
                } else {
                    assert!(!seen_full, "segments with free pages come first");
                }
                (*seg).check();
                seg = Queue::next(seg);
            }
        }
    }
}

impl Default for Heap {
    fn default() -> Self {
        Self::new()
    }
}

/// Heaps come from mmap'ed pages and are recycled, never unmapped.
struct HeapPool {
    free: *mut Heap,
    bump: *mut u8,
    end: *mut u8,
}

// SAFETY: only accessed under the pool lock.
unsafe impl Send for HeapPool {}

static POOL: Lock<HeapPool> =
    Lock::new(HeapPool { free: ptr::null_mut(), bump: ptr::null_mut(), end: ptr::null_mut() });

const POOL_REFILL: usize = 256 * 1024;

/// A fresh heap for a new thread, or null when out of memory.
pub fn create() -> *mut Heap {
    let mut pool = POOL.lock();
    let mut h = pool.free;
    if !h.is_null() {
        // SAFETY: pooled heaps are valid and linked through `pool_next`.
        pool.free = unsafe { (*h).pool_next };
    } else {
        let size = core::mem::size_of::<Heap>().next_multiple_of(64);
        if pool.bump.is_null() || (pool.end as usize - pool.bump as usize) < size {
            let p = os::map(POOL_REFILL);
            if p.is_null() {
                return ptr::null_mut();
            }
            pool.bump = p;
            // SAFETY: end of the mapping just made.
            pool.end = unsafe { p.add(POOL_REFILL) };
        }
        h = pool.bump as *mut Heap;
        // SAFETY: `size` bytes remain before `end`.
        pool.bump = unsafe { pool.bump.add(size) };
    }
    drop(pool);
    // SAFETY: `h` is heap-sized, aligned memory that nobody else uses.
    unsafe { h.write(Heap::new()) };
    h
}

/// Return a torn-down heap to the pool.
///
/// # Safety
/// `h` came from [`create`], was torn down, and is no longer used.
pub unsafe fn destroy(h: *mut Heap) {
    let mut pool = POOL.lock();
    // SAFETY: the caller gives the heap up.
    unsafe { (*h).pool_next = pool.free };
    pool.free = h;
}

/// The heap used by threads whose own heap is gone (malloc from a late
/// thread-exit destructor), one at a time.
pub static ORPHAN: Lock<Heap> = Lock::new(Heap::new());

pub fn locks() -> [&'static crate::sync::RawLock; 2] {
    [POOL.raw(), ORPHAN.raw()]
}
