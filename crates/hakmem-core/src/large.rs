//! The large tier: blocks over 256 KiB get their own mapping.
//!
//! A large block starts on a chunk (4 MiB) boundary and owns whole chunks,
//! so the page map describes it completely: the first chunk's entry holds the
//! usable size in pages, later chunks are marked as tails. Nothing is stored
//! in the block or in front of it. The part of the last chunk past the usable
//! size is reserved but never touched, so it costs address space, not memory;
//! `realloc` grows into it for free and moves beyond it with `mremap`, which
//! moves page tables instead of copying bytes.
//!
//! Freed blocks are kept mapped in a small cache (HAKMEM_LARGE_CACHE_MB), so
//! that a free followed by a malloc of the same size costs no system call.

use core::ptr;

use crate::config;
use crate::os::{self, PAGE};
use crate::page_map::{self, Entry, CHUNK};
use crate::stats::{self, STATS};
use crate::sync::Lock;

/// Requests above this fail at once: no mapping can hold them.
pub const MAX_REQUEST: usize = 1 << 46;

const CACHE_SLOTS: usize = 32;

#[derive(Clone, Copy)]
struct Cached {
    base: usize,
    chunks: usize,
    /// Bytes that may be resident (the usable size when it was freed).
    touched: usize,
}

struct Cache {
    slots: [Cached; CACHE_SLOTS],
    len: usize,
    bytes: usize,
}

static LARGE_CACHE: Lock<Cache> =
    Lock::new(Cache { slots: [Cached { base: 0, chunks: 0, touched: 0 }; CACHE_SLOTS], len: 0, bytes: 0 });

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
    let chunks = chunks_for(bytes);
    if align <= CHUNK {
        if let Some(c) = cache_take(chunks) {
            // SAFETY: a cached block is free memory of ours. Its previous
            // owner may have made it non-inheritable (`MADV_DONTFORK`, as
            // RDMA stacks do); the new owner expects a plain mapping.
            unsafe {
                os::allow_fork_inherit(c.base as *mut u8, chunks * CHUNK);
                if c.touched > bytes {
                    // The tail past the new size is free memory of this block.
                    os::purge((c.base + bytes) as *mut u8, c.touched - bytes);
                }
            }
            page_map::set(c.base, Entry::LargeHead { pages });
            stats::count(&STATS.large_cache_hits);
            stats::count(&STATS.large_allocs);
            return (c.base as *mut u8, false);
        }
    }
    let p = os::map_aligned(chunks * CHUNK, align.max(CHUNK));
    if p.is_null() {
        return (p, false);
    }
    if !page_map::set_large(p as usize, chunks, Entry::LargeHead { pages }) {
        // SAFETY: just mapped, never published.
        unsafe { os::unmap(p, chunks * CHUNK) };
        return (ptr::null_mut(), false);
    }
    stats::count(&STATS.large_allocs);
    (p, true)
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
    stats::count(&STATS.large_frees);
    let bytes = pages * PAGE;
    let chunks = chunks_for(bytes);
    let limit = config::get(config::LARGE_CACHE_MB).saturating_mul(1 << 20);
    let mut evicted = [Cached { base: 0, chunks: 0, touched: 0 }; 4];
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
            page_map::set(p as usize, Entry::LargeFree);
            let len = c.len;
            c.slots[len] = Cached { base: p as usize, chunks, touched: bytes };
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
        unsafe { release(e.base as *mut u8, e.chunks) };
    }
    if !kept {
        // SAFETY: the caller gave the block up.
        unsafe { release(p, chunks) };
    }
}

/// Unmap a large mapping, clearing its page-map entries first so that the
/// address range is never described wrongly once someone else maps it.
///
/// # Safety
/// `[p, p + chunks * CHUNK)` is a free large mapping.
unsafe fn release(p: *mut u8, chunks: usize) {
    page_map::set_large(p as usize, chunks, Entry::Foreign);
    // SAFETY: forwarded contract.
    unsafe { os::unmap(p, chunks * CHUNK) };
}

/// The smallest cached block of at least `chunks` chunks (newest first among
/// equals, its pages are the likeliest to be warm), cut down to `chunks`.
fn cache_take(chunks: usize) -> Option<Cached> {
    let mut c = LARGE_CACHE.lock();
    let mut best: Option<usize> = None;
    for i in (0..c.len).rev() {
        let n = c.slots[i].chunks;
        if n >= chunks && best.is_none_or(|b| n < c.slots[b].chunks) {
            best = Some(i);
            if n == chunks {
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
    if e.chunks > chunks {
        // SAFETY: the surplus chunks are free memory of this cached block.
        unsafe { release((e.base + chunks * CHUNK) as *mut u8, e.chunks - chunks) };
    }
    Some(Cached { base: e.base, chunks, touched: e.touched.min(chunks * CHUNK) })
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
    let old_chunks = chunks_for(old_bytes);
    let new_chunks = chunks_for(new_bytes);
    let base = p as usize;
    let head = Entry::LargeHead { pages: new_bytes / PAGE };
    // Below, `p` is a live large mapping of `old_chunks` chunks that the
    // caller owns; ranges purged or unmapped lie past the new size, inside it.
    if new_chunks <= old_chunks {
        if new_bytes < old_bytes {
            let keep = new_chunks * CHUNK;
            let purge_end = old_bytes.min(keep);
            if purge_end > new_bytes {
                // SAFETY: past the new size, inside the block: no live data.
                unsafe { os::purge((base + new_bytes) as *mut u8, purge_end - new_bytes) };
            }
            if new_chunks < old_chunks {
                page_map::set_large(base + keep, old_chunks - new_chunks, Entry::Foreign);
                // SAFETY: whole chunks past the new size, no longer in the page map.
                unsafe { os::unmap((base + keep) as *mut u8, (old_chunks - new_chunks) * CHUNK) };
            }
        }
        page_map::set(base, head);
        return p;
    }
    // Grow in place when the address space after the block is free.
    // SAFETY: `p` is the whole mapping; growing in place moves nothing.
    let grown = unsafe { os::remap(p, old_chunks * CHUNK, new_chunks * CHUNK, ptr::null_mut()) };
    if !grown.is_null() {
        if page_map::set_large(base, new_chunks, head) {
            return p;
        }
        // The page map could not grow: undo.
        // SAFETY: shrinking back the extension made just above.
        unsafe { os::remap(p, new_chunks * CHUNK, old_chunks * CHUNK, ptr::null_mut()) };
        page_map::set_large(base, old_chunks, Entry::LargeHead { pages });
        return ptr::null_mut();
    }
    // Move: reserve an aligned destination, then move the pages onto it.
    let dest = os::map_aligned(new_chunks * CHUNK, CHUNK);
    if dest.is_null() {
        return dest;
    }
    if !page_map::set_large(dest as usize, new_chunks, head) {
        // SAFETY: just mapped, never published.
        unsafe { os::unmap(dest, new_chunks * CHUNK) };
        return ptr::null_mut();
    }
    // The old range stops being ours the moment it is moved away: clear its
    // entries first.
    page_map::set_large(base, old_chunks, Entry::Foreign);
    // SAFETY: `p` is the whole old mapping; `dest` is our fresh reservation.
    let moved = unsafe { os::remap(p, old_chunks * CHUNK, old_chunks * CHUNK, dest) };
    if moved.is_null() {
        page_map::set_large(base, old_chunks, Entry::LargeHead { pages });
        page_map::set_large(dest as usize, new_chunks, Entry::Foreign);
        // SAFETY: our reservation, unused since the move failed.
        unsafe { os::unmap(dest, new_chunks * CHUNK) };
        return ptr::null_mut();
    }
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
        unsafe { release(e.base as *mut u8, e.chunks) };
    }
}

pub fn lock() -> &'static crate::sync::RawLock {
    LARGE_CACHE.raw()
}
