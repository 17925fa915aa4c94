//! Guest mode: this copy of hakmem is loaded but is not the process's
//! `malloc`.
//!
//! That happens when `libhakmem.so` is `dlopen`ed (a plugin host, an FFI),
//! or preloaded after another allocator (`LD_PRELOAD=libjemalloc.so:libhakmem.so`,
//! where the symbols the other allocator lacks bind to hakmem). Every block
//! in the process then belongs to the process's allocator, so this copy must
//! never hand out one of its own: decided once, at load time, it says so in
//! one `hakmem:` line and passes every call to the process's functions.
//!
//! The check costs nothing on the fast paths: a guest never has a heap, so
//! every allocation reaches a slow path, and no pointer is in its page map,
//! so every free reaches the foreign path; those two ask [`active`].

use core::ffi::CStr;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::{diag, os, segment};

static ACTIVE: AtomicBool = AtomicBool::new(false);

/// The process's allocation functions, 0 where the process has none but
/// ours (then the call fails, as the closest safe answer).
struct Table {
    malloc: AtomicUsize,
    free: AtomicUsize,
    realloc: AtomicUsize,
    posix_memalign: AtomicUsize,
    malloc_usable_size: AtomicUsize,
    malloc_trim: AtomicUsize,
    malloc_stats: AtomicUsize,
    mallopt: AtomicUsize,
    malloc_info: AtomicUsize,
}

static PROCESS: Table = Table {
    malloc: AtomicUsize::new(0),
    free: AtomicUsize::new(0),
    realloc: AtomicUsize::new(0),
    posix_memalign: AtomicUsize::new(0),
    malloc_usable_size: AtomicUsize::new(0),
    malloc_trim: AtomicUsize::new(0),
    malloc_stats: AtomicUsize::new(0),
    mallopt: AtomicUsize::new(0),
    malloc_info: AtomicUsize::new(0),
};

/// Is this copy a guest? Relaxed is enough: set by the load-time
/// constructor, before any caller can reach this copy's functions.
#[inline(always)]
pub fn active() -> bool {
    ACTIVE.load(Ordering::Relaxed)
}

/// An address inside this copy's code.
fn own_code() -> usize {
    own_code as fn() -> usize as usize
}

/// The process's definition of `name`, unless it is this copy's own.
fn process_symbol(name: &CStr) -> usize {
    let f = os::default_symbol(name);
    if f == 0 || os::same_object(f, own_code()) {
        return 0;
    }
    f
}

/// Decide at load time. Returns true when this copy is a guest (and has
/// said so on stderr).
///
/// The test is what the process's `malloc` does, not where its symbol
/// lives: in a non-PIE executable that takes `malloc`'s address, the symbol
/// the process resolves is the executable's PLT stub, which jumps to
/// whichever `malloc` the loader bound — possibly ours. So one block is
/// allocated through the process's `malloc`: if it is in this copy's page
/// map, this copy is the process's allocator.
pub fn decide_on_load() -> bool {
    let malloc = os::default_symbol(c"malloc");
    if malloc == 0 || os::same_object(malloc, own_code()) {
        return false;
    }
    let free = os::default_symbol(c"free");
    // SAFETY: the process's malloc and free, with the C signatures; the
    // block is given back at once.
    let ours = unsafe {
        let p = core::mem::transmute::<usize, MallocFn>(malloc)(24) as *mut u8;
        let ours = p.is_null() || segment::mapped_by_hakmem(p as usize);
        if !p.is_null() && free != 0 {
            core::mem::transmute::<usize, FreeFn>(free)(p as *mut libc::c_void);
        }
        ours
    };
    if ours {
        return false;
    }
    let p = &PROCESS;
    p.malloc.store(malloc, Ordering::Relaxed);
    p.free.store(process_symbol(c"free"), Ordering::Relaxed);
    p.realloc.store(process_symbol(c"realloc"), Ordering::Relaxed);
    p.posix_memalign.store(process_symbol(c"posix_memalign"), Ordering::Relaxed);
    p.malloc_usable_size.store(process_symbol(c"malloc_usable_size"), Ordering::Relaxed);
    p.malloc_trim.store(process_symbol(c"malloc_trim"), Ordering::Relaxed);
    p.malloc_stats.store(process_symbol(c"malloc_stats"), Ordering::Relaxed);
    p.mallopt.store(process_symbol(c"mallopt"), Ordering::Relaxed);
    p.malloc_info.store(process_symbol(c"malloc_info"), Ordering::Relaxed);
    ACTIVE.store(true, Ordering::Release);
    let mut name = [0u8; 256];
    let owner = os::object_name(malloc, &mut name).unwrap_or("an unknown object");
    diag::line(format_args!(
        "this process's malloc is not hakmem's (it comes from {owner}): hakmem must be preloaded \
         (first in LD_PRELOAD) or linked to serve it; passing every call to that allocator"
    ));
    true
}

/// Threads now inside a forwarded call (their thread pointers), to catch a
/// call that comes back to this copy: a function the other allocator lacks
/// binds to hakmem, and an executable's PLT stub for it may lead here
/// again. Such a call fails safely instead of recursing.
static FORWARDING: [AtomicUsize; 64] = [const { AtomicUsize::new(0) }; 64];

/// Run `f` unless this thread is already forwarding (then `None`).
fn guarded<R>(f: impl FnOnce() -> R) -> Option<R> {
    let me = os::thread_pointer();
    if FORWARDING.iter().any(|s| s.load(Ordering::Relaxed) == me) {
        return None;
    }
    let slot =
        FORWARDING.iter().find(|s| s.compare_exchange(0, me, Ordering::Relaxed, Ordering::Relaxed).is_ok());
    let r = f();
    if let Some(s) = slot {
        s.store(0, Ordering::Relaxed);
    }
    Some(r)
}

type MallocFn = unsafe extern "C" fn(usize) -> *mut libc::c_void;
type FreeFn = unsafe extern "C" fn(*mut libc::c_void);
type ReallocFn = unsafe extern "C" fn(*mut libc::c_void, usize) -> *mut libc::c_void;
type MemalignFn = unsafe extern "C" fn(*mut *mut libc::c_void, usize, usize) -> i32;
type UsableFn = unsafe extern "C" fn(*mut libc::c_void) -> usize;
type TrimFn = unsafe extern "C" fn(usize) -> i32;
type StatsFn = unsafe extern "C" fn();
type MalloptFn = unsafe extern "C" fn(i32, i32) -> i32;
type MallocInfoFn = unsafe extern "C" fn(i32, *mut libc::FILE) -> i32;

fn get(slot: &AtomicUsize) -> Option<usize> {
    let f = slot.load(Ordering::Relaxed);
    (f != 0).then_some(f)
}

/// The process's `malloc`. Null with ENOMEM when it has none.
pub fn malloc(size: usize) -> *mut u8 {
    match get(&PROCESS.malloc) {
        // SAFETY: the process's malloc, with the C signature.
        Some(f) => unsafe { core::mem::transmute::<usize, MallocFn>(f)(size) as *mut u8 },
        None => {
            os::set_errno(libc::ENOMEM);
            core::ptr::null_mut()
        }
    }
}

/// `size` bytes aligned to `align` (a power of two >= 8) from the process's
/// `posix_memalign`. Null with errno set on failure.
pub fn aligned(align: usize, size: usize) -> *mut u8 {
    let Some(f) = get(&PROCESS.posix_memalign) else {
        os::set_errno(libc::ENOMEM);
        return core::ptr::null_mut();
    };
    let mut out: *mut libc::c_void = core::ptr::null_mut();
    let align = align.max(core::mem::size_of::<usize>());
    // SAFETY: the process's posix_memalign, with the C signature and a
    // writable out pointer.
    let rc = guarded(|| unsafe { core::mem::transmute::<usize, MemalignFn>(f)(&mut out, align, size) })
        .unwrap_or(libc::ENOMEM);
    if rc != 0 {
        os::set_errno(rc);
        return core::ptr::null_mut();
    }
    out as *mut u8
}

/// # Safety
/// `p` came from the process's allocator.
pub unsafe fn free(p: *mut u8) {
    if let Some(f) = get(&PROCESS.free) {
        // SAFETY: per contract, with the C signature.
        guarded(|| unsafe { core::mem::transmute::<usize, FreeFn>(f)(p as *mut libc::c_void) });
    }
}

/// # Safety
/// `p` is null or came from the process's allocator.
pub unsafe fn realloc(p: *mut u8, size: usize) -> *mut u8 {
    let q = get(&PROCESS.realloc).and_then(|f| {
        // SAFETY: per contract, with the C signature.
        guarded(|| unsafe {
            core::mem::transmute::<usize, ReallocFn>(f)(p as *mut libc::c_void, size) as *mut u8
        })
    });
    q.unwrap_or_else(|| {
        os::set_errno(libc::ENOMEM);
        core::ptr::null_mut()
    })
}

/// # Safety
/// `p` came from the process's allocator.
pub unsafe fn usable_size(p: *mut u8) -> usize {
    // SAFETY: forwarded contract.
    unsafe { usable_size_of(p) }.unwrap_or(0)
}

/// # Safety
/// As for [`usable_size`].
unsafe fn usable_size_of(p: *mut u8) -> Option<usize> {
    let f = get(&PROCESS.malloc_usable_size)?;
    // SAFETY: per contract, with the C signature.
    guarded(|| unsafe { core::mem::transmute::<usize, UsableFn>(f)(p as *mut libc::c_void) })
}

pub fn malloc_trim(pad: usize) -> i32 {
    let Some(f) = get(&PROCESS.malloc_trim) else { return 0 };
    // SAFETY: the process's malloc_trim, with the C signature.
    guarded(|| unsafe { core::mem::transmute::<usize, TrimFn>(f)(pad) }).unwrap_or(0)
}

pub fn malloc_stats() {
    if let Some(f) = get(&PROCESS.malloc_stats) {
        // SAFETY: the process's malloc_stats, with the C signature.
        guarded(|| unsafe { core::mem::transmute::<usize, StatsFn>(f)() });
    }
}

pub fn mallopt(param: i32, value: i32) -> i32 {
    let Some(f) = get(&PROCESS.mallopt) else { return 0 };
    // SAFETY: the process's mallopt, with the C signature.
    guarded(|| unsafe { core::mem::transmute::<usize, MalloptFn>(f)(param, value) }).unwrap_or(0)
}

/// # Safety
/// `stream` is a valid `FILE*` open for writing.
pub unsafe fn malloc_info(options: i32, stream: *mut libc::FILE) -> i32 {
    let Some(f) = get(&PROCESS.malloc_info) else { return -1 };
    // SAFETY: the process's malloc_info, with the C signature; per contract.
    guarded(|| unsafe { core::mem::transmute::<usize, MallocInfoFn>(f)(options, stream) }).unwrap_or(-1)
}
