//! The C allocation API with glibc's semantics: the override layer only
//! forwards here. errno, overflow checks, alignment validation, `realloc(p, 0)`
//! and the classification of incoming pointers all live in this module.
//!
//! ```text
//! malloc(size)
//!   size <= 1 KiB: tiny_class -> thread::pop -> (empty) alloc_slow
//!   size <= 256 KiB: class_of -> same
//!   larger: large::alloc
//! free(p)
//!   page_map::is_segment(p) -> Segment::carved_class(p) -> tag check -> thread::push
//!                                                  -> (full) free_slow
//!   otherwise free_other: classify -> large::free | foreign::free | diagnostic
//! ```

use core::ptr;

use crate::foreign;
use crate::guest;
use crate::large;
use crate::misuse::{self, Misuse};
use crate::os::{self, PAGE};
use crate::page_map::{self, Entry};
use crate::segment::Segment;
use crate::size_class::{class_for_aligned, class_of, tiny_class, MID_MAX, STRIDE, TINY_MAX};
use crate::slab::Block;
use crate::stats;
use crate::thread;

/// What a pointer passed to the allocator is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Null,
    /// A block of a slab (live, or free if it carries its tag).
    Small {
        class: usize,
    },
    /// A live large block of `pages` pages.
    Large {
        pages: usize,
    },
    /// A large block that was freed.
    LargeFree,
    /// Outside hakmem's map: glibc's, or nobody's.
    Foreign,
    /// Inside hakmem's map but not a block start.
    Invalid,
}

/// Classify `p` from hakmem's own metadata (never the bytes near it).
pub(crate) fn classify(p: *mut u8) -> Kind {
    if p.is_null() {
        return Kind::Null;
    }
    let a = p as usize;
    match page_map::lookup(a) {
        Entry::Foreign => Kind::Foreign,
        Entry::Segment => match Segment::carved_class(a) {
            Some(class) => Kind::Small { class },
            // SAFETY: the page map says this chunk is a segment: its header
            // is mapped.
            None if unsafe { (*Segment::of(a)).maps(a) } => Kind::Invalid,
            // Past the segment's mapped part: someone else's mapping.
            None => Kind::Foreign,
        },
        Entry::LargeHead { .. } | Entry::LargeTail { .. } | Entry::LargeFree { .. } => {
            match page_map::large_block(a) {
                Some(b) if a == b.base && b.free => Kind::LargeFree,
                Some(b) if a == b.base => Kind::Large { pages: b.pages },
                // Inside the block, not its start.
                Some(b) if a - b.base < large::usable_size(b.pages) => Kind::Invalid,
                // Past the block's last page: someone else's mapping. (No
                // head at all: the entries are being written or cleared, so
                // the address is not, or no longer, ours.)
                _ => Kind::Foreign,
            }
        }
    }
}

#[inline(always)]
fn alloc_class(class: usize) -> *mut u8 {
    let b = thread::pop(class);
    if !b.is_null() {
        return b as *mut u8;
    }
    alloc_class_slow(class)
}

#[cold]
#[inline(never)]
fn alloc_class_slow(class: usize) -> *mut u8 {
    if guest::active() {
        return guest::malloc(STRIDE[class] as usize);
    }
    let p = thread::alloc_slow(class);
    if p.is_null() {
        os::set_errno(libc::ENOMEM);
    }
    p
}

/// A large block; when the system refuses, everything cached is given back
/// and the request tried once more. Null with ENOMEM on failure.
#[inline(never)]
fn large_alloc(size: usize, align: usize) -> (*mut u8, bool) {
    if guest::active() {
        let p = if align <= 16 { guest::malloc(size) } else { guest::aligned(align, size) };
        return (p, false);
    }
    let mut r = large::alloc(size, align);
    if r.0.is_null() && size <= large::MAX_REQUEST && thread::release_everything() > 0 {
        r = large::alloc(size, align);
    }
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
    let Some(class) = Segment::carved_class(a) else {
        // SAFETY: forwarded.
        return unsafe { free_other(p) };
    };
    let b = p as *mut Block;
    let tag = Block::free_tag(b);
    // SAFETY: `p` is a handed-out block start of a live slab: 16 readable
    // bytes. A free block carries its tag in its second word.
    unsafe {
        if (*b).tag == tag {
            return misuse::report("free", Misuse::DoubleFree, p);
        }
        if !thread::push(b, class, tag) {
            thread::free_slow(b, class);
        }
    }
}

/// `free` of anything that is not a block start in a slab segment.
#[cold]
#[inline(never)]
unsafe fn free_other(p: *mut u8) {
    match classify(p) {
        Kind::Null => {}
        // SAFETY: the page map says `p` starts a live large block.
        Kind::Large { pages } => unsafe { large::free(p, pages) },
        Kind::LargeFree => misuse::report("free", Misuse::DoubleFree, p),
        // SAFETY: not in hakmem's map.
        Kind::Foreign => unsafe { foreign::free(p) },
        Kind::Small { .. } | Kind::Invalid => misuse::report("free", Misuse::InvalidPointer, p),
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
    match classify(p) {
        Kind::Null => malloc(size),
        Kind::Small { class } => {
            // SAFETY: `p` is a handed-out block start: 16 readable bytes.
            if unsafe { Block::is_free(p as *mut Block) } {
                return realloc_misuse(Misuse::DoubleFree, p);
            }
            let stride = STRIDE[class] as usize;
            if size <= stride && (size > stride / 2 || class == 1) {
                return p;
            }
            // SAFETY: `p` holds `stride` bytes; the copy fits both blocks.
            unsafe { move_block(p, stride, size) }
        }
        Kind::Large { pages } => {
            if size > MID_MAX {
                // SAFETY: `p` is a live large block of `pages` pages.
                let mut q = unsafe { large::realloc(p, pages, size) };
                if q.is_null() && size <= large::MAX_REQUEST {
                    // The pages could not be moved (no address space, or a
                    // kernel that refuses this move): copy them, as glibc does
                    // when mremap fails, after giving back what is cached.
                    thread::release_everything();
                    // SAFETY: the failed attempt left `p` untouched.
                    q = unsafe { move_block(p, large::usable_size(pages), size) };
                }
                if q.is_null() {
                    os::set_errno(libc::ENOMEM);
                }
                return q;
            }
            // SAFETY: `p` is a live large block of `pages` pages.
            unsafe { move_block(p, large::usable_size(pages), size) }
        }
        Kind::LargeFree => realloc_misuse(Misuse::DoubleFree, p),
        // SAFETY: not in hakmem's map.
        Kind::Foreign => unsafe { foreign::realloc(p, size) },
        Kind::Invalid => realloc_misuse(Misuse::InvalidPointer, p),
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
    misuse::report("realloc", what, p);
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
    if guest::active() {
        return guest::aligned(align, size);
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
    let freed = |p| {
        misuse::report("malloc_usable_size", Misuse::UseAfterFree, p);
        0
    };
    match classify(p) {
        Kind::Null => 0,
        // SAFETY: a handed-out block start: 16 readable bytes.
        Kind::Small { class } => match unsafe { Block::is_free(p as *mut Block) } {
            true => freed(p),
            false => STRIDE[class] as usize,
        },
        Kind::Large { pages } => large::usable_size(pages),
        Kind::LargeFree => freed(p),
        // SAFETY: not in hakmem's map.
        Kind::Foreign => unsafe { foreign::usable_size(p) },
        Kind::Invalid => {
            misuse::report("malloc_usable_size", Misuse::InvalidPointer, p);
            0
        }
    }
}

/// `malloc_trim`: give every free byte back to the OS — this thread's
/// cache, every heap's free slabs and pages, abandoned segments, the
/// segment and large caches. Returns 1 when memory was given back, else 0.
pub fn malloc_trim(pad: usize) -> i32 {
    if guest::active() {
        return guest::malloc_trim(pad);
    }
    (thread::release_everything() > 0) as i32
}

/// `malloc_stats`: hakmem's report on stderr (the process allocator's in
/// guest mode).
pub fn malloc_stats() {
    if guest::active() {
        return guest::malloc_stats();
    }
    stats::print();
}
