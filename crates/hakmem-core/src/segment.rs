//! Segments: 4 MiB chunks, 4 MiB aligned, that hold slabs.
//!
//! ```text
//!  segment base (chunk aligned)
//!  | slab page 0: Segment header  | slab page 1 | ... | slab page 63 |
//!                                 \___ slab (1..16 pages, one class) ___/
//! ```
//!
//! The header holds the owner heap, a bitmap of free slab pages, a per-page
//! table `(class, first page of its slab)` that `free` reads to classify a
//! pointer, and the slab descriptors (indexed by their first page). Everything
//! in a segment belongs to one heap (its owner); a segment whose thread
//! exited is *abandoned* (owner null) until another heap adopts it with a CAS.
//!
//! Released segments are kept in a small global cache (so a stale pointer into
//! one is still recognised and reported, and a new thread reuses warm pages),
//! or unmapped.

use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU16, AtomicU64, Ordering};

use crate::config;
use crate::os;
use crate::page_map::{self, Entry, CHUNK, CHUNK_MASK};
use crate::size_class::{SLAB_PAGE, SLAB_PAGES, SLAB_PAGE_SHIFT};
use crate::slab::Slab;
use crate::stats::{self, STATS};
use crate::sync::Lock;

pub const PAGES: usize = CHUNK / SLAB_PAGE;
const _: () = assert!(PAGES == 64, "the page bitmaps are u64");
const _: () = assert!(core::mem::size_of::<Segment>() <= SLAB_PAGE);

/// Free segments kept mapped (decommitted) for reuse.
const SEGMENT_CACHE_MAX: usize = 8;

/// Who owns a segment: a heap, seen from this layer only as an identity.
pub enum Owner {}

#[repr(C)]
pub struct Segment {
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
    /// Links of the owner heap's segment list, or of a global list.
    pub next: *mut Segment,
    pub prev: *mut Segment,
    /// Per slab page: `class | first_page << 8`; class 0 = no live slab.
    pub page_info: [AtomicU16; PAGES],
    /// Slab descriptors, valid at the index of each slab's first page.
    pub slabs: [Slab; PAGES],
}

const ALL_SLAB_PAGES: u64 = !1;

/// The purge clock, shared by all heaps so that pages keep aging when their
/// segment changes owner: epoch number, and when the epoch began.
static EPOCH: AtomicU64 = AtomicU64::new(0);
static EPOCH_START: AtomicU64 = AtomicU64::new(0);

/// The current purge epoch; advances every HAKMEM_PURGE_DELAY_MS, as seen
/// by whichever thread looks first.
pub fn purge_epoch() -> u64 {
    let delay = config::get(config::PURGE_DELAY_MS) as u64 * 1_000_000;
    let now = os::coarse_now_ns();
    let start = EPOCH_START.load(Ordering::Relaxed);
    if now.wrapping_sub(start) >= delay
        && EPOCH_START.compare_exchange(start, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    {
        return EPOCH.fetch_add(1, Ordering::Relaxed) + 1;
    }
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

    /// The slab that page `i` belongs to, if any.
    #[inline]
    pub fn slab_at(&mut self, i: usize) -> Option<&mut Slab> {
        let info = self.page_info[i].load(Ordering::Relaxed);
        if info & 0xff == 0 {
            return None;
        }
        Some(&mut self.slabs[(info >> 8) as usize])
    }

    /// Find `n` contiguous free pages; returns the first.
    fn find_run(&self, n: usize) -> Option<usize> {
        let mut m = self.free_pages;
        for j in 1..n {
            m &= self.free_pages >> j;
        }
        (m != 0).then(|| m.trailing_zeros() as usize)
    }

    /// Carve a slab of `class` out of free pages. Returns the slab and how
    /// many of its bytes were dirty (committed) free memory before.
    pub fn alloc_slab(&mut self, class: usize) -> Option<(&mut Slab, usize)> {
        let n = SLAB_PAGES[class] as usize;
        let first = self.find_run(n)?;
        let mask = run_mask(first, n);
        let dirty = (self.dirty_pages & mask).count_ones() as usize * SLAB_PAGE;
        self.free_pages &= !mask;
        self.dirty_pages &= !mask;
        self.aged_pages &= !mask;
        self.live_slabs += 1;
        let info = class as u16 | (first as u16) << 8;
        for i in first..first + n {
            self.page_info[i].store(info, Ordering::Relaxed);
        }
        let base = self.page_addr(first);
        let slab = &mut self.slabs[first];
        slab.init(base, class);
        stats::count(&STATS.slabs_created);
        Some((slab, dirty))
    }

    /// Give the pages of an empty slab back to the segment (they stay dirty).
    /// Returns the bytes that became dirty.
    pub fn release_slab(&mut self, first: usize) -> usize {
        let slab = &self.slabs[first];
        debug_assert_eq!(slab.used, 0);
        debug_assert!(slab.remote.is_empty());
        let n = slab.pages as usize;
        for i in first..first + n {
            self.page_info[i].store(0, Ordering::Relaxed);
        }
        let mask = run_mask(first, n);
        self.free_pages |= mask;
        self.dirty_pages |= mask;
        self.live_slabs -= 1;
        stats::count(&STATS.slabs_released);
        n * SLAB_PAGE
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
            let info = self.page_info[i].load(Ordering::Relaxed);
            if info & 0xff == 0 {
                assert!(self.free_pages & (1 << i) != 0, "page {i} neither free nor in a slab");
                i += 1;
                continue;
            }
            assert_eq!((info >> 8) as usize, i, "slab starts at its first page");
            let n = self.slabs[i].pages as usize;
            for j in i..i + n {
                assert_eq!(self.page_info[j].load(Ordering::Relaxed), info);
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

struct SegmentList {
    head: *mut Segment,
    len: usize,
    /// Dirty (still committed) free bytes in the listed segments.
    dirty: usize,
}

// SAFETY: the raw pointers are only followed under the lock.
unsafe impl Send for SegmentList {}

/// Decommitted free segments, ready for reuse.
static CACHE: Lock<SegmentList> = Lock::new(SegmentList { head: ptr::null_mut(), len: 0, dirty: 0 });
/// Segments whose heap's thread exited while they still held live blocks.
static ABANDONED: Lock<SegmentList> = Lock::new(SegmentList { head: ptr::null_mut(), len: 0, dirty: 0 });

/// Get an empty segment (all slab pages free) owned by nobody. A segment
/// from the cache may still have dirty pages (`dirty_pages`), which the new
/// owner accounts for.
pub fn acquire() -> *mut Segment {
    let cached = {
        let mut c = CACHE.lock();
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
    let seg = os::map_aligned(CHUNK, CHUNK) as *mut Segment;
    if seg.is_null() {
        return seg;
    }
    if !page_map::set(seg as usize, Entry::Segment) {
        // SAFETY: just mapped, not published.
        unsafe { os::unmap(seg as *mut u8, CHUNK) };
        return ptr::null_mut();
    }
    stats::count(&STATS.segments_mapped);
    // SAFETY: a fresh, zeroed mapping that nobody else references; zero is
    // a valid state for every other header field.
    unsafe {
        (*seg).free_pages = ALL_SLAB_PAGES;
    }
    seg
}

/// Give back a segment with no live slab: keep it in the cache (purged only
/// when the cache's dirty memory would exceed HAKMEM_PURGE_KB), or unmap it.
///
/// # Safety
/// `seg` has no live slab, and no heap links to it any more.
pub unsafe fn release(seg: *mut Segment) {
    let limit = config::get(config::PURGE_KB).saturating_mul(1024);
    // SAFETY: the caller gives us sole access to an empty segment.
    unsafe {
        debug_assert_eq!((*seg).live_slabs, 0);
        (*seg).owner.store(ptr::null_mut(), Ordering::Release);
        let mut c = CACHE.lock();
        if c.len < SEGMENT_CACHE_MAX {
            if c.dirty + (*seg).dirty_bytes() > limit {
                (*seg).purge();
            }
            c.dirty += (*seg).dirty_bytes();
            (*seg).next = c.head;
            c.head = seg;
            c.len += 1;
            return;
        }
        drop(c);
        page_map::set(seg as usize, Entry::Foreign);
        os::unmap(seg as *mut u8, CHUNK);
    }
    stats::count(&STATS.segments_unmapped);
}

/// Hand a segment with live blocks to whichever heap adopts it next.
///
/// # Safety
/// The caller owns `seg` and gives it up; its slabs are on no heap list.
pub unsafe fn abandon(seg: *mut Segment) {
    // SAFETY: the caller owns `seg`; after the owner store other threads see
    // it as abandoned, and only the lock holder links it.
    unsafe {
        (*seg).owner.store(ptr::null_mut(), Ordering::Release);
        let mut a = ABANDONED.lock();
        (*seg).next = a.head;
        a.head = seg;
        a.len += 1;
    }
    stats::count(&STATS.segments_abandoned);
}

/// Take an abandoned segment and make `heap` its owner.
pub fn adopt(heap: *mut Owner) -> *mut Segment {
    let seg = {
        let mut a = ABANDONED.lock();
        let s = a.head;
        if s.is_null() {
            return s;
        }
        // SAFETY: abandoned segments are mapped and only linked here.
        a.head = unsafe { (*s).next };
        a.len -= 1;
        s
    };
    // SAFETY: the segment is mapped; the CAS makes us its one owner.
    let claimed =
        unsafe { (*seg).owner.compare_exchange(ptr::null_mut(), heap, Ordering::Acquire, Ordering::Relaxed) };
    debug_assert!(claimed.is_ok(), "abandoned segments have no owner");
    stats::count(&STATS.segments_adopted);
    seg
}

/// The global locks of this module, for the fork handlers.
pub fn locks() -> [&'static crate::sync::RawLock; 2] {
    [CACHE.raw(), ABANDONED.raw()]
}
