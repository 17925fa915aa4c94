//! The C allocation API with glibc's semantics: the override layer only
//! forwards here. errno, overflow checks, alignment validation, `realloc(p, 0)`
//! and the classification of incoming pointers all live in this module.
//!
//! ```text
//! malloc(size)
//!   size <= 1 KiB: tiny_bin -> thread::pop_at -> (empty) alloc_slow
//!   size <= 256 KiB: class_of -> bin_offset -> same
//!   larger: large::alloc
//! free(p)
//!   page_map::is_segment(p) -> Segment::carved_bin(p) -> tag check -> thread::push_at
//!                                                 -> (full) free_slow
//!   otherwise free_other: classify -> large::free | foreign::free | diagnostic
//! ```

use core::ptr;

use crate::config;
use crate::foreign;
use crate::guest;
use crate::large;
use crate::misuse::{self, Misuse};
use crate::os::{self, PAGE};
use crate::page_map::{self, Entry};
use crate::report;
use crate::segment::Segment;
use crate::size_class::{class_for_aligned, class_of, MID_MAX, STRIDE, TINY_MAX};
use crate::slab::Block;
use crate::stats;
use crate::thread;
use crate::thread_cache::{bin_class, bin_offset, tiny_bin};

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

/// A block of the class whose bin is at byte offset `bin` (see
/// `thread_cache::bin_offset`) for a request of `size` bytes.
#[inline(always)]
fn alloc_bin(bin: usize, size: usize) -> *mut u8 {
    // SAFETY: callers pass offsets from hakmem's own class tables.
    let b = unsafe { thread::pop_at(bin) };
    if !b.is_null() {
        return b as *mut u8;
    }
    alloc_class_slow(size, bin_class(bin))
}

/// (`size` first: it arrives in the first argument register and stays
/// there, so the fast path spends no move on it.)
#[cold]
#[inline(never)]
fn alloc_class_slow(size: usize, class: usize) -> *mut u8 {
    if guest::active() {
        return guest::malloc(STRIDE[class] as usize);
    }
    let p = thread::alloc_slow(class, size);
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
    } else if config::stats_enabled() {
        stats::FOLDED.requested.add_shared(size as u64);
    }
    r
}

#[inline(always)]
pub fn malloc(size: usize) -> *mut u8 {
    if size <= TINY_MAX {
        return alloc_bin(tiny_bin(size), size);
    }
    malloc_big(size)
}

#[inline(never)]
fn malloc_big(size: usize) -> *mut u8 {
    if size <= MID_MAX {
        return alloc_bin(bin_offset(class_of(size)), size);
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
    let Some(bin) = Segment::carved_bin(a) else {
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
        if !thread::push_at(b, bin, tag) {
            thread::free_slow(b, bin_class(bin));
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
        Some(class) => alloc_bin(bin_offset(class), size),
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

/// `malloc_stats`: hakmem's report (to stderr, or HAKMEM_STATS_FILE); the
/// process allocator's in guest mode.
pub fn malloc_stats() {
    if guest::active() {
        return guest::malloc_stats();
    }
    report::print();
}

/// C23 `free_sized`: `free`, and under HAKMEM_CHECK=1 a check that `size`
/// fits the block.
///
/// # Safety
/// As for [`free`].
pub unsafe fn free_sized(p: *mut u8, size: usize) {
    if config::check_mode() && !guest::active() {
        check_size("free_sized", p, size, 1);
    }
    // SAFETY: forwarded.
    unsafe { free(p) }
}

/// C23 `free_aligned_sized`: as [`free_sized`], and the block must be
/// aligned to `align`.
///
/// # Safety
/// As for [`free`].
pub unsafe fn free_aligned_sized(p: *mut u8, align: usize, size: usize) {
    if config::check_mode() && !guest::active() {
        check_size("free_aligned_sized", p, size, align);
    }
    // SAFETY: forwarded.
    unsafe { free(p) }
}

/// HAKMEM_CHECK=1: could `p` be a block of `size` bytes aligned to `align`?
/// A block that cannot be is reported (the free goes ahead: its own checks
/// deal with pointers that are not blocks).
fn check_size(func: &str, p: *mut u8, size: usize, align: usize) {
    let usable = match classify(p) {
        Kind::Small { class } => STRIDE[class] as usize,
        Kind::Large { pages } => large::usable_size(pages),
        _ => return,
    };
    if size > usable || !align.is_power_of_two() || p as usize % align != 0 {
        misuse::report(func, Misuse::SizeMismatch { size, usable }, p);
    }
}

pub use crate::report::MallInfo2;

/// glibc's `struct mallinfo` (int fields).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MallInfo {
    pub arena: i32,
    pub ordblks: i32,
    pub smblks: i32,
    pub hblks: i32,
    pub hblkhd: i32,
    pub usmblks: i32,
    pub fsmblks: i32,
    pub uordblks: i32,
    pub fordblks: i32,
    pub keepcost: i32,
}

/// `mallinfo2`: hakmem's figures (see [`report::mallinfo2`] for the fields).
pub fn mallinfo2() -> MallInfo2 {
    if guest::active() {
        return MallInfo2::default();
    }
    report::mallinfo2()
}

/// `mallinfo`: [`mallinfo2`] with each field saturated to `int`.
pub fn mallinfo() -> MallInfo {
    let m = mallinfo2();
    let sat = |v: usize| v.min(i32::MAX as usize) as i32;
    MallInfo {
        arena: sat(m.arena),
        ordblks: sat(m.ordblks),
        smblks: sat(m.smblks),
        hblks: sat(m.hblks),
        hblkhd: sat(m.hblkhd),
        usmblks: sat(m.usmblks),
        fsmblks: sat(m.fsmblks),
        uordblks: sat(m.uordblks),
        fordblks: sat(m.fordblks),
        keepcost: sat(m.keepcost),
    }
}

/// `malloc_info(options, stream)`: the XML report; options must be 0
/// (EINVAL and -1 otherwise, as glibc).
///
/// # Safety
/// `stream` is a valid `FILE*` open for writing.
pub unsafe fn malloc_info(options: i32, stream: *mut libc::FILE) -> i32 {
    if guest::active() {
        // SAFETY: forwarded.
        return unsafe { guest::malloc_info(options, stream) };
    }
    if options != 0 {
        os::set_errno(libc::EINVAL);
        return -1;
    }
    // SAFETY: per contract.
    let mut w = unsafe { report::ReportWriter::to_stream(stream) };
    if report::malloc_info_xml(&mut w).is_ok() && w.flush() {
        0
    } else {
        -1
    }
}

// glibc's mallopt parameters.
const M_TRIM_THRESHOLD: i32 = -1;
const M_MMAP_THRESHOLD: i32 = -3;
const M_MMAP_MAX: i32 = -4;
const M_CHECK_ACTION: i32 = -5;
const M_ARENA_TEST: i32 = -7;
const M_ARENA_MAX: i32 = -8;

/// `mallopt(param, value)`: glibc's parameters mapped to the nearest hakmem
/// setting; 1 when taken, 0 when hakmem cannot honour it.
/// - M_TRIM_THRESHOLD: free memory kept before purging (HAKMEM_PURGE_KB;
///   -1, "never trim", keeps the most the flag allows).
/// - M_MMAP_THRESHOLD: at most 256 KiB: large blocks are unmapped when
///   freed, as glibc's mmapped chunks are (HAKMEM_LARGE_CACHE_MB=0); above,
///   they are kept for reuse (the cache stays as configured). Blocks over
///   256 KiB are always mappings of their own.
/// - M_MMAP_MAX: taken unless 0 (hakmem cannot stop mapping large blocks).
/// - M_ARENA_MAX, M_ARENA_TEST: taken; hakmem has a heap per thread and
///   gives back what idle and exited threads hold, so there is no arena
///   count to bound.
/// - M_CHECK_ACTION: its abort bit (value & 2) sets HAKMEM_ABORT_ON_ERROR.
/// - anything else (M_MXFAST, M_TOP_PAD, M_PERTURB, ...): 0.
pub fn mallopt(param: i32, value: i32) -> i32 {
    if guest::active() {
        return guest::mallopt(param, value);
    }
    config::ensure_read();
    let taken = match param {
        M_TRIM_THRESHOLD => {
            // -1 turns trimming off in glibc: keep as much as allowed.
            let kb = if value < 0 { usize::MAX } else { value as usize / 1024 };
            config::set(config::PURGE_KB, kb.min(config::FLAGS[config::PURGE_KB].max));
            true
        }
        M_MMAP_THRESHOLD if value >= 0 => {
            if value as usize <= MID_MAX {
                config::set(config::LARGE_CACHE_MB, 0);
            }
            true
        }
        M_MMAP_MAX => value != 0,
        M_ARENA_MAX | M_ARENA_TEST => value >= 0,
        M_CHECK_ACTION => {
            config::set(config::ABORT_ON_ERROR, (value & 2 != 0) as usize);
            true
        }
        _ => false,
    };
    taken as i32
}
