//! The OS boundary: every system call hakmem makes goes through this module.
//!
//! Nothing else in the crate calls `libc::mmap` & co. Each primitive states its
//! preconditions; all of them are allocation-free and async-signal-safe except
//! where noted, so they may be called from inside `malloc`.

use core::ptr;
use core::sync::atomic::{AtomicUsize, Ordering};

/// The hardware page size on Linux x86_64.
pub const PAGE: usize = 4096;

/// Bytes hakmem has mapped now, and bytes it has given back to the OS so
/// far (unmapped or purged), for the statistics.
pub static MAPPED: AtomicUsize = AtomicUsize::new(0);
pub static RETURNED: AtomicUsize = AtomicUsize::new(0);

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
/// Mappings are accounted (no `MAP_NORESERVE`), as glibc's are: a request
/// larger than the machine can ever back fails here, not at first touch.
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
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        ptr::null_mut()
    } else {
        MAPPED.fetch_add(size, Ordering::Relaxed);
        p as *mut u8
    }
}

/// Where the last aligned mapping started: the kernel hands out address
/// space top-down, so the range just below it is usually free.
static ALIGNED_HINT: AtomicUsize = AtomicUsize::new(0);

/// The outcome of [`map_at`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapAt {
    Mapped,
    /// Something else is mapped in the range.
    Taken,
    /// The kernel refused (out of memory or address space).
    Refused,
}

/// Map `size` bytes of fresh memory exactly at `addr` (page aligned), only
/// if nothing is mapped anywhere in the range.
pub fn map_at(addr: usize, size: usize) -> MapAt {
    debug_assert!(addr % PAGE == 0 && size % PAGE == 0);
    // A failure here is an answer, not an error of the caller's call.
    let saved = errno();
    // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping; it
    // fails (or, on kernels without it, lands elsewhere) instead.
    let p = unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    if p != libc::MAP_FAILED {
        MAPPED.fetch_add(size, Ordering::Relaxed);
    }
    if p as usize == addr {
        return MapAt::Mapped;
    }
    if p != libc::MAP_FAILED {
        // SAFETY: a mapping made just above that we do not use.
        unsafe { unmap_unused(p as *mut u8, size) };
        return MapAt::Taken;
    }
    let taken = errno() == libc::EEXIST;
    set_errno(saved);
    if taken {
        MapAt::Taken
    } else {
        MapAt::Refused
    }
}

/// Map `size` bytes aligned to `align` (a power of two >= [`PAGE`]),
/// spending no more address space than `size` whenever possible:
/// 1. the aligned range just below the previous aligned mapping;
/// 2. where the kernel would put `size` bytes, moved down to alignment;
/// 3. over-map by `align - PAGE` and trim both ends.
///
/// Returns null on failure.
pub fn map_aligned(size: usize, align: usize) -> *mut u8 {
    debug_assert!(align.is_power_of_two() && align >= PAGE && size % PAGE == 0);
    let hint = ALIGNED_HINT.load(Ordering::Relaxed);
    if hint > size + align {
        let want = (hint - size) & !(align - 1);
        if map_at(want, size) == MapAt::Mapped {
            ALIGNED_HINT.store(want, Ordering::Relaxed);
            return want as *mut u8;
        }
    }
    let raw = map(size);
    if raw.is_null() {
        return raw;
    }
    if raw as usize & (align - 1) != 0 {
        // SAFETY: the mapping made just above, unused.
        unsafe { unmap_unused(raw, size) };
        let want = raw as usize & !(align - 1);
        if want == 0 || map_at(want, size) != MapAt::Mapped {
            return map_over_aligned(size, align);
        }
    }
    let start = raw as usize & !(align - 1);
    ALIGNED_HINT.store(start, Ordering::Relaxed);
    start as *mut u8
}

fn map_over_aligned(size: usize, align: usize) -> *mut u8 {
    // An aligned start lies within the first `align - PAGE` bytes.
    let Some(total) = size.checked_add(align - PAGE) else { return ptr::null_mut() };
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
            unmap_unused(raw, head);
        }
        if tail > 0 {
            unmap_unused((start + size) as *mut u8, tail);
        }
    }
    ALIGNED_HINT.store(start, Ordering::Relaxed);
    start as *mut u8
}

/// Replace `[p, p + size)`, a hakmem mapping, by read-only zero pages in one
/// step: a reader that races with the release of the range reads zeroes
/// instead of faulting, and nobody else can map there meanwhile.
///
/// # Safety
/// The range is page aligned, hakmem's, and holds no live data.
pub unsafe fn seal(p: *mut u8, size: usize) -> bool {
    // SAFETY: MAP_FIXED over a range the caller owns replaces only it.
    let r = unsafe {
        libc::mmap(
            p as *mut libc::c_void,
            size,
            libc::PROT_READ,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
            -1,
            0,
        )
    };
    r == p as *mut libc::c_void
}

/// Unmap `[p, p + size)`.
///
/// # Safety
/// The range must be a mapping (or part of one) that hakmem made and that no
/// live block still uses.
pub unsafe fn unmap(p: *mut u8, size: usize) {
    // SAFETY: caller guarantees the range is ours and unused.
    unsafe { unmap_unused(p, size) };
    RETURNED.fetch_add(size, Ordering::Relaxed);
}

/// Unmap what was mapped and never used (a reservation's rest, a mapping
/// that lost a race): not memory given back, for the statistics.
///
/// # Safety
/// As for [`unmap`].
pub unsafe fn unmap_unused(p: *mut u8, size: usize) {
    // SAFETY: caller guarantees the range is ours and unused.
    let rc = unsafe { libc::munmap(p as *mut libc::c_void, size) };
    debug_assert_eq!(rc, 0);
    MAPPED.fetch_sub(size, Ordering::Relaxed);
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
    RETURNED.fetch_add(size, Ordering::Relaxed);
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
        return ptr::null_mut();
    }
    if dest.is_null() {
        MAPPED.fetch_add(new_size, Ordering::Relaxed);
        MAPPED.fetch_sub(old_size, Ordering::Relaxed);
    } else {
        // The moved pages replace part of the reservation at `dest`, which
        // was counted already; the old range is gone.
        MAPPED.fetch_sub(old_size, Ordering::Relaxed);
    }
    p as *mut u8
}

/// Write `bytes` to stderr with `write(2)`, retrying on short writes.
pub fn write_stderr(bytes: &[u8]) {
    write_fd(2, bytes);
}

/// Write `bytes` to file descriptor `fd`, retrying on short writes.
pub fn write_fd(fd: i32, bytes: &[u8]) {
    let mut rest = bytes;
    while !rest.is_empty() {
        // SAFETY: the buffer is valid for `rest.len()` bytes.
        let n = unsafe { libc::write(fd, rest.as_ptr() as *const libc::c_void, rest.len()) };
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

/// Fresh random bytes from the kernel (`getrandom`, without blocking). When
/// the kernel cannot give them (very early boot, a seccomp filter), the
/// clock and addresses are mixed instead: unpredictable enough for free-list
/// keys, never glibc's AT_RANDOM bytes (its pointer guard and stack canary).
pub fn random_u64() -> u64 {
    let mut x = 0u64;
    // SAFETY: the kernel writes at most 8 bytes into `x`.
    let n = unsafe {
        libc::syscall(
            libc::SYS_getrandom,
            &mut x as *mut u64 as *mut libc::c_void,
            8usize,
            libc::GRND_NONBLOCK,
        )
    };
    if n != 8 {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `ts` is a valid timespec to write.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        x = (ts.tv_nsec as u64) ^ (ts.tv_sec as u64).rotate_left(32) ^ (&x as *const u64 as u64);
        x ^= (random_u64 as *const () as u64).rotate_left(17);
    }
    // splitmix64 finaliser: spreads whatever entropy there is over all bits.
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The calling thread's thread pointer (`%fs:0`, the address of its glibc
/// thread descriptor): a cheap identity, unique among live threads.
#[inline(always)]
pub fn thread_pointer() -> usize {
    let p: usize;
    // SAFETY: reads the thread pointer; %fs:0 holds its own address on
    // x86_64 glibc. No memory is written.
    unsafe {
        core::arch::asm!("mov {p}, qword ptr fs:[0]", p = out(reg) p, options(nostack, pure, readonly));
    }
    p
}

/// The calling thread's kernel thread id.
pub fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

/// Is thread `tid` of this process still running? Asks the kernel
/// (`tgkill` with signal 0). A thread that has exited — or, in a forked
/// child, every thread of the parent but the forking one — answers ESRCH.
/// When in doubt (a seccomp filter refusing the call), it is alive.
pub fn thread_alive(tid: i32) -> bool {
    // SAFETY: signal 0 only checks that the thread exists; nothing is sent.
    let rc = unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, 0) };
    !(rc != 0 && errno() == libc::ESRCH)
}

/// Copy `buf.len()` bytes from `addr` in this process without ever faulting:
/// false when any of them is not readable (unmapped, `PROT_NONE`, a file
/// mapping past its end). For reading memory hakmem does not own.
pub fn read_foreign(addr: usize, buf: &mut [u8]) -> bool {
    let local = libc::iovec { iov_base: buf.as_mut_ptr() as *mut libc::c_void, iov_len: buf.len() };
    let remote = libc::iovec { iov_base: addr as *mut libc::c_void, iov_len: buf.len() };
    // SAFETY: process_vm_readv reads the remote range through the kernel,
    // which reports EFAULT instead of faulting; `buf` is ours to write.
    let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
    if n == buf.len() as isize {
        return true;
    }
    if n >= 0 || errno() == libc::EFAULT {
        return false;
    }
    read_foreign_through_pipe(addr, buf)
}

/// Fallback of [`read_foreign`] where `process_vm_readv` is not allowed:
/// `write(2)` of the range into a pipe fails with EFAULT instead of faulting.
fn read_foreign_through_pipe(addr: usize, buf: &mut [u8]) -> bool {
    let mut fds = [0i32; 2];
    // SAFETY: `fds` has room for the two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return false;
    }
    // SAFETY: the kernel reads the range (or reports EFAULT); the pipe is ours.
    let ok = unsafe {
        libc::write(fds[1], addr as *const libc::c_void, buf.len()) == buf.len() as isize
            && libc::read(fds[0], buf.as_mut_ptr() as *mut libc::c_void, buf.len()) == buf.len() as isize
    };
    // SAFETY: closing the descriptors just made.
    unsafe {
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
    ok
}

/// A pthread key whose destructor runs at thread exit, or `None` when the
/// process has used up its keys. Does not allocate.
pub fn thread_key_create(destructor: extern "C" fn(*mut libc::c_void)) -> Option<u32> {
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: pthread_key_create writes the key; keys live in a static table.
    (unsafe { libc::pthread_key_create(&mut key, Some(destructor)) } == 0).then_some(key)
}

/// Set the calling thread's value of `key` (the destructor runs at exit
/// only for a non-null value). May call `calloc` (keys past the first 32);
/// false when that failed.
pub fn thread_key_set(key: u32, value: *mut u8) -> bool {
    // SAFETY: `key` came from thread_key_create.
    unsafe { libc::pthread_setspecific(key, value as *const libc::c_void) == 0 }
}

/// Register fork handlers.
pub fn at_fork(prepare: extern "C" fn(), parent: extern "C" fn(), child: extern "C" fn()) {
    // SAFETY: plain functions with the signature pthread_atfork expects.
    unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
}

/// Run `f` at normal process exit.
pub fn at_exit(f: extern "C" fn()) {
    // SAFETY: a plain function with the signature atexit expects.
    unsafe { libc::atexit(f) };
}

/// The address of symbol `name` (NUL-terminated) in the objects loaded
/// after the caller (`RTLD_NEXT`), or null. May call `malloc`: never from
/// under a hakmem lock.
pub fn next_symbol(name: &core::ffi::CStr) -> usize {
    // SAFETY: dlsym with a NUL-terminated name.
    unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) as usize }
}

/// The address the process resolves symbol `name` to (`RTLD_DEFAULT`: the
/// first definition in load order), or null. May call `malloc`.
pub fn default_symbol(name: &core::ffi::CStr) -> usize {
    // SAFETY: dlsym with a NUL-terminated name.
    unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) as usize }
}

/// The base address of the loaded object (executable or shared library)
/// holding `addr`, or 0.
fn object_base(addr: usize) -> usize {
    // SAFETY: dladdr only reads the loader's tables and fills `info`.
    unsafe {
        let mut info: libc::Dl_info = core::mem::zeroed();
        if libc::dladdr(addr as *const libc::c_void, &mut info) == 0 {
            return 0;
        }
        info.dli_fbase as usize
    }
}

/// Do code addresses `a` and `b` lie in the same loaded object?
pub fn same_object(a: usize, b: usize) -> bool {
    let base = object_base(a);
    base != 0 && base == object_base(b)
}

/// The file name of the loaded object holding `addr`, copied into `buf`
/// (truncated to fit), or `None`.
pub fn object_name(addr: usize, buf: &mut [u8]) -> Option<&str> {
    // SAFETY: dladdr fills `info`; dli_fname, when set, is a NUL-terminated
    // string owned by the loader for as long as the object stays loaded.
    let name = unsafe {
        let mut info: libc::Dl_info = core::mem::zeroed();
        if libc::dladdr(addr as *const libc::c_void, &mut info) == 0 || info.dli_fname.is_null() {
            return None;
        }
        core::ffi::CStr::from_ptr(info.dli_fname).to_bytes()
    };
    let n = name.len().min(buf.len());
    buf[..n].copy_from_slice(&name[..n]);
    core::str::from_utf8(&buf[..n]).ok().filter(|s| !s.is_empty())
}

/// Ask for transparent huge pages on a range (`MADV_HUGEPAGE`).
///
/// # Safety
/// The range is page aligned and hakmem's.
pub unsafe fn advise_huge(p: *mut u8, size: usize) {
    // SAFETY: caller guarantees the range is ours.
    unsafe { libc::madvise(p as *mut libc::c_void, size, libc::MADV_HUGEPAGE) };
}

/// How many pages of a mapped range are resident (`mincore`); 0 if the
/// kernel will not say.
///
/// # Safety
/// The range is page aligned and hakmem's.
pub unsafe fn resident_pages(p: *mut u8, size: usize) -> usize {
    let mut vec = [0u8; 512];
    let mut resident = 0;
    let mut at = 0;
    while at < size {
        let len = (size - at).min(vec.len() * PAGE);
        // SAFETY: `[p + at, p + at + len)` is inside the caller's range; the
        // vector holds one byte per page of it.
        if unsafe { libc::mincore(p.add(at) as *mut libc::c_void, len, vec.as_mut_ptr()) } != 0 {
            return 0;
        }
        resident += vec[..len.div_ceil(PAGE)].iter().filter(|&&v| v & 1 != 0).count();
        at += len;
    }
    resident
}

/// Let a mapping be inherited by `fork` again (undo a user's
/// `madvise(MADV_DONTFORK)` before the memory serves someone else).
///
/// # Safety
/// The range is page aligned and hakmem's.
pub unsafe fn allow_fork_inherit(p: *mut u8, size: usize) {
    // SAFETY: caller guarantees the range is ours.
    unsafe { libc::madvise(p as *mut libc::c_void, size, libc::MADV_DOFORK) };
}

/// What `/proc/self/maps` says about the mapping holding an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub start: usize,
    pub end: usize,
    /// Readable, writable, private.
    pub rw_private: bool,
    /// Not backed by a file (inode 0).
    pub anonymous: bool,
    pub kind: MappingKind,
    /// Right above an inaccessible (`---p`) mapping: a guard page, as below
    /// every thread stack glibc makes.
    pub guarded_below: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MappingKind {
    /// The brk heap, `[heap]` (glibc's main arena).
    Heap,
    /// The main thread's stack, `[stack]`.
    Stack,
    /// Anything else (named or not).
    Other,
}

/// The mapping holding `addr`, from `/proc/self/maps`: `Ok(None)` when
/// nothing is mapped there, `Err(())` when the file cannot be read (no
/// /proc). Reads the file through a stack buffer: no allocation.
#[allow(clippy::result_unit_err)]
pub fn mapping_at(addr: usize) -> Result<Option<Mapping>, ()> {
    // SAFETY: a NUL-terminated path; the descriptor is closed below.
    let fd = unsafe { libc::open(c"/proc/self/maps".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(());
    }
    let mut buf = [0u8; 4096];
    let mut len = 0;
    let mut found = Ok(None);
    // End of the previous mapping if it was inaccessible.
    let mut guard_end = usize::MAX;
    'read: loop {
        // SAFETY: reading into the free tail of `buf`.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().add(len) as *mut libc::c_void, buf.len() - len) };
        if n < 0 && errno() == libc::EINTR {
            continue;
        }
        if n <= 0 {
            if n < 0 {
                found = Err(());
            }
            break;
        }
        len += n as usize;
        let mut line_start = 0;
        while let Some(nl) = buf[line_start..len].iter().position(|&b| b == b'\n') {
            if let Some((mut m, inaccessible)) = parse_maps_line(&buf[line_start..line_start + nl]) {
                if m.start <= addr && addr < m.end {
                    m.guarded_below = guard_end == m.start;
                    found = Ok(Some(m));
                    break 'read;
                }
                if m.start > addr {
                    break 'read;
                }
                guard_end = if inaccessible { m.end } else { usize::MAX };
            }
            line_start += nl + 1;
        }
        if line_start == 0 && len == buf.len() {
            // A line longer than the buffer (a huge path): drop it.
            len = 0;
            continue;
        }
        buf.copy_within(line_start..len, 0);
        len -= line_start;
    }
    // SAFETY: closing the descriptor opened above.
    unsafe { libc::close(fd) };
    found
}

/// Parse `start-end perms offset dev inode [path]`; also says whether the
/// mapping is inaccessible (`---`).
fn parse_maps_line(line: &[u8]) -> Option<(Mapping, bool)> {
    let mut fields = line.split(|&b| b == b' ').filter(|f| !f.is_empty());
    let range = fields.next()?;
    let dash = range.iter().position(|&b| b == b'-')?;
    let start = parse_hex(&range[..dash])?;
    let end = parse_hex(&range[dash + 1..])?;
    let perms = fields.next()?;
    let _offset = fields.next()?;
    let _dev = fields.next()?;
    let inode = fields.next()?;
    let path = fields.next().unwrap_or(b"");
    let kind = match path {
        b"[heap]" => MappingKind::Heap,
        b"[stack]" => MappingKind::Stack,
        _ => MappingKind::Other,
    };
    let mapping = Mapping {
        start,
        end,
        rw_private: perms.len() >= 4 && perms[0] == b'r' && perms[1] == b'w' && perms[3] == b'p',
        anonymous: inode == b"0",
        kind,
        guarded_below: false,
    };
    Some((mapping, perms.starts_with(b"---")))
}

fn parse_hex(s: &[u8]) -> Option<usize> {
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    s.iter().try_fold(0usize, |v, &c| Some(v << 4 | (c as char).to_digit(16)? as usize))
}

/// The calling thread's stack pointer (roughly: an address in its frame).
#[inline(always)]
pub fn stack_pointer() -> usize {
    let sp: usize;
    // SAFETY: reads the stack pointer register; nothing is written.
    unsafe { core::arch::asm!("mov {}, rsp", out(reg) sp, options(nomem, nostack, preserves_flags)) };
    sp
}

/// Read one machine word of memory hakmem does not own, safely.
pub fn read_foreign_word(addr: usize) -> Option<usize> {
    let mut b = [0u8; 8];
    read_foreign(addr, &mut b).then(|| usize::from_ne_bytes(b))
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
    fn maps_know_the_heap_the_stack_and_our_own_mappings() {
        let p = map(4 * PAGE);
        let m = mapping_at(p as usize + PAGE).unwrap().unwrap();
        assert!(m.start <= p as usize && p as usize + 4 * PAGE <= m.end);
        assert!(m.rw_private && m.anonymous && m.kind == MappingKind::Other);
        // Test threads run on glibc-made stacks, with a guard page below.
        let local = 0u64;
        let s = mapping_at(&local as *const u64 as usize).unwrap().unwrap();
        assert!(s.rw_private && (s.guarded_below || s.kind == MappingKind::Stack));
        // SAFETY: our own mapping.
        unsafe { unmap(p, 4 * PAGE) };
        // Tests run in parallel: another one may map the range at once.
        match mapping_at(p as usize + PAGE) {
            Ok(None) => {}
            Ok(Some(other)) => assert_ne!(other, m, "the unmapped range is still reported"),
            Err(e) => panic!("{e:?}"),
        }
        assert_eq!(mapping_at(8), Ok(None));
        // Far below the mmap area, far above the program: nothing maps there.
        assert_eq!(mapping_at(1 << 44), Ok(None));
        let libc_text = mapping_at(libc::malloc as *const () as usize).unwrap().unwrap();
        assert!(!libc_text.anonymous && !libc_text.rw_private);
    }

    #[test]
    fn foreign_reads_never_fault() {
        let p = map(2 * PAGE);
        // SAFETY: our own mapping: make its second page unreadable.
        unsafe {
            *(p as *mut u64) = 0x1234;
            libc::mprotect(p.add(PAGE) as *mut libc::c_void, PAGE, libc::PROT_NONE);
        }
        assert_eq!(read_foreign_word(p as usize), Some(0x1234));
        assert_eq!(read_foreign_word(p as usize + PAGE), None);
        assert_eq!(read_foreign_word(p as usize + PAGE - 4), None, "straddles into the PROT_NONE page");
        assert!(!read_foreign_through_pipe(p as usize + PAGE, &mut [0u8; 8]));
        let mut b = [0u8; 8];
        assert!(read_foreign_through_pipe(p as usize, &mut b));
        assert_eq!(u64::from_ne_bytes(b), 0x1234);
        // SAFETY: our own mapping.
        unsafe { unmap(p, 2 * PAGE) };
        assert_eq!(read_foreign_word(p as usize), None);
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

/// An open file descriptor and the file it referred to when it was taken
/// (device, inode), so that a later user can tell whether the program has
/// closed it and reused the number for something else.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdIdentity {
    pub fd: i32,
    pub dev: u64,
    pub ino: u64,
}

fn identity(fd: i32) -> Option<(u64, u64)> {
    // SAFETY: an all-zero `stat` is a valid value for fstat to fill.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: `st` is a valid, writable stat buffer.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return None;
    }
    Some((st.st_dev, st.st_ino))
}

/// Duplicate `fd` to a high, close-on-exec descriptor (so that programs that
/// close their standard streams, as coreutils does at exit, leave hakmem a
/// way to report). None when `fd` is not open or no descriptor is free.
pub fn keep_fd(fd: i32) -> Option<FdIdentity> {
    let saved = errno();
    // SAFETY: F_DUPFD_CLOEXEC only creates a new descriptor.
    let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 512) };
    set_errno(saved);
    if dup < 0 {
        return None;
    }
    let (dev, ino) = identity(dup)?;
    Some(FdIdentity { fd: dup, dev, ino })
}

/// Does `id.fd` still refer to the file it did when it was kept?
pub fn fd_unchanged(id: FdIdentity) -> bool {
    identity(id.fd) == Some((id.dev, id.ino))
}

/// Does the process run in secure-execution mode (set-user-ID,
/// set-group-ID or file capabilities: AT_SECURE)? Then the environment
/// comes from someone with fewer rights than the process.
pub fn secure_mode() -> bool {
    // SAFETY: getauxval has no preconditions.
    unsafe { libc::getauxval(libc::AT_SECURE) != 0 }
}

/// Create (or truncate) the file at `path` (NUL-terminated) for writing;
/// a symbolic link as the last component is refused.
pub fn create_file(path: &[u8]) -> Option<i32> {
    debug_assert_eq!(path.last(), Some(&0));
    let saved = errno();
    // SAFETY: `path` is NUL-terminated.
    let fd = unsafe {
        libc::open(
            path.as_ptr() as *const libc::c_char,
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            0o644,
        )
    };
    set_errno(saved);
    (fd >= 0).then_some(fd)
}

pub fn close(fd: i32) {
    // SAFETY: closes a descriptor the caller opened.
    unsafe { libc::close(fd) };
}

pub fn getpid() -> i32 {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() }
}

/// The process's resident memory in bytes (/proc/self/statm), 0 if unknown.
pub fn resident_bytes() -> usize {
    let mut buf = [0u8; 128];
    let saved = errno();
    // SAFETY: a NUL-terminated path; `buf` is writable for its length.
    let n = unsafe {
        let fd = libc::open(c"/proc/self/statm".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            set_errno(saved);
            return 0;
        }
        let n = libc::read(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len());
        libc::close(fd);
        n
    };
    set_errno(saved);
    if n <= 0 {
        return 0;
    }
    // "size resident shared ...", in pages.
    let mut fields = buf[..n as usize].split(|&b| b == b' ');
    let _size = fields.next();
    let resident = fields.next().unwrap_or(b"");
    let mut pages = 0usize;
    for &b in resident {
        if !b.is_ascii_digit() {
            break;
        }
        pages = pages * 10 + (b - b'0') as usize;
    }
    pages * PAGE
}

/// The executable's path (/proc/self/exe) into `buf`, if it fits.
pub fn exe_path(buf: &mut [u8]) -> Option<&str> {
    let saved = errno();
    // SAFETY: a NUL-terminated path; `buf` is writable for its length.
    let n = unsafe {
        libc::readlink(c"/proc/self/exe".as_ptr(), buf.as_mut_ptr() as *mut libc::c_char, buf.len())
    };
    set_errno(saved);
    if n <= 0 || n as usize >= buf.len() {
        return None;
    }
    core::str::from_utf8(&buf[..n as usize]).ok()
}

/// Write `bytes` to a stdio stream (`malloc_info`). May allocate (the
/// stream's buffer): never call it under a hakmem lock.
///
/// # Safety
/// `stream` is a valid `FILE*` open for writing.
pub unsafe fn write_stream(stream: *mut libc::FILE, bytes: &[u8]) -> bool {
    // SAFETY: per contract; the buffer is valid for its length.
    unsafe { libc::fwrite(bytes.as_ptr() as *const libc::c_void, 1, bytes.len(), stream) == bytes.len() }
}

/// A signal disposition saved by [`install_signal_handler`].
pub type SavedAction = libc::sigaction;

/// Install `handler` (SA_SIGINFO) for `sig`; returns the previous
/// disposition, or None if the kernel refused.
pub fn install_signal_handler(
    sig: i32,
    handler: extern "C" fn(i32, *mut libc::siginfo_t, *mut libc::c_void),
) -> Option<SavedAction> {
    // SAFETY: all-zero sigaction structs are valid; sigaction only reads the
    // new one and writes the old one.
    unsafe {
        let mut new: libc::sigaction = core::mem::zeroed();
        new.sa_sigaction = handler as usize;
        new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        libc::sigemptyset(&mut new.sa_mask);
        let mut old: libc::sigaction = core::mem::zeroed();
        (libc::sigaction(sig, &new, &mut old) == 0).then_some(old)
    }
}

/// Is the disposition of `sig` the default one?
pub fn signal_is_default(sig: i32) -> bool {
    // SAFETY: a null new action only queries.
    unsafe {
        let mut cur: libc::sigaction = core::mem::zeroed();
        libc::sigaction(sig, ptr::null(), &mut cur) == 0 && cur.sa_sigaction == libc::SIG_DFL
    }
}

/// Put back a disposition saved by [`install_signal_handler`].
pub fn restore_signal_handler(sig: i32, old: &SavedAction) {
    // SAFETY: `old` came from sigaction.
    unsafe { libc::sigaction(sig, old, ptr::null_mut()) };
}

/// Send `sig` to the calling thread.
pub fn raise(sig: i32) {
    // SAFETY: raise has no memory preconditions.
    unsafe { libc::raise(sig) };
}

/// The fault address and code of a signal's siginfo.
///
/// # Safety
/// `info` is the siginfo the kernel passed to an SA_SIGINFO handler.
pub unsafe fn siginfo_fault(info: *const libc::siginfo_t) -> (usize, i32) {
    // SAFETY: per contract.
    unsafe { ((*info).si_addr() as usize, (*info).si_code) }
}
