//! Statistics: the counters, and the rule that keeps them off the fast paths.
//!
//! - `STATS`: process counters of slow-path events (refills, slabs, segments,
//!   threads...), bumped only when HAKMEM_STATS is on.
//! - `LARGE` and the `out` counts of [`HeapCounters`]: always kept, on paths
//!   that map memory or move blocks between slabs and thread caches, so that
//!   `mallinfo2` and `malloc_stats` know the bytes in use without the flag.
//!   (`os` keeps the mapped and returned bytes the same way.)
//! - Per-call counts (allocations and frees per class, bytes requested, peaks
//!   of bytes in use): only in counting mode, that is with HAKMEM_STATS on.
//!   Then every thread's fast paths see an empty cache and every call takes
//!   the slow path, which counts and then uses the real cache (`thread.rs`),
//!   so with the flag off the fast paths carry no counting instruction.
//!
//! Per-thread counts live in the thread's heap (one writer, plain stores);
//! a heap's counts are folded into `FOLDED` when it is destroyed, and a
//! report sums the live heaps and `FOLDED`.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::config;
use crate::size_class::{NUM_CLASSES, STRIDE};

pub struct Stats {
    pub segments_mapped: AtomicUsize,
    pub segments_capped: AtomicUsize,
    pub segments_unmapped: AtomicUsize,
    pub segments_abandoned: AtomicUsize,
    pub segments_adopted: AtomicUsize,
    pub segments_reclaimed: AtomicUsize,
    pub refills: AtomicUsize,
    pub flushes: AtomicUsize,
    pub purges: AtomicUsize,
    pub threads_started: AtomicUsize,
    pub threads_ended: AtomicUsize,
    pub heaps_created: AtomicUsize,
    pub heaps_reaped: AtomicUsize,
    pub idle_heaps_collected: AtomicUsize,
    pub trims: AtomicUsize,
    pub map_failures: AtomicUsize,
    pub foreign_frees: AtomicUsize,
    /// Per class: blocks handed to their owner's remote list, slabs made
    /// and given back.
    pub remote_frees: [AtomicUsize; NUM_CLASSES],
    pub slabs_created: [AtomicUsize; NUM_CLASSES],
    pub slabs_released: [AtomicUsize; NUM_CLASSES],
}

pub static STATS: Stats = Stats {
    segments_mapped: AtomicUsize::new(0),
    segments_capped: AtomicUsize::new(0),
    segments_unmapped: AtomicUsize::new(0),
    segments_abandoned: AtomicUsize::new(0),
    segments_adopted: AtomicUsize::new(0),
    segments_reclaimed: AtomicUsize::new(0),
    refills: AtomicUsize::new(0),
    flushes: AtomicUsize::new(0),
    purges: AtomicUsize::new(0),
    threads_started: AtomicUsize::new(0),
    threads_ended: AtomicUsize::new(0),
    heaps_created: AtomicUsize::new(0),
    heaps_reaped: AtomicUsize::new(0),
    idle_heaps_collected: AtomicUsize::new(0),
    trims: AtomicUsize::new(0),
    map_failures: AtomicUsize::new(0),
    foreign_frees: AtomicUsize::new(0),
    remote_frees: [const { AtomicUsize::new(0) }; NUM_CLASSES],
    slabs_created: [const { AtomicUsize::new(0) }; NUM_CLASSES],
    slabs_released: [const { AtomicUsize::new(0) }; NUM_CLASSES],
};

/// Bump a counter when statistics are on.
#[inline]
pub fn count(c: &AtomicUsize) {
    add(c, 1);
}

#[inline]
pub fn add(c: &AtomicUsize, n: usize) {
    if config::stats_enabled() {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

/// Misuse reports by kind (always counted: each one is also a stderr line).
pub struct MisuseCounts {
    pub invalid_pointer: AtomicUsize,
    pub double_free: AtomicUsize,
    pub use_after_free: AtomicUsize,
    pub write_after_free: AtomicUsize,
    pub size_mismatch: AtomicUsize,
}

pub static MISUSE: MisuseCounts = MisuseCounts {
    invalid_pointer: AtomicUsize::new(0),
    double_free: AtomicUsize::new(0),
    use_after_free: AtomicUsize::new(0),
    write_after_free: AtomicUsize::new(0),
    size_mismatch: AtomicUsize::new(0),
};

/// The large tier (always kept: each operation maps, unmaps or takes a
/// lock anyway).
pub struct LargeCounts {
    pub allocs: AtomicUsize,
    pub frees: AtomicUsize,
    pub cache_hits: AtomicUsize,
    pub cache_misses: AtomicUsize,
    /// realloc growths done in place by mremap, and by moving the pages.
    pub grown_in_place: AtomicUsize,
    pub moved: AtomicUsize,
    pub live_blocks: AtomicUsize,
    pub live_bytes: AtomicUsize,
    pub peak_bytes: AtomicUsize,
}

pub static LARGE: LargeCounts = LargeCounts {
    allocs: AtomicUsize::new(0),
    frees: AtomicUsize::new(0),
    cache_hits: AtomicUsize::new(0),
    cache_misses: AtomicUsize::new(0),
    grown_in_place: AtomicUsize::new(0),
    moved: AtomicUsize::new(0),
    live_blocks: AtomicUsize::new(0),
    live_bytes: AtomicUsize::new(0),
    peak_bytes: AtomicUsize::new(0),
};

impl LargeCounts {
    /// A large block of `bytes` handed out.
    pub fn allocated(&self, bytes: usize) {
        self.allocs.fetch_add(1, Ordering::Relaxed);
        self.live_blocks.fetch_add(1, Ordering::Relaxed);
        let now = self.live_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak_bytes.fetch_max(now, Ordering::Relaxed);
        counted_live(bytes as u64, None);
    }

    /// A large block of `bytes` given back.
    pub fn freed(&self, bytes: usize) {
        self.frees.fetch_add(1, Ordering::Relaxed);
        self.live_blocks.fetch_sub(1, Ordering::Relaxed);
        self.live_bytes.fetch_sub(bytes, Ordering::Relaxed);
        counted_live(bytes.wrapping_neg() as u64, None);
    }

    /// A large block resized from `old` to `new` bytes in place.
    pub fn resized(&self, old: usize, new: usize) {
        let now = if new >= old {
            self.live_bytes.fetch_add(new - old, Ordering::Relaxed) + (new - old)
        } else {
            self.live_bytes.fetch_sub(old - new, Ordering::Relaxed) - (old - new)
        };
        self.peak_bytes.fetch_max(now, Ordering::Relaxed);
        counted_live(new.wrapping_sub(old) as u64, None);
    }
}

/// A counter read by reports at any time. A heap's counters have one writer
/// at a time (its owner, or whoever holds its lock): `add`, a plain load and
/// store. `FOLDED`'s are written by any thread: `add_shared`.
pub struct Counter(AtomicU64);

impl Counter {
    pub const fn new() -> Counter {
        Counter(AtomicU64::new(0))
    }

    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }

    #[inline]
    pub fn sub(&self, n: u64) {
        self.add(n.wrapping_neg());
    }

    /// Add `n` (wrapping) when other threads may add too.
    pub fn add_shared(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    fn take(&self) -> u64 {
        self.0.swap(0, Ordering::Relaxed)
    }
}

impl Default for Counter {
    fn default() -> Self {
        Self::new()
    }
}

/// One heap's counts (also the fold of destroyed heaps).
pub struct HeapCounters {
    /// Blocks taken out of slabs into the thread's hands, minus blocks given
    /// back (wrapping: a heap may give back blocks another heap took).
    /// Always kept, by the slow paths.
    pub out: [Counter; NUM_CLASSES],
    /// Counting mode: allocations and frees per class, bytes requested.
    pub allocs: [Counter; NUM_CLASSES],
    pub frees: [Counter; NUM_CLASSES],
    pub requested: Counter,
}

impl HeapCounters {
    pub const fn new() -> HeapCounters {
        HeapCounters {
            out: [const { Counter::new() }; NUM_CLASSES],
            allocs: [const { Counter::new() }; NUM_CLASSES],
            frees: [const { Counter::new() }; NUM_CLASSES],
            requested: Counter::new(),
        }
    }

    /// Move these counts into `FOLDED` (the heap is being destroyed).
    pub fn fold(&self) {
        let f = &FOLDED;
        for c in 0..NUM_CLASSES {
            f.out[c].add_shared(self.out[c].take());
            f.allocs[c].add_shared(self.allocs[c].take());
            f.frees[c].add_shared(self.frees[c].take());
        }
        f.requested.add_shared(self.requested.take());
    }
}

impl Default for HeapCounters {
    fn default() -> Self {
        Self::new()
    }
}

/// The counts of destroyed heaps, of frees by threads without a heap, and
/// of large requests (written with `add_shared`).
pub static FOLDED: HeapCounters = HeapCounters::new();

/// Counting mode: bytes in use per class and in total (large blocks
/// included), as of the last call, and their highest values. Global, so the
/// peaks are the process's, not a sum of per-thread peaks.
pub struct Live {
    pub class: [AtomicU64; NUM_CLASSES],
    pub class_peak: [AtomicU64; NUM_CLASSES],
    pub total: AtomicU64,
    pub total_peak: AtomicU64,
}

pub static LIVE: Live = Live {
    class: [const { AtomicU64::new(0) }; NUM_CLASSES],
    class_peak: [const { AtomicU64::new(0) }; NUM_CLASSES],
    total: AtomicU64::new(0),
    total_peak: AtomicU64::new(0),
};

/// Values are wrapping: frees of blocks allocated before counting began
/// (the loader's, before the flags are read) can take them below zero,
/// which reports show as 0.
fn bump_live(now: &AtomicU64, peak: &AtomicU64, delta: u64) {
    let v = now.fetch_add(delta, Ordering::Relaxed).wrapping_add(delta);
    if (v as i64) > 0 && v > peak.load(Ordering::Relaxed) {
        peak.fetch_max(v, Ordering::Relaxed);
    }
}

/// Counting mode: `delta` bytes (wrapping) came into use, of `class` if any.
pub fn counted_live(delta: u64, class: Option<usize>) {
    if !config::stats_enabled() {
        return;
    }
    if let Some(c) = class {
        bump_live(&LIVE.class[c], &LIVE.class_peak[c], delta);
    }
    bump_live(&LIVE.total, &LIVE.total_peak, delta);
}

/// Counting mode: a block of `class` was handed out for a request of
/// `size` bytes, by the heap whose counters are `h`.
#[inline]
pub fn counted_alloc(h: &HeapCounters, class: usize, size: usize) {
    h.allocs[class].add(1);
    h.requested.add(size as u64);
    counted_live(STRIDE[class] as u64, Some(class));
}

/// Counting mode: a block of `class` was freed (`h`: the freeing thread's
/// counters, or none for a thread without a heap).
#[inline]
pub fn counted_free(h: Option<&HeapCounters>, class: usize) {
    match h {
        Some(h) => h.frees[class].add(1),
        None => {
            FOLDED.frees[class].add_shared(1);
        }
    }
    counted_live((STRIDE[class] as u64).wrapping_neg(), Some(class));
}

/// Signed view of a wrapping count, clamped at zero.
pub fn clamp(v: u64) -> u64 {
    if (v as i64) < 0 {
        0
    } else {
        v
    }
}
