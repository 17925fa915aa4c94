//! Foreign pointers: blocks hakmem did not hand out.
//!
//! A pointer outside hakmem's page map belongs to glibc (allocated before
//! hakmem was loaded, or through `__libc_malloc`) or to nobody (a bug in the
//! program). Before handing it to glibc, its chunk header is checked the way
//! glibc would, but with every read guarded by `mincore`, so that a wild
//! pointer gets a `hakmem:` diagnostic instead of a crash in glibc.

use core::sync::atomic::{AtomicUsize, Ordering};

use crate::diag::{self, Misuse};
use crate::os::{self, PAGE};
use crate::stats::{self, STATS};

extern "C" {
    fn __libc_free(p: *mut libc::c_void);
    fn __libc_realloc(p: *mut libc::c_void, size: usize) -> *mut libc::c_void;
}

// glibc chunk header bits (malloc/malloc.c).
const PREV_INUSE: usize = 1;
const IS_MMAPPED: usize = 2;
const SIZE_BITS: usize = 7;

/// Does `p` look like a live glibc block? Reads only mapped memory.
pub fn looks_like_glibc_block(p: *const u8) -> bool {
    let p = p as usize;
    if p % 16 != 0 || p < PAGE {
        return false;
    }
    let hdr = p - 16;
    if !os::is_mapped(hdr) || !os::is_mapped(p - 1) {
        return false;
    }
    // SAFETY: the 16 bytes before `p` are mapped (checked just above; they
    // span at most the two pages checked).
    let (prev_size, size_field) = unsafe { (*(hdr as *const usize), *((p - 8) as *const usize)) };
    let size = size_field & !SIZE_BITS;
    if size < 32 || size % 16 != 0 || size > (1 << 46) {
        return false;
    }
    if size_field & IS_MMAPPED != 0 {
        // An mmapped chunk: it starts prev_size bytes into a page-aligned
        // mapping, and mapping and chunk end on a page boundary.
        return (hdr - prev_size) % PAGE == 0 && (prev_size + size) % PAGE == 0;
    }
    // A heap chunk: the next chunk's header says this one is in use.
    let next_size_addr = hdr + size + 8;
    if !os::is_mapped(next_size_addr) {
        return false;
    }
    // SAFETY: checked mapped just above.
    let next = unsafe { *(next_size_addr as *const usize) };
    next & PREV_INUSE != 0 && (next & !SIZE_BITS) >= 16
}

/// `free` of a pointer outside hakmem's map.
///
/// # Safety
/// `p` is not null and not in hakmem's page map.
pub unsafe fn free(p: *mut u8) {
    if looks_like_glibc_block(p) {
        stats::count(&STATS.foreign_frees);
        // SAFETY: a live glibc block.
        unsafe { __libc_free(p as *mut libc::c_void) };
    } else {
        diag::misuse("free", Misuse::InvalidPointer, p);
    }
}

/// `realloc` of a pointer outside hakmem's map (size > 0). The block stays
/// glibc's. Null with errno set on failure.
///
/// # Safety
/// `p` is not null and not in hakmem's page map.
pub unsafe fn realloc(p: *mut u8, size: usize) -> *mut u8 {
    if looks_like_glibc_block(p) {
        // SAFETY: a live glibc block.
        unsafe { __libc_realloc(p as *mut libc::c_void, size) as *mut u8 }
    } else {
        diag::misuse("realloc", Misuse::InvalidPointer, p);
        os::set_errno(libc::EINVAL);
        core::ptr::null_mut()
    }
}

type UsableFn = unsafe extern "C" fn(*mut libc::c_void) -> usize;
static GLIBC_USABLE: AtomicUsize = AtomicUsize::new(0);

/// `malloc_usable_size` of a pointer outside hakmem's map: glibc's answer.
///
/// # Safety
/// `p` is not null and not in hakmem's page map.
pub unsafe fn usable_size(p: *mut u8) -> usize {
    if !looks_like_glibc_block(p) {
        diag::misuse("malloc_usable_size", Misuse::InvalidPointer, p);
        return 0;
    }
    let mut f = GLIBC_USABLE.load(Ordering::Acquire);
    if f == 0 {
        // SAFETY: dlsym with a NUL-terminated name; it may call malloc, which
        // is safe here (no hakmem lock is held).
        f = unsafe { libc::dlsym(libc::RTLD_NEXT, c"malloc_usable_size".as_ptr()) } as usize;
        GLIBC_USABLE.store(f, Ordering::Release);
    }
    if f == 0 {
        // No glibc symbol found: read the size from the checked chunk header.
        // SAFETY: looks_like_glibc_block checked the header is mapped.
        let size_field = unsafe { *((p as usize - 8) as *const usize) };
        let overhead = if size_field & IS_MMAPPED != 0 { 16 } else { 8 };
        return (size_field & !SIZE_BITS) - overhead;
    }
    // SAFETY: `f` is glibc's malloc_usable_size, and `p` a live glibc block.
    unsafe { core::mem::transmute::<usize, UsableFn>(f)(p as *mut libc::c_void) }
}

#[cfg(test)]
mod tests {
    use super::*;

    extern "C" {
        fn __libc_malloc(size: usize) -> *mut libc::c_void;
    }

    #[test]
    fn glibc_blocks_are_recognised_and_wild_pointers_are_not() {
        for size in [1usize, 24, 100, 4000, 200_000, 1 << 20] {
            // SAFETY: plain glibc allocation.
            let p = unsafe { __libc_malloc(size) } as *mut u8;
            assert!(looks_like_glibc_block(p), "size {size}");
            // SAFETY: a live glibc block.
            assert!(unsafe { usable_size(p) } >= size);
            // SAFETY: a live glibc block, given back.
            unsafe { free(p) };
        }
        assert!(!looks_like_glibc_block(core::ptr::null()));
        assert!(!looks_like_glibc_block(0x1000 as *const u8));
        assert!(!looks_like_glibc_block(0x7fff_ffff_0000 as *const u8));
        let page = os::map(PAGE);
        // SAFETY: our own page.
        unsafe { os::unmap(page, PAGE) };
        assert!(!looks_like_glibc_block(page.wrapping_add(64)));
    }
}
