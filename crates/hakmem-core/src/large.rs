//! The large tier: blocks over 256 KiB get their own mapping.
//!
//! A large block starts on a chunk (4 MiB) boundary and maps exactly its own
//! pages, so it costs address space by the page, as glibc's mmapped chunks
//! do. The page map marks every chunk it covers and records its size, so a
//! pointer is classified without touching the block, and an address past
//! its end (where someone else's mapping may sit) is known not to be ours.
//! Nothing is stored in the block or in front of it. `realloc` grows a block
//! in place when the pages after it are free, and otherwise moves it with
//! `mremap`, which moves page tables instead of copying bytes, needing no
//! more address space than the old and the new size.
//!
//! Freed blocks are kept mapped in a small cache (HAKMEM_LARGE_CACHE_MB), so
//! that a free followed by a malloc of a similar size costs no `mmap`; a
//! cached block bigger than the request is cut down to it.
//!
//! Blocks of HAKMEM_THP_MB (32 MiB) and more ask for transparent huge pages
//! when they are mapped or grow past that size: a block that big is most
//! likely one array used whole (a compressor's match finder, a table), where
//! 2 MiB pages take 512 times fewer faults and TLB entries. Blocks from
//! 4 MiB up to that size ask for them once the program is seen to touch
//! most of such blocks: probes stay on 4 KiB pages, and when one is freed
//! `mincore` tells how much of it was touched. A program that touches a few
//! pages of many blocks (bench_malloc_large: 9 pages of each 5–25 MiB block)
//! would otherwise fault in 2 MiB for each page it touches. The page map
//! records each block's advice and whether it is a probe; a cached block
//! that asked for huge pages is unmapped rather than handed out on small
//! ones (no `madvise` takes the advice back without also refusing what a
//! kernel set to give huge pages `always` would give). A block cut down by
//! `realloc` keeps its advice.

use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crate::config;
use crate::os::{self, PAGE};
use crate::page_map::{self, Entry, CHUNK};
use crate::stats::LARGE;
use crate::sync::Lock;

/// Requests above this fail at once: no mapping can hold them.
pub const MAX_REQUEST: usize = 1 << 46;

const CACHE_SLOTS: usize = 32;

#[derive(Clone, Copy)]
struct Cached {
    base: usize,
    /// Bytes mapped (whole pages).
    bytes: usize,
    /// Bytes that may be resident (the usable size when it was freed).
    touched: usize,
    /// Advised for transparent huge pages.
    huge: bool,
}

struct Cache {
    slots: [Cached; CACHE_SLOTS],
    len: usize,
    bytes: usize,
}

const EMPTY: Cached = Cached { base: 0, bytes: 0, touched: 0, huge: false };

static LARGE_CACHE: Lock<Cache> = Lock::new(Cache { slots: [EMPTY; CACHE_SLOTS], len: 0, bytes: 0 });

/// Chunks whose page-map entries describe a block of `bytes` bytes.
#[inline]
fn chunks_for(bytes: usize) -> usize {
    bytes.div_ceil(CHUNK)
}

/// Usable bytes for a request: whole pages.
fn usable_for(size: usize) -> Option<usize> {
    if size > MAX_REQUEST {
        return None;
    }
    os::round_up(size.max(1), PAGE)
}

/// A large block of at least `size` bytes aligned to `align` (a power of
/// two). Returns the block and whether it is known to be zeroed, or null.
pub fn alloc(size: usize, align: usize) -> (*mut u8, bool) {
    let Some(bytes) = usable_for(size) else {
        return (ptr::null_mut(), false);
    };
    let pages = bytes / PAGE;
    // The advice already decided for a cached block that could not serve.
    let mut decided = None;
    if align <= CHUNK {
        if let Some(c) = cache_take(bytes) {
            let a = advice(c.bytes);
            if c.huge && !a.huge {
                // Its advice cannot be taken back (see the module comment):
                // a fresh mapping serves instead, with the advice decided
                // here (deciding again would skip a probe).
                // SAFETY: out of the cache: free and ours.
                unsafe { release(c.base as *mut u8, c.bytes) };
                decided = Some(a);
            } else {
                // SAFETY: a cached block is free memory of ours, of `c.bytes`
                // (at least `bytes`), with no live data. Its previous owner
                // may have made it non-inheritable (`MADV_DONTFORK`, as RDMA
                // stacks do); the new owner expects a plain mapping.
                unsafe {
                    os::allow_fork_inherit(c.base as *mut u8, c.bytes);
                    if a.huge && !c.huge {
                        os::advise_huge(c.base as *mut u8, c.bytes);
                    }
                    if a.probe {
                        // What earlier uses touched must not count.
                        let (from, len) = measured_window(c.bytes);
                        os::purge((c.base + from) as *mut u8, len);
                    }
                }
                let head = Entry::LargeHead { pages: c.bytes / PAGE, huge: a.huge, probe: a.probe };
                page_map::set(c.base, head);
                LARGE.cache_hits.fetch_add(1, Ordering::Relaxed);
                LARGE.allocated(c.bytes);
                return (c.base as *mut u8, false);
            }
        }
    }
    let p = os::map_aligned(bytes, align.max(CHUNK));
    if p.is_null() {
        return (p, false);
    }
    let a = decided.unwrap_or_else(|| advice(bytes));
    if !page_map::set_large(
        p as usize,
        chunks_for(bytes),
        Entry::LargeHead { pages, huge: a.huge, probe: a.probe },
    ) {
        // SAFETY: just mapped, never published.
        unsafe { os::unmap_unused(p, bytes) };
        return (ptr::null_mut(), false);
    }
    if a.huge {
        // SAFETY: our fresh block, mapped whole.
        unsafe { os::advise_huge(p, bytes) };
    }
    if align <= CHUNK {
        LARGE.cache_misses.fetch_add(1, Ordering::Relaxed);
    }
    LARGE.allocated(bytes);
    (p, true)
}

/// Blocks from this size (and below HAKMEM_THP_MB) ask for huge pages while
/// the program touches most of such blocks.
const THP_LEARN_MIN: usize = 4 << 20;

/// Blocks of the learning range stay on 4 KiB pages as probes until one of
/// them has been freed and measured; while blocks are found dense, one in
/// this many is a probe, so that its free can tell how much of it was
/// touched. (A program that frees none of them has nothing to learn from:
/// its blocks stay on 4 KiB pages. Advising them all until the first free
/// made the untimed first fill of `bench_malloc_large` peak at 209 MiB
/// instead of 4.6 MiB: 2 MiB for each page it touches.)
const PROBE_EVERY: u32 = 8;

/// While blocks are found sparse, one allocation in this many is a probe.
const SPARSE_PROBE_EVERY: u32 = 256;

/// What is measured of a block: its middle MiB. `mincore` over a whole
/// 25 MiB block costs some 50 µs; a program that touches a block whole
/// touches its middle, one that touches a few pages rarely fills it.
const MEASURED: usize = 1 << 20;
const _: () = assert!(MEASURED <= THP_LEARN_MIN, "the window lies inside every measured block");

/// Was most of the last measured block of the learning range resident?
static DENSE: AtomicBool = AtomicBool::new(false);
/// A probe has been measured.
static MEASURED_ONCE: AtomicBool = AtomicBool::new(false);
static PROBES_DUE: AtomicU32 = AtomicU32::new(0);

/// Is `bytes` in the learning range (`at`: HAKMEM_THP_MB in bytes)?
fn learning(bytes: usize, at: usize) -> bool {
    bytes >= THP_LEARN_MIN && bytes < at
}

/// What a block about to be handed out asks for.
#[derive(Clone, Copy)]
struct Advice {
    /// Transparent huge pages.
    huge: bool,
    /// On 4 KiB pages, to be measured when freed.
    probe: bool,
}

/// The advice for a block of `bytes` about to be handed out.
fn advice(bytes: usize) -> Advice {
    let at = config::get(config::THP_MB) << 20;
    let (huge, probe) = if at == 0 || bytes < THP_LEARN_MIN.min(at) {
        (false, false)
    } else if bytes >= at {
        (true, false)
    } else if !MEASURED_ONCE.load(Ordering::Relaxed) {
        (false, true)
    } else if !DENSE.load(Ordering::Relaxed) {
        (false, PROBES_DUE.fetch_add(1, Ordering::Relaxed) % SPARSE_PROBE_EVERY == 0)
    } else {
        let probe = PROBES_DUE.fetch_add(1, Ordering::Relaxed) % PROBE_EVERY == PROBE_EVERY - 1;
        (!probe, probe)
    };
    Advice { huge, probe }
}

/// The measured window of a block of `bytes` (at least `MEASURED`): offset
/// and length, page aligned.
fn measured_window(bytes: usize) -> (usize, usize) {
    ((bytes - MEASURED) / 2 / PAGE * PAGE, MEASURED)
}

/// A probe is being freed: note whether the program touched most of it.
///
/// # Safety
/// `[p, p + bytes)` is a large block of ours, mapped whole, of at least
/// `MEASURED` bytes.
unsafe fn learn(p: *mut u8, bytes: usize) {
    let (from, len) = measured_window(bytes);
    // SAFETY: per contract; the window lies inside the block.
    let resident = unsafe { os::resident_pages(p.add(from), len) };
    DENSE.store(resident * 2 >= len / PAGE, Ordering::Relaxed);
    MEASURED_ONCE.store(true, Ordering::Relaxed);
}

/// Does a block growing from `old_bytes` to `bytes` reach HAKMEM_THP_MB?
fn reaches_thp(old_bytes: usize, bytes: usize) -> bool {
    let at = config::get(config::THP_MB) << 20;
    at != 0 && old_bytes < at && bytes >= at
}

/// The advice recorded for the live block at `base`: huge pages, probe.
fn advice_of(base: usize) -> (bool, bool) {
    match page_map::lookup(base) {
        Entry::LargeHead { huge, probe, .. } => (huge, probe),
        _ => (false, false),
    }
}

/// Usable size of a large block with `pages` usable pages.
#[inline]
pub fn usable_size(pages: usize) -> usize {
    pages * PAGE
}

/// Free a large block (`p` is the start of a block with `pages` pages).
///
/// # Safety
/// `p` is a live large block; the caller gives it up.
pub unsafe fn free(p: *mut u8, pages: usize) {
    let bytes = pages * PAGE;
    LARGE.freed(bytes);
    let (huge, probe) = advice_of(p as usize);
    if probe && learning(bytes, config::get(config::THP_MB) << 20) {
        // SAFETY: the caller's live block, mapped whole, in the range.
        unsafe { learn(p, bytes) };
    }
    let limit = config::get(config::LARGE_CACHE_MB).saturating_mul(1 << 20);
    let mut evicted = [EMPTY; 4];
    let mut n_evicted = 0;
    let kept = if bytes <= limit {
        let mut c = LARGE_CACHE.lock();
        // Make room: evict the oldest entries.
        while (c.len == CACHE_SLOTS || c.bytes + bytes > limit) && c.len > 0 && n_evicted < evicted.len() {
            evicted[n_evicted] = c.slots[0];
            n_evicted += 1;
            c.bytes -= c.slots[0].touched;
            let len = c.len;
            c.slots.copy_within(1..len, 0);
            c.len -= 1;
        }
        if c.len < CACHE_SLOTS && c.bytes + bytes <= limit {
            page_map::set(p as usize, Entry::LargeFree { pages });
            let len = c.len;
            c.slots[len] = Cached { base: p as usize, bytes, touched: bytes, huge };
            c.len += 1;
            c.bytes += bytes;
            true
        } else {
            false
        }
    } else {
        false
    };
    for e in &evicted[..n_evicted] {
        // SAFETY: evicted blocks are free and no longer in the cache.
        unsafe { release(e.base as *mut u8, e.bytes) };
    }
    if !kept {
        // SAFETY: the caller gave the block up.
        unsafe { release(p, bytes) };
    }
}

/// Unmap a large mapping, clearing its page-map entries first so that the
/// address range is never described wrongly once someone else maps it.
///
/// # Safety
/// `[p, p + bytes)` is a free large mapping.
unsafe fn release(p: *mut u8, bytes: usize) {
    page_map::set_large(p as usize, chunks_for(bytes), Entry::Foreign);
    // SAFETY: forwarded contract.
    unsafe { os::unmap(p, bytes) };
}

/// Cut a block that is not live (or not visible to anyone) from `old` to
/// `new` bytes: the entries past the new end are cleared before the pages
/// go, and the head is left to the caller.
///
/// # Safety
/// `[base, base + old)` is a hakmem large mapping whose pages past `new`
/// hold no live data.
unsafe fn cut(base: usize, old: usize, new: usize) {
    let (keep, had) = (chunks_for(new), chunks_for(old));
    if had > keep {
        page_map::set_large(base + keep * CHUNK, had - keep, Entry::Foreign);
    }
    // SAFETY: per contract.
    unsafe { os::unmap((base + new) as *mut u8, old - new) };
}

/// Surplus a cached block may carry into the block it serves, as a fraction
/// of the request (1/4, the spacing of jemalloc's large size classes): its
/// pages stay mapped, and a cut would cost an `munmap` and, in a process
/// with threads on other CPUs, a TLB shootdown on each of them.
const SURPLUS_SHIFT: u32 = 2;

/// The smallest cached block of at least `bytes` bytes (newest first among
/// equals, its pages are the likeliest to be warm), cut down to `bytes`
/// unless its surplus is within `bytes >> SURPLUS_SHIFT`.
fn cache_take(bytes: usize) -> Option<Cached> {
    let mut c = LARGE_CACHE.lock();
    let mut best: Option<usize> = None;
    for i in (0..c.len).rev() {
        let n = c.slots[i].bytes;
        if n >= bytes && best.is_none_or(|b| n < c.slots[b].bytes) {
            best = Some(i);
            if n == bytes {
                break;
            }
        }
    }
    let i = best?;
    let e = c.slots[i];
    let len = c.len;
    c.slots.copy_within(i + 1..len, i);
    c.len -= 1;
    c.bytes -= e.touched;
    drop(c);
    if e.bytes - bytes <= bytes >> SURPLUS_SHIFT {
        return Some(e);
    }
    // Its head still says free: nobody else touches it now.
    page_map::set(e.base, Entry::LargeFree { pages: bytes / PAGE });
    // SAFETY: the surplus pages are free memory of this cached block.
    unsafe { cut(e.base, e.bytes, bytes) };
    Some(Cached { base: e.base, bytes, touched: e.touched.min(bytes), huge: e.huge })
}

/// Resize a large block in place or by moving its pages. Returns the block
/// (maybe moved) or null, in which case the old block is untouched.
/// `new_size` must be above the mid tier.
///
/// # Safety
/// `p` is a live large block of `pages` pages.
pub unsafe fn realloc(p: *mut u8, pages: usize, new_size: usize) -> *mut u8 {
    let Some(new_bytes) = usable_for(new_size) else {
        return ptr::null_mut();
    };
    let old_bytes = pages * PAGE;
    let base = p as usize;
    // A resized block is no probe: what it holds is not one use's touches.
    let old_huge = advice_of(base).0;
    let huge = old_huge || reaches_thp(old_bytes, new_bytes);
    let head = Entry::LargeHead { pages: new_bytes / PAGE, huge, probe: false };
    // Below, `p` is a live large mapping of `old_bytes` that the caller
    // owns; the pages unmapped lie past the new size, inside it.
    if new_bytes <= old_bytes {
        page_map::set(base, head);
        if new_bytes < old_bytes {
            // SAFETY: past the new size, inside the block: no live data.
            unsafe { cut(base, old_bytes, new_bytes) };
        }
        LARGE.resized(old_bytes, new_bytes);
        return p;
    }
    let (old_chunks, new_chunks) = (chunks_for(old_bytes), chunks_for(new_bytes));
    // A failed attempt below is not an error of the caller's call.
    let saved_errno = os::errno();
    // Grow in place when the address space after the block is free.
    // SAFETY: `p` is the whole mapping; growing in place moves nothing.
    let grown = unsafe { os::remap(p, old_bytes, new_bytes, ptr::null_mut()) };
    if !grown.is_null() {
        if page_map::set_large(base, new_chunks, head) {
            if huge && !old_huge {
                // SAFETY: `p` is our block, now `new_bytes` long.
                unsafe { os::advise_huge(p, new_bytes) };
            }
            os::set_errno(saved_errno);
            LARGE.grown_in_place.fetch_add(1, Ordering::Relaxed);
            LARGE.resized(old_bytes, new_bytes);
            return p;
        }
        // The page map could not grow: undo.
        // SAFETY: shrinking back the extension made just above.
        unsafe { os::remap(p, new_bytes, old_bytes, ptr::null_mut()) };
        page_map::set_large(base + old_chunks * CHUNK, new_chunks - old_chunks, Entry::Foreign);
        page_map::set_large(base, old_chunks, Entry::LargeHead { pages, huge: old_huge, probe: false });
        return ptr::null_mut();
    }
    // SAFETY: forwarded contract.
    let q = unsafe { move_grow(p, old_bytes, new_bytes, old_huge) };
    if !q.is_null() {
        os::set_errno(saved_errno);
    }
    q
}

/// Move a live large block of `old_bytes` to a new chunk-aligned place with
/// `new_bytes`, without copying. Null (and `p` untouched) on failure.
/// `old_huge`: the block asked for huge pages.
///
/// Reserve the new range, move the old pages onto its start (moving and
/// growing in one call would make the kernel count the growth on top of the
/// reservation), then make the block one mapping again: give up the rest of
/// the reservation and grow the moved pages over it in place. A block left
/// as two mappings could not grow in place, nor be moved as a whole by
/// older kernels, again.
///
/// # Safety
/// `p` is a live large block of `old_bytes` (< `new_bytes`) bytes.
unsafe fn move_grow(p: *mut u8, old_bytes: usize, new_bytes: usize, old_huge: bool) -> *mut u8 {
    let (old_chunks, new_chunks) = (chunks_for(old_bytes), chunks_for(new_bytes));
    let dest = os::map_aligned(new_bytes, CHUNK);
    if dest.is_null() {
        return dest;
    }
    let d = dest as usize;
    // Create the page-map leaves now, so that publishing the block once it
    // has moved cannot fail; nothing is published before.
    if !page_map::set_large(d, new_chunks, Entry::Foreign) {
        // SAFETY: just mapped, never published.
        unsafe { os::unmap_unused(dest, new_bytes) };
        return ptr::null_mut();
    }
    // The old range stops being ours the moment it is moved away.
    page_map::set_large(p as usize, old_chunks, Entry::Foreign);
    // SAFETY: `p` is the whole old mapping; `dest` is our fresh reservation.
    let moved = unsafe { os::remap(p, old_bytes, old_bytes, dest) };
    if moved.is_null() {
        page_map::set_large(
            p as usize,
            old_chunks,
            Entry::LargeHead { pages: old_bytes / PAGE, huge: old_huge, probe: false },
        );
        // The kernel may have unmapped the start of the reservation already
        // (someone else may map there now): give back only the rest.
        // SAFETY: the part of our reservation the move never touches.
        unsafe { os::unmap_unused((d + old_bytes) as *mut u8, new_bytes - old_bytes) };
        return ptr::null_mut();
    }
    // SAFETY: the rest of our reservation, unused; then the moved block,
    // grown in place over the range just given up.
    let one_mapping = unsafe {
        os::unmap_unused((d + old_bytes) as *mut u8, new_bytes - old_bytes);
        !os::remap(dest, old_bytes, new_bytes, ptr::null_mut()).is_null()
    };
    if !one_mapping && os::map_at(d + old_bytes, new_bytes - old_bytes) != os::MapAt::Mapped {
        // Another mapping took the range in between: copy instead.
        let (q, _) = alloc(new_bytes, 1);
        if !q.is_null() {
            // SAFETY: `dest` holds the old block's `old_bytes`; `q` is a
            // fresh block of `new_bytes`; then the moved block is ours to drop.
            unsafe {
                ptr::copy_nonoverlapping(dest, q, old_bytes);
                os::unmap(dest, old_bytes);
            }
            LARGE.freed(old_bytes);
            return q;
        }
        // The old address is gone and the new block cannot be completed:
        // neither a failure nor a success can be returned truthfully. Only
        // a lost race together with out-of-memory gets here.
        crate::diag::line(format_args!(
            "realloc(): out of memory while moving a {old_bytes}-byte block; aborting"
        ));
        os::abort();
    }
    let huge = old_huge || reaches_thp(old_bytes, new_bytes);
    page_map::set_large(d, new_chunks, Entry::LargeHead { pages: new_bytes / PAGE, huge, probe: false });
    // The moved pages keep the old mapping's advice; a range mapped apart
    // from them, or a block now big enough, is advised here.
    if huge && (!old_huge || !one_mapping) {
        // SAFETY: our block, `new_bytes` long.
        unsafe { os::advise_huge(dest, new_bytes) };
    }
    LARGE.moved.fetch_add(1, Ordering::Relaxed);
    LARGE.resized(old_bytes, new_bytes);
    dest
}

/// Unmap every cached block (malloc_trim, memory pressure). Returns the
/// bytes that may have been resident.
pub fn trim() -> usize {
    let mut released = 0;
    loop {
        let e = {
            let mut c = LARGE_CACHE.lock();
            if c.len == 0 {
                return released;
            }
            c.len -= 1;
            let e = c.slots[c.len];
            c.bytes -= e.touched;
            e
        };
        released += e.touched;
        // SAFETY: taken out of the cache: free and ours.
        unsafe { release(e.base as *mut u8, e.bytes) };
    }
}

pub fn lock() -> &'static crate::sync::RawLock {
    LARGE_CACHE.raw()
}
