//! Foreign pointers: blocks hakmem did not hand out.
//!
//! A pointer outside hakmem's page map belongs to glibc (allocated before
//! hakmem was loaded, or through `__libc_malloc`) or to nobody (a bug in the
//! program). It goes to glibc only after passing checks at least as strict
//! as glibc's own, since glibc is the last line before its heap is damaged:
//! - every read of memory that is not hakmem's goes through
//!   `os::read_foreign`, which cannot fault (unmapped, `PROT_NONE`, or a
//!   file mapping past its end all just fail the check);
//! - the chunk must not overlap hakmem's own memory (a pointer just past a
//!   hakmem block would otherwise be read with that block's data as header);
//! - the chunk header must be well formed, and the chunk must lie where
//!   glibc puts chunks: in the brk heap for the main arena, in its arena's
//!   64 MiB heap mapping otherwise, in an anonymous private mapping (not the
//!   stack) for an mmapped chunk, per `/proc/self/maps`;
//! - the next chunk must say this one is in use, and a block in glibc's
//!   thread cache (its second word holds glibc's tcache key) is already free.
//!
//! Anything else gets a `hakmem:` diagnostic instead of a crash in glibc.
//! In guest mode every pointer is the process allocator's and goes to it.

use core::sync::atomic::{AtomicUsize, Ordering};

use crate::guest;
use crate::misuse::{self, Misuse};
use crate::os::{self, MappingKind, PAGE};
use crate::segment;
use crate::stats::{self, STATS};

extern "C" {
    fn __libc_malloc(size: usize) -> *mut libc::c_void;
    fn __libc_free(p: *mut libc::c_void);
    fn __libc_realloc(p: *mut libc::c_void, size: usize) -> *mut libc::c_void;
}

// glibc chunk header bits and geometry (malloc/malloc.c, x86_64).
const PREV_INUSE: usize = 1;
const IS_MMAPPED: usize = 2;
const NON_MAIN_ARENA: usize = 4;
const SIZE_BITS: usize = 7;
const MIN_CHUNK: usize = 32;
/// Non-main arenas live in heaps of this size, aligned to it.
const HEAP_MAX_SIZE: usize = 64 << 20;

/// What a pointer outside hakmem's map turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A live glibc block: glibc may have it.
    Glibc,
    /// A glibc block that is already free (in glibc's thread cache, or
    /// marked free by its neighbour).
    Freed,
    /// Not a block at all.
    Invalid,
}

/// glibc's tcache key, learnt once (0: not known, 1: glibc has none).
static TCACHE_KEY: AtomicUsize = AtomicUsize::new(0);

/// The value glibc stores in the second word of a block in its thread
/// cache (glibc >= 2.29), learnt by freeing one block of our own to it.
fn tcache_key() -> Option<usize> {
    let mut k = TCACHE_KEY.load(Ordering::Relaxed);
    if k == 0 {
        // SAFETY: a plain glibc allocation, zeroed where the key would go,
        // freed into glibc's thread cache; the freed block is read through
        // read_foreign (it stays mapped: glibc keeps it cached).
        k = unsafe {
            let p = __libc_malloc(24) as *mut usize;
            if p.is_null() {
                return None;
            }
            *p.add(1) = 0;
            __libc_free(p as *mut libc::c_void);
            os::read_foreign_word(p as usize + 8).filter(|&w| w > 1).unwrap_or(1)
        };
        TCACHE_KEY.store(k, Ordering::Relaxed);
    }
    (k > 1).then_some(k)
}

/// Where may a chunk `[chunk, chunk + size)` of the given arena lie?
/// `None` when /proc cannot tell (then the header checks must do).
fn placed_like_glibc(chunk: usize, size: usize, bits: usize) -> Option<bool> {
    let end = chunk.checked_add(size)?;
    let m = match os::mapping_at(chunk) {
        Err(()) => return None,
        Ok(None) => return Some(false),
        Ok(Some(m)) => m,
    };
    let inside = m.rw_private && m.anonymous && end <= m.end;
    if bits & IS_MMAPPED != 0 {
        // Its own mapping: anonymous, neither the brk heap nor a stack (the
        // main stack, this thread's, or any with a guard page below it, as
        // glibc makes thread stacks). Freeing it unmaps it.
        let sp = os::stack_pointer();
        let on_a_stack = (m.start <= sp && sp < m.end) || m.guarded_below;
        return Some(inside && m.kind == MappingKind::Other && !on_a_stack);
    }
    if bits & NON_MAIN_ARENA == 0 {
        return Some(inside && m.kind == MappingKind::Heap);
    }
    // A non-main arena's heap: its header starts the 64 MiB-aligned mapping.
    let heap = chunk & !(HEAP_MAX_SIZE - 1);
    let arena = os::read_foreign_word(heap).unwrap_or(0);
    Some(inside && m.kind == MappingKind::Other && m.start <= heap && arena != 0 && arena % 16 == 0)
}

/// What is `p`, a pointer outside hakmem's map? Reads only through
/// `os::read_foreign` (never faults).
pub fn verdict(p: *const u8) -> Verdict {
    let p = p as usize;
    if p % 16 != 0 || p < PAGE {
        return Verdict::Invalid;
    }
    let chunk = p - 16;
    let (Some(prev_size), Some(size_field)) =
        (os::read_foreign_word(chunk), os::read_foreign_word(chunk + 8))
    else {
        return Verdict::Invalid;
    };
    let size = size_field & !SIZE_BITS;
    if size < MIN_CHUNK || size % 16 != 0 || size > (1 << 46) || chunk.checked_add(size).is_none() {
        return Verdict::Invalid;
    }
    let bits = size_field & SIZE_BITS;
    // A "chunk" overlapping hakmem's memory is not glibc's (the bytes before
    // a pointer just past a hakmem block are that block's data).
    let span_start = if bits & IS_MMAPPED != 0 { chunk.saturating_sub(prev_size) } else { chunk };
    if [span_start, chunk, chunk + size - 1].iter().any(|&a| segment::mapped_by_hakmem(a)) {
        return Verdict::Invalid;
    }
    if bits & IS_MMAPPED != 0 {
        // Starts `prev_size` bytes into a page-aligned mapping; chunk and
        // mapping end together on a page boundary.
        let Some(map_start) = chunk.checked_sub(prev_size) else { return Verdict::Invalid };
        if prev_size % 16 != 0 || map_start % PAGE != 0 || (prev_size + size) % PAGE != 0 {
            return Verdict::Invalid;
        }
        if placed_like_glibc(map_start, prev_size + size, bits) == Some(false) {
            return Verdict::Invalid;
        }
    } else {
        // The next chunk must be readable and well formed.
        let Some(next) = os::read_foreign_word(chunk + size + 8) else { return Verdict::Invalid };
        let next_size = next & !SIZE_BITS;
        if next_size < 16 || next_size % 16 != 0 {
            return Verdict::Invalid;
        }
        if placed_like_glibc(chunk, size + 16, bits) == Some(false) {
            return Verdict::Invalid;
        }
        if next & PREV_INUSE == 0 {
            return Verdict::Freed;
        }
    }
    if let Some(key) = tcache_key() {
        if os::read_foreign_word(p + 8) == Some(key) {
            return Verdict::Freed;
        }
    }
    Verdict::Glibc
}

/// Report a pointer that glibc must not get.
fn refuse(func: &str, v: Verdict, p: *mut u8) {
    let what = if v == Verdict::Freed { Misuse::DoubleFree } else { Misuse::InvalidPointer };
    misuse::report(func, what, p);
}

/// `free` of a pointer outside hakmem's map.
///
/// # Safety
/// `p` is not null and not in hakmem's page map.
pub unsafe fn free(p: *mut u8) {
    if guest::active() {
        // SAFETY: a guest hands out no blocks: `p` is the process allocator's.
        return unsafe { guest::free(p) };
    }
    match verdict(p) {
        Verdict::Glibc => {
            stats::count(&STATS.foreign_frees);
            // SAFETY: a live glibc block.
            unsafe { __libc_free(p as *mut libc::c_void) };
        }
        v => refuse("free", v, p),
    }
}

/// `realloc` of a pointer outside hakmem's map (size > 0). The block stays
/// glibc's. Null with errno set on failure.
///
/// # Safety
/// `p` is not null and not in hakmem's page map.
pub unsafe fn realloc(p: *mut u8, size: usize) -> *mut u8 {
    if guest::active() {
        // SAFETY: as in free.
        return unsafe { guest::realloc(p, size) };
    }
    match verdict(p) {
        // SAFETY: a live glibc block.
        Verdict::Glibc => unsafe { __libc_realloc(p as *mut libc::c_void, size) as *mut u8 },
        v => {
            refuse("realloc", v, p);
            os::set_errno(libc::EINVAL);
            core::ptr::null_mut()
        }
    }
}

type UsableFn = unsafe extern "C" fn(*mut libc::c_void) -> usize;
static GLIBC_USABLE: AtomicUsize = AtomicUsize::new(0);

/// `malloc_usable_size` of a pointer outside hakmem's map: glibc's answer.
///
/// # Safety
/// `p` is not null and not in hakmem's page map.
pub unsafe fn usable_size(p: *mut u8) -> usize {
    if guest::active() {
        // SAFETY: as in free.
        return unsafe { guest::usable_size(p) };
    }
    match verdict(p) {
        Verdict::Glibc => {}
        Verdict::Freed => {
            misuse::report("malloc_usable_size", Misuse::UseAfterFree, p);
            return 0;
        }
        Verdict::Invalid => {
            misuse::report("malloc_usable_size", Misuse::InvalidPointer, p);
            return 0;
        }
    }
    let mut f = GLIBC_USABLE.load(Ordering::Acquire);
    if f == 0 {
        // May call malloc, which is safe here (no hakmem lock is held).
        f = os::next_symbol(c"malloc_usable_size");
        GLIBC_USABLE.store(f, Ordering::Release);
    }
    if f == 0 {
        // No glibc symbol found: the size from the checked chunk header.
        let size_field = os::read_foreign_word(p as usize - 8).unwrap_or(0);
        let overhead = if size_field & IS_MMAPPED != 0 { 16 } else { 8 };
        return (size_field & !SIZE_BITS).saturating_sub(overhead);
    }
    // SAFETY: `f` is glibc's malloc_usable_size, and `p` a live glibc block.
    unsafe { core::mem::transmute::<usize, UsableFn>(f)(p as *mut libc::c_void) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glibc_blocks_are_recognised_and_wild_pointers_are_not() {
        for size in [1usize, 24, 100, 4000, 200_000, 1 << 20] {
            // SAFETY: plain glibc allocation.
            let p = unsafe { __libc_malloc(size) } as *mut u8;
            assert_eq!(verdict(p), Verdict::Glibc, "size {size}");
            // SAFETY: a live glibc block.
            assert!(unsafe { usable_size(p) } >= size);
            // SAFETY: a live glibc block, given back.
            unsafe { free(p) };
        }
        assert_eq!(verdict(core::ptr::null()), Verdict::Invalid);
        assert_eq!(verdict(0x1000 as *const u8), Verdict::Invalid);
        assert_eq!(verdict(0x7fff_ffff_0000 as *const u8), Verdict::Invalid);
        let page = os::map(PAGE);
        // SAFETY: our own page.
        unsafe { os::unmap(page, PAGE) };
        assert_eq!(verdict(page.wrapping_add(64)), Verdict::Invalid);
    }

    #[test]
    fn a_block_in_glibcs_thread_cache_is_already_free() {
        // SAFETY: a plain glibc allocation, freed once by glibc.
        let p = unsafe { __libc_malloc(40) } as *mut u8;
        // SAFETY: as above.
        unsafe { __libc_free(p as *mut libc::c_void) };
        assert_eq!(verdict(p), Verdict::Freed);
    }

    #[test]
    fn a_fake_chunk_on_the_stack_is_not_glibcs() {
        #[repr(C, align(16))]
        struct Fake([usize; 16]);
        let mut f = Fake([0; 16]);
        f.0[1] = 64 | PREV_INUSE; // this chunk: 64 bytes
        f.0[9] = 32 | PREV_INUSE; // the next chunk's size field
                                  // verdict() reads through the kernel: keep the stores.
        let p = core::hint::black_box(&f.0[2]) as *const usize as *const u8;
        assert_eq!(verdict(p), Verdict::Invalid);
        f.0[1] = PAGE | IS_MMAPPED;
        core::hint::black_box(&mut f);
        assert_eq!(verdict(p), Verdict::Invalid);
    }
}
