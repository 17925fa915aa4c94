//! The OS boundary: every system call hakmem makes goes through this module.
//!
//! Nothing else in the crate calls `libc::mmap` & co. Each primitive states its
//! preconditions; all of them are allocation-free and async-signal-safe except
//! where noted, so they may be called from inside `malloc`.

use core::ptr;
use core::sync::atomic::{AtomicUsize, Ordering};

/// The hardware page size on Linux x86_64.
pub const PAGE: usize = 4096;

/// Round `n` up to a multiple of `align` (a power of two). `None` on overflow.
#[inline]
pub const fn round_up(n: usize, align: usize) -> Option<usize> {
    match n.checked_add(align - 1) {
        Some(v) => Some(v & !(align - 1)),
        None => None,
    }
}

/// Map `size` bytes of fresh, zeroed, read-write anonymous memory.
/// Returns null when the kernel refuses (out of memory or address space).
/// `size` must be a non-zero multiple of [`PAGE`].
pub fn map(size: usize) -> *mut u8 {
    debug_assert!(size > 0 && size % PAGE == 0);
    // SAFETY: an anonymous private mapping at a kernel-chosen address does not
    // alias any existing memory.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        ptr::null_mut()
    } else {
        p as *mut u8
    }
}

/// Where the last aligned mapping started: the kernel hands out address
/// space top-down, so the range just below it is usually free.
static ALIGNED_HINT: AtomicUsize = AtomicUsize::new(0);

/// Map `size` bytes aligned to `align` (a power of two >= [`PAGE`]).
/// First tries the aligned range just below the previous aligned mapping
/// (one system call); otherwise over-maps by `align` and trims both ends.
/// Returns null on failure.
pub fn map_aligned(size: usize, align: usize) -> *mut u8 {
    debug_assert!(align.is_power_of_two() && align >= PAGE && size % PAGE == 0);
    let hint = ALIGNED_HINT.load(Ordering::Relaxed);
    if hint > size + align {
        let want = (hint - size) & !(align - 1);
        // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping; it
        // fails (or, on kernels without it, lands elsewhere) instead.
        let p = unsafe {
            libc::mmap(
                want as *mut libc::c_void,
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            )
        };
        if p as usize == want {
            ALIGNED_HINT.store(want, Ordering::Relaxed);
            return p as *mut u8;
        }
        if p != libc::MAP_FAILED {
            // SAFETY: a mapping made just above that we do not use.
            unsafe { unmap(p as *mut u8, size) };
        }
    }
    let Some(total) = size.checked_add(align) else { return ptr::null_mut() };
    let raw = map(total);
    if raw.is_null() {
        return raw;
    }
    let start = (raw as usize + align - 1) & !(align - 1);
    let head = start - raw as usize;
    let tail = total - head - size;
    // SAFETY: both trimmed ranges lie inside the mapping made just above and
    // are outside the range handed out.
    unsafe {
        if head > 0 {
            unmap(raw, head);
        }
        if tail > 0 {
            unmap((start + size) as *mut u8, tail);
        }
    }
    ALIGNED_HINT.store(start, Ordering::Relaxed);
    start as *mut u8
}

/// Unmap `[p, p + size)`.
///
/// # Safety
/// The range must be a mapping (or part of one) that hakmem made and that no
/// live block still uses.
pub unsafe fn unmap(p: *mut u8, size: usize) {
    // SAFETY: caller guarantees the range is ours and unused.
    let rc = unsafe { libc::munmap(p as *mut libc::c_void, size) };
    debug_assert_eq!(rc, 0);
}

/// Give the physical pages of `[p, p + size)` back to the OS; the range stays
/// mapped and reads back as zeroes.
///
/// # Safety
/// The range must be page aligned, mapped by hakmem, and hold no live data.
pub unsafe fn purge(p: *mut u8, size: usize) {
    debug_assert!(p as usize % PAGE == 0 && size % PAGE == 0);
    // SAFETY: caller guarantees the range is ours and holds no live data.
    unsafe { libc::madvise(p as *mut libc::c_void, size, libc::MADV_DONTNEED) };
}

/// Grow or move a mapping without copying: `mremap`. With `dest` null the
/// mapping is only grown in place (fails if the address space after it is
/// taken); otherwise it is moved to `dest`, replacing what was mapped there.
/// Returns null on failure, with the original mapping untouched.
///
/// # Safety
/// `[old, old + old_size)` must be a whole hakmem mapping; `dest`, if not
/// null, must start a hakmem reservation of at least `new_size` bytes.
pub unsafe fn remap(old: *mut u8, old_size: usize, new_size: usize, dest: *mut u8) -> *mut u8 {
    // SAFETY: caller guarantees both ranges belong to hakmem.
    let p = unsafe {
        if dest.is_null() {
            libc::mremap(old as *mut libc::c_void, old_size, new_size, 0)
        } else {
            libc::mremap(
                old as *mut libc::c_void,
                old_size,
                new_size,
                libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                dest as *mut libc::c_void,
            )
        }
    };
    if p == libc::MAP_FAILED {
        ptr::null_mut()
    } else {
        p as *mut u8
    }
}

/// Is the page holding `addr` mapped in this process? Used before reading
/// memory hakmem does not own (foreign pointers, invalid-free diagnostics).
pub fn is_mapped(addr: usize) -> bool {
    let page = addr & !(PAGE - 1);
    if page == 0 {
        return false;
    }
    let mut vec = 0u8;
    // SAFETY: mincore only inspects the page tables; it never touches the page,
    // and `vec` has room for the one page asked about.
    let rc = unsafe { libc::mincore(page as *mut libc::c_void, PAGE, &mut vec) };
    rc == 0
}

/// Write `bytes` to stderr with `write(2)`, retrying on short writes.
pub fn write_stderr(bytes: &[u8]) {
    let mut rest = bytes;
    while !rest.is_empty() {
        // SAFETY: the buffer is valid for `rest.len()` bytes.
        let n = unsafe { libc::write(2, rest.as_ptr() as *const libc::c_void, rest.len()) };
        if n <= 0 {
            if n < 0 && errno() == libc::EINTR {
                continue;
            }
            return;
        }
        rest = &rest[n as usize..];
    }
}

/// Abort the process (SIGABRT), as glibc does on heap corruption.
pub fn abort() -> ! {
    // SAFETY: abort has no preconditions.
    unsafe { libc::abort() }
}

/// This thread's `errno`.
pub fn errno() -> i32 {
    // SAFETY: __errno_location always returns this thread's errno slot.
    unsafe { *libc::__errno_location() }
}

/// Set this thread's `errno`.
pub fn set_errno(e: i32) {
    // SAFETY: __errno_location always returns this thread's errno slot.
    unsafe { *libc::__errno_location() = e }
}

/// The value of environment variable `name` (NUL-terminated), without
/// allocating. `None` when unset or when the environment is not set up yet.
pub fn getenv(name: &[u8]) -> Option<&'static [u8]> {
    debug_assert_eq!(name.last(), Some(&0));
    // SAFETY: `name` is NUL-terminated; glibc's getenv only reads `environ`.
    let v = unsafe { libc::getenv(name.as_ptr() as *const libc::c_char) };
    if v.is_null() {
        return None;
    }
    // SAFETY: getenv returned a NUL-terminated string that lives as long as
    // the environment entry (the process, for variables set at exec time).
    let len = unsafe { libc::strlen(v) };
    // SAFETY: `v` points to `len` readable bytes.
    Some(unsafe { core::slice::from_raw_parts(v as *const u8, len) })
}

/// Has the C runtime set up `environ` yet? Before that, getenv sees nothing.
pub fn environment_ready() -> bool {
    extern "C" {
        static environ: *const *const libc::c_char;
    }
    // SAFETY: reading a pointer-sized global that glibc owns.
    unsafe { !ptr::read_volatile(ptr::addr_of!(environ)).is_null() }
}

/// A per-process random 64-bit value (for the free-block key), from the
/// kernel's AT_RANDOM bytes, mixed with an address for good measure.
pub fn random_u64() -> u64 {
    // SAFETY: getauxval has no preconditions; AT_RANDOM points to 16 bytes
    // that the kernel placed on the initial stack for the process lifetime.
    let at = unsafe { libc::getauxval(libc::AT_RANDOM) } as *const u64;
    let mut x = if at.is_null() {
        0
    } else {
        // SAFETY: see above; the bytes may be unaligned.
        unsafe { ptr::read_unaligned(at.add(1)) }
    };
    x ^= (&x as *const u64 as u64).rotate_left(32);
    // splitmix64 finaliser
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A cheap monotonic clock in nanoseconds (CLOCK_MONOTONIC_COARSE, read
/// through the vDSO: no system call; a few milliseconds of resolution).
pub fn coarse_now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec to write.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Wait on a futex word while it still holds `expected`.
pub fn futex_wait(word: &core::sync::atomic::AtomicU32, expected: u32) {
    // SAFETY: FUTEX_WAIT only reads the word, which lives as long as `word`.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            ptr::null::<libc::timespec>(),
        );
    }
}

/// Wake one waiter on a futex word.
pub fn futex_wake_one(word: &core::sync::atomic::AtomicU32) {
    // SAFETY: FUTEX_WAKE does not access memory.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_aligned_is_aligned_and_writable() {
        for &align in &[PAGE, 1 << 16, 1 << 22, 1 << 24] {
            let p = map_aligned(1 << 22, align);
            assert!(!p.is_null());
            assert_eq!(p as usize % align, 0);
            // SAFETY: freshly mapped 4 MiB.
            unsafe {
                *p = 1;
                *p.add((1 << 22) - 1) = 2;
                unmap(p, 1 << 22);
            }
        }
    }

    #[test]
    fn mincore_tells_mapped_from_unmapped() {
        // A big range, so that other tests' mappings do not refill its middle
        // between the unmap and the check.
        let size = 1 << 30;
        let p = map(size);
        assert!(is_mapped(p as usize + 100));
        // SAFETY: unmapping our own range.
        unsafe { unmap(p, size) };
        assert!(!is_mapped(p as usize + size / 2));
        assert!(!is_mapped(0));
        assert!(!is_mapped(16));
    }

    #[test]
    fn purge_zeroes() {
        let p = map(2 * PAGE);
        // SAFETY: our own mapping.
        unsafe {
            *p = 7;
            purge(p, 2 * PAGE);
            assert_eq!(*p, 0);
            unmap(p, 2 * PAGE);
        }
    }

    #[test]
    fn round_up_overflows_to_none() {
        assert_eq!(round_up(1, 16), Some(16));
        assert_eq!(round_up(32, 16), Some(32));
        assert_eq!(round_up(usize::MAX, 16), None);
    }
}
