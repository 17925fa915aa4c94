//! The C allocation API with glibc's semantics: the override layer only
//! forwards here. errno, overflow checks, alignment validation, `realloc(p, 0)`
//! and the classification of incoming pointers all live in this module.
//!
//! ```text
//! malloc(size)
//!   size <= 1 KiB: tiny_class -> thread_cache::pop -> (empty) alloc_slow
//!   size <= 256 KiB: class_of -> same
//!   larger: large::alloc
//! free(p)
//!   page_map::is_segment(p) -> slab_class(p) -> key check -> thread_cache::push
//!                                                  -> (full) free_slow
//!   otherwise free_other: large::free | foreign::free | diagnostic
//! ```

use core::ptr;

use crate::diag::{self, Misuse};
use crate::foreign;
use crate::large;
use crate::os::{self, PAGE};
use crate::page_map::{self, Entry, CHUNK, CHUNK_MASK};
use crate::segment::Segment;
use crate::size_class::{
    class_for_aligned, class_of, is_block_start, tiny_class, CLASS_MASK, MID_MAX, SLAB_PAGE_SHIFT, STRIDE,
    TINY_MAX,
};
use crate::slab::{free_key, Block};
use crate::thread_cache;

/// The class of `p`, a pointer inside a segment, if it is exactly the start
/// of a block of a live slab. Reads only hakmem's segment header.
#[inline(always)]
fn slab_class(p: usize) -> Option<usize> {
    let seg = Segment::of(p);
    // SAFETY: the page map says this chunk is a segment, so its header is
    // mapped; page_info entries are atomics.
    let info =
        unsafe { (*seg).page_info[Segment::page_index(p)].load(core::sync::atomic::Ordering::Relaxed) };
    let class = info as usize & CLASS_MASK;
    if class == 0 {
        return None;
    }
    let base = seg as usize + (((info >> 8) as usize) << SLAB_PAGE_SHIFT);
    if !is_block_start(class, p - base) {
        return None;
    }
    Some(class)
}

#[inline(always)]
fn alloc_class(class: usize) -> *mut u8 {
    let b = thread_cache::pop(class);
    if !b.is_null() {
        return b as *mut u8;
    }
    alloc_class_slow(class)
}

#[cold]
#[inline(never)]
fn alloc_class_slow(class: usize) -> *mut u8 {
    let p = thread_cache::alloc_slow(class);
    if p.is_null() {
        os::set_errno(libc::ENOMEM);
    }
    p
}

#[inline(never)]
fn large_alloc(size: usize, align: usize) -> (*mut u8, bool) {
    let r = large::alloc(size, align);
    if r.0.is_null() {
        os::set_errno(libc::ENOMEM);
    }
    r
}

#[inline(always)]
pub fn malloc(size: usize) -> *mut u8 {
    if size <= TINY_MAX {
        return alloc_class(tiny_class(size));
    }
    malloc_big(size)
}

#[inline(never)]
fn malloc_big(size: usize) -> *mut u8 {
    if size <= MID_MAX {
        return alloc_class(class_of(size));
    }
    large_alloc(size, 1).0
}

/// # Safety
/// `p` is null or a pointer the program got from an allocation function
/// (anything else is reported, not trusted).
#[inline(always)]
pub unsafe fn free(p: *mut u8) {
    let a = p as usize;
    if !page_map::is_segment(a) {
        // SAFETY: forwarded.
        return unsafe { free_other(p) };
    }
    let Some(class) = slab_class(a) else {
        return diag::misuse("free", Misuse::InvalidPointer, p);
    };
    let b = p as *mut Block;
    let key = free_key();
    // SAFETY: `p` is a block start of a live slab: 16 readable bytes. A free
    // block carries the key in its second word.
    unsafe {
        if (*b).key == key {
            return diag::misuse("free", Misuse::DoubleFree, p);
        }
        if !thread_cache::push(b, class, key) {
            thread_cache::free_slow(b, class);
        }
    }
}

/// `free` of anything that is not in a slab segment.
#[cold]
#[inline(never)]
unsafe fn free_other(p: *mut u8) {
    if p.is_null() {
        return;
    }
    let a = p as usize;
    let aligned = a & CHUNK_MASK == 0;
    match page_map::lookup(a) {
        // SAFETY: the page map says `p` starts a live large block.
        Entry::LargeHead { pages } if aligned => unsafe { large::free(p, pages) },
        Entry::LargeFree if aligned => diag::misuse("free", Misuse::DoubleFree, p),
        // SAFETY: not in hakmem's map.
        Entry::Foreign => unsafe { foreign::free(p) },
        _ => diag::misuse("free", Misuse::InvalidPointer, p),
    }
}

pub fn calloc(n: usize, size: usize) -> *mut u8 {
    let Some(total) = n.checked_mul(size) else {
        os::set_errno(libc::ENOMEM);
        return ptr::null_mut();
    };
    if total <= MID_MAX {
        let p = malloc(total);
        if !p.is_null() {
            // SAFETY: `p` holds at least `total` bytes.
            unsafe { ptr::write_bytes(p, 0, total) };
        }
        return p;
    }
    let (p, zeroed) = large_alloc(total, 1);
    if !p.is_null() && !zeroed {
        // SAFETY: `p` holds at least `total` bytes.
        unsafe { ptr::write_bytes(p, 0, total) };
    }
    p
}

/// # Safety
/// As for [`free`]; on success the old pointer must no longer be used.
pub unsafe fn realloc(p: *mut u8, size: usize) -> *mut u8 {
    if p.is_null() {
        return malloc(size);
    }
    if size == 0 {
        // glibc frees and returns NULL.
        // SAFETY: forwarded.
        unsafe { free(p) };
        return ptr::null_mut();
    }
    let a = p as usize;
    let aligned = a & CHUNK_MASK == 0;
    match page_map::lookup(a) {
        Entry::Segment => {
            let Some(class) = slab_class(a) else {
                return realloc_misuse(Misuse::InvalidPointer, p);
            };
            // SAFETY: `p` is a block start of a live slab: 16 readable bytes.
            if unsafe { (*(p as *mut Block)).key == free_key() } {
                return realloc_misuse(Misuse::DoubleFree, p);
            }
            let stride = STRIDE[class] as usize;
            if size <= stride && (size > stride / 2 || class == 1) {
                return p;
            }
            // SAFETY: `p` holds `stride` bytes; the copy fits both blocks.
            unsafe { move_block(p, stride, size) }
        }
        Entry::LargeHead { pages } if aligned => {
            if size > MID_MAX {
                // SAFETY: `p` is a live large block of `pages` pages.
                let q = unsafe { large::realloc(p, pages, size) };
                if q.is_null() {
                    os::set_errno(libc::ENOMEM);
                }
                return q;
            }
            // SAFETY: `p` is a live large block of `pages` pages.
            unsafe { move_block(p, large::usable_size(pages), size) }
        }
        Entry::LargeFree if aligned => realloc_misuse(Misuse::DoubleFree, p),
        // SAFETY: not in hakmem's map.
        Entry::Foreign => unsafe { foreign::realloc(p, size) },
        _ => realloc_misuse(Misuse::InvalidPointer, p),
    }
}

/// Allocate `size` bytes, copy the first `min(old_size, size)` bytes of `p`,
/// free `p`. Null (and `p` untouched) on failure.
///
/// # Safety
/// `p` is a live block of at least `old_size` bytes.
unsafe fn move_block(p: *mut u8, old_size: usize, size: usize) -> *mut u8 {
    let q = malloc(size);
    if !q.is_null() {
        // SAFETY: both blocks hold the bytes copied; they are distinct.
        unsafe {
            ptr::copy_nonoverlapping(p, q, old_size.min(size));
            free(p);
        }
    }
    q
}

#[cold]
fn realloc_misuse(what: Misuse, p: *mut u8) -> *mut u8 {
    diag::misuse("realloc", what, p);
    os::set_errno(libc::EINVAL);
    ptr::null_mut()
}

/// # Safety
/// As for [`realloc`].
pub unsafe fn reallocarray(p: *mut u8, n: usize, size: usize) -> *mut u8 {
    match n.checked_mul(size) {
        // SAFETY: forwarded.
        Some(total) => unsafe { realloc(p, total) },
        None => {
            os::set_errno(libc::ENOMEM);
            ptr::null_mut()
        }
    }
}

/// `size` bytes aligned to `align`, a power of two.
fn aligned(align: usize, size: usize) -> *mut u8 {
    debug_assert!(align.is_power_of_two());
    if align <= 16 {
        return malloc(size);
    }
    match class_for_aligned(size, align) {
        Some(class) => alloc_class(class),
        None => large_alloc(size, align).0,
    }
}

/// # Safety
/// `out` is valid for a pointer write.
pub unsafe fn posix_memalign(out: *mut *mut u8, align: usize, size: usize) -> i32 {
    if align < core::mem::size_of::<usize>() || !align.is_power_of_two() {
        return libc::EINVAL;
    }
    let saved = os::errno();
    let p = aligned(align, size);
    if p.is_null() {
        os::set_errno(saved);
        return libc::ENOMEM;
    }
    // SAFETY: per contract.
    unsafe { *out = p };
    0
}

/// C11 `aligned_alloc`: `align` must be a power of two.
pub fn aligned_alloc(align: usize, size: usize) -> *mut u8 {
    if !align.is_power_of_two() {
        os::set_errno(libc::EINVAL);
        return ptr::null_mut();
    }
    aligned(align, size)
}

/// glibc `memalign`: a non-power-of-two alignment is rounded up.
pub fn memalign(align: usize, size: usize) -> *mut u8 {
    if align > usize::MAX / 2 + 1 {
        os::set_errno(libc::EINVAL);
        return ptr::null_mut();
    }
    aligned(align.max(1).next_power_of_two(), size)
}

pub fn valloc(size: usize) -> *mut u8 {
    aligned(PAGE, size)
}

pub fn pvalloc(size: usize) -> *mut u8 {
    match os::round_up(size, PAGE) {
        Some(r) => aligned(PAGE, r.max(PAGE)),
        None => {
            os::set_errno(libc::ENOMEM);
            ptr::null_mut()
        }
    }
}

/// # Safety
/// `p` is null or a live block.
pub unsafe fn malloc_usable_size(p: *mut u8) -> usize {
    if p.is_null() {
        return 0;
    }
    let a = p as usize;
    match page_map::lookup(a) {
        Entry::Segment => match slab_class(a) {
            Some(class) => STRIDE[class] as usize,
            None => {
                diag::misuse("malloc_usable_size", Misuse::InvalidPointer, p);
                0
            }
        },
        Entry::LargeHead { pages } if a % CHUNK == 0 => large::usable_size(pages),
        // SAFETY: not in hakmem's map.
        Entry::Foreign => unsafe { foreign::usable_size(p) },
        _ => {
            diag::misuse("malloc_usable_size", Misuse::InvalidPointer, p);
            0
        }
    }
}

/// Give cached and free memory back to the OS. Returns 1 (memory released).
pub fn malloc_trim(_pad: usize) -> i32 {
    thread_cache::trim();
    large::trim();
    1
}
