//! The calling thread: which heap it uses, the fast paths on that heap's
//! thread cache, and the thread's start and exit.
//!
//! A thread-local word (initial-exec TLS, declared in assembly: one
//! `%fs`-relative load, where Rust's `thread_local!` in a `cdylib` would call
//! `__tls_get_addr`) points at the heap the fast paths use. A new thread
//! starts out pointing at `hakmem_empty_heap`, whose bins are empty with
//! capacity 0 and which is never written, so the fast paths have no
//! "initialised?" test: the first malloc and free fall to the slow path,
//! which gives the thread a heap of its own.
//!
//! A second word holds the thread's own heap. The two are the same, except
//! in counting mode (HAKMEM_STATS on): there the fast paths' word stays at
//! the empty heap, so every call reaches the slow path, which counts it and
//! then uses the own heap's cache as the fast path would (`stats.rs`).
//!
//! A thread's exit is seen through a pthread key destructor, which tears the
//! heap down. A thread that allocates after that (a later destructor) gets a
//! new heap, and the key brings it back to the destructor in the next round.
//! A heap whose destructor never runs (created in the last round, no key
//! available, or the thread did not survive a `fork`) is found by `reclaim`
//! once its thread is gone.

use core::cell::UnsafeCell;
use core::ptr;
use core::sync::atomic::{AtomicU32, Ordering};

use crate::config;
use crate::heap::{self, Heap};
use crate::os;
use crate::reclaim;
use crate::slab::{self, Block};
use crate::stats::{self, STATS};
use crate::sync::Lock;

/// The heap of threads that have none: empty bins of capacity 0. Never
/// written: its bins' fast paths only read (`pop` finds no block, `push`
/// finds no room).
struct EmptyHeap(UnsafeCell<Heap>);
// SAFETY: nothing ever writes the empty heap.
unsafe impl Sync for EmptyHeap {}

#[no_mangle]
static hakmem_empty_heap: EmptyHeap = EmptyHeap(UnsafeCell::new(Heap::new()));

/// Frees a thread without a heap does straight to the owners' remote lists
/// before it gets a heap of its own: a thread that only frees a few blocks
/// on its way out (glibc frees thread data after the key destructors) costs
/// no heap; one that keeps freeing gets a cache.
const FREES_BEFORE_HEAP: u32 = 16;

// The fast paths' heap pointer and the thread's own heap (in .tdata,
// initialised to the empty heap: the loader relocates the TLS image before
// copying it into each thread) and a count of frees done without a heap
// (.tbss, zero).
core::arch::global_asm!(
    ".pushsection .tdata,\"awT\",@progbits",
    ".p2align 3",
    ".globl hakmem_thread_heap",
    ".hidden hakmem_thread_heap",
    ".type hakmem_thread_heap,@object",
    ".size hakmem_thread_heap, 8",
    "hakmem_thread_heap:",
    ".quad hakmem_empty_heap",
    ".p2align 3",
    ".globl hakmem_thread_own",
    ".hidden hakmem_thread_own",
    ".type hakmem_thread_own,@object",
    ".size hakmem_thread_own, 8",
    "hakmem_thread_own:",
    ".quad hakmem_empty_heap",
    ".popsection",
    ".pushsection .tbss,\"awT\",@nobits",
    ".p2align 2",
    ".globl hakmem_thread_frees",
    ".hidden hakmem_thread_frees",
    ".type hakmem_thread_frees,@object",
    ".size hakmem_thread_frees, 4",
    "hakmem_thread_frees:",
    ".zero 4",
    ".popsection",
);

fn empty() -> *mut Heap {
    hakmem_empty_heap.0.get()
}

/// The calling thread's heap (the empty heap if it has none).
#[inline(always)]
pub fn current() -> *mut Heap {
    let p: *mut Heap;
    // SAFETY: loads the initial-exec TLS word: its offset from the thread
    // pointer comes from the GOT; nothing is written.
    unsafe {
        core::arch::asm!(
            "mov {p}, qword ptr [rip + hakmem_thread_heap@GOTTPOFF]",
            "mov {p}, qword ptr fs:[{p}]",
            p = out(reg) p,
            options(nostack, pure, readonly),
        );
    }
    p
}

/// The calling thread's own heap (the empty heap if it has none): the same
/// as [`current`] except in counting mode.
#[inline]
pub fn own() -> *mut Heap {
    let p: *mut Heap;
    // SAFETY: loads the calling thread's own TLS word; nothing is written.
    unsafe {
        core::arch::asm!(
            "mov {p}, qword ptr [rip + hakmem_thread_own@GOTTPOFF]",
            "mov {p}, qword ptr fs:[{p}]",
            p = out(reg) p,
            options(nostack, pure, readonly),
        );
    }
    p
}

/// Does the calling thread have a heap of its own?
pub fn has_heap() -> bool {
    own() != empty()
}

/// Make `h` the thread's heap; the fast paths see it unless counting.
fn set_own(h: *mut Heap) {
    let view = if counting() { empty() } else { h };
    // SAFETY: stores the calling thread's own TLS words.
    unsafe {
        core::arch::asm!(
            "mov {t}, qword ptr [rip + hakmem_thread_heap@GOTTPOFF]",
            "mov qword ptr fs:[{t}], {v}",
            "mov {t}, qword ptr [rip + hakmem_thread_own@GOTTPOFF]",
            "mov qword ptr fs:[{t}], {h}",
            t = out(reg) _,
            v = in(reg) view,
            h = in(reg) h,
            options(nostack),
        );
    }
}

/// Counting mode: every call goes through the slow paths and is counted.
#[inline]
fn counting() -> bool {
    config::stats_enabled()
}

/// Counting mode found a thread whose fast paths still see its heap (it got
/// the heap before the flags were read): from now on they see the empty one.
fn count_from_now_on(h: *mut Heap) {
    if current() != empty() {
        set_own(h);
    }
}

/// Count one free done without a heap; true once there were enough.
fn frees_without_heap_reached() -> bool {
    let n: u32;
    // SAFETY: reads and increments the calling thread's own TLS counter.
    unsafe {
        core::arch::asm!(
            "mov {t}, qword ptr [rip + hakmem_thread_frees@GOTTPOFF]",
            "mov {n:e}, dword ptr fs:[{t}]",
            "add dword ptr fs:[{t}], 1",
            t = out(reg) _,
            n = out(reg) n,
            options(nostack),
        );
    }
    n >= FREES_BEFORE_HEAP
}

/// Pop a block from the bin at byte offset `bin` of this thread's cache;
/// null when empty.
///
/// # Safety
/// As for `ThreadCache::pop_at`: `bin` is the offset of a bin.
#[inline(always)]
pub unsafe fn pop_at(bin: usize) -> *mut Block {
    // SAFETY: the calling thread's heap; only this thread touches its cache
    // (the empty heap's is only read); `bin` per contract.
    unsafe { (*current()).cache.pop_at(bin) }
}

/// Push a freed block on this thread's cache, to the bin at byte offset
/// `bin` (`thread_cache::bin_offset`); false when the bin is full.
///
/// # Safety
/// `b` is a live block of the bin's class that the caller gives up; `tag`
/// its free tag.
#[inline(always)]
pub unsafe fn push_at(b: *mut Block, bin: usize, tag: u64) -> bool {
    // SAFETY: as for `pop`; the caller gives us `b`.
    unsafe { (*current()).cache.push_at(b, bin, tag) }
}

/// Holds a heap's lock for the duration of a slow path.
struct Entered<'a> {
    heap: &'a Heap,
    owned: bool,
}

impl<'a> Entered<'a> {
    fn new(heap: &'a Heap) -> Self {
        let owned = heap.lock().lock();
        Entered { heap, owned }
    }
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        if self.owned {
            self.heap.lock().unlock();
        }
    }
}

/// The allocation slow path: the bin of `class` is empty (or, counting,
/// not looked at yet) for a request of `size` bytes. Null when out of
/// memory (after giving back what every cache holds and trying again).
#[cold]
#[inline(never)]
pub fn alloc_slow(class: usize, size: usize) -> *mut u8 {
    let mut h = own();
    if h == empty() {
        h = thread_start();
        if h.is_null() {
            return ptr::null_mut();
        }
    }
    if counting() {
        count_from_now_on(h);
        // SAFETY: this thread's heap; only this thread uses its cache.
        unsafe {
            let b = (*h).cache.pop(class);
            if !b.is_null() {
                stats::counted_alloc(&(*h).counters, class, size);
                return b as *mut u8;
            }
        }
    }
    // The blocks the bin set aside at its last overflow: no lock, as on the
    // fast path (only this thread uses its cache).
    // SAFETY: this thread's heap.
    let b = unsafe { (*h).cache.pop_held(class) };
    if !b.is_null() {
        if counting() {
            // SAFETY: this thread's heap.
            stats::counted_alloc(unsafe { &(*h).counters }, class, size);
        }
        return b as *mut u8;
    }
    for attempt in 0..2 {
        // SAFETY: this thread's heap, used under its lock.
        let b = unsafe {
            let _g = Entered::new(&*h);
            (*h).alloc_slow(class)
        };
        after_slow_path(h);
        if !b.is_null() && counting() {
            // SAFETY: this thread's heap.
            stats::counted_alloc(unsafe { &(*h).counters }, class, size);
        }
        if !b.is_null() || attempt == 1 {
            return b as *mut u8;
        }
        stats::count(&STATS.map_failures);
        release_everything();
    }
    ptr::null_mut()
}

/// After a slow path of the thread's own heap `h`: reclamation's turn.
fn after_slow_path(h: *mut Heap) {
    // SAFETY: the calling thread's own heap, live while it runs; the count
    // is an atomic.
    let abandoned_freed = unsafe { (*h).abandoned_freed_over(reclaim::ABANDONED_FREED_VISIT) };
    reclaim::after_slow_path(h, abandoned_freed);
}

/// The free slow path: the bin of `class` is full (or has capacity 0, or,
/// counting, was not looked at yet).
///
/// # Safety
/// `b` is a live block of `class` that the caller gives up.
#[cold]
#[inline(never)]
pub unsafe fn free_slow(b: *mut Block, class: usize) {
    if config::check_mode() {
        // SAFETY: the caller gives `b` up.
        unsafe { heap::fill_freed(b, class) };
    }
    let mut h = own();
    if counting() {
        // SAFETY: this thread's heap (if any); only this thread uses its
        // cache; the caller gives `b` up.
        unsafe {
            if h == empty() {
                stats::counted_free(None, class);
            } else {
                count_from_now_on(h);
                stats::counted_free(Some(&(*h).counters), class);
                if (*h).cache.push(b, class, Block::free_tag(b)) {
                    return;
                }
            }
        }
    }
    if h == empty() && frees_without_heap_reached() {
        h = thread_start();
    }
    if h == empty() || h.is_null() {
        slab::init_keys();
        // SAFETY: the caller gives `b` up; its owner takes it back.
        unsafe { heap::free_remote(b, class) };
        return;
    }
    {
        // SAFETY: this thread's heap, under its lock.
        let _g = Entered::new(unsafe { &*h });
        // SAFETY: forwarded contract.
        unsafe { (*h).free_slow(b, class) };
    }
    after_slow_path(h);
}

static KEY: AtomicU32 = AtomicU32::new(u32::MAX);
static KEY_LOCK: Lock<bool> = Lock::new(false);

/// Process-wide set-up done before the first thread heap exists: the
/// configuration, the free-list keys, the thread-exit key. The key may be
/// unavailable (all taken): threads then work without an exit hook.
fn process_start() {
    if KEY.load(Ordering::Acquire) != u32::MAX {
        return;
    }
    let mut tried = KEY_LOCK.lock();
    if *tried {
        return;
    }
    config::ensure_read();
    slab::init_keys();
    *tried = true;
    if let Some(key) = os::thread_key_create(thread_exit) {
        KEY.store(key, Ordering::Release);
    }
}

/// Give the calling thread a heap of its own. Null when out of memory.
fn thread_start() -> *mut Heap {
    process_start();
    // The flags decide counting mode; a thread may start before the
    // process's first reader has finished (cheap once they are final).
    config::ensure_read();
    reclaim::before_thread_start();
    let h = heap::create(os::gettid());
    if h.is_null() {
        return h;
    }
    // SAFETY: a fresh heap; only this thread uses its cache.
    unsafe { (*h).cache.apply_capacities() };
    set_own(h);
    stats::count(&STATS.threads_started);
    let key = KEY.load(Ordering::Acquire);
    // May call calloc (for keys past the first 32): the heap is ready. If it
    // fails, the thread has no exit hook and `reclaim` finds the heap later.
    if key != u32::MAX {
        os::thread_key_set(key, h as *mut u8);
    }
    h
}

/// Apply the configured capacities to this thread's bins, and counting
/// mode to its fast paths (once the configuration is read for real).
pub fn apply_capacities() {
    let h = own();
    if h != empty() {
        // SAFETY: this thread's own heap.
        unsafe { (*h).cache.apply_capacities() };
        set_own(h);
    }
}

/// pthread key destructor: the thread is exiting.
extern "C" fn thread_exit(arg: *mut libc::c_void) {
    let h = arg as *mut Heap;
    if h.is_null() || h != own() {
        return;
    }
    set_own(empty());
    // SAFETY: the exiting thread's heap: it takes the lock like any slow
    // path, gives everything back, and nobody uses the heap afterwards.
    unsafe {
        {
            let _g = Entered::new(&*h);
            (*h).flush_cache();
            (*h).teardown();
        }
        heap::destroy(h);
    }
    stats::count(&STATS.threads_ended);
}

/// Flush this thread's cache and give its free memory back (malloc_trim).
/// Returns the bytes given back to the OS.
pub fn trim_own() -> usize {
    let h = own();
    if h == empty() {
        return 0;
    }
    // SAFETY: this thread's heap, under its lock.
    unsafe {
        let _g = Entered::new(&*h);
        (*h).flush_cache();
        (*h).collect() + (*h).purge()
    }
}

/// Give back every free byte the process holds: this thread's cache and
/// free memory, then everybody else's (`reclaim::trim_all`). For
/// `malloc_trim` and for an allocation the system refused. Returns the
/// bytes given back to the OS.
pub fn release_everything() -> usize {
    trim_own() + reclaim::trim_all(own())
}

/// In a forked child: this thread's heap now belongs to a thread with a
/// new id.
pub fn after_fork_in_child() {
    let h = own();
    if h != empty() {
        // SAFETY: this thread's heap.
        unsafe { (*h).set_tid(os::gettid()) };
    }
}

/// This thread's heap lock (fork takes it first), if it has a heap.
pub fn own_heap_lock() -> Option<&'static crate::sync::RawLock> {
    let h = own();
    // SAFETY: this thread's heap lives as long as the thread.
    (h != empty()).then(|| unsafe { (*h).lock() })
}

pub fn key_lock() -> &'static crate::sync::RawLock {
    KEY_LOCK.raw()
}
