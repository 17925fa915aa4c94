//! Misuse reports: a pointer passed to the allocator that it must refuse.
//! One `hakmem:` line naming the function and the problem, counted in the
//! statistics; the call is then ignored, or the process aborts under
//! HAKMEM_ABORT_ON_ERROR=1.

use core::sync::atomic::Ordering;

use crate::{config, diag, os, stats};

/// What was wrong with a pointer passed to the allocator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Misuse {
    /// Not a block hakmem or glibc handed out (wild, interior, never
    /// handed out, unmapped).
    InvalidPointer,
    /// `free` or `realloc` of a block that is already free.
    DoubleFree,
    /// Any other use of a block that is already free.
    UseAfterFree,
    /// HAKMEM_CHECK=1: a free block was written to, at this byte offset.
    WriteAfterFree { offset: usize },
    /// HAKMEM_CHECK=1: `free_sized` with a size the block cannot have
    /// (larger than its usable size).
    SizeMismatch { size: usize, usable: usize },
}

/// Report misuse of `ptr` by C function `func` ("free", "realloc", ...).
/// Returns (the call is then ignored) unless HAKMEM_ABORT_ON_ERROR=1.
#[cold]
#[inline(never)]
pub fn report(func: &str, what: Misuse, ptr: *const u8) {
    let m = &stats::MISUSE;
    let counter = match what {
        Misuse::InvalidPointer => &m.invalid_pointer,
        Misuse::DoubleFree => &m.double_free,
        Misuse::UseAfterFree => &m.use_after_free,
        Misuse::WriteAfterFree { .. } => &m.write_after_free,
        Misuse::SizeMismatch { .. } => &m.size_mismatch,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    match what {
        Misuse::InvalidPointer => diag::line(format_args!("{func}(): invalid pointer {ptr:p}")),
        Misuse::DoubleFree => diag::line(format_args!("{func}(): double free of {ptr:p}")),
        Misuse::UseAfterFree => {
            diag::line(format_args!("{func}(): {ptr:p} is a block that was already freed"))
        }
        Misuse::WriteAfterFree { offset } => diag::line(format_args!(
            "{func}(): block {ptr:p} was written after free (byte {offset} changed; use after free)"
        )),
        Misuse::SizeMismatch { size, usable } => diag::line(format_args!(
            "{func}(): size {size} does not match block {ptr:p} (its usable size is {usable})"
        )),
    }
    if config::abort_on_error() {
        os::abort();
    }
}
