//! Thread heaps: the thread cache, slabs and segments one thread owns, and
//! the slow paths that move blocks between slabs and the cache.
//!
//! ```text
//! alloc_slow(class)           bin empty: refill it from a slab
//!   refill(class)             one block + a batch for the bin
//!     slab_with_free(class)   available list -> remote frees -> full list scan
//!       new_slab(class)       own segments -> reclaim abandoned -> new segment
//! free_slow(b, class)         bin full: grow it (grow_bin), or flush half (newest if it cycles)
//!   free_chain(blocks)        each block to its slab: local, or remote list
//! collect_some()              periodic: bounded look at each class's lists, purge
//! collect()                   every slab: remote frees, release empty slabs, purge
//! teardown()                  thread exit: release what is empty, abandon the rest
//! ```
//!
//! A heap's slab and segment state is guarded by its `lock`: its thread takes
//! it around every slow path (uncontended: one atomic exchange each way), so
//! that another thread can do the same work for it when it is idle or gone
//! (`reclaim.rs`: collect an idle heap, reap a dead thread's heap). The thread
//! cache is not under the lock: only the owner's fast paths touch it, and
//! another thread only when the owner is dead.
//!
//! Every heap is registered in `HEAPS` (oldest first), which is how the
//! process reaches memory whose owner is idle or gone.

use core::ptr;
use core::sync::atomic::{AtomicI32, AtomicU64, AtomicUsize, Ordering};

use crate::config;
use crate::list::{Linked, Queue};
use crate::misuse::{self, Misuse};
use crate::os;
use crate::page_map;
use crate::segment::{self, Owner, Purge, Segment, PAGES};
use crate::size_class::{NUM_CLASSES, STRIDE};
use crate::slab::{Block, Slab, SlabList};
use crate::stats::{self, HeapCounters, STATS};
use crate::sync::{Lock, RawLock};
use crate::thread_cache::{self, ThreadCache};

/// Full slabs looked at for remote frees before a new slab is made.
const FULL_SCAN: usize = 8;
/// Abandoned segments visited by one `new_slab` call at most.
const ADOPT_VISITS: usize = 8;
/// Slow-path events between two `collect_some` passes.
const COLLECT_EVERY: u32 = 256;
/// Slabs per class and list a `collect_some` pass looks at (besides the
/// empty ones it releases).
const COLLECT_LOOK: usize = 8;
/// A refill takes a slab's whole local list when it is at most this many
/// times what the bin wants (see `refill`).
const TAKE_WHOLE: u32 = 8;
/// A bin grows up to this many times its configured capacity...
const GROWTH: u32 = 4;
/// ...within this many bytes of grown capacity per thread (`grow_bin`).
const GROWTH_BYTES: usize = 4 << 20;

/// A heap's first refill of a class takes this many blocks (see `batch`).
const FIRST_BATCH: u32 = 4;

// SAFETY: `next` and `prev` are distinct fields.
unsafe impl Linked for Slab {
    unsafe fn links(p: *mut Self) -> (*mut *mut Self, *mut *mut Self) {
        // SAFETY: `p` is valid.
        unsafe { (&raw mut (*p).next, &raw mut (*p).prev) }
    }
}

// SAFETY: `next` and `prev` are distinct fields.
unsafe impl Linked for Heap {
    unsafe fn links(p: *mut Self) -> (*mut *mut Self, *mut *mut Self) {
        // SAFETY: `p` is valid.
        unsafe { (&raw mut (*p).next, &raw mut (*p).prev) }
    }
}

struct ClassSlabs {
    available: Queue<Slab>,
    full: Queue<Slab>,
}

#[repr(C)]
pub struct Heap {
    /// The thread cache. First, so that the fast paths index the bins
    /// straight from the heap pointer.
    pub cache: ThreadCache,
    /// Guards everything below but the registry links.
    lock: RawLock,
    /// Kernel id of the owning thread (0: none).
    tid: AtomicI32,
    /// Purge epoch of the owner's last slow path (how idle it is).
    active_epoch: AtomicU64,
    classes: [ClassSlabs; NUM_CLASSES],
    /// Segments this heap owns; those with free pages first.
    segments: Queue<Segment>,
    /// Free slab memory not yet given back to the OS.
    dirty_bytes: usize,
    /// The purge epoch at which this heap last aged its segments.
    epoch: u64,
    /// The purge epoch at which this heap last aged its thread cache, and
    /// each bin's count then (see `age_cache`).
    cache_epoch: u64,
    cache_marks: [u32; NUM_CLASSES],
    /// Per class (bit), a refill since the bin last overflowed: a bin that
    /// runs empty and full in turn grows (see `grow_bin`).
    refilled: u64,
    /// Per class (bit), a slow path since `age_cache` last looked: such a
    /// bin is in use, whatever its count.
    slow_since_aging: u64,
    /// Bytes this heap freed into abandoned segments since reclamation
    /// last visited them for it (`reclaim::after_slow_path`, which reads it
    /// without the lock: an atomic).
    abandoned_freed: AtomicUsize,
    ticks: u32,
    /// Per class, how many blocks the next refill carves or takes: it
    /// starts small and doubles up to half the bin's capacity, so a thread
    /// that allocates a few blocks of many classes touches a few blocks
    /// per class, not a full batch each (slow start).
    batch: [u16; NUM_CLASSES],
    /// Links in the registry (or the pool's free list), under `HEAPS`.
    next: *mut Heap,
    prev: *mut Heap,
    /// Blocks out of slabs (slow paths), calls (counting mode).
    pub counters: HeapCounters,
}

// SAFETY: a heap's state is used under its lock (the cache by its owner
// only); the pointers it holds are to memory hakmem owns.
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
        let first = (*seg).entry_at(b as usize).first_page();
        &raw mut (*seg).slabs[first]
    }
}

/// Hand a block of `class` to its slab's owner through the slab's remote
/// list (a thread without a heap frees).
///
/// # Safety
/// `b` is a live block of `class` the caller gives up.
pub unsafe fn free_remote(b: *mut Block, class: usize) {
    stats::FOLDED.out[class].add_shared(1u64.wrapping_neg());
    // SAFETY: forwarded contract; every block on a list carries its tag.
    unsafe {
        Block::mark_free(b);
        free_remote_chain(b, b, 1, slab_of(b))
    }
}

/// # Safety
/// `first ..= last` is a chain of `n` live blocks of `slab`, tagged free,
/// that the caller gives up.
unsafe fn free_remote_chain(first: *mut Block, last: *mut Block, n: usize, slab: *mut Slab) {
    // SAFETY: the slab is live while it has used blocks (these); the remote
    // list accepts pushes from any thread; a slab has at most 4096 blocks.
    unsafe {
        stats::add(&STATS.remote_frees[(*slab).class as usize], n);
        (*slab).remote.push_chain(first, last, n)
    };
}

/// Is `p` a carved, free block of `class` in a live slab? For walking lists
/// that may be torn (a dead thread's cache): reads only hakmem's metadata
/// before it reads `p`.
fn is_free_block_of(p: *mut Block, class: usize) -> bool {
    let a = p as usize;
    // SAFETY: a carved block start has 16 readable bytes.
    page_map::is_segment(a) && Segment::carved_class(a) == Some(class) && unsafe { Block::is_free(p) }
}

/// HAKMEM_CHECK=1: the byte freed blocks are filled with past their two
/// list words, verified when the block is handed out again.
const FREED_FILL: u8 = 0xDF;

/// HAKMEM_CHECK=1: fill a block being freed.
///
/// # Safety
/// `b` is a live block of `class` that the caller gives up.
pub unsafe fn fill_freed(b: *mut Block, class: usize) {
    let stride = STRIDE[class] as usize;
    // SAFETY: the block has `stride` bytes; the first 16 are its list words.
    unsafe { ptr::write_bytes((b as *mut u8).add(16), FREED_FILL, stride - 16) };
}

/// HAKMEM_CHECK=1: was a block written to while it was free? Reports it.
///
/// # Safety
/// `b` is a block of `class` just taken off a free list.
unsafe fn verify_freed(b: *mut Block, class: usize) {
    let stride = STRIDE[class] as usize;
    // SAFETY: the block has `stride` bytes.
    let body = unsafe { core::slice::from_raw_parts((b as *const u8).add(16), stride - 16) };
    if let Some(at) = body.iter().position(|&x| x != FREED_FILL) {
        misuse::report("malloc", Misuse::WriteAfterFree { offset: 16 + at }, b as *const u8);
    }
}

impl Heap {
    pub const fn new() -> Heap {
        Heap {
            cache: ThreadCache::new(),
            lock: RawLock::new(),
            tid: AtomicI32::new(0),
            active_epoch: AtomicU64::new(0),
            classes: [const { ClassSlabs { available: Queue::new(), full: Queue::new() } }; NUM_CLASSES],
            segments: Queue::new(),
            dirty_bytes: 0,
            epoch: 0,
            cache_epoch: 0,
            cache_marks: [0; NUM_CLASSES],
            refilled: 0,
            slow_since_aging: 0,
            abandoned_freed: AtomicUsize::new(0),
            ticks: 0,
            batch: [0; NUM_CLASSES],
            next: ptr::null_mut(),
            prev: ptr::null_mut(),
            counters: HeapCounters::new(),
        }
    }

    /// The heap's lock (its owner's slow paths, and visitors).
    pub fn lock(&self) -> &RawLock {
        &self.lock
    }

    /// Kernel id of the owning thread.
    pub fn tid(&self) -> i32 {
        self.tid.load(Ordering::Relaxed)
    }

    /// A forked child's heap: its thread has a new id.
    pub fn set_tid(&self, tid: i32) {
        self.tid.store(tid, Ordering::Relaxed);
    }

    /// Has the owner had no slow path since purge epoch `e - 2`?
    pub fn idle_at(&self, e: u64) -> bool {
        self.active_epoch.load(Ordering::Relaxed) + 2 <= e
    }

    /// This heap's identity in segment headers.
    fn owner_id(&mut self) -> *mut Owner {
        (self as *mut Heap).cast()
    }

    /// The allocation slow path (bin of `class` empty): refill the bin and
    /// return one block (tag cleared), or null when out of memory.
    /// The caller holds the lock.
    pub fn alloc_slow(&mut self, class: usize) -> *mut Block {
        self.active_epoch.store(segment::current_epoch(), Ordering::Relaxed);
        self.slow_since_aging |= 1 << class;
        // (thread::alloc_slow takes these before it locks the heap.)
        let b = self.cache.pop_held(class);
        if !b.is_null() {
            return b;
        }
        self.refilled |= 1 << class;
        let full = self.cache.bins[class].cap().div_ceil(2);
        let want = (self.batch[class] as u32).clamp(FIRST_BATCH.min(full), full);
        self.batch[class] = (want * 2).min(full).min(u16::MAX as u32) as u16;
        let (b, chain, n) = self.refill(class, want);
        if b.is_null() {
            return b;
        }
        self.counters.out[class].add(n as u64 + 1);
        let bin = &mut self.cache.bins[class];
        debug_assert!(bin.head.is_null());
        bin.head = chain;
        bin.set_count(n);
        // SAFETY: a block just taken off a free list: ours, 16 bytes or more.
        unsafe {
            if config::check_mode() {
                verify_freed(b, class);
            }
            (*b).tag = 0;
        }
        b
    }

    /// The free slow path (bin of `class` full, or capacity 0): grow the
    /// bin if the thread cycles through more than it holds, else give one
    /// part of it back to the slabs and set the other aside
    /// (`ThreadCache::overflow`); then cache `b`. The caller holds the lock.
    ///
    /// Which part: a bin that ran empty since its last overflow belongs to
    /// a thread that allocates what it frees, and gives back its most
    /// recently freed blocks, still in cache: the writes to them hit, where
    /// the older part waits on a miss per block, and the thread's next
    /// allocations take the older ones (with the pop's prefetch). A bin that
    /// did not run empty gives back its older part: a thread that only frees
    /// a class would otherwise keep the same old blocks for good, and their
    /// slabs could never empty.
    ///
    /// # Safety
    /// `b` is a live block of `class` that the caller gives up.
    pub unsafe fn free_slow(&mut self, b: *mut Block, class: usize) {
        self.active_epoch.store(segment::current_epoch(), Ordering::Relaxed);
        self.slow_since_aging |= 1 << class;
        let cycling = self.refilled & (1 << class) != 0;
        // SAFETY: the caller gives us `b`.
        if self.grow_bin(class) && unsafe { self.cache.push(b, class, Block::free_tag(b)) } {
            return;
        }
        let (chain, n) = self.cache.overflow(class, cycling);
        // SAFETY: the bin's blocks are free blocks we give back; `b` is ours.
        unsafe {
            if n > 0 {
                self.free_chain(chain, n, class);
            }
            if !self.cache.push(b, class, Block::free_tag(b)) {
                self.free_block(b, class);
            }
        }
    }

    /// One block of `class` for the caller, plus a chain of about `want` more
    /// (null-terminated, tagged free) for the thread cache. A slab's whole
    /// local list is taken at once when it holds at most `2 * want` blocks,
    /// or `TAKE_WHOLE * want` when it is made of blocks other threads freed
    /// (`Slab::cold`): one step, where popping them one by one would wait on
    /// a cache miss per block. The bin may then hold more than its capacity
    /// until the thread allocates them (a producer thread does).
    /// Returns `(block, chain, chain_len)`; block is null when out of memory.
    fn refill(&mut self, class: usize, want: u32) -> (*mut Block, *mut Block, u32) {
        stats::count(&STATS.refills);
        self.tick();
        let slab = self.slab_with_free(class);
        if slab.is_null() {
            return (ptr::null_mut(), ptr::null_mut(), 0);
        }
        // SAFETY: the heap owns `slab`; we hold the heap's lock.
        unsafe {
            let s = &mut *slab;
            let (mut first, mut head, mut n): (*mut Block, *mut Block, u32) =
                (ptr::null_mut(), ptr::null_mut(), 0);
            let whole = |s: &Slab| if s.cold { TAKE_WHOLE * want } else { 2 * want };
            let mut carved = false;
            loop {
                let need = want.saturating_sub(n) + first.is_null() as u32;
                if need == 0 {
                    break;
                }
                // (Not in check mode: the blocks of the dropped list would
                // never have their fill verified.)
                if s.used == 0 && s.free_count > 0 && !config::check_mode() {
                    s.restart();
                }
                // The local list: whole when short enough (one step, its
                // links stay as they are), else pop what is wanted.
                if s.free_count > 0 {
                    if first.is_null() {
                        first = s.pop();
                    }
                    if n == 0 && s.free_count <= whole(s) {
                        (head, n) = s.take_local_list();
                        continue;
                    }
                    while n < want {
                        let b = s.pop();
                        if b.is_null() {
                            break;
                        }
                        Block::set_next(b, head);
                        head = b;
                        n += 1;
                    }
                    continue;
                }
                // Fresh blocks next, in address order ahead of the rest.
                let (mut c0, c1, mut k) = s.carve(need);
                if k > 0 {
                    carved = true;
                    if first.is_null() {
                        first = c0;
                        c0 = Block::next(c0);
                        k -= 1;
                    }
                    if k > 0 {
                        if config::check_mode() {
                            debug_assert_eq!(k, 0, "check mode refills no bin");
                        }
                        Block::set_next(c1, head);
                        head = c0;
                        n += k;
                    }
                    continue;
                }
                // Fully carved, local list empty: blocks other threads gave
                // back become the local list (no walk of their chain).
                if s.collect_remote() == 0 {
                    break;
                }
            }
            if carved {
                let seg = Segment::of(slab as usize);
                if config::check_mode() {
                    fill_freed(first, class);
                }
                (*seg).publish_carved((*seg).slab_index(slab));
            }
            debug_assert!(!first.is_null(), "a slab with free blocks gave none");
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

    /// A slab of `class` carved from the first of this heap's segments with
    /// room for it (with `dirty_only`, room in pages still backed by
    /// memory), on the available list; null when none has. A segment left
    /// full goes to the back of the queue.
    fn slab_from_segments(&mut self, class: usize, dirty_only: bool) -> *mut Slab {
        // SAFETY: segments on our queue are owned by this heap.
        unsafe {
            let mut seg = self.segments.head;
            while !seg.is_null() && (*seg).free_pages != 0 {
                let next = Queue::next(seg);
                let found = (*seg).alloc_slab(class, dirty_only).map(|(s, d)| (s as *mut Slab, d));
                // Full: by this slab, or another mapping stopped its growth.
                if (*seg).free_pages == 0 {
                    self.segments.remove(seg);
                    self.segments.push_back(seg);
                }
                if let Some((slab, dirty)) = found {
                    self.take_dirty(dirty);
                    self.classes[class].available.push_front(slab);
                    (*slab).list = SlabList::Available;
                    return slab;
                }
                seg = next;
            }
        }
        ptr::null_mut()
    }

    /// A fresh slab of `class` on the available list, or null (out of memory).
    fn new_slab(&mut self, class: usize) -> *mut Slab {
        let me = self.owner_id();
        let mut visited_abandoned = false;
        loop {
            // Two passes: pages still backed by memory in any segment first,
            // then any free pages. Taking fresh pages of the first segment
            // while a later one holds freed ones would touch new memory and
            // leave the freed pages to wait for the purge.
            for dirty_only in [true, false] {
                if dirty_only && self.dirty_bytes == 0 {
                    continue;
                }
                let slab = self.slab_from_segments(class, dirty_only);
                if !slab.is_null() {
                    return slab;
                }
            }
            if !visited_abandoned {
                visited_abandoned = true;
                // Segments of exited threads, oldest first: empty ones go
                // back to the segment cache (and are taken just below), one
                // with room is adopted.
                let r = segment::reclaim_abandoned(ADOPT_VISITS, me, Purge::Aged(segment::current_epoch()));
                if !r.adopted.is_null() {
                    // SAFETY: this heap now owns the segment.
                    unsafe { self.take_adopted(r.adopted) };
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

    /// File an adopted (drained) segment's slabs on this heap's lists.
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
                slab.list = SlabList::None;
                let to = if slab.has_local_free() { SlabList::Available } else { SlabList::Full };
                let s: *mut Slab = slab;
                self.move_to(s, to);
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

    /// Free a chain of `n` blocks of `class` (a thread-cache flush). Blocks
    /// of this heap's slabs go to their local lists, others to their owners'
    /// remote lists, consecutive blocks of one slab in one push.
    ///
    /// # Safety
    /// The chain holds `n` live blocks of `class` the caller gives up,
    /// linked and tagged free (as blocks in a thread cache are).
    pub unsafe fn free_chain(&mut self, mut b: *mut Block, n: u32, class: usize) {
        stats::count(&STATS.flushes);
        self.counters.out[class].sub(n as u64);
        self.tick();
        let me = self.owner_id();
        // The run of consecutive blocks of one foreign slab: first, last, length, slab.
        let mut batch: (*mut Block, *mut Block, usize, *mut Slab) =
            (ptr::null_mut(), ptr::null_mut(), 0, ptr::null_mut());
        let mut to_abandoned = 0;
        // SAFETY: each block is live until handed to a slab or remote list;
        // its link is read before that.
        unsafe {
            for _ in 0..n {
                let next = Block::next(b);
                let slab = slab_of(b);
                let owner = (*Segment::of(b as usize)).owner.load(Ordering::Relaxed);
                if owner == me {
                    self.free_local(slab, b);
                } else if slab == batch.3 && Block::next(batch.1) == b {
                    // Already linked to the run's last block (nothing went
                    // local in between).
                    batch.1 = b;
                    batch.2 += 1;
                } else {
                    if !batch.0.is_null() {
                        free_remote_chain(batch.0, batch.1, batch.2, batch.3);
                    }
                    batch = (b, b, 1, slab);
                }
                if owner.is_null() {
                    to_abandoned += STRIDE[class] as usize;
                }
                b = next;
            }
            if !batch.0.is_null() {
                free_remote_chain(batch.0, batch.1, batch.2, batch.3);
            }
        }
        if to_abandoned != 0 {
            self.abandoned_freed.fetch_add(to_abandoned, Ordering::Relaxed);
        }
    }

    /// Has this heap freed `bytes` or more into abandoned segments since the
    /// last time this said so?
    pub fn abandoned_freed_over(&self, bytes: usize) -> bool {
        self.abandoned_freed.load(Ordering::Relaxed) >= bytes
            && self.abandoned_freed.swap(0, Ordering::Relaxed) >= bytes
    }

    /// Free one block of `class`, wherever it belongs.
    ///
    /// # Safety
    /// `b` is a live block of `class` the caller gives up.
    pub unsafe fn free_block(&mut self, b: *mut Block, class: usize) {
        // SAFETY: forwarded; a one-block chain, tagged like cached blocks.
        unsafe {
            Block::mark_free(b);
            self.free_chain(b, 1, class)
        }
    }

    /// # Safety
    /// The heap owns `slab`, and `b` is one of its used blocks.
    unsafe fn free_local(&mut self, slab: *mut Slab, b: *mut Block) {
        // SAFETY: owner access to the slab's local part.
        unsafe {
            // A block past the carve point of a slab that restarted is free
            // (a second free whose tag the program overwrote); and in check
            // mode, so is one on the local list.
            if !(*slab).carved_now(b) || (config::check_mode() && (*slab).on_local_list(b)) {
                return misuse::report("free", Misuse::DoubleFree, b as *const u8);
            }
            (*slab).push_local(b);
            // A full slab has room again; an emptied one goes to the back of
            // its class, so partly used slabs fill up first, and is released
            // by a later collection if still empty then (a slab emptied and
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
                self.take_dirty((*seg).dirty_bytes());
                segment::release(seg);
            } else if was_full {
                self.segments.remove(seg);
                self.segments.push_front(seg);
            }
        }
        self.maybe_purge();
    }

    /// Account for `n` dirty bytes that left this heap's count (reused by a
    /// slab, purged, or gone with a segment).
    fn take_dirty(&mut self, n: usize) {
        debug_assert!(n <= self.dirty_bytes, "dirty-byte count drifted: {} < {}", self.dirty_bytes, n);
        self.dirty_bytes -= n.min(self.dirty_bytes);
    }

    /// Decay: free pages unused for at least HAKMEM_PURGE_DELAY_MS (two
    /// epochs of the global purge clock) go back to the OS; pages reused
    /// sooner never pay for a purge and a refault. Over HAKMEM_PURGE_KB,
    /// dirty pages go back at once until half of it remains. Returns the
    /// bytes purged.
    fn maybe_purge(&mut self) -> usize {
        if self.dirty_bytes == 0 {
            return 0;
        }
        let limit = config::purge_limit();
        let mut purged = 0;
        if self.dirty_bytes > limit {
            // Down to half the cap: the oldest free pages first (those of the
            // segments' last snapshots), then, if that is not enough, all.
            for oldest in [true, false] {
                let mut seg = self.segments.head;
                while !seg.is_null() && self.dirty_bytes > limit / 2 {
                    // SAFETY: segments on our queue are owned by this heap.
                    unsafe {
                        let n = if oldest { (*seg).purge_oldest() } else { (*seg).purge() };
                        self.take_dirty(n);
                        purged += n;
                        seg = Queue::next(seg);
                    }
                }
            }
            return purged;
        }
        let (e, _) = segment::purge_epoch();
        if e == self.epoch {
            return 0;
        }
        self.epoch = e;
        let mut seg = self.segments.head;
        while !seg.is_null() {
            // SAFETY: segments on our queue are owned by this heap.
            unsafe {
                let n = (*seg).age(e);
                self.take_dirty(n);
                purged += n;
                seg = Queue::next(seg);
            }
        }
        purged
    }

    /// Give all dirty free slab pages back to the OS. Returns the bytes.
    pub fn purge(&mut self) -> usize {
        let mut purged = 0;
        let mut seg = self.segments.head;
        while !seg.is_null() {
            // SAFETY: segments on our queue are owned by this heap.
            unsafe {
                purged += (*seg).purge();
                seg = Queue::next(seg);
            }
        }
        self.take_dirty(purged);
        debug_assert_eq!(self.dirty_bytes, 0);
        purged
    }

    fn tick(&mut self) {
        self.ticks += 1;
        if self.ticks >= COLLECT_EVERY {
            self.ticks = 0;
            self.collect_some();
        }
    }

    /// The periodic collection: bounded work per class, so that a heap of
    /// thousands of slabs pays for what changed, not for its size.
    /// - Emptied slabs go to the back of their class's available list, so
    ///   the tail is walked: empty slabs are released (all but one per
    ///   class), and so are slabs whose remote frees would empty them. Up to
    ///   `COLLECT_LOOK` others are passed over and moved to the front, where
    ///   refills take from (partly used slabs fill up first), so the next
    ///   pass starts further in and successive passes go round the list.
    /// - The first `COLLECT_LOOK` full slabs take their remote frees (no
    ///   chain walk: their local lists are empty) and go to the back, so
    ///   successive passes go round that list too.
    ///
    /// Then aged or excess free pages are purged.
    fn collect_some(&mut self) -> usize {
        for class in 1..NUM_CLASSES {
            let mut kept_empty = false;
            let mut passed = 0;
            let mut s = self.classes[class].available.tail;
            while !s.is_null() && passed < COLLECT_LOOK {
                // SAFETY: slabs on our lists are owned by this heap; the
                // previous pointer is read before `s` is released or moved.
                unsafe {
                    let prev = Queue::prev(s);
                    let pending = (*s).remote.pending() as u32;
                    if pending > 0 && pending == (*s).used {
                        (*s).collect_remote();
                    }
                    if (*s).used == 0 {
                        if kept_empty {
                            self.release_slab(s);
                        }
                        kept_empty = true;
                    } else {
                        passed += 1;
                        self.unlink(s);
                        self.classes[class].available.push_front(s);
                        (*s).list = SlabList::Available;
                    }
                    s = prev;
                }
            }
            for _ in 0..COLLECT_LOOK {
                let s = self.classes[class].full.head;
                if s.is_null() {
                    break;
                }
                // SAFETY: as above.
                unsafe {
                    let to = if (*s).remote.pending() > 0 && (*s).collect_remote() > 0 {
                        SlabList::Available
                    } else {
                        SlabList::Full
                    };
                    if (*s).used == 0 && kept_empty {
                        self.release_slab(s);
                        continue;
                    }
                    kept_empty |= (*s).used == 0;
                    self.move_to(s, to);
                    if s == self.classes[class].full.head {
                        break; // the only full slab
                    }
                }
            }
        }
        let (e, _) = segment::purge_epoch();
        if e != self.cache_epoch {
            self.cache_epoch = e;
            self.age_cache();
        }
        self.maybe_purge()
    }

    /// A bin that overflows after running empty since its last overflow
    /// holds less than the thread cycles through: it grows by its configured
    /// capacity, up to `GROWTH` times that, within `GROWTH_BYTES` of grown
    /// bins per thread (tcmalloc's thread caches grow the same way). True
    /// when it grew. `age_cache` shrinks it back once it goes unused.
    fn grow_bin(&mut self, class: usize) -> bool {
        if self.refilled & (1 << class) == 0 {
            return false;
        }
        self.refilled &= !(1 << class);
        let (base, cap) = (thread_cache::capacity(class), self.cache.bins[class].cap());
        if base == 0 || cap >= base * GROWTH {
            return false;
        }
        if self.cache.grown_bytes() + base as usize * STRIDE[class] as usize > GROWTH_BYTES {
            return false;
        }
        self.cache.bins[class].set_cap(cap + base);
        true
    }

    /// Once per purge epoch: a bin with no slow path and a count that has
    /// not moved since the last look holds blocks nobody here is using (a
    /// thread that freed blocks of a size it no longer allocates). They go
    /// back to their slabs, so that bins can be large without pinning slabs,
    /// this thread's or another's, for good, and a grown bin goes back to its
    /// configured capacity. A bin used on the fast paths only, whose count
    /// happens to match, is only refilled a little early.
    fn age_cache(&mut self) {
        for class in 1..NUM_CLASSES {
            let n = self.cache.bins[class].count();
            if self.slow_since_aging & (1 << class) == 0 && n == self.cache_marks[class] {
                for (chain, n) in self.cache.take_all(class) {
                    if n > 0 {
                        // SAFETY: the bin's blocks are free blocks we give back.
                        unsafe { self.free_chain(chain, n, class) };
                    }
                }
                self.cache.bins[class].set_cap(thread_cache::capacity(class));
            }
            self.cache_marks[class] = self.cache.bins[class].count();
        }
        self.slow_since_aging = 0;
    }

    /// Walk every slab: take remote frees where that is cheap, release
    /// every empty slab, then purge what has aged or is over the limit
    /// (`malloc_trim`, thread exit, idle heaps). Returns the bytes given back
    /// to the OS.
    pub fn collect(&mut self) -> usize {
        for class in 1..NUM_CLASSES {
            for full in [false, true] {
                let c = &self.classes[class];
                let mut s = if full { c.full.head } else { c.available.head };
                while !s.is_null() {
                    // SAFETY: slabs on our lists are owned by this heap; the
                    // next pointer is read before `s` may be released.
                    unsafe {
                        let next = Queue::next(s);
                        // Take the remote frees only where that costs no walk
                        // of the chain (the local list is empty) or empties
                        // the slab; otherwise they wait for the refill that
                        // empties the local list.
                        let pending = (*s).remote.pending() as u32;
                        let got = if pending > 0 && ((*s).free_count == 0 || pending == (*s).used) {
                            (*s).collect_remote()
                        } else {
                            0
                        };
                        if (*s).used == 0 {
                            self.release_slab(s);
                        } else if got > 0 && full {
                            self.move_to(s, SlabList::Available);
                        }
                        s = next;
                    }
                }
            }
        }
        self.maybe_purge()
    }

    /// Give every block in the thread cache back to the slabs.
    pub fn flush_cache(&mut self) {
        for class in 1..NUM_CLASSES {
            for (chain, n) in self.cache.take_all(class) {
                if n > 0 {
                    // SAFETY: the bin's blocks are free blocks we give back.
                    unsafe { self.free_chain(chain, n, class) };
                }
            }
        }
    }

    /// Flush the cache of a heap whose thread died without its exit hook,
    /// or did not survive a `fork`: its bins may have been cut mid-update,
    /// so each link is checked to lead to a free block of the bin's class
    /// before it is followed; the walk stops at the first that does not
    /// (the rest is lost, never handed out twice).
    pub fn flush_cache_checked(&mut self) {
        // Every bin is detached before any block is freed: the frees drive
        // the periodic collection, whose `age_cache` would otherwise flush
        // the bins not walked yet without these checks.
        let mut bins = [[(ptr::null_mut(), 0); 2]; NUM_CLASSES];
        for (class, taken) in bins.iter_mut().enumerate().skip(1) {
            *taken = self.cache.take_all(class);
        }
        for (class, &(mut p, count)) in
            bins.iter().enumerate().skip(1).flat_map(|(c, parts)| parts.iter().map(move |p| (c, p)))
        {
            for _ in 0..count {
                if !is_free_block_of(p, class) {
                    break;
                }
                // SAFETY: a free block of this class, checked just above.
                unsafe {
                    let next = Block::next(p);
                    self.free_chain(p, 1, class);
                    p = next;
                }
            }
        }
    }

    /// The thread is exiting (or dead) and its cache is flushed: release
    /// what is empty, give the rest to the abandoned queue for other threads
    /// to drain or adopt. Dirty pages go along (the cache or the adopter
    /// accounts for them), so a short-lived thread costs no purge.
    pub fn teardown(&mut self) {
        self.collect();
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

    /// Slabs of `class` on this heap's lists, and how many of them are
    /// empty (tests).
    #[cfg(test)]
    pub fn slabs_of(&self, class: usize) -> (usize, usize) {
        let c = &self.classes[class];
        let (mut n, mut empty) = (0, 0);
        for mut s in [c.available.head, c.full.head] {
            while !s.is_null() {
                n += 1;
                // SAFETY: slabs on our lists are valid.
                unsafe {
                    empty += ((*s).used == 0) as usize;
                    s = Queue::next(s);
                }
            }
        }
        (n, empty)
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

/// Every heap: the registry (oldest first) and the pool heaps come from.
/// Heaps come from mmap'ed pages and are recycled, never unmapped.
struct Heaps {
    live: Queue<Heap>,
    len: usize,
    /// Destroyed heaps, linked through `next`.
    free: *mut Heap,
    bump: *mut u8,
    end: *mut u8,
}

// SAFETY: only accessed under the lock.
unsafe impl Send for Heaps {}

static HEAPS: Lock<Heaps> = Lock::new(Heaps {
    live: Queue::new(),
    len: 0,
    free: ptr::null_mut(),
    bump: ptr::null_mut(),
    end: ptr::null_mut(),
});

const POOL_REFILL: usize = 256 * 1024;

/// A fresh, registered heap for thread `tid`, or null when out of memory.
pub fn create(tid: i32) -> *mut Heap {
    let mut heaps = HEAPS.lock();
    let mut h = heaps.free;
    if !h.is_null() {
        // SAFETY: pooled heaps are valid and linked through `next`.
        heaps.free = unsafe { (*h).next };
    } else {
        let size = core::mem::size_of::<Heap>().next_multiple_of(64);
        if heaps.bump.is_null() || (heaps.end as usize - heaps.bump as usize) < size {
            let p = os::map(POOL_REFILL);
            if p.is_null() {
                return ptr::null_mut();
            }
            heaps.bump = p;
            // SAFETY: end of the mapping just made.
            heaps.end = unsafe { p.add(POOL_REFILL) };
        }
        h = heaps.bump as *mut Heap;
        // SAFETY: `size` bytes remain before `end`.
        heaps.bump = unsafe { heaps.bump.add(size) };
    }
    // SAFETY: `h` is heap-sized, aligned memory that nobody else uses.
    unsafe {
        h.write(Heap::new());
        (*h).tid.store(tid, Ordering::Relaxed);
        (*h).active_epoch.store(segment::current_epoch(), Ordering::Relaxed);
        heaps.live.push_back(h);
    }
    heaps.len += 1;
    stats::count(&STATS.heaps_created);
    h
}

/// Unregister a torn-down heap and return it to the pool.
///
/// # Safety
/// `h` came from [`create`], was torn down, and is no longer used; the
/// caller does not hold its lock.
pub unsafe fn destroy(h: *mut Heap) {
    let mut heaps = HEAPS.lock();
    // SAFETY: per contract.
    unsafe { destroy_locked(&mut heaps, h) };
}

/// # Safety
/// As for [`destroy`], with the registry locked.
unsafe fn destroy_locked(heaps: &mut Heaps, h: *mut Heap) {
    // SAFETY: `h` is registered; the registry is locked.
    unsafe {
        (*h).counters.fold();
        heaps.live.remove(h);
        (*h).next = heaps.free;
    }
    heaps.len -= 1;
    heaps.free = h;
}

/// What a visitor did with a heap.
pub enum Visited {
    /// Still in use: it goes to the back of the registry.
    Keep,
    /// Torn down (its thread is gone): back to the pool.
    Destroyed,
}

/// Visit up to `max` registered heaps, oldest first (each visited heap goes
/// to the back, so repeated calls go round them all). The registry stays
/// locked during `f`, so a heap cannot be destroyed and reused under it;
/// `f` must not wait for a heap's lock (only `try_lock` it).
pub fn visit(max: usize, mut f: impl FnMut(*mut Heap) -> Visited) {
    let mut heaps = HEAPS.lock();
    for _ in 0..max.min(heaps.len) {
        let h = heaps.live.head;
        // SAFETY: `h` is registered; the registry is locked.
        unsafe {
            heaps.live.remove(h);
            heaps.live.push_back(h);
            match f(h) {
                Visited::Keep => {}
                Visited::Destroyed => {
                    destroy_locked(&mut heaps, h);
                    stats::count(&STATS.heaps_reaped);
                }
            }
        }
    }
}

/// How many heaps are registered now.
pub fn registered() -> usize {
    HEAPS.lock().len
}

pub fn lock() -> &'static RawLock {
    HEAPS.raw()
}
