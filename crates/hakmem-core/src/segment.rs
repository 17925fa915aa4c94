//! Segments: 4 MiB chunks, 4 MiB aligned, that hold slabs.
//!
//! ```text
//!  segment base (chunk aligned)
//!  | slab page 0: Segment header  | slab page 1 | ... | slab page 63 |
//!                                 \___ slab (1..4 pages, one class) ___/
//! ```
//!
//! The header holds the owner heap, a bitmap of free slab pages, a per-page
//! table `(class, first page of its slab, carve point)` that `free` reads to
//! classify a pointer, and the slab descriptors (indexed by their first
//! page). Everything in a segment belongs to one heap (its owner).
//!
//! A segment whose heap's thread exited with live blocks in it is
//! *abandoned*: its owner is null and it waits, oldest first, in a global
//! queue. Other threads keep freeing into it through remote lists. Whoever
//! visits it next (`reclaim_abandoned`: a heap that needs a slab, the decay
//! clock, `malloc_trim`, a failed `mmap`) claims it, drains the remote lists,
//! releases the empty slabs and either gives the segment back (empty),
//! adopts it (room for the visitor's slabs) or ages its free pages and queues
//! it again. So an abandoned segment never sinks out of reach.
//!
//! A segment maps only a prefix of its chunk at first (the header and the
//! first slabs) and grows it in place, doubling, as slabs are carved, so a
//! thread that allocates a few blocks costs a few hundred KiB of address
//! space, not 4 MiB. The rest of the chunk is not hakmem's until then; if
//! another mapping lands there, the segment stays at the size it has, and a
//! pointer into that mapping is foreign ([`Segment::maps`]).
//!
//! Released segments are kept in a small global cache (so a stale pointer
//! into one is still recognised and reported, and a new thread reuses warm
//! pages), or unmapped.

use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicU8, Ordering};

use crate::config;
use crate::list::{Linked, Queue};
use crate::os;
use crate::page_map::{self, Entry, CHUNK, CHUNK_MASK};
use crate::size_class::{
    carve_limit, carved_blocks, CAPACITY, CLASS_MASK, DIVISIBILITY, MAX_SLAB_BYTES, NUM_CLASSES, SLAB_PAGE,
    SLAB_PAGES, SLAB_PAGE_SHIFT, STRIDE,
};
use crate::slab::Slab;
use crate::stats::{self, STATS};
use crate::sync::Lock;
use crate::thread_cache::{bin_class, bin_offset, BIN_OFFSET_MASK};

pub const PAGES: usize = CHUNK / SLAB_PAGE;
const _: () = assert!(PAGES == 64, "the page bitmaps are u64");
const _: () = assert!(core::mem::size_of::<Segment>() <= SLAB_PAGE);
const _: () =
    assert!(core::mem::offset_of!(Segment, pages) + PAGES * core::mem::size_of::<PageEntry>() <= os::PAGE);

/// Free segments kept mapped for reuse.
const SEGMENT_CACHE_MAX: usize = 8;

/// An abandoned segment that holds more free memory than this after it is
/// drained gives it back to the OS at once (`reclaim_abandoned`).
const DRAINED_DIRTY_MAX: usize = 1 << 20;

/// Who owns a segment: a heap, seen from this layer only as an identity.
pub enum Owner {}

/// The owner of a segment being drained by a visitor that does not adopt
/// it: no heap, so every free into it meanwhile goes through remote lists.
static VISITOR: u8 = 0;

fn visitor() -> *mut Owner {
    (&raw const VISITOR) as *mut Owner
}

#[repr(C)]
pub struct Segment {
    /// Per slab page, see [`PageEntry`]. First, so that `free` indexes it
    /// straight from the segment base, and in the header's first OS page,
    /// which stays readable (zeroed) for a while after the segment is
    /// unmapped (`seal`).
    pub pages: [PageEntry; PAGES],
    /// The heap that owns every slab here; null while abandoned or cached.
    pub owner: AtomicPtr<Owner>,
    /// Bit i set: slab page i is free. Page 0 (the header) never is.
    pub free_pages: u64,
    /// Free pages whose memory has not been given back to the OS yet.
    pub dirty_pages: u64,
    /// Dirty pages as they were at purge epoch `aged_epoch` (a snapshot;
    /// reuse clears a page's bit). Still set two epochs later, a page has
    /// been unused for at least HAKMEM_PURGE_DELAY_MS and is purged.
    pub aged_pages: u64,
    pub aged_epoch: u64,
    pub live_slabs: u32,
    /// Slab pages mapped, from the start of the chunk (header included).
    /// Only grows while the segment lives; read by any thread classifying
    /// a pointer.
    pub mapped_pages: AtomicU32,
    /// Links of the owner heap's segment list, or of a global list.
    pub next: *mut Segment,
    pub prev: *mut Segment,
    /// Slab descriptors, valid at the index of each slab's first page.
    pub slabs: [Slab; PAGES],
}

// SAFETY: `next` and `prev` are distinct fields.
unsafe impl Linked for Segment {
    unsafe fn links(p: *mut Self) -> (*mut *mut Self, *mut *mut Self) {
        // SAFETY: `p` is valid.
        unsafe { (&raw mut (*p).next, &raw mut (*p).prev) }
    }
}

/// A page-table entry, in the form `free`'s test takes: an address `p` on
/// the page is a block start its slab has handed out when
/// `p·M − bias < limit (mod 2^64)`, with `M` the stride's divisibility
/// multiplier (`size_class::DIVISIBILITY`), `bias` `M` times the slab's
/// address and `limit` the blocks carved so far times `e = stride·M − 2^64`.
/// For an offset `x = k·stride + r` into the slab, `x·M = k·e + r·M
/// (mod 2^64)`: below `carved·e` exactly when `r = 0` and `k < carved`,
/// since `r·M ≥ M` is far above any limit (`size_class::DIVISIBILITY`). One
/// multiply, one subtraction and one compare refuse both a block start that
/// was never handed out and an interior pointer, with no shifts of packed
/// fields. Zeroes (a page never used, or a sealed header) match nothing.
///
/// A `free` on another thread may read the entry while its owner publishes
/// or clears it, or while the segment is unmapped and its header replaced
/// by a zero page (only a bad free: a valid one is ordered after the block
/// was handed out). A reader that computed `p·0 − 0 = 0` with zeroed
/// constants and compared it with an older, non-zero limit would take any
/// address on the page. So the constants are read before the limit (all
/// loads Acquire, plain moves on x86) and the limit is published last
/// (Release); clearing zeroes only `limit` and `class`, and a zero page
/// replaces the header only after that: zeroes read for the constants come
/// with a limit of 0. A reader sees one slab's constants with its limit, or
/// a limit that matches nothing, or, if the page is cleared and taken by
/// another slab while it reads, a mix: with the old limit and another
/// slab's constants `x` is unrelated to any block start and almost surely
/// fails, but the bin offset, read last, may be the new slab's.
#[repr(C, align(32))]
pub struct PageEntry {
    magic: AtomicU64,
    bias: AtomicU64,
    /// Blocks carved times the stride's `e`; 0: no live slab on the page.
    limit: AtomicU64,
    /// The offset of the slab's class's bin in a thread cache
    /// (`thread_cache::bin_offset`), and its first page: the last slab's,
    /// kept when the page is cleared.
    bin: AtomicU32,
    first_page: AtomicU8,
    /// The slab's class, 0 when the page holds no slab (for code off the
    /// fast path).
    class: AtomicU8,
}

impl PageEntry {
    /// The bin offset of the class of the block starting at `p` (an
    /// address on this entry's page), if the slab has handed it out.
    #[inline(always)]
    pub fn carved_bin(&self, p: usize) -> Option<usize> {
        // The bias is `M ×` the slab's address: `p·M − bias` is `M ×` the
        // offset into the slab (mod 2^64). Constants first (see the type's
        // comment).
        let m = self.magic.load(Ordering::Acquire);
        let x = (p as u64).wrapping_mul(m).wrapping_sub(self.bias.load(Ordering::Acquire));
        if x >= self.limit.load(Ordering::Acquire) {
            return None;
        }
        Some(self.bin.load(Ordering::Relaxed) as usize & BIN_OFFSET_MASK)
    }

    /// The slab's first page (meaningful while a slab is live on the page).
    #[inline(always)]
    pub fn first_page(&self) -> usize {
        self.first_page.load(Ordering::Relaxed) as usize
    }

    /// The base of the segment whose header holds this entry.
    fn segment_base(&self) -> usize {
        self as *const PageEntry as usize & !CHUNK_MASK
    }

    /// Publish slab `class` starting at page `first`, with `carved` blocks
    /// carved.
    fn set(&self, class: usize, first: usize, carved: usize) {
        debug_assert!(class < NUM_CLASSES && first < PAGES && carved <= CAPACITY[class] as usize);
        let base = self.segment_base();
        let m = DIVISIBILITY[class & CLASS_MASK];
        self.class.store(class as u8, Ordering::Relaxed);
        self.bin.store(bin_offset(class) as u32, Ordering::Relaxed);
        self.first_page.store(first as u8, Ordering::Relaxed);
        self.magic.store(m, Ordering::Relaxed);
        self.bias.store(m.wrapping_mul((base + (first << SLAB_PAGE_SHIFT)) as u64), Ordering::Relaxed);
        self.limit.store(carve_limit(class, carved), Ordering::Release);
    }

    /// No slab on the page: nothing matches. The constants stay (see the
    /// type's comment).
    fn clear(&self) {
        self.limit.store(0, Ordering::Relaxed);
        self.class.store(0, Ordering::Relaxed);
    }

    /// A snapshot, for code off the fast path.
    pub fn info(&self) -> PageInfo {
        let class = self.class.load(Ordering::Relaxed) as usize;
        if class == 0 {
            return PageInfo { class: 0, first: 0, carved_end: 0 };
        }
        let first = self.first_page();
        let limit = self.limit.load(Ordering::Relaxed);
        let carved_end = match limit {
            0 => 0,
            _ => {
                (first << SLAB_PAGE_SHIFT) + carved_blocks(class, limit) * STRIDE[class & CLASS_MASK] as usize
            }
        };
        PageInfo { class, first, carved_end }
    }
}

/// What a page-table entry says, read once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageInfo {
    class: usize,
    first: usize,
    carved_end: usize,
}

impl PageInfo {
    /// The class (0: no live slab).
    pub fn class(self) -> usize {
        self.class
    }

    pub fn first_page(self) -> usize {
        self.first
    }

    /// Bytes of the slab carved so far: block starts lie below.
    pub fn carved_bytes(self) -> usize {
        self.carved_end.saturating_sub(self.first << SLAB_PAGE_SHIFT)
    }

    /// The offset of `p`, an address on this entry's page, from its slab's
    /// start.
    pub fn slab_offset(self, p: usize) -> usize {
        (p & CHUNK_MASK) - (self.first << SLAB_PAGE_SHIFT)
    }
}

const ALL_SLAB_PAGES: u64 = !1;

/// Slab pages a new segment maps: the header and room for the largest
/// slab, so the first slab always fits.
const FIRST_MAPPED_PAGES: usize = 1 + MAX_SLAB_BYTES / SLAB_PAGE;

/// The purge clock, shared by all heaps so that pages keep aging when their
/// segment changes owner: epoch number, and when the epoch began.
static EPOCH: AtomicU64 = AtomicU64::new(0);
static EPOCH_START: AtomicU64 = AtomicU64::new(0);

/// The current purge epoch; advances every HAKMEM_PURGE_DELAY_MS, as seen
/// by whichever thread looks first. The second value is true for the one
/// caller that advanced it (the process-wide decay work is its to do).
pub fn purge_epoch() -> (u64, bool) {
    let delay = config::get(config::PURGE_DELAY_MS) as u64 * 1_000_000;
    let now = os::coarse_now_ns();
    let start = EPOCH_START.load(Ordering::Relaxed);
    if now.wrapping_sub(start) >= delay
        && EPOCH_START.compare_exchange(start, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    {
        return (EPOCH.fetch_add(1, Ordering::Relaxed) + 1, true);
    }
    (EPOCH.load(Ordering::Relaxed), false)
}

/// The current purge epoch, without advancing the clock.
pub fn current_epoch() -> u64 {
    EPOCH.load(Ordering::Relaxed)
}

impl Segment {
    /// The segment holding `p` (which must be in a segment chunk).
    #[inline(always)]
    pub fn of(p: usize) -> *mut Segment {
        (p & !CHUNK_MASK) as *mut Segment
    }

    #[inline(always)]
    pub fn page_index(p: usize) -> usize {
        (p & CHUNK_MASK) >> SLAB_PAGE_SHIFT
    }

    /// Base address of slab page `i`.
    #[inline]
    pub fn page_addr(&self, i: usize) -> *mut u8 {
        (self as *const Segment as usize + (i << SLAB_PAGE_SHIFT)) as *mut u8
    }

    /// The page-table entry of the page holding `p`.
    #[inline(always)]
    pub fn entry_at(&self, p: usize) -> &PageEntry {
        &self.pages[Self::page_index(p)]
    }

    /// What the page-table entry of the page holding `p` says.
    pub fn info_at(&self, p: usize) -> PageInfo {
        self.entry_at(p).info()
    }

    /// The class of `p`, an address in a segment chunk, if it is exactly
    /// the start of a block its slab has handed out (below the slab's carve
    /// point). Reads only the segment's page table. The test `free` makes.
    #[inline(always)]
    pub fn carved_class(p: usize) -> Option<usize> {
        Self::carved_bin(p).map(bin_class)
    }

    /// [`carved_class`](Self::carved_class), as the offset of the class's
    /// bin in a thread cache (what `free` needs).
    #[inline(always)]
    pub fn carved_bin(p: usize) -> Option<usize> {
        // SAFETY: the caller found `p`'s chunk to be a segment, so its
        // header is mapped; page-table entries are atomics.
        unsafe { (*Segment::of(p)).entry_at(p) }.carved_bin(p)
    }

    /// Is `p` (an address in this segment's chunk) in its mapped part? An
    /// address past it belongs to someone else's mapping, or to nobody.
    #[inline]
    pub fn maps(&self, p: usize) -> bool {
        Self::page_index(p) < self.mapped_pages.load(Ordering::Relaxed) as usize
    }

    /// Make pages up to `end` usable, mapping more of the chunk (doubling
    /// the mapped part, or at least up to `end`). When another mapping sits
    /// in the way, the pages from there on are given up for good; when the
    /// kernel refuses, nothing changes. True when pages `..end` are mapped.
    fn grow(&mut self, end: usize) -> bool {
        let mapped = self.mapped_pages.load(Ordering::Relaxed) as usize;
        if end <= mapped {
            return true;
        }
        let base = self as *mut Segment as usize;
        let mut target = end.max((mapped * 2).min(PAGES));
        loop {
            let at = base + mapped * SLAB_PAGE;
            match os::map_at(at, (target - mapped) * SLAB_PAGE) {
                os::MapAt::Mapped => {
                    self.mapped_pages.store(target as u32, Ordering::Relaxed);
                    return true;
                }
                os::MapAt::Refused => return false,
                os::MapAt::Taken if target > end => target = end,
                os::MapAt::Taken => {
                    // Someone else's mapping: this segment ends here.
                    self.free_pages &= run_mask(0, mapped);
                    stats::count(&STATS.segments_capped);
                    return false;
                }
            }
        }
    }

    /// The slab that page `i` belongs to, if any.
    #[inline]
    pub fn slab_at(&mut self, i: usize) -> Option<&mut Slab> {
        let info = self.pages[i].info();
        if info.class() == 0 {
            return None;
        }
        Some(&mut self.slabs[info.first_page()])
    }

    /// Find `n` contiguous free pages, preferring pages still backed by
    /// memory (reusing them costs no page fault, and leaves the purged ones
    /// purged); with `dirty_only`, only such pages. Returns the first.
    fn find_run(&self, n: usize, dirty_only: bool) -> Option<usize> {
        let runs = |pages: u64| {
            let mut m = pages;
            for j in 1..n {
                m &= pages >> j;
            }
            m
        };
        let dirty = runs(self.free_pages & self.dirty_pages);
        let m = if dirty != 0 || dirty_only { dirty } else { runs(self.free_pages) };
        (m != 0).then(|| m.trailing_zeros() as usize)
    }

    /// Carve a slab of `class` out of free pages (with `dirty_only`, out of
    /// pages still backed by memory only). Returns the slab and how many of
    /// its bytes were dirty (committed) free memory before.
    pub fn alloc_slab(&mut self, class: usize, dirty_only: bool) -> Option<(&mut Slab, usize)> {
        let n = SLAB_PAGES[class] as usize;
        let first = self.find_run(n, dirty_only)?;
        if !self.grow(first + n) {
            return None;
        }
        let mask = run_mask(first, n);
        let dirty = (self.dirty_pages & mask).count_ones() as usize * SLAB_PAGE;
        self.free_pages &= !mask;
        self.dirty_pages &= !mask;
        self.aged_pages &= !mask;
        self.live_slabs += 1;
        let base = self.page_addr(first);
        self.slabs[first].init(base, class);
        self.publish_carved(first);
        stats::count(&STATS.slabs_created[class]);
        Some((&mut self.slabs[first], dirty))
    }

    /// Write the page-table entries of the slab at page `first` with its
    /// current carve point. Called after carving, before any newly carved
    /// block is handed out (so that a thread that later frees one, having
    /// got it through its own synchronisation, sees the new carve point).
    pub fn publish_carved(&self, first: usize) {
        let s = &self.slabs[first];
        for e in &self.pages[first..first + s.pages as usize] {
            e.set(s.class as usize, first, s.carved_max as usize);
        }
    }

    /// Give the pages of an empty slab back to the segment (they stay dirty).
    /// Returns the bytes that became dirty.
    pub fn release_slab(&mut self, first: usize) -> usize {
        let slab = &self.slabs[first];
        debug_assert_eq!(slab.used, 0);
        debug_assert!(slab.remote.is_empty());
        let n = slab.pages as usize;
        for e in &self.pages[first..first + n] {
            e.clear();
        }
        let mask = run_mask(first, n);
        self.free_pages |= mask;
        self.dirty_pages |= mask;
        self.live_slabs -= 1;
        stats::count(&STATS.slabs_released[slab.class as usize]);
        n * SLAB_PAGE
    }

    /// Take every slab's remote frees and release the slabs left empty, for
    /// a segment on no heap's lists (claimed by a visitor). Returns the
    /// bytes that became dirty.
    fn drain(&mut self) -> usize {
        let mut dirty = 0;
        let mut i = 1;
        while i < PAGES {
            let Some(slab) = self.slab_at(i) else {
                i += 1;
                continue;
            };
            let n = slab.pages as usize;
            slab.collect_remote();
            if slab.used == 0 {
                dirty += self.release_slab(i);
            }
            i += n;
        }
        dirty
    }

    /// Give every dirty free page back to the OS. Returns the bytes purged.
    pub fn purge(&mut self) -> usize {
        self.purge_pages(self.dirty_pages)
    }

    /// Age the dirty pages at global purge epoch `e`: pages dirty since a
    /// snapshot at least two epochs old are purged, and a new snapshot is
    /// taken. Returns the bytes purged.
    pub fn age(&mut self, e: u64) -> usize {
        if e < self.aged_epoch + 2 {
            return 0;
        }
        let n = self.purge_pages(self.dirty_pages & self.aged_pages);
        self.aged_pages = self.dirty_pages;
        self.aged_epoch = e;
        n
    }

    /// Purge the pages of the last snapshot that are still dirty: the oldest
    /// free pages here. Returns the bytes purged.
    pub fn purge_oldest(&mut self) -> usize {
        self.purge_pages(self.dirty_pages & self.aged_pages)
    }

    fn purge_pages(&mut self, pages: u64) -> usize {
        let mut d = pages;
        let total = d.count_ones() as usize * SLAB_PAGE;
        while d != 0 {
            let first = d.trailing_zeros() as usize;
            let len = (!(d >> first)).trailing_zeros() as usize;
            // SAFETY: dirty pages are free pages of this segment: no live data.
            unsafe { os::purge(self.page_addr(first), len * SLAB_PAGE) };
            stats::count(&STATS.purges);
            d &= !run_mask(first, len);
        }
        self.dirty_pages &= !pages;
        self.aged_pages &= !pages;
        total
    }

    /// Free bytes not yet given back to the OS.
    pub fn dirty_bytes(&self) -> usize {
        self.dirty_pages.count_ones() as usize * SLAB_PAGE
    }

    /// Index of a slab descriptor within this segment.
    pub fn slab_index(&self, slab: *const Slab) -> usize {
        (slab as usize - self.slabs.as_ptr() as usize) / core::mem::size_of::<Slab>()
    }

    /// Check the header's invariants (tests and debug builds).
    #[cfg(any(test, debug_assertions))]
    pub fn check(&mut self) {
        assert_eq!(self.free_pages & 1, 0);
        assert_eq!(self.dirty_pages & !self.free_pages, 0);
        assert_eq!(self.aged_pages & !self.dirty_pages, 0);
        let mut live = 0;
        let mut i = 1;
        while i < PAGES {
            let info = self.pages[i].info();
            if info.class() == 0 {
                // Pages past the mapped part are all free, or all given up.
                let mapped = self.mapped_pages.load(Ordering::Relaxed) as usize;
                let given_up = i >= mapped && self.free_pages & !run_mask(0, mapped) == 0;
                assert!(self.free_pages & (1 << i) != 0 || given_up, "page {i} neither free nor in a slab");
                i += 1;
                continue;
            }
            assert_eq!(info.first_page(), i, "slab starts at its first page");
            assert_eq!(info.carved_bytes(), self.slabs[i].carved_bytes(), "carve point published");
            let n = self.slabs[i].pages as usize;
            for j in i..i + n {
                assert_eq!(self.pages[j].info(), info);
                assert!(self.free_pages & (1 << j) == 0);
            }
            self.slabs[i].check();
            live += 1;
            i += n;
        }
        assert_eq!(live, self.live_slabs);
    }
}

#[inline]
fn run_mask(first: usize, n: usize) -> u64 {
    (if n >= 64 { u64::MAX } else { (1u64 << n) - 1 }) << first
}

struct SegmentCache {
    head: *mut Segment,
    len: usize,
    /// Dirty (still committed) free bytes in the cached segments.
    dirty: usize,
}

// SAFETY: the raw pointers are only followed under the lock.
unsafe impl Send for SegmentCache {}

/// Empty segments, ready for reuse.
static SEGMENT_CACHE: Lock<SegmentCache> =
    Lock::new(SegmentCache { head: ptr::null_mut(), len: 0, dirty: 0 });

struct Abandoned {
    queue: Queue<Segment>,
    len: usize,
}

// SAFETY: the raw pointers are only followed under the lock.
unsafe impl Send for Abandoned {}

/// Segments whose heap's thread exited while they still held live blocks,
/// oldest first.
static ABANDONED: Lock<Abandoned> = Lock::new(Abandoned { queue: Queue::new(), len: 0 });

/// Is `addr` in memory hakmem has mapped: a segment's mapped part, or a
/// large block's pages (live or cached)? Reads only hakmem's metadata.
pub fn mapped_by_hakmem(addr: usize) -> bool {
    match page_map::lookup(addr) {
        Entry::Foreign => false,
        // SAFETY: the page map says this chunk is a segment: its header is mapped.
        Entry::Segment => unsafe { (*Segment::of(addr)).maps(addr) },
        _ => page_map::large_block(addr).is_some_and(|b| addr - b.base < b.pages * os::PAGE),
    }
}

/// Get an empty segment (all slab pages free) owned by nobody, or null when
/// the system refuses memory. A segment from the cache may still have dirty
/// pages (`dirty_pages`), which the new owner accounts for.
pub fn acquire() -> *mut Segment {
    let cached = {
        let mut c = SEGMENT_CACHE.lock();
        let s = c.head;
        if !s.is_null() {
            // SAFETY: cached segments are mapped and only linked here.
            unsafe {
                c.head = (*s).next;
                c.dirty -= (*s).dirty_bytes();
            }
            c.len -= 1;
        }
        s
    };
    if !cached.is_null() {
        // SAFETY: taken off the cache: an empty segment nobody references.
        unsafe {
            (*cached).next = ptr::null_mut();
            (*cached).prev = ptr::null_mut();
        }
        return cached;
    }
    let seg = os::map_aligned(FIRST_MAPPED_PAGES * SLAB_PAGE, CHUNK) as *mut Segment;
    if seg.is_null() {
        return seg;
    }
    // SAFETY: a fresh, zeroed mapping that nobody else references; zero is
    // a valid state for every other header field.
    unsafe {
        (*seg).free_pages = ALL_SLAB_PAGES;
        (*seg).mapped_pages = AtomicU32::new(FIRST_MAPPED_PAGES as u32);
    }
    if !page_map::set(seg as usize, Entry::Segment) {
        // SAFETY: just mapped, not published.
        unsafe { os::unmap_unused(seg as *mut u8, FIRST_MAPPED_PAGES * SLAB_PAGE) };
        return ptr::null_mut();
    }
    stats::count(&STATS.segments_mapped);
    seg
}

/// Give back a segment with no live slab: keep it in the cache (purged only
/// when the cache's dirty memory would exceed HAKMEM_PURGE_KB), or unmap it.
/// Returns the bytes given back to the OS.
///
/// # Safety
/// `seg` has no live slab, and no heap links to it any more.
pub unsafe fn release(seg: *mut Segment) -> usize {
    let limit = config::purge_limit();
    // SAFETY: the caller gives us sole access to an empty segment.
    unsafe {
        debug_assert_eq!((*seg).live_slabs, 0);
        (*seg).owner.store(ptr::null_mut(), Ordering::Release);
        let mut c = SEGMENT_CACHE.lock();
        if c.len < SEGMENT_CACHE_MAX {
            let mut purged = 0;
            if c.dirty + (*seg).dirty_bytes() > limit {
                purged = (*seg).purge();
            }
            c.dirty += (*seg).dirty_bytes();
            (*seg).next = c.head;
            c.head = seg;
            c.len += 1;
            return purged;
        }
        drop(c);
        unmap(seg)
    }
}

/// Unmap a segment nobody references. Returns the bytes that were still
/// committed (given back).
///
/// The header page is not unmapped at once: a thread that found the chunk
/// in the page map an instant before (freeing a foreign block that sits
/// past the mapped part) may be about to read it. It becomes a read-only
/// zero page, which reads as "no slab here" (so the pointer goes down the
/// foreign path), and is unmapped two purge epochs later.
///
/// # Safety
/// `seg` is empty and on no list.
unsafe fn unmap(seg: *mut Segment) -> usize {
    let base = seg as usize;
    // SAFETY: per contract; the page map forgets the chunk before it goes.
    unsafe {
        let dirty = (*seg).dirty_bytes();
        let mapped = (*seg).mapped_pages.load(Ordering::Relaxed) as usize * SLAB_PAGE;
        page_map::set(base, Entry::Foreign);
        os::unmap((base + os::PAGE) as *mut u8, mapped - os::PAGE);
        if os::seal(seg as *mut u8, os::PAGE) {
            bury(base);
        } else {
            os::unmap(seg as *mut u8, os::PAGE);
        }
        stats::count(&STATS.segments_unmapped);
        dirty
    }
}

/// Sealed header pages of unmapped segments, with the epoch they were
/// sealed at, oldest first.
struct Tombstones {
    pages: [(usize, u64); TOMBSTONES],
    len: usize,
}
const TOMBSTONES: usize = 128;
static TOMBSTONE_LIST: Lock<Tombstones> = Lock::new(Tombstones { pages: [(0, 0); TOMBSTONES], len: 0 });

/// Keep the sealed header page at `base` until no reader can be in it.
fn bury(base: usize) {
    let mut t = TOMBSTONE_LIST.lock();
    if t.len == TOMBSTONES {
        // Full: the oldest has waited through TOMBSTONES unmaps since.
        let (oldest, _) = t.pages[0];
        t.pages.copy_within(1.., 0);
        t.len -= 1;
        // SAFETY: our sealed page, out of the page map long ago.
        unsafe { os::unmap(oldest as *mut u8, os::PAGE) };
    }
    let len = t.len;
    t.pages[len] = (base, current_epoch());
    t.len += 1;
}

/// Unmap the sealed header pages at least two epochs old. (Younger ones
/// cost a page of address space each, no memory.)
fn exhume(e: u64) {
    let mut t = TOMBSTONE_LIST.lock();
    let n = t.pages[..t.len].iter().take_while(|&&(_, at)| at + 2 <= e).count();
    for &(page, _) in &t.pages[..n] {
        // SAFETY: our sealed page, out of the page map for two epochs.
        unsafe { os::unmap(page as *mut u8, os::PAGE) };
    }
    let len = t.len;
    t.pages.copy_within(n..len, 0);
    t.len -= n;
}

/// Decay for the cached segments: free pages unused for two epochs go back
/// to the OS. Returns the bytes purged.
pub fn age_cache(e: u64) -> usize {
    exhume(e);
    let mut c = SEGMENT_CACHE.lock();
    let mut purged = 0;
    let mut seg = c.head;
    while !seg.is_null() {
        // SAFETY: cached segments are mapped and only touched under the lock.
        unsafe {
            purged += (*seg).age(e);
            seg = (*seg).next;
        }
    }
    c.dirty -= purged;
    purged
}

/// Unmap every cached segment (malloc_trim, or an `mmap` that failed).
/// Returns the bytes given back.
pub fn trim_cache() -> usize {
    exhume(current_epoch());
    let mut released = 0;
    loop {
        let seg = {
            let mut c = SEGMENT_CACHE.lock();
            let s = c.head;
            if s.is_null() {
                return released;
            }
            // SAFETY: cached segments are mapped and only linked here.
            unsafe {
                c.head = (*s).next;
                c.dirty -= (*s).dirty_bytes();
            }
            c.len -= 1;
            s
        };
        // SAFETY: taken off the cache: empty and unreferenced. Its header
        // page was touched, so count it as given back too.
        released += unsafe { unmap(seg) } + SLAB_PAGE;
    }
}

/// Hand a segment with live blocks to whoever visits the abandoned queue
/// next.
///
/// # Safety
/// The caller owns `seg` and gives it up; its slabs are on no heap list.
pub unsafe fn abandon(seg: *mut Segment) {
    // SAFETY: the caller owns `seg`; after the owner store other threads see
    // it as abandoned, and only the lock holder links it.
    unsafe {
        (*seg).owner.store(ptr::null_mut(), Ordering::Release);
        let mut a = ABANDONED.lock();
        a.queue.push_back(seg);
        a.len += 1;
    }
    stats::count(&STATS.segments_abandoned);
}

/// How many segments are abandoned now (a hint).
pub fn abandoned_len() -> usize {
    ABANDONED.lock().len
}

/// What a visit does with the free pages of a segment it queues again.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Purge {
    /// Purge the pages unused for two epochs (the decay clock).
    Aged(u64),
    /// Purge every free page (malloc_trim, memory pressure).
    All,
}

/// What visiting abandoned segments achieved.
pub struct Reclaimed {
    /// A segment now owned by the adopter (null if none was adopted). Its
    /// remote lists are drained and its empty slabs released; its slabs are
    /// on no list yet.
    pub adopted: *mut Segment,
    /// Bytes given back to the OS (purged or unmapped).
    pub released: usize,
}

/// Visit up to `max` abandoned segments, oldest first. Each is claimed,
/// drained (remote frees taken, empty slabs released) and then: given back
/// when empty; adopted by `adopter` (if not null) when it has room — free
/// pages or a slab with free blocks; otherwise its free pages are purged
/// per `purge` and it goes to the back of the queue. Stops at the first
/// adoption.
pub fn reclaim_abandoned(max: usize, adopter: *mut Owner, purge: Purge) -> Reclaimed {
    let mut out = Reclaimed { adopted: ptr::null_mut(), released: 0 };
    for _ in 0..max {
        let seg = {
            let mut a = ABANDONED.lock();
            let s = a.queue.head;
            if s.is_null() {
                break;
            }
            // SAFETY: `s` is on the queue, under its lock.
            unsafe { a.queue.remove(s) };
            a.len -= 1;
            s
        };
        let claimer = if adopter.is_null() { visitor() } else { adopter };
        // SAFETY: queued segments are mapped; the CAS makes us their one
        // owner (only the queue's popper claims them).
        let claimed = unsafe {
            (*seg).owner.compare_exchange(ptr::null_mut(), claimer, Ordering::Acquire, Ordering::Relaxed)
        };
        debug_assert!(claimed.is_ok(), "abandoned segments have no owner");
        // SAFETY: claimed: this thread is the owner until it lets go.
        let s = unsafe { &mut *seg };
        s.drain();
        if s.dirty_bytes() > DRAINED_DIRTY_MAX {
            // Free memory of an owner that is gone: kept resident, it would
            // wait for the decay while new owners' slabs of other classes
            // touch other parts of the same pages.
            s.purge();
        }
        if s.live_slabs == 0 {
            // SAFETY: empty, on no list.
            out.released += unsafe { release(seg) };
            stats::count(&STATS.segments_reclaimed);
            continue;
        }
        let has_room =
            s.free_pages != 0 || (1..PAGES).any(|i| s.slab_at(i).is_some_and(|sl| sl.has_local_free()));
        if !adopter.is_null() && has_room {
            stats::count(&STATS.segments_adopted);
            out.adopted = seg;
            return out;
        }
        out.released += match purge {
            Purge::Aged(e) => s.age(e),
            Purge::All => s.purge(),
        };
        // SAFETY: we own it and give it up again.
        unsafe { abandon_again(seg) };
    }
    out
}

/// Queue a visited segment again (not counted as a new abandonment).
///
/// # Safety
/// The caller claimed `seg` and gives it up.
unsafe fn abandon_again(seg: *mut Segment) {
    // SAFETY: per contract.
    unsafe {
        (*seg).owner.store(ptr::null_mut(), Ordering::Release);
        let mut a = ABANDONED.lock();
        a.queue.push_back(seg);
        a.len += 1;
    }
}

/// The global locks of this module, for the fork handlers.
pub fn locks() -> [&'static crate::sync::RawLock; 3] {
    [ABANDONED.raw(), SEGMENT_CACHE.raw(), TOMBSTONE_LIST.raw()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_free_racing_a_clear_sees_the_old_slab_or_nothing() {
        let e = PageEntry {
            magic: AtomicU64::new(0),
            bias: AtomicU64::new(0),
            limit: AtomicU64::new(0),
            bin: AtomicU32::new(0),
            first_page: AtomicU8::new(0),
            class: AtomicU8::new(0),
        };
        // Addresses are only computed with, never read.
        let start = e.segment_base() + (1 << SLAB_PAGE_SHIFT);
        assert_eq!(e.carved_bin(start), None, "a zeroed entry matches nothing");
        let (class, carved) = (3, 10);
        e.set(class, 1, carved);
        let stride = STRIDE[class] as usize;
        assert_eq!(e.carved_bin(start + stride), Some(bin_offset(class)));
        let old_limit = e.limit.load(Ordering::Relaxed);
        e.clear();
        assert_eq!(e.carved_bin(start), None);
        assert_eq!(e.info().class(), 0);
        // A `free` that read the limit before the clear and the constants
        // after it still tests against one slab: block starts below its
        // carve point only.
        let (m, bias) = (e.magic.load(Ordering::Relaxed), e.bias.load(Ordering::Relaxed));
        for off in 0..(carved + 2) * stride {
            let x = ((start + off) as u64).wrapping_mul(m).wrapping_sub(bias);
            assert_eq!(x < old_limit, off % stride == 0 && off / stride < carved, "offset {off}");
        }
    }
}
