//! Process-wide reclamation: memory whose owner is idle or gone still comes
//! back (DESIGN.md, invariant 8).
//!
//! Owner-only slabs would otherwise hold memory forever when their owner
//! stops calling the allocator: a thread that exited (its segments are
//! abandoned), a thread that is alive but idle (blocks others freed into its
//! slabs wait on remote lists), a thread that died without its exit hook
//! (its heap and cache are orphaned). Four triggers reach them, each with
//! bounded work per call:
//!
//! - the decay clock: after a slow path, the one thread that advances the
//!   purge epoch (every HAKMEM_PURGE_DELAY_MS) ages the cached segments,
//!   visits a few abandoned segments (drains them, releases what emptied,
//!   purges aged pages) and a few heaps (reaps those whose thread is gone,
//!   collects idle ones);
//! - frees into abandoned segments: a thread that has freed 4 MiB into them
//!   visits a few and purges all their free pages — without waiting for the
//!   clock, which a thread whose grown bins keep it on its fast paths no
//!   longer drives;
//! - thread start: a couple of the oldest heaps are checked for a dead
//!   thread, so heaps without an exit hook do not pile up under thread churn;
//! - `malloc_trim`, and an allocation that found no memory: everything —
//!   every heap, every abandoned segment, the segment and large caches.
//!
//! Heaps are only ever `try_lock`ed here: a visitor never waits for an owner.

use core::ptr;

use crate::heap::{self, Heap, Visited};
use crate::large;
use crate::os;
use crate::segment::{self, Purge};
use crate::stats::{self, STATS};

/// Heaps visited per decay epoch.
const DECAY_HEAPS: usize = 8;
/// Abandoned segments visited per decay epoch.
const DECAY_SEGMENTS: usize = 16;
/// A heap that freed this many bytes into abandoned segments visits them.
pub const ABANDONED_FREED_VISIT: usize = 4 << 20;

/// Heaps checked for a dead thread at each thread start.
const START_CHECKS: usize = 2;

/// What a visit to a live, idle heap does.
#[derive(Clone, Copy)]
enum Depth {
    /// Decay at this epoch: collect the heap if its owner has been idle.
    Decay(u64),
    /// Thread start: only reap dead threads' heaps.
    ReapOnly,
    /// Everything free goes back (malloc_trim, memory pressure).
    All,
}

/// Called after every slow path of heap `me`: on the epoch's first, do the
/// process-wide decay work. `abandoned_freed`: `me` has freed
/// `ABANDONED_FREED_VISIT` bytes into abandoned segments since it last said
/// so; visit them and give back their free pages.
pub fn after_slow_path(me: *mut Heap, abandoned_freed: bool) {
    let (e, advanced) = segment::purge_epoch();
    if advanced {
        segment::age_cache(e);
        segment::reclaim_abandoned(DECAY_SEGMENTS, ptr::null_mut(), Purge::Aged(e));
        heap::visit(DECAY_HEAPS, |h| visit_heap(h, me, Depth::Decay(e), &mut 0));
    }
    if abandoned_freed {
        // Their owner is gone: the pages serve again only if some thread
        // adopts the segment, so they need not wait for the clock.
        segment::reclaim_abandoned(DECAY_SEGMENTS, ptr::null_mut(), Purge::All);
    }
}

/// Before a thread gets a heap: reap a dead thread's heap or two.
pub fn before_thread_start() {
    heap::visit(START_CHECKS, |h| visit_heap(h, ptr::null_mut(), Depth::ReapOnly, &mut 0));
}

/// Give back everything free that is not in `me`'s own thread cache: every
/// other heap's free slabs and pages (their owners' caches stay), every
/// abandoned segment's, and the segment and large caches. Returns the bytes
/// given back to the OS.
pub fn trim_all(me: *mut Heap) -> usize {
    stats::count(&STATS.trims);
    let mut released = 0;
    heap::visit(heap::registered(), |h| visit_heap(h, me, Depth::All, &mut released));
    released += segment::reclaim_abandoned(segment::abandoned_len(), ptr::null_mut(), Purge::All).released;
    released += segment::trim_cache();
    released += large::trim();
    released
}

/// Visit heap `h` (not `me`, whose owner is the caller): reap it if its
/// thread is gone, else collect it as `depth` says. Adds the bytes given
/// back to `released`.
fn visit_heap(h: *mut Heap, me: *mut Heap, depth: Depth, released: &mut usize) -> Visited {
    if h == me {
        return Visited::Keep;
    }
    // SAFETY: the registry is locked by `heap::visit`: `h` stays a valid,
    // registered heap for this call; its state is ours while we hold its lock.
    let h = unsafe { &mut *h };
    if !h.lock().try_lock() {
        return Visited::Keep;
    }
    if !os::thread_alive(h.tid()) {
        // Its thread died without the exit hook (or did not survive fork):
        // nobody else can give its cache and slabs back.
        h.flush_cache_checked();
        h.teardown();
        h.lock().unlock();
        return Visited::Destroyed;
    }
    match depth {
        Depth::ReapOnly => {}
        Depth::Decay(e) => {
            if h.idle_at(e) {
                stats::count(&STATS.idle_heaps_collected);
                *released += h.collect();
            }
        }
        Depth::All => *released += h.collect() + h.purge(),
    }
    h.lock().unlock();
    Visited::Keep
}
